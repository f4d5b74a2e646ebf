//! `ping`: ldirectord's ping check. One echo request to the real (ICMP
//! for IPv4, ICMPv6 for IPv6); up when the real's echo reply with our
//! identifier, sequence and payload comes back. A raw socket (the
//! controller runs as root) rather than a ping socket, which
//! `net.ipv4.ping_group_range` may forbid (it governs ICMPv6 ping sockets
//! too).
//!
//! A raw socket receives a copy of every ICMP message to the host, so every
//! message is matched against ours before it counts: other monitors'
//! replies, our own request looped back, unreachables. The two families
//! differ only in what [`Family`] holds: the type numbers, and that an
//! IPv4 raw socket reads the IP header and leaves the checksum to us, where
//! an ICMPv6 one reads the ICMPv6 message alone and the kernel computes
//! and verifies its checksum (over a pseudo-header we do not see).

use std::{
    mem::MaybeUninit,
    net::{IpAddr, SocketAddr},
};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{Interest, unix::AsyncFd};

use super::{CheckError, random_u64};

const IPPROTO_ICMP: u8 = 1;
/// An echo header: type, code, checksum, identifier, sequence.
const ECHO_HEADER_LEN: usize = 8;

/// The ICMP of an address's family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// ICMP (RFC 792).
    V4,
    /// ICMPv6 (RFC 4443).
    V6,
}

impl Family {
    const fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    fn socket(self) -> std::io::Result<Socket> {
        match self {
            Self::V4 => Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)),
            Self::V6 => Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)),
        }
    }

    /// The echo request's and the echo reply's types.
    const fn types(self) -> (u8, u8) {
        match self {
            Self::V4 => (8, 0),
            Self::V6 => (128, 129),
        }
    }

    /// The ICMP message of what a raw socket read from `source`: behind an
    /// IPv4 header that must be ICMP's from `source`; an ICMPv6 socket reads
    /// the message alone.
    fn message(self, packet: &[u8], source: IpAddr) -> Option<&[u8]> {
        match (self, source) {
            (Self::V4, IpAddr::V4(source)) => {
                let &version_ihl = packet.first()?;
                let ihl = usize::from(version_ihl & 0x0f) * 4;
                let ours = version_ihl >> 4 == 4
                    && ihl >= 20
                    && packet.get(9) == Some(&IPPROTO_ICMP)
                    && packet.get(12..16) == Some(&source.octets()[..]);
                ours.then(|| packet.get(ihl..)).flatten()
            }
            (Self::V6, IpAddr::V6(_)) => Some(packet),
            _ => None,
        }
    }
}

/// ICMPv6's filter option (`ICMP6_FILTER`, linux/icmpv6.h), which libc
/// does not name: a bit set for each type the socket is not to receive.
const ICMP6_FILTER: libc::c_int = 1;

/// Lets only echo replies through an ICMPv6 socket, so that neighbour
/// discovery and the rest of the host's ICMPv6 do not wake every check.
/// Only an optimisation: whatever arrives is still matched.
fn only_echo_replies(socket: &Socket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let (_, reply) = Family::V6.types();
    let mut blocked = [u32::MAX; 8];
    blocked[usize::from(reply >> 5)] &= !(1 << (reply & 31));
    // SAFETY: a valid descriptor, and an option value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_ICMPV6,
            ICMP6_FILTER,
            blocked.as_ptr().cast(),
            std::mem::size_of_val(&blocked) as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

pub(super) async fn check(addr: IpAddr) -> Result<(), CheckError> {
    let family = Family::of(addr);
    let sockaddr = SocketAddr::new(addr, 0);
    let io_err = |op| move |source| CheckError::Io { op, addr: sockaddr, source };
    let open = "open a raw ICMP socket for";
    let socket = family.socket().map_err(io_err(open))?;
    socket.set_nonblocking(true).map_err(io_err(open))?;
    if family == Family::V6
        && let Err(e) = only_echo_replies(&socket)
    {
        tracing::debug!(error = %e, "ping: no ICMPv6 filter, every message is matched");
    }
    // Connected, the socket only receives what `addr` sends.
    socket.connect(&sockaddr.into()).map_err(|source| CheckError::Connect { addr: sockaddr, source })?;
    // SAFETY: the Socket owns its descriptor and the AsyncFd owns the
    // Socket, so the descriptor stays open, and is not replaced, for as long
    // as it is registered.
    let socket = unsafe { AsyncFd::register(socket) }.map_err(|e| io_err(open)(e.into_parts().1))?;

    let token = random_u64();
    let [i0, i1, s0, s1, ..] = token.to_be_bytes();
    let echo = Echo {
        family,
        real: addr,
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
        let (n, from) = socket
            .async_io(Interest::READABLE, |s| {
                // SAFETY: initialised bytes seen as possibly uninitialised
                // ones, into which recv_from writes only initialised bytes.
                let uninit = unsafe { &mut *(std::ptr::from_mut::<[u8]>(&mut buf[..]) as *mut [MaybeUninit<u8>]) };
                s.recv_from(uninit)
            })
            .await
            .map_err(io_err("receive from"))?;
        let Some(source) = from.as_socket().map(|a| a.ip()) else { continue };
        if echo.is_reply(buf.get(..n).unwrap_or_default(), source) {
            return Ok(());
        }
    }
}

/// Our echo request, and what its reply must carry back.
struct Echo {
    family: Family,
    /// Where the request goes, and the reply must come from.
    real: IpAddr,
    ident: u16,
    seq: u16,
    /// Echoed back by the real: a reply with it answers this request, not
    /// an earlier one.
    payload: [u8; 8],
}

impl Echo {
    fn request(&self) -> Vec<u8> {
        let (request, _) = self.family.types();
        let mut p = Vec::with_capacity(ECHO_HEADER_LEN + self.payload.len());
        p.extend_from_slice(&[request, 0, 0, 0]);
        p.extend_from_slice(&self.ident.to_be_bytes());
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&self.payload);
        // ICMPv6's checksum is the kernel's: it covers a pseudo-header.
        if self.family == Family::V4 {
            let sum = checksum(&p).to_be_bytes();
            p[2..4].copy_from_slice(&sum);
        }
        p
    }

    /// Whether `packet`, as the raw socket read it from `source`, is the
    /// echo reply to this request.
    fn is_reply(&self, packet: &[u8], source: IpAddr) -> bool {
        let (_, reply) = self.family.types();
        let Some(icmp) = self.family.message(packet, source).filter(|_| source == self.real) else { return false };
        icmp.len() == ECHO_HEADER_LEN + self.payload.len()
            && icmp.first() == Some(&reply)
            && icmp.get(1) == Some(&0)
            && icmp.get(4..6) == Some(&self.ident.to_be_bytes()[..])
            && icmp.get(6..8) == Some(&self.seq.to_be_bytes()[..])
            && icmp.get(ECHO_HEADER_LEN..) == Some(&self.payload[..])
            // The kernel drops an ICMPv6 message whose checksum is wrong.
            && (self.family == Family::V6 || checksum(icmp) == 0)
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
    use std::{
        net::{Ipv4Addr, Ipv6Addr},
        time::Duration,
    };

    use super::super::{check_once, testutil::*};
    use super::*;
    use crate::config::{CheckKind, Protocol as Proto};

    const REAL4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 11));
    const REAL6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x11));

    fn echo(real: IpAddr) -> Echo {
        Echo { family: Family::of(real), real, ident: 0x1234, seq: 0x0042, payload: *b"xlvs-ok!" }
    }

    /// An IPv4 packet from `src` carrying `icmp`.
    fn ipv4(src: IpAddr, icmp: &[u8]) -> Vec<u8> {
        let IpAddr::V4(src) = src else { panic!("{src} is not IPv4") };
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, IPPROTO_ICMP, 0, 0];
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&[127, 0, 0, 1]);
        p.extend_from_slice(icmp);
        p
    }

    /// What the raw socket reads of `icmp` from `src`: the IPv4 packet, or
    /// the ICMPv6 message alone.
    fn read(src: IpAddr, icmp: &[u8]) -> Vec<u8> {
        if src.is_ipv4() { ipv4(src, icmp) } else { icmp.to_vec() }
    }

    /// The reply a host sends: the request with the reply type (and, for
    /// IPv4, a fixed checksum; ICMPv6's is the kernel's).
    fn reply_to(e: &Echo, request: &[u8]) -> Vec<u8> {
        let mut r = request.to_vec();
        r[0] = e.family.types().1;
        if e.family == Family::V4 {
            r[2..4].copy_from_slice(&[0, 0]);
            let sum = checksum(&r).to_be_bytes();
            r[2..4].copy_from_slice(&sum);
        }
        r
    }

    #[test]
    fn request_bytes() {
        let r = echo(REAL4).request();
        assert_eq!(&r[..2], &[8, 0]);
        assert_eq!(&r[4..8], &[0x12, 0x34, 0x00, 0x42]);
        assert_eq!(&r[8..], b"xlvs-ok!");
        assert_eq!(checksum(&r), 0, "the checksum makes the message sum to zero");
        // ICMPv6: type 128, the checksum left to the kernel.
        let r = echo(REAL6).request();
        assert_eq!(r, [128, 0, 0, 0, 0x12, 0x34, 0x00, 0x42, b'x', b'l', b'v', b's', b'-', b'o', b'k', b'!']);
    }

    #[test]
    fn checksum_of_rfc1071s_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        assert_eq!(checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), !0xddf2);
        assert_eq!(checksum(&[0xff]), !0xff00);
    }

    #[test]
    fn the_reply_matches_in_both_families() {
        for real in [REAL4, REAL6] {
            let e = echo(real);
            let reply = reply_to(&e, &e.request());
            assert!(e.is_reply(&read(real, &reply), real), "{real}");
        }
        let e = echo(REAL6);
        assert_eq!(reply_to(&e, &e.request())[0], 129);
    }

    #[test]
    fn other_messages_do_not_match() {
        let other_host = |real: IpAddr| match real {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(10, 0, 1, 12)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x12)),
        };
        for real in [REAL4, REAL6] {
            let e = echo(real);
            let reply = reply_to(&e, &e.request());
            // From another host, by the socket's word (and the IPv4 header's).
            let other = other_host(real);
            assert!(!e.is_reply(&read(other, &reply), other), "{real}");
            assert!(!e.is_reply(&read(real, &reply), other), "{real}");
            if real.is_ipv4() {
                assert!(!e.is_reply(&read(other, &reply), real), "the IPv4 header's source");
            }
            // Of the other family.
            let wrong = if real.is_ipv4() { REAL6 } else { REAL4 };
            assert!(!e.is_reply(&read(wrong, &reply), wrong), "{real}");
            // Our own request, looped back.
            assert!(!e.is_reply(&read(real, &e.request()), real), "{real}");
            // Another monitor's identifier, an earlier sequence, another payload.
            for o in [Echo { ident: 0x1235, ..echo(real) }, Echo { seq: 0x0041, ..echo(real) }, Echo { payload: *b"xlvs-ko!", ..echo(real) }] {
                assert!(!e.is_reply(&read(real, &reply_to(&o, &o.request())), real), "{real}");
            }
            // The other family's reply type, a non-zero code, a longer reply.
            let mut bad = reply.clone();
            bad[0] = if real.is_ipv4() { 129 } else { 0 };
            assert!(!e.is_reply(&read(real, &bad), real), "{real}");
            let mut bad = reply.clone();
            bad[1] = 1;
            assert!(!e.is_reply(&read(real, &bad), real), "{real}");
            let long = [&reply[..], b"!"].concat();
            assert!(!e.is_reply(&read(real, &long), real), "{real}");
            // An unreachable quoting our request (IPv4 3/3, ICMPv6 1/4).
            let (kind, code) = if real.is_ipv4() { (3, 3) } else { (1, 4) };
            let mut unreach = vec![kind, code, 0, 0, 0, 0, 0, 0];
            unreach.extend_from_slice(&e.request());
            assert!(!e.is_reply(&read(real, &unreach), real), "{real}");
        }
        // A corrupted IPv4 reply (the kernel drops corrupted ICMPv6).
        let e = echo(REAL4);
        let mut bad = reply_to(&e, &e.request());
        bad[9] ^= 1;
        assert!(!e.is_reply(&ipv4(REAL4, &bad), REAL4));
    }

    #[test]
    fn truncated_and_odd_packets_do_not_match_or_panic() {
        for real in [REAL4, REAL6] {
            let e = echo(real);
            let full = read(real, &reply_to(&e, &e.request()));
            for n in 0..full.len() {
                assert!(!e.is_reply(&full[..n], real), "{real}: {n} bytes");
            }
        }
        let e = echo(REAL4);
        let full = ipv4(REAL4, &reply_to(&e, &e.request()));
        let mut options = full.clone();
        options[0] = 0x4f; // a header length past the packet's end
        assert!(!e.is_reply(&options, REAL4));
        let mut v6 = full;
        v6[0] = 0x65;
        assert!(!e.is_reply(&v6, REAL4));
    }

    fn target_at(addr: IpAddr) -> super::super::Target {
        super::super::Target { addr, ..target(Proto::Tcp, 80) }
    }

    #[tokio::test]
    async fn loopback_answers_in_both_families() {
        let c = make_check(CheckKind::Ping, Duration::from_secs(2));
        for addr in [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
            assert_eq!(check_once(&target_at(addr), &c).await.ok(), Some(None), "{addr}");
        }
    }

    /// Our own request comes back to a raw socket on loopback before its
    /// reply does; with the filter, only the reply is read.
    #[test]
    fn the_icmpv6_filter_lets_echo_replies_only_through() {
        let socket = Family::V6.socket().expect("a raw ICMPv6 socket (the tests run as root)");
        only_echo_replies(&socket).expect("ICMP6_FILTER");
        socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let loopback = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 0);
        socket.connect(&loopback.into()).unwrap();
        let e = echo(loopback.ip());
        socket.send(&e.request()).unwrap();
        let mut buf = [MaybeUninit::new(0u8); 64];
        let (n, _) = socket.recv_from(&mut buf).expect("the echo reply");
        // SAFETY: recv_from initialised the first n bytes.
        let got: Vec<u8> = buf[..n].iter().map(|b| unsafe { b.assume_init() }).collect();
        assert!(e.is_reply(&got, loopback.ip()), "{got:?}");
    }

    /// Several pings at once each see their own reply among the others'.
    #[tokio::test]
    async fn concurrent_pings_each_match_their_own() {
        let c = make_check(CheckKind::Ping, Duration::from_secs(2));
        let (v4, v6) = (target_at(Ipv4Addr::LOCALHOST.into()), target_at(Ipv6Addr::LOCALHOST.into()));
        let runs = (0..8).map(|i| check_once(if i % 2 == 0 { &v4 } else { &v6 }, &c));
        for r in futures_util::future::join_all(runs).await {
            assert_eq!(r.ok(), Some(None));
        }
    }

    /// Runs `f` on a thread of its own in a network namespace of its own,
    /// after `ip` has run each of `setup` there (a child of this thread
    /// shares its namespace). The namespace holds nothing but its loopback,
    /// and goes with the thread: nothing outside it is touched or left.
    fn in_private_netns<T: Send + 'static>(setup: &'static [&'static [&'static str]], f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            // SAFETY: a plain syscall; it moves only this thread.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                panic!("a network namespace (the tests run as root): {}", std::io::Error::last_os_error());
            }
            // The premise of running `ip` here: this thread's namespace is
            // not the process's (/proc/self is the main thread).
            let ns = |path| std::fs::read_link(path).expect("read a namespace link");
            assert_ne!(ns("/proc/thread-self/ns/net"), ns("/proc/self/ns/net"), "not in a namespace of its own");
            for args in setup {
                let out = std::process::Command::new("ip").args(*args).output().expect("run ip");
                assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            f()
        })
        .join()
        .expect("the namespace thread")
    }

    fn ping_each(addrs: [IpAddr; 2], timeout: Duration) -> [(IpAddr, Result<Option<u32>, CheckError>); 2] {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let c = make_check(CheckKind::Ping, timeout);
        addrs.map(|addr| (addr, runtime.block_on(check_once(&target_at(addr), &c))))
    }

    /// With its loopback down, neither family's loopback is reachable: the
    /// check says so at once rather than waiting.
    #[test]
    fn an_unreachable_real_is_down_in_both_families() {
        let addrs = [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)];
        for (addr, r) in in_private_netns(&[], move || ping_each(addrs, Duration::from_secs(2))) {
            match r {
                // No route for IPv4; no source address for IPv6.
                Err(CheckError::Connect { source, .. } | CheckError::Io { source, .. }) => {
                    let unreachable = [libc::ENETUNREACH, libc::EADDRNOTAVAIL, libc::EHOSTUNREACH];
                    assert!(source.raw_os_error().is_some_and(|e| unreachable.contains(&e)), "{addr}: {source}");
                }
                other => panic!("{addr}: {other:?}"),
            }
        }
    }

    /// A real that routes but never answers, as a dead host: its network is
    /// on the namespace's loopback, which drops what is not its own. The
    /// check times out in both families.
    #[test]
    fn a_silent_real_times_out_in_both_families() {
        const SETUP: &[&[&str]] = &[
            &["link", "set", "lo", "up"],
            // On a loopback, an IPv4 address's whole prefix would be local:
            // the address alone, and a route for its network.
            &["addr", "add", "10.77.0.1/32", "dev", "lo"],
            &["route", "add", "10.77.0.0/24", "dev", "lo"],
            &["-6", "addr", "add", "2001:db8:77::1/64", "dev", "lo", "nodad"],
        ];
        let addrs = [IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2)), IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 2))];
        let (results, own) = in_private_netns(SETUP, move || {
            let own = ping_each([IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1)), IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 1))], Duration::from_secs(2));
            (ping_each(addrs, Duration::from_millis(300)), own)
        });
        // The namespace's own addresses answer, so silence is the real's.
        for (addr, r) in own {
            assert_eq!(r.ok(), Some(None), "{addr}");
        }
        for (addr, r) in results {
            assert!(matches!(r, Err(CheckError::TimedOut(_))), "{addr}: {r:?}");
        }
    }
}
