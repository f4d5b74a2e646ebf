//! mh, Maglev hashing: `net/netfilter/ipvs/ip_vs_mh.c`.
//!
//! Each real owns a pseudo-random permutation of a 4093-slot table (an
//! offset and a skip hashed from its address and port); the reals take
//! turns claiming their next free preferred slot, each taking as many turns
//! per round as its weight allows, until the table is full. A lookup hashes
//! the client to a slot. Adding or removing a real moves few clients.
//!
//! The controller builds the table ([`mh_build`]) when a real is added,
//! removed or edited; the data plane looks it up ([`mh_schedule`]). The
//! hashes are the kernel's own (SipHash-1-3 with fixed keys), so a client
//! lands on the same real as with IPVS for the same real list.

use super::Dest;
use super::dh::NO_REAL;
use super::hash::{MH_HASH1, MH_HASH2, addr_fold, hsiphash_u32};
use super::scheduler::{SVC_F_MH_FALLBACK, SVC_F_MH_PORT};
use crate::MAX_REALS_PER_SERVICE;

/// `IP_VS_MH_TAB_SIZE` at the default `CONFIG_IP_VS_MH_TAB_INDEX` (12):
/// `primes[12 - 8]`.
pub const MH_TAB_SIZE: usize = 4093;
/// `IP_VS_MH_TAB_BITS` (12 / 2): weights are scaled down until the largest
/// fits in this many bits.
const MH_TAB_BITS: u32 = 6;
const SIZE: u32 = MH_TAB_SIZE as u32;

/// What the table builder needs of one real.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MhReal {
    /// The real's address as the maps hold it (network order in memory).
    pub addr: [u32; 4],
    /// The real's port, network order.
    pub port: u16,
    /// The weight mh builds with: the last non-zero weight the real was
    /// given (see [`mh_last_weight`]), so that quiescing a real keeps its
    /// slots and its clients come back to it.
    pub last_weight: u32,
}

/// `dest->last_weight` (`__ip_vs_update_dest()`): set from the weight a real
/// is added with (even 0), and afterwards only from non-zero weights.
#[must_use]
pub const fn mh_last_weight(previous: u32, new_weight: u32, adding: bool) -> u32 {
    if adding || new_weight != 0 { new_weight } else { previous }
}

/// `ip_vs_mh_hashkey()`: `hsiphash(offset + ntohs(port) + ntohl(addr_fold))`
/// with `key`. `port` in network order.
#[inline(always)]
#[must_use]
pub fn mh_hashkey(addr: &[u32; 4], family: u8, port: u16, key: &[u64; 2], offset: u32) -> u32 {
    let v =
        offset.wrapping_add(u32::from(u16::from_be(port))).wrapping_add(addr_fold(addr, family));
    hsiphash_u32(v, key)
}

/// A real's place in the population (`struct ip_vs_mh_dest_setup`).
#[derive(Clone, Copy, Default)]
struct Setup {
    /// The next preferred slot (`perm`, starting at `offset`).
    perm: u32,
    skip: u32,
    /// Slots claimed per round.
    turns: u32,
}

/// Builds the lookup table: `ip_vs_mh_reassign()` with `ip_vs_mh_gcd_weight()`,
/// `ip_vs_mh_shift_weight()`, `ip_vs_mh_permutate()` and `ip_vs_mh_populate()`.
///
/// `reals` in scan order (at most `MAX_REALS_PER_SERVICE`; more are
/// ignored), `family` the service's (the kernel hashes real addresses by the
/// service's family). Each slot gets a scan index; when no real has a
/// non-zero `last_weight` every slot is `NO_REAL`.
pub fn mh_build(reals: &[MhReal], family: u8, table: &mut [u32; MH_TAB_SIZE]) {
    table.fill(NO_REAL);
    let reals = &reals[..reals.len().min(MAX_REALS_PER_SERVICE)];

    // Weights divided by their gcd, then shifted right until the largest
    // fits in MH_TAB_BITS bits: per-round turns stay small however large
    // the weights are.
    let gcd = reals.iter().filter(|r| r.last_weight > 0).fold(0, |g, r| gcd(r.last_weight, g));
    if gcd == 0 {
        return;
    }
    let max = reals.iter().map(|r| r.last_weight).max().unwrap_or(0) / gcd;
    let rshift = fls(max).saturating_sub(MH_TAB_BITS);

    let mut setup = [Setup::default(); MAX_REALS_PER_SERVICE];
    for (s, r) in setup.iter_mut().zip(reals) {
        let offset = mh_hashkey(&r.addr, family, r.port, &MH_HASH1, 0) % SIZE;
        s.skip = mh_hashkey(&r.addr, family, r.port, &MH_HASH2, 0) % (SIZE - 1) + 1;
        s.perm = offset;
        // A real whose scaled weight shifts down to 0 still gets one turn.
        let turns = (r.last_weight / gcd) >> rshift;
        s.turns = if turns > 0 { turns } else { u32::from(r.last_weight != 0) };
    }
    let setup = &mut setup[..reals.len()];

    // Round after round, each real claims `turns` slots, each the next free
    // one along its permutation. Every round claims at least one slot, so
    // MH_TAB_SIZE rounds always fill the table.
    let mut filled = 0;
    for _round in 0..MH_TAB_SIZE {
        for (idx, s) in (0u32..).zip(setup.iter_mut()) {
            for _turn in 0..s.turns {
                let slot = next_free(table, s);
                table[slot] = idx;
                filled += 1;
                if filled == MH_TAB_SIZE {
                    return;
                }
            }
        }
    }
}

/// The real's next preferred slot that nobody holds yet (the table is not
/// full, and a prime size with skip in 1..size visits every slot).
fn next_free(table: &[u32; MH_TAB_SIZE], s: &mut Setup) -> usize {
    for _ in 0..MH_TAB_SIZE {
        if table[s.perm as usize] == NO_REAL {
            break;
        }
        s.perm += s.skip;
        if s.perm >= SIZE {
            s.perm -= SIZE;
        }
    }
    s.perm as usize
}

/// Euclid, bounded as in `wrr`.
fn gcd(mut a: u32, mut b: u32) -> u32 {
    for _ in 0..64 {
        if b == 0 {
            break;
        }
        (a, b) = (b, a % b);
    }
    a
}

/// `fls()`: the 1-based position of the highest set bit, 0 for 0.
const fn fls(x: u32) -> u32 {
    32 - x.leading_zeros()
}

/// `ip_vs_mh_schedule()`: the real in the client's slot, if it has weight > 0
/// and no OVERLOAD.
///
/// - `saddr`, `sport`: the client's address and source port (network
///   order); the port counts only with `SVC_F_MH_PORT` in `svc_flags` (pass
///   0 for protocols without ports, as `ip_vs_mh_get_port()` does).
/// - With `SVC_F_MH_FALLBACK`, an unavailable real sends the lookup on to
///   [`mh_fallback_slot`] for offsets 0, 1, 2...: the first available real
///   wins (`ip_vs_mh_get_fallback()`). That loop may take all 4093 probes,
///   each a hash; a data plane that cannot afford it can drive
///   `mh_fallback_slot` itself (e.g. from `bpf_loop`).
/// - `slot(i)` reads table entry `i`; a slot naming a real that `real()`
///   cannot read counts as unavailable.
#[inline(always)]
pub fn mh_schedule(
    saddr: &[u32; 4],
    family: u8,
    sport: u16,
    svc_flags: u8,
    mut slot: impl FnMut(u32) -> Option<u32>,
    mut real: impl FnMut(u32) -> Option<Dest>,
) -> Option<u32> {
    let port = if svc_flags & SVC_F_MH_PORT != 0 { sport } else { 0 };
    let first = mh_first(saddr, family, port, &mut slot, &mut real)?;
    mh_fallback(first, svc_flags, |offset, ihash| {
        mh_probe(saddr, family, port, ihash, offset, &mut slot, &mut real)
    })
}

/// What one fallback probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// An available real at this scan index.
    Found(u32),
    /// The slot's real is unavailable: probe on.
    Next,
    /// An empty table: the search ends.
    Stop,
}

/// The first lookup of `ip_vs_mh_schedule()`: the client's own slot.
/// `None` when the table is empty; otherwise whether its real is usable
/// (`Found`) or the fallback should start from `ihash` (`Err(ihash)`).
#[inline(always)]
pub fn mh_first(
    saddr: &[u32; 4],
    family: u8,
    port: u16,
    slot: &mut impl FnMut(u32) -> Option<u32>,
    real: &mut impl FnMut(u32) -> Option<Dest>,
) -> Option<Result<u32, u32>> {
    let ihash = mh_hashkey(saddr, family, port, &MH_HASH1, 0) % SIZE;
    // An empty table (no weighted real) ends the lookup either way.
    let idx = slot(ihash).filter(|&r| r != NO_REAL)?;
    Some(if real(idx).is_some_and(|d| d.available()) { Ok(idx) } else { Err(ihash) })
}

/// `ip_vs_mh_get_fallback()`'s probing, when the client's own slot was
/// unusable and `mh-fallback` is set: `probe(offset, ihash)` looks at one
/// rehashed slot. Kept apart from the probe itself so that the data plane
/// can verify one probe once, not 4093 times.
#[inline(always)]
pub fn mh_fallback(
    first: Result<u32, u32>,
    svc_flags: u8,
    mut probe: impl FnMut(u32, u32) -> Probe,
) -> Option<u32> {
    let ihash = match first {
        Ok(idx) => return Some(idx),
        Err(ihash) => ihash,
    };
    if svc_flags & SVC_F_MH_FALLBACK == 0 {
        return None;
    }
    for offset in 0..SIZE {
        match probe(offset, ihash) {
            Probe::Found(idx) => return Some(idx),
            Probe::Stop => return None,
            Probe::Next => {}
        }
    }
    None
}

/// One fallback probe: the slot for `offset`, and whether its real is
/// available.
#[inline(always)]
pub fn mh_probe(
    saddr: &[u32; 4],
    family: u8,
    port: u16,
    ihash: u32,
    offset: u32,
    slot: &mut impl FnMut(u32) -> Option<u32>,
    real: &mut impl FnMut(u32) -> Option<Dest>,
) -> Probe {
    match slot(mh_fallback_slot(saddr, family, port, ihash, offset)) {
        None | Some(NO_REAL) => Probe::Stop,
        Some(idx) if real(idx).is_some_and(|d| d.available()) => Probe::Found(idx),
        Some(_) => Probe::Next,
    }
}

/// The slot `ip_vs_mh_get_fallback()` reads at probe `offset` (0-based) for
/// a client whose own slot is `ihash`: the client rehashed with
/// `(ihash + offset) % 4093` added to its key.
#[inline(always)]
#[must_use]
pub fn mh_fallback_slot(saddr: &[u32; 4], family: u8, port: u16, ihash: u32, offset: u32) -> u32 {
    let roffset = (offset + ihash) % SIZE;
    mh_hashkey(saddr, family, port, &MH_HASH1, roffset) % SIZE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AF_INET, v4_addr};
    use std::boxed::Box;
    use std::vec::Vec;

    fn real(last: u8, weight: u32) -> MhReal {
        MhReal { addr: v4_addr([10, 0, 1, last]), port: 80u16.to_be(), last_weight: weight }
    }

    fn build(reals: &[MhReal]) -> Box<[u32; MH_TAB_SIZE]> {
        let mut t = Box::new([0; MH_TAB_SIZE]);
        mh_build(reals, AF_INET, &mut t);
        t
    }

    fn counts(t: &[u32; MH_TAB_SIZE], n: usize) -> Vec<usize> {
        (0..n as u32).map(|r| t.iter().filter(|&&s| s == r).count()).collect()
    }

    fn pick(
        t: &[u32; MH_TAB_SIZE],
        dests: &[Dest],
        client: [u8; 4],
        sport: u16,
        flags: u8,
    ) -> Option<u32> {
        mh_schedule(
            &v4_addr(client),
            AF_INET,
            sport.to_be(),
            flags,
            |s| t.get(s as usize).copied(),
            |i| dests.get(i as usize).copied(),
        )
    }

    #[test]
    fn hashkey_is_the_kernels_siphash_of_port_plus_address() {
        // The input word is ntohs(80) + 10.0.1.1 as a host-order integer.
        let r = real(1, 1);
        let word = 80 + 0x0a00_0101;
        assert_eq!(
            mh_hashkey(&r.addr, AF_INET, r.port, &MH_HASH1, 0),
            hsiphash_u32(word, &MH_HASH1)
        );
        assert_eq!(
            mh_hashkey(&r.addr, AF_INET, r.port, &MH_HASH2, 5),
            hsiphash_u32(word + 5, &MH_HASH2)
        );
    }

    #[test]
    fn the_table_is_full_and_shares_follow_weights() {
        let t = build(&[real(1, 1), real(2, 1), real(3, 1)]);
        assert!(t.iter().all(|&s| s < 3));
        let c = counts(&t, 3);
        assert_eq!(c.iter().sum::<usize>(), MH_TAB_SIZE);
        // Equal weights: one third each, give or take the last round.
        assert!(c.iter().all(|&n| n.abs_diff(MH_TAB_SIZE / 3) <= 1), "{c:?}");
        // Weight 2 against 1: twice the slots.
        let c = counts(&build(&[real(1, 2), real(2, 1)]), 2);
        assert!(c[0].abs_diff(2 * c[1]) <= 2, "{c:?}");
        // Weights 100 and 50 reduce by their gcd to the same 2:1.
        assert_eq!(counts(&build(&[real(1, 100), real(2, 50)]), 2), c);
    }

    #[test]
    fn huge_weights_are_shifted_down_and_small_ones_keep_a_turn() {
        // 1000 / 1 needs 10 bits: shifted right by 4, turns 62 and 0 -> 1.
        let c = counts(&build(&[real(1, 1000), real(2, 1)]), 2);
        assert!(c[0].abs_diff(62 * c[1]) <= 62, "{c:?}");
        assert!(c[1] > 0);
    }

    #[test]
    fn no_weight_no_table() {
        assert!(build(&[]).iter().all(|&s| s == NO_REAL));
        assert!(build(&[real(1, 0), real(2, 0)]).iter().all(|&s| s == NO_REAL));
        // A weight-0 real among others holds no slot.
        let t = build(&[real(1, 0), real(2, 1)]);
        assert!(t.iter().all(|&s| s == 1));
        assert_eq!(pick(&build(&[]), &[], [10, 9, 9, 9], 0, SVC_F_MH_FALLBACK), None);
    }

    #[test]
    fn removing_a_real_moves_few_clients() {
        let four: Vec<_> = (1..=4).map(|i| real(i, 1)).collect();
        let before = build(&four);
        // Remove the real at scan index 1; indexes after it shift down.
        let three = [four[0], four[2], four[3]];
        let after = build(&three);
        let renamed = |s: u32| match s {
            0 => Some(0),
            1 => None,
            s => Some(s - 1),
        };
        let mut moved = 0;
        for (b, a) in before.iter().zip(after.iter()) {
            match renamed(*b) {
                None => {} // the removed real's slots must go somewhere
                Some(old) if old == *a => {}
                Some(_) => moved += 1,
            }
        }
        // Maglev's promise: the survivors keep nearly all their slots (a
        // plain modulo rehash would move about three quarters of them).
        let kept = MH_TAB_SIZE - counts(&before, 4)[1];
        assert!(moved * 20 < kept, "moved {moved} of {kept}");
    }

    #[test]
    fn a_quiesced_real_keeps_its_slots_through_last_weight() {
        let reals = [real(1, 2), real(2, 1), real(3, 1)];
        let before = build(&reals);
        // Weight set to 0: last_weight stays 2, the table does not change.
        let mut quiet = reals;
        quiet[0].last_weight = mh_last_weight(quiet[0].last_weight, 0, false);
        assert_eq!(quiet[0].last_weight, 2);
        assert_eq!(build(&quiet), before);
        // Added with weight 0, a real does hold 0.
        assert_eq!(mh_last_weight(7, 0, true), 0);
        assert_eq!(mh_last_weight(7, 3, false), 3);
    }

    #[test]
    fn clients_stick_and_fallback_moves_only_the_displaced() {
        let t = build(&[real(1, 1), real(2, 1), real(3, 1)]);
        let mut dests = [Dest::new(0, 1), Dest::new(1, 1), Dest::new(2, 1)];
        let clients: Vec<[u8; 4]> = (0..=255).map(|x| [192, 168, 7, x]).collect();
        let home: Vec<u32> =
            clients.iter().map(|&c| pick(&t, &dests, c, 999, 0).unwrap()).collect();
        // Stable across lookups, and the port is ignored without mh-port.
        for (&c, &h) in clients.iter().zip(&home) {
            assert_eq!(pick(&t, &dests, c, 1, 0), Some(h));
        }
        // Real 0 quiesced: without fallback its clients get nothing...
        dests[0].weight = 0;
        for (&c, &h) in clients.iter().zip(&home) {
            let now = pick(&t, &dests, c, 1, 0);
            assert_eq!(now, (h != 0).then_some(h));
            // ...with fallback they move and nobody else does.
            let fb = pick(&t, &dests, c, 1, SVC_F_MH_FALLBACK).unwrap();
            if h == 0 {
                assert_ne!(fb, 0);
            } else {
                assert_eq!(fb, h);
            }
        }
        // Everybody out: fallback finds nothing.
        let none = [Dest::new(0, 0); 3];
        assert_eq!(pick(&t, &none, [192, 168, 7, 1], 1, SVC_F_MH_FALLBACK), None);
    }

    #[test]
    fn mh_port_spreads_one_client() {
        let t = build(&[real(1, 1), real(2, 1), real(3, 1)]);
        let dests = [Dest::new(0, 1), Dest::new(1, 1), Dest::new(2, 1)];
        let spread: std::collections::BTreeSet<_> = (1000..1100)
            .filter_map(|p| pick(&t, &dests, [10, 0, 0, 1], p, SVC_F_MH_PORT))
            .collect();
        assert_eq!(spread.len(), 3);
    }
}
