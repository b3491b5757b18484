//! Forwarding to upstream servers, with a bounded cache.
//!
//! The query is relayed as received (EDNS and all) with a fresh random ID
//! from a fresh connected socket (random source port; the kernel drops
//! datagrams from other sources); a reply is accepted only if its ID and
//! question match. Upstreams are tried in order (at most three) within a
//! per-try timeout and an overall budget; a timeout or transport error moves
//! on, SERVFAIL/REFUSED from one upstream tries the next, NXDOMAIN is passed
//! through as the upstream said it. When all fail the client gets SERVFAIL.
//!
//! Truncation: a truncated UDP reply is passed to a UDP client as is (TC set),
//! so the client retries over TCP, and a query that arrived over TCP goes
//! upstream over TCP. Nothing truncated is cached.
//!
//! The cache holds whole responses keyed by the lowercased question and the
//! flags that change answers (RD, CD, DO, EDNS), for the smallest TTL in the
//! response (negative answers: the SOA's, capped by its MINIMUM), capped at
//! [`ForwardConfig::max_ttl`]; a hit is served with the TTLs counted down and
//! the client's own question bytes (its 0x20 case) copied in.

use crate::wire::{self, Query, rcode};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Forwarding limits.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// Timeout of one try against one upstream.
    pub try_timeout: Duration,
    /// Budget for all tries of one query.
    pub total_timeout: Duration,
    /// Cache capacity in responses (0 disables the cache).
    pub cache_entries: usize,
    /// Longest time a response is cached.
    pub max_ttl: u32,
    /// Upstream queries in flight at once; beyond that, SERVFAIL at once.
    pub max_inflight: usize,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            try_timeout: Duration::from_secs(2),
            total_timeout: Duration::from_secs(5),
            cache_entries: 4096,
            max_ttl: 3600,
            max_inflight: 1024,
        }
    }
}

struct Entry {
    resp: Vec<u8>,
    ttl_offsets: Vec<usize>,
    stored: Instant,
    ttl: u32,
}

/// The forwarder (shared by all listeners).
pub struct Forwarder {
    cfg: ForwardConfig,
    cache: Mutex<HashMap<Vec<u8>, Entry>>,
    /// Bounds concurrent upstream work.
    pub inflight: std::sync::Arc<tokio::sync::Semaphore>,
}

fn random_id() -> u16 {
    let mut b = [0u8; 2];
    match rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()) {
        Ok(_) => u16::from_ne_bytes(b),
        Err(_) => {
            // Not expected on Linux; fall back to the clock's low bits.
            let n = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            (n ^ (n >> 16)) as u16
        }
    }
}

impl Forwarder {
    /// A forwarder with these limits.
    pub fn new(cfg: ForwardConfig) -> Forwarder {
        let inflight = std::sync::Arc::new(tokio::sync::Semaphore::new(cfg.max_inflight));
        Forwarder {
            cfg,
            cache: Mutex::new(HashMap::new()),
            inflight,
        }
    }

    /// Cached entries.
    pub fn cache_len(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }

    fn cache_get(&self, key: &[u8], msg: &[u8], q: &Query) -> Option<Vec<u8>> {
        let mut cache = self.cache.lock().ok()?;
        let e = cache.get(key)?;
        let age = e.stored.elapsed().as_secs();
        if age >= u64::from(e.ttl) {
            cache.remove(key);
            return None;
        }
        let mut resp = e.resp.clone();
        wire::rewrite_ttls(&mut resp, &e.ttl_offsets, age as u32);
        drop(cache);
        wire::set_id(&mut resp, q.id);
        if let (Some(dst), Some(src)) = (
            resp.get_mut(wire::HEADER_LEN..q.question_end),
            msg.get(wire::HEADER_LEN..q.question_end),
        ) {
            if dst.len() == src.len() {
                dst.copy_from_slice(src);
            }
        }
        Some(resp)
    }

    fn cache_put(&self, key: Vec<u8>, resp: &[u8]) {
        if self.cfg.cache_entries == 0 {
            return;
        }
        let Some(walk) = wire::walk_records(resp) else {
            return;
        };
        if walk.truncated || !matches!(walk.rcode, rcode::NOERROR | rcode::NXDOMAIN) {
            return;
        }
        let ttl = walk.min_ttl.unwrap_or(0).min(self.cfg.max_ttl);
        if ttl == 0 {
            return;
        }
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= self.cfg.cache_entries {
            cache.retain(|_, e| e.stored.elapsed().as_secs() < u64::from(e.ttl));
            if cache.len() >= self.cfg.cache_entries {
                // Still full of live entries: drop an eighth, arbitrary ones.
                let drop_n = (self.cfg.cache_entries / 8).max(1);
                let victims: Vec<Vec<u8>> = cache.keys().take(drop_n).cloned().collect();
                for v in victims {
                    cache.remove(&v);
                }
            }
        }
        cache.insert(
            key,
            Entry {
                resp: resp.to_vec(),
                ttl_offsets: walk.ttl_offsets,
                stored: Instant::now(),
                ttl,
            },
        );
    }

    /// Resolves `msg` (parsed as `q`) through `upstreams`; always returns a
    /// response for the client (SERVFAIL when every upstream failed).
    pub async fn resolve(
        &self,
        msg: &[u8],
        q: &Query,
        upstreams: &[SocketAddr],
        tcp: bool,
    ) -> Vec<u8> {
        let key = q.cache_key(msg);
        if let Some(hit) = self.cache_get(&key, msg, q) {
            return hit;
        }
        let deadline = Instant::now() + self.cfg.total_timeout;
        let mut last: Option<Vec<u8>> = None;
        for up in upstreams.iter().take(3) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let t = left.min(self.cfg.try_timeout);
            let got = if tcp {
                tokio::time::timeout(t, tcp_try(*up, msg, q)).await
            } else {
                tokio::time::timeout(t, udp_try(*up, msg, q)).await
            };
            let Ok(Ok(mut resp)) = got else { continue };
            wire::set_id(&mut resp, q.id);
            let rc = resp.get(3).map_or(rcode::SERVFAIL, |b| b & 0xf);
            if matches!(rc, rcode::SERVFAIL | rcode::REFUSED) {
                last = Some(resp);
                continue;
            }
            self.cache_put(key, &resp);
            return resp;
        }
        last.unwrap_or_else(|| {
            let mut out = Vec::new();
            wire::empty_response(&mut out, msg, q, rcode::SERVFAIL, false);
            out
        })
    }
}

async fn udp_try(up: SocketAddr, msg: &[u8], q: &Query) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if up.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.connect(up).await?;
    let id = random_id();
    let mut m = msg.to_vec();
    wire::set_id(&mut m, id);
    sock.send(&m).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        let r = buf.get(..n).unwrap_or(&[]);
        if wire::id(r) == Some(id) && wire::same_question(msg, q, r) {
            return Ok(r.to_vec());
        }
    }
}

async fn tcp_try(up: SocketAddr, msg: &[u8], q: &Query) -> std::io::Result<Vec<u8>> {
    let mut s = tokio::net::TcpStream::connect(up).await?;
    let id = random_id();
    let mut m = Vec::with_capacity(msg.len() + 2);
    m.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    m.extend_from_slice(msg);
    if let Some(idb) = m.get_mut(2..4) {
        idb.copy_from_slice(&id.to_be_bytes());
    }
    s.write_all(&m).await?;
    loop {
        let len = s.read_u16().await? as usize;
        let mut r = vec![0u8; len];
        s.read_exact(&mut r).await?;
        if wire::id(&r) == Some(id) && wire::same_question(msg, q, &r) {
            return Ok(r);
        }
    }
}
