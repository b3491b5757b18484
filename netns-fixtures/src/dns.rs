//! A minimal DNS client for tests: one question over UDP, answers parsed for
//! A, AAAA, PTR and CNAME (others kept raw), rcode and header flags.
//! Deliberately hand-built so that the DNS server under test is checked by an
//! independent implementation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use rnet_netns::NetNs;

use crate::{FixtureError, Result};

/// A query type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    Aaaa,
    /// Reverse pointer.
    Ptr,
    /// Canonical name.
    Cname,
    /// Text.
    Txt,
    /// Service record.
    Srv,
    /// Any other type, by number.
    Other(u16),
}

impl QType {
    /// The wire value.
    pub fn code(self) -> u16 {
        match self {
            QType::A => 1,
            QType::Cname => 5,
            QType::Ptr => 12,
            QType::Txt => 16,
            QType::Aaaa => 28,
            QType::Srv => 33,
            QType::Other(n) => n,
        }
    }

    /// From the wire value.
    pub fn from_code(n: u16) -> QType {
        match n {
            1 => QType::A,
            5 => QType::Cname,
            12 => QType::Ptr,
            16 => QType::Txt,
            28 => QType::Aaaa,
            33 => QType::Srv,
            n => QType::Other(n),
        }
    }
}

/// Parsed record data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsData {
    /// An A record.
    A(Ipv4Addr),
    /// An AAAA record.
    Aaaa(Ipv6Addr),
    /// A PTR record's target name (no trailing dot).
    Ptr(String),
    /// A CNAME record's target name (no trailing dot).
    Cname(String),
    /// Anything else, undecoded.
    Raw {
        /// Record type.
        rtype: u16,
        /// Record data bytes.
        data: Vec<u8>,
    },
}

/// One resource record from the answer section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// Owner name, lower-case, no trailing dot.
    pub name: String,
    /// Time to live in seconds.
    pub ttl: u32,
    /// The data.
    pub data: DnsData,
}

/// A parsed DNS response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    /// Response code: 0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED, ...
    pub rcode: u8,
    /// AA flag.
    pub authoritative: bool,
    /// TC flag.
    pub truncated: bool,
    /// RA flag.
    pub recursion_available: bool,
    /// Answer section.
    pub answers: Vec<DnsRecord>,
    /// Number of authority records (not parsed).
    pub authority_count: u16,
}

impl DnsAnswer {
    /// NOERROR.
    pub const NOERROR: u8 = 0;
    /// SERVFAIL.
    pub const SERVFAIL: u8 = 2;
    /// NXDOMAIN.
    pub const NXDOMAIN: u8 = 3;
    /// REFUSED.
    pub const REFUSED: u8 = 5;

    /// All A and AAAA addresses in the answer section, in order.
    pub fn addrs(&self) -> Vec<IpAddr> {
        self.answers
            .iter()
            .filter_map(|r| match r.data {
                DnsData::A(a) => Some(IpAddr::V4(a)),
                DnsData::Aaaa(a) => Some(IpAddr::V6(a)),
                _ => None,
            })
            .collect()
    }

    /// All PTR targets in the answer section.
    pub fn ptr_names(&self) -> Vec<String> {
        self.answers
            .iter()
            .filter_map(|r| match &r.data {
                DnsData::Ptr(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }
}

/// The reverse-lookup name of `ip` (`4.3.2.1.in-addr.arpa`, nibbles + `ip6.arpa`).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0x0f, b >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// Ask `server` (over UDP, from inside `ns`) one question `name`/`qtype`
/// (class IN, recursion desired) and parse the reply. Waits up to 3 s.
pub fn dns_query(ns: &NetNs, server: SocketAddr, name: &str, qtype: QType) -> Result<DnsAnswer> {
    dns_query_timeout(ns, server, name, qtype, Duration::from_secs(3))
}

/// [`dns_query`] with an explicit timeout.
pub fn dns_query_timeout(
    ns: &NetNs,
    server: SocketAddr,
    name: &str,
    qtype: QType,
    timeout: Duration,
) -> Result<DnsAnswer> {
    let id = query_id();
    let query = build_query(id, name, qtype)?;
    let reply = crate::udp_roundtrip(ns, server, &query, timeout)?;
    parse_response(id, &reply)
}

fn query_id() -> u16 {
    static N: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0x5a5a);
    N.fetch_add(0x3b1, std::sync::atomic::Ordering::Relaxed) ^ (std::process::id() as u16)
}

/// A DNS query in wire format: ID `id`, recursion desired, one question
/// `name`/`qtype` in class IN.
pub fn build_query(id: u16, name: &str, qtype: QType) -> Result<Vec<u8>> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    q.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    q.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // AN, NS, AR
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(FixtureError::Probe(format!(
                    "cannot query {name:?}: labels must be 1..=63 bytes"
                )));
            }
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
    }
    q.push(0);
    q.extend_from_slice(&qtype.code().to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // IN
    Ok(q)
}

fn bad(msg: impl Into<String>) -> FixtureError {
    FixtureError::Probe(format!("malformed DNS response: {}", msg.into()))
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    match b.get(at..at + 2) {
        Some(&[x, y]) => Ok(u16::from_be_bytes([x, y])),
        _ => Err(bad(format!("truncated at byte {at}"))),
    }
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    match b.get(at..at + 4) {
        Some(&[a, b2, c, d]) => Ok(u32::from_be_bytes([a, b2, c, d])),
        _ => Err(bad(format!("truncated at byte {at}"))),
    }
}

/// Read a (possibly compressed) name at `at`; returns the name and the offset
/// just past it in the original position.
fn read_name(msg: &[u8], mut at: usize) -> Result<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(at).ok_or_else(|| bad("name runs past the end"))?;
        match len {
            0 => {
                if end.is_none() {
                    end = Some(at + 1);
                }
                break;
            }
            l if l & 0xc0 == 0xc0 => {
                let ptr = usize::from(u16_at(msg, at)? & 0x3fff);
                if end.is_none() {
                    end = Some(at + 2);
                }
                jumps += 1;
                if jumps > 32 {
                    return Err(bad("compression pointer loop"));
                }
                at = ptr;
            }
            l if l & 0xc0 == 0 => {
                let l = usize::from(l);
                let label = msg
                    .get(at + 1..at + 1 + l)
                    .ok_or_else(|| bad("label runs past the end"))?;
                labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
                at += 1 + l;
            }
            _ => return Err(bad("reserved label type")),
        }
    }
    Ok((labels.join("."), end.unwrap_or(at + 1)))
}

pub(crate) fn parse_response(id: u16, msg: &[u8]) -> Result<DnsAnswer> {
    if msg.len() < 12 {
        return Err(bad(format!("only {} bytes", msg.len())));
    }
    let got_id = u16_at(msg, 0)?;
    if got_id != id {
        return Err(bad(format!("id {got_id:#06x}, expected {id:#06x}")));
    }
    let flags = u16_at(msg, 2)?;
    if flags & 0x8000 == 0 {
        return Err(bad("QR bit not set (not a response)"));
    }
    let qd = u16_at(msg, 4)?;
    let an = u16_at(msg, 6)?;
    let ns_count = u16_at(msg, 8)?;
    let mut at = 12;
    for _ in 0..qd {
        let (_, next) = read_name(msg, at)?;
        at = next + 4;
    }
    let mut answers = Vec::with_capacity(usize::from(an));
    for _ in 0..an {
        let (name, next) = read_name(msg, at)?;
        let rtype = u16_at(msg, next)?;
        let ttl = u32_at(msg, next + 4)?;
        let rdlen = usize::from(u16_at(msg, next + 8)?);
        let rstart = next + 10;
        let rdata = msg
            .get(rstart..rstart + rdlen)
            .ok_or_else(|| bad("record data runs past the end"))?;
        let data = match (rtype, rdata) {
            (1, &[a, b, c, d]) => DnsData::A(Ipv4Addr::new(a, b, c, d)),
            (28, r) if r.len() == 16 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(r);
                DnsData::Aaaa(Ipv6Addr::from(o))
            }
            (12, _) => DnsData::Ptr(read_name(msg, rstart)?.0),
            (5, _) => DnsData::Cname(read_name(msg, rstart)?.0),
            (1 | 28, _) => return Err(bad(format!("type {rtype} record with {rdlen} data bytes"))),
            _ => DnsData::Raw {
                rtype,
                data: rdata.to_vec(),
            },
        };
        answers.push(DnsRecord { name, ttl, data });
        at = rstart + rdlen;
    }
    Ok(DnsAnswer {
        rcode: (flags & 0x000f) as u8,
        authoritative: flags & 0x0400 != 0,
        truncated: flags & 0x0200 != 0,
        recursion_available: flags & 0x0080 != 0,
        answers,
        authority_count: ns_count,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn query_encoding() {
        let q = build_query(0xbeef, "web.dns.podman.", QType::Aaaa).unwrap();
        assert_eq!(&q[..12], &[0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&q[12..], b"\x03web\x03dns\x06podman\x00\x00\x1c\x00\x01");
        assert!(build_query(1, "a..b", QType::A).is_err());
        assert!(build_query(1, &"x".repeat(64), QType::A).is_err());
    }

    /// A response with a compressed A, AAAA, PTR and an unknown record.
    fn sample() -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x85, 0x80, 0, 1, 0, 4, 0, 0, 0, 0];
        m.extend_from_slice(b"\x03Web\x04test\x00\x00\x01\x00\x01"); // question at 12
        // A: name = pointer to 12
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 88, 0, 2]);
        // AAAA
        m.extend_from_slice(&[0xc0, 12, 0, 28, 0, 1, 0, 0, 0, 60, 0, 16]);
        m.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        // PTR with a name that ends in a pointer to "test"
        m.extend_from_slice(&[0xc0, 12, 0, 12, 0, 1, 0, 0, 0, 5, 0, 6]);
        m.extend_from_slice(b"\x03abc\xc0\x10");
        // TXT (raw)
        m.extend_from_slice(&[0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 5, 0, 3, 2, b'h', b'i']);
        m
    }

    #[test]
    fn response_parsing() {
        let a = parse_response(0x1234, &sample()).unwrap();
        assert_eq!(a.rcode, DnsAnswer::NOERROR);
        assert!(a.authoritative && a.recursion_available && !a.truncated);
        assert_eq!(a.answers.len(), 4);
        assert_eq!(a.answers[0].name, "web.test");
        assert_eq!(a.answers[0].ttl, 60);
        assert_eq!(
            a.addrs(),
            vec![
                IpAddr::from([10, 88, 0, 2]),
                "fd00::2".parse::<IpAddr>().unwrap()
            ]
        );
        assert_eq!(a.ptr_names(), vec!["abc.test".to_owned()]);
        assert_eq!(
            a.answers[3].data,
            DnsData::Raw {
                rtype: 16,
                data: vec![2, b'h', b'i']
            }
        );
    }

    #[test]
    fn response_errors() {
        assert!(parse_response(0x9999, &sample()).is_err(), "wrong id");
        let mut s = sample();
        s.truncate(40);
        assert!(parse_response(0x1234, &s).is_err(), "truncated");
        let nx = [0x12, 0x34, 0x81, 0x83, 0, 0, 0, 0, 0, 0, 0, 0];
        let a = parse_response(0x1234, &nx).unwrap();
        assert_eq!(a.rcode, DnsAnswer::NXDOMAIN);
        assert!(a.answers.is_empty());
        // Pointer loop.
        let mut lp = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        lp.extend_from_slice(&[0xc0, 12]);
        assert!(parse_response(0x1234, &lp).is_err());
        // Query (QR clear) is not a response.
        let q = build_query(0x1234, "x", QType::A).unwrap();
        assert!(parse_response(0x1234, &q).is_err());
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("10.88.0.2".parse().unwrap()),
            "2.0.88.10.in-addr.arpa"
        );
        let r = reverse_name("fd00::1".parse().unwrap());
        assert!(r.starts_with("1.0.0.0.0.0.0.0."), "{r}");
        assert!(r.ends_with(".0.0.d.f.ip6.arpa"), "{r}");
        assert_eq!(QType::from_code(QType::Ptr.code()), QType::Ptr);
        assert_eq!(QType::from_code(99), QType::Other(99));
    }
}
