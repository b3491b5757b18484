//! DNS benchmark: rnet-dns against dnsmasq and aardvark-dns (Debian), in a lab.
//!
//! ```text
//! cargo build --release -p rnet-dns --examples
//! target/release/examples/dns_bench [--names 10,1000,10000] [--secs 10]
//!     [--servers rnet,dnsmasq,aardvark] [--kinds bare,domain,unknown,mixed]
//! ```
//!
//! Topology: a throwaway "host" namespace with the server bound on
//! 10.99.0.1 (a veth end), and a client namespace (10.99.0.2, registered as a
//! container on the network so scoping lets it see the names) running
//! `dnsperf`. Server pinned to CPU 0, dnsperf to CPU 1. Per server, names
//! `c0..cN` (addresses 10.99.x.y) are loaded; per query kind a 100,000-line
//! query file is replayed for `--secs` seconds, once for throughput and once
//! with `-v` for latency percentiles (p50/p99 from every answered query).
//! Then RSS (VmRSS and VmHWM) of the server. For rnet-dns also: registration
//! to first answer (each registration acked, then one query at once) and a
//! churn run (a name asked continuously while 1,000 names are added and
//! removed; failures counted).
//!
//! Nothing touches the machine's namespace; every server started here is
//! killed by PID at the end (also on panic, by guard).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use netns_fixtures::{Lab, QType, dns_query, veth_pair};
use rnet_dns::control::{Client, Request};
use rnet_dns::daemon::Launcher;
use rnet_dns::registry::{AttachmentId, NetworkSpec};
use rnet_netns::NetNs;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GW: &str = "10.99.0.1";
const CLIENT: &str = "10.99.0.2";

fn addr_of(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, 1 + (i / 250) as u8, 1 + (i % 250) as u8)
}

/// Kills a PID on drop (and reaps it when it is our child).
struct Pid(u32, Option<std::process::Child>);
impl Drop for Pid {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
        if let Some(c) = &mut self.1 {
            let _ = c.wait();
        }
    }
}

fn pin(pid: u32, cpu: u32) {
    let _ = Command::new("taskset")
        .args(["-a", "-pc", &cpu.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .status();
}

fn rss_kb(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("VmRSS:"), get("VmHWM:"))
}

fn wait_answer(client: &NetNs, name: &str) {
    let gw = SocketAddr::new(GW.parse().unwrap(), 53);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(a) = dns_query(client, gw, name, QType::A) {
            if !a.addrs().is_empty() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "server never answered {name}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn query_file(dir: &Path, kind: &str, n: usize, domain: &str) -> PathBuf {
    let mut s = String::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for k in 0..100_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x % n as u64) as usize;
        let kind = if kind == "mixed" {
            ["bare", "domain", "unknown", "aaaa", "ptr"][k % 5]
        } else {
            kind
        };
        let _ = match kind {
            "bare" => writeln!(s, "c{i} A"),
            "domain" => writeln!(s, "c{i}.{domain} A"),
            "unknown" => writeln!(s, "nope{i}.{domain} A"),
            "aaaa" => writeln!(s, "c{i}.{domain} AAAA"),
            _ => {
                let o = addr_of(i).octets();
                writeln!(s, "{}.{}.{}.{}.in-addr.arpa PTR", o[3], o[2], o[1], o[0])
            }
        };
    }
    let p = dir.join(format!("q-{kind}-{n}-{domain}.txt"));
    std::fs::write(&p, s).unwrap();
    p
}

struct Perf {
    qps: f64,
    lost: u64,
    p50_us: f64,
    p99_us: f64,
    rcodes: String,
}

fn dnsperf(client: &NetNs, file: &Path, secs: u32) -> Perf {
    let run = |verbose: bool| {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "1", "dnsperf", "-s", GW, "-d"])
            .arg(file)
            .args(["-l", &secs.to_string(), "-c", "4", "-q", "200"]);
        if verbose {
            cmd.arg("-v");
        }
        let out = client.output(&mut cmd).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = run(false);
    let field = |k: &str| -> String {
        text.lines()
            .find(|l| l.trim_start().starts_with(k))
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
            .unwrap_or_default()
    };
    let qps: f64 = field("Queries per second")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let lost: u64 = field("Queries lost")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let rcodes = field("Response codes");
    let vtext = run(true);
    let mut lat: Vec<f64> = vtext
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        if lat.is_empty() {
            return 0.0;
        }
        lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] * 1e6
    };
    Perf {
        qps,
        lost,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        rcodes,
    }
}

struct Server {
    pid: Pid,
    domain: &'static str,
}

fn start_rnet(lab: &Lab, client: &NetNs, n: usize, report: &mut String) -> Server {
    let exe = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("rnet-dns");
    let dir = lab.state_dir().join(format!("rnet-{n}"));
    let mut l = Launcher::new(&exe, &dir);
    l.upstreams = vec!["127.0.0.1:9".parse().unwrap()];
    l.idle_exit = None;
    let pid = lab.host().run(|| l.start()).unwrap().unwrap();
    let guard = Pid(pid, None);
    pin(pid, 0);
    let net = NetworkSpec {
        name: "bench".into(),
        domain: "dns.rnet".into(),
        internal: false,
        listen: vec![GW.parse().unwrap()],
        upstreams: vec![],
    };
    let mut c = Client::connect(&dir).unwrap();
    let reg = |c: &mut Client, id: String, name: String, ip: IpAddr| {
        c.request(&Request::Register {
            network: net.clone(),
            attachment: AttachmentId {
                container_id: id,
                ifname: "eth0".into(),
            },
            names: vec![name],
            addrs: vec![ip],
        })
        .unwrap();
    };
    reg(
        &mut c,
        "client".into(),
        "client".into(),
        CLIENT.parse().unwrap(),
    );
    // Registration to first answer: each registration is acked, then asked at once.
    let gw = SocketAddr::new(GW.parse().unwrap(), 53);
    let mut reg_times = Vec::with_capacity(n);
    let mut first_fail = 0;
    for i in 0..n {
        let t0 = Instant::now();
        reg(
            &mut c,
            format!("ctr{i}"),
            format!("c{i}"),
            IpAddr::V4(addr_of(i)),
        );
        reg_times.push(t0.elapsed());
        if i % 10 == 0 {
            match dns_query(client, gw, &format!("c{i}"), QType::A) {
                Ok(a) if a.addrs() == vec![IpAddr::V4(addr_of(i))] => {}
                _ => first_fail += 1,
            }
        }
    }
    reg_times.sort();
    let p = |q: f64| reg_times[((reg_times.len() as f64 * q) as usize).min(reg_times.len() - 1)];
    let _ = writeln!(
        report,
        "rnet-dns {n} names: registration ack p50 {:?} p99 {:?}; first query after ack failed {first_fail} of {}",
        p(0.5),
        p(0.99),
        n.div_ceil(10)
    );
    wait_answer(client, "c0");
    Server {
        pid: guard,
        domain: "dns.rnet",
    }
}

fn churn(lab: &Lab, client: &NetNs, n: usize, report: &mut String) {
    let dir = lab.state_dir().join(format!("rnet-{n}"));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ns = client.try_clone().unwrap();
    let s2 = stop.clone();
    let asker = std::thread::spawn(move || {
        let gw = SocketAddr::new(GW.parse().unwrap(), 53);
        let (mut ok, mut bad) = (0u64, 0u64);
        while !s2.load(std::sync::atomic::Ordering::SeqCst) {
            match dns_query(&ns, gw, "c0", QType::A) {
                Ok(a) if a.addrs() == vec![IpAddr::V4(addr_of(0))] => ok += 1,
                _ => bad += 1,
            }
        }
        (ok, bad)
    });
    let net = NetworkSpec {
        name: "bench".into(),
        domain: "dns.rnet".into(),
        internal: false,
        listen: vec![GW.parse().unwrap()],
        upstreams: vec![],
    };
    let mut c = Client::connect(&dir).unwrap();
    let t0 = Instant::now();
    for i in 0..1000usize {
        let att = AttachmentId {
            container_id: format!("churn{i}"),
            ifname: "eth0".into(),
        };
        c.request(&Request::Register {
            network: net.clone(),
            attachment: att.clone(),
            names: vec![format!("churn{i}")],
            addrs: vec![IpAddr::V4(Ipv4Addr::new(10, 99, 200, (i % 250) as u8 + 1))],
        })
        .unwrap();
        c.request(&Request::Unregister {
            network: "bench".into(),
            attachment: att,
        })
        .unwrap();
    }
    let took = t0.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, bad) = asker.join().unwrap();
    let _ = writeln!(
        report,
        "rnet-dns {n} names: churn 1000 add+remove in {took:?}; lookups of an existing name meanwhile: {ok} ok, {bad} failed"
    );
}

fn start_dnsmasq(lab: &Lab, client: &NetNs, n: usize) -> Server {
    let dir = lab.state_dir().join(format!("dnsmasq-{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut hosts = format!("{CLIENT} client client.dns.rnet\n");
    for i in 0..n {
        let _ = writeln!(hosts, "{} c{i} c{i}.dns.rnet", addr_of(i));
    }
    std::fs::write(dir.join("hosts"), hosts).unwrap();
    let mut cmd = Command::new("taskset");
    cmd.args([
        "-c",
        "0",
        "dnsmasq",
        "--no-daemon",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
    ])
    .arg(format!("--addn-hosts={}", dir.join("hosts").display()))
    .arg(format!("--listen-address={GW}"))
    .args([
        "--domain-needed",
        "--local=/dns.rnet/",
        "--user=root",
        "--group=root",
    ])
    .arg(format!("--pid-file={}", dir.join("pid").display()))
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let child = lab.host().spawn(&mut cmd).unwrap();
    let pid = Pid(child.id(), Some(child));
    wait_answer(client, "c0");
    Server {
        pid,
        domain: "dns.rnet",
    }
}

fn start_aardvark(lab: &Lab, client: &NetNs, n: usize) -> Option<Server> {
    let exe = Path::new("/usr/lib/podman/aardvark-dns");
    if !exe.is_file() {
        return None;
    }
    let dir = lab.state_dir().join(format!("aardvark-{n}"));
    let cfg = dir.join("cfg");
    std::fs::create_dir_all(&cfg).unwrap();
    let mut f = format!("{GW}\nclient {CLIENT}  client\n");
    for i in 0..n {
        let _ = writeln!(f, "ctr{i:058} {}  c{i}", addr_of(i));
    }
    std::fs::write(cfg.join("bench"), f).unwrap();
    // aardvark forwards unknown names to the host's resolv.conf: give it a
    // private one pointing at a closed port in the lab, via a mount namespace.
    std::fs::write(dir.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    let script = format!(
        "mount --bind {} /etc/resolv.conf && exec taskset -c 0 {} --config {} -p 53 run",
        dir.join("resolv.conf").display(),
        exe.display(),
        cfg.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = lab.host().spawn(&mut cmd).unwrap();
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(5);
    let pid = loop {
        if let Some(p) = std::fs::read_to_string(cfg.join("aardvark.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        assert!(Instant::now() < deadline, "aardvark-dns wrote no pid file");
        std::thread::sleep(Duration::from_millis(20));
    };
    let guard = Pid(pid, None);
    wait_answer(client, "c0");
    Some(Server {
        pid: guard,
        domain: "dns.podman",
    })
}

fn arg(args: &[String], k: &str, d: &str) -> String {
    args.iter()
        .position(|a| a == k)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| d.to_owned())
}

fn main() {
    netns_fixtures::require_root().expect(netns_fixtures::NEED_ROOT);
    let args: Vec<String> = std::env::args().collect();
    let names: Vec<usize> = arg(&args, "--names", "10,1000,10000")
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let secs: u32 = arg(&args, "--secs", "10").parse().unwrap();
    let servers = arg(&args, "--servers", "rnet,dnsmasq,aardvark");
    let kinds = arg(&args, "--kinds", "bare,domain,unknown,mixed");
    let mut report = String::new();
    let _ = writeln!(
        report,
        "| server | names | kind | QPS | lost | p50 µs | p99 µs | rcodes |\n|---|---|---|---|---|---|---|---|"
    );
    let mut extra = String::new();
    for &n in &names {
        for server in servers.split(',') {
            let lab = Lab::new().unwrap();
            let client = NetNs::new_unnamed().unwrap();
            veth_pair(
                lab.host(),
                "dnsb0",
                &["10.99.0.1/16".parse().unwrap()],
                &client,
                "eth0",
                &[format!("{CLIENT}/16").parse().unwrap()],
            )
            .unwrap();
            let srv = match server {
                "rnet" => start_rnet(&lab, &client, n, &mut extra),
                "dnsmasq" => start_dnsmasq(&lab, &client, n),
                "aardvark" => match start_aardvark(&lab, &client, n) {
                    Some(s) => s,
                    None => {
                        let _ = writeln!(extra, "aardvark-dns not installed");
                        continue;
                    }
                },
                other => panic!("unknown server {other}"),
            };
            for kind in kinds.split(',') {
                let file = query_file(lab.state_dir(), kind, n, srv.domain);
                let p = dnsperf(&client, &file, secs);
                let _ = writeln!(
                    report,
                    "| {server} | {n} | {kind} | {:.0} | {} | {:.0} | {:.0} | {} |",
                    p.qps, p.lost, p.p50_us, p.p99_us, p.rcodes
                );
                eprintln!(
                    "{server} {n} {kind}: {:.0} qps p99 {:.0} µs",
                    p.qps, p.p99_us
                );
            }
            let (rss, hwm) = rss_kb(srv.pid.0);
            let _ = writeln!(extra, "{server} {n} names: VmRSS {rss} kB, VmHWM {hwm} kB");
            if server == "rnet" {
                churn(&lab, &client, n, &mut extra);
            }
            drop(srv);
        }
    }
    println!("{report}\n{extra}");
}
