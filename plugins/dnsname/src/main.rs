//! `rnet-dnsname` (also installed as `dnsname`): container names in DNS.
rnet_cni::plugin_allocator!();

fn main() {
    rnet_cni::skel::run(
        &rnet_dnsname::DnsnamePlugin,
        concat!("rnet dnsname plugin v", env!("CARGO_PKG_VERSION")),
    )
}
