//! DEL, GC and STATUS.

use crate::config::BridgeConf;
use crate::fw::{self, Installed};
use crate::ipam::delegate;
use crate::state::{
    AttachmentState, attachment_tag, host_veth_name, list_states, parse_tag, read_state,
    remove_state, state_path,
};
use rnet_cni::exec::{CniEnv, exec_plugin, find_plugin};
use rnet_cni::{Attachment, CmdArgs, CniError, Command, code};
use rnet_netlink::Netlink;
use rnet_plugin::netlink_error;
use std::collections::HashSet;

/// Combines several errors into the first one, the rest in its details.
fn combine(mut errs: Vec<CniError>) -> Result<(), CniError> {
    if errs.is_empty() {
        return Ok(());
    }
    let first = errs.remove(0);
    if errs.is_empty() {
        return Err(first);
    }
    let rest: Vec<String> = errs.iter().map(ToString::to_string).collect();
    let details = if first.details.is_empty() {
        rest.join("; ")
    } else {
        format!("{}; {}", first.details, rest.join("; "))
    };
    Err(first.with_details(details))
}

/// Deletes host veth `name` if it carries `tag` (deleting one end removes the
/// pair). Gone already is fine; a veth of that name with another tag is left
/// alone. With the DEL's `args`, both ends are retired first (down,
/// renamed) and a reaper finishes the deletion ([`spawn_reaper`]).
fn delete_veth(
    args: Option<&CmdArgs>,
    nl: &mut Netlink,
    name: &str,
    tag: &str,
) -> Result<(), CniError> {
    let Some(l) = nl.link_by_name(name).map_err(netlink_error)? else {
        return Ok(());
    };
    if !crate::state::veth_is_ours(&l, tag) {
        eprintln!(
            "rnet-bridge: not deleting {name}: it belongs to {:?}, not {tag:?}",
            l.alias.unwrap_or_default()
        );
        return Ok(());
    }
    // Unlinking waits for the kernel (see `spawn_reaper`); a reaper may do
    // it after DEL returns, but only once both ends are down and no longer
    // carry their names: traffic stops now (the address can be handed out
    // again at once), and the runtime, like the reference plugin's users,
    // finds both names gone when DEL returns and may reuse them.
    if args.is_some_and(|a| retire_peer(a, &l)) {
        let retired = retired_name(l.index);
        match nl.link_retire(l.index, &retired) {
            Ok(()) if spawn_reaper(l.index, &retired, tag) => return Ok(()),
            Ok(()) => {}
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => eprintln!("rnet-bridge: could not retire {name}: {e}"),
        }
    }
    match nl.link_del(l.index) {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(netlink_error(e).context(format!("deleting veth {name}"))),
    }
}

/// The name a retired end carries (in its namespace, where `index` is its
/// interface index) until the reaper deletes the pair.
fn retired_name(index: u32) -> String {
    format!("rnetdel{index}")
}

/// Takes the container end of host veth `host` down and renames it (see
/// [`retired_name`]), in `CNI_NETNS`. False when that cannot be done (no
/// namespace given or left, the end is not there, not our pair, or the
/// kernel refused): the caller then deletes the pair at once.
fn retire_peer(args: &CmdArgs, host: &rnet_netlink::Link) -> bool {
    let Some(peer) = host.peer_index.filter(|_| host.link_netnsid.is_some()) else {
        return false;
    };
    let Ok(Some(ns)) = rnet_plugin::container_netns_for_del(args) else {
        return false;
    };
    // Never rename anything in the plugin's own namespace (a runtime that
    // passed the host's by mistake).
    if rnet_plugin::refuse_own_netns(&ns).is_err() {
        return false;
    }
    let Ok(mut cnl) = Netlink::in_netns(&ns) else {
        return false;
    };
    // The link at `peer` must be this pair's other end, named `ifname`.
    let ours = cnl.link_by_index(peer).ok().flatten().is_some_and(|c| {
        c.kind.as_deref() == Some("veth")
            && c.name == args.ifname
            && c.peer_index == Some(host.index)
            && c.link_netnsid.is_some()
    });
    if !ours {
        return false;
    }
    match cnl.link_retire(peer, &retired_name(peer)) {
        Ok(()) => true,
        Err(e) => {
            eprintln!(
                "rnet-bridge: could not retire {} in the container: {e}",
                args.ifname
            );
            false
        }
    }
}

/// The environment variable that turns this executable into a reaper.
pub const REAP_ENV: &str = "RNET_BRIDGE_REAP";

/// Test hook: milliseconds the reaper waits before it deletes.
const REAP_DELAY_ENV: &str = "RNET_BRIDGE_TEST_REAP_DELAY_MS";

/// Unlinking a veth costs the kernel 15–40 ms of RCU grace periods (measured
/// on the CI machine), most of a DEL. The pair is no longer anyone's: both
/// ends are down and renamed ([`retire_peer`], [`retired_name`]). A detached child of
/// this executable (own process group, no stdio) finishes the deletion while
/// DEL returns. An ADD that meets the leftover deletes it itself. Returns
/// false if the child could not be started (the caller then deletes
/// synchronously).
fn spawn_reaper(index: u32, name: &str, tag: &str) -> bool {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        return false;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.env_clear();
    // Test hook: a slow reaper, to prove the container end is gone when DEL
    // returns rather than when the reaper is done.
    if let Some(d) = std::env::var_os(REAP_DELAY_ENV) {
        cmd.env(REAP_DELAY_ENV, d);
    }
    cmd.env(REAP_ENV, format!("{index}/{name}/{tag}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .is_ok()
}

/// The reaper's work (see `spawn_reaper`): delete link `index` if it still
/// is host veth `name` with alias `tag` (an index is not reused soon, and the
/// name and alias are checked too). Errors are ignored: ADD and GC clean up
/// leftovers anyway.
pub fn reap(spec: &str) {
    let mut parts = spec.splitn(3, '/');
    let (Some(index), Some(name), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let Ok(index) = index.parse::<u32>() else {
        return;
    };
    if let Some(ms) = std::env::var(REAP_DELAY_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms.min(10_000)));
    }
    let Ok(mut nl) = Netlink::new() else {
        return;
    };
    if let Ok(Some(l)) = nl.link_by_index(index) {
        if l.name == name && crate::state::veth_is_ours(&l, tag) {
            let _ = nl.link_del(index);
        }
    }
}

/// DEL: idempotent; works without the namespace, the veth, the state file or
/// `prevResult`.
pub fn del(args: &CmdArgs) -> Result<(), CniError> {
    let trace = rnet_plugin::Trace::new("rnet-bridge");
    let trace = &trace;
    let conf = BridgeConf::from_args(args)?;
    let network = &args.conf.name;
    let path = state_path(&conf.state_dir, network, &args.container_id, &args.ifname);
    let st = read_state(&path).unwrap_or_else(|e| {
        eprintln!("rnet-bridge: {e}; falling back to prevResult");
        None
    });
    let tag = attachment_tag(network, &args.container_id, &args.ifname);
    let host_name = st.as_ref().map_or_else(
        || host_veth_name(&args.container_id, &args.ifname),
        |s| s.host_veth.clone(),
    );
    let inst = match &st {
        Some(s) => Installed::from_state(s),
        None => {
            let masq = if conf.ip_masq {
                args.conf
                    .prev_result
                    .as_ref()
                    .map(|r| r.ips.iter().map(|i| i.address).collect())
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            Installed {
                tag: tag.clone(),
                scan: conf.ip_masq && masq.is_empty(),
                masq,
                spoof_veth: conf.macspoofchk.then(|| host_name.clone()),
            }
        }
    };
    std::thread::scope(|s| {
        let ipam = conf
            .ipam_type
            .as_deref()
            .map(|t| s.spawn(move || delegate(Command::Del, args, t)));
        // The veth beside the nft deletions: retiring the container end
        // enters its namespace (a thread of its own anyway).
        let veth = s.spawn(|| {
            let r = match Netlink::new() {
                Ok(mut nl) => delete_veth(Some(args), &mut nl, &host_name, &tag),
                Err(e) => Err(netlink_error(e)),
            };
            trace.at("DEL veth");
            r
        });
        let mut errs = Vec::new();
        // nft deletions first. Closing the socket after deleting elements
        // would wait for the kernel's deferred cleanup (an RCU grace period,
        // milliseconds): the last close is handed to a short-lived child.
        if !inst.is_empty() {
            match fw::open() {
                Ok(mut nft) => {
                    if let Err(e) = fw::remove_with(&mut nft, &inst, &conf.state_root) {
                        errs.push(e);
                    }
                    nft.close_in_background();
                }
                Err(e) => errs.push(e),
            }
        }
        trace.at("DEL nft");
        match veth.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errs.push(e),
            Err(_) => errs.push(CniError::internal("the veth thread panicked")),
        }
        if let Some(h) = ipam {
            match h.join() {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => errs.insert(0, e),
                Err(_) => errs.push(CniError::internal("the IPAM thread panicked")),
            }
        }
        trace.at("DEL ipam");
        if errs.is_empty() {
            if let Err(e) = remove_state(&path) {
                errs.push(CniError::io(e));
            }
        }
        trace.at("DEL done");
        combine(errs)
    })
}

/// Does the IPAM plugin speak CNI 1.1.0 (STATUS, GC)? Asks it with VERSION.
fn ipam_has_1_1(args: &CmdArgs, ipam: &str) -> Result<bool, CniError> {
    let path = find_plugin(ipam, &args.path)?;
    let env = CniEnv {
        command: "VERSION".into(),
        path: args.path_raw.clone(),
        ..CniEnv::default()
    };
    let out = exec_plugin(&path, &env, br#"{"cniVersion":"1.1.0"}"#)?;
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
    Ok(v["supportedVersions"]
        .as_array()
        .is_some_and(|l| l.iter().any(|x| x == "1.1.0")))
}

/// STATUS: ready when the IPAM plugin is (an IPAM plugin older than CNI 1.1
/// cannot be asked; it is ready if it can be found).
pub fn status(args: &CmdArgs) -> Result<(), CniError> {
    let conf = BridgeConf::from_args(args)?;
    let Some(ipam) = conf.ipam_type.as_deref() else {
        return Ok(());
    };
    if let Err(e) = find_plugin(ipam, &args.path) {
        return Err(CniError::new(code::NOT_AVAILABLE, e.msg));
    }
    if !ipam_has_1_1(args, ipam)? {
        return Ok(());
    }
    delegate(Command::Status, args, ipam).map(|_| ())
}

/// Removes everything of one stale attachment: veth, elements, lease, state.
fn gc_one(
    args: &CmdArgs,
    conf: &BridgeConf,
    nl: &mut Netlink,
    st: &AttachmentState,
    errs: &mut Vec<CniError>,
) -> bool {
    let tag = st.tag();
    let before = errs.len();
    if let Err(e) = delete_veth(None, nl, &st.host_veth, &tag) {
        errs.push(e);
    }
    let inst = Installed::from_state(st);
    if !inst.is_empty() {
        if let Err(e) = fw::remove(&inst, &conf.state_root) {
            errs.push(e);
        }
    }
    if let Some(t) = conf.ipam_type.as_deref() {
        let mut a = args.clone();
        a.command = Command::Del;
        a.container_id = st.container_id.clone();
        a.ifname = st.ifname.clone();
        a.netns = None;
        if let Err(e) = delegate(Command::Del, &a, t) {
            errs.push(e.context(format!("releasing the lease of {tag}")));
        }
    }
    errs.len() == before
}

/// GC: deletes leftover veth `l` (`what` names the kind in the error);
/// gone already is fine.
fn gc_delete_link(nl: &mut Netlink, l: &rnet_netlink::Link, what: &str, errs: &mut Vec<CniError>) {
    if let Err(e) = nl.link_del(l.index) {
        if !e.is_not_found() {
            errs.push(netlink_error(e).context(format!("GC: deleting {what} veth {}", l.name)));
        }
    }
}

/// GC: removes state files, veths, nft elements and leases of every
/// attachment of this network not in `valid`, then forwards GC to IPAM.
/// Goes on after errors and reports them all.
pub fn gc(args: &CmdArgs, valid: &[Attachment]) -> Result<(), CniError> {
    let conf = BridgeConf::from_args(args)?;
    let network = &args.conf.name;
    let valid_tags: HashSet<String> = valid
        .iter()
        .map(|a| attachment_tag(network, &a.container_id, &a.ifname))
        .collect();
    let mut errs = Vec::new();
    let mut nl = Netlink::new().map_err(netlink_error)?;
    let mut done: HashSet<String> = HashSet::new();
    for (path, st) in list_states(&conf.state_dir, network) {
        match st {
            Ok(st) if !valid_tags.contains(&st.tag()) => {
                if gc_one(args, &conf, &mut nl, &st, &mut errs) {
                    if let Err(e) = remove_state(&path) {
                        errs.push(CniError::io(e));
                    }
                }
                done.insert(st.tag());
            }
            Ok(_) => {}
            Err(e) => eprintln!("rnet-bridge: GC: {e}"),
        }
    }
    // Veths without a state file (state dir wiped): one dump, filtered by alias.
    let valid_names: HashSet<String> = valid
        .iter()
        .map(|a| host_veth_name(&a.container_id, &a.ifname))
        .collect();
    let bridge_index = nl
        .link_by_name(&conf.bridge)
        .ok()
        .flatten()
        .map(|b| b.index);
    match nl.link_list() {
        Ok(links) => {
            for l in links {
                let Some(alias) = l.alias.as_deref() else {
                    // An ADD killed between creating the pair and naming it:
                    // an rnet-named veth on this network's bridge, no alias,
                    // that no valid attachment would have.
                    let rnet_named = l.name.len() == 15
                        && l.name.starts_with("veth")
                        && l.name[4..].bytes().all(|b| b.is_ascii_hexdigit());
                    if rnet_named
                        && l.kind.as_deref() == Some("veth")
                        && bridge_index.is_some()
                        && l.master == bridge_index
                        && !valid_names.contains(&l.name)
                    {
                        gc_delete_link(&mut nl, &l, "unnamed", &mut errs);
                    }
                    continue;
                };
                let Some((net, cid, ifname)) = parse_tag(alias) else {
                    continue;
                };
                if net == network
                    && l.kind.as_deref() == Some("veth")
                    && l.name == retired_name(l.index)
                {
                    // Retired by a DEL whose reaper did not finish: nobody's.
                    gc_delete_link(&mut nl, &l, "retired", &mut errs);
                    continue;
                }
                if net != network
                    || l.kind.as_deref() != Some("veth")
                    || l.name != host_veth_name(cid, ifname)
                    || valid_tags.contains(alias)
                    || done.contains(alias)
                {
                    continue;
                }
                let st = AttachmentState {
                    network: net.to_owned(),
                    container_id: cid.to_owned(),
                    ifname: ifname.to_owned(),
                    bridge: conf.bridge.clone(),
                    host_veth: l.name.clone(),
                    ..AttachmentState::default()
                };
                gc_one(args, &conf, &mut nl, &st, &mut errs);
            }
        }
        Err(e) => errs.push(netlink_error(e).context("listing links for GC")),
    }
    let mut bridge_exists = |name: &str| !matches!(nl.link_by_name(name), Ok(None));
    if let Err(e) = fw::gc(network, &valid_tags, &mut bridge_exists, &conf.state_root) {
        errs.push(e);
    }
    if let Some(t) = conf.ipam_type.as_deref() {
        match ipam_has_1_1(args, t) {
            Ok(true) => {
                if let Err(e) = delegate(Command::Gc, args, t) {
                    errs.push(e);
                }
            }
            Ok(false) => {}
            Err(e) => errs.push(e),
        }
    }
    combine(errs)
}
