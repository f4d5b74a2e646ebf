//! nq, never queue: `net/netfilter/ipvs/ip_vs_nq.c`.

use super::Dest;
use super::dest::scan_len;
use super::sed::sed_schedule;
use crate::MAX_REALS_PER_SERVICE;

/// `ip_vs_nq_schedule()`: the first real with no active connection wins at
/// once, whatever its weight; when every real is busy, sed's choice.
/// Overloaded and weight-0 reals are skipped.
#[inline(always)]
pub fn nq_schedule(nreals: u32, mut real: impl FnMut(u32) -> Option<Dest>) -> Option<u32> {
    let n = scan_len(nreals)?;
    // An idle available real has no queue at all: the first one wins at
    // once. `ip_vs_nq_schedule()` checks for it inside its sed scan; an idle
    // real met there would win anyway, so looking for it first is the same.
    for i in 0..MAX_REALS_PER_SERVICE as u32 {
        if i >= n {
            break;
        }
        if real(i).is_some_and(|d| d.available() && d.active == 0) {
            return Some(i);
        }
    }
    sed_schedule(nreals, real)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(reals: &[Dest]) -> Option<u32> {
        nq_schedule(reals.len() as u32, |i| reals.get(i as usize).copied())
    }

    #[test]
    fn the_first_idle_real_wins_whatever_the_weights() {
        // sed would take the weight-10 real; nq takes the idle weight-1 one.
        let reals = [Dest::new(0, 10).with_conns(1, 0), Dest::new(1, 1), Dest::new(2, 5)];
        assert_eq!(pick(&reals), Some(1));
        // Inactive connections do not make a real busy.
        let reals = [Dest::new(0, 1).with_conns(0, 40), Dest::new(1, 1)];
        assert_eq!(pick(&reals), Some(0));
    }

    #[test]
    fn all_busy_falls_back_to_sed() {
        // (1+1)/1 = 2 vs (3+1)/4 = 1.
        let reals = [Dest::new(0, 1).with_conns(1, 0), Dest::new(1, 4).with_conns(3, 0)];
        assert_eq!(pick(&reals), Some(1));
        // Equal: the first.
        let reals = [Dest::new(0, 1).with_conns(1, 0), Dest::new(1, 2).with_conns(3, 0)];
        assert_eq!(pick(&reals), Some(0));
    }

    #[test]
    fn idle_but_quiescent_or_overloaded_is_skipped() {
        let reals =
            [Dest::new(0, 0), Dest::new(1, 1).overloaded(), Dest::new(2, 1).with_conns(4, 0)];
        assert_eq!(pick(&reals), Some(2));
        assert_eq!(pick(&reals[..2]), None);
    }
}
