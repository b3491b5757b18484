//! CNI specification versions: parsing, ordering, and which verbs each allows.

use crate::error::{CniError, code};
use std::fmt;

/// A CNI specification version rnet knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// 0.1.0: `ip4`/`ip6` results.
    V0_1_0,
    /// 0.2.0: adds VERSION.
    V0_2_0,
    /// 0.3.0: interfaces, ips, chaining.
    V0_3_0,
    /// 0.3.1.
    V0_3_1,
    /// 0.4.0: CHECK, prevResult on DEL.
    V0_4_0,
    /// 1.0.0: `ips[].version` removed.
    V1_0_0,
    /// 1.1.0: STATUS, GC, new interface/route fields.
    V1_1_0,
}

/// Every version rnet's plugins accept, oldest first.
pub const SUPPORTED: &[Version] = &[
    Version::V0_1_0,
    Version::V0_2_0,
    Version::V0_3_0,
    Version::V0_3_1,
    Version::V0_4_0,
    Version::V1_0_0,
    Version::V1_1_0,
];

/// The newest version rnet speaks.
pub const CURRENT: Version = Version::V1_1_0;

impl Version {
    /// The version string, e.g. `"1.1.0"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_1_0 => "0.1.0",
            Version::V0_2_0 => "0.2.0",
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// Parses a version string. An empty string means 0.1.0, as the spec's first
    /// version had no `cniVersion` field.
    pub fn parse(s: &str) -> Result<Version, CniError> {
        let v = match s {
            "" | "0.1.0" => Version::V0_1_0,
            "0.2.0" => Version::V0_2_0,
            "0.3.0" => Version::V0_3_0,
            "0.3.1" => Version::V0_3_1,
            "0.4.0" => Version::V0_4_0,
            "1.0.0" => Version::V1_0_0,
            "1.1.0" => Version::V1_1_0,
            other => {
                return Err(CniError::new(
                    code::INCOMPATIBLE_VERSION,
                    "incompatible CNI versions",
                )
                .with_details(format!(
                    "config is {other:?}, plugin supports [{}]; set \"cniVersion\" to one of them",
                    supported_list()
                )));
            }
        };
        Ok(v)
    }

    /// Results use the old `ip4`/`ip6` shape.
    pub fn legacy_result(self) -> bool {
        self <= Version::V0_2_0
    }

    /// CHECK exists from 0.4.0.
    pub fn has_check(self) -> bool {
        self >= Version::V0_4_0
    }

    /// STATUS and GC exist from 1.1.0.
    pub fn has_status_gc(self) -> bool {
        self >= Version::V1_1_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `"0.1.0" "0.2.0" ...` for messages.
pub fn supported_list() -> String {
    SUPPORTED
        .iter()
        .map(|v| format!("{:?}", v.as_str()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The VERSION answer: `{"cniVersion": "1.1.0", "supportedVersions": [...]}`.
pub fn version_info_json() -> String {
    let list = SUPPORTED
        .iter()
        .map(|v| format!("\"{}\"", v.as_str()))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "{{\"cniVersion\":\"{}\",\"supportedVersions\":[{list}]}}",
        CURRENT.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_order() {
        for v in SUPPORTED {
            assert_eq!(Version::parse(v.as_str()).ok(), Some(*v));
        }
        assert!(Version::V0_2_0 < Version::V0_3_0);
        assert!(Version::V0_4_0.has_check());
        assert!(!Version::V0_3_1.has_check());
        assert!(Version::V1_1_0.has_status_gc());
        assert_eq!(Version::parse("").ok(), Some(Version::V0_1_0));
    }

    #[test]
    fn unknown_is_code_1() {
        let e = Version::parse("9.9.9").err();
        assert_eq!(e.map(|e| e.code), Some(1));
    }

    #[test]
    fn version_info_is_json() {
        let v: serde_json::Value = serde_json::from_str(&version_info_json()).unwrap_or_default();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["supportedVersions"].as_array().map(Vec::len), Some(7));
    }
}
