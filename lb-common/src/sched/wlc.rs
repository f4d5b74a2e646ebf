//! wlc, weighted least connection: `net/netfilter/ipvs/ip_vs_wlc.c`.

use super::Dest;
use super::dest::weighted_least;

/// `ip_vs_wlc_schedule()`: the real with the least overhead per unit of
/// weight, `(active * 256 + inactive) / weight`, compared by
/// cross-multiplying. Overloaded and weight-0 reals never win; ties keep the
/// earlier real, i.e. the most recently added.
///
/// lblc and lblcr use this very scan when their cache has no usable real
/// (`__ip_vs_lblc_schedule()`, `__ip_vs_lblcr_schedule()` are copies of it).
#[inline(always)]
pub fn wlc_schedule(nreals: u32, mut real: impl FnMut(u32) -> Option<Dest>) -> Option<u32> {
    weighted_least(nreals, &mut real, Dest::conn_overhead).map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(reals: &[Dest]) -> Option<u32> {
        wlc_schedule(reals.len() as u32, |i| reals.get(i as usize).copied())
    }

    #[test]
    fn load_is_divided_by_weight() {
        // 2 active at weight 3 (170.7 per unit) beat 1 active at weight 1.
        let reals = [Dest::new(0, 1).with_conns(1, 0), Dest::new(1, 3).with_conns(2, 0)];
        assert_eq!(pick(&reals), Some(1));
        // A weight-2 real takes two connections for each one of a weight-1.
        let mut reals = [Dest::new(0, 1), Dest::new(1, 2)];
        let mut counts = [0; 2];
        for _ in 0..30 {
            let i = pick(&reals).unwrap() as usize;
            reals[i].active += 1;
            counts[i] += 1;
        }
        assert_eq!(counts, [10, 20]);
    }

    #[test]
    fn held_connections_push_new_ones_elsewhere_and_ties_go_first() {
        let reals = [Dest::new(0, 1), Dest::new(1, 1), Dest::new(2, 1)];
        assert_eq!(pick(&reals), Some(0));
        let reals = [Dest::new(0, 1).with_conns(3, 0), Dest::new(1, 1), Dest::new(2, 1)];
        assert_eq!(pick(&reals), Some(1));
        // Equal load per weight (256/1 and 512/2): the first stays.
        let reals = [Dest::new(0, 1).with_conns(1, 0), Dest::new(1, 2).with_conns(2, 0)];
        assert_eq!(pick(&reals), Some(0));
    }

    #[test]
    fn weight_zero_and_overloaded_never_win() {
        // An idle quiescent real, seen first or later, never wins.
        let reals = [Dest::new(0, 0), Dest::new(1, 1).with_conns(50, 0)];
        assert_eq!(pick(&reals), Some(1));
        let reals = [Dest::new(0, 1).with_conns(50, 0), Dest::new(1, 0)];
        assert_eq!(pick(&reals), Some(0));
        let reals = [Dest::new(0, 5).overloaded(), Dest::new(1, 1).with_conns(50, 0)];
        assert_eq!(pick(&reals), Some(1));
        let reals = [Dest::new(0, 0), Dest::new(1, 1).overloaded()];
        assert_eq!(pick(&reals), None);
    }
}
