//! Connection thresholds and the OVERLOAD flag (`ipvsadm -x/-y`).
//!
//! The flag has hysteresis: it is set when a new connection brings the
//! real's total (active + inactive) to the upper threshold, and cleared only
//! once the total falls below the lower threshold, or below 3/4 of the upper
//! one when no lower threshold is set. Changing a connection's state
//! (active <-> inactive) keeps the total and touches nothing. A threshold of
//! 0 means none.
//!
//! Two forms of the same rule:
//! - per event, as mainline `ip_vs_bind_dest()` / `ip_vs_unbind_dest()`
//!   (`ip_vs_conn.c`) and `__ip_vs_update_dest()` (`ip_vs_ctl.c`) apply it:
//!   [`overload_on_bind`], [`overload_on_unbind`], [`overload_on_edit`];
//! - as one function of the counts, [`overload_update`]: the
//!   `ip_vs_dest_update_overload()` of Julian Anastasov's July 2026 fix
//!   ("properly update the dest overload flag", posted for nf and stable;
//!   not in the mainline copy read for this), which bind, unbind and
//!   threshold edits all call. With fixed thresholds and `lower <= upper`
//!   both forms give the same flag after every bind and unbind.

/// `ip_vs_bind_dest()`: a connection was just counted on the real (`active`
/// and `inactive` include it). Sets the flag at `total >= upper`; never
/// clears it.
#[must_use]
pub fn overload_on_bind(active: u32, inactive: u32, upper: u32, overloaded: bool) -> bool {
    overloaded || (upper != 0 && total(active, inactive) >= u64::from(upper))
}

/// `ip_vs_unbind_dest()`: a connection was just uncounted. Clears the flag
/// below `lower`; with no lower threshold, when `total * 4 < upper * 3`;
/// with no thresholds at all, always. Never sets it.
#[must_use]
pub fn overload_on_unbind(
    active: u32,
    inactive: u32,
    upper: u32,
    lower: u32,
    overloaded: bool,
) -> bool {
    let total = total(active, inactive);
    let clear = if lower != 0 {
        total < u64::from(lower)
    } else if upper != 0 {
        // Computed in 64 bits; the kernel's 32-bit `unsigned` product would
        // wrap for thresholds above 1.4 billion.
        total * 4 < u64::from(upper) * 3
    } else {
        true
    };
    overloaded && !clear
}

/// `__ip_vs_update_dest()`: the thresholds were edited (or the real
/// re-added). The flag drops when the upper threshold is removed or raised;
/// otherwise it waits for the next unbind.
#[must_use]
pub fn overload_on_edit(old_upper: u32, new_upper: u32, overloaded: bool) -> bool {
    overloaded && new_upper != 0 && new_upper <= old_upper
}

/// `ip_vs_dest_update_overload()` (the July 2026 fix, see the module
/// comment): set at `total >= upper`; clear with no upper threshold, or
/// below `lower`, which defaults to `upper - upper / 4` (the same boundary
/// as mainline's `total * 4 < upper * 3`); in between, unchanged.
///
/// For a caller that sees counts rather than bind/unbind events. It departs
/// from the mainline events only where the fix meant to: a threshold edit
/// re-evaluates the flag at once, and a misconfigured `lower > upper` no
/// longer clears the flag while `total >= upper`.
#[must_use]
pub fn overload_update(
    active: u32,
    inactive: u32,
    upper: u32,
    lower: u32,
    overloaded: bool,
) -> bool {
    if upper == 0 {
        return false;
    }
    let total = total(active, inactive);
    if total >= u64::from(upper) {
        return true;
    }
    let lower = if lower != 0 { lower } else { upper - (upper >> 2) };
    overloaded && total >= u64::from(lower)
}

fn total(active: u32, inactive: u32) -> u64 {
    u64::from(active) + u64::from(inactive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_at_upper_cleared_below_lower() {
        // upper 10, lower 5.
        assert!(!overload_on_bind(5, 4, 10, false)); // 9
        assert!(overload_on_bind(6, 4, 10, false)); // 10
        // Draining: still overloaded until the total drops below 5.
        assert!(overload_on_unbind(3, 6, 10, 5, true)); // 9
        assert!(overload_on_unbind(5, 0, 10, 5, true)); // 5
        assert!(!overload_on_unbind(4, 0, 10, 5, true)); // 4
        // Once clear, an unbind never sets it again.
        assert!(!overload_on_unbind(20, 0, 10, 5, false));
    }

    #[test]
    fn without_lower_the_flag_clears_below_three_quarters() {
        // upper 8: clear when total * 4 < 24, i.e. total <= 5.
        assert!(overload_on_unbind(6, 0, 8, 0, true));
        assert!(!overload_on_unbind(5, 0, 8, 0, true));
        // upper 10: 7 * 4 = 28 < 30 clears; 7.5 is the real boundary.
        assert!(!overload_on_unbind(7, 0, 10, 0, true));
        assert!(overload_on_unbind(8, 0, 10, 0, true));
    }

    #[test]
    fn no_thresholds_means_never_overloaded() {
        assert!(!overload_on_bind(1_000_000, 0, 0, false));
        assert!(!overload_on_unbind(1_000_000, 0, 0, 0, true));
        assert!(!overload_update(1_000_000, 0, 0, 0, true));
    }

    #[test]
    fn hysteresis_over_a_rise_and_a_fall() {
        // upper 4, lower 2; connections arrive one by one, then leave.
        let (upper, lower) = (4, 2);
        let (mut flag, mut level) = (false, false);
        let mut seen = std::vec::Vec::new();
        for total in (1..=5).chain((0..5).rev()) {
            let rising = seen.len() < 5;
            flag = if rising {
                overload_on_bind(total, 0, upper, flag)
            } else {
                overload_on_unbind(total, 0, upper, lower, flag)
            };
            // The count-based rule follows the events exactly.
            level = overload_update(total, 0, upper, lower, level);
            assert_eq!(level, flag, "total {total}");
            seen.push(flag);
        }
        // totals: 1 2 3 4 5 | 4 3 2 1 0
        assert_eq!(seen, [false, false, false, true, true, true, true, true, false, false]);
    }

    #[test]
    fn both_default_lower_thresholds_agree() {
        // Mainline clears at total * 4 < upper * 3, the fix below
        // upper - upper / 4: the same integers.
        for upper in 1..300u32 {
            for total in 0..upper {
                let mainline = !overload_on_unbind(total, 0, upper, 0, true);
                let fix = !overload_update(total, 0, upper, 0, true);
                assert_eq!(mainline, fix, "upper {upper} total {total}");
            }
        }
    }

    #[test]
    fn the_level_form_where_it_departs_from_mainline() {
        // lower > upper: mainline's unbind clears at 6 < 8 although 6 >= 5.
        assert!(!overload_on_unbind(6, 0, 5, 8, true));
        assert!(overload_update(6, 0, 5, 8, true));
        // A lower threshold raised above the total takes effect at once.
        assert!(!overload_update(6, 0, 10, 7, true));
    }

    #[test]
    fn editing_thresholds() {
        assert!(!overload_on_edit(10, 0, true)); // upper removed
        assert!(!overload_on_edit(10, 20, true)); // raised
        assert!(overload_on_edit(10, 10, true)); // unchanged: wait for an unbind
        assert!(overload_on_edit(10, 5, true));
        assert!(!overload_on_edit(10, 5, false));
    }
}
