//! rr, round robin: `net/netfilter/ipvs/ip_vs_rr.c`.
//!
//! The scan itself is [`super::round_robin`]; this adds the OVERLOAD test
//! that `ip_vs_rr_schedule()` applies, and keeps the cursor on the same real
//! when the list changes (`ip_vs_rr_del_dest()`).

use super::{Candidate, Dest, round_robin};

/// `ip_vs_rr_schedule()`: from the real after the cursor, one lap; the first
/// real with weight > 0 and no OVERLOAD wins.
///
/// `cursor` is 0 for the list head (the start) or `index + 1` of the last
/// pick; store `pick + 1` back. The same encoding as `round_robin`.
#[inline(always)]
pub fn rr_schedule(
    cursor: u32,
    nreals: u32,
    mut real: impl FnMut(u32) -> Option<Dest>,
) -> Option<u32> {
    round_robin(cursor, nreals, |i| {
        // An overloaded real is as unavailable as a quiescent one.
        real(i).map(|d| Candidate { weight: if d.available() { d.weight } else { 0 } })
    })
}

/// The cursor after a real is added. IPVS adds at the list head, so every
/// index moves up by one; a cursor at the head stays there, and the next
/// scan starts with the newcomer (`ip_vs_rr.c` has no `add_dest`).
#[must_use]
pub const fn rr_cursor_after_add(cursor: u32) -> u32 {
    if cursor == 0 { 0 } else { cursor + 1 }
}

/// The cursor after the real at scan index `removed` is deleted.
/// `ip_vs_rr_del_dest()`: a cursor on the deleted real steps back to the
/// previous entry (or the head), so the scan resumes where it would have.
/// Reals after it move down one index, so a cursor there follows its real.
#[must_use]
pub const fn rr_cursor_after_del(cursor: u32, removed: u32) -> u32 {
    if cursor > removed { cursor - 1 } else { cursor }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn picks(reals: &[Dest], count: usize) -> Vec<u32> {
        let mut cursor = 0;
        (0..count)
            .map(|_| {
                let i = rr_schedule(cursor, reals.len() as u32, |i| reals.get(i as usize).copied())
                    .expect("a real");
                cursor = i + 1;
                i
            })
            .collect()
    }

    #[test]
    fn rr_over_a_b_c_goes_c_b_a() {
        // A=4, B=3, C=2 added in that order are scanned C, B, A; rr ignores
        // the weights' sizes.
        let reals = [Dest::new(0, 2), Dest::new(1, 3), Dest::new(2, 4)];
        let names: Vec<_> =
            picks(&reals, 6).into_iter().map(|i| ["C", "B", "A"][i as usize]).collect();
        assert_eq!(names, ["C", "B", "A", "C", "B", "A"]);
    }

    #[test]
    fn rr_skips_overloaded_and_quiescent() {
        let reals =
            [Dest::new(0, 1).overloaded(), Dest::new(1, 0), Dest::new(2, 1), Dest::new(3, 1)];
        assert_eq!(picks(&reals, 4), [2, 3, 2, 3]);
        let all_out = [Dest::new(0, 1).overloaded(), Dest::new(1, 0)];
        assert_eq!(rr_schedule(0, 2, |i| all_out.get(i as usize).copied()), None);
    }

    #[test]
    fn cursor_follows_its_real_through_list_changes() {
        // Scan order [X, Y, Z]; the last pick was Y (cursor 2).
        assert_eq!(rr_cursor_after_add(2), 3); // [N, X, Y, Z]: Y is index 2
        assert_eq!(rr_cursor_after_add(0), 0);
        // Deleting Y itself: resume after X, i.e. with Z next.
        assert_eq!(rr_cursor_after_del(2, 1), 1);
        // Deleting X (before Y): Y moves to index 0.
        assert_eq!(rr_cursor_after_del(2, 0), 1);
        // Deleting Z (after Y): nothing moves.
        assert_eq!(rr_cursor_after_del(2, 2), 2);
        // Deleting the first real when it was the last pick: back to the head.
        assert_eq!(rr_cursor_after_del(1, 0), 0);
    }
}
