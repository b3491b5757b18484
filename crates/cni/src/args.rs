//! `CNI_ARGS` and the identifier rules the reference runtime enforces
//! (container ID, interface name, network name).

use crate::error::{CniError, code};

/// Parsed `CNI_ARGS` (`K=V;K=V`), in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    /// Parses `K=V;K=V`. Empty segments are skipped; a segment without `=` is error 4.
    pub fn parse(s: &str) -> Result<CniArgs, CniError> {
        let mut pairs = Vec::new();
        for seg in s.split(';') {
            if seg.is_empty() {
                continue;
            }
            match seg.split_once('=') {
                Some((k, v)) if !k.is_empty() => pairs.push((k.to_owned(), v.to_owned())),
                _ => {
                    return Err(CniError::invalid_env(format!(
                        "CNI_ARGS: invalid pair {seg:?}; expected KEY=VALUE pairs separated by ';'"
                    )));
                }
            }
        }
        Ok(CniArgs { pairs })
    }

    /// The value of `key` (last one wins, as in the reference `LoadArgs`).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All pairs.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Builds from pairs.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        Self { pairs }
    }

    /// Renders `K=V;K=V`.
    pub fn render(&self) -> String {
        self.pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

fn cni_name_ok(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Container IDs: `[A-Za-z0-9][A-Za-z0-9_.-]*`; empty is error 3, bad characters error 4.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    if id.is_empty() {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            "missing containerID",
        ));
    }
    if !cni_name_ok(id) {
        return Err(CniError::invalid_env(format!(
            "invalid characters in CNI_CONTAINERID {id:?}: it must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"
        )));
    }
    Ok(())
}

/// Network names: same characters as container IDs; error 7.
pub fn validate_network_name(name: &str) -> Result<(), CniError> {
    if !cni_name_ok(name) {
        return Err(CniError::invalid_config(format!(
            "invalid characters found in network name {name:?}: it must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"
        )));
    }
    Ok(())
}

/// Interface names: 1–15 bytes, not `.`/`..`, no `/`, `:` or white space; error 4.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::invalid_env("CNI_IFNAME is empty"));
    }
    if name.len() > 15 {
        return Err(CniError::invalid_env(format!(
            "CNI_IFNAME {name:?} is too long: interface names have at most 15 bytes"
        )));
    }
    if name == "." || name == ".." {
        return Err(CniError::invalid_env("CNI_IFNAME must not be . or .."));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(CniError::invalid_env(format!(
            "CNI_IFNAME {name:?} contains / or : or white space"
        )));
    }
    Ok(())
}

/// Plugin `type` names: a file name inside CNI_PATH, never a path (CVE-2021-20206).
pub fn validate_plugin_type(t: &str) -> Result<(), CniError> {
    if t.is_empty() || t == "." || t == ".." || t.contains('/') || t.contains('\0') {
        return Err(CniError::invalid_config(format!(
            "invalid plugin type {t:?}: it must be a file name in CNI_PATH, without '/'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args() {
        let a = CniArgs::parse("IgnoreUnknown=1;IP=10.0.0.5;;K8S_POD_NAME=web").unwrap_or_default();
        assert_eq!(a.get("IP"), Some("10.0.0.5"));
        assert_eq!(a.get("K8S_POD_NAME"), Some("web"));
        assert_eq!(a.get("nope"), None);
        assert_eq!(a.render(), "IgnoreUnknown=1;IP=10.0.0.5;K8S_POD_NAME=web");
        assert_eq!(CniArgs::parse("novalue").err().map(|e| e.code), Some(4));
        assert_eq!(CniArgs::parse("=x").err().map(|e| e.code), Some(4));
        assert_eq!(
            CniArgs::parse("A=b=c").unwrap_or_default().get("A"),
            Some("b=c")
        );
    }

    #[test]
    fn ids() {
        assert!(validate_container_id("abc-1.2_3").is_ok());
        assert_eq!(validate_container_id("").err().map(|e| e.code), Some(3));
        assert_eq!(validate_container_id("-x").err().map(|e| e.code), Some(4));
        assert_eq!(validate_container_id("a b").err().map(|e| e.code), Some(4));
        assert!(validate_ifname("eth0").is_ok());
        assert_eq!(
            validate_ifname("0123456789abcdef").err().map(|e| e.code),
            Some(4)
        );
        assert_eq!(validate_ifname("a/b").err().map(|e| e.code), Some(4));
        assert_eq!(validate_ifname("..").err().map(|e| e.code), Some(4));
        assert!(validate_network_name("net-1").is_ok());
        assert_eq!(validate_network_name("../x").err().map(|e| e.code), Some(7));
        assert!(validate_plugin_type("bridge").is_ok());
        assert!(validate_plugin_type("../../sbin/reboot").is_err());
    }
}
