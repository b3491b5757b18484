//! rnet's lab tests: real plugin executables, run as a runtime runs them, in
//! throwaway namespaces built by `netns-fixtures`. They need root; without it
//! they fail (loudly) instead of skipping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bench;
mod bridge;
mod chaos;
mod cli;
mod common;
mod dns;
mod firewall;
mod host;
mod ipam;
mod none;
mod portmap;
mod protocol;
mod runtimes;
mod security;
mod storm;
mod tuning;
