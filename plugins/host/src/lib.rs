//! # rnet-host: the container shares the host's network
//!
//! Docker's `--network host` as a CNI plugin. The runtime passes the host's own
//! namespace as `CNI_NETNS` (the container joins it); ADD verifies that by
//! comparing namespace inodes with the namespace the plugin runs in, and fails
//! with a clear error otherwise, because configuring "host networking" in a
//! private namespace would silently leave the container without a network.
//!
//! The result reports the host's real interfaces (up, not loopback, with a
//! global address), their addresses with the default gateway of each family,
//! the default routes, and the host's `/etc/resolv.conf` as DNS, so a runtime
//! records the addresses the container really has. Nothing is changed, so DEL
//! has nothing to undo and always succeeds; CHECK verifies the namespace and
//! that the addresses of `prevResult` are still on the host.

use rnet_cni::{CmdArgs, CniError, CniResult, Dns, Interface, IpConfig, Plugin, Route, code};
use rnet_netlink::{Family, Netlink};
use rnet_netns::NetNs;
use rnet_plugin::{container_netns, netlink_error, ns_error};
use std::net::IpAddr;

/// The plugin.
pub struct HostPlugin;

fn require_host_ns(args: &CmdArgs) -> Result<(), CniError> {
    let target = container_netns(args)?;
    let own = NetNs::current().map_err(ns_error)?;
    let (t, o) = (target.id().map_err(ns_error)?, own.id().map_err(ns_error)?);
    if t != o {
        return Err(CniError::new(
            code::NAMESPACE,
            format!(
                "CNI_NETNS {} ({t}) is not the host's network namespace ({o}): the host network shares the namespace the runtime runs in; pass that namespace (e.g. /proc/self/ns/net of the runtime) or use the bridge network",
                args.netns
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !a.is_loopback() && !a.is_link_local(),
        IpAddr::V6(a) => !a.is_loopback() && (a.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// The host's view: interfaces with addresses, default routes, resolv.conf.
fn host_result() -> Result<CniResult, CniError> {
    let mut nl = Netlink::new().map_err(netlink_error)?;
    let links = nl.link_list().map_err(netlink_error)?;
    let addrs = nl.addr_list(None, None).map_err(netlink_error)?;
    let mut defaults = Vec::new();
    for fam in [Family::V4, Family::V6] {
        for r in nl.route_list(fam, None).map_err(netlink_error)? {
            if r.dst.prefix_len() == 0 && (r.table == 254 || r.table == 0) {
                defaults.push(r);
            }
        }
    }
    let mut result = CniResult::default();
    for link in links.iter().filter(|l| l.up && l.name != "lo") {
        let mine: Vec<_> = addrs
            .iter()
            .filter(|a| a.index == link.index && is_global(a.addr.addr()))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let if_idx = result.interfaces.len();
        result.interfaces.push(Interface {
            name: link.name.clone(),
            mac: link
                .mac
                .map(|m| rnet_netlink::format_mac(&m))
                .unwrap_or_default(),
            mtu: Some(link.mtu),
            ..Interface::default()
        });
        for a in mine {
            let gateway = defaults
                .iter()
                .find(|r| {
                    r.oif == Some(link.index)
                        && r.gateway
                            .is_some_and(|g| g.is_ipv4() == a.addr.addr().is_ipv4())
                })
                .and_then(|r| r.gateway);
            result.ips.push(IpConfig {
                interface: Some(if_idx),
                address: a.addr,
                gateway,
            });
        }
    }
    for r in &defaults {
        if r.gateway.is_some() || r.oif.is_some() {
            result.routes.push(Route::new(r.dst, r.gateway));
        }
    }
    if let Ok(text) = std::fs::read_to_string("/etc/resolv.conf") {
        result.dns = Dns::from_resolv_conf(&text);
    }
    Ok(result)
}

impl Plugin for HostPlugin {
    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        require_host_ns(args)?;
        host_result()
    }

    fn del(&self, _args: &CmdArgs) -> Result<(), CniError> {
        // Nothing was changed on ADD; DEL succeeds in every state.
        Ok(())
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        require_host_ns(args)?;
        let Some(prev) = &args.conf.prev_result else {
            return Ok(());
        };
        let now = host_result()?;
        for ip in &prev.ips {
            if !now
                .ips
                .iter()
                .any(|n| n.address.addr() == ip.address.addr())
            {
                return Err(CniError::new(
                    code::CHECK_FAILED,
                    format!(
                        "address {} of the host network is no longer on any host interface",
                        ip.address
                    ),
                ));
            }
        }
        Ok(())
    }
}
