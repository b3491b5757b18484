//! `rnet-firewall` (also installed as `firewall`).
fn main() {
    rnet_cni::skel::run(
        &rnet_firewall::FirewallPlugin,
        concat!("rnet firewall plugin v", env!("CARGO_PKG_VERSION")),
    )
}
