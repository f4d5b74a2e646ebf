//! sh, source hashing: `net/netfilter/ipvs/ip_vs_sh.c`.
//!
//! A 256-bucket table in which each real holds `weight` consecutive buckets
//! per round. The controller builds it ([`sh_build`]) whenever a real is
//! added, removed or edited; the data plane hashes the client's address
//! (and port, with sh-port) to a bucket ([`sh_schedule`]).

use super::Dest;
use super::dh::NO_REAL;
use super::hash::{addr_fold, hash_32};
use super::scheduler::{SVC_F_SH_FALLBACK, SVC_F_SH_PORT};
use crate::MAX_REALS_PER_SERVICE;

/// `IP_VS_SH_TAB_BITS` (the default `CONFIG_IP_VS_SH_TAB_BITS`).
pub const SH_TAB_BITS: u32 = 8;
pub const SH_TAB_SIZE: usize = 1 << SH_TAB_BITS;
const SH_TAB_MASK: u32 = (1 << SH_TAB_BITS) - 1;

/// `ip_vs_sh_reassign()`: walk the list (scan order) round and round, giving
/// each real `weight` consecutive buckets before moving on. A weight-0 real
/// still takes one bucket (`++d_count >= weight` holds at once), so that
/// quiescing a real does not move anybody else's clients; lookups then see
/// it unavailable. An empty list leaves every bucket `NO_REAL`.
pub fn sh_build(weights: &[u32], table: &mut [u32; SH_TAB_SIZE]) {
    let n = weights.len().min(MAX_REALS_PER_SERVICE);
    let mut p = 0;
    let mut count = 0;
    for bucket in table.iter_mut() {
        if n == 0 {
            *bucket = NO_REAL;
            continue;
        }
        #[expect(clippy::cast_possible_truncation, reason = "p < MAX_REALS_PER_SERVICE")]
        let idx = p as u32;
        *bucket = idx;
        count += 1;
        if count >= weights[p] {
            p = (p + 1) % n;
            count = 0;
        }
    }
}

/// `ip_vs_sh_hashkey()`: `(offset + hash_32(ntohs(port) + ntohl(addr_fold),
/// 8)) & 255`. `port` is in network order (0 unless sh-port).
#[inline(always)]
#[must_use]
pub fn sh_hashkey(addr: &[u32; 4], family: u8, port: u16, offset: u32) -> u32 {
    let key = u32::from(u16::from_be(port)).wrapping_add(addr_fold(addr, family));
    offset.wrapping_add(hash_32(key, SH_TAB_BITS)) & SH_TAB_MASK
}

/// `ip_vs_sh_schedule()`: the real in the client's bucket, if it has weight
/// > 0 and no OVERLOAD.
///
/// - `saddr`, `sport`: the client's address and source port (network
///   order). The port only counts with `SVC_F_SH_PORT` in `svc_flags`; pass
///   0 for protocols without ports, as `ip_vs_sh_get_port()` does.
/// - With `SVC_F_SH_FALLBACK`, an unavailable real sends the lookup round
///   the table (`ip_vs_sh_get_fallback()`) to the first available one. As in
///   the kernel, probe `offset` reads bucket `(hash + (offset + hash) % 256)
///   % 256`, so probing starts at twice the hash, not next to it; that is
///   kept on purpose, since it decides where displaced clients go.
/// - `bucket(i)` reads table entry `i`. A bucket naming a real that
///   `real()` cannot read counts as unavailable.
#[inline(always)]
pub fn sh_schedule(
    saddr: &[u32; 4],
    family: u8,
    sport: u16,
    svc_flags: u8,
    mut bucket: impl FnMut(u32) -> Option<u32>,
    mut real: impl FnMut(u32) -> Option<Dest>,
) -> Option<u32> {
    let port = if svc_flags & SVC_F_SH_PORT != 0 { sport } else { 0 };
    let ihash = sh_hashkey(saddr, family, port, 0);
    // The kernel's NULL bucket (empty service) ends the lookup either way.
    let idx = bucket(ihash).filter(|&r| r != NO_REAL)?;
    let mut usable = |idx: u32| real(idx).is_some_and(|d| d.available());
    if usable(idx) {
        return Some(idx);
    }
    if svc_flags & SVC_F_SH_FALLBACK == 0 {
        return None;
    }
    for offset in 0..SH_TAB_SIZE as u32 {
        let roffset = (offset + ihash) % SH_TAB_SIZE as u32;
        let idx = bucket(sh_hashkey(saddr, family, port, roffset)).filter(|&r| r != NO_REAL)?;
        if usable(idx) {
            return Some(idx);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AF_INET, v4_addr};
    use std::vec::Vec;

    fn table(weights: &[u32]) -> [u32; SH_TAB_SIZE] {
        let mut t = [0; SH_TAB_SIZE];
        sh_build(weights, &mut t);
        t
    }

    fn pick(
        t: &[u32; SH_TAB_SIZE],
        reals: &[Dest],
        client: [u8; 4],
        port: u16,
        flags: u8,
    ) -> Option<u32> {
        sh_schedule(
            &v4_addr(client),
            AF_INET,
            port.to_be(),
            flags,
            |b| t.get(b as usize).copied(),
            |i| reals.get(i as usize).copied(),
        )
    }

    #[test]
    fn each_real_takes_weight_consecutive_buckets() {
        let t = table(&[2, 1, 0]);
        assert_eq!(t[..10], [0, 0, 1, 2, 0, 0, 1, 2, 0, 0]);
        let counts: Vec<usize> = (0..3).map(|r| t.iter().filter(|&&b| b == r).count()).collect();
        assert_eq!(counts, [128, 64, 64]);
        // A weight above the table size takes everything.
        assert!(table(&[300, 1]).iter().all(|&b| b == 0));
        assert!(table(&[]).iter().all(|&b| b == NO_REAL));
    }

    #[test]
    fn hash_uses_port_only_when_asked() {
        let a = v4_addr([10, 0, 0, 1]);
        assert_eq!(sh_hashkey(&a, AF_INET, 0, 0), 39);
        // hash_32(0x0a000001 + 80, 8) = 182.
        assert_eq!(sh_hashkey(&a, AF_INET, 80u16.to_be(), 0), 182);
        assert_eq!(sh_hashkey(&a, AF_INET, 0, 250), (250 + 39) & 255);
    }

    #[test]
    fn a_client_stays_on_its_real_until_that_real_goes() {
        let reals = [Dest::new(0, 1), Dest::new(1, 1), Dest::new(2, 1), Dest::new(3, 1)];
        let t = table(&[1, 1, 1, 1]);
        let client = [10, 0, 0, 1];
        // Bucket 39 -> real 39 % 4 = 3, for every connection.
        for _ in 0..5 {
            assert_eq!(pick(&t, &reals, client, 1234, 0), Some(3));
        }
        // Load on the reals does not matter.
        let mut busy = reals;
        busy[3] = busy[3].with_conns(1000, 1000);
        assert_eq!(pick(&t, &busy, client, 1234, 0), Some(3));
        // Quiescing another real changes nothing for this client.
        let mut quiet = reals;
        quiet[0].weight = 0;
        assert_eq!(pick(&t, &quiet, client, 1234, 0), Some(3));
        // Its own real quiesced or overloaded: no real, without fallback.
        quiet[3].weight = 0;
        assert_eq!(pick(&t, &quiet, client, 1234, 0), None);
        // Removed: the table is rebuilt over three reals and it moves.
        let t3 = table(&[1, 1, 1]);
        assert_eq!(pick(&t3, &reals[..3], client, 1234, 0), Some(0)); // 39 % 3
    }

    #[test]
    fn fallback_probes_from_twice_the_hash() {
        let mut reals = [Dest::new(0, 1), Dest::new(1, 1), Dest::new(2, 1), Dest::new(3, 1)];
        let t = table(&[1, 1, 1, 1]);
        reals[3].overloaded = true;
        // Bucket 39 holds real 3; probes read buckets 78, 79, ...: 78 % 4 = 2.
        assert_eq!(pick(&t, &reals, [10, 0, 0, 1], 0, SVC_F_SH_FALLBACK), Some(2));
        reals[2].weight = 0;
        assert_eq!(pick(&t, &reals, [10, 0, 0, 1], 0, SVC_F_SH_FALLBACK), Some(0)); // bucket 80
        // Everybody out: the probes run out.
        let none = [Dest::new(0, 0); 4];
        assert_eq!(pick(&t, &none, [10, 0, 0, 1], 0, SVC_F_SH_FALLBACK), None);
        // An empty service ends the lookup at once.
        assert_eq!(pick(&table(&[]), &[], [10, 0, 0, 1], 0, SVC_F_SH_FALLBACK), None);
    }

    #[test]
    fn sh_port_spreads_one_client_over_reals() {
        let reals = [Dest::new(0, 1), Dest::new(1, 1), Dest::new(2, 1)];
        let t = table(&[1, 1, 1]);
        let without: std::collections::BTreeSet<_> =
            (1000..1100).filter_map(|p| pick(&t, &reals, [10, 0, 0, 1], p, 0)).collect();
        assert_eq!(without.len(), 1);
        let with: std::collections::BTreeSet<_> = (1000..1100)
            .filter_map(|p| pick(&t, &reals, [10, 0, 0, 1], p, SVC_F_SH_PORT))
            .collect();
        assert_eq!(with.len(), 3);
    }
}
