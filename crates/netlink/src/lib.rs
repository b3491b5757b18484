//! A small, typed, **synchronous** rtnetlink layer for rnet.
//!
//! # Why synchronous
//!
//! CNI plugins are short-lived processes; an ADD has a budget of about 2 ms.
//! An async runtime costs start-up time and binary size for nothing here:
//! every request is a `sendmsg` followed by a few `recvmsg` on a socket that
//! the kernel answers at once. netavark measured the same move (async
//! `rtnetlink` → sync `netlink-packet-route`) as ~10 ms faster and >1 MB
//! smaller. So: one [`Netlink`] per process (per namespace), reused send and
//! receive buffers, no threads, no tokio.
//!
//! # Protocol discipline
//!
//! * Every request carries `NLM_F_ACK` and a fresh sequence number; the reply
//!   is read until *its* ACK/error, so a failure is never mistaken for the
//!   success of the next request. Replies with a foreign sequence number are
//!   skipped.
//! * Dumps are read to `NLMSG_DONE`; if the kernel marks one `NLM_F_DUMP_INTR`
//!   (the table changed mid-dump, plugins#1121) it is redone, up to
//!   5 times, then [`NetlinkError::DumpInterrupted`].
//! * `NETLINK_EXT_ACK` is on: the kernel's own error text (e.g. "Invalid
//!   prefix for given prefix length") lands in the error's context.
//!   `NETLINK_GET_STRICT_CHK` is on so dumps can be filtered by the kernel.
//! * errno stays typed: [`NetlinkError::Kernel`] keeps it, with
//!   [`is_exists`](NetlinkError::is_exists), [`is_not_found`](NetlinkError::is_not_found),
//!   [`is_busy`](NetlinkError::is_busy). `EEXIST`/`ENODEV` are decisions, not strings.
//!
//! Requests are built from `netlink-packet-route` types. Replies are decoded
//! here, reading only the attributes rnet uses (cheaper than decoding every
//! statistic, and immune to attributes newer than the library).
//!
//! # Namespaces
//!
//! A netlink socket belongs to the namespace it was created in, forever.
//! [`Netlink::in_netns`] creates the socket on a throwaway thread inside the
//! target namespace (through [`rnet_netns::NetNs::run`]) and returns it; all
//! further work happens from the caller's thread. No thread ever switches
//! back. [`Netlink::create_veth`] places the peer straight into the container
//! namespace in the creating request, so nothing is ever created in the host
//! and then moved.
//!
//! Sysctls are files: [`sysctl_set`]/[`sysctl_get`] act on the namespace of
//! the *calling thread*, so call them inside `NetNs::run` for a container.
//!
//! # Layout
//!
//! * `socket` – the request/ACK/dump engine and [`Netlink`] itself.
//! * `link` – links, bridges, veth pairs, bridge ports and VLANs.
//! * `addr` – addresses ([`Family`], [`Scope`], [`Address`]).
//! * `route` – routes ([`Route`], [`RouteSpec`]).
//! * `conf` – per-interface IP settings through netlink ([`IpConf`] in every
//!   [`Link`], [`Netlink::link_set_ip_conf`], [`Netlink::forwarding_all`]):
//!   preferred to `/proc/sys`, whose lookups cost more with every namespace.
//! * `sysctl`, `mac` – `/proc/sys/net` and MAC helpers.

mod addr;
mod conf;
mod error;
mod link;
mod mac;
mod nla;
mod route;
mod socket;
mod sysctl;

#[cfg(test)]
mod tests;

pub use addr::{
    Address, Family, IFA_F_DADFAILED, IFA_F_NODAD, IFA_F_PERMANENT, IFA_F_TENTATIVE, Scope,
};
pub use conf::{IpConf, Ipv4Conf, Ipv6Conf};
pub use error::NetlinkError;
pub use link::{
    BridgeOpts, BridgePort, BridgePortOpts, BridgeVlan, IFF_ALLMULTI, IFF_LOOPBACK, IFF_LOWER_UP,
    IFF_PROMISC, IFF_RUNNING, IFF_UP, IFNAME_MAX, Link, VethSpec, validate_ifname,
};
pub use mac::{ParseMacError, format_mac, parse_mac, random_mac};
pub use route::{
    RT_TABLE_LOCAL, RT_TABLE_MAIN, RTPROT_BOOT, RTPROT_KERNEL, RTPROT_STATIC, Route, RouteSpec,
    RouteType,
};
pub use socket::Netlink;
pub use sysctl::{sysctl_get, sysctl_path, sysctl_set};

/// Re-exported so callers need not depend on `ipnet` separately.
pub use ipnet::IpNet;
