//! The serving side: published snapshots, UDP and TCP listeners, and the
//! control request handler.
//!
//! UDP, the hot path, runs on one dedicated OS thread per listen address with
//! a blocking socket: `recvmmsg` (up to `UDP_BATCH` (16) queued datagrams per
//! call, blocking only for the first), parse, look up, encode, and one
//! `sendmmsg` for the answers; no task wake-ups, no allocation per local
//! answer (a few per batch, for the `sendmmsg` headers). Under load that is two system calls per batch instead of two per
//! query (each also takes and drops a reference on the socket, as the
//! process is multi-threaded). The thread reads the current
//! snapshot through a generation counter: one atomic load per query, and only
//! when a change was published does it take the (uncontended) read lock once
//! to clone the new `Arc`. Writers never wait for readers and readers never
//! wait for writers beyond that pointer copy, so registrations cannot stall
//! queries and a flood of queries cannot stall registrations (which run on the
//! tokio runtime, a different thread).
//!
//! Forwarded queries, TCP and the control socket run on a small tokio
//! runtime. TCP is bounded: at most [`ServerConfig::tcp_max_conns`]
//! connections (beyond that a new connection is closed at once), a connection
//! idle for [`ServerConfig::tcp_idle`] is closed, a started message must be
//! complete within the same time (a trickling client cannot hold a slot by
//! sending a byte at a time), messages are processed one after the other per
//! connection and each connection is its own task, so one slow client never
//! blocks another (CVE-2024-8418).

use crate::control::{Reply, Request};
use crate::error::DnsError;
use crate::forward::{ForwardConfig, Forwarder};
use crate::registry::Registry;
use crate::snapshot::{Index, Outcome, Snapshot};
use crate::store::{Store, Target};
use crate::wire::{self, FrameBuf, Query, QueryError};
use rustix::net::{AddressFamily, SocketType};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serving limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// DNS port (53).
    pub port: u16,
    /// Concurrent TCP connections.
    pub tcp_max_conns: usize,
    /// TCP idle and per-message timeout.
    pub tcp_idle: Duration,
    /// Forwarding.
    pub forward: ForwardConfig,
    /// Upstreams for networks that configure none.
    pub default_upstreams: Vec<SocketAddr>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            port: 53,
            tcp_max_conns: 256,
            tcp_idle: Duration::from_secs(3),
            forward: ForwardConfig::default(),
            default_upstreams: Vec::new(),
        }
    }
}

/// The current snapshot, swapped as a whole on every change.
pub struct Published {
    snap: RwLock<Arc<Snapshot>>,
    generation: AtomicU64,
}

impl Published {
    /// Publishes `s` first.
    pub fn new(s: Snapshot) -> Published {
        Published {
            snap: RwLock::new(Arc::new(s)),
            generation: AtomicU64::new(0),
        }
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        match self.snap.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces the snapshot; visible to every query that starts afterwards.
    pub fn store(&self, s: Snapshot) {
        let new = Arc::new(s);
        let old = match self.snap.write() {
            Ok(mut g) => std::mem::replace(&mut *g, new),
            Err(p) => std::mem::replace(&mut *p.into_inner(), new),
        };
        self.generation.fetch_add(1, Ordering::SeqCst);
        drop(old);
    }

    /// A per-thread reader.
    pub fn reader(&self) -> Reader<'_> {
        Reader {
            p: self,
            cached: self.load(),
            generation: self.generation.load(Ordering::SeqCst),
        }
    }
}

/// Caches the snapshot for one thread; refreshes when the generation moves.
pub struct Reader<'a> {
    p: &'a Published,
    cached: Arc<Snapshot>,
    generation: u64,
}

impl Reader<'_> {
    /// The current snapshot.
    pub fn current(&mut self) -> &Snapshot {
        let g = self.p.generation.load(Ordering::SeqCst);
        if g != self.generation {
            self.cached = self.p.load();
            self.generation = g;
        }
        &self.cached
    }
}

/// What the listeners share.
pub struct Shared {
    /// The snapshot.
    pub published: Published,
    /// The forwarder.
    pub forwarder: Forwarder,
    /// Limits.
    pub cfg: ServerConfig,
    rt: tokio::runtime::Handle,
    tcp_conns: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    /// Shared state on runtime `rt`.
    pub fn new(cfg: ServerConfig, snap: Snapshot, rt: tokio::runtime::Handle) -> Arc<Shared> {
        Arc::new(Shared {
            published: Published::new(snap),
            forwarder: Forwarder::new(cfg.forward.clone()),
            tcp_conns: Arc::new(tokio::sync::Semaphore::new(cfg.tcp_max_conns)),
            cfg,
            rt,
        })
    }
}

fn socket_for(addr: SocketAddr, ty: SocketType) -> Result<rustix::fd::OwnedFd, std::io::Error> {
    let fam = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket_with(fam, ty, rustix::net::SocketFlags::CLOEXEC, None)?;
    // FREEBIND: a gateway address that is not configured yet (or still in
    // IPv6 DAD) must not fail the bind; the socket works once it appears.
    if addr.is_ipv4() {
        rustix::net::sockopt::set_ip_freebind(&fd, true)?;
    } else {
        rustix::net::sockopt::set_ipv6_freebind(&fd, true)?;
        rustix::net::sockopt::set_ipv6_v6only(&fd, true)?;
    }
    if ty == SocketType::STREAM {
        rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
    }
    rustix::net::bind(&fd, &addr)?;
    Ok(fd)
}

/// Binds UDP and TCP on `addr` and starts serving both.
pub fn start_listener(shared: &Arc<Shared>, addr: SocketAddr) -> Result<(), DnsError> {
    let udp = socket_for(addr, SocketType::DGRAM).map_err(|source| DnsError::Bind {
        addr,
        proto: "udp",
        source,
    })?;
    let tcp = socket_for(addr, SocketType::STREAM)
        .and_then(|fd| {
            rustix::net::listen(&fd, 1024)
                .map(|()| fd)
                .map_err(Into::into)
        })
        .map_err(|source| DnsError::Bind {
            addr,
            proto: "tcp",
            source,
        })?;
    let udp = Arc::new(std::net::UdpSocket::from(udp));
    let tcp = std::net::TcpListener::from(tcp);
    tcp.set_nonblocking(true)
        .map_err(|e| DnsError::io(format!("tcp listener {addr}"), e))?;
    let tcp = {
        let _enter = shared.rt.enter();
        tokio::net::TcpListener::from_std(tcp)
            .map_err(|e| DnsError::io(format!("tcp listener {addr}"), e))?
    };
    let sh = shared.clone();
    std::thread::Builder::new()
        .name(format!("dns-udp-{}", addr.ip()))
        .spawn(move || udp_loop(&sh, &udp, addr.ip()))
        .map_err(|e| DnsError::io("starting a UDP listener thread", e))?;
    let sh = shared.clone();
    shared.rt.spawn(tcp_accept(sh, tcp, addr.ip()));
    Ok(())
}

/// Datagrams taken from the socket per `recvmmsg`, answered per `sendmmsg`.
const UDP_BATCH: usize = 16;
/// Receive buffer per datagram (larger queries are cut and ignored).
const UDP_BUF: usize = 4096;

fn udp_loop(shared: &Arc<Shared>, sock: &Arc<std::net::UdpSocket>, local: IpAddr) {
    use std::os::fd::AsRawFd as _;
    let fd = sock.as_raw_fd();
    let mut bufs = vec![[0u8; UDP_BUF]; UDP_BATCH];
    let mut hdrs = nix::sys::socket::MultiHeaders::<nix::sys::socket::SockaddrStorage>::preallocate(
        UDP_BATCH, None,
    );
    let mut got: Vec<(usize, Option<SocketAddr>)> = Vec::with_capacity(UDP_BATCH);
    let mut outs: Vec<Vec<u8>> = (0..UDP_BATCH).map(|_| Vec::with_capacity(1500)).collect();
    let mut dests: Vec<SocketAddr> = Vec::with_capacity(UDP_BATCH);
    let mut reader = shared.published.reader();
    loop {
        // Blocks for the first datagram, then takes whatever else is queued
        // (MSG_WAITFORONE): one system call per batch under load, one per
        // datagram when idle.
        got.clear();
        let res = {
            let mut iovs: Vec<[std::io::IoSliceMut<'_>; 1]> = bufs
                .iter_mut()
                .map(|b| [std::io::IoSliceMut::new(&mut b[..])])
                .collect();
            nix::sys::socket::recvmmsg(
                fd,
                &mut hdrs,
                iovs.iter_mut(),
                nix::sys::socket::MsgFlags::MSG_WAITFORONE,
                None,
            )
            .map(|msgs| {
                for m in msgs {
                    got.push((m.bytes, m.address.and_then(|a| std_addr(&a))));
                }
            })
        };
        match res {
            Ok(()) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("rnet-dns: udp {local}: receive failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        let snap = reader.current();
        dests.clear();
        for (&(n, src), buf) in got.iter().zip(&bufs) {
            let Some(src) = src else { continue };
            let Some(out) = outs.get_mut(dests.len()) else {
                break;
            };
            let msg = buf.get(..n).unwrap_or(&[]);
            let q = match Query::parse(msg) {
                Ok(q) => q,
                Err(QueryError::Ignore) => continue,
                Err(QueryError::Reply(rc)) => {
                    wire::error_response(out, msg, rc);
                    dests.push(src);
                    continue;
                }
            };
            match snap.resolve(msg, &q, src.ip(), local, q.udp_limit(), out) {
                Outcome::Answered => dests.push(src),
                Outcome::Drop => {}
                Outcome::Forward(ups) => {
                    match shared.forwarder.inflight.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let msg = msg.to_vec();
                            let sh = shared.clone();
                            let s = sock.clone();
                            shared.rt.spawn(async move {
                                let resp = sh.forwarder.resolve(&msg, &q, &ups, false).await;
                                let _ = s.send_to(&resp, src);
                                drop(permit);
                            });
                        }
                        // Too much upstream work in flight: SERVFAIL now
                        // (already in `out`).
                        Err(_) => dests.push(src),
                    }
                }
            }
        }
        send_batch(sock, &outs[..dests.len()], &dests);
    }
}

/// Sends `outs[i]` to `dests[i]` with as few `sendmmsg` calls as the kernel
/// allows; a datagram the kernel refuses is skipped (as a failed `sendto`
/// was), the rest still go.
fn send_batch(sock: &std::net::UdpSocket, outs: &[Vec<u8>], dests: &[SocketAddr]) {
    use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny, sendmmsg};
    if outs.is_empty() {
        return;
    }
    let addrs: Vec<SocketAddrAny> = dests.iter().map(|d| SocketAddrAny::from(*d)).collect();
    let iovs: Vec<[std::io::IoSlice<'_>; 1]> =
        outs.iter().map(|o| [std::io::IoSlice::new(o)]).collect();
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = (0..outs.len())
        .map(|_| SendAncillaryBuffer::default())
        .collect();
    let mut msgs: Vec<MMsgHdr<'_>> = addrs
        .iter()
        .zip(&iovs)
        .zip(controls.iter_mut())
        .map(|((a, iov), c)| MMsgHdr::new_with_addr(a, iov, c))
        .collect();
    let mut at = 0;
    while at < msgs.len() {
        let Some(rest) = msgs.get_mut(at..) else {
            break;
        };
        match sendmmsg(sock, rest, SendFlags::empty()) {
            Ok(0) => at += 1,
            Ok(n) => at += n,
            Err(rustix::io::Errno::INTR) => {}
            // The first datagram of `rest` was refused: skip it.
            Err(_) => at += 1,
        }
    }
}

fn std_addr(a: &nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

async fn tcp_accept(shared: Arc<Shared>, l: tokio::net::TcpListener, local: IpAddr) {
    loop {
        let (stream, peer) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("rnet-dns: tcp {local}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = shared.tcp_conns.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let sh = shared.clone();
        tokio::spawn(async move {
            tcp_conn(&sh, stream, peer, local).await;
            drop(permit);
        });
    }
}

async fn tcp_conn(shared: &Shared, mut s: tokio::net::TcpStream, peer: SocketAddr, local: IpAddr) {
    let idle = shared.cfg.tcp_idle;
    let mut fb = FrameBuf::default();
    let mut rbuf = vec![0u8; 4096];
    let mut out: Vec<u8> = Vec::new();
    let mut frame_started: Option<Instant> = None;
    loop {
        loop {
            let frame = match fb.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => return,
            };
            frame_started = None;
            let q = match Query::parse(&frame) {
                Ok(q) => q,
                Err(QueryError::Ignore) => continue,
                Err(QueryError::Reply(rc)) => {
                    wire::error_response(&mut out, &frame, rc);
                    if send_frame(&mut s, &out, idle).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let snap = shared.published.load();
            match snap.resolve(&frame, &q, peer.ip(), local, 65535, &mut out) {
                Outcome::Answered => {}
                Outcome::Drop => continue,
                Outcome::Forward(ups) => {
                    if let Ok(_permit) = shared.forwarder.inflight.clone().try_acquire_owned() {
                        out = shared.forwarder.resolve(&frame, &q, &ups, true).await;
                    }
                }
            }
            if send_frame(&mut s, &out, idle).await.is_err() {
                return;
            }
        }
        // Wait for more: the idle timeout, or what is left of the current
        // message's budget if one has started.
        let wait = match frame_started {
            Some(t0) => idle.saturating_sub(t0.elapsed()),
            None => idle,
        };
        let n = match tokio::time::timeout(wait, s.read(&mut rbuf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(n)) => n,
        };
        if fb.is_empty() {
            frame_started = Some(Instant::now());
        }
        fb.extend(rbuf.get(..n).unwrap_or(&[]));
    }
}

async fn send_frame(s: &mut tokio::net::TcpStream, msg: &[u8], t: Duration) -> Result<(), ()> {
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&(msg.len().min(65535) as u16).to_be_bytes());
    framed.extend_from_slice(msg.get(..msg.len().min(65535)).unwrap_or(&[]));
    match tokio::time::timeout(t, s.write_all(&framed)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// A reply as one JSON line.
pub fn reply_line(r: &Reply) -> Vec<u8> {
    let mut line = serde_json::to_vec(r).unwrap_or_else(|e| {
        format!(r#"{{"ok":false,"kind":"internal","error":"cannot encode the reply: {e}"}}"#)
            .into_bytes()
    });
    line.push(b'\n');
    line
}

/// The mutable side, behind one lock: the index (the registry's only copy),
/// store, bound addresses.
struct State {
    index: Index,
    store: Store,
    bound: HashSet<SocketAddr>,
    closing: bool,
    changes: u64,
}

/// Handles control requests: validate, bind, persist, publish, reply.
pub struct Control {
    shared: Arc<Shared>,
    state: Mutex<State>,
    /// Set when the resolver should stop (shutdown request or idle exit).
    pub stop: tokio::sync::Notify,
}

impl Control {
    /// Publishes the restored `index` and binds its networks' addresses.
    /// Bind failures of restored networks are logged, not fatal.
    pub fn new(shared: Arc<Shared>, mut index: Index, store: Store) -> Arc<Control> {
        let snap = index.publish();
        shared.published.store(snap);
        let mut bound = HashSet::new();
        for n in index.networks() {
            for a in &n.listen {
                let sa = SocketAddr::new(*a, shared.cfg.port);
                match start_listener(&shared, sa) {
                    Ok(()) => {
                        bound.insert(sa);
                    }
                    Err(e) => eprintln!("rnet-dns: network {}: {e}", n.name),
                }
            }
        }
        Arc::new(Control {
            shared,
            state: Mutex::new(State {
                index,
                store,
                bound,
                closing: false,
                changes: 0,
            }),
            stop: tokio::sync::Notify::new(),
        })
    }

    /// Records in the registry.
    pub fn records(&self) -> usize {
        self.state.lock().map(|s| s.index.len()).unwrap_or(0)
    }

    /// Handles one request and returns its reply line (newline included) and
    /// whether the resolver should now stop. A `list` reply is written
    /// straight from the index, record by record: listing 10,000 names does
    /// not build them as owned strings first (a few MB the heap would keep).
    pub fn handle_line(&self, req: Request) -> (Vec<u8>, bool) {
        if matches!(req, Request::List) {
            if let Ok(st) = self.state.lock() {
                if !st.closing {
                    let mut line = br#"{"ok":true,"registry":"#.to_vec();
                    if st.index.write_file(&mut line).is_ok() {
                        line.extend_from_slice(b"}\n");
                        return (line, false);
                    }
                }
            }
        }
        let (reply, stop) = self.handle(req);
        (reply_line(&reply), stop)
    }

    /// Handles one request (blocking: binds, fsyncs). Returns the reply and
    /// whether the resolver should now stop.
    pub fn handle(&self, req: Request) -> (Reply, bool) {
        let Ok(mut st) = self.state.lock() else {
            return (
                Reply::err(&DnsError::Protocol("state lock poisoned".into())),
                true,
            );
        };
        if st.closing {
            return (Reply::err(&DnsError::Closing), false);
        }
        match self.handle_locked(&mut st, req) {
            Ok(r) => {
                let stop = st.closing;
                (r, stop)
            }
            Err(e) => (Reply::err(&e), false),
        }
    }

    fn handle_locked(&self, st: &mut State, req: Request) -> Result<Reply, DnsError> {
        let req = match req {
            Request::Ping => {
                return Ok(Reply {
                    pid: Some(std::process::id()),
                    ..Reply::ok()
                });
            }
            Request::List => {
                return Ok(Reply {
                    registry: Some(st.index.to_file()),
                    ..Reply::ok()
                });
            }
            Request::Shutdown => {
                st.closing = true;
                return Ok(Reply::ok());
            }
            Request::Register {
                network,
                attachment,
                names,
                addrs,
            } => {
                let (network, rec) = Registry::prepare(network, attachment, &names, &addrs)?;
                st.index.check(&network, &rec)?;
                for a in &network.listen {
                    let sa = SocketAddr::new(*a, self.shared.cfg.port);
                    if !st.bound.contains(&sa) {
                        start_listener(&self.shared, sa)?;
                        st.bound.insert(sa);
                    }
                }
                Request::Register {
                    network,
                    attachment: rec.attachment,
                    names: rec.names,
                    addrs: rec.addrs,
                }
            }
            other => other,
        };
        // Durable first (journal fsync), then live, then the ack.
        st.store.append(&req)?;
        // Cannot fail after the checks above (a journal line that failed
        // would fail the same way on replay, and be skipped there).
        let applied = st.index.apply(&req)?;
        if let Err(e) = st.store.maybe_compact(&st.index) {
            // The change is in the journal already; compaction retries next time.
            eprintln!("rnet-dns: {e}");
        }
        let removed = applied.removed;
        if applied.changed {
            let snap = st.index.publish();
            self.shared.published.store(snap);
            st.changes += 1;
        }
        Ok(Reply {
            removed: matches!(req, Request::Unregister { .. } | Request::Gc { .. })
                .then_some(removed),
            ..Reply::ok()
        })
    }

    /// If the registry has been empty since change number `seen`, stop:
    /// mark closing (later requests get "closing" and their clients start a
    /// new resolver) and return true.
    pub fn idle_exit(&self, seen: u64) -> bool {
        let Ok(mut st) = self.state.lock() else {
            return false;
        };
        if st.closing || !st.index.is_empty() || st.changes != seen {
            return false;
        }
        st.closing = true;
        true
    }

    /// The change counter and whether the registry is empty.
    pub fn idle_state(&self) -> (u64, bool) {
        self.state
            .lock()
            .map(|s| (s.changes, s.index.is_empty()))
            .unwrap_or((0, false))
    }
}
