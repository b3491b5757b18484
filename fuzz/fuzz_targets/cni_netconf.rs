//! A plugin's stdin: `NetConf::parse` (name, version, ipam, dns, prevResult
//! at the document's version, runtimeConfig), the options decoder, the GC
//! attachment list, and prevResult written back in every version (what
//! rnet-none and the chained plugins do with it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnet_cni::NetConf;
use rnet_cni::types::valid_attachments;
use rnet_fuzz::check_result;

fuzz_target!(|data: &[u8]| {
    let Ok(conf) = NetConf::parse(data) else {
        return;
    };
    let _ = conf.options::<serde_json::Value>();
    let _ = conf.options::<std::collections::BTreeMap<String, serde_json::Value>>();
    let _ = valid_attachments(&conf.raw);
    if let Some(prev) = &conf.prev_result {
        check_result(prev);
        // A plugin answering in the document's version, as rnet-none passes it through.
        let _ = prev.to_json(conf.version);
    }
});
