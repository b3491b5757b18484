//! The resolver's control side: JSON lines as the control socket and the
//! journal replay read them (`Request`: register, unregister, gc, list,
//! ping, shutdown), the client's `Reply`, and `registry.json` documents
//! (`RegistryFile`), applied as the resolver applies them.
//!
//! Differential: every request goes to the resolver's compact index
//! (`Index`, the daemon's only copy) and to the plain `Registry` (the
//! reference semantics, the plugin's read-only view); they must accept the
//! same requests, report the same effect, and hold the same records
//! (`to_file`). Then every registered name is looked up (A, AAAA, ANY,
//! bare and under the domain, PTR of each address) from the container's
//! own address in the live snapshot and in one rebuilt from the file form
//! (a restart): the answers must agree, and every response must decode
//! (hickory) and be walkable by the forwarder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnet_dns::control::{Reply, Request};
use rnet_dns::registry::{Registry, RegistryFile};
use rnet_dns::snapshot::{Index, Outcome, Snapshot};
use rnet_dns::store::Target;
use rnet_dns::wire::{self, Query};
use rnet_fuzz::dns::{check_response, query, reverse_name};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// Loads a file form as a restarting resolver does (records of unlisted
/// networks dropped).
fn load<T: Target>(file: &RegistryFile, target: &mut T) {
    let nets: HashMap<&str, _> = file.networks.iter().map(|n| (n.name.as_str(), n)).collect();
    for r in &file.records {
        if let Some(n) = nets.get(r.network.as_str()) {
            target.load_record(n, r.clone());
        }
    }
}

fn ask(snap: &Snapshot, msg: &[u8], src: IpAddr, local: IpAddr) -> Option<(u8, u16, bool)> {
    let q = Query::parse(msg).ok()?;
    let mut out = Vec::new();
    match snap.resolve(msg, &q, src, local, 4096, &mut out) {
        Outcome::Answered | Outcome::Forward(_) => Some(check_response(msg, &q, &out, 4096)),
        Outcome::Drop => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let up = SocketAddr::from(([192, 0, 2, 53], 53));
    let mut reg = Registry::default();
    let mut idx = Index::new(&[up]);
    for line in data.split(|&b| b == b'\n').take(64) {
        if let Ok(req) = serde_json::from_slice::<Request>(line) {
            // What the server journals must read back as the same request.
            if let Ok(text) = serde_json::to_string(&req) {
                assert_eq!(
                    serde_json::from_str::<Request>(&text).ok().as_ref(),
                    Some(&req)
                );
            }
            match idx.apply(&req) {
                Ok(a) => match reg.apply(&req) {
                    Ok(b) => assert_eq!(a, b, "index and registry disagree on {req:?}"),
                    Err(e) => panic!("the index accepts what the registry refuses ({e}): {req:?}"),
                },
                // The index has limits the plain registry lacks (record size,
                // network count); anything else must fail in both.
                Err(_) => {}
            }
        } else if let Ok(reply) = serde_json::from_slice::<Reply>(line) {
            let _ = reply.into_result();
        } else if let Ok(file) = serde_json::from_slice::<RegistryFile>(line) {
            // A restart from a file not written by a resolver: no panic, and
            // whatever loads must answer with well-formed responses.
            let mut fresh = Index::new(&[up]);
            load(&file, &mut fresh);
            let snap = fresh.publish();
            for r in file.records.iter().take(8) {
                if let (Some(n), Some(&src)) = (r.names.first(), r.addrs.first()) {
                    let _ = ask(&snap, &query(1, n, wire::qtype::A), src, src);
                    let _ = ask(
                        &snap,
                        &query(2, &reverse_name(src), wire::qtype::PTR),
                        src,
                        src,
                    );
                }
            }
        }
    }
    let snap = idx.publish();
    assert_eq!(
        idx.len(),
        reg.len(),
        "index and registry disagree on the record count"
    );
    assert_eq!(snap.records(), reg.len());
    let file = idx.to_file();
    assert_eq!(
        file,
        reg.to_file(),
        "index and registry hold different records"
    );
    let mut written = Vec::new();
    if idx.write_file(&mut written).is_ok() {
        match serde_json::from_slice::<RegistryFile>(&written) {
            Ok(back) => assert_eq!(back, file, "registry.json does not read back"),
            Err(e) => panic!("registry.json written by the index does not parse: {e}"),
        }
    }
    let mut restarted = Index::new(&[up]);
    load(&file, &mut restarted);
    let fresh = restarted.publish();
    assert_eq!(
        restarted.to_file(),
        file,
        "a restart loses or changes records"
    );
    let mut asked = 0;
    for r in &file.records {
        let Some(net) = file.networks.iter().find(|n| n.name == r.network) else {
            panic!("record of unknown network {}", r.network);
        };
        let local = net
            .listen
            .first()
            .copied()
            .unwrap_or(IpAddr::from([10, 0, 0, 1]));
        let Some(&src) = r.addrs.first() else {
            continue;
        };
        let mut msgs = Vec::new();
        for n in r.names.iter().take(3) {
            for t in [wire::qtype::A, wire::qtype::AAAA, wire::qtype::ANY] {
                msgs.push(query(7, n, t));
            }
            msgs.push(query(8, &format!("{n}.{}", net.domain), wire::qtype::A));
        }
        for a in r.addrs.iter().take(3) {
            msgs.push(query(9, &reverse_name(*a), wire::qtype::PTR));
        }
        for m in &msgs {
            let live = ask(&snap, m, src, local);
            let again = ask(&fresh, m, src, local);
            // Record order may differ (ids do), so a truncated answer may
            // hold other records; compare counts only when complete.
            let key =
                |a: Option<(u8, u16, bool)>| a.map(|(rc, n, tc)| (rc, tc, (!tc).then_some(n)));
            assert_eq!(key(live), key(again), "a restart would answer differently");
            asked += 1;
        }
        if asked > 200 {
            return;
        }
    }
});
