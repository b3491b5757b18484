//! Allocation cost must not grow with the number of leases held: a /16 with
//! 60,000 leases (written in host-local's format, then indexed once by rnet)
//! against a store holding one lease.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use rnet_ipam::{Ipam, IpamConfig, Owner};
use serde_json::json;

const LEASES: u32 = 60_000;
const ROUNDS: u32 = 300;

fn ipam(dir: &Path) -> Ipam {
    let conf = json!({"cniVersion":"1.1.0","name":"big","ipam":{"type":"rnet-ipam","subnet":"10.77.0.0/16","dataDir":dir}});
    Ipam::open(IpamConfig::from_netconf(&conf, &[]).unwrap()).unwrap()
}

/// Mean time of one allocate + release, over `ROUNDS` rounds.
fn measure(ipam: &Ipam) -> Duration {
    // warm-up (first-use indexing, page cache)
    for n in 0..20 {
        let o = Owner::new(format!("warm{n}"), "eth0");
        ipam.allocate(&o).unwrap();
        ipam.release(&o).unwrap();
    }
    let start = Instant::now();
    for n in 0..ROUNDS {
        let o = Owner::new(format!("probe{n}"), "eth0");
        ipam.allocate(&o).unwrap();
        assert_eq!(ipam.release(&o).unwrap().len(), 1);
    }
    start.elapsed() / ROUNDS
}

#[test]
fn allocation_cost_is_independent_of_leases_held() {
    // Small store: one lease.
    let small_dir = tempfile::tempdir().unwrap();
    let small = ipam(small_dir.path());
    small.allocate(&Owner::new("only", "eth0")).unwrap();
    let t_small = measure(&small);

    // Big store: 60,000 leases written directly in host-local's format.
    let big_dir = tempfile::tempdir().unwrap();
    let net = big_dir.path().join("big");
    std::fs::create_dir_all(&net).unwrap();
    let fill = Instant::now();
    let mut last = String::new();
    for n in 0..LEASES {
        let v = 2 + n; // 10.77.0.2 ..
        last = format!("10.77.{}.{}", v >> 8, v & 0xff);
        std::fs::write(net.join(&last), format!("ctr{n}\r\neth0")).unwrap();
    }
    std::fs::write(net.join("last_reserved_ip.0"), &last).unwrap();
    let filled = fill.elapsed();
    let big = ipam(big_dir.path());
    let index = Instant::now();
    // first operation migrates: indexes the 60,000 foreign leases once
    assert_eq!(big.check(&Owner::new("ctr123", "eth0")).unwrap().len(), 1);
    let indexed = index.elapsed();
    let t_big = measure(&big);
    assert_eq!(big.leases().unwrap().len(), LEASES as usize);

    // DEL of one of the 60,000 is as cheap (no scan)
    let del = Instant::now();
    assert_eq!(
        big.release(&Owner::new("ctr4242", "eth0")).unwrap().len(),
        1
    );
    let t_del = del.elapsed();
    // STATUS with space left walks from the cursor only
    let st = Instant::now();
    big.status().unwrap();
    let t_status = st.elapsed();

    let ratio = t_big.as_secs_f64() / t_small.as_secs_f64();
    println!(
        "alloc+release: {t_small:?} with 1 lease, {t_big:?} with {LEASES} leases (ratio {ratio:.2}); \
         one DEL at {LEASES}: {t_del:?}; STATUS: {t_status:?}; fill {filled:?}; one-time index {indexed:?}"
    );
    assert!(
        ratio < 3.0,
        "allocation got {ratio:.2}x slower with {LEASES} leases held"
    );
    assert!(t_del < t_big * 20, "DEL {t_del:?} looks like a scan");
}
