//! `rnet reload`, `rnet gc`, `rnet status`.

use crate::{Ctx, container, network};
use anyhow::{Context, Result, bail};
use rnet_cni::Attachment;
use rnet_cni::runtime::ConfList;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Every network that is written down (built-ins not yet used have nothing to do).
fn written(ctx: &Ctx) -> Result<Vec<(network::Network, ConfList)>> {
    let mut out = Vec::new();
    for n in network::list(ctx)? {
        let Some(p) = &n.path else { continue };
        match ConfList::load(p) {
            Ok(l) => out.push((n, l)),
            Err(e) => eprintln!("rnet: warning: skipping {}: {}", p.display(), e.msg),
        }
    }
    Ok(out)
}

/// The state roots the networks' plugins use (`rnetStateDir`, default /run/rnet).
fn state_roots(nets: &[(network::Network, ConfList)]) -> BTreeSet<PathBuf> {
    let mut roots = BTreeSet::new();
    for (n, _) in nets {
        for p in n.plugins() {
            let t = p.get("type").and_then(Value::as_str).unwrap_or("");
            if !matches!(t, "rnet-bridge" | "rnet-portmap" | "bridge" | "portmap") {
                continue;
            }
            let root = p
                .get("rnetStateDir")
                .and_then(Value::as_str)
                .map_or_else(|| PathBuf::from("/run/rnet"), PathBuf::from);
            roots.insert(root);
        }
    }
    roots
}

/// `rnet reload`.
pub fn reload(ctx: &Ctx) -> Result<()> {
    let nets = written(ctx)?;
    let roots = state_roots(&nets);
    if roots.is_empty() {
        println!("no rnet network: nothing to reload");
        return Ok(());
    }
    let mut nft = rnet_nft::Nft::new().context("cannot open an nf_tables socket (root needed)")?;
    for root in roots {
        let r = rnet_nft::rnet::reload(&mut nft, &root)
            .with_context(|| format!("reloading rnet's tables from {}", root.display()))?;
        println!(
            "{}: tables re-applied; {} recorded elements restored, {} carried over{}",
            root.display(),
            r.journaled,
            r.carried,
            if r.failed > 0 {
                format!(", {} records failed (see stderr)", r.failed)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// The attachments of running lab containers.
fn live_attachments(ctx: &Ctx) -> Vec<Attachment> {
    let mut out = Vec::new();
    for r in container::records(ctx) {
        if !container::running(&r) {
            continue;
        }
        let id = r["id"].as_str().unwrap_or_default().to_owned();
        for (_, info) in r["networks"].as_object().into_iter().flatten() {
            out.push(Attachment {
                container_id: id.clone(),
                ifname: info["ifname"].as_str().unwrap_or("eth0").to_owned(),
            });
        }
    }
    out
}

/// `rnet gc`.
pub fn gc(ctx: &Ctx) -> Result<()> {
    let valid = live_attachments(ctx);
    let rt = ctx.runtime();
    let mut failed = 0;
    for (n, list) in written(ctx)? {
        match rt.gc(&list, &valid) {
            Ok(()) => println!("{}: clean", n.name),
            Err(errs) => {
                failed += errs.len();
                for e in errs {
                    eprintln!("rnet: {}: {e}", n.name);
                }
            }
        }
    }
    // Records of containers whose process is gone and that hold no network.
    for r in container::records(ctx) {
        if !container::running(&r)
            && r["networks"].as_object().is_none_or(|m| m.is_empty())
            && !r["detached"].as_bool().unwrap_or(false)
        {
            let _ = container::rm(ctx, r["name"].as_str().unwrap_or_default(), true);
        }
    }
    if failed > 0 {
        bail!("{failed} GC errors (see above)");
    }
    Ok(())
}

/// `rnet status`.
pub fn status(ctx: &Ctx) -> Result<()> {
    let rt = ctx.runtime();
    let mut bad = 0;
    for (n, list) in written(ctx)? {
        match rt.status(&list) {
            Ok(()) => println!("{:<20} ready", n.name),
            Err(e) => {
                bad += 1;
                println!("{:<20} not ready: {} (code {})", n.name, e.msg, e.code);
            }
        }
    }
    if bad > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// rnet's executables and the reference names they stand in for.
pub const COMPAT: &[(&str, &[&str])] = &[
    ("rnet-bridge", &["bridge"]),
    ("rnet-ipam", &["host-local"]),
    ("rnet-portmap", &["portmap"]),
    ("rnet-none", &["loopback"]),
    ("rnet-host", &[]),
    ("rnet-dnsname", &["dnsname"]),
    ("rnet-dns", &[]),
    ("rnet-firewall", &["firewall"]),
    ("rnet-tuning", &["tuning"]),
];

/// `rnet install-plugins`: copies rnet's executables into `dir` and links the
/// reference names to them (relative symlinks, so the directory can move).
/// Executables not built yet are skipped with a note.
pub fn install_plugins(ctx: &Ctx, dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut installed = 0;
    for (exe, aliases) in COMPAT {
        let Some(src) = ctx
            .plugin_dirs
            .iter()
            .map(|d| d.join(exe))
            .find(|p| p.is_file())
        else {
            println!("{exe:<14} not built: skipped");
            continue;
        };
        let dst = dir.join(exe);
        if src.canonicalize().ok() != dst.canonicalize().ok() {
            let tmp = dir.join(format!(".{exe}.tmp"));
            std::fs::copy(&src, &tmp).with_context(|| format!("copying {}", src.display()))?;
            std::fs::rename(&tmp, &dst)?;
        }
        installed += 1;
        let mut names = Vec::new();
        for a in *aliases {
            let link = dir.join(a);
            match std::fs::symlink_metadata(&link) {
                Ok(m) if m.file_type().is_symlink() || m.is_file() => std::fs::remove_file(&link)?,
                Ok(_) => bail!(
                    "{} exists and is not a file; remove it first",
                    link.display()
                ),
                Err(_) => {}
            }
            std::os::unix::fs::symlink(exe, &link)
                .with_context(|| format!("linking {} to {exe}", link.display()))?;
            names.push(*a);
        }
        println!(
            "{exe:<14} {}",
            if names.is_empty() {
                String::new()
            } else {
                format!("as {}", names.join(", "))
            }
        );
    }
    if installed == 0 {
        bail!(
            "no rnet executable found in {:?}: build rnet first or pass --plugin-dir",
            ctx.plugin_dirs
        );
    }
    println!(
        "\npoint the runtime's plugin directory at {}",
        dir.display()
    );
    Ok(())
}
