//! Real runtimes: unmodified Podman 4 (CNI backend) runs containers on a
//! plugin directory holding only rnet's plugins (laid out by
//! `rnet install-plugins`), and the same scenario against the reference
//! plugins (so a failure can be told apart as rnet's or the test's).
//!
//! Confinement: Podman runs inside the lab host network namespace and a
//! private mount namespace with tmpfs over /run, /var/lib and /dev/shm; its storage and
//! configuration live in the lab's temp dir; cgroups are disabled. The
//! scenario is `podman.sh` beside this file.
//!
//! rnet's run also sets iptables' `FORWARD` policy to DROP in the lab host,
//! as Docker leaves a host: the firewall plugin must admit the containers
//! there, published ports included. The reference run leaves the policy
//! alone: with it, the reference plugins drop connections DNATed to a
//! published port from outside (their firewall admits only replies).

use crate::common::{lab, rnet};
use netns_fixtures::{Lab, OutsideConfig};
use std::path::{Path, PathBuf};
use std::process::Command;

fn podman_scenario(lab: &Lab, plugins: &Path, dns: bool, forward_drop: bool) -> String {
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
        .arg(if dns { "1" } else { "0" })
        .arg(if forward_drop { "1" } else { "0" });
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
    let want = if dns { 26 } else { 20 };
    assert_eq!(oks, want, "every step must have run:\n{out}");
    assert!(
        out.contains("LEASES 0"),
        "podman rm must release the leases:\n{out}"
    );
    // Nothing left on the lab host: no container veth.
    let veths = crate::common::container_veths(lab);
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
    podman_scenario(&lab, &dir, true, true);
    // rnet's tables hold nothing of the removed containers.
    let mut list = Command::new("nft");
    list.args(["list", "table", "inet", "rnet"]);
    let t = String::from_utf8_lossy(&lab.host().output(&mut list).unwrap().stdout).into_owned();
    assert!(!t.contains("10.89.7."), "nft elements left:\n{t}");
}

#[test]
fn podman_on_the_reference_plugins() {
    let lab = lab();
    podman_scenario(&lab, Path::new("/usr/lib/cni"), false, false);
}

/// libcni's `cnitool` (`cnitool/main.go`: the upstream tool's interface,
/// built offline against Debian's golang-github-appc-cni-dev libcni) runs a
/// conflist of every rnet plugin found by name in NETCONFPATH, with CNI_ARGS
/// and CAP_ARGS (a published port): ADD, the port reachable from outside,
/// CHECK, CHECK reporting a broken container, idempotent DEL.
#[test]
fn libcni_drives_every_rnet_plugin() {
    libcni_scenario(true);
}

/// The same libcni scenario on the reference plugins (no DNS plugin there).
#[test]
fn libcni_drives_the_reference_plugins() {
    libcni_scenario(false);
}

fn libcni_scenario(rnet_plugins: bool) {
    let lab = lab();
    let _resolver = crate::common::StopResolver(lab.state_dir().join("run").join("dns"));
    let work = lab.state_dir().join("go");
    std::fs::create_dir_all(&work).unwrap();
    assert!(
        Path::new("/usr/share/gocode/src/github.com/containernetworking/cni/libcni").exists()
            && Path::new("/usr/bin/go").exists(),
        "libcni sources or Go missing: install golang-go and golang-github-appc-cni-dev (scripts/deps.sh does)"
    );
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/lab/cnitool/main.go");
    let cnitool = work.join("cnitool");
    let st = Command::new("go")
        .args(["build", "-o"])
        .arg(&cnitool)
        .arg(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", work.join("cache"))
        .env("HOME", &work)
        .status()
        .unwrap();
    assert!(
        st.success(),
        "building cnitool against Debian's libcni failed"
    );
    let outside = lab.add_outside(OutsideConfig::default()).unwrap();
    let t = |rnet_name: &'static str, reference: &'static str| {
        if rnet_plugins { rnet_name } else { reference }
    };
    let mut plugins = vec![
        serde_json::json!({"type": t("rnet-bridge", "bridge"), "bridge": "br-libcni", "isGateway": true, "ipMasq": true,
         "rnetStateDir": lab.state_dir().join("run"),
         "ipam": {"type": t("rnet-ipam", "host-local"), "subnet": "10.89.8.0/24", "dataDir": lab.state_dir().join("ipam"),
                  "routes": [{"dst": "0.0.0.0/0"}]}}),
        serde_json::json!({"type": t("rnet-portmap", "portmap"), "capabilities": {"portMappings": true}, "rnetStateDir": lab.state_dir().join("run")}),
        serde_json::json!({"type": t("rnet-firewall", "firewall"), "backend": "iptables", "rnetStateDir": lab.state_dir().join("run")}),
        serde_json::json!({"type": t("rnet-tuning", "tuning"), "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}, "dataDir": lab.state_dir().join("tuning")}),
    ];
    if rnet_plugins {
        plugins.push(serde_json::json!({"type": "rnet-dnsname", "domainName": "dns.rnet", "rnetStateDir": lab.state_dir().join("run"),
         "rnetDefaultUpstreams": ["127.0.0.1:9"]}));
    }
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "libcni", "plugins": plugins});
    // Found by its name among other files, as cnitool finds it.
    let netdir = lab.state_dir().join("net.d");
    std::fs::create_dir_all(&netdir).unwrap();
    std::fs::write(netdir.join("50-libcni.conflist"), conf.to_string()).unwrap();
    std::fs::write(
        netdir.join("10-other.conflist"),
        r#"{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"none"}]}"#,
    )
    .unwrap();
    let ctr = lab.add_container("c").unwrap();
    let plugin_dir = if rnet_plugins {
        rnet("rnet-bridge").parent().unwrap().to_path_buf()
    } else {
        PathBuf::from("/usr/lib/cni")
    };
    // The reference portmap (1.1.1) fails CHECK once it has a mapping (it
    // looks for an IPv6 DNAT chain it never made): its run publishes nothing.
    let caps = if rnet_plugins {
        r#"{"portMappings":[{"hostPort":8088,"containerPort":80,"protocol":"tcp"}]}"#
    } else {
        "{}"
    };
    let run = |verb: &str| {
        let mut c = Command::new(&cnitool);
        c.arg(verb)
            .arg("libcni")
            .arg(ctr.netns_path())
            .env("NETCONFPATH", &netdir)
            .env("CNI_PATH", &plugin_dir)
            .env("CNI_CACHE_DIR", lab.state_dir().join("libcni-cache"))
            .env("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=box")
            .env("CAP_ARGS", caps);
        let o = lab.host().output(&mut c).unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    let (ok, out) = run("add");
    assert!(ok, "libcni ADD failed: {out}");
    assert!(
        out.contains("10.89.8.2/24") && out.contains("10.89.8.1"),
        "{out}"
    );
    // The published port (CAP_ARGS) answers from outside, through the host.
    let srv = netns_fixtures::tcp_listen(ctr.ns(), "10.89.8.2:80".parse().unwrap()).unwrap();
    if rnet_plugins {
        assert_eq!(
            netns_fixtures::tcp_connect(
                outside.ns(),
                "198.51.100.1:8088".parse().unwrap(),
                std::time::Duration::from_secs(3)
            )
            .unwrap(),
            srv.banner(),
            "published port 8088 from outside"
        );
    }
    let (ok, out) = run("check");
    assert!(ok, "libcni CHECK failed: {out}");
    // Break the container: CHECK must say so.
    let mut nl = ctr.netlink().unwrap();
    let eth = nl.link_by_name("eth0").unwrap().unwrap();
    nl.addr_del(eth.index, "10.89.8.2/24".parse().unwrap())
        .unwrap();
    let (ok, out) = run("check");
    assert!(
        !ok && out.contains("10.89.8.2"),
        "CHECK must report the missing address: {out}"
    );
    let (ok, out) = run("del");
    assert!(ok, "libcni DEL failed: {out}");
    let (ok, out) = run("del");
    assert!(ok, "a second DEL must succeed: {out}");
    assert!(
        netns_fixtures::tcp_connect(
            outside.ns(),
            "198.51.100.1:8088".parse().unwrap(),
            std::time::Duration::from_millis(700)
        )
        .is_err(),
        "the port is closed after DEL"
    );
    drop(srv);
}
