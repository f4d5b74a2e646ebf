//! lblc, locality-based least connection: `net/netfilter/ipvs/ip_vs_lblc.c`.
//!
//! A cache maps each destination address to the real that served it last,
//! so that one destination keeps hitting one (cache) server. The data plane
//! keeps that cache in a map keyed by the destination address, holding the
//! real's id and when the entry was last used; [`lblc_schedule`] decides
//! whether the cached real still serves, or which real replaces it.

use super::Dest;
use super::dest::{scan_len, weighted_least};
use crate::MAX_REALS_PER_SERVICE;

/// `DEFAULT_EXPIRATION`: an entry unused for a day goes (the
/// `lblc_expiration` and `lblcr_expiration` sysctls), checked every 30
/// minutes by `ip_vs_lblc_full_check()`.
pub const LBLC_DEFAULT_EXPIRATION_SECS: u64 = 24 * 60 * 60;
/// `ENTRY_TIMEOUT`: when the cache outgrows its bound (16 entries per
/// bucket, 16384), entries unused for 6 minutes go first.
pub const LBLC_ENTRY_TIMEOUT_SECS: u64 = 6 * 60;

/// `time_after(a, b)` (`include/linux/jiffies.h`): `a` is later than `b`,
/// robust to the clock wrapping. Times are in any unit the caller keeps
/// consistently (the data plane's `bpf_ktime_get_ns`).
#[inline(always)]
#[must_use]
pub const fn time_after(a: u64, b: u64) -> bool {
    b.wrapping_sub(a).cast_signed() < 0
}

/// Whether a cache entry last used at `lastuse` has expired at `now`
/// (`ip_vs_lblc_full_check()`, `ip_vs_lblcr_full_check()`: an entry stays
/// while `now` is before `lastuse + timeout`).
#[must_use]
pub const fn entry_expired(lastuse: u64, now: u64, timeout: u64) -> bool {
    !time_after(lastuse.wrapping_add(timeout), now)
}

/// `is_overloaded()` of lblc and lblcr: the real has more active
/// connections than its weight while some real of the service has fewer
/// than half its weight. OVERLOAD flags play no part here.
#[inline(always)]
pub fn lblc_overloaded(
    dest: &Dest,
    nreals: u32,
    real: &mut impl FnMut(u32) -> Option<Dest>,
) -> bool {
    if dest.active <= dest.weight {
        return false;
    }
    let Some(n) = scan_len(nreals) else { return false };
    for i in 0..MAX_REALS_PER_SERVICE as u32 {
        if i >= n {
            break;
        }
        if real(i).is_some_and(|d| u64::from(d.active) * 2 < u64::from(d.weight)) {
            return true;
        }
    }
    false
}

/// `ip_vs_lblc_schedule()`.
///
/// `cached` is the real the destination's cache entry names, as it is now:
/// `None` when there is no entry, or when its real is no longer in the
/// service (the kernel's `!IP_VS_DEST_F_AVAILABLE`). The cached real is kept
/// while its weight is above 0 and [`lblc_overloaded`] says no; the kernel
/// does not test its OVERLOAD flag here, and neither does this. Otherwise
/// wlc picks over all reals.
///
/// Returns the real to use (its `id` says which), or `None`. The caller
/// then writes the entry as the kernel does: `lastuse = now` whenever an
/// entry was found, and an entry naming the returned real when it differs
/// from `cached` (`ip_vs_lblc_new()`).
///
/// lblc returns the real itself rather than a scan index, unlike the
/// stateless schedulers, because the cache names reals by id: scan indexes
/// shift whenever a real is added or removed.
#[inline(always)]
pub fn lblc_schedule(
    cached: Option<Dest>,
    nreals: u32,
    real: impl FnMut(u32) -> Option<Dest>,
) -> Option<Dest> {
    lblc_schedule_with(
        cached,
        real,
        |c, real| lblc_overloaded(c, nreals, real),
        |real| weighted_least(nreals, real, Dest::conn_overhead).map(|(_, d)| d),
    )
}

/// [`lblc_schedule`] with its two scans supplied by the caller: lblc's
/// overload rule (`overloaded(dest, real)`) and wlc over all reals
/// (`least(real)`, `__ip_vs_lblc_schedule()`), so that the data plane can
/// run each as a function the verifier checks once.
#[inline(always)]
pub fn lblc_schedule_with<R: FnMut(u32) -> Option<Dest>>(
    cached: Option<Dest>,
    mut real: R,
    overloaded: impl FnOnce(&Dest, &mut R) -> bool,
    least: impl FnOnce(&mut R) -> Option<Dest>,
) -> Option<Dest> {
    if let Some(c) = cached
        && c.weight > 0
        && !overloaded(&c, &mut real)
    {
        return Some(c);
    }
    least(&mut real)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(cached: Option<Dest>, reals: &[Dest]) -> Option<Dest> {
        lblc_schedule(cached, reals.len() as u32, |i| reals.get(i as usize).copied())
    }

    #[test]
    fn no_entry_means_wlc() {
        let reals = [Dest::new(7, 1).with_conns(1, 0), Dest::new(8, 1), Dest::new(9, 1)];
        assert_eq!(pick(None, &reals).map(|d| d.id), Some(8));
        assert_eq!(pick(None, &[Dest::new(1, 0)]), None);
    }

    #[test]
    fn the_cached_real_stays_even_when_busier() {
        // Cached real 7 has 4 active at weight 10: far busier than the
        // others, but not above its weight, so it keeps the destination.
        let reals = [Dest::new(7, 10).with_conns(4, 0), Dest::new(8, 10), Dest::new(9, 10)];
        assert_eq!(pick(Some(reals[0]), &reals).map(|d| d.id), Some(7));
        // Above its weight, but nobody below half of theirs: still kept.
        let reals = [Dest::new(7, 2).with_conns(3, 0), Dest::new(8, 2).with_conns(1, 0)];
        assert_eq!(pick(Some(reals[0]), &reals).map(|d| d.id), Some(7));
    }

    #[test]
    fn an_overloaded_cached_real_gives_way_to_wlc() {
        // 3 active > weight 2, and real 9 has 0 * 2 < 2: re-schedule.
        let reals =
            [Dest::new(7, 2).with_conns(3, 0), Dest::new(8, 2).with_conns(1, 0), Dest::new(9, 2)];
        assert_eq!(pick(Some(reals[0]), &reals).map(|d| d.id), Some(9));
    }

    #[test]
    fn the_overload_flag_is_ignored_for_the_cached_real_only() {
        // ip_vs_lblc_schedule() checks weight and is_overloaded(), not
        // IP_VS_DEST_F_OVERLOAD.
        let reals = [Dest::new(7, 2).overloaded(), Dest::new(8, 2)];
        assert_eq!(pick(Some(reals[0]), &reals).map(|d| d.id), Some(7));
        // wlc does skip it.
        assert_eq!(pick(None, &reals).map(|d| d.id), Some(8));
    }

    #[test]
    fn a_quiesced_or_removed_cached_real_is_replaced() {
        let reals = [Dest::new(7, 0), Dest::new(8, 1)];
        assert_eq!(pick(Some(reals[0]), &reals).map(|d| d.id), Some(8));
        // Removed: the caller passes None.
        assert_eq!(pick(None, &reals[1..]).map(|d| d.id), Some(8));
        // Nothing left to schedule.
        assert_eq!(pick(Some(reals[0]), &reals[..1]), None);
    }

    #[test]
    fn expiry_and_clock_wrap() {
        assert!(!entry_expired(100, 150, 60));
        assert!(entry_expired(100, 160, 60));
        assert!(time_after(5, u64::MAX - 5));
        assert!(!entry_expired(u64::MAX - 10, 20, 60)); // 31 ticks later
    }
}
