//! The query-side index: an immutable [`Snapshot`] answering a query with no
//! lock and no allocation, and the [`Index`] that owns the records and
//! derives each next snapshot.
//!
//! The index *is* the resolver's registry: the daemon keeps no other copy of
//! the records. Each record is one packed allocation in a copy-on-write slab,
//! and names, addresses and container IDs are found through sharded arrays
//! of `(hash, record id)` pairs (see the `table` module for the layout and
//! the measured sizes). A change is staged in an edit that copies only the
//! shards and slab chunks it touches; [`Index::publish`] turns it into the
//! next snapshot, and the previous snapshot stays intact for the queries
//! still using it. Lookups are one binary search in one small shard and a
//! comparison against the record.

use crate::error::DnsError;
use crate::registry::{AttachmentId, NetworkSpec, RecordSpec, RegistryFile};
use crate::table::{
    Fields, MixHasher, Multi, MultiEdit, PackError, Packed, Slab, SlabEdit, hash_bytes, hash_ip,
};
use crate::wire::{self, Query, Rdata, ResponseWriter, qtype, rcode};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Networks one asker can see at most (a container on more DNS-enabled
/// networks sees the first 16).
const MAX_VISIBLE: usize = 16;

/// TTL of local answers. Zero, as aardvark-dns (since 1.13) and dnsmasq's
/// `local-ttl` default: a container can restart with a new address at any
/// moment, and a local answer costs the client one round trip on the same
/// host, so caching it buys nothing and risks stale addresses.
pub const LOCAL_TTL: u32 = 0;

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<MixHasher>>;

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
    names: Multi,
    addrs: Multi,
    ctrs: Multi,
    recs: Slab,
    count: usize,
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
            names: Multi::new(),
            addrs: Multi::new(),
            ctrs: Multi::new(),
            recs: Slab::new(),
            count: 0,
            default_upstreams: default_upstreams.into(),
        }
    }

    /// Number of records (attachments).
    pub fn records(&self) -> usize {
        self.count
    }

    fn net(&self, id: u16) -> Option<&NetInfo> {
        self.nets.get(id as usize)?.as_ref()
    }

    /// Records holding address `ip`, with their ids.
    fn by_addr<'s>(&'s self, ip: &'s IpAddr) -> impl Iterator<Item = (u32, Packed<'s>)> + 's {
        self.addrs.ids(hash_ip(ip)).filter_map(move |id| {
            let r = self.recs.get(id)?;
            r.has_addr(ip).then_some((id, r))
        })
    }

    /// Records named `name`, with their ids.
    fn by_name<'s>(&'s self, name: &'s [u8]) -> impl Iterator<Item = (u32, Packed<'s>)> + 's {
        self.names.ids(hash_bytes(name)).filter_map(move |id| {
            let r = self.recs.get(id)?;
            r.has_name(name).then_some((id, r))
        })
    }

    /// Records of container `cid`.
    fn by_ctr<'s>(&'s self, cid: &'s [u8]) -> impl Iterator<Item = Packed<'s>> + 's {
        self.ctrs.ids(hash_bytes(cid)).filter_map(move |id| {
            let r = self.recs.get(id)?;
            (r.cid() == cid).then_some(r)
        })
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
        for (_, r) in self.by_addr(&src) {
            vis.insert(r.net());
            for o in self.by_ctr(r.cid()) {
                vis.insert(o.net());
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
        let mut emit = |rid: u32, rec: Packed<'_>, w: &mut ResponseWriter<'_>| {
            if seen.contains(&rid) {
                return;
            }
            if let Some(s) = seen.get_mut(nseen) {
                *s = rid;
                nseen += 1;
            }
            matched = true;
            if matches!(q.qtype, qtype::A | qtype::ANY) {
                for a in rec.v4() {
                    w.push(LOCAL_TTL, Rdata::A(a));
                }
            }
            if matches!(q.qtype, qtype::AAAA | qtype::ANY) {
                for a in rec.v6() {
                    w.push(LOCAL_TTL, Rdata::Aaaa(a));
                }
            }
        };
        // The bare name, on every visible network.
        for (rid, rec) in self.by_name(name) {
            if vis.contains(rec.net()) {
                emit(rid, rec, &mut w);
            }
        }
        // name.<domain>, on each visible network serving that domain.
        for &n in vis.as_slice() {
            let Some(net) = self.net(n) else { continue };
            let d = &net.domain;
            if name.len() > d.len() + 1 && in_zone(name, d) {
                let bare = name.get(..name.len() - d.len() - 1).unwrap_or(&[]);
                for (rid, rec) in self.by_name(bare) {
                    if rec.net() == n {
                        emit(rid, rec, &mut w);
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
        let mut w = ResponseWriter::new(out, msg, q, rcode::NOERROR, true, limit);
        for (_, rec) in self.by_addr(&ip) {
            if !vis.contains(rec.net()) {
                continue;
            }
            let Some(net) = self.net(rec.net()) else {
                continue;
            };
            for n in rec.names() {
                w.push(LOCAL_TTL, Rdata::Ptr(n, &net.domain));
            }
        }
        w.count() > 0
    }
}

/// A network as the index keeps it, with its record count (a network exists
/// while it has records).
struct NetSlot {
    spec: NetworkSpec,
    records: usize,
}

/// Changes staged since the last [`Index::publish`].
struct Work {
    names: MultiEdit,
    addrs: MultiEdit,
    ctrs: MultiEdit,
    recs: SlabEdit,
}

impl Work {
    fn new(s: &Snapshot) -> Work {
        Work {
            names: s.names.edit(),
            addrs: s.addrs.edit(),
            ctrs: s.ctrs.edit(),
            recs: s.recs.edit(),
        }
    }

    /// The record of `att` on network `net`.
    fn find(&self, net: u16, att: &AttachmentId) -> Option<u32> {
        let cid = att.container_id.as_bytes();
        self.ctrs.ids(hash_bytes(cid)).find(|&id| {
            self.recs.get(id).is_some_and(|r| {
                r.net() == net && r.cid() == cid && r.ifname() == att.ifname.as_bytes()
            })
        })
    }

    fn link(&mut self, id: u32, rec: crate::table::Rec) {
        let p = Packed(&rec);
        for n in p.names() {
            self.names.insert(hash_bytes(n), id);
        }
        for a in p.addrs() {
            self.addrs.insert(hash_ip(&a), id);
        }
        self.ctrs.insert(hash_bytes(p.cid()), id);
        self.recs.set(id, Some(rec));
    }

    fn unlink(&mut self, id: u32) {
        let Some(rec) = self.recs.get_rec(id) else {
            return;
        };
        let p = Packed(&rec);
        for n in p.names() {
            self.names.remove(hash_bytes(n), id);
        }
        for a in p.addrs() {
            self.addrs.remove(hash_ip(&a), id);
        }
        self.ctrs.remove(hash_bytes(p.cid()), id);
        self.recs.set(id, None);
    }
}

/// The resolver's registry and the source of its snapshots. Owned by the
/// control side; never touched by the query path.
///
/// Changes ([`Index::register`], [`Index::unregister`], [`Index::gc`]) are
/// staged and become visible to queries with [`Index::publish`]. They have
/// the semantics of [`crate::registry::Registry`]'s: register is an upsert,
/// removing what is not there is a no-op, and a network goes with its last
/// record.
pub struct Index {
    snap: Snapshot,
    nets: Vec<Option<NetSlot>>,
    nets_changed: bool,
    free: Vec<u32>,
    next: u32,
    count: usize,
    work: Option<Work>,
}

fn pack(net: u16, rec: &RecordSpec) -> Result<crate::table::Rec, DnsError> {
    Packed::encode(&Fields {
        net,
        cid: &rec.attachment.container_id,
        ifname: &rec.attachment.ifname,
        names: &rec.names,
        addrs: &rec.addrs,
    })
    .map_err(|PackError::TooLarge(what)| {
        DnsError::Invalid(format!(
            "container {} on network {}: too many {what} in one registration (at most {})",
            rec.attachment.container_id,
            rec.network,
            crate::table::PACK_MAX
        ))
    })
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Index {
    /// An empty index.
    pub fn new(default_upstreams: &[SocketAddr]) -> Index {
        Index {
            snap: Snapshot::empty(default_upstreams),
            nets: Vec::new(),
            nets_changed: false,
            free: Vec::new(),
            next: 0,
            count: 0,
            work: None,
        }
    }

    /// The last published snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.snap.clone()
    }

    /// Number of records, staged changes included.
    pub fn len(&self) -> usize {
        self.count
    }

    /// No records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The networks (each has at least one record).
    pub fn networks(&self) -> impl Iterator<Item = &NetworkSpec> {
        self.nets.iter().flatten().map(|s| &s.spec)
    }

    fn net_id(&self, name: &str) -> Option<u16> {
        self.nets
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.spec.name == name))
            .and_then(|i| u16::try_from(i).ok())
    }

    fn new_net_id(&self) -> Result<u16, DnsError> {
        let i = self
            .nets
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.nets.len());
        u16::try_from(i).map_err(|_| {
            DnsError::Invalid(format!(
                "the resolver serves {} DNS-enabled networks already, its limit",
                self.nets.len()
            ))
        })
    }

    fn work(&mut self) -> &mut Work {
        let snap = &self.snap;
        self.work.get_or_insert_with(|| Work::new(snap))
    }

    fn rec(&self, id: u32) -> Option<Packed<'_>> {
        match &self.work {
            Some(w) => w.recs.get(id),
            None => self.snap.recs.get(id),
        }
    }

    fn ids(&self) -> Vec<u32> {
        match &self.work {
            Some(w) => w.recs.iter().map(|(id, _)| id).collect(),
            None => self.snap.recs.edit().iter().map(|(id, _)| id).collect(),
        }
    }

    /// Checks that a prepared registration fits (network table, record
    /// limits) without changing anything; [`Index::register`] then cannot
    /// fail. The server checks before it journals a change.
    pub fn check(&self, network: &NetworkSpec, rec: &RecordSpec) -> Result<(), DnsError> {
        if self.net_id(&network.name).is_none() {
            self.new_net_id()?;
        }
        pack(0, rec).map(drop)
    }

    /// Adds or replaces the record of a prepared registration (see
    /// [`crate::registry::Registry::prepare`]) on `network`, creating or
    /// updating the network. Returns whether anything changed. Staged until
    /// [`Index::publish`].
    pub fn register(&mut self, network: NetworkSpec, rec: &RecordSpec) -> Result<bool, DnsError> {
        let nid = match self.net_id(&network.name) {
            Some(id) => id,
            None => self.new_net_id()?,
        };
        let packed = pack(nid, rec)?;
        let mut changed = false;
        let i = nid as usize;
        if self.nets.len() <= i {
            self.nets.resize_with(i + 1, || None);
        }
        match self.nets.get_mut(i) {
            Some(Some(slot)) if slot.spec != network => {
                slot.spec = network;
                changed = true;
            }
            Some(Some(_)) | None => {}
            Some(empty) => {
                *empty = Some(NetSlot {
                    spec: network,
                    records: 0,
                });
                changed = true;
            }
        }
        self.nets_changed |= changed;
        let w = self.work();
        match w.find(nid, &rec.attachment) {
            Some(old) => {
                if w.recs.get(old).is_some_and(|r| r.0 == &packed[..]) {
                    return Ok(changed);
                }
                w.unlink(old);
                w.link(old, packed);
            }
            None => {
                let id = match self.free.pop() {
                    Some(id) => id,
                    None => {
                        self.next += 1;
                        self.next - 1
                    }
                };
                self.work().link(id, packed);
                self.count += 1;
                if let Some(Some(slot)) = self.nets.get_mut(i) {
                    slot.records += 1;
                }
            }
        }
        Ok(true)
    }

    fn drop_record(&mut self, nid: u16, id: u32) {
        self.work().unlink(id);
        self.free.push(id);
        self.count = self.count.saturating_sub(1);
        if let Some(s) = self.nets.get_mut(nid as usize) {
            if let Some(slot) = s {
                slot.records = slot.records.saturating_sub(1);
                if slot.records == 0 {
                    *s = None;
                    self.nets_changed = true;
                }
            }
        }
    }

    /// Removes the record of `attachment` on `network`; the network goes with
    /// its last record. Returns the number removed (0 or 1).
    pub fn unregister(&mut self, network: &str, attachment: &AttachmentId) -> usize {
        let Some(nid) = self.net_id(network) else {
            return 0;
        };
        let Some(id) = self.work().find(nid, attachment) else {
            return 0;
        };
        self.drop_record(nid, id);
        1
    }

    /// Removes every record of `network` whose attachment is not in `valid`.
    /// Returns the number removed.
    pub fn gc(&mut self, network: &str, valid: &[AttachmentId]) -> usize {
        let Some(nid) = self.net_id(network) else {
            return 0;
        };
        let keep: HashSet<(&[u8], &[u8])> = valid
            .iter()
            .map(|a| (a.container_id.as_bytes(), a.ifname.as_bytes()))
            .collect();
        let w = self.work();
        let stale: Vec<u32> = w
            .recs
            .iter()
            .filter(|(_, r)| r.net() == nid && !keep.contains(&(r.cid(), r.ifname())))
            .map(|(id, _)| id)
            .collect();
        for &id in &stale {
            self.drop_record(nid, id);
        }
        stale.len()
    }

    /// Makes the staged changes visible: returns the new snapshot (the
    /// current one if nothing was staged).
    pub fn publish(&mut self) -> Snapshot {
        if self.nets_changed {
            self.nets_changed = false;
            let mut listen = FastMap::default();
            let mut zones: Vec<Box<[u8]>> = Vec::new();
            let mut table = Vec::with_capacity(self.nets.len());
            for (id, slot) in self.nets.iter().enumerate() {
                let Some(s) = slot else {
                    table.push(None);
                    continue;
                };
                let id = u16::try_from(id).unwrap_or(u16::MAX);
                for a in &s.spec.listen {
                    listen.insert(*a, id);
                }
                let domain: Box<[u8]> = s.spec.domain.as_bytes().into();
                if !zones.contains(&domain) {
                    zones.push(domain.clone());
                }
                table.push(Some(NetInfo {
                    domain,
                    internal: s.spec.internal,
                    upstreams: s.spec.upstreams.as_slice().into(),
                }));
            }
            self.snap.nets = table.into();
            self.snap.listen = Arc::new(listen);
            self.snap.zones = zones.into();
        }
        if let Some(w) = self.work.take() {
            self.snap.names = w.names.finish();
            self.snap.addrs = w.addrs.finish();
            self.snap.ctrs = w.ctrs.finish();
            self.snap.recs = w.recs.finish();
        }
        self.snap.count = self.count;
        self.snapshot()
    }

    /// Record ids in file order: network name, container ID, ifname.
    fn file_order(&self) -> Vec<u32> {
        let mut ids = self.ids();
        let key = |id: u32| {
            self.rec(id).map(|r| {
                let net = self
                    .nets
                    .get(r.net() as usize)
                    .and_then(Option::as_ref)
                    .map_or("", |s| s.spec.name.as_str());
                (net, r.cid(), r.ifname())
            })
        };
        ids.sort_by(|&a, &b| key(a).cmp(&key(b)));
        ids
    }

    fn net_name(&self, r: Packed<'_>) -> &str {
        self.nets
            .get(r.net() as usize)
            .and_then(Option::as_ref)
            .map_or("", |s| s.spec.name.as_str())
    }

    fn sorted_networks(&self) -> Vec<&NetworkSpec> {
        let mut nets: Vec<&NetworkSpec> = self.networks().collect();
        nets.sort_by(|a, b| a.name.cmp(&b.name));
        nets
    }

    fn spec_of(&self, r: Packed<'_>) -> RecordSpec {
        RecordSpec {
            network: self.net_name(r).to_owned(),
            attachment: AttachmentId {
                container_id: lossy(r.cid()),
                ifname: lossy(r.ifname()),
            },
            names: r.names().map(lossy).collect(),
            addrs: r.addrs().collect(),
        }
    }

    /// The record of `attachment` on `network`, staged changes included.
    pub fn record(&self, network: &str, attachment: &AttachmentId) -> Option<RecordSpec> {
        let nid = self.net_id(network)?;
        let id = match &self.work {
            Some(w) => w.find(nid, attachment),
            None => Work::new(&self.snap).find(nid, attachment),
        }?;
        self.rec(id).map(|r| self.spec_of(r))
    }

    /// The registry's file form (networks by name, records by network and
    /// attachment, as [`crate::registry::Registry::to_file`]).
    pub fn to_file(&self) -> RegistryFile {
        RegistryFile {
            version: 1,
            networks: self.sorted_networks().into_iter().cloned().collect(),
            records: self
                .file_order()
                .into_iter()
                .filter_map(|id| self.rec(id))
                .map(|r| self.spec_of(r))
                .collect(),
        }
    }

    /// Writes the file form as JSON, one record at a time (the registry is
    /// never materialised as owned strings: compaction at 10,000 names
    /// costs a sorted id array, not megabytes).
    pub fn write_file(&self, w: &mut dyn std::io::Write) -> Result<(), serde_json::Error> {
        serde_json::to_writer(
            w,
            &FileOut {
                index: self,
                networks: self.sorted_networks(),
                order: self.file_order(),
            },
        )
    }
}

struct FileOut<'a> {
    index: &'a Index,
    networks: Vec<&'a NetworkSpec>,
    order: Vec<u32>,
}

#[derive(Serialize)]
struct AttOut<'a> {
    #[serde(rename = "containerID")]
    container_id: &'a str,
    ifname: &'a str,
}

#[derive(Serialize)]
struct RecordOut<'a> {
    network: &'a str,
    attachment: AttOut<'a>,
    names: NamesOut<'a>,
    addrs: AddrsOut<'a>,
}

struct NamesOut<'a>(Packed<'a>);
struct AddrsOut<'a>(Packed<'a>);
struct RecordsOut<'a>(&'a FileOut<'a>);

fn text(b: &[u8]) -> &str {
    // Packed from `String`s: always UTF-8.
    std::str::from_utf8(b).unwrap_or("")
}

impl Serialize for NamesOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.names().map(text))
    }
}

impl Serialize for AddrsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.addrs())
    }
}

impl Serialize for RecordsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let f = self.0;
        s.collect_seq(f.order.iter().filter_map(|&id| {
            let r = f.index.rec(id)?;
            Some(RecordOut {
                network: f.index.net_name(r),
                attachment: AttOut {
                    container_id: text(r.cid()),
                    ifname: text(r.ifname()),
                },
                names: NamesOut(r),
                addrs: AddrsOut(r),
            })
        }))
    }
}

impl Serialize for FileOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("RegistryFile", 3)?;
        st.serialize_field("version", &1u32)?;
        st.serialize_field("networks", &self.networks)?;
        st.serialize_field("records", &RecordsOut(self))?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::registry::Registry;
    use hickory_proto::op::{Message, Query as HQuery, ResponseCode};
    use hickory_proto::rr::{Name, RData, RecordType};
    use proptest::prelude::*;

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
        idx: Index,
        snap: Snapshot,
    }

    impl T {
        fn new() -> T {
            let up: SocketAddr = "192.0.2.53:53".parse().unwrap();
            let idx = Index::new(&[up]);
            T {
                snap: idx.snapshot(),
                idx,
            }
        }
        fn reg(&mut self, n: NetworkSpec, c: &str, names: &[&str], addrs: &[&str]) {
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            let addrs: Vec<IpAddr> = addrs.iter().map(|s| ip(s)).collect();
            let (n, rec) = Registry::prepare(n, att(c), &names, &addrs).unwrap();
            self.idx.register(n, &rec).unwrap();
            self.snap = self.idx.publish();
        }
        fn unreg(&mut self, n: &str, c: &str) {
            self.idx.unregister(n, &att(c));
            self.snap = self.idx.publish();
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
        assert_eq!(t.idx.networks().count(), 0);
    }

    #[test]
    fn staged_changes_publish_together_and_batch() {
        let mut t = T::new();
        let n1 = net("n1", "", "10.1.0.1", false);
        t.reg(n1.clone(), "asker", &["asker"], &["10.1.0.2"]);
        // Staged, not yet visible.
        for i in 0..500 {
            let (n, rec) = Registry::prepare(
                n1.clone(),
                att(&format!("b{i}")),
                &[format!("b{i}")],
                &[ip(&format!("10.1.{}.{}", 1 + i / 200, 2 + i % 200))],
            )
            .unwrap();
            assert!(t.idx.register(n, &rec).unwrap());
        }
        assert_eq!(t.idx.len(), 501);
        assert_eq!(t.snap.records(), 1);
        let (_, m) = t.ask("10.1.0.2", "10.1.0.1", "b7.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        t.snap = t.idx.publish();
        assert_eq!(t.snap.records(), 501);
        let (_, m) = t.ask("10.1.0.2", "10.1.0.1", "b499.", RecordType::A);
        assert_eq!(addrs(&m), vec![ip("10.1.3.101")]);
        // The same registration again changes nothing.
        let (n, rec) =
            Registry::prepare(n1.clone(), att("b3"), &["b3".into()], &[ip("10.1.1.5")]).unwrap();
        assert!(!t.idx.register(n, &rec).unwrap());
        assert_eq!(
            t.idx.record("n1", &att("b3")).unwrap().addrs,
            vec![ip("10.1.1.5")]
        );
        // gc keeps the valid ones only.
        let removed = t.idx.gc("n1", &[att("asker"), att("b1")]);
        assert_eq!(removed, 499);
        t.snap = t.idx.publish();
        assert_eq!(t.snap.records(), 2);
        let (_, m) = t.ask("10.1.0.2", "10.1.0.1", "b1.dns.rnet.", RecordType::A);
        assert_eq!(addrs(&m), vec![ip("10.1.1.3")]);
    }

    #[test]
    fn oversized_registration_is_refused_before_any_change() {
        let mut idx = Index::new(&[]);
        let names: Vec<String> = (0..70_000).map(|i| format!("n{i}")).collect();
        let (n, rec) = Registry::prepare(
            net("n1", "", "10.1.0.1", false),
            att("c"),
            &names,
            &[ip("10.1.0.2")],
        )
        .unwrap();
        let e = idx.check(&n, &rec).unwrap_err();
        assert!(e.to_string().contains("too many names"), "{e}");
        assert!(idx.register(n, &rec).is_err());
        assert!(idx.is_empty() && idx.networks().count() == 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Reg {
            net: u8,
            ctr: u8,
            ifname: u8,
            names: Vec<u8>,
            addrs: Vec<u8>,
            internal: bool,
        },
        Unreg {
            net: u8,
            ctr: u8,
            ifname: u8,
        },
        Gc {
            net: u8,
            keep: Vec<u8>,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..3u8, 0..12u8, 0..2u8, proptest::collection::vec(0..10u8, 1..4),
                  proptest::collection::vec(0..20u8, 1..3), any::<bool>())
                .prop_map(|(net, ctr, ifname, names, addrs, internal)| Op::Reg {
                    net, ctr, ifname, names, addrs, internal
                }),
            2 => (0..3u8, 0..12u8, 0..2u8).prop_map(|(net, ctr, ifname)| Op::Unreg { net, ctr, ifname }),
            1 => (0..3u8, proptest::collection::vec(0..12u8, 0..6))
                .prop_map(|(net, keep)| Op::Gc { net, keep }),
        ]
    }

    fn att2(ctr: u8, ifname: u8) -> AttachmentId {
        AttachmentId {
            container_id: format!("ctr{ctr}"),
            ifname: format!("eth{ifname}"),
        }
    }

    fn addr_of(a: u8) -> IpAddr {
        if a % 4 == 3 {
            ip(&format!("fd00::{a}"))
        } else {
            ip(&format!("10.0.0.{a}"))
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The index follows the same changes as the Registry (the reference
        /// model) and answers from the published snapshot exactly as the
        /// registry's contents say.
        #[test]
        fn index_matches_registry(ops in proptest::collection::vec(op(), 1..120), publish_every in 1..5usize) {
            let mut reg = Registry::default();
            let mut idx = Index::new(&[]);
            for (k, o) in ops.iter().enumerate() {
                match o {
                    Op::Reg { net: n, ctr, ifname, names, addrs, internal } => {
                        let mut spec = net(&format!("n{n}"), if *n == 2 { "two.test" } else { "" }, &format!("10.9.{n}.1"), *internal);
                        spec.upstreams = vec![];
                        let names: Vec<String> = names.iter().map(|x| format!("h{x}")).collect();
                        let addrs: Vec<IpAddr> = addrs.iter().map(|&a| addr_of(a)).collect();
                        let (s, rec) = Registry::prepare(spec, att2(*ctr, *ifname), &names, &addrs).unwrap();
                        let a = !reg.commit(s.clone(), rec.clone()).is_empty();
                        let b = idx.register(s, &rec).unwrap();
                        prop_assert_eq!(a, b);
                    }
                    Op::Unreg { net, ctr, ifname } => {
                        let a = reg.unregister(&format!("n{net}"), &att2(*ctr, *ifname)).iter()
                            .filter(|c| matches!(c, crate::registry::Change::RecordGone(..))).count();
                        let b = idx.unregister(&format!("n{net}"), &att2(*ctr, *ifname));
                        prop_assert_eq!(a, b);
                    }
                    Op::Gc { net, keep } => {
                        let valid: Vec<AttachmentId> = keep.iter().map(|&c| att2(c, 0)).collect();
                        let a = reg.gc(&format!("n{net}"), &valid).iter()
                            .filter(|c| matches!(c, crate::registry::Change::RecordGone(..))).count();
                        let b = idx.gc(&format!("n{net}"), &valid);
                        prop_assert_eq!(a, b);
                    }
                }
                prop_assert_eq!(idx.len(), reg.len());
                if k % publish_every == 0 {
                    idx.publish();
                }
            }
            let snap = idx.publish();
            prop_assert_eq!(idx.to_file(), reg.to_file());
            // No stale keys: exactly one per name, address and container of
            // each live record.
            let all = reg.to_file().records;
            prop_assert_eq!(snap.names.len(), all.iter().map(|r| r.names.len()).sum::<usize>());
            prop_assert_eq!(snap.addrs.len(), all.iter().map(|r| r.addrs.len()).sum::<usize>());
            prop_assert_eq!(snap.ctrs.len(), all.len());
            let mut streamed = Vec::new();
            idx.write_file(&mut streamed).unwrap();
            let back: RegistryFile = serde_json::from_slice(&streamed).unwrap();
            prop_assert_eq!(back, reg.to_file());
            // Every registered name resolves, for an asker on its network, to
            // exactly the addresses the registry holds for it there.
            for recs in reg.records.values() {
                for r in recs.values() {
                    let asker = r.addrs[0];
                    let all: Vec<&RecordSpec> = reg.records.values().flat_map(|m| m.values()).collect();
                    let ctrs: Vec<&str> = all.iter().filter(|o| o.addrs.contains(&asker))
                        .map(|o| o.attachment.container_id.as_str()).collect();
                    let vis: Vec<&str> = all.iter().filter(|o| ctrs.contains(&o.attachment.container_id.as_str()))
                        .map(|o| o.network.as_str()).collect();
                    let domain = &reg.networks[&r.network].domain;
                    for name in &r.names {
                        let mut want: Vec<IpAddr> = all.iter()
                            .filter(|o| vis.contains(&o.network.as_str()) && &reg.networks[&o.network].domain == domain)
                            .filter(|o| o.names.contains(name))
                            .flat_map(|o| o.addrs.iter().copied())
                            .filter(IpAddr::is_ipv4)
                            .collect();
                        want.sort();
                        want.dedup();
                        let t = T { idx: Index::new(&[]), snap: snap.clone() };
                        let (_, m) = t.ask(&asker.to_string(), "10.9.0.1", &format!("{name}.{domain}."), RecordType::A);
                        let mut got = addrs(&m);
                        got.sort();
                        got.dedup();
                        prop_assert_eq!(got, want, "{} asked by {}", name, asker);
                    }
                }
            }
        }
    }
}
