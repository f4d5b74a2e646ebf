//! Scheduler conformance: seeded random sequences of events are replayed
//! through the reference model (`lb_common::sched`, driven here over a
//! host-side copy of every real's state) and through the loaded XDP program
//! (BPF_PROG_TEST_RUN), and every scheduling decision must match, "no real"
//! (XDP_DROP) included. The test plays the controller: it writes REALS,
//! SERVICE_REALS, SCHED_STATE and the tables as reals are added, removed and
//! edited, and expires connections as the sweeper would.
//!
//! The model's connection counts are kept independently (a SYN binds a new
//! connection as inactive, then IPVS's TCP state machine moves it) and are
//! compared with REAL_CONNS after every event, so the data plane's
//! accounting is checked as well as its picks.
//!
//! Each scheduler test also runs a few hand-checked vectors through XDP,
//! whose expected answers are worked out by hand in the comments, not by
//! the model.
//!
//! Needs root: `cargo test --release -p tests --test conformance`.
//! `XLVS_CONFORMANCE_EVENTS` sets the events per scenario (default 10000);
//! `XLVS_CONFORMANCE_SEED` changes every scenario's seed (a failure prints
//! the seed that replays it).

mod support;

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    fmt::Write as _,
    time::Instant,
};

use lb_common::{
    AF_INET, AddrKey, CONN_F_INACTIVE, CONN_F_NOOUTPUT, CONN_F_TEMPLATED, Conn, ConnKey, FWD_DR, FWD_NAT,
    IPPROTO_TCP, IPPROTO_UDP, LblcEntry, MAP_CONNS, MAP_LBLC, MAP_LBLCR, MAP_TEMPLATES, Real,
    RealConns, SVC_F_PERSISTENT, Service, Template, counter,
    sched::{
        Dest, LblcrEntry, SVC_F_MH_FALLBACK, SVC_F_MH_PORT, SVC_F_SH_FALLBACK, SVC_F_SH_PORT,
        Scheduler, WrrState, dh_schedule, lblc_schedule, lblcr_schedule, lc_schedule,
        mh_last_weight, mh_schedule, nq_schedule, overload_on_bind, overload_on_edit,
        overload_on_unbind, rr_cursor_after_add, rr_cursor_after_del, rr_schedule, sed_schedule,
        sh_schedule, wlc_schedule, wrr_schedule,
    },
    tcp_state::{self, Direction},
    v4_addr,
};
use support::*;

// ------------------------------------------------------------- settings

const DEFAULT_EVENTS: usize = 10_000;
/// The base seed; `XLVS_CONFORMANCE_SEED` replaces it.
const DEFAULT_SEED: u64 = 0x005e_ed0f_c0f0_4da7;
/// Real ids a scenario may use at most (REALS has 8192 slots per instance,
/// shared by the scenarios of one test).
const ID_BUDGET: u32 = 7_600;
const DAY_NS: u64 = 86_400 * 1_000_000_000;

fn events() -> usize {
    std::env::var("XLVS_CONFORMANCE_EVENTS")
        .ok()
        .map(|s| s.parse().expect("XLVS_CONFORMANCE_EVENTS is a number"))
        .unwrap_or(DEFAULT_EVENTS)
}

fn base_seed() -> u64 {
    std::env::var("XLVS_CONFORMANCE_SEED")
        .ok()
        .map_or(DEFAULT_SEED, |s| {
            let s = s.trim();
            s.strip_prefix("0x")
                .map_or_else(|| s.parse(), |h| u64::from_str_radix(h, 16))
                .expect("XLVS_CONFORMANCE_SEED is a number (decimal or 0x hex)")
        })
}

/// splitmix64: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 0..n (0 when n is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + self.below(u64::from(hi - lo + 1)) as u32
    }

    /// True with probability `pct` percent.
    fn pct(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// FNV-1a, to give every scenario its own seed from its name.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write into.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// ------------------------------------------------------------- scenarios

/// One random scenario: a service, its starting reals, and what varies.
#[derive(Clone, Copy, Debug)]
struct Variant {
    name: &'static str,
    sched: Scheduler,
    /// Scheduler flags (`sh-port`, `mh-fallback`, ...).
    flags: u8,
    /// Persistence with a /24 client mask.
    persistent: bool,
    udp: bool,
    /// The service is 10.x.0.0/16:80 in SERVICE_RANGES (destinations vary)
    /// rather than one VIP:80.
    range: bool,
    /// Starting reals: a random count in `min..=max` (`max` also bounds
    /// additions).
    min_reals: u32,
    max_reals: u32,
    /// lblcr's set expiration (`Service::lblc_expire_ns`).
    expire_ns: u64,
}

const fn variant(name: &'static str, sched: Scheduler) -> Variant {
    Variant {
        name,
        sched,
        flags: 0,
        persistent: false,
        udp: false,
        range: false,
        min_reals: 3,
        max_reals: 16,
        expire_ns: DAY_NS,
    }
}

impl Variant {
    const fn flags(self, flags: u8) -> Self {
        Self { flags, ..self }
    }
    const fn persistent(self) -> Self {
        Self {
            persistent: true,
            ..self
        }
    }
    const fn udp(self) -> Self {
        Self { udp: true, ..self }
    }
    const fn range(self) -> Self {
        Self {
            range: true,
            ..self
        }
    }
    const fn reals(self, min_reals: u32, max_reals: u32) -> Self {
        Self {
            min_reals,
            max_reals,
            ..self
        }
    }
    const fn expire(self, expire_ns: u64) -> Self {
        Self { expire_ns, ..self }
    }
    fn proto(&self) -> u8 {
        if self.udp { IPPROTO_UDP } else { IPPROTO_TCP }
    }
}

/// Runs every scenario on one loaded data plane, one after the other, each
/// on a service (and reals) of its own.
fn run_scenarios(lb: &mut Lb, variants: &[Variant]) {
    let events = events();
    let base = base_seed();
    let budget = ID_BUDGET / variants.len() as u32;
    for (k, v) in variants.iter().enumerate() {
        let seed = base ^ fnv(v.name);
        let started = Instant::now();
        let mut s = Scenario::new(lb, *v, seed, k as u8, budget);
        s.run(events);
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "{}: {events} events (seed {seed:#x}) in {elapsed:.2} s: {}",
            v.name,
            s.tally.summary()
        );
        s.tally.assert_coverage(v);
    }
}

/// What a scenario did, to show and to check that it did something.
#[derive(Default)]
struct Tally {
    scheduled: u64,
    dropped: u64,
    segments: u64,
    expired: u64,
    /// Connections a client's SYN reopened (`conn_rescheduled`).
    reopened: u64,
    weights: u64,
    thresholds: u64,
    added: u64,
    removed: u64,
    aged: u64,
    forgotten: u64,
    /// Decisions taken while some real was overloaded.
    with_overload: u64,
    /// Decisions that persistence answered from a template.
    from_template: u64,
    /// Live connections at most.
    peak_conns: usize,
}

impl Tally {
    fn summary(&self) -> String {
        format!(
            "{} scheduled, {} no-real drops, {} segments, {} expiries, {} reopened, {} weight and {} \
             threshold edits, {} reals added, {} removed, {} decisions with a real overloaded, \
             {} from templates, {} aged, {} cache entries dropped, peak {} connections",
            self.scheduled,
            self.dropped,
            self.segments,
            self.expired,
            self.reopened,
            self.weights,
            self.thresholds,
            self.added,
            self.removed,
            self.with_overload,
            self.from_template,
            self.aged,
            self.forgotten,
            self.peak_conns
        )
    }

    /// A scenario that never exercised the interesting paths proves little.
    fn assert_coverage(&self, v: &Variant) {
        let n = events() as u64;
        if n < 2_000 {
            return;
        }
        assert!(
            self.scheduled > n / 5,
            "{}: few connections scheduled",
            v.name
        );
        // (256 reals are never all unavailable at once.)
        assert!(
            self.dropped > 0 || v.min_reals > 16,
            "{}: never a no-real drop",
            v.name
        );
        assert!(
            self.with_overload > 0,
            "{}: never an overloaded real",
            v.name
        );
        assert!(
            self.added > 0 && self.removed > 0,
            "{}: reals never added or removed",
            v.name
        );
        if !v.udp {
            assert!(self.segments > n / 10, "{}: few segments", v.name);
        }
        if v.persistent {
            assert!(self.from_template > 0, "{}: templates never used", v.name);
        }
    }
}

/// A real as the model sees it: what the controller wrote to REALS, and its
/// connection counts as IPVS keeps them.
#[derive(Clone, Copy, Debug)]
struct MReal {
    id: u32,
    real: Real,
    /// mh's last non-zero weight.
    last_weight: u32,
    active: u32,
    inactive: u32,
    overloaded: bool,
}

impl MReal {
    fn dest(&self) -> Dest {
        Dest {
            id: self.id,
            weight: self.real.weight,
            active: self.active,
            inactive: self.inactive,
            overloaded: self.overloaded,
        }
    }
}

/// A live connection.
#[derive(Clone, Copy, Debug)]
struct MConn {
    key: ConnKey,
    client: [u8; 4],
    cport: u16,
    vaddr: [u8; 4],
    real: u32,
    state: u8,
    inactive: bool,
    nat: bool,
}

struct Scenario<'a> {
    lb: &'a mut Lb,
    v: Variant,
    seed: u64,
    rng: Rng,
    vip: Vip,
    id: u32,
    service: Service,
    /// Scan order: newest-added first.
    reals: Vec<MReal>,
    /// rr's cursor (the rest zero), or wrr's state.
    state: WrrState,
    buckets: Box<[u32; lb_common::sched::DH_TAB_SIZE]>,
    maglev: Box<[u32; lb_common::sched::MH_TAB_SIZE]>,
    // Ordered maps: the events pick entries from them, and a replay must
    // pick the same ones.
    lblc: BTreeMap<[u32; 4], u32>,
    lblcr: BTreeMap<[u32; 4], LblcrEntry>,
    templates: BTreeMap<[u32; 4], u32>,
    /// PersistConn by real id (removed reals too).
    persist: BTreeMap<u32, u64>,
    conns: Vec<MConn>,
    in_use: HashSet<([u8; 4], u16)>,
    clients: Vec<[u8; 4]>,
    dests: Vec<[u8; 4]>,
    ids_left: u32,
    /// How many connections the event mix currently aims for.
    target_conns: usize,
    step: usize,
    /// Events in the run.
    events: usize,
    recent: VecDeque<String>,
    tally: Tally,
    /// COUNTERS at the start, to compare the scenario's share.
    counters_before: Vec<u64>,
}

const VPORT: u16 = 80;

fn real_addr(id: u32) -> [u8; 4] {
    [172, 16 + (id >> 16) as u8, (id >> 8) as u8, id as u8]
}

fn ip(a: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

impl<'a> Scenario<'a> {
    fn new(lb: &'a mut Lb, v: Variant, seed: u64, k: u8, budget: u32) -> Self {
        let mut rng = Rng(seed);
        let vip = if v.range {
            Vip::Range([10, 50 + k, 0, 0], 16, VPORT)
        } else {
            Vip::Exact([10, 100, k, 100], VPORT)
        };
        // Clients in a few /24s, so that persistence and the source hashes
        // see the same networks and hosts again and again.
        let mut clients = Vec::new();
        for _ in 0..12 {
            let net = [100, 64 + rng.below(64) as u8, rng.below(256) as u8];
            for _ in 0..rng.range(1, 16) {
                clients.push([net[0], net[1], net[2], rng.range(1, 254) as u8]);
            }
        }
        clients.sort_unstable();
        clients.dedup();
        let dests = if v.range {
            let mut d: Vec<[u8; 4]> = (0..48)
                .map(|_| [10, 50 + k, rng.below(256) as u8, rng.range(1, 254) as u8])
                .collect();
            d.sort_unstable();
            d.dedup();
            d
        } else {
            vec![[10, 100, k, 100]]
        };
        let id = lb.reserve_service();
        let service = Service {
            id,
            nreals: 0,
            scheduler: v.sched.id(),
            flags: v.flags | if v.persistent { SVC_F_PERSISTENT } else { 0 },
            persist_timeout: 360,
            persist_mask: v4_addr(if v.persistent {
                [255, 255, 255, 0]
            } else {
                [255; 4]
            }),
            lblc_expire_ns: v.expire_ns,
            ..Service::default()
        };
        let counters_before = (0..counter::COUNT).map(|c| lb.counter(c)).collect();
        let mut s = Self {
            lb,
            v,
            seed,
            rng,
            vip,
            id,
            service,
            reals: Vec::new(),
            state: WrrState::default(),
            buckets: Box::new([lb_common::sched::NO_REAL; lb_common::sched::DH_TAB_SIZE]),
            maglev: Box::new([lb_common::sched::NO_REAL; lb_common::sched::MH_TAB_SIZE]),
            lblc: BTreeMap::new(),
            lblcr: BTreeMap::new(),
            templates: BTreeMap::new(),
            persist: BTreeMap::new(),
            conns: Vec::new(),
            in_use: HashSet::new(),
            clients,
            dests,
            ids_left: budget,
            target_conns: 8,
            step: 0,
            events: 0,
            recent: VecDeque::new(),
            tally: Tally::default(),
            counters_before,
        };
        // The starting reals, added one by one as a controller would
        // (each at the head of the list).
        let n = s.rng.range(v.min_reals, v.max_reals);
        for _ in 0..n {
            let (id, real) = s.random_real();
            s.insert_real(id, real);
        }
        s.state = if v.sched == Scheduler::Wrr {
            WrrState::new(s.weights())
        } else {
            WrrState::default()
        };
        s.write_tables();
        s.write_service();
        s
    }

    // --------------------------------------------------------- controller

    fn random_weight(&mut self) -> u32 {
        match self.rng.below(100) {
            0..=1 => [7, 10, 100, 1000][self.rng.index(4)],
            _ => self.rng.range(0, 5),
        }
    }

    /// A new real (not yet in the service) and its id.
    fn random_real(&mut self) -> (u32, Real) {
        let id = self.lb.reserve_real();
        self.ids_left -= 1;
        let addr = real_addr(id);
        let mut real = if self.rng.pct(70) {
            nat_real(addr, REAL_HTTP)
        } else {
            dr_real(addr, VPORT)
        };
        real.weight = self.random_weight();
        if self.rng.pct(15) {
            real.u_threshold = self.rng.range(1, 6);
            real.l_threshold = if self.rng.pct(50) {
                0
            } else {
                self.rng.range(1, real.u_threshold)
            };
        }
        (id, real)
    }

    /// Adds a real at the head of the list.
    fn insert_real(&mut self, id: u32, mut real: Real) {
        real.service = self.id;
        self.lb.set_real(id, real);
        self.lb.put_real_conns(id, RealConns::default());
        self.reals.insert(
            0,
            MReal {
                id,
                real,
                last_weight: mh_last_weight(0, real.weight, true),
                active: 0,
                inactive: 0,
                overloaded: false,
            },
        );
        self.persist.entry(id).or_insert(0);
    }

    fn weights(&self) -> Vec<u32> {
        self.reals.iter().map(|r| r.real.weight).collect()
    }

    /// dh, sh and mh tables from the current list, into both sides.
    fn write_tables(&mut self) {
        let reals: Vec<Real> = self.reals.iter().map(|r| r.real).collect();
        let last: Vec<u32> = self.reals.iter().map(|r| r.last_weight).collect();
        let (_, buckets, maglev) = sched_tables(self.v.sched.id(), &reals, &last);
        if let Some(b) = buckets {
            *self.buckets = b.reals;
            self.lb.put_buckets(self.id, &b);
        }
        if let Some(t) = maglev {
            *self.maglev = t.reals;
            self.lb.put_maglev(self.id, &t);
        }
        self.lb.put_sched_state(self.id, self.state);
    }

    fn write_service(&mut self) {
        let ids: Vec<u32> = self.reals.iter().map(|r| r.id).collect();
        self.lb.put_service_reals(self.id, &ids);
        self.service.nreals = ids.len() as u32;
        self.lb.put_service(self.vip, self.v.proto(), self.service);
    }

    /// IPVS's scheduler callbacks for a changed list or an edited real:
    /// wrr's `dest_changed`, and sh's and mh's rebuilds (dh rebuilds on add
    /// and delete only, rr keeps its cursor on the real it was on).
    /// (Callers check SCHED_STATE against the model before they change
    /// anything.)
    fn dest_changed(&mut self, list_changed: bool) {
        if self.v.sched == Scheduler::Wrr {
            let w = self.weights();
            self.state.dest_changed(w);
        }
        let rebuild = match self.v.sched {
            Scheduler::Sh | Scheduler::Mh => true,
            Scheduler::Dh => list_changed,
            _ => false,
        };
        if rebuild {
            self.write_tables();
        } else {
            self.lb.put_sched_state(self.id, self.state);
        }
    }

    // ------------------------------------------------------------- model

    fn dests(&self) -> Vec<Dest> {
        self.reals.iter().map(MReal::dest).collect()
    }

    fn index_of(&self, id: u32) -> Option<usize> {
        self.reals.iter().position(|r| r.id == id)
    }

    /// The model's decision for a new connection (persistence, then the
    /// scheduler), updating the model's scheduler state as the data plane
    /// updates its maps. Returns the real id.
    fn model_pick(&mut self, client: [u8; 4], sport: u16, daddr: [u8; 4]) -> Option<u32> {
        if !self.v.persistent {
            return self.model_schedule(client, sport, daddr);
        }
        let net = mask(client, self.service.persist_mask);
        let previous = self.templates.get(&net).copied();
        if let Some(id) = previous
            && self
                .index_of(id)
                .is_some_and(|i| self.reals[i].real.weight > 0)
        {
            self.tally.from_template += 1;
            return Some(id);
        }
        let id = self.model_schedule(client, sport, daddr)?;
        self.templates.insert(net, id);
        if let Some(p) = previous {
            *self.persist.get_mut(&p).expect("a known real") -= 1;
        }
        *self.persist.get_mut(&id).expect("a known real") += 1;
        Some(id)
    }

    fn model_schedule(&mut self, client: [u8; 4], sport: u16, daddr: [u8; 4]) -> Option<u32> {
        let dests = self.dests();
        let n = dests.len() as u32;
        let real = |i: u32| dests.get(i as usize).copied();
        let by_id = |id: u32| dests.iter().find(|d| d.id == id).copied();
        let id = |i: u32| dests[i as usize].id;
        let sport = port_be(sport);
        let flags = self.service.flags;
        match self.v.sched {
            Scheduler::Rr => {
                let i = rr_schedule(self.state.cursor, n, real)?;
                self.state.cursor = i + 1;
                Some(id(i))
            }
            Scheduler::Wrr => wrr_schedule(&mut self.state, n, real).map(id),
            Scheduler::Lc => lc_schedule(n, real).map(id),
            Scheduler::Wlc => wlc_schedule(n, real).map(id),
            Scheduler::Sed => sed_schedule(n, real).map(id),
            Scheduler::Nq => nq_schedule(n, real).map(id),
            Scheduler::Dh => {
                let b = &self.buckets;
                dh_schedule(
                    &v4_addr(daddr),
                    AF_INET,
                    |i| b.get(i as usize).copied(),
                    real,
                )
                .map(id)
            }
            Scheduler::Sh => {
                let b = &self.buckets;
                sh_schedule(
                    &v4_addr(client),
                    AF_INET,
                    sport,
                    flags,
                    |i| b.get(i as usize).copied(),
                    real,
                )
                .map(id)
            }
            Scheduler::Mh => {
                let t = &self.maglev;
                mh_schedule(
                    &v4_addr(client),
                    AF_INET,
                    sport,
                    flags,
                    |i| t.get(i as usize).copied(),
                    real,
                )
                .map(id)
            }
            Scheduler::Lblc => {
                let key = v4_addr(daddr);
                let cached = self.lblc.get(&key).and_then(|&id| by_id(id));
                let pick = lblc_schedule(cached, n, real)?;
                // `ip_vs_lblc_new()`: the entry names the pick.
                self.lblc.insert(key, pick.id);
                Some(pick.id)
            }
            Scheduler::Lblcr => {
                let key = v4_addr(daddr);
                let mut entry = self.lblcr.get(&key).copied().unwrap_or_default();
                let now = monotonic_ns();
                let pick = lblcr_schedule(&mut entry, now, self.v.expire_ns, by_id, n, real);
                // As `lblcr_schedule` asks: the entry is stored whenever it
                // comes back non-empty (the kernel edits it in place).
                if entry.len > 0 {
                    self.lblcr.insert(key, entry);
                }
                pick.map(|d| d.id)
            }
        }
    }

    // ------------------------------------------------------------ packets

    fn client_pkt(&self, client: [u8; 4], cport: u16, vaddr: [u8; 4], flags: u8) -> Pkt {
        let p = if self.v.udp {
            Pkt::udp(cport, VPORT)
        } else {
            Pkt::tcp(cport, VPORT, flags)
        };
        p.from(client, cport).to(vaddr, VPORT)
    }

    /// A client's packet as the director forwards it to `real`.
    fn forwarded(p: &Pkt, real: &Real) -> Vec<u8> {
        let addr = real.addr[0].to_ne_bytes();
        match real.forward {
            FWD_NAT => nat_to(p, addr, u16::from_be(real.port)).frame(),
            FWD_DR => p.clone().macs(DIRECTOR_REAL_MAC, real.dmac).frame(),
            other => panic!("forwarding method {other} is not generated here"),
        }
    }

    // ------------------------------------------------------------- events

    fn run(&mut self, events: usize) {
        self.events = events;
        for step in 0..events {
            self.step = step;
            if step % 500 == 0 {
                // Phases of light and heavy load, so that counts rise and
                // fall: idle reals for nq, held-open ones for lc/wlc.
                let n = self.reals.len().max(2);
                self.target_conns = match self.rng.below(4) {
                    0 => self.rng.index(n),
                    1 | 2 => self.rng.index(4 * n),
                    _ => self.rng.index(12 * n),
                }
                .min(4_000);
            }
            self.event();
            self.tally.peak_conns = self.tally.peak_conns.max(self.conns.len());
            // Every real's counts after every event (the event's own real
            // was checked already); a large service every 32 events.
            if self.reals.len() <= 32 || step % 32 == 31 {
                self.check_all_counts("after the event", false);
            }
        }
        self.check_all_counts("end of scenario", true);
        self.check_counters();
    }

    fn event(&mut self) {
        let live = self.conns.len();
        let over = live > self.target_conns;
        let n = self.reals.len() as u32;
        // Weights in tenths of a percent or so. Reals come and go at a rate
        // the scenario's id budget lasts for (ids are never reused).
        let remaining = (self.events - self.step) as u64;
        let churn = (self.ids_left as u64 * 800 / remaining.max(1)).min(if self.v.max_reals > 16 {
            20
        } else {
            30
        });
        let can_add = n < self.v.max_reals && self.ids_left > 0;
        let is_lblcr_day = self.v.sched == Scheduler::Lblcr && self.v.expire_ns == DAY_NS;
        let caches = matches!(self.v.sched, Scheduler::Lblc | Scheduler::Lblcr);
        let mix: [(u64, u8); 10] = [
            (if over { 250 } else { 450 }, b'n'),
            (if live > 0 && !self.v.udp { 250 } else { 0 }, b's'),
            (
                match (live, over) {
                    (0, _) => 0,
                    (_, true) => 300,
                    _ => 60,
                },
                b'x',
            ),
            (50, b'w'),
            (40, b't'),
            (
                if can_add {
                    churn + u64::from(n == 0) * 200
                } else {
                    0
                },
                b'a',
            ),
            (if n > 0 { churn } else { 0 }, b'r'),
            (if is_lblcr_day { 30 } else { 0 }, b'g'),
            (if caches { 10 } else { 0 }, b'f'),
            (if self.v.persistent { 10 } else { 0 }, b'p'),
        ];
        let total: u64 = mix.iter().map(|m| m.0).sum();
        let mut r = self.rng.below(total);
        let kind = mix
            .iter()
            .find(|m| {
                if r < m.0 {
                    true
                } else {
                    r -= m.0;
                    false
                }
            })
            .expect("a kind")
            .1;
        match kind {
            b'n' => self.new_conn(),
            b's' => self.segment(),
            b'x' => {
                let i = self.rng.index(self.conns.len());
                self.expire(i, "expire");
            }
            b'w' => self.edit_weight(),
            b't' => self.edit_threshold(),
            b'a' => self.add_real(),
            b'r' => self.remove_real(),
            b'g' => self.age_lblcr(),
            b'f' => self.forget_cache(),
            b'p' => self.forget_template(),
            _ => unreachable!(),
        }
    }

    fn note(&mut self, what: String) {
        if self.recent.len() == 16 {
            self.recent.pop_front();
        }
        self.recent.push_back(format!("#{} {what}", self.step));
    }

    /// Everything needed to replay and understand a mismatch.
    fn fail(&self, what: &str) -> ! {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "MISMATCH in scenario {} ({} flags {:#x}{}{}) at event #{}: {what}",
            self.v.name,
            self.v.sched,
            self.service.flags,
            if self.v.udp { ", UDP" } else { "" },
            if self.v.range { ", range service" } else { "" },
            self.step
        );
        let _ = writeln!(
            s,
            "replay: XLVS_CONFORMANCE_SEED={:#x} XLVS_CONFORMANCE_EVENTS={} (scenario seed {:#x}, \
             service id {})",
            base_seed(),
            events(),
            self.seed,
            self.id
        );
        let _ = writeln!(s, "model sched state: {:?}", self.state);
        let _ = writeln!(s, "reals in scan order (model):");
        for (i, r) in self.reals.iter().enumerate() {
            let _ = writeln!(
                s,
                "  [{i}] id {} {} w {} (last {}) active {} inactive {} overloaded {} u {} l {} {}",
                r.id,
                ip(r.real.addr[0].to_ne_bytes()),
                r.real.weight,
                r.last_weight,
                r.active,
                r.inactive,
                r.overloaded,
                r.real.u_threshold,
                r.real.l_threshold,
                if r.real.forward == FWD_NAT {
                    "NAT"
                } else {
                    "DR"
                }
            );
        }
        let _ = writeln!(s, "last events:");
        for e in &self.recent {
            let _ = writeln!(s, "  {e}");
        }
        panic!("{s}");
    }

    /// A new connection from a random client (and, on a range service, to a
    /// random destination).
    fn new_conn(&mut self) {
        let client = self.clients[self.rng.index(self.clients.len())];
        let cport = loop {
            let p = self.rng.range(1024, 65_535) as u16;
            if !self.in_use.contains(&(client, p)) {
                break p;
            }
        };
        let vaddr = self.dests[self.rng.index(self.dests.len())];
        self.open(client, cport, vaddr);
    }

    /// The first packet of a connection from `client:cport` to `vaddr`
    /// (a SYN, or a UDP datagram): scheduled, recorded and forwarded.
    fn open(&mut self, client: [u8; 4], cport: u16, vaddr: [u8; 4]) {
        let overloaded = self.reals.iter().any(|r| r.overloaded);
        let want = self.model_pick(client, cport, vaddr);
        let p = self.client_pkt(client, cport, vaddr, SYN);
        let key = p.conn_key();
        let what = format!(
            "new {} {}:{cport} -> {}:{VPORT}",
            if self.v.udp { "UDP" } else { "SYN" },
            ip(client),
            ip(vaddr)
        );
        let (action, out) = self.lb.run(&p.frame());
        let got_conn = self.lb.conn(&key);
        let describe = |id: Option<u32>| match id {
            None => "no real (XDP_DROP)".to_owned(),
            Some(id) => format!("real id {id} ({})", ip(real_addr(id))),
        };
        if action == XDP_DROP && got_conn.is_some() {
            self.fail(&format!("{what}: dropped, yet a connection entry was made"));
        }
        let got = if action == XDP_DROP {
            None
        } else {
            got_conn.map(|c| c.real)
        };
        if got != want || (want.is_some() && action != XDP_TX) {
            let idx = want.and_then(|id| self.index_of(id));
            self.fail(&format!(
                "{what}: model picks {} (scan index {idx:?}), data plane gives {} with {}",
                describe(want),
                describe(got),
                action_name(action)
            ));
        }
        if overloaded {
            self.tally.with_overload += 1;
        }
        let Some(id) = want else {
            self.tally.dropped += 1;
            self.note(format!("{what}: no real"));
            self.check_sched_state(&what);
            self.check_caches(client, vaddr, &what);
            return;
        };
        self.tally.scheduled += 1;
        let i = self.index_of(id).expect("the pick is a live real");
        let real = self.reals[i].real;
        let expected = Self::forwarded(&p, &real);
        if out != expected {
            self.fail(&format!(
                "{what}: forwarded to real id {id}, but the bytes differ"
            ));
        }
        // `accounting::bind`, then the SYN's state change.
        let r = &mut self.reals[i];
        r.inactive += 1;
        r.overloaded = overload_on_bind(r.active, r.inactive, r.real.u_threshold, r.overloaded);
        let nat = real.forward == FWD_NAT;
        let mut conn = MConn {
            key,
            client,
            cport,
            vaddr,
            real: id,
            state: tcp_state::NONE,
            inactive: true,
            nat,
        };
        if !self.v.udp {
            let dir = if nat {
                Direction::Input
            } else {
                Direction::InputOnly
            };
            self.transition(&mut conn, dir, SYN);
        }
        self.conns.push(conn);
        self.in_use.insert((client, cport));
        self.note(format!("{what}: real id {id} (scan index {i})"));
        self.check_conn(&conn, &what);
        self.check_real_counts(id, &what);
        self.check_sched_state(&what);
        self.check_caches(client, vaddr, &what);
    }

    /// IPVS's state machine on one segment, and the counts that follow
    /// (`accounting::transition`).
    fn transition(&mut self, conn: &mut MConn, dir: Direction, flags: u8) {
        conn.state = tcp_state::next(conn.state, dir, flags);
        let active = tcp_state::is_active(conn.state);
        if active != conn.inactive {
            return;
        }
        let i = self.index_of(conn.real).expect("a live connection's real");
        let r = &mut self.reals[i];
        if active {
            r.active += 1;
            r.inactive -= 1;
        } else {
            r.inactive += 1;
            r.active -= 1;
        }
        conn.inactive = !active;
    }

    /// A segment of a live connection: from the client, or (NAT) from the
    /// real.
    fn segment(&mut self) {
        let ci = self.rng.index(self.conns.len());
        let mut conn = self.conns[ci];
        let i = self.index_of(conn.real).expect("a live connection's real");
        let real = self.reals[i].real;
        let from_real = conn.nat && self.rng.pct(40);
        let flags = if from_real {
            [SYN | ACK, ACK, ACK | PSH, FIN | ACK, RST, RST | ACK][self.rng.index(6)]
        } else {
            [ACK, ACK | PSH, ACK, FIN | ACK, FIN, RST, RST | ACK, SYN][self.rng.index(8)]
        };
        // The client reusing its port after a close: IPVS expires the old
        // connection at once and schedules the SYN as a new one.
        if !from_real && tcp_state::new_conn_expected(conn.state, flags, self.v.persistent) {
            let conn = self.conns.swap_remove(ci);
            self.in_use.remove(&(conn.client, conn.cport));
            self.model_unbind(&conn);
            self.tally.reopened += 1;
            self.note(format!("reopened {}:{} (real {})", ip(conn.client), conn.cport, conn.real));
            self.open(conn.client, conn.cport, conn.vaddr);
            self.check_real_counts(conn.real, "the reopened connection's old real");
            return;
        }
        let what;
        let (input, expected) = if from_real {
            let raddr = real.addr[0].to_ne_bytes();
            let rport = u16::from_be(real.port);
            let reply = Pkt::tcp(rport, conn.cport, flags)
                .from(raddr, rport)
                .to(conn.client, conn.cport)
                .macs(real.dmac, DIRECTOR_REAL_MAC);
            let back = reply
                .clone()
                .from(conn.vaddr, VPORT)
                .ttl(reply.ttl - 1)
                .macs(DIRECTOR_MAC, ROUTER_MAC);
            what = format!(
                "real {} -> client {}:{} flags {flags:#04x}",
                conn.real,
                ip(conn.client),
                conn.cport
            );
            self.transition(&mut conn, Direction::Output, flags);
            (reply.frame(), back.frame())
        } else {
            let p = self.client_pkt(conn.client, conn.cport, conn.vaddr, flags);
            what = format!(
                "client {}:{} -> {} flags {flags:#04x} (real {})",
                ip(conn.client),
                conn.cport,
                ip(conn.vaddr),
                conn.real
            );
            let dir = if conn.nat {
                Direction::Input
            } else {
                Direction::InputOnly
            };
            self.transition(&mut conn, dir, flags);
            (p.frame(), Self::forwarded(&p, &real))
        };
        self.conns[ci] = conn;
        let (action, out) = self.lb.run(&input);
        if action != XDP_TX || out != expected {
            self.fail(&format!(
                "{what}: {} instead of XDP_TX with the expected bytes",
                action_name(action)
            ));
        }
        self.tally.segments += 1;
        self.note(format!(
            "{what}: state {}",
            tcp_state::NAMES[conn.state as usize]
        ));
        self.check_conn(&conn, &what);
        self.check_real_counts(conn.real, &what);
    }

    /// `ip_vs_unbind_dest` on the model: `conn` no longer counts on its
    /// real, whose OVERLOAD flag may clear.
    fn model_unbind(&mut self, conn: &MConn) {
        let i = self.index_of(conn.real).expect("a live connection's real");
        let r = &mut self.reals[i];
        if conn.inactive {
            r.inactive -= 1;
        } else {
            r.active -= 1;
        }
        if r.overloaded {
            r.overloaded = overload_on_unbind(r.active, r.inactive, r.real.u_threshold, r.real.l_threshold, true);
        }
    }

    /// The sweeper expires connection `ci`: both CONNS entries go, and the
    /// real's counts drop (`SharedCounters::unbind`).
    fn expire(&mut self, ci: usize, why: &str) {
        let conn = self.conns.swap_remove(ci);
        self.in_use.remove(&(conn.client, conn.cport));
        let what = format!(
            "{why} {}:{} -> {} (real {})",
            ip(conn.client),
            conn.cport,
            ip(conn.vaddr),
            conn.real
        );
        self.check_conn(&conn, &what);
        let i = self.index_of(conn.real).expect("a live connection's real");
        let real = self.reals[i].real;
        let reply = ConnKey {
            saddr: real.addr,
            daddr: v4_addr(conn.client),
            sport: real.port,
            dport: port_be(conn.cport),
            proto: self.v.proto(),
            family: AF_INET,
            _pad: [0; 2],
        };
        let mut conns = self.lb.hash::<ConnKey, Conn>(MAP_CONNS);
        conns.remove(&conn.key).expect("delete the client entry");
        if conn.nat {
            conns.remove(&reply).expect("delete the reply entry");
        }
        // The controller's unbind, on the map; the model's, on its copy.
        self.check_real_counts(conn.real, &what);
        self.model_unbind(&conn);
        let i = self.index_of(conn.real).expect("a live connection's real");
        let r = &self.reals[i];
        let mut rc = self.lb.real_conns(conn.real);
        if conn.inactive {
            rc.inactive -= 1;
        } else {
            rc.active -= 1;
        }
        if rc.overloaded != 0
            && !overload_on_unbind(
                rc.active as u32,
                rc.inactive as u32,
                r.real.u_threshold,
                r.real.l_threshold,
                true,
            )
        {
            rc.overloaded = 0;
        }
        self.lb.put_real_conns(conn.real, rc);
        self.tally.expired += 1;
        self.note(what);
    }

    fn edit_weight(&mut self) {
        if self.reals.is_empty() {
            return;
        }
        self.check_sched_state("before a weight edit");
        let i = self.rng.index(self.reals.len());
        let w = self.random_weight();
        let r = &mut self.reals[i];
        let what = format!("weight of real {} {} -> {w}", r.id, r.real.weight);
        r.real.weight = w;
        r.last_weight = mh_last_weight(r.last_weight, w, false);
        let (id, real) = (r.id, r.real);
        self.lb.set_real(id, real);
        self.dest_changed(false);
        self.tally.weights += 1;
        self.note(what);
    }

    /// New thresholds for a real, often right above its current count so
    /// that the next connections push it over.
    fn edit_threshold(&mut self) {
        if self.reals.is_empty() {
            return;
        }
        self.check_sched_state("before a threshold edit");
        let i = self.rng.index(self.reals.len());
        let total = self.reals[i].active + self.reals[i].inactive;
        let upper = match self.rng.below(20) {
            0..=6 => 0,
            7..=9 => self.rng.range(1, 8),
            _ => total + self.rng.range(0, 3),
        };
        let lower = match self.rng.below(10) {
            0..=4 => 0,
            5 => self.rng.range(0, upper + 3), // sometimes above the upper one
            _ => self.rng.range(0, upper),
        };
        let r = &mut self.reals[i];
        let old_upper = r.real.u_threshold;
        let what = format!(
            "thresholds of real {} ({} conns): {}/{} -> {upper}/{lower}",
            r.id, total, old_upper, r.real.l_threshold
        );
        r.real.u_threshold = upper;
        r.real.l_threshold = lower;
        // `__ip_vs_update_dest()`: the flag may only drop here.
        r.overloaded = overload_on_edit(old_upper, upper, r.overloaded);
        let (id, real, overloaded) = (r.id, r.real, r.overloaded);
        self.lb.set_real(id, real);
        let mut rc = self.lb.real_conns(id);
        rc.overloaded = if overload_on_edit(old_upper, upper, rc.overloaded != 0) {
            1
        } else {
            0
        };
        self.lb.put_real_conns(id, rc);
        debug_assert_eq!(rc.overloaded != 0, overloaded);
        self.dest_changed(false);
        self.tally.thresholds += 1;
        self.note(what);
    }

    fn add_real(&mut self) {
        self.check_sched_state("before adding a real");
        let (id, real) = self.random_real();
        let what = format!(
            "add real {id} ({}, weight {}, thresholds {}/{})",
            if real.forward == FWD_NAT { "NAT" } else { "DR" },
            real.weight,
            real.u_threshold,
            real.l_threshold
        );
        self.insert_real(id, real);
        if self.v.sched == Scheduler::Rr {
            self.state.cursor = rr_cursor_after_add(self.state.cursor);
        }
        self.dest_changed(true);
        self.write_service();
        self.tally.added += 1;
        self.note(what);
    }

    fn remove_real(&mut self) {
        let i = self.rng.index(self.reals.len());
        let id = self.reals[i].id;
        // Its connections go first (as the sweeper would find them).
        while let Some(ci) = self.conns.iter().position(|c| c.real == id) {
            self.expire(ci, "expire (real removed)");
        }
        self.check_sched_state("before removing a real");
        let mut gone = self.reals.remove(i).real;
        // No longer the service's: caches and templates naming it are not
        // used again.
        gone.service = u32::MAX;
        gone.weight = 0;
        self.lb.set_real(id, gone);
        if self.v.sched == Scheduler::Rr {
            self.state.cursor = rr_cursor_after_del(self.state.cursor, i as u32);
        }
        self.dest_changed(true);
        self.write_service();
        self.tally.removed += 1;
        self.note(format!("remove real {id} (scan index {i})"));
    }

    /// lblcr: a set has not changed for longer than the expiration: its
    /// `lastmod` is moved back (on both sides).
    fn age_lblcr(&mut self) {
        let keys: Vec<[u32; 4]> = self
            .lblcr
            .iter()
            .filter(|(_, e)| e.len > 1)
            .map(|(k, _)| *k)
            .collect();
        if keys.is_empty() {
            return;
        }
        let key = keys[self.rng.index(keys.len())];
        let map_key = self.addr_key(key);
        let mut entry = self.lblcr[&key];
        entry.lastmod = entry
            .lastmod
            .wrapping_sub(self.v.expire_ns)
            .wrapping_sub(1_000_000_000);
        self.lblcr.insert(key, entry);
        self.lb
            .hash::<AddrKey, LblcrEntry>(MAP_LBLCR)
            .insert(map_key, entry, 0)
            .expect("write LBLCR");
        self.tally.aged += 1;
        self.note(format!("age the set of {}", ip(key[0].to_ne_bytes())));
    }

    /// The sweeper drops an lblc/lblcr cache entry.
    fn forget_cache(&mut self) {
        let keys: Vec<[u32; 4]> = if self.v.sched == Scheduler::Lblc {
            self.lblc.keys().copied().collect()
        } else {
            self.lblcr.keys().copied().collect()
        };
        if keys.is_empty() {
            return;
        }
        let key = keys[self.rng.index(keys.len())];
        let map_key = self.addr_key(key);
        if self.v.sched == Scheduler::Lblc {
            self.lblc.remove(&key);
            self.lb
                .hash::<AddrKey, LblcEntry>(MAP_LBLC)
                .remove(&map_key)
                .expect("delete from LBLC");
        } else {
            self.lblcr.remove(&key);
            self.lb
                .hash::<AddrKey, LblcrEntry>(MAP_LBLCR)
                .remove(&map_key)
                .expect("delete from LBLCR");
        }
        self.tally.forgotten += 1;
        self.note(format!(
            "drop the cache entry of {}",
            ip(key[0].to_ne_bytes())
        ));
    }

    /// The sweeper drops a persistence template (`release_template`).
    fn forget_template(&mut self) {
        let keys: Vec<[u32; 4]> = self.templates.keys().copied().collect();
        if keys.is_empty() {
            return;
        }
        let key = keys[self.rng.index(keys.len())];
        let id = self.templates.remove(&key).expect("a template");
        let map_key = self.addr_key(key);
        self.lb
            .hash::<AddrKey, Template>(MAP_TEMPLATES)
            .remove(&map_key)
            .expect("delete from TEMPLATES");
        *self.persist.get_mut(&id).expect("a known real") -= 1;
        let mut rc = self.lb.real_conns(id);
        rc.persist -= 1;
        self.lb.put_real_conns(id, rc);
        self.tally.forgotten += 1;
        self.note(format!(
            "drop the template of {} (real {id})",
            ip(key[0].to_ne_bytes())
        ));
    }

    fn addr_key(&self, addr: [u32; 4]) -> AddrKey {
        AddrKey {
            service: self.id,
            family: AF_INET,
            _pad: [0; 3],
            addr,
        }
    }

    // ------------------------------------------------------------ checks

    fn check_conn(&mut self, conn: &MConn, what: &str) {
        let Some(got) = self.lb.conn(&conn.key) else {
            self.fail(&format!("{what}: the connection is missing from CONNS"));
        };
        let want_flags = if conn.inactive { CONN_F_INACTIVE } else { 0 }
            | if conn.nat { 0 } else { CONN_F_NOOUTPUT }
            | if self.v.persistent { CONN_F_TEMPLATED } else { 0 };
        if got.real != conn.real || got.state != conn.state || got.flags != want_flags {
            self.fail(&format!(
                "{what}: CONNS has real {} state {} flags {:#x}, the model real {} state {} flags \
                 {want_flags:#x}",
                got.real,
                tcp_state::NAMES.get(got.state as usize).unwrap_or(&"?"),
                got.flags,
                conn.real,
                tcp_state::NAMES[conn.state as usize]
            ));
        }
    }

    fn model_counts(&self, id: u32) -> RealConns {
        let persist = self.persist.get(&id).copied().unwrap_or(0);
        self.index_of(id).map_or(
            RealConns {
                persist,
                ..RealConns::default()
            },
            |i| {
                let r = &self.reals[i];
                RealConns {
                    active: u64::from(r.active),
                    inactive: u64::from(r.inactive),
                    persist,
                    overloaded: u64::from(r.overloaded),
                }
            },
        )
    }

    fn check_real_counts(&mut self, id: u32, what: &str) {
        let got = self.lb.real_conns(id);
        let want = self.model_counts(id);
        if got != want {
            self.fail(&format!(
                "{what}: REAL_CONNS[{id}] is {got:?}, the model has {want:?}"
            ));
        }
    }

    /// Every live real's REAL_CONNS; with `removed`, the removed reals'
    /// too (their PersistConn still moves when a template leaves them).
    fn check_all_counts(&mut self, what: &str, removed: bool) {
        let ids: Vec<u32> = if removed {
            self.persist.keys().copied().collect()
        } else {
            self.reals.iter().map(|r| r.id).collect()
        };
        for id in ids {
            self.check_real_counts(id, what);
        }
    }

    /// rr's cursor and wrr's whole state.
    fn check_sched_state(&mut self, what: &str) {
        if !matches!(self.v.sched, Scheduler::Rr | Scheduler::Wrr) {
            return;
        }
        let got = self.lb.sched_state(self.id);
        if got != self.state {
            self.fail(&format!(
                "{what}: SCHED_STATE is {got:?}, the model has {:?}",
                self.state
            ));
        }
    }

    /// The cache entry or template a decision wrote.
    fn check_caches(&mut self, client: [u8; 4], vaddr: [u8; 4], what: &str) {
        if self.v.persistent {
            let net = mask(client, self.service.persist_mask);
            let key = self.addr_key(net);
            let got = self
                .lb
                .hash::<AddrKey, Template>(MAP_TEMPLATES)
                .get(&key, 0)
                .ok()
                .map(|t| t.real);
            let want = self.templates.get(&net).copied();
            if got != want {
                self.fail(&format!(
                    "{what}: the template of {} names {got:?}, the model's {want:?}",
                    ip(net[0].to_ne_bytes())
                ));
            }
        }
        let dkey = v4_addr(vaddr);
        let key = self.addr_key(dkey);
        match self.v.sched {
            Scheduler::Lblc => {
                let got = self
                    .lb
                    .hash::<AddrKey, LblcEntry>(MAP_LBLC)
                    .get(&key, 0)
                    .ok()
                    .map(|e| e.real);
                let want = self.lblc.get(&dkey).copied();
                if got != want {
                    self.fail(&format!(
                        "{what}: LBLC caches {} to {got:?}, the model to {want:?}",
                        ip(vaddr)
                    ));
                }
            }
            Scheduler::Lblcr => {
                let got = self
                    .lb
                    .hash::<AddrKey, LblcrEntry>(MAP_LBLCR)
                    .get(&key, 0)
                    .ok();
                let want = self.lblcr.get(&dkey).copied();
                let members = |e: Option<LblcrEntry>| e.map(|e| e.members().to_vec());
                if members(got) != members(want) {
                    self.fail(&format!(
                        "{what}: LBLCR's set for {} is {:?}, the model's {:?}",
                        ip(vaddr),
                        members(got),
                        members(want)
                    ));
                }
                // The clocks differ; the decisions only compare times, and
                // from here on both sides hold the data plane's.
                if let (Some(got), Some(want)) = (got, want) {
                    self.lblcr.insert(
                        dkey,
                        LblcrEntry {
                            lastuse: got.lastuse,
                            lastmod: got.lastmod,
                            ..want
                        },
                    );
                }
            }
            _ => {}
        }
    }

    /// The scenario's share of COUNTERS: every decision counted, and no
    /// failed tail call, refused insert or stale real.
    fn check_counters(&mut self) {
        let delta = |lb: &Lb, c: u32, before: &[u64]| lb.counter(c) - before[c as usize];
        let b = self.counters_before.clone();
        let new = delta(self.lb, counter::CONN_NEW, &b);
        let dropped = delta(self.lb, counter::DROP_NO_REAL, &b);
        assert_eq!(new, self.tally.scheduled, "{}: conn_new", self.v.name);
        assert_eq!(dropped, self.tally.dropped, "{}: drop_no_real", self.v.name);
        let reopened = delta(self.lb, counter::CONN_RESCHEDULED, &b);
        assert_eq!(reopened, self.tally.reopened, "{}: conn_rescheduled", self.v.name);
        for c in [
            counter::DROP_SCHED_CALL,
            counter::CONN_INSERT_FAIL,
            counter::DROP_STALE_REAL,
            counter::PASS_NOT_SYN,
        ] {
            assert_eq!(
                delta(self.lb, c, &b),
                0,
                "{}: {}",
                self.v.name,
                counter::NAMES[c as usize]
            );
        }
    }
}

fn mask(addr: [u8; 4], mask: [u32; 4]) -> [u32; 4] {
    let a = v4_addr(addr);
    [a[0] & mask[0], 0, 0, 0]
}

// ------------------------------------------------------ hand-checked vectors

/// A small controller for the hand-checked vectors: reals named A, B, C...
/// added in that order, so that they are scanned newest first.
struct Hand {
    id: u32,
    vip: Vip,
    scheduler: u8,
    flags: u8,
    /// Scan order.
    reals: Vec<(char, u32, Real)>,
    next_port: u16,
}

impl Hand {
    /// A service whose reals `names` with `weights` are added in the order
    /// given, before any connection: the scheduler state starts afresh.
    fn new(lb: &mut Lb, vip: Vip, sched: Scheduler, flags: u8, reals: &[(char, u32)]) -> Self {
        let mut h = Self {
            id: lb.reserve_service(),
            vip,
            scheduler: sched.id(),
            flags,
            reals: Vec::new(),
            next_port: 20_000,
        };
        for &(name, weight) in reals {
            let id = lb.reserve_real();
            let real = Real {
                weight,
                service: h.id,
                ..nat_real([10, 0, 9, name as u8], REAL_HTTP)
            };
            lb.set_real(id, real);
            h.reals.insert(0, (name, id, real));
        }
        h.write(lb, None);
        h
    }

    fn real(&self, name: char) -> usize {
        self.reals
            .iter()
            .position(|r| r.0 == name)
            .expect("a real of that name")
    }

    fn remove(&mut self, lb: &mut Lb, name: char) {
        let i = self.real(name);
        let (_, id, mut real) = self.reals.remove(i);
        real.service = u32::MAX;
        real.weight = 0;
        lb.set_real(id, real);
        self.write(lb, Some(i as u32));
    }

    fn set_weight(&mut self, lb: &mut Lb, name: char, weight: u32) {
        let i = self.real(name);
        self.reals[i].2.weight = weight;
        lb.set_real(self.reals[i].1, self.reals[i].2);
        self.write(lb, Some(u32::MAX));
    }

    /// Writes the list and the tables. `change`: `None` when the service is
    /// new, `Some(i)` after the real at scan index `i` was removed, and
    /// `Some(u32::MAX)` after an edit; rr's cursor and wrr's state then
    /// change as IPVS changes them.
    fn write(&self, lb: &mut Lb, change: Option<u32>) {
        let reals: Vec<Real> = self.reals.iter().map(|r| r.2).collect();
        let weights: Vec<u32> = reals.iter().map(|r| r.weight).collect();
        let (fresh, buckets, maglev) = sched_tables(self.scheduler, &reals, &weights);
        let state = match change {
            None => fresh,
            Some(removed) => {
                let mut state = lb.sched_state(self.id);
                if self.scheduler == Scheduler::Wrr.id() {
                    state.dest_changed(weights.iter().copied());
                } else if self.scheduler == Scheduler::Rr.id() && removed != u32::MAX {
                    state.cursor = rr_cursor_after_del(state.cursor, removed);
                }
                state
            }
        };
        lb.put_sched_state(self.id, state);
        if let Some(b) = buckets {
            lb.put_buckets(self.id, &b);
        }
        if let Some(t) = maglev {
            lb.put_maglev(self.id, &t);
        }
        let ids: Vec<u32> = self.reals.iter().map(|r| r.1).collect();
        lb.put_service_reals(self.id, &ids);
        let service = Service {
            id: self.id,
            nreals: ids.len() as u32,
            scheduler: self.scheduler,
            flags: self.flags,
            persist_timeout: 360,
            persist_mask: v4_addr([255, 255, 255, 0]),
            lblc_expire_ns: DAY_NS,
            ..Service::default()
        };
        lb.put_service(self.vip, IPPROTO_TCP, service);
    }

    fn name_of(&self, lb: &mut Lb, key: &ConnKey) -> char {
        let id = lb.conn(key).expect("a connection entry").real;
        self.reals.iter().find(|r| r.1 == id).map_or('?', |r| r.0)
    }

    /// A SYN from `client` to `daddr` (the VIP, or an address of a range);
    /// returns the name of the real it went to, or '-' for a drop. The
    /// connection stays open (SYN_RECV counts as active).
    fn syn(&mut self, lb: &mut Lb, client: [u8; 4], daddr: [u8; 4]) -> (char, Pkt) {
        self.next_port += 1;
        let p = Pkt::tcp(self.next_port, VPORT, SYN)
            .from(client, self.next_port)
            .to(daddr, VPORT);
        let (action, out) = lb.run(&p.frame());
        if action == XDP_DROP {
            return ('-', p);
        }
        assert_eq!(action_name(action), "XDP_TX", "{p:?}");
        let name = self.name_of(lb, &p.conn_key());
        let real = self.reals[self.real(name)].2;
        assert_eq!(
            out,
            nat_to(&p, real.addr[0].to_ne_bytes(), REAL_HTTP).frame(),
            "SYN to {name}"
        );
        (name, p)
    }

    /// `count` SYNs from CLIENT to the VIP: the names of their reals.
    fn syns(&mut self, lb: &mut Lb, count: usize) -> String {
        let daddr = match self.vip {
            Vip::Exact(a, _) | Vip::Range(a, _, _) => a,
        };
        (0..count).map(|_| self.syn(lb, CLIENT, daddr).0).collect()
    }

    /// The client completes the handshake, then resets the connection:
    /// ESTABLISHED, then CLOSE, which counts as inactive. (A RST in
    /// SYN_RECV would leave it there, and active: IPVS's table.)
    fn reset(&self, lb: &mut Lb, syn: &Pkt) {
        for flags in [ACK, RST] {
            let p = syn.clone().with(|p| {
                if let L4::Tcp { flags: f, .. } = &mut p.l4 {
                    *f = flags;
                }
            });
            let (action, _) = lb.run(&p.frame());
            assert_eq!(action_name(action), "XDP_TX", "flags {flags:#x} forwarded");
        }
    }

    fn conns(&self, lb: &mut Lb, name: char) -> RealConns {
        lb.real_conns(self.reals[self.real(name)].1)
    }
}

fn exact(k: u8) -> Vip {
    Vip::Exact([10, 99, k, 1], VPORT)
}

// ------------------------------------------------------------------ tests

#[test]
fn rr_conforms() {
    let mut lb = Lb::new();
    // A, B, C added in that order are scanned C, B, A; rr ignores weights.
    let mut h = Hand::new(
        &mut lb,
        exact(1),
        Scheduler::Rr,
        0,
        &[('A', 4), ('B', 3), ('C', 2)],
    );
    assert_eq!(h.syns(&mut lb, 6), "CBACBA");
    run_scenarios(
        &mut lb,
        &[
            variant("rr", Scheduler::Rr),
            variant("rr-256", Scheduler::Rr).reals(256, 256),
            variant("rr-udp", Scheduler::Rr).udp(),
        ],
    );
}

#[test]
fn wrr_conforms() {
    let mut lb = Lb::new();
    // IPVS's own example: A=4, B=3, C=2 added in that order.
    let mut h = Hand::new(
        &mut lb,
        exact(1),
        Scheduler::Wrr,
        0,
        &[('A', 4), ('B', 3), ('C', 2)],
    );
    assert_eq!(h.syns(&mut lb, 9), "ABACBACBA");
    assert_eq!(h.syns(&mut lb, 9), "ABACBACBA", "the second round");
    run_scenarios(
        &mut lb,
        &[
            variant("wrr", Scheduler::Wrr),
            variant("wrr-persistent", Scheduler::Wrr).persistent(),
        ],
    );
}

#[test]
fn lc_conforms() {
    let mut lb = Lb::new();
    let mut h = Hand::new(
        &mut lb,
        exact(1),
        Scheduler::Lc,
        0,
        &[('A', 1), ('B', 1), ('C', 5)],
    );
    // All idle: the newest (C). Held open, the next go to the least loaded,
    // ties to the newest: B, A, then C again (weights other than 0 do not
    // matter to lc).
    let first = h.syn(&mut lb, CLIENT, [10, 99, 1, 1]);
    assert_eq!(first.0, 'C');
    assert_eq!(h.syns(&mut lb, 3), "BAC");
    // C holds two active connections, A and B one each. The client resets
    // C's first one: it stays in the table, inactive.
    h.reset(&mut lb, &first.1);
    assert_eq!(
        h.conns(&mut lb, 'C'),
        RealConns {
            active: 1,
            inactive: 1,
            ..RealConns::default()
        }
    );
    // C: 1 active + 1 inactive = 257 > 256 of A and B: B (newer than A).
    assert_eq!(h.syns(&mut lb, 1), "B");
    // B 512, A 256, C 257: A.
    assert_eq!(h.syns(&mut lb, 1), "A");
    run_scenarios(
        &mut lb,
        &[
            variant("lc", Scheduler::Lc),
            variant("lc-udp", Scheduler::Lc).udp(),
        ],
    );
}

#[test]
fn wlc_conforms() {
    let mut lb = Lb::new();
    // A=1, B=3 (scanned B, A), connections held open. Loads per weight:
    // 0/3 vs 0/1 -> B (first); 256/3 vs 0 -> A; 256/3 vs 256 -> B;
    // 512/3 vs 256 -> B; 768/3 = 256 vs 256, a tie -> B; 1024/3 > 256 -> A.
    let mut h = Hand::new(&mut lb, exact(1), Scheduler::Wlc, 0, &[('A', 1), ('B', 3)]);
    assert_eq!(h.syns(&mut lb, 6), "BABBBA");
    run_scenarios(
        &mut lb,
        &[
            variant("wlc", Scheduler::Wlc),
            variant("wlc-256", Scheduler::Wlc).reals(256, 256),
            variant("wlc-persistent", Scheduler::Wlc).persistent(),
        ],
    );
}

#[test]
fn sed_conforms() {
    let mut lb = Lb::new();
    // A=1, B=3 (scanned B, A), held open: (a+1)/w is 1/3 vs 1 -> B;
    // 2/3 vs 1 -> B; 3/3 vs 1/1, a tie -> B; 4/3 vs 1 -> A; 4/3 vs 2 -> B.
    let mut h = Hand::new(&mut lb, exact(1), Scheduler::Sed, 0, &[('A', 1), ('B', 3)]);
    assert_eq!(h.syns(&mut lb, 5), "BBBAB");
    run_scenarios(&mut lb, &[variant("sed", Scheduler::Sed)]);
}

#[test]
fn nq_conforms() {
    let mut lb = Lb::new();
    // A=1, B=5, C=5, scanned C, B, A. The first idle real wins at once:
    // C, then B, then A although sed would rather load a weight-5 real.
    let mut h = Hand::new(
        &mut lb,
        exact(1),
        Scheduler::Nq,
        0,
        &[('A', 1), ('B', 5), ('C', 5)],
    );
    let c = h.syn(&mut lb, CLIENT, [10, 99, 1, 1]);
    let b = h.syn(&mut lb, CLIENT, [10, 99, 1, 1]);
    let a = h.syn(&mut lb, CLIENT, [10, 99, 1, 1]);
    assert_eq!([c.0, b.0, a.0], ['C', 'B', 'A']);
    // Nobody idle: sed, (1+1)/5 for C and B, 2/1 for A -> C.
    assert_eq!(h.syns(&mut lb, 1), "C");
    // A's connection is reset: A is idle again (inactive ones do not
    // count) and wins at once.
    h.reset(&mut lb, &a.1);
    assert_eq!(h.syns(&mut lb, 1), "A");
    run_scenarios(&mut lb, &[variant("nq", Scheduler::Nq)]);
}

#[test]
fn dh_conforms() {
    let mut lb = Lb::new();
    // Range 10.49.0.0/16: A, B, C (scanned C, B, A) with weight 1; buckets
    // go C B A C B A... (bucket i -> scan index i % 3).
    let mut h = Hand::new(
        &mut lb,
        Vip::Range([10, 49, 0, 0], 16, VPORT),
        Scheduler::Dh,
        0,
        &[('A', 1), ('B', 1), ('C', 1)],
    );
    // Destination 10.49.0.1: hash_32(0x0a310001, 8) is the top byte of
    // 0x0a310001 * 0x61C88647 mod 2^32 = (0x0a31 * 0x8647 mod 2^16) << 16
    // + 0x61c88647 = 0x79970000 + 0x61c88647 = 0xdb5f8647: bucket 0xdb =
    // 219, and 219 % 3 = 0 -> C, whoever the client.
    let dest = [10, 49, 0, 1];
    let clients = [[198, 51, 100, 7], [203, 0, 113, 9], [100, 64, 1, 2]];
    for client in clients {
        assert_eq!(h.syn(&mut lb, client, dest).0, 'C', "from {client:?}");
    }
    // Quiescing another real moves nothing.
    h.set_weight(&mut lb, 'A', 0);
    assert_eq!(h.syn(&mut lb, clients[1], dest).0, 'C');
    // Quiescing C itself: no real, dh has no fallback.
    h.set_weight(&mut lb, 'C', 0);
    assert_eq!(h.syn(&mut lb, clients[1], dest).0, '-');
    h.set_weight(&mut lb, 'C', 1);
    assert_eq!(h.syn(&mut lb, clients[2], dest).0, 'C');
    run_scenarios(&mut lb, &[variant("dh", Scheduler::Dh).range()]);
}

#[test]
fn sh_conforms() {
    let mut lb = Lb::new();
    // A, B, C with weight 1, scanned C, B, A: bucket i -> scan index i % 3.
    let mut h = Hand::new(
        &mut lb,
        exact(1),
        Scheduler::Sh,
        0,
        &[('A', 1), ('B', 1), ('C', 1)],
    );
    // Client 10.0.0.1: hash_32(0x0a000001, 8) = 39 (0x0a000001 *
    // 0x61C88647 = 0x27c88647 mod 2^32), 39 % 3 = 0 -> C, whatever its port.
    let client = [10, 0, 0, 1];
    let vip = [10, 99, 1, 1];
    for _ in 0..5 {
        assert_eq!(h.syn(&mut lb, client, vip).0, 'C');
    }
    // B quiesced (it keeps its bucket): the client stays on C.
    h.set_weight(&mut lb, 'B', 0);
    assert_eq!(h.syn(&mut lb, client, vip).0, 'C');
    // C removed: two reals [B, A], 39 % 2 = 1 -> A.
    h.remove(&mut lb, 'C');
    assert_eq!(h.syn(&mut lb, client, vip).0, 'A');
    h.set_weight(&mut lb, 'B', 1);
    assert_eq!(h.syn(&mut lb, client, vip).0, 'A');
    run_scenarios(
        &mut lb,
        &[
            variant("sh", Scheduler::Sh),
            variant("sh-port", Scheduler::Sh).flags(SVC_F_SH_PORT),
            variant("sh-fallback", Scheduler::Sh).flags(SVC_F_SH_FALLBACK),
            variant("sh-port-fallback", Scheduler::Sh).flags(SVC_F_SH_PORT | SVC_F_SH_FALLBACK),
            variant("sh-persistent", Scheduler::Sh).persistent(),
        ],
    );
}

#[test]
fn mh_conforms() {
    let mut lb = Lb::new();
    run_scenarios(
        &mut lb,
        &[
            variant("mh", Scheduler::Mh),
            variant("mh-fallback", Scheduler::Mh).flags(SVC_F_MH_FALLBACK),
            variant("mh-port-fallback", Scheduler::Mh).flags(SVC_F_MH_PORT | SVC_F_MH_FALLBACK),
        ],
    );
}

#[test]
fn lblc_conforms() {
    let mut lb = Lb::new();
    run_scenarios(&mut lb, &[variant("lblc", Scheduler::Lblc).range()]);
}

#[test]
fn lblcr_conforms() {
    let mut lb = Lb::new();
    run_scenarios(
        &mut lb,
        &[
            // Sets expire after a day, and the test ages some of them.
            variant("lblcr", Scheduler::Lblcr).range(),
            // Every set with two members or more sheds one on each use.
            variant("lblcr-expire-0", Scheduler::Lblcr)
                .range()
                .expire(0),
        ],
    );
}

/// Persistence by hand: a client /24 sticks to one real until that real is
/// quiesced, then its template moves; REAL_CONNS.persist counts templates.
#[test]
fn persistence_by_hand() {
    let mut lb = Lb::new();
    let mut h = Hand::new(
        &mut lb,
        exact(1),
        Scheduler::Rr,
        SVC_F_PERSISTENT,
        &[('A', 1), ('B', 1), ('C', 1)],
    );
    let vip = [10, 99, 1, 1];
    let net1 = |host| [198, 51, 100, host];
    let net2 = |host| [198, 51, 101, host];
    // rr's first pick is C; every later connection from 198.51.100.0/24
    // follows the template without asking rr.
    for host in [7, 7, 8, 9, 7] {
        assert_eq!(h.syn(&mut lb, net1(host), vip).0, 'C', "198.51.100.{host}");
    }
    assert_eq!(h.conns(&mut lb, 'C').persist, 1);
    // Another network: rr's next pick, B.
    assert_eq!(h.syn(&mut lb, net2(1), vip).0, 'B');
    assert_eq!(h.syn(&mut lb, net2(200), vip).0, 'B');
    assert_eq!(
        [
            h.conns(&mut lb, 'A').persist,
            h.conns(&mut lb, 'B').persist,
            h.conns(&mut lb, 'C').persist
        ],
        [0, 1, 1]
    );
    // C quiesced: the first network's next connection is scheduled again
    // (rr's next after B is A) and the template moves to A.
    h.set_weight(&mut lb, 'C', 0);
    assert_eq!(h.syn(&mut lb, net1(10), vip).0, 'A');
    assert_eq!(h.syn(&mut lb, net1(7), vip).0, 'A');
    assert_eq!(
        [
            h.conns(&mut lb, 'A').persist,
            h.conns(&mut lb, 'B').persist,
            h.conns(&mut lb, 'C').persist
        ],
        [1, 1, 0]
    );
    // C back: the template stays on A.
    h.set_weight(&mut lb, 'C', 1);
    assert_eq!(h.syn(&mut lb, net1(11), vip).0, 'A');
    // The connections themselves are counted as ever: C holds the first 5.
    assert_eq!(h.conns(&mut lb, 'C').active, 5);
    let templates: Vec<(AddrKey, Template)> = lb
        .hash::<AddrKey, Template>(MAP_TEMPLATES)
        .iter()
        .map(|e| e.expect("a template"))
        .collect();
    assert_eq!(templates.len(), 2, "one template per client network");
    run_scenarios(
        &mut lb,
        &[
            variant("rr-persistent", Scheduler::Rr).persistent(),
            variant("lblc-persistent", Scheduler::Lblc)
                .persistent()
                .range(),
        ],
    );
}
