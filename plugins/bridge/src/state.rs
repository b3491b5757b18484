//! Names and per-attachment state.
//!
//! * The host-side veth name is a pure function of the attachment
//!   (`"veth"` + 11 hex digits of FNV-1a-64 of `"<containerID>/<ifname>"`), so
//!   DEL finds it without the container namespace and without a dump.
//! * The veth carries the alias `"<network>/<containerID>/<ifname>"`: a name
//!   collision is detected (the alias differs), and GC finds every veth rnet
//!   made for a network in one link dump. The network is part of the alias
//!   (and of the nft element comments) because GC is per network: a GC of
//!   network A must never remove what belongs to network B, even on a shared
//!   bridge.
//! * The state file `<stateDir>/<network>/<containerID>_<ifname>.json` is an
//!   intent log written before anything is created and updated once the
//!   addresses are known; DEL and GC work from it in O(1) and fall back to the
//!   deterministic name and `prevResult` when it is missing.

use ipnet::IpNet;
use rnet_cni::CniError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// FNV-1a, 64 bit.
fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The host-side veth name of attachment (`container_id`, `ifname`): 15 bytes.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let h = fnv1a64(format!("{container_id}/{ifname}").as_bytes());
    let hex = format!("{h:016x}");
    format!("veth{}", &hex[..11])
}

/// The tag of an attachment: veth alias and nft element comment.
pub fn attachment_tag(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{network}/{container_id}/{ifname}")
}

/// Is host link `l` (found under the attachment's deterministic veth name)
/// this attachment's? Its alias says so; a veth with that name and no alias
/// is one whose ADD was killed between creating the pair and setting the
/// alias (the kernel takes the alias in a second request), also ours.
pub fn veth_is_ours(l: &rnet_netlink::Link, tag: &str) -> bool {
    l.kind.as_deref().is_none_or(|k| k == "veth")
        && match l.alias.as_deref() {
            Some(a) => a == tag,
            None => true,
        }
}

/// Splits a tag back into (network, container ID, ifname).
pub fn parse_tag(tag: &str) -> Option<(&str, &str, &str)> {
    let (network, rest) = tag.split_once('/')?;
    let (cid, ifname) = rest.rsplit_once('/')?;
    (!network.is_empty() && !cid.is_empty() && !ifname.is_empty()).then_some((network, cid, ifname))
}

/// What one attachment created, as recorded on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentState {
    /// Network name.
    pub network: String,
    /// Container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name in the container.
    pub ifname: String,
    /// The bridge.
    pub bridge: String,
    /// Host-side veth name.
    #[serde(rename = "hostVeth")]
    pub host_veth: String,
    /// Container MAC (for the spoof check).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// Container addresses (known after IPAM).
    #[serde(default)]
    pub ips: Vec<IpNet>,
    /// Masquerade elements installed for `ips`.
    #[serde(default)]
    pub masq: bool,
    /// Spoof-check element installed.
    #[serde(default)]
    pub spoofchk: bool,
    /// The bridge is isolated (`isolation`).
    #[serde(default)]
    pub isolated: bool,
}

impl AttachmentState {
    /// The tag of this attachment.
    pub fn tag(&self) -> String {
        attachment_tag(&self.network, &self.container_id, &self.ifname)
    }
}

/// The directory holding a network's state files.
pub fn network_dir(state_dir: &Path, network: &str) -> PathBuf {
    rnet_plugin::state::network_dir(state_dir, network)
}

/// The state file of one attachment.
pub fn state_path(state_dir: &Path, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    rnet_plugin::state::path(state_dir, network, container_id, ifname)
}

/// Writes the state file atomically.
pub fn write_state(path: &Path, st: &AttachmentState) -> Result<(), CniError> {
    rnet_plugin::state::write(path, st, "attachment state")
}

/// Reads a state file; `Ok(None)` if it does not exist. A file that cannot be
/// decoded is reported as `Err` with the path (callers that must be lenient,
/// DEL and GC, log it and fall back).
pub fn read_state(path: &Path) -> Result<Option<AttachmentState>, String> {
    rnet_plugin::state::read(path, "state file")
}

/// Removes a state file; a missing file is fine.
pub fn remove_state(path: &Path) -> Result<(), String> {
    rnet_plugin::state::remove(path, "state file")
}

/// All state files of a network (for GC), as (path, decoded state or error).
pub fn list_states(
    state_dir: &Path,
    network: &str,
) -> Vec<(PathBuf, Result<AttachmentState, String>)> {
    let dir = network_dir(state_dir, network);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ent in rd.flatten() {
        let p = ent.path();
        if p.extension().is_none_or(|e| e != "json") {
            continue;
        }
        match read_state(&p) {
            Ok(Some(st)) => out.push((p, Ok(st))),
            Ok(None) => {}
            Err(e) => out.push((p, Err(e))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn veth_names() {
        let a = host_veth_name("abc", "eth0");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("veth"));
        assert!(a[4..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, host_veth_name("abc", "eth0"), "deterministic");
        assert_ne!(a, host_veth_name("abc", "eth1"));
        assert_ne!(a, host_veth_name("abd", "eth0"));
        // FNV-1a-64 reference value: fnv1a64("") = offset basis.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn tags() {
        let t = attachment_tag("net1", "c-1", "eth0");
        assert_eq!(parse_tag(&t), Some(("net1", "c-1", "eth0")));
        assert_eq!(parse_tag("x"), None);
        assert_eq!(parse_tag("a//b"), None);
    }

    #[test]
    fn state_roundtrip() {
        let d = tempfile::tempdir().unwrap();
        let p = state_path(d.path(), "n", "c", "eth0");
        assert_eq!(read_state(&p).unwrap(), None);
        let st = AttachmentState {
            network: "n".into(),
            container_id: "c".into(),
            ifname: "eth0".into(),
            bridge: "br0".into(),
            host_veth: host_veth_name("c", "eth0"),
            ips: vec!["10.0.0.2/24".parse().unwrap()],
            masq: true,
            ..AttachmentState::default()
        };
        write_state(&p, &st).unwrap();
        assert_eq!(read_state(&p).unwrap(), Some(st.clone()));
        let all = list_states(d.path(), "n");
        assert_eq!(all.len(), 1);
        std::fs::write(d.path().join("n/bad.json"), "{").unwrap();
        assert_eq!(list_states(d.path(), "n").len(), 2);
        remove_state(&p).unwrap();
        remove_state(&p).unwrap();
        assert_eq!(read_state(&p).unwrap(), None);
    }
}
