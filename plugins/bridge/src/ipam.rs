//! IPAM delegation. The spec's way is to execute the IPAM plugin named in
//! `ipam.type`; when that name resolves in `CNI_PATH` to rnet's own IPAM
//! (`rnet-ipam`, or `host-local` laid out as a link to it by the compat
//! install), the same code is linked in here and called in-process with the
//! same arguments, which saves a process start per ADD, CHECK and DEL. Any
//! other IPAM plugin (the reference host-local, dhcp, ...) is executed.

use rnet_cni::exec::{LocalPlugin, delegate_local};
use rnet_cni::{CmdArgs, CniError, CniResult, Command};

/// Delegates `command` to the IPAM plugin `plugin_type`.
pub fn delegate(
    command: Command,
    args: &CmdArgs,
    plugin_type: &str,
) -> Result<Option<CniResult>, CniError> {
    let local = [LocalPlugin {
        name: "rnet-ipam",
        plugin: &rnet_ipam_plugin::IpamPlugin,
    }];
    delegate_local(command, args, plugin_type, &local)
}
