//! netavark side by side: Podman's own network backend (netavark 1.4 in
//! Debian 12, `/usr/lib/podman/netavark`) as the third implementation in the
//! exec, chain, chain-portmap, scale and parallel scenarios.
//!
//! # What is measured, and why this way
//!
//! netavark is not a CNI plugin: Podman allocates addresses itself (in
//! process) and execs `netavark setup <netns>` with a JSON document of the
//! networks, static IPs and port mappings on stdin, and `netavark teardown
//! <netns>` with the same document. So each container here gets a static
//! address (`10.88.0.0/16`, `.2` upwards) and the benchmark times one `setup`
//! and one `teardown` exec, which is what Podman pays per container on top of
//! its in-process IPAM; rnet and the reference are timed through the whole
//! CNI chain including their IPAM, so the comparison is not in rnet's favour.
//!
//! The network mirrors the CNI chain's: a bridge (`bench0`) with the gateway
//! on it, masquerade of the subnet, and (chain-portmap) one `8080:80`-style
//! TCP mapping per container (host port `10000 + i`, as in `chain.rs`).
//!
//! # Confinement
//!
//! netavark configures "the host" it runs in (its own `/proc/self/ns/net`):
//! the bridge, iptables rules and sysctls (`ip_forward`, `route_localnet`).
//! It is therefore spawned from a thread that has entered a throwaway lab
//! host namespace ([`rnet_netns::NetNs::run`] via [`Lab::host`]); the lab
//! refuses to be the machine's namespace, and everything netavark leaves in
//! it dies with it. The environment is cleared except `PATH` (netavark execs
//! `iptables`) and `NETAVARK_FW=iptables`: 1.4 has no nftables driver ("nftables
//! support presently not available") and would otherwise probe firewalld on
//! the system D-Bus. `--config` (only aardvark-dns uses it; DNS is disabled)
//! is a directory in the lab's temp state dir. netavark 1.4 keeps no other
//! state on disk (checked with strace: it writes only `/proc/sys/net`).
//!
//! # The bridge's life
//!
//! netavark deletes the bridge and the network's iptables chains when the
//! last container leaves it. The chain scenarios keep one anchor container
//! attached throughout, so the timed setups and teardowns meet an existing
//! bridge as rnet's and the reference's do (their bridges outlive DEL); the
//! anchor's setup is reported as netavark's cold first setup. The parallel
//! scenario runs the cold case (no bridge yet) and the warm one (anchor
//! attached), as for the others. After each scenario the leftovers are
//! counted: veths and the bridge in the lab host, iptables rules naming the
//! subnet or a container, and files in the config dir.

use crate::chain::{Shape, state_parent};
use crate::{Stats, goal_line, ratio, stats};
use anyhow::{Context, Result, bail};
use netns_fixtures::{Container, Lab, OutsideConfig};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::fmt;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

/// Where Debian 12 installs netavark.
pub const DEFAULT_BIN: &str = "/usr/lib/podman/netavark";

/// The network's name, bridge and subnet (base address; a /16).
const NET: &str = "benchnet";
const BRIDGE: &str = "bench0";
const SUBNET: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 0);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
/// The PATH netavark gets (it execs `iptables`).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The netavark executable to compare with, or `None` (with a note on
/// stdout) when `bin` is `none` or does not exist, so that a machine without
/// netavark still runs the other implementations.
pub fn resolve(bin: &Path) -> Option<PathBuf> {
    if bin.as_os_str() == "none" {
        return None;
    }
    if bin.is_file() {
        Some(bin.to_path_buf())
    } else {
        println!(
            "(netavark not found at {}: left out; install Debian's netavark or pass --netavark PATH)\n",
            bin.display()
        );
        None
    }
}

/// One `netavark version` exec (the exec floor), cleared environment.
pub fn version(bin: &Path) -> Result<Duration> {
    let t = Instant::now();
    let out = Command::new(bin)
        .env_clear()
        .arg("version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawn {} version", bin.display()))?;
    let d = t.elapsed();
    if !out.status.success() {
        bail!(
            "{} version failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(d)
}

/// Container `i`'s static address: `10.88.0.2` upwards.
pub fn container_ip(i: usize) -> Result<Ipv4Addr> {
    let off = u32::try_from(i)
        .ok()
        .and_then(|i| i.checked_add(2))
        .filter(|o| *o < 0xffff)
        .with_context(|| format!("container {i} does not fit the /16 of {NET}"))?;
    Ok(Ipv4Addr::from(u32::from(SUBNET) + off))
}

/// The network-options document Podman would give netavark for container `i`.
pub fn options(i: usize, shape: Shape) -> Result<Value> {
    let ip = container_ip(i)?;
    let ports = if shape.portmap {
        // One mapping per container; distinct host ports (as chain.rs).
        json!([{"host_ip": "", "container_port": 80, "host_port": 10_000 + (i % 50_000),
                "range": 1, "protocol": "tcp"}])
    } else {
        json!([])
    };
    Ok(json!({
        "container_id": format!("{:064x}", i + 1),
        "container_name": format!("bench{i}"),
        "networks": {NET: {"interface_name": "eth0", "static_ips": [ip.to_string()],
                           "aliases": []}},
        "network_info": {NET: {
            "name": NET,
            "id": format!("{:064x}", 0xbe_u32),
            "driver": "bridge",
            "network_interface": BRIDGE,
            "subnets": [{"subnet": format!("{SUBNET}/16"), "gateway": GATEWAY.to_string()}],
            "ipv6_enabled": false,
            "internal": false,
            "dns_enabled": false,
            "ipam_options": {"driver": "host-local"}
        }},
        "port_mappings": ports
    }))
}

/// The container's address as netavark's setup reports it.
fn reported_ip(stdout: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(stdout).ok()?;
    let net = v.get(NET)?.get("interfaces")?.get("eth0")?;
    let ipnet = net.get("subnets")?.get(0)?.get("ipnet")?.as_str()?;
    Some(ipnet.split('/').next().unwrap_or(ipnet).to_owned())
}

/// What netavark left in its lab.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Leftovers {
    /// veths in the lab host (the uplink excepted).
    pub veths: usize,
    /// Whether the bridge still exists.
    pub bridge: bool,
    /// iptables rules and chains of the network or a container (the
    /// generic `NETAVARK-HOSTPORT-*` and `NETAVARK_FORWARD` chains are shared
    /// scaffolding netavark never removes, and are not counted).
    pub rules: usize,
    /// Files in the `--config` directory.
    pub files: usize,
}

impl Leftovers {
    /// Nothing of any container or of the network is left.
    pub fn is_clean(&self) -> bool {
        *self == Leftovers::default()
    }
}

impl fmt::Display for Leftovers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} veths, {}, {} iptables rules/chains, {} files",
            self.veths,
            if self.bridge { "bridge" } else { "no bridge" },
            self.rules,
            self.files
        )
    }
}

/// Counts what an `iptables-save` dump holds of the network or a container:
/// rules naming the subnet or carrying a `dnat name:` comment, and the
/// per-network chains (`NETAVARK-<hash>`, `NETAVARK-DN-<hash>`) with their
/// rules. The shared scaffolding (`NETAVARK-HOSTPORT-*`, `NETAVARK_FORWARD`
/// and the jumps to them) is not counted: netavark never removes it.
fn count_rules(dump: &str) -> usize {
    let per_network =
        |chain: &str| chain.starts_with("NETAVARK-") && !chain.starts_with("NETAVARK-HOSTPORT-");
    dump.lines()
        .filter(|l| {
            if let Some(rule) = l.strip_prefix("-A ") {
                let chain = rule.split_whitespace().next().unwrap_or("");
                per_network(chain) || l.contains("10.88.") || l.contains("dnat name:")
            } else if let Some(decl) = l.strip_prefix(':') {
                per_network(decl.split_whitespace().next().unwrap_or(""))
            } else {
                false
            }
        })
        .count()
}

/// netavark in its own lab host namespace, with its containers.
pub struct Netavark {
    bin: PathBuf,
    lab: Lab,
    shape: Shape,
    /// Container namespaces and their options documents.
    containers: Vec<(Container, Vec<u8>)>,
}

impl Netavark {
    /// A fresh lab (host namespace with an uplink, as the CNI labs have).
    pub fn new(bin: &Path, shape: Shape) -> Result<Netavark> {
        let lab = Lab::new_in(&state_parent()).context("cannot build a lab (root needed)")?;
        lab.add_outside(OutsideConfig::default())?;
        std::fs::create_dir_all(lab.state_dir().join("netavark"))?;
        Ok(Netavark {
            bin: bin.to_path_buf(),
            lab,
            shape,
            containers: Vec::new(),
        })
    }

    fn config_dir(&self) -> PathBuf {
        self.lab.state_dir().join("netavark")
    }

    /// Creates container `i` (not attached yet); returns its index.
    pub fn new_container(&mut self) -> Result<usize> {
        let i = self.containers.len();
        let c = self.lab.add_container(&format!("c{i}"))?;
        let opts = serde_json::to_vec(&options(i, self.shape)?)?;
        self.containers.push((c, opts));
        Ok(i)
    }

    /// Number of containers created so far.
    pub fn count(&self) -> usize {
        self.containers.len()
    }

    /// Runs `netavark <verb> <netns of i>` from a thread in the lab host;
    /// returns the exec's wall time and its output (whatever the status).
    fn exec(&self, i: usize, verb: &str) -> Result<(Duration, Output)> {
        let (c, opts) = self
            .containers
            .get(i)
            .with_context(|| format!("netavark: no container {i}"))?;
        let mut cmd = Command::new(&self.bin);
        cmd.env_clear()
            .env("PATH", PATH)
            .env("NETAVARK_FW", "iptables")
            .arg("--config")
            .arg(self.config_dir())
            .arg(verb)
            .arg(c.netns_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let bin = self.bin.display().to_string();
        self.lab
            .host()
            .run(move || -> std::io::Result<(Duration, Output)> {
                let t = Instant::now();
                let mut child = cmd.spawn()?;
                if let Some(mut stdin) = child.stdin.take() {
                    // A failed write shows as netavark's own error below.
                    let _ = stdin.write_all(opts);
                }
                let out = child.wait_with_output()?;
                Ok((t.elapsed(), out))
            })?
            .with_context(|| format!("running {bin} {verb}"))
    }

    /// Like [`Netavark::exec`], failing (with netavark's message) unless it succeeded.
    fn call(&self, i: usize, verb: &str) -> Result<(Duration, Output)> {
        let (d, out) = self.exec(i, verb)?;
        if !out.status.success() {
            bail!(
                "netavark {verb} bench{i} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok((d, out))
    }

    /// `netavark setup` of container `i`.
    pub fn setup(&self, i: usize) -> Result<Duration> {
        Ok(self.call(i, "setup")?.0)
    }

    /// `netavark teardown` of container `i`.
    pub fn teardown(&self, i: usize) -> Result<Duration> {
        Ok(self.call(i, "teardown")?.0)
    }

    /// What is left in the lab: veths, the bridge, rules, config files.
    /// With `explain`, rules of the network that are left are printed on
    /// stderr (for checks made when nothing should be left).
    pub fn leftovers(&self, explain: bool) -> Result<Leftovers> {
        let mut nl = self.lab.netlink()?;
        let links = nl.link_list()?;
        let veths = links
            .iter()
            .filter(|l| l.kind.as_deref() == Some("veth") && l.name != "uplink0")
            .count();
        let bridge = links.iter().any(|l| l.name == BRIDGE);
        let mut cmd = Command::new("iptables-save");
        cmd.env_clear().env("PATH", PATH);
        let out = self
            .lab
            .host()
            .output(&mut cmd)
            .context("running iptables-save in the netavark lab")?;
        if !out.status.success() {
            bail!(
                "iptables-save in the netavark lab failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let dump = String::from_utf8_lossy(&out.stdout);
        let rules = count_rules(&dump);
        if explain && rules > 0 {
            eprintln!("netavark lab: iptables rules/chains of the network left:");
            for l in dump.lines().filter(|l| count_rules(l) > 0) {
                eprintln!("  {l}");
            }
        }
        let files = std::fs::read_dir(self.config_dir())
            .map(|rd| rd.count())
            .unwrap_or(0);
        Ok(Leftovers {
            veths,
            bridge,
            rules,
            files,
        })
    }

    /// Runs `verb` for containers `first..first + n` at once (threads
    /// released behind a barrier), or with `serial` one exec at a time (the
    /// threads queue on a lock, as Podman's calls queue on its
    /// `netavark.lock`); returns the wall time and, per container, the
    /// address netavark reported (setup) or the error.
    fn at_once(
        &self,
        first: usize,
        n: usize,
        verb: &'static str,
        serial: bool,
    ) -> (Duration, Vec<Result<Option<String>>>) {
        let barrier = Arc::new(Barrier::new(n));
        let lock = Mutex::new(());
        let t = Instant::now();
        let out = std::thread::scope(|s| {
            let hs: Vec<_> = (first..first + n)
                .map(|i| {
                    let b = barrier.clone();
                    // The barrier is passed before anything can fail, so a
                    // failing thread never leaves the others waiting.
                    let lock = &lock;
                    s.spawn(move || -> Result<Option<String>> {
                        b.wait();
                        // A poisoned lock still serialises.
                        let _held = serial.then(|| lock.lock().unwrap_or_else(|p| p.into_inner()));
                        let (_, out) = self.call(i, verb)?;
                        Ok(reported_ip(&out.stdout))
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("thread panicked")))
                })
                .collect::<Vec<_>>()
        });
        (t.elapsed(), out)
    }
}

/// Section 3 for netavark: the series collected while the chain scenario
/// interleaves it with rnet and the reference.
pub struct ChainSide {
    nv: Netavark,
    cold: Duration,
    setup: Vec<Duration>,
    teardown: Vec<Duration>,
    current: Option<usize>,
}

impl ChainSide {
    /// A lab with the anchor container attached (its setup is the cold one).
    pub fn new(bin: &Path, shape: Shape) -> Result<ChainSide> {
        let mut nv = Netavark::new(bin, shape)?;
        let anchor = nv.new_container()?;
        let cold = nv.setup(anchor)?;
        Ok(ChainSide {
            nv,
            cold,
            setup: Vec::new(),
            teardown: Vec::new(),
            current: None,
        })
    }

    /// Setup of a new container; `record` false for the warm-up round.
    pub fn setup(&mut self, record: bool) -> Result<()> {
        let i = self.nv.new_container()?;
        let d = self.nv.setup(i)?;
        if record {
            self.setup.push(d);
        }
        self.current = Some(i);
        Ok(())
    }

    /// Teardown of the container set up last.
    pub fn teardown(&mut self) -> Result<()> {
        if let Some(i) = self.current.take() {
            self.teardown.push(self.nv.teardown(i)?);
        }
        Ok(())
    }

    /// Setup and teardown statistics so far (rows for the section's table).
    pub fn stats(&self) -> (Stats, Stats) {
        (stats(self.setup.clone()), stats(self.teardown.clone()))
    }

    /// Prints the cold setup and the rnet/netavark ratios; then tears the
    /// anchor down and reports what is left (should be nothing).
    pub fn finish(self, rnet_add: &Stats, rnet_del: &Stats) -> Result<()> {
        let (s, t) = self.stats();
        println!(
            "netavark cold first setup (creates the bridge and the iptables chains): {:.3} ms; \
             its timed setups and teardowns meet the bridge kept by that first container\n",
            self.cold.as_secs_f64() * 1e3
        );
        goal_line(
            "ADD ratio rnet/netavark setup (median)",
            ratio(rnet_add, &s),
            1.0,
            true,
        );
        goal_line(
            "DEL ratio rnet/netavark teardown (median)",
            ratio(rnet_del, &t),
            1.0,
            true,
        );
        let with_anchor = self.nv.leftovers(false)?;
        self.nv.teardown(0)?;
        let left = self.nv.leftovers(true)?;
        println!(
            "leftovers, netavark: {with_anchor} with the first container attached; {left} after its teardown{}\n",
            if left.is_clean() { "" } else { " (NOT CLEAN)" }
        );
        Ok(())
    }
}

/// Section 4 for netavark: setups without teardown, sampled around marks.
pub struct ScaleSide {
    nv: Netavark,
    samples: Vec<(usize, Duration)>,
}

impl ScaleSide {
    /// A fresh lab.
    pub fn new(bin: &Path, shape: Shape) -> Result<ScaleSide> {
        Ok(ScaleSide {
            nv: Netavark::new(bin, shape)?,
            samples: Vec::new(),
        })
    }

    /// Setup of the `i`-th container (1-based); kept if `sample`.
    pub fn add(&mut self, i: usize, sample: bool) -> Result<()> {
        let c = self.nv.new_container()?;
        if sample {
            std::thread::sleep(crate::chain::SETTLE);
        }
        let d = self.nv.setup(c)?;
        if sample {
            self.samples.push((i, d));
        }
        Ok(())
    }

    /// The samples taken, as `(i, time)`.
    pub fn samples(&self) -> &[(usize, Duration)] {
        &self.samples
    }

    /// Tears every container down (timed in total) and prints the leftovers.
    pub fn teardown_all(&self) -> Result<()> {
        let t = Instant::now();
        for i in 0..self.nv.count() {
            self.nv.teardown(i)?;
        }
        println!(
            "teardown of all {}, netavark: {:.1} s; leftovers {}\n",
            self.nv.count(),
            t.elapsed().as_secs_f64(),
            self.nv.leftovers(true)?
        );
        Ok(())
    }
}

/// Warm-bridge setup wall times of section 5, in seconds.
pub struct ParallelWalls {
    concurrent: f64,
    serialised: f64,
}

impl ParallelWalls {
    /// Prints rnet's warm wall time over netavark's (both variants).
    pub fn print_ratios(&self, rnet_warm: f64) {
        goal_line(
            "warm parallel wall time rnet/netavark (all at once)",
            rnet_warm / self.concurrent.max(1e-9),
            1.0,
            true,
        );
        println!(
            "warm parallel wall time rnet/netavark (one at a time, as under Podman's lock): **{:.2}**\n",
            rnet_warm / self.serialised.max(1e-9)
        );
    }
}

/// Section 5 for netavark: `n` setups released at once on a cold bridge
/// (none yet) and on a warm one (an anchor attached), then `n` teardowns at
/// once; then the same one exec at a time (Podman serialises its netavark
/// calls with a lock file). Prints rows in the format of
/// `chain::parallel`'s table; leftovers are counted after the anchor's
/// teardown, so every row should show none.
pub fn parallel_rows(n: usize, bin: &Path, shape: Shape) -> Result<ParallelWalls> {
    let mut nv = Netavark::new(bin, shape)?;
    let mut walls = ParallelWalls {
        concurrent: 0.0,
        serialised: 0.0,
    };
    for serial in [false, true] {
        for warm in [false, true] {
            let anchor = if warm {
                let a = nv.new_container()?;
                nv.setup(a)?;
                Some(a)
            } else {
                None
            };
            let first = nv.count();
            for _ in 0..n {
                nv.new_container()?;
            }
            let (wall, res) = nv.at_once(first, n, "setup", serial);
            let ok = res.iter().filter(|r| r.is_ok()).count();
            let ips: HashSet<String> = res
                .iter()
                .filter_map(|r| r.as_ref().ok().cloned().flatten())
                .collect();
            if let Some(Err(e)) = res.iter().find(|r| r.is_err()) {
                eprintln!("netavark: a parallel setup failed: {e:#}");
            }
            // Teardown of all n (as Podman's cleanup calls it also after a
            // failed setup); failures are counted among the set-up ones.
            let (dwall, dres) = nv.at_once(first, n, "teardown", serial);
            let dfail: Vec<&anyhow::Error> = dres
                .iter()
                .zip(&res)
                .filter(|(_, s)| s.is_ok())
                .filter_map(|(d, _)| d.as_ref().err())
                .collect();
            if let Some(e) = dfail.first() {
                eprintln!("netavark: a parallel teardown failed: {e:#}");
            }
            if let Some(a) = anchor {
                // netavark's own failure (seen: CHAIN_DEL busy after its
                // parallel teardowns) is a result to report, not a reason
                // to stop the benchmark; leftovers are counted below.
                if let Err(e) = nv.teardown(a) {
                    eprintln!("netavark: the anchor's teardown failed: {e:#}");
                }
            }
            let left = nv.leftovers(true)?;
            println!(
                "| netavark{} | {} | {:.1} | {ok}/{n} | {} | {:.1}{} | {left} |",
                if serial { " (one at a time)" } else { "" },
                if warm { "warm" } else { "cold" },
                wall.as_secs_f64() * 1e3,
                ips.len(),
                dwall.as_secs_f64() * 1e3,
                if dfail.is_empty() {
                    String::new()
                } else {
                    format!(" ({} failed)", dfail.len())
                }
            );
            if warm && serial {
                walls.serialised = wall.as_secs_f64();
            } else if warm {
                walls.concurrent = wall.as_secs_f64();
            }
        }
    }
    Ok(walls)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn addresses_start_at_two_and_stay_in_the_subnet() {
        assert_eq!(container_ip(0).unwrap(), Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(container_ip(254).unwrap(), Ipv4Addr::new(10, 88, 1, 0));
        assert_eq!(
            container_ip(0xfffc).unwrap(),
            Ipv4Addr::new(10, 88, 255, 254)
        );
        assert!(container_ip(0xfffd).is_err());
        assert!(container_ip(usize::MAX).is_err());
    }

    #[test]
    fn options_carry_the_static_ip_and_the_mapping() {
        let o = options(3, Shape { portmap: true }).unwrap();
        assert_eq!(o["networks"][NET]["static_ips"][0], "10.88.0.5");
        assert_eq!(o["network_info"][NET]["network_interface"], BRIDGE);
        assert_eq!(o["port_mappings"][0]["host_port"], 10_003);
        assert_eq!(o["container_id"].as_str().unwrap().len(), 64);
        let o = options(3, Shape { portmap: false }).unwrap();
        assert_eq!(o["port_mappings"], json!([]));
    }

    #[test]
    fn reported_ip_reads_setup_output() {
        let out = br#"{"benchnet":{"dns_search_domains":[],"dns_server_ips":[],"interfaces":{"eth0":{"mac_address":"9a:8a:04:a9:99:13","subnets":[{"gateway":"10.88.0.1","ipnet":"10.88.0.5/16"}]}}}}"#;
        assert_eq!(reported_ip(out).as_deref(), Some("10.88.0.5"));
        assert_eq!(reported_ip(b"not json"), None);
    }

    #[test]
    fn rules_of_the_network_are_counted_scaffolding_is_not() {
        let dump = "*nat\n\
            :NETAVARK-HOSTPORT-DNAT - [0:0]\n\
            :NETAVARK-B02A0FFEC85FC - [0:0]\n\
            -A NETAVARK-B02A0FFEC85FC ! -d 224.0.0.0/4 -j MASQUERADE\n\
            -A FORWARD -m comment --comment \"netavark firewall plugin rules\" -j NETAVARK_FORWARD\n\
            -A PREROUTING -m addrtype --dst-type LOCAL -j NETAVARK-HOSTPORT-DNAT\n\
            -A POSTROUTING -s 10.88.0.0/16 -j NETAVARK-B02A0FFEC85FC\n\
            -A NETAVARK-DN-B02A0FFEC85FC -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.5:80\n\
            -A NETAVARK-HOSTPORT-DNAT -p tcp -m tcp --dport 8080 -m comment --comment \"dnat name: benchnet id: aa\" -j X\n\
            -A NETAVARK-HOSTPORT-SETMARK -j MARK --set-xmark 0x2000/0x2000\n\
            COMMIT\n";
        assert_eq!(count_rules(dump), 5);
    }

    /// Root lab test: one setup and teardown leave nothing behind, and the
    /// container got its address. Fails loudly without root or netavark.
    #[test]
    fn setup_then_teardown_leaves_nothing() {
        netns_fixtures::require_root().expect(netns_fixtures::NEED_ROOT);
        let bin = Path::new(DEFAULT_BIN);
        assert!(
            bin.is_file(),
            "{DEFAULT_BIN} missing: install Debian's netavark (scripts/deps.sh pulls it in with aardvark-dns)"
        );
        let mut nv = Netavark::new(bin, Shape { portmap: true }).unwrap();
        let c = nv.new_container().unwrap();
        let (_, out) = nv.call(c, "setup").unwrap();
        assert_eq!(reported_ip(&out.stdout).as_deref(), Some("10.88.0.2"));
        let during = nv.leftovers(false).unwrap();
        assert_eq!(during.veths, 1);
        assert!(during.bridge);
        assert!(during.rules >= 3, "{during}");
        nv.teardown(c).unwrap();
        let after = nv.leftovers(true).unwrap();
        assert!(after.is_clean(), "{after}");
    }
}
