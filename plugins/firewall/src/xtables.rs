//! Admitting containers through another tool's iptables `FORWARD` chain.
//!
//! An `accept` in rnet's nftables table does not override a `drop` in
//! another table at the same hook: every base chain at the hook must let the
//! packet through. Docker (and many hardened hosts) set the iptables
//! `filter FORWARD` policy to `DROP`, which silently cuts every container of
//! every other tool off from the outside. The reference `firewall` plugin
//! (iptables backend) therefore always inserts a jump to its `CNI-FORWARD`
//! chain first in `FORWARD`; netavark does the same.
//!
//! rnet does it only where it is needed, and with the tool that owns the
//! chain: when iptables' `filter FORWARD` chain drops by default, for the
//! iptables-nft variant (seen over netlink as `ip filter FORWARD` with policy
//! drop: one GET, no exec on hosts without it) and for the legacy variant
//! (`/proc/net/ip_tables_names` lists `filter`, then `iptables-legacy -S
//! FORWARD`), per family. It then drives that variant's own executable (so
//! the rules stay in a form the variant and its other users, Docker among
//! them, can read):
//!
//! ```text
//! -I FORWARD 1 -m comment --comment "rnet: admit rnet containers" -j RNET-FORWARD
//! -I RNET-FORWARD 1 -m comment --comment "rnet: admin overrides" -j <iptablesAdminChainName, default CNI-ADMIN>
//! -A RNET-FORWARD -s IP -m comment --comment TAG -j ACCEPT
//! -A RNET-FORWARD -d IP -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment TAG -j ACCEPT
//! -A RNET-FORWARD -d IP -m conntrack --ctstate DNAT -m comment --comment TAG -j ACCEPT
//! ```
//!
//! The first two per-address rules are the reference's; the third admits
//! connections that a port mapper DNATed to the container (published ports),
//! which the reference leaves to the policy. `TAG` is the attachment
//! (`<network>/<containerID>/<ifname>`): DEL removes its rules (from
//! prevResult, or found by the tag), GC removes those of attachments that are
//! no longer valid. The admin chain lets an administrator put overrides
//! before rnet's accepts, as with the reference.

use ipnet::IpNet;
use rnet_cni::{CniError, code};
use rnet_nft::{ChainPolicy, Family, Nft};
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;

/// rnet's chain in iptables' `filter` table.
pub const CHAIN: &str = "RNET-FORWARD";
/// The admin chain's default name (the reference's).
pub const DEFAULT_ADMIN_CHAIN: &str = "CNI-ADMIN";
const JUMP_COMMENT: &str = "rnet: admit rnet containers";
const ADMIN_COMMENT: &str = "rnet: admin overrides";

/// One iptables variant and family that needs (or holds) rnet's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    /// The executable (`iptables-nft`, `ip6tables-legacy`, ...).
    pub bin: PathBuf,
    /// IPv6 (`ip6tables`).
    pub v6: bool,
}

impl Tool {
    fn run(&self, args: &[&str]) -> Result<std::process::Output, CniError> {
        Command::new(&self.bin)
            .arg("-w")
            .arg("5")
            .args(args)
            .output()
            .map_err(|e| {
                CniError::new(
                    code::NFTABLES,
                    format!(
                        "cannot run {}: {e}; install iptables or set the FORWARD policy to ACCEPT",
                        self.bin.display()
                    ),
                )
            })
    }

    /// Runs and requires success.
    fn must(&self, args: &[&str]) -> Result<(), CniError> {
        let out = self.run(args)?;
        if out.status.success() {
            return Ok(());
        }
        Err(CniError::new(
            code::NFTABLES,
            format!(
                "{} {} failed: {}",
                self.bin.display(),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }

    /// Runs; `true` on exit status 0 (for `-C`, `-S`, `-N`).
    fn ok(&self, args: &[&str]) -> Result<bool, CniError> {
        Ok(self.run(args)?.status.success())
    }

    fn ensure_chain(&self, chain: &str) -> Result<(), CniError> {
        if self.ok(&["-t", "filter", "-S", chain])? {
            return Ok(());
        }
        // Another process may create it between the two calls.
        if self.ok(&["-t", "filter", "-N", chain])? || self.ok(&["-t", "filter", "-S", chain])? {
            return Ok(());
        }
        Err(CniError::new(
            code::NFTABLES,
            format!("{}: cannot create chain {chain}", self.bin.display()),
        ))
    }

    fn ensure_first(&self, chain: &str, rule: &[&str]) -> Result<(), CniError> {
        let mut check = vec!["-t", "filter", "-C", chain];
        check.extend_from_slice(rule);
        if self.ok(&check)? {
            return Ok(());
        }
        let mut insert = vec!["-t", "filter", "-I", chain, "1"];
        insert.extend_from_slice(rule);
        self.must(&insert)
    }

    /// rnet's chain, its jump first in `FORWARD` and the admin chain's jump
    /// first in it.
    fn setup(&self, admin: &str) -> Result<(), CniError> {
        self.ensure_chain(CHAIN)?;
        self.ensure_chain(admin)?;
        self.ensure_first(
            CHAIN,
            &["-m", "comment", "--comment", ADMIN_COMMENT, "-j", admin],
        )?;
        self.ensure_first(
            "FORWARD",
            &["-m", "comment", "--comment", JUMP_COMMENT, "-j", CHAIN],
        )
    }

    /// The rules of rnet's chain (as `-S` prints them, without `-A CHAIN`)
    /// whose comment `drop` selects.
    fn tagged_rules(&self, drop: &dyn Fn(&str) -> bool) -> Result<Vec<Vec<String>>, CniError> {
        let out = self.run(&["-t", "filter", "-S", CHAIN])?;
        if !out.status.success() {
            return Ok(Vec::new());
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let words = split_words(l);
                let tag = words
                    .windows(2)
                    .find(|w| w[0] == "--comment")
                    .map(|w| w[1].clone())?;
                (words.first().map(String::as_str) == Some("-A") && drop(&tag))
                    .then(|| words.into_iter().skip(2).collect())
            })
            .collect())
    }

    fn delete_rule(&self, rule: &[String]) -> Result<(), CniError> {
        let mut args = vec!["-t", "filter", "-D", CHAIN];
        args.extend(rule.iter().map(String::as_str));
        // Gone already is fine (DEL is idempotent).
        let _ = self.run(&args)?;
        Ok(())
    }
}

/// Splits an `iptables -S` line into words, honouring double quotes.
fn split_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut any) = (false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The per-address rules (without the chain), as `iptables` arguments:
/// from the address; to it when related or established; to it when DNATed.
fn address_rules(ip: &IpNet, tag: &str) -> Vec<Vec<String>> {
    let host = if ip.addr().is_ipv4() { 32 } else { 128 };
    let a = format!("{}/{host}", ip.addr());
    [
        ("-s", None),
        ("-d", Some("RELATED,ESTABLISHED")),
        ("-d", Some("DNAT")),
    ]
    .into_iter()
    .map(|(dir, state)| {
        let mut r = vec![dir, a.as_str()];
        if let Some(st) = state {
            r.extend(["-m", "conntrack", "--ctstate", st]);
        }
        r.extend(["-m", "comment", "--comment", tag, "-j", "ACCEPT"]);
        r.into_iter().map(str::to_owned).collect()
    })
    .collect()
}

fn find_bin(names: &[&str]) -> Option<PathBuf> {
    names.iter().find_map(|n| {
        ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .map(|d| PathBuf::from(d).join(n))
            .find(|p| p.is_file())
    })
}

fn nft_bin(v6: bool) -> Option<PathBuf> {
    if v6 {
        find_bin(&["ip6tables-nft", "ip6tables"])
    } else {
        find_bin(&["iptables-nft", "iptables"])
    }
}

fn legacy_bin(v6: bool) -> Option<PathBuf> {
    if v6 {
        find_bin(&["ip6tables-legacy"])
    } else {
        find_bin(&["iptables-legacy"])
    }
}

/// Does the legacy (x_tables) `filter` table exist in this namespace?
fn legacy_filter_loaded(v6: bool) -> bool {
    let f = if v6 {
        "/proc/net/ip6_tables_names"
    } else {
        "/proc/net/ip_tables_names"
    };
    std::fs::read_to_string(f).is_ok_and(|s| s.lines().any(|l| l.trim() == "filter"))
}

fn family(v6: bool) -> Family {
    if v6 { Family::Ip6 } else { Family::Ip }
}

/// The variants (nft and legacy) of the given families for which `by_nft`
/// (asked over netlink, for the nft variant) or `by_legacy` (asked through
/// the legacy executable, only where the legacy `filter` table is loaded)
/// holds.
fn variants(
    nft: &mut Nft,
    families: &[bool],
    by_nft: &dyn Fn(&mut Nft, Family) -> bool,
    by_legacy: &dyn Fn(&Tool) -> bool,
) -> Vec<Tool> {
    let mut out = Vec::new();
    for &v6 in families {
        if by_nft(nft, family(v6)) {
            if let Some(bin) = nft_bin(v6) {
                out.push(Tool { bin, v6 });
            }
        }
        if legacy_filter_loaded(v6) {
            if let Some(t) = legacy_bin(v6).map(|bin| Tool { bin, v6 }) {
                if by_legacy(&t) {
                    out.push(t);
                }
            }
        }
    }
    out
}

/// The variants whose `filter FORWARD` chain drops by default, for the
/// families in `families` (v4 = false, v6 = true).
pub fn dropping(nft: &mut Nft, families: &[bool]) -> Vec<Tool> {
    variants(
        nft,
        families,
        &|nft, f| {
            nft.chain_policy(f, "filter", "FORWARD")
                .is_ok_and(|p| p == Some(ChainPolicy::Drop))
        },
        &|t| {
            t.run(&["-t", "filter", "-S", "FORWARD"])
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("-P FORWARD DROP"))
        },
    )
}

/// The variants holding rnet's chain (for DEL and GC).
pub fn holding(nft: &mut Nft) -> Vec<Tool> {
    variants(
        nft,
        &[false, true],
        &|nft, f| nft.chain_exists(f, "filter", CHAIN).unwrap_or(false),
        &|t| t.ok(&["-t", "filter", "-S", CHAIN]).unwrap_or(false),
    )
}

fn ips_of(ips: &[IpNet], v6: bool) -> impl Iterator<Item = &IpNet> {
    ips.iter().filter(move |i| i.addr().is_ipv6() == v6)
}

/// Admits `ips` through every dropping variant; on failure removes what it
/// added and reports the error.
pub fn admit(nft: &mut Nft, ips: &[IpNet], tag: &str, admin: &str) -> Result<(), CniError> {
    let fams: Vec<bool> = [false, true]
        .into_iter()
        .filter(|v6| ips_of(ips, *v6).next().is_some())
        .collect();
    for t in dropping(nft, &fams) {
        t.setup(admin)?;
        let mut added: Vec<Vec<String>> = Vec::new();
        for ip in ips_of(ips, t.v6) {
            for rule in address_rules(ip, tag) {
                let r: Vec<&str> = rule.iter().map(String::as_str).collect();
                let mut check = vec!["-t", "filter", "-C", CHAIN];
                check.extend_from_slice(&r);
                if t.ok(&check)? {
                    continue;
                }
                let mut append = vec!["-t", "filter", "-A", CHAIN];
                append.extend_from_slice(&r);
                if let Err(e) = t.must(&append) {
                    for done in &added {
                        let _ = t.delete_rule(done);
                    }
                    return Err(e);
                }
                added.push(rule);
            }
        }
    }
    Ok(())
}

/// Removes the attachment's rules (by its addresses when known, and by its
/// tag in any case). Idempotent.
pub fn remove(nft: &mut Nft, ips: &[IpNet], tag: &str) -> Result<(), CniError> {
    for t in holding(nft) {
        for ip in ips_of(ips, t.v6) {
            for rule in address_rules(ip, tag) {
                t.delete_rule(&rule)?;
            }
        }
        for rule in t.tagged_rules(&|c| c == tag)? {
            t.delete_rule(&rule)?;
        }
    }
    Ok(())
}

/// Verifies that every dropping variant holds the attachment's rules.
pub fn check(nft: &mut Nft, ips: &[IpNet], tag: &str) -> Result<(), CniError> {
    let fams: Vec<bool> = [false, true]
        .into_iter()
        .filter(|v6| ips_of(ips, *v6).next().is_some())
        .collect();
    for t in dropping(nft, &fams) {
        let mut jump = vec!["-t", "filter", "-C", "FORWARD"];
        jump.extend_from_slice(&["-m", "comment", "--comment", JUMP_COMMENT, "-j", CHAIN]);
        if !t.ok(&jump)? {
            return Err(CniError::new(
                code::NFTABLES,
                format!(
                    "{}: FORWARD drops by default and has no jump to {CHAIN}: the container's \
                     forwarded traffic is dropped; run DEL and ADD, or `rnet reload`",
                    t.bin.display()
                ),
            ));
        }
        for ip in ips_of(ips, t.v6) {
            for rule in address_rules(ip, tag) {
                let mut c = vec!["-t", "filter", "-C", CHAIN];
                c.extend(rule.iter().map(String::as_str));
                if !t.ok(&c)? {
                    return Err(CniError::new(
                        code::NFTABLES,
                        format!(
                            "{}: rule `-A {CHAIN} {}` is missing: FORWARD drops by default, so \
                             the container's forwarded traffic is dropped",
                            t.bin.display(),
                            rule.join(" ")
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Removes the rules of `network`'s attachments that are not in `valid`
/// (tags `<network>/<containerID>/<ifname>`).
pub fn gc(nft: &mut Nft, network: &str, valid: &HashSet<String>) -> Result<(), CniError> {
    let prefix = format!("{network}/");
    for t in holding(nft) {
        for rule in t.tagged_rules(&|c| c.starts_with(&prefix) && !valid.contains(c))? {
            t.delete_rule(&rule)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn words_honour_quotes() {
        assert_eq!(
            split_words(
                r#"-A RNET-FORWARD -s 10.0.0.2/32 -m comment --comment "n/c 1/eth0" -j ACCEPT"#
            ),
            vec![
                "-A",
                "RNET-FORWARD",
                "-s",
                "10.0.0.2/32",
                "-m",
                "comment",
                "--comment",
                "n/c 1/eth0",
                "-j",
                "ACCEPT"
            ]
        );
        assert_eq!(split_words(r#"a "" b"#), vec!["a", "", "b"]);
        assert_eq!(split_words(r#"x "q\"t""#), vec!["x", "q\"t"]);
    }

    #[test]
    fn address_rules_are_host_routes_with_the_tag() {
        let r = address_rules(&"10.1.2.3/24".parse().unwrap(), "n/c/eth0");
        assert_eq!(r.len(), 3);
        assert_eq!(r[0][..2], ["-s", "10.1.2.3/32"]);
        assert!(r.iter().all(|x| x.contains(&"n/c/eth0".to_owned())));
        let r6 = address_rules(&"fd00::5/64".parse().unwrap(), "t");
        assert_eq!(r6[1][1], "fd00::5/128");
    }
}
