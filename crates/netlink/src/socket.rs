//! The request/reply engine: one `NETLINK_ROUTE` socket, sequence numbers,
//! ACKs, multi-part dumps with `NLM_F_DUMP_INTR` retries, extended ACK text.
//!
//! Requests are built with `netlink-packet-route` types and serialised into a
//! reused send buffer; replies are read into a reused 64 KiB receive buffer
//! and handed, message by message, as raw `(type, payload)` slices to the
//! caller's parser. Parsing only the attributes we need (instead of the
//! library's full decode of every attribute, statistics included) keeps a
//! link dump cheap and makes us immune to a new kernel attribute the library
//! cannot decode yet.

use std::io;
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP,
    NLMSG_OVERRUN, NetlinkMessage, NlasIterator,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::NetlinkError;

/// Size of the reused receive buffer. The kernel sizes dump datagrams to at
/// most 32 KiB; single replies with `RTEXT_FILTER_SKIP_STATS` are far smaller.
const RECV_BUF_SIZE: usize = 64 * 1024;
/// How many times a dump is restarted after `NLM_F_DUMP_INTR` (plugins#1121).
pub(crate) const DUMP_ATTEMPTS: u32 = 5;

const NLMSG_HDR_LEN: usize = 16;
/// `NLM_F_CAPPED`: the ACK carries only the header of our request.
const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS`: extended ACK attributes follow.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG`: the human-readable error text.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Callback receiving each data message of a reply as `(type, payload)`;
/// an `Err` is a decoding failure, reported once the reply is drained.
pub(crate) type OnMsg<'a> = dyn FnMut(u16, &[u8]) -> Result<(), String> + 'a;

/// A synchronous rtnetlink handle: one socket bound to the network namespace
/// it was created in, plus reused buffers.
///
/// The socket stays attached to its namespace for its whole life, whatever
/// thread later uses it: create it with [`Netlink::in_netns`] to work on
/// another namespace without ever switching the calling thread.
pub struct Netlink {
    sock: Socket,
    port: u32,
    seq: u32,
    dump_retries: u64,
    send_buf: Vec<u8>,
    recv_buf: Vec<u8>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink")
            .field("fd", &self.sock.as_raw_fd())
            .field("port", &self.port)
            .field("seq", &self.seq)
            .finish()
    }
}

impl Netlink {
    /// Opens an rtnetlink socket in the calling thread's network namespace.
    ///
    /// Enables `NETLINK_EXT_ACK` (kernel error text in errors),
    /// `NETLINK_CAP_ACK` (ACKs do not echo our request back) and
    /// `NETLINK_GET_STRICT_CHK` (kernel-side filtering of dumps); a kernel
    /// that lacks one of these options is tolerated, as results are also
    /// filtered here.
    pub fn new() -> Result<Self, NetlinkError> {
        let mut sock = Socket::new(NETLINK_ROUTE)
            .map_err(|e| NetlinkError::io("opening a NETLINK_ROUTE socket", e))?;
        let addr = sock
            .bind_auto()
            .map_err(|e| NetlinkError::io("binding the netlink socket", e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| NetlinkError::io("connecting the netlink socket to the kernel", e))?;
        // Optional features: older kernels answer ENOPROTOOPT; we cope without.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_netlink_get_strict_chk(true);
        Ok(Netlink {
            sock,
            port: addr.port_number(),
            seq: 0,
            dump_retries: 0,
            send_buf: Vec::with_capacity(1024),
            recv_buf: Vec::with_capacity(RECV_BUF_SIZE),
        })
    }

    /// Opens an rtnetlink socket inside `ns`: a fresh thread enters the
    /// namespace, creates the socket and exits; the socket keeps working on
    /// `ns` from any thread. The calling thread never changes namespace.
    pub fn in_netns(ns: &rnet_netns::NetNs) -> Result<Self, NetlinkError> {
        ns.run(Netlink::new)?
    }

    /// How many times a dump on this socket was restarted because the kernel
    /// flagged it `NLM_F_DUMP_INTR` (for diagnostics and tests).
    pub fn dump_retries(&self) -> u64 {
        self.dump_retries
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        if self.seq == 0 {
            self.seq = 1;
        }
        self.seq
    }

    /// Serialises `msg` with `flags` into the send buffer; returns the sequence number.
    fn encode(&mut self, msg: RouteNetlinkMessage, flags: u16) -> u32 {
        let seq = self.next_seq();
        let mut nl = NetlinkMessage::from(msg);
        nl.header.flags = flags;
        nl.header.sequence_number = seq;
        nl.finalize();
        let len = nl.buffer_len();
        self.send_buf.clear();
        self.send_buf.resize(len, 0);
        nl.serialize(&mut self.send_buf);
        seq
    }

    /// Gives the already-encoded request a new sequence number (dump retries).
    fn reseq(&mut self) -> u32 {
        let seq = self.next_seq();
        if let Some(field) = self.send_buf.get_mut(8..12) {
            field.copy_from_slice(&seq.to_ne_bytes());
        }
        seq
    }

    fn send_encoded(&self, ctx: &dyn Fn() -> String) -> Result<(), NetlinkError> {
        loop {
            match self.sock.send(&self.send_buf, 0) {
                Ok(n) if n == self.send_buf.len() => return Ok(()),
                Ok(n) => {
                    return Err(NetlinkError::protocol(
                        ctx(),
                        format!("short send: {n} of {} bytes", self.send_buf.len()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NetlinkError::io(format!("sending: {}", ctx()), e)),
            }
        }
    }

    /// Sends a `doit` request with `NLM_F_REQUEST | NLM_F_ACK | extra_flags`
    /// and reads until its ACK. Every data message answering it (e.g. the
    /// `RTM_NEWLINK` reply of a `RTM_GETLINK`, or an `NLM_F_ECHO` copy) is
    /// passed to `on_msg` as `(message type, payload)`.
    pub(crate) fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        extra_flags: u16,
        ctx: &dyn Fn() -> String,
        on_msg: &mut OnMsg<'_>,
    ) -> Result<(), NetlinkError> {
        let seq = self.encode(msg, NLM_F_REQUEST | NLM_F_ACK | extra_flags);
        self.send_encoded(ctx)?;
        self.receive(seq, ctx, on_msg).map(|_| ())
    }

    /// A `doit` request of a message type `netlink-packet-route` does not
    /// model (e.g. `RTM_GETNETCONF`): `payload` is everything after the
    /// netlink header. Replies are handled as in [`Netlink::request`].
    pub(crate) fn request_raw(
        &mut self,
        ty: u16,
        payload: &[u8],
        ctx: &dyn Fn() -> String,
        on_msg: &mut OnMsg<'_>,
    ) -> Result<(), NetlinkError> {
        let seq = self.next_seq();
        let len = NLMSG_HDR_LEN + payload.len();
        let len32 = u32::try_from(len)
            .map_err(|_| NetlinkError::protocol(ctx(), format!("{len}-byte request")))?;
        self.send_buf.clear();
        self.send_buf.extend_from_slice(&len32.to_ne_bytes());
        self.send_buf.extend_from_slice(&ty.to_ne_bytes());
        self.send_buf
            .extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        self.send_buf.extend_from_slice(&seq.to_ne_bytes());
        self.send_buf.extend_from_slice(&0u32.to_ne_bytes());
        self.send_buf.extend_from_slice(payload);
        self.send_encoded(ctx)?;
        self.receive(seq, ctx, on_msg).map(|_| ())
    }

    /// A `doit` request whose only answer is the ACK.
    pub(crate) fn request_ack(
        &mut self,
        msg: RouteNetlinkMessage,
        extra_flags: u16,
        ctx: &dyn Fn() -> String,
    ) -> Result<(), NetlinkError> {
        self.request(msg, extra_flags, ctx, &mut |_, _| Ok(()))
    }

    /// Runs a dump (`NLM_F_REQUEST | NLM_F_DUMP`), feeding every message to
    /// `parse`; `Ok(Some(item))` is collected, `Ok(None)` skipped. When the
    /// kernel flags the dump as interrupted (`NLM_F_DUMP_INTR`) the partial
    /// result is thrown away and the dump restarted, up to [`DUMP_ATTEMPTS`]
    /// times.
    pub(crate) fn dump<T>(
        &mut self,
        msg: RouteNetlinkMessage,
        ctx: &dyn Fn() -> String,
        mut parse: impl FnMut(u16, &[u8]) -> Result<Option<T>, String>,
    ) -> Result<Vec<T>, NetlinkError> {
        let mut seq = self.encode(msg, NLM_F_REQUEST | NLM_F_DUMP);
        let mut out = Vec::new();
        for attempt in 1..=DUMP_ATTEMPTS {
            if attempt > 1 {
                self.dump_retries += 1;
                seq = self.reseq();
                out.clear();
            }
            self.send_encoded(ctx)?;
            let interrupted = self.receive(seq, ctx, &mut |ty, payload| {
                if let Some(item) = parse(ty, payload)? {
                    out.push(item);
                }
                Ok(())
            })?;
            if !interrupted {
                return Ok(out);
            }
        }
        Err(NetlinkError::DumpInterrupted {
            context: ctx(),
            attempts: DUMP_ATTEMPTS,
        })
    }

    /// Reads datagrams until the request `seq` is finished: a `doit` request
    /// (sent with `NLM_F_ACK`) ends with its `NLMSG_ERROR` (code 0 = ACK), a
    /// dump with `NLMSG_DONE` (or an `NLMSG_ERROR` if it could not start).
    /// Returns whether
    /// any message carried `NLM_F_DUMP_INTR`. Messages of other sequence
    /// numbers (left over from an earlier, abandoned request) are skipped.
    /// A parse failure is reported only after the reply has been drained, so
    /// the socket stays usable.
    fn receive(
        &mut self,
        seq: u32,
        ctx: &dyn Fn() -> String,
        on_msg: &mut OnMsg<'_>,
    ) -> Result<bool, NetlinkError> {
        let mut interrupted = false;
        let mut parse_error: Option<String> = None;
        loop {
            self.recv_buf.clear();
            let n = loop {
                match self.sock.recv(&mut self.recv_buf, libc::MSG_TRUNC) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(NetlinkError::io(
                            format!("receiving reply to: {}", ctx()),
                            e,
                        ));
                    }
                }
            };
            if n > self.recv_buf.len() {
                return Err(NetlinkError::protocol(
                    ctx(),
                    format!(
                        "a {n}-byte reply does not fit the {RECV_BUF_SIZE}-byte receive buffer"
                    ),
                ));
            }
            let mut data: &[u8] = &self.recv_buf[..n];
            while data.len() >= NLMSG_HDR_LEN {
                let hdr = Header::parse(data);
                let len = hdr.len as usize;
                if len < NLMSG_HDR_LEN || len > data.len() {
                    return Err(NetlinkError::protocol(
                        ctx(),
                        format!("message length {len} invalid ({} bytes left)", data.len()),
                    ));
                }
                let payload = &data[NLMSG_HDR_LEN..len];
                data = data.get(align4(len)..).unwrap_or(&[]);

                if hdr.seq != seq || (hdr.port != self.port && hdr.port != 0) {
                    continue;
                }
                if hdr.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match hdr.ty {
                    NLMSG_NOOP => {}
                    NLMSG_OVERRUN => {
                        return Err(NetlinkError::protocol(
                            ctx(),
                            "kernel reported NLMSG_OVERRUN",
                        ));
                    }
                    NLMSG_ERROR => {
                        let code = read_i32(payload).ok_or_else(|| {
                            NetlinkError::protocol(ctx(), "NLMSG_ERROR shorter than 4 bytes")
                        })?;
                        if code == 0 {
                            return finish(interrupted, parse_error, ctx);
                        }
                        let ext = extack_error(payload, hdr.flags);
                        return Err(kernel_error(code, ext, ctx));
                    }
                    NLMSG_DONE => {
                        let code = read_i32(payload).unwrap_or(0);
                        if code < 0 {
                            let ext = extack_done(payload, hdr.flags);
                            return Err(kernel_error(code, ext, ctx));
                        }
                        return finish(interrupted, parse_error, ctx);
                    }
                    ty => {
                        if parse_error.is_none() {
                            if let Err(detail) = on_msg(ty, payload) {
                                parse_error = Some(detail);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn finish(
    interrupted: bool,
    parse_error: Option<String>,
    ctx: &dyn Fn() -> String,
) -> Result<bool, NetlinkError> {
    match parse_error {
        Some(detail) => Err(NetlinkError::protocol(ctx(), detail)),
        None => Ok(interrupted),
    }
}

fn kernel_error(code: i32, extack: Option<String>, ctx: &dyn Fn() -> String) -> NetlinkError {
    let errno = code.checked_neg().unwrap_or(i32::MAX);
    let context = match extack {
        Some(msg) if !msg.is_empty() => format!("{} (kernel: {msg})", ctx()),
        _ => ctx(),
    };
    NetlinkError::kernel(errno, context)
}

struct Header {
    len: u32,
    ty: u16,
    flags: u16,
    seq: u32,
    port: u32,
}

impl Header {
    /// `data` must hold at least [`NLMSG_HDR_LEN`] bytes.
    fn parse(data: &[u8]) -> Header {
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

pub(crate) fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

fn read_i32(b: &[u8]) -> Option<i32> {
    b.get(..4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes)
}

/// Extended ACK text of an `NLMSG_ERROR`: after the error code comes our
/// request's header (whole request unless `NLM_F_CAPPED`), then TLVs.
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
    extack_msg(orig.get(skip..)?)
}

/// Extended ACK text of an `NLMSG_DONE`: the TLVs follow the error code.
fn extack_done(payload: &[u8], flags: u16) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    extack_msg(payload.get(4..)?)
}

fn extack_msg(tlvs: &[u8]) -> Option<String> {
    for nla in NlasIterator::new(tlvs) {
        let nla = nla.ok()?;
        if nla.kind() == NLMSGERR_ATTR_MSG {
            let v = nla.value();
            let v = v.strip_suffix(&[0]).unwrap_or(v);
            return Some(String::from_utf8_lossy(v).into_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn extack_capped() {
        let mut payload = (-17i32).to_ne_bytes().to_vec();
        // capped original header: 16 bytes, length field says 100
        let mut hdr = vec![0u8; 16];
        hdr[..4].copy_from_slice(&100u32.to_ne_bytes());
        payload.extend_from_slice(&hdr);
        payload.extend(nla(NLMSGERR_ATTR_MSG, b"File exists\0"));
        let msg = extack_error(&payload, NLM_F_ACK_TLVS | NLM_F_CAPPED);
        assert_eq!(msg.as_deref(), Some("File exists"));
        assert_eq!(extack_error(&payload, 0), None);
    }

    #[test]
    fn extack_uncapped_and_garbage() {
        let mut payload = (-22i32).to_ne_bytes().to_vec();
        let mut orig = vec![0u8; 20];
        orig[..4].copy_from_slice(&20u32.to_ne_bytes());
        payload.extend_from_slice(&orig);
        payload.extend(nla(2, &7u32.to_ne_bytes()));
        payload.extend(nla(NLMSGERR_ATTR_MSG, b"bad attr"));
        assert_eq!(
            extack_error(&payload, NLM_F_ACK_TLVS).as_deref(),
            Some("bad attr")
        );
        // Truncated / garbage input never panics.
        for cut in 0..payload.len() {
            let _ = extack_error(&payload[..cut], NLM_F_ACK_TLVS);
            let _ = extack_done(&payload[..cut], NLM_F_ACK_TLVS);
        }
        let _ = extack_error(&[0xff; 64], NLM_F_ACK_TLVS);
    }

    #[test]
    fn kernel_error_context() {
        let e = kernel_error(-17, Some("already there".into()), &|| "creating x".into());
        assert!(e.is_exists());
        assert!(e.to_string().contains("creating x (kernel: already there)"));
        let e = kernel_error(i32::MIN, None, &|| "x".into());
        assert_eq!(e.errno(), Some(i32::MAX));
    }
}
