//! The runtime side's documents: a `.conflist` (`ConfList::parse`) and a
//! libcni-format result cache entry (`Runtime::decode_cache`). One input is
//! fed to both; the seeds hold both kinds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnet_cni::CniResult;
use rnet_cni::runtime::{ConfList, Runtime};

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = ConfList::parse(data) {
        assert!(!list.plugins.is_empty(), "a parsed conflist has plugins");
        assert!(!list.name.is_empty(), "a parsed conflist has a name");
    }
    if let Ok(cached) = Runtime::decode_cache(data) {
        if let Ok(list) = ConfList::parse(&cached.config) {
            if let Some(r) = &cached.result {
                if let Ok(r) = CniResult::parse(r, list.version) {
                    let _ = r.to_json(list.version);
                }
            }
        }
    }
});
