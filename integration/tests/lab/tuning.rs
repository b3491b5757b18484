//! `rnet-tuning` (the `tuning` drop-in) through its real executable, side by
//! side with the reference `tuning`: the same settings reach the kernel, DEL
//! restores the original values, CHECK names differences.

use crate::common::{error_code, lab, reference, rnet, rnet_dir, run};
use netns_fixtures::{Container, Lab, veth_pair};
use serde_json::{Value, json};
use std::path::Path;

fn conf(lab: &Lab, ctr: &Container, data: &str) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "tun", "type": "tuning",
        "dataDir": lab.state_dir().join(data),
        "sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1", "net/ipv4/conf/IFNAME/arp_notify": "1"},
        "mac": "02:11:22:33:44:55", "mtu": 1280, "promisc": true, "allmulti": true, "txQLen": 321,
        "prevResult": {"cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": ctr.netns_path()}],
            "ips": [{"address": "10.9.9.2/24", "interface": 0}]}
    })
}

fn call(
    lab: &Lab,
    plugin: &Path,
    cmd: &str,
    ctr: &Container,
    stdin: &Value,
) -> netns_fixtures::CniOutput {
    run(lab
        .cni(plugin)
        .command(cmd)
        .container_id(ctr.name())
        .netns(ctr.netns_path())
        .ifname("eth0")
        .cni_path([rnet_dir()])
        .stdin(stdin.to_string()))
}

fn state(ctr: &Container) -> (String, u32, bool, bool, Option<u32>, String) {
    let mut nl = ctr.netlink().unwrap();
    let l = nl.link_by_name("eth0").unwrap().unwrap();
    let sysctl = ctr
        .ns()
        .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/conf/eth0/arp_filter").unwrap())
        .unwrap();
    (
        rnet_netlink::format_mac(&l.mac.unwrap()),
        l.mtu,
        l.promisc(),
        l.allmulti(),
        l.txqlen,
        sysctl.trim().to_owned(),
    )
}

#[test]
fn same_kernel_state_as_the_reference_and_restored_on_del() {
    let lab = lab();
    let mut results = Vec::new();
    for (i, plugin) in [reference("tuning"), rnet("rnet-tuning")]
        .iter()
        .enumerate()
    {
        let ctr = lab.add_container(&format!("t{i}")).unwrap();
        veth_pair(lab.host(), &format!("vt{i}"), &[], ctr.ns(), "eth0", &[]).unwrap();
        let before = state(&ctr);
        let mut c = conf(&lab, &ctr, &format!("data{i}"));
        let is_reference = i == 0;
        if is_reference {
            // Debian's reference (1.1.1) predates txQLen.
            c.as_object_mut().unwrap().remove("txQLen");
        }
        let r = call(&lab, plugin, "ADD", &ctr, &c).ok_json().unwrap();
        let after = state(&ctr);
        assert_eq!(after.0, "02:11:22:33:44:55");
        assert_eq!((after.1, after.2, after.3), (1280, true, true));
        if !is_reference {
            assert_eq!(after.4, Some(321));
        }
        assert_eq!(after.5, "1");
        let mut with_prev = c.clone();
        with_prev["prevResult"] = r.clone();
        if !is_reference {
            // Debian's reference CHECK does not substitute IFNAME in sysctl keys (fixed upstream).
            call(&lab, plugin, "CHECK", &ctr, &with_prev).ok().unwrap();
        }
        call(&lab, plugin, "DEL", &ctr, &with_prev).ok().unwrap();
        let restored = state(&ctr);
        assert_eq!(
            (
                restored.0.clone(),
                restored.1,
                restored.2,
                restored.3,
                restored.4
            ),
            (before.0.clone(), before.1, before.2, before.3, before.4),
            "{plugin:?} restores on DEL"
        );
        call(&lab, plugin, "DEL", &ctr, &with_prev).ok().unwrap();
        results.push(r);
    }
    for r in &results {
        assert_eq!(
            r["interfaces"][0]["mac"], "02:11:22:33:44:55",
            "the result carries the new MAC: {r}"
        );
    }
    assert_eq!(results[0]["ips"], results[1]["ips"]);
}

#[test]
fn refuses_non_net_sysctls_and_reports_check_differences() {
    let lab = lab();
    let ctr = lab.add_container("t").unwrap();
    veth_pair(lab.host(), "vtx", &[], ctr.ns(), "eth0", &[]).unwrap();
    let p = rnet("rnet-tuning");
    for key in [
        "kernel.panic",
        "net.ipv4.conf.IFNAME...x",
        "net/../kernel/panic",
    ] {
        let mut c = conf(&lab, &ctr, "d");
        c["sysctl"] = json!({ key: "1" });
        let out = call(&lab, &p, "ADD", &ctr, &c);
        assert_eq!(error_code(&out), 7, "{key}: {}", out.stdout_str());
    }
    let kernel_panic = std::fs::read_to_string("/proc/sys/kernel/panic").unwrap();
    let c = conf(&lab, &ctr, "d");
    let r = call(&lab, &p, "ADD", &ctr, &c).ok_json().unwrap();
    let mut nl = ctr.netlink().unwrap();
    let idx = nl.link_by_name("eth0").unwrap().unwrap().index;
    nl.link_set_mtu(idx, 1400).unwrap();
    let mut with_prev = c.clone();
    with_prev["prevResult"] = r;
    let out = call(&lab, &p, "CHECK", &ctr, &with_prev);
    assert_eq!(error_code(&out), 106);
    assert!(
        out.stdout_str().contains("MTU is 1400"),
        "{}",
        out.stdout_str()
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/panic").unwrap(),
        kernel_panic
    );
    let mut no_prev = c;
    no_prev.as_object_mut().unwrap().remove("prevResult");
    assert_eq!(error_code(&call(&lab, &p, "ADD", &ctr, &no_prev)), 7);
}
