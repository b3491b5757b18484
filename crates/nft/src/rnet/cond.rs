//! The port mapper's **condition chains**: extra match conditions
//! (`conditionsV4` / `conditionsV6`) that a published port must meet before
//! it is translated.
//!
//! # Why chains, and why these few
//!
//! Ports without conditions stay on the flat path (`pm_dnat` looks the port
//! up in `hostports4` and friends). A conditioned port is still claimed in
//! those maps (so "this host port is taken" stays ONE exclusive add in the
//! kernel, conditioned or not), and additionally gets an element in a verdict
//! map (`pm_cond4`, `pm_condip4`, and the v6 pair) whose verdict is `goto`
//! to the chain of its condition set:
//!
//! ```text
//! pm_dnat:   ip daddr . meta l4proto . th dport vmap @pm_condip4
//!            dnat ip to ip daddr . meta l4proto . th dport map @hostip_ports4
//!            meta nfproto ipv4 meta l4proto . th dport vmap @pm_cond4
//!            meta nfproto ipv4 dnat ip to meta l4proto . th dport map @hostports4
//! pmc4_<h>:  <conditions> goto pm_cdnat4
//! pm_cdnat4: the two DNAT map lookups
//! ```
//!
//! A packet for a conditioned port that does not meet the conditions falls
//! off the end of `pmc4_<h>`; because it got there by `goto`, that returns
//! past the `jump pm_dnat` of the base chain: it is not translated at all.
//! There is one chain per distinct condition set and family (`<h>` is the
//! FNV-64 of the canonical text), shared by every attachment with the same
//! conditions, created on first use and removed when its last verdict-map
//! element goes. The lookups stay O(1); only the matches of the one chain a
//! packet is sent to are evaluated.
//!
//! # Why a strict grammar
//!
//! The conditions come from a network configuration and end up in `nft -f`
//! text. They are parsed into a small whitelisted grammar of match
//! expressions and rendered back ([`canonical`]): nothing but matches on
//! addresses, interfaces, marks, protocols, ports, address types and
//! conntrack state can get through, every value is parsed as what it must
//! be (an address, a port, an interface name), and statements, verdicts,
//! `;`, `#`, set references, variables and stray quotes or braces are
//! refused. The canonical text is also what is hashed and recorded, so two
//! spellings of the same conditions share one chain.
//!
//! # Records
//!
//! The kernel cannot be asked for a chain's rules cheaply, so every
//! condition chain is recorded in `<stateRoot>/nft/chains/<name>.chain`
//! (written under the nft lock before the chain is created; removed with
//! it). The slow path ([`super::restore`]) recreates the recorded chains
//! together with the tables; a verdict-map element whose chain has no
//! valid record gets an **empty** chain instead, so its port fails closed
//! (not translated) rather than open (translated without its conditions).

use ipnet::IpNet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{RnetError, TABLE, jerr, journal_root, sets, tag_hash, write_atomic};
use crate::{Backend, Chain, FakeBackend, Family, Nft, NftError, Ruleset, Verdict};

/// The address family a condition set applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CondFamily {
    /// `conditionsV4`: IPv4 mappings.
    V4,
    /// `conditionsV6`: IPv6 mappings.
    V6,
}

impl CondFamily {
    /// `4` or `6`.
    pub fn digit(self) -> char {
        match self {
            CondFamily::V4 => '4',
            CondFamily::V6 => '6',
        }
    }

    /// `ipv4` or `ipv6` (record files).
    pub fn as_str(self) -> &'static str {
        match self {
            CondFamily::V4 => "ipv4",
            CondFamily::V6 => "ipv6",
        }
    }

    /// The configuration key: `conditionsV4` or `conditionsV6`.
    pub fn key(self) -> &'static str {
        match self {
            CondFamily::V4 => "conditionsV4",
            CondFamily::V6 => "conditionsV6",
        }
    }

    /// The static chain a condition chain of this family continues to.
    pub fn dnat_chain(self) -> &'static str {
        match self {
            CondFamily::V4 => CDNAT4,
            CondFamily::V6 => CDNAT6,
        }
    }

    fn other(self) -> CondFamily {
        match self {
            CondFamily::V4 => CondFamily::V6,
            CondFamily::V6 => CondFamily::V4,
        }
    }
}

/// The static chain with the IPv4 DNAT lookups for conditioned ports.
pub const CDNAT4: &str = "pm_cdnat4";
/// The static chain with the IPv6 DNAT lookups for conditioned ports.
pub const CDNAT6: &str = "pm_cdnat6";
/// The verdict maps holding conditioned ports (`goto pmc*_<hash>`).
pub const COND_MAPS: [&str; 4] = [
    sets::PM_COND4,
    sets::PM_CONDIP4,
    sets::PM_COND6,
    sets::PM_CONDIP6,
];
/// Longest canonical condition text accepted.
pub const MAX_COND_LEN: usize = 2048;

/// What the nft condition grammar accepts, for error messages.
pub const SUPPORTED: &str = "supported matches: ip saddr|daddr (conditionsV4), ip6 saddr|daddr \
     (conditionsV6), iifname, oifname, iif, oif, meta iifname|oifname|iif|oif|mark|l4proto, \
     tcp|udp|sctp|th sport|dport, fib saddr|daddr [. mark] type, ct state, ct mark; each with an \
     optional == or != and one value, a comma list or an anonymous set { a, b }";

/// Why a condition was refused. Every message names the offending token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CondError {
    /// A character that has no place in a match expression.
    #[error(
        "character {ch:?} is not allowed in a condition (no ';', '#', '@' set references, '$' \
         variables, backslashes, single quotes or control characters; double quotes only around \
         interface names)"
    )]
    ForbiddenChar {
        /// The character.
        ch: char,
    },
    /// A token that is not part of the supported grammar.
    #[error("unsupported {token:?} {context}; {SUPPORTED}")]
    Unsupported {
        /// The token.
        token: String,
        /// Where it was met (`at the start of a match`, `after "ct"`, ...).
        context: String,
    },
    /// A selector without a value.
    #[error("{selector} needs a value")]
    MissingValue {
        /// The selector (`ip saddr`).
        selector: String,
    },
    /// A value that is not what its selector compares.
    #[error("{value:?} is not a valid value for {selector}: {why}")]
    BadValue {
        /// The selector.
        selector: String,
        /// The value.
        value: String,
        /// What was expected.
        why: String,
    },
    /// An IPv4 match in IPv6 conditions or the other way round.
    #[error(
        "{what} is an IPv{got} match, but {key} applies to IPv{want} mappings only; put it in \
         conditionsV{got}"
    )]
    WrongFamily {
        /// The match or value.
        what: String,
        /// Its family digit.
        got: char,
        /// The list's family digit.
        want: char,
        /// The list's key.
        key: &'static str,
    },
    /// Unbalanced quotes or braces, or an empty list.
    #[error("{0}")]
    Syntax(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Quoted(String),
    LBrace,
    RBrace,
    Comma,
    Amp,
}

impl Tok {
    fn text(&self) -> String {
        match self {
            Tok::Word(w) => w.clone(),
            Tok::Quoted(q) => format!("\"{q}\""),
            Tok::LBrace => "{".into(),
            Tok::RBrace => "}".into(),
            Tok::Comma => ",".into(),
            Tok::Amp => "&".into(),
        }
    }
}

fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-' | '!' | '=' | '*' | '+')
}

fn tokenize(text: &str) -> Result<Vec<Tok>, CondError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | '\t' => {
                chars.next();
            }
            '{' | '}' | ',' | '&' => {
                chars.next();
                out.push(match c {
                    '{' => Tok::LBrace,
                    '}' => Tok::RBrace,
                    ',' => Tok::Comma,
                    _ => Tok::Amp,
                });
            }
            '"' => {
                chars.next();
                let mut q = String::new();
                loop {
                    match chars.next() {
                        None => {
                            return Err(CondError::Syntax(format!(
                                "unterminated quote in {text:?}"
                            )));
                        }
                        Some('"') => break,
                        Some(ch) if word_char(ch) => q.push(ch),
                        Some(ch) => return Err(CondError::ForbiddenChar { ch }),
                    }
                }
                out.push(Tok::Quoted(q));
            }
            c if word_char(c) => {
                let mut w = String::new();
                while let Some(&ch) = chars.peek() {
                    if !word_char(ch) {
                        break;
                    }
                    w.push(ch);
                    chars.next();
                }
                out.push(Tok::Word(w));
            }
            ch => return Err(CondError::ForbiddenChar { ch }),
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Addr4,
    Addr6,
    IfName { wildcard: bool },
    Port,
    Proto,
    Mark,
    CtState,
    FibType,
}

const PROTOS: [&str; 11] = [
    "tcp",
    "udp",
    "sctp",
    "icmp",
    "icmpv6",
    "udplite",
    "dccp",
    "gre",
    "esp",
    "ah",
    "ipv6-icmp",
];
const CT_STATES: [&str; 5] = ["new", "established", "related", "invalid", "untracked"];
/// Address types of `fib ... type` (and of iptables' `addrtype`).
pub const FIB_TYPES: [&str; 9] = [
    "unspec",
    "unicast",
    "local",
    "broadcast",
    "anycast",
    "multicast",
    "blackhole",
    "unreachable",
    "prohibit",
];

struct Parser<'a> {
    toks: &'a [Tok],
    i: usize,
    fam: CondFamily,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.i).cloned();
        if t.is_some() {
            self.i += 1;
        }
        t
    }

    fn word(&mut self, context: &str, allowed: &[&str]) -> Result<String, CondError> {
        match self.next() {
            Some(Tok::Word(w)) if allowed.contains(&w.as_str()) => Ok(w),
            Some(t) => Err(CondError::Unsupported {
                token: t.text(),
                context: format!("{context} (expected one of {})", allowed.join(", ")),
            }),
            None => Err(CondError::Syntax(format!(
                "the condition ends {context}; expected one of {}",
                allowed.join(", ")
            ))),
        }
    }

    fn wrong_family(&self, what: &str, got: CondFamily) -> CondError {
        CondError::WrongFamily {
            what: what.to_owned(),
            got: got.digit(),
            want: self.fam.digit(),
            key: self.fam.key(),
        }
    }

    /// One selector: its canonical text and the kind of value it compares.
    fn selector(&mut self) -> Result<(String, Kind), CondError> {
        let Some(t) = self.next() else {
            return Err(CondError::Syntax("empty condition".into()));
        };
        let Tok::Word(w) = t else {
            return Err(CondError::Unsupported {
                token: t.text(),
                context: "at the start of a match".into(),
            });
        };
        Ok(match w.as_str() {
            "ip" | "ip6" => {
                let f = if w == "ip" {
                    CondFamily::V4
                } else {
                    CondFamily::V6
                };
                let dir = self.word(&format!("after {w:?}"), &["saddr", "daddr"])?;
                let sel = format!("{w} {dir}");
                if f != self.fam {
                    return Err(self.wrong_family(&sel, f));
                }
                let kind = if f == CondFamily::V4 {
                    Kind::Addr4
                } else {
                    Kind::Addr6
                };
                (sel, kind)
            }
            "iifname" | "oifname" => (w, Kind::IfName { wildcard: true }),
            "iif" | "oif" => (w, Kind::IfName { wildcard: false }),
            "mark" => ("meta mark".into(), Kind::Mark),
            "meta" => {
                let k = self.word(
                    "after \"meta\"",
                    &["iifname", "oifname", "iif", "oif", "mark", "l4proto"],
                )?;
                match k.as_str() {
                    "iifname" | "oifname" => (k, Kind::IfName { wildcard: true }),
                    "iif" | "oif" => (k, Kind::IfName { wildcard: false }),
                    "mark" => ("meta mark".into(), Kind::Mark),
                    _ => ("meta l4proto".into(), Kind::Proto),
                }
            }
            "tcp" | "udp" | "sctp" | "th" => {
                let dir = self.word(&format!("after {w:?}"), &["sport", "dport"])?;
                (format!("{w} {dir}"), Kind::Port)
            }
            "fib" => {
                let dir = self.word("after \"fib\"", &["saddr", "daddr"])?;
                let mut sel = format!("fib {dir}");
                loop {
                    match self.next() {
                        Some(Tok::Word(x)) if x == "type" => break,
                        Some(Tok::Word(x)) if x == "." => {
                            let f = self.word(
                                "after \"fib ... .\" (iif and oif cannot be used: conditions \
                                 apply in prerouting and output alike)",
                                &["mark"],
                            )?;
                            let _ = write!(sel, " . {f}");
                        }
                        Some(t) => {
                            return Err(CondError::Unsupported {
                                token: t.text(),
                                context: "in a fib match (expected \". mark\" or \"type\"; only \
                                          \"fib saddr|daddr [. mark] type\" is supported)"
                                    .into(),
                            });
                        }
                        None => {
                            return Err(CondError::Syntax(format!(
                                "{sel:?} must continue with \"type\" and an address type"
                            )));
                        }
                    }
                }
                sel.push_str(" type");
                (sel, Kind::FibType)
            }
            "ct" => {
                let k = self.word("after \"ct\"", &["state", "mark"])?;
                if k == "state" {
                    ("ct state".into(), Kind::CtState)
                } else {
                    ("ct mark".into(), Kind::Mark)
                }
            }
            _ => {
                return Err(CondError::Unsupported {
                    token: w,
                    context: "at the start of a match (statements, verdicts and other \
                              selectors are not allowed)"
                        .into(),
                });
            }
        })
    }

    fn value_token(&mut self, sel: &str) -> Result<String, CondError> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            Some(Tok::Quoted(q)) => Ok(format!("\"{q}\"")),
            Some(t) => Err(CondError::BadValue {
                selector: sel.to_owned(),
                value: t.text(),
                why: "a value was expected here".into(),
            }),
            None => Err(CondError::MissingValue {
                selector: sel.to_owned(),
            }),
        }
    }

    /// One value or a list: `v`, `v, w`, `{ v, w }`.
    fn values(&mut self, sel: &str, kind: Kind) -> Result<Vec<String>, CondError> {
        let mut out = Vec::new();
        if self.peek() == Some(&Tok::LBrace) {
            self.next();
            loop {
                let v = self.value_token(sel)?;
                out.push(value(self.fam, sel, kind, &v)?);
                match self.next() {
                    Some(Tok::Comma) => {
                        if self.peek() == Some(&Tok::RBrace) {
                            self.next();
                            break;
                        }
                    }
                    Some(Tok::RBrace) => break,
                    Some(t) => {
                        return Err(CondError::Syntax(format!(
                            "expected ',' or '}}' in the set of {sel}, got {:?}",
                            t.text()
                        )));
                    }
                    None => {
                        return Err(CondError::Syntax(format!(
                            "the set of {sel} is not closed with '}}'"
                        )));
                    }
                }
            }
        } else {
            loop {
                let v = self.value_token(sel)?;
                out.push(value(self.fam, sel, kind, &v)?);
                if self.peek() == Some(&Tok::Comma) {
                    self.next();
                } else {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn matcher(&mut self) -> Result<String, CondError> {
        let (sel, kind) = self.selector()?;
        let mut mask = None;
        if kind == Kind::Mark {
            let amp = match self.peek() {
                Some(Tok::Amp) => true,
                Some(Tok::Word(w)) => w == "and",
                _ => false,
            };
            if amp {
                self.next();
                let m = self.value_token(&sel)?;
                mask = Some(value(self.fam, &sel, Kind::Mark, &m)?);
            }
        }
        let neg = match self.peek() {
            Some(Tok::Word(w)) if w == "!=" || w == "ne" => {
                self.next();
                true
            }
            Some(Tok::Word(w)) if w == "==" || w == "eq" => {
                self.next();
                false
            }
            _ => false,
        };
        let mut vals = self.values(&sel, kind)?;
        // Sets are unordered: one spelling, so equal conditions share a chain.
        vals.sort();
        vals.dedup();
        let mut s = sel;
        if let Some(m) = mask {
            let _ = write!(s, " & {m}");
            s.push_str(if neg { " !=" } else { " ==" });
        } else if neg {
            s.push_str(" !=");
        }
        if let [v] = vals.as_slice() {
            let _ = write!(s, " {v}");
        } else {
            let _ = write!(s, " {{ {} }}", vals.join(", "));
        }
        Ok(s)
    }
}

fn bad(sel: &str, v: &str, why: impl Into<String>) -> CondError {
    CondError::BadValue {
        selector: sel.to_owned(),
        value: v.to_owned(),
        why: why.into(),
    }
}

fn parse_u32(v: &str) -> Option<u32> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

fn port(sel: &str, v: &str) -> Result<u16, CondError> {
    v.parse::<u16>().map_err(|_| {
        bad(
            sel,
            v,
            "ports are numbers 0-65535 (service names are not resolved)",
        )
    })
}

/// Parses one value of `kind` and renders it canonically.
fn value(fam: CondFamily, sel: &str, kind: Kind, v: &str) -> Result<String, CondError> {
    let quoted = v.len() >= 2 && v.starts_with('"') && v.ends_with('"');
    if quoted && !matches!(kind, Kind::IfName { .. }) {
        return Err(bad(
            sel,
            v,
            "quotes are only allowed around interface names",
        ));
    }
    match kind {
        Kind::Addr4 | Kind::Addr6 => addr(fam, sel, v),
        Kind::IfName { wildcard } => {
            let name = if quoted { &v[1..v.len() - 1] } else { v };
            let (stem, star) = match name.strip_suffix('*') {
                Some(s) if wildcard => (s, true),
                _ => (name, false),
            };
            let ok = !stem.is_empty()
                && stem.len() <= 15
                && stem
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':'));
            if !ok {
                return Err(bad(
                    sel,
                    v,
                    if wildcard {
                        "an interface name is 1-15 letters, digits, '_', '.', '-' or ':', \
                         optionally ending in '*'"
                    } else {
                        "an interface name is 1-15 letters, digits, '_', '.', '-' or ':' (no \
                         wildcard: use iifname/oifname for patterns)"
                    },
                ));
            }
            Ok(format!("\"{stem}{}\"", if star { "*" } else { "" }))
        }
        Kind::Port => match v.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (port(sel, a)?, port(sel, b)?);
                if a > b {
                    return Err(bad(sel, v, "a port range must not end before it starts"));
                }
                Ok(format!("{a}-{b}"))
            }
            None => Ok(port(sel, v)?.to_string()),
        },
        Kind::Proto => {
            let lower = v.to_ascii_lowercase();
            if PROTOS.contains(&lower.as_str()) {
                Ok(lower)
            } else if let Ok(n) = v.parse::<u8>() {
                Ok(n.to_string())
            } else {
                Err(bad(
                    sel,
                    v,
                    format!("use a number 0-255 or one of {}", PROTOS.join(", ")),
                ))
            }
        }
        Kind::Mark => parse_u32(v)
            .map(|n| format!("0x{n:x}"))
            .ok_or_else(|| bad(sel, v, "a mark is a 32-bit number, decimal or 0x hex")),
        Kind::CtState => {
            let lower = v.to_ascii_lowercase();
            if CT_STATES.contains(&lower.as_str()) {
                Ok(lower)
            } else {
                Err(bad(sel, v, format!("use one of {}", CT_STATES.join(", "))))
            }
        }
        Kind::FibType => {
            let lower = v.to_ascii_lowercase();
            if FIB_TYPES.contains(&lower.as_str()) {
                Ok(lower)
            } else {
                Err(bad(sel, v, format!("use one of {}", FIB_TYPES.join(", "))))
            }
        }
    }
}

/// An address or prefix of family `fam`, host bits cleared (`10.1.2.3/8` →
/// `10.0.0.0/8`), full-length prefixes written as plain addresses.
fn addr(fam: CondFamily, sel: &str, v: &str) -> Result<String, CondError> {
    let (a, len) = match v.split_once('/') {
        Some((a, l)) => (
            a,
            Some(
                l.parse::<u8>()
                    .map_err(|_| bad(sel, v, "the prefix length must be a number"))?,
            ),
        ),
        None => (v, None),
    };
    let v4 = a.parse::<Ipv4Addr>();
    let v6 = a.parse::<Ipv6Addr>();
    let ip: Option<IpAddr> = match (fam, &v4, &v6) {
        (CondFamily::V4, Ok(ip), _) => Some((*ip).into()),
        (CondFamily::V6, _, Ok(ip)) => Some((*ip).into()),
        _ => None,
    };
    if let Some(ip) = ip {
        let (full, name) = if ip.is_ipv4() {
            (32, "IPv4")
        } else {
            (128, "IPv6")
        };
        let net = IpNet::new(ip, len.unwrap_or(full))
            .map_err(|_| bad(sel, v, format!("an {name} prefix length is at most {full}")))?
            .trunc();
        return Ok(if net.prefix_len() == full {
            net.addr().to_string()
        } else {
            net.to_string()
        });
    }
    match (fam, v4, v6) {
        (CondFamily::V6, Ok(_), _) => Err(CondError::WrongFamily {
            what: format!("{sel} {v}"),
            got: '4',
            want: '6',
            key: fam.key(),
        }),
        (CondFamily::V4, _, Ok(_)) => Err(CondError::WrongFamily {
            what: format!("{sel} {v}"),
            got: fam.other().digit(),
            want: '4',
            key: fam.key(),
        }),
        _ => Err(bad(
            sel,
            v,
            format!(
                "expected an IPv{} address or prefix (names are not resolved)",
                fam.digit()
            ),
        )),
    }
}

/// Parses nft match expressions (the elements of a `conditionsV4/V6` list
/// joined by spaces) against the whitelisted grammar and returns them as
/// canonical text: one space between tokens, values normalised, lists as
/// anonymous sets. This text is what goes into the chain, is hashed for its
/// name and recorded.
pub fn canonical(fam: CondFamily, text: &str) -> Result<String, CondError> {
    if text.len() > 4 * MAX_COND_LEN {
        return Err(CondError::Syntax(format!(
            "{} is {} bytes long; at most {MAX_COND_LEN} (normalised) are accepted",
            fam.key(),
            text.len()
        )));
    }
    let toks = tokenize(text)?;
    if toks.is_empty() {
        return Err(CondError::Syntax(format!(
            "{} has no match expression",
            fam.key()
        )));
    }
    let mut p = Parser {
        toks: &toks,
        i: 0,
        fam,
    };
    let mut out = Vec::new();
    while p.peek().is_some() {
        out.push(p.matcher()?);
    }
    let s = out.join(" ");
    if s.len() > MAX_COND_LEN {
        return Err(CondError::Syntax(format!(
            "{} is {} bytes long once normalised; at most {MAX_COND_LEN} are accepted",
            fam.key(),
            s.len()
        )));
    }
    Ok(s)
}

/// One condition set of one family: a chain `pmc4_<hash>` / `pmc6_<hash>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CondChain {
    /// The family.
    pub family: CondFamily,
    /// The canonical match text ([`canonical`]).
    pub matches: String,
}

impl CondChain {
    /// Validates `text` and makes the condition set.
    pub fn new(family: CondFamily, text: &str) -> Result<CondChain, CondError> {
        Ok(CondChain {
            family,
            matches: canonical(family, text)?,
        })
    }

    /// `pmc4_<fnv64 of the canonical text>`.
    pub fn name(&self) -> String {
        chain_name(self.family, &self.matches)
    }

    /// The chain: `<matches> goto pm_cdnat4`.
    pub fn chain(&self) -> Chain {
        Chain::new(self.name()).rule(format!(
            "{} goto {}",
            self.matches,
            self.family.dnat_chain()
        ))
    }

    /// The verdict of this set's verdict-map elements.
    pub fn verdict(&self) -> Verdict {
        Verdict::Goto(self.name())
    }
}

/// The chain name of a condition set.
pub fn chain_name(family: CondFamily, canonical: &str) -> String {
    format!(
        "pmc{}_{}",
        family.digit(),
        tag_hash(&format!("{} {canonical}", family.as_str()))
    )
}

/// Is `name` a condition chain name (`pmc4_` or `pmc6_` + 16 hex digits)?
pub fn is_cond_chain(name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix("pmc4_")
        .or_else(|| name.strip_prefix("pmc6_"))
    else {
        return false;
    };
    rest.len() == 16 && rest.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

/// `<stateRoot>/nft/chains`.
pub fn records_dir(state_root: &Path) -> PathBuf {
    journal_root(state_root).join("chains")
}

fn record_path(state_root: &Path, name: &str) -> PathBuf {
    records_dir(state_root).join(format!("{name}.chain"))
}

/// Records a condition chain (atomically). Call it with the nft lock held,
/// before creating the chain.
pub fn record_write(state_root: &Path, c: &CondChain) -> Result<(), RnetError> {
    let v = json!({"family": c.family.as_str(), "match": c.matches});
    write_atomic(
        &record_path(state_root, &c.name()),
        v.to_string().as_bytes(),
    )
}

/// Removes the record of chain `name`; a missing record is fine.
pub fn record_remove(state_root: &Path, name: &str) -> Result<(), RnetError> {
    let p = record_path(state_root, name);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(jerr("cannot remove condition chain record", &p)(e)),
    }
}

/// Every valid record. A record that does not parse, whose conditions no
/// longer pass [`canonical`] or whose file name is not its chain's name is
/// reported on stderr and skipped (its ports then fail closed).
pub fn records(state_root: &Path) -> Vec<CondChain> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(records_dir(state_root)) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "chain"))
        .collect();
    paths.sort();
    for p in paths {
        let parsed = std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| {
                let fam = match v.get("family")?.as_str()? {
                    "ipv4" => CondFamily::V4,
                    "ipv6" => CondFamily::V6,
                    _ => return None,
                };
                CondChain::new(fam, v.get("match")?.as_str()?).ok()
            })
            .filter(|c| p.file_stem().is_some_and(|s| *s == *c.name()));
        match parsed {
            Some(c) => out.push(c),
            None => eprintln!(
                "rnet: skipping invalid condition chain record {} (its ports stay closed; remove \
                 it and re-add the containers)",
                p.display()
            ),
        }
    }
    out
}

/// Adds to `model`'s `inet rnet` table every recorded condition chain, and
/// an empty chain for every chain a verdict-map element of the model or a
/// name in `also` refers to without a valid record (fail closed). Returns
/// how many empty chains were made.
pub(crate) fn add_chains(model: &mut Ruleset, state_root: &Path, also: &[String]) -> usize {
    let Some(t) = model
        .tables
        .iter_mut()
        .find(|t| t.family == Family::Inet && t.name == TABLE)
    else {
        return 0;
    };
    for c in records(state_root) {
        let name = c.name();
        if !t.chains.iter().any(|x| x.name == name) {
            t.chains.push(c.chain());
        }
    }
    let mut wanted: Vec<String> = also.to_vec();
    for m in &t.maps {
        if COND_MAPS.contains(&m.name.as_str()) {
            for e in &m.elements {
                if let Some(Verdict::Goto(c) | Verdict::Jump(c)) = &e.verdict {
                    wanted.push(c.clone());
                }
            }
        }
    }
    let mut empty = 0;
    for name in wanted {
        if is_cond_chain(&name) && !t.chains.iter().any(|x| x.name == name) {
            eprintln!(
                "rnet: condition chain {name} has no record in {}; its ports stay closed until \
                 their containers are added again",
                records_dir(state_root).display()
            );
            t.chains.push(Chain::new(name));
            empty += 1;
        }
    }
    empty
}

/// The chain operations condition sets need beyond [`Backend`]: create one
/// chain in `inet rnet` and delete one, without touching the rest of the
/// table. (The hot path stays element batches; these run only when a
/// condition set is first used or last released.)
pub trait CondChains: Backend {
    /// Creates `chain` in `inet rnet`, or replaces its rules (one `nft -f`
    /// transaction). Fails if the table is missing.
    fn put_chain(&mut self, chain: &Chain) -> Result<(), NftError>;
    /// Deletes chain `name` of `inet rnet`; a missing chain is fine. Fails
    /// with `EBUSY` while something still refers to it.
    fn remove_chain(&mut self, name: &str) -> Result<(), NftError>;
}

fn check_cond_chain(name: &str) -> Result<(), NftError> {
    if is_cond_chain(name) {
        Ok(())
    } else {
        Err(NftError::invalid(format!(
            "{name:?} is not a condition chain name (pmc4_/pmc6_ and 16 hex digits)"
        )))
    }
}

/// The `nft -f` text that creates or refills `chain` in `inet rnet`.
pub fn put_chain_text(chain: &Chain) -> Result<String, NftError> {
    check_cond_chain(&chain.name)?;
    chain.put_text(Family::Inet, TABLE)
}

impl CondChains for Nft {
    fn put_chain(&mut self, chain: &Chain) -> Result<(), NftError> {
        let text = put_chain_text(chain)?;
        self.apply_ruleset(&text)
    }

    fn remove_chain(&mut self, name: &str) -> Result<(), NftError> {
        check_cond_chain(name)?;
        if !self.chain_exists(Family::Inet, TABLE, name)? {
            return Ok(());
        }
        self.apply_ruleset(&format!("delete chain inet {TABLE} {name}\n"))
    }
}

impl CondChains for FakeBackend {
    fn put_chain(&mut self, chain: &Chain) -> Result<(), NftError> {
        check_cond_chain(&chain.name)?;
        let Some(mut t) = self
            .state()
            .tables
            .iter()
            .find(|t| t.family == Family::Inet && t.name == TABLE)
            .cloned()
        else {
            return Err(NftError::kernel(
                libc::ENOENT,
                format!("adding chain {} to table inet {TABLE}", chain.name),
            ));
        };
        match t.chains.iter_mut().find(|c| c.name == chain.name) {
            Some(c) => *c = chain.clone(),
            None => t.chains.push(chain.clone()),
        }
        self.apply(&Ruleset::new().table(t))
    }

    fn remove_chain(&mut self, name: &str) -> Result<(), NftError> {
        check_cond_chain(name)?;
        let Some(mut t) = self
            .state()
            .tables
            .iter()
            .find(|t| t.family == Family::Inet && t.name == TABLE)
            .cloned()
        else {
            return Ok(());
        };
        if !t.chains.iter().any(|c| c.name == name) {
            return Ok(());
        }
        let used = t.maps.iter().any(|m| {
            m.elements
                .iter()
                .any(|e| e.verdict.as_ref().and_then(Verdict::chain) == Some(name))
        });
        if used {
            return Err(NftError::kernel(
                libc::EBUSY,
                format!("deleting chain {name} of table inet {TABLE}"),
            ));
        }
        t.chains.retain(|c| c.name != name);
        self.apply(&Ruleset::new().table(t))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn ok4(s: &str) -> String {
        canonical(CondFamily::V4, s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn ok6(s: &str) -> String {
        canonical(CondFamily::V6, s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn err4(s: &str) -> String {
        canonical(CondFamily::V4, s).unwrap_err().to_string()
    }

    #[test]
    fn canonical_forms() {
        let cases = [
            ("ip saddr 1.2.3.4", "ip saddr 1.2.3.4"),
            ("  ip   saddr   1.2.3.4  ", "ip saddr 1.2.3.4"),
            ("ip saddr 10.1.2.3/8", "ip saddr 10.0.0.0/8"),
            ("ip saddr 10.1.2.3/32", "ip saddr 10.1.2.3"),
            ("ip daddr != 192.168.0.0/16", "ip daddr != 192.168.0.0/16"),
            ("ip saddr ne 1.2.3.4", "ip saddr != 1.2.3.4"),
            ("ip saddr == 1.2.3.4", "ip saddr 1.2.3.4"),
            (
                "ip saddr {1.2.3.4,10.0.0.0/8}",
                "ip saddr { 1.2.3.4, 10.0.0.0/8 }",
            ),
            (
                "ip saddr { 1.2.3.4, 10.0.0.0/8, }",
                "ip saddr { 1.2.3.4, 10.0.0.0/8 }",
            ),
            ("ip saddr 1.2.3.4,5.6.7.8", "ip saddr { 1.2.3.4, 5.6.7.8 }"),
            ("iifname eth0", "iifname \"eth0\""),
            ("iifname \"eth*\"", "iifname \"eth*\""),
            ("meta iifname != \"lo\"", "iifname != \"lo\""),
            ("oif uplink0", "oif \"uplink0\""),
            ("meta mark 0x10", "meta mark 0x10"),
            ("mark 16", "meta mark 0x10"),
            ("meta mark & 0xff == 0x1", "meta mark & 0xff == 0x1"),
            ("meta mark and 255 != 1", "meta mark & 0xff != 0x1"),
            ("ct mark 7", "ct mark 0x7"),
            ("meta l4proto TCP", "meta l4proto tcp"),
            ("meta l4proto { tcp, 17 }", "meta l4proto { 17, tcp }"),
            ("tcp dport 8080", "tcp dport 8080"),
            ("udp sport 1000-2000", "udp sport 1000-2000"),
            ("th dport { 80, 443, 80 }", "th dport { 443, 80 }"),
            ("fib saddr type local", "fib saddr type local"),
            (
                "fib daddr . mark type != local",
                "fib daddr . mark type != local",
            ),
            ("ct state new,established", "ct state { established, new }"),
            (
                "ip saddr 1.2.3.4 iifname \"eth0\" tcp dport 80",
                "ip saddr 1.2.3.4 iifname \"eth0\" tcp dport 80",
            ),
        ];
        for (i, o) in cases {
            assert_eq!(ok4(i), o, "{i:?}");
        }
        assert_eq!(ok6("ip6 saddr fd00::1/64"), "ip6 saddr fd00::/64");
        assert_eq!(ok6("ip6 daddr != ::1"), "ip6 daddr != ::1");
        assert_eq!(ok6("iifname eth0"), "iifname \"eth0\"");
    }

    #[test]
    fn refuses_injection_and_statements() {
        for (s, want) in [
            ("ip saddr 1.2.3.4; flush ruleset", "';'"),
            ("ip saddr 1.2.3.4 # x", "'#'"),
            ("ip saddr 1.2.3.4\nflush ruleset", "'\\n'"),
            ("ip saddr @published4", "'@'"),
            ("ip saddr $x", "'$'"),
            ("iifname \"a\\\"b\"", "'\\\\'"),
            ("iifname 'eth0'", "'\\''"),
            ("iifname \"eth0", "unterminated"),
            ("iifname \"eth 0\"", "' '"),
            ("ip saddr 1.2.3.4 accept", "\"accept\""),
            ("ip saddr 1.2.3.4 drop", "\"drop\""),
            ("jump x", "\"jump\""),
            ("goto pm_dnat", "\"goto\""),
            ("counter", "\"counter\""),
            ("meta mark set 1", "\"set\""),
            ("ip saddr 1.2.3.4 queue", "\"queue\""),
            ("reject", "\"reject\""),
            ("ip saddr { 1.2.3.4", "not closed"),
            ("ip saddr 1.2.3.4 }", "\"}\""),
            ("ip saddr { 1.2.3.4 ; }", "';'"),
            ("ip saddr { jump x }", "\"jump\""),
            ("{ 1.2.3.4 }", "\"{\""),
            ("ip ttl 1", "\"ttl\""),
            ("ip saddr", "needs a value"),
            ("ip saddr nothost", "names are not resolved"),
            ("ip saddr 1.2.3.4/33", "at most 32"),
            ("tcp dport http", "service names"),
            ("tcp dport 90-80", "end before"),
            ("tcp dport 70000", "0-65535"),
            ("meta l4proto bogus", "0-255"),
            ("ct state fresh", "established"),
            ("ct helper ftp", "\"helper\""),
            ("fib daddr . iif type local", "iif and oif"),
            ("fib daddr oif", "\"oif\""),
            ("fib daddr type weird", "local"),
            ("iifname thisnameiswaytoolong", "1-15"),
            ("iif \"eth*\"", "no wildcard"),
            ("meta mark 0x1zz", "32-bit"),
            ("tcp dport \"80\"", "quotes are only allowed"),
            ("ip6 saddr ::1", "conditionsV6"),
            ("", "no match"),
        ] {
            let e = err4(s);
            assert!(e.contains(want), "{s:?}: {e}");
        }
        let e = canonical(CondFamily::V6, "ip6 saddr 1.2.3.4").unwrap_err();
        assert!(
            matches!(e, CondError::WrongFamily { got: '4', .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("conditionsV4"), "{e}");
        let e = canonical(CondFamily::V6, "ip saddr 1.2.3.4").unwrap_err();
        assert!(e.to_string().contains("conditionsV4"), "{e}");
        let e = canonical(CondFamily::V4, "ip saddr fd00::1").unwrap_err();
        assert!(e.to_string().contains("conditionsV6"), "{e}");
        let many: Vec<String> = (0..300)
            .map(|i| format!("10.0.{}.{}", i / 200, i % 200))
            .collect();
        let long = format!("ip saddr {{ {} }}", many.join(", "));
        assert!(canonical(CondFamily::V4, &long).is_err());
    }

    #[test]
    fn names_records_and_fail_closed_chains() {
        let a = CondChain::new(CondFamily::V4, "ip saddr 1.2.3.4").unwrap();
        let b = CondChain::new(CondFamily::V4, "ip  saddr  1.2.3.4/32").unwrap();
        assert_eq!(a.name(), b.name());
        assert!(is_cond_chain(&a.name()), "{}", a.name());
        assert!(a.name().starts_with("pmc4_"));
        let c6 = CondChain::new(CondFamily::V6, "iifname \"eth0\"").unwrap();
        let c4 = CondChain::new(CondFamily::V4, "iifname \"eth0\"").unwrap();
        assert_ne!(c6.name(), c4.name());
        assert_eq!(
            c6.chain().rules,
            vec!["iifname \"eth0\" goto pm_cdnat6".to_string()]
        );
        assert!(!is_cond_chain("pm_dnat") && !is_cond_chain("pmc4_xyz"));

        let dir = tempfile::tempdir().unwrap();
        record_write(dir.path(), &a).unwrap();
        record_write(dir.path(), &c6).unwrap();
        std::fs::write(
            records_dir(dir.path()).join("pmc4_0000000000000000.chain"),
            "{",
        )
        .unwrap();
        // A record whose text does not hash to its name is refused.
        std::fs::write(
            records_dir(dir.path()).join("pmc4_1111111111111111.chain"),
            json!({"family": "ipv4", "match": "ip saddr 9.9.9.9"}).to_string(),
        )
        .unwrap();
        let mut got = records(dir.path());
        got.sort();
        let mut want = vec![a.clone(), c6.clone()];
        want.sort();
        assert_eq!(got, want);

        let mut model = super::super::ruleset();
        let orphan = chain_name(CondFamily::V4, "ip saddr 5.5.5.5");
        let empty = add_chains(&mut model, dir.path(), std::slice::from_ref(&orphan));
        assert_eq!(empty, 1);
        let t = &model.tables[0];
        let find = |n: &str| t.chains.iter().find(|c| c.name == n).unwrap();
        assert_eq!(find(&a.name()).rules.len(), 1);
        assert!(find(&orphan).rules.is_empty());
        record_remove(dir.path(), &a.name()).unwrap();
        record_remove(dir.path(), &a.name()).unwrap();
        assert_eq!(records(dir.path()), vec![c6]);
    }

    /// Every canonical form is accepted by `nft` and the kernel in a chain
    /// reachable from rnet's prerouting and output hooks; chains are created,
    /// refilled and deleted incrementally; restore recreates them. Needs root
    /// (a throwaway namespace); fails loudly without it.
    #[test]
    fn kernel_accepts_condition_chains() {
        use crate::{Batch, Element, KeyPart};
        let ns = rnet_netns::NetNs::new_unnamed().unwrap_or_else(|e| {
            panic!("cannot create a network namespace (run as root; this never skips): {e}")
        });
        let mut n = Nft::in_netns(&ns).unwrap();
        let dir = tempfile::tempdir().unwrap();
        n.apply(&super::super::ruleset()).unwrap();
        let v4 = [
            "ip saddr 1.2.3.4",
            "ip daddr != 192.168.0.0/16",
            "ip saddr { 1.2.3.4, 10.0.0.0/8 }",
            "iifname \"eth*\"",
            "iifname != \"lo\"",
            "oifname \"lo\"",
            "iif \"lo\"",
            "oif != \"lo\"",
            "meta mark 0x10",
            "meta mark & 0xff == 0x1",
            "meta mark & 0xff != 0x1",
            "ct mark 0x7",
            "meta l4proto { 17, tcp }",
            "tcp dport 8080",
            "udp sport 1000-2000",
            "sctp dport != 5",
            "th dport { 443, 80 }",
            "fib saddr type local",
            "fib daddr . mark type != { broadcast, local }",
            "ct state { established, new }",
            "ip saddr 1.2.3.4 iifname \"eth0\" tcp dport 80",
        ];
        let v6 = [
            "ip6 saddr fd00::/64",
            "ip6 daddr != ::1",
            "iifname \"eth0\"",
        ];
        let mut chains = Vec::new();
        for (fam, list) in [(CondFamily::V4, &v4[..]), (CondFamily::V6, &v6[..])] {
            for t in list {
                let c = CondChain::new(fam, t).unwrap();
                assert_eq!(&c.matches, t, "not canonical");
                chains.push(c);
            }
        }
        let mut b = Batch::new(Family::Inet);
        for (i, c) in chains.iter().enumerate() {
            record_write(dir.path(), c).unwrap();
            n.put_chain(&c.chain())
                .unwrap_or_else(|e| panic!("{:?}: {e}", c.matches));
            let port = 1000 + u16::try_from(i).unwrap();
            let map = match c.family {
                CondFamily::V4 => sets::PM_COND4,
                CondFamily::V6 => sets::PM_CONDIP6,
            };
            let mut key = vec![KeyPart::Proto(6), KeyPart::Port(port)];
            if c.family == CondFamily::V6 {
                key.insert(0, KeyPart::Ipv6("fd00::1".parse().unwrap()));
            }
            b.add_elements(
                TABLE,
                map,
                &[Element::new(key).verdict(c.verdict()).comment("n/c/eth0")],
            );
        }
        // Binding the chains to the hooks validates them against prerouting
        // and output.
        n.commit(&b).unwrap();
        let listed = n
            .list_elements(Family::Inet, TABLE, sets::PM_COND4)
            .unwrap();
        assert_eq!(listed.len(), v4.len());
        assert!(
            listed
                .iter()
                .any(|e| e.verdict == Some(chains[0].verdict()))
        );
        // Refilling an existing chain is fine.
        n.put_chain(&chains[0].chain()).unwrap();
        // In use: EBUSY-like refusal; unused: gone.
        assert!(n.remove_chain(&chains[0].name()).is_err());
        let spare = CondChain::new(CondFamily::V4, "ip saddr 9.9.9.9").unwrap();
        n.put_chain(&spare.chain()).unwrap();
        n.remove_chain(&spare.name()).unwrap();
        n.remove_chain(&spare.name()).unwrap();
        assert!(!n.chain_exists(Family::Inet, TABLE, &spare.name()).unwrap());
        // reload: tables replaced, the chains come back from their records
        // and the carried elements still point at them.
        let r = super::super::reload(&mut n, dir.path()).unwrap();
        assert_eq!(r.carried, chains.len());
        for c in &chains {
            assert!(n.chain_exists(Family::Inet, TABLE, &c.name()).unwrap());
        }
        // A lost record: the chain comes back empty (closed), not missing.
        record_remove(dir.path(), &chains[0].name()).unwrap();
        super::super::reload(&mut n, dir.path()).unwrap();
        let bin = crate::find_nft().unwrap();
        let out = ns
            .output(std::process::Command::new(bin).args([
                "list",
                "chain",
                "inet",
                "rnet",
                &chains[0].name(),
            ]))
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && !text.contains("goto"), "{text}");
    }

    #[test]
    fn chain_text_and_fake_chain_ops() {
        let c = CondChain::new(CondFamily::V4, "ip saddr 1.2.3.4").unwrap();
        let text = put_chain_text(&c.chain()).unwrap();
        let n = c.name();
        assert_eq!(
            text,
            format!(
                "add chain inet rnet {n}\nflush chain inet rnet {n}\nadd rule inet rnet {n} ip \
                 saddr 1.2.3.4 goto pm_cdnat4\n"
            )
        );
        assert!(put_chain_text(&Chain::new("pm_dnat")).is_err());
        assert!(put_chain_text(&Chain::new(n.clone()).rule("accept; flush ruleset")).is_err());

        let mut f = FakeBackend::new();
        assert!(f.put_chain(&c.chain()).unwrap_err().is_not_found());
        f.apply(&super::super::ruleset()).unwrap();
        f.put_chain(&c.chain()).unwrap();
        assert!(f.chain_exists(Family::Inet, TABLE, &n).unwrap());
        let mut b = crate::Batch::new(Family::Inet);
        b.add_elements(
            TABLE,
            sets::PM_COND4,
            &[
                crate::Element::new(vec![crate::KeyPart::Proto(6), crate::KeyPart::Port(80)])
                    .verdict(c.verdict()),
            ],
        );
        f.commit(&b).unwrap();
        assert_eq!(f.remove_chain(&n).unwrap_err().errno(), Some(libc::EBUSY));
        let mut d = crate::Batch::new(Family::Inet);
        d.delete_elements(
            TABLE,
            sets::PM_COND4,
            &[crate::Element::new(vec![
                crate::KeyPart::Proto(6),
                crate::KeyPart::Port(80),
            ])],
        );
        f.commit(&d).unwrap();
        f.remove_chain(&n).unwrap();
        f.remove_chain(&n).unwrap();
        assert!(!f.chain_exists(Family::Inet, TABLE, &n).unwrap());
    }
}
