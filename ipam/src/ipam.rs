//! The allocator: what the plugin glue calls for ADD, DEL, CHECK, GC and STATUS.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{Dns, IpamConfig, Route};
use crate::disk::DiskStore;
use crate::error::IpamError;
use crate::range::Candidates;
use crate::store::{GcReport, Lease, Owner, Store};

/// One allocated address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocatedIp {
    /// The address with its subnet's prefix length (e.g. `10.22.0.5/16`).
    pub address: IpNet,
    /// The range's gateway (host-local always reports one).
    pub gateway: Option<IpAddr>,
    /// Index of the range set the address came from.
    pub range_set: usize,
}

/// The result of an ADD: one address per range set, plus routes and DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// One per range set, in range-set order.
    pub ips: Vec<AllocatedIp>,
    /// `ipam.routes`, as configured.
    pub routes: Vec<Route>,
    /// From `ipam.resolvConf` (empty if none).
    pub dns: Dns,
}

/// One range set still to be served by an ADD.
struct Pending<'a> {
    set: usize,
    requested: Option<IpAddr>,
    walk: Option<Candidates<'a>>,
    pick: Option<IpAddr>,
}

/// IPAM for one network: a validated config and a lease store.
pub struct Ipam {
    config: IpamConfig,
    store: Box<dyn Store>,
}

impl std::fmt::Debug for Ipam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipam")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Ipam {
    /// IPAM over any store (e.g. [`crate::MemStore`] in tests).
    pub fn new(config: IpamConfig, store: Box<dyn Store>) -> Ipam {
        Ipam { config, store }
    }

    /// IPAM over the on-disk store at `<dataDir>/<name>` (created if missing).
    pub fn open(config: IpamConfig) -> Result<Ipam, IpamError> {
        let store = DiskStore::open_config(&config)?;
        Ok(Ipam::new(config, Box::new(store)))
    }

    /// The configuration.
    pub fn config(&self) -> &IpamConfig {
        &self.config
    }

    /// ADD: one address per range set for `owner`.
    ///
    /// Requested static addresses (see [`IpamConfig::requested_ips`]) are honoured
    /// in the set containing them; other sets allocate round-robin from the set's
    /// cursor. All sets are planned first and reserved together, so a failing set
    /// leaves nothing behind (and, unlike host-local, moves no cursor). A repeated ADD for an owner that already holds an address in a set
    /// returns that address (idempotent) unless a different static address is
    /// requested ([`IpamError::AlreadyAllocated`]).
    pub fn allocate(&self, owner: &Owner) -> Result<Allocation, IpamError> {
        owner.validate()?;
        let requested = self.requests_per_set()?;
        let dns = self.config.load_dns()?;
        let sets = &self.config.range_sets;
        let mut txn = self.store.lock()?;
        let held = txn.ips_of(owner)?;

        // Plan every set first, then reserve all new addresses in one step: a set
        // that cannot be served fails the ADD before anything is written.
        let mut chosen: Vec<Option<IpAddr>> = vec![None; sets.len()];
        let mut todo: Vec<Pending<'_>> = Vec::new();
        for (k, set) in sets.iter().enumerate() {
            let want = requested.get(k).copied().flatten();
            // An address the set now reserves (the gateway after a config
            // change, say) is never handed out again, even to its holder.
            let usable = |ip: IpAddr| {
                set.range_for(ip)
                    .is_some_and(|r| r.reserved_kind(ip).is_none())
            };
            match held.iter().copied().find(|ip| usable(*ip)) {
                Some(existing) => {
                    if let Some(req) = want.filter(|req| *req != existing) {
                        return Err(IpamError::AlreadyAllocated {
                            owner: owner.clone(),
                            range_set: k,
                            held: existing,
                            requested: req,
                        });
                    }
                    chosen[k] = Some(existing);
                }
                None => todo.push(Pending {
                    set: k,
                    requested: want,
                    walk: match want {
                        Some(_) => None,
                        None => Some(set.candidates(txn.last_reserved(k)?)),
                    },
                    pick: None,
                }),
            }
        }
        loop {
            for p in &mut todo {
                if p.pick.is_some() {
                    continue;
                }
                if p.requested.is_some() {
                    p.pick = p.requested;
                    continue;
                }
                if let Some(walk) = &mut p.walk {
                    for (_, ip) in walk.by_ref() {
                        if txn.is_free(ip)? {
                            p.pick = Some(ip);
                            break;
                        }
                    }
                }
                if p.pick.is_none() {
                    return Err(IpamError::RangeExhausted {
                        range_set: p.set,
                        ranges: sets.get(p.set).map(ToString::to_string).unwrap_or_default(),
                    });
                }
            }
            let new: Vec<IpAddr> = todo.iter().filter_map(|p| p.pick).collect();
            if new.is_empty() {
                break;
            }
            let Some(i) = txn.reserve(owner, &new)? else {
                break;
            };
            let Some(p) = todo.get_mut(i) else {
                break;
            };
            if let Some(ip) = p.requested {
                let holder = txn.owner_of(ip)?;
                return Err(IpamError::RequestedIpTaken { ip, holder });
            }
            p.pick = None; // taken behind the lock's back: continue that set's walk
        }
        for p in &todo {
            if let Some(ip) = p.pick {
                txn.set_last_reserved(p.set, ip)?;
                if let Some(slot) = chosen.get_mut(p.set) {
                    *slot = Some(ip);
                }
            }
        }
        txn.finish()?;

        let mut ips = Vec::with_capacity(sets.len());
        for (k, (set, ip)) in sets.iter().zip(chosen).enumerate() {
            let Some(ip) = ip else { continue };
            let Some(range) = set.range_for(ip) else {
                continue;
            };
            let address =
                IpNet::new(ip, range.subnet.prefix_len()).unwrap_or_else(|_| IpNet::from(ip));
            ips.push(AllocatedIp {
                address,
                gateway: Some(range.gateway),
                range_set: k,
            });
        }
        Ok(Allocation {
            ips,
            routes: self.config.routes.clone(),
            dns,
        })
    }

    /// Maps each requested static address to its range set.
    fn requests_per_set(&self) -> Result<Vec<Option<IpAddr>>, IpamError> {
        let mut per_set = vec![None; self.config.range_sets.len()];
        for &ip in &self.config.requested_ips {
            let found = self
                .config
                .range_sets
                .iter()
                .enumerate()
                .find_map(|(k, s)| s.range_for(ip).map(|r| (k, r)));
            let Some((k, range)) = found else {
                return Err(IpamError::RequestedIpOutsideRanges {
                    ip,
                    ranges: self.config.ranges_text(),
                });
            };
            if let Some(what) = range.reserved_kind(ip) {
                return Err(IpamError::RequestedIpReserved {
                    ip,
                    what,
                    range: range.to_string(),
                });
            }
            match per_set.get_mut(k) {
                Some(Some(other)) => {
                    return Err(IpamError::config(
                        "requested IPs",
                        format!("{other}, {ip}"),
                        format!(
                            "both are in range set {k}; request at most one address per range set"
                        ),
                    ));
                }
                Some(slot) => *slot = Some(ip),
                None => {}
            }
        }
        Ok(per_set)
    }

    /// DEL: releases every address `owner` holds in this network (for leases
    /// written by pre-ifname host-local, those of the container ID). Idempotent:
    /// releasing an unknown owner succeeds with an empty list.
    pub fn release(&self, owner: &Owner) -> Result<Vec<IpAddr>, IpamError> {
        owner.validate()?;
        let mut txn = self.store.lock()?;
        let mut released = txn.release_owner(owner)?;
        if released.is_empty() {
            released = txn.release_owner(&owner.legacy())?;
        }
        txn.finish()?;
        Ok(released)
    }

    /// CHECK: the addresses `owner` holds; [`IpamError::NoLease`] if none.
    pub fn check(&self, owner: &Owner) -> Result<Vec<IpAddr>, IpamError> {
        owner.validate()?;
        let mut txn = self.store.lock()?;
        let mut ips = txn.ips_of(owner)?;
        if ips.is_empty() {
            ips = txn.ips_of(&owner.legacy())?;
        }
        txn.finish()?;
        if ips.is_empty() {
            return Err(IpamError::NoLease {
                owner: owner.clone(),
                network: self.config.name.clone(),
            });
        }
        Ok(ips)
    }

    /// GC (CNI 1.1): releases every lease whose owner is not in `valid`. A
    /// pre-ifname lease (container ID only) survives if any valid attachment has
    /// its container ID. Lease entries with empty or unreadable content are removed:
    /// under the lock nobody can be writing them, so they are leftovers of a killed
    /// host-local. Also drops stale indexes and stray temporary files. Linear in
    /// the number of leases.
    pub fn gc(&self, valid: &[Owner]) -> Result<GcReport, IpamError> {
        let exact: HashSet<&Owner> = valid.iter().collect();
        let ids: HashSet<&str> = valid.iter().map(|o| o.container_id.as_str()).collect();
        let keep = |o: &Owner| {
            exact.contains(o) || (o.ifname.is_empty() && ids.contains(o.container_id.as_str()))
        };
        let mut txn = self.store.lock()?;
        let report = txn.gc(&keep)?;
        txn.finish()?;
        Ok(report)
    }

    /// STATUS: `Err(`[`IpamError::Unavailable`]`)` (CNI code 50) when any range set
    /// has no free address. Walks each set from its cursor until the first free
    /// address, so it costs about one allocation while space is left, and up to one
    /// existence check per address of a set when it is (nearly) full.
    pub fn status(&self) -> Result<(), IpamError> {
        let mut txn = self.store.lock()?;
        let mut exhausted = Vec::new();
        for (k, set) in self.config.range_sets.iter().enumerate() {
            let last = txn.last_reserved(k)?;
            let mut free = false;
            for (_, ip) in set.candidates(last) {
                if txn.is_free(ip)? {
                    free = true;
                    break;
                }
            }
            if !free {
                exhausted.push((k, set.to_string()));
            }
        }
        txn.finish()?;
        if exhausted.is_empty() {
            Ok(())
        } else {
            Err(IpamError::Unavailable { exhausted })
        }
    }

    /// Every lease in this network's store (inspection; linear in the number of leases).
    pub fn leases(&self) -> Result<Vec<Lease>, IpamError> {
        let mut txn = self.store.lock()?;
        let leases = txn.leases()?;
        txn.finish()?;
        Ok(leases)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::store::MemStore;
    use serde_json::{Value, json};
    use std::sync::Arc;

    fn ipam_args(conf: Value, args: &[(&str, &str)]) -> Ipam {
        let args: Vec<(String, String)> = args
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let config = IpamConfig::from_netconf(&conf, &args).unwrap();
        Ipam::new(config, Box::new(MemStore::new()))
    }

    fn ipam(conf: Value) -> Ipam {
        ipam_args(conf, &[])
    }

    fn with_requests(base: &Ipam, ips: &[&str]) -> Ipam {
        // same store semantics matter only within one Ipam; tests build fresh ones
        let mut c = base.config().clone();
        c.requested_ips = ips.iter().map(|s| s.parse().unwrap()).collect();
        Ipam::new(c, Box::new(MemStore::new()))
    }

    fn o(id: &str) -> Owner {
        Owner::new(id, "eth0")
    }

    fn addrs(a: &Allocation) -> Vec<String> {
        a.ips.iter().map(|i| i.address.to_string()).collect()
    }

    fn small() -> Value {
        json!({"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0/29"}})
    }

    // Found by the fuzz target ipam_lease_store: an owner holding what the
    // configuration now reserves (its lease predates a gateway change) got
    // the gateway back as its address on a repeated ADD.
    #[test]
    fn a_held_address_that_is_now_reserved_is_not_returned() {
        let store = Arc::new(MemStore::new());
        let conf = |gw: &str| {
            let c = json!({"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0/29","gateway":gw}});
            IpamConfig::from_netconf(&c, &[]).unwrap()
        };
        let before = Ipam::new(conf("10.0.0.6"), Box::new(Arc::clone(&store)));
        assert_eq!(addrs(&before.allocate(&o("a")).unwrap()), ["10.0.0.1/29"]);
        let after = Ipam::new(conf("10.0.0.1"), Box::new(Arc::clone(&store)));
        assert_eq!(addrs(&after.allocate(&o("a")).unwrap()), ["10.0.0.2/29"]);
        assert_eq!(addrs(&after.allocate(&o("a")).unwrap()), ["10.0.0.2/29"]);
        // DEL releases both, the stale one included.
        assert_eq!(after.release(&o("a")).unwrap().len(), 2);
    }

    #[test]
    fn round_robin_skips_gateway_does_not_reuse_freed_at_once_and_wraps() {
        let i = ipam(small());
        let a = i.allocate(&o("a")).unwrap();
        assert_eq!(addrs(&a), ["10.0.0.2/29"]);
        assert_eq!(a.ips[0].gateway, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(addrs(&i.allocate(&o("b")).unwrap()), ["10.0.0.3/29"]);
        assert_eq!(
            i.release(&o("a")).unwrap(),
            vec!["10.0.0.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(addrs(&i.allocate(&o("c")).unwrap()), ["10.0.0.4/29"]);
        assert_eq!(addrs(&i.allocate(&o("d")).unwrap()), ["10.0.0.5/29"]);
        assert_eq!(addrs(&i.allocate(&o("e")).unwrap()), ["10.0.0.6/29"]);
        // wraps to the freed .2; .7 is the broadcast address
        assert_eq!(addrs(&i.allocate(&o("f")).unwrap()), ["10.0.0.2/29"]);
        let e = i.allocate(&o("g")).unwrap_err();
        assert_eq!(e.cni_code(), 110);
        assert!(e.to_string().contains("10.0.0.0/29"), "{e}");
        let s = i.status().unwrap_err();
        assert_eq!(s.cni_code(), 50);
        assert!(s.to_string().contains("range set 0"), "{s}");
        i.release(&o("d")).unwrap();
        i.status().unwrap();
        assert_eq!(addrs(&i.allocate(&o("g")).unwrap()), ["10.0.0.5/29"]);
    }

    #[test]
    fn dual_stack_one_address_per_set_and_routes_dns_passed() {
        let dir = tempfile::tempdir().unwrap();
        let rc = dir.path().join("resolv.conf");
        std::fs::write(&rc, "nameserver 10.0.0.53\nsearch svc.local\n").unwrap();
        let i = ipam(json!({"name":"n","ipam":{
            "ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"fd00::/64"}]],
            "routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0","gw":"fd00::1"}],
            "resolvConf": rc.to_str().unwrap()
        }}));
        let a = i.allocate(&o("a")).unwrap();
        assert_eq!(addrs(&a), ["10.0.0.2/24", "fd00::2/64"]);
        assert_eq!(a.ips[1].gateway, Some("fd00::1".parse().unwrap()));
        assert_eq!(a.ips[1].range_set, 1);
        assert_eq!(a.routes.len(), 2);
        assert_eq!(a.dns.nameservers, ["10.0.0.53"]);
        assert_eq!(a.dns.search, ["svc.local"]);
        assert_eq!(i.check(&o("a")).unwrap().len(), 2);
    }

    #[test]
    fn repeated_add_is_idempotent() {
        let i = ipam(
            json!({"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"fd00::/64"}]]}}),
        );
        let a1 = i.allocate(&o("a")).unwrap();
        let a2 = i.allocate(&o("a")).unwrap();
        assert_eq!(a1, a2);
        assert_eq!(i.leases().unwrap().len(), 2);
        // same container, other interface: new addresses
        let b = i.allocate(&Owner::new("a", "eth1")).unwrap();
        assert_eq!(addrs(&b), ["10.0.0.3/24", "fd00::3/64"]);
    }

    #[test]
    fn static_requests_from_each_source() {
        let base = json!({"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"fd00::/64"}]]}});
        let i = ipam_args(base.clone(), &[("IP", "10.0.0.50")]);
        assert_eq!(
            addrs(&i.allocate(&o("a")).unwrap()),
            ["10.0.0.50/24", "fd00::2/64"]
        );
        // the cursor moved to the static address, as host-local does
        let mut conf = base.clone();
        conf["args"] = json!({"cni":{"ips":["10.0.0.60","fd00::60"]}});
        let i = ipam(conf);
        assert_eq!(
            addrs(&i.allocate(&o("a")).unwrap()),
            ["10.0.0.60/24", "fd00::60/64"]
        );
        let mut conf = base;
        conf["runtimeConfig"] = json!({"ips":["fd00::70/64"]});
        let i = ipam(conf);
        assert_eq!(
            addrs(&i.allocate(&o("a")).unwrap()),
            ["10.0.0.2/24", "fd00::70/64"]
        );
        // the same request for another attachment: taken
        assert_eq!(i.allocate(&o("b")).unwrap_err().cni_code(), 111);
    }

    #[test]
    fn static_request_errors() {
        let base = ipam(
            json!({"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24","rangeEnd":"10.0.0.100"}],[{"subnet":"fd00::/64"}]]}}),
        );
        let i = with_requests(&base, &["10.0.0.20"]);
        i.allocate(&o("a")).unwrap();
        let e = i.allocate(&o("b")).unwrap_err();
        assert_eq!(e.cni_code(), 111, "{e}");
        assert!(
            e.to_string().contains("10.0.0.20") && e.to_string().contains("container a"),
            "{e}"
        );
        // nothing leaked by the failed ADD (set 0 failed first; nothing to roll back)
        assert_eq!(i.leases().unwrap().len(), 2);

        let e = with_requests(&base, &["10.0.0.200"])
            .allocate(&o("a"))
            .unwrap_err();
        assert_eq!(e.cni_code(), 112, "{e}");
        let e = with_requests(&base, &["10.0.0.1"])
            .allocate(&o("a"))
            .unwrap_err();
        assert_eq!(e.cni_code(), 114, "{e}");
        assert!(e.to_string().contains("gateway"), "{e}");
        let e = with_requests(&base, &["10.0.0.5", "10.0.0.6"])
            .allocate(&o("a"))
            .unwrap_err();
        assert_eq!(e.cni_code(), 7, "{e}");
        let e = with_requests(&base, &["fd00::1"])
            .allocate(&o("a"))
            .unwrap_err();
        assert_eq!(e.cni_code(), 114, "{e}");

        // repeated ADD asking for another static address
        let store = Arc::new(MemStore::new());
        let mut c = base.config().clone();
        c.requested_ips = vec!["10.0.0.31".parse().unwrap()];
        Ipam::new(c.clone(), Box::new(Arc::clone(&store)))
            .allocate(&o("a"))
            .unwrap();
        // same request again: idempotent
        Ipam::new(c.clone(), Box::new(Arc::clone(&store)))
            .allocate(&o("a"))
            .unwrap();
        c.requested_ips = vec!["10.0.0.33".parse().unwrap()];
        let e = Ipam::new(c, Box::new(Arc::clone(&store)))
            .allocate(&o("a"))
            .unwrap_err();
        assert_eq!(e.cni_code(), 115, "{e}");
    }

    #[test]
    fn failure_in_a_later_set_reserves_nothing() {
        let i = ipam(
            json!({"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"fd00::/126"}]]}}),
        );
        i.allocate(&o("a")).unwrap();
        i.allocate(&o("b")).unwrap(); // fd00::/126 has ::2 and ::3 only
        let e = i.allocate(&o("c")).unwrap_err();
        assert_eq!(e.cni_code(), 110);
        assert!(e.to_string().contains("range set 1"), "{e}");
        assert!(i.leases().unwrap().iter().all(|l| l.owner != o("c")));
        let e = i.check(&o("c")).unwrap_err();
        assert_eq!(e.cni_code(), 116);
    }

    #[test]
    fn release_is_idempotent_and_handles_legacy_owner() {
        let i = ipam(small());
        assert!(i.release(&o("nobody")).unwrap().is_empty());
        i.allocate(&o("a")).unwrap();
        assert_eq!(i.release(&o("a")).unwrap().len(), 1);
        assert!(i.release(&o("a")).unwrap().is_empty());
        // a legacy (id-only) lease is released by DEL of any ifname of that container
        {
            let mut t = i.store.lock().unwrap();
            assert_eq!(
                t.reserve(&Owner::new("old", ""), &["10.0.0.6".parse().unwrap()])
                    .unwrap(),
                None
            );
            t.finish().unwrap();
        }
        assert_eq!(i.check(&o("old")).unwrap().len(), 1);
        assert_eq!(i.release(&o("old")).unwrap().len(), 1);
        assert!(i.leases().unwrap().is_empty());
        let e = i.release(&Owner::new("", "eth0")).unwrap_err();
        assert_eq!(e.cni_code(), 4);
    }

    #[test]
    fn gc_keeps_valid_attachments_only() {
        let i = ipam(json!({"name":"n","ipam":{"subnet":"10.0.0.0/24"}}));
        for id in ["a", "b", "c"] {
            i.allocate(&o(id)).unwrap();
        }
        {
            let mut t = i.store.lock().unwrap();
            t.reserve(&Owner::new("b", ""), &["10.0.0.100".parse().unwrap()])
                .unwrap();
            t.reserve(&Owner::new("z", ""), &["10.0.0.101".parse().unwrap()])
                .unwrap();
            t.finish().unwrap();
        }
        let r = i.gc(&[o("b"), Owner::new("a", "eth9")]).unwrap();
        let mut gone: Vec<String> = r.released.iter().map(|l| l.owner.to_string()).collect();
        gone.sort();
        assert_eq!(
            gone,
            [
                "container a interface eth0",
                "container c interface eth0",
                "container z"
            ]
        );
        let left: Vec<String> = i
            .leases()
            .unwrap()
            .iter()
            .map(|l| l.ip.to_string())
            .collect();
        assert_eq!(left, ["10.0.0.3", "10.0.0.100"]);
        assert!(i.gc(&[]).unwrap().released.len() == 2);
    }

    #[test]
    fn multi_range_set_walks_ranges_in_order() {
        let i = ipam(json!({"name":"n","ipam":{"ranges":[[
            {"subnet":"10.0.0.0/24","rangeStart":"10.0.0.10","rangeEnd":"10.0.0.11"},
            {"subnet":"10.0.1.0/24","rangeStart":"10.0.1.10","rangeEnd":"10.0.1.11","gateway":"10.0.1.254"}
        ]]}}));
        let got: Vec<String> = (0..4)
            .map(|n| addrs(&i.allocate(&o(&n.to_string())).unwrap())[0].clone())
            .collect();
        assert_eq!(
            got,
            [
                "10.0.0.10/24",
                "10.0.0.11/24",
                "10.0.1.10/24",
                "10.0.1.11/24"
            ]
        );
        assert_eq!(i.allocate(&o("x")).unwrap_err().cni_code(), 110);
    }

    #[test]
    fn v6_allocation_uses_last_address() {
        let i = ipam(json!({"name":"n","ipam":{"ranges":[[{"subnet":"fd00::/126"}]]}}));
        assert_eq!(addrs(&i.allocate(&o("a")).unwrap()), ["fd00::2/126"]);
        assert_eq!(addrs(&i.allocate(&o("b")).unwrap()), ["fd00::3/126"]);
        assert_eq!(i.allocate(&o("c")).unwrap_err().cni_code(), 110);
    }
}
