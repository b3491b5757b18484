//! Executing plugins: finding a binary in `CNI_PATH`, running it with CNI env and
//! stdin, and reading its result or error from stdout. Used by IPAM delegation
//! (plugin side) and by the runtime side.

use crate::args::validate_plugin_type;
use crate::error::{CniError, code};
use crate::skel::{CmdArgs, Command};
use crate::types::CniResult;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

/// Finds plugin `plugin_type` in `dirs` (first match wins).
pub fn find_plugin(plugin_type: &str, dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    validate_plugin_type(plugin_type)?;
    for d in dirs {
        let p = d.join(plugin_type);
        if let Ok(meta) = std::fs::metadata(&p) {
            use std::os::unix::fs::PermissionsExt;
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(p);
            }
        }
    }
    Err(CniError::new(
        code::PLUGIN_NOT_FOUND,
        format!(
            "failed to find plugin {plugin_type:?} in path [{}]; install it there or fix CNI_PATH",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ),
    ))
}

/// The CNI variables of one call.
#[derive(Debug, Clone, Default)]
pub struct CniEnv {
    /// `CNI_COMMAND`.
    pub command: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`.
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: String,
    /// `CNI_PATH`.
    pub path: String,
}

impl CniEnv {
    fn pairs(&self) -> [(&'static str, &str); 6] {
        [
            ("CNI_COMMAND", &self.command),
            ("CNI_CONTAINERID", &self.container_id),
            ("CNI_NETNS", &self.netns),
            ("CNI_IFNAME", &self.ifname),
            ("CNI_ARGS", &self.args),
            ("CNI_PATH", &self.path),
        ]
    }
}

/// Measurement aid: when `RNET_TRACE` is set in this process, gives the
/// plugin about to be spawned by `cmd` that variable and `RNET_TRACE_T0`
/// (now, in nanoseconds since the epoch), so that rnet plugins time their
/// phases from the spawn (see `rnet_plugin::Trace`).
pub fn pass_trace_clock(cmd: &mut Process) {
    if let Some(f) = std::env::var_os("RNET_TRACE") {
        cmd.env("RNET_TRACE", f);
        if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            cmd.env("RNET_TRACE_T0", now.as_nanos().to_string());
        }
    }
}

/// Runs the plugin at `path` with the process environment plus `env`, feeding
/// `stdin`. Returns stdout on success; on a non-zero exit, the plugin's error
/// (decoded from stdout) with its code kept.
pub fn exec_plugin(path: &Path, env: &CniEnv, stdin: &[u8]) -> Result<Vec<u8>, CniError> {
    let mut cmd = Process::new(path);
    for (k, v) in env.pairs() {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    pass_trace_clock(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| {
        CniError::new(
            code::PLUGIN_NOT_FOUND,
            format!("cannot execute plugin {}: {e}", path.display()),
        )
    })?;
    if let Some(mut input) = child.stdin.take() {
        // A plugin may exit without reading stdin (VERSION); a broken pipe is fine.
        let _ = input.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::io(format!("waiting for plugin {}: {e}", path.display())))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    if let Ok(e) = serde_json::from_slice::<CniError>(&out.stdout) {
        return Err(e);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(CniError::new(
        code::PLUGIN_OUTPUT,
        format!(
            "plugin {name} failed ({}) without a CNI error on stdout",
            out.status
        ),
    )
    .with_details(format!(
        "stdout: {}; stderr: {}",
        String::from_utf8_lossy(&out.stdout).trim(),
        stderr.trim()
    )))
}

/// Delegates `command` to the plugin `plugin_type` (the IPAM plugin, usually) with
/// the caller's own env and stdin, as the spec describes. ADD returns the result.
pub fn delegate(
    command: Command,
    args: &CmdArgs,
    plugin_type: &str,
) -> Result<Option<CniResult>, CniError> {
    let path = find_plugin(plugin_type, &args.path)?;
    let env = CniEnv {
        command: command.as_str().to_owned(),
        container_id: args.container_id.clone(),
        netns: args
            .netns
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        ifname: args.ifname.clone(),
        args: args.args_raw.clone(),
        path: args.path_raw.clone(),
    };
    let out = exec_plugin(&path, &env, &args.stdin)
        .map_err(|e| e.context(format!("delegated {} to {plugin_type}", command.as_str())))?;
    if command != Command::Add {
        return Ok(None);
    }
    CniResult::parse_bytes(&out, args.conf.version)
        .map(Some)
        .map_err(|e| e.context(format!("result of {plugin_type}")))
}

/// A plugin linked into the calling executable, usable in place of an exec.
pub struct LocalPlugin<'a> {
    /// The executable name it is installed under (e.g. `rnet-ipam`).
    pub name: &'a str,
    /// The implementation.
    pub plugin: &'a dyn crate::skel::Plugin,
}

/// Is `path` (found in `CNI_PATH`) the executable `name`, directly or through
/// links? (A compat install lays `host-local` out as a link to `rnet-ipam`.)
fn is_installed_as(path: &std::path::Path, name: &str) -> bool {
    if path.file_name().is_some_and(|f| f == name) {
        return true;
    }
    if let Ok(real) = std::fs::canonicalize(path) {
        if real.file_name().is_some_and(|f| f == name) {
            return true;
        }
    }
    // A hard link: same inode as `name` beside it.
    use std::os::unix::fs::MetadataExt;
    let sibling = path.with_file_name(name);
    match (std::fs::metadata(path), std::fs::metadata(&sibling)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// [`delegate`], but when the plugin that `CNI_PATH` resolves `plugin_type` to
/// is one of `local` (the same program, linked into this executable), it is
/// called in-process with the same arguments instead of executed: the same
/// code on the same input, without a process start (about 1 ms here). Any
/// other plugin is executed as the spec describes.
pub fn delegate_local(
    command: Command,
    args: &CmdArgs,
    plugin_type: &str,
    local: &[LocalPlugin<'_>],
) -> Result<Option<CniResult>, CniError> {
    let path = find_plugin(plugin_type, &args.path)?;
    let Some(lp) = local.iter().find(|l| is_installed_as(&path, l.name)) else {
        return delegate(command, args, plugin_type);
    };
    let mut sub = args.clone();
    sub.command = command;
    let ctx = || format!("delegated {} to {plugin_type}", command.as_str());
    match command {
        Command::Add => lp.plugin.add(&sub).map(Some).map_err(|e| e.context(ctx())),
        Command::Del => lp
            .plugin
            .del(&sub)
            .map(|()| None)
            .map_err(|e| e.context(ctx())),
        Command::Check => lp
            .plugin
            .check(&sub)
            .map(|()| None)
            .map_err(|e| e.context(ctx())),
        Command::Status => lp
            .plugin
            .status(&sub)
            .map(|()| None)
            .map_err(|e| e.context(ctx())),
        Command::Gc => {
            let valid = crate::types::valid_attachments(&sub.conf.raw)?;
            lp.plugin
                .gc(&sub, &valid)
                .map(|()| None)
                .map_err(|e| e.context(ctx()))
        }
        Command::Version => delegate(command, args, plugin_type),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn find_and_exec() {
        let d = tempfile::tempdir().unwrap();
        script(
            d.path(),
            "ok",
            "cat >/dev/null; echo \"{\\\"cmd\\\":\\\"$CNI_COMMAND\\\"}\"",
        );
        script(
            d.path(),
            "bad",
            "echo '{\"code\":11,\"msg\":\"busy\"}'; exit 1",
        );
        script(d.path(), "ugly", "echo junk; echo oops >&2; exit 2");
        let dirs = vec![PathBuf::from("/nonexistent"), d.path().to_path_buf()];
        let p = find_plugin("ok", &dirs).unwrap();
        let env = CniEnv {
            command: "ADD".into(),
            ..CniEnv::default()
        };
        let out = exec_plugin(&p, &env, b"{}").unwrap();
        assert!(String::from_utf8_lossy(&out).contains("ADD"));
        let e = exec_plugin(&find_plugin("bad", &dirs).unwrap(), &env, b"").unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (11, "busy"));
        let e = exec_plugin(&find_plugin("ugly", &dirs).unwrap(), &env, b"").unwrap_err();
        assert_eq!(e.code, code::PLUGIN_OUTPUT);
        assert!(e.details.contains("oops"));
        assert_eq!(
            find_plugin("missing", &dirs).unwrap_err().code,
            code::PLUGIN_NOT_FOUND
        );
        assert_eq!(find_plugin("../ok", &dirs).unwrap_err().code, 7);
    }

    struct Local;
    impl crate::skel::Plugin for Local {
        fn add(&self, _: &CmdArgs) -> Result<CniResult, CniError> {
            Ok(CniResult::default())
        }
        fn del(&self, _: &CmdArgs) -> Result<(), CniError> {
            Err(CniError::new(42, "in-process"))
        }
        fn check(&self, _: &CmdArgs) -> Result<(), CniError> {
            Ok(())
        }
    }

    fn cmd_args(dir: &Path) -> CmdArgs {
        CmdArgs {
            command: Command::Add,
            container_id: "c".into(),
            netns: None,
            ifname: "eth0".into(),
            args: crate::args::CniArgs::default(),
            args_raw: String::new(),
            path: vec![dir.to_path_buf()],
            path_raw: dir.display().to_string(),
            stdin: br#"{"cniVersion":"1.0.0","name":"n"}"#.to_vec(),
            conf: crate::types::NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n"}"#).unwrap(),
        }
    }

    #[test]
    fn local_delegation_only_for_the_same_program() {
        let d = tempfile::tempdir().unwrap();
        let marker = d.path().join("executed");
        let body = format!(
            "touch {}; echo '{{\"code\":7,\"msg\":\"executed\"}}'; exit 1",
            marker.display()
        );
        script(d.path(), "rnet-fake", &body);
        script(d.path(), "other", &body);
        std::os::unix::fs::symlink(d.path().join("rnet-fake"), d.path().join("host-local"))
            .unwrap();
        let args = cmd_args(d.path());
        let local = [LocalPlugin {
            name: "rnet-fake",
            plugin: &Local,
        }];
        for ty in ["rnet-fake", "host-local"] {
            let e = delegate_local(Command::Del, &args, ty, &local).unwrap_err();
            assert_eq!(e.code, 42, "{ty} must run in-process: {e}");
        }
        assert!(!marker.exists());
        let e = delegate_local(Command::Del, &args, "other", &local).unwrap_err();
        assert_eq!(
            (e.code, marker.exists()),
            (7, true),
            "other plugins are executed"
        );
        let e = delegate_local(Command::Del, &args, "missing", &local).unwrap_err();
        assert_eq!(e.code, code::PLUGIN_NOT_FOUND);
    }
}
