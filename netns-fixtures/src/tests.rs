//! Lab tests: need root and namespaces, and fail loudly without them (every
//! test starts with `require_root().unwrap()`). Nothing here touches the
//! machine's own network namespace.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(3);

fn lab() -> Lab {
    require_root().unwrap();
    Lab::new().unwrap()
}

fn machine_id() -> rnet_netns::NsId {
    NetNs::open("/proc/self/ns/net").unwrap().id().unwrap()
}

#[test]
fn lab_is_isolated_and_leaves_nothing() {
    let lab = lab();
    let host_id = lab.host().id().unwrap();
    assert_ne!(host_id, machine_id());
    let state = lab.state_dir().to_path_buf();
    assert!(state.is_dir());
    let fd_path = lab.host().path();
    assert!(fd_path.exists());
    let fd = lab.host().as_raw_fd();

    // Loopback is up in the host: a TCP probe over 127.0.0.1 works.
    let srv = tcp_listen(lab.host(), "127.0.0.1:0".parse().unwrap()).unwrap();
    assert_eq!(
        tcp_connect(lab.host(), srv.addr(), T).unwrap(),
        srv.banner()
    );
    drop(srv);

    drop(lab);
    assert!(!state.exists(), "state dir must be removed on drop");
    // The fd is closed (or, if reused meanwhile, no longer our namespace).
    match NetNs::open(&fd_path) {
        Err(_) => {}
        Ok(ns) => assert_ne!(
            ns.id().unwrap(),
            host_id,
            "fd {fd} still holds the lab host"
        ),
    }
}

#[test]
fn container_lo_starts_down() {
    let lab = lab();
    let c = lab.add_container("c1").unwrap();
    assert_ne!(c.ns().id().unwrap(), lab.host().id().unwrap());
    assert!(c.netns_path().exists());
    let lo = c.netlink().unwrap().link_by_name("lo").unwrap().unwrap();
    assert!(!lo.up, "a fresh container's lo must be down");
    // With lo down, a TCP probe on loopback fails.
    assert!(
        tcp_listen(c.ns(), "127.0.0.1:0".parse().unwrap())
            .and_then(|s| tcp_connect(c.ns(), s.addr(), T))
            .is_err()
    );
    c.lo_up().unwrap();
    let srv = tcp_listen(c.ns(), "127.0.0.1:0".parse().unwrap()).unwrap();
    assert_eq!(tcp_connect(c.ns(), srv.addr(), T).unwrap(), srv.banner());
    ping(c.ns(), IpAddr::V4(Ipv4Addr::LOCALHOST), T).unwrap();
    ping(c.ns(), "::1".parse().unwrap(), T).unwrap();
}

#[test]
fn outside_connectivity() {
    let lab = lab();
    let out = lab.add_outside(OutsideConfig::default()).unwrap();
    let v6 = out.v6().unwrap();
    let host_v6 = out.host_v6().unwrap();

    ping(lab.host(), out.v4().into(), T).unwrap();
    ping(lab.host(), v6.into(), T).unwrap();
    ping(out.ns(), out.host_v4().into(), T).unwrap();
    ping(out.ns(), host_v6.into(), T).unwrap();
    // Default route: an address beyond the outside is routed there (the
    // outside has no such address, so it answers nothing or unreachable).
    assert!(
        ping(
            lab.host(),
            "203.0.113.9".parse().unwrap(),
            Duration::from_millis(300)
        )
        .is_err()
    );

    // TCP both ways, and the server sees the real source address.
    let srv = tcp_listen(out.ns(), SocketAddr::new(out.v4().into(), 8080)).unwrap();
    assert_eq!(
        tcp_connect(lab.host(), srv.addr(), T).unwrap(),
        srv.banner()
    );
    assert_eq!(srv.peers()[0].ip(), IpAddr::from(out.host_v4()));
    let srv6 = tcp_listen(lab.host(), SocketAddr::new(host_v6.into(), 0)).unwrap();
    assert_eq!(
        tcp_connect(out.ns(), srv6.addr(), T).unwrap(),
        srv6.banner()
    );

    // UDP echo.
    let udp = udp_echo_server(out.ns(), SocketAddr::new(v6.into(), 0)).unwrap();
    let got = udp_roundtrip(lab.host(), udp.addr(), b"ping?", T).unwrap();
    assert_eq!(got, b"ping?");
    assert_eq!(udp.peers()[0].ip(), IpAddr::from(host_v6));

    assert_eq!(read_sysctl(lab.host(), "net/ipv4/ip_forward").unwrap(), "1");
    // The machine's own namespace was not touched: the uplink is not there.
    assert!(
        rnet_netlink::Netlink::new()
            .unwrap()
            .link_by_name("uplink0")
            .unwrap()
            .map(|l| l.kind.as_deref() != Some("veth"))
            .unwrap_or(true)
    );
}

#[test]
fn tcp_between_two_containers() {
    let lab = lab();
    let a = lab.add_container("a").unwrap();
    let b = lab.add_container("b").unwrap();
    veth_pair(
        a.ns(),
        "eth0",
        &[
            "10.77.0.1/24".parse().unwrap(),
            "fd77::1/64".parse().unwrap(),
        ],
        b.ns(),
        "eth0",
        &[
            "10.77.0.2/24".parse().unwrap(),
            "fd77::2/64".parse().unwrap(),
        ],
    )
    .unwrap();
    let srv =
        tcp_listen_with_banner(b.ns(), "0.0.0.0:5000".parse().unwrap(), "hello from b").unwrap();
    assert_eq!(
        tcp_connect(a.ns(), "10.77.0.2:5000".parse().unwrap(), T).unwrap(),
        "hello from b"
    );
    assert_eq!(srv.peers()[0].ip(), "10.77.0.1".parse::<IpAddr>().unwrap());
    let srv6 = tcp_listen(b.ns(), "[fd77::2]:0".parse().unwrap()).unwrap();
    assert_eq!(tcp_connect(a.ns(), srv6.addr(), T).unwrap(), srv6.banner());
    // Not reachable from the lab host, which has no link to them.
    assert!(
        tcp_connect(
            lab.host(),
            "10.77.0.2:5000".parse().unwrap(),
            Duration::from_millis(300)
        )
        .is_err()
    );
    drop(srv);
    // After drop the server is gone: connection refused.
    assert!(tcp_connect(a.ns(), "10.77.0.2:5000".parse().unwrap(), T).is_err());
}

#[test]
fn cni_call_env_and_namespace() {
    let lab = lab();
    let c = lab.add_container("c1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fake-plugin");
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         cfg=$(cat)\n\
         printf '{\"command\":\"%s\",\"id\":\"%s\",\"netns\":\"%s\",\"ifname\":\"%s\",\"args\":\"%s\",\"path\":\"%s\",\"extra\":\"%s\",\"home\":\"%s\",\"ns\":\"%s\",\"stdin\":%s}' \
           \"$CNI_COMMAND\" \"$CNI_CONTAINERID\" \"$CNI_NETNS\" \"$CNI_IFNAME\" \"$CNI_ARGS\" \"$CNI_PATH\" \"$EXTRA\" \"$HOME\" \
           \"$(readlink /proc/self/ns/net)\" \"$cfg\"\n\
         echo 'to stderr' >&2\n\
         [ \"$CNI_COMMAND\" = DEL ] && exit 7\n\
         exit 0\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let out = lab
        .cni(&script)
        .command("ADD")
        .container_id("c1")
        .netns(c.netns_path())
        .ifname("eth0")
        .args("K=V;IgnoreUnknown=1")
        .cni_path(["/opt/a", "/opt/b"])
        .stdin(br#"{"cniVersion":"1.0.0"}"#.to_vec())
        .env("EXTRA", "x")
        .run()
        .unwrap();
    let v = out.ok_json().unwrap();
    assert_eq!(v["command"], "ADD");
    assert_eq!(v["id"], "c1");
    assert_eq!(v["netns"], c.netns_path().display().to_string());
    assert_eq!(v["ifname"], "eth0");
    assert_eq!(v["args"], "K=V;IgnoreUnknown=1");
    assert_eq!(v["path"], "/opt/a:/opt/b");
    assert_eq!(v["extra"], "x");
    assert_eq!(v["home"], "", "environment must be cleared");
    assert_eq!(v["stdin"]["cniVersion"], "1.0.0");
    assert_eq!(
        v["ns"],
        lab.host().id().unwrap().to_string(),
        "plugin runs in the lab host"
    );
    assert_eq!(out.stderr.trim(), "to stderr");

    // Non-zero exit: run() succeeds, ok_json() names the failure.
    let del = lab.cni(&script).command("DEL").run().unwrap();
    assert_eq!(del.status, 7);
    let err = del.ok_json().unwrap_err().to_string();
    assert!(
        err.contains("status 7") && err.contains("to stderr"),
        "{err}"
    );

    // Refusals: no namespace, or the machine's own.
    assert!(CniCall::new(&script).run().is_err());
    let me = NetNs::open("/proc/self/ns/net").unwrap();
    assert!(matches!(
        CniCall::new(&script).in_ns(&me).run(),
        Err(FixtureError::RootNamespace { .. })
    ));
    // Timeout kills a hanging plugin.
    let hang = dir.path().join("hang");
    std::fs::write(&hang, "#!/bin/sh\nsleep 30\n").unwrap();
    std::fs::set_permissions(&hang, std::fs::Permissions::from_mode(0o755)).unwrap();
    let t0 = std::time::Instant::now();
    let r = lab.cni(&hang).timeout(Duration::from_millis(200)).run();
    assert!(matches!(r, Err(FixtureError::Timeout { .. })), "{r:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the whole process group is killed"
    );

    // A plugin that leaves a process behind holding its stdout does not hang run().
    let daemon = dir.path().join("daemonizing");
    std::fs::write(&daemon, "#!/bin/sh\nsleep 20 &\necho $! >&2\necho '{}'\n").unwrap();
    std::fs::set_permissions(&daemon, std::fs::Permissions::from_mode(0o755)).unwrap();
    let t0 = std::time::Instant::now();
    let out = lab.cni(&daemon).run().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(out.ok_json().unwrap(), serde_json::json!({}));
    // Clean up the process this test started, by its pid.
    let pid: i32 = out.stderr.trim().parse().unwrap();
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    );
}

#[test]
fn refuses_machine_namespace() {
    require_root().unwrap();
    let me = NetNs::open("/proc/self/ns/net").unwrap();
    assert!(matches!(
        write_sysctl(&me, "net/ipv4/ip_forward", "1"),
        Err(FixtureError::RootNamespace { .. })
    ));
    assert!(matches!(
        veth_pair(&me, "x0", &[], &me, "x1", &[]),
        Err(FixtureError::RootNamespace { .. })
    ));
    let lab = lab();
    assert!(write_sysctl(lab.host(), "../etc/passwd", "x").is_err());
}

#[test]
fn dns_query_against_a_fake_server() {
    let lab = lab();
    // A one-shot responder: answers any query with one A record.
    let sock = lab
        .host()
        .run(|| std::net::UdpSocket::bind("127.0.0.1:0"))
        .unwrap()
        .unwrap();
    let addr = sock.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let (n, peer) = sock.recv_from(&mut buf).unwrap();
        let q = &buf[..n];
        let mut r = q.to_vec();
        r[2] = 0x85; // QR, AA, RD
        r[3] = 0x80; // RA, NOERROR
        r[6..8].copy_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 88, 0, 7]);
        sock.send_to(&r, peer).unwrap();
    });
    let a = dns_query(lab.host(), addr, "web.dns.podman", QType::A).unwrap();
    server.join().unwrap();
    assert_eq!(a.rcode, DnsAnswer::NOERROR);
    assert_eq!(a.addrs(), vec![IpAddr::from([10, 88, 0, 7])]);
    assert_eq!(a.answers[0].name, "web.dns.podman");
    // Nobody listening: ICMP port unreachable surfaces as an error, quickly.
    assert!(dns_query(lab.host(), addr, "x", QType::A).is_err());
}

#[test]
fn spawn_sees_lab_namespace() {
    let lab = lab();
    let out = lab
        .host()
        .output(Command::new("readlink").arg("/proc/self/ns/net"))
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        lab.host().id().unwrap().to_string()
    );
}
