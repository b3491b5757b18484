//! Measurement helpers for `bench/`: time ADD and DEL of a whole conflist
//! (e.g. bridge + IPAM + portmap) through [`Runtime`], interleaving the
//! candidates so machine noise hits all of them alike.
//!
//! The caller provides the namespaces (the lab's host namespace must be the
//! calling thread's, e.g. inside `NetNs::run`) and a fresh container
//! namespace path per iteration; see the `measure_portmap` lab test.

use rnet_cni::CniError;
use rnet_cni::runtime::{ConfList, Runtime, RuntimeConf};
use std::time::{Duration, Instant};

/// ADD and DEL durations of one candidate.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// One per iteration.
    pub add: Vec<Duration>,
    /// One per iteration.
    pub del: Vec<Duration>,
}

impl Timings {
    /// Median ADD.
    pub fn add_median(&self) -> Duration {
        median(&self.add)
    }

    /// Median DEL.
    pub fn del_median(&self) -> Duration {
        median(&self.del)
    }
}

/// The median (zero for an empty list).
pub fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s.get(s.len() / 2).copied().unwrap_or_default()
}

/// One ADD then DEL of `rc` through `list`, timed.
pub fn add_del(
    rt: &Runtime,
    list: &ConfList,
    rc: &RuntimeConf,
) -> Result<(Duration, Duration), CniError> {
    let t = Instant::now();
    rt.add(list, rc)?;
    let add = t.elapsed();
    let t = Instant::now();
    rt.del(list, rc)?;
    Ok((add, t.elapsed()))
}

/// `iterations` rounds; in each round every candidate does one ADD+DEL of
/// the attachment `rc(round, candidate)`.
pub fn interleaved(
    rt: &Runtime,
    candidates: &[&ConfList],
    iterations: usize,
    rc: &mut dyn FnMut(usize, usize) -> RuntimeConf,
) -> Result<Vec<Timings>, CniError> {
    let mut out = vec![Timings::default(); candidates.len()];
    for i in 0..iterations {
        for (c, list) in candidates.iter().enumerate() {
            let r = rc(i, c);
            let (a, d) = add_del(rt, list, &r)?;
            if let Some(t) = out.get_mut(c) {
                t.add.push(a);
                t.del.push(d);
            }
        }
    }
    Ok(out)
}
