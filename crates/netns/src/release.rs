//! Handing the last close of a file descriptor to a short-lived child.
//!
//! Closing an nf_tables netlink socket after deleting elements makes the
//! closing process wait for the kernel's deferred cleanup (an RCU grace
//! period: 3–20 ms measured here); so does exiting with it open. A plugin's
//! DEL has finished its work once the deletion is committed, so that wait
//! should not sit between the runtime and the next container. [`hold_until_exit`]
//! forks a child that keeps the given descriptors open until this process has
//! exited, then closes them: the parent's own close is no longer the last one
//! and returns at once, and the wait happens in the child, which nobody waits for.
//!
//! The child closes every other descriptor first (stdin, stdout and stderr
//! included), so a runtime reading the plugin's stdout sees EOF as soon as the
//! plugin exits. After `fork` it only makes async-signal-safe system calls.

use crate::NsError;
use std::os::fd::{AsRawFd, RawFd};

fn close_range(first: RawFd, last: RawFd) {
    if first > last || first < 0 {
        return;
    }
    // SAFETY: close_range(2) on a range of descriptor numbers; no memory is
    // touched. Called in the forked child, where it is async-signal-safe.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            last as libc::c_uint,
            0 as libc::c_uint,
        );
    }
}

/// Keeps `fds` open in a child process until this process exits, then closes
/// them there. The caller closes its own copies as usual afterwards.
pub fn hold_until_exit(fds: &[RawFd]) -> Result<(), NsError> {
    let (r, w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| NsError::Io {
            context: "creating a pipe".into(),
            source: e.into(),
        })?;
    let mut keep: Vec<RawFd> = fds.iter().copied().filter(|f| *f >= 0).collect();
    keep.push(r.as_raw_fd());
    keep.sort_unstable();
    keep.dedup();
    let rfd = r.as_raw_fd();
    let wfd = w.as_raw_fd();
    // SAFETY: fork(2). The child below only calls async-signal-safe functions
    // (close_range, close, read, _exit) and never returns into Rust code that
    // could allocate or take locks held by other threads of the parent.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(NsError::Io {
            context: "fork for the background close".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    if pid == 0 {
        // Child.
        let mut next: RawFd = 0;
        for k in &keep {
            close_range(next, k - 1);
            next = k + 1;
        }
        close_range(next, RawFd::MAX);
        let _ = wfd; // closed by the close_range above (not in `keep`)
        let mut b = [0u8; 1];
        loop {
            // SAFETY: read(2) into a stack buffer of the right length.
            let n = unsafe { libc::read(rfd, b.as_mut_ptr().cast(), 1) };
            if n >= 0 {
                break; // EOF: every write end (the parent's) is closed
            }
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
        // Give the kernel's deferred cleanup time to finish on its own before
        // the last close: closing with cleanup still pending makes the close
        // flush it while holding nf_tables' commit lock, which would then
        // delay whoever commits next instead of this (unwatched) child.
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        // SAFETY: nanosleep(2) with a valid timespec; async-signal-safe.
        unsafe {
            libc::nanosleep(&pause, std::ptr::null_mut());
        }
        // SAFETY: _exit(2) ends the child without running destructors or atexit handlers.
        unsafe { libc::_exit(0) }
    }
    // Parent: the write end stays open until this process exits.
    drop(r);
    std::mem::forget(w);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Read;
    use std::os::fd::OwnedFd;

    #[test]
    fn the_child_keeps_the_descriptor_open() {
        let (r, w): (OwnedFd, OwnedFd) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        hold_until_exit(&[w.as_raw_fd()]).unwrap();
        drop(w);
        // Our copy is closed, but the child holds one: no EOF yet.
        rustix::fs::fcntl_setfl(&r, rustix::fs::OFlags::NONBLOCK).unwrap();
        let mut f = std::fs::File::from(r);
        let mut buf = [0u8; 1];
        std::thread::sleep(std::time::Duration::from_millis(50));
        let e = f.read(&mut buf).unwrap_err();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::WouldBlock,
            "EOF would mean nobody holds the write end"
        );
    }
}
