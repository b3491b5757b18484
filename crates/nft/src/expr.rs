//! nf_tables rule expressions, for the chains rnet creates over netlink
//! instead of through an `nft` process ([`crate::Chain::native`]).
//!
//! Only what rnet's feature chains use: meta and payload loads, comparisons,
//! set lookups, conntrack state tests, a counter and verdicts. Each rule is
//! written beside its nft text, and a kernel test checks that the two give
//! the same bytecode (`nft --debug=netlink list`), so the text stays the
//! documentation and the fallback.
//!
//! Registers: [`REG_1`] and [`REG_2`] are the 16-byte registers nft uses
//! for single values and for two-field concatenations of interface names and
//! link-layer addresses.

use crate::NftError;
use crate::nl::MsgBuf;

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
}

/// A payload base (`enum nft_payload_bases`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// The link-layer header.
    Link = 0,
    /// The network header.
    Network = 1,
}

/// A comparison (`enum nft_cmp_ops`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq = 0,
    /// `!=`
    Neq = 1,
}

/// A verdict of an immediate statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `drop` (`NF_DROP`).
    Drop = 0,
    /// `accept` (`NF_ACCEPT`).
    Accept = 1,
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
    /// `counter`.
    Counter,
    /// `immediate reg 0 VERDICT`.
    Verdict(Verdict),
}

// Attribute numbers (linux/netfilter/nf_tables.h).
const LIST_ELEM: u16 = 1;
const EXPR_NAME: u16 = 1;
const EXPR_DATA: u16 = 2;
const DATA_VALUE: u16 = 1;
const DATA_VERDICT: u16 = 2;
const VERDICT_CODE: u16 = 1;

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
            Expr::Counter => {}
            Expr::Verdict(v) => {
                m.attr_be32(1, 0); // NFTA_IMMEDIATE_DREG: NFT_REG_VERDICT
                let d = m.nest(2); // NFTA_IMMEDIATE_DATA
                let vd = m.nest(DATA_VERDICT);
                m.attr_be32(VERDICT_CODE, *v as u32);
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
