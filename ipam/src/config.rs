//! The host-local configuration schema, parsed from the full network configuration.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::error::IpamError;
use crate::range::{Range, RangeSet, ip_to_u128, u128_to_ip};

/// host-local's default state directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// How long an operation waits for the store lock before failing with [`IpamError::Busy`].
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// A route returned with the addresses (`ipam.routes[]`), passed through as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination, as written (host bits are kept, as host-local does).
    pub dst: IpNet,
    /// Next hop; `None` means "the consumer's default" (bridge uses the gateway).
    pub gw: Option<IpAddr>,
    /// CNI 1.1 `mtu`.
    pub mtu: Option<u32>,
    /// CNI 1.1 `advmss`.
    pub advmss: Option<u32>,
    /// CNI 1.1 `priority`.
    pub priority: Option<u32>,
    /// CNI 1.1 `table`.
    pub table: Option<u32>,
    /// CNI 1.1 `scope`.
    pub scope: Option<u32>,
}

/// DNS settings returned with the addresses (from `ipam.resolvConf`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    /// `nameserver` lines, in order.
    pub nameservers: Vec<String>,
    /// The last `domain` line.
    pub domain: Option<String>,
    /// All `search` entries, in order.
    pub search: Vec<String>,
    /// All `options` entries, in order.
    pub options: Vec<String>,
}

/// Parses resolv.conf text exactly as host-local does: comments (`#`, `;`) and
/// lines with fewer than two fields are skipped; `nameserver` takes the first
/// value, `domain` the first value (last line wins), `search` and `options` all values.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [key, first, rest @ ..] = fields.as_slice() else {
            continue;
        };
        match *key {
            "nameserver" => dns.nameservers.push((*first).to_owned()),
            "domain" => dns.domain = Some((*first).to_owned()),
            "search" => {
                dns.search.push((*first).to_owned());
                dns.search.extend(rest.iter().map(|s| (*s).to_owned()));
            }
            "options" => {
                dns.options.push((*first).to_owned());
                dns.options.extend(rest.iter().map(|s| (*s).to_owned()));
            }
            _ => {}
        }
    }
    dns
}

/// The validated IPAM configuration of one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConfig {
    /// Network name (top-level `name`); the state lives in `<data_dir>/<name>`.
    pub name: String,
    /// Top-level `cniVersion` as given.
    pub cni_version: String,
    /// One address is allocated from each set. Order: `runtimeConfig.ipRanges` if
    /// given (replacing the configured ranges), else the legacy single range
    /// followed by `ipam.ranges`.
    pub range_sets: Vec<RangeSet>,
    /// `ipam.routes`.
    pub routes: Vec<Route>,
    /// `ipam.dataDir` (default [`DEFAULT_DATA_DIR`]).
    pub data_dir: PathBuf,
    /// `ipam.resolvConf`, read at ADD time.
    pub resolv_conf: Option<PathBuf>,
    /// Static addresses requested through `CNI_ARGS` `IP=`, `args.cni.ips` and
    /// `runtimeConfig.ips`, in that order, de-duplicated. Checked against the
    /// ranges at ADD time only (so DEL never fails because of them).
    pub requested_ips: Vec<IpAddr>,
    /// Bounded wait for the store lock (not part of the host-local schema; set by the caller).
    pub lock_timeout: Duration,
}

impl IpamConfig {
    /// Parses and validates the IPAM part of a full CNI network configuration
    /// (the plugin's stdin document) plus the `CNI_ARGS` key/value pairs.
    ///
    /// Unknown keys are ignored. Every error names the JSON field and the value.
    pub fn from_netconf(
        conf: &Value,
        cni_args: &[(String, String)],
    ) -> Result<IpamConfig, IpamError> {
        let top = conf.as_object().ok_or_else(|| {
            IpamError::config("(network config)", short(conf), "must be a JSON object")
        })?;
        let name = match top.get("name") {
            Some(Value::String(s)) => s.clone(),
            other => {
                return Err(IpamError::config(
                    "name",
                    other.map_or_else(|| "(missing)".into(), short),
                    "the network name is required and must be a string",
                ));
            }
        };
        validate_network_name(&name)?;
        let cni_version = opt_str(top, "cniVersion", "cniVersion")?
            .unwrap_or_default()
            .to_owned();
        let ipam = match top.get("ipam") {
            Some(Value::Object(m)) => m,
            other => {
                return Err(IpamError::config(
                    "ipam",
                    other.map_or_else(|| "(missing)".into(), short),
                    "the IPAM section is required and must be an object",
                ));
            }
        };

        let runtime = match top.get("runtimeConfig") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                return Err(IpamError::config(
                    "runtimeConfig",
                    short(other),
                    "must be an object",
                ));
            }
        };

        // Ranges: runtimeConfig.ipRanges replaces the configured ones.
        let runtime_ranges = match runtime.and_then(|r| r.get("ipRanges")) {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => parse_range_sets(v, "runtimeConfig.ipRanges")?,
        };
        let range_sets = if runtime_ranges.is_empty() {
            let mut sets = Vec::new();
            if opt_str(ipam, "subnet", "ipam.subnet")?.is_some() {
                sets.push(RangeSet {
                    ranges: vec![parse_range(ipam, "ipam")?],
                });
            }
            if let Some(v) = ipam.get("ranges").filter(|v| !v.is_null()) {
                sets.extend(parse_range_sets(v, "ipam.ranges")?);
            }
            sets
        } else {
            runtime_ranges
        };
        if range_sets.is_empty() {
            return Err(IpamError::config(
                "ipam.ranges",
                "(none)",
                "no IP ranges specified: set ipam.ranges (or the legacy ipam.subnet)",
            ));
        }
        validate_sets(&range_sets, &cni_version)?;

        let routes = match ipam.get("routes") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, r)| parse_route(r, &format!("ipam.routes[{i}]")))
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(IpamError::config(
                    "ipam.routes",
                    short(other),
                    "must be a list of {dst, gw}",
                ));
            }
        };

        let data_dir = opt_str(ipam, "dataDir", "ipam.dataDir")?
            .filter(|s| !s.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from);
        let resolv_conf = opt_str(ipam, "resolvConf", "ipam.resolvConf")?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);

        let mut requested_ips = Vec::new();
        for (k, v) in cni_args {
            if k == "IP" {
                for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    requested_ips.push(parse_requested(part, "CNI_ARGS IP")?);
                }
            }
        }
        let args_ips = top
            .get("args")
            .and_then(|a| a.get("cni"))
            .and_then(|c| c.get("ips"))
            .filter(|v| !v.is_null());
        if let Some(v) = args_ips {
            requested_ips.extend(parse_ip_list(v, "args.cni.ips")?);
        }
        if let Some(v) = runtime.and_then(|r| r.get("ips")).filter(|v| !v.is_null()) {
            requested_ips.extend(parse_ip_list(v, "runtimeConfig.ips")?);
        }
        let mut seen = Vec::new();
        requested_ips.retain(|ip| {
            let new = !seen.contains(ip);
            seen.push(*ip);
            new
        });

        Ok(IpamConfig {
            name,
            cni_version,
            range_sets,
            routes,
            data_dir,
            resolv_conf,
            requested_ips,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        })
    }

    /// `<data_dir>/<name>`: the directory holding this network's leases.
    pub fn network_dir(&self) -> PathBuf {
        self.data_dir.join(&self.name)
    }

    /// Reads and parses `resolv_conf` (an empty [`Dns`] when none is configured).
    pub fn load_dns(&self) -> Result<Dns, IpamError> {
        match &self.resolv_conf {
            None => Ok(Dns::default()),
            Some(p) => std::fs::read_to_string(p)
                .map(|t| parse_resolv_conf(&t))
                .map_err(|e| IpamError::io("read resolvConf", p.as_path(), e)),
        }
    }

    /// All range sets printed, for error messages.
    pub(crate) fn ranges_text(&self) -> String {
        self.range_sets
            .iter()
            .enumerate()
            .map(|(i, s)| format!("set {i}: {s}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Network names become a directory name: refuse anything that could escape `dataDir`.
pub(crate) fn validate_network_name(name: &str) -> Result<(), IpamError> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name == "." || name == ".." {
        "must not be '.' or '..'"
    } else if name.contains(['/', '\0']) {
        "must not contain '/' or NUL (it names a directory under dataDir)"
    } else if name.starts_with(".rnet") {
        "must not start with '.rnet'"
    } else {
        return Ok(());
    };
    Err(IpamError::config("name", name, reason))
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 120 {
        let cut = (0..=120)
            .rev()
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(0);
        format!("{}...", &s[..cut])
    } else {
        s
    }
}

fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, IpamError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(IpamError::config(path, short(other), "must be a string")),
    }
}

fn parse_ip(s: &str, path: &str) -> Result<IpAddr, IpamError> {
    s.trim()
        .parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| IpamError::config(path, s, "not an IP address"))
}

/// A requested address: `10.0.0.5` or `10.0.0.5/24` (the prefix is ignored, as host-local does).
fn parse_requested(s: &str, path: &str) -> Result<IpAddr, IpamError> {
    let s = s.trim();
    if s.contains('/') {
        return s
            .parse::<IpNet>()
            .map(|n| n.addr().to_canonical())
            .map_err(|_| IpamError::config(path, s, "not an IP address or address/prefix"));
    }
    parse_ip(s, path)
}

fn parse_ip_list(v: &Value, path: &str) -> Result<Vec<IpAddr>, IpamError> {
    let Value::Array(items) = v else {
        return Err(IpamError::config(
            path,
            short(v),
            "must be a list of IP addresses",
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => parse_requested(s, &format!("{path}[{i}]")),
            other => Err(IpamError::config(
                format!("{path}[{i}]"),
                short(other),
                "must be a string",
            )),
        })
        .collect()
}

fn parse_range_sets(v: &Value, path: &str) -> Result<Vec<RangeSet>, IpamError> {
    let Value::Array(sets) = v else {
        return Err(IpamError::config(
            path,
            short(v),
            "must be a list of range sets (a list of lists)",
        ));
    };
    let mut out = Vec::with_capacity(sets.len());
    for (i, set) in sets.iter().enumerate() {
        let set_path = format!("{path}[{i}]");
        let Value::Array(ranges) = set else {
            return Err(IpamError::config(
                set_path,
                short(set),
                "a range set must be a list of ranges",
            ));
        };
        if ranges.is_empty() {
            return Err(IpamError::config(set_path, "[]", "empty range set"));
        }
        let mut parsed = Vec::with_capacity(ranges.len());
        for (j, r) in ranges.iter().enumerate() {
            let rp = format!("{set_path}[{j}]");
            let Value::Object(obj) = r else {
                return Err(IpamError::config(
                    rp,
                    short(r),
                    "a range must be an object with a subnet",
                ));
            };
            parsed.push(parse_range(obj, &rp)?);
        }
        out.push(RangeSet { ranges: parsed });
    }
    Ok(out)
}

/// Parses one range object and applies host-local's defaults.
fn parse_range(obj: &Map<String, Value>, path: &str) -> Result<Range, IpamError> {
    let subnet_path = format!("{path}.subnet");
    let subnet_s = opt_str(obj, "subnet", &subnet_path)?.ok_or_else(|| {
        IpamError::config(
            &subnet_path,
            "(missing)",
            "every range needs a subnet in CIDR form",
        )
    })?;
    let subnet: IpNet = subnet_s.trim().parse().map_err(|_| {
        IpamError::config(
            &subnet_path,
            subnet_s,
            "not a CIDR subnet such as 10.22.0.0/16",
        )
    })?;
    if let IpNet::V6(n) = subnet {
        if n.addr().to_ipv4_mapped().is_some() {
            return Err(IpamError::config(
                &subnet_path,
                subnet_s,
                "IPv4-mapped IPv6 subnet; write the IPv4 subnet instead",
            ));
        }
    }
    if subnet.addr() != subnet.network() {
        return Err(IpamError::config(
            &subnet_path,
            subnet_s,
            format!(
                "host bits set; for a /{} the network address is {}",
                subnet.prefix_len(),
                subnet.network()
            ),
        ));
    }
    if subnet.prefix_len() + 2 > subnet.max_prefix_len() {
        return Err(IpamError::config(
            &subnet_path,
            subnet_s,
            "network too small to allocate from",
        ));
    }
    let v4 = subnet.addr().is_ipv4();
    let in_subnet = |key: &str| -> Result<Option<IpAddr>, IpamError> {
        let p = format!("{path}.{key}");
        let Some(s) = opt_str(obj, key, &p)? else {
            return Ok(None);
        };
        let ip = parse_ip(s, &p)?;
        if ip.is_ipv4() != v4 || !subnet.contains(&ip) {
            return Err(IpamError::config(p, s, format!("not in network {subnet}")));
        }
        Ok(Some(ip))
    };
    let network = ip_to_u128(subnet.network());
    let gateway = in_subnet("gateway")?.unwrap_or_else(|| u128_to_ip(network + 1, v4));
    let range_start = in_subnet("rangeStart")?.unwrap_or_else(|| u128_to_ip(network + 1, v4));
    let range_end = match in_subnet("rangeEnd")? {
        Some(ip) => ip,
        None => {
            let last = ip_to_u128(subnet.broadcast());
            u128_to_ip(if v4 { last - 1 } else { last }, v4)
        }
    };
    if ip_to_u128(range_start) > ip_to_u128(range_end) {
        return Err(IpamError::config(
            format!("{path}.rangeStart"),
            range_start.to_string(),
            format!("after rangeEnd {range_end}"),
        ));
    }
    Ok(Range {
        subnet,
        range_start,
        range_end,
        gateway,
    })
}

fn validate_sets(sets: &[RangeSet], cni_version: &str) -> Result<(), IpamError> {
    for (i, set) in sets.iter().enumerate() {
        let v4 = set.is_ipv4();
        if let Some(r) = set.ranges.iter().find(|r| r.subnet.addr().is_ipv4() != v4) {
            return Err(IpamError::config(
                format!("range set {i}"),
                set.to_string(),
                format!("mixed address families ({r}); put IPv4 and IPv6 ranges in separate sets"),
            ));
        }
    }
    let all: Vec<(usize, &Range)> = sets
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.ranges.iter().map(move |r| (i, r)))
        .collect();
    for (a_idx, (sa, ra)) in all.iter().enumerate() {
        for (sb, rb) in all.iter().skip(a_idx + 1) {
            if ra.overlaps(rb) {
                return Err(IpamError::config(
                    format!("range set {sa}"),
                    ra.to_string(),
                    format!("overlaps {rb} in range set {sb}; ranges must not overlap"),
                ));
            }
        }
    }
    if cni_version.starts_with("0.1.") || cni_version.starts_with("0.2.") {
        let v4 = sets.iter().filter(|s| s.is_ipv4()).count();
        if v4 > 1 || sets.len() - v4 > 1 {
            return Err(IpamError::config(
                "cniVersion",
                cni_version,
                "this CNI version supports only one address per family; use 0.3.0 or later",
            ));
        }
    }
    Ok(())
}

fn parse_route(v: &Value, path: &str) -> Result<Route, IpamError> {
    let Value::Object(obj) = v else {
        return Err(IpamError::config(
            path,
            short(v),
            "a route must be an object {dst, gw}",
        ));
    };
    let dst_path = format!("{path}.dst");
    let dst_s = opt_str(obj, "dst", &dst_path)?.ok_or_else(|| {
        IpamError::config(&dst_path, "(missing)", "a route needs a dst in CIDR form")
    })?;
    let dst: IpNet = dst_s
        .trim()
        .parse()
        .map_err(|_| IpamError::config(&dst_path, dst_s, "not a CIDR such as 0.0.0.0/0"))?;
    let gw_path = format!("{path}.gw");
    let gw = opt_str(obj, "gw", &gw_path)?
        .map(|s| parse_ip(s, &gw_path))
        .transpose()?;
    let num = |key: &str| -> Result<Option<u32>, IpamError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    IpamError::config(
                        format!("{path}.{key}"),
                        short(v),
                        "must be a non-negative integer",
                    )
                }),
        }
    };
    Ok(Route {
        dst,
        gw,
        mtu: num("mtu")?,
        advmss: num("advmss")?,
        priority: num("priority")?,
        table: num("table")?,
        scope: num("scope")?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<IpamConfig, IpamError> {
        IpamConfig::from_netconf(&v, &[])
    }

    fn err_field(v: Value) -> (String, String) {
        match parse(v) {
            Err(IpamError::InvalidConfig { field, reason, .. }) => (field, reason),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn legacy_single_range_defaults() {
        let c = parse(json!({"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","subnet":"10.9.0.0/24"}})).unwrap();
        assert_eq!(c.name, "n");
        assert_eq!(c.range_sets.len(), 1);
        let r = &c.range_sets[0].ranges[0];
        assert_eq!(r.range_start.to_string(), "10.9.0.1");
        assert_eq!(r.range_end.to_string(), "10.9.0.254");
        assert_eq!(r.gateway.to_string(), "10.9.0.1");
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.network_dir(), PathBuf::from("/var/lib/cni/networks/n"));
        assert_eq!(c.lock_timeout, DEFAULT_LOCK_TIMEOUT);
    }

    #[test]
    fn v6_defaults_include_last_address() {
        let c = parse(json!({"name":"n","ipam":{"ranges":[[{"subnet":"fd00::/120"}]]}})).unwrap();
        let r = &c.range_sets[0].ranges[0];
        assert_eq!(r.range_start.to_string(), "fd00::1");
        assert_eq!(r.range_end.to_string(), "fd00::ff");
        assert_eq!(r.gateway.to_string(), "fd00::1");
    }

    #[test]
    fn full_schema() {
        let c = parse(json!({
            "cniVersion": "1.1.0", "name": "net1", "type": "bridge", "unknown": 1,
            "ipam": {
                "type": "rnet-ipam",
                "subnet": "10.1.0.0/16", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.20", "gateway": "10.1.0.254",
                "ranges": [
                    [{"subnet":"10.2.0.0/24"}, {"subnet":"10.3.0.0/24","rangeStart":"10.3.0.100"}],
                    [{"subnet":"fd00:1::/64","gateway":"fd00:1::fffe"}]
                ],
                "routes": [{"dst":"0.0.0.0/0"}, {"dst":"192.168.0.0/16","gw":"10.1.0.1","mtu":1400,"priority":5}],
                "dataDir": "/run/x",
                "resolvConf": "/etc/resolv.conf",
                "somethingElse": true
            }
        }))
        .unwrap();
        assert_eq!(c.range_sets.len(), 3);
        let legacy = &c.range_sets[0].ranges[0];
        assert_eq!(
            (legacy.range_start.to_string(), legacy.range_end.to_string()),
            ("10.1.0.10".into(), "10.1.0.20".into())
        );
        assert_eq!(legacy.gateway.to_string(), "10.1.0.254");
        assert_eq!(c.range_sets[1].ranges.len(), 2);
        assert_eq!(
            c.range_sets[1].ranges[1].range_start.to_string(),
            "10.3.0.100"
        );
        assert_eq!(
            c.range_sets[2].ranges[0].gateway.to_string(),
            "fd00:1::fffe"
        );
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[0].gw, None);
        assert_eq!(c.routes[1].gw, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(
            (c.routes[1].mtu, c.routes[1].priority),
            (Some(1400), Some(5))
        );
        assert_eq!(c.data_dir, PathBuf::from("/run/x"));
        assert_eq!(c.resolv_conf, Some(PathBuf::from("/etc/resolv.conf")));
    }

    #[test]
    fn requested_ips_from_all_sources_in_order_deduplicated() {
        let conf = json!({
            "name":"n",
            "ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"fd00::/64"}]]},
            "args":{"cni":{"ips":["10.0.0.7/24", "fd00::7"]}},
            "runtimeConfig":{"ips":["10.0.0.5", "10.0.0.8"]}
        });
        let args = vec![
            ("IgnoreUnknown".to_owned(), "1".to_owned()),
            ("IP".to_owned(), "10.0.0.5,fd00::5".to_owned()),
        ];
        let c = IpamConfig::from_netconf(&conf, &args).unwrap();
        let got: Vec<String> = c.requested_ips.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            ["10.0.0.5", "fd00::5", "10.0.0.7", "fd00::7", "10.0.0.8"]
        );
        // v4-mapped requests are canonicalized
        let c =
            IpamConfig::from_netconf(&conf, &[("IP".into(), "::ffff:10.0.0.9".into())]).unwrap();
        assert_eq!(c.requested_ips[0].to_string(), "10.0.0.9");
    }

    #[test]
    fn runtime_ip_ranges_replace_configured_ranges() {
        let c = parse(json!({
            "name":"n",
            "ipam":{"subnet":"10.0.0.0/24","ranges":[[{"subnet":"10.1.0.0/24"}]]},
            "runtimeConfig":{"ipRanges":[[{"subnet":"10.5.0.0/24"}]]}
        }))
        .unwrap();
        assert_eq!(c.range_sets.len(), 1);
        assert_eq!(c.range_sets[0].ranges[0].subnet.to_string(), "10.5.0.0/24");
        // an empty ipRanges does not replace
        let c = parse(
            json!({"name":"n","ipam":{"subnet":"10.0.0.0/24"},"runtimeConfig":{"ipRanges":[]}}),
        )
        .unwrap();
        assert_eq!(c.range_sets[0].ranges[0].subnet.to_string(), "10.0.0.0/24");
    }

    #[test]
    fn validation_errors_name_the_field() {
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!([]), "(network config)", "object"),
            (json!({"ipam":{"subnet":"10.0.0.0/24"}}), "name", "required"),
            (
                json!({"name":"a/b","ipam":{"subnet":"10.0.0.0/24"}}),
                "name",
                "'/'",
            ),
            (
                json!({"name":"..","ipam":{"subnet":"10.0.0.0/24"}}),
                "name",
                "'..'",
            ),
            (json!({"name":"n"}), "ipam", "required"),
            (json!({"name":"n","ipam":{}}), "ipam.ranges", "no IP ranges"),
            (
                json!({"name":"n","ipam":{"ranges":[[]]}}),
                "ipam.ranges[0]",
                "empty range set",
            ),
            (
                json!({"name":"n","ipam":{"ranges":[{"subnet":"10.0.0.0/24"}]}}),
                "ipam.ranges[0]",
                "list of ranges",
            ),
            (
                json!({"name":"n","ipam":{"ranges":[[{"gateway":"10.0.0.1"}]]}}),
                "ipam.ranges[0][0].subnet",
                "needs a subnet",
            ),
            (
                json!({"name":"n","ipam":{"subnet":"10.0.0/24"}}),
                "ipam.subnet",
                "CIDR",
            ),
            (
                json!({"name":"n","ipam":{"subnet":"10.0.0.1/24"}}),
                "ipam.subnet",
                "host bits set; for a /24 the network address is 10.0.0.0",
            ),
            (
                json!({"name":"n","ipam":{"subnet":"10.0.0.0/31"}}),
                "ipam.subnet",
                "too small",
            ),
            (
                json!({"name":"n","ipam":{"subnet":"fd00::/127"}}),
                "ipam.subnet",
                "too small",
            ),
            (
                json!({"name":"n","ipam":{"subnet":"::ffff:10.0.0.0/120"}}),
                "ipam.subnet",
                "IPv4-mapped",
            ),
            (
                json!({"name":"n","ipam":{"subnet":"10.0.0.0/24","rangeStart":"10.0.1.5"}}),
                "ipam.rangeStart",
                "not in network",
            ),
            (
                json!({"name":"n","ipam":{"subnet":"10.0.0.0/24","rangeEnd":"fd00::1"}}),
                "ipam.rangeEnd",
                "not in network",
            ),
            (
                json!({"name":"n","ipam":{"subnet":"10.0.0.0/24","gateway":"10.0.1.1"}}),
                "ipam.gateway",
                "not in network",
            ),
            (
                json!({"name":"n","ipam":{"subnet":"10.0.0.0/24","gateway":"x"}}),
                "ipam.gateway",
                "not an IP",
            ),
            (
                json!({"name":"n","ipam":{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.9","rangeEnd":"10.0.0.5"}}),
                "ipam.rangeStart",
                "after rangeEnd",
            ),
            (
                json!({"name":"n","ipam":{"subnet":5}}),
                "ipam.subnet",
                "must be a string",
            ),
            (
                json!({"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"fd00::/64"}]]}}),
                "range set 0",
                "mixed address families",
            ),
            (
                json!({"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"10.0.0.0/25"}]]}}),
                "range set 0",
                "overlaps",
            ),
            (
                json!({"name":"n","ipam":{"subnet":"10.0.0.0/24","ranges":[[{"subnet":"10.0.0.0/16"}]]}}),
                "range set 0",
                "overlaps",
            ),
            (
                json!({"name":"n","cniVersion":"0.2.0","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.1.0.0/24"}]]}}),
                "cniVersion",
                "one address per family",
            ),
            (
                json!({"name":"n","ipam":{"subnet":"10.0.0.0/24","routes":[{"gw":"10.0.0.1"}]}}),
                "ipam.routes[0].dst",
                "needs a dst",
            ),
            (
                json!({"name":"n","ipam":{"subnet":"10.0.0.0/24","routes":[{"dst":"0.0.0.0/0","gw":"nope"}]}}),
                "ipam.routes[0].gw",
                "not an IP",
            ),
            (
                json!({"name":"n","ipam":{"subnet":"10.0.0.0/24","routes":[{"dst":"0.0.0.0/0","mtu":-1}]}}),
                "ipam.routes[0].mtu",
                "non-negative",
            ),
            (
                json!({"name":"n","ipam":{"subnet":"10.0.0.0/24"},"args":{"cni":{"ips":["10.0.0.x"]}}}),
                "args.cni.ips[0]",
                "not an IP",
            ),
            (
                json!({"name":"n","ipam":{"subnet":"10.0.0.0/24"},"runtimeConfig":{"ips":"10.0.0.5"}}),
                "runtimeConfig.ips",
                "list",
            ),
            (
                json!({"name":"n","ipam":{"subnet":"10.0.0.0/24"},"runtimeConfig":{"ipRanges":[[{"subnet":"bad"}]]}}),
                "runtimeConfig.ipRanges[0][0].subnet",
                "CIDR",
            ),
        ];
        for (conf, field, reason) in cases {
            let (f, r) = err_field(conf.clone());
            assert_eq!(f, field, "for {conf}");
            assert!(
                r.contains(reason),
                "reason {r:?} should contain {reason:?} for {conf}"
            );
        }
        let e = IpamConfig::from_netconf(
            &json!({"name":"n","ipam":{"subnet":"10.0.0.0/24"}}),
            &[("IP".into(), "300.1.1.1".into())],
        )
        .unwrap_err();
        assert_eq!(e.cni_code(), 7);
        assert!(e.to_string().contains("CNI_ARGS IP = 300.1.1.1"), "{e}");
    }

    #[test]
    fn disjoint_ranges_sharing_a_subnet_are_fine() {
        let c = parse(json!({"name":"n","ipam":{"ranges":[
            [{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.10","rangeEnd":"10.0.0.19"}],
            [{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.20","rangeEnd":"10.0.0.29"}]
        ]}}));
        assert!(c.is_ok(), "{c:?}");
    }

    #[test]
    fn resolv_conf_parsing() {
        let dns = parse_resolv_conf(
            "# comment\n; other\nnameserver 1.1.1.1\nnameserver 8.8.8.8 ignored\ndomain a.example\ndomain b.example\nsearch x.example y.example\nsearch z.example\noptions ndots:5 rotate\nbogus\n  nameserver   fd00::53  \n",
        );
        assert_eq!(dns.nameservers, ["1.1.1.1", "8.8.8.8", "fd00::53"]);
        assert_eq!(dns.domain.as_deref(), Some("b.example"));
        assert_eq!(dns.search, ["x.example", "y.example", "z.example"]);
        assert_eq!(dns.options, ["ndots:5", "rotate"]);
    }

    #[test]
    fn load_dns_reads_the_file_and_names_it_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("resolv.conf");
        std::fs::write(&p, "nameserver 9.9.9.9\n").unwrap();
        let mut c = parse(json!({"name":"n","ipam":{"subnet":"10.0.0.0/24"}})).unwrap();
        assert_eq!(c.load_dns().unwrap(), Dns::default());
        c.resolv_conf = Some(p.clone());
        assert_eq!(c.load_dns().unwrap().nameservers, ["9.9.9.9"]);
        c.resolv_conf = Some(dir.path().join("missing"));
        let e = c.load_dns().unwrap_err();
        assert_eq!(e.cni_code(), 5);
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
