//! `rnet-none` (also installed as `loopback`): loopback only.
fn main() {
    rnet_cni::skel::run(
        &rnet_none::NonePlugin,
        concat!("rnet none (loopback) plugin v", env!("CARGO_PKG_VERSION")),
    )
}
