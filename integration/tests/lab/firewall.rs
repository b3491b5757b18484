//! `rnet-firewall` (the `firewall` drop-in) chained after rnet-bridge, as
//! Podman's CNI networks use it: elements admitted and removed per attachment,
//! `ingressPolicy: same-bridge` isolating networks from each other.

use crate::common::{error_code, lab, rnet};
use netns_fixtures::{Container, Lab, OutsideConfig, ping, tcp_connect, tcp_listen};
use rnet_cni::runtime::{ConfList, Runtime, RuntimeConf};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

fn list(lab: &Lab, name: &str, bridge: &str, subnet: &str, policy: &str) -> ConfList {
    let v = json!({"cniVersion": "1.0.0", "name": name, "plugins": [
        {"type": "rnet-bridge", "bridge": bridge, "isGateway": true, "ipMasq": true,
         "rnetStateDir": lab.state_dir().join("run"),
         "ipam": {"type": "rnet-ipam", "subnet": subnet, "dataDir": lab.state_dir().join("ipam"),
                  "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "rnet-firewall", "backend": "", "ingressPolicy": policy,
         "rnetStateDir": lab.state_dir().join("run")}
    ]});
    ConfList::parse(v.to_string().as_bytes()).unwrap()
}

fn rc(id: &str, c: &Container) -> RuntimeConf {
    RuntimeConf {
        container_id: id.into(),
        netns: Some(c.netns_path()),
        ifname: "eth0".into(),
        ..RuntimeConf::default()
    }
}

fn set_has(lab: &Lab, set: &str, needle: &str) -> bool {
    let mut c = Command::new("nft");
    c.args(["list", "set", "inet", "rnet", set]);
    String::from_utf8_lossy(&lab.host().output(&mut c).unwrap().stdout).contains(needle)
}

#[test]
fn admits_isolates_and_cleans_up() {
    let lab = lab();
    let outside = lab.add_outside(OutsideConfig::default()).unwrap();
    let rt = Runtime::new(
        vec![rnet("rnet-firewall").parent().unwrap().to_path_buf()],
        lab.state_dir().join("cache"),
    );
    let a = list(&lab, "fa", "br-fa", "10.77.1.0/24", "same-bridge");
    let b = list(&lab, "fb", "br-fb", "10.77.2.0/24", "same-bridge");
    let (ca, cb) = (
        lab.add_container("a").unwrap(),
        lab.add_container("b").unwrap(),
    );
    let ra = lab
        .host()
        .run(|| rt.add(&a, &rc("ca", &ca)))
        .unwrap()
        .unwrap();
    lab.host()
        .run(|| rt.add(&b, &rc("cb", &cb)))
        .unwrap()
        .unwrap();
    assert_eq!(ra.ips[0].address.to_string(), "10.77.1.2/24");
    assert!(set_has(&lab, "fw_allowed4", "10.77.1.2"), "admitted");
    assert!(set_has(&lab, "isolated", "br-fa") && set_has(&lab, "isolated", "br-fb"));
    lab.host()
        .run(|| rt.check(&a, &rc("ca", &ca)))
        .unwrap()
        .unwrap();
    // Isolated from each other, not from their gateways or the outside.
    let srv = tcp_listen(cb.ns(), "10.77.2.2:7000".parse().unwrap()).unwrap();
    assert!(
        tcp_connect(ca.ns(), srv.addr(), Duration::from_millis(700)).is_err(),
        "same-bridge isolation"
    );
    ping(
        ca.ns(),
        "10.77.1.1".parse().unwrap(),
        Duration::from_secs(2),
    )
    .unwrap();
    let out_srv = tcp_listen(outside.ns(), "198.51.100.2:7001".parse().unwrap()).unwrap();
    assert_eq!(
        tcp_connect(ca.ns(), out_srv.addr(), Duration::from_secs(2)).unwrap(),
        out_srv.banner()
    );
    // DEL removes the attachment's elements; twice is fine.
    lab.host()
        .run(|| rt.del(&a, &rc("ca", &ca)))
        .unwrap()
        .unwrap();
    lab.host()
        .run(|| rt.del(&a, &rc("ca", &ca)))
        .unwrap()
        .unwrap();
    assert!(!set_has(&lab, "fw_allowed4", "10.77.1.2"));
    // GC drops what belongs to no valid attachment.
    lab.host().run(|| rt.gc(&b, &[])).unwrap().unwrap();
    assert!(!set_has(&lab, "fw_allowed4", "10.77.2.2"));
}

#[test]
fn options_are_validated() {
    let lab = lab();
    let ctr = lab.add_container("c").unwrap();
    let base = json!({"cniVersion": "1.0.0", "name": "n", "type": "firewall",
        "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.1.1.2/24"}]}});
    for (extra, want) in [
        (json!({"backend": "pf"}), 7),
        (json!({"ingressPolicy": "closed"}), 7),
        (
            json!({"iptablesAdminChainName": "a very long chain name that is too long"}),
            7,
        ),
        (json!({"cniVersion": "0.3.1"}), 1),
    ] {
        let mut c = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        let out = lab
            .cni(rnet("rnet-firewall"))
            .command("ADD")
            .container_id("c")
            .netns(ctr.netns_path())
            .ifname("eth0")
            .cni_path([rnet("rnet-firewall").parent().unwrap().to_path_buf()])
            .stdin(c.to_string())
            .run()
            .unwrap();
        assert_eq!(error_code(&out), want, "{extra}: {}", out.stdout_str());
    }
}

fn iptables_s(lab: &Lab, bin: &str, chain: &str) -> String {
    let mut c = Command::new(bin);
    c.args(["-w", "5", "-S", chain]);
    String::from_utf8_lossy(&lab.host().output(&mut c).unwrap().stdout).into_owned()
}

/// Another tool (Docker does this) set iptables' `filter FORWARD` policy to
/// DROP in the host: an accept in rnet's table alone would not let the
/// container out. rnet-firewall admits its addresses through that variant's
/// own chain (`RNET-FORWARD`), and DEL, CHECK and GC handle those rules.
fn foreign_forward_drop(bin: &str, subnet_octet: u8) {
    let lab = lab();
    let outside = lab.add_outside(OutsideConfig::default()).unwrap();
    let mut c = Command::new(bin);
    c.args(["-w", "5", "-P", "FORWARD", "DROP"]);
    assert!(
        lab.host().output(&mut c).unwrap().status.success(),
        "{bin} -P FORWARD DROP"
    );
    let rt = Runtime::new(
        vec![rnet("rnet-firewall").parent().unwrap().to_path_buf()],
        lab.state_dir().join("cache"),
    );
    let net = list(
        &lab,
        "fx",
        "br-fx",
        &format!("10.78.{subnet_octet}.0/24"),
        "open",
    );
    // The same network without the firewall plugin: its container stays cut off.
    let bare = {
        let v = json!({"cniVersion": "1.0.0", "name": "fy", "plugins": [
            {"type": "rnet-bridge", "bridge": "br-fy", "isGateway": true, "ipMasq": true,
             "rnetStateDir": lab.state_dir().join("run"),
             "ipam": {"type": "rnet-ipam", "subnet": format!("10.79.{subnet_octet}.0/24"),
                      "dataDir": lab.state_dir().join("ipam"), "routes": [{"dst": "0.0.0.0/0"}]}}
        ]});
        ConfList::parse(v.to_string().as_bytes()).unwrap()
    };
    let (ca, cb, cc) = (
        lab.add_container("xa").unwrap(),
        lab.add_container("xb").unwrap(),
        lab.add_container("xc").unwrap(),
    );
    let srv = tcp_listen(outside.ns(), "198.51.100.2:7002".parse().unwrap()).unwrap();
    lab.host()
        .run(|| rt.add(&bare, &rc("cb", &cb)))
        .unwrap()
        .unwrap();
    assert!(
        tcp_connect(cb.ns(), srv.addr(), Duration::from_millis(700)).is_err(),
        "without the firewall plugin the FORWARD policy drops (the test's premise)"
    );
    let ra = lab
        .host()
        .run(|| rt.add(&net, &rc("ca", &ca)))
        .unwrap()
        .unwrap();
    let ip = ra.ips[0].address.addr().to_string();
    assert_eq!(
        tcp_connect(ca.ns(), srv.addr(), Duration::from_secs(2)).unwrap(),
        srv.banner(),
        "admitted through {bin}'s FORWARD"
    );
    let fwd = iptables_s(&lab, bin, "FORWARD");
    assert!(fwd.contains("-j RNET-FORWARD"), "{fwd}");
    let ours = iptables_s(&lab, bin, "RNET-FORWARD");
    assert_eq!(ours.matches("fx/ca/eth0").count(), 3, "{ours}");
    assert!(
        ours.contains(&format!("-s {ip}/32")) && ours.contains("-j CNI-ADMIN"),
        "{ours}"
    );
    lab.host()
        .run(|| rt.check(&net, &rc("ca", &ca)))
        .unwrap()
        .unwrap();
    // A rule removed behind rnet's back: CHECK says so.
    let mut d = Command::new(bin);
    d.args([
        "-w",
        "5",
        "-D",
        "RNET-FORWARD",
        "-s",
        &format!("{ip}/32"),
        "-m",
        "comment",
        "--comment",
        "fx/ca/eth0",
        "-j",
        "ACCEPT",
    ]);
    assert!(lab.host().output(&mut d).unwrap().status.success());
    let e = lab
        .host()
        .run(|| rt.check(&net, &rc("ca", &ca)))
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code, 106, "{e:?}");
    assert!(e.msg.contains("RNET-FORWARD"), "{e:?}");
    // DEL removes the attachment's rules, twice is fine.
    lab.host()
        .run(|| rt.del(&net, &rc("ca", &ca)))
        .unwrap()
        .unwrap();
    lab.host()
        .run(|| rt.del(&net, &rc("ca", &ca)))
        .unwrap()
        .unwrap();
    assert!(!iptables_s(&lab, bin, "RNET-FORWARD").contains("fx/ca/eth0"));
    // GC removes the rules of attachments the runtime no longer knows.
    lab.host()
        .run(|| rt.add(&net, &rc("cc", &cc)))
        .unwrap()
        .unwrap();
    assert!(iptables_s(&lab, bin, "RNET-FORWARD").contains("fx/cc/eth0"));
    lab.host().run(|| rt.gc(&net, &[])).unwrap().unwrap();
    assert!(!iptables_s(&lab, bin, "RNET-FORWARD").contains("fx/cc/eth0"));
}

#[test]
fn foreign_forward_drop_policy_iptables_nft() {
    foreign_forward_drop("iptables-nft", 1);
}

#[test]
fn foreign_forward_drop_policy_iptables_legacy() {
    foreign_forward_drop("iptables-legacy", 2);
}
