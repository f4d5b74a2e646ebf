//! What `xlvs list` shows, read from the maps: the services with their
//! reals' counters, and the connection entries and persistence templates.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use lb_common::{AddrKey, CONN_F_REPLY, Conn, ConnKey, IPPROTO_TCP, Template, tcp_state};

use crate::{
    addr,
    config::{self, Protocol, VirtualAddr},
    dataplane::{self, Dataplane, Installed},
    timeouts::Timeouts,
    view::{ConnView, RateView, RealView, ServiceView, Snapshot, StatsView, sched_flag_names},
};

/// Every service, its reals, their counters (ActiveConn, InActConn and
/// PersistConn straight from `REAL_CONNS`, as the data plane keeps them)
/// and the data plane's reason counters.
///
/// # Errors
/// When a statistics map cannot be read.
pub fn snapshot(dp: &Dataplane, installed: &[Installed]) -> Result<Snapshot, dataplane::Error> {
    let mut services = Vec::new();
    for s in installed {
        let mut reals = Vec::new();
        for (real, id) in s.service.reals.iter().zip(&s.real_ids) {
            let st = dp.real_stats(*id)?;
            let conns = dp.real_conns(*id);
            reals.push(RealView {
                address: SocketAddr::new(real.addr, real.port),
                // ipvsadm shows a real that is the director itself as Local.
                forward: if dp.real_entry(*id).is_ok_and(|e| e.flags & lb_common::REAL_F_LOCAL != 0) {
                    "local".to_owned()
                } else {
                    real.forward.to_string()
                },
                weight: real.weight,
                active: conns.active,
                inactive: conns.inactive,
                persistent_conns: conns.persist,
                u_threshold: real.u_threshold,
                l_threshold: real.l_threshold,
                overloaded: conns.overloaded != 0,
                stats: StatsView {
                    conns: st.conns,
                    inpkts: st.inpkts,
                    outpkts: st.outpkts,
                    inbytes: st.inbytes,
                    outbytes: st.outbytes,
                },
                // The director fills these: `rate::fill_rates` and its checker.
                rate: RateView::default(),
                health: None,
                in_service: true,
            });
        }
        services.push(ServiceView {
            protocol: s.service.protocol.to_string(),
            address: s.service.vip,
            scheduler: s.service.scheduler.to_string(),
            scheduler_flags: sched_flag_names(s.service.scheduler, s.service.sched_flags),
            persistent: s.service.persistence.map(|p| p.timeout),
            netmask: s.service.persistence.map(|p| p.netmask),
            stats: reals.iter().fold(StatsView::default(), |a, r| a + r.stats),
            rate: RateView::default(),
            reals,
        });
    }
    let counters = dp.counters()?.into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
    Ok(Snapshot { conn_table_size: dp.conn_table_size(), services, counters })
}

/// Where a real id leads: its service and its config.
struct Directory<'a> {
    services: HashMap<u32, &'a Installed>,
    reals: HashMap<u32, &'a config::Real>,
}

impl<'a> Directory<'a> {
    fn new(installed: &'a [Installed]) -> Self {
        Self {
            services: installed.iter().map(|s| (s.id, s)).collect(),
            reals: installed.iter().flat_map(|s| s.real_ids.iter().copied().zip(&s.service.reals)).collect(),
        }
    }

    fn destination(&self, real: u32) -> SocketAddr {
        self.reals
            .get(&real)
            .map_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0), |r| SocketAddr::new(r.addr, r.port))
    }
}

/// Seconds left of `timeout_ns` after `last` at `now`.
fn remaining_secs(last: u64, timeout_ns: u64, now: u64) -> u64 {
    last.saturating_add(timeout_ns).saturating_sub(now) / 1_000_000_000
}

/// One row per client connection (a NAT flow's reply entry is the same
/// connection) and one per persistence template, as `ipvsadm -L -c` lists
/// IPVS's connections and templates.
#[must_use]
pub fn connections(dp: &Dataplane, installed: &[Installed], timeouts: &Timeouts, now: u64) -> Vec<ConnView> {
    let dir = Directory::new(installed);
    let mut rows: Vec<ConnView> = dp
        .connections()
        .iter()
        .filter(|(_, c)| c.flags & CONN_F_REPLY == 0)
        .filter_map(|(k, c)| connection_row(k, c, timeouts, now, &dir))
        .collect();
    rows.extend(dp.templates().iter().filter_map(|(k, t)| template_row(k, t, now, &dir)));
    rows
}

/// `None` for an entry of neither family (nothing the data plane writes).
fn connection_row(key: &ConnKey, conn: &Conn, timeouts: &Timeouts, now: u64, dir: &Directory<'_>) -> Option<ConnView> {
    let tcp = key.proto == IPPROTO_TCP;
    let state = if tcp {
        tcp_state::NAMES.get(conn.state as usize).copied().unwrap_or("ERR!")
    } else {
        // IPVS's one UDP state is named after the protocol.
        "UDP"
    };
    Some(ConnView {
        protocol: (if tcp { Protocol::Tcp } else { Protocol::Udp }).to_string(),
        expire: remaining_secs(conn.last_seen_ns, timeouts.ns(key.proto, conn.state), now),
        state: state.to_owned(),
        source: SocketAddr::new(addr::from_map(key.saddr, key.family)?, u16::from_be(key.sport)),
        vip: VirtualAddr::single(addr::from_map(key.daddr, key.family)?, u16::from_be(key.dport)),
        destination: dir.destination(conn.real),
        template: false,
    })
}

/// A template shows as IPVS shows its own: the client network with port 0,
/// the service, the real, and state NONE (UDP for a UDP service).
fn template_row(key: &AddrKey, t: &Template, now: u64, dir: &Directory<'_>) -> Option<ConnView> {
    let service = &dir.services.get(&key.service)?.service;
    let timeout_ns = u64::from(service.persistence.map_or(0, |p| p.timeout)) * 1_000_000_000;
    Some(ConnView {
        protocol: service.protocol.to_string(),
        expire: remaining_secs(t.last_used_ns, timeout_ns, now),
        state: (if service.protocol == Protocol::Tcp { "NONE" } else { "UDP" }).to_owned(),
        source: SocketAddr::new(addr::from_map(key.addr, key.family)?, 0),
        vip: service.vip,
        destination: dir.destination(t.real),
        template: true,
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use lb_common::{AF_INET, AF_INET6, IPPROTO_UDP, v4_addr, v6_addr};

    use super::*;
    use crate::config::{Forward, Persistence, Real};

    const S: u64 = 1_000_000_000;

    fn installed() -> Vec<Installed> {
        let real = |last, port| Real {
            addr: Ipv4Addr::new(10, 0, 1, last).into(),
            port,
            weight: 1,
            forward: Forward::Nat,
            u_threshold: 0,
            l_threshold: 0,
            check: Default::default(),
        };
        let service = |protocol, port, persistence| config::Service {
            protocol,
            vip: VirtualAddr::single(Ipv4Addr::new(10, 100, 0, 100), port),
            scheduler: lb_common::sched::Scheduler::Rr,
            sched_flags: 0,
            persistence,
            lblc_expire: 86_400,
            reals: vec![real(11, 8080), real(12, 8080)],
            check: Default::default(),
            health: Default::default(),
        };
        let persistent = Some(Persistence { timeout: 360, netmask: Ipv4Addr::new(255, 255, 255, 0).into() });
        vec![
            Installed { service: service(Protocol::Tcp, 80, persistent), id: 0, real_ids: vec![0, 1] },
            Installed { service: service(Protocol::Udp, 53, persistent), id: 1, real_ids: vec![2, 3] },
        ]
    }

    #[test]
    fn rows_name_states_and_count_down() {
        let installed = installed();
        let dir = Directory::new(&installed);
        let key = ConnKey {
            saddr: v4_addr([10, 1, 0, 2]),
            daddr: v4_addr([10, 100, 0, 100]),
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            proto: IPPROTO_TCP,
            family: AF_INET,
            _pad: [0; 2],
        };
        let conn = Conn { last_seen_ns: 100 * S, real: 1, service: 0, state: tcp_state::ESTABLISHED, ..Conn::default() };
        let row = connection_row(&key, &conn, &Timeouts::default(), 101 * S + S / 2, &dir).unwrap();
        assert_eq!((row.protocol.as_str(), row.state.as_str(), row.expire), ("tcp", "ESTABLISHED", 898));
        assert_eq!(row.source.to_string(), "10.1.0.2:40000");
        assert_eq!(row.vip.to_string(), "10.100.0.100:80");
        assert_eq!(row.destination.to_string(), "10.0.1.12:8080");
        let udp = ConnKey { proto: IPPROTO_UDP, ..key };
        let row = connection_row(&udp, &Conn { state: 0, ..conn }, &Timeouts::default(), 2000 * S, &dir).unwrap();
        assert_eq!((row.state.as_str(), row.expire), ("UDP", 0));

        let t = Template { last_used_ns: 100 * S, real: 2, _pad: 0 };
        let tkey = AddrKey { service: 1, family: AF_INET, _pad: [0; 3], addr: v4_addr([10, 1, 0, 0]) };
        let row = template_row(&tkey, &t, 160 * S, &dir).unwrap();
        assert_eq!((row.protocol.as_str(), row.state.as_str(), row.expire, row.template), ("udp", "UDP", 300, true));
        assert_eq!(row.source.to_string(), "10.1.0.0:0");
        assert_eq!(row.destination.to_string(), "10.0.1.11:8080");
        assert_eq!(template_row(&AddrKey { service: 0, ..tkey }, &t, 160 * S, &dir).unwrap().state, "NONE");
        assert!(template_row(&AddrKey { service: 5, ..tkey }, &t, 160 * S, &dir).is_none());
    }

    #[test]
    fn ipv6_rows_read_all_sixteen_bytes() {
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let mut installed = installed();
        installed[0].service.vip = VirtualAddr::single(v6("2001:db8::100"), 80);
        for (r, last) in installed[0].service.reals.iter_mut().zip([0x11u16, 0x12]) {
            r.addr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, last));
        }
        let dir = Directory::new(&installed);
        let key = ConnKey {
            saddr: v6_addr(v6("2001:db8:ff::2").octets()),
            daddr: v6_addr(v6("2001:db8::100").octets()),
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            proto: IPPROTO_TCP,
            family: AF_INET6,
            _pad: [0; 2],
        };
        let conn = Conn { last_seen_ns: 100 * S, real: 1, service: 0, state: tcp_state::ESTABLISHED, ..Conn::default() };
        let row = connection_row(&key, &conn, &Timeouts::default(), 100 * S, &dir).unwrap();
        assert_eq!(row.source.to_string(), "[2001:db8:ff::2]:40000");
        assert_eq!(row.vip.to_string(), "[2001:db8::100]:80");
        assert_eq!(row.destination.to_string(), "[2001:db8:1::12]:8080");
        // Garbage in the family byte is skipped, not shown as a wrong address.
        assert!(connection_row(&ConnKey { family: 99, ..key }, &conn, &Timeouts::default(), 0, &dir).is_none());

        let t = Template { last_used_ns: 100 * S, real: 0, _pad: 0 };
        let tkey = AddrKey { service: 0, family: AF_INET6, _pad: [0; 3], addr: v6_addr(v6("2001:db8:ff::").octets()) };
        let row = template_row(&tkey, &t, 100 * S, &dir).unwrap();
        assert_eq!(row.source.to_string(), "[2001:db8:ff::]:0");
        assert_eq!(row.destination.to_string(), "[2001:db8:1::11]:8080");
    }
}
