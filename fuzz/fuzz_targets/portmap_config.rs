//! rnet-portmap: `Config::parse` (options and `runtimeConfig.portMappings`:
//! ports, ranges as strings or `range`, protocols, hostIP), the container
//! addresses and host interface taken from prevResult, the per-attachment
//! plan (`AttachmentState::build`, one element per host port) and the nft
//! batches for ADD and DEL, validated and rendered. Input: env lines, an
//! empty line, the network config (with `runtimeConfig`). The document is
//! also read as a per-attachment state file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnet_cni::CniResult;
use rnet_fuzz::{cmd_args, split};
use rnet_portmap::config::{Config, container_ips, host_interface};
use rnet_portmap::plan::{AttachmentState, parse_tag};

fuzz_target!(|data: &[u8]| {
    let (env, stdin) = split(data);
    // The same document as a state file (`<root>/portmap/<net>/*.json`), as DEL and GC read it.
    if let Ok(st) = serde_json::from_slice::<AttachmentState>(stdin) {
        let _ = st.add_batch().render();
        let _ = st.del_batch().render();
    }
    let Ok(args) = cmd_args(&env, stdin) else {
        return;
    };
    let Ok(cfg) = Config::parse(&args.conf) else {
        return;
    };
    for m in &cfg.mappings {
        assert!(m.count >= 1 && m.host_port >= 1 && m.container_port >= 1);
        assert!(u32::from(m.host_port) + u32::from(m.count) - 1 <= 65535);
        assert!(u32::from(m.container_port) + u32::from(m.count) - 1 <= 65535);
    }
    let prev: Option<&CniResult> = args.conf.prev_result.as_ref();
    if let Some(p) = prev {
        let _ = container_ips(p, &args.ifname);
        let _ = host_interface(p);
    }
    let Ok(st) = AttachmentState::build(&cfg, &args.container_id, &args.ifname, prev) else {
        return;
    };
    let _ = parse_tag(&st.tag());
    for b in [st.add_batch(), st.del_batch()] {
        let _ = b.validate();
        let _ = b.render();
    }
    let _ = serde_json::to_string(&st);
});
