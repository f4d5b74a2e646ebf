//! The hashes the table schedulers use, bit for bit as the kernel computes
//! them: `hash_32()` (`include/linux/hash.h`) for dh and sh, and `hsiphash()`
//! (`lib/siphash.c`) with mh's fixed keys, plus the address folding all three
//! share.

use crate::AF_INET6;

/// `GOLDEN_RATIO_32` (`include/linux/hash.h`).
pub const GOLDEN_RATIO_32: u32 = 0x61C8_8647;

/// `hash_32(val, bits)`: multiply by the golden ratio, keep the top `bits`.
/// `bits` must be 1..=32.
#[inline(always)]
#[must_use]
pub const fn hash_32(val: u32, bits: u32) -> u32 {
    val.wrapping_mul(GOLDEN_RATIO_32) >> (32 - bits)
}

/// The `addr_fold` of `ip_vs_dh_hashkey()`, `ip_vs_sh_hashkey()` and
/// `ip_vs_mh_hashkey()`, already through `ntohl()`: the IPv4 address, or the
/// XOR of an IPv6 address's four words, in host order.
///
/// `addr` is as the maps hold it (network order in memory, IPv4 in
/// `addr[0]`). XOR commutes with byte swapping, so folding before `ntohl()`
/// as the kernel does gives the same value as folding after.
#[inline(always)]
#[must_use]
pub fn addr_fold(addr: &[u32; 4], family: u8) -> u32 {
    let folded = if family == AF_INET6 { addr[0] ^ addr[1] ^ addr[2] ^ addr[3] } else { addr[0] };
    u32::from_be(folded)
}

/// mh's two keys (`generate_hash_secret()` in `ip_vs_mh.c`). The kernel uses
/// these constants, not a per-boot secret, so the tables here match it.
pub const MH_HASH1: [u64; 2] = [2_654_435_761, 2_654_435_761];
pub const MH_HASH2: [u64; 2] = [2_654_446_892, 2_654_446_892];

/// `hsiphash(&v, sizeof(v), key)` as a 64-bit kernel computes it: there
/// `hsiphash` is `SipHash-1-3` (not `HalfSipHash`, which only 32-bit kernels
/// run) over the 4 bytes of `v` in little-endian order (x86, arm64),
/// truncated to 32 bits.
#[inline(always)]
#[must_use]
pub fn hsiphash_u32(v: u32, key: &[u64; 2]) -> u32 {
    // A 4-byte message is a single final block: its length in the top byte
    // and the bytes themselves at the bottom (`HPREAMBLE`, `case 4:`).
    let b = (4u64 << 56) | u64::from(v);
    let mut s = SipState::new(key);
    s.v[3] ^= b;
    s.round();
    s.v[0] ^= b;
    // `HPOSTAMBLE`: finalisation with three rounds.
    s.v[2] ^= 0xff;
    s.round();
    s.round();
    s.round();
    #[expect(clippy::cast_possible_truncation, reason = "hsiphash returns the low 32 bits")]
    let out = (s.v[0] ^ s.v[1] ^ s.v[2] ^ s.v[3]) as u32;
    out
}

/// `SipHash`'s four lanes, keyed (`PREAMBLE` in `lib/siphash.c`).
struct SipState {
    v: [u64; 4],
}

impl SipState {
    #[inline(always)]
    const fn new(key: &[u64; 2]) -> Self {
        Self {
            v: [
                0x736f_6d65_7073_6575 ^ key[0],
                0x646f_7261_6e64_6f6d ^ key[1],
                0x6c79_6765_6e65_7261 ^ key[0],
                0x7465_6462_7974_6573 ^ key[1],
            ],
        }
    }

    /// `SIPROUND` (`SIPHASH_PERMUTATION`).
    #[inline(always)]
    fn round(&mut self) {
        let [mut v0, mut v1, mut v2, mut v3] = self.v;
        v0 = v0.wrapping_add(v1);
        v1 = v1.rotate_left(13) ^ v0;
        v0 = v0.rotate_left(32);
        v2 = v2.wrapping_add(v3);
        v3 = v3.rotate_left(16) ^ v2;
        v0 = v0.wrapping_add(v3);
        v3 = v3.rotate_left(21) ^ v0;
        v2 = v2.wrapping_add(v1);
        v1 = v1.rotate_left(17) ^ v2;
        v2 = v2.rotate_left(32);
        self.v = [v0, v1, v2, v3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AF_INET, v4_addr};

    /// SipHash-c-d over any message, built from the same lanes and round as
    /// `hsiphash_u32`, so that reference vectors can check those.
    fn siphash(key: &[u64; 2], msg: &[u8], c: usize, d: usize) -> u64 {
        let mut s = SipState::new(key);
        let mut blocks = msg.chunks_exact(8);
        for block in &mut blocks {
            let m = u64::from_le_bytes(block.try_into().unwrap());
            s.v[3] ^= m;
            (0..c).for_each(|_| s.round());
            s.v[0] ^= m;
        }
        let mut tail = [0u8; 8];
        tail[..blocks.remainder().len()].copy_from_slice(blocks.remainder());
        let b = ((msg.len() as u64) << 56) | u64::from_le_bytes(tail);
        s.v[3] ^= b;
        (0..c).for_each(|_| s.round());
        s.v[0] ^= b;
        s.v[2] ^= 0xff;
        (0..d).for_each(|_| s.round());
        s.v[0] ^ s.v[1] ^ s.v[2] ^ s.v[3]
    }

    #[test]
    fn sip_rounds_match_std_siphash_2_4() {
        // std's (deprecated but stable) SipHasher is SipHash-2-4 over the raw
        // bytes written: an independent check of the lanes, keying, round
        // and finalisation.
        #[expect(deprecated, reason = "the only SipHash in std, used as a reference")]
        fn reference(k0: u64, k1: u64, msg: &[u8]) -> u64 {
            use core::hash::Hasher;
            let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
            h.write(msg);
            h.finish()
        }
        let key = [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908];
        // The first vector of the SipHash paper's reference table.
        assert_eq!(siphash(&key, &[], 2, 4), 0x726f_db47_dd0e_0e31);
        for len in 0..20u8 {
            let msg: std::vec::Vec<u8> = (0..len).collect();
            assert_eq!(siphash(&key, &msg, 2, 4), reference(key[0], key[1], &msg), "len {len}");
        }
    }

    #[test]
    fn hsiphash_is_siphash_1_3_truncated() {
        // CPython's hash() of bytes is SipHash-1-3, with a zero key under
        // PYTHONHASHSEED=0: `hash(b'\x01\x02\x03\x04')` = -1751442419216569900.
        let python = (-1_751_442_419_216_569_900_i64).cast_unsigned();
        assert_eq!(siphash(&[0, 0], &[1, 2, 3, 4], 1, 3), python);
        assert_eq!(hsiphash_u32(0x0403_0201, &[0, 0]), python as u32);
        for v in [0u32, 1, 80, 0x0a00_0001, u32::MAX] {
            let full = siphash(&MH_HASH1, &v.to_le_bytes(), 1, 3);
            assert_eq!(hsiphash_u32(v, &MH_HASH1), full as u32);
        }
    }

    #[test]
    fn hash_32_matches_hand_computed_values() {
        // (0x0a000001 * 0x61C88647) mod 2^32 = 0x27C8_8647 -> top byte 0x27.
        assert_eq!(hash_32(0x0a00_0001, 8), 39);
        assert_eq!(hash_32(0xc0a8_0001, 8), 192);
        assert_eq!(hash_32(0, 8), 0);
    }

    #[test]
    fn addr_fold_is_host_order_and_folds_ipv6() {
        assert_eq!(addr_fold(&v4_addr([10, 0, 0, 1]), AF_INET), 0x0a00_0001);
        let v6 =
            [u32::from_ne_bytes([0x20, 0x01, 0x0d, 0xb8]), 0, 0, u32::from_ne_bytes([0, 0, 0, 1])];
        assert_eq!(addr_fold(&v6, AF_INET6), 0x2001_0db8 ^ 1);
    }
}
