//! Security checks that have no better home in a plugin's own lab module:
//! the resolver's control socket refuses other users, even when its file
//! permissions are loosened by someone; rnet's state on disk is private
//! (files 0600, directories 0700) across a full chain; a symlinked state
//! directory is refused with nothing written at its target.
//!
//! The rest of issue 10's security list is proven where the feature lives
//! (table in docs/reliability.md): isolation between networks
//! (`bridge::isolation_between_networks`, `firewall::admits_isolates_and_cleans_up`),
//! hostIP binding and 127.0.0.1 from containers and neighbours
//! (`portmap::published_ports_from_everywhere`), `macspoofchk`
//! (`bridge::macspoofchk_drops_spoofed_frames`), DNS scoping
//! (`dns::names_and_aliases_resolve_a_aaaa_ptr_and_scoping`).

use crate::common::{StopResolver, lab, rnet, rnet_dir, run};
use rnet_cni::runtime::{ConfList, Runtime, RuntimeConf};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const NOBODY: &str = "65534";

/// Runs a Python one-liner as uid/gid 65534 (nobody) that connects to the
/// Unix socket `sock`, sends `line` and prints what it got (or the error).
fn as_nobody(sock: &Path, line: &str) -> String {
    let py = "import socket,sys\n\
              s=socket.socket(socket.AF_UNIX)\n\
              try:\n  s.connect(sys.argv[1])\n\
              except OSError as e:\n  print('connect:', e.__class__.__name__); sys.exit(0)\n\
              try:\n  s.sendall(sys.argv[2].encode()+b'\\n')\n\
              except OSError:\n  pass\n\
              s.settimeout(5)\n\
              print('reply:', s.recv(65536).decode(errors='replace'))\n";
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            py,
        ])
        .arg(sock)
        .arg(line)
        .output()
        .expect("setpriv (util-linux) and python3 are needed");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn dns_control_socket_refuses_other_users() {
    let lab = lab();
    let dir = lab.state_dir().join("dns");
    let _stop = StopResolver(dir.clone());
    crate::common::start_resolver(&lab, &dir);
    let sock = dir.join("control.sock");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&sock), 0o600, "control socket");
    assert_eq!(mode(&dir), 0o700, "state directory");
    // The lab's temp dir (its parent is /tmp) must be traversable for the
    // check to mean anything.
    std::fs::set_permissions(lab.state_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let req = r#"{"op":"list"}"#;
    // Layer 1: file permissions.
    let got = as_nobody(&sock, req);
    assert!(got.contains("connect: PermissionError"), "{got}");
    // Layer 2: loosen the permissions by hand; the resolver itself checks
    // the peer's credentials (SO_PEERCRED) and refuses.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    let got = as_nobody(&sock, req);
    assert!(
        got.contains("reply:") && got.contains("may not control this resolver"),
        "{got}"
    );
    assert!(
        !got.contains("\"registry\""),
        "no data for a stranger: {got}"
    );
    // Root still gets answers.
    let got = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n\
             s.sendall(b'{\"op\":\"list\"}\\n')\nprint(s.recv(65536).decode())",
        ])
        .arg(&sock)
        .output()
        .unwrap();
    let got = String::from_utf8_lossy(&got.stdout);
    assert!(got.contains("\"ok\":true"), "{got}");
}

fn walk(p: &Path, out: &mut Vec<(std::path::PathBuf, std::fs::Metadata)>) {
    let Ok(rd) = std::fs::read_dir(p) else { return };
    for e in rd.flatten() {
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        if m.is_dir() {
            walk(&e.path(), out);
        }
        out.push((e.path(), m));
    }
}

fn chain(lab: &netns_fixtures::Lab, name: &str, bridge: &str, subnet: &str) -> ConfList {
    let root = lab.state_dir().join("run");
    let v = json!({"cniVersion": "1.0.0", "name": name, "plugins": [
        {"type": "rnet-bridge", "bridge": bridge, "isGateway": true, "ipMasq": true,
         "rnetStateDir": root,
         "ipam": {"type": "rnet-ipam", "subnet": subnet, "dataDir": lab.state_dir().join("ipam")}},
        {"type": "rnet-portmap", "capabilities": {"portMappings": true}, "rnetStateDir": root},
        {"type": "rnet-firewall", "rnetStateDir": root},
        {"type": "rnet-dnsname", "domainName": "dns.rnet", "rnetStateDir": root,
         "rnetDefaultUpstreams": ["127.0.0.1:9"]}
    ]});
    ConfList::parse(v.to_string().as_bytes()).unwrap()
}

#[test]
fn state_is_private_and_symlinked_state_dirs_are_refused() {
    let lab = lab();
    let _stop = StopResolver(lab.state_dir().join("run").join("dns"));
    let rt = Runtime::new(vec![rnet_dir()], lab.state_dir().join("cache"));
    let list = chain(&lab, "sec", "br-sec", "10.81.0.0/24");
    let ctr = lab.add_container("sec1").unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "portMappings".into(),
        json!([{"hostPort": 8089, "containerPort": 80, "protocol": "tcp"}]),
    );
    let rc = RuntimeConf {
        container_id: "sec1".into(),
        netns: Some(ctr.netns_path()),
        ifname: "eth0".into(),
        args: vec![("K8S_POD_NAME".into(), "sec1".into())],
        capability_args: caps,
    };
    lab.host().run(|| rt.add(&list, &rc)).unwrap().unwrap();
    // Every file rnet wrote (plugin state, nft journal, IPAM leases, DNS
    // registry, the runtime's cache) is private to root.
    let mut all = Vec::new();
    walk(lab.state_dir(), &mut all);
    let mut files = 0;
    for (p, m) in &all {
        let mode = m.permissions().mode() & 0o777;
        // A pid file is public by convention (its directory is 0700).
        if m.is_file() && p.extension().is_some_and(|e| e == "pid") {
            continue;
        }
        if m.is_file() {
            files += 1;
            assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", p.display());
        } else if m.is_dir() && p.starts_with(lab.state_dir().join("run")) {
            assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", p.display());
        }
        assert!(!m.file_type().is_symlink(), "{}", p.display());
    }
    assert!(files >= 5, "state was written: {all:?}");
    lab.host().run(|| rt.del(&list, &rc)).unwrap().unwrap();

    // A symlink where a network's state directory goes: ADD is refused,
    // nothing is written at the link's target, nothing is left behind.
    let target = lab.state_dir().join("elsewhere");
    std::fs::create_dir_all(&target).unwrap();
    let bridge_root = lab.state_dir().join("run").join("bridge");
    std::fs::create_dir_all(&bridge_root).unwrap();
    std::os::unix::fs::symlink(&target, bridge_root.join("symnet")).unwrap();
    let out = run(lab
        .cni(rnet("rnet-bridge"))
        .command("ADD")
        .container_id("sec2")
        .netns(ctr.netns_path())
        .ifname("eth0")
        .cni_path([rnet_dir()])
        .stdin(
            json!({"cniVersion": "1.0.0", "name": "symnet", "type": "rnet-bridge",
                   "bridge": "br-sym", "rnetStateDir": lab.state_dir().join("run"),
                   "ipam": {"type": "rnet-ipam", "subnet": "10.82.0.0/24",
                            "dataDir": lab.state_dir().join("ipam")}})
            .to_string(),
        ));
    assert_eq!(crate::common::error_code(&out), 5, "{}", out.stdout_str());
    assert!(
        out.stdout_str().contains("symbolic link"),
        "{}",
        out.stdout_str()
    );
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    assert!(crate::common::container_veths(&lab).is_empty());
    assert_eq!(
        crate::common::lease_count(&lab.state_dir().join("ipam").join("symnet")),
        0
    );
}

/// Malformed control messages get an error reply naming what is wrong, and
/// change nothing; the resolver keeps serving (docs/bad-input.md rows).
#[test]
fn dns_control_messages_malformed_are_refused() {
    use std::io::{BufRead, BufReader, Write};
    let lab = lab();
    let dir = lab.state_dir().join("dns");
    let _stop = StopResolver(dir.clone());
    crate::common::start_resolver(&lab, &dir);
    let ask = |line: &[u8]| -> String {
        let mut s = std::os::unix::net::UnixStream::connect(dir.join("control.sock")).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(line).unwrap();
        s.write_all(b"\n").unwrap();
        let mut r = String::new();
        BufReader::new(s).read_line(&mut r).unwrap();
        r
    };
    let register = |names: &str, addrs: &str| {
        format!(
            r#"{{"op":"register","network":{{"name":"n1","listen":[]}},"attachment":{{"containerID":"c1","ifname":"eth0"}},"names":{names},"addrs":{addrs}}}"#
        )
    };
    let long = "a".repeat(64);
    let cases: Vec<(String, Vec<u8>, &str)> = vec![
        ("garbage".into(), b"not json at all".to_vec(), "bad request"),
        (
            "unknown op".into(),
            br#"{"op":"explode"}"#.to_vec(),
            "bad request",
        ),
        (
            "address not an IP".into(),
            register(r#"["web"]"#, r#"["10.0.0.300"]"#).into_bytes(),
            "bad request",
        ),
        (
            "label longer than 63".into(),
            register(&format!(r#"["{long}"]"#), r#"["10.0.0.2"]"#).into_bytes(),
            long.as_str(),
        ),
        (
            "name with a space".into(),
            register(r#"["we b"]"#, r#"["10.0.0.2"]"#).into_bytes(),
            "we b",
        ),
        ("a 2 MiB line".into(), vec![b'x'; 2 << 20], "bad request"),
    ];
    for (what, line, names) in &cases {
        let r = ask(line);
        assert!(r.contains("\"ok\":false"), "{what}: {r}");
        assert!(r.contains(names), "{what}: the error names {names:?}: {r}");
    }
    let r = ask(br#"{"op":"list"}"#);
    assert!(r.contains("\"ok\":true"), "{r}");
    assert!(
        !r.contains("we b") && !r.contains("\"web\""),
        "nothing registered: {r}"
    );
}
