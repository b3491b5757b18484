//! `rnet-bridge` (also installed as `bridge`).
fn main() {
    rnet_cni::skel::run(
        &rnet_bridge::BridgePlugin,
        concat!("rnet bridge plugin v", env!("CARGO_PKG_VERSION")),
    )
}
