//! Small helpers shared by the namespace benchmarks: CPU time of threads
//! and processes, CPU pinning, interface facts inside a namespace.

use std::{
    collections::HashMap,
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tests::netns::Netns;

/// The CPU time a task has run, in ns (`/proc/.../schedstat`, first field:
/// the scheduler's `sum_exec_runtime`, which includes softirq work done
/// while the task was current).
pub fn schedstat_ns(path: &Path) -> Option<u64> {
    fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The calling thread's CPU time, in ns.
pub fn thread_cpu_ns() -> u64 {
    schedstat_ns(Path::new("/proc/thread-self/schedstat")).unwrap_or(0)
}

/// A process's CPU time (all its threads), in ns; `None` once it is gone.
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for t in tasks.flatten() {
        total += schedstat_ns(&t.path().join("schedstat")).unwrap_or(0);
    }
    Some(total)
}

/// The PID of a kernel thread by its exact name (`ksoftirqd/1`,
/// `napi/ext-8193`).
pub fn kthread_pid(comm: &str) -> Option<u32> {
    all_pids().into_iter().find(|&pid| {
        fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm)
    })
}

pub fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Kernel threads whose name starts with `prefix`, by PID.
pub fn kthreads_named(prefix: &str) -> HashMap<u32, String> {
    all_pids()
        .into_iter()
        .filter_map(|pid| {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let comm = comm.trim_end();
            comm.starts_with(prefix).then(|| (pid, comm.to_owned()))
        })
        .collect()
}

/// The PIDs of the processes whose network namespace is `ns`'s.
pub fn pids_in_netns(ns: &Netns) -> Vec<u32> {
    let Ok(target) = fs::metadata(ns.path()) else {
        return Vec::new();
    };
    use std::os::unix::fs::MetadataExt as _;
    all_pids()
        .into_iter()
        .filter(|pid| {
            fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.ino() == target.ino() && m.dev() == target.dev())
        })
        .collect()
}

/// Pins the calling thread to `cpu`.
pub fn pin_to(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only read
    // and write it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "sched_setaffinity(cpu {cpu}): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// An interface's index inside `ns`.
pub fn ifindex_in(ns: &Netns, ifname: &str) -> Result<u32> {
    let name = ifname.to_owned();
    ns.run_in(move || lb_user::ifindex(&name))?
        .with_context(|| format!("no interface {ifname} in {}", ns.name()))
}

/// An interface's MAC inside `ns`.
pub fn mac_in(ns: &Netns, ifname: &str) -> Result<[u8; 6]> {
    let name = ifname.to_owned();
    ns.run_in(move || lb_user::interface_mac(&name))?
        .with_context(|| format!("MAC of {ifname} in {}", ns.name()))
}

pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Polls `f` every 50 ms until it yields, or fails after `timeout`.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The median of a list of figures (the mean of the middle two for an even
/// count); NaN for none.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}
