//! rnet-bridge's options: `BridgeConf::from_args` (every reference key,
//! VLAN trunks, MAC from runtimeConfig/args.cni/`CNI_ARGS MAC=`), then the
//! IPAM merge on the prevResult as ADD does it, the gateway computation and
//! the attachment's deterministic names. Input: `KEY=VALUE` env lines
//! (`CNI_ARGS=...`, `CNI_CONTAINERID=...`, `CNI_IFNAME=...`), an empty line,
//! the network config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnet_bridge::add::{first_host, merge_ipam};
use rnet_bridge::config::BridgeConf;
use rnet_bridge::state::{attachment_tag, host_veth_name, parse_tag};
use rnet_cni::args::{validate_container_id, validate_ifname};
use rnet_cni::{CniResult, Interface};
use rnet_fuzz::{check_result, cmd_args, split};

fuzz_target!(|data: &[u8]| {
    let (env, stdin) = split(data);
    let Ok(args) = cmd_args(&env, stdin) else {
        return;
    };
    let veth = host_veth_name(&args.container_id, &args.ifname);
    assert!(veth.len() <= 15, "host veth name {veth:?} is too long");
    if validate_container_id(&args.container_id).is_ok() && validate_ifname(&args.ifname).is_ok() {
        let tag = attachment_tag(&args.conf.name, &args.container_id, &args.ifname);
        assert_eq!(
            parse_tag(&tag),
            Some((
                args.conf.name.as_str(),
                args.container_id.as_str(),
                args.ifname.as_str()
            )),
            "attachment tag does not split back"
        );
    }
    let Ok(conf) = BridgeConf::from_args(&args) else {
        return;
    };
    assert!(conf.vlan <= 4094);
    assert!(conf.state_root.is_absolute());
    if let Some(prev) = &args.conf.prev_result {
        // As ADD builds it before the merge: bridge, host veth, container interface.
        let ifc = |name: &str, sandbox: &str| Interface {
            name: name.to_owned(),
            sandbox: sandbox.to_owned(),
            ..Interface::default()
        };
        let mut result = CniResult {
            interfaces: vec![
                ifc(&conf.bridge, ""),
                ifc(&veth, ""),
                ifc(&args.ifname, "/run/netns/fuzz"),
            ],
            ..CniResult::default()
        };
        let gws = merge_ipam(&conf, prev.clone(), &mut result);
        for gw in &gws {
            let _ = first_host(gw);
        }
        check_result(&result);
    }
});
