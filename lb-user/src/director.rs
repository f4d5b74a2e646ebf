//! `xlvs run`: load the data plane, fill it from the config, keep next hops
//! and the connection table current, and answer the control socket until a
//! signal ends it. Dropping the data plane detaches every program.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{debug, info, warn};

use crate::{
    config::{self, Config},
    control::{self, Request, Response},
    dataplane::{Dataplane, Installed},
    listing,
    nexthop::{NextHop, Resolver},
    sweep::{self, Rules},
    timeouts::{MAX_TIMEOUT, Timeouts},
};

/// How often idle connections are expired.
const SWEEP_INTERVAL: Duration = Duration::from_secs(2);
/// How often next hops are re-resolved (a real's MAC or route may change).
const NEXTHOP_INTERVAL: Duration = Duration::from_secs(5);
/// How long start-up waits for the reals' neighbours to resolve.
const RESOLVE_WAIT: Duration = Duration::from_secs(3);

struct Director {
    dataplane: Dataplane,
    installed: Vec<Installed>,
    /// The sweeper's view of `installed`.
    rules: Rules,
    hops: HashMap<Ipv4Addr, NextHop>,
    /// The idle timeouts in force; `xlvs set --timeout` changes them.
    timeouts: Timeouts,
}

/// Runs a director until SIGINT or SIGTERM.
///
/// # Errors
/// On a bad config, a missing interface, a program the kernel refuses, or a
/// control socket already in use.
pub async fn run(config_path: &Path, socket: &Path) -> anyhow::Result<()> {
    let config = config::load(config_path)?;
    for name in &config.interfaces {
        if ifindex(name).is_none() {
            bail!("{}: director.interfaces: interface '{name}' not found", config_path.display());
        }
    }
    let server = control::Server::bind(socket)?;
    let mut dataplane = Dataplane::load(config.conn_table_size).context("loading the XDP program")?;
    let resolver = Resolver::new()?;
    let hops = resolve_all(&resolver, &real_addresses(&config), RESOLVE_WAIT).await;
    let installed = dataplane.install(&config, &hops)?;
    for name in &config.interfaces {
        dataplane.attach(name)?;
    }
    info!(
        services = config.services.len(),
        reals = installed.iter().map(|s| s.real_ids.len()).sum::<usize>(),
        interfaces = ?config.interfaces,
        socket = %socket.display(),
        "director running"
    );
    for addr in real_addresses(&config).iter().filter(|a| !hops.contains_key(a)) {
        warn!(real = %addr, "next hop not resolved yet; will retry");
    }

    let rules = Rules::new(&installed);
    let timeouts = config.timeouts;
    let director = Arc::new(Mutex::new(Director { dataplane, installed, rules, hops, timeouts }));
    let handler = {
        let director = director.clone();
        Arc::new(move |request: Request| handle(&mut director.lock().expect("director lock"), request))
    };
    let control = tokio::spawn(server.serve(handler));
    let sweeper = tokio::spawn(sweep_forever(director.clone()));
    let refresher = tokio::spawn(refresh_nexthops(director.clone(), resolver, config));

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: stopping"),
        _ = int.recv() => info!("SIGINT: stopping"),
    }
    for task in [control, sweeper, refresher] {
        task.abort();
        let _ = task.await;
    }
    // The last reference: dropping it detaches XDP from every interface, and
    // the aborted control task has removed the socket file.
    drop(director);
    info!("director stopped");
    Ok(())
}

fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

fn real_addresses(config: &Config) -> Vec<Ipv4Addr> {
    let mut addrs: Vec<Ipv4Addr> = config.services.iter().flat_map(|s| s.reals.iter().map(|r| r.addr)).collect();
    addrs.sort_unstable();
    addrs.dedup();
    addrs
}

/// Resolves every address, retrying the unresolved ones until `wait` ends.
async fn resolve_all(resolver: &Resolver, addrs: &[Ipv4Addr], wait: Duration) -> HashMap<Ipv4Addr, NextHop> {
    let deadline = Instant::now() + wait;
    let mut hops = HashMap::new();
    loop {
        for addr in addrs {
            if hops.contains_key(addr) {
                continue;
            }
            match resolver.resolve(*addr).await {
                Ok(Some(hop)) => {
                    hops.insert(*addr, hop);
                }
                Ok(None) => {}
                Err(e) => warn!(real = %addr, error = %e, "cannot resolve next hop"),
            }
        }
        if hops.len() == addrs.len() || Instant::now() >= deadline {
            return hops;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn refresh_nexthops(director: Arc<Mutex<Director>>, resolver: Resolver, config: Config) {
    let addrs = real_addresses(&config);
    loop {
        tokio::time::sleep(NEXTHOP_INTERVAL).await;
        let fresh = resolve_all(&resolver, &addrs, Duration::ZERO).await;
        let mut d = director.lock().expect("director lock");
        if fresh == d.hops {
            continue;
        }
        let changed: Vec<(u32, Option<NextHop>)> = d
            .installed
            .iter()
            .flat_map(|s| s.service.reals.iter().zip(&s.real_ids))
            .filter(|(r, _)| fresh.get(&r.addr) != d.hops.get(&r.addr))
            .map(|(r, id)| (*id, fresh.get(&r.addr).copied()))
            .collect();
        for (id, hop) in changed {
            if let Err(e) = d.dataplane.set_nexthop(id, hop.as_ref()) {
                warn!(real_id = id, error = %e, "cannot update next hop");
            }
        }
        info!(resolved = fresh.len(), of = addrs.len(), "next hops changed");
        d.hops = fresh;
    }
}

/// Answers one control request.
fn handle(d: &mut Director, request: Request) -> Response {
    match request {
        Request::List => match listing::snapshot(&d.dataplane, &d.installed) {
            Ok(s) => Response::Snapshot(s),
            Err(e) => Response::Error(format!("{:#}", anyhow::Error::from(e))),
        },
        Request::Connections => {
            Response::Connections(listing::connections(&d.dataplane, &d.installed, &d.timeouts, monotonic_ns()))
        }
        Request::Timeout => Response::Timeout(d.timeouts),
        Request::SetTimeout { tcp, tcpfin, udp } => {
            if [tcp, tcpfin, udp].iter().any(|t| *t > MAX_TIMEOUT) {
                return Response::Error(format!("a timeout is at most {MAX_TIMEOUT} seconds"));
            }
            d.timeouts = d.timeouts.updated(tcp, tcpfin, udp);
            info!(tcp = d.timeouts.tcp, tcpfin = d.timeouts.tcpfin, udp = d.timeouts.udp, "timeouts set");
            Response::Timeout(d.timeouts)
        }
    }
}

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns` reads.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

async fn sweep_forever(director: Arc<Mutex<Director>>) {
    loop {
        tokio::time::sleep(SWEEP_INTERVAL).await;
        let mut guard = director.lock().expect("director lock");
        let d = &mut *guard;
        let swept = sweep::sweep(&mut d.dataplane, &d.rules, &d.timeouts, monotonic_ns());
        if swept != sweep::Swept::default() {
            debug!(?swept, "expired");
        }
    }
}
