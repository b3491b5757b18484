//! Links: lookup, dump, attributes, bridges, veth pairs, bridge ports, VLANs.

use std::os::fd::AsRawFd;

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    link::{
        AfSpecBridge, BridgeFlag, BridgeVlanInfo, BridgeVlanInfoFlags, InfoBridge, InfoData,
        InfoKind, InfoVeth, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
        LinkProtoInfoBridge,
    },
};

use crate::conf::{IpConf, no_ipv6_ll_attr, parse_af_spec};
use crate::nla::{attrs, i32_of, mac_of, str_of, u8_of, u16_of, u32_of};
use crate::{Netlink, NetlinkError, format_mac};

const RTM_NEWLINK: u16 = 16;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_PROTINFO: u16 = 12;
const IFLA_TXQLEN: u16 = 13;
const IFLA_NUM_TX_QUEUES: u16 = 31;
const IFLA_NUM_RX_QUEUES: u16 = 32;
const IFLA_LINKINFO: u16 = 18;
const IFLA_IFALIAS: u16 = 20;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_BR_MCAST_SNOOPING: u16 = 23;

const IFLA_BRPORT_STATE: u16 = 1;
const IFLA_BRPORT_MODE: u16 = 4;
const IFLA_BRPORT_LEARNING: u16 = 8;
const IFLA_BRPORT_ISOLATED: u16 = 33;

const IFLA_BRIDGE_VLAN_INFO: u16 = 2;
const BRIDGE_VLAN_INFO_PVID: u16 = 1 << 1;
const BRIDGE_VLAN_INFO_UNTAGGED: u16 = 1 << 2;
const BRIDGE_VLAN_INFO_RANGE_BEGIN: u16 = 1 << 3;
const BRIDGE_VLAN_INFO_RANGE_END: u16 = 1 << 4;

/// `IFF_UP`.
pub const IFF_UP: u32 = 1 << 0;
/// `IFF_LOOPBACK`.
pub const IFF_LOOPBACK: u32 = 1 << 3;
/// `IFF_RUNNING`.
pub const IFF_RUNNING: u32 = 1 << 6;
/// `IFF_PROMISC`.
pub const IFF_PROMISC: u32 = 1 << 8;
/// `IFF_ALLMULTI`.
pub const IFF_ALLMULTI: u32 = 1 << 9;
/// `IFF_LOWER_UP`.
pub const IFF_LOWER_UP: u32 = 1 << 16;

/// Longest interface name the kernel accepts (`IFNAMSIZ - 1`).
pub const IFNAME_MAX: usize = 15;

/// One network interface as seen from the socket's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index (unique within its namespace only).
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address, when it is a 6-byte Ethernet address.
    pub mac: Option<[u8; 6]>,
    /// MTU.
    pub mtu: u32,
    /// `IFF_UP`: administratively up.
    pub up: bool,
    /// `IFF_RUNNING`: operationally up.
    pub running: bool,
    /// `IFLA_MASTER`: index of the bridge (or bond, VRF) this link is enslaved to.
    pub master: Option<u32>,
    /// `IFLA_INFO_KIND`: `"bridge"`, `"veth"`, `"dummy"`, ...; `None` for physical/loopback.
    pub kind: Option<String>,
    /// `IFLA_LINK_NETNSID`: the peer/parent lives in another namespace with this id.
    pub link_netnsid: Option<i32>,
    /// `IFLA_LINK`: index of the peer (veth) or parent device, in the namespace
    /// given by `link_netnsid` if set.
    pub peer_index: Option<u32>,
    /// All `IFF_*` flags.
    pub flags: u32,
    /// `IFLA_IFALIAS`, if set.
    pub alias: Option<String>,
    /// `IFLA_TXQLEN`.
    pub txqlen: Option<u32>,
    /// How many transmit and receive queues the device was allocated with
    /// (`IFLA_NUM_TX_QUEUES`, `IFLA_NUM_RX_QUEUES`).
    pub queues: (Option<u32>, Option<u32>),
    /// IPv4 and IPv6 per-interface settings (`IFLA_AF_SPEC`), the netlink
    /// view of `net.ipv4.conf.<if>` and `net.ipv6.conf.<if>`.
    pub ip: IpConf,
    /// A bridge's IGMP/MLD snooping (`IFLA_BR_MCAST_SNOOPING`); `None` for
    /// other kinds.
    pub mcast_snooping: Option<bool>,
}

impl Link {
    /// `IFF_PROMISC` set.
    pub fn promisc(&self) -> bool {
        self.flags & IFF_PROMISC != 0
    }

    /// `IFF_ALLMULTI` set.
    pub fn allmulti(&self) -> bool {
        self.flags & IFF_ALLMULTI != 0
    }
}

/// Options for [`Netlink::create_bridge`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeOpts {
    /// MTU of the bridge.
    pub mtu: Option<u32>,
    /// Fixed MAC (otherwise the kernel picks one and follows its ports').
    pub mac: Option<[u8; 6]>,
    /// `IFLA_BR_VLAN_FILTERING`.
    pub vlan_filtering: Option<bool>,
    /// `IFLA_BR_VLAN_DEFAULT_PVID` (0 disables the default PVID).
    pub vlan_default_pvid: Option<u16>,
    /// `IFLA_BR_MCAST_SNOOPING`: IGMP/MLD snooping (the kernel's default is on).
    pub mcast_snooping: Option<bool>,
    /// Bring the bridge up in the same request.
    pub up: bool,
}

/// Everything [`Netlink::create_veth`] sets in its single request.
#[derive(Debug, Clone, Copy, Default)]
pub struct VethSpec<'a> {
    /// Host-side name (in the socket's namespace).
    pub name: &'a str,
    /// Peer name, final (e.g. `eth0`): names are per namespace, no temporary name needed.
    pub peer_name: &'a str,
    /// Namespace the peer is created in; `None` = the socket's namespace.
    pub peer_ns: Option<&'a rnet_netns::NetNs>,
    /// MTU for both ends.
    pub mtu: Option<u32>,
    /// Host-side MAC.
    pub mac: Option<[u8; 6]>,
    /// Peer MAC.
    pub peer_mac: Option<[u8; 6]>,
    /// Enslave the host side to this bridge index.
    pub master: Option<u32>,
    /// Bring the host side up. (The peer cannot be brought up in the same
    /// request: the kernel configures it before the pair is linked and
    /// answers `ENOTCONN`; set it up through a socket in its namespace.)
    pub up: bool,
    /// `IFLA_IFALIAS` on the host side (e.g. `"containerID/eth0"`), so GC can
    /// find its own veths in one dump. The kernel ignores the alias on
    /// creation, so this costs one extra request.
    pub alias: Option<&'a str>,
    /// No IPv6 address generation on the host side (no link-local address,
    /// hence no DAD, router solicitation or MLD report from it). Set in the
    /// alias request (or one of its own): the kernel refuses `IFLA_AF_SPEC`
    /// on creation.
    pub host_no_ipv6_ll: bool,
}

/// Bridge-port options for [`Netlink::bridge_port_set`]; `None` leaves a setting alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgePortOpts {
    /// `IFLA_BRPORT_MODE`: hairpin (reflect frames back out of the port they came in).
    pub hairpin: Option<bool>,
    /// `IFLA_BRPORT_ISOLATED`: isolated ports only talk to non-isolated ones (CNI `portIsolation`).
    pub isolated: Option<bool>,
    /// `IFLA_BRPORT_LEARNING`: learn source MACs.
    pub learning: Option<bool>,
}

/// A bridge port's settings as read back from an `AF_BRIDGE` dump (`IFLA_PROTINFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgePort {
    /// Port interface index.
    pub index: u32,
    /// The bridge it belongs to.
    pub master: Option<u32>,
    /// `IFLA_BRPORT_STATE` (0 disabled, 1 listening, 2 learning, 3 forwarding, 4 blocking).
    pub state: Option<u8>,
    /// Hairpin mode.
    pub hairpin: Option<bool>,
    /// Port isolation.
    pub isolated: Option<bool>,
    /// MAC learning.
    pub learning: Option<bool>,
}

/// One VLAN on a bridge port (or on the bridge itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BridgeVlan {
    /// VLAN id, 1..=4094.
    pub vid: u16,
    /// Frames arriving untagged get this VLAN.
    pub pvid: bool,
    /// Frames leave untagged.
    pub untagged: bool,
}

/// Checks an interface name as the kernel's `dev_valid_name` does.
pub fn validate_ifname(name: &str) -> Result<(), NetlinkError> {
    let why = if name.is_empty() {
        "is empty"
    } else if name.len() > IFNAME_MAX {
        "is longer than 15 bytes"
    } else if name == "." || name == ".." {
        "is '.' or '..'"
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        "contains '/', ':', NUL or whitespace"
    } else {
        return Ok(());
    };
    Err(NetlinkError::InvalidArgument(format!(
        "interface name {name:?} {why}"
    )))
}

fn validate_vid(vid: u16) -> Result<(), NetlinkError> {
    if (1..=4094).contains(&vid) {
        Ok(())
    } else {
        Err(NetlinkError::InvalidArgument(format!(
            "VLAN id {vid} is outside 1..=4094"
        )))
    }
}

pub(crate) fn link_msg(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

fn bridge_msg(index: u32) -> LinkMessage {
    let mut m = link_msg(index);
    m.header.interface_family = AddressFamily::Bridge;
    m
}

/// Decodes an `RTM_NEWLINK` payload into a [`Link`].
pub(crate) fn parse_link(payload: &[u8]) -> Result<Link, String> {
    if payload.len() < 16 {
        return Err(format!("link message of {} bytes", payload.len()));
    }
    let index = u32_of(payload.get(4..).unwrap_or(&[])).unwrap_or(0);
    let flags = u32_of(payload.get(8..).unwrap_or(&[])).unwrap_or(0);
    let mut link = Link {
        index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: flags & IFF_UP != 0,
        running: flags & IFF_RUNNING != 0,
        master: None,
        kind: None,
        link_netnsid: None,
        peer_index: None,
        flags,
        alias: None,
        txqlen: None,
        queues: (None, None),
        ip: IpConf::default(),
        mcast_snooping: None,
    };
    let mut data = None;
    for a in attrs(payload.get(16..).unwrap_or(&[])) {
        let (kind, v) = a?;
        match kind {
            IFLA_IFNAME => link.name = str_of(v),
            IFLA_ADDRESS => link.mac = mac_of(v),
            IFLA_MTU => link.mtu = u32_of(v).unwrap_or(0),
            IFLA_MASTER => link.master = u32_of(v).filter(|&m| m != 0),
            IFLA_LINK => link.peer_index = u32_of(v).filter(|&l| l != 0),
            IFLA_LINK_NETNSID => link.link_netnsid = i32_of(v),
            IFLA_IFALIAS => link.alias = Some(str_of(v)).filter(|s| !s.is_empty()),
            IFLA_TXQLEN => link.txqlen = u32_of(v),
            IFLA_NUM_TX_QUEUES => link.queues.0 = u32_of(v),
            IFLA_NUM_RX_QUEUES => link.queues.1 = u32_of(v),
            IFLA_AF_SPEC => link.ip = parse_af_spec(v),
            IFLA_LINKINFO => {
                for a in attrs(v) {
                    let (k, v) = a?;
                    if k == IFLA_INFO_KIND {
                        link.kind = Some(str_of(v));
                    } else if k == IFLA_INFO_DATA {
                        data = Some(v);
                    }
                }
            }
            _ => {}
        }
    }
    if let (Some("bridge"), Some(d)) = (link.kind.as_deref(), data) {
        for a in attrs(d) {
            let (k, v) = a?;
            if k == IFLA_BR_MCAST_SNOOPING {
                link.mcast_snooping = u8_of(v).map(|b| b != 0);
            }
        }
    }
    Ok(link)
}

/// Reads just `(index, name)` of an `RTM_NEWLINK` payload.
fn parse_index_name(payload: &[u8]) -> Option<(u32, String)> {
    let index = u32_of(payload.get(4..)?)?;
    for a in attrs(payload.get(16..)?) {
        let (k, v) = a.ok()?;
        if k == IFLA_IFNAME {
            return Some((index, str_of(v)));
        }
    }
    None
}

impl Netlink {
    fn get_link(
        &mut self,
        msg: LinkMessage,
        ctx: &dyn Fn() -> String,
    ) -> Result<Option<Link>, NetlinkError> {
        let mut found = None;
        let r = self.request(
            RouteNetlinkMessage::GetLink(msg),
            0,
            ctx,
            &mut |ty, payload| {
                if ty == RTM_NEWLINK && found.is_none() {
                    found = Some(parse_link(payload)?);
                }
                Ok(())
            },
        );
        match r {
            Ok(()) => Ok(found),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Looks a link up by name (one `RTM_GETLINK` with `IFLA_IFNAME`, no dump).
    /// `Ok(None)` if there is no such link.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NetlinkError> {
        validate_ifname(name)?;
        let mut m = link_msg(0);
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        self.get_link(m, &|| format!("looking up link {name}"))
    }

    /// Looks a link up by index. `Ok(None)` if there is no such link.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>, NetlinkError> {
        if index == 0 {
            return Err(NetlinkError::InvalidArgument(
                "link index 0 names no link".into(),
            ));
        }
        let mut m = link_msg(index);
        m.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        self.get_link(m, &|| format!("looking up link index {index}"))
    }

    /// Dumps all links of the socket's namespace.
    pub fn link_list(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let mut m = link_msg(0);
        m.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        self.dump(
            RouteNetlinkMessage::GetLink(m),
            &|| "links".to_string(),
            |ty, payload| {
                if ty == RTM_NEWLINK {
                    parse_link(payload).map(Some)
                } else {
                    Ok(None)
                }
            },
        )
    }

    pub(crate) fn set_link(
        &mut self,
        msg: LinkMessage,
        ctx: &dyn Fn() -> String,
    ) -> Result<(), NetlinkError> {
        self.request_ack(RouteNetlinkMessage::SetLink(msg), 0, ctx)
    }

    fn set_flag(&mut self, index: u32, flag: LinkFlags, on: bool) -> Result<(), NetlinkError> {
        let mut m = link_msg(index);
        m.header.change_mask = flag;
        if on {
            m.header.flags = flag;
        }
        self.set_link(m, &|| {
            format!(
                "setting flag {flag:?} {} on link index {index}",
                if on { "on" } else { "off" }
            )
        })
    }

    /// Sets `IFF_UP`.
    pub fn link_set_up(&mut self, index: u32) -> Result<(), NetlinkError> {
        self.set_flag(index, LinkFlags::Up, true)
    }

    /// Clears `IFF_UP`.
    pub fn link_set_down(&mut self, index: u32) -> Result<(), NetlinkError> {
        self.set_flag(index, LinkFlags::Up, false)
    }

    /// Promiscuous mode on/off (`IFF_PROMISC`).
    pub fn link_set_promisc(&mut self, index: u32, on: bool) -> Result<(), NetlinkError> {
        self.set_flag(index, LinkFlags::Promisc, on)
    }

    /// All-multicast mode on/off (`IFF_ALLMULTI`).
    pub fn link_set_allmulti(&mut self, index: u32, on: bool) -> Result<(), NetlinkError> {
        self.set_flag(index, LinkFlags::Allmulti, on)
    }

    /// Renames a link (the kernel refuses with `EBUSY` while it is up).
    pub fn link_set_name(&mut self, index: u32, name: &str) -> Result<(), NetlinkError> {
        validate_ifname(name)?;
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.set_link(m, &|| format!("renaming link index {index} to {name}"))
    }

    /// Takes link `index` down and renames it to `name` (two requests: the
    /// kernel renames only links that are down). Cheap, unlike deleting a
    /// link, which waits for RCU grace periods.
    pub fn link_retire(&mut self, index: u32, name: &str) -> Result<(), NetlinkError> {
        validate_ifname(name)?;
        if index == 0 {
            return Err(NetlinkError::InvalidArgument(
                "link index 0 names no link".into(),
            ));
        }
        self.link_set_down(index)?;
        self.link_set_name(index, name)
    }

    /// Sets the MTU.
    pub fn link_set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::Mtu(mtu));
        self.set_link(m, &|| format!("setting MTU {mtu} on link index {index}"))
    }

    /// Sets the hardware address.
    pub fn link_set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.set_link(m, &|| {
            format!("setting MAC {} on link index {index}", format_mac(&mac))
        })
    }

    /// Enslaves the link to `master` (a bridge index), or releases it with `None`.
    pub fn link_set_master(&mut self, index: u32, master: Option<u32>) -> Result<(), NetlinkError> {
        let mut m = link_msg(index);
        m.attributes
            .push(LinkAttribute::Controller(master.unwrap_or(0)));
        self.set_link(m, &|| match master {
            Some(b) => format!("attaching link index {index} to master index {b}"),
            None => format!("detaching link index {index} from its master"),
        })
    }

    /// Sets the transmit queue length.
    pub fn link_set_txqlen(&mut self, index: u32, txqlen: u32) -> Result<(), NetlinkError> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::TxQueueLen(txqlen));
        self.set_link(m, &|| {
            format!("setting txqueuelen {txqlen} on link index {index}")
        })
    }

    /// Sets (or with `""` clears) `IFLA_IFALIAS`.
    pub fn link_set_alias(&mut self, index: u32, alias: &str) -> Result<(), NetlinkError> {
        if alias.len() > 255 || alias.contains('\0') {
            return Err(NetlinkError::InvalidArgument(format!(
                "link alias {alias:?} is longer than 255 bytes or contains NUL"
            )));
        }
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
        self.set_link(m, &|| {
            format!("setting alias {alias:?} on link index {index}")
        })
    }

    /// Deletes a link. A missing link is an error for which
    /// [`NetlinkError::is_not_found`] holds (`ENODEV`). Deleting one end of a
    /// veth pair deletes both.
    pub fn link_del(&mut self, index: u32) -> Result<(), NetlinkError> {
        if index == 0 {
            return Err(NetlinkError::InvalidArgument(
                "link index 0 names no link".into(),
            ));
        }
        self.request_ack(RouteNetlinkMessage::DelLink(link_msg(index)), 0, &|| {
            format!("deleting link index {index}")
        })
    }

    /// Deletes a link by name; `Ok(false)` if it did not exist.
    pub fn link_del_by_name(&mut self, name: &str) -> Result<bool, NetlinkError> {
        validate_ifname(name)?;
        let mut m = link_msg(0);
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request_ack(RouteNetlinkMessage::DelLink(m), 0, &|| {
            format!("deleting link {name}")
        }) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends an `RTM_NEWLINK` creation request (`NLM_F_CREATE | NLM_F_EXCL`,
    /// plus `NLM_F_ECHO` so kernels that honour it hand the new link back)
    /// and returns the index of link `name`, looking it up if the echo did not
    /// carry it.
    fn new_link(
        &mut self,
        msg: LinkMessage,
        name: &str,
        trust_echo: bool,
        ctx: &dyn Fn() -> String,
    ) -> Result<u32, NetlinkError> {
        self.new_link_echo(msg, name, trust_echo, ctx)
            .map(|l| l.index)
    }

    /// Creates a link and returns it as the kernel's echo describes it (or,
    /// when the echo cannot be told apart, as a lookup by name finds it).
    fn new_link_echo(
        &mut self,
        msg: LinkMessage,
        name: &str,
        trust_echo: bool,
        ctx: &dyn Fn() -> String,
    ) -> Result<Link, NetlinkError> {
        let mut found = None;
        self.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO,
            ctx,
            &mut |ty, payload| {
                if trust_echo
                    && ty == RTM_NEWLINK
                    && found.is_none()
                    && parse_index_name(payload).is_some_and(|(_, n)| n == name)
                {
                    found = Some(parse_link(payload)?);
                }
                Ok(())
            },
        )?;
        match found {
            Some(l) => Ok(l),
            None => self.link_by_name(name)?.ok_or_else(|| {
                NetlinkError::protocol(
                    ctx(),
                    format!("the kernel acknowledged the creation but link {name} is not there"),
                )
            }),
        }
    }

    /// Creates a bridge in one request and returns its index. `EEXIST` stays a
    /// typed error ([`NetlinkError::is_exists`]): callers wanting
    /// "ensure" semantics look the name up and check `kind == "bridge"`.
    pub fn create_bridge(&mut self, name: &str, opts: &BridgeOpts) -> Result<u32, NetlinkError> {
        validate_ifname(name)?;
        if let Some(pvid) = opts.vlan_default_pvid {
            if pvid > 4094 {
                return Err(NetlinkError::InvalidArgument(format!(
                    "bridge {name}: default PVID {pvid} is outside 0..=4094"
                )));
            }
        }
        let mut m = link_msg(0);
        if opts.up {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        }
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        if let Some(mtu) = opts.mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = opts.mac {
            m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        let mut info = vec![LinkInfo::Kind(InfoKind::Bridge)];
        let mut data = Vec::new();
        if let Some(f) = opts.vlan_filtering {
            data.push(InfoBridge::VlanFiltering(f));
        }
        if let Some(p) = opts.vlan_default_pvid {
            data.push(InfoBridge::VlanDefaultPvid(p));
        }
        if let Some(m) = opts.mcast_snooping {
            data.push(InfoBridge::MulticastSnooping(m));
        }
        if !data.is_empty() {
            info.push(LinkInfo::Data(InfoData::Bridge(data)));
        }
        m.attributes.push(LinkAttribute::LinkInfo(info));
        self.new_link(m, name, true, &|| format!("creating bridge {name}"))
    }

    /// Creates a veth pair in ONE `RTM_NEWLINK` request: the peer is created
    /// straight inside `peer_ns` (`IFLA_NET_NS_FD` in `VETH_INFO_PEER`) under
    /// its final name with its MAC and MTU; the host side gets its MAC, MTU,
    /// master and `IFF_UP` in the same request. Returns the host-side index.
    ///
    /// `EEXIST` means either name was taken (host side in this namespace, or
    /// the peer name in `peer_ns`). If setting the alias fails afterwards, the
    /// pair is deleted again before the error is returned.
    pub fn create_veth(&mut self, spec: &VethSpec<'_>) -> Result<u32, NetlinkError> {
        self.create_veth_pair(spec).map(|(host, _)| host)
    }

    /// [`Netlink::create_veth`], also returning the peer's index in its own
    /// namespace (from the kernel's echo of the creation, `IFLA_LINK`), so
    /// the peer need not be looked up; `None` if the echo did not carry it.
    pub fn create_veth_pair(
        &mut self,
        spec: &VethSpec<'_>,
    ) -> Result<(u32, Option<u32>), NetlinkError> {
        validate_ifname(spec.name)?;
        validate_ifname(spec.peer_name)?;
        if let Some(a) = spec.alias {
            if a.len() > 255 || a.contains('\0') {
                return Err(NetlinkError::InvalidArgument(format!(
                    "veth {}: alias {a:?} is longer than 255 bytes or contains NUL",
                    spec.name
                )));
            }
        }
        let mut peer = link_msg(0);
        peer.attributes
            .push(LinkAttribute::IfName(spec.peer_name.to_string()));
        if let Some(mac) = spec.peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(mtu) = spec.mtu {
            peer.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(ns) = spec.peer_ns {
            peer.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        }
        // One queue each way, which is what the veth driver enables anyway:
        // without these the kernel allocates and registers a queue (and its
        // sysfs objects) per possible CPU on each end, only to remove all but
        // the first right after (veth_init_queues), which is most of a veth
        // creation on a host with many CPUs.
        peer.attributes.push(LinkAttribute::NumTxQueues(1));
        peer.attributes.push(LinkAttribute::NumRxQueues(1));

        let mut m = link_msg(0);
        if spec.up {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        }
        m.attributes
            .push(LinkAttribute::IfName(spec.name.to_string()));
        if let Some(mtu) = spec.mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = spec.mac {
            m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(master) = spec.master {
            m.attributes.push(LinkAttribute::Controller(master));
        }
        m.attributes.push(LinkAttribute::NumTxQueues(1));
        m.attributes.push(LinkAttribute::NumRxQueues(1));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        let (name, peer_name) = (spec.name, spec.peer_name);
        let where_ = if spec.peer_ns.is_some() {
            " in the target namespace"
        } else {
            ""
        };
        // An echo is matched by name; if both ends share the name, look it up.
        let trust_echo = name != peer_name;
        let link = self.new_link_echo(m, name, trust_echo, &|| {
            format!("creating veth {name} with peer {peer_name}{where_}")
        })?;
        let index = link.index;
        if spec.alias.is_some() || spec.host_no_ipv6_ll {
            let mut m = link_msg(index);
            if let Some(alias) = spec.alias {
                m.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
            }
            if spec.host_no_ipv6_ll {
                m.attributes.push(no_ipv6_ll_attr());
            }
            let ctx = || format!("setting the alias and IPv6 mode of veth {name}");
            let mut r = self.set_link(m.clone(), &ctx);
            if spec.host_no_ipv6_ll
                && r.as_ref()
                    .is_err_and(|e| e.errno() == Some(libc::EAFNOSUPPORT))
            {
                // No IPv6 on this host (ipv6.disable=1): nothing to turn off.
                m.attributes
                    .retain(|a| !matches!(a, LinkAttribute::AfSpecUnspec(_)));
                r = if m.attributes.is_empty() {
                    Ok(())
                } else {
                    self.set_link(m, &ctx)
                };
            }
            if let Err(e) = r {
                let _ = self.link_del(index);
                return Err(e);
            }
        }
        Ok((index, link.peer_index))
    }

    /// Sets bridge-port options with `RTM_SETLINK` / `AF_BRIDGE` /
    /// `IFLA_PROTINFO` (`IFLA_BRPORT_*`). The link must be a bridge port.
    pub fn bridge_port_set(
        &mut self,
        index: u32,
        opts: &BridgePortOpts,
    ) -> Result<(), NetlinkError> {
        let Some(m) = port_msg(index, opts) else {
            return Ok(());
        };
        self.set_link(m, &|| {
            format!("setting bridge port options {opts:?} on link index {index}")
        })
    }

    /// Dumps the `AF_BRIDGE` view (ports and VLAN-filtering bridges) with
    /// the given `RTEXT_FILTER_*` extension mask.
    fn bridge_dump<T>(
        &mut self,
        ext: Vec<LinkExtentMask>,
        what: &str,
        mut parse: impl FnMut(u32, &[u8]) -> Result<Option<T>, String>,
    ) -> Result<Vec<T>, NetlinkError> {
        let mut m = bridge_msg(0);
        if !ext.is_empty() {
            m.attributes.push(LinkAttribute::ExtMask(ext));
        }
        self.dump(
            RouteNetlinkMessage::GetLink(m),
            &|| what.to_string(),
            |ty, payload| {
                if ty != RTM_NEWLINK || payload.len() < 16 {
                    return Ok(None);
                }
                let index = u32_of(payload.get(4..).unwrap_or(&[])).unwrap_or(0);
                parse(index, payload.get(16..).unwrap_or(&[]))
            },
        )
    }

    /// All bridge ports of the namespace, with their `IFLA_PROTINFO` settings.
    pub fn bridge_port_list(&mut self) -> Result<Vec<BridgePort>, NetlinkError> {
        self.bridge_dump(Vec::new(), "bridge ports", |index, attrs_buf| {
            parse_bridge_port(index, attrs_buf)
        })
    }

    /// One bridge port's settings; `Ok(None)` if `index` is not a bridge port.
    pub fn bridge_port_get(&mut self, index: u32) -> Result<Option<BridgePort>, NetlinkError> {
        let ports = self.bridge_dump(Vec::new(), "bridge ports", |i, attrs_buf| {
            if i == index {
                parse_bridge_port(i, attrs_buf)
            } else {
                Ok(None)
            }
        })?;
        Ok(ports.into_iter().next())
    }

    fn bridge_vlan_req(
        &mut self,
        add: bool,
        index: u32,
        infos: Vec<BridgeVlanInfo>,
        is_self: bool,
        what: &dyn Fn() -> String,
    ) -> Result<(), NetlinkError> {
        self.request_ack(vlan_msg(add, index, infos, is_self), 0, what)
    }

    /// Adds VLAN `vid` to bridge port `index` (`is_self = false`, the usual
    /// case) or to the bridge device itself (`is_self = true`, `index` = the
    /// bridge). `pvid`: untagged ingress is classified into `vid`;
    /// `untagged`: egress frames are sent untagged. Needs a VLAN-filtering bridge
    /// for traffic to be affected.
    pub fn bridge_vlan_add(
        &mut self,
        index: u32,
        vid: u16,
        pvid: bool,
        untagged: bool,
        is_self: bool,
    ) -> Result<(), NetlinkError> {
        validate_vid(vid)?;
        let mut flags = BridgeVlanInfoFlags::empty();
        if pvid {
            flags |= BridgeVlanInfoFlags::Pvid;
        }
        if untagged {
            flags |= BridgeVlanInfoFlags::Untagged;
        }
        self.bridge_vlan_req(
            true,
            index,
            vec![BridgeVlanInfo { flags, vid }],
            is_self,
            &|| {
                format!(
                    "adding VLAN {vid}{}{} to {} index {index}",
                    if pvid { " pvid" } else { "" },
                    if untagged { " untagged" } else { "" },
                    if is_self { "bridge" } else { "bridge port" }
                )
            },
        )
    }

    /// Adds the tagged VLAN range `min..=max` to bridge port `index` (a trunk).
    pub fn bridge_vlan_add_range(
        &mut self,
        index: u32,
        min: u16,
        max: u16,
    ) -> Result<(), NetlinkError> {
        validate_vid(min)?;
        validate_vid(max)?;
        if min > max {
            return Err(NetlinkError::InvalidArgument(format!(
                "VLAN range {min}-{max} is empty (min > max)"
            )));
        }
        let infos = if min == max {
            vec![BridgeVlanInfo {
                flags: BridgeVlanInfoFlags::empty(),
                vid: min,
            }]
        } else {
            vec![
                BridgeVlanInfo {
                    flags: BridgeVlanInfoFlags::RangeBegin,
                    vid: min,
                },
                BridgeVlanInfo {
                    flags: BridgeVlanInfoFlags::RangeEnd,
                    vid: max,
                },
            ]
        };
        self.bridge_vlan_req(true, index, infos, false, &|| {
            format!("adding VLANs {min}-{max} to bridge port index {index}")
        })
    }

    /// Removes VLAN `vid` from port `index` (or from the bridge itself with `is_self`).
    pub fn bridge_vlan_del(
        &mut self,
        index: u32,
        vid: u16,
        is_self: bool,
    ) -> Result<(), NetlinkError> {
        validate_vid(vid)?;
        self.bridge_vlan_req(
            false,
            index,
            vec![BridgeVlanInfo {
                flags: BridgeVlanInfoFlags::empty(),
                vid,
            }],
            is_self,
            &|| {
                format!(
                    "removing VLAN {vid} from {} index {index}",
                    if is_self { "bridge" } else { "bridge port" }
                )
            },
        )
    }

    /// VLANs of bridge port (or VLAN-filtering bridge) `index`, sorted by id.
    /// Empty if the link has none or is not part of a bridge.
    pub fn bridge_vlan_list(&mut self, index: u32) -> Result<Vec<BridgeVlan>, NetlinkError> {
        let lists = self.bridge_dump(
            vec![LinkExtentMask::Brvlan],
            "bridge VLANs",
            |i, attrs_buf| {
                if i == index {
                    parse_vlans(attrs_buf).map(Some)
                } else {
                    Ok(None)
                }
            },
        )?;
        let mut vlans: Vec<BridgeVlan> = lists.into_iter().flatten().collect();
        vlans.sort();
        vlans.dedup();
        Ok(vlans)
    }
}

/// `RTM_SETLINK` / `AF_BRIDGE` with `IFLA_PROTINFO | NLA_F_NESTED` holding
/// the requested `IFLA_BRPORT_*` flags (what `bridge link set` sends);
/// `None` if nothing is requested.
fn port_msg(index: u32, opts: &BridgePortOpts) -> Option<LinkMessage> {
    let mut protinfo = Vec::new();
    for (kind, val) in [
        (IFLA_BRPORT_MODE, opts.hairpin),
        (IFLA_BRPORT_ISOLATED, opts.isolated),
        (IFLA_BRPORT_LEARNING, opts.learning),
    ] {
        if let Some(v) = val {
            protinfo.push(LinkProtoInfoBridge::Other(DefaultNla::new(
                kind,
                vec![u8::from(v)],
            )));
        }
    }
    if protinfo.is_empty() {
        return None;
    }
    let mut m = bridge_msg(index);
    m.attributes.push(LinkAttribute::ProtoInfoBridge(protinfo));
    Some(m)
}

/// `RTM_SETLINK` (add) or `RTM_DELLINK` (delete) / `AF_BRIDGE` with
/// `IFLA_AF_SPEC { [IFLA_BRIDGE_FLAGS = SELF], IFLA_BRIDGE_VLAN_INFO... }`
/// (what `bridge vlan add|del` sends).
fn vlan_msg(
    add: bool,
    index: u32,
    infos: Vec<BridgeVlanInfo>,
    is_self: bool,
) -> RouteNetlinkMessage {
    let mut spec = Vec::with_capacity(infos.len() + 1);
    if is_self {
        spec.push(AfSpecBridge::Flags(BridgeFlag::LowerDev));
    }
    spec.extend(infos.into_iter().map(AfSpecBridge::VlanInfo));
    let mut m = bridge_msg(index);
    m.attributes.push(LinkAttribute::AfSpecBridge(spec));
    if add {
        RouteNetlinkMessage::SetLink(m)
    } else {
        RouteNetlinkMessage::DelLink(m)
    }
}

fn parse_bridge_port(index: u32, buf: &[u8]) -> Result<Option<BridgePort>, String> {
    let mut port = BridgePort {
        index,
        master: None,
        state: None,
        hairpin: None,
        isolated: None,
        learning: None,
    };
    let mut is_port = false;
    for a in attrs(buf) {
        let (kind, v) = a?;
        match kind {
            IFLA_MASTER => port.master = u32_of(v).filter(|&m| m != 0 && m != index),
            IFLA_PROTINFO => {
                is_port = true;
                for a in attrs(v) {
                    let (k, v) = a?;
                    let b = u8_of(v);
                    match k {
                        IFLA_BRPORT_STATE => port.state = b,
                        IFLA_BRPORT_MODE => port.hairpin = b.map(|b| b != 0),
                        IFLA_BRPORT_ISOLATED => port.isolated = b.map(|b| b != 0),
                        IFLA_BRPORT_LEARNING => port.learning = b.map(|b| b != 0),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(is_port.then_some(port))
}

fn parse_vlans(buf: &[u8]) -> Result<Vec<BridgeVlan>, String> {
    let mut out = Vec::new();
    let mut range_start: Option<u16> = None;
    for a in attrs(buf) {
        let (kind, v) = a?;
        if kind != IFLA_AF_SPEC {
            continue;
        }
        for a in attrs(v) {
            let (k, v) = a?;
            if k != IFLA_BRIDGE_VLAN_INFO {
                continue;
            }
            let (Some(flags), Some(vid)) = (u16_of(v), v.get(2..).and_then(u16_of)) else {
                return Err(format!("IFLA_BRIDGE_VLAN_INFO of {} bytes", v.len()));
            };
            let pvid = flags & BRIDGE_VLAN_INFO_PVID != 0;
            let untagged = flags & BRIDGE_VLAN_INFO_UNTAGGED != 0;
            if flags & BRIDGE_VLAN_INFO_RANGE_BEGIN != 0 {
                range_start = Some(vid);
                continue;
            }
            let first = if flags & BRIDGE_VLAN_INFO_RANGE_END != 0 {
                range_start.take().unwrap_or(vid)
            } else {
                vid
            };
            for id in first..=vid {
                out.push(BridgeVlan {
                    vid: id,
                    pvid: pvid && id == vid,
                    untagged,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn ifname_validation() {
        for ok in ["eth0", "cni0", "veth1234567890a", "a.b", "br-x_y"] {
            validate_ifname(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "veth1234567890ab",
            "a\0",
        ] {
            assert!(matches!(
                validate_ifname(bad),
                Err(NetlinkError::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn vid_validation() {
        assert!(validate_vid(0).is_err());
        assert!(validate_vid(4095).is_err());
        validate_vid(1).unwrap();
        validate_vid(4094).unwrap();
    }

    #[test]
    fn parse_link_garbage_never_panics() {
        assert!(parse_link(&[0; 4]).is_err());
        let mut buf = vec![0u8; 16];
        buf.extend_from_slice(&[0xff, 0xff, 3, 0, 1, 2]);
        let _ = parse_link(&buf);
        for n in 0..buf.len() {
            let _ = parse_link(&buf[..n]);
            let _ = parse_vlans(&buf[..n]);
            let _ = parse_bridge_port(1, &buf[..n]);
        }
    }

    /// Serialises a request as `Netlink` does (flags REQUEST|ACK, seq 0).
    fn wire(msg: RouteNetlinkMessage) -> Vec<u8> {
        let mut nl = netlink_packet_core::NetlinkMessage::from(msg);
        nl.header.flags = netlink_packet_core::NLM_F_REQUEST | netlink_packet_core::NLM_F_ACK;
        nl.finalize();
        let mut buf = vec![0; nl.buffer_len()];
        nl.serialize(&mut buf);
        buf
    }

    fn hdr(len: u16, ty: u16, index: u8) -> Vec<u8> {
        let mut v = vec![len as u8, (len >> 8) as u8, 0, 0, ty as u8, 0, 5, 0];
        v.extend_from_slice(&[0; 8]); // seq, pid
        v.extend_from_slice(&[libc::AF_BRIDGE as u8, 0, 0, 0, index, 0, 0, 0]);
        v.extend_from_slice(&[0; 8]); // ifi_flags, ifi_change
        v
    }

    // Golden bytes: the layout `strace -xx` shows for iproute2's
    // `bridge vlan add dev vp vid 100 pvid untagged`, `... vid 200-203`,
    // `bridge vlan add dev br0 vid 100 self` and
    // `bridge link set dev vp hairpin on isolated on learning off`.
    #[test]
    fn golden_vlan_add_pvid_untagged() {
        let got = wire(vlan_msg(
            true,
            4,
            vec![BridgeVlanInfo {
                flags: BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged,
                vid: 100,
            }],
            false,
        ));
        let mut want = hdr(44, 19, 4);
        want.extend_from_slice(&[12, 0, 26, 0, 8, 0, 2, 0, 6, 0, 100, 0]);
        assert_eq!(got, want);
    }

    #[test]
    fn golden_vlan_range_and_self_and_del() {
        let got = wire(vlan_msg(
            true,
            4,
            vec![
                BridgeVlanInfo {
                    flags: BridgeVlanInfoFlags::RangeBegin,
                    vid: 200,
                },
                BridgeVlanInfo {
                    flags: BridgeVlanInfoFlags::RangeEnd,
                    vid: 203,
                },
            ],
            false,
        ));
        let mut want = hdr(52, 19, 4);
        want.extend_from_slice(&[
            20, 0, 26, 0, 8, 0, 2, 0, 8, 0, 200, 0, 8, 0, 2, 0, 16, 0, 203, 0,
        ]);
        assert_eq!(got, want);

        let info = vec![BridgeVlanInfo {
            flags: BridgeVlanInfoFlags::empty(),
            vid: 100,
        }];
        let got = wire(vlan_msg(true, 3, info.clone(), true));
        let mut want = hdr(52, 19, 3);
        want.extend_from_slice(&[
            20, 0, 26, 0, 6, 0, 0, 0, 2, 0, 0, 0, 8, 0, 2, 0, 0, 0, 100, 0,
        ]);
        assert_eq!(got, want);

        let got = wire(vlan_msg(false, 3, info, true));
        want[4] = 17; // RTM_DELLINK
        assert_eq!(got, want);
    }

    #[test]
    fn golden_bridge_port_protinfo() {
        let opts = BridgePortOpts {
            hairpin: Some(true),
            isolated: Some(true),
            learning: Some(false),
        };
        let got = wire(RouteNetlinkMessage::SetLink(port_msg(4, &opts).unwrap()));
        let mut want = hdr(60, 19, 4);
        // IFLA_PROTINFO | NLA_F_NESTED (0x800c), then three u8 attributes padded to 8.
        want.extend_from_slice(&[28, 0, 12, 0x80]);
        want.extend_from_slice(&[5, 0, 4, 0, 1, 0, 0, 0]);
        want.extend_from_slice(&[5, 0, 33, 0, 1, 0, 0, 0]);
        want.extend_from_slice(&[5, 0, 8, 0, 0, 0, 0, 0]);
        assert_eq!(got, want);
        assert!(port_msg(4, &BridgePortOpts::default()).is_none());
    }

    #[test]
    fn vlan_ranges_expand() {
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
        fn info(flags: u16, vid: u16) -> Vec<u8> {
            let mut v = flags.to_ne_bytes().to_vec();
            v.extend_from_slice(&vid.to_ne_bytes());
            nla(IFLA_BRIDGE_VLAN_INFO, &v)
        }
        let mut spec = info(BRIDGE_VLAN_INFO_PVID | BRIDGE_VLAN_INFO_UNTAGGED, 1);
        spec.extend(info(BRIDGE_VLAN_INFO_RANGE_BEGIN, 10));
        spec.extend(info(BRIDGE_VLAN_INFO_RANGE_END, 12));
        let buf = nla(IFLA_AF_SPEC, &spec);
        let v = parse_vlans(&buf).unwrap();
        let ids: Vec<u16> = v.iter().map(|v| v.vid).collect();
        assert_eq!(ids, vec![1, 10, 11, 12]);
        assert!(v[0].pvid && v[0].untagged);
        assert!(!v[1].pvid && !v[1].untagged);
    }
}
