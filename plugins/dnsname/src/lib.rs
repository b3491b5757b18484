//! # rnet-dnsname: container names in DNS (drop-in for Podman's `dnsname`)
//!
//! A chained plugin, after the bridge: it takes the container's addresses
//! from `prevResult` and registers the container's name (from `CNI_ARGS`
//! `K8S_POD_NAME`, as Podman passes it) and its aliases (capability
//! `aliases`: `runtimeConfig.aliases = {"<network>": ["alias", ...]}`) with
//! the host's `rnet-dns` resolver, starting it on first use. ADD returns only
//! after the resolver acknowledged, and the resolver acknowledges only once
//! the name is live, so the name resolves in the first query after ADD.
//!
//! Configuration (Podman's schema plus rnet extensions):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `domainName` | `dns.rnet` | names are served bare and under this domain; added to the result's `dns.search` |
//! | `capabilities.aliases` | — | take aliases from `runtimeConfig.aliases[<network name>]` |
//! | `internal` | `false` | rnet: never forward this network's queries upstream (external names get REFUSED) |
//! | `upstreams` | resolver default | rnet: upstream servers for this network (`IP`, `IP:PORT`) |
//! | `rnetStateDir` | `/run/rnet` | rnet: the state root shared by rnet's plugins; the resolver's directory is `<root>/dns` (one resolver per directory) |
//! | `rnetDnsPort` | `53` | rnet: port of a resolver this plugin starts (tests) |
//! | `rnetDefaultUpstreams` | host resolv.conf | rnet: default upstreams of a resolver this plugin starts |
//!
//! The resolver listens on the gateways of the `prevResult` addresses (the
//! bridge's addresses with `isGateway`); they are prepended to the result's
//! `dns.nameservers`. Without `K8S_POD_NAME` only aliases are registered; with
//! neither, ADD fails (error 7), since there would be nothing to resolve.
//!
//! DEL unregisters (idempotent; when no resolver runs and its registry holds
//! nothing for the attachment, nothing is started). CHECK verifies that the
//! resolver holds the attachment's names with the `prevResult` addresses. GC
//! removes this network's attachments not in `cni.dev/valid-attachments`.
//! Resolver errors (cannot start, cannot bind a gateway address: the message
//! names the address and the reason) are error 130.

use rnet_cni::{Attachment, CmdArgs, CniError, CniResult, Plugin, code};
use rnet_dns::control::Request;
use rnet_dns::daemon::{DEFAULT_STATE_DIR, Launcher, parse_upstream};
use rnet_dns::error::{DnsError, ErrorKind};
use rnet_dns::registry::{AttachmentId, NetworkSpec, RecordSpec};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Error code for resolver failures (start, bind, persistence).
pub const RESOLVER_ERROR: u32 = 130;

/// The resolver executable's name.
pub const RESOLVER_EXE: &str = "rnet-dns";

/// The plugin.
pub struct DnsnamePlugin;

#[derive(Debug, Deserialize)]
struct Conf {
    #[serde(rename = "domainName", default)]
    domain_name: String,
    #[serde(default)]
    internal: bool,
    #[serde(default)]
    upstreams: Vec<String>,
    #[serde(rename = "rnetStateDir", default)]
    state_dir: Option<PathBuf>,
    #[serde(rename = "rnetDnsPort", default)]
    port: Option<u16>,
    #[serde(rename = "rnetDefaultUpstreams", default)]
    default_upstreams: Vec<String>,
}

fn upstreams(list: &[String]) -> Result<Vec<SocketAddr>, CniError> {
    list.iter()
        .map(|s| parse_upstream(s).map_err(|e| CniError::invalid_config(e.to_string())))
        .collect()
}

fn dns_error(e: DnsError) -> CniError {
    match e.kind() {
        ErrorKind::Invalid => CniError::invalid_config(e.to_string()),
        _ => CniError::new(RESOLVER_ERROR, e.to_string()),
    }
}

/// Finds `rnet-dns`: next to this executable, then in `CNI_PATH`.
fn resolver_exe(args: &CmdArgs) -> Result<PathBuf, CniError> {
    let mut tried = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        tried.push(dir.join(RESOLVER_EXE));
    }
    tried.extend(args.path.iter().map(|d| d.join(RESOLVER_EXE)));
    tried.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        CniError::new(
            code::PLUGIN_NOT_FOUND,
            format!(
                "the DNS resolver {RESOLVER_EXE} was not found next to the plugin or in CNI_PATH (tried {})",
                tried
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

struct Ctx {
    conf: Conf,
    launcher: Launcher,
    attachment: AttachmentId,
}

fn ctx(args: &CmdArgs) -> Result<Ctx, CniError> {
    let conf: Conf = args.conf.options()?;
    // `rnetStateDir` is rnet's state root for every plugin of a network; the
    // resolver's directory is `<root>/dns` (default /run/rnet/dns).
    let state_dir = conf
        .state_dir
        .as_ref()
        .map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), |root| root.join("dns"));
    let mut launcher = Launcher::new(resolver_exe(args)?, state_dir);
    if let Some(p) = conf.port {
        launcher.port = p;
    }
    launcher.upstreams = upstreams(&conf.default_upstreams)?;
    Ok(Ctx {
        attachment: AttachmentId {
            container_id: args.container_id.clone(),
            ifname: args.ifname.clone(),
        },
        conf,
        launcher,
    })
}

fn prev(args: &CmdArgs) -> Result<&CniResult, CniError> {
    args.conf.prev_result.as_ref().ok_or_else(|| {
        CniError::invalid_config(
            "dnsname needs prevResult: chain it after a plugin that assigns addresses (bridge)",
        )
    })
}

/// The container's addresses (those on interfaces inside a sandbox, or all
/// when the result names no interfaces) and the gateways to listen on.
fn addresses(prev: &CniResult) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let mut addrs = Vec::new();
    let mut gws = Vec::new();
    for ip in &prev.ips {
        let in_container = match ip.interface {
            Some(i) => prev
                .interfaces
                .get(i)
                .is_none_or(|ifc| !ifc.sandbox.is_empty()),
            None => true,
        };
        if !in_container {
            continue;
        }
        if !addrs.contains(&ip.address.addr()) {
            addrs.push(ip.address.addr());
        }
        if let Some(gw) = ip.gateway {
            if !gws.contains(&gw) {
                gws.push(gw);
            }
        }
    }
    (addrs, gws)
}

fn names(args: &CmdArgs) -> Result<Vec<String>, CniError> {
    let mut names = Vec::new();
    if let Some(n) = args.args.get("K8S_POD_NAME").filter(|n| !n.is_empty()) {
        names.push(n.to_owned());
    }
    if let Some(aliases) = args.conf.runtime_config.get("aliases") {
        let for_net = aliases.get(&args.conf.name);
        match for_net {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Array(list)) => {
                for a in list {
                    let Some(s) = a.as_str() else {
                        return Err(CniError::invalid_config(format!(
                            "runtimeConfig.aliases.{} must be a list of names, got {a}",
                            args.conf.name
                        )));
                    };
                    names.push(s.to_owned());
                }
            }
            Some(other) => {
                return Err(CniError::invalid_config(format!(
                    "runtimeConfig.aliases.{} must be a list of names, got {other}",
                    args.conf.name
                )));
            }
        }
    }
    if names.is_empty() {
        return Err(CniError::invalid_config(
            "no name to register: CNI_ARGS has no K8S_POD_NAME and runtimeConfig.aliases has none for this network",
        ));
    }
    Ok(names)
}

fn network(args: &CmdArgs, conf: &Conf, listen: Vec<IpAddr>) -> Result<NetworkSpec, CniError> {
    NetworkSpec {
        name: args.conf.name.clone(),
        domain: conf.domain_name.clone(),
        internal: conf.internal,
        listen,
        upstreams: upstreams(&conf.upstreams)?,
    }
    .normalized()
    .map_err(dns_error)
}

/// Checks one ADD's input as ADD reads it, without a resolver: the options,
/// the upstreams, the addresses and gateways in `prevResult`, the names and
/// the registration the resolver would get. Returns the registration's
/// names (normalised). For tests and the fuzz targets.
pub fn check_add_input(args: &CmdArgs) -> Result<Vec<String>, CniError> {
    let conf: Conf = args.conf.options()?;
    upstreams(&conf.default_upstreams)?;
    let (addrs, gws) = addresses(prev(args)?);
    let names = names(args)?;
    let net = network(args, &conf, gws)?;
    let attachment = AttachmentId {
        container_id: args.container_id.clone(),
        ifname: args.ifname.clone(),
    };
    let (_, rec) = rnet_dns::registry::Registry::prepare(net, attachment, &names, &addrs)
        .map_err(dns_error)?;
    Ok(rec.names)
}

/// Reads the registry without a running resolver (no writes): is the
/// attachment there, or anything of this network?
fn stored(launcher: &Launcher) -> Option<rnet_dns::registry::Registry> {
    rnet_dns::store::load_readonly(&launcher.state_dir).ok()
}

impl Plugin for DnsnamePlugin {
    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let c = ctx(args)?;
        let prev = prev(args)?;
        let (addrs, gws) = addresses(prev);
        if addrs.is_empty() {
            return Err(CniError::invalid_config(
                "prevResult has no container address to register",
            ));
        }
        if gws.is_empty() {
            return Err(CniError::invalid_config(
                "prevResult has no gateway for the resolver to listen on: set \"isGateway\": true on the bridge",
            ));
        }
        let names = names(args)?;
        let net = network(args, &c.conf, gws.clone())?;
        let domain = net.domain.clone();
        c.launcher
            .request(&Request::Register {
                network: net,
                attachment: c.attachment.clone(),
                names,
                addrs,
            })
            .map_err(dns_error)?;
        let mut result = prev.clone();
        let mut ns: Vec<String> = gws.iter().map(IpAddr::to_string).collect();
        for old in &result.dns.nameservers {
            if !ns.contains(old) {
                ns.push(old.clone());
            }
        }
        result.dns.nameservers = ns;
        if !result.dns.search.contains(&domain) {
            result.dns.search.insert(0, domain);
        }
        Ok(result)
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let c = ctx(args)?;
        let req = Request::Unregister {
            network: args.conf.name.clone(),
            attachment: c.attachment.clone(),
        };
        if let Some(mut client) = c.launcher.connect_existing() {
            match client.request(&req) {
                Ok(_) => return Ok(()),
                Err(DnsError::Closing) => {}
                Err(e) => return Err(dns_error(e)),
            }
        }
        // No resolver: start one only if its registry holds this attachment.
        let held = stored(&c.launcher).is_some_and(|r| {
            r.records
                .get(&args.conf.name)
                .is_some_and(|m| m.contains_key(&c.attachment))
        });
        if held {
            c.launcher.request(&req).map_err(dns_error)?;
        }
        Ok(())
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let c = ctx(args)?;
        let prev = prev(args)?;
        let (addrs, _) = addresses(prev);
        let names = names(args)?;
        let mut client = c.launcher.connect_existing().ok_or_else(|| {
            CniError::new(
                RESOLVER_ERROR,
                format!(
                    "no DNS resolver is running for state directory {}",
                    c.launcher.state_dir.display()
                ),
            )
        })?;
        let reply = client.request(&Request::List).map_err(dns_error)?;
        let rec: Option<RecordSpec> = reply.registry.and_then(|f| {
            f.records
                .into_iter()
                .find(|r| r.network == args.conf.name && r.attachment == c.attachment)
        });
        let Some(rec) = rec else {
            return Err(CniError::new(
                RESOLVER_ERROR,
                format!(
                    "container {} ({}) is not registered on network {}",
                    args.container_id, args.ifname, args.conf.name
                ),
            ));
        };
        for n in &names {
            let n = n.to_ascii_lowercase();
            if !rec.names.contains(&n) {
                return Err(CniError::new(
                    RESOLVER_ERROR,
                    format!(
                        "name {n} of container {} is not registered",
                        args.container_id
                    ),
                ));
            }
        }
        let mut want = addrs.clone();
        want.sort();
        let mut have = rec.addrs.clone();
        have.sort();
        if want != have {
            return Err(CniError::new(
                RESOLVER_ERROR,
                format!(
                    "container {} is registered with addresses {have:?}, prevResult has {want:?}",
                    args.container_id
                ),
            ));
        }
        Ok(())
    }

    fn gc(&self, args: &CmdArgs, valid: &[Attachment]) -> Result<(), CniError> {
        let c = ctx(args)?;
        let req = Request::Gc {
            network: args.conf.name.clone(),
            valid: valid
                .iter()
                .map(|a| AttachmentId {
                    container_id: a.container_id.clone(),
                    ifname: a.ifname.clone(),
                })
                .collect(),
        };
        if let Some(mut client) = c.launcher.connect_existing() {
            match client.request(&req) {
                Ok(_) => return Ok(()),
                Err(DnsError::Closing) => {}
                Err(e) => return Err(dns_error(e)),
            }
        }
        let held = stored(&c.launcher).is_some_and(|r| r.records.contains_key(&args.conf.name));
        if held {
            c.launcher.request(&req).map_err(dns_error)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use rnet_cni::skel::dispatch;

    fn run(env: &[(&str, &str)], stdin: &str) -> (i32, String) {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let get = move |k: &str| env.iter().find(|(a, _)| a == k).map(|(_, b)| b.clone());
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = dispatch(
            &DnsnamePlugin,
            "",
            &get,
            &mut stdin.as_bytes(),
            &mut out,
            &mut err,
        );
        (code, String::from_utf8_lossy(&out).into_owned())
    }

    const ENV: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/proc/self/ns/net"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/nonexistent"),
        ("CNI_ARGS", "K8S_POD_NAME=web"),
    ];

    #[test]
    fn add_needs_prev_result() {
        let (code, out) = run(
            ENV,
            r#"{"cniVersion":"1.0.0","name":"n","type":"dnsname","rnetStateDir":"/nonexistent"}"#,
        );
        assert_eq!(code, 1);
        // Either the resolver is missing (103) when not built next to the test, or 7.
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(matches!(v["code"].as_u64(), Some(7) | Some(103)), "{out}");
    }

    #[test]
    fn addresses_and_gateways_from_prev() {
        let prev = CniResult::parse(
            &serde_json::json!({
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "br0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/x"}],
                "ips": [
                    {"interface": 2, "address": "10.88.0.5/16", "gateway": "10.88.0.1"},
                    {"interface": 2, "address": "fd88::5/64", "gateway": "fd88::1"},
                    {"interface": 0, "address": "10.99.0.1/16"}
                ]
            }),
            rnet_cni::Version::parse("1.0.0").unwrap(),
        )
        .unwrap();
        let (a, g) = addresses(&prev);
        assert_eq!(
            a,
            vec![
                "10.88.0.5".parse::<IpAddr>().unwrap(),
                "fd88::5".parse().unwrap()
            ]
        );
        assert_eq!(
            g,
            vec![
                "10.88.0.1".parse::<IpAddr>().unwrap(),
                "fd88::1".parse().unwrap()
            ]
        );
    }
}
