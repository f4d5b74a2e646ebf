//! VRRP version 3 advertisements (RFC 5798 section 5), over IPv4 and
//! IPv6: encoding, decoding with the checks of section 7.1, and the
//! checksum over the message with the pseudo-header of either family.
//! Pure: no I/O.
//!
//! An IPv4 raw socket hands over the IP header ([`decode`]); an IPv6 one
//! never does, so its source, destination and hop limit come from the
//! socket's ancillary data ([`decode_ipv6`]). Both end in the same checks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use lb_common::csum;

/// IP protocol number of VRRP.
pub const PROTOCOL: u8 = 112;
/// Where multicast advertisements go over IPv4 (RFC 5798 5.1.1.2).
pub const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// Where multicast advertisements go over IPv6 (RFC 5798 5.1.2.2).
pub const GROUP6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// The only TTL (IPv6: hop limit) an advertisement is sent and accepted
/// with.
pub const TTL: u8 = 255;
/// The protocol version this module speaks.
pub const VERSION: u8 = 3;
/// The only message type: ADVERTISEMENT.
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// The fixed part of a VRRP message.
pub const HEADER_LEN: usize = 8;
/// The 12-bit Max Adver Int field, in centiseconds.
pub const MAX_INTERVAL_CS: u16 = 0x0fff;
/// The most addresses one advertisement can list (Count IPvX Addr is 8 bits).
pub const MAX_ADDRESSES: usize = 255;
/// The IPv4 header this module writes: no options.
pub const IPV4_HEADER_LEN: usize = 20;
/// The type of service keepalived (and this module) puts on adverts:
/// IPTOS_PREC_INTERNETCONTROL.
pub const TOS: u8 = 0xc0;

/// The multicast group of `like`'s family.
#[must_use]
pub const fn group(like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(GROUP),
        IpAddr::V6(_) => IpAddr::V6(GROUP6),
    }
}

/// The octets of an address, 4 or 16.
fn octets(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// One advertisement's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    pub vrid: u8,
    /// 0 when the master resigns, 255 for the address owner.
    pub priority: u8,
    /// Max Adver Int, in centiseconds (12 bits).
    pub interval_cs: u16,
    /// The virtual router's addresses, all of one family.
    pub addresses: Vec<IpAddr>,
}

impl Advert {
    /// The VRRP message (no IP header) with its checksum, as sent from `src`
    /// to `dst` (the pseudo-header's addresses). Only the addresses of
    /// `src`'s family are written (an advert is of one family), at most
    /// [`MAX_ADDRESSES`]; the interval is cut to 12 bits.
    #[must_use]
    pub fn encode(&self, src: impl Into<IpAddr>, dst: impl Into<IpAddr>) -> Vec<u8> {
        let (src, dst) = (src.into(), dst.into());
        let addresses: Vec<&IpAddr> =
            self.addresses.iter().filter(|a| a.is_ipv4() == src.is_ipv4()).take(MAX_ADDRESSES).collect();
        let mut msg = Vec::with_capacity(HEADER_LEN + 16 * addresses.len());
        msg.push((VERSION << 4) | TYPE_ADVERTISEMENT);
        msg.push(self.vrid);
        msg.push(self.priority);
        // The length is at most 255 here.
        msg.push(addresses.len() as u8);
        msg.extend_from_slice(&(self.interval_cs & MAX_INTERVAL_CS).to_be_bytes());
        msg.extend_from_slice(&[0, 0]);
        for a in addresses {
            msg.extend_from_slice(&octets(a));
        }
        let sum = checksum(src, dst, &msg);
        msg[6..8].copy_from_slice(&sum.to_be_bytes());
        msg
    }

    /// What the raw socket of `src`'s family sends: over IPv4 the whole
    /// datagram (the socket has IP_HDRINCL), over IPv6 the message alone
    /// (the kernel writes the header, the source given with IPV6_PKTINFO).
    #[must_use]
    pub fn to_wire(&self, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let msg = self.encode(src, dst);
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => ipv4_datagram(s, d, &msg),
            _ => msg,
        }
    }
}

/// The Internet checksum (RFC 1071) of `message` behind the pseudo-header
/// of the addresses' family (RFC 5798 5.2.8): IPv4's (source, destination,
/// zero, protocol 112, 16-bit length) or IPv6's (RFC 8200 8.1: source,
/// destination, 32-bit length, three zeros, next header 112). Both add the
/// same words but for the addresses' width, so one sum serves both. Over a
/// message whose checksum field is filled in, the result is 0 when it is
/// right.
#[must_use]
pub fn checksum(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, message: &[u8]) -> u16 {
    // A VRRP message is far below 64 KiB; clamp rather than wrap.
    let len = u16::try_from(message.len()).unwrap_or(u16::MAX).to_be_bytes();
    let parts: [&[u8]; 5] = [&octets(&src.into()), &octets(&dst.into()), &[0, PROTOCOL], &len, message];
    !csum::fold(parts.iter().fold(0, |sum, part| csum::sum_be(part, sum)))
}

/// An IPv4 datagram around `payload` (protocol 112, TTL 255, TOS 0xc0, no
/// options), for a socket with IP_HDRINCL. The kernel fills in the
/// identification; the header checksum is written here too.
#[must_use]
pub fn ipv4_datagram(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = IPV4_HEADER_LEN + payload.len();
    let mut d = Vec::with_capacity(total);
    d.push(0x45);
    d.push(TOS);
    d.extend_from_slice(&u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes());
    d.extend_from_slice(&[0, 0, 0, 0]); // identification, flags and fragment offset
    d.push(TTL);
    d.push(PROTOCOL);
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(&src.octets());
    d.extend_from_slice(&dst.octets());
    let sum = !csum::fold(csum::sum_be(&d, 0));
    d[10..12].copy_from_slice(&sum.to_be_bytes());
    d.extend_from_slice(payload);
    d
}

/// Why a received datagram was dropped. Each is counted on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Shorter than its headers, its length fields or its address count.
    Truncated,
    /// Not an IPv4 datagram of protocol 112; over IPv6 (whose socket hands
    /// over no header), a message whose source or destination the kernel
    /// did not give.
    Malformed,
    /// Not from one of the configured unicast peers.
    Peer,
    /// A TTL (IPv6: hop limit) other than 255: it crossed a router.
    Ttl,
    /// Not VRRP version 3.
    Version,
    /// Not an ADVERTISEMENT.
    Type,
    /// The checksum (with the pseudo-header) does not add up.
    Checksum,
    /// Another virtual router's advert.
    Vrid,
    /// Arrived on another interface than the configured one.
    Interface,
}

impl DropReason {
    pub const ALL: [DropReason; 9] = [
        Self::Truncated,
        Self::Malformed,
        Self::Peer,
        Self::Ttl,
        Self::Version,
        Self::Type,
        Self::Checksum,
        Self::Vrid,
        Self::Interface,
    ];

    /// The name in status output and metrics labels.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::Malformed => "malformed",
            Self::Peer => "peer",
            Self::Ttl => "ttl",
            Self::Version => "version",
            Self::Type => "type",
            Self::Checksum => "checksum",
            Self::Vrid => "vrid",
            Self::Interface => "interface",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An advertisement that passed every check, with what its IP header said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub advert: Advert,
}

/// What a received advertisement must match.
#[derive(Clone, Copy, Debug)]
pub struct Filter<'a> {
    pub vrid: u8,
    /// When not empty, the only sources accepted.
    pub peers: &'a [IpAddr],
}

/// What an IPv6 raw socket tells of a message's header, through the
/// source address and the IPV6_PKTINFO and IPV6_HOPLIMIT control messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Header {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// `None` when the kernel did not say: then it cannot be shown to be
    /// 255, and the message is dropped as [`DropReason::Ttl`].
    pub hop_limit: Option<u8>,
}

/// Reads an IPv4 datagram as a raw socket delivers it (IP header included)
/// and applies RFC 5798 7.1's checks, in this order: the IP header
/// ([`DropReason::Truncated`], [`DropReason::Malformed`]), then those of
/// [`decode_ipv6`] from the source on.
///
/// # Errors
/// The first check that fails.
pub fn decode(datagram: &[u8], filter: &Filter<'_>) -> Result<Received, DropReason> {
    if datagram.len() < IPV4_HEADER_LEN {
        return Err(DropReason::Truncated);
    }
    if datagram[0] >> 4 != 4 {
        return Err(DropReason::Malformed);
    }
    let ihl = usize::from(datagram[0] & 0x0f) * 4;
    if ihl < IPV4_HEADER_LEN {
        return Err(DropReason::Malformed);
    }
    let total = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    if total < ihl {
        return Err(DropReason::Malformed);
    }
    if datagram.len() < total {
        return Err(DropReason::Truncated);
    }
    if datagram[9] != PROTOCOL {
        return Err(DropReason::Malformed);
    }
    let src = Ipv4Addr::new(datagram[12], datagram[13], datagram[14], datagram[15]);
    let dst = Ipv4Addr::new(datagram[16], datagram[17], datagram[18], datagram[19]);
    check(src.into(), dst.into(), Some(datagram[8]), &datagram[ihl..total], filter)
}

/// Reads the VRRP message an IPv6 raw socket delivers (no IP header) with
/// what the socket said of its header, and applies RFC 5798 7.1's checks
/// in this order: the source when unicast peers are set, hop limit 255,
/// version 3, type ADVERTISEMENT, the length the address count needs (16
/// bytes an address), the checksum over the IPv6 pseudo-header, and the
/// VRID.
///
/// # Errors
/// The first check that fails.
pub fn decode_ipv6(message: &[u8], header: &Ipv6Header, filter: &Filter<'_>) -> Result<Received, DropReason> {
    check(header.src.into(), header.dst.into(), header.hop_limit, message, filter)
}

/// The checks both families share, from the source on; `msg` is the VRRP
/// message, its addresses of `src`'s family.
fn check(src: IpAddr, dst: IpAddr, ttl: Option<u8>, msg: &[u8], filter: &Filter<'_>) -> Result<Received, DropReason> {
    if !filter.peers.is_empty() && !filter.peers.contains(&src) {
        return Err(DropReason::Peer);
    }
    if ttl != Some(TTL) {
        return Err(DropReason::Ttl);
    }
    if msg.len() < HEADER_LEN {
        return Err(DropReason::Truncated);
    }
    if msg[0] >> 4 != VERSION {
        return Err(DropReason::Version);
    }
    if msg[0] & 0x0f != TYPE_ADVERTISEMENT {
        return Err(DropReason::Type);
    }
    let width = if src.is_ipv4() { 4 } else { 16 };
    let count = usize::from(msg[3]);
    if msg.len() < HEADER_LEN + width * count {
        return Err(DropReason::Truncated);
    }
    if checksum(src, dst, msg) != 0 {
        return Err(DropReason::Checksum);
    }
    if msg[1] != filter.vrid {
        return Err(DropReason::Vrid);
    }
    let addresses = msg[HEADER_LEN..HEADER_LEN + width * count]
        .chunks_exact(width)
        .map(|a| match <[u8; 4]>::try_from(a) {
            Ok(v4) => IpAddr::from(v4),
            // 16 bytes: the chunks are exactly `width` long.
            Err(_) => IpAddr::from(<[u8; 16]>::try_from(a).unwrap_or([0; 16])),
        })
        .collect();
    let advert = Advert {
        vrid: msg[1],
        priority: msg[2],
        interval_cs: u16::from_be_bytes([msg[4], msg[5]]) & MAX_INTERVAL_CS,
        addresses,
    };
    Ok(Received { src, dst, advert })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
    const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 100);

    fn advert() -> Advert {
        Advert { vrid: 51, priority: 100, interval_cs: 100, addresses: vec![VIP.into()] }
    }

    fn datagram(a: &Advert) -> Vec<u8> {
        ipv4_datagram(SRC, GROUP, &a.encode(SRC, GROUP))
    }

    fn filter() -> Filter<'static> {
        Filter { vrid: 51, peers: &[] }
    }

    /// The sum by hand: the pseudo-header's 0xc0a8, 0x0101, 0xe000, 0x0012,
    /// 0x0070 and 0x000c, then the message's 0x3133, 0x6401, 0x0064,
    /// 0x0000, 0xc0a8 and 0x0164 add up to 0x2_f9db, folded 0xf9dd, whose
    /// complement is 0x0622.
    #[test]
    fn golden_bytes_with_checksum() {
        let msg = advert().encode(SRC, GROUP);
        assert_eq!(msg, [0x31, 51, 100, 1, 0x00, 0x64, 0x06, 0x22, 192, 168, 1, 100]);
        assert_eq!(checksum(SRC, GROUP, &msg), 0);
        // The unicast pseudo-header holds the peer's address instead.
        let peer = Ipv4Addr::new(192, 168, 1, 2);
        let unicast = advert().encode(SRC, peer);
        assert_ne!(unicast[6..8], msg[6..8]);
        assert_eq!(checksum(SRC, peer, &unicast), 0);
        // Priority 0, the 12-bit maximum interval and no address.
        let resign = Advert { vrid: 1, priority: 0, interval_cs: 0xffff, addresses: vec![] }.encode(SRC, GROUP);
        assert_eq!(&resign[..6], &[0x31, 1, 0, 0, 0x0f, 0xff]);
        assert_eq!(checksum(SRC, GROUP, &resign), 0);
    }

    #[test]
    fn ipv4_header() {
        let d = datagram(&advert());
        assert_eq!(d.len(), 32);
        assert_eq!(&d[..10], &[0x45, 0xc0, 0, 32, 0, 0, 0, 0, 255, 112]);
        assert_eq!(&d[12..20], &[192, 168, 1, 1, 224, 0, 0, 18]);
        assert_eq!(d[10..12], ipv4_header_checksum(&d[..20]));
    }

    fn ipv4_header_checksum(h: &[u8]) -> [u8; 2] {
        let mut copy = h.to_vec();
        copy[10] = 0;
        copy[11] = 0;
        (!csum::fold(csum::sum_be(&copy, 0))).to_be_bytes()
    }

    #[test]
    fn round_trip() {
        let a = Advert {
            vrid: 7,
            priority: 255,
            interval_cs: 4095,
            addresses: vec![VIP.into(), Ipv4Addr::new(10, 9, 8, 7).into()],
        };
        let rx = decode(&datagram(&a), &Filter { vrid: 7, peers: &[] }).unwrap();
        assert_eq!(rx, Received { src: SRC.into(), dst: GROUP.into(), advert: a });
    }

    /// keepalived 2.2.7's advert for `virtual_router_id 51`, `priority
    /// 150`, `advert_int 1`, `virtual_ipaddress { 10.99.0.100/32 }` from
    /// 10.99.0.2, as a raw socket in the peer's namespace received it (IP
    /// header and all).
    #[test]
    fn keepalived_capture_decodes() {
        let captured: [u8; 32] = [
            0x45, 0xc0, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0xff, 0x70, 0xd0, 0x35, 0x0a, 0x63, 0x00, 0x02,
            0xe0, 0x00, 0x00, 0x12, 0x31, 0x33, 0x96, 0x01, 0x00, 0x64, 0x42, 0xac, 0x0a, 0x63, 0x00, 0x64,
        ];
        let rx = decode(&captured, &filter()).unwrap();
        assert_eq!(rx.src, IpAddr::V4(Ipv4Addr::new(10, 99, 0, 2)));
        assert_eq!(
            rx.advert,
            Advert { vrid: 51, priority: 150, interval_cs: 100, addresses: vec![Ipv4Addr::new(10, 99, 0, 100).into()] }
        );
        // And what we send for the same router is byte for byte keepalived's
        // VRRP message.
        assert_eq!(rx.advert.encode(rx.src, rx.dst), captured[20..]);
    }

    #[test]
    fn each_fault_has_its_reason() {
        let good = datagram(&advert());
        assert!(decode(&good, &filter()).is_ok());
        let reason = |d: &[u8]| decode(d, &filter()).unwrap_err();

        // Truncated: short of an IP header, of the IP total length, of the
        // VRRP header, of the addresses counted.
        assert_eq!(reason(&good[..19]), DropReason::Truncated);
        assert_eq!(reason(&good[..good.len() - 1]), DropReason::Truncated);
        let mut short = ipv4_datagram(SRC, GROUP, &advert().encode(SRC, GROUP)[..7]);
        assert_eq!(reason(&short), DropReason::Truncated);
        short = good.clone();
        short[20 + 3] = 2; // two addresses counted, one present
        assert_eq!(reason(&short), DropReason::Truncated);

        let mut v2 = good.clone();
        v2[20] = 0x21;
        assert_eq!(reason(&v2), DropReason::Version);

        let mut wrong_type = good.clone();
        wrong_type[20] = 0x32;
        assert_eq!(reason(&wrong_type), DropReason::Type);

        let mut bad_sum = good.clone();
        bad_sum[20 + 7] ^= 1;
        assert_eq!(reason(&bad_sum), DropReason::Checksum);
        // A changed field without a new checksum is a checksum failure too.
        let mut changed = good.clone();
        changed[20 + 2] = 101;
        assert_eq!(reason(&changed), DropReason::Checksum);

        let other = datagram(&Advert { vrid: 52, ..advert() });
        assert_eq!(reason(&other), DropReason::Vrid);

        let mut ttl = good.clone();
        ttl[8] = 254;
        assert_eq!(reason(&ttl), DropReason::Ttl);

        let mut not_v4 = good.clone();
        not_v4[0] = 0x65;
        assert_eq!(reason(&not_v4), DropReason::Malformed);
        let mut proto = good.clone();
        proto[9] = 17;
        assert_eq!(reason(&proto), DropReason::Malformed);

        let peer = Ipv4Addr::new(192, 168, 1, 2);
        let peers = [IpAddr::V4(peer)];
        let f = Filter { vrid: 51, peers: &peers };
        assert_eq!(decode(&good, &f).unwrap_err(), DropReason::Peer);
        let from_peer = ipv4_datagram(peer, SRC, &advert().encode(peer, SRC));
        assert_eq!(decode(&from_peer, &f).unwrap().src, peers[0]);
    }

    #[test]
    fn ip_options_and_trailing_bytes() {
        // A 24-byte IP header (one option word) is skipped by its IHL.
        let msg = advert().encode(SRC, GROUP);
        let mut d = ipv4_datagram(SRC, GROUP, &msg);
        d[0] = 0x46;
        d.splice(20..20, [1, 1, 1, 0]);
        let total = u16::try_from(d.len()).unwrap();
        d[2..4].copy_from_slice(&total.to_be_bytes());
        assert_eq!(decode(&d, &filter()).unwrap().advert, advert());
        // Bytes past the IP total length (link padding) are ignored.
        let mut padded = datagram(&advert());
        padded.extend_from_slice(&[0; 14]);
        assert_eq!(decode(&padded, &filter()).unwrap().advert, advert());
    }

    const LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

    fn advert6() -> Advert {
        Advert { vrid: 51, priority: 100, interval_cs: 100, addresses: vec![VIP6.into()] }
    }

    fn header6(hop_limit: u8) -> Ipv6Header {
        Ipv6Header { src: LL, dst: GROUP6, hop_limit: Some(hop_limit) }
    }

    /// The sum by hand over the IPv6 pseudo-header: fe80::1 (0xfe80 +
    /// 0x0001), ff02::12 (0xff02 + 0x0012), the 32-bit length 24 (0x0000 +
    /// 0x0018), zeros and next header 112 (0x0070); then the message's
    /// 0x3133, 0x6401, 0x0064, 0x0000 and 2001:db8::100 (0x2001 + 0x0db8 +
    /// 0x0100): 0x2_c26e, folded 0xc270, whose complement is 0x3d8f.
    #[test]
    fn ipv6_golden_bytes_with_checksum() {
        let msg = advert6().encode(LL, GROUP6);
        #[rustfmt::skip]
        let expected = [
            0x31, 51, 100, 1, 0x00, 0x64, 0x3d, 0x8f,
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
        ];
        assert_eq!(msg, expected);
        assert_eq!(checksum(LL, GROUP6, &msg), 0);
        // Over IPv6 the socket sends the message alone.
        assert_eq!(advert6().to_wire(LL.into(), GROUP6.into()), expected);
        // An address of the other family is not written: the count is of
        // the IPv6 ones.
        let mixed = Advert { addresses: vec![VIP6.into(), VIP.into()], ..advert6() };
        assert_eq!(mixed.encode(LL, GROUP6), expected);
        // Unicast: the peer's address in the pseudo-header.
        let peer = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
        let unicast = advert6().encode(LL, peer);
        assert_ne!(unicast[6..8], msg[6..8]);
        assert_eq!(checksum(LL, peer, &unicast), 0);
    }

    #[test]
    fn ipv6_round_trip() {
        let a = Advert {
            vrid: 7,
            priority: 255,
            interval_cs: 4095,
            addresses: vec![VIP6.into(), Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 7).into()],
        };
        let msg = a.encode(LL, GROUP6);
        assert_eq!(msg.len(), 8 + 2 * 16);
        let rx = decode_ipv6(&msg, &header6(255), &Filter { vrid: 7, peers: &[] }).unwrap();
        assert_eq!(rx, Received { src: LL.into(), dst: GROUP6.into(), advert: a });
    }

    #[test]
    fn ipv6_each_fault_has_its_reason() {
        let good = advert6().encode(LL, GROUP6);
        let reason = |m: &[u8], h: &Ipv6Header| decode_ipv6(m, h, &filter()).unwrap_err();
        assert!(decode_ipv6(&good, &header6(255), &filter()).is_ok());

        // A hop limit other than 255 (or none known) is the TTL reason.
        assert_eq!(reason(&good, &header6(254)), DropReason::Ttl);
        assert_eq!(reason(&good, &header6(1)), DropReason::Ttl);
        assert_eq!(reason(&good, &Ipv6Header { hop_limit: None, ..header6(255) }), DropReason::Ttl);

        // Truncated: short of the VRRP header, or of the addresses counted
        // at 16 bytes each (a count of 2 with one address; 4 bytes short).
        assert_eq!(reason(&good[..7], &header6(255)), DropReason::Truncated);
        assert_eq!(reason(&good[..good.len() - 4], &header6(255)), DropReason::Truncated);
        let mut count = good.clone();
        count[3] = 2;
        assert_eq!(reason(&count, &header6(255)), DropReason::Truncated);
        // A count that fits but is not what was summed: the checksum.
        let mut fewer = good.clone();
        fewer[3] = 0;
        assert_eq!(reason(&fewer, &header6(255)), DropReason::Checksum);

        let mut bad_sum = good.clone();
        bad_sum[7] ^= 1;
        assert_eq!(reason(&bad_sum, &header6(255)), DropReason::Checksum);
        // The pseudo-header counts: the same bytes from another source, or
        // to another destination, do not add up.
        let other_src = Ipv6Header { src: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 9), ..header6(255) };
        assert_eq!(reason(&good, &other_src), DropReason::Checksum);
        let unicast = Ipv6Header { dst: VIP6, ..header6(255) };
        assert_eq!(reason(&good, &unicast), DropReason::Checksum);

        let mut v2 = good.clone();
        v2[0] = 0x21;
        assert_eq!(reason(&v2, &header6(255)), DropReason::Version);
        let mut wrong_type = good.clone();
        wrong_type[0] = 0x32;
        assert_eq!(reason(&wrong_type, &header6(255)), DropReason::Type);
        let other = Advert { vrid: 52, ..advert6() }.encode(LL, GROUP6);
        assert_eq!(reason(&other, &header6(255)), DropReason::Vrid);

        let peers = [IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2))];
        let f = Filter { vrid: 51, peers: &peers };
        assert_eq!(decode_ipv6(&good, &header6(255), &f).unwrap_err(), DropReason::Peer);
        let from_peer = Ipv6Header { src: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2), dst: LL, hop_limit: Some(255) };
        let m = advert6().encode(from_peer.src, LL);
        assert_eq!(decode_ipv6(&m, &from_peer, &f).unwrap().src, peers[0]);
    }
}
