//! The compact storage behind [`crate::snapshot`]: packed records, a
//! copy-on-write record slab and sharded hash multimaps of plain integers.
//!
//! Memory is the point of this module. A record (one attachment: network,
//! container ID, interface, names, addresses) is **one allocation**, a packed
//! byte string ([`Packed`]); nothing else owns a copy of its strings. The
//! lookup maps do not own keys either: each is a sorted array of
//! `(32-bit hash, record id)` pairs, 8 bytes per key, split into
//! [`SHARDS`] shards; a candidate is confirmed against the record itself. At
//! 10,000 one-name records that is about 110 bytes per record in the slab
//! plus 16 for the slab slot plus 24 in the three maps, against ~1.5 KB per
//! record for owned `String` keys in `HashMap`s (measured with heaptrack).
//!
//! Copy-on-write: a snapshot holds `Arc`s of shards and slab chunks; an edit
//! ([`Parts`]) copies only the shards and chunks it touches, into exact-size
//! allocations when it finishes, and the previous snapshot keeps the old
//! ones for the queries still reading it. A change at 10,000 names copies a
//! few KB, not the index.
//!
//! Lookups are a binary search in one shard (about 156 pairs at 10,000 names,
//! a few cache lines) plus one comparison against the record: no allocation,
//! no lock, and a cost that barely moves between 10 and 10,000 names.

use std::hash::Hasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// Shards per map (a change copies one shard of each map it touches).
pub const SHARDS: usize = 64;
/// Record slots per slab chunk (a change copies one chunk).
pub const CHUNK: usize = 128;

/// A fast, well-mixed hasher (multiply-rotate, murmur3 finaliser). Keys are
/// names registered by the runtime, not attacker-chosen, and a lookup of an
/// arbitrary name only probes, so a keyed hash is not needed.
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

/// Hash of a key's bytes (the length is mixed in, so prefixes differ).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = MixHasher(bytes.len() as u64);
    h.write(bytes);
    h.finish()
}

/// Hash of an address (its octets; v4 and v6 differ in length).
pub fn hash_ip(ip: &IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => hash_bytes(&a.octets()),
        IpAddr::V6(a) => hash_bytes(&a.octets()),
    }
}

/// The shard of a hash: bits 32..38, independent of the stored low 32 bits.
fn shard_of(h: u64) -> usize {
    ((h >> 32) as usize) & (SHARDS - 1)
}

/// One key of a multimap: the low 32 bits of its hash and a record id.
/// Ordered by hash, then id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    key: u32,
    id: u32,
}

impl Entry {
    fn of(h: u64, id: u32) -> Entry {
        Entry { key: h as u32, id }
    }
}

/// The ids stored under `h` in one shard (candidates; the caller confirms).
fn ids_in(shard: &[Entry], h: u64) -> impl Iterator<Item = u32> + '_ {
    let key = h as u32;
    let start = shard.partition_point(|e| e.key < key);
    shard
        .get(start..)
        .unwrap_or(&[])
        .iter()
        .take_while(move |e| e.key == key)
        .map(|e| e.id)
}

/// Copy-on-write parts: each is an `Arc` slice shared with snapshots.
pub type Shared<E> = Arc<[Arc<[E]>]>;

/// A hash multimap (hash → record ids) for the query path.
#[derive(Clone)]
pub struct Multi {
    shards: Shared<Entry>,
}

impl Multi {
    /// An empty map.
    pub fn new() -> Multi {
        Multi {
            shards: (0..SHARDS).map(|_| Arc::from(Vec::new())).collect(),
        }
    }

    /// Candidate ids for hash `h`.
    pub fn ids(&self, h: u64) -> impl Iterator<Item = u32> + '_ {
        let s: &[Entry] = self.shards.get(shard_of(h)).map_or(&[], |a| &**a);
        ids_in(s, h)
    }

    /// Number of keys stored (test invariant: no stale entries).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    /// Starts an edit.
    pub fn edit(&self) -> MultiEdit {
        MultiEdit {
            parts: Parts::new(&self.shards),
        }
    }
}

/// An edit of a [`Multi`]; reads see the edit's own changes.
pub struct MultiEdit {
    parts: Parts<Entry>,
}

impl MultiEdit {
    /// Candidate ids for hash `h`.
    pub fn ids(&self, h: u64) -> impl Iterator<Item = u32> + '_ {
        ids_in(self.parts.get(shard_of(h)), h)
    }

    /// Adds `id` under `h` (no-op if present).
    pub fn insert(&mut self, h: u64, id: u32) {
        let e = Entry::of(h, id);
        if let Some(v) = self.parts.owned(shard_of(h)) {
            if let Err(at) = v.binary_search(&e) {
                v.insert(at, e);
            }
        }
    }

    /// Removes `id` from under `h` (no-op if absent).
    pub fn remove(&mut self, h: u64, id: u32) {
        let e = Entry::of(h, id);
        if self.parts.get(shard_of(h)).binary_search(&e).is_err() {
            return;
        }
        if let Some(v) = self.parts.owned(shard_of(h)) {
            if let Ok(at) = v.binary_search(&e) {
                v.remove(at);
            }
        }
    }

    /// The finished map (touched shards in exact-size allocations).
    pub fn finish(self) -> Multi {
        Multi {
            shards: self.parts.finish(),
        }
    }
}

/// A record as stored: one allocation, see [`Packed::encode`].
pub type Rec = Arc<[u8]>;

/// The record slab: id → record, in copy-on-write chunks of [`CHUNK`].
#[derive(Clone)]
pub struct Slab {
    chunks: Shared<Option<Rec>>,
}

impl Slab {
    /// An empty slab.
    pub fn new() -> Slab {
        Slab {
            chunks: Arc::from(Vec::new()),
        }
    }

    /// The record with this id.
    pub fn get(&self, id: u32) -> Option<Packed<'_>> {
        let c = self.chunks.get(id as usize / CHUNK)?;
        c.get(id as usize % CHUNK)?.as_deref().map(Packed)
    }

    /// Starts an edit.
    pub fn edit(&self) -> SlabEdit {
        SlabEdit {
            parts: Parts::new(&self.chunks),
        }
    }
}

/// An edit of a [`Slab`].
pub struct SlabEdit {
    parts: Parts<Option<Rec>>,
}

impl SlabEdit {
    /// The record with this id.
    pub fn get(&self, id: u32) -> Option<Packed<'_>> {
        self.parts
            .get(id as usize / CHUNK)
            .get(id as usize % CHUNK)?
            .as_deref()
            .map(Packed)
    }

    /// The record with this id, shared.
    pub fn get_rec(&self, id: u32) -> Option<Rec> {
        self.parts
            .get(id as usize / CHUNK)
            .get(id as usize % CHUNK)?
            .clone()
    }

    /// Sets (or clears) slot `id`, growing the slab as needed.
    pub fn set(&mut self, id: u32, rec: Option<Rec>) {
        let (c, i) = (id as usize / CHUNK, id as usize % CHUNK);
        while self.parts.len() <= c {
            self.parts.push(vec![None; CHUNK]);
        }
        if let Some(slot) = self.parts.owned(c).and_then(|v| v.get_mut(i)) {
            *slot = rec;
        }
    }

    /// Every stored record with its id, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, Packed<'_>)> + '_ {
        (0..self.parts.len()).flat_map(move |c| {
            self.parts
                .get(c)
                .iter()
                .enumerate()
                .filter_map(move |(i, r)| Some(((c * CHUNK + i) as u32, Packed(r.as_deref()?))))
        })
    }

    /// The finished slab.
    pub fn finish(self) -> Slab {
        Slab {
            chunks: self.parts.finish(),
        }
    }
}

enum Part<E> {
    Shared(Arc<[E]>),
    Owned(Vec<E>),
}

/// The parts of a copy-on-write table being edited: untouched parts stay
/// shared, a touched part becomes an owned `Vec` until [`Parts::finish`].
struct Parts<E> {
    parts: Vec<Part<E>>,
    touched: bool,
}

impl<E: Clone> Parts<E> {
    fn new(shared: &Shared<E>) -> Parts<E> {
        Parts {
            parts: shared.iter().map(|p| Part::Shared(p.clone())).collect(),
            touched: false,
        }
    }

    fn len(&self) -> usize {
        self.parts.len()
    }

    fn get(&self, i: usize) -> &[E] {
        match self.parts.get(i) {
            Some(Part::Shared(a)) => a,
            Some(Part::Owned(v)) => v,
            None => &[],
        }
    }

    fn owned(&mut self, i: usize) -> Option<&mut Vec<E>> {
        self.touched = true;
        let p = self.parts.get_mut(i)?;
        if let Part::Shared(a) = p {
            *p = Part::Owned(a.to_vec());
        }
        match p {
            Part::Owned(v) => Some(v),
            Part::Shared(_) => None,
        }
    }

    fn push(&mut self, v: Vec<E>) {
        self.touched = true;
        self.parts.push(Part::Owned(v));
    }

    fn finish(self) -> Shared<E> {
        self.parts
            .into_iter()
            .map(|p| match p {
                Part::Shared(a) => a,
                Part::Owned(v) => Arc::from(v),
            })
            .collect()
    }
}

/// Largest count or length a packed record can hold.
pub const PACK_MAX: usize = u16::MAX as usize;
const HDR: usize = 12;

/// A packed record. Layout (integers little-endian):
///
/// ```text
/// net u16 | n4 u16 | n6 u16 | nnames u16 | cid_len u16 | if_len u16
/// | n4 × 4-byte IPv4 | n6 × 16-byte IPv6 | container ID | ifname
/// | nnames × (len u8, name bytes)
/// ```
///
/// Every accessor is bounds-checked: a malformed buffer (which
/// [`Packed::encode`] never produces) reads as empty fields, never panics.
#[derive(Clone, Copy)]
pub struct Packed<'a>(pub &'a [u8]);

/// What a packed record is made from.
pub struct Fields<'a> {
    /// Network id.
    pub net: u16,
    /// Container ID.
    pub cid: &'a str,
    /// Interface name.
    pub ifname: &'a str,
    /// Names (each at most 255 bytes).
    pub names: &'a [String],
    /// Addresses.
    pub addrs: &'a [IpAddr],
}

/// Why a record cannot be packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackError {
    /// A count or length above [`PACK_MAX`] (or a name above 255 bytes).
    TooLarge(&'static str),
}

impl<'a> Packed<'a> {
    /// Packs a record into one exactly-sized allocation.
    pub fn encode(p: &Fields<'_>) -> Result<Rec, PackError> {
        let n4 = p.addrs.iter().filter(|a| a.is_ipv4()).count();
        let n6 = p.addrs.len() - n4;
        let big = |n: usize, what| {
            if n > PACK_MAX {
                Err(PackError::TooLarge(what))
            } else {
                Ok(n as u16)
            }
        };
        let header = [
            p.net,
            big(n4, "IPv4 addresses")?,
            big(n6, "IPv6 addresses")?,
            big(p.names.len(), "names")?,
            big(p.cid.len(), "container ID bytes")?,
            big(p.ifname.len(), "interface name bytes")?,
        ];
        if p.names.iter().any(|n| n.len() > 255) {
            return Err(PackError::TooLarge("name bytes"));
        }
        let len = HDR
            + 4 * n4
            + 16 * n6
            + p.cid.len()
            + p.ifname.len()
            + p.names.iter().map(|n| 1 + n.len()).sum::<usize>();
        let mut b = Vec::with_capacity(len);
        for h in header {
            b.extend_from_slice(&h.to_le_bytes());
        }
        for a in p.addrs {
            if let IpAddr::V4(v) = a {
                b.extend_from_slice(&v.octets());
            }
        }
        for a in p.addrs {
            if let IpAddr::V6(v) = a {
                b.extend_from_slice(&v.octets());
            }
        }
        b.extend_from_slice(p.cid.as_bytes());
        b.extend_from_slice(p.ifname.as_bytes());
        for n in p.names {
            b.push(n.len() as u8);
            b.extend_from_slice(n.as_bytes());
        }
        Ok(Arc::from(b))
    }

    fn field(&self, i: usize) -> usize {
        self.0
            .get(2 * i..2 * i + 2)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map_or(0, |b| u16::from_le_bytes(b) as usize)
    }

    fn range(&self, start: usize, len: usize) -> &'a [u8] {
        self.0.get(start..start + len).unwrap_or(&[])
    }

    fn v6_start(&self) -> usize {
        HDR + 4 * self.field(1)
    }

    fn cid_start(&self) -> usize {
        self.v6_start() + 16 * self.field(2)
    }

    fn names_start(&self) -> usize {
        self.cid_start() + self.field(4) + self.field(5)
    }

    /// Network id.
    pub fn net(&self) -> u16 {
        self.field(0) as u16
    }

    /// IPv4 addresses, in registration order.
    pub fn v4(&self) -> impl Iterator<Item = Ipv4Addr> + 'a {
        self.range(HDR, 4 * self.field(1))
            .chunks_exact(4)
            .filter_map(|c| <[u8; 4]>::try_from(c).ok().map(Ipv4Addr::from))
    }

    /// IPv6 addresses, in registration order.
    pub fn v6(&self) -> impl Iterator<Item = Ipv6Addr> + 'a {
        self.range(self.v6_start(), 16 * self.field(2))
            .chunks_exact(16)
            .filter_map(|c| <[u8; 16]>::try_from(c).ok().map(Ipv6Addr::from))
    }

    /// All addresses: IPv4 first, then IPv6.
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> + 'a {
        self.v4().map(IpAddr::V4).chain(self.v6().map(IpAddr::V6))
    }

    /// Container ID.
    pub fn cid(&self) -> &'a [u8] {
        self.range(self.cid_start(), self.field(4))
    }

    /// Interface name.
    pub fn ifname(&self) -> &'a [u8] {
        self.range(self.cid_start() + self.field(4), self.field(5))
    }

    /// Names, container name first.
    pub fn names(&self) -> Names<'a> {
        Names {
            rest: self.0.get(self.names_start()..).unwrap_or(&[]),
            left: self.field(3),
        }
    }

    /// Whether `name` is one of the record's names.
    pub fn has_name(&self, name: &[u8]) -> bool {
        self.names().any(|n| n == name)
    }

    /// Whether `ip` is one of the record's addresses.
    pub fn has_addr(&self, ip: &IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.v4().any(|x| x == *a),
            IpAddr::V6(a) => self.v6().any(|x| x == *a),
        }
    }
}

/// The names of a packed record.
pub struct Names<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for Names<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        let (&len, tail) = self.rest.split_first()?;
        let name = tail.get(..len as usize)?;
        self.rest = tail.get(len as usize..).unwrap_or(&[]);
        self.left -= 1;
        Some(name)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pack_round_trip() {
        let names = vec!["web".to_string(), "www".to_string()];
        let addrs: Vec<IpAddr> = vec![
            "10.0.0.2".parse().unwrap(),
            "fd00::2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
        ];
        let r = Packed::encode(&Fields {
            net: 7,
            cid: "abc",
            ifname: "eth0",
            names: &names,
            addrs: &addrs,
        })
        .unwrap();
        let p = Packed(&r);
        assert_eq!(p.net(), 7);
        assert_eq!(p.cid(), b"abc");
        assert_eq!(p.ifname(), b"eth0");
        assert_eq!(p.names().collect::<Vec<_>>(), vec![&b"web"[..], b"www"]);
        assert_eq!(
            p.addrs().collect::<Vec<_>>(),
            vec![addrs[0], addrs[2], addrs[1]]
        );
        assert!(p.has_name(b"www") && !p.has_name(b"ww"));
        assert!(p.has_addr(&addrs[1]) && !p.has_addr(&"10.0.0.4".parse().unwrap()));
        // One allocation: 12-byte header, 2×4 + 16 address bytes, 3 + 4
        // attachment bytes, 2 × (1 + 3) name bytes.
        assert_eq!(r.len(), 12 + 8 + 16 + 7 + 8);
        let long = vec!["x".repeat(256)];
        assert!(
            Packed::encode(&Fields {
                net: 0,
                cid: "c",
                ifname: "e",
                names: &long,
                addrs: &[],
            })
            .is_err()
        );
    }

    #[test]
    fn multimap_edit_and_share() {
        let m = Multi::new();
        let mut e = m.edit();
        for id in 0..1000u32 {
            e.insert(hash_bytes(&id.to_le_bytes()), id);
            e.insert(hash_bytes(b"shared"), id);
        }
        let m1 = e.finish();
        let mut e = m1.edit();
        e.remove(hash_bytes(b"shared"), 5);
        e.remove(hash_bytes(&7u32.to_le_bytes()), 7);
        let m2 = e.finish();
        assert_eq!(m1.ids(hash_bytes(b"shared")).count(), 1000);
        assert_eq!(m2.ids(hash_bytes(b"shared")).count(), 999);
        assert_eq!(
            m1.ids(hash_bytes(&7u32.to_le_bytes())).collect::<Vec<_>>(),
            vec![7]
        );
        assert_eq!(m2.ids(hash_bytes(&7u32.to_le_bytes())).count(), 0);
        // Untouched shards are shared between the two.
        let shared = m1
            .shards
            .iter()
            .zip(m2.shards.iter())
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert!(shared >= SHARDS - 3, "{shared}");
    }

    proptest! {
        #[test]
        fn packed_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let p = Packed(&bytes);
            let _ = (p.net(), p.cid(), p.ifname());
            let _ = p.names().count();
            let _ = p.addrs().count();
            let _ = p.has_name(b"x");
        }
    }
}
