//! Lab containers: a network namespace with a command in it stands in for a
//! container (no images). `rnet run` creates the namespace, attaches it to
//! networks through their conflists (the runtime side of rnet-cni, results
//! cached as libcni caches them), and runs the command inside with its own
//! `/etc/resolv.conf` (the network's resolver and search domain) and
//! `/etc/hosts` (its name) in a private mount namespace, as Docker gives a
//! container. Records live in `<stateDir>/containers/<name>.json`.

use crate::Ctx;
use crate::network;
use crate::portspec::{PortSpec, parse_port, port_mappings};
use anyhow::{Context, Result, bail};
use rnet_cni::runtime::{ConfList, RuntimeConf};
use rnet_netns::NetNs;
use serde_json::{Map, Value, json};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn dir(ctx: &Ctx) -> PathBuf {
    ctx.state_dir.join("containers")
}

fn record_path(ctx: &Ctx, name: &str) -> PathBuf {
    dir(ctx).join(format!("{name}.json"))
}

fn files_dir(ctx: &Ctx, name: &str) -> PathBuf {
    dir(ctx).join(name)
}

/// Every container record.
pub fn records(ctx: &Ctx) -> Vec<Value> {
    let Ok(rd) = std::fs::read_dir(dir(ctx)) else {
        return Vec::new();
    };
    let mut out: Vec<Value> = rd
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    out
}

/// The record of container `name_or_id` (name, or an ID prefix).
pub fn find(ctx: &Ctx, name_or_id: &str) -> Option<Value> {
    let recs = records(ctx);
    if let Some(r) = recs.iter().find(|r| r["name"] == name_or_id) {
        return Some(r.clone());
    }
    let by_id: Vec<&Value> = recs
        .iter()
        .filter(|r| {
            !name_or_id.is_empty() && r["id"].as_str().is_some_and(|i| i.starts_with(name_or_id))
        })
        .collect();
    if by_id.len() == 1 {
        Some(by_id[0].clone())
    } else {
        None
    }
}

fn save(ctx: &Ctx, rec: &Value) -> Result<()> {
    let name = rec["name"].as_str().unwrap_or_default();
    let bytes = serde_json::to_vec_pretty(rec)?;
    rnet_cni::runtime::write_atomic(&record_path(ctx, name), &bytes)
        .map_err(|e| anyhow::anyhow!(e.msg))
}

/// `name (id)` for a container ID, or the ID alone when no record names it.
pub fn display_name(ctx: &Ctx, id: &str) -> String {
    records(ctx)
        .iter()
        .find(|r| r["id"].as_str() == Some(id))
        .and_then(|r| {
            r["name"]
                .as_str()
                .map(|n| format!("{n} ({})", &id[..id.len().min(12)]))
        })
        .unwrap_or_else(|| id.to_owned())
}

/// Options of `rnet run`.
#[derive(Debug, Clone, Default)]
pub struct RunOpts {
    /// Container name.
    pub name: Option<String>,
    /// Networks (first is the primary).
    pub networks: Vec<String>,
    /// Published ports.
    pub ports: Vec<String>,
    /// Static address on the first network.
    pub ip: Option<IpAddr>,
    /// DNS aliases.
    pub aliases: Vec<String>,
    /// Run in the background.
    pub detach: bool,
    /// The command.
    pub command: Vec<String>,
}

fn new_id(name: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let a = network::short_hash(&format!("{name}/{t}/{}", std::process::id()));
    let b = network::short_hash(&format!("{t}/{name}"));
    format!("{a}{b}{}", &network::short_hash(&format!("{b}{a}"))[..8])
}

/// The start time of process `pid` (field 22 of /proc/PID/stat), to tell a
/// recorded process from a later one that reuses its PID.
fn start_time(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = s.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Is process `pid` a zombie (exited, not yet reaped)?
fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Is the recorded process still the container's, and alive?
pub fn running(rec: &Value) -> bool {
    let (Some(pid), Some(st)) = (rec["pid"].as_u64(), rec["startTime"].as_u64()) else {
        return false;
    };
    let pid = pid as u32;
    pid > 0 && start_time(pid) == Some(st) && !zombie(pid)
}

fn netns_path(rec: &Value) -> Option<PathBuf> {
    if rec["network_mode"] == "host" {
        return rec["hostNetns"].as_str().map(PathBuf::from);
    }
    running(rec).then(|| PathBuf::from(format!("/proc/{}/ns/net", rec["pid"])))
}

/// Materialises the built-in `bridge` network's conflist on first use.
fn ensure_network(ctx: &Ctx, name: &str) -> Result<(network::Network, ConfList)> {
    let mut n = network::get(ctx, name)?;
    if n.path.is_none() && name == "bridge" {
        let p = ctx.config_dir.join("bridge.conflist");
        std::fs::create_dir_all(&ctx.config_dir)?;
        rnet_cni::runtime::write_atomic(&p, &serde_json::to_vec_pretty(&n.conf)?)
            .map_err(|e| anyhow::anyhow!(e.msg))?;
        n.path = Some(p);
    }
    let bytes = serde_json::to_vec(&n.conf)?;
    let list = ConfList::parse(&bytes).map_err(|e| anyhow::anyhow!("network {name}: {}", e.msg))?;
    Ok((n, list))
}

fn rt_conf(
    rec: &Value,
    ifname: &str,
    netns: Option<PathBuf>,
    caps: Map<String, Value>,
    ip: Option<IpAddr>,
) -> RuntimeConf {
    let mut args = vec![
        ("IgnoreUnknown".to_owned(), "1".to_owned()),
        (
            "K8S_POD_NAME".to_owned(),
            rec["name"].as_str().unwrap_or_default().to_owned(),
        ),
    ];
    if let Some(ip) = ip {
        args.push(("IP".into(), ip.to_string()));
    }
    RuntimeConf {
        container_id: rec["id"].as_str().unwrap_or_default().to_owned(),
        netns,
        ifname: ifname.to_owned(),
        args,
        capability_args: caps,
    }
}

/// One attachment to make.
struct AttachSpec<'a> {
    net: &'a str,
    ifname: &'a str,
    netns: PathBuf,
    ports: &'a [PortSpec],
    ip: Option<IpAddr>,
    aliases: &'a [String],
}

/// Attaches the container to `a.net` as `a.ifname`; returns the result.
fn attach(ctx: &Ctx, rec: &mut Value, a: AttachSpec<'_>) -> Result<rnet_cni::CniResult> {
    let AttachSpec {
        net,
        ifname,
        netns,
        ports,
        ip,
        aliases,
    } = a;
    let (_, list) = ensure_network(ctx, net)?;
    let mut caps = Map::new();
    if !ports.is_empty() {
        caps.insert("portMappings".into(), port_mappings(ports));
    }
    if !aliases.is_empty() {
        caps.insert("aliases".into(), json!({ net: aliases }));
    }
    let conf = rt_conf(rec, ifname, Some(netns), caps.clone(), ip);
    // Record the intent first: a crash midway leaves something `rnet gc`/`rm` can find.
    rec["networks"][net] = json!({"ifname": ifname, "caps": caps, "ip": ip.map(|i| i.to_string())});
    save(ctx, rec)?;
    match ctx.runtime().add(&list, &conf) {
        Ok(r) => {
            rec["networks"][net]["ips"] = json!(
                r.ips
                    .iter()
                    .map(|i| i.address.to_string())
                    .collect::<Vec<_>>()
            );
            save(ctx, rec)?;
            Ok(r)
        }
        Err(e) => {
            // Roll back whatever part of the chain succeeded.
            let _ = ctx.runtime().del(&list, &conf);
            if let Some(m) = rec["networks"].as_object_mut() {
                m.remove(net);
            }
            save(ctx, rec)?;
            bail!("attaching to network {net} failed: {e}")
        }
    }
}

/// Detaches the container from `net` (idempotent).
fn detach_net(ctx: &Ctx, rec: &mut Value, net: &str) -> Result<()> {
    let Some(info) = rec["networks"].get(net).cloned() else {
        return Ok(());
    };
    let ifname = info["ifname"].as_str().unwrap_or("eth0").to_owned();
    let caps = info["caps"].as_object().cloned().unwrap_or_default();
    let conf = rt_conf(rec, &ifname, netns_path(rec), caps, None);
    match ensure_network(ctx, net) {
        Ok((_, list)) => ctx
            .runtime()
            .del(&list, &conf)
            .map_err(|e| anyhow::anyhow!("detaching from network {net}: {e}"))?,
        Err(e) => {
            eprintln!("rnet: warning: network {net} is gone ({e:#}); dropping the attachment")
        }
    }
    if let Some(m) = rec["networks"].as_object_mut() {
        m.remove(net);
    }
    save(ctx, rec)
}

fn write_files(
    ctx: &Ctx,
    name: &str,
    results: &[rnet_cni::CniResult],
) -> Result<(PathBuf, PathBuf)> {
    let d = files_dir(ctx, name);
    std::fs::create_dir_all(&d)?;
    let mut ns: Vec<String> = Vec::new();
    let mut search: Vec<String> = Vec::new();
    let mut opts: Vec<String> = Vec::new();
    for r in results {
        ns.extend(r.dns.nameservers.iter().cloned());
        search.extend(r.dns.search.iter().cloned());
        if !r.dns.domain.is_empty() {
            search.push(r.dns.domain.clone());
        }
        opts.extend(r.dns.options.iter().cloned());
    }
    let mut resolv = String::new();
    if ns.is_empty() {
        resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    } else {
        search.dedup();
        for n in &ns {
            resolv.push_str(&format!("nameserver {n}\n"));
        }
        if !search.is_empty() {
            resolv.push_str(&format!("search {}\n", search.join(" ")));
        }
        if !opts.is_empty() {
            resolv.push_str(&format!("options {}\n", opts.join(" ")));
        }
    }
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for r in results {
        for ip in &r.ips {
            hosts.push_str(&format!("{}\t{name}\n", ip.address.addr()));
        }
    }
    let (rp, hp) = (d.join("resolv.conf"), d.join("hosts"));
    std::fs::write(&rp, resolv)?;
    std::fs::write(&hp, hosts)?;
    Ok((rp, hp))
}

/// `rnet run`. Returns the process exit code for foreground runs.
pub fn run(ctx: &Ctx, o: RunOpts) -> Result<i32> {
    if o.command.is_empty() {
        bail!("rnet run needs a command: rnet run [OPTIONS] -- CMD [ARGS...]");
    }
    let ports: Vec<PortSpec> = o
        .ports
        .iter()
        .map(|p| parse_port(p))
        .collect::<Result<_>>()?;
    let networks = if o.networks.is_empty() {
        vec!["bridge".to_owned()]
    } else {
        o.networks.clone()
    };
    let mode = match networks[0].as_str() {
        "host" | "none" if networks.len() > 1 => bail!(
            "--network {} cannot be combined with other networks",
            networks[0]
        ),
        "host" => "host",
        "none" => "none",
        _ => "bridge",
    };
    if mode != "bridge" && !ports.is_empty() {
        bail!("-p needs a bridge network: with --network {mode} nothing can be published");
    }
    let name = match o.name.clone() {
        Some(n) => n,
        None => format!(
            "rnet-{}",
            &network::short_hash(&format!("{:?}{}", Instant::now(), std::process::id()))[..6]
        ),
    };
    rnet_cni::args::validate_network_name(&name).map_err(|_| {
        anyhow::anyhow!("invalid container name {name:?}: use letters, digits, '_', '.', '-'")
    })?;
    if let Some(r) = find(ctx, &name) {
        if r["name"] == name.as_str() {
            bail!(
                "the container name {name:?} is already in use; remove it first (rnet rm -f {name}) or choose another"
            );
        }
    }
    for n in &networks {
        network::get(ctx, n)?;
    }
    let id = new_id(&name);
    let host_ns = NetNs::current().context("cannot open this process's network namespace")?;
    let ns = if mode == "host" {
        host_ns
    } else {
        NetNs::new_unnamed()
            .context("cannot create the container's network namespace (root needed)")?
    };
    let mut rec = json!({
        "name": name, "id": id, "command": o.command, "created": now(),
        "network_mode": mode, "networks": {}, "ports": o.ports, "aliases": o.aliases,
        "pid": 0, "startTime": 0, "detached": o.detach,
    });
    if mode == "host" {
        rec["hostNetns"] = json!(ns.path());
    }
    save(ctx, &rec)?;
    let mut results = Vec::new();
    let attach_all = |rec: &mut Value, results: &mut Vec<rnet_cni::CniResult>| -> Result<()> {
        match mode {
            "none" => {
                results.push(attach(
                    ctx,
                    rec,
                    AttachSpec {
                        net: "none",
                        ifname: "lo",
                        netns: ns.path(),
                        ports: &[],
                        ip: None,
                        aliases: &[],
                    },
                )?);
            }
            "host" => {
                results.push(attach(
                    ctx,
                    rec,
                    AttachSpec {
                        net: "host",
                        ifname: "eth0",
                        netns: ns.path(),
                        ports: &[],
                        ip: None,
                        aliases: &[],
                    },
                )?);
            }
            _ => {
                for (i, net) in networks.iter().enumerate() {
                    let (p, ip) = if i == 0 {
                        (&ports[..], o.ip)
                    } else {
                        (&[][..], None)
                    };
                    let ifname = format!("eth{i}");
                    results.push(attach(
                        ctx,
                        rec,
                        AttachSpec {
                            net,
                            ifname: &ifname,
                            netns: ns.path(),
                            ports: p,
                            ip,
                            aliases: &o.aliases,
                        },
                    )?);
                }
            }
        }
        Ok(())
    };
    if let Err(e) = attach_all(&mut rec, &mut results) {
        let _ = remove_record(ctx, &mut rec);
        return Err(e);
    }
    let (resolv, hosts) = write_files(ctx, &name, &results)?;
    let mut cmd = Command::new(&o.command[0]);
    cmd.args(&o.command[1..]);
    if o.detach {
        let log = files_dir(ctx, &name).join("log");
        let f = std::fs::File::create(&log)?;
        cmd.stdin(Stdio::null()).stdout(f.try_clone()?).stderr(f);
    }
    let binds = if mode == "host" {
        Vec::new()
    } else {
        vec![
            (resolv, "/etc/resolv.conf".into()),
            (hosts, "/etc/hosts".into()),
        ]
    };
    let hostname = (mode != "host").then_some(name.as_str());
    let mut child = match rnet_netns::spawn_container(&mut cmd, &ns, &binds, hostname) {
        Ok(c) => c,
        Err(e) => {
            let _ = remove_record(ctx, &mut rec);
            bail!("cannot start {:?}: {e}", o.command[0]);
        }
    };
    rec["pid"] = json!(child.id());
    rec["startTime"] = json!(start_time(child.id()).unwrap_or(0));
    save(ctx, &rec)?;
    if o.detach {
        println!("{id}");
        return Ok(0);
    }
    let status = child.wait()?;
    let mut rec = find(ctx, &name).unwrap_or(rec);
    remove_record(ctx, &mut rec)?;
    Ok(status.code().unwrap_or(128 + 9))
}

fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    secs.to_string()
}

/// Detaches every network, stops the process, removes the record and files.
fn remove_record(ctx: &Ctx, rec: &mut Value) -> Result<()> {
    let nets: Vec<String> = rec["networks"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let mut first_err = None;
    for n in nets {
        if let Err(e) = detach_net(ctx, rec, &n) {
            first_err.get_or_insert(e);
        }
    }
    kill(rec, Duration::from_secs(5));
    if let Some(e) = first_err {
        return Err(e);
    }
    let name = rec["name"].as_str().unwrap_or_default().to_owned();
    let _ = std::fs::remove_dir_all(files_dir(ctx, &name));
    let _ = std::fs::remove_file(record_path(ctx, &name));
    Ok(())
}

fn kill(rec: &mut Value, grace: Duration) {
    if !running(rec) {
        return;
    }
    let Some(pid) = rec["pid"]
        .as_u64()
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let t = Instant::now();
    while running(rec) && t.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(20));
    }
    if running(rec) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        let t = Instant::now();
        while running(rec) && t.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    rec["pid"] = json!(0);
}

/// `rnet stop`: detach networks, stop the process; the record stays (`rnet rm` removes it).
pub fn stop(ctx: &Ctx, name: &str, grace: Duration) -> Result<()> {
    let mut rec = find(ctx, name)
        .with_context(|| format!("no container named {name:?}; `rnet ps -a` lists them"))?;
    let nets: Vec<String> = rec["networks"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for n in nets {
        detach_net(ctx, &mut rec, &n)?;
    }
    kill(&mut rec, grace);
    save(ctx, &rec)
}

/// `rnet rm` of a container.
pub fn rm(ctx: &Ctx, name: &str, force: bool) -> Result<()> {
    let mut rec = find(ctx, name).with_context(|| format!("no container named {name:?}"))?;
    if running(&rec) && !force {
        bail!("container {name} is running; stop it first (rnet stop {name}) or use rnet rm -f");
    }
    remove_record(ctx, &mut rec)
}

/// `rnet ps`.
pub fn ps(ctx: &Ctx, all: bool, quiet: bool) -> Result<()> {
    let recs: Vec<Value> = records(ctx)
        .into_iter()
        .filter(|r| all || running(r))
        .collect();
    if quiet {
        for r in &recs {
            println!(
                "{}",
                &r["id"].as_str().unwrap_or_default()
                    [..12.min(r["id"].as_str().unwrap_or_default().len())]
            );
        }
        return Ok(());
    }
    println!(
        "{:<14}{:<18}{:<24}{:<10}{:<28}NETWORKS",
        "CONTAINER ID", "NAME", "COMMAND", "STATUS", "PORTS"
    );
    for r in &recs {
        let id = r["id"].as_str().unwrap_or_default();
        let cmd: Vec<&str> = r["command"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut cmd = cmd.join(" ");
        if cmd.len() > 22 {
            cmd.truncate(20);
            cmd.push_str("..");
        }
        let ports: Vec<&str> = r["ports"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let nets: Vec<String> = r["networks"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        println!(
            "{:<14}{:<18}{:<24}{:<10}{:<28}{}",
            &id[..12.min(id.len())],
            r["name"].as_str().unwrap_or_default(),
            format!("\"{cmd}\""),
            if running(r) { "Up" } else { "Exited" },
            ports.join(","),
            nets.join(",")
        );
    }
    Ok(())
}

/// `rnet exec`.
pub fn exec(ctx: &Ctx, name: &str, command: &[String]) -> Result<i32> {
    let rec = find(ctx, name).with_context(|| format!("no container named {name:?}"))?;
    if !running(&rec) {
        bail!("container {name} is not running");
    }
    if command.is_empty() {
        bail!("rnet exec needs a command: rnet exec NAME -- CMD [ARGS...]");
    }
    let pid = rec["pid"].as_u64().unwrap_or(0) as u32;
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]);
    let mut child = rnet_netns::spawn_in_process_namespaces(&mut cmd, pid)?;
    Ok(child.wait()?.code().unwrap_or(128 + 9))
}

/// `rnet connect NET NAME`.
pub fn connect(
    ctx: &Ctx,
    net: &str,
    name: &str,
    ip: Option<IpAddr>,
    aliases: &[String],
) -> Result<()> {
    let mut rec = find(ctx, name).with_context(|| format!("no container named {name:?}"))?;
    if rec["network_mode"] != "bridge" {
        bail!(
            "container {name} uses --network {}: it cannot join other networks",
            rec["network_mode"].as_str().unwrap_or("?")
        );
    }
    if rec["networks"].get(net).is_some() {
        bail!("container {name} is already connected to {net}");
    }
    let netns = netns_path(&rec).with_context(|| format!("container {name} is not running"))?;
    let used: Vec<String> = rec["networks"]
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|v| v["ifname"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let ifname = (0..64)
        .map(|i| format!("eth{i}"))
        .find(|n| !used.contains(n))
        .unwrap_or_else(|| "eth63".into());
    attach(
        ctx,
        &mut rec,
        AttachSpec {
            net,
            ifname: &ifname,
            netns,
            ports: &[],
            ip,
            aliases,
        },
    )?;
    Ok(())
}

/// `rnet disconnect NET NAME`.
pub fn disconnect(ctx: &Ctx, net: &str, name: &str) -> Result<()> {
    let mut rec = find(ctx, name).with_context(|| format!("no container named {name:?}"))?;
    if rec["networks"].get(net).is_none() {
        bail!("container {name} is not connected to {net}");
    }
    detach_net(ctx, &mut rec, net)
}

/// `rnet port NAME`.
pub fn port(ctx: &Ctx, name: &str) -> Result<()> {
    let rec = find(ctx, name).with_context(|| format!("no container named {name:?}"))?;
    for p in rec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let s = parse_port(p)?;
        for i in 0..s.count {
            let host = if s.host_ip.is_empty() {
                "0.0.0.0".to_owned()
            } else {
                s.host_ip.clone()
            };
            println!(
                "{}/{} -> {host}:{}",
                s.container_port + i,
                s.proto,
                s.host_port + i
            );
        }
    }
    Ok(())
}

/// Used by `inspect` for containers.
pub fn inspect_value(rec: &Value) -> Value {
    let mut v = rec.clone();
    v["running"] = json!(running(rec));
    v
}
