//! Times registry + index + store per registration (development aid).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use rnet_dns::control::Request;
use rnet_dns::registry::{AttachmentId, NetworkSpec, Registry};
use rnet_dns::snapshot::Index;
use rnet_dns::store::{Store, apply};
use std::time::Instant;

fn rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("VmRSS"))
        .collect()
}

fn main() {
    println!("start {}", rss());
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10000);
    if std::env::args().nth(2).as_deref() == Some("batch") {
        let net = NetworkSpec {
            name: "b".into(),
            domain: "dns.rnet".into(),
            internal: false,
            listen: vec!["10.0.0.1".parse().unwrap()],
            upstreams: vec![],
        };
        let mut reg2 = Registry::default();
        let mut idx2 = Index::new(&[]);
        let mut all = Vec::new();
        for i in 0..n {
            let req = Request::Register {
                network: net.clone(),
                attachment: AttachmentId {
                    container_id: format!("ctr{i}"),
                    ifname: "eth0".into(),
                },
                names: vec![format!("c{i}")],
                addrs: vec![std::net::IpAddr::V4(std::net::Ipv4Addr::from(
                    0x0b00_0000 + i as u32,
                ))],
            };
            all.extend(apply(&mut reg2, &req).unwrap());
        }
        println!("registry {}", rss());
        let _s = idx2.apply(&all);
        println!("registry + changes + index {}", rss());
        drop(all);
        return;
    }
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10000);
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut reg): (Store, Registry) = Store::open(dir.path()).unwrap();
    let mut idx = Index::new(&[]);
    let net = NetworkSpec {
        name: "b".into(),
        domain: "dns.rnet".into(),
        internal: false,
        listen: vec!["10.0.0.1".parse().unwrap()],
        upstreams: vec![],
    };
    let (mut t_store, mut t_reg, mut t_idx) = (0u128, 0u128, 0u128);
    let mut snaps = Vec::new();
    for i in 0..n {
        let req = Request::Register {
            network: net.clone(),
            attachment: AttachmentId {
                container_id: format!("ctr{i}"),
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
        let ch = apply(&mut reg, &req).unwrap();
        store.maybe_compact(&reg).unwrap();
        let t2 = Instant::now();
        let s = idx.apply(&ch);
        let t3 = Instant::now();
        snaps.push(s);
        if snaps.len() > 2 {
            snaps.remove(0);
        }
        t_store += (t1 - t0).as_micros();
        t_reg += (t2 - t1).as_micros();
        t_idx += (t3 - t2).as_micros();
    }
    println!("after {}", rss());
    drop(snaps);
    println!("after dropping the kept snapshots {}", rss());
    drop(idx);
    println!("after dropping the index {}", rss());
    drop(reg);
    println!("after dropping the registry {}", rss());
    // The same, in one batch: live size without update churn.
    let mut reg2 = Registry::default();
    let mut idx2 = Index::new(&[]);
    let r0 = rss();
    let mut all = Vec::new();
    for i in 0..n {
        let req = Request::Register {
            network: net.clone(),
            attachment: AttachmentId {
                container_id: format!("ctr{i}"),
                ifname: "eth0".into(),
            },
            names: vec![format!("c{i}")],
            addrs: vec![std::net::IpAddr::V4(std::net::Ipv4Addr::from(
                0x0b00_0000 + i as u32,
            ))],
        };
        all.extend(apply(&mut reg2, &req).unwrap());
    }
    let r1 = rss();
    let _s = idx2.apply(&all);
    drop(all);
    println!("batch: before {r0}, registry {r1}, +index {}", rss());
    println!(
        "per registration at {n}: store {} us, registry {} us, index {} us",
        t_store / n as u128,
        t_reg / n as u128,
        t_idx / n as u128
    );
}
