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
    Buckets, MaglevTable, RangeData, SchedState, Service, ServiceKey, range_prefix_len,
    sched::{MhReal, Scheduler, dh_build, mh_build, sh_build},
};

use crate::{addr, config};

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
                    addr: addr::to_map(r.addr).0,
                    port: r.port.to_be(),
                    last_weight: last_weights.get(i).copied().unwrap_or(r.weight),
                })
                .collect();
            reals.reverse();
            let mut table = Box::<MaglevTable>::default();
            // IPVS hashes IPv6 reals over all 16 bytes.
            mh_build(&reals, addr::family(service.vip.addr), &mut table.reals);
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
        .map_or((0, config::Persistence::whole(service.vip.addr)), |p| (p.timeout, p.netmask));
    Service {
        id,
        nreals: u32::try_from(service.reals.len()).unwrap_or(u32::MAX),
        scheduler: service.scheduler.id(),
        flags: service.flags(),
        _pad: [0; 2],
        persist_timeout,
        persist_mask: addr::to_map(mask).0,
        lblc_expire_ns: u64::from(service.lblc_expire) * 1_000_000_000,
    }
}

/// The `SERVICES` key of a single-VIP service.
#[must_use]
pub fn service_key(service: &config::Service) -> ServiceKey {
    let (addr, family) = addr::to_map(service.vip.addr);
    ServiceKey { addr, port: service.vip.port.to_be(), proto: service.protocol.number(), family }
}

/// The `SERVICE_RANGES` key of a range service: protocol, family and port
/// (32 bits) then the network's prefix.
#[must_use]
pub fn range_key(service: &config::Service) -> Key<RangeData> {
    let (addr, family) = addr::to_map(service.vip.addr);
    Key::new(
        range_prefix_len(u32::from(service.vip.prefix_len)),
        RangeData { proto: service.protocol.number(), family, port: service.vip.port.to_be(), addr },
    )
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use lb_common::{
        AF_INET, AF_INET6, SVC_F_PERSISTENT, v4_addr, v6_addr,
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
                    addr: Ipv4Addr::new(10, 0, 1, i).into(),
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
        s.persistence = Some(Persistence { timeout: 360, netmask: Ipv4Addr::new(255, 255, 255, 0).into() });
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
        s.vip = VirtualAddr { addr: Ipv4Addr::new(10, 50, 0, 0).into(), prefix_len: 16, port: 80 };
        let key = range_key(&s);
        assert_eq!(key.prefix_len(), 48);
        let data = key.data();
        assert_eq!((data.proto, data.family, data.port), (lb_common::IPPROTO_TCP, AF_INET, 80u16.to_be()));
        assert_eq!(data.addr, v4_addr([10, 50, 0, 0]));
        assert_eq!(service_key(&service(Scheduler::Rr, &[])).addr, v4_addr([10, 0, 0, 1]));
    }

    /// The service of `service()` moved to IPv6: VIP 2001:db8::1, reals
    /// 2001:db8:1::1, ::2, ...
    fn v6_service(scheduler: Scheduler, weights: &[u32]) -> config::Service {
        let mut s = service(scheduler, weights);
        s.vip = VirtualAddr::single("2001:db8::1".parse::<IpAddr>().unwrap(), 80);
        for (i, r) in (1u16..).zip(&mut s.reals) {
            r.addr = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i));
        }
        s
    }

    fn v6(text: &str) -> [u32; 4] {
        let IpAddr::V6(a) = text.parse().unwrap() else { panic!("{text}") };
        v6_addr(a.octets())
    }

    #[test]
    fn ipv6_keys_carry_the_family_and_all_sixteen_bytes() {
        let s = v6_service(Scheduler::Rr, &[1]);
        let key = service_key(&s);
        assert_eq!((key.family, key.addr, key.port), (AF_INET6, v6("2001:db8::1"), 80u16.to_be()));
        let mut r = v6_service(Scheduler::Rr, &[1]);
        r.vip = VirtualAddr { addr: "2001:db8:100::".parse().unwrap(), prefix_len: 64, port: 443 };
        let range = range_key(&r);
        // 32 bits of proto, family and port, then the 64-bit prefix.
        assert_eq!(range.prefix_len(), 96);
        let data = range.data();
        assert_eq!((data.family, data.addr, data.port), (AF_INET6, v6("2001:db8:100::"), 443u16.to_be()));
    }

    #[test]
    fn ipv6_persistence_masks_are_prefix_masks_in_map_words() {
        let mut s = v6_service(Scheduler::Wlc, &[1]);
        s.persistence = Some(Persistence { timeout: 60, netmask: "ffff:ffff:ffff:ffff::".parse().unwrap() });
        assert_eq!(service_value(&s, 0).persist_mask, [u32::MAX, u32::MAX, 0, 0]);
        // Not persistent: the /128 mask, as IPv4's default is /32.
        s.persistence = None;
        assert_eq!(service_value(&s, 0).persist_mask, [u32::MAX; 4]);
        let plain = service_value(&service(Scheduler::Wlc, &[1]), 0);
        assert_eq!(plain.persist_mask, [u32::MAX, 0, 0, 0]);
    }

    #[test]
    fn ipv6_maglev_hashes_the_ipv6_reals() {
        let w = [1, 1, 1];
        let v6t = sched_tables(&v6_service(Scheduler::Mh, &w), &weights(&w)).maglev.unwrap();
        // The same table mh_build makes for these reals as AF_INET6.
        let reals: Vec<MhReal> = (1u16..=3)
            .rev()
            .map(|i| MhReal {
                addr: v6(&format!("2001:db8:1::{i}")),
                port: 80u16.to_be(),
                last_weight: 1,
            })
            .collect();
        let mut want = Box::<MaglevTable>::default();
        mh_build(&reals, AF_INET6, &mut want.reals);
        assert_eq!(v6t.reals, want.reals);
        let mut as_v4 = Box::<MaglevTable>::default();
        mh_build(&reals, AF_INET, &mut as_v4.reals);
        assert_ne!(v6t.reals, as_v4.reals, "the family must reach the hash");
    }
}
