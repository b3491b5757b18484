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
