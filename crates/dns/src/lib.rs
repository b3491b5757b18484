//! # rnet-dns: inter-container DNS
//!
//! One resolver per host (per host network namespace) answers A, AAAA and PTR
//! for containers on DNS-enabled networks, by name and alias, bare and under
//! the network's domain (`domainName`, default [`registry::DEFAULT_DOMAIN`]),
//! and forwards everything else upstream. It listens on UDP and TCP port 53 on
//! each network's gateway addresses. The `dnsname` plugin registers names
//! through a control socket; nothing is ever reloaded or restarted.
//!
//! ## Layout
//!
//! - [`wire`]: a lean, allocation-free codec for the hot path (one-question
//!   queries, local answers, in-place ID/TTL rewrites for forwarded replies,
//!   TCP framing). Proptested for panics and progress; hickory-proto serves as
//!   the independent oracle in tests.
//! - [`registry`]: the data (networks, records) in plain form, the
//!   validation of a registration and the reference semantics of changes.
//! - [`snapshot`]: the query-side index and the lookup ([`snapshot::Snapshot::resolve`]),
//!   testable without sockets; [`snapshot::Index`] holds the records (the
//!   resolver's only copy) and derives each next snapshot. Its compact
//!   storage (packed records, sharded hash arrays) is the private `table`
//!   module.
//! - [`store`]: persistence (`registry.json` + an fsynced journal), streamed
//!   into an index at start.
//! - [`forward`]: upstream forwarding with a bounded cache.
//! - [`server`]: listeners (UDP threads, TCP tasks) and the control handler.
//! - [`control`]: the JSON-lines control protocol and its client.
//! - [`daemon`]: lifecycle (lock, readiness, idle exit) and the [`daemon::Launcher`]
//!   the plugin uses to start a resolver on demand.
//!
//! ## Design, and why
//!
//! **Hot path.** A UDP query is served on a dedicated OS thread per listen
//! address, with a blocking socket: `recvfrom`, parse, look up, encode,
//! `sendto`. Against a tokio UDP loop this saves the readiness round trip
//! (epoll + wake-up) per datagram; the resolver's only per-query costs are
//! the two system calls, and its local answers allocate nothing. Lookups are
//! hash probes in an immutable snapshot: the cost per query does not depend
//! on the number of names. hickory-proto's `Message` is not used on the hot
//! path (it allocates per name and record); the lean codec handles exactly
//! what the resolver answers, and anything it does not understand is either
//! refused with the proper rcode or forwarded byte for byte.
//!
//! **Changes never stall lookups.** The snapshot is swapped as a whole
//! (`RwLock<Arc<Snapshot>>` plus a generation counter that each listener
//! thread checks with one atomic load per query; it re-reads the `Arc` only
//! when the generation moved). Each map in a snapshot is split into 64
//! copy-on-write shards and the records into copy-on-write chunks of 128, so
//! a registration copies a few KB, not the index; old snapshots stay valid
//! for the queries using them. There is no moment in which an existing name
//! is missing: a change is one swap.
//!
//! **Memory: one allocation per record.** A record is packed into one byte
//! string (network id, addresses, container ID, interface, names); the maps
//! hold `(32-bit hash, record id)` pairs, 8 bytes per key, and a candidate is
//! confirmed against the record. The daemon keeps no second copy (no
//! `Registry` of `String`s beside the index), loads `registry.json` by
//! streaming it into the index, and writes it and `list` replies straight
//! from the index. At 10,000 names the resolver's heap is about 1.7 MB and
//! its RSS about 5 MB, below dnsmasq's 6.5 MB (see `BENCHMARKS.md`, section 6);
//! the previous design with owned keys in per-shard `HashMap`s and a
//! separate `Registry` used 16–19 MB. The runtime is `current_thread` with
//! one blocking thread for control requests, and launchers set
//! `MALLOC_ARENA_MAX=2`, so threads add no malloc arenas.
//!
//! **A registration is visible to the next query.** The control handler
//! validates, binds the network's listeners if new, appends the change to the
//! journal and fsyncs it, publishes the new snapshot, and only then replies;
//! the plugin's ADD returns after the reply. So a name is resolvable in the
//! first query after ADD, and survives a crash or restart (the registry is
//! reloaded from `registry.json` + journal at start).
//!
//! **Scoping.** The asker's source address selects what it sees: all networks
//! its container is attached to (as aardvark-dns does). An address that is
//! not registered sees no names. Names under any served domain, and
//! single-label names, are never forwarded (NXDOMAIN when unknown): upstream
//! cannot know them and would only learn container names.
//!
//! **Internal networks** never forward (CVE-2024-29018): a container whose
//! networks are all internal gets REFUSED for external names. REFUSED rather
//! than NXDOMAIN because the resolver did not look: NXDOMAIN would be a false
//! authoritative denial that stub caches may keep.
//!
//! **TTL 0** for local answers, as aardvark-dns (since 1.13) and dnsmasq
//! (`local-ttl`): a container may restart with another address at any time,
//! and a local answer costs a round trip on the same host. Docker's 600 s is
//! what leaves clients on stale addresses.
//!
//! **TCP** is bounded (connections, idle and per-message timeouts, 64 KiB by
//! framing) and each connection is its own task (CVE-2024-8418); the framing
//! is fuzzed (CVE-2026-35406).
//!
//! **Listeners** are bound with `IP_FREEBIND`/`IPV6_FREEBIND` when a network's
//! first registration arrives, so a gateway address still in DAD does not
//! fail; a bind error names the address and the kernel's reason. They are
//! kept until the resolver exits (a network that comes back reuses them); the
//! resolver exits after a grace period once no names remain.
//!
//! **One process, no fork.** The launcher spawns `rnet-dns run --foreground
//! --detach` and waits on a readiness pipe; the daemon builds its runtime in
//! that fresh process (the namespace rule: never fork after threads exist),
//! and runs in the namespace of whoever started it (the host's).

pub mod control;
pub mod daemon;
pub mod error;
pub mod forward;
pub mod registry;
pub mod server;
pub mod snapshot;
pub mod store;
mod table;
pub mod wire;
