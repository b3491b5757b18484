//! `rnet-tuning` (also installed as `tuning`).
rnet_cni::plugin_allocator!();

fn main() {
    rnet_cni::skel::run(
        &rnet_tuning::TuningPlugin,
        concat!("rnet tuning plugin v", env!("CARGO_PKG_VERSION")),
    )
}
