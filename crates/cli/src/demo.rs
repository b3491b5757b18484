//! `rnet demo`: a lab in throwaway namespaces.
//!
//! Everything lives in namespaces held only by this process's file descriptors
//! and in a temp directory, so nothing survives the process, even on Ctrl-C or
//! SIGKILL; nothing is created in the machine's own namespace.

use anyhow::{Context, Result, bail};
use rnet_cni::runtime::{ConfList, Runtime, RuntimeConf};
use rnet_netlink::Netlink;
use rnet_netns::NetNs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

fn show(result: &rnet_cni::CniResult) {
    for (i, iface) in result.interfaces.iter().enumerate() {
        let addrs: Vec<String> = result
            .ips
            .iter()
            .filter(|ip| ip.interface == Some(i))
            .map(|ip| ip.address.to_string())
            .collect();
        println!("    interface {:<10} {}", iface.name, addrs.join(" "));
    }
    for r in &result.routes {
        let gw = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
        println!("    route {}{gw}", r.dst);
    }
}

/// Runs the demo with plugins from `dirs`.
pub fn run(dirs: &[PathBuf]) -> Result<()> {
    // SAFETY-free check: geteuid via libc is a plain call.
    if unsafe_free_euid() != 0 {
        bail!("the demo creates network namespaces and needs root: run `sudo rnet demo`");
    }
    let state = tempfile::Builder::new()
        .prefix("rnet-demo-")
        .tempdir()
        .context("cannot create a temp dir for the demo's state")?;
    let rt = Runtime::new(dirs.to_vec(), state.path().join("cache"));
    for p in ["rnet-none", "rnet-host"] {
        rnet_cni::exec::find_plugin(p, dirs).map_err(|e| {
            anyhow::anyhow!(
                "{}; build rnet first (cargo build --release) or pass --plugin-dir",
                e.msg
            )
        })?;
    }

    step(
        1,
        "a throwaway \"host\" network namespace (the machine's own is never touched)",
    );
    let host = NetNs::new_unnamed().context("cannot create the lab host namespace")?;
    let mut nl = Netlink::in_netns(&host)?;
    if let Some(lo) = nl.link_by_name("lo")? {
        nl.link_set_up(lo.index)?;
    }
    println!("    host namespace {}", host.id()?);
    let outside = NetNs::new_unnamed().context("cannot create the outside namespace")?;
    uplink(&mut nl, &outside)?;
    println!(
        "    uplink0 198.51.100.1/24 -> an \"outside\" namespace at 198.51.100.2 (default route)"
    );

    step(
        2,
        "a container namespace attached to the `none` network (rnet-none, loopback only)",
    );
    let none = ConfList::parse(
        br#"{"cniVersion":"1.1.0","name":"none","plugins":[{"type":"rnet-none"}]}"#,
    )?;
    let ctr = NetNs::new_unnamed().context("cannot create the container namespace")?;
    let ctr_rt = RuntimeConf {
        container_id: "demo-none".into(),
        netns: Some(ctr.path()),
        ifname: "lo".into(),
        ..RuntimeConf::default()
    };
    let result = host.run(|| rt.add(&none, &ctr_rt))??;
    show(&result);
    host.run(|| rt.check(&none, &ctr_rt))??;
    println!("    CHECK: ok");

    step(
        3,
        "the container's loopback carries traffic: a TCP echo on 127.0.0.1 inside it",
    );
    let listener = ctr.run(|| TcpListener::bind("127.0.0.1:0"))??;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf)?;
        s.write_all(&buf)
    });
    let mut client = ctr.run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(2)))??;
    client.write_all(b"hello")?;
    let mut back = [0u8; 5];
    client.read_exact(&mut back)?;
    let _ = server.join();
    println!(
        "    sent \"hello\" to {addr}, got {:?} back",
        String::from_utf8_lossy(&back)
    );

    step(
        4,
        "a container on the `host` network (rnet-host): it shares the host namespace",
    );
    let hostnet = ConfList::parse(
        br#"{"cniVersion":"1.1.0","name":"host","plugins":[{"type":"rnet-host"}]}"#,
    )?;
    let host_rt = RuntimeConf {
        container_id: "demo-host".into(),
        netns: Some(host.path()),
        ifname: "eth0".into(),
        ..RuntimeConf::default()
    };
    let result = host.run(|| rt.add(&hostnet, &host_rt))??;
    show(&result);
    let wrong = RuntimeConf {
        netns: Some(ctr.path()),
        ..host_rt.clone()
    };
    match host.run(|| rt.add(&hostnet, &wrong))? {
        Err(e) => println!("    ADD with a private namespace is refused: {}", e.msg),
        Ok(_) => bail!("the host plugin accepted a namespace that is not the host's"),
    }

    step(5, "DEL everything and remove the namespaces");
    host.run(|| rt.del(&hostnet, &host_rt))??;
    host.run(|| rt.del(&none, &ctr_rt))??;
    host.run(|| rt.del(&none, &ctr_rt))??;
    println!("    DEL (twice, idempotent): ok");
    drop(ctr);
    drop(outside);
    drop(host);
    println!(
        "    namespaces closed; state dir {} removed",
        state.path().display()
    );
    println!("\ndemo finished: nothing was left behind");
    Ok(())
}

/// A veth from the lab host (`uplink0`) to `outside` (`eth0`), addressed, with
/// the lab host's default route through it: the lab's stand-in for the internet.
fn uplink(nl: &mut Netlink, outside: &NetNs) -> Result<()> {
    use rnet_netlink::{RouteSpec, VethSpec};
    let idx = nl.create_veth(&VethSpec {
        name: "uplink0",
        peer_name: "eth0",
        peer_ns: Some(outside),
        mtu: None,
        mac: None,
        peer_mac: None,
        master: None,
        up: true,
        alias: None,
    })?;
    nl.addr_add(idx, "198.51.100.1/24".parse()?)?;
    nl.route_add(&RouteSpec::default_via("198.51.100.2".parse()?))?;
    let mut onl = Netlink::in_netns(outside)?;
    if let Some(eth) = onl.link_by_name("eth0")? {
        onl.link_set_up(eth.index)?;
        onl.addr_add(eth.index, "198.51.100.2/24".parse()?)?;
    }
    Ok(())
}

fn unsafe_free_euid() -> u32 {
    // /proc/self/status has "Uid: real effective saved fs".
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
