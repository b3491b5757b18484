//! Kernel tests. They need root (CAP_SYS_ADMIN + CAP_NET_ADMIN) and FAIL,
//! loudly, without it. Every test makes its own unnamed network namespaces
//! (`NetNs::new_unnamed`, held by fd, gone when dropped, also on panic) and
//! opens its sockets inside them; nothing touches the machine's own namespace.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;

use rnet_netns::NetNs;

use crate::*;

fn netns() -> NetNs {
    NetNs::new_unnamed().unwrap_or_else(|e| {
        panic!(
            "cannot create a network namespace: {e}. These tests need root \
             (CAP_SYS_ADMIN, CAP_NET_ADMIN); run them as root, they never skip."
        )
    })
}

fn sock(ns: &NetNs) -> Netlink {
    Netlink::in_netns(ns).expect("netlink socket inside the test namespace")
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A veth pair with both ends in the socket's namespace, both up.
fn veth_pair(nl: &mut Netlink, a: &str, b: &str, master: Option<u32>) -> u32 {
    let idx = nl
        .create_veth(&VethSpec {
            name: a,
            peer_name: b,
            master,
            up: true,
            ..Default::default()
        })
        .unwrap();
    let peer = nl.link_by_name(b).unwrap().unwrap();
    assert_eq!(peer.peer_index, Some(idx));
    nl.link_set_up(peer.index).unwrap();
    idx
}

#[test]
fn loopback_up_and_lookups() {
    let ns = netns();
    let mut nl = sock(&ns);
    let lo = nl.link_by_name("lo").unwrap().expect("lo exists");
    assert_eq!(lo.index, 1);
    assert!(!lo.up, "a fresh namespace has lo down");
    assert!(lo.flags & IFF_LOOPBACK != 0);
    assert_eq!(lo.kind, None);
    nl.link_set_up(lo.index).unwrap();
    let lo2 = nl.link_by_index(lo.index).unwrap().unwrap();
    assert!(lo2.up && lo2.name == "lo");
    let addrs = nl.addr_list(Some(lo.index), None).unwrap();
    assert!(
        addrs
            .iter()
            .any(|a| a.addr == net("127.0.0.1/8") && a.scope == Scope::Host),
        "{addrs:?}"
    );
    assert_eq!(nl.link_by_name("nothere0").unwrap(), None);
    assert_eq!(nl.link_by_index(4242).unwrap(), None);
    assert!(nl.link_by_name("waytoolongname123").is_err());
    let links = nl.link_list().unwrap();
    assert_eq!(links.len(), 1, "{links:?}");
    nl.link_set_down(lo.index).unwrap();
    assert!(!nl.link_by_index(1).unwrap().unwrap().up);
}

#[test]
fn socket_from_inside_the_namespace() {
    let ns = netns();
    let links = ns
        .run(|| Netlink::new().and_then(|mut n| n.link_list()))
        .unwrap()
        .unwrap();
    assert_eq!(
        links.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
        ["lo"]
    );
}

#[test]
fn bridge_create_exists_delete() {
    let ns = netns();
    let mut nl = sock(&ns);
    let mac = [0x02, 0, 0, 0, 0xbb, 0x01];
    let opts = BridgeOpts {
        mtu: Some(1400),
        mac: Some(mac),
        up: true,
        mcast_snooping: Some(false),
        ..Default::default()
    };
    let idx = nl.create_bridge("br0", &opts).unwrap();
    let br = nl.link_by_index(idx).unwrap().unwrap();
    assert_eq!(br.name, "br0");
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert_eq!(br.mtu, 1400);
    assert_eq!(br.mac, Some(mac));
    assert!(br.up);
    assert_eq!(br.mcast_snooping, Some(false));

    let err = nl.create_bridge("br0", &opts).unwrap_err();
    assert!(err.is_exists(), "{err}");
    assert!(err.to_string().contains("br0"), "{err}");

    assert!(nl.link_list().unwrap().iter().any(|l| l.index == idx));
    nl.link_del(idx).unwrap();
    let err = nl.link_del(idx).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(!nl.link_del_by_name("br0").unwrap());
    let idx = nl.create_bridge("br0", &BridgeOpts::default()).unwrap();
    let br = nl.link_by_index(idx).unwrap().unwrap();
    assert!(!br.up);
    assert_eq!(br.mcast_snooping, Some(true), "the kernel's default");
    assert_eq!(nl.link_by_name("lo").unwrap().unwrap().mcast_snooping, None);
    assert!(nl.link_del_by_name("br0").unwrap());
    assert_eq!(nl.link_by_name("br0").unwrap(), None);
}

#[test]
fn veth_peer_straight_into_container_ns() {
    let host = netns();
    let ctr = netns();
    let mut h = sock(&host);
    let mut c = sock(&ctr);
    let br = h
        .create_bridge(
            "cni0",
            &BridgeOpts {
                up: true,
                ..Default::default()
            },
        )
        .unwrap();
    let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    let peer_mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
    let spec = VethSpec {
        name: "vethabc",
        peer_name: "eth0",
        peer_ns: Some(&ctr),
        mtu: Some(1450),
        mac: Some(mac),
        peer_mac: Some(peer_mac),
        master: Some(br),
        up: true,
        alias: Some("ctr-1234/eth0"),
        host_no_ipv6_ll: false,
    };
    let t = std::time::Instant::now();
    let (idx, peer_idx) = h.create_veth_pair(&spec).unwrap();
    eprintln!("create_veth (with alias): {:?}", t.elapsed());

    let hv = h.link_by_index(idx).unwrap().unwrap();
    assert_eq!(hv.name, "vethabc");
    assert_eq!(hv.kind.as_deref(), Some("veth"));
    assert_eq!(hv.mac, Some(mac));
    assert_eq!(hv.mtu, 1450);
    assert_eq!(hv.master, Some(br));
    assert!(hv.up);
    assert_eq!(hv.alias.as_deref(), Some("ctr-1234/eth0"));
    assert!(hv.link_netnsid.is_some(), "peer lives in another namespace");
    // One queue each way on both ends, not one per possible CPU.
    assert_eq!(hv.queues, (Some(1), Some(1)));
    assert_eq!(
        c.link_by_index(peer_idx.unwrap()).unwrap().unwrap().queues,
        (Some(1), Some(1))
    );
    assert_eq!(
        h.link_by_name("eth0").unwrap(),
        None,
        "peer is not on the host"
    );

    let cv = c
        .link_by_name("eth0")
        .unwrap()
        .expect("eth0 in the container");
    assert_eq!(cv.kind.as_deref(), Some("veth"));
    assert_eq!(cv.mac, Some(peer_mac));
    assert_eq!(cv.mtu, 1450);
    assert!(!cv.up);
    assert_eq!(cv.master, None);
    assert_eq!(cv.peer_index, Some(idx));
    assert_eq!(hv.peer_index, Some(cv.index));
    assert_eq!(peer_idx, Some(cv.index), "the echo names the peer's index");

    // Same names again: EEXIST, typed.
    let err = h.create_veth(&spec).unwrap_err();
    assert!(err.is_exists(), "{err}");
    // Host name free but peer name taken in the container: also EEXIST.
    let err = h
        .create_veth(&VethSpec {
            name: "vethdef",
            ..spec
        })
        .unwrap_err();
    assert!(err.is_exists(), "{err}");
    assert_eq!(h.link_by_name("vethdef").unwrap(), None);

    // Retiring: down and renamed (a rename of an up link is refused).
    c.link_set_up(cv.index).unwrap();
    let t = std::time::Instant::now();
    c.link_retire(cv.index, "rnetdel1").unwrap();
    eprintln!("link_retire: {:?}", t.elapsed());
    assert_eq!(c.link_by_name("eth0").unwrap(), None);
    let cv = c.link_by_index(cv.index).unwrap().unwrap();
    assert_eq!(cv.name, "rnetdel1");
    assert!(!cv.up);
    assert_eq!(h.link_by_name("rnetdel1").unwrap(), None, "not on the host");

    // One end gone = both gone.
    h.link_del(idx).unwrap();
    assert_eq!(c.link_by_name("rnetdel1").unwrap(), None);
    assert!(c.link_retire(cv.index, "x").unwrap_err().is_not_found());
}

#[test]
fn link_setters() {
    let ns = netns();
    let mut nl = sock(&ns);
    let a = veth_pair(&mut nl, "va", "vb", None);
    let br = nl.create_bridge("br9", &BridgeOpts::default()).unwrap();
    nl.link_set_mtu(a, 1300).unwrap();
    nl.link_set_mac(a, [0x02, 1, 2, 3, 4, 5]).unwrap();
    nl.link_set_txqlen(a, 77).unwrap();
    nl.link_set_promisc(a, true).unwrap();
    nl.link_set_allmulti(a, true).unwrap();
    nl.link_set_master(a, Some(br)).unwrap();
    nl.link_set_alias(a, "x/y").unwrap();
    let l = nl.link_by_index(a).unwrap().unwrap();
    assert_eq!(l.mtu, 1300);
    assert_eq!(l.mac, Some([0x02, 1, 2, 3, 4, 5]));
    assert_eq!(l.txqlen, Some(77));
    assert!(l.promisc() && l.allmulti());
    assert_eq!(l.master, Some(br));
    assert_eq!(l.alias.as_deref(), Some("x/y"));

    nl.link_set_promisc(a, false).unwrap();
    nl.link_set_allmulti(a, false).unwrap();
    nl.link_set_master(a, None).unwrap();
    nl.link_set_alias(a, "").unwrap();
    // Renaming an up link: EBUSY on older kernels; down first always works.
    nl.link_set_down(a).unwrap();
    nl.link_set_name(a, "renamed0").unwrap();
    let l = nl.link_by_index(a).unwrap().unwrap();
    assert_eq!(l.name, "renamed0");
    assert!(!l.promisc() && !l.allmulti() && !l.up);
    assert_eq!(l.master, None);
    assert_eq!(l.alias, None);
    // Rename onto an existing name.
    let err = nl.link_set_name(a, "vb").unwrap_err();
    assert!(err.is_exists() || err.is_busy(), "{err}");
    let err = nl.link_set_mtu(9999, 1500).unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[test]
fn addresses_v4_v6() {
    let ns = netns();
    let mut nl = sock(&ns);
    let a = veth_pair(&mut nl, "va", "vb", None);
    nl.addr_add(a, net("10.10.0.1/24")).unwrap();
    nl.addr_add_opts(a, net("fd00:10::1/64"), true).unwrap();
    let err = nl.addr_add(a, net("10.10.0.1/24")).unwrap_err();
    assert!(err.is_exists(), "{err}");
    assert!(err.to_string().contains("10.10.0.1/24"), "{err}");

    let v4 = nl.addr_list(Some(a), Some(Family::V4)).unwrap();
    assert_eq!(v4.len(), 1, "{v4:?}");
    assert_eq!(v4[0].addr, net("10.10.0.1/24"));
    assert_eq!(v4[0].index, a);
    assert!(v4[0].is_permanent());
    let v6 = nl.addr_list(Some(a), Some(Family::V6)).unwrap();
    let ours = v6
        .iter()
        .find(|x| x.addr == net("fd00:10::1/64"))
        .unwrap_or_else(|| panic!("{v6:?}"));
    assert!(ours.is_nodad() && !ours.is_tentative() && ours.is_permanent());
    assert_eq!(ours.scope, Scope::Universe);
    // Unfiltered listing has lo's and ours.
    let all = nl.addr_list(None, None).unwrap();
    assert!(all.iter().any(|x| x.index == a));
    assert!(
        all.iter()
            .all(|x| x.index == a || x.index == 1 || x.index != 0)
    );

    nl.addr_del(a, net("10.10.0.1/24")).unwrap();
    nl.addr_del(a, net("fd00:10::1/64")).unwrap();
    assert!(nl.addr_list(Some(a), Some(Family::V4)).unwrap().is_empty());
    assert!(
        !nl.addr_list(Some(a), Some(Family::V6))
            .unwrap()
            .iter()
            .any(|x| x.addr == net("fd00:10::1/64"))
    );
    let err = nl.addr_del(a, net("10.10.0.1/24")).unwrap_err();
    assert!(err.is_addr_not_avail(), "{err}");
    let err = nl.addr_add(4242, net("10.0.0.1/8")).unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[test]
fn routes_v4_v6() {
    let ns = netns();
    let mut nl = sock(&ns);
    let a = veth_pair(&mut nl, "va", "vb", None);
    nl.addr_add(a, net("10.20.0.1/24")).unwrap();
    nl.addr_add_opts(a, net("fd00:20::1/64"), true).unwrap();

    let mut r = RouteSpec::new(net("10.30.0.0/16"));
    r.gateway = Some(ip("10.20.0.254"));
    nl.route_add(&r).unwrap();
    let err = nl.route_add(&r).unwrap_err();
    assert!(err.is_exists(), "{err}");
    r.replace = true;
    nl.route_add(&r).unwrap();

    let mut d = RouteSpec::default_via(ip("10.20.0.254"));
    d.metric = Some(100);
    d.mtu = Some(1400);
    d.advmss = Some(1360);
    nl.route_add(&d).unwrap();

    let mut direct = RouteSpec::new(net("192.168.77.0/24"));
    direct.oif = Some(a);
    direct.table = Some(1000);
    nl.route_add(&direct).unwrap();

    let main = nl.route_list(Family::V4, Some(RT_TABLE_MAIN)).unwrap();
    let r1 = main
        .iter()
        .find(|x| x.dst == net("10.30.0.0/16"))
        .unwrap_or_else(|| panic!("{main:?}"));
    assert_eq!(r1.gateway, Some(ip("10.20.0.254")));
    assert_eq!(r1.oif, Some(a));
    assert_eq!(r1.protocol, RTPROT_BOOT);
    assert_eq!(r1.kind, RouteType::Unicast);
    let def = main
        .iter()
        .find(|x| x.is_default())
        .unwrap_or_else(|| panic!("{main:?}"));
    assert_eq!(def.gateway, Some(ip("10.20.0.254")));
    assert_eq!(def.metric, Some(100));
    assert_eq!(def.mtu, Some(1400));
    assert_eq!(def.advmss, Some(1360));
    assert!(main.iter().any(|x| x.dst == net("10.20.0.0/24")
        && x.protocol == RTPROT_KERNEL
        && x.scope == Scope::Link));
    assert!(main.iter().all(|x| x.table == RT_TABLE_MAIN));
    let t1000 = nl.route_list(Family::V4, Some(1000)).unwrap();
    assert_eq!(t1000.len(), 1, "{t1000:?}");
    assert_eq!(t1000[0].scope, Scope::Link);
    assert_eq!(t1000[0].table, 1000);
    let all = nl.route_list(Family::V4, None).unwrap();
    assert!(
        all.iter()
            .any(|x| x.table == RT_TABLE_LOCAL && x.kind == RouteType::Local)
    );

    // IPv6 default via a gateway.
    let d6 = RouteSpec::default_via(ip("fd00:20::fe"));
    nl.route_add(&d6).unwrap();
    let v6 = nl.route_list(Family::V6, Some(RT_TABLE_MAIN)).unwrap();
    assert!(
        v6.iter()
            .any(|x| x.is_default() && x.gateway == Some(ip("fd00:20::fe")) && x.oif == Some(a)),
        "{v6:?}"
    );

    // Delete; a second delete is a typed not-found.
    for spec in [&r, &d, &direct, &d6] {
        nl.route_del(spec).unwrap();
        let err = nl.route_del(spec).unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }
    let main = nl.route_list(Family::V4, Some(RT_TABLE_MAIN)).unwrap();
    assert!(
        !main
            .iter()
            .any(|x| x.is_default() || x.dst == net("10.30.0.0/16"))
    );

    // Unreachable gateway: the kernel's extack text shows up in the context.
    let bad = RouteSpec::default_via(ip("10.99.0.1"));
    let err = nl.route_add(&bad).unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENETUNREACH), "{err}");
    assert!(
        err.to_string()
            .contains("adding route 0.0.0.0/0 via 10.99.0.1"),
        "{err}"
    );
    eprintln!("extack example: {err}");
}

#[test]
fn bridge_port_flags_read_back() {
    let ns = netns();
    let mut nl = sock(&ns);
    let br = nl
        .create_bridge(
            "br0",
            &BridgeOpts {
                up: true,
                ..Default::default()
            },
        )
        .unwrap();
    let p = veth_pair(&mut nl, "vp", "vq", Some(br));
    let before = nl.bridge_port_get(p).unwrap().expect("vp is a bridge port");
    assert_eq!(before.master, Some(br));
    assert_eq!(before.hairpin, Some(false));
    assert_eq!(before.isolated, Some(false));
    assert_eq!(before.learning, Some(true));

    nl.bridge_port_set(
        p,
        &BridgePortOpts {
            hairpin: Some(true),
            isolated: Some(true),
            learning: Some(false),
        },
    )
    .unwrap();
    let after = nl.bridge_port_get(p).unwrap().unwrap();
    assert_eq!(after.hairpin, Some(true));
    assert_eq!(after.isolated, Some(true));
    assert_eq!(after.learning, Some(false));

    nl.bridge_port_set(
        p,
        &BridgePortOpts {
            hairpin: Some(false),
            ..Default::default()
        },
    )
    .unwrap();
    let again = nl.bridge_port_get(p).unwrap().unwrap();
    assert_eq!(again.hairpin, Some(false));
    assert_eq!(again.isolated, Some(true), "untouched option stays");

    let ports = nl.bridge_port_list().unwrap();
    assert_eq!(ports.len(), 1, "{ports:?}");
    // Not a port: None from get, an error from set.
    let q = nl.link_by_name("vq").unwrap().unwrap().index;
    assert_eq!(nl.bridge_port_get(q).unwrap(), None);
    assert!(
        nl.bridge_port_set(
            q,
            &BridgePortOpts {
                hairpin: Some(true),
                ..Default::default()
            }
        )
        .is_err()
    );
}

#[test]
fn vlans_on_filtering_bridge() {
    let ns = netns();
    let mut nl = sock(&ns);
    let filtering = BridgeOpts {
        vlan_filtering: Some(true),
        up: true,
        ..Default::default()
    };
    let br = match nl.create_bridge("brv", &filtering) {
        Ok(br) => br,
        Err(e) if e.errno() == Some(libc::EOPNOTSUPP) => {
            // Kernel built without CONFIG_BRIDGE_VLAN_FILTERING: say so loudly,
            // and still check what can be checked: the VLAN requests reach the
            // kernel and come back as a typed EOPNOTSUPP naming the operation.
            // (Their wire format is covered by the golden tests in link.rs.)
            eprintln!(
                "WARNING: this kernel lacks CONFIG_BRIDGE_VLAN_FILTERING ({e}); \
                 VLAN behaviour is NOT verified against the kernel here"
            );
            let br = nl
                .create_bridge(
                    "brv",
                    &BridgeOpts {
                        up: true,
                        ..Default::default()
                    },
                )
                .unwrap();
            let p = veth_pair(&mut nl, "vp", "vq", Some(br));
            let err = nl.bridge_vlan_add(p, 100, true, true, false).unwrap_err();
            assert_eq!(err.errno(), Some(libc::EOPNOTSUPP), "{err}");
            assert!(
                err.to_string().contains("adding VLAN 100 pvid untagged"),
                "{err}"
            );
            let err = nl.bridge_vlan_add_range(p, 200, 203).unwrap_err();
            assert_eq!(err.errno(), Some(libc::EOPNOTSUPP), "{err}");
            assert_eq!(nl.bridge_vlan_list(p).unwrap(), vec![]);
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let p = veth_pair(&mut nl, "vp", "vq", Some(br));
    let vids = |v: &[BridgeVlan]| v.iter().map(|x| x.vid).collect::<Vec<_>>();

    let initial = nl.bridge_vlan_list(p).unwrap();
    assert_eq!(
        initial,
        vec![BridgeVlan {
            vid: 1,
            pvid: true,
            untagged: true
        }],
        "default PVID 1"
    );
    nl.bridge_vlan_add(p, 100, true, true, false).unwrap();
    nl.bridge_vlan_add_range(p, 200, 203).unwrap();
    let v = nl.bridge_vlan_list(p).unwrap();
    assert_eq!(vids(&v), vec![1, 100, 200, 201, 202, 203], "{v:?}");
    let v100 = v.iter().find(|x| x.vid == 100).unwrap();
    assert!(v100.pvid && v100.untagged);
    assert!(
        !v.iter().find(|x| x.vid == 1).unwrap().pvid,
        "PVID moved to 100"
    );
    assert!(
        v.iter()
            .filter(|x| x.vid >= 200)
            .all(|x| !x.pvid && !x.untagged)
    );

    nl.bridge_vlan_del(p, 100, false).unwrap();
    nl.bridge_vlan_del(p, 1, false).unwrap();
    assert_eq!(
        vids(&nl.bridge_vlan_list(p).unwrap()),
        vec![200, 201, 202, 203]
    );

    // On the bridge device itself.
    nl.bridge_vlan_add(br, 100, false, false, true).unwrap();
    assert!(vids(&nl.bridge_vlan_list(br).unwrap()).contains(&100));
    nl.bridge_vlan_del(br, 100, true).unwrap();
    assert!(!vids(&nl.bridge_vlan_list(br).unwrap()).contains(&100));
}

#[test]
fn vlan_argument_checks() {
    let ns = netns();
    let mut nl = sock(&ns);
    assert!(matches!(
        nl.bridge_vlan_add(1, 4095, false, false, false),
        Err(NetlinkError::InvalidArgument(_))
    ));
    assert!(matches!(
        nl.bridge_vlan_add_range(1, 10, 5),
        Err(NetlinkError::InvalidArgument(_))
    ));
    assert!(matches!(
        nl.bridge_vlan_del(1, 0, false),
        Err(NetlinkError::InvalidArgument(_))
    ));
}

#[test]
fn multipart_dump_of_many_links() {
    let ns = netns();
    let mut nl = sock(&ns);
    for i in 0..60 {
        veth_pair(&mut nl, &format!("va{i}"), &format!("vb{i}"), None);
    }
    let t = std::time::Instant::now();
    let links = nl.link_list().unwrap();
    eprintln!("link_list of {} links: {:?}", links.len(), t.elapsed());
    assert_eq!(links.len(), 121);
    let mut idx: Vec<u32> = links.iter().map(|l| l.index).collect();
    idx.sort_unstable();
    idx.dedup();
    assert_eq!(idx.len(), 121, "no duplicates across dump parts");
    for i in 0..60 {
        let a = links.iter().find(|l| l.name == format!("va{i}")).unwrap();
        let b = links.iter().find(|l| l.name == format!("vb{i}")).unwrap();
        assert_eq!(a.peer_index, Some(b.index));
        assert_eq!(a.link_netnsid, None, "same namespace");
    }
}

#[test]
fn sysctl_inside_namespace() {
    let ns = netns();
    let root_before = sysctl_get("net.ipv4.ip_forward").unwrap();
    let (before, after) = ns
        .run(|| {
            let before = sysctl_get("net.ipv4.ip_forward")?;
            let want = if before == "1" { "0" } else { "1" };
            sysctl_set("net.ipv4.ip_forward", want)?;
            Ok::<_, NetlinkError>((before, sysctl_get("net.ipv4.ip_forward")?))
        })
        .unwrap()
        .unwrap();
    assert_ne!(before, after);
    assert_eq!(
        sysctl_get("net.ipv4.ip_forward").unwrap(),
        root_before,
        "the machine's namespace is untouched"
    );
    let err = ns
        .run(|| sysctl_get("net.ipv4.conf.nosuchif0.forwarding"))
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, NetlinkError::Sysctl { .. }), "{err}");
}

#[test]
fn request_timing_smoke() {
    let ns = netns();
    let ctr = netns();
    let t = std::time::Instant::now();
    let mut h = sock(&ns);
    let mut c = sock(&ctr);
    let opened = t.elapsed();
    let t = std::time::Instant::now();
    let br = h
        .create_bridge(
            "cni0",
            &BridgeOpts {
                up: true,
                ..Default::default()
            },
        )
        .unwrap();
    let idx = h
        .create_veth(&VethSpec {
            name: "veth0",
            peer_name: "eth0",
            peer_ns: Some(&ctr),
            master: Some(br),
            up: true,
            ..Default::default()
        })
        .unwrap();
    let eth0 = c.link_by_name("eth0").unwrap().unwrap().index;
    c.addr_add_opts(eth0, net("10.88.0.2/16"), true).unwrap();
    c.link_set_up(eth0).unwrap();
    c.link_set_up(1).unwrap();
    c.route_add(&RouteSpec::default_via(ip("10.88.0.1")))
        .unwrap();
    eprintln!(
        "2 sockets via fresh threads: {opened:?}; bridge+veth+addr+up+route: {:?}",
        t.elapsed()
    );
    assert!(idx > 0);
}

#[test]
fn dump_survives_concurrent_changes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let ns = netns();
    let mut nl = sock(&ns);
    for i in 0..150 {
        nl.create_veth(&VethSpec {
            name: &format!("sa{i}"),
            peer_name: &format!("sb{i}"),
            ..Default::default()
        })
        .unwrap();
    }
    let stop = AtomicBool::new(false);
    let (ok, interrupted) = std::thread::scope(|s| {
        let churn = s.spawn(|| {
            let mut c = sock(&ns);
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let idx = c
                    .create_veth(&VethSpec {
                        name: "churn0",
                        peer_name: "churn1",
                        ..Default::default()
                    })
                    .unwrap();
                c.link_del(idx).unwrap();
                n += 1;
                std::thread::sleep(std::time::Duration::from_micros(500));
            }
            n
        });
        let (mut ok, mut interrupted) = (0u32, 0u32);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while std::time::Instant::now() < deadline && (nl.dump_retries() == 0 || ok < 5) {
            match nl.link_list() {
                Ok(links) => {
                    ok += 1;
                    let mut idx: Vec<u32> = links.iter().map(|l| l.index).collect();
                    idx.sort_unstable();
                    let n = idx.len();
                    idx.dedup();
                    assert_eq!(idx.len(), n, "a retried dump must not mix attempts");
                    let stable = links.iter().filter(|l| l.name.starts_with('s')).count();
                    assert_eq!(stable, 300);
                }
                Err(NetlinkError::DumpInterrupted { attempts, .. }) => {
                    assert_eq!(attempts, 5);
                    interrupted += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        let changes = churn.join().unwrap();
        eprintln!(
            "{ok} dumps ok, {interrupted} gave up, {} restarts, {changes} concurrent changes",
            nl.dump_retries()
        );
        (ok, interrupted)
    });
    assert!(
        nl.dump_retries() > 0,
        "the churn never interrupted a dump; test did not exercise retries"
    );
    assert!(ok > 0, "no dump completed ({interrupted} gave up)");
}

#[test]
fn ip_conf_through_netlink_matches_proc_sys() {
    let ns = netns();
    let mut nl = sock(&ns);
    let a = veth_pair(&mut nl, "ca", "cb", None);
    let sysctl = |k: &str| {
        let k = k.to_owned();
        ns.run(move || sysctl_get(&k)).unwrap().unwrap()
    };
    // Read: the values in RTM_NEWLINK are the ones /proc/sys shows.
    let l = nl.link_by_index(a).unwrap().unwrap();
    for (c, k) in [
        (Ipv4Conf::ArpNotify, "net.ipv4.conf.ca.arp_notify"),
        (Ipv4Conf::RouteLocalnet, "net.ipv4.conf.ca.route_localnet"),
        (Ipv4Conf::Forwarding, "net.ipv4.conf.ca.forwarding"),
    ] {
        assert_eq!(l.ip.v4(c).map(|v| v.to_string()), Some(sysctl(k)), "{k}");
    }
    for (c, k) in [
        (Ipv6Conf::AcceptDad, "net.ipv6.conf.ca.accept_dad"),
        (Ipv6Conf::DisableIpv6, "net.ipv6.conf.ca.disable_ipv6"),
        (
            Ipv6Conf::KeepAddrOnDown,
            "net.ipv6.conf.ca.keep_addr_on_down",
        ),
        (Ipv6Conf::AcceptRa, "net.ipv6.conf.ca.accept_ra"),
        (Ipv6Conf::EnhancedDad, "net.ipv6.conf.ca.enhanced_dad"),
    ] {
        assert_eq!(l.ip.v6(c).map(|v| v.to_string()), Some(sysctl(k)), "{k}");
    }
    assert_eq!(l.ip.addr_gen_mode(), Some(0));

    // Write: both IPv4 values in one request, seen by /proc/sys.
    nl.link_set_ipv4_conf(a, &[(Ipv4Conf::ArpNotify, 1), (Ipv4Conf::RouteLocalnet, 1)])
        .unwrap();
    assert_eq!(sysctl("net.ipv4.conf.ca.arp_notify"), "1");
    assert_eq!(sysctl("net.ipv4.conf.ca.route_localnet"), "1");
    assert_eq!(
        sysctl("net.ipv4.conf.cb.route_localnet"),
        "0",
        "only that link"
    );
    let l = nl.link_by_index(a).unwrap().unwrap();
    assert_eq!(l.ip.v4(Ipv4Conf::RouteLocalnet), Some(1));

    // No IPv6 address generation: a link brought up afterwards gets no
    // link-local address; its peer (left alone) does.
    let v = nl
        .create_veth(&VethSpec {
            name: "na",
            peer_name: "nb",
            ..Default::default()
        })
        .unwrap();
    let nb = nl.link_by_name("nb").unwrap().unwrap().index;
    nl.link_set_ip_conf(v, &[(Ipv4Conf::ArpNotify, 1)], true)
        .unwrap();
    assert_eq!(
        nl.link_by_index(v).unwrap().unwrap().ip.addr_gen_mode(),
        Some(1)
    );
    nl.link_set_up(v).unwrap();
    nl.link_set_up(nb).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while nl.addr_list(Some(nb), Some(Family::V6)).unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "nb never got its link-local address"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(nl.addr_list(Some(v), Some(Family::V6)).unwrap().is_empty());
    // The same through the veth request's own option, on the host side.
    nl.create_veth(&VethSpec {
        name: "ha",
        peer_name: "hb",
        alias: Some("x/y/eth0"),
        host_no_ipv6_ll: true,
        ..Default::default()
    })
    .unwrap();
    let ha = nl.link_by_name("ha").unwrap().unwrap();
    assert_eq!(ha.alias.as_deref(), Some("x/y/eth0"));
    assert_eq!(ha.ip.addr_gen_mode(), Some(1));

    // Namespace-wide forwarding, read with RTM_GETNETCONF.
    for (fam, key) in [
        (Family::V4, "net.ipv4.ip_forward"),
        (Family::V6, "net.ipv6.conf.all.forwarding"),
    ] {
        let before = nl.forwarding_all(fam).unwrap();
        assert_eq!(before, Some(sysctl(key) == "1"), "{key}");
        let want = if before == Some(true) { "0" } else { "1" };
        let k = key.to_owned();
        ns.run(move || sysctl_set(&k, want)).unwrap().unwrap();
        assert_eq!(nl.forwarding_all(fam).unwrap(), Some(want == "1"), "{key}");
    }
}
