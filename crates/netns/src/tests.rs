//! These tests need root (CAP_SYS_ADMIN) and fail loudly without it: every
//! namespace operation is unwrapped, so a missing privilege shows up as a
//! panic naming the failing call. They never touch the machine's root network
//! namespace: topology work happens only inside namespaces created here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};

const NEED_ROOT: &str = "these namespace tests need root and namespaces (run as root; CI does)";

fn fresh() -> NetNs {
    NetNs::new_unnamed()
        .unwrap_or_else(|e| panic!("{NEED_ROOT}: creating a network namespace failed: {e}"))
}

fn lo_up(ns: &NetNs) {
    let out = ns
        .output(Command::new("ip").args(["link", "set", "lo", "up"]))
        .unwrap();
    assert!(
        out.status.success(),
        "ip link set lo up failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn unique_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "rnet-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Deletes a named namespace on drop, also when the test panics.
struct NamedGuard(String);
impl Drop for NamedGuard {
    fn drop(&mut self) {
        let _ = NetNs::delete_named(&self.0);
    }
}

#[test]
fn open_thread_self() {
    let ns = NetNs::open(THREAD_SELF_NETNS).unwrap();
    let cur = NetNs::current().unwrap();
    assert_eq!(ns.id().unwrap(), cur.id().unwrap());
    // A /proc/thread-self path means nothing to another process: path() falls
    // back to our fd.
    assert!(ns.path().starts_with("/proc/"));
    assert!(!ns.path().starts_with("/proc/thread-self"));
}

#[test]
fn open_plain_file_is_not_a_namespace() {
    let file = tempfile::NamedTempFile::new().unwrap();
    match NetNs::open(file.path()) {
        Err(NsError::NotANamespace { path, reason }) => {
            assert_eq!(path, file.path());
            assert!(reason.contains("regular file"), "{reason}");
        }
        other => panic!("expected NotANamespace, got {other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let err = NetNs::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, NsError::NotANamespace { reason, .. } if reason.contains("directory")),
        "{err:?}"
    );
    assert!(err.to_string().contains(&dir.path().display().to_string()));
}

#[test]
fn open_fifo_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    assert!(matches!(
        NetNs::open(&fifo),
        Err(NsError::NotANamespace { .. })
    ));
}

#[test]
fn open_uts_is_wrong_kind() {
    match NetNs::open("/proc/self/ns/uts") {
        Err(NsError::WrongKind { path }) => assert_eq!(path, Path::new("/proc/self/ns/uts")),
        other => panic!("expected WrongKind, got {other:?}"),
    }
}

#[test]
fn open_missing_is_not_found() {
    let err = NetNs::open("/nonexistent/rnet/netns").unwrap_err();
    assert!(matches!(err, NsError::NotFound { .. }), "{err:?}");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
}

#[test]
fn new_unnamed_differs_from_current() {
    let ns = fresh();
    let cur = NetNs::current().unwrap();
    assert_ne!(ns.id().unwrap(), cur.id().unwrap());
    let other = fresh();
    assert_ne!(ns.id().unwrap(), other.id().unwrap());
}

#[test]
fn run_sees_the_namespace() {
    let ns = fresh();
    let want = ns.id().unwrap();
    let inside = ns.run(|| NetNs::current().unwrap().id().unwrap()).unwrap();
    assert_eq!(inside, want);
    // The calling thread was never switched.
    assert_ne!(NetNs::current().unwrap().id().unwrap(), want);
    // Borrowing works (scoped thread).
    let label = String::from("borrowed");
    let len = ns.run(|| label.len()).unwrap();
    assert_eq!(len, 8);
}

#[test]
fn spawn_scoped_runs_in_the_namespace_while_the_caller_goes_on() {
    let ns = fresh();
    let want = ns.id().unwrap();
    let before = NetNs::current().unwrap().id().unwrap();
    let (inside, caller) = std::thread::scope(|s| {
        let task = ns
            .spawn_scoped(s, || NetNs::current().unwrap().id().unwrap())
            .unwrap();
        // The caller's own thread stays where it was while the task runs.
        let caller = NetNs::current().unwrap().id().unwrap();
        (task.join().unwrap(), caller)
    });
    assert_eq!(inside, want);
    assert_eq!(caller, before);
    let r: Result<(), NsError> = std::thread::scope(|s| {
        ns.spawn_scoped(s, || panic!("deliberate test panic"))
            .unwrap()
            .join()
    });
    assert!(matches!(r, Err(NsError::ThreadPanicked)), "{r:?}");
}

#[test]
fn current_id_matches_the_current_handle() {
    let here = NetNs::current().unwrap().id().unwrap();
    assert_eq!(NsId::current().unwrap(), here);
    let ns = fresh();
    let inside = ns.run(|| NsId::current().unwrap()).unwrap();
    assert_eq!(inside, ns.id().unwrap());
    assert_ne!(inside, here);
}

#[test]
fn run_panic_is_returned_not_propagated() {
    let ns = fresh();
    let r: Result<(), NsError> = ns.run(|| panic!("deliberate test panic"));
    assert!(matches!(r, Err(NsError::ThreadPanicked)), "{r:?}");
}

#[test]
fn tcp_listener_is_confined_to_its_namespace() {
    let a = fresh();
    let b = fresh();
    lo_up(&a);
    lo_up(&b);
    let listener = a.run(|| TcpListener::bind("127.0.0.1:0")).unwrap().unwrap();
    let addr = listener.local_addr().unwrap();

    // Served from this ordinary thread: the socket stays in namespace A.
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"hello from a").unwrap();
    });

    let from_b = b.run(|| TcpStream::connect(addr)).unwrap();
    let err = from_b.expect_err("namespace B must not reach a listener in namespace A");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);

    let mut from_a = a.run(|| TcpStream::connect(addr)).unwrap().unwrap();
    let mut got = String::new();
    from_a.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello from a");
    server.join().unwrap();
}

#[test]
fn spawn_child_inherits_namespace() {
    let ns = fresh();
    let out = ns
        .output(Command::new("readlink").arg("/proc/self/ns/net"))
        .unwrap();
    assert!(out.status.success());
    let link = String::from_utf8(out.stdout).unwrap();
    assert_eq!(link.trim(), ns.id().unwrap().to_string());

    let mut child = ns.spawn(Command::new("sh").args(["-c", "exit 3"])).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(3));
}

#[test]
fn unnamed_path_is_openable_by_others() {
    let ns = fresh();
    let path = ns.path();
    assert!(path.starts_with(format!("/proc/{}/fd/", std::process::id())));
    let again = NetNs::open(&path).unwrap();
    assert_eq!(again.id().unwrap(), ns.id().unwrap());
    // Another process can enter it by path.
    let out = Command::new("readlink").arg(&path).output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        ns.id().unwrap().to_string()
    );
    assert!(!same_as_current(&path).unwrap());
    assert!(same_as_current(THREAD_SELF_NETNS).unwrap());
    assert!(ns.run(|| same_as_current(&path)).unwrap().unwrap());
}

#[test]
fn named_round_trip() {
    let name = unique_name();
    let _guard = NamedGuard(name.clone());
    let ns = NetNs::create_named(&name).unwrap();
    let path = Path::new(NETNS_RUN_DIR).join(&name);
    assert_eq!(ns.path(), path);
    let opened = NetNs::open(&path).unwrap();
    assert_eq!(opened.id().unwrap(), ns.id().unwrap());
    assert_ne!(ns.id().unwrap(), NetNs::current().unwrap().id().unwrap());

    let dup = NetNs::create_named(&name).unwrap_err();
    assert!(matches!(dup, NsError::AlreadyExists { .. }), "{dup:?}");
    assert_eq!(dup.raw_os_error(), Some(libc::EEXIST));

    NetNs::delete_named(&name).unwrap();
    assert!(!path.exists());
    assert!(matches!(NetNs::open(&path), Err(NsError::NotFound { .. })));
    // Deleting again is fine.
    NetNs::delete_named(&name).unwrap();
    // Our handle still keeps the namespace itself alive.
    assert_eq!(ns.run(|| 1).unwrap(), 1);
}

#[test]
fn invalid_names_are_rejected() {
    for bad in ["", ".", "..", "a/b", "x\0y"] {
        assert!(
            matches!(NetNs::create_named(bad), Err(NsError::InvalidName { .. })),
            "{bad:?}"
        );
        assert!(matches!(
            NetNs::delete_named(bad),
            Err(NsError::InvalidName { .. })
        ));
    }
}

#[test]
fn from_fd_and_clone() {
    let ns = fresh();
    let id = ns.id().unwrap();
    let dup = ns.try_clone().unwrap();
    assert_eq!(dup.id().unwrap(), id);
    let back = NetNs::from_fd(OwnedFd::from(dup)).unwrap();
    assert_eq!(back.id().unwrap(), id);
    let file = std::fs::File::open("/proc/self/ns/uts").unwrap();
    assert!(matches!(
        NetNs::from_fd(OwnedFd::from(file)),
        Err(NsError::WrongKind { .. })
    ));
}
