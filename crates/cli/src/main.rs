//! `rnet`: Docker-style networks and lab containers on rnet's CNI plugins.
//!
//! This is the beginning of the CLI: `rnet demo` (the README's main job) and
//! `rnet plugins` (where the plugins are and what they answer to VERSION).

mod demo;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "rnet",
    version,
    about = "Container networking on rnet's CNI plugins"
)]
struct Cli {
    /// Directory holding rnet's plugin executables (default: beside `rnet`, then
    /// /usr/libexec/rnet, /usr/lib/rnet, /opt/cni/bin). Also RNET_PLUGIN_DIR.
    #[arg(long, global = true, env = "RNET_PLUGIN_DIR")]
    plugin_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a self-contained lab demo in throwaway namespaces and remove everything.
    ///
    /// Example: `sudo rnet demo`
    Demo,
    /// Show where rnet's plugins are and the versions they speak.
    Plugins,
}

/// Where the plugin executables are.
pub fn plugin_dirs(explicit: Option<PathBuf>) -> Vec<PathBuf> {
    if let Some(d) = explicit {
        return vec![d];
    }
    let mut dirs = Vec::new();
    if let Some(d) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
    {
        dirs.push(d);
    }
    for d in ["/usr/libexec/rnet", "/usr/lib/rnet", "/opt/cni/bin"] {
        dirs.push(PathBuf::from(d));
    }
    dirs
}

fn main() {
    let cli = Cli::parse();
    let dirs = plugin_dirs(cli.plugin_dir);
    let res: Result<()> = match cli.cmd {
        Cmd::Demo => demo::run(&dirs),
        Cmd::Plugins => plugins(&dirs),
    };
    if let Err(e) = res {
        eprintln!("rnet: error: {e:#}");
        std::process::exit(1);
    }
}

fn plugins(dirs: &[PathBuf]) -> Result<()> {
    let rt = rnet_cni::runtime::Runtime::new(dirs.to_vec(), std::env::temp_dir());
    for p in ["rnet-none", "rnet-host"] {
        match rt.plugin_version(p) {
            Ok(v) => println!("{p:<12} {}", v["supportedVersions"]),
            Err(e) => println!("{p:<12} not found: {}", e.msg),
        }
    }
    Ok(())
}
