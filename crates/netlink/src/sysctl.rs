//! `net.*` sysctls through `/proc/sys/net`.
//!
//! `/proc/sys/net` shows the network namespace of the thread that opens the
//! file, so to change a container's sysctl, call these on a thread inside the
//! container's namespace (e.g. inside `NetNs::run`).

use std::io::Write;

use crate::NetlinkError;

/// Turns a dotted `net.*` key into its `/proc/sys` path, refusing anything
/// that could leave `/proc/sys/net`.
///
/// As in `sysctl(8)`, a `/` inside the key stands for a literal `.` in one
/// component, for interface names such as `eth0.100`:
/// `net.ipv4.conf.eth0/100.forwarding` → `/proc/sys/net/ipv4/conf/eth0.100/forwarding`.
pub fn sysctl_path(key: &str) -> Result<String, NetlinkError> {
    let invalid = |why: &str| {
        NetlinkError::InvalidArgument(format!(
            "sysctl key {key:?} {why}; expected a dotted key under net., such as net.ipv4.ip_forward"
        ))
    };
    let mut components = key.split('.');
    if components.next() != Some("net") {
        return Err(invalid("is not under net."));
    }
    let mut path = String::with_capacity(14 + key.len());
    path.push_str("/proc/sys/net");
    let mut count = 0;
    for c in components {
        if c.is_empty() {
            return Err(invalid("has an empty component"));
        }
        if !c.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "contains whitespace, control or non-ASCII characters",
            ));
        }
        let c = c.replace('/', ".");
        if c == "." || c == ".." {
            return Err(invalid("has a '.' or '..' component"));
        }
        path.push('/');
        path.push_str(&c);
        count += 1;
    }
    if count == 0 {
        return Err(invalid("names no setting"));
    }
    Ok(path)
}

/// Writes `value` to the `net.*` sysctl `key` of the calling thread's
/// network namespace.
pub fn sysctl_set(key: &str, value: &str) -> Result<(), NetlinkError> {
    let path = sysctl_path(key)?;
    if value.contains('\0') {
        return Err(NetlinkError::InvalidArgument(format!(
            "value for sysctl {key} contains a NUL byte"
        )));
    }
    let err = |source| NetlinkError::Sysctl {
        key: key.to_string(),
        path: path.clone(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(err)?;
    f.write_all(value.as_bytes()).map_err(err)
}

/// Reads the `net.*` sysctl `key` of the calling thread's network namespace,
/// without the trailing newline.
pub fn sysctl_get(key: &str) -> Result<String, NetlinkError> {
    let path = sysctl_path(key)?;
    let mut s = std::fs::read_to_string(&path).map_err(|source| NetlinkError::Sysctl {
        key: key.to_string(),
        path: path.clone(),
        source,
    })?;
    while s.ends_with('\n') {
        s.pop();
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn valid_keys() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").unwrap(),
            "/proc/sys/net/ipv4/ip_forward"
        );
        assert_eq!(
            sysctl_path("net.ipv6.conf.eth0.accept_ra").unwrap(),
            "/proc/sys/net/ipv6/conf/eth0/accept_ra"
        );
        assert_eq!(
            sysctl_path("net.ipv4.conf.eth0/100.forwarding").unwrap(),
            "/proc/sys/net/ipv4/conf/eth0.100/forwarding"
        );
        assert_eq!(
            sysctl_path("net.ipv4.conf.veth-a_b@1.rp_filter").unwrap(),
            "/proc/sys/net/ipv4/conf/veth-a_b@1/rp_filter"
        );
    }

    #[test]
    fn rejected_keys() {
        for bad in [
            "",
            "net",
            "net.",
            "kernel.panic",
            "netx.ipv4.ip_forward",
            "vm.swappiness",
            ".net.ipv4",
            "net..ipv4",
            "net.ipv4.",
            "net.ipv4.conf./.x",
            "net.ipv4.conf.//.x",
            "net./..",
            "net.ipv4.conf.a b.x",
            "net.ipv4\n.ip_forward",
            "net.ipv4.ip_forward\0",
            "net.ipv4.cönf.x",
            "/proc/sys/net/ipv4/ip_forward",
            "net/ipv4/ip_forward",
        ] {
            let r = sysctl_path(bad);
            assert!(
                matches!(r, Err(NetlinkError::InvalidArgument(_))),
                "{bad:?} accepted as {r:?}"
            );
        }
        // A path built from an accepted key never contains "/../" or "/./".
        for k in ["net.a/b.c", "net.x/.y", "net./x.y"] {
            let p = sysctl_path(k).unwrap();
            assert!(!p.contains("/../") && !p.contains("/./"), "{p}");
            assert!(p.starts_with("/proc/sys/net/"));
        }
        assert!(matches!(
            sysctl_set("net.ipv4.ip_forward", "1\0"),
            Err(NetlinkError::InvalidArgument(_))
        ));
        assert!(matches!(
            sysctl_set("kernel.hostname", "x"),
            Err(NetlinkError::InvalidArgument(_))
        ));
    }
}
