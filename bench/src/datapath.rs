//! Data-path scenarios: what a container's packets cost once it is attached.
//!
//! * `datapath`: TCP throughput (iperf3, one stream) container to container
//!   through rnet's bridge, through the reference bridge, over a bare veth pair
//!   between two namespaces (the baseline: no bridge, no firewall state), and
//!   container to an "outside" namespace through each bridge with `ipMasq`
//!   (routed by the lab host and masqueraded). The paths are measured in turn
//!   within each repetition (A, B, C, ... A, B, C, ...), as the other scenarios
//!   interleave implementations, and the median of the repetitions is reported.
//! * `connrate`: new TCP connections per second through one published port
//!   (portmap, host port 10000 -> container port 80), from the outside
//!   namespace to the lab host's uplink address, with only that mapping and
//!   with `n` more attachments each publishing its own host port. The two
//!   states cannot be interleaved call by call, so they alternate in rounds
//!   (0, n, 0, n: the `n` attachments are added and deleted again).
//!
//! Everything lives in throwaway namespaces held by file descriptors (they
//! vanish with the process, also on Ctrl-C); the iperf3 processes are children
//! killed and reaped by PID when their guard drops, and bounded by `timeout`
//! in case this process is killed outright. Traffic stays between lab
//! namespaces.

use crate::chain::{self, Impl, Shape};
use anyhow::{Context, Result, bail};
use ipnet::{IpNet, Ipv4Net};
use netns_fixtures::{Container, Lab, Outside, OutsideConfig};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Seconds of each iperf3 measurement (after one omitted second of slow start).
const IPERF_SECONDS: u64 = 3;
/// Duration of each connection-rate sample.
const CONN_SAMPLE: Duration = Duration::from_secs(1);
/// Connection-rate samples taken in each state of each round.
const CONN_SAMPLES: usize = 5;
/// Parallel connecting clients (the machine has 2 cores; the server is one thread).
const CONN_CLIENTS: usize = 2;
/// Pause after attaching the other containers (see `connrate_impl`).
const SETTLE: Duration = Duration::from_secs(10);
/// The published host port of attachment 0 (chain.rs maps attachment `i` to 10000 + i).
const HOST_PORT: u16 = 10_000;

/// The uplink to the outside namespace. `Impl::new` adds (and drops) an
/// outside with the fixture's default names; this one uses its own names and
/// subnet so the two never meet while the first is torn down, and needs no
/// default route in the lab host (the outside subnet is on-link).
fn uplink() -> OutsideConfig {
    OutsideConfig {
        host_if: "dpup0".into(),
        outside_if: "eth0".into(),
        host_v4: Ipv4Net::new_assert(Ipv4Addr::new(203, 0, 113, 1), 24),
        outside_v4: Ipv4Net::new_assert(Ipv4Addr::new(203, 0, 113, 2), 24),
        host_v6: None,
        outside_v6: None,
        host_default_route: false,
        forwarding: true,
    }
}

/// The IPv4 address the plugins gave a container (its first global one).
fn container_v4(c: &Container) -> Result<Ipv4Addr> {
    let mut nl = c.netlink()?;
    nl.addr_list(None, None)?
        .into_iter()
        .find_map(|a| match a.addr {
            IpNet::V4(n) if !n.addr().is_loopback() => Some(n.addr()),
            _ => None,
        })
        .with_context(|| format!("container {} has no IPv4 address", c.name()))
}

/// A lab namespace that processes and sockets can be started in (the
/// containers and the outside; both hand their namespace to rnet-netns, which
/// switches only fresh threads).
trait InNs: Sync {
    fn spawn(&self, cmd: &mut Command) -> Result<Child>;
    fn output(&self, cmd: &mut Command) -> Result<std::process::Output>;
    fn run<R: Send, F: FnOnce() -> R + Send>(&self, f: F) -> Result<R>;
}

macro_rules! in_ns {
    ($t:ty) => {
        impl InNs for $t {
            fn spawn(&self, cmd: &mut Command) -> Result<Child> {
                Ok(self.ns().spawn(cmd)?)
            }
            fn output(&self, cmd: &mut Command) -> Result<std::process::Output> {
                Ok(self.ns().output(cmd)?)
            }
            fn run<R: Send, F: FnOnce() -> R + Send>(&self, f: F) -> Result<R> {
                Ok(self.ns().run(f)?)
            }
        }
    };
}
in_ns!(Container);
in_ns!(Outside);

/// A child process (`timeout ... iperf3`), stopped and reaped on drop: iperf3
/// (the child of `timeout`) and `timeout` get SIGTERM by their PIDs, and
/// `timeout` SIGKILL if it is still there a second later. iperf3 is signalled
/// by its own PID because `timeout` signalled while still forking would leave
/// it orphaned.
struct Proc(Child);

fn children_of(pid: u32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

impl Drop for Proc {
    fn drop(&mut self) {
        use rustix::process::{Pid, Signal, kill_process};
        let pid = self.0.id();
        let t = Instant::now();
        while let Ok(None) = self.0.try_wait() {
            let kids = children_of(pid);
            // Wait (briefly) for `timeout` to have started iperf3.
            if kids.is_empty() && t.elapsed() < Duration::from_millis(300) {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            for k in kids.into_iter().filter_map(Pid::from_raw) {
                let _ = kill_process(k, Signal::TERM);
            }
            let _ = kill_process(Pid::from_child(&self.0), Signal::TERM);
            break;
        }
        let t = Instant::now();
        while let Ok(None) = self.0.try_wait() {
            if t.elapsed() > Duration::from_secs(1) {
                let _ = self.0.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.0.wait();
    }
}

fn require_iperf3() -> Result<()> {
    match Command::new("iperf3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        _ => bail!("iperf3 not found: install it (apt-get install iperf3; scripts/deps.sh does)"),
    }
}

/// One iperf3 measurement: the receiver's Gbit/s, and Gbit per CPU second
/// (iperf3's own CPU use, client plus server; the veth, bridge and netfilter
/// work runs in softirq context on the sending or receiving side and is mostly
/// charged to them), a figure less exposed to other load on the machine.
#[derive(Clone, Copy)]
struct Tput {
    gbps: f64,
    per_cpu: f64,
}

/// One iperf3 TCP measurement, client in `client`, server on `server_ip:port`
/// in `server`.
/// `iperf3 ARGS` under `timeout --foreground -s KILL BOUND`: bounded should
/// this process die without stopping it, and in this process group, so a
/// Ctrl-C reaches it too.
fn bounded_iperf3(bound: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["--foreground", "-s", "KILL", bound, "iperf3"])
        .args(args);
    cmd
}

fn iperf(server: &impl InNs, server_ip: IpAddr, client: &impl InNs, port: u16) -> Result<Tput> {
    let (ip, p) = (server_ip.to_string(), port.to_string());
    // One-off server; `timeout` bounds it should this process die without
    // stopping it (the guard below stops it otherwise). `--foreground` keeps
    // it in this process group, so a Ctrl-C reaches iperf3 too.
    let bound = (IPERF_SECONDS + 30).to_string();
    let mut cmd = bounded_iperf3(&bound, &["-s", "-1", "-B", &ip, "-p", &p]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut srv = Proc(server.spawn(&mut cmd)?);
    let secs = IPERF_SECONDS.to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut cmd = bounded_iperf3(&bound, &["-c", &ip, "-p", &p, "-t", &secs, "-O", "1", "-J"]);
        let out = client.output(&mut cmd)?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        // iperf3 3.12 may exit 0 with an "error" in its JSON (connection refused).
        if out.status.success() && v.get("error").is_none() {
            let bps = v["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .with_context(|| {
                    format!(
                        "iperf3 client to {ip}:{p} printed no end.sum_received.bits_per_second: {}",
                        String::from_utf8_lossy(&out.stdout)
                            .chars()
                            .take(600)
                            .collect::<String>()
                    )
                })?;
            // The one-off server exits by itself once the test is over.
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(2) {
                if let Ok(Some(_)) = srv.0.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let cpu = &v["end"]["cpu_utilization_percent"];
            let cores = (cpu["host_total"].as_f64().unwrap_or(0.0)
                + cpu["remote_total"].as_f64().unwrap_or(0.0))
                / 100.0;
            return Ok(Tput {
                gbps: bps / 1e9,
                per_cpu: bps / 1e9 / cores.max(0.01),
            });
        }
        let err = v["error"].as_str().unwrap_or("").to_owned();
        if let Ok(Some(st)) = srv.0.try_wait() {
            bail!("iperf3 server on {ip}:{p} exited ({st}) before the test; client: {err}");
        }
        // The server may not listen yet: retry a refused connection briefly.
        if !err.contains("refused") || Instant::now() > deadline {
            bail!(
                "iperf3 client to {ip}:{p} failed ({}): {err} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two attached containers and an outside behind the lab host, for one implementation.
struct Bridged {
    imp: Impl,
    outside: Outside,
    ips: [Ipv4Addr; 2],
}

/// `bridged` frames through the inet netfilter hooks (`br_netfilter`) or not,
/// in the lab host (a per-namespace setting since Linux 5.3).
#[derive(Clone, Copy, PartialEq)]
enum BrNf {
    /// The namespace's default: on wherever `br_netfilter` is loaded or built in.
    Default,
    /// `net.bridge.bridge-nf-call-{iptables,ip6tables,arptables}=0`, as on a
    /// host where the module is not loaded.
    Off,
}

fn bridged(name: &str, rnet: bool, dir: &Path, brnf: BrNf) -> Result<Bridged> {
    let shape = Shape { portmap: false };
    let mut imp = Impl::new(name, rnet, dir, shape)?;
    if brnf == BrNf::Off {
        imp.lab().host().run(|| -> Result<()> {
            for k in ["iptables", "ip6tables", "arptables"] {
                let p = format!("/proc/sys/net/bridge/bridge-nf-call-{k}");
                std::fs::write(&p, "0").with_context(|| {
                    format!("writing 0 to {p} in the lab host (br_netfilter loaded?)")
                })?;
            }
            Ok(())
        })??;
    }
    let outside = imp.lab().add_outside(uplink())?;
    let mut ips = [Ipv4Addr::UNSPECIFIED; 2];
    for ip in &mut ips {
        let c = imp.new_container()?;
        imp.add(c, shape)?;
        *ip = container_v4(imp.container(c).context("container just created")?)?;
    }
    Ok(Bridged { imp, outside, ips })
}

impl Bridged {
    fn c(&self, i: usize) -> Result<&Container> {
        self.imp.container(i).context("container index")
    }
}

fn median_f(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match (s.first(), s.get(s.len() / 2), s.last()) {
        (Some(lo), Some(m), Some(hi)) => (*m, *lo, *hi),
        _ => (0.0, 0.0, 0.0),
    }
}

/// Section 7: TCP throughput of the data path (median of `reps` interleaved rounds).
pub(crate) fn datapath(reps: usize, rnet_dir: &Path, ref_dir: &Path) -> Result<()> {
    require_iperf3()?;
    let ours = bridged("rnet", true, rnet_dir, BrNf::Default)?;
    let theirs = bridged("reference", false, ref_dir, BrNf::Default)?;
    // Where this kernel has br_netfilter (built in here), bridged frames also
    // pass conntrack and the inet hooks; the same bridge without that shows
    // the share of the gap that is the host's setting, not the bridge's.
    let brnf_loaded = Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists();
    let ours_nf_off = if brnf_loaded {
        Some(bridged("rnet-nf-off", true, rnet_dir, BrNf::Off)?)
    } else {
        None
    };
    // The baseline: a bare veth pair between two namespaces.
    let bare = Lab::new_in(&chain::state_parent()).context("cannot build a lab (root needed)")?;
    let (va, vb) = (bare.add_container("va")?, bare.add_container("vb")?);
    let net = |last: u8| IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(10, 201, 0, last), 24));
    netns_fixtures::veth_pair(va.ns(), "eth0", &[net(1)], vb.ns(), "eth0", &[net(2)])?;
    let vb_ip = IpAddr::V4(Ipv4Addr::new(10, 201, 0, 2));

    let paths = [
        "rnet bridge, container to container",
        "reference bridge, container to container",
        "bare veth pair (baseline)",
        "rnet bridge + ipMasq, container to outside",
        "reference bridge + ipMasq, container to outside",
        "rnet bridge, container to container, bridge-nf-call-iptables=0 in the host",
    ];
    let mut v: Vec<Vec<Tput>> = vec![Vec::new(); paths.len()];
    let mut port = 5201u16;
    for _ in 0..reps {
        let mut next = || {
            port = if port >= 6200 { 5201 } else { port + 1 };
            port
        };
        v[0].push(iperf(ours.c(1)?, ours.ips[1].into(), ours.c(0)?, next())?);
        v[1].push(iperf(
            theirs.c(1)?,
            theirs.ips[1].into(),
            theirs.c(0)?,
            next(),
        )?);
        v[2].push(iperf(&vb, vb_ip, &va, next())?);
        let o = &ours.outside;
        v[3].push(iperf(o, o.v4().into(), ours.c(0)?, next())?);
        let o = &theirs.outside;
        v[4].push(iperf(o, o.v4().into(), theirs.c(0)?, next())?);
        if let Some(b) = &ours_nf_off {
            v[5].push(iperf(b.c(1)?, b.ips[1].into(), b.c(0)?, next())?);
        }
    }
    let col = |k: usize, f: fn(&Tput) -> f64| -> Vec<f64> { v[k].iter().map(f).collect() };
    let gb: fn(&Tput) -> f64 = |t| t.gbps;
    let pc: fn(&Tput) -> f64 = |t| t.per_cpu;
    let (base, base_cpu) = (median_f(&col(2, gb)).0, median_f(&col(2, pc)).0);
    println!(
        "## 7. Data path: TCP throughput, one iperf3 stream ({IPERF_SECONDS} s after 1 s omitted, {reps} interleaved rounds)\n"
    );
    println!(
        "| path | n | median Gbit/s | min | max | / bare veth | median Gbit per CPU-s | / bare veth |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (k, name) in paths.iter().enumerate() {
        if v[k].is_empty() {
            continue;
        }
        let (m, lo, hi) = median_f(&col(k, gb));
        let c = median_f(&col(k, pc)).0;
        println!(
            "| {name} | {} | {m:.2} | {lo:.2} | {hi:.2} | {:.2} | {c:.2} | {:.2} |",
            v[k].len(),
            m / base.max(1e-9),
            c / base_cpu.max(1e-9)
        );
    }
    println!();
    // Per-round ratios are less exposed to slow drifts of machine load.
    let per_round: Vec<f64> = v[0]
        .iter()
        .zip(&v[2])
        .map(|(a, b)| a.gbps / b.gbps.max(1e-9))
        .collect();
    println!(
        "rnet bridge / bare veth, median of the per-round ratios: {:.2}; per CPU second (medians): {:.2}\n",
        median_f(&per_round).0,
        median_f(&col(0, pc)).0 / base_cpu.max(1e-9)
    );
    goal_line_throughput(median_f(&col(0, gb)).0 / base.max(1e-9));
    if !v[5].is_empty() {
        println!(
            "with bridge-nf-call-iptables=0 in the lab host: rnet bridge / bare veth {:.2}\n",
            median_f(&col(5, gb)).0 / base.max(1e-9)
        );
    }
    Ok(())
}

fn goal_line_throughput(r: f64) {
    crate::goal_line(
        "rnet bridge throughput / bare veth (medians)",
        r,
        0.95,
        false,
    );
}

/// A tiny TCP server in a namespace: each accepted connection gets "ok\n" and
/// is closed (the server closes first, so TIME_WAIT stays on its side and the
/// client's ephemeral ports are free again at once). Stops on drop.
struct AcceptServer {
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AcceptServer {
    fn start(ns: &impl InNs, addr: SocketAddr) -> Result<AcceptServer> {
        let listener = ns
            .run(|| TcpListener::bind(addr))?
            .with_context(|| format!("binding {addr} in the server's namespace"))?;
        let side = listener.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name("connrate-server".into())
            .spawn(move || {
                while !st.load(Ordering::SeqCst) {
                    match side.accept() {
                        Ok((mut s, _)) => {
                            let _ = s.write_all(b"ok\n");
                        }
                        // Woken by the shutdown in drop, or a transient error.
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            })?;
        Ok(AcceptServer {
            listener,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for AcceptServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // shutdown() on a listening socket wakes a blocked accept() on Linux.
        let _ = rustix::net::shutdown(&self.listener, rustix::net::Shutdown::Read);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection: connect, read the greeting to EOF, close. True if "ok" came.
fn one_conn(target: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 16];
    let mut got = 0;
    loop {
        match s.read(&mut buf[got.min(8)..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => return false,
        }
    }
    let _ = s.shutdown(Shutdown::Both);
    got >= 3
}

/// CPU time (user + system) this process has used, all its threads, living
/// and gone, in seconds (`/proc/self/stat`, in USER_HZ = 100 ticks a second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces): state is the
    // first, utime and stime the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

/// One sample of the connection rate.
struct Sample {
    /// Connections per second of wall time.
    rate: f64,
    /// Connections per second of CPU time of this process (clients and
    /// server; the veth and netfilter work of a connection runs in softirq
    /// context on the sending thread, so it is mostly charged here too). Less
    /// exposed to other load on the machine than the wall rate.
    per_cpu: f64,
    failed: u64,
}

/// Connections per second from `client` to `target` over `dur`, with
/// `CONN_CLIENTS` sequential connectors in parallel; also the failures.
fn conn_rate(client: &impl InNs, target: SocketAddr, dur: Duration) -> Result<Sample> {
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let counts: Vec<Result<(u64, u64)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..CONN_CLIENTS)
            .map(|_| {
                s.spawn(move || -> Result<(u64, u64)> {
                    // Sockets are created inside the client namespace: the
                    // whole loop runs on a fresh thread that entered it.
                    client.run(|| {
                        let (mut ok, mut failed) = (0u64, 0u64);
                        let end = Instant::now() + dur;
                        while Instant::now() < end {
                            if one_conn(target) {
                                ok += 1;
                            } else {
                                failed += 1;
                            }
                        }
                        (ok, failed)
                    })
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("client thread panicked")))
            })
            .collect()
    });
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let (mut ok, mut failed) = (0u64, 0u64);
    for c in counts {
        let (o, f) = c?;
        ok += o;
        failed += f;
    }
    Ok(Sample {
        rate: ok as f64 / secs.max(1e-9),
        per_cpu: ok as f64 / cpu.max(0.01),
        failed,
    })
}

struct RateRow {
    name: String,
    mappings: usize,
    rates: Vec<f64>,
    per_cpu: Vec<f64>,
    failed: u64,
}

/// Connection rate for one implementation: `rounds` rounds of (only the one
/// mapping; `others` more attachments with their own host ports).
fn connrate_impl(
    name: &str,
    rnet: bool,
    dir: &Path,
    others: usize,
    rounds: usize,
) -> Result<[RateRow; 2]> {
    let shape = Shape { portmap: true };
    let mut imp = Impl::new(name, rnet, dir, shape)?;
    let outside = imp.lab().add_outside(uplink())?;
    let c0 = imp.new_container()?;
    imp.add(c0, shape)?;
    let server_ns = imp.container(c0).context("container 0")?;
    let _server = AcceptServer::start(server_ns, SocketAddr::from(([0, 0, 0, 0], 80)))?;
    let target = SocketAddr::from((outside.host_v4(), HOST_PORT));
    // Sanity: the mapping answers before anything is measured.
    let first = outside.run(|| one_conn(target))?;
    if !first {
        bail!("{name}: no answer through the published port {target} from the outside");
    }
    let mut rows = [0, others].map(|m| RateRow {
        name: name.to_owned(),
        mappings: m,
        rates: Vec::new(),
        per_cpu: Vec::new(),
        failed: 0,
    });
    let mut extra = Vec::with_capacity(others);
    for _ in 0..others {
        extra.push(imp.new_container()?);
    }
    for round in 0..rounds {
        for (k, row) in rows.iter_mut().enumerate() {
            if k == 1 {
                let t = Instant::now();
                for c in &extra {
                    imp.add(*c, shape)?;
                }
                eprintln!(
                    "{name}: {others} attachments with mappings added in {:.1} s",
                    t.elapsed().as_secs_f64()
                );
                // New interfaces send IPv6 router solicitations and MLD
                // reports for several seconds, which the bridge floods to
                // every port: let that pass, it is not what is measured.
                std::thread::sleep(SETTLE);
            }
            // Warm-up (ARP, caches) before the samples of this state.
            conn_rate(&outside, target, Duration::from_millis(200))?;
            for _ in 0..CONN_SAMPLES {
                let r = conn_rate(&outside, target, CONN_SAMPLE)?;
                row.rates.push(r.rate);
                row.per_cpu.push(r.per_cpu);
                row.failed += r.failed;
            }
        }
        if round + 1 < rounds {
            let t = Instant::now();
            for c in &extra {
                imp.del(*c, shape)?;
            }
            eprintln!(
                "{name}: {others} attachments deleted in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
    }
    Ok(rows)
}

/// Section 8: new-connection rate through one published port, 0 vs `others`
/// other mappings; the reference portmap (iptables) too if `with_reference`.
pub(crate) fn connrate(
    others: usize,
    with_reference: bool,
    rnet_dir: &Path,
    ref_dir: &Path,
) -> Result<()> {
    chain::raise_nofile(4 * others as u64 + 256);
    let mut rows = Vec::new();
    let ours = connrate_impl("rnet", true, rnet_dir, others, 2)?;
    let ratio = |a: &RateRow, b: &RateRow| {
        (
            median_f(&b.rates).0 / median_f(&a.rates).0.max(1e-9),
            median_f(&b.per_cpu).0 / median_f(&a.per_cpu).0.max(1e-9),
        )
    };
    let (wall, cpu) = ratio(&ours[0], &ours[1]);
    rows.extend(ours);
    if with_reference {
        rows.extend(connrate_impl("reference", false, ref_dir, others, 1)?);
    }
    println!(
        "## 8. Connection rate through one published port (host port {HOST_PORT} -> container 80, from the outside)\n"
    );
    println!(
        "{CONN_CLIENTS} clients connect, read a 3-byte greeting, close; samples of {} s; \
         per CPU-s = connections per second of CPU time of the benchmark process (clients, \
         server and the kernel work charged to them), less exposed to other load.\n",
        CONN_SAMPLE.as_secs_f64()
    );
    println!(
        "| implementation | other mappings | n | median conn/s | min | max | median conn per CPU-s | failed |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let (m, lo, hi) = median_f(&r.rates);
        println!(
            "| {} | {} | {} | {m:.0} | {lo:.0} | {hi:.0} | {:.0} | {} |",
            r.name,
            r.mappings,
            r.rates.len(),
            median_f(&r.per_cpu).0,
            r.failed
        );
    }
    println!();
    crate::goal_line(
        &format!("rnet rate with {others} other mappings / with 0 (medians)"),
        wall,
        0.9,
        false,
    );
    println!("(the same per CPU second: {cpu:.2})\n");
    if let [_, _, a, b] = rows.as_slice() {
        let (w, c) = ratio(a, b);
        println!("(reference: with {others} / with 0 = {w:.2}; per CPU second {c:.2})\n");
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// Processes of this test run whose command line is exactly `args`.
    fn running(args: &[&str]) -> Vec<u32> {
        let want: Vec<u8> = args
            .iter()
            .flat_map(|a| [a.as_bytes(), b"\0"].concat())
            .collect();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                // Zombies are gone for our purpose (they hold nothing).
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .ok()
                    .as_deref()
                    == Some(&want[..])
                    && !st.contains(") Z ")
            })
            .collect()
    }

    /// The guard stops the child of `timeout` too, also when dropped while
    /// `timeout` is still starting it (no network namespace involved: `sleep`).
    #[test]
    fn proc_guard_leaves_no_orphan() {
        let tag = format!(
            "{}.{}",
            1000 + std::process::id() % 1000,
            std::process::id()
        );
        for delay_ms in [0u64, 1, 3, 50] {
            let child = Command::new("timeout")
                .args(["--foreground", "-s", "KILL", "60", "sleep", &tag])
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(delay_ms));
            drop(Proc(child));
            std::thread::sleep(Duration::from_millis(100));
            assert!(
                running(&["sleep", &tag]).is_empty(),
                "sleep {tag} survived a drop after {delay_ms} ms"
            );
        }
    }

    #[test]
    fn median_of_rates() {
        assert_eq!(median_f(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(median_f(&[]), (0.0, 0.0, 0.0));
    }
}
