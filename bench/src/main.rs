//! # rnet-bench: rnet against the reference plugins and netavark, side by side
//!
//! Every scenario runs the implementations interleaved (A, B, A, B, ...) in one
//! process so machine noise hits all alike, and reports the median, p90, p99 and
//! the ratio of medians. Scenarios that touch the network build throwaway
//! namespaces and remove them (none exists yet beyond the exec floor).
//!
//! Run as root from the workspace: `cargo build --release && target/release/rnet-bench`.

mod chain;
mod datapath;
mod dns;
mod dnsload;
mod footprint;
mod holder;
mod netavark;

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Benchmark rnet against the reference CNI plugins, side by side")]
struct Opts {
    /// Internal: run as the scale scenario's namespace holder (see holder.rs).
    #[arg(long, hide = true)]
    hold_netns: bool,
    /// Iterations per implementation and scenario.
    #[arg(long, default_value_t = 300)]
    iterations: usize,
    /// Directory of the reference plugins.
    #[arg(long, default_value = "/usr/lib/cni")]
    reference_dir: PathBuf,
    /// Directory of rnet's plugin binaries (default: beside this executable).
    #[arg(long)]
    rnet_dir: Option<PathBuf>,
    /// Scenarios to run (comma-separated): exec, ipam, chain, chain-portmap, scale, parallel,
    /// datapath, connrate, footprint, dns.
    #[arg(
        long,
        default_value = "exec,ipam,chain,scale,parallel,datapath,connrate,footprint,dns"
    )]
    only: String,
    /// Containers attached in the scale scenario.
    #[arg(long, default_value_t = 1000)]
    scale: usize,
    /// Also run the reference plugins in the scale scenario (slow: minutes).
    #[arg(long)]
    scale_reference: bool,
    /// netavark executable, run side by side in exec, chain, chain-portmap,
    /// parallel and (with --scale-netavark) scale; `none` leaves it out.
    #[arg(long, default_value = netavark::DEFAULT_BIN)]
    netavark: PathBuf,
    /// Also run netavark in the scale scenario (slow: minutes).
    #[arg(long)]
    scale_netavark: bool,
    /// Interleaved rounds of iperf3 measurements in the datapath scenario.
    #[arg(long, default_value_t = 5)]
    datapath_reps: usize,
    /// Other attachments with their own mappings in the connrate scenario.
    #[arg(long, default_value_t = 1000)]
    connrate_mappings: usize,
    /// Also run the reference portmap (iptables) in the connrate scenario (slow: minutes).
    #[arg(long)]
    connrate_reference: bool,
    /// Parallel ADD counts (comma-separated).
    #[arg(long, default_value = "20,50")]
    parallel: String,
    #[command(flatten)]
    dns: dns::DnsOpts,
}

/// Summary statistics of one series.
pub(crate) struct Stats {
    median: Duration,
    p90: Duration,
    p99: Duration,
    n: usize,
}

pub(crate) fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let pick = |q: f64| -> Duration {
        if v.is_empty() {
            return Duration::ZERO;
        }
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        v[i.min(v.len() - 1)]
    };
    Stats {
        median: pick(0.5),
        p90: pick(0.9),
        p99: pick(0.99),
        n: v.len(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// Runs one plugin call and returns its wall time; fails if the plugin fails.
fn run_cni(bin: &Path, env: &[(&str, &str)], stdin: &[u8]) -> Result<Duration> {
    let t = Instant::now();
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    rnet_cni::exec::pass_trace_clock(&mut cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawn {}", bin.display()))?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin);
    }
    let out = child.wait_with_output()?;
    let d = t.elapsed();
    if !out.status.success() {
        bail!(
            "{} {:?} failed: {}{}",
            bin.display(),
            env.first(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(d)
}

fn require(bins: &[&Path]) -> Result<()> {
    for b in bins {
        if !b.exists() {
            bail!(
                "{} not found (cargo build --release; install containernetworking-plugins)",
                b.display()
            );
        }
    }
    Ok(())
}

/// Prints a table of series and the ratio of the first to the second median.
pub(crate) fn report(title: &str, rows: &[(&str, &Stats)]) {
    println!("{title}\n");
    println!("| implementation | n | median ms | p90 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    for (name, s) in rows {
        println!(
            "| {name} | {} | {} | {} | {} |",
            s.n,
            ms(s.median),
            ms(s.p90),
            ms(s.p99)
        );
    }
    println!();
}

pub(crate) fn ratio(a: &Stats, b: &Stats) -> f64 {
    a.median.as_secs_f64() / b.median.as_secs_f64().max(1e-9)
}

pub(crate) fn goal_line(what: &str, r: f64, goal: f64, at_most: bool) {
    let met = if at_most { r <= goal } else { r >= goal };
    println!(
        "{what}: **{r:.2}** (goal: {} {goal:.2}) {}\n",
        if at_most { "at most" } else { "at least" },
        if met { "MET" } else { "NOT MET" }
    );
}

fn exec_floor(o: &Opts, rnet_dir: &Path, nv: Option<&Path>) -> Result<()> {
    let ours = rnet_dir.join("rnet-none");
    let theirs = o.reference_dir.join("loopback");
    require(&[&ours, &theirs])?;
    let env = [("CNI_COMMAND", "VERSION")];
    let stdin = br#"{"cniVersion":"1.0.0"}"#;
    for _ in 0..10 {
        run_cni(&ours, &env, stdin)?;
        run_cni(&theirs, &env, stdin)?;
        if let Some(nv) = nv {
            netavark::version(nv)?;
        }
    }
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..o.iterations {
        a.push(run_cni(&ours, &env, stdin)?);
        b.push(run_cni(&theirs, &env, stdin)?);
        if let Some(nv) = nv {
            c.push(netavark::version(nv)?);
        }
    }
    let (sa, sb, sc) = (stats(a), stats(b), stats(c));
    let mut rows = vec![("rnet-none", &sa), ("reference loopback", &sb)];
    if nv.is_some() {
        rows.push(("netavark version", &sc));
    }
    report("## 1. Exec floor: CNI_COMMAND=VERSION", &rows);
    goal_line("ratio rnet/reference (median)", ratio(&sa, &sb), 0.5, true);
    if nv.is_some() {
        println!(
            "ratio rnet/netavark version (median): **{:.2}**\n",
            ratio(&sa, &sc)
        );
    }
    Ok(())
}

/// IPAM alone: ADD and DEL through the executables, rnet-ipam against the
/// reference host-local, each with its own dataDir; then the same with 60,000
/// leases held in a /16 (written directly in the shared host-local format).
fn ipam(o: &Opts, rnet_dir: &Path) -> Result<()> {
    let ours = rnet_dir.join("rnet-ipam");
    let theirs = o.reference_dir.join("host-local");
    require(&[&ours, &theirs])?;
    let tmp = tempfile::tempdir_in(chain::state_parent())?;
    let conf = |dir: &Path, subnet: &str| {
        serde_json::json!({"cniVersion": "1.0.0", "name": "bench", "type": "bridge",
            "ipam": {"type": "host-local", "subnet": subnet, "dataDir": dir}})
        .to_string()
    };
    let call = |bin: &Path, cmd: &str, id: &str, stdin: &str| -> Result<Duration> {
        let env = [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", "/proc/self/ns/net"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/nonexistent"),
        ];
        run_cni(bin, &env, stdin.as_bytes())
    };
    let series = |held: &str, subnet: &str, prefill: usize| -> Result<[Stats; 4]> {
        let (da, db) = (
            tmp.path().join(format!("ours-{held}")),
            tmp.path().join(format!("ref-{held}")),
        );
        for d in [&da, &db] {
            prefill_leases(&d.join("bench"), subnet, prefill)?;
        }
        let (ca, cb) = (conf(&da, subnet), conf(&db, subnet));
        // Warm up (rnet indexes a foreign dataDir once, on first use).
        for i in 0..5 {
            let id = format!("warm{i}");
            call(&ours, "ADD", &id, &ca)?;
            call(&ours, "DEL", &id, &ca)?;
            call(&theirs, "ADD", &id, &cb)?;
            call(&theirs, "DEL", &id, &cb)?;
        }
        let mut v: [Vec<Duration>; 4] = Default::default();
        for i in 0..o.iterations {
            let id = format!("c{i}");
            v[0].push(call(&ours, "ADD", &id, &ca)?);
            v[1].push(call(&ours, "DEL", &id, &ca)?);
            v[2].push(call(&theirs, "ADD", &id, &cb)?);
            v[3].push(call(&theirs, "DEL", &id, &cb)?);
        }
        let [a, b, c, d] = v;
        Ok([stats(a), stats(b), stats(c), stats(d)])
    };
    let [oa, od, ta, td] = series("1", "10.77.0.0/16", 1)?;
    report(
        "## 2a. IPAM: ADD and DEL through the executable (1 lease held)",
        &[
            ("rnet-ipam ADD", &oa),
            ("rnet-ipam DEL", &od),
            ("host-local ADD", &ta),
            ("host-local DEL", &td),
        ],
    );
    let pair = |a: &Stats, b: &Stats| a.median + b.median;
    let r = pair(&oa, &od).as_secs_f64() / pair(&ta, &td).as_secs_f64().max(1e-9);
    goal_line(
        "ADD+DEL through the executables, rnet/host-local (medians)",
        r,
        0.1,
        true,
    );
    // In-process: what rnet-bridge does when the IPAM plugin is rnet's own
    // (config parse, store open, allocate; then open, release), against
    // host-local's ADD and DEL executions measured above.
    let dir = tmp.path().join("inproc");
    let inproc_conf: serde_json::Value = serde_json::from_str(&conf(&dir, "10.79.0.0/16"))?;
    let (mut ia, mut id) = (Vec::new(), Vec::new());
    for i in 0..o.iterations {
        let owner = rnet_ipam::Owner::new(format!("c{i}"), "eth0");
        let t = Instant::now();
        let ipam = rnet_ipam::Ipam::open(rnet_ipam::IpamConfig::from_netconf(&inproc_conf, &[])?)?;
        ipam.allocate(&owner)?;
        ia.push(t.elapsed());
        let t = Instant::now();
        let ipam = rnet_ipam::Ipam::open(rnet_ipam::IpamConfig::from_netconf(&inproc_conf, &[])?)?;
        ipam.release(&owner)?;
        id.push(t.elapsed());
    }
    let (sia, sid) = (stats(ia), stats(id));
    report(
        "### IPAM in-process (as rnet-bridge calls rnet-ipam)",
        &[("rnet-ipam allocate", &sia), ("rnet-ipam release", &sid)],
    );
    let r = pair(&sia, &sid).as_secs_f64() / pair(&ta, &td).as_secs_f64().max(1e-9);
    goal_line(
        "one allocation plus release in-process, rnet/host-local ADD+DEL (medians)",
        r,
        0.1,
        true,
    );
    let [ob, odb, tb, tdb] = series("60k", "10.78.0.0/16", 60_000)?;
    report(
        "## 2b. IPAM with 60,000 leases held in a /16",
        &[
            ("rnet-ipam ADD", &ob),
            ("rnet-ipam DEL", &odb),
            ("host-local ADD", &tb),
            ("host-local DEL", &tdb),
        ],
    );
    println!(
        "rnet ADD through the executable, 60,000 held / 1 held (medians): {:.2}\n",
        ratio(&ob, &oa)
    );
    // The allocation itself (no process start), 1 vs 60,000 leases held.
    let alloc = |dir: &Path, subnet: &str, tag: &str| -> Result<Stats> {
        let conf: serde_json::Value = serde_json::from_str(&conf(dir, subnet))?;
        let mut v = Vec::new();
        for i in 0..o.iterations {
            let owner = rnet_ipam::Owner::new(format!("{tag}{i}"), "eth0");
            let ipam = rnet_ipam::Ipam::open(rnet_ipam::IpamConfig::from_netconf(&conf, &[])?)?;
            let t = Instant::now();
            ipam.allocate(&owner)?;
            v.push(t.elapsed());
            ipam.release(&owner)?;
        }
        Ok(stats(v))
    };
    let small = tmp.path().join("alloc-1");
    prefill_leases(&small.join("bench"), "10.80.0.0/16", 1)?;
    let (a1, a60) = (
        alloc(&small, "10.80.0.0/16", "s")?,
        alloc(&tmp.path().join("ours-60k"), "10.78.0.0/16", "l")?,
    );
    report(
        "### IPAM allocation in-process, 1 vs 60,000 leases held",
        &[("allocate, 1 held", &a1), ("allocate, 60,000 held", &a60)],
    );
    goal_line(
        "allocation at 60,000 held / at 1 held (medians)",
        ratio(&a60, &a1),
        1.2,
        true,
    );
    println!(
        "(host-local: ADD at 60,000 / at 1 = {:.2}, DEL {:.2})\n",
        ratio(&tb, &ta),
        ratio(&tdb, &td)
    );
    Ok(())
}

/// Writes `n` leases, host-local format, starting at the subnet's .0.10.
fn prefill_leases(dir: &Path, subnet: &str, n: usize) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let net: ipnet::Ipv4Net = subnet.parse()?;
    let base = u32::from(net.network()) + 10;
    for i in 0..n {
        let ip = std::net::Ipv4Addr::from(base + i as u32);
        std::fs::write(dir.join(ip.to_string()), format!("prefill{i}\r\neth0"))?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let o = Opts::parse();
    if o.hold_netns {
        return holder::serve();
    }
    let rnet_dir = match &o.rnet_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .context("no parent dir of the executable")?,
    };
    println!(
        "# rnet benchmark\n\nmachine: {} cores; kernel {}\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    let nv = netavark::resolve(&o.netavark);
    let nv = nv.as_deref();
    for s in o.only.split(',') {
        match s.trim() {
            "exec" => exec_floor(&o, &rnet_dir, nv)?,
            "ipam" => ipam(&o, &rnet_dir)?,
            "chain" => chain::add_check_del(
                o.iterations.min(100),
                &rnet_dir,
                &o.reference_dir,
                chain::Shape { portmap: false },
                nv,
            )?,
            "chain-portmap" => chain::add_check_del(
                o.iterations.min(100),
                &rnet_dir,
                &o.reference_dir,
                chain::Shape { portmap: true },
                nv,
            )?,
            "scale" => chain::scale(
                o.scale,
                &rnet_dir,
                &o.reference_dir,
                chain::Shape { portmap: true },
                o.scale_reference,
                nv.filter(|_| o.scale_netavark),
            )?,
            "parallel" => {
                for n in o.parallel.split(',') {
                    let n: usize = n.trim().parse().context("--parallel takes numbers")?;
                    chain::parallel(
                        n,
                        &rnet_dir,
                        &o.reference_dir,
                        chain::Shape { portmap: false },
                        nv,
                    )?;
                }
            }
            "datapath" => datapath::datapath(o.datapath_reps, &rnet_dir, &o.reference_dir)?,
            "connrate" => datapath::connrate(
                o.connrate_mappings,
                o.connrate_reference,
                &rnet_dir,
                &o.reference_dir,
            )?,
            "footprint" => footprint::footprint(&rnet_dir, &o.reference_dir)?,
            "dns" => dns::dns(&o.dns, &rnet_dir)?,
            other => bail!(
                "unknown scenario {other:?}; known: exec, ipam, chain, chain-portmap, scale, parallel, datapath, connrate, footprint, dns"
            ),
        }
    }
    Ok(())
}
