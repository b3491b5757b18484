//! Hand-encoded nfnetlink: message/attribute writer, attribute reader, and the
//! request / dump / batch engine on one `NETLINK_NETFILTER` socket.
//!
//! Layouts follow `linux/netfilter/nfnetlink.h` and `nf_tables.h`: every
//! message is `nlmsghdr` + `nfgenmsg {family, version 0, res_id (be16)}` +
//! attributes. nf_tables integers are big-endian; strings are NUL-terminated;
//! nests carry `NLA_F_NESTED`.

use std::io;
use std::time::Duration;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use crate::NftError;

pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_DUMP_INTR: u16 = 0x10;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;

const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLMSGERR_ATTR_MSG: u16 = 1;

const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

pub(crate) const NLMSG_HDR_LEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

pub(crate) const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub(crate) const NFNL_MSG_BATCH_END: u16 = 0x11;
pub(crate) const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFNL_BATCH_GENID`: a BEGIN attribute; the kernel refuses the batch with
/// `ERESTART` unless the ruleset is still at this generation.
pub(crate) const NFNL_BATCH_GENID: u16 = 1;

/// `NFT_MSG_*` operations (low byte of the message type).
pub(crate) mod msg {
    pub const GETTABLE: u8 = 1;
    pub const GETCHAIN: u8 = 4;
    pub const DELCHAIN: u8 = 5;
    pub const GETSET: u8 = 10;
    pub const NEWSETELEM: u8 = 12;
    pub const GETSETELEM: u8 = 13;
    pub const DELSETELEM: u8 = 14;
    pub const GETGEN: u8 = 16;
    /// Kernel >= 6.3: delete, ignoring elements that do not exist.
    pub const DESTROYSETELEM: u8 = 30;
}

/// `NFTA_*` attribute numbers used here.
pub(crate) mod attr {
    pub const TABLE_NAME: u16 = 1;
    pub const GEN_ID: u16 = 1;
    pub const TABLE_USERDATA: u16 = 6;
    pub const CHAIN_TABLE: u16 = 1;
    pub const CHAIN_NAME: u16 = 3;
    pub const CHAIN_POLICY: u16 = 5;
    pub const SET_TABLE: u16 = 1;
    pub const SET_NAME: u16 = 2;
    pub const SET_FLAGS: u16 = 3;
    pub const SET_KEY_TYPE: u16 = 4;
    pub const SET_KEY_LEN: u16 = 5;
    pub const SET_DATA_TYPE: u16 = 6;
    pub const SET_DATA_LEN: u16 = 7;
    pub const SET_ELEM_LIST_TABLE: u16 = 1;
    pub const SET_ELEM_LIST_SET: u16 = 2;
    pub const SET_ELEM_LIST_ELEMENTS: u16 = 3;
    pub const LIST_ELEM: u16 = 1;
    pub const SET_ELEM_KEY: u16 = 1;
    pub const SET_ELEM_DATA: u16 = 2;
    pub const SET_ELEM_FLAGS: u16 = 3;
    pub const SET_ELEM_USERDATA: u16 = 6;
    pub const DATA_VALUE: u16 = 1;
    pub const DATA_VERDICT: u16 = 2;
    pub const VERDICT_CODE: u16 = 1;
    pub const VERDICT_CHAIN: u16 = 2;
}

/// nf_tables message type for operation `op`.
pub(crate) fn nft_type(op: u8) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | u16::from(op)
}

/// Receive buffer size; nfnetlink dump datagrams are at most 32 KiB.
const RECV_BUF_SIZE: usize = 64 * 1024;
/// How often a dump is restarted after `NLM_F_DUMP_INTR`.
pub(crate) const DUMP_ATTEMPTS: u32 = 5;
/// A safety net: no reply for this long means something is badly wrong
/// (the kernel always answers); better an error than a hung CNI plugin.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// Appends netlink messages and attributes to a byte buffer.
#[derive(Debug, Default)]
pub(crate) struct MsgBuf {
    pub(crate) buf: Vec<u8>,
}

impl MsgBuf {
    /// Start a message; returns its offset for [`MsgBuf::end`].
    pub(crate) fn begin(
        &mut self,
        ty: u16,
        flags: u16,
        seq: u32,
        family: u8,
        res_id: u16,
    ) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in end()
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel's
        self.buf.push(family);
        self.buf.push(0); // NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    /// A batch's `NFNL_MSG_BATCH_BEGIN`, with `NFNL_BATCH_GENID` when a
    /// generation is given (the kernel then refuses the batch with
    /// `ERESTART` unless the ruleset is still at it).
    pub(crate) fn batch_begin(&mut self, seq: u32, generation: Option<u32>) {
        let s = self.begin(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            seq,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        if let Some(g) = generation {
            self.attr_be32(NFNL_BATCH_GENID, g);
        }
        self.end(s);
    }

    /// A batch's `NFNL_MSG_BATCH_END`.
    pub(crate) fn batch_end(&mut self, seq: u32) {
        let s = self.begin(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            seq,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        self.end(s);
    }

    /// Finish the message started at `start` (patch its length).
    pub(crate) fn end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        if let Some(f) = self.buf.get_mut(start..start + 4) {
            f.copy_from_slice(&len.to_ne_bytes());
        }
    }

    pub(crate) fn attr(&mut self, ty: u16, val: &[u8]) {
        let len = (4 + val.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(val);
        self.pad();
    }

    pub(crate) fn attr_str(&mut self, ty: u16, s: &str) {
        let len = (4 + s.len() + 1) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    pub(crate) fn attr_be32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    pub(crate) fn nest(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    /// Close a nest; fails if it outgrew the 16-bit attribute length.
    pub(crate) fn nest_end(&mut self, start: usize) -> Result<(), NftError> {
        let len = self.buf.len() - start;
        let len = u16::try_from(len).map_err(|_| {
            NftError::invalid(format!(
                "a nested netlink attribute of {len} bytes exceeds 65535; send fewer elements per message"
            ))
        })?;
        if let Some(f) = self.buf.get_mut(start..start + 2) {
            f.copy_from_slice(&len.to_ne_bytes());
        }
        Ok(())
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }
}

/// Iterates `(type without flags, value)` over a run of attributes; a
/// malformed attribute ends the iteration (never panics).
pub(crate) fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let hdr = buf.get(..4)?;
        let len = usize::from(u16::from_ne_bytes([hdr[0], hdr[1]]));
        let ty = u16::from_ne_bytes([hdr[2], hdr[3]]) & NLA_TYPE_MASK;
        if len < 4 {
            buf = &[];
            return None;
        }
        let val = buf.get(4..len)?;
        buf = buf.get(align4(len)..).unwrap_or(&[]);
        Some((ty, val))
    })
}

pub(crate) fn be32(v: &[u8]) -> Option<u32> {
    v.get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
}

pub(crate) fn str_of(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(v.get(..end).unwrap_or(&[])).into_owned()
}

pub(crate) fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

/// Skip the `nfgenmsg` header of a received nf_tables message payload.
pub(crate) fn nft_attrs(payload: &[u8]) -> &[u8] {
    payload.get(NFGENMSG_LEN..).unwrap_or(&[])
}

/// Sees each received message `(header, payload)`; `Ok(true)` = finished.
type OnRecv<'a> = dyn FnMut(&Header, &[u8]) -> Result<bool, NftError> + 'a;
/// Sees each data message `(type, payload)` of a request's reply.
pub(crate) type OnMsg<'a> = dyn FnMut(u16, &[u8]) -> Result<(), String> + 'a;
/// Decodes each data message of a dump into the output vector.
pub(crate) type OnDump<'a, T> = dyn FnMut(u16, &[u8], &mut Vec<T>) -> Result<(), String> + 'a;

/// The outcome of one message of a batch: its sequence number and errno
/// (0 = ACK), plus the kernel's extended ACK text.
#[derive(Debug, Clone)]
pub(crate) struct Ack {
    pub(crate) seq: u32,
    pub(crate) errno: i32,
    pub(crate) extack: Option<String>,
}

/// One `NETLINK_NETFILTER` socket plus sequence numbers and buffers.
pub(crate) struct Conn {
    pub(crate) sock: Socket,
    port: u32,
    seq: u32,
    recv_buf: Vec<u8>,
    sndbuf: usize,
    pub(crate) dump_retries: u64,
}

impl Conn {
    pub(crate) fn new() -> Result<Conn, NftError> {
        let mut sock = Socket::new(NETLINK_NETFILTER)
            .map_err(|e| NftError::io("opening a NETLINK_NETFILTER socket", e))?;
        let addr = sock
            .bind_auto()
            .map_err(|e| NftError::io("binding the nf_tables netlink socket", e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| NftError::io("connecting the nf_tables netlink socket", e))?;
        // Optional: extended ACK text and capped ACKs; tolerated if missing.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        let _ = rustix::net::sockopt::set_socket_timeout(
            &sock,
            rustix::net::sockopt::Timeout::Recv,
            Some(RECV_TIMEOUT),
        );
        let sndbuf = rustix::net::sockopt::socket_send_buffer_size(&sock).unwrap_or(0);
        Ok(Conn {
            sock,
            port: addr.port_number(),
            seq: 0,
            recv_buf: Vec::with_capacity(RECV_BUF_SIZE),
            sndbuf,
            dump_retries: 0,
        })
    }

    pub(crate) fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        if self.seq == 0 {
            self.seq = 1;
        }
        self.seq
    }

    fn send(&mut self, data: &[u8], ctx: &dyn Fn() -> String) -> Result<(), NftError> {
        // The kernel refuses a datagram larger than the socket's send buffer;
        // grow it (FORCE works for root, plain SO_SNDBUF up to wmem_max).
        if data.len() + 4096 > self.sndbuf {
            let want = data.len() + 4096;
            let fd = &self.sock;
            if rustix::net::sockopt::set_socket_send_buffer_size_force(fd, want).is_err() {
                let _ = rustix::net::sockopt::set_socket_send_buffer_size(fd, want);
            }
            self.sndbuf = rustix::net::sockopt::socket_send_buffer_size(fd).unwrap_or(0);
        }
        loop {
            match self.sock.send(data, 0) {
                Ok(n) if n == data.len() => return Ok(()),
                Ok(n) => {
                    return Err(NftError::protocol(
                        ctx(),
                        format!("short send: {n} of {} bytes", data.len()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NftError::io(format!("sending: {}", ctx()), e)),
            }
        }
    }

    /// Read one datagram; calls `each(header, payload)` for every message in
    /// it. `each` returns `true` when the caller is done.
    fn recv_round(
        &mut self,
        ctx: &dyn Fn() -> String,
        each: &mut OnRecv<'_>,
    ) -> Result<bool, NftError> {
        self.recv_buf.clear();
        let n = loop {
            match self.sock.recv(&mut self.recv_buf, libc::MSG_TRUNC) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(NftError::io(
                        format!("receiving the reply to: {}", ctx()),
                        e,
                    ));
                }
            }
        };
        if n > self.recv_buf.len() {
            return Err(NftError::protocol(
                ctx(),
                format!("a {n}-byte reply does not fit the {RECV_BUF_SIZE}-byte receive buffer"),
            ));
        }
        let mut data: &[u8] = self.recv_buf.get(..n).unwrap_or(&[]);
        let mut done = false;
        while data.len() >= NLMSG_HDR_LEN {
            let hdr = Header::parse(data);
            let len = hdr.len as usize;
            if len < NLMSG_HDR_LEN || len > data.len() {
                return Err(NftError::protocol(
                    ctx(),
                    format!("message length {len} invalid ({} bytes left)", data.len()),
                ));
            }
            let payload = data.get(NLMSG_HDR_LEN..len).unwrap_or(&[]);
            data = data.get(align4(len)..).unwrap_or(&[]);
            if hdr.port != self.port && hdr.port != 0 {
                continue;
            }
            if hdr.ty == NLMSG_OVERRUN {
                return Err(NftError::protocol(ctx(), "kernel reported NLMSG_OVERRUN"));
            }
            if hdr.ty == NLMSG_NOOP {
                continue;
            }
            if each(&hdr, payload)? {
                done = true;
            }
        }
        Ok(done)
    }

    /// A `doit` request (`msg` already encoded with sequence `seq` and
    /// `NLM_F_ACK`); data replies go to `on_msg(type, payload)`.
    pub(crate) fn request(
        &mut self,
        msg: &[u8],
        seq: u32,
        ctx: &dyn Fn() -> String,
        on_msg: &mut OnMsg<'_>,
    ) -> Result<(), NftError> {
        self.send(msg, ctx)?;
        let mut result: Option<Result<(), NftError>> = None;
        let mut parse_err: Option<String> = None;
        loop {
            let done = self.recv_round(ctx, &mut |hdr, payload| {
                if hdr.seq != seq {
                    return Ok(false);
                }
                match hdr.ty {
                    NLMSG_ERROR => {
                        let code = read_i32(payload).unwrap_or(-libc::EPROTO);
                        result = Some(if code == 0 {
                            Ok(())
                        } else {
                            Err(kernel_error(code, extack_error(payload, hdr.flags), ctx))
                        });
                        Ok(true)
                    }
                    NLMSG_DONE => {
                        result = Some(Ok(()));
                        Ok(true)
                    }
                    ty => {
                        if parse_err.is_none() {
                            if let Err(e) = on_msg(ty, payload) {
                                parse_err = Some(e);
                            }
                        }
                        Ok(false)
                    }
                }
            })?;
            if done {
                break;
            }
        }
        match (result, parse_err) {
            (Some(Err(e)), _) => Err(e),
            (_, Some(detail)) => Err(NftError::protocol(ctx(), detail)),
            _ => Ok(()),
        }
    }

    /// A dump. `build(seq)` encodes the request; `parse` sees every data
    /// message and pushes what it decodes. On `NLM_F_DUMP_INTR` the partial
    /// result is dropped and the dump restarted, up to [`DUMP_ATTEMPTS`] times.
    pub(crate) fn dump<T>(
        &mut self,
        build: &dyn Fn(u32) -> Vec<u8>,
        ctx: &dyn Fn() -> String,
        parse: &mut OnDump<'_, T>,
    ) -> Result<Vec<T>, NftError> {
        let mut out = Vec::new();
        for attempt in 1..=DUMP_ATTEMPTS {
            if attempt > 1 {
                self.dump_retries += 1;
                out.clear();
            }
            let seq = self.next_seq();
            let req = build(seq);
            self.send(&req, ctx)?;
            let mut interrupted = false;
            let mut result: Option<Result<(), NftError>> = None;
            let mut parse_err: Option<String> = None;
            loop {
                let done = self.recv_round(ctx, &mut |hdr, payload| {
                    if hdr.seq != seq {
                        return Ok(false);
                    }
                    if hdr.flags & NLM_F_DUMP_INTR != 0 {
                        interrupted = true;
                    }
                    match hdr.ty {
                        NLMSG_ERROR | NLMSG_DONE => {
                            let code = read_i32(payload).unwrap_or(0);
                            result = Some(if code < 0 {
                                let ext = if hdr.ty == NLMSG_ERROR {
                                    extack_error(payload, hdr.flags)
                                } else {
                                    extack_msg(payload.get(4..).unwrap_or(&[]), hdr.flags)
                                };
                                Err(kernel_error(code, ext, ctx))
                            } else {
                                Ok(())
                            });
                            Ok(true)
                        }
                        ty => {
                            if parse_err.is_none() {
                                if let Err(e) = parse(ty, payload, &mut out) {
                                    parse_err = Some(e);
                                }
                            }
                            Ok(false)
                        }
                    }
                })?;
                if done {
                    break;
                }
            }
            if let Some(Err(e)) = result {
                return Err(e);
            }
            if let Some(detail) = parse_err {
                return Err(NftError::protocol(ctx(), detail));
            }
            if !interrupted {
                return Ok(out);
            }
        }
        Err(NftError::DumpInterrupted {
            context: ctx(),
            attempts: DUMP_ATTEMPTS,
        })
    }

    /// Send an encoded batch (BEGIN, messages with `NLM_F_ACK`, END) and
    /// collect one ACK per message in `seqs`. An error addressed to the
    /// BEGIN message (`begin_seq`, e.g. `EPERM`) fails the whole batch at once.
    pub(crate) fn batch(
        &mut self,
        data: &[u8],
        begin_seq: u32,
        seqs: &[u32],
        ctx: &dyn Fn() -> String,
    ) -> Result<Vec<Ack>, NftError> {
        self.send(data, ctx)?;
        let (first, last) = match (seqs.first(), seqs.last()) {
            (Some(f), Some(l)) => (*f, *l),
            _ => return Ok(Vec::new()),
        };
        let mut acks: Vec<Ack> = Vec::with_capacity(seqs.len());
        let mut fatal: Option<NftError> = None;
        loop {
            self.recv_round(ctx, &mut |hdr, payload| {
                if hdr.ty != NLMSG_ERROR {
                    return Ok(false);
                }
                let code = read_i32(payload).unwrap_or(-libc::EPROTO);
                let in_batch = if first <= last {
                    (first..=last).contains(&hdr.seq)
                } else {
                    hdr.seq >= first || hdr.seq <= last
                };
                if in_batch {
                    acks.push(Ack {
                        seq: hdr.seq,
                        errno: code.checked_neg().unwrap_or(i32::MAX),
                        extack: extack_error(payload, hdr.flags),
                    });
                } else if hdr.seq == begin_seq && code != 0 {
                    fatal = Some(kernel_error(code, extack_error(payload, hdr.flags), ctx));
                }
                Ok(false)
            })?;
            if let Some(e) = fatal {
                return Err(e);
            }
            if acks.len() >= seqs.len() {
                return Ok(acks);
            }
        }
    }
}

pub(crate) struct Header {
    pub(crate) len: u32,
    pub(crate) ty: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
    pub(crate) port: u32,
}

impl Header {
    pub(crate) fn parse(data: &[u8]) -> Header {
        let u32_at = |i: usize| {
            data.get(i..i + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_ne_bytes)
                .unwrap_or(0)
        };
        let u16_at = |i: usize| {
            data.get(i..i + 2)
                .and_then(|b| b.try_into().ok())
                .map(u16::from_ne_bytes)
                .unwrap_or(0)
        };
        Header {
            len: u32_at(0),
            ty: u16_at(4),
            flags: u16_at(6),
            seq: u32_at(8),
            port: u32_at(12),
        }
    }
}

fn read_i32(b: &[u8]) -> Option<i32> {
    b.get(..4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes)
}

pub(crate) fn kernel_error(
    code: i32,
    extack: Option<String>,
    ctx: &dyn Fn() -> String,
) -> NftError {
    let errno = code.checked_neg().unwrap_or(i32::MAX);
    NftError::kernel(errno, with_extack(ctx(), extack))
}

pub(crate) fn with_extack(ctx: String, extack: Option<String>) -> String {
    match extack {
        Some(m) if !m.is_empty() => format!("{ctx} (kernel: {m})"),
        _ => ctx,
    }
}

/// Extended ACK text of an `NLMSG_ERROR`: error code, then our request's
/// header (whole request unless `NLM_F_CAPPED`), then TLVs.
fn extack_error(payload: &[u8], flags: u16) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let orig = payload.get(4..)?;
    let skip = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDR_LEN
    } else {
        align4(Header::parse(orig).len as usize)
    };
    extack_msg(orig.get(skip..)?, flags)
}

fn extack_msg(tlvs: &[u8], flags: u16) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    attrs(tlvs)
        .find(|(t, _)| *t == NLMSGERR_ATTR_MSG)
        .map(|(_, v)| str_of(v))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn writer_layout() {
        let mut m = MsgBuf::default();
        let s = m.begin(nft_type(msg::GETTABLE), NLM_F_REQUEST | NLM_F_ACK, 7, 1, 0);
        m.attr_str(attr::TABLE_NAME, "rnet");
        m.end(s);
        let b = &m.buf;
        assert_eq!(b.len(), 16 + 4 + 12);
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes(b[4..6].try_into().unwrap()), 0x0a01);
        assert_eq!(&b[16..20], &[1, 0, 0, 0]);
        // "rnet\0" = 5 bytes: attr len 9, padded to 12.
        assert_eq!(&b[20..24], &[9, 0, 1, 0]);
        assert_eq!(&b[24..29], b"rnet\0");
        let parsed: Vec<_> = attrs(&b[20..]).collect();
        assert_eq!(parsed, vec![(1, &b"rnet\0"[..])]);
    }

    #[test]
    fn nest_and_reader_never_panic() {
        let mut m = MsgBuf::default();
        let n = m.nest(3);
        m.attr_be32(1, 0x0102_0304);
        m.nest_end(n).unwrap();
        let (t, v) = attrs(&m.buf).next().unwrap();
        assert_eq!(t, 3);
        assert_eq!(attrs(v).next(), Some((1, &[1u8, 2, 3, 4][..])));
        assert_eq!(be32(&[1, 2, 3, 4]), Some(0x0102_0304));
        for cut in 0..m.buf.len() {
            let _ = attrs(&m.buf[..cut]).count();
        }
        assert_eq!(attrs(&[0, 0, 1, 0, 9, 9]).count(), 0);
        let mut big = MsgBuf::default();
        let n = big.nest(1);
        big.attr(1, &[0; 65000]);
        big.attr(1, &[0; 1000]);
        assert!(big.nest_end(n).is_err());
    }
}
