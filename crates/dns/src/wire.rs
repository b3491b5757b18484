//! A lean DNS wire codec for the hot path.
//!
//! Queries are parsed without allocation: header, exactly one question (the
//! name lowercased into a fixed buffer), and an optional EDNS OPT record.
//! Responses for local names are written into a caller-owned buffer, the
//! question copied verbatim from the query (so a client's 0x20 case
//! randomisation round-trips) and answer owner names compressed to a pointer
//! at the question. Forwarded messages are never re-encoded: the forwarder
//! only rewrites the ID and TTL fields in place, using the offsets found by
//! [`walk_records`]. Every read is bounds-checked; malformed input gives
//! `None`/an error, never a panic (fuzzed by the proptests below).

/// Header length.
pub const HEADER_LEN: usize = 12;
/// Largest wire name.
pub const MAX_NAME: usize = 255;
/// Classic UDP payload limit without EDNS.
pub const UDP_LIMIT: usize = 512;

/// Response codes.
pub mod rcode {
    /// No error.
    pub const NOERROR: u8 = 0;
    /// Format error.
    pub const FORMERR: u8 = 1;
    /// Server failure.
    pub const SERVFAIL: u8 = 2;
    /// Name does not exist.
    pub const NXDOMAIN: u8 = 3;
    /// Not implemented.
    pub const NOTIMP: u8 = 4;
    /// Refused.
    pub const REFUSED: u8 = 5;
}

/// Record types used here.
pub mod qtype {
    /// IPv4 address.
    pub const A: u16 = 1;
    /// Start of authority.
    pub const SOA: u16 = 6;
    /// Pointer (reverse lookup).
    pub const PTR: u16 = 12;
    /// IPv6 address.
    pub const AAAA: u16 = 28;
    /// EDNS OPT pseudo-record.
    pub const OPT: u16 = 41;
    /// Any.
    pub const ANY: u16 = 255;
}

/// Class IN.
pub const CLASS_IN: u16 = 1;

const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;
const FLAG_CD: u16 = 0x0010;

/// Why a message could not be parsed as a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryError {
    /// Shorter than a header, or a response (QR set): drop silently.
    Ignore,
    /// Parseable header but unusable question: answer with this rcode.
    Reply(u8),
}

/// A parsed one-question query. `name` holds the lowercased dotted name
/// without the trailing dot (empty for the root).
#[derive(Clone)]
pub struct Query {
    /// Message ID.
    pub id: u16,
    /// Header flags as sent.
    pub flags: u16,
    /// Question type.
    pub qtype: u16,
    /// Question class.
    pub qclass: u16,
    /// End of the question section (offset of the first byte after QCLASS).
    pub question_end: usize,
    /// EDNS UDP payload size, if the query carried an OPT record.
    pub edns_udp: Option<u16>,
    /// EDNS DO bit.
    pub dnssec_ok: bool,
    /// A label contained a '.' or a byte that is not printable ASCII: such a
    /// name never matches a local record (it is forwarded as it is).
    pub odd: bool,
    name: [u8; MAX_NAME],
    name_len: usize,
}

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Query")
            .field("id", &self.id)
            .field("name", &String::from_utf8_lossy(self.name()))
            .field("qtype", &self.qtype)
            .field("qclass", &self.qclass)
            .finish()
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

impl Query {
    /// Parses a query. Compression pointers in the question are refused
    /// (FORMERR): they can only point backwards into the header.
    pub fn parse(msg: &[u8]) -> Result<Query, QueryError> {
        if msg.len() < HEADER_LEN {
            return Err(QueryError::Ignore);
        }
        let id = be16(msg, 0).ok_or(QueryError::Ignore)?;
        let flags = be16(msg, 2).ok_or(QueryError::Ignore)?;
        if flags & FLAG_QR != 0 {
            return Err(QueryError::Ignore);
        }
        if (flags >> 11) & 0xf != 0 {
            return Err(QueryError::Reply(rcode::NOTIMP));
        }
        let qd = be16(msg, 4).ok_or(QueryError::Ignore)?;
        let ar = be16(msg, 10).ok_or(QueryError::Ignore)?;
        if qd != 1 {
            return Err(QueryError::Reply(rcode::FORMERR));
        }
        let mut q = Query {
            id,
            flags,
            qtype: 0,
            qclass: 0,
            question_end: 0,
            edns_udp: None,
            dnssec_ok: false,
            odd: false,
            name: [0; MAX_NAME],
            name_len: 0,
        };
        let mut at = HEADER_LEN;
        let mut wire_len = 0usize;
        loop {
            let len = *msg.get(at).ok_or(QueryError::Reply(rcode::FORMERR))? as usize;
            at += 1;
            wire_len += 1 + len;
            // At most 255 octets on the wire, the root's zero byte included
            // (RFC 1035 3.1); a longer question cannot be answered correctly.
            if wire_len > MAX_NAME {
                return Err(QueryError::Reply(rcode::FORMERR));
            }
            if len == 0 {
                break;
            }
            if len > 63 {
                return Err(QueryError::Reply(rcode::FORMERR));
            }
            let label = msg
                .get(at..at + len)
                .ok_or(QueryError::Reply(rcode::FORMERR))?;
            if q.name_len > 0 {
                q.push(b'.');
            }
            for &c in label {
                if c == b'.' || !(0x21..0x7f).contains(&c) {
                    q.odd = true;
                }
                q.push(c.to_ascii_lowercase());
            }
            at += len;
        }
        q.qtype = be16(msg, at).ok_or(QueryError::Reply(rcode::FORMERR))?;
        q.qclass = be16(msg, at + 2).ok_or(QueryError::Reply(rcode::FORMERR))?;
        q.question_end = at + 4;
        if ar > 0 {
            // The OPT record, if any, is the only additional record a query has in practice.
            let p = q.question_end;
            if msg.get(p) == Some(&0) && be16(msg, p + 1) == Some(qtype::OPT) {
                q.edns_udp = be16(msg, p + 3);
                q.dnssec_ok = be16(msg, p + 7).is_some_and(|f| f & 0x8000 != 0);
            }
        }
        Ok(q)
    }

    fn push(&mut self, c: u8) {
        if let Some(slot) = self.name.get_mut(self.name_len) {
            *slot = c;
            self.name_len += 1;
        }
    }

    /// The lowercased name, dotted, without the trailing dot.
    pub fn name(&self) -> &[u8] {
        self.name.get(..self.name_len).unwrap_or(&[])
    }

    /// Recursion desired.
    pub fn rd(&self) -> bool {
        self.flags & FLAG_RD != 0
    }

    /// The largest response the client accepts over UDP.
    pub fn udp_limit(&self) -> usize {
        match self.edns_udp {
            Some(n) => (n as usize).clamp(UDP_LIMIT, 4096),
            None => UDP_LIMIT,
        }
    }

    /// A cache key: the lowercased question plus the flags that change answers.
    pub fn cache_key(&self, msg: &[u8]) -> Vec<u8> {
        let mut k: Vec<u8> = msg
            .get(HEADER_LEN..self.question_end)
            .unwrap_or(&[])
            .iter()
            .map(u8::to_ascii_lowercase)
            .collect();
        k.push(
            u8::from(self.rd())
                | (u8::from(self.flags & FLAG_CD != 0) << 1)
                | (u8::from(self.dnssec_ok) << 2)
                | (u8::from(self.edns_udp.is_some()) << 3),
        );
        k
    }
}

/// One answer record's data.
#[derive(Debug, Clone, Copy)]
pub enum Rdata<'a> {
    /// A.
    A(std::net::Ipv4Addr),
    /// AAAA.
    Aaaa(std::net::Ipv6Addr),
    /// PTR: target name given as dotted labels (without the trailing dot)
    /// and a domain appended to it (may be empty).
    Ptr(&'a [u8], &'a [u8]),
}

/// Writes responses for local names into a reused buffer.
pub struct ResponseWriter<'b> {
    buf: &'b mut Vec<u8>,
    limit: usize,
    count: u16,
    truncated: bool,
}

impl<'b> ResponseWriter<'b> {
    /// Starts a response to `q` (question copied from `msg`), at most `limit` bytes.
    pub fn new(
        buf: &'b mut Vec<u8>,
        msg: &[u8],
        q: &Query,
        rc: u8,
        aa: bool,
        limit: usize,
    ) -> Self {
        buf.clear();
        let mut flags = FLAG_QR | FLAG_RA | (q.flags & (FLAG_RD | FLAG_CD)) | u16::from(rc & 0xf);
        if aa {
            flags |= FLAG_AA;
        }
        buf.extend_from_slice(&q.id.to_be_bytes());
        buf.extend_from_slice(&flags.to_be_bytes());
        buf.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        buf.extend_from_slice(msg.get(HEADER_LEN..q.question_end).unwrap_or(&[]));
        ResponseWriter {
            buf,
            limit,
            count: 0,
            truncated: false,
        }
    }

    /// Appends one record (owner = the question name), or marks the response
    /// truncated if it would not fit.
    pub fn push(&mut self, ttl: u32, data: Rdata<'_>) {
        if self.truncated {
            return;
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0xc0, 0x0c]);
        let ty = match data {
            Rdata::A(_) => qtype::A,
            Rdata::Aaaa(_) => qtype::AAAA,
            Rdata::Ptr(..) => qtype::PTR,
        };
        self.buf.extend_from_slice(&ty.to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.buf.extend_from_slice(&ttl.to_be_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        match data {
            Rdata::A(a) => self.buf.extend_from_slice(&a.octets()),
            Rdata::Aaaa(a) => self.buf.extend_from_slice(&a.octets()),
            Rdata::Ptr(name, domain) => {
                // The target must be a valid name (at most 255 octets): a
                // name whose FQDN would be longer is given bare; one that
                // is too long even bare gets no record.
                let parts: &[&[u8]] = if ptr_target_len(&[name, domain]) <= MAX_NAME {
                    &[name, domain]
                } else if ptr_target_len(&[name]) <= MAX_NAME {
                    &[name]
                } else {
                    self.buf.truncate(start);
                    return;
                };
                for part in parts {
                    for label in ptr_labels(part) {
                        self.buf.push(label.len() as u8);
                        self.buf.extend_from_slice(label);
                    }
                }
                self.buf.push(0);
            }
        }
        let rdlen = (self.buf.len() - len_at - 2) as u16;
        if let Some(s) = self.buf.get_mut(len_at..len_at + 2) {
            s.copy_from_slice(&rdlen.to_be_bytes());
        }
        if self.buf.len() > self.limit {
            self.buf.truncate(start);
            self.truncated = true;
            if let Some(b) = self.buf.get_mut(2) {
                *b |= (FLAG_TC >> 8) as u8;
            }
            return;
        }
        self.count += 1;
        if let Some(s) = self.buf.get_mut(6..8) {
            s.copy_from_slice(&self.count.to_be_bytes());
        }
    }

    /// Records written so far.
    pub fn count(&self) -> u16 {
        self.count
    }
}

/// The labels of a dotted name as a PTR target writes them (empty labels
/// skipped, each cut to 63 bytes).
fn ptr_labels(part: &[u8]) -> impl Iterator<Item = &[u8]> {
    part.split(|&c| c == b'.')
        .filter(|l| !l.is_empty())
        .map(|l| l.get(..63).unwrap_or(l))
}

/// Wire length of a PTR target made of `parts`, the root byte included.
fn ptr_target_len(parts: &[&[u8]]) -> usize {
    1 + parts
        .iter()
        .flat_map(|p| ptr_labels(p))
        .map(|l| 1 + l.len())
        .sum::<usize>()
}

/// A header-only error response to a message whose question could not be
/// used (the question is copied when it parsed, so the client can match it).
pub fn error_response(buf: &mut Vec<u8>, msg: &[u8], rc: u8) {
    buf.clear();
    let id = be16(msg, 0).unwrap_or(0);
    let rq = be16(msg, 2).unwrap_or(0);
    let flags =
        FLAG_QR | FLAG_RA | (rq & 0x7800) | (rq & (FLAG_RD | FLAG_CD)) | u16::from(rc & 0xf);
    buf.extend_from_slice(&id.to_be_bytes());
    buf.extend_from_slice(&flags.to_be_bytes());
    buf.extend_from_slice(&[0; 8]);
}

/// [`ResponseWriter`] for an answer without records (NXDOMAIN, NODATA, REFUSED, SERVFAIL).
pub fn empty_response(buf: &mut Vec<u8>, msg: &[u8], q: &Query, rc: u8, aa: bool) {
    ResponseWriter::new(buf, msg, q, rc, aa, usize::MAX);
}

/// Skips a possibly compressed name starting at `at`; returns the offset after it.
pub fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    let mut steps = 0;
    loop {
        steps += 1;
        if steps > 128 {
            return None;
        }
        let len = *msg.get(at)?;
        match len & 0xc0 {
            0x00 => {
                at += 1;
                if len == 0 {
                    return Some(at);
                }
                at += len as usize;
                if at > msg.len() {
                    return None;
                }
            }
            0xc0 => {
                msg.get(at + 1)?;
                return Some(at + 2);
            }
            _ => return None,
        }
    }
}

/// What the forwarder needs from an upstream response: rcode, TC bit, the
/// offsets of every TTL field (not OPT's) and the lifetime to cache it for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordWalk {
    /// Response code.
    pub rcode: u8,
    /// TC set.
    pub truncated: bool,
    /// Offsets of the 4-byte TTL fields.
    pub ttl_offsets: Vec<usize>,
    /// Smallest TTL (for a negative answer: the SOA's TTL capped by its MINIMUM).
    pub min_ttl: Option<u32>,
}

/// Walks a response's records. `None` if it is malformed.
pub fn walk_records(msg: &[u8]) -> Option<RecordWalk> {
    let flags = be16(msg, 2)?;
    let qd = be16(msg, 4)?;
    let total = u32::from(be16(msg, 6)?) + u32::from(be16(msg, 8)?) + u32::from(be16(msg, 10)?);
    let mut at = HEADER_LEN;
    for _ in 0..qd {
        at = skip_name(msg, at)? + 4;
        if at > msg.len() {
            return None;
        }
    }
    let rc = (flags & 0xf) as u8;
    let mut w = RecordWalk {
        rcode: rc,
        truncated: flags & FLAG_TC != 0,
        ttl_offsets: Vec::new(),
        min_ttl: None,
    };
    for _ in 0..total {
        at = skip_name(msg, at)?;
        let ty = be16(msg, at)?;
        let ttl = be32(msg, at + 4)?;
        let rdlen = be16(msg, at + 8)? as usize;
        let rdata = at + 10;
        if rdata + rdlen > msg.len() {
            return None;
        }
        if ty != qtype::OPT {
            w.ttl_offsets.push(at + 4);
            let mut eff = ttl;
            if ty == qtype::SOA {
                // MNAME, RNAME and the five numbers, all inside this
                // record's data: never read from the records after it.
                let rd = msg.get(..rdata + rdlen)?;
                let p = skip_name(rd, skip_name(rd, rdata)?)?;
                eff = eff.min(be32(rd, p + 16)?);
            }
            w.min_ttl = Some(w.min_ttl.map_or(eff, |m| m.min(eff)));
        }
        at = rdata + rdlen;
    }
    Some(w)
}

/// Sets the message ID.
pub fn set_id(msg: &mut [u8], id: u16) {
    if let Some(s) = msg.get_mut(0..2) {
        s.copy_from_slice(&id.to_be_bytes());
    }
}

/// The message ID.
pub fn id(msg: &[u8]) -> Option<u16> {
    be16(msg, 0)
}

/// Does `resp` answer the question of `query` (case-insensitively)?
pub fn same_question(query: &[u8], q: &Query, resp: &[u8]) -> bool {
    let Some(qq) = query.get(HEADER_LEN..q.question_end) else {
        return false;
    };
    if be16(resp, 4) != Some(1) || be16(resp, 2).is_none_or(|f| f & FLAG_QR == 0) {
        return false;
    }
    resp.get(HEADER_LEN..q.question_end)
        .is_some_and(|rq| rq.eq_ignore_ascii_case(qq))
}

/// Writes `ttl` at each offset.
pub fn rewrite_ttls(msg: &mut [u8], offsets: &[usize], elapsed: u32) {
    for &o in offsets {
        if let Some(s) = msg.get_mut(o..o + 4) {
            let old = u32::from_be_bytes([s[0], s[1], s[2], s[3]]);
            s.copy_from_slice(&old.saturating_sub(elapsed).to_be_bytes());
        }
    }
}

/// Parses a reverse-lookup name (`4.3.2.1.in-addr.arpa`, 32 nibbles + `ip6.arpa`).
pub fn parse_reverse(name: &[u8]) -> Option<std::net::IpAddr> {
    if let Some(rest) = name.strip_suffix(b".in-addr.arpa") {
        let mut o = [0u8; 4];
        let mut n = 0;
        for part in rest.split(|&c| c == b'.') {
            if n >= 4 || part.is_empty() || part.len() > 3 {
                return None;
            }
            let s = std::str::from_utf8(part).ok()?;
            if part.len() > 1 && part[0] == b'0' {
                return None;
            }
            o[3 - n] = s.parse().ok()?;
            n += 1;
        }
        return (n == 4).then(|| std::net::IpAddr::from(o));
    }
    if let Some(rest) = name.strip_suffix(b".ip6.arpa") {
        let mut b = [0u8; 16];
        let mut n = 0usize;
        for part in rest.split(|&c| c == b'.') {
            if n >= 32 || part.len() != 1 {
                return None;
            }
            let v = (part[0] as char).to_digit(16)? as u8;
            let byte = 15 - n / 2;
            if n % 2 == 0 {
                b[byte] |= v;
            } else {
                b[byte] |= v << 4;
            }
            n += 1;
        }
        return (n == 32).then(|| std::net::IpAddr::from(b));
    }
    None
}

/// Incremental TCP framing (2-byte length prefix). Feed bytes with
/// [`FrameBuf::extend`], take whole messages with [`FrameBuf::next_frame`].
/// The buffer never holds more than one maximal frame plus one read.
#[derive(Debug, Default)]
pub struct FrameBuf {
    buf: Vec<u8>,
}

/// A TCP frame that must end the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A length prefix below the DNS header size.
    TooShort(usize),
}

impl FrameBuf {
    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Nothing buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next complete message, if any. Always makes progress: a frame
    /// returned is removed from the buffer; a bad length is an error.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(len) = be16(&self.buf, 0) else {
            return Ok(None);
        };
        let len = len as usize;
        if len < HEADER_LEN {
            return Err(FrameError::TooShort(len));
        }
        if self.buf.len() < 2 + len {
            return Ok(None);
        }
        let frame = self.buf.get(2..2 + len).map(<[u8]>::to_vec);
        self.buf.drain(..2 + len);
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use hickory_proto::op::{Message, MessageType, Query as HQuery};
    use hickory_proto::rr::{Name, RecordType};
    use proptest::prelude::*;

    fn hquery(name: &str, rt: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0x1234;
        m.metadata.recursion_desired = true;
        m.add_query(HQuery::query(Name::from_ascii(name).unwrap(), rt));
        m.to_vec().unwrap()
    }

    #[test]
    fn parses_hickory_query_and_lowercases() {
        let raw = hquery("Web.DNS.rnet.", RecordType::AAAA);
        let q = Query::parse(&raw).unwrap();
        assert_eq!(q.id, 0x1234);
        assert_eq!(q.name(), b"web.dns.rnet");
        assert_eq!(q.qtype, qtype::AAAA);
        assert!(q.rd());
        assert!(!q.odd);
    }

    #[test]
    fn response_round_trips_through_hickory() {
        let raw = hquery("WeB.dns.rnet.", RecordType::A);
        let q = Query::parse(&raw).unwrap();
        let mut buf = Vec::new();
        let mut w = ResponseWriter::new(&mut buf, &raw, &q, rcode::NOERROR, true, 512);
        w.push(0, Rdata::A("10.0.0.2".parse().unwrap()));
        w.push(0, Rdata::Ptr(b"web", b"dns.rnet"));
        assert_eq!(w.count(), 2);
        let m = Message::from_vec(&buf).unwrap();
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.metadata.id, 0x1234);
        assert!(m.metadata.authoritative);
        assert_eq!(m.answers.len(), 2);
        // The question keeps the client's case.
        assert_eq!(m.queries[0].name().to_ascii(), "WeB.dns.rnet.");
        let w2 = walk_records(&buf).unwrap();
        assert_eq!(w2.ttl_offsets.len(), 2);
        assert_eq!(w2.min_ttl, Some(0));
    }

    #[test]
    fn truncates_at_limit() {
        let raw = hquery("x.", RecordType::AAAA);
        let q = Query::parse(&raw).unwrap();
        let mut buf = Vec::new();
        let mut w = ResponseWriter::new(&mut buf, &raw, &q, 0, true, 512);
        for i in 0..100u16 {
            w.push(
                0,
                Rdata::Aaaa(std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i)),
            );
        }
        assert!(buf.len() <= 512);
        let m = Message::from_vec(&buf).unwrap();
        assert!(m.metadata.truncation);
        assert!(!m.answers.is_empty());
    }

    #[test]
    fn refuses_bad_queries() {
        assert_eq!(Query::parse(&[0; 5]).unwrap_err(), QueryError::Ignore);
        let mut raw = hquery("a.", RecordType::A);
        raw[5] = 2; // qdcount 2
        assert_eq!(
            Query::parse(&raw).unwrap_err(),
            QueryError::Reply(rcode::FORMERR)
        );
        let mut raw = hquery("a.", RecordType::A);
        raw[2] |= 0x80; // a response
        assert_eq!(Query::parse(&raw).unwrap_err(), QueryError::Ignore);
        let mut raw = hquery("a.", RecordType::A);
        raw[12] = 0xc0; // pointer in question
        assert!(Query::parse(&raw).is_err());
    }

    /// A query whose name has `labels` labels of the given lengths.
    fn raw_query(labels: &[usize]) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for &l in labels {
            m.push(l as u8);
            m.extend(std::iter::repeat_n(b'a', l));
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        m
    }

    // Found by the fuzz target dns_wire: a 256-octet name was accepted and
    // copied into the response, which decoders refuse.
    #[test]
    fn names_longer_than_255_octets_are_refused() {
        let q = Query::parse(&raw_query(&[63, 63, 63, 61])).unwrap(); // 255 octets
        assert_eq!(q.name().len(), 253);
        assert_eq!(
            Query::parse(&raw_query(&[63, 63, 63, 62])).unwrap_err(), // 256
            QueryError::Reply(rcode::FORMERR)
        );
        assert_eq!(
            Query::parse(&raw_query(&[3, 46, 46, 46, 20, 20, 20, 46])).unwrap_err(),
            QueryError::Reply(rcode::FORMERR)
        );
    }

    // Found by the fuzz target dns_control: a long name on a network with a
    // long domain gave a PTR target over 255 octets (an undecodable answer).
    #[test]
    fn ptr_targets_stay_valid_names() {
        let raw = hquery("2.0.88.10.in-addr.arpa.", RecordType::PTR);
        let q = Query::parse(&raw).unwrap();
        let long = format!("{0}.{0}.{0}", "a".repeat(63)); // 191 bytes
        let domain = format!("{0}.{0}", "d".repeat(63)); // 127 bytes
        let mut buf = Vec::new();
        let mut w = ResponseWriter::new(&mut buf, &raw, &q, rcode::NOERROR, true, 4096);
        w.push(0, Rdata::Ptr(long.as_bytes(), domain.as_bytes()));
        w.push(0, Rdata::Ptr(b"web", domain.as_bytes()));
        let too_long = [&*"x".repeat(63); 5].join(".");
        w.push(0, Rdata::Ptr(too_long.as_bytes(), b""));
        assert_eq!(w.count(), 2);
        let m = Message::from_vec(&buf).unwrap();
        let targets: Vec<String> = m
            .answers
            .iter()
            .map(|r| r.data.to_string().trim_end_matches('.').to_owned())
            .collect();
        assert_eq!(targets, [long, format!("web.{domain}")]);
        assert!(walk_records(&buf).is_some());
    }

    // Found by the fuzz target dns_wire: an SOA whose names ran past its
    // own data was read from the next record (its TTL field), so the walk
    // depended on TTLs the forwarder rewrites.
    #[test]
    fn soa_fields_are_read_within_the_record() {
        let mut m = vec![0x12, 0x34, 0x81, 0x83, 0, 1, 0, 0, 0, 2, 0, 0];
        m.extend_from_slice(b"\x04nope\x03com\x00\x00\x01\x00\x01");
        let soa_rdata: &[u8] = b"\x01a\xc0\x11\x01b\xc0\x11\x00\x00\x00\x01\x00\x00\x0e\x10\x00\x00\x02\x58\x00\x09\x3a\x80\x00\x00\x01\x2c";
        let rr = |ty: u8, ttl: u8, rdata: &[u8]| {
            let mut r = vec![0xc0, 0x11, 0, ty, 0, 1, 0, 0, 0, ttl];
            r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            r.extend_from_slice(rdata);
            r
        };
        let mut good = m.clone();
        good.extend(rr(6, 200, soa_rdata));
        good.extend(rr(1, 100, &[1, 2, 3, 4]));
        let w = walk_records(&good).unwrap();
        assert_eq!(w.min_ttl, Some(100));
        // The same SOA with its data cut after the names: refused, not read
        // from the A record after it.
        let mut bad = m.clone();
        bad.extend(rr(6, 200, soa_rdata.get(..8).unwrap()));
        bad.extend(rr(1, 100, &[1, 2, 3, 4]));
        assert_eq!(walk_records(&bad), None);
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            parse_reverse(b"4.3.2.10.in-addr.arpa"),
            Some("10.2.3.4".parse().unwrap())
        );
        assert_eq!(parse_reverse(b"4.3.2.in-addr.arpa"), None);
        assert_eq!(parse_reverse(b"04.3.2.1.in-addr.arpa"), None);
        let v6: std::net::IpAddr = "fd00::1:2".parse().unwrap();
        let mut s = String::new();
        if let std::net::IpAddr::V6(a) = v6 {
            for b in a.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
        }
        s.push_str("ip6.arpa");
        assert_eq!(parse_reverse(s.as_bytes()), Some(v6));
    }

    #[test]
    fn framing() {
        let mut f = FrameBuf::default();
        f.extend(&[0, 12]);
        assert_eq!(f.next_frame(), Ok(None));
        f.extend(&[7; 12]);
        f.extend(&[0]);
        assert_eq!(f.next_frame(), Ok(Some(vec![7; 12])));
        assert_eq!(f.next_frame(), Ok(None));
        f.extend(&[3]);
        assert_eq!(f.next_frame(), Err(FrameError::TooShort(3)));
    }

    proptest! {
        #[test]
        fn parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(q) = Query::parse(&data) {
                prop_assert!(q.question_end <= data.len());
                prop_assert!(q.name().len() <= MAX_NAME);
                let mut buf = Vec::new();
                empty_response(&mut buf, &data, &q, rcode::NXDOMAIN, true);
                let _ = q.cache_key(&data);
            }
            let _ = walk_records(&data);
            let _ = parse_reverse(&data);
            let mut buf = Vec::new();
            error_response(&mut buf, &data, rcode::FORMERR);
        }

        #[test]
        fn framing_never_panics_and_progresses(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..70), 0..20)) {
            let mut f = FrameBuf::default();
            let mut total = 0usize;
            let mut taken = 0usize;
            for c in &chunks {
                total += c.len();
                f.extend(c);
                loop {
                    match f.next_frame() {
                        Ok(Some(fr)) => { prop_assert!(fr.len() >= HEADER_LEN); taken += fr.len() + 2; }
                        Ok(None) => break,
                        Err(_) => return Ok(()),
                    }
                }
                prop_assert_eq!(f.len() + taken, total);
            }
        }

        #[test]
        fn hickory_names_parse(labels in proptest::collection::vec("[a-zA-Z0-9][a-zA-Z0-9_]{0,19}", 1..5)) {
            let name = format!("{}.", labels.join("."));
            let raw = hquery(&name, RecordType::A);
            let q = Query::parse(&raw).unwrap();
            let want = name.trim_end_matches('.').to_ascii_lowercase();
            prop_assert_eq!(q.name(), want.as_bytes());
        }
    }
}
