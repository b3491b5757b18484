//! CHECK: the attachment in the kernel against `prevResult`. Every difference
//! found is reported (not only the first).

use crate::config::BridgeConf;
use crate::fw::{self, FwAttachment};
use crate::ipam::delegate;
use crate::state::attachment_tag;
use rnet_cni::{CmdArgs, CniError, Command, code};
use rnet_netlink::{Family, Netlink, format_mac, parse_mac};
use rnet_plugin::{container_netns, netlink_error};

fn mac_differs(expected: &str, actual: Option<[u8; 6]>) -> bool {
    if expected.is_empty() {
        return false;
    }
    match (parse_mac(expected), actual) {
        (Ok(e), Some(a)) => e != a,
        _ => true,
    }
}

/// CHECK.
pub fn check(args: &CmdArgs) -> Result<(), CniError> {
    let conf = BridgeConf::from_args(args)?;
    let ns = container_netns(args)?;
    if let Some(t) = conf.ipam_type.as_deref() {
        delegate(Command::Check, args, t)?;
    }
    let prev = args.conf.prev_result.as_ref().ok_or_else(|| {
        CniError::invalid_config(
            "Required prevResult missing: CHECK needs the ADD result as prevResult",
        )
    })?;
    let netns_path = args
        .netns
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut diffs: Vec<String> = Vec::new();
    let mut nl = Netlink::new().map_err(netlink_error)?;
    let mut cnl = Netlink::in_netns(&ns).map_err(netlink_error)?;

    // The bridge.
    let br_if = prev.interfaces.iter().find(|i| i.name == conf.bridge);
    let br = nl.link_by_name(&conf.bridge).map_err(netlink_error)?;
    match &br {
        None => diffs.push(format!(
            "bridge {} not found in the host namespace",
            conf.bridge
        )),
        Some(l) => {
            if l.kind.as_deref() != Some("bridge") {
                diffs.push(format!("{} is not a bridge", conf.bridge));
            }
            if let Some(i) = br_if {
                if mac_differs(&i.mac, l.mac) {
                    diffs.push(format!(
                        "bridge {} has MAC {}, prevResult says {}",
                        conf.bridge,
                        l.mac.map(|m| format_mac(&m)).unwrap_or_default(),
                        i.mac
                    ));
                }
            }
            if l.promisc() != conf.promisc {
                diffs.push(format!(
                    "bridge {} promiscuous mode is {}, config says {}",
                    conf.bridge,
                    l.promisc(),
                    conf.promisc
                ));
            }
        }
    }

    // The container interface.
    let cont_pos = prev
        .interfaces
        .iter()
        .position(|i| i.name == args.ifname && i.sandbox == netns_path);
    let cont = cnl.link_by_name(&args.ifname).map_err(netlink_error)?;
    match (cont_pos, &cont) {
        (None, _) => diffs.push(format!(
            "prevResult has no interface {} with sandbox {netns_path}",
            args.ifname
        )),
        (_, None) => diffs.push(format!(
            "interface {} not found in the container",
            args.ifname
        )),
        (Some(pos), Some(l)) => {
            if l.kind.as_deref() != Some("veth") {
                diffs.push(format!("container interface {} is not a veth", args.ifname));
            }
            if let Some(i) = prev.interfaces.get(pos) {
                if mac_differs(&i.mac, l.mac) {
                    diffs.push(format!(
                        "container interface {} has MAC {}, prevResult says {}",
                        args.ifname,
                        l.mac.map(|m| format_mac(&m)).unwrap_or_default(),
                        i.mac
                    ));
                }
            }
        }
    }

    // The host veth: the peer of the container interface, on the bridge.
    if let (Some(c), Some(b)) = (&cont, &br) {
        let mut found = false;
        for i in &prev.interfaces {
            if i.name == conf.bridge || !i.sandbox.is_empty() {
                continue;
            }
            let Some(l) = nl.link_by_name(&i.name).map_err(netlink_error)? else {
                continue;
            };
            if l.kind.as_deref() != Some("veth")
                || c.peer_index != Some(l.index)
                || l.peer_index != Some(c.index)
            {
                continue;
            }
            found = true;
            if l.master != Some(b.index) {
                diffs.push(format!(
                    "host veth {} is not attached to {}",
                    l.name, conf.bridge
                ));
            }
            if mac_differs(&i.mac, l.mac) {
                diffs.push(format!(
                    "host veth {} has MAC {}, prevResult says {}",
                    l.name,
                    l.mac.map(|m| format_mac(&m)).unwrap_or_default(),
                    i.mac
                ));
            }
        }
        if !found {
            diffs.push(format!(
                "the host veth of {} (its peer, on bridge {}) was not found",
                args.ifname, conf.bridge
            ));
        }
    }

    // Addresses and routes in the container.
    if let Some(c) = &cont {
        let addrs = cnl.addr_list(Some(c.index), None).map_err(netlink_error)?;
        for ip in &prev.ips {
            if ip.interface.is_some() && ip.interface != cont_pos {
                continue;
            }
            if !addrs.iter().any(|a| a.addr == ip.address) {
                diffs.push(format!(
                    "address {} is missing on {} in the container",
                    ip.address, args.ifname
                ));
            }
        }
        let mut tables: [Option<Vec<rnet_netlink::Route>>; 2] = [None, None];
        for r in &prev.routes {
            let v4 = r.dst.addr().is_ipv4();
            let slot = usize::from(!v4);
            if tables[slot].is_none() {
                let fam = if v4 { Family::V4 } else { Family::V6 };
                tables[slot] = Some(cnl.route_list(fam, None).map_err(netlink_error)?);
            }
            let have = tables[slot].as_deref().unwrap_or_default();
            let ok = have
                .iter()
                .any(|k| k.dst.trunc() == r.dst.trunc() && (r.gw.is_none() || k.gateway == r.gw));
            if !ok {
                diffs.push(format!(
                    "route to {}{} is missing in the container",
                    r.dst,
                    r.gw.map(|g| format!(" via {g}")).unwrap_or_default()
                ));
            }
        }
    }

    // nftables elements of this attachment.
    let cont_mac = cont.as_ref().and_then(|c| c.mac);
    let masq: Vec<ipnet::IpNet> = if conf.ip_masq {
        prev.ips.iter().map(|i| i.address).collect()
    } else {
        Vec::new()
    };
    let tag = attachment_tag(&args.conf.name, &args.container_id, &args.ifname);
    let host_veth = crate::state::host_veth_name(&args.container_id, &args.ifname);
    diffs.extend(fw::missing(&FwAttachment {
        tag: &tag,
        bridge: &conf.bridge,
        host_veth: &host_veth,
        masq: &masq,
        isolation: conf.isolation,
        spoof_mac: if conf.macspoofchk { cont_mac } else { None },
        new_bridge: false,
    })?);

    if diffs.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            code::CHECK_FAILED,
            format!(
                "CHECK of {} in {} found {} difference(s): {}",
                args.ifname,
                args.container_id,
                diffs.len(),
                diffs.join("; ")
            ),
        ))
    }
}
