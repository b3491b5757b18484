//! rnet's IPAM: a drop-in for the reference `host-local` plugin that never leaks
//! and never hands out an address twice.
//!
//! This crate is the library; the CNI plugin executable (`rnet-ipam`) is a thin
//! layer on top: parse stdin and `CNI_ARGS` with [`IpamConfig::from_netconf`],
//! open [`Ipam::open`], call [`Ipam::allocate`] (ADD), [`Ipam::release`] (DEL),
//! [`Ipam::check`] (CHECK), [`Ipam::gc`] (GC) or [`Ipam::status`] (STATUS), and
//! turn an [`IpamError`] into CNI error JSON with [`IpamError::cni_code`].
//!
//! # Compatibility with host-local
//!
//! * **Schema**: `ranges` (one range set per address; each range `subnet`,
//!   `rangeStart`, `rangeEnd`, `gateway`), the legacy single
//!   `subnet`/`rangeStart`/`rangeEnd`/`gateway`, `routes`, `dataDir`,
//!   `resolvConf`; static addresses from `CNI_ARGS` `IP=` (also a comma list),
//!   `args.cni.ips` and the `ips` capability; the `ipRanges` capability. Defaults
//!   as host-local: gateway = network + 1, rangeStart = network + 1 (the gateway is
//!   skipped when walking), rangeEnd = broadcast - 1 (IPv4) or the last address (IPv6).
//! * **Allocation order**: host-local's round robin: from `last_reserved_ip.N` + 1
//!   across the set's ranges in order, wrapping, so a freed address is not reused
//!   at once. The differential tests (`tests/differential.rs`) run the reference
//!   binary side by side and compare every address.
//! * **On disk**: host-local's format, `<dataDir>/<network>/<ip>` containing
//!   `<containerID>\r\n<ifname>`, `last_reserved_ip.N`, and the same `lock` file
//!   under `flock`, so both plugins can share a directory: a machine switching
//!   from host-local needs no migration and mixed use cannot double-allocate.
//!
//! # What rnet adds, and why it is built this way
//!
//! * **Crash safety**: every lease is written complete in `.rnet/tmp` and then
//!   renamed into place with `RENAME_NOREPLACE`, which is the atomic "is this
//!   address free" test. A SIGKILL at any instant leaves no lease or a complete
//!   one (host-local can leave an empty file). Tested by killing allocating
//!   processes at random moments (`tests/processes.rs`).
//! * **No rollback needed**: ADD plans one address per range set under the lock
//!   and reserves them in one all-or-nothing step ([`Txn::reserve`]); a set that
//!   cannot be served fails the ADD before anything is written.
//! * **Cost independent of the number of leases**: host-local's DEL reads every
//!   file of the network. rnet keeps an index per attachment
//!   (`.rnet/attach/<containerID>@<ifname>`, written before the leases, as an
//!   intent log), so DEL reads only that attachment's files. ADD checks candidates
//!   with one `stat` each, starting at the cursor. Inode creation, the dominant
//!   cost on some file systems, is avoided by recycling released inodes. With
//!   60,000 leases in a /16, allocate + release costs what it costs with one
//!   lease (`tests/scale.rs`). Leases written by host-local in a shared directory
//!   are indexed once when rnet first sees them (host-local moves a cursor, which
//!   rnet notices).
//! * **GC** (CNI 1.1): [`Ipam::gc`] releases every lease whose attachment is not
//!   valid, plus empty lease files left by a killed host-local; **STATUS** reports
//!   an exhausted range set.
//! * **Bounded lock wait**: a busy store fails with [`IpamError::Busy`] (CNI code
//!   11, "try again") after [`IpamConfig::lock_timeout`] instead of hanging.
//! * **Behind a trait**: [`Store`] / [`Txn`] are small and object safe so a
//!   distributed backend (etcd: a lease-backed lock, create-if-absent per address
//!   key) can replace [`DiskStore`]; [`MemStore`] is the in-memory reference.
//!
//! # Deliberate differences from host-local
//!
//! * A repeated ADD for an attachment that already holds addresses returns them
//!   (idempotent); host-local fails ("duplicate allocation is not allowed"). A
//!   repeated ADD requesting a *different* static address fails with code 115.
//! * A failed ADD changes nothing, not even the round-robin cursors (host-local
//!   advances the cursors of the range sets it served before failing).
//! * `ipRanges` from `runtimeConfig` *replaces* the configured ranges (host-local
//!   prepends them, which hands out extra addresses when both are set).
//! * Network and broadcast addresses are never handed out, even when an explicit
//!   `rangeStart`/`rangeEnd` includes them; the gateway must lie in its subnet.
//! * Two static addresses in one range set are a config error (code 7) instead of
//!   host-local's random choice; `CNI_ARGS` keys other than `IP` are ignored.
//! * Requested addresses are checked at ADD only, so DEL never fails because of them.
//! * Durability is against process death (SIGKILL), not power loss: there is no
//!   `fsync` on the hot path. After a power loss a lease may be missing or empty;
//!   empty ones are removed by GC, and the runtime's GC reconciles the rest.
//!
//! # Error codes
//!
//! | Code | Variant | Meaning |
//! |---|---|---|
//! | 4 | [`IpamError::InvalidOwner`] | `CNI_CONTAINERID` / `CNI_IFNAME` empty or containing whitespace, control characters (or `/` in the ifname) |
//! | 5 | [`IpamError::Io`] | a file operation on the state directory failed (unwritable or full `dataDir`, unreadable `resolvConf`); names the path |
//! | 5 | [`IpamError::UnsafePath`] | `dataDir` or the network directory is a symlink or not a directory |
//! | 7 | [`IpamError::InvalidConfig`] | invalid network config; names the JSON field and value |
//! | 11 | [`IpamError::Busy`] | the store's lock was not acquired within the lock timeout; try again |
//! | 50 | [`IpamError::Unavailable`] | STATUS: a range set has no free address, ADD would fail |
//! | 110 | [`IpamError::RangeExhausted`] | ADD: no free address in a range set; names the set |
//! | 111 | [`IpamError::RequestedIpTaken`] | a requested static address is held by another attachment (named) |
//! | 112 | [`IpamError::RequestedIpOutsideRanges`] | a requested static address lies in no configured range |
//! | 114 | [`IpamError::RequestedIpReserved`] | a requested static address is a gateway, network or broadcast address |
//! | 115 | [`IpamError::AlreadyAllocated`] | repeated ADD asking for a different static address than the one held |
//! | 116 | [`IpamError::NoLease`] | CHECK: the attachment holds no address |

mod config;
mod disk;
mod error;
mod ipam;
mod range;
mod store;

pub use config::{
    DEFAULT_DATA_DIR, DEFAULT_LOCK_TIMEOUT, Dns, IpamConfig, Route, parse_resolv_conf,
};
pub use disk::DiskStore;
pub use error::IpamError;
pub use ipam::{AllocatedIp, Allocation, Ipam};
pub use range::{Range, RangeSet};
pub use store::{GcReport, Lease, MemStore, Owner, Store, Txn};
