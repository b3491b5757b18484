//! The crate's error type.

use std::net::SocketAddr;
use std::path::PathBuf;

/// What went wrong, typed: callers decide on the variant, and the message
/// names the thing that is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A container name, alias or domain that is not a valid DNS name.
    #[error("invalid DNS name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A registration that cannot be accepted (empty names, no addresses, ...).
    #[error("invalid registration: {0}")]
    Invalid(String),
    /// The resolver could not listen on a network's gateway address.
    #[error(
        "cannot listen for DNS on {addr} ({proto}): {source}; another DNS server (dnsmasq, aardvark-dns, systemd-resolved) may hold the port, or the address is not usable"
    )]
    Bind {
        /// Address and port.
        addr: SocketAddr,
        /// "udp" or "tcp".
        proto: &'static str,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the path.
        what: String,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// A state file could not be read back.
    #[error(
        "state file {path} is unreadable: {reason}; move it away to start with an empty registry"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Another resolver already serves this state directory.
    #[error(
        "another rnet-dns already serves state directory {state_dir} (pid {pid}); not starting a second one"
    )]
    AlreadyRunning {
        /// The state directory.
        state_dir: PathBuf,
        /// Its pid, as read from the pid file (0 if unknown).
        pid: u32,
    },
    /// The resolver is shutting down (idle exit), or went away (killed)
    /// during a request or its start-up; start a new one and retry.
    #[error(
        "the resolver went away (shut down or killed) during the request; retry with a new one"
    )]
    Closing,
    /// The control peer broke the protocol.
    #[error("control protocol: {0}")]
    Protocol(String),
    /// The resolver answered a control request with an error.
    #[error("{message}")]
    Remote {
        /// The error kind from the reply.
        kind: ErrorKind,
        /// The resolver's message.
        message: String,
    },
    /// The resolver could not be started.
    #[error("cannot start the DNS resolver {exe}: {reason}")]
    Start {
        /// The executable.
        exe: PathBuf,
        /// Why, including the tail of its log when there is one.
        reason: String,
    },
}

/// The kind of a control error, carried in replies so the client can map it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// Bad input (names, addresses).
    Invalid,
    /// Could not bind a listener.
    Bind,
    /// Resolver shutting down.
    Closing,
    /// Anything else (I/O while persisting, ...).
    Internal,
}

impl DnsError {
    /// An I/O error with context.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        DnsError::Io {
            what: what.into(),
            source,
        }
    }

    /// The kind to report over the control socket.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DnsError::InvalidName { .. } | DnsError::Invalid(_) => ErrorKind::Invalid,
            DnsError::Bind { .. } => ErrorKind::Bind,
            DnsError::Closing => ErrorKind::Closing,
            DnsError::Remote { kind, .. } => *kind,
            _ => ErrorKind::Internal,
        }
    }
}
