//! Real runtimes: unmodified Podman 4 (CNI backend) runs containers on a
//! plugin directory holding only rnet's plugins (laid out by
//! `rnet install-plugins`), and the same scenario against the reference
//! plugins (so a failure can be told apart as rnet's or the test's).
//!
//! Confinement: Podman runs inside the lab host network namespace and a
//! private mount namespace with tmpfs over /run and /var/lib; its storage and
//! configuration live in the lab's temp dir; cgroups are disabled. The
//! scenario is `podman.sh` beside this file.

use crate::common::{lab, rnet};
use netns_fixtures::{Lab, OutsideConfig};
use std::path::{Path, PathBuf};
use std::process::Command;

fn podman_scenario(lab: &Lab, plugins: &Path, dns: bool) -> String {
    assert!(
        Path::new("/usr/bin/podman").exists(),
        "podman missing: install Debian's podman (scripts/deps.sh does)"
    );
    let outside = lab.add_outside(OutsideConfig::default()).unwrap();
    let work = lab.state_dir().join("podman");
    std::fs::create_dir_all(&work).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/lab/podman.sh");
    let mut c = Command::new("unshare");
    c.arg("-m")
        .arg("bash")
        .arg(&script)
        .arg(plugins)
        .arg(&work)
        .arg(outside.ns().path())
        .arg(if dns { "1" } else { "0" });
    let o = lab.host().output(&mut c).unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        fails.is_empty(),
        "Podman scenario failed:\n{}\n--- full output:\n{out}",
        fails.join("\n")
    );
    let oks = out.lines().filter(|l| l.starts_with("ok ")).count();
    let want = if dns { 17 } else { 15 };
    assert_eq!(oks, want, "every step must have run:\n{out}");
    assert!(
        out.contains("LEASES 0"),
        "podman rm must release the leases:\n{out}"
    );
    // Nothing left on the lab host: no container veth.
    let mut nl = lab.netlink().unwrap();
    let veths: Vec<String> = nl
        .link_list()
        .unwrap()
        .into_iter()
        .filter(|l| l.kind.as_deref() == Some("veth") && l.name != "uplink0")
        .map(|l| l.name)
        .collect();
    assert!(veths.is_empty(), "veths left: {veths:?}");
    out
}

#[test]
fn podman_on_rnet_plugins_alone() {
    let lab = lab();
    let dir = lab.state_dir().join("cni-bin");
    let mut c = Command::new(rnet("rnet"));
    c.args(["install-plugins", "--dir"]).arg(&dir);
    assert!(c.status().unwrap().success());
    for name in [
        "bridge",
        "host-local",
        "portmap",
        "firewall",
        "tuning",
        "loopback",
        "dnsname",
    ] {
        assert!(dir.join(name).exists(), "{name} not installed");
    }
    podman_scenario(&lab, &dir, true);
    // rnet's tables hold nothing of the removed containers.
    let mut list = Command::new("nft");
    list.args(["list", "table", "inet", "rnet"]);
    let t = String::from_utf8_lossy(&lab.host().output(&mut list).unwrap().stdout).into_owned();
    assert!(!t.contains("10.89.7."), "nft elements left:\n{t}");
}

#[test]
fn podman_on_the_reference_plugins() {
    let lab = lab();
    podman_scenario(&lab, Path::new("/usr/lib/cni"), false);
}
