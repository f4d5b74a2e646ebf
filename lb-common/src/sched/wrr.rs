//! wrr, weighted round robin: `net/netfilter/ipvs/ip_vs_wrr.c`.
//!
//! The kernel walks the list in passes. Each pass accepts reals whose weight
//! is at least the current weight `cw`; every time the walk wraps past the
//! end of the list `cw` drops by `di` (the weights' gcd), and below 1 it
//! starts again at `mw`. A pick leaves the cursor on the picked real.
//!
//! `ip_vs_wrr_schedule()` may run `mw / di` fruitless passes before one
//! accepts somebody (weights 1000 and 1 with the 1000 overloaded: a thousand
//! passes). A verifier cannot accept a loop like that, so
//! [`wrr_schedule`] computes which pass first accepts a real instead of
//! running the passes in between. It reaches the same pick and leaves the
//! same `(cursor, cw)` as the kernel in every case, including the
//! `last_pass`/`restarted`/`stop` bookkeeping that ends the kernel's search;
//! the tests check it against a literal transcription of the kernel loop.

use super::Dest;
use super::dest::scan_len;
use crate::MAX_REALS_PER_SERVICE;

/// `struct ip_vs_wrr_mark`, map-friendly. Keep one per service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WrrState {
    /// `cl`: 0 for the list head, or `index + 1` of the last pick (the same
    /// encoding as rr's cursor).
    pub cursor: u32,
    /// `cw`: the weight the current pass requires.
    pub cw: u32,
    /// `mw`: the highest weight, less `di - 1` (so that the last pass of a
    /// round runs at 1, catching weights below `di`).
    pub mw: u32,
    /// `di`: the gcd of the weights above 0 (1 if there are none).
    pub di: u32,
}

const _: () = assert!(core::mem::size_of::<WrrState>() == 16);

#[cfg(feature = "user")]
// SAFETY: repr(C), four u32s, no padding.
unsafe impl aya::Pod for WrrState {}

impl WrrState {
    /// `ip_vs_wrr_init_svc()`: the cursor at the head, `cw = mw`.
    /// `weights` in scan order; only the first `MAX_REALS_PER_SERVICE` count.
    #[must_use]
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let (di, mw) = di_mw(weights);
        Self { cursor: 0, cw: mw, mw, di }
    }

    /// `ip_vs_wrr_dest_changed()`, which IPVS runs when a real is added,
    /// removed or edited: the cursor back to the head, `di` and `mw` again,
    /// and `cw` kept when it still fits (clamped to `mw`, or moved onto the
    /// new `di` grid).
    pub fn dest_changed(&mut self, weights: impl IntoIterator<Item = u32>) {
        let (di, mw) = di_mw(weights);
        self.cursor = 0;
        self.di = di;
        self.mw = mw;
        if self.cw > mw || self.cw == 0 {
            self.cw = mw;
        } else if di > 1 {
            self.cw = (self.cw / di) * di + 1;
        }
    }
}

/// `ip_vs_wrr_gcd_weight()` and `ip_vs_wrr_max_weight()`.
fn di_mw(weights: impl IntoIterator<Item = u32>) -> (u32, u32) {
    let mut g = 0;
    let mut max = 0;
    for w in weights.into_iter().take(MAX_REALS_PER_SERVICE) {
        if w > 0 {
            g = if g > 0 { gcd(w, g) } else { w };
        }
        max = max.max(w);
    }
    let di = if g > 0 { g } else { 1 };
    // max >= di whenever some weight is positive, and di == 1 otherwise.
    (di, max - (di - 1))
}

/// Euclid; 64 steps cover any pair of u32s (the worst case, consecutive
/// Fibonacci numbers, needs 46).
fn gcd(mut a: u32, mut b: u32) -> u32 {
    for _ in 0..64 {
        if b == 0 {
            break;
        }
        (a, b) = (b, a % b);
    }
    a
}

/// `ip_vs_wrr_schedule()`. Returns the scan index of the pick and updates
/// `state` as the kernel updates its mark, on success and on failure alike.
#[inline(always)]
pub fn wrr_schedule(
    state: &mut WrrState,
    nreals: u32,
    mut real: impl FnMut(u32) -> Option<Dest>,
) -> Option<u32> {
    let n = scan_len(nreals)?;
    // "No available dests?": the mark is left alone.
    if state.mw == 0 {
        return None;
    }
    let mw = u64::from(state.mw);
    let di = u64::from(state.di.max(1));
    // A zeroed map value has cw 0, which the kernel never holds with mw > 0
    // (init and dest_changed both set cw = mw); treat it as mw.
    let cw = if state.cw == 0 { mw } else { u64::from(state.cw) };
    // `last`: where this call starts, 0 (the head) or index + 1.
    let last = if state.cursor > n { 0 } else { state.cursor };

    let picked = |state: &mut WrrState, i: u32, cw: u64| {
        state.cursor = i + 1;
        state.cw = narrow(cw);
        Some(i)
    };

    // First pass: from the real after `last` to the end of the list, at cw.
    if let Some(i) = first_at_least(&mut real, last, n, cw) {
        return picked(state, i, cw);
    }
    // From here on every pass starts at the head. The heaviest real that is
    // not overloaded tells which pass first accepts somebody.
    let heaviest = heaviest(&mut real, n);

    if cw > di {
        // Passes at cw - di, cw - 2di, ... while above 0, each over the
        // whole list. The first to accept is the first at or below
        // `heaviest`.
        let k = if heaviest + di >= cw { 1 } else { (cw - heaviest).div_ceil(di) };
        if k * di < cw {
            let c = cw - k * di;
            if let Some(i) = first_at_least(&mut real, 0, n, c) {
                return picked(state, i, c);
            }
        }
        // The last of those passes ran at cw <= di, so when cw wraps below 1
        // `last_pass` is set: "no destination available", at the head.
        state.cursor = 0;
        state.cw = narrow(mw);
        return None;
    }

    // The first pass already ran at cw <= di and cw wraps right after it,
    // with `last_pass` still clear. Started from the head, that pass saw
    // every real: give up.
    state.cw = narrow(mw);
    if last == 0 {
        state.cursor = 0;
        return None;
    }
    // Otherwise the kernel restarts at mw. Passes above di cover the whole
    // list; the final one (cw <= di, `last_pass` with `restarted`) stops at
    // `last`, the reals before it being the ones the first pass missed.
    if mw > di {
        let j = if heaviest >= mw { 0 } else { (mw - heaviest).div_ceil(di) };
        if j * di + di < mw {
            let c = mw - j * di;
            if let Some(i) = first_at_least(&mut real, 0, n, c) {
                return picked(state, i, c);
            }
        }
    }
    let c = (mw - 1) % di + 1;
    if let Some(i) = first_at_least(&mut real, 0, last, c) {
        return picked(state, i, c);
    }
    // "All destinations are overloaded": the kernel stops on `last` itself
    // and keeps cw at the final pass's value.
    state.cursor = last;
    state.cw = narrow(c);
    None
}

/// cw never exceeds mw, which came from a u32.
#[expect(clippy::cast_possible_truncation, reason = "bounded by mw, a u32")]
const fn narrow(cw: u64) -> u32 {
    cw as u32
}

/// The first index in `from..to` of a real with no OVERLOAD and weight >= cw.
#[inline(always)]
fn first_at_least(
    real: &mut impl FnMut(u32) -> Option<Dest>,
    from: u32,
    to: u32,
    cw: u64,
) -> Option<u32> {
    for step in 0..MAX_REALS_PER_SERVICE as u32 {
        let i = from + step;
        if i >= to {
            break;
        }
        if real(i).is_some_and(|d| !d.overloaded && u64::from(d.weight) >= cw) {
            return Some(i);
        }
    }
    None
}

/// The highest weight among the reals with no OVERLOAD (0 if none).
#[inline(always)]
fn heaviest(real: &mut impl FnMut(u32) -> Option<Dest>, n: u32) -> u64 {
    let mut max = 0;
    for i in 0..MAX_REALS_PER_SERVICE as u32 {
        if i >= n {
            break;
        }
        if let Some(d) = real(i).filter(|d| !d.overloaded) {
            max = max.max(u64::from(d.weight));
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// `ip_vs_wrr_schedule()` transcribed literally, passes and all: the
    /// reference `wrr_schedule` must agree with. Positions are `None` for
    /// the list head and `Some(index)` for a real.
    fn kernel_wrr(mark: &mut WrrState, reals: &[Dest]) -> Option<u32> {
        let head = |c: u32| if c == 0 { None } else { Some(c as usize - 1) };
        let (mw, di) = (i64::from(mark.mw), i64::from(mark.di));
        let mut cw = i64::from(mark.cw);
        let mut dest = head(mark.cursor);
        if mw == 0 {
            return None;
        }
        let last = dest;
        let mut stop = None;
        let (mut last_pass, mut restarted) = (false, false);
        let outcome = 'search: loop {
            // list_for_each_entry_continue_rcu: from the entry after `dest`.
            let start = dest.map_or(0, |d| d + 1);
            for (i, r) in reals.iter().enumerate().skip(start) {
                dest = Some(i);
                if !r.overloaded && i64::from(r.weight) >= cw {
                    break 'search Some(i);
                }
                if Some(i) == stop {
                    break 'search None;
                }
            }
            dest = None;
            cw -= di;
            if cw <= 0 {
                cw = mw;
                if last_pass || last.is_none() {
                    break 'search None;
                }
                restarted = true;
            }
            last_pass = cw <= di;
            if last_pass && restarted && last.is_some() {
                stop = last;
            }
        };
        mark.cursor = dest.map_or(0, |d| d as u32 + 1);
        mark.cw = cw as u32;
        outcome.map(|i| i as u32)
    }

    fn run(state: &mut WrrState, reals: &[Dest], picks: usize) -> Vec<u32> {
        (0..picks)
            .filter_map(|_| {
                wrr_schedule(state, reals.len() as u32, |i| reals.get(i as usize).copied())
            })
            .collect()
    }

    fn weights(reals: &[Dest]) -> Vec<u32> {
        reals.iter().map(|d| d.weight).collect()
    }

    #[test]
    fn a4_b3_c2_give_a_b_a_c_b_a_c_b_a() {
        // Added A, B, C: scanned C, B, A.
        let reals = [Dest::new(2, 2), Dest::new(1, 3), Dest::new(0, 4)];
        let mut state = WrrState::new(weights(&reals));
        assert_eq!(state, WrrState { cursor: 0, cw: 4, mw: 4, di: 1 });
        let names: Vec<_> =
            run(&mut state, &reals, 18).into_iter().map(|i| ["C", "B", "A"][i as usize]).collect();
        let round = ["A", "B", "A", "C", "B", "A", "C", "B", "A"];
        assert_eq!(names[..9], round);
        assert_eq!(names[9..], round);
    }

    #[test]
    fn gcd_steps_and_mw_offset() {
        // Weights 4 and 6: di = 2, mw = 6 - 1 = 5, passes at 5, 3, 1.
        let reals = [Dest::new(0, 4), Dest::new(1, 6)];
        let mut state = WrrState::new(weights(&reals));
        assert_eq!((state.di, state.mw, state.cw), (2, 5, 5));
        // Per round: cw 5 -> [1]; cw 3 -> [0, 1]; cw 1 -> [0, 1].
        assert_eq!(run(&mut state, &reals, 10), [1, 0, 1, 0, 1, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn quiescent_and_overloaded_reals_get_nothing() {
        let reals = [Dest::new(0, 5).overloaded(), Dest::new(1, 0), Dest::new(2, 1)];
        let mut state = WrrState::new(weights(&reals));
        assert_eq!(run(&mut state, &reals, 4), [2, 2, 2, 2]);
        let none = [Dest::new(0, 0), Dest::new(1, 3).overloaded()];
        let mut state = WrrState::new(weights(&none));
        assert_eq!(wrr_schedule(&mut state, 2, |i| none.get(i as usize).copied()), None);
        let mut empty = WrrState::new([]);
        assert_eq!(empty, WrrState { cursor: 0, cw: 0, mw: 0, di: 1 });
        assert_eq!(wrr_schedule(&mut empty, 0, |_| None), None);
    }

    #[test]
    fn dest_changed_resets_cursor_and_rounds_cw() {
        let mut state = WrrState { cursor: 3, cw: 7, mw: 9, di: 1 };
        state.dest_changed([4, 8]); // di 4, mw 5: cw 7 > 5 -> 5
        assert_eq!(state, WrrState { cursor: 0, cw: 5, mw: 5, di: 4 });
        let mut state = WrrState { cursor: 1, cw: 7, mw: 9, di: 1 };
        state.dest_changed([3, 9]); // di 3, mw 7: 7 fits -> (7 / 3) * 3 + 1
        assert_eq!(state, WrrState { cursor: 0, cw: 7, mw: 7, di: 3 });
        let mut state = WrrState { cursor: 1, cw: 0, mw: 0, di: 1 };
        state.dest_changed([0, 2]);
        // di 2, mw = 2 - (2 - 1) = 1; cw 0 -> mw.
        assert_eq!(state, WrrState { cursor: 0, cw: 1, mw: 1, di: 2 });
    }

    /// A small deterministic generator for the randomized comparison.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u32 {
            (self.next() % n) as u32
        }
    }

    #[test]
    fn agrees_with_the_literal_kernel_loop() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for case in 0..4000 {
            let n = 1 + rng.below(7) as usize;
            // Weights on a grid (so di > 1 happens), sometimes 0, sometimes
            // huge, so that skipped passes are many.
            let grid = [1, 2, 3, 5][rng.below(4) as usize];
            let mut reals: Vec<Dest> = (0..n)
                .map(|i| {
                    let w = match rng.below(6) {
                        0 => 0,
                        1 => 1000 * grid,
                        _ => grid * (1 + rng.below(6)),
                    };
                    Dest {
                        id: i as u32,
                        weight: w,
                        overloaded: rng.below(4) == 0,
                        ..Dest::default()
                    }
                })
                .collect();
            let mut mine = WrrState::new(weights(&reals));
            // Start anywhere the kernel could be: any cursor, cw on the grid.
            if mine.mw > 0 {
                mine.cursor = rng.below(n as u64 + 1);
                mine.cw = 1 + rng.below(u64::from(mine.mw));
            }
            let mut kernel = mine;
            for step in 0..40 {
                if rng.below(10) == 0 {
                    // Flip an overload flag between picks: no dest_changed.
                    let i = rng.below(n as u64) as usize;
                    reals[i].overloaded = !reals[i].overloaded;
                }
                let want = kernel_wrr(&mut kernel, &reals);
                let got = wrr_schedule(&mut mine, n as u32, |i| reals.get(i as usize).copied());
                assert_eq!(got, want, "case {case} step {step}: {reals:?}");
                assert_eq!(mine, kernel, "case {case} step {step}: {reals:?}");
            }
        }
    }
}
