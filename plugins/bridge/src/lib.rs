//! # rnet-bridge: the `bridge` plugin
//!
//! A drop-in for the reference `bridge` CNI plugin (installable under the name
//! `bridge`): it accepts every option the reference accepts and does the same
//! to the kernel, in a fraction of the time.
//!
//! ## What one ADD does
//!
//! 1. Writes the attachment's intent log (the state file, see [`state`]).
//! 2. Ensures the bridge: look it up by name (create it only if missing) and
//!    verify it is a bridge; `accept_ra=0` on it (CVE-2020-10749); up.
//! 3. Creates the veth pair in ONE netlink request: the host side under a
//!    deterministic name (`veth` + hash of container ID and ifname), with its
//!    MAC, MTU, master and up; the peer straight inside the container
//!    namespace under its final name `CNI_IFNAME`, with its MAC and MTU. A
//!    second request sets the host side's alias (the attachment tag) and
//!    turns off its IPv6 address generation (the kernel takes neither on
//!    creation).
//! 4. Runs IPAM (rnet's own in process, any other by exec), then sets port
//!    options (hairpin, isolation, VLANs) and opens ONE netlink socket inside
//!    the container namespace (a fresh thread enters it, opens the socket and
//!    exits). Everything runs on the main thread otherwise: handing work to
//!    another thread costs more than rnet's IPAM takes. The container
//!    interface's index comes from the kernel's echo of step 3.
//! 5. Configures, through that socket: `arp_notify` and, without an IPv6
//!    address, no IPv6 link-local address (`ipv6LinkLocal`), in one request;
//!    the link up, then the addresses (as the reference: nothing is announced
//!    at link-up, so no gratuitous ARP floods the bridge); routes and the
//!    default route. Then the gateway address on the bridge when
//!    `isGateway`, and forwarding. No `/proc/sys` access on an IPv4-only
//!    network (each one costs more with every namespace on the host); IPv6
//!    settings without a netlink equivalent (`accept_dad`,
//!    `keep_addr_on_down`, `disable_ipv6`) are written there when IPv6 is used.
//! 6. Adds the attachment's nftables elements (masquerade, spoof check) and the
//!    shared bridge elements (isolation) in one netlink batch, see [`fw`].
//! 7. Prints the reference's result shape: interfaces `[bridge, host veth,
//!    container veth]`, addresses on interface 2, routes, DNS.
//!
//! Any error undoes everything done so far (nft elements, IPAM lease, veth,
//! state file) before the error is returned.
//!
//! ## Why it is fast
//!
//! Nothing on the hot path grows with the number of containers: links are
//! looked up by name, never dumped; the only listing is the bridge's own
//! addresses when a gateway is set. DEL needs neither the container namespace
//! nor a dump: the host veth name is a function of the attachment, deleting it
//! removes the pair. nftables work is set-element adds/deletes; the ruleset
//! itself is written once per host.
//!
//! ## Layout
//!
//! * [`config`]: the options, defaults and validation (error 7 naming the option).
//! * [`state`]: host veth names, attachment tags, the per-attachment state file.
//! * [`add`], [`del`] (DEL, GC, STATUS), [`check`].
//! * [`fw`]: the nftables part.

pub mod add;
pub mod check;
pub mod config;
pub mod del;
pub mod fw;
pub mod ipam;
pub mod state;

use rnet_cni::{Attachment, CmdArgs, CniError, CniResult, Plugin};

/// The plugin.
pub struct BridgePlugin;

impl Plugin for BridgePlugin {
    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        add::add(args)
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        del::del(args)
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        check::check(args)
    }

    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        del::status(args)
    }

    fn gc(&self, args: &CmdArgs, valid: &[Attachment]) -> Result<(), CniError> {
        del::gc(args, valid)
    }
}
