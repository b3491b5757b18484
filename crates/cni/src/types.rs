//! The CNI data model: network configuration and results.
//!
//! rnet keeps one internal result model (the 1.1.0 shape, [`CniResult`]) and converts
//! at the edges: [`CniResult::parse`] reads a result of any version (including the
//! 0.1/0.2 `ip4`/`ip6` shape), and [`CniResult::to_json`] writes the shape of the
//! version the caller asked for. Key order and omitted-empty rules follow the
//! reference Go types so results diff cleanly against the reference plugins.

use crate::error::CniError;
use crate::version::Version;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::net::IpAddr;

/// DNS settings in a result or a network configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers, in priority order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// The local domain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// Parses resolv.conf text: `nameserver`, `domain`, `search`, `options`.
    pub fn from_resolv_conf(text: &str) -> Dns {
        let mut dns = Dns::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => dns.nameservers.extend(words.next().map(str::to_owned)),
                Some("domain") => dns.domain = words.next().unwrap_or_default().to_owned(),
                Some("search") => dns.search = words.map(str::to_owned).collect(),
                Some("options") => dns.options.extend(words.map(str::to_owned)),
                _ => {}
            }
        }
        dns
    }

    /// Nothing set.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// An interface in a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// MAC address, lowercase `aa:bb:..`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// MTU (1.1.0+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The namespace path for container interfaces; empty for host interfaces.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    /// vhost-user or similar socket path (1.1.0+).
    #[serde(
        default,
        rename = "socketPath",
        skip_serializing_if = "String::is_empty"
    )]
    pub socket_path: String,
    /// PCI ID (1.1.0+).
    #[serde(default, rename = "pciID", skip_serializing_if = "String::is_empty")]
    pub pci_id: String,
}

/// An address in a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Index into `interfaces`.
    pub interface: Option<usize>,
    /// Address with prefix length (host bits kept: `10.0.0.2/24`).
    pub address: IpNet,
    /// Gateway, if any.
    pub gateway: Option<IpAddr>,
}

/// A route in a result or an IPAM configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop; none means the default gateway of the address family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// MTU (1.1.0+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0+).
    #[serde(default, rename = "advmss", skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    /// Priority/metric (1.1.0+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Routing table (1.1.0+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Scope (1.1.0+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl Route {
    /// A plain route to `dst` via `gw`.
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Self {
        Self {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }

    fn strip_1_1(&self) -> Route {
        Route::new(self.dst, self.gw)
    }
}

/// A CNI result in rnet's internal (1.1.0) model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    /// Interfaces created or used.
    pub interfaces: Vec<Interface>,
    /// Addresses.
    pub ips: Vec<IpConfig>,
    /// Routes.
    pub routes: Vec<Route>,
    /// DNS.
    pub dns: Dns,
}

// ---- wire shapes ----

#[derive(Serialize, Deserialize)]
struct WireIp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
    address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
}

#[derive(Serialize, Deserialize)]
struct WireCurrent {
    #[serde(rename = "cniVersion", default)]
    cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ips: Vec<WireIp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    routes: Vec<Route>,
    #[serde(default)]
    dns: Dns,
}

#[derive(Serialize, Deserialize)]
struct WireIp02 {
    ip: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    routes: Vec<Route>,
}

#[derive(Serialize, Deserialize)]
struct Wire02 {
    #[serde(rename = "cniVersion", default)]
    cni_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip4: Option<WireIp02>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip6: Option<WireIp02>,
    #[serde(default)]
    dns: Dns,
}

impl CniResult {
    /// Parses a result of `version` (the version of the document it came in).
    pub fn parse(value: &Value, version: Version) -> Result<CniResult, CniError> {
        // A result carries its own cniVersion; prefer it when present and known.
        let version = match value.get("cniVersion").and_then(Value::as_str) {
            Some(s) if !s.is_empty() => Version::parse(s).unwrap_or(version),
            _ => version,
        };
        if version.legacy_result() {
            let w: Wire02 = serde_json::from_value(value.clone())
                .map_err(|e| CniError::decode(format!("cannot decode {version} result: {e}")))?;
            let mut r = CniResult {
                dns: w.dns,
                ..CniResult::default()
            };
            for ip in [w.ip4, w.ip6].into_iter().flatten() {
                r.ips.push(IpConfig {
                    interface: None,
                    address: ip.ip,
                    gateway: ip.gateway,
                });
                r.routes.extend(ip.routes);
            }
            return Ok(r);
        }
        let w: WireCurrent = serde_json::from_value(value.clone())
            .map_err(|e| CniError::decode(format!("cannot decode {version} result: {e}")))?;
        for ip in &w.ips {
            if let Some(i) = ip.interface {
                if i >= w.interfaces.len() {
                    return Err(CniError::decode(format!(
                        "result address {} names interface index {i}, but the result has {} interfaces",
                        ip.address,
                        w.interfaces.len()
                    )));
                }
            }
        }
        Ok(CniResult {
            interfaces: w.interfaces,
            ips: w
                .ips
                .into_iter()
                .map(|ip| IpConfig {
                    interface: ip.interface,
                    address: ip.address,
                    gateway: ip.gateway,
                })
                .collect(),
            routes: w.routes,
            dns: w.dns,
        })
    }

    /// Parses a result from bytes.
    pub fn parse_bytes(bytes: &[u8], version: Version) -> Result<CniResult, CniError> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| CniError::decode(format!("result is not JSON: {e}")))?;
        Self::parse(&v, version)
    }

    /// The result as the JSON value of `version`.
    pub fn to_value(&self, version: Version) -> Value {
        let out = if version.legacy_result() {
            let pick = |v4: bool| -> Option<WireIp02> {
                let ip = self
                    .ips
                    .iter()
                    .find(|ip| ip.address.addr().is_ipv4() == v4)?;
                Some(WireIp02 {
                    ip: ip.address,
                    gateway: ip.gateway,
                    routes: self
                        .routes
                        .iter()
                        .filter(|r| r.dst.addr().is_ipv4() == v4)
                        .map(Route::strip_1_1)
                        .collect(),
                })
            };
            serde_json::to_value(Wire02 {
                cni_version: version.as_str().to_owned(),
                ip4: pick(true),
                ip6: pick(false),
                dns: self.dns.clone(),
            })
        } else {
            let new = version >= Version::V1_1_0;
            serde_json::to_value(WireCurrent {
                cni_version: version.as_str().to_owned(),
                interfaces: self
                    .interfaces
                    .iter()
                    .map(|i| {
                        if new {
                            i.clone()
                        } else {
                            Interface {
                                name: i.name.clone(),
                                mac: i.mac.clone(),
                                sandbox: i.sandbox.clone(),
                                ..Interface::default()
                            }
                        }
                    })
                    .collect(),
                ips: self
                    .ips
                    .iter()
                    .map(|ip| WireIp {
                        version: (version < Version::V1_0_0).then(|| {
                            if ip.address.addr().is_ipv4() {
                                "4"
                            } else {
                                "6"
                            }
                            .to_owned()
                        }),
                        interface: ip.interface,
                        address: ip.address,
                        gateway: ip.gateway,
                    })
                    .collect(),
                routes: self
                    .routes
                    .iter()
                    .map(|r| if new { r.clone() } else { r.strip_1_1() })
                    .collect(),
                dns: self.dns.clone(),
            })
        };
        out.unwrap_or(Value::Null)
    }

    /// The result as pretty JSON of `version`, as plugins print it.
    pub fn to_json(&self, version: Version) -> String {
        serde_json::to_string_pretty(&self.to_value(version)).unwrap_or_default()
    }
}

/// The common part of a plugin's network configuration. Plugins read their own
/// options from [`NetConf::raw`]; unknown keys are kept there untouched.
#[derive(Debug, Clone)]
pub struct NetConf {
    /// The configuration's `cniVersion`.
    pub version: Version,
    /// Network name.
    pub name: String,
    /// Plugin type.
    pub plugin_type: String,
    /// `ipam.type`, if an `ipam` section is present with a type.
    pub ipam_type: Option<String>,
    /// The `dns` section.
    pub dns: Option<Dns>,
    /// `prevResult`, parsed (chained plugins).
    pub prev_result: Option<CniResult>,
    /// `runtimeConfig`.
    pub runtime_config: Map<String, Value>,
    /// The whole document.
    pub raw: Value,
}

impl NetConf {
    /// Parses stdin as a network configuration and checks the name and version.
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        let raw: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::decode(format!(
                "error unmarshalling network config: {e}; stdin must be one JSON object"
            ))
        })?;
        let obj = raw
            .as_object()
            .ok_or_else(|| CniError::decode("network config must be a JSON object"))?;
        let name = str_field(obj, "name")?.unwrap_or_default();
        if name.is_empty() {
            return Err(CniError::invalid_config(
                "missing network name: set \"name\" in the network config",
            ));
        }
        crate::args::validate_network_name(&name)?;
        let version = Version::parse(&str_field(obj, "cniVersion")?.unwrap_or_default())?;
        let plugin_type = str_field(obj, "type")?.unwrap_or_default();
        let ipam_type = match obj.get("ipam") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => match m.get("type") {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                None => None,
                Some(Value::String(_)) => None,
                Some(other) => {
                    return Err(CniError::invalid_config(format!(
                        "\"ipam.type\" must be a string, got {other}"
                    )));
                }
            },
            Some(other) => {
                return Err(CniError::invalid_config(format!(
                    "\"ipam\" must be an object, got {other}"
                )));
            }
        };
        let dns = match obj.get("dns") {
            None | Some(Value::Null) => None,
            Some(v) => Some(serde_json::from_value(v.clone()).map_err(|e| {
                CniError::invalid_config(format!("\"dns\" is not a valid DNS section: {e}"))
            })?),
        };
        let prev_result = match obj.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                CniResult::parse(v, version).map_err(|e| e.context("cannot use \"prevResult\""))?,
            ),
        };
        let runtime_config = match obj.get("runtimeConfig") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => {
                return Err(CniError::invalid_config(format!(
                    "\"runtimeConfig\" must be an object, got {other}"
                )));
            }
        };
        Ok(NetConf {
            version,
            name,
            plugin_type,
            ipam_type,
            dns,
            prev_result,
            runtime_config,
            raw,
        })
    }

    /// Deserialises the plugin's own options from the whole document. Unknown keys
    /// are ignored; a value of the wrong type is error 7 naming the field.
    pub fn options<T: serde::de::DeserializeOwned>(&self) -> Result<T, CniError> {
        serde_json::from_value(self.raw.clone()).map_err(|e| {
            CniError::invalid_config(format!(
                "invalid network config for plugin {:?}: {e}",
                self.plugin_type
            ))
        })
    }
}

fn str_field(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(CniError::invalid_config(format!(
            "{key:?} must be a string, got {other}"
        ))),
    }
}

/// One attachment named in GC's `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    /// Container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

/// Reads the GC attachment list: `cni.dev/valid-attachments`, and the older
/// `cni.dev/attachments` key that libcni still sends; both are merged.
pub fn valid_attachments(conf: &Value) -> Result<Vec<Attachment>, CniError> {
    let mut out: Vec<Attachment> = Vec::new();
    let mut seen_key = false;
    for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
        match conf.get(key) {
            None | Some(Value::Null) => {}
            Some(v) => {
                seen_key = true;
                let list: Vec<Attachment> = serde_json::from_value(v.clone()).map_err(|e| {
                    CniError::decode(format!(
                        "{key:?} must be a list of {{\"containerID\", \"ifname\"}}: {e}"
                    ))
                })?;
                for a in list {
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
            }
        }
    }
    if !seen_key {
        return Err(CniError::invalid_config(
            "GC needs \"cni.dev/valid-attachments\" in the config (the runtime adds it); without it every attachment would be removed",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    mac: "aa:bb:cc:dd:ee:ff".into(),
                    ..Interface::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: "aa:bb:cc:dd:ee:01".into(),
                    mtu: Some(1500),
                    sandbox: "/run/netns/x".into(),
                    ..Interface::default()
                },
            ],
            ips: vec![
                IpConfig {
                    interface: Some(1),
                    address: "10.1.0.2/24".parse().unwrap(),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                },
                IpConfig {
                    interface: Some(1),
                    address: "fd00::2/64".parse().unwrap(),
                    gateway: Some("fd00::1".parse().unwrap()),
                },
            ],
            routes: vec![
                Route {
                    mtu: Some(1400),
                    ..Route::new("0.0.0.0/0".parse().unwrap(), None)
                },
                Route::new("::/0".parse().unwrap(), Some("fd00::1".parse().unwrap())),
            ],
            dns: Dns {
                nameservers: vec!["10.1.0.1".into()],
                ..Dns::default()
            },
        }
    }

    #[test]
    fn shapes_per_version() {
        let r = sample();
        let v02 = r.to_value(Version::V0_2_0);
        assert_eq!(v02["ip4"]["ip"], "10.1.0.2/24");
        assert_eq!(v02["ip6"]["gateway"], "fd00::1");
        assert_eq!(v02["ip4"]["routes"][0]["dst"], "0.0.0.0/0");
        assert!(v02["ip4"]["routes"][0].get("mtu").is_none());
        assert!(v02.get("interfaces").is_none());
        let v03 = r.to_value(Version::V0_3_1);
        assert_eq!(v03["ips"][0]["version"], "4");
        assert_eq!(v03["ips"][1]["version"], "6");
        assert!(v03["interfaces"][1].get("mtu").is_none());
        let v10 = r.to_value(Version::V1_0_0);
        assert!(v10["ips"][0].get("version").is_none());
        assert!(v10["routes"][0].get("mtu").is_none());
        let v11 = r.to_value(Version::V1_1_0);
        assert_eq!(v11["interfaces"][1]["mtu"], 1500);
        assert_eq!(v11["routes"][0]["mtu"], 1400);
        assert_eq!(v11["cniVersion"], "1.1.0");
    }

    #[test]
    fn round_trips() {
        let r = sample();
        for v in crate::version::SUPPORTED {
            let back = CniResult::parse(&r.to_value(*v), *v).unwrap();
            if v.legacy_result() {
                assert_eq!(back.ips.len(), 2);
                assert_eq!(back.ips[0].interface, None);
            } else if *v >= Version::V1_1_0 {
                assert_eq!(back, r);
            } else {
                assert_eq!(back.ips, r.ips);
            }
        }
    }

    #[test]
    fn resolv_conf() {
        let d = Dns::from_resolv_conf(
            "# c\nnameserver 10.0.0.1\nnameserver fd00::1 # x\nsearch a.b c.d\ndomain ex\noptions ndots:2 edns0\n",
        );
        assert_eq!(d.nameservers, ["10.0.0.1", "fd00::1"]);
        assert_eq!(d.search, ["a.b", "c.d"]);
        assert_eq!(d.domain, "ex");
        assert_eq!(d.options, ["ndots:2", "edns0"]);
    }

    #[test]
    fn bad_interface_index() {
        let v = json!({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24","interface":3}]});
        assert_eq!(
            CniResult::parse(&v, Version::V1_0_0).err().map(|e| e.code),
            Some(6)
        );
    }

    #[test]
    fn netconf_parse() {
        let c = NetConf::parse(
            br#"{"cniVersion":"0.4.0","name":"n1","type":"bridge","ipam":{"type":"host-local"},
                "prevResult":{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.2/24"}]},
                "runtimeConfig":{"portMappings":[]},"whatever":1}"#,
        )
        .unwrap();
        assert_eq!(c.version, Version::V0_4_0);
        assert_eq!(c.ipam_type.as_deref(), Some("host-local"));
        assert_eq!(c.prev_result.unwrap().ips.len(), 1);
        assert!(c.runtime_config.contains_key("portMappings"));
        assert_eq!(NetConf::parse(b"nope").err().map(|e| e.code), Some(6));
        assert_eq!(NetConf::parse(b"{}").err().map(|e| e.code), Some(7));
        assert_eq!(NetConf::parse(b"[]").err().map(|e| e.code), Some(6));
        assert_eq!(
            NetConf::parse(br#"{"name":"a","cniVersion":"7.0.0"}"#)
                .err()
                .map(|e| e.code),
            Some(1)
        );
        assert_eq!(
            NetConf::parse(br#"{"name":"a","cniVersion":1}"#)
                .err()
                .map(|e| e.code),
            Some(7)
        );
        assert_eq!(
            NetConf::parse(br#"{"name":"a/b","cniVersion":"1.0.0"}"#)
                .err()
                .map(|e| e.code),
            Some(7)
        );
    }

    #[test]
    fn gc_attachments_both_keys() {
        let v = json!({"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],
                       "cni.dev/attachments":[{"containerID":"a","ifname":"eth0"},{"containerID":"b","ifname":"eth1"}]});
        assert_eq!(valid_attachments(&v).unwrap().len(), 2);
        assert_eq!(valid_attachments(&json!({})).err().map(|e| e.code), Some(7));
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[0-9a-f:./ ]{0,24}".prop_map(Value::String),
            Just(json!("10.0.0.2/24")),
            Just(json!("fd00::1")),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let keys = prop_oneof![
                Just("ips".to_owned()),
                Just("interfaces".to_owned()),
                Just("routes".to_owned()),
                Just("dns".to_owned()),
                Just("address".to_owned()),
                Just("gateway".to_owned()),
                Just("interface".to_owned()),
                Just("ip4".to_owned()),
                Just("ip".to_owned()),
                Just("dst".to_owned()),
                Just("cniVersion".to_owned()),
                Just("name".to_owned()),
                Just("prevResult".to_owned()),
                Just("ipam".to_owned()),
                Just("type".to_owned()),
                Just("runtimeConfig".to_owned()),
                Just("cni.dev/valid-attachments".to_owned()),
                "[a-z]{1,6}",
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(keys, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Results, configurations and GC attachment lists of any shape decode
        /// to a value or an error, never a panic, at every version.
        #[test]
        fn arbitrary_json_never_panics(v in arb_json()) {
            for ver in crate::version::SUPPORTED {
                if let Ok(r) = CniResult::parse(&v, *ver) {
                    let _ = r.to_json(*ver);
                }
            }
            let _ = NetConf::parse(v.to_string().as_bytes());
            let _ = valid_attachments(&v);
            let _ = crate::runtime::ConfList::parse(v.to_string().as_bytes());
        }
    }
}
