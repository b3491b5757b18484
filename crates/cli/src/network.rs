//! Networks: Docker-style `create`, `ls`, `inspect`, `rm`, `prune` over plain
//! CNI conflists in a config directory, so any CNI runtime can use them.
//!
//! A network made by `rnet create` is a conflist of rnet's plugins (bridge with
//! its IPAM, port mapper, DNS) plus a top-level `"rnet"` object holding what
//! the CLI needs to show it (id, creation time, labels, options). Runtimes
//! ignore that key. Conflists written by anything else are listed too, with
//! their first plugin's type as the driver.

use crate::Ctx;
use anyhow::{Context, Result, bail};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rnet_cni::runtime::ConfList;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

/// The networks every host has, as in Docker.
pub const BUILTIN: &[&str] = &["bridge", "host", "none"];

/// The subnet of the built-in `bridge` network.
pub const DEFAULT_BRIDGE_SUBNET: &str = "10.86.0.0/16";

/// Where `rnet create` looks for free /24s when no subnet is given.
pub const POOL_V4: &str = "10.90.0.0/16";

/// Options of `rnet create`.
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    /// Network name.
    pub name: String,
    /// Driver (only `bridge`).
    pub driver: String,
    /// Subnets (v4 and/or v6).
    pub subnets: Vec<IpNet>,
    /// Gateways, matched to subnets by family and containment.
    pub gateways: Vec<IpAddr>,
    /// Allocation ranges inside the subnets.
    pub ip_ranges: Vec<IpNet>,
    /// Add an IPv6 subnet (picked if none given).
    pub ipv6: bool,
    /// No masquerade, no default route, no DNS forwarding.
    pub internal: bool,
    /// No DNS plugin.
    pub disable_dns: bool,
    /// Isolate from other rnet bridges.
    pub isolate: bool,
    /// Driver options (`mtu=`, `com.docker.network.bridge.name=`, ...).
    pub opts: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// One network as the CLI sees it.
#[derive(Debug, Clone)]
pub struct Network {
    /// Name.
    pub name: String,
    /// Where it is stored (none for built-ins not yet written).
    pub path: Option<PathBuf>,
    /// The conflist.
    pub conf: Value,
}

impl Network {
    /// The `"rnet"` metadata object, if rnet wrote it.
    pub fn meta(&self) -> Option<&Map<String, Value>> {
        self.conf.get("rnet").and_then(Value::as_object)
    }

    /// A short id (from the metadata, else derived from the name).
    pub fn id(&self) -> String {
        self.meta()
            .and_then(|m| m.get("id"))
            .and_then(Value::as_str)
            .map_or_else(|| short_hash(&self.name), str::to_owned)
    }

    /// The driver: the metadata's, else the first plugin's type.
    pub fn driver(&self) -> String {
        if let Some(d) = self
            .meta()
            .and_then(|m| m.get("driver"))
            .and_then(Value::as_str)
        {
            return d.to_owned();
        }
        self.plugins()
            .first()
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    }

    /// The plugin objects.
    pub fn plugins(&self) -> Vec<&Map<String, Value>> {
        self.conf
            .get("plugins")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_object).collect())
            .unwrap_or_default()
    }

    /// Every subnet of every IPAM section (host-local schema, both forms).
    pub fn subnets(&self) -> Vec<IpNet> {
        let mut out = Vec::new();
        for p in self.plugins() {
            let Some(ipam) = p.get("ipam").and_then(Value::as_object) else {
                continue;
            };
            if let Some(s) = ipam
                .get("subnet")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
            {
                out.push(s);
            }
            for set in ipam
                .get("ranges")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for r in set.as_array().into_iter().flatten() {
                    if let Some(s) = r
                        .get("subnet")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse().ok())
                    {
                        out.push(s);
                    }
                }
            }
        }
        out
    }

    /// Labels from the metadata.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.meta()
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .map(|l| {
                l.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The bridge name, if a bridge plugin is in the list.
    pub fn bridge(&self) -> Option<String> {
        self.plugins().iter().find_map(|p| {
            let t = p.get("type").and_then(Value::as_str)?;
            if t == "rnet-bridge" || t == "bridge" {
                Some(
                    p.get("bridge")
                        .and_then(Value::as_str)
                        .unwrap_or("cni0")
                        .to_owned(),
                )
            } else {
                None
            }
        })
    }
}

/// FNV-1a 64, hex: stable ids and names (not security).
pub fn short_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")[..12].to_owned()
}

fn conf_path(ctx: &Ctx, name: &str) -> PathBuf {
    ctx.config_dir.join(format!("{name}.conflist"))
}

/// Every network in the config dir, plus the built-ins that are not written yet.
pub fn list(ctx: &Ctx) -> Result<Vec<Network>> {
    let mut nets: Vec<Network> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&ctx.config_dir) {
        let mut paths: Vec<PathBuf> = rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "conflist" || e == "conf" || e == "json")
            })
            .collect();
        paths.sort();
        for p in paths {
            match ConfList::load(&p) {
                Ok(list) => {
                    let conf: Value = serde_json::from_slice(&list.bytes).unwrap_or(Value::Null);
                    if nets.iter().any(|n| n.name == list.name) {
                        continue; // first file wins, as libcni
                    }
                    nets.push(Network {
                        name: list.name,
                        path: Some(p),
                        conf,
                    });
                }
                Err(e) => eprintln!("rnet: warning: skipping {}: {}", p.display(), e.msg),
            }
        }
    }
    for b in BUILTIN {
        if !nets.iter().any(|n| n.name == *b) {
            nets.push(Network {
                name: (*b).to_owned(),
                path: None,
                conf: builtin_conf(ctx, b),
            });
        }
    }
    Ok(nets)
}

/// The network named `name` (built-ins included).
pub fn get(ctx: &Ctx, name: &str) -> Result<Network> {
    list(ctx)?
        .into_iter()
        .find(|n| n.name == name)
        .with_context(|| {
            format!(
                "no network named {name:?}; `rnet ls` lists them, `rnet create {name}` makes one"
            )
        })
}

fn builtin_conf(ctx: &Ctx, name: &str) -> Value {
    match name {
        "host" => json!({"cniVersion": "1.1.0", "name": "host",
            "plugins": [{"type": "rnet-host"}],
            "rnet": {"id": short_hash("host"), "driver": "host", "builtin": true}}),
        "none" => json!({"cniVersion": "1.1.0", "name": "none",
            "plugins": [{"type": "rnet-none"}],
            "rnet": {"id": short_hash("none"), "driver": "null", "builtin": true}}),
        _ => {
            let opts = CreateOpts {
                name: "bridge".into(),
                driver: "bridge".into(),
                subnets: DEFAULT_BRIDGE_SUBNET.parse().into_iter().collect(),
                ..CreateOpts::default()
            };
            let mut v = render(ctx, &opts, "rnet0");
            v["rnet"]["builtin"] = json!(true);
            v
        }
    }
}

/// The conflist of a bridge network.
pub fn render(ctx: &Ctx, o: &CreateOpts, bridge: &str) -> Value {
    let mut sets: Vec<Value> = Vec::new();
    for s in &o.subnets {
        let mut r = json!({"subnet": s.trunc().to_string()});
        if let Some(gw) = o.gateways.iter().find(|g| s.contains(*g)) {
            r["gateway"] = json!(gw.to_string());
        }
        if let Some(range) = o.ip_ranges.iter().find(|r| s.contains(&r.network())) {
            let hosts: Vec<IpAddr> = match range {
                IpNet::V4(n) => vec![IpAddr::V4(n.network()), IpAddr::V4(n.broadcast())],
                IpNet::V6(n) => vec![IpAddr::V6(n.network()), IpAddr::V6(n.broadcast())],
            };
            let start = next_ip(hosts[0]);
            let end = if range.addr().is_ipv4() {
                prev_ip(hosts[1])
            } else {
                hosts[1]
            };
            r["rangeStart"] = json!(start.to_string());
            r["rangeEnd"] = json!(end.to_string());
        }
        sets.push(json!([r]));
    }
    let mut routes = Vec::new();
    if !o.internal {
        if o.subnets.iter().any(|s| s.addr().is_ipv4()) {
            routes.push(json!({"dst": "0.0.0.0/0"}));
        }
        if o.subnets.iter().any(|s| s.addr().is_ipv6()) {
            routes.push(json!({"dst": "::/0"}));
        }
    }
    let mut bridge_plugin = json!({
        "type": "rnet-bridge",
        "bridge": bridge,
        "isGateway": true,
        "ipMasq": !o.internal,
        "hairpinMode": true,
        "rnetStateDir": ctx.state_dir.join("run"),
        "ipam": {"type": "rnet-ipam", "ranges": sets, "routes": routes,
                 "dataDir": ctx.state_dir.join("ipam")},
    });
    if let Some(mtu) = o
        .opts
        .get("mtu")
        .or_else(|| o.opts.get("com.docker.network.driver.mtu"))
    {
        if let Ok(m) = mtu.parse::<u32>() {
            bridge_plugin["mtu"] = json!(m);
        }
    }
    if o.isolate {
        bridge_plugin["isolation"] = json!(true);
    }
    let mut plugins = vec![
        bridge_plugin,
        json!({"type": "rnet-portmap", "capabilities": {"portMappings": true},
               "rnetStateDir": ctx.state_dir.join("run")}),
    ];
    if !o.disable_dns {
        plugins.push(json!({"type": "rnet-dnsname", "domainName": "dns.rnet",
            "capabilities": {"aliases": true}, "internal": o.internal,
            "rnetStateDir": ctx.state_dir.join("run")}));
    }
    json!({
        "cniVersion": "1.1.0",
        "name": o.name,
        "plugins": plugins,
        "rnet": {
            "id": short_hash(&format!("{}:{}", o.name, bridge)),
            "driver": "bridge",
            "created": now_rfc3339(),
            "internal": o.internal,
            "dns": !o.disable_dns,
            "isolate": o.isolate,
            "labels": o.labels,
            "options": o.opts,
        }
    })
}

fn next_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(u32::from(a).saturating_add(1).into()),
        IpAddr::V6(a) => IpAddr::V6(u128::from(a).saturating_add(1).into()),
    }
}

fn prev_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(u32::from(a).saturating_sub(1).into()),
        IpAddr::V6(a) => IpAddr::V6(u128::from(a).saturating_sub(1).into()),
    }
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Subnets already in use: every network's, and the host's routes and addresses.
fn used_subnets(ctx: &Ctx) -> Result<Vec<IpNet>> {
    let mut used: Vec<IpNet> = list(ctx)?.iter().flat_map(Network::subnets).collect();
    let mut nl = rnet_netlink::Netlink::new().context("cannot read the host's routes")?;
    for fam in [rnet_netlink::Family::V4, rnet_netlink::Family::V6] {
        for r in nl.route_list(fam, None)? {
            if r.dst.prefix_len() > 0 && !r.dst.addr().is_loopback() {
                used.push(r.dst);
            }
        }
    }
    for a in nl.addr_list(None, None)? {
        if !a.addr.addr().is_loopback() {
            used.push(a.addr.trunc());
        }
    }
    Ok(used)
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A free /24 from [`POOL_V4`].
pub fn pick_v4(used: &[IpNet]) -> Result<IpNet> {
    let pool: Ipv4Net = POOL_V4.parse()?;
    for s in pool.subnets(24)? {
        let cand = IpNet::V4(s);
        if !used.iter().any(|u| overlaps(u, &cand)) {
            return Ok(cand);
        }
    }
    bail!("no free /24 left in {POOL_V4}; pass --subnet")
}

/// A free ULA /64 derived from the network name.
pub fn pick_v6(name: &str, used: &[IpNet]) -> Result<IpNet> {
    let h = u64::from_str_radix(&short_hash(name), 16).unwrap_or(0);
    for i in 0..256u64 {
        let x = h.wrapping_add(i);
        let segs = [
            0xfd52,
            0x6e65, // "ne"
            (x >> 32) as u16,
            (x >> 16) as u16,
            0,
            0,
            0,
            0,
        ];
        let s = IpNet::V6(Ipv6Net::new(std::net::Ipv6Addr::from(segs), 64)?);
        if !used.iter().any(|u| overlaps(u, &s)) {
            return Ok(s);
        }
    }
    bail!("no free IPv6 /64 found; pass --subnet")
}

/// `rnet create`.
pub fn create(ctx: &Ctx, mut o: CreateOpts) -> Result<Network> {
    rnet_cni::args::validate_network_name(&o.name).map_err(|e| anyhow::anyhow!(e.msg))?;
    if BUILTIN.contains(&o.name.as_str()) {
        bail!("{:?} is a built-in network; choose another name", o.name);
    }
    if o.driver != "bridge" {
        bail!(
            "unknown driver {:?}: rnet networks use the bridge driver (--driver bridge)",
            o.driver
        );
    }
    let existing = list(ctx)?;
    if existing.iter().any(|n| n.name == o.name) {
        bail!(
            "network {:?} already exists; remove it first (rnet rm {})",
            o.name,
            o.name
        );
    }
    for k in o.opts.keys() {
        if ![
            "mtu",
            "com.docker.network.driver.mtu",
            "com.docker.network.bridge.name",
        ]
        .contains(&k.as_str())
        {
            bail!(
                "unknown option --opt {k}: known are mtu, com.docker.network.driver.mtu, com.docker.network.bridge.name"
            );
        }
    }
    if let Some(mtu) = o
        .opts
        .get("mtu")
        .or_else(|| o.opts.get("com.docker.network.driver.mtu"))
    {
        let m: u32 = mtu
            .parse()
            .with_context(|| format!("--opt mtu={mtu}: not a number"))?;
        if !(68..=65535).contains(&m) {
            bail!("--opt mtu={m}: must be between 68 and 65535");
        }
    }
    let used = used_subnets(ctx)?;
    for s in &o.subnets {
        if let Some(u) = used.iter().find(|u| overlaps(u, s)) {
            bail!(
                "subnet {s} overlaps {u}, already used by another network or a route on this host; pick another --subnet"
            );
        }
    }
    for (i, a) in o.subnets.iter().enumerate() {
        for b in &o.subnets[i + 1..] {
            if overlaps(a, b) {
                bail!("subnets {a} and {b} overlap");
            }
        }
    }
    if o.subnets.is_empty() {
        o.subnets.push(pick_v4(&used)?);
    }
    if o.ipv6 && !o.subnets.iter().any(|s| s.addr().is_ipv6()) {
        o.subnets.push(pick_v6(&o.name, &used)?);
    }
    for g in &o.gateways {
        if !o.subnets.iter().any(|s| s.contains(g)) {
            bail!("--gateway {g} is in none of the subnets; add the matching --subnet");
        }
    }
    for r in &o.ip_ranges {
        if !o.subnets.iter().any(|s| s.contains(&r.network())) {
            bail!("--ip-range {r} is in none of the subnets");
        }
    }
    let bridge = match o.opts.get("com.docker.network.bridge.name") {
        Some(b) => {
            rnet_cni::args::validate_ifname(b)
                .map_err(|e| anyhow::anyhow!("--opt com.docker.network.bridge.name: {}", e.msg))?;
            b.clone()
        }
        None => format!("rnet-{}", &short_hash(&o.name)[..10]),
    };
    let conf = render(ctx, &o, &bridge);
    std::fs::create_dir_all(&ctx.config_dir)
        .with_context(|| format!("cannot create the config dir {}", ctx.config_dir.display()))?;
    let path = conf_path(ctx, &o.name);
    let bytes = serde_json::to_vec_pretty(&conf)?;
    // Validate as a CNI runtime will.
    ConfList::parse(&bytes)
        .map_err(|e| anyhow::anyhow!("internal: the conflist is invalid: {}", e.msg))?;
    rnet_cni::runtime::write_atomic(&path, &bytes).map_err(|e| anyhow::anyhow!(e.msg))?;
    set_mode(&path, 0o644);
    Ok(Network {
        name: o.name,
        path: Some(path),
        conf,
    })
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// Containers attached to `net` according to the runtime's cache.
pub fn attachments(ctx: &Ctx, net: &str) -> Vec<rnet_cni::runtime::CachedAttachment> {
    ctx.runtime()
        .cached_attachments(Some(net))
        .unwrap_or_default()
}

/// `rnet rm` of a network.
pub fn remove(ctx: &Ctx, name: &str) -> Result<()> {
    let n = get(ctx, name)?;
    if n.meta()
        .and_then(|m| m.get("builtin"))
        .and_then(Value::as_bool)
        == Some(true)
        && n.path.is_none()
    {
        bail!("{name:?} is a built-in network and cannot be removed");
    }
    let att = attachments(ctx, name);
    if !att.is_empty() {
        let names: Vec<String> = att
            .iter()
            .map(|a| crate::container::display_name(ctx, &a.rt.container_id))
            .collect();
        bail!(
            "network {name:?} has attached containers: {}; stop or disconnect them first",
            names.join(", ")
        );
    }
    // The bridge first, then GC of what the plugins may have left: with the
    // bridge gone, GC also drops its shared nft elements (the bridge sets,
    // isolation, localhost publishing) and the filter chains nobody uses
    // any more.
    if let Some(br) = n.bridge() {
        if let Ok(mut nl) = rnet_netlink::Netlink::new() {
            let _ = nl.link_del_by_name(&br);
        }
    }
    if let Some(p) = &n.path {
        if let Ok(list) = ConfList::load(p) {
            if let Err(errs) = ctx.runtime().gc(&list, &[]) {
                for e in errs {
                    eprintln!("rnet: warning: cleaning {name}: {}", e.msg);
                }
            }
        }
        std::fs::remove_file(p).with_context(|| format!("cannot remove {}", p.display()))?;
    }
    Ok(())
}
