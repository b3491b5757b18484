//! A DNS load client that is not the bottleneck, for the DNS scenario.
//!
//! On two cores one `dnsperf` (one query per `sendto`, one answer per
//! `recvmsg`, its own bookkeeping) tops out near 140k queries/s on its CPU,
//! so a server faster than that idles and its QPS is dnsperf's ceiling, not
//! its own. This client does the same job with less work per query: it keeps
//! a fixed number of queries in flight over a few connected UDP sockets,
//! sends each socket's refills with one `sendmmsg`, and reads answers
//! without blocking until a socket is dry. It checks each answer's ID
//! against the query in flight and counts answers by RCODE, queries
//! unanswered after a timeout as lost, and the latency of every answer.
//!
//! Closed loop like `dnsperf -q`: the server sets the pace; a server that
//! keeps up gets more queries.

use anyhow::{Context, Result, bail};
use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Queries kept in flight, over all sockets (as `dnsperf -q 200`).
pub const IN_FLIGHT: usize = 200;
/// Sockets (as `dnsperf -c 4`).
const SOCKETS: usize = 4;
/// A query unanswered this long is lost and its slot reused (as `dnsperf -t 2`).
const TIMEOUT: Duration = Duration::from_secs(2);

/// What one run measured.
#[derive(Debug, Default, Clone)]
pub struct Load {
    /// Answers per second.
    pub qps: f64,
    /// Answers received.
    pub answered: u64,
    /// Queries unanswered after the timeout (or still in flight at the end).
    pub lost: u64,
    /// Median latency of the answers, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// Answers by RCODE: NOERROR, NXDOMAIN, anything else.
    pub rcodes: [u64; 3],
    /// Seconds the run lasted.
    pub secs: f64,
}

struct Sock {
    udp: UdpSocket,
    /// Send time of the query with each ID, `None` when not in flight.
    sent: Vec<Option<Instant>>,
    next_id: u16,
    in_flight: usize,
}

/// Runs `queries` (wire-format DNS queries; their IDs are overwritten) in
/// turn against `server` for `secs` from the calling thread's namespace,
/// pinned to `cpu`.
pub fn run(server: SocketAddr, queries: &[Vec<u8>], secs: f64, cpu: usize) -> Result<Load> {
    if queries.is_empty() || queries.iter().any(|q| q.len() < 12) {
        bail!("the DNS load needs at least one query of 12 bytes or more");
    }
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)
        .with_context(|| format!("pinning the DNS load client to CPU {cpu}"))?;
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => "0.0.0.0:0".parse()?,
        SocketAddr::V6(_) => "[::]:0".parse()?,
    };
    let mut socks = Vec::with_capacity(SOCKETS);
    for _ in 0..SOCKETS {
        let udp = UdpSocket::bind(bind).context("binding a DNS load socket")?;
        udp.connect(server)
            .with_context(|| format!("connecting a DNS load socket to {server}"))?;
        udp.set_nonblocking(true)?;
        socks.push(Sock {
            udp,
            sent: vec![None; 65536],
            next_id: 0,
            in_flight: 0,
        });
    }
    let per_sock = IN_FLIGHT / SOCKETS;
    // Every answer's latency in µs (a few MB for a run of seconds).
    let mut lat: Vec<u32> = Vec::with_capacity(1 << 20);
    let mut out = Load::default();
    let mut next_q = 0usize;
    let mut batch: Vec<Vec<u8>> = (0..per_sock).map(|_| Vec::with_capacity(512)).collect();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut last_sweep = start;
    let mut now = start;
    while now < end {
        for s in &mut socks {
            // Refill this socket's share of the window in one sendmmsg.
            let want = per_sock - s.in_flight;
            if want > 0 {
                let t = Instant::now();
                for b in batch.iter_mut().take(want) {
                    // Skip IDs still in flight (a slow answer must not be
                    // taken for a newer query's).
                    while s.sent[usize::from(s.next_id)].is_some() {
                        s.next_id = s.next_id.wrapping_add(1);
                    }
                    let q = &queries[next_q];
                    next_q = (next_q + 1) % queries.len();
                    b.clear();
                    b.extend_from_slice(q);
                    b[..2].copy_from_slice(&s.next_id.to_be_bytes());
                    s.sent[usize::from(s.next_id)] = Some(t);
                    s.next_id = s.next_id.wrapping_add(1);
                }
                let sent = send_all(&s.udp, &batch[..want]);
                // Datagrams the kernel refused were never in flight.
                for b in &batch[sent..want] {
                    s.sent[usize::from(u16::from_be_bytes([b[0], b[1]]))] = None;
                }
                s.in_flight += sent;
            }
            // Every answer waiting on this socket.
            loop {
                match s.udp.recv(&mut buf) {
                    Ok(n) if n >= 12 => {
                        let id = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                        let Some(t) = s.sent[id].take() else {
                            continue; // late answer to a query counted lost
                        };
                        s.in_flight -= 1;
                        out.answered += 1;
                        lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                        out.rcodes[match buf[3] & 0x0f {
                            0 => 0,
                            3 => 1,
                            _ => 2,
                        }] += 1;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    // ICMP port unreachable and the like: the server is gone.
                    Err(e) => return Err(e).context(format!("reading answers from {server}")),
                }
            }
        }
        now = Instant::now();
        if now.duration_since(last_sweep) > TIMEOUT / 4 {
            last_sweep = now;
            for s in &mut socks {
                for slot in s.sent.iter_mut() {
                    if slot.is_some_and(|t| now.duration_since(t) > TIMEOUT) {
                        *slot = None;
                        s.in_flight -= 1;
                        out.lost += 1;
                    }
                }
            }
        }
    }
    out.secs = start.elapsed().as_secs_f64();
    // Queries still in flight: wait for their answers (not counted in the
    // QPS, which covers the run only); those not answered in time are lost.
    let drain_end = Instant::now() + TIMEOUT;
    while socks.iter().any(|s| s.in_flight > 0) && Instant::now() < drain_end {
        for s in &mut socks {
            loop {
                match s.udp.recv(&mut buf) {
                    Ok(n) if n >= 12 => {
                        let id = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                        if s.sent[id].take().is_some() {
                            s.in_flight -= 1;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        std::thread::yield_now();
    }
    out.lost += socks.iter().map(|s| s.in_flight as u64).sum::<u64>();
    out.qps = out.answered as f64 / out.secs.max(1e-9);
    lat.sort_unstable();
    let pct = |p: f64| {
        let at = ((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1));
        lat.get(at).map_or(0.0, |us| f64::from(*us))
    };
    out.p50_us = pct(0.50);
    out.p99_us = pct(0.99);
    Ok(out)
}

/// Sends `bufs` on the connected `sock` with as few `sendmmsg` calls as the
/// kernel allows; returns how many went out (from the first, in order).
fn send_all(sock: &UdpSocket, bufs: &[Vec<u8>]) -> usize {
    use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, sendmmsg};
    let iovs: Vec<[IoSlice<'_>; 1]> = bufs.iter().map(|b| [IoSlice::new(b)]).collect();
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = (0..bufs.len())
        .map(|_| SendAncillaryBuffer::default())
        .collect();
    let mut msgs: Vec<MMsgHdr<'_>> = iovs
        .iter()
        .zip(controls.iter_mut())
        .map(|(iov, c)| MMsgHdr::new(iov, c))
        .collect();
    let mut at = 0;
    while let Some(rest) = msgs.get_mut(at..).filter(|r| !r.is_empty()) {
        match sendmmsg(sock, rest, SendFlags::empty()) {
            Ok(0) => break,
            Ok(n) => at += n,
            Err(rustix::io::Errno::INTR) => {}
            // A full socket buffer or a refusal: the rest waits for the next round.
            Err(_) => break,
        }
    }
    at
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A server on loopback that answers every query whose ID is even with
    /// NOERROR and every odd one with NXDOMAIN, and drops every 1000th.
    fn fake_server() -> (SocketAddr, std::thread::JoinHandle<()>) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let mut n_seen = 0u64;
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                n_seen += 1;
                if n_seen % 1000 == 0 {
                    continue;
                }
                buf[2] |= 0x80;
                buf[3] = if buf[1] % 2 == 0 { 0 } else { 3 };
                let _ = sock.send_to(&buf[..n], from);
            }
        });
        (addr, h)
    }

    #[test]
    fn counts_answers_rcodes_and_losses() {
        let (addr, h) = fake_server();
        let q = netns_fixtures::build_query(0, "c1", netns_fixtures::QType::A).unwrap();
        let l = run(addr, &[q], 0.3, 0).unwrap();
        h.join().unwrap();
        assert!(l.answered > 1000, "{l:?}");
        assert_eq!(l.rcodes[0] + l.rcodes[1] + l.rcodes[2], l.answered);
        assert!(
            l.rcodes[0] > 0 && l.rcodes[1] > 0 && l.rcodes[2] == 0,
            "{l:?}"
        );
        // Every 1000th query dropped: lost once the timeout passed, or
        // still unanswered at the end of the drain.
        assert!(l.lost >= l.answered / 1000 / 2 && l.lost > 0, "{l:?}");
        assert!(l.p50_us <= l.p99_us, "{l:?}");
    }

    #[test]
    fn refuses_short_queries() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert!(run(addr, &[], 0.1, 0).is_err());
        assert!(run(addr, &[vec![0; 5]], 0.1, 0).is_err());
    }
}
