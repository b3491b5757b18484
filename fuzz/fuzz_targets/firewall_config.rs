//! rnet-firewall's options (`backend`, `iptablesAdminChainName`,
//! `firewalldZone`, `ingressPolicy`, `rnetStateDir`, version floor).
//! Input: env lines, an empty line, the network config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnet_fuzz::{cmd_args, split};

fuzz_target!(|data: &[u8]| {
    let (env, stdin) = split(data);
    let Ok(args) = cmd_args(&env, stdin) else {
        return;
    };
    if let Ok(conf) = rnet_firewall::parse(&args) {
        assert!(conf.state_root.is_absolute());
        assert!(args.conf.version.has_check());
    }
});
