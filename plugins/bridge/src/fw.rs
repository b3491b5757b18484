//! nftables for the bridge plugin: masquerade (`ipMasq`), isolation between
//! rnet bridges (`isolation`) and the MAC spoof check (`macspoofchk`).
//!
//! The rules never change per container; they look up named sets (see
//! [`inet_table`] and [`bridge_table`]). One ADD is one netlink batch adding
//! the attachment's elements (tagged with its comment) and the shared bridge
//! elements (idempotent adds); one DEL is one batch deleting the attachment's
//! elements (lenient). No `nft` exec on the hot path.
//!
//! The tables themselves are written by the slow path only: when a batch
//! fails with `ENOENT` (first use on this host, or someone ran
//! `nft flush ruleset`), the table is rendered through `rnet-nft`'s model and
//! applied with one `nft -f -`, under a lock so concurrent ADDs do not apply
//! it twice; then every element recorded in the state files is re-added
//! (recovery after a flush), and the batch is retried.
//!
//! Element comments are the attachment tag `<network>/<containerID>/<ifname>`
//! (hashed when longer than nft's 128-byte comment limit), so GC can tell the
//! elements of one network from another's.

use crate::state::{AttachmentState, parse_tag};
use ipnet::IpNet;
use rnet_cni::{CniError, code};
use rnet_nft::rnet::Journal;
pub use rnet_nft::rnet::{TABLE, bridge_table, comment_for, inet_table, sets};
use rnet_nft::{Batch, Element, Family, KeyPart, Nft, NftError};
use rnet_plugin::nft_error;
use std::collections::HashSet;
use std::path::Path;

/// The journal's name for this plugin (`<stateRoot>/nft/bridge/`).
pub const JOURNAL: &str = "bridge";

/// What one attachment asks of the firewall.
#[derive(Debug, Clone)]
pub struct FwAttachment<'a> {
    /// The attachment tag (element comment).
    pub tag: &'a str,
    /// Its bridge.
    pub bridge: &'a str,
    /// Its host veth.
    pub host_veth: &'a str,
    /// Addresses to masquerade (empty: none).
    pub masq: &'a [IpNet],
    /// The bridge is isolated from other rnet bridges.
    pub isolation: bool,
    /// Drop frames from `host_veth` whose source MAC is not this one.
    pub spoof_mac: Option<[u8; 6]>,
    /// The bridge is new (it did not exist when this ADD looked, or has no
    /// port up): rnet's tables may not exist yet (a first ADD on this host),
    /// so their presence is checked before committing.
    pub new_bridge: bool,
}

/// The per-attachment elements installed (what DEL removes; the shared
/// bridge elements stay).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    /// Attachment tag.
    pub tag: String,
    /// Masquerade addresses.
    pub masq: Vec<IpNet>,
    /// Host veth with a spoof-check element.
    pub spoof_veth: Option<String>,
    /// The masquerade addresses are unknown (no state, no prevResult): find
    /// the elements by their tag (a set listing; rare).
    pub scan: bool,
}

impl Installed {
    /// Union of two installs of the same attachment.
    pub fn merge(mut self, other: Installed) -> Installed {
        self.masq.extend(other.masq);
        self.spoof_veth = self.spoof_veth.or(other.spoof_veth);
        self.scan |= other.scan;
        self
    }

    /// What a state file says was installed.
    pub fn from_state(st: &AttachmentState) -> Installed {
        Installed {
            tag: st.tag(),
            masq: if st.masq { st.ips.clone() } else { Vec::new() },
            spoof_veth: st.spoofchk.then(|| st.host_veth.clone()),
            scan: false,
        }
    }

    /// Nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.masq.is_empty() && self.spoof_veth.is_none() && !self.scan
    }
}

fn nft_err(what: impl std::fmt::Display) -> impl FnOnce(NftError) -> CniError {
    move |e| CniError::new(code::NFTABLES, format!("{what}: {e}"))
}

fn ifname(s: &str) -> KeyPart {
    KeyPart::IfName(s.to_owned())
}

fn addr_element(ip: &IpNet, comment: &str) -> (bool, Element) {
    match ip.addr() {
        std::net::IpAddr::V4(a) => (true, Element::new(vec![KeyPart::Ipv4(a)]).comment(comment)),
        std::net::IpAddr::V6(a) => (false, Element::new(vec![KeyPart::Ipv6(a)]).comment(comment)),
    }
}

/// Elements of the `inet` table for one attachment: (set, elements).
fn inet_elements(
    bridge: &str,
    isolation: bool,
    masq: &[IpNet],
    comment: &str,
) -> Vec<(&'static str, Vec<Element>)> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for ip in masq {
        let (is4, e) = addr_element(ip, comment);
        if is4 { v4.push(e) } else { v6.push(e) }
    }
    let mut out = vec![
        (sets::BRIDGES, vec![Element::new(vec![ifname(bridge)])]),
        (
            sets::BRIDGE_SELF,
            vec![Element::new(vec![ifname(bridge), ifname(bridge)])],
        ),
    ];
    if isolation {
        out.push((sets::ISOLATED, vec![Element::new(vec![ifname(bridge)])]));
    }
    if !v4.is_empty() {
        out.push((sets::MASQ4, v4));
    }
    if !v6.is_empty() {
        out.push((sets::MASQ6, v6));
    }
    out
}

fn spoof_elements(veth: &str, mac: [u8; 6], comment: &str) -> Vec<(&'static str, Vec<Element>)> {
    vec![
        (
            sets::SPOOF_PORTS,
            vec![Element::new(vec![ifname(veth)]).comment(comment)],
        ),
        (
            sets::SPOOF_OK,
            vec![Element::new(vec![ifname(veth), KeyPart::Raw(mac.to_vec())]).comment(comment)],
        ),
    ]
}

fn batch_of(family: Family, adds: &[(&'static str, Vec<Element>)]) -> Batch {
    let mut b = Batch::new(family);
    for (set, els) in adds {
        b.add_elements(TABLE, set, els);
    }
    b
}

/// Commits `batch` through the shared slow path: if rnet's tables are
/// missing or outdated, they are restored with every plugin's journaled
/// elements (one `nft -f -`), then the batch is retried. With `probe` (a new
/// bridge: perhaps a fresh host) the tables' presence is checked first,
/// sparing the kernel's slow abort of a failed batch (an RCU grace period,
/// under the kernel's nf_tables commit mutex: concurrent ADDs would wait
/// for each other's).
fn commit(nft: &mut Nft, batch: &Batch, state_root: &Path, probe: bool) -> Result<(), CniError> {
    let family = batch.family();
    let commit = if probe {
        rnet_nft::rnet::commit_probing
    } else {
        rnet_nft::rnet::commit
    };
    commit(nft, batch, state_root).map_err(nft_error(format!(
        "adding elements to table {family} {TABLE}"
    )))
}

/// Installs the attachment's elements (and the shared ones it needs): one
/// batch per table family.
pub fn install(att: &FwAttachment<'_>, state_root: &Path) -> Result<Installed, CniError> {
    let comment = comment_for(att.tag);
    let spoof = att.spoof_mac.map(|mac| {
        batch_of(
            Family::Bridge,
            &spoof_elements(att.host_veth, mac, &comment),
        )
    });
    let inet = batch_of(
        Family::Inet,
        &inet_elements(att.bridge, att.isolation, att.masq, &comment),
    );
    // The journal first (an intent log): whoever restores rnet's tables after
    // a flush puts these elements back too.
    let mut journal = Journal::from_batch(JOURNAL, att.tag, &inet);
    if let Some(b) = &spoof {
        journal
            .entries
            .extend(Journal::from_batch(JOURNAL, att.tag, b).entries);
    }
    rnet_nft::rnet::journal_write(state_root, &journal)
        .map_err(nft_error("recording the attachment's nft elements"))?;
    let mut nft = Nft::new().map_err(nft_err("opening an nf_tables netlink socket"))?;
    if let Some(b) = &spoof {
        commit(&mut nft, b, state_root, att.new_bridge)?;
    }
    {
        let b = inet;
        if let Err(e) = commit(&mut nft, &b, state_root, att.new_bridge) {
            if let Some(mac) = att.spoof_mac {
                let mut undo = Batch::new(Family::Bridge);
                for (set, els) in spoof_elements(att.host_veth, mac, &comment) {
                    undo.delete_elements_lenient(TABLE, set, &els);
                }
                let _ = nft.commit(&undo);
            }
            return Err(e);
        }
    }
    Ok(Installed {
        tag: att.tag.to_owned(),
        masq: att.masq.to_vec(),
        spoof_veth: att.spoof_mac.map(|_| att.host_veth.to_owned()),
        scan: false,
    })
}

/// Deletes with a lenient batch; a missing table means nothing to delete
/// (checked first: a failed batch is slow, see
/// [`rnet_nft::rnet::commit_deletions`]).
fn commit_delete(nft: &mut Nft, b: &Batch) -> Result<(), CniError> {
    rnet_nft::rnet::commit_deletions(nft, b).map_err(nft_err(format!(
        "deleting elements from table {} {TABLE}",
        b.family()
    )))
}

/// Elements of `family set` whose comment is one of `comments`.
fn find_by_comment(
    nft: &mut Nft,
    family: Family,
    set: &str,
    keep: &dyn Fn(&str) -> bool,
) -> Result<Vec<Element>, CniError> {
    match nft.list_elements(family, TABLE, set) {
        Ok(els) => Ok(els
            .into_iter()
            .filter(|e| e.comment.as_deref().is_some_and(keep))
            .map(|e| Element::new(e.key))
            .collect()),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(nft_err(format!("listing {family} {TABLE} {set}"))(e)),
    }
}

/// Removes an attachment's elements; missing ones are fine.
pub fn remove(inst: &Installed, state_root: &Path) -> Result<(), CniError> {
    let mut nft = open()?;
    remove_with(&mut nft, inst, state_root)
}

/// An nf_tables socket in the calling thread's namespace.
pub fn open() -> Result<Nft, CniError> {
    Nft::new().map_err(nft_err("opening an nf_tables netlink socket"))
}

/// [`remove`] on a caller's socket. Closing a socket after deletions waits
/// for an RCU grace period (see `rnet-nft`'s measured costs), so DEL deletes
/// first and closes the socket last: the grace period passes while it does
/// its other work.
pub fn remove_with(nft: &mut Nft, inst: &Installed, state_root: &Path) -> Result<(), CniError> {
    let comment = comment_for(&inst.tag);
    let mut b = Batch::new(Family::Inet);
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for ip in &inst.masq {
        let (is4, e) = addr_element(ip, &comment);
        if is4 { v4.push(e) } else { v6.push(e) }
    }
    if inst.scan {
        let is_ours = |c: &str| c == comment;
        v4.extend(find_by_comment(nft, Family::Inet, sets::MASQ4, &is_ours)?);
        v6.extend(find_by_comment(nft, Family::Inet, sets::MASQ6, &is_ours)?);
    }
    if !v4.is_empty() {
        b.delete_elements_lenient(TABLE, sets::MASQ4, &v4);
    }
    if !v6.is_empty() {
        b.delete_elements_lenient(TABLE, sets::MASQ6, &v6);
    }
    let mut errs = Vec::new();
    if !b.is_empty() {
        if let Err(e) = commit_delete(nft, &b) {
            errs.push(e);
        }
    }
    if let Some(veth) = &inst.spoof_veth {
        let mut b = Batch::new(Family::Bridge);
        b.delete_elements_lenient(
            TABLE,
            sets::SPOOF_PORTS,
            &[Element::new(vec![ifname(veth)])],
        );
        // The MAC is not needed to find the pair: list by comment (the set
        // holds one element per checked container).
        let is_ours = |c: &str| c == comment;
        let ok = find_by_comment(nft, Family::Bridge, sets::SPOOF_OK, &is_ours)?;
        if !ok.is_empty() {
            b.delete_elements_lenient(TABLE, sets::SPOOF_OK, &ok);
        }
        if let Err(e) = commit_delete(nft, &b) {
            errs.push(e);
        }
    }
    if errs.is_empty() {
        // The elements are gone: so is the record that would restore them.
        if let Err(e) = rnet_nft::rnet::journal_remove(state_root, JOURNAL, &inst.tag) {
            errs.push(nft_error("removing the attachment's nft record")(e));
        }
    }
    match errs.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn exists(nft: &mut Nft, family: Family, set: &str, e: &Element) -> Result<bool, CniError> {
    match nft.element_exists(family, TABLE, set, e) {
        Ok(b) => Ok(b),
        Err(err) if err.is_not_found() => Ok(false),
        Err(err) => Err(nft_err(format!(
            "looking up an element of {family} {TABLE} {set}"
        ))(err)),
    }
}

/// What of `att` is missing from the kernel (for CHECK), one line each.
pub fn missing(att: &FwAttachment<'_>) -> Result<Vec<String>, CniError> {
    let comment = comment_for(att.tag);
    let mut nft = Nft::new().map_err(nft_err("opening an nf_tables netlink socket"))?;
    let mut out = Vec::new();
    let inet = inet_elements(att.bridge, att.isolation, att.masq, &comment);
    let spoof = att
        .spoof_mac
        .map(|mac| spoof_elements(att.host_veth, mac, &comment));
    for b in std::iter::once(batch_of(Family::Inet, &inet))
        .chain(spoof.as_ref().map(|s| batch_of(Family::Bridge, s)))
    {
        out.extend(
            rnet_nft::rnet::missing_feature_chains(&mut nft, &b)
                .map_err(nft_err("looking up rnet's feature chains"))?,
        );
    }
    for (set, els) in inet {
        for e in els {
            if !exists(&mut nft, Family::Inet, set, &e)? {
                out.push(format!(
                    "nft element {{ {} }} missing in inet {TABLE} {set}",
                    e.key_text()
                ));
            }
        }
    }
    if let Some(spoof) = spoof {
        for (set, els) in spoof {
            for e in els {
                if !exists(&mut nft, Family::Bridge, set, &e)? {
                    out.push(format!(
                        "nft element {{ {} }} missing in bridge {TABLE} {set}",
                        e.key_text()
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// GC: removes every element of `network` whose tag is not in `valid`, and
/// the shared elements of bridges that no longer exist.
pub fn gc(
    network: &str,
    valid: &HashSet<String>,
    bridge_exists: &mut dyn FnMut(&str) -> bool,
    state_root: &Path,
) -> Result<(), CniError> {
    for (path, j) in rnet_nft::rnet::journal_list(state_root, Some(JOURNAL)) {
        let stale =
            parse_tag(&j.tag).is_some_and(|(n, _, _)| n == network) && !valid.contains(&j.tag);
        if stale {
            let _ = std::fs::remove_file(path);
        }
    }
    // The port mapper's localhost guard records of bridges that are gone.
    for (_, j) in rnet_nft::rnet::journal_list(state_root, Some(rnet_nft::rnet::LOCALNET_JOURNAL)) {
        if !bridge_exists(&j.tag) {
            let _ = rnet_nft::rnet::localnet_forget(state_root, &j.tag);
        }
    }
    let mut nft = Nft::new().map_err(nft_err("opening an nf_tables netlink socket"))?;
    let stale = |c: &str| parse_tag(c).is_some_and(|(n, _, _)| n == network) && !valid.contains(c);
    let mut errs = Vec::new();
    let mut b = Batch::new(Family::Inet);
    for set in [sets::MASQ4, sets::MASQ6] {
        let els = find_by_comment(&mut nft, Family::Inet, set, &stale)?;
        if !els.is_empty() {
            b.delete_elements_lenient(TABLE, set, &els);
        }
    }
    match nft.list_elements(Family::Inet, TABLE, sets::BRIDGES) {
        Ok(brs) => {
            for e in brs {
                let Some(KeyPart::IfName(name)) = e.key.first() else {
                    continue;
                };
                if bridge_exists(name) {
                    continue;
                }
                let one = Element::new(vec![ifname(name)]);
                b.delete_elements_lenient(TABLE, sets::BRIDGES, std::slice::from_ref(&one));
                b.delete_elements_lenient(TABLE, sets::ISOLATED, std::slice::from_ref(&one));
                b.delete_elements_lenient(TABLE, sets::LOCALNET, std::slice::from_ref(&one));
                b.delete_elements_lenient(
                    TABLE,
                    sets::BRIDGE_SELF,
                    &[Element::new(vec![ifname(name), ifname(name)])],
                );
            }
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => errs.push(nft_err("listing inet rnet bridges")(e)),
    }
    if !b.is_empty() {
        if let Err(e) = commit_delete(&mut nft, &b) {
            errs.push(e);
        }
    }
    let mut b = Batch::new(Family::Bridge);
    for set in [sets::SPOOF_PORTS, sets::SPOOF_OK] {
        let els = find_by_comment(&mut nft, Family::Bridge, set, &stale)?;
        if !els.is_empty() {
            b.delete_elements_lenient(TABLE, set, &els);
        }
    }
    if !b.is_empty() {
        if let Err(e) = commit_delete(&mut nft, &b) {
            errs.push(e);
        }
    }
    // Filter chains of features nobody uses any more (isolation once no
    // isolated bridge is left, the spoof check once no port is checked).
    if let Err(e) = rnet_nft::rnet::prune_features(&mut nft) {
        errs.push(nft_error("removing unused feature chains")(e));
    }
    match errs.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use rnet_nft::Ruleset;

    #[test]
    fn golden_tables() {
        // The tables with the isolation and spoof-check elements in use:
        // their feature chains are rendered too.
        let mut rs = Ruleset::new().table(inet_table()).table(bridge_table());
        for t in &mut rs.tables {
            let (set, key) = match t.family {
                Family::Inet => (sets::ISOLATED, ifname("cni0")),
                _ => (sets::SPOOF_PORTS, ifname("veth0")),
            };
            t.elements_mut(set).unwrap().push(Element::new(vec![key]));
        }
        rnet_nft::rnet::with_features(&mut rs);
        let text = rs.render().unwrap();
        for line in [
            "ip saddr @masq4 oifname != @bridges ip daddr != 224.0.0.0/4 masquerade",
            "ip6 saddr @masq6 oifname != @bridges ip6 daddr != ff00::/8 masquerade",
            "iifname @isolated oifname @bridges iifname . oifname != @bridge_self drop",
            "iifname @bridges oifname @isolated iifname . oifname != @bridge_self drop",
            "iifname @spoofchk_ports iifname . ether saddr != @spoofchk_ok drop",
            "type ifname . ether_addr",
            "type nat hook postrouting priority srcnat; policy accept;",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn batches_render_as_nft_text() {
        let masq: Vec<IpNet> = vec![
            "10.1.0.2/24".parse().unwrap(),
            "fd00::2/64".parse().unwrap(),
        ];
        let b = batch_of(
            Family::Inet,
            &inet_elements("cni0", true, &masq, "n/c/eth0"),
        );
        let t = b.render();
        assert!(
            t.contains("add element inet rnet bridges { \"cni0\" }"),
            "{t}"
        );
        assert!(
            t.contains("add element inet rnet bridge_self { \"cni0\" . \"cni0\" }"),
            "{t}"
        );
        assert!(
            t.contains("add element inet rnet isolated { \"cni0\" }"),
            "{t}"
        );
        assert!(t.contains("masq4 { 10.1.0.2 comment \"n/c/eth0\" }"), "{t}");
        assert!(t.contains("masq6 { fd00::2 comment \"n/c/eth0\" }"), "{t}");
        let b = batch_of(
            Family::Bridge,
            &spoof_elements("vethx", [2, 0, 0, 0, 0, 1], "t"),
        );
        b.validate().unwrap();
    }

    #[test]
    fn long_tags_are_hashed() {
        let long = format!("n/{}/eth0", "a".repeat(200));
        let c = comment_for(&long);
        assert!(c.starts_with('#') && c.len() == 17);
        assert_eq!(comment_for("n/c/eth0"), "n/c/eth0");
    }
}
