//! The crate's error type.
//!
//! Kernel failures keep their errno as a number ([`NftError::Kernel`]):
//! callers decide on it (`EEXIST` from an exclusive add means "this host port
//! is already published", `ENOENT` means "the table is gone, take the slow
//! path"), so it is never flattened into a string.

use std::io;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The kernel rejected a request. `errno` is positive (`libc::EEXIST`, ...).
    /// `context` names the operation, table, set and element and, when the
    /// kernel sent an extended ACK message, includes that text.
    #[error("{context}: {}", errno_text(*errno))]
    Kernel {
        /// Positive errno as reported by the kernel.
        errno: i32,
        /// What was being done, to which table/set/element.
        context: String,
    },

    /// A system call on the netlink socket itself failed (socket, bind, send, recv).
    #[error("nf_tables netlink socket I/O failed while {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },

    /// The kernel's reply could not be understood (truncated or malformed).
    #[error("malformed nf_tables netlink reply while {context}: {detail}")]
    Protocol {
        /// What was being done.
        context: String,
        /// What exactly was wrong.
        detail: String,
    },

    /// A dump kept being interrupted by concurrent ruleset changes
    /// (`NLM_F_DUMP_INTR`) even after retrying.
    #[error(
        "nf_tables dump of {context} was interrupted by concurrent ruleset changes {attempts} times \
         in a row; retry once the ruleset is quieter"
    )]
    DumpInterrupted {
        /// What was being dumped.
        context: String,
        /// How many attempts were made.
        attempts: u32,
    },

    /// An argument was rejected before anything was sent to the kernel or to
    /// `nft` (bad name, comment, key part, oversized batch, ...).
    #[error("invalid nftables argument: {0}")]
    InvalidArgument(String),

    /// Entering a network namespace (to open a socket or spawn `nft` there) failed.
    #[error("cannot reach the network namespace for nftables: {0}")]
    Namespace(#[from] rnet_netns::NsError),

    /// No `nft` executable in `/usr/sbin`, `/sbin` or `PATH`.
    #[error(
        "the nft executable was not found (looked in {searched}); install the nftables package"
    )]
    NftNotFound {
        /// The places that were searched.
        searched: String,
    },

    /// Starting `nft` or feeding it the ruleset failed.
    #[error("running {program} failed: {source}")]
    NftSpawn {
        /// The `nft` path used.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// `nft -f -` rejected the ruleset; nothing was changed (one transaction).
    #[error("nft -f - rejected the ruleset (exit status {status}): {stderr}")]
    NftFailed {
        /// Exit code, or -1 if killed by a signal.
        status: i32,
        /// What `nft` wrote to stderr (its error messages, with line numbers).
        stderr: String,
    },
}

impl NftError {
    /// The kernel errno, if this error came from the kernel.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NftError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// `ENOENT`: the table, chain, set or element does not exist.
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(libc::ENOENT)
    }

    /// `EEXIST`: the element already exists; from an exclusive add
    /// ([`Batch::add_elements_excl`](crate::Batch::add_elements_excl)), or
    /// from any add whose key exists with *different* map data.
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// `EBUSY`: the object is in use (e.g. a set still referenced by a rule).
    pub fn is_busy(&self) -> bool {
        self.errno() == Some(libc::EBUSY)
    }

    pub(crate) fn kernel(errno: i32, context: impl Into<String>) -> Self {
        NftError::Kernel {
            errno,
            context: context.into(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        NftError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn protocol(context: impl Into<String>, detail: impl Into<String>) -> Self {
        NftError::Protocol {
            context: context.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        NftError::InvalidArgument(msg.into())
    }
}

/// `strerror`-like text plus the symbolic name for the errnos we care about.
fn errno_text(errno: i32) -> String {
    let name = match errno {
        libc::EEXIST => "EEXIST",
        libc::ENOENT => "ENOENT",
        libc::EBUSY => "EBUSY",
        libc::EINVAL => "EINVAL",
        libc::EPERM => "EPERM",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ERANGE => "ERANGE",
        libc::ENOSPC => "ENOSPC",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::ENOTDIR => "ENOTDIR",
        _ => "",
    };
    let text = io::Error::from_raw_os_error(errno).to_string();
    if name.is_empty() {
        text
    } else {
        format!("{text} [{name}]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_and_text() {
        let e = NftError::kernel(libc::EEXIST, "adding to set inet rnet hostports4");
        assert!(e.is_exists());
        assert!(!e.is_not_found());
        let s = e.to_string();
        assert!(s.contains("hostports4") && s.contains("EEXIST"), "{s}");
        assert!(NftError::kernel(libc::ENOENT, "x").is_not_found());
        assert!(NftError::kernel(libc::EBUSY, "x").is_busy());
        assert_eq!(NftError::invalid("x").errno(), None);
    }
}
