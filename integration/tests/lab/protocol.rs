//! Protocol conformance through the real executables: VERSION for every
//! version, and every error code reachable from bad input.

use crate::common::{error_code, lab, rnet, run};
use netns_fixtures::CniCall;
use serde_json::Value;

const VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

#[test]
fn version_for_every_version() {
    let lab = lab();
    for plugin in ["rnet-none", "rnet-host"] {
        for v in VERSIONS {
            let out = run(lab
                .cni(rnet(plugin))
                .command("VERSION")
                .stdin(format!(r#"{{"cniVersion":"{v}"}}"#)));
            let j = out.ok_json().unwrap();
            assert_eq!(j["cniVersion"], "1.1.0", "{plugin} {v}");
            let supported: Vec<&str> = j["supportedVersions"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(supported, VERSIONS, "{plugin}");
        }
    }
}

#[test]
fn no_command_prints_about_on_stderr() {
    let lab = lab();
    let out = run(lab.cni(rnet("rnet-none")).stdin("{}"));
    assert_eq!(out.status, 0);
    assert!(
        out.stdout.is_empty(),
        "stdout must stay empty: {}",
        out.stdout_str()
    );
    assert!(out.stderr.contains("CNI protocol versions supported"));
}

/// Each row: what is wrong, the call, the expected code.
#[test]
fn error_codes_from_bad_input() {
    let lab = lab();
    let ctr = lab.add_container("c").unwrap();
    let good = r#"{"cniVersion":"1.0.0","name":"n","type":"rnet-none"}"#;
    let plain_file = lab.state_dir().join("plain");
    std::fs::write(&plain_file, "x").unwrap();
    let base = || {
        lab.cni(rnet("rnet-none"))
            .command("ADD")
            .container_id("c1")
            .netns(ctr.netns_path())
            .ifname("lo")
            .cni_path([crate::common::rnet_dir()])
    };
    let cases: Vec<(&str, CniCall<'_>, u64)> = vec![
        (
            "missing CNI_CONTAINERID etc.",
            lab.cni(rnet("rnet-none")).command("ADD").stdin(good),
            4,
        ),
        ("unknown command", base().command("FROB").stdin(good), 4),
        ("stdin not JSON", base().stdin("{nope"), 6),
        ("stdin JSON but not an object", base().stdin("[1,2]"), 6),
        (
            "no network name",
            base().stdin(r#"{"cniVersion":"1.0.0","type":"rnet-none"}"#),
            7,
        ),
        (
            "bad network name",
            base().stdin(r#"{"cniVersion":"1.0.0","name":"a/b"}"#),
            7,
        ),
        (
            "unknown cniVersion",
            base().stdin(r#"{"cniVersion":"2.0.0","name":"n"}"#),
            1,
        ),
        (
            "cniVersion not a string",
            base().stdin(r#"{"cniVersion":1,"name":"n"}"#),
            7,
        ),
        (
            "CHECK before 0.4.0",
            base()
                .command("CHECK")
                .stdin(r#"{"cniVersion":"0.3.1","name":"n"}"#),
            1,
        ),
        ("GC before 1.1.0", base().command("GC").stdin(good), 1),
        (
            "STATUS before 1.1.0",
            base().command("STATUS").stdin(good),
            1,
        ),
        (
            "GC without attachments",
            base()
                .command("GC")
                .stdin(r#"{"cniVersion":"1.1.0","name":"n"}"#),
            7,
        ),
        (
            "ifname too long",
            base().ifname("abcdefghijklmnop").stdin(good),
            4,
        ),
        ("ifname with slash", base().ifname("a/b").stdin(good), 4),
        (
            "container id with space",
            base().container_id("a b").stdin(good),
            4,
        ),
        ("malformed CNI_ARGS", base().args("novalue").stdin(good), 4),
        (
            "CNI_NETNS does not exist",
            base().netns("/run/netns/rnet-no-such-ns").stdin(good),
            3,
        ),
        (
            "CNI_NETNS is a plain file",
            base().netns(&plain_file).stdin(good),
            4,
        ),
        (
            "CNI_NETNS is another namespace kind",
            base().netns("/proc/self/ns/uts").stdin(good),
            4,
        ),
        (
            "prevResult not a result",
            base().stdin(r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":"x"}}"#),
            6,
        ),
    ];
    let mut failures = Vec::new();
    for (what, call, want) in cases {
        let out = run(call);
        let got = if out.status == 0 { 0 } else { error_code(&out) };
        if got != want {
            failures.push(format!(
                "{what}: want code {want}, got {got}: {}",
                out.stdout_str()
            ));
        }
        if out.status != 0 {
            let v = out.json().unwrap();
            assert!(
                v["msg"].as_str().is_some_and(|m| !m.is_empty()),
                "{what}: error without a message"
            );
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn status_and_gc_succeed_on_1_1() {
    let lab = lab();
    for plugin in ["rnet-none", "rnet-host"] {
        let out = run(lab
            .cni(rnet(plugin))
            .command("STATUS")
            .stdin(r#"{"cniVersion":"1.1.0","name":"n"}"#));
        out.ok().unwrap();
        let out = run(lab
            .cni(rnet(plugin))
            .command("GC")
            .cni_path([crate::common::rnet_dir()])
            .stdin(r#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[]}"#));
        out.ok().unwrap();
    }
}
