//! rnet-tuning's options with the reference's precedence (plain keys,
//! `CNI_ARGS MAC=`, `runtimeConfig.mac`, `args.cni`), the duplicate-key
//! check on the raw stdin, every sysctl key mapped to its `/proc/sys/net`
//! file (never outside it), and the allow-list matcher. Input: env lines,
//! an empty line, the network config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnet_fuzz::{cmd_args, split};
use rnet_tuning::{duplicate_keys, glob_match, parse, sysctl_file};

fuzz_target!(|data: &[u8]| {
    let (env, stdin) = split(data);
    let _ = duplicate_keys(stdin);
    let Ok(args) = cmd_args(&env, stdin) else {
        return;
    };
    let Ok(t) = parse(&args) else {
        return;
    };
    for key in t.sysctl.keys() {
        if let Ok(path) = sysctl_file(key, &args.ifname) {
            assert!(
                path.starts_with("/proc/sys/net/")
                    && !path.split('/').any(|c| c == "." || c == ".."),
                "sysctl {key:?} (ifname {:?}) maps outside /proc/sys/net: {path}",
                args.ifname
            );
        }
        // Allow-list entries come from a file; use the keys as patterns too.
        for pattern in t.sysctl.values() {
            let _ = glob_match(pattern, key);
        }
    }
});
