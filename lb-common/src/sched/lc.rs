//! lc, least connection: `net/netfilter/ipvs/ip_vs_lc.c`.

use super::Dest;
use super::dest::weighted_least;

/// `ip_vs_lc_schedule()`: the real with the smallest connection overhead
/// (`active * 256 + inactive`), weight ignored except that 0 means
/// quiescent. Overloaded reals are skipped; ties (strict `<`) keep the
/// earlier real, i.e. the most recently added.
#[inline(always)]
pub fn lc_schedule(nreals: u32, mut real: impl FnMut(u32) -> Option<Dest>) -> Option<u32> {
    // lc is wlc with every available real at weight 1: the first available
    // real seeds, and a later one replaces it only with a strictly lower
    // overhead. One scan shape for both keeps the verifier's work the same.
    let mut unweighted = |i| real(i).map(|d: Dest| Dest { weight: u32::from(d.weight > 0), ..d });
    weighted_least(nreals, &mut unweighted, Dest::conn_overhead).map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(reals: &[Dest]) -> Option<u32> {
        lc_schedule(reals.len() as u32, |i| reals.get(i as usize).copied())
    }

    #[test]
    fn new_connections_go_where_fewest_are_held_open() {
        let mut reals = [Dest::new(0, 1), Dest::new(1, 1), Dest::new(2, 1)];
        // All idle: the first in scan order (the newest real).
        assert_eq!(pick(&reals), Some(0));
        // Hold connections open as they are scheduled: they spread out.
        let mut order = std::vec::Vec::new();
        for _ in 0..6 {
            let i = pick(&reals).unwrap();
            reals[i as usize].active += 1;
            order.push(i);
        }
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
        // One real holds a long-lived connection: the next two go elsewhere.
        let reals = [Dest::new(0, 1).with_conns(1, 0), Dest::new(1, 1), Dest::new(2, 1)];
        assert_eq!(pick(&reals), Some(1));
    }

    #[test]
    fn weight_only_matters_as_zero_and_inactive_count_little() {
        // A heavy weight does not attract more: 1 active beats 2 active.
        let reals = [Dest::new(0, 100).with_conns(2, 0), Dest::new(1, 1).with_conns(1, 0)];
        assert_eq!(pick(&reals), Some(1));
        // 255 inactive still weigh less than 1 active.
        let reals = [Dest::new(0, 1).with_conns(1, 0), Dest::new(1, 1).with_conns(0, 255)];
        assert_eq!(pick(&reals), Some(1));
        let reals = [Dest::new(0, 0), Dest::new(1, 1).with_conns(9, 9)];
        assert_eq!(pick(&reals), Some(1));
    }

    #[test]
    fn overloaded_and_quiescent_are_never_picked() {
        let reals = [Dest::new(0, 1).overloaded(), Dest::new(1, 0)];
        assert_eq!(pick(&reals), None);
        assert_eq!(pick(&[]), None);
    }
}
