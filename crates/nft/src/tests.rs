//! Kernel tests. They need root (CAP_SYS_ADMIN + CAP_NET_ADMIN) and an `nft`
//! binary, and FAIL, loudly, without them. Every test creates its own unnamed
//! network namespace (held by fd, gone when dropped, also on panic), runs
//! `nft` only inside it (`NetNs::output`) and opens its netlink socket inside
//! it (`Nft::in_netns`). The machine's own ruleset is never touched.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;

use rnet_netns::NetNs;
use serde_json::Value;

use crate::model::tests::sample;
use crate::*;

const INET: Family = Family::Inet;

fn netns() -> NetNs {
    NetNs::new_unnamed().unwrap_or_else(|e| {
        panic!(
            "cannot create a network namespace: {e}. These tests need root \
             (CAP_SYS_ADMIN, CAP_NET_ADMIN); run them as root, they never skip."
        )
    })
}

/// Run `nft ARGS` inside `ns`; panics with nft's stderr on failure.
fn nft(ns: &NetNs, args: &[&str]) -> String {
    let bin = find_nft().expect("these tests need the nft executable");
    let out = ns.output(Command::new(bin).args(args)).unwrap();
    assert!(
        out.status.success(),
        "nft {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `elem` array of `nft -j list set|map inet rnet NAME` (empty if none).
fn json_elems(ns: &NetNs, kind: &str, name: &str) -> Vec<Value> {
    let v: Value =
        serde_json::from_str(&nft(ns, &["-j", "list", kind, "inet", "rnet", name])).unwrap();
    let obj = v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|o| o.get(kind))
        .unwrap_or_else(|| panic!("no {kind} in {v}"))
        .clone();
    obj.get("elem")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The sample ruleset plus sets/maps covering the other key types.
fn test_ruleset() -> Ruleset {
    let mut r = sample();
    let t = &mut r.tables[0];
    t.sets.push(Set::new("addrs6", "ipv6_addr"));
    t.sets
        .push(Set::new("protoports", "inet_proto . inet_service"));
    t.sets
        .push(Set::new("v4pp", "ipv4_addr . inet_proto . inet_service"));
    t.maps
        .push(Map::new("marks", "ipv4_addr . inet_service", "mark"));
    t.maps.push(Map::new("ports", "inet_service", "ipv4_addr"));
    r
}

fn setup() -> (NetNs, Nft) {
    let ns = netns();
    let mut n = Nft::in_netns(&ns).unwrap();
    n.apply(&test_ruleset()).unwrap();
    (ns, n)
}

fn v4(d: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 88, 0, d)
}

fn hostport(proto: u8, port: u16, ip: u8, to: u16, tag: &str) -> Element {
    Element::new(vec![KeyPart::Proto(proto), KeyPart::Port(port)])
        .data(vec![KeyPart::Ipv4(v4(ip)), KeyPart::Port(to)])
        .comment(tag)
}

fn batch() -> Batch {
    Batch::new(INET)
}

#[test]
fn apply_existence_comment_and_flush() {
    let (ns, mut n) = setup();
    let listed = nft(&ns, &["list", "table", "inet", "rnet"]);
    assert!(
        listed.contains("dnat ip to meta l4proto . th dport map @hostports4"),
        "{listed}"
    );

    assert!(n.table_exists(INET, "rnet").unwrap());
    assert!(!n.table_exists(INET, "other").unwrap());
    assert!(!n.table_exists(Family::Ip, "rnet").unwrap());
    assert_eq!(
        n.table_comment(INET, "rnet").unwrap().as_deref(),
        Some("rnet v1")
    );
    assert!(n.table_comment(INET, "other").unwrap_err().is_not_found());
    for c in ["prerouting", "forward", "isolate"] {
        assert!(n.chain_exists(INET, "rnet", c).unwrap(), "{c}");
    }
    assert!(!n.chain_exists(INET, "rnet", "postrouting").unwrap());
    assert!(!n.chain_exists(INET, "nope", "prerouting").unwrap());
    for s in ["addrs4", "bridges", "hostports4", "isolation", "marks"] {
        assert!(n.set_exists(INET, "rnet", s).unwrap(), "{s}");
    }
    assert!(!n.set_exists(INET, "rnet", "nope").unwrap());
    let info = n.set_info(INET, "rnet", "isolation").unwrap();
    assert!(info.is_map() && info.is_verdict_map() && !info.is_interval());
    let info = n.set_info(INET, "rnet", "hostports4").unwrap();
    assert_eq!((info.key_len, info.data_len), (8, 8));
    assert_eq!(info.key_type, (12 << 6) | 13, "inet_proto . inet_service");
    assert_eq!(info.data_type, Some((7 << 6) | 13));

    // A table without comment, created by nft.
    nft(&ns, &["add", "table", "ip", "plain"]);
    assert_eq!(n.table_comment(Family::Ip, "plain").unwrap(), None);
    // Table comment written by nft, read by us.
    nft(
        &ns,
        &["add", "table", "inet", "t", "{ comment \"x y/z\"; }"],
    );
    assert_eq!(
        n.table_comment(INET, "t").unwrap().as_deref(),
        Some("x y/z")
    );

    // Re-applying replaces the table atomically (elements reset to the model's).
    let mut b = batch();
    b.add_elements("rnet", "addrs4", &[Element::new(KeyPart::Ipv4(v4(50)))]);
    n.commit(&b).unwrap();
    n.apply(&test_ruleset()).unwrap();
    assert_eq!(n.list_elements(INET, "rnet", "addrs4").unwrap().len(), 2);

    nft(&ns, &["flush", "ruleset"]);
    assert!(!n.table_exists(INET, "rnet").unwrap());
    assert!(!n.set_exists(INET, "rnet", "addrs4").unwrap());
    assert!(n.commit(&b).unwrap_err().is_not_found());
}

#[test]
fn apply_error_carries_nft_stderr() {
    let ns = netns();
    let mut n = Nft::in_netns(&ns).unwrap();
    let bad = Ruleset::new()
        .table(Table::new(INET, "rnet").chain(Chain::new("c").rule("this is not a rule")));
    match n.apply(&bad) {
        Err(NftError::NftFailed { status, stderr }) => {
            assert_ne!(status, 0);
            assert!(stderr.contains("syntax error"), "{stderr}");
        }
        other => panic!("expected NftFailed, got {other:?}"),
    }
    assert!(
        !n.table_exists(INET, "rnet").unwrap(),
        "a failed file changes nothing"
    );
}

#[test]
fn nft_written_elements_decode() {
    let (_ns, mut n) = setup();
    let model = sample();
    let t = &model.tables[0];
    let mut list = |set: &str| {
        let mut v = n.list_elements(INET, "rnet", set).unwrap();
        v.sort_by_key(Element::key_text); // hash sets have no order
        v
    };
    assert_eq!(list("addrs4"), t.sets[0].elements);
    assert_eq!(list("bridges"), t.sets[1].elements);
    assert_eq!(list("hostports4"), t.maps[0].elements);
    assert_eq!(list("isolation"), t.maps[1].elements);
    assert!(n.list_elements(INET, "rnet", "marks").unwrap().is_empty());
    assert!(
        n.list_elements(INET, "rnet", "nope")
            .unwrap_err()
            .is_not_found()
    );
}

#[test]
fn nft_cli_elements_of_every_type_decode() {
    let (ns, mut n) = setup();
    nft(
        &ns,
        &[
            "add",
            "element",
            "inet",
            "rnet",
            "addrs6",
            "{ fd00::1 comment \"c6\" }",
        ],
    );
    nft(
        &ns,
        &[
            "add",
            "element",
            "inet",
            "rnet",
            "protoports",
            "{ udp . 53 }",
        ],
    );
    nft(
        &ns,
        &[
            "add",
            "element",
            "inet",
            "rnet",
            "v4pp",
            "{ 10.1.2.3 . tcp . 443 }",
        ],
    );
    nft(
        &ns,
        &[
            "add",
            "element",
            "inet",
            "rnet",
            "marks",
            "{ 10.1.2.3 . 80 : 0x00000102 }",
        ],
    );
    nft(
        &ns,
        &[
            "add",
            "element",
            "inet",
            "rnet",
            "ports",
            "{ 8080 : 10.88.0.7 }",
        ],
    );
    nft(
        &ns,
        &[
            "add",
            "element",
            "inet",
            "rnet",
            "isolation",
            "{ \"cni1\" : drop, \"cni2\" : goto isolate, \"cni3\" : accept }",
        ],
    );
    assert_eq!(
        n.list_elements(INET, "rnet", "addrs6").unwrap(),
        vec![Element::new(KeyPart::Ipv6("fd00::1".parse::<Ipv6Addr>().unwrap())).comment("c6")]
    );
    assert_eq!(
        n.list_elements(INET, "rnet", "protoports").unwrap(),
        vec![Element::new(vec![KeyPart::Proto(17), KeyPart::Port(53)])]
    );
    let ip = KeyPart::Ipv4(Ipv4Addr::new(10, 1, 2, 3));
    assert_eq!(
        n.list_elements(INET, "rnet", "v4pp").unwrap(),
        vec![Element::new(vec![
            ip.clone(),
            KeyPart::Proto(6),
            KeyPart::Port(443)
        ])]
    );
    assert_eq!(
        n.list_elements(INET, "rnet", "marks").unwrap(),
        vec![Element::new(vec![ip, KeyPart::Port(80)]).data(KeyPart::Mark(0x102))]
    );
    assert_eq!(
        n.list_elements(INET, "rnet", "ports").unwrap(),
        vec![Element::new(KeyPart::Port(8080)).data(KeyPart::Ipv4(v4(7)))]
    );
    let mut iso = n.list_elements(INET, "rnet", "isolation").unwrap();
    iso.sort_by_key(|e| e.key_text());
    let ifn = |s: &str| KeyPart::IfName(s.into());
    assert_eq!(
        iso,
        vec![
            Element::new(ifn("cni0")).verdict(Verdict::Jump("isolate".into())),
            Element::new(ifn("cni1")).verdict(Verdict::Drop),
            Element::new(ifn("cni2")).verdict(Verdict::Goto("isolate".into())),
            Element::new(ifn("cni3")).verdict(Verdict::Accept),
        ]
    );
}

#[test]
fn netlink_written_elements_read_by_nft() {
    let (ns, mut n) = setup();
    let mut b = batch();
    b.add_elements(
        "rnet",
        "hostports4",
        &[hostport(17, 5353, 9, 53, "c9/eth1")],
    )
    .add_elements(
        "rnet",
        "addrs4",
        &[Element::new(KeyPart::Ipv4(v4(9))).comment("c9/eth1")],
    )
    .add_elements(
        "rnet",
        "bridges",
        &[Element::new(KeyPart::IfName("br-rnet0".into()))],
    )
    .add_elements(
        "rnet",
        "isolation",
        &[
            Element::new(KeyPart::IfName("cni9".into())).verdict(Verdict::Goto("isolate".into())),
            Element::new(KeyPart::IfName("cni8".into())).verdict(Verdict::Drop),
        ],
    )
    .add_elements(
        "rnet",
        "addrs6",
        &[Element::new(KeyPart::Ipv6("fd00::9".parse().unwrap()))],
    )
    .add_elements(
        "rnet",
        "v4pp",
        &[Element::new(vec![
            KeyPart::Ipv4(v4(9)),
            KeyPart::Proto(6),
            KeyPart::Port(22),
        ])],
    )
    .add_elements(
        "rnet",
        "marks",
        &[Element::new(vec![KeyPart::Ipv4(v4(9)), KeyPart::Port(80)]).data(KeyPart::Mark(7))],
    )
    .add_elements(
        "rnet",
        "ports",
        &[Element::new(KeyPart::Port(81)).data(KeyPart::Ipv4(v4(9)))],
    );
    n.commit(&b).unwrap();

    let hp = json_elems(&ns, "map", "hostports4");
    let want: Value = serde_json::json!([
        {"elem": {"val": {"concat": ["udp", 5353]}, "comment": "c9/eth1"}},
        {"concat": ["10.88.0.9", 53]}
    ]);
    assert!(hp.contains(&want), "{hp:?}");
    let a4 = json_elems(&ns, "set", "addrs4");
    assert!(
        a4.contains(&serde_json::json!({"elem": {"val": "10.88.0.9", "comment": "c9/eth1"}})),
        "{a4:?}"
    );
    assert!(json_elems(&ns, "set", "bridges").contains(&serde_json::json!("br-rnet0")));
    let iso = json_elems(&ns, "map", "isolation");
    assert!(
        iso.contains(&serde_json::json!(["cni9", {"goto": {"target": "isolate"}}])),
        "{iso:?}"
    );
    assert!(
        iso.contains(&serde_json::json!(["cni8", {"drop": null}])),
        "{iso:?}"
    );
    assert_eq!(
        json_elems(&ns, "set", "addrs6"),
        vec![serde_json::json!("fd00::9")]
    );
    assert_eq!(
        json_elems(&ns, "set", "v4pp"),
        vec![serde_json::json!({"concat": ["10.88.0.9", "tcp", 22]})]
    );
    let marks = nft(&ns, &["list", "map", "inet", "rnet", "marks"]);
    assert!(marks.contains("10.88.0.9 . 80 : 0x00000007"), "{marks}");
    let ports = nft(&ns, &["list", "map", "inet", "rnet", "ports"]);
    assert!(ports.contains("81 : 10.88.0.9"), "{ports}");

    // And back through our dump.
    let got = n.list_elements(INET, "rnet", "hostports4").unwrap();
    assert!(
        got.contains(&hostport(17, 5353, 9, 53, "c9/eth1")),
        "{got:?}"
    );
}

#[test]
fn idempotent_add_excl_and_clash() {
    let (_ns, mut n) = setup();
    let e = hostport(6, 9000, 5, 80, "c5/eth0");
    let mut add = batch();
    add.add_elements("rnet", "hostports4", std::slice::from_ref(&e));
    n.commit(&add).unwrap();
    n.commit(&add).unwrap();
    assert_eq!(
        n.list_elements(INET, "rnet", "hostports4")
            .unwrap()
            .iter()
            .filter(|x| **x == e)
            .count(),
        1
    );
    let mut excl = batch();
    excl.add_elements_excl("rnet", "hostports4", std::slice::from_ref(&e));
    let err = n.commit(&excl).unwrap_err();
    assert!(err.is_exists(), "{err}");
    assert!(
        err.to_string().contains("hostports4") && err.to_string().contains("tcp . 9000"),
        "{err}"
    );
    // Same key, different data: the kernel refuses to overwrite (EBUSY).
    let mut other = batch();
    other.add_elements("rnet", "hostports4", &[hostport(6, 9000, 6, 80, "c6/eth0")]);
    let err = n.commit(&other).unwrap_err();
    assert!(err.is_exists(), "{err}");
    // Same key and data, another comment: idempotent, the comment stays.
    let mut recomment = batch();
    recomment.add_elements(
        "rnet",
        "hostports4",
        &[hostport(6, 9000, 5, 80, "other/eth0")],
    );
    n.commit(&recomment).unwrap();
    let got = n.list_elements(INET, "rnet", "hostports4").unwrap();
    assert!(got.contains(&e), "{got:?}");
    assert!(n.element_exists(INET, "rnet", "hostports4", &e).unwrap());
    // A fresh key with excl works.
    let mut excl2 = batch();
    excl2.add_elements_excl("rnet", "hostports4", &[hostport(6, 9001, 5, 80, "c5/eth0")]);
    n.commit(&excl2).unwrap();
}

#[test]
fn batch_is_atomic() {
    let (ns, mut n) = setup();
    let before = nft(&ns, &["list", "ruleset"]);
    // Good elements in several sets, then one bad message: nothing applies.
    let mut b = batch();
    b.add_elements("rnet", "hostports4", &[hostport(6, 7000, 2, 80, "c2/eth0")])
        .add_elements("rnet", "addrs4", &[Element::new(KeyPart::Ipv4(v4(77)))])
        .add_elements("rnet", "addrs4", &[Element::new(KeyPart::Port(1))]) // wrong key length
        .add_elements(
            "rnet",
            "bridges",
            &[Element::new(KeyPart::IfName("x0".into()))],
        );
    let err = n.commit(&b).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL), "{err}");
    assert!(err.to_string().contains("addrs4"), "{err}");
    assert_eq!(nft(&ns, &["list", "ruleset"]), before);

    // A delete of a missing element also aborts the adds before it.
    let mut b = batch();
    b.add_elements("rnet", "addrs4", &[Element::new(KeyPart::Ipv4(v4(78)))])
        .delete_elements("rnet", "addrs4", &[Element::new(KeyPart::Ipv4(v4(79)))]);
    let err = n.commit(&b).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(nft(&ns, &["list", "ruleset"]), before);

    // A missing set: ENOENT naming it.
    let mut b = batch();
    b.add_elements("rnet", "nosuchset", &[Element::new(KeyPart::Ipv4(v4(1)))]);
    let err = n.commit(&b).unwrap_err();
    assert!(
        err.is_not_found() && err.to_string().contains("nosuchset"),
        "{err}"
    );
}

fn lenient_delete(n: &mut Nft) {
    let keep = hostport(6, 8080, 2, 80, "c1/eth0"); // from the sample
    let e1 = hostport(6, 6001, 3, 80, "c3/eth0");
    let e2 = hostport(17, 6002, 3, 53, "c3/eth0");
    let mut add = batch();
    add.add_elements("rnet", "hostports4", &[e1.clone(), e2.clone()]);
    n.commit(&add).unwrap();

    // Strict delete of a missing element fails and deletes nothing.
    let missing = hostport(6, 6003, 3, 80, "c3/eth0");
    let mut strict = batch();
    strict.delete_elements("rnet", "hostports4", &[e1.clone(), missing.clone()]);
    assert!(n.commit(&strict).unwrap_err().is_not_found());
    assert!(n.element_exists(INET, "rnet", "hostports4", &e1).unwrap());

    // Lenient: deletes what is there, ignores the rest, twice.
    let mut del = batch();
    del.delete_elements_lenient("rnet", "hostports4", &[e1.clone(), missing, e2.clone()]);
    n.commit(&del).unwrap();
    n.commit(&del).unwrap();
    let left = n.list_elements(INET, "rnet", "hostports4").unwrap();
    assert_eq!(left, vec![keep]);
    assert!(!n.element_exists(INET, "rnet", "hostports4", &e1).unwrap());
}

/// After `nft flush ruleset` a lenient delete reports the missing set.
fn lenient_after_flush(ns: &NetNs, n: &mut Nft) {
    nft(ns, &["flush", "ruleset"]);
    let mut del = batch();
    del.delete_elements_lenient("rnet", "hostports4", &[hostport(6, 8080, 2, 80, "")]);
    let err = n.commit(&del).unwrap_err();
    assert!(
        err.is_not_found() && err.to_string().contains("hostports4"),
        "{err}"
    );
}

#[test]
fn lenient_delete_with_destroy() {
    let (ns, mut n) = setup();
    lenient_delete(&mut n);
    assert_eq!(
        n.destroy_supported(),
        Some(true),
        "kernel >= 6.3 has DESTROYSETELEM"
    );
    lenient_after_flush(&ns, &mut n);
}

#[test]
fn lenient_delete_probe_fallback() {
    let (ns, mut n) = setup();
    n.force_no_destroy();
    lenient_delete(&mut n);
    lenient_after_flush(&ns, &mut n);
}

#[test]
fn ten_thousand_elements_in_one_batch() {
    let (ns, mut n) = setup();
    let els: Vec<Element> = (0..10_000u32)
        .map(|i| {
            let proto = if i < 5000 { 6 } else { 17 };
            Element::new(vec![
                KeyPart::Proto(proto),
                KeyPart::Port((i % 5000) as u16 + 10_000),
            ])
            .data(vec![
                KeyPart::Ipv4(Ipv4Addr::from(0x0a00_0000 + i)),
                KeyPart::Port(80),
            ])
            .comment(format!("{i:064x}/eth0"))
        })
        .collect();
    let mut b = batch();
    b.add_elements("rnet", "hostports4", &els);
    n.commit(&b).unwrap(); // many messages, one sendmsg (send buffer grown)
    let listed = n.list_elements(INET, "rnet", "hostports4").unwrap(); // many datagrams
    assert_eq!(listed.len(), 10_001);
    assert!(listed.contains(&els[9_999]));
    let text = nft(&ns, &["list", "map", "inet", "rnet", "hostports4"]);
    assert_eq!(text.matches("/eth0").count(), 10_001);
    let mut del = batch();
    del.delete_elements("rnet", "hostports4", &els);
    n.commit(&del).unwrap();
    assert_eq!(
        n.list_elements(INET, "rnet", "hostports4").unwrap().len(),
        1
    );
}

#[test]
fn bad_arguments_are_typed_before_sending() {
    let (_ns, mut n) = setup();
    let mut b = batch();
    b.add_elements(
        "rnet",
        "addrs4",
        &[Element::new(KeyPart::Ipv4(v4(1))).comment("a\"b")],
    );
    assert!(matches!(n.commit(&b), Err(NftError::InvalidArgument(_))));
    assert!(matches!(
        n.table_exists(INET, "bad name"),
        Err(NftError::InvalidArgument(_))
    ));
}

#[test]
fn current_thread_variants_follow_the_thread_namespace() {
    let ns = netns();
    // apply_ruleset / Nft::new act on the calling thread's namespace: run them
    // on a thread inside `ns`.
    let text = test_ruleset().render().unwrap();
    ns.run(|| apply_ruleset(&text)).unwrap().unwrap();
    let exists = ns
        .run(|| Nft::new().and_then(|mut n| n.table_exists(INET, "rnet")))
        .unwrap()
        .unwrap();
    assert!(exists);
    // The socket keeps working from this (other-namespace) thread.
    let mut n = ns.run(Nft::new).unwrap().unwrap();
    assert!(n.set_exists(INET, "rnet", "hostports4").unwrap());
    assert!(nft(&ns, &["list", "tables"]).contains("table inet rnet"));
}

#[test]
fn ensure_ruleset_against_the_kernel() {
    let ns = netns();
    let mut n = Nft::in_netns(&ns).unwrap();
    assert!(ensure_ruleset(&mut n, &test_ruleset()).unwrap().applied);
    assert!(!ensure_ruleset(&mut n, &test_ruleset()).unwrap().applied);
    let extra = hostport(6, 4444, 4, 80, "c4/eth0");
    let mut b = batch();
    b.add_elements("rnet", "hostports4", std::slice::from_ref(&extra));
    n.commit(&b).unwrap();
    // Someone deletes a chain: reapplied, our element survives the reload.
    nft(&ns, &["flush", "chain", "inet", "rnet", "forward"]);
    nft(&ns, &["delete", "chain", "inet", "rnet", "forward"]);
    let e = ensure_ruleset(&mut n, &test_ruleset()).unwrap();
    assert!(e.applied && e.carried >= 1, "{e:?}");
    assert!(n.chain_exists(INET, "rnet", "isolate").unwrap());
    assert!(
        n.element_exists(INET, "rnet", "hostports4", &extra)
            .unwrap()
    );
    let got = n.list_elements(INET, "rnet", "hostports4").unwrap();
    assert!(got.contains(&extra), "{got:?}");
}

#[test]
fn chains_deleted_only_at_the_generation_read() {
    let (ns, mut n) = setup();
    let g0 = n.generation().unwrap();
    let c = Chain::base("probe", "filter", "forward", "filter")
        .policy("accept")
        .rule("meta l4proto tcp accept");
    // put_chains is idempotent: twice leaves one copy of the rule.
    for _ in 0..2 {
        Backend::put_chains(&mut n, INET, "rnet", std::slice::from_ref(&c)).unwrap();
    }
    let text = nft(&ns, &["list", "chain", "inet", "rnet", "probe"]);
    assert_eq!(text.matches("meta l4proto tcp accept").count(), 1, "{text}");
    assert!(text.contains("hook forward priority filter"), "{text}");
    let g1 = n.generation().unwrap();
    assert_ne!(g0, g1, "a commit must change the generation");
    // Someone commits after we read: the deletion is refused, nothing changes.
    let mut b = batch();
    b.add_elements("rnet", "hostports4", &[hostport(6, 4545, 5, 80, "c5/eth0")]);
    n.commit(&b).unwrap();
    assert!(!n.delete_chains_at(g1, &[(INET, "rnet", "probe")]).unwrap());
    assert!(n.chain_exists(INET, "rnet", "probe").unwrap());
    // At the current generation it goes.
    let g2 = n.generation().unwrap();
    assert!(n.delete_chains_at(g2, &[(INET, "rnet", "probe")]).unwrap());
    assert!(!n.chain_exists(INET, "rnet", "probe").unwrap());
    // A chain that does not exist is an error, not a silent success.
    let g3 = n.generation().unwrap();
    let e = n
        .delete_chains_at(g3, &[(INET, "rnet", "probe")])
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[test]
fn feature_chains_follow_their_sets_in_the_kernel() {
    use crate::rnet::{self as shared, sets};
    let ns = netns();
    let dir = tempfile::tempdir().unwrap();
    let mut n = Nft::in_netns(&ns).unwrap();
    // A plain bridge attachment: masquerade only, no filter chain at all.
    let mut b = Batch::new(INET);
    b.add_elements(
        shared::TABLE,
        sets::MASQ4,
        &[Element::new(KeyPart::Ipv4(v4(2)))],
    );
    b.add_elements(
        shared::TABLE,
        sets::BRIDGES,
        &[Element::new(KeyPart::IfName("br0".into()))],
    );
    shared::commit(&mut n, &b, dir.path()).unwrap();
    let text = nft(&ns, &["list", "ruleset"]);
    assert!(!text.contains("type filter"), "{text}");
    // A published address brings the guard, in the kernel.
    let mut p = Batch::new(INET);
    p.add_elements(
        shared::TABLE,
        sets::PUBLISHED4,
        &[Element::new(KeyPart::Ipv4(v4(2)))],
    );
    shared::commit(&mut n, &p, dir.path()).unwrap();
    assert!(n.chain_exists(INET, "rnet", "pm_guard").unwrap());
    assert!(!n.chain_exists(INET, "rnet", "forward").unwrap());
    assert_eq!(shared::prune_features(&mut n).unwrap(), 0);
    // Gone once its set is empty and GC prunes.
    let mut d = Batch::new(INET);
    d.delete_elements(
        shared::TABLE,
        sets::PUBLISHED4,
        &[Element::new(KeyPart::Ipv4(v4(2)))],
    );
    n.commit(&d).unwrap();
    assert!(n.chain_exists(INET, "rnet", "pm_guard").unwrap());
    assert_eq!(shared::prune_features(&mut n).unwrap(), 1);
    let text = nft(&ns, &["list", "ruleset"]);
    assert!(!text.contains("type filter"), "{text}");
    assert!(text.contains("masquerade"), "{text}");
}

/// Every feature chain created over netlink (`Chain::native`) has the same
/// bytecode in the kernel as the one `nft` makes from the chain's text:
/// `nft --debug=netlink list table` prints each rule's expressions as the
/// kernel returns them.
#[test]
fn native_feature_chains_match_their_nft_text() {
    use crate::rnet::{features, ruleset};
    for f in features() {
        let (a, b) = (netns(), netns());
        let mut na = Nft::in_netns(&a).unwrap();
        let mut nb = Nft::in_netns(&b).unwrap();
        na.apply(&ruleset()).unwrap();
        nb.apply(&ruleset()).unwrap();
        let chains = f.chains();
        assert!(
            na.put_chains_native(f.family, "rnet", &chains).unwrap(),
            "{}: every chain has expressions",
            f.name
        );
        let text: String = chains
            .iter()
            .map(|c| c.put_text(f.family, "rnet").unwrap())
            .collect();
        nb.apply_ruleset(&text).unwrap();
        let fam = f.family.to_string();
        let list = |ns: &NetNs| nft(ns, &["--debug=netlink", "list", "table", &fam, "rnet"]);
        let (la, lb) = (list(&a), list(&b));
        assert_eq!(la, lb, "{}: native and nft text differ", f.name);
        for c in &chains {
            assert!(la.contains(&c.name), "{}: {la}", c.name);
        }
        // Putting them again replaces the rules (flush), as the text does
        // (the rules get new handles, which the plain listing omits).
        assert!(na.put_chains_native(f.family, "rnet", &chains).unwrap());
        let plain = |ns: &NetNs| nft(ns, &["list", "table", &fam, "rnet"]);
        assert_eq!(
            plain(&a),
            plain(&b),
            "{}: a second put duplicated rules",
            f.name
        );
    }
}

/// rnet's whole ruleset, every feature on and elements in every kind of set
/// and map, as [`Nft::apply_native`] makes it and as `nft -f` makes it from
/// the rendering: the same listing, the same bytecode, the same elements.
#[test]
fn native_ruleset_matches_its_nft_text() {
    use crate::rnet::{TABLE, ruleset, sets, with_features};
    let mut model = ruleset();
    let el = |t: &mut Ruleset, fam: Family, set: &str, e: Element| {
        let table = t
            .tables
            .iter_mut()
            .find(|x| x.family == fam && x.name == TABLE)
            .unwrap();
        table.elements_mut(set).unwrap().push(e);
    };
    let v4 = |s: &str| KeyPart::Ipv4(s.parse().unwrap());
    let v6 = |s: &str| KeyPart::Ipv6(s.parse().unwrap());
    let ifn = |s: &str| KeyPart::IfName(s.into());
    let m = &mut model;
    el(
        m,
        INET,
        sets::MASQ4,
        Element::new(vec![v4("10.88.0.2")]).comment("n/c1/eth0"),
    );
    el(m, INET, sets::MASQ6, Element::new(vec![v6("fd00::2")]));
    el(m, INET, sets::BRIDGES, Element::new(vec![ifn("cni0")]));
    el(
        m,
        INET,
        sets::BRIDGE_SELF,
        Element::new(vec![ifn("cni0"), ifn("cni0")]),
    );
    el(m, INET, sets::ISOLATED, Element::new(vec![ifn("cni0")]));
    el(
        m,
        INET,
        sets::HAIRPIN4,
        Element::new(vec![ifn("cni0"), v4("10.88.0.2")]),
    );
    el(
        m,
        INET,
        sets::HAIRPIN6,
        Element::new(vec![ifn("cni0"), v6("fd00::2")]),
    );
    el(
        m,
        INET,
        sets::PUBLISHED4,
        Element::new(vec![v4("10.88.0.2")]),
    );
    el(m, INET, sets::LOCALNET, Element::new(vec![ifn("cni0")]));
    el(
        m,
        INET,
        sets::HOSTPORTS4,
        Element::new(vec![KeyPart::Proto(6), KeyPart::Port(8080)])
            .data(vec![v4("10.88.0.2"), KeyPart::Port(80)])
            .comment("n/c1/eth0"),
    );
    el(
        m,
        INET,
        sets::HOSTIP_PORTS6,
        Element::new(vec![v6("fd00::1"), KeyPart::Proto(17), KeyPart::Port(53)])
            .data(vec![v6("fd00::2"), KeyPart::Port(5353)]),
    );
    el(
        m,
        INET,
        sets::PM_COND4,
        Element::new(vec![KeyPart::Proto(6), KeyPart::Port(9090)])
            .verdict(Verdict::Goto(crate::rnet::cond::CDNAT4.into())),
    );
    el(
        m,
        Family::Bridge,
        sets::SPOOF_PORTS,
        Element::new(vec![ifn("veth1")]),
    );
    el(
        m,
        Family::Bridge,
        sets::SPOOF_OK,
        Element::new(vec![
            ifn("veth1"),
            KeyPart::Raw(vec![2, 0x42, 10, 88, 0, 2]),
        ]),
    );
    assert_eq!(with_features(m), 4, "every feature is on");
    for t in &mut m.tables {
        t.fresh = true;
    }
    let (a, b) = (netns(), netns());
    let mut na = Nft::in_netns(&a).unwrap();
    assert!(
        na.apply_native(&model).unwrap(),
        "all of it has a netlink form"
    );
    let nb = Nft::in_netns(&b).unwrap();
    drop(nb);
    crate::apply_ruleset_in(&b, &model.render().unwrap()).unwrap();
    // Rule handles depend on the order of creation; the rest must match.
    let strip = |s: String| -> String {
        s.lines()
            .map(|l| {
                let w: Vec<&str> = l.split(' ').collect();
                match w.as_slice() {
                    [fam, "rnet", chain, ..] if !l.starts_with(' ') && !chain.starts_with('@') => {
                        format!("{fam} rnet {chain}")
                    }
                    _ => l.to_owned(),
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let debug = |ns: &NetNs| strip(nft(ns, &["--debug=netlink", "list", "ruleset"]));
    let plain = |ns: &NetNs| nft(ns, &["list", "ruleset"]);
    let (da, db) = (debug(&a), debug(&b));
    for (x, y) in da.lines().zip(db.lines()) {
        assert_eq!(x, y, "bytecode differs");
    }
    assert_eq!(da, db, "bytecode differs");
    assert_eq!(plain(&a), plain(&b), "listings differ");
    for (kind, set) in [("map", sets::HOSTPORTS4), ("map", sets::PM_COND4)] {
        assert_eq!(json_elems(&a, kind, set), json_elems(&b, kind, set));
        assert_eq!(json_elems(&a, kind, set).len(), 1, "{set}");
    }
    // Fresh over an existing table: refused, nothing changed.
    let before = plain(&a);
    let e = na.apply_native(&model).unwrap_err();
    assert_eq!(e.errno(), Some(libc::EEXIST), "{e}");
    assert!(e.to_string().contains("table inet rnet"), "{e}");
    assert_eq!(plain(&a), before);
    // Not fresh: the table is replaced, not merged (no rule twice).
    for t in &mut model.tables {
        t.fresh = false;
    }
    assert!(na.apply_native(&model).unwrap());
    assert_eq!(plain(&a), before);
    // Something without a netlink form: nothing is sent.
    model.tables[0]
        .chains
        .push(Chain::new("extra").rule("counter"));
    assert!(!na.apply_native(&model).unwrap());
    assert_eq!(plain(&a), before);
}
