//! `rnet-bridge` (also installed as `bridge`).
rnet_cni::plugin_allocator!();

fn main() {
    // A DEL's detached child finishing a veth deletion (see `del::reap`).
    if let Some(spec) = std::env::var_os(rnet_bridge::del::REAP_ENV) {
        rnet_bridge::del::reap(&spec.to_string_lossy());
        return;
    }
    rnet_cni::skel::run(
        &rnet_bridge::BridgePlugin,
        concat!("rnet bridge plugin v", env!("CARGO_PKG_VERSION")),
    )
}
