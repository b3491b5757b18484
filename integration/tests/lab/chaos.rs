//! Chaos: ADD and DEL of the full chain (rnet-bridge + rnet-ipam,
//! rnet-portmap, rnet-dnsname) with plugin processes SIGKILLed at random
//! moments, then GC with the set of live attachments. Afterwards: every lease
//! belongs to a live attachment, no veth, nft element or DNS name is left of a
//! dead one, and every live container still reaches its gateway.
//!
//! The kills come from a wrapper laid in front of each plugin: it runs the
//! real plugin under `timeout -s KILL <delay>`, the delay read from a file the
//! test rewrites before every operation (a random number of microseconds, or
//! none).

use crate::common::{StopResolver, lab, rnet};
use netns_fixtures::{Container, Lab, ping};
use rnet_cni::Attachment;
use rnet_cni::runtime::{ConfList, Runtime, RuntimeConf};
use serde_json::json;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const PLUGINS: &[&str] = &["rnet-bridge", "rnet-ipam", "rnet-portmap", "rnet-dnsname"];

fn wrapper_dir(lab: &Lab, delay_file: &Path) -> PathBuf {
    let real = rnet("rnet-bridge").parent().unwrap().to_path_buf();
    let dir = lab.state_dir().join("chaos-bin");
    std::fs::create_dir_all(&dir).unwrap();
    for p in PLUGINS {
        let w = dir.join(p);
        std::fs::write(
            &w,
            format!(
                "#!/bin/sh\nd=$(cat {delay} 2>/dev/null)\nif [ -n \"$d\" ]; then exec timeout -s KILL \"$d\" {real}/{p}; fi\nexec {real}/{p}\n",
                delay = delay_file.display(),
                real = real.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // The resolver is started by the dnsname plugin from beside itself.
    std::os::unix::fs::symlink(real.join("rnet-dns"), dir.join("rnet-dns")).unwrap();
    dir
}

#[test]
fn sigkill_anywhere_then_gc_leaves_only_the_living() {
    let lab = lab();
    let delay = lab.state_dir().join("delay");
    let bin = wrapper_dir(&lab, &delay);
    let root = lab.state_dir().join("run");
    let _resolver = StopResolver(root.join("dns"));
    let conf = json!({"cniVersion": "1.1.0", "name": "chaos", "plugins": [
        {"type": "rnet-bridge", "bridge": "br-chaos", "isGateway": true, "ipMasq": true,
         "rnetStateDir": root,
         "ipam": {"type": "rnet-ipam", "subnet": "10.88.40.0/24", "dataDir": lab.state_dir().join("ipam"),
                  "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "rnet-portmap", "capabilities": {"portMappings": true}, "rnetStateDir": root},
        {"type": "rnet-dnsname", "domainName": "dns.rnet", "rnetStateDir": root,
         "rnetDefaultUpstreams": ["127.0.0.1:9"]}
    ]});
    let list = ConfList::parse(conf.to_string().as_bytes()).unwrap();
    let rt = Runtime::new(vec![bin], lab.state_dir().join("cache"));
    let slots = 12;
    let containers: Vec<Container> = (0..slots)
        .map(|i| lab.add_container(&format!("k{i}")).unwrap())
        .collect();
    let rc = |i: usize| {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "portMappings".into(),
            json!([{"hostPort": 20000 + i, "containerPort": 80, "protocol": "tcp"}]),
        );
        RuntimeConf {
            container_id: format!("k{i}"),
            netns: Some(containers[i].netns_path()),
            ifname: "eth0".into(),
            args: vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAME".into(), format!("k{i}")),
            ],
            capability_args: caps,
        }
    };
    let mut seed: u64 = std::env::var("RNET_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x2545_f491_4f6c_dd1d);
    let seed0 = seed;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let rounds: usize = std::env::var("RNET_CHAOS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let mut live: BTreeMap<usize, bool> = BTreeMap::new();
    let (mut kills, mut adds, mut dels) = (0, 0, 0);
    for _ in 0..rounds {
        let i = (next() % slots as u64) as usize;
        let kill = next() % 2 == 0;
        if kill {
            // 0.2 to 25 ms: anywhere from a plugin's start to its last
            // netlink call (the chain's plugins run one after another).
            let us = 200 + next() % 25_000;
            std::fs::write(&delay, format!("{:.4}s", us as f64 / 1e6)).unwrap();
        } else {
            std::fs::write(&delay, "").unwrap();
        }
        let adding = !live.get(&i).copied().unwrap_or(false);
        let res = lab
            .host()
            .run(|| {
                if adding {
                    rt.add(&list, &rc(i)).map(|_| ())
                } else {
                    rt.del(&list, &rc(i))
                }
            })
            .unwrap();
        match (adding, res.is_ok()) {
            (true, true) => {
                live.insert(i, true);
                adds += 1;
            }
            (false, true) => {
                live.insert(i, false);
                dels += 1;
            }
            // Failed or killed midway: the runtime does not know what is left,
            // as after a crash; the attachment is not live.
            _ => {
                kills += 1;
                live.insert(i, false);
            }
        }
    }
    std::fs::write(&delay, "").unwrap();
    // After all that, what a runtime does after a failed or interrupted
    // setup (DEL, then ADD again) must work for any slot, whatever the killed
    // run left behind.
    for i in 0..3 {
        if !live.get(&i).copied().unwrap_or(false) {
            lab.host()
                .run(|| rt.del(&list, &rc(i)))
                .unwrap()
                .unwrap_or_else(|e| panic!("DEL of k{i} after the chaos failed: {e}"));
            lab.host()
                .run(|| rt.add(&list, &rc(i)))
                .unwrap()
                .unwrap_or_else(|e| panic!("ADD of k{i} after the chaos failed: {e}"));
            live.insert(i, true);
        }
    }
    assert!(
        kills >= rounds / 10,
        "only {kills} of {rounds} operations were killed: the test proves too little"
    );
    assert!(
        live.values().any(|l| *l),
        "no attachment alive at the end: the test proves too little"
    );
    let valid: Vec<Attachment> = live
        .iter()
        .filter(|(_, l)| **l)
        .map(|(i, _)| Attachment {
            container_id: format!("k{i}"),
            ifname: "eth0".into(),
        })
        .collect();
    lab.host()
        .run(|| rt.gc(&list, &valid))
        .unwrap()
        .unwrap_or_else(|e| panic!("GC failed: {e:?}"));
    std::thread::sleep(Duration::from_millis(300)); // deferred veth deletions
    // Leases: exactly the living.
    let mut lease_owners: Vec<String> =
        std::fs::read_dir(lab.state_dir().join("ipam").join("chaos"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .parse::<std::net::IpAddr>()
                    .is_ok()
            })
            .map(|e| {
                std::fs::read_to_string(e.path())
                    .unwrap()
                    .split("\r\n")
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
    lease_owners.sort();
    let mut want: Vec<String> = valid.iter().map(|a| a.container_id.clone()).collect();
    want.sort();
    assert_eq!(
        lease_owners, want,
        "leases after GC (adds {adds}, dels {dels}, killed {kills})"
    );
    // Veths: exactly the living.
    let mut nl = lab.netlink().unwrap();
    let mut veth_owners: Vec<String> = nl
        .link_list()
        .unwrap()
        .into_iter()
        .filter(|l| l.kind.as_deref() == Some("veth"))
        .filter_map(|l| l.alias.and_then(|a| a.split('/').nth(1).map(str::to_owned)))
        .collect();
    veth_owners.sort();
    assert_eq!(veth_owners, want, "veths after GC");
    // nft: no element tagged with a dead attachment.
    let mut c = Command::new("nft");
    c.args(["list", "table", "inet", "rnet"]);
    let table = String::from_utf8_lossy(&lab.host().output(&mut c).unwrap().stdout).into_owned();
    for i in 0..slots {
        let tag = format!("\"chaos/k{i}/eth0\"");
        let alive = live.get(&i).copied().unwrap_or(false);
        assert_eq!(
            table.contains(&tag),
            alive,
            "nft elements of k{i} (alive: {alive}):\n{table}"
        );
    }
    // The living still work: gateway reachable.
    for (i, alive) in &live {
        if *alive {
            ping(
                containers[*i].ns(),
                "10.88.40.1".parse().unwrap(),
                Duration::from_secs(3),
            )
            .unwrap_or_else(|e| panic!("k{i} lost its network: {e}"));
        }
    }
    // DNS: the resolver holds only the living (listed through its control socket).
    let dns = root.join("dns");
    let mut ctl = Command::new(rnet("rnet-dns"));
    ctl.arg("ctl")
        .arg("--state-dir")
        .arg(&dns)
        .arg(r#"{"op":"list"}"#);
    let out = String::from_utf8_lossy(&lab.host().output(&mut ctl).unwrap().stdout).into_owned();
    for i in 0..slots {
        let alive = live.get(&i).copied().unwrap_or(false);
        let has = out.contains(&format!("\"k{i}\""));
        assert_eq!(has, alive, "resolver names of k{i} (alive: {alive}): {out}");
    }
    for a in &valid {
        let i: usize = a.container_id[1..].parse().unwrap();
        let _ = lab.host().run(|| rt.del(&list, &rc(i)));
    }
    eprintln!(
        "chaos (seed {seed0}): {rounds} operations, {kills} killed or failed, {adds} ADDs and {dels} DELs completed, {} alive at GC",
        valid.len()
    );
}
