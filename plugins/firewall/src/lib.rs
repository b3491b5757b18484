//! # rnet-firewall: the reference `firewall` plugin's schema, in nftables
//!
//! A chained plugin (Podman puts it after the port mapper). It accepts the
//! reference schema: `backend` (`iptables`, `firewalld` or empty: rnet always
//! uses nftables, in its own `inet rnet` table), `iptablesAdminChainName`
//! (validated: a chain name of at most 28 characters; rnet has no admin chain
//! in other tools' tables), `firewalldZone` (accepted), and `ingressPolicy`:
//!
//! * `open` (default): the container's addresses are admitted: they go into
//!   the sets `fw_allowed4/6`, whose established and related traffic rnet's
//!   `forward` chain (present while some bridge is isolated) accepts before
//!   its isolation rules;
//! * `same-bridge` (and `isolated`, treated alike): additionally the
//!   container's bridge is isolated from every other rnet bridge (the bridge
//!   joins the `isolated` set, as the bridge plugin's `isolation` option does).
//!
//! Each ADD is one netlink batch of set elements tagged with the attachment
//! (`<network>/<containerID>/<ifname>`), recorded first in rnet's element
//! journal so a firewall reload (`nft flush ruleset`) is repaired by the next
//! rnet plugin call or `rnet reload`. DEL removes the attachment's elements
//! (from `prevResult`, or by their tag when there is none) and is idempotent.
//! CHECK verifies the elements; GC removes those of attachments not in
//! `cni.dev/valid-attachments`. The reference supports cniVersion 0.4.0 and
//! later only; so does this plugin (older versions are error 1).
//!
//! An `accept` in rnet's table does not override a `drop` policy in another
//! table at the same hook: when iptables' `filter FORWARD` chain drops by
//! default (Docker sets that), the container's addresses are also admitted
//! there, through iptables' own executable (see [`xtables`]).

use ipnet::IpNet;
use rnet_cni::{Attachment, CmdArgs, CniError, CniResult, Plugin, code};
use rnet_nft::rnet::{Journal, TABLE, comment_for, sets};
use rnet_nft::{Batch, Element, Family, KeyPart, Nft};
use rnet_plugin::nft_error;
use serde_json::Value;
use std::path::PathBuf;

pub mod xtables;

/// The journal name of this plugin.
pub const JOURNAL: &str = "firewall";

/// The plugin.
pub struct FirewallPlugin;

/// The parsed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conf {
    /// Isolate the container's bridge from other bridges.
    pub same_bridge: bool,
    /// rnet's state root.
    pub state_root: PathBuf,
    /// `iptablesAdminChainName` (default `CNI-ADMIN`): jumped to first from
    /// rnet's iptables chain when another tool's `FORWARD` drops by default
    /// (see [`xtables`]).
    pub admin_chain: String,
}

fn bad(key: &str, why: impl std::fmt::Display) -> CniError {
    CniError::invalid_config(format!("firewall option {key:?}: {why}"))
}

/// Parses and validates the configuration.
pub fn parse(args: &CmdArgs) -> Result<Conf, CniError> {
    if !args.conf.version.has_check() {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "the firewall plugin needs cniVersion 0.4.0 or later, not {}",
                args.conf.version
            ),
        ));
    }
    let raw = &args.conf.raw;
    let s = |k: &str| -> Result<Option<&str>, CniError> {
        match raw.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(v)) => Ok(Some(v.as_str())),
            Some(other) => Err(bad(k, format!("must be a string, got {other}"))),
        }
    };
    match s("backend")? {
        None | Some("" | "iptables" | "firewalld" | "nftables") => {}
        Some(other) => {
            return Err(bad(
                "backend",
                format!("{other:?} is not iptables, firewalld or nftables"),
            ));
        }
    }
    let admin_chain = match s("iptablesAdminChainName")? {
        None | Some("") => xtables::DEFAULT_ADMIN_CHAIN.to_owned(),
        Some(c) => {
            if c.len() > 28
                || c.starts_with('-')
                || !c
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
            {
                return Err(bad(
                    "iptablesAdminChainName",
                    format!(
                        "{c:?} is not a valid chain name (at most 28 characters of letters, \
                         digits, '-', '_', '.', not starting with '-')"
                    ),
                ));
            }
            c.to_owned()
        }
    };
    let _ = s("firewalldZone")?;
    let same_bridge = match s("ingressPolicy")? {
        None | Some("" | "open") => false,
        Some("same-bridge" | "isolated") => true,
        Some(other) => {
            return Err(bad(
                "ingressPolicy",
                format!("{other:?} is not open, same-bridge or isolated"),
            ));
        }
    };
    let state_root = s("rnetStateDir")?
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("/run/rnet"), PathBuf::from);
    if !state_root.is_absolute() {
        return Err(bad("rnetStateDir", "must be an absolute path"));
    }
    Ok(Conf {
        same_bridge,
        state_root,
        admin_chain,
    })
}

fn tag(args: &CmdArgs) -> String {
    format!("{}/{}/{}", args.conf.name, args.container_id, args.ifname)
}

fn addr_element(ip: &IpNet, comment: &str) -> (&'static str, Element) {
    match ip.addr() {
        std::net::IpAddr::V4(a) => (
            sets::FW_ALLOWED4,
            Element::new(vec![KeyPart::Ipv4(a)]).comment(comment),
        ),
        std::net::IpAddr::V6(a) => (
            sets::FW_ALLOWED6,
            Element::new(vec![KeyPart::Ipv6(a)]).comment(comment),
        ),
    }
}

/// The bridge of the attachment: the first host-side interface of prevResult.
fn bridge_of(prev: &CniResult) -> Option<String> {
    prev.interfaces
        .iter()
        .find(|i| i.sandbox.is_empty())
        .map(|i| i.name.clone())
}

fn add_batch(args: &CmdArgs, conf: &Conf, prev: &CniResult) -> Batch {
    let comment = comment_for(&tag(args));
    let mut b = Batch::new(Family::Inet);
    for ip in &prev.ips {
        let (set, e) = addr_element(&ip.address, &comment);
        b.add_elements(TABLE, set, &[e]);
    }
    if conf.same_bridge {
        if let Some(br) = bridge_of(prev) {
            let one = Element::new(vec![KeyPart::IfName(br.clone())]);
            b.add_elements(TABLE, sets::BRIDGES, std::slice::from_ref(&one));
            b.add_elements(TABLE, sets::ISOLATED, &[one]);
            b.add_elements(
                TABLE,
                sets::BRIDGE_SELF,
                &[Element::new(vec![
                    KeyPart::IfName(br.clone()),
                    KeyPart::IfName(br),
                ])],
            );
        }
    }
    b
}

fn nft_err(what: impl std::fmt::Display) -> impl FnOnce(rnet_nft::NftError) -> CniError {
    move |e| CniError::new(code::NFTABLES, format!("{what}: {e}"))
}

/// Elements of this attachment found by their tag (when prevResult is gone).
fn by_tag(nft: &mut Nft, comment: &str) -> Vec<(&'static str, Element)> {
    let mut out = Vec::new();
    for set in [sets::FW_ALLOWED4, sets::FW_ALLOWED6] {
        if let Ok(els) = nft.list_elements(Family::Inet, TABLE, set) {
            out.extend(
                els.into_iter()
                    .filter(|e| e.comment.as_deref() == Some(comment))
                    .map(|e| (set, Element::new(e.key))),
            );
        }
    }
    out
}

fn delete(nft: &mut Nft, els: &[(&'static str, Element)]) -> Result<(), CniError> {
    if els.is_empty() {
        return Ok(());
    }
    let mut b = Batch::new(Family::Inet);
    for (set, e) in els {
        b.delete_elements_lenient(TABLE, set, std::slice::from_ref(e));
    }
    rnet_nft::rnet::commit_deletions(nft, &b)
        .map_err(nft_err("removing the attachment's firewall elements"))
}

impl Plugin for FirewallPlugin {
    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let conf = parse(args)?;
        let Some(prev) = args.conf.prev_result.clone() else {
            return Err(CniError::invalid_config(
                "firewall is a chained plugin: prevResult is required (put it after the interface plugin)",
            ));
        };
        let b = add_batch(args, &conf, &prev);
        if !b.is_empty() {
            let journal = Journal::from_batch(JOURNAL, &tag(args), &b);
            rnet_nft::rnet::journal_write(&conf.state_root, &journal)
                .map_err(nft_error("recording firewall elements"))?;
            let mut nft = Nft::new().map_err(nft_err("opening an nf_tables socket"))?;
            rnet_nft::rnet::commit(&mut nft, &b, &conf.state_root)
                .map_err(nft_error("admitting the container's addresses"))?;
            // Another tool's FORWARD chain that drops by default would drop
            // the container's traffic whatever rnet's table accepts.
            let ips: Vec<IpNet> = prev.ips.iter().map(|i| i.address).collect();
            if let Err(e) = xtables::admit(&mut nft, &ips, &tag(args), &conf.admin_chain) {
                let _ = xtables::remove(&mut nft, &ips, &tag(args));
                let els: Vec<_> = ips
                    .iter()
                    .map(|ip| addr_element(ip, &comment_for(&tag(args))))
                    .collect();
                let _ = delete(&mut nft, &els);
                let _ = rnet_nft::rnet::journal_remove(&conf.state_root, JOURNAL, &tag(args));
                return Err(e);
            }
        }
        Ok(prev)
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = parse(args)?;
        let comment = comment_for(&tag(args));
        let mut nft = Nft::new().map_err(nft_err("opening an nf_tables socket"))?;
        let els: Vec<(&'static str, Element)> = match &args.conf.prev_result {
            Some(prev) if !prev.ips.is_empty() => prev
                .ips
                .iter()
                .map(|ip| addr_element(&ip.address, &comment))
                .collect(),
            _ => by_tag(&mut nft, &comment),
        };
        delete(&mut nft, &els)?;
        let ips: Vec<IpNet> = args
            .conf
            .prev_result
            .iter()
            .flat_map(|p| p.ips.iter().map(|i| i.address))
            .collect();
        xtables::remove(&mut nft, &ips, &tag(args))?;
        rnet_nft::rnet::journal_remove(&conf.state_root, JOURNAL, &tag(args))
            .map_err(|e| CniError::io(format!("removing the firewall record: {e}")))?;
        nft.close_in_background();
        Ok(())
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = parse(args)?;
        let Some(prev) = &args.conf.prev_result else {
            return Err(CniError::invalid_config("CHECK needs prevResult"));
        };
        let mut nft = Nft::new().map_err(nft_err("opening an nf_tables socket"))?;
        let mut missing = Vec::new();
        for op in add_batch(args, &conf, prev).ops() {
            for e in &op.elements {
                match nft.element_exists(Family::Inet, TABLE, &op.set, e) {
                    Ok(true) => {}
                    Ok(false) => {
                        missing.push(format!("{{ {} }} in inet {TABLE} {}", e.key_text(), op.set))
                    }
                    Err(err) if err.is_not_found() => {
                        missing.push(format!("set inet {TABLE} {}", op.set))
                    }
                    Err(err) => return Err(nft_err("checking firewall elements")(err)),
                }
            }
        }
        if missing.is_empty() {
            let ips: Vec<IpNet> = prev.ips.iter().map(|i| i.address).collect();
            xtables::check(&mut nft, &ips, &tag(args))
                .map_err(|e| CniError::new(code::CHECK_FAILED, e.msg))
        } else {
            Err(CniError::new(
                code::CHECK_FAILED,
                format!("firewall elements missing: {}", missing.join("; ")),
            ))
        }
    }

    fn gc(&self, args: &CmdArgs, valid: &[Attachment]) -> Result<(), CniError> {
        let conf = parse(args)?;
        let network = &args.conf.name;
        let keep: std::collections::HashSet<String> = valid
            .iter()
            .map(|a| comment_for(&format!("{network}/{}/{}", a.container_id, a.ifname)))
            .collect();
        let prefix = format!("{network}/");
        let mut nft = Nft::new().map_err(nft_err("opening an nf_tables socket"))?;
        let mut stale = Vec::new();
        for set in [sets::FW_ALLOWED4, sets::FW_ALLOWED6] {
            if let Ok(els) = nft.list_elements(Family::Inet, TABLE, set) {
                for e in els {
                    if e.comment
                        .as_deref()
                        .is_some_and(|c| c.starts_with(&prefix) && !keep.contains(c))
                    {
                        stale.push((set, Element::new(e.key)));
                    }
                }
            }
        }
        delete(&mut nft, &stale)?;
        let valid_tags: std::collections::HashSet<String> = valid
            .iter()
            .map(|a| format!("{network}/{}/{}", a.container_id, a.ifname))
            .collect();
        xtables::gc(&mut nft, network, &valid_tags)?;
        for (path, j) in rnet_nft::rnet::journal_list(&conf.state_root, Some(JOURNAL)) {
            if j.tag.starts_with(&prefix) && !keep.contains(&comment_for(&j.tag)) {
                let _ = std::fs::remove_file(path);
            }
        }
        // The isolation chain goes once no bridge is isolated any more.
        rnet_nft::rnet::prune_features(&mut nft)
            .map_err(nft_error("removing unused feature chains"))?;
        nft.close_in_background();
        Ok(())
    }
}
