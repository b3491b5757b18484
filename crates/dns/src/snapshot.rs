//! The query-side index: an immutable [`Snapshot`] answering a query with no
//! lock and no allocation, and the [`Index`] that derives the next snapshot
//! from a registry change.
//!
//! Each map is split into 64 shards, each behind its own `Arc`. A change
//! clones only the shards it touches (copy-on-write via `Arc::make_mut`) and
//! the 64-entry shard tables, so publishing a registration costs
//! O(records / 64), not O(records), and the previous snapshot stays intact for
//! the queries still using it. Lookups are one hash and one probe per map.

use crate::registry::{AttachmentId, Change, NetworkSpec, RecordSpec};
use crate::wire::{self, Query, Rdata, ResponseWriter, qtype, rcode};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

const SHARDS: usize = 64;
/// Networks one asker can see at most (a container on more DNS-enabled
/// networks sees the first 16).
const MAX_VISIBLE: usize = 16;

/// TTL of local answers. Zero, as aardvark-dns (since 1.13) and dnsmasq's
/// `local-ttl` default: a container can restart with a new address at any
/// moment, and a local answer costs the client one round trip on the same
/// host, so caching it buys nothing and risks stale addresses.
pub const LOCAL_TTL: u32 = 0;

/// A fast, well-mixed hasher (multiply-rotate, murmur3 finaliser). Keys are
/// names registered by the runtime, not attacker-chosen, so a keyed hash is
/// not needed; lookups of arbitrary names only probe.
#[derive(Default, Clone, Copy)]
pub struct MixHasher(u64);

impl Hasher for MixHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            if let Some(dst) = b.get_mut(..chunk.len()) {
                dst.copy_from_slice(chunk);
            }
            self.0 = (self.0 ^ u64::from_le_bytes(b))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(29);
        }
    }

    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<MixHasher>>;

fn shard_of<Q: Hash + ?Sized>(k: &Q) -> usize {
    let mut h = MixHasher::default();
    k.hash(&mut h);
    // Bits 32..38: used neither by hashbrown's bucket index (low bits) nor its
    // control byte (top 7 bits), so keys of one shard still spread well.
    ((h.finish() >> 32) as usize) & (SHARDS - 1)
}

#[derive(Clone)]
struct Sharded<K, V> {
    shards: Arc<[Arc<FastMap<K, V>>]>,
}

impl<K: Hash + Eq + Clone, V: Clone> Sharded<K, V> {
    fn new() -> Self {
        Sharded {
            shards: (0..SHARDS).map(|_| Arc::new(FastMap::default())).collect(),
        }
    }

    fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards.get(shard_of(k))?.get(k)
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    fn edit(&self) -> ShardedEdit<K, V> {
        ShardedEdit {
            shards: self.shards.to_vec(),
        }
    }
}

struct ShardedEdit<K, V> {
    shards: Vec<Arc<FastMap<K, V>>>,
}

impl<K: Hash + Eq + Clone, V: Clone> ShardedEdit<K, V> {
    fn shard<Q: Hash + ?Sized>(&mut self, k: &Q) -> Option<&mut FastMap<K, V>> {
        self.shards.get_mut(shard_of(k)).map(Arc::make_mut)
    }

    fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards.get(shard_of(k))?.get(k)
    }

    fn finish(self) -> Sharded<K, V> {
        Sharded {
            shards: self.shards.into(),
        }
    }
}

/// Record ids under one key; almost always one.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ids {
    One(u32),
    Many(Box<[u32]>),
}

impl Ids {
    fn as_slice(&self) -> &[u32] {
        match self {
            Ids::One(x) => std::slice::from_ref(x),
            Ids::Many(v) => v,
        }
    }

    fn with(this: Option<&Ids>, id: u32) -> Ids {
        match this {
            None => Ids::One(id),
            Some(i) if i.as_slice().contains(&id) => i.clone(),
            Some(i) => {
                let mut v = i.as_slice().to_vec();
                v.push(id);
                Ids::Many(v.into())
            }
        }
    }

    fn without(&self, id: u32) -> Option<Ids> {
        let v: Vec<u32> = self
            .as_slice()
            .iter()
            .copied()
            .filter(|&x| x != id)
            .collect();
        match v.as_slice() {
            [] => None,
            [one] => Some(Ids::One(*one)),
            _ => Some(Ids::Many(v.into())),
        }
    }
}

/// One attachment as the query path sees it.
#[derive(Debug)]
struct Rec {
    net: u16,
    ctr: Box<str>,
    v4: Box<[Ipv4Addr]>,
    v6: Box<[Ipv6Addr]>,
    names: Box<[Box<[u8]>]>,
}

#[derive(Debug, Clone)]
struct NetInfo {
    domain: Box<[u8]>,
    internal: bool,
    upstreams: Arc<[SocketAddr]>,
}

/// An immutable view of the registry for the query path. Cheap to clone.
#[derive(Clone)]
pub struct Snapshot {
    nets: Arc<[Option<NetInfo>]>,
    listen: Arc<FastMap<IpAddr, u16>>,
    zones: Arc<[Box<[u8]>]>,
    names: Sharded<Box<[u8]>, Ids>,
    addrs: Sharded<IpAddr, Ids>,
    ctrs: Sharded<Box<str>, Ids>,
    recs: Sharded<u32, Arc<Rec>>,
    default_upstreams: Arc<[SocketAddr]>,
}

/// What the query path should do after [`Snapshot::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The response is in the output buffer.
    Answered,
    /// Forward to these upstreams (in order). The output buffer holds a
    /// SERVFAIL to send if forwarding cannot even start.
    Forward(Arc<[SocketAddr]>),
    /// Send nothing (not a query).
    Drop,
}

#[derive(Default)]
struct NetSet {
    ids: [u16; MAX_VISIBLE],
    len: usize,
}

impl NetSet {
    fn insert(&mut self, id: u16) {
        if !self.contains(id) {
            if let Some(slot) = self.ids.get_mut(self.len) {
                *slot = id;
                self.len += 1;
            }
        }
    }

    fn contains(&self, id: u16) -> bool {
        self.as_slice().contains(&id)
    }

    fn as_slice(&self) -> &[u16] {
        self.ids.get(..self.len).unwrap_or(&[])
    }
}

fn in_zone(name: &[u8], domain: &[u8]) -> bool {
    name == domain
        || (name.len() > domain.len()
            && name.ends_with(domain)
            && name.get(name.len() - domain.len() - 1) == Some(&b'.'))
}

impl Snapshot {
    /// An empty snapshot forwarding to `default_upstreams`.
    pub fn empty(default_upstreams: &[SocketAddr]) -> Snapshot {
        Snapshot {
            nets: Arc::from(Vec::new()),
            listen: Arc::new(FastMap::default()),
            zones: Arc::from(Vec::new()),
            names: Sharded::new(),
            addrs: Sharded::new(),
            ctrs: Sharded::new(),
            recs: Sharded::new(),
            default_upstreams: default_upstreams.into(),
        }
    }

    /// Number of records (attachments).
    pub fn records(&self) -> usize {
        self.recs.len()
    }

    fn net(&self, id: u16) -> Option<&NetInfo> {
        self.nets.get(id as usize)?.as_ref()
    }

    fn rec(&self, id: u32) -> Option<&Rec> {
        self.recs.get(&id).map(|r| &**r)
    }

    /// Answers `q` (parsed from `msg`) asked by `src` at local address
    /// `local`. The response (or, for [`Outcome::Forward`], a SERVFAIL
    /// fallback) is written to `out`, at most `limit` bytes (TC set beyond).
    ///
    /// Scoping: the asker sees the names of the networks its source address
    /// is registered on (all networks of its container). Names under any
    /// served domain and single-label names are answered here (NXDOMAIN when
    /// unknown, never forwarded: upstream cannot know them, and forwarding
    /// would leak container names); other names
    /// are forwarded unless every network of the asker is internal (or, for an
    /// unregistered asker, the network of the address it asked), which gets
    /// REFUSED.
    pub fn resolve(
        &self,
        msg: &[u8],
        q: &Query,
        src: IpAddr,
        local: IpAddr,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let mut vis = NetSet::default();
        // The asker's networks: every network its container is attached to
        // (found through the source address), as aardvark-dns scopes.
        if let Some(ids) = self.addrs.get(&src) {
            for &id in ids.as_slice() {
                let Some(r) = self.rec(id) else { continue };
                vis.insert(r.net);
                if let Some(all) = self.ctrs.get(&*r.ctr) {
                    for &other in all.as_slice() {
                        if let Some(o) = self.rec(other) {
                            vis.insert(o.net);
                        }
                    }
                }
            }
        }
        let listen_net = self.listen.get(&local).copied();
        let name = q.name();
        if q.qclass == wire::CLASS_IN && !q.odd {
            if q.qtype == qtype::PTR {
                if self.answer_ptr(msg, q, &vis, limit, out) {
                    return Outcome::Answered;
                }
            } else if self.answer_name(msg, q, &vis, limit, out) {
                return Outcome::Answered;
            } else {
                let zone = self.zones.iter().any(|d| in_zone(name, d));
                if zone || (!name.is_empty() && !name.contains(&b'.')) {
                    wire::empty_response(out, msg, q, rcode::NXDOMAIN, true);
                    return Outcome::Answered;
                }
            }
        }
        // Forwarding: allowed through the first non-internal network.
        let via = if vis.len > 0 {
            vis.as_slice()
                .iter()
                .filter_map(|&n| self.net(n))
                .find(|n| !n.internal)
        } else {
            listen_net.and_then(|n| self.net(n)).filter(|n| !n.internal)
        };
        match via {
            Some(n) => {
                let ups = if n.upstreams.is_empty() {
                    self.default_upstreams.clone()
                } else {
                    n.upstreams.clone()
                };
                wire::empty_response(out, msg, q, rcode::SERVFAIL, false);
                if ups.is_empty() {
                    return Outcome::Answered;
                }
                Outcome::Forward(ups)
            }
            None => {
                wire::empty_response(out, msg, q, rcode::REFUSED, false);
                Outcome::Answered
            }
        }
    }

    fn answer_name(
        &self,
        msg: &[u8],
        q: &Query,
        vis: &NetSet,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> bool {
        if vis.len == 0 {
            return false;
        }
        let name = q.name();
        let mut w = ResponseWriter::new(out, msg, q, rcode::NOERROR, true, limit);
        let mut seen: [u32; 8] = [u32::MAX; 8];
        let mut nseen = 0usize;
        let mut matched = false;
        let mut emit = |rid: u32, rec: &Rec, w: &mut ResponseWriter<'_>| {
            if seen.contains(&rid) {
                return;
            }
            if let Some(s) = seen.get_mut(nseen) {
                *s = rid;
                nseen += 1;
            }
            matched = true;
            if matches!(q.qtype, qtype::A | qtype::ANY) {
                for a in rec.v4.iter() {
                    w.push(LOCAL_TTL, Rdata::A(*a));
                }
            }
            if matches!(q.qtype, qtype::AAAA | qtype::ANY) {
                for a in rec.v6.iter() {
                    w.push(LOCAL_TTL, Rdata::Aaaa(*a));
                }
            }
        };
        // The bare name, on every visible network.
        if let Some(ids) = self.names.get(name) {
            for &rid in ids.as_slice() {
                if let Some(rec) = self.rec(rid) {
                    if vis.contains(rec.net) {
                        emit(rid, rec, &mut w);
                    }
                }
            }
        }
        // name.<domain>, on each visible network serving that domain.
        for &n in vis.as_slice() {
            let Some(net) = self.net(n) else { continue };
            let d = &net.domain;
            if name.len() > d.len() + 1 && in_zone(name, d) {
                let bare = name.get(..name.len() - d.len() - 1).unwrap_or(&[]);
                if let Some(ids) = self.names.get(bare) {
                    for &rid in ids.as_slice() {
                        if let Some(rec) = self.rec(rid) {
                            if rec.net == n {
                                emit(rid, rec, &mut w);
                            }
                        }
                    }
                }
            }
        }
        matched
    }

    fn answer_ptr(
        &self,
        msg: &[u8],
        q: &Query,
        vis: &NetSet,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> bool {
        if vis.len == 0 {
            return false;
        }
        let Some(ip) = wire::parse_reverse(q.name()) else {
            return false;
        };
        let Some(ids) = self.addrs.get(&ip) else {
            return false;
        };
        let mut w = ResponseWriter::new(out, msg, q, rcode::NOERROR, true, limit);
        for &rid in ids.as_slice() {
            let Some(rec) = self.rec(rid) else { continue };
            if !vis.contains(rec.net) {
                continue;
            }
            let Some(net) = self.net(rec.net) else {
                continue;
            };
            for n in rec.names.iter() {
                w.push(LOCAL_TTL, Rdata::Ptr(n, &net.domain));
            }
        }
        w.count() > 0
    }
}

/// Follows registry changes and publishes snapshots. Owned by the control
/// side; never touched by the query path.
pub struct Index {
    snap: Snapshot,
    net_ids: HashMap<String, u16>,
    net_table: Vec<Option<NetInfo>>,
    net_listen: HashMap<String, Vec<IpAddr>>,
    rec_ids: HashMap<(String, AttachmentId), u32>,
    free_recs: Vec<u32>,
    next_rec: u32,
}

impl Index {
    /// An empty index.
    pub fn new(default_upstreams: &[SocketAddr]) -> Index {
        Index {
            snap: Snapshot::empty(default_upstreams),
            net_ids: HashMap::new(),
            net_table: Vec::new(),
            net_listen: HashMap::new(),
            rec_ids: HashMap::new(),
            free_recs: Vec::new(),
            next_rec: 0,
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.snap.clone()
    }

    /// Applies changes (in order) and returns the new snapshot.
    pub fn apply(&mut self, changes: &[Change]) -> Snapshot {
        if changes.is_empty() {
            return self.snapshot();
        }
        let mut names = self.snap.names.edit();
        let mut addrs = self.snap.addrs.edit();
        let mut ctrs = self.snap.ctrs.edit();
        let mut recs = self.snap.recs.edit();
        let mut nets_changed = false;
        for c in changes {
            match c {
                Change::Network(spec) => {
                    self.set_network(spec);
                    nets_changed = true;
                }
                Change::NetworkGone(name) => {
                    if let Some(id) = self.net_ids.remove(name) {
                        if let Some(slot) = self.net_table.get_mut(id as usize) {
                            *slot = None;
                        }
                    }
                    self.net_listen.remove(name);
                    nets_changed = true;
                }
                Change::Record(spec) => {
                    let key = (spec.network.clone(), spec.attachment.clone());
                    if let Some(old) = self.rec_ids.get(&key).copied() {
                        Self::unlink(old, &mut names, &mut addrs, &mut ctrs, &mut recs);
                        self.free_recs.push(old);
                        self.rec_ids.remove(&key);
                    }
                    let Some(&net) = self.net_ids.get(&spec.network) else {
                        continue;
                    };
                    let id = self.free_recs.pop().unwrap_or_else(|| {
                        self.next_rec += 1;
                        self.next_rec - 1
                    });
                    Self::link(id, net, spec, &mut names, &mut addrs, &mut ctrs, &mut recs);
                    self.rec_ids.insert(key, id);
                }
                Change::RecordGone(net, att) => {
                    if let Some(old) = self.rec_ids.remove(&(net.clone(), att.clone())) {
                        Self::unlink(old, &mut names, &mut addrs, &mut ctrs, &mut recs);
                        self.free_recs.push(old);
                    }
                }
            }
        }
        if nets_changed {
            self.snap.nets = self.net_table.clone().into();
            let mut listen = FastMap::default();
            for (name, addrs) in &self.net_listen {
                if let Some(&id) = self.net_ids.get(name) {
                    for a in addrs {
                        listen.insert(*a, id);
                    }
                }
            }
            self.snap.listen = Arc::new(listen);
            let mut zones: Vec<Box<[u8]>> = Vec::new();
            for n in self.net_table.iter().flatten() {
                if !zones.contains(&n.domain) {
                    zones.push(n.domain.clone());
                }
            }
            self.snap.zones = zones.into();
        }
        self.snap.names = names.finish();
        self.snap.addrs = addrs.finish();
        self.snap.ctrs = ctrs.finish();
        self.snap.recs = recs.finish();
        self.snapshot()
    }

    fn set_network(&mut self, spec: &NetworkSpec) {
        let info = NetInfo {
            domain: spec.domain.as_bytes().into(),
            internal: spec.internal,
            upstreams: spec.upstreams.as_slice().into(),
        };
        let id = match self.net_ids.get(&spec.name) {
            Some(&id) => id,
            None => {
                let id = self
                    .net_table
                    .iter()
                    .position(Option::is_none)
                    .unwrap_or(self.net_table.len());
                let id = u16::try_from(id).unwrap_or(u16::MAX);
                self.net_ids.insert(spec.name.clone(), id);
                id
            }
        };
        let idx = id as usize;
        if self.net_table.len() <= idx {
            self.net_table.resize(idx + 1, None);
        }
        if let Some(slot) = self.net_table.get_mut(idx) {
            *slot = Some(info);
        }
        self.net_listen
            .insert(spec.name.clone(), spec.listen.clone());
    }

    fn link(
        id: u32,
        net: u16,
        spec: &RecordSpec,
        names: &mut ShardedEdit<Box<[u8]>, Ids>,
        addrs: &mut ShardedEdit<IpAddr, Ids>,
        ctrs: &mut ShardedEdit<Box<str>, Ids>,
        recs: &mut ShardedEdit<u32, Arc<Rec>>,
    ) {
        let rec = Rec {
            net,
            ctr: spec.attachment.container_id.as_str().into(),
            v4: spec
                .addrs
                .iter()
                .filter_map(|a| match a {
                    IpAddr::V4(v) => Some(*v),
                    IpAddr::V6(_) => None,
                })
                .collect(),
            v6: spec
                .addrs
                .iter()
                .filter_map(|a| match a {
                    IpAddr::V6(v) => Some(*v),
                    IpAddr::V4(_) => None,
                })
                .collect(),
            names: spec.names.iter().map(|n| n.as_bytes().into()).collect(),
        };
        for n in rec.names.iter() {
            let new = Ids::with(names.get(&**n), id);
            if let Some(s) = names.shard(&**n) {
                s.insert(n.clone(), new);
            }
        }
        for a in &spec.addrs {
            let new = Ids::with(addrs.get(a), id);
            if let Some(s) = addrs.shard(a) {
                s.insert(*a, new);
            }
        }
        let new = Ids::with(ctrs.get(&*rec.ctr), id);
        if let Some(s) = ctrs.shard(&*rec.ctr) {
            s.insert(rec.ctr.clone(), new);
        }
        if let Some(s) = recs.shard(&id) {
            s.insert(id, Arc::new(rec));
        }
    }

    fn unlink(
        id: u32,
        names: &mut ShardedEdit<Box<[u8]>, Ids>,
        addrs: &mut ShardedEdit<IpAddr, Ids>,
        ctrs: &mut ShardedEdit<Box<str>, Ids>,
        recs: &mut ShardedEdit<u32, Arc<Rec>>,
    ) {
        let Some(rec) = recs.get(&id).cloned() else {
            return;
        };
        let rest = ctrs.get(&*rec.ctr).and_then(|ids| ids.without(id));
        if let Some(s) = ctrs.shard(&*rec.ctr) {
            match rest {
                Some(r) => s.insert(rec.ctr.clone(), r),
                None => s.remove(&*rec.ctr),
            };
        }
        for n in rec.names.iter() {
            let rest = names.get(&**n).and_then(|ids| ids.without(id));
            if let Some(s) = names.shard(&**n) {
                match rest {
                    Some(r) => s.insert(n.clone(), r),
                    None => s.remove(&**n),
                };
            }
        }
        let all = rec
            .v4
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(rec.v6.iter().map(|a| IpAddr::V6(*a)));
        for a in all {
            let rest = addrs.get(&a).and_then(|ids| ids.without(id));
            if let Some(s) = addrs.shard(&a) {
                match rest {
                    Some(r) => s.insert(a, r),
                    None => s.remove(&a),
                };
            }
        }
        if let Some(s) = recs.shard(&id) {
            s.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::registry::Registry;
    use hickory_proto::op::{Message, Query as HQuery, ResponseCode};
    use hickory_proto::rr::{Name, RData, RecordType};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(name: &str, domain: &str, gw: &str, internal: bool) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            domain: domain.into(),
            internal,
            listen: vec![ip(gw)],
            upstreams: vec![],
        }
    }

    fn att(c: &str) -> AttachmentId {
        AttachmentId {
            container_id: c.into(),
            ifname: "eth0".into(),
        }
    }

    struct T {
        reg: Registry,
        idx: Index,
        snap: Snapshot,
    }

    impl T {
        fn new() -> T {
            let up: SocketAddr = "192.0.2.53:53".parse().unwrap();
            let idx = Index::new(&[up]);
            T {
                reg: Registry::default(),
                snap: idx.snapshot(),
                idx,
            }
        }
        fn reg(&mut self, n: NetworkSpec, c: &str, names: &[&str], addrs: &[&str]) {
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            let addrs: Vec<IpAddr> = addrs.iter().map(|s| ip(s)).collect();
            let ch = self.reg.register(n, att(c), &names, &addrs).unwrap();
            self.snap = self.idx.apply(&ch);
        }
        fn unreg(&mut self, n: &str, c: &str) {
            let ch = self.reg.unregister(n, &att(c));
            self.snap = self.idx.apply(&ch);
        }
        fn ask(&self, src: &str, local: &str, name: &str, rt: RecordType) -> (Outcome, Message) {
            let mut m = Message::query();
            m.metadata.id = 7;
            m.metadata.recursion_desired = true;
            m.add_query(HQuery::query(Name::from_ascii(name).unwrap(), rt));
            let raw = m.to_vec().unwrap();
            let q = Query::parse(&raw).unwrap();
            let mut out = Vec::new();
            let o = self
                .snap
                .resolve(&raw, &q, ip(src), ip(local), 512, &mut out);
            (o, Message::from_vec(&out).unwrap())
        }
    }

    fn addrs(m: &Message) -> Vec<IpAddr> {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn scoped_lookups() {
        let mut t = T::new();
        let n1 = net("n1", "", "10.1.0.1", false);
        let n2 = net("n2", "other.test", "10.2.0.1", false);
        t.reg(n1.clone(), "a", &["web", "www"], &["10.1.0.2", "fd01::2"]);
        t.reg(n1.clone(), "b", &["db"], &["10.1.0.3"]);
        t.reg(n2.clone(), "c", &["cache"], &["10.2.0.2"]);

        // bare, domain, alias, AAAA, case-insensitive
        let (o, m) = t.ask("10.1.0.3", "10.1.0.1", "web.", RecordType::A);
        assert_eq!(o, Outcome::Answered);
        assert_eq!(addrs(&m), vec![ip("10.1.0.2")]);
        assert!(m.metadata.authoritative);
        assert_eq!(m.answers[0].ttl, LOCAL_TTL);
        let (_, m) = t.ask("10.1.0.3", "10.1.0.1", "WWW.dns.rnet.", RecordType::AAAA);
        assert_eq!(addrs(&m), vec![ip("fd01::2")]);
        // NODATA: name exists, no AAAA
        let (_, m) = t.ask("10.1.0.2", "10.1.0.1", "db.dns.rnet.", RecordType::AAAA);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        // other network: not visible -> NXDOMAIN (in zone / single label)
        let (_, m) = t.ask("10.2.0.2", "10.2.0.1", "web.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let (_, m) = t.ask("10.2.0.2", "10.2.0.1", "web.dns.rnet.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let (_, m) = t.ask("10.2.0.2", "10.2.0.1", "cache.other.test.", RecordType::A);
        assert_eq!(addrs(&m), vec![ip("10.2.0.2")]);
        // unknown asker sees nothing
        let (_, m) = t.ask("10.9.9.9", "10.1.0.1", "web.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        // PTR
        let (_, m) = t.ask(
            "10.1.0.3",
            "10.1.0.1",
            "2.0.1.10.in-addr.arpa.",
            RecordType::PTR,
        );
        let ptrs: Vec<String> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(p) => Some(p.0.to_ascii()),
                _ => None,
            })
            .collect();
        assert_eq!(ptrs, vec!["web.dns.rnet.", "www.dns.rnet."]);
        // PTR of a container on another network is not ours to answer: forwarded
        let (o, _) = t.ask(
            "10.2.0.2",
            "10.2.0.1",
            "2.0.1.10.in-addr.arpa.",
            RecordType::PTR,
        );
        assert!(matches!(o, Outcome::Forward(_)));
        // external names forward
        let (o, m) = t.ask("10.1.0.3", "10.1.0.1", "example.com.", RecordType::A);
        assert!(matches!(o, Outcome::Forward(ref u) if u[0] == "192.0.2.53:53".parse().unwrap()));
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    }

    #[test]
    fn internal_never_forwards() {
        let mut t = T::new();
        t.reg(net("int", "", "10.3.0.1", true), "a", &["a"], &["10.3.0.2"]);
        let (o, m) = t.ask("10.3.0.2", "10.3.0.1", "example.com.", RecordType::A);
        assert_eq!(o, Outcome::Answered);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        // unregistered asker at the internal network's address: refused too
        let (o, _) = t.ask("10.3.0.77", "10.3.0.1", "example.com.", RecordType::A);
        assert_eq!(o, Outcome::Answered);
        // on an internal and an external network: forwards via the external one
        t.reg(
            net("ext", "", "10.4.0.1", false),
            "a",
            &["a"],
            &["10.4.0.2"],
        );
        let (o, _) = t.ask("10.3.0.2", "10.3.0.1", "example.com.", RecordType::A);
        assert!(matches!(o, Outcome::Forward(_)));
        // and sees names of both its networks
        t.reg(
            net("ext", "", "10.4.0.1", false),
            "e",
            &["e"],
            &["10.4.0.5"],
        );
        let (_, m) = t.ask("10.3.0.2", "10.3.0.1", "e.", RecordType::A);
        assert_eq!(addrs(&m), vec![ip("10.4.0.5")]);
    }

    #[test]
    fn changes_are_visible_and_old_snapshots_intact() {
        let mut t = T::new();
        let n1 = net("n1", "", "10.1.0.1", false);
        for i in 0..300 {
            t.reg(
                n1.clone(),
                &format!("c{i}"),
                &[&format!("n{i}")],
                &[&format!("10.1.{}.{}", i / 200, 2 + i % 200)],
            );
        }
        let old = t.snap.clone();
        t.unreg("n1", "c5");
        let (_, m) = t.ask("10.1.0.2", "10.1.0.1", "n5.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let (_, m) = t.ask("10.1.0.2", "10.1.0.1", "n299.", RecordType::A);
        assert_eq!(addrs(&m), vec![ip("10.1.1.101")]);
        // The old snapshot still answers n5.
        let t_old = T {
            snap: old,
            ..T::new()
        };
        let (_, m) = t_old.ask("10.1.0.2", "10.1.0.1", "n5.", RecordType::A);
        assert_eq!(addrs(&m), vec![ip("10.1.0.7")]);
        // Re-register with a new address replaces the old one.
        t.reg(n1.clone(), "c6", &["n6"], &["10.1.9.9"]);
        let (_, m) = t.ask("10.1.0.2", "10.1.0.1", "n6.", RecordType::A);
        assert_eq!(addrs(&m), vec![ip("10.1.9.9")]);
        assert_eq!(t.snap.records(), 299);
        // Two containers with one name: both addresses.
        t.reg(n1.clone(), "dup", &["n7"], &["10.1.8.8"]);
        let (_, m) = t.ask("10.1.0.2", "10.1.0.1", "n7.dns.rnet.", RecordType::A);
        assert_eq!(addrs(&m).len(), 2);
        // Last record gone: network gone.
        for i in 0..300 {
            t.unreg("n1", &format!("c{i}"));
        }
        t.unreg("n1", "dup");
        assert_eq!(t.snap.records(), 0);
        assert!(t.reg.networks.is_empty());
    }
}
