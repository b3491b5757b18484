//! The DNS scenario: rnet-dns against dnsmasq and aardvark-dns (Debian's),
//! each a black box started as an executable, in a throwaway lab.
//!
//! Topology per server and name count: a lab "host" namespace with the
//! server bound on 10.99.0.1 (a veth end), and a client namespace
//! (10.99.0.2, registered as a container on the network, so scoping lets it
//! see the names) running `dnsperf`. Server pinned to CPU 0, dnsperf to
//! CPU 1. Names `c0..cN` (addresses 10.99.x.y, 64-hex container IDs as
//! runtimes use) are loaded: through the control socket for rnet-dns (as the dnsname
//! plugin registers them), as a hosts file for dnsmasq, as a network config
//! file for aardvark-dns (as netavark writes it).
//!
//! Measured per server and name count:
//! - per query kind (bare name, name.domain, unknown name in the domain,
//!   a mix with AAAA and PTR): QPS and lost queries from one `dnsperf` run,
//!   p50/p99 from a second run with `-v` (every answered query's latency),
//!   and the server's own CPU time during the QPS run (`/proc/PID/stat`):
//!   on two cores one dnsperf saturates its CPU at about 140k QPS, so a
//!   server below 100% of its CPU is waiting for the client, and queries
//!   per server CPU-second is its capacity; both ratios are printed against
//!   aardvark-dns and dnsmasq, cell by cell;
//! - the same queries from rnet-bench's own load client
//!   ([`crate::dnsload`]: the same 200 queries in flight over 4 sockets,
//!   with less client work per query), which drives a server that dnsperf
//!   leaves idle to its own limit: QPS, server CPU, lost queries and
//!   p50/p99 from one run, and the same ratio tables;
//! - RSS (VmRSS) once the names are loaded and after the query runs, and
//!   the high-water mark (VmHWM);
//! - start-up: from exec to the first correct answer for the last name, with
//!   the names already in the server's state (rnet-dns: killed and started
//!   again on its registry; the others: started on their files);
//! - registrations while a client asks for an existing name in a loop: time
//!   from the start of a registration to the first correct answer for the new
//!   name (rnet-dns: one control request, acknowledged once live; dnsmasq: a
//!   hosts line appended and SIGHUP; aardvark-dns: a config line appended and
//!   SIGHUP, as netavark does), how many were answered at the very first
//!   query, and how many lookups of the existing name failed meanwhile.
//!
//! Nothing touches the machine's namespace. Every process started here is
//! killed by PID and reaped (the scenario makes rnet-bench a child
//! subreaper while it runs, so the daemons that detach are reaped too).

use crate::chain::state_parent;
use anyhow::{Context, Result, bail};
use netns_fixtures::{Lab, QType, dns_query_timeout, veth_pair};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const GW: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const AARDVARK: &str = "/usr/lib/podman/aardvark-dns";

/// Options of the `dns` scenario.
#[derive(clap::Args, Debug)]
pub struct DnsOpts {
    /// DNS scenario: name counts (comma-separated).
    #[arg(long, default_value = "10,1000,10000")]
    dns_names: String,
    /// DNS scenario: servers (comma-separated): rnet, dnsmasq, aardvark.
    #[arg(long, default_value = "rnet,dnsmasq,aardvark")]
    dns_servers: String,
    /// DNS scenario: query kinds (comma-separated): bare, domain, unknown, mixed.
    #[arg(long, default_value = "bare,domain,unknown,mixed")]
    dns_kinds: String,
    /// DNS scenario: seconds per dnsperf run (two runs per kind).
    #[arg(long, default_value_t = 3)]
    dns_secs: u32,
    /// DNS scenario: registrations timed while an existing name is asked.
    #[arg(long, default_value_t = 50)]
    dns_changes: usize,
    /// DNS scenario: another rnet-dns executable (an earlier build) to run
    /// beside the current one, as server "rnet-dns-baseline".
    #[arg(long)]
    dns_baseline: Option<PathBuf>,
}

fn addr_of(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, 1 + (i / 250) as u8, 1 + (i % 250) as u8)
}

fn new_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, 250 + (i / 250) as u8, 1 + (i % 250) as u8)
}

fn cid(i: usize) -> String {
    format!("{i:064x}")
}

/// A process started here: SIGKILLed and reaped on drop.
struct Proc {
    pid: u32,
    child: Option<Child>,
}

impl Proc {
    fn signal(&self, sig: rustix::process::Signal) -> Result<()> {
        let pid = i32::try_from(self.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .context("bad pid")?;
        rustix::process::kill_process(pid, sig)
            .with_context(|| format!("signalling pid {}", self.pid))
    }

    fn stop(&mut self) {
        let _ = self.signal(rustix::process::Signal::KILL);
        match &mut self.child {
            Some(c) => {
                let _ = c.wait();
            }
            None => {
                // Not our child: a detached daemon, reparented to us as the
                // subreaper (ECHILD otherwise, and then nothing to reap).
                if let Some(p) = i32::try_from(self.pid)
                    .ok()
                    .and_then(rustix::process::Pid::from_raw)
                {
                    let _ =
                        rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty());
                }
            }
        }
        self.pid = 0;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.pid != 0 {
            self.stop();
        }
    }
}

fn pin(pid: u32, cpu: u32) {
    let _ = Command::new("taskset")
        .args(["-a", "-pc", &cpu.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
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

fn gw() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(GW), 53)
}

/// Whether `name` answers with exactly `ip` (one try).
fn answers(client: &netns_fixtures::Container, name: &str, ip: Ipv4Addr, t: Duration) -> bool {
    matches!(dns_query_timeout(client.ns(), gw(), name, QType::A, t),
        Ok(a) if a.addrs() == vec![IpAddr::V4(ip)])
}

/// Polls until `name` answers `ip`; returns the time taken and the number of
/// failed tries before, or an error after `limit`.
fn until_answered(
    client: &netns_fixtures::Container,
    name: &str,
    ip: Ipv4Addr,
    t0: Instant,
    limit: Duration,
) -> Result<(Duration, usize)> {
    let mut misses = 0;
    loop {
        // Short tries first: before a server listens, the kernel's ICMP
        // rate limit swallows most "port unreachable" replies, and a long
        // try would add its whole timeout to the start-up measured.
        let t = if t0.elapsed() < Duration::from_secs(2) {
            Duration::from_millis(10)
        } else {
            Duration::from_millis(500)
        };
        if answers(client, name, ip, t) {
            return Ok((t0.elapsed(), misses));
        }
        misses += 1;
        if t0.elapsed() > limit {
            bail!("{name} did not resolve to {ip} within {limit:?}");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// The rnet-dns control socket (JSON lines), used as the dnsname plugin does.
struct Ctl(BufReader<UnixStream>);

impl Ctl {
    fn connect(dir: &Path) -> Result<Ctl> {
        let s = UnixStream::connect(dir.join("control.sock"))
            .with_context(|| format!("connecting to rnet-dns in {}", dir.display()))?;
        Ok(Ctl(BufReader::new(s)))
    }

    fn call(&mut self, req: &Value) -> Result<Value> {
        let mut line = serde_json::to_vec(req)?;
        line.push(b'\n');
        self.0.get_mut().write_all(&line)?;
        let mut buf = String::new();
        self.0.read_line(&mut buf)?;
        let v: Value = serde_json::from_str(&buf).context("rnet-dns reply")?;
        if v["ok"] != json!(true) {
            bail!("rnet-dns refused {req}: {v}");
        }
        Ok(v)
    }

    fn register(&mut self, id: &str, name: &str, ip: Ipv4Addr) -> Result<()> {
        self.call(&json!({"op": "register",
            "network": {"name": "bench", "domain": "dns.rnet", "internal": false,
                        "listen": [GW], "upstreams": []},
            "attachment": {"containerID": id, "ifname": "eth0"},
            "names": [name], "addrs": [ip]}))
            .map(drop)
    }

    fn unregister(&mut self, id: &str) -> Result<()> {
        self.call(&json!({"op": "unregister", "network": "bench",
            "attachment": {"containerID": id, "ifname": "eth0"}}))
            .map(drop)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rnet,
    /// rnet-dns, an earlier build (`--dns-baseline`).
    Baseline,
    Dnsmasq,
    Aardvark,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Rnet => "rnet-dns",
            Kind::Baseline => "rnet-dns-baseline",
            Kind::Dnsmasq => "dnsmasq",
            Kind::Aardvark => "aardvark-dns",
        }
    }

    fn domain(self) -> &'static str {
        match self {
            Kind::Aardvark => "dns.podman",
            _ => "dns.rnet",
        }
    }
}

/// One server under test, with its names loaded.
struct Server<'l> {
    kind: Kind,
    lab: &'l Lab,
    exe: PathBuf,
    dir: PathBuf,
    n: usize,
    proc: Proc,
    ctl: Option<Ctl>,
    /// Names added by registrations (name, container ID, address).
    extra: Vec<(String, String, Ipv4Addr)>,
}

impl Server<'_> {
    fn hosts_file(&self) -> PathBuf {
        self.dir.join("hosts")
    }

    fn aardvark_cfg(&self) -> PathBuf {
        self.dir.join("cfg")
    }

    /// Writes the server's files (dnsmasq, aardvark) for the base names and
    /// the current extra ones.
    fn write_files(&self) -> Result<()> {
        match self.kind {
            Kind::Rnet | Kind::Baseline => {}
            Kind::Dnsmasq => {
                let mut hosts = format!("{CLIENT} client client.dns.rnet\n");
                for i in 0..self.n {
                    let _ = writeln!(hosts, "{} c{i} c{i}.dns.rnet", addr_of(i));
                }
                for (name, _, ip) in &self.extra {
                    let _ = writeln!(hosts, "{ip} {name} {name}.dns.rnet");
                }
                std::fs::write(self.hosts_file(), hosts)?;
            }
            Kind::Aardvark => {
                // netavark's format: listen addresses, then one line per
                // container: ID, IPv4s, IPv6s, names.
                let mut f = format!("{GW}\n{} {CLIENT}  client\n", cid(usize::MAX >> 1));
                for i in 0..self.n {
                    let _ = writeln!(f, "{} {}  c{i}", cid(i), addr_of(i));
                }
                for (name, id, ip) in &self.extra {
                    let _ = writeln!(f, "{id} {ip}  {name}");
                }
                std::fs::write(self.aardvark_cfg().join("bench"), f)?;
            }
        }
        Ok(())
    }

    /// Starts the server on what its state holds; returns when it answers
    /// the last name (the start-up time).
    fn start(&mut self, client: &netns_fixtures::Container) -> Result<Duration> {
        let t0 = Instant::now();
        match self.kind {
            Kind::Rnet | Kind::Baseline => {
                let mut cmd = Command::new(&self.exe);
                cmd.arg("run").arg("--state-dir").arg(&self.dir).args([
                    "--port",
                    "53",
                    "--upstream",
                    "127.0.0.1:9",
                    "--idle-exit",
                    "0",
                ]);
                let out = self
                    .lab
                    .host()
                    .output(&mut cmd)
                    .context("running rnet-dns")?;
                if !out.status.success() {
                    bail!(
                        "rnet-dns did not start: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                let pid: u32 = String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .context("rnet-dns printed no pid")?;
                self.proc = Proc { pid, child: None };
                pin(pid, 0);
                self.ctl = Some(Ctl::connect(&self.dir)?);
                if self.n == 0 {
                    // Nothing to ask for yet: ready is the start-up.
                    return Ok(t0.elapsed());
                }
            }
            Kind::Dnsmasq => {
                let mut cmd = Command::new("taskset");
                cmd.args([
                    "-c",
                    "0",
                    "dnsmasq",
                    "--no-daemon",
                    "--no-resolv",
                    "--no-hosts",
                ])
                .arg("--bind-interfaces")
                .arg(format!("--addn-hosts={}", self.hosts_file().display()))
                .arg(format!("--listen-address={GW}"))
                .args(["--domain-needed", "--local=/dns.rnet/", "--user=root"])
                .arg("--group=root")
                .arg(format!("--pid-file={}", self.dir.join("pid").display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null());
                let child = self
                    .lab
                    .host()
                    .spawn(&mut cmd)
                    .context("starting dnsmasq")?;
                self.proc = Proc {
                    pid: child.id(),
                    child: Some(child),
                };
            }
            Kind::Aardvark => {
                let pidfile = self.aardvark_cfg().join("aardvark.pid");
                let _ = std::fs::remove_file(&pidfile);
                // aardvark forwards unknown names to the host's resolv.conf:
                // give it a private one pointing at a closed port in the lab,
                // through a mount namespace.
                let resolv = self.dir.join("resolv.conf");
                std::fs::write(&resolv, "nameserver 127.0.0.1\n")?;
                let script = format!(
                    "mount --bind {} /etc/resolv.conf && exec taskset -c 0 {AARDVARK} --config {} -p 53 run",
                    resolv.display(),
                    self.aardvark_cfg().display()
                );
                let mut cmd = Command::new("unshare");
                cmd.args(["-m", "sh", "-c", &script])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                let mut child = self
                    .lab
                    .host()
                    .spawn(&mut cmd)
                    .context("starting aardvark-dns")?;
                let _ = child.wait();
                let deadline = Instant::now() + Duration::from_secs(10);
                let pid = loop {
                    if let Some(p) = std::fs::read_to_string(&pidfile)
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                    {
                        break p;
                    }
                    if Instant::now() > deadline {
                        bail!("aardvark-dns wrote no pid file");
                    }
                    std::thread::sleep(Duration::from_millis(1));
                };
                self.proc = Proc { pid, child: None };
            }
        }
        let last = self.n.saturating_sub(1);
        let (name, ip) = if self.n == 0 {
            ("client".to_owned(), CLIENT)
        } else {
            (format!("c{last}"), addr_of(last))
        };
        let (took, _) = until_answered(client, &name, ip, t0, Duration::from_secs(30))?;
        Ok(took)
    }

    /// Adds one name as the server's users do it.
    fn add(&mut self, name: &str, id: &str, ip: Ipv4Addr) -> Result<()> {
        self.extra.push((name.to_owned(), id.to_owned(), ip));
        match self.kind {
            Kind::Rnet | Kind::Baseline => self.ctl()?.register(id, name, ip),
            Kind::Dnsmasq | Kind::Aardvark => {
                self.write_files()?;
                self.proc.signal(rustix::process::Signal::HUP)
            }
        }
    }

    /// Removes every added name.
    fn remove_extra(&mut self) -> Result<()> {
        let extra = std::mem::take(&mut self.extra);
        match self.kind {
            Kind::Rnet | Kind::Baseline => {
                for (_, id, _) in &extra {
                    self.ctl()?.unregister(id)?;
                }
                Ok(())
            }
            Kind::Dnsmasq | Kind::Aardvark => {
                self.write_files()?;
                self.proc.signal(rustix::process::Signal::HUP)
            }
        }
    }

    fn ctl(&mut self) -> Result<&mut Ctl> {
        self.ctl.as_mut().context("rnet-dns control connection")
    }
}

struct Perf {
    qps: f64,
    /// Queries answered per second of the server's own CPU time (user +
    /// system, all its threads) during the QPS run: its capacity, which the
    /// measured QPS shows only while the client is not the bottleneck.
    qps_per_cpu: f64,
    /// The server's CPU time during the QPS run, as a share of the run.
    cpu_share: f64,
    lost: u64,
    p50_us: f64,
    p99_us: f64,
    rcodes: String,
}

fn query_file(dir: &Path, kind: &str, n: usize, domain: &str) -> Result<PathBuf> {
    let mut s = String::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let n = n.max(1);
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
            "ptr" => {
                let o = addr_of(i).octets();
                writeln!(s, "{}.{}.{}.{}.in-addr.arpa PTR", o[3], o[2], o[1], o[0])
            }
            other => bail!("unknown DNS query kind {other:?}; known: bare, domain, unknown, mixed"),
        };
    }
    let p = dir.join(format!("q-{kind}-{n}-{domain}.txt"));
    std::fs::write(&p, s)?;
    Ok(p)
}

/// CPU time of process `pid` (user + system, every thread) from
/// `/proc/PID/stat`, in seconds (ticks of USER_HZ, 100 on Linux).
fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rfind(')').and_then(|i| s.get(i + 2..)).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks as f64 / 100.0
}

fn dnsperf(
    client: &netns_fixtures::Container,
    server_pid: u32,
    file: &Path,
    secs: u32,
) -> Result<Perf> {
    let run = |verbose: bool| -> Result<String> {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "1", "dnsperf", "-s", &GW.to_string(), "-d"])
            .arg(file)
            .args(["-l", &secs.to_string(), "-c", "4", "-q", "200", "-t", "2"]);
        if verbose {
            cmd.arg("-v");
        }
        let out = client.ns().output(&mut cmd).context("running dnsperf")?;
        if !out.status.success() {
            bail!("dnsperf failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let cpu0 = cpu_secs(server_pid);
    let text = run(false)?;
    let cpu = cpu_secs(server_pid) - cpu0;
    let field = |k: &str| -> String {
        text.lines()
            .find(|l| l.trim_start().starts_with(k))
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
            .unwrap_or_default()
    };
    let first = |k: &str| field(k).split_whitespace().next().unwrap_or("").to_owned();
    let qps: f64 = first("Queries per second").parse().unwrap_or(0.0);
    let completed: f64 = first("Queries completed").parse().unwrap_or(0.0);
    let elapsed: f64 = first("Run time (s)").parse().unwrap_or(f64::from(secs));
    let lost: u64 = first("Queries lost").parse().unwrap_or(0);
    let rcodes = field("Response codes");
    let vtext = run(true)?;
    let mut lat: Vec<f64> = vtext
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .collect();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |s| s * 1e6)
    };
    Ok(Perf {
        qps,
        qps_per_cpu: if cpu > 0.0 { completed / cpu } else { 0.0 },
        cpu_share: if elapsed > 0.0 { cpu / elapsed } else { 0.0 },
        lost,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        rcodes,
    })
}

/// The queries of a dnsperf data file (`name TYPE` per line), in wire format.
fn wire_queries(file: &Path) -> Result<Vec<Vec<u8>>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading query file {}", file.display()))?;
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?, w.next().unwrap_or("A")))
        })
        .map(|(name, ty)| {
            let qt = match ty {
                "A" => QType::A,
                "AAAA" => QType::Aaaa,
                "PTR" => QType::Ptr,
                other => bail!(
                    "query type {other} in {} is not one the load client asks",
                    file.display()
                ),
            };
            netns_fixtures::build_query(0, name, qt).map_err(anyhow::Error::from)
        })
        .collect()
}

/// The queries of `file` from rnet-bench's own load client
/// ([`crate::dnsload`]) in the client's namespace, pinned to CPU 1.
fn load_client(
    client: &netns_fixtures::Container,
    server_pid: u32,
    file: &Path,
    secs: u32,
) -> Result<Perf> {
    let queries = wire_queries(file)?;
    let server = SocketAddr::new(IpAddr::V4(GW), 53);
    let cpu0 = cpu_secs(server_pid);
    let l = client
        .ns()
        .run(|| crate::dnsload::run(server, &queries, f64::from(secs), 1))??;
    let cpu = cpu_secs(server_pid) - cpu0;
    let total = l.answered.max(1) as f64;
    let share = |k: usize| 100.0 * l.rcodes[k] as f64 / total;
    Ok(Perf {
        qps: l.qps,
        qps_per_cpu: if cpu > 0.0 {
            l.answered as f64 / cpu
        } else {
            0.0
        },
        cpu_share: if l.secs > 0.0 { cpu / l.secs } else { 0.0 },
        lost: l.lost,
        p50_us: l.p50_us,
        p99_us: l.p99_us,
        rcodes: format!(
            "NOERROR {:.2}%, NXDOMAIN {:.2}%, other {:.2}%",
            share(0),
            share(1),
            share(2)
        ),
    })
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// One row of the second table.
struct Row {
    server: &'static str,
    n: usize,
    startup: Duration,
    rss_loaded: u64,
    rss_after: u64,
    hwm: u64,
    load: String,
    reg_p50: Duration,
    reg_p99: Duration,
    first_try: usize,
    changes: usize,
    asked: Asked,
}

/// Registrations while an existing name is asked in a loop.
fn churn(
    srv: &mut Server<'_>,
    client: &netns_fixtures::Container,
    changes: usize,
) -> Result<(Vec<Duration>, usize, Asked)> {
    let stop = Arc::new(AtomicBool::new(false));
    let ns = client
        .ns()
        .try_clone()
        .context("cloning the client namespace")?;
    let s2 = stop.clone();
    let asker = std::thread::spawn(move || {
        let mut a = Asked::default();
        while !s2.load(Ordering::SeqCst) {
            let t = Instant::now();
            match dns_query_timeout(&ns, gw(), "c0", QType::A, Duration::from_secs(1)) {
                Ok(r) if r.addrs() == vec![IpAddr::V4(addr_of(0))] => a.ok += 1,
                Ok(_) => a.wrong += 1,
                Err(_) => a.unanswered += 1,
            }
            a.slowest = a.slowest.max(t.elapsed());
        }
        a
    });
    let mut run = || -> Result<(Vec<Duration>, usize)> {
        let mut times = Vec::with_capacity(changes);
        let mut first = 0;
        for i in 0..changes {
            let name = format!("new{i}");
            let ip = new_addr(i);
            let t0 = Instant::now();
            srv.add(&name, &cid(1_000_000 + i), ip)?;
            let (took, misses) = until_answered(client, &name, ip, t0, Duration::from_secs(10))?;
            times.push(took);
            if misses == 0 {
                first += 1;
            }
        }
        srv.remove_extra()?;
        Ok((times, first))
    };
    let r = run();
    stop.store(true, Ordering::SeqCst);
    let asked = asker.join().unwrap_or_default();
    let (times, first) = r?;
    Ok((times, first, asked))
}

/// Lookups of an existing name during registrations.
#[derive(Default)]
struct Asked {
    ok: u64,
    /// Answered, but not with the name's address (NXDOMAIN, empty, other).
    wrong: u64,
    /// No answer within 1 s.
    unanswered: u64,
    slowest: Duration,
}

/// What the query runs fill in: per client (dnsperf, then the load client
/// of `dnsload`), a table's rows and the cells for the ratio tables.
#[derive(Default)]
struct Tables {
    perf_rows: String,
    cells: Vec<Cell>,
    load_rows: String,
    load_cells: Vec<Cell>,
}

/// One QPS measurement, for the ratio table.
struct Cell {
    server: &'static str,
    n: usize,
    kind: String,
    qps: f64,
    qps_per_cpu: f64,
    p99_us: f64,
}

fn one(kind: Kind, n: usize, o: &DnsOpts, exe: &Path, t: &mut Tables) -> Result<Option<Row>> {
    if kind == Kind::Aardvark && !Path::new(AARDVARK).is_file() {
        return Ok(None);
    }
    let lab = Lab::new_in(&state_parent()).context("cannot build a lab (root needed)")?;
    let client = lab.add_container("dnsclient")?;
    veth_pair(
        lab.host(),
        "dnsb0",
        &[format!("{GW}/16").parse()?],
        client.ns(),
        "eth0",
        &[format!("{CLIENT}/16").parse()?],
    )?;
    let dir = lab.state_dir().join(kind.name());
    std::fs::create_dir_all(&dir)?;
    let mut srv = Server {
        kind,
        lab: &lab,
        exe: exe.to_path_buf(),
        dir,
        n,
        proc: Proc {
            pid: 0,
            child: None,
        },
        ctl: None,
        extra: Vec::new(),
    };
    if kind == Kind::Aardvark {
        std::fs::create_dir_all(srv.aardvark_cfg())?;
    }
    let mut load = String::new();
    let mut startup = Duration::ZERO;
    match kind {
        Kind::Rnet | Kind::Baseline => {
            // Start empty, then register the client and the names one by one,
            // each acknowledged, then asked at once (every n/100-th).
            srv.n = 0;
            srv.start(&client)?;
            srv.n = n;
            let ctl = srv.ctl()?;
            ctl.register(&cid(usize::MAX >> 1), "client", CLIENT)?;
            let (mut acks, mut asked, mut missed) = (Vec::with_capacity(n), 0, 0);
            let t = Instant::now();
            let every = (n / 100).max(1);
            for i in 0..n {
                let t0 = Instant::now();
                srv.ctl()?.register(&cid(i), &format!("c{i}"), addr_of(i))?;
                acks.push(t0.elapsed());
                if i % every == 0 {
                    asked += 1;
                    if !answers(
                        &client,
                        &format!("c{i}"),
                        addr_of(i),
                        Duration::from_secs(1),
                    ) {
                        missed += 1;
                    }
                }
            }
            let _ = write!(
                load,
                "{n} registrations in {:.2} s, ack p50 {} ms p99 {} ms; {missed} of {asked} not answered at the first query after the ack",
                t.elapsed().as_secs_f64(),
                ms(pct(&mut acks, 0.5)),
                ms(pct(&mut acks, 0.99)),
            );
        }
        Kind::Dnsmasq | Kind::Aardvark => {
            srv.write_files()?;
            startup = srv.start(&client)?;
            let _ = write!(load, "{n} names from files at start");
        }
    }
    let (rss_loaded, _) = rss_kb(srv.proc.pid);
    for qk in o.dns_kinds.split(',').map(str::trim) {
        let file = query_file(lab.state_dir(), qk, n, kind.domain())?;
        let p = dnsperf(&client, srv.proc.pid, &file, o.dns_secs)?;
        let l = load_client(&client, srv.proc.pid, &file, o.dns_secs)?;
        for (p, rows, cells, what) in [
            (&p, &mut t.perf_rows, &mut t.cells, "dnsperf"),
            (&l, &mut t.load_rows, &mut t.load_cells, "load client"),
        ] {
            cells.push(Cell {
                server: kind.name(),
                n,
                kind: qk.to_owned(),
                qps: p.qps,
                qps_per_cpu: p.qps_per_cpu,
                p99_us: p.p99_us,
            });
            let _ = writeln!(
                rows,
                "| {} | {n} | {qk} | {:.0} | {:.0}% | {:.0} | {} | {:.0} | {:.0} | {} |",
                kind.name(),
                p.qps,
                p.cpu_share * 100.0,
                p.qps_per_cpu,
                p.lost,
                p.p50_us,
                p.p99_us,
                p.rcodes
            );
            eprintln!(
                "dns: {} {n} {qk} ({what}): {:.0} qps at {:.0}% server CPU, p99 {:.0} µs",
                kind.name(),
                p.qps,
                p.cpu_share * 100.0,
                p.p99_us
            );
        }
    }
    let (rss_after, hwm) = rss_kb(srv.proc.pid);
    let (mut times, first_try, asked) = churn(&mut srv, &client, o.dns_changes)?;
    if matches!(kind, Kind::Rnet | Kind::Baseline) {
        // Start-up on a restored registry: stop it hard, start it again.
        srv.ctl = None;
        srv.proc.stop();
        startup = srv.start(&client)?;
        let (rss, _) = rss_kb(srv.proc.pid);
        let _ = write!(load, "; restarted on its registry: RSS {rss} kB");
    }
    srv.proc.stop();
    Ok(Some(Row {
        server: kind.name(),
        n,
        startup,
        rss_loaded,
        rss_after,
        hwm,
        load,
        reg_p50: pct(&mut times, 0.5),
        reg_p99: pct(&mut times, 0.99),
        first_try,
        changes: o.dns_changes,
        asked,
    }))
}

/// rnet-dns against `other`, cell by cell: QPS, QPS per server CPU-second,
/// and whether rnet's p99 is lower; then the smallest ratios.
fn ratio_table(cells: &[Cell], ours: &str, other: &str) {
    let pairs: Vec<(&Cell, &Cell)> = cells
        .iter()
        .filter(|a| a.server == ours)
        .filter_map(|a| {
            cells
                .iter()
                .find(|b| b.server == other && b.n == a.n && b.kind == a.kind)
                .map(|b| (a, b))
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    println!("{ours} / {other}, cell by cell:\n");
    println!("| names | kind | QPS ratio | QPS per server CPU-s ratio | p99 lower |");
    println!("|---|---|---|---|---|");
    let ratio = |x: f64, y: f64| if y > 0.0 { x / y } else { f64::INFINITY };
    for (a, b) in &pairs {
        println!(
            "| {} | {} | {:.2} | {:.2} | {} |",
            a.n,
            a.kind,
            ratio(a.qps, b.qps),
            ratio(a.qps_per_cpu, b.qps_per_cpu),
            if a.p99_us < b.p99_us { "yes" } else { "no" }
        );
    }
    let min = |f: &dyn Fn(&Cell, &Cell) -> f64| {
        pairs
            .iter()
            .map(|(a, b)| f(a, b))
            .fold(f64::INFINITY, f64::min)
    };
    println!(
        "\nsmallest {ours}/{other} ratio over {} cells: QPS **{:.2}**, QPS per server CPU-s **{:.2}**; p99 lower in {} of {}\n",
        pairs.len(),
        min(&|a, b| ratio(a.qps, b.qps)),
        min(&|a, b| ratio(a.qps_per_cpu, b.qps_per_cpu)),
        pairs.iter().filter(|(a, b)| a.p99_us < b.p99_us).count(),
        pairs.len()
    );
}

/// Runs the DNS scenario and prints its tables.
pub(crate) fn dns(o: &DnsOpts, rnet_dir: &Path) -> Result<()> {
    let exe = rnet_dir.join("rnet-dns");
    crate::require(&[&exe])?;
    if Command::new("dnsperf").arg("-h").output().is_err() {
        bail!("dnsperf not found (apt-get install dnsperf)");
    }
    let names: Vec<usize> = o
        .dns_names
        .split(',')
        .map(|s| s.trim().parse().context("--dns-names takes numbers"))
        .collect::<Result<_>>()?;
    let mut kinds = Vec::new();
    let servers = match &o.dns_baseline {
        Some(_) => o.dns_servers.replace("rnet", "rnet,rnet-baseline"),
        None => o.dns_servers.clone(),
    };
    for s in servers.split(',').map(str::trim) {
        kinds.push(match s {
            "rnet" => Kind::Rnet,
            "rnet-baseline" => Kind::Baseline,
            "dnsmasq" => Kind::Dnsmasq,
            "aardvark" => Kind::Aardvark,
            other => bail!("unknown DNS server {other:?}; known: rnet, dnsmasq, aardvark"),
        });
    }
    // Daemons that detach are reparented to us, so they can be reaped.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .context("becoming a child subreaper")?;
    let mut t = Tables::default();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut result = Ok(());
    'outer: for &n in &names {
        for &k in &kinds {
            let exe = match (k, &o.dns_baseline) {
                (Kind::Baseline, Some(b)) => b.clone(),
                _ => exe.clone(),
            };
            match one(k, n, o, &exe, &mut t) {
                Ok(Some(r)) => rows.push(r),
                Ok(None) => notes.push(format!("{} is not installed", k.name())),
                Err(e) => {
                    result = Err(e.context(format!("{} with {n} names", k.name())));
                    break 'outer;
                }
            }
        }
    }
    let _ = rustix::process::set_child_subreaper(None);
    result?;
    println!("## 6. DNS: rnet-dns against dnsmasq and aardvark-dns\n");
    println!(
        "dnsperf -c 4 -q 200 -t 2 (a query unanswered after 2 s is lost) from a container's namespace, {} s per run (one for QPS, one with -v for latencies); server on CPU 0, dnsperf on CPU 1. Kinds: bare `cN`, domain `cN.<domain>`, unknown `nopeN.<domain>`, mixed (bare, domain, unknown, AAAA, PTR).\n",
        o.dns_secs
    );
    println!(
        "| server | names | kind | QPS | server CPU | QPS per server CPU-s | lost | p50 µs | p99 µs | rcodes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    print!("{}", t.perf_rows);
    println!();
    println!(
        "Server CPU: the server's own CPU time (user + system, all threads, from /proc/PID/stat) during the QPS run, as a share of one CPU. A server below 100% is waiting for the client: its QPS is the client's ceiling, and QPS per server CPU-second is its capacity.\n"
    );
    ratio_table(&t.cells, "rnet-dns", "aardvark-dns");
    ratio_table(&t.cells, "rnet-dns", "dnsmasq");
    println!(
        "The same queries from rnet-bench's own load client (bench/src/dnsload.rs: {} queries in flight over 4 connected sockets as dnsperf -q 200 -c 4, refills sent with one sendmmsg per socket, answers read until the socket is dry, IDs checked, lost after 2 s), pinned to CPU 1 as dnsperf is: it needs less CPU per query than dnsperf, so a server that dnsperf leaves idle is driven to its own limit here and QPS compares the servers. Latencies are from the same run.\n",
        crate::dnsload::IN_FLIGHT
    );
    println!(
        "| server | names | kind | QPS | server CPU | QPS per server CPU-s | lost | p50 µs | p99 µs | rcodes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    print!("{}", t.load_rows);
    println!();
    println!("With the load client:\n");
    ratio_table(&t.load_cells, "rnet-dns", "aardvark-dns");
    ratio_table(&t.load_cells, "rnet-dns", "dnsmasq");
    println!(
        "Start-up: exec to the first answer for the last name, names already in the server's state. Registration: start to the first correct answer for the new name ({} per cell, each asked at once and then every 0.5 ms) while another thread asks for an existing name in a loop.\n",
        o.dns_changes
    );
    println!(
        "| server | names | start-up ms | RSS loaded kB | RSS after queries kB | VmHWM kB | registration to answer p50 ms | p99 ms | answered at first query | existing name meanwhile: ok / wrong / unanswered (1 s) | slowest ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} of {} | {} / {} / {} | {} |",
            r.server,
            r.n,
            ms(r.startup),
            r.rss_loaded,
            r.rss_after,
            r.hwm,
            ms(r.reg_p50),
            ms(r.reg_p99),
            r.first_try,
            r.changes,
            r.asked.ok,
            r.asked.wrong,
            r.asked.unanswered,
            ms(r.asked.slowest)
        );
    }
    println!();
    for r in rows.iter().filter(|r| !r.load.is_empty()) {
        println!("- {} with {} names: {}", r.server, r.n, r.load);
    }
    for n in notes {
        println!("- {n}");
    }
    println!();
    let at = |s: &str, n: usize| rows.iter().find(|r| r.server == s && r.n == n);
    if let Some(&max) = names.iter().max() {
        if let (Some(a), Some(b)) = (at("rnet-dns", max), at("dnsmasq", max)) {
            crate::goal_line(
                &format!("RSS after queries at {max} names, rnet-dns/dnsmasq"),
                a.rss_after as f64 / (b.rss_after.max(1)) as f64,
                1.0,
                true,
            );
        }
        if let (Some(a), Some(b)) = (at("rnet-dns", max), at("rnet-dns-baseline", max)) {
            println!(
                "RSS after queries at {max} names, rnet-dns/baseline: **{:.2}**\n",
                a.rss_after as f64 / (b.rss_after.max(1)) as f64
            );
        }
    }
    Ok(())
}
