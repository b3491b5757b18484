//! rnet-dnsname's input as ADD reads it, without a resolver
//! (`check_add_input`): options (`domainName`, `internal`, `upstreams`,
//! `rnetStateDir`, `rnetDnsPort`, `rnetDefaultUpstreams`), the name from
//! `CNI_ARGS K8S_POD_NAME`, `runtimeConfig.aliases`, prevResult's addresses
//! and gateways, and the registration the resolver would get (names
//! normalised to DNS labels). Input: env lines, an empty line, the config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnet_dns::registry::normalize_name;
use rnet_fuzz::{cmd_args, split};

fuzz_target!(|data: &[u8]| {
    let (env, stdin) = split(data);
    let Ok(args) = cmd_args(&env, stdin) else {
        return;
    };
    let Ok(names) = rnet_dnsname::check_add_input(&args) else {
        return;
    };
    assert!(!names.is_empty());
    for n in &names {
        // Normalised names are fixed points of the normalisation.
        assert_eq!(
            normalize_name(n).ok().as_ref(),
            Some(n),
            "name {n:?} is not normal"
        );
        assert!(n.len() <= 253, "name {n:?} is too long for DNS");
    }
});
