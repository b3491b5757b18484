//! Text the runtime hands over outside the JSON: `CNI_ARGS` (`K=V;K=V`),
//! container IDs, interface and network names, plugin types, version and
//! command strings, and resolv.conf (rnet-cni's and rnet-ipam's readers).
//! `CNI_ARGS` must survive render + parse unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnet_cni::args::{
    CniArgs, validate_container_id, validate_ifname, validate_network_name, validate_plugin_type,
};
use rnet_cni::{Command, Dns, Version};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(a) = CniArgs::parse(&s) {
        let again = CniArgs::parse(&a.render());
        assert_eq!(
            again.as_ref().ok(),
            Some(&a),
            "CNI_ARGS render does not parse back"
        );
        for (k, v) in a.pairs() {
            assert!(!k.is_empty());
            let _ = a.get(k).map(|last| last.len() + v.len());
        }
    }
    for line in s.lines() {
        if validate_container_id(line).is_ok() {
            assert!(!line.is_empty());
        }
        if validate_ifname(line).is_ok() {
            assert!(
                !line.is_empty() && line.len() <= 15 && !line.contains('/'),
                "{line:?}"
            );
        }
        let _ = validate_network_name(line);
        if validate_plugin_type(line).is_ok() {
            assert!(!line.contains('/'), "plugin type {line:?} is a path");
        }
        if let Ok(v) = Version::parse(line) {
            assert_eq!(Version::parse(v.as_str()).ok(), Some(v));
        }
        if let Some(c) = Command::parse(line) {
            assert_eq!(Command::parse(c.as_str()), Some(c));
        }
    }
    let _ = Dns::from_resolv_conf(&s);
    let _ = rnet_ipam::parse_resolv_conf(&s);
});
