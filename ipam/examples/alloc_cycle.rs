//! Mean cost of one allocate + release against an on-disk store.
//!
//! `cargo run --release -p rnet-ipam --example alloc_cycle -- <empty temp dir> [rounds]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use rnet_ipam::{Ipam, IpamConfig, Owner};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: alloc_cycle <dataDir> [rounds]");
    let rounds: u32 = args
        .next()
        .map_or(1000, |r| r.parse().expect("rounds must be a number"));
    let conf = serde_json::json!({"cniVersion":"1.1.0","name":"bench","ipam":{"subnet":"10.77.0.0/16","dataDir":dir}});
    let ipam = Ipam::open(IpamConfig::from_netconf(&conf, &[]).unwrap()).unwrap();
    let start = Instant::now();
    for n in 0..rounds {
        let owner = Owner::new(format!("bench{n}"), "eth0");
        ipam.allocate(&owner).unwrap();
        ipam.release(&owner).unwrap();
    }
    println!(
        "allocate+release: {:?} mean over {rounds} rounds",
        start.elapsed() / rounds
    );
}
