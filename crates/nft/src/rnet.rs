//! rnet's own tables, defined once for every plugin, and the element
//! journal that lets any plugin's slow path restore everyone's elements.
//!
//! # Why one definition
//!
//! The slow path replaces a whole table (`add table; delete table; table
//! { ... }` in one `nft -f -`). If the bridge plugin and the port mapper each
//! rendered their own idea of `table inet rnet`, whichever ran the slow path
//! last would delete the other's sets and chains. So [`ruleset`] is the one
//! complete definition (`table inet rnet` and `table bridge rnet`), and every
//! plugin's slow path applies exactly that. Its version marker
//! ([`VERSION`], the table comment) changes whenever the definition does.
//!
//! # Why a journal
//!
//! After `nft flush ruleset` (a firewall reload) the tables are gone with all
//! their elements. Whoever notices first (the next plugin call that gets
//! `ENOENT`, or `rnet reload`) must put back *every* plugin's elements, not
//! only its own, or published ports of other containers stay dead until their
//! plugin runs again. So each plugin records, per attachment, the elements it
//! adds in a small file `<stateRoot>/nft/<plugin>/<fnv64 of tag>.json`
//! (written atomically *before* the commit: an intent log; removed after the
//! DEL commit). [`commit`] tries the batch; on `ENOENT` it takes the lock
//! `<stateRoot>/nft/lock`, tries again (someone else may have restored in
//! the meantime), and otherwise renders [`ruleset`] plus every journaled
//! element (plus the elements still in the kernel's old table, when the table
//! exists but is outdated or incomplete) and applies it in ONE transaction:
//! tables and elements appear atomically together. Then the batch is retried.
//! That transaction is sent over netlink ([`crate::Nft::apply_native`]: every
//! chain of rnet's tables carries its rules as expressions beside their nft
//! text, and a kernel test checks both give the same bytecode), so neither a
//! first ADD nor a restore runs `nft`, whose cost grows with the host's
//! other rules; `nft -f -` with the rendering remains the fallback, for
//! chains without expressions (the port mapper's condition chains) and when
//! the kernel refuses the netlink form.
//!
//! If nft rejects that file (e.g. two stale journals claim the same host
//! port with different targets), the bare ruleset is applied and every
//! journal file is committed as its own netlink batch; files that fail are
//! reported on stderr and skipped, so one bad record cannot keep everyone
//! else's elements out.
//!
//! # Layout of `table inet rnet` (version "rnet v5")
//!
//! Bridge plugin: sets `masq4`/`masq6` (masquerade sources), `bridges`,
//! `bridge_self`, `isolated`; base chain `postrouting` (masquerade).
//!
//! Port mapper (see the `rnet-portmap` crate doc for the reasoning):
//!
//! * maps `hostports4/6` (`proto . port → addr . port`, any local address)
//!   and `hostip_ports4/6` (`hostIP . proto . port → addr . port`);
//! * `pm_prerouting` (nat, dstnat) and `pm_output` (nat, -100) jump to
//!   `pm_dnat` only for `fib daddr type local`: only packets really
//!   addressed to this host are translated (CVE-2025-67499);
//! * `pm_dnat`: two map lookups per family, hostIP-bound entries first;
//!   before each, a verdict map (`pm_condip4`, `pm_cond4`, v6 alike) sends
//!   ports published with `conditionsV4/V6` to the chain of their condition
//!   set (`pmc4_<hash>`, created on first use, see [`cond`]), which continues
//!   to `pm_cdnat4/6` (the same lookups) only when the conditions match;
//! * `pm_postrouting` (nat, srcnat): masquerade DNATed traffic from
//!   127.0.0.0/8 (localhost publishing) and DNATed traffic that leaves
//!   through the bridge it came from (`oifname . ip saddr @hairpin4`:
//!   hairpin and container-to-container on one bridge).
//!
//! # Feature chains (filter chains that exist only while used)
//!
//! Filter chains run for every packet on their hook (with `br_netfilter`,
//! for every bridged frame too), so each exists only while one of its sets
//! has an element ([`Feature`], [`features`]):
//!
//! * `pm_raw` (filter, raw) while `localnet` (bridges on which the port
//!   mapper turned `route_localnet` on) has an element:
//!   `iifname != "lo" ip daddr 127.0.0.0/8 drop`, so `route_localnet` on a
//!   bridge never exposes the host's 127.0.0.1 services to the link
//!   (CVE-2020-8558). The bridge's `localnet` element is also journaled
//!   per bridge ([`localnet_record`]), not only per attachment, as the
//!   sysctl outlives the attachments: a restore brings the guard back while
//!   the bridge exists;
//! * `pm_guard` (filter, dstnat - 10, after conntrack, before DNAT) while
//!   `published4/6` has one: new connections from anything but an rnet
//!   bridge or `lo` straight to a published container address are dropped;
//! * `forward` (filter, forward) while `isolated` has one: no traffic
//!   between an isolated rnet bridge and another rnet bridge, except the
//!   established and related traffic of containers the firewall plugin
//!   admitted (`fw_allowed4/6`; without isolation those accepts would
//!   change nothing);
//! * `table bridge rnet` chain `prerouting` while `spoofchk_ports` has one:
//!   the MAC spoof check (`spoofchk_ok` holds `veth . mac` pairs allowed).

use std::collections::HashSet;
use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

pub mod cond;

use crate::{
    Backend, Batch, Chain, Element, Family, KeyPart, Map, NftError, OpKind, Ruleset, Set, Table,
    Verdict,
};

/// The table name, in families `inet` and `bridge`.
pub const TABLE: &str = "rnet";

/// The version marker (table comment) of this definition.
pub const VERSION: &str = "rnet v5";

/// Set and map names of rnet's tables.
pub mod sets {
    /// Container IPv4 addresses of `ipMasq` networks (bridge).
    pub const MASQ4: &str = "masq4";
    /// Container IPv6 addresses of `ipMasq` networks (bridge).
    pub const MASQ6: &str = "masq6";
    /// Every bridge rnet attached something to (bridge; shared).
    pub const BRIDGES: &str = "bridges";
    /// `"br" . "br"` for each bridge (bridge; shared).
    pub const BRIDGE_SELF: &str = "bridge_self";
    /// Bridges of isolated networks (bridge; shared).
    pub const ISOLATED: &str = "isolated";
    /// `table bridge rnet`: host veths under the spoof check.
    pub const SPOOF_PORTS: &str = "spoofchk_ports";
    /// `table bridge rnet`: `veth . mac` pairs allowed.
    pub const SPOOF_OK: &str = "spoofchk_ok";
    /// Port mapper: `inet_proto . inet_service : ipv4_addr . inet_service`.
    pub const HOSTPORTS4: &str = "hostports4";
    /// Port mapper: `inet_proto . inet_service : ipv6_addr . inet_service`.
    pub const HOSTPORTS6: &str = "hostports6";
    /// Port mapper: `ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service`.
    pub const HOSTIP_PORTS4: &str = "hostip_ports4";
    /// Port mapper: `ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service`.
    pub const HOSTIP_PORTS6: &str = "hostip_ports6";
    /// Port mapper: `ifname . ipv4_addr`, bridge and address of every
    /// container chained through the port mapper with `snat` on.
    pub const HAIRPIN4: &str = "hairpin4";
    /// Port mapper: `ifname . ipv6_addr`.
    pub const HAIRPIN6: &str = "hairpin6";
    /// Port mapper: IPv4 addresses of containers with published ports.
    pub const PUBLISHED4: &str = "published4";
    /// Port mapper: IPv6 addresses of containers with published ports.
    pub const PUBLISHED6: &str = "published6";
    /// Port mapper, conditioned ports: `inet_proto . inet_service : verdict`
    /// (`goto pmc4_<hash>`).
    pub const PM_COND4: &str = "pm_cond4";
    /// Port mapper, conditioned ports: `inet_proto . inet_service : verdict`.
    pub const PM_COND6: &str = "pm_cond6";
    /// Port mapper, conditioned hostIP-bound ports:
    /// `ipv4_addr . inet_proto . inet_service : verdict`.
    pub const PM_CONDIP4: &str = "pm_condip4";
    /// Port mapper, conditioned hostIP-bound ports:
    /// `ipv6_addr . inet_proto . inet_service : verdict`.
    pub const PM_CONDIP6: &str = "pm_condip6";
    /// Port mapper: bridges on which it turned `route_localnet` on (their
    /// packets to 127.0.0.0/8 are dropped by `pm_raw`).
    pub const LOCALNET: &str = "localnet";
    /// Firewall plugin: IPv4 addresses of admitted containers.
    pub const FW_ALLOWED4: &str = "fw_allowed4";
    /// Firewall plugin: IPv6 addresses of admitted containers.
    pub const FW_ALLOWED6: &str = "fw_allowed6";
}

/// `table inet rnet`, complete (bridge and port mapper parts).
pub fn inet_table() -> Table {
    use sets::*;
    Table::new(Family::Inet, TABLE)
        .comment(VERSION)
        .set(Set::new(MASQ4, "ipv4_addr"))
        .set(Set::new(MASQ6, "ipv6_addr"))
        .set(Set::new(BRIDGES, "ifname"))
        .set(Set::new(BRIDGE_SELF, "ifname . ifname"))
        .set(Set::new(ISOLATED, "ifname"))
        .set(Set::new(HAIRPIN4, "ifname . ipv4_addr"))
        .set(Set::new(HAIRPIN6, "ifname . ipv6_addr"))
        .set(Set::new(PUBLISHED4, "ipv4_addr"))
        .set(Set::new(PUBLISHED6, "ipv6_addr"))
        .set(Set::new(FW_ALLOWED4, "ipv4_addr"))
        .set(Set::new(FW_ALLOWED6, "ipv6_addr"))
        .set(Set::new(LOCALNET, "ifname"))
        .map(Map::new(
            HOSTPORTS4,
            "inet_proto . inet_service",
            "ipv4_addr . inet_service",
        ))
        .map(Map::new(
            HOSTPORTS6,
            "inet_proto . inet_service",
            "ipv6_addr . inet_service",
        ))
        .map(Map::new(
            HOSTIP_PORTS4,
            "ipv4_addr . inet_proto . inet_service",
            "ipv4_addr . inet_service",
        ))
        .map(Map::new(
            HOSTIP_PORTS6,
            "ipv6_addr . inet_proto . inet_service",
            "ipv6_addr . inet_service",
        ))
        .chain(
            Chain::base("postrouting", "nat", "postrouting", "srcnat")
                .policy("accept")
                .rule("ip saddr @masq4 oifname != @bridges ip daddr != 224.0.0.0/4 masquerade")
                .rule("ip6 saddr @masq6 oifname != @bridges ip6 daddr != ff00::/8 masquerade")
                .native(vec![masq_rule(false), masq_rule(true)]),
        )
        .map(Map::new(PM_COND4, "inet_proto . inet_service", "verdict"))
        .map(Map::new(PM_COND6, "inet_proto . inet_service", "verdict"))
        .map(Map::new(
            PM_CONDIP4,
            "ipv4_addr . inet_proto . inet_service",
            "verdict",
        ))
        .map(Map::new(
            PM_CONDIP6,
            "ipv6_addr . inet_proto . inet_service",
            "verdict",
        ))
        .chain(
            Chain::new(cond::CDNAT4)
                .rule("dnat ip to ip daddr . meta l4proto . th dport map @hostip_ports4")
                .rule("meta nfproto ipv4 dnat ip to meta l4proto . th dport map @hostports4")
                .native(vec![
                    pm_dnat_rule(false, true, HOSTIP_PORTS4),
                    pm_dnat_rule(false, false, HOSTPORTS4),
                ]),
        )
        .chain(
            Chain::new(cond::CDNAT6)
                .rule("dnat ip6 to ip6 daddr . meta l4proto . th dport map @hostip_ports6")
                .rule("meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @hostports6")
                .native(vec![
                    pm_dnat_rule(true, true, HOSTIP_PORTS6),
                    pm_dnat_rule(true, false, HOSTPORTS6),
                ]),
        )
        .chain(
            Chain::new("pm_dnat")
                .rule("ip daddr . meta l4proto . th dport vmap @pm_condip4")
                .rule("dnat ip to ip daddr . meta l4proto . th dport map @hostip_ports4")
                .rule("meta nfproto ipv4 meta l4proto . th dport vmap @pm_cond4")
                .rule("meta nfproto ipv4 dnat ip to meta l4proto . th dport map @hostports4")
                .rule("ip6 daddr . meta l4proto . th dport vmap @pm_condip6")
                .rule("dnat ip6 to ip6 daddr . meta l4proto . th dport map @hostip_ports6")
                .rule("meta nfproto ipv6 meta l4proto . th dport vmap @pm_cond6")
                .rule("meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @hostports6")
                .native(vec![
                    pm_vmap_rule(false, true, PM_CONDIP4),
                    pm_dnat_rule(false, true, HOSTIP_PORTS4),
                    pm_vmap_rule(false, false, PM_COND4),
                    pm_dnat_rule(false, false, HOSTPORTS4),
                    pm_vmap_rule(true, true, PM_CONDIP6),
                    pm_dnat_rule(true, true, HOSTIP_PORTS6),
                    pm_vmap_rule(true, false, PM_COND6),
                    pm_dnat_rule(true, false, HOSTPORTS6),
                ]),
        )
        .chain(
            Chain::base("pm_prerouting", "nat", "prerouting", "dstnat")
                .policy("accept")
                .rule("fib daddr type local jump pm_dnat")
                .native(vec![to_pm_dnat()]),
        )
        .chain(
            Chain::base("pm_output", "nat", "output", "-100")
                .policy("accept")
                .rule("ip6 daddr ::1 return")
                .rule("fib daddr type local jump pm_dnat")
                .native(vec![
                    {
                        use crate::expr::*;
                        let mut r = nfproto(true).to_vec();
                        r.push(daddr(true));
                        r.push(cmp(CmpOp::Eq, &Ipv6Addr::LOCALHOST.octets()));
                        r.push(Expr::Verdict(Verdict::Return));
                        r
                    },
                    to_pm_dnat(),
                ]),
        )
        .chain(
            Chain::base("pm_postrouting", "nat", "postrouting", "srcnat")
                .policy("accept")
                .rule("ct status dnat ip saddr 127.0.0.0/8 masquerade")
                .rule("ct status dnat oifname . ip saddr @hairpin4 masquerade")
                .rule("ct status dnat oifname . ip6 saddr @hairpin6 masquerade")
                .native(vec![
                    {
                        use crate::expr::*;
                        let mut r = ct_status_dnat().to_vec();
                        r.extend(nfproto(false));
                        r.push(payload(Base::Network, 12, 1, REG_1));
                        r.push(cmp(CmpOp::Eq, &[127]));
                        r.push(Expr::Masq);
                        r
                    },
                    hairpin_rule(false),
                    hairpin_rule(true),
                ]),
        )
}

// The expressions of the NAT chains' rules, as nft compiles their text (a
// kernel test compares the two). Concatenations use nft's registers: the
// 16-byte `REG_1`/`REG_2` or, inside them, the 4-byte registers 9, 10, 13.

/// `ip[6] saddr @masqN oifname != @bridges ip[6] daddr != MULTICAST masquerade`.
fn masq_rule(v6: bool) -> Vec<crate::expr::Expr> {
    use crate::expr::*;
    let mut r = nfproto(v6).to_vec();
    r.push(saddr(v6, REG_1));
    r.push(lookup(if v6 { sets::MASQ6 } else { sets::MASQ4 }, false));
    r.push(meta(MetaKey::OifName, REG_1));
    r.push(lookup(sets::BRIDGES, true));
    if v6 {
        // ff00::/8: the first byte.
        r.push(payload(Base::Network, 24, 1, REG_1));
        r.push(cmp(CmpOp::Neq, &[0xff]));
    } else {
        // 224.0.0.0/4: the address masked to its first four bits.
        r.push(daddr(false));
        r.push(Expr::Bitwise {
            reg: REG_1,
            mask: vec![0xf0, 0, 0, 0],
            xor: vec![0; 4],
        });
        r.push(cmp(CmpOp::Neq, &[0xe0, 0, 0, 0]));
    }
    r.push(Expr::Masq);
    r
}

/// The port mapper's key: `[ip[6] daddr .] meta l4proto . th dport`.
fn pm_key(v6: bool, with_addr: bool) -> Vec<crate::expr::Expr> {
    use crate::expr::*;
    let mut r = nfproto(v6).to_vec();
    if with_addr {
        r.push(daddr(v6));
        let (proto, port) = if v6 { (REG_2, 13) } else { (9, 10) };
        r.push(meta(MetaKey::L4Proto, proto));
        r.push(payload(Base::Transport, 2, 2, port));
    } else {
        r.push(meta(MetaKey::L4Proto, REG_1));
        r.push(payload(Base::Transport, 2, 2, 9));
    }
    r
}

/// `dnat ip[6] to KEY map @MAP`: the address lands in `REG_1`, the port
/// right after it.
fn pm_dnat_rule(v6: bool, with_addr: bool, map: &str) -> Vec<crate::expr::Expr> {
    use crate::expr::*;
    let mut r = pm_key(v6, with_addr);
    r.push(Expr::MapLookup {
        sreg: REG_1,
        set: map.to_owned(),
        dreg: REG_1,
    });
    r.push(Expr::Dnat {
        v6,
        addr: REG_1,
        proto: if v6 { REG_2 } else { 9 },
    });
    r
}

/// `KEY vmap @MAP`.
fn pm_vmap_rule(v6: bool, with_addr: bool, map: &str) -> Vec<crate::expr::Expr> {
    let mut r = pm_key(v6, with_addr);
    r.push(crate::expr::Expr::MapLookup {
        sreg: crate::expr::REG_1,
        set: map.to_owned(),
        dreg: 0,
    });
    r
}

/// `fib daddr type local jump pm_dnat`.
fn to_pm_dnat() -> Vec<crate::expr::Expr> {
    let mut r = crate::expr::fib_daddr_local().to_vec();
    r.push(crate::expr::Expr::Verdict(Verdict::Jump(
        "pm_dnat".to_owned(),
    )));
    r
}

/// `ct status dnat oifname . ip[6] saddr @hairpinN masquerade`.
fn hairpin_rule(v6: bool) -> Vec<crate::expr::Expr> {
    use crate::expr::*;
    let mut r = ct_status_dnat().to_vec();
    r.extend(nfproto(v6));
    r.push(meta(MetaKey::OifName, REG_1));
    r.push(saddr(v6, REG_2));
    r.push(lookup(
        if v6 { sets::HAIRPIN6 } else { sets::HAIRPIN4 },
        false,
    ));
    r.push(Expr::Masq);
    r
}

/// `table bridge rnet`: frames from a checked host veth whose source MAC is
/// not the container's are dropped (`macspoofchk`).
pub fn bridge_table() -> Table {
    Table::new(Family::Bridge, TABLE)
        .comment(VERSION)
        .set(Set::new(sets::SPOOF_PORTS, "ifname"))
        .set(Set::new(sets::SPOOF_OK, "ifname . ether_addr"))
}

/// rnet's tables with their sets, maps and NAT chains: what every slow path
/// applies, plus the chains of each [`Feature`] in use ([`with_features`]).
pub fn ruleset() -> Ruleset {
    Ruleset::new().table(inet_table()).table(bridge_table())
}

/// Base chains that exist only while one of their sets has an element.
///
/// A filter chain on a hook runs for every packet that passes the hook, and
/// with `br_netfilter` that includes every frame bridged between two
/// containers: 4–5% of a bridge's TCP throughput here for rnet's four
/// filter chains, with nothing in their sets. So each is part of the table
/// only while some attachment uses its feature: created right after the
/// commit that puts the first element in one of its sets ([`commit`]),
/// rendered by a restore when its sets have elements, and deleted by
/// [`prune_features`] (GC) once all its sets are empty. NAT chains stay: the
/// kernel consults them only for a connection's first packet.
#[derive(Debug, Clone, Copy)]
pub struct Feature {
    /// A name for messages.
    pub name: &'static str,
    /// The table's family ([`TABLE`]).
    pub family: Family,
    /// The chains exist while any of these sets has an element.
    pub sets: &'static [&'static str],
    chains: fn() -> Vec<Chain>,
}

impl Feature {
    /// The feature's chains.
    pub fn chains(&self) -> Vec<Chain> {
        (self.chains)()
    }

    /// The chain whose presence says the feature's chains are in place (the
    /// last one: they are created in one transaction).
    fn marker(&self) -> Option<String> {
        self.chains().last().map(|c| c.name.clone())
    }
}

fn localnet_chains() -> Vec<Chain> {
    use crate::expr::{Base, CmpOp, Expr, REG_1, nfproto};
    // `route_localnet` on a bridge must never expose the host's 127.0.0.1
    // services to the link (CVE-2020-8558). Before conntrack.
    let mut r = not_lo();
    r.extend(nfproto(false));
    r.extend([
        // ip daddr 127.0.0.0/8: the first byte.
        Expr::Payload {
            base: Base::Network,
            offset: 16,
            len: 1,
            dreg: REG_1,
        },
        Expr::Cmp {
            sreg: REG_1,
            op: CmpOp::Eq,
            data: vec![127],
        },
        Expr::Counter,
        Expr::Verdict(Verdict::Drop),
    ]);
    vec![
        Chain::base("pm_raw", "filter", "prerouting", "raw")
            .policy("accept")
            .rule("iifname != \"lo\" ip daddr 127.0.0.0/8 counter drop")
            .native(vec![r]),
    ]
}

/// `iifname != "lo"` as expressions.
fn not_lo() -> Vec<crate::expr::Expr> {
    use crate::expr::{CmpOp, Expr, MetaKey, REG_1, meta};
    let mut lo = b"lo".to_vec();
    lo.resize(crate::IFNAMSIZ, 0);
    vec![
        meta(MetaKey::IifName, REG_1),
        Expr::Cmp {
            sreg: REG_1,
            op: CmpOp::Neq,
            data: lo,
        },
    ]
}

fn guard_chains() -> Vec<Chain> {
    use crate::expr::{Expr, MetaKey, REG_1, ct_state_any, daddr, lookup, meta, nfproto};
    let rule = |v6: bool, set: &str| {
        let mut r = not_lo();
        r.extend([meta(MetaKey::IifName, REG_1), lookup(sets::BRIDGES, true)]);
        r.extend(ct_state_any(0x8));
        r.extend(nfproto(v6));
        r.extend([daddr(v6), lookup(set, false), Expr::Verdict(Verdict::Drop)]);
        r
    };
    vec![
        Chain::base("pm_guard", "filter", "prerouting", "dstnat - 10")
            .policy("accept")
            .rule("iifname != \"lo\" iifname != @bridges ct state new ip daddr @published4 drop")
            .rule("iifname != \"lo\" iifname != @bridges ct state new ip6 daddr @published6 drop")
            .native(vec![
                rule(false, sets::PUBLISHED4),
                rule(true, sets::PUBLISHED6),
            ]),
    ]
}

fn isolation_chains() -> Vec<Chain> {
    use crate::expr::{Expr, MetaKey, REG_1, REG_2, ct_state_any, daddr, lookup, meta, nfproto};
    let admitted = |v6: bool, set: &str| {
        let mut r = ct_state_any(0x2 | 0x4).to_vec();
        r.extend(nfproto(v6));
        r.extend([
            daddr(v6),
            lookup(set, false),
            Expr::Verdict(Verdict::Accept),
        ]);
        r
    };
    let isolate = |i: &str, o: &str| {
        vec![
            meta(MetaKey::IifName, REG_1),
            lookup(i, false),
            meta(MetaKey::OifName, REG_1),
            lookup(o, false),
            meta(MetaKey::IifName, REG_1),
            meta(MetaKey::OifName, REG_2),
            lookup(sets::BRIDGE_SELF, true),
            Expr::Verdict(Verdict::Drop),
        ]
    };
    // The firewall plugin's admission comes first: established and related
    // traffic of admitted containers passes the isolation rules. Without
    // isolation rules those accepts change nothing (the policy accepts), so
    // the chain is needed only while a bridge is isolated.
    vec![
        Chain::base("forward", "filter", "forward", "filter")
            .policy("accept")
            .rule("ct state established,related ip daddr @fw_allowed4 accept")
            .rule("ct state established,related ip6 daddr @fw_allowed6 accept")
            .rule("iifname @isolated oifname @bridges iifname . oifname != @bridge_self drop")
            .rule("iifname @bridges oifname @isolated iifname . oifname != @bridge_self drop")
            .native(vec![
                admitted(false, sets::FW_ALLOWED4),
                admitted(true, sets::FW_ALLOWED6),
                isolate(sets::ISOLATED, sets::BRIDGES),
                isolate(sets::BRIDGES, sets::ISOLATED),
            ]),
    ]
}

fn spoofchk_chains() -> Vec<Chain> {
    use crate::expr::{Base, Expr, MetaKey, REG_1, REG_2, lookup, meta};
    vec![
        Chain::base("prerouting", "filter", "prerouting", "-300")
            .policy("accept")
            .rule("iifname @spoofchk_ports iifname . ether saddr != @spoofchk_ok drop")
            .native(vec![vec![
                meta(MetaKey::IifName, REG_1),
                lookup(sets::SPOOF_PORTS, false),
                meta(MetaKey::IifName, REG_1),
                // ether saddr: link-layer header + 6.
                Expr::Payload {
                    base: Base::Link,
                    offset: 6,
                    len: 6,
                    dreg: REG_2,
                },
                lookup(sets::SPOOF_OK, true),
                Expr::Verdict(Verdict::Drop),
            ]]),
    ]
}

/// Every [`Feature`]: the port mapper's 127.0.0.0/8 guard (`localnet`) and
/// published-address guard (`published4/6`), isolation between bridges
/// (`isolated`; the firewall plugin's admission `fw_allowed4/6` is part of
/// that chain) and the MAC spoof check (`spoofchk_ports`, table `bridge rnet`).
pub fn features() -> [Feature; 4] {
    use sets::*;
    [
        Feature {
            name: "localhost guard",
            family: Family::Inet,
            sets: &[LOCALNET],
            chains: localnet_chains,
        },
        Feature {
            name: "published-address guard",
            family: Family::Inet,
            sets: &[PUBLISHED4, PUBLISHED6],
            chains: guard_chains,
        },
        Feature {
            name: "isolation",
            family: Family::Inet,
            sets: &[ISOLATED],
            chains: isolation_chains,
        },
        Feature {
            name: "MAC spoof check",
            family: Family::Bridge,
            sets: &[SPOOF_PORTS],
            chains: spoofchk_chains,
        },
    ]
}

/// Adds to `model` the chains of every feature one of whose sets has an
/// element in the model. Returns how many features that was.
pub fn with_features(model: &mut Ruleset) -> usize {
    let mut n = 0;
    for f in features() {
        let Some(t) = model
            .tables
            .iter_mut()
            .find(|t| t.family == f.family && t.name == TABLE)
        else {
            continue;
        };
        let used = f
            .sets
            .iter()
            .any(|s| t.elements_mut(s).is_some_and(|e| !e.is_empty()));
        if !used {
            continue;
        }
        for c in f.chains() {
            if !t.chains.iter().any(|x| x.name == c.name) {
                t.chains.push(c);
            }
        }
        n += 1;
    }
    n
}

/// The features `batch` puts elements into.
fn touched_features(batch: &Batch) -> Vec<Feature> {
    features()
        .into_iter()
        .filter(|f| {
            batch.ops().iter().any(|op| {
                matches!(op.kind, OpKind::Add | OpKind::AddExcl)
                    && op.family == f.family
                    && op.table == TABLE
                    && !op.elements.is_empty()
                    && f.sets.contains(&op.set.as_str())
            })
        })
        .collect()
}

/// After `batch` was committed: the chains of every feature it put elements
/// into exist (one `GET` per feature it touches; creating them, one netlink
/// batch since session 6, happens only for the first user). Safe against a concurrent
/// [`prune_features`]: the elements are in the kernel before this looks,
/// and a prune deletes only at the generation it saw the sets empty in.
fn ensure_features<B: Backend + ?Sized>(
    backend: &mut B,
    batch: &Batch,
    state_root: &Path,
    locked: bool,
) -> Result<(), RnetError> {
    for f in touched_features(batch) {
        let Some(marker) = f.marker() else { continue };
        if backend.chain_exists(f.family, TABLE, &marker)? {
            continue;
        }
        let _lock = if locked {
            None
        } else {
            let l = lock(state_root)?;
            // Whoever held the lock before may have made them: ADDs that
            // start together on a fresh host run `nft` once, not each.
            if backend.chain_exists(f.family, TABLE, &marker)? {
                continue;
            }
            Some(l)
        };
        match backend.put_chains(f.family, TABLE, &f.chains()) {
            Ok(()) => {}
            // The table went away since the commit (a flush): the restore
            // renders the chains of every feature with elements.
            Err(e) if e.is_not_found() => {
                restore(backend, state_root)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// CHECK: the chains missing for the features whose sets `batch` adds to
/// (an attachment's ADD batch), one line each naming chain and feature.
pub fn missing_feature_chains<B: Backend + ?Sized>(
    backend: &mut B,
    batch: &Batch,
) -> Result<Vec<String>, NftError> {
    let mut out = Vec::new();
    for f in touched_features(batch) {
        for c in f.chains() {
            if !backend.chain_exists(f.family, TABLE, &c.name)? {
                out.push(format!(
                    "chain {} {TABLE} {} ({}) missing",
                    f.family, c.name, f.name
                ));
            }
        }
    }
    Ok(out)
}

/// The journal name of `localnet` records: one per bridge, written by the
/// port mapper when it turns `route_localnet` on and removed only with the
/// bridge (GC). Unlike an attachment's journal it outlives the attachments,
/// as the sysctl does: a restore after `nft flush ruleset` must bring the
/// 127.0.0.0/8 guard back for every bridge that still has it on, even when
/// no container with published ports is left there.
pub const LOCALNET_JOURNAL: &str = "localnet";

/// Records `bridge` in the `localnet` journal (once; an existing record is
/// left alone, so repeated ADDs cost one `stat`).
pub fn localnet_record(state_root: &Path, bridge: &str) -> Result<(), RnetError> {
    if journal_path(state_root, LOCALNET_JOURNAL, bridge).exists() {
        return Ok(());
    }
    journal_write(
        state_root,
        &Journal {
            plugin: LOCALNET_JOURNAL.to_owned(),
            tag: bridge.to_owned(),
            entries: vec![JournalEntry {
                family: Family::Inet,
                set: sets::LOCALNET.to_owned(),
                element: Element::new(vec![KeyPart::IfName(bridge.to_owned())]),
            }],
        },
    )
}

/// Removes the `localnet` record of `bridge` (a missing one is fine).
pub fn localnet_forget(state_root: &Path, bridge: &str) -> Result<(), RnetError> {
    journal_remove(state_root, LOCALNET_JOURNAL, bridge)
}

/// How often [`prune_features`] reads again after another commit came
/// between its reading and its deletion.
const PRUNE_ATTEMPTS: usize = 5;

/// GC of [`Feature`] chains: deletes the chains of every feature none of
/// whose sets has an element, in one transaction at the generation in which
/// the sets were read (so an element added meanwhile keeps its chains; then
/// this reads again, at most `PRUNE_ATTEMPTS` (5) times). Returns the number
/// of chains deleted. No lock: writers never wait for this.
pub fn prune_features<B: Backend + ?Sized>(backend: &mut B) -> Result<usize, RnetError> {
    for _ in 0..PRUNE_ATTEMPTS {
        let at = backend.generation()?;
        let mut doomed: Vec<(Family, String)> = Vec::new();
        for f in features() {
            let mut present = Vec::new();
            for c in f.chains() {
                if backend.chain_exists(f.family, TABLE, &c.name)? {
                    present.push(c.name);
                }
            }
            if present.is_empty() {
                continue;
            }
            let mut used = false;
            for s in f.sets {
                match backend.list_elements(f.family, TABLE, s) {
                    Ok(els) if !els.is_empty() => {
                        used = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if !used {
                doomed.extend(present.into_iter().map(|c| (f.family, c)));
            }
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        let refs: Vec<(Family, &str, &str)> = doomed
            .iter()
            .map(|(f, c)| (*f, TABLE, c.as_str()))
            .collect();
        if backend.delete_chains_at(at, &refs)? {
            return Ok(doomed.len());
        }
    }
    Ok(0)
}

/// What went wrong in [`commit`], [`reload`] or the journal.
#[derive(Debug, thiserror::Error)]
pub enum RnetError {
    /// nftables (kernel or `nft`) refused; the errno stays typed.
    #[error(transparent)]
    Nft(#[from] NftError),
    /// A journal or lock file could not be written, read or removed.
    #[error("{what} {}: {source}; check that the rnet state directory is writable", path.display())]
    Journal {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another process held the lock for longer than [`LOCK_TIMEOUT`]
    /// (CNI error 11, "try again": the caller may retry).
    #[error(
        "{} is held by another process (waited {} ms); another rnet plugin is rebuilding the \
         ruleset or is stuck: retry, and if it persists find the process holding it (`fuser {}`)",
        path.display(), waited.as_millis(), path.display()
    )]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// How long this process waited.
        waited: std::time::Duration,
    },
}

impl RnetError {
    /// The kernel errno, if this came from the kernel.
    pub fn errno(&self) -> Option<i32> {
        match self {
            RnetError::Nft(e) => e.errno(),
            RnetError::Journal { .. } | RnetError::Busy { .. } => None,
        }
    }

    /// `ENOENT` from the kernel.
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(libc::ENOENT)
    }

    /// `EEXIST` from the kernel (an exclusive add found the key).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }
}

fn jerr(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RnetError {
    let path = path.to_path_buf();
    move |source| RnetError::Journal { what, path, source }
}

/// FNV-1a 64 of `s`, as 16 hex digits.
pub fn tag_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The element comment for an attachment tag: the tag itself, or `#` + its
/// hash when longer than nft's 128-byte comment limit (the bridge plugin's
/// rule, so comments of both plugins agree).
pub fn comment_for(tag: &str) -> String {
    if tag.len() <= crate::MAX_COMMENT_LEN
        && tag
            .chars()
            .all(|c| c != '"' && c != '\\' && !c.is_control())
    {
        tag.to_owned()
    } else {
        format!("#{}", tag_hash(tag))
    }
}

/// `<stateRoot>/nft`.
pub fn journal_root(state_root: &Path) -> PathBuf {
    state_root.join("nft")
}

/// The journal file of one attachment of one plugin:
/// `<stateRoot>/nft/<plugin>/<fnv64 of tag>.json`.
pub fn journal_path(state_root: &Path, plugin: &str, tag: &str) -> PathBuf {
    journal_root(state_root)
        .join(plugin)
        .join(format!("{}.json", tag_hash(tag)))
}

/// One journaled element: which table and set it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// Table family.
    pub family: Family,
    /// Set or map name (table [`TABLE`]).
    pub set: String,
    /// The element (key, data or verdict, comment).
    pub element: Element,
}

/// One journal file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    /// The plugin that wrote it.
    pub plugin: String,
    /// The attachment tag.
    pub tag: String,
    /// The elements.
    pub entries: Vec<JournalEntry>,
}

impl Journal {
    /// The elements added by `batch` (its `Add` and `AddExcl` operations on
    /// table [`TABLE`]).
    pub fn from_batch(plugin: &str, tag: &str, batch: &Batch) -> Journal {
        let mut entries = Vec::new();
        for op in batch.ops() {
            if !matches!(op.kind, OpKind::Add | OpKind::AddExcl) || op.table != TABLE {
                continue;
            }
            for e in &op.elements {
                entries.push(JournalEntry {
                    family: op.family,
                    set: op.set.clone(),
                    element: e.clone(),
                });
            }
        }
        Journal {
            plugin: plugin.to_owned(),
            tag: tag.to_owned(),
            entries,
        }
    }

    /// The journal as one batch of idempotent adds per family.
    pub fn batches(&self) -> Vec<Batch> {
        let mut out: Vec<Batch> = Vec::new();
        for en in &self.entries {
            let i = match out.iter().position(|b| b.family() == en.family) {
                Some(i) => i,
                None => {
                    out.push(Batch::new(en.family));
                    out.len() - 1
                }
            };
            if let Some(b) = out.get_mut(i) {
                b.add_elements(TABLE, &en.set, std::slice::from_ref(&en.element));
            }
        }
        out
    }

    fn to_json(&self) -> Value {
        let entries: Vec<Value> = self
            .entries
            .iter()
            .map(|en| {
                let mut v = json!({
                    "family": en.family.as_str(),
                    "set": en.set,
                    "key": parts_json(&en.element.key),
                });
                if let Some(d) = &en.element.data {
                    v["data"] = parts_json(d);
                }
                if let Some(vd) = &en.element.verdict {
                    v["verdict"] = json!(vd.to_nft_text());
                }
                if let Some(c) = &en.element.comment {
                    v["comment"] = json!(c);
                }
                v
            })
            .collect();
        json!({"plugin": self.plugin, "tag": self.tag, "elements": entries})
    }

    fn from_json(v: &Value) -> Option<Journal> {
        let plugin = v.get("plugin")?.as_str()?.to_owned();
        let tag = v.get("tag")?.as_str()?.to_owned();
        let mut entries = Vec::new();
        for e in v.get("elements")?.as_array()? {
            let family = family_from(e.get("family")?.as_str()?)?;
            let set = e.get("set")?.as_str()?.to_owned();
            let mut element = Element::new(parts_from(e.get("key")?)?);
            if let Some(d) = e.get("data") {
                element.data = Some(parts_from(d)?);
            }
            if let Some(vd) = e.get("verdict") {
                element.verdict = Some(verdict_from(vd.as_str()?)?);
            }
            if let Some(c) = e.get("comment") {
                element.comment = Some(c.as_str()?.to_owned());
            }
            element.validate().ok()?;
            entries.push(JournalEntry {
                family,
                set,
                element,
            });
        }
        Some(Journal {
            plugin,
            tag,
            entries,
        })
    }
}

fn parts_json(parts: &[KeyPart]) -> Value {
    Value::Array(
        parts
            .iter()
            .map(|p| match p {
                KeyPart::Ipv4(a) => json!(["ipv4", a.to_string()]),
                KeyPart::Ipv6(a) => json!(["ipv6", a.to_string()]),
                KeyPart::Proto(n) => json!(["proto", n.to_string()]),
                KeyPart::Port(n) => json!(["port", n.to_string()]),
                KeyPart::IfName(n) => json!(["ifname", n]),
                KeyPart::Mark(m) => json!(["mark", m.to_string()]),
                KeyPart::Raw(b) => {
                    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                    json!(["raw", hex])
                }
            })
            .collect(),
    )
}

fn parts_from(v: &Value) -> Option<Vec<KeyPart>> {
    let mut out = Vec::new();
    for p in v.as_array()? {
        let a = p.as_array()?;
        let (kind, val) = (a.first()?.as_str()?, a.get(1)?.as_str()?);
        out.push(match kind {
            "ipv4" => KeyPart::Ipv4(val.parse::<Ipv4Addr>().ok()?),
            "ipv6" => KeyPart::Ipv6(val.parse::<Ipv6Addr>().ok()?),
            "proto" => KeyPart::Proto(val.parse().ok()?),
            "port" => KeyPart::Port(val.parse().ok()?),
            "ifname" => KeyPart::IfName(val.to_owned()),
            "mark" => KeyPart::Mark(val.parse().ok()?),
            "raw" => {
                if val.len() % 2 != 0 || !val.is_ascii() {
                    return None;
                }
                let mut b = Vec::with_capacity(val.len() / 2);
                for i in (0..val.len()).step_by(2) {
                    b.push(u8::from_str_radix(val.get(i..i + 2)?, 16).ok()?);
                }
                KeyPart::Raw(b)
            }
            _ => return None,
        });
    }
    Some(out)
}

fn verdict_from(s: &str) -> Option<Verdict> {
    Some(match s.split_once(' ') {
        None => match s {
            "accept" => Verdict::Accept,
            "drop" => Verdict::Drop,
            "continue" => Verdict::Continue,
            "return" => Verdict::Return,
            _ => return None,
        },
        Some(("jump", c)) => Verdict::Jump(c.to_owned()),
        Some(("goto", c)) => Verdict::Goto(c.to_owned()),
        Some(_) => return None,
    })
}

fn family_from(s: &str) -> Option<Family> {
    Some(match s {
        "inet" => Family::Inet,
        "ip" => Family::Ip,
        "ip6" => Family::Ip6,
        "arp" => Family::Arp,
        "bridge" => Family::Bridge,
        "netdev" => Family::Netdev,
        _ => return None,
    })
}

/// Writes (replaces) the journal file of `journal.tag` atomically
/// (temporary file in the same directory, then `rename`). Call it BEFORE
/// committing the batch it describes.
pub fn journal_write(state_root: &Path, journal: &Journal) -> Result<(), RnetError> {
    let path = journal_path(state_root, &journal.plugin, &journal.tag);
    let bytes = journal.to_json().to_string();
    write_atomic(&path, bytes.as_bytes())
}

/// Removes the journal file of (`plugin`, `tag`); a missing file is fine.
/// Call it AFTER the DEL batch is committed.
pub fn journal_remove(state_root: &Path, plugin: &str, tag: &str) -> Result<(), RnetError> {
    let path = journal_path(state_root, plugin, tag);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(jerr("cannot remove journal file", &path)(e)),
    }
}

/// Reads one journal file; `Ok(None)` if it does not exist.
pub fn journal_read(
    state_root: &Path,
    plugin: &str,
    tag: &str,
) -> Result<Option<Journal>, RnetError> {
    let path = journal_path(state_root, plugin, tag);
    match std::fs::read(&path) {
        Ok(b) => Ok(parse_journal(&b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(jerr("cannot read journal file", &path)(e)),
    }
}

fn parse_journal(bytes: &[u8]) -> Option<Journal> {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| Journal::from_json(&v))
}

/// Every readable journal file of every plugin (or of `plugin` only), with
/// its path. Unreadable or corrupt files are reported on stderr and skipped:
/// restoring must not fail because of one bad record.
pub fn journal_list(state_root: &Path, plugin: Option<&str>) -> Vec<(PathBuf, Journal)> {
    let mut out = Vec::new();
    let root = journal_root(state_root);
    let Ok(plugins) = std::fs::read_dir(&root) else {
        return out;
    };
    let mut dirs: Vec<PathBuf> = plugins
        .flatten()
        .filter(|d| d.path().is_dir())
        .filter(|d| plugin.is_none_or(|p| d.file_name().to_string_lossy() == p))
        .map(|d| d.path())
        .collect();
    dirs.sort();
    for dir in dirs {
        let Ok(files) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = files
            .flatten()
            .map(|f| f.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        for p in paths {
            match std::fs::read(&p).ok().and_then(|b| parse_journal(&b)) {
                Some(j) => out.push((p, j)),
                None => eprintln!(
                    "rnet: skipping unreadable nft journal file {} (remove it if it is stale)",
                    p.display()
                ),
            }
        }
    }
    out
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RnetError> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(jerr("cannot create journal directory", dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        std::fs::rename(&tmp, path)
    })();
    res.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        jerr("cannot write journal file", path)(e)
    })
}

/// How long [`lock`] waits for another process before giving up with
/// [`RnetError::Busy`]. The lock is held only while the ruleset is rebuilt
/// (one transaction, milliseconds), so this bound is only reached when
/// the holder is stuck.
pub const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// An exclusive `flock` on `<stateRoot>/nft/lock`, held while it lives;
/// waits at most [`LOCK_TIMEOUT`].
pub fn lock(state_root: &Path) -> Result<std::fs::File, RnetError> {
    lock_within(state_root, LOCK_TIMEOUT)
}

/// [`lock`] with an explicit bound.
pub fn lock_within(
    state_root: &Path,
    timeout: std::time::Duration,
) -> Result<std::fs::File, RnetError> {
    use rustix::fs::FlockOperation;
    use rustix::io::Errno;
    let root = journal_root(state_root);
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(jerr("cannot create directory", &root))?;
    }
    let p = root.join("lock");
    let f = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&p)
    }
    .map_err(jerr("cannot open lock file", &p))?;
    let start = std::time::Instant::now();
    let mut pause = std::time::Duration::from_micros(100);
    loop {
        match rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(f),
            Err(Errno::WOULDBLOCK) | Err(Errno::INTR) => {}
            Err(e) => return Err(jerr("cannot lock", &p)(e.into())),
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(RnetError::Busy { path: p, waited });
        }
        std::thread::sleep(pause.min(timeout - waited));
        pause = (pause * 2).min(std::time::Duration::from_millis(10));
    }
}

/// What a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Restored {
    /// Elements taken over from the kernel's previous tables.
    pub carried: usize,
    /// Elements put back from journals.
    pub journaled: usize,
    /// Journal files that could not be restored (fallback path only).
    pub failed: usize,
}

/// The hot path with the slow path behind it: commit `batch`; if a table or
/// set is missing (`ENOENT`), lock, retry if rnet's tables have come back in
/// the meantime, and otherwise restore rnet's tables (see [`restore`]) and
/// retry once more.
///
/// The batch's own elements are left out of the restore, so an exclusive add
/// does not collide with the attachment's own (already journaled) record.
pub fn commit<B: Backend + ?Sized>(
    backend: &mut B,
    batch: &Batch,
    state_root: &Path,
) -> Result<(), RnetError> {
    match backend.commit(batch) {
        Ok(()) => return ensure_features(backend, batch, state_root, false),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    let _lock = lock(state_root)?;
    retry_or_restore(backend, batch, state_root)
}

/// [`commit`] for a caller with reason to think rnet's tables may be missing
/// (the bridge plugin when its bridge is new: perhaps the first ADD on a
/// fresh host): one `GET` for the batch's table first, and, if it is
/// missing, the restore under the lock without trying the batch. A failed
/// batch takes 8-20 ms here to come back, and 16-28 ms when two processes
/// fail batches at once: ADDs racing on a fresh host would wait for each
/// other's aborts.
pub fn commit_probing<B: Backend + ?Sized>(
    backend: &mut B,
    batch: &Batch,
    state_root: &Path,
) -> Result<(), RnetError> {
    // One GET: the batch's own table (rnet's tables are created together).
    if backend.table_exists(batch.family(), TABLE)? {
        return commit(backend, batch, state_root);
    }
    let _lock = lock(state_root)?;
    retry_or_restore(backend, batch, state_root)
}

/// Commits `batch` (deletions, typically lenient) where a missing table means
/// there is nothing to delete: after `nft flush ruleset` (a firewall reload),
/// every DEL would otherwise send a batch that fails, and failed batches are
/// slow and wait for each other in the kernel (see [`commit_probing`]): 20
/// parallel DELs took 276 ms instead of 27. One `GET` for the batch's table
/// first; `ENOENT` from the batch itself (the table vanished in between) is
/// taken as nothing to delete too.
pub fn commit_deletions<B: Backend + ?Sized>(
    backend: &mut B,
    batch: &Batch,
) -> Result<(), NftError> {
    if batch.is_empty() || !backend.table_exists(batch.family(), TABLE)? {
        return Ok(());
    }
    match backend.commit(batch) {
        Err(e) if e.is_not_found() => Ok(()),
        r => r,
    }
}

/// [`commit`] for a caller that already holds the lock ([`lock`]): commit
/// `batch`; on `ENOENT` restore rnet's tables (without the batch's own
/// elements) and commit again. (Calling [`commit`] with the lock held would
/// wait for itself.)
pub fn commit_locked<B: Backend + ?Sized>(
    backend: &mut B,
    batch: &Batch,
    state_root: &Path,
) -> Result<(), RnetError> {
    match backend.commit(batch) {
        Ok(()) => return ensure_features(backend, batch, state_root, true),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    restore_then_commit(backend, batch, state_root)
}

/// With the lock held, after a failed or skipped commit: another writer may
/// have restored the tables while this one waited for the lock, so the batch
/// is tried again if they are all there (a few `GET`s); otherwise, or if it
/// still fails with `ENOENT`, the tables are restored and the batch committed.
fn retry_or_restore<B: Backend + ?Sized>(
    backend: &mut B,
    batch: &Batch,
    state_root: &Path,
) -> Result<(), RnetError> {
    if tables_present(backend)? {
        return commit_locked(backend, batch, state_root);
    }
    restore_then_commit(backend, batch, state_root)
}

fn restore_then_commit<B: Backend + ?Sized>(
    backend: &mut B,
    batch: &Batch,
    state_root: &Path,
) -> Result<(), RnetError> {
    restore_excluding(backend, state_root, Some(batch))?;
    backend.commit(batch)?;
    ensure_features(backend, batch, state_root, true)
}

/// Do all of rnet's tables exist (one `GET` each; their contents and
/// versions are not checked)?
fn tables_present<B: Backend + ?Sized>(backend: &mut B) -> Result<bool, NftError> {
    for family in [Family::Inet, Family::Bridge] {
        if !backend.table_exists(family, TABLE)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `rnet reload`: apply [`ruleset`] with every journaled element (and the
/// elements still present in the current tables) unconditionally, under the
/// lock. One transaction.
pub fn reload<B: Backend + ?Sized>(
    backend: &mut B,
    state_root: &Path,
) -> Result<Restored, RnetError> {
    let _lock = lock(state_root)?;
    restore(backend, state_root)
}

/// Are rnet's tables present in their current version, with every chain and
/// set (a few `GET`s, no dump)?
pub fn is_current<B: Backend + ?Sized>(backend: &mut B) -> Result<bool, NftError> {
    for t in &ruleset().tables {
        match backend.table_comment(t.family, &t.name) {
            Ok(c) if c == t.comment => {}
            Ok(_) => return Ok(false),
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e),
        }
        for c in &t.chains {
            if !backend.chain_exists(t.family, &t.name, &c.name)? {
                return Ok(false);
            }
        }
        for name in t
            .sets
            .iter()
            .map(|s| &s.name)
            .chain(t.maps.iter().map(|m| &m.name))
        {
            if !backend.set_exists(t.family, &t.name, name)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Replace rnet's tables by [`ruleset`] filled with (1) the elements of the
/// current tables' sets that still exist under the same name, and (2) every
/// journaled element; one transaction. Call with the lock held ([`lock`]).
pub fn restore<B: Backend + ?Sized>(
    backend: &mut B,
    state_root: &Path,
) -> Result<Restored, RnetError> {
    restore_excluding(backend, state_root, None)
}

fn restore_excluding<B: Backend + ?Sized>(
    backend: &mut B,
    state_root: &Path,
    exclude: Option<&Batch>,
) -> Result<Restored, RnetError> {
    let mut model = ruleset();
    // A table that does not exist is created without the replace prelude
    // (see `Table::fresh`): safe, as every rnet writer holds the lock here.
    for t in &mut model.tables {
        t.fresh = !backend.table_exists(t.family, &t.name)?;
    }
    let excluded: HashSet<(Family, String, Vec<KeyPart>)> = exclude
        .map(|b| {
            b.ops()
                .iter()
                .flat_map(|op| {
                    op.elements
                        .iter()
                        .map(|e| (op.family, op.set.clone(), e.key.clone()))
                })
                .collect()
        })
        .unwrap_or_default();
    // (1) carry over what the kernel still has.
    let carried = crate::backend::carry_over(backend, &mut model, &|fam, set, key| {
        excluded.contains(&(fam, set.to_owned(), key.to_vec()))
    })?;
    let mut res = Restored {
        carried,
        ..Restored::default()
    };
    // (2) the journals.
    let journals = journal_list(state_root, None);
    for (_, j) in &journals {
        for en in &j.entries {
            if excluded.contains(&(en.family, en.set.clone(), en.element.key.clone())) {
                continue;
            }
            let Some(t) = model
                .tables
                .iter_mut()
                .find(|t| t.family == en.family && t.name == TABLE)
            else {
                continue;
            };
            let Some(els) = t.elements_mut(&en.set) else {
                continue;
            };
            if !els.iter().any(|x| x.same_key(&en.element)) {
                els.push(en.element.clone());
                res.journaled += 1;
            }
        }
    }
    // (3) the chains of the features in use.
    with_features(&mut model);
    // (4) the port mapper's condition chains: the recorded ones, and an
    // empty (closed) one for a verdict whose chain has no record.
    cond::add_chains(&mut model, state_root, &[]);
    match backend.apply(&model) {
        Ok(()) => return Ok(res),
        Err(NftError::NftFailed { stderr, .. }) if res.carried + res.journaled > 0 => {
            eprintln!(
                "rnet: restoring rnet's tables with all recorded elements failed ({}); \
                 applying the bare tables and restoring record by record",
                stderr.trim()
            );
        }
        Err(e) => return Err(e.into()),
    }
    let mut bare = ruleset();
    for (t, m) in bare.tables.iter_mut().zip(&model.tables) {
        t.fresh = m.fresh;
    }
    let refs: Vec<String> = journals
        .iter()
        .flat_map(|(_, j)| j.entries.iter())
        .filter_map(|en| en.element.verdict.as_ref()?.chain().map(str::to_owned))
        .collect();
    cond::add_chains(&mut bare, state_root, &refs);
    backend.apply(&bare)?;
    let mut res = Restored::default();
    for (path, j) in &journals {
        for b in j.batches() {
            let mut pruned = Batch::new(b.family());
            for op in b.ops() {
                let els: Vec<Element> = op
                    .elements
                    .iter()
                    .filter(|e| !excluded.contains(&(op.family, op.set.clone(), e.key.clone())))
                    .cloned()
                    .collect();
                pruned.add_elements(&op.table, &op.set, &els);
            }
            match backend
                .commit(&pruned)
                .map_err(RnetError::from)
                .and_then(|()| ensure_features(backend, &pruned, state_root, true))
            {
                Ok(()) => {
                    res.journaled += pruned.ops().iter().map(|o| o.elements.len()).sum::<usize>()
                }
                Err(e) => {
                    res.failed += 1;
                    eprintln!(
                        "rnet: cannot restore the nft elements recorded in {}: {e}",
                        path.display()
                    );
                }
            }
        }
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::FakeBackend;

    fn hp(port: u16, last: u8, tag: &str) -> Element {
        Element::new(vec![KeyPart::Proto(6), KeyPart::Port(port)])
            .data(vec![
                KeyPart::Ipv4(Ipv4Addr::new(10, 0, 0, last)),
                KeyPart::Port(80),
            ])
            .comment(tag)
    }

    #[test]
    fn lock_is_bounded_and_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        let t = std::time::Instant::now();
        let e = lock_within(dir.path(), std::time::Duration::from_millis(150)).unwrap_err();
        assert!(t.elapsed() >= std::time::Duration::from_millis(150));
        assert!(matches!(e, RnetError::Busy { .. }), "{e:?}");
        assert!(e.to_string().contains("nft/lock"), "{e}");
        drop(held);
        lock_within(dir.path(), std::time::Duration::from_millis(150)).unwrap();
    }

    #[test]
    fn golden_ruleset() {
        let mut text = ruleset().render().unwrap();
        for f in features() {
            text.push_str(&format!("# feature: {}\n", f.name));
            for c in f.chains() {
                text.push_str(&c.put_text(f.family, TABLE).unwrap());
            }
        }
        if std::env::var_os("RNET_BLESS").is_some() {
            std::fs::write(
                concat!(env!("CARGO_MANIFEST_DIR"), "/src/rnet_golden.nft"),
                &text,
            )
            .unwrap();
        }
        let want = include_str!("rnet_golden.nft");
        assert_eq!(text, want, "rendered ruleset:\n{text}");
    }

    #[test]
    fn journal_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Batch::new(Family::Inet);
        b.add_elements_excl(TABLE, sets::HOSTPORTS4, &[hp(8080, 2, "n/c/eth0")]);
        b.add_elements(
            TABLE,
            sets::HAIRPIN4,
            &[Element::new(vec![
                KeyPart::IfName("cni0".into()),
                KeyPart::Ipv4(Ipv4Addr::new(10, 0, 0, 2)),
            ])],
        );
        b.delete_elements_lenient(
            TABLE,
            sets::PUBLISHED4,
            &[Element::new(KeyPart::Ipv4(Ipv4Addr::LOCALHOST))],
        );
        let mut j = Journal::from_batch("portmap", "n/c/eth0", &b);
        j.entries.push(JournalEntry {
            family: Family::Bridge,
            set: sets::SPOOF_OK.into(),
            element: Element::new(vec![
                KeyPart::IfName("veth1".into()),
                KeyPart::Raw(vec![2, 0, 0, 0, 0, 0xab]),
            ]),
        });
        assert_eq!(j.entries.len(), 3);
        journal_write(dir.path(), &j).unwrap();
        let back = journal_read(dir.path(), "portmap", "n/c/eth0")
            .unwrap()
            .unwrap();
        assert_eq!(back, j);
        assert_eq!(back.batches().len(), 2);
        let all = journal_list(dir.path(), None);
        assert_eq!(all.len(), 1);
        // A corrupt file is skipped, not fatal.
        std::fs::write(dir.path().join("nft/portmap/bad.json"), b"{").unwrap();
        assert_eq!(journal_list(dir.path(), Some("portmap")).len(), 1);
        journal_remove(dir.path(), "portmap", "n/c/eth0").unwrap();
        journal_remove(dir.path(), "portmap", "n/c/eth0").unwrap();
        assert!(
            journal_read(dir.path(), "portmap", "n/c/eth0")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_fresh_host_gets_its_tables_without_a_failed_batch_or_a_table_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = FakeBackend::new();
        let mut a = Batch::new(Family::Inet);
        a.add_elements(
            TABLE,
            sets::MASQ4,
            &[Element::new(KeyPart::Ipv4(Ipv4Addr::new(10, 0, 0, 2)))],
        );
        commit_probing(&mut f, &a, dir.path()).unwrap();
        assert_eq!(f.failed_commits(), 0, "no batch tried before the tables");
        assert!(is_current(&mut f).unwrap());
        let log = f.log_text();
        assert!(log.contains("table inet rnet {"), "{log}");
        assert!(
            !log.contains("delete table"),
            "created, not replaced: {log}"
        );
        // A second probing commit (another new bridge) finds them: no apply.
        f.clear_log();
        let mut b = Batch::new(Family::Inet);
        b.add_elements(
            TABLE,
            sets::MASQ4,
            &[Element::new(KeyPart::Ipv4(Ipv4Addr::new(10, 0, 0, 3)))],
        );
        commit_probing(&mut f, &b, dir.path()).unwrap();
        assert!(
            !f.log_text().contains("table inet rnet {"),
            "{}",
            f.log_text()
        );
        assert_eq!(
            f.list_elements(Family::Inet, TABLE, sets::MASQ4)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn deletions_into_missing_tables_send_no_batch() {
        let mut f = FakeBackend::new();
        let el = Element::new(KeyPart::Ipv4(Ipv4Addr::new(10, 0, 0, 2)));
        let mut del = Batch::new(Family::Inet);
        del.delete_elements_lenient(TABLE, sets::MASQ4, std::slice::from_ref(&el));
        commit_deletions(&mut f, &del).unwrap();
        assert_eq!(f.failed_commits(), 0);
        assert!(f.log_text().is_empty(), "{}", f.log_text());
        // With the tables there, the deletion is committed.
        let dir = tempfile::tempdir().unwrap();
        let mut add = Batch::new(Family::Inet);
        add.add_elements(TABLE, sets::MASQ4, std::slice::from_ref(&el));
        commit_probing(&mut f, &add, dir.path()).unwrap();
        commit_deletions(&mut f, &del).unwrap();
        assert!(
            f.list_elements(Family::Inet, TABLE, sets::MASQ4)
                .unwrap()
                .is_empty()
        );
        assert_eq!(f.failed_commits(), 0);
    }

    #[test]
    fn an_existing_table_is_replaced_and_a_lost_one_costs_one_failed_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = FakeBackend::new();
        // An old version of the table, without a set of today's: replaced,
        // prelude and all, when a batch needs that set.
        let mut old = ruleset();
        for t in &mut old.tables {
            t.comment = Some("rnet v4".into());
            t.sets.retain(|s| s.name != sets::LOCALNET);
        }
        f.apply(&old).unwrap();
        let mut a = Batch::new(Family::Inet);
        a.add_elements(
            TABLE,
            sets::LOCALNET,
            &[Element::new(KeyPart::IfName("br0".into()))],
        );
        commit(&mut f, &a, dir.path()).unwrap();
        assert!(is_current(&mut f).unwrap());
        assert!(f.log_text().contains("delete table inet rnet"));
        // After a flush: the first try fails (ENOENT), then, under the lock,
        // the restore without a second failed try.
        f.flush_ruleset();
        f.clear_log();
        let before = f.failed_commits();
        commit(&mut f, &a, dir.path()).unwrap();
        assert_eq!(f.failed_commits() - before, 1);
        assert!(!f.log_text().contains("delete table"), "{}", f.log_text());
        assert!(is_current(&mut f).unwrap());
    }

    #[test]
    fn commit_restores_everyone_after_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = FakeBackend::new();
        // Attachment A: journaled, committed (slow path creates the tables).
        let mut a = Batch::new(Family::Inet);
        a.add_elements_excl(TABLE, sets::HOSTPORTS4, &[hp(8080, 2, "n/a/eth0")]);
        journal_write(dir.path(), &Journal::from_batch("portmap", "n/a/eth0", &a)).unwrap();
        commit(&mut f, &a, dir.path()).unwrap();
        assert!(is_current(&mut f).unwrap());
        assert_eq!(
            f.list_elements(Family::Inet, TABLE, sets::HOSTPORTS4)
                .unwrap()
                .len(),
            1
        );
        // A bridge element without journal, carried over on a version change.
        let mut m = Batch::new(Family::Inet);
        m.add_elements(
            TABLE,
            sets::MASQ4,
            &[Element::new(KeyPart::Ipv4(Ipv4Addr::new(10, 0, 0, 9)))],
        );
        f.commit(&m).unwrap();
        // Flush: everything gone. B's ADD restores A, then adds B.
        f.flush_ruleset();
        f.clear_log();
        let mut b = Batch::new(Family::Inet);
        b.add_elements_excl(TABLE, sets::HOSTPORTS4, &[hp(8081, 3, "n/b/eth0")]);
        journal_write(dir.path(), &Journal::from_batch("portmap", "n/b/eth0", &b)).unwrap();
        commit(&mut f, &b, dir.path()).unwrap();
        let els = f
            .list_elements(Family::Inet, TABLE, sets::HOSTPORTS4)
            .unwrap();
        assert_eq!(els.len(), 2, "{els:?}");
        // One apply (tables + A's element together), then B's batch.
        let log = f.log_text();
        assert!(
            log.contains("elements = { tcp . 8080 comment \"n/a/eth0\" : 10.0.0.2 . 80 }"),
            "{log}"
        );
        assert!(
            log.contains("create element inet rnet hostports4 { tcp . 8081"),
            "{log}"
        );
        // The un-journaled masq element was lost with the flush (nothing to carry).
        assert!(
            f.list_elements(Family::Inet, TABLE, sets::MASQ4)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn outdated_table_is_replaced_with_elements_carried() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = FakeBackend::new();
        // A v1 table as the bridge plugin made it: no port maps.
        let v1 = Ruleset::new().table(
            Table::new(Family::Inet, TABLE)
                .comment("rnet v1")
                .set(Set::new(sets::MASQ4, "ipv4_addr"))
                .chain(Chain::new("postrouting")),
        );
        f.apply(&v1).unwrap();
        let mut m = Batch::new(Family::Inet);
        m.add_elements(
            TABLE,
            sets::MASQ4,
            &[Element::new(KeyPart::Ipv4(Ipv4Addr::new(10, 0, 0, 9)))],
        );
        f.commit(&m).unwrap();
        assert!(!is_current(&mut f).unwrap());
        let mut a = Batch::new(Family::Inet);
        a.add_elements_excl(TABLE, sets::HOSTPORTS4, &[hp(8080, 2, "n/a/eth0")]);
        commit(&mut f, &a, dir.path()).unwrap();
        assert!(is_current(&mut f).unwrap());
        assert_eq!(
            f.list_elements(Family::Inet, TABLE, sets::MASQ4)
                .unwrap()
                .len(),
            1
        );
        // reload is unconditional and keeps everything.
        let r = reload(&mut f, dir.path()).unwrap();
        assert_eq!(r.carried, 2);
        assert_eq!(
            f.list_elements(Family::Inet, TABLE, sets::HOSTPORTS4)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn conflicting_journals_fall_back_record_by_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = FakeBackend::new();
        // Two stale records claim tcp/8080 with different targets.
        for (tag, last) in [("n/a/eth0", 2), ("n/b/eth0", 3)] {
            let mut b = Batch::new(Family::Inet);
            b.add_elements(TABLE, sets::HOSTPORTS4, &[hp(8080, last, tag)]);
            b.add_elements(
                TABLE,
                sets::PUBLISHED4,
                &[Element::new(KeyPart::Ipv4(Ipv4Addr::new(10, 0, 0, last)))],
            );
            journal_write(dir.path(), &Journal::from_batch("portmap", tag, &b)).unwrap();
        }
        // The model dedups by key, so the first record wins in one apply.
        let r = reload(&mut f, dir.path()).unwrap();
        assert_eq!(r.journaled, 3);
        assert_eq!(
            f.list_elements(Family::Inet, TABLE, sets::PUBLISHED4)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn errors_keep_errno() {
        let e = RnetError::from(NftError::InvalidArgument("x".into()));
        assert_eq!(e.errno(), None);
        let dir = tempfile::tempdir().unwrap();
        let mut f = FakeBackend::new();
        let mut a = Batch::new(Family::Inet);
        a.add_elements_excl(TABLE, sets::HOSTPORTS4, &[hp(8080, 2, "n/a/eth0")]);
        commit(&mut f, &a, dir.path()).unwrap();
        let err = commit(&mut f, &a, dir.path()).unwrap_err();
        assert!(err.is_exists(), "{err}");
    }

    fn chains_of(f: &FakeBackend, family: Family) -> Vec<String> {
        f.state()
            .tables
            .iter()
            .filter(|t| t.family == family && t.name == TABLE)
            .flat_map(|t| t.chains.iter().map(|c| c.name.clone()))
            .collect()
    }

    fn one(set: &str, key: KeyPart) -> Batch {
        let mut b = Batch::new(Family::Inet);
        b.add_elements(TABLE, set, &[Element::new(key)]);
        b
    }

    #[test]
    fn feature_chains_exist_only_while_used() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = FakeBackend::new();
        let masq = one(sets::MASQ4, KeyPart::Ipv4(Ipv4Addr::new(10, 0, 0, 2)));
        commit(&mut f, &masq, dir.path()).unwrap();
        let filters = |f: &FakeBackend| -> Vec<String> {
            ["pm_raw", "pm_guard", "forward"]
                .iter()
                .filter(|c| chains_of(f, Family::Inet).iter().any(|x| x == *c))
                .map(|c| (*c).to_owned())
                .chain(chains_of(f, Family::Bridge))
                .collect()
        };
        assert!(filters(&f).is_empty(), "{:?}", filters(&f));
        // The first isolated bridge brings the forward chain, nothing else.
        let iso = one(sets::ISOLATED, KeyPart::IfName("br0".into()));
        f.clear_log();
        commit(&mut f, &iso, dir.path()).unwrap();
        assert_eq!(filters(&f), ["forward"]);
        assert!(
            f.log_text()
                .contains("add chain inet rnet forward { type filter hook forward")
        );
        // The second user finds it: no second creation.
        f.clear_log();
        commit(
            &mut f,
            &one(sets::ISOLATED, KeyPart::IfName("br1".into())),
            dir.path(),
        )
        .unwrap();
        assert!(!f.log_text().contains("add chain"), "{}", f.log_text());
        // A spoof-checked port brings the bridge table's chain.
        let mut sp = Batch::new(Family::Bridge);
        sp.add_elements(
            TABLE,
            sets::SPOOF_PORTS,
            &[Element::new(KeyPart::IfName("veth1".into()))],
        );
        commit(&mut f, &sp, dir.path()).unwrap();
        assert_eq!(filters(&f), ["forward", "prerouting"]);
        // Still used: GC keeps them. Emptied: GC removes exactly those.
        assert_eq!(prune_features(&mut f).unwrap(), 0);
        let mut d = Batch::new(Family::Bridge);
        d.delete_elements(
            TABLE,
            sets::SPOOF_PORTS,
            &[Element::new(KeyPart::IfName("veth1".into()))],
        );
        f.commit(&d).unwrap();
        assert_eq!(prune_features(&mut f).unwrap(), 1);
        assert_eq!(filters(&f), ["forward"]);
        // After a flush the restore renders the chains of features in use.
        f.flush_ruleset();
        let pub4 = one(sets::PUBLISHED4, KeyPart::Ipv4(Ipv4Addr::new(10, 0, 0, 3)));
        journal_write(
            dir.path(),
            &Journal::from_batch("portmap", "n/c/eth0", &pub4),
        )
        .unwrap();
        let iso_j = Journal::from_batch("bridge", "n/b/eth0", &iso);
        journal_write(dir.path(), &iso_j).unwrap();
        commit(&mut f, &masq, dir.path()).unwrap();
        assert_eq!(filters(&f), ["pm_guard", "forward"]);
    }

    #[test]
    fn v4_tables_are_upgraded_with_their_elements() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = FakeBackend::new();
        // Session 4's layout: no `localnet` set, every filter chain always there.
        let mut v4 = ruleset();
        for t in &mut v4.tables {
            t.comment = Some("rnet v4".into());
            t.sets.retain(|s| s.name != sets::LOCALNET);
            for feat in features() {
                if feat.family == t.family {
                    t.chains.extend(feat.chains());
                }
            }
        }
        f.apply(&v4).unwrap();
        let masq = one(sets::MASQ4, KeyPart::Ipv4(Ipv4Addr::new(10, 0, 0, 2)));
        f.commit(&masq).unwrap();
        // A bridge ADD works on the old table as it is.
        let masq2 = one(sets::MASQ4, KeyPart::Ipv4(Ipv4Addr::new(10, 0, 0, 5)));
        commit(&mut f, &masq2, dir.path()).unwrap();
        assert!(!is_current(&mut f).unwrap());
        // A port mapper ADD needs `localnet`: the table is replaced by v5,
        // elements kept, only the chains of features in use.
        let mut pm = one(sets::PUBLISHED4, KeyPart::Ipv4(Ipv4Addr::new(10, 0, 0, 2)));
        pm.add_elements(
            TABLE,
            sets::LOCALNET,
            &[Element::new(KeyPart::IfName("cni0".into()))],
        );
        commit(&mut f, &pm, dir.path()).unwrap();
        assert!(is_current(&mut f).unwrap());
        assert_eq!(
            f.list_elements(Family::Inet, TABLE, sets::MASQ4)
                .unwrap()
                .len(),
            2
        );
        let chains = chains_of(&f, Family::Inet);
        assert!(chains.iter().any(|c| c == "pm_guard") && chains.iter().any(|c| c == "pm_raw"));
        assert!(!chains.iter().any(|c| c == "forward"), "{chains:?}");
        assert!(chains_of(&f, Family::Bridge).is_empty());
    }

    #[test]
    fn check_names_missing_feature_chains() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = FakeBackend::new();
        let pub4 = one(sets::PUBLISHED4, KeyPart::Ipv4(Ipv4Addr::new(10, 0, 0, 3)));
        commit(&mut f, &pub4, dir.path()).unwrap();
        assert!(missing_feature_chains(&mut f, &pub4).unwrap().is_empty());
        let at = f.generation().unwrap();
        assert!(
            f.delete_chains_at(at, &[(Family::Inet, TABLE, "pm_guard")])
                .unwrap()
        );
        let m = missing_feature_chains(&mut f, &pub4).unwrap();
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("pm_guard") && m[0].contains("published-address guard"));
        // The next commit that adds to the set puts it back.
        commit(&mut f, &pub4, dir.path()).unwrap();
        assert!(missing_feature_chains(&mut f, &pub4).unwrap().is_empty());
    }

    #[test]
    fn prune_deletes_only_at_the_generation_it_read() {
        let mut f = FakeBackend::new();
        let mut model = ruleset();
        with_features(&mut model);
        f.apply(&model).unwrap();
        // No element anywhere: with_features added nothing.
        assert!(chains_of(&f, Family::Bridge).is_empty());
        f.put_chains(Family::Inet, TABLE, &guard_chains()).unwrap();
        let at = f.generation().unwrap();
        f.bump_generation();
        assert!(
            !f.delete_chains_at(at, &[(Family::Inet, TABLE, "pm_guard")])
                .unwrap()
        );
        assert!(chains_of(&f, Family::Inet).iter().any(|c| c == "pm_guard"));
        assert_eq!(prune_features(&mut f).unwrap(), 1);
        assert!(!chains_of(&f, Family::Inet).iter().any(|c| c == "pm_guard"));
    }

    #[test]
    fn long_or_odd_tags_are_hashed() {
        assert_eq!(comment_for("n/c/eth0"), "n/c/eth0");
        let c = comment_for(&"a".repeat(200));
        assert!(c.starts_with('#') && c.len() == 17);
    }
}
