//! Differential tests against the reference `host-local` plugin: the same
//! configurations and the same operations must hand out the same addresses in
//! the same order, and both plugins must be able to share one data directory.
//!
//! host-local only touches files (`CNI_NETNS=/proc/self/ns/net` is never
//! entered for IPAM), and every data directory is a fresh temporary one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rnet_ipam::{Ipam, IpamConfig, Owner};
use serde_json::{Value, json};

fn host_local() -> PathBuf {
    let p = std::env::var_os("RNET_HOST_LOCAL")
        .map_or_else(|| PathBuf::from("/usr/lib/cni/host-local"), PathBuf::from);
    assert!(
        p.exists(),
        "the reference plugin {} is missing: install containernetworking-plugins \
         (Debian/Ubuntu: apt-get install containernetworking-plugins) or set RNET_HOST_LOCAL to its path",
        p.display()
    );
    p
}

/// What one operation produced: the addresses (`address gateway`) or an error.
type Outcome = Result<Vec<String>, String>;

fn run_host_local(command: &str, conf: &Value, cid: &str, cni_args: &str) -> Outcome {
    let mut child = Command::new(host_local())
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .env("CNI_ARGS", cni_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(stdout.into_owned());
    }
    if command != "ADD" {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(&stdout).unwrap();
    Ok(v["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| {
            format!(
                "{} {}",
                ip["address"].as_str().unwrap(),
                ip["gateway"].as_str().unwrap_or("-")
            )
        })
        .collect())
}

fn cni_args(args: &str) -> Vec<(String, String)> {
    args.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn run_rnet(command: &str, conf: &Value, cid: &str, args: &str) -> Outcome {
    let config = IpamConfig::from_netconf(conf, &cni_args(args)).map_err(|e| e.to_string())?;
    let ipam = Ipam::open(config).map_err(|e| e.to_string())?;
    let owner = Owner::new(cid, "eth0");
    match command {
        "ADD" => ipam
            .allocate(&owner)
            .map(|a| {
                a.ips
                    .iter()
                    .map(|ip| {
                        format!(
                            "{} {}",
                            ip.address,
                            ip.gateway.map_or("-".to_owned(), |g| g.to_string())
                        )
                    })
                    .collect()
            })
            .map_err(|e| e.to_string()),
        "DEL" => ipam
            .release(&owner)
            .map(|_| Vec::new())
            .map_err(|e| e.to_string()),
        "CHECK" => ipam
            .check(&owner)
            .map(|_| Vec::new())
            .map_err(|e| e.to_string()),
        other => panic!("{other}"),
    }
}

fn with_dir(conf: &Value, dir: &Path) -> Value {
    let mut c = conf.clone();
    c["ipam"]["dataDir"] = json!(dir);
    c
}

/// Runs `ops` (`(command, container, CNI_ARGS)`) through both plugins, each on its
/// own data directory, and compares every outcome (addresses, or failure).
fn compare(name: &str, conf: Value, ops: &[(&str, &str, &str)]) {
    let hl_dir = tempfile::tempdir().unwrap();
    let rn_dir = tempfile::tempdir().unwrap();
    let hl_conf = with_dir(&conf, hl_dir.path());
    let rn_conf = with_dir(&conf, rn_dir.path());
    for (step, (cmd, cid, args)) in ops.iter().enumerate() {
        let hl = run_host_local(cmd, &hl_conf, cid, args);
        let rn = run_rnet(cmd, &rn_conf, cid, args);
        println!("{name} #{step} {cmd} {cid}: host-local {hl:?} | rnet {rn:?}");
        match (&hl, &rn) {
            (Ok(a), Ok(b)) => assert_eq!(
                a, b,
                "{name} step {step}: {cmd} {cid} chose different addresses"
            ),
            (Err(_), Err(_)) => {}
            _ => panic!("{name} step {step}: {cmd} {cid}: host-local {hl:?} but rnet {rn:?}"),
        }
    }
    // same leases on disk, same file names (host-local's format)
    let leases = |d: &Path| {
        let mut v: Vec<(String, String)> = std::fs::read_dir(d.join("net"))
            .unwrap()
            .filter_map(|e| {
                let e = e.unwrap();
                let n = e.file_name().to_string_lossy().into_owned();
                n.parse::<std::net::IpAddr>().ok()?;
                Some((n, std::fs::read_to_string(e.path()).unwrap()))
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        leases(hl_dir.path()),
        leases(rn_dir.path()),
        "{name}: lease files differ"
    );
}

fn add(cid: &str) -> (&'static str, &str, &'static str) {
    ("ADD", cid, "")
}

fn del(cid: &str) -> (&'static str, &str, &'static str) {
    ("DEL", cid, "")
}

#[test]
fn round_robin_release_wrap_and_exhaustion_match() {
    compare(
        "v4 /29",
        json!({"cniVersion":"1.0.0","name":"net","type":"bridge","ipam":{"type":"host-local","subnet":"10.60.0.0/29"}}),
        &[
            add("a"),
            add("b"),
            add("c"),
            del("b"),
            add("d"),
            add("e"),
            add("f"),
            add("g"),
            del("a"),
            del("a"),
            add("h"),
            del("zz"),
        ],
    );
}

#[test]
fn multi_range_sets_and_dual_stack_match() {
    compare(
        "dual stack, two ranges in set 0",
        json!({"cniVersion":"1.0.0","name":"net","ipam":{"type":"host-local","ranges":[
            [{"subnet":"10.61.0.0/24","rangeStart":"10.61.0.10","rangeEnd":"10.61.0.12"},
             {"subnet":"10.61.1.0/24","rangeStart":"10.61.1.1","rangeEnd":"10.61.1.3","gateway":"10.61.1.1"}],
            [{"subnet":"fd61::/120","rangeStart":"fd61::fd"}]
        ]}}),
        // (a failing ADD comes last: host-local moves the cursors of the sets it
        // served before failing, rnet's failed ADD has no effect at all)
        &[
            add("a"),
            add("b"),
            add("c"),
            del("a"),
            add("d"),
            del("c"),
            add("e"),
            del("b"),
            add("f"),
            add("g"),
        ],
    );
}

#[test]
fn gateway_inside_the_range_and_v6_ranges_match() {
    compare(
        "gateway in the middle",
        json!({"cniVersion":"1.0.0","name":"net","ipam":{"type":"host-local","subnet":"10.62.0.0/28","gateway":"10.62.0.5","rangeStart":"10.62.0.3","rangeEnd":"10.62.0.7"}}),
        &[add("a"), add("b"), add("c"), add("d"), add("e")],
    );
    compare(
        "v6 wrap",
        json!({"cniVersion":"1.0.0","name":"net","ipam":{"type":"host-local","ranges":[[{"subnet":"2001:db8:0:1::/64","rangeStart":"2001:db8:0:1::fffe","rangeEnd":"2001:db8:0:1::1:2"}]]}}),
        &[
            add("a"),
            add("b"),
            add("c"),
            del("a"),
            add("d"),
            add("e"),
            add("f"),
        ],
    );
}

#[test]
fn static_addresses_match() {
    let conf = json!({"cniVersion":"1.0.0","name":"net","ipam":{"type":"host-local","ranges":[[{"subnet":"10.63.0.0/24"}],[{"subnet":"fd63::/64"}]]}});
    let mut args_conf = conf.clone();
    args_conf["args"] = json!({"cni":{"ips":["10.63.0.40","fd63::40"]}});
    let mut rt_conf = conf.clone();
    rt_conf["runtimeConfig"] = json!({"ips":["10.63.0.30/24"]});
    compare(
        "CNI_ARGS IP=",
        conf.clone(),
        &[
            ("ADD", "s1", "IP=10.63.0.50"),
            add("d1"),
            del("s1"),
            ("ADD", "s5", "IP=10.63.0.50"),
            add("d2"),
        ],
    );
    // failures (each as the last step, see multi_range_sets_and_dual_stack_match)
    for (n, ip) in ["10.63.0.50", "10.63.0.1", "10.64.0.1", "fd63::1"]
        .iter()
        .enumerate()
    {
        let args = format!("IP={ip}");
        compare(
            &format!("failing request {ip}"),
            conf.clone(),
            &[
                ("ADD", "s1", "IP=10.63.0.50"),
                ("ADD", ["x0", "x1", "x2", "x3"][n], args.as_str()),
            ],
        );
    }
    compare(
        "args.cni.ips",
        args_conf,
        &[add("s1"), add("d1"), add("s2")],
    );
    compare(
        "runtimeConfig.ips",
        rt_conf,
        &[add("s1"), add("d1"), add("s2")],
    );
}

/// host-local and rnet on ONE data directory: no double allocation, the cursor is
/// shared, and each plugin releases the other's leases.
#[test]
fn shared_data_dir_interoperates() {
    let dir = tempfile::tempdir().unwrap();
    let conf = with_dir(
        &json!({"cniVersion":"1.0.0","name":"net","ipam":{"type":"host-local","ranges":[[{"subnet":"10.65.0.0/24"}],[{"subnet":"fd65::/64"}]]}}),
        dir.path(),
    );
    let first = |o: Outcome| o.unwrap()[0].split(' ').next().unwrap().to_owned();
    // legacy data written by host-local before rnet ever ran
    assert_eq!(
        first(run_host_local("ADD", &conf, "h1", "")),
        "10.65.0.2/24"
    );
    assert_eq!(
        first(run_host_local("ADD", &conf, "h2", "")),
        "10.65.0.3/24"
    );
    assert_eq!(
        first(run_host_local("ADD", &conf, "h3", "")),
        "10.65.0.4/24"
    );
    // rnet continues the round robin and sees host-local's leases
    assert_eq!(first(run_rnet("ADD", &conf, "r1", "")), "10.65.0.5/24");
    run_rnet("CHECK", &conf, "h1", "").unwrap();
    run_rnet("DEL", &conf, "h2", "").unwrap();
    assert!(run_rnet("CHECK", &conf, "h2", "").is_err());
    // host-local continues from rnet's cursor
    assert_eq!(
        first(run_host_local("ADD", &conf, "h4", "")),
        "10.65.0.6/24"
    );
    // rnet notices host-local's new lease (cursor moved) and releases it by index
    run_rnet("DEL", &conf, "h4", "").unwrap();
    assert!(!dir.path().join("net/10.65.0.6").exists());
    assert!(!dir.path().join("net/fd65::6").exists());
    // host-local releases rnet's lease (it matches by content)
    run_host_local("DEL", &conf, "r1", "").unwrap();
    assert!(run_rnet("CHECK", &conf, "r1", "").is_err());
    // a static address held by the other plugin is refused by both
    run_host_local("ADD", &conf, "h5", "IP=10.65.0.77").unwrap();
    assert!(
        run_rnet("ADD", &conf, "r2", "IP=10.65.0.77")
            .unwrap_err()
            .contains("already allocated to container h5")
    );
    run_rnet("ADD", &conf, "r3", "IP=10.65.0.78").unwrap();
    assert!(run_host_local("ADD", &conf, "h6", "IP=10.65.0.78").is_err());
    // host-local's duplicate-allocation check sees rnet's leases
    assert!(run_host_local("ADD", &conf, "r3", "").is_err());
    // GC by rnet: everything but h1 goes
    let ipam = Ipam::open(IpamConfig::from_netconf(&conf, &[]).unwrap()).unwrap();
    let report = ipam.gc(&[Owner::new("h1", "eth0")]).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let left: Vec<String> = ipam
        .leases()
        .unwrap()
        .iter()
        .map(|l| l.owner.container_id.clone())
        .collect();
    assert_eq!(left, ["h1", "h1"]);
}
