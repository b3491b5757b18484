//! The lab: a throwaway host namespace, container namespaces and an optional
//! "outside" namespace behind an uplink veth.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rnet_netlink::{Netlink, RouteSpec, VethSpec};
use rnet_netns::NetNs;

use crate::{CniCall, FixtureError, Result, ensure_lab_ns, io_err, nl_err, write_sysctl};

/// A throwaway "host": its own network namespace (loopback up) and a temp
/// directory for plugin state. Everything goes away on drop (the namespace is
/// held only by an fd, so also if the test process is killed).
#[derive(Debug)]
pub struct Lab {
    host: NetNs,
    state: tempfile::TempDir,
}

impl Lab {
    /// Build a lab. Fails with [`FixtureError::NeedRoot`] when namespaces
    /// cannot be created (tests should unwrap this: fail loudly, never skip).
    pub fn new() -> Result<Lab> {
        Self::new_in(&std::env::temp_dir())
    }

    /// A lab whose state directory is created under `parent` (the benchmark
    /// puts it on a tmpfs, as `/run` is on real hosts).
    pub fn new_in(parent: &Path) -> Result<Lab> {
        let host = new_ns()?;
        ensure_lab_ns(&host, "build a lab host")?;
        set_lo_up(&host, "lab host")?;
        let state = tempfile::Builder::new()
            .prefix("rnet-lab-")
            .tempdir_in(parent)
            .map_err(|e| io_err("creating the lab state directory", e))?;
        Ok(Lab { host, state })
    }

    /// The lab's host namespace (where plugins run, bridges live).
    pub fn host(&self) -> &NetNs {
        &self.host
    }

    /// A temp directory for plugin state (IPAM dataDir, result caches, ...),
    /// removed on drop.
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// A netlink socket in the lab host namespace.
    pub fn netlink(&self) -> Result<Netlink> {
        Netlink::in_netns(&self.host).map_err(nl_err("opening netlink in the lab host"))
    }

    /// A [`CniCall`] for `plugin`, preset to run in the lab host namespace.
    pub fn cni(&self, plugin: impl Into<PathBuf>) -> CniCall<'_> {
        CniCall::new(plugin).in_ns(&self.host)
    }

    /// A new container namespace. Its loopback is left DOWN, as in a real fresh
    /// container (bringing it up is the loopback plugin's job; tests that need
    /// it call [`Container::lo_up`]).
    pub fn add_container(&self, name: &str) -> Result<Container> {
        Ok(Container {
            name: name.to_owned(),
            ns: new_ns()?,
        })
    }

    /// An "outside" namespace (the LAN/internet stand-in) connected to the lab
    /// host by a veth pair: addresses and routes per `cfg`, host default route
    /// via the outside, outside default route back via the host, and (if
    /// `cfg.forwarding`) IPv4 and IPv6 forwarding enabled in the lab host.
    /// IPv6 addresses are added without duplicate address detection
    /// (`IFA_F_NODAD`), so they are usable at once.
    pub fn add_outside(&self, cfg: OutsideConfig) -> Result<Outside> {
        let outside = new_ns()?;
        set_lo_up(&outside, "outside")?;
        let mut host_nl = self.netlink()?;
        let host_idx = host_nl
            .create_veth(&VethSpec {
                name: &cfg.host_if,
                peer_name: &cfg.outside_if,
                peer_ns: Some(&outside),
                ..VethSpec::default()
            })
            .map_err(nl_err(format!(
                "creating uplink veth {} (lab host) <-> {} (outside)",
                cfg.host_if, cfg.outside_if
            )))?;
        let mut out_nl = Netlink::in_netns(&outside)
            .map_err(nl_err("opening netlink in the outside namespace"))?;
        let out_idx = link_index(&mut out_nl, &cfg.outside_if, "outside")?;

        if cfg.forwarding {
            write_sysctl(&self.host, "net/ipv4/ip_forward", "1")?;
            write_sysctl(&self.host, "net/ipv6/conf/all/forwarding", "1")?;
        }

        let host_addrs: Vec<IpNet> = std::iter::once(IpNet::V4(cfg.host_v4))
            .chain(cfg.host_v6.map(IpNet::V6))
            .collect();
        let out_addrs: Vec<IpNet> = std::iter::once(IpNet::V4(cfg.outside_v4))
            .chain(cfg.outside_v6.map(IpNet::V6))
            .collect();
        configure(&mut host_nl, host_idx, &cfg.host_if, &host_addrs)?;
        configure(&mut out_nl, out_idx, &cfg.outside_if, &out_addrs)?;

        if cfg.host_default_route {
            default_route(&mut host_nl, host_idx, IpAddr::V4(cfg.outside_v4.addr()))?;
            if let Some(v6) = cfg.outside_v6 {
                default_route(&mut host_nl, host_idx, IpAddr::V6(v6.addr()))?;
            }
        }
        default_route(&mut out_nl, out_idx, IpAddr::V4(cfg.host_v4.addr()))?;
        if let Some(v6) = cfg.host_v6 {
            default_route(&mut out_nl, out_idx, IpAddr::V6(v6.addr()))?;
        }
        Ok(Outside { ns: outside, cfg })
    }
}

/// A container namespace created by [`Lab::add_container`].
#[derive(Debug)]
pub struct Container {
    name: String,
    ns: NetNs,
}

impl Container {
    /// The name given at creation (a label for messages; also a handy container ID).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace.
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// The path to pass as `CNI_NETNS` (`/proc/<pid>/fd/<n>`, valid while this
    /// container lives).
    pub fn netns_path(&self) -> PathBuf {
        self.ns.path()
    }

    /// Bring loopback up (what the loopback plugin would do).
    pub fn lo_up(&self) -> Result<()> {
        set_lo_up(&self.ns, &format!("container {}", self.name))
    }

    /// A netlink socket in this container's namespace.
    pub fn netlink(&self) -> Result<Netlink> {
        Netlink::in_netns(&self.ns).map_err(nl_err(format!(
            "opening netlink in container {}",
            self.name
        )))
    }
}

/// Addresses and names of the uplink between the lab host and the outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutsideConfig {
    /// Host-side interface name (default `uplink0`).
    pub host_if: String,
    /// Outside-side interface name (default `eth0`).
    pub outside_if: String,
    /// Host uplink IPv4 address (default 198.51.100.1/24).
    pub host_v4: Ipv4Net,
    /// Outside IPv4 address (default 198.51.100.2/24).
    pub outside_v4: Ipv4Net,
    /// Host uplink IPv6 address (default fd00:198:51:100::1/64); `None` for v4 only.
    pub host_v6: Option<Ipv6Net>,
    /// Outside IPv6 address (default fd00:198:51:100::2/64).
    pub outside_v6: Option<Ipv6Net>,
    /// Give the lab host default routes via the outside (default true).
    pub host_default_route: bool,
    /// Enable IPv4 and IPv6 forwarding in the lab host (default true).
    pub forwarding: bool,
}

impl Default for OutsideConfig {
    fn default() -> Self {
        OutsideConfig {
            host_if: "uplink0".into(),
            outside_if: "eth0".into(),
            host_v4: Ipv4Net::new_assert(Ipv4Addr::new(198, 51, 100, 1), 24),
            outside_v4: Ipv4Net::new_assert(Ipv4Addr::new(198, 51, 100, 2), 24),
            host_v6: Some(Ipv6Net::new_assert(
                Ipv6Addr::new(0xfd00, 0x198, 0x51, 0x100, 0, 0, 0, 1),
                64,
            )),
            outside_v6: Some(Ipv6Net::new_assert(
                Ipv6Addr::new(0xfd00, 0x198, 0x51, 0x100, 0, 0, 0, 2),
                64,
            )),
            host_default_route: true,
            forwarding: true,
        }
    }
}

/// The outside namespace made by [`Lab::add_outside`].
#[derive(Debug)]
pub struct Outside {
    ns: NetNs,
    cfg: OutsideConfig,
}

impl Outside {
    /// The namespace.
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &OutsideConfig {
        &self.cfg
    }

    /// The outside's IPv4 address.
    pub fn v4(&self) -> Ipv4Addr {
        self.cfg.outside_v4.addr()
    }

    /// The outside's IPv6 address, if configured.
    pub fn v6(&self) -> Option<Ipv6Addr> {
        self.cfg.outside_v6.map(|n| n.addr())
    }

    /// The lab host's uplink IPv4 address (what masqueraded traffic comes from).
    pub fn host_v4(&self) -> Ipv4Addr {
        self.cfg.host_v4.addr()
    }

    /// The lab host's uplink IPv6 address, if configured.
    pub fn host_v6(&self) -> Option<Ipv6Addr> {
        self.cfg.host_v6.map(|n| n.addr())
    }
}

/// Connect two namespaces with a veth pair: `a_if` in `a` and `b_if` in `b`
/// (created in one request, peer placed straight into `b`), the given
/// addresses added (IPv6 without DAD, usable at once), both ends up. Refuses the machine's own namespace.
pub fn veth_pair(
    a: &NetNs,
    a_if: &str,
    a_addrs: &[IpNet],
    b: &NetNs,
    b_if: &str,
    b_addrs: &[IpNet],
) -> Result<()> {
    ensure_lab_ns(a, &format!("create veth {a_if}"))?;
    ensure_lab_ns(b, &format!("create veth {b_if}"))?;
    let mut a_nl = Netlink::in_netns(a).map_err(nl_err("opening netlink in namespace A"))?;
    let a_idx = a_nl
        .create_veth(&VethSpec {
            name: a_if,
            peer_name: b_if,
            peer_ns: Some(b),
            ..VethSpec::default()
        })
        .map_err(nl_err(format!("creating veth {a_if} <-> {b_if}")))?;
    let mut b_nl = Netlink::in_netns(b).map_err(nl_err("opening netlink in namespace B"))?;
    let b_idx = link_index(&mut b_nl, b_if, "namespace B")?;
    configure(&mut a_nl, a_idx, a_if, a_addrs)?;
    configure(&mut b_nl, b_idx, b_if, b_addrs)?;
    Ok(())
}

fn new_ns() -> Result<NetNs> {
    NetNs::new_unnamed().map_err(|e| FixtureError::NeedRoot {
        detail: format!("cannot create a network namespace: {e}"),
    })
}

fn set_lo_up(ns: &NetNs, what: &str) -> Result<()> {
    ensure_lab_ns(ns, &format!("bring lo up in {what}"))?;
    let mut nl = Netlink::in_netns(ns).map_err(nl_err(format!("opening netlink in {what}")))?;
    let idx = link_index(&mut nl, "lo", what)?;
    nl.link_set_up(idx)
        .map_err(nl_err(format!("bringing lo up in {what}")))
}

fn link_index(nl: &mut Netlink, name: &str, what: &str) -> Result<u32> {
    match nl
        .link_by_name(name)
        .map_err(nl_err(format!("looking up {name} in {what}")))?
    {
        Some(link) => Ok(link.index),
        None => Err(FixtureError::Probe(format!(
            "link {name} not found in {what}"
        ))),
    }
}

fn configure(nl: &mut Netlink, idx: u32, name: &str, addrs: &[IpNet]) -> Result<()> {
    for a in addrs {
        nl.addr_add_opts(idx, *a, matches!(a, IpNet::V6(_)))
            .map_err(nl_err(format!("adding {a} to {name}")))?;
    }
    nl.link_set_up(idx)
        .map_err(nl_err(format!("setting {name} up")))
}

fn default_route(nl: &mut Netlink, oif: u32, gateway: IpAddr) -> Result<()> {
    let mut spec = RouteSpec::default_via(gateway);
    spec.oif = Some(oif);
    nl.route_add(&spec)
        .map_err(nl_err(format!("adding default route via {gateway}")))
}
