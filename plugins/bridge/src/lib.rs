//! # rnet-bridge: the `bridge` plugin
//!
//! A drop-in for the reference `bridge` CNI plugin (installable under the name
//! `bridge`): it accepts every option the reference accepts and does the same
//! to the kernel, in a fraction of the time.
//!
//! ## What one ADD does
//!
//! 1. Writes the attachment's intent log (the state file, see [`state`]).
//! 2. Ensures the bridge: create it, or on `EEXIST` look it up by name and
//!    verify it is a bridge; `accept_ra=0` on it (CVE-2020-10749); up.
//! 3. Creates the veth pair in ONE netlink request: the host side under a
//!    deterministic name (`veth` + hash of container ID and ifname), with its
//!    MAC, MTU, master and alias; the peer straight inside the container
//!    namespace under its final name `CNI_IFNAME`, with its MAC and MTU.
//! 4. Starts the IPAM plugin (delegation by exec, any IPAM plugin) on a second
//!    thread and meanwhile sets port options (hairpin, isolation, VLANs) and
//!    opens ONE netlink socket inside the container namespace (the thread that
//!    enters it also writes the interface's sysctls, then exits).
//! 5. Configures addresses, routes and the default route through that socket;
//!    the gateway address on the bridge when `isGateway`; forwarding.
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
