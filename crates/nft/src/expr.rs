//! nf_tables rule expressions, for the chains rnet creates over netlink
//! instead of through an `nft` process ([`crate::Chain::native`]).
//!
//! Only what rnet's own chains use: meta and payload loads, comparisons,
//! set and map lookups, conntrack state and status tests, `fib`, DNAT,
//! masquerade, a counter and verdicts ([`crate::Verdict`], jumps included).
//! Each rule is written beside its nft text, and kernel tests check that
//! the two give the same bytecode (`nft --debug=netlink list`), so the text
//! stays the documentation and the fallback.
//!
//! Registers: [`REG_1`] and [`REG_2`] are the 16-byte registers nft uses
//! for single values and for concatenations; inside them, nft addresses
//! the 4-byte parts of a concatenation as registers 8 and up (9, 10, 13 in
//! rnet's NAT rules).

use crate::nl::MsgBuf;
use crate::nl::attr::{DATA_VALUE, DATA_VERDICT, LIST_ELEM, VERDICT_CHAIN, VERDICT_CODE};
use crate::{NftError, Verdict};

/// The first 16-byte data register (`NFT_REG_1`).
pub const REG_1: u32 = 1;
/// The second 16-byte data register (`NFT_REG_2`).
pub const REG_2: u32 = 2;

/// A meta key (`enum nft_meta_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// Input interface name (`iifname`), 16 bytes.
    IifName = 6,
    /// Output interface name (`oifname`), 16 bytes.
    OifName = 7,
    /// Netfilter protocol family (`meta nfproto`), 1 byte.
    NfProto = 15,
    /// Layer 4 protocol number (`meta l4proto`), 1 byte.
    L4Proto = 16,
}

/// A payload base (`enum nft_payload_bases`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// The link-layer header.
    Link = 0,
    /// The network header.
    Network = 1,
    /// The transport header (`th`).
    Transport = 2,
}

/// A comparison (`enum nft_cmp_ops`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq = 0,
    /// `!=`
    Neq = 1,
}

/// One expression of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `meta load KEY => reg`.
    Meta {
        /// What to load.
        key: MetaKey,
        /// Destination register.
        dreg: u32,
    },
    /// `payload load LEN @ BASE + OFFSET => reg`.
    Payload {
        /// Header.
        base: Base,
        /// Byte offset in it.
        offset: u32,
        /// Bytes to load.
        len: u32,
        /// Destination register.
        dreg: u32,
    },
    /// `cmp OP reg DATA`.
    Cmp {
        /// Source register.
        sreg: u32,
        /// Comparison.
        op: CmpOp,
        /// The value, as the register holds it.
        data: Vec<u8>,
    },
    /// `lookup reg set NAME` (inverted: not in the set).
    Lookup {
        /// Source register (the first of a concatenation).
        sreg: u32,
        /// Set in the rule's table.
        set: String,
        /// Match when the key is *not* in the set.
        invert: bool,
    },
    /// `ct load state => reg` (4 bytes, host order).
    CtState {
        /// Destination register.
        dreg: u32,
    },
    /// `bitwise reg = (reg & MASK) ^ XOR` in place.
    Bitwise {
        /// Source and destination register.
        reg: u32,
        /// Mask, as long as the value.
        mask: Vec<u8>,
        /// Xor, as long as the value.
        xor: Vec<u8>,
    },
    /// `lookup reg SREG set NAME dreg DREG`: a map lookup writing the value
    /// to `dreg`, or the verdict when `dreg` is 0 (a verdict map).
    MapLookup {
        /// Source register (the first of a concatenation).
        sreg: u32,
        /// Map in the rule's table.
        set: String,
        /// Destination register; 0 = the verdict register.
        dreg: u32,
    },
    /// `ct load status => reg` (4 bytes, host order).
    CtStatus {
        /// Destination register.
        dreg: u32,
    },
    /// `fib daddr type => reg`: the route type of the destination address
    /// (4 bytes, host order; 2 = local).
    FibDaddrType {
        /// Destination register.
        dreg: u32,
    },
    /// `nat dnat` to the address in `addr` and the port in `proto`
    /// (`flags 0x3`: address and port given).
    Dnat {
        /// IPv6 rather than IPv4.
        v6: bool,
        /// Register holding the address.
        addr: u32,
        /// Register holding the port.
        proto: u32,
    },
    /// `masq`.
    Masq,
    /// `counter`.
    Counter,
    /// `immediate reg 0 VERDICT` (with its chain for a jump or goto).
    Verdict(Verdict),
}

// Attribute numbers (linux/netfilter/nf_tables.h).
const EXPR_NAME: u16 = 1;
const EXPR_DATA: u16 = 2;

/// `meta nfproto ipv4|ipv6`: the implicit dependency nft adds in an `inet`
/// table before a network-header match.
pub fn nfproto(v6: bool) -> [Expr; 2] {
    [
        Expr::Meta {
            key: MetaKey::NfProto,
            dreg: REG_1,
        },
        Expr::Cmp {
            sreg: REG_1,
            op: CmpOp::Eq,
            data: vec![if v6 { 10 } else { 2 }],
        },
    ]
}

/// `ct state` includes any of `bits` (new 0x8, established 0x2, related 0x4).
pub fn ct_state_any(bits: u32) -> [Expr; 3] {
    [
        Expr::CtState { dreg: REG_1 },
        Expr::Bitwise {
            reg: REG_1,
            mask: bits.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: REG_1,
            op: CmpOp::Neq,
            data: vec![0; 4],
        },
    ]
}

/// The IPv4 (offset 16, 4 bytes) or IPv6 (offset 24, 16 bytes) destination
/// address into [`REG_1`].
pub fn daddr(v6: bool) -> Expr {
    Expr::Payload {
        base: Base::Network,
        offset: if v6 { 24 } else { 16 },
        len: if v6 { 16 } else { 4 },
        dreg: REG_1,
    }
}

/// The IPv4 (offset 12, 4 bytes) or IPv6 (offset 8, 16 bytes) source
/// address into `dreg`.
pub fn saddr(v6: bool, dreg: u32) -> Expr {
    Expr::Payload {
        base: Base::Network,
        offset: if v6 { 8 } else { 12 },
        len: if v6 { 16 } else { 4 },
        dreg,
    }
}

/// `len` bytes of header `base` at `offset` into `dreg`.
pub fn payload(base: Base, offset: u32, len: u32, dreg: u32) -> Expr {
    Expr::Payload {
        base,
        offset,
        len,
        dreg,
    }
}

/// `cmp OP reg 1 DATA`.
pub fn cmp(op: CmpOp, data: &[u8]) -> Expr {
    Expr::Cmp {
        sreg: REG_1,
        op,
        data: data.to_vec(),
    }
}

/// `ct status dnat`: the connection's destination was translated.
pub fn ct_status_dnat() -> [Expr; 3] {
    [
        Expr::CtStatus { dreg: REG_1 },
        Expr::Bitwise {
            reg: REG_1,
            mask: 0x20u32.to_ne_bytes().to_vec(), // IPS_DST_NAT
            xor: vec![0; 4],
        },
        cmp(CmpOp::Neq, &[0; 4]),
    ]
}

/// `fib daddr type local`: the packet is addressed to this host.
pub fn fib_daddr_local() -> [Expr; 2] {
    [
        Expr::FibDaddrType { dreg: REG_1 },
        cmp(CmpOp::Eq, &2u32.to_ne_bytes()), // RTN_LOCAL
    ]
}

/// `iifname`/`oifname` into a register.
pub fn meta(key: MetaKey, dreg: u32) -> Expr {
    Expr::Meta { key, dreg }
}

/// `lookup reg 1 set NAME`, inverted or not.
pub fn lookup(set: &str, invert: bool) -> Expr {
    Expr::Lookup {
        sreg: REG_1,
        set: set.to_owned(),
        invert,
    }
}

impl Expr {
    /// Appends this expression as one `NFTA_LIST_ELEM`.
    pub(crate) fn encode(&self, m: &mut MsgBuf) -> Result<(), NftError> {
        let elem = m.nest(LIST_ELEM);
        m.attr_str(EXPR_NAME, self.name());
        let data = m.nest(EXPR_DATA);
        match self {
            Expr::Meta { key, dreg } => {
                m.attr_be32(1, *dreg); // NFTA_META_DREG
                m.attr_be32(2, *key as u32); // NFTA_META_KEY
            }
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                m.attr_be32(1, *dreg); // NFTA_PAYLOAD_DREG
                m.attr_be32(2, *base as u32); // NFTA_PAYLOAD_BASE
                m.attr_be32(3, *offset); // NFTA_PAYLOAD_OFFSET
                m.attr_be32(4, *len); // NFTA_PAYLOAD_LEN
            }
            Expr::Cmp { sreg, op, data: d } => {
                m.attr_be32(1, *sreg); // NFTA_CMP_SREG
                m.attr_be32(2, *op as u32); // NFTA_CMP_OP
                let v = m.nest(3); // NFTA_CMP_DATA
                m.attr(DATA_VALUE, d);
                m.nest_end(v)?;
            }
            Expr::Lookup { sreg, set, invert } => {
                crate::model::check_name("set", set)?;
                m.attr_str(1, set); // NFTA_LOOKUP_SET
                m.attr_be32(2, *sreg); // NFTA_LOOKUP_SREG
                if *invert {
                    m.attr_be32(5, 1); // NFTA_LOOKUP_FLAGS: NFT_LOOKUP_F_INV
                }
            }
            Expr::CtState { dreg } => {
                m.attr_be32(1, *dreg); // NFTA_CT_DREG
                m.attr_be32(2, 0); // NFTA_CT_KEY: NFT_CT_STATE
            }
            Expr::Bitwise { reg, mask, xor } => {
                if mask.len() != xor.len() {
                    return Err(NftError::invalid("bitwise: mask and xor differ in length"));
                }
                m.attr_be32(1, *reg); // NFTA_BITWISE_SREG
                m.attr_be32(2, *reg); // NFTA_BITWISE_DREG
                m.attr_be32(3, mask.len() as u32); // NFTA_BITWISE_LEN
                let v = m.nest(4); // NFTA_BITWISE_MASK
                m.attr(DATA_VALUE, mask);
                m.nest_end(v)?;
                let v = m.nest(5); // NFTA_BITWISE_XOR
                m.attr(DATA_VALUE, xor);
                m.nest_end(v)?;
            }
            Expr::MapLookup { sreg, set, dreg } => {
                crate::model::check_name("map", set)?;
                m.attr_str(1, set); // NFTA_LOOKUP_SET
                m.attr_be32(2, *sreg); // NFTA_LOOKUP_SREG
                m.attr_be32(3, *dreg); // NFTA_LOOKUP_DREG
            }
            Expr::CtStatus { dreg } => {
                m.attr_be32(1, *dreg); // NFTA_CT_DREG
                m.attr_be32(2, 2); // NFTA_CT_KEY: NFT_CT_STATUS
            }
            Expr::FibDaddrType { dreg } => {
                m.attr_be32(1, *dreg); // NFTA_FIB_DREG
                m.attr_be32(2, 3); // NFTA_FIB_RESULT: NFT_FIB_RESULT_ADDRTYPE
                m.attr_be32(3, 2); // NFTA_FIB_FLAGS: NFTA_FIB_F_DADDR
            }
            Expr::Dnat { v6, addr, proto } => {
                m.attr_be32(1, 1); // NFTA_NAT_TYPE: NFT_NAT_DNAT
                m.attr_be32(2, if *v6 { 10 } else { 2 }); // NFTA_NAT_FAMILY
                m.attr_be32(3, *addr); // NFTA_NAT_REG_ADDR_MIN
                m.attr_be32(4, *addr); // NFTA_NAT_REG_ADDR_MAX
                m.attr_be32(5, *proto); // NFTA_NAT_REG_PROTO_MIN
                m.attr_be32(6, *proto); // NFTA_NAT_REG_PROTO_MAX
                // NFTA_NAT_FLAGS: NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED
                m.attr_be32(7, 3);
            }
            Expr::Masq | Expr::Counter => {}
            Expr::Verdict(v) => {
                if let Some(c) = v.chain() {
                    crate::model::check_name("chain", c)?;
                }
                m.attr_be32(1, 0); // NFTA_IMMEDIATE_DREG: NFT_REG_VERDICT
                let d = m.nest(2); // NFTA_IMMEDIATE_DATA
                let vd = m.nest(DATA_VERDICT);
                m.attr_be32(VERDICT_CODE, v.code() as u32);
                if let Some(c) = v.chain() {
                    m.attr_str(VERDICT_CHAIN, c);
                }
                m.nest_end(vd)?;
                m.nest_end(d)?;
            }
        }
        m.nest_end(data)?;
        m.nest_end(elem)
    }

    /// The kernel's name of the expression.
    fn name(&self) -> &'static str {
        match self {
            Expr::Meta { .. } => "meta",
            Expr::Payload { .. } => "payload",
            Expr::Cmp { .. } => "cmp",
            Expr::Lookup { .. } => "lookup",
            Expr::CtState { .. } => "ct",
            Expr::Bitwise { .. } => "bitwise",
            Expr::MapLookup { .. } => "lookup",
            Expr::CtStatus { .. } => "ct",
            Expr::FibDaddrType { .. } => "fib",
            Expr::Dnat { .. } => "nat",
            Expr::Masq => "masq",
            Expr::Counter => "counter",
            Expr::Verdict(_) => "immediate",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn a_verdict_is_an_immediate_to_the_verdict_register() {
        let mut m = MsgBuf::default();
        Expr::Verdict(Verdict::Drop).encode(&mut m).unwrap();
        // LIST_ELEM { NAME "immediate", DATA { DREG 0, DATA { VERDICT { CODE 0 } } } }
        let b = &m.buf;
        assert_eq!(u16::from_ne_bytes([b[2], b[3]]), LIST_ELEM | 0x8000);
        assert!(b.windows(9).any(|w| w == b"immediate"));
        assert_eq!(b.len() % 4, 0);
    }

    #[test]
    fn bitwise_needs_equal_lengths() {
        let mut m = MsgBuf::default();
        let e = Expr::Bitwise {
            reg: REG_1,
            mask: vec![1, 2, 3, 4],
            xor: vec![0],
        };
        assert!(e.encode(&mut m).is_err());
    }
}
