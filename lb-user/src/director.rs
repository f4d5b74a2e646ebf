//! `xlvs run`: load the data plane, fill it from the config, keep it in step
//! with the health checks, reloads and runtime edits, keep next hops and the
//! connection table current, and answer the control socket until a signal
//! ends it. Dropping the data plane detaches every program.
//!
//! Three inputs change what the data plane holds: the configuration (the
//! file, then SIGHUP, autoreload and runtime edits), and the health checks.
//! Each change recomputes the wanted services (`effective`) and hands them
//! to `Dataplane::apply`, which changes only what differs.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{Notify, mpsc},
};
use tracing::{debug, error, info, warn};

use crate::{
    config::{self, Config},
    control::{self, Request, Response},
    dataplane::{
        Applied, Dataplane, RealKey, ServiceAddr, TableSizes,
        apply::{real_key, service_key},
    },
    edit,
    effective::{self, RealState, States},
    health::{self, Monitor, Target},
    listing, metrics,
    rate::{self, Estimator},
    sync,
    vrrp::{Role, Vrrp},
    view::{self, RealHealth, RealView, Snapshot},
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
/// How often `autoreload` looks at the file (ldirectord polls its mtime too).
const AUTORELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// One checked real: its check and the task running it.
struct Checked {
    check: config::Check,
    monitor: Monitor,
}

struct Director {
    path: PathBuf,
    /// The configuration as the operator wants it: the file, then runtime
    /// edits. `xlvs save` prints it.
    configured: Config,
    dataplane: Dataplane,
    /// The sweeper's view of what is installed.
    rules: Rules,
    hops: HashMap<IpAddr, NextHop>,
    /// The idle timeouts in force; `xlvs set --timeout` changes them.
    timeouts: Timeouts,
    monitors: HashMap<(ServiceAddr, RealKey), Checked>,
    states: States,
    /// Services whose quorum is lost.
    quorum_lost: HashSet<ServiceAddr>,
    events: mpsc::UnboundedSender<health::Event>,
    /// Wakes the next-hop refresher when reals change.
    resolve_now: Arc<Notify>,
    /// What the file looked like when last read, for autoreload.
    stamp: Option<FileStamp>,
    /// IPVS's rate estimator, sampled every 2 s.
    estimator: Estimator,
    /// Connections the full table evicted, uncounted by the sweeper.
    evictions: sweep::Evictions,
    /// What VRRP made this director (a lone director is the master).
    role: Role,
    /// The VRRP instance, when `[vrrp]` is set.
    vrrp: Option<Arc<Vrrp>>,
    /// Connection sync: the backup's client-side interface for the NAT
    /// entries it installs, when `[sync]` is set.
    sync_local: Option<ClientSides>,
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
    let mut dataplane =
        Dataplane::load(TableSizes::of(&config)).context("loading the XDP program")?;
    let resolver = Resolver::new()?;
    let hops = resolve_all(&resolver, &real_addresses(&config.services), RESOLVE_WAIT).await;
    // A director of a VRRP pair starts as the backup, and forwards only once
    // VRRP makes it the master.
    let role = if config.vrrp.is_some() { Role::Backup } else { Role::Master };
    dataplane.set_ctl(ctl(role, false)).context("setting the director's mode")?;
    let sync_local = match (&config.sync, &config.vrrp) {
        (Some(_), Some(vrrp)) => Some(client_sides(vrrp).with_context(|| format!("{}: vrrp", config_path.display()))?),
        _ => None,
    };
    for name in &config.interfaces {
        dataplane.attach(name)?;
    }
    let (events, mut health_events) = mpsc::unbounded_channel();
    let mut director = Director {
        path: config_path.to_owned(),
        rules: Rules::default(),
        timeouts: config.timeouts,
        stamp: FileStamp::read(config_path),
        configured: config,
        dataplane,
        hops,
        monitors: HashMap::new(),
        states: States::new(),
        quorum_lost: HashSet::new(),
        events,
        resolve_now: Arc::new(Notify::new()),
        estimator: Estimator::new(),
        evictions: sweep::Evictions::default(),
        role,
        vrrp: None,
        sync_local,
    };
    director.refresh().context("filling the maps")?;
    director.sync_monitors();
    info!(
        services = director.configured.services.len(),
        reals = director.dataplane.installed().iter().map(|s| s.real_ids.len()).sum::<usize>(),
        interfaces = ?director.configured.interfaces,
        socket = %socket.display(),
        "director running"
    );
    for addr in real_addresses(&director.configured.services).iter().filter(|a| !director.hops.contains_key(a)) {
        warn!(real = %addr, "next hop not resolved yet; will retry");
    }

    let resolve_now = director.resolve_now.clone();
    let metrics_addr = director.configured.metrics;
    let vrrp_config = director.configured.vrrp.clone();
    let sync_config = director.configured.sync.clone();
    let sync_events = director.dataplane.take_sync_events();
    let director = Arc::new(Mutex::new(director));
    let handler = {
        let director = director.clone();
        Arc::new(move |request: Request| handle(&mut director.lock().expect("director lock"), request))
    };
    let mut tasks = vec![
        tokio::spawn(server.serve(handler)),
        tokio::spawn(sweep_forever(director.clone())),
        tokio::spawn(refresh_nexthops(director.clone(), resolver, resolve_now)),
        tokio::spawn(autoreload(director.clone())),
    ];
    tasks.push(tokio::spawn({
        let director = director.clone();
        async move {
            while let Some(event) = health_events.recv().await {
                director.lock().expect("director lock").on_health(&event);
            }
        }
    }));
    tasks.push(tokio::spawn(estimate_forever(director.clone())));
    if let Some(config) = sync_config {
        let (socket, dests) = sync::socket(&config).context("connection sync socket")?;
        let socket = Arc::new(socket);
        info!(interface = %config.interface, dests = ?dests, id = config.id, "connection sync");
        if let Some(ring) = sync_events {
            let director = director.clone();
            let translate = move |events: &[lb_common::SyncEvent]| {
                let d = director.lock().expect("director lock");
                let dir = sync::Directory::new(d.dataplane.installed());
                let now = monotonic_ns();
                events.iter().filter_map(|e| sync::to_entry(&d.dataplane, &dir, e, &d.timeouts, now)).collect()
            };
            tasks.push(tokio::spawn(sync::send_forever(ring, socket.clone(), dests, config.id, translate)));
        }
        let director = director.clone();
        let install = move |from: std::net::SocketAddr, entries: Vec<sync::wire::Entry>| {
            director.lock().expect("director lock").install_synced(from, &entries);
        };
        tasks.push(tokio::spawn(sync::receive_forever(socket, config.id, install)));
    }
    if let Some(config) = vrrp_config {
        let hook = {
            let director = director.clone();
            Arc::new(move |role: Role| director.lock().expect("director lock").set_role(role))
        };
        let instance = Vrrp::spawn(config, hook).context("starting VRRP")?;
        director.lock().expect("director lock").vrrp = Some(Arc::new(instance));
    }
    if let Some(addr) = metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("director.metrics: cannot listen on {addr}"))?;
        let source: metrics::Source = {
            let director = director.clone();
            Arc::new(move || {
                let d = director.lock().expect("director lock");
                let vrrp = d.vrrp.as_ref().map(|v| v.status());
                d.snapshot().map(|s| metrics::render(&s) + &vrrp.map_or_else(String::new, |v| metrics::render_vrrp(&v)))
            })
        };
        info!(%addr, "metrics at http://{addr}{}", metrics::PATH);
        tasks.push(tokio::spawn(metrics::serve(listener, source)));
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    // Everything privileged is open: keep only what running needs.
    match crate::privilege::drop_unneeded() {
        Ok(()) => info!(kept = ?crate::privilege::effective(), "capabilities dropped"),
        Err(e) => warn!(error = %e, "cannot drop capabilities; running with all of them"),
    }
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: stopping"); break }
            _ = int.recv() => { info!("SIGINT: stopping"); break }
            _ = hup.recv() => {
                info!("SIGHUP: reloading {}", director.lock().expect("director lock").path.display());
                let _ = director.lock().expect("director lock").reload();
            }
        }
    }
    // A clean stop: the backup takes over after only its skew time.
    let instance = director.lock().expect("director lock").vrrp.take();
    if let Some(instance) = instance.and_then(|v| Arc::try_unwrap(v).ok()) {
        instance.shutdown().await;
    }
    for task in tasks {
        task.abort();
        let _ = task.await;
    }
    // Stop the checks, then drop the last reference: that detaches XDP from
    // every interface, and the aborted control task has removed the socket.
    director.lock().expect("director lock").monitors.clear();
    drop(director);
    info!("director stopped");
    Ok(())
}

impl Director {
    /// VRRP changed this director's role: forward (and sync) as the master,
    /// stand by otherwise.
    fn set_role(&mut self, role: Role) {
        self.role = role;
        let sync = self.configured.sync.is_some();
        match self.dataplane.set_ctl(ctl(role, sync)) {
            Ok(()) if role == Role::Master => info!(sync, "master: forwarding"),
            Ok(()) => info!(?role, "not the master: standing by"),
            Err(e) => error!(error = %e, ?role, "cannot switch the data plane"),
        }
    }

    /// Connection sync, the backup's half.
    fn install_synced(&mut self, from: std::net::SocketAddr, entries: &[sync::wire::Entry]) {
        if self.role == Role::Master {
            debug!(%from, entries = entries.len(), "sync message while master: ignored");
            return;
        }
        let Some(sides) = &self.sync_local else { return };
        let now = monotonic_ns();
        for entry in entries {
            let (client, vip, real) = (entry.endpoints.client(), entry.endpoints.virtual_addr(), entry.endpoints.real());
            let local = sides.by_vip.get(&vip.ip()).copied().unwrap_or(sides.default);
            if let Err(e) = sync::install(&mut self.dataplane, entry, &self.timeouts, now, local) {
                debug!(%client, %vip, %real, reason = %e, "synced connection skipped");
            }
        }
    }

    /// The services with their counters, rates and health.
    fn snapshot(&self) -> Result<Snapshot, String> {
        let mut s = listing::snapshot(&self.dataplane, self.dataplane.installed())
            .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
        // The reals failed checks took out of their service are still
        // configured: `--health` and the metrics show them down.
        for service in &self.configured.services {
            let Some(view) = s.services.iter_mut().find(|v| v.protocol == service.protocol.to_string() && v.address == service.vip) else {
                continue;
            };
            for real in &service.reals {
                let address = std::net::SocketAddr::new(real.addr, real.port);
                if view.reals.iter().any(|r| r.address == address) {
                    continue;
                }
                view.reals.push(RealView {
                    address,
                    forward: real.forward.to_string(),
                    weight: 0,
                    active: 0,
                    inactive: 0,
                    persistent_conns: 0,
                    u_threshold: real.u_threshold,
                    l_threshold: real.l_threshold,
                    overloaded: false,
                    stats: view::StatsView::default(),
                    rate: view::RateView::default(),
                    health: None,
                    in_service: false,
                });
            }
        }
        rate::fill_rates(&mut s, &self.estimator);
        s.counters.insert(metrics::EVICTED.to_owned(), self.evictions.total);
        view::fill_health(&mut s, |svc, real| self.real_health(svc, real));
        Ok(s)
    }

    fn real_health(&self, svc: &view::ServiceKey, real: &RealView) -> Option<RealHealth> {
        let service = self
            .configured
            .services
            .iter()
            .find(|s| s.protocol.to_string() == svc.protocol && s.vip == svc.address)?;
        let key = (real.address.ip(), real.address.port());
        let configured = service.reals.iter().find(|r| real_key(r) == key);
        if configured.is_none() && service.health.fallback.as_ref().is_some_and(|f| real_key(f) == key) {
            let check = "none".to_owned();
            return Some(RealHealth { up: true, check, checks: 0, failures: 0, last_latency_ms: None, last_error: None, fallback: true });
        }
        let real = configured?;
        let Some(checked) = self.monitors.get(&(service_key(service), key)) else {
            let check = real.check.kind.name().to_owned();
            return Some(RealHealth { up: true, check, checks: 0, failures: 0, last_latency_ms: None, last_error: None, fallback: false });
        };
        let status = checked.monitor.status();
        Some(RealHealth {
            up: status.up,
            check: checked.check.kind.name().to_owned(),
            checks: status.checks,
            failures: status.failures,
            last_latency_ms: status.last_latency.map(|d| d.as_secs_f64() * 1000.0),
            last_error: status.last_error,
            fallback: false,
        })
    }

    /// Brings the data plane to the configured services as the health
    /// checks leave them.
    fn refresh(&mut self) -> Result<Applied, crate::dataplane::Error> {
        let want = effective::effective(&self.configured.services, &self.states);
        let applied = self.dataplane.apply(&want, &self.hops)?;
        if !applied.is_empty() {
            self.rules = Rules::new(self.dataplane.installed());
            if applied.reals_added > 0 {
                self.resolve_now.notify_one();
            }
            debug!(?applied, "data plane updated");
        }
        Ok(applied)
    }

    /// Starts a check for every checked real that has none (or whose check
    /// changed), and stops those of reals that are gone. A real whose check
    /// is unchanged keeps its task and its state.
    fn sync_monitors(&mut self) {
        let mut wanted = HashMap::new();
        for service in &self.configured.services {
            for real in service.reals.iter().filter(|r| r.check.kind != config::CheckKind::None) {
                wanted.insert((service_key(service), real_key(real)), (service, real));
            }
        }
        // Reals that left lose their check and state; a real whose check
        // changed gets the new check but keeps its state.
        self.monitors.retain(|key, _| wanted.contains_key(key));
        self.states.retain(|key, _| wanted.contains_key(key));
        for (key, (service, real)) in wanted {
            if self.monitors.get(&key).is_some_and(|c| c.check == real.check) {
                continue;
            }
            let target = Target { protocol: service.protocol, vip: service.vip, addr: real.addr, port: real.port };
            let state = self.states.get(&key).copied().unwrap_or_default();
            let monitor = Monitor::resume(target, real.check.clone(), self.events.clone(), state.up, state.weight);
            self.monitors.insert(key, Checked { check: real.check.clone(), monitor });
        }
    }

    /// A real's check changed its verdict.
    fn on_health(&mut self, event: &health::Event) {
        let key = ((event.target.protocol, event.target.vip), (event.target.addr, event.target.port));
        // An event from a check stopped in the meantime.
        if !self.monitors.contains_key(&key) {
            return;
        }
        let before = self.states.get(&key).copied().unwrap_or_default();
        let after = RealState { up: event.up, weight: event.weight };
        self.states.insert(key, after);
        let Some(service) = self.configured.services.iter().find(|s| service_key(s) == key.0).cloned() else {
            return;
        };
        let fallback_before = service.health.fallback.is_some() && !effective::any_up(&service, &with(&self.states, key, before));
        if let Err(e) = self.refresh() {
            error!(error = %e, "cannot apply a health change to the data plane");
        }
        let (vip, real) = (service.vip.to_string(), format!("{}:{}", event.target.addr, event.target.port));
        if before.up != after.up {
            let (hook, word) =
                if after.up { (&service.health.notify_up, "up") } else { (&service.health.notify_down, "down") };
            if let Some(command) = hook {
                health::run_hook(command, &[word.into(), vip.clone(), real.clone(), event.reason.clone()]);
            }
        }
        let fallback_now = service.health.fallback.is_some() && !effective::any_up(&service, &self.states);
        if fallback_now != fallback_before {
            if fallback_now {
                warn!(service = %vip, "every real is down: the fallback serves");
            } else {
                info!(service = %vip, "a real is back: the fallback leaves");
            }
        }
        self.check_quorum(&service);
    }

    /// keepalived's quorum: run `quorum_down` once when the live weight
    /// drops below `quorum`, and `quorum_up` once when it is back.
    fn check_quorum(&mut self, service: &config::Service) {
        if service.health.quorum == 0 {
            return;
        }
        let key = service_key(service);
        let live = effective::live_weight(service, &self.states);
        let lost = live < u64::from(service.health.quorum);
        let args = [service.vip.to_string(), live.to_string(), service.health.quorum.to_string()];
        if lost && self.quorum_lost.insert(key) {
            warn!(service = %service.vip, live, quorum = service.health.quorum, "quorum lost");
            if let Some(command) = &service.health.quorum_down {
                health::run_hook(command, &args);
            }
        } else if !lost && self.quorum_lost.remove(&key) {
            info!(service = %service.vip, live, quorum = service.health.quorum, "quorum regained");
            if let Some(command) = &service.health.quorum_up {
                health::run_hook(command, &args);
            }
        }
    }

    /// Makes `config` the running configuration, if the data plane takes it.
    fn adopt(&mut self, config: Config) -> Result<(), String> {
        let previous = std::mem::replace(&mut self.configured, config);
        if let Err(e) = self.refresh() {
            self.configured = previous;
            // Put back what the old configuration installed, as far as the
            // maps allow (`apply` checks for room before it writes).
            let _ = self.refresh();
            return Err(format!("{:#}", anyhow::Error::from(e)));
        }
        // A real whose check changed starts over, up.
        let states = self.states.clone();
        self.sync_monitors();
        if states != self.states
            && let Err(e) = self.refresh()
        {
            error!(error = %e, "cannot apply a health change to the data plane");
        }
        self.quorum_lost.retain(|k| self.configured.services.iter().any(|s| service_key(s) == *k));
        for service in self.configured.services.clone() {
            self.check_quorum(&service);
        }
        Ok(())
    }

    /// Re-reads the file (SIGHUP, autoreload). A file that does not validate
    /// changes nothing: the director keeps running on what it has.
    fn reload(&mut self) -> Result<(), String> {
        self.stamp = FileStamp::read(&self.path);
        let config = match config::load(&self.path) {
            Ok(config) => config,
            Err(e) => {
                error!(error = %e, "reload refused; keeping the running configuration");
                return Err(e.to_string());
            }
        };
        if config.interfaces != self.configured.interfaces
            || config.conn_table_size != self.configured.conn_table_size
            || config.cache_size != self.configured.cache_size
            || config.frag_table_size != self.configured.frag_table_size
            || config.metrics != self.configured.metrics
        {
            warn!("interfaces, the table sizes and metrics change only on restart; the rest is reloaded");
        }
        let mut config = config;
        config.interfaces.clone_from(&self.configured.interfaces);
        config.conn_table_size = self.configured.conn_table_size;
        config.cache_size = self.configured.cache_size;
        config.frag_table_size = self.configured.frag_table_size;
        config.metrics = self.configured.metrics;
        if config.timeouts != self.configured.timeouts {
            self.timeouts = config.timeouts;
        }
        let before = self.dataplane.installed().to_vec();
        match self.adopt(config) {
            Ok(_) => {
                let after = self.dataplane.installed();
                info!(
                    services = after.len(),
                    reals = after.iter().map(|s| s.real_ids.len()).sum::<usize>(),
                    unchanged = after.iter().filter(|a| before.iter().any(|b| b.id == a.id && b.real_ids == a.real_ids && b.service == a.service)).count(),
                    "configuration reloaded"
                );
                Ok(())
            }
            Err(e) => {
                error!(error = %e, "reload refused; keeping the running configuration");
                Err(e)
            }
        }
    }

    /// Validates an edited configuration exactly as a file, then runs it.
    fn edit(&mut self, edited: Result<Config, String>) -> Response {
        let checked = edited.and_then(|c| edit::revalidate(&c));
        match checked.and_then(|c| self.adopt(c)) {
            Ok(_) => Response::Done,
            Err(e) => Response::Error(e),
        }
    }
}

/// Where the replies of synced NAT connections go out: the interface that
/// holds their VIP (the client side), else the VRRP interface.
struct ClientSides {
    by_vip: HashMap<IpAddr, sync::Local>,
    default: sync::Local,
}

fn client_sides(vrrp: &config::VrrpConfig) -> anyhow::Result<ClientSides> {
    let local = |name: &str| -> anyhow::Result<sync::Local> {
        let ifindex = crate::ifindex(name).with_context(|| format!("interface '{name}' not found"))?;
        let mac = crate::interface_mac(name).with_context(|| format!("the MAC address of {name}"))?;
        Ok(sync::Local { ifindex, mac })
    };
    let mut by_vip = HashMap::new();
    for vip in &vrrp.addresses {
        by_vip.insert(vip.addr, local(&vip.interface)?);
    }
    Ok(ClientSides { by_vip, default: local(&vrrp.interface)? })
}

/// The data plane's switches for a role.
fn ctl(role: Role, sync: bool) -> lb_common::DirectorCtl {
    let master = role == Role::Master;
    lb_common::DirectorCtl { standby: u32::from(!master), sync: u32::from(master && sync) }
}

/// `states` with one entry replaced.
fn with(states: &States, key: (ServiceAddr, RealKey), state: RealState) -> States {
    let mut copy = states.clone();
    copy.insert(key, state);
    copy
}

fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

/// Every address a real (or a fallback) of these services has.
fn real_addresses(services: &[config::Service]) -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> = services
        .iter()
        .flat_map(|s| s.reals.iter().chain(s.health.fallback.as_ref()).map(|r| r.addr))
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    addrs
}

/// Resolves every address, retrying the unresolved ones until `wait` ends.
async fn resolve_all(resolver: &Resolver, addrs: &[IpAddr], wait: Duration) -> HashMap<IpAddr, NextHop> {
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
                Err(e) => debug!(real = %addr, error = %e, "cannot resolve next hop"),
            }
        }
        if hops.len() == addrs.len() || Instant::now() >= deadline {
            return hops;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Keeps next hops current: every few seconds, and at once when reals were
/// added (a new real's neighbour may take a moment to resolve).
async fn refresh_nexthops(director: Arc<Mutex<Director>>, resolver: Resolver, now: Arc<Notify>) {
    loop {
        let urgent = tokio::select! {
            () = tokio::time::sleep(NEXTHOP_INTERVAL) => false,
            () = now.notified() => true,
        };
        let addrs = real_addresses(&director.lock().expect("director lock").configured.services);
        let wait = if urgent { Duration::from_secs(2) } else { Duration::ZERO };
        let fresh = resolve_all(&resolver, &addrs, wait).await;
        let mut d = director.lock().expect("director lock");
        if fresh == d.hops {
            continue;
        }
        let changed: Vec<(u32, Option<NextHop>)> = d
            .dataplane
            .installed()
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
        Request::List => match d.snapshot() {
            Ok(s) => Response::Snapshot(s),
            Err(e) => Response::Error(e),
        },
        Request::Connections => Response::Connections(listing::connections(
            &d.dataplane,
            d.dataplane.installed(),
            &d.timeouts,
            monotonic_ns(),
        )),
        Request::Timeout => Response::Timeout(d.timeouts),
        Request::SetTimeout { tcp, tcpfin, udp } => {
            if [tcp, tcpfin, udp].iter().any(|t| *t > MAX_TIMEOUT) {
                return Response::Error(format!("a timeout is at most {MAX_TIMEOUT} seconds"));
            }
            d.timeouts = d.timeouts.updated(tcp, tcpfin, udp);
            info!(tcp = d.timeouts.tcp, tcpfin = d.timeouts.tcpfin, udp = d.timeouts.udp, "timeouts set");
            Response::Timeout(d.timeouts)
        }
        Request::Service(e) => {
            let edited = edit::service(&d.configured, &e);
            d.edit(edited)
        }
        Request::Real(e) => {
            let edited = edit::real(&d.configured, &e);
            d.edit(edited)
        }
        Request::Save => {
            let mut running = d.configured.clone();
            running.timeouts = d.timeouts;
            Response::Saved(config::render(&running))
        }
        Request::Reload => match d.reload() {
            Ok(()) => Response::Done,
            Err(e) => Response::Error(e),
        },
        Request::Vrrp => Response::Vrrp(d.vrrp.as_ref().map(|v| v.status())),
        Request::Zero => match d.dataplane.zero_stats() {
            Ok(()) => Response::Done,
            Err(e) => Response::Error(format!("{:#}", anyhow::Error::from(e))),
        },
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
        let swept = sweep::sweep(&mut d.dataplane, &d.rules, &d.timeouts, monotonic_ns(), &mut d.evictions);
        if swept.evicted > 0 {
            warn!(evicted = swept.evicted, "the connection table is full: the kernel evicted least recently used connections");
        }
        if swept != sweep::Swept::default() {
            debug!(?swept, "expired");
        }
    }
}

/// Samples the counters for `--rate`, every 2 s as IPVS's estimator.
async fn estimate_forever(director: Arc<Mutex<Director>>) {
    let mut tick = tokio::time::interval(rate::PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut guard = director.lock().expect("director lock");
        let d = &mut *guard;
        match listing::snapshot(&d.dataplane, d.dataplane.installed()) {
            Ok(s) => {
                d.estimator.sample_snapshot(Instant::now(), &s);
            }
            Err(e) => warn!(error = %e, "rate estimator: cannot read the counters"),
        }
    }
}

/// What identifies a version of the config file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
    /// Editors may keep the size and the second; the text decides.
    hash: u64,
}

impl FileStamp {
    fn read(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        let text = std::fs::read(path).ok()?;
        Some(Self { modified: meta.modified().ok(), len: meta.len(), hash: xxhash_rust::xxh3::xxh3_64(&text) })
    }
}

/// `autoreload = true`: reload when the file changes.
async fn autoreload(director: Arc<Mutex<Director>>) {
    loop {
        tokio::time::sleep(AUTORELOAD_INTERVAL).await;
        let mut d = director.lock().expect("director lock");
        if !d.configured.autoreload {
            continue;
        }
        let now = FileStamp::read(&d.path);
        if now.is_some() && now != d.stamp {
            info!(file = %d.path.display(), "the configuration file changed: reloading");
            let _ = d.reload();
        }
    }
}
