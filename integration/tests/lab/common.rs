//! Shared helpers for the lab tests.

use netns_fixtures::{CniCall, CniOutput, Lab, find_plugin};
use serde_json::Value;
use std::path::PathBuf;

/// A lab, or a loud failure explaining that root is needed.
pub fn lab() -> Lab {
    netns_fixtures::require_root().expect(netns_fixtures::NEED_ROOT);
    Lab::new().expect("cannot build the lab (root and network namespaces are needed)")
}

/// Path of one of rnet's built plugins (fails loudly if not built).
pub fn rnet(name: &str) -> PathBuf {
    find_plugin(name).expect("plugin binary missing: run `cargo build --workspace --bins` first")
}

/// Path of a reference plugin from Debian's containernetworking-plugins.
pub fn reference(name: &str) -> PathBuf {
    let p = PathBuf::from("/usr/lib/cni").join(name);
    assert!(
        p.is_file(),
        "reference plugin {} missing: install Debian's containernetworking-plugins (scripts/deps.sh does)",
        p.display()
    );
    p
}

/// The directory of rnet's built plugins (for CNI_PATH).
pub fn rnet_dir() -> PathBuf {
    rnet("rnet-none")
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Runs `call`, panicking with the plugin's output if it could not run at all.
pub fn run(call: CniCall<'_>) -> CniOutput {
    call.run().expect("plugin could not be run")
}

/// The error code printed by a failed plugin call.
pub fn error_code(out: &CniOutput) -> u64 {
    assert_ne!(
        out.status,
        0,
        "expected a failure, got success: {}",
        out.stdout_str()
    );
    let v: Value = out
        .json()
        .expect("a failed plugin must print a JSON error on stdout");
    v["code"]
        .as_u64()
        .unwrap_or_else(|| panic!("error without a code: {v}"))
}

/// Stops, on drop (also when the test panics), the rnet-dns resolver that
/// the DNS plugin started with state directory `.0`: read from its PID file,
/// and only if that process really is rnet-dns on this directory.
pub struct StopResolver(pub PathBuf);

impl Drop for StopResolver {
    fn drop(&mut self) {
        let Some(pid) = std::fs::read_to_string(self.0.join("rnet-dns.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        else {
            return;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("rnet-dns") && cmd.contains(&*self.0.to_string_lossy()) {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
    }
}

/// Starts `rnet-dns` by hand in the lab host on state directory `dir`
/// (port 53, upstream a discard port on loopback, never the machine's
/// resolvers); returns after its readiness line, failing loudly otherwise.
pub fn start_resolver(lab: &Lab, dir: &std::path::Path) {
    let out = lab
        .host()
        .output(
            std::process::Command::new(rnet("rnet-dns"))
                .args([
                    "run",
                    "--port",
                    "53",
                    "--upstream",
                    "127.0.0.1:9",
                    "--state-dir",
                ])
                .arg(dir),
        )
        .expect("running rnet-dns in the lab host");
    assert!(
        out.status.success(),
        "rnet-dns did not start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Lease files (host-local format: one file named by its address) in an IPAM
/// network directory; 0 when the directory does not exist.
pub fn lease_count(network_dir: &std::path::Path) -> usize {
    std::fs::read_dir(network_dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .parse::<std::net::IpAddr>()
                        .is_ok()
                })
                .count()
        })
        .unwrap_or(0)
}

/// The veths on the lab host other than the uplink to the outside namespace.
pub fn container_veths(lab: &Lab) -> Vec<String> {
    let mut nl = lab.netlink().expect("netlink in the lab host");
    nl.link_list()
        .expect("link dump")
        .into_iter()
        .filter(|l| l.kind.as_deref() == Some("veth") && l.name != "uplink0")
        .map(|l| l.name)
        .collect()
}
