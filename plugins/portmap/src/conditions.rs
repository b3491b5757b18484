//! `conditionsV4` / `conditionsV6`: extra match conditions a published port
//! must meet, in the reference's two forms, turned into one validated nft
//! condition set per family ([`rnet_nft::rnet::cond::CondChain`]).
//!
//! # Which form
//!
//! * `"backend": "nftables"`: nft match expressions (`["ip saddr 1.2.3.4"]`,
//!   `"iifname \"eth0\""`); the elements are joined by spaces and parsed by
//!   the strict grammar of [`rnet_nft::rnet::cond`].
//! * `"backend": "iptables"`: iptables match arguments, one argument per
//!   element (`["-s", "1.2.3.4", "!", "-i", "eth0"]`), translated here into
//!   nft expressions (a subset, see [`iptables_to_nft`]), then parsed by the
//!   same grammar.
//! * no `backend`: the form is detected per list the way the reference
//!   detects it (`detectBackendOfConditions`): a first element starting
//!   with `-` or `!` is iptables syntax, anything else nft syntax. (The
//!   reference then refuses nft syntax on hosts that have iptables, because
//!   its default backend is iptables; rnet always enforces in nftables, so it
//!   accepts both.)
//!
//! A list in the other form than an explicit `backend` is refused, like
//! the reference does.
//!
//! # Scope: per attachment, not host-wide
//!
//! The reference puts the conditions on its shared jump rules, so the last
//! container added decides the conditions of *every* published port on the
//! host. rnet applies a config's conditions to that attachment's ports only
//! (the port's verdict-map element sends it to its own condition chain).

use rnet_cni::CniError;
use rnet_nft::rnet::cond::{CondChain, CondError, CondFamily, FIB_TYPES};

/// What the iptables form accepts, for error messages.
pub const SUPPORTED_IPTABLES: &str = "supported iptables arguments: -s/--source and \
     -d/--destination ADDR[/LEN][,...], -i/--in-interface and -o/--out-interface NAME (a trailing \
     + is a wildcard), -p/--protocol PROTO, --sport/--dport PORT[:PORT] after -p tcp|udp|sctp, -m \
     comment --comment TEXT (ignored), -m addrtype --src-type/--dst-type TYPE[,...], -m mark --mark \
     VALUE[/MASK], -m tcp|udp|sctp; each may be preceded by !";

/// Why an iptables condition list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IptablesError {
    /// An argument outside the supported subset.
    #[error("unsupported iptables argument {token:?}; {SUPPORTED_IPTABLES}")]
    Unsupported {
        /// The argument.
        token: String,
    },
    /// An option without its value.
    #[error("{option} needs a value")]
    MissingValue {
        /// The option.
        option: String,
    },
    /// A value that is not what the option takes.
    #[error("{value:?} is not a valid value for {option}: {why}")]
    BadValue {
        /// The option.
        option: String,
        /// The value.
        value: String,
        /// What it should be.
        why: String,
    },
    /// An option used without the match or protocol it belongs to.
    #[error("{option} needs {needs} before it")]
    Needs {
        /// The option.
        option: String,
        /// What must come first.
        needs: String,
    },
    /// `!` where nothing can be negated.
    #[error("\"!\" {0}")]
    Negation(&'static str),
    /// The translated expression failed the nft grammar (e.g. wrong family).
    #[error(transparent)]
    Nft(#[from] CondError),
}

fn take<'a>(toks: &'a [String], i: &mut usize, option: &str) -> Result<&'a str, IptablesError> {
    let v = toks.get(*i).ok_or_else(|| IptablesError::MissingValue {
        option: option.to_owned(),
    })?;
    *i += 1;
    Ok(v)
}

fn bad(option: &str, value: &str, why: impl Into<String>) -> IptablesError {
    IptablesError::BadValue {
        option: option.to_owned(),
        value: value.to_owned(),
        why: why.into(),
    }
}

/// Only these characters may appear in a value: the nft grammar parses the
/// result again, but a value must not turn into several tokens.
fn plain(option: &str, value: &str, extra: &[char]) -> Result<(), IptablesError> {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
    {
        Ok(())
    } else {
        Err(bad(
            option,
            value,
            "expected a single value without spaces, quotes or braces",
        ))
    }
}

fn op(neg: bool) -> &'static str {
    if neg { "!= " } else { "" }
}

/// Translates iptables match arguments into nft match expressions (not yet
/// canonical: pass the result to [`rnet_nft::rnet::cond::canonical`]).
///
/// Supported (each optionally preceded by `!`): `-s`/`--source`/`--src`,
/// `-d`/`--destination`/`--dst` (addresses or prefixes, comma lists),
/// `-i`/`--in-interface`, `-o`/`--out-interface` (`+` wildcard → `*`),
/// `-p`/`--protocol`, `--sport`/`--source-port`, `--dport`/
/// `--destination-port` (`N`, `N:M`, `:M`, `N:`, after `-p tcp|udp|sctp`),
/// `-m comment --comment X` (dropped), `-m addrtype --src-type/--dst-type`,
/// `-m mark --mark V[/M]`, `-m tcp|udp|sctp` (implied by `-p`).
pub fn iptables_to_nft(fam: CondFamily, toks: &[String]) -> Result<String, IptablesError> {
    let ipw = match fam {
        CondFamily::V4 => "ip",
        CondFamily::V6 => "ip6",
    };
    let mut out: Vec<String> = Vec::new();
    let mut neg = false;
    let mut proto: Option<String> = None;
    let mut module: Option<String> = None;
    let mut i = 0;
    while let Some(t) = toks.get(i) {
        i += 1;
        let t = t.as_str();
        if t == "!" {
            if neg {
                return Err(IptablesError::Negation("cannot be repeated"));
            }
            neg = true;
            continue;
        }
        match t {
            "-s" | "--source" | "--src" | "-d" | "--destination" | "--dst" => {
                let v = take(toks, &mut i, t)?;
                plain(t, v, &['.', ':', '/', ','])?;
                let dir = if matches!(t, "-s" | "--source" | "--src") {
                    "saddr"
                } else {
                    "daddr"
                };
                out.push(format!("{ipw} {dir} {}{v}", op(neg)));
            }
            "-i" | "--in-interface" | "-o" | "--out-interface" => {
                let v = take(toks, &mut i, t)?;
                plain(t, v, &['_', '.', '-', ':', '+'])?;
                let name = match v.strip_suffix('+') {
                    Some(stem) => format!("{stem}*"),
                    None => v.to_owned(),
                };
                if name.contains('+') {
                    return Err(bad(t, v, "'+' is only a wildcard at the end of the name"));
                }
                let sel = if matches!(t, "-i" | "--in-interface") {
                    "iifname"
                } else {
                    "oifname"
                };
                out.push(format!("{sel} {}\"{name}\"", op(neg)));
            }
            "-p" | "--protocol" => {
                let v = take(toks, &mut i, t)?;
                plain(t, v, &['-'])?;
                let p = v.to_ascii_lowercase();
                if p == "all" || p == "0" {
                    if neg {
                        return Err(IptablesError::Negation("cannot negate -p all"));
                    }
                } else {
                    out.push(format!("meta l4proto {}{p}", op(neg)));
                    if !neg {
                        proto = Some(p);
                    }
                }
            }
            "--sport" | "--source-port" | "--dport" | "--destination-port" => {
                let Some(p) = proto
                    .as_deref()
                    .filter(|p| matches!(*p, "tcp" | "udp" | "sctp"))
                else {
                    return Err(IptablesError::Needs {
                        option: t.to_owned(),
                        needs: "-p tcp, -p udp or -p sctp (not negated)".into(),
                    });
                };
                let v = take(toks, &mut i, t)?;
                plain(t, v, &[':'])?;
                let range = match v.split_once(':') {
                    None => v.to_owned(),
                    Some((a, b)) => {
                        let a = if a.is_empty() { "0" } else { a };
                        let b = if b.is_empty() { "65535" } else { b };
                        format!("{a}-{b}")
                    }
                };
                let dir = if matches!(t, "--sport" | "--source-port") {
                    "sport"
                } else {
                    "dport"
                };
                out.push(format!("{p} {dir} {}{range}", op(neg)));
            }
            "-m" | "--match" => {
                if neg {
                    return Err(IptablesError::Negation(
                        "goes before a match option (\"-m mark ! --mark 1\"), not before -m",
                    ));
                }
                let m = take(toks, &mut i, t)?.to_ascii_lowercase();
                match m.as_str() {
                    "comment" | "addrtype" | "mark" => {}
                    "tcp" | "udp" | "sctp" => {
                        if proto.as_deref() != Some(m.as_str()) {
                            return Err(IptablesError::Needs {
                                option: format!("-m {m}"),
                                needs: format!("-p {m}"),
                            });
                        }
                    }
                    _ => {
                        return Err(IptablesError::Unsupported {
                            token: format!("-m {m}"),
                        });
                    }
                }
                module = Some(m);
                continue;
            }
            "--comment" => {
                if module.as_deref() != Some("comment") {
                    return Err(IptablesError::Needs {
                        option: t.to_owned(),
                        needs: "-m comment".into(),
                    });
                }
                if neg {
                    return Err(IptablesError::Negation("cannot negate a comment"));
                }
                take(toks, &mut i, t)?;
            }
            "--src-type" | "--dst-type" => {
                if module.as_deref() != Some("addrtype") {
                    return Err(IptablesError::Needs {
                        option: t.to_owned(),
                        needs: "-m addrtype".into(),
                    });
                }
                let v = take(toks, &mut i, t)?;
                plain(t, v, &[','])?;
                let mut types = Vec::new();
                for ty in v.split(',') {
                    let l = ty.to_ascii_lowercase();
                    if !FIB_TYPES.contains(&l.as_str()) {
                        return Err(bad(
                            t,
                            ty,
                            format!(
                                "supported address types: {}",
                                FIB_TYPES.join(", ").to_uppercase()
                            ),
                        ));
                    }
                    types.push(l);
                }
                let dir = if t == "--src-type" { "saddr" } else { "daddr" };
                out.push(format!(
                    "fib {dir} type {}{{ {} }}",
                    op(neg),
                    types.join(", ")
                ));
            }
            "--mark" => {
                if module.as_deref() != Some("mark") {
                    return Err(IptablesError::Needs {
                        option: t.to_owned(),
                        needs: "-m mark".into(),
                    });
                }
                let v = take(toks, &mut i, t)?;
                plain(t, v, &['/'])?;
                match v.split_once('/') {
                    Some((val, mask)) => out.push(format!(
                        "meta mark & {mask} {} {val}",
                        if neg { "!=" } else { "==" }
                    )),
                    None => out.push(format!("meta mark {}{v}", op(neg))),
                }
            }
            other => {
                return Err(IptablesError::Unsupported {
                    token: other.to_owned(),
                });
            }
        }
        neg = false;
    }
    if neg {
        return Err(IptablesError::Negation("at the end negates nothing"));
    }
    Ok(out.join(" "))
}

/// Is this list in iptables form (the reference's detection: the first
/// element starts with `-` or `!`)?
pub fn looks_like_iptables(list: &[String]) -> bool {
    list.first()
        .is_some_and(|s| s.starts_with('-') || s.starts_with('!'))
}

/// Parses one `conditionsV4`/`conditionsV6` list (empty elements already
/// dropped) for `backend`; `Ok(None)` for an empty list. Errors are CNI
/// error 7 naming the list, the token and what is supported.
pub fn parse(
    backend: Option<&str>,
    fam: CondFamily,
    list: &[String],
) -> Result<Option<CondChain>, CniError> {
    if list.is_empty() {
        return Ok(None);
    }
    let key = fam.key();
    let err = |why: String| CniError::invalid_config(format!("portmap: {key}: {why}"));
    let ipt = looks_like_iptables(list);
    match (backend, ipt) {
        (Some("nftables"), true) => {
            return Err(err(format!(
                "nftables backend was requested but {list:?} is in iptables syntax; write nft \
                 match expressions (e.g. [\"ip saddr 10.0.0.0/8\"]) or set \"backend\": \
                 \"iptables\""
            )));
        }
        (Some("iptables"), false) => {
            return Err(err(format!(
                "iptables backend was requested but {list:?} is not in iptables syntax (it must \
                 start with an option such as \"-s\" or with \"!\"); write iptables arguments \
                 (e.g. [\"-s\", \"10.0.0.0/8\"]) or set \"backend\": \"nftables\""
            )));
        }
        _ => {}
    }
    let text = if ipt {
        iptables_to_nft(fam, list).map_err(|e| err(e.to_string()))?
    } else {
        list.join(" ")
    };
    CondChain::new(fam, &text)
        .map(Some)
        .map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| (*x).to_owned()).collect()
    }

    fn ipt4(s: &[&str]) -> String {
        parse(Some("iptables"), CondFamily::V4, &v(s))
            .unwrap_or_else(|e| panic!("{s:?}: {}", e.msg))
            .unwrap()
            .matches
    }

    fn ipt4_err(s: &[&str]) -> String {
        let e = parse(Some("iptables"), CondFamily::V4, &v(s)).unwrap_err();
        assert_eq!(e.code, 7, "{e:?}");
        e.msg
    }

    #[test]
    fn iptables_translation() {
        let cases: &[(&[&str], &str)] = &[
            (&["-s", "1.2.3.4"], "ip saddr 1.2.3.4"),
            (&["--source", "10.1.0.0/16"], "ip saddr 10.1.0.0/16"),
            (
                &["--src", "1.2.3.4,10.0.0.0/8"],
                "ip saddr { 1.2.3.4, 10.0.0.0/8 }",
            ),
            (&["!", "-d", "10.0.0.0/8"], "ip daddr != 10.0.0.0/8"),
            (&["--destination", "192.0.2.1"], "ip daddr 192.0.2.1"),
            (&["-i", "eth0"], "iifname \"eth0\""),
            (&["--in-interface", "eth+"], "iifname \"eth*\""),
            (&["!", "-o", "docker0"], "oifname != \"docker0\""),
            (&["-p", "tcp"], "meta l4proto tcp"),
            (&["-p", "all"], ""),
            (&["!", "-p", "udp"], "meta l4proto != udp"),
            (&["-p", "6"], "meta l4proto 6"),
            (
                &["-p", "tcp", "--dport", "80"],
                "meta l4proto tcp tcp dport 80",
            ),
            (
                &["-p", "udp", "-m", "udp", "--sport", "1000:2000"],
                "meta l4proto udp udp sport 1000-2000",
            ),
            (
                &["-p", "sctp", "!", "--destination-port", ":1023"],
                "meta l4proto sctp sctp dport != 0-1023",
            ),
            (
                &["-p", "tcp", "--source-port", "1024:"],
                "meta l4proto tcp tcp sport 1024-65535",
            ),
            (
                &["-m", "comment", "--comment", "from the office; drop all"],
                "",
            ),
            (
                &["-m", "addrtype", "--dst-type", "LOCAL"],
                "fib daddr type local",
            ),
            (
                &["-m", "addrtype", "!", "--src-type", "LOCAL,BROADCAST"],
                "fib saddr type != { broadcast, local }",
            ),
            (&["-m", "mark", "--mark", "0x10"], "meta mark 0x10"),
            (
                &["-m", "mark", "!", "--mark", "1/0xff"],
                "meta mark & 0xff != 0x1",
            ),
            (&["-m", "mark", "--mark", "5/7"], "meta mark & 0x7 == 0x5"),
            (
                &[
                    "-s",
                    "1.2.3.4",
                    "-i",
                    "uplink0",
                    "-m",
                    "comment",
                    "--comment",
                    "x",
                ],
                "ip saddr 1.2.3.4 iifname \"uplink0\"",
            ),
        ];
        for (input, want) in cases {
            if want.is_empty() {
                // Nothing left after translation: an empty condition set is refused.
                let e = ipt4_err(input);
                assert!(e.contains("no match"), "{input:?}: {e}");
                continue;
            }
            assert_eq!(ipt4(input), *want, "{input:?}");
        }
        let six = parse(
            Some("iptables"),
            CondFamily::V6,
            &v(&["-s", "fd00::1/64", "!", "-i", "lo"]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(six.matches, "ip6 saddr fd00::/64 iifname != \"lo\"");
        assert_eq!(six.family, CondFamily::V6);
    }

    #[test]
    fn iptables_refusals_name_the_token() {
        for (input, want) in [
            (&["-j", "ACCEPT"][..], "\"-j\""),
            (&["-s", "1.2.3.4", "-j", "DROP"], "\"-j\""),
            (&["-m", "conntrack", "--ctstate", "NEW"], "\"-m conntrack\""),
            (&["--dport", "80"], "-p tcp"),
            (&["!", "-p", "tcp", "--dport", "80"], "not negated"),
            (&["-p", "icmp", "--dport", "80"], "-p tcp"),
            (&["-p", "udp", "-m", "tcp"], "-p tcp"),
            (&["--comment", "x"], "-m comment"),
            (&["--mark", "1"], "-m mark"),
            (&["--dst-type", "LOCAL"], "-m addrtype"),
            (&["-m", "addrtype", "--dst-type", "THROW"], "LOCAL"),
            (&["!", "!", "-s", "1.2.3.4"], "repeated"),
            (&["-s", "1.2.3.4", "!"], "negates nothing"),
            (&["!", "-m", "mark", "--mark", "1"], "not before -m"),
            (&["-s"], "needs a value"),
            (&["-s", "1.2.3.4 accept"], "single value"),
            (&["-s", "1.2.3.4;"], "single value"),
            (&["-i", "ex\"t"], "single value"),
            (&["-i", "e+th"], "wildcard at the end"),
            (&["-s", "example.com"], "names are not resolved"),
            (&["-s", "fd00::1"], "conditionsV6"),
            (&["-p", "tcp", "--dport", "http"], "service names"),
            (&["-m", "mark", "--mark", "x"], "32-bit"),
            (&["-i", "averyveryverylongname"], "1-15"),
            (&["-m"], "needs a value"),
        ] {
            let e = ipt4_err(input);
            assert!(e.contains(want), "{input:?}: {e}");
            assert!(e.starts_with("portmap: conditionsV4: "), "{e}");
        }
        // An unsupported token lists what is supported.
        assert!(ipt4_err(&["-j", "ACCEPT"]).contains("--dport"));
    }

    #[test]
    fn backend_and_form() {
        // No backend: detected per list, as the reference detects it.
        let n = parse(None, CondFamily::V4, &v(&["ip saddr 1.2.3.4"]))
            .unwrap()
            .unwrap();
        let i = parse(None, CondFamily::V4, &v(&["-s", "1.2.3.4"]))
            .unwrap()
            .unwrap();
        assert_eq!(n, i);
        // Both forms give one chain.
        assert_eq!(n.name(), i.name());
        assert!(parse(None, CondFamily::V4, &[]).unwrap().is_none());
        // nftables form, elements joined.
        let j = parse(
            Some("nftables"),
            CondFamily::V4,
            &v(&["ip saddr 1.2.3.4", "iifname", "\"eth0\""]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(j.matches, "ip saddr 1.2.3.4 iifname \"eth0\"");
        // Form against an explicit backend.
        let e = parse(Some("nftables"), CondFamily::V4, &v(&["-s", "1.2.3.4"])).unwrap_err();
        assert!(e.msg.contains("iptables syntax"), "{}", e.msg);
        let e = parse(Some("iptables"), CondFamily::V6, &v(&["ip6 saddr ::1"])).unwrap_err();
        assert!(
            e.msg.contains("conditionsV6") && e.msg.contains("not in iptables syntax"),
            "{}",
            e.msg
        );
        // nft refusals are error 7 too.
        let e = parse(
            Some("nftables"),
            CondFamily::V4,
            &v(&["ip saddr 1.2.3.4 accept"]),
        )
        .unwrap_err();
        assert!(e.code == 7 && e.msg.contains("\"accept\""), "{}", e.msg);
        let e = parse(None, CondFamily::V6, &v(&["ip6 saddr 10.0.0.1"])).unwrap_err();
        assert!(e.msg.contains("put it in conditionsV4"), "{}", e.msg);
    }
}
