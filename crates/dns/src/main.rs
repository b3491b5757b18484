//! `rnet-dns`: the inter-container DNS resolver daemon and its control CLI.
//!
//! ```text
//! rnet-dns run --state-dir DIR [--foreground] [--port 53] [--upstream ADDR]... [--idle-exit MS]
//! rnet-dns ctl --state-dir DIR '{"op":"list"}'
//! ```
//! `run` without `--foreground` starts a detached resolver (as the dnsname
//! plugin does), waits until it is ready and prints its pid.

use clap::{Parser, Subcommand};
use rnet_dns::control::{Client, Request};
use rnet_dns::daemon::{self, DaemonConfig, Launcher};
use rnet_dns::server::ServerConfig;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "rnet-dns",
    version,
    about = "rnet's inter-container DNS resolver"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the resolver.
    Run {
        /// State directory (registry, control socket, log).
        #[arg(long, default_value = daemon::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Serve in this process (otherwise start a detached resolver and wait for it).
        #[arg(long)]
        foreground: bool,
        /// Start a new session (used by launchers).
        #[arg(long, hide = true)]
        detach: bool,
        /// DNS port on the gateway addresses.
        #[arg(long, default_value_t = 53)]
        port: u16,
        /// Upstream server (IP, IP:PORT, [IPv6]:PORT); repeatable. Default: /etc/resolv.conf.
        #[arg(long = "upstream")]
        upstreams: Vec<String>,
        /// Exit this many milliseconds after the last name is removed (0: never).
        #[arg(long, default_value_t = 30_000)]
        idle_exit: u64,
        /// Forwarding cache size in responses.
        #[arg(long, default_value_t = 4096)]
        cache_entries: usize,
    },
    /// Send one JSON control request and print the reply.
    Ctl {
        /// State directory.
        #[arg(long, default_value = daemon::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// The request, e.g. '{"op":"list"}'.
        request: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run {
            state_dir,
            foreground,
            detach,
            port,
            upstreams,
            idle_exit,
            cache_entries,
        } => {
            let mut ups = Vec::new();
            for u in &upstreams {
                match daemon::parse_upstream(u) {
                    Ok(a) => ups.push(a),
                    Err(e) => {
                        eprintln!("rnet-dns: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            let idle = (idle_exit > 0).then(|| Duration::from_millis(idle_exit));
            if !foreground {
                let mut l = Launcher::new(
                    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("rnet-dns")),
                    &state_dir,
                );
                l.port = port;
                l.upstreams = ups;
                l.idle_exit = idle;
                return match l.start() {
                    Ok(pid) => {
                        println!("{pid}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("rnet-dns: {e}");
                        ExitCode::from(2)
                    }
                };
            }
            let mut server = ServerConfig {
                port,
                default_upstreams: ups,
                ..ServerConfig::default()
            };
            server.forward.cache_entries = cache_entries;
            let cfg = DaemonConfig {
                state_dir,
                server,
                idle_exit: idle,
                detach,
            };
            match daemon::run(cfg, &mut daemon::signal_ready) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rnet-dns: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Ctl { state_dir, request } => {
            let req: Request = match serde_json::from_str(&request) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("rnet-dns: bad request: {e}");
                    return ExitCode::from(2);
                }
            };
            match Client::connect(&state_dir).and_then(|mut c| c.request(&req)) {
                Ok(r) => {
                    println!("{}", serde_json::to_string(&r).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("rnet-dns: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
