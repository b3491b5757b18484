//! The `rnet` command run inside a throwaway host namespace: networks
//! (`create`, `ls`, `inspect`, `rm`, `prune`), their conflists, and errors.

use crate::common::{lab, reference, rnet};
use netns_fixtures::{Lab, OutsideConfig, ping};
use rnet_cni::runtime::{ConfList, Runtime, RuntimeConf};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

struct Cli<'a> {
    lab: &'a Lab,
    conf: PathBuf,
    state: PathBuf,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl<'a> Cli<'a> {
    fn new(lab: &'a Lab) -> Self {
        Self {
            lab,
            conf: lab.state_dir().join("net.d"),
            state: lab.state_dir().join("rnet"),
        }
    }

    fn run(&self, args: &[&str]) -> Out {
        let mut c = Command::new(rnet("rnet"));
        c.args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("RNET_CONFIG_DIR", &self.conf)
            .env("RNET_STATE_DIR", &self.state);
        let o = self
            .lab
            .host()
            .output(&mut c)
            .expect("run rnet in the lab host");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(o.code, 0, "rnet {args:?} failed: {}{}", o.stdout, o.stderr);
        o.stdout
    }

    fn err(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(
            o.code, 1,
            "rnet {args:?} should fail: {}{}",
            o.stdout, o.stderr
        );
        assert!(
            o.stdout.is_empty(),
            "errors go to stderr only: {}",
            o.stdout
        );
        assert!(
            !o.stderr.contains("panicked") && !o.stderr.contains("RUST_BACKTRACE"),
            "{}",
            o.stderr
        );
        o.stderr
    }
}

#[test]
fn networks_lifecycle() {
    let lab = lab();
    let cli = Cli::new(&lab);
    // The built-ins are always there.
    let ls = cli.ok(&["ls"]);
    for b in ["bridge", "host", "none"] {
        assert!(
            ls.lines().any(|l| l.split_whitespace().nth(1) == Some(b)),
            "{ls}"
        );
    }
    assert!(ls.starts_with("NETWORK ID"));
    assert_eq!(cli.ok(&["create", "web"]).trim(), "web");
    cli.ok(&[
        "network",
        "create",
        "lab6",
        "--ipv6",
        "--internal",
        "--label",
        "team=a",
        "--opt",
        "mtu=1400",
    ]);
    cli.ok(&[
        "create",
        "fixed",
        "--subnet",
        "10.93.0.0/24",
        "--gateway",
        "10.93.0.254",
        "--ip-range",
        "10.93.0.128/25",
        "--disable-dns",
        "--isolate",
    ]);
    // Each is a valid conflist in the config dir.
    for n in ["web", "lab6", "fixed"] {
        let p = cli.conf.join(format!("{n}.conflist"));
        let list = ConfList::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(list.name, n);
    }
    let json: Value = serde_json::from_str(&cli.ok(&["ls", "--format", "json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 6);
    assert_eq!(
        cli.ok(&["ls", "-q", "--filter", "label=team=a"]).trim(),
        "lab6"
    );
    assert_eq!(
        cli.ok(&["ls", "-q", "--filter", "name=fix"]).trim(),
        "fixed"
    );
    let v: Value = serde_json::from_str(&cli.ok(&["inspect", "fixed", "lab6"])).unwrap();
    let fixed = &v[0];
    assert_eq!(fixed["Subnets"], json!(["10.93.0.0/24"]));
    let bridge = &fixed["Config"]["plugins"][0];
    assert_eq!(bridge["isolation"], true);
    let range = &bridge["ipam"]["ranges"][0][0];
    assert_eq!(range["gateway"], "10.93.0.254");
    assert_eq!(range["rangeStart"], "10.93.0.129");
    assert_eq!(range["rangeEnd"], "10.93.0.254");
    assert!(
        fixed["Config"]["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["type"] != "rnet-dnsname")
    );
    let lab6 = &v[1];
    assert_eq!(lab6["Internal"], true);
    assert_eq!(lab6["Config"]["plugins"][0]["ipMasq"], false);
    assert_eq!(lab6["Config"]["plugins"][0]["mtu"], 1400);
    assert_eq!(lab6["Subnets"].as_array().unwrap().len(), 2);
    assert!(
        lab6["Config"]["plugins"][0]["ipam"]["routes"]
            .as_array()
            .unwrap()
            .is_empty(),
        "internal: no default route"
    );
    // Removal and prune.
    assert_eq!(cli.ok(&["rm", "web"]).trim(), "web");
    assert!(!cli.conf.join("web.conflist").exists());
    let pruned = cli.ok(&["prune"]);
    assert!(
        pruned.contains("lab6") && pruned.contains("fixed"),
        "{pruned}"
    );
    assert_eq!(
        cli.ok(&["ls", "-q"]).split_whitespace().collect::<Vec<_>>(),
        ["bridge", "host", "none"]
    );
}

#[test]
fn errors_say_what_is_wrong() {
    let lab = lab();
    let _out = lab.add_outside(OutsideConfig::default()).unwrap();
    let cli = Cli::new(&lab);
    cli.ok(&["create", "a", "--subnet", "10.94.0.0/24"]);
    assert!(cli.err(&["create", "a"]).contains("already exists"));
    assert!(
        cli.err(&["create", "b", "--subnet", "10.94.0.128/25"])
            .contains("overlaps")
    );
    // A route on the host counts as used: the uplink's 198.51.100.0/24.
    assert!(
        cli.err(&["create", "c", "--subnet", "198.51.100.0/24"])
            .contains("overlaps")
    );
    assert!(cli.err(&["create", "host"]).contains("built-in"));
    assert!(
        cli.err(&["create", "d", "--gateway", "10.1.1.1"])
            .contains("none of the subnets")
    );
    assert!(
        cli.err(&["create", "e", "--opt", "bogus=1"])
            .contains("unknown option")
    );
    assert!(cli.err(&["create", "f", "--opt", "mtu=9"]).contains("mtu"));
    assert!(cli.err(&["create", "bad/name"]).contains("network name"));
    assert!(cli.err(&["inspect", "nope"]).contains("no network named"));
    assert!(cli.err(&["rm", "none"]).contains("built-in"));
    assert!(
        cli.err(&["ls", "--filter", "color=red"])
            .contains("unknown filter")
    );
    let usage = cli.run(&["create"]);
    assert_eq!(usage.code, 2, "usage errors exit 2");
}

#[test]
fn picks_a_free_subnet() {
    let lab = lab();
    let cli = Cli::new(&lab);
    // Occupy the first /24 of the pool with a route on the lab host.
    let mut nl = lab.netlink().unwrap();
    let lo = nl.link_by_name("lo").unwrap().unwrap();
    let mut r = rnet_netlink::RouteSpec::new("10.90.0.0/24".parse().unwrap());
    r.oif = Some(lo.index);
    nl.route_add(&r).unwrap();
    cli.ok(&["create", "one"]);
    cli.ok(&["create", "two"]);
    let v: Value = serde_json::from_str(&cli.ok(&["inspect", "one", "two"])).unwrap();
    assert_eq!(v[0]["Subnets"], json!(["10.90.1.0/24"]));
    assert_eq!(v[1]["Subnets"], json!(["10.90.2.0/24"]));
}

/// The conflists `rnet create` writes work with the reference plugins too
/// (types mapped to the reference names), and `rnet rm` refuses a network
/// with an attached container, naming it.
#[test]
fn conflists_work_with_reference_plugins() {
    let lab = lab();
    let cli = Cli::new(&lab);
    cli.ok(&[
        "create",
        "refnet",
        "--subnet",
        "10.95.0.0/24",
        "--disable-dns",
    ]);
    let p = cli.conf.join("refnet.conflist");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let plugins = v["plugins"].as_array_mut().unwrap();
    plugins.retain(|p| p["type"] == "rnet-bridge"); // the reference portmap needs iptables
    plugins[0]["type"] = json!("bridge");
    plugins[0]["ipam"]["type"] = json!("host-local");
    v["cniVersion"] = json!("1.0.0");
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let list = ConfList::load(&p).unwrap();
    let rt = Runtime::new(
        vec![reference("bridge").parent().unwrap().to_path_buf()],
        cli.state.join("cache"),
    );
    let ctr = lab.add_container("c1").unwrap();
    let conf = RuntimeConf {
        container_id: "c1".into(),
        netns: Some(ctr.netns_path()),
        ifname: "eth0".into(),
        ..RuntimeConf::default()
    };
    let r = lab.host().run(|| rt.add(&list, &conf)).unwrap().unwrap();
    assert_eq!(r.ips[0].address.to_string(), "10.95.0.2/24");
    ping(
        ctr.ns(),
        "10.95.0.1".parse().unwrap(),
        Duration::from_secs(3),
    )
    .unwrap();
    let v: Value = serde_json::from_str(&cli.ok(&["inspect", "refnet"])).unwrap();
    assert_eq!(
        v[0]["Containers"]["c1"]["Addresses"],
        json!(["10.95.0.2/24"])
    );
    let e = cli.err(&["rm", "refnet"]);
    assert!(e.contains("attached containers") && e.contains("c1"), "{e}");
    lab.host().run(|| rt.del(&list, &conf)).unwrap().unwrap();
    assert!(
        lab.netlink()
            .unwrap()
            .link_by_name(v[0]["Bridge"].as_str().unwrap())
            .unwrap()
            .is_some()
    );
}
