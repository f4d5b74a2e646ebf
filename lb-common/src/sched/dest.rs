//! The view of one real that the schedulers read: IPVS's `struct ip_vs_dest`
//! (`include/net/ip_vs.h`) reduced to the fields `net/netfilter/ipvs/ip_vs_*.c`
//! look at, and the few helpers those files share.

use crate::MAX_REALS_PER_SERVICE;

/// What a scheduler may know about one real.
///
/// The caller builds it from the `REALS` entry and the real's connection
/// counters; `overloaded` is the `IP_VS_DEST_F_OVERLOAD` flag, which the
/// functions in [`super::threshold`] maintain as connections come and go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dest {
    /// The real's stable id (its `REALS` index). Only lblc and lblcr read it:
    /// their caches must name a real across list changes, which shift scan
    /// indexes.
    pub id: u32,
    /// The configured weight; 0 means quiescent (no new connections).
    pub weight: u32,
    /// `ActiveConn`: connections in an active TCP state.
    pub active: u32,
    /// `InActConn`: every other connection (UDP, closing TCP, new ones).
    pub inactive: u32,
    /// `IP_VS_DEST_F_OVERLOAD`: the upper connection threshold was reached.
    pub overloaded: bool,
}

impl Dest {
    /// A real with no connections and no OVERLOAD flag.
    #[must_use]
    pub const fn new(id: u32, weight: u32) -> Self {
        Self { id, weight, active: 0, inactive: 0, overloaded: false }
    }

    /// The same real with these connection counts.
    #[must_use]
    pub const fn with_conns(self, active: u32, inactive: u32) -> Self {
        Self { active, inactive, ..self }
    }

    /// The same real, flagged overloaded.
    #[must_use]
    pub const fn overloaded(self) -> Self {
        Self { overloaded: true, ..self }
    }

    /// The test almost every scheduler applies before giving a real a new
    /// connection: `!(flags & IP_VS_DEST_F_OVERLOAD) && weight > 0`.
    #[inline(always)]
    #[must_use]
    pub const fn available(&self) -> bool {
        self.weight > 0 && !self.overloaded
    }

    /// `ip_vs_dest_conn_overhead()`: an active connection costs 256 times an
    /// inactive one.
    ///
    /// The kernel computes this in an `int`, which wraps past 8.4 million
    /// active connections; a `u64` cannot, and agrees everywhere below that.
    #[inline(always)]
    #[must_use]
    pub fn conn_overhead(&self) -> u64 {
        (u64::from(self.active) << 8) + u64::from(self.inactive)
    }

    /// `ip_vs_dest_totalconns()` (`ip_vs_conn.c`): what the thresholds count.
    #[inline(always)]
    #[must_use]
    pub fn total_conns(&self) -> u64 {
        u64::from(self.active) + u64::from(self.inactive)
    }
}

/// The weighted comparison of wlc, sed, nq, lblc and lblcr: is `a` (overhead
/// `a_oh` at weight `a_w`) more loaded than `b`? `a_oh / a_w > b_oh / b_w`,
/// cross-multiplied as the kernel does (`(__s64)loh * dw > (__s64)doh * lw`)
/// so that no division runs and a weight of 0 never looks less loaded.
///
/// Exact while an overhead stays below 2^32 (16.7 million active connections
/// on one real); the kernel's own `int` overhead wraps earlier than that.
#[inline(always)]
pub(crate) fn heavier(a_oh: u64, a_w: u32, b_oh: u64, b_w: u32) -> bool {
    a_oh.wrapping_mul(u64::from(b_w)) > b_oh.wrapping_mul(u64::from(a_w))
}

/// How many reals a scan visits, or `None` when the count is corrupt. Every
/// scheduler loop runs `0..MAX_REALS_PER_SERVICE` and stops at this, so the
/// verifier sees a constant bound.
#[inline(always)]
pub(crate) fn scan_len(nreals: u32) -> Option<u32> {
    (nreals > 0 && nreals as usize <= MAX_REALS_PER_SERVICE).then_some(nreals)
}

/// The shape every weighted-least-connection scan shares (`ip_vs_wlc.c`,
/// `ip_vs_sed.c`, `__ip_vs_lblc_schedule()`, `__ip_vs_lblcr_schedule()`):
/// seed with the first real that is not overloaded and has weight > 0, then
/// let each later non-overloaded real replace the seed when the seed is
/// strictly heavier. `overhead` is the scheduler's cost of a real.
///
/// The kernel's second stage skips only overloaded reals; a weight-0 real
/// still cannot win because `loh * 0 > doh * w` is false. Ties keep the
/// earlier real, i.e. the most recently added one. Returns the pick's scan
/// index and what was read of it.
#[inline(always)]
pub(crate) fn weighted_least(
    nreals: u32,
    real: &mut impl FnMut(u32) -> Option<Dest>,
    overhead: impl Fn(&Dest) -> u64,
) -> Option<(u32, Dest)> {
    let n = scan_len(nreals)?;
    // Plain variables rather than an `Option` of a tuple: LLVM may spill an
    // `Option`'s uninitialised payload, which the verifier refuses to read.
    let mut found = false;
    let mut least = (0u32, 0u64, Dest::default());
    for i in 0..MAX_REALS_PER_SERVICE as u32 {
        if i >= n {
            break;
        }
        let Some(d) = real(i) else { continue };
        // The kernel lets a weight-0 real into the comparison, where
        // `loh * 0 > doh * lw` can never make it the least: skipping it is
        // the same, and spares the verifier a comparison it could decide
        // (which would pin every value behind it and defeat its pruning).
        if d.overloaded || d.weight == 0 {
            continue;
        }
        let doh = overhead(&d);
        if !found || heavier(least.1, least.2.weight, doh, d.weight) {
            found = true;
            least = (i, doh, d);
        }
    }
    found.then_some((least.0, least.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_weighs_active_256_times_inactive() {
        assert_eq!(Dest::new(0, 1).with_conns(2, 3).conn_overhead(), 2 * 256 + 3);
        assert_eq!(Dest::new(0, 1).with_conns(2, 3).total_conns(), 5);
    }

    #[test]
    fn heavier_is_strict_and_weight_zero_never_lighter() {
        // 10/2 vs 5/1: equal load, not heavier either way.
        assert!(!heavier(10, 2, 5, 1));
        assert!(!heavier(5, 1, 10, 2));
        assert!(heavier(11, 2, 5, 1));
        // A weight-0 candidate: loh * 0 > doh * lw never holds.
        assert!(!heavier(1000, 1, 0, 0));
    }
}
