//! Connection, packet and byte rates, estimated as IPVS estimates them
//! (`net/netfilter/ipvs/ip_vs_est.c`), so that `xlvs list --rate` shows what
//! `ipvsadm -L --rate` would for the same traffic.
//!
//! Every 2 s the kernel takes each service's and each real's counters,
//! turns their increase into a per-second rate in fixed point (CPS and PPS
//! scaled by 2^10, BPS by 2^5: `(now - last) << 9` and `<< 4` over the 2 s)
//! and folds it into an average with weight 1/4, `avg += (rate - avg) >> 2`,
//! an arithmetic shift. Reading rounds to the nearest unit:
//! `(avg + 0x1FF) >> 10` and `(avg + 0xF) >> 5`. This module does the same
//! arithmetic on the data plane's counters; the director calls
//! [`Estimator::sample`] every [`PERIOD`].

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::view::{RateView, ServiceKey, Snapshot, StatsView};

/// The kernel estimator's period (`estimation_timer` re-arms itself at
/// `jiffies + 2*HZ`).
pub const PERIOD: Duration = Duration::from_secs(2);

/// A sample sooner than this after the previous one is ignored: smoothing
/// twice within a period would weigh that period double.
const MIN_GAP: Duration = Duration::from_secs(1);

/// A sample this close to one [`PERIOD`] after the previous one counts as
/// exactly one period, as every tick of the kernel's timer does: the same
/// counts then give the kernel's figures to the last bit, whatever the
/// scheduling jitter. Further off (a stalled director), the rate is taken
/// over the time that really passed, so that a late sample makes no spike.
const JITTER: Duration = Duration::from_millis(100);

/// The fixed-point scale of each rate, as a power of two: CPS, InPPS,
/// OutPPS by 2^10, InBPS and OutBPS by 2^5.
const SCALE: [u32; 5] = [10, 10, 10, 5, 5];

/// The counters in the order of [`SCALE`].
const fn counters(s: &StatsView) -> [u64; 5] {
    [s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes]
}

/// One estimate: `struct ip_vs_estimator`.
#[derive(Clone, Copy, Debug)]
struct Est {
    /// The counters at the previous sample (`last_conns`, ...).
    last: [u64; 5],
    /// The smoothed rates per second, scaled by [`SCALE`] (`cps`, ...).
    avg: [i64; 5],
}

impl Est {
    /// A new estimate starts from the counters as they are, with zero rates.
    const fn new(stats: &StatsView) -> Self {
        Self { last: counters(stats), avg: [0; 5] }
    }

    fn update(&mut self, stats: &StatsView, elapsed: Duration) {
        let now = counters(stats);
        if now.iter().zip(&self.last).any(|(n, l)| n < l) {
            // The counters were zeroed (`xlvs zero`): restart as the
            // kernel's ip_vs_zero_estimator does, with zero rates, from the
            // counters at the moment they were zeroed, which is zero.
            *self = Self { last: [0; 5], avg: [0; 5] };
        }
        for i in 0..5 {
            let rate = scaled_rate(now[i] - self.last[i], SCALE[i], elapsed);
            self.avg[i] += (rate - self.avg[i]) >> 2;
        }
        self.last = now;
    }

    /// `ip_vs_read_estimator`.
    fn read(&self) -> RateView {
        let unit = |i: usize| {
            let half = (1_i64 << (SCALE[i] - 1)) - 1;
            u64::try_from(self.avg[i].saturating_add(half) >> SCALE[i]).unwrap_or(0)
        };
        RateView { cps: unit(0), inpps: unit(1), outpps: unit(2), inbps: unit(3), outbps: unit(4) }
    }
}

/// The increase `delta` over `elapsed` as a rate per second scaled by
/// 2^`scale`; over one period exactly the kernel's `delta << (scale - 1)`.
fn scaled_rate(delta: u64, scale: u32, elapsed: Duration) -> i64 {
    let scaled = if elapsed.abs_diff(PERIOD) <= JITTER {
        u128::from(delta) << (scale - 1)
    } else {
        (u128::from(delta) << scale) * 1_000 / elapsed.as_millis().max(1)
    };
    i64::try_from(scaled).unwrap_or(i64::MAX)
}

#[derive(Clone, Debug)]
struct ServiceEst {
    est: Est,
    reals: HashMap<SocketAddr, Est>,
}

/// The rate estimates of every service and real the director has. It
/// forgets a service or real that a sample no longer names, and a real that
/// comes back starts over, as a new IPVS destination does.
#[derive(Clone, Debug, Default)]
pub struct Estimator {
    last_sample: Option<Instant>,
    services: HashMap<ServiceKey, ServiceEst>,
}

impl Estimator {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one sample of every service's counters and its reals'. Call it
    /// every [`PERIOD`]. The first sample of a service or real only sets its
    /// starting point; a counter that went down restarts its estimate.
    /// Returns false, changing nothing, when called less than a second after
    /// the previous sample.
    pub fn sample<S, R>(&mut self, now: Instant, services: S) -> bool
    where
        S: IntoIterator<Item = (ServiceKey, StatsView, R)>,
        R: IntoIterator<Item = (SocketAddr, StatsView)>,
    {
        let elapsed = match self.last_sample {
            Some(last) if now.saturating_duration_since(last) < MIN_GAP => return false,
            Some(last) => Some(now.saturating_duration_since(last)),
            None => None,
        };
        self.last_sample = Some(now);
        let mut old = std::mem::take(&mut self.services);
        let step = |est: Option<Est>, stats: &StatsView| match (est, elapsed) {
            (Some(mut est), Some(elapsed)) => {
                est.update(stats, elapsed);
                est
            }
            _ => Est::new(stats),
        };
        for (key, stats, reals) in services {
            let previous = old.remove(&key);
            let est = step(previous.as_ref().map(|p| p.est), &stats);
            let mut old_reals = previous.map(|p| p.reals).unwrap_or_default();
            let reals = reals.into_iter().map(|(addr, stats)| (addr, step(old_reals.remove(&addr), &stats))).collect();
            self.services.insert(key, ServiceEst { est, reals });
        }
        true
    }

    /// [`Self::sample`] over a snapshot's services and reals.
    pub fn sample_snapshot(&mut self, now: Instant, snapshot: &Snapshot) -> bool {
        self.sample(
            now,
            snapshot
                .services
                .iter()
                .map(|s| (s.key(), s.stats, s.reals.iter().map(|r| (r.address, r.stats)).collect::<Vec<_>>())),
        )
    }

    /// A service's rates; `None` when no sample has named it.
    #[must_use]
    pub fn service(&self, key: &ServiceKey) -> Option<RateView> {
        self.services.get(key).map(|s| s.est.read())
    }

    /// A real's rates within a service; `None` when no sample has named it.
    #[must_use]
    pub fn real(&self, service: &ServiceKey, real: &SocketAddr) -> Option<RateView> {
        self.services.get(service)?.reals.get(real).map(Est::read)
    }
}

/// Sets the `rate` of every service and real of `snapshot` from `est`
/// (zero for those it has not sampled yet).
pub fn fill_rates(snapshot: &mut Snapshot, est: &Estimator) {
    for service in &mut snapshot.services {
        let key = service.key();
        service.rate = est.service(&key).unwrap_or_default();
        for real in &mut service.reals {
            real.rate = est.real(&key, &real.address).unwrap_or_default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(address: &str) -> ServiceKey {
        ServiceKey { protocol: "tcp".into(), address: address.parse().unwrap() }
    }

    fn real(address: &str) -> SocketAddr {
        address.parse().unwrap()
    }

    const fn stats(conns: u64, inpkts: u64, outpkts: u64, inbytes: u64, outbytes: u64) -> StatsView {
        StatsView { conns, inpkts, outpkts, inbytes, outbytes }
    }

    /// One service with one real carrying all its traffic.
    fn one(est: &mut Estimator, at: Instant, s: StatsView) -> bool {
        est.sample(at, [(key("10.0.0.1:80"), s, vec![(real("10.0.1.11:80"), s)])])
    }

    #[test]
    fn steady_traffic_follows_the_kernels_arithmetic() {
        // 100 conn/s, 1000 pkt/s in, 800 out, 150000 B/s in, 90000 out,
        // sampled every 2 s.
        let t0 = Instant::now();
        let mut est = Estimator::new();
        let at = |n: u32| t0 + PERIOD * n;
        let traffic = |n: u64| stats(200 * n, 2_000 * n, 1_600 * n, 300_000 * n, 180_000 * n);
        assert!(one(&mut est, at(0), traffic(0)));
        let k = key("10.0.0.1:80");
        assert_eq!(est.service(&k), Some(RateView::default()));

        // Tick 1. cps: rate = 200 << 9 = 102400, avg = 102400 >> 2 = 25600,
        // read (25600 + 0x1FF) >> 10 = 25. inpps: rate = 2000 << 9 =
        // 1024000, avg 256000, read 250. outpps: avg 204800, read 200.
        // inbps: rate = 300000 << 4 = 4800000, avg 1200000, read
        // (1200000 + 0xF) >> 5 = 37500. outbps: avg 720000, read 22500.
        one(&mut est, at(1), traffic(1));
        let tick1 = RateView { cps: 25, inpps: 250, outpps: 200, inbps: 37_500, outbps: 22_500 };
        assert_eq!(est.service(&k), Some(tick1));
        assert_eq!(est.real(&k, &real("10.0.1.11:80")), Some(tick1));

        // Tick 2. cps: avg = 25600 + ((102400 - 25600) >> 2) = 44800, read
        // (44800 + 511) >> 10 = 44 (43.75 rounded). inpps: 256000 + 192000
        // = 448000, read 437 (437.5 rounded down by the 0x1FF bias). outpps:
        // 204800 + 153600 = 358400, read 350. inbps: 1200000 + 900000 =
        // 2100000, read 65625. outbps: 720000 + 540000 = 1260000, read
        // (1260000 + 15) >> 5 = 39375.
        one(&mut est, at(2), traffic(2));
        assert_eq!(est.service(&k), Some(RateView { cps: 44, inpps: 437, outpps: 350, inbps: 65_625, outbps: 39_375 }));

        // Tick 3. cps: 44800 + (57600 >> 2) = 59200, read 58 (57.8).
        one(&mut est, at(3), traffic(3));
        assert_eq!(est.service(&k).unwrap().cps, 58);

        // It converges on the true rates.
        for n in 4..60 {
            one(&mut est, at(n), traffic(u64::from(n)));
        }
        assert_eq!(
            est.service(&k),
            Some(RateView { cps: 100, inpps: 1_000, outpps: 800, inbps: 150_000, outbps: 90_000 })
        );
    }

    #[test]
    fn decay_uses_an_arithmetic_shift_and_reaches_zero() {
        // One connection in one period: rate 1 << 9 = 512, avg 128, read
        // (128 + 511) >> 10 = 0. Then nothing: avg += (0 - avg) >> 2, where
        // the shift floors (-54 >> 2 = -14), so the average reaches 0; a
        // division that truncated towards zero would stop at 3.
        let t0 = Instant::now();
        let mut est = Estimator::new();
        one(&mut est, t0, stats(0, 0, 0, 0, 0));
        one(&mut est, t0 + PERIOD, stats(1, 0, 0, 0, 0));
        let avg = |est: &Estimator| est.services[&key("10.0.0.1:80")].est.avg[0];
        let mut seen = vec![avg(&est)];
        for n in 2..17 {
            one(&mut est, t0 + PERIOD * n, stats(1, 0, 0, 0, 0));
            seen.push(avg(&est));
        }
        assert_eq!(seen, [128, 96, 72, 54, 40, 30, 22, 16, 12, 9, 6, 4, 3, 2, 1, 0]);
        assert_eq!(est.service(&key("10.0.0.1:80")).unwrap().cps, 0);
    }

    #[test]
    fn zeroed_counters_restart_the_estimate() {
        let t0 = Instant::now();
        let mut est = Estimator::new();
        for n in 0..10 {
            one(&mut est, t0 + PERIOD * n, stats(200 * u64::from(n), 0, 0, 0, 0));
        }
        assert!(est.service(&key("10.0.0.1:80")).unwrap().cps > 90);
        // Zeroed, then 20 connections in the period: as ip_vs_zero_estimator
        // left it, avg restarts at 0: (20 << 9) >> 2 = 2560, read
        // (2560 + 511) >> 10 = 2.
        one(&mut est, t0 + PERIOD * 10, stats(20, 0, 0, 0, 0));
        assert_eq!(est.service(&key("10.0.0.1:80")).unwrap().cps, 2);
    }

    #[test]
    fn keys_that_disappear_are_forgotten_and_start_over() {
        let t0 = Instant::now();
        let (a, b) = (real("10.0.1.11:80"), real("10.0.1.12:80"));
        let mut est = Estimator::new();
        let sample = |est: &mut Estimator, n: u32, reals: Vec<(SocketAddr, StatsView)>| {
            let total = reals.iter().fold(StatsView::default(), |acc, (_, s)| acc + *s);
            est.sample(t0 + PERIOD * n, [(key("10.0.0.1:80"), total, reals)])
        };
        let s = |n: u64| stats(20 * n, 0, 0, 0, 0);
        sample(&mut est, 0, vec![(a, s(0)), (b, s(0))]);
        sample(&mut est, 1, vec![(a, s(1)), (b, s(1))]);
        let k = key("10.0.0.1:80");
        // (20 << 9) >> 2 = 2560, read (2560 + 511) >> 10 = 2: the bias rounds 2.5 down.
        assert_eq!(est.real(&k, &b).unwrap().cps, 2);
        sample(&mut est, 2, vec![(a, s(2))]);
        assert_eq!(est.real(&k, &b), None);
        // b returns with its old counters: a fresh start, not a 4 s delta.
        sample(&mut est, 3, vec![(a, s(3)), (b, s(3))]);
        assert_eq!(est.real(&k, &b), Some(RateView::default()));
        est.sample(t0 + PERIOD * 4, std::iter::empty::<(ServiceKey, StatsView, Vec<_>)>());
        assert_eq!(est.service(&k), None);
        assert_eq!(est.real(&k, &a), None);
    }

    #[test]
    fn early_samples_are_ignored_and_late_ones_scaled() {
        let t0 = Instant::now();
        let mut est = Estimator::new();
        one(&mut est, t0, stats(0, 0, 0, 0, 0));
        assert!(!one(&mut est, t0 + Duration::from_millis(500), stats(1_000, 0, 0, 0, 0)));
        // 2.05 s counts as one period: (200 << 9) >> 2 = 25600 → 25.
        assert!(one(&mut est, t0 + Duration::from_millis(2_050), stats(200, 0, 0, 0, 0)));
        let k = key("10.0.0.1:80");
        assert_eq!(est.services[&k].est.avg[0], 25_600);
        // 400 connections over 4 s is 100/s: the same scaled rate 102400,
        // avg 25600 + (76800 >> 2) = 44800.
        one(&mut est, t0 + Duration::from_millis(6_050), stats(600, 0, 0, 0, 0));
        assert_eq!(est.services[&k].est.avg[0], 44_800);
    }

    #[test]
    fn fill_rates_sets_services_and_reals() {
        use crate::view::{RealView, ServiceView};
        let real_view = |address: &str, s: StatsView| RealView {
            address: real(address),
            forward: "dr".into(),
            weight: 1,
            active: 0,
            inactive: 0,
            persistent_conns: 0,
            u_threshold: 0,
            l_threshold: 0,
            overloaded: false,
            stats: s,
            rate: RateView::default(),
            health: None,
            in_service: true,
        };
        let snapshot = |n: u64| Snapshot {
            conn_table_size: 4096,
            services: vec![ServiceView {
                protocol: "tcp".into(),
                address: "10.0.0.1:80".parse().unwrap(),
                scheduler: "rr".into(),
                scheduler_flags: Vec::new(),
                persistent: None,
                netmask: None,
                reals: vec![
                    real_view("10.0.1.11:80", stats(2 * n, 0, 0, 0, 0)),
                    real_view("10.0.1.12:80", stats(0, 0, 0, 0, 0)),
                ],
                stats: stats(2 * n, 0, 0, 0, 0),
                rate: RateView::default(),
            }],
            counters: std::collections::BTreeMap::new(),
        };
        let t0 = Instant::now();
        let mut est = Estimator::new();
        for n in 0..40 {
            est.sample_snapshot(t0 + PERIOD * n, &snapshot(u64::from(n) * 1_000));
        }
        let mut snap = snapshot(0);
        snap.services[0].reals.push(real_view("10.0.1.13:80", StatsView::default()));
        fill_rates(&mut snap, &est);
        assert_eq!(snap.services[0].rate.cps, 1_000);
        assert_eq!(snap.services[0].reals[0].rate.cps, 1_000);
        assert_eq!(snap.services[0].reals[1].rate, RateView::default());
        assert_eq!(snap.services[0].reals[2].rate, RateView::default());
    }
}
