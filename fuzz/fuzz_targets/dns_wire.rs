//! The resolver's wire codec on arbitrary datagrams: `Query::parse`, the
//! whole local lookup (`Snapshot::resolve` on a fixed registry, asked from
//! a registered container, an unknown address and an internal network),
//! error responses, the forwarder's record walk and TTL rewrite, reverse
//! names, and TCP framing. Every response written must decode with an
//! independent decoder (hickory), carry the query's ID and question, fit
//! the client's limit, and be walkable by the forwarder's own walker.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnet_dns::control::Request;
use rnet_dns::registry::{AttachmentId, NetworkSpec};
use rnet_dns::snapshot::{Index, Outcome, Snapshot};
use rnet_dns::store::Target;
use rnet_dns::wire::{self, FrameBuf, Query, QueryError};
use rnet_fuzz::dns::check_response;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// Two networks (one internal), three containers, names near the limits.
fn snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        let up: SocketAddr = SocketAddr::new(ip("192.0.2.53"), 53);
        let mut idx = Index::new(&[up]);
        let net = |name: &str, domain: &str, gw: &str, internal| NetworkSpec {
            name: name.into(),
            domain: domain.into(),
            internal,
            listen: vec![ip(gw)],
            upstreams: vec![],
        };
        let long = "a".repeat(63);
        let regs: [(NetworkSpec, &str, Vec<String>, Vec<IpAddr>); 3] = [
            (
                net("n1", "dns.rnet", "10.88.0.1", false),
                "c1",
                vec!["web".into(), "www".into()],
                vec![ip("10.88.0.2"), ip("fd00::2")],
            ),
            (
                net("n1", "dns.rnet", "10.88.0.1", false),
                "c2",
                vec!["db".into(), format!("{long}.{long}.{long}")],
                vec![ip("10.88.0.3")],
            ),
            (
                net("n2", "internal.test", "10.89.0.1", true),
                "c3",
                vec!["web".into()],
                vec![ip("10.89.0.2"), ip("fd01::2")],
            ),
        ];
        for (n, c, names, addrs) in regs {
            let att = AttachmentId {
                container_id: c.into(),
                ifname: "eth0".into(),
            };
            let req = Request::Register {
                network: n,
                attachment: att,
                names,
                addrs,
            };
            if let Err(e) = idx.apply(&req) {
                panic!("the fixed registration fails: {e}");
            }
        }
        idx.publish()
    })
}

fuzz_target!(|data: &[u8]| {
    let snap = snapshot();
    let mut out = Vec::new();
    match Query::parse(data) {
        Ok(q) => {
            let _ = q.cache_key(data);
            let _ = wire::parse_reverse(q.name());
            let askers = [
                (ip("10.88.0.2"), ip("10.88.0.1"), q.udp_limit()),
                (ip("10.88.0.9"), ip("10.88.0.1"), 512),
                (ip("10.89.0.2"), ip("10.89.0.1"), 65535),
            ];
            for (src, local, limit) in askers {
                match snap.resolve(data, &q, src, local, limit, &mut out) {
                    Outcome::Answered | Outcome::Forward(_) => {
                        check_response(data, &q, &out, limit);
                    }
                    Outcome::Drop => {}
                }
            }
            wire::empty_response(&mut out, data, &q, wire::rcode::NXDOMAIN, true);
            check_response(data, &q, &out, usize::MAX);
        }
        Err(QueryError::Reply(rc)) => {
            wire::error_response(&mut out, data, rc);
            assert_eq!(out.len(), wire::HEADER_LEN);
            assert!(wire::walk_records(&out).is_some());
        }
        Err(QueryError::Ignore) => {}
    }
    // The forwarder's side: an upstream's answer.
    if let Some(walk) = wire::walk_records(data) {
        let mut copy = data.to_vec();
        for &o in &walk.ttl_offsets {
            assert!(o + 4 <= data.len(), "TTL offset {o} past the end");
        }
        wire::rewrite_ttls(&mut copy, &walk.ttl_offsets, 7);
        wire::set_id(&mut copy, 0x4242);
        assert_eq!(wire::id(&copy), Some(0x4242));
        let again = wire::walk_records(&copy);
        assert_eq!(
            again.as_ref().map(|w| &w.ttl_offsets),
            Some(&walk.ttl_offsets),
            "rewriting TTLs changed the record layout"
        );
    }
    let _ = wire::skip_name(data, wire::HEADER_LEN);
    // TCP framing: the bytes as a stream, in uneven reads.
    let mut fb = FrameBuf::default();
    for chunk in data.chunks(7) {
        fb.extend(chunk);
        loop {
            let before = fb.len();
            match fb.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.len() >= wire::HEADER_LEN);
                    assert_eq!(
                        fb.len(),
                        before - frame.len() - 2,
                        "framing made no progress"
                    );
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
