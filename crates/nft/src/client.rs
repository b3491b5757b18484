//! [`Nft`]: the nf_tables netlink client (hot path: existence checks, element
//! batches, element listing).

use rnet_netns::NetNs;

use crate::batch::{self, BatchOp, Encoded, OpKind, comment_from_udata, describe};
use crate::element::decode_value;
use crate::nl::{self, Conn, MsgBuf, attr, msg, nft_attrs};
use crate::{Batch, Element, Family, NftError, Verdict};

/// `NFT_DATA_VERDICT`: the data type of a verdict map.
pub const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
/// `NFT_SET_INTERVAL`.
pub const NFT_SET_INTERVAL: u32 = 0x4;
/// `NFT_SET_MAP`.
pub const NFT_SET_MAP: u32 = 0x8;
/// `NFT_SET_CONCAT`.
pub const NFT_SET_CONCAT: u32 = 0x80;
/// `NFT_SET_ELEM_INTERVAL_END`.
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
/// `NFT_SET_ELEM_CATCHALL`.
const NFT_SET_ELEM_CATCHALL: u32 = 0x2;

/// The policy of a base chain (`NFTA_CHAIN_POLICY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainPolicy {
    /// Packets no rule accepted are dropped (`NF_DROP`).
    Drop,
    /// Packets no rule dropped go on (`NF_ACCEPT`).
    Accept,
}

/// What the kernel says about a set or map (`NFT_MSG_GETSET`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetInfo {
    /// nft datatype of the key (a concatenation packs 6 bits per part).
    pub key_type: u32,
    /// Key length in bytes.
    pub key_len: u32,
    /// Data type for maps ([`NFT_DATA_VERDICT`] for verdict maps).
    pub data_type: Option<u32>,
    /// Data length in bytes (0 for plain sets).
    pub data_len: u32,
    /// `NFT_SET_*` flags.
    pub flags: u32,
}

impl SetInfo {
    /// A map (data or verdict)?
    pub fn is_map(&self) -> bool {
        self.flags & NFT_SET_MAP != 0
    }

    /// A verdict map?
    pub fn is_verdict_map(&self) -> bool {
        self.data_type == Some(NFT_DATA_VERDICT)
    }

    /// An interval set (`flags interval`)?
    pub fn is_interval(&self) -> bool {
        self.flags & NFT_SET_INTERVAL != 0
    }
}

/// An nf_tables netlink client bound to one network namespace.
///
/// The socket belongs to the namespace it was created in ([`Nft::new`]: the
/// calling thread's; [`Nft::in_netns`]: the given one) and may then be used
/// from any thread. Not `Sync`: one user at a time (`&mut self`).
pub struct Nft {
    conn: Conn,
    ns: Option<NetNs>,
    /// Does the kernel know `NFT_MSG_DESTROYSETELEM`? `None` until a lenient
    /// delete found out.
    destroy: Option<bool>,
}

impl std::fmt::Debug for Nft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nft")
            .field("ns", &self.ns)
            .field("destroy", &self.destroy)
            .finish()
    }
}

/// Max attempts of the probe-then-delete fallback of lenient deletes.
const LENIENT_ATTEMPTS: u32 = 3;

impl Nft {
    /// A client for the calling thread's network namespace.
    pub fn new() -> Result<Nft, NftError> {
        Ok(Nft {
            conn: Conn::new()?,
            ns: None,
            destroy: None,
        })
    }

    /// Closes the socket without making this process wait for the kernel's
    /// deferred cleanup of deleted elements (see `rnet_netns::hold_until_exit`):
    /// for a DEL whose deletions are committed. Falls back to a plain close.
    pub fn close_in_background(self) {
        use std::os::fd::AsRawFd;
        let fd = self.conn.sock.as_raw_fd();
        if let Err(e) = rnet_netns::hold_until_exit(&[fd]) {
            eprintln!("rnet-nft: closing the nf_tables socket in the foreground: {e}");
        }
        drop(self);
    }

    /// A client for `ns`: the socket is created on a fresh thread inside `ns`
    /// (the calling thread never switches). A duplicate of the handle is
    /// kept so that [`Nft::apply_ruleset`] runs `nft` in the same namespace.
    pub fn in_netns(ns: &NetNs) -> Result<Nft, NftError> {
        let conn = ns.run(Conn::new)??;
        Ok(Nft {
            conn,
            ns: Some(ns.try_clone()?),
            destroy: None,
        })
    }

    /// How many dumps on this client were restarted after `NLM_F_DUMP_INTR`.
    pub fn dump_retries(&self) -> u64 {
        self.conn.dump_retries
    }

    /// Whether the kernel accepted `NFT_MSG_DESTROYSETELEM` (lenient deletes
    /// in one batch): `None` until a lenient delete was committed.
    pub fn destroy_supported(&self) -> Option<bool> {
        self.destroy
    }

    /// Tests: take the probe-then-delete path of lenient deletes.
    #[cfg(test)]
    pub(crate) fn force_no_destroy(&mut self) {
        self.destroy = Some(false);
    }

    /// The slow path: `nft -f -` with `text` (see [`crate::apply_ruleset`]),
    /// in this client's namespace.
    pub fn apply_ruleset(&mut self, text: &str) -> Result<(), NftError> {
        match &self.ns {
            Some(ns) => crate::apply_ruleset_in(ns, text),
            None => crate::apply_ruleset(text),
        }
    }

    /// A `doit` GET: `Ok(Some(attrs of the reply))`, or `Ok(None)` on `ENOENT`.
    fn get(
        &mut self,
        op: u8,
        family: Family,
        build: &dyn Fn(&mut MsgBuf),
        ctx: &dyn Fn() -> String,
    ) -> Result<Option<Vec<u8>>, NftError> {
        let seq = self.conn.next_seq();
        let mut m = MsgBuf::default();
        let s = m.begin(
            nl::nft_type(op),
            nl::NLM_F_REQUEST | nl::NLM_F_ACK,
            seq,
            family.nfproto(),
            0,
        );
        build(&mut m);
        m.end(s);
        let mut reply: Option<Vec<u8>> = None;
        let r = self.conn.request(&m.buf, seq, ctx, &mut |_, payload| {
            if reply.is_none() {
                reply = Some(nft_attrs(payload).to_vec());
            }
            Ok(())
        });
        match r {
            Ok(()) => Ok(Some(reply.unwrap_or_default())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn get_table(&mut self, family: Family, table: &str) -> Result<Option<Vec<u8>>, NftError> {
        crate::model::check_name("table", table)?;
        self.get(
            msg::GETTABLE,
            family,
            &|m| m.attr_str(attr::TABLE_NAME, table),
            &|| format!("looking up table {family} {table}"),
        )
    }

    /// Does table `family table` exist (`NFT_MSG_GETTABLE`)?
    pub fn table_exists(&mut self, family: Family, table: &str) -> Result<bool, NftError> {
        Ok(self.get_table(family, table)?.is_some())
    }

    /// The table's comment (`NFTA_TABLE_USERDATA`, TLV type 0): `Ok(None)` if
    /// it has none; an `ENOENT` error ([`NftError::is_not_found`]) if the
    /// table does not exist.
    pub fn table_comment(
        &mut self,
        family: Family,
        table: &str,
    ) -> Result<Option<String>, NftError> {
        let Some(attrs) = self.get_table(family, table)? else {
            return Err(NftError::kernel(
                libc::ENOENT,
                format!("reading the comment of table {family} {table}"),
            ));
        };
        Ok(nl::attrs(&attrs)
            .find(|(t, _)| *t == attr::TABLE_USERDATA)
            .and_then(|(_, u)| comment_from_udata(u)))
    }

    /// The ruleset's generation (`NFT_MSG_GETGEN`): every committed
    /// transaction in this namespace changes it. See
    /// [`Nft::delete_chains_at`].
    pub fn generation(&mut self) -> Result<u32, NftError> {
        let attrs = self.get(msg::GETGEN, Family::Inet, &|_| {}, &|| {
            "reading the nf_tables generation".to_owned()
        })?;
        attrs
            .as_deref()
            .and_then(|a| nl::attrs(a).find(|(t, _)| *t == attr::GEN_ID))
            .and_then(|(_, v)| nl::be32(v))
            .ok_or_else(|| {
                NftError::protocol(
                    "reading the nf_tables generation".to_owned(),
                    "the reply has no NFTA_GEN_ID".to_owned(),
                )
            })
    }

    /// Deletes `chains` (family, table, chain; with their rules) in one
    /// transaction, but only if the ruleset is still at generation `at_generation`
    /// ([`Nft::generation`]): the kernel checks that under its commit lock
    /// (`NFNL_BATCH_GENID`). `Ok(false)` when anything was committed since
    /// (`ERESTART`); nothing was deleted then, read again and retry. This is
    /// how a chain is removed only while what was read to decide it (e.g.
    /// that a set is empty) still holds, without a lock that every writer
    /// would have to take.
    pub fn delete_chains_at(
        &mut self,
        at_generation: u32,
        chains: &[(Family, &str, &str)],
    ) -> Result<bool, NftError> {
        if chains.is_empty() {
            return Ok(true);
        }
        let mut m = MsgBuf::default();
        let begin_seq = self.conn.next_seq();
        m.batch_begin(begin_seq, Some(at_generation));
        let mut seqs = Vec::with_capacity(chains.len());
        for (family, table, chain) in chains {
            crate::model::check_name("table", table)?;
            crate::model::check_name("chain", chain)?;
            let seq = self.conn.next_seq();
            let s = m.begin(
                nl::nft_type(msg::DELCHAIN),
                nl::NLM_F_REQUEST | nl::NLM_F_ACK,
                seq,
                family.nfproto(),
                0,
            );
            m.attr_str(attr::CHAIN_TABLE, table);
            m.attr_str(attr::CHAIN_NAME, chain);
            m.end(s);
            seqs.push(seq);
        }
        m.batch_end(self.conn.next_seq());
        let names: Vec<String> = chains
            .iter()
            .map(|(f, t, c)| format!("{f} {t} {c}"))
            .collect();
        let ctx = || format!("deleting chain(s) {}", names.join(", "));
        match self.conn.batch(&m.buf, begin_seq, &seqs, &ctx) {
            Err(e) if e.errno() == Some(libc::ERESTART) => Ok(false),
            Err(e) => Err(e),
            Ok(acks) => all_acked(&acks, &ctx).map(|()| true),
        }
    }

    /// Creates `chains` in `family table` over netlink, in one transaction,
    /// as [`Chain::put_text`] does through `nft`: each chain added (with its
    /// hook, priority and policy), flushed, and its rules appended. Returns
    /// `Ok(false)` without sending anything unless every chain has its rules
    /// as expressions ([`Chain::native`]) and a hook, priority and policy
    /// this encoder knows; the caller then uses the text.
    ///
    /// [`Chain::put_text`]: crate::Chain::put_text
    /// [`Chain::native`]: crate::Chain::native
    pub fn put_chains_native(
        &mut self,
        family: Family,
        table: &str,
        chains: &[crate::Chain],
    ) -> Result<bool, NftError> {
        crate::model::check_name("table", table)?;
        let mut m = MsgBuf::default();
        let begin_seq = self.conn.next_seq();
        m.batch_begin(begin_seq, None);
        let mut seqs = Vec::new();
        for c in chains {
            let conn = &mut self.conn;
            if !encode_chain(
                &mut m,
                &mut || conn.next_seq(),
                &mut seqs,
                family,
                table,
                c,
                true,
            )? {
                return Ok(false);
            }
        }
        m.batch_end(self.conn.next_seq());
        let names: Vec<&str> = chains.iter().map(|c| c.name.as_str()).collect();
        let ctx = || format!("creating chain(s) {} in {family} {table}", names.join(", "));
        let acks = self.conn.batch(&m.buf, begin_seq, &seqs, &ctx)?;
        all_acked(&acks, &ctx)?;
        Ok(true)
    }

    /// Applies `ruleset` in one transaction over netlink, as `nft -f` applies
    /// its [rendering](crate::Ruleset::render): each table replaced (or,
    /// when [`fresh`](crate::Table::fresh), created; an existing table is
    /// then an error, `EEXIST`), with its sets, maps, chains and elements.
    /// No `nft` process: its start and its read of the host's whole ruleset
    /// cost 4–25 ms. `Ok(false)`, with nothing sent, when some part has no
    /// netlink form here: a chain without expressions, a set with flags or a
    /// comment, a key or value type other than `ipv4_addr`, `ipv6_addr`,
    /// `ether_addr`, `inet_proto`, `inet_service`, `mark`, `ifname`, their
    /// concatenations and `verdict`.
    pub fn apply_native(&mut self, ruleset: &crate::Ruleset) -> Result<bool, NftError> {
        const NEWTABLE: u8 = 0;
        const DELTABLE: u8 = 2;
        const NEWSET: u8 = 9;
        const NFT_SET_MAP: u32 = 0x8;
        let mut m = MsgBuf::default();
        let begin_seq = self.conn.next_seq();
        m.batch_begin(begin_seq, None);
        let mut seqs = Vec::new();
        let mut set_id = 0u32;
        // (index of an object's first message, the object) for errors.
        let mut marks: Vec<(usize, String)> = Vec::new();
        for t in &ruleset.tables {
            crate::model::check_name("table", &t.name)?;
            marks.push((seqs.len(), format!("table {} {}", t.family, t.name)));
            let fam = t.family.nfproto();
            let mut table_msg = |m: &mut MsgBuf, op: u8, flags: u16, with_comment: bool| {
                let seq = self.conn.next_seq();
                let s = m.begin(
                    nl::nft_type(op),
                    nl::NLM_F_REQUEST | nl::NLM_F_ACK | flags,
                    seq,
                    fam,
                    0,
                );
                m.attr_str(attr::TABLE_NAME, &t.name);
                if with_comment {
                    m.attr_be32(2, 0); // NFTA_TABLE_FLAGS
                    if let Some(c) = &t.comment {
                        m.attr(attr::TABLE_USERDATA, &batch::comment_udata(c));
                    }
                }
                m.end(s);
                seqs.push(seq);
            };
            if t.fresh {
                table_msg(&mut m, NEWTABLE, nl::NLM_F_CREATE | nl::NLM_F_EXCL, true);
            } else {
                // nft's replace prelude: `add table; delete table`.
                table_msg(&mut m, NEWTABLE, nl::NLM_F_CREATE, false);
                table_msg(&mut m, DELTABLE, 0, false);
                table_msg(&mut m, NEWTABLE, nl::NLM_F_CREATE | nl::NLM_F_EXCL, true);
            }
            let sets = t
                .sets
                .iter()
                .map(|x| (&x.name, &x.key_type, None, &x.flags, &x.comment));
            let maps = t.maps.iter().map(|x| {
                (
                    &x.name,
                    &x.key_type,
                    Some(&x.value_type),
                    &x.flags,
                    &x.comment,
                )
            });
            for (name, key, value, flags, comment) in sets.chain(maps) {
                crate::model::check_name("set", name)?;
                let Some((key_type, key_len)) = crate::model::type_spec(key) else {
                    return Ok(false);
                };
                let data = match value {
                    None => None,
                    Some(v) => match crate::model::type_spec(v) {
                        Some(d) => Some(d),
                        None => return Ok(false),
                    },
                };
                if !flags.is_empty() || comment.is_some() {
                    return Ok(false);
                }
                marks.push((seqs.len(), format!("set {name}")));
                let seq = self.conn.next_seq();
                let s = m.begin(
                    nl::nft_type(NEWSET),
                    nl::NLM_F_REQUEST | nl::NLM_F_ACK | nl::NLM_F_CREATE | nl::NLM_F_EXCL,
                    seq,
                    fam,
                    0,
                );
                m.attr_str(attr::SET_TABLE, &t.name);
                m.attr_str(attr::SET_NAME, name);
                m.attr_be32(
                    attr::SET_FLAGS,
                    if data.is_some() { NFT_SET_MAP } else { 0 },
                );
                m.attr_be32(attr::SET_KEY_TYPE, key_type);
                m.attr_be32(attr::SET_KEY_LEN, key_len);
                if let Some((data_type, data_len)) = data {
                    m.attr_be32(attr::SET_DATA_TYPE, data_type);
                    m.attr_be32(attr::SET_DATA_LEN, data_len);
                }
                // NFTA_SET_ID: required, names the set within the batch.
                set_id += 1;
                m.attr_be32(10, set_id);
                let udata = crate::model::set_udata(key, value.map(String::as_str));
                m.attr(13, &udata); // NFTA_SET_USERDATA
                m.end(s);
                seqs.push(seq);
            }
            for c in &t.chains {
                marks.push((seqs.len(), format!("chain {}", c.name)));
                let conn = &mut self.conn;
                let mut next = || conn.next_seq();
                if !encode_chain(&mut m, &mut next, &mut seqs, t.family, &t.name, c, false)? {
                    return Ok(false);
                }
            }
            // Elements last: a verdict may name any of the chains.
            let mut b = Batch::new(t.family);
            for (name, els) in t
                .sets
                .iter()
                .map(|x| (&x.name, &x.elements))
                .chain(t.maps.iter().map(|x| (&x.name, &x.elements)))
            {
                if !els.is_empty() {
                    b.add_elements(&t.name, name, els);
                }
            }
            b.validate()?;
            marks.push((
                seqs.len(),
                format!("the elements of table {} {}", t.family, t.name),
            ));
            let mut msgs = Vec::new();
            let conn = &mut self.conn;
            batch::encode_ops_into(&mut m, b.ops(), false, &mut || conn.next_seq(), &mut msgs)?;
            seqs.extend(msgs.iter().map(|x| x.seq));
        }
        m.batch_end(self.conn.next_seq());
        let names: Vec<String> = ruleset
            .tables
            .iter()
            .map(|t| format!("{} {}", t.family, t.name))
            .collect();
        let ctx = || format!("applying table(s) {} over netlink", names.join(", "));
        let acks = self.conn.batch(&m.buf, begin_seq, &seqs, &ctx)?;
        // The first refused message, named by the object it was about.
        let first = acks
            .iter()
            .filter(|a| a.errno != 0)
            .filter_map(|a| Some((seqs.iter().position(|s| *s == a.seq)?, a)))
            .min_by_key(|(i, _)| *i);
        if let Some((i, a)) = first {
            let what = marks
                .iter()
                .rev()
                .find(|(start, _)| *start <= i)
                .map_or("?", |(_, w)| w.as_str());
            return Err(NftError::kernel(
                a.errno,
                nl::with_extack(format!("{}: {what}", ctx()), a.extack.clone()),
            ));
        }
        Ok(true)
    }

    /// Does chain `chain` exist in table `family table` (`NFT_MSG_GETCHAIN`)?
    /// A missing table also answers `false`.
    pub fn chain_exists(
        &mut self,
        family: Family,
        table: &str,
        chain: &str,
    ) -> Result<bool, NftError> {
        Ok(self.get_chain(family, table, chain)?.is_some())
    }

    /// The policy of base chain `chain` in `family table` (any tool's, e.g.
    /// iptables-nft's `ip filter FORWARD`): `Ok(None)` when the chain or
    /// table does not exist or the chain is not a base chain.
    pub fn chain_policy(
        &mut self,
        family: Family,
        table: &str,
        chain: &str,
    ) -> Result<Option<ChainPolicy>, NftError> {
        let Some(a) = self.get_chain(family, table, chain)? else {
            return Ok(None);
        };
        Ok(nl::attrs(&a)
            .find(|(t, _)| *t == attr::CHAIN_POLICY)
            .and_then(|(_, v)| nl::be32(v))
            .map(|v| {
                if v == 0 {
                    ChainPolicy::Drop
                } else {
                    ChainPolicy::Accept
                }
            }))
    }

    fn get_chain(
        &mut self,
        family: Family,
        table: &str,
        chain: &str,
    ) -> Result<Option<Vec<u8>>, NftError> {
        crate::model::check_name("table", table)?;
        crate::model::check_name("chain", chain)?;
        self.get(
            msg::GETCHAIN,
            family,
            &|m| {
                m.attr_str(attr::CHAIN_TABLE, table);
                m.attr_str(attr::CHAIN_NAME, chain);
            },
            &|| format!("looking up chain {chain} in table {family} {table}"),
        )
    }

    fn get_set(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
    ) -> Result<Option<Vec<u8>>, NftError> {
        crate::model::check_name("table", table)?;
        crate::model::check_name("set", set)?;
        self.get(
            msg::GETSET,
            family,
            &|m| {
                m.attr_str(attr::SET_TABLE, table);
                m.attr_str(attr::SET_NAME, set);
            },
            &|| format!("looking up set {set} in table {family} {table}"),
        )
    }

    /// Does set or map `set` exist in table `family table` (`NFT_MSG_GETSET`)?
    /// A missing table also answers `false`.
    pub fn set_exists(&mut self, family: Family, table: &str, set: &str) -> Result<bool, NftError> {
        Ok(self.get_set(family, table, set)?.is_some())
    }

    /// Key/data types, lengths and flags of a set or map; `ENOENT` error if missing.
    pub fn set_info(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
    ) -> Result<SetInfo, NftError> {
        let Some(a) = self.get_set(family, table, set)? else {
            return Err(NftError::kernel(
                libc::ENOENT,
                format!("looking up set {set} in table {family} {table}"),
            ));
        };
        let mut info = SetInfo {
            key_type: 0,
            key_len: 0,
            data_type: None,
            data_len: 0,
            flags: 0,
        };
        for (t, v) in nl::attrs(&a) {
            let val = nl::be32(v);
            match t {
                attr::SET_FLAGS => info.flags = val.unwrap_or(0),
                attr::SET_KEY_TYPE => info.key_type = val.unwrap_or(0),
                attr::SET_KEY_LEN => info.key_len = val.unwrap_or(0),
                attr::SET_DATA_TYPE => info.data_type = val,
                attr::SET_DATA_LEN => info.data_len = val.unwrap_or(0),
                _ => {}
            }
        }
        Ok(info)
    }

    /// Is an element with `element`'s key in the set (`NFT_MSG_GETSETELEM`
    /// request for that key: O(1), no dump)?
    pub fn element_exists(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        element: &Element,
    ) -> Result<bool, NftError> {
        crate::model::check_name("table", table)?;
        crate::model::check_name("set", set)?;
        element.validate()?;
        let r = self.get(
            msg::GETSETELEM,
            family,
            &|m| {
                m.attr_str(attr::SET_ELEM_LIST_TABLE, table);
                m.attr_str(attr::SET_ELEM_LIST_SET, set);
                let l = m.nest(attr::SET_ELEM_LIST_ELEMENTS);
                // Cannot overflow: the element was validated (key <= 64 bytes).
                let _ = batch::encode_element(m, element, false);
                let _ = m.nest_end(l);
            },
            &|| {
                format!(
                    "looking up element {{ {} }} in set {family} {table} {set}",
                    element.key_text()
                )
            },
        )?;
        Ok(r.is_some())
    }

    /// All elements of a set or map (`NFT_MSG_GETSETELEM` dump), keys and map
    /// values decoded by the set's types, comments included. This is what
    /// CHECK and GC use to find an attachment's elements by comment; its cost
    /// grows with the set (the hot ADD/DEL path never dumps).
    ///
    /// Interval sets are refused ([`NftError::InvalidArgument`]): their
    /// elements are range boundaries, not keys. Catch-all elements are skipped.
    pub fn list_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
    ) -> Result<Vec<Element>, NftError> {
        let info = self.set_info(family, table, set)?;
        if info.is_interval() {
            return Err(NftError::invalid(format!(
                "set {family} {table} {set} has flags interval; list_elements decodes only plain \
                 sets and maps"
            )));
        }
        let build = |seq: u32| {
            let mut m = MsgBuf::default();
            let s = m.begin(
                nl::nft_type(msg::GETSETELEM),
                nl::NLM_F_REQUEST | nl::NLM_F_DUMP,
                seq,
                family.nfproto(),
                0,
            );
            m.attr_str(attr::SET_ELEM_LIST_TABLE, table);
            m.attr_str(attr::SET_ELEM_LIST_SET, set);
            m.end(s);
            m.buf
        };
        self.conn.dump(
            &build,
            &|| format!("listing the elements of set {family} {table} {set}"),
            &mut |_ty, payload, out| {
                for (t, v) in nl::attrs(nft_attrs(payload)) {
                    if t != attr::SET_ELEM_LIST_ELEMENTS {
                        continue;
                    }
                    for (lt, lv) in nl::attrs(v) {
                        if lt == attr::LIST_ELEM {
                            if let Some(e) = decode_element(&info, lv)? {
                                out.push(e);
                            }
                        }
                    }
                }
                Ok(())
            },
        )
    }

    /// Commit a batch: one `sendmsg` of BEGIN, the element messages (each
    /// with `NLM_F_ACK`), END; then one ACK per message is read. The kernel
    /// applies all of it or nothing; the first failing message's errno is
    /// returned with a context naming its set and elements.
    pub fn commit(&mut self, batch: &Batch) -> Result<(), NftError> {
        if batch.is_empty() {
            return Ok(());
        }
        batch.validate()?;
        let ops = batch.ops();
        let has_lenient = ops.iter().any(|o| o.kind == OpKind::DeleteLenient);
        if self.destroy != Some(false) {
            match self.send_ops(ops, true) {
                Ok(()) => {
                    if has_lenient {
                        self.destroy = Some(true);
                    }
                    return Ok(());
                }
                Err((e, Some(i)))
                    if self.destroy.is_none()
                        && ops.get(i).is_some_and(|o| o.kind == OpKind::DeleteLenient)
                        && matches!(e.errno(), Some(libc::EINVAL | libc::EOPNOTSUPP)) =>
                {
                    // An older kernel without DESTROYSETELEM; fall back. (If
                    // the element itself was bad, the fallback reports it.)
                    self.destroy = Some(false);
                }
                Err((e, _)) => return Err(e),
            }
        }
        // Fallback for lenient deletes: probe every element, delete the present ones.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut pruned: Vec<BatchOp> = Vec::with_capacity(ops.len());
            for op in ops {
                if op.kind != OpKind::DeleteLenient {
                    pruned.push(op.clone());
                    continue;
                }
                // Like DESTROYSETELEM: a missing set is ENOENT, missing elements are not.
                if !self.set_exists(op.family, &op.table, &op.set)? {
                    return Err(NftError::kernel(
                        libc::ENOENT,
                        format!(
                            "{}: the set does not exist",
                            describe(op, 0, op.elements.len())
                        ),
                    ));
                }
                let mut present = Vec::new();
                for e in &op.elements {
                    if self.element_exists(op.family, &op.table, &op.set, e)? {
                        present.push(e.clone());
                    }
                }
                if !present.is_empty() {
                    pruned.push(BatchOp {
                        elements: present,
                        ..op.clone()
                    });
                }
            }
            if pruned.is_empty() {
                return Ok(());
            }
            match self.send_ops(&pruned, false) {
                Ok(()) => return Ok(()),
                Err((e, Some(i)))
                    if e.is_not_found()
                        && attempt < LENIENT_ATTEMPTS
                        && pruned
                            .get(i)
                            .is_some_and(|o| o.kind == OpKind::DeleteLenient) =>
                {
                    continue;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Encode and send `ops`; on failure also says which op failed first.
    fn send_ops(
        &mut self,
        ops: &[BatchOp],
        destroy: bool,
    ) -> Result<(), (NftError, Option<usize>)> {
        let conn = &mut self.conn;
        let Encoded {
            bytes,
            begin_seq,
            msgs,
        } = batch::encode(ops, destroy, &mut || conn.next_seq()).map_err(|e| (e, None))?;
        let seqs: Vec<u32> = msgs.iter().map(|m| m.seq).collect();
        let ctx = || {
            format!(
                "committing a batch of {} nf_tables message(s) ({} operation(s))",
                msgs.len(),
                ops.len()
            )
        };
        let acks = self
            .conn
            .batch(&bytes, begin_seq, &seqs, &ctx)
            .map_err(|e| (e, None))?;
        let failed: Vec<_> = acks.iter().filter(|a| a.errno != 0).collect();
        let Some(first) = failed
            .iter()
            .min_by_key(|a| seqs.iter().position(|s| *s == a.seq))
        else {
            return Ok(());
        };
        let info = msgs.iter().find(|m| m.seq == first.seq);
        let (context, op_idx) = match info.and_then(|m| ops.get(m.op).map(|o| (m, o))) {
            Some((m, op)) => (describe(op, m.first, m.count), Some(m.op)),
            None => (ctx(), None),
        };
        let mut context = nl::with_extack(context, first.extack.clone());
        if failed.len() > 1 {
            context.push_str(&format!(
                " ({} messages of the batch failed; nothing was applied)",
                failed.len()
            ));
        } else {
            context.push_str(" (the whole batch was rolled back)");
        }
        Err((NftError::kernel(first.errno, context), op_idx))
    }
}

/// Decode one `NFTA_LIST_ELEM`; `Ok(None)` for catch-all/interval-end elements.
fn decode_element(info: &SetInfo, a: &[u8]) -> Result<Option<Element>, String> {
    let mut key: Option<Vec<u8>> = None;
    let mut data: Option<Vec<u8>> = None;
    let mut verdict: Option<Verdict> = None;
    let mut comment = None;
    let mut flags = 0u32;
    for (t, v) in nl::attrs(a) {
        match t {
            attr::SET_ELEM_KEY => {
                key = nl::attrs(v)
                    .find(|(t, _)| *t == attr::DATA_VALUE)
                    .map(|(_, b)| b.to_vec());
            }
            attr::SET_ELEM_DATA => {
                for (dt, dv) in nl::attrs(v) {
                    match dt {
                        attr::DATA_VALUE => data = Some(dv.to_vec()),
                        attr::DATA_VERDICT => {
                            let mut code = None;
                            let mut chain = None;
                            for (vt, vv) in nl::attrs(dv) {
                                match vt {
                                    attr::VERDICT_CODE => code = nl::be32(vv).map(|c| c as i32),
                                    attr::VERDICT_CHAIN => chain = Some(nl::str_of(vv)),
                                    _ => {}
                                }
                            }
                            let code = code.ok_or("a verdict without NFTA_VERDICT_CODE")?;
                            verdict = Some(
                                Verdict::from_code(code, chain)
                                    .ok_or_else(|| format!("unknown verdict code {code}"))?,
                            );
                        }
                        _ => {}
                    }
                }
            }
            attr::SET_ELEM_USERDATA => comment = comment_from_udata(v),
            attr::SET_ELEM_FLAGS => flags = nl::be32(v).unwrap_or(0),
            _ => {}
        }
    }
    if flags & (NFT_SET_ELEM_CATCHALL | NFT_SET_ELEM_INTERVAL_END) != 0 {
        return Ok(None);
    }
    let key = key.ok_or("a set element without a key")?;
    let data_type = info.data_type.filter(|t| *t != NFT_DATA_VERDICT);
    Ok(Some(Element {
        key: decode_value(info.key_type, &key),
        data: match (data, data_type) {
            (Some(d), Some(t)) => Some(decode_value(t, &d)),
            (Some(d), None) => Some(vec![crate::KeyPart::Raw(d)]),
            (None, _) => None,
        },
        verdict,
        comment,
    }))
}

/// The first message of a batch that the kernel refused, as an error.
/// Appends chain `c` of table `family table` to a batch: `NEWCHAIN` (with
/// its hook for a base chain), with `flush` a `DELRULE` of all its rules,
/// then one `NEWRULE` per rule. `Ok(false)`, with nothing appended, when
/// the chain has no expressions or its hook, priority or policy has no
/// number here.
fn encode_chain(
    m: &mut MsgBuf,
    next_seq: &mut dyn FnMut() -> u32,
    seqs: &mut Vec<u32>,
    family: Family,
    table: &str,
    c: &crate::Chain,
    flush: bool,
) -> Result<bool, NftError> {
    const NEWCHAIN: u8 = 3;
    const NEWRULE: u8 = 6;
    const DELRULE: u8 = 8;
    const NLM_F_APPEND: u16 = 0x800;
    crate::model::check_name("chain", &c.name)?;
    let Some(rules) = c.native_rules() else {
        return Ok(false);
    };
    let hook = match &c.base {
        None => None,
        Some(b) => match (b.hook_num(), b.priority_num(family), b.policy_num()) {
            (Some(h), Some(p), Some(pol)) => Some((b, h, p, pol)),
            _ => return Ok(false),
        },
    };
    let seq = next_seq();
    let s = m.begin(
        nl::nft_type(NEWCHAIN),
        nl::NLM_F_REQUEST | nl::NLM_F_ACK | nl::NLM_F_CREATE,
        seq,
        family.nfproto(),
        0,
    );
    m.attr_str(attr::CHAIN_TABLE, table);
    m.attr_str(attr::CHAIN_NAME, &c.name);
    if let Some((b, num, prio, policy)) = hook {
        crate::model::check_name("chain type", &b.kind)?;
        let h = m.nest(4); // NFTA_CHAIN_HOOK
        m.attr_be32(1, num); // NFTA_HOOK_HOOKNUM
        m.attr_be32(2, prio as u32); // NFTA_HOOK_PRIORITY (signed, big endian)
        m.nest_end(h)?;
        if let Some(p) = policy {
            m.attr_be32(attr::CHAIN_POLICY, p);
        }
        m.attr_str(7, &b.kind); // NFTA_CHAIN_TYPE
    }
    m.end(s);
    seqs.push(seq);
    if flush {
        // A DELRULE naming only the chain removes all its rules.
        let seq = next_seq();
        let s = m.begin(
            nl::nft_type(DELRULE),
            nl::NLM_F_REQUEST | nl::NLM_F_ACK,
            seq,
            family.nfproto(),
            0,
        );
        m.attr_str(1, table); // NFTA_RULE_TABLE
        m.attr_str(2, &c.name); // NFTA_RULE_CHAIN
        m.end(s);
        seqs.push(seq);
    }
    for exprs in rules {
        let seq = next_seq();
        let s = m.begin(
            nl::nft_type(NEWRULE),
            nl::NLM_F_REQUEST | nl::NLM_F_ACK | nl::NLM_F_CREATE | NLM_F_APPEND,
            seq,
            family.nfproto(),
            0,
        );
        m.attr_str(1, table); // NFTA_RULE_TABLE
        m.attr_str(2, &c.name); // NFTA_RULE_CHAIN
        let list = m.nest(4); // NFTA_RULE_EXPRESSIONS
        for e in exprs {
            e.encode(m)?;
        }
        m.nest_end(list)?;
        m.end(s);
        seqs.push(seq);
    }
    Ok(true)
}

fn all_acked(acks: &[nl::Ack], ctx: &dyn Fn() -> String) -> Result<(), NftError> {
    match acks.iter().find(|a| a.errno != 0) {
        Some(a) => Err(NftError::kernel(
            a.errno,
            nl::with_extack(ctx(), a.extack.clone()),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn decode_element_never_panics() {
        let info = SetInfo {
            key_type: (12 << 6) | 13,
            key_len: 8,
            data_type: Some(NFT_DATA_VERDICT),
            data_len: 16,
            flags: NFT_SET_MAP,
        };
        // A valid element: key tcp . 80, verdict jump "x".
        let mut m = MsgBuf::default();
        let e = Element::new(vec![crate::KeyPart::Proto(6), crate::KeyPart::Port(80)])
            .verdict(Verdict::Jump("x".into()))
            .comment("c");
        batch::encode_element(&mut m, &e, true).unwrap();
        let inner = nl::attrs(&m.buf).next().unwrap().1.to_vec();
        assert_eq!(decode_element(&info, &inner).unwrap(), Some(e));
        for cut in 0..inner.len() {
            let _ = decode_element(&info, &inner[..cut]);
        }
        let mut x = 0x1234_5678u32;
        for _ in 0..2000 {
            let mut buf = inner.clone();
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if x % 7 == 0 {
                    *b = x as u8;
                }
            }
            let _ = decode_element(&info, &buf);
        }
    }
}
