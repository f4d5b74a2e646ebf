//! VRRP version 3 over IPv4 and IPv6 (RFC 5798), keepalived-compatible:
//! the director holds its VIPs only while it is the master of its virtual
//! router, and a backup takes them over when the master goes away.
//!
//! [`Vrrp::spawn`] runs one instance as a tokio task: the RFC's state
//! machine ([`machine`]), fed by adverts from a raw socket of the
//! instance's family ([`socket`], decoded by [`packet`]) and by its timers;
//! becoming master tells the director through the role hook, then adds
//! the VIPs (of both families: the other family's are keepalived's
//! excluded addresses) and announces them with gratuitous ARPs and
//! unsolicited neighbour advertisements ([`takeover`]); becoming backup
//! tells it first, then removes the VIPs.
//!
//! An IPv6 instance is usable while its interface runs and has a
//! link-local address past duplicate address detection: that address is
//! its adverts' source and its primary address for the RFC's tie-break.

pub mod machine;
pub mod packet;
pub mod socket;
pub mod takeover;

use std::{
    collections::HashMap,
    fmt::Write as _,
    io,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{sync::oneshot, task::JoinHandle, time::Instant};

pub use crate::config::{VirtualIp, VrrpConfig, vrrp::Family};
use machine::{Action, Machine, Params, State};
use packet::{Advert, DropReason, Filter, Received};
use socket::VrrpSocket;
use takeover::Addresses;

/// What the director is told to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Not the master: do not forward for the VIPs.
    Backup,
    /// The master: the VIPs are here, forward for them.
    Master,
    /// The interface is down or has no address of the instance's family:
    /// do not forward.
    Fault,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("vrrp: interface {0} does not exist")]
    NoInterface(String),
    #[error("vrrp: raw socket on {interface}: {source}")]
    Socket { interface: String, source: io::Error },
    #[error("vrrp: netlink: {0}")]
    Netlink(io::Error),
    #[error("vrrp: must be started inside a tokio runtime")]
    NoRuntime,
}

/// Datagrams dropped, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drops {
    pub truncated: u64,
    pub malformed: u64,
    pub peer: u64,
    pub ttl: u64,
    pub version: u64,
    #[serde(rename = "type")]
    pub kind: u64,
    pub checksum: u64,
    pub vrid: u64,
    pub interface: u64,
}

impl Drops {
    fn slot(&mut self, reason: DropReason) -> &mut u64 {
        match reason {
            DropReason::Truncated => &mut self.truncated,
            DropReason::Malformed => &mut self.malformed,
            DropReason::Peer => &mut self.peer,
            DropReason::Ttl => &mut self.ttl,
            DropReason::Version => &mut self.version,
            DropReason::Type => &mut self.kind,
            DropReason::Checksum => &mut self.checksum,
            DropReason::Vrid => &mut self.vrid,
            DropReason::Interface => &mut self.interface,
        }
    }

    /// The count for one reason.
    #[must_use]
    pub fn get(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::Truncated => self.truncated,
            DropReason::Malformed => self.malformed,
            DropReason::Peer => self.peer,
            DropReason::Ttl => self.ttl,
            DropReason::Version => self.version,
            DropReason::Type => self.kind,
            DropReason::Checksum => self.checksum,
            DropReason::Vrid => self.vrid,
            DropReason::Interface => self.interface,
        }
    }

    /// Every reason with its count, in [`DropReason::ALL`]'s order.
    #[must_use]
    pub fn iter(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL.iter().map(|r| (*r, self.get(*r))).collect()
    }

    #[must_use]
    pub fn total(&self) -> u64 {
        self.iter().iter().map(|(_, n)| n).sum()
    }
}

/// A snapshot of an instance, for `xlvs list --vrrp` and the metrics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub interface: String,
    pub vrid: u8,
    /// The family of the adverts and of the addresses they list.
    #[serde(default)]
    pub family: Family,
    pub state: State,
    pub priority: u8,
    /// Our primary address (IPv4: the interface's first; IPv6: its
    /// link-local one), when the interface has one.
    pub primary: Option<IpAddr>,
    /// The current master: ours when master, the last accepted advert's
    /// source when backup.
    pub master: Option<IpAddr>,
    /// Our advert interval, in milliseconds.
    pub advert_interval_ms: u32,
    /// Master_Adver_Interval: learned from the master while backup.
    pub master_advert_interval_ms: u32,
    pub preempt: bool,
    /// Entries into backup, master or fault.
    pub transitions: u64,
    pub adverts_sent: u64,
    /// Adverts accepted (every check passed).
    pub adverts_received: u64,
    pub drops: Drops,
    /// The VIPs the adverts list, as `ADDR/LEN dev IFNAME`.
    pub addresses: Vec<String>,
    /// The VIPs of the other family: moved with the role, not advertised.
    #[serde(default)]
    pub excluded: Vec<String>,
    pub unicast_peers: Vec<IpAddr>,
}

/// A running VRRP instance. Dropping it stops the task at once, without
/// the priority-0 advert and leaving the VIPs as they are (a new instance
/// removes them when it starts as backup); [`Vrrp::shutdown`] is the
/// clean stop.
pub struct Vrrp {
    status: Arc<Mutex<Status>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Vrrp {
    /// Starts the instance on the current tokio runtime (and in the calling
    /// thread's network namespace). It begins in Initialize and goes to
    /// Backup (Master at once for priority 255), or Fault while the
    /// interface is down or has no address of the family (IPv6: no
    /// link-local one past duplicate address detection).
    ///
    /// # Errors
    /// Outside a runtime, when the interface does not exist, or when the
    /// raw or netlink socket cannot be opened (not root).
    pub fn spawn(config: VrrpConfig, on_role: Arc<dyn Fn(Role) + Send + Sync>) -> Result<Vrrp, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let ifindex = socket::ifindex(&config.interface).ok_or_else(|| Error::NoInterface(config.interface.clone()))?;
        let socket = VrrpSocket::open(&config.interface, ifindex, config.family)
            .map_err(|source| Error::Socket { interface: config.interface.clone(), source })?;
        let addresses = {
            let _guard = runtime.enter();
            Addresses::new().map_err(Error::Netlink)?
        };
        let params = Params {
            priority: config.priority,
            advert_interval_cs: config.advert_interval_cs(),
            preempt: config.preempt,
            preempt_delay: config.preempt_delay,
            primary: config.family.unspecified(),
        };
        let machine = Machine::new(params);
        let status = Arc::new(Mutex::new(Status {
            interface: config.interface.clone(),
            vrid: config.vrid,
            family: config.family,
            state: State::Initialize,
            priority: config.priority,
            primary: None,
            master: None,
            advert_interval_ms: u32::from(config.advert_interval_cs()) * 10,
            master_advert_interval_ms: u32::from(config.advert_interval_cs()) * 10,
            preempt: config.preempt,
            transitions: 0,
            adverts_sent: 0,
            adverts_received: 0,
            drops: Drops::default(),
            addresses: config.advertised().map(ToString::to_string).collect(),
            excluded: config.excluded().map(ToString::to_string).collect(),
            unicast_peers: config.unicast_peers.clone(),
        }));
        let instance = Instance {
            ifindex,
            socket,
            addresses,
            machine,
            on_role,
            status: Arc::clone(&status),
            garp_again: None,
            drop_log: DropLog::default(),
            link_usable: None,
            config,
        };
        let (stop, stopped) = oneshot::channel();
        let task = runtime.spawn(instance.run(stopped));
        Ok(Vrrp { status, stop: Some(stop), task: Some(task) })
    }

    /// The clean stop: a master sends an advert with priority 0 (so that a
    /// backup takes over after its skew time only); the role hook is told
    /// Backup and the VIPs are removed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(10), &mut task).await.is_err()
        {
            tracing::warn!("vrrp: the instance did not stop within 10 s; aborting it");
            task.abort();
        }
    }

    #[must_use]
    pub fn status(&self) -> Status {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for Vrrp {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A short text block for `xlvs list --vrrp`.
#[must_use]
pub fn render_status(s: &Status) -> String {
    let mut out = String::new();
    let ms = |n: u32| {
        if n.is_multiple_of(1000) { format!("{} s", n / 1000) } else { format!("{n} ms") }
    };
    let _ = writeln!(out, "VRRP vrid {} {} on {}: {}", s.vrid, s.family, s.interface, s.state);
    let preempt = if s.preempt { "preempt" } else { "nopreempt" };
    let primary = s.primary.map_or_else(|| "none".to_owned(), |p| p.to_string());
    let _ = writeln!(out, "  priority {} ({preempt}), address {primary}, advert every {}", s.priority, ms(s.advert_interval_ms));
    let master = match s.master {
        None => "unknown".to_owned(),
        Some(m) if Some(m) == s.primary && s.state == State::Master => format!("{m} (this router)"),
        Some(m) => m.to_string(),
    };
    let _ = writeln!(out, "  master {master}, advert every {}", ms(s.master_advert_interval_ms));
    let _ = writeln!(
        out,
        "  transitions {}, adverts sent {}, received {}",
        s.transitions, s.adverts_sent, s.adverts_received
    );
    let drops: Vec<String> = s.drops.iter().into_iter().filter(|(_, n)| *n != 0).map(|(r, n)| format!("{r} {n}")).collect();
    let _ = writeln!(out, "  dropped {}", if drops.is_empty() { "none".to_owned() } else { drops.join(", ") });
    let _ = writeln!(out, "  addresses {}", s.addresses.join(", "));
    if !s.excluded.is_empty() {
        let _ = writeln!(out, "  excluded (not {}: moved with the role, not advertised) {}", s.family, s.excluded.join(", "));
    }
    if !s.unicast_peers.is_empty() {
        let peers: Vec<String> = s.unicast_peers.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "  unicast peers {}", peers.join(", "));
    }
    out
}

/// How often the interface's state and address are looked at.
const LINK_POLL: Duration = Duration::from_secs(1);
/// At most one log line per drop reason in this long.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

struct Instance {
    config: VrrpConfig,
    ifindex: u32,
    socket: VrrpSocket,
    addresses: Addresses,
    machine: Machine,
    on_role: Arc<dyn Fn(Role) + Send + Sync>,
    status: Arc<Mutex<Status>>,
    /// When the second burst of gratuitous ARPs is due.
    garp_again: Option<Instant>,
    drop_log: DropLog,
    /// The primary address while the interface is usable; `Some(None)`
    /// while it is not; `None` before the first look.
    link_usable: Option<Option<IpAddr>>,
}

impl Instance {
    async fn run(mut self, mut stopped: oneshot::Receiver<()>) {
        let c = &self.config;
        tracing::info!(
            "vrrp: vrid {} {} on {} (priority {}, advert every {} ms, {})",
            c.vrid,
            c.family,
            c.interface,
            c.priority,
            c.advert_interval.as_millis(),
            if c.unicast_peers.is_empty() { "multicast".to_owned() } else { format!("unicast to {:?}", c.unicast_peers) }
        );
        self.check_link().await;
        let mut buf = vec![0u8; 65536];
        let mut link_poll = tokio::time::interval_at(Instant::now() + LINK_POLL, LINK_POLL);
        link_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = [self.machine.deadline().map(Instant::from_std), self.garp_again]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = &mut stopped => break,
                () = tokio::time::sleep_until(deadline) => {
                    let now = Instant::now();
                    if self.garp_again.is_some_and(|t| t <= now) {
                        self.garp_again = None;
                        self.announce();
                    }
                    // Silence may be the link's fault, not the master's:
                    // look before taking over.
                    if self.machine.state() == State::Backup {
                        self.check_link().await;
                    }
                    let actions = self.machine.poll(Instant::now().into_std());
                    self.execute(actions).await;
                }
                received = self.socket.recv(&mut buf) => match received {
                    Ok(d) => {
                        let len = d.len;
                        self.receive(&buf[..len], &d).await;
                    }
                    Err(e) => {
                        tracing::warn!("vrrp: receiving on {}: {e}", self.config.interface);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = link_poll.tick() => self.check_link().await,
            }
        }
        let actions = self.machine.shutdown(Instant::now().into_std());
        self.execute(actions).await;
        tracing::info!("vrrp: vrid {} on {} stopped", self.config.vrid, self.config.interface);
    }

    /// The primary address while the interface is usable: running, with an
    /// IPv4 address, or for IPv6 a link-local one that can be a source.
    async fn usable_primary(&self) -> Option<IpAddr> {
        let link = socket::link(&self.config.interface).filter(|l| l.running)?;
        match self.config.family {
            Family::Ipv4 => link.usable().map(IpAddr::V4),
            Family::Ipv6 => match self.addresses.link_local(self.ifindex, &self.config.addresses).await {
                Ok(a) => a.map(IpAddr::V6),
                Err(e) => {
                    tracing::warn!("vrrp: reading the addresses of {}: {e}", self.config.interface);
                    None
                }
            },
        }
    }

    /// Looks at the interface: a fault when it is down or has no address,
    /// a new start when it comes back.
    async fn check_link(&mut self) {
        let usable = self.usable_primary().await;
        if self.link_usable == Some(usable) {
            return;
        }
        let now = Instant::now().into_std();
        let actions = match (self.link_usable, usable) {
            (_, None) => {
                let what = match self.config.family {
                    Family::Ipv4 => "an IPv4 address",
                    Family::Ipv6 => "a link-local IPv6 address past duplicate address detection",
                };
                tracing::warn!("vrrp: {} is down or has no {what}: fault", self.config.interface);
                self.machine.fault(now)
            }
            (Some(Some(_)), Some(primary)) => {
                tracing::info!("vrrp: {} primary address is now {primary}", self.config.interface);
                self.machine.set_primary(primary);
                Vec::new()
            }
            (_, Some(primary)) => {
                self.machine.set_primary(primary);
                self.machine.startup(now)
            }
        };
        self.link_usable = Some(usable);
        self.execute(actions).await;
    }

    async fn receive(&mut self, datagram: &[u8], meta: &socket::Datagram) {
        let filter = Filter { vrid: self.config.vrid, peers: &self.config.unicast_peers };
        let result: Result<Received, DropReason> = if meta.ifindex.is_some_and(|i| i != self.ifindex) {
            Err(DropReason::Interface)
        } else {
            match (self.config.family, &meta.ipv6) {
                (Family::Ipv4, _) => packet::decode(datagram, &filter),
                (Family::Ipv6, Some(header)) => packet::decode_ipv6(datagram, header, &filter),
                (Family::Ipv6, None) => Err(DropReason::Malformed),
            }
        };
        match result {
            Ok(rx) => {
                self.status().adverts_received += 1;
                let a = &rx.advert;
                tracing::trace!("vrrp: advert from {} priority {} interval {} cs", rx.src, a.priority, a.interval_cs);
                let actions = self.machine.advert(Instant::now().into_std(), rx.src, a.priority, a.interval_cs);
                self.execute(actions).await;
            }
            Err(reason) => {
                *self.status().drops.slot(reason) += 1;
                let src = match &meta.ipv6 {
                    Some(h) => Some(IpAddr::V6(h.src)),
                    None => datagram.get(12..16).and_then(|a| <[u8; 4]>::try_from(a).ok()).map(IpAddr::from),
                };
                self.log_drop(reason, src);
            }
        }
    }

    fn log_drop(&mut self, reason: DropReason, src: Option<IpAddr>) {
        let Some(suppressed) = self.drop_log.admit(reason, Instant::now().into_std()) else { return };
        let from = src.map_or_else(String::new, |s| format!(" from {s}"));
        let more = if suppressed > 0 { format!(" ({suppressed} more since the last report)") } else { String::new() };
        let (vrid, interface, why) = (self.config.vrid, &self.config.interface, drop_text(reason));
        if reason == DropReason::Vrid {
            // Other virtual routers on the segment are normal.
            tracing::debug!("vrrp: vrid {vrid} on {interface}: dropped an advert{from}: {why}{more}");
        } else {
            tracing::warn!("vrrp: vrid {vrid} on {interface}: dropped an advert{from}: {why}{more}");
        }
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn execute(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::SendAdvert { priority } => self.send_advert(priority),
                Action::BecomeMaster => {
                    tracing::info!("vrrp: vrid {} on {}: entering MASTER", self.config.vrid, self.config.interface);
                    // Forwarding starts before the VIPs are added: the data
                    // plane needs no address, but a kernel that has the VIP
                    // while the data plane still stands by would answer the
                    // first packets of established connections with resets.
                    (self.on_role)(Role::Master);
                    for vip in &self.config.addresses {
                        if let Err(e) = self.addresses.add(vip).await {
                            tracing::error!("vrrp: adding {vip}: {e}");
                        }
                    }
                    self.announce();
                    if self.config.garp_count > 0 && !self.config.garp_delay.is_zero() {
                        self.garp_again = Some(Instant::now() + self.config.garp_delay);
                    }
                    notify(self.config.notify_master.as_deref());
                }
                Action::BecomeBackup | Action::BecomeFault => {
                    let (role, command) = if action == Action::BecomeFault {
                        (Role::Fault, self.config.notify_fault.as_deref())
                    } else {
                        (Role::Backup, self.config.notify_backup.as_deref())
                    };
                    let what = match self.machine.state() {
                        State::Initialize => "stopping".to_owned(),
                        state => format!("entering {state}"),
                    };
                    tracing::info!("vrrp: vrid {} on {}: {what}", self.config.vrid, self.config.interface);
                    self.garp_again = None;
                    (self.on_role)(role);
                    self.remove_vips().await;
                    if self.machine.state() != State::Initialize {
                        notify(command);
                    }
                }
            }
        }
        self.update_status();
    }

    async fn remove_vips(&self) {
        // Never the interface's own address: an owner's VIP is its real one.
        let primary = self.machine.params().primary;
        for vip in self.config.addresses.iter().filter(|v| v.addr != primary) {
            if let Err(e) = self.addresses.remove(vip).await {
                tracing::error!("vrrp: removing {vip}: {e}");
            }
        }
    }

    /// Gratuitous ARPs and unsolicited neighbour advertisements for every
    /// address, excluded ones too (as keepalived).
    fn announce(&self) {
        let sent = takeover::announce(&self.config.addresses, self.config.garp_count);
        tracing::debug!("vrrp: sent {sent} gratuitous ARPs and neighbour advertisements");
    }

    fn send_advert(&mut self, priority: u8) {
        let Some(src) = self.link_usable.flatten() else { return };
        let advert = Advert {
            vrid: self.config.vrid,
            priority,
            interval_cs: self.config.advert_interval_cs(),
            addresses: self.config.advertised().map(|v| v.addr).collect(),
        };
        let group = [packet::group(src)];
        let destinations = if self.config.unicast_peers.is_empty() { &group[..] } else { &self.config.unicast_peers[..] };
        let mut sent = 0;
        for dst in destinations {
            match self.socket.send(&advert.to_wire(src, *dst), src, *dst) {
                Ok(()) => sent += 1,
                Err(e) => tracing::warn!("vrrp: sending an advert to {dst} on {}: {e}", self.config.interface),
            }
        }
        self.status().adverts_sent += sent;
    }

    fn update_status(&self) {
        let m = &self.machine;
        let primary = self.link_usable.flatten();
        let mut s = self.status();
        s.state = m.state();
        s.primary = primary;
        s.master = m.master();
        s.master_advert_interval_ms = u32::from(m.master_adver_interval_cs()) * 10;
        s.transitions = m.transitions();
    }
}

/// At most one log line per drop reason per [`DROP_LOG_EVERY`].
#[derive(Default)]
struct DropLog {
    /// The last line per reason, and how many drops went unlogged since.
    last: HashMap<DropReason, (std::time::Instant, u64)>,
}

impl DropLog {
    /// `Some(unlogged since the last line)` when a line may be written now.
    fn admit(&mut self, reason: DropReason, now: std::time::Instant) -> Option<u64> {
        match self.last.get_mut(&reason) {
            Some((last, unlogged)) if now.duration_since(*last) < DROP_LOG_EVERY => {
                *unlogged += 1;
                None
            }
            Some((last, unlogged)) => {
                *last = now;
                Some(std::mem::take(unlogged))
            }
            None => {
                self.last.insert(reason, (now, 0));
                Some(0)
            }
        }
    }
}

fn drop_text(reason: DropReason) -> &'static str {
    match reason {
        DropReason::Truncated => "truncated",
        DropReason::Malformed => "not a VRRP datagram (or its header unknown)",
        DropReason::Peer => "not from a unicast peer",
        DropReason::Ttl => "TTL (hop limit) is not 255",
        DropReason::Version => "not VRRP version 3",
        DropReason::Type => "not an advertisement",
        DropReason::Checksum => "bad checksum",
        DropReason::Vrid => "another virtual router id",
        DropReason::Interface => "arrived on another interface",
    }
}

/// Runs a notify command with `sh -c`, without waiting for it.
fn notify(command: Option<&str>) {
    let Some(command) = command else { return };
    match tokio::process::Command::new("/bin/sh").arg("-c").arg(command).kill_on_drop(false).spawn() {
        Ok(mut child) => {
            let command = command.to_owned();
            tokio::spawn(async move {
                match child.wait().await {
                    Ok(status) if !status.success() => tracing::warn!("vrrp: `{command}` exited with {status}"),
                    Err(e) => tracing::warn!("vrrp: `{command}`: {e}"),
                    Ok(_) => {}
                }
            });
        }
        Err(e) => tracing::warn!("vrrp: cannot run `{command}`: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            interface: "eth0".into(),
            vrid: 51,
            family: Family::Ipv4,
            state: State::Master,
            priority: 150,
            primary: Some(IpAddr::from([10, 0, 0, 1])),
            master: Some(IpAddr::from([10, 0, 0, 1])),
            advert_interval_ms: 1000,
            master_advert_interval_ms: 1000,
            preempt: true,
            transitions: 2,
            adverts_sent: 10,
            adverts_received: 3,
            drops: Drops { ttl: 1, checksum: 2, ..Drops::default() },
            addresses: vec!["10.0.0.100/32 dev eth0".into()],
            excluded: vec![],
            unicast_peers: vec![],
        }
    }

    #[test]
    fn status_text() {
        assert_eq!(
            render_status(&status()),
            concat!(
                "VRRP vrid 51 IPv4 on eth0: MASTER\n",
                "  priority 150 (preempt), address 10.0.0.1, advert every 1 s\n",
                "  master 10.0.0.1 (this router), advert every 1 s\n",
                "  transitions 2, adverts sent 10, received 3\n",
                "  dropped ttl 1, checksum 2\n",
                "  addresses 10.0.0.100/32 dev eth0\n",
            )
        );
        let backup = Status {
            state: State::Backup,
            master: None,
            master_advert_interval_ms: 250,
            preempt: false,
            drops: Drops::default(),
            unicast_peers: vec![IpAddr::from([10, 0, 0, 2])],
            ..status()
        };
        let text = render_status(&backup);
        assert!(text.contains("vrid 51 IPv4 on eth0: BACKUP\n"), "{text}");
        assert!(text.contains("(nopreempt)"), "{text}");
        assert!(text.contains("master unknown, advert every 250 ms\n"), "{text}");
        assert!(text.contains("dropped none\n"), "{text}");
        assert!(text.contains("unicast peers 10.0.0.2\n"), "{text}");
        // IPv6: addresses as keepalived and ipvsadm print them, without
        // brackets; the excluded IPv4 one on a line of its own.
        let ll: IpAddr = "fe80::1".parse().unwrap();
        let v6 = Status {
            family: Family::Ipv6,
            primary: Some(ll),
            master: Some(ll),
            addresses: vec!["2001:db8::100/64 dev eth0".into()],
            excluded: vec!["10.0.0.100/32 dev eth0".into()],
            unicast_peers: vec!["fe80::2".parse().unwrap()],
            drops: Drops::default(),
            ..status()
        };
        let text = render_status(&v6);
        assert!(text.starts_with("VRRP vrid 51 IPv6 on eth0: MASTER\n  priority 150 (preempt), address fe80::1, advert"), "{text}");
        assert!(text.contains("  master fe80::1 (this router),"), "{text}");
        assert!(text.contains("  addresses 2001:db8::100/64 dev eth0\n  excluded (not IPv6: moved with the role, not advertised) 10.0.0.100/32 dev eth0\n"), "{text}");
        assert!(text.contains("unicast peers fe80::2\n"), "{text}");
        let json = serde_json::to_string(&v6).unwrap();
        assert!(json.contains("\"family\":\"ipv6\"") && json.contains("\"primary\":\"fe80::1\""), "{json}");
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), v6);
    }

    #[test]
    fn status_serde_round_trip() {
        let s = status();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"state\":\"master\""), "{json}");
        assert!(json.contains("\"type\":0"), "{json}");
        let back: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn drops_by_reason() {
        let mut d = Drops::default();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            *d.slot(*r) += i as u64 + 1;
        }
        assert_eq!(d.total(), 45);
        assert_eq!(d.get(DropReason::Type), 6);
        assert_eq!(d.iter()[8], (DropReason::Interface, 9));
    }

    #[test]
    fn drop_logs_are_rate_limited_per_reason() {
        let mut log = DropLog::default();
        let t0 = std::time::Instant::now();
        assert_eq!(log.admit(DropReason::Ttl, t0), Some(0));
        assert_eq!(log.admit(DropReason::Checksum, t0), Some(0));
        for i in 1..=5 {
            assert_eq!(log.admit(DropReason::Ttl, t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(log.admit(DropReason::Ttl, t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(log.admit(DropReason::Ttl, t0 + Duration::from_secs(11)), None);
        assert_eq!(log.admit(DropReason::Checksum, t0 + Duration::from_secs(11)), Some(0));
    }

    #[tokio::test]
    async fn spawn_needs_the_interface() {
        let e = Vrrp::spawn(VrrpConfig::new("xvrrp-none0", 1), Arc::new(|_| {})).err().unwrap();
        assert!(matches!(&e, Error::NoInterface(i) if i == "xvrrp-none0"), "{e}");
    }

    #[test]
    fn spawn_needs_a_runtime() {
        let e = Vrrp::spawn(VrrpConfig::new("lo", 1), Arc::new(|_| {})).err().unwrap();
        assert!(matches!(e, Error::NoRuntime), "{e}");
    }
}
