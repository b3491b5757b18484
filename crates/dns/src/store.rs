//! Persistence: `registry.json` (the whole registry, written atomically: temp
//! file, fsync, rename, fsync of the directory; mode 0600) plus
//! `registry.journal`, one JSON change per line, appended and `fdatasync`ed
//! before a change is acknowledged.
//!
//! Why a journal: rewriting the whole registry on every change costs
//! O(records) per registration (milliseconds at 10,000 names, and a storm of
//! registrations becomes quadratic). Appending one line is O(1). The journal
//! is folded into `registry.json` when it grows past the registry's size (and
//! at every start), so it stays amortised O(1) and the files stay small.
//! Replaying is idempotent (register = upsert, unregister/gc = remove), so a
//! crash between the rename and the journal truncation is harmless. A torn
//! last line (a crash mid-append, never acknowledged) is ignored.

use crate::control::Request;
use crate::error::DnsError;
use crate::registry::{Change, NetworkSpec, RecordSpec, Registry};
use crate::snapshot::Index;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Registry file name.
pub const REGISTRY_FILE: &str = "registry.json";
/// Journal file name.
pub const JOURNAL_FILE: &str = "registry.journal";

/// The registry's files in a state directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    journal: File,
    lines: usize,
}

fn open_journal(path: &Path) -> Result<File, DnsError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| DnsError::io(format!("opening the journal {}", path.display()), e))
}

/// What a change did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Something changed (a snapshot must be published).
    pub changed: bool,
    /// Records removed.
    pub removed: usize,
}

/// What the registry's files load into and changes apply to: the plain
/// [`Registry`] (the plugin's read-only view, tests) or the resolver's
/// [`Index`] (which holds the records compactly and is the daemon's only
/// copy of them).
pub trait Target {
    /// Applies a mutating request (read-only requests change nothing).
    fn apply(&mut self, req: &Request) -> Result<Applied, DnsError>;
    /// Adds a record read from `registry.json`.
    fn load_record(&mut self, network: &NetworkSpec, rec: RecordSpec);
    /// Number of records.
    fn len(&self) -> usize;
    /// No records.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Writes the `registry.json` form.
    fn write_file(&self, w: &mut dyn Write) -> Result<(), serde_json::Error>;
}

fn summary(changes: &[Change]) -> Applied {
    Applied {
        changed: !changes.is_empty(),
        removed: changes
            .iter()
            .filter(|c| matches!(c, Change::RecordGone(..)))
            .count(),
    }
}

impl Target for Registry {
    fn apply(&mut self, req: &Request) -> Result<Applied, DnsError> {
        Ok(summary(&match req {
            Request::Register {
                network,
                attachment,
                names,
                addrs,
            } => self.register(network.clone(), attachment.clone(), names, addrs)?,
            Request::Unregister {
                network,
                attachment,
            } => self.unregister(network, attachment),
            Request::Gc { network, valid } => self.gc(network, valid),
            Request::List | Request::Ping | Request::Shutdown => Vec::new(),
        }))
    }

    fn load_record(&mut self, network: &NetworkSpec, rec: RecordSpec) {
        self.networks
            .entry(network.name.clone())
            .or_insert_with(|| network.clone());
        self.records
            .entry(rec.network.clone())
            .or_default()
            .insert(rec.attachment.clone(), rec);
    }

    fn len(&self) -> usize {
        Registry::len(self)
    }

    fn write_file(&self, w: &mut dyn Write) -> Result<(), serde_json::Error> {
        serde_json::to_writer(w, &self.to_file())
    }
}

impl Target for Index {
    fn apply(&mut self, req: &Request) -> Result<Applied, DnsError> {
        match req {
            Request::Register {
                network,
                attachment,
                names,
                addrs,
            } => {
                let (network, rec) =
                    Registry::prepare(network.clone(), attachment.clone(), names, addrs)?;
                Ok(Applied {
                    changed: self.register(network, &rec)?,
                    removed: 0,
                })
            }
            Request::Unregister {
                network,
                attachment,
            } => {
                let removed = self.unregister(network, attachment);
                Ok(Applied {
                    changed: removed > 0,
                    removed,
                })
            }
            Request::Gc { network, valid } => {
                let removed = self.gc(network, valid);
                Ok(Applied {
                    changed: removed > 0,
                    removed,
                })
            }
            Request::List | Request::Ping | Request::Shutdown => Ok(Applied::default()),
        }
    }

    fn load_record(&mut self, network: &NetworkSpec, rec: RecordSpec) {
        // Only an oversized record fails, and such a file was not written by
        // a resolver (it refuses them before journaling): skip it.
        let _skipped = self.register(network.clone(), &rec);
    }

    fn len(&self) -> usize {
        Index::len(self)
    }

    fn write_file(&self, w: &mut dyn Write) -> Result<(), serde_json::Error> {
        Index::write_file(self, w)
    }
}

/// Reads the registry as a resolver would restore it, without writing
/// anything (for a plugin deciding whether a resolver must be started).
pub fn load_readonly(dir: &Path) -> Result<Registry, DnsError> {
    let mut reg = Registry::default();
    load_into(dir, &mut reg)?;
    Ok(reg)
}

/// Loads `registry.json` and then the journal into `target`. The file is
/// streamed: records reach the target one at a time, never as a whole owned
/// registry (at 10,000 names that would cost megabytes the resolver's heap
/// keeps). Records of networks the file does not list are dropped.
pub fn load_into<T: Target + ?Sized>(dir: &Path, target: &mut T) -> Result<(), DnsError> {
    let reg_path = dir.join(REGISTRY_FILE);
    match std::fs::read(&reg_path) {
        Ok(bytes) => {
            let mut de = serde_json::Deserializer::from_slice(&bytes);
            FileSeed(target)
                .deserialize(&mut de)
                .and_then(|()| de.end())
                .map_err(|e| DnsError::Corrupt {
                    path: reg_path.clone(),
                    reason: e.to_string(),
                })?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(DnsError::io(format!("reading {}", reg_path.display()), e));
        }
    }
    let jpath = dir.join(JOURNAL_FILE);
    match File::open(&jpath) {
        Ok(f) => {
            for line in BufReader::new(f).split(b'\n') {
                let line =
                    line.map_err(|e| DnsError::io(format!("reading {}", jpath.display()), e))?;
                // A line that does not parse was torn by a crash and never acked.
                if let Ok(req) = serde_json::from_slice::<Request>(&line) {
                    let _ignored = target.apply(&req);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(DnsError::io(format!("reading {}", jpath.display()), e)),
    }
    Ok(())
}

/// Streams `{"version":..,"networks":[..],"records":[..]}` into a target.
struct FileSeed<'a, T: ?Sized>(&'a mut T);

impl<'de, T: Target + ?Sized> DeserializeSeed<'de> for FileSeed<'_, T> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: Target + ?Sized> Visitor<'de> for FileSeed<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the rnet-dns registry (an object with version, networks and records)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let mut networks: Option<HashMap<String, NetworkSpec>> = None;
        // Records listed before the networks (not as resolvers write it).
        let mut early: Option<Vec<RecordSpec>> = None;
        let mut version = false;
        while let Some(k) = m.next_key::<String>()? {
            match k.as_str() {
                "version" => {
                    m.next_value::<u32>()?;
                    version = true;
                }
                "networks" => {
                    let v: Vec<NetworkSpec> = m.next_value()?;
                    networks = Some(v.into_iter().map(|n| (n.name.clone(), n)).collect());
                }
                "records" => {
                    let mut buf = Vec::new();
                    m.next_value_seed(RecordsSeed {
                        target: &mut *self.0,
                        networks: networks.as_ref(),
                        early: &mut buf,
                    })?;
                    early = Some(buf);
                }
                _ => {
                    m.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        if !version {
            return Err(de::Error::missing_field("version"));
        }
        let networks = networks.ok_or_else(|| de::Error::missing_field("networks"))?;
        let early = early.ok_or_else(|| de::Error::missing_field("records"))?;
        for r in early {
            if let Some(n) = networks.get(&r.network) {
                self.0.load_record(n, r);
            }
        }
        Ok(())
    }
}

struct RecordsSeed<'a, T: ?Sized> {
    target: &'a mut T,
    networks: Option<&'a HashMap<String, NetworkSpec>>,
    early: &'a mut Vec<RecordSpec>,
}

impl<'de, T: Target + ?Sized> DeserializeSeed<'de> for RecordsSeed<'_, T> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: Target + ?Sized> Visitor<'de> for RecordsSeed<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        while let Some(r) = s.next_element::<RecordSpec>()? {
            match self.networks {
                Some(nets) => {
                    if let Some(n) = nets.get(&r.network) {
                        self.target.load_record(n, r);
                    }
                }
                None => self.early.push(r),
            }
        }
        Ok(())
    }
}

impl Store {
    /// Loads the registry from `dir` (registry.json, then the journal) into
    /// `target`, folds the journal in, and opens it for appending.
    pub fn open<T: Target + ?Sized>(dir: &Path, target: &mut T) -> Result<Store, DnsError> {
        load_into(dir, target)?;
        let jpath = dir.join(JOURNAL_FILE);
        let mut store = Store {
            dir: dir.to_owned(),
            journal: open_journal(&jpath)?,
            lines: 0,
        };
        store.compact(target)?;
        Ok(store)
    }

    /// Makes one change durable (before it is applied and acknowledged).
    pub fn append(&mut self, req: &Request) -> Result<(), DnsError> {
        let mut line = serde_json::to_vec(req)
            .map_err(|e| DnsError::Protocol(format!("encoding a journal line: {e}")))?;
        line.push(b'\n');
        let jpath = self.dir.join(JOURNAL_FILE);
        self.journal
            .write_all(&line)
            .and_then(|()| self.journal.sync_data())
            .map_err(|e| DnsError::io(format!("appending to {}", jpath.display()), e))?;
        self.lines += 1;
        Ok(())
    }

    /// Folds the journal into `registry.json` when it has grown past the
    /// registry's size. `reg` must include every appended change.
    pub fn maybe_compact<T: Target + ?Sized>(&mut self, reg: &T) -> Result<(), DnsError> {
        if self.lines > 1024.max(reg.len()) {
            self.compact(reg)?;
        }
        Ok(())
    }

    /// Writes `registry.json` atomically and empties the journal.
    pub fn compact<T: Target + ?Sized>(&mut self, reg: &T) -> Result<(), DnsError> {
        let path = self.dir.join(REGISTRY_FILE);
        let tmp = self.dir.join(format!(".{REGISTRY_FILE}.tmp"));
        let what = |e| DnsError::io(format!("writing {}", path.display()), e);
        {
            let f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(what)?;
            let mut w = std::io::BufWriter::new(f);
            reg.write_file(&mut w)
                .map_err(|e| what(std::io::Error::other(e)))?;
            let f = w.into_inner().map_err(|e| what(e.into_error()))?;
            f.sync_all().map_err(what)?;
        }
        std::fs::rename(&tmp, &path).map_err(what)?;
        if let Ok(d) = File::open(&self.dir) {
            let _best_effort = d.sync_all();
        }
        self.journal
            .set_len(0)
            .and_then(|()| self.journal.sync_all())
            .map_err(|e| {
                DnsError::io(
                    format!("truncating {}", self.dir.join(JOURNAL_FILE).display()),
                    e,
                )
            })?;
        self.lines = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::registry::{AttachmentId, NetworkSpec};
    use std::os::unix::fs::PermissionsExt;

    fn reg_req(c: &str, name: &str) -> Request {
        Request::Register {
            network: NetworkSpec {
                name: "n".into(),
                domain: "dns.rnet".into(),
                internal: false,
                listen: vec![],
                upstreams: vec![],
            },
            attachment: AttachmentId {
                container_id: c.into(),
                ifname: "eth0".into(),
            },
            names: vec![name.into()],
            addrs: vec!["10.0.0.2".parse().unwrap()],
        }
    }

    #[test]
    fn journal_survives_restart_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::default();
        let mut st = Store::open(dir.path(), &mut reg).unwrap();
        for i in 0..2000 {
            let r = reg_req(&format!("c{i}"), &format!("n{i}"));
            st.append(&r).unwrap();
            reg.apply(&r).unwrap();
            st.maybe_compact(&reg).unwrap();
        }
        let un = Request::Unregister {
            network: "n".into(),
            attachment: AttachmentId {
                container_id: "c7".into(),
                ifname: "eth0".into(),
            },
        };
        st.append(&un).unwrap();
        reg.apply(&un).unwrap();
        drop(st);
        // A torn line at the end (crash mid-append).
        let mut j = OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL_FILE))
            .unwrap();
        j.write_all(b"{\"op\":\"regis").unwrap();
        let mut back = Registry::default();
        let _st = Store::open(dir.path(), &mut back).unwrap();
        assert_eq!(back, reg);
        assert_eq!(back.len(), 1999);
        // The resolver's index restores the same, from the compacted file.
        let mut idx = Index::new(&[]);
        let _st = Store::open(dir.path(), &mut idx).unwrap();
        assert_eq!(idx.to_file(), reg.to_file());
        assert_eq!(load_readonly(dir.path()).unwrap(), reg);
        let mode = std::fs::metadata(dir.path().join(REGISTRY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(dir.path().join(JOURNAL_FILE))
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn corrupt_registry_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(REGISTRY_FILE), b"{nope").unwrap();
        let e = Store::open(dir.path(), &mut Registry::default()).unwrap_err();
        assert!(matches!(e, DnsError::Corrupt { .. }), "{e}");
        std::fs::write(
            dir.path().join(REGISTRY_FILE),
            br#"{"version":1,"records":[]}"#,
        )
        .unwrap();
        let e = Store::open(dir.path(), &mut Index::new(&[])).unwrap_err();
        assert!(e.to_string().contains("networks"), "{e}");
    }

    #[test]
    fn records_before_networks_still_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(REGISTRY_FILE),
            br#"{"records":[{"network":"n","attachment":{"containerID":"c","ifname":"eth0"},"names":["a"],"addrs":["10.0.0.2"]},
                 {"network":"gone","attachment":{"containerID":"d","ifname":"eth0"},"names":["b"],"addrs":["10.0.0.3"]}],
               "networks":[{"name":"n","domain":"dns.rnet","listen":["10.0.0.1"]}],"version":1,"extra":true}"#,
        )
        .unwrap();
        let reg = load_readonly(dir.path()).unwrap();
        assert_eq!(reg.len(), 1);
        assert_eq!(reg.records["n"].values().next().unwrap().names, vec!["a"]);
    }
}
