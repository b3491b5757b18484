//! The slow path: hand a whole ruleset to `nft -f -` (one exec, one transaction).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rnet_netns::NetNs;

use crate::NftError;

/// Where `nft` is looked for before `PATH` (CNI plugins often run with a
/// minimal `PATH`).
pub const NFT_DIRS: [&str; 2] = ["/usr/sbin", "/sbin"];

/// Find the `nft` executable: `/usr/sbin/nft`, `/sbin/nft`, then `PATH`.
pub fn find_nft() -> Result<PathBuf, NftError> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let dirs = NFT_DIRS
        .iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path_var));
    let mut searched = Vec::new();
    for d in dirs {
        let cand = d.join("nft");
        if is_executable(&cand) {
            return Ok(cand);
        }
        searched.push(d.display().to_string());
    }
    Err(NftError::NftNotFound {
        searched: searched.join(":"),
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Apply `text` with `nft -f -` in the **calling thread's** network
/// namespace (a child inherits the namespace of the thread that spawns it).
///
/// The file is one nft transaction: either all of it applies or nothing
/// does. On failure [`NftError::NftFailed`] carries nft's stderr (which
/// names the line and token at fault); callers report it as CNI error 102.
pub fn apply_ruleset(text: &str) -> Result<(), NftError> {
    let nft = find_nft()?;
    run_nft(&nft, text)
}

/// Like [`apply_ruleset`], but inside `ns`: the child is spawned from a fresh
/// thread that entered `ns` (the calling thread never switches).
pub fn apply_ruleset_in(ns: &NetNs, text: &str) -> Result<(), NftError> {
    let nft = find_nft()?;
    ns.run(|| run_nft(&nft, text))?
}

fn run_nft(nft: &Path, text: &str) -> Result<(), NftError> {
    let spawn_err = |source| NftError::NftSpawn {
        program: nft.display().to_string(),
        source,
    };
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    // nft reads its whole input before parsing, so writing everything first
    // and then collecting stderr cannot deadlock.
    let write_result = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(text.as_bytes()),
        None => Ok(()),
    };
    let out = child.wait_with_output().map_err(spawn_err)?;
    if out.status.success() {
        // A write error with a successful exit cannot happen (nft would have
        // seen a truncated file); report it anyway rather than guess.
        return write_result.map_err(spawn_err);
    }
    Err(NftError::NftFailed {
        status: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn finds_nft_or_says_where_it_looked() {
        match find_nft() {
            Ok(p) => assert!(p.ends_with("nft")),
            Err(NftError::NftNotFound { searched }) => assert!(searched.contains("/usr/sbin")),
            Err(e) => panic!("unexpected {e}"),
        }
    }
}
