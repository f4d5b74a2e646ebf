//! Scheduling: which real gets a new connection.
//!
//! Each scheduler is written once here, over a view of the service's reals in
//! IPVS scan order (newest-added first, see `ip_vs_ctl.c`'s `list_add`), and
//! both the XDP program and the host tests run this code. Every loop is
//! bounded by `MAX_REALS_PER_SERVICE` so that the verifier accepts it.

use crate::MAX_REALS_PER_SERVICE;

/// What a scheduler may know about one real.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Candidate {
    pub weight: u32,
}

impl Candidate {
    /// IPVS never gives a new connection to a weight-0 (quiescent) real.
    #[inline(always)]
    #[must_use]
    pub const fn available(&self) -> bool {
        self.weight > 0
    }
}

/// Round robin (`ip_vs_rr.c`): scan circularly for one lap from the position
/// after the last pick; the first available real wins.
///
/// `cursor` is the position after the last pick (0 at the start, which is the
/// list head). Returns the index of the pick; the caller stores `index + 1`
/// as the new cursor. `real(i)` yields the real at index `i`, or `None` when
/// it cannot be read.
#[inline(always)]
pub fn round_robin(
    cursor: u32,
    nreals: u32,
    mut real: impl FnMut(u32) -> Option<Candidate>,
) -> Option<u32> {
    if nreals == 0 || nreals > MAX_REALS_PER_SERVICE as u32 {
        return None;
    }
    let start = if cursor >= nreals { 0 } else { cursor };
    for step in 0..MAX_REALS_PER_SERVICE as u32 {
        if step >= nreals {
            break;
        }
        // A modulo rather than a wrap-around branch: one verifier path per
        // step instead of one per (step, wrap point) pair.
        let idx = (start + step) % nreals;
        if real(idx).is_some_and(|c| c.available()) {
            return Some(idx);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(weights: &[u32], picks: usize) -> std::vec::Vec<usize> {
        let mut cursor = 0;
        let mut out = std::vec::Vec::new();
        for _ in 0..picks {
            let i = round_robin(cursor, weights.len() as u32, |i| {
                Some(Candidate { weight: weights[i as usize] })
            })
            .expect("a real");
            cursor = i + 1;
            out.push(i as usize);
        }
        out
    }

    #[test]
    fn rr_goes_newest_first_and_wraps() {
        // Reals A, B, C added in that order are scanned C, B, A.
        let scan = ["C", "B", "A"];
        let order: std::vec::Vec<_> = run(&[1, 1, 1], 6).into_iter().map(|i| scan[i]).collect();
        assert_eq!(order, ["C", "B", "A", "C", "B", "A"]);
    }

    #[test]
    fn rr_ignores_weight_magnitude_and_skips_quiescent() {
        assert_eq!(run(&[4, 0, 2], 4), [0, 2, 0, 2]);
        assert_eq!(run(&[0, 0, 5], 3), [2, 2, 2]);
    }

    #[test]
    fn rr_finds_nothing_when_all_quiescent_or_empty() {
        assert_eq!(round_robin(0, 3, |_| Some(Candidate { weight: 0 })), None);
        assert_eq!(round_robin(0, 0, |_| Some(Candidate { weight: 1 })), None);
        assert_eq!(round_robin(1, 2, |_| None), None);
    }

    #[test]
    fn rr_survives_a_cursor_past_a_shrunken_list() {
        assert_eq!(round_robin(7, 3, |_| Some(Candidate { weight: 1 })), Some(0));
    }

    #[test]
    fn rr_splits_evenly() {
        let picks = run(&[1, 1, 1], 300);
        for r in 0..3 {
            assert_eq!(picks.iter().filter(|&&p| p == r).count(), 100);
        }
    }
}

// The full set of IPVS schedulers, one file each under `sched/`, over the
// richer `Dest` view (connection counts, OVERLOAD, id). `Candidate` and
// `round_robin` above stay as they are for the data plane that uses them.
mod dest;
pub mod dh;
pub mod hash;
pub mod lblc;
pub mod lblcr;
pub mod lc;
pub mod mh;
pub mod nq;
pub mod rr;
mod scheduler;
pub mod sed;
pub mod sh;
pub mod threshold;
pub mod wlc;
pub mod wrr;

pub use dest::Dest;
pub use dh::{DH_TAB_SIZE, NO_REAL, dh_build, dh_hashkey, dh_schedule};
pub use lblc::{lblc_overloaded, lblc_schedule, lblc_schedule_with};
pub use lblcr::{LBLCR_SET_MAX, LblcrEntry, lblcr_schedule, lblcr_schedule_with};
pub use lc::lc_schedule;
pub use mh::{MH_TAB_SIZE, MhReal, Probe, mh_build, mh_fallback, mh_first, mh_last_weight, mh_probe, mh_schedule};
pub use nq::nq_schedule;
pub use rr::{rr_cursor_after_add, rr_cursor_after_del, rr_schedule};
pub use scheduler::{
    SVC_F_MH_FALLBACK, SVC_F_MH_PORT, SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3, SVC_F_SH_FALLBACK,
    SVC_F_SH_PORT, Scheduler, UnknownScheduler,
};
pub use sed::sed_schedule;
pub use sh::{SH_TAB_SIZE, sh_build, sh_hashkey, sh_schedule};
pub use threshold::{overload_on_bind, overload_on_edit, overload_on_unbind, overload_update};
pub use wlc::wlc_schedule;
pub use wrr::{WrrState, wrr_schedule};
