//! `rnet-firewall` (also installed as `firewall`).
rnet_cni::plugin_allocator!();

fn main() {
    rnet_cni::skel::run(
        &rnet_firewall::FirewallPlugin,
        concat!("rnet firewall plugin v", env!("CARGO_PKG_VERSION")),
    )
}
