//! The benchmark (issue #9) end to end, small: every scenario of
//! `rnet-bench`, with few iterations, against the reference plugins,
//! netavark, dnsmasq and aardvark-dns, as `bin/rnet-bench` runs them. It
//! must finish, print every section with its figures, have every
//! implementation's calls succeed, and leave nothing behind, in its labs or
//! in the machine's namespace.

use crate::common::rnet;
use std::process::Command;

/// What the machine's own namespace holds that a run could change: links,
/// addresses, routes, nft tables.
fn root_state() -> String {
    let mut s = String::new();
    for args in [
        &["-o", "link", "show"][..],
        &["-o", "addr", "show"],
        &["route", "show", "table", "all"],
    ] {
        let out = Command::new("ip").args(args).output().expect("running ip");
        // Counters and timers change by themselves; names and addresses do not.
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            let l = l.split(" valid_lft").next().unwrap_or(l);
            let l = l.split(" expires").next().unwrap_or(l);
            s.push_str(l.split(" link/").next().unwrap_or(l));
            s.push('\n');
        }
    }
    let nft = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("running nft");
    s.push_str(&String::from_utf8_lossy(&nft.stdout));
    s
}

/// The numbers in `line`, e.g. `0 leases, 0 veths` -> [0, 0].
fn numbers(line: &str) -> Vec<u64> {
    line.split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect()
}

#[test]
fn every_scenario_runs_and_leaves_nothing() {
    netns_fixtures::require_root().expect(netns_fixtures::NEED_ROOT);
    let bench = rnet("rnet-bench");
    let before = root_state();
    let out = Command::new(&bench)
        .args([
            "--only",
            "exec,ipam,chain,chain-portmap,scale,parallel,datapath,connrate,footprint,dns",
            "--iterations",
            "5",
            "--scale",
            "12",
            "--parallel",
            "4",
            "--datapath-reps",
            "1",
            "--connrate-mappings",
            "5",
            "--dns-names",
            "10",
            "--dns-kinds",
            "bare,mixed",
            "--dns-secs",
            "1",
            "--dns-changes",
            "3",
        ])
        .output()
        .expect("running rnet-bench");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "rnet-bench failed ({}):\n{text}\n{err}",
        out.status
    );
    for section in [
        "## 1. Exec floor",
        "## 2a. IPAM",
        "## 2b. IPAM with 60,000 leases",
        "## 3. bridge + IPAM: ADD, CHECK, DEL",
        "## 3. bridge + IPAM + portmap",
        "## 4. Scale: 12 containers",
        "## 5. Parallel: 4 ADDs at once",
        "## 6. DNS",
        "## 7. Data path",
        "## 8. Connection rate",
        "## 9. Footprint",
    ] {
        assert!(text.contains(section), "no {section:?} in:\n{text}");
    }
    // Every goal line carries a figure.
    let goals: Vec<&str> = text.lines().filter(|l| l.contains("(goal:")).collect();
    assert!(goals.len() >= 10, "goal lines: {goals:?}");
    for g in &goals {
        assert!(
            g.contains("MET") || g.contains("NOT MET"),
            "goal without a verdict: {g}"
        );
    }
    // Nothing left by rnet's DELs: after the chains, after the scale
    // scenario's DEL of all, after each parallel batch.
    let mut checked = 0;
    for l in text.lines() {
        let rest = if let Some(r) = l.strip_prefix("leftovers after DEL, rnet:") {
            r
        } else if l.starts_with("DEL of all") && l.contains(", rnet:") {
            l.split("leftovers").nth(1).unwrap_or("missing")
        } else if l.starts_with("| rnet | cold |") || l.starts_with("| rnet | warm |") {
            l.trim_end_matches(" |")
                .rsplit('|')
                .next()
                .unwrap_or("missing")
        } else {
            continue;
        };
        checked += 1;
        assert!(
            rest.contains("leases") && numbers(rest).iter().all(|n| *n == 0),
            "rnet left something behind: {l}"
        );
    }
    assert!(checked >= 5, "too few leftover checks ({checked}):\n{text}");
    // Scale: the kernel's share and the routed veth are measured beside rnet.
    for row in [
        "| rnet |",
        "| kernel: rnet's veth requests alone",
        "| rnet ADD minus the veth requests |",
        "| kernel: the same veth without a bridge port",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no scale row {row:?}:\n{text}"));
        let cells: Vec<f64> = line
            .split('|')
            .filter_map(|c| c.trim().parse::<f64>().ok())
            .collect();
        assert!(
            cells.len() >= 4 && cells.iter().take(3).all(|c| *c > 0.0),
            "scale row without figures: {line}"
        );
    }
    // Parallel: every ADD succeeded with its own address.
    for l in text.lines().filter(|l| l.starts_with("| rnet | ")) {
        if l.contains("/4 |") {
            assert!(l.contains("| 4/4 | 4 |"), "a parallel ADD failed: {l}");
        }
    }
    // DNS: both clients asked every server; rnet-dns answered every bare
    // name with NOERROR under both.
    assert!(text.contains("rnet-bench's own load client"), "{text}");
    let rnet_bare: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("| rnet-dns | 10 | bare |"))
        .collect();
    assert_eq!(rnet_bare.len(), 2, "{text}");
    for l in &rnet_bare {
        assert!(l.contains("NOERROR") && l.contains("100.00%"), "{l}");
        let qps: f64 = l
            .split('|')
            .nth(4)
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(0.0);
        assert!(qps > 1000.0, "rnet-dns hardly answered: {l}");
    }
    for server in ["dnsmasq", "aardvark-dns"] {
        assert!(
            text.lines()
                .filter(|l| l.starts_with(&format!("| {server} | 10 | bare |")))
                .count()
                == 2,
            "{server} not measured by both clients:\n{text}"
        );
    }
    assert_eq!(
        root_state(),
        before,
        "the benchmark changed the machine's own namespace"
    );
}
