//! `rnet-bridge` through its real executable, with the reference `host-local`
//! IPAM (and rnet's own IPAM when built), in throwaway labs: kernel state,
//! real traffic, DEL/CHECK/GC/STATUS, rollback, concurrency, and a
//! differential comparison with the reference `bridge` plugin.

use crate::common::{error_code, lab, reference, rnet, run};
use netns_fixtures::{
    CniOutput, Container, Lab, OutsideConfig, ping, read_sysctl, tcp_connect, tcp_listen,
};
use rnet_netlink::{Family, Link, Netlink};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(3);

/// One network configuration run against one plugin executable in one lab.
struct Net<'a> {
    lab: &'a Lab,
    plugin: PathBuf,
    conf: Value,
}

fn ipam_dir(lab: &Lab) -> PathBuf {
    lab.state_dir().join("ipam")
}

/// The bridge plugin's own state: `<rnetStateDir>/bridge`.
fn state_dir(lab: &Lab) -> PathBuf {
    lab.state_dir().join("bridge")
}

/// A config with host-local IPAM on `subnets` (one range set each) and the
/// state directories inside the lab; `extra` keys are merged on top.
fn conf(lab: &Lab, name: &str, bridge: &str, subnets: &[&str], extra: Value) -> Value {
    let ranges: Vec<Value> = subnets.iter().map(|s| json!([{"subnet": s}])).collect();
    let mut c = json!({
        "cniVersion": "1.0.0",
        "name": name,
        "type": "bridge",
        "bridge": bridge,
        "isGateway": true,
        "rnetStateDir": lab.state_dir(),
        "ipam": {"type": "host-local", "ranges": ranges, "dataDir": ipam_dir(lab)},
    });
    merge(&mut c, extra);
    c
}

/// Switches a config to rnet's own IPAM plugin (needed for cniVersion 1.1.0:
/// Debian's host-local stops at 1.0.0).
fn rnet_ipam(c: &mut Value) {
    rnet("rnet-ipam");
    c["ipam"]["type"] = json!("rnet-ipam");
}

fn merge(into: &mut Value, extra: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, extra) {
        for (k, v) in b {
            a.insert(k, v);
        }
    }
}

impl<'a> Net<'a> {
    fn rnet(lab: &'a Lab, conf: Value) -> Self {
        Net {
            lab,
            plugin: rnet("rnet-bridge"),
            conf,
        }
    }

    fn reference(lab: &'a Lab, conf: Value) -> Self {
        Net {
            lab,
            plugin: reference("bridge"),
            conf,
        }
    }

    fn call(
        &self,
        cmd: &str,
        cid: &str,
        netns: Option<&Path>,
        ifname: &str,
        stdin: &Value,
    ) -> CniOutput {
        let mut c = self
            .lab
            .cni(&self.plugin)
            .command(cmd)
            .container_id(cid)
            .ifname(ifname)
            .cni_path([PathBuf::from("/usr/lib/cni"), rnet_bin_dir()])
            .stdin(stdin.to_string());
        if let Some(p) = netns {
            c = c.netns(p);
        }
        run(c)
    }

    fn add(&self, ctr: &Container) -> Value {
        self.add_if(ctr, "eth0")
    }

    fn add_if(&self, ctr: &Container, ifname: &str) -> Value {
        let out = self.call(
            "ADD",
            ctr.name(),
            Some(&ctr.netns_path()),
            ifname,
            &self.conf,
        );
        out.ok_json()
            .unwrap_or_else(|e| panic!("ADD {} failed: {e}", ctr.name()))
    }

    fn with_prev(&self, prev: &Value) -> Value {
        let mut c = self.conf.clone();
        merge(&mut c, json!({"prevResult": prev}));
        c
    }

    fn del(&self, ctr: &Container, prev: Option<&Value>) {
        let stdin = prev.map_or_else(|| self.conf.clone(), |p| self.with_prev(p));
        let out = self.call("DEL", ctr.name(), Some(&ctr.netns_path()), "eth0", &stdin);
        out.ok()
            .unwrap_or_else(|e| panic!("DEL {} failed: {e}", ctr.name()));
    }

    fn check(&self, ctr: &Container, prev: &Value) -> CniOutput {
        self.call(
            "CHECK",
            ctr.name(),
            Some(&ctr.netns_path()),
            "eth0",
            &self.with_prev(prev),
        )
    }
}

fn rnet_bin_dir() -> PathBuf {
    rnet("rnet-bridge")
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn link(nl: &mut Netlink, name: &str) -> Option<Link> {
    nl.link_by_name(name).unwrap()
}

fn addrs(nl: &mut Netlink, idx: u32) -> Vec<String> {
    let mut v: Vec<String> = nl
        .addr_list(Some(idx), None)
        .unwrap()
        .iter()
        .filter(|a| !a.addr.addr().is_ipv6() || !is_link_local(a.addr.addr()))
        .map(|a| a.addr.to_string())
        .collect();
    v.sort();
    v
}

/// Every IPv6 address of a link, link-local ones included.
fn v6_addrs(nl: &mut Netlink, idx: u32) -> Vec<String> {
    nl.addr_list(Some(idx), Some(Family::V6))
        .unwrap()
        .iter()
        .map(|a| a.addr.to_string())
        .collect()
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
        IpAddr::V4(_) => false,
    }
}

/// The container's first address of the family, from a result.
fn ip_of(result: &Value, v4: bool) -> IpAddr {
    result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["address"].as_str())
        .map(|a| a.split('/').next().unwrap().parse::<IpAddr>().unwrap())
        .find(|a| a.is_ipv4() == v4)
        .unwrap_or_else(|| panic!("no {} address in {result}", if v4 { "v4" } else { "v6" }))
}

fn lease_files(lab: &Lab, net: &str) -> Vec<String> {
    let dir = ipam_dir(lab).join(net);
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn state_files(lab: &Lab, net: &str) -> usize {
    std::fs::read_dir(state_dir(lab).join(net))
        .map(|rd| rd.flatten().count())
        .unwrap_or(0)
}

/// Host veths rnet made (alias starts with the network name).
fn rnet_veths(lab: &Lab, net: &str) -> Vec<String> {
    let mut nl = lab.netlink().unwrap();
    nl.link_list()
        .unwrap()
        .into_iter()
        .filter(|l| {
            l.kind.as_deref() == Some("veth")
                && l.alias
                    .as_deref()
                    .is_some_and(|a| a.starts_with(&format!("{net}/")))
        })
        .map(|l| l.name)
        .collect()
}

/// DEL leaves the kernel's unlinking of the (already down) veth to a detached
/// child; wait for it (bounded).
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn no_veths(lab: &Lab, net: &str) {
    wait_until(&format!("the veths of {net} to go"), || {
        rnet_veths(lab, net).is_empty()
    });
}

fn nft_ruleset(lab: &Lab) -> String {
    let out = lab
        .host()
        .output(std::process::Command::new("nft").args(["list", "ruleset"]))
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------- ADD basics

#[test]
fn result_shape_per_version() {
    let lab = lab();
    for (i, ver) in ["0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .iter()
        .enumerate()
    {
        let mut c = conf(&lab, "shapes", "br-shape", &["10.20.0.0/24"], json!({}));
        c["cniVersion"] = json!(ver);
        if *ver == "1.1.0" {
            rnet_ipam(&mut c);
        }
        let net = Net::rnet(&lab, c);
        let ctr = lab.add_container(&format!("shape{i}")).unwrap();
        let r = net.add(&ctr);
        assert_eq!(r["cniVersion"], *ver, "{r}");
        if *ver == "0.2.0" {
            assert!(
                r["ip4"]["ip"].as_str().unwrap().starts_with("10.20.0."),
                "{r}"
            );
            assert_eq!(r["ip4"]["gateway"], "10.20.0.1");
            assert!(r.get("interfaces").is_none());
        } else {
            let ifs = r["interfaces"].as_array().unwrap();
            assert_eq!(ifs.len(), 3, "{r}");
            assert_eq!(ifs[0]["name"], "br-shape");
            assert!(ifs[0].get("sandbox").is_none());
            assert!(ifs[1]["name"].as_str().unwrap().starts_with("veth"));
            assert_eq!(ifs[2]["name"], "eth0");
            assert_eq!(ifs[2]["sandbox"], ctr.netns_path().display().to_string());
            for i in ifs {
                assert_eq!(i["mac"].as_str().unwrap().len(), 17, "{r}");
            }
            let ip = &r["ips"][0];
            assert_eq!(ip["interface"], 2);
            assert_eq!(ip["gateway"], "10.20.0.1");
            assert_eq!(ip.get("version").is_some(), *ver < "1.0.0", "{r}");
        }
        net.del(&ctr, None);
    }
    no_veths(&lab, "shapes");
    assert!(lease_files(&lab, "shapes").is_empty());
}

#[test]
fn kernel_state_traffic_check_and_del() {
    let lab = lab();
    let net = Net::rnet(
        &lab,
        conf(
            &lab,
            "kern",
            "br-kern",
            &["10.21.0.0/24"],
            json!({"isDefaultGateway": true, "mtu": 1400,
                   "runtimeConfig": {"mac": "02:42:0a:15:00:99"},
                   "dns": {"nameservers": ["10.21.0.1"], "search": ["example.test"]}}),
        ),
    );
    let c1 = lab.add_container("kern1").unwrap();
    let c2 = lab.add_container("kern2").unwrap();
    let r1 = net.add(&c1);
    let mut net2 = Net::rnet(&lab, net.conf.clone());
    net2.conf.as_object_mut().unwrap().remove("runtimeConfig");
    let r2 = net2.add(&c2);
    assert_eq!(
        r1["dns"]["nameservers"][0], "10.21.0.1",
        "config dns wins: {r1}"
    );
    assert_eq!(r1["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(r1["routes"][0]["gw"], "10.21.0.1");

    // Host side: bridge up with the gateway, MTU, accept_ra=0; veth on it.
    let mut nl = lab.netlink().unwrap();
    let br = link(&mut nl, "br-kern").expect("bridge exists");
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert_eq!(
        br.mcast_snooping,
        Some(false),
        "snooping off (docs/config.md)"
    );
    assert!(br.up);
    assert_eq!(br.mtu, 1400);
    assert_eq!(addrs(&mut nl, br.index), vec!["10.21.0.1/24"]);
    assert_eq!(
        r1["interfaces"][0]["mac"],
        rnet_netlink::format_mac(&br.mac.unwrap())
    );
    assert_eq!(
        read_sysctl(lab.host(), "net/ipv6/conf/br-kern/accept_ra").unwrap(),
        "0"
    );
    assert_eq!(read_sysctl(lab.host(), "net/ipv4/ip_forward").unwrap(), "1");
    let hv_name = r1["interfaces"][1]["name"].as_str().unwrap();
    let hv = link(&mut nl, hv_name).expect("host veth");
    assert_eq!(hv.master, Some(br.index));
    assert!(hv.up);
    assert_eq!(hv.mtu, 1400);
    assert_eq!(hv.alias.as_deref(), Some("kern/kern1/eth0"));
    assert_eq!(
        r1["interfaces"][1]["mac"],
        rnet_netlink::format_mac(&hv.mac.unwrap())
    );
    // The bridge has an address of its own, set, not a port's (which would
    // change as containers come and go); both ADDs report it, and host
    // veths' addresses (fe:...) sit above it.
    let hv2 = link(&mut nl, r2["interfaces"][1]["name"].as_str().unwrap()).unwrap();
    assert_ne!(br.mac, hv.mac);
    assert_ne!(br.mac, hv2.mac);
    assert_eq!(r2["interfaces"][0]["mac"], r1["interfaces"][0]["mac"]);
    assert_eq!(hv.mac.unwrap()[0], 0xfe);
    assert_eq!(hv2.mac.unwrap()[0], 0xfe);

    // Container side: name, MAC, MTU, address, routes.
    let mut cnl = c1.netlink().unwrap();
    let eth = link(&mut cnl, "eth0").expect("eth0 in the container");
    assert_eq!(eth.kind.as_deref(), Some("veth"));
    assert!(eth.up);
    assert_eq!(eth.mtu, 1400);
    assert_eq!(
        rnet_netlink::format_mac(&eth.mac.unwrap()),
        "02:42:0a:15:00:99"
    );
    assert_eq!(r1["interfaces"][2]["mac"], "02:42:0a:15:00:99");
    let a1 = ip_of(&r1, true);
    assert_eq!(addrs(&mut cnl, eth.index), vec![format!("{a1}/24")]);
    let routes = cnl
        .route_list(Family::V4, Some(rnet_netlink::RT_TABLE_MAIN))
        .unwrap();
    let default = routes
        .iter()
        .find(|r| r.is_default())
        .expect("default route");
    assert_eq!(default.gateway, Some("10.21.0.1".parse().unwrap()));
    assert_eq!(default.oif, Some(eth.index));
    assert_eq!(
        read_sysctl(c1.ns(), "net/ipv4/conf/eth0/arp_notify").unwrap(),
        "1"
    );
    // An IPv4-only network: no IPv6 address on either end of the pair, not
    // even a link-local one (docs/config.md, "ipv6LinkLocal").
    assert_eq!(v6_addrs(&mut cnl, eth.index), Vec::<String>::new());
    assert_eq!(v6_addrs(&mut nl, hv.index), Vec::<String>::new());

    // Traffic: container -> gateway, container <-> container.
    ping(c1.ns(), "10.21.0.1".parse().unwrap(), T).unwrap();
    let a2 = ip_of(&r2, true);
    let srv = tcp_listen(c2.ns(), SocketAddr::new(a2, 8080)).unwrap();
    assert_eq!(tcp_connect(c1.ns(), srv.addr(), T).unwrap(), srv.banner());
    assert_eq!(
        srv.peers()[0].ip(),
        a1,
        "bridged traffic is not masqueraded"
    );
    drop(srv);

    // CHECK passes, then fails naming what was removed.
    net.check(&c1, &r1).ok().unwrap();
    cnl.addr_del(eth.index, format!("{a1}/24").parse().unwrap())
        .unwrap();
    let out = net.check(&c1, &r1);
    assert_eq!(error_code(&out), 106, "CHECK differences are code 106");
    let msg = out.json().unwrap()["msg"].as_str().unwrap().to_owned();
    assert!(
        msg.contains(&format!("{a1}/24")),
        "CHECK must name the address: {msg}"
    );

    // DEL: veth, lease and state gone; idempotent; without netns; without prevResult.
    // With a slow reaper (test hook): the container's eth0 is gone when DEL
    // returns, and the name can be used again at once.
    let out = run(lab
        .cni(&net.plugin)
        .command("DEL")
        .container_id("kern1")
        .netns(c1.netns_path())
        .ifname("eth0")
        .cni_path([PathBuf::from("/usr/lib/cni"), rnet_bin_dir()])
        .env("RNET_BRIDGE_TEST_REAP_DELAY_MS", "500")
        .stdin(net.with_prev(&r1).to_string()));
    out.ok().unwrap();
    assert!(
        link(&mut nl, hv_name).is_none(),
        "the host veth's name is gone when DEL returns"
    );
    assert!(
        link(&mut cnl, "eth0").is_none(),
        "the container's eth0 is gone when DEL returns"
    );
    assert!(
        cnl.link_list().unwrap().iter().any(|l| l.name != "lo"),
        "the reaper is slow, the retired end is still there"
    );
    assert!(
        nl.link_list()
            .unwrap()
            .iter()
            .any(|l| l.name.starts_with("rnetdel") && !l.up),
        "the retired host end is down"
    );
    let again = net.add(&c1);
    assert!(link(&mut cnl, "eth0").is_some_and(|l| l.up), "ADD again");
    net.del(&c1, Some(&again));
    wait_until("the host veth to go", || link(&mut nl, hv_name).is_none());
    wait_until("the pair to go", || {
        cnl.link_list().unwrap().iter().all(|l| l.name == "lo")
    });
    assert_eq!(lease_files(&lab, "kern"), vec![a2.to_string()]);
    net.del(&c1, Some(&r1));
    let out = net.call(
        "DEL",
        "kern1",
        Some(Path::new("/run/netns/rnet-vanished")),
        "eth0",
        &net.conf,
    );
    out.ok().unwrap();
    let out = net.call("DEL", "kern2", None, "eth0", &net.conf);
    out.ok().unwrap();
    no_veths(&lab, "kern");
    assert!(lease_files(&lab, "kern").is_empty());
    assert_eq!(state_files(&lab, "kern"), 0);
    assert_eq!(
        link(&mut nl, "br-kern")
            .expect("the shared bridge stays")
            .mac,
        br.mac,
        "the bridge keeps its address when its ports go"
    );
}

#[test]
fn del_with_namespace_gone() {
    let lab = lab();
    let net = Net::rnet(
        &lab,
        conf(&lab, "gone", "br-gone", &["10.22.0.0/24"], json!({})),
    );
    let ctr = lab.add_container("gone1").unwrap();
    let r = net.add(&ctr);
    let path = ctr.netns_path();
    drop(ctr);
    let out = net.call("DEL", "gone1", Some(&path), "eth0", &net.with_prev(&r));
    out.ok().unwrap();
    no_veths(&lab, "gone");
    assert!(lease_files(&lab, "gone").is_empty());
}

#[test]
fn layer2_only_and_disabled_interface() {
    let lab = lab();
    let mut c = conf(&lab, "l2", "br-l2", &["10.23.0.0/24"], json!({}));
    c.as_object_mut().unwrap().remove("ipam");
    let net = Net::rnet(&lab, c.clone());
    let ctr = lab.add_container("l2a").unwrap();
    let r = net.add(&ctr);
    assert!(r.get("ips").is_none(), "{r}");
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
    let mut cnl = ctr.netlink().unwrap();
    let eth = link(&mut cnl, "eth0").unwrap();
    assert!(eth.up);
    assert!(addrs(&mut cnl, eth.index).is_empty());
    net.del(&ctr, Some(&r));

    merge(&mut c, json!({"disableContainerInterface": true}));
    let net = Net::rnet(&lab, c);
    let r = net.add(&ctr);
    let eth = link(&mut cnl, "eth0").unwrap();
    assert!(!eth.up, "disableContainerInterface leaves it down");
    net.del(&ctr, Some(&r));

    // With IPAM it is a config error.
    let bad = Net::rnet(
        &lab,
        conf(
            &lab,
            "l2",
            "br-l2",
            &["10.23.0.0/24"],
            json!({"disableContainerInterface": true}),
        ),
    );
    let out = bad.call("ADD", "l2a", Some(&ctr.netns_path()), "eth0", &bad.conf);
    assert_eq!(error_code(&out), 7);
}

#[test]
fn hairpin_promisc_and_port_isolation() {
    let lab = lab();
    let net = Net::rnet(
        &lab,
        conf(
            &lab,
            "hp",
            "br-hp",
            &["10.24.0.0/24"],
            json!({"hairpinMode": true}),
        ),
    );
    let c1 = lab.add_container("hp1").unwrap();
    let r = net.add(&c1);
    let mut nl = lab.netlink().unwrap();
    let hv = link(&mut nl, r["interfaces"][1]["name"].as_str().unwrap()).unwrap();
    let port = nl.bridge_port_get(hv.index).unwrap().unwrap();
    assert_eq!(port.hairpin, Some(true));
    assert_eq!(port.isolated, Some(false));
    net.del(&c1, Some(&r));

    let net = Net::rnet(
        &lab,
        conf(
            &lab,
            "pm",
            "br-pm",
            &["10.25.0.0/24"],
            json!({"promiscMode": true}),
        ),
    );
    let r = net.add(&c1);
    assert!(link(&mut nl, "br-pm").unwrap().promisc());
    net.check(&c1, &r).ok().unwrap();
    net.del(&c1, Some(&r));

    // Port isolation: containers reach the gateway, not each other.
    let net = Net::rnet(
        &lab,
        conf(
            &lab,
            "iso",
            "br-iso",
            &["10.26.0.0/24"],
            json!({"portIsolation": true}),
        ),
    );
    let c2 = lab.add_container("iso2").unwrap();
    let r1 = net.add(&c1);
    let r2 = net.add(&c2);
    let hv = link(&mut nl, r1["interfaces"][1]["name"].as_str().unwrap()).unwrap();
    assert_eq!(
        nl.bridge_port_get(hv.index).unwrap().unwrap().isolated,
        Some(true)
    );
    ping(c1.ns(), "10.26.0.1".parse().unwrap(), T).unwrap();
    let srv = tcp_listen(c2.ns(), SocketAddr::new(ip_of(&r2, true), 8080)).unwrap();
    assert!(
        tcp_connect(c1.ns(), srv.addr(), Duration::from_millis(700)).is_err(),
        "isolated ports must not talk to each other"
    );
    net.del(&c1, Some(&r1));
    net.del(&c2, Some(&r2));
}

#[test]
fn dual_stack() {
    let lab = lab();
    let net = Net::rnet(
        &lab,
        conf(
            &lab,
            "ds",
            "br-ds",
            &["10.27.0.0/24", "fd00:27::/64"],
            json!({"isDefaultGateway": true}),
        ),
    );
    let c1 = lab.add_container("ds1").unwrap();
    let c2 = lab.add_container("ds2").unwrap();
    let r1 = net.add(&c1);
    let r2 = net.add(&c2);
    assert_eq!(r1["ips"].as_array().unwrap().len(), 2, "{r1}");
    assert_eq!(r1["ips"][1]["gateway"], "fd00:27::1");
    let dsts: Vec<&str> = r1["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["dst"].as_str().unwrap())
        .collect();
    assert_eq!(dsts, vec!["0.0.0.0/0", "::/0"]);
    let mut nl = lab.netlink().unwrap();
    let br = link(&mut nl, "br-ds").unwrap();
    assert_eq!(
        addrs(&mut nl, br.index),
        vec!["10.27.0.1/24", "fd00:27::1/64"]
    );
    assert_eq!(
        read_sysctl(lab.host(), "net/ipv6/conf/all/forwarding").unwrap(),
        "1"
    );
    let mut cnl = c1.netlink().unwrap();
    let r6 = cnl
        .route_list(Family::V6, Some(rnet_netlink::RT_TABLE_MAIN))
        .unwrap();
    assert!(
        r6.iter()
            .any(|r| r.is_default() && r.gateway == Some("fd00:27::1".parse().unwrap())),
        "{r6:?}"
    );
    // The bridge's v6 gateway may still be tentative for a moment (DAD on the host side).
    let deadline = Instant::now() + Duration::from_secs(5);
    while ping(
        c1.ns(),
        "fd00:27::1".parse().unwrap(),
        Duration::from_millis(500),
    )
    .is_err()
    {
        assert!(Instant::now() < deadline, "v6 gateway unreachable");
    }
    let srv = tcp_listen(c2.ns(), SocketAddr::new(ip_of(&r2, false), 8080)).unwrap();
    assert_eq!(tcp_connect(c1.ns(), srv.addr(), T).unwrap(), srv.banner());
    net.check(&c1, &r1).ok().unwrap();
    net.del(&c1, Some(&r1));
    net.del(&c2, Some(&r2));
    assert!(lease_files(&lab, "ds").is_empty());
}

/// rnet leaves no IPv6 address (not even a link-local one) on a container
/// interface that IPAM gives no IPv6 address, nor on any host veth: no IPv6
/// neighbour discovery, DAD or MLD traffic is flooded across the bridge for
/// each new container, and IPv4-only networks cannot be reached over IPv6
/// link-local. `ipv6LinkLocal` keeps the reference's behaviour.
#[test]
fn v4_only_interface_has_no_ipv6() {
    let lab = lab();
    let v4 = Net::rnet(
        &lab,
        conf(&lab, "v4o", "br-v4o", &["10.61.0.0/24"], json!({})),
    );
    let ll = Net::rnet(
        &lab,
        conf(
            &lab,
            "v4ll",
            "br-v4ll",
            &["10.62.0.0/24"],
            json!({"ipv6LinkLocal": true}),
        ),
    );
    let dual = Net::rnet(
        &lab,
        conf(
            &lab,
            "v4v6",
            "br-v4v6",
            &["10.63.0.0/24", "fd00:63::/64"],
            json!({}),
        ),
    );
    let mut nl = lab.netlink().unwrap();
    for (net, name, want_ll) in [(&v4, "o1", false), (&ll, "l1", true), (&dual, "d1", true)] {
        let c = lab.add_container(name).unwrap();
        let r = net.add(&c);
        let mut cnl = c.netlink().unwrap();
        let eth = link(&mut cnl, "eth0").unwrap();
        wait_until("the link-local address (if any) to appear", || {
            v6_addrs(&mut cnl, eth.index)
                .iter()
                .any(|a| a.starts_with("fe80:"))
                == want_ll
        });
        let v6 = v6_addrs(&mut cnl, eth.index);
        if want_ll {
            assert_eq!(
                read_sysctl(c.ns(), "net/ipv6/conf/eth0/accept_dad").unwrap(),
                "0",
                "{name}: DAD off as the reference"
            );
        } else {
            assert!(v6.is_empty(), "{name}: {v6:?}");
            // Still settles later: nothing appears after a while either.
            std::thread::sleep(Duration::from_millis(300));
            assert!(v6_addrs(&mut cnl, eth.index).is_empty());
        }
        let hv = link(&mut nl, r["interfaces"][1]["name"].as_str().unwrap()).unwrap();
        assert_eq!(
            v6_addrs(&mut nl, hv.index),
            Vec::<String>::new(),
            "{name}: host veth"
        );
        // No IPv6 on the bridge port at all: no per-port multicast route in
        // the host's IPv6 table (each one made every link event slower).
        assert_eq!(
            read_sysctl(
                lab.host(),
                &format!("net/ipv6/conf/{}/disable_ipv6", hv.name)
            )
            .unwrap(),
            "1",
            "{name}: host veth"
        );
        let routes = lab
            .host()
            .output(std::process::Command::new("ip").args(["-6", "route", "show", "table", "all"]))
            .unwrap();
        let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
        assert!(!routes.contains(&hv.name), "{name}: {routes}");
        let gw: IpAddr = r["ips"][0]["gateway"].as_str().unwrap().parse().unwrap();
        ping(c.ns(), gw, T).unwrap();
        net.del(&c, Some(&r));
    }
}

/// As the reference (link up before the addresses), an ADD announces
/// nothing: no gratuitous ARP is flooded to the other containers on the
/// bridge (with 1000 of them that flood made each ADD 3.4 ms slower), though
/// `arp_notify` is on for later changes.
#[test]
fn add_floods_no_gratuitous_arp() {
    let lab = lab();
    let net = Net::rnet(
        &lab,
        conf(&lab, "garp", "br-garp", &["10.64.0.0/24"], json!({})),
    );
    let c1 = lab.add_container("g1").unwrap();
    let r1 = net.add(&c1);
    let cap = netns_fixtures::arp_capture(c1.ns()).unwrap();
    let c2 = lab.add_container("g2").unwrap();
    let r2 = net.add(&c2);
    let c3 = lab.add_container("g3").unwrap();
    let r3 = net.add(&c3);
    std::thread::sleep(Duration::from_millis(500));
    let seen = cap.drain();
    assert!(
        seen.iter().all(|f| !f.is_gratuitous()),
        "gratuitous ARP reached another container: {seen:?}"
    );
    assert_eq!(
        read_sysctl(c2.ns(), "net/ipv4/conf/eth0/arp_notify").unwrap(),
        "1"
    );
    // The capture works: c2 resolving c1 is seen in c1.
    let a1 = ip_of(&r1, true);
    ping(c2.ns(), a1, T).unwrap();
    let seen = cap.drain();
    assert!(
        seen.iter().any(|f| f.op == 1 && f.target == a1),
        "c1 saw no ARP request for its address: {seen:?}"
    );
    for (c, r) in [(&c1, &r1), (&c2, &r2), (&c3, &r3)] {
        net.del(c, Some(r));
    }
}

#[test]
fn enabledad_waits_for_dad() {
    let lab = lab();
    let net = Net::rnet(
        &lab,
        conf(
            &lab,
            "dad",
            "br-dad",
            &["fd00:28::/64"],
            json!({"enabledad": true}),
        ),
    );
    let c1 = lab.add_container("dad1").unwrap();
    let r = net.add(&c1);
    assert_eq!(
        read_sysctl(c1.ns(), "net/ipv6/conf/eth0/accept_dad").unwrap(),
        "1"
    );
    let mut cnl = c1.netlink().unwrap();
    let eth = link(&mut cnl, "eth0").unwrap();
    let v6 = cnl.addr_list(Some(eth.index), Some(Family::V6)).unwrap();
    assert!(
        v6.iter().all(|a| !a.is_tentative()),
        "ADD returns after DAD: {v6:?}"
    );
    net.del(&c1, Some(&r));
}

#[test]
fn vlan_gives_a_clear_error_without_kernel_support() {
    let lab = lab();
    let c1 = lab.add_container("vl1").unwrap();
    for extra in [json!({"vlan": 100}), json!({"vlanTrunk": [{"id": 5}]})] {
        let net = Net::rnet(&lab, conf(&lab, "vl", "br-vl", &["10.29.0.0/24"], extra));
        let out = net.call("ADD", "vl1", Some(&c1.netns_path()), "eth0", &net.conf);
        if out.status == 0 {
            // A kernel with CONFIG_BRIDGE_VLAN_FILTERING: check the port VLANs instead.
            let r = out.json().unwrap();
            let mut nl = lab.netlink().unwrap();
            let hv = link(&mut nl, r["interfaces"][1]["name"].as_str().unwrap()).unwrap();
            assert!(!nl.bridge_vlan_list(hv.index).unwrap().is_empty());
            net.del(&c1, Some(&r));
            continue;
        }
        let v = out.json().unwrap();
        assert!(
            v["msg"]
                .as_str()
                .unwrap()
                .contains("CONFIG_BRIDGE_VLAN_FILTERING"),
            "{v}"
        );
        assert!(rnet_veths(&lab, "vl").is_empty(), "rolled back");
        assert!(lease_files(&lab, "vl").is_empty());
        assert_eq!(state_files(&lab, "vl"), 0);
    }
}

#[test]
fn invalid_options_are_error_7() {
    let lab = lab();
    let c1 = lab.add_container("inv").unwrap();
    for (extra, needle) in [
        (json!({"vlan": 5000}), "vlan"),
        (json!({"mtu": "big"}), "mtu"),
        (json!({"isGateway": "yes"}), "isGateway"),
        (json!({"ipMasqBackend": "pf"}), "ipMasqBackend"),
        (json!({"vlanTrunk": [{"minID": 10}]}), "maxID"),
        (json!({"hairpinMode": true, "promiscMode": true}), "hairpin"),
    ] {
        let net = Net::rnet(
            &lab,
            conf(&lab, "inv", "br-inv", &["10.30.0.0/24"], extra.clone()),
        );
        let out = net.call("ADD", "inv", Some(&c1.netns_path()), "eth0", &net.conf);
        assert_eq!(error_code(&out), 7, "{extra}");
        let msg = out.json().unwrap()["msg"].as_str().unwrap().to_owned();
        assert!(msg.contains(needle), "{extra}: {msg}");
    }
    // Unknown keys are ignored.
    let net = Net::rnet(
        &lab,
        conf(
            &lab,
            "inv",
            "br-inv",
            &["10.30.0.0/24"],
            json!({"bogusKey": 1}),
        ),
    );
    let r = net.add(&c1);
    net.del(&c1, Some(&r));
    // A non-bridge with the bridge's name.
    let mut nl = lab.netlink().unwrap();
    nl.create_veth(&rnet_netlink::VethSpec {
        name: "br-notabr",
        peer_name: "br-notabr-p",
        ..Default::default()
    })
    .unwrap();
    let net = Net::rnet(
        &lab,
        conf(&lab, "inv", "br-notabr", &["10.30.0.0/24"], json!({})),
    );
    let out = net.call("ADD", "inv", Some(&c1.netns_path()), "eth0", &net.conf);
    assert_ne!(out.status, 0);
    assert!(
        out.stdout_str().contains("not a bridge"),
        "{}",
        out.stdout_str()
    );
    assert!(lease_files(&lab, "inv").is_empty());
}

#[test]
fn rollback_on_gateway_conflict_leaves_nothing() {
    let lab = lab();
    // The bridge already holds another address of the subnet: without
    // forceAddress the ADD fails after IPAM.
    let mut nl = lab.netlink().unwrap();
    let idx = nl
        .create_bridge(
            "br-rb",
            &rnet_netlink::BridgeOpts {
                up: true,
                ..Default::default()
            },
        )
        .unwrap();
    nl.addr_add(idx, "10.31.0.254/24".parse().unwrap()).unwrap();
    let net = Net::rnet(
        &lab,
        conf(
            &lab,
            "rb",
            "br-rb",
            &["10.31.0.0/24"],
            json!({"ipMasq": true}),
        ),
    );
    let c1 = lab.add_container("rb1").unwrap();
    let out = net.call("ADD", "rb1", Some(&c1.netns_path()), "eth0", &net.conf);
    assert_ne!(out.status, 0);
    assert!(
        out.stdout_str().contains("forceAddress"),
        "{}",
        out.stdout_str()
    );
    assert!(rnet_veths(&lab, "rb").is_empty(), "no veth left");
    assert!(link(&mut c1.netlink().unwrap(), "eth0").is_none());
    assert!(lease_files(&lab, "rb").is_empty(), "no lease left");
    assert_eq!(state_files(&lab, "rb"), 0, "no state left");
    assert!(
        !nft_ruleset(&lab).contains("rb/rb1/eth0"),
        "no element left"
    );

    // forceAddress replaces it.
    let net = Net::rnet(
        &lab,
        conf(
            &lab,
            "rb",
            "br-rb",
            &["10.31.0.0/24"],
            json!({"forceAddress": true}),
        ),
    );
    let r = net.add(&c1);
    assert_eq!(addrs(&mut nl, idx), vec!["10.31.0.1/24"]);
    net.del(&c1, Some(&r));
}

/// A Linux bridge takes at most 1023 ports (`BR_MAX_PORTS`): the next ADD
/// is error 117 naming the bridge, and leaves nothing behind (the kernel
/// rolls the new pair back; IPAM comes after the veth).
#[test]
fn full_bridge_is_error_117_and_leaves_nothing() {
    let lab = lab();
    let net = Net::rnet(
        &lab,
        conf(&lab, "full", "br-full", &["10.32.0.0/22"], json!({})),
    );
    let c1 = lab.add_container("full1").unwrap();
    let r1 = net.add(&c1);
    // 1022 more ports (veth pairs with both ends in the lab host; this
    // kernel has no dummy driver).
    let batch = lab.state_dir().join("ports.batch");
    let lines: String = (1..=1022)
        .map(|i| format!("link add fd{i} numtxqueues 1 numrxqueues 1 master br-full type veth peer name fp{i} numtxqueues 1 numrxqueues 1\n"))
        .collect();
    std::fs::write(&batch, lines).unwrap();
    let out = lab
        .host()
        .output(std::process::Command::new("ip").arg("-batch").arg(&batch))
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c2 = lab.add_container("full2").unwrap();
    let out = net.call("ADD", "full2", Some(&c2.netns_path()), "eth0", &net.conf);
    assert_eq!(error_code(&out), 117, "{}", out.stdout_str());
    let msg = out.stdout_str();
    assert!(msg.contains("br-full") && msg.contains("1023"), "{msg}");
    assert_eq!(rnet_veths(&lab, "full").len(), 1, "only full1's veth");
    assert!(link(&mut c2.netlink().unwrap(), "eth0").is_none());
    assert_eq!(lease_files(&lab, "full").len(), 1, "only full1's lease");
    assert_eq!(state_files(&lab, "full"), 1, "only full1's state");
    // One port freed: the same ADD works.
    let mut nl = lab.netlink().unwrap();
    assert!(nl.link_del_by_name("fd1").unwrap());
    let r2 = net.add(&c2);
    net.del(&c2, Some(&r2));
    net.del(&c1, Some(&r1));
}

#[test]
fn interface_exists_is_an_error_and_keeps_the_existing_one() {
    let lab = lab();
    let net = Net::rnet(
        &lab,
        conf(&lab, "ex", "br-ex", &["10.32.0.0/24"], json!({})),
    );
    let c1 = lab.add_container("ex1").unwrap();
    let r = net.add(&c1);
    // Same container, same ifname again (no DEL in between).
    let out = net.call(
        "ADD",
        "ex1-other",
        Some(&c1.netns_path()),
        "eth0",
        &net.conf,
    );
    assert_eq!(error_code(&out), 113, "{}", out.stdout_str());
    net.check(&c1, &r).ok().unwrap();
    assert_eq!(
        lease_files(&lab, "ex").len(),
        1,
        "the failed ADD released its lease"
    );
    net.del(&c1, Some(&r));
}

#[test]
fn gc_and_status() {
    let lab = lab();
    let mut c = conf(&lab, "gc", "br-gc", &["10.33.0.0/24"], json!({}));
    c["cniVersion"] = json!("1.1.0");
    rnet_ipam(&mut c);
    let net = Net::rnet(&lab, c.clone());
    let ctrs: Vec<Container> = (0..3)
        .map(|i| lab.add_container(&format!("gc{i}")).unwrap())
        .collect();
    let results: Vec<Value> = ctrs.iter().map(|c| net.add(c)).collect();
    assert_eq!(rnet_veths(&lab, "gc").len(), 3);
    // Lose one state file: GC must still find its veth by alias.
    let sf = state_dir(&lab).join("gc").join("gc2_eth0.json");
    std::fs::remove_file(sf).unwrap();
    // A DEL whose reaper has not finished (test hook: it waits 3 s): the
    // retired pair is left to GC.
    let out = run(lab
        .cni(&net.plugin)
        .command("DEL")
        .container_id("gc1")
        .netns(ctrs[1].netns_path())
        .ifname("eth0")
        .cni_path([rnet_bin_dir()])
        .env("RNET_BRIDGE_TEST_REAP_DELAY_MS", "3000")
        .stdin(c.to_string()));
    out.ok().unwrap();
    let mut nl = lab.netlink().unwrap();
    let retired = |nl: &mut Netlink| {
        nl.link_list()
            .unwrap()
            .into_iter()
            .filter(|l| l.name.starts_with("rnetdel"))
            .count()
    };
    assert_eq!(
        retired(&mut nl),
        1,
        "the retired host end waits for its reaper"
    );

    let mut gc = c.clone();
    merge(
        &mut gc,
        json!({"cni.dev/valid-attachments": [{"containerID": "gc0", "ifname": "eth0"}]}),
    );
    let out = run(lab
        .cni(&net.plugin)
        .command("GC")
        .cni_path([rnet_bin_dir()])
        .stdin(gc.to_string()));
    out.ok().unwrap();
    assert_eq!(retired(&mut nl), 0, "GC deleted the retired pair");
    wait_until("GC's veth deletions", || rnet_veths(&lab, "gc").len() == 1);
    assert_eq!(
        lease_files(&lab, "gc"),
        vec![ip_of(&results[0], true).to_string()]
    );
    assert_eq!(state_files(&lab, "gc"), 1);
    net.check(&ctrs[0], &results[0]).ok().unwrap();

    // STATUS: ready with rnet-ipam (asked) and with host-local (too old to
    // be asked: found is ready); 50 when the IPAM plugin is missing.
    let out = run(lab
        .cni(&net.plugin)
        .command("STATUS")
        .cni_path([rnet_bin_dir()])
        .stdin(c.to_string()));
    out.ok().unwrap();
    let mut hl = c.clone();
    hl["ipam"]["type"] = json!("host-local");
    let out = run(lab
        .cni(&net.plugin)
        .command("STATUS")
        .cni_path([PathBuf::from("/usr/lib/cni")])
        .stdin(hl.to_string()));
    out.ok().unwrap();
    let mut missing = c.clone();
    missing["ipam"]["type"] = json!("no-such-ipam");
    let out = run(lab
        .cni(&net.plugin)
        .command("STATUS")
        .cni_path([rnet_bin_dir()])
        .stdin(missing.to_string()));
    assert_eq!(error_code(&out), 50);
    net.del(&ctrs[0], Some(&results[0]));
}

#[test]
fn fifty_parallel_adds() {
    let lab = lab();
    let net = Net::rnet(
        &lab,
        conf(
            &lab,
            "par",
            "br-par",
            &["10.34.0.0/24"],
            json!({"ipMasq": true}),
        ),
    );
    let ctrs: Vec<Container> = (0..50)
        .map(|i| lab.add_container(&format!("par{i}")).unwrap())
        .collect();
    let results: Vec<Value> = std::thread::scope(|s| {
        let hs: Vec<_> = ctrs.iter().map(|c| s.spawn(|| net.add(c))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips: Vec<IpAddr> = results.iter().map(|r| ip_of(r, true)).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 50, "distinct addresses");
    assert_eq!(rnet_veths(&lab, "par").len(), 50);
    // A sample of traffic.
    ping(ctrs[0].ns(), ips[49], T).unwrap();
    std::thread::scope(|s| {
        for (c, r) in ctrs.iter().zip(&results) {
            let net = &net;
            s.spawn(move || net.del(c, Some(r)));
        }
    });
    no_veths(&lab, "par");
    assert!(lease_files(&lab, "par").is_empty());
    assert_eq!(state_files(&lab, "par"), 0);
    assert!(
        !nft_ruleset(&lab).contains("par/par"),
        "no masq element left"
    );
}

/// ADDs that each create their bridge, all at once on a host without rnet's
/// tables: each checks for the tables before committing, the first under the
/// lock creates them (without the replace prelude, as they are absent), the
/// others find them. Created twice, or merged into each other, the base
/// chains would hold their rules twice.
#[test]
fn first_adds_on_new_bridges_create_the_tables_once() {
    let lab = lab();
    let nets: Vec<Net<'_>> = (0..8)
        .map(|i| {
            Net::rnet(
                &lab,
                conf(
                    &lab,
                    &format!("first{i}"),
                    &format!("br-first{i}"),
                    &[&format!("10.35.{i}.0/24")],
                    json!({"ipMasq": true}),
                ),
            )
        })
        .collect();
    let ctrs: Vec<Container> = (0..8)
        .map(|i| lab.add_container(&format!("first{i}")).unwrap())
        .collect();
    let results: Vec<Value> = std::thread::scope(|s| {
        let hs: Vec<_> = nets
            .iter()
            .zip(&ctrs)
            .map(|(n, c)| s.spawn(move || n.add(c)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let rules = nft_ruleset(&lab);
    assert_eq!(rules.matches("table inet rnet {").count(), 1, "{rules}");
    assert_eq!(rules.matches("table bridge rnet {").count(), 1, "{rules}");
    let chain = lab
        .host()
        .output(std::process::Command::new("nft").args([
            "list",
            "chain",
            "inet",
            "rnet",
            "postrouting",
        ]))
        .unwrap();
    let chain = String::from_utf8_lossy(&chain.stdout).into_owned();
    assert_eq!(chain.matches("masquerade").count(), 2, "{chain}");
    for i in 0..8 {
        assert!(
            rules.contains(&format!("\"first{i}/first{i}/eth0\"")),
            "masquerade element of first{i}: {rules}"
        );
        assert!(rules.contains(&format!("\"br-first{i}\"")), "{rules}");
    }
    for ((n, c), r) in nets.iter().zip(&ctrs).zip(&results) {
        n.del(c, Some(r));
    }
}

// ---------------------------------------------------------------- nftables

#[test]
fn masquerade_to_outside() {
    let lab = lab();
    let outside = lab.add_outside(OutsideConfig::default()).unwrap();
    let net = Net::rnet(
        &lab,
        conf(
            &lab,
            "masq",
            "br-masq",
            &["10.40.0.0/24", "fd00:40::/64"],
            json!({"isDefaultGateway": true, "ipMasq": true, "ipMasqBackend": "iptables"}),
        ),
    );
    let c1 = lab.add_container("masq1").unwrap();
    let r = net.add(&c1);
    let rules = nft_ruleset(&lab);
    assert!(rules.contains("comment \"masq/masq1/eth0\""), "{rules}");
    assert!(rules.contains("\"br-masq\""), "{rules}");

    let srv = tcp_listen(
        outside.ns(),
        SocketAddr::new(IpAddr::V4(outside.v4()), 9000),
    )
    .unwrap();
    assert_eq!(tcp_connect(c1.ns(), srv.addr(), T).unwrap(), srv.banner());
    assert_eq!(
        srv.peers()[0].ip(),
        IpAddr::V4(outside.host_v4()),
        "the outside sees the host's uplink address"
    );
    let v6 = outside.v6().unwrap();
    let srv6 = tcp_listen(outside.ns(), SocketAddr::new(IpAddr::V6(v6), 9000)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tcp_connect(c1.ns(), srv6.addr(), Duration::from_millis(500)) {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "v6 masquerade: {e}"),
        }
    }
    assert_eq!(srv6.peers()[0].ip(), IpAddr::V6(outside.host_v6().unwrap()));

    // CHECK sees a missing element.
    net.check(&c1, &r).ok().unwrap();
    let ip = ip_of(&r, true);
    lab.host()
        .output(std::process::Command::new("nft").args([
            "delete",
            "element",
            "inet",
            "rnet",
            "masq4",
            &format!("{{ {ip} }}"),
        ]))
        .unwrap();
    let out = net.check(&c1, &r);
    assert_ne!(out.status, 0);
    assert!(out.stdout_str().contains("masq4"), "{}", out.stdout_str());

    net.del(&c1, Some(&r));
    let rules = nft_ruleset(&lab);
    assert!(!rules.contains("masq/masq1/eth0"), "{rules}");
    assert!(rules.contains("\"br-masq\""), "shared bridge elements stay");
}

#[test]
fn ruleset_recovers_after_flush() {
    let lab = lab();
    let net = Net::rnet(
        &lab,
        conf(
            &lab,
            "fl",
            "br-fl",
            &["10.41.0.0/24"],
            json!({"ipMasq": true}),
        ),
    );
    let c1 = lab.add_container("fl1").unwrap();
    let c2 = lab.add_container("fl2").unwrap();
    let r1 = net.add(&c1);
    lab.host()
        .output(std::process::Command::new("nft").args(["flush", "ruleset"]))
        .unwrap();
    assert!(!nft_ruleset(&lab).contains("masq4"));
    let r2 = net.add(&c2);
    let rules = nft_ruleset(&lab);
    assert!(
        rules.contains("fl/fl1/eth0"),
        "recorded elements restored: {rules}"
    );
    assert!(rules.contains("fl/fl2/eth0"), "{rules}");
    net.del(&c1, Some(&r1));
    net.del(&c2, Some(&r2));
    assert!(!nft_ruleset(&lab).contains("fl/fl"));
    // A DEL that finds no tables (flushed after the ADD) has nothing to
    // delete there: it succeeds, removes the rest, and creates nothing.
    let c3 = lab.add_container("fl3").unwrap();
    let r3 = net.add(&c3);
    lab.host()
        .output(std::process::Command::new("nft").args(["flush", "ruleset"]))
        .unwrap();
    net.del(&c3, Some(&r3));
    assert!(
        !nft_ruleset(&lab).contains("table"),
        "{}",
        nft_ruleset(&lab)
    );
    assert_eq!(rnet_veths(&lab, "fl").len(), 0);
    assert_eq!(state_files(&lab, "fl"), 0);
}

#[test]
fn rollback_after_nft_leaves_nothing() {
    let lab = lab();
    let net = Net::rnet(
        &lab,
        conf(
            &lab,
            "rl",
            "br-rl",
            &["10.42.0.0/24"],
            json!({"ipMasq": true, "macspoofchk": true}),
        ),
    );
    let c1 = lab.add_container("rl1").unwrap();
    let out = run(lab
        .cni(&net.plugin)
        .command("ADD")
        .container_id("rl1")
        .netns(c1.netns_path())
        .ifname("eth0")
        .cni_path([PathBuf::from("/usr/lib/cni")])
        .env("RNET_BRIDGE_TEST_FAIL_LATE", "1")
        .stdin(net.conf.to_string()));
    assert_eq!(error_code(&out), 100);
    assert!(rnet_veths(&lab, "rl").is_empty(), "no veth left");
    assert!(lease_files(&lab, "rl").is_empty(), "no lease left");
    assert_eq!(state_files(&lab, "rl"), 0, "no state left");
    let rules = nft_ruleset(&lab);
    assert!(rules.contains("masq4"), "the table was created: {rules}");
    assert!(!rules.contains("rl/rl1/eth0"), "no element left: {rules}");
}

#[test]
fn isolation_between_networks() {
    let lab = lab();
    let outside = lab.add_outside(OutsideConfig::default()).unwrap();
    let iso = Net::rnet(
        &lab,
        conf(
            &lab,
            "isoa",
            "br-isoa",
            &["10.43.0.0/24"],
            json!({"isDefaultGateway": true, "ipMasq": true, "isolation": true}),
        ),
    );
    let open = Net::rnet(
        &lab,
        conf(
            &lab,
            "isob",
            "br-isob",
            &["10.44.0.0/24"],
            json!({"isDefaultGateway": true}),
        ),
    );
    let open2 = Net::rnet(
        &lab,
        conf(
            &lab,
            "isoc",
            "br-isoc",
            &["10.45.0.0/24"],
            json!({"isDefaultGateway": true}),
        ),
    );
    let a = lab.add_container("isoa1").unwrap();
    let b = lab.add_container("isob1").unwrap();
    let c = lab.add_container("isoc1").unwrap();
    let ra = iso.add(&a);
    let rb = open.add(&b);
    let rc = open2.add(&c);
    let srv_b = tcp_listen(b.ns(), SocketAddr::new(ip_of(&rb, true), 80)).unwrap();
    let srv_a = tcp_listen(a.ns(), SocketAddr::new(ip_of(&ra, true), 80)).unwrap();
    let short = Duration::from_millis(700);
    assert!(
        tcp_connect(a.ns(), srv_b.addr(), short).is_err(),
        "isolated -> other bridge"
    );
    assert!(
        tcp_connect(b.ns(), srv_a.addr(), short).is_err(),
        "other bridge -> isolated"
    );
    // Two non-isolated networks still talk (routed through the host).
    assert_eq!(
        tcp_connect(c.ns(), srv_b.addr(), T).unwrap(),
        srv_b.banner()
    );
    // The isolated network keeps its outbound traffic.
    let srv = tcp_listen(
        outside.ns(),
        SocketAddr::new(IpAddr::V4(outside.v4()), 9001),
    )
    .unwrap();
    assert_eq!(tcp_connect(a.ns(), srv.addr(), T).unwrap(), srv.banner());
    // And traffic arriving from outside (what a published port forwards).
    assert_eq!(
        tcp_connect(outside.ns(), srv_a.addr(), T).unwrap(),
        srv_a.banner()
    );
    iso.del(&a, Some(&ra));
    open.del(&b, Some(&rb));
    open2.del(&c, Some(&rc));
}

#[test]
fn macspoofchk_drops_spoofed_frames() {
    let lab = lab();
    let net = Net::rnet(
        &lab,
        conf(
            &lab,
            "sp",
            "br-sp",
            &["10.46.0.0/24"],
            json!({"macspoofchk": true}),
        ),
    );
    let plain = Net::rnet(
        &lab,
        conf(&lab, "sp", "br-sp", &["10.46.0.0/24"], json!({})),
    );
    let c1 = lab.add_container("sp1").unwrap();
    let c2 = lab.add_container("sp2").unwrap();
    let r1 = net.add(&c1);
    let r2 = plain.add(&c2);
    let rules = nft_ruleset(&lab);
    assert!(rules.contains("sp/sp1/eth0"), "{rules}");
    let gw: IpAddr = "10.46.0.1".parse().unwrap();
    ping(c1.ns(), gw, T).unwrap();
    net.check(&c1, &r1).ok().unwrap();

    // Spoof: give both containers' eth0 another MAC. Frames from c1 now carry a
    // source MAC the bridge was not told about: dropped. c2 is not checked.
    for c in [&c1, &c2] {
        let mut cnl = c.netlink().unwrap();
        let eth = link(&mut cnl, "eth0").unwrap();
        cnl.link_set_mac(
            eth.index,
            [0x02, 0xde, 0xad, 0, 0, c.name().len() as u8 + 3],
        )
        .unwrap();
    }
    // Drop what the neighbours learnt, so the next ping needs fresh frames.
    lab.host()
        .output(std::process::Command::new("ip").args(["neigh", "flush", "dev", "br-sp"]))
        .unwrap();
    assert!(
        ping(c1.ns(), gw, Duration::from_millis(800)).is_err(),
        "frames with a spoofed source MAC must be dropped"
    );
    ping(c2.ns(), gw, T).unwrap();
    let out = net.check(&c1, &r1);
    assert_ne!(out.status, 0, "CHECK notices the MAC change");

    net.del(&c1, Some(&r1));
    plain.del(&c2, Some(&r2));
    let rules = nft_ruleset(&lab);
    assert!(!rules.contains("sp/sp1/eth0"), "{rules}");
}

// ---------------------------------------------------------------- differential

/// What a test can observe of one attachment's kernel state, normalised so
/// that rnet and the reference can be compared field by field (host veth names
/// and MACs are random/hashed on both sides and left out).
#[derive(Debug, PartialEq)]
struct Observed {
    bridge: (Option<String>, bool, u32, bool, Vec<String>),
    accept_ra: String,
    forwarding: (String, String),
    host_veth: (bool, u32, bool, Option<bool>, Option<bool>),
    container: (Option<String>, bool, u32, Vec<String>),
    /// The container interface has an IPv6 link-local address.
    link_local: bool,
    routes: Vec<(String, Option<IpAddr>, u8, u8)>,
    sysctls: Vec<String>,
}

fn observe(lab: &Lab, ctr: &Container, bridge: &str, result: &Value) -> Observed {
    let mut nl = lab.netlink().unwrap();
    let br = link(&mut nl, bridge).unwrap();
    let hv = link(&mut nl, result["interfaces"][1]["name"].as_str().unwrap()).unwrap();
    let port = nl.bridge_port_get(hv.index).unwrap();
    let mut cnl = ctr.netlink().unwrap();
    let eth = link(&mut cnl, "eth0").unwrap();
    let mut routes = Vec::new();
    for fam in [Family::V4, Family::V6] {
        for r in cnl
            .route_list(fam, Some(rnet_netlink::RT_TABLE_MAIN))
            .unwrap()
        {
            if r.oif == Some(eth.index) && !is_link_local(r.dst.addr()) {
                routes.push((r.dst.to_string(), r.gateway, u8::from(r.scope), r.protocol));
            }
        }
    }
    routes.sort();
    let sysctl = |k: &str| read_sysctl(ctr.ns(), k).unwrap_or_else(|e| format!("error {e}"));
    Observed {
        bridge: (
            br.kind.clone(),
            br.up,
            br.mtu,
            br.promisc(),
            addrs(&mut nl, br.index),
        ),
        accept_ra: read_sysctl(lab.host(), &format!("net/ipv6/conf/{bridge}/accept_ra")).unwrap(),
        forwarding: (
            read_sysctl(lab.host(), "net/ipv4/ip_forward").unwrap(),
            read_sysctl(lab.host(), "net/ipv6/conf/all/forwarding").unwrap(),
        ),
        host_veth: (
            hv.master == Some(br.index),
            hv.mtu,
            hv.up,
            port.and_then(|p| p.hairpin),
            port.and_then(|p| p.isolated),
        ),
        container: (
            eth.kind.clone(),
            eth.up,
            eth.mtu,
            addrs(&mut cnl, eth.index),
        ),
        link_local: v6_addrs(&mut cnl, eth.index)
            .iter()
            .any(|a| a.starts_with("fe80:")),
        routes,
        sysctls: vec![
            sysctl("net/ipv4/conf/eth0/arp_notify"),
            sysctl("net/ipv6/conf/eth0/accept_dad"),
            // Not compared: net.ipv6.conf.eth0.keep_addr_on_down. rnet sets it
            // to 1 with IPv6 addresses as the newest upstream (v1.9) does;
            // Debian's reference v1.1.1 predates that.
        ],
    }
}

/// The result with what differs by design removed: host veth name and the
/// MACs (random on both sides), the sandbox path (each lab has its own
/// container namespace) is checked against the container and then dropped.
fn normalise(mut r: Value, ctr: &Container) -> Value {
    if let Some(ifs) = r["interfaces"].as_array_mut() {
        for (i, itf) in ifs.iter_mut().enumerate() {
            let o = itf.as_object_mut().unwrap();
            assert_eq!(o.remove("mac").map(|m| m.as_str().unwrap().len()), Some(17));
            if i == 1 {
                assert!(o.remove("name").is_some());
            }
            if let Some(sb) = o.remove("sandbox") {
                assert_eq!(sb, ctr.netns_path().display().to_string());
                o.insert("sandbox".into(), json!("<sandbox>"));
            }
        }
    }
    r
}

fn differential(version: &str, subnets: &[&str], extra: Value) {
    let lab_r = lab();
    let lab_x = lab();
    let mut c_r = conf(&lab_r, "diff", "br-diff", subnets, extra.clone());
    let mut c_x = conf(&lab_x, "diff", "br-diff", subnets, extra);
    // The reference keeps an IPv6 link-local address on an IPv4-only
    // network's container interface; rnet does with "ipv6LinkLocal" (its
    // default leaves none, tested in `v4_only_interface_has_no_ipv6`).
    c_r["ipv6LinkLocal"] = json!(true);
    c_r["cniVersion"] = json!(version);
    c_x["cniVersion"] = json!(version);
    let ours = Net::rnet(&lab_r, c_r);
    let theirs = Net::reference(&lab_x, c_x);
    let ctr_r = lab_r.add_container("diff1").unwrap();
    let ctr_x = lab_x.add_container("diff1").unwrap();
    let res_r = ours.add(&ctr_r);
    let res_x = theirs.add(&ctr_x);
    assert_eq!(
        normalise(res_r.clone(), &ctr_r),
        normalise(res_x.clone(), &ctr_x),
        "results differ (version {version})"
    );
    assert_eq!(
        observe(&lab_r, &ctr_r, "br-diff", &res_r),
        observe(&lab_x, &ctr_x, "br-diff", &res_x),
        "kernel state differs (version {version})"
    );
    // Both CHECK their own attachment (CHECK exists from 0.4.0 on), and
    // both refuse CHECK alike before that; DEL leaves the same.
    let (cr, cx) = (ours.check(&ctr_r, &res_r), theirs.check(&ctr_x, &res_x));
    assert_eq!(
        cr.status,
        cx.status,
        "{} / {}",
        cr.stdout_str(),
        cx.stdout_str()
    );
    if version >= "0.4.0" {
        cr.ok().unwrap();
    } else {
        assert_eq!(error_code(&cr), error_code(&cx));
    }
    ours.del(&ctr_r, Some(&res_r));
    theirs.del(&ctr_x, Some(&res_x));
    assert_eq!(lease_files(&lab_r, "diff"), lease_files(&lab_x, "diff"));
    let mut cnl = ctr_r.netlink().unwrap();
    let mut xnl = ctr_x.netlink().unwrap();
    assert!(link(&mut xnl, "eth0").is_none());
    wait_until("eth0 to go", || link(&mut cnl, "eth0").is_none());
}

#[test]
fn differential_vs_reference_bridge() {
    differential(
        "1.0.0",
        &["10.50.0.0/24"],
        json!({"isDefaultGateway": true}),
    );
    differential(
        "0.4.0",
        &["10.50.0.0/24"],
        json!({"mtu": 1400, "hairpinMode": true}),
    );
    differential(
        "0.3.1",
        &["10.50.0.0/24", "fd00:50::/64"],
        json!({"isDefaultGateway": true, "dns": {"nameservers": ["10.50.0.1"]}}),
    );
    // (Not "portIsolation": Debian's reference v1.1.1 predates it and ignores
    // it; rnet sets the port isolated as newer references do.)
    differential(
        "1.0.0",
        &["10.50.0.0/24"],
        json!({"isGateway": false, "promiscMode": true}),
    );
}

/// Holds an exclusive `flock` on `path` in a child `flock(1)` process until
/// dropped (killed by PID).
struct HeldLock(std::process::Child);

impl HeldLock {
    fn new(path: &Path) -> Self {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // -o: the lock stays with flock(1) itself (not with `sleep`), so
        // killing it by PID releases the lock.
        let child = std::process::Command::new("flock")
            .args(["-x", "-o"])
            .arg(path)
            .args(["sleep", "120"])
            .spawn()
            .expect("flock(1) from util-linux is needed");
        wait_until("flock(1) to take the lock", || {
            !std::process::Command::new("flock")
                .args(["-n", "-x"])
                .arg(path)
                .arg("true")
                .status()
                .unwrap()
                .success()
        });
        HeldLock(child)
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A lock held by a stuck process makes ADD fail with 11 ("try again") after
/// a bound, with nothing left behind, and the retry succeeds: the IPAM store
/// lock, then the shared nft ruleset lock (taken when the table is built).
#[test]
fn held_locks_give_try_again_and_roll_back() {
    let lab = lab();
    let mut c = conf(
        &lab,
        "lk",
        "br-lk",
        &["10.47.0.0/24"],
        json!({"ipMasq": true}),
    );
    rnet_ipam(&mut c);
    let net = Net::rnet(&lab, c);
    let ctr = lab.add_container("lk1").unwrap();
    let bound = rnet_nft::rnet::LOCK_TIMEOUT;
    for lock in [
        ipam_dir(&lab).join("lk").join("lock"),
        lab.state_dir().join("nft").join("lock"),
    ] {
        let held = HeldLock::new(&lock);
        let t = Instant::now();
        let out = net.call("ADD", "lk1", Some(&ctr.netns_path()), "eth0", &net.conf);
        let took = t.elapsed();
        assert_eq!(error_code(&out), 11, "{}: {out:?}", lock.display());
        assert!(
            took >= bound && took < bound * 2,
            "{}: failed after {took:?}, bound {bound:?}",
            lock.display()
        );
        let msg = out.json().unwrap()["msg"].as_str().unwrap().to_owned();
        assert!(msg.contains("lock"), "the message names the lock: {msg}");
        assert!(rnet_veths(&lab, "lk").is_empty(), "no veth left");
        assert!(lease_files(&lab, "lk").is_empty(), "no lease left");
        assert_eq!(state_files(&lab, "lk"), 0, "no state left");
        drop(held);
    }
    let r = net.add(&ctr);
    assert!(ip_of(&r, true).to_string().starts_with("10.47.0."), "{r}");
    ping(ctr.ns(), "10.47.0.1".parse().unwrap(), T).unwrap();
    net.del(&ctr, Some(&r));
    assert!(lease_files(&lab, "lk").is_empty());
}

/// When ADD returns, the container's port forwards (operstate up, bridge
/// port state forwarding), as the reference guarantees, even while another
/// process keeps the rtnl lock busy (the kernel brings a port to forwarding
/// in its link-watch work, which needs that lock).
#[test]
fn ports_forward_when_add_returns() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let lab = lab();
    let net = Net::rnet(
        &lab,
        conf(&lab, "fw", "br-fwd", &["10.36.0.0/24"], json!({})),
    );
    let ctrs: Vec<Container> = (0..20)
        .map(|i| lab.add_container(&format!("fwd{i}")).unwrap())
        .collect();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // rtnl pressure: bridges made and deleted in a namespace of our own.
        let churn = s.spawn(|| {
            let ns = rnet_netns::NetNs::new_unnamed().unwrap();
            let mut nl = Netlink::in_netns(&ns).unwrap();
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("churn{}", n % 8);
                if let Ok(i) = nl.create_bridge(&name, &rnet_netlink::BridgeOpts::default()) {
                    let _ = nl.link_del(i);
                }
                n += 1;
            }
            n
        });
        let hs: Vec<_> = ctrs
            .iter()
            .map(|c| {
                let net = &net;
                let lab = &lab;
                s.spawn(move || {
                    let r = net.add(c);
                    let host = r["interfaces"][1]["name"].as_str().unwrap().to_owned();
                    let mut nl = lab.netlink().unwrap();
                    let l = link(&mut nl, &host).unwrap();
                    let port = nl.bridge_port_get(l.index).unwrap().unwrap();
                    (host, l.running, port.state)
                })
            })
            .collect();
        let got: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        stop.store(true, Ordering::Relaxed);
        let rounds = churn.join().unwrap();
        assert!(rounds > 0, "the churn ran");
        for (host, running, state) in got {
            assert!(running, "{host}: not up when ADD returned");
            assert_eq!(state, Some(3), "{host}: not forwarding when ADD returned");
        }
    });
    for c in &ctrs {
        net.del(c, None);
    }
}
