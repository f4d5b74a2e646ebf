//! The controller's half of connection housekeeping, run every couple of
//! seconds: the data plane creates entries, the sweeper expires them.
//!
//! - Idle connections go after their state's timeout (`Timeouts`), and are
//!   uncounted from their real's ActiveConn or InActConn, which may clear
//!   its OVERLOAD flag (IPVS's `ip_vs_unbind_dest()`).
//! - NAT reply entries go with their client entry.
//! - A persistence template goes once it has been unused for the service's
//!   persistence timeout and no live connection comes from its client
//!   network (IPVS keeps a template while it controls connections); its
//!   real's PersistConn drops.
//! - lblc/lblcr cache entries go when idle for the service's `lblc_expire`,
//!   and, when a service's cache outgrows IPVS's bound, entries idle for 6
//!   minutes go first (`ip_vs_lblc_check_expire()`).
//!
//! The decisions are pure functions of the entries and the clock, tested
//! here; [`sweep`] applies them to the maps.

use std::collections::{HashMap, HashSet};

use lb_common::{
    AddrKey, CONN_F_INACTIVE, CONN_F_REPLY, Conn, ConnKey, Template,
    sched::lblc::{LBLC_ENTRY_TIMEOUT_SECS, entry_expired},
};

use crate::{dataplane::Dataplane, dataplane::Installed, timeouts::Timeouts};

/// `tbl->max_size` of lblc and lblcr: 16 entries for each of the 1024
/// buckets of a service's cache. Beyond it, entries idle for
/// `ENTRY_TIMEOUT` go before their expiration.
pub const CACHE_MAX_SIZE: usize = 16 * 1024;

const NS: u64 = 1_000_000_000;

/// What the sweeper needs to know of each service and real, by id.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    services: HashMap<u32, ServiceRule>,
    reals: HashMap<u32, RealRule>,
}

#[derive(Clone, Copy, Debug)]
struct RealRule {
    service: u32,
    u_threshold: u32,
    l_threshold: u32,
}

#[derive(Clone, Copy, Debug)]
struct ServiceRule {
    /// 0 when the service is not persistent.
    persist_timeout_ns: u64,
    /// The persistence netmask as the maps hold addresses (either family).
    mask: [u32; 4],
    lblc_expire_ns: u64,
}

impl Rules {
    #[must_use]
    pub fn new(installed: &[Installed]) -> Self {
        let mut rules = Self::default();
        for s in installed {
            let (persist_timeout_ns, mask) = s
                .service
                .persistence
                .map_or((0, [u32::MAX; 4]), |p| (u64::from(p.timeout) * NS, crate::addr::to_map(p.netmask).0));
            let lblc_expire_ns = u64::from(s.service.lblc_expire) * NS;
            rules.services.insert(s.id, ServiceRule { persist_timeout_ns, mask, lblc_expire_ns });
            for (real, id) in s.service.reals.iter().zip(&s.real_ids) {
                rules.reals.insert(*id, RealRule { service: s.id, u_threshold: real.u_threshold, l_threshold: real.l_threshold });
            }
        }
        rules
    }

    /// A real's upper and lower thresholds.
    fn thresholds(&self, real: u32) -> (u32, u32) {
        self.reals.get(&real).map_or((0, 0), |r| (r.u_threshold, r.l_threshold))
    }

    /// Whether a connection's real has left its service (removed by an
    /// edit, a reload or a failed check): such a connection is dropped by
    /// the data plane and removed at once by the sweeper, as IPVS's
    /// `expire_nodest_conn`.
    fn stale(&self, conn: &Conn) -> bool {
        self.reals.get(&conn.real).is_none_or(|r| r.service != conn.service)
    }
}

/// Whether `conn` is a client entry (one per connection, the one counted in
/// `REAL_CONNS`) that has been idle longer than its state's timeout.
#[must_use]
pub fn client_expired(key: &ConnKey, conn: &Conn, now: u64, timeouts: &Timeouts) -> bool {
    conn.flags & CONN_F_REPLY == 0 && idle_ns(conn.last_seen_ns, now) > timeouts.ns(key.proto, conn.state)
}

fn idle_ns(last: u64, now: u64) -> u64 {
    now.saturating_sub(last)
}

/// The client entry that a NAT reply entry belongs to.
#[must_use]
pub fn client_key(reply_key: &ConnKey, reply: &Conn) -> ConnKey {
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

/// The client networks of persistent services that still have a live
/// connection: `(service id, client address & netmask)`.
fn live_networks<'a>(clients: impl Iterator<Item = (&'a ConnKey, &'a Conn)>, rules: &Rules) -> HashSet<(u32, [u32; 4])> {
    clients
        .filter(|(_, c)| c.flags & CONN_F_REPLY == 0)
        .filter_map(|(k, c)| {
            let rule = rules.services.get(&c.service).filter(|r| r.persist_timeout_ns != 0)?;
            Some((c.service, std::array::from_fn(|i| k.saddr[i] & rule.mask[i])))
        })
        .collect()
}

/// Whether a template has outlived its service's persistence timeout with no
/// live connection from its client network. A template of a service that
/// is no longer persistent (or no longer there) goes at once.
fn template_expired(key: &AddrKey, t: &Template, now: u64, rules: &Rules, live: &HashSet<(u32, [u32; 4])>) -> bool {
    let Some(rule) = rules.services.get(&key.service).filter(|r| r.persist_timeout_ns != 0) else {
        return true;
    };
    idle_ns(t.last_used_ns, now) > rule.persist_timeout_ns && !live.contains(&(key.service, key.addr))
}

/// The lblc or lblcr cache entries to remove: those idle for their
/// service's expiration; then, for a service whose cache is over
/// [`CACHE_MAX_SIZE`], up to `(count - max) * 4 / 3` (at most half the
/// bound) of the entries idle for 6 minutes, as `ip_vs_lblc_check_expire()`
/// frees them.
#[must_use]
pub fn expired_cache(entries: &[(AddrKey, u64)], now: u64, rules: &Rules) -> Vec<AddrKey> {
    let mut gone = Vec::new();
    let mut kept: HashMap<u32, Vec<(AddrKey, u64)>> = HashMap::new();
    for &(key, lastuse) in entries {
        match rules.services.get(&key.service) {
            Some(rule) if !entry_expired(lastuse, now, rule.lblc_expire_ns) => {
                kept.entry(key.service).or_default().push((key, lastuse));
            }
            // Expired, or its service is gone.
            _ => gone.push(key),
        }
    }
    for list in kept.values() {
        if list.len() <= CACHE_MAX_SIZE {
            continue;
        }
        let goal = ((list.len() - CACHE_MAX_SIZE) * 4 / 3).min(CACHE_MAX_SIZE / 2);
        gone.extend(
            list.iter()
                .filter(|(_, lastuse)| entry_expired(*lastuse, now, LBLC_ENTRY_TIMEOUT_SECS * NS))
                .map(|(key, _)| *key)
                .take(goal),
        );
    }
    gone
}

/// Connections the kernel's LRU evicted from a full table. The data plane
/// counted each in its real's ActiveConn or InActConn, and no sweep will
/// uncount it, so a real's count would stay high for ever (and its
/// thresholds and least-connection scheduling with it). The sweeper sees
/// it as a count above what the table holds; since a connection being made
/// is counted a moment before its entry appears, only the excess seen on
/// two sweeps in a row (the smaller of the two) is taken off.
#[derive(Clone, Debug, Default)]
pub struct Evictions {
    /// Each real's excess (active, inactive) at the last sweep.
    last: HashMap<u32, (u64, u64)>,
    /// Connections taken off so far: the table's evictions.
    pub total: u64,
}

impl Evictions {
    /// The excess to take off each real now: `counted` is what the real's
    /// counters say, `held` what the table holds, both (active, inactive).
    pub fn correct(&mut self, counted: &HashMap<u32, (u64, u64)>, held: &HashMap<u32, (u64, u64)>) -> Vec<(u32, u64, u64)> {
        let mut now = HashMap::new();
        let mut out = Vec::new();
        for (&real, &(active, inactive)) in counted {
            let (ha, hi) = held.get(&real).copied().unwrap_or_default();
            let excess = (active.saturating_sub(ha), inactive.saturating_sub(hi));
            if excess == (0, 0) {
                continue;
            }
            let (la, li) = self.last.get(&real).copied().unwrap_or_default();
            let take = (excess.0.min(la), excess.1.min(li));
            if take != (0, 0) {
                out.push((real, take.0, take.1));
                self.total += take.0 + take.1;
            }
            now.insert(real, (excess.0 - take.0, excess.1 - take.1));
        }
        self.last = now;
        out
    }
}

/// What one sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub connections: usize,
    pub replies: usize,
    pub templates: usize,
    pub cache_entries: usize,
    /// Connections removed because their real left the service.
    pub stale: usize,
    /// Ids of removed reals freed for reuse.
    pub released: usize,
    /// Connections uncounted because the table had evicted them.
    pub evicted: u64,
}

/// One pass over the data plane's tables at `now` (CLOCK_MONOTONIC ns, the
/// clock of `bpf_ktime_get_ns`).
pub fn sweep(dataplane: &mut Dataplane, rules: &Rules, timeouts: &Timeouts, now: u64, evictions: &mut Evictions) -> Swept {
    let mut swept = Swept::default();
    let entries = dataplane.connections();
    let mut removed = HashSet::new();
    for (key, conn) in &entries {
        if conn.flags & CONN_F_REPLY == 0 && rules.stale(conn) {
            if let Some(fresh) = dataplane.connection(key)
                && dataplane.remove_connection(key)
            {
                dataplane.shared_counters().unbind(fresh.real, fresh.flags & CONN_F_INACTIVE != 0, 0, 0);
                removed.insert(*key);
                swept.stale += 1;
            }
            continue;
        }
        if !client_expired(key, conn, now, timeouts) {
            continue;
        }
        // Read it again just before removing it: a packet may have revived
        // it, or moved it between active and inactive, since the walk.
        let Some(fresh) = dataplane.connection(key).filter(|c| client_expired(key, c, now, timeouts)) else {
            continue;
        };
        // Only the call that removed the entry uncounts it.
        if dataplane.remove_connection(key) {
            let (upper, lower) = rules.thresholds(fresh.real);
            dataplane.shared_counters().unbind(fresh.real, fresh.flags & CONN_F_INACTIVE != 0, upper, lower);
            removed.insert(*key);
            swept.connections += 1;
        }
    }
    for (key, conn) in &entries {
        if conn.flags & CONN_F_REPLY != 0 && dataplane.connection(&client_key(key, conn)).is_none() {
            swept.replies += usize::from(dataplane.remove_connection(key));
        }
    }

    let live = live_networks(entries.iter().filter(|(k, _)| !removed.contains(k)).map(|(k, c)| (k, c)), rules);
    // The real ids something still refers to: a removed real's id is
    // reused only once none does.
    let mut referenced: HashSet<u32> =
        entries.iter().filter(|(k, _)| !removed.contains(k)).map(|(_, c)| c.real).collect();
    for (key, template) in dataplane.templates() {
        if template_expired(&key, &template, now, rules, &live) && dataplane.remove_template(&key) {
            dataplane.shared_counters().release_template(template.real);
            swept.templates += 1;
        } else {
            referenced.insert(template.real);
        }
    }
    // What the table holds per real, against what the counters say.
    let mut held: HashMap<u32, (u64, u64)> = HashMap::new();
    for (_, c) in entries.iter().filter(|(k, c)| c.flags & CONN_F_REPLY == 0 && !removed.contains(k)) {
        let h = held.entry(c.real).or_default();
        if c.flags & CONN_F_INACTIVE != 0 {
            h.1 += 1;
        } else {
            h.0 += 1;
        }
    }
    let counted: HashMap<u32, (u64, u64)> = rules
        .reals
        .keys()
        .copied()
        .chain(dataplane.retired_ids())
        .map(|id| {
            let c = dataplane.real_conns(id);
            (id, (c.active, c.inactive))
        })
        .collect();
    for (real, active, inactive) in evictions.correct(&counted, &held) {
        dataplane.shared_counters().forget(real, active, inactive);
        swept.evicted += active + inactive;
    }
    swept.released = dataplane.release_retired(&referenced);

    for key in expired_cache(&dataplane.lblc_entries(), now, rules) {
        swept.cache_entries += usize::from(dataplane.remove_lblc(&key));
    }
    for key in expired_cache(&dataplane.lblcr_entries(), now, rules) {
        swept.cache_entries += usize::from(dataplane.remove_lblcr(&key));
    }
    swept
}

#[cfg(test)]
mod eviction_tests {
    use super::*;

    #[test]
    fn only_an_excess_seen_twice_is_taken_off() {
        let mut e = Evictions::default();
        let counted = HashMap::from([(1, (5, 3)), (2, (2, 0))]);
        // Real 1: two active and one inactive connection are not in the
        // table; real 2 matches.
        let held = HashMap::from([(1, (3, 2)), (2, (2, 0))]);
        assert!(e.correct(&counted, &held).is_empty(), "a first sighting may be a connection being made");
        assert_eq!(e.correct(&counted, &held), [(1, 2, 1)]);
        assert_eq!(e.total, 3);
        // Corrected: counts now match, nothing more to take.
        let counted = HashMap::from([(1, (3, 2)), (2, (2, 0))]);
        assert!(e.correct(&counted, &held).is_empty());
        // A transient excess that is gone by the next sweep is never taken.
        let busy = HashMap::from([(1, (4, 2))]);
        assert!(e.correct(&busy, &held).is_empty());
        assert!(e.correct(&counted, &held).is_empty());
        // Of two different excesses, the smaller goes.
        assert!(e.correct(&HashMap::from([(1, (6, 2))]), &held).is_empty());
        assert_eq!(e.correct(&HashMap::from([(1, (4, 2))]), &held), [(1, 1, 0)]);
        assert_eq!(e.total, 4);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use lb_common::{AF_INET, IPPROTO_TCP, IPPROTO_UDP, tcp_state, v4_addr};

    use super::*;
    use crate::config::{self, Forward, Persistence, Protocol, Real, VirtualAddr};

    const S: u64 = NS;

    fn installed(id: u32, persistence: Option<Persistence>, lblc_expire: u32) -> Installed {
        let real = Real {
            addr: IpAddr::from(Ipv4Addr::new(10, 0, 1, 1)),
            port: 80,
            weight: 1,
            forward: Forward::Dr,
            u_threshold: 10,
            l_threshold: 5,
            check: Default::default(),
        };
        Installed {
            service: config::Service {
                protocol: Protocol::Tcp,
                vip: VirtualAddr::single(Ipv4Addr::new(10, 0, 0, 1), 80),
                scheduler: lb_common::sched::Scheduler::Lblc,
                sched_flags: 0,
                persistence,
                lblc_expire,
                reals: vec![real],
                check: Default::default(),
                health: Default::default(),
            },
            id,
            real_ids: vec![id * 10],
        }
    }

    fn rules() -> Rules {
        let mask = Ipv4Addr::new(255, 255, 255, 0);
        Rules::new(&[
            installed(0, Some(Persistence { timeout: 360, netmask: mask.into() }), 86_400),
            installed(1, None, 60),
        ])
    }

    fn conn(client: [u8; 4], service: u32, proto: u8, state: u8, last_seen_s: u64) -> (ConnKey, Conn) {
        let key = ConnKey {
            saddr: v4_addr(client),
            daddr: v4_addr([10, 0, 0, 1]),
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            proto,
            family: AF_INET,
            _pad: [0; 2],
        };
        let conn = Conn { last_seen_ns: last_seen_s * S, service, state, ..Conn::default() };
        (key, conn)
    }

    fn addr_key(service: u32, addr: [u8; 4]) -> AddrKey {
        AddrKey { service, family: AF_INET, _pad: [0; 3], addr: v4_addr(addr) }
    }

    #[test]
    fn connections_expire_by_state_and_current_timeouts() {
        let t = Timeouts::default();
        let (k, c) = conn([10, 1, 0, 2], 0, IPPROTO_TCP, tcp_state::ESTABLISHED, 100);
        assert!(!client_expired(&k, &c, 1000 * S, &t)); // idle 900 s: not more than 900
        assert!(client_expired(&k, &c, 1000 * S + 1, &t));
        assert!(client_expired(&k, &c, 200 * S, &t.updated(60, 0, 0)));
        let (k, c) = conn([10, 1, 0, 2], 0, IPPROTO_UDP, tcp_state::NONE, 100);
        assert!(!client_expired(&k, &c, 400 * S, &t));
        assert!(client_expired(&k, &c, 401 * S, &t));
        // Reply entries are never expired on their own.
        let mut reply = c;
        reply.flags |= CONN_F_REPLY;
        assert!(!client_expired(&k, &reply, 10_000 * S, &t));
        // A clock behind the entry (a packet during the walk) is not idle.
        assert!(!client_expired(&k, &c, 50 * S, &t));
    }

    #[test]
    fn templates_live_while_their_network_has_connections() {
        let rules = rules();
        let template = Template { last_used_ns: 100 * S, real: 0, _pad: 0 };
        // The template key holds the masked client: 10.1.0.0/24.
        let key = addr_key(0, [10, 1, 0, 0]);
        let none = HashSet::new();
        assert!(!template_expired(&key, &template, 460 * S, &rules, &none));
        assert!(template_expired(&key, &template, 461 * S, &rules, &none));
        // A live connection from 10.1.0.77 keeps it.
        let clients = [conn([10, 1, 0, 77], 0, IPPROTO_TCP, tcp_state::ESTABLISHED, 400)];
        let live = live_networks(clients.iter().map(|(k, c)| (k, c)), &rules);
        assert!(!template_expired(&key, &template, 1000 * S, &rules, &live));
        // One from another network, or of another service, does not.
        let others = [
            conn([10, 1, 1, 77], 0, IPPROTO_TCP, tcp_state::ESTABLISHED, 400),
            conn([10, 1, 0, 77], 1, IPPROTO_TCP, tcp_state::ESTABLISHED, 400),
        ];
        let live = live_networks(others.iter().map(|(k, c)| (k, c)), &rules);
        assert!(template_expired(&key, &template, 1000 * S, &rules, &live));
        // A template of a service that is not persistent goes.
        assert!(template_expired(&addr_key(1, [10, 1, 0, 0]), &template, 101 * S, &rules, &none));
        assert!(template_expired(&addr_key(9, [10, 1, 0, 0]), &template, 101 * S, &rules, &none));
    }

    #[test]
    fn cache_entries_expire_after_their_service_expiration() {
        let rules = rules();
        let entries = [
            (addr_key(0, [10, 9, 0, 1]), 100 * S), // 24 h expiration
            (addr_key(1, [10, 9, 0, 1]), 100 * S), // 60 s
            (addr_key(1, [10, 9, 0, 2]), 150 * S),
            (addr_key(7, [10, 9, 0, 3]), 150 * S), // no such service
        ];
        let gone = expired_cache(&entries, 160 * S, &rules);
        assert_eq!(gone, [addr_key(1, [10, 9, 0, 1]), addr_key(7, [10, 9, 0, 3])]);
        assert!(expired_cache(&entries, 159 * S, &rules).len() == 1);
    }

    #[test]
    fn an_oversized_cache_sheds_entries_idle_for_six_minutes() {
        let rules = rules();
        let now = 100_000 * S;
        let n = CACHE_MAX_SIZE + 300;
        let entries: Vec<(AddrKey, u64)> = (0..n)
            .map(|i| {
                let key = addr_key(0, (i as u32).to_be_bytes());
                // Every other entry is idle for 10 minutes, the rest fresh.
                (key, if i % 2 == 0 { now - 600 * S } else { now })
            })
            .collect();
        let gone = expired_cache(&entries, now, &rules);
        assert_eq!(gone.len(), 400); // (300 * 4 / 3)
        assert!(gone.iter().all(|k| u32::from_be_bytes(k.addr[0].to_ne_bytes()) % 2 == 0));
        // At the bound nothing goes early.
        assert!(expired_cache(&entries[..CACHE_MAX_SIZE], now, &rules).is_empty());
    }

    #[test]
    fn rules_carry_thresholds_and_masks() {
        let rules = rules();
        assert_eq!(rules.thresholds(0), (10, 5));
        assert_eq!(rules.thresholds(10), (10, 5));
        assert_eq!(rules.thresholds(99), (0, 0));
        assert_eq!(rules.services[&0].mask, [u32::from_ne_bytes([255, 255, 255, 0]), 0, 0, 0]);
        assert_eq!(rules.services[&1].persist_timeout_ns, 0);
        assert_eq!(rules.services[&1].lblc_expire_ns, 60 * S);
    }
}
