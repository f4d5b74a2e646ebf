//! The one place where addresses meet the maps and the screen: an
//! [`IpAddr`] to and from the maps' `(addr, family)` pair (both families in
//! 16 bytes, IPv4 in word 0), prefix masks of either family, and the
//! `ip:port` / `[ipv6]:port` spelling of listings, views, metrics and the
//! config.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use lb_common::{AF_INET, AF_INET6, v4_addr, v6_addr};

/// An address as the maps hold it: its words and its family.
#[must_use]
pub fn to_map(ip: IpAddr) -> ([u32; 4], u8) {
    match ip {
        IpAddr::V4(v4) => (v4_addr(v4.octets()), AF_INET),
        IpAddr::V6(v6) => (v6_addr(v6.octets()), AF_INET6),
    }
}

/// The address of a map entry; `None` for a family that is neither.
#[must_use]
pub fn from_map(words: [u32; 4], family: u8) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes()))),
        AF_INET6 => {
            let mut octets = [0u8; 16];
            for (chunk, word) in octets.chunks_exact_mut(4).zip(words) {
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

/// The family number (`AF_INET` / `AF_INET6`) of an address.
#[must_use]
pub const fn family(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

/// The family's name in messages.
#[must_use]
pub const fn family_name(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// Bits of an address of `ip`'s family: 32 or 128.
#[must_use]
pub const fn max_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The mask of a prefix length in `like`'s family (clamped to the family's
/// width): `255.255.255.0` for /24, `ffff:ffff:ffff:ffff::` for /64.
#[must_use]
pub fn prefix_mask(like: IpAddr, prefix_len: u8) -> IpAddr {
    match like {
        IpAddr::V4(_) => {
            IpAddr::V4(Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix_len.min(32))).unwrap_or(0)))
        }
        IpAddr::V6(_) => {
            IpAddr::V6(Ipv6Addr::from(u128::MAX.checked_shl(128 - u32::from(prefix_len.min(128))).unwrap_or(0)))
        }
    }
}

/// The prefix length of a contiguous mask; `None` when it has holes.
#[must_use]
pub fn mask_prefix(mask: IpAddr) -> Option<u8> {
    let (ones, zeros, bits) = match mask {
        IpAddr::V4(m) => (u32::from(m).leading_ones(), u32::from(m).trailing_zeros(), 32),
        IpAddr::V6(m) => (u128::from(m).leading_ones(), u128::from(m).trailing_zeros(), 128),
    };
    (ones + zeros == bits).then(|| u8::try_from(ones).unwrap_or(u8::MAX))
}

/// `ip` with every bit past `prefix_len` cleared.
#[must_use]
pub fn network(ip: IpAddr, prefix_len: u8) -> IpAddr {
    match (ip, prefix_mask(ip, prefix_len)) {
        (IpAddr::V4(a), IpAddr::V4(m)) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & u32::from(m))),
        (IpAddr::V6(a), IpAddr::V6(m)) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & u128::from(m))),
        _ => unreachable!("prefix_mask keeps the family"),
    }
}

/// `ip:port` as ipvsadm writes it: `10.0.0.1:80`, `[2001:db8::1]:80`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint(pub IpAddr, pub u16);

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Padding (`{:<28}`) applies to the whole `[addr]:port`.
        f.pad(&SocketAddr::new(self.0, self.1).to_string())
    }
}

/// An address as a host, bracketed when IPv6: `10.0.0.1`, `[2001:db8::1]`
/// (how a network is written before `/len:port`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Host(pub IpAddr);

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => f.pad(&a.to_string()),
            IpAddr::V6(a) => f.pad(&format!("[{a}]")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_words_round_trip_in_both_families() {
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        let (words, fam) = to_map(v4);
        assert_eq!((words, fam), (v4_addr([10, 1, 2, 3]), AF_INET));
        assert_eq!(words[1..], [0, 0, 0]);
        assert_eq!(from_map(words, fam), Some(v4));

        let v6: IpAddr = "2001:db8::1:11".parse().unwrap();
        let (words, fam) = to_map(v6);
        assert_eq!(fam, AF_INET6);
        // Wire order, four bytes to a word.
        assert_eq!(words[0].to_ne_bytes(), [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(words[3].to_ne_bytes(), [0, 0x01, 0, 0x11]);
        assert_eq!(from_map(words, fam), Some(v6));
        assert_eq!(from_map(words, 7), None);
    }

    #[test]
    fn masks_and_networks() {
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        let v6: IpAddr = "2001:db8:1:2::3".parse().unwrap();
        assert_eq!(prefix_mask(v4, 24).to_string(), "255.255.255.0");
        assert_eq!(prefix_mask(v4, 0).to_string(), "0.0.0.0");
        assert_eq!(prefix_mask(v6, 64).to_string(), "ffff:ffff:ffff:ffff::");
        assert_eq!(prefix_mask(v6, 128).to_string(), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
        assert_eq!(prefix_mask(v6, 0).to_string(), "::");
        assert_eq!(network(v6, 48).to_string(), "2001:db8:1::");
        assert_eq!(network(v4, 16).to_string(), "10.1.0.0");
        assert_eq!(mask_prefix(prefix_mask(v6, 64)), Some(64));
        assert_eq!(mask_prefix(prefix_mask(v6, 128)), Some(128));
        assert_eq!(mask_prefix(prefix_mask(v4, 0)), Some(0));
        assert_eq!(mask_prefix("255.0.255.0".parse().unwrap()), None);
    }

    #[test]
    fn endpoints_are_bracketed_for_ipv6_and_padded_whole() {
        let v6: IpAddr = "2001:db8::100".parse().unwrap();
        assert_eq!(Endpoint(v6, 80).to_string(), "[2001:db8::100]:80");
        assert_eq!(Endpoint("10.0.0.1".parse().unwrap(), 80).to_string(), "10.0.0.1:80");
        assert_eq!(format!("{:<22}|", Endpoint(v6, 80)), "[2001:db8::100]:80    |");
        assert_eq!(Host(v6).to_string(), "[2001:db8::100]");
    }
}
