//! The declarative ruleset model and its nft text renderer (the slow path).
//!
//! A [`Ruleset`] renders to one file for `nft -f -`. Each table is preceded
//! by the idempotent prelude
//!
//! ```text
//! add table inet rnet
//! delete table inet rnet
//! table inet rnet { ... }
//! ```
//!
//! `add table` makes sure the `delete` cannot fail on a fresh host; the
//! `delete` throws away whatever is there (an old version of our rules, or
//! half of them after someone's `nft flush`); the definition recreates it.
//! A table known to be absent ([`Table::fresh`], under the writers' lock) is
//! rendered without the prelude: a table deletion costs an RCU grace period.
//! nft sends the whole file as **one** netlink batch, so the kernel applies it
//! atomically: packets see the old table or the new one, never none.
//!
//! Rendering is deterministic (declaration order, fixed indentation), so it
//! can be compared to golden text. Rule lines are text written by rnet's
//! plugins (trusted templates); names, types and comments are validated
//! because they may carry user input (a container ID in a comment).

use std::fmt::Write as _;

use crate::{Element, Family, NftError};

/// Longest object name (`NFT_NAME_MAXLEN` minus the NUL).
pub const MAX_NAME_LEN: usize = 255;

/// A whole ruleset: one or more tables, rendered in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ruleset {
    /// The tables, in render order.
    pub tables: Vec<Table>,
}

/// A table: `table inet rnet { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Address family.
    pub family: Family,
    /// Table name.
    pub name: String,
    /// Table comment (rnet puts its version/owner marker here).
    pub comment: Option<String>,
    /// Sets, rendered first (rules refer to them).
    pub sets: Vec<Set>,
    /// Maps and verdict maps, rendered after the sets.
    pub maps: Vec<Map>,
    /// Chains, rendered last.
    pub chains: Vec<Chain>,
    /// The table is known not to exist: render a plain creation, without the
    /// replace prelude. Deleting a table, even one made in the same
    /// transaction, makes the closing of nft's socket wait for an RCU grace
    /// period (10-20 ms here), which a first ADD on a fresh host would pay.
    /// Only for a caller that holds the lock every rnet writer of the table
    /// takes: applied over an existing table, the definition would merge into
    /// it and append its rules a second time.
    pub fresh: bool,
}

/// A named set: `set NAME { type T; flags F; elements = { ... } }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// Set name.
    pub name: String,
    /// Key type, e.g. `ipv4_addr` or `ipv4_addr . inet_service`.
    pub key_type: String,
    /// Flags, e.g. `interval`, `timeout`.
    pub flags: Vec<String>,
    /// Set comment.
    pub comment: Option<String>,
    /// Initial elements (keys, optional comments).
    pub elements: Vec<Element>,
}

/// A named map: `map NAME { type K : V; ... }`; `V` = `verdict` makes a
/// verdict map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Map {
    /// Map name.
    pub name: String,
    /// Key type, e.g. `inet_proto . inet_service`.
    pub key_type: String,
    /// Value type, e.g. `ipv4_addr . inet_service` or `verdict`.
    pub value_type: String,
    /// Flags, e.g. `interval`.
    pub flags: Vec<String>,
    /// Map comment.
    pub comment: Option<String>,
    /// Initial elements (with data or verdicts).
    pub elements: Vec<Element>,
}

/// A chain; a base chain has a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Chain name.
    pub name: String,
    /// Present for base chains.
    pub base: Option<BaseChain>,
    /// Chain comment.
    pub comment: Option<String>,
    /// Rule lines, one rule each, in nft syntax.
    pub rules: Vec<String>,
    /// The same rules as expressions, when every rule has them
    /// ([`Chain::native`]): the chain is then created over netlink, without
    /// an `nft` process. A kernel test checks that both give the same
    /// bytecode.
    pub native: Option<Vec<Vec<crate::expr::Expr>>>,
}

/// The hook of a base chain: `type nat hook prerouting priority dstnat; policy accept;`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    /// `filter`, `nat` or `route`.
    pub kind: String,
    /// `prerouting`, `input`, `forward`, `output`, `postrouting`, ...
    pub hook: String,
    /// A number or a standard name (`dstnat`, `srcnat`, `filter`, `filter - 10`).
    pub priority: String,
    /// `accept` or `drop`; `None` leaves nft's default (accept).
    pub policy: Option<String>,
}

impl Ruleset {
    /// An empty ruleset.
    pub fn new() -> Ruleset {
        Ruleset::default()
    }

    /// Add a table.
    pub fn table(mut self, t: Table) -> Ruleset {
        self.tables.push(t);
        self
    }

    /// Render the file for `nft -f -`, prelude included. Fails with
    /// [`NftError::InvalidArgument`] on a name, type, comment or rule that
    /// could not be rendered safely.
    pub fn render(&self) -> Result<String, NftError> {
        let mut out = String::new();
        for t in &self.tables {
            t.render_into(&mut out)?;
        }
        Ok(out)
    }
}

impl Table {
    /// An empty table.
    pub fn new(family: Family, name: impl Into<String>) -> Table {
        Table {
            family,
            name: name.into(),
            comment: None,
            sets: Vec::new(),
            maps: Vec::new(),
            chains: Vec::new(),
            fresh: false,
        }
    }

    /// Set the table comment.
    pub fn comment(mut self, c: impl Into<String>) -> Table {
        self.comment = Some(c.into());
        self
    }

    /// Add a set.
    pub fn set(mut self, s: Set) -> Table {
        self.sets.push(s);
        self
    }

    /// Add a map.
    pub fn map(mut self, m: Map) -> Table {
        self.maps.push(m);
        self
    }

    /// Add a chain.
    pub fn chain(mut self, c: Chain) -> Table {
        self.chains.push(c);
        self
    }

    /// The elements of the set or map called `name`, mutable (the fake
    /// backend updates its state through this; a restore fills them).
    pub fn elements_mut(&mut self, name: &str) -> Option<&mut Vec<Element>> {
        if let Some(s) = self.sets.iter_mut().find(|s| s.name == name) {
            return Some(&mut s.elements);
        }
        self.maps
            .iter_mut()
            .find(|m| m.name == name)
            .map(|m| &mut m.elements)
    }

    /// Render this table alone (prelude included unless [`Table::fresh`]).
    pub fn render(&self) -> Result<String, NftError> {
        let mut out = String::new();
        self.render_into(&mut out)?;
        Ok(out)
    }

    fn render_into(&self, out: &mut String) -> Result<(), NftError> {
        check_name("table", &self.name)?;
        let fam = self.family;
        let name = &self.name;
        if !self.fresh {
            let _ = writeln!(out, "add table {fam} {name}");
            let _ = writeln!(out, "delete table {fam} {name}");
        }
        let _ = writeln!(out, "table {fam} {name} {{");
        if let Some(c) = &self.comment {
            crate::element::check_comment(c)?;
            let _ = writeln!(out, "\tcomment \"{c}\"");
        }
        for s in &self.sets {
            check_name("set", &s.name)?;
            check_type(&s.key_type)?;
            let _ = writeln!(out, "\tset {} {{", s.name);
            let _ = writeln!(out, "\t\ttype {}", s.key_type);
            render_common(out, &s.flags, s.comment.as_deref(), &s.elements)?;
            let _ = writeln!(out, "\t}}");
        }
        for m in &self.maps {
            check_name("map", &m.name)?;
            check_type(&m.key_type)?;
            check_type(&m.value_type)?;
            let _ = writeln!(out, "\tmap {} {{", m.name);
            let _ = writeln!(out, "\t\ttype {} : {}", m.key_type, m.value_type);
            render_common(out, &m.flags, m.comment.as_deref(), &m.elements)?;
            let _ = writeln!(out, "\t}}");
        }
        for c in &self.chains {
            check_name("chain", &c.name)?;
            let _ = writeln!(out, "\tchain {} {{", c.name);
            if let Some(b) = &c.base {
                let _ = writeln!(out, "\t\t{}", b.spec()?);
            }
            if let Some(cm) = &c.comment {
                crate::element::check_comment(cm)?;
                let _ = writeln!(out, "\t\tcomment \"{cm}\"");
            }
            for r in &c.rules {
                check_text("rule", r)?;
                let _ = writeln!(out, "\t\t{r}");
            }
            let _ = writeln!(out, "\t}}");
        }
        out.push_str("}\n");
        Ok(())
    }
}

fn render_common(
    out: &mut String,
    flags: &[String],
    comment: Option<&str>,
    elements: &[Element],
) -> Result<(), NftError> {
    if !flags.is_empty() {
        for f in flags {
            check_word("flag", f)?;
        }
        let _ = writeln!(out, "\t\tflags {}", flags.join(","));
    }
    if let Some(c) = comment {
        crate::element::check_comment(c)?;
        let _ = writeln!(out, "\t\tcomment \"{c}\"");
    }
    if !elements.is_empty() {
        let mut items = Vec::with_capacity(elements.len());
        for e in elements {
            e.validate()?;
            items.push(e.to_nft_text());
        }
        let _ = writeln!(out, "\t\telements = {{ {} }}", items.join(", "));
    }
    Ok(())
}

impl Set {
    /// A set of `key_type` (e.g. `ipv4_addr`, `ifname`).
    pub fn new(name: impl Into<String>, key_type: impl Into<String>) -> Set {
        Set {
            name: name.into(),
            key_type: key_type.into(),
            flags: Vec::new(),
            comment: None,
            elements: Vec::new(),
        }
    }

    /// Add a flag (`interval`, `timeout`, ...).
    pub fn flag(mut self, f: impl Into<String>) -> Set {
        self.flags.push(f.into());
        self
    }

    /// Set the comment.
    pub fn comment(mut self, c: impl Into<String>) -> Set {
        self.comment = Some(c.into());
        self
    }

    /// Add an initial element.
    pub fn element(mut self, e: Element) -> Set {
        self.elements.push(e);
        self
    }
}

impl Map {
    /// A map from `key_type` to `value_type` (`verdict` for a verdict map).
    pub fn new(
        name: impl Into<String>,
        key_type: impl Into<String>,
        value_type: impl Into<String>,
    ) -> Map {
        Map {
            name: name.into(),
            key_type: key_type.into(),
            value_type: value_type.into(),
            flags: Vec::new(),
            comment: None,
            elements: Vec::new(),
        }
    }

    /// Add a flag.
    pub fn flag(mut self, f: impl Into<String>) -> Map {
        self.flags.push(f.into());
        self
    }

    /// Set the comment.
    pub fn comment(mut self, c: impl Into<String>) -> Map {
        self.comment = Some(c.into());
        self
    }

    /// Add an initial element.
    pub fn element(mut self, e: Element) -> Map {
        self.elements.push(e);
        self
    }
}

impl BaseChain {
    /// `type KIND hook HOOK priority PRIORITY; policy POLICY;`, validated.
    fn spec(&self) -> Result<String, NftError> {
        for (what, v) in [("type", &self.kind), ("hook", &self.hook)] {
            check_word(what, v)?;
        }
        check_text("priority", &self.priority)?;
        let mut s = format!(
            "type {} hook {} priority {};",
            self.kind, self.hook, self.priority
        );
        if let Some(p) = &self.policy {
            check_word("policy", p)?;
            let _ = write!(s, " policy {p};");
        }
        Ok(s)
    }

    /// The hook's number (`NF_INET_*`, the same for `NF_BR_*`), if known.
    pub(crate) fn hook_num(&self) -> Option<u32> {
        Some(match self.hook.as_str() {
            "prerouting" => 0,
            "input" => 1,
            "forward" => 2,
            "output" => 3,
            "postrouting" => 4,
            _ => return None,
        })
    }

    /// The priority as a number: an integer, or one of nft's standard names
    /// for `family`, optionally `+ N` / `- N` (nft's own table of names).
    pub(crate) fn priority_num(&self, family: Family) -> Option<i32> {
        let mut words = self.priority.split_whitespace();
        let first = words.next()?;
        let base = match first.parse::<i32>() {
            Ok(n) => n,
            Err(_) => match (family, first) {
                (Family::Bridge, "dstnat") => -300,
                (Family::Bridge, "filter") => -200,
                (Family::Bridge, "out") => 100,
                (Family::Bridge, "srcnat") => 300,
                (Family::Bridge, _) => return None,
                (_, "raw") => -300,
                (_, "mangle") => -150,
                (_, "dstnat") => -100,
                (_, "filter") => 0,
                (_, "security") => 50,
                (_, "srcnat") => 100,
                _ => return None,
            },
        };
        match (words.next(), words.next(), words.next()) {
            (None, _, _) => Some(base),
            (Some("+"), Some(n), None) => base.checked_add(n.parse().ok()?),
            (Some("-"), Some(n), None) => base.checked_sub(n.parse().ok()?),
            _ => None,
        }
    }

    /// The policy as a verdict code (`NF_ACCEPT` 1, `NF_DROP` 0), if given.
    pub(crate) fn policy_num(&self) -> Option<Option<u32>> {
        match self.policy.as_deref() {
            None => Some(None),
            Some("accept") => Some(Some(1)),
            Some("drop") => Some(Some(0)),
            Some(_) => None,
        }
    }
}

impl Chain {
    /// A regular chain (target of `jump`/`goto`).
    pub fn new(name: impl Into<String>) -> Chain {
        Chain {
            name: name.into(),
            base: None,
            comment: None,
            rules: Vec::new(),
            native: None,
        }
    }

    /// A base chain: `type KIND hook HOOK priority PRIORITY;`.
    pub fn base(
        name: impl Into<String>,
        kind: impl Into<String>,
        hook: impl Into<String>,
        priority: impl Into<String>,
    ) -> Chain {
        Chain {
            base: Some(BaseChain {
                kind: kind.into(),
                hook: hook.into(),
                priority: priority.into(),
                policy: None,
            }),
            ..Chain::new(name)
        }
    }

    /// Set the policy of a base chain (ignored for regular chains).
    pub fn policy(mut self, p: impl Into<String>) -> Chain {
        if let Some(b) = &mut self.base {
            b.policy = Some(p.into());
        }
        self
    }

    /// Set the comment.
    pub fn comment(mut self, c: impl Into<String>) -> Chain {
        self.comment = Some(c.into());
        self
    }

    /// Append a rule line.
    pub fn rule(mut self, r: impl Into<String>) -> Chain {
        self.rules.push(r.into());
        self
    }

    /// The rules as expressions, one list per rule line, in the same order:
    /// the chain can then be created over netlink ([`crate::Nft::put_chains_native`]).
    pub fn native(mut self, rules: Vec<Vec<crate::expr::Expr>>) -> Chain {
        self.native = Some(rules);
        self
    }

    /// The expressions of every rule, if this chain has them for all.
    pub(crate) fn native_rules(&self) -> Option<&[Vec<crate::expr::Expr>]> {
        if self.comment.is_some() {
            return None;
        }
        match self.native.as_deref() {
            None if self.rules.is_empty() => Some(&[]),
            n => n.filter(|n| n.len() == self.rules.len()),
        }
    }

    /// The `nft -f` text that creates this chain in table `family table`
    /// or, if it exists, replaces its rules, leaving the rest of the table
    /// alone: `add chain` (with the hook of a base chain), `flush chain`,
    /// one `add rule` per rule. Idempotent, and one transaction when applied
    /// as one file. Fails (`ENOENT` from nft) if the table is missing.
    pub fn put_text(&self, family: Family, table: &str) -> Result<String, NftError> {
        check_name("table", table)?;
        check_name("chain", &self.name)?;
        let n = &self.name;
        let mut s = format!("add chain {family} {table} {n}");
        if let Some(b) = &self.base {
            let _ = write!(s, " {{ {} }}", b.spec()?);
        }
        let _ = writeln!(s, "\nflush chain {family} {table} {n}");
        for r in &self.rules {
            if r.trim().is_empty() || r.chars().any(|c| c.is_control() || c == ';' || c == '#') {
                return Err(NftError::invalid(format!(
                    "rule {r:?} of chain {n} must be one line without ';' or '#'"
                )));
            }
            let _ = writeln!(s, "add rule {family} {table} {n} {r}");
        }
        Ok(s)
    }
}

/// How nft writes a set's key or value type to the kernel
/// (`NFTA_SET_KEY_TYPE`/`KEY_LEN`, `DATA_TYPE`/`DATA_LEN`): the datatype
/// number (a concatenation packs them 6 bits each, first part highest) and
/// the length in bytes (the parts of a concatenation each padded to 4).
/// `verdict` is `NFT_DATA_VERDICT` with length 0. `None` for a type not
/// known here (the caller then leaves the work to `nft`).
pub(crate) fn type_spec(t: &str) -> Option<(u32, u32)> {
    if t.trim() == "verdict" {
        return Some((0xffff_ff00, 0));
    }
    let parts: Vec<(u32, u32)> = t
        .split(" . ")
        .map(|p| {
            Some(match p.trim() {
                "ipv4_addr" => (7, 4),
                "ipv6_addr" => (8, 16),
                "ether_addr" => (9, 6),
                "inet_proto" => (12, 1),
                "inet_service" => (13, 2),
                "mark" => (19, 4),
                "ifname" => (41, 16),
                _ => return None,
            })
        })
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [] => None,
        [one] => Some(*one),
        many if many.len() <= 5 => Some(many.iter().fold((0, 0), |(id, len), (i, l)| {
            ((id << 6) | i, len + l.next_multiple_of(4))
        })),
        _ => None,
    }
}

/// The `NFTA_SET_USERDATA` nft 1.0 writes for a set of key type `key` (and,
/// for a map, value type `value`): what `nft list` needs to print the
/// elements as they were given. TLVs of one byte type, one byte length:
/// the key's byte order (0), for a map with data the data's (1), for a
/// concatenation a `typeof` nest naming a concatenation (3 for the key, 4
/// for the data), and for a map the data-interval flag (6). Byte orders:
/// 0 for a concatenation, 1 (host) for `ifname` and `mark`, 2 (network) for
/// the rest.
pub(crate) fn set_udata(key: &str, value: Option<&str>) -> Vec<u8> {
    fn order(t: &str) -> u32 {
        match t.trim() {
            t if t.contains(" . ") => 0,
            "ifname" | "mark" => 1,
            _ => 2,
        }
    }
    fn put(u: &mut Vec<u8>, ty: u8, v: u32) {
        u.extend_from_slice(&[ty, 4]);
        u.extend_from_slice(&v.to_ne_bytes());
    }
    fn typeof_concat(u: &mut Vec<u8>, ty: u8) {
        // { TYPEOF_EXPR (0): EXPR_CONCAT (13), TYPEOF_DATA (1): empty }
        u.extend_from_slice(&[ty, 8, 0, 4]);
        u.extend_from_slice(&13u32.to_ne_bytes());
        u.extend_from_slice(&[1, 0]);
    }
    let mut u = Vec::new();
    put(&mut u, 0, order(key));
    let data = value.filter(|v| v.trim() != "verdict");
    if let Some(v) = data {
        put(&mut u, 1, order(v));
    }
    if key.contains(" . ") {
        typeof_concat(&mut u, 3);
    }
    if let Some(v) = data {
        if v.contains(" . ") {
            typeof_concat(&mut u, 4);
        }
    }
    if value.is_some() {
        put(&mut u, 6, 0);
    }
    u
}

/// Object names: a letter, then letters, digits, `_` or `-`, at most
/// [`MAX_NAME_LEN`] bytes. (nft keywords such as `fwd` are not valid names
/// either; nft reports those with a line number when the ruleset is applied.)
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), NftError> {
    let ok = name.len() <= MAX_NAME_LEN
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(NftError::invalid(format!(
            "{what} name {name:?} must start with a letter and contain only letters, digits, \
             '_' or '-' (at most {MAX_NAME_LEN} bytes)"
        )))
    }
}

fn check_type(t: &str) -> Result<(), NftError> {
    let ok = !t.trim().is_empty()
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ' ' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(NftError::invalid(format!(
            "type {t:?} must be nft datatypes joined by ' . ' (e.g. \"ipv4_addr . inet_service\")"
        )))
    }
}

fn check_word(what: &str, w: &str) -> Result<(), NftError> {
    if !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(NftError::invalid(format!(
            "{what} {w:?} must be a single word"
        )))
    }
}

fn check_text(what: &str, t: &str) -> Result<(), NftError> {
    if t.trim().is_empty() || t.chars().any(char::is_control) {
        Err(NftError::invalid(format!(
            "{what} {t:?} must be one non-empty line without control characters"
        )))
    } else {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::{KeyPart, Verdict};
    use std::net::Ipv4Addr;

    /// The sample table the root tests apply, also used by the golden test.
    pub(crate) fn sample() -> Ruleset {
        Ruleset::new().table(
            Table::new(Family::Inet, "rnet")
                .comment("rnet v1")
                .set(
                    Set::new("addrs4", "ipv4_addr")
                        .element(
                            Element::new(KeyPart::Ipv4(Ipv4Addr::new(10, 88, 0, 2)))
                                .comment("c1/eth0"),
                        )
                        .element(Element::new(KeyPart::Ipv4(Ipv4Addr::new(10, 88, 0, 3)))),
                )
                .set(Set::new("bridges", "ifname").element(Element::new(KeyPart::IfName(
                    "cni0".into(),
                ))))
                .map(
                    Map::new(
                        "hostports4",
                        "inet_proto . inet_service",
                        "ipv4_addr . inet_service",
                    )
                    .element(
                        Element::new(vec![KeyPart::Proto(6), KeyPart::Port(8080)])
                            .data(vec![
                                KeyPart::Ipv4(Ipv4Addr::new(10, 88, 0, 2)),
                                KeyPart::Port(80),
                            ])
                            .comment("c1/eth0"),
                    ),
                )
                .map(
                    Map::new("isolation", "ifname", "verdict").element(
                        Element::new(KeyPart::IfName("cni0".into()))
                            .verdict(Verdict::Jump("isolate".into())),
                    ),
                )
                .chain(Chain::new("isolate").rule("counter drop"))
                .chain(
                    Chain::base("prerouting", "nat", "prerouting", "dstnat")
                        .policy("accept")
                        .rule("fib daddr type local dnat ip to meta l4proto . th dport map @hostports4"),
                )
                .chain(
                    Chain::base("forward", "filter", "forward", "filter")
                        .policy("accept")
                        .rule("iifname vmap @isolation"),
                ),
        )
    }

    /// The bytes nft 1.0.6 sends for these types (`nft --debug=mnl -f`).
    #[test]
    fn set_userdata_is_what_nft_writes() {
        let masq4 = [0, 4, 2, 0, 0, 0];
        let bridges = [0, 4, 1, 0, 0, 0];
        let concat_key = [0, 4, 0, 0, 0, 0, 3, 8, 0, 4, 13, 0, 0, 0, 1, 0];
        let hostports6 = [
            0, 4, 0, 0, 0, 0, 1, 4, 0, 0, 0, 0, 3, 8, 0, 4, 13, 0, 0, 0, 1, 0, 4, 8, 0, 4, 13, 0,
            0, 0, 1, 0, 6, 4, 0, 0, 0, 0,
        ];
        let pm_cond4 = [
            0, 4, 0, 0, 0, 0, 3, 8, 0, 4, 13, 0, 0, 0, 1, 0, 6, 4, 0, 0, 0, 0,
        ];
        assert_eq!(set_udata("ipv4_addr", None), masq4);
        assert_eq!(set_udata("ifname", None), bridges);
        assert_eq!(set_udata("ifname . ipv4_addr", None), concat_key);
        assert_eq!(set_udata("ifname . ether_addr", None), concat_key);
        assert_eq!(
            set_udata(
                "inet_proto . inet_service",
                Some("ipv6_addr . inet_service")
            ),
            hostports6
        );
        assert_eq!(
            set_udata("inet_proto . inet_service", Some("verdict")),
            pm_cond4
        );
        assert_eq!(type_spec("ifname . ipv4_addr"), Some((0xa47, 20)));
        assert_eq!(type_spec("inet_proto . inet_service"), Some((0x30d, 8)));
        assert_eq!(type_spec("ipv6_addr . inet_service"), Some((0x20d, 20)));
        assert_eq!(type_spec("verdict"), Some((0xffff_ff00, 0)));
        assert_eq!(type_spec("ipv4_addr"), Some((7, 4)));
        assert_eq!(type_spec("ct_state"), None);
        assert_eq!(type_spec(""), None);
    }

    #[test]
    fn golden_sample() {
        let got = sample().render().unwrap();
        let want = "\
add table inet rnet
delete table inet rnet
table inet rnet {
\tcomment \"rnet v1\"
\tset addrs4 {
\t\ttype ipv4_addr
\t\telements = { 10.88.0.2 comment \"c1/eth0\", 10.88.0.3 }
\t}
\tset bridges {
\t\ttype ifname
\t\telements = { \"cni0\" }
\t}
\tmap hostports4 {
\t\ttype inet_proto . inet_service : ipv4_addr . inet_service
\t\telements = { tcp . 8080 comment \"c1/eth0\" : 10.88.0.2 . 80 }
\t}
\tmap isolation {
\t\ttype ifname : verdict
\t\telements = { \"cni0\" : jump isolate }
\t}
\tchain isolate {
\t\tcounter drop
\t}
\tchain prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tfib daddr type local dnat ip to meta l4proto . th dport map @hostports4
\t}
\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tiifname vmap @isolation
\t}
}
";
        assert_eq!(got, want);
        // Deterministic.
        assert_eq!(sample().render().unwrap(), got);
    }

    #[test]
    fn golden_minimal_and_flags() {
        let r = Ruleset::new().table(
            Table::new(Family::Ip6, "t")
                .set(Set::new("s", "ipv6_addr").flag("interval").comment("nets"))
                .chain(Chain::new("c").comment("empty")),
        );
        assert_eq!(
            r.render().unwrap(),
            "add table ip6 t\ndelete table ip6 t\ntable ip6 t {\n\tset s {\n\t\ttype ipv6_addr\n\
             \t\tflags interval\n\t\tcomment \"nets\"\n\t}\n\tchain c {\n\t\tcomment \"empty\"\n\t}\n}\n"
        );
        assert_eq!(Ruleset::new().render().unwrap(), "");
    }

    #[test]
    fn rejects_injection() {
        let bad_comment =
            Ruleset::new().table(Table::new(Family::Inet, "rnet").comment("x\" ; flush ruleset"));
        assert!(bad_comment.render().is_err());
        let bad_rule = Ruleset::new().table(
            Table::new(Family::Inet, "rnet").chain(Chain::new("c").rule("accept\nflush ruleset")),
        );
        assert!(bad_rule.render().is_err());
        assert!(Table::new(Family::Inet, "r net").render().is_err());
        assert!(Table::new(Family::Inet, "").render().is_err());
        let bad_type = Table::new(Family::Inet, "t").set(Set::new("s", "ipv4_addr; flush"));
        assert!(bad_type.render().is_err());
        let bad_elem = Table::new(Family::Inet, "t")
            .set(Set::new("s", "ipv4_addr").element(Element::new(KeyPart::Port(1)).comment("\n")));
        assert!(bad_elem.render().is_err());
        let bad_prio = Table::new(Family::Inet, "t")
            .chain(Chain::base("c", "filter", "input", "0;\n").policy("accept"));
        assert!(bad_prio.render().is_err());
    }
}
