//! Per-interface IP settings through netlink instead of `/proc/sys`.
//!
//! Every `/proc/sys/net` path lookup walks a dentry hash chain holding one
//! entry per network namespace (`proc_sys_compare`), so on a host with 1000
//! containers each sysctl file access costs far more than with one. The
//! same settings travel in `RTM_GETLINK` replies (`IFLA_AF_SPEC`, read for
//! free with every link lookup), IPv4 ones can be written with
//! `RTM_SETLINK` (`IFLA_INET_CONF`), the IPv6 address generation mode too
//! (`IFLA_INET6_ADDR_GEN_MODE`), and the namespace-wide forwarding switches
//! are read with `RTM_GETNETCONF`. None of these cost more with more
//! namespaces.

use netlink_packet_core::{DefaultNla, NLA_F_NESTED};
use netlink_packet_route::link::{
    AfSpecInet, AfSpecInet6, AfSpecUnspec, In6AddrGenMode, LinkAttribute,
};

use crate::nla::{attrs, i32_of, u8_of};
use crate::{Family, Netlink, NetlinkError};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IFLA_INET_CONF: u16 = 1;
const IFLA_INET6_CONF: u16 = 2;
const IFLA_INET6_ADDR_GEN_MODE: u16 = 8;

const RTM_NEWNETCONF: u16 = 80;
const RTM_GETNETCONF: u16 = 82;
const NETCONFA_IFINDEX: u16 = 1;
const NETCONFA_FORWARDING: u16 = 2;
const NETCONFA_IFINDEX_ALL: i32 = -1;

/// An IPv4 per-interface setting (`net.ipv4.conf.<if>.<name>`), numbered as
/// the kernel's `IPV4_DEVCONF_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ipv4Conf {
    /// `forwarding`.
    Forwarding,
    /// `arp_notify`: announce address and MAC changes with gratuitous ARP.
    ArpNotify,
    /// `route_localnet`: route 127.0.0.0/8 to and from this interface.
    RouteLocalnet,
}

impl Ipv4Conf {
    fn id(self) -> u16 {
        match self {
            Ipv4Conf::Forwarding => 1,
            Ipv4Conf::ArpNotify => 22,
            Ipv4Conf::RouteLocalnet => 26,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Ipv4Conf::Forwarding => "forwarding",
            Ipv4Conf::ArpNotify => "arp_notify",
            Ipv4Conf::RouteLocalnet => "route_localnet",
        }
    }
}

/// An IPv6 per-interface setting (`net.ipv6.conf.<if>.<name>`), numbered as
/// the kernel's `DEVCONF_*`. Read-only through netlink: the kernel takes
/// only the address generation mode and token in `RTM_SETLINK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ipv6Conf {
    /// `forwarding`.
    Forwarding,
    /// `accept_ra`.
    AcceptRa,
    /// `disable_ipv6`.
    DisableIpv6,
    /// `accept_dad`.
    AcceptDad,
    /// `keep_addr_on_down`.
    KeepAddrOnDown,
    /// `enhanced_dad`.
    EnhancedDad,
}

impl Ipv6Conf {
    fn index(self) -> usize {
        match self {
            Ipv6Conf::Forwarding => 0,
            Ipv6Conf::AcceptRa => 3,
            Ipv6Conf::DisableIpv6 => 26,
            Ipv6Conf::AcceptDad => 27,
            Ipv6Conf::KeepAddrOnDown => 42,
            Ipv6Conf::EnhancedDad => 46,
        }
    }
}

/// The IP settings of one interface, as carried in its `RTM_NEWLINK`
/// message (`IFLA_AF_SPEC`). Empty when the interface has no IPv4 or IPv6
/// state (for example IPv6 disabled at boot).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpConf {
    v4: Vec<i32>,
    v6: Vec<i32>,
    addr_gen_mode: Option<u8>,
}

impl IpConf {
    /// An IPv4 setting's value, `None` if not reported.
    pub fn v4(&self, c: Ipv4Conf) -> Option<i32> {
        self.v4.get(usize::from(c.id()) - 1).copied()
    }

    /// An IPv6 setting's value, `None` if not reported.
    pub fn v6(&self, c: Ipv6Conf) -> Option<i32> {
        self.v6.get(c.index()).copied()
    }

    /// `IFLA_INET6_ADDR_GEN_MODE`: 0 EUI-64, 1 none, 2 stable privacy, 3 random.
    pub fn addr_gen_mode(&self) -> Option<u8> {
        self.addr_gen_mode
    }
}

/// Decodes `IFLA_AF_SPEC` of an `RTM_NEWLINK` message. Leniently: a part it
/// cannot read is left out (reported as `None`), so that a kernel with an
/// unexpected family never makes a link lookup fail.
pub(crate) fn parse_af_spec(v: &[u8]) -> IpConf {
    let mut c = IpConf::default();
    for (family, v) in attrs(v).map_while(Result::ok) {
        for (k, v) in attrs(v).map_while(Result::ok) {
            match (family, k) {
                (AF_INET, IFLA_INET_CONF) => c.v4 = v.chunks_exact(4).filter_map(i32_of).collect(),
                (AF_INET6, IFLA_INET6_CONF) => {
                    c.v6 = v.chunks_exact(4).filter_map(i32_of).collect();
                }
                (AF_INET6, IFLA_INET6_ADDR_GEN_MODE) => c.addr_gen_mode = u8_of(v),
                _ => {}
            }
        }
    }
    c
}

fn ipv4_conf_nla(values: &[(Ipv4Conf, u32)]) -> AfSpecUnspec {
    let mut nested = Vec::with_capacity(values.len() * 8);
    for (c, v) in values {
        nested.extend_from_slice(&8u16.to_ne_bytes());
        nested.extend_from_slice(&c.id().to_ne_bytes());
        nested.extend_from_slice(&v.to_ne_bytes());
    }
    AfSpecUnspec::Inet(vec![AfSpecInet::Other(DefaultNla::new(
        IFLA_INET_CONF | NLA_F_NESTED,
        nested,
    ))])
}

fn no_ipv6_ll_nla() -> AfSpecUnspec {
    AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)])
}

/// The `IFLA_AF_SPEC` attribute turning off IPv6 address generation
/// (`IN6_ADDR_GEN_MODE_NONE`): no link-local address, so no duplicate
/// address detection, router solicitation or MLD report from the link.
pub(crate) fn no_ipv6_ll_attr() -> LinkAttribute {
    LinkAttribute::AfSpecUnspec(vec![no_ipv6_ll_nla()])
}

impl Netlink {
    /// Sets IPv4 per-interface values (`net.ipv4.conf.<if>.*`) in one
    /// `RTM_SETLINK`, without touching `/proc/sys`.
    pub fn link_set_ipv4_conf(
        &mut self,
        index: u32,
        values: &[(Ipv4Conf, u32)],
    ) -> Result<(), NetlinkError> {
        self.link_set_ip_conf(index, values, false)
    }

    /// Sets IPv4 per-interface values and, with `no_ipv6_ll`, stops the
    /// kernel from generating IPv6 addresses (the link-local one included)
    /// on the link, in one `RTM_SETLINK`. Set the latter while the link is
    /// down. On a kernel without IPv6 the IPv6 part is skipped.
    pub fn link_set_ip_conf(
        &mut self,
        index: u32,
        values: &[(Ipv4Conf, u32)],
        no_ipv6_ll: bool,
    ) -> Result<(), NetlinkError> {
        if values.is_empty() && !no_ipv6_ll {
            return Ok(());
        }
        let what = || {
            let mut what: Vec<String> = values
                .iter()
                .map(|(c, v)| format!("{}={v}", c.name()))
                .collect();
            if no_ipv6_ll {
                what.push("IPv6 address generation off".into());
            }
            format!("setting {} on link index {index}", what.join(", "))
        };
        let mut spec = Vec::new();
        if !values.is_empty() {
            spec.push(ipv4_conf_nla(values));
        }
        if no_ipv6_ll {
            spec.push(no_ipv6_ll_nla());
        }
        let mut m = crate::link::link_msg(index);
        m.attributes.push(LinkAttribute::AfSpecUnspec(spec));
        match self.set_link(m, &what) {
            Err(e) if no_ipv6_ll && e.errno() == Some(libc::EAFNOSUPPORT) => {
                // No IPv6 in this kernel: nothing to turn off.
                self.link_set_ip_conf(index, values, false)
            }
            r => r,
        }
    }

    /// Whether forwarding is on namespace-wide (`net.ipv4.ip_forward`,
    /// `net.ipv6.conf.all.forwarding`), read with `RTM_GETNETCONF`.
    /// `Ok(None)` when the family is not available in this namespace.
    pub fn forwarding_all(&mut self, family: Family) -> Result<Option<bool>, NetlinkError> {
        let af: u8 = match family {
            Family::V4 => 2,
            Family::V6 => 10,
        };
        // struct netconfmsg { u8 ncm_family; }, padded, then NETCONFA_IFINDEX.
        let mut payload = vec![af, 0, 0, 0];
        payload.extend_from_slice(&8u16.to_ne_bytes());
        payload.extend_from_slice(&NETCONFA_IFINDEX.to_ne_bytes());
        payload.extend_from_slice(&NETCONFA_IFINDEX_ALL.to_ne_bytes());
        let mut found = None;
        let r = self.request_raw(
            RTM_GETNETCONF,
            &payload,
            &|| format!("reading {family:?} forwarding"),
            &mut |ty, p| {
                if ty == RTM_NEWNETCONF {
                    for a in attrs(p.get(4..).unwrap_or(&[])) {
                        let (k, v) = a?;
                        if k == NETCONFA_FORWARDING {
                            found = i32_of(v).map(|f| f != 0);
                        }
                    }
                }
                Ok(())
            },
        );
        match r {
            Ok(()) => Ok(found),
            Err(e)
                if e.errno() == Some(libc::EAFNOSUPPORT) || e.errno() == Some(libc::EOPNOTSUPP) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod unit {
    use super::*;

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = 4 + value.len();
        let mut b = Vec::new();
        b.extend_from_slice(&(len as u16).to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(value);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    #[test]
    fn parses_af_spec() {
        let mut v4 = vec![0u8; 33 * 4];
        v4[(26 - 1) * 4] = 1; // route_localnet
        v4[(22 - 1) * 4] = 1; // arp_notify
        let mut v6 = vec![0u8; 50 * 4];
        v6[27 * 4] = 2; // accept_dad
        let inet = nla(AF_INET, &nla(IFLA_INET_CONF, &v4));
        let mut six = nla(IFLA_INET6_CONF, &v6);
        six.extend(nla(IFLA_INET6_ADDR_GEN_MODE, &[1]));
        let mut spec = inet;
        spec.extend(nla(AF_INET6, &six));
        let c = parse_af_spec(&spec);
        assert_eq!(c.v4(Ipv4Conf::RouteLocalnet), Some(1));
        assert_eq!(c.v4(Ipv4Conf::ArpNotify), Some(1));
        assert_eq!(c.v4(Ipv4Conf::Forwarding), Some(0));
        assert_eq!(c.v6(Ipv6Conf::AcceptDad), Some(2));
        assert_eq!(c.v6(Ipv6Conf::DisableIpv6), Some(0));
        assert_eq!(c.addr_gen_mode(), Some(1));
        // Truncated or missing families read as "not reported", never panic.
        let c = parse_af_spec(&nla(AF_INET, &nla(IFLA_INET_CONF, &[1, 0])));
        assert_eq!(c.v4(Ipv4Conf::Forwarding), None);
        assert_eq!(c.v6(Ipv6Conf::AcceptDad), None);
        assert_eq!(parse_af_spec(&[0xff, 0xff, 0, 0]), IpConf::default());
    }
}
