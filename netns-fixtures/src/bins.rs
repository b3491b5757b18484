//! Locating the workspace's built plugin executables.

use std::path::PathBuf;

use crate::{FixtureError, Result};

/// Where the built binary `name` (e.g. `rnet-bridge`) should be.
///
/// `CARGO_BIN_EXE_*` only covers the test's own package, so: `$RNET_BIN_DIR/name`
/// if that variable is set, else the cargo target directory of the running test
/// executable (`current_exe()` is `target/debug/deps/x-HASH`, so its parent's
/// parent, `target/debug`). The path may not exist; see [`find_plugin`].
pub fn plugin_path(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("RNET_BIN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(|deps| {
        if deps.file_name().is_some_and(|n| n == "deps") {
            deps.parent().unwrap_or(deps).to_path_buf()
        } else {
            deps.to_path_buf()
        }
    });
    dir.unwrap_or_default().join(name)
}

/// [`plugin_path`], checked: an error naming the path and the build command if
/// the binary is not there.
pub fn find_plugin(name: &str) -> Result<PathBuf> {
    let p = plugin_path(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(FixtureError::Missing(format!(
            "plugin binary {} not found; build it first (cargo build --bins in the workspace) or set RNET_BIN_DIR",
            p.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn default_is_next_to_deps() {
        if std::env::var_os("RNET_BIN_DIR").is_some() {
            return; // covered by the explicit setting
        }
        let p = plugin_path("rnet-bridge");
        assert_eq!(p.file_name().unwrap(), "rnet-bridge");
        let exe = std::env::current_exe().unwrap();
        // target/debug/deps/test-bin -> target/debug/rnet-bridge
        assert_eq!(p.parent().unwrap(), exe.parent().unwrap().parent().unwrap());
        assert!(find_plugin("definitely-not-a-plugin").is_err());
    }
}
