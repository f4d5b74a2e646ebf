//! `ping`: ldirectord's ping check. One ICMP echo request to the real; up
//! when the real's echo reply with our identifier, sequence and payload
//! comes back. A raw socket (the controller runs as root) rather than a
//! ping socket, which `net.ipv4.ping_group_range` may forbid.
//!
//! A raw ICMP socket receives a copy of every ICMP message to the host, so
//! every message is matched against ours before it counts: other monitors'
//! replies, our own request looped back, unreachables.

use std::{
    io::Read,
    net::{Ipv4Addr, SocketAddr},
};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{Interest, unix::AsyncFd};

use super::{CheckError, random_u64};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const IPPROTO_ICMP: u8 = 1;
/// An ICMP echo header: type, code, checksum, identifier, sequence.
const ECHO_HEADER_LEN: usize = 8;

pub(super) async fn check(addr: Ipv4Addr) -> Result<(), CheckError> {
    let sockaddr = SocketAddr::from((addr, 0));
    let io_err = |op| move |source| CheckError::Io { op, addr: sockaddr, source };
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        .map_err(io_err("open a raw ICMP socket for"))?;
    socket.set_nonblocking(true).map_err(io_err("open a raw ICMP socket for"))?;
    // Connected, the socket only receives what `addr` sends.
    socket.connect(&sockaddr.into()).map_err(|source| CheckError::Connect { addr: sockaddr, source })?;
    // SAFETY: the Socket owns its descriptor and the AsyncFd owns the
    // Socket, so the descriptor stays open, and is not replaced, for as long
    // as it is registered.
    let socket = unsafe { AsyncFd::register(socket) }
        .map_err(|e| io_err("open a raw ICMP socket for")(e.into_parts().1))?;

    let token = random_u64();
    let [i0, i1, s0, s1, ..] = token.to_be_bytes();
    let echo = Echo {
        ident: u16::from_be_bytes([i0, i1]),
        seq: u16::from_be_bytes([s0, s1]),
        payload: token.to_be_bytes(),
    };
    let request = echo.request();
    socket
        .async_io(Interest::WRITABLE, |s| s.send(&request))
        .await
        .map_err(io_err("send to"))?;
    let mut buf = [0u8; 1500];
    loop {
        let n = socket
            .async_io(Interest::READABLE, |s| {
                let mut s: &Socket = s;
                s.read(&mut buf)
            })
            .await
            .map_err(io_err("receive from"))?;
        if echo.is_reply(buf.get(..n).unwrap_or_default(), addr) {
            return Ok(());
        }
    }
}

/// Our echo request, and what its reply must carry back.
struct Echo {
    ident: u16,
    seq: u16,
    /// Echoed back by the real: a reply with it answers this request, not
    /// an earlier one.
    payload: [u8; 8],
}

impl Echo {
    fn request(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(ECHO_HEADER_LEN + self.payload.len());
        p.extend_from_slice(&[ICMP_ECHO_REQUEST, 0, 0, 0]);
        p.extend_from_slice(&self.ident.to_be_bytes());
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&self.payload);
        let sum = checksum(&p).to_be_bytes();
        p[2..4].copy_from_slice(&sum);
        p
    }

    /// Whether `packet`, as a raw socket reads it (the IPv4 header, then
    /// ICMP), is the echo reply to this request from `from`.
    fn is_reply(&self, packet: &[u8], from: Ipv4Addr) -> bool {
        let Some(&version_ihl) = packet.first() else { return false };
        let ihl = usize::from(version_ihl & 0x0f) * 4;
        if version_ihl >> 4 != 4
            || ihl < 20
            || packet.get(9) != Some(&IPPROTO_ICMP)
            || packet.get(12..16) != Some(&from.octets()[..])
        {
            return false;
        }
        let Some(icmp) = packet.get(ihl..) else { return false };
        icmp.len() == ECHO_HEADER_LEN + self.payload.len()
            && icmp.first() == Some(&ICMP_ECHO_REPLY)
            && icmp.get(1) == Some(&0)
            && icmp.get(4..6) == Some(&self.ident.to_be_bytes()[..])
            && icmp.get(6..8) == Some(&self.seq.to_be_bytes()[..])
            && icmp.get(ECHO_HEADER_LEN..) == Some(&self.payload[..])
            && checksum(icmp) == 0
    }
}

/// The Internet checksum (RFC 1071): the one's complement of the one's
/// complement sum of 16-bit words. Over a message that carries its
/// checksum, it is 0 when the message is intact.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let Some(&last) = words.remainder().first() {
        sum += u32::from(last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    #[expect(clippy::cast_possible_truncation, reason = "folded to 16 bits above")]
    let folded = sum as u16;
    !folded
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{check_once, testutil::*};
    use super::*;
    use crate::config::{CheckKind, Protocol as Proto};

    fn echo() -> Echo {
        Echo { ident: 0x1234, seq: 0x0042, payload: *b"xlvs-ok!" }
    }

    /// An IPv4 packet from `src` carrying `icmp`.
    fn ipv4(src: Ipv4Addr, icmp: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, IPPROTO_ICMP, 0, 0];
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&[127, 0, 0, 1]);
        p.extend_from_slice(icmp);
        p
    }

    /// The reply a host sends: the request with type 0 and a fixed checksum.
    fn reply_to(request: &[u8]) -> Vec<u8> {
        let mut r = request.to_vec();
        r[0] = ICMP_ECHO_REPLY;
        r[2..4].copy_from_slice(&[0, 0]);
        let sum = checksum(&r).to_be_bytes();
        r[2..4].copy_from_slice(&sum);
        r
    }

    #[test]
    fn request_bytes() {
        let r = echo().request();
        assert_eq!(&r[..2], &[8, 0]);
        assert_eq!(&r[4..8], &[0x12, 0x34, 0x00, 0x42]);
        assert_eq!(&r[8..], b"xlvs-ok!");
        assert_eq!(checksum(&r), 0, "the checksum makes the message sum to zero");
    }

    #[test]
    fn checksum_of_rfc1071s_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        assert_eq!(checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), !0xddf2);
        assert_eq!(checksum(&[0xff]), !0xff00);
    }

    #[test]
    fn the_reply_matches() {
        let real = Ipv4Addr::new(10, 0, 1, 11);
        let reply = reply_to(&echo().request());
        assert!(echo().is_reply(&ipv4(real, &reply), real));
    }

    #[test]
    fn other_messages_do_not_match() {
        let real = Ipv4Addr::new(10, 0, 1, 11);
        let e = echo();
        let reply = reply_to(&e.request());
        // From another host.
        assert!(!e.is_reply(&ipv4(Ipv4Addr::new(10, 0, 1, 12), &reply), real));
        // Our own request, looped back.
        assert!(!e.is_reply(&ipv4(real, &e.request()), real));
        // Another monitor's identifier, an earlier sequence, another payload.
        let other = Echo { ident: 0x1235, ..echo() };
        assert!(!e.is_reply(&ipv4(real, &reply_to(&other.request())), real));
        let earlier = Echo { seq: 0x0041, ..echo() };
        assert!(!e.is_reply(&ipv4(real, &reply_to(&earlier.request())), real));
        let payload = Echo { payload: *b"xlvs-ko!", ..echo() };
        assert!(!e.is_reply(&ipv4(real, &reply_to(&payload.request())), real));
        // A corrupted reply.
        let mut bad = reply.clone();
        bad[9] ^= 1;
        assert!(!e.is_reply(&ipv4(real, &bad), real));
        // A port unreachable quoting our request.
        let mut unreach = vec![3, 3, 0, 0, 0, 0, 0, 0];
        unreach.extend_from_slice(&ipv4(Ipv4Addr::LOCALHOST, &e.request()));
        assert!(!e.is_reply(&ipv4(real, &unreach), real));
    }

    #[test]
    fn truncated_and_odd_packets_do_not_match_or_panic() {
        let real = Ipv4Addr::new(10, 0, 1, 11);
        let full = ipv4(real, &reply_to(&echo().request()));
        for n in 0..full.len() {
            assert!(!echo().is_reply(&full[..n], real), "{n} bytes");
        }
        let mut options = full.clone();
        options[0] = 0x4f; // a header length past the packet's end
        assert!(!echo().is_reply(&options, real));
        let mut v6 = full;
        v6[0] = 0x65;
        assert!(!echo().is_reply(&v6, real));
    }

    #[tokio::test]
    async fn loopback_answers() {
        let t = target(Proto::Tcp, 80);
        let c = make_check(CheckKind::Ping, Duration::from_secs(2));
        assert_eq!(check_once(&t, &c).await.ok(), Some(None));
    }

    /// Several pings at once each see their own reply among the others'.
    #[tokio::test]
    async fn concurrent_pings_each_match_their_own() {
        let t = target(Proto::Tcp, 80);
        let c = make_check(CheckKind::Ping, Duration::from_secs(2));
        let runs = (0..8).map(|_| check_once(&t, &c));
        for r in futures_util::future::join_all(runs).await {
            assert_eq!(r.ok(), Some(None));
        }
    }
}
