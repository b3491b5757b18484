//! nftables for the bridge plugin (placeholder until rnet-nft lands).

use crate::state::AttachmentState;
use ipnet::IpNet;
use rnet_cni::CniError;

/// What one attachment asks of the firewall.
#[derive(Debug, Clone)]
pub struct FwAttachment<'a> {
    /// The attachment tag (element comment).
    pub tag: &'a str,
    /// Its bridge.
    pub bridge: &'a str,
    /// Its host veth.
    pub host_veth: &'a str,
    /// Addresses to masquerade (empty: none).
    pub masq: &'a [IpNet],
    /// The bridge is isolated from other rnet bridges.
    pub isolation: bool,
    /// Drop frames from `host_veth` whose source MAC is not this one.
    pub spoof_mac: Option<[u8; 6]>,
}

/// The per-attachment elements installed (what DEL removes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    /// Attachment tag.
    pub tag: String,
    /// Masquerade addresses.
    pub masq: Vec<IpNet>,
    /// Host veth with a spoof-check element.
    pub spoof_veth: Option<String>,
    /// The masquerade addresses are unknown (no state, no prevResult): find
    /// the elements by their tag (a set listing; rare).
    pub scan: bool,
}

impl Installed {
    /// Union of two installs of the same attachment.
    pub fn merge(mut self, other: Installed) -> Installed {
        self.masq.extend(other.masq);
        self.spoof_veth = self.spoof_veth.or(other.spoof_veth);
        self.scan |= other.scan;
        self
    }

    /// What a state file says was installed.
    pub fn from_state(st: &AttachmentState) -> Installed {
        Installed {
            tag: st.tag(),
            masq: if st.masq { st.ips.clone() } else { Vec::new() },
            spoof_veth: st.spoofchk.then(|| st.host_veth.clone()),
            scan: false,
        }
    }

    /// Nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.masq.is_empty() && self.spoof_veth.is_none() && !self.scan
    }
}

/// Installs the attachment's elements (and the shared ones it needs).
pub fn install(att: &FwAttachment<'_>) -> Result<Installed, CniError> {
    Ok(Installed {
        tag: att.tag.to_owned(),
        masq: att.masq.to_vec(),
        spoof_veth: att.spoof_mac.map(|_| att.host_veth.to_owned()),
        scan: false,
    })
}

/// Removes an attachment's elements; missing ones are fine.
pub fn remove(inst: &Installed) -> Result<(), CniError> {
    let _ = inst;
    Ok(())
}

/// What of `att` is missing from the kernel (for CHECK).
pub fn missing(att: &FwAttachment<'_>) -> Result<Vec<String>, CniError> {
    let _ = att;
    Ok(Vec::new())
}

/// Removes every element of `network` whose tag is not in `valid`.
pub fn gc(network: &str, valid: &std::collections::HashSet<String>) -> Result<(), CniError> {
    let _ = (network, valid);
    Ok(())
}
