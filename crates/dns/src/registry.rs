//! The registry: networks and the records registered on them. Pure data,
//! serialisable, with the three changes the control socket offers
//! (register, unregister, gc), and the validation of a registration
//! ([`Registry::prepare`]).
//!
//! The resolver itself does not hold a `Registry`: its
//! [`crate::snapshot::Index`] keeps the same data packed (one allocation per
//! record) with the same change semantics. `Registry` is the plain form for
//! readers of the files (the dnsname plugin) and the reference model the
//! index is tested against.

use crate::error::DnsError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// The domain used when a network configures none (`domainName`).
pub const DEFAULT_DOMAIN: &str = "dns.rnet";

fn default_domain() -> String {
    DEFAULT_DOMAIN.to_owned()
}

/// A DNS-enabled network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// The CNI network name.
    pub name: String,
    /// The domain names are served under (lowercase, no trailing dot).
    #[serde(default = "default_domain")]
    pub domain: String,
    /// Internal network: names from its containers are never forwarded
    /// upstream (CVE-2024-29018); external names get REFUSED.
    #[serde(default)]
    pub internal: bool,
    /// Addresses to listen on (the network's gateways).
    #[serde(default)]
    pub listen: Vec<IpAddr>,
    /// Upstream servers for this network; empty means the resolver's default.
    #[serde(default)]
    pub upstreams: Vec<SocketAddr>,
}

/// One attachment (a container's interface on a network).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttachmentId {
    /// Container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name in the container.
    pub ifname: String,
}

/// The names and addresses of one attachment on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSpec {
    /// Network name.
    pub network: String,
    /// The attachment.
    pub attachment: AttachmentId,
    /// Names: the container name first, then aliases (lowercase).
    pub names: Vec<String>,
    /// The attachment's addresses.
    pub addrs: Vec<IpAddr>,
}

/// All networks and records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    /// Networks by name.
    pub networks: BTreeMap<String, NetworkSpec>,
    /// Records by network, then attachment.
    pub records: BTreeMap<String, BTreeMap<AttachmentId, RecordSpec>>,
}

/// The registry's file form (`registry.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryFile {
    /// Format version (1).
    pub version: u32,
    /// Networks.
    pub networks: Vec<NetworkSpec>,
    /// Records.
    pub records: Vec<RecordSpec>,
}

/// What a change did, for the index to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A network was added or its settings changed.
    Network(NetworkSpec),
    /// A network lost its last record and was removed.
    NetworkGone(String),
    /// A record was added or replaced.
    Record(RecordSpec),
    /// A record was removed.
    RecordGone(String, AttachmentId),
}

/// Checks a DNS name (container name, alias or domain): 1..=253 bytes, labels
/// of 1..=63 letters, digits, `-` or `_`. Returns it lowercased without a
/// trailing dot.
pub fn normalize_name(name: &str) -> Result<String, DnsError> {
    let bad = |reason| DnsError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    let n = name.strip_suffix('.').unwrap_or(name);
    if n.is_empty() {
        return Err(bad("it is empty"));
    }
    if n.len() > 253 {
        return Err(bad("it is longer than 253 bytes"));
    }
    for label in n.split('.') {
        if label.is_empty() {
            return Err(bad(
                "it has an empty label (two dots in a row, or a leading dot)",
            ));
        }
        if label.len() > 63 {
            return Err(bad("a label is longer than 63 bytes"));
        }
        if !label
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err(bad("only letters, digits, '-', '_' and '.' are allowed"));
        }
    }
    Ok(n.to_ascii_lowercase())
}

impl NetworkSpec {
    /// Normalises the domain and checks the network.
    pub fn normalized(mut self) -> Result<NetworkSpec, DnsError> {
        if self.name.is_empty() {
            return Err(DnsError::Invalid("the network has no name".into()));
        }
        if self.domain.is_empty() {
            self.domain = default_domain();
        }
        self.domain = normalize_name(&self.domain)?;
        self.listen.sort();
        self.listen.dedup();
        Ok(self)
    }
}

impl Registry {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.values().map(BTreeMap::len).sum()
    }

    /// No records.
    pub fn is_empty(&self) -> bool {
        self.records.values().all(BTreeMap::is_empty)
    }

    /// Adds or replaces a record, creating or updating its network. Names are
    /// lowercased, duplicate names and addresses dropped.
    pub fn register(
        &mut self,
        network: NetworkSpec,
        attachment: AttachmentId,
        names: &[String],
        addrs: &[IpAddr],
    ) -> Result<Vec<Change>, DnsError> {
        let (network, rec) = Registry::prepare(network, attachment, names, addrs)?;
        Ok(self.commit(network, rec))
    }

    /// Validates and normalises a registration without changing anything.
    pub fn prepare(
        network: NetworkSpec,
        attachment: AttachmentId,
        names: &[String],
        addrs: &[IpAddr],
    ) -> Result<(NetworkSpec, RecordSpec), DnsError> {
        let network = network.normalized()?;
        if attachment.container_id.is_empty() || attachment.ifname.is_empty() {
            return Err(DnsError::Invalid(
                "the attachment needs a container ID and an interface name".into(),
            ));
        }
        // Deduplicated through a set: a registration with very many names
        // or addresses must not cost quadratic time under the resolver's lock.
        let mut seen = std::collections::HashSet::with_capacity(names.len());
        let mut clean: Vec<String> = Vec::with_capacity(names.len());
        for n in names {
            let n = normalize_name(n)?;
            if seen.insert(n.clone()) {
                clean.push(n);
            }
        }
        if clean.is_empty() {
            return Err(DnsError::Invalid(format!(
                "container {} on network {} has no name to register (no K8S_POD_NAME and no aliases)",
                attachment.container_id, network.name
            )));
        }
        let mut seen_ips = std::collections::HashSet::with_capacity(addrs.len());
        let mut ips: Vec<IpAddr> = Vec::with_capacity(addrs.len());
        for a in addrs {
            if seen_ips.insert(*a) {
                ips.push(*a);
            }
        }
        if ips.is_empty() {
            return Err(DnsError::Invalid(format!(
                "container {} on network {} has no address to register",
                attachment.container_id, network.name
            )));
        }
        // IPv4 first, then IPv6, each in the order given: the order the
        // resolver stores and lists them in.
        ips.sort_by_key(IpAddr::is_ipv6);
        let rec = RecordSpec {
            network: network.name.clone(),
            attachment,
            names: clean,
            addrs: ips,
        };
        Ok((network, rec))
    }

    /// Applies a prepared registration (cannot fail).
    pub fn commit(&mut self, network: NetworkSpec, rec: RecordSpec) -> Vec<Change> {
        let mut changes = Vec::new();
        if self.networks.get(&network.name) != Some(&network) {
            self.networks.insert(network.name.clone(), network.clone());
            changes.push(Change::Network(network.clone()));
        }
        let slot = self.records.entry(network.name.clone()).or_default();
        if slot.get(&rec.attachment) != Some(&rec) {
            slot.insert(rec.attachment.clone(), rec.clone());
            changes.push(Change::Record(rec));
        }
        changes
    }

    /// Removes a record; the network goes with its last record. Removing
    /// what is not there is not an error (CNI DEL is idempotent).
    pub fn unregister(&mut self, network: &str, attachment: &AttachmentId) -> Vec<Change> {
        let mut changes = Vec::new();
        if let Some(recs) = self.records.get_mut(network) {
            if recs.remove(attachment).is_some() {
                changes.push(Change::RecordGone(network.to_owned(), attachment.clone()));
            }
        }
        self.drop_if_empty(network, &mut changes);
        changes
    }

    /// Removes every record of `network` whose attachment is not in `valid`.
    pub fn gc(&mut self, network: &str, valid: &[AttachmentId]) -> Vec<Change> {
        let mut changes = Vec::new();
        if let Some(recs) = self.records.get_mut(network) {
            let stale: Vec<AttachmentId> = recs
                .keys()
                .filter(|a| !valid.contains(a))
                .cloned()
                .collect();
            for a in stale {
                recs.remove(&a);
                changes.push(Change::RecordGone(network.to_owned(), a));
            }
        }
        self.drop_if_empty(network, &mut changes);
        changes
    }

    fn drop_if_empty(&mut self, network: &str, changes: &mut Vec<Change>) {
        let empty = self.records.get(network).is_none_or(BTreeMap::is_empty);
        if empty {
            self.records.remove(network);
            if self.networks.remove(network).is_some() {
                changes.push(Change::NetworkGone(network.to_owned()));
            }
        }
    }

    /// The file form.
    pub fn to_file(&self) -> RegistryFile {
        RegistryFile {
            version: 1,
            networks: self.networks.values().cloned().collect(),
            records: self
                .records
                .values()
                .flat_map(|m| m.values().cloned())
                .collect(),
        }
    }

    /// Rebuilds from the file form (records of unknown networks are dropped).
    pub fn from_file(f: RegistryFile) -> Registry {
        let mut r = Registry::default();
        for n in f.networks {
            r.networks.insert(n.name.clone(), n);
        }
        for rec in f.records {
            if r.networks.contains_key(&rec.network) {
                r.records
                    .entry(rec.network.clone())
                    .or_default()
                    .insert(rec.attachment.clone(), rec);
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    pub(crate) fn net(name: &str) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            domain: String::new(),
            internal: false,
            listen: vec!["10.0.0.1".parse().unwrap()],
            upstreams: vec![],
        }
    }

    fn att(c: &str) -> AttachmentId {
        AttachmentId {
            container_id: c.into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn names_are_checked_and_lowercased() {
        assert_eq!(normalize_name("Web.Example.").unwrap(), "web.example");
        assert!(normalize_name("").is_err());
        assert!(normalize_name("a..b").is_err());
        assert!(normalize_name("a b").is_err());
        assert!(normalize_name(&"x".repeat(64)).is_err());
    }

    #[test]
    fn register_unregister_gc() {
        let mut r = Registry::default();
        let ch = r
            .register(
                net("n1"),
                att("c1"),
                &["Web".into(), "web".into(), "db".into()],
                &["10.0.0.2".parse().unwrap()],
            )
            .unwrap();
        assert_eq!(ch.len(), 2);
        assert_eq!(r.networks["n1"].domain, DEFAULT_DOMAIN);
        assert_eq!(r.records["n1"][&att("c1")].names, vec!["web", "db"]);
        // Same again: no change.
        let ch = r
            .register(
                net("n1"),
                att("c1"),
                &["web".into(), "db".into()],
                &["10.0.0.2".parse().unwrap()],
            )
            .unwrap();
        assert!(ch.is_empty());
        r.register(
            net("n1"),
            att("c2"),
            &["x".into()],
            &["10.0.0.3".parse().unwrap()],
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        let ch = r.gc("n1", &[att("c2")]);
        assert_eq!(ch, vec![Change::RecordGone("n1".into(), att("c1"))]);
        let ch = r.unregister("n1", &att("c2"));
        assert_eq!(ch.len(), 2);
        assert!(r.is_empty() && r.networks.is_empty());
        assert!(r.unregister("n1", &att("c2")).is_empty());
        assert!(
            r.register(net("n1"), att("c3"), &[], &["10.0.0.3".parse().unwrap()])
                .is_err()
        );
        assert!(
            r.register(net("n1"), att("c3"), &["a".into()], &[])
                .is_err()
        );
    }

    #[test]
    fn file_round_trip() {
        let mut r = Registry::default();
        r.register(
            net("n1"),
            att("c1"),
            &["a".into()],
            &["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
        )
        .unwrap();
        let text = serde_json::to_string(&r.to_file()).unwrap();
        let back = Registry::from_file(serde_json::from_str(&text).unwrap());
        assert_eq!(back, r);
    }
}
