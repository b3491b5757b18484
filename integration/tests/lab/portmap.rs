//! `rnet-portmap` chained behind `rnet-bridge` + `rnet-ipam`, driven through
//! `rnet_cni::runtime::Runtime` inside a lab host, with real TCP and UDP
//! traffic: from an outside namespace, from the host (uplink address,
//! bridge address, 127.0.0.1), from another container, hairpin; hostIP
//! binding, ranges, a taken port (error 120), the CVE-2020-8558 guard, DEL,
//! conntrack flush, and restore after `nft flush ruleset`.

use crate::common::{lab, reference, rnet, rnet_dir};
use netns_fixtures::{
    Container, Lab, Outside, OutsideConfig, tcp_connect, tcp_listen_with_banner, udp_echo_server,
    udp_roundtrip,
};
use rnet_cni::runtime::{ConfList, Runtime, RuntimeConf};
use rnet_cni::{CniError, CniResult};
use rnet_netlink::RouteSpec;
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_millis(1500);
const HOST4: &str = "198.51.100.1";
const HOST6: &str = "fd00:198:51:100::1";
const GW4: &str = "10.77.0.1";

struct Net<'a> {
    lab: &'a Lab,
    rt: Runtime,
    list: ConfList,
}

fn conflist(lab: &Lab, portmap_extra: Value) -> ConfList {
    conflist_named(lab, "pmnet", "pm0", "10.77.0", "fd77", portmap_extra)
}

/// A bridge + IPAM + portmap conflist: network `name` on bridge `bridge`,
/// subnets `<v4>.0/24` and `<v6>::/64`.
fn conflist_named(
    lab: &Lab,
    name: &str,
    bridge: &str,
    v4: &str,
    v6: &str,
    portmap_extra: Value,
) -> ConfList {
    let mut pm = json!({
        "type": "rnet-portmap",
        "capabilities": {"portMappings": true},
        "rnetStateDir": lab.state_dir().join("rnet"),
    });
    if let (Value::Object(a), Value::Object(b)) = (&mut pm, portmap_extra) {
        a.extend(b);
    }
    let v = json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "rnet-bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": true,
                "rnetStateDir": lab.state_dir().join("rnet"),
                "ipam": {
                    "type": "rnet-ipam",
                    "ranges": [[{"subnet": format!("{v4}.0/24")}], [{"subnet": format!("{v6}::/64")}]],
                    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
                    "dataDir": lab.state_dir().join("ipam"),
                },
            },
            pm,
        ],
    });
    ConfList::parse(v.to_string().as_bytes()).unwrap()
}

impl<'a> Net<'a> {
    fn new(lab: &'a Lab, extra: Value) -> Self {
        for b in ["rnet-bridge", "rnet-ipam", "rnet-portmap"] {
            rnet(b);
        }
        Net {
            lab,
            rt: Runtime::new(vec![rnet_dir()], lab.state_dir().join("cache")),
            list: conflist(lab, extra),
        }
    }

    /// A second network beside `pmnet` (own bridge and subnets).
    fn named(lab: &'a Lab, name: &str, bridge: &str, v4: &str, v6: &str, extra: Value) -> Self {
        let mut n = Net::new(lab, json!({}));
        n.list = conflist_named(lab, name, bridge, v4, v6, extra);
        n
    }

    fn rc(c: &Container, maps: Value) -> RuntimeConf {
        let mut caps = serde_json::Map::new();
        caps.insert("portMappings".into(), maps);
        RuntimeConf {
            container_id: c.name().to_owned(),
            netns: Some(c.netns_path()),
            ifname: "eth0".into(),
            args: Vec::new(),
            capability_args: caps,
        }
    }

    fn try_add(&self, c: &Container, maps: Value) -> Result<CniResult, CniError> {
        let rc = Self::rc(c, maps);
        self.lab
            .host()
            .run(|| self.rt.add(&self.list, &rc))
            .unwrap()
    }

    fn add(&self, c: &Container, maps: Value) -> CniResult {
        self.try_add(c, maps)
            .unwrap_or_else(|e| panic!("ADD {} failed: {e:?}", c.name()))
    }

    fn del(&self, c: &Container, maps: Value) {
        let rc = Self::rc(c, maps);
        self.lab
            .host()
            .run(|| self.rt.del(&self.list, &rc))
            .unwrap()
            .unwrap_or_else(|e| panic!("DEL {} failed: {e:?}", c.name()));
    }

    fn check(&self, c: &Container, maps: Value) -> Result<(), CniError> {
        let rc = Self::rc(c, maps);
        self.lab
            .host()
            .run(|| self.rt.check(&self.list, &rc))
            .unwrap()
    }
}

fn ip_of(r: &CniResult, v4: bool) -> IpAddr {
    r.ips
        .iter()
        .map(|i| i.address.addr())
        .find(|a| a.is_ipv4() == v4)
        .unwrap_or_else(|| panic!("no IPv{} address in {r:?}", if v4 { 4 } else { 6 }))
}

fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// TCP banner from `addr`, retried up to 5 s (IPv6 DAD, first ARP).
#[track_caller]
fn reaches(ns: &rnet_netns::NetNs, addr: SocketAddr, banner: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tcp_connect(ns, addr, T) {
            Ok(b) if b == banner => return,
            Ok(b) if Instant::now() > deadline => {
                panic!("{addr} answered {b:?}, expected {banner:?}")
            }
            Err(e) if Instant::now() > deadline => panic!("{addr} unreachable: {e}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// No banner `banner` from `addr` (refused, timeout, or someone else).
#[track_caller]
fn not_reaches(ns: &rnet_netns::NetNs, addr: SocketAddr, banner: &str) {
    if let Ok(b) = tcp_connect(ns, addr, Duration::from_millis(700)) {
        assert_ne!(b, banner, "{addr} must not lead to {banner:?}");
    }
}

fn serve(c: &Container, port: u16, v6: bool) -> netns_fixtures::TcpServer {
    let any: IpAddr = if v6 {
        "::".parse().unwrap()
    } else {
        "0.0.0.0".parse().unwrap()
    };
    let name = format!("{}:{port}", c.name());
    tcp_listen_with_banner(c.ns(), SocketAddr::new(any, port), &name).unwrap()
}

fn outside(lab: &Lab) -> Outside {
    lab.add_outside(OutsideConfig::default()).unwrap()
}

fn nft(lab: &Lab, args: &[&str]) -> String {
    let out = lab
        .host()
        .run(|| std::process::Command::new("nft").args(args).output())
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn published_ports_from_everywhere() {
    let lab = lab();
    let out = outside(&lab);
    let net = Net::new(&lab, json!({}));
    let c1 = lab.add_container("pm-c1").unwrap();
    c1.lo_up().unwrap();
    let maps = json!([
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
        {"hostPort": "8001-8002", "containerPort": "81-82", "protocol": "tcp"},
        {"hostPort": 9090, "containerPort": 90, "protocol": "tcp", "hostIP": "127.0.0.1"},
        {"hostPort": 9091, "containerPort": 90, "protocol": "tcp", "hostIP": HOST4},
    ]);
    let r1 = net.add(&c1, maps.clone());
    let (c1v4, c1v6) = (ip_of(&r1, true), ip_of(&r1, false));
    let _s80 = serve(&c1, 80, true); // dual-stack listener
    let _s82 = serve(&c1, 82, false);
    let _s90 = serve(&c1, 90, false);
    let _u53 = udp_echo_server(c1.ns(), sa("0.0.0.0", 53)).unwrap();
    let b80 = "pm-c1:80";

    // From outside, IPv4 and IPv6, TCP and UDP.
    if std::env::var_os("PM_DEBUG").is_some() {
        eprintln!("{}", nft(&lab, &["list", "ruleset"]));
        eprintln!("{r1:?}");
    }
    reaches(out.ns(), sa(HOST4, 8080), b80);
    reaches(out.ns(), sa(HOST6, 8080), b80);
    let echo = udp_roundtrip(out.ns(), sa(HOST4, 5353), b"ping", T).unwrap();
    assert_eq!(echo, b"ping");
    // Range: 8002 -> 82.
    reaches(out.ns(), sa(HOST4, 8002), "pm-c1:82");
    // From the host: uplink address, bridge address, 127.0.0.1.
    reaches(lab.host(), sa(HOST4, 8080), b80);
    reaches(lab.host(), sa(GW4, 8080), b80);
    reaches(lab.host(), sa("127.0.0.1", 8080), b80);
    reaches(lab.host(), sa(HOST6, 8080), b80);
    // hostIP binding: only that address answers.
    reaches(lab.host(), sa("127.0.0.1", 9090), "pm-c1:90");
    not_reaches(lab.host(), sa(HOST4, 9090), "pm-c1:90");
    not_reaches(out.ns(), sa(HOST4, 9090), "pm-c1:90");
    reaches(out.ns(), sa(HOST4, 9091), "pm-c1:90");
    not_reaches(lab.host(), sa(GW4, 9091), "pm-c1:90");
    // Hairpin: c1 through the host's address to itself.
    // Another container on the same bridge (no mappings of its own).
    let c2 = lab.add_container("pm-c2").unwrap();
    let r2 = net.add(&c2, json!([]));
    reaches(c2.ns(), sa(HOST4, 8080), b80);
    reaches(c2.ns(), sa(HOST6, 8080), b80);
    // Not DNATed when not addressed to the host (CVE-2025-67499): transit
    // traffic to some other address on port 8080 is left alone.
    not_reaches(c2.ns(), sa("203.0.113.9", 8080), b80);
    // No direct access from outside to a published container's address
    // (routes to the container subnet exist in the outside namespace for this).
    {
        let mut onl = rnet_netlink::Netlink::in_netns(out.ns()).unwrap();
        let mut r = RouteSpec::new("10.77.0.0/24".parse().unwrap());
        r.gateway = Some(HOST4.parse().unwrap());
        onl.route_add(&r).unwrap();
    }
    not_reaches(out.ns(), SocketAddr::new(c1v4, 80), b80);
    // ... while the unpublished c2 stays reachable as before (routing as usual).
    let _c2s = serve(&c2, 80, false);
    reaches(out.ns(), SocketAddr::new(ip_of(&r2, true), 80), "pm-c2:80");

    // A second container asking for the same host port: error 120 naming
    // the owner; the first mapping still works.
    let c3 = lab.add_container("pm-c3").unwrap();
    let e = net
        .try_add(&c3, json!([{"hostPort": 8080, "containerPort": 80}]))
        .unwrap_err();
    assert_eq!(e.code, 120, "{e:?}");
    assert!(
        e.msg.contains("8080") && e.msg.contains("pm-c1"),
        "{}",
        e.msg
    );
    net.del(&c3, json!([{"hostPort": 8080, "containerPort": 80}]));
    reaches(out.ns(), sa(HOST4, 8080), b80);
    // A second mapping on another port, by another container.
    let r4c = lab.add_container("pm-c4").unwrap();
    net.add(&r4c, json!([{"hostPort": 8081, "containerPort": 80}]));
    let _s4 = serve(&r4c, 80, false);
    reaches(out.ns(), sa(HOST4, 8081), "pm-c4:80");
    reaches(out.ns(), sa(HOST4, 8080), b80);

    // CHECK.
    net.check(&c1, maps.clone()).unwrap();

    // CVE-2020-8558: route_localnet is on for the bridge (localhost
    // publishing), yet a container sending to the host's 127.0.0.1 through
    // its gateway reaches nothing.
    assert_eq!(
        netns_fixtures::read_sysctl(lab.host(), "net/ipv4/conf/pm0/route_localnet").unwrap(),
        "1"
    );
    assert_eq!(
        netns_fixtures::read_sysctl(lab.host(), "net/ipv4/conf/all/route_localnet").unwrap(),
        "0"
    );
    let _secret = tcp_listen_with_banner(lab.host(), sa("127.0.0.1", 7777), "host-secret").unwrap();
    reaches(lab.host(), sa("127.0.0.1", 7777), "host-secret");
    {
        // c2's loopback is down, so 127.0.0.1 can be routed via the gateway.
        let mut cnl = c2.netlink().unwrap();
        let mut r = RouteSpec::new("127.0.0.1/32".parse().unwrap());
        r.gateway = Some(GW4.parse().unwrap());
        cnl.route_add(&r).unwrap();
    }
    not_reaches(c2.ns(), sa("127.0.0.1", 7777), "host-secret");
    // The packet did arrive and was dropped by rnet's guard (its counter).
    let text = nft(&lab, &["list", "chain", "inet", "rnet", "pm_raw"]);
    let dropped: u64 = text
        .split("counter packets ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        dropped > 0,
        "the 127.0.0.0/8 guard must have dropped c2's packets:\n{text}"
    );
    let _ = (c1v6, r4c);
}

#[test]
fn del_conntrack_and_restore_after_flush() {
    let lab = lab();
    let out = outside(&lab);
    let net = Net::new(&lab, json!({}));
    let maps = json!([
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
    ]);
    let a = lab.add_container("pm-a").unwrap();
    net.add(&a, maps.clone());
    let _sa = serve(&a, 80, false);
    let ua = udp_echo_server(a.ns(), sa("0.0.0.0", 53)).unwrap();
    let b = lab.add_container("pm-b").unwrap();
    net.add(&b, json!([{"hostPort": 8081, "containerPort": 80}]));
    let _sb = serve(&b, 80, false);
    reaches(out.ns(), sa(HOST4, 8080), "pm-a:80");
    reaches(out.ns(), sa(HOST4, 8081), "pm-b:80");

    // A UDP flow from a fixed source port.
    let sock = out
        .ns()
        .run(|| UdpSocket::bind(("0.0.0.0", 40053)))
        .unwrap()
        .unwrap();
    sock.set_read_timeout(Some(T)).unwrap();
    sock.connect(sa(HOST4, 5353)).unwrap();
    let mut buf = [0u8; 64];
    sock.send(b"one").unwrap();
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"one");
    assert_eq!(ua.peers().len(), 1);

    // Firewall reload: everything gone; `reload` restores every mapping.
    nft(&lab, &["flush", "ruleset"]);
    not_reaches(out.ns(), sa(HOST4, 8081), "pm-b:80");
    let root = lab.state_dir().join("rnet");
    let mut n = rnet_nft::Nft::in_netns(lab.host()).unwrap();
    let r = rnet_nft::rnet::reload(&mut n, &root).unwrap();
    assert!(r.journaled >= 4, "{r:?}");
    reaches(out.ns(), sa(HOST4, 8080), "pm-a:80");
    reaches(out.ns(), sa(HOST4, 8081), "pm-b:80");
    // Flush again: the next plugin call (an ADD of another container) restores.
    nft(&lab, &["flush", "ruleset"]);
    let c = lab.add_container("pm-c").unwrap();
    net.add(&c, json!([{"hostPort": 8082, "containerPort": 80}]));
    let _sc = serve(&c, 80, false);
    reaches(out.ns(), sa(HOST4, 8081), "pm-b:80");
    reaches(out.ns(), sa(HOST4, 8082), "pm-c:80");
    // Masquerade of the bridge plugin came back with it too (v1 elements carried).
    let t = nft(&lab, &["list", "table", "inet", "rnet"]);
    assert!(
        t.contains(rnet_nft::rnet::VERSION) && t.contains("hostports4"),
        "{t}"
    );

    // DEL closes the port; DEL twice is fine.
    net.del(&a, maps.clone());
    not_reaches(out.ns(), sa(HOST4, 8080), "pm-a:80");
    let rc = Net::rc(&a, maps.clone());
    let again = lab.host().run(|| {
        let env = rnet_cni::exec::CniEnv {
            command: "DEL".into(),
            container_id: "pm-a".into(),
            netns: a.netns_path().display().to_string(),
            ifname: "eth0".into(),
            args: String::new(),
            path: rnet_dir().display().to_string(),
        };
        let mut conf = net.list.plugins[1].clone();
        conf.insert("name".into(), json!("pmnet"));
        conf.insert("cniVersion".into(), json!("1.0.0"));
        let _ = &rc;
        rnet_cni::exec::exec_plugin(
            &rnet("rnet-portmap"),
            &env,
            Value::Object(conf).to_string().as_bytes(),
        )
    });
    again.unwrap().unwrap();
    reaches(out.ns(), sa(HOST4, 8081), "pm-b:80");

    // Conntrack: the old UDP flow (same source port) goes to the new owner
    // of the port at once, not into the deleted container.
    let d = lab.add_container("pm-d").unwrap();
    net.add(
        &d,
        json!([{"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]),
    );
    let ud = udp_echo_server(d.ns(), sa("0.0.0.0", 53)).unwrap();
    sock.send(b"two").unwrap();
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"two");
    assert_eq!(ud.peers().len(), 1, "the flow must reach the new container");
    assert_eq!(ua.peers().len(), 1);

    // GC with only b and d valid removes c's elements.
    let valid = vec![
        rnet_cni::Attachment {
            container_id: "pm-b".into(),
            ifname: "eth0".into(),
        },
        rnet_cni::Attachment {
            container_id: "pm-d".into(),
            ifname: "eth0".into(),
        },
    ];
    let gc = lab.host().run(|| net.rt.gc(&net.list, &valid)).unwrap();
    assert!(gc.is_ok(), "{gc:?}");
    not_reaches(out.ns(), sa(HOST4, 8082), "pm-c:80");
    reaches(out.ns(), sa(HOST4, 8081), "pm-b:80");
}

/// A container reaching its OWN published port through the host's address:
/// works when the bridge puts its ports in hairpin mode (`hairpinMode`),
/// exactly as with the reference plugins (see the differential test);
/// without it the DNATed packet never comes back to the container.
#[test]
fn hairpin_to_own_published_port() {
    let lab = lab();
    let _out = outside(&lab);
    let mut net = Net::new(&lab, json!({}));
    net.list.plugins[0].insert("hairpinMode".into(), json!(true));
    let c1 = lab.add_container("pm-h1").unwrap();
    c1.lo_up().unwrap();
    net.add(&c1, json!([{"hostPort": 8080, "containerPort": 80}]));
    let _s = serve(&c1, 80, false);
    let r = tcp_connect(c1.ns(), sa(HOST4, 8080), T);
    assert_eq!(r.unwrap(), "pm-h1:80");
}

/// The same scenario against rnet's chain and the reference chain (bridge +
/// host-local + portmap 1.1.1, iptables backend), probe by probe.
fn differential_run(reference: bool) -> Vec<(&'static str, bool)> {
    let lab = lab();
    let out = outside(&lab);
    let (pm_type, br_type, ipam_type) = if reference {
        ("portmap", "bridge", "host-local")
    } else {
        ("rnet-portmap", "rnet-bridge", "rnet-ipam")
    };
    let v = json!({
        "cniVersion": "1.0.0",
        "name": "diffnet",
        "plugins": [
            {"type": br_type, "bridge": "df0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
             "rnetStateDir": lab.state_dir().join("rnet"),
             "ipam": {"type": ipam_type, "ranges": [[{"subnet": "10.77.0.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": lab.state_dir().join("ipam")}},
            {"type": pm_type, "capabilities": {"portMappings": true},
             "rnetStateDir": lab.state_dir().join("rnet")},
        ],
    });
    let list = ConfList::parse(v.to_string().as_bytes()).unwrap();
    let rt = Runtime::new(
        vec![rnet_dir(), "/usr/lib/cni".into()],
        lab.state_dir().join("cache"),
    );
    let rc = |c: &Container, maps: Value| Net::rc(c, maps);
    let add = |c: &Container, maps: Value| {
        let r = rc(c, maps);
        lab.host().run(|| rt.add(&list, &r)).unwrap()
    };
    let maps = json!([
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 8002, "containerPort": 82, "protocol": "tcp"},
        {"hostPort": 9090, "containerPort": 90, "protocol": "tcp", "hostIP": "127.0.0.1"},
    ]);
    let c1 = lab.add_container("df-c1").unwrap();
    c1.lo_up().unwrap();
    add(&c1, maps.clone()).unwrap();
    let _s = [
        serve(&c1, 80, false),
        serve(&c1, 82, false),
        serve(&c1, 90, false),
    ];
    let c2 = lab.add_container("df-c2").unwrap();
    add(&c2, json!([])).unwrap();
    let ok = |ns: &rnet_netns::NetNs, addr: SocketAddr, banner: &str| {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match tcp_connect(ns, addr, Duration::from_millis(700)) {
                Ok(b) if b == banner => return true,
                _ if Instant::now() > deadline => return false,
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    };
    let mut res = vec![
        (
            "outside -> uplink:8080",
            ok(out.ns(), sa(HOST4, 8080), "df-c1:80"),
        ),
        (
            "outside -> uplink:8002",
            ok(out.ns(), sa(HOST4, 8002), "df-c1:82"),
        ),
        (
            "host -> uplink:8080",
            ok(lab.host(), sa(HOST4, 8080), "df-c1:80"),
        ),
        (
            "host -> bridge:8080",
            ok(lab.host(), sa(GW4, 8080), "df-c1:80"),
        ),
        (
            "host -> 127.0.0.1:8080",
            ok(lab.host(), sa("127.0.0.1", 8080), "df-c1:80"),
        ),
        (
            "other container -> uplink:8080",
            ok(c2.ns(), sa(HOST4, 8080), "df-c1:80"),
        ),
        (
            "host -> 127.0.0.1:9090 (bound)",
            ok(lab.host(), sa("127.0.0.1", 9090), "df-c1:90"),
        ),
        (
            "host -> uplink:9090 (bound elsewhere)",
            ok(lab.host(), sa(HOST4, 9090), "df-c1:90"),
        ),
        (
            "outside -> uplink:9090 (bound elsewhere)",
            ok(out.ns(), sa(HOST4, 9090), "df-c1:90"),
        ),
    ];
    res.push((
        "hairpin: c1 -> uplink:8080",
        ok(c1.ns(), sa(HOST4, 8080), "df-c1:80"),
    ));
    let c3 = lab.add_container("df-c3").unwrap();
    let taken = add(
        &c3,
        json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
    );
    res.push(("second ADD of a taken host port succeeds", taken.is_ok()));
    res.push((
        "first mapping still answers",
        ok(out.ns(), sa(HOST4, 8080), "df-c1:80"),
    ));
    let r1 = rc(&c1, maps);
    lab.host().run(|| rt.del(&list, &r1)).unwrap().unwrap();
    res.push((
        "outside -> uplink:8080 after DEL",
        ok(out.ns(), sa(HOST4, 8080), "df-c1:80"),
    ));
    res
}

#[test]
fn differential_against_reference_portmap() {
    reference("portmap");
    reference("bridge");
    let ours = differential_run(false);
    let theirs = differential_run(true);
    let mut diffs = Vec::new();
    for ((name, a), (_, b)) in ours.iter().zip(&theirs) {
        eprintln!("{name:45} rnet {a:5} reference {b:5}");
        if a != b {
            diffs.push(*name);
        }
    }
    // The one intended difference: rnet refuses a taken host port (error
    // 120) where the reference silently shadows it.
    assert_eq!(
        diffs,
        vec!["second ADD of a taken host port succeeds"],
        "{ours:?}\n{theirs:?}"
    );
}

/// The condition chains (`pmc4_*`, `pmc6_*`) in the lab host's rnet table.
fn cond_chains(lab: &Lab) -> Vec<String> {
    nft(lab, &["list", "table", "inet", "rnet"])
        .lines()
        .filter_map(|l| l.trim().strip_prefix("chain "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("pmc4_") || n.starts_with("pmc6_"))
        .map(str::to_owned)
        .collect()
}

/// `conditionsV4`/`conditionsV6` (issue #5): a conditioned mapping is
/// reachable only by the traffic its conditions admit (from outside, from
/// the host itself), a plain mapping beside it by everyone; iptables and nft
/// forms; per family; restore after a flush keeps the conditions; DEL
/// removes the condition chain once its last user is gone.
#[test]
fn conditions_limit_who_reaches_a_port() {
    let lab = lab();
    let out_a = outside(&lab); // 198.51.100.2 behind uplink0 (198.51.100.1), v4 + v6
    let out_b = lab
        .add_outside(OutsideConfig {
            host_if: "uplink1".into(),
            outside_if: "eth0".into(),
            host_v4: "198.51.101.1/24".parse().unwrap(),
            outside_v4: "198.51.101.2/24".parse().unwrap(),
            host_v6: None,
            outside_v6: None,
            host_default_route: false,
            forwarding: true,
        })
        .unwrap();
    const HOST4B: &str = "198.51.101.1";
    let root = lab.state_dir().join("rnet");

    // A plain mapping on pmnet.
    let plain = Net::new(&lab, json!({}));
    let cp = lab.add_container("pc-plain").unwrap();
    plain.add(&cp, json!([{"hostPort": 8081, "containerPort": 80}]));
    let _sp = serve(&cp, 80, false);

    // iptables form (no backend: detected), only outside A may come in.
    let ipt = Net::named(
        &lab,
        "pmcond",
        "pmc0",
        "10.78.0",
        "fd78",
        json!({"conditionsV4": [
            "-s", "198.51.100.2,10.78.0.0/24", "-m", "comment", "--comment", "A and pmcond only",
        ]}),
    );
    let cc = lab.add_container("pc-cond").unwrap();
    let maps = json!([{"hostPort": 8080, "containerPort": 80}]);
    ipt.add(&cc, maps.clone());
    let _sc = serve(&cc, 80, true);
    if std::env::var_os("PM_DEBUG").is_some() {
        eprintln!("{}", nft(&lab, &["list", "ruleset"]));
    }
    reaches(out_a.ns(), sa(HOST4, 8080), "pc-cond:80");
    not_reaches(out_b.ns(), sa(HOST4B, 8080), "pc-cond:80");
    // The host's own traffic does not come from 198.51.100.2 either
    // (conditions apply in output too).
    not_reaches(lab.host(), sa(HOST4, 8080), "pc-cond:80");
    // No conditionsV6: IPv6 stays open.
    reaches(out_a.ns(), sa(HOST6, 8080), "pc-cond:80");
    // The plain mapping beside it: everyone.
    reaches(out_a.ns(), sa(HOST4, 8081), "pc-plain:80");
    reaches(out_b.ns(), sa(HOST4B, 8081), "pc-plain:80");
    reaches(lab.host(), sa(HOST4, 8081), "pc-plain:80");
    let chains = cond_chains(&lab);
    assert_eq!(chains.len(), 1, "{chains:?}");
    let listed = nft(&lab, &["list", "chain", "inet", "rnet", &chains[0]]);
    assert!(
        listed.contains("198.51.100.2")
            && listed.contains("10.78.0.0/24")
            && listed.contains("goto pm_cdnat4"),
        "{listed}"
    );
    ipt.check(&cc, maps.clone()).unwrap();

    // A second container with the same conditions shares the chain; its DEL
    // leaves the chain to the first.
    let cc2 = lab.add_container("pc-cond2").unwrap();
    ipt.add(&cc2, json!([{"hostPort": 8083, "containerPort": 80}]));
    let _sc2 = serve(&cc2, 80, false);
    reaches(out_a.ns(), sa(HOST4, 8083), "pc-cond2:80");
    not_reaches(out_b.ns(), sa(HOST4B, 8083), "pc-cond2:80");
    // Containers go through the same conditions: a neighbour on pmcond's
    // bridge (10.78.0.0/24) gets in through the host's address, a container
    // of pmnet (10.77.0.0/24) does not, yet reaches the plain port.
    reaches(cc2.ns(), sa(HOST4, 8080), "pc-cond:80");
    not_reaches(cp.ns(), sa(HOST4, 8080), "pc-cond:80");
    reaches(cc2.ns(), sa(HOST4, 8081), "pc-plain:80");
    assert_eq!(cond_chains(&lab), chains);
    ipt.del(&cc2, json!([{"hostPort": 8083, "containerPort": 80}]));
    assert_eq!(cond_chains(&lab), chains);

    // A conditioned port is claimed like any other: the plain network
    // cannot take it (error 120), and the conditioned one cannot take the
    // plain one's.
    let cx = lab.add_container("pc-x").unwrap();
    let e = plain.try_add(&cx, maps.clone()).unwrap_err();
    assert_eq!(e.code, 120, "{e:?}");
    plain.del(&cx, maps.clone());
    let e = ipt
        .try_add(&cx, json!([{"hostPort": 8081, "containerPort": 80}]))
        .unwrap_err();
    assert_eq!(e.code, 120, "{e:?}");
    ipt.del(&cx, json!([{"hostPort": 8081, "containerPort": 80}]));
    assert_eq!(cond_chains(&lab), chains);

    // Firewall reload: flush, then `rnet reload` puts the chain back: the
    // port is still conditioned (not open to everyone).
    nft(&lab, &["flush", "ruleset"]);
    let mut n = rnet_nft::Nft::in_netns(lab.host()).unwrap();
    rnet_nft::rnet::reload(&mut n, &root).unwrap();
    assert_eq!(cond_chains(&lab), chains);
    reaches(out_a.ns(), sa(HOST4, 8080), "pc-cond:80");
    not_reaches(out_b.ns(), sa(HOST4B, 8080), "pc-cond:80");
    reaches(out_b.ns(), sa(HOST4B, 8081), "pc-plain:80");

    // DEL of the last user: the chain and its record go; the port is closed,
    // the plain one still open to everyone.
    ipt.del(&cc, maps.clone());
    assert!(cond_chains(&lab).is_empty());
    assert!(rnet_nft::rnet::cond::records(&root).is_empty());
    not_reaches(out_a.ns(), sa(HOST4, 8080), "pc-cond:80");
    reaches(out_b.ns(), sa(HOST4B, 8081), "pc-plain:80");

    // nft form (backend nftables), now only B; IPv6 conditions of their own
    // shut A out over IPv6.
    let nf = Net::named(
        &lab,
        "pmcond",
        "pmc0",
        "10.78.0",
        "fd78",
        json!({
            "backend": "nftables",
            "conditionsV4": ["ip saddr 198.51.101.0/24", "iifname \"uplink1\""],
            "conditionsV6": ["ip6 saddr != fd00:198:51:100::2"],
        }),
    );
    nf.add(&cc, maps.clone());
    reaches(out_b.ns(), sa(HOST4B, 8080), "pc-cond:80");
    not_reaches(out_a.ns(), sa(HOST4, 8080), "pc-cond:80");
    not_reaches(out_a.ns(), sa(HOST6, 8080), "pc-cond:80");
    reaches(out_a.ns(), sa(HOST4, 8081), "pc-plain:80");
    assert_eq!(cond_chains(&lab).len(), 2);
    nf.check(&cc, maps.clone()).unwrap();
    // CHECK notices a removed condition element.
    nft(&lab, &["flush", "map", "inet", "rnet", "pm_cond4"]);
    assert!(nf.check(&cc, maps.clone()).is_err());
    // A bad condition is error 7 naming the token, nothing installed.
    let bad = Net::named(
        &lab,
        "pmcond",
        "pmc0",
        "10.78.0",
        "fd78",
        json!({"backend": "nftables", "conditionsV4": ["ip saddr 1.2.3.4 accept"]}),
    );
    let cy = lab.add_container("pc-y").unwrap();
    let e = bad
        .try_add(&cy, json!([{"hostPort": 8090, "containerPort": 80}]))
        .unwrap_err();
    assert_eq!(e.code, 7, "{e:?}");
    assert!(e.msg.contains("accept"), "{}", e.msg);
    nf.del(&cc, maps);
    plain.del(&cp, json!([{"hostPort": 8081, "containerPort": 80}]));
    assert!(cond_chains(&lab).is_empty());
    assert!(rnet_nft::rnet::cond::records(&root).is_empty());
}

/// The base chains of rnet's filter features in the lab host's ruleset
/// (`table FAMILY rnet` / chain), sorted.
fn filter_chains(lab: &Lab) -> Vec<String> {
    let text = nft(lab, &["list", "chains"]);
    let (mut table, mut chain, mut out) = (String::new(), String::new(), Vec::new());
    for line in text.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix("table ") {
            table = t.trim_end_matches(" {").to_owned();
        } else if let Some(c) = line.strip_prefix("chain ") {
            chain = c.trim_end_matches(" {").to_owned();
        } else if line.starts_with("type filter") && table.ends_with(" rnet") {
            out.push(format!("{table}/{chain}"));
        }
    }
    out.sort();
    out
}

/// A filter chain runs for every packet on its hook (bridged frames too
/// with `br_netfilter`), so rnet's exist only while a feature uses them:
/// none for a network without published ports, isolation or spoof check;
/// the port mapper's guards from the first mapping on; the published-address
/// guard until GC after the last mapping, the 127.0.0.0/8 guard as long as
/// the bridge it protects (whose `route_localnet` stays on); isolation and
/// spoof check alike.
#[test]
fn filter_chains_exist_only_while_used() {
    let lab = lab();
    let _out = outside(&lab);
    let mut net = Net::new(&lab, json!({}));
    // GC reaches the plugins from CNI 1.1.0 on.
    net.list.version = rnet_cni::Version::V1_1_0;
    let a = lab.add_container("fc-a").unwrap();
    net.add(&a, json!([]));
    assert!(filter_chains(&lab).is_empty(), "{:?}", filter_chains(&lab));
    assert!(nft(&lab, &["list", "ruleset"]).contains("masquerade"));

    let b = lab.add_container("fc-b").unwrap();
    let maps = json!([{"hostPort": 8080, "containerPort": 80}]);
    net.add(&b, maps.clone());
    assert_eq!(
        filter_chains(&lab),
        ["inet rnet/pm_guard", "inet rnet/pm_raw"]
    );
    // CHECK notices a guard deleted by hand; the next ADD that publishes a
    // port puts it back.
    nft(&lab, &["delete", "chain", "inet", "rnet", "pm_guard"]);
    let err = net.check(&b, maps.clone()).unwrap_err();
    assert!(format!("{err:?}").contains("pm_guard"), "{err:?}");
    let d = lab.add_container("fc-d").unwrap();
    let maps_d = json!([{"hostPort": 8081, "containerPort": 80}]);
    net.add(&d, maps_d.clone());
    net.check(&b, maps.clone()).unwrap();
    net.del(&d, maps_d);
    let mut iso = Net::named(&lab, "isonet", "iso0", "10.78.0", "fd78", json!({}));
    iso.list.plugins[0].insert("isolation".into(), json!(true));
    iso.list.plugins[0].insert("macspoofchk".into(), json!(true));
    iso.list.version = rnet_cni::Version::V1_1_0;
    let c = lab.add_container("fc-c").unwrap();
    iso.add(&c, json!([]));
    assert_eq!(
        filter_chains(&lab),
        [
            "bridge rnet/prerouting",
            "inet rnet/forward",
            "inet rnet/pm_guard",
            "inet rnet/pm_raw"
        ]
    );

    // DEL leaves them to GC; GC removes what nobody uses any more.
    net.del(&b, maps);
    iso.del(&c, json!([]));
    assert_eq!(filter_chains(&lab).len(), 4);
    let valid = vec![rnet_cni::Attachment {
        container_id: "fc-a".into(),
        ifname: "eth0".into(),
    }];
    let gc = lab.host().run(|| net.rt.gc(&net.list, &valid)).unwrap();
    assert!(gc.is_ok(), "{gc:?}");
    let gc = lab.host().run(|| iso.rt.gc(&iso.list, &[])).unwrap();
    assert!(gc.is_ok(), "{gc:?}");
    // iso0 still exists and stays isolated; pm0 keeps route_localnet.
    assert_eq!(
        filter_chains(&lab),
        ["inet rnet/forward", "inet rnet/pm_raw"]
    );
    assert_eq!(
        netns_fixtures::read_sysctl(lab.host(), "net/ipv4/conf/pm0/route_localnet").unwrap(),
        "1"
    );

    // With the bridges gone, nothing is left.
    net.del(&a, json!([]));
    let mut nl = lab.netlink().unwrap();
    for br in ["pm0", "iso0"] {
        assert!(nl.link_del_by_name(br).unwrap(), "{br}");
    }
    let gc = lab.host().run(|| net.rt.gc(&net.list, &[])).unwrap();
    assert!(gc.is_ok(), "{gc:?}");
    assert!(filter_chains(&lab).is_empty(), "{:?}", filter_chains(&lab));
    assert!(nft(&lab, &["list", "ruleset"]).contains("masquerade"));
}

/// `route_localnet` stays on a bridge after its last published port goes,
/// so its 127.0.0.0/8 guard must too, also through a firewall reload: the
/// restore after `nft flush ruleset` brings `pm_raw` back from the bridge's
/// own record when no container with published ports is left; GC forgets
/// the record with the bridge.
#[test]
fn localhost_guard_survives_a_flush_after_the_last_mapping() {
    let lab = lab();
    let _out = outside(&lab);
    let mut net = Net::new(&lab, json!({}));
    net.list.version = rnet_cni::Version::V1_1_0;
    let a = lab.add_container("lg-a").unwrap();
    let maps = json!([{"hostPort": 8080, "containerPort": 80}]);
    net.add(&a, maps.clone());
    net.del(&a, maps);
    assert_eq!(
        netns_fixtures::read_sysctl(lab.host(), "net/ipv4/conf/pm0/route_localnet").unwrap(),
        "1"
    );
    nft(&lab, &["flush", "ruleset"]);
    // The next plugin call restores rnet's tables.
    let b = lab.add_container("lg-b").unwrap();
    net.add(&b, json!([]));
    assert!(
        filter_chains(&lab).contains(&"inet rnet/pm_raw".to_owned()),
        "{:?}\n{}\n{:?}",
        filter_chains(&lab),
        nft(&lab, &["list", "ruleset"]),
        std::fs::read_dir(lab.state_dir().join("rnet/nft"))
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
    );
    assert!(nft(&lab, &["list", "set", "inet", "rnet", "localnet"]).contains("\"pm0\""));
    // With the bridge gone, GC forgets it: no guard, no record.
    net.del(&b, json!([]));
    let mut nl = lab.netlink().unwrap();
    assert!(nl.link_del_by_name("pm0").unwrap());
    let gc = lab.host().run(|| net.rt.gc(&net.list, &[])).unwrap();
    assert!(gc.is_ok(), "{gc:?}");
    assert!(filter_chains(&lab).is_empty(), "{:?}", filter_chains(&lab));
    let records = lab.state_dir().join("rnet/nft/localnet");
    let left: Vec<_> = std::fs::read_dir(&records)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
