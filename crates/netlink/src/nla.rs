//! Minimal, panic-free readers for the attributes we decode ourselves.

use netlink_packet_core::NlasIterator;

/// Iterates `(type without flags, value)` over a run of attributes.
/// A malformed attribute ends the iteration with an error.
pub(crate) fn attrs(buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), String>> {
    NlasIterator::new(buf).map(|r| {
        r.map(|nla| {
            let kind = nla.kind();
            let len = usize::from(nla.length());
            (kind, nla.into_inner().get(4..len).unwrap_or(&[]))
        })
        .map_err(|e| format!("malformed attribute: {e}"))
    })
}

pub(crate) fn u8_of(v: &[u8]) -> Option<u8> {
    v.first().copied()
}

pub(crate) fn u16_of(v: &[u8]) -> Option<u16> {
    v.get(..2)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_ne_bytes)
}

pub(crate) fn u32_of(v: &[u8]) -> Option<u32> {
    v.get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_ne_bytes)
}

pub(crate) fn i32_of(v: &[u8]) -> Option<i32> {
    u32_of(v).map(|u| u as i32)
}

/// A NUL-terminated (or not) string attribute.
pub(crate) fn str_of(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(v.get(..end).unwrap_or(&[])).into_owned()
}

pub(crate) fn mac_of(v: &[u8]) -> Option<[u8; 6]> {
    v.try_into().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn readers_never_panic() {
        assert_eq!(u32_of(&[1, 0]), None);
        assert_eq!(u16_of(&[1, 0, 9]), Some(1));
        assert_eq!(str_of(b"eth0\0\0"), "eth0");
        assert_eq!(str_of(b"lo"), "lo");
        assert_eq!(mac_of(&[1, 2, 3]), None);
        // The iterator's value slice honours the attribute length, not the padding.
        let buf = [6u8, 0, 3, 0, b'a', b'b', 0, 0, 8, 0, 4, 0, 0xdc, 5, 0, 0];
        let got: Vec<_> = attrs(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(got, vec![(3, &b"ab"[..]), (4, &[0xdc, 5, 0, 0][..])]);
        // Garbage: an error, not a panic.
        let bad = [200u8, 0, 1, 0, 0, 0];
        assert!(attrs(&bad).any(|r| r.is_err()));
    }
}
