//! The options (the reference portmap's, plus rnet's extensions) and the
//! `portMappings` capability, parsed and validated: every mistake is CNI
//! error 7 naming the field and what to write instead.

use rnet_cni::{CniError, CniResult, NetConf};
use rnet_nft::rnet::cond::{CondChain, CondFamily};
use serde_json::{Map, Value};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// Default state root (rnet extension `rnetStateDir`).
pub const DEFAULT_STATE_ROOT: &str = "/run/rnet";

/// A transport protocol a port can be published for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// SCTP (132).
    Sctp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }

    /// `tcp`, `udp`, `sctp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// One entry of `runtimeConfig.portMappings`, ranges kept as ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    /// First host port.
    pub host_port: u16,
    /// First container port.
    pub container_port: u16,
    /// Number of ports (1 for a single port; ranges have the same length on
    /// both sides).
    pub count: u16,
    /// Protocol.
    pub proto: Proto,
    /// Only this host address answers; `None` = every local address.
    pub host_ip: Option<IpAddr>,
}

/// The plugin's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Network name.
    pub network: String,
    /// `snat` (default true): masquerade localhost and hairpin traffic, set
    /// `route_localnet` on the bridge.
    pub snat: bool,
    /// `masqAll` (reference option, accepted; rnet masquerades what it must
    /// per bridge, see the crate doc).
    pub masq_all: bool,
    /// `markMasqBit` (iptables-only in the reference; validated, unused).
    pub mark_masq_bit: Option<u8>,
    /// `externalSetMarkChain` (iptables-only in the reference; validated, unused).
    pub external_set_mark_chain: Option<String>,
    /// `backend`: `iptables` or `nftables`; rnet always uses nftables.
    pub backend: Option<String>,
    /// `conditionsV4`: extra matches IPv4 ports of this attachment must meet
    /// (see [`crate::conditions`]); `None` = none.
    pub conditions_v4: Option<CondChain>,
    /// `conditionsV6`: the same for IPv6 ports.
    pub conditions_v6: Option<CondChain>,
    /// rnet extension `rnetRouted` (default false): the network's container
    /// addresses are routed on purpose, so direct access from outside to
    /// published containers is not dropped.
    pub routed: bool,
    /// rnet extension `rnetStateDir`: the state root (default `/run/rnet`);
    /// port mapper state lives in `<root>/portmap`, nft journals in `<root>/nft`.
    pub state_root: PathBuf,
    /// The mappings from `runtimeConfig.portMappings`.
    pub mappings: Vec<PortMapping>,
}

fn bad(field: &str, why: impl std::fmt::Display) -> CniError {
    CniError::invalid_config(format!("portmap: {field}: {why}"))
}

fn opt_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(bad(key, format!("must be true or false, got {v}"))),
    }
}

fn opt_str(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(bad(key, format!("must be a string, got {v}"))),
    }
}

fn conditions(obj: &Map<String, Value>, key: &str) -> Result<Vec<String>, CniError> {
    let list = match obj.get(key) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(v) => return Err(bad(key, format!("must be a list of strings, got {v}"))),
    };
    let mut out = Vec::new();
    for v in list {
        match v.as_str() {
            Some("") => {}
            Some(s) => out.push(s.to_owned()),
            None => {
                return Err(bad(
                    key,
                    format!("must be a list of strings, got element {v}"),
                ));
            }
        }
    }
    Ok(out)
}

impl Config {
    /// Parses the network configuration (options and `runtimeConfig`).
    pub fn parse(conf: &NetConf) -> Result<Config, CniError> {
        let obj = conf
            .raw
            .as_object()
            .ok_or_else(|| CniError::decode("network config must be a JSON object"))?;
        let snat = opt_bool(obj, "snat")?.unwrap_or(true);
        let masq_all = opt_bool(obj, "masqAll")?.unwrap_or(false);
        let routed = opt_bool(obj, "rnetRouted")?.unwrap_or(false);
        let mark_masq_bit = match obj.get("markMasqBit") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_i64() {
                Some(n @ 0..=31) => Some(u8::try_from(n).unwrap_or(0)),
                _ => {
                    return Err(bad(
                        "markMasqBit",
                        format!("must be an integer between 0 and 31, got {v}"),
                    ));
                }
            },
        };
        let external_set_mark_chain = opt_str(obj, "externalSetMarkChain")?;
        if mark_masq_bit.is_some() && external_set_mark_chain.is_some() {
            return Err(bad(
                "markMasqBit",
                "cannot be combined with externalSetMarkChain; set only one of them",
            ));
        }
        let backend = opt_str(obj, "backend")?;
        if let Some(b) = &backend {
            if b != "iptables" && b != "nftables" {
                return Err(bad(
                    "backend",
                    format!("unrecognized backend {b:?}; use \"nftables\" or \"iptables\""),
                ));
            }
        }
        let conditions_v4 = crate::conditions::parse(
            backend.as_deref(),
            CondFamily::V4,
            &conditions(obj, "conditionsV4")?,
        )?;
        let conditions_v6 = crate::conditions::parse(
            backend.as_deref(),
            CondFamily::V6,
            &conditions(obj, "conditionsV6")?,
        )?;
        let state_root = match opt_str(obj, "rnetStateDir")? {
            Some(s) if s.is_empty() => PathBuf::from(DEFAULT_STATE_ROOT),
            Some(s) => {
                let p = PathBuf::from(&s);
                if !p.is_absolute() {
                    return Err(bad(
                        "rnetStateDir",
                        format!("{s:?} is not an absolute path"),
                    ));
                }
                p
            }
            None => PathBuf::from(DEFAULT_STATE_ROOT),
        };
        let mappings = match conf.runtime_config.get("portMappings") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(i, v)| parse_mapping(i, v))
                .collect::<Result<Vec<_>, _>>()?,
            Some(v) => {
                return Err(bad(
                    "runtimeConfig.portMappings",
                    format!(
                        "must be a list of {{hostPort, containerPort, protocol, hostIP}}, got {v}"
                    ),
                ));
            }
        };
        Ok(Config {
            network: conf.name.clone(),
            snat,
            masq_all,
            mark_masq_bit,
            external_set_mark_chain,
            backend,
            conditions_v4,
            conditions_v6,
            routed,
            state_root,
            mappings,
        })
    }

    /// `<root>/portmap`.
    pub fn state_dir(&self) -> PathBuf {
        self.state_root.join("portmap")
    }
}

/// A port or a port range: a number, or a string `"8000"` / `"8000-8010"`.
fn port_range(field: &str, v: &Value) -> Result<(u16, u16), CniError> {
    let range_err = || {
        bad(
            field,
            format!("must be a port 1-65535 or a range \"first-last\", got {v}"),
        )
    };
    let one = |n: i64| -> Result<u16, CniError> {
        match u16::try_from(n) {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(bad(field, format!("port {n} is out of range 1-65535"))),
        }
    };
    match v {
        Value::Number(n) => {
            let p = one(n.as_i64().ok_or_else(range_err)?)?;
            Ok((p, 1))
        }
        Value::String(s) => {
            let (a, b) = match s.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (s.trim(), s.trim()),
            };
            let a = one(a.parse::<i64>().map_err(|_| range_err())?)?;
            let b = one(b.parse::<i64>().map_err(|_| range_err())?)?;
            if b < a {
                return Err(bad(field, format!("range {s:?} ends before it starts")));
            }
            Ok((a, b - a + 1))
        }
        _ => Err(range_err()),
    }
}

fn parse_mapping(i: usize, v: &Value) -> Result<PortMapping, CniError> {
    let at = |f: &str| format!("runtimeConfig.portMappings[{i}].{f}");
    let obj = v.as_object().ok_or_else(|| {
        bad(
            &format!("runtimeConfig.portMappings[{i}]"),
            format!("must be an object {{hostPort, containerPort, protocol, hostIP}}, got {v}"),
        )
    })?;
    let hp = obj
        .get("hostPort")
        .ok_or_else(|| bad(&at("hostPort"), "is missing"))?;
    let cp = obj
        .get("containerPort")
        .ok_or_else(|| bad(&at("containerPort"), "is missing"))?;
    let (host_port, mut hcount) = port_range(&at("hostPort"), hp)?;
    let (container_port, mut ccount) = port_range(&at("containerPort"), cp)?;
    // netavark's form: a single start port on each side plus `range`.
    match obj.get("range") {
        None | Some(Value::Null) => {}
        Some(r) => {
            let n = r
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad(&at("range"), format!("must be a count >= 1, got {r}")))?;
            if hcount != 1 || ccount != 1 {
                return Err(bad(
                    &at("range"),
                    "cannot be combined with port ranges in hostPort/containerPort",
                ));
            }
            hcount = n;
            ccount = n;
        }
    }
    if hcount != ccount {
        return Err(bad(
            &at("hostPort"),
            format!(
                "host range has {hcount} ports but the container range has {ccount}; both sides \
                 must have the same length"
            ),
        ));
    }
    for (what, first) in [("hostPort", host_port), ("containerPort", container_port)] {
        if u32::from(first) + u32::from(hcount) - 1 > 65535 {
            return Err(bad(&at(what), "range goes past port 65535"));
        }
    }
    let proto = match obj.get("protocol") {
        None | Some(Value::Null) => Proto::Tcp,
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "" | "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "sctp" => Proto::Sctp,
            other => {
                return Err(bad(
                    &at("protocol"),
                    format!("unknown protocol {other:?}; use \"tcp\", \"udp\" or \"sctp\""),
                ));
            }
        },
        Some(v) => return Err(bad(&at("protocol"), format!("must be a string, got {v}"))),
    };
    let host_ip = match obj.get("hostIP") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => {
            let ip: IpAddr = s
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| {
                    bad(
                        &at("hostIP"),
                        format!("{s:?} is not an IPv4 or IPv6 address"),
                    )
                })?;
            if ip == IpAddr::V4(Ipv4Addr::UNSPECIFIED) || ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
                None
            } else if ip.is_multicast() {
                return Err(bad(&at("hostIP"), format!("{ip} is a multicast address")));
            } else {
                Some(ip)
            }
        }
        Some(v) => return Err(bad(&at("hostIP"), format!("must be a string, got {v}"))),
    };
    Ok(PortMapping {
        host_port,
        container_port,
        count: hcount,
        proto,
        host_ip,
    })
}

/// The container's addresses from `prevResult`: the first IPv4 and the
/// first IPv6 address on interface `ifname` inside the sandbox (or on no
/// interface), as the reference picks them.
pub fn container_ips(prev: &CniResult, ifname: &str) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let (mut v4, mut v6) = (None, None);
    for ip in &prev.ips {
        if let Some(i) = ip.interface {
            if let Some(intf) = prev.interfaces.get(i) {
                if intf.name != ifname || intf.sandbox.is_empty() {
                    continue;
                }
            }
        }
        match ip.address.addr() {
            IpAddr::V4(a) if v4.is_none() => v4 = Some(a),
            IpAddr::V6(a) if v6.is_none() => v6 = Some(a),
            _ => {}
        }
    }
    (v4, v6)
}

/// The host-side interface the container hangs off (bridge, or the host
/// veth of a point-to-point plugin): the first interface of `prevResult`
/// outside any sandbox.
pub fn host_interface(prev: &CniResult) -> Option<String> {
    prev.interfaces
        .iter()
        .find(|i| i.sandbox.is_empty() && !i.name.is_empty())
        .map(|i| i.name.clone())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn conf(v: Value) -> NetConf {
        let mut base = json!({"cniVersion": "1.0.0", "name": "net1", "type": "portmap"});
        if let (Value::Object(a), Value::Object(b)) = (&mut base, v) {
            a.extend(b);
        }
        NetConf::parse(base.to_string().as_bytes()).unwrap()
    }

    fn maps(pm: Value) -> Result<Config, CniError> {
        Config::parse(&conf(json!({"runtimeConfig": {"portMappings": pm}})))
    }

    fn err(r: Result<Config, CniError>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.code, 7, "{e:?}");
        e.msg
    }

    #[test]
    fn defaults() {
        let c = Config::parse(&conf(json!({}))).unwrap();
        assert!(c.snat && !c.routed && !c.masq_all);
        assert_eq!(c.state_root, PathBuf::from("/run/rnet"));
        assert_eq!(c.state_dir(), PathBuf::from("/run/rnet/portmap"));
        assert!(c.mappings.is_empty());
    }

    #[test]
    fn mappings_and_ranges() {
        let c = maps(json!([
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 53, "containerPort": 53, "protocol": "UDP", "hostIP": "127.0.0.1"},
            {"hostPort": "8000-8010", "containerPort": "80-90", "protocol": "sctp", "hostIP": "::"},
            {"hostPort": 9000, "containerPort": 90, "range": 3},
            {"hostPort": 7000, "containerPort": 70, "hostIP": "[fd00::1]"},
        ]))
        .unwrap();
        assert_eq!(
            c.mappings[0],
            PortMapping {
                host_port: 8080,
                container_port: 80,
                count: 1,
                proto: Proto::Tcp,
                host_ip: None
            }
        );
        assert_eq!(c.mappings[1].proto, Proto::Udp);
        assert_eq!(c.mappings[1].host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!((c.mappings[2].count, c.mappings[2].host_ip), (11, None));
        assert_eq!(c.mappings[3].count, 3);
        assert_eq!(c.mappings[4].host_ip, Some("fd00::1".parse().unwrap()));
    }

    #[test]
    fn mapping_errors_name_the_field() {
        assert!(
            err(maps(json!([{"hostPort": 0, "containerPort": 80}])))
                .contains("portMappings[0].hostPort")
        );
        assert!(
            err(maps(json!([{"hostPort": 70000, "containerPort": 80}]))).contains("out of range")
        );
        assert!(err(maps(json!([{"hostPort": 80}]))).contains("containerPort: is missing"));
        let m = err(maps(
            json!([{"hostPort": 1, "containerPort": 1}, {"hostPort": "8000-8010", "containerPort": "80-85"}]),
        ));
        assert!(
            m.contains("portMappings[1].hostPort") && m.contains("same length"),
            "{m}"
        );
        assert!(
            err(maps(json!([{"hostPort": "9-1", "containerPort": "1-9"}]))).contains("ends before")
        );
        assert!(
            err(maps(
                json!([{"hostPort": 1, "containerPort": 1, "protocol": "icmp"}])
            ))
            .contains("protocol")
        );
        assert!(
            err(maps(
                json!([{"hostPort": 1, "containerPort": 1, "hostIP": "nope"}])
            ))
            .contains("hostIP")
        );
        assert!(
            err(maps(
                json!([{"hostPort": 65535, "containerPort": 1, "range": 2}])
            ))
            .contains("65535")
        );
        assert!(err(maps(json!({"hostPort": 1}))).contains("must be a list"));
        assert!(err(maps(json!(["x"]))).contains("portMappings[0]"));
    }

    #[test]
    fn option_errors() {
        let e = |v| err(Config::parse(&conf(v)));
        assert!(e(json!({"markMasqBit": 32})).contains("markMasqBit"));
        assert!(
            e(json!({"markMasqBit": 3, "externalSetMarkChain": "X"}))
                .contains("externalSetMarkChain")
        );
        assert!(e(json!({"backend": "ebpf"})).contains("backend"));
        assert!(e(json!({"snat": "yes"})).contains("snat"));
        assert!(e(json!({"rnetStateDir": "rel"})).contains("rnetStateDir"));
        assert!(
            e(json!({"conditionsV4": ["ip saddr 10.0.0.0/8; flush ruleset"]}))
                .contains("conditionsV4")
        );
        assert!(
            e(json!({"backend": "iptables", "conditionsV4": ["ip saddr 10.0.0.0/8"]}))
                .contains("not in iptables syntax")
        );
        assert!(e(json!({"conditionsV6": ["-s", "10.0.0.1"]})).contains("conditionsV4"));
        assert!(e(json!({"conditionsV4": "-s 1.2.3.4"})).contains("list of strings"));
        let c = Config::parse(&conf(json!({
            "conditionsV4": ["-s", "1.2.3.4"],
            "conditionsV6": ["ip6 saddr fd00::/8"],
        })))
        .unwrap();
        assert_eq!(c.conditions_v4.unwrap().matches, "ip saddr 1.2.3.4");
        assert_eq!(c.conditions_v6.unwrap().matches, "ip6 saddr fd00::/8");
        let ok = Config::parse(&conf(
            json!({"markMasqBit": 13, "backend": "iptables", "conditionsV6": [""], "snat": false}),
        ))
        .unwrap();
        assert_eq!(ok.mark_masq_bit, Some(13));
        assert!(!ok.snat);
    }

    #[test]
    fn picks_container_ips_like_the_reference() {
        let prev = CniResult::parse(
            &json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "cni0", "mac": "00:11:22:33:44:55"},
                    {"name": "vethx", "mac": "00:11:22:33:44:56"},
                    {"name": "eth0", "mac": "00:11:22:33:44:57", "sandbox": "/run/netns/x"},
                    {"name": "eth1", "mac": "00:11:22:33:44:58", "sandbox": "/run/netns/x"}
                ],
                "ips": [
                    {"address": "10.9.0.2/24", "interface": 3},
                    {"address": "10.88.0.2/16", "interface": 2},
                    {"address": "10.88.0.3/16", "interface": 2},
                    {"address": "fd00::2/64", "interface": 2}
                ]
            }),
            rnet_cni::Version::parse("1.0.0").unwrap(),
        )
        .unwrap();
        let (v4, v6) = container_ips(&prev, "eth0");
        assert_eq!(v4, Some("10.88.0.2".parse().unwrap()));
        assert_eq!(v6, Some("fd00::2".parse().unwrap()));
        assert_eq!(host_interface(&prev).as_deref(), Some("cni0"));
    }
}
