//! Storm: 50 workers cycling ADD and DEL of the full chain against one
//! network for a bounded time. Zero errors (code 11 "try again" is allowed
//! if a retry succeeds), distinct addresses at every instant, and nothing
//! left at the end: no lease, veth, nft element or name.

use crate::common::{StopResolver, container_veths, lab, lease_count, rnet};
use rnet_cni::runtime::{ConfList, Runtime, RuntimeConf};
use serde_json::json;
use std::collections::HashMap;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[test]
fn fifty_workers_add_del_without_errors_or_leaks() {
    let lab = lab();
    let root = lab.state_dir().join("run");
    let _resolver = StopResolver(root.join("dns"));
    let conf = json!({"cniVersion": "1.1.0", "name": "storm", "plugins": [
        {"type": "rnet-bridge", "bridge": "br-storm", "isGateway": true, "ipMasq": true,
         "rnetStateDir": root,
         "ipam": {"type": "rnet-ipam", "subnet": "10.88.50.0/24", "dataDir": lab.state_dir().join("ipam")}},
        {"type": "rnet-portmap", "capabilities": {"portMappings": true}, "rnetStateDir": root},
        {"type": "rnet-dnsname", "domainName": "dns.rnet", "rnetStateDir": root,
         "rnetDefaultUpstreams": ["127.0.0.1:9"]}
    ]});
    let list = ConfList::parse(conf.to_string().as_bytes()).unwrap();
    let rt = Runtime::new(
        vec![rnet("rnet-bridge").parent().unwrap().to_path_buf()],
        lab.state_dir().join("cache"),
    );
    let workers = 50;
    let containers: Vec<_> = (0..workers)
        .map(|i| lab.add_container(&format!("s{i}")).unwrap())
        .collect();
    let seconds: u64 = std::env::var("RNET_STORM_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    // address -> worker holding it right now
    let holders: Mutex<HashMap<String, usize>> = Mutex::new(HashMap::new());
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let cycles = std::sync::atomic::AtomicUsize::new(0);
    let retries = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for (w, ctr) in containers.iter().enumerate() {
            let (rt, list, holders, errors, cycles, retries, lab) =
                (&rt, &list, &holders, &errors, &cycles, &retries, &lab);
            s.spawn(move || {
                let mut caps = serde_json::Map::new();
                caps.insert(
                    "portMappings".into(),
                    json!([{"hostPort": 30000 + w, "containerPort": 80, "protocol": "tcp"}]),
                );
                let rc = RuntimeConf {
                    container_id: format!("s{w}"),
                    netns: Some(ctr.netns_path()),
                    ifname: "eth0".into(),
                    args: vec![
                        ("IgnoreUnknown".into(), "1".into()),
                        ("K8S_POD_NAME".into(), format!("s{w}")),
                    ],
                    capability_args: caps,
                };
                let with_retry = |add: bool| -> Result<Option<String>, String> {
                    for _ in 0..5 {
                        let r = lab
                            .host()
                            .run(|| {
                                if add {
                                    rt.add(list, &rc).map(|r| {
                                        r.ips.first().map(|i| i.address.addr().to_string())
                                    })
                                } else {
                                    rt.del(list, &rc).map(|()| None)
                                }
                            })
                            .map_err(|e| e.to_string())?;
                        match r {
                            Ok(v) => return Ok(v),
                            Err(e) if e.code == 11 => {
                                retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            Err(e) => {
                                return Err(format!(
                                    "worker {w} {}: {e}",
                                    if add { "ADD" } else { "DEL" }
                                ));
                            }
                        }
                    }
                    Err(format!("worker {w}: still 'try again' after 5 attempts"))
                };
                while Instant::now() < deadline {
                    match with_retry(true) {
                        Ok(Some(ip)) => {
                            if let Some(other) = holders.lock().unwrap().insert(ip.clone(), w) {
                                errors.lock().unwrap().push(format!(
                                    "{ip} given to worker {w} while worker {other} holds it"
                                ));
                            }
                            // Remove ourselves before DEL releases the address.
                            holders.lock().unwrap().remove(&ip);
                        }
                        Ok(None) => errors
                            .lock()
                            .unwrap()
                            .push(format!("worker {w}: ADD without an address")),
                        Err(e) => {
                            errors.lock().unwrap().push(e);
                            return;
                        }
                    }
                    if let Err(e) = with_retry(false) {
                        errors.lock().unwrap().push(e);
                        return;
                    }
                    cycles.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap();
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    let cycles = cycles.into_inner();
    assert!(cycles >= workers, "only {cycles} cycles in {seconds} s");
    std::thread::sleep(Duration::from_millis(500)); // deferred veth deletions
    let leases = lease_count(&lab.state_dir().join("ipam").join("storm"));
    assert_eq!(leases, 0, "leases left after {cycles} cycles");
    let veths = container_veths(&lab);
    assert!(veths.is_empty(), "veths left: {veths:?}");
    let mut c = Command::new("nft");
    c.args(["list", "table", "inet", "rnet"]);
    let table = String::from_utf8_lossy(&lab.host().output(&mut c).unwrap().stdout).into_owned();
    assert!(!table.contains("storm/s"), "nft elements left:\n{table}");
    eprintln!(
        "storm: {workers} workers, {cycles} ADD/DEL cycles in {seconds} s, {} try-again retries, 0 errors, 0 leaks",
        retries.into_inner()
    );
}
