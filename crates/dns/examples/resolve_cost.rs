//! Cost of one lookup in the snapshot, in process (no sockets), at several
//! name counts: `cargo run --release -p rnet-dns --example resolve_cost [10,1000,10000]`.
//! The per-query cost should not depend on the number of names.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use rnet_dns::registry::{AttachmentId, NetworkSpec, Registry};
use rnet_dns::snapshot::{Index, Snapshot};
use rnet_dns::wire::Query;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

fn addr(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        10,
        99,
        1 + (i / 250) as u8,
        1 + (i % 250) as u8,
    ))
}

fn query(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

fn build(n: usize) -> Snapshot {
    let net = NetworkSpec {
        name: "bench".into(),
        domain: "dns.rnet".into(),
        internal: false,
        listen: vec!["10.99.0.1".parse().unwrap()],
        upstreams: vec![],
    };
    let mut idx = Index::new(&[]);
    let mut add = |id: String, name: String, ip: IpAddr| {
        let att = AttachmentId {
            container_id: id,
            ifname: "eth0".into(),
        };
        let (n, r) = Registry::prepare(net.clone(), att, &[name], &[ip]).unwrap();
        idx.register(n, &r).unwrap();
    };
    add(
        "client".into(),
        "client".into(),
        "10.99.0.2".parse().unwrap(),
    );
    for i in 0..n {
        add(format!("{i:064x}"), format!("c{i}"), addr(i));
    }
    idx.publish()
}

fn main() {
    let counts = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "10,1000,10000".into());
    let src: IpAddr = "10.99.0.2".parse().unwrap();
    let local: IpAddr = "10.99.0.1".parse().unwrap();
    for n in counts.split(',').map(|s| s.parse::<usize>().unwrap()) {
        let snap = build(n);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let msgs: Vec<Vec<u8>> = (0..4096)
            .map(|k| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x % n as u64) as usize;
                match k % 4 {
                    0 => query(&format!("c{i}"), 1),
                    1 => query(&format!("c{i}.dns.rnet"), 1),
                    2 => query(&format!("nope{i}.dns.rnet"), 1),
                    _ => {
                        let o = match addr(i) {
                            IpAddr::V4(a) => a.octets(),
                            IpAddr::V6(_) => unreachable!(),
                        };
                        query(
                            &format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0]),
                            12,
                        )
                    }
                }
            })
            .collect();
        let parsed: Vec<Query> = msgs.iter().map(|m| Query::parse(m).unwrap()).collect();
        let mut out = Vec::with_capacity(1500);
        let rounds = 500;
        for _ in 0..2 {
            let t = Instant::now();
            for _ in 0..rounds {
                for (m, q) in msgs.iter().zip(&parsed) {
                    std::hint::black_box(snap.resolve(m, q, src, local, 512, &mut out));
                }
            }
            let per = t.elapsed().as_nanos() as f64 / (rounds * msgs.len()) as f64;
            println!("{n} names: {per:.0} ns per lookup (bare, domain, unknown, PTR mixed)");
        }
    }
}
