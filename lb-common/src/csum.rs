//! Internet checksum arithmetic (RFC 1071) and incremental updates (RFC 1624).
//!
//! Values are the raw 16/32-bit words as they sit in packet memory, read in
//! native byte order. One's-complement addition commutes with byte swapping,
//! so no conversion is needed and the result is stored back the same way.

/// Folds a 32-bit one's-complement sum to 16 bits.
#[inline(always)]
#[must_use]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The checksum after one 16-bit word of the covered data changed from `old`
/// to `new`: HC' = ~(~HC + ~m + m') (RFC 1624, eqn. 3).
#[inline(always)]
#[must_use]
pub const fn replace2(check: u16, old: u16, new: u16) -> u16 {
    !fold((!check) as u32 + (!old) as u32 + new as u32)
}

/// As [`replace2`] for a 32-bit word (an IPv4 address).
#[inline(always)]
#[must_use]
pub const fn replace4(check: u16, old: u32, new: u32) -> u16 {
    let old = !old;
    !fold((!check) as u32 + (old & 0xffff) + (old >> 16) + (new & 0xffff) + (new >> 16))
}

/// As [`replace4`] for a 16-byte address slot (IPv4 uses only word 0, the
/// rest are zero on both sides and cancel out).
#[inline(always)]
#[must_use]
pub const fn replace16(mut check: u16, old: &[u32; 4], new: &[u32; 4]) -> u16 {
    let mut i = 0;
    while i < 4 {
        check = replace4(check, old[i], new[i]);
        i += 1;
    }
    check
}

/// UDP over IPv4 uses 0 for "no checksum": leave such a field alone, and
/// never produce 0 from a real sum (RFC 768).
#[inline(always)]
#[must_use]
pub const fn udp_fixup(check: u16) -> u16 {
    if check == 0 { 0xffff } else { check }
}

/// The checksum of an IPv4 header given as its ten 16-bit words with the
/// checksum word zeroed.
#[inline(always)]
#[must_use]
pub const fn ipv4_header(words: &[u16; 10]) -> u16 {
    let mut sum = 0u32;
    let mut i = 0;
    while i < 10 {
        sum += words[i] as u32;
        i += 1;
    }
    !fold(sum)
}

/// A full one's-complement sum over bytes (big-endian pairs), for tests and
/// the controller: the reference that incremental updates are checked
/// against.
#[must_use]
pub fn sum_be(bytes: &[u8], initial: u32) -> u32 {
    let mut sum = initial;
    let mut chunks = bytes.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(bytes: &[u8]) -> u16 {
        !fold(sum_be(bytes, 0))
    }

    // An IPv4 header from RFC 1071's worked examples family: 45 00 00 73 ...
    const HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    fn words(b: &[u8; 20]) -> [u16; 10] {
        let mut w = [0u16; 10];
        for (i, x) in w.iter_mut().enumerate() {
            *x = u16::from_ne_bytes([b[2 * i], b[2 * i + 1]]);
        }
        w
    }

    #[test]
    fn ipv4_header_matches_known_value() {
        // 0xb861 is the well-known checksum of this header.
        let c = ipv4_header(&words(&HDR));
        assert_eq!(c.to_ne_bytes(), [0xb8, 0x61]);
        assert_eq!(full(&HDR), 0xb861);
    }

    #[test]
    fn replace4_matches_full_recomputation() {
        let mut h = HDR;
        let c = ipv4_header(&words(&h));
        h[10..12].copy_from_slice(&c.to_ne_bytes());
        for new in [[10u8, 0, 1, 11], [255, 255, 255, 255], [0, 0, 0, 0], [1, 2, 3, 4]] {
            let mut m = h;
            let old = u32::from_ne_bytes(m[16..20].try_into().unwrap());
            m[16..20].copy_from_slice(&new);
            let updated = replace4(u16::from_ne_bytes([m[10], m[11]]), old, u32::from_ne_bytes(new));
            m[10..12].copy_from_slice(&updated.to_ne_bytes());
            // A correct header sums to 0xffff, i.e. its full checksum is 0.
            assert_eq!(full(&m), 0, "after rewriting daddr to {new:?}");
            let mut z = m;
            z[10..12].fill(0);
            assert_eq!(updated, ipv4_header(&words(&z)));
        }
    }

    #[test]
    fn replace2_matches_full_recomputation_for_ttl_decrement() {
        let mut h = HDR;
        let c = ipv4_header(&words(&h));
        h[10..12].copy_from_slice(&c.to_ne_bytes());
        for _ in 0..64 {
            let old = u16::from_ne_bytes([h[8], h[9]]);
            h[8] -= 1;
            let new = u16::from_ne_bytes([h[8], h[9]]);
            let updated = replace2(u16::from_ne_bytes([h[10], h[11]]), old, new);
            h[10..12].copy_from_slice(&updated.to_ne_bytes());
            assert_eq!(full(&h), 0, "ttl {}", h[8]);
        }
    }

    #[test]
    fn replace16_equals_replace4_for_ipv4_slots() {
        let a = [0x0a00_010b_u32, 0, 0, 0];
        let b = [0x6400_0a64_u32, 0, 0, 0];
        assert_eq!(replace16(0x1234, &a, &b), replace4(0x1234, a[0], b[0]));
    }

    #[test]
    fn udp_zero_is_never_produced() {
        assert_eq!(udp_fixup(0), 0xffff);
        assert_eq!(udp_fixup(7), 7);
    }
}
