//! The connection sync message: what the master tells the backup about its
//! connections, in a versioned, fixed-layout format (network byte order).
//!
//! ```text
//! header (8 bytes)   magic "XS" | version 1 | count | sync id | 0 | total size (u16)
//! entry  (36 bytes)  protocol | TCP state | flags | family (2 = IPv4)
//!                    client address | virtual address | real address
//!                    client port | virtual port | real port | 0 (u16)
//!                    seconds until it expires (u32)
//!                    client-side next hop MAC (6) | 0 (2)
//! ```
//!
//! As IPVS's sync protocol, it names the service and real by address, not
//! by id (ids are each director's own), and carries the time left rather
//! than a clock. A message that does not parse is dropped whole.

/// "XS": xlvs sync.
pub const MAGIC: [u8; 2] = *b"XS";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 8;
pub const ENTRY_LEN: usize = 36;
/// Entries per datagram, so that one fits a 1500-byte MTU.
pub const MAX_ENTRIES: usize = 40;

/// `flags`: the director sees only the client's side (DR, TUN).
pub const F_NOOUTPUT: u8 = 1;
/// `flags`: counted as inactive.
pub const F_INACTIVE: u8 = 2;

const AF_INET: u8 = 2;

/// One synced connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub protocol: u8,
    pub state: u8,
    pub flags: u8,
    pub client: std::net::SocketAddrV4,
    pub virtual_addr: std::net::SocketAddrV4,
    pub real: std::net::SocketAddrV4,
    /// Seconds until the connection expires on the master.
    pub timeout: u32,
    /// The client-side next hop's MAC, for NAT replies.
    pub peer_mac: [u8; 6],
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
    #[error("entry {0} is not IPv4")]
    Family(usize),
}

/// Encodes up to [`MAX_ENTRIES`] entries (the rest are left out: callers
/// chunk).
#[must_use]
pub fn encode(sync_id: u8, entries: &[Entry]) -> Vec<u8> {
    let entries = &entries[..entries.len().min(MAX_ENTRIES)];
    let size = HEADER_LEN + entries.len() * ENTRY_LEN;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&MAGIC);
    // MAX_ENTRIES fits a byte, and the size a u16.
    out.extend_from_slice(&[VERSION, entries.len() as u8, sync_id, 0]);
    out.extend_from_slice(&(size as u16).to_be_bytes());
    for e in entries {
        out.extend_from_slice(&[e.protocol, e.state, e.flags, AF_INET]);
        for a in [e.client, e.virtual_addr, e.real] {
            out.extend_from_slice(&a.ip().octets());
        }
        for a in [e.client, e.virtual_addr, e.real] {
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&e.timeout.to_be_bytes());
        out.extend_from_slice(&e.peer_mac);
        out.extend_from_slice(&[0, 0]);
    }
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
    if said != bytes.len() || said != HEADER_LEN + count * ENTRY_LEN {
        return Err(DecodeError::Size { said, has: bytes.len() });
    }
    let entries = bytes[HEADER_LEN..]
        .chunks_exact(ENTRY_LEN)
        .enumerate()
        .map(|(i, e)| {
            if e[3] != AF_INET {
                return Err(DecodeError::Family(i));
            }
            let addr = |at: usize| std::net::Ipv4Addr::new(e[at], e[at + 1], e[at + 2], e[at + 3]);
            let port = |at: usize| u16::from_be_bytes([e[at], e[at + 1]]);
            let mut peer_mac = [0; 6];
            peer_mac.copy_from_slice(&e[28..34]);
            Ok(Entry {
                protocol: e[0],
                state: e[1],
                flags: e[2],
                client: std::net::SocketAddrV4::new(addr(4), port(16)),
                virtual_addr: std::net::SocketAddrV4::new(addr(8), port(18)),
                real: std::net::SocketAddrV4::new(addr(12), port(20)),
                timeout: u32::from_be_bytes([e[24], e[25], e[26], e[27]]),
                peer_mac,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((sync_id, entries))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;

    fn entry(n: u8) -> Entry {
        Entry {
            protocol: 6,
            state: 1,
            flags: F_NOOUTPUT,
            client: SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, n), 40000 + u16::from(n)),
            virtual_addr: SocketAddrV4::new(Ipv4Addr::new(10, 100, 0, 100), 80),
            real: SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 11), 8080),
            timeout: 899,
            peer_mac: [2, 0, 0, 0, 0, n],
        }
    }

    #[test]
    fn golden_bytes() {
        let bytes = encode(7, &[entry(2)]);
        #[rustfmt::skip]
        let want = [
            b'X', b'S', 1, 1, 7, 0, 0, 44,
            6, 1, 1, 2,
            10, 1, 0, 2, 10, 100, 0, 100, 10, 0, 1, 11,
            0x9c, 0x42, 0, 80, 0x1f, 0x90, 0, 0,
            0, 0, 3, 0x83,
            2, 0, 0, 0, 0, 2, 0, 0,
        ];
        assert_eq!(bytes, want);
        assert_eq!(decode(&bytes), Ok((7, vec![entry(2)])));
    }

    #[test]
    fn round_trip_and_chunking() {
        let many: Vec<Entry> = (0..50).map(entry).collect();
        let bytes = encode(1, &many);
        let (_, got) = decode(&bytes).unwrap();
        assert_eq!(got, many[..MAX_ENTRIES]);
        assert!(bytes.len() <= 1500 - 28, "fits one datagram of a 1500-byte MTU");
        assert_eq!(decode(&encode(0, &[])), Ok((0, vec![])));
    }

    #[test]
    fn anything_malformed_is_refused() {
        let good = encode(1, &[entry(1), entry(2)]);
        assert_eq!(decode(&good[..5]), Err(DecodeError::Truncated));
        let mut bad = good.clone();
        bad[0] = b'Y';
        assert_eq!(decode(&bad), Err(DecodeError::Magic));
        let mut bad = good.clone();
        bad[2] = 2;
        assert_eq!(decode(&bad), Err(DecodeError::Version(2)));
        assert!(matches!(decode(&good[..good.len() - 1]), Err(DecodeError::Size { .. })));
        let mut bad = good.clone();
        bad[3] = 3; // claims three entries
        assert!(matches!(decode(&bad), Err(DecodeError::Size { .. })));
        let mut bad = good.clone();
        bad[HEADER_LEN + ENTRY_LEN + 3] = 10;
        assert_eq!(decode(&bad), Err(DecodeError::Family(1)));
        // Random garbage never panics.
        let mut x: u32 = 12345;
        for len in 0..200 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = decode(&junk);
        }
    }
}
