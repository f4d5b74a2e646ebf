//! Bringing the maps to a wanted set of services with the fewest changes.
//!
//! A reload, a runtime edit and a health check going up or down all end
//! here, as "these services, these reals, these weights". A service or real
//! that did not change keeps its ids, so its connections, counters and
//! scheduler state carry on. What changed is rewritten in an order that
//! never shows the data plane a service whose reals are not there yet:
//! reals first, then the service's list and scheduler tables, then the
//! service itself.
//!
//! A real that leaves is *retired*, not freed: its entry stays, marked as
//! belonging to no service with weight 0, so that its connections are
//! dropped (`DROP_STALE_REAL`) and swept, and its id is reused only once
//! nothing counts against it any more (see [`Dataplane::release_retired`]).
//! Otherwise a reused id would hand an old connection to a new real.

use std::{
    collections::{BTreeSet, HashMap as StdHashMap},
    net::IpAddr,
};

use lb_common::{
    MAP_BUCKETS, MAP_MAGLEV, MAP_REAL_STATS, MAP_REALS, MAP_SCHED_STATE, MAP_SERVICE_RANGES,
    MAP_SERVICE_REALS, MAP_SERVICES, MAX_REALS, MAX_SERVICES, ServiceReals, Stats,
    sched::{Scheduler, mh_last_weight, rr_cursor_after_add, rr_cursor_after_del},
};

use aya::maps::MapError;

use super::{Dataplane, Error, Installed, map_err, real_entry, tables};
use crate::{config, nexthop::NextHop};

/// A real within its service: its address and port.
pub type RealKey = (IpAddr, u16);
/// A service: its protocol and virtual address.
pub type ServiceKey = (config::Protocol, config::VirtualAddr);

#[must_use]
pub fn service_key(s: &config::Service) -> ServiceKey {
    (s.protocol, s.vip)
}

#[must_use]
pub fn real_key(r: &config::Real) -> RealKey {
    (r.addr, r.port)
}

/// Which ids are free, and which reals wait to be released.
#[derive(Debug)]
pub struct Ids {
    free_services: BTreeSet<u32>,
    free_reals: BTreeSet<u32>,
    /// Retired real ids, released by [`Dataplane::release_retired`].
    pub(super) retired: BTreeSet<u32>,
}

impl Default for Ids {
    fn default() -> Self {
        Self { free_services: (0..MAX_SERVICES).collect(), free_reals: (0..MAX_REALS).collect(), retired: BTreeSet::new() }
    }
}

/// What [`Dataplane::apply`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub services_added: usize,
    pub services_removed: usize,
    pub services_changed: usize,
    pub reals_added: usize,
    pub reals_removed: usize,
    pub reals_changed: usize,
}

impl Applied {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The reals of a service after a change, in install order (oldest first),
/// as IPVS would hold them: reals that stay keep their place and id, new
/// ones come after them (the scan, newest first, meets them first).
#[derive(Debug, PartialEq, Eq)]
pub struct RealsPlan {
    /// `(real as wanted, its id when it stays)`, in install order.
    pub reals: Vec<(config::Real, Option<u32>)>,
    /// The ids that leave, with their old scan index.
    pub removed: Vec<(u32, u32)>,
    /// Whether any staying real's entry changes (weight, method, thresholds).
    pub edited: bool,
}

/// Plans the reals of `want` against what is installed.
#[must_use]
pub fn plan_reals(old: &Installed, want: &config::Service) -> RealsPlan {
    let wanted: StdHashMap<RealKey, &config::Real> = want.reals.iter().map(|r| (real_key(r), r)).collect();
    let n = old.service.reals.len();
    let mut plan = RealsPlan { reals: Vec::new(), removed: Vec::new(), edited: false };
    for (i, (real, &id)) in old.service.reals.iter().zip(&old.real_ids).enumerate() {
        match wanted.get(&real_key(real)) {
            Some(w) => {
                plan.edited |= !same_entry(real, w);
                plan.reals.push(((*w).clone(), Some(id)));
            }
            // Scan order is install order reversed.
            None => plan.removed.push((id, (n - 1 - i) as u32)),
        }
    }
    let had: std::collections::HashSet<RealKey> = old.service.reals.iter().map(real_key).collect();
    plan.reals.extend(want.reals.iter().filter(|r| !had.contains(&real_key(r))).map(|r| (r.clone(), None)));
    plan
}

/// Whether two reals have the same map entry (the health check is not in
/// the maps).
fn same_entry(a: &config::Real, b: &config::Real) -> bool {
    (a.weight, a.forward, a.u_threshold, a.l_threshold) == (b.weight, b.forward, b.u_threshold, b.l_threshold)
}

/// Whether two services have the same `Service` value and scheduler.
fn same_service_value(a: &config::Service, b: &config::Service) -> bool {
    (a.scheduler, a.sched_flags, a.persistence, a.lblc_expire) == (b.scheduler, b.sched_flags, b.persistence, b.lblc_expire)
}

impl Dataplane {
    /// The services in the maps, in the order they were wanted.
    #[must_use]
    pub fn installed(&self) -> &[Installed] {
        &self.installed
    }

    /// Makes the maps hold exactly `want` (already validated as a config
    /// is), changing only what differs. `nexthop` gives the resolved next
    /// hop of a real's address, if known.
    ///
    /// # Errors
    /// When there are not enough free real ids (retired reals still hold
    /// connections), or a map write fails; the check for ids comes first,
    /// so that a refused change changes nothing.
    pub fn apply(&mut self, want: &[config::Service], nexthop: &StdHashMap<IpAddr, NextHop>) -> Result<Applied, Error> {
        let mut applied = Applied::default();
        let wanted: StdHashMap<ServiceKey, &config::Service> = want.iter().map(|s| (service_key(s), s)).collect();

        let new_reals: usize = want
            .iter()
            .map(|s| match self.installed.iter().find(|i| service_key(&i.service) == service_key(s)) {
                Some(old) => plan_reals(old, s).reals.iter().filter(|(_, id)| id.is_none()).count(),
                None => s.reals.len(),
            })
            .sum();
        if new_reals > self.ids.free_reals.len() {
            return Err(Error::NoFreeIds { wanted: new_reals, free: self.ids.free_reals.len(), retired: self.ids.retired.len() });
        }

        // Services that leave go first, freeing their ids.
        let (gone, kept): (Vec<Installed>, Vec<Installed>) =
            std::mem::take(&mut self.installed).into_iter().partition(|i| !wanted.contains_key(&service_key(&i.service)));
        self.installed = kept;
        for old in gone {
            self.remove_service(&old)?;
            applied.services_removed += 1;
            applied.reals_removed += old.real_ids.len();
        }

        let mut next = Vec::with_capacity(want.len());
        for service in want {
            let position = self.installed.iter().position(|i| service_key(&i.service) == service_key(service));
            let installed = match position {
                Some(p) => {
                    let old = self.installed.swap_remove(p);
                    self.update_service(old, service, nexthop, &mut applied)?
                }
                None => {
                    applied.services_added += 1;
                    applied.reals_added += service.reals.len();
                    self.add_service(service, nexthop)?
                }
            };
            next.push(installed);
        }
        self.installed = next;
        Ok(applied)
    }

    fn take_real_id(&mut self) -> Result<u32, Error> {
        let id = self.ids.free_reals.pop_first().ok_or(Error::NoFreeIds {
            wanted: 1,
            free: 0,
            retired: self.ids.retired.len(),
        })?;
        // A reused id starts from zero: its stats and counts are the new
        // real's alone.
        self.zero_real_stats(id)?;
        self.real_conns.clear(id);
        Ok(id)
    }

    fn zero_real_stats(&mut self, id: u32) -> Result<(), Error> {
        let zeros = vec![Stats::default(); aya::util::nr_cpus().map_err(|(_, e)| Error::Cpus(e))?];
        let values = aya::maps::PerCpuValues::try_from(zeros)
            .map_err(|e| Error::Map { name: MAP_REAL_STATS, source: MapError::IoError(e) })?;
        self.real_stats.set(id, values, 0).map_err(map_err(MAP_REAL_STATS))
    }

    /// `ipvsadm -Z`: every real's connection, packet and byte counters back
    /// to 0 (the active and inactive counts are state, not statistics).
    ///
    /// # Errors
    /// When a map write fails.
    pub fn zero_stats(&mut self) -> Result<(), Error> {
        let ids: Vec<u32> = self.installed.iter().flat_map(|s| s.real_ids.iter().copied()).collect();
        ids.into_iter().try_for_each(|id| self.zero_real_stats(id))
    }

    fn write_real(&mut self, real: &config::Real, id: u32, service: u32, hop: Option<&NextHop>) -> Result<(), Error> {
        self.reals.set(id, real_entry(real, service, hop), 0).map_err(map_err(MAP_REALS))
    }

    /// Takes a real out of its service: weight 0 and no service, so that no
    /// scheduler picks it and its connections are dropped, until its id is
    /// released.
    fn retire_real(&mut self, id: u32) -> Result<(), Error> {
        let mut entry = self.reals.get(&id, 0).map_err(map_err(MAP_REALS))?;
        entry.weight = 0;
        entry.service = u32::MAX;
        self.reals.set(id, entry, 0).map_err(map_err(MAP_REALS))?;
        self.mh_weights.remove(&id);
        self.ids.retired.insert(id);
        Ok(())
    }

    fn add_service(&mut self, service: &config::Service, nexthop: &StdHashMap<IpAddr, NextHop>) -> Result<Installed, Error> {
        let id = self.ids.free_services.pop_first().ok_or(Error::NoFreeIds { wanted: 1, free: 0, retired: 0 })?;
        let mut real_ids = Vec::with_capacity(service.reals.len());
        for real in &service.reals {
            let real_id = self.take_real_id()?;
            self.write_real(real, real_id, id, nexthop.get(&real.addr))?;
            self.mh_weights.insert(real_id, real.weight);
            real_ids.push(real_id);
        }
        let installed = Installed { service: service.clone(), id, real_ids };
        self.write_list(&installed)?;
        let sched = tables::sched_tables(service, &self.last_weights(&installed));
        self.sched_state.set(id, sched.state, 0).map_err(map_err(MAP_SCHED_STATE))?;
        self.write_buckets(id, &sched)?;
        self.write_service(&installed)?;
        Ok(installed)
    }

    fn remove_service(&mut self, old: &Installed) -> Result<(), Error> {
        // Unreachable first, then its reals.
        if old.service.vip.is_range() {
            self.service_ranges.remove(&tables::range_key(&old.service)).map_err(map_err(MAP_SERVICE_RANGES))?;
        } else {
            self.services.remove(&tables::service_key(&old.service)).map_err(map_err(MAP_SERVICES))?;
        }
        for &id in &old.real_ids {
            self.retire_real(id)?;
        }
        if old.service.scheduler == Scheduler::Mh {
            // Absent already is fine.
            let _ = self.maglev.remove(&old.id);
        }
        self.ids.free_services.insert(old.id);
        Ok(())
    }

    fn update_service(
        &mut self,
        old: Installed,
        want: &config::Service,
        nexthop: &StdHashMap<IpAddr, NextHop>,
        applied: &mut Applied,
    ) -> Result<Installed, Error> {
        let plan = plan_reals(&old, want);
        let service_changed = !same_service_value(&old.service, want);
        let reals_changed = plan.edited || !plan.removed.is_empty() || plan.reals.iter().any(|(_, id)| id.is_none());
        let id = old.id;
        let mut reals = Vec::with_capacity(plan.reals.len());
        let mut real_ids = Vec::with_capacity(plan.reals.len());
        let mut added = 0u32;
        let old_entries: StdHashMap<u32, &config::Real> = old.real_ids.iter().copied().zip(&old.service.reals).collect();
        for (real, staying) in plan.reals {
            let real_id = match staying {
                Some(real_id) => {
                    let before = old_entries[&real_id];
                    if !same_entry(before, &real) {
                        self.write_real(&real, real_id, id, nexthop.get(&real.addr))?;
                        let last = self.mh_weights.get(&real_id).copied().unwrap_or(before.weight);
                        self.mh_weights.insert(real_id, mh_last_weight(last, real.weight, false));
                        applied.reals_changed += 1;
                    }
                    real_id
                }
                None => {
                    let real_id = self.take_real_id()?;
                    self.write_real(&real, real_id, id, nexthop.get(&real.addr))?;
                    self.mh_weights.insert(real_id, mh_last_weight(0, real.weight, true));
                    applied.reals_added += 1;
                    added += 1;
                    real_id
                }
            };
            reals.push(real);
            real_ids.push(real_id);
        }
        for &(real_id, _) in &plan.removed {
            self.retire_real(real_id)?;
            applied.reals_removed += 1;
        }
        let mut service = want.clone();
        service.reals = reals;
        let installed = Installed { service, id, real_ids };
        if !service_changed && !reals_changed {
            // The health check or hooks may differ; the maps do not.
            return Ok(installed);
        }
        applied.services_changed += 1;
        self.write_list(&installed)?;

        let sched = tables::sched_tables(&installed.service, &self.last_weights(&installed));
        if service_changed && old.service.scheduler != want.scheduler {
            // A new scheduler starts from its own initial state.
            if old.service.scheduler == Scheduler::Mh {
                let _ = self.maglev.remove(&id);
            }
            self.sched_state.set(id, sched.state, 0).map_err(map_err(MAP_SCHED_STATE))?;
        } else if reals_changed {
            // IPVS's add_dest / del_dest / upd_dest callbacks.
            let mut state = self.sched_state.get(&id, 0).map_err(map_err(MAP_SCHED_STATE))?;
            match want.scheduler {
                Scheduler::Rr => {
                    let mut removed: Vec<u32> = plan.removed.iter().map(|&(_, scan)| scan).collect();
                    removed.sort_unstable_by(|a, b| b.cmp(a));
                    for scan in removed {
                        state.cursor = rr_cursor_after_del(state.cursor, scan);
                    }
                    for _ in 0..added {
                        state.cursor = rr_cursor_after_add(state.cursor);
                    }
                }
                Scheduler::Wrr => state.dest_changed(installed.service.reals.iter().rev().map(|r| r.weight)),
                _ => {}
            }
            self.sched_state.set(id, state, 0).map_err(map_err(MAP_SCHED_STATE))?;
        }
        self.write_buckets(id, &sched)?;
        self.write_service(&installed)?;
        Ok(installed)
    }

    /// mh's last non-zero weight of each real, in install order.
    fn last_weights(&self, installed: &Installed) -> Vec<u32> {
        installed
            .real_ids
            .iter()
            .zip(&installed.service.reals)
            .map(|(id, r)| self.mh_weights.get(id).copied().unwrap_or(r.weight))
            .collect()
    }

    fn write_list(&mut self, installed: &Installed) -> Result<(), Error> {
        // Newest first; the slots past the end keep ids of retired reals or
        // 0, which a reader holding the old length sees as weight 0 at worst.
        let mut list = ServiceReals::default();
        for (slot, id) in list.ids.iter_mut().zip(installed.real_ids.iter().rev()) {
            *slot = *id;
        }
        self.service_reals.set(installed.id, list, 0).map_err(map_err(MAP_SERVICE_REALS))
    }

    fn write_buckets(&mut self, id: u32, sched: &tables::SchedTables) -> Result<(), Error> {
        if let Some(buckets) = sched.buckets {
            self.buckets.set(id, buckets, 0).map_err(map_err(MAP_BUCKETS))?;
        }
        if let Some(table) = &sched.maglev {
            self.maglev.insert(id, table.as_ref(), 0).map_err(map_err(MAP_MAGLEV))?;
        }
        Ok(())
    }

    fn write_service(&mut self, installed: &Installed) -> Result<(), Error> {
        let value = tables::service_value(&installed.service, installed.id);
        if installed.service.vip.is_range() {
            self.service_ranges
                .insert(&tables::range_key(&installed.service), value, 0)
                .map_err(map_err(MAP_SERVICE_RANGES))
        } else {
            self.services.insert(tables::service_key(&installed.service), value, 0).map_err(map_err(MAP_SERVICES))
        }
    }

    /// Frees the retired reals that nothing counts against any more: no
    /// active, inactive or persistence count, and no connection entry or
    /// template among `referenced` (the real ids the sweeper just saw).
    /// Returns how many were released.
    pub fn release_retired(&mut self, referenced: &std::collections::HashSet<u32>) -> usize {
        let free: Vec<u32> = self
            .ids
            .retired
            .iter()
            .copied()
            .filter(|id| {
                let c = self.real_conns.get(*id);
                c.active == 0 && c.inactive == 0 && c.persist == 0 && !referenced.contains(id)
            })
            .collect();
        for id in &free {
            self.ids.retired.remove(id);
            self.ids.free_reals.insert(*id);
        }
        free.len()
    }

    /// Whether a real id is retired: out of its service, waiting until
    /// nothing counts on it.
    #[must_use]
    pub fn is_retired(&self, real: u32) -> bool {
        self.ids.retired.contains(&real)
    }

    /// The retired real ids (see [`Dataplane::release_retired`]).
    #[must_use]
    pub fn retired_ids(&self) -> Vec<u32> {
        self.ids.retired.iter().copied().collect()
    }

    /// `REALS[id]` as the data plane sees it.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn real_entry(&self, id: u32) -> Result<lb_common::Real, Error> {
        self.reals.get(&id, 0).map_err(map_err(MAP_REALS))
    }

    /// `SCHED_STATE[id]` of a service.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn sched_state(&self, service: u32) -> Result<lb_common::SchedState, Error> {
        self.sched_state.get(&service, 0).map_err(map_err(MAP_SCHED_STATE))
    }

    /// The `SERVICES` value of a single-VIP service, if installed.
    #[must_use]
    pub fn service_entry(&self, service: &config::Service) -> Option<lb_common::Service> {
        self.services.get(&tables::service_key(service), 0).ok()
    }
}

#[cfg(test)]
mod tests {
    use lb_common::sched::Scheduler;

    use super::*;
    use crate::config::testing::real;

    fn service(reals: Vec<config::Real>) -> config::Service {
        crate::config::testing::service(Scheduler::Rr, reals)
    }

    #[test]
    fn staying_reals_keep_their_place_and_id_and_new_ones_come_last() {
        let old = Installed { service: service(vec![real(1, 1), real(2, 1), real(3, 1)]), id: 0, real_ids: vec![7, 8, 9] };
        // The file now lists 4, 3, 1 (2 removed, 3 reweighted, 4 new).
        let plan = plan_reals(&old, &service(vec![real(4, 1), real(3, 5), real(1, 1)]));
        let order: Vec<(u8, Option<u32>)> = plan.reals.iter().map(|(r, id)| (crate::addr::to_map(r.addr).0[0].to_ne_bytes()[3], *id)).collect();
        assert_eq!(order, [(1, Some(7)), (3, Some(9)), (4, None)]);
        assert_eq!(plan.reals[1].0.weight, 5);
        // Real 2 was at install index 1 of 3: scan index 1.
        assert_eq!(plan.removed, [(8, 1)]);
        assert!(plan.edited);
    }

    #[test]
    fn an_unchanged_service_plans_nothing() {
        let reals = vec![real(1, 1), real(2, 3)];
        let old = Installed { service: service(reals.clone()), id: 3, real_ids: vec![1, 2] };
        let mut want = service(reals);
        // A different check changes no map entry.
        want.reals[0].check.failure_count = 9;
        let plan = plan_reals(&old, &want);
        assert!(!plan.edited && plan.removed.is_empty());
        assert_eq!(plan.reals.iter().map(|(_, id)| *id).collect::<Vec<_>>(), [Some(1), Some(2)]);
        assert!(same_service_value(&old.service, &want));
        want.persistence = Some(config::Persistence { timeout: 60, netmask: IpAddr::V4(std::net::Ipv4Addr::BROADCAST) });
        assert!(!same_service_value(&old.service, &want));
    }
}
