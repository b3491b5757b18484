//! Flushing conntrack entries of published ports over ctnetlink.
//!
//! A UDP "connection" that conntrack remembers keeps its NAT binding: after a
//! container is deleted (or before its port was published) packets of a
//! live flow keep going where the entry says, into a dead container or to
//! the host itself, until the entry times out. So after ADD and DEL the
//! entries whose *original* destination port is a mapped host port are
//! deleted (on DEL only those translated to this container's address).
//!
//! `IPCTNL_MSG_CT_DELETE` needs an exact tuple, so the table of this
//! namespace is dumped once (`IPCTNL_MSG_CT_GET`, `NLM_F_DUMP`, both
//! families), the entries are matched here, and the matches are deleted in
//! one datagram (their original tuple attribute is sent back verbatim, with
//! the zone). No exec of `conntrack(8)`; one socket, one dump, one send. An
//! entry that vanished meanwhile (`ENOENT`) is fine.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Which entries to delete: original protocol and destination port, and
/// optionally the original destination address (a `hostIP` binding) and the
/// reply source (the container the entry was translated to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// IP protocol number.
    pub proto: u8,
    /// Original destination port (the host port).
    pub dport: u16,
    /// Original destination address must be this (bound `hostIP`).
    pub orig_dst: Option<IpAddr>,
    /// Reply source must be this (the container address), for DEL.
    pub reply_src: Option<IpAddr>,
    /// IPv6 (else IPv4).
    pub v6: bool,
}

/// A ctnetlink failure.
#[derive(Debug, thiserror::Error)]
pub enum CtError {
    /// Socket I/O.
    #[error("conntrack netlink I/O failed while {what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the dump.
    #[error("the kernel refused the conntrack dump: {}", io::Error::from_raw_os_error(*.0))]
    Dump(i32),
}

#[derive(Debug)]
struct Entry {
    family: u8,
    orig: Vec<u8>,
    zone: Option<Vec<u8>>,
    proto: u8,
    dport: u16,
    orig_dst: Option<IpAddr>,
    reply_src: Option<IpAddr>,
}

fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8], &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let whole = buf.get(..len)?;
        let val = buf.get(4..len)?;
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some((ty, val, whole))
    })
}

fn ip_of(v: &[u8]) -> Option<IpAddr> {
    match v.len() {
        4 => <[u8; 4]>::try_from(v).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(v).ok().map(IpAddr::from),
        _ => None,
    }
}

/// (src, dst, proto, dport) of a tuple nest.
fn tuple(v: &[u8]) -> (Option<IpAddr>, Option<IpAddr>, u8, u16) {
    let (mut src, mut dst, mut proto, mut dport) = (None, None, 0, 0);
    for (t, val, _) in attrs(v) {
        match t {
            CTA_TUPLE_IP => {
                for (it, iv, _) in attrs(val) {
                    match it {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = ip_of(iv),
                        CTA_IP_V4_DST | CTA_IP_V6_DST => dst = ip_of(iv),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (pt, pv, _) in attrs(val) {
                    match (pt, pv) {
                        (CTA_PROTO_NUM, [n, ..]) => proto = *n,
                        (CTA_PROTO_DST_PORT, [a, b, ..]) => dport = u16::from_be_bytes([*a, *b]),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (src, dst, proto, dport)
}

fn parse_entry(payload: &[u8]) -> Option<Entry> {
    let family = *payload.first()?;
    let mut e = Entry {
        family,
        orig: Vec::new(),
        zone: None,
        proto: 0,
        dport: 0,
        orig_dst: None,
        reply_src: None,
    };
    for (t, v, whole) in attrs(payload.get(4..)?) {
        match t {
            CTA_TUPLE_ORIG => {
                e.orig = whole.to_vec();
                let (_, dst, proto, dport) = tuple(v);
                (e.orig_dst, e.proto, e.dport) = (dst, proto, dport);
            }
            CTA_TUPLE_REPLY => e.reply_src = tuple(v).0,
            CTA_ZONE => e.zone = Some(whole.to_vec()),
            _ => {}
        }
    }
    (!e.orig.is_empty()).then_some(e)
}

fn matches(e: &Entry, t: &Target) -> bool {
    let fam = if t.v6 { AF_INET6 } else { AF_INET };
    e.family == fam
        && e.proto == t.proto
        && e.dport == t.dport
        && t.orig_dst.is_none_or(|d| e.orig_dst == Some(d))
        && t.reply_src.is_none_or(|s| e.reply_src == Some(s))
}

fn header(buf: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | ty).to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&[family, 0, 0, 0]);
    start
}

fn finish(buf: &mut [u8], start: usize) {
    let len = u32::try_from(buf.len() - start).unwrap_or(0);
    if let Some(h) = buf.get_mut(start..start + 4) {
        h.copy_from_slice(&len.to_ne_bytes());
    }
}

fn recv(sock: &Socket, buf: &mut Vec<u8>) -> Result<usize, CtError> {
    buf.clear();
    loop {
        match sock.recv(buf, 0) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(CtError::Io {
                    what: "receiving",
                    source,
                });
            }
        }
    }
}

/// Messages of one datagram: (type, flags-less payload, error code if NLMSG_ERROR).
fn messages(data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut d = data;
    while d.len() >= 16 {
        let len = u32::from_ne_bytes([d[0], d[1], d[2], d[3]]) as usize;
        let ty = u16::from_ne_bytes([d[4], d[5]]);
        if len < 16 || len > d.len() {
            break;
        }
        out.push((ty, d.get(16..len).unwrap_or(&[])));
        d = d.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    out
}

fn errno_of(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, |b| -i32::from_ne_bytes(b))
}

/// Deletes every conntrack entry of the calling thread's namespace that
/// matches one of `targets`; returns how many were deleted.
pub fn flush(targets: &[Target]) -> Result<usize, CtError> {
    if targets.is_empty() {
        return Ok(0);
    }
    let io = |what| move |source| CtError::Io { what, source };
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(io("opening a ctnetlink socket"))?;
    sock.bind_auto()
        .map_err(io("binding the ctnetlink socket"))?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(io("connecting the ctnetlink socket"))?;
    let _ = rustix::net::sockopt::set_socket_timeout(
        &sock,
        rustix::net::sockopt::Timeout::Recv,
        Some(Duration::from_secs(5)),
    );
    let mut req = Vec::with_capacity(32);
    let s = header(
        &mut req,
        IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
        0,
    );
    finish(&mut req, s);
    sock.send(&req, 0)
        .map_err(io("sending the conntrack dump request"))?;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut doomed: Vec<Entry> = Vec::new();
    'dump: loop {
        let n = recv(&sock, &mut buf)?;
        for (ty, payload) in messages(buf.get(..n).unwrap_or(&[])) {
            match ty {
                NLMSG_DONE => break 'dump,
                NLMSG_ERROR => {
                    let errno = errno_of(payload);
                    if errno != 0 {
                        return Err(CtError::Dump(errno));
                    }
                    break 'dump;
                }
                _ => {
                    if let Some(e) = parse_entry(payload) {
                        if targets.iter().any(|t| matches(&e, t)) {
                            doomed.push(e);
                        }
                    }
                }
            }
        }
    }
    if doomed.is_empty() {
        return Ok(0);
    }
    let mut msg = Vec::new();
    for (i, e) in doomed.iter().enumerate() {
        let seq = u32::try_from(i + 2).unwrap_or(u32::MAX);
        let s = header(
            &mut msg,
            IPCTNL_MSG_CT_DELETE,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            e.family,
        );
        msg.extend_from_slice(&e.orig);
        if let Some(z) = &e.zone {
            msg.extend_from_slice(z);
        }
        finish(&mut msg, s);
    }
    sock.send(&msg, 0)
        .map_err(io("sending conntrack deletes"))?;
    let mut acks = 0;
    let mut deleted = 0;
    while acks < doomed.len() {
        let n = recv(&sock, &mut buf)?;
        for (ty, payload) in messages(buf.get(..n).unwrap_or(&[])) {
            if ty == NLMSG_ERROR {
                acks += 1;
                if errno_of(payload) == 0 {
                    deleted += 1;
                }
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn nla(ty: u16, val: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&u16::try_from(val.len() + 4).unwrap().to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(val);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn tuple_nla(ty: u16, src: [u8; 4], dst: [u8; 4], proto: u8, dport: u16) -> Vec<u8> {
        let ip = [nla(CTA_IP_V4_SRC, &src), nla(CTA_IP_V4_DST, &dst)].concat();
        let pr = [
            nla(CTA_PROTO_NUM, &[proto]),
            nla(2, &[0, 9]),
            nla(CTA_PROTO_DST_PORT, &dport.to_be_bytes()),
        ]
        .concat();
        nla(
            ty | 0x8000,
            &[
                nla(CTA_TUPLE_IP | 0x8000, &ip),
                nla(CTA_TUPLE_PROTO | 0x8000, &pr),
            ]
            .concat(),
        )
    }

    #[test]
    fn parses_and_matches_entries() {
        let mut p = vec![AF_INET, 0, 0, 0];
        p.extend(tuple_nla(
            CTA_TUPLE_ORIG,
            [198, 51, 100, 2],
            [198, 51, 100, 1],
            17,
            5353,
        ));
        p.extend(tuple_nla(
            CTA_TUPLE_REPLY,
            [10, 88, 0, 2],
            [198, 51, 100, 2],
            17,
            9,
        ));
        p.extend(nla(CTA_ZONE, &0u16.to_be_bytes()));
        let e = parse_entry(&p).unwrap();
        assert_eq!((e.proto, e.dport), (17, 5353));
        assert_eq!(e.orig_dst, Some("198.51.100.1".parse().unwrap()));
        assert_eq!(e.reply_src, Some("10.88.0.2".parse().unwrap()));
        assert!(e.zone.is_some());
        let t = Target {
            proto: 17,
            dport: 5353,
            orig_dst: None,
            reply_src: None,
            v6: false,
        };
        assert!(matches(&e, &t));
        assert!(matches(
            &e,
            &Target {
                reply_src: Some("10.88.0.2".parse().unwrap()),
                ..t.clone()
            }
        ));
        assert!(!matches(
            &e,
            &Target {
                reply_src: Some("10.88.0.3".parse().unwrap()),
                ..t.clone()
            }
        ));
        assert!(!matches(
            &e,
            &Target {
                orig_dst: Some("127.0.0.1".parse().unwrap()),
                ..t.clone()
            }
        ));
        assert!(!matches(
            &e,
            &Target {
                v6: true,
                ..t.clone()
            }
        ));
        assert!(!matches(&e, &Target { proto: 6, ..t }));
        // Garbage never panics.
        for cut in 0..p.len() {
            let _ = parse_entry(&p[..cut]);
        }
        assert!(messages(&[1, 2, 3]).is_empty());
    }
}
