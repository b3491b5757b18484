//! Connectivity probes. Each socket is created inside the namespace it probes
//! from (via `NetNs::run` on a fresh thread) and then used from ordinary
//! threads: a socket stays in the namespace it was created in.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rnet_netns::NetNs;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType, ipproto};

use crate::{FixtureError, Result, io_err};

/// A TCP greeting/echo server listening inside a namespace: each connection
/// first receives the banner and a newline, then every line sent is echoed
/// back until EOF. Stops (listener and open connections shut down, threads
/// joined) on drop.
#[derive(Debug)]
pub struct TcpServer {
    addr: SocketAddr,
    banner: String,
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Shared>>,
    accept_thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    peers: Vec<SocketAddr>,
    conns: Vec<TcpStream>,
    handlers: Vec<JoinHandle<()>>,
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TcpServer {
    /// The bound address (with the real port if 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The banner each connection receives (without the newline).
    pub fn banner(&self) -> &str {
        &self.banner
    }

    /// Source addresses of the connections accepted so far, as this server saw
    /// them (what masquerade tests assert on).
    pub fn peers(&self) -> Vec<SocketAddr> {
        lock(&self.shared).peers.clone()
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // shutdown() on a listening socket wakes a blocked accept() on Linux.
        let _ = rustix::net::shutdown(&self.listener, rustix::net::Shutdown::Read);
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
        let (conns, handlers) = {
            let mut s = lock(&self.shared);
            (
                std::mem::take(&mut s.conns),
                std::mem::take(&mut s.handlers),
            )
        };
        for c in conns {
            let _ = c.shutdown(Shutdown::Both);
        }
        for h in handlers {
            let _ = h.join();
        }
    }
}

/// Start a [`TcpServer`] on `addr` inside `ns`; the banner is
/// `"rnet-probe <namespace id> <bound address>"`.
pub fn tcp_listen(ns: &NetNs, addr: SocketAddr) -> Result<TcpServer> {
    tcp_listen_inner(ns, addr, None)
}

/// Like [`tcp_listen`] with a chosen banner (must not contain a newline).
pub fn tcp_listen_with_banner(ns: &NetNs, addr: SocketAddr, banner: &str) -> Result<TcpServer> {
    tcp_listen_inner(ns, addr, Some(banner.replace('\n', " ")))
}

fn tcp_listen_inner(ns: &NetNs, addr: SocketAddr, banner: Option<String>) -> Result<TcpServer> {
    let listener = ns.run(|| TcpListener::bind(addr))?.map_err(|e| {
        io_err(
            format!(
                "binding a TCP listener on {addr} in {}",
                ns.path().display()
            ),
            e,
        )
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| io_err("getsockname of the TCP listener", e))?;
    let banner = match banner {
        Some(b) => b,
        None => format!("rnet-probe {} {bound}", ns.id()?),
    };
    let accept_side = listener
        .try_clone()
        .map_err(|e| io_err("duplicating the TCP listener", e))?;
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Mutex::new(Shared::default()));
    let t_stop = stop.clone();
    let t_shared = shared.clone();
    let t_banner = banner.clone();
    let accept_thread = std::thread::Builder::new()
        .name("tcp-probe-accept".into())
        .spawn(move || accept_loop(accept_side, t_stop, t_shared, t_banner))
        .map_err(|e| io_err("starting the TCP probe server thread", e))?;
    Ok(TcpServer {
        addr: bound,
        banner,
        listener,
        stop,
        shared,
        accept_thread: Some(accept_thread),
    })
}

fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Shared>>,
    banner: String,
) {
    while !stop.load(Ordering::SeqCst) {
        let (conn, peer) = match listener.accept() {
            Ok(c) => c,
            Err(_) if stop.load(Ordering::SeqCst) => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => return, // shut down
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let Ok(keep) = conn.try_clone() else { continue };
        // Record the peer before the banner goes out: a client that got the
        // banner must find its address in `peers()`.
        let mut s = lock(&shared);
        s.peers.push(peer);
        s.conns.push(keep);
        let banner = banner.clone();
        let handler = std::thread::Builder::new()
            .name("tcp-probe-conn".into())
            .spawn(move || serve_conn(conn, &banner));
        if let Ok(h) = handler {
            s.handlers.push(h);
        }
    }
}

fn serve_conn(conn: TcpStream, banner: &str) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    if out.write_all(format!("{banner}\n").as_bytes()).is_err() {
        return;
    }
    let mut reader = BufReader::new(conn);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if out.write_all(&line).is_err() {
                    return;
                }
            }
        }
    }
}

/// Connect from inside `ns` to `addr` and return the first line the server
/// sends (the banner of a [`TcpServer`]), without the newline.
pub fn tcp_connect(ns: &NetNs, addr: SocketAddr, timeout: Duration) -> Result<String> {
    let stream = ns
        .run(|| TcpStream::connect_timeout(&addr, timeout))?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                FixtureError::Timeout {
                    what: format!("TCP connect to {addr} from {}", ns.path().display()),
                    timeout,
                }
            }
            _ => io_err(
                format!("TCP connect to {addr} from {}", ns.path().display()),
                e,
            ),
        })?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| io_err("setting the read timeout", e))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                FixtureError::Timeout {
                    what: format!("banner from {addr}"),
                    timeout,
                }
            }
            _ => io_err(format!("reading the banner from {addr}"), e),
        })?;
    if !line.ends_with('\n') {
        return Err(FixtureError::Probe(format!(
            "{addr} closed the connection before sending a full banner line (got {line:?})"
        )));
    }
    line.pop();
    Ok(line)
}

/// A UDP echo server inside a namespace: every datagram is sent back to its
/// sender unchanged. Stops on drop.
#[derive(Debug)]
pub struct UdpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    thread: Option<JoinHandle<()>>,
}

impl UdpServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Source addresses of datagrams received so far.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Start a [`UdpServer`] on `addr` inside `ns`.
pub fn udp_echo_server(ns: &NetNs, addr: SocketAddr) -> Result<UdpServer> {
    let sock = ns.run(|| UdpSocket::bind(addr))?.map_err(|e| {
        io_err(
            format!("binding a UDP socket on {addr} in {}", ns.path().display()),
            e,
        )
    })?;
    let bound = sock
        .local_addr()
        .map_err(|e| io_err("getsockname of the UDP socket", e))?;
    // Short timeout so the loop notices the stop flag promptly.
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| io_err("setting the UDP read timeout", e))?;
    let stop = Arc::new(AtomicBool::new(false));
    let peers = Arc::new(Mutex::new(Vec::new()));
    let (t_stop, t_peers) = (stop.clone(), peers.clone());
    let thread = std::thread::Builder::new()
        .name("udp-probe".into())
        .spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !t_stop.load(Ordering::SeqCst) {
                if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    t_peers.lock().unwrap_or_else(|p| p.into_inner()).push(peer);
                    let _ = sock.send_to(&buf[..n], peer);
                }
            }
        })
        .map_err(|e| io_err("starting the UDP probe server thread", e))?;
    Ok(UdpServer {
        addr: bound,
        stop,
        peers,
        thread: Some(thread),
    })
}

/// Send `payload` from inside `ns` to `addr` and return the first datagram
/// that comes back from `addr` within `timeout`.
pub fn udp_roundtrip(
    ns: &NetNs,
    addr: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>> {
    let any: SocketAddr = match addr {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    };
    let sock = ns.run(|| UdpSocket::bind(any))?.map_err(|e| {
        io_err(
            format!("binding a UDP socket in {}", ns.path().display()),
            e,
        )
    })?;
    // connect() filters replies to those from `addr` and surfaces ICMP errors.
    sock.connect(addr)
        .map_err(|e| io_err(format!("UDP connect to {addr}"), e))?;
    sock.send(payload)
        .map_err(|e| io_err(format!("sending a UDP datagram to {addr}"), e))?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(FixtureError::Timeout {
                what: format!("UDP reply from {addr}"),
                timeout,
            });
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| io_err("setting the UDP read timeout", e))?;
        match sock.recv(&mut buf) {
            Ok(n) => return Ok(buf[..n].to_vec()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(format!("UDP reply from {addr}"), e)),
        }
    }
}

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_UNREACH: u8 = 3;
const ICMP_ECHO: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP6_UNREACH: u8 = 1;
const ICMP6_TIME_EXCEEDED: u8 = 3;
const ICMP6_ECHO: u8 = 128;
const ICMP6_ECHO_REPLY: u8 = 129;

/// Send one ICMP (v4) or ICMPv6 echo request from inside `ns` to `addr` and
/// wait up to `timeout` for the matching reply.
///
/// Uses a raw socket (needs CAP_NET_RAW, i.e. root) created inside `ns` and
/// connected to `addr`, so only packets from `addr` are seen. An ICMP
/// unreachable from the target comes back as [`FixtureError::Probe`], silence as
/// [`FixtureError::Timeout`]. Link-local IPv6 targets are not supported (no
/// scope id).
pub fn ping(ns: &NetNs, addr: IpAddr, timeout: Duration) -> Result<()> {
    let (family, proto) = match addr {
        IpAddr::V4(_) => (AddressFamily::INET, ipproto::ICMP),
        IpAddr::V6(_) => (AddressFamily::INET6, ipproto::ICMPV6),
    };
    let sock = ns
        .run(|| rustix::net::socket(family, SocketType::RAW, Some(proto)))?
        .map_err(|e| {
            io_err(
                format!(
                    "opening a raw ICMP socket in {} (needs root)",
                    ns.path().display()
                ),
                e,
            )
        })?;
    let target = SocketAddr::new(addr, 0);
    rustix::net::connect(&sock, &target).map_err(|e| {
        io_err(
            format!("ping {addr}: no route from {}", ns.path().display()),
            e,
        )
    })?;

    let ident = (std::process::id() as u16) ^ next_seq().rotate_left(8);
    let seq = next_seq();
    let payload = b"rnet-netns-fixtures ping";
    let mut pkt = Vec::with_capacity(8 + payload.len());
    pkt.push(if addr.is_ipv4() {
        ICMP_ECHO
    } else {
        ICMP6_ECHO
    });
    pkt.push(0);
    pkt.extend_from_slice(&[0, 0]);
    pkt.extend_from_slice(&ident.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(payload);
    if addr.is_ipv4() {
        // For ICMPv6 raw sockets the kernel fills in the checksum.
        let c = inet_checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
    }
    rustix::net::send(&sock, &pkt, SendFlags::empty())
        .map_err(|e| io_err(format!("sending an ICMP echo request to {addr}"), e))?;

    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(FixtureError::Timeout {
                what: format!("ping {addr} from {}", ns.path().display()),
                timeout,
            });
        }
        rustix::net::sockopt::set_socket_timeout(
            &sock,
            rustix::net::sockopt::Timeout::Recv,
            Some(left),
        )
        .map_err(|e| io_err("setting the ICMP socket timeout", e))?;
        let n = match rustix::net::recv(&sock, &mut buf[..], RecvFlags::empty()) {
            Ok((n, _)) => n,
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(io_err(format!("ping {addr}"), e)),
        };
        let data = &buf[..n.min(buf.len())];
        // IPv4 raw sockets deliver the IP header too; IPv6 ones do not.
        let icmp = if addr.is_ipv4() {
            let ihl = usize::from(data.first().copied().unwrap_or(0) & 0x0f) * 4;
            data.get(ihl..).unwrap_or(&[])
        } else {
            data
        };
        if icmp.len() < 8 {
            continue;
        }
        let (ty, id, sq) = (
            icmp[0],
            u16::from_be_bytes([icmp[4], icmp[5]]),
            u16::from_be_bytes([icmp[6], icmp[7]]),
        );
        let (reply, unreach, exceeded) = if addr.is_ipv4() {
            (ICMP_ECHO_REPLY, ICMP_UNREACH, ICMP_TIME_EXCEEDED)
        } else {
            (ICMP6_ECHO_REPLY, ICMP6_UNREACH, ICMP6_TIME_EXCEEDED)
        };
        if ty == reply && id == ident && sq == seq {
            return Ok(());
        }
        if ty == unreach || ty == exceeded {
            return Err(FixtureError::Probe(format!(
                "ping {addr} from {}: ICMP {} (type {ty}, code {})",
                ns.path().display(),
                if ty == unreach {
                    "destination unreachable"
                } else {
                    "time exceeded"
                },
                icmp[1]
            )));
        }
    }
}

fn next_seq() -> u16 {
    static SEQ: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// RFC 1071 Internet checksum.
fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = match chunk {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from_be_bytes([*a, 0]),
            _ => 0,
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3 example: 0001 f203 f4f5 f6f7 -> sum ddf2, checksum 220d.
        assert_eq!(
            inet_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        // A packet with its checksum filled in sums to zero.
        let mut pkt = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1, b'x'];
        let c = inet_checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(inet_checksum(&pkt), 0);
    }
}

/// ARP frames seen in a namespace (an `AF_PACKET` socket for `ETH_P_ARP`
/// opened inside it, on all its interfaces, both directions).
pub struct ArpCapture {
    sock: std::os::fd::OwnedFd,
}

/// One captured ARP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpFrame {
    /// 1 request, 2 reply.
    pub op: u16,
    /// Sender protocol address.
    pub sender: std::net::Ipv4Addr,
    /// Target protocol address.
    pub target: std::net::Ipv4Addr,
}

impl ArpFrame {
    /// A gratuitous ARP: the sender announces its own address.
    pub fn is_gratuitous(&self) -> bool {
        self.sender == self.target
    }
}

/// Starts capturing ARP frames in `ns` (needs CAP_NET_RAW, i.e. root).
pub fn arp_capture(ns: &NetNs) -> Result<ArpCapture> {
    let sock = ns
        .run(|| {
            rustix::net::socket_with(
                AddressFamily::PACKET,
                SocketType::RAW,
                rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
                Some(rustix::net::eth::ARP),
            )
        })?
        .map_err(|e| {
            io_err(
                format!(
                    "opening a packet socket in {} (needs root)",
                    ns.path().display()
                ),
                e,
            )
        })?;
    Ok(ArpCapture { sock })
}

impl ArpCapture {
    /// Every IPv4-over-Ethernet ARP frame captured since the last call.
    pub fn drain(&self) -> Vec<ArpFrame> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = rustix::net::recv(&self.sock, &mut buf, RecvFlags::DONTWAIT) {
            // Ethernet header (14) + ARP: htype 2, ptype 2, hlen 1, plen 1,
            // op 2, sha 6, spa 4, tha 6, tpa 4.
            let Some(f) = buf.get(..n.min(buf.len())) else {
                continue;
            };
            if f.len() < 42 || f[18] != 6 || f[19] != 4 {
                continue;
            }
            let ip = |o: usize| std::net::Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]);
            out.push(ArpFrame {
                op: u16::from_be_bytes([f[20], f[21]]),
                sender: ip(28),
                target: ip(38),
            });
        }
        out
    }
}
