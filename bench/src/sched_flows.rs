//! New connections through every scheduler: a SYN of a new flow on every
//! call, scheduled over 8, 64 or 256 NAT reals.
//!
//! Every call's verdict and output are checked, as for the other paths: the
//! expected real comes from the reference model (`lb_common::sched`, which
//! the conformance suite holds the data plane to), run here over the same
//! real list and connection counts.

use std::{cell::RefCell, collections::HashMap, rc::Rc, time::Duration};

use lb_common::{
    AF_INET, AddrKey, IPPROTO_TCP, LblcEntry, MAP_LBLC, MAP_LBLCR, PROG_DIRECTOR, Real, RealConns,
    SchedState,
    sched::{
        Dest, LblcrEntry, Scheduler, dh_schedule, lblc_schedule, lblcr_schedule, lc_schedule,
        mh_schedule, nq_schedule, rr_schedule, sed_schedule, sh_schedule, wlc_schedule,
        wrr_schedule,
    },
    v4_addr,
};

use crate::{Case, check, support::*};

/// The address of real number `i` of a service.
pub fn nth_real(i: u64) -> [u8; 4] {
    [10, 1, (i >> 8) as u8, i as u8]
}

/// Schedulers that look at the destination: their service is an address
/// range, and the flows go to 1024 addresses in it.
fn by_destination(sched: Scheduler) -> bool {
    matches!(sched, Scheduler::Dh | Scheduler::Lblc | Scheduler::Lblcr)
}

const DESTINATIONS: u64 = 1024;

pub struct SchedFlows {
    what: &'static str,
    /// One data plane for every scheduler's service (loading one takes
    /// seconds: the verifier checks 13 programs).
    lb: Rc<RefCell<Lb>>,
    sched: Scheduler,
    /// The VIP, or the range's first two octets.
    vip: [u8; 4],
    service: u32,
    /// Scan order.
    ids: Vec<u32>,
    reals: Vec<Real>,
    initial: SchedState,
    buckets: Vec<u32>,
    maglev: Vec<u32>,
    // The model: active connections per real (every SYN leaves one in
    // SYN_RECV), the scheduler's state and caches.
    active: Vec<u32>,
    state: SchedState,
    lblc: HashMap<[u32; 4], u32>,
    lblcr: HashMap<[u32; 4], LblcrEntry>,
    /// SYNs sent this run: numbers the flow.
    sent: u64,
    out: Vec<u8>,
}

impl SchedFlows {
    /// Service number `k` of the shared data plane: `sched` over `n` reals
    /// with weights 1, 2, 3, 1, 2, 3... in scan order.
    pub fn new(what: &'static str, lb: Rc<RefCell<Lb>>, k: u8, sched: Scheduler, n: u64) -> Self {
        let reals: Vec<Real> = (0..n)
            .map(|i| Real {
                weight: 1 + (i % 3) as u32,
                ..nat_real(nth_real(i), REAL_HTTP)
            })
            .collect();
        let (vip, at) = if by_destination(sched) {
            ([10, 60 + k, 0, 0], Vip::Range([10, 60 + k, 0, 0], 16, HTTP))
        } else {
            ([10, 99, k, 1], Vip::Exact([10, 99, k, 1], HTTP))
        };
        let (service, ids) =
            lb.borrow_mut()
                .add_scheduled_service(at, IPPROTO_TCP, sched.id(), 0, &reals);
        let weights: Vec<u32> = reals.iter().map(|r| r.weight).collect();
        let (initial, buckets, maglev) = sched_tables(sched.id(), &reals, &weights);
        Self {
            what,
            lb,
            sched,
            vip,
            service,
            ids,
            reals,
            initial,
            buckets: buckets.map_or_else(Vec::new, |b| b.reals.to_vec()),
            maglev: maglev.map_or_else(Vec::new, |t| t.reals.to_vec()),
            active: vec![0; n as usize],
            state: initial,
            lblc: HashMap::new(),
            lblcr: HashMap::new(),
            sent: 0,
            out: vec![0; 256],
        }
    }

    /// The flow of SYN number `i`: a client address of its own, a port,
    /// and (for a range service) one of 1024 destinations.
    fn flow(&self, i: u64) -> Pkt {
        let client = (0x6440_0000 + i as u32).to_be_bytes(); // 100.64.0.0 + i
        let sport = 10_000 + (i % 50_000) as u16;
        let daddr = if by_destination(self.sched) {
            let d = i % DESTINATIONS;
            [self.vip[0], self.vip[1], (d >> 8) as u8, d as u8 + 1]
        } else {
            self.vip
        };
        Pkt::tcp(sport, HTTP, SYN)
            .from(client, sport)
            .to(daddr, HTTP)
    }

    /// The model's pick for a flow (a scan index), updating its state.
    fn predict(&mut self, p: &Pkt) -> usize {
        let dests: Vec<Dest> = (0..self.ids.len())
            .map(|i| Dest {
                id: self.ids[i],
                weight: self.reals[i].weight,
                active: self.active[i],
                inactive: 0,
                overloaded: false,
            })
            .collect();
        let n = dests.len() as u32;
        let real = |i: u32| dests.get(i as usize).copied();
        let index_of = |id: u32| dests.iter().position(|d| d.id == id).map(|i| i as u32);
        let by_id = |id: u32| dests.iter().find(|d| d.id == id).copied();
        let (saddr, daddr) = (v4_addr(p.src), v4_addr(p.dst));
        let sport = port_be(p.ports().0);
        let pick = match self.sched {
            Scheduler::Rr => {
                let i = rr_schedule(self.state.cursor, n, real);
                if let Some(i) = i {
                    self.state.cursor = i + 1;
                }
                i
            }
            Scheduler::Wrr => wrr_schedule(&mut self.state, n, real),
            Scheduler::Lc => lc_schedule(n, real),
            Scheduler::Wlc => wlc_schedule(n, real),
            Scheduler::Sed => sed_schedule(n, real),
            Scheduler::Nq => nq_schedule(n, real),
            Scheduler::Dh => dh_schedule(
                &daddr,
                AF_INET,
                |b| self.buckets.get(b as usize).copied(),
                real,
            ),
            Scheduler::Sh => sh_schedule(
                &saddr,
                AF_INET,
                sport,
                0,
                |b| self.buckets.get(b as usize).copied(),
                real,
            ),
            Scheduler::Mh => mh_schedule(
                &saddr,
                AF_INET,
                sport,
                0,
                |s| self.maglev.get(s as usize).copied(),
                real,
            ),
            Scheduler::Lblc => {
                let cached = self.lblc.get(&daddr).and_then(|&id| by_id(id));
                let d = lblc_schedule(cached, n, real).expect("an available real");
                self.lblc.insert(daddr, d.id);
                index_of(d.id)
            }
            Scheduler::Lblcr => {
                let mut entry = self.lblcr.get(&daddr).copied().unwrap_or_default();
                // Sets expire after a day: the clock never matters here.
                let d = lblcr_schedule(&mut entry, 0, 86_400_000_000_000, by_id, n, real)
                    .expect("an available real");
                self.lblcr.insert(daddr, entry);
                index_of(d.id)
            }
        };
        let i = pick.expect("every real is available") as usize;
        self.active[i] += 1;
        i
    }
}

impl Case for SchedFlows {
    fn packet(&mut self) -> Duration {
        let syn = self.flow(self.sent);
        let i = self.predict(&syn);
        let expected = nat_to(&syn, nth_real(i as u64), REAL_HTTP).frame();
        let (action, len, time) =
            self.lb
                .borrow()
                .run_into(PROG_DIRECTOR, &syn.frame(), &mut self.out);
        check(self.what, (action, &self.out[..len]), XDP_TX, &expected);
        self.sent += 1;
        time
    }

    /// Every run starts from the same state: no connections (the table
    /// never fills), counts at 0, the scheduler's state and caches new.
    fn reset(&mut self) {
        let mut lb = self.lb.borrow_mut();
        lb.clear_conns();
        for &id in &self.ids {
            lb.put_real_conns(id, RealConns::default());
        }
        lb.put_sched_state(self.service, self.initial);
        for name in [MAP_LBLC, MAP_LBLCR] {
            let keys: Vec<AddrKey> = if name == MAP_LBLC {
                let m = lb.hash::<AddrKey, LblcEntry>(name);
                m.keys().map(|k| k.expect("a key")).collect()
            } else {
                let m = lb.hash::<AddrKey, LblcrEntry>(name);
                m.keys().map(|k| k.expect("a key")).collect()
            };
            for key in keys {
                if name == MAP_LBLC {
                    lb.hash::<AddrKey, LblcEntry>(name)
                        .remove(&key)
                        .expect("delete");
                } else {
                    lb.hash::<AddrKey, LblcrEntry>(name)
                        .remove(&key)
                        .expect("delete");
                }
            }
        }
        self.active.fill(0);
        self.state = self.initial;
        self.lblc.clear();
        self.lblcr.clear();
        self.sent = 0;
    }
}
