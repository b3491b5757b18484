//! # rnet-cni: the CNI protocol, both sides
//!
//! Layout:
//! - [`version`]: the spec versions (0.1.0 .. 1.1.0), which verbs each allows, the VERSION answer.
//! - [`error`]: the error JSON and its codes (the spec's 1–51, rnet's 100+; see `docs/errors.md`).
//! - [`types`]: network configuration and results, with conversion between versions.
//! - [`args`]: `CNI_ARGS` parsing and identifier validation.
//! - [`skel`]: the plugin side: a [`skel::Plugin`] trait and a dispatcher with injectable
//!   environment, stdin and stdout, so the whole protocol is testable without root.
//! - [`exec`]: finding and running plugins in `CNI_PATH`; IPAM delegation.
//! - [`runtime`]: the runtime side (what libcni does): run a conflist ADD/CHECK/DEL/GC/STATUS,
//!   inject `runtimeConfig` by capability, chain `prevResult`, cache results.
//!
//! Logs never go to stdout: stdout carries only the result or the error JSON.

pub mod args;
pub mod error;
pub mod exec;
pub mod runtime;
pub mod skel;
pub mod types;
pub mod version;

pub use error::{CniError, code};
pub use skel::{CmdArgs, Command, Plugin};
pub use types::{Attachment, CniResult, Dns, Interface, IpConfig, NetConf, Route};
pub use version::Version;
