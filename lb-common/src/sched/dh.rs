//! dh, destination hashing: `net/netfilter/ipvs/ip_vs_dh.c`.
//!
//! A 256-bucket table maps the hash of a packet's destination address to a
//! real. The controller builds it ([`dh_build`]) when reals are added or
//! removed; the data plane looks it up ([`dh_schedule`]).

use super::Dest;
use super::hash::{addr_fold, hash_32};

/// `IP_VS_DH_TAB_BITS` (the default `CONFIG_IP_VS_DH_TAB_BITS`).
pub const DH_TAB_BITS: u32 = 8;
pub const DH_TAB_SIZE: usize = 1 << DH_TAB_BITS;

/// A table slot with no real: the kernel's NULL bucket, which only an empty
/// service has.
pub const NO_REAL: u32 = u32::MAX;

/// `ip_vs_dh_reassign()`: bucket `i` gets the real at scan index
/// `i % nreals`, weights ignored. IPVS rebuilds on add and delete only
/// (dh has no `upd_dest`): a weight change does not move buckets.
pub fn dh_build(nreals: u32, table: &mut [u32; DH_TAB_SIZE]) {
    for (i, bucket) in (0u32..).zip(table.iter_mut()) {
        *bucket = if nreals == 0 { NO_REAL } else { i % nreals };
    }
}

/// `ip_vs_dh_hashkey()`: `hash_32(ntohl(addr_fold), 8)`.
#[inline(always)]
#[must_use]
pub fn dh_hashkey(addr: &[u32; 4], family: u8) -> u32 {
    hash_32(addr_fold(addr, family), DH_TAB_BITS)
}

/// `ip_vs_dh_schedule()`: the real in the bucket of `daddr`, if it has
/// weight > 0 and no OVERLOAD; otherwise nothing (no fallback: dh exists to
/// pin a destination to one cache server).
///
/// `bucket(i)` reads table entry `i` (a scan index, or `NO_REAL`).
#[inline(always)]
pub fn dh_schedule(
    daddr: &[u32; 4],
    family: u8,
    mut bucket: impl FnMut(u32) -> Option<u32>,
    mut real: impl FnMut(u32) -> Option<Dest>,
) -> Option<u32> {
    let idx = bucket(dh_hashkey(daddr, family)).filter(|&r| r != NO_REAL)?;
    real(idx).filter(Dest::available).map(|_| idx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AF_INET, v4_addr};

    fn table(nreals: u32) -> [u32; DH_TAB_SIZE] {
        let mut t = [0; DH_TAB_SIZE];
        dh_build(nreals, &mut t);
        t
    }

    fn pick(t: &[u32; DH_TAB_SIZE], reals: &[Dest], daddr: [u8; 4]) -> Option<u32> {
        dh_schedule(
            &v4_addr(daddr),
            AF_INET,
            |b| t.get(b as usize).copied(),
            |i| reals.get(i as usize).copied(),
        )
    }

    #[test]
    fn buckets_cycle_through_the_list_ignoring_weights() {
        let t = table(3);
        assert_eq!(t[..7], [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(t[255], 0);
        assert!(table(0).iter().all(|&b| b == NO_REAL));
    }

    #[test]
    fn a_destination_stays_on_one_real() {
        let t = table(3);
        let reals = [Dest::new(0, 1), Dest::new(1, 1), Dest::new(2, 1)];
        // hash_32(10.0.0.1, 8) = 39 -> real 39 % 3 = 0.
        assert_eq!(dh_hashkey(&v4_addr([10, 0, 0, 1]), AF_INET), 39);
        for _ in 0..5 {
            assert_eq!(pick(&t, &reals, [10, 0, 0, 1]), Some(0));
        }
        // 192.168.0.1 hashes to 192 -> 192 % 3 = 0 too; another address
        // lands elsewhere.
        let spread: std::collections::BTreeSet<_> =
            (0..=255).filter_map(|x| pick(&t, &reals, [10, 0, 0, x])).collect();
        assert_eq!(spread.len(), 3);
    }

    #[test]
    fn an_unavailable_real_means_no_real() {
        let t = table(3);
        let mut reals = [Dest::new(0, 1), Dest::new(1, 1), Dest::new(2, 1)];
        reals[0].weight = 0;
        assert_eq!(pick(&t, &reals, [10, 0, 0, 1]), None);
        reals[0] = Dest::new(0, 1).overloaded();
        assert_eq!(pick(&t, &reals, [10, 0, 0, 1]), None);
        assert_eq!(pick(&table(0), &[], [10, 0, 0, 1]), None);
    }
}
