//! The [`Backend`] seam plugins program against, and [`FakeBackend`], an
//! in-memory implementation that records every operation as nft text so that
//! plugins can be tested without root (tier 0).

use crate::{Batch, Chain, Element, Family, KeyPart, Nft, NftError, OpKind, Ruleset};

/// What a plugin needs from nftables: existence checks to decide between the
/// hot and the slow path, the slow path itself (apply a whole [`Ruleset`]),
/// the hot path (commit a [`Batch`] of element changes) and listing (CHECK, GC).
pub trait Backend {
    /// Does the table exist?
    fn table_exists(&mut self, family: Family, table: &str) -> Result<bool, NftError>;
    /// The table's comment; `ENOENT` error if the table is missing.
    fn table_comment(&mut self, family: Family, table: &str) -> Result<Option<String>, NftError>;
    /// Does the chain exist?
    fn chain_exists(&mut self, family: Family, table: &str, chain: &str) -> Result<bool, NftError>;
    /// Does the set or map exist?
    fn set_exists(&mut self, family: Family, table: &str, set: &str) -> Result<bool, NftError>;
    /// The slow path: replace the tables of `ruleset` atomically.
    fn apply(&mut self, ruleset: &Ruleset) -> Result<(), NftError>;
    /// The hot path: apply element changes atomically.
    fn commit(&mut self, batch: &Batch) -> Result<(), NftError>;
    /// All elements of a set or map.
    fn list_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
    ) -> Result<Vec<Element>, NftError>;
    /// The ruleset's generation; every committed transaction changes it.
    fn generation(&mut self) -> Result<u32, NftError>;
    /// Creates `chains` in table `family table`, or replaces their rules,
    /// leaving the rest of the table alone (one transaction, see
    /// [`Chain::put_text`]); `ENOENT` if the table is missing.
    fn put_chains(&mut self, family: Family, table: &str, chains: &[Chain])
    -> Result<(), NftError>;
    /// Deletes `chains` (family, table, chain) only if the ruleset is still
    /// at generation `at_generation`; `Ok(false)` (nothing deleted) if it is not.
    fn delete_chains_at(
        &mut self,
        at_generation: u32,
        chains: &[(Family, &str, &str)],
    ) -> Result<bool, NftError>;
}

impl Backend for Nft {
    fn table_exists(&mut self, family: Family, table: &str) -> Result<bool, NftError> {
        Nft::table_exists(self, family, table)
    }
    fn table_comment(&mut self, family: Family, table: &str) -> Result<Option<String>, NftError> {
        Nft::table_comment(self, family, table)
    }
    fn chain_exists(&mut self, family: Family, table: &str, chain: &str) -> Result<bool, NftError> {
        Nft::chain_exists(self, family, table, chain)
    }
    fn set_exists(&mut self, family: Family, table: &str, set: &str) -> Result<bool, NftError> {
        Nft::set_exists(self, family, table, set)
    }
    fn apply(&mut self, ruleset: &Ruleset) -> Result<(), NftError> {
        // Over netlink when every part has a netlink form (rnet's own
        // tables do): no `nft` process, whose start and read of the whole
        // ruleset cost 4-25 ms, more on a host with a large firewall.
        match Nft::apply_native(self, ruleset) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => {
                // `nft` reports what it refuses with a line of the file.
                // A table that appeared meanwhile is replaced, not merged.
                eprintln!("rnet: applying the tables over netlink failed ({e}); trying nft");
                let mut r = ruleset.clone();
                for t in &mut r.tables {
                    t.fresh = false;
                }
                return self.apply_ruleset(&r.render()?);
            }
        }
        let text = ruleset.render()?;
        self.apply_ruleset(&text)
    }
    fn commit(&mut self, batch: &Batch) -> Result<(), NftError> {
        Nft::commit(self, batch)
    }
    fn list_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
    ) -> Result<Vec<Element>, NftError> {
        Nft::list_elements(self, family, table, set)
    }
    fn generation(&mut self) -> Result<u32, NftError> {
        Nft::generation(self)
    }
    fn put_chains(
        &mut self,
        family: Family,
        table: &str,
        chains: &[Chain],
    ) -> Result<(), NftError> {
        // Over netlink when every chain has its rules as expressions: no
        // `nft` process, whose start and full ruleset read cost 4-25 ms.
        if Nft::put_chains_native(self, family, table, chains)? {
            return Ok(());
        }
        self.apply_ruleset(&put_text(family, table, chains)?)
    }
    fn delete_chains_at(
        &mut self,
        at_generation: u32,
        chains: &[(Family, &str, &str)],
    ) -> Result<bool, NftError> {
        Nft::delete_chains_at(self, at_generation, chains)
    }
}

/// The `nft -f` text of [`Backend::put_chains`]: [`Chain::put_text`] of each.
fn put_text(family: Family, table: &str, chains: &[Chain]) -> Result<String, NftError> {
    let mut text = String::new();
    for c in chains {
        text.push_str(&c.put_text(family, table)?);
    }
    Ok(text)
}

/// What [`ensure_ruleset`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ensured {
    /// The ruleset was (re)applied (slow path taken).
    pub applied: bool,
    /// Elements that were in the kernel's sets before the reload and were
    /// carried over into the new table.
    pub carried: usize,
}

/// The slow-path decision in one call, made with cheap `GET` requests (no
/// dump, no exec when all is well): every table of `ruleset` must exist with
/// the model's comment (use the comment as a version marker), and every chain,
/// set and map must exist. If so, nothing is done (`applied: false`).
///
/// Otherwise the ruleset is applied (one transaction, [`Backend::apply`]). The prelude deletes the
/// old table, so the elements of sets and maps that still exist are listed
/// first and carried over into the new table (the model's own elements win
/// on equal keys); if nft rejects that (e.g. a set changed type between
/// versions) the bare model is applied and `carried` is 0. After
/// `nft flush ruleset` nothing is left to carry: callers re-add the elements
/// they own from their own records.
pub fn ensure_ruleset<B: Backend + ?Sized>(
    backend: &mut B,
    ruleset: &Ruleset,
) -> Result<Ensured, NftError> {
    if is_complete(backend, ruleset)? {
        return Ok(Ensured::default());
    }
    let mut merged = ruleset.clone();
    let carried = carry_over(backend, &mut merged, &|_, _, _| false)?;
    if carried > 0 {
        match backend.apply(&merged) {
            Ok(()) => {
                return Ok(Ensured {
                    applied: true,
                    carried,
                });
            }
            Err(NftError::NftFailed { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    backend.apply(ruleset)?;
    Ok(Ensured {
        applied: true,
        carried: 0,
    })
}

/// Copies into `model` the elements still in the kernel's sets and maps of the
/// same names (the model's own elements win on equal keys; interval and
/// undecodable sets are skipped, as are elements for which `skip` is true).
/// Returns how many were carried.
pub(crate) fn carry_over<B: Backend + ?Sized>(
    backend: &mut B,
    model: &mut Ruleset,
    skip: &dyn Fn(Family, &str, &[crate::KeyPart]) -> bool,
) -> Result<usize, NftError> {
    let mut carried = 0;
    for t in &mut model.tables {
        if !backend.table_exists(t.family, &t.name)? {
            continue;
        }
        let (fam, tname) = (t.family, t.name.clone());
        let names: Vec<String> = t
            .sets
            .iter()
            .map(|s| s.name.clone())
            .chain(t.maps.iter().map(|m| m.name.clone()))
            .collect();
        for name in names {
            if !backend.set_exists(fam, &tname, &name)? {
                continue;
            }
            let Ok(old) = backend.list_elements(fam, &tname, &name) else {
                continue;
            };
            if let Some(els) = t.elements_mut(&name) {
                for e in old {
                    if skip(fam, &name, &e.key) || els.iter().any(|x| x.same_key(&e)) {
                        continue;
                    }
                    els.push(e);
                    carried += 1;
                }
            }
        }
    }
    Ok(carried)
}

fn is_complete<B: Backend + ?Sized>(b: &mut B, ruleset: &Ruleset) -> Result<bool, NftError> {
    for t in &ruleset.tables {
        let comment = match b.table_comment(t.family, &t.name) {
            Ok(c) => c,
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e),
        };
        if comment != t.comment {
            return Ok(false);
        }
        for c in &t.chains {
            if !b.chain_exists(t.family, &t.name, &c.name)? {
                return Ok(false);
            }
        }
        let sets = t.sets.iter().map(|s| &s.name);
        for name in sets.chain(t.maps.iter().map(|m| &m.name)) {
            if !b.set_exists(t.family, &t.name, name)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// An in-memory nftables with the kernel's semantics for what rnet uses:
/// applying a ruleset replaces its tables; a batch is all or nothing;
/// `Add` is idempotent but `EEXIST` for same key/different data; `AddExcl`
/// gives `EEXIST`; `Delete` of a missing element `ENOENT`; `DeleteLenient`
/// ignores it; a missing table or set `ENOENT`.
///
/// Every operation is appended to [`FakeBackend::log`] as nft text (the
/// rendered ruleset for `apply`, [`Batch::render`] for `commit`), and
/// [`FakeBackend::render`] shows the current state, for golden comparisons.
#[derive(Debug, Default, Clone)]
pub struct FakeBackend {
    state: Ruleset,
    log: Vec<String>,
    fail_next: Option<i32>,
    generation: u32,
    failed_commits: u32,
}

impl FakeBackend {
    /// An empty fake (no tables, like a fresh host).
    pub fn new() -> FakeBackend {
        FakeBackend::default()
    }

    /// The operations so far, as nft text, oldest first.
    pub fn log(&self) -> &[String] {
        &self.log
    }

    /// The log joined into one string.
    pub fn log_text(&self) -> String {
        self.log.concat()
    }

    /// Forget the log (state is kept).
    pub fn clear_log(&mut self) {
        self.log.clear();
    }

    /// The current state as a renderable ruleset.
    pub fn state(&self) -> &Ruleset {
        &self.state
    }

    /// The current state rendered as nft text (what `apply` of it would send).
    pub fn render(&self) -> Result<String, NftError> {
        self.state.render()
    }

    /// Like `nft flush ruleset`: every table disappears (tests of the slow path).
    pub fn flush_ruleset(&mut self) {
        self.state.tables.clear();
        self.log.push("flush ruleset\n".into());
    }

    /// Pretend another process committed something (the generation moves
    /// on); for tests of [`Backend::delete_chains_at`] races.
    pub fn bump_generation(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// How many batches failed (each a slow abort in the kernel: an RCU
    /// grace period), injected failures included.
    pub fn failed_commits(&self) -> u32 {
        self.failed_commits
    }

    /// Make the next `apply` or `commit` fail with this errno (e.g.
    /// `libc::ENOMEM`), without changing anything; for rollback tests.
    pub fn fail_next(&mut self, errno: i32) {
        self.fail_next = Some(errno);
    }

    fn table(&self, family: Family, table: &str) -> Option<&crate::Table> {
        self.state
            .tables
            .iter()
            .find(|t| t.family == family && t.name == table)
    }

    fn commit_inner(&mut self, batch: &Batch) -> Result<(), NftError> {
        if batch.is_empty() {
            return Ok(());
        }
        batch.validate()?;
        self.injected("committing a batch")?;
        // Work on a copy: all or nothing.
        let mut next = self.state.clone();
        for op in batch.ops() {
            let ctx = |e: &Element| {
                format!(
                    "element {{ {} }} of set {} {} {}",
                    e.key_text(),
                    op.family,
                    op.table,
                    op.set
                )
            };
            let els = next
                .tables
                .iter_mut()
                .find(|t| t.family == op.family && t.name == op.table)
                .and_then(|t| t.elements_mut(&op.set))
                .ok_or_else(|| {
                    NftError::kernel(
                        libc::ENOENT,
                        format!("set {} {} {} does not exist", op.family, op.table, op.set),
                    )
                })?;
            // Keys indexed once per op (a set of tens of thousands of
            // elements stays linear, like the kernel's hash sets); deleted
            // slots are dropped at the end, keeping insertion order.
            let mut at: std::collections::HashMap<Vec<KeyPart>, usize> = els
                .iter()
                .enumerate()
                .map(|(i, x)| (x.key.clone(), i))
                .collect();
            let mut gone = std::collections::HashSet::new();
            for e in &op.elements {
                let pos = at.get(&e.key).copied();
                match (op.kind, pos) {
                    (OpKind::Add | OpKind::AddExcl, None) => {
                        at.insert(e.key.clone(), els.len());
                        els.push(e.clone());
                    }
                    (OpKind::AddExcl, Some(_)) => {
                        return Err(NftError::kernel(libc::EEXIST, ctx(e)));
                    }
                    (OpKind::Add, Some(i)) => {
                        let old = els.get(i);
                        if old.is_some_and(|o| o.data != e.data || o.verdict != e.verdict) {
                            return Err(NftError::kernel(libc::EEXIST, ctx(e)));
                        }
                    }
                    (OpKind::Delete | OpKind::DeleteLenient, Some(i)) => {
                        at.remove(&e.key);
                        gone.insert(i);
                    }
                    (OpKind::Delete, None) => {
                        return Err(NftError::kernel(libc::ENOENT, ctx(e)));
                    }
                    (OpKind::DeleteLenient, None) => {}
                }
            }
            if !gone.is_empty() {
                let mut i = 0;
                els.retain(|_| {
                    let keep = !gone.contains(&i);
                    i += 1;
                    keep
                });
            }
        }
        self.state = next;
        self.log.push(batch.render());
        self.bump_generation();
        Ok(())
    }

    fn injected(&mut self, what: &str) -> Result<(), NftError> {
        match self.fail_next.take() {
            Some(errno) => Err(NftError::kernel(
                errno,
                format!("{what} (injected failure)"),
            )),
            None => Ok(()),
        }
    }
}

impl Backend for FakeBackend {
    fn table_exists(&mut self, family: Family, table: &str) -> Result<bool, NftError> {
        Ok(self.table(family, table).is_some())
    }

    fn table_comment(&mut self, family: Family, table: &str) -> Result<Option<String>, NftError> {
        self.table(family, table)
            .map(|t| t.comment.clone())
            .ok_or_else(|| {
                NftError::kernel(
                    libc::ENOENT,
                    format!("reading the comment of table {family} {table}"),
                )
            })
    }

    fn chain_exists(&mut self, family: Family, table: &str, chain: &str) -> Result<bool, NftError> {
        Ok(self
            .table(family, table)
            .is_some_and(|t| t.chains.iter().any(|c| c.name == chain)))
    }

    fn set_exists(&mut self, family: Family, table: &str, set: &str) -> Result<bool, NftError> {
        Ok(self.table(family, table).is_some_and(|t| {
            t.sets.iter().any(|s| s.name == set) || t.maps.iter().any(|m| m.name == set)
        }))
    }

    fn apply(&mut self, ruleset: &Ruleset) -> Result<(), NftError> {
        let text = ruleset.render()?;
        self.injected("applying a ruleset")?;
        for t in &ruleset.tables {
            // nft would merge a fresh definition into the existing table and
            // append its rules a second time: a caller's bug, made loud.
            if t.fresh && self.table(t.family, &t.name).is_some() {
                return Err(NftError::NftFailed {
                    status: 1,
                    stderr: format!(
                        "fake: table {} {} rendered as fresh but it exists",
                        t.family, t.name
                    ),
                });
            }
        }
        for t in &ruleset.tables {
            self.state
                .tables
                .retain(|old| !(old.family == t.family && old.name == t.name));
            let mut t = t.clone();
            t.fresh = false;
            self.state.tables.push(t);
        }
        self.log.push(text);
        self.bump_generation();
        Ok(())
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), NftError> {
        let r = self.commit_inner(batch);
        if r.is_err() {
            self.failed_commits += 1;
        }
        r
    }

    fn list_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
    ) -> Result<Vec<Element>, NftError> {
        let t = self.table(family, table);
        let els = t.and_then(|t| {
            t.sets
                .iter()
                .find(|s| s.name == set)
                .map(|s| &s.elements)
                .or_else(|| t.maps.iter().find(|m| m.name == set).map(|m| &m.elements))
        });
        els.cloned().ok_or_else(|| {
            NftError::kernel(
                libc::ENOENT,
                format!("set {family} {table} {set} does not exist"),
            )
        })
    }

    fn generation(&mut self) -> Result<u32, NftError> {
        Ok(self.generation)
    }

    fn put_chains(
        &mut self,
        family: Family,
        table: &str,
        chains: &[Chain],
    ) -> Result<(), NftError> {
        let text = put_text(family, table, chains)?;
        self.injected("putting chains")?;
        let Some(t) = self
            .state
            .tables
            .iter_mut()
            .find(|t| t.family == family && t.name == table)
        else {
            return Err(NftError::kernel(
                libc::ENOENT,
                format!("adding chains to table {family} {table}"),
            ));
        };
        for c in chains {
            match t.chains.iter_mut().find(|x| x.name == c.name) {
                Some(x) => *x = c.clone(),
                None => t.chains.push(c.clone()),
            }
        }
        self.log.push(text);
        self.bump_generation();
        Ok(())
    }

    fn delete_chains_at(
        &mut self,
        at_generation: u32,
        chains: &[(Family, &str, &str)],
    ) -> Result<bool, NftError> {
        if at_generation != self.generation {
            return Ok(false);
        }
        self.injected("deleting chains")?;
        let mut next = self.state.clone();
        let mut text = String::new();
        for (family, table, chain) in chains {
            let t = next
                .tables
                .iter_mut()
                .find(|t| t.family == *family && t.name == *table)
                .filter(|t| t.chains.iter().any(|c| c.name == *chain))
                .ok_or_else(|| {
                    NftError::kernel(
                        libc::ENOENT,
                        format!("deleting chain {family} {table} {chain}"),
                    )
                })?;
            t.chains.retain(|c| c.name != *chain);
            text.push_str(&format!("delete chain {family} {table} {chain}\n"));
        }
        self.state = next;
        self.log.push(text);
        self.bump_generation();
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::{Chain, KeyPart, Map, Set, Table};
    use std::net::Ipv4Addr;

    fn rs() -> Ruleset {
        Ruleset::new().table(
            Table::new(Family::Inet, "rnet")
                .comment("v1")
                .set(Set::new("addrs4", "ipv4_addr"))
                .map(Map::new(
                    "hp",
                    "inet_proto . inet_service",
                    "ipv4_addr . inet_service",
                ))
                .chain(Chain::new("c")),
        )
    }

    fn a(last: u8) -> Element {
        Element::new(KeyPart::Ipv4(Ipv4Addr::new(10, 0, 0, last))).comment(format!("c{last}/eth0"))
    }

    #[test]
    fn fake_semantics_and_log() {
        let mut f = FakeBackend::new();
        assert!(!f.table_exists(Family::Inet, "rnet").unwrap());
        let mut b = Batch::new(Family::Inet);
        b.add_elements("rnet", "addrs4", &[a(1)]);
        assert!(f.commit(&b).unwrap_err().is_not_found());

        f.apply(&rs()).unwrap();
        assert!(f.table_exists(Family::Inet, "rnet").unwrap());
        assert_eq!(
            f.table_comment(Family::Inet, "rnet").unwrap().as_deref(),
            Some("v1")
        );
        assert!(f.chain_exists(Family::Inet, "rnet", "c").unwrap());
        assert!(f.set_exists(Family::Inet, "rnet", "hp").unwrap());
        assert!(!f.set_exists(Family::Inet, "rnet", "nope").unwrap());
        f.clear_log();

        f.commit(&b).unwrap();
        f.commit(&b).unwrap(); // idempotent
        assert_eq!(
            f.list_elements(Family::Inet, "rnet", "addrs4").unwrap(),
            vec![a(1)]
        );
        let mut x = Batch::new(Family::Inet);
        x.add_elements_excl("rnet", "addrs4", &[a(1)]);
        assert!(f.commit(&x).unwrap_err().is_exists());

        // Atomic: the second op fails, the first is not applied.
        let mut bad = Batch::new(Family::Inet);
        bad.add_elements("rnet", "addrs4", &[a(2)])
            .delete_elements("rnet", "addrs4", &[a(3)]);
        assert!(f.commit(&bad).unwrap_err().is_not_found());
        assert_eq!(
            f.list_elements(Family::Inet, "rnet", "addrs4")
                .unwrap()
                .len(),
            1
        );

        let mut del = Batch::new(Family::Inet);
        del.delete_elements_lenient("rnet", "addrs4", &[a(1), a(3)]);
        f.commit(&del).unwrap();
        assert!(
            f.list_elements(Family::Inet, "rnet", "addrs4")
                .unwrap()
                .is_empty()
        );

        // Same key, different map data: EEXIST, like the kernel.
        let hp = |ip: u8| {
            Element::new(vec![KeyPart::Proto(6), KeyPart::Port(80)]).data(vec![
                KeyPart::Ipv4(Ipv4Addr::new(10, 0, 0, ip)),
                KeyPart::Port(80),
            ])
        };
        let mut m = Batch::new(Family::Inet);
        m.add_elements("rnet", "hp", &[hp(1)]);
        f.commit(&m).unwrap();
        let mut m2 = Batch::new(Family::Inet);
        m2.add_elements("rnet", "hp", &[hp(2)]);
        assert!(f.commit(&m2).unwrap_err().is_exists());

        assert_eq!(
            f.log_text(),
            "add element inet rnet addrs4 { 10.0.0.1 comment \"c1/eth0\" }\n\
             add element inet rnet addrs4 { 10.0.0.1 comment \"c1/eth0\" }\n\
             destroy element inet rnet addrs4 { 10.0.0.1, 10.0.0.3 }\n\
             add element inet rnet hp { tcp . 80 : 10.0.0.1 . 80 }\n"
        );
        assert!(
            f.render()
                .unwrap()
                .contains("elements = { tcp . 80 : 10.0.0.1 . 80 }")
        );

        f.fail_next(libc::ENOMEM);
        assert_eq!(f.commit(&b).unwrap_err().errno(), Some(libc::ENOMEM));
        assert!(
            f.list_elements(Family::Inet, "rnet", "addrs4")
                .unwrap()
                .is_empty()
        );

        f.flush_ruleset();
        assert!(!f.table_exists(Family::Inet, "rnet").unwrap());
        assert!(
            f.table_comment(Family::Inet, "rnet")
                .unwrap_err()
                .is_not_found()
        );
    }
}
