//! Set/map elements: the values rnet puts into its sets and maps, their
//! kernel encoding (verified against `nft` by the root tests) and their nft
//! text form.
//!
//! # Encoding rules (as the kernel and `nft` agree on them)
//!
//! * A key (or map value) with **one** part is sent with that part's natural
//!   length: `ipv4_addr` 4 bytes, `inet_service` 2 bytes (network order),
//!   `inet_proto` 1 byte, `ifname` 16 bytes zero-padded, `mark` 4 bytes in
//!   *host* order (nft's `mark` type is host-endian).
//! * A **concatenation** (`a . b . c`) pads every part to a multiple of 4
//!   bytes (the 32-bit register size), so `inet_proto . inet_service` is
//!   8 bytes: `[proto,0,0,0, port_hi,port_lo,0,0]`.
//! * A comment travels in `NFTA_SET_ELEM_USERDATA` as a TLV: type 0
//!   (`NFTNL_UDATA_SET_ELEM_COMMENT`), length, NUL-terminated string.
//! * A verdict is `NFTA_DATA_VERDICT { NFTA_VERDICT_CODE (be32), [NFTA_VERDICT_CHAIN] }`.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::NftError;

/// Longest comment `nft` accepts (`NFT_USERDATA_MAXLEN` is larger, but nft
/// itself caps comments at 128 bytes).
pub const MAX_COMMENT_LEN: usize = 128;
/// Longest key or data value the kernel accepts (`NFT_DATA_VALUE_MAXLEN`).
pub const MAX_VALUE_LEN: usize = 64;
/// `IFNAMSIZ`: an `ifname` key is this many bytes, zero-padded.
pub const IFNAMSIZ: usize = 16;

/// A netfilter address family (`NFPROTO_*`), the first word of `table inet rnet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `inet`: IPv4 and IPv6 in one table (what rnet uses).
    Inet,
    /// `ip`: IPv4 only.
    Ip,
    /// `ip6`: IPv6 only.
    Ip6,
    /// `arp`.
    Arp,
    /// `bridge`.
    Bridge,
    /// `netdev`.
    Netdev,
}

impl Family {
    /// The `NFPROTO_*` number carried in `nfgenmsg.nfgen_family`.
    pub fn nfproto(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Ip => 2,
            Family::Arp => 3,
            Family::Netdev => 5,
            Family::Bridge => 7,
            Family::Ip6 => 10,
        }
    }

    /// The nft keyword (`inet`, `ip`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Arp => "arp",
            Family::Bridge => "bridge",
            Family::Netdev => "netdev",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One part of a key or of a map value (a concatenation has several).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyPart {
    /// `ipv4_addr`.
    Ipv4(Ipv4Addr),
    /// `ipv6_addr`.
    Ipv6(Ipv6Addr),
    /// `inet_proto`: an IP protocol number (6 = tcp, 17 = udp).
    Proto(u8),
    /// `inet_service`: a port, sent in network byte order.
    Port(u16),
    /// `ifname`: an interface name, 16 bytes zero-padded (at most 15 bytes, no NUL).
    IfName(String),
    /// `mark`: a packet mark, host byte order.
    Mark(u32),
    /// Raw bytes for a type this crate does not model (also what a dump yields
    /// for unknown key types). Sent as is, padded like any other part.
    Raw(Vec<u8>),
}

/// nft datatype numbers (`enum datatypes` in nftables), as they appear in
/// `NFTA_SET_KEY_TYPE`/`NFTA_SET_DATA_TYPE`; a concatenation packs them
/// 6 bits each, first part in the highest bits.
pub(crate) mod dtype {
    pub const IPADDR: u32 = 7;
    pub const IP6ADDR: u32 = 8;
    pub const INET_PROTOCOL: u32 = 12;
    pub const INET_SERVICE: u32 = 13;
    pub const MARK: u32 = 19;
    pub const IFNAME: u32 = 41;
    pub const BITS: u32 = 6;
}

impl KeyPart {
    /// The unpadded wire bytes of this part.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            KeyPart::Ipv4(a) => a.octets().to_vec(),
            KeyPart::Ipv6(a) => a.octets().to_vec(),
            KeyPart::Proto(p) => vec![*p],
            KeyPart::Port(p) => p.to_be_bytes().to_vec(),
            KeyPart::IfName(n) => {
                let mut v = n.as_bytes().to_vec();
                v.resize(IFNAMSIZ, 0);
                v
            }
            KeyPart::Mark(m) => m.to_ne_bytes().to_vec(),
            KeyPart::Raw(b) => b.clone(),
        }
    }

    fn validate(&self) -> Result<(), NftError> {
        match self {
            KeyPart::IfName(n) => {
                if n.is_empty() || n.len() >= IFNAMSIZ || n.contains(['\0', '"', '/']) {
                    return Err(NftError::invalid(format!(
                        "interface name {n:?} must be 1..15 bytes without NUL, '\"' or '/'"
                    )));
                }
                if n.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    return Err(NftError::invalid(format!(
                        "interface name {n:?} contains whitespace or control characters"
                    )));
                }
            }
            KeyPart::Raw(b) if b.is_empty() || b.len() > MAX_VALUE_LEN => {
                return Err(NftError::invalid(format!(
                    "raw key part of {} bytes; it must be 1..{MAX_VALUE_LEN} bytes",
                    b.len()
                )));
            }
            _ => {}
        }
        Ok(())
    }

    /// The nft datatype number of this part (`Raw` has none: 0).
    #[cfg(test)]
    pub(crate) fn dtype(&self) -> u32 {
        match self {
            KeyPart::Ipv4(_) => dtype::IPADDR,
            KeyPart::Ipv6(_) => dtype::IP6ADDR,
            KeyPart::Proto(_) => dtype::INET_PROTOCOL,
            KeyPart::Port(_) => dtype::INET_SERVICE,
            KeyPart::IfName(_) => dtype::IFNAME,
            KeyPart::Mark(_) => dtype::MARK,
            KeyPart::Raw(_) => 0,
        }
    }

    /// The nft text form (`10.0.0.1`, `tcp`, `8080`, `"eth0"`, `0x00000001`,
    /// `02:42:0a:58:00:02`).
    pub fn to_nft_text(&self) -> String {
        match self {
            KeyPart::Ipv4(a) => a.to_string(),
            KeyPart::Ipv6(a) => a.to_string(),
            KeyPart::Proto(p) => proto_name(*p).map_or_else(|| p.to_string(), str::to_owned),
            KeyPart::Port(p) => p.to_string(),
            KeyPart::IfName(n) => format!("\"{n}\""),
            KeyPart::Mark(m) => format!("0x{m:08x}"),
            // Six bytes are an `ether_addr` (the MAC spoof check's); nft
            // reads those only in their colon form.
            KeyPart::Raw(b) if b.len() == 6 => b
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
            KeyPart::Raw(b) => {
                let mut s = String::from("0x");
                for byte in b {
                    let _ = write!(s, "{byte:02x}");
                }
                s
            }
        }
    }
}

/// The names nft prints for common IP protocols.
fn proto_name(p: u8) -> Option<&'static str> {
    Some(match p {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        33 => "dccp",
        58 => "ipv6-icmp",
        132 => "sctp",
        136 => "udplite",
        _ => return None,
    })
}

/// A verdict, the value of a verdict map element (`type ifname : verdict`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// `accept` (`NF_ACCEPT` = 1).
    Accept,
    /// `drop` (`NF_DROP` = 0).
    Drop,
    /// `continue` (`NFT_CONTINUE` = -1).
    Continue,
    /// `return` (`NFT_RETURN` = -5).
    Return,
    /// `jump CHAIN` (`NFT_JUMP` = -3).
    Jump(String),
    /// `goto CHAIN` (`NFT_GOTO` = -4).
    Goto(String),
}

impl Verdict {
    /// The verdict code (sent big-endian in `NFTA_VERDICT_CODE`).
    pub(crate) fn code(&self) -> i32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Continue => -1,
            Verdict::Jump(_) => -3,
            Verdict::Goto(_) => -4,
            Verdict::Return => -5,
        }
    }

    pub(crate) fn chain(&self) -> Option<&str> {
        match self {
            Verdict::Jump(c) | Verdict::Goto(c) => Some(c),
            _ => None,
        }
    }

    pub(crate) fn from_code(code: i32, chain: Option<String>) -> Option<Verdict> {
        Some(match (code, chain) {
            (0, _) => Verdict::Drop,
            (1, _) => Verdict::Accept,
            (-1, _) => Verdict::Continue,
            (-5, _) => Verdict::Return,
            (-3, Some(c)) => Verdict::Jump(c),
            (-4, Some(c)) => Verdict::Goto(c),
            _ => return None,
        })
    }

    /// The nft text form (`accept`, `jump isolate`, ...).
    pub fn to_nft_text(&self) -> String {
        match self {
            Verdict::Accept => "accept".into(),
            Verdict::Drop => "drop".into(),
            Verdict::Continue => "continue".into(),
            Verdict::Return => "return".into(),
            Verdict::Jump(c) => format!("jump {c}"),
            Verdict::Goto(c) => format!("goto {c}"),
        }
    }
}

/// One element of a set or map.
///
/// * set element: `key` only;
/// * map element: `key` + `data` (`tcp . 8080 : 10.88.0.2 . 80`);
/// * verdict map element: `key` + `verdict` (`"cni0" : jump isolate`).
///
/// `comment` carries the owner tag (e.g. `"<containerID>/<ifname>"`) so that
/// CHECK and GC can find an attachment's elements by listing the set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Element {
    /// The key, one part or a concatenation.
    pub key: Vec<KeyPart>,
    /// The value of a data map.
    pub data: Option<Vec<KeyPart>>,
    /// The value of a verdict map.
    pub verdict: Option<Verdict>,
    /// The element comment (owner tag), at most [`MAX_COMMENT_LEN`] bytes.
    pub comment: Option<String>,
}

impl Element {
    /// A set element with this key.
    pub fn new(key: impl Into<Vec<KeyPart>>) -> Element {
        Element {
            key: key.into(),
            ..Element::default()
        }
    }

    /// Set the map value (data map).
    pub fn data(mut self, data: impl Into<Vec<KeyPart>>) -> Element {
        self.data = Some(data.into());
        self
    }

    /// Set the verdict (verdict map).
    pub fn verdict(mut self, v: Verdict) -> Element {
        self.verdict = Some(v);
        self
    }

    /// Set the comment (owner tag).
    pub fn comment(mut self, c: impl Into<String>) -> Element {
        self.comment = Some(c.into());
        self
    }

    /// Do both elements have the same key (what add/delete match on)?
    pub fn same_key(&self, other: &Element) -> bool {
        self.key == other.key
    }

    /// Check everything the kernel or nft would reject, with a precise message.
    pub fn validate(&self) -> Result<(), NftError> {
        if self.key.is_empty() {
            return Err(NftError::invalid(
                "an element needs a key with at least one part",
            ));
        }
        for p in &self.key {
            p.validate()?;
        }
        if encode_value(&self.key).len() > MAX_VALUE_LEN {
            return Err(NftError::invalid(format!(
                "element key {} is longer than {MAX_VALUE_LEN} bytes",
                self.key_text()
            )));
        }
        if let Some(d) = &self.data {
            if self.verdict.is_some() {
                return Err(NftError::invalid(format!(
                    "element {} has both map data and a verdict; use one",
                    self.key_text()
                )));
            }
            if d.is_empty() {
                return Err(NftError::invalid(format!(
                    "element {} has empty map data",
                    self.key_text()
                )));
            }
            for p in d {
                p.validate()?;
            }
            if encode_value(d).len() > MAX_VALUE_LEN {
                return Err(NftError::invalid(format!(
                    "map data of element {} is longer than {MAX_VALUE_LEN} bytes",
                    self.key_text()
                )));
            }
        }
        if let Some(Verdict::Jump(c) | Verdict::Goto(c)) = &self.verdict {
            crate::model::check_name("chain", c)?;
        }
        if let Some(c) = &self.comment {
            check_comment(c)?;
        }
        Ok(())
    }

    /// The key in nft text (`tcp . 8080`).
    pub fn key_text(&self) -> String {
        parts_text(&self.key)
    }

    /// The element in nft text, as inside `elements = { ... }` or
    /// `add element ... { ... }`: `tcp . 8080 comment "c1/eth0" : 10.88.0.2 . 80`
    /// (nft puts the comment between key and value).
    pub fn to_nft_text(&self) -> String {
        let mut s = self.key_text();
        if let Some(c) = &self.comment {
            let _ = write!(s, " comment \"{c}\"");
        }
        if let Some(d) = &self.data {
            let _ = write!(s, " : {}", parts_text(d));
        }
        if let Some(v) = &self.verdict {
            let _ = write!(s, " : {}", v.to_nft_text());
        }
        s
    }
}

impl From<KeyPart> for Vec<KeyPart> {
    fn from(p: KeyPart) -> Self {
        vec![p]
    }
}

fn parts_text(parts: &[KeyPart]) -> String {
    parts
        .iter()
        .map(KeyPart::to_nft_text)
        .collect::<Vec<_>>()
        .join(" . ")
}

/// A comment must survive a round trip through nft text: no `"`, `\`,
/// control characters, at most [`MAX_COMMENT_LEN`] bytes.
pub(crate) fn check_comment(c: &str) -> Result<(), NftError> {
    if c.len() > MAX_COMMENT_LEN {
        return Err(NftError::invalid(format!(
            "comment {c:?} is {} bytes; nft allows at most {MAX_COMMENT_LEN}",
            c.len()
        )));
    }
    if c.chars()
        .any(|ch| ch == '"' || ch == '\\' || ch.is_control())
    {
        return Err(NftError::invalid(format!(
            "comment {c:?} contains a quote, backslash or control character"
        )));
    }
    Ok(())
}

/// Wire bytes of a key or value: one part as is; a concatenation with every
/// part padded to a multiple of 4 bytes.
pub(crate) fn encode_value(parts: &[KeyPart]) -> Vec<u8> {
    if let [one] = parts {
        return one.to_bytes();
    }
    let mut out = Vec::with_capacity(parts.len() * 4);
    for p in parts {
        out.extend_from_slice(&p.to_bytes());
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }
    out
}

/// Natural length in bytes of a known datatype.
fn dtype_len(t: u32) -> Option<usize> {
    Some(match t {
        dtype::IPADDR => 4,
        dtype::IP6ADDR => 16,
        dtype::INET_PROTOCOL => 1,
        dtype::INET_SERVICE => 2,
        dtype::MARK => 4,
        dtype::IFNAME => IFNAMSIZ,
        _ => return None,
    })
}

/// The datatype numbers of a (possibly concatenated) type, first part first.
pub(crate) fn split_dtype(mut t: u32) -> Vec<u32> {
    let mask = (1 << dtype::BITS) - 1;
    let mut out = Vec::new();
    while t != 0 {
        out.push(t & mask);
        t >>= dtype::BITS;
    }
    out.reverse();
    out
}

/// The packed datatype number of a list of parts (for a set's key type).
#[cfg(test)]
pub(crate) fn join_dtype(parts: &[KeyPart]) -> u32 {
    parts
        .iter()
        .fold(0u32, |acc, p| (acc << dtype::BITS) | p.dtype())
}

fn decode_part(t: u32, b: &[u8]) -> KeyPart {
    let arr4 = |b: &[u8]| -> Option<[u8; 4]> { b.try_into().ok() };
    let decoded = match t {
        dtype::IPADDR => arr4(b).map(|a| KeyPart::Ipv4(Ipv4Addr::from(a))),
        dtype::IP6ADDR => <[u8; 16]>::try_from(b)
            .ok()
            .map(|a| KeyPart::Ipv6(Ipv6Addr::from(a))),
        dtype::INET_PROTOCOL => match b {
            [p] => Some(KeyPart::Proto(*p)),
            _ => None,
        },
        dtype::INET_SERVICE => <[u8; 2]>::try_from(b)
            .ok()
            .map(|a| KeyPart::Port(u16::from_be_bytes(a))),
        dtype::MARK => arr4(b).map(|a| KeyPart::Mark(u32::from_ne_bytes(a))),
        dtype::IFNAME => {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            std::str::from_utf8(b.get(..end).unwrap_or(&[]))
                .ok()
                .map(|s| KeyPart::IfName(s.to_owned()))
        }
        _ => None,
    };
    decoded.unwrap_or_else(|| KeyPart::Raw(b.to_vec()))
}

/// Decode wire bytes by the set's datatype. Unknown types, or lengths that do
/// not add up, give a single [`KeyPart::Raw`] (never a panic).
pub(crate) fn decode_value(t: u32, bytes: &[u8]) -> Vec<KeyPart> {
    let types = split_dtype(t);
    let raw = || vec![KeyPart::Raw(bytes.to_vec())];
    match types.as_slice() {
        [] => raw(),
        [one] => match dtype_len(*one) {
            Some(n) if n == bytes.len() => vec![decode_part(*one, bytes)],
            _ => raw(),
        },
        many => {
            let mut out = Vec::with_capacity(many.len());
            let mut off = 0usize;
            for &ty in many {
                let Some(n) = dtype_len(ty) else {
                    return raw();
                };
                let Some(b) = bytes.get(off..off + n) else {
                    return raw();
                };
                out.push(decode_part(ty, b));
                off += n.div_ceil(4) * 4;
            }
            if off != bytes.len() {
                return raw();
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(encode_value(&[KeyPart::Port(8080)]), vec![0x1f, 0x90]);
        assert_eq!(
            encode_value(&[KeyPart::Proto(6), KeyPart::Port(8080)]),
            vec![6, 0, 0, 0, 0x1f, 0x90, 0, 0]
        );
        assert_eq!(
            encode_value(&[
                KeyPart::Ipv4(Ipv4Addr::new(10, 0, 0, 1)),
                KeyPart::Proto(17),
                KeyPart::Port(53)
            ]),
            vec![10, 0, 0, 1, 17, 0, 0, 0, 0, 53, 0, 0]
        );
        let ifn = encode_value(&[KeyPart::IfName("eth0".into())]);
        assert_eq!(ifn.len(), 16);
        assert_eq!(&ifn[..5], b"eth0\0");
    }

    #[test]
    fn dtypes_round_trip() {
        let parts = [KeyPart::Proto(6), KeyPart::Port(1)];
        let t = join_dtype(&parts);
        assert_eq!(t, (12 << 6) | 13);
        assert_eq!(split_dtype(t), vec![12, 13]);
        let bytes = encode_value(&parts);
        assert_eq!(decode_value(t, &bytes), parts.to_vec());
        let v4 = [
            KeyPart::Ipv4(Ipv4Addr::new(1, 2, 3, 4)),
            KeyPart::Proto(17),
            KeyPart::Port(53),
        ];
        assert_eq!(
            decode_value(join_dtype(&v4), &encode_value(&v4)),
            v4.to_vec()
        );
        let ifn = [KeyPart::IfName("cni0".into())];
        assert_eq!(
            decode_value(join_dtype(&ifn), &encode_value(&ifn)),
            ifn.to_vec()
        );
        // Mismatched lengths and unknown types fall back to Raw, never panic.
        assert_eq!(decode_value(7, &[1, 2]), vec![KeyPart::Raw(vec![1, 2])]);
        assert_eq!(decode_value(63, &[1]), vec![KeyPart::Raw(vec![1])]);
        assert_eq!(decode_value(t, &[1; 7]), vec![KeyPart::Raw(vec![1; 7])]);
        assert_eq!(decode_value(0, &[]), vec![KeyPart::Raw(vec![])]);
    }

    #[test]
    fn text_forms() {
        let e = Element::new(vec![KeyPart::Proto(6), KeyPart::Port(8080)])
            .data(vec![
                KeyPart::Ipv4(Ipv4Addr::new(10, 88, 0, 2)),
                KeyPart::Port(80),
            ])
            .comment("c1/eth0");
        assert_eq!(
            e.to_nft_text(),
            "tcp . 8080 comment \"c1/eth0\" : 10.88.0.2 . 80"
        );
        let v = Element::new(KeyPart::IfName("cni0".into())).verdict(Verdict::Jump("iso".into()));
        assert_eq!(v.to_nft_text(), "\"cni0\" : jump iso");
        assert_eq!(KeyPart::Proto(200).to_nft_text(), "200");
        assert_eq!(KeyPart::Mark(1).to_nft_text(), "0x00000001");
    }

    #[test]
    fn validation() {
        assert!(Element::default().validate().is_err());
        let k = || Element::new(KeyPart::Port(1));
        assert!(k().validate().is_ok());
        assert!(k().comment("a\"b").validate().is_err());
        assert!(k().comment("x".repeat(129)).validate().is_err());
        assert!(k().comment("x".repeat(128)).validate().is_ok());
        assert!(
            k().data(KeyPart::Port(2))
                .verdict(Verdict::Accept)
                .validate()
                .is_err()
        );
        assert!(
            Element::new(KeyPart::IfName("0123456789abcdef".into()))
                .validate()
                .is_err()
        );
        assert!(Element::new(KeyPart::Raw(vec![0; 65])).validate().is_err());
        assert!(
            k().verdict(Verdict::Jump("bad name".into()))
                .validate()
                .is_err()
        );
    }
}
