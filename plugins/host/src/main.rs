//! `rnet-host`: the container shares the host's network namespace.
rnet_cni::plugin_allocator!();

fn main() {
    rnet_cni::skel::run(
        &rnet_host::HostPlugin,
        concat!("rnet host plugin v", env!("CARGO_PKG_VERSION")),
    )
}
