//! # rnet-bench: rnet against the reference plugins and netavark, side by side
//!
//! Every scenario runs the implementations interleaved (A, B, A, B, ...) in one
//! process so machine noise hits all alike, and reports the median, p90, p99 and
//! the ratio of medians. Scenarios that touch the network build throwaway
//! namespaces and remove them (none exists yet beyond the exec floor).
//!
//! Run as root from the workspace: `cargo build --release && target/release/rnet-bench`.

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Benchmark rnet against the reference CNI plugins, side by side")]
struct Opts {
    /// Iterations per implementation and scenario.
    #[arg(long, default_value_t = 300)]
    iterations: usize,
    /// Directory of the reference plugins.
    #[arg(long, default_value = "/usr/lib/cni")]
    reference_dir: PathBuf,
    /// Directory of rnet's plugin binaries (default: beside this executable).
    #[arg(long)]
    rnet_dir: Option<PathBuf>,
    /// Scenarios to run (comma-separated): exec.
    #[arg(long, default_value = "exec")]
    only: String,
}

/// Summary statistics of one series.
struct Stats {
    median: Duration,
    p90: Duration,
    p99: Duration,
    n: usize,
}

fn stats(mut v: Vec<Duration>) -> Stats {
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

fn run_version(bin: &Path) -> Result<Duration> {
    let t = Instant::now();
    let mut child = Command::new(bin)
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("spawn {}", bin.display()))?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(br#"{"cniVersion":"1.0.0"}"#);
    }
    let out = child.wait_with_output()?;
    let d = t.elapsed();
    if !out.status.success() || !out.stdout.starts_with(b"{") {
        bail!("{} VERSION failed: {:?}", bin.display(), out);
    }
    Ok(d)
}

fn exec_floor(o: &Opts, rnet_dir: &Path) -> Result<()> {
    let ours = rnet_dir.join("rnet-none");
    let theirs = o.reference_dir.join("loopback");
    for b in [&ours, &theirs] {
        if !b.exists() {
            bail!(
                "{} not found (build with --release; install containernetworking-plugins)",
                b.display()
            );
        }
    }
    // Warm the page cache.
    for _ in 0..10 {
        run_version(&ours)?;
        run_version(&theirs)?;
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..o.iterations {
        a.push(run_version(&ours)?);
        b.push(run_version(&theirs)?);
    }
    let (sa, sb) = (stats(a), stats(b));
    println!("## 1. Exec floor: CNI_COMMAND=VERSION\n");
    println!("| implementation | n | median ms | p90 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    println!(
        "| rnet-none | {} | {} | {} | {} |",
        sa.n,
        ms(sa.median),
        ms(sa.p90),
        ms(sa.p99)
    );
    println!(
        "| reference loopback | {} | {} | {} | {} |",
        sb.n,
        ms(sb.median),
        ms(sb.p90),
        ms(sb.p99)
    );
    let ratio = sa.median.as_secs_f64() / sb.median.as_secs_f64().max(1e-9);
    println!(
        "\nratio rnet/reference (median): **{ratio:.2}** (goal: at most 0.50) {}\n",
        if ratio <= 0.5 { "MET" } else { "NOT MET" }
    );
    Ok(())
}

fn main() -> Result<()> {
    let o = Opts::parse();
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
    for s in o.only.split(',') {
        match s.trim() {
            "exec" => exec_floor(&o, &rnet_dir)?,
            other => bail!("unknown scenario {other:?}; known: exec"),
        }
    }
    Ok(())
}
