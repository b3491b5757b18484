//! The runtime side of the protocol: what libcni does for a container runtime.
//!
//! [`Runtime`] runs a network configuration list (conflist) for one attachment:
//! ADD through the plugins in order, chaining each result into the next plugin's
//! `prevResult`; CHECK in order and DEL in reverse order with the cached ADD
//! result; GC and STATUS. It injects `runtimeConfig` only into plugins that
//! declare the capability, and caches results in libcni's format
//! (`<cache>/results/<net>-<container>-<ifname>`, kind `cniCacheV1`).
//! The `rnet` CLI, the tests and the benchmark drive plugins through this.

use crate::args::{CniArgs, validate_container_id, validate_ifname, validate_network_name};
use crate::error::{CniError, code};
use crate::exec::{CniEnv, exec_plugin, find_plugin};
use crate::types::{Attachment, CniResult};
use crate::version::Version;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// A parsed network configuration list.
#[derive(Debug, Clone)]
pub struct ConfList {
    /// Network name.
    pub name: String,
    /// The version used to talk to the plugins.
    pub version: Version,
    /// `disableCheck`.
    pub disable_check: bool,
    /// `disableGC`.
    pub disable_gc: bool,
    /// Plugin configurations, in order.
    pub plugins: Vec<Map<String, Value>>,
    /// The original bytes.
    pub bytes: Vec<u8>,
}

impl ConfList {
    /// Parses a `.conflist` document.
    pub fn parse(bytes: &[u8]) -> Result<ConfList, CniError> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| CniError::decode(format!("conflist is not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| CniError::decode("conflist must be a JSON object"))?;
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if name.is_empty() {
            return Err(CniError::invalid_config("conflist has no \"name\""));
        }
        validate_network_name(&name)?;
        let mut version = Version::parse(
            obj.get("cniVersion")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        )?;
        if let Some(list) = obj.get("cniVersions").and_then(Value::as_array) {
            // The highest version both sides know.
            if let Some(best) = list
                .iter()
                .filter_map(Value::as_str)
                .filter_map(|s| Version::parse(s).ok())
                .max()
            {
                version = best;
            }
        }
        let plugins: Vec<Map<String, Value>> = match obj.get("plugins") {
            Some(Value::Array(list)) => list
                .iter()
                .map(|p| {
                    p.as_object().cloned().ok_or_else(|| {
                        CniError::invalid_config("each entry of \"plugins\" must be an object")
                    })
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(CniError::invalid_config(format!(
                    "conflist {name:?} has no \"plugins\" list"
                )));
            }
        };
        if plugins.is_empty() {
            return Err(CniError::invalid_config(format!(
                "conflist {name:?} has an empty \"plugins\" list"
            )));
        }
        for p in &plugins {
            crate::args::validate_plugin_type(p.get("type").and_then(Value::as_str).unwrap_or(""))?;
        }
        let flag = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
        Ok(ConfList {
            name,
            version,
            disable_check: flag("disableCheck"),
            disable_gc: flag("disableGC"),
            plugins,
            bytes: bytes.to_vec(),
        })
    }

    /// Reads a `.conflist`, or a single-plugin `.conf`/`.json` (wrapped in a list).
    pub fn load(path: &Path) -> Result<ConfList, CniError> {
        let bytes = std::fs::read(path)
            .map_err(|e| CniError::io(format!("cannot read {}: {e}", path.display())))?;
        let is_list = path.extension().is_some_and(|e| e == "conflist");
        if is_list {
            return Self::parse(&bytes);
        }
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| CniError::decode(format!("{} is not valid JSON: {e}", path.display())))?;
        let mut obj = v.as_object().cloned().unwrap_or_default();
        let mut list = Map::new();
        for k in ["name", "cniVersion"] {
            if let Some(x) = obj.get(k) {
                list.insert(k.into(), x.clone());
            }
        }
        obj.remove("cniVersion");
        list.insert("plugins".into(), Value::Array(vec![Value::Object(obj)]));
        let bytes = serde_json::to_vec(&Value::Object(list))
            .map_err(|e| CniError::internal(e.to_string()))?;
        Self::parse(&bytes)
    }

    /// Loads every network in `dir` (`.conflist`, `.conf`, `.json`), sorted by file name.
    pub fn load_dir(dir: &Path) -> Result<Vec<(PathBuf, ConfList)>, CniError> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CniError::io(format!("cannot read {}: {e}", dir.display()))),
        };
        let mut paths: Vec<PathBuf> = rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "conflist" || e == "conf" || e == "json")
            })
            .collect();
        paths.sort();
        let mut out = Vec::new();
        for p in paths {
            let list = Self::load(&p)?;
            out.push((p, list));
        }
        Ok(out)
    }
}

/// One attachment's runtime parameters.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConf {
    /// Container ID.
    pub container_id: String,
    /// Network namespace path.
    pub netns: Option<PathBuf>,
    /// Interface name inside the container.
    pub ifname: String,
    /// `CNI_ARGS` pairs.
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, `ips`, `mac`, `aliases`, ...).
    pub capability_args: Map<String, Value>,
}

#[derive(Serialize, Deserialize)]
struct CacheEntry {
    kind: String,
    #[serde(rename = "containerId")]
    container_id: String,
    config: String,
    #[serde(rename = "ifName")]
    ifname: String,
    #[serde(rename = "networkName")]
    network_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    netns: String,
    #[serde(rename = "cniArgs", default, skip_serializing_if = "Vec::is_empty")]
    cni_args: Vec<[String; 2]>,
    #[serde(
        rename = "capabilityArgs",
        default,
        skip_serializing_if = "Map::is_empty"
    )]
    capability_args: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<Value>,
}

/// What the runtime knows about an attachment from its cache.
#[derive(Debug, Clone)]
pub struct CachedAttachment {
    /// Network name.
    pub network: String,
    /// The runtime parameters it was added with.
    pub rt: RuntimeConf,
    /// The final ADD result (in the list's version).
    pub result: Option<Value>,
    /// The conflist it was added with.
    pub config: Vec<u8>,
}

/// Drives plugins as a container runtime does.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Directories searched for plugin binaries (`CNI_PATH`).
    pub plugin_dirs: Vec<PathBuf>,
    /// The result cache directory (libcni's default is `/var/lib/cni`).
    pub cache_dir: PathBuf,
}

impl Runtime {
    /// A runtime searching `plugin_dirs` and caching under `cache_dir`.
    pub fn new(plugin_dirs: Vec<PathBuf>, cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            plugin_dirs,
            cache_dir: cache_dir.into(),
        }
    }

    fn cni_path(&self) -> String {
        std::env::join_paths(&self.plugin_dirs)
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn cache_path(&self, net: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.cache_dir
            .join("results")
            .join(format!("{net}-{container_id}-{ifname}"))
    }

    /// Builds the config one plugin gets: the plugin's object plus `name`,
    /// `cniVersion`, `prevResult` and the `runtimeConfig` of the capabilities it declares.
    fn plugin_conf(
        list: &ConfList,
        plugin: &Map<String, Value>,
        prev: Option<&Value>,
        rt: &RuntimeConf,
        extra: &[(&str, Value)],
    ) -> Result<Vec<u8>, CniError> {
        let mut conf = plugin.clone();
        conf.insert("name".into(), Value::String(list.name.clone()));
        conf.insert(
            "cniVersion".into(),
            Value::String(list.version.as_str().into()),
        );
        if let Some(p) = prev {
            conf.insert("prevResult".into(), p.clone());
        }
        let mut rc = Map::new();
        if let Some(Value::Object(caps)) = plugin.get("capabilities") {
            for (cap, on) in caps {
                if on.as_bool() == Some(true) {
                    if let Some(v) = rt.capability_args.get(cap) {
                        rc.insert(cap.clone(), v.clone());
                    }
                }
            }
        }
        if !rc.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(rc));
        }
        for (k, v) in extra {
            conf.insert((*k).into(), v.clone());
        }
        serde_json::to_vec(&Value::Object(conf)).map_err(|e| CniError::internal(e.to_string()))
    }

    fn env(&self, command: &str, rt: &RuntimeConf) -> CniEnv {
        CniEnv {
            command: command.into(),
            container_id: rt.container_id.clone(),
            netns: rt
                .netns
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            ifname: rt.ifname.clone(),
            args: CniArgs::from_pairs(rt.args.clone()).render(),
            path: self.cni_path(),
        }
    }

    fn validate(list: &ConfList, rt: &RuntimeConf) -> Result<(), CniError> {
        validate_network_name(&list.name)?;
        validate_container_id(&rt.container_id)?;
        validate_ifname(&rt.ifname)
    }

    fn run_plugin(
        &self,
        command: &str,
        list: &ConfList,
        plugin: &Map<String, Value>,
        prev: Option<&Value>,
        rt: &RuntimeConf,
        extra: &[(&str, Value)],
    ) -> Result<Vec<u8>, CniError> {
        let ty = plugin.get("type").and_then(Value::as_str).unwrap_or("");
        let path = find_plugin(ty, &self.plugin_dirs)?;
        let stdin = Self::plugin_conf(list, plugin, prev, rt, extra)?;
        exec_plugin(&path, &self.env(command, rt), &stdin)
    }

    /// ADD the attachment through every plugin; caches and returns the final result.
    /// On failure nothing is rolled back automatically (as libcni): callers DEL.
    pub fn add(&self, list: &ConfList, rt: &RuntimeConf) -> Result<CniResult, CniError> {
        Self::validate(list, rt)?;
        let mut prev: Option<Value> = None;
        for plugin in &list.plugins {
            let out = self.run_plugin("ADD", list, plugin, prev.as_ref(), rt, &[])?;
            let v: Value = serde_json::from_slice(&out).map_err(|e| {
                CniError::decode(format!(
                    "plugin {} printed a result that is not JSON: {e}",
                    plugin.get("type").and_then(Value::as_str).unwrap_or("?")
                ))
            })?;
            // Normalise into the list's version, as libcni converts results.
            let r = CniResult::parse(&v, list.version)?;
            prev = Some(r.to_value(list.version));
        }
        let final_value = prev.unwrap_or(Value::Null);
        self.write_cache(list, rt, &final_value)?;
        CniResult::parse(&final_value, list.version)
    }

    /// CHECK the attachment (skipped when the list sets `disableCheck`).
    pub fn check(&self, list: &ConfList, rt: &RuntimeConf) -> Result<(), CniError> {
        Self::validate(list, rt)?;
        if !list.version.has_check() {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "configuration version {} does not support CHECK",
                    list.version
                ),
            ));
        }
        if list.disable_check {
            return Ok(());
        }
        let cached = self
            .cached(&list.name, &rt.container_id, &rt.ifname)?
            .and_then(|c| c.result);
        let Some(prev) = cached else {
            return Err(CniError::new(
                code::UNKNOWN_CONTAINER,
                format!(
                    "no cached result for {}/{} on network {}: was it added by this runtime?",
                    rt.container_id, rt.ifname, list.name
                ),
            ));
        };
        for plugin in &list.plugins {
            self.run_plugin("CHECK", list, plugin, Some(&prev), rt, &[])?;
        }
        Ok(())
    }

    /// DEL the attachment through every plugin in reverse order, with the cached
    /// ADD result as `prevResult`; removes the cache entry on success.
    pub fn del(&self, list: &ConfList, rt: &RuntimeConf) -> Result<(), CniError> {
        Self::validate(list, rt)?;
        let cached = self
            .cached(&list.name, &rt.container_id, &rt.ifname)
            .ok()
            .flatten();
        let prev = if list.version.has_check() {
            cached.as_ref().and_then(|c| c.result.clone())
        } else {
            None
        };
        for plugin in list.plugins.iter().rev() {
            self.run_plugin("DEL", list, plugin, prev.as_ref(), rt, &[])?;
        }
        let p = self.cache_path(&list.name, &rt.container_id, &rt.ifname);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CniError::io(format!("cannot remove {}: {e}", p.display()))),
        }
    }

    /// STATUS of every plugin (1.1.0 lists only; older lists are always ready).
    pub fn status(&self, list: &ConfList) -> Result<(), CniError> {
        if !list.version.has_status_gc() {
            return Ok(());
        }
        let rt = RuntimeConf::default();
        for plugin in &list.plugins {
            self.run_plugin("STATUS", list, plugin, None, &rt, &[])?;
        }
        Ok(())
    }

    /// GC: DEL every cached attachment of this network that is not in `valid`, then
    /// (1.1.0 lists without `disableGC`) send GC with the valid list to every plugin.
    /// Goes on past errors and returns them all.
    pub fn gc(&self, list: &ConfList, valid: &[Attachment]) -> Result<(), Vec<CniError>> {
        let mut errors = Vec::new();
        match self.cached_attachments(Some(&list.name)) {
            Ok(cached) => {
                for c in cached {
                    let a = Attachment {
                        container_id: c.rt.container_id.clone(),
                        ifname: c.rt.ifname.clone(),
                    };
                    if valid.contains(&a) {
                        continue;
                    }
                    let cached_list = ConfList::parse(&c.config).unwrap_or_else(|_| list.clone());
                    if let Err(e) = self.del(&cached_list, &c.rt) {
                        errors.push(e.context(format!(
                            "GC: DEL of stale attachment {}/{}",
                            a.container_id, a.ifname
                        )));
                    }
                }
            }
            Err(e) => errors.push(e),
        }
        if list.version.has_status_gc() && !list.disable_gc {
            let attachments = serde_json::to_value(valid).unwrap_or(Value::Array(vec![]));
            let extra = [
                ("cni.dev/valid-attachments", attachments.clone()),
                ("cni.dev/attachments", attachments),
            ];
            let rt = RuntimeConf::default();
            for plugin in &list.plugins {
                if let Err(e) = self.run_plugin("GC", list, plugin, None, &rt, &extra) {
                    errors.push(e);
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Runs VERSION against plugin `plugin_type`.
    pub fn plugin_version(&self, plugin_type: &str) -> Result<Value, CniError> {
        let path = find_plugin(plugin_type, &self.plugin_dirs)?;
        let env = CniEnv {
            command: "VERSION".into(),
            path: self.cni_path(),
            ..CniEnv::default()
        };
        let out = exec_plugin(&path, &env, b"{\"cniVersion\":\"1.1.0\"}")?;
        serde_json::from_slice(&out)
            .map_err(|e| CniError::decode(format!("VERSION output of {plugin_type}: {e}")))
    }

    fn write_cache(
        &self,
        list: &ConfList,
        rt: &RuntimeConf,
        result: &Value,
    ) -> Result<(), CniError> {
        let entry = CacheEntry {
            kind: "cniCacheV1".into(),
            container_id: rt.container_id.clone(),
            config: base64::engine::general_purpose::STANDARD.encode(&list.bytes),
            ifname: rt.ifname.clone(),
            network_name: list.name.clone(),
            netns: rt
                .netns
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            cni_args: rt
                .args
                .iter()
                .map(|(k, v)| [k.clone(), v.clone()])
                .collect(),
            capability_args: rt.capability_args.clone(),
            result: Some(result.clone()),
        };
        let path = self.cache_path(&list.name, &rt.container_id, &rt.ifname);
        let bytes = serde_json::to_vec(&entry).map_err(|e| CniError::internal(e.to_string()))?;
        write_atomic(&path, &bytes)
    }

    /// The cached ADD of one attachment, if any.
    pub fn cached(
        &self,
        net: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<CachedAttachment>, CniError> {
        let p = self.cache_path(net, container_id, ifname);
        match std::fs::read(&p) {
            Ok(b) => Self::decode_cache(&b).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CniError::io(format!("cannot read {}: {e}", p.display()))),
        }
    }

    /// Decodes one cache file (libcni's format: the conflist base64-encoded,
    /// the runtime parameters and the final result).
    pub fn decode_cache(bytes: &[u8]) -> Result<CachedAttachment, CniError> {
        let e: CacheEntry = serde_json::from_slice(bytes)
            .map_err(|e| CniError::decode(format!("bad cache entry: {e}")))?;
        let config = base64::engine::general_purpose::STANDARD
            .decode(e.config.as_bytes())
            .map_err(|e| CniError::decode(format!("bad cached config: {e}")))?;
        Ok(CachedAttachment {
            network: e.network_name,
            rt: RuntimeConf {
                container_id: e.container_id,
                netns: (!e.netns.is_empty()).then(|| PathBuf::from(e.netns)),
                ifname: e.ifname,
                args: e.cni_args.into_iter().map(|[k, v]| (k, v)).collect(),
                capability_args: e.capability_args,
            },
            result: e.result,
            config,
        })
    }

    /// Every cached attachment (of network `net`, if given).
    pub fn cached_attachments(&self, net: Option<&str>) -> Result<Vec<CachedAttachment>, CniError> {
        let dir = self.cache_dir.join("results");
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CniError::io(format!("cannot read {}: {e}", dir.display()))),
        };
        let mut out = Vec::new();
        for ent in rd.filter_map(Result::ok) {
            let Ok(bytes) = std::fs::read(ent.path()) else {
                continue;
            };
            let Ok(c) = Self::decode_cache(&bytes) else {
                continue;
            };
            if net.is_none_or(|n| n == c.network) {
                out.push(c);
            }
        }
        Ok(out)
    }
}

/// Writes `bytes` to `path` atomically (temp file in the same directory, then rename),
/// creating parent directories with mode 0700.
///
/// The directory is opened once (`O_NOFOLLOW`: a symlink planted there would
/// redirect root's writes elsewhere, so it is refused) and the temporary
/// file is created and renamed relative to it: five system calls when the
/// directory exists, which is every write but a directory's first.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CniError> {
    use rustix::fs::{AtFlags, Mode, OFlags};
    use std::io::Write;
    use std::os::unix::fs::DirBuilderExt;
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) => (d, n),
        _ => {
            return Err(CniError::internal(format!(
                "{} has no parent directory or file name",
                path.display()
            )));
        }
    };
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let refused = |e: rustix::io::Errno| -> CniError {
        let symlink = std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink());
        if symlink {
            CniError::io(format!(
                "refusing to write {}: {} is a symbolic link; state directories must be real \
                 directories (remove the link or point the state directory at its target)",
                path.display(),
                dir.display()
            ))
        } else {
            CniError::io(format!("cannot open directory {}: {e}", dir.display()))
        }
    };
    let dirfd = match rustix::fs::open(dir, dir_flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| CniError::io(format!("cannot create {}: {e}", dir.display())))?;
            rustix::fs::open(dir, dir_flags, Mode::empty()).map_err(refused)?
        }
        Err(e) => return Err(refused(e)),
    };
    let tmp = format!(".{}.tmp.{}", name.to_string_lossy(), process_id());
    let res = (|| -> std::io::Result<()> {
        // Created exclusively, never through a link; a stale temp file (of a
        // killed writer with the same pid) is removed and the create retried.
        let create = || {
            rustix::fs::openat(
                &dirfd,
                tmp.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
        };
        let fd = match create() {
            Err(rustix::io::Errno::EXIST) => {
                rustix::fs::unlinkat(&dirfd, tmp.as_str(), AtFlags::empty())?;
                create()?
            }
            r => r?,
        };
        std::fs::File::from(fd).write_all(bytes)?;
        rustix::fs::renameat(&dirfd, tmp.as_str(), &dirfd, name)?;
        Ok(())
    })();
    res.map_err(|e| {
        let _ = rustix::fs::unlinkat(&dirfd, tmp.as_str(), AtFlags::empty());
        CniError::io(format!("cannot write {}: {e}", path.display()))
    })
}

/// This process's id, asked of the kernel once.
fn process_id() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn write_atomic_is_private_and_refuses_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("net").join("c_eth0.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(p.parent().unwrap()), 0o700);
        // A symlinked directory: refused, nothing written at its target.
        let target = d.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink(&target, d.path().join("linked")).unwrap();
        let e = write_atomic(&d.path().join("linked").join("x.json"), b"x").unwrap_err();
        assert_eq!(e.code, crate::code::IO);
        assert!(e.msg.contains("symbolic link"), "{e:?}");
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
        // A symlink planted at the temp name is replaced, not followed.
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let tmp = p
            .parent()
            .unwrap()
            .join(format!(".c_eth0.json.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_atomic(&p, b"three").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(&p).unwrap(), b"three");
    }

    /// A fake plugin that logs its stdin and env to a file and answers with a result
    /// derived from prevResult.
    fn fake_plugin(dir: &Path, name: &str, log: &Path) {
        let p = dir.join(name);
        let body = format!(
            r#"#!/bin/sh
in=$(cat)
echo "$CNI_COMMAND {name} $CNI_CONTAINERID $CNI_IFNAME $CNI_ARGS $in" >> {log}
if [ "$CNI_COMMAND" = ADD ]; then
  echo '{{"cniVersion":"1.0.0","interfaces":[{{"name":"{name}"}}],"ips":[{{"address":"10.0.0.2/24","interface":0}}]}}'
fi
"#,
            log = log.display()
        );
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn conflist_flow() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let log = d.path().join("log");
        fake_plugin(&bin, "p1", &log);
        fake_plugin(&bin, "p2", &log);
        let list = ConfList::parse(
            json!({"cniVersion":"1.1.0","name":"net1","plugins":[
                {"type":"p1","capabilities":{"portMappings":true}},
                {"type":"p2","capabilities":{"mac":false}}]})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let rt = Runtime::new(vec![bin.clone()], d.path().join("cache"));
        let mut caps = Map::new();
        caps.insert(
            "portMappings".into(),
            json!([{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]),
        );
        caps.insert("mac".into(), json!("aa:bb:cc:dd:ee:ff"));
        let conf = RuntimeConf {
            container_id: "c1".into(),
            netns: Some("/proc/self/ns/net".into()),
            ifname: "eth0".into(),
            args: vec![("K".into(), "V".into())],
            capability_args: caps,
        };
        let r = rt.add(&list, &conf).unwrap();
        assert_eq!(r.interfaces[0].name, "p2");
        assert!(rt.cached("net1", "c1", "eth0").unwrap().is_some());
        rt.check(&list, &conf).unwrap();
        rt.del(&list, &conf).unwrap();
        rt.del(&list, &conf).unwrap();
        assert!(rt.cached("net1", "c1", "eth0").unwrap().is_none());
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ADD p1 c1 eth0 K=V"));
        assert!(lines[0].contains("runtimeConfig"));
        assert!(lines[0].contains("portMappings"));
        assert!(
            !lines[1].contains("runtimeConfig"),
            "p2 did not declare mac"
        );
        assert!(lines[1].contains("prevResult"));
        assert!(lines[2].starts_with("CHECK p1"));
        assert!(
            lines[4].starts_with("DEL p2"),
            "DEL runs in reverse: {lines:?}"
        );
        assert!(lines[4].contains("prevResult"));
        assert!(lines[5].starts_with("DEL p1"));

        // GC deletes stale cached attachments, then sends GC with the valid list.
        rt.add(&list, &conf).unwrap();
        rt.gc(&list, &[]).unwrap();
        assert!(rt.cached("net1", "c1", "eth0").unwrap().is_none());
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("cni.dev/valid-attachments"));
        assert!(text.contains("cni.dev/attachments"));
    }

    #[test]
    fn conflist_errors() {
        assert_eq!(ConfList::parse(b"x").err().map(|e| e.code), Some(6));
        assert_eq!(
            ConfList::parse(br#"{"name":"a","cniVersion":"1.0.0"}"#)
                .err()
                .map(|e| e.code),
            Some(7)
        );
        assert_eq!(
            ConfList::parse(br#"{"name":"a","cniVersion":"1.0.0","plugins":[{"type":"../x"}]}"#)
                .err()
                .map(|e| e.code),
            Some(7)
        );
        let l = ConfList::parse(
            br#"{"name":"a","cniVersion":"0.4.0","cniVersions":["0.3.1","1.1.0","9.0.0"],"plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(l.version, Version::V1_1_0);
    }

    #[test]
    fn single_conf_is_wrapped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("10-x.conf");
        std::fs::write(
            &p,
            br#"{"cniVersion":"0.3.1","name":"x","type":"bridge","bridge":"b0"}"#,
        )
        .unwrap();
        let l = ConfList::load(&p).unwrap();
        assert_eq!(l.plugins[0]["type"], "bridge");
        assert_eq!(l.plugins[0]["bridge"], "b0");
        assert_eq!(ConfList::load_dir(d.path()).unwrap().len(), 1);
    }
}
