//! Footprint: what installing and running the plugins costs in bytes.
//!
//! * Size on disk of every installed executable: rnet's (from the rnet
//!   directory), the reference plugins (`/usr/lib/cni`) and Podman's netavark
//!   and aardvark-dns (`/usr/lib/podman`).
//! * Peak resident set size of each plugin process of one ADD of bridge, IPAM
//!   and portmap, rnet against the reference. Each plugin is executed directly,
//!   with the environment and stdin the runtime side would give it (the
//!   plugin's object plus `name`, `cniVersion`, `prevResult`, `runtimeConfig`),
//!   under GNU time (`/usr/bin/time -f %M`), which reads the child's
//!   `ru_maxrss` from `wait4`. That figure is the largest of the process and the
//!   children it waited for: for the reference bridge it covers the host-local
//!   process the bridge executes, whichever is larger. (The runtime side keeps
//!   no per-child rusage, and `RUSAGE_CHILDREN` of this process only ever
//!   reports the largest child so far, so deltas of it cannot isolate one
//!   process.) The first ADD in a fresh lab (which creates the bridge and the
//!   firewall state) is shown apart from the median of the following ones.

use crate::chain::{self, Shape};
use anyhow::{Context, Result, bail};
use netns_fixtures::Lab;
use serde_json::{Value, json};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const GNU_TIME: &str = "/usr/bin/time";
/// Warm ADDs measured after the cold one.
const WARM: usize = 5;

/// Executable files in `dir` whose name passes `keep`, with their sizes (links followed).
fn executables(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let md = std::fs::metadata(e.path()).ok()?;
                    (md.is_file() && md.permissions().mode() & 0o111 != 0 && keep(&name))
                        .then_some((name, md.len()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn mib(b: u64) -> String {
    format!("{:.2}", b as f64 / (1024.0 * 1024.0))
}

fn sizes(rnet_dir: &Path, ref_dir: &Path, podman_dir: &Path) -> Result<()> {
    let ours = executables(rnet_dir, |n| {
        n.starts_with("rnet") && !n.contains('.') && n != "rnet-bench"
    });
    if ours.is_empty() {
        bail!("no rnet executables in {}", rnet_dir.display());
    }
    let theirs = executables(ref_dir, |_| true);
    let podman = executables(podman_dir, |n| n == "netavark" || n == "aardvark-dns");
    println!("## 9. Footprint\n\n### Size on disk (static-pie release build for rnet)\n");
    println!("| set | executable | MiB |");
    println!("|---|---|---|");
    for (set, list) in [
        (format!("rnet ({})", rnet_dir.display()), &ours),
        (format!("reference ({})", ref_dir.display()), &theirs),
        (format!("podman ({})", podman_dir.display()), &podman),
    ] {
        for (n, b) in list.iter() {
            println!("| {set} | {n} | {} |", mib(*b));
        }
        let total: u64 = list.iter().map(|(_, b)| b).sum();
        println!("| {set} | **all {}** | **{}** |", list.len(), mib(total));
    }
    let pick = |list: &[(String, u64)], names: &[&str]| -> u64 {
        list.iter()
            .filter(|(n, _)| names.contains(&n.as_str()))
            .map(|(_, b)| b)
            .sum()
    };
    println!(
        "\nthe chain's executables (bridge, IPAM, portmap): rnet {} MiB, reference {} MiB\n",
        mib(pick(&ours, &["rnet-bridge", "rnet-ipam", "rnet-portmap"])),
        mib(pick(&theirs, &["bridge", "host-local", "portmap"]))
    );
    Ok(())
}

/// Runs `bin` (a CNI plugin) in the lab host under GNU time; returns its
/// stdout (the result) and its peak RSS in KiB.
fn run_measured(
    lab: &Lab,
    bin: &Path,
    env: &[(&str, String)],
    stdin: &[u8],
) -> Result<(Vec<u8>, u64)> {
    let rss_file = tempfile::NamedTempFile::new_in(lab.state_dir())?;
    let mut cmd = Command::new(GNU_TIME);
    cmd.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(rss_file.path())
        .arg(bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = lab.host().spawn(&mut cmd)?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin);
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{} failed: {}{}",
            bin.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(rss_file.path())?;
    let kib: u64 = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("{GNU_TIME} wrote no peak RSS: {text:?}"))?;
    Ok((out.stdout, kib))
}

/// The config one plugin gets from the runtime side.
pub(crate) fn plugin_conf(
    list: &Value,
    i: usize,
    prev: Option<&Value>,
    host_port: u16,
) -> Result<Vec<u8>> {
    let mut conf = list["plugins"][i]
        .as_object()
        .cloned()
        .context("conflist plugin")?;
    conf.insert("name".into(), list["name"].clone());
    conf.insert("cniVersion".into(), list["cniVersion"].clone());
    if let Some(p) = prev {
        conf.insert("prevResult".into(), p.clone());
    }
    if conf.contains_key("capabilities") {
        conf.insert(
            "runtimeConfig".into(),
            json!({"portMappings": [{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}]}),
        );
    }
    Ok(serde_json::to_vec(&Value::Object(conf))?)
}

/// Peak RSS (KiB) of [bridge (+IPAM), IPAM alone, portmap] for ADD number 0..=WARM.
fn rss_series(rnet: bool, dir: &Path) -> Result<[Vec<u64>; 3]> {
    let lab = Lab::new_in(&chain::state_parent()).context("cannot build a lab (root needed)")?;
    let list = chain::conflist(
        rnet,
        lab.state_dir(),
        Shape { portmap: true },
        "10.200.0.0/16",
    );
    let types: Vec<String> = (0..2)
        .map(|i| list["plugins"][i]["type"].as_str().unwrap_or("").to_owned())
        .collect();
    let ipam_type = list["plugins"][0]["ipam"]["type"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let mut out: [Vec<u64>; 3] = Default::default();
    let mut containers = Vec::new();
    for k in 0..=WARM {
        let c = lab.add_container(&format!("fp{k}"))?;
        let env = |id: String| {
            vec![
                ("CNI_COMMAND", "ADD".to_owned()),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", c.netns_path().display().to_string()),
                ("CNI_IFNAME", "eth0".to_owned()),
                ("CNI_PATH", dir.display().to_string()),
            ]
        };
        let host_port = 10_000 + k as u16;
        let (res, rss) = run_measured(
            &lab,
            &dir.join(&types[0]),
            &env(format!("fp{k}")),
            &plugin_conf(&list, 0, None, host_port)?,
        )?;
        out[0].push(rss);
        let prev: Value = serde_json::from_slice(&res).context("bridge result")?;
        // IPAM alone, as the reference bridge executes it (another owner, so
        // it allocates a second address; nothing else is touched).
        let (_, rss) = run_measured(
            &lab,
            &dir.join(&ipam_type),
            &env(format!("fpipam{k}")),
            &plugin_conf(&list, 0, None, host_port)?,
        )?;
        out[1].push(rss);
        let (_, rss) = run_measured(
            &lab,
            &dir.join(&types[1]),
            &env(format!("fp{k}")),
            &plugin_conf(&list, 1, Some(&prev), host_port)?,
        )?;
        out[2].push(rss);
        // Kept alive until the lab goes (dropping it would remove the veth early).
        containers.push(c);
    }
    Ok(out)
}

fn cold_warm(v: &[u64]) -> (u64, u64) {
    let mut w: Vec<u64> = v.iter().skip(1).copied().collect();
    w.sort();
    (
        v.first().copied().unwrap_or(0),
        w.get(w.len() / 2).copied().unwrap_or(0),
    )
}

/// Section 9: binary sizes and peak RSS of one ADD.
pub(crate) fn footprint(rnet_dir: &Path, ref_dir: &Path) -> Result<()> {
    let podman_dir = PathBuf::from("/usr/lib/podman");
    sizes(rnet_dir, ref_dir, &podman_dir)?;
    if !Path::new(GNU_TIME).exists() {
        bail!("{GNU_TIME} not found: install GNU time (apt-get install time) to measure peak RSS");
    }
    let ours = rss_series(true, rnet_dir)?;
    let theirs = rss_series(false, ref_dir)?;
    println!(
        "### Peak RSS of each plugin process of one ADD (KiB; GNU time's %M; cold = first ADD in a fresh lab, warm = median of the next {WARM})\n"
    );
    println!("| process | rnet cold | rnet warm | reference cold | reference warm |");
    println!("|---|---|---|---|---|");
    let rows = [
        "bridge ADD (rnet: IPAM in-process; reference: max of bridge and its host-local child)",
        "IPAM ADD executed alone (rnet-ipam / host-local)",
        "portmap ADD",
    ];
    let mut warm = [[0u64; 3]; 2];
    for (i, name) in rows.iter().enumerate() {
        let (oc, ow) = cold_warm(&ours[i]);
        let (tc, tw) = cold_warm(&theirs[i]);
        warm[0][i] = ow;
        warm[1][i] = tw;
        println!("| {name} | {oc} | {ow} | {tc} | {tw} |");
    }
    // One ADD runs the chain's plugins one after another; the reference
    // bridge runs host-local while it is itself alive.
    let peak_ours = warm[0][0].max(warm[0][2]);
    let peak_theirs = (warm[1][0] + warm[1][1]).max(warm[1][2]);
    println!(
        "\npeak memory of one warm ADD (plugins run in turn; the reference bridge and its host-local at once): rnet {peak_ours} KiB, reference about {peak_theirs} KiB (ratio {:.2})\n",
        peak_ours as f64 / (peak_theirs as f64).max(1.0)
    );
    Ok(())
}
