//! IP addresses on links.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope},
};

use crate::nla::{attrs, u32_of};
use crate::{Netlink, NetlinkError};

const RTM_NEWADDR: u16 = 20;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;

/// `IFA_F_NODAD`.
pub const IFA_F_NODAD: u32 = 0x02;
/// `IFA_F_DADFAILED`.
pub const IFA_F_DADFAILED: u32 = 0x08;
/// `IFA_F_TENTATIVE`.
pub const IFA_F_TENTATIVE: u32 = 0x40;
/// `IFA_F_PERMANENT`.
pub const IFA_F_PERMANENT: u32 = 0x80;

/// IP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (`AF_INET`).
    V4,
    /// IPv6 (`AF_INET6`).
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub(crate) fn af(self) -> AddressFamily {
        match self {
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
        }
    }

    pub(crate) fn from_af(af: u8) -> Option<Family> {
        match i32::from(af) {
            libc::AF_INET => Some(Family::V4),
            libc::AF_INET6 => Some(Family::V6),
            _ => None,
        }
    }
}

/// Scope of an address or route (`RT_SCOPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Global (`RT_SCOPE_UNIVERSE`, 0).
    Universe,
    /// `RT_SCOPE_SITE` (200).
    Site,
    /// On-link only (`RT_SCOPE_LINK`, 253).
    Link,
    /// This host only (`RT_SCOPE_HOST`, 254).
    Host,
    /// `RT_SCOPE_NOWHERE` (255).
    Nowhere,
    /// Any other value.
    Other(u8),
}

impl From<u8> for Scope {
    fn from(v: u8) -> Scope {
        match v {
            0 => Scope::Universe,
            200 => Scope::Site,
            253 => Scope::Link,
            254 => Scope::Host,
            255 => Scope::Nowhere,
            o => Scope::Other(o),
        }
    }
}

impl From<Scope> for u8 {
    fn from(s: Scope) -> u8 {
        match s {
            Scope::Universe => 0,
            Scope::Site => 200,
            Scope::Link => 253,
            Scope::Host => 254,
            Scope::Nowhere => 255,
            Scope::Other(o) => o,
        }
    }
}

/// An address configured on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    /// Index of the link it is on.
    pub index: u32,
    /// Address and prefix length.
    pub addr: IpNet,
    /// Its scope.
    pub scope: Scope,
    /// `IFA_F_*` flags (see the helper methods).
    pub flags: u32,
}

impl Address {
    /// `IFA_F_PERMANENT`: configured, not autoconfigured.
    pub fn is_permanent(&self) -> bool {
        self.flags & IFA_F_PERMANENT != 0
    }
    /// `IFA_F_TENTATIVE`: IPv6 DAD still running; not usable as source yet.
    pub fn is_tentative(&self) -> bool {
        self.flags & IFA_F_TENTATIVE != 0
    }
    /// `IFA_F_NODAD`: added without duplicate address detection.
    pub fn is_nodad(&self) -> bool {
        self.flags & IFA_F_NODAD != 0
    }
    /// `IFA_F_DADFAILED`: DAD found a duplicate.
    pub fn is_dadfailed(&self) -> bool {
        self.flags & IFA_F_DADFAILED != 0
    }
}

fn parse_addr(payload: &[u8]) -> Result<Option<Address>, String> {
    let (Some(&family), Some(&prefix_len), Some(&hflags), Some(&scope)) = (
        payload.first(),
        payload.get(1),
        payload.get(2),
        payload.get(3),
    ) else {
        return Err(format!("address message of {} bytes", payload.len()));
    };
    let index = payload.get(4..).and_then(u32_of).unwrap_or(0);
    let Some(family) = Family::from_af(family) else {
        return Ok(None);
    };
    let mut local = None;
    let mut address = None;
    let mut flags = u32::from(hflags);
    for a in attrs(payload.get(8..).unwrap_or(&[])) {
        let (kind, v) = a?;
        match kind {
            IFA_LOCAL => local = ip_of(family, v),
            IFA_ADDRESS => address = ip_of(family, v),
            IFA_FLAGS => flags = u32_of(v).unwrap_or(flags),
            _ => {}
        }
    }
    // IPv4: IFA_LOCAL is the interface's own address, IFA_ADDRESS the peer on
    // point-to-point links. IPv6 sends only IFA_ADDRESS (or both, the peer too).
    let Some(ip) = local.or(address) else {
        return Ok(None);
    };
    let addr = IpNet::new(ip, prefix_len).map_err(|e| format!("address {ip}/{prefix_len}: {e}"))?;
    Ok(Some(Address {
        index,
        addr,
        scope: Scope::from(scope),
        flags,
    }))
}

fn ip_of(family: Family, v: &[u8]) -> Option<IpAddr> {
    match family {
        Family::V4 => <[u8; 4]>::try_from(v)
            .ok()
            .map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        Family::V6 => <[u8; 16]>::try_from(v)
            .ok()
            .map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    }
}

fn addr_message(index: u32, addr: IpNet, nodad: bool, for_add: bool) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = Family::of(&addr.addr()).af();
    m.header.prefix_len = addr.prefix_len();
    m.header.index = index;
    m.header.scope = if addr.addr().is_loopback() {
        AddressScope::Host
    } else {
        AddressScope::Universe
    };
    let ip = addr.addr();
    match addr {
        IpNet::V4(v4) => {
            m.attributes.push(AddressAttribute::Local(ip));
            m.attributes.push(AddressAttribute::Address(ip));
            if for_add && v4.prefix_len() < 31 {
                m.attributes
                    .push(AddressAttribute::Broadcast(broadcast(v4)));
            }
        }
        IpNet::V6(_) => {
            m.attributes.push(AddressAttribute::Address(ip));
        }
    }
    if nodad {
        m.header.flags = AddressHeaderFlags::Nodad;
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    m
}

fn broadcast(net: Ipv4Net) -> Ipv4Addr {
    net.broadcast()
}

impl Netlink {
    /// Dumps addresses, optionally only those of link `index` and/or one family.
    pub fn addr_list(
        &mut self,
        index: Option<u32>,
        family: Option<Family>,
    ) -> Result<Vec<Address>, NetlinkError> {
        let mut m = AddressMessage::default();
        if let Some(f) = family {
            m.header.family = f.af();
        }
        // With NETLINK_GET_STRICT_CHK the kernel filters by index itself.
        m.header.index = index.unwrap_or(0);
        self.dump(
            RouteNetlinkMessage::GetAddress(m),
            &|| match index {
                Some(i) => format!("addresses of link index {i}"),
                None => "addresses".to_string(),
            },
            |ty, payload| {
                if ty != RTM_NEWADDR {
                    return Ok(None);
                }
                Ok(parse_addr(payload)?.filter(|a| {
                    index.is_none_or(|i| a.index == i)
                        && family.is_none_or(|f| Family::of(&a.addr.addr()) == f)
                }))
            },
        )
    }

    /// Adds `addr` to link `index` (IPv4 gets the subnet broadcast address).
    /// `EEXIST` ([`NetlinkError::is_exists`]) if it is already there.
    pub fn addr_add(&mut self, index: u32, addr: IpNet) -> Result<(), NetlinkError> {
        self.addr_add_opts(index, addr, false)
    }

    /// Like [`addr_add`](Self::addr_add); `nodad` adds an IPv6 address without
    /// duplicate address detection, so it is usable at once (not tentative).
    pub fn addr_add_opts(
        &mut self,
        index: u32,
        addr: IpNet,
        nodad: bool,
    ) -> Result<(), NetlinkError> {
        let m = addr_message(index, addr, nodad, true);
        self.request_ack(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
            &|| format!("adding address {addr} to link index {index}"),
        )
    }

    /// Removes `addr` from link `index`. A missing address gives
    /// `EADDRNOTAVAIL` ([`NetlinkError::is_addr_not_avail`]).
    pub fn addr_del(&mut self, index: u32, addr: IpNet) -> Result<(), NetlinkError> {
        let m = addr_message(index, addr, false, false);
        self.request_ack(RouteNetlinkMessage::DelAddress(m), 0, &|| {
            format!("removing address {addr} from link index {index}")
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn scope_roundtrip() {
        for v in [0u8, 200, 253, 254, 255, 7] {
            assert_eq!(u8::from(Scope::from(v)), v);
        }
    }

    #[test]
    fn parse_addr_never_panics() {
        let mut buf = vec![libc::AF_INET as u8, 24, 0x80, 0, 3, 0, 0, 0];
        buf.extend_from_slice(&[8, 0, 2, 0, 10, 0, 0, 1]);
        let a = parse_addr(&buf).unwrap().unwrap();
        assert_eq!(a.addr, "10.0.0.1/24".parse::<IpNet>().unwrap());
        assert_eq!(a.index, 3);
        assert!(a.is_permanent());
        for n in 0..buf.len() {
            let _ = parse_addr(&buf[..n]);
        }
        // Invalid prefix length is an error, not a panic.
        buf[1] = 99;
        assert!(parse_addr(&buf).is_err());
    }

    #[test]
    fn v4_broadcast() {
        let m = addr_message(1, "10.1.2.3/24".parse().unwrap(), false, true);
        assert!(
            m.attributes
                .contains(&AddressAttribute::Broadcast("10.1.2.255".parse().unwrap()))
        );
        let m = addr_message(1, "10.1.2.3/31".parse().unwrap(), false, true);
        assert!(
            !m.attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Broadcast(_)))
        );
    }
}
