//! # rnet-tuning: container sysctls and link settings (drop-in for `tuning`)
//!
//! A chained plugin with the reference `tuning` schema: `sysctl` (a map of
//! keys to values, dotted `net.ipv4.conf.IFNAME.arp_filter` or slash form
//! `net/ipv4/conf/IFNAME/arp_filter`; `IFNAME` is replaced by `CNI_IFNAME`),
//! `mac`, `mtu`, `promisc`, `allmulti`, `txQLen`, `dataDir`, with the same
//! per-container overrides in `args.cni` and the MAC from `runtimeConfig.mac`
//! and `CNI_ARGS MAC=`. Precedence, as the reference: `args.cni` over the
//! capability over `CNI_ARGS` over the plain keys.
//!
//! Only `net.*` sysctls of the container's own namespace can be set (written
//! from a thread inside that namespace): anything else, `..` or a key that
//! escapes `/proc/sys/net`, is error 7 naming the key. If
//! `/etc/cni/tuning/allowlist.conf` exists, every key must also match one of
//! its regular expressions, as the reference; a duplicated key is an error.
//!
//! Before changing MAC, MTU, promiscuous or all-multicast mode or the queue
//! length, the current values are saved to `<dataDir>/<containerID>_<ifname>.json`
//! (default `/run/cni/tuning`, the reference's), and DEL puts them back and
//! removes the file; DEL succeeds when the namespace or the interface is gone.
//! CHECK compares every setting with the kernel and names each difference
//! (code 106). The result is `prevResult`, with the interface's new MAC.

use rnet_cni::{CmdArgs, CniError, CniResult, Plugin, code};
use rnet_netlink::{Netlink, format_mac, parse_mac};
use rnet_netns::NetNs;
use rnet_plugin::{container_netns, container_netns_for_del, netlink_error, ns_error};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The reference's default backup directory.
pub const DEFAULT_DATA_DIR: &str = "/run/cni/tuning";
/// The reference's sysctl allow-list.
pub const ALLOWLIST: &str = "/etc/cni/tuning/allowlist.conf";

/// The plugin.
pub struct TuningPlugin;

/// The effective settings.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// Sysctl key → value (keys as given).
    pub sysctl: BTreeMap<String, String>,
    /// MAC address.
    pub mac: Option<[u8; 6]>,
    /// MTU.
    pub mtu: Option<u32>,
    /// Promiscuous mode (only `true` is applied, as the reference).
    pub promisc: bool,
    /// All-multicast mode.
    pub allmulti: Option<bool>,
    /// Transmit queue length.
    pub txqlen: Option<u32>,
    /// Backup directory.
    pub data_dir: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Backup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    promisc: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    allmulti: Option<bool>,
    #[serde(default, rename = "txQLen", skip_serializing_if = "Option::is_none")]
    txqlen: Option<u32>,
}

fn bad(key: &str, why: impl std::fmt::Display) -> CniError {
    CniError::invalid_config(format!("tuning option {key:?}: {why}"))
}

fn take_settings(obj: &Map<String, Value>, t: &mut Tuning, prefix: &str) -> Result<(), CniError> {
    let name = |k: &str| format!("{prefix}{k}");
    if let Some(v) = obj.get("sysctl").filter(|v| !v.is_null()) {
        let m = v
            .as_object()
            .ok_or_else(|| bad(&name("sysctl"), "must be an object of strings"))?;
        for (k, val) in m {
            let s = val
                .as_str()
                .ok_or_else(|| bad(&name("sysctl"), format!("value of {k} must be a string")))?;
            t.sysctl.insert(k.clone(), s.to_owned());
        }
    }
    if let Some(v) = obj.get("mac").filter(|v| !v.is_null()) {
        let s = v
            .as_str()
            .ok_or_else(|| bad(&name("mac"), "must be a string"))?;
        if !s.is_empty() {
            t.mac = Some(parse_mac(s).map_err(|e| bad(&name("mac"), e))?);
        }
    }
    if let Some(v) = obj.get("mtu").filter(|v| !v.is_null()) {
        let n = v
            .as_u64()
            .ok_or_else(|| bad(&name("mtu"), "must be a positive integer"))?;
        if n != 0 {
            t.mtu = Some(u32::try_from(n).map_err(|_| bad(&name("mtu"), "too large"))?);
        }
    }
    if let Some(v) = obj.get("promisc").filter(|v| !v.is_null()) {
        t.promisc = v
            .as_bool()
            .ok_or_else(|| bad(&name("promisc"), "must be true or false"))?;
    }
    if let Some(v) = obj.get("allmulti").filter(|v| !v.is_null()) {
        t.allmulti = Some(
            v.as_bool()
                .ok_or_else(|| bad(&name("allmulti"), "must be true or false"))?,
        );
    }
    if let Some(v) = obj.get("txQLen").filter(|v| !v.is_null()) {
        let n = v
            .as_u64()
            .ok_or_else(|| bad(&name("txQLen"), "must be a non-negative integer"))?;
        t.txqlen = Some(u32::try_from(n).map_err(|_| bad(&name("txQLen"), "too large"))?);
    }
    Ok(())
}

/// Parses the configuration with the reference's precedence.
pub fn parse(args: &CmdArgs) -> Result<Tuning, CniError> {
    let raw = args.conf.raw.as_object().cloned().unwrap_or_default();
    let mut t = Tuning {
        data_dir: PathBuf::from(DEFAULT_DATA_DIR),
        ..Tuning::default()
    };
    take_settings(&raw, &mut t, "")?;
    if let Some(d) = raw
        .get("dataDir")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
    {
        t.data_dir = PathBuf::from(d);
    }
    if let Some(mac) = args.args.get("MAC").filter(|m| !m.is_empty()) {
        t.mac = Some(
            parse_mac(mac)
                .map_err(|e| CniError::invalid_env(format!("CNI_ARGS MAC={mac}: {e}")))?,
        );
    }
    if let Some(mac) = args
        .conf
        .runtime_config
        .get("mac")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
    {
        t.mac = Some(parse_mac(mac).map_err(|e| bad("runtimeConfig.mac", e))?);
    }
    if let Some(cni) = raw
        .get("args")
        .and_then(|a| a.get("cni"))
        .and_then(Value::as_object)
    {
        take_settings(cni, &mut t, "args.cni.")?;
    }
    Ok(t)
}

/// `/proc/sys` path of a sysctl key for `ifname`, only under `/proc/sys/net`.
pub fn sysctl_file(key: &str, ifname: &str) -> Result<String, CniError> {
    let dotted = if key.contains('/') {
        // Slash form: net/ipv4/conf/IFNAME/x; a '.' inside a component stays.
        key.split('/')
            .map(|c| c.replace('.', "/"))
            .collect::<Vec<_>>()
            .join(".")
    } else {
        key.to_owned()
    };
    let dotted = dotted.replacen("IFNAME", &ifname.replace('.', "/"), 1);
    rnet_netlink::sysctl_path(&dotted).map_err(|e| bad("sysctl", format!("{key}: {e}")))
}

fn check_allowlist(t: &Tuning) -> Result<(), CniError> {
    let Ok(text) = std::fs::read_to_string(ALLOWLIST) else {
        return Ok(());
    };
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    for k in t.sysctl.keys() {
        // The reference's entries are regular expressions; rnet matches them
        // as anchored patterns where `.` matches itself and `*` any run.
        if !patterns.iter().any(|p| glob_match(p, k)) {
            return Err(bad(
                "sysctl",
                format!("{k} is not allowed by {ALLOWLIST}; allowed: {patterns:?}"),
            ));
        }
    }
    Ok(())
}

/// A small matcher for allow-list entries: `^`/`$` anchors are accepted,
/// `\\.` is a dot, `.*` and `*` match any run, other characters match themselves.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let p = pattern
        .trim_start_matches('^')
        .trim_end_matches('$')
        .replace("\\.", "\u{1}")
        .replace(".*", "*");
    let parts: Vec<String> = p.split('*').map(|x| x.replace('\u{1}', ".")).collect();
    let mut rest = s;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part.as_str()) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part.as_str());
        } else if let Some(pos) = rest.find(part.as_str()) {
            rest = &rest[pos + part.len()..];
        } else {
            return false;
        }
    }
    rest.is_empty()
}

/// Refuses a `sysctl` object with a key given twice (error 7), as the
/// reference does; serde_json alone would keep the last one silently.
pub fn duplicate_keys(stdin: &[u8]) -> Result<(), CniError> {
    // serde_json keeps the last of duplicated keys: look at the raw text of the
    // `sysctl` object instead (the reference refuses duplicates).
    #[derive(Deserialize)]
    struct Probe {
        // Deserialising it is the check; the value itself is not needed.
        #[serde(default, rename = "sysctl")]
        _sysctl: Option<DupCheck>,
    }
    struct DupCheck;
    impl<'de> Deserialize<'de> for DupCheck {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = DupCheck;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut m: A,
                ) -> Result<DupCheck, A::Error> {
                    let mut seen = std::collections::HashSet::new();
                    while let Some((k, _)) = m.next_entry::<String, serde::de::IgnoredAny>()? {
                        if !seen.insert(k.clone()) {
                            return Err(serde::de::Error::custom(format!(
                                "duplicated sysctl key {k}"
                            )));
                        }
                    }
                    Ok(DupCheck)
                }
            }
            d.deserialize_any(V)
        }
    }
    serde_json::from_slice::<Probe>(stdin)
        .map(|_| ())
        .map_err(|e| bad("sysctl", e))
}

fn backup_path(t: &Tuning, args: &CmdArgs) -> PathBuf {
    t.data_dir
        .join(format!("{}_{}.json", args.container_id, args.ifname))
}

fn link_of(nl: &mut Netlink, ifname: &str) -> Result<rnet_netlink::Link, CniError> {
    nl.link_by_name(ifname)
        .map_err(netlink_error)?
        .ok_or_else(|| {
            CniError::new(
                code::UNKNOWN_CONTAINER,
                format!("interface {ifname} not found in the container"),
            )
        })
}

fn write_sysctls(ns: &NetNs, t: &Tuning, ifname: &str) -> Result<(), CniError> {
    let files: Vec<(String, String)> = t
        .sysctl
        .iter()
        .map(|(k, v)| Ok((sysctl_file(k, ifname)?, v.clone())))
        .collect::<Result<_, CniError>>()?;
    ns.run(|| -> Result<(), CniError> {
        for (f, v) in &files {
            std::fs::write(f, v)
                .map_err(|e| CniError::io(format!("writing {v:?} to {f} in the container: {e}")))?;
        }
        Ok(())
    })
    .map_err(ns_error)?
}

impl Plugin for TuningPlugin {
    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        duplicate_keys(&args.stdin)?;
        let t = parse(args)?;
        check_allowlist(&t)?;
        let Some(prev) = args.conf.prev_result.clone() else {
            return Err(CniError::invalid_config(
                "tuning is a chained plugin: prevResult is required (put it after the interface plugin)",
            ));
        };
        let ns = container_netns(args)?;
        write_sysctls(&ns, &t, &args.ifname)?;
        let mut nl = Netlink::in_netns(&ns).map_err(netlink_error)?;
        let link = link_of(&mut nl, &args.ifname)?;
        let mut backup = Backup::default();
        if t.mac.is_some() {
            backup.mac = link.mac.map(|m| format_mac(&m));
        }
        if t.promisc {
            backup.promisc = Some(link.promisc());
        }
        if t.mtu.is_some() {
            backup.mtu = Some(link.mtu);
        }
        if t.allmulti.is_some() {
            backup.allmulti = Some(link.allmulti());
        }
        if t.txqlen.is_some() {
            backup.txqlen = link.txqlen;
        }
        let any = t.mac.is_some()
            || t.promisc
            || t.mtu.is_some()
            || t.allmulti.is_some()
            || t.txqlen.is_some();
        if any {
            let bytes = serde_json::to_vec_pretty(&backup)
                .map_err(|e| CniError::internal(e.to_string()))?;
            rnet_cni::runtime::write_atomic(&backup_path(&t, args), &bytes)?;
        }
        let i = link.index;
        let ctx = |what: &str| format!("setting {what} of {} in the container", args.ifname);
        if let Some(mac) = t.mac {
            nl.link_set_mac(i, mac)
                .map_err(|e| netlink_error(e).context(ctx("the MAC")))?;
        }
        if t.promisc {
            nl.link_set_promisc(i, true)
                .map_err(|e| netlink_error(e).context(ctx("promiscuous mode")))?;
        }
        if let Some(mtu) = t.mtu {
            nl.link_set_mtu(i, mtu)
                .map_err(|e| netlink_error(e).context(ctx("the MTU")))?;
        }
        if let Some(a) = t.allmulti {
            nl.link_set_allmulti(i, a)
                .map_err(|e| netlink_error(e).context(ctx("all-multicast mode")))?;
        }
        if let Some(q) = t.txqlen {
            nl.link_set_txqlen(i, q)
                .map_err(|e| netlink_error(e).context(ctx("the queue length")))?;
        }
        let mut result = prev;
        if let Some(mac) = t.mac {
            for iface in &mut result.interfaces {
                if iface.name == args.ifname {
                    iface.mac = format_mac(&mac);
                }
            }
        }
        Ok(result)
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let t = parse(args)?;
        let path = backup_path(&t, args);
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(());
        };
        let remove = || {
            let _ = std::fs::remove_file(&path);
        };
        let Ok(b) = serde_json::from_slice::<Backup>(&bytes) else {
            remove();
            return Ok(());
        };
        let Some(ns) = container_netns_for_del(args)? else {
            remove();
            return Ok(());
        };
        let mut nl = Netlink::in_netns(&ns).map_err(netlink_error)?;
        let Some(link) = nl.link_by_name(&args.ifname).map_err(netlink_error)? else {
            remove();
            return Ok(());
        };
        let i = link.index;
        let mut errs = Vec::new();
        if let Some(mtu) = b.mtu {
            nl.link_set_mtu(i, mtu)
                .map_err(|e| errs.push(format!("MTU: {e}")))
                .ok();
        }
        if let Some(mac) = b.mac.as_deref().and_then(|m| parse_mac(m).ok()) {
            nl.link_set_mac(i, mac)
                .map_err(|e| errs.push(format!("MAC: {e}")))
                .ok();
        }
        if let Some(p) = b.promisc {
            nl.link_set_promisc(i, p)
                .map_err(|e| errs.push(format!("promiscuous mode: {e}")))
                .ok();
        }
        if let Some(a) = b.allmulti {
            nl.link_set_allmulti(i, a)
                .map_err(|e| errs.push(format!("all-multicast mode: {e}")))
                .ok();
        }
        if let Some(q) = b.txqlen {
            nl.link_set_txqlen(i, q)
                .map_err(|e| errs.push(format!("queue length: {e}")))
                .ok();
        }
        if !errs.is_empty() {
            return Err(CniError::new(
                code::NETLINK,
                format!(
                    "restoring {} of {}: {}",
                    args.ifname,
                    args.container_id,
                    errs.join("; ")
                ),
            ));
        }
        remove();
        Ok(())
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        duplicate_keys(&args.stdin)?;
        let t = parse(args)?;
        if args.conf.prev_result.is_none() {
            return Err(CniError::invalid_config("CHECK needs prevResult"));
        }
        let ns = container_netns(args)?;
        let mut diffs = Vec::new();
        for (k, want) in &t.sysctl {
            let f = sysctl_file(k, &args.ifname)?;
            let got = ns
                .run(|| std::fs::read_to_string(&f))
                .map_err(ns_error)?
                .map_err(|e| CniError::io(format!("reading {f}: {e}")))?;
            if got.trim_end() != want {
                diffs.push(format!("{f} is {:?}, configured {want:?}", got.trim_end()));
            }
        }
        let mut nl = Netlink::in_netns(&ns).map_err(netlink_error)?;
        let link = link_of(&mut nl, &args.ifname)?;
        if let Some(mac) = t.mac {
            if link.mac != Some(mac) {
                diffs.push(format!(
                    "MAC is {}, configured {}",
                    link.mac.map(|m| format_mac(&m)).unwrap_or_default(),
                    format_mac(&mac)
                ));
            }
        }
        if t.promisc != link.promisc() {
            diffs.push(format!(
                "promiscuous mode is {}, configured {}",
                link.promisc(),
                t.promisc
            ));
        }
        if let Some(mtu) = t.mtu {
            if link.mtu != mtu {
                diffs.push(format!("MTU is {}, configured {mtu}", link.mtu));
            }
        }
        if let Some(a) = t.allmulti {
            if link.allmulti() != a {
                diffs.push(format!(
                    "all-multicast mode is {}, configured {a}",
                    link.allmulti()
                ));
            }
        }
        if let Some(q) = t.txqlen {
            if link.txqlen != Some(q) {
                diffs.push(format!(
                    "queue length is {}, configured {q}",
                    link.txqlen
                        .map_or_else(|| "unknown".into(), |x| x.to_string())
                ));
            }
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                code::CHECK_FAILED,
                format!("tuning of {}: {}", args.ifname, diffs.join("; ")),
            ))
        }
    }
}

/// For tests: the backup file of an attachment.
pub fn backup_file(data_dir: &Path, container_id: &str, ifname: &str) -> PathBuf {
    data_dir.join(format!("{container_id}_{ifname}.json"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sysctl_keys() {
        assert_eq!(
            sysctl_file("net.ipv4.conf.IFNAME.arp_filter", "eth0").unwrap(),
            "/proc/sys/net/ipv4/conf/eth0/arp_filter"
        );
        assert_eq!(
            sysctl_file("net/ipv4/conf/IFNAME/arp_filter", "eth0").unwrap(),
            "/proc/sys/net/ipv4/conf/eth0/arp_filter"
        );
        assert_eq!(
            sysctl_file("net.ipv4.conf.IFNAME.rp_filter", "eth0.100").unwrap(),
            "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
        );
        for bad in [
            "kernel.panic",
            "net.ipv4.conf...x",
            "net/../kernel/panic",
            "vm.swappiness",
            "net",
        ] {
            assert!(sysctl_file(bad, "eth0").is_err(), "{bad}");
        }
    }

    #[test]
    fn allowlist_patterns() {
        assert!(glob_match(
            "^net.ipv4.conf.IFNAME.*",
            "net.ipv4.conf.IFNAME.arp_filter"
        ));
        assert!(glob_match("^net\\.core\\.somaxconn$", "net.core.somaxconn"));
        assert!(!glob_match(
            "^net\\.core\\.somaxconn$",
            "net.core.somaxconnx"
        ));
        assert!(!glob_match("net.ipv6.*", "net.ipv4.x"));
    }

    #[test]
    fn duplicates_are_refused() {
        assert!(duplicate_keys(br#"{"sysctl":{"a":"1","a":"2"}}"#).is_err());
        assert!(duplicate_keys(br#"{"sysctl":{"a":"1","b":"2"}}"#).is_ok());
        assert!(duplicate_keys(br#"{"name":"x"}"#).is_ok());
    }
}
