//! `rnet-none` (also installed as `loopback`): loopback only.
rnet_cni::plugin_allocator!();

fn main() {
    rnet_cni::skel::run(
        &rnet_none::NonePlugin,
        concat!("rnet none (loopback) plugin v", env!("CARGO_PKG_VERSION")),
    )
}
