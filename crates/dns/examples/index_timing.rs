//! Times index + store per registration and shows the process's RSS
//! (development aid): `cargo run --release -p rnet-dns --example index_timing [N]`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use rnet_dns::control::Request;
use rnet_dns::registry::{AttachmentId, NetworkSpec};
use rnet_dns::snapshot::Index;
use rnet_dns::store::{Store, Target};
use std::time::Instant;

fn rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("VmRSS"))
        .collect()
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10000);
    println!("start {}", rss());
    let dir = tempfile::tempdir().unwrap();
    let mut idx = Index::new(&[]);
    let mut store = Store::open(dir.path(), &mut idx).unwrap();
    let net = NetworkSpec {
        name: "b".into(),
        domain: "dns.rnet".into(),
        internal: false,
        listen: vec!["10.0.0.1".parse().unwrap()],
        upstreams: vec![],
    };
    let (mut t_store, mut t_idx) = (0u128, 0u128);
    let mut snaps = Vec::new();
    for i in 0..n {
        let req = Request::Register {
            network: net.clone(),
            attachment: AttachmentId {
                container_id: format!("{i:064x}"),
                ifname: "eth0".into(),
            },
            names: vec![format!("c{i}")],
            addrs: vec![std::net::IpAddr::V4(std::net::Ipv4Addr::from(
                0x0a00_0000 + i as u32,
            ))],
        };
        let t0 = Instant::now();
        store.append(&req).unwrap();
        let t1 = Instant::now();
        idx.apply(&req).unwrap();
        store.maybe_compact(&idx).unwrap();
        snaps.push(idx.publish());
        let t2 = Instant::now();
        if snaps.len() > 2 {
            snaps.remove(0);
        }
        t_store += (t1 - t0).as_micros();
        t_idx += (t2 - t1).as_micros();
    }
    println!("after {n} registrations {}", rss());
    drop(snaps);
    let t = Instant::now();
    store.compact(&idx).unwrap();
    println!("compaction of {n} records {:?}, {}", t.elapsed(), rss());
    println!(
        "per registration at {n}: journal {} us, index + publish {} us",
        t_store / n as u128,
        t_idx / n as u128
    );
}
