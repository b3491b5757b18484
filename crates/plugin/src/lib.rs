//! # rnet-plugin: glue shared by the plugin executables
//!
//! Maps the lower crates' typed errors onto CNI error codes, and opens the
//! container namespace with the CNI contract's semantics: on ADD and CHECK a
//! missing namespace is error 3 (the container does not exist) and a path that
//! is not a network namespace is error 4 (invalid `CNI_NETNS`); on DEL a missing
//! namespace is not an error (DEL must succeed when things are already gone).

use rnet_cni::{CmdArgs, CniError, code};
use rnet_netlink::NetlinkError;
use rnet_netns::{NetNs, NsError};
use rnet_nft::rnet::RnetError;

/// A namespace error as a CNI error.
pub fn ns_error(e: NsError) -> CniError {
    match &e {
        NsError::NotFound { .. } => CniError::new(code::UNKNOWN_CONTAINER, e.to_string()),
        NsError::NotANamespace { .. } | NsError::WrongKind { .. } | NsError::InvalidName { .. } => {
            CniError::invalid_env(format!("CNI_NETNS: {e}"))
        }
        _ => CniError::new(code::NAMESPACE, e.to_string()),
    }
}

/// A netlink error as a CNI error (code 101, or the namespace mapping).
pub fn netlink_error(e: NetlinkError) -> CniError {
    match e {
        NetlinkError::Namespace(ns) => ns_error(ns),
        other => CniError::new(code::NETLINK, other.to_string()),
    }
}

/// An error of rnet's shared nftables ruleset as a CNI error: a lock held
/// too long is 11 (try again), a journal file that cannot be written is 5
/// (I/O), anything nftables refused is 102. `what` says what was being done.
pub fn nft_error(what: impl std::fmt::Display) -> impl FnOnce(RnetError) -> CniError {
    move |e| {
        let code = match &e {
            RnetError::Busy { .. } => code::TRY_AGAIN,
            RnetError::Journal { .. } => code::IO,
            RnetError::Nft(_) => code::NFTABLES,
        };
        CniError::new(code, format!("{what}: {e}"))
    }
}

/// Opens `CNI_NETNS` for ADD/CHECK: it must be set and be a network namespace.
pub fn container_netns(args: &CmdArgs) -> Result<NetNs, CniError> {
    let Some(path) = &args.netns else {
        return Err(CniError::invalid_env(
            "CNI_NETNS is not set; ADD and CHECK need the container's network namespace path",
        ));
    };
    NetNs::open(path).map_err(ns_error)
}

/// Opens `CNI_NETNS` for DEL: `None` when unset or already gone.
pub fn container_netns_for_del(args: &CmdArgs) -> Result<Option<NetNs>, CniError> {
    let Some(path) = &args.netns else {
        return Ok(None);
    };
    match NetNs::open(path) {
        Ok(ns) => Ok(Some(ns)),
        Err(NsError::NotFound { .. }) => Ok(None),
        Err(e) => Err(ns_error(e)),
    }
}

/// Refuses a container namespace that is the plugin's own (the runtime passed the
/// host namespace by mistake): configuring it would change the host.
pub fn refuse_own_netns(ns: &NetNs) -> Result<(), CniError> {
    let (a, b) = (
        rnet_netns::NsId::current().map_err(ns_error)?,
        ns.id().map_err(ns_error)?,
    );
    if a == b {
        return Err(CniError::new(
            code::NAMESPACE,
            "plugin's netns and netns from CNI_NETNS should not be the same: CNI_NETNS must be the container's namespace, not the host's",
        ));
    }
    Ok(())
}

/// Per-attachment state files, shared by the plugins that keep one
/// (`<stateDir>/<network>/<containerID>_<ifname>.json`, written atomically
/// before the work they describe, so DEL and GC find what a crashed ADD left).
pub mod state {
    use rnet_cni::CniError;
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use std::path::{Path, PathBuf};

    /// The directory holding a network's state files.
    pub fn network_dir(state_dir: &Path, network: &str) -> PathBuf {
        state_dir.join(network)
    }

    /// The state file of one attachment.
    pub fn path(state_dir: &Path, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        network_dir(state_dir, network).join(format!("{container_id}_{ifname}.json"))
    }

    /// Writes `value` to `path` atomically (mode 0600).
    pub fn write<T: Serialize>(path: &Path, value: &T, what: &str) -> Result<(), CniError> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| CniError::internal(format!("cannot encode {what}: {e}")))?;
        rnet_cni::runtime::write_atomic(path, &bytes)
    }

    /// Reads a state file; `Ok(None)` when it does not exist, `Err` naming a
    /// corrupt or unreadable file (DEL and GC log it and fall back).
    pub fn read<T: DeserializeOwned>(path: &Path, what: &str) -> Result<Option<T>, String> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| format!("{what} {} is corrupt: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {what} {}: {e}", path.display())),
        }
    }

    /// Removes a state file; a missing one is fine.
    pub fn remove(path: &Path, what: &str) -> Result<(), String> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot remove {what} {}: {e}", path.display())),
        }
    }
}
/// Phase timings appended to the file named by `RNET_TRACE`, if set
/// (measurement aid; the runtime swallows a plugin's stderr). With
/// `RNET_TRACE_T0` set to the caller's wall clock in nanoseconds since the
/// epoch just before it spawned the plugin, each line also says how long
/// after the spawn it was written, so process start-up shows.
pub struct Trace(Option<TraceInner>);

struct TraceInner {
    plugin: &'static str,
    start: std::time::Instant,
    spawn_offset: Option<std::time::Duration>,
    path: std::path::PathBuf,
}

impl Trace {
    /// Starts the clock if `RNET_TRACE` names a file.
    pub fn new(plugin: &'static str) -> Trace {
        Trace(std::env::var_os("RNET_TRACE").map(|p| {
            let spawn_offset = std::env::var("RNET_TRACE_T0")
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .and_then(|t0| {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .ok()?;
                    now.checked_sub(std::time::Duration::from_nanos(t0))
                });
            TraceInner {
                plugin,
                start: std::time::Instant::now(),
                spawn_offset,
                path: std::path::PathBuf::from(p),
            }
        }))
    }

    /// Appends "<plugin> <what> at <elapsed>" (and "since spawn <d>"), as
    /// one `write` (formatting straight into the file made one system call
    /// per piece, some ten per line, which the trace then measured).
    pub fn at(&self, what: &str) {
        if let Some(t) = &self.0 {
            use std::io::Write as _;
            let e = t.start.elapsed();
            let line = match t.spawn_offset {
                Some(o) => format!("{} {what} at {e:?} since spawn {:?}\n", t.plugin, o + e),
                None => format!("{} {what} at {e:?}\n", t.plugin),
            };
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&t.path)
            {
                let _ = f.write_all(line.as_bytes());
            }
        }
    }
}
