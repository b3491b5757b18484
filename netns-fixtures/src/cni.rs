//! Running a CNI plugin executable exactly as a runtime does.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rnet_netns::NetNs;

use crate::{FixtureError, Result, ensure_lab_ns, io_err};

/// PATH given to plugins when the test process has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Builder for one plugin invocation.
///
/// The child's environment is cleared except `PATH` and the `CNI_*` variables
/// set here (plus any [`CniCall::env`] extras), so tests are hermetic; unset
/// fields are simply absent (useful for negative tests). The child runs inside
/// [`CniCall::in_ns`] (spawned from a thread that entered it); `run` refuses to
/// start without one or inside the machine's own namespace.
/// [`crate::Lab::cni`] presets the lab host namespace.
#[derive(Debug, Clone)]
pub struct CniCall<'a> {
    plugin: PathBuf,
    command: Option<String>,
    container_id: Option<String>,
    netns: Option<PathBuf>,
    ifname: Option<String>,
    args: Option<String>,
    cni_path: Option<OsString>,
    stdin: Vec<u8>,
    env: Vec<(OsString, OsString)>,
    ns: Option<&'a NetNs>,
    timeout: Duration,
}

impl<'a> CniCall<'a> {
    /// A call of the executable at `plugin` (see [`crate::plugin_path`]).
    pub fn new(plugin: impl Into<PathBuf>) -> Self {
        CniCall {
            plugin: plugin.into(),
            command: None,
            container_id: None,
            netns: None,
            ifname: None,
            args: None,
            cni_path: None,
            stdin: Vec::new(),
            env: Vec::new(),
            ns: None,
            timeout: Duration::from_secs(30),
        }
    }

    /// `CNI_COMMAND` (ADD, DEL, CHECK, GC, STATUS, VERSION).
    pub fn command(mut self, c: &str) -> Self {
        self.command = Some(c.to_owned());
        self
    }

    /// `CNI_CONTAINERID`.
    pub fn container_id(mut self, id: &str) -> Self {
        self.container_id = Some(id.to_owned());
        self
    }

    /// `CNI_NETNS`.
    pub fn netns(mut self, path: impl AsRef<Path>) -> Self {
        self.netns = Some(path.as_ref().to_path_buf());
        self
    }

    /// `CNI_IFNAME`.
    pub fn ifname(mut self, name: &str) -> Self {
        self.ifname = Some(name.to_owned());
        self
    }

    /// `CNI_ARGS` (`K=V;K2=V2`).
    pub fn args(mut self, args: &str) -> Self {
        self.args = Some(args.to_owned());
        self
    }

    /// `CNI_PATH`: directories joined with `:`.
    pub fn cni_path<I, P>(mut self, dirs: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<Path>,
    {
        let mut joined = OsString::new();
        for (i, d) in dirs.into_iter().enumerate() {
            if i > 0 {
                joined.push(":");
            }
            joined.push(d.as_ref().as_os_str());
        }
        self.cni_path = Some(joined);
        self
    }

    /// The config bytes written to the plugin's stdin.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = bytes.into();
        self
    }

    /// An extra environment variable (set after the `CNI_*` ones, so it can
    /// override them).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// The namespace the plugin process runs in (the runtime's "host").
    pub fn in_ns(mut self, ns: &'a NetNs) -> Self {
        self.ns = Some(ns);
        self
    }

    /// Kill the plugin if it runs longer than this (default 30 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Run the plugin, feed stdin, collect stdout/stderr and the exit status.
    /// A non-zero exit is not an error here (see [`CniOutput::ok_json`]).
    pub fn run(&self) -> Result<CniOutput> {
        let Some(ns) = self.ns else {
            return Err(FixtureError::Missing(format!(
                "CniCall for {} has no namespace to run in; call .in_ns(lab.host()) (or use Lab::cni)",
                self.plugin.display()
            )));
        };
        ensure_lab_ns(ns, &format!("run plugin {}", self.plugin.display()))?;

        let mut cmd = Command::new(&self.plugin);
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let vars = [
            ("CNI_COMMAND", self.command.as_ref().map(OsString::from)),
            (
                "CNI_CONTAINERID",
                self.container_id.as_ref().map(OsString::from),
            ),
            (
                "CNI_NETNS",
                self.netns.as_ref().map(|p| p.as_os_str().to_os_string()),
            ),
            ("CNI_IFNAME", self.ifname.as_ref().map(OsString::from)),
            ("CNI_ARGS", self.args.as_ref().map(OsString::from)),
            ("CNI_PATH", self.cni_path.clone()),
        ];
        for (k, v) in vars {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }

        // Own process group, so a timeout kills the plugin and anything it
        // started (and only that).
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let mut child = ns.spawn(&mut cmd)?;
        let what = self.plugin.display().to_string();
        // Pipes are served on their own (detached) threads so a chatty plugin
        // cannot deadlock against us, and a daemon it leaves behind holding
        // stdout cannot hang us: after exit we wait only a short grace period
        // for EOF.
        if let Some(mut w) = child.stdin.take() {
            let input = self.stdin.clone();
            // EPIPE (plugin did not read stdin) is not our problem.
            let _ = std::thread::Builder::new()
                .name("cni-stdin".into())
                .spawn(move || w.write_all(&input));
        }
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        let mut readers = 0;
        if let Some(r) = child.stdout.take() {
            readers += usize::from(drain(r, out.clone(), done_tx.clone()));
        }
        if let Some(r) = child.stderr.take() {
            readers += usize::from(drain(r, err.clone(), done_tx.clone()));
        }
        drop(done_tx);
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Ok(st),
                Ok(None) if Instant::now() >= deadline => {
                    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                        let _ =
                            rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(FixtureError::Timeout {
                        what: format!("plugin {what} to exit (killed its process group)"),
                        timeout: self.timeout,
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => break Err(io_err(format!("waiting for plugin {what}"), e)),
            }
        };
        let grace = Instant::now() + Duration::from_secs(1);
        for _ in 0..readers {
            let left = grace.saturating_duration_since(Instant::now());
            if done_rx.recv_timeout(left).is_err() {
                break;
            }
        }
        let out = std::mem::take(&mut *out.lock().unwrap_or_else(|p| p.into_inner()));
        let err = std::mem::take(&mut *err.lock().unwrap_or_else(|p| p.into_inner()));
        let status = status?;
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .unwrap_or_else(|| -status.signal().unwrap_or(0));
        Ok(CniOutput {
            plugin: self.plugin.clone(),
            status: code,
            stdout: out,
            stderr: String::from_utf8_lossy(&err).into_owned(),
        })
    }
}

/// Copy `r` into `buf` on a detached thread; signal `done` at EOF. Returns
/// whether the thread started.
fn drain(
    mut r: impl Read + Send + 'static,
    buf: Arc<Mutex<Vec<u8>>>,
    done: std::sync::mpsc::Sender<()>,
) -> bool {
    std::thread::Builder::new()
        .name("cni-pipe".into())
        .spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match r.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => buf
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            let _ = done.send(());
        })
        .is_ok()
}

/// What a plugin run produced.
#[derive(Debug, Clone)]
pub struct CniOutput {
    /// The executable that ran.
    pub plugin: PathBuf,
    /// Exit code; negative when killed by a signal (minus the signal number).
    pub status: i32,
    /// Raw stdout.
    pub stdout: Vec<u8>,
    /// Stderr, lossily decoded.
    pub stderr: String,
}

impl CniOutput {
    /// Stdout, lossily decoded.
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Parse stdout as JSON, whatever the exit status (a failed plugin prints
    /// its error object there).
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.stdout).map_err(|source| FixtureError::BadJson {
            plugin: self.plugin.clone(),
            source,
            stdout: self.stdout_str(),
        })
    }

    /// Error with stderr and stdout if the plugin exited non-zero.
    pub fn ok(&self) -> Result<&Self> {
        if self.status == 0 {
            Ok(self)
        } else {
            Err(FixtureError::PluginFailed {
                plugin: self.plugin.clone(),
                status: self.status,
                stderr: self.stderr.clone(),
                stdout: self.stdout_str(),
            })
        }
    }

    /// [`CniOutput::ok`], then [`CniOutput::json`].
    pub fn ok_json(&self) -> Result<serde_json::Value> {
        self.ok()?.json()
    }
}
