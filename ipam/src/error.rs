//! The one error type of the crate, with its CNI error code.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::store::Owner;

/// Everything that can go wrong in rnet's IPAM.
///
/// Each variant names the thing that is wrong (field, path, address, range) and
/// what to do about it. [`IpamError::cni_code`] maps a variant to the CNI error
/// code the plugin glue reports; the table is in the crate documentation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpamError {
    /// The network configuration is invalid (CNI code 7).
    #[error("invalid IPAM config: {field} = {value}: {reason}")]
    InvalidConfig {
        /// JSON path of the offending key, e.g. `ipam.ranges[0][1].rangeStart`.
        field: String,
        /// The offending value as given.
        value: String,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// The container ID or interface name cannot be used as a lease owner (CNI code 4).
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidOwner {
        /// `CNI_CONTAINERID` or `CNI_IFNAME`.
        what: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong.
        reason: String,
    },

    /// A file-system operation on the state directory failed (CNI code 5).
    /// The errno stays typed in `source` (`source.kind()` / `raw_os_error()`).
    #[error(
        "IPAM state: {op} {path}: {source}; check that the dataDir exists, is writable by this user and not full"
    )]
    Io {
        /// The operation, e.g. `create`, `link`, `read`.
        op: &'static str,
        /// The path operated on.
        path: PathBuf,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },

    /// The state path is a symlink or not a directory; rnet refuses to follow it (CNI code 5).
    #[error(
        "IPAM state path {path} {reason}; refusing to use it: point dataDir at a real directory"
    )]
    UnsafePath {
        /// The refused path.
        path: PathBuf,
        /// Why it was refused.
        reason: &'static str,
    },

    /// Another plugin process held the store's lock for longer than the timeout (CNI code 11).
    #[error("IPAM store {path} is busy: lock not acquired within {waited:?}; try again later")]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },

    /// No free address is left in a range set on ADD (CNI code 110).
    #[error(
        "no free IP address in range set {range_set} ({ranges}); release addresses (DEL or GC) or widen the range"
    )]
    RangeExhausted {
        /// Index of the range set in `ranges`.
        range_set: usize,
        /// The ranges of the set, printed.
        ranges: String,
    },

    /// A requested static address is held by another attachment (CNI code 111).
    #[error("requested IP address {ip} is already allocated{}; choose another address or remove the holder", holder_text(.holder))]
    RequestedIpTaken {
        /// The requested address.
        ip: IpAddr,
        /// Who holds it, when known.
        holder: Option<Owner>,
    },

    /// A requested static address lies in no configured range (CNI code 112).
    #[error(
        "requested IP address {ip} is outside every configured range ({ranges}); request an address inside a range"
    )]
    RequestedIpOutsideRanges {
        /// The requested address.
        ip: IpAddr,
        /// All range sets, printed.
        ranges: String,
    },

    /// A requested static address is the gateway, network or broadcast address of its range (CNI code 114).
    #[error("requested IP address {ip} is the {what} of {range} and is never handed out")]
    RequestedIpReserved {
        /// The requested address.
        ip: IpAddr,
        /// `gateway`, `network address` or `broadcast address`.
        what: &'static str,
        /// The range, printed.
        range: String,
    },

    /// A repeated ADD asks for a different address than the attachment already holds (CNI code 115).
    #[error(
        "{owner} already holds {held} in range set {range_set} but {requested} was requested; DEL the attachment first"
    )]
    AlreadyAllocated {
        /// The attachment.
        owner: Owner,
        /// Range set index.
        range_set: usize,
        /// Address it holds.
        held: IpAddr,
        /// Address now requested.
        requested: IpAddr,
    },

    /// CHECK found no lease for the attachment (CNI code 116).
    #[error("{owner} holds no IP address in network {network}; it was never added or was released")]
    NoLease {
        /// The attachment.
        owner: Owner,
        /// The network name.
        network: String,
    },

    /// STATUS: some range set has no free address, an ADD would fail (CNI code 50).
    #[error("IPAM cannot serve ADD: no free IP address in {}", exhausted_text(.exhausted))]
    Unavailable {
        /// `(range set index, printed ranges)` of every exhausted set.
        exhausted: Vec<(usize, String)>,
    },
}

fn holder_text(holder: &Option<Owner>) -> String {
    match holder {
        Some(o) => format!(" to {o}"),
        None => String::new(),
    }
}

fn exhausted_text(sets: &[(usize, String)]) -> String {
    sets.iter()
        .map(|(i, r)| format!("range set {i} ({r})"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl IpamError {
    /// The CNI error code for this error (see the crate documentation's table).
    pub fn cni_code(&self) -> u32 {
        match self {
            IpamError::InvalidOwner { .. } => 4,
            IpamError::Io { .. } | IpamError::UnsafePath { .. } => 5,
            IpamError::InvalidConfig { .. } => 7,
            IpamError::Busy { .. } => 11,
            IpamError::Unavailable { .. } => 50,
            IpamError::RangeExhausted { .. } => 110,
            IpamError::RequestedIpTaken { .. } => 111,
            IpamError::RequestedIpOutsideRanges { .. } => 112,
            IpamError::RequestedIpReserved { .. } => 114,
            IpamError::AlreadyAllocated { .. } => 115,
            IpamError::NoLease { .. } => 116,
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<io::Error>,
    ) -> Self {
        IpamError::Io {
            op,
            path: path.into(),
            source: source.into(),
        }
    }

    pub(crate) fn config(
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        IpamError::InvalidConfig {
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}
