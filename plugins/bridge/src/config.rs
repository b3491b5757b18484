//! The bridge plugin's options: every key the reference `bridge` plugin reads,
//! with its defaults and its validation, plus rnet's own extensions
//! (`isolation`, `ipv6LinkLocal`, `rnetStateDir`).
//!
//! Options are read one by one from the raw JSON document (not through a serde
//! struct) so that a value of the wrong type or out of range is a CNI error 7
//! whose message names the option and says what is allowed. Unknown keys are
//! ignored, as the reference does.

use rnet_cni::{CmdArgs, CniError};
use serde_json::{Map, Value};
use std::path::PathBuf;

/// The bridge used when the config names none (as the reference).
pub const DEFAULT_BRIDGE: &str = "cni0";

/// rnet's state root unless `rnetStateDir` says otherwise (shared by every
/// rnet plugin of a network: the bridge keeps its files in `<root>/bridge`,
/// the nftables journal is `<root>/nft`). A tmpfs: containers do not survive
/// a reboot, neither should their state.
pub const DEFAULT_STATE_ROOT: &str = "/run/rnet";

/// The `ipMasqBackend` values the reference accepts. rnet always installs
/// nftables rules (in its own `inet rnet` table); the value is only validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasqBackend {
    /// `"iptables"` (accepted; rnet uses nftables anyway).
    Iptables,
    /// `"nftables"`.
    Nftables,
}

/// The bridge plugin's configuration, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConf {
    /// `bridge`: the bridge name (default `cni0`).
    pub bridge: String,
    /// `isGateway` (also true when `isDefaultGateway` is).
    pub is_gateway: bool,
    /// `isDefaultGateway`.
    pub is_default_gateway: bool,
    /// `forceAddress`.
    pub force_address: bool,
    /// `ipMasq`.
    pub ip_masq: bool,
    /// `ipMasqBackend`, if given.
    pub ip_masq_backend: Option<MasqBackend>,
    /// `mtu` (0 or absent: kernel default).
    pub mtu: Option<u32>,
    /// `hairpinMode`.
    pub hairpin: bool,
    /// `promiscMode`.
    pub promisc: bool,
    /// `vlan` (0 = none).
    pub vlan: u16,
    /// `vlanTrunk`, expanded to a sorted list of VLAN ids.
    pub vlan_trunk: Vec<u16>,
    /// `vlanTrunk` was present (even empty): the reference then turns on VLAN filtering.
    pub vlan_trunk_given: bool,
    /// `preserveDefaultVlan`.
    pub preserve_default_vlan: bool,
    /// `enabledad`.
    pub enable_dad: bool,
    /// `macspoofchk`.
    pub macspoofchk: bool,
    /// `disableContainerInterface`.
    pub disable_container_interface: bool,
    /// `portIsolation`.
    pub port_isolation: bool,
    /// rnet extension `isolation`: no traffic between this bridge and other rnet bridges.
    pub isolation: bool,
    /// rnet extension `ipv6LinkLocal`: keep the kernel's IPv6 link-local
    /// address on the container interface when IPAM gives no IPv6 address
    /// (by default such an interface has no IPv6 address at all).
    pub ipv6_link_local: bool,
    /// The container MAC: `runtimeConfig.mac` > `args.cni.mac` > `CNI_ARGS MAC=`.
    pub mac: Option<[u8; 6]>,
    /// rnet extension `rnetStateDir`: the state root (default [`DEFAULT_STATE_ROOT`]).
    pub state_root: PathBuf,
    /// This plugin's own state: `<state_root>/bridge`.
    pub state_dir: PathBuf,
    /// `ipam.type`, if any (no IPAM: layer 2 only).
    pub ipam_type: Option<String>,
}

impl BridgeConf {
    /// Whether the bridge needs VLAN filtering (as the reference decides it).
    pub fn vlan_filtering(&self) -> bool {
        self.vlan != 0 || self.vlan_trunk_given
    }

    /// Reads and validates the options of one call.
    pub fn from_args(args: &CmdArgs) -> Result<BridgeConf, CniError> {
        let obj = args
            .conf
            .raw
            .as_object()
            .ok_or_else(|| CniError::decode("network config must be a JSON object"))?;
        BridgeConf::parse(obj, args.args.get("MAC"), args.conf.ipam_type.clone())
    }

    /// Reads and validates the options from the config object, the `CNI_ARGS`
    /// `MAC` value and the IPAM type.
    pub fn parse(
        obj: &Map<String, Value>,
        env_mac: Option<&str>,
        ipam_type: Option<String>,
    ) -> Result<BridgeConf, CniError> {
        let bridge = opt_str(obj, "bridge")?.unwrap_or_else(|| DEFAULT_BRIDGE.to_owned());
        let bridge = if bridge.is_empty() {
            DEFAULT_BRIDGE.to_owned()
        } else {
            bridge
        };
        rnet_netlink::validate_ifname(&bridge).map_err(|e| {
            invalid(
                "bridge",
                format!("{bridge:?} is not a valid interface name ({e})"),
            )
        })?;
        let is_default_gateway = opt_bool(obj, "isDefaultGateway")?;
        let is_gateway = opt_bool(obj, "isGateway")? || is_default_gateway;
        let ip_masq_backend = match opt_str(obj, "ipMasqBackend")?.as_deref() {
            None => None,
            Some("iptables") => Some(MasqBackend::Iptables),
            Some("nftables") => Some(MasqBackend::Nftables),
            Some(other) => {
                return Err(invalid(
                    "ipMasqBackend",
                    format!("unknown backend {other:?}; use \"iptables\" or \"nftables\""),
                ));
            }
        };
        let mtu = match opt_int(obj, "mtu")? {
            None | Some(0) => None,
            Some(m) if (68..=65535).contains(&m) => u32::try_from(m).ok(),
            Some(m) => {
                return Err(invalid(
                    "mtu",
                    format!("{m} is outside 68..=65535 (0 or absent: kernel default)"),
                ));
            }
        };
        let hairpin = opt_bool(obj, "hairpinMode")?;
        let promisc = opt_bool(obj, "promiscMode")?;
        if hairpin && promisc {
            return Err(CniError::invalid_config(
                "cannot set hairpin mode and promiscuous mode at the same time: set only one of \"hairpinMode\" and \"promiscMode\"",
            ));
        }
        let vlan = match opt_int(obj, "vlan")? {
            None => 0,
            Some(v) if (0..=4094).contains(&v) => u16::try_from(v).unwrap_or(0),
            Some(v) => {
                return Err(invalid(
                    "vlan",
                    format!("invalid VLAN ID {v} (must be between 0 and 4094)"),
                ));
            }
        };
        let (vlan_trunk, vlan_trunk_given) = match obj.get("vlanTrunk") {
            None | Some(Value::Null) => (Vec::new(), false),
            Some(v) => (parse_trunk(v)?, true),
        };
        let disable_container_interface = opt_bool(obj, "disableContainerInterface")?;
        if disable_container_interface && ipam_type.is_some() {
            return Err(CniError::invalid_config(
                "cannot use IPAM when \"disableContainerInterface\" is set: remove the \"ipam\" type or the flag",
            ));
        }
        let mac = mac_option(obj, env_mac)?;
        let state_root = opt_str(obj, "rnetStateDir")?
            .filter(|s| !s.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_STATE_ROOT), PathBuf::from);
        if !state_root.is_absolute() {
            return Err(invalid(
                "rnetStateDir",
                format!("{} is not an absolute path", state_root.display()),
            ));
        }
        let state_dir = state_root.join("bridge");
        Ok(BridgeConf {
            bridge,
            is_gateway,
            is_default_gateway,
            force_address: opt_bool(obj, "forceAddress")?,
            ip_masq: opt_bool(obj, "ipMasq")?,
            ip_masq_backend,
            mtu,
            hairpin,
            promisc,
            vlan,
            vlan_trunk,
            vlan_trunk_given,
            preserve_default_vlan: opt_bool(obj, "preserveDefaultVlan")?,
            enable_dad: opt_bool(obj, "enabledad")?,
            macspoofchk: opt_bool(obj, "macspoofchk")?,
            disable_container_interface,
            port_isolation: opt_bool(obj, "portIsolation")?,
            isolation: opt_bool(obj, "isolation")?,
            ipv6_link_local: opt_bool(obj, "ipv6LinkLocal")?,
            mac,
            state_root,
            state_dir,
            ipam_type,
        })
    }
}

fn invalid(key: &str, why: impl std::fmt::Display) -> CniError {
    CniError::invalid_config(format!("invalid bridge option {key:?}: {why}"))
}

fn opt_bool(obj: &Map<String, Value>, key: &str) -> Result<bool, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(invalid(key, format!("must be true or false, got {other}"))),
    }
}

fn opt_str(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(key, format!("must be a string, got {other}"))),
    }
}

fn opt_int(obj: &Map<String, Value>, key: &str) -> Result<Option<i64>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| invalid(key, format!("must be an integer, got {n}"))),
        Some(other) => Err(invalid(key, format!("must be an integer, got {other}"))),
    }
}

/// Expands `vlanTrunk` as the reference does: each entry is `{"id": n}`
/// and/or `{"minID": a, "maxID": b}` (both or neither), ids in 1..=4094,
/// `minID <= maxID`; the result is sorted and without duplicates.
fn parse_trunk(v: &Value) -> Result<Vec<u16>, CniError> {
    let Value::Array(items) = v else {
        return Err(invalid(
            "vlanTrunk",
            format!("must be a list of {{\"id\"}} or {{\"minID\", \"maxID\"}} objects, got {v}"),
        ));
    };
    let mut set = std::collections::BTreeSet::new();
    for item in items {
        let Value::Object(m) = item else {
            if item.is_null() {
                continue;
            }
            return Err(invalid(
                "vlanTrunk",
                format!("each entry must be an object, got {item}"),
            ));
        };
        let id = |k: &str, what: &str| -> Result<Option<u16>, CniError> {
            match opt_int(m, k).map_err(|e| e.context("vlanTrunk"))? {
                None => Ok(None),
                Some(n) if (1..=4094).contains(&n) => Ok(u16::try_from(n).ok()),
                Some(n) => Err(invalid(
                    "vlanTrunk",
                    format!("incorrect trunk {what} parameter {n} (must be between 1 and 4094)"),
                )),
            }
        };
        match (id("minID", "minID")?, id("maxID", "maxID")?) {
            (Some(lo), Some(hi)) => {
                if hi < lo {
                    return Err(invalid(
                        "vlanTrunk",
                        format!("minID {lo} is greater than maxID {hi}"),
                    ));
                }
                set.extend(lo..=hi);
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "vlanTrunk",
                    "minID and maxID should be configured simultaneously, minID is missing",
                ));
            }
            (Some(_), None) => {
                return Err(invalid(
                    "vlanTrunk",
                    "minID and maxID should be configured simultaneously, maxID is missing",
                ));
            }
            (None, None) => {}
        }
        if let Some(single) = id("id", "id")? {
            set.insert(single);
        }
    }
    Ok(set.into_iter().collect())
}

/// The container MAC with the reference's precedence:
/// `runtimeConfig.mac` > `args.cni.mac` > `CNI_ARGS MAC=`.
fn mac_option(
    obj: &Map<String, Value>,
    env_mac: Option<&str>,
) -> Result<Option<[u8; 6]>, CniError> {
    let nested = |outer: &str, inner: &[&str]| -> Result<Option<String>, CniError> {
        let mut cur = match obj.get(outer) {
            None | Some(Value::Null) => return Ok(None),
            Some(v) => v,
        };
        for k in inner {
            cur = match cur.get(k) {
                None | Some(Value::Null) => return Ok(None),
                Some(v) => v,
            };
        }
        match cur {
            Value::String(s) if s.is_empty() => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            other => Err(invalid(
                &format!("{outer}.{}", inner.join(".")),
                format!("must be a MAC address string, got {other}"),
            )),
        }
    };
    let (key, text) = if let Some(m) = nested("runtimeConfig", &["mac"])? {
        ("runtimeConfig.mac", m)
    } else if let Some(m) = nested("args", &["cni", "mac"])? {
        ("args.cni.mac", m)
    } else if let Some(m) = env_mac.filter(|m| !m.is_empty()) {
        ("CNI_ARGS MAC", m.to_owned())
    } else {
        return Ok(None);
    };
    let mac = rnet_netlink::parse_mac(&text).map_err(|_| {
        invalid(
            key,
            format!("{text:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"),
        )
    })?;
    if mac[0] & 1 != 0 {
        return Err(invalid(
            key,
            format!("{text:?} is a multicast address; a container needs a unicast MAC"),
        ));
    }
    Ok(Some(mac))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<BridgeConf, CniError> {
        let ipam = v
            .get("ipam")
            .and_then(|i| i.get("type"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        BridgeConf::parse(v.as_object().unwrap(), None, ipam)
    }

    fn err(v: Value) -> CniError {
        parse(v).expect_err("must be rejected")
    }

    #[test]
    fn defaults() {
        let c = parse(json!({"name":"n","type":"bridge"})).unwrap();
        assert_eq!(c.bridge, "cni0");
        assert!(!c.is_gateway && !c.ip_masq && !c.hairpin && !c.vlan_filtering());
        assert_eq!(c.mtu, None);
        assert_eq!(
            c.state_dir,
            PathBuf::from(DEFAULT_STATE_ROOT).join("bridge")
        );
        assert_eq!(c.mac, None);
        assert_eq!(c.ipam_type, None);
    }

    #[test]
    fn every_option() {
        let c = parse(json!({
            "bridge":"br9","isDefaultGateway":true,"forceAddress":true,"ipMasq":true,
            "ipMasqBackend":"nftables","mtu":1400,"hairpinMode":true,"vlan":10,
            "vlanTrunk":[{"id":20},{"minID":30,"maxID":32},{"id":31}],"preserveDefaultVlan":true,
            "enabledad":true,"macspoofchk":true,"portIsolation":true,"isolation":true,
            "ipv6LinkLocal":true,"rnetStateDir":"/tmp/x","ipam":{"type":"host-local"},"somethingUnknown":{"a":1},
            "runtimeConfig":{"mac":"0a:58:0a:f4:00:05"}
        }))
        .unwrap();
        assert_eq!(c.bridge, "br9");
        assert!(c.is_gateway, "isDefaultGateway implies isGateway");
        assert!(c.is_default_gateway && c.force_address && c.ip_masq && c.hairpin);
        assert_eq!(c.ip_masq_backend, Some(MasqBackend::Nftables));
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(c.vlan, 10);
        assert_eq!(c.vlan_trunk, vec![20, 30, 31, 32]);
        assert!(c.vlan_filtering());
        assert!(c.preserve_default_vlan && c.enable_dad && c.macspoofchk);
        assert!(c.ipv6_link_local);
        assert!(c.port_isolation && c.isolation);
        assert_eq!(c.mac, Some([0x0a, 0x58, 0x0a, 0xf4, 0, 5]));
        assert_eq!(c.state_dir, PathBuf::from("/tmp/x/bridge"));
        assert_eq!(c.ipam_type.as_deref(), Some("host-local"));
        let c = parse(json!({"ipMasqBackend":"iptables","mtu":0,"vlanTrunk":[]})).unwrap();
        assert_eq!(c.ip_masq_backend, Some(MasqBackend::Iptables));
        assert_eq!(c.mtu, None);
        assert!(
            c.vlan_filtering(),
            "an empty vlanTrunk still turns filtering on"
        );
    }

    #[test]
    fn invalid_values_are_error_7_naming_the_option() {
        let cases = [
            (json!({"isGateway":"yes"}), "isGateway"),
            (json!({"ipMasq":1}), "ipMasq"),
            (json!({"hairpinMode":"true"}), "hairpinMode"),
            (json!({"bridge":5}), "bridge"),
            (json!({"bridge":"a-very-long-bridge-name"}), "bridge"),
            (json!({"bridge":"a/b"}), "bridge"),
            (json!({"mtu":"1500"}), "mtu"),
            (json!({"mtu":-1}), "mtu"),
            (json!({"mtu":70000}), "mtu"),
            (json!({"mtu":1400.5}), "mtu"),
            (json!({"vlan":4095}), "vlan"),
            (json!({"vlan":-1}), "vlan"),
            (json!({"vlanTrunk":{"id":1}}), "vlanTrunk"),
            (json!({"vlanTrunk":[{"id":0}]}), "id parameter"),
            (json!({"vlanTrunk":[{"id":4095}]}), "id parameter"),
            (
                json!({"vlanTrunk":[{"minID":0,"maxID":5}]}),
                "minID parameter",
            ),
            (
                json!({"vlanTrunk":[{"minID":5,"maxID":4095}]}),
                "maxID parameter",
            ),
            (
                json!({"vlanTrunk":[{"minID":9,"maxID":5}]}),
                "greater than maxID",
            ),
            (json!({"vlanTrunk":[{"maxID":5}]}), "minID is missing"),
            (json!({"vlanTrunk":[{"minID":5}]}), "maxID is missing"),
            (json!({"ipMasqBackend":"ebtables"}), "ipMasqBackend"),
            (json!({"enabledad":"no"}), "enabledad"),
            (json!({"macspoofchk":0}), "macspoofchk"),
            (json!({"portIsolation":[]}), "portIsolation"),
            (
                json!({"disableContainerInterface":"x"}),
                "disableContainerInterface",
            ),
            (json!({"preserveDefaultVlan":2}), "preserveDefaultVlan"),
            (json!({"forceAddress":"x"}), "forceAddress"),
            (json!({"promiscMode":"x"}), "promiscMode"),
            (json!({"isDefaultGateway":"x"}), "isDefaultGateway"),
            (json!({"isolation":"x"}), "isolation"),
            (json!({"ipv6LinkLocal":1}), "ipv6LinkLocal"),
            (json!({"rnetStateDir":"relative/dir"}), "rnetStateDir"),
            (json!({"runtimeConfig":{"mac":"zz"}}), "runtimeConfig.mac"),
            (
                json!({"runtimeConfig":{"mac":"01:00:5e:00:00:01"}}),
                "multicast",
            ),
            (json!({"args":{"cni":{"mac":7}}}), "args.cni.mac"),
            (json!({"hairpinMode":true,"promiscMode":true}), "hairpin"),
            (
                json!({"disableContainerInterface":true,"ipam":{"type":"host-local"}}),
                "disableContainerInterface",
            ),
        ];
        for (conf, needle) in cases {
            let e = err(conf.clone());
            assert_eq!(e.code, 7, "{conf}: {e}");
            assert!(
                e.msg.contains(needle),
                "{conf}: {:?} lacks {needle:?}",
                e.msg
            );
        }
    }

    #[test]
    fn mac_precedence() {
        let obj = json!({"args":{"cni":{"mac":"02:00:00:00:00:02"}},
                         "runtimeConfig":{"mac":"02:00:00:00:00:01"}});
        let c = BridgeConf::parse(obj.as_object().unwrap(), Some("02:00:00:00:00:03"), None);
        assert_eq!(c.unwrap().mac, Some([2, 0, 0, 0, 0, 1]));
        let obj = json!({"args":{"cni":{"mac":"02:00:00:00:00:02"}}});
        let c = BridgeConf::parse(obj.as_object().unwrap(), Some("02:00:00:00:00:03"), None);
        assert_eq!(c.unwrap().mac, Some([2, 0, 0, 0, 0, 2]));
        let c = BridgeConf::parse(&Map::new(), Some("02:00:00:00:00:03"), None);
        assert_eq!(c.unwrap().mac, Some([2, 0, 0, 0, 0, 3]));
        let e = BridgeConf::parse(&Map::new(), Some("nope"), None).unwrap_err();
        assert!(e.msg.contains("CNI_ARGS MAC"), "{}", e.msg);
    }

    #[test]
    fn null_means_absent() {
        let c = parse(json!({"bridge":null,"mtu":null,"vlan":null,"vlanTrunk":null,"ipMasq":null}))
            .unwrap();
        assert_eq!(c.bridge, "cni0");
        assert!(!c.vlan_filtering());
    }
}
