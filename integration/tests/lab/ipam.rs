//! `rnet-ipam` through its real executable: allocation, release, CHECK,
//! STATUS, GC; many plugin processes at once; processes killed with SIGKILL at
//! random moments; differentially against the reference `host-local`; and
//! behind the reference `bridge` so either side can be swapped.

use crate::common::{error_code, lab, reference, rnet, rnet_dir, run};
use netns_fixtures::{CniOutput, Lab, ping};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A network config with this IPAM section, at cniVersion 1.1.0 (STATUS, GC).
fn conf(data_dir: &Path, ipam: Value) -> String {
    conf_v("1.1.0", data_dir, ipam)
}

/// The same at `version` (Debian's reference plugins speak up to 1.0.0).
fn conf_v(version: &str, data_dir: &Path, ipam: Value) -> String {
    let mut ipam = ipam;
    ipam["type"] = json!("host-local");
    ipam["dataDir"] = json!(data_dir);
    json!({"cniVersion": version, "name": "ipnet", "type": "bridge", "ipam": ipam}).to_string()
}

fn ipam_call(lab: &Lab, plugin: &Path, cmd: &str, id: &str, stdin: &str) -> CniOutput {
    run(lab
        .cni(plugin)
        .command(cmd)
        .container_id(id)
        .netns(lab.host().path())
        .ifname("eth0")
        .cni_path([rnet_dir()])
        .stdin(stdin.to_owned()))
}

fn addrs(v: &Value) -> Vec<String> {
    v["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["address"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn add_del_check_status_gc() {
    let lab = lab();
    let dir = lab.state_dir().join("ipam");
    let p = rnet("rnet-ipam");
    let c = conf(
        &dir,
        json!({"ranges": [[{"subnet": "10.50.0.0/29"}], [{"subnet": "fd50::/120"}]],
                              "routes": [{"dst": "0.0.0.0/0"}]}),
    );
    let r = ipam_call(&lab, &p, "ADD", "c1", &c).ok_json().unwrap();
    assert_eq!(addrs(&r), ["10.50.0.2/29", "fd50::2/120"]);
    assert_eq!(r["ips"][0]["gateway"], "10.50.0.1");
    assert!(
        r.get("interfaces").is_none(),
        "an IPAM result has no interfaces"
    );
    assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
    // The lease is a host-local file: <dataDir>/<network>/<ip> = "c1\r\neth0".
    let lease = std::fs::read_to_string(dir.join("ipnet").join("10.50.0.2")).unwrap();
    assert_eq!(lease, "c1\r\neth0");
    ipam_call(&lab, &p, "CHECK", "c1", &c).ok().unwrap();
    assert_eq!(error_code(&ipam_call(&lab, &p, "CHECK", "nobody", &c)), 116);
    ipam_call(&lab, &p, "STATUS", "", &c).ok().unwrap();
    // Fill the /29 (.2-.6 usable, .1 gateway, .7 broadcast): 4 more, then exhausted.
    for i in 2..=5 {
        ipam_call(&lab, &p, "ADD", &format!("c{i}"), &c)
            .ok()
            .unwrap();
    }
    assert_eq!(error_code(&ipam_call(&lab, &p, "ADD", "c6", &c)), 110);
    assert_eq!(error_code(&ipam_call(&lab, &p, "STATUS", "", &c)), 50);
    // DEL is idempotent and frees the address; round robin does not hand it out at once.
    ipam_call(&lab, &p, "DEL", "c1", &c).ok().unwrap();
    ipam_call(&lab, &p, "DEL", "c1", &c).ok().unwrap();
    assert!(!dir.join("ipnet").join("10.50.0.2").exists());
    ipam_call(&lab, &p, "STATUS", "", &c).ok().unwrap();
    // GC keeps c2 and c3, frees c4 and c5.
    let mut gc: Value = serde_json::from_str(&c).unwrap();
    gc["cni.dev/valid-attachments"] =
        json!([{"containerID":"c2","ifname":"eth0"},{"containerID":"c3","ifname":"eth0"}]);
    ipam_call(&lab, &p, "GC", "", &gc.to_string()).ok().unwrap();
    let left: BTreeSet<String> = std::fs::read_dir(dir.join("ipnet"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.parse::<IpAddr>().is_ok())
        .collect();
    assert_eq!(
        left,
        ["10.50.0.3", "10.50.0.4", "fd50::3", "fd50::4"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}

#[test]
fn static_ip_requests_and_errors() {
    let lab = lab();
    let dir = lab.state_dir().join("ipam");
    let p = rnet("rnet-ipam");
    let c = conf(&dir, json!({"subnet": "10.51.0.0/24"}));
    let r = run(lab
        .cni(&p)
        .command("ADD")
        .container_id("s1")
        .netns(lab.host().path())
        .ifname("eth0")
        .cni_path([rnet_dir()])
        .args("IgnoreUnknown=1;IP=10.51.0.77")
        .stdin(c.clone()))
    .ok_json()
    .unwrap();
    assert_eq!(addrs(&r), ["10.51.0.77/24"]);
    let taken = run(lab
        .cni(&p)
        .command("ADD")
        .container_id("s2")
        .netns(lab.host().path())
        .ifname("eth0")
        .cni_path([rnet_dir()])
        .args("IP=10.51.0.77")
        .stdin(c.clone()));
    assert_eq!(error_code(&taken), 111);
    let mut with_rc: Value = serde_json::from_str(&c).unwrap();
    with_rc["runtimeConfig"] = json!({"ips": ["10.99.0.5/24"]});
    assert_eq!(
        error_code(&ipam_call(&lab, &p, "ADD", "s3", &with_rc.to_string())),
        112
    );
    with_rc["runtimeConfig"] = json!({"ips": ["10.51.0.1"]});
    assert_eq!(
        error_code(&ipam_call(&lab, &p, "ADD", "s3", &with_rc.to_string())),
        114
    );
    let bad = conf(&dir, json!({"subnet": "10.51.0.0/33"}));
    let out = ipam_call(&lab, &p, "ADD", "s4", &bad);
    assert_eq!(error_code(&out), 7);
    assert!(
        out.json().unwrap()["msg"]
            .as_str()
            .unwrap()
            .contains("subnet"),
        "{}",
        out.stdout_str()
    );
    let overlap = conf(
        &dir,
        json!({"ranges": [[{"subnet": "10.52.0.0/24"}], [{"subnet": "10.52.0.0/25"}]]}),
    );
    assert_eq!(error_code(&ipam_call(&lab, &p, "ADD", "s5", &overlap)), 7);
}

/// The same sequence of ADDs and DELs to the reference host-local and to
/// rnet-ipam, each with its own dataDir: the same addresses, in the same order.
#[test]
fn differential_against_reference_host_local() {
    let lab = lab();
    let (theirs, ours) = (reference("host-local"), rnet("rnet-ipam"));
    let ipam = json!({"ranges": [[{"subnet": "10.60.0.0/28", "rangeStart": "10.60.0.3", "rangeEnd": "10.60.0.9"}],
                                 [{"subnet": "fd60::/124"}]],
                      "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.60.0.1"}]});
    let (da, db) = (lab.state_dir().join("ref"), lab.state_dir().join("rnet"));
    let (ca, cb) = (
        conf_v("1.0.0", &da, ipam.clone()),
        conf_v("1.0.0", &db, ipam),
    );
    let steps: Vec<(&str, &str)> = vec![
        ("ADD", "a"),
        ("ADD", "b"),
        ("ADD", "c"),
        ("DEL", "b"),
        ("ADD", "d"),
        ("ADD", "e"),
        ("DEL", "a"),
        ("ADD", "f"),
        ("ADD", "g"),
        ("ADD", "h"),
        ("DEL", "zzz"),
        ("ADD", "i"),
    ];
    for (cmd, id) in steps {
        let ra = ipam_call(&lab, &theirs, cmd, id, &ca);
        let rb = ipam_call(&lab, &ours, cmd, id, &cb);
        assert_eq!(
            ra.status == 0,
            rb.status == 0,
            "{cmd} {id}: reference {} vs rnet {}",
            ra.stdout_str(),
            rb.stdout_str()
        );
        if cmd == "ADD" && ra.status == 0 {
            let (ja, jb) = (ra.json().unwrap(), rb.json().unwrap());
            assert_eq!(ja["ips"], jb["ips"], "{cmd} {id}");
            assert_eq!(ja["routes"], jb["routes"], "{cmd} {id}");
        }
    }
    // The cursors agree too.
    for f in ["last_reserved_ip.0", "last_reserved_ip.1"] {
        assert_eq!(
            std::fs::read_to_string(da.join("ipnet").join(f)).unwrap(),
            std::fs::read_to_string(db.join("ipnet").join(f)).unwrap(),
            "{f}"
        );
    }
}

/// A dataDir written by the reference host-local is taken over without double
/// allocation; DEL of the reference's attachments works.
#[test]
fn takes_over_a_reference_data_dir() {
    let lab = lab();
    let dir = lab.state_dir().join("shared");
    let c = conf_v("1.0.0", &dir, json!({"subnet": "10.61.0.0/29"}));
    let (theirs, ours) = (reference("host-local"), rnet("rnet-ipam"));
    let mut seen = HashSet::new();
    for id in ["r1", "r2"] {
        let r = ipam_call(&lab, &theirs, "ADD", id, &c).ok_json().unwrap();
        assert!(seen.insert(addrs(&r)[0].clone()));
    }
    for id in ["n1", "n2", "n3"] {
        let r = ipam_call(&lab, &ours, "ADD", id, &c).ok_json().unwrap();
        assert!(seen.insert(addrs(&r)[0].clone()), "double allocation: {r}");
    }
    assert_eq!(error_code(&ipam_call(&lab, &ours, "ADD", "n4", &c)), 110);
    ipam_call(&lab, &ours, "DEL", "r1", &c).ok().unwrap();
    let r = ipam_call(&lab, &theirs, "ADD", "r3", &c).ok_json().unwrap();
    assert_eq!(
        addrs(&r),
        ["10.61.0.2/29"],
        "the reference sees the address rnet released"
    );
}

/// 50 plugin processes at once: 50 distinct addresses, no error.
#[test]
fn fifty_at_once() {
    let lab = lab();
    let dir = lab.state_dir().join("ipam");
    let c = conf(&dir, json!({"subnet": "10.62.0.0/24"}));
    let p = rnet("rnet-ipam");
    let results: Vec<CniOutput> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let (lab, p, c) = (&lab, &p, &c);
                s.spawn(move || ipam_call(lab, p, "ADD", &format!("par{i}"), c))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips = HashSet::new();
    for r in &results {
        let v = r.ok_json().unwrap();
        assert!(ips.insert(addrs(&v)[0].clone()), "duplicate address {v}");
    }
    assert_eq!(ips.len(), 50);
}

/// Processes killed with SIGKILL at random moments of ADD and DEL leave every
/// lease file complete, never an address twice, and GC frees the dead ones.
#[test]
fn sigkill_at_random_moments() {
    let lab = lab();
    let dir = lab.state_dir().join("ipam");
    let c = conf(&dir, json!({"subnet": "10.63.0.0/24"}));
    let p: PathBuf = rnet("rnet-ipam");
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // Kill moments spread over the plugin's own running time (measured on
    // this build: a release build runs in a fraction of a debug build's time,
    // and a fixed window would mostly kill after the end).
    let mut full: Vec<Duration> = (0..10)
        .map(|i| {
            let id = format!("calib{}", i % 2);
            let cmd = if i % 4 < 2 { "ADD" } else { "DEL" };
            let t = std::time::Instant::now();
            let st = run_killed(&lab, &p, cmd, &id, &c, Duration::from_secs(5));
            assert_eq!(st, Some(0), "calibration {cmd} {id} failed");
            t.elapsed()
        })
        .collect();
    full.sort();
    let window = u64::try_from(full[5].as_micros() * 6 / 5).unwrap().max(100);
    let mut alive: HashSet<String> = HashSet::new();
    let mut killed = 0;
    for round in 0..150 {
        let id = format!("k{}", next() % 40);
        let cmd = if alive.contains(&id) { "DEL" } else { "ADD" };
        let status = run_killed(
            &lab,
            &p,
            cmd,
            &id,
            &c,
            Duration::from_micros(next() % window),
        );
        if status.is_none() {
            killed += 1;
        }
        match (cmd, status) {
            ("ADD", Some(0)) => {
                alive.insert(id);
            }
            ("DEL", Some(0)) => {
                alive.remove(&id);
            }
            // Killed midway (or refused): the attachment's state is unknown to
            // the runtime, as after a crash; it is not a live attachment.
            _ => {
                alive.remove(&id);
            }
        }
        let _ = round;
    }
    assert!(
        killed >= 20,
        "only {killed} of 150 runs were killed midway: the test proves nothing"
    );
    let net = dir.join("ipnet");
    let mut owners = HashSet::new();
    for e in std::fs::read_dir(&net).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if name.parse::<IpAddr>().is_err() {
            continue;
        }
        let content = std::fs::read_to_string(e.path()).unwrap();
        let (id, ifname) = content
            .split_once("\r\n")
            .expect("a complete lease: id\\r\\nifname");
        assert_eq!(ifname, "eth0");
        assert!(owners.insert(id.to_owned()), "{id} holds two addresses");
    }
    let valid: Vec<Value> = alive
        .iter()
        .map(|id| json!({"containerID": id, "ifname": "eth0"}))
        .collect();
    let mut gc: Value = serde_json::from_str(&c).unwrap();
    gc["cni.dev/valid-attachments"] = json!(valid);
    ipam_call(&lab, &p, "GC", "", &gc.to_string()).ok().unwrap();
    let mut left = HashSet::new();
    for e in std::fs::read_dir(&net).unwrap() {
        let e = e.unwrap();
        if e.file_name()
            .into_string()
            .unwrap()
            .parse::<IpAddr>()
            .is_ok()
        {
            let content = std::fs::read_to_string(e.path()).unwrap();
            left.insert(content.split_once("\r\n").unwrap().0.to_owned());
        }
    }
    assert_eq!(
        left, alive,
        "after GC exactly the live attachments hold leases"
    );
    for id in &alive {
        ipam_call(&lab, &p, "DEL", id, &c).ok().unwrap();
    }
}

/// Runs a plugin and SIGKILLs it after `after` unless it finished; `None` when killed.
fn run_killed(
    lab: &Lab,
    plugin: &Path,
    cmd: &str,
    id: &str,
    stdin: &str,
    after: Duration,
) -> Option<i32> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut c = Command::new(plugin);
    c.env_clear()
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", lab.host().path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", rnet_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = lab.host().spawn(&mut c).unwrap();
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin.as_bytes());
    }
    // Until `after` or the plugin's end, whichever comes first; polled, not
    // slept: a sleep's wake-up comes 0.1 ms or more late on a VM, longer than
    // a release build's whole ADD.
    let deadline = std::time::Instant::now() + after;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code();
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        if left > Duration::from_millis(2) {
            std::thread::sleep(Duration::from_millis(1));
        } else {
            std::hint::spin_loop();
        }
    }
    let _ = child.kill();
    let st = child.wait().unwrap();
    // It may have finished between try_wait and kill.
    st.code()
}

/// rnet-ipam behind the reference bridge: the container gets its address and
/// reaches its gateway.
#[test]
fn behind_the_reference_bridge() {
    let lab = lab();
    let ctr = lab.add_container("c1").unwrap();
    let dir = lab.state_dir().join("ipam");
    // The reference bridge finds the IPAM plugin by type in CNI_PATH: give it
    // a directory where `host-local` is rnet-ipam.
    let bin = lab.state_dir().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(rnet("rnet-ipam"), bin.join("host-local")).unwrap();
    let c = json!({"cniVersion": "0.4.0", "name": "refbr", "type": "bridge", "bridge": "rb0",
                   "isGateway": true, "ipam": {"type": "host-local", "subnet": "10.64.0.0/24", "dataDir": dir}})
    .to_string();
    let call = |cmd: &str| {
        run(lab
            .cni(reference("bridge"))
            .command(cmd)
            .container_id("c1")
            .netns(ctr.netns_path())
            .ifname("eth0")
            .cni_path([bin.clone()])
            .stdin(c.clone()))
    };
    let r = call("ADD").ok_json().unwrap();
    assert_eq!(addrs(&r), ["10.64.0.2/24"]);
    ping(
        ctr.ns(),
        "10.64.0.1".parse().unwrap(),
        Duration::from_secs(3),
    )
    .unwrap();
    assert!(dir.join("refbr").join("10.64.0.2").exists());
    call("DEL").ok().unwrap();
    assert!(!dir.join("refbr").join("10.64.0.2").exists());
}
