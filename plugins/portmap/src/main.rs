//! `rnet-portmap` (also installed as `portmap`).
rnet_cni::plugin_allocator!();

fn main() {
    rnet_cni::skel::run(
        &rnet_portmap::PortmapPlugin,
        concat!("rnet portmap plugin v", env!("CARGO_PKG_VERSION")),
    )
}
