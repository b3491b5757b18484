//! Lab containers' records: `<stateDir>/containers/<name>.json`.
//!
//! A lab container is a network namespace with a command in it; the record
//! keeps its name, ID, networks and published ports so `ps`, `inspect` and
//! `rm` can find it. (The `run` family of commands builds on this.)

use crate::Ctx;
use serde_json::Value;
use std::path::PathBuf;

fn dir(ctx: &Ctx) -> PathBuf {
    ctx.state_dir.join("containers")
}

/// Every container record.
pub fn records(ctx: &Ctx) -> Vec<Value> {
    let Ok(rd) = std::fs::read_dir(dir(ctx)) else {
        return Vec::new();
    };
    let mut out: Vec<Value> = rd
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    out
}

/// `name (id)` for a container ID, or the ID alone when no record names it.
pub fn display_name(ctx: &Ctx, id: &str) -> String {
    records(ctx)
        .iter()
        .find(|r| r["id"].as_str() == Some(id))
        .and_then(|r| {
            r["name"]
                .as_str()
                .map(|n| format!("{n} ({})", &id[..id.len().min(12)]))
        })
        .unwrap_or_else(|| id.to_owned())
}
