//! rnet-ipam's on-disk lease store reading what it finds on disk: lease
//! files (`<ip>`: `id\r\nifname`, host-local's format), round-robin cursors
//! (`last_reserved_ip.N`), the index marker (`.rnet/indexed`), attachment
//! indexes (`.rnet/attach/<key>`) and spares (`.rnet/tmp/*`), with any
//! content, then operations on them.
//!
//! Input (text): sections `=== <file>` followed by the file's content, in
//! the network directory of a fixed configuration (set 0: 10.1.2.0/29,
//! set 1: fd00::/125). A `=== ops` section lists operations, one a line:
//! `add|del|check <id> <ifname>`, `gc <id>/<ifname> ...`, `status`,
//! `leases`; without it a default sequence runs. Checks: addresses from
//! ADD are in their range set and not reserved, CHECK after ADD holds
//! them, two live attachments never share an address, and after every
//! operation `leases` names no address twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnet_ipam::{Ipam, IpamConfig, Owner};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const CONFIG: &str = r#"{"cniVersion":"1.1.0","name":"fuzznet","type":"rnet-ipam","ipam":{"type":"rnet-ipam","ranges":[[{"subnet":"10.1.2.0/29"}],[{"subnet":"fd00::/125"}]]}}"#;

const DEFAULT_OPS: &str = "leases\nadd c1 eth0\nadd c2 eth0\ncheck c1 eth0\nadd c1 eth0\ndel c1 eth0\ngc c2/eth0\nstatus\nadd c3 eth1\n";

/// A per-process scratch directory: under `RNET_FUZZ_SCRATCH` (scripts/fuzz.sh
/// sets it and removes it afterwards), else on tmpfs when there is one.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if let Some(d) = std::env::var_os("RNET_FUZZ_SCRATCH") {
            PathBuf::from(d)
        } else if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        base.join(format!("rnet-fuzz-ipam-{}", std::process::id()))
    })
}

/// File names the input may use: inside the network directory only.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && name.split('/').count() <= 3
        && !name.contains('\0')
}

fn owner(s: &str) -> Option<Owner> {
    let (id, ifname) = s.split_once('/')?;
    Some(Owner::new(id, ifname))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let root = scratch();
    let _ = std::fs::remove_dir_all(root);
    let net = root.join("fuzznet");
    if std::fs::create_dir_all(net.join(".rnet/attach")).is_err()
        || std::fs::create_dir_all(net.join(".rnet/tmp")).is_err()
    {
        return;
    }
    let mut ops: Option<String> = None;
    for section in text.split("=== ").skip(1) {
        let (name, content) = section.split_once('\n').unwrap_or((section, ""));
        let name = name.trim();
        if name == "ops" {
            ops = Some(content.to_owned());
            continue;
        }
        if !safe_name(name) {
            continue;
        }
        let path = net.join(name);
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::write(&path, content);
    }
    let Ok(conf) = serde_json::from_str::<serde_json::Value>(CONFIG) else {
        return;
    };
    let Ok(mut config) = IpamConfig::from_netconf(&conf, &[]) else {
        panic!("the fixed configuration does not parse");
    };
    config.data_dir = root.to_path_buf();
    config.lock_timeout = std::time::Duration::from_millis(100);
    let sets = config.range_sets.clone();
    let Ok(ipam) = Ipam::open(config) else {
        return;
    };
    // Who got what from ADD in this run (cleared by DEL and GC).
    let mut live: HashMap<IpAddr, Owner> = HashMap::new();
    let ops = ops.unwrap_or_else(|| DEFAULT_OPS.to_owned());
    for line in ops.lines().take(32) {
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or("");
        let o = match (words.next(), words.next()) {
            (Some(id), Some(ifname)) => Some(Owner::new(id, ifname)),
            _ => None,
        };
        match (verb, o) {
            ("add", Some(o)) => {
                if let Ok(a) = ipam.allocate(&o) {
                    for ip in &a.ips {
                        let addr = ip.address.addr();
                        let Some(r) = sets.get(ip.range_set).and_then(|s| s.range_for(addr)) else {
                            panic!("{addr} is outside range set {}", ip.range_set);
                        };
                        assert_eq!(r.reserved_kind(addr), None, "{addr} is reserved");
                        if let Some(other) = live.get(&addr) {
                            assert_eq!(other, &o, "{addr} given to {o} while {other} holds it");
                        }
                        live.insert(addr, o.clone());
                    }
                    match ipam.check(&o) {
                        Ok(held) => {
                            for ip in &a.ips {
                                assert!(held.contains(&ip.address.addr()), "CHECK misses {ip:?}");
                            }
                        }
                        Err(e) if !a.ips.is_empty() => panic!("CHECK after ADD fails: {e}"),
                        Err(_) => {}
                    }
                }
            }
            ("del", Some(o)) => {
                if ipam.release(&o).is_ok() {
                    live.retain(|_, v| v != &o);
                }
            }
            ("check", Some(o)) => {
                let _ = ipam.check(&o);
            }
            ("gc", _) => {
                let valid: Vec<Owner> = line.split_whitespace().skip(1).filter_map(owner).collect();
                if ipam.gc(&valid).is_ok() {
                    live.retain(|_, v| valid.contains(v));
                }
            }
            ("status", _) => {
                let _ = ipam.status();
            }
            _ => {}
        }
        if let Ok(leases) = ipam.leases() {
            let mut seen: HashMap<IpAddr, &Owner> = HashMap::new();
            for l in &leases {
                if let Some(prev) = seen.insert(l.ip, &l.owner) {
                    panic!("{} listed twice: {prev} and {}", l.ip, l.owner);
                }
            }
        }
    }
});
