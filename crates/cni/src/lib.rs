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

#[doc(hidden)]
pub mod __private {
    #[cfg(target_env = "musl")]
    pub use dlmalloc::GlobalDlmalloc;
}

/// Declares a plugin executable's global allocator: on musl builds (release
/// plugins, see `scripts/build.sh`) dlmalloc, elsewhere the libc's.
///
/// A plugin is a process of about two milliseconds. musl's own allocator
/// returns freed memory to the kernel page by page and maps it again on the
/// next allocation: some thirty `mmap`/`munmap` calls per bridge ADD, which
/// cost 0.13 ms of a 1.7 ms ADD (BENCHMARKS.md, section 3). dlmalloc keeps
/// what it has mapped and asks the kernel in large steps. glibc's allocator
/// behaves like dlmalloc already (it descends from it), so other builds keep
/// it. Invoke once, at the root of a plugin's `main.rs`.
#[macro_export]
macro_rules! plugin_allocator {
    () => {
        #[cfg(target_env = "musl")]
        #[global_allocator]
        static RNET_PLUGIN_ALLOCATOR: $crate::__private::GlobalDlmalloc =
            $crate::__private::GlobalDlmalloc;
    };
}
