//! The resolver's lifecycle: one per state directory, started on demand,
//! detached, ready when it says so, gone when idle.
//!
//! Files in the state directory (created 0700):
//! `rnet-dns.lock` (flock held for the process's life), `rnet-dns.pid`,
//! `control.sock` (0600), `registry.json` + `registry.journal`,
//! `rnet-dns.log` (the daemon's stderr), `start.lock` (serialises starters).
//!
//! Starting ([`Launcher`]): connect to the control socket; if nobody
//! listens, take `start.lock`, try again (another starter may have just
//! finished), else spawn `rnet-dns run --foreground --detach` with stdin from
//! /dev/null, stderr appended to the log and stdout a pipe on which the daemon
//! writes one line, `ready <pid>` once its control socket listens (or
//! `error <message>`). No sleep anywhere on this path, and the daemon never
//! forks (so there is nothing to do before the runtime is built; the starter
//! spawns it, it calls `setsid` itself, and it is reparented when the starter
//! exits). The daemon's stdout is then pointed at /dev/null, so the plugin's
//! caller, which reads the plugin's own stdout to EOF, is never held up.
//!
//! A second start is refused cleanly: the lock is taken with
//! `LOCK_EX|LOCK_NB`; when it is held and the holder answers `ping`, the new
//! process prints `error` naming the running pid and exits 2. When it is held
//! by a resolver that no longer answers (it is in its idle exit), the new one
//! waits for the lock (up to 5 s), since the old one is about to go.
//!
//! Idle exit: when the last record is removed and nothing was registered for
//! [`DaemonConfig::idle_exit`], the daemon marks itself closing (requests get
//! a "closing" reply, which [`Launcher::request`] answers by starting a new
//! resolver), removes its socket and pid file, and exits.

use crate::control::{Client, MAX_LINE, Reply, Request, SOCKET_NAME};
use crate::error::DnsError;
use crate::server::{Control, ServerConfig, Shared, reply_line};
use crate::snapshot::Snapshot;
use crate::store::Store;
use rustix::fs::FlockOperation;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/run/rnet/dns";
/// Lock file name.
pub const LOCK_FILE: &str = "rnet-dns.lock";
/// Pid file name.
pub const PID_FILE: &str = "rnet-dns.pid";
/// Log file name.
pub const LOG_FILE: &str = "rnet-dns.log";

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// State directory.
    pub state_dir: PathBuf,
    /// Serving limits, port, default upstreams (empty: the host's resolv.conf).
    pub server: ServerConfig,
    /// Exit this long after the registry became empty (None: never).
    pub idle_exit: Option<Duration>,
    /// Call `setsid` (started by a launcher).
    pub detach: bool,
}

fn ensure_dir(dir: &Path) -> Result<(), DnsError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| DnsError::io(format!("creating state directory {}", dir.display()), e))
}

fn read_pid(dir: &Path) -> u32 {
    std::fs::read_to_string(dir.join(PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn acquire_lock(dir: &Path) -> Result<File, DnsError> {
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| DnsError::io(format!("opening {}", path.display()), e))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(f),
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let live = Client::connect(dir).and_then(|mut c| c.request(&Request::Ping));
                if let Ok(r) = live {
                    return Err(DnsError::AlreadyRunning {
                        state_dir: dir.to_owned(),
                        pid: r.pid.unwrap_or(0),
                    });
                }
                if Instant::now() > deadline {
                    return Err(DnsError::AlreadyRunning {
                        state_dir: dir.to_owned(),
                        pid: read_pid(dir),
                    });
                }
                // The holder is in its idle exit: it goes within milliseconds.
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                return Err(DnsError::io(
                    format!("locking {}", path.display()),
                    e.into(),
                ));
            }
        }
    }
}

/// The host's resolvers from `/etc/resolv.conf` (port 53).
pub fn resolv_conf_upstreams() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    rnet_cni::Dns::from_resolv_conf(&text)
        .nameservers
        .iter()
        .filter_map(|s| parse_upstream(s).ok())
        .collect()
}

/// Parses an upstream: `IP`, `IP:PORT` or `[IPv6]:PORT` (port 53 by default).
pub fn parse_upstream(s: &str) -> Result<SocketAddr, DnsError> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        DnsError::Invalid(format!(
            "upstream {s:?} is not an address: use IP, IP:PORT or [IPv6]:PORT"
        ))
    })
}

/// Runs the resolver until shutdown or idle exit. `ready` is called once:
/// with the pid when the control socket listens, or with the error that
/// stopped the start.
pub fn run(
    cfg: DaemonConfig,
    ready: &mut dyn FnMut(Result<u32, &DnsError>),
) -> Result<(), DnsError> {
    let r = run_inner(cfg, ready);
    if let Err(e) = &r {
        ready(Err(e));
    }
    r
}

fn run_inner(
    mut cfg: DaemonConfig,
    ready: &mut dyn FnMut(Result<u32, &DnsError>),
) -> Result<(), DnsError> {
    let dir = cfg.state_dir.clone();
    ensure_dir(&dir)?;
    let _lock = acquire_lock(&dir)?;
    if cfg.detach {
        // Already a group leader only if run by hand; then keep the session.
        let _ignored = rustix::process::setsid();
    }
    std::fs::write(dir.join(PID_FILE), format!("{}\n", std::process::id()))
        .map_err(|e| DnsError::io(format!("writing {}", dir.join(PID_FILE).display()), e))?;
    if cfg.server.default_upstreams.is_empty() {
        cfg.server.default_upstreams = resolv_conf_upstreams();
    }
    // The index is the resolver's only copy of the registry; the files are
    // streamed into it.
    let mut index = crate::snapshot::Index::new(&cfg.server.default_upstreams);
    let store = Store::open(&dir, &mut index)?;
    // No fork anywhere: the runtime is built in the process the launcher spawned.
    // One blocking thread: control requests run one at a time under the
    // state lock anyway, and every extra thread is a stack (and, without
    // MALLOC_ARENA_MAX, a malloc arena) the resolver keeps resident.
    let rt = tokio::runtime::Builder::new_current_thread()
        .thread_name("rnet-dns-rt")
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .map_err(|e| DnsError::io("building the async runtime", e))?;
    let result = rt.block_on(serve(cfg, store, index, ready));
    let _ = std::fs::remove_file(dir.join(PID_FILE));
    eprintln!("rnet-dns: pid {} stopped", std::process::id());
    // Listener threads are blocked in recvfrom; the process exit ends them.
    rt.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn serve(
    cfg: DaemonConfig,
    store: Store,
    index: crate::snapshot::Index,
    ready: &mut dyn FnMut(Result<u32, &DnsError>),
) -> Result<(), DnsError> {
    let dir = cfg.state_dir.clone();
    let shared = Shared::new(
        cfg.server.clone(),
        Snapshot::empty(&cfg.server.default_upstreams),
        tokio::runtime::Handle::current(),
    );
    let control = Control::new(shared, index, store);
    let sock_path = dir.join(SOCKET_NAME);
    // We hold the lock: whatever socket file is there is stale.
    let _ = std::fs::remove_file(&sock_path);
    let listener = tokio::net::UnixListener::bind(&sock_path)
        .map_err(|e| DnsError::io(format!("listening on {}", sock_path.display()), e))?;
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| DnsError::io(format!("chmod 0600 {}", sock_path.display()), e))?;
    eprintln!(
        "rnet-dns: pid {} serving state directory {} ({} records, upstreams {:?})",
        std::process::id(),
        dir.display(),
        control.records(),
        cfg.server.default_upstreams
    );
    ready(Ok(std::process::id()));
    schedule_idle_check(&control, cfg.idle_exit);
    loop {
        tokio::select! {
            acc = listener.accept() => {
                let Ok((stream, _)) = acc else { continue };
                let c = control.clone();
                let idle = cfg.idle_exit;
                tokio::spawn(async move { control_conn(c, stream, idle).await });
            }
            () = control.stop.notified() => break,
        }
    }
    let _ = std::fs::remove_file(&sock_path);
    Ok(())
}

fn schedule_idle_check(control: &Arc<Control>, idle: Option<Duration>) {
    let Some(idle) = idle else { return };
    let (seen, empty) = control.idle_state();
    if !empty {
        return;
    }
    let c = control.clone();
    tokio::spawn(async move {
        tokio::time::sleep(idle).await;
        if c.idle_exit(seen) {
            eprintln!("rnet-dns: no names registered for {idle:?}; exiting");
            c.stop.notify_one();
        }
    });
}

fn peer_allowed(stream: &tokio::net::UnixStream) -> Result<(), String> {
    let cred = rustix::net::sockopt::socket_peercred(stream)
        .map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
    let me = rustix::process::geteuid();
    if cred.uid.is_root() || cred.uid == me {
        Ok(())
    } else {
        Err(format!(
            "uid {} may not control this resolver (only root and uid {})",
            cred.uid.as_raw(),
            me.as_raw()
        ))
    }
}

async fn control_conn(
    control: Arc<Control>,
    stream: tokio::net::UnixStream,
    idle: Option<Duration>,
) {
    let refused = peer_allowed(&stream).err();
    let (r, mut w) = stream.into_split();
    if let Some(msg) = refused {
        eprintln!("rnet-dns: control: {msg}");
        let _ = write_reply(
            &mut w,
            &Reply {
                ok: false,
                kind: Some(crate::error::ErrorKind::Invalid),
                error: Some(msg),
                ..Reply::default()
            },
        )
        .await;
        return;
    }
    let mut lines = tokio::io::BufReader::new(r);
    loop {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(60),
            (&mut lines)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut buf),
        )
        .await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
        let (line, stop) = match serde_json::from_slice::<Request>(&buf) {
            Ok(req) => {
                let c = control.clone();
                match tokio::task::spawn_blocking(move || c.handle_line(req)).await {
                    Ok(x) => x,
                    Err(e) => (
                        reply_line(&Reply::err(&DnsError::Protocol(format!(
                            "handler failed: {e}"
                        )))),
                        false,
                    ),
                }
            }
            Err(e) => (
                reply_line(&Reply::err(&DnsError::Protocol(format!(
                    "bad request line: {e}"
                )))),
                false,
            ),
        };
        let _ = w.write_all(&line).await;
        drop(line);
        if stop {
            control.stop.notify_one();
            return;
        }
        schedule_idle_check(&control, idle);
    }
}

async fn write_reply(w: &mut tokio::net::unix::OwnedWriteHalf, r: &Reply) -> std::io::Result<()> {
    w.write_all(&reply_line(r)).await
}

/// Starts resolvers on demand and talks to them (the plugin's side).
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The `rnet-dns` executable.
    pub exe: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// DNS port for a resolver this launcher starts.
    pub port: u16,
    /// Default upstreams for a resolver this launcher starts (empty: resolv.conf).
    pub upstreams: Vec<SocketAddr>,
    /// Idle exit for a resolver this launcher starts.
    pub idle_exit: Option<Duration>,
    /// How long to wait for readiness.
    pub timeout: Duration,
}

impl Launcher {
    /// A launcher with defaults (port 53, resolv.conf upstreams, idle exit 30 s).
    pub fn new(exe: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Launcher {
        Launcher {
            exe: exe.into(),
            state_dir: state_dir.into(),
            port: 53,
            upstreams: Vec::new(),
            idle_exit: Some(Duration::from_secs(30)),
            timeout: Duration::from_secs(10),
        }
    }

    /// Connects to the running resolver, starting one if nobody listens.
    pub fn connect(&self) -> Result<Client, DnsError> {
        if let Ok(c) = Client::connect(&self.state_dir) {
            return Ok(c);
        }
        ensure_dir(&self.state_dir)?;
        let lpath = self.state_dir.join("start.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lpath)
            .map_err(|e| DnsError::io(format!("opening {}", lpath.display()), e))?;
        rustix::fs::flock(&lock, FlockOperation::LockExclusive)
            .map_err(|e| DnsError::io(format!("locking {}", lpath.display()), e.into()))?;
        if let Ok(c) = Client::connect(&self.state_dir) {
            return Ok(c);
        }
        match self.start() {
            Ok(_) => {}
            Err(DnsError::AlreadyRunning { .. }) => {}
            Err(e) => return Err(e),
        }
        // Started (or found running) a moment ago and gone already: killed;
        // the caller may start another one.
        Client::connect(&self.state_dir).map_err(|e| match &e {
            DnsError::Io { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                ) =>
            {
                DnsError::Closing
            }
            _ => e,
        })
    }

    /// Sends `req`, starting a resolver if needed; a resolver in its idle
    /// exit, or killed during the request or its start-up, is replaced by a
    /// new one (up to five tries).
    pub fn request(&self, req: &Request) -> Result<Reply, DnsError> {
        let mut last = DnsError::Closing;
        for _ in 0..5 {
            match self.connect().and_then(|mut c| c.request(req)) {
                Err(DnsError::Closing) => last = DnsError::Closing,
                r => return r,
            }
            // The old resolver removes its socket on its way out; the next
            // connect starts a new one (which waits for the old one's lock).
        }
        Err(last)
    }

    /// Connects only if a resolver is running (for DEL/GC with nothing to do).
    pub fn connect_existing(&self) -> Option<Client> {
        Client::connect(&self.state_dir).ok()
    }

    /// Spawns a resolver and waits for its readiness line; returns its pid.
    pub fn start(&self) -> Result<u32, DnsError> {
        ensure_dir(&self.state_dir)?;
        let fail = |reason: String| DnsError::Start {
            exe: self.exe.clone(),
            reason,
        };
        let log_path = self.state_dir.join(LOG_FILE);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(|e| DnsError::io(format!("opening {}", log_path.display()), e))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("run")
            .arg("--foreground")
            .arg("--detach")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--port")
            .arg(self.port.to_string());
        for u in &self.upstreams {
            cmd.arg("--upstream").arg(u.to_string());
        }
        match self.idle_exit {
            Some(d) => cmd.arg("--idle-exit").arg(format!("{}", d.as_millis())),
            None => cmd.arg("--idle-exit").arg("0"),
        };
        // Few malloc arenas: the resolver has a handful of threads and most
        // memory is the shared index; per-thread arenas only add RSS.
        cmd.env("MALLOC_ARENA_MAX", "2");
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
        let mut child = cmd
            .spawn()
            .map_err(|e| fail(format!("cannot execute it: {e}")))?;
        let Some(mut out) = child.stdout.take() else {
            return Err(fail("no stdout pipe".into()));
        };
        let line = read_line_timeout(&mut out, self.timeout);
        match line {
            Ok(l) if l.starts_with("ready") => {
                let pid = l
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(child.id());
                // Not waited for: it outlives us (reparented when we exit).
                Ok(pid)
            }
            Ok(l) if l.starts_with("error already-running") => {
                let _ = child.wait();
                Err(DnsError::AlreadyRunning {
                    state_dir: self.state_dir.clone(),
                    pid: read_pid(&self.state_dir),
                })
            }
            other => {
                let _ = child.kill();
                let status = child.wait();
                // Killed from outside before it was ready (not a failure of
                // its own): the caller may start another one.
                if other.as_ref().is_ok_and(|l| l.is_empty())
                    && status.is_ok_and(|st| {
                        std::os::unix::process::ExitStatusExt::signal(&st).is_some()
                    })
                {
                    return Err(DnsError::Closing);
                }
                let said = match other {
                    Ok(l) if !l.is_empty() => l.trim_start_matches("error ").to_owned(),
                    Ok(_) => "it exited before it was ready".to_owned(),
                    Err(e) => e,
                };
                Err(fail(format!(
                    "{said}; see {} ({})",
                    log_path.display(),
                    log_tail(&log_path)
                )))
            }
        }
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

fn read_line_timeout(out: &mut std::process::ChildStdout, t: Duration) -> Result<String, String> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let deadline = Instant::now() + t;
    let mut buf = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("not ready after {t:?}"));
        }
        let ts = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(out, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(format!("waiting for readiness: {e}")),
        }
        let mut chunk = [0u8; 512];
        let n = out
            .read(&mut chunk)
            .map_err(|e| format!("reading readiness: {e}"))?;
        if n == 0 {
            return Ok(String::from_utf8_lossy(&buf).trim().to_owned());
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
        if let Some(pos) = buf.iter().position(|&c| c == b'\n') {
            return Ok(String::from_utf8_lossy(buf.get(..pos).unwrap_or(&[])).to_string());
        }
        if buf.len() > 4096 {
            return Err("garbled readiness line".into());
        }
    }
}

/// The daemon side of readiness: write the line to stdout, then point
/// stdout at /dev/null so the pipe closes.
pub fn signal_ready(r: Result<u32, &DnsError>) {
    let line = match r {
        Ok(pid) => format!("ready {pid}\n"),
        Err(DnsError::AlreadyRunning { pid, .. }) => {
            format!("error already-running pid {pid}\n")
        }
        Err(e) => format!("error {}\n", e.to_string().replace('\n', " ")),
    };
    let mut so = std::io::stdout();
    let _ = so.write_all(line.as_bytes()).and_then(|()| so.flush());
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
    }
}
