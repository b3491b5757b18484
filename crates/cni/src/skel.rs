//! The plugin side of the protocol: read `CNI_*` and stdin, validate, call the
//! plugin, print the result or the error JSON on stdout.
//!
//! [`dispatch`] takes the environment, stdin and stdout as arguments so the whole
//! protocol is unit-testable without root; [`run`] wires it to the process.

use crate::args::{CniArgs, validate_container_id, validate_ifname};
use crate::error::{CniError, code};
use crate::types::{Attachment, CniResult, NetConf, valid_attachments};
use crate::version::{Version, supported_list, version_info_json};
use std::io::{Read, Write};
use std::path::PathBuf;

/// A CNI verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// ADD.
    Add,
    /// DEL.
    Del,
    /// CHECK.
    Check,
    /// STATUS.
    Status,
    /// GC.
    Gc,
    /// VERSION.
    Version,
}

impl Command {
    /// Parses `CNI_COMMAND`.
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }
}

/// Everything a plugin is called with.
#[derive(Debug, Clone)]
pub struct CmdArgs {
    /// The verb.
    pub command: Command,
    /// `CNI_CONTAINERID` (empty for STATUS/GC).
    pub container_id: String,
    /// `CNI_NETNS`, if set.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (empty for STATUS/GC).
    pub ifname: String,
    /// `CNI_ARGS`, parsed.
    pub args: CniArgs,
    /// `CNI_ARGS` as given.
    pub args_raw: String,
    /// `CNI_PATH`, split.
    pub path: Vec<PathBuf>,
    /// `CNI_PATH` as given.
    pub path_raw: String,
    /// stdin as given (passed on unchanged to delegated plugins).
    pub stdin: Vec<u8>,
    /// stdin, parsed.
    pub conf: NetConf,
}

/// A CNI plugin. Each method gets the validated arguments; the dispatcher prints
/// results in the configuration's version and errors as JSON.
pub trait Plugin {
    /// ADD: attach and return the result.
    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError>;
    /// DEL: detach; idempotent.
    fn del(&self, args: &CmdArgs) -> Result<(), CniError>;
    /// CHECK: verify the attachment matches `prevResult`.
    fn check(&self, args: &CmdArgs) -> Result<(), CniError>;
    /// STATUS: ready to serve ADD? Default: ready.
    fn status(&self, _args: &CmdArgs) -> Result<(), CniError> {
        Ok(())
    }
    /// GC: remove everything belonging to attachments not in `valid`. Default: nothing to do.
    fn gc(&self, _args: &CmdArgs, _valid: &[Attachment]) -> Result<(), CniError> {
        Ok(())
    }
}

/// Runs the protocol against the given environment and streams; returns the exit status.
pub fn dispatch(
    plugin: &dyn Plugin,
    about: &str,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let get = |k: &str| env(k).unwrap_or_default();
    let command_raw = get("CNI_COMMAND");
    if command_raw.is_empty() && !about.is_empty() {
        let _ = writeln!(stderr, "{about}");
        let _ = writeln!(
            stderr,
            "CNI protocol versions supported: {}",
            supported_list().replace('"', "").replace(' ', ", ")
        );
        return 0;
    }
    let mut version_for_error: Option<Version> = None;
    let outcome = run_command(plugin, &command_raw, &get, stdin, &mut version_for_error);
    match outcome {
        Ok(Some(out)) => {
            if writeln!(stdout, "{out}")
                .and_then(|()| stdout.flush())
                .is_err()
            {
                let _ = writeln!(stderr, "rnet: cannot write the result to stdout");
                return 1;
            }
            0
        }
        Ok(None) => 0,
        Err(e) => {
            let _ = writeln!(
                stdout,
                "{}",
                e.to_json(version_for_error.map(Version::as_str))
            );
            let _ = stdout.flush();
            let _ = writeln!(stderr, "rnet: {command_raw}: {e}");
            1
        }
    }
}

fn run_command(
    plugin: &dyn Plugin,
    command_raw: &str,
    get: &dyn Fn(&str) -> String,
    stdin: &mut dyn Read,
    version_for_error: &mut Option<Version>,
) -> Result<Option<String>, CniError> {
    let command = Command::parse(command_raw);
    // Required variables per verb, as the spec lists them.
    let required: &[&str] = match command {
        Some(Command::Add | Command::Check) => &[
            "CNI_COMMAND",
            "CNI_CONTAINERID",
            "CNI_NETNS",
            "CNI_IFNAME",
            "CNI_PATH",
        ],
        Some(Command::Del) => &["CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
        Some(Command::Gc) => &["CNI_COMMAND", "CNI_PATH"],
        _ => &["CNI_COMMAND"],
    };
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|k| get(k).is_empty())
        .collect();
    if !missing.is_empty() {
        return Err(CniError::invalid_env(format!(
            "required env variables [{}] missing",
            missing.join(",")
        )));
    }
    let Some(command) = command else {
        return Err(CniError::invalid_env(format!(
            "unknown CNI_COMMAND: {command_raw}; expected ADD, DEL, CHECK, STATUS, GC or VERSION"
        )));
    };
    if command == Command::Version {
        return Ok(Some(version_info_json()));
    }
    // Room for a typical configuration, so that it arrives in one read
    // rather than in reads that double from 32 bytes.
    let mut stdin_data = Vec::with_capacity(16 * 1024);
    stdin
        .read_to_end(&mut stdin_data)
        .map_err(|e| CniError::io(format!("error reading from stdin: {e}")))?;
    // Decode the version first so errors can carry it, then the whole config.
    if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice(&stdin_data) {
        if let Some(v) = m.get("cniVersion").and_then(|v| v.as_str()) {
            *version_for_error = Version::parse(v).ok();
        }
    }
    let conf = NetConf::parse(&stdin_data)?;
    let container_id = get("CNI_CONTAINERID");
    let ifname = get("CNI_IFNAME");
    if matches!(command, Command::Add | Command::Del | Command::Check) {
        validate_container_id(&container_id)?;
        validate_ifname(&ifname)?;
    }
    match command {
        Command::Check if !conf.version.has_check() => {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "config version {} does not allow CHECK; CHECK needs cniVersion 0.4.0 or later",
                    conf.version
                ),
            ));
        }
        Command::Status | Command::Gc if !conf.version.has_status_gc() => {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "config version {} does not allow {}; it needs cniVersion 1.1.0 or later",
                    conf.version,
                    command.as_str()
                ),
            ));
        }
        _ => {}
    }
    let args_raw = get("CNI_ARGS");
    let path_raw = get("CNI_PATH");
    let netns = get("CNI_NETNS");
    let cmd = CmdArgs {
        command,
        container_id,
        netns: (!netns.is_empty()).then(|| PathBuf::from(netns)),
        ifname,
        args: CniArgs::parse(&args_raw)?,
        args_raw,
        path: std::env::split_paths(&path_raw)
            .filter(|p| !p.as_os_str().is_empty())
            .collect(),
        path_raw,
        stdin: stdin_data,
        conf,
    };
    match command {
        Command::Add => {
            let result = plugin.add(&cmd)?;
            Ok(Some(result.to_json(cmd.conf.version)))
        }
        Command::Del => plugin.del(&cmd).map(|()| None),
        Command::Check => plugin.check(&cmd).map(|()| None),
        Command::Status => plugin.status(&cmd).map(|()| None),
        Command::Gc => {
            let valid = valid_attachments(&cmd.conf.raw)?;
            plugin.gc(&cmd, &valid).map(|()| None)
        }
        Command::Version => Ok(Some(version_info_json())),
    }
}

/// Runs the plugin against the process environment and exits.
pub fn run(plugin: &dyn Plugin, about: &str) -> ! {
    let env = |k: &str| std::env::var(k).ok();
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let code = dispatch(
        plugin,
        about,
        &env,
        &mut stdin.lock(),
        &mut stdout.lock(),
        &mut stderr.lock(),
    );
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::types::{Interface, IpConfig};
    use std::cell::RefCell;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Fake {
        calls: RefCell<Vec<(Command, Vec<Attachment>)>>,
    }

    impl Plugin for Fake {
        fn add(&self, a: &CmdArgs) -> Result<CniResult, CniError> {
            self.calls.borrow_mut().push((a.command, vec![]));
            Ok(CniResult {
                interfaces: vec![Interface {
                    name: a.ifname.clone(),
                    ..Interface::default()
                }],
                ips: vec![IpConfig {
                    interface: Some(0),
                    address: "10.0.0.2/24".parse().unwrap(),
                    gateway: None,
                }],
                ..CniResult::default()
            })
        }
        fn del(&self, a: &CmdArgs) -> Result<(), CniError> {
            self.calls.borrow_mut().push((a.command, vec![]));
            Ok(())
        }
        fn check(&self, a: &CmdArgs) -> Result<(), CniError> {
            self.calls.borrow_mut().push((a.command, vec![]));
            Err(CniError::invalid_config("boom"))
        }
        fn gc(&self, a: &CmdArgs, valid: &[Attachment]) -> Result<(), CniError> {
            self.calls.borrow_mut().push((a.command, valid.to_vec()));
            Ok(())
        }
    }

    fn call(env: &[(&str, &str)], stdin: &str) -> (i32, serde_json::Value, Fake) {
        let map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let f = Fake::default();
        let mut out = Vec::new();
        let mut err = Vec::new();
        let rc = dispatch(
            &f,
            "about",
            &|k| map.get(k).cloned(),
            &mut stdin.as_bytes(),
            &mut out,
            &mut err,
        );
        let v = serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null);
        (rc, v, f)
    }

    const FULL: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];

    fn with(cmd: &str) -> Vec<(&'static str, &str)> {
        let mut v: Vec<(&str, &str)> = FULL.to_vec();
        v[0].1 = cmd;
        v
    }

    #[test]
    fn version() {
        let (rc, v, _) = call(&[("CNI_COMMAND", "VERSION")], "");
        assert_eq!(rc, 0);
        assert_eq!(v["cniVersion"], "1.1.0");
    }

    #[test]
    fn add_answers_in_version_asked() {
        for (ver, has_version_field) in [("0.3.1", true), ("1.0.0", false)] {
            let (rc, v, _) = call(FULL, &format!(r#"{{"cniVersion":"{ver}","name":"n"}}"#));
            assert_eq!(rc, 0);
            assert_eq!(v["cniVersion"], ver);
            assert_eq!(v["ips"][0].get("version").is_some(), has_version_field);
        }
        let (_, v, _) = call(FULL, r#"{"cniVersion":"0.2.0","name":"n"}"#);
        assert_eq!(v["ip4"]["ip"], "10.0.0.2/24");
    }

    #[test]
    fn error_codes() {
        let (rc, v, _) = call(&[("CNI_COMMAND", "ADD")], "{}");
        assert_eq!((rc, v["code"].as_u64()), (1, Some(4)));
        let (_, v, _) = call(&with("BOGUS"), "{}");
        assert_eq!(v["code"], 4);
        let (_, v, _) = call(FULL, "not json");
        assert_eq!(v["code"], 6);
        let (_, v, _) = call(FULL, r#"{"cniVersion":"1.0.0"}"#);
        assert_eq!(v["code"], 7);
        let (_, v, _) = call(FULL, r#"{"cniVersion":"3.0.0","name":"n"}"#);
        assert_eq!(v["code"], 1);
        let mut long = with("ADD");
        long[3].1 = "averyveryverylongname";
        let (_, v, _) = call(&long, r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!(v["code"], 4);
        let (_, v, _) = call(&with("CHECK"), r#"{"cniVersion":"0.3.1","name":"n"}"#);
        assert_eq!(v["code"], 1);
        let (_, v, _) = call(&with("CHECK"), r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!(v["code"], 7);
        assert_eq!(v["cniVersion"], "1.0.0");
        let (_, v, _) = call(&with("GC"), r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!(v["code"], 1);
        let mut bad_args = with("ADD");
        bad_args.push(("CNI_ARGS", "junk"));
        let (_, v, _) = call(&bad_args, r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!(v["code"], 4);
    }

    #[test]
    fn del_without_netns() {
        let env = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/x"),
        ];
        let (rc, _, f) = call(&env, r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!(rc, 0);
        assert_eq!(f.calls.borrow()[0].0, Command::Del);
    }

    #[test]
    fn gc_gets_attachments() {
        let env = [("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")];
        let (rc, _, f) = call(
            &env,
            r#"{"cniVersion":"1.1.0","name":"n","cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
        );
        assert_eq!(rc, 0);
        assert_eq!(f.calls.borrow()[0].1.len(), 1);
    }

    #[test]
    fn about_without_command() {
        let (rc, v, _) = call(&[], "");
        assert_eq!(rc, 0);
        assert!(v.is_null());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(cmd in "(ADD|DEL|CHECK|GC|STATUS|VERSION|x)", id in ".{0,20}", ifn in ".{0,20}",
                        args in ".{0,30}", stdin in ".{0,200}") {
            let env = [("CNI_COMMAND", cmd.as_str()), ("CNI_CONTAINERID", id.as_str()), ("CNI_NETNS", "/x"),
                       ("CNI_IFNAME", ifn.as_str()), ("CNI_PATH", "/x"), ("CNI_ARGS", args.as_str())];
            let (rc, v, _) = call(&env, &stdin);
            proptest::prop_assert!(rc == 0 || v["code"].as_u64().is_some());
        }

        #[test]
        fn json_configs_never_panic(ver in "(0\\.[1-4]\\.[01]|1\\.[01]\\.0|junk)", prev in proptest::option::of("\\{.{0,60}\\}")) {
            let stdin = match prev {
                Some(p) => format!(r#"{{"cniVersion":"{ver}","name":"n","prevResult":{p}}}"#),
                None => format!(r#"{{"cniVersion":"{ver}","name":"n"}}"#),
            };
            let (rc, v, _) = call(FULL, &stdin);
            proptest::prop_assert!(rc == 0 || v["code"].as_u64().is_some());
        }
    }
}
