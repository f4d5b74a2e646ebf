//! The connection sync message: what the master tells the backup about its
//! connections, in a versioned, fixed-layout format (network byte order).
//!
//! ```text
//! header (8 bytes)   magic "XS" | version 2 | count | sync id | 0 | total size (u16)
//! entry              protocol | TCP state | flags | family (2 = IPv4, 10 = IPv6)
//!                    client address | virtual address | real address
//!                      (4 bytes each for IPv4, 16 for IPv6)
//!                    client port | virtual port | real port | 0 (u16)
//!                    seconds until it expires (u32)
//!                    client-side next hop MAC (6) | 0 (2)
//! ```
//!
//! An IPv4 entry takes 36 bytes, an IPv6 one 72; the family byte says which,
//! and the total size is the header's plus every entry's. Version 1 had
//! IPv4 entries only.
//!
//! As IPVS's sync protocol, it names the service and real by address, not
//! by id (ids are each director's own), and carries the time left rather
//! than a clock. A message that does not parse is dropped whole.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// "XS": xlvs sync.
pub const MAGIC: [u8; 2] = *b"XS";
pub const VERSION: u8 = 2;
pub const HEADER_LEN: usize = 8;
/// An entry's bytes besides its three addresses.
const ENTRY_FIXED_LEN: usize = 24;
pub const ENTRY_LEN_V4: usize = ENTRY_FIXED_LEN + 3 * 4;
pub const ENTRY_LEN_V6: usize = ENTRY_FIXED_LEN + 3 * 16;
/// The largest message [`encode`] makes: one UDP datagram over IPv4 in a
/// 1500-byte MTU (20 bytes of IP header, 8 of UDP), whatever the families.
pub const MAX_MESSAGE_LEN: usize = 1500 - 20 - 8;

/// `flags`: the director sees only the client's side (DR, TUN).
pub const F_NOOUTPUT: u8 = 1;
/// `flags`: counted as inactive.
pub const F_INACTIVE: u8 = 2;
/// `flags`: made under a persistence template (IPVS's templated
/// connections): a new SYN on it does not reschedule it.
pub const F_TEMPLATED: u8 = 4;

/// The family bytes: Linux's `AF_INET` and `AF_INET6`, as the maps keep them.
const AF_INET: u8 = lb_common::AF_INET;
const AF_INET6: u8 = lb_common::AF_INET6;

/// A connection's client, virtual and real endpoints, all of one family
/// (a real is of its service's family), so that an entry cannot mix them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoints {
    V4 { client: SocketAddrV4, virtual_addr: SocketAddrV4, real: SocketAddrV4 },
    V6 { client: SocketAddrV6, virtual_addr: SocketAddrV6, real: SocketAddrV6 },
}

impl Endpoints {
    /// The three endpoints, or `None` when they are not of one family. IPv6
    /// flow labels and scopes are not carried, so they are left out here.
    #[must_use]
    pub fn new(client: SocketAddr, virtual_addr: SocketAddr, real: SocketAddr) -> Option<Self> {
        let v6 = |a: &SocketAddrV6| SocketAddrV6::new(*a.ip(), a.port(), 0, 0);
        match (client, virtual_addr, real) {
            (SocketAddr::V4(client), SocketAddr::V4(virtual_addr), SocketAddr::V4(real)) => {
                Some(Self::V4 { client, virtual_addr, real })
            }
            (SocketAddr::V6(c), SocketAddr::V6(v), SocketAddr::V6(r)) => {
                Some(Self::V6 { client: v6(&c), virtual_addr: v6(&v), real: v6(&r) })
            }
            _ => None,
        }
    }

    #[must_use]
    pub fn client(&self) -> SocketAddr {
        self.all()[0]
    }

    #[must_use]
    pub fn virtual_addr(&self) -> SocketAddr {
        self.all()[1]
    }

    #[must_use]
    pub fn real(&self) -> SocketAddr {
        self.all()[2]
    }

    /// Client, virtual, real: the order of the wire.
    fn all(&self) -> [SocketAddr; 3] {
        match *self {
            Self::V4 { client, virtual_addr, real } => [client.into(), virtual_addr.into(), real.into()],
            Self::V6 { client, virtual_addr, real } => [client.into(), virtual_addr.into(), real.into()],
        }
    }

    const fn family(&self) -> u8 {
        match self {
            Self::V4 { .. } => AF_INET,
            Self::V6 { .. } => AF_INET6,
        }
    }
}

/// One synced connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub protocol: u8,
    pub state: u8,
    pub flags: u8,
    pub endpoints: Endpoints,
    /// Seconds until the connection expires on the master.
    pub timeout: u32,
    /// The client-side next hop's MAC, for NAT replies.
    pub peer_mac: [u8; 6],
}

impl Entry {
    /// Its length on the wire.
    #[must_use]
    pub const fn wire_len(&self) -> usize {
        match self.endpoints {
            Endpoints::V4 { .. } => ENTRY_LEN_V4,
            Endpoints::V6 { .. } => ENTRY_LEN_V6,
        }
    }
}

/// The bytes of one address of a family.
const fn addr_len(family: u8) -> Option<usize> {
    match family {
        AF_INET => Some(4),
        AF_INET6 => Some(16),
        _ => None,
    }
}

/// Why a message was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("shorter than a header")]
    Truncated,
    #[error("not an xlvs sync message")]
    Magic,
    #[error("version {0}, this build speaks {VERSION}")]
    Version(u8),
    #[error("its size field says {said} bytes, it has {has}")]
    Size { said: usize, has: usize },
    #[error("entry {0} is of no known family (IPv4 or IPv6)")]
    Family(usize),
    #[error("entry {0} runs past the end of the message")]
    EntryTruncated(usize),
    #[error("its {count} entries take {used} bytes of the {has} after the header")]
    Trailing { count: usize, used: usize, has: usize },
}

/// Encodes entries into as many messages as they need, in order, each at
/// most [`MAX_MESSAGE_LEN`] bytes; no entries make no message.
#[must_use]
pub fn encode(sync_id: u8, entries: &[Entry]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let mut rest = entries;
    while !rest.is_empty() {
        // At least one entry, which always fits; the size stays within
        // MAX_MESSAGE_LEN, and so the count (at most 40 IPv4 entries) in a
        // byte and the size in a u16.
        let mut size = HEADER_LEN;
        let take = rest
            .iter()
            .take_while(|e| {
                size += e.wire_len();
                size <= MAX_MESSAGE_LEN
            })
            .count();
        let (chunk, more) = rest.split_at(take);
        messages.push(encode_one(sync_id, chunk));
        rest = more;
    }
    messages
}

fn encode_one(sync_id: u8, entries: &[Entry]) -> Vec<u8> {
    let size = HEADER_LEN + entries.iter().map(Entry::wire_len).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, entries.len() as u8, sync_id, 0]);
    out.extend_from_slice(&(size as u16).to_be_bytes());
    for e in entries {
        out.extend_from_slice(&[e.protocol, e.state, e.flags, e.endpoints.family()]);
        let all = e.endpoints.all();
        for a in all {
            match a.ip() {
                IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
                IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
            }
        }
        for a in all {
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&e.timeout.to_be_bytes());
        out.extend_from_slice(&e.peer_mac);
        out.extend_from_slice(&[0, 0]);
    }
    debug_assert_eq!(out.len(), size);
    out
}

/// Decodes a message: its sync id and entries.
///
/// # Errors
/// A [`DecodeError`] for anything but a well-formed message of this version.
pub fn decode(bytes: &[u8]) -> Result<(u8, Vec<Entry>), DecodeError> {
    let header = bytes.get(..HEADER_LEN).ok_or(DecodeError::Truncated)?;
    if header[..2] != MAGIC {
        return Err(DecodeError::Magic);
    }
    if header[2] != VERSION {
        return Err(DecodeError::Version(header[2]));
    }
    let (count, sync_id) = (usize::from(header[3]), header[4]);
    let said = usize::from(u16::from_be_bytes([header[6], header[7]]));
    if said != bytes.len() {
        return Err(DecodeError::Size { said, has: bytes.len() });
    }
    let body = &bytes[HEADER_LEN..];
    let mut at = 0;
    let mut entries = Vec::with_capacity(count);
    for i in 0..count {
        let rest = &body[at..];
        let family = *rest.get(3).ok_or(DecodeError::EntryTruncated(i))?;
        let len = addr_len(family).ok_or(DecodeError::Family(i))?;
        let e = rest.get(..ENTRY_FIXED_LEN + 3 * len).ok_or(DecodeError::EntryTruncated(i))?;
        entries.push(decode_entry(e, len));
        at += e.len();
    }
    if at != body.len() {
        return Err(DecodeError::Trailing { count, used: at, has: body.len() });
    }
    Ok((sync_id, entries))
}

/// One entry, `e` being exactly as long as its addresses of `len` bytes
/// (`addr_len`: 4 or 16) make it.
fn decode_entry(e: &[u8], len: usize) -> Entry {
    let ports = 4 + 3 * len;
    let port = |n: usize| u16::from_be_bytes([e[ports + 2 * n], e[ports + 2 * n + 1]]);
    let octets = |n: usize| &e[4 + n * len..4 + (n + 1) * len];
    let endpoints = if len == 16 {
        let addr = |n: usize| {
            let mut ip = [0; 16];
            ip.copy_from_slice(octets(n));
            SocketAddrV6::new(Ipv6Addr::from(ip), port(n), 0, 0)
        };
        Endpoints::V6 { client: addr(0), virtual_addr: addr(1), real: addr(2) }
    } else {
        let addr = |n: usize| {
            let mut ip = [0; 4];
            ip.copy_from_slice(octets(n));
            SocketAddrV4::new(Ipv4Addr::from(ip), port(n))
        };
        Endpoints::V4 { client: addr(0), virtual_addr: addr(1), real: addr(2) }
    };
    let timeout_at = ports + 8;
    let mut peer_mac = [0; 6];
    peer_mac.copy_from_slice(&e[timeout_at + 4..timeout_at + 10]);
    Entry {
        protocol: e[0],
        state: e[1],
        flags: e[2],
        endpoints,
        timeout: u32::from_be_bytes([e[timeout_at], e[timeout_at + 1], e[timeout_at + 2], e[timeout_at + 3]]),
        peer_mac,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> Entry {
        let v4 = |a: [u8; 4], port| SocketAddr::from((a, port));
        Entry {
            protocol: 6,
            state: 1,
            flags: F_NOOUTPUT,
            endpoints: Endpoints::new(
                v4([10, 1, 0, n], 40000 + u16::from(n)),
                v4([10, 100, 0, 100], 80),
                v4([10, 0, 1, 11], 8080),
            )
            .unwrap(),
            timeout: 899,
            peer_mac: [2, 0, 0, 0, 0, n],
        }
    }

    fn entry6(n: u8) -> Entry {
        let v6 = |s: &str, port| SocketAddr::new(s.parse().unwrap(), port);
        Entry {
            protocol: 17,
            state: 0,
            flags: F_INACTIVE,
            endpoints: Endpoints::new(
                v6(&format!("2001:db8:1::{n:x}"), 50000 + u16::from(n)),
                v6("2001:db8::100", 53),
                v6("2001:db8:2::11", 5353),
            )
            .unwrap(),
            timeout: 0x0102_0304,
            peer_mac: [2, 0, 0, 0, 1, n],
        }
    }

    #[test]
    fn golden_bytes() {
        let bytes = encode(7, &[entry(2)]);
        #[rustfmt::skip]
        let want = [
            b'X', b'S', 2, 1, 7, 0, 0, 44,
            6, 1, 1, 2,
            10, 1, 0, 2, 10, 100, 0, 100, 10, 0, 1, 11,
            0x9c, 0x42, 0, 80, 0x1f, 0x90, 0, 0,
            0, 0, 3, 0x83,
            2, 0, 0, 0, 0, 2, 0, 0,
        ];
        assert_eq!(bytes, [want]);
        assert_eq!(decode(&bytes[0]), Ok((7, vec![entry(2)])));
    }

    #[test]
    fn golden_bytes_of_an_ipv6_entry_among_ipv4_ones() {
        let mixed = [entry(1), entry6(0x2a), entry(3)];
        let bytes = encode(9, &mixed);
        assert_eq!(bytes.len(), 1);
        let bytes = &bytes[0];
        assert_eq!(bytes.len(), HEADER_LEN + 2 * ENTRY_LEN_V4 + ENTRY_LEN_V6);
        assert_eq!(bytes[..HEADER_LEN], [b'X', b'S', 2, 3, 9, 0, 0, 152]);
        #[rustfmt::skip]
        let want: [u8; ENTRY_LEN_V6] = [
            17, 0, 2, 10,
            0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x2a,
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
            0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11,
            0xc3, 0x7a, 0, 53, 0x14, 0xe9, 0, 0,
            1, 2, 3, 4,
            2, 0, 0, 0, 1, 0x2a, 0, 0,
        ];
        let at = HEADER_LEN + ENTRY_LEN_V4;
        assert_eq!(bytes[at..at + ENTRY_LEN_V6], want);
        assert_eq!(decode(bytes), Ok((9, mixed.to_vec())));
    }

    #[test]
    fn round_trip_and_chunking_in_both_families() {
        for make in [entry as fn(u8) -> Entry, entry6] {
            let many: Vec<Entry> = (0..100).map(make).collect();
            let messages = encode(1, &many);
            assert!(messages.len() > 1, "100 entries take more than one datagram");
            let mut got = Vec::new();
            for m in &messages {
                assert!(m.len() <= MAX_MESSAGE_LEN, "fits one datagram of a 1500-byte MTU: {}", m.len());
                got.extend(decode(m).unwrap().1);
            }
            assert_eq!(got, many);
        }
        // As many as fit: 40 IPv4 entries, 20 IPv6 ones.
        assert_eq!(decode(&encode(1, &(0..41).map(entry).collect::<Vec<_>>())[0]).unwrap().1.len(), 40);
        assert_eq!(decode(&encode(1, &(0..21).map(entry6).collect::<Vec<_>>())[0]).unwrap().1.len(), 20);
        assert!(encode(0, &[]).is_empty());
        assert_eq!(decode(&[b'X', b'S', 2, 0, 0, 0, 0, 8]), Ok((0, vec![])));
    }

    #[test]
    fn endpoints_are_of_one_family() {
        let v4: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1%3]:80".parse().unwrap();
        assert_eq!(Endpoints::new(v4, v4, v6), None);
        assert_eq!(Endpoints::new(v6, v4, v4), None);
        let e = Endpoints::new(v6, v6, v6).unwrap();
        assert_eq!(e.real(), "[2001:db8::1]:80".parse::<SocketAddr>().unwrap(), "no scope carried");
    }

    #[test]
    fn anything_malformed_is_refused() {
        let good = encode(1, &[entry(1), entry6(2)]).remove(0);
        assert_eq!(decode(&good[..5]), Err(DecodeError::Truncated));
        let mut bad = good.clone();
        bad[0] = b'Y';
        assert_eq!(decode(&bad), Err(DecodeError::Magic));
        let mut bad = good.clone();
        bad[2] = 1;
        assert_eq!(decode(&bad), Err(DecodeError::Version(1)));
        assert_eq!(decode(&good[..good.len() - 1]), Err(DecodeError::Size { said: good.len(), has: good.len() - 1 }));

        // The size field agrees with the datagram, the entries do not.
        let with_size = |mut m: Vec<u8>| {
            let len = u16::try_from(m.len()).unwrap();
            m[6..8].copy_from_slice(&len.to_be_bytes());
            m
        };
        let mut bad = good.clone();
        bad[3] = 3; // claims three entries
        assert_eq!(decode(&bad), Err(DecodeError::EntryTruncated(2)));
        let bad = with_size(good[..good.len() - 1].to_vec());
        assert_eq!(decode(&bad), Err(DecodeError::EntryTruncated(1)));
        // Only the first bytes of an entry, short of its family byte.
        let mut bad = with_size([&good[..], &[6, 1][..]].concat());
        bad[3] = 3;
        assert_eq!(decode(&bad), Err(DecodeError::EntryTruncated(2)));
        // An IPv6 entry relabelled IPv4 leaves 36 bytes over.
        let mut bad = good.clone();
        bad[HEADER_LEN + ENTRY_LEN_V4 + 3] = 2;
        assert_eq!(decode(&bad), Err(DecodeError::Trailing { count: 2, used: 2 * ENTRY_LEN_V4, has: ENTRY_LEN_V4 + ENTRY_LEN_V6 }));
        // An IPv4 entry relabelled IPv6 runs past the end.
        let mut bad = encode(1, &[entry(1)]).remove(0);
        bad[HEADER_LEN + 3] = AF_INET6;
        assert_eq!(decode(&bad), Err(DecodeError::EntryTruncated(0)));
        let mut bad = good.clone();
        bad[3] = 1; // claims one entry
        assert_eq!(decode(&bad), Err(DecodeError::Trailing { count: 1, used: ENTRY_LEN_V4, has: ENTRY_LEN_V4 + ENTRY_LEN_V6 }));
        for family in [0, 1, 3, 11, 28, 255] {
            let mut bad = good.clone();
            bad[HEADER_LEN + ENTRY_LEN_V4 + 3] = family;
            assert_eq!(decode(&bad), Err(DecodeError::Family(1)), "family {family}");
        }
        // Random garbage never panics, nor does garbage behind a good header.
        let mut x: u32 = 12345;
        let mut junk = |len: usize| -> Vec<u8> {
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect()
        };
        for len in 0..300 {
            let _ = decode(&junk(len));
            let mut framed = [&[b'X', b'S', VERSION][..], &junk(len + 5)].concat();
            let size = u16::try_from(framed.len()).unwrap();
            framed[6..8].copy_from_slice(&size.to_be_bytes());
            for family in [AF_INET, AF_INET6] {
                if framed.len() > HEADER_LEN + 3 {
                    framed[HEADER_LEN + 3] = family;
                }
                let _ = decode(&framed);
            }
        }
    }
}
