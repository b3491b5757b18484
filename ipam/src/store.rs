//! The lease store abstraction and an in-memory implementation.
//!
//! The allocator ([`crate::Ipam`]) only talks to a [`Store`]: it takes the
//! store's exclusive lock with [`Store::lock`], works through the returned
//! [`Txn`], and ends with [`Txn::finish`]. The on-disk store is
//! [`crate::DiskStore`]; [`MemStore`] is the fake for tests. A distributed
//! backend (etcd) fits the same shape: `lock` takes a lease-backed mutex and
//! `reserve` is a create-if-absent transaction on the address key.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use crate::error::IpamError;

/// The attachment an address belongs to: CNI's `(CNI_CONTAINERID, CNI_IFNAME)`.
///
/// An empty `ifname` stands for leases written by old host-local versions,
/// which recorded the container ID only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    /// The container ID.
    pub container_id: String,
    /// The interface name inside the container.
    pub ifname: String,
}

impl Owner {
    /// An owner from a container ID and interface name.
    pub fn new(container_id: impl Into<String>, ifname: impl Into<String>) -> Self {
        Owner {
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }

    /// The owner form used by pre-ifname host-local lease files (container ID only).
    pub fn legacy(&self) -> Owner {
        Owner::new(self.container_id.clone(), "")
    }

    /// Checks that the owner can be recorded unambiguously in a lease file:
    /// both parts non-empty, no whitespace or control characters, ifname without `/`.
    pub fn validate(&self) -> Result<(), IpamError> {
        check_part("CNI_CONTAINERID", &self.container_id)?;
        check_part("CNI_IFNAME", &self.ifname)?;
        if self.ifname.contains('/') {
            return Err(IpamError::InvalidOwner {
                what: "CNI_IFNAME",
                value: self.ifname.clone(),
                reason: "must not contain '/'".into(),
            });
        }
        Ok(())
    }

    /// The lease-file content host-local writes: `<containerID>\r\n<ifname>`
    /// (the ID alone for a legacy owner).
    pub fn lease_content(&self) -> String {
        if self.ifname.is_empty() {
            self.container_id.clone()
        } else {
            format!("{}\r\n{}", self.container_id, self.ifname)
        }
    }

    /// Parses a lease file's content as host-local does (whitespace-trimmed,
    /// `id\r\nifname` or just `id`). `None` for empty or unusable content.
    pub fn parse_lease_content(content: &str) -> Option<Owner> {
        let t = content.trim();
        let (id, ifname) = match t.split_once("\r\n") {
            Some((id, ifname)) => (id.trim(), ifname.trim()),
            None => (t, ""),
        };
        if id.is_empty() || id.contains(['\r', '\n']) || ifname.contains(['\r', '\n']) {
            return None;
        }
        Some(Owner::new(id, ifname))
    }
}

fn check_part(what: &'static str, value: &str) -> Result<(), IpamError> {
    let bad = |reason: &str| {
        Err(IpamError::InvalidOwner {
            what,
            value: value.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if value.is_empty() {
        return bad("must not be empty");
    }
    if value.len() > 1024 {
        return bad("longer than 1024 bytes");
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("must not contain whitespace or control characters");
    }
    Ok(())
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ifname.is_empty() {
            write!(f, "container {}", self.container_id)
        } else {
            write!(
                f,
                "container {} interface {}",
                self.container_id, self.ifname
            )
        }
    }
}

/// One held address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The address.
    pub ip: IpAddr,
    /// Who holds it.
    pub owner: Owner,
    /// When it was taken (lease file modification time on disk), when known.
    pub created: Option<SystemTime>,
}

/// What a garbage collection did.
#[derive(Debug, Default)]
pub struct GcReport {
    /// Leases released because their owner is not a valid attachment.
    pub released: Vec<Lease>,
    /// Lease entries removed because their content was empty or unreadable
    /// (left by a host-local process killed between create and write).
    pub removed_corrupt: Vec<IpAddr>,
    /// Store bookkeeping removed (stale attachment indexes, stray temporary files).
    pub removed_bookkeeping: usize,
    /// Per-item failures; GC continues past them (CNI GC contract) and reports all.
    pub errors: Vec<IpamError>,
}

impl GcReport {
    /// `Err` with the first per-item failure, if any (for a plugin that must fail GC on any error).
    pub fn into_result(mut self) -> Result<GcReport, IpamError> {
        if self.errors.is_empty() {
            Ok(self)
        } else {
            Err(self.errors.swap_remove(0))
        }
    }
}

/// A lease store. `lock` gives exclusive access for one operation.
pub trait Store: Send + Sync {
    /// Takes the store's exclusive lock, waiting a bounded time
    /// ([`IpamError::Busy`] after that), and returns the transaction handle.
    /// Dropping the handle releases the lock.
    fn lock(&self) -> Result<Box<dyn Txn + '_>, IpamError>;
}

/// Operations under the store's lock.
pub trait Txn {
    /// Whether no lease exists for `ip` (cheap: no content is read).
    fn is_free(&mut self, ip: IpAddr) -> Result<bool, IpamError>;

    /// Atomically records every address of `ips` as held by `owner`, or none of
    /// them: `Ok(None)` on success, `Ok(Some(i))` when `ips[i]` is already held
    /// (then nothing was reserved). Planning all range sets first and reserving
    /// them in one step means a failed ADD never needs a rollback.
    fn reserve(&mut self, owner: &Owner, ips: &[IpAddr]) -> Result<Option<usize>, IpamError>;

    /// Releases `ip` if (and only if) `owner` holds it; returns whether it did.
    fn release(&mut self, owner: &Owner, ip: IpAddr) -> Result<bool, IpamError>;

    /// Releases every address `owner` holds (exact owner match); returns them. Idempotent.
    fn release_owner(&mut self, owner: &Owner) -> Result<Vec<IpAddr>, IpamError>;

    /// The addresses `owner` holds (exact owner match), sorted.
    fn ips_of(&mut self, owner: &Owner) -> Result<Vec<IpAddr>, IpamError>;

    /// Who holds `ip`, if anyone (`None` also for unreadable lease content).
    fn owner_of(&mut self, ip: IpAddr) -> Result<Option<Owner>, IpamError>;

    /// The round-robin cursor of range set `range_set` (host-local's `last_reserved_ip.N`).
    fn last_reserved(&mut self, range_set: usize) -> Result<Option<IpAddr>, IpamError>;

    /// Moves the round-robin cursor of range set `range_set`.
    fn set_last_reserved(&mut self, range_set: usize, ip: IpAddr) -> Result<(), IpamError>;

    /// Every lease (for GC and inspection). Cost is linear in the number of leases.
    fn leases(&mut self) -> Result<Vec<Lease>, IpamError>;

    /// Releases every lease whose owner `keep` rejects, drops corrupt entries and
    /// stale bookkeeping. Continues past per-item errors and reports them.
    fn gc(&mut self, keep: &dyn Fn(&Owner) -> bool) -> Result<GcReport, IpamError>;

    /// Ends the transaction, flushing deferred bookkeeping, and releases the lock.
    /// Dropping without `finish` is also safe (best effort, errors ignored).
    fn finish(self: Box<Self>) -> Result<(), IpamError>;
}

impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn lock(&self) -> Result<Box<dyn Txn + '_>, IpamError> {
        (**self).lock()
    }
}

/// An in-memory [`Store`] (a `Mutex` is the lock). For tests and as the reference
/// semantics of the trait.
#[derive(Debug, Default)]
pub struct MemStore {
    state: Mutex<MemState>,
}

#[derive(Debug, Default)]
struct MemState {
    leases: BTreeMap<IpAddr, (Owner, SystemTime)>,
    cursors: HashMap<usize, IpAddr>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemStore {
    fn lock(&self) -> Result<Box<dyn Txn + '_>, IpamError> {
        let guard = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(Box::new(MemTxn { state: guard }))
    }
}

struct MemTxn<'a> {
    state: MutexGuard<'a, MemState>,
}

impl Txn for MemTxn<'_> {
    fn is_free(&mut self, ip: IpAddr) -> Result<bool, IpamError> {
        Ok(!self.state.leases.contains_key(&ip))
    }

    fn reserve(&mut self, owner: &Owner, ips: &[IpAddr]) -> Result<Option<usize>, IpamError> {
        if let Some(i) = ips.iter().position(|ip| self.state.leases.contains_key(ip)) {
            return Ok(Some(i));
        }
        let now = SystemTime::now();
        for ip in ips {
            self.state.leases.insert(*ip, (owner.clone(), now));
        }
        Ok(None)
    }

    fn release(&mut self, owner: &Owner, ip: IpAddr) -> Result<bool, IpamError> {
        if self.state.leases.get(&ip).is_some_and(|(o, _)| o == owner) {
            self.state.leases.remove(&ip);
            return Ok(true);
        }
        Ok(false)
    }

    fn release_owner(&mut self, owner: &Owner) -> Result<Vec<IpAddr>, IpamError> {
        let ips = self.ips_of(owner)?;
        for ip in &ips {
            self.state.leases.remove(ip);
        }
        Ok(ips)
    }

    fn ips_of(&mut self, owner: &Owner) -> Result<Vec<IpAddr>, IpamError> {
        Ok(self
            .state
            .leases
            .iter()
            .filter(|(_, (o, _))| o == owner)
            .map(|(ip, _)| *ip)
            .collect())
    }

    fn owner_of(&mut self, ip: IpAddr) -> Result<Option<Owner>, IpamError> {
        Ok(self.state.leases.get(&ip).map(|(o, _)| o.clone()))
    }

    fn last_reserved(&mut self, range_set: usize) -> Result<Option<IpAddr>, IpamError> {
        Ok(self.state.cursors.get(&range_set).copied())
    }

    fn set_last_reserved(&mut self, range_set: usize, ip: IpAddr) -> Result<(), IpamError> {
        self.state.cursors.insert(range_set, ip);
        Ok(())
    }

    fn leases(&mut self) -> Result<Vec<Lease>, IpamError> {
        Ok(self
            .state
            .leases
            .iter()
            .map(|(ip, (owner, t))| Lease {
                ip: *ip,
                owner: owner.clone(),
                created: Some(*t),
            })
            .collect())
    }

    fn gc(&mut self, keep: &dyn Fn(&Owner) -> bool) -> Result<GcReport, IpamError> {
        let mut report = GcReport::default();
        let dead: Vec<IpAddr> = self
            .state
            .leases
            .iter()
            .filter(|(_, (o, _))| !keep(o))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in dead {
            if let Some((owner, t)) = self.state.leases.remove(&ip) {
                report.released.push(Lease {
                    ip,
                    owner,
                    created: Some(t),
                });
            }
        }
        Ok(report)
    }

    fn finish(self: Box<Self>) -> Result<(), IpamError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn lease_content_round_trip() {
        let o = Owner::new("abc", "eth0");
        assert_eq!(o.lease_content(), "abc\r\neth0");
        assert_eq!(Owner::parse_lease_content("abc\r\neth0"), Some(o.clone()));
        assert_eq!(Owner::parse_lease_content("  abc\r\neth0\n"), Some(o));
        assert_eq!(
            Owner::parse_lease_content("abc"),
            Some(Owner::new("abc", ""))
        );
        assert_eq!(Owner::parse_lease_content(""), None);
        assert_eq!(Owner::parse_lease_content(" \n"), None);
        assert_eq!(Owner::new("abc", "").lease_content(), "abc");
    }

    #[test]
    fn owner_validation() {
        assert!(Owner::new("abc", "eth0").validate().is_ok());
        for bad in [
            Owner::new("", "eth0"),
            Owner::new("a b", "eth0"),
            Owner::new("a", ""),
            Owner::new("a", "e/0"),
            Owner::new("a\r\nb", "eth0"),
        ] {
            let e = bad.validate().unwrap_err();
            assert_eq!(e.cni_code(), 4, "{e}");
        }
    }

    #[test]
    fn mem_store_semantics() {
        let s = MemStore::new();
        let a = Owner::new("a", "eth0");
        let b = Owner::new("b", "eth0");
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let mut t = s.lock().unwrap();
        let ip2: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!(t.reserve(&a, &[ip]).unwrap(), None);
        assert_eq!(t.reserve(&b, &[ip2, ip]).unwrap(), Some(1));
        assert!(t.is_free(ip2).unwrap(), "all or nothing");
        assert!(!t.release(&b, ip).unwrap());
        assert_eq!(t.owner_of(ip).unwrap(), Some(a.clone()));
        assert_eq!(t.release_owner(&a).unwrap(), vec![ip]);
        assert!(t.release_owner(&a).unwrap().is_empty());
        t.finish().unwrap();
    }
}
