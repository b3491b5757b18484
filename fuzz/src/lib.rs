//! Shared helpers of rnet's fuzz targets.
//!
//! Most targets take plain text so that the seed corpora are real inputs a
//! person can read and edit. Targets that need a CNI environment besides a
//! JSON document use one format, [`split`]: `KEY=VALUE` lines, an empty line,
//! then the document (stdin). Without an empty line the whole input is the
//! document and the environment is empty.
//!
//! Besides "no panic", targets check invariants where the code promises one
//! (a result converted to a version and read back converts to the same JSON;
//! an error exit prints a CNI error object), via the helpers here.

use rnet_cni::args::CniArgs;
use rnet_cni::version::SUPPORTED;
use rnet_cni::{CmdArgs, CniError, CniResult, Command, NetConf, Version};
use std::path::PathBuf;

/// Splits an input into `KEY=VALUE` pairs and the document after the first
/// empty line. Header lines without `=` are ignored.
pub fn split(data: &[u8]) -> (Vec<(String, String)>, &[u8]) {
    let Some(pos) = data.windows(2).position(|w| w == b"\n\n") else {
        return (Vec::new(), data);
    };
    let (head, rest) = data.split_at(pos);
    let env = String::from_utf8_lossy(head)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (env, rest.get(2..).unwrap_or(&[]))
}

/// The last value of `key` in `env`.
pub fn get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The arguments a plugin gets, built as the dispatcher builds them (minus
/// the identifier checks the dispatcher makes first: plugins' own parsers
/// must not rely on them for memory safety or panics either). Defaults:
/// ADD, container `fuzz`, interface `eth0`.
pub fn cmd_args(env: &[(String, String)], stdin: &[u8]) -> Result<CmdArgs, CniError> {
    let conf = NetConf::parse(stdin)?;
    let args_raw = get(env, "CNI_ARGS").unwrap_or_default().to_owned();
    Ok(CmdArgs {
        command: get(env, "CNI_COMMAND")
            .and_then(Command::parse)
            .unwrap_or(Command::Add),
        container_id: get(env, "CNI_CONTAINERID").unwrap_or("fuzz").to_owned(),
        netns: get(env, "CNI_NETNS").map(PathBuf::from),
        ifname: get(env, "CNI_IFNAME").unwrap_or("eth0").to_owned(),
        args: CniArgs::parse(&args_raw)?,
        args_raw,
        path: Vec::new(),
        path_raw: String::new(),
        stdin: stdin.to_vec(),
        conf,
    })
}

/// Writes `r` as every version, reads it back, and checks that the second
/// conversion gives the same JSON as the first (conversion is a projection:
/// applying it twice changes nothing). Panics on a violation.
pub fn check_result(r: &CniResult) {
    for &v in SUPPORTED {
        check_result_at(r, v);
    }
}

/// [`check_result`] for one version.
pub fn check_result_at(r: &CniResult, v: Version) {
    let first = r.to_value(v);
    let back = match CniResult::parse(&first, v) {
        Ok(b) => b,
        Err(e) => panic!("result written as {v} does not read back: {e}\n{first}"),
    };
    let second = back.to_value(v);
    assert_eq!(first, second, "result conversion to {v} is not stable");
    let text = r.to_json(v);
    assert!(
        serde_json::from_str::<serde_json::Value>(&text).is_ok(),
        "to_json({v}) is not JSON: {text}"
    );
}

/// DNS helpers for the resolver targets.
pub mod dns {
    use rnet_dns::wire::{self, Query};

    /// A one-question query for `name` (dotted, no trailing dot needed) and `qtype`, RD set.
    pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut m = Vec::with_capacity(64);
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            let l = label.as_bytes().get(..63).unwrap_or(label.as_bytes());
            m.push(l.len() as u8);
            m.extend_from_slice(l);
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&wire::CLASS_IN.to_be_bytes());
        m
    }

    /// The reverse-lookup name of `ip`.
    pub fn reverse_name(ip: std::net::IpAddr) -> String {
        match ip {
            std::net::IpAddr::V4(a) => {
                let o = a.octets();
                format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
            }
            std::net::IpAddr::V6(a) => {
                let mut s = String::new();
                for b in a.octets().iter().rev() {
                    s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
                }
                s.push_str("ip6.arpa");
                s
            }
        }
    }

    /// Checks a response the resolver wrote to `query`: a DNS message an
    /// independent decoder (hickory) reads, with the query's ID and
    /// question, whose records the forwarder's walker can step through,
    /// within `limit` bytes. Returns (rcode, answer count, truncated).
    pub fn check_response(query: &[u8], q: &Query, out: &[u8], limit: usize) -> (u8, u16, bool) {
        assert!(
            out.len() <= limit.max(q.question_end),
            "response over the limit"
        );
        let m = match hickory_proto::op::Message::from_vec(out) {
            Ok(m) => m,
            Err(e) => panic!("response does not decode ({e}): {out:02x?}"),
        };
        assert_eq!(m.metadata.id, q.id, "response ID");
        assert_eq!(wire::id(out), Some(q.id));
        assert!(
            wire::same_question(query, q, out),
            "response question differs"
        );
        let walk = match wire::walk_records(out) {
            Some(w) => w,
            None => panic!("walk_records refuses our own response: {out:02x?}"),
        };
        let ancount = u16::from_be_bytes([out[6], out[7]]);
        assert_eq!(usize::from(ancount), m.answers.len());
        assert_eq!(walk.ttl_offsets.len(), m.answers.len());
        (walk.rcode, ancount, walk.truncated)
    }
}
