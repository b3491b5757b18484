//! `rnet-host` through its real executable: it reports the host's interfaces,
//! addresses and default routes, and refuses any namespace but the host's.

use crate::common::{error_code, lab, rnet, rnet_dir, run};
use netns_fixtures::OutsideConfig;
use serde_json::json;

fn conf(version: &str) -> String {
    json!({"cniVersion": version, "name": "host", "type": "rnet-host"}).to_string()
}

#[test]
fn add_reports_host_addresses_and_routes() {
    let lab = lab();
    let outside = lab.add_outside(OutsideConfig::default()).unwrap();
    let p = rnet("rnet-host");
    let call = |cmd: &str, netns: std::path::PathBuf, stdin: String| {
        run(lab
            .cni(&p)
            .command(cmd)
            .container_id("h1")
            .netns(netns)
            .ifname("eth0")
            .cni_path([rnet_dir()])
            .stdin(stdin))
    };
    let r = call("ADD", lab.host().path(), conf("1.1.0"))
        .ok_json()
        .unwrap();
    let ifs = r["interfaces"].as_array().unwrap();
    let idx = ifs
        .iter()
        .position(|i| i["name"] == "uplink0")
        .expect("uplink0 reported");
    assert!(ifs[idx]["mac"].as_str().is_some_and(|m| m.len() == 17));
    assert!(
        ifs[idx].get("sandbox").is_none(),
        "host interfaces have no sandbox"
    );
    let v4 = format!("{}/24", outside.host_v4());
    let ip = r["ips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["address"] == v4.as_str())
        .expect("uplink v4 reported");
    assert_eq!(ip["interface"], idx);
    assert_eq!(ip["gateway"], outside.v4().to_string());
    let routes = r["routes"].as_array().unwrap();
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == "0.0.0.0/0" && r["gw"] == outside.v4().to_string()),
        "{r}"
    );
    assert!(
        !r["ips"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["address"].as_str().is_some_and(|a| a.starts_with("127.")))
    );

    // Older versions get the older shape.
    let r02 = call("ADD", lab.host().path(), conf("0.2.0"))
        .ok_json()
        .unwrap();
    assert_eq!(r02["ip4"]["ip"], v4.as_str());

    call(
        "CHECK",
        lab.host().path(),
        json!({"cniVersion":"1.0.0","name":"host","type":"rnet-host","prevResult":r}).to_string(),
    )
    .ok()
    .unwrap();
    call("DEL", lab.host().path(), conf("1.0.0")).ok().unwrap();
    call("DEL", lab.host().path(), conf("1.0.0")).ok().unwrap();
}

#[test]
fn refuses_a_namespace_that_is_not_the_hosts() {
    let lab = lab();
    let ctr = lab.add_container("c1").unwrap();
    let out = run(lab
        .cni(rnet("rnet-host"))
        .command("ADD")
        .container_id("h1")
        .netns(ctr.netns_path())
        .ifname("eth0")
        .cni_path([rnet_dir()])
        .stdin(conf("1.0.0")));
    assert_eq!(error_code(&out), 105);
    assert!(
        out.json().unwrap()["msg"]
            .as_str()
            .unwrap()
            .contains("not the host's network namespace")
    );
}
