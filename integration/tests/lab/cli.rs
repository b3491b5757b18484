//! The `rnet` command run inside a throwaway host namespace: networks
//! (`create`, `ls`, `inspect`, `rm`, `prune`), their conflists, and errors.

use crate::common::{container_veths, lab, lease_count, reference, rnet};
use netns_fixtures::{Lab, OutsideConfig, ping};
use rnet_cni::runtime::{ConfList, Runtime, RuntimeConf};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

struct Cli<'a> {
    lab: &'a Lab,
    conf: PathBuf,
    state: PathBuf,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl<'a> Cli<'a> {
    fn new(lab: &'a Lab) -> Self {
        Self {
            lab,
            conf: lab.state_dir().join("net.d"),
            state: lab.state_dir().join("rnet"),
        }
    }

    fn run(&self, args: &[&str]) -> Out {
        let mut c = Command::new(rnet("rnet"));
        c.args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("RNET_CONFIG_DIR", &self.conf)
            .env("RNET_STATE_DIR", &self.state);
        let o = self
            .lab
            .host()
            .output(&mut c)
            .expect("run rnet in the lab host");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(o.code, 0, "rnet {args:?} failed: {}{}", o.stdout, o.stderr);
        o.stdout
    }

    fn err(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(
            o.code, 1,
            "rnet {args:?} should fail: {}{}",
            o.stdout, o.stderr
        );
        assert!(
            o.stdout.is_empty(),
            "errors go to stderr only: {}",
            o.stdout
        );
        assert!(
            !o.stderr.contains("panicked") && !o.stderr.contains("RUST_BACKTRACE"),
            "{}",
            o.stderr
        );
        o.stderr
    }
}

#[test]
fn networks_lifecycle() {
    let lab = lab();
    let cli = Cli::new(&lab);
    // The built-ins are always there.
    let ls = cli.ok(&["ls"]);
    for b in ["bridge", "host", "none"] {
        assert!(
            ls.lines().any(|l| l.split_whitespace().nth(1) == Some(b)),
            "{ls}"
        );
    }
    assert!(ls.starts_with("NETWORK ID"));
    assert_eq!(cli.ok(&["create", "web"]).trim(), "web");
    cli.ok(&[
        "network",
        "create",
        "lab6",
        "--ipv6",
        "--internal",
        "--label",
        "team=a",
        "--opt",
        "mtu=1400",
    ]);
    cli.ok(&[
        "create",
        "fixed",
        "--subnet",
        "10.93.0.0/24",
        "--gateway",
        "10.93.0.254",
        "--ip-range",
        "10.93.0.128/25",
        "--disable-dns",
        "--isolate",
    ]);
    // Each is a valid conflist in the config dir.
    for n in ["web", "lab6", "fixed"] {
        let p = cli.conf.join(format!("{n}.conflist"));
        let list = ConfList::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(list.name, n);
    }
    let json: Value = serde_json::from_str(&cli.ok(&["ls", "--format", "json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 6);
    assert_eq!(
        cli.ok(&["ls", "-q", "--filter", "label=team=a"]).trim(),
        "lab6"
    );
    assert_eq!(
        cli.ok(&["ls", "-q", "--filter", "name=fix"]).trim(),
        "fixed"
    );
    let v: Value = serde_json::from_str(&cli.ok(&["inspect", "fixed", "lab6"])).unwrap();
    let fixed = &v[0];
    assert_eq!(fixed["Subnets"], json!(["10.93.0.0/24"]));
    let bridge = &fixed["Config"]["plugins"][0];
    assert_eq!(bridge["isolation"], true);
    let range = &bridge["ipam"]["ranges"][0][0];
    assert_eq!(range["gateway"], "10.93.0.254");
    assert_eq!(range["rangeStart"], "10.93.0.129");
    assert_eq!(range["rangeEnd"], "10.93.0.254");
    assert!(
        fixed["Config"]["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["type"] != "rnet-dnsname")
    );
    let lab6 = &v[1];
    assert_eq!(lab6["Internal"], true);
    assert_eq!(lab6["Config"]["plugins"][0]["ipMasq"], false);
    assert_eq!(lab6["Config"]["plugins"][0]["mtu"], 1400);
    assert_eq!(lab6["Subnets"].as_array().unwrap().len(), 2);
    assert!(
        lab6["Config"]["plugins"][0]["ipam"]["routes"]
            .as_array()
            .unwrap()
            .is_empty(),
        "internal: no default route"
    );
    // Removal and prune.
    assert_eq!(cli.ok(&["rm", "web"]).trim(), "web");
    assert!(!cli.conf.join("web.conflist").exists());
    let pruned = cli.ok(&["prune"]);
    assert!(
        pruned.contains("lab6") && pruned.contains("fixed"),
        "{pruned}"
    );
    assert_eq!(
        cli.ok(&["ls", "-q"]).split_whitespace().collect::<Vec<_>>(),
        ["bridge", "host", "none"]
    );
}

#[test]
fn errors_say_what_is_wrong() {
    let lab = lab();
    let _out = lab.add_outside(OutsideConfig::default()).unwrap();
    let cli = Cli::new(&lab);
    cli.ok(&["create", "a", "--subnet", "10.94.0.0/24"]);
    assert!(cli.err(&["create", "a"]).contains("already exists"));
    assert!(
        cli.err(&["create", "b", "--subnet", "10.94.0.128/25"])
            .contains("overlaps")
    );
    // A route on the host counts as used: the uplink's 198.51.100.0/24.
    assert!(
        cli.err(&["create", "c", "--subnet", "198.51.100.0/24"])
            .contains("overlaps")
    );
    assert!(cli.err(&["create", "host"]).contains("built-in"));
    assert!(
        cli.err(&["create", "d", "--gateway", "10.1.1.1"])
            .contains("none of the subnets")
    );
    assert!(
        cli.err(&["create", "e", "--opt", "bogus=1"])
            .contains("unknown option")
    );
    assert!(cli.err(&["create", "f", "--opt", "mtu=9"]).contains("mtu"));
    assert!(cli.err(&["create", "bad/name"]).contains("network name"));
    assert!(cli.err(&["inspect", "nope"]).contains("no network named"));
    assert!(cli.err(&["rm", "none"]).contains("built-in"));
    assert!(
        cli.err(&["ls", "--filter", "color=red"])
            .contains("unknown filter")
    );
    let usage = cli.run(&["create"]);
    assert_eq!(usage.code, 2, "usage errors exit 2");
}

#[test]
fn picks_a_free_subnet() {
    let lab = lab();
    let cli = Cli::new(&lab);
    // Occupy the first /24 of the pool with a route on the lab host.
    let mut nl = lab.netlink().unwrap();
    let lo = nl.link_by_name("lo").unwrap().unwrap();
    let mut r = rnet_netlink::RouteSpec::new("10.90.0.0/24".parse().unwrap());
    r.oif = Some(lo.index);
    nl.route_add(&r).unwrap();
    cli.ok(&["create", "one"]);
    cli.ok(&["create", "two"]);
    let v: Value = serde_json::from_str(&cli.ok(&["inspect", "one", "two"])).unwrap();
    assert_eq!(v[0]["Subnets"], json!(["10.90.1.0/24"]));
    assert_eq!(v[1]["Subnets"], json!(["10.90.2.0/24"]));
}

/// The conflists `rnet create` writes work with the reference plugins too
/// (types mapped to the reference names), and `rnet rm` refuses a network
/// with an attached container, naming it.
#[test]
fn conflists_work_with_reference_plugins() {
    let lab = lab();
    let cli = Cli::new(&lab);
    cli.ok(&[
        "create",
        "refnet",
        "--subnet",
        "10.95.0.0/24",
        "--disable-dns",
    ]);
    let p = cli.conf.join("refnet.conflist");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let plugins = v["plugins"].as_array_mut().unwrap();
    plugins.retain(|p| p["type"] == "rnet-bridge"); // the reference portmap needs iptables
    plugins[0]["type"] = json!("bridge");
    plugins[0]["ipam"]["type"] = json!("host-local");
    v["cniVersion"] = json!("1.0.0");
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let list = ConfList::load(&p).unwrap();
    let rt = Runtime::new(
        vec![reference("bridge").parent().unwrap().to_path_buf()],
        cli.state.join("cache"),
    );
    let ctr = lab.add_container("c1").unwrap();
    let conf = RuntimeConf {
        container_id: "c1".into(),
        netns: Some(ctr.netns_path()),
        ifname: "eth0".into(),
        ..RuntimeConf::default()
    };
    let r = lab.host().run(|| rt.add(&list, &conf)).unwrap().unwrap();
    assert_eq!(r.ips[0].address.to_string(), "10.95.0.2/24");
    ping(
        ctr.ns(),
        "10.95.0.1".parse().unwrap(),
        Duration::from_secs(3),
    )
    .unwrap();
    let v: Value = serde_json::from_str(&cli.ok(&["inspect", "refnet"])).unwrap();
    assert_eq!(
        v[0]["Containers"]["c1"]["Addresses"],
        json!(["10.95.0.2/24"])
    );
    let e = cli.err(&["rm", "refnet"]);
    assert!(e.contains("attached containers") && e.contains("c1"), "{e}");
    lab.host().run(|| rt.del(&list, &conf)).unwrap().unwrap();
    assert!(
        lab.netlink()
            .unwrap()
            .link_by_name(v[0]["Bridge"].as_str().unwrap())
            .unwrap()
            .is_some()
    );
}

fn busybox() -> &'static str {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).exists() {
            return p;
        }
    }
    panic!("busybox missing: install busybox-static (scripts/deps.sh does)");
}

/// Removes every lab container on drop, so a failing test leaves no process behind.
struct Cleanup<'a>(&'a Cli<'a>);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let ids = self.0.run(&["ps", "-a", "-q"]).stdout;
        for id in ids.split_whitespace() {
            let _ = self.0.run(&["rm", "-f", id]);
        }
        // The resolver the DNS plugin started for this lab: stop it by its PID.
        let pidfile = self.0.state.join("run/dns/rnet-dns.pid");
        if let Some(pid) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

#[test]
fn containers_lifecycle_with_published_port() {
    let lab = lab();
    let outside = lab.add_outside(OutsideConfig::default()).unwrap();
    let cli = Cli::new(&lab);
    let _c = Cleanup(&cli);
    let www = lab.state_dir().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from s1\n").unwrap();
    cli.ok(&["create", "web", "--subnet", "10.98.0.0/24", "--disable-dns"]);
    let id = cli.ok(&[
        "run",
        "--name",
        "s1",
        "--network",
        "web",
        "-p",
        "8080:80",
        "-d",
        "--",
        busybox(),
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        www.to_str().unwrap(),
    ]);
    assert_eq!(id.trim().len(), 32, "{id}");
    let ps = cli.ok(&["ps"]);
    assert!(
        ps.contains("s1") && ps.contains("Up") && ps.contains("8080:80"),
        "{ps}"
    );
    assert_eq!(cli.ok(&["port", "s1"]).trim(), "80/tcp -> 0.0.0.0:8080");
    let v: Value = serde_json::from_str(&cli.ok(&["inspect", "s1"])).unwrap();
    let ip = v[0]["networks"]["web"]["ips"][0]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(ip, "10.98.0.2");
    // Inside: its name, its hosts file, the network's address.
    assert_eq!(cli.ok(&["exec", "s1", "--", "hostname"]).trim(), "s1");
    let hosts = cli.ok(&["exec", "s1", "--", "cat", "/etc/hosts"]);
    assert!(hosts.contains("10.98.0.2\ts1"), "{hosts}");
    // Another container reaches it by address; a foreground run returns the command's code.
    let got = cli.ok(&[
        "run",
        "--network",
        "web",
        "--",
        busybox(),
        "wget",
        "-qO-",
        "http://10.98.0.2/",
    ]);
    assert_eq!(got, "hello from s1\n");
    assert_eq!(
        cli.run(&["run", "--network", "web", "--", "sh", "-c", "exit 3"])
            .code,
        3
    );
    // The published port from the host (localhost and uplink address) and from outside.
    let wget = |ns: &rnet_netns::NetNs, url: &str| -> String {
        // (busybox wget's own -T crashes in Debian 12's build: use timeout(1).)
        let mut c = Command::new("timeout");
        c.args(["5", busybox(), "wget", "-qO-", url]);
        let o = ns.output(&mut c).unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(
        wget(lab.host(), "http://127.0.0.1:8080/"),
        "hello from s1\n"
    );
    assert_eq!(
        wget(outside.ns(), &format!("http://{}:8080/", outside.host_v4())),
        "hello from s1\n"
    );
    // A second container cannot take the same name or host port.
    assert!(
        cli.err(&["run", "--name", "s1", "--network", "web", "--", "true"])
            .contains("already in use")
    );
    let e = cli.err(&[
        "run",
        "--name",
        "s2",
        "--network",
        "web",
        "-p",
        "8080:80",
        "--",
        "true",
    ]);
    assert!(e.contains("8080"), "{e}");
    assert!(
        cli.run(&["ps", "-a", "-q"]).stdout.lines().count() == 1,
        "the failed run left nothing"
    );
    // Stop: the port closes, the record stays; rm removes it.
    cli.ok(&["stop", "-t", "1", "s1"]);
    assert!(cli.ok(&["ps", "-a"]).contains("Exited"));
    assert_eq!(wget(lab.host(), "http://127.0.0.1:8080/"), "");
    cli.ok(&["rm", "s1"]);
    assert!(cli.ok(&["ps", "-a", "-q"]).trim().is_empty());
    // Nothing left: no veth on the host, no lease.
    let veths = container_veths(&lab);
    assert!(veths.is_empty(), "{veths:?}");
    let leases = lease_count(&cli.state.join("ipam").join("web"));
    assert_eq!(leases, 0);
    cli.ok(&["rm", "web"]);
    // The network's bridge went, and with it its nft elements and the port
    // mapper's guards, which nothing uses any more.
    let out = lab
        .host()
        .output(Command::new("nft").args(["list", "ruleset"]))
        .unwrap();
    let ruleset = String::from_utf8_lossy(&out.stdout);
    assert!(
        !ruleset.contains("type filter") && !ruleset.contains("elements"),
        "{ruleset}"
    );
}

#[test]
fn connect_disconnect_host_and_none() {
    let lab = lab();
    let cli = Cli::new(&lab);
    let _c = Cleanup(&cli);
    cli.ok(&[
        "create",
        "front",
        "--subnet",
        "10.99.1.0/24",
        "--disable-dns",
    ]);
    cli.ok(&[
        "create",
        "back",
        "--subnet",
        "10.99.2.0/24",
        "--disable-dns",
    ]);
    cli.ok(&[
        "run",
        "--name",
        "app",
        "--network",
        "front",
        "-d",
        "--",
        "sleep",
        "30",
    ]);
    cli.ok(&["connect", "back", "app"]);
    let addrs = cli.ok(&["exec", "app", "--", "ip", "-o", "-4", "addr"]);
    assert!(
        addrs.contains("eth0") && addrs.contains("10.99.1.2"),
        "{addrs}"
    );
    assert!(
        addrs.contains("eth1") && addrs.contains("10.99.2.2"),
        "{addrs}"
    );
    assert!(
        cli.err(&["connect", "back", "app"])
            .contains("already connected")
    );
    cli.ok(&["disconnect", "back", "app"]);
    let addrs = cli.ok(&["exec", "app", "--", "ip", "-o", "-4", "addr"]);
    assert!(!addrs.contains("eth1"), "{addrs}");
    assert!(cli.err(&["rm", "front"]).contains("attached"));
    cli.ok(&["rm", "-f", "app"]);
    // --network none: only loopback, up.
    let links = cli.ok(&["run", "--network", "none", "--", "ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo") && links.contains("UP"), "{links}");
    // --network host: the lab host's own namespace.
    let host_id = lab.host().id().unwrap().ino;
    let ns = cli.ok(&[
        "run",
        "--network",
        "host",
        "--",
        "readlink",
        "/proc/self/ns/net",
    ]);
    assert_eq!(ns.trim(), format!("net:[{host_id}]"));
    assert!(
        cli.err(&["run", "--network", "nope", "--", "true"])
            .contains("no network named")
    );
    assert!(
        cli.err(&["run", "--network", "front", "-p", "80", "--", "true"])
            .contains("-p")
    );
    assert!(
        cli.err(&["run", "--network", "host", "-p", "80:80", "--", "true"])
            .contains("bridge network")
    );
    assert!(
        cli.err(&["exec", "ghost", "--", "true"])
            .contains("no container")
    );
}

#[test]
fn reload_gc_status_completions_man() {
    let lab = lab();
    let cli = Cli::new(&lab);
    let _c = Cleanup(&cli);
    let www = lab.state_dir().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "up\n").unwrap();
    cli.ok(&["create", "hk", "--subnet", "10.99.3.0/24", "--disable-dns"]);
    cli.ok(&[
        "run",
        "--name",
        "w",
        "--network",
        "hk",
        "-p",
        "8081:80",
        "-d",
        "--",
        busybox(),
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        www.to_str().unwrap(),
    ]);
    let fetch = || {
        let mut c = Command::new("timeout");
        c.args(["3", busybox(), "wget", "-qO-", "http://127.0.0.1:8081/"]);
        String::from_utf8_lossy(&lab.host().output(&mut c).unwrap().stdout).into_owned()
    };
    assert_eq!(fetch(), "up\n");
    // A firewall reload wipes rnet's tables; `rnet reload` puts everything back.
    let mut flush = Command::new("nft");
    flush.args(["flush", "ruleset"]);
    assert!(lab.host().output(&mut flush).unwrap().status.success());
    assert_eq!(fetch(), "", "the port is dead after the flush");
    let out = cli.ok(&["reload"]);
    assert!(out.contains("restored"), "{out}");
    assert_eq!(fetch(), "up\n", "reload restored the published port");
    assert!(cli.ok(&["status"]).contains("ready"));
    // The container's process dies without rnet knowing: GC cleans up after it.
    let v: Value = serde_json::from_str(&cli.ok(&["inspect", "w"])).unwrap();
    let pid = v[0]["pid"].as_i64().unwrap();
    let mut k = Command::new("kill");
    k.args(["-9", &pid.to_string()]);
    assert!(k.status().unwrap().success());
    std::thread::sleep(std::time::Duration::from_millis(200));
    cli.ok(&["gc"]);
    let veths = container_veths(&lab);
    assert!(
        veths.is_empty(),
        "GC removed the dead container's veth: {veths:?}"
    );
    let leases = lease_count(&cli.state.join("ipam").join("hk"));
    assert_eq!(leases, 0, "GC released the lease");
    let mut list = Command::new("nft");
    list.args(["list", "map", "inet", "rnet", "hostports4"]);
    let maps = String::from_utf8_lossy(&lab.host().output(&mut list).unwrap().stdout).into_owned();
    assert!(
        !maps.contains("8081"),
        "GC removed the port mapping: {maps}"
    );
    assert!(cli.ok(&["completions", "bash"]).contains("rnet"));
    assert!(cli.ok(&["man"]).contains(".TH"));
}

/// `rnet install-plugins` lays rnet out under the reference names: a conflist
/// written for the reference plugins runs on rnet unchanged.
#[test]
fn compat_install_serves_reference_conflists() {
    let lab = lab();
    let cli = Cli::new(&lab);
    let dir = lab.state_dir().join("cni-bin");
    let out = cli.ok(&["install-plugins", "--dir", dir.to_str().unwrap()]);
    assert!(
        out.contains("as bridge")
            && out.contains("as host-local")
            && out.contains("as portmap")
            && out.contains("as loopback"),
        "{out}"
    );
    for name in ["bridge", "host-local", "portmap", "loopback", "rnet-bridge"] {
        assert!(dir.join(name).exists(), "{name} missing");
    }
    let conf = json!({"cniVersion": "1.0.0", "name": "compat", "plugins": [
        {"type": "bridge", "bridge": "cni-compat", "isGateway": true, "ipMasq": true,
         "rnetStateDir": lab.state_dir().join("run"),
         "ipam": {"type": "host-local", "subnet": "10.99.4.0/24", "dataDir": lab.state_dir().join("ipam"),
                  "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": true}, "rnetStateDir": lab.state_dir().join("run")},
        {"type": "loopback"}
    ]});
    let list = ConfList::parse(conf.to_string().as_bytes()).unwrap();
    let rt = Runtime::new(vec![dir.clone()], lab.state_dir().join("cache"));
    let ctr = lab.add_container("c").unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "portMappings".into(),
        json!([{"hostPort": 9090, "containerPort": 90, "protocol": "tcp"}]),
    );
    let rc = RuntimeConf {
        container_id: "compat1".into(),
        netns: Some(ctr.netns_path()),
        ifname: "eth0".into(),
        args: vec![],
        capability_args: caps,
    };
    let r = lab.host().run(|| rt.add(&list, &rc)).unwrap().unwrap();
    assert_eq!(r.ips[0].address.to_string(), "10.99.4.2/24");
    ping(
        ctr.ns(),
        "10.99.4.1".parse().unwrap(),
        Duration::from_secs(3),
    )
    .unwrap();
    let srv = netns_fixtures::tcp_listen(ctr.ns(), "10.99.4.2:90".parse().unwrap()).unwrap();
    let banner = netns_fixtures::tcp_connect(
        lab.host(),
        "127.0.0.1:9090".parse().unwrap(),
        Duration::from_secs(3),
    )
    .unwrap();
    assert_eq!(banner, srv.banner());
    lab.host().run(|| rt.check(&list, &rc)).unwrap().unwrap();
    lab.host().run(|| rt.del(&list, &rc)).unwrap().unwrap();
    assert!(
        netns_fixtures::tcp_connect(
            lab.host(),
            "127.0.0.1:9090".parse().unwrap(),
            Duration::from_millis(500)
        )
        .is_err()
    );
}

/// Containers on one network find each other by name and alias through the
/// network's resolver; a container on another network does not see them.
#[test]
fn containers_resolve_each_other_by_name() {
    let lab = lab();
    let cli = Cli::new(&lab);
    let _c = Cleanup(&cli);
    let www = lab.state_dir().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "by name\n").unwrap();
    cli.ok(&["create", "dnsnet", "--subnet", "10.99.5.0/24"]);
    cli.ok(&["create", "other", "--subnet", "10.99.6.0/24"]);
    cli.ok(&[
        "run",
        "--name",
        "web",
        "--network",
        "dnsnet",
        "--alias",
        "www",
        "-d",
        "--",
        busybox(),
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        www.to_str().unwrap(),
    ]);
    let resolv = cli.ok(&["exec", "web", "--", "cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains("nameserver 10.99.5.1") && resolv.contains("dns.rnet"),
        "{resolv}"
    );
    for name in ["web", "www", "web.dns.rnet"] {
        let url = format!("http://{name}/");
        let got = cli.ok(&[
            "run",
            "--network",
            "dnsnet",
            "--",
            busybox(),
            "wget",
            "-qO-",
            &url,
        ]);
        assert_eq!(got, "by name\n", "{name}");
    }
    let out = cli.run(&[
        "run",
        "--network",
        "other",
        "--",
        busybox(),
        "nslookup",
        "web",
    ]);
    assert_ne!(
        out.code, 0,
        "another network must not resolve web: {}",
        out.stdout
    );
    cli.ok(&["rm", "-f", "web"]);
    let out = cli.run(&[
        "run",
        "--network",
        "dnsnet",
        "--",
        busybox(),
        "nslookup",
        "web",
    ]);
    assert_ne!(
        out.code, 0,
        "a removed container's name is gone: {}",
        out.stdout
    );
    cli.ok(&["rm", "dnsnet", "other"]);
}

/// The README's main job runs and leaves nothing behind.
#[test]
fn demo_runs_and_leaves_nothing() {
    let lab = lab();
    let mut c = Command::new(rnet("rnet"));
    c.arg("demo")
        .env("RNET_PLUGIN_DIR", rnet("rnet").parent().unwrap());
    let o = lab.host().output(&mut c).unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("hello from the web container") && out.contains("everything it made is gone"),
        "{out}"
    );
    // The demo builds its own host namespace: the lab host saw nothing.
    let mut nl = lab.netlink().unwrap();
    assert_eq!(nl.link_list().unwrap().len(), 1, "only lo in the lab host");
}
