//! The hot path's unit of work: element additions and deletions, sent as one
//! nfnetlink batch (one `sendmsg`), applied by the kernel all or nothing.

use std::fmt::Write as _;

use crate::element::encode_value;
use crate::nl::{self, MsgBuf, attr, msg};
use crate::{Element, Family, NftError};

/// What a [`BatchOp`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Add; an element that already exists with the same key (and, for maps,
    /// the same data or verdict) is left alone: idempotent; its comment is
    /// not updated. Same key with *different* map data or verdict fails with
    /// `EEXIST` (the kernel never overwrites silently).
    Add,
    /// Add, failing with `EEXIST` if the key exists (`create element`):
    /// detects a host port that is already published.
    AddExcl,
    /// Delete; a missing element fails the batch with `ENOENT`.
    Delete,
    /// Delete, ignoring missing elements (`destroy element`): idempotent DEL.
    DeleteLenient,
}

/// One operation of a [`Batch`] on one set or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOp {
    /// What to do.
    pub kind: OpKind,
    /// Table family.
    pub family: Family,
    /// Table name.
    pub table: String,
    /// Set or map name.
    pub set: String,
    /// The elements (for deletes only the keys matter).
    pub elements: Vec<Element>,
}

/// A list of element operations committed atomically by
/// [`Backend::commit`](crate::Backend::commit) / [`Nft::commit`](crate::Nft::commit).
///
/// All operations of one batch use the family given to [`Batch::new`].
///
/// ```
/// use rnet_nft::{Batch, Element, Family, KeyPart};
/// let mut b = Batch::new(Family::Inet);
/// b.add_elements("rnet", "bridges", &[Element::new(KeyPart::IfName("cni0".into()))]);
/// assert_eq!(b.render(), "add element inet rnet bridges { \"cni0\" }\n");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    family: Family,
    ops: Vec<BatchOp>,
}

impl Batch {
    /// An empty batch for tables of `family`.
    pub fn new(family: Family) -> Batch {
        Batch {
            family,
            ops: Vec::new(),
        }
    }

    fn push(&mut self, kind: OpKind, table: &str, set: &str, elements: &[Element]) -> &mut Self {
        if !elements.is_empty() {
            self.ops.push(BatchOp {
                kind,
                family: self.family,
                table: table.to_owned(),
                set: set.to_owned(),
                elements: elements.to_vec(),
            });
        }
        self
    }

    /// Add elements, idempotently (see [`OpKind::Add`]).
    pub fn add_elements(&mut self, table: &str, set: &str, elements: &[Element]) -> &mut Self {
        self.push(OpKind::Add, table, set, elements)
    }

    /// Add elements, failing with `EEXIST` if one exists (see [`OpKind::AddExcl`]).
    pub fn add_elements_excl(&mut self, table: &str, set: &str, elements: &[Element]) -> &mut Self {
        self.push(OpKind::AddExcl, table, set, elements)
    }

    /// Delete elements; `ENOENT` if one is missing.
    ///
    /// Note the deferred cost of deletions at socket close (crate docs,
    /// "Measured cost"): commit deletions early in a DEL.
    pub fn delete_elements(&mut self, table: &str, set: &str, elements: &[Element]) -> &mut Self {
        self.push(OpKind::Delete, table, set, elements)
    }

    /// Delete elements, ignoring missing ones (see [`OpKind::DeleteLenient`]).
    ///
    /// Cost: on kernels >= 6.3 this is `NFT_MSG_DESTROYSETELEM` inside the same
    /// batch, so no extra round trip. On older kernels (the destroy message is
    /// rejected with `EINVAL`/`EOPNOTSUPP`, remembered per [`Nft`](crate::Nft))
    /// every lenient element is first probed with a `GETSETELEM` request (one
    /// round trip each, O(1) in the set size, no dump) and only the present
    /// ones are deleted; a concurrent delete in between is retried.
    ///
    /// A missing *set or table* still fails with `ENOENT` (both paths), so a
    /// typo is not silently ignored; after `nft flush ruleset` a DEL can
    /// treat that `ENOENT` as "nothing left to delete".
    pub fn delete_elements_lenient(
        &mut self,
        table: &str,
        set: &str,
        elements: &[Element],
    ) -> &mut Self {
        self.push(OpKind::DeleteLenient, table, set, elements)
    }

    /// The family given to [`Batch::new`].
    pub fn family(&self) -> Family {
        self.family
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// Nothing to do?
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The batch as nft commands, one line per operation (`add element`,
    /// `create element`, `delete element`, `destroy element`), for logs and
    /// tier-0 golden tests.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for op in &self.ops {
            let verb = match op.kind {
                OpKind::Add => "add",
                OpKind::AddExcl => "create",
                OpKind::Delete => "delete",
                OpKind::DeleteLenient => "destroy",
            };
            let items: Vec<String> = op
                .elements
                .iter()
                .map(|e| match op.kind {
                    OpKind::Add | OpKind::AddExcl => e.to_nft_text(),
                    OpKind::Delete | OpKind::DeleteLenient => e.key_text(),
                })
                .collect();
            let _ = writeln!(
                out,
                "{verb} element {} {} {} {{ {} }}",
                op.family,
                op.table,
                op.set,
                items.join(", ")
            );
        }
        out
    }

    /// Check names and elements before anything is sent.
    pub fn validate(&self) -> Result<(), NftError> {
        for op in &self.ops {
            crate::model::check_name("table", &op.table)?;
            crate::model::check_name("set", &op.set)?;
            for e in &op.elements {
                e.validate()?;
            }
        }
        Ok(())
    }
}

/// Which operation (and which of its elements) an encoded message carries.
#[derive(Debug, Clone)]
pub(crate) struct MsgInfo {
    pub(crate) seq: u32,
    pub(crate) op: usize,
    pub(crate) first: usize,
    pub(crate) count: usize,
}

/// Largest element list per message: nest lengths are 16-bit.
const MAX_LIST_BYTES: usize = 60_000;

/// An encoded batch, ready for one `sendmsg`.
pub(crate) struct Encoded {
    pub(crate) bytes: Vec<u8>,
    pub(crate) begin_seq: u32,
    pub(crate) msgs: Vec<MsgInfo>,
}

/// Encode `ops` as BEGIN, element messages (split so every element list
/// stays below 64 KiB), END. `destroy` selects `DESTROYSETELEM` for lenient
/// deletes (else they are sent as plain deletes; the caller pruned them).
pub(crate) fn encode(
    ops: &[BatchOp],
    destroy: bool,
    next_seq: &mut dyn FnMut() -> u32,
) -> Result<Encoded, NftError> {
    let mut m = MsgBuf::default();
    let begin_seq = next_seq();
    m.batch_begin(begin_seq, None);
    let mut msgs = Vec::new();
    encode_ops_into(&mut m, ops, destroy, next_seq, &mut msgs)?;
    m.batch_end(next_seq());
    Ok(Encoded {
        bytes: m.buf,
        begin_seq,
        msgs,
    })
}

/// The element messages of [`encode`], appended to a batch being built.
pub(crate) fn encode_ops_into(
    m: &mut MsgBuf,
    ops: &[BatchOp],
    destroy: bool,
    next_seq: &mut dyn FnMut() -> u32,
    msgs: &mut Vec<MsgInfo>,
) -> Result<(), NftError> {
    for (i, op) in ops.iter().enumerate() {
        let (ty, flags) = match op.kind {
            OpKind::Add => (msg::NEWSETELEM, nl::NLM_F_CREATE),
            OpKind::AddExcl => (msg::NEWSETELEM, nl::NLM_F_CREATE | nl::NLM_F_EXCL),
            OpKind::Delete => (msg::DELSETELEM, 0),
            OpKind::DeleteLenient if destroy => (msg::DESTROYSETELEM, 0),
            OpKind::DeleteLenient => (msg::DELSETELEM, 0),
        };
        let with_values = matches!(op.kind, OpKind::Add | OpKind::AddExcl);
        let mut idx = 0;
        while idx < op.elements.len() {
            let seq = next_seq();
            let start = m.begin(
                nl::nft_type(ty),
                nl::NLM_F_REQUEST | nl::NLM_F_ACK | flags,
                seq,
                op.family.nfproto(),
                0,
            );
            m.attr_str(attr::SET_ELEM_LIST_TABLE, &op.table);
            m.attr_str(attr::SET_ELEM_LIST_SET, &op.set);
            let list = m.nest(attr::SET_ELEM_LIST_ELEMENTS);
            let first = idx;
            while let Some(e) = op.elements.get(idx) {
                let mut one = MsgBuf::default();
                encode_element(&mut one, e, with_values)?;
                if idx > first && m.buf.len() - list + one.buf.len() > MAX_LIST_BYTES {
                    break;
                }
                m.buf.extend_from_slice(&one.buf);
                idx += 1;
            }
            m.nest_end(list)?;
            m.end(start);
            msgs.push(MsgInfo {
                seq,
                op: i,
                first,
                count: idx - first,
            });
        }
    }
    Ok(())
}

/// `NFTA_LIST_ELEM { KEY { VALUE }, [DATA { VALUE | VERDICT {CODE, CHAIN} }], [USERDATA] }`.
pub(crate) fn encode_element(
    m: &mut MsgBuf,
    e: &Element,
    with_values: bool,
) -> Result<(), NftError> {
    let le = m.nest(attr::LIST_ELEM);
    let k = m.nest(attr::SET_ELEM_KEY);
    m.attr(attr::DATA_VALUE, &encode_value(&e.key));
    m.nest_end(k)?;
    if with_values {
        if let Some(d) = &e.data {
            let n = m.nest(attr::SET_ELEM_DATA);
            m.attr(attr::DATA_VALUE, &encode_value(d));
            m.nest_end(n)?;
        }
        if let Some(v) = &e.verdict {
            let n = m.nest(attr::SET_ELEM_DATA);
            let vn = m.nest(attr::DATA_VERDICT);
            m.attr_be32(attr::VERDICT_CODE, v.code() as u32);
            if let Some(c) = v.chain() {
                m.attr_str(attr::VERDICT_CHAIN, c);
            }
            m.nest_end(vn)?;
            m.nest_end(n)?;
        }
        if let Some(c) = &e.comment {
            m.attr(attr::SET_ELEM_USERDATA, &comment_udata(c));
        }
    }
    m.nest_end(le)
}

/// The userdata TLV holding a comment: type 0 (`NFTNL_UDATA_*_COMMENT` for
/// tables and elements alike), length incl. NUL, the string, NUL.
pub(crate) fn comment_udata(c: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(c.len() + 3);
    v.push(0);
    v.push(u8::try_from(c.len() + 1).unwrap_or(u8::MAX));
    v.extend_from_slice(c.as_bytes());
    v.push(0);
    v
}

/// The comment (TLV type 0) inside a userdata blob, if any.
pub(crate) fn comment_from_udata(mut u: &[u8]) -> Option<String> {
    while let [ty, len, rest @ ..] = u {
        let len = usize::from(*len);
        let val = rest.get(..len)?;
        if *ty == 0 {
            return Some(nl::str_of(val));
        }
        u = rest.get(len..)?;
    }
    None
}

/// Human text naming the elements of one message, for error contexts.
pub(crate) fn describe(op: &BatchOp, first: usize, count: usize) -> String {
    let verb = match op.kind {
        OpKind::Add => "adding",
        OpKind::AddExcl => "exclusively adding",
        OpKind::Delete => "deleting",
        OpKind::DeleteLenient => "leniently deleting",
    };
    let prep = match op.kind {
        OpKind::Add | OpKind::AddExcl => "to",
        _ => "from",
    };
    let els: Vec<String> = op
        .elements
        .iter()
        .skip(first)
        .take(count.min(3))
        .map(|e| format!("{{ {} }}", e.key_text()))
        .collect();
    let more = if count > 3 {
        format!(" and {} more", count - 3)
    } else {
        String::new()
    };
    format!(
        "{verb} element {}{more} {prep} set {} {} {}",
        els.join(", "),
        op.family,
        op.table,
        op.set
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::{KeyPart, Verdict};
    use std::net::Ipv4Addr;

    fn hp(port: u16) -> Element {
        Element::new(vec![KeyPart::Proto(6), KeyPart::Port(port)])
            .data(vec![
                KeyPart::Ipv4(Ipv4Addr::new(10, 88, 0, 2)),
                KeyPart::Port(80),
            ])
            .comment("c1/eth0")
    }

    #[test]
    fn render_golden() {
        let mut b = Batch::new(Family::Inet);
        b.add_elements_excl("rnet", "hostports4", &[hp(8080)])
            .add_elements(
                "rnet",
                "isolation",
                &[Element::new(KeyPart::IfName("cni0".into())).verdict(Verdict::Drop)],
            )
            .delete_elements("rnet", "hostports4", &[hp(8081)])
            .delete_elements_lenient(
                "rnet",
                "addrs4",
                &[Element::new(KeyPart::Ipv4(Ipv4Addr::new(10, 88, 0, 9)))],
            )
            .add_elements("rnet", "empty", &[]);
        assert_eq!(
            b.render(),
            "create element inet rnet hostports4 { tcp . 8080 comment \"c1/eth0\" : 10.88.0.2 . 80 }\n\
             add element inet rnet isolation { \"cni0\" : drop }\n\
             delete element inet rnet hostports4 { tcp . 8081 }\n\
             destroy element inet rnet addrs4 { 10.88.0.9 }\n"
        );
        assert_eq!(b.ops().len(), 4);
        b.validate().unwrap();
    }

    #[test]
    fn udata_round_trip() {
        let u = comment_udata("c1/eth0");
        assert_eq!(u[0], 0);
        assert_eq!(u[1], 8);
        assert_eq!(comment_from_udata(&u).as_deref(), Some("c1/eth0"));
        // A flags TLV (type 1) before the comment is skipped.
        let mut u2 = vec![1, 4, 0, 0, 0, 0];
        u2.extend_from_slice(&u);
        assert_eq!(comment_from_udata(&u2).as_deref(), Some("c1/eth0"));
        assert_eq!(comment_from_udata(&[0, 9, b'x']), None);
        assert_eq!(comment_from_udata(&[]), None);
    }

    #[test]
    fn large_batches_are_split() {
        let els: Vec<Element> = (0..5000u16).map(hp).collect();
        let mut b = Batch::new(Family::Inet);
        b.add_elements("rnet", "hostports4", &els);
        let mut seq = 0u32;
        let enc = encode(b.ops(), true, &mut || {
            seq += 1;
            seq
        })
        .unwrap();
        assert!(enc.msgs.len() > 1);
        assert_eq!(enc.msgs.iter().map(|m| m.count).sum::<usize>(), 5000);
        assert_eq!(enc.begin_seq, 1);
        assert_eq!(enc.msgs[0].seq, 2);
        assert!(describe(&b.ops()[0], 0, 10).contains("and 7 more"));
    }
}
