//! sed, shortest expected delay: `net/netfilter/ipvs/ip_vs_sed.c`.

use super::Dest;
use super::dest::weighted_least;

/// `ip_vs_sed_dest_overhead()`: the expected delay counts the new
/// connection itself and only active connections, `active + 1`.
#[inline(always)]
#[must_use]
pub fn sed_overhead(d: &Dest) -> u64 {
    u64::from(d.active) + 1
}

/// `ip_vs_sed_schedule()`: wlc's scan with `(active + 1) / weight` as the
/// load. Unlike wlc, an idle heavy real beats an idle light one, since
/// `1 / weight` differs.
#[inline(always)]
pub fn sed_schedule(nreals: u32, mut real: impl FnMut(u32) -> Option<Dest>) -> Option<u32> {
    weighted_least(nreals, &mut real, sed_overhead).map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(reals: &[Dest]) -> Option<u32> {
        sed_schedule(reals.len() as u32, |i| reals.get(i as usize).copied())
    }

    #[test]
    fn expected_delay_is_active_plus_one_over_weight() {
        // Idle: 1/1 vs 1/3 -> the weight-3 real.
        let reals = [Dest::new(0, 1), Dest::new(1, 3)];
        assert_eq!(pick(&reals), Some(1));
        // (2+1)/3 = 1 vs (0+1)/1 = 1: a tie keeps the first.
        let reals = [Dest::new(0, 1), Dest::new(1, 3).with_conns(2, 0)];
        assert_eq!(pick(&reals), Some(0));
        // (3+1)/3 > 1/1.
        let reals = [Dest::new(0, 1), Dest::new(1, 3).with_conns(3, 0)];
        assert_eq!(pick(&reals), Some(0));
        // Inactive connections do not count at all.
        let reals = [Dest::new(0, 1).with_conns(0, 1000), Dest::new(1, 1)];
        assert_eq!(pick(&reals), Some(0));
    }

    #[test]
    fn fills_a_weight_3_real_three_times_as_fast() {
        let mut reals = [Dest::new(0, 1), Dest::new(1, 3)];
        let mut counts = [0; 2];
        for _ in 0..40 {
            let i = pick(&reals).unwrap() as usize;
            reals[i].active += 1;
            counts[i] += 1;
        }
        assert_eq!(counts, [10, 30]);
    }

    #[test]
    fn weight_zero_and_overloaded_never_win() {
        let reals =
            [Dest::new(0, 0), Dest::new(1, 9).overloaded(), Dest::new(2, 1).with_conns(9, 0)];
        assert_eq!(pick(&reals), Some(2));
        assert_eq!(pick(&reals[..2]), None);
    }
}
