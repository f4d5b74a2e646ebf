//! lblcr, locality-based least connection with replication:
//! `net/netfilter/ipvs/ip_vs_lblcr.c`.
//!
//! Each destination address maps to a small set of reals; wlc picks within
//! the set. When the set's pick is overloaded (lblc's rule) wlc picks over
//! all reals and the winner joins the set; a set that has not changed for
//! the expiration time sheds its most loaded member. The data plane keeps
//! one [`LblcrEntry`] per destination address in a map.

use super::Dest;
use super::dest::{heavier, weighted_least};
use super::lblc::{lblc_overloaded, time_after};

/// The most reals one set holds. The kernel's set is an unbounded list, but
/// it only grows while its best member is overloaded and shrinks again once
/// it has been stable for the expiration time, so in practice it holds a
/// few reals. A full set refuses a newcomer exactly as the kernel does when
/// it cannot allocate one (`ip_vs_dest_set_insert()` returns quietly): the
/// pick is still used, the set and its `lastmod` stay as they were.
pub const LBLCR_SET_MAX: usize = 16;

/// `struct ip_vs_lblcr_entry` with its `struct ip_vs_dest_set`, as a map
/// value. `len == 0` stands for "no entry": a kernel entry always has at
/// least one member.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LblcrEntry {
    /// When the entry was last used (for expiry, see `lblc::entry_expired`).
    pub lastuse: u64,
    /// When the set last gained or lost a member.
    pub lastmod: u64,
    /// How many of `members` are in use.
    pub len: u32,
    pub _pad: u32,
    /// The members' real ids, newest first (`list_add_rcu()` at the head);
    /// wlc ties within the set go to the newest.
    pub members: [u32; LBLCR_SET_MAX],
}

const _: () = assert!(core::mem::size_of::<LblcrEntry>() == 24 + 4 * LBLCR_SET_MAX);

#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, padding spelled out.
unsafe impl aya::Pod for LblcrEntry {}

impl LblcrEntry {
    /// The members in use, newest first.
    #[must_use]
    pub fn members(&self) -> &[u32] {
        &self.members[..self.len().min(LBLCR_SET_MAX)]
    }

    fn len(&self) -> usize {
        self.len as usize
    }

    /// `ip_vs_dest_set_insert(set, dest, true)`: add at the head unless
    /// already there (or the set is full); a change stamps `lastmod`.
    fn insert(&mut self, id: u32, now: u64) {
        let len = self.len().min(LBLCR_SET_MAX);
        for k in 0..LBLCR_SET_MAX {
            if k < len && self.members[k] == id {
                return;
            }
        }
        if len == LBLCR_SET_MAX {
            return;
        }
        for k in (1..LBLCR_SET_MAX).rev() {
            if k <= len {
                self.members[k] = self.members[k - 1];
            }
        }
        self.members[0] = id;
        self.len += 1;
        self.lastmod = now;
    }

    /// `ip_vs_dest_set_erase()`: drop `id`, stamping `lastmod`.
    fn erase(&mut self, id: u32, now: u64) {
        let len = self.len().min(LBLCR_SET_MAX);
        let mut found = false;
        for k in 0..LBLCR_SET_MAX {
            if k >= len {
                break;
            }
            found |= self.members[k] == id;
            if found && k + 1 < LBLCR_SET_MAX {
                self.members[k] = self.members[k + 1];
            }
        }
        if found {
            self.members[len - 1] = 0;
            self.len -= 1;
            self.lastmod = now;
        }
    }
}

/// `ip_vs_dest_set_min()`: wlc over the set, in set order. Members with
/// OVERLOAD, weight 0 or no longer in the service are passed over.
fn set_min(entry: &LblcrEntry, member: &mut impl FnMut(u32) -> Option<Dest>) -> Option<Dest> {
    let len = entry.len().min(LBLCR_SET_MAX);
    let mut least: Option<(u64, Dest)> = None;
    for k in 0..LBLCR_SET_MAX {
        if k >= len {
            break;
        }
        let Some(d) = member(entry.members[k]).filter(|d| !d.overloaded) else { continue };
        let doh = d.conn_overhead();
        match least {
            None if d.weight > 0 => least = Some((doh, d)),
            Some((loh, l)) if heavier(loh, l.weight, doh, d.weight) => least = Some((doh, d)),
            _ => {}
        }
    }
    least.map(|(_, d)| d)
}

/// `ip_vs_dest_set_max()`: the member with the most overhead per weight,
/// weight-0 members aside, the first one winning ties. OVERLOAD plays no
/// part.
///
/// Deviation: the kernel still weighs a member that was removed from the
/// service, by its last weight and draining counters. Once a real is gone
/// we cannot read those, so such a member is passed over here.
fn set_max(entry: &LblcrEntry, member: &mut impl FnMut(u32) -> Option<Dest>) -> Option<u32> {
    let len = entry.len().min(LBLCR_SET_MAX);
    let mut most: Option<(u64, Dest)> = None;
    for k in 0..LBLCR_SET_MAX {
        if k >= len {
            break;
        }
        let Some(d) = member(entry.members[k]).filter(|d| d.weight > 0) else { continue };
        let doh = d.conn_overhead();
        // moh / mw < doh / dw, i.e. d is the heavier.
        if most.is_none_or(|(moh, m)| heavier(doh, d.weight, moh, m.weight)) {
            most = Some((doh, d));
        }
    }
    most.map(|(_, d)| d.id)
}

/// `ip_vs_lblcr_schedule()`.
///
/// - `entry`: the destination's entry, updated in place; pass a default
///   (empty) one when the map has none, and store it if it comes back
///   non-empty.
/// - `now`, `expiration`: the clock and the `lblcr_expiration` sysctl
///   (default a day, `lblc::LBLC_DEFAULT_EXPIRATION_SECS`), same unit.
/// - `member(id)`: a set member by real id, `None` when that real is no
///   longer in the service.
/// - `real(i)`: the service's reals by scan index, for wlc and for lblc's
///   overload rule.
///
/// Order as in the kernel: the set's pick is chosen before an expired set
/// sheds its most loaded member, so that member may still serve this one
/// connection.
///
/// Returns the real to use, by value (its `id` says which) as lblc does.
#[inline(always)]
pub fn lblcr_schedule(
    entry: &mut LblcrEntry,
    now: u64,
    expiration: u64,
    member: impl FnMut(u32) -> Option<Dest>,
    nreals: u32,
    real: impl FnMut(u32) -> Option<Dest>,
) -> Option<Dest> {
    lblcr_schedule_with(
        entry,
        now,
        expiration,
        member,
        real,
        |d, real| lblc_overloaded(d, nreals, real),
        |real| weighted_least(nreals, real, Dest::conn_overhead).map(|(_, d)| d),
    )
}

/// [`lblcr_schedule`] with its two scans supplied by the caller: lblc's
/// overload rule (`overloaded(dest, real)`) and wlc over all reals
/// (`least(real)`), so that the data plane can run each as a function the
/// verifier checks once.
#[inline(always)]
pub fn lblcr_schedule_with<R: FnMut(u32) -> Option<Dest>>(
    entry: &mut LblcrEntry,
    now: u64,
    expiration: u64,
    mut member: impl FnMut(u32) -> Option<Dest>,
    mut real: R,
    overloaded: impl FnOnce(&Dest, &mut R) -> bool,
    mut least: impl FnMut(&mut R) -> Option<Dest>,
) -> Option<Dest> {
    if entry.len == 0 {
        // No entry: wlc over all reals, and a new entry holding the pick
        // (`ip_vs_lblcr_new()`).
        let d = least(&mut real)?;
        *entry = LblcrEntry { lastuse: now, ..LblcrEntry::default() };
        entry.insert(d.id, now);
        return Some(d);
    }
    entry.lastuse = now;
    let pick = set_min(entry, &mut member);
    // More than one member and no change for `expiration`: shed the most
    // loaded one.
    if entry.len > 1
        && time_after(now, entry.lastmod.wrapping_add(expiration))
        && let Some(m) = set_max(entry, &mut member)
    {
        entry.erase(m, now);
    }
    if let Some(d) = pick
        && !overloaded(&d, &mut real)
    {
        return Some(d);
    }
    // The set has no usable real: wlc over all, and the winner joins.
    let d = least(&mut real)?;
    entry.insert(d.id, now);
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reals whose id is their scan index.
    fn schedule(entry: &mut LblcrEntry, now: u64, reals: &[Dest]) -> Option<u32> {
        lblcr_schedule(
            entry,
            now,
            100,
            |id| reals.iter().find(|d| d.id == id).copied(),
            reals.len() as u32,
            |i| reals.get(i as usize).copied(),
        )
        .map(|d| d.id)
    }

    fn reals(conns: &[(u32, u32)]) -> std::vec::Vec<Dest> {
        (0u32..).zip(conns).map(|(id, &(w, a))| Dest::new(id, w).with_conns(a, 0)).collect()
    }

    #[test]
    fn a_new_destination_gets_the_wlc_pick() {
        let rs = reals(&[(1, 1), (1, 0), (1, 2)]);
        let mut e = LblcrEntry::default();
        assert_eq!(schedule(&mut e, 5, &rs), Some(1));
        assert_eq!((e.members(), e.lastuse, e.lastmod), (&[1][..], 5, 5));
        // Nothing available: no entry is made.
        let mut e = LblcrEntry::default();
        assert_eq!(schedule(&mut e, 5, &reals(&[(0, 0)])), None);
        assert_eq!(e, LblcrEntry::default());
    }

    #[test]
    fn the_set_serves_until_its_pick_is_overloaded_then_grows() {
        let mut rs = reals(&[(2, 0), (2, 0), (2, 0)]);
        let mut e = LblcrEntry::default();
        assert_eq!(schedule(&mut e, 0, &rs), Some(0));
        // Real 0 busier than the others, but not above its weight: kept.
        rs[0].active = 2;
        assert_eq!(schedule(&mut e, 10, &rs), Some(0));
        assert_eq!(e.lastuse, 10);
        // Above its weight while others are below half of theirs: wlc over
        // all picks real 1, which joins the set at its head.
        rs[0].active = 3;
        assert_eq!(schedule(&mut e, 20, &rs), Some(1));
        assert_eq!((e.members(), e.lastmod), (&[1, 0][..], 20));
        // Now wlc within the set picks the lighter member, real 1.
        assert_eq!(schedule(&mut e, 30, &rs), Some(1));
        assert_eq!(e.lastmod, 20);
    }

    #[test]
    fn a_stable_set_sheds_its_most_loaded_member_after_expiration() {
        let rs = reals(&[(1, 5), (1, 0), (1, 0)]);
        let mut e = LblcrEntry {
            len: 2,
            lastmod: 0,
            members: [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ..Default::default()
        };
        // Not yet: time_after(100, 0 + 100) is false.
        assert_eq!(schedule(&mut e, 100, &rs), Some(1));
        assert_eq!(e.members(), [1, 0]);
        // Past it: real 0 (5 active) goes, and lastmod moves.
        assert_eq!(schedule(&mut e, 101, &rs), Some(1));
        assert_eq!((e.members(), e.lastmod), (&[1][..], 101));
        // A single member is never shed.
        assert_eq!(schedule(&mut e, 1000, &rs), Some(1));
        assert_eq!(e.members(), [1]);
    }

    #[test]
    fn the_pick_is_made_before_shedding() {
        // Both members idle and equal: set_min picks the head (real 1), and
        // set_max also names the head (ties keep the first): the kernel
        // still returns real 1 for this connection, then it is gone.
        let rs = reals(&[(1, 0), (1, 0)]);
        let mut e = LblcrEntry {
            len: 2,
            members: [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ..Default::default()
        };
        assert_eq!(schedule(&mut e, 500, &rs), Some(1));
        assert_eq!(e.members(), [0]);
    }

    #[test]
    fn removed_or_quiesced_members_are_passed_over() {
        let mut rs = reals(&[(1, 0), (1, 0), (1, 0)]);
        let mut e = LblcrEntry {
            len: 2,
            lastmod: 0,
            members: [2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ..Default::default()
        };
        rs[2].weight = 0;
        assert_eq!(schedule(&mut e, 1, &rs), Some(0));
        // Real 0 removed from the service (its id no longer resolves): the
        // set has nothing usable, wlc picks real 1, which joins.
        let rest = [rs[1], rs[2]];
        assert_eq!(schedule(&mut e, 2, &rest), Some(1));
        assert_eq!(e.members(), [1, 2, 0]);
    }

    #[test]
    fn a_full_set_keeps_its_members_and_lastmod() {
        let mut e = LblcrEntry::default();
        for id in 0..LBLCR_SET_MAX as u32 {
            e.insert(id, 7);
        }
        e.insert(99, 8);
        assert_eq!(e.len as usize, LBLCR_SET_MAX);
        assert_eq!(e.members()[0], 15);
        assert_eq!(e.lastmod, 7);
        e.insert(3, 9); // already there
        assert_eq!(e.lastmod, 7);
        e.erase(15, 10);
        assert_eq!((e.members()[0], e.len, e.lastmod), (14, 15, 10));
        e.erase(0, 11);
        assert_eq!(*e.members().last().unwrap(), 1);
    }
}
