//! Network namespace handles for rnet.
//!
//! A [`NetNs`] is an open file descriptor on a network namespace (an `nsfs`
//! inode), plus the path it came from when that path is meaningful to other
//! processes. Everything rnet does to a namespace goes through this crate, and
//! this is the only crate in the workspace allowed `unsafe` (two `ioctl`/`unshare`
//! calls, each with a SAFETY note).
//!
//! # The namespace rules, and why
//!
//! `setns(2)` changes the namespace of the *calling thread* only. That single
//! fact drives every rule below.
//!
//! 1. **Enter a namespace only to create sockets, write `/proc/sys/net`, or
//!    spawn a child.** A socket (netlink, TCP, UDP, ICMP) belongs for its whole
//!    life to the namespace it was created in, and may then be used from any
//!    thread. So the switch is needed only at creation time: open the netlink
//!    socket inside the container namespace via [`NetNs::run`], then talk to it
//!    from wherever. `/proc/sys/net` reflects the namespace of the thread that
//!    *opens* the file, and a child process inherits the namespace of the thread
//!    that spawned it, hence the other two exceptions.
//! 2. **Create a veth in one request with the peer placed straight in the target
//!    namespace** (done in `rnet-netlink`). There is never a moment where the
//!    peer sits in the host namespace under a name that can collide, and no
//!    second "move" step that can fail half way.
//! 3. **Every switch happens on a fresh `std::thread` that exits afterwards;
//!    nothing is switched back.** A thread that was switched and then "restored"
//!    is a trap: the restore can fail, a panic can skip it, and a pooled thread
//!    (a tokio worker, a blocking-pool thread, the main thread) would then run
//!    unrelated work in the wrong namespace. A thread that exits cannot leak its
//!    namespace, and with no restore path there is no restore failure.
//!    [`NetNs::run`], [`NetNs::spawn`], [`NetNs::output`] and
//!    [`NetNs::new_unnamed`] all follow this rule: each call starts one scoped
//!    OS thread (`std::thread::scope`, so closures may borrow) that is joined
//!    and gone when the call returns.
//! 4. **The current thread's namespace is `/proc/thread-self/ns/net`**, not
//!    `/proc/self/ns/net` (that one is the thread-group leader's, i.e. the main
//!    thread's, which differs inside a switched thread). **A user-supplied path
//!    (`CNI_NETNS`) is verified before use**: [`NetNs::open`] checks that the
//!    file is on `nsfs` (`fstatfs` magic `0x6e736673`) and that
//!    `ioctl(NS_GET_NSTYPE)` says `CLONE_NEWNET`, so a plain file, a directory,
//!    or a mount/uts/pid namespace gives a precise error instead of a late,
//!    confusing `EINVAL` from `setns` (or worse, work done in the wrong place).
//!    The path is opened with `O_PATH` first, so a FIFO or device path has no
//!    side effect, and only then reopened for real.
//! 5. **Never `fork()` after threads exist; a daemon forks first, then builds
//!    its runtime.** A forked child holds only the forking thread; locks held by
//!    other threads (malloc, stdio) stay locked forever. `std::process::Command`
//!    is fine because it execs straight away, and [`NetNs::spawn`] spawns from
//!    a thread that already entered the namespace instead of doing `setns` in a
//!    `pre_exec` hook (which would force a real `fork` and run non-trivial code
//!    in the child).
//!
//! # Lifetimes
//!
//! A network namespace lives as long as anything references it: a process in
//! it, an open fd, a bind mount (`/run/netns/NAME`), or a socket created in it.
//! [`NetNs::new_unnamed`] returns a namespace held only by its fd, so it
//! vanishes when the handle is dropped, even if the process is SIGKILLed; that
//! is what tests use. [`NetNs::create_named`] / [`NetNs::delete_named`] mirror
//! `ip netns add` / `ip netns del` for namespaces that must outlive the process.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::Mutex;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{MountPropagationFlags, UnmountFlags};
use rustix::thread::{LinkNameSpaceType, UnshareFlags};

mod container;
mod release;
pub use container::{spawn_container, spawn_in_process_namespaces};
pub use release::hold_until_exit;

/// Where `ip netns` keeps named namespaces (bind mounts of nsfs inodes).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// `statfs.f_type` of the nsfs filesystem that backs namespace files.
pub const NSFS_MAGIC: u64 = 0x6e73_6673;

/// The calling thread's own network namespace file.
pub const THREAD_SELF_NETNS: &str = "/proc/thread-self/ns/net";

/// Errors from opening, creating, entering or removing a network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    /// The path does not exist (`ENOENT`).
    #[error(
        "network namespace {path} does not exist; check the path (the container or namespace may already be gone)"
    )]
    NotFound {
        /// The path that was looked up.
        path: PathBuf,
    },
    /// The path exists but is not a namespace file at all.
    #[error(
        "{path} is not a namespace file: {reason}; pass a network namespace path such as /run/netns/NAME or /proc/PID/ns/net"
    )]
    NotANamespace {
        /// The offending path.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },
    /// The path is a namespace, but of another kind (mount, uts, pid, ...).
    #[error(
        "{path} is a namespace but not a network namespace; pass the net entry (e.g. /proc/PID/ns/net), not another ns/ entry"
    )]
    WrongKind {
        /// The offending path.
        path: PathBuf,
    },
    /// [`NetNs::create_named`] found the name taken (`EEXIST`).
    #[error(
        "named network namespace {path} already exists; delete it first (ip netns del NAME) or choose another name"
    )]
    AlreadyExists {
        /// The existing path under [`NETNS_RUN_DIR`].
        path: PathBuf,
    },
    /// A namespace name that cannot be a single file name under [`NETNS_RUN_DIR`].
    #[error("invalid network namespace name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A system call failed; `source` keeps the errno (see [`NsError::raw_os_error`]).
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path or namespace involved.
        context: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// The closure given to [`NetNs::run`] panicked; the panic message went to
    /// stderr through the panic hook. The thread is gone, nothing else is affected.
    #[error(
        "the code run inside a network namespace panicked (its message is on stderr); the namespace thread has exited"
    )]
    ThreadPanicked,
}

impl NsError {
    /// The errno behind this error, if it came from a system call.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            NsError::Io { source, .. } => source.raw_os_error(),
            NsError::NotFound { .. } => Some(libc::ENOENT),
            NsError::AlreadyExists { .. } => Some(libc::EEXIST),
            _ => None,
        }
    }

    fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        NsError::Io {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// Identity of a namespace: the nsfs inode (`st_dev`, `st_ino`). Two handles
/// refer to the same namespace exactly when their ids are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NsId {
    /// Device of the nsfs filesystem.
    pub dev: u64,
    /// Inode number, the number shown by `readlink /proc/PID/ns/net` as `net:[INO]`.
    pub ino: u64,
}

impl NsId {
    /// The id of the calling thread's network namespace, with one `stat` of
    /// `/proc/thread-self/ns/net` (which resolves to the namespace's nsfs
    /// inode) instead of opening and verifying a handle.
    pub fn current() -> Result<NsId, NsError> {
        let st = rustix::fs::stat(THREAD_SELF_NETNS)
            .map_err(|e| NsError::io(format!("stat of {THREAD_SELF_NETNS}"), e))?;
        // st_dev/st_ino are u64 on 64-bit Linux but narrower elsewhere.
        #[allow(clippy::useless_conversion)]
        Ok(NsId {
            dev: u64::from(st.st_dev),
            ino: u64::from(st.st_ino),
        })
    }
}

impl std::fmt::Display for NsId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "net:[{}]", self.ino)
    }
}

/// An open, verified network namespace.
///
/// Holding a `NetNs` keeps the namespace alive. Dropping it closes the fd;
/// unnamed namespaces then disappear once nothing else (process, socket,
/// bind mount) references them.
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
    path: Option<PathBuf>,
}

impl NetNs {
    /// Open `path` (e.g. `/run/netns/x`, `/proc/PID/ns/net`, `/proc/PID/fd/N`)
    /// and verify it is a *network* namespace: `fstatfs` `f_type == NSFS_MAGIC`
    /// and `ioctl(NS_GET_NSTYPE) == CLONE_NEWNET`.
    ///
    /// A plain file, directory or other non-nsfs file gives
    /// [`NsError::NotANamespace`], another namespace kind [`NsError::WrongKind`],
    /// a missing path [`NsError::NotFound`].
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs, NsError> {
        let path = path.as_ref();
        let fd = open_verified(path)?;
        Ok(NetNs {
            fd,
            path: stable_path(path),
        })
    }

    /// The calling thread's network namespace, from `/proc/thread-self/ns/net`
    /// (not `/proc/self`, which is the main thread's).
    pub fn current() -> Result<NetNs, NsError> {
        let fd = open_verified(Path::new(THREAD_SELF_NETNS))?;
        Ok(NetNs { fd, path: None })
    }

    /// Wrap an already open fd, verifying that it refers to a network namespace.
    pub fn from_fd(fd: OwnedFd) -> Result<NetNs, NsError> {
        let label = PathBuf::from(format!("fd {}", fd.as_raw_fd()));
        check_nsfs(fd.as_fd(), &label)?;
        check_nstype(fd.as_fd(), &label)?;
        Ok(NetNs { fd, path: None })
    }

    /// A new anonymous network namespace, held only by the returned fd: it
    /// vanishes when the handle is dropped, even if the process is SIGKILLed.
    ///
    /// A fresh thread unshares `CLONE_NEWNET`, opens its
    /// `/proc/thread-self/ns/net` and exits. Loopback is left as the kernel
    /// creates it (down); callers decide.
    pub fn new_unnamed() -> Result<NetNs, NsError> {
        let fd = on_fresh_thread("rnet-netns-new", || {
            unshare_net()?;
            open_verified(Path::new(THREAD_SELF_NETNS))
        })??;
        Ok(NetNs { fd, path: None })
    }

    /// Like `ip netns add NAME`: create [`NETNS_RUN_DIR`] if needed (made a
    /// shared mount as iproute2 does, so the bind mounts propagate), create
    /// `/run/netns/NAME` and bind-mount a new network namespace on it.
    ///
    /// Fails with [`NsError::AlreadyExists`] if the name is taken. On any later
    /// failure the half-made entry is removed again.
    pub fn create_named(name: &str) -> Result<NetNs, NsError> {
        validate_name(name)?;
        ensure_run_dir()?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        match rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => drop(fd),
            Err(Errno::EXIST) => return Err(NsError::AlreadyExists { path }),
            Err(e) => {
                return Err(NsError::io(
                    format!("creating the mount point {}", path.display()),
                    e,
                ));
            }
        }
        let made = on_fresh_thread("rnet-netns-add", || {
            unshare_net()?;
            rustix::mount::mount_bind(THREAD_SELF_NETNS, &path).map_err(|e| {
                NsError::io(
                    format!(
                        "bind-mounting a new network namespace on {}",
                        path.display()
                    ),
                    e,
                )
            })
        })
        .and_then(|r| r)
        .and_then(|()| NetNs::open(&path));
        match made {
            Ok(ns) => Ok(ns),
            Err(e) => {
                // Best effort: do not leave a half-made entry behind; the
                // original error is the one worth reporting.
                let _cleanup = delete_named_path(&path);
                Err(e)
            }
        }
    }

    /// Remove a named namespace (`umount2(MNT_DETACH)` + unlink), like
    /// `ip netns del NAME`. Succeeds if it is already gone. The namespace itself
    /// lives on while other references (processes, fds, sockets) exist.
    pub fn delete_named(name: &str) -> Result<(), NsError> {
        validate_name(name)?;
        delete_named_path(&Path::new(NETNS_RUN_DIR).join(name))
    }

    /// The namespace identity (`fstat` dev + ino).
    pub fn id(&self) -> Result<NsId, NsError> {
        let st = rustix::fs::fstat(&self.fd)
            .map_err(|e| NsError::io(format!("fstat of network namespace {}", self.label()), e))?;
        // st_dev/st_ino are u64 on 64-bit Linux but narrower elsewhere.
        #[allow(clippy::useless_conversion)]
        Ok(NsId {
            dev: u64::from(st.st_dev),
            ino: u64::from(st.st_ino),
        })
    }

    /// A path another process can open to reach this namespace: the path it was
    /// opened or created with, or for unnamed ones (and ones opened through
    /// `/proc/self` or `/proc/thread-self`) `/proc/<our pid>/fd/<fd>`, valid while
    /// this `NetNs` lives.
    pub fn path(&self) -> PathBuf {
        match &self.path {
            Some(p) => p.clone(),
            None => self.fd_path(),
        }
    }

    /// Duplicate the handle (a new fd on the same namespace, same path).
    pub fn try_clone(&self) -> Result<NetNs, NsError> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| NsError::io(format!("duplicating the fd of {}", self.label()), e))?;
        Ok(NetNs {
            fd,
            path: self.path.clone(),
        })
    }

    /// Run `f` on a fresh OS thread that has `setns()`'d into this namespace;
    /// the thread exits afterwards and is never reused. Scoped
    /// (`std::thread::scope`), so `f` may borrow. A panic inside `f` is returned
    /// as [`NsError::ThreadPanicked`] and not propagated.
    ///
    /// Use it to create sockets (they stay in this namespace and may be used
    /// from any thread afterwards) or to open files under `/proc/sys/net`.
    pub fn run<F, R>(&self, f: F) -> Result<R, NsError>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        std::thread::scope(|s| self.spawn_scoped(s, f)?.join())
    }

    /// Like [`NetNs::run`], but without waiting: `f` starts on a fresh OS
    /// thread (which enters this namespace and exits after `f`) inside the
    /// scope `s`, and the caller collects the result with [`NsTask::join`]
    /// when it needs it, so that its own work meanwhile overlaps with the
    /// thread's start, `setns` and `f`. The scope joins a task that is never
    /// joined explicitly.
    pub fn spawn_scoped<'scope, 'env, F, R>(
        &'scope self,
        s: &'scope std::thread::Scope<'scope, 'env>,
        f: F,
    ) -> Result<NsTask<'scope, R>, NsError>
    where
        F: FnOnce() -> R + Send + 'scope,
        R: Send + 'scope,
    {
        let fd = self.fd.as_fd();
        let handle = std::thread::Builder::new()
            .name("rnet-netns-run".to_owned())
            .spawn_scoped(s, move || {
                self.enter_this_thread(fd)?;
                Ok(f())
            })
            .map_err(|e| NsError::io("starting a thread to enter a network namespace", e))?;
        Ok(NsTask(handle))
    }

    /// Spawn a child process inside this namespace: the spawn happens on a fresh
    /// thread that has entered the namespace, and the child inherits it (no
    /// `setns` in `pre_exec`).
    pub fn spawn(&self, cmd: &mut Command) -> Result<Child, NsError> {
        let what = format!("{:?}", cmd.get_program());
        self.run(|| cmd.spawn())?.map_err(|e| {
            NsError::io(
                format!("spawning {what} in network namespace {}", self.label()),
                e,
            )
        })
    }

    /// Like [`NetNs::spawn`], then wait for the child and collect its output.
    pub fn output(&self, cmd: &mut Command) -> Result<Output, NsError> {
        let what = format!("{:?}", cmd.get_program());
        self.run(|| cmd.output())?.map_err(|e| {
            NsError::io(
                format!("running {what} in network namespace {}", self.label()),
                e,
            )
        })
    }

    fn enter_this_thread(&self, fd: BorrowedFd<'_>) -> Result<(), NsError> {
        rustix::thread::move_into_link_name_space(fd, Some(LinkNameSpaceType::Network))
            .map_err(|e| NsError::io(format!("setns into network namespace {}", self.label()), e))
    }

    fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.fd.as_raw_fd()
        ))
    }

    fn label(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => format!("(unnamed, {})", self.fd_path().display()),
        }
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for NetNs {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<NetNs> for OwnedFd {
    fn from(ns: NetNs) -> OwnedFd {
        ns.fd
    }
}

/// Work running on a thread inside a namespace ([`NetNs::spawn_scoped`]).
pub struct NsTask<'scope, R>(std::thread::ScopedJoinHandle<'scope, Result<R, NsError>>);

impl<R> NsTask<'_, R> {
    /// Waits for the thread; its result, or why it could not produce one (it
    /// could not enter the namespace, or it panicked:
    /// [`NsError::ThreadPanicked`]).
    pub fn join(self) -> Result<R, NsError> {
        self.0.join().map_err(|_| NsError::ThreadPanicked)?
    }
}

/// Is the calling thread in the same network namespace as `path`? (Compares
/// [`NsId`]s; `path` is verified like [`NetNs::open`].)
pub fn same_as_current(path: impl AsRef<Path>) -> Result<bool, NsError> {
    let other = NetNs::open(path)?;
    Ok(other.id()? == NetNs::current()?.id()?)
}

/// Run `f` on a new scoped OS thread and join it; a panic becomes
/// [`NsError::ThreadPanicked`].
fn on_fresh_thread<F, R>(name: &str, f: F) -> Result<R, NsError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn_scoped(s, f)
            .map_err(|e| NsError::io("starting a thread to enter a network namespace", e))?;
        handle.join().map_err(|_| NsError::ThreadPanicked)
    })
}

/// `unshare(CLONE_NEWNET)` on the calling (fresh, about to exit) thread.
fn unshare_net() -> Result<(), NsError> {
    // SAFETY: only CLONE_NEWNET is unshared; the hazard `unshare_unsafe` guards
    // against is CLONE_FILES (fd tables diverging between threads), which is
    // not requested. The thread is a fresh one that exits afterwards.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }.map_err(|e| {
        NsError::io(
            "unshare(CLONE_NEWNET) to create a network namespace (needs CAP_SYS_ADMIN: run as root)",
            e,
        )
    })
}

/// Open `path` without side effects (`O_PATH`), check it is on nsfs, reopen it
/// readable through `/proc/self/fd` (same inode, no second path lookup) and
/// check it is a network namespace.
fn open_verified(path: &Path) -> Result<OwnedFd, NsError> {
    let opath = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).map_err(
        |e| match e {
            Errno::NOENT => NsError::NotFound {
                path: path.to_path_buf(),
            },
            e => NsError::io(format!("opening network namespace {}", path.display()), e),
        },
    )?;
    check_nsfs(opath.as_fd(), path)?;
    let reopen = format!("/proc/self/fd/{}", opath.as_raw_fd());
    let fd = rustix::fs::open(&reopen, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| NsError::io(format!("opening network namespace {}", path.display()), e))?;
    check_nstype(fd.as_fd(), path)?;
    Ok(fd)
}

fn check_nsfs(fd: BorrowedFd<'_>, path: &Path) -> Result<(), NsError> {
    let sfs = rustix::fs::fstatfs(fd)
        .map_err(|e| NsError::io(format!("fstatfs of {}", path.display()), e))?;
    // f_type is signed on some targets; the magic fits in 32 bits either way.
    #[allow(clippy::unnecessary_cast, clippy::cast_sign_loss)]
    let ftype = sfs.f_type as u64;
    if ftype == NSFS_MAGIC {
        return Ok(());
    }
    let what = match rustix::fs::fstat(fd) {
        Ok(st) => match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::RegularFile => "a regular file",
            rustix::fs::FileType::Directory => "a directory",
            rustix::fs::FileType::Symlink => "a symbolic link",
            rustix::fs::FileType::Fifo => "a FIFO",
            rustix::fs::FileType::Socket => "a socket",
            rustix::fs::FileType::CharacterDevice => "a character device",
            rustix::fs::FileType::BlockDevice => "a block device",
            rustix::fs::FileType::Unknown => "a file of unknown type",
        },
        Err(_) => "a file",
    };
    Err(NsError::NotANamespace {
        path: path.to_path_buf(),
        reason: format!(
            "it is {what} on a filesystem with magic {ftype:#x}, not nsfs ({NSFS_MAGIC:#x})"
        ),
    })
}

fn check_nstype(fd: BorrowedFd<'_>, path: &Path) -> Result<(), NsError> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only returns an int; `fd` is
    // a valid open descriptor borrowed for the duration of the call.
    let kind = unsafe { libc::ioctl(fd.as_raw_fd(), libc::NS_GET_NSTYPE) };
    if kind < 0 {
        return Err(NsError::io(
            format!(
                "ioctl(NS_GET_NSTYPE) on {} (needs Linux 4.11 or later)",
                path.display()
            ),
            io::Error::last_os_error(),
        ));
    }
    if kind != libc::CLONE_NEWNET {
        return Err(NsError::WrongKind {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// The path to remember for [`NetNs::path`]: `None` for paths that mean
/// something else in another thread or process (`/proc/self/...`,
/// `/proc/thread-self/...`); relative paths are made absolute.
fn stable_path(path: &Path) -> Option<PathBuf> {
    if path.starts_with("/proc/self") || path.starts_with("/proc/thread-self") {
        return None;
    }
    std::path::absolute(path).ok()
}

fn validate_name(name: &str) -> Result<(), NsError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it must not be \".\" or \"..\"")
    } else if name.contains('/') {
        Some("it must not contain '/'")
    } else if name.contains('\0') {
        Some("it must not contain a NUL byte")
    } else if name.len() > 255 {
        Some("it is longer than 255 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NsError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Serialises the one-time setup of [`NETNS_RUN_DIR`] within this process, so
/// concurrent `create_named` calls do not stack two self bind mounts.
static RUN_DIR_SETUP: Mutex<()> = Mutex::new(());

/// `mkdir -p /run/netns` and make it a shared mount point, as iproute2 does:
/// try `MS_SHARED|MS_REC`; if it is not a mount point yet (`EINVAL`), bind it
/// onto itself once and retry.
fn ensure_run_dir() -> Result<(), NsError> {
    use std::os::unix::fs::DirBuilderExt;
    let _guard = RUN_DIR_SETUP.lock().unwrap_or_else(|p| p.into_inner());
    let dir = Path::new(NETNS_RUN_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| NsError::io(format!("creating {NETNS_RUN_DIR}"), e))?;
    let mut bound = false;
    loop {
        match rustix::mount::mount_change(
            dir,
            MountPropagationFlags::SHARED | MountPropagationFlags::REC,
        ) {
            Ok(()) => return Ok(()),
            Err(Errno::INVAL) if !bound => {
                rustix::mount::mount_bind_recursive(dir, dir).map_err(|e| {
                    NsError::io(format!("bind-mounting {NETNS_RUN_DIR} onto itself"), e)
                })?;
                bound = true;
            }
            Err(e) => {
                return Err(NsError::io(
                    format!("making {NETNS_RUN_DIR} a shared mount"),
                    e,
                ));
            }
        }
    }
}

fn delete_named_path(path: &Path) -> Result<(), NsError> {
    match rustix::mount::unmount(path, UnmountFlags::DETACH) {
        // EINVAL: exists but is not a mount point (half-made or already unmounted).
        Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => {}
        Err(e) => {
            return Err(NsError::io(
                format!("unmounting network namespace {}", path.display()),
                e,
            ));
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NsError::io(
            format!("removing network namespace file {}", path.display()),
            e,
        )),
    }
}

#[cfg(test)]
mod tests;
