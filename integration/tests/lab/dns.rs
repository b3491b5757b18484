//! `rnet-dnsname` + `rnet-dns` chained behind `rnet-bridge` + `rnet-ipam`,
//! driven through `rnet_cni::runtime::Runtime` in the lab host, with real DNS
//! queries from container namespaces to the resolver on the gateways:
//! names and aliases (A, AAAA, PTR), scoping between networks, forwarding to
//! a fake upstream in its own namespace (answer, NXDOMAIN, SERVFAIL on
//! timeout, TCP after truncation), internal networks, resolvable on the first
//! query after ADD, NXDOMAIN at once after DEL, restart keeps names, a second
//! start is refused, a query flood does not stop registrations and churn
//! never fails an existing name, bind errors name the address, CHECK and GC.
//!
//! Every resolver a test starts runs in that test's lab host namespace and is
//! killed by PID (from its pid file) when the test ends, also on failure.

use crate::common::{lab, rnet, rnet_dir};
use netns_fixtures::{Container, DnsAnswer, Lab, OutsideConfig, QType, dns_query, reverse_name};
use rnet_cni::runtime::{ConfList, Runtime, RuntimeConf};
use rnet_cni::{CniError, CniResult};
use rnet_netns::NetNs;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const UPSTREAM: &str = "203.0.113.53";
const UPSTREAM_ANSWER: &str = "192.0.2.7";

fn dns_dir(lab: &Lab) -> PathBuf {
    lab.state_dir().join("dns")
}

/// Kills the lab's resolver (by the PID in its pid file) on drop.
struct ResolverGuard(PathBuf);

impl ResolverGuard {
    fn pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.0.join("rnet-dns.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        // Only ever kill our own resolver: check it is rnet-dns on this state dir.
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        (cmd.contains("rnet-dns") && cmd.contains(&*self.0.to_string_lossy())).then_some(pid)
    }

    fn kill(&self) {
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Path::new(&format!("/proc/{pid}/cmdline")).exists()
                && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

impl Drop for ResolverGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Net<'a> {
    lab: &'a Lab,
    rt: Runtime,
    list: ConfList,
    name: String,
}

struct NetOpts {
    name: &'static str,
    bridge: &'static str,
    v4: &'static str,
    v6: &'static str,
    dns_extra: Value,
}

impl<'a> Net<'a> {
    fn new(lab: &'a Lab, o: NetOpts) -> Self {
        for b in ["rnet-bridge", "rnet-ipam", "rnet-dnsname", "rnet-dns"] {
            rnet(b);
        }
        let mut dns = json!({
            "type": "rnet-dnsname",
            "domainName": "dns.rnet",
            "capabilities": {"aliases": true},
            "rnetStateDir": lab.state_dir(),
            // Never the machine's resolvers: a discard port on loopback.
            "rnetDefaultUpstreams": ["127.0.0.1:9"],
        });
        if let (Value::Object(a), Value::Object(b)) = (&mut dns, o.dns_extra) {
            a.extend(b);
        }
        let v = json!({
            "cniVersion": "1.0.0",
            "name": o.name,
            "plugins": [
                {
                    "type": "rnet-bridge",
                    "bridge": o.bridge,
                    "isGateway": true,
                    "rnetStateDir": lab.state_dir().join("bridge"),
                    "ipam": {
                        "type": "rnet-ipam",
                        "ranges": [[{"subnet": o.v4}], [{"subnet": o.v6}]],
                        "dataDir": lab.state_dir().join("ipam"),
                    },
                },
                dns,
            ],
        });
        Net {
            lab,
            rt: Runtime::new(vec![rnet_dir()], lab.state_dir().join("cache")),
            list: ConfList::parse(v.to_string().as_bytes()).unwrap(),
            name: o.name.to_owned(),
        }
    }

    fn rc(&self, c: &Container, name: Option<&str>, aliases: &[&str]) -> RuntimeConf {
        let mut args = vec![("IgnoreUnknown".to_owned(), "1".to_owned())];
        if let Some(n) = name {
            args.push(("K8S_POD_NAME".into(), n.into()));
        }
        let mut caps = serde_json::Map::new();
        caps.insert("aliases".into(), json!({ self.name.clone(): aliases }));
        RuntimeConf {
            container_id: c.name().to_owned(),
            netns: Some(c.netns_path()),
            ifname: "eth0".into(),
            args,
            capability_args: caps,
        }
    }

    fn try_add(
        &self,
        c: &Container,
        name: Option<&str>,
        aliases: &[&str],
    ) -> Result<CniResult, CniError> {
        let rc = self.rc(c, name, aliases);
        self.lab
            .host()
            .run(|| self.rt.add(&self.list, &rc))
            .unwrap()
    }

    fn add(&self, c: &Container, name: &str, aliases: &[&str]) -> CniResult {
        self.try_add(c, Some(name), aliases)
            .unwrap_or_else(|e| panic!("ADD {} failed: {e:?}", c.name()))
    }

    fn del(&self, c: &Container, name: &str) {
        let rc = self.rc(c, Some(name), &[]);
        self.lab
            .host()
            .run(|| self.rt.del(&self.list, &rc))
            .unwrap()
            .unwrap_or_else(|e| panic!("DEL {} failed: {e:?}", c.name()));
    }

    fn check(&self, c: &Container, name: &str, aliases: &[&str]) -> Result<(), CniError> {
        let rc = self.rc(c, Some(name), aliases);
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

fn gw_of(r: &CniResult) -> SocketAddr {
    let gw = r
        .ips
        .iter()
        .find(|i| i.address.addr().is_ipv4())
        .and_then(|i| i.gateway)
        .unwrap_or_else(|| panic!("no IPv4 gateway in {r:?}"));
    SocketAddr::new(gw, 53)
}

#[track_caller]
fn ask(c: &Container, server: SocketAddr, name: &str, qt: QType) -> DnsAnswer {
    dns_query(c.ns(), server, name, qt)
        .unwrap_or_else(|e| panic!("query {name} {qt:?} from {} to {server}: {e}", c.name()))
}

fn net1(lab: &Lab) -> Net<'_> {
    Net::new(
        lab,
        NetOpts {
            name: "dnsnet1",
            bridge: "dnsbr1",
            v4: "10.91.0.0/24",
            v6: "fd91::/64",
            dns_extra: json!({}),
        },
    )
}

fn net2(lab: &Lab, extra: Value) -> Net<'_> {
    Net::new(
        lab,
        NetOpts {
            name: "dnsnet2",
            bridge: "dnsbr2",
            v4: "10.92.0.0/24",
            v6: "fd92::/64",
            dns_extra: extra,
        },
    )
}

#[test]
fn names_and_aliases_resolve_a_aaaa_ptr_and_scoping() {
    let lab = lab();
    let _g = ResolverGuard(dns_dir(&lab));
    let n1 = net1(&lab);
    let c1 = lab.add_container("dns-c1").unwrap();
    let c2 = lab.add_container("dns-c2").unwrap();
    let r1 = n1.add(&c1, "web", &["www", "Api.Internal"]);
    // The first query after ADD returns is answered (no retry anywhere here).
    let r2 = n1.add(&c2, "db", &[]);
    let gw = gw_of(&r1);
    let a = ask(&c2, gw, "web", QType::A);
    assert_eq!(a.rcode, DnsAnswer::NOERROR);
    assert_eq!(a.addrs(), vec![ip_of(&r1, true)]);
    assert!(a.authoritative);
    // The result carries the resolver and the search domain.
    assert_eq!(r1.dns.nameservers.first(), Some(&gw.ip().to_string()));
    assert!(
        r1.dns.nameservers.iter().any(|n| n.starts_with("fd91::")),
        "{:?}",
        r1.dns
    );
    assert_eq!(r1.dns.search, vec!["dns.rnet".to_owned()]);
    // Domain form, alias, case, AAAA, both directions.
    assert_eq!(
        ask(&c2, gw, "web.dns.rnet", QType::Aaaa).addrs(),
        vec![ip_of(&r1, false)]
    );
    assert_eq!(
        ask(&c2, gw, "WWW.dns.rnet", QType::A).addrs(),
        vec![ip_of(&r1, true)]
    );
    assert_eq!(
        ask(&c2, gw, "api.internal", QType::A).addrs(),
        vec![ip_of(&r1, true)]
    );
    assert_eq!(
        ask(&c1, gw, "db.dns.rnet", QType::A).addrs(),
        vec![ip_of(&r2, true)]
    );
    // PTR for v4 and v6.
    let p = ask(&c2, gw, &reverse_name(ip_of(&r1, true)), QType::Ptr);
    assert_eq!(p.ptr_names()[0].trim_end_matches('.'), "web.dns.rnet");
    let p6 = ask(&c2, gw, &reverse_name(ip_of(&r1, false)), QType::Ptr);
    assert_eq!(p6.ptr_names()[0].trim_end_matches('.'), "web.dns.rnet");
    // Unknown names in the domain and single labels: NXDOMAIN, not forwarded.
    assert_eq!(
        ask(&c2, gw, "nope.dns.rnet", QType::A).rcode,
        DnsAnswer::NXDOMAIN
    );
    assert_eq!(ask(&c2, gw, "nope", QType::A).rcode, DnsAnswer::NXDOMAIN);
    // Over the IPv6 gateway too (allow for DAD on the fresh addresses).
    let gw6 = SocketAddr::new(
        r1.ips
            .iter()
            .find_map(|i| i.gateway.filter(IpAddr::is_ipv6))
            .unwrap(),
        53,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let a6 = loop {
        match dns_query(c2.ns(), gw6, "web", QType::A) {
            Ok(a) => break a,
            Err(e) if Instant::now() > deadline => panic!("v6 query: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert_eq!(a6.addrs(), vec![ip_of(&r1, true)]);

    // A container on another network sees neither name (same resolver).
    let n2 = net2(&lab, json!({}));
    let c3 = lab.add_container("dns-c3").unwrap();
    let r3 = n2.add(&c3, "cache", &[]);
    let gw2 = gw_of(&r3);
    assert_eq!(ask(&c3, gw2, "web", QType::A).rcode, DnsAnswer::NXDOMAIN);
    assert_eq!(
        ask(&c3, gw2, "www.dns.rnet", QType::A).rcode,
        DnsAnswer::NXDOMAIN
    );
    assert!(
        ask(&c3, gw2, &reverse_name(ip_of(&r1, true)), QType::Ptr)
            .ptr_names()
            .is_empty()
    );
    // Not even by asking the other network's gateway address.
    if let Ok(a) = dns_query(c3.ns(), gw, "web", QType::A) {
        assert!(a.addrs().is_empty(), "{a:?}");
    }
    assert_eq!(
        ask(&c3, gw2, "cache", QType::A).addrs(),
        vec![ip_of(&r3, true)]
    );
    assert_eq!(ask(&c1, gw, "cache", QType::A).rcode, DnsAnswer::NXDOMAIN);

    // CHECK passes; DEL makes the name NXDOMAIN at once; CHECK then fails.
    n1.check(&c1, "web", &["www", "Api.Internal"]).unwrap();
    n1.del(&c1, "web");
    assert_eq!(ask(&c2, gw, "web", QType::A).rcode, DnsAnswer::NXDOMAIN);
    assert_eq!(ask(&c2, gw, "www", QType::A).rcode, DnsAnswer::NXDOMAIN);
    assert_eq!(ask(&c2, gw, "db", QType::A).addrs(), vec![ip_of(&r2, true)]);
    n1.del(&c1, "web"); // idempotent
    n2.del(&c3, "cache");
    n1.del(&c2, "db");
}

#[test]
fn add_without_names_or_prev_result_fails_clearly() {
    let lab = lab();
    let _g = ResolverGuard(dns_dir(&lab));
    let n1 = net1(&lab);
    let c = lab.add_container("dns-noname").unwrap();
    let e = n1.try_add(&c, None, &[]).unwrap_err();
    assert_eq!(e.code, 7, "{e:?}");
    assert!(e.msg.contains("K8S_POD_NAME"), "{e:?}");
    // Aliases alone are enough.
    let r = n1.try_add(&c, None, &["only-alias"]).unwrap();
    let c2 = lab.add_container("dns-other").unwrap();
    n1.add(&c2, "other", &[]);
    assert_eq!(
        ask(&c2, gw_of(&r), "only-alias", QType::A).addrs(),
        vec![ip_of(&r, true)]
    );
    // Invalid names: error 7 naming the name.
    let c3 = lab.add_container("dns-bad").unwrap();
    let e = n1.try_add(&c3, Some("bad name!"), &[]).unwrap_err();
    assert_eq!(e.code, 7, "{e:?}");
    assert!(e.msg.contains("bad name!"), "{e:?}");
}

/// A fake upstream DNS server (UDP and TCP on one address, in its own
/// namespace): `*.example.test` → A 192.0.2.7 (TTL 60), `nx.example.test` →
/// NXDOMAIN, `drop.example.test` → no reply, `big.example.test` → TC over
/// UDP and 40 A records over TCP. Counts the queries it sees.
struct FakeUpstream {
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn qname(msg: &[u8]) -> Option<(String, usize)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *msg.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(msg.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    Some((labels.join("."), at + 4))
}

fn fake_answer(msg: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let (name, qend) = qname(msg)?;
    let mut flags: u16 = 0x8180;
    let mut answers = 0u16;
    match name.as_str() {
        "drop.example.test" => return None,
        "nx.example.test" => flags |= 3,
        "big.example.test" if !tcp => flags |= 0x0200,
        "big.example.test" => answers = 40,
        n if n.ends_with(".example.test") => answers = 1,
        _ => flags |= 3,
    }
    let mut r = Vec::new();
    r.extend_from_slice(msg.get(..2)?);
    r.extend_from_slice(&flags.to_be_bytes());
    r.extend_from_slice(&[0, 1]);
    r.extend_from_slice(&answers.to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(msg.get(12..qend)?);
    let ip: std::net::Ipv4Addr = UPSTREAM_ANSWER.parse().unwrap();
    for _ in 0..answers {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&ip.octets());
    }
    Some(r)
}

fn fake_upstream(ns: &NetNs, addr: SocketAddr) -> FakeUpstream {
    let (udp, tcp) = ns
        .run(|| (UdpSocket::bind(addr), TcpListener::bind(addr)))
        .unwrap();
    let (udp, tcp) = (udp.unwrap(), tcp.unwrap());
    udp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    tcp.set_nonblocking(true).unwrap();
    let queries = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (q, s) = (queries.clone(), stop.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while !s.load(Ordering::SeqCst) {
            if let Ok((n, peer)) = udp.recv_from(&mut buf) {
                q.fetch_add(1, Ordering::SeqCst);
                if let Some(r) = fake_answer(&buf[..n], false) {
                    let _ = udp.send_to(&r, peer);
                }
            }
        }
    });
    let (q, s) = (queries.clone(), stop.clone());
    std::thread::spawn(move || {
        while !s.load(Ordering::SeqCst) {
            let Ok((mut st, _)) = tcp.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            q.fetch_add(1, Ordering::SeqCst);
            st.set_nonblocking(false).unwrap();
            st.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut len = [0u8; 2];
            if st.read_exact(&mut len).is_err() {
                continue;
            }
            let mut m = vec![0u8; u16::from_be_bytes(len) as usize];
            if st.read_exact(&mut m).is_err() {
                continue;
            }
            if let Some(r) = fake_answer(&m, true) {
                let mut out = (r.len() as u16).to_be_bytes().to_vec();
                out.extend_from_slice(&r);
                let _ = st.write_all(&out);
            }
        }
    });
    FakeUpstream { queries, stop }
}

/// One query over TCP from inside `ns`; returns (rcode, answer count).
fn tcp_query(ns: &NetNs, server: SocketAddr, name: &str) -> (u8, u16) {
    let mut st = ns
        .run(|| TcpStream::connect_timeout(&server, Duration::from_secs(3)))
        .unwrap()
        .unwrap();
    st.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    st.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    st.read_exact(&mut len).unwrap();
    let mut r = vec![0u8; u16::from_be_bytes(len) as usize];
    st.read_exact(&mut r).unwrap();
    assert_eq!(&r[..2], &[0x12, 0x34]);
    (r[3] & 0xf, u16::from_be_bytes([r[6], r[7]]))
}

/// An outside namespace holding the fake upstream at [`UPSTREAM`], and a
/// network whose resolver forwards to it.
fn forwarding_net<'a>(
    lab: &'a Lab,
    name: &'static str,
    bridge: &'static str,
    v4: &'static str,
    v6: &'static str,
) -> (netns_fixtures::Outside, FakeUpstream, Net<'a>) {
    let outside = lab
        .add_outside(OutsideConfig {
            outside_v4: format!("{UPSTREAM}/24").parse().unwrap(),
            host_v4: "203.0.113.1/24".parse().unwrap(),
            ..OutsideConfig::default()
        })
        .unwrap();
    let fake = fake_upstream(outside.ns(), SocketAddr::new(UPSTREAM.parse().unwrap(), 53));
    let net = Net::new(
        lab,
        NetOpts {
            name,
            bridge,
            v4,
            v6,
            dns_extra: json!({"upstreams": [UPSTREAM]}),
        },
    );
    (outside, fake, net)
}

#[test]
fn forwarding_to_a_fake_upstream_and_internal_networks() {
    let lab = lab();
    let _g = ResolverGuard(dns_dir(&lab));
    let (_outside, fake, n1) =
        forwarding_net(&lab, "dnsfwd", "dnsbrf", "10.93.0.0/24", "fd93::/64");
    let c1 = lab.add_container("dns-f1").unwrap();
    let r1 = n1.add(&c1, "f1", &[]);
    let gw = gw_of(&r1);
    let a = ask(&c1, gw, "host.example.test", QType::A);
    assert_eq!(a.rcode, DnsAnswer::NOERROR);
    assert_eq!(a.addrs(), vec![UPSTREAM_ANSWER.parse::<IpAddr>().unwrap()]);
    // Cached: the upstream sees no second query.
    let before = fake.queries.load(Ordering::SeqCst);
    let a = ask(&c1, gw, "HOST.example.test", QType::A);
    assert_eq!(a.addrs(), vec![UPSTREAM_ANSWER.parse::<IpAddr>().unwrap()]);
    assert_eq!(fake.queries.load(Ordering::SeqCst), before);
    assert!(a.answers[0].ttl <= 60 && a.answers[0].ttl > 0, "{a:?}");
    // NXDOMAIN passes through.
    assert_eq!(
        ask(&c1, gw, "nx.example.test", QType::A).rcode,
        DnsAnswer::NXDOMAIN
    );
    // Timeout: SERVFAIL (one upstream, 2 s per try).
    let t0 = Instant::now();
    let a = netns_fixtures::dns_query_timeout(
        c1.ns(),
        gw,
        "drop.example.test",
        QType::A,
        Duration::from_secs(8),
    )
    .unwrap();
    assert_eq!(a.rcode, DnsAnswer::SERVFAIL);
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    // Truncation: UDP gets TC, TCP gets the whole answer (resolver asks upstream over TCP).
    let a = ask(&c1, gw, "big.example.test", QType::A);
    assert!(a.truncated, "{a:?}");
    assert_eq!(tcp_query(c1.ns(), gw, "big.example.test"), (0, 40));
    // Local names over TCP too.
    assert_eq!(tcp_query(c1.ns(), gw, "f1.dns.rnet"), (0, 1));

    // An internal network never forwards (CVE-2024-29018): REFUSED, upstream untouched.
    let n2 = net2(&lab, json!({"internal": true, "upstreams": [UPSTREAM]}));
    let c2 = lab.add_container("dns-i1").unwrap();
    let r2 = n2.add(&c2, "i1", &[]);
    let before = fake.queries.load(Ordering::SeqCst);
    let a = ask(&c2, gw_of(&r2), "other.example.test", QType::A);
    assert_eq!(a.rcode, DnsAnswer::REFUSED);
    assert_eq!(tcp_query(c2.ns(), gw_of(&r2), "other.example.test").0, 5);
    assert_eq!(fake.queries.load(Ordering::SeqCst), before);
    // Its own names still resolve.
    assert_eq!(
        ask(&c2, gw_of(&r2), "i1", QType::A).addrs(),
        vec![ip_of(&r2, true)]
    );
}

#[test]
fn restart_keeps_names_and_second_start_is_refused() {
    let lab = lab();
    let g = ResolverGuard(dns_dir(&lab));
    let n1 = net1(&lab);
    let c1 = lab.add_container("dns-r1").unwrap();
    let c2 = lab.add_container("dns-r2").unwrap();
    let r1 = n1.add(&c1, "keep", &["kept"]);
    n1.add(&c2, "asker", &[]);
    let gw = gw_of(&r1);
    let first = g.pid().expect("resolver running");
    // A second start is refused cleanly, naming the running one.
    let out = lab
        .host()
        .output(
            std::process::Command::new(rnet("rnet-dns"))
                .args(["run", "--port", "53", "--state-dir"])
                .arg(dns_dir(&lab)),
        )
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already serves") && err.contains(&first.to_string()),
        "{err}"
    );
    // Crash (SIGKILL), start again: the names are back.
    g.kill();
    assert!(
        dns_query(c2.ns(), gw, "keep", QType::A).is_err(),
        "nothing answers after the kill"
    );
    crate::common::start_resolver(&lab, &dns_dir(&lab));
    let second = g.pid().expect("restarted");
    assert_ne!(first, second);
    assert_eq!(
        ask(&c2, gw, "keep", QType::A).addrs(),
        vec![ip_of(&r1, true)]
    );
    assert_eq!(
        ask(&c2, gw, "kept.dns.rnet", QType::Aaaa).addrs(),
        vec![ip_of(&r1, false)]
    );
    // GC removes what the runtime no longer knows.
    let valid = vec![rnet_cni::Attachment {
        container_id: c2.name().into(),
        ifname: "eth0".into(),
    }];
    let res = lab.host().run(|| n1.rt.gc(&n1.list, &valid)).unwrap();
    assert!(res.is_ok(), "{res:?}");
    assert_eq!(ask(&c2, gw, "keep", QType::A).rcode, DnsAnswer::NXDOMAIN);
    assert_eq!(ask(&c2, gw, "asker", QType::A).rcode, DnsAnswer::NOERROR);
}

#[test]
fn bind_error_names_the_address() {
    let lab = lab();
    let _g = ResolverGuard(dns_dir(&lab));
    // Someone else holds port 53 on every address of the lab host.
    let squatter = lab
        .host()
        .run(|| UdpSocket::bind("0.0.0.0:53"))
        .unwrap()
        .unwrap();
    let n1 = net1(&lab);
    let c = lab.add_container("dns-b1").unwrap();
    let e = n1.try_add(&c, Some("x"), &[]).unwrap_err();
    assert_eq!(e.code, 130, "{e:?}");
    assert!(
        e.msg.contains("10.91.0.1:53") && e.msg.contains("udp"),
        "{e:?}"
    );
    assert!(e.msg.to_lowercase().contains("in use"), "{e:?}");
    drop(squatter);
}

/// Asks in a loop until the deadline; for use under a flood, where the
/// resolver's socket buffer overflows and datagrams are dropped.
fn ask_patiently(c: &Container, server: SocketAddr, name: &str) -> DnsAnswer {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match netns_fixtures::dns_query_timeout(
            c.ns(),
            server,
            name,
            QType::A,
            Duration::from_millis(200),
        ) {
            Ok(a) => return a,
            Err(e) if Instant::now() > deadline => panic!("{name}: {e}"),
            Err(_) => {}
        }
    }
}

fn setup_two(lab: &Lab) -> (Net<'_>, Container, Container, SocketAddr, IpAddr) {
    let n1 = net1(lab);
    let stable = lab.add_container("dns-stable").unwrap();
    let asker = lab.add_container("dns-asker").unwrap();
    let rs = n1.add(&stable, "stable", &[]);
    n1.add(&asker, "asker", &[]);
    (n1, stable, asker, gw_of(&rs), ip_of(&rs, true))
}

/// Bursts from several sockets at once (the resolver takes queued queries
/// in batches and answers each batch with one `sendmmsg`): every query is
/// answered, once, to the socket that asked, with its own ID and the right
/// address; an unknown name in the same burst gets NXDOMAIN.
#[test]
fn bursts_are_answered_to_each_asker() {
    let lab = lab();
    let _g = ResolverGuard(dns_dir(&lab));
    let (_n1, _stable, asker, gw, want) = setup_two(&lab);
    let query = |id: u16, name: &str| {
        let mut q = vec![(id >> 8) as u8, id as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    };
    let socks: Vec<UdpSocket> = (0..4)
        .map(|_| {
            let s = asker
                .ns()
                .run(|| UdpSocket::bind("0.0.0.0:0"))
                .unwrap()
                .unwrap();
            s.connect(gw).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s
        })
        .collect();
    // 4 sockets x 30 queries, all sent before any answer is read; every
    // fifth asks for a name that does not exist.
    for (k, s) in socks.iter().enumerate() {
        for i in 0..30u16 {
            let id = (k as u16) * 1000 + i;
            let name = if i % 5 == 4 { "nosuchname" } else { "stable" };
            s.send(&query(id, name)).unwrap();
        }
    }
    for (k, s) in socks.iter().enumerate() {
        let mut seen = std::collections::BTreeSet::new();
        let mut buf = [0u8; 512];
        for _ in 0..30 {
            let n = s
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("socket {k}: only {} of 30 answers: {e}", seen.len()));
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            assert!(
                (k as u16 * 1000..k as u16 * 1000 + 30).contains(&id),
                "socket {k} got the answer to query {id}"
            );
            assert!(seen.insert(id), "socket {k}: answer {id} twice");
            let rcode = buf[3] & 0x0f;
            let ancount = u16::from_be_bytes([buf[6], buf[7]]);
            if id % 5 == 4 {
                assert_eq!((rcode, ancount), (3, 0), "query {id}: NXDOMAIN");
            } else {
                assert_eq!((rcode, ancount), (0, 1), "query {id}");
                let IpAddr::V4(w) = want else { panic!("v4") };
                assert_eq!(&buf[n - 4..n], &w.octets(), "query {id}: the address");
            }
        }
    }
}

#[test]
fn churn_never_fails_an_existing_name_and_new_names_resolve_at_once() {
    let lab = lab();
    let _g = ResolverGuard(dns_dir(&lab));
    let (n1, _stable, asker, gw, want) = setup_two(&lab);
    // A checker asks for an existing name in a loop, each query answered
    // before the next; every timeout or wrong answer counts as a failure.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let checks = Arc::new(AtomicUsize::new(0));
    let checker = {
        let (s, f, n) = (stop.clone(), failures.clone(), checks.clone());
        let ns = asker.ns().try_clone().unwrap();
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match dns_query(&ns, gw, "stable", QType::A) {
                    Ok(a) if a.addrs() == vec![want] => {}
                    _ => {
                        f.fetch_add(1, Ordering::SeqCst);
                    }
                }
                n.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let cs: Vec<Container> = (0..20)
        .map(|i| lab.add_container(&format!("dns-ch{i}")).unwrap())
        .collect();
    for (i, c) in cs.iter().enumerate() {
        let r = n1.add(c, &format!("churn{i}"), &[]);
        // The first query after ADD returns: answered, no retry.
        let a = ask(&asker, gw, &format!("churn{i}.dns.rnet"), QType::A);
        assert_eq!(a.addrs(), vec![ip_of(&r, true)], "churn{i} right after ADD");
        if i % 2 == 0 {
            n1.del(c, &format!("churn{i}"));
            assert_eq!(
                ask(&asker, gw, &format!("churn{i}"), QType::A).rcode,
                DnsAnswer::NXDOMAIN
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    checker.join().unwrap();
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "an existing name failed during churn"
    );
    assert!(checks.load(Ordering::SeqCst) > 20);
}

#[test]
fn a_query_flood_does_not_stop_registrations() {
    let lab = lab();
    let _g = ResolverGuard(dns_dir(&lab));
    let (n1, _stable, asker, gw, want) = setup_two(&lab);
    // Two threads fire queries without waiting for answers.
    let stop = Arc::new(AtomicBool::new(false));
    let mut floods = Vec::new();
    for _ in 0..2 {
        let sock = asker
            .ns()
            .run(|| UdpSocket::bind("0.0.0.0:0"))
            .unwrap()
            .unwrap();
        sock.connect(gw).unwrap();
        sock.set_nonblocking(true).unwrap();
        let s = stop.clone();
        floods.push(std::thread::spawn(move || {
            let q = [
                0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 6, b's', b't', b'a', b'b', b'l', b'e', 0,
                0, 1, 0, 1,
            ];
            let mut buf = [0u8; 512];
            let (mut sent, mut got) = (0u64, 0u64);
            while !s.load(Ordering::SeqCst) {
                let _ = sock.send(&q);
                sent += 1;
                while sock.recv(&mut buf).is_ok() {
                    got += 1;
                }
            }
            (sent, got)
        }));
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut worst = Duration::ZERO;
    let cs: Vec<Container> = (0..10)
        .map(|i| lab.add_container(&format!("dns-fl{i}")).unwrap())
        .collect();
    for (i, c) in cs.iter().enumerate() {
        let t0 = Instant::now();
        let r = n1.add(c, &format!("flood{i}"), &[]);
        worst = worst.max(t0.elapsed());
        // Datagrams may be dropped while the socket is flooded; the name is there.
        assert_eq!(
            ask_patiently(&asker, gw, &format!("flood{i}")).addrs(),
            vec![ip_of(&r, true)]
        );
    }
    assert_eq!(ask_patiently(&asker, gw, "stable").addrs(), vec![want]);
    stop.store(true, Ordering::SeqCst);
    let (sent, got) = floods
        .into_iter()
        .map(|t| t.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    eprintln!("flood: {sent} queries sent, {got} answers; worst ADD {worst:?}");
    assert!(got > 1000, "the flood was answered too: {got}");
    assert!(
        worst < Duration::from_secs(5),
        "ADD took {worst:?} under a flood"
    );
}

/// The resolver's resident set in kB (from /proc).
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Sends `count` queries for distinct names `<prefix><i>.example.test` from
/// `c`, at most 64 outstanding; returns how many were answered.
fn flood_distinct(
    c: &Container,
    server: SocketAddr,
    prefix: &str,
    range: std::ops::Range<u32>,
) -> u64 {
    let sock = c
        .ns()
        .run(|| UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    sock.connect(server).unwrap();
    // Long enough never to give up on a slow answer: the resolver then never
    // has more than 64 of these in flight, whatever the machine's load.
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let (mut outstanding, mut answered) = (0u32, 0u64);
    let mut buf = [0u8; 1500];
    for i in range {
        let mut q = vec![(i >> 8) as u8, i as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in format!("{prefix}{i}.example.test").split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        let _ = sock.send(&q);
        outstanding += 1;
        while outstanding >= 64 {
            match sock.recv(&mut buf) {
                Ok(_) => answered += 1,
                Err(_) => outstanding = 0, // lost (2 s without an answer): move on
            }
            outstanding = outstanding.saturating_sub(1);
        }
    }
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    while sock.recv(&mut buf).is_ok() {
        answered += 1;
    }
    answered
}

/// A flood of queries for names nobody asked before (each forwarded once,
/// each answer cacheable) must not grow the resolver without bound: the
/// cache and the in-flight table are capped, so the resident set levels off.
#[test]
fn unknown_name_flood_keeps_resolver_memory_bounded() {
    let lab = lab();
    let g = ResolverGuard(dns_dir(&lab));
    let (_outside, _fake, n1) =
        forwarding_net(&lab, "dnsmem", "dnsbrm", "10.94.0.0/24", "fd94::/64");
    let c = lab.add_container("dns-m1").unwrap();
    let r = n1.add(&c, "m1", &[]);
    let gw = gw_of(&r);
    let pid = g.pid().expect("resolver running");
    let base = rss_kb(pid);
    // Warm up past the cache's capacity (4096 responses), then twice more.
    let a1 = flood_distinct(&c, gw, "w", 0..15_000);
    let after1 = rss_kb(pid);
    let a2 = flood_distinct(&c, gw, "x", 0..30_000);
    let after2 = rss_kb(pid);
    // Local unknown names are answered without forwarding or caching.
    let mut local = 0;
    for i in 0..2000 {
        if dns_query(c.ns(), gw, &format!("nobody{i}.dns.rnet"), QType::A)
            .is_ok_and(|a| a.rcode == DnsAnswer::NXDOMAIN)
        {
            local += 1;
        }
    }
    let after3 = rss_kb(pid);
    eprintln!(
        "resolver RSS: {base} kB at start, {after1} kB after 15k unknown names \
         ({a1} answered), {after2} kB after 30k more ({a2} answered), {after3} kB after \
         2000 local NXDOMAINs"
    );
    assert!(
        a1 > 10_000 && a2 > 20_000,
        "the flood was answered: {a1}, {a2}"
    );
    assert_eq!(local, 2000);
    // Twice the names again must not cost more than a small slack: bounded.
    assert!(
        after2 <= after1 + 2048,
        "resolver grew from {after1} kB to {after2} kB with 30k more unknown names"
    );
    assert!(after3 <= after2 + 1024, "{after2} -> {after3} kB");
    assert!(after2 < base + 32 * 1024, "{base} -> {after2} kB");
    // And it still answers its own names.
    assert_eq!(ask(&c, gw, "m1", QType::A).addrs(), vec![ip_of(&r, true)]);
}

/// The resolver is killed (SIGKILL) at random moments while the runtime adds
/// and removes containers; a failed ADD is followed by DEL, as runtimes do.
/// Afterwards GC with the live attachments leaves exactly their names, all
/// resolvable, and nothing else (issue 10: resolver killed mid-registration).
#[test]
fn resolver_killed_mid_registration_then_gc_leaves_exactly_the_living() {
    let lab = lab();
    let g = Arc::new(ResolverGuard(dns_dir(&lab)));
    let n1 = net1(&lab);
    let asker = lab.add_container("dns-k-asker").unwrap();
    let ra = n1.add(&asker, "kasker", &[]);
    let gw = gw_of(&ra);
    let cs: Vec<Container> = (0..8)
        .map(|i| lab.add_container(&format!("dns-k{i}")).unwrap())
        .collect();
    let mut live = vec![false; cs.len()];
    let mut ip4: Vec<Option<IpAddr>> = vec![None; cs.len()];
    let seed: u64 = std::env::var("RNET_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_d115);
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut kills, mut failed_adds) = (0, 0);
    for _round in 0..100 {
        let i = (next() % cs.len() as u64) as usize;
        let delay = Duration::from_micros(next() % 40_000);
        let killer = {
            let g = g.clone();
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let running = g.pid().is_some();
                g.kill();
                running
            })
        };
        let name = format!("k{i}");
        if live[i] {
            n1.del(&cs[i], &name);
            live[i] = false;
            ip4[i] = None;
        } else {
            match n1.try_add(&cs[i], Some(&name), &[]) {
                Ok(r) => {
                    live[i] = true;
                    ip4[i] = Some(ip_of(&r, true));
                }
                Err(_) => {
                    failed_adds += 1;
                    n1.del(&cs[i], &name);
                }
            }
        }
        if killer.join().unwrap() {
            kills += 1;
        }
    }
    // The runtime's view: the asker and the live containers.
    let mut valid = vec![rnet_cni::Attachment {
        container_id: asker.name().into(),
        ifname: "eth0".into(),
    }];
    for (i, c) in cs.iter().enumerate() {
        if live[i] {
            valid.push(rnet_cni::Attachment {
                container_id: c.name().into(),
                ifname: "eth0".into(),
            });
        }
    }
    let res = lab.host().run(|| n1.rt.gc(&n1.list, &valid)).unwrap();
    assert!(res.is_ok(), "{res:?}");
    // GC may have found no resolver running (killed last): one more
    // registration starts it again from its persisted registry.
    let probe = lab.add_container("dns-k-probe").unwrap();
    n1.add(&probe, "kprobe", &[]);
    eprintln!(
        "resolver kills: {kills} while running, {failed_adds} ADDs failed and were deleted, \
         {} live at the end",
        live.iter().filter(|l| **l).count()
    );
    assert!(kills >= 20, "too few kills landed: {kills}");
    for (i, _) in cs.iter().enumerate() {
        let a = ask(&asker, gw, &format!("k{i}"), QType::A);
        match ip4[i] {
            Some(ip) => assert_eq!(a.addrs(), vec![ip], "k{i} is live: {a:?}"),
            None => assert_eq!(a.rcode, DnsAnswer::NXDOMAIN, "k{i} is gone: {a:?}"),
        }
    }
    assert_eq!(
        ask(&asker, gw, "kasker", QType::A).addrs(),
        vec![ip_of(&ra, true)]
    );
}
