//! The crate's error type.
//!
//! Kernel failures keep their errno as a number ([`NetlinkError::Kernel`]):
//! callers make decisions on it (`EEXIST` means "reuse it", `ENODEV` means
//! "already gone"), so it must never be flattened into a string.

use std::io;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel rejected a request. `errno` is positive (`libc::EEXIST`, ...).
    /// `context` names the operation and the object (link, address, route) and,
    /// when the kernel sent an extended ACK message, includes that text.
    #[error("{context}: {}", errno_text(*errno))]
    Kernel {
        /// Positive errno value as reported by the kernel.
        errno: i32,
        /// What was being done, to which object; plus the kernel's extack text if any.
        context: String,
    },

    /// A system call on the netlink socket itself failed (socket, bind, send, recv).
    #[error("netlink socket I/O failed while {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },

    /// The kernel's reply could not be understood (truncated or malformed).
    #[error("malformed netlink reply while {context}: {detail}")]
    Protocol {
        /// What was being done.
        context: String,
        /// What exactly was wrong with the reply.
        detail: String,
    },

    /// A dump kept being interrupted by concurrent changes (`NLM_F_DUMP_INTR`)
    /// even after retrying.
    #[error(
        "netlink dump of {context} was interrupted by concurrent changes {attempts} times in a row; \
         retry the operation once the system is quieter"
    )]
    DumpInterrupted {
        /// What was being dumped.
        context: String,
        /// How many attempts were made.
        attempts: u32,
    },

    /// An argument was rejected before anything was sent to the kernel.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Entering a network namespace (to open a socket there) failed.
    #[error("cannot open a netlink socket inside the network namespace: {0}")]
    Namespace(#[from] rnet_netns::NsError),

    /// Reading or writing a sysctl under `/proc/sys/net` failed.
    #[error("sysctl {key} ({path}): {source}")]
    Sysctl {
        /// The dotted key, e.g. `net.ipv4.ip_forward`.
        key: String,
        /// The file that was accessed.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl NetlinkError {
    /// The kernel errno, if this error came from the kernel.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// `EEXIST`: the link/address/route already exists.
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// `ENOENT`, `ENODEV` or `ESRCH`: the object does not exist
    /// (links report `ENODEV`, routes `ESRCH`, some lookups `ENOENT`).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ESRCH)
        )
    }

    /// `EADDRNOTAVAIL`: deleting an address that is not configured on the link.
    /// Kept apart from [`is_not_found`](Self::is_not_found) because the same
    /// errno also means "source address not local" for route requests.
    pub fn is_addr_not_avail(&self) -> bool {
        self.errno() == Some(libc::EADDRNOTAVAIL)
    }

    /// `EBUSY`: the device or resource is busy (e.g. a name in use during a rename).
    pub fn is_busy(&self) -> bool {
        self.errno() == Some(libc::EBUSY)
    }

    pub(crate) fn kernel(errno: i32, context: String) -> Self {
        NetlinkError::Kernel { errno, context }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        NetlinkError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn protocol(context: impl Into<String>, detail: impl Into<String>) -> Self {
        NetlinkError::Protocol {
            context: context.into(),
            detail: detail.into(),
        }
    }
}

/// `strerror`-like text plus the symbolic name for the errnos we care about.
fn errno_text(errno: i32) -> String {
    let name = match errno {
        libc::EEXIST => "EEXIST",
        libc::ENOENT => "ENOENT",
        libc::ENODEV => "ENODEV",
        libc::ESRCH => "ESRCH",
        libc::EBUSY => "EBUSY",
        libc::EINVAL => "EINVAL",
        libc::EPERM => "EPERM",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ERANGE => "ERANGE",
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
    fn predicates() {
        let e = NetlinkError::kernel(libc::EEXIST, "creating bridge cni0".into());
        assert!(e.is_exists());
        assert!(!e.is_not_found());
        assert!(e.to_string().contains("creating bridge cni0"));
        assert!(e.to_string().contains("EEXIST"));
        for errno in [libc::ENOENT, libc::ENODEV, libc::ESRCH] {
            assert!(NetlinkError::kernel(errno, String::new()).is_not_found());
        }
        assert!(NetlinkError::kernel(libc::EBUSY, String::new()).is_busy());
        assert!(NetlinkError::kernel(libc::EADDRNOTAVAIL, String::new()).is_addr_not_avail());
        assert_eq!(NetlinkError::InvalidArgument("x".into()).errno(), None);
    }
}
