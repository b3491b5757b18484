//! ADD, DEL, CHECK, GC and STATUS. The nftables part is written against
//! [`Backend`] so it runs on [`rnet_nft::FakeBackend`] in tier-0 tests; the
//! `cmd_*` functions add the host side effects (sysctl, conntrack).

use crate::config::Config;
use crate::conntrack::{self, Target};
use crate::plan::{self, AttachmentState, PortEntry, parse_tag};
use rnet_cni::{Attachment, CmdArgs, CniError, CniResult, code};
use rnet_netlink::{Ipv4Conf, Netlink};
use rnet_nft::rnet::cond::{self, COND_MAPS, CondChain, CondChains};
use rnet_nft::rnet::{self as shared, Journal, RnetError, TABLE, comment_for, sets};
use rnet_nft::{Backend, Batch, Element, Family, KeyPart, Nft, Verdict};
use rnet_plugin::Trace;
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

/// The journal directory name of this plugin (`<root>/nft/portmap`).
pub const PLUGIN: &str = "portmap";

const PORT_MAPS: [&str; 4] = [
    sets::HOSTPORTS4,
    sets::HOSTPORTS6,
    sets::HOSTIP_PORTS4,
    sets::HOSTIP_PORTS6,
];
const ADDR_SETS: [&str; 4] = [
    sets::HAIRPIN4,
    sets::HAIRPIN6,
    sets::PUBLISHED4,
    sets::PUBLISHED6,
];

fn nft_err(what: impl std::fmt::Display) -> impl FnOnce(RnetError) -> CniError {
    rnet_plugin::nft_error(what)
}

fn open_nft() -> Result<Nft, CniError> {
    Nft::new().map_err(|e| {
        CniError::new(
            code::NFTABLES,
            format!("opening an nf_tables netlink socket: {e}"),
        )
    })
}

/// Installs `st`'s elements in one transaction (journal first). A host port
/// taken by another attachment is error 120 naming the port and its owner,
/// with nothing changed; elements left by an earlier ADD of the same
/// attachment are replaced.
///
/// Without conditions this is the hot path: one batch, no lock. With
/// `conditionsV4/V6` the nft lock is held from recording the condition
/// chains to the commit, so a concurrent DEL cannot remove a chain between
/// its creation and the elements that use it (see [`prune_chains`]).
pub fn install<B: Backend + CondChains + ?Sized>(
    b: &mut B,
    st: &AttachmentState,
    root: &Path,
) -> Result<(), CniError> {
    let batch = st.add_batch();
    if batch.is_empty() {
        return Ok(());
    }
    let tag = st.tag();
    shared::journal_write(root, &Journal::from_batch(PLUGIN, &tag, &batch))
        .map_err(nft_err("recording the port mapper's nft elements"))?;
    if let Some(br) = st.localnet_bridge() {
        shared::localnet_record(root, br)
            .map_err(nft_err("recording the bridge's localhost guard"))?;
    }
    let chains = st.cond_chains();
    if chains.is_empty() {
        return install_batch(b, st, &batch, root, false);
    }
    let _lock = shared::lock(root).map_err(nft_err("locking rnet's nft state"))?;
    let res =
        ensure_chains(b, &chains, root).and_then(|()| install_batch(b, st, &batch, root, true));
    if res.is_err() {
        // Chains made for this ADD alone must not stay behind.
        let names: Vec<String> = chains.iter().map(CondChain::name).collect();
        if let Err(e) = prune_locked(b, root, Some(&names)) {
            eprintln!(
                "rnet-portmap: cannot remove unused condition chains: {}",
                e.msg
            );
        }
    }
    res
}

/// Records and creates the condition chains that do not exist yet (lock held).
fn ensure_chains<B: Backend + CondChains + ?Sized>(
    b: &mut B,
    chains: &[CondChain],
    root: &Path,
) -> Result<(), CniError> {
    let nft = |what: String| {
        move |e: rnet_nft::NftError| CniError::new(code::NFTABLES, format!("{what}: {e}"))
    };
    for c in chains {
        cond::record_write(root, c).map_err(nft_err("recording a condition chain"))?;
    }
    if !shared::is_current(b).map_err(nft("checking rnet's nftables tables".into()))? {
        // Missing or outdated tables: the restore brings the recorded
        // chains along.
        shared::restore(b, root).map_err(nft_err("restoring rnet's nftables tables"))?;
    }
    for c in chains {
        let name = c.name();
        if !b
            .chain_exists(Family::Inet, TABLE, &name)
            .map_err(nft(format!("looking up chain {name}")))?
        {
            b.put_chain(&c.chain()).map_err(nft(format!(
                "creating the condition chain {name} ({}: {})",
                c.family.key(),
                c.matches
            )))?;
        }
    }
    Ok(())
}

fn install_batch<B: Backend + ?Sized>(
    b: &mut B,
    st: &AttachmentState,
    batch: &Batch,
    root: &Path,
    locked: bool,
) -> Result<(), CniError> {
    let what = || format!("publishing the ports of {}", st.tag());
    let commit = |b: &mut B, batch: &Batch| {
        if locked {
            shared::commit_locked(b, batch, root)
        } else {
            shared::commit(b, batch, root)
        }
    };
    match commit(b, batch) {
        Ok(()) => return Ok(()),
        Err(e) if e.is_exists() => {}
        Err(e) => return Err(nft_err(what())(e)),
    }
    let (ours, foreign) = conflicts(b, st)?;
    if let Some((entry, owner)) = foreign.first() {
        let who = match parse_tag(owner) {
            Some((net, cid, ifname)) => {
                format!("container {cid} (interface {ifname}, network {net})")
            }
            None => format!("attachment {owner:?}"),
        };
        return Err(CniError::new(
            code::PORT_TAKEN,
            format!(
                "{} is already published by {who}; choose another host port or remove that \
                 container first",
                entry.describe()
            ),
        ));
    }
    if ours.is_empty() {
        // EEXIST without a visible conflict: a same-key element with other
        // data in a shared set; report as is.
        return Err(CniError::new(
            code::NFTABLES,
            format!("{}: an element already exists with different data", what()),
        ));
    }
    // A repeated ADD of this attachment: replace its old elements.
    let mut del = Batch::new(Family::Inet);
    for (map, els) in &ours {
        del.delete_elements_lenient(TABLE, map, els);
    }
    commit(b, &del).map_err(nft_err(what()))?;
    commit(b, batch).map_err(nft_err(what()))
}

type Owned = Vec<(&'static str, Vec<Element>)>;

/// Elements of the port maps and condition maps that collide with `st`'s
/// ports: (ours, by key per map) and (foreign: entry and owner tag).
fn conflicts<B: Backend + ?Sized>(
    b: &mut B,
    st: &AttachmentState,
) -> Result<(Owned, Vec<(PortEntry, String)>), CniError> {
    let comment = comment_for(&st.tag());
    let mut ours: Owned = Vec::new();
    let mut foreign = Vec::new();
    // Keyed by the element key: linear in ports plus existing elements
    // (a 65,535-port range against a full map stays fast).
    type Wanted<'a> = std::collections::HashMap<Vec<KeyPart>, &'a PortEntry>;
    let mut wanted: Vec<(&'static str, Wanted<'_>)> = PORT_MAPS
        .into_iter()
        .map(|map| {
            let mine = st.ports.iter().filter(|p| p.map() == map);
            (map, mine.map(|p| (p.key(), p)).collect())
        })
        .collect();
    for (map, els) in st.cond_elements() {
        let keys: HashSet<&Vec<KeyPart>> = els.iter().map(|e| &e.key).collect();
        let mine = st
            .ports
            .iter()
            .filter(|p| cond_map(p) == map)
            .map(|p| (p.key(), p))
            .filter(|(k, _)| keys.contains(k))
            .collect();
        wanted.push((map, mine));
    }
    for (map, mine) in wanted {
        if mine.is_empty() {
            continue;
        }
        let existing = b.list_elements(Family::Inet, TABLE, map).map_err(|e| {
            CniError::new(code::NFTABLES, format!("listing inet {TABLE} {map}: {e}"))
        })?;
        let mut own = Vec::new();
        for e in existing {
            let Some(p) = mine.get(&e.key) else {
                continue;
            };
            match e.comment.as_deref() {
                Some(c) if c == comment => own.push(Element::new(e.key)),
                other => foreign.push(((*p).clone(), other.unwrap_or("(no owner tag)").to_owned())),
            }
        }
        if !own.is_empty() {
            ours.push((map, own));
        }
    }
    Ok((ours, foreign))
}

/// The condition map a conditioned port's verdict element lives in.
fn cond_map(p: &PortEntry) -> &'static str {
    match (p.addr.is_ipv4(), p.host_ip.is_some()) {
        (true, true) => sets::PM_CONDIP4,
        (true, false) => sets::PM_COND4,
        (false, true) => sets::PM_CONDIP6,
        (false, false) => sets::PM_COND6,
    }
}

/// Removes `st`'s elements (lenient; a missing table is restored first, see
/// [`shared::commit`]), then its journal, then its condition chains if no
/// other attachment uses them.
pub fn uninstall<B: Backend + CondChains + ?Sized>(
    b: &mut B,
    st: &AttachmentState,
    root: &Path,
) -> Result<(), CniError> {
    let batch = st.del_batch();
    if !batch.is_empty() {
        // Probing: after a flush, DELs that race would each fail a batch
        // first (slow, and serialised in the kernel).
        shared::commit_probing(b, &batch, root)
            .map_err(nft_err(format!("unpublishing the ports of {}", st.tag())))?;
    }
    shared::journal_remove(root, PLUGIN, &st.tag()).map_err(nft_err("removing the journal"))?;
    let names: Vec<String> = st.cond_chains().iter().map(CondChain::name).collect();
    if names.is_empty() {
        return Ok(());
    }
    prune_chains(b, root, Some(&names))
}

/// Deletes the condition chains among `names` (every recorded one if
/// `None`) that no element of the condition maps refers to any more, and
/// their records. Takes the nft lock: an ADD holds it from creating a chain
/// to committing the elements that use it.
pub fn prune_chains<B: Backend + CondChains + ?Sized>(
    b: &mut B,
    root: &Path,
    names: Option<&[String]>,
) -> Result<(), CniError> {
    let _lock = shared::lock(root).map_err(nft_err("locking rnet's nft state"))?;
    prune_locked(b, root, names)
}

fn prune_locked<B: Backend + CondChains + ?Sized>(
    b: &mut B,
    root: &Path,
    names: Option<&[String]>,
) -> Result<(), CniError> {
    let mut used: HashSet<String> = HashSet::new();
    for map in COND_MAPS {
        match b.list_elements(Family::Inet, TABLE, map) {
            Ok(els) => used.extend(
                els.iter()
                    .filter_map(|e| e.verdict.as_ref())
                    .filter_map(|v| match v {
                        Verdict::Goto(c) | Verdict::Jump(c) => Some(c.clone()),
                        _ => None,
                    }),
            ),
            // No tables (flushed): keep every record for the restore.
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => {
                return Err(CniError::new(
                    code::NFTABLES,
                    format!("listing inet {TABLE} {map}: {e}"),
                ));
            }
        }
    }
    let candidates: Vec<String> = match names {
        Some(n) => n.to_vec(),
        None => cond::records(root).iter().map(CondChain::name).collect(),
    };
    for name in candidates {
        if used.contains(&name) {
            continue;
        }
        b.remove_chain(&name).map_err(|e| {
            CniError::new(
                code::NFTABLES,
                format!("removing the unused condition chain {name}: {e}"),
            )
        })?;
        cond::record_remove(root, &name).map_err(nft_err("removing a condition chain record"))?;
    }
    Ok(())
}

/// Elements carrying `keep(comment)` in every port map and address set,
/// found by listing them (DEL without any record, GC).
pub fn scan<B: Backend + ?Sized>(
    b: &mut B,
    keep: &dyn Fn(&str) -> bool,
) -> Result<Batch, CniError> {
    let mut del = Batch::new(Family::Inet);
    for set in PORT_MAPS.into_iter().chain(COND_MAPS).chain(ADDR_SETS) {
        let els = match b.list_elements(Family::Inet, TABLE, set) {
            Ok(v) => v,
            Err(e) if e.is_not_found() => continue,
            Err(e) => {
                return Err(CniError::new(
                    code::NFTABLES,
                    format!("listing inet {TABLE} {set}: {e}"),
                ));
            }
        };
        let mine: Vec<Element> = els
            .into_iter()
            .filter(|e| e.comment.as_deref().is_some_and(keep))
            .map(|e| Element::new(e.key))
            .collect();
        del.delete_elements_lenient(TABLE, set, &mine);
    }
    Ok(del)
}

/// What of `st` is missing or wrong in the kernel (CHECK), one line each.
pub fn missing<B: Backend + ?Sized>(
    b: &mut B,
    st: &AttachmentState,
) -> Result<Vec<String>, CniError> {
    let mut out = Vec::new();
    if !shared::is_current(b).map_err(|e| CniError::new(code::NFTABLES, e.to_string()))? {
        out.push(format!(
            "rnet's nftables tables are missing or not at version {:?}",
            shared::VERSION
        ));
        return Ok(out);
    }
    out.extend(
        shared::missing_feature_chains(b, &st.add_batch())
            .map_err(|e| CniError::new(code::NFTABLES, e.to_string()))?,
    );
    for c in st.cond_chains() {
        let name = c.name();
        if !b
            .chain_exists(Family::Inet, TABLE, &name)
            .map_err(|e| CniError::new(code::NFTABLES, e.to_string()))?
        {
            out.push(format!(
                "condition chain {name} ({}: {}) missing in inet {TABLE}",
                c.family.key(),
                c.matches
            ));
        }
    }
    let comment = comment_for(&st.tag());
    for (set, want) in st
        .port_elements()
        .into_iter()
        .chain(st.cond_elements())
        .chain(st.set_elements())
    {
        let have = b.list_elements(Family::Inet, TABLE, set).map_err(|e| {
            CniError::new(code::NFTABLES, format!("listing inet {TABLE} {set}: {e}"))
        })?;
        for w in want {
            match have.iter().find(|h| h.same_key(&w)) {
                None => out.push(format!(
                    "{{ {} }} missing in inet {TABLE} {set}",
                    w.key_text()
                )),
                Some(h)
                    if h.data != w.data
                        || h.verdict != w.verdict
                        || h.comment.as_deref() != Some(comment.as_str()) =>
                {
                    out.push(format!(
                        "{{ {} }} in inet {TABLE} {set} points elsewhere: {}",
                        w.key_text(),
                        h.to_nft_text()
                    ));
                }
                Some(_) => {}
            }
        }
    }
    Ok(out)
}

/// Conntrack targets of an ADD: UDP and SCTP host ports (stale flows).
pub fn stale_targets(st: &AttachmentState) -> Vec<Target> {
    st.ports
        .iter()
        .filter(|p| p.proto != crate::config::Proto::Tcp)
        .map(|p| Target {
            proto: p.proto.number(),
            dport: p.host_port,
            orig_dst: p.host_ip,
            reply_src: None,
            v6: p.addr.is_ipv6(),
        })
        .collect()
}

/// Conntrack targets of a DEL: UDP and SCTP ports, entries translated to
/// the container. (TCP entries are left to time out: a dump walks the whole
/// conntrack hash, ~15 ms even when empty, and a TCP peer of a deleted
/// container learns of it by RST or timeout anyway.)
pub fn removed_targets(st: &AttachmentState) -> Vec<Target> {
    st.ports
        .iter()
        .filter(|p| p.proto != crate::config::Proto::Tcp)
        .map(|p| Target {
            proto: p.proto.number(),
            dport: p.host_port,
            orig_dst: p.host_ip,
            reply_src: Some(p.addr),
            v6: p.addr.is_ipv6(),
        })
        .collect()
}

fn flush_conntrack(targets: &[Target], when: &str) {
    if let Err(e) = conntrack::flush(targets) {
        eprintln!("rnet-portmap: {when}: cannot delete stale conntrack entries: {e}");
    }
}

/// `net.ipv4.conf.<bridge>.route_localnet = 1` (never `all`), read and set
/// through netlink: a `/proc/sys` lookup costs more with every network
/// namespace on the host. A bridge that does not exist in this namespace is
/// skipped.
fn enable_route_localnet(bridge: &str) -> Result<(), CniError> {
    if rnet_netlink::validate_ifname(bridge).is_err() {
        return Ok(());
    }
    let fail = |e: rnet_netlink::NetlinkError| {
        CniError::io(format!(
            "unable to enable route_localnet on {bridge} (needed for localhost publishing; set \
             \"snat\": false to do without): {e}"
        ))
    };
    let mut nl = Netlink::new().map_err(fail)?;
    let Some(link) = nl.link_by_name(bridge).map_err(fail)? else {
        return Ok(());
    };
    if link.ip.v4(Ipv4Conf::RouteLocalnet) == Some(1) {
        return Ok(());
    }
    match nl.link_set_ipv4_conf(link.index, &[(Ipv4Conf::RouteLocalnet, 1)]) {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(fail(e)),
    }
}

fn state_file(cfg: &Config, args: &CmdArgs) -> std::path::PathBuf {
    plan::state_path(
        &cfg.state_dir(),
        &cfg.network,
        &args.container_id,
        &args.ifname,
    )
}

/// ADD.
pub fn cmd_add(args: &CmdArgs) -> Result<CniResult, CniError> {
    let trace = Trace::new("rnet-portmap");
    let cfg = Config::parse(&args.conf)?;
    let Some(prev) = &args.conf.prev_result else {
        return Err(CniError::invalid_config(
            "portmap must be called as a chained plugin: the config has no \"prevResult\"; put it \
             after the interface plugin (e.g. bridge) in a conflist",
        ));
    };
    let st = AttachmentState::build(&cfg, &args.container_id, &args.ifname, Some(prev))?;
    if st.is_empty() {
        return Ok(prev.clone());
    }
    let path = state_file(&cfg, args);
    let old = plan::read_state(&path).ok().flatten();
    plan::write_state(&path, &st)?;
    trace.at("state written");
    let mut nft = open_nft()?;
    let res = (|| {
        if let Some(o) = old.as_ref().filter(|o| **o != st) {
            // A repeated ADD with other mappings: the old ones go first.
            uninstall(&mut nft, o, &cfg.state_root)?;
        }
        // The elements first: `localnet` brings the 127.0.0.0/8 guard
        // (`pm_raw`) before `route_localnet` is turned on.
        install(&mut nft, &st, &cfg.state_root)?;
        trace.at("installed");
        if cfg.snat && st.ports.iter().any(|p| p.addr.is_ipv4()) {
            if let Some(br) = &st.bridge {
                if let Err(e) = enable_route_localnet(br) {
                    // Rolled back: the ports of this ADD go again.
                    if let Err(u) = uninstall(&mut nft, &st, &cfg.state_root) {
                        eprintln!("rnet-portmap: rollback after a failed ADD: {}", u.msg);
                    }
                    return Err(e);
                }
            }
        }
        trace.at("sysctl");
        Ok(())
    })();
    // The last close of an nf_tables socket waits for the kernel's deferred
    // cleanup (an RCU grace period, ~10 ms); let a child do that.
    nft.close_in_background();
    trace.at("closed");
    if let Err(e) = res {
        // Nothing of this ADD stays: its journal and state go (a port
        // conflict changed nothing in the kernel).
        let _ = shared::journal_remove(&cfg.state_root, PLUGIN, &st.tag());
        let _ = plan::remove_state(&path);
        return Err(e);
    }
    let t = stale_targets(&st);
    if !t.is_empty() {
        flush_conntrack(&t, "ADD");
    }
    Ok(prev.clone())
}

/// DEL: from the state file; without one, from `prevResult` +
/// `runtimeConfig`; without those, by listing the maps for the tag.
pub fn cmd_del(args: &CmdArgs) -> Result<(), CniError> {
    let trace = Trace::new("rnet-portmap");
    let cfg = Config::parse(&args.conf)?;
    let path = state_file(&cfg, args);
    let st = match plan::read_state(&path) {
        Ok(Some(st)) => Some(st),
        Ok(None) => None,
        Err(e) => {
            eprintln!("rnet-portmap: {e}; falling back to prevResult");
            None
        }
    };
    let tag = plan::attachment_tag(&cfg.network, &args.container_id, &args.ifname);
    let st = match st {
        Some(st) => st,
        None => {
            let built = AttachmentState::build(
                &cfg,
                &args.container_id,
                &args.ifname,
                args.conf.prev_result.as_ref(),
            )?;
            if built.is_empty() && args.conf.prev_result.is_some() {
                // prevResult and runtimeConfig say nothing was published.
                let _ = shared::journal_remove(&cfg.state_root, PLUGIN, &tag);
                return Ok(());
            }
            if built.is_empty() {
                // No record, nothing known: find our elements by tag, if the
                // table exists at all.
                let mut nft = open_nft()?;
                let comment = comment_for(&tag);
                let del = scan(&mut nft, &|c| c == comment)?;
                if !del.is_empty() {
                    nft.commit(&del).map_err(|e| {
                        CniError::new(code::NFTABLES, format!("unpublishing ports of {tag}: {e}"))
                    })?;
                    if touches_cond_maps(&del) {
                        prune_chains(&mut nft, &cfg.state_root, None)?;
                    }
                }
                let _ = shared::journal_remove(&cfg.state_root, PLUGIN, &tag);
                return Ok(());
            }
            built
        }
    };
    let mut nft = open_nft()?;
    let res = uninstall(&mut nft, &st, &cfg.state_root);
    trace.at("DEL committed");
    nft.close_in_background();
    trace.at("DEL closed");
    res?;
    let t = removed_targets(&st);
    if !t.is_empty() {
        flush_conntrack(&t, "DEL");
    }
    plan::remove_state(&path)
}

/// CHECK: every element of `prevResult` + `runtimeConfig` is there and
/// points at this container.
pub fn cmd_check(args: &CmdArgs) -> Result<(), CniError> {
    let cfg = Config::parse(&args.conf)?;
    let Some(prev) = &args.conf.prev_result else {
        return Err(CniError::invalid_config(
            "portmap CHECK needs \"prevResult\" in the config",
        ));
    };
    if cfg.mappings.is_empty() {
        return Ok(());
    }
    let st = AttachmentState::build(&cfg, &args.container_id, &args.ifname, Some(prev))?;
    let mut nft = open_nft()?;
    let bad = missing(&mut nft, &st)?;
    if bad.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            code::NFTABLES,
            format!(
                "published ports of {} are not in place: {}",
                st.tag(),
                bad.join("; ")
            ),
        ))
    }
}

/// STATUS: nf_tables must be reachable.
pub fn cmd_status(args: &CmdArgs) -> Result<(), CniError> {
    Config::parse(&args.conf)?;
    Nft::new().map(|_| ()).map_err(|e| {
        CniError::new(
            code::NOT_AVAILABLE,
            format!("nf_tables is not usable, ports cannot be published: {e}"),
        )
    })
}

/// GC: everything of this network whose attachment is not in `valid`:
/// recorded attachments, orphan elements (by tag), orphan journals.
pub fn cmd_gc(args: &CmdArgs, valid: &[Attachment]) -> Result<(), CniError> {
    let cfg = Config::parse(&args.conf)?;
    let mut nft = open_nft()?;
    let res = gc(&mut nft, &cfg, valid);
    let mut nl = Netlink::new().ok();
    let gone = |br: &str| {
        nl.as_mut()
            .is_some_and(|nl| matches!(nl.link_by_name(br), Ok(None)))
    };
    if let Err(e) = gc_localnet(&mut nft, &cfg.state_root, gone) {
        eprintln!("rnet-portmap: GC: {}", e.msg);
    }
    res
}

/// GC of `localnet`: the bridges that no longer exist leave the set (and,
/// with the last one, the 127.0.0.0/8 guard goes at the next prune).
pub fn gc_localnet<B: Backend + ?Sized>(
    b: &mut B,
    root: &Path,
    mut gone: impl FnMut(&str) -> bool,
) -> Result<(), CniError> {
    // The records first: a bridge that is gone is forgotten even when the
    // table was flushed meanwhile.
    for (_, j) in shared::journal_list(root, Some(shared::LOCALNET_JOURNAL)) {
        if gone(&j.tag) {
            shared::localnet_forget(root, &j.tag)
                .map_err(nft_err("removing a localhost guard record"))?;
        }
    }
    let els = match b.list_elements(Family::Inet, TABLE, sets::LOCALNET) {
        Ok(els) => els,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => {
            return Err(CniError::new(
                code::NFTABLES,
                format!("listing localnet: {e}"),
            ));
        }
    };
    let stale: Vec<Element> = els
        .into_iter()
        .filter(|e| matches!(e.key.first(), Some(KeyPart::IfName(n)) if gone(n)))
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    let mut del = Batch::new(Family::Inet);
    del.delete_elements_lenient(TABLE, sets::LOCALNET, &stale);
    b.commit(&del)
        .map_err(|e| CniError::new(code::NFTABLES, format!("GC of localnet: {e}")))?;
    shared::prune_features(b).map_err(nft_err("removing unused feature chains"))?;
    Ok(())
}

/// GC against any backend.
pub fn gc<B: Backend + CondChains + ?Sized>(
    b: &mut B,
    cfg: &Config,
    valid: &[Attachment],
) -> Result<(), CniError> {
    let keep: HashSet<String> = valid
        .iter()
        .map(|a| {
            comment_for(&plan::attachment_tag(
                &cfg.network,
                &a.container_id,
                &a.ifname,
            ))
        })
        .collect();
    let mut errs: Vec<CniError> = Vec::new();
    for (path, st) in plan::list_states(&cfg.state_dir(), &cfg.network) {
        let Ok(st) = st else { continue };
        if keep.contains(&comment_for(&st.tag())) {
            continue;
        }
        match uninstall(b, &st, &cfg.state_root) {
            Ok(()) => {
                flush_conntrack(&removed_targets(&st), "GC");
                if let Err(e) = plan::remove_state(&path) {
                    errs.push(e);
                }
            }
            Err(e) => errs.push(e),
        }
    }
    let net = cfg.network.clone();
    let stale = |c: &str| parse_tag(c).is_some_and(|(n, _, _)| n == net) && !keep.contains(c);
    match scan(b, &stale) {
        Ok(del) if !del.is_empty() => {
            if let Err(e) = b.commit(&del) {
                errs.push(CniError::new(code::NFTABLES, format!("GC of {net}: {e}")));
            }
        }
        Ok(_) => {}
        Err(e) => errs.push(e),
    }
    for (path, j) in shared::journal_list(&cfg.state_root, Some(PLUGIN)) {
        if stale(&j.tag) {
            let _ = std::fs::remove_file(path);
        }
    }
    // Condition chains nobody refers to any more (of any network: a chain
    // is shared by everyone with the same conditions).
    if !cond::records(&cfg.state_root).is_empty() {
        if let Err(e) = prune_chains(b, &cfg.state_root, None) {
            errs.push(e);
        }
    }
    // Filter chains of features nobody uses any more (the published-address
    // guard once no port is published).
    if let Err(e) = shared::prune_features(b) {
        errs.push(nft_err("removing unused feature chains")(e));
    }
    match errs.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn touches_cond_maps(b: &Batch) -> bool {
    b.ops()
        .iter()
        .any(|op| COND_MAPS.contains(&op.set.as_str()) && !op.elements.is_empty())
}

/// The container address a port entry points at (for tests and messages).
pub fn entry_addr(p: &PortEntry) -> IpAddr {
    p.addr
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use rnet_cni::NetConf;
    use rnet_nft::FakeBackend;
    use serde_json::{Value, json};

    fn prev(v4: &str, v6: Option<&str>) -> Value {
        let mut ips = vec![json!({"address": v4, "interface": 2})];
        if let Some(a) = v6 {
            ips.push(json!({"address": a, "interface": 2}));
        }
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "00:11:22:33:44:55"},
                {"name": "veth1", "mac": "00:11:22:33:44:56"},
                {"name": "eth0", "mac": "00:11:22:33:44:57", "sandbox": "/run/netns/x"}
            ],
            "ips": ips
        })
    }

    fn cfg_with(root: &Path, pm: Value, extra: Value, prev: &Value) -> (Config, NetConf) {
        let mut c = json!({
            "cniVersion": "1.0.0", "name": "net1", "type": "portmap",
            "rnetStateDir": root,
            "runtimeConfig": {"portMappings": pm},
            "prevResult": prev,
        });
        if let (Value::Object(a), Value::Object(b)) = (&mut c, extra) {
            a.extend(b);
        }
        let nc = NetConf::parse(c.to_string().as_bytes()).unwrap();
        (Config::parse(&nc).unwrap(), nc)
    }

    fn state(root: &Path, cid: &str, v4: &str, v6: Option<&str>, pm: Value) -> AttachmentState {
        let p = prev(v4, v6);
        let (cfg, nc) = cfg_with(root, pm, json!({}), &p);
        AttachmentState::build(&cfg, cid, "eth0", nc.prev_result.as_ref()).unwrap()
    }

    #[test]
    fn golden_add_and_del_batches() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(
            dir.path(),
            "c1",
            "10.88.0.2/16",
            Some("fd00::2/64"),
            json!([
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "198.51.100.1"},
                {"hostPort": "9000-9001", "containerPort": "90-91", "protocol": "sctp"},
            ]),
        );
        let want_add = "\
create element inet rnet hostip_ports4 { 198.51.100.1 . udp . 5353 comment \"net1/c1/eth0\" : 10.88.0.2 . 53 }
create element inet rnet hostports4 { tcp . 8080 comment \"net1/c1/eth0\" : 10.88.0.2 . 80, sctp . 9000 comment \"net1/c1/eth0\" : 10.88.0.2 . 90, sctp . 9001 comment \"net1/c1/eth0\" : 10.88.0.2 . 91 }
create element inet rnet hostports6 { tcp . 8080 comment \"net1/c1/eth0\" : fd00::2 . 80, sctp . 9000 comment \"net1/c1/eth0\" : fd00::2 . 90, sctp . 9001 comment \"net1/c1/eth0\" : fd00::2 . 91 }
add element inet rnet hairpin4 { \"cni0\" . 10.88.0.2 comment \"net1/c1/eth0\" }
add element inet rnet hairpin6 { \"cni0\" . fd00::2 comment \"net1/c1/eth0\" }
add element inet rnet published4 { 10.88.0.2 comment \"net1/c1/eth0\" }
add element inet rnet published6 { fd00::2 comment \"net1/c1/eth0\" }
add element inet rnet localnet { \"cni0\" }
";
        assert_eq!(st.add_batch().render(), want_add);
        let want_del = "\
destroy element inet rnet hostip_ports4 { 198.51.100.1 . udp . 5353 }
destroy element inet rnet hostports4 { tcp . 8080, sctp . 9000, sctp . 9001 }
destroy element inet rnet hostports6 { tcp . 8080, sctp . 9000, sctp . 9001 }
destroy element inet rnet hairpin4 { \"cni0\" . 10.88.0.2 }
destroy element inet rnet hairpin6 { \"cni0\" . fd00::2 }
destroy element inet rnet published4 { 10.88.0.2 }
destroy element inet rnet published6 { fd00::2 }
";
        assert_eq!(st.del_batch().render(), want_del);
        assert_eq!(stale_targets(&st).len(), 1 + 4); // udp + 4 sctp entries
        assert_eq!(removed_targets(&st).len(), 5);
    }

    #[test]
    fn snat_off_and_routed_leave_sets_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = prev("10.88.0.2/16", None);
        let (cfg, nc) = cfg_with(
            dir.path(),
            json!([{"hostPort": 8080, "containerPort": 80}]),
            json!({"snat": false, "rnetRouted": true}),
            &p,
        );
        let st = AttachmentState::build(&cfg, "c1", "eth0", nc.prev_result.as_ref()).unwrap();
        assert_eq!(
            st.add_batch().render(),
            "create element inet rnet hostports4 { tcp . 8080 comment \"net1/c1/eth0\" : 10.88.0.2 . 80 }\n"
        );
        // No mappings: only the hairpin element (so neighbours can hairpin).
        let st = state(dir.path(), "c2", "10.88.0.3/16", None, json!([]));
        assert_eq!(
            st.add_batch().render(),
            "add element inet rnet hairpin4 { \"cni0\" . 10.88.0.3 comment \"net1/c2/eth0\" }\n"
        );
    }

    #[test]
    fn port_taken_is_120_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = FakeBackend::new();
        let a = state(
            dir.path(),
            "a",
            "10.88.0.2/16",
            None,
            json!([{"hostPort": 8080, "containerPort": 80}]),
        );
        install(&mut f, &a, dir.path()).unwrap();
        let before = f.render().unwrap();
        let b = state(
            dir.path(),
            "b",
            "10.88.0.3/16",
            None,
            json!([{"hostPort": 8081, "containerPort": 80}, {"hostPort": 8080, "containerPort": 80}]),
        );
        let e = install(&mut f, &b, dir.path()).unwrap_err();
        assert_eq!(e.code, 120, "{e:?}");
        assert!(
            e.msg.contains("tcp port 8080") && e.msg.contains("container a"),
            "{}",
            e.msg
        );
        assert_eq!(f.render().unwrap(), before);
        // A repeated ADD of `a` replaces its own elements.
        let a2 = state(
            dir.path(),
            "a",
            "10.88.0.9/16",
            None,
            json!([{"hostPort": 8080, "containerPort": 81}]),
        );
        install(&mut f, &a2, dir.path()).unwrap();
        assert!(missing(&mut f, &a2).unwrap().is_empty());
        assert!(!missing(&mut f, &a).unwrap().is_empty());
    }

    /// Two full-range attachments on one port range: the second's conflict
    /// report names every port (this took minutes when each existing element
    /// was compared with every wanted port).
    #[test]
    fn full_range_conflict_is_reported_quickly() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = FakeBackend::new();
        let range = json!([{"hostPort": "1-30000", "containerPort": "1-30000"}]);
        let a = state(dir.path(), "a", "10.88.0.2/16", None, range.clone());
        install(&mut f, &a, dir.path()).unwrap();
        let b = state(dir.path(), "b", "10.88.0.3/16", None, range);
        let (ours, foreign) = conflicts(&mut f, &b).unwrap();
        assert!(ours.is_empty());
        assert_eq!(foreign.len(), 30000);
        assert!(foreign.iter().all(|(_, owner)| owner.contains("/a/")));
    }

    #[test]
    fn del_is_idempotent_and_restores_after_flush() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = FakeBackend::new();
        let a = state(
            dir.path(),
            "a",
            "10.88.0.2/16",
            None,
            json!([{"hostPort": 8080, "containerPort": 80}]),
        );
        let b = state(
            dir.path(),
            "b",
            "10.88.0.3/16",
            None,
            json!([{"hostPort": 8081, "containerPort": 80}]),
        );
        install(&mut f, &a, dir.path()).unwrap();
        install(&mut f, &b, dir.path()).unwrap();
        f.flush_ruleset();
        // DEL of a after a flush: the tables come back with b's elements.
        uninstall(&mut f, &a, dir.path()).unwrap();
        uninstall(&mut f, &a, dir.path()).unwrap();
        assert!(missing(&mut f, &b).unwrap().is_empty());
        assert_eq!(
            f.list_elements(Family::Inet, TABLE, sets::HOSTPORTS4)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn gc_removes_only_invalid_attachments_of_this_network() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = FakeBackend::new();
        let p = prev("10.88.0.2/16", None);
        let (cfg, _) = cfg_with(dir.path(), json!([]), json!({}), &p);
        for (cid, last, port) in [("a", 2, 8080), ("b", 3, 8081)] {
            let st = state(
                dir.path(),
                cid,
                &format!("10.88.0.{last}/16"),
                None,
                json!([{"hostPort": port, "containerPort": 80}]),
            );
            plan::write_state(
                &plan::state_path(&cfg.state_dir(), "net1", cid, "eth0"),
                &st,
            )
            .unwrap();
            install(&mut f, &st, dir.path()).unwrap();
        }
        // An orphan element of another network stays; one of ours without state goes.
        let mut other = Batch::new(Family::Inet);
        other.add_elements(
            TABLE,
            sets::PUBLISHED4,
            &[
                Element::new(rnet_nft::KeyPart::Ipv4("10.1.0.1".parse().unwrap()))
                    .comment("net2/x/eth0"),
            ],
        );
        other.add_elements(
            TABLE,
            sets::PUBLISHED4,
            &[
                Element::new(rnet_nft::KeyPart::Ipv4("10.88.0.7".parse().unwrap()))
                    .comment("net1/z/eth0"),
            ],
        );
        f.commit(&other).unwrap();
        gc(
            &mut f,
            &cfg,
            &[Attachment {
                container_id: "a".into(),
                ifname: "eth0".into(),
            }],
        )
        .unwrap();
        let hp = f
            .list_elements(Family::Inet, TABLE, sets::HOSTPORTS4)
            .unwrap();
        assert_eq!(hp.len(), 1);
        assert_eq!(hp[0].comment.as_deref(), Some("net1/a/eth0"));
        let pubs: Vec<_> = f
            .list_elements(Family::Inet, TABLE, sets::PUBLISHED4)
            .unwrap()
            .into_iter()
            .filter_map(|e| e.comment)
            .collect();
        assert_eq!(
            pubs,
            vec!["net1/a/eth0".to_string(), "net2/x/eth0".to_string()]
        );
        assert_eq!(shared::journal_list(dir.path(), Some(PLUGIN)).len(), 1);
        assert_eq!(plan::list_states(&cfg.state_dir(), "net1").len(), 1);
    }

    fn cond_state(root: &Path, cid: &str, last: u8, port: u16, extra: Value) -> AttachmentState {
        let p = prev(
            &format!("10.88.0.{last}/16"),
            Some(&format!("fd00::{last}/64")),
        );
        let (cfg, nc) = cfg_with(
            root,
            json!([
                {"hostPort": port, "containerPort": 80},
                {"hostPort": port + 1, "containerPort": 81, "hostIP": "198.51.100.1"},
            ]),
            extra,
            &p,
        );
        AttachmentState::build(&cfg, cid, "eth0", nc.prev_result.as_ref()).unwrap()
    }

    fn inet(f: &FakeBackend) -> &rnet_nft::Table {
        f.state()
            .tables
            .iter()
            .find(|t| t.family == Family::Inet)
            .unwrap()
    }

    fn chain_names(f: &FakeBackend) -> Vec<String> {
        inet(f)
            .chains
            .iter()
            .map(|c| c.name.clone())
            .filter(|n| cond::is_cond_chain(n))
            .collect()
    }

    #[test]
    fn golden_conditioned_batches() {
        let dir = tempfile::tempdir().unwrap();
        let st = cond_state(
            dir.path(),
            "c1",
            2,
            8080,
            json!({"conditionsV4": ["-s", "203.0.113.0/24"]}),
        );
        assert_eq!(st.cond4.as_deref(), Some("ip saddr 203.0.113.0/24"));
        assert_eq!(st.cond6, None);
        let h = cond::chain_name(cond::CondFamily::V4, "ip saddr 203.0.113.0/24");
        let want_add = format!(
            "\
create element inet rnet hostip_ports4 {{ 198.51.100.1 . tcp . 8081 comment \"net1/c1/eth0\" : 10.88.0.2 . 81 }}
create element inet rnet hostports4 {{ tcp . 8080 comment \"net1/c1/eth0\" : 10.88.0.2 . 80 }}
create element inet rnet hostports6 {{ tcp . 8080 comment \"net1/c1/eth0\" : fd00::2 . 80 }}
add element inet rnet pm_condip4 {{ 198.51.100.1 . tcp . 8081 comment \"net1/c1/eth0\" : goto {h} }}
add element inet rnet pm_cond4 {{ tcp . 8080 comment \"net1/c1/eth0\" : goto {h} }}
add element inet rnet hairpin4 {{ \"cni0\" . 10.88.0.2 comment \"net1/c1/eth0\" }}
add element inet rnet hairpin6 {{ \"cni0\" . fd00::2 comment \"net1/c1/eth0\" }}
add element inet rnet published4 {{ 10.88.0.2 comment \"net1/c1/eth0\" }}
add element inet rnet published6 {{ fd00::2 comment \"net1/c1/eth0\" }}
add element inet rnet localnet {{ \"cni0\" }}
"
        );
        assert_eq!(st.add_batch().render(), want_add);
        let del = st.del_batch().render();
        assert!(
            del.contains("destroy element inet rnet pm_cond4 { tcp . 8080 }")
                && del
                    .contains("destroy element inet rnet pm_condip4 { 198.51.100.1 . tcp . 8081 }"),
            "{del}"
        );
        // The state file keeps the canonical conditions; an old state file
        // without them still reads.
        let text = serde_json::to_string(&st).unwrap();
        assert!(
            text.contains("\"conditionsV4\":\"ip saddr 203.0.113.0/24\""),
            "{text}"
        );
        let back: AttachmentState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, st);
        // A v6-only condition on a v6 port, nft form.
        let st6 = cond_state(
            dir.path(),
            "c1",
            2,
            8080,
            json!({"backend": "nftables", "conditionsV6": ["iifname \"uplink0\""]}),
        );
        assert_eq!(st6.cond4, None);
        let els = st6.cond_elements();
        assert_eq!(els.len(), 1);
        assert_eq!(els[0].0, sets::PM_COND6);
    }

    #[test]
    fn condition_chains_are_shared_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut f = FakeBackend::new();
        let conds = json!({"conditionsV4": ["-s", "203.0.113.7"]});
        let a = cond_state(root, "a", 2, 8080, conds.clone());
        let b = cond_state(root, "b", 3, 9080, conds);
        let plain = state(
            root,
            "p",
            "10.88.0.4/16",
            None,
            json!([{"hostPort": 7000, "containerPort": 80}]),
        );
        install(&mut f, &plain, root).unwrap();
        install(&mut f, &a, root).unwrap();
        let name = a.cond_chains()[0].name();
        assert_eq!(chain_names(&f), vec![name.clone()]);
        assert_eq!(cond::records(root).len(), 1);
        install(&mut f, &b, root).unwrap();
        assert_eq!(
            chain_names(&f),
            vec![name.clone()],
            "one chain per condition set"
        );
        assert!(missing(&mut f, &a).unwrap().is_empty());
        assert!(missing(&mut f, &b).unwrap().is_empty());
        // The chain rule is the canonical conditions.
        let rule = inet(&f)
            .chains
            .iter()
            .find(|c| c.name == name)
            .unwrap()
            .rules
            .clone();
        assert_eq!(
            rule,
            vec!["ip saddr 203.0.113.7 goto pm_cdnat4".to_string()]
        );

        // Flush: the next commit restores the tables, the chain comes back.
        f.flush_ruleset();
        uninstall(&mut f, &a, root).unwrap();
        assert_eq!(chain_names(&f), vec![name.clone()], "b still uses it");
        assert!(missing(&mut f, &b).unwrap().is_empty());
        assert!(missing(&mut f, &plain).unwrap().is_empty());
        // The last user goes: chain and record go.
        uninstall(&mut f, &b, root).unwrap();
        assert!(chain_names(&f).is_empty());
        assert!(cond::records(root).is_empty());
        assert!(
            f.list_elements(Family::Inet, TABLE, sets::PM_COND4)
                .unwrap()
                .is_empty()
        );
        // The plain mapping never noticed.
        assert!(missing(&mut f, &plain).unwrap().is_empty());
    }

    #[test]
    fn conditioned_port_conflicts_with_plain_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut f = FakeBackend::new();
        let plain = state(
            root,
            "p",
            "10.88.0.4/16",
            None,
            json!([{"hostPort": 8080, "containerPort": 80}]),
        );
        install(&mut f, &plain, root).unwrap();
        let before = inet(&f).render().unwrap();
        let c = cond_state(root, "c", 2, 8080, json!({"conditionsV4": ["-i", "eth0"]}));
        let e = install(&mut f, &c, root).unwrap_err();
        assert_eq!(e.code, 120, "{e:?}");
        assert!(e.msg.contains("container p"), "{}", e.msg);
        // Nothing of the failed ADD stays, not even its chain.
        assert_eq!(inet(&f).render().unwrap(), before);
        assert!(cond::records(root).is_empty());
        // And the other way round.
        let c2 = cond_state(root, "c2", 5, 9000, json!({"conditionsV4": ["-i", "eth0"]}));
        install(&mut f, &c2, root).unwrap();
        let p2 = state(
            root,
            "p2",
            "10.88.0.6/16",
            None,
            json!([{"hostPort": 9000, "containerPort": 80}]),
        );
        let e = install(&mut f, &p2, root).unwrap_err();
        assert_eq!(e.code, 120, "{e:?}");
        // A repeated ADD of c2 with other conditions replaces its elements
        // and chain.
        let c2b = cond_state(root, "c2", 5, 9000, json!({"conditionsV4": ["-i", "eth1"]}));
        uninstall(&mut f, &c2, root).unwrap();
        install(&mut f, &c2b, root).unwrap();
        assert_eq!(chain_names(&f), vec![c2b.cond_chains()[0].name()]);
        assert!(missing(&mut f, &c2b).unwrap().is_empty());
        // CHECK notices a missing condition element and a missing chain.
        let mut d = Batch::new(Family::Inet);
        d.delete_elements(TABLE, sets::PM_COND4, &[Element::new(c2b.ports[0].key())]);
        f.commit(&d).unwrap();
        let m = missing(&mut f, &c2b).unwrap();
        assert!(m.iter().any(|l| l.contains("pm_cond4")), "{m:?}");
    }

    #[test]
    fn gc_prunes_condition_chains() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut f = FakeBackend::new();
        let p = prev("10.88.0.2/16", None);
        let (cfg, _) = cfg_with(root, json!([]), json!({}), &p);
        let a = cond_state(
            root,
            "a",
            2,
            8080,
            json!({"conditionsV4": ["ip saddr 1.2.3.4"]}),
        );
        plan::write_state(&plan::state_path(&cfg.state_dir(), "net1", "a", "eth0"), &a).unwrap();
        install(&mut f, &a, root).unwrap();
        assert_eq!(chain_names(&f).len(), 1);
        gc(&mut f, &cfg, &[]).unwrap();
        assert!(chain_names(&f).is_empty());
        assert!(cond::records(root).is_empty());
        assert!(
            f.list_elements(Family::Inet, TABLE, sets::HOSTPORTS4)
                .unwrap()
                .is_empty()
        );
    }
}
