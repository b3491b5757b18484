//! `rnet-portmap` (also installed as `portmap`).
fn main() {
    rnet_cni::skel::run(
        &rnet_portmap::PortmapPlugin,
        concat!("rnet portmap plugin v", env!("CARGO_PKG_VERSION")),
    )
}
