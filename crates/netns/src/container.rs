//! Starting processes as lab containers: inside a network namespace, in a
//! private mount namespace with the container's own `/etc/resolv.conf` and
//! `/etc/hosts` bind-mounted over the host's (what Docker gives a container),
//! and entering a running container's namespaces for `exec`.
//!
//! The namespace work happens in the forked child before `exec` (via
//! `pre_exec`), where the process is single-threaded, which `setns` into a
//! mount namespace requires. Only system calls are made there; every path is
//! converted to a C string before the fork.

use crate::{NetNs, NsError};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

fn cstr(p: &Path) -> Result<CString, NsError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| NsError::InvalidName {
        name: p.display().to_string(),
        reason: "contains a NUL byte",
    })
}

/// Spawns `cmd` as a lab container: in network namespace `net`, in a new
/// private mount namespace where each `(source, target)` of `binds` is
/// bind-mounted (e.g. the container's resolv.conf over `/etc/resolv.conf`).
/// Targets must exist. The child also gets its own UTS namespace with
/// `hostname` set, when given.
pub fn spawn_container(
    cmd: &mut Command,
    net: &NetNs,
    binds: &[(PathBuf, PathBuf)],
    hostname: Option<&str>,
) -> Result<Child, NsError> {
    let net_fd: OwnedFd = net.as_fd().try_clone_to_owned().map_err(|e| NsError::Io {
        context: "duplicating the namespace fd".into(),
        source: e,
    })?;
    let binds: Vec<(CString, CString)> = binds
        .iter()
        .map(|(s, t)| Ok((cstr(s)?, cstr(t)?)))
        .collect::<Result<_, NsError>>()?;
    let root = CString::new("/").unwrap_or_default();
    let host = hostname.map(|h| h.as_bytes().to_vec());
    let what = format!("{:?}", cmd.get_program());
    // SAFETY: the closure runs in the forked child before exec. It only makes
    // system calls (setns, unshare, mount, sethostname) on data prepared above
    // (owned by the closure), allocating nothing and taking no locks.
    unsafe {
        cmd.pre_exec(move || {
            let fd = net_fd.as_raw_fd();
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let flags = libc::CLONE_NEWNS
                | if host.is_some() {
                    libc::CLONE_NEWUTS
                } else {
                    0
                };
            if libc::unshare(flags) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Mounts made here must not propagate back to the host.
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for (s, t) in &binds {
                if libc::mount(
                    s.as_ptr(),
                    t.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(h) = &host {
                if libc::sethostname(h.as_ptr().cast(), h.len()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| NsError::Io {
        context: format!("starting {what} as a lab container"),
        source: e,
    })
}

/// Spawns `cmd` inside the network, mount and UTS namespaces of process `pid`
/// (a running lab container), for `exec`.
pub fn spawn_in_process_namespaces(cmd: &mut Command, pid: u32) -> Result<Child, NsError> {
    let mut fds = Vec::new();
    for (kind, flag) in [
        ("net", libc::CLONE_NEWNET),
        ("uts", libc::CLONE_NEWUTS),
        ("mnt", libc::CLONE_NEWNS),
    ] {
        let p = PathBuf::from(format!("/proc/{pid}/ns/{kind}"));
        let f = std::fs::File::open(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                NsError::NotFound { path: p.clone() }
            } else {
                NsError::Io {
                    context: format!("opening {}", p.display()),
                    source: e,
                }
            }
        })?;
        fds.push((OwnedFd::from(f), flag));
    }
    let what = format!("{:?}", cmd.get_program());
    // SAFETY: as in `spawn_container`: only setns(2) calls on fds owned by the
    // closure, in the single-threaded child before exec.
    unsafe {
        cmd.pre_exec(move || {
            for (fd, flag) in &fds {
                if libc::setns(fd.as_raw_fd(), *flag) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| NsError::Io {
        context: format!("starting {what} in the namespaces of process {pid}"),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn container_gets_its_own_files_and_namespaces() {
        let ns = NetNs::new_unnamed().expect("root and namespaces are needed");
        let d = tempfile::tempdir().unwrap();
        let resolv = d.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 10.99.0.1\n").unwrap();
        let before = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let mut c = Command::new("/bin/sh");
        c.args([
            "-c",
            "cat /etc/resolv.conf; readlink /proc/self/ns/net; hostname",
        ])
        .stdout(std::process::Stdio::piped());
        let child = spawn_container(
            &mut c,
            &ns,
            &[(resolv.clone(), "/etc/resolv.conf".into())],
            Some("ctr1"),
        )
        .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("nameserver 10.99.0.1"), "{text}");
        assert!(
            text.contains(&format!("net:[{}]", ns.id().unwrap().ino)),
            "{text}"
        );
        assert!(text.trim_end().ends_with("ctr1"), "{text}");
        // The host's file and hostname are untouched.
        assert_eq!(
            std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            before
        );
        assert_ne!(
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap()
                .trim(),
            "ctr1"
        );
    }

    #[test]
    fn exec_enters_a_running_container() {
        let ns = NetNs::new_unnamed().expect("root and namespaces are needed");
        let mut sleeper = Command::new("/bin/sleep");
        sleeper.arg("5");
        let mut s = spawn_container(&mut sleeper, &ns, &[], Some("box")).unwrap();
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "readlink /proc/self/ns/net; hostname"])
            .stdout(std::process::Stdio::piped());
        let out = spawn_in_process_namespaces(&mut c, s.id())
            .unwrap()
            .wait_with_output()
            .unwrap();
        let _ = s.kill();
        let _ = s.wait();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("net:[{}]", ns.id().unwrap().ino)),
            "{text}"
        );
        assert!(text.contains("box"), "{text}");
    }
}
