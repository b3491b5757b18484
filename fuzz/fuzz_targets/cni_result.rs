//! Results of every version (0.1.0..1.1.0): the first byte picks the version
//! the caller expects, the rest is the result JSON (its own `cniVersion`
//! wins when present, as in `CniResult::parse`). Every parsed result is
//! converted to every version and read back: the conversion must be stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnet_cni::CniResult;
use rnet_cni::version::SUPPORTED;
use rnet_fuzz::check_result;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, json)) = data.split_first() else {
        return;
    };
    let v = SUPPORTED[usize::from(sel) % SUPPORTED.len()];
    let Ok(r) = CniResult::parse_bytes(json, v) else {
        return;
    };
    check_result(&r);
    // Chain conversions as a runtime does between plugins of different versions.
    let mut cur = r;
    for &to in SUPPORTED.iter().rev() {
        let val = cur.to_value(to);
        match CniResult::parse(&val, to) {
            Ok(next) => cur = next,
            Err(e) => panic!("converted result does not read back at {to}: {e}\n{val}"),
        }
    }
});
