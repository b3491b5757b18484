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
}
