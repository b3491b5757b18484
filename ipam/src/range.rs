//! Address ranges, range sets and the round-robin candidate order.
//!
//! All arithmetic is done on `u128` (an IPv4 address is its `u32` value), so one
//! code path serves both families and a /64 is as cheap as a /24.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// An address as an integer (IPv4 in the low 32 bits).
pub(crate) fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The inverse of [`ip_to_u128`]; `v4` picks the family (the value is truncated to 32 bits).
pub(crate) fn u128_to_ip(v: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from((v & 0xffff_ffff) as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

/// One allocatable range inside a subnet (host-local's `Range`), after defaults are applied.
///
/// Invariants (checked by config validation): `subnet` has no host bits set, its
/// prefix leaves at least two host bits, `range_start <= range_end` and both (and
/// the gateway) lie inside `subnet` and are of its family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet; the prefix length of handed-out addresses.
    pub subnet: IpNet,
    /// First allocatable address, inclusive (default: network + 1).
    pub range_start: IpAddr,
    /// Last allocatable address, inclusive (default: broadcast - 1 for IPv4, the last address for IPv6).
    pub range_end: IpAddr,
    /// The gateway reported with every address (default: network + 1); never handed out.
    pub gateway: IpAddr,
}

impl Range {
    /// Whether `ip` is of this family, inside the subnet and between start and end.
    /// (Reserved addresses such as the gateway are "contained" but not allocatable; see [`Range::reserved_kind`].)
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if ip.is_ipv4() != self.subnet.addr().is_ipv4() || !self.subnet.contains(&ip) {
            return false;
        }
        let v = ip_to_u128(ip);
        v >= ip_to_u128(self.range_start) && v <= ip_to_u128(self.range_end)
    }

    /// `Some("gateway" | "network address" | "broadcast address")` when `ip` is never handed out.
    pub fn reserved_kind(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = ip.to_canonical();
        if ip == self.gateway {
            Some("gateway")
        } else if ip == self.subnet.network() {
            Some("network address")
        } else if self.subnet.addr().is_ipv4() && ip == self.subnet.broadcast() {
            Some("broadcast address")
        } else {
            None
        }
    }

    /// Number of addresses between start and end inclusive (reserved ones included), saturating.
    pub fn size(&self) -> u128 {
        (ip_to_u128(self.range_end) - ip_to_u128(self.range_start)).saturating_add(1)
    }

    /// Whether the `[start, end]` intervals of two ranges intersect (same family only).
    pub fn overlaps(&self, other: &Range) -> bool {
        if self.subnet.addr().is_ipv4() != other.subnet.addr().is_ipv4() {
            return false;
        }
        ip_to_u128(self.range_start) <= ip_to_u128(other.range_end)
            && ip_to_u128(other.range_start) <= ip_to_u128(self.range_end)
    }

    fn is_v4(&self) -> bool {
        self.subnet.addr().is_ipv4()
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}-{}", self.subnet, self.range_start, self.range_end)
    }
}

/// A list of ranges of one family; an attachment gets exactly one address per set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet {
    /// The ranges, in configuration order (the round-robin order).
    pub ranges: Vec<Range>,
}

impl RangeSet {
    /// The first range that contains `ip` (see [`Range::contains`]).
    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.ranges.iter().find(|r| r.contains(ip))
    }

    /// Whether any range of the set contains `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    /// Whether the set holds IPv4 ranges.
    pub fn is_ipv4(&self) -> bool {
        self.ranges.first().is_some_and(Range::is_v4)
    }

    /// Total addresses over all ranges (reserved ones included), saturating.
    pub fn size(&self) -> u128 {
        self.ranges
            .iter()
            .fold(0u128, |acc, r| acc.saturating_add(r.size()))
    }

    /// Candidate addresses in host-local's round-robin order: from `last_reserved + 1`
    /// (when the set contains `last_reserved`) or else from the first range's start,
    /// across the set's ranges in order, wrapping, each address at most once, skipping
    /// gateway, network and broadcast addresses.
    pub(crate) fn candidates(&self, last_reserved: Option<IpAddr>) -> Candidates<'_> {
        let total = self.size();
        let start = last_reserved.and_then(|last| {
            let idx = self.ranges.iter().position(|r| r.contains(last))?;
            Some(self.step(idx, ip_to_u128(last.to_canonical())))
        });
        let (idx, cur) = match start {
            Some(p) => p,
            None => (
                0,
                self.ranges.first().map_or(0, |r| ip_to_u128(r.range_start)),
            ),
        };
        Candidates {
            set: self,
            idx,
            cur,
            remaining: if self.ranges.is_empty() { 0 } else { total },
        }
    }

    /// The position after `(idx, cur)`, wrapping to the next range's start after a range's end.
    fn step(&self, idx: usize, cur: u128) -> (usize, u128) {
        let Some(r) = self.ranges.get(idx) else {
            return (0, 0);
        };
        if cur >= ip_to_u128(r.range_end) {
            let next = (idx + 1) % self.ranges.len();
            let start = self
                .ranges
                .get(next)
                .map_or(0, |r| ip_to_u128(r.range_start));
            (next, start)
        } else {
            (idx, cur + 1)
        }
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.ranges.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(", "))
    }
}

/// Iterator over allocation candidates, see [`RangeSet::candidates`]. Yields
/// `(range index, address)`.
pub(crate) struct Candidates<'a> {
    set: &'a RangeSet,
    idx: usize,
    cur: u128,
    remaining: u128,
}

impl Iterator for Candidates<'_> {
    type Item = (usize, IpAddr);

    fn next(&mut self) -> Option<Self::Item> {
        while self.remaining > 0 {
            self.remaining -= 1;
            let (idx, cur) = (self.idx, self.cur);
            (self.idx, self.cur) = self.set.step(idx, cur);
            let r = self.set.ranges.get(idx)?;
            let ip = u128_to_ip(cur, r.is_v4());
            if r.reserved_kind(ip).is_none() {
                return Some((idx, ip));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn range(subnet: &str, start: &str, end: &str, gw: &str) -> Range {
        Range {
            subnet: subnet.parse().unwrap(),
            range_start: start.parse().unwrap(),
            range_end: end.parse().unwrap(),
            gateway: gw.parse().unwrap(),
        }
    }

    fn ips(it: impl Iterator<Item = (usize, IpAddr)>) -> Vec<String> {
        it.map(|(_, ip)| ip.to_string()).collect()
    }

    #[test]
    fn order_from_start_skips_gateway() {
        let set = RangeSet {
            ranges: vec![range("10.0.0.0/29", "10.0.0.1", "10.0.0.6", "10.0.0.1")],
        };
        assert_eq!(
            ips(set.candidates(None)),
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
    }

    #[test]
    fn order_from_cursor_wraps_and_ends_with_cursor() {
        let set = RangeSet {
            ranges: vec![range("10.0.0.0/29", "10.0.0.1", "10.0.0.6", "10.0.0.1")],
        };
        let last = Some("10.0.0.4".parse().unwrap());
        assert_eq!(
            ips(set.candidates(last)),
            ["10.0.0.5", "10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
        );
        // a cursor outside the set is ignored
        let other = Some("10.9.9.9".parse().unwrap());
        assert_eq!(ips(set.candidates(other))[0], "10.0.0.2");
    }

    #[test]
    fn multiple_ranges_in_a_set_are_walked_in_order() {
        let set = RangeSet {
            ranges: vec![
                range("10.0.0.0/24", "10.0.0.10", "10.0.0.11", "10.0.0.1"),
                range("10.0.1.0/24", "10.0.1.1", "10.0.1.3", "10.0.1.1"),
            ],
        };
        assert_eq!(
            ips(set.candidates(Some("10.0.0.11".parse().unwrap()))),
            ["10.0.1.2", "10.0.1.3", "10.0.0.10", "10.0.0.11"]
        );
    }

    #[test]
    fn network_and_broadcast_skipped_even_if_in_range() {
        let set = RangeSet {
            ranges: vec![range("10.0.0.0/30", "10.0.0.0", "10.0.0.3", "10.0.0.1")],
        };
        assert_eq!(ips(set.candidates(None)), ["10.0.0.2"]);
    }

    #[test]
    fn v6_range_includes_last_address() {
        let set = RangeSet {
            ranges: vec![range("fd00::/126", "fd00::1", "fd00::3", "fd00::1")],
        };
        assert_eq!(ips(set.candidates(None)), ["fd00::2", "fd00::3"]);
        let big = RangeSet {
            ranges: vec![range(
                "fd00::/64",
                "fd00::1",
                "fd00::ffff:ffff:ffff:ffff",
                "fd00::1",
            )],
        };
        assert_eq!(big.size(), (1u128 << 64) - 1);
        let last = Some("fd00::ffff:ffff:ffff:ffff".parse().unwrap());
        assert_eq!(ips(big.candidates(last).take(2)), ["fd00::2", "fd00::3"]);
    }

    #[test]
    fn contains_and_overlap() {
        let a = range("10.0.0.0/24", "10.0.0.10", "10.0.0.20", "10.0.0.1");
        let b = range("10.0.0.0/24", "10.0.0.21", "10.0.0.30", "10.0.0.1");
        let c = range("10.0.0.0/24", "10.0.0.20", "10.0.0.30", "10.0.0.1");
        assert!(a.contains("10.0.0.10".parse().unwrap()));
        assert!(!a.contains("10.0.0.21".parse().unwrap()));
        assert!(!a.contains("fd00::10".parse().unwrap()));
        assert!(a.contains("::ffff:10.0.0.15".parse().unwrap()));
        assert!(!a.overlaps(&b));
        assert!(a.overlaps(&c) && c.overlaps(&a));
        assert_eq!(a.to_string(), "10.0.0.0/24 10.0.0.10-10.0.0.20");
    }
}
