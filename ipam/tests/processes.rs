//! Many plugin processes against one on-disk store: concurrency and SIGKILL at random moments.
//!
//! The test binary re-runs itself (`child_main`, selected by the `RNET_IPAM_CHILD`
//! environment variable) to get real, independent processes, as a runtime would
//! spawn plugin executables.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rnet_ipam::{Ipam, IpamConfig, Owner};
use serde_json::json;

const CHILD_ENV: &str = "RNET_IPAM_CHILD";

fn config(data_dir: &Path, dual: bool) -> IpamConfig {
    let ranges = if dual {
        json!([[{"subnet":"10.20.0.0/16"}],[{"subnet":"fd20::/64"}]])
    } else {
        json!([[{"subnet":"10.20.0.0/24"}]])
    };
    let conf = json!({"cniVersion":"1.1.0","name":"net","ipam":{"type":"rnet-ipam","ranges":ranges,"dataDir":data_dir}});
    let mut c = IpamConfig::from_netconf(&conf, &[]).unwrap();
    c.lock_timeout = Duration::from_secs(30);
    c
}

fn spawn_child(mode: &str, dir: &Path, id: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_main",
            "--nocapture",
            "--test-threads",
            "1",
            "--quiet",
        ])
        .env(CHILD_ENV, mode)
        .env("RNET_IPAM_DIR", dir)
        .env("RNET_IPAM_ID", id)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Child entry point; a no-op unless spawned by one of the tests below.
#[test]
fn child_main() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var("RNET_IPAM_DIR").unwrap());
    let id = std::env::var("RNET_IPAM_ID").unwrap();
    match mode.as_str() {
        "allocate-once" => {
            // wait for the start signal so all children hit the store together
            while !dir.join("go").exists() {
                std::thread::sleep(Duration::from_micros(200));
            }
            let ipam = Ipam::open(config(&dir, false)).unwrap();
            let a = ipam.allocate(&Owner::new(&id, "eth0")).unwrap();
            println!("RESULT {}", a.ips[0].address.addr());
        }
        "churn" => {
            // allocate/release forever (until SIGKILLed); keep every third attachment
            let ipam = Ipam::open(config(&dir, true)).unwrap();
            for n in 0u64.. {
                let owner = Owner::new(format!("{id}-{n}"), "eth0");
                ipam.allocate(&owner).unwrap();
                if n % 3 == 0 {
                    // reported only after ADD returned: this lease must survive the kill
                    println!("KEPT {}", owner.container_id);
                } else {
                    ipam.release(&owner).unwrap();
                }
            }
        }
        other => panic!("unknown child mode {other}"),
    }
}

fn lease_files(net: &Path) -> BTreeMap<IpAddr, String> {
    std::fs::read_dir(net)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let ip: IpAddr = e.file_name().to_str()?.parse().ok()?;
            Some((ip, std::fs::read_to_string(e.path()).unwrap()))
        })
        .collect()
}

#[test]
fn fifty_processes_get_fifty_distinct_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<Child> = (0..50)
        .map(|n| spawn_child("allocate-once", dir.path(), &format!("c{n}")))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(dir.path().join("go"), "").unwrap();
    let mut ips = HashSet::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let ip = stdout
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .unwrap_or_else(|| panic!("no result in {stdout}"))
            .to_owned();
        assert!(ips.insert(ip.clone()), "{ip} handed out twice");
    }
    assert_eq!(ips.len(), 50);
    let files = lease_files(&dir.path().join("net"));
    assert_eq!(files.len(), 50);
    let owners: HashSet<&String> = files.values().collect();
    assert_eq!(owners.len(), 50, "one lease per container");
}

#[test]
fn fifty_threads_get_fifty_distinct_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let ips: Vec<IpAddr> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|n| {
                let dir = dir.path();
                s.spawn(move || {
                    let ipam = Ipam::open(config(dir, false)).unwrap();
                    ipam.allocate(&Owner::new(format!("t{n}"), "eth0"))
                        .unwrap()
                        .ips[0]
                        .address
                        .addr()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let unique: HashSet<_> = ips.iter().collect();
    assert_eq!(unique.len(), 50);
}

/// A tiny xorshift so the test needs no extra crate; seeded from the clock.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_gc_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("net");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}");
    let mut rng = Rng(seed);
    let rounds = 60;
    let mut kept: Vec<String> = Vec::new();
    let started = Instant::now();
    for round in 0..rounds {
        let mut children: Vec<Child> = (0..3)
            .map(|c| spawn_child("churn", dir.path(), &format!("k{round}x{c}")))
            .collect();
        // let them start (process start ~ a few ms), then kill each at a random moment
        std::thread::sleep(Duration::from_millis(15 + rng.below(40)));
        for child in &mut children {
            std::thread::sleep(Duration::from_micros(rng.below(3000)));
            child.kill().unwrap(); // SIGKILL
        }
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                !out.status.success(),
                "churn child ended by itself: {:?}",
                out.status
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            kept.extend(
                stdout
                    .lines()
                    .filter_map(|l| l.strip_prefix("KEPT "))
                    .map(str::to_owned),
            );
        }
    }
    println!("{rounds} rounds in {:?}", started.elapsed());

    // 1. Every lease file is complete and names one of the churn attachments.
    let files = lease_files(&net);
    assert!(!files.is_empty(), "children never allocated anything");
    let mut per_owner: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for (ip, content) in &files {
        let owner = Owner::parse_lease_content(content)
            .unwrap_or_else(|| panic!("lease {ip} is incomplete: {content:?}"));
        assert!(
            owner.container_id.starts_with('k') && owner.ifname == "eth0",
            "lease {ip}: {content:?}"
        );
        per_owner.entry(owner.container_id).or_default().push(*ip);
    }
    // 2. No attachment holds two addresses of one family (no double allocation by retries).
    for (owner, ips) in &per_owner {
        let v4 = ips.iter().filter(|ip| ip.is_ipv4()).count();
        assert!(v4 <= 1 && ips.len() - v4 <= 1, "{owner} holds {ips:?}");
    }
    // 3. The index knows every lease (crash-consistent intent log + repair).
    let ipam = Ipam::open(config(dir.path(), true)).unwrap();
    for (owner, ips) in &per_owner {
        let mut held = ipam.check(&Owner::new(owner.clone(), "eth0")).unwrap();
        held.sort();
        let mut ips = ips.clone();
        ips.sort();
        assert_eq!(held, ips, "index of {owner}");
    }
    // 4. Every ADD that returned success is still held, in both families.
    assert!(!kept.is_empty());
    for id in &kept {
        assert_eq!(
            ipam.check(&Owner::new(id.clone(), "eth0")).unwrap().len(),
            2,
            "{id} lost its lease"
        );
    }
    // 5. GC with a valid list keeps exactly those; GC with none frees everything.
    let valid: Vec<Owner> = per_owner
        .keys()
        .step_by(2)
        .map(|id| Owner::new(id.clone(), "eth0"))
        .collect();
    let report = ipam.gc(&valid).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let left: HashSet<String> = ipam
        .leases()
        .unwrap()
        .into_iter()
        .map(|l| l.owner.container_id)
        .collect();
    let want: HashSet<String> = valid.iter().map(|o| o.container_id.clone()).collect();
    assert_eq!(left, want);
    ipam.gc(&[]).unwrap();
    assert!(lease_files(&net).is_empty());
    assert_eq!(
        std::fs::read_dir(net.join(".rnet/attach")).unwrap().count(),
        0
    );
    assert_eq!(std::fs::read_dir(net.join(".rnet/tmp")).unwrap().count(), 0);
    // 6. Still usable.
    let a = ipam.allocate(&Owner::new("after", "eth0")).unwrap();
    assert_eq!(a.ips.len(), 2);
    println!(
        "{} confirmed ADDs survived; kept {} attachments through GC, {} lease files before GC",
        kept.len(),
        want.len(),
        files.len()
    );
}
