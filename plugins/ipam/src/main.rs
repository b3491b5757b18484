//! `rnet-ipam` (also installed as `host-local`): address allocation.
rnet_cni::plugin_allocator!();

fn main() {
    rnet_cni::skel::run(
        &rnet_ipam_plugin::IpamPlugin,
        concat!(
            "rnet IPAM plugin (host-local compatible) v",
            env!("CARGO_PKG_VERSION")
        ),
    )
}
