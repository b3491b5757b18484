//! # rnet-none: the `none` network (loopback only)
//!
//! A drop-in for the reference `loopback` plugin (same config, same result shape,
//! installable under the name `loopback`): ADD brings the container's `lo` up and
//! reports its addresses; DEL brings it down and succeeds when the namespace is
//! already gone; CHECK fails when `lo` is down. As in the reference, the
//! interface is always `lo` whatever `CNI_IFNAME` says, a `prevResult` is passed
//! through unchanged, and a non-loopback address on `lo` is an error.

use rnet_cni::{CmdArgs, CniError, CniResult, Interface, IpConfig, Plugin, code};
use rnet_netlink::Netlink;
use rnet_plugin::{container_netns, container_netns_for_del, netlink_error};

/// The plugin.
pub struct NonePlugin;

fn lo_index(nl: &mut Netlink) -> Result<u32, CniError> {
    match nl.link_by_name("lo").map_err(netlink_error)? {
        Some(l) => Ok(l.index),
        None => Err(CniError::internal(
            "the container namespace has no loopback interface \"lo\"",
        )),
    }
}

impl Plugin for NonePlugin {
    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let ns = container_netns(args)?;
        let mut nl = Netlink::in_netns(&ns).map_err(netlink_error)?;
        let idx = lo_index(&mut nl)?;
        nl.link_set_up(idx).map_err(netlink_error)?;
        let addrs = nl.addr_list(Some(idx), None).map_err(netlink_error)?;
        let mut ips = Vec::new();
        // v4 first, then v6, as the reference lists them.
        for want_v4 in [true, false] {
            for a in addrs.iter().filter(|a| a.addr.addr().is_ipv4() == want_v4) {
                if !a.addr.addr().is_loopback() {
                    return Err(CniError::invalid_config(format!(
                        "loopback interface found with non-loopback address {:?}",
                        a.addr.addr().to_string()
                    )));
                }
                ips.push(IpConfig {
                    interface: Some(0),
                    address: a.addr,
                    gateway: None,
                });
            }
        }
        if let Some(prev) = &args.conf.prev_result {
            return Ok(prev.clone());
        }
        Ok(CniResult {
            interfaces: vec![Interface {
                name: "lo".into(),
                mac: "00:00:00:00:00:00".into(),
                sandbox: args
                    .netns
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                ..Interface::default()
            }],
            ips,
            ..CniResult::default()
        })
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let Some(ns) = container_netns_for_del(args)? else {
            return Ok(());
        };
        let mut nl = Netlink::in_netns(&ns).map_err(netlink_error)?;
        match nl.link_by_name("lo").map_err(netlink_error)? {
            Some(l) => nl.link_set_down(l.index).map_err(netlink_error),
            None => Ok(()),
        }
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let ns = container_netns(args)?;
        let mut nl = Netlink::in_netns(&ns).map_err(netlink_error)?;
        match nl.link_by_name("lo").map_err(netlink_error)? {
            Some(l) if l.up => Ok(()),
            Some(_) => Err(CniError::new(
                code::CHECK_FAILED,
                "loopback interface is down; DEL and ADD the container again",
            )),
            None => Err(CniError::new(
                code::CHECK_FAILED,
                "the container namespace has no loopback interface",
            )),
        }
    }
}
