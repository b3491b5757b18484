//! `rnet demo`: the README's main job. A whole lab in throwaway namespaces:
//! a stand-in "host" namespace with an uplink to an "outside" namespace, an
//! rnet network, a web server container with a published port, and a client
//! container that finds it by name. Every step is an ordinary `rnet` command
//! (printed with its output) run inside the lab host, with its configuration
//! and state in a temp directory.
//!
//! Nothing is created in the machine's own network namespace. Everything is
//! removed at the end, also after an error or Ctrl-C: containers are removed,
//! the DNS resolver the plugins started is stopped by its PID, and this
//! process is a child subreaper, so any process the demo started that is
//! still around at the end (and only those) is stopped by PID. The
//! namespaces are held by file descriptors and vanish with them.

use anyhow::{Context, Result, bail};
use rnet_netlink::{Netlink, RouteSpec, VethSpec};
use rnet_netns::NetNs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

struct Demo {
    host: NetNs,
    outside: NetNs,
    dir: tempfile::TempDir,
    plugin_dirs: Vec<PathBuf>,
    stop: Arc<AtomicBool>,
}

fn euid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|u| u.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

fn busybox() -> Result<&'static str> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("the demo's containers run busybox: install busybox-static (scripts/deps.sh does)")
}

impl Demo {
    /// Runs `rnet ARGS` inside the lab host; prints the command and its output.
    fn rnet(&self, args: &[&str]) -> Result<String> {
        if self.stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        println!("  $ rnet {}", args.join(" "));
        let exe = std::env::current_exe()?;
        let mut c = Command::new(exe);
        c.args(args)
            .env("RNET_CONFIG_DIR", self.dir.path().join("net.d"))
            .env("RNET_STATE_DIR", self.dir.path().join("state"))
            .env(
                "RNET_PLUGIN_DIR",
                self.plugin_dirs.first().cloned().unwrap_or_default(),
            );
        let out = self.host.output(&mut c)?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        for l in text.lines() {
            println!("    {l}");
        }
        if !out.status.success() {
            bail!(
                "`rnet {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(text)
    }

    /// Runs a command in the outside namespace (the internet stand-in).
    fn outside(&self, args: &[&str]) -> Result<String> {
        println!("  (outside)$ {}", args.join(" "));
        let mut c = Command::new("timeout");
        c.arg("5").args(args);
        let out = self.outside.output(&mut c)?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        for l in text.lines() {
            println!("    {l}");
        }
        if !out.status.success() {
            bail!("{} failed in the outside namespace", args.join(" "));
        }
        Ok(text)
    }

    /// Removes what the steps made, whatever state they left.
    fn cleanup(&self) {
        let state = self.dir.path().join("state");
        let exe = std::env::current_exe().unwrap_or_default();
        let quiet = |args: &[&str]| {
            let mut c = Command::new(&exe);
            c.args(args)
                .env("RNET_CONFIG_DIR", self.dir.path().join("net.d"))
                .env("RNET_STATE_DIR", &state)
                .env(
                    "RNET_PLUGIN_DIR",
                    self.plugin_dirs.first().cloned().unwrap_or_default(),
                );
            self.host.output(&mut c).ok()
        };
        if let Some(o) = quiet(&["ps", "-a", "-q"]) {
            for id in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = quiet(&["rm", "-f", id]);
            }
        }
        let _ = quiet(&["rm", "demo"]);
        // The resolver the DNS plugin started (its PID file is in our state dir).
        for pidfile in [
            state.join("run/dns/rnet-dns.pid"),
            state.join("run/rnet-dns.pid"),
        ] {
            if let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        // The resolver exits on SIGTERM; anything else the demo started that
        // outlived its parent was re-parented to us (subreaper). Wait a moment,
        // then stop what is left, by PID, and reap it.
        let t = std::time::Instant::now();
        while !orphans().is_empty() && t.elapsed() < std::time::Duration::from_secs(3) {
            reap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        for pid in orphans() {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        let t = std::time::Instant::now();
        while !orphans().is_empty() && t.elapsed() < std::time::Duration::from_secs(2) {
            reap();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// Our children that are not threads of ours (re-parented orphans included).
fn orphans() -> Vec<rustix::process::Pid> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(me) {
            out.extend(rustix::process::Pid::from_raw(pid));
        }
    }
    out
}

fn reap() {
    for _ in 0..50 {
        match rustix::process::wait(rustix::process::WaitOptions::NOHANG) {
            Ok(Some(_)) => {}
            _ => break,
        }
    }
}

fn uplink(host: &NetNs, outside: &NetNs) -> Result<()> {
    let mut nl = Netlink::in_netns(host)?;
    if let Some(lo) = nl.link_by_name("lo")? {
        nl.link_set_up(lo.index)?;
    }
    let idx = nl.create_veth(&VethSpec {
        name: "uplink0",
        peer_name: "eth0",
        peer_ns: Some(outside),
        up: true,
        ..VethSpec::default()
    })?;
    nl.addr_add(idx, "198.51.100.1/24".parse()?)?;
    nl.route_add(&RouteSpec::default_via("198.51.100.2".parse()?))?;
    let mut onl = Netlink::in_netns(outside)?;
    if let Some(eth) = onl.link_by_name("eth0")? {
        onl.link_set_up(eth.index)?;
        onl.addr_add(eth.index, "198.51.100.2/24".parse()?)?;
    }
    if let Some(lo) = onl.link_by_name("lo")? {
        onl.link_set_up(lo.index)?;
    }
    Ok(())
}

/// Runs the demo with plugins from `dirs`.
pub fn run(dirs: &[PathBuf]) -> Result<()> {
    if euid() != 0 {
        bail!("the demo creates network namespaces and needs root: run it as root");
    }
    for p in [
        "rnet-bridge",
        "rnet-ipam",
        "rnet-portmap",
        "rnet-dnsname",
        "rnet-dns",
    ] {
        if !dirs.iter().any(|d| d.join(p).is_file()) {
            bail!(
                "plugin {p} not found in {dirs:?}; build rnet first (cargo build --release) or pass --plugin-dir"
            );
        }
    }
    let bb = busybox()?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    let demo = Demo {
        host: NetNs::new_unnamed().context("cannot create the lab host namespace")?,
        outside: NetNs::new_unnamed().context("cannot create the outside namespace")?,
        dir: tempfile::Builder::new().prefix("rnet-demo-").tempdir()?,
        plugin_dirs: dirs.to_vec(),
        stop,
    };
    let res = steps(&demo, bb);
    println!("\n[6] clean up: containers, network, resolver, namespaces, temp dir");
    demo.cleanup();
    match &res {
        Ok(()) => println!("\ndemo finished: everything it made is gone"),
        Err(e) => println!("\ndemo stopped: {e:#}; everything it made is gone"),
    }
    res
}

fn steps(d: &Demo, bb: &str) -> Result<()> {
    println!(
        "[1] a throwaway lab: a \"host\" namespace with uplink0 198.51.100.1/24 to an \"outside\" namespace (198.51.100.2); the machine's own network is never touched"
    );
    uplink(&d.host, &d.outside)?;

    println!(
        "\n[2] a network (a CNI conflist: rnet-bridge + rnet-ipam, rnet-portmap, rnet-dnsname)"
    );
    d.rnet(&["create", "demo", "--subnet", "10.123.0.0/24"])?;
    d.rnet(&["ls"])?;

    println!("\n[3] a web server container publishing port 8080 -> 80");
    let www = d.dir.path().join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), "hello from the web container\n")?;
    let www_s = www.display().to_string();
    d.rnet(&[
        "run",
        "--name",
        "web",
        "--network",
        "demo",
        "--alias",
        "www",
        "-p",
        "8080:80",
        "-d",
        "--",
        bb,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        &www_s,
    ])?;
    d.rnet(&["ps"])?;
    d.rnet(&["port", "web"])?;

    println!("\n[4] a second container finds it by name (DNS) and fetches the page");
    d.rnet(&[
        "run",
        "--name",
        "client",
        "--network",
        "demo",
        "--",
        bb,
        "nslookup",
        "web",
    ])?;
    let page = d.rnet(&[
        "run",
        "--name",
        "client",
        "--network",
        "demo",
        "--",
        bb,
        "wget",
        "-qO-",
        "http://www/",
    ])?;
    if !page.contains("hello from the web container") {
        bail!("the client did not get the page by name");
    }

    println!("\n[5] the published port answers from outside the host");
    let page = d.outside(&[bb, "wget", "-qO-", "http://198.51.100.1:8080/"])?;
    if !page.contains("hello from the web container") {
        bail!("the published port did not answer from outside");
    }
    d.rnet(&["rm", "-f", "web"])?;
    d.rnet(&["rm", "demo"])?;
    Ok(())
}
