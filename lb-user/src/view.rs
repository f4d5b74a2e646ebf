//! What `xlvs list` shows: a snapshot of the running director, and its
//! rendering in `ipvsadm -L -n` layouts (ipvsadm 1.31), so that scripts which
//! parse ipvsadm keep working.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
};

use lb_common::sched::{SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3, Scheduler};
use serde::{Deserialize, Serialize};

use crate::{addr, config::VirtualAddr, timeouts::Timeouts};

/// The state of a director, as the control socket returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub conn_table_size: u32,
    pub services: Vec<ServiceView>,
    /// Reason counters of the data plane, by name.
    pub counters: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// "tcp" or "udp".
    pub protocol: String,
    /// `10.0.0.1:80`, `[2001:db8::1]:80`, or `10.50.0.0/16:80` and
    /// `[2001:db8:100::/64]:80` for range services.
    pub address: VirtualAddr,
    pub scheduler: String,
    /// The scheduler flags by the names ipvsadm prints (`sh-port`, ...).
    #[serde(default)]
    pub scheduler_flags: Vec<String>,
    /// The persistence timeout in seconds; absent when not persistent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<u32>,
    /// The persistence netmask, in the service's family (an IPv6 service's
    /// is the mask of its prefix length); absent when not persistent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netmask: Option<IpAddr>,
    pub reals: Vec<RealView>,
    /// The sum over the service's reals.
    pub stats: StatsView,
    /// The service's rates, estimated from `stats` as IPVS does
    /// (`crate::rate`); zero until the director has estimated them.
    #[serde(default)]
    pub rate: RateView,
}

impl ServiceView {
    /// What names this service across snapshots.
    #[must_use]
    pub fn key(&self) -> ServiceKey {
        ServiceKey { protocol: self.protocol.clone(), address: self.address }
    }
}

/// A service's identity: its protocol and address, as ipvsadm names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// "tcp" or "udp".
    pub protocol: String,
    pub address: VirtualAddr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealView {
    pub address: SocketAddr,
    /// "nat", "dr" or "tun".
    pub forward: String,
    pub weight: u32,
    /// ActiveConn.
    pub active: u64,
    /// InActConn.
    pub inactive: u64,
    /// PersistConn: the persistence templates that name this real.
    #[serde(default)]
    pub persistent_conns: u64,
    #[serde(default)]
    pub u_threshold: u32,
    #[serde(default)]
    pub l_threshold: u32,
    /// Over its upper threshold: no new connections until it drains.
    #[serde(default)]
    pub overloaded: bool,
    pub stats: StatsView,
    /// The real's rates, estimated from `stats` as IPVS does.
    #[serde(default)]
    pub rate: RateView,
    /// What the health checks say; `None` when the director has no checker
    /// for this real.
    #[serde(default)]
    pub health: Option<RealHealth>,
    /// False for a configured real that its failed checks took out of the
    /// service (`quiescent = false`): only `--health` and the metrics' `up`
    /// show it, as ipvsadm would not.
    #[serde(default = "in_service_default")]
    pub in_service: bool,
}

const fn in_service_default() -> bool {
    true
}

/// The health of one real, as `xlvs list --health` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RealHealth {
    /// Up: the scheduler may give it new connections.
    pub up: bool,
    /// The check's type name (`connect`, `http`, ..., `none`).
    pub check: String,
    /// Checks run since the director started.
    #[serde(default)]
    pub checks: u64,
    /// Checks failed since the director started.
    #[serde(default)]
    pub failures: u64,
    /// How long the last check took, in milliseconds.
    #[serde(default)]
    pub last_latency_ms: Option<f64>,
    /// Why the last failed check failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// This real is the service's fallback (sorry server), in the table only
    /// while every other real is down.
    #[serde(default)]
    pub fallback: bool,
}

// A latency is a measured duration, never NaN, so equality is reflexive and
// `Snapshot` (and the control protocol's `Response`) can stay `Eq`.
impl Eq for RealHealth {}

/// Sets the `health` of every real of `snapshot` to what `health` says of
/// it (given its service and the real as listed).
pub fn fill_health(snapshot: &mut Snapshot, mut health: impl FnMut(&ServiceKey, &RealView) -> Option<RealHealth>) {
    for service in &mut snapshot.services {
        let key = service.key();
        for real in &mut service.reals {
            real.health = health(&key, real);
        }
    }
}

/// One row of `xlvs list -c`: a connection, or a persistence template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnView {
    /// "tcp" or "udp".
    pub protocol: String,
    /// Seconds until it expires if it stays idle.
    pub expire: u64,
    /// The TCP state (`ESTABLISHED`, ...), `UDP` for UDP, and for a
    /// template `NONE` (TCP) or `UDP`, as IPVS names them.
    pub state: String,
    /// The client; for a template, the client network with port 0.
    pub source: SocketAddr,
    /// The VIP the client addressed; for a template, the service.
    #[serde(rename = "virtual")]
    pub vip: VirtualAddr,
    pub destination: SocketAddr,
    /// A persistence template rather than a connection.
    #[serde(default)]
    pub template: bool,
}

/// The scheduler flags of a service as ipvsadm 1.31's
/// `print_sched_flags()` names them: sh's and mh's own names for flags 1
/// and 2, `flag-N` otherwise.
#[must_use]
pub fn sched_flag_names(scheduler: Scheduler, flags: u8) -> Vec<String> {
    let (one, two) = match scheduler {
        Scheduler::Sh => ("sh-fallback", "sh-port"),
        Scheduler::Mh => ("mh-fallback", "mh-port"),
        _ => ("flag-1", "flag-2"),
    };
    [(SVC_F_SCHED1, one), (SVC_F_SCHED2, two), (SVC_F_SCHED3, "flag-3")]
        .into_iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, name)| name.to_owned())
        .collect()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsView {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
}

/// Per-second rates, as ipvsadm's `--rate` shows them: connections,
/// packets and bytes, in and out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateView {
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

impl std::ops::Add for StatsView {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            conns: self.conns + o.conns,
            inpkts: self.inpkts + o.inpkts,
            outpkts: self.outpkts + o.outpkts,
            inbytes: self.inbytes + o.inbytes,
            outbytes: self.outbytes + o.outbytes,
        }
    }
}

/// Which `ipvsadm -L` layout to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Forward, Weight, ActiveConn, InActConn.
    Default,
    /// Conns, InPkts, OutPkts, InBytes, OutBytes.
    Stats { exact: bool },
    /// Uthreshold, Lthreshold, ActiveConn, InActConn.
    Thresholds,
    /// Weight, PersistConn, ActiveConn, InActConn.
    PersistentConn,
    /// CPS, InPPS, OutPPS, InBPS, OutBPS.
    Rate { exact: bool },
    /// Not ipvsadm's: the default layout with each real's health after its
    /// counters (`xlvs list --health`).
    Health,
}

fn forward_label(forward: &str) -> &'static str {
    match forward {
        "nat" => "Masq",
        "tun" => "Tunnel",
        "dr" => "Route",
        "local" => "Local",
        _ => "?",
    }
}

fn protocol_label(protocol: &str) -> &'static str {
    match protocol {
        "tcp" => "TCP",
        "udp" => "UDP",
        _ => "?",
    }
}

/// ipvsadm's `print_largenum`: 9 columns, with K/M/G/T from 10^8 up unless
/// `--exact`.
fn largenum(out: &mut String, n: u64, exact: bool) {
    let _ = if exact {
        let width = n.to_string().len().max(8) + 1;
        write!(out, "{n:>width$}")
    } else if n < 100_000_000 {
        write!(out, "{n:>9}")
    } else if n < 1_000_000_000 {
        write!(out, "{:>8}K", n / 1_000)
    } else if n < 100_000_000_000 {
        write!(out, "{:>8}M", n / 1_000_000)
    } else if n < 100_000_000_000_000 {
        write!(out, "{:>8}G", n / 1_000_000_000)
    } else {
        write!(out, "{:>8}T", n / 1_000_000_000_000)
    };
}

fn stats_columns(out: &mut String, s: &StatsView, exact: bool) {
    for n in [s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes] {
        largenum(out, n, exact);
    }
}

/// The columns `--health` adds after a real's InActConn, in the default
/// layout's style (left-aligned, fixed widths); the last error, unpadded,
/// ends the line.
const HEALTH_COLUMNS: &str = "Health   Check    Checks     Fails      Latency    LastError";

fn health_columns(out: &mut String, health: Option<&RealHealth>) {
    let Some(h) = health else {
        let _ = write!(out, " {:<8} {:<8} {:<10} {:<10} {:<10} -", "-", "-", "-", "-", "-");
        return;
    };
    let state = if h.fallback {
        "fallback"
    } else if h.up {
        "up"
    } else {
        "down"
    };
    let latency = h.last_latency_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1}ms"));
    // One line per real, whatever the checker's message holds.
    let error = h.last_error.as_deref().map_or_else(|| "-".to_owned(), |e| e.replace(char::is_control, " "));
    let _ = write!(out, " {state:<8} {:<8} {:<10} {:<10} {latency:<10} {error}", h.check, h.checks, h.failures);
}

/// Renders a snapshot like `ipvsadm -L -n` (ipvsadm 1.31's
/// `print_title` and `print_service_entry`): services sorted as libipvs
/// sorts them, by family (IPv4 first), protocol, address and port, and
/// reals by family, address and port. An IPv6 address is written
/// `[addr]:port` in the same padded columns; a longer one pushes them.
#[must_use]
pub fn render(snapshot: &Snapshot, layout: Layout) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "IP Virtual Server version 1.2.1 (size={})", snapshot.conn_table_size);
    // The titles are ipvsadm's `"%-33s %8s %8s %8s %8s %8s"` and
    // `"%-33s %-10s ..."` over "Prot LocalAddress:Port".
    match layout {
        Layout::Default => out.push_str(
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
        ),
        Layout::Stats { .. } => out.push_str(
            "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n  -> RemoteAddress:Port\n",
        ),
        Layout::Rate { .. } => out.push_str(
            "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n  -> RemoteAddress:Port\n",
        ),
        Layout::Thresholds => out.push_str(
            "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn\n  -> RemoteAddress:Port\n",
        ),
        Layout::PersistentConn => out.push_str(
            "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn\n  -> RemoteAddress:Port\n",
        ),
        Layout::Health => {
            let _ = writeln!(
                out,
                "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn  {HEALTH_COLUMNS}"
            );
        }
    }
    let mut services: Vec<&ServiceView> = snapshot.services.iter().collect();
    services.sort_by_key(|s| service_order(&s.protocol, &s.address));
    for service in services {
        let name = format!("{:<4} {}", protocol_label(&service.protocol), service.address);
        match layout {
            Layout::Stats { exact } => {
                let _ = write!(out, "{name:<33}");
                stats_columns(&mut out, &service.stats, exact);
                out.push('\n');
            }
            Layout::Rate { exact } => {
                let _ = write!(out, "{name:<33}");
                let r = &service.rate;
                for n in [r.cps, r.inpps, r.outpps, r.inbps, r.outbps] {
                    largenum(&mut out, n, exact);
                }
                out.push('\n');
            }
            // Every other layout prints the service as the default one does.
            _ => {
                out.push_str(&name);
                service_flags(&mut out, service);
                out.push('\n');
            }
        }
        let mut reals: Vec<&RealView> =
            service.reals.iter().filter(|r| r.in_service || layout == Layout::Health).collect();
        // IpAddr orders IPv4 before IPv6, as libipvs's family-first compare.
        reals.sort_by_key(|r| (r.address.ip(), r.address.port()));
        for real in reals {
            let address = real.address.to_string();
            let _ = match layout {
                Layout::Default => writeln!(
                    out,
                    "  -> {address:<28} {:<7} {:<6} {:<10} {:<10}",
                    forward_label(&real.forward),
                    real.weight,
                    real.active,
                    real.inactive
                ),
                Layout::Stats { exact } => {
                    let _ = write!(out, "  -> {address:<28}");
                    stats_columns(&mut out, &real.stats, exact);
                    writeln!(out)
                }
                Layout::Rate { exact } => {
                    // ipvsadm prints a real's CPS and PPS with a plain
                    // `%8llu` (never a suffix) and only its BPS through
                    // print_largenum, unlike the service line.
                    let r = &real.rate;
                    let _ = write!(out, "  -> {address:<28} {:>8} {:>8} {:>8}", r.cps, r.inpps, r.outpps);
                    largenum(&mut out, r.inbps, exact);
                    largenum(&mut out, r.outbps, exact);
                    writeln!(out)
                }
                Layout::Thresholds => writeln!(
                    out,
                    "  -> {address:<28} {:<10} {:<10} {:<10} {:<10}",
                    real.u_threshold, real.l_threshold, real.active, real.inactive
                ),
                Layout::PersistentConn => writeln!(
                    out,
                    "  -> {address:<28} {:<9} {:<11} {:<10} {:<10}",
                    real.weight, real.persistent_conns, real.active, real.inactive
                ),
                Layout::Health => {
                    let _ = write!(
                        out,
                        "  -> {address:<28} {:<7} {:<6} {:<10} {:<10}",
                        forward_label(&real.forward),
                        real.weight,
                        real.active,
                        real.inactive
                    );
                    health_columns(&mut out, real.health.as_ref());
                    writeln!(out)
                }
            };
        }
    }
    out
}

/// How services are listed: by family (IPv4 first), protocol, address and
/// port (libipvs's `ipvs_cmp_services`), one order for every view.
#[must_use]
pub fn service_order<'a>(protocol: &'a str, vip: &VirtualAddr) -> (u8, &'a str, IpAddr, u16, u8) {
    (addr::family(vip.addr), protocol, vip.addr, vip.port, vip.prefix_len)
}

/// What follows the address on a service line: the scheduler, its flags in
/// parentheses, `persistent N` and `mask M`: IPv4's netmask
/// (`255.255.255.0`), IPv6's prefix length (`64`), neither at /32 or /128.
fn service_flags(out: &mut String, service: &ServiceView) {
    let _ = write!(out, " {}", service.scheduler);
    if !service.scheduler_flags.is_empty() {
        let _ = write!(out, " ({})", service.scheduler_flags.join(","));
    }
    if let Some(timeout) = service.persistent {
        let _ = write!(out, " persistent {timeout}");
        match service.netmask.map(|m| (m, addr::mask_prefix(m))) {
            Some((IpAddr::V4(_), Some(32)) | (IpAddr::V6(_), Some(128))) | None => {}
            Some((IpAddr::V6(_), Some(len))) => {
                let _ = write!(out, " mask {len}");
            }
            Some((mask, _)) => {
                let _ = write!(out, " mask {mask}");
            }
        }
    }
}

/// `ipvsadm -L -c -n`: connections and templates, sorted by protocol,
/// virtual address, client and real.
#[must_use]
pub fn render_connections(conns: &[ConnView]) -> String {
    let mut out = String::from("IPVS connection entries\n");
    out.push_str("pro expire state       source             virtual            destination\n");
    let mut rows: Vec<&ConnView> = conns.iter().collect();
    rows.sort_by_key(|c| {
        (
            addr::family(c.vip.addr),
            protocol_label(&c.protocol),
            c.vip.addr,
            c.vip.port,
            c.vip.prefix_len,
            c.source.ip(),
            c.source.port(),
            c.template,
        )
    });
    for c in rows {
        let expire = format!("{:02}:{:02}", c.expire / 60, c.expire % 60);
        let _ = writeln!(
            out,
            "{:<3} {expire:<6} {:<11} {:<18} {:<18} {}",
            protocol_label(&c.protocol),
            c.state,
            c.source.to_string(),
            c.vip.to_string(),
            c.destination
        );
    }
    out
}

/// `ipvsadm -L --timeout`.
#[must_use]
pub fn render_timeout(t: &Timeouts) -> String {
    format!("Timeout (tcp tcpfin udp): {} {} {}\n", t.tcp, t.tcpfin, t.udp)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn real(a: &str, f: &str, w: u32, act: u64, ina: u64, c: u64) -> RealView {
        RealView {
            address: a.parse().unwrap(),
            forward: f.into(),
            weight: w,
            active: act,
            inactive: ina,
            persistent_conns: 0,
            u_threshold: 0,
            l_threshold: 0,
            overloaded: false,
            stats: stats(c),
            rate: RateView::default(),
            health: None,
            in_service: true,
        }
    }

    fn stats(c: u64) -> StatsView {
        StatsView { conns: c, inpkts: c * 6, outpkts: c * 5, inbytes: c * 400, outbytes: c * 600 }
    }

    fn service(protocol: &str, address: &str, scheduler: &str, reals: Vec<RealView>, conns: u64) -> ServiceView {
        ServiceView {
            protocol: protocol.into(),
            address: address.parse().unwrap(),
            scheduler: scheduler.into(),
            scheduler_flags: Vec::new(),
            persistent: None,
            netmask: None,
            reals,
            stats: stats(conns),
            rate: RateView::default(),
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            conn_table_size: 4096,
            services: vec![
                service("udp", "10.100.0.100:53", "rr", vec![real("10.0.1.11:53", "nat", 1, 0, 2, 2)], 2),
                service(
                    "tcp",
                    "10.100.0.100:80",
                    "rr",
                    vec![real("10.0.1.12:8080", "nat", 2, 1, 0, 1), real("10.0.1.11:8080", "nat", 1, 0, 3, 3)],
                    4,
                ),
                service(
                    "tcp",
                    "10.100.0.9:80",
                    "rr",
                    vec![real("10.0.1.13:80", "dr", 1, 0, 0, 0), real("10.0.1.2:80", "tun", 0, 0, 0, 0)],
                    0,
                ),
            ],
            counters: BTreeMap::new(),
        }
    }

    /// A snapshot with persistence, scheduler flags, a range and thresholds.
    fn rich() -> Snapshot {
        let mut wlc = service("tcp", "10.0.0.1:80", "wlc", vec![real("10.0.1.2:80", "dr", 1, 0, 0, 0)], 0);
        wlc.persistent = Some(360);
        wlc.netmask = Some(Ipv4Addr::BROADCAST.into());
        let mut sh = service("tcp", "10.0.0.2:80", "sh", vec![real("10.0.1.2:80", "dr", 3, 5, 7, 0)], 0);
        sh.scheduler_flags = sched_flag_names(Scheduler::Sh, SVC_F_SCHED1 | SVC_F_SCHED2);
        sh.persistent = Some(600);
        sh.netmask = Some(Ipv4Addr::new(255, 255, 255, 0).into());
        sh.reals[0].u_threshold = 10000;
        sh.reals[0].l_threshold = 100;
        sh.reals[0].persistent_conns = 4;
        let range = service("tcp", "10.50.0.0/16:80", "dh", vec![real("10.0.1.3:80", "nat", 1, 0, 0, 0)], 0);
        Snapshot { conn_table_size: 4096, services: vec![range, sh, wlc], counters: BTreeMap::new() }
    }

    #[test]
    fn default_layout_matches_ipvsadm() {
        let expected = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.100.0.9:80 rr
  -> 10.0.1.2:80                  Tunnel  0      0          0         
  -> 10.0.1.13:80                 Route   1      0          0         
TCP  10.100.0.100:80 rr
  -> 10.0.1.11:8080               Masq    1      0          3         
  -> 10.0.1.12:8080               Masq    2      1          0         
UDP  10.100.0.100:53 rr
  -> 10.0.1.11:53                 Masq    1      0          2         
";
        assert_eq!(render(&snapshot(), Layout::Default), expected);
    }

    #[test]
    fn service_lines_carry_flags_persistence_mask_and_ranges() {
        let text = render(&rich(), Layout::Default);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[3], "TCP  10.0.0.1:80 wlc persistent 360");
        assert_eq!(lines[5], "TCP  10.0.0.2:80 sh (sh-fallback,sh-port) persistent 600 mask 255.255.255.0");
        assert_eq!(lines[7], "TCP  10.50.0.0/16:80 dh");
        assert_eq!(sched_flag_names(Scheduler::Mh, SVC_F_SCHED2 | SVC_F_SCHED3), ["mh-port", "flag-3"]);
        assert_eq!(sched_flag_names(Scheduler::Rr, SVC_F_SCHED1), ["flag-1"]);
        assert!(sched_flag_names(Scheduler::Wlc, 0).is_empty());
    }

    #[test]
    fn thresholds_and_persistent_conn_layouts_match_ipvsadm() {
        let text = render(&rich(), Layout::Thresholds);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn");
        assert_eq!(lines[2], "  -> RemoteAddress:Port");
        assert_eq!(lines[5], "TCP  10.0.0.2:80 sh (sh-fallback,sh-port) persistent 600 mask 255.255.255.0");
        assert_eq!(lines[6], "  -> 10.0.1.2:80                  10000      100        5          7         ");
        let text = render(&rich(), Layout::PersistentConn);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn");
        assert_eq!(lines[2], "  -> RemoteAddress:Port");
        assert_eq!(lines[6], "  -> 10.0.1.2:80                  3         4           5          7         ");
    }

    #[test]
    fn stats_layout_matches_ipvsadm() {
        let text = render(&snapshot(), Layout::Stats { exact: false });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes");
        assert_eq!(lines[2], "  -> RemoteAddress:Port");
        assert_eq!(lines[6], "TCP  10.100.0.100:80                     4       24       20     1600     2400");
        assert_eq!(lines[7], "  -> 10.0.1.11:8080                      3       18       15     1200     1800");
    }

    /// `snapshot()` with rates on the TCP :80 service and its reals.
    fn with_rates() -> Snapshot {
        let mut snap = snapshot();
        let svc = &mut snap.services[1];
        svc.rate = RateView { cps: 12, inpps: 345, outpps: 300, inbps: 123_456_789, outbps: 98_765 };
        svc.reals[0].rate = RateView { cps: 123_456_789, inpps: 5, outpps: 4, inbps: 1_234_567_890, outbps: 0 };
        svc.reals[1].rate = RateView { cps: 7, inpps: 200, outpps: 180, inbps: 80_000, outbps: 60_000 };
        snap
    }

    #[test]
    fn rate_layout_matches_ipvsadm() {
        // ipvsadm 1.31: the service's five rates through print_largenum, a
        // real's CPS, InPPS and OutPPS as plain `%8llu` (no suffix, however
        // large) and only its InBPS and OutBPS through print_largenum.
        let expected = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS
  -> RemoteAddress:Port
TCP  10.100.0.9:80                       0        0        0        0        0
  -> 10.0.1.2:80                         0        0        0        0        0
  -> 10.0.1.13:80                        0        0        0        0        0
TCP  10.100.0.100:80                    12      345      300  123456K    98765
  -> 10.0.1.11:8080                      7      200      180    80000    60000
  -> 10.0.1.12:8080               123456789        5        4    1234M        0
UDP  10.100.0.100:53                     0        0        0        0        0
  -> 10.0.1.11:53                        0        0        0        0        0
";
        assert_eq!(render(&with_rates(), Layout::Rate { exact: false }), expected);
        let exact = render(&with_rates(), Layout::Rate { exact: true });
        let lines: Vec<&str> = exact.lines().collect();
        assert_eq!(lines[6], "TCP  10.100.0.100:80                    12      345      300 123456789    98765");
        assert_eq!(lines[8], "  -> 10.0.1.12:8080               123456789        5        4 1234567890        0");
        assert_eq!(lines[7], "  -> 10.0.1.11:8080                      7      200      180    80000    60000");
    }

    #[test]
    fn exact_stats_print_every_digit() {
        let mut snap = snapshot();
        snap.services[1].stats.inbytes = 12_345_678_901;
        let text = render(&snap, Layout::Stats { exact: false });
        assert_eq!(
            text.lines().nth(6),
            Some("TCP  10.100.0.100:80                     4       24       20   12345M     2400")
        );
        let text = render(&snap, Layout::Stats { exact: true });
        assert_eq!(
            text.lines().nth(6),
            Some("TCP  10.100.0.100:80                     4       24       20 12345678901     2400")
        );
    }

    #[test]
    fn health_layout_follows_each_real_with_its_checks() {
        let mut snap = snapshot();
        let health = |up, check: &str, checks, failures, latency, error: Option<&str>| {
            Some(RealHealth {
                up,
                check: check.into(),
                checks,
                failures,
                last_latency_ms: latency,
                last_error: error.map(Into::into),
                fallback: false,
            })
        };
        snap.services[1].reals[1].health = health(true, "http", 120, 2, Some(1.34), None);
        snap.services[1].reals[0].health =
            health(false, "http", 120, 17, None, Some("connection refused\n(os error 111)"));
        snap.services[2].reals[0].health = health(true, "none", 0, 0, None, None);
        snap.services[2].reals[0].health.as_mut().unwrap().fallback = true;
        let expected = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn  Health   Check    Checks     Fails      Latency    LastError
TCP  10.100.0.9:80 rr
  -> 10.0.1.2:80                  Tunnel  0      0          0          -        -        -          -          -          -
  -> 10.0.1.13:80                 Route   1      0          0          fallback none     0          0          -          -
TCP  10.100.0.100:80 rr
  -> 10.0.1.11:8080               Masq    1      0          3          up       http     120        2          1.3ms      -
  -> 10.0.1.12:8080               Masq    2      1          0          down     http     120        17         -          connection refused (os error 111)
UDP  10.100.0.100:53 rr
  -> 10.0.1.11:53                 Masq    1      0          2          -        -        -          -          -          -
";
        assert_eq!(render(&snap, Layout::Health), expected);
        // The same health, set through fill_health as the director would.
        let by_real: std::collections::HashMap<(ServiceKey, SocketAddr), RealHealth> = snap
            .services
            .iter()
            .flat_map(|s| s.reals.iter().filter_map(|r| Some(((s.key(), r.address), r.health.clone()?))))
            .collect();
        let mut filled = snapshot();
        fill_health(&mut filled, |service, real| by_real.get(&(service.clone(), real.address)).cloned());
        assert_eq!(filled, snap);
        // The ipvsadm layouts do not change.
        assert_eq!(render(&snap, Layout::Default), render(&snapshot(), Layout::Default));

        let json = serde_json::to_value(&snap).unwrap();
        let real = &json["services"][1]["reals"][0];
        assert_eq!(real["health"]["up"], false);
        assert_eq!(real["health"]["last_error"], "connection refused\n(os error 111)");
        assert_eq!(json["services"][0]["reals"][0]["health"], serde_json::Value::Null);
        let back: Snapshot = serde_json::from_value(json).unwrap();
        assert_eq!(back, snap);
    }

    #[test]
    fn json_carries_rates_and_reads_snapshots_without_them() {
        let json = serde_json::to_value(with_rates()).unwrap();
        assert_eq!(json["services"][1]["rate"]["inbps"], 123_456_789);
        assert_eq!(json["services"][1]["reals"][0]["rate"]["cps"], 123_456_789);
        // A snapshot from a director that knows no rates or health.
        let mut old = json;
        for service in old["services"].as_array_mut().unwrap() {
            service.as_object_mut().unwrap().remove("rate");
            for real in service["reals"].as_array_mut().unwrap() {
                real.as_object_mut().unwrap().remove("rate");
                real.as_object_mut().unwrap().remove("health");
            }
        }
        let back: Snapshot = serde_json::from_value(old).unwrap();
        assert_eq!(back, snapshot());
    }

    #[test]
    fn connections_layout_matches_ipvsadm() {
        let conn = |proto: &str, expire, state: &str, src: &str, vip: &str, dst: &str, template| ConnView {
            protocol: proto.into(),
            expire,
            state: state.into(),
            source: src.parse().unwrap(),
            vip: vip.parse().unwrap(),
            destination: dst.parse().unwrap(),
            template,
        };
        let rows = [
            conn("udp", 299, "UDP", "10.1.0.2:5353", "10.100.0.100:53", "10.0.1.11:53", false),
            conn("tcp", 899, "ESTABLISHED", "10.1.0.2:40001", "10.100.0.100:80", "10.0.1.12:8080", false),
            conn("tcp", 360, "NONE", "10.1.0.0:0", "10.100.0.100:80", "10.0.1.12:8080", true),
            conn("tcp", 5, "TIME_WAIT", "10.1.0.2:40000", "10.50.0.0/16:80", "10.0.1.11:80", false),
        ];
        let expected = "\
IPVS connection entries
pro expire state       source             virtual            destination
TCP 00:05  TIME_WAIT   10.1.0.2:40000     10.50.0.0/16:80    10.0.1.11:80
TCP 06:00  NONE        10.1.0.0:0         10.100.0.100:80    10.0.1.12:8080
TCP 14:59  ESTABLISHED 10.1.0.2:40001     10.100.0.100:80    10.0.1.12:8080
UDP 04:59  UDP         10.1.0.2:5353      10.100.0.100:53    10.0.1.11:53
";
        assert_eq!(render_connections(&rows), expected);
        let json = serde_json::to_value(&rows[3]).unwrap();
        assert_eq!(json["virtual"], "10.50.0.0/16:80");
        assert_eq!(json["source"], "10.1.0.2:40000");
    }

    #[test]
    fn timeout_line_matches_ipvsadm() {
        assert_eq!(render_timeout(&Timeouts::default()), "Timeout (tcp tcpfin udp): 900 120 300\n");
    }

    #[test]
    fn json_keeps_addresses_as_strings_and_round_trips() {
        let rich = rich();
        let json = serde_json::to_value(&rich).unwrap();
        assert_eq!(json["services"][0]["address"], "10.50.0.0/16:80");
        assert_eq!(json["services"][1]["scheduler_flags"][1], "sh-port");
        assert_eq!(json["services"][1]["netmask"], "255.255.255.0");
        assert_eq!(json["services"][1]["reals"][0]["u_threshold"], 10000);
        assert!(json["services"][0].get("persistent").is_none());
        let back: Snapshot = serde_json::from_value(json).unwrap();
        assert_eq!(back, rich);
    }

    #[test]
    fn large_numbers_get_suffixes_unless_exact() {
        let mut s = String::new();
        largenum(&mut s, 99_999_999, false);
        largenum(&mut s, 123_456_789, false);
        largenum(&mut s, 12_345_678_901, false);
        assert_eq!(s, " 99999999  123456K   12345M");
        let mut e = String::new();
        largenum(&mut e, 12_345_678_901, true);
        largenum(&mut e, 7, true);
        assert_eq!(e, " 12345678901        7");
    }

    /// IPv4 and IPv6 services side by side, as a dual-stack director has them.
    fn dual_stack() -> Snapshot {
        let v6 = service(
            "tcp",
            "[2001:db8::100]:80",
            "wlc",
            vec![real("[2001:db8:1::12]:8080", "nat", 2, 1, 0, 1), real("[2001:db8:1::11]:8080", "nat", 1, 0, 3, 3)],
            4,
        );
        let mut v6p = service("udp", "[2001:db8::100]:53", "rr", vec![real("[2001:db8:1::11]:53", "dr", 1, 0, 0, 0)], 0);
        v6p.persistent = Some(300);
        v6p.netmask = Some(crate::addr::prefix_mask(v6p.address.addr, 64));
        let mut whole = service("tcp", "[2001:db8::200]:443", "sh", vec![real("[2001:db8:1::13]:443", "tun", 1, 0, 0, 0)], 0);
        whole.persistent = Some(60);
        whole.netmask = Some(crate::addr::prefix_mask(whole.address.addr, 128));
        let range = service("tcp", "[2001:db8:100::/64]:80", "dh", vec![real("[2001:db8:1::14]:80", "dr", 1, 0, 0, 0)], 0);
        let v4 = service("udp", "10.100.0.100:53", "rr", vec![real("10.0.1.11:53", "nat", 1, 0, 2, 2)], 2);
        Snapshot { conn_table_size: 4096, services: vec![v6, range, v6p, whole, v4], counters: BTreeMap::new() }
    }

    #[test]
    fn ipv6_default_layout_matches_ipvsadm() {
        // IPv4 first (libipvs compares the family first), then protocol,
        // address and port; `[addr]:port` in ipvsadm's %-28s, pushing the
        // columns when longer; `mask 64` for an IPv6 prefix, none at /128.
        let expected = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
UDP  10.100.0.100:53 rr
  -> 10.0.1.11:53                 Masq    1      0          2         
TCP  [2001:db8::100]:80 wlc
  -> [2001:db8:1::11]:8080        Masq    1      0          3         
  -> [2001:db8:1::12]:8080        Masq    2      1          0         
TCP  [2001:db8::200]:443 sh persistent 60
  -> [2001:db8:1::13]:443         Tunnel  1      0          0         
TCP  [2001:db8:100::/64]:80 dh
  -> [2001:db8:1::14]:80          Route   1      0          0         
UDP  [2001:db8::100]:53 rr persistent 300 mask 64
  -> [2001:db8:1::11]:53          Route   1      0          0         
";
        assert_eq!(render(&dual_stack(), Layout::Default), expected);
    }

    #[test]
    fn ipv6_long_addresses_push_the_columns() {
        let mut snap = dual_stack();
        snap.services[0].reals[0].address = "[2001:db8:aaaa:bbbb:cccc:dddd:eeee:12]:8080".parse().unwrap();
        let text = render(&snap, Layout::Default);
        assert!(text.contains("\n  -> [2001:db8:aaaa:bbbb:cccc:dddd:eeee:12]:8080 Masq    2      1          0         \n"), "{text}");
        let text = render(&snap, Layout::Stats { exact: false });
        assert!(text.contains("\nTCP  [2001:db8::100]:80                  4       24       20     1600     2400\n"), "{text}");
        assert!(text.contains("\n  -> [2001:db8:1::11]:8080               3       18       15     1200     1800\n"), "{text}");
        assert!(text.contains("\n  -> [2001:db8:aaaa:bbbb:cccc:dddd:eeee:12]:8080        1        6        5      400      600\n"), "{text}");
    }

    #[test]
    fn ipv6_rate_and_persistent_conn_layouts() {
        let mut snap = dual_stack();
        snap.services[0].rate = RateView { cps: 12, inpps: 345, outpps: 300, inbps: 123_456_789, outbps: 98_765 };
        snap.services[0].reals[1].rate = RateView { cps: 7, inpps: 200, outpps: 180, inbps: 80_000, outbps: 60_000 };
        snap.services[0].reals[1].persistent_conns = 4;
        let text = render(&snap, Layout::Rate { exact: false });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[5], "TCP  [2001:db8::100]:80                 12      345      300  123456K    98765");
        assert_eq!(lines[6], "  -> [2001:db8:1::11]:8080               7      200      180    80000    60000");
        let text = render(&snap, Layout::PersistentConn);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[6], "  -> [2001:db8:1::11]:8080        1         4           0          3         ");
        assert_eq!(lines[12], "UDP  [2001:db8::100]:53 rr persistent 300 mask 64");
    }

    #[test]
    fn ipv6_connections_and_json() {
        let conn = |src: &str, vip: &str, dst: &str| ConnView {
            protocol: "tcp".into(),
            expire: 899,
            state: "ESTABLISHED".into(),
            source: src.parse().unwrap(),
            vip: vip.parse().unwrap(),
            destination: dst.parse().unwrap(),
            template: false,
        };
        let rows = [
            conn("[2001:db8:ff::2]:40001", "[2001:db8::100]:80", "[2001:db8:1::11]:8080"),
            conn("10.1.0.2:40001", "10.100.0.100:80", "10.0.1.12:8080"),
        ];
        let expected = "\
IPVS connection entries
pro expire state       source             virtual            destination
TCP 14:59  ESTABLISHED 10.1.0.2:40001     10.100.0.100:80    10.0.1.12:8080
TCP 14:59  ESTABLISHED [2001:db8:ff::2]:40001 [2001:db8::100]:80 [2001:db8:1::11]:8080
";
        assert_eq!(render_connections(&rows), expected);
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!((json["source"].as_str(), json["virtual"].as_str()), (Some("[2001:db8:ff::2]:40001"), Some("[2001:db8::100]:80")));

        let snap = dual_stack();
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json["services"][0]["address"], "[2001:db8::100]:80");
        assert_eq!(json["services"][1]["address"], "[2001:db8:100::/64]:80");
        assert_eq!(json["services"][0]["reals"][0]["address"], "[2001:db8:1::12]:8080");
        assert_eq!(json["services"][2]["netmask"], "ffff:ffff:ffff:ffff::");
        let back: Snapshot = serde_json::from_value(json).unwrap();
        assert_eq!(back, snap);
    }
}
