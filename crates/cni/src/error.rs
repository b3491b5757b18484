//! CNI errors: the JSON object a plugin prints on stdout (exit status 1), with the
//! spec's well-known codes and rnet's own codes (100 and up, listed in `docs/errors.md`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Error codes defined by the CNI specification (0–99 are reserved) and by rnet (100+).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin is not available (cannot service ADD).
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available, and existing containers may have limited connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// rnet: an internal error (a bug or an unexpected kernel answer); the message says where.
    pub const INTERNAL: u32 = 100;
    /// rnet: a netlink request failed; the message names the link/address/route and errno.
    pub const NETLINK: u32 = 101;
    /// rnet: an nftables transaction failed.
    pub const NFTABLES: u32 = 102;
    /// rnet: a delegated plugin could not be found in CNI_PATH or could not be executed.
    pub const PLUGIN_NOT_FOUND: u32 = 103;
    /// rnet: a delegated plugin printed something that is neither a result nor an error.
    pub const PLUGIN_OUTPUT: u32 = 104;
    /// rnet: the namespace given is not usable (exists but is the plugin's own, or cannot be entered).
    pub const NAMESPACE: u32 = 105;
    /// rnet: CHECK found the attachment different from `prevResult`; the message lists what differs.
    pub const CHECK_FAILED: u32 = 106;
    /// rnet: an address range has no free address left (ADD).
    pub const RANGE_EXHAUSTED: u32 = 110;
    /// rnet: a requested static address is already leased to another attachment.
    pub const ADDRESS_TAKEN: u32 = 111;
    /// rnet: a requested static address lies outside every configured range.
    pub const ADDRESS_OUT_OF_RANGE: u32 = 112;
    /// rnet: a requested static address is a reserved one (gateway, network, broadcast).
    pub const ADDRESS_RESERVED: u32 = 114;
    /// rnet: a repeated ADD asks for another address than the attachment already holds.
    pub const ALREADY_ALLOCATED: u32 = 115;
    /// rnet: CHECK found no lease for the attachment.
    pub const NO_LEASE: u32 = 116;
    /// rnet: an interface with the requested name already exists in the container.
    pub const INTERFACE_EXISTS: u32 = 113;
    /// rnet: the bridge already has 1023 ports, the most a Linux bridge can have.
    pub const BRIDGE_FULL: u32 = 117;
    /// rnet: the bridge port (the host end of the veth) did not come up.
    pub const PORT_NOT_UP: u32 = 118;
    /// rnet: a host port is already published by another attachment.
    pub const PORT_TAKEN: u32 = 120;
    /// rnet: the DNS resolver could not be started, bind, or persist.
    pub const RESOLVER: u32 = 130;
}

/// A CNI error as printed on stdout: `{"cniVersion", "code", "msg", "details"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    /// The spec or rnet error code.
    pub code: u32,
    /// A short message that names what is wrong and what to do.
    pub msg: String,
    /// Longer details (may be empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// A new error with `code` and `msg`.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Adds details.
    #[must_use]
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Code 7: invalid network configuration.
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_CONFIG, msg)
    }

    /// Code 4: invalid environment.
    pub fn invalid_env(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_ENV, msg)
    }

    /// Code 6: decoding failure.
    pub fn decode(msg: impl Into<String>) -> Self {
        Self::new(code::DECODE, msg)
    }

    /// Code 5: I/O failure.
    pub fn io(msg: impl Into<String>) -> Self {
        Self::new(code::IO, msg)
    }

    /// Code 100: internal error.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(code::INTERNAL, msg)
    }

    /// Code 11: try again later.
    pub fn try_again(msg: impl Into<String>) -> Self {
        Self::new(code::TRY_AGAIN, msg)
    }

    /// Prefixes the message with context, keeping the code.
    #[must_use]
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }

    /// The JSON document a plugin prints, with `cniVersion` when known.
    pub fn to_json(&self, cni_version: Option<&str>) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(rename = "cniVersion", skip_serializing_if = "Option::is_none")]
            cni_version: Option<&'a str>,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        let out = Out {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        };
        serde_json::to_string_pretty(&out).unwrap_or_else(|_| {
            format!(
                "{{\"code\": {}, \"msg\": \"error could not be encoded\"}}",
                self.code
            )
        })
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let e = CniError::invalid_config("bad").with_details("more");
        let v: serde_json::Value =
            serde_json::from_str(&e.to_json(Some("1.1.0"))).unwrap_or_default();
        assert_eq!(v["code"], 7);
        assert_eq!(v["msg"], "bad");
        assert_eq!(v["details"], "more");
        assert_eq!(v["cniVersion"], "1.1.0");
        let v: serde_json::Value =
            serde_json::from_str(&CniError::io("x").to_json(None)).unwrap_or_default();
        assert!(v.get("details").is_none());
        assert!(v.get("cniVersion").is_none());
    }
}
