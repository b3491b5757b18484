//! MAC address helpers.

/// A MAC address string that is not six `:`-separated hex octets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid MAC address {input:?}: expected six hex octets separated by ':' (e.g. 02:42:ac:11:00:02)"
)]
pub struct ParseMacError {
    /// The rejected input.
    pub input: String,
}

impl From<ParseMacError> for crate::NetlinkError {
    fn from(e: ParseMacError) -> Self {
        crate::NetlinkError::InvalidArgument(e.to_string())
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` (also accepts `-` as separator and upper case).
pub fn parse_mac(s: &str) -> Result<[u8; 6], ParseMacError> {
    let err = || ParseMacError {
        input: s.to_string(),
    };
    let sep = if s.contains('-') { '-' } else { ':' };
    let mut out = [0u8; 6];
    let mut parts = s.split(sep);
    for byte in out.iter_mut() {
        let part = parts.next().ok_or_else(err)?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
    }
    if parts.next().is_some() {
        return Err(err());
    }
    Ok(out)
}

/// Formats as lowercase `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    )
}

/// A random, locally administered, unicast MAC address (`x2:..`, `x6:..`,
/// `xa:..`, `xe:..`) from getrandom(2); should that be unavailable, falls
/// back to std's randomly keyed SipHash of a counter and the clock.
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    // getrandom(2): one system call, no file (the kernel's urandom pool).
    let random = rustix::rand::getrandom(&mut mac, rustix::rand::GetRandomFlags::empty())
        .is_ok_and(|n| n == mac.len());
    if !random {
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(d.as_nanos());
        }
        h.write_u32(std::process::id());
        let r = h.finish().to_ne_bytes();
        mac.copy_from_slice(&r[..6]);
    }
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn parse_and_format() {
        let m = parse_mac("02:42:AC:11:00:02").unwrap();
        assert_eq!(m, [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        assert_eq!(format_mac(&m), "02:42:ac:11:00:02");
        assert_eq!(parse_mac("02-42-ac-11-00-02").unwrap(), m);
        assert_eq!(format_mac(&[0; 6]), "00:00:00:00:00:00");
    }

    #[test]
    fn parse_rejects() {
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "2:42:ac:11:00:02",
            "002:42:ac:11:00:02",
            "02:42:ac:11:00:0g",
            "02:42:ac:11:00:+2",
            "02:42-ac:11:00:02",
            "02:42:ac:11:00:02:",
            "ｆｆ:42:ac:11:00:02",
        ] {
            let e = parse_mac(bad).unwrap_err();
            assert_eq!(e.input, bad);
        }
    }

    #[test]
    fn random_is_local_unicast() {
        let a = random_mac();
        let b = random_mac();
        for m in [a, b] {
            assert_eq!(m[0] & 0x01, 0, "unicast");
            assert_eq!(m[0] & 0x02, 0x02, "locally administered");
        }
        assert_ne!(a, b);
        assert_eq!(parse_mac(&format_mac(&a)).unwrap(), a);
    }
}
