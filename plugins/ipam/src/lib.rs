//! # rnet-ipam (plugin): host-local-compatible IPAM as a CNI plugin
//!
//! The CNI glue over the `rnet-ipam` library: ADD allocates one address per
//! range set and returns the abbreviated IPAM result (no interfaces, as the
//! spec wants from an IPAM plugin); DEL releases by container ID and interface
//! and is idempotent; CHECK fails when the attachment holds no lease; STATUS
//! fails with code 50 when a range set is exhausted; GC releases every lease
//! whose attachment is not in `cni.dev/valid-attachments`.
//!
//! Installed under the name `host-local`, it reads and writes the reference
//! plugin's `dataDir` format, so a runtime can switch either way without losing
//! or double-allocating an address.

use rnet_cni::{Attachment, CmdArgs, CniError, CniResult, Dns, IpConfig, Plugin, Route, code};
use rnet_ipam::{Ipam, IpamConfig, IpamError, Owner};

/// The plugin.
pub struct IpamPlugin;

/// Maps an IPAM error onto a CNI error (see `docs/errors.md`; the same table as
/// `IpamError::cni_code`, spelled with `rnet_cni::code` names).
pub fn cni_error(e: IpamError) -> CniError {
    let code = match &e {
        IpamError::InvalidOwner { .. } => code::INVALID_ENV,
        IpamError::Io { .. } | IpamError::UnsafePath { .. } => code::IO,
        IpamError::InvalidConfig { .. } => code::INVALID_CONFIG,
        IpamError::Busy { .. } => code::TRY_AGAIN,
        IpamError::Unavailable { .. } => code::NOT_AVAILABLE,
        IpamError::RangeExhausted { .. } => code::RANGE_EXHAUSTED,
        IpamError::RequestedIpTaken { .. } => code::ADDRESS_TAKEN,
        IpamError::RequestedIpOutsideRanges { .. } => code::ADDRESS_OUT_OF_RANGE,
        IpamError::RequestedIpReserved { .. } => code::ADDRESS_RESERVED,
        IpamError::AlreadyAllocated { .. } => code::ALREADY_ALLOCATED,
        IpamError::NoLease { .. } => code::NO_LEASE,
        _ => code::INTERNAL,
    };
    CniError::new(code, e.to_string())
}

fn open(args: &CmdArgs) -> Result<Ipam, CniError> {
    let config = IpamConfig::from_netconf(&args.conf.raw, args.args.pairs()).map_err(cni_error)?;
    Ipam::open(config).map_err(cni_error)
}

fn owner(args: &CmdArgs) -> Owner {
    Owner::new(args.container_id.clone(), args.ifname.clone())
}

impl Plugin for IpamPlugin {
    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let ipam = open(args)?;
        let alloc = ipam.allocate(&owner(args)).map_err(cni_error)?;
        Ok(CniResult {
            interfaces: Vec::new(),
            ips: alloc
                .ips
                .iter()
                .map(|ip| IpConfig {
                    interface: None,
                    address: ip.address,
                    gateway: ip.gateway,
                })
                .collect(),
            routes: alloc
                .routes
                .iter()
                .map(|r| Route {
                    dst: r.dst,
                    gw: r.gw,
                    mtu: r.mtu,
                    advmss: r.advmss,
                    priority: r.priority,
                    table: r.table,
                    scope: r.scope.and_then(|s| u8::try_from(s).ok()),
                })
                .collect(),
            dns: Dns {
                nameservers: alloc.dns.nameservers.clone(),
                domain: alloc.dns.domain.clone().unwrap_or_default(),
                search: alloc.dns.search.clone(),
                options: alloc.dns.options.clone(),
            },
        })
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let ipam = open(args)?;
        ipam.release(&owner(args)).map(|_| ()).map_err(cni_error)
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let ipam = open(args)?;
        let held = ipam.check(&owner(args)).map_err(cni_error)?;
        // Every address the runtime recorded for this attachment must still be ours.
        if let Some(prev) = &args.conf.prev_result {
            for ip in &prev.ips {
                if !held.contains(&ip.address.addr()) {
                    return Err(CniError::new(
                        code::NO_LEASE,
                        format!(
                            "address {} of {}/{} in prevResult is not leased to it in network {}",
                            ip.address, args.container_id, args.ifname, args.conf.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        open(args)?.status().map_err(cni_error)
    }

    fn gc(&self, args: &CmdArgs, valid: &[Attachment]) -> Result<(), CniError> {
        let ipam = open(args)?;
        let owners: Vec<Owner> = valid
            .iter()
            .map(|a| Owner::new(a.container_id.clone(), a.ifname.clone()))
            .collect();
        let report = ipam.gc(&owners).map_err(cni_error)?;
        for l in &report.released {
            eprintln!("rnet-ipam: GC released {} of {}", l.ip, l.owner);
        }
        report.into_result().map(|_| ()).map_err(cni_error)
    }
}
