//! A small measurement of the hot path (needs root; works only inside its own
//! throwaway network namespace):
//!
//! one batch that adds 1 element and deletes 1 element of a
//! `inet_proto . inet_service : ipv4_addr . inet_service` map, through
//! netlink ([`Nft::commit`]) and through `nft -f -` (one exec per batch),
//! with 1 and with 10,000 elements already in the map.
//!
//! `cargo run --release -p rnet-nft --example nft_bench [iterations]`

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rnet_netns::NetNs;
use rnet_nft::{
    Batch, Chain, Element, Family, KeyPart, Map, Nft, Ruleset, Table, ensure_ruleset, find_nft,
};

fn elem(i: u32) -> Element {
    let port = (i % 60000) as u16 + 1024;
    let proto = if i / 60000 % 2 == 0 { 6 } else { 17 };
    let ip = Ipv4Addr::from(0x0a58_0000 + (i % 65000) + 2);
    Element::new(vec![KeyPart::Proto(proto), KeyPart::Port(port)])
        .data(vec![KeyPart::Ipv4(ip), KeyPart::Port(80)])
        .comment(format!("{i:064x}/eth0"))
}

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let pct = |p: usize| v[(v.len() - 1) * p / 100].as_secs_f64() * 1e6;
    println!(
        "{name:<58} n={:<4} median {:>8.1} us   p90 {:>8.1} us   min {:>8.1} us",
        v.len(),
        pct(50),
        pct(90),
        pct(0)
    );
}

fn ruleset() -> Ruleset {
    Ruleset::new().table(
        Table::new(Family::Inet, "rnet")
            .comment("bench")
            .map(Map::new(
                "hostports4",
                "inet_proto . inet_service",
                "ipv4_addr . inet_service",
            ))
            .chain(
                Chain::base("prerouting", "nat", "prerouting", "dstnat")
                    .policy("accept")
                    .rule(
                        "fib daddr type local dnat ip to meta l4proto . th dport map @hostports4",
                    ),
            ),
    )
}

fn run(iters: usize, preload: u32) -> Result<(), Box<dyn std::error::Error>> {
    let ns = NetNs::new_unnamed()?;
    let mut nft = Nft::in_netns(&ns)?;
    nft.apply_ruleset(&ruleset().render()?)?;
    let t = Instant::now();
    let pre: Vec<Element> = (0..preload).map(elem).collect();
    let mut b = Batch::new(Family::Inet);
    b.add_elements("rnet", "hostports4", &pre);
    nft.commit(&b)?;
    println!(
        "--- {preload} element(s) preloaded (one netlink batch: {:.1} ms)",
        t.elapsed().as_secs_f64() * 1e3
    );

    // Netlink: add element k, delete element k-1 (the map size stays constant).
    let base = 1_000_000;
    let mut b = Batch::new(Family::Inet);
    b.add_elements("rnet", "hostports4", &[elem(base)]);
    nft.commit(&b)?;
    let mut times = Vec::with_capacity(iters);
    for k in 1..=iters as u32 {
        let mut b = Batch::new(Family::Inet);
        b.add_elements("rnet", "hostports4", &[elem(base + k)])
            .delete_elements("rnet", "hostports4", &[elem(base + k - 1)]);
        let t = Instant::now();
        nft.commit(&b)?;
        times.push(t.elapsed());
    }
    stats("netlink commit (add 1 + delete 1, one batch)", times);

    // Same with a lenient delete (DESTROYSETELEM).
    let mut times = Vec::with_capacity(iters);
    let start = base + iters as u32;
    for k in start + 1..=start + iters as u32 {
        let mut b = Batch::new(Family::Inet);
        b.add_elements("rnet", "hostports4", &[elem(k)])
            .delete_elements_lenient("rnet", "hostports4", &[elem(k - 1)]);
        let t = Instant::now();
        nft.commit(&b)?;
        times.push(t.elapsed());
    }
    stats(
        "netlink commit (add 1 + lenient delete 1, one batch)",
        times,
    );

    // The whole hot path of a plugin process: open a socket, ensure_ruleset
    // (GETs only, as the table is complete), commit, close. Closing a
    // NETLINK_NETFILTER socket waits for the kernel's deferred destruction of
    // committed transactions (nft_rcv_nl_event -> flush of
    // nf_tables_trans_destroy_work, which does synchronize_rcu) whenever that
    // list is non-empty, i.e. after a batch that *deleted* something. Plain
    // additions are freed at once, so an ADD does not pay it.
    let rs = ruleset();
    let mut k = base + 2 * iters as u32 + 10;
    for (label, with_delete) in [
        (
            "netlink: socket + ensure_ruleset + commit(add 1) + close",
            false,
        ),
        (
            "netlink: socket + ensure_ruleset + commit(add 1, del 1) + close",
            true,
        ),
    ] {
        let full = ns.run(|| -> Result<Vec<Duration>, rnet_nft::NftError> {
            let mut times = Vec::with_capacity(iters);
            for _ in 0..iters {
                k += 1;
                let t = Instant::now();
                let mut n = Nft::new()?;
                let ensured = ensure_ruleset(&mut n, &rs)?;
                assert!(!ensured.applied);
                let mut b = Batch::new(Family::Inet);
                b.add_elements("rnet", "hostports4", &[elem(k)]);
                if with_delete {
                    b.delete_elements_lenient("rnet", "hostports4", &[elem(k - 1)]);
                }
                n.commit(&b)?;
                drop(n);
                times.push(t.elapsed());
            }
            Ok(times)
        })??;
        stats(label, full);
    }

    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        nft.table_comment(Family::Inet, "rnet")?;
        times.push(t.elapsed());
    }
    stats("netlink: table_comment (one GETTABLE)", times);
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        nft.set_exists(Family::Inet, "rnet", "hostports4")?;
        times.push(t.elapsed());
    }
    stats("netlink: set_exists (one GETSET)", times);
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        nft.chain_exists(Family::Inet, "rnet", "prerouting")?;
        times.push(t.elapsed());
    }
    stats("netlink: chain_exists (one GETCHAIN)", times);

    // Socket open + close alone.
    let sock = ns.run(|| -> Result<Vec<Duration>, rnet_nft::NftError> {
        let mut times = Vec::with_capacity(iters);
        for _ in 0..iters {
            let t = Instant::now();
            drop(Nft::new()?);
            times.push(t.elapsed());
        }
        Ok(times)
    })??;
    stats("netlink: socket open + close only", sock);

    // nft exec: the same batch as text, one `nft -f -` per batch, spawned
    // from a thread inside the namespace.
    let bin = find_nft()?;
    let n_exec = iters.min(50);
    type Timings = (Vec<Duration>, Vec<Duration>);
    type BoxErr = Box<dyn std::error::Error + Send + Sync>;
    let exec = ns
        .run(|| -> Result<Timings, BoxErr> {
            let mut both = Vec::with_capacity(n_exec);
            let mut adds = Vec::with_capacity(n_exec);
            let mut k = 2_000_000u32;
            let first = format!(
                "add element inet rnet hostports4 {{ {} }}\n",
                elem(k).to_nft_text()
            );
            nft_f(&bin, &first)?;
            for _ in 0..n_exec {
                k += 1;
                let mut b = Batch::new(Family::Inet);
                b.add_elements("rnet", "hostports4", &[elem(k)])
                    .delete_elements("rnet", "hostports4", &[elem(k - 1)]);
                let text = b.render();
                let t = Instant::now();
                nft_f(&bin, &text)?;
                both.push(t.elapsed());
            }
            for _ in 0..n_exec {
                k += 1;
                let mut b = Batch::new(Family::Inet);
                b.add_elements("rnet", "hostports4", &[elem(k)]);
                let text = b.render();
                let t = Instant::now();
                nft_f(&bin, &text)?;
                adds.push(t.elapsed());
            }
            Ok((both, adds))
        })?
        .map_err(|e| e.to_string())?;
    stats("nft -f - exec (add 1 + delete 1, one transaction)", exec.0);
    stats("nft -f - exec (add 1)", exec.1);

    let t = Instant::now();
    let listed = nft.list_elements(Family::Inet, "rnet", "hostports4")?;
    println!(
        "list_elements (netlink dump) of {} elements: {:.2} ms",
        listed.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

fn nft_f(
    bin: &std::path::Path,
    text: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut c = Command::new(bin)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut i) = c.stdin.take() {
        i.write_all(text.as_bytes())?;
    }
    let out = c.wait_with_output()?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iters: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    for preload in [1, 10_000] {
        run(iters, preload)?;
    }
    Ok(())
}
