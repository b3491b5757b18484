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
use crate::registry::{Registry, RegistryFile};
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

/// Applies a mutating request to the registry (used by replay and by the server).
pub fn apply(reg: &mut Registry, req: &Request) -> Result<Vec<crate::registry::Change>, DnsError> {
    match req {
        Request::Register {
            network,
            attachment,
            names,
            addrs,
        } => reg.register(network.clone(), attachment.clone(), names, addrs),
        Request::Unregister {
            network,
            attachment,
        } => Ok(reg.unregister(network, attachment)),
        Request::Gc { network, valid } => Ok(reg.gc(network, valid)),
        Request::List | Request::Ping | Request::Shutdown => Ok(Vec::new()),
    }
}

/// Reads the registry as a resolver would restore it, without writing
/// anything (for a plugin deciding whether a resolver must be started).
pub fn load_readonly(dir: &Path) -> Result<Registry, DnsError> {
    load(dir)
}

fn load(dir: &Path) -> Result<Registry, DnsError> {
    let reg_path = dir.join(REGISTRY_FILE);
    let mut reg = match std::fs::read(&reg_path) {
        Ok(bytes) => {
            let f: RegistryFile =
                serde_json::from_slice(&bytes).map_err(|e| DnsError::Corrupt {
                    path: reg_path.clone(),
                    reason: e.to_string(),
                })?;
            Registry::from_file(f)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Registry::default(),
        Err(e) => {
            return Err(DnsError::io(format!("reading {}", reg_path.display()), e));
        }
    };
    let jpath = dir.join(JOURNAL_FILE);
    match File::open(&jpath) {
        Ok(f) => {
            for line in BufReader::new(f).split(b'\n') {
                let line =
                    line.map_err(|e| DnsError::io(format!("reading {}", jpath.display()), e))?;
                // A line that does not parse was torn by a crash and never acked.
                if let Ok(req) = serde_json::from_slice::<Request>(&line) {
                    let _ignored = apply(&mut reg, &req);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(DnsError::io(format!("reading {}", jpath.display()), e)),
    }
    Ok(reg)
}

impl Store {
    /// Loads the registry from `dir` (registry.json, then the journal),
    /// folds the journal in, and opens it for appending.
    pub fn open(dir: &Path) -> Result<(Store, Registry), DnsError> {
        let reg = load(dir)?;
        let jpath = dir.join(JOURNAL_FILE);
        let mut store = Store {
            dir: dir.to_owned(),
            journal: open_journal(&jpath)?,
            lines: 0,
        };
        store.compact(&reg)?;
        Ok((store, reg))
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
    pub fn maybe_compact(&mut self, reg: &Registry) -> Result<(), DnsError> {
        if self.lines > 1024.max(reg.len()) {
            self.compact(reg)?;
        }
        Ok(())
    }

    /// Writes `registry.json` atomically and empties the journal.
    pub fn compact(&mut self, reg: &Registry) -> Result<(), DnsError> {
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
            serde_json::to_writer(&mut w, &reg.to_file())
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
        let (mut st, mut reg) = Store::open(dir.path()).unwrap();
        for i in 0..2000 {
            let r = reg_req(&format!("c{i}"), &format!("n{i}"));
            st.append(&r).unwrap();
            apply(&mut reg, &r).unwrap();
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
        apply(&mut reg, &un).unwrap();
        drop(st);
        // A torn line at the end (crash mid-append).
        let mut j = OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL_FILE))
            .unwrap();
        j.write_all(b"{\"op\":\"regis").unwrap();
        let (_st, back) = Store::open(dir.path()).unwrap();
        assert_eq!(back, reg);
        assert_eq!(back.len(), 1999);
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
        let e = Store::open(dir.path()).unwrap_err();
        assert!(matches!(e, DnsError::Corrupt { .. }), "{e}");
    }
}
