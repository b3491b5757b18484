//! What one attachment puts into rnet's table: its port map elements and
//! its shared-set elements, computed from the config and `prevResult`, and
//! recorded in the attachment's state file so DEL, CHECK and GC need neither
//! `prevResult` nor `runtimeConfig`.

use crate::config::{Config, Proto, container_ips, host_interface};
use rnet_cni::{CniError, CniResult};
use rnet_nft::rnet::cond::{CondChain, CondFamily};
use rnet_nft::rnet::{TABLE, comment_for, sets};
use rnet_nft::{Batch, Element, Family, KeyPart};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// One published port of one address family.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortEntry {
    /// Protocol.
    pub proto: Proto,
    /// Bound host address (`None`: every local address).
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
    /// Host port.
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    /// Container address.
    pub addr: IpAddr,
    /// Container port.
    pub port: u16,
}

impl PortEntry {
    /// The map this entry lives in.
    pub fn map(&self) -> &'static str {
        match (self.addr.is_ipv4(), self.host_ip.is_some()) {
            (true, false) => sets::HOSTPORTS4,
            (false, false) => sets::HOSTPORTS6,
            (true, true) => sets::HOSTIP_PORTS4,
            (false, true) => sets::HOSTIP_PORTS6,
        }
    }

    /// The map key: `[hostIP .] proto . hostPort`.
    pub fn key(&self) -> Vec<KeyPart> {
        let mut k = Vec::with_capacity(3);
        if let Some(ip) = self.host_ip {
            k.push(ip_part(ip));
        }
        k.push(KeyPart::Proto(self.proto.number()));
        k.push(KeyPart::Port(self.host_port));
        k
    }

    /// The element, with `comment` (the attachment's tag).
    pub fn element(&self, comment: &str) -> Element {
        Element::new(self.key())
            .data(vec![ip_part(self.addr), KeyPart::Port(self.port)])
            .comment(comment)
    }

    /// `tcp/8080`, `udp 127.0.0.1:53`, `tcp [fd00::1]:80` for messages.
    pub fn describe(&self) -> String {
        match self.host_ip {
            None => format!(
                "{} port {} (every host address, IPv{})",
                self.proto.as_str(),
                self.host_port,
                if self.addr.is_ipv4() { 4 } else { 6 }
            ),
            Some(ip) => format!(
                "{} port {} on host address {ip}",
                self.proto.as_str(),
                self.host_port
            ),
        }
    }
}

fn ip_part(ip: IpAddr) -> KeyPart {
    match ip {
        IpAddr::V4(a) => KeyPart::Ipv4(a),
        IpAddr::V6(a) => KeyPart::Ipv6(a),
    }
}

/// Everything the port mapper installed for one attachment, as recorded on
/// disk: `<root>/portmap/<network>/<containerID>_<ifname>.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentState {
    /// Network name.
    pub network: String,
    /// Container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name in the container.
    pub ifname: String,
    /// The host-side interface (bridge), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// Container IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Addr>,
    /// Container IPv6 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    /// Port map entries.
    #[serde(default)]
    pub ports: Vec<PortEntry>,
    /// `hairpin4/6` elements installed (`snat` on and a bridge known).
    #[serde(default)]
    pub hairpin: bool,
    /// `published4/6` elements installed (ports published, not `rnetRouted`).
    #[serde(default)]
    pub published: bool,
    /// Canonical `conditionsV4` of the IPv4 ports (present only when there
    /// are such ports): they are translated only when these match.
    #[serde(
        rename = "conditionsV4",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cond4: Option<String>,
    /// Canonical `conditionsV6` of the IPv6 ports.
    #[serde(
        rename = "conditionsV6",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cond6: Option<String>,
}

/// The tag of an attachment: element comment, journal key.
pub fn attachment_tag(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{network}/{container_id}/{ifname}")
}

/// Splits a tag back into (network, container ID, ifname).
pub fn parse_tag(tag: &str) -> Option<(&str, &str, &str)> {
    let (network, rest) = tag.split_once('/')?;
    let (cid, ifname) = rest.rsplit_once('/')?;
    (!network.is_empty() && !cid.is_empty() && !ifname.is_empty()).then_some((network, cid, ifname))
}

impl AttachmentState {
    /// Computes the elements for an ADD (or a CHECK/DEL without state).
    /// Host ports are expanded one element per port; a mapping applies to
    /// each family the container has, unless its `hostIP` pins one.
    pub fn build(
        cfg: &Config,
        container_id: &str,
        ifname: &str,
        prev: Option<&CniResult>,
    ) -> Result<AttachmentState, CniError> {
        let (ipv4, ipv6) = prev.map_or((None, None), |p| container_ips(p, ifname));
        let bridge = prev.and_then(host_interface);
        let mut ports: Vec<PortEntry> = Vec::new();
        // Map and key of each entry in `ports` (its index): a range of 65,535
        // ports must not cost a scan of the list per port.
        let mut seen: HashMap<(&'static str, Vec<KeyPart>), usize> = HashMap::new();
        for m in &cfg.mappings {
            let addrs = [ipv4.map(IpAddr::V4), ipv6.map(IpAddr::V6)];
            for addr in addrs.into_iter().flatten() {
                if m.host_ip.is_some_and(|h| h.is_ipv4() != addr.is_ipv4()) {
                    continue;
                }
                for i in 0..m.count {
                    let e = PortEntry {
                        proto: m.proto,
                        host_ip: m.host_ip,
                        host_port: m.host_port.saturating_add(i),
                        addr,
                        port: m.container_port.saturating_add(i),
                    };
                    match seen.get(&(e.map(), e.key())).and_then(|&i| ports.get(i)) {
                        None => {
                            seen.insert((e.map(), e.key()), ports.len());
                            ports.push(e);
                        }
                        Some(x) if x == &e => {}
                        Some(_) => {
                            return Err(CniError::invalid_config(format!(
                                "portmap: runtimeConfig.portMappings: {} is listed twice with \
                                 different container ports; publish each host port once",
                                e.describe()
                            )));
                        }
                    }
                }
            }
        }
        let hairpin = cfg.snat && bridge.is_some() && (ipv4.is_some() || ipv6.is_some());
        let published = !cfg.routed && !ports.is_empty();
        let cond4 = cfg
            .conditions_v4
            .as_ref()
            .filter(|_| ports.iter().any(|p| p.addr.is_ipv4()))
            .map(|c| c.matches.clone());
        let cond6 = cfg
            .conditions_v6
            .as_ref()
            .filter(|_| ports.iter().any(|p| p.addr.is_ipv6()))
            .map(|c| c.matches.clone());
        Ok(AttachmentState {
            network: cfg.network.clone(),
            container_id: container_id.to_owned(),
            ifname: ifname.to_owned(),
            bridge,
            ipv4,
            ipv6,
            ports,
            hairpin,
            published,
            cond4,
            cond6,
        })
    }

    /// The condition set of `family`'s ports, if they have one. (Built from
    /// the recorded canonical text as is, so DEL names the chain ADD made.)
    pub fn cond_chain(&self, family: CondFamily) -> Option<CondChain> {
        let text = match family {
            CondFamily::V4 => self.cond4.as_ref(),
            CondFamily::V6 => self.cond6.as_ref(),
        }?;
        Some(CondChain {
            family,
            matches: text.clone(),
        })
    }

    /// The condition sets in use (at most one per family).
    pub fn cond_chains(&self) -> Vec<CondChain> {
        [CondFamily::V4, CondFamily::V6]
            .into_iter()
            .filter_map(|f| self.cond_chain(f))
            .collect()
    }

    /// Verdict-map elements of conditioned ports (`key : goto pmc4_<hash>`),
    /// grouped by map, in a fixed order. The ports themselves stay in the
    /// port maps ([`Self::port_elements`]): that is where a host port is
    /// claimed, conditioned or not.
    pub fn cond_elements(&self) -> Vec<(&'static str, Vec<Element>)> {
        let comment = comment_for(&self.tag());
        let mut out = Vec::new();
        for (map, family, bound) in [
            (sets::PM_CONDIP4, CondFamily::V4, true),
            (sets::PM_COND4, CondFamily::V4, false),
            (sets::PM_CONDIP6, CondFamily::V6, true),
            (sets::PM_COND6, CondFamily::V6, false),
        ] {
            let Some(c) = self.cond_chain(family) else {
                continue;
            };
            let els: Vec<Element> = self
                .ports
                .iter()
                .filter(|p| {
                    p.addr.is_ipv4() == (family == CondFamily::V4) && p.host_ip.is_some() == bound
                })
                .map(|p| Element::new(p.key()).verdict(c.verdict()).comment(&comment))
                .collect();
            if !els.is_empty() {
                out.push((map, els));
            }
        }
        out
    }

    /// The attachment tag.
    pub fn tag(&self) -> String {
        attachment_tag(&self.network, &self.container_id, &self.ifname)
    }

    /// Port map elements grouped by map, in a fixed order.
    pub fn port_elements(&self) -> Vec<(&'static str, Vec<Element>)> {
        let comment = comment_for(&self.tag());
        let mut out: Vec<(&'static str, Vec<Element>)> = Vec::new();
        for map in [
            sets::HOSTIP_PORTS4,
            sets::HOSTPORTS4,
            sets::HOSTIP_PORTS6,
            sets::HOSTPORTS6,
        ] {
            let els: Vec<Element> = self
                .ports
                .iter()
                .filter(|p| p.map() == map)
                .map(|p| p.element(&comment))
                .collect();
            if !els.is_empty() {
                out.push((map, els));
            }
        }
        out
    }

    /// Elements of the per-address sets (hairpin, published).
    pub fn set_elements(&self) -> Vec<(&'static str, Vec<Element>)> {
        let comment = comment_for(&self.tag());
        let mut out = Vec::new();
        if self.hairpin {
            if let Some(br) = &self.bridge {
                if let Some(a) = self.ipv4 {
                    out.push((
                        sets::HAIRPIN4,
                        vec![
                            Element::new(vec![KeyPart::IfName(br.clone()), KeyPart::Ipv4(a)])
                                .comment(&comment),
                        ],
                    ));
                }
                if let Some(a) = self.ipv6 {
                    out.push((
                        sets::HAIRPIN6,
                        vec![
                            Element::new(vec![KeyPart::IfName(br.clone()), KeyPart::Ipv6(a)])
                                .comment(&comment),
                        ],
                    ));
                }
            }
        }
        if self.published {
            if let Some(a) = self
                .ipv4
                .filter(|_| self.ports.iter().any(|p| p.addr.is_ipv4()))
            {
                out.push((
                    sets::PUBLISHED4,
                    vec![Element::new(KeyPart::Ipv4(a)).comment(&comment)],
                ));
            }
            if let Some(a) = self
                .ipv6
                .filter(|_| self.ports.iter().any(|p| p.addr.is_ipv6()))
            {
                out.push((
                    sets::PUBLISHED6,
                    vec![Element::new(KeyPart::Ipv6(a)).comment(&comment)],
                ));
            }
        }
        out
    }

    /// ADD: exclusive adds for the ports (a port already published fails
    /// with `EEXIST`), idempotent adds for the sets. One transaction.
    pub fn add_batch(&self) -> Batch {
        let mut b = Batch::new(Family::Inet);
        for (map, els) in self.port_elements() {
            b.add_elements_excl(TABLE, map, &els);
        }
        for (map, els) in self.cond_elements() {
            b.add_elements(TABLE, map, &els);
        }
        for (set, els) in self.set_elements() {
            b.add_elements(TABLE, set, &els);
        }
        if let Some(br) = self.localnet_bridge() {
            // Shared by every attachment on the bridge and never deleted by
            // DEL: `route_localnet` stays on (GC removes it with the bridge).
            b.add_elements(
                TABLE,
                sets::LOCALNET,
                &[Element::new(vec![KeyPart::IfName(br.to_owned())])],
            );
        }
        b
    }

    /// The bridge on which ADD turns `route_localnet` on (localhost
    /// publishing, `snat` with IPv4 ports), if any.
    pub fn localnet_bridge(&self) -> Option<&str> {
        self.bridge
            .as_deref()
            .filter(|_| self.hairpin && self.ports.iter().any(|p| p.addr.is_ipv4()))
    }

    /// DEL: lenient deletes of everything [`Self::add_batch`] adds.
    pub fn del_batch(&self) -> Batch {
        let mut b = Batch::new(Family::Inet);
        for (map, els) in self
            .port_elements()
            .into_iter()
            .chain(self.cond_elements())
            .chain(self.set_elements())
        {
            b.delete_elements_lenient(TABLE, map, &els);
        }
        b
    }

    /// Does the attachment install anything at all?
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty() && !self.hairpin && !self.published
    }
}

/// `<stateDir>/<network>`.
pub fn network_dir(state_dir: &Path, network: &str) -> PathBuf {
    rnet_plugin::state::network_dir(state_dir, network)
}

/// The state file of one attachment.
pub fn state_path(state_dir: &Path, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    rnet_plugin::state::path(state_dir, network, container_id, ifname)
}

/// Writes a state file atomically.
pub fn write_state(path: &Path, st: &AttachmentState) -> Result<(), CniError> {
    rnet_plugin::state::write(path, st, "portmap state")
}

/// Reads a state file; `Ok(None)` if missing; `Err` names a corrupt file.
pub fn read_state(path: &Path) -> Result<Option<AttachmentState>, String> {
    rnet_plugin::state::read(path, "portmap state file")
}

/// Removes a state file; missing is fine.
pub fn remove_state(path: &Path) -> Result<(), CniError> {
    rnet_plugin::state::remove(path, "portmap state file").map_err(CniError::io)
}

/// Every state file of `network`: (path, parsed or error).
pub fn list_states(
    state_dir: &Path,
    network: &str,
) -> Vec<(PathBuf, Result<AttachmentState, String>)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(network_dir(state_dir, network)) else {
        return out;
    };
    for f in rd.flatten() {
        let p = f.path();
        if p.extension().is_none_or(|e| e != "json") {
            continue;
        }
        match read_state(&p) {
            Ok(Some(st)) => out.push((p, Ok(st))),
            Ok(None) => {}
            Err(e) => out.push((p, Err(e))),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use rnet_cni::NetConf;

    fn build(mappings: &str) -> Result<AttachmentState, CniError> {
        let doc = format!(
            r#"{{"cniVersion":"1.0.0","name":"n","type":"portmap",
            "runtimeConfig":{{"portMappings":{mappings}}},
            "prevResult":{{"cniVersion":"1.0.0","ips":[{{"address":"10.88.0.2/16"}},{{"address":"fd00::2/64"}}]}}}}"#
        );
        let nc = NetConf::parse(doc.as_bytes()).unwrap();
        let cfg = Config::parse(&nc).unwrap();
        AttachmentState::build(&cfg, "c1", "eth0", nc.prev_result.as_ref())
    }

    // Found by the fuzz target portmap_config: `-p 1-65535:1-65535` took
    // minutes (each port was checked against every port before it).
    #[test]
    fn a_full_port_range_builds_in_linear_time() {
        let t = std::time::Instant::now();
        let st = build(r#"[{"hostPort":"1-65535","containerPort":"1-65535"}]"#).unwrap();
        assert_eq!(st.ports.len(), 2 * 65535);
        assert!(t.elapsed() < std::time::Duration::from_secs(20));
        // The same port twice is fine, with another container port it is not.
        let twice =
            r#"[{"hostPort":80,"containerPort":80},{"hostPort":"79-80","containerPort":"79-80"}]"#;
        assert_eq!(build(twice).unwrap().ports.len(), 4);
        let clash = r#"[{"hostPort":80,"containerPort":80},{"hostPort":80,"containerPort":81}]"#;
        assert_eq!(build(clash).unwrap_err().code, 7);
    }
}
