//! Throwaway network labs for rnet's tests, demos and benchmarks (dev-only).
//!
//! Every tier-1 test builds its own topology from nothing and assert on the
//! kernel's real state and real traffic. This crate provides the pieces:
//!
//! * [`Lab`]: a fake "host" network namespace (loopback up) plus a temp
//!   directory for plugin state. [`Lab::add_container`] makes container
//!   namespaces (loopback *down*, as a fresh container's is),
//!   [`Lab::add_outside`] an "outside" namespace behind an uplink veth that
//!   stands in for the LAN/internet in masquerade and port-publishing tests.
//! * Probes that run inside a namespace: [`tcp_listen`]/[`tcp_connect`],
//!   [`udp_echo_server`]/[`udp_roundtrip`], [`ping`] (v4 and v6, raw ICMP
//!   socket) and [`dns_query`] (a small hand-built DNS client).
//! * [`CniCall`]: runs a plugin executable exactly as a runtime does (cleared
//!   environment, `CNI_*` variables, config on stdin) inside a chosen
//!   namespace, never the machine's root namespace; [`plugin_path`] finds the
//!   workspace's built binaries.
//!
//! # Safety of the machine
//!
//! All namespaces are anonymous and held only by file descriptors
//! ([`rnet_netns::NetNs::new_unnamed`]), so nothing outlives the test, not
//! even when the test process is SIGKILLed: dropping (or the kernel closing)
//! the fd destroys the namespace and every link, address and route in it.
//! Functions here that change state ([`write_sysctl`], [`CniCall::run`], the
//! lab builders) refuse to act on the machine's own network namespace (the one
//! of PID 1 or of this process's main thread); see [`ensure_lab_ns`].
//!
//! Namespaces are entered only on fresh threads (the `rnet-netns` rules):
//! probe sockets are created inside the namespace via
//! [`rnet_netns::NetNs::run`] and then used from ordinary threads.
//!
//! # Privileges
//!
//! The lab needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_NET_RAW). Tests must
//! fail loudly without it, never skip: call [`require_root`] and unwrap.

use std::path::PathBuf;

use rnet_netns::{NetNs, NsId};

mod bins;
mod cni;
mod dns;
mod lab;
mod probe;

pub use bins::{find_plugin, plugin_path};
pub use cni::{CniCall, CniOutput};
pub use dns::{
    DnsAnswer, DnsData, DnsRecord, QType, build_query, dns_query, dns_query_timeout, reverse_name,
};
pub use lab::{Container, Lab, Outside, OutsideConfig, veth_pair};
pub use probe::{
    ArpCapture, ArpFrame, TcpServer, UdpServer, arp_capture, ping, tcp_connect, tcp_listen,
    tcp_listen_with_banner, udp_echo_server, udp_roundtrip,
};

/// What tests print when the environment cannot build a lab.
pub const NEED_ROOT: &str = "these lab tests need root and namespaces (run as root; CI does)";

/// Errors from building a lab or probing it.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// Not root, or namespaces cannot be created here.
    #[error("{NEED_ROOT}: {detail}")]
    NeedRoot {
        /// What exactly failed.
        detail: String,
    },
    /// A namespace operation failed.
    #[error(transparent)]
    Ns(#[from] rnet_netns::NsError),
    /// A netlink operation failed.
    #[error("{context}: {source}")]
    Netlink {
        /// What was being done.
        context: String,
        /// The netlink error.
        #[source]
        source: rnet_netlink::NetlinkError,
    },
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A probe got no answer in time.
    #[error("timed out after {timeout:?}: {what}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        timeout: std::time::Duration,
    },
    /// A probe got an answer, but the wrong one (ICMP unreachable, bad DNS reply, ...).
    #[error("{0}")]
    Probe(String),
    /// A plugin exited non-zero (from [`CniOutput::ok_json`] / [`CniOutput::ok`]).
    #[error("plugin {plugin} exited with status {status}\nstderr: {stderr}\nstdout: {stdout}")]
    PluginFailed {
        /// The plugin executable.
        plugin: PathBuf,
        /// Exit status (negative: killed by that signal).
        status: i32,
        /// Its stderr.
        stderr: String,
        /// Its stdout, lossily decoded.
        stdout: String,
    },
    /// Plugin stdout was not the JSON expected.
    #[error("plugin {plugin} printed invalid JSON ({source}); stdout was: {stdout}")]
    BadJson {
        /// The plugin executable.
        plugin: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
        /// Its stdout, lossily decoded.
        stdout: String,
    },
    /// Refused: the operation would have touched the machine's own network namespace.
    #[error(
        "refusing to {what} in the machine's own network namespace ({id}); use a lab namespace (Lab::host(), a container or NetNs::new_unnamed())"
    )]
    RootNamespace {
        /// What was refused.
        what: String,
        /// The namespace id.
        id: NsId,
    },
    /// A required binary is missing.
    #[error("{0}")]
    Missing(String),
}

/// Result alias for this crate.
pub type Result<T, E = FixtureError> = std::result::Result<T, E>;

pub(crate) fn io_err(
    context: impl Into<String>,
    source: impl Into<std::io::Error>,
) -> FixtureError {
    FixtureError::Io {
        context: context.into(),
        source: source.into(),
    }
}

pub(crate) fn nl_err(
    context: impl Into<String>,
) -> impl FnOnce(rnet_netlink::NetlinkError) -> FixtureError {
    let context = context.into();
    move |source| FixtureError::Netlink { context, source }
}

/// Check that we are root and can create a network namespace. Tests call
/// `require_root().unwrap()` first so that an unprivileged run fails loudly
/// with [`NEED_ROOT`] instead of skipping.
pub fn require_root() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Err(FixtureError::NeedRoot {
            detail: format!("running as uid {}", rustix::process::geteuid().as_raw()),
        });
    }
    NetNs::new_unnamed().map_err(|e| FixtureError::NeedRoot {
        detail: format!("cannot create a network namespace: {e}"),
    })?;
    Ok(())
}

/// Refuse to proceed if `ns` is the machine's own network namespace (that of
/// PID 1, or of this process's main thread). Every state-changing helper in
/// this crate calls it; `what` names the refused action in the error.
pub fn ensure_lab_ns(ns: &NetNs, what: &str) -> Result<()> {
    let id = ns.id()?;
    for machine in ["/proc/1/ns/net", "/proc/self/ns/net"] {
        // Unreadable /proc/1 (e.g. hidepid) is not a reason to fail; the main
        // thread check still applies.
        if let Ok(m) = NetNs::open(machine)
            && m.id()? == id
        {
            return Err(FixtureError::RootNamespace {
                what: what.to_owned(),
                id,
            });
        }
    }
    Ok(())
}

/// Write a sysctl inside `ns`: `key` is the path under `/proc/sys`, with
/// slashes (`net/ipv4/ip_forward`, `net/ipv6/conf/eth0/accept_dad`) so that
/// interface names containing dots need no escaping. The file is opened from a
/// thread inside `ns` (`/proc/sys/net` reflects the opener's namespace).
/// Refuses the machine's own namespace.
pub fn write_sysctl(ns: &NetNs, key: &str, value: &str) -> Result<()> {
    ensure_lab_ns(ns, &format!("write sysctl {key}"))?;
    let path = sysctl_path(key)?;
    ns.run(|| std::fs::write(&path, value))?
        .map_err(|e| io_err(format!("writing {value:?} to {}", path.display()), e))
}

/// Read a sysctl inside `ns` (same key form as [`write_sysctl`]), trimmed.
pub fn read_sysctl(ns: &NetNs, key: &str) -> Result<String> {
    let path = sysctl_path(key)?;
    let s = ns
        .run(|| std::fs::read_to_string(&path))?
        .map_err(|e| io_err(format!("reading {}", path.display()), e))?;
    Ok(s.trim().to_owned())
}

fn sysctl_path(key: &str) -> Result<PathBuf> {
    if key.is_empty() || key.starts_with('/') || key.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err(FixtureError::Probe(format!(
            "bad sysctl key {key:?}: use a relative path under /proc/sys such as net/ipv4/ip_forward"
        )));
    }
    Ok(PathBuf::from("/proc/sys").join(key))
}

#[cfg(test)]
mod tests;
