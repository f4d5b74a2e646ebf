//! `xlvs run`: load the data plane, fill it from the config, keep next hops
//! and the connection table current, and answer the control socket until a
//! signal ends it. Dropping the data plane detaches every program.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use lb_common::{CONN_F_REPLY, Conn, ConnKey, IPPROTO_TCP, tcp_state};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::{
    config::{self, Config},
    control::{self, Request, Response},
    dataplane::{Dataplane, Installed},
    nexthop::{NextHop, Resolver},
    view::{RealView, ServiceView, Snapshot, StatsView},
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
    hops: HashMap<Ipv4Addr, NextHop>,
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

    let director = Arc::new(Mutex::new(Director { dataplane, installed, hops }));
    let handler = {
        let director = director.clone();
        Arc::new(move |request: Request| match request {
            Request::List => match snapshot(&director.lock().expect("director lock")) {
                Ok(s) => Response::Snapshot(s),
                Err(e) => Response::Error(format!("{e:#}")),
            },
        })
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

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns` reads.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How long a client entry lives when idle, as IPVS's timeout tables say.
fn timeout_ns(key: &ConnKey, conn: &Conn) -> u64 {
    let secs = if key.proto == IPPROTO_TCP {
        tcp_state::DEFAULT_TIMEOUTS.get(conn.state as usize).copied().unwrap_or(2)
    } else {
        tcp_state::DEFAULT_UDP_TIMEOUT
    };
    u64::from(secs) * 1_000_000_000
}

fn expired(key: &ConnKey, conn: &Conn, now: u64) -> bool {
    now.saturating_sub(conn.last_seen_ns) > timeout_ns(key, conn)
}

/// The client entry that a NAT reply entry belongs to.
fn client_key(reply_key: &ConnKey, reply: &Conn) -> ConnKey {
    ConnKey {
        saddr: reply_key.daddr,
        daddr: reply.vaddr,
        sport: reply_key.dport,
        dport: reply.vport,
        proto: reply_key.proto,
        family: reply_key.family,
        _pad: [0; 2],
    }
}

async fn sweep_forever(director: Arc<Mutex<Director>>) {
    loop {
        tokio::time::sleep(SWEEP_INTERVAL).await;
        sweep(&mut director.lock().expect("director lock").dataplane);
    }
}

/// Expires idle client entries, then the reply entries left without one.
fn sweep(dataplane: &mut Dataplane) {
    let now = monotonic_ns();
    let entries = dataplane.connections();
    for (key, conn) in &entries {
        if conn.flags & CONN_F_REPLY == 0 && expired(key, conn, now) {
            dataplane.remove_connection(key);
        }
    }
    for (key, conn) in &entries {
        if conn.flags & CONN_F_REPLY != 0 && dataplane.connection(&client_key(key, conn)).is_none() {
            dataplane.remove_connection(key);
        }
    }
}

fn snapshot(d: &Director) -> anyhow::Result<Snapshot> {
    let now = monotonic_ns();
    // Active and inactive counts, per real id, from the live client entries.
    let mut counts: HashMap<u32, (u64, u64)> = HashMap::new();
    for (key, conn) in d.dataplane.connections() {
        if conn.flags & CONN_F_REPLY != 0 || expired(&key, &conn, now) {
            continue;
        }
        let entry = counts.entry(conn.real).or_default();
        if key.proto == IPPROTO_TCP && tcp_state::is_active(conn.state) {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
    let mut services = Vec::new();
    for s in &d.installed {
        let mut reals = Vec::new();
        for (real, id) in s.service.reals.iter().zip(&s.real_ids) {
            let st = d.dataplane.real_stats(*id)?;
            let (active, inactive) = counts.get(id).copied().unwrap_or_default();
            reals.push(RealView {
                address: SocketAddrV4::new(real.addr, real.port),
                forward: real.forward.to_string(),
                weight: real.weight,
                active,
                inactive,
                stats: StatsView {
                    conns: st.conns,
                    inpkts: st.inpkts,
                    outpkts: st.outpkts,
                    inbytes: st.inbytes,
                    outbytes: st.outbytes,
                },
            });
        }
        services.push(ServiceView {
            protocol: s.service.protocol.to_string(),
            address: SocketAddrV4::new(s.service.addr, s.service.port),
            scheduler: s.service.scheduler.clone(),
            stats: reals.iter().fold(StatsView::default(), |a, r| a + r.stats),
            reals,
        });
    }
    let counters = d.dataplane.counters()?.into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
    Ok(Snapshot { conn_table_size: d.dataplane.conn_table_size(), services, counters })
}
