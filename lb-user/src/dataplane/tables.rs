//! What `Dataplane::install` writes for one service, computed from the
//! config alone so that the tests can check it without a kernel: the map
//! keys, the `Service` value, and the scheduler's tables.
//!
//! Every per-real table is in IPVS scan order: a destination is added at
//! the head of its service's list, so scans go newest-added first and scan
//! index `i` is config index `n - 1 - i`. `SERVICE_REALS` holds the real ids
//! in that order, and the bucket and Maglev tables hold scan indexes.

use aya::maps::lpm_trie::Key;
use lb_common::{
    AF_INET, Buckets, MaglevTable, RangeData, SchedState, Service, ServiceKey, range_prefix_len,
    sched::{MhReal, Scheduler, dh_build, mh_build, sh_build},
    v4_addr,
};

use crate::config;

/// The scheduler state and tables of one service.
pub struct SchedTables {
    /// `SCHED_STATE[id]`: wrr's weights and cursor, rr's cursor.
    pub state: SchedState,
    /// `BUCKETS[id]`, for dh and sh.
    pub buckets: Option<Buckets>,
    /// `MAGLEV[id]`, for mh (boxed: 16 KiB).
    pub maglev: Option<Box<MaglevTable>>,
}

/// The service's reals in scan order (newest first).
fn scan_order(service: &config::Service) -> impl Iterator<Item = &config::Real> {
    service.reals.iter().rev()
}

/// Builds the scheduler's tables, as IPVS's `init_service` and
/// `add_dest` callbacks would after adding the reals in config order.
/// `last_weights` are mh's last non-zero weights of the reals, in config
/// order (`mh_last_weight`): a quiesced real keeps its share of the table.
#[must_use]
pub fn sched_tables(service: &config::Service, last_weights: &[u32]) -> SchedTables {
    let weights: Vec<u32> = scan_order(service).map(|r| r.weight).collect();
    let mut tables = SchedTables { state: SchedState::default(), buckets: None, maglev: None };
    match service.scheduler {
        Scheduler::Wrr => tables.state = SchedState::new(weights.iter().copied()),
        Scheduler::Dh => {
            let mut b = Buckets::default();
            dh_build(u32::try_from(weights.len()).unwrap_or(u32::MAX), &mut b.reals);
            tables.buckets = Some(b);
        }
        Scheduler::Sh => {
            let mut b = Buckets::default();
            sh_build(&weights, &mut b.reals);
            tables.buckets = Some(b);
        }
        Scheduler::Mh => {
            let mut reals: Vec<MhReal> = service
                .reals
                .iter()
                .enumerate()
                .map(|(i, r)| MhReal {
                    addr: v4_addr(r.addr.octets()),
                    port: r.port.to_be(),
                    last_weight: last_weights.get(i).copied().unwrap_or(r.weight),
                })
                .collect();
            reals.reverse();
            let mut table = Box::<MaglevTable>::default();
            mh_build(&reals, AF_INET, &mut table.reals);
            tables.maglev = Some(table);
        }
        Scheduler::Rr
        | Scheduler::Lc
        | Scheduler::Wlc
        | Scheduler::Lblc
        | Scheduler::Lblcr
        | Scheduler::Sed
        | Scheduler::Nq => {}
    }
    tables
}

/// The value of `SERVICES` / `SERVICE_RANGES`.
#[must_use]
pub fn service_value(service: &config::Service, id: u32) -> Service {
    let (persist_timeout, mask) = service
        .persistence
        .map_or((0, std::net::Ipv4Addr::BROADCAST), |p| (p.timeout, p.netmask));
    Service {
        id,
        nreals: u32::try_from(service.reals.len()).unwrap_or(u32::MAX),
        scheduler: service.scheduler.id(),
        flags: service.flags(),
        _pad: [0; 2],
        persist_timeout,
        persist_mask: v4_addr(mask.octets()),
        lblc_expire_ns: u64::from(service.lblc_expire) * 1_000_000_000,
    }
}

/// The `SERVICES` key of a single-VIP service.
#[must_use]
pub fn service_key(service: &config::Service) -> ServiceKey {
    ServiceKey {
        addr: v4_addr(service.vip.addr.octets()),
        port: service.vip.port.to_be(),
        proto: service.protocol.number(),
        family: AF_INET,
    }
}

/// The `SERVICE_RANGES` key of a range service: protocol, family and port
/// (32 bits) then the network's prefix.
#[must_use]
pub fn range_key(service: &config::Service) -> Key<RangeData> {
    Key::new(
        range_prefix_len(u32::from(service.vip.prefix_len)),
        RangeData {
            proto: service.protocol.number(),
            family: AF_INET,
            port: service.vip.port.to_be(),
            addr: v4_addr(service.vip.addr.octets()),
        },
    )
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use lb_common::{
        SVC_F_PERSISTENT,
        sched::{MH_TAB_SIZE, NO_REAL, SVC_F_SH_PORT},
    };

    use super::*;
    use crate::config::{Forward, Persistence, Protocol, Real, VirtualAddr};

    fn service(scheduler: Scheduler, weights: &[u32]) -> config::Service {
        config::Service {
            protocol: Protocol::Tcp,
            vip: VirtualAddr::single(Ipv4Addr::new(10, 0, 0, 1), 80),
            scheduler,
            sched_flags: 0,
            persistence: None,
            lblc_expire: 86_400,
            reals: (1u8..)
                .zip(weights)
                .map(|(i, &weight)| Real {
                    addr: Ipv4Addr::new(10, 0, 1, i),
                    port: 80,
                    weight,
                    forward: Forward::Dr,
                    u_threshold: 0,
                    l_threshold: 0,
                    check: Default::default(),
                })
                .collect(),
            check: Default::default(),
            health: Default::default(),
        }
    }

    /// An mh real's last weight is its weight when it was just added.
    fn weights(w: &[u32]) -> Vec<u32> {
        w.to_vec()
    }

    #[test]
    fn wrr_state_is_built_over_the_scan_order() {
        // A=4, B=3, C=2 in config order: gcd 1, max 4.
        let t = sched_tables(&service(Scheduler::Wrr, &[4, 3, 2]), &weights(&[4, 3, 2]));
        assert_eq!(t.state, SchedState { cursor: 0, cw: 4, mw: 4, di: 1 });
        let t = sched_tables(&service(Scheduler::Wrr, &[4, 0, 2]), &weights(&[4, 0, 2]));
        assert_eq!((t.state.di, t.state.mw), (2, 3));
        assert!(t.buckets.is_none() && t.maglev.is_none());
        // rr and the count-based schedulers start from a zero state.
        for s in [Scheduler::Rr, Scheduler::Wlc, Scheduler::Lblcr, Scheduler::Nq] {
            let t = sched_tables(&service(s, &[4, 3, 2]), &weights(&[4, 3, 2]));
            assert_eq!(t.state, SchedState::default());
            assert!(t.buckets.is_none() && t.maglev.is_none());
        }
    }

    #[test]
    fn dh_and_sh_buckets_hold_scan_indexes() {
        let dh = sched_tables(&service(Scheduler::Dh, &[5, 1, 1]), &weights(&[5, 1, 1])).buckets.unwrap();
        assert_eq!(dh.reals[..4], [0, 1, 2, 0]);
        // sh over scan order C(1), B(2), A(3): weights take consecutive
        // buckets, so scan index 2 (the first real in the file) gets three.
        let sh = sched_tables(&service(Scheduler::Sh, &[3, 2, 1]), &weights(&[3, 2, 1])).buckets.unwrap();
        assert_eq!(sh.reals[..8], [0, 1, 1, 2, 2, 2, 0, 1]);
        let empty = sched_tables(&service(Scheduler::Sh, &[]), &weights(&[])).buckets.unwrap();
        assert!(empty.reals.iter().all(|&b| b == NO_REAL));
    }

    #[test]
    fn maglev_shares_follow_weights_in_scan_order() {
        let t = sched_tables(&service(Scheduler::Mh, &[1, 1, 2]), &weights(&[1, 1, 2])).maglev.unwrap();
        let count = |i| t.reals.iter().filter(|&&r| r == i).count();
        assert_eq!(count(0) + count(1) + count(2), MH_TAB_SIZE);
        // Scan index 0 is the last real in the file, the one of weight 2.
        assert!(count(0) > count(1) + count(1) / 2, "{} {} {}", count(0), count(1), count(2));
        // A weight-0 real added as such gets no slots.
        let t = sched_tables(&service(Scheduler::Mh, &[1, 0]), &weights(&[1, 0])).maglev.unwrap();
        assert!(t.reals.iter().all(|&r| r == 1));
    }

    #[test]
    fn the_service_value_carries_scheduler_flags_and_persistence() {
        let mut s = service(Scheduler::Sh, &[1, 1]);
        s.sched_flags = SVC_F_SH_PORT;
        s.persistence = Some(Persistence { timeout: 360, netmask: Ipv4Addr::new(255, 255, 255, 0) });
        s.lblc_expire = 60;
        let v = service_value(&s, 7);
        assert_eq!((v.id, v.nreals, v.scheduler), (7, 2, lb_common::SCHED_SH));
        assert_eq!(v.flags, SVC_F_SH_PORT | SVC_F_PERSISTENT);
        assert_eq!(v.persist_timeout, 360);
        assert_eq!(v.persist_mask, [u32::from_ne_bytes([255, 255, 255, 0]), 0, 0, 0]);
        assert_eq!(v.lblc_expire_ns, 60_000_000_000);
        let plain = service_value(&service(Scheduler::Wlc, &[1]), 0);
        assert_eq!((plain.flags, plain.persist_timeout), (0, 0));
    }

    #[test]
    fn range_keys_cover_protocol_port_and_prefix() {
        let mut s = service(Scheduler::Dh, &[1]);
        s.vip = VirtualAddr { addr: Ipv4Addr::new(10, 50, 0, 0), prefix_len: 16, port: 80 };
        let key = range_key(&s);
        assert_eq!(key.prefix_len(), 48);
        let data = key.data();
        assert_eq!((data.proto, data.family, data.port), (lb_common::IPPROTO_TCP, AF_INET, 80u16.to_be()));
        assert_eq!(data.addr, v4_addr([10, 50, 0, 0]));
        assert_eq!(service_key(&service(Scheduler::Rr, &[])).addr, v4_addr([10, 0, 0, 1]));
    }
}
