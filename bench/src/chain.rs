//! Chain scenarios: ADD, CHECK and DEL of a whole network configuration list
//! through the CNI runtime side (prevResult chaining and the result cache, as
//! libcni does), rnet's plugins against the reference plugins, each in its own
//! throwaway lab host namespace, interleaved call by call.

use crate::{goal_line, ratio, report, stats};
use anyhow::{Context, Result, bail};
use netns_fixtures::{Container, Lab, OutsideConfig};
use rnet_cni::runtime::{ConfList, Runtime, RuntimeConf};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// One implementation under test: a lab, a runtime over its plugin dir, a conflist.
pub struct Impl {
    /// Display name.
    pub name: String,
    lab: Lab,
    rt: Runtime,
    list: ConfList,
    /// The conflist as JSON (for running one plugin of it directly).
    list_json: Value,
    plugin_dir: std::path::PathBuf,
    rnet: bool,
    containers: Vec<Slot>,
    /// Holder of the scale scenario's container namespaces.
    holder: Option<crate::holder::Holder>,
}

/// A container namespace as the runtime side holds it.
enum Slot {
    /// By an open handle in this process (the lab fixtures' way).
    Held(Container),
    /// By the namespace holder process: no handle here, as a runtime that
    /// pins namespaces by bind mount has none.
    Pinned(std::path::PathBuf),
}

impl Slot {
    fn netns_path(&self) -> std::path::PathBuf {
        match self {
            Slot::Held(c) => c.netns_path(),
            Slot::Pinned(p) => p.clone(),
        }
    }
}

/// ADD+DEL pairs of the port mapper alone at each scale mark.
const PM_REPS: usize = 41;
/// Timed ADDs per scale mark (their median is reported).
const WINDOW: usize = 9;
/// Pause before each timed ADD of the scale scenario: long enough for the
/// previous calls' deferred work (rnet's lingering nf_tables socket holders,
/// 100 ms; the kernel's own) to end.
pub(crate) const SETTLE: Duration = Duration::from_millis(250);

/// Where labs keep their state: a tmpfs (`/dev/shm`), as plugins' state
/// directories (`/run/...`) are on real hosts; file creation on this VM's
/// ext4 costs about 0.7 ms and would dominate what is measured.
pub fn state_parent() -> std::path::PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Which chain: bridge + IPAM, optionally + portmap (one 8080:80 mapping).
#[derive(Clone, Copy)]
pub struct Shape {
    /// Add the port mapper.
    pub portmap: bool,
}

/// The benchmark's conflist (bridge `bench0` + IPAM, optionally + portmap).
pub(crate) fn conflist(rnet: bool, dir: &Path, shape: Shape, subnet: &str) -> Value {
    let (bridge, ipam, portmap) = if rnet {
        ("rnet-bridge", "rnet-ipam", "rnet-portmap")
    } else {
        ("bridge", "host-local", "portmap")
    };
    let mut plugins = vec![json!({
        "type": bridge, "bridge": "bench0", "isGateway": true, "ipMasq": true,
        "hairpinMode": true, "rnetStateDir": dir.join("run"),
        "ipam": {"type": ipam, "subnet": subnet, "dataDir": dir.join("ipam"),
                 "routes": [{"dst": "0.0.0.0/0"}]}
    })];
    if shape.portmap {
        plugins.push(
            json!({"type": portmap, "capabilities": {"portMappings": true},
                            "snat": true, "rnetStateDir": dir.join("run")}),
        );
    }
    // Debian's reference plugins speak up to 1.0.0.
    json!({"cniVersion": "1.0.0", "name": "benchnet", "plugins": plugins})
}

impl Impl {
    /// A fresh lab (host namespace with an uplink) for one implementation.
    pub fn new(name: &str, rnet: bool, plugin_dir: &Path, shape: Shape) -> Result<Impl> {
        let lab = Lab::new_in(&state_parent()).context("cannot build a lab (root needed)")?;
        lab.add_outside(OutsideConfig::default())?;
        let v = conflist(rnet, lab.state_dir(), shape, "10.200.0.0/16");
        let list = ConfList::parse(&serde_json::to_vec(&v)?).map_err(|e| anyhow::anyhow!(e))?;
        let rt = Runtime::new(
            vec![plugin_dir.to_path_buf()],
            lab.state_dir().join("cache"),
        );
        Ok(Impl {
            name: name.to_owned(),
            lab,
            rt,
            list,
            list_json: v,
            plugin_dir: plugin_dir.to_path_buf(),
            rnet,
            containers: Vec::new(),
            holder: None,
        })
    }

    fn rt_conf(&self, c: &Slot, i: usize, shape: Shape) -> RuntimeConf {
        let mut caps = serde_json::Map::new();
        if shape.portmap {
            // One mapping per container; distinct host ports so many can coexist.
            let host_port = 10_000 + (i % 50_000) as u64;
            caps.insert(
                "portMappings".into(),
                json!([{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}]),
            );
        }
        RuntimeConf {
            container_id: format!("bench{i}"),
            netns: Some(c.netns_path()),
            ifname: "eth0".into(),
            args: Vec::new(),
            capability_args: caps,
        }
    }

    /// The lab this implementation runs in.
    pub(crate) fn lab(&self) -> &Lab {
        &self.lab
    }

    /// Container `i`, if created and held here.
    pub(crate) fn container(&self, i: usize) -> Option<&Container> {
        match self.containers.get(i)? {
            Slot::Held(c) => Some(c),
            Slot::Pinned(_) => None,
        }
    }

    /// Creates container `i` (not attached yet).
    pub fn new_container(&mut self) -> Result<usize> {
        let c = self
            .lab
            .add_container(&format!("c{}", self.containers.len()))?;
        self.containers.push(Slot::Held(c));
        Ok(self.containers.len() - 1)
    }

    /// Creates container `i` in the namespace holder (not attached yet).
    pub fn new_pinned_container(&mut self) -> Result<usize> {
        if self.holder.is_none() {
            self.holder = Some(crate::holder::Holder::start()?);
        }
        let h = self.holder.as_mut().context("namespace holder")?;
        let p = h.new_netns()?;
        self.containers.push(Slot::Pinned(p));
        Ok(self.containers.len() - 1)
    }

    fn timed(&self, i: usize, shape: Shape, verb: &str) -> Result<Duration> {
        let conf = self.rt_conf(&self.containers[i], i, shape);
        let (rt, list) = (&self.rt, &self.list);
        let res = self.lab.host().run(|| {
            let t = Instant::now();
            let r = match verb {
                "ADD" => rt.add(list, &conf).map(|_| ()),
                "CHECK" => rt.check(list, &conf),
                _ => rt.del(list, &conf),
            };
            (t.elapsed(), r)
        })?;
        match res {
            (d, Ok(())) => Ok(d),
            (_, Err(e)) => bail!("{} {verb} bench{i}: {e}", self.name),
        }
    }

    /// ADD of container `i`.
    pub fn add(&self, i: usize, shape: Shape) -> Result<Duration> {
        self.timed(i, shape, "ADD")
    }
    /// CHECK of container `i`.
    pub fn check(&self, i: usize, shape: Shape) -> Result<Duration> {
        self.timed(i, shape, "CHECK")
    }
    /// DEL of container `i`.
    pub fn del(&self, i: usize, shape: Shape) -> Result<Duration> {
        self.timed(i, shape, "DEL")
    }

    /// The kernel's part of one ADD alone: the veth request rnet's bridge
    /// plugin makes (the pair, its peer straight into container 0's
    /// namespace, a port of `bench0`, up, with its alias and IPv6 off on
    /// the port, as `rnet_netlink::Netlink::create_veth` sends them), then
    /// the peer set up (which gives the port its carrier: the bridge
    /// enables it then), timed in this process from a thread in the lab
    /// host (the container's socket opened before the clock starts); the pair is
    /// deleted again (not timed). Shows what any plugin's ADD on this
    /// bridge pays for its port, whatever the plugin does around it.
    /// Without `port`, the same pair is not made a bridge port: the veth of
    /// a routed design (a /32 route per container, no shared bridge).
    pub fn veth_floor(&self, port: bool) -> Result<Duration> {
        let netns = self
            .containers
            .first()
            .map(|c| c.netns_path())
            .context("the veth probe needs one container")?;
        let peer_ns = rnet_netns::NetNs::open(&netns)?;
        self.lab.host().run(move || -> Result<Duration> {
            let mut nl = rnet_netlink::Netlink::new()?;
            let br = nl
                .link_by_name("bench0")?
                .context("bridge bench0 not found in the lab host")?;
            let mut mac = rnet_netlink::random_mac();
            mac[0] = 0xfe;
            let spec = rnet_netlink::VethSpec {
                name: "rnfloor0",
                peer_name: "floor0",
                peer_ns: Some(&peer_ns),
                mac: Some(mac),
                peer_mac: Some(rnet_netlink::random_mac()),
                master: port.then_some(br.index),
                up: true,
                alias: Some("floor/probe"),
                host_no_ipv6_ll: true,
                ..rnet_netlink::VethSpec::default()
            };
            let mut cnl = rnet_netlink::Netlink::in_netns(&peer_ns)?;
            let t = Instant::now();
            let (idx, peer) = nl.create_veth_pair(&spec)?;
            let peer = match peer {
                Some(p) => p,
                None => {
                    cnl.link_by_name("floor0")?
                        .context("the probe's peer floor0 not found")?
                        .index
                }
            };
            cnl.link_set_up(peer)?;
            let d = t.elapsed();
            nl.link_del(idx)?;
            Ok(d)
        })?
    }

    /// The port mapper alone: `reps` ADD+DEL pairs of the plugin executed
    /// directly (as the runtime would, with a prevResult of a probe
    /// attachment and one mapping on host port 65000) with whatever mappings
    /// the attached containers hold; returns the ADD durations.
    pub fn portmap_probe(&self, reps: usize) -> Result<Vec<Duration>> {
        let bin = self
            .plugin_dir
            .join(if self.rnet { "rnet-portmap" } else { "portmap" });
        let netns = self
            .containers
            .first()
            .map(|c| c.netns_path())
            .context("the probe needs one container")?;
        let prev = json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "bench0"}, {"name": "eth0", "sandbox": netns}],
            "ips": [{"address": "10.200.250.250/16", "gateway": "10.200.0.1", "interface": 1}]});
        let stdin = crate::footprint::plugin_conf(&self.list_json, 1, Some(&prev), 65000)?;
        let run = |cmd: &str| -> Result<Duration> {
            let mut c = std::process::Command::new(&bin);
            c.env("CNI_COMMAND", cmd)
                .env("CNI_CONTAINERID", "pmprobe")
                .env("CNI_NETNS", &netns)
                .env("CNI_IFNAME", "eth0")
                .env("CNI_PATH", &self.plugin_dir)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let t = Instant::now();
            let mut child = self.lab.host().spawn(&mut c)?;
            if let Some(mut i) = child.stdin.take() {
                std::io::Write::write_all(&mut i, &stdin)?;
            }
            let out = child.wait_with_output()?;
            let d = t.elapsed();
            if !out.status.success() {
                bail!(
                    "{} {cmd}: {}{}",
                    bin.display(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(d)
        };
        let mut adds = Vec::with_capacity(reps);
        for _ in 0..reps {
            adds.push(run("ADD")?);
            run("DEL")?;
        }
        Ok(adds)
    }

    /// Leases left in the IPAM dataDir (host-local format, both implementations).
    pub fn leases(&self) -> usize {
        let dir = self.lab.state_dir().join("ipam").join("benchnet");
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .parse::<std::net::IpAddr>()
                            .is_ok()
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Veths left on the lab host. rnet's DEL returns once the pair's
    /// deletion is under way (a detached child finishes it), so a pair may
    /// still be going for a moment: wait up to 2 s for the count to reach 0.
    pub fn veths(&self) -> Result<usize> {
        let mut nl = self.lab.netlink()?;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let n = nl
                .link_list()?
                .iter()
                .filter(|l| l.kind.as_deref() == Some("veth") && l.name != "uplink0")
                .count();
            if n == 0 || Instant::now() >= deadline {
                return Ok(n);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Section 3: ADD, CHECK, DEL medians, cold first ADD apart.
pub fn add_check_del(
    iterations: usize,
    rnet_dir: &Path,
    ref_dir: &Path,
    shape: Shape,
    netavark: Option<&Path>,
) -> Result<()> {
    let mut ours = Impl::new("rnet", true, rnet_dir, shape)?;
    let mut theirs = Impl::new("reference", false, ref_dir, shape)?;
    let mut nv = netavark
        .map(|b| crate::netavark::ChainSide::new(b, shape))
        .transpose()?;
    let (mut cold_a, mut cold_b) = (Duration::ZERO, Duration::ZERO);
    let mut check_note: Option<String> = None;
    let mut v: [Vec<Duration>; 6] = Default::default();
    for i in 0..=iterations {
        let (a, b) = (ours.new_container()?, theirs.new_container()?);
        let (ta, tb) = (ours.add(a, shape)?, theirs.add(b, shape)?);
        if let Some(nv) = nv.as_mut() {
            nv.setup(i > 0)?;
        }
        if i == 0 {
            (cold_a, cold_b) = (ta, tb);
        } else {
            v[0].push(ta);
            v[1].push(tb);
        }
        v[2].push(ours.check(a, shape)?);
        match theirs.check(b, shape) {
            Ok(d) => v[3].push(d),
            Err(e) if check_note.is_none() => check_note = Some(e.to_string()),
            Err(_) => {}
        }
        v[4].push(ours.del(a, shape)?);
        v[5].push(theirs.del(b, shape)?);
        if let Some(nv) = nv.as_mut() {
            nv.teardown()?;
        }
    }
    let [a, b, c, d, e, f] = v;
    let (sa, sb, sc, sd, se, sf) = (stats(a), stats(b), stats(c), stats(d), stats(e), stats(f));
    let what = if shape.portmap {
        "bridge + IPAM + portmap (one 8080:80 mapping)"
    } else {
        "bridge + IPAM"
    };
    let nvs = nv.as_ref().map(|nv| nv.stats());
    let mut rows = vec![
        ("rnet ADD", &sa),
        ("reference ADD", &sb),
        ("rnet CHECK", &sc),
        ("reference CHECK", &sd),
        ("rnet DEL", &se),
        ("reference DEL", &sf),
    ];
    if let Some((s, t)) = &nvs {
        rows.extend([("netavark setup", s), ("netavark teardown", t)]);
    }
    report(
        &format!("## 3. {what}: ADD, CHECK, DEL through the runtime side"),
        &rows,
    );
    println!(
        "cold first ADD (creates the bridge and the firewall state): rnet {:.3} ms, reference {:.3} ms\n",
        cold_a.as_secs_f64() * 1e3,
        cold_b.as_secs_f64() * 1e3
    );
    goal_line(
        "ADD ratio rnet/reference (median)",
        ratio(&sa, &sb),
        0.1,
        true,
    );
    goal_line(
        "DEL ratio rnet/reference (median)",
        ratio(&se, &sf),
        0.1,
        true,
    );
    for imp in [&ours, &theirs] {
        println!(
            "leftovers after DEL, {}: {} leases, {} veths\n",
            imp.name,
            imp.leases(),
            imp.veths()?
        );
    }
    if let Some(nv) = nv {
        nv.finish(&sa, &se)?;
    }
    Ok(())
}

/// Section 4: attach `n` containers without DEL; ADD time at 1, 10, 100, 500, n.
pub fn scale(
    n: usize,
    rnet_dir: &Path,
    ref_dir: &Path,
    shape: Shape,
    with_reference: bool,
    netavark: Option<&Path>,
) -> Result<()> {
    raise_nofile(4 * n as u64 + 256);
    let mut imps = vec![Impl::new("rnet", true, rnet_dir, shape)?];
    if with_reference {
        imps.push(Impl::new("reference", false, ref_dir, shape)?);
    }
    let mut marks: Vec<usize> = [1, 10, 100, 500, n]
        .into_iter()
        .filter(|m| *m <= n)
        .collect();
    marks.dedup();
    // The ADDs timed for mark m: the WINDOW from m on (from the 2nd for mark
    // 1: the 1st, cold ADD creates the bridge and the table and is shown
    // apart), each after a pause so it meets a quiet host with m-1
    // containers attached, not the previous ADD's deferred kernel work.
    let window = |m: usize, i: usize| {
        let start = m.max(2).min(n.saturating_sub(WINDOW - 1).max(1));
        i >= start && i < start + WINDOW
    };
    let mut cold: Vec<Duration> = vec![Duration::ZERO; imps.len()];
    let mut nv = netavark
        .map(|b| crate::netavark::ScaleSide::new(b, shape))
        .transpose()?;
    let mut at: Vec<Vec<(usize, Duration)>> = vec![Vec::new(); imps.len()];
    // The kernel's veth request alone, beside each timed rnet ADD.
    let mut floor: Vec<(usize, Duration)> = Vec::new();
    // The same veth without the bridge port (a routed design's).
    let mut routed: Vec<(usize, Duration)> = Vec::new();
    // The port mapper alone, with 0 and then each mark's count of mappings
    // installed (issue 5: ADD with 1000 mappings at most 1.2x with none).
    let mut pm: Vec<Vec<(usize, Duration)>> = vec![Vec::new(); imps.len()];
    let pm_marks: Vec<usize> = std::iter::once(0).chain(marks.iter().copied()).collect();
    // A small window around each mark, median of it, to tame noise.
    for i in 1..=n {
        for (k, imp) in imps.iter_mut().enumerate() {
            let c = imp.new_pinned_container()?;
            if shape.portmap && i == 1 {
                std::thread::sleep(SETTLE);
                let d = imp.portmap_probe(PM_REPS)?;
                pm[k].push((0, crate::stats(d).median));
            }
            let timed = marks.iter().any(|m| window(*m, i));
            if timed {
                std::thread::sleep(SETTLE);
            }
            let d = imp.add(c, shape)?;
            if i == 1 {
                cold[k] = d;
            }
            if timed {
                at[k].push((i, d));
                if imp.rnet {
                    std::thread::sleep(SETTLE);
                    floor.push((i, imp.veth_floor(true)?));
                    std::thread::sleep(SETTLE);
                    routed.push((i, imp.veth_floor(false)?));
                }
            }
            if shape.portmap && marks.contains(&i) {
                std::thread::sleep(SETTLE);
                let d = imp.portmap_probe(PM_REPS)?;
                pm[k].push((i, crate::stats(d).median));
            }
        }
        if let Some(nv) = nv.as_mut() {
            nv.add(i, marks.iter().any(|m| window(*m, i)))?;
        }
    }
    let mut names: Vec<&str> = imps.iter().map(|imp| imp.name.as_str()).collect();
    if let Some(nv) = &nv {
        names.push("netavark");
        at.push(nv.samples().to_vec());
    }
    println!(
        "## 4. Scale: {n} containers attached without DEL (ADD time in ms, median of the {WINDOW} from each mark on, each after a {} ms pause; the cold 1st ADD apart)\n",
        SETTLE.as_millis()
    );
    let mut header = String::from("| implementation |");
    for m in &marks {
        header.push_str(&format!(" {m} |"));
    }
    println!("{header} last/first |");
    println!("|---|{}---|", "---|".repeat(marks.len()));
    // Median of each mark's window, in ms.
    let medians = |samples: &[(usize, Duration)]| -> Vec<f64> {
        marks
            .iter()
            .map(|m| {
                let mut w: Vec<Duration> = samples
                    .iter()
                    .filter(|(i, _)| window(*m, *i))
                    .map(|(_, d)| *d)
                    .collect();
                w.sort();
                w.get(w.len() / 2)
                    .copied()
                    .unwrap_or_default()
                    .as_secs_f64()
                    * 1e3
            })
            .collect()
    };
    let row = |name: &str, meds: &[f64]| {
        let mut row = format!("| {name} |");
        for m in meds {
            row.push_str(&format!(" {m:.2} |"));
        }
        let first = meds.first().copied().unwrap_or_default();
        let last = meds.last().copied().unwrap_or_default();
        println!("{row} {:.2} |", last / first.max(1e-9));
    };
    for (k, name) in names.iter().enumerate() {
        row(name, &medians(&at[k]));
    }
    if !floor.is_empty() {
        let kernel = medians(&floor);
        row("kernel: rnet's veth requests alone ¹", &kernel);
        if let Some(k) = imps.iter().position(|imp| imp.rnet) {
            let rest: Vec<f64> = medians(&at[k])
                .iter()
                .zip(&kernel)
                .map(|(a, f)| a - f)
                .collect();
            row("rnet ADD minus the veth requests", &rest);
        }
        row(
            "kernel: the same veth without a bridge port ²",
            &medians(&routed),
        );
        println!(
            "\n¹ In process, no plugin: the same RTM_NEWLINK (pair with its peer in a container's namespace, bridge port, up, alias and IPv6 off on the port), then the peer set up (the bridge enables the port when it gets its carrier), timed beside each timed rnet ADD after the same pause, then deleted. The bridge's per-port work is the kernel's: any plugin pays it.\n\n² The same request without IFLA_MASTER, after the same pause: the veth of a routed design (no shared bridge, a /32 route per container), on the same host with the same containers.\n"
        );
    }
    for (k, imp) in imps.iter().enumerate() {
        println!(
            "cold 1st ADD, {}: {:.2} ms",
            imp.name,
            cold[k].as_secs_f64() * 1e3
        );
    }
    println!();
    if shape.portmap {
        println!(
            "Port mapper alone (median of {PM_REPS} ADDs of one more mapping, plugin executed directly), by mappings already installed:\n"
        );
        let mut header = String::from("| implementation |");
        for m in &pm_marks {
            header.push_str(&format!(" {m} |"));
        }
        println!("{header} last/none |");
        println!("|---|{}---|", "---|".repeat(pm_marks.len()));
        for (k, imp) in imps.iter().enumerate() {
            let mut row = format!("| {} portmap |", imp.name);
            for (_, d) in &pm[k] {
                row.push_str(&format!(" {:.2} |", d.as_secs_f64() * 1e3));
            }
            let first = pm[k].first().map_or(0.0, |(_, d)| d.as_secs_f64());
            let last = pm[k].last().map_or(0.0, |(_, d)| d.as_secs_f64());
            let r = last / first.max(1e-9);
            println!("{row} {r:.2} |");
            if imp.rnet {
                goal_line(
                    "portmap ADD with the last count of mappings / with none",
                    r,
                    1.2,
                    true,
                );
            }
        }
        println!();
    }
    // DEL everything (timed in total).
    for imp in &imps {
        let t = Instant::now();
        for c in 0..imp.containers.len() {
            imp.del(c, shape)?;
        }
        println!(
            "DEL of all {n}, {}: {:.1} s; leftovers {} leases, {} veths\n",
            imp.name,
            t.elapsed().as_secs_f64(),
            imp.leases(),
            imp.veths()?
        );
    }
    if let Some(nv) = &nv {
        nv.teardown_all()?;
    }
    Ok(())
}

/// Section 5: `n` ADDs released at once (threads behind a barrier), on a cold
/// bridge (first use) and a warm one; then `n` parallel DELs.
pub fn parallel(
    n: usize,
    rnet_dir: &Path,
    ref_dir: &Path,
    shape: Shape,
    netavark: Option<&Path>,
) -> Result<()> {
    raise_nofile(4 * n as u64 + 256);
    println!("## 5. Parallel: {n} ADDs at once\n");
    println!(
        "| implementation | bridge | wall ms | succeeded | distinct IPs | DEL wall ms | leftovers |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut walls: Vec<(String, f64)> = Vec::new();
    for (name, rnet, dir) in [("rnet", true, rnet_dir), ("reference", false, ref_dir)] {
        let mut imp = Impl::new(name, rnet, dir, shape)?;
        for warm in [false, true] {
            if warm {
                // Warm the bridge with one attachment that stays.
                let c = imp.new_container()?;
                imp.add(c, shape)?;
            }
            let first = imp.containers.len();
            for _ in 0..n {
                imp.new_container()?;
            }
            let imp_ref = &imp;
            let run = |verb: &'static str| -> (Duration, Vec<Result<Option<String>>>) {
                let barrier = Arc::new(Barrier::new(n));
                let t = Instant::now();
                let out = std::thread::scope(|s| {
                    let hs: Vec<_> = (first..first + n)
                        .map(|i| {
                            let b = barrier.clone();
                            s.spawn(move || -> Result<Option<String>> {
                                let conf = imp_ref.rt_conf(&imp_ref.containers[i], i, shape);
                                let (rt, list) = (&imp_ref.rt, &imp_ref.list);
                                let r = imp_ref.lab.host().run(|| {
                                    b.wait();
                                    if verb == "ADD" {
                                        rt.add(list, &conf)
                                            .map(|r| r.ips.first().map(|ip| ip.address.to_string()))
                                    } else {
                                        rt.del(list, &conf).map(|()| None)
                                    }
                                })?;
                                r.map_err(|e| anyhow::anyhow!(e))
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
            };
            let (wall, res) = run("ADD");
            let ok = res.iter().filter(|r| r.is_ok()).count();
            let ips: HashSet<String> = res
                .iter()
                .filter_map(|r| r.as_ref().ok().cloned().flatten())
                .collect();
            if let Some(Err(e)) = res.iter().find(|r| r.is_err()) {
                eprintln!("{name}: a parallel ADD failed: {e}");
            }
            let (dwall, _) = run("DEL");
            let left = imp.leases() - usize::from(warm);
            println!(
                "| {name} | {} | {:.1} | {ok}/{n} | {} | {:.1} | {left} leases |",
                if warm { "warm" } else { "cold" },
                wall.as_secs_f64() * 1e3,
                ips.len(),
                dwall.as_secs_f64() * 1e3
            );
            if warm {
                walls.push((name.to_owned(), wall.as_secs_f64()));
            }
        }
    }
    // netavark failing in a way the rows do not catch is reported, and the
    // benchmark goes on with the other scenarios.
    let nv_wall = netavark.and_then(|b| {
        crate::netavark::parallel_rows(n, b, shape)
            .map_err(|e| eprintln!("netavark parallel rows stopped: {e:#}"))
            .ok()
    });
    println!();
    if let [(_, a), (_, b)] = walls.as_slice() {
        goal_line(
            "warm parallel wall time rnet/reference",
            a / b.max(1e-9),
            0.1,
            true,
        );
    }
    if let (Some(nvw), Some((_, a))) = (nv_wall, walls.first()) {
        nvw.print_ratios(*a);
    }
    Ok(())
}

pub(crate) fn raise_nofile(want: u64) {
    let want = rustix::process::Rlimit {
        current: Some(want),
        maximum: Some(want.max(1_048_576)),
    };
    let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, want);
}
