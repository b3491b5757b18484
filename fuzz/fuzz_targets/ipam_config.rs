//! rnet-ipam's configuration (`IpamConfig::from_netconf`: ranges and range
//! sets, the legacy single range, defaults, overlap and family checks,
//! routes, static addresses from `CNI_ARGS IP=`, `args.cni.ips` and
//! `runtimeConfig.ips`, `runtimeConfig.ipRanges`), then the allocator on an
//! in-memory store: two owners ADD (twice: idempotent), CHECK, STATUS, DEL.
//! Checks: addresses come from their range set, are never reserved ones,
//! never given twice, and ADD repeated gives the same answer.
//! Input: env lines (`CNI_ARGS=IP=...`), an empty line, the network config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnet_fuzz::{get, split};
use rnet_ipam::{Ipam, IpamConfig, MemStore, Owner};

fuzz_target!(|data: &[u8]| {
    let (env, stdin) = split(data);
    let Ok(conf) = serde_json::from_slice::<serde_json::Value>(stdin) else {
        return;
    };
    let pairs = rnet_cni::args::CniArgs::parse(get(&env, "CNI_ARGS").unwrap_or_default())
        .map(|a| a.pairs().to_vec())
        .unwrap_or_default();
    let Ok(mut config) = IpamConfig::from_netconf(&conf, &pairs) else {
        return;
    };
    assert!(!config.range_sets.is_empty());
    for set in &config.range_sets {
        assert!(!set.ranges.is_empty());
        let v4 = set.is_ipv4();
        for r in &set.ranges {
            assert_eq!(r.subnet.addr().is_ipv4(), v4, "mixed families in a set");
            assert!(r.subnet.contains(&r.range_start) && r.subnet.contains(&r.range_end));
        }
    }
    // Never read a file named by the input (it could be a FIFO or /dev/zero).
    config.resolv_conf = None;
    let sets = config.range_sets.clone();
    let ipam = Ipam::new(config, Box::new(MemStore::new()));
    let owners = [Owner::new("fuzz1", "eth0"), Owner::new("fuzz2", "eth0")];
    let mut given: Vec<std::net::IpAddr> = Vec::new();
    for o in &owners {
        let Ok(a) = ipam.allocate(o) else {
            continue;
        };
        assert!(a.ips.len() <= sets.len());
        for ip in &a.ips {
            let addr = ip.address.addr();
            let set = &sets[ip.range_set];
            let r = match set.range_for(addr) {
                Some(r) => r,
                None => panic!("{addr} is outside range set {}", ip.range_set),
            };
            assert_eq!(r.reserved_kind(addr), None, "{addr} is reserved");
            assert!(!given.contains(&addr), "{addr} given twice");
            given.push(addr);
        }
        match ipam.allocate(o) {
            Ok(again) => assert_eq!(again.ips, a.ips, "repeated ADD gives other addresses"),
            Err(e) => panic!("repeated ADD fails: {e}"),
        }
        if !a.ips.is_empty() {
            assert!(ipam.check(o).is_ok(), "CHECK fails after ADD");
        }
    }
    let _ = ipam.status();
    for o in &owners {
        let _ = ipam.release(o);
        assert!(ipam.check(o).is_err(), "CHECK passes after DEL");
    }
});
