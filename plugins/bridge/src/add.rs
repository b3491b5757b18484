//! ADD: bridge, veth, IPAM, container addresses and routes, gateway, nft
//! elements; rolled back completely on any error.

use crate::config::BridgeConf;
use crate::fw::{self, FwAttachment};
use crate::ipam::delegate;
use crate::state::{AttachmentState, attachment_tag, host_veth_name, state_path, write_state};
use ipnet::IpNet;
use rnet_cni::{CmdArgs, CniError, CniResult, Command, Interface, Route, code};
use rnet_netlink::{
    BridgeOpts, BridgePortOpts, Family, Ipv4Conf, Link, Netlink, NetlinkError, RouteSpec, Scope,
    VethSpec, format_mac, random_mac,
};
use rnet_netns::{NetNs, NsTask};
use rnet_plugin::{container_netns, netlink_error, refuse_own_netns};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Index of the container interface in the result (bridge, host veth, container).
const CONTAINER_IF: usize = 2;

/// How long ADD waits for IPv6 DAD when `enabledad` is set (as the reference).
const DAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The undo log of one ADD: everything created so far, removed in reverse on error.
struct Undo<'a> {
    args: &'a CmdArgs,
    conf: &'a BridgeConf,
    state: Option<PathBuf>,
    veth: Option<String>,
    ipam: bool,
    fw: Option<fw::Installed>,
    armed: bool,
}

impl Undo<'_> {
    fn run(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(inst) = self.fw.take() {
            if let Err(e) = fw::remove(&inst, &self.conf.state_root) {
                eprintln!("rnet-bridge: rollback: {e}");
            }
        }
        if self.ipam {
            if let Some(t) = &self.conf.ipam_type {
                if let Err(e) = delegate(Command::Del, self.args, t) {
                    eprintln!("rnet-bridge: rollback: releasing the IPAM lease: {e}");
                }
            }
        }
        if let Some(name) = self.veth.take() {
            match Netlink::new().and_then(|mut nl| nl.link_del_by_name(&name)) {
                Ok(_) => {}
                Err(e) => eprintln!("rnet-bridge: rollback: deleting veth {name}: {e}"),
            }
        }
        if let Some(p) = self.state.take() {
            if let Err(e) = crate::state::remove_state(&p) {
                eprintln!("rnet-bridge: rollback: {e}");
            }
        }
    }
}

/// ADD.
pub fn add(args: &CmdArgs) -> Result<CniResult, CniError> {
    let trace = rnet_plugin::Trace::new("rnet-bridge");
    trace.at("start");
    let conf = BridgeConf::from_args(args)?;
    let ns = container_netns(args)?;
    refuse_own_netns(&ns)?;
    let mut undo = Undo {
        args,
        conf: &conf,
        state: None,
        veth: None,
        ipam: false,
        fw: None,
        armed: true,
    };
    let res = std::thread::scope(|s| {
        // The container side's netlink socket is opened on its own thread
        // (which must enter the container's namespace) while this one writes
        // the intent and creates the veth: the thread's start and `setns`
        // overlap with that work instead of following it.
        let cnl = ns
            .spawn_scoped(s, Netlink::new)
            .map_err(|e| rnet_plugin::ns_error(e).context("entering the container namespace"))?;
        add_inner(args, &conf, &ns, cnl, &mut undo, &trace)
    });
    trace.at("done");
    if res.is_err() {
        undo.run();
    }
    res
}

fn nl_err(what: impl std::fmt::Display) -> impl FnOnce(NetlinkError) -> CniError {
    move |e| netlink_error(e).context(what)
}

fn add_inner(
    args: &CmdArgs,
    conf: &BridgeConf,
    ns: &NetNs,
    cnl: ContainerNetlink<'_>,
    undo: &mut Undo<'_>,
    trace: &rnet_plugin::Trace,
) -> Result<CniResult, CniError> {
    let network = &args.conf.name;
    let host_name = host_veth_name(&args.container_id, &args.ifname);
    let tag = attachment_tag(network, &args.container_id, &args.ifname);
    let cont_mac = conf.mac.unwrap_or_else(random_mac);
    let host_mac = host_port_mac();

    // Intent log first: if we die half way, DEL and GC know what to look for.
    let path = state_path(&conf.state_dir, network, &args.container_id, &args.ifname);
    let mut st = AttachmentState {
        network: network.clone(),
        container_id: args.container_id.clone(),
        ifname: args.ifname.clone(),
        bridge: conf.bridge.clone(),
        host_veth: host_name.clone(),
        mac: if conf.macspoofchk {
            format_mac(&cont_mac)
        } else {
            String::new()
        },
        ..AttachmentState::default()
    };
    write_state(&path, &st)?;
    undo.state = Some(path.clone());
    trace.at("intent written");

    let mut nl = Netlink::new().map_err(nl_err("opening netlink in the host namespace"))?;
    let (br, new_bridge) = ensure_bridge(&mut nl, conf)?;
    trace.at("bridge");

    let spec = VethSpec {
        name: &host_name,
        peer_name: &args.ifname,
        peer_ns: Some(ns),
        mtu: conf.mtu,
        mac: Some(host_mac),
        peer_mac: Some(cont_mac),
        master: Some(br.index),
        up: true,
        alias: Some(&tag),
        host_no_ipv6_ll: true,
    };
    let (host_idx, peer_idx) = create_veth(&mut nl, &spec, &conf.bridge, ns, &tag)?;
    undo.veth = Some(host_name.clone());
    disable_port_ipv6(&host_name);
    trace.at("veth");

    // IPAM after the veth (a repeated ADD that fails on the veth must not
    // release the lease of the attachment it repeats), on this thread: rnet's
    // own IPAM runs in process in a fraction of a millisecond, and handing
    // work to another thread costs more than that where an idle vCPU must be
    // woken for it (measured: BENCHMARKS.md, section 3).
    let ipam = match conf.ipam_type.as_deref() {
        Some(t) => Some(
            delegate(Command::Add, args, t)?
                .ok_or_else(|| CniError::internal(format!("IPAM plugin {t} returned no result")))?,
        ),
        None => None,
    };
    undo.ipam = ipam.is_some();
    trace.at("ipam");
    let (mut cnl, cont_idx) = layer2(
        &mut nl,
        conf,
        host_idx,
        &host_name,
        &args.ifname,
        peer_idx,
        cnl,
    )?;
    trace.at("layer2");

    let mut result = CniResult {
        interfaces: vec![
            Interface {
                name: conf.bridge.clone(),
                mac: br.mac.map(|m| format_mac(&m)).unwrap_or_default(),
                ..Interface::default()
            },
            Interface {
                name: host_name.clone(),
                mac: format_mac(&host_mac),
                ..Interface::default()
            },
            Interface {
                name: args.ifname.clone(),
                mac: format_mac(&cont_mac),
                sandbox: args
                    .netns
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                ..Interface::default()
            },
        ],
        ..CniResult::default()
    };

    if let Some(ipam_res) = ipam {
        layer3(
            args,
            conf,
            ns,
            &mut nl,
            &br,
            &mut cnl,
            cont_idx,
            ipam_res,
            &mut result,
        )?;
        st.ips = result.ips.iter().map(|i| i.address).collect();
        trace.at("layer3");
    } else if !conf.disable_container_interface {
        cnl.link_set_up(cont_idx).map_err(nl_err(format!(
            "setting {} up in the container",
            args.ifname
        )))?;
    }

    // One batch per table family: this attachment's masquerade and
    // spoof-check elements, and the shared bridge elements (every bridge
    // rnet uses must be known for isolation to hold).
    let masq: Vec<IpNet> = if conf.ip_masq {
        st.ips.clone()
    } else {
        Vec::new()
    };
    let spoof_mac = conf.macspoofchk.then_some(cont_mac);
    undo.fw = Some(fw::Installed {
        tag: tag.clone(),
        masq: masq.clone(),
        spoof_veth: spoof_mac.map(|_| host_name.clone()),
        scan: false,
    });
    fw::install(
        &FwAttachment {
            tag: &tag,
            bridge: &conf.bridge,
            host_veth: &host_name,
            masq: &masq,
            isolation: conf.isolation,
            spoof_mac,
            new_bridge,
        },
        &conf.state_root,
    )?;
    st.masq = !masq.is_empty();
    st.spoofchk = spoof_mac.is_some();
    st.isolated = conf.isolation;
    trace.at("nft");
    if !conf.disable_container_interface {
        wait_port_up(&mut nl, host_idx, &host_name)?;
        trace.at("port up");
    }

    // A bridge whose address was not set takes the lowest of its ports'
    // addresses, so the new port may have changed it: read it again (as the
    // reference does) unless it cannot have changed, i.e. the bridge already
    // had a port up (carrier) and this port's address is higher than its own.
    let unchanged = br.running && br.mac.is_some_and(|m| host_mac > m);
    if !unchanged {
        if let Some(b) = nl
            .link_by_index(br.index)
            .map_err(nl_err(format!("looking up bridge {}", conf.bridge)))?
        {
            if let (Some(m), Some(i)) = (b.mac, result.interfaces.first_mut()) {
                i.mac = format_mac(&m);
            }
        }
    }

    if let Some(dns) = &args.conf.dns {
        if !dns.is_empty() {
            result.dns = dns.clone();
        }
    }
    // Test hook (as the reference's debugPostIPAMError): fail after
    // everything was set up, to prove the rollback.
    if std::env::var_os("RNET_BRIDGE_TEST_FAIL_LATE").is_some() {
        return Err(CniError::internal(
            "failing on purpose after setup (RNET_BRIDGE_TEST_FAIL_LATE is set)",
        ));
    }
    write_state(&path, &st)?;
    undo.armed = false;
    Ok(result)
}

/// How long ADD waits for its bridge port to come up (the reference's bound).
const PORT_UP_TIMEOUT: Duration = Duration::from_millis(2500);

/// Waits until bridge port `idx` (the host end of the veth) is up, as the
/// reference does before it answers. The kernel starts forwarding through a
/// port in its link-watch work, which runs after both ends were set up and
/// needs the rtnl lock; until then frames to and from the container are
/// dropped, so a container started at once could lose its first packets.
/// It is usually up by now (one request); otherwise polled with growing
/// pauses, for at most [`PORT_UP_TIMEOUT`].
fn wait_port_up(nl: &mut Netlink, idx: u32, name: &str) -> Result<(), CniError> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(50);
    loop {
        match nl
            .link_by_index(idx)
            .map_err(nl_err(format!("looking up bridge port {name}")))?
        {
            Some(l) if l.running => return Ok(()),
            Some(_) => {}
            None => {
                return Err(CniError::new(
                    code::NETLINK,
                    format!("bridge port {name} disappeared during ADD"),
                ));
            }
        }
        if start.elapsed() >= PORT_UP_TIMEOUT {
            return Err(CniError::new(
                code::PORT_NOT_UP,
                format!(
                    "bridge port {name} is not up {} ms after both ends were set up: \
                     the kernel's link-watch work has not run (something holds the rtnl lock?)",
                    PORT_UP_TIMEOUT.as_millis()
                ),
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The address of a host-side veth: random, locally administered, with the
/// first octet `fe` (as libvirt gives its tap devices), above any address a
/// bridge is likely to have, so that attaching the port never changes the
/// address of a bridge that takes its lowest port's.
fn host_port_mac() -> [u8; 6] {
    let mut mac = random_mac();
    mac[0] = 0xfe;
    mac
}

/// Creates the bridge, or reuses it if it exists and is a bridge; `accept_ra=0`
/// on it (CVE-2020-10749), promiscuous mode if asked, up. Also says whether
/// the bridge is new: it did not exist when this ADD looked, or no port of
/// it is up yet (a first ADD on this host, or one racing with it: rnet's
/// tables may not exist yet).
fn ensure_bridge(nl: &mut Netlink, conf: &BridgeConf) -> Result<(Link, bool), CniError> {
    let name = &conf.bridge;
    let opts = BridgeOpts {
        mtu: conf.mtu,
        // Its own address, set: otherwise the kernel gives the bridge the
        // lowest address among its ports, which changes as containers come
        // and go, and every neighbour's ARP entry for the gateway goes stale
        // (kubernetes#30783, netavark#833, lxc#604).
        mac: Some(random_mac()),
        vlan_filtering: conf.vlan_filtering().then_some(true),
        // Without a multicast querier on the bridge (there is none unless
        // someone adds one) the bridge floods multicast either way; snooping
        // only adds work that grows with the ports, on every port change.
        mcast_snooping: Some(false),
        up: true,
        ..BridgeOpts::default()
    };
    let lookup = |nl: &mut Netlink| {
        nl.link_by_name(name)
            .map_err(nl_err(format!("looking up bridge {name}")))
    };
    // Looked up first: it exists for every ADD but the first.
    // `fresh`: the bridge did not exist when this ADD looked, or has no port
    // up yet; `created` is narrower: this ADD made it.
    let (br, created, fresh) = match lookup(nl)? {
        Some(br) => {
            let fresh = !br.running;
            (br, false, fresh)
        }
        None => {
            let created = match nl.create_bridge(name, &opts) {
                Ok(_) => true,
                // Another ADD made it in between.
                Err(e) if e.is_exists() => false,
                Err(e) if e.errno() == Some(libc::EOPNOTSUPP) && conf.vlan_filtering() => {
                    return Err(vlan_unsupported(name, e));
                }
                Err(e) => return Err(nl_err(format!("creating bridge {name}"))(e)),
            };
            let br = lookup(nl)?.ok_or_else(|| {
                CniError::new(
                    code::NETLINK,
                    format!("bridge {name} vanished right after it was created or found"),
                )
            })?;
            (br, created, true)
        }
    };
    if br.kind.as_deref() != Some("bridge") {
        return Err(CniError::invalid_config(format!(
            "{name:?} already exists but is not a bridge (it is a {}); choose another \"bridge\" name",
            br.kind.as_deref().unwrap_or("device without a kind")
        )));
    }
    if created || !br.up || conf.promisc != br.promisc() {
        // accept_ra: we own the routes on this interface. Best effort, as the reference.
        let _ = rnet_netlink::sysctl_set(
            &format!("net.ipv6.conf.{}.accept_ra", name.replace('.', "/")),
            "0",
        );
    }
    if conf.promisc && !br.promisc() {
        nl.link_set_promisc(br.index, true)
            .map_err(nl_err(format!("setting promiscuous mode on {name}")))?;
    }
    if !br.up {
        nl.link_set_up(br.index)
            .map_err(nl_err(format!("setting bridge {name} up")))?;
    }
    Ok((br, fresh))
}

fn vlan_unsupported(what: &str, e: NetlinkError) -> CniError {
    CniError::new(
        code::NETLINK,
        format!(
            "{what}: the kernel does not support bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING); remove \"vlan\"/\"vlanTrunk\" or use a kernel that has it"
        ),
    )
    .with_details(e.to_string())
}

/// Creates the veth pair in one request; on `EEXIST` says which name is taken.
/// A leftover pair of this very attachment (same alias) is replaced once.
fn create_veth(
    nl: &mut Netlink,
    spec: &VethSpec<'_>,
    bridge: &str,
    ns: &NetNs,
    tag: &str,
) -> Result<(u32, Option<u32>), CniError> {
    let mut retried = false;
    let mut waited = 0u32;
    loop {
        match nl.create_veth_pair(spec) {
            Ok(i) => return Ok(i),
            Err(e) if e.is_exists() => {
                // Our own leftover (a crashed ADD, or a DEL whose detached
                // deletion has not finished): delete it now and retry once.
                let host = nl
                    .link_by_name(spec.name)
                    .map_err(nl_err(format!("looking up {}", spec.name)))?;
                if let Some(l) = &host {
                    if crate::state::veth_is_ours(l, tag) && !retried {
                        match nl.link_del(l.index) {
                            Ok(()) => {}
                            Err(e) if e.is_not_found() => {}
                            Err(e) => {
                                return Err(nl_err(format!("deleting leftover {}", spec.name))(e));
                            }
                        }
                        retried = true;
                        continue;
                    }
                }
                let mut cnl = Netlink::in_netns(ns)
                    .map_err(nl_err("opening netlink in the container namespace"))?;
                let peer = cnl
                    .link_by_name(spec.peer_name)
                    .map_err(nl_err("looking up the container interface"))?;
                if let Some(p) = &peer {
                    // The container half of this attachment's own pair whose
                    // deletion (a DEL's detached reaper, or ours just now) is
                    // still going through the kernel: its host half is gone
                    // or is ours. Wait for it (bounded) instead of failing.
                    let host_half = match p.peer_index {
                        Some(i) => nl
                            .link_by_index(i)
                            .map_err(nl_err("looking up the veth peer"))?,
                        None => None,
                    };
                    let ours = p.kind.as_deref() == Some("veth")
                        && host_half.as_ref().is_none_or(|h| {
                            h.name == spec.name && crate::state::veth_is_ours(h, tag)
                        });
                    if ours && waited < 50 {
                        if let Some(h) = host_half {
                            let _ = nl.link_del(h.index);
                        }
                        waited += 1;
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        continue;
                    }
                }
                if peer.is_some() {
                    return Err(CniError::new(
                        code::INTERFACE_EXISTS,
                        format!(
                            "container veth name {:?} already exists in the container namespace; DEL the attachment first or choose another CNI_IFNAME",
                            spec.peer_name
                        ),
                    ));
                }
                match host {
                    Some(l) => {
                        return Err(CniError::new(
                            code::NETLINK,
                            format!(
                                "host veth name {} for attachment {tag:?} is already taken by another interface (alias {:?}); DEL that attachment or remove the interface",
                                spec.name,
                                l.alias.unwrap_or_default()
                            ),
                        ));
                    }
                    None if waited < 50 => {
                        // Neither name is visible, yet the kernel says one
                        // exists: an old device of that name is still being
                        // unregistered (its sysfs entry goes last, after an
                        // RCU grace period). Wait for it, bounded.
                        waited += 1;
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        continue;
                    }
                    None => {
                        return Err(nl_err(format!(
                            "creating veth {} <-> {}",
                            spec.name, spec.peer_name
                        ))(e));
                    }
                }
            }
            Err(e) if e.errno() == Some(libc::EXFULL) && spec.master.is_some() => {
                // The kernel rolled the new pair back (enslaving is part of
                // the creation request).
                return Err(CniError::new(
                    code::BRIDGE_FULL,
                    format!(
                        "bridge {} already has 1023 ports, the most a Linux bridge can have \
                         (the kernel answered EXFULL); attach the container to another network, \
                         or remove stale containers (rnet gc)",
                        bridge
                    ),
                ));
            }
            Err(e) => {
                return Err(nl_err(format!(
                    "creating veth {} <-> {}",
                    spec.name, spec.peer_name
                ))(e));
            }
        }
    }
}

/// IPv6 off on the host veth: a bridge port needs no layer 3. Without this
/// the kernel gives every port, once its carrier is up, a multicast route
/// (`ff00::/8 dev vethX table local`), and every link event of any device
/// walks the whole IPv6 routing table: with 900 ports that made each ADD
/// 0.24 ms slower (BENCHMARKS.md, section 4). Bridged IPv6 traffic does not
/// depend on it. Best effort: a kernel without IPv6 has no such setting, and
/// the port already has no IPv6 address (`host_no_ipv6_ll`).
fn disable_port_ipv6(host: &str) {
    let key = format!("net.ipv6.conf.{host}.disable_ipv6");
    match rnet_netlink::sysctl_set(&key, "1") {
        Ok(()) => {}
        Err(rnet_netlink::NetlinkError::Sysctl { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => eprintln!("rnet-bridge: cannot turn IPv6 off on the bridge port {host}: {e}"),
    }
}

/// Layer-2 work that does not need the addresses: port options, VLANs, the
/// container socket (opened on a fresh thread inside the container) and the
/// container interface.
/// The container namespace's netlink socket, being opened on its own thread.
type ContainerNetlink<'scope> = NsTask<'scope, Result<Netlink, NetlinkError>>;

fn layer2(
    nl: &mut Netlink,
    conf: &BridgeConf,
    host_idx: u32,
    host_name: &str,
    ifname: &str,
    peer_idx: Option<u32>,
    cnl: ContainerNetlink<'_>,
) -> Result<(Netlink, u32), CniError> {
    if conf.hairpin || conf.port_isolation {
        let opts = BridgePortOpts {
            hairpin: conf.hairpin.then_some(true),
            isolated: conf.port_isolation.then_some(true),
            learning: None,
        };
        nl.bridge_port_set(host_idx, &opts).map_err(nl_err(format!(
            "setting bridge port options on {host_name}"
        )))?;
    }
    if conf.vlan != 0 || !conf.vlan_trunk.is_empty() {
        setup_vlans(nl, conf, host_idx, host_name)?;
    }
    let mut cnl = cnl
        .join()
        .map_err(|e| rnet_plugin::ns_error(e).context("entering the container namespace"))?
        .map_err(nl_err("opening netlink in the container namespace"))?;
    // The kernel's echo of the veth creation named the peer's index; look
    // it up only if it did not.
    if let Some(i) = peer_idx {
        return Ok((cnl, i));
    }
    let cont = cnl
        .link_by_name(ifname)
        .map_err(nl_err(format!("looking up {ifname} in the container")))?
        .ok_or_else(|| {
            CniError::new(
                code::NETLINK,
                format!("{ifname} is not in the container namespace right after its creation"),
            )
        })?;
    Ok((cnl, cont.index))
}

/// VLANs on the host veth, as the reference: drop the default VLAN unless
/// `preserveDefaultVlan`, `vlan` as PVID untagged, trunk VLANs tagged, and
/// VLAN 1 as native when only a trunk is given.
fn setup_vlans(
    nl: &mut Netlink,
    conf: &BridgeConf,
    host_idx: u32,
    host_name: &str,
) -> Result<(), CniError> {
    let map = |e: NetlinkError| {
        if e.errno() == Some(libc::EOPNOTSUPP) {
            vlan_unsupported(&format!("VLANs on {host_name}"), e)
        } else {
            nl_err(format!("setting VLANs on {host_name}"))(e)
        }
    };
    if !conf.preserve_default_vlan {
        // A new port carries only the bridge's default PVID (1 unless changed).
        match nl.bridge_vlan_del(host_idx, 1, false) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(map(e)),
        }
    }
    if conf.vlan != 0 {
        nl.bridge_vlan_add(host_idx, conf.vlan, true, true, false)
            .map_err(map)?;
    }
    for v in &conf.vlan_trunk {
        nl.bridge_vlan_add(host_idx, *v, false, false, false)
            .map_err(map)?;
    }
    if conf.vlan == 0 && !conf.vlan_trunk.is_empty() {
        nl.bridge_vlan_add(host_idx, 1, true, true, false)
            .map_err(map)?;
    }
    Ok(())
}

/// The first address of `net`'s subnet: the gateway when IPAM names none.
pub fn first_host(net: &IpNet) -> IpAddr {
    match net.network() {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(1))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(1))),
    }
}

fn default_net(v4: bool) -> IpNet {
    if v4 {
        IpNet::V4(ipnet::Ipv4Net::default())
    } else {
        IpNet::V6(ipnet::Ipv6Net::default())
    }
}

/// Merges the IPAM result into ours as the reference does (all addresses on
/// the container interface, computed gateways, default routes), and returns
/// the gateway addresses (with the container's prefix length) for the bridge.
pub fn merge_ipam(conf: &BridgeConf, ipam: CniResult, result: &mut CniResult) -> Vec<IpNet> {
    result.ips = ipam.ips;
    result.routes = ipam.routes;
    result.dns = ipam.dns;
    let mut gws = Vec::new();
    let mut default_found = [false, false];
    for ipc in &mut result.ips {
        let v4 = ipc.address.addr().is_ipv4();
        let fam = usize::from(!v4);
        ipc.interface = Some(CONTAINER_IF);
        if ipc.gateway.is_none() && conf.is_gateway {
            ipc.gateway = Some(first_host(&ipc.address));
        }
        if conf.is_default_gateway && !default_found[fam] {
            let dn = default_net(v4);
            default_found[fam] = result.routes.iter().any(|r| r.gw.is_some() && r.dst == dn);
            if !default_found[fam] {
                result.routes.push(Route::new(dn, ipc.gateway));
                default_found[fam] = true;
            }
        }
        if conf.is_gateway {
            if let Some(gw) = ipc.gateway {
                if let Ok(n) = IpNet::new(gw, ipc.address.prefix_len()) {
                    gws.push(n);
                }
            }
        }
    }
    gws
}

#[allow(clippy::too_many_arguments)]
fn layer3(
    args: &CmdArgs,
    conf: &BridgeConf,
    ns: &NetNs,
    nl: &mut Netlink,
    br: &Link,
    cnl: &mut Netlink,
    cont_idx: u32,
    ipam: CniResult,
    result: &mut CniResult,
) -> Result<(), CniError> {
    let ipam_name = conf.ipam_type.as_deref().unwrap_or_default();
    if ipam.ips.is_empty() {
        return Err(CniError::internal(format!(
            "IPAM plugin {ipam_name} returned missing IP config (no addresses)"
        )));
    }
    let gws = merge_ipam(conf, ipam, result);
    let ifname = &args.ifname;
    for ipc in &result.ips {
        if let Some(gw) = ipc.gateway {
            if gw.is_ipv4() != ipc.address.addr().is_ipv4() {
                return Err(CniError::internal(format!(
                    "IPAM plugin {ipam_name} returned gateway {gw} of another family than address {}",
                    ipc.address
                )));
            }
        }
    }
    let has_v6 = result.ips.iter().any(|i| i.address.addr().is_ipv6());
    // The container keeps IPv6 on its interface when it gets an IPv6
    // address, or when asked to (`ipv6LinkLocal`); then DAD is set as the
    // reference does. Otherwise the interface gets no IPv6 address at all
    // (below), and these /proc/sys writes are skipped.
    if has_v6 || conf.ipv6_link_local {
        let key_if = ifname.replace('.', "/");
        let enable_dad = conf.enable_dad;
        ns.run(move || -> Result<(), NetlinkError> {
            if has_v6 {
                for i in ["lo", key_if.as_str()] {
                    let k = format!("net.ipv6.conf.{i}.disable_ipv6");
                    if rnet_netlink::sysctl_get(&k).is_ok_and(|v| v != "0") {
                        rnet_netlink::sysctl_set(&k, "0")?;
                    }
                }
            }
            // Best effort, as the reference.
            if enable_dad {
                let _ =
                    rnet_netlink::sysctl_set(&format!("net.ipv6.conf.{key_if}.enhanced_dad"), "1");
                let _ =
                    rnet_netlink::sysctl_set(&format!("net.ipv6.conf.{key_if}.accept_dad"), "1");
            } else {
                let _ =
                    rnet_netlink::sysctl_set(&format!("net.ipv6.conf.{key_if}.accept_dad"), "0");
            }
            if has_v6 {
                rnet_netlink::sysctl_set(&format!("net.ipv6.conf.{key_if}.keep_addr_on_down"), "1")
            } else {
                Ok(())
            }
        })
        .map_err(|e| rnet_plugin::ns_error(e).context("entering the container namespace"))?
        .map_err(nl_err(format!(
            "enabling IPv6 on {ifname} in the container"
        )))?;
    }
    // arp_notify (as the reference) and, on a network without IPv6, no
    // IPv6 link-local address (see docs/config.md, "ipv6LinkLocal"), in one
    // request through netlink rather than /proc/sys, whose lookups cost more
    // with every namespace on the host. Best effort, as the reference.
    let no_ll = !has_v6 && !conf.ipv6_link_local;
    let _ = cnl.link_set_ip_conf(cont_idx, &[(Ipv4Conf::ArpNotify, 1)], no_ll);
    // Up first, then the addresses, as the reference: the kernel's
    // arp_notify announcement at link-up then has no address to announce, so
    // no gratuitous ARP is flooded to every port of the bridge on ADD (it
    // cost 3.4 ms per ADD with 1000 containers on the bridge); arp_notify
    // stays on for later address and MAC changes.
    cnl.link_set_up(cont_idx)
        .map_err(nl_err(format!("setting {ifname} up in the container")))?;
    for ipc in &result.ips {
        cnl.addr_add(cont_idx, ipc.address).map_err(nl_err(format!(
            "adding {} to {ifname} in the container",
            ipc.address
        )))?;
    }
    if has_v6 && conf.enable_dad {
        settle_dad(cnl, cont_idx, ifname)?;
    }
    let gw_of = |v4: bool| {
        result
            .ips
            .iter()
            .find(|i| i.address.addr().is_ipv4() == v4)
            .and_then(|i| i.gateway)
    };
    for r in &result.routes {
        let mut spec = RouteSpec::new(r.dst);
        spec.gateway = r.gw.or_else(|| gw_of(r.dst.addr().is_ipv4()));
        spec.oif = Some(cont_idx);
        spec.metric = r.priority;
        spec.table = r.table;
        spec.scope = r.scope.map(Scope::from);
        spec.mtu = r.mtu;
        spec.advmss = r.advmss;
        match cnl.route_add(&spec) {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => {
                return Err(nl_err(format!(
                    "adding route {}{} in the container",
                    r.dst,
                    spec.gateway
                        .map(|g| format!(" via {g}"))
                        .unwrap_or_default()
                ))(e));
            }
        }
    }

    if conf.is_gateway && !gws.is_empty() {
        let gw_link = if conf.vlan != 0 {
            let l = ensure_vlan_gateway(nl, conf, br)?;
            result.interfaces.push(Interface {
                name: l.name.clone(),
                mac: l.mac.map(|m| format_mac(&m)).unwrap_or_default(),
                ..Interface::default()
            });
            l
        } else {
            br.clone()
        };
        let mut fams = [false, false];
        for gw in &gws {
            ensure_gateway_addr(nl, &gw_link, *gw, conf.force_address)?;
            fams[usize::from(gw.addr().is_ipv6())] = true;
        }
        for (i, key) in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"]
            .iter()
            .enumerate()
        {
            let family = if i == 0 { Family::V4 } else { Family::V6 };
            if fams[i] && nl.forwarding_all(family).ok().flatten() != Some(true) {
                rnet_netlink::sysctl_set(key, "1")
                    .map_err(nl_err("enabling forwarding (isGateway)"))?;
            }
        }
    }
    Ok(())
}

/// Waits (bounded) until no IPv6 address of `idx` is tentative.
fn settle_dad(cnl: &mut Netlink, idx: u32, ifname: &str) -> Result<(), CniError> {
    let deadline = Instant::now() + DAD_TIMEOUT;
    loop {
        let addrs = cnl
            .addr_list(Some(idx), Some(Family::V6))
            .map_err(nl_err(format!("listing addresses of {ifname}")))?;
        if let Some(a) = addrs.iter().find(|a| a.is_dadfailed()) {
            return Err(CniError::new(
                code::NETLINK,
                format!(
                    "duplicate address detection failed for {} on {ifname}: the address is in use on the network",
                    a.addr
                ),
            ));
        }
        if !addrs.iter().any(|a| a.is_tentative()) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CniError::try_again(format!(
                "IPv6 addresses on {ifname} still tentative after {DAD_TIMEOUT:?} (enabledad)"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The gateway address on the bridge: add it (EEXIST is fine). Another
/// address of the same IPv4 family, or an overlapping IPv6 one, is an error
/// unless `forceAddress` (then it is replaced), as the reference.
fn ensure_gateway_addr(
    nl: &mut Netlink,
    link: &Link,
    gw: IpNet,
    force: bool,
) -> Result<(), CniError> {
    let fam = Family::of(&gw.addr());
    let addrs = nl
        .addr_list(Some(link.index), Some(fam))
        .map_err(nl_err(format!("listing addresses of {}", link.name)))?;
    for a in &addrs {
        if a.addr == gw {
            return Ok(());
        }
        if a.scope == Scope::Link {
            continue; // IPv6 link-local: not a configured gateway.
        }
        let clash = fam == Family::V4 || a.addr.contains(&gw.addr()) || gw.contains(&a.addr.addr());
        if clash {
            if force {
                nl.addr_del(link.index, a.addr)
                    .map_err(nl_err(format!("removing {} from {}", a.addr, link.name)))?;
            } else {
                return Err(CniError::invalid_config(format!(
                    "{:?} already has an IP address different from {gw} ({}); set \"forceAddress\" to replace it",
                    link.name, a.addr
                )));
            }
        }
    }
    match nl.addr_add(link.index, gw) {
        Ok(()) => {}
        Err(e) if e.is_exists() => return Ok(()),
        Err(e) => return Err(nl_err(format!("adding gateway {gw} to {}", link.name))(e)),
    }
    // Pin the bridge MAC (otherwise it follows the lowest port MAC as ports
    // churn). Read it now: it was all zeros until the first port joined.
    let mac = nl
        .link_by_index(link.index)
        .map_err(nl_err(format!("looking up {}", link.name)))?
        .and_then(|l| l.mac)
        .filter(|m| m.iter().any(|b| *b != 0));
    if let Some(mac) = mac {
        nl.link_set_mac(link.index, mac)
            .map_err(nl_err(format!("pinning the MAC of {}", link.name)))?;
    }
    Ok(())
}

/// With `vlan` and `isGateway`, the reference puts the gateway on a veth
/// `<bridge>.<vlan>` whose peer is an access port of that VLAN.
fn ensure_vlan_gateway(nl: &mut Netlink, conf: &BridgeConf, br: &Link) -> Result<Link, CniError> {
    let name = format!("{}.{}", conf.bridge, conf.vlan);
    if let Some(l) = nl
        .link_by_name(&name)
        .map_err(nl_err(format!("looking up {name}")))?
    {
        return Ok(l);
    }
    rnet_netlink::validate_ifname(&name).map_err(|e| {
        CniError::invalid_config(format!(
            "VLAN gateway interface {name:?} is not a valid name ({e}); use a shorter \"bridge\" name"
        ))
    })?;
    let port = host_veth_name(&conf.bridge, &name);
    let idx = nl
        .create_veth(&VethSpec {
            name: &port,
            peer_name: &name,
            mtu: conf.mtu,
            master: Some(br.index),
            up: true,
            ..VethSpec::default()
        })
        .map_err(nl_err(format!("creating VLAN gateway {name}")))?;
    setup_vlans(nl, conf, idx, &port)?;
    let l = nl
        .link_by_name(&name)
        .map_err(nl_err(format!("looking up {name}")))?
        .ok_or_else(|| CniError::new(code::NETLINK, format!("{name} vanished after creation")))?;
    nl.link_set_up(l.index)
        .map_err(nl_err(format!("setting {name} up")))?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use rnet_cni::IpConfig;

    fn conf(gw: bool, dgw: bool) -> BridgeConf {
        let mut c = BridgeConf::parse(&serde_json::Map::new(), None, Some("x".into())).unwrap();
        c.is_gateway = gw || dgw;
        c.is_default_gateway = dgw;
        c
    }

    fn ip(a: &str, gw: Option<&str>) -> IpConfig {
        IpConfig {
            interface: None,
            address: a.parse().unwrap(),
            gateway: gw.map(|g| g.parse().unwrap()),
        }
    }

    #[test]
    fn gateways_and_default_routes() {
        let ipam = CniResult {
            ips: vec![
                ip("10.1.2.7/24", None),
                ip("fd00:1::7/64", Some("fd00:1::fe")),
            ],
            ..CniResult::default()
        };
        let mut r = CniResult::default();
        let gws = merge_ipam(&conf(false, true), ipam.clone(), &mut r);
        assert_eq!(r.ips[0].gateway, Some("10.1.2.1".parse().unwrap()));
        assert_eq!(r.ips[1].gateway, Some("fd00:1::fe".parse().unwrap()));
        assert!(r.ips.iter().all(|i| i.interface == Some(2)));
        assert_eq!(
            gws,
            vec![
                "10.1.2.1/24".parse::<IpNet>().unwrap(),
                "fd00:1::fe/64".parse().unwrap()
            ]
        );
        assert_eq!(r.routes.len(), 2);
        assert_eq!(r.routes[0].dst, "0.0.0.0/0".parse::<IpNet>().unwrap());
        assert_eq!(r.routes[1].gw, Some("fd00:1::fe".parse().unwrap()));

        // No gateway without isGateway, no default route without isDefaultGateway.
        let mut r = CniResult::default();
        let gws = merge_ipam(&conf(false, false), ipam.clone(), &mut r);
        assert!(gws.is_empty());
        assert_eq!(r.ips[0].gateway, None);
        assert!(r.routes.is_empty());

        // IPAM's own default route wins.
        let mut with_default = ipam;
        with_default.routes.push(Route::new(
            "0.0.0.0/0".parse().unwrap(),
            Some("10.1.2.254".parse().unwrap()),
        ));
        let mut r = CniResult::default();
        merge_ipam(&conf(true, true), with_default, &mut r);
        assert_eq!(
            r.routes.iter().filter(|r| r.dst.addr().is_ipv4()).count(),
            1
        );
    }

    #[test]
    fn first_hosts() {
        assert_eq!(
            first_host(&"10.1.2.7/24".parse().unwrap()),
            "10.1.2.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            first_host(&"fd00::9/64".parse().unwrap()),
            "fd00::1".parse::<IpAddr>().unwrap()
        );
    }
}
