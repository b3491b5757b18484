//! rnet's nftables layer: one `inet rnet` table whose rules look up named
//! sets and maps, a **hot path** that only adds and deletes set/map elements
//! over nf_tables netlink, and a **slow path** that (re)creates the whole
//! table in one transaction: over netlink too when every part of it has a
//! netlink form (rnet's own tables do, [`Nft::apply_native`]), else with
//! one `nft -f -`.
//!
//! # Why two paths
//!
//! A CNI ADD has a budget of about 1–2 ms. Executing `nft` costs 3.5–6 ms
//! per exec on our machines, and more as the ruleset grows (nft fills its
//! cache first). So the operations that happen on every ADD/DEL never exec
//! anything: [`Nft`] speaks nf_tables netlink directly and sends one
//! [`Batch`] of element additions/deletions (one `sendmsg`, one ACK per
//! message; the kernel applies the whole batch or nothing). Rules never
//! change per container: they look sets and maps up (`dnat ip to meta
//! l4proto . th dport map @hostports4`, `iifname vmap @isolation`), as
//! kube-proxy's nftables mode does, so per-packet cost stays flat too.
//!
//! The ruleset itself (table, chains, sets, rules) is only written when it is
//! missing or outdated: on the first use on a host, or after someone ran
//! `nft flush ruleset` / restarted a firewall service. Then a [`Ruleset`] is
//! rendered to nft text and applied with [`apply_ruleset`]. The text starts
//! with `add table` + `delete table` and then the full definition, all in one
//! file, i.e. one transaction: a reload replaces the table atomically (a
//! table known to be absent, [`Table::fresh`], is created without that
//! prelude: deleting a table costs an RCU grace period). The caller then
//! re-adds the elements it owns (they are listed in its own records, or
//! recovered with [`Nft::list_elements`] by comment).
//!
//! **A failed batch is slow**: 8-20 ms here from send to error, 16-28 ms
//! with two processes failing batches at once (the kernel's abort waits,
//! like a table deletion, for an RCU grace period, and the batches of a
//! namespace run under one mutex). Callers that may meet missing tables (a
//! first ADD on a host, a DEL after a flush) check with a `GET` first
//! ([`rnet::commit_probing`], [`rnet::commit_deletions`]).
//!
//! Typical plugin flow:
//!
//! ```text
//! let mut nft = Nft::new()?;               // socket in the current namespace
//! ensure_ruleset(&mut nft, &ruleset)?;     // a few GETs; `nft -f -` only if
//!                                          // the table is missing/outdated
//! nft.commit(&batch)?;                     // hot path: one sendmsg
//! ```
//!
//! # Measured cost (see `examples/nft_bench.rs`)
//!
//! On the 2-core dev box: a batch adding 1 and deleting 1 element commits
//! in ~8 µs over netlink, flat from 1 to 10,000 elements in the map; a
//! whole ADD hot path (open socket, [`ensure_ruleset`]'s three `GET`s, commit
//! an add, close) ~28 µs; one `nft -f -` exec adding 1 element ~2 ms.
//!
//! **Deletions have a deferred cost at socket close.** The kernel frees
//! deleted elements after an RCU grace period (a work item doing
//! `synchronize_rcu`), and closing a `NETLINK_NETFILTER` socket flushes that
//! work while it is pending. So a process that deleted elements waits one
//! grace period (measured 3–20 ms here, median ~10–16 ms under load) when it
//! closes its socket or exits; `nft` pays the same (its add+delete exec
//! measured ~14–16 ms vs ~2 ms for add only). The commit itself stays
//! microseconds. A DEL should therefore commit its deletions *first* and do
//! its other work (links, addresses, IPAM) afterwards, so the grace period
//! elapses in parallel; pure additions (ADD) do not trigger it. (Mechanism
//! inferred from the kernel's `nft_rcv_nl_event`; the effect is measured.)
//!
//! # Element encoding
//!
//! libnftnl/nft sources were not used; every encoding was verified against
//! the kernel and `nft` by round trips (add via netlink and read with
//! `nft -j list`, add with nft and read via our dump) in the root tests:
//! single-part keys have their natural length, concatenations pad each part
//! to 4 bytes, comments are userdata TLV type 0, verdict codes big-endian.
//! See [`Element`] and [`KeyPart`].
//!
//! # Namespaces
//!
//! A netlink socket belongs to the namespace it was created in.
//! [`Nft::new`] uses the calling thread's namespace (a plugin process already
//! in the right one); [`Nft::in_netns`] creates the socket on a throwaway
//! thread inside the given namespace (`rnet_netns::NetNs::run`), and its
//! [`Nft::apply_ruleset`] spawns `nft` from such a thread too. The calling
//! thread never switches namespace.
//!
//! # Errors
//!
//! [`NftError::Kernel`] keeps the errno (`is_not_found`, `is_exists`,
//! `is_busy`) and a context naming table, set and elements; `nft` failures
//! carry nft's stderr ([`NftError::NftFailed`]). Callers map them to CNI
//! error 102 (or 100) as they see fit.
//!
//! # Tests
//!
//! [`FakeBackend`] implements [`Backend`] in memory with the kernel's
//! semantics and logs every operation as nft text, so plugins can be unit
//! tested without root. The root tests (`src/tests.rs`) each create their own
//! unnamed network namespace and never touch the host's ruleset.
//!
//! # Layout
//!
//! * `model` – [`Ruleset`], [`Table`], [`Set`], [`Map`], [`Chain`] and the renderer.
//! * `element` – [`Element`], [`KeyPart`], [`Verdict`], [`Family`]; encodings.
//! * `apply` – [`apply_ruleset`], [`find_nft`].
//! * `nl` – message writer/reader and the request/dump/batch engine.
//! * `client` – [`Nft`].
//! * `batch` – [`Batch`].
//! * `backend` – [`Backend`], [`FakeBackend`].
//! * [`rnet`] – rnet's own tables (the one definition every plugin applies)
//!   and the element journal behind the slow path.

mod apply;
mod backend;
mod batch;
mod client;
mod element;
mod error;
pub mod expr;
mod model;
mod nl;
pub mod rnet;

pub use apply::{NFT_DIRS, apply_ruleset, apply_ruleset_in, find_nft};
pub use backend::{Backend, Ensured, FakeBackend, ensure_ruleset};
pub use batch::{Batch, BatchOp, OpKind};
pub use client::{
    ChainPolicy, NFT_DATA_VERDICT, NFT_SET_CONCAT, NFT_SET_INTERVAL, NFT_SET_MAP, Nft, SetInfo,
};
pub use element::{Element, Family, IFNAMSIZ, KeyPart, MAX_COMMENT_LEN, MAX_VALUE_LEN, Verdict};
pub use error::NftError;
pub use model::{BaseChain, Chain, MAX_NAME_LEN, Map, Ruleset, Set, Table};

#[cfg(test)]
mod tests;
