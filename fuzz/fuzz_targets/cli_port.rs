//! The CLI's `-p` values (`[hostIP:]hostPort[-end]:containerPort[-end][/proto]`,
//! `[v6]:h:c`) and their `portMappings` form. Checks: a parsed spec stays
//! within 1..=65535 on both sides, expands to `count` mappings, and its
//! canonical spelling parses back to the same spec.
#![no_main]

#[path = "../../crates/cli/src/portspec.rs"]
mod portspec;

use libfuzzer_sys::fuzz_target;
use portspec::{parse_port, port_mappings};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = parse_port(s) else {
        return;
    };
    assert!(p.count >= 1 && p.host_port >= 1 && p.container_port >= 1);
    assert!(u32::from(p.host_port) + u32::from(p.count) - 1 <= 65535);
    assert!(u32::from(p.container_port) + u32::from(p.count) - 1 <= 65535);
    assert!(["tcp", "udp", "sctp"].contains(&p.proto.as_str()));
    let m = port_mappings(std::slice::from_ref(&p));
    assert_eq!(m.as_array().map(Vec::len), Some(usize::from(p.count)));
    let last = |first: u16| first + (p.count - 1);
    let ip = if p.host_ip.contains(':') {
        format!("[{}]:", p.host_ip)
    } else if p.host_ip.is_empty() {
        String::new()
    } else {
        format!("{}:", p.host_ip)
    };
    let canonical = format!(
        "{ip}{}-{}:{}-{}/{}",
        p.host_port,
        last(p.host_port),
        p.container_port,
        last(p.container_port),
        p.proto
    );
    match parse_port(&canonical) {
        Ok(again) => assert_eq!(again, p, "{canonical:?} parses differently"),
        Err(e) => panic!("canonical spelling {canonical:?} of {s:?} does not parse: {e}"),
    }
});
