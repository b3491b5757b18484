//! `rnet`: Docker-style networks and lab containers on rnet's CNI plugins.
//!
//! Every network is an ordinary CNI conflist in the config directory
//! (`--config-dir`, `RNET_CONFIG_DIR`, default `/etc/cni/net.d`), so Podman,
//! containerd or cnitool can use it too. State (IPAM leases, the runtime's
//! result cache, lab containers) lives in `--state-dir` (`RNET_STATE_DIR`,
//! default `/var/lib/rnet`).
//!
//! Exit codes: 0 success, 1 an error (the message says what and what to do),
//! 2 a usage error.

mod container;
mod demo;
mod housekeeping;
mod network;
mod portspec;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use rnet_cni::runtime::Runtime;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "rnet",
    version,
    about = "Container networking on rnet's CNI plugins",
    after_help = "Examples:\n  rnet create web --subnet 10.91.0.0/24\n  rnet ls\n  rnet inspect web\n  rnet rm web\n  rnet demo"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Debug, Clone)]
struct Global {
    /// Directory holding rnet's plugin executables (default: beside `rnet`,
    /// then /usr/libexec/rnet, /usr/lib/rnet, /opt/cni/bin).
    #[arg(long, global = true, env = "RNET_PLUGIN_DIR")]
    plugin_dir: Option<PathBuf>,
    /// Where networks are stored as CNI conflists.
    #[arg(
        long,
        global = true,
        env = "RNET_CONFIG_DIR",
        default_value = "/etc/cni/net.d"
    )]
    config_dir: PathBuf,
    /// Where rnet keeps its state (leases, result cache, containers).
    #[arg(
        long,
        global = true,
        env = "RNET_STATE_DIR",
        default_value = "/var/lib/rnet"
    )]
    state_dir: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a network.
    #[command(
        after_help = "Examples:\n  rnet create web\n  rnet create web --subnet 10.91.0.0/24 --gateway 10.91.0.1\n  rnet create lab6 --ipv6 --internal\n  rnet create big --subnet 10.92.0.0/16 --ip-range 10.92.5.0/24 --opt mtu=1400 --label team=a"
    )]
    Create(CreateArgs),
    /// List networks.
    #[command(
        visible_alias = "list",
        after_help = "Examples:\n  rnet ls\n  rnet ls -q\n  rnet ls --format json\n  rnet ls --filter driver=bridge --filter label=team=a"
    )]
    Ls(LsArgs),
    /// Show containers or networks (JSON): config, subnets, attachments with addresses.
    #[command(after_help = "Example:\n  rnet inspect web\n  rnet inspect c1")]
    Inspect {
        /// Container or network names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove containers, or networks (a network is refused while containers are attached).
    #[command(
        visible_alias = "remove",
        after_help = "Examples:\n  rnet rm web     (a container named web, else the network web)\n  rnet rm -f c1   (stop and remove a running container)"
    )]
    Rm {
        /// Stop running containers first.
        #[arg(short, long)]
        force: bool,
        /// Container or network names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Run a command in a new lab container (a network namespace) attached to networks.
    #[command(
        after_help = "Examples:\n  rnet run --name web --network mynet -p 8080:80 -d -- busybox httpd -f -p 80\n  rnet run --network mynet -- ping -c1 web\n  rnet run --network host -- ip addr\n  rnet run --network none -- ip link"
    )]
    Run(RunArgs),
    /// List lab containers.
    #[command(after_help = "Examples:\n  rnet ps\n  rnet ps -a")]
    Ps {
        /// Also stopped containers.
        #[arg(short, long)]
        all: bool,
        /// Only IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Stop lab containers (networks detached, process stopped; `rnet rm` removes them).
    #[command(after_help = "Example:\n  rnet stop web")]
    Stop {
        /// Seconds to wait after SIGTERM before SIGKILL.
        #[arg(short, long, default_value_t = 10)]
        time: u64,
        /// Container names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Run a command inside a running lab container.
    #[command(after_help = "Example:\n  rnet exec web -- wget -qO- http://other")]
    Exec {
        /// Container name.
        name: String,
        /// The command.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Connect a running container to another network.
    #[command(after_help = "Example:\n  rnet connect backend web")]
    Connect {
        /// Network.
        network: String,
        /// Container.
        name: String,
        /// Static address on that network.
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        /// DNS alias on that network.
        #[arg(long)]
        alias: Vec<String>,
    },
    /// Disconnect a container from a network.
    #[command(after_help = "Example:\n  rnet disconnect backend web")]
    Disconnect {
        /// Network.
        network: String,
        /// Container.
        name: String,
    },
    /// List a container's published ports.
    #[command(after_help = "Example:\n  rnet port web")]
    Port {
        /// Container.
        name: String,
    },
    /// Remove every network that has no container attached (built-ins stay).
    #[command(after_help = "Example:\n  rnet prune")]
    Prune,
    /// Docker-style `network` subcommands (the same as the top-level ones).
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Run a self-contained lab demo in throwaway namespaces and remove everything.
    #[command(after_help = "Example:\n  sudo rnet demo")]
    Demo,
    /// Show where rnet's plugins are and the versions they speak.
    Plugins,
    /// Re-apply rnet's nftables tables and every recorded element (after a
    /// firewall reload or `nft flush ruleset`).
    #[command(after_help = "Example:\n  rnet reload")]
    Reload,
    /// CNI GC across networks: remove leases, links, rules and names of
    /// containers that no longer exist (after a crash or a reboot).
    #[command(after_help = "Example:\n  rnet gc")]
    Gc,
    /// CNI STATUS of every network.
    #[command(after_help = "Example:\n  rnet status")]
    Status,
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "Example:\n  rnet completions bash > /etc/bash_completion.d/rnet")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Lay rnet's plugins out under the reference names (bridge, host-local,
    /// portmap, loopback, dnsname, ...) in a directory, so an unmodified runtime
    /// switches to rnet by pointing its plugin directory there.
    #[command(
        after_help = "Examples:\n  rnet install-plugins --dir /opt/rnet/cni\n  then: Podman `cni_plugin_dirs = [\"/opt/rnet/cni\"]`, libcni `CNI_PATH=/opt/rnet/cni`"
    )]
    InstallPlugins {
        /// Target directory (created if missing).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print the man page (roff).
    #[command(after_help = "Example:\n  rnet man > rnet.1 && man ./rnet.1")]
    Man,
}

#[derive(Subcommand, Debug)]
enum NetworkCmd {
    /// Create a network.
    Create(CreateArgs),
    /// List networks.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Show networks.
    Inspect {
        /// Network names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks.
    #[command(visible_alias = "remove")]
    Rm {
        /// Network names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove unused networks.
    Prune,
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// Network name.
    name: String,
    /// Network driver.
    #[arg(short, long, default_value = "bridge")]
    driver: String,
    /// Subnet in CIDR form (repeatable: one IPv4 and/or one IPv6).
    #[arg(long)]
    subnet: Vec<ipnet::IpNet>,
    /// Gateway for a subnet (repeatable).
    #[arg(long)]
    gateway: Vec<std::net::IpAddr>,
    /// Allocate container addresses from this range inside a subnet (repeatable).
    #[arg(long)]
    ip_range: Vec<ipnet::IpNet>,
    /// Also give the network an IPv6 subnet (picked if none is given).
    #[arg(long)]
    ipv6: bool,
    /// No outbound traffic: no masquerade, no default route, no DNS forwarding.
    #[arg(long)]
    internal: bool,
    /// No name resolution between containers.
    #[arg(long)]
    disable_dns: bool,
    /// Stop traffic between this network and other rnet networks.
    #[arg(long)]
    isolate: bool,
    /// Driver option KEY=VALUE: mtu, com.docker.network.driver.mtu, com.docker.network.bridge.name.
    #[arg(short, long = "opt", value_parser = parse_kv)]
    opt: Vec<(String, String)>,
    /// Label KEY=VALUE (repeatable).
    #[arg(long, value_parser = parse_kv)]
    label: Vec<(String, String)>,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Container name (default: generated).
    #[arg(long)]
    name: Option<String>,
    /// Network to attach (repeatable; default `bridge`; also `host`, `none`).
    #[arg(long = "network", visible_alias = "net")]
    network: Vec<String>,
    /// Publish [hostIP:]hostPort[-end]:containerPort[-end][/proto] (repeatable).
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Static address on the first network.
    #[arg(long)]
    ip: Option<std::net::IpAddr>,
    /// DNS alias on the networks (repeatable).
    #[arg(long)]
    alias: Vec<String>,
    /// Run in the background and print the container ID.
    #[arg(short, long)]
    detach: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Args, Debug)]
struct LsArgs {
    /// Only names (Docker prints IDs; rnet's IDs are derived from names).
    #[arg(short, long)]
    quiet: bool,
    /// Output format: table or json.
    #[arg(long, default_value = "table")]
    format: String,
    /// Filter: name=..., driver=..., label=KEY or label=KEY=VALUE (repeatable; all must match).
    #[arg(short, long)]
    filter: Vec<String>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// What every command needs.
pub struct Ctx {
    /// Plugin search path.
    pub plugin_dirs: Vec<PathBuf>,
    /// Conflists.
    pub config_dir: PathBuf,
    /// State.
    pub state_dir: PathBuf,
}

impl Ctx {
    /// The CNI runtime over the plugin dirs, caching results in the state dir.
    pub fn runtime(&self) -> Runtime {
        Runtime::new(self.plugin_dirs.clone(), self.state_dir.join("cache"))
    }
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
    let ctx = Ctx {
        plugin_dirs: plugin_dirs(cli.global.plugin_dir.clone()),
        config_dir: cli.global.config_dir.clone(),
        state_dir: cli.global.state_dir.clone(),
    };
    let res: Result<()> = match cli.cmd {
        Cmd::Create(a) | Cmd::Network(NetworkCmd::Create(a)) => create(&ctx, a),
        Cmd::Ls(a) | Cmd::Network(NetworkCmd::Ls(a)) => ls(&ctx, &a),
        Cmd::Inspect { names } => inspect_any(&ctx, &names),
        Cmd::Network(NetworkCmd::Inspect { names }) => inspect(&ctx, &names),
        Cmd::Rm { names, force } => rm_any(&ctx, &names, force),
        Cmd::Network(NetworkCmd::Rm { names }) => rm(&ctx, &names),
        Cmd::Run(a) => container::run(
            &ctx,
            container::RunOpts {
                name: a.name,
                networks: a.network,
                ports: a.publish,
                ip: a.ip,
                aliases: a.alias,
                detach: a.detach,
                command: a.command,
            },
        )
        .map(|code| {
            if code != 0 {
                std::process::exit(code);
            }
        }),
        Cmd::Ps { all, quiet } => container::ps(&ctx, all, quiet),
        Cmd::Stop { time, names } => names.iter().try_for_each(|n| {
            container::stop(&ctx, n, std::time::Duration::from_secs(time)).map(|()| println!("{n}"))
        }),
        Cmd::Exec { name, command } => container::exec(&ctx, &name, &command).map(|code| {
            if code != 0 {
                std::process::exit(code);
            }
        }),
        Cmd::Connect {
            network,
            name,
            ip,
            alias,
        } => container::connect(&ctx, &network, &name, ip, &alias),
        Cmd::Disconnect { network, name } => container::disconnect(&ctx, &network, &name),
        Cmd::Port { name } => container::port(&ctx, &name),
        Cmd::Prune | Cmd::Network(NetworkCmd::Prune) => prune(&ctx),
        Cmd::Demo => demo::run(&ctx.plugin_dirs),
        Cmd::Plugins => plugins(&ctx),
        Cmd::Reload => housekeeping::reload(&ctx),
        Cmd::InstallPlugins { dir } => housekeeping::install_plugins(&ctx, &dir),
        Cmd::Gc => housekeeping::gc(&ctx),
        Cmd::Status => housekeeping::status(&ctx),
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "rnet", &mut std::io::stdout());
            Ok(())
        }
        Cmd::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .map_err(anyhow::Error::from)
        }
    };
    if let Err(e) = res {
        let red = std::io::stderr().is_terminal();
        if red {
            eprintln!("\x1b[31mrnet: error:\x1b[0m {e:#}");
        } else {
            eprintln!("rnet: error: {e:#}");
        }
        std::process::exit(1);
    }
}

fn create(ctx: &Ctx, a: CreateArgs) -> Result<()> {
    let n = network::create(
        ctx,
        network::CreateOpts {
            name: a.name,
            driver: a.driver,
            subnets: a.subnet,
            gateways: a.gateway,
            ip_ranges: a.ip_range,
            ipv6: a.ipv6,
            internal: a.internal,
            disable_dns: a.disable_dns,
            isolate: a.isolate,
            opts: a.opt.into_iter().collect(),
            labels: a.label.into_iter().collect(),
        },
    )?;
    println!("{}", n.name);
    Ok(())
}

fn matches(n: &network::Network, filters: &[String]) -> Result<bool> {
    for f in filters {
        let Some((k, v)) = f.split_once('=') else {
            bail!("--filter {f:?}: expected KEY=VALUE (name=, driver=, label=)");
        };
        let ok = match k {
            "name" => n.name.contains(v),
            "driver" => n.driver() == v,
            "id" => n.id().starts_with(v),
            "label" => {
                let labels = n.labels();
                match v.split_once('=') {
                    Some((lk, lv)) => labels.get(lk).is_some_and(|x| x == lv),
                    None => labels.contains_key(v),
                }
            }
            other => bail!("--filter {other}: unknown filter; use name, driver, id or label"),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn summary(n: &network::Network) -> Value {
    json!({
        "ID": n.id(),
        "Name": n.name,
        "Driver": n.driver(),
        "Scope": "local",
        "Subnets": n.subnets().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "Labels": n.labels(),
    })
}

fn ls(ctx: &Ctx, a: &LsArgs) -> Result<()> {
    let mut nets = Vec::new();
    for n in network::list(ctx)? {
        if matches(&n, &a.filter)? {
            nets.push(n);
        }
    }
    if a.quiet {
        for n in &nets {
            println!("{}", n.name);
        }
        return Ok(());
    }
    match a.format.as_str() {
        "json" => {
            let v: Vec<Value> = nets.iter().map(summary).collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        "table" => {
            println!(
                "{:<14}{:<20}{:<10}{:<8}SUBNETS",
                "NETWORK ID", "NAME", "DRIVER", "SCOPE"
            );
            for n in &nets {
                let subnets: Vec<String> = n.subnets().iter().map(ToString::to_string).collect();
                println!(
                    "{:<14}{:<20}{:<10}{:<8}{}",
                    n.id(),
                    n.name,
                    n.driver(),
                    "local",
                    subnets.join(",")
                );
            }
        }
        other => bail!("--format {other}: use table or json"),
    }
    Ok(())
}

fn inspect(ctx: &Ctx, names: &[String]) -> Result<()> {
    let mut out = Vec::new();
    for name in names {
        let n = network::get(ctx, name)?;
        let mut containers = BTreeMap::new();
        for att in network::attachments(ctx, name) {
            let addrs: Vec<String> = att
                .result
                .as_ref()
                .and_then(|r| r.get("ips"))
                .and_then(Value::as_array)
                .map(|ips| {
                    ips.iter()
                        .filter_map(|i| i["address"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            containers.insert(
                att.rt.container_id.clone(),
                json!({"Name": container::display_name(ctx, &att.rt.container_id),
                       "Interface": att.rt.ifname, "Addresses": addrs,
                       "Netns": att.rt.netns}),
            );
        }
        let mut v = summary(&n);
        v["ConfigPath"] = json!(n.path);
        v["Bridge"] = json!(n.bridge());
        if let Some(m) = n.meta() {
            for (k, key) in [
                ("created", "Created"),
                ("internal", "Internal"),
                ("dns", "DNS"),
                ("isolate", "Isolate"),
                ("options", "Options"),
            ] {
                if let Some(x) = m.get(k) {
                    v[key] = x.clone();
                }
            }
        }
        v["Containers"] = json!(containers);
        v["Config"] = n.conf.clone();
        out.push(v);
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `rnet inspect`: containers by name, else networks.
fn inspect_any(ctx: &Ctx, names: &[String]) -> Result<()> {
    if names.iter().all(|n| container::find(ctx, n).is_some()) {
        let v: Vec<Value> = names
            .iter()
            .filter_map(|n| container::find(ctx, n))
            .map(|r| container::inspect_value(&r))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    inspect(ctx, names)
}

/// `rnet rm`: a container by that name, else a network.
fn rm_any(ctx: &Ctx, names: &[String], force: bool) -> Result<()> {
    let mut failed = false;
    for name in names {
        let res = if container::find(ctx, name).is_some() {
            container::rm(ctx, name, force)
        } else {
            network::remove(ctx, name)
        };
        match res {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("rnet: error: {e:#}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

fn rm(ctx: &Ctx, names: &[String]) -> Result<()> {
    let mut failed = false;
    for name in names {
        match network::remove(ctx, name) {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("rnet: error: {e:#}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

fn prune(ctx: &Ctx) -> Result<()> {
    for n in network::list(ctx)? {
        if n.path.is_none() || network::BUILTIN.contains(&n.name.as_str()) {
            continue;
        }
        if n.meta().is_none() {
            continue; // not made by rnet: leave other tools' networks alone
        }
        if network::attachments(ctx, &n.name).is_empty() {
            network::remove(ctx, &n.name).with_context(|| format!("removing {}", n.name))?;
            println!("{}", n.name);
        }
    }
    Ok(())
}

fn plugins(ctx: &Ctx) -> Result<()> {
    let rt = ctx.runtime();
    for p in [
        "rnet-none",
        "rnet-host",
        "rnet-ipam",
        "rnet-bridge",
        "rnet-portmap",
        "rnet-dnsname",
    ] {
        match rt.plugin_version(p) {
            Ok(v) => println!("{p:<14} {}", v["supportedVersions"]),
            Err(e) => println!("{p:<14} not found: {}", e.msg),
        }
    }
    Ok(())
}
