//! The whole plugin side of the protocol: `skel::dispatch` with an arbitrary
//! environment and stdin (format: `KEY=VALUE` lines, an empty line, stdin)
//! and a plugin that does nothing (ADD answers its prevResult, or one
//! interface and address). Covers env validation, verb/version rules,
//! `CNI_ARGS`, `CNI_PATH`, config decoding, GC attachments and the answer
//! in the version asked. Checks the exit status and that stdout is what
//! the runtime side can read: a result or a CNI error object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnet_cni::skel::dispatch;
use rnet_cni::{Attachment, CmdArgs, CniError, CniResult, Interface, IpConfig, Plugin};
use rnet_fuzz::{get, split};

struct Nop;

impl Plugin for Nop {
    fn add(&self, a: &CmdArgs) -> Result<CniResult, CniError> {
        if let Some(prev) = &a.conf.prev_result {
            return Ok(prev.clone());
        }
        Ok(CniResult {
            interfaces: vec![Interface {
                name: a.ifname.clone(),
                sandbox: a
                    .netns
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                ..Interface::default()
            }],
            ips: vec![IpConfig {
                interface: Some(0),
                address: ipnet::IpNet::from(std::net::IpAddr::from([10, 0, 0, 2])),
                gateway: None,
            }],
            ..CniResult::default()
        })
    }
    fn del(&self, _: &CmdArgs) -> Result<(), CniError> {
        Ok(())
    }
    fn check(&self, _: &CmdArgs) -> Result<(), CniError> {
        Ok(())
    }
    fn gc(&self, _: &CmdArgs, _: &[Attachment]) -> Result<(), CniError> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let (env, mut stdin) = split(data);
    let mut out = Vec::new();
    let mut err = Vec::new();
    let rc = dispatch(
        &Nop,
        "rnet fuzz",
        &|k| get(&env, k).map(str::to_owned),
        &mut stdin,
        &mut out,
        &mut err,
    );
    match rc {
        0 => {
            if !out.is_empty() {
                let v: serde_json::Value = match serde_json::from_slice(&out) {
                    Ok(v) => v,
                    Err(e) => panic!("exit 0 with stdout that is not JSON ({e}): {out:?}"),
                };
                assert!(v.is_object(), "exit 0 with stdout that is not an object");
            }
        }
        1 => {
            let e: CniError = match serde_json::from_slice(&out) {
                Ok(e) => e,
                Err(e) => panic!(
                    "exit 1 without a CNI error on stdout ({e}): {}",
                    String::from_utf8_lossy(&out)
                ),
            };
            assert!(e.code != 0, "error code 0");
            assert!(!e.msg.is_empty(), "error without a message");
        }
        other => panic!("exit status {other}"),
    }
});
