//! `-p` port specs (`[hostIP:]hostPort[-end]:containerPort[-end][/proto]`)
//! and their `portMappings` capability form. Self-contained (no other
//! module of the CLI) so the fuzz target `cli_port` can compile it as is.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::net::IpAddr;

/// A published port: `[hostIP:]hostPort[-end]:containerPort[-end][/proto]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Host address ("" = any).
    pub host_ip: String,
    /// First host port.
    pub host_port: u16,
    /// First container port.
    pub container_port: u16,
    /// Number of ports (ranges).
    pub count: u16,
    /// tcp, udp or sctp.
    pub proto: String,
}

fn port_range(s: &str, what: &str) -> Result<(u16, u16)> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a, b),
        None => (s, s),
    };
    let a: u16 = a
        .parse()
        .with_context(|| format!("{what} port {a:?} is not a number 1-65535"))?;
    let b: u16 = b
        .parse()
        .with_context(|| format!("{what} port {b:?} is not a number 1-65535"))?;
    if a == 0 || b < a {
        bail!("{what} port range {s:?} is empty or starts at 0");
    }
    Ok((a, b))
}

/// Parses one `-p` value.
pub fn parse_port(spec: &str) -> Result<PortSpec> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_owned()),
    };
    if !["tcp", "udp", "sctp"].contains(&proto.as_str()) {
        bail!("-p {spec}: protocol {proto:?} is not tcp, udp or sctp");
    }
    // [v6]:h:c, ip:h:c, h:c
    let (host_ip, ports) = if let Some(r) = rest.strip_prefix('[') {
        let (ip, tail) = r
            .split_once("]:")
            .with_context(|| format!("-p {spec}: expected [IPv6]:hostPort:containerPort"))?;
        (ip.to_owned(), tail)
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.len() {
            2 => (String::new(), rest),
            3 => (parts[0].to_owned(), &rest[parts[0].len() + 1..]),
            _ => bail!("-p {spec}: expected [hostIP:]hostPort:containerPort[/proto]"),
        }
    };
    if !host_ip.is_empty() {
        host_ip
            .parse::<IpAddr>()
            .with_context(|| format!("-p {spec}: {host_ip:?} is not an IP address"))?;
    }
    let (h, c) = ports
        .split_once(':')
        .with_context(|| format!("-p {spec}: expected hostPort:containerPort"))?;
    let (h1, h2) = port_range(h, "host")?;
    let (c1, c2) = port_range(c, "container")?;
    if h2 - h1 != c2 - c1 {
        bail!("-p {spec}: host and container port ranges must have the same length");
    }
    Ok(PortSpec {
        host_ip,
        host_port: h1,
        container_port: c1,
        count: h2 - h1 + 1,
        proto,
    })
}

/// The `portMappings` capability value: one entry per port of each range.
pub fn port_mappings(ports: &[PortSpec]) -> Value {
    let mut v = Vec::new();
    for p in ports {
        for i in 0..p.count {
            let mut m = json!({"hostPort": p.host_port + i, "containerPort": p.container_port + i, "protocol": p.proto});
            if !p.host_ip.is_empty() {
                m["hostIP"] = json!(p.host_ip);
            }
            v.push(m);
        }
    }
    Value::Array(v)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn port_specs() {
        let p = parse_port("8080:80").unwrap();
        assert_eq!(
            (
                p.host_port,
                p.container_port,
                p.count,
                p.proto.as_str(),
                p.host_ip.as_str()
            ),
            (8080, 80, 1, "tcp", "")
        );
        let p = parse_port("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!((p.host_ip.as_str(), p.proto.as_str()), ("127.0.0.1", "udp"));
        let p = parse_port("[::1]:8000-8010:80-90").unwrap();
        assert_eq!((p.host_ip.as_str(), p.count), ("::1", 11));
        for bad in [
            "80",
            "a:80",
            "8080:80/icmp",
            "8000-8010:80-85",
            "1.2.3:80:80",
            "0:80",
            "70000:80",
        ] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
        let m = port_mappings(&[parse_port("1.2.3.4:8000-8001:80-81/sctp").unwrap()]);
        assert_eq!(m.as_array().unwrap().len(), 2);
        assert_eq!(m[1]["hostPort"], 8001);
        assert_eq!(m[1]["hostIP"], "1.2.3.4");
    }
}
