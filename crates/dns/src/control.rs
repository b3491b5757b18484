//! The control protocol and its client.
//!
//! `<stateDir>/control.sock`, a Unix stream socket (mode 0600; the resolver
//! checks `SO_PEERCRED` and serves only root and its own uid). One JSON object
//! per line each way: a [`Request`] (tagged by `"op"`), then one [`Reply`].
//!
//! ```text
//! {"op":"register","network":{"name":"n1","domain":"dns.rnet","internal":false,"listen":["10.88.0.1"],"upstreams":[]},
//!  "attachment":{"containerID":"c1","ifname":"eth0"},"names":["web","www"],"addrs":["10.88.0.2"]}
//! {"op":"unregister","network":"n1","attachment":{"containerID":"c1","ifname":"eth0"}}
//! {"op":"gc","network":"n1","valid":[{"containerID":"c2","ifname":"eth0"}]}
//! {"op":"list"}   {"op":"ping"}   {"op":"shutdown"}
//! → {"ok":true,...} | {"ok":false,"kind":"invalid|bind|closing|internal","error":"..."}
//! ```
//!
//! A change is acknowledged only after it is durable (journal fsync) and live
//! (the new snapshot is published): a name registered by an acked request
//! resolves in the very next query, and survives a crash.

use crate::error::{DnsError, ErrorKind};
use crate::registry::{AttachmentId, NetworkSpec, RegistryFile};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read as _, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Control socket file name inside the state directory.
pub const SOCKET_NAME: &str = "control.sock";
/// Largest request or reply line accepted.
pub const MAX_LINE: usize = 1 << 20;

/// A control request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Add or replace the names of one attachment (creating/updating the network).
    Register {
        /// The network and its DNS settings.
        network: NetworkSpec,
        /// The attachment.
        attachment: AttachmentId,
        /// Container name first, then aliases.
        names: Vec<String>,
        /// The attachment's addresses.
        addrs: Vec<IpAddr>,
    },
    /// Remove one attachment's names (idempotent).
    Unregister {
        /// Network name.
        network: String,
        /// The attachment.
        attachment: AttachmentId,
    },
    /// Remove every attachment of `network` not in `valid`.
    Gc {
        /// Network name.
        network: String,
        /// Attachments to keep.
        valid: Vec<AttachmentId>,
    },
    /// The whole registry.
    List,
    /// Liveness; the reply carries the pid.
    Ping,
    /// Stop the resolver (after the reply).
    Shutdown,
}

/// A control reply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Success.
    pub ok: bool,
    /// Error kind when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
    /// Error message when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The resolver's pid (ping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Records removed (unregister, gc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<usize>,
    /// The registry (list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryFile>,
}

impl Reply {
    /// A success.
    pub fn ok() -> Reply {
        Reply {
            ok: true,
            ..Reply::default()
        }
    }

    /// A failure from an error.
    pub fn err(e: &DnsError) -> Reply {
        Reply {
            ok: false,
            kind: Some(e.kind()),
            error: Some(e.to_string()),
            ..Reply::default()
        }
    }

    /// `Ok(self)` when ok, else the error it carries.
    pub fn into_result(self) -> Result<Reply, DnsError> {
        if self.ok {
            return Ok(self);
        }
        let kind = self.kind.unwrap_or(ErrorKind::Internal);
        if kind == ErrorKind::Closing {
            return Err(DnsError::Closing);
        }
        Err(DnsError::Remote {
            kind,
            message: self.error.unwrap_or_else(|| "unspecified error".into()),
        })
    }
}

/// A blocking control client (the plugin's side).
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    path: PathBuf,
}

impl Client {
    /// Connects to `<state_dir>/control.sock`.
    pub fn connect(state_dir: &Path) -> Result<Client, DnsError> {
        let path = state_dir.join(SOCKET_NAME);
        let s = UnixStream::connect(&path).map_err(|e| {
            DnsError::io(
                format!("connecting to the resolver at {}", path.display()),
                e,
            )
        })?;
        let t = Some(Duration::from_secs(30));
        s.set_read_timeout(t)
            .and_then(|()| s.set_write_timeout(t))
            .map_err(|e| DnsError::io("setting control socket timeouts", e))?;
        Ok(Client {
            reader: BufReader::new(s),
            path,
        })
    }

    /// Sends one request and reads its reply (errors in the reply are returned as errors).
    pub fn request(&mut self, req: &Request) -> Result<Reply, DnsError> {
        let mut line = serde_json::to_vec(req)
            .map_err(|e| DnsError::Protocol(format!("encoding a request: {e}")))?;
        line.push(b'\n');
        let what = || format!("talking to the resolver at {}", self.path.display());
        // A connection cut mid-request means the resolver went away (killed
        // or exiting): reported as `Closing`, so the caller reconnects, which
        // starts a new resolver from the persisted registry. Every request is
        // idempotent, so sending it again is safe.
        let io_err = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::UnexpectedEof => DnsError::Closing,
            _ => DnsError::io(what(), e),
        };
        self.reader.get_mut().write_all(&line).map_err(io_err)?;
        let mut buf = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .map_err(io_err)?;
        if n == 0 {
            return Err(DnsError::Closing);
        }
        let reply: Reply = serde_json::from_slice(&buf).map_err(|e| {
            DnsError::Protocol(format!("bad reply from {}: {e}", self.path.display()))
        })?;
        reply.into_result()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn wire_shapes() {
        let r: Request = serde_json::from_str(
            r#"{"op":"register","network":{"name":"n1","listen":["10.0.0.1"]},"attachment":{"containerID":"c","ifname":"eth0"},"names":["a"],"addrs":["10.0.0.2"]}"#,
        )
        .unwrap();
        match &r {
            Request::Register { network, .. } => assert_eq!(network.domain, "dns.rnet"),
            other => panic!("{other:?}"),
        }
        let back: Request = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            serde_json::to_string(&Request::Ping).unwrap(),
            r#"{"op":"ping"}"#
        );
        let e = Reply::err(&DnsError::Closing).into_result().unwrap_err();
        assert!(matches!(e, DnsError::Closing));
    }
}
