//! # rnet-portmap: publishing container ports (the `portmap` plugin)
//!
//! A chained plugin, drop-in for the reference `portmap` (installable under
//! that name): it reads `prevResult` and the `portMappings` capability
//! (`hostPort`, `containerPort`, `protocol` tcp/udp/sctp, `hostIP`; host
//! port ranges `"8000-8010"` ↔ `"80-90"` or netavark's `range`) and makes
//! the host's ports lead to the container, IPv4 and IPv6.
//!
//! ## Flat maps instead of rules
//!
//! The reference writes rules per container, so every new connection walks
//! every rule. rnet's rules never change per container: they look up maps in
//! rnet's shared table (defined once for all plugins in
//! [`rnet_nft::rnet`]):
//!
//! ```text
//! pm_prerouting / pm_output:  fib daddr type local jump pm_dnat
//! pm_dnat:  dnat ip to ip daddr . meta l4proto . th dport map @hostip_ports4
//!           dnat ip to meta l4proto . th dport map @hostports4   (and v6)
//! ```
//!
//! One ADD is ONE netlink transaction adding this attachment's elements (an
//! exclusive add for each host port, idempotent adds for the per-address
//! sets); one DEL is one transaction of lenient deletes. Nothing is dumped,
//! nothing is exec'd, so the cost is the same with 0 or 10,000 mappings.
//!
//! ## Security, by construction
//!
//! * Only packets addressed to this host are translated (`fib daddr type
//!   local`): transit traffic to port 53 of some other machine is never
//!   DNATed (the reference's CVE-2025-67499).
//! * `hostIP` binds a port to one address (`hostip_ports*` is keyed by the
//!   destination address); bound entries win over unbound ones.
//! * Localhost publishing (`curl 127.0.0.1:8080` on the host) needs
//!   `route_localnet=1`; it is set on the container's bridge only, never on
//!   `all`, and `pm_raw` drops every packet to 127.0.0.0/8 that does not come
//!   from `lo`, so neighbours cannot reach the host's 127.0.0.1 services
//!   (kube-proxy's CVE-2020-8558). The bridge joins the set `localnet` in
//!   the ADD's transaction, which brings `pm_raw` before the sysctl is set;
//!   it stays while the bridge exists. `::1` is never mapped (it cannot leave
//!   the host; as in the reference).
//! * New connections from anything but an rnet bridge or `lo` straight to
//!   the address of a container with published ports are dropped
//!   (`pm_guard`, after conntrack, before DNAT, so replies of the container's
//!   own outbound flows pass; the chain exists while some address is
//!   published). `"rnetRouted": true` opts a network out when
//!   its container addresses are routed on purpose.
//! * A host port already published by another attachment is CNI error 120
//!   naming the port and its owner, and nothing changes (the exclusive add
//!   fails the whole transaction; the reference silently shadows).
//!
//! ## Hairpin and container-to-container
//!
//! A container reaching a published port through the host's address on its
//! own bridge (itself, or a neighbour on the same bridge) needs its source
//! masqueraded, or the answer would bypass the host's conntrack. The
//! reference masquerades the whole subnet by mark. rnet keeps `hairpin4/6`
//! (`bridge . container address`) for every container chained through the
//! port mapper (with or without mappings; `snat` on), and masquerades
//! DNATed traffic that leaves through the bridge its source lives on: exact,
//! flat, and no packet mark. A container reaching its *own* published port
//! also needs the bridge's ports in hairpin mode (`hairpinMode` of the
//! bridge plugin), as with the reference (the lab's differential test shows
//! both fail without it and both work with it). `markMasqBit` and
//! `externalSetMarkChain` are
//! validated (0–31, not both) and otherwise unused. (An interval set of
//! `bridge . subnet` would need interval elements over netlink, which
//! rnet-nft does not encode.)
//!
//! ## State, restore, conntrack
//!
//! * `<root>/portmap/<network>/<containerID>_<ifname>.json` (root = rnet
//!   extension `rnetStateDir`, default `/run/rnet`) records what was
//!   installed, written before the commit (intent log): DEL works without
//!   `prevResult`/`runtimeConfig`, GC finds everything.
//! * The elements are also journaled for [`rnet_nft::rnet`]: when someone
//!   flushes the ruleset, the next plugin call (any rnet plugin's) or
//!   `rnet reload` restores the tables with everyone's elements in one
//!   `nft -f -`.
//! * After ADD (stale flows to the host or an old container) and DEL
//!   (entries translated to this container) the conntrack entries of the
//!   UDP and SCTP ports are deleted over ctnetlink ([`conntrack`]). That
//!   needs a dump, which walks the whole conntrack hash (~15 ms measured,
//!   even when empty), so TCP-only attachments skip it on ADD and DEL: a
//!   TCP flow to a deleted container ends by RST or timeout on its own.
//! * The nf_tables socket is closed by a short-lived child
//!   (`Nft::close_in_background`): the last close waits for an RCU grace
//!   period that should not sit between the runtime and the next container.
//!
//! ## Options
//!
//! `snat` (default true), `masqAll` (accepted; rnet's per-bridge rule covers
//! what it is for), `markMasqBit`, `externalSetMarkChain`, `backend`
//! (`iptables` or `nftables`; always nftables), `conditionsV4`/`conditionsV6`
//! (see below), and the rnet extensions `rnetStateDir`, `rnetRouted`.
//!
//! ## Conditions (`conditionsV4` / `conditionsV6`)
//!
//! Extra matches a packet must meet before it is sent to this attachment's
//! ports, in the reference's iptables or nft form ([`conditions`]), parsed
//! into a strict grammar of match expressions ([`rnet_nft::rnet::cond`]) so
//! nothing can be injected into `nft -f`. Unlike the reference (where the
//! last container's conditions govern every port on the host) they apply to
//! this attachment's ports only. A conditioned port is still claimed in the
//! port maps (one exclusive add decides who owns a host port) and gets a
//! verdict-map element sending it to the chain of its condition set
//! (`pmc4_<hash>`), which continues to the DNAT lookups only when the
//! conditions match; a port that does not match is not translated at all.
//! Ports without conditions keep the flat path and the one-batch, lock-free
//! ADD; an ADD with conditions holds the nft lock from creating its chain
//! (first use only, one `nft -f`) to its commit, a DEL removes the chain
//! when its last user goes. Chains are recorded beside the journals and
//! come back with `rnet reload` or after a flush.
//!
//! ## Layout
//!
//! * [`config`]: options and mappings, validation.
//! * [`conditions`]: `conditionsV4/V6`, both forms.
//! * [`plan`]: the elements of one attachment, its state file.
//! * [`ops`]: install/uninstall/check/GC against any [`rnet_nft::Backend`].
//! * [`conntrack`]: ctnetlink dump-and-delete.

pub mod conditions;
pub mod config;
pub mod conntrack;
pub mod ops;
pub mod plan;

use rnet_cni::{Attachment, CmdArgs, CniError, CniResult, Plugin};

/// The plugin.
pub struct PortmapPlugin;

impl Plugin for PortmapPlugin {
    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        ops::cmd_add(args)
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        ops::cmd_del(args)
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        ops::cmd_check(args)
    }

    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        ops::cmd_status(args)
    }

    fn gc(&self, args: &CmdArgs, valid: &[Attachment]) -> Result<(), CniError> {
        ops::cmd_gc(args, valid)
    }
}
