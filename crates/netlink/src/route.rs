//! Routes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::{
    RouteNetlinkMessage,
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol,
        RouteScope, RouteType as NlRouteType,
    },
};

use crate::addr::{Family, Scope};
use crate::nla::{attrs, u32_of};
use crate::{Netlink, NetlinkError};

const RTM_NEWROUTE: u16 = 24;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_METRICS: u16 = 8;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RTAX_MTU: u16 = 2;
const RTAX_ADVMSS: u16 = 8;

/// The main routing table (`RT_TABLE_MAIN`).
pub const RT_TABLE_MAIN: u32 = 254;
/// The local table (`RT_TABLE_LOCAL`).
pub const RT_TABLE_LOCAL: u32 = 255;
/// `RTPROT_KERNEL`: route made by the kernel (e.g. for an address' prefix).
pub const RTPROT_KERNEL: u8 = 2;
/// `RTPROT_BOOT`: the default protocol of routes added by tools.
pub const RTPROT_BOOT: u8 = 3;
/// `RTPROT_STATIC`: route added by an administrator/daemon.
pub const RTPROT_STATIC: u8 = 4;

/// Route type (`RTN_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteType {
    /// `RTN_UNICAST`: a gateway or direct route.
    Unicast,
    /// `RTN_LOCAL`: local address.
    Local,
    /// `RTN_BROADCAST`.
    Broadcast,
    /// `RTN_ANYCAST`.
    Anycast,
    /// `RTN_MULTICAST`.
    Multicast,
    /// `RTN_BLACKHOLE`.
    Blackhole,
    /// `RTN_UNREACHABLE`.
    Unreachable,
    /// `RTN_PROHIBIT`.
    Prohibit,
    /// Any other value.
    Other(u8),
}

impl From<u8> for RouteType {
    fn from(v: u8) -> Self {
        match v {
            1 => RouteType::Unicast,
            2 => RouteType::Local,
            3 => RouteType::Broadcast,
            4 => RouteType::Anycast,
            5 => RouteType::Multicast,
            6 => RouteType::Blackhole,
            7 => RouteType::Unreachable,
            8 => RouteType::Prohibit,
            o => RouteType::Other(o),
        }
    }
}

/// A route as dumped from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix (`0.0.0.0/0` / `::/0` for a default route).
    pub dst: IpNet,
    /// Next hop, if any (`None` for direct and multipath routes).
    pub gateway: Option<IpAddr>,
    /// Output interface index (`None` for multipath routes).
    pub oif: Option<u32>,
    /// Routing table id.
    pub table: u32,
    /// `RTA_PRIORITY`, the metric.
    pub metric: Option<u32>,
    /// Scope.
    pub scope: Scope,
    /// Origin (`RTPROT_*`).
    pub protocol: u8,
    /// Type (`RTN_*`).
    pub kind: RouteType,
    /// `RTAX_MTU` metric.
    pub mtu: Option<u32>,
    /// `RTAX_ADVMSS` metric.
    pub advmss: Option<u32>,
    /// `RTA_PREFSRC`: preferred source address.
    pub prefsrc: Option<IpAddr>,
    /// Has several next hops (`RTA_MULTIPATH`); `gateway`/`oif` are then unset.
    pub multipath: bool,
}

impl Route {
    /// A default route (`/0`).
    pub fn is_default(&self) -> bool {
        self.dst.prefix_len() == 0
    }
}

/// A route to add or delete. Build with [`RouteSpec::new`] and set fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination; host bits are cleared before sending.
    pub dst: IpNet,
    /// Next hop; must be of the same family as `dst`.
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Table; `None` = main.
    pub table: Option<u32>,
    /// `RTA_PRIORITY`.
    pub metric: Option<u32>,
    /// Scope; by default universe, or link for an IPv4 route without gateway.
    /// For deletion the default matches any scope.
    pub scope: Option<Scope>,
    /// `RTAX_MTU` (ignored when deleting).
    pub mtu: Option<u32>,
    /// `RTAX_ADVMSS` (ignored when deleting).
    pub advmss: Option<u32>,
    /// `RTPROT_*`; adding defaults to [`RTPROT_BOOT`], deleting matches any.
    pub protocol: Option<u8>,
    /// Preferred source address (`RTA_PREFSRC`).
    pub prefsrc: Option<IpAddr>,
    /// Add with `NLM_F_REPLACE` (replace an existing route) instead of `NLM_F_EXCL`.
    pub replace: bool,
}

impl RouteSpec {
    /// A route to `dst` with nothing else set.
    pub fn new(dst: IpNet) -> Self {
        RouteSpec {
            dst,
            gateway: None,
            oif: None,
            table: None,
            metric: None,
            scope: None,
            mtu: None,
            advmss: None,
            protocol: None,
            prefsrc: None,
            replace: false,
        }
    }

    /// A default route (`0.0.0.0/0` or `::/0`) via `gateway`.
    pub fn default_via(gateway: IpAddr) -> Self {
        let dst = match gateway {
            IpAddr::V4(_) => IpNet::V4(ipnet::Ipv4Net::default()),
            IpAddr::V6(_) => IpNet::V6(ipnet::Ipv6Net::default()),
        };
        let mut s = RouteSpec::new(dst);
        s.gateway = Some(gateway);
        s
    }

    fn describe(&self) -> String {
        let mut s = format!("route {}", self.dst);
        if let Some(g) = self.gateway {
            s.push_str(&format!(" via {g}"));
        }
        if let Some(o) = self.oif {
            s.push_str(&format!(" dev index {o}"));
        }
        if let Some(t) = self.table {
            s.push_str(&format!(" table {t}"));
        }
        if let Some(m) = self.metric {
            s.push_str(&format!(" metric {m}"));
        }
        s
    }

    fn message(&self, add: bool) -> Result<RouteMessage, NetlinkError> {
        let family = Family::of(&self.dst.addr());
        for (what, ip) in [("gateway", self.gateway), ("prefsrc", self.prefsrc)] {
            if let Some(ip) = ip {
                if Family::of(&ip) != family {
                    return Err(NetlinkError::InvalidArgument(format!(
                        "{}: {what} {ip} is not of the destination's address family",
                        self.describe()
                    )));
                }
            }
        }
        let dst = self.dst.trunc();
        let table = self.table.unwrap_or(RT_TABLE_MAIN);
        let mut m = RouteMessage::default();
        m.header.address_family = family.af();
        m.header.destination_prefix_length = dst.prefix_len();
        m.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        if add {
            m.header.protocol = RouteProtocol::from(self.protocol.unwrap_or(RTPROT_BOOT));
            m.header.kind = NlRouteType::Unicast;
            let default_scope =
                if self.gateway.is_none() && family == Family::V4 && self.oif.is_some() {
                    Scope::Link
                } else {
                    Scope::Universe
                };
            m.header.scope = RouteScope::from(u8::from(self.scope.unwrap_or(default_scope)));
        } else {
            m.header.protocol = RouteProtocol::from(self.protocol.unwrap_or(0));
            m.header.kind = NlRouteType::Unspec;
            m.header.scope = RouteScope::from(u8::from(self.scope.unwrap_or(Scope::Nowhere)));
        }
        m.attributes.push(RouteAttribute::Table(table));
        if dst.prefix_len() > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(dst.addr())));
        }
        if let Some(g) = self.gateway {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(g)));
        }
        if let Some(o) = self.oif {
            m.attributes.push(RouteAttribute::Oif(o));
        }
        if let Some(p) = self.metric {
            m.attributes.push(RouteAttribute::Priority(p));
        }
        if let Some(s) = self.prefsrc {
            m.attributes
                .push(RouteAttribute::PrefSource(RouteAddress::from(s)));
        }
        if add {
            let mut metrics = Vec::new();
            if let Some(mtu) = self.mtu {
                metrics.push(RouteMetric::Mtu(mtu));
            }
            if let Some(a) = self.advmss {
                metrics.push(RouteMetric::Advmss(a));
            }
            if !metrics.is_empty() {
                m.attributes.push(RouteAttribute::Metrics(metrics));
            }
        }
        Ok(m)
    }
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

fn parse_route(payload: &[u8]) -> Result<Option<Route>, String> {
    let hdr = payload
        .get(..12)
        .ok_or_else(|| format!("route message of {} bytes", payload.len()))?;
    let Some(family) = Family::from_af(hdr[0]) else {
        return Ok(None);
    };
    let dst_len = hdr[1];
    let mut route = Route {
        dst: match family {
            Family::V4 => IpNet::V4(ipnet::Ipv4Net::default()),
            Family::V6 => IpNet::V6(ipnet::Ipv6Net::default()),
        },
        gateway: None,
        oif: None,
        table: u32::from(hdr[4]),
        metric: None,
        scope: Scope::from(hdr[6]),
        protocol: hdr[5],
        kind: RouteType::from(hdr[7]),
        mtu: None,
        advmss: None,
        prefsrc: None,
        multipath: false,
    };
    let mut dst_ip = None;
    for a in attrs(payload.get(12..).unwrap_or(&[])) {
        let (kind, v) = a?;
        match kind {
            RTA_DST => dst_ip = ip_of(family, v),
            RTA_GATEWAY => route.gateway = ip_of(family, v),
            RTA_OIF => route.oif = u32_of(v),
            RTA_PRIORITY => route.metric = u32_of(v),
            RTA_PREFSRC => route.prefsrc = ip_of(family, v),
            RTA_TABLE => route.table = u32_of(v).unwrap_or(route.table),
            RTA_MULTIPATH => route.multipath = true,
            RTA_METRICS => {
                for a in attrs(v) {
                    let (k, v) = a?;
                    match k {
                        RTAX_MTU => route.mtu = u32_of(v),
                        RTAX_ADVMSS => route.advmss = u32_of(v),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let ip = dst_ip.unwrap_or(route.dst.addr());
    route.dst = IpNet::new(ip, dst_len).map_err(|e| format!("route to {ip}/{dst_len}: {e}"))?;
    Ok(Some(route))
}

impl Netlink {
    /// Dumps the routes of `family`, of one table or (with `None`) of all
    /// tables, the local table included (filter on [`Route::kind`] /
    /// [`Route::table`] as needed).
    pub fn route_list(
        &mut self,
        family: Family,
        table: Option<u32>,
    ) -> Result<Vec<Route>, NetlinkError> {
        let mut m = RouteMessage::default();
        m.header.address_family = family.af();
        if let Some(t) = table {
            // Filtered in the kernel under NETLINK_GET_STRICT_CHK; below too.
            m.attributes.push(RouteAttribute::Table(t));
        }
        self.dump(
            RouteNetlinkMessage::GetRoute(m),
            &|| match table {
                Some(t) => format!("{family:?} routes of table {t}"),
                None => format!("{family:?} routes"),
            },
            |ty, payload| {
                if ty != RTM_NEWROUTE {
                    return Ok(None);
                }
                Ok(parse_route(payload)?.filter(|r| {
                    Family::of(&r.dst.addr()) == family && table.is_none_or(|t| r.table == t)
                }))
            },
        )
    }

    /// Adds a route. `EEXIST` ([`NetlinkError::is_exists`]) if it exists and
    /// `replace` is false.
    pub fn route_add(&mut self, spec: &RouteSpec) -> Result<(), NetlinkError> {
        let m = spec.message(true)?;
        let flags = if spec.replace {
            NLM_F_CREATE | NLM_F_REPLACE
        } else {
            NLM_F_CREATE | NLM_F_EXCL
        };
        self.request_ack(RouteNetlinkMessage::NewRoute(m), flags, &|| {
            format!("adding {}", spec.describe())
        })
    }

    /// Deletes a route. A missing route gives `ESRCH` ([`NetlinkError::is_not_found`]).
    pub fn route_del(&mut self, spec: &RouteSpec) -> Result<(), NetlinkError> {
        let m = spec.message(false)?;
        self.request_ack(RouteNetlinkMessage::DelRoute(m), 0, &|| {
            format!("deleting {}", spec.describe())
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn family_mismatch_rejected() {
        let mut s = RouteSpec::new("10.0.0.0/8".parse().unwrap());
        s.gateway = Some("fe80::1".parse().unwrap());
        assert!(matches!(
            s.message(true),
            Err(NetlinkError::InvalidArgument(_))
        ));
    }

    #[test]
    fn message_shape() {
        let mut s = RouteSpec::new("10.1.2.3/24".parse().unwrap());
        s.oif = Some(3);
        s.table = Some(1000);
        let m = s.message(true).unwrap();
        assert_eq!(m.header.scope, RouteScope::Link);
        assert_eq!(m.header.table, 0);
        assert!(m.attributes.contains(&RouteAttribute::Table(1000)));
        assert!(
            m.attributes
                .contains(&RouteAttribute::Destination(RouteAddress::Inet(
                    "10.1.2.0".parse().unwrap()
                )))
        );
        let d = RouteSpec::default_via("10.0.0.1".parse().unwrap());
        let m = d.message(false).unwrap();
        assert_eq!(m.header.scope, RouteScope::NoWhere);
        assert!(
            !m.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Destination(_)))
        );
    }

    #[test]
    fn parse_route_never_panics() {
        let mut buf = vec![libc::AF_INET as u8, 24, 0, 0, 254, 2, 253, 1, 0, 0, 0, 0];
        buf.extend_from_slice(&[8, 0, 1, 0, 10, 0, 0, 0]);
        buf.extend_from_slice(&[8, 0, 4, 0, 2, 0, 0, 0]);
        let r = parse_route(&buf).unwrap().unwrap();
        assert_eq!(r.dst, "10.0.0.0/24".parse::<IpNet>().unwrap());
        assert_eq!(r.oif, Some(2));
        assert_eq!(r.kind, RouteType::Unicast);
        assert_eq!(r.scope, Scope::Link);
        for n in 0..buf.len() {
            let _ = parse_route(&buf[..n]);
        }
        buf[1] = 77;
        assert!(parse_route(&buf).is_err());
    }
}
