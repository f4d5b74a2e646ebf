//! ICMP and ICMPv6 errors about connections, as IPVS handles them
//! (`ip_vs_in_icmp`, `ip_vs_out_icmp` and their `_v6` twins): the error quotes the packet it is about, and the
//! quoted header, read backwards, names the connection. Also the checksum
//! arithmetic over a run of packet bytes that checking and building ICMP
//! messages needs.

use core::mem::size_of;

use crate::{
    ConnKey, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, csum,
    net::{ETH_HLEN, Flow, IPV4_HLEN, IPV6_HLEN, Ipv4Hdr, Ipv6Hdr, Packet, ParseError, ipv6_extensions, ptr_at},
};

pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_SOURCE_QUENCH: u8 = 4;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
/// Destination unreachable, code 4: fragmentation needed and DF set.
pub const ICMP_FRAG_NEEDED: u8 = 4;

/// The ICMP header: type, code, checksum, and the type's 4-byte field
/// (unused for most errors; the next-hop MTU in its low half for
/// "fragmentation needed", RFC 1191).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpHdr {
    pub kind: u8,
    pub code: u8,
    pub check: u16,
    pub unused: u16,
    /// Network order.
    pub mtu: u16,
}

pub const ICMP_HLEN: usize = size_of::<IcmpHdr>();

/// An ICMPv6 message's first 8 bytes, as "packet too big" has them
/// (RFC 4443 3.2).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Icmp6Hdr {
    pub kind: u8,
    pub code: u8,
    pub check: u16,
    /// Network order.
    pub mtu: u32,
}

pub const ICMPV6_PKT_TOOBIG: u8 = 2;

/// The one's-complement sum of an IPv6 pseudo-header (RFC 8200 8.1) in the
/// native-order words the other sums here use: both addresses, the
/// upper-layer length and the next header.
#[inline(always)]
#[must_use]
pub const fn pseudo_header_sum6(saddr: &[u32; 4], daddr: &[u32; 4], len: u16, nexthdr: u8) -> u32 {
    let mut sum = 0u32;
    let mut i = 0;
    while i < 4 {
        sum += (saddr[i] & 0xffff) + (saddr[i] >> 16) + (daddr[i] & 0xffff) + (daddr[i] >> 16);
        i += 1;
    }
    sum + len.to_be() as u32 + (nexthdr as u16).to_be() as u32
}

/// The longest ICMP message whose checksum the data plane sums: a full
/// Ethernet MTU's worth. Routers quote at most 576 bytes (RFC 1812); a
/// longer "error" is handed to the kernel.
pub const MAX_ICMP_LEN: usize = 1480;

/// The ICMP errors the data plane sends itself (fragmentation needed) are
/// limited as the kernel limits its own: `icmp_msgs_per_sec` 1000 a
/// second, in bursts of `icmp_msgs_burst` 50, for the whole director.
pub const ICMP_RATE_PER_SEC: u64 = 1000;
pub const ICMP_BURST: u64 = 50;
const NS_PER_MESSAGE: u64 = 1_000_000_000 / ICMP_RATE_PER_SEC;

/// Value of `ICMP_BUDGET[0]`: a token bucket for [`ICMP_RATE_PER_SEC`],
/// its credit kept in nanoseconds (one message costs a thousandth of a
/// second). CPUs update it without a lock: a race costs a message more or
/// less, as the kernel's own limit also allows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpBudget {
    pub credit_ns: u64,
    pub last_ns: u64,
}

impl IcmpBudget {
    /// Whether one more message may go out at `now`; takes it if so.
    #[inline(always)]
    pub fn take(&mut self, now: u64) -> bool {
        let cap = ICMP_BURST * NS_PER_MESSAGE;
        let credit = self.credit_ns.saturating_add(now.saturating_sub(self.last_ns));
        self.credit_ns = if credit > cap { cap } else { credit };
        self.last_ns = now;
        if self.credit_ns < NS_PER_MESSAGE {
            return false;
        }
        self.credit_ns -= NS_PER_MESSAGE;
        true
    }
}

/// An ICMP error that quotes a TCP or UDP packet: where everything is, and
/// the quoted packet's endpoints (network order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpError {
    /// The ICMP message: from the ICMP header to the end of the IP packet.
    pub icmp_off: usize,
    pub icmp_len: usize,
    /// The quoted IPv4 header, and its L4 header (ports first).
    pub quote_off: usize,
    pub quote_l4_off: usize,
    pub proto: u8,
    /// The quoted packet's family, and its addresses (IPv4 in word 0).
    pub family: u8,
    pub saddr: [u32; 4],
    pub daddr: [u32; 4],
    pub sport: u16,
    pub dport: u16,
}

impl IcmpError {
    /// The connection the quoted packet belongs to: the quote is a packet
    /// going the other way (the VIP's to the client, or the client's to a
    /// NAT real), so its endpoints are swapped.
    #[must_use]
    pub fn conn_key(&self) -> ConnKey {
        ConnKey {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            family: self.family,
            _pad: [0; 2],
        }
    }
}

/// Why an ICMP packet is not an error about a connection. All of it is the
/// kernel's: IPVS, too, accepts what it cannot use (`NF_ACCEPT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotAnError {
    /// Echo, timestamps, redirects...: not one of the three error types
    /// IPVS relays (destination unreachable, source quench, time exceeded).
    OtherType,
    /// The message is too short for an IPv4 header and 8 bytes of its
    /// payload, the quoted header is not IPv4 with an IHL of at least 5,
    /// or the message is longer than [`MAX_ICMP_LEN`].
    BadQuote,
    /// The quoted packet is neither TCP nor UDP (an IP-in-IP packet of our
    /// own tunnel, for one), or is a fragment past the first: no ports.
    NoPorts,
}

/// Reads the ICMP message that `outer` (from [`crate::net::reread_ipv4`]
/// or [`crate::net::parse_ipv4`], protocol ICMP) carries. Only the quote's IP version, IHL, protocol,
/// fragment offset and ports are read: the quote is whatever the sender
/// saw, and the connection lookup decides whether it means anything.
#[inline(always)]
pub fn parse_error(pkt: &impl Packet, outer: &Flow) -> Result<IcmpError, NotAnError> {
    let (icmp_off, icmp_len) = error_message(pkt, outer, |kind| {
        matches!(kind, ICMP_DEST_UNREACH | ICMP_SOURCE_QUENCH | ICMP_TIME_EXCEEDED)
    })?;
    let quote_off = icmp_off + ICMP_HLEN;
    let quote: *const Ipv4Hdr = ptr_at(pkt, quote_off).ok_or(NotAnError::BadQuote)?;
    // SAFETY: ptr_at checked the bounds.
    let quote = unsafe { *quote };
    let quote_ihl = usize::from(quote.version_ihl & 0x0f) * 4;
    if quote.version_ihl >> 4 != 4 || quote_ihl < IPV4_HLEN || ICMP_HLEN + quote_ihl + 8 > icmp_len {
        return Err(NotAnError::BadQuote);
    }
    if u16::from_be(quote.frag_off) & crate::net::IP_OFFSET != 0 || !matches!(quote.proto, IPPROTO_TCP | IPPROTO_UDP) {
        return Err(NotAnError::NoPorts);
    }
    let quote_l4_off = quote_off + quote_ihl;
    let [sport, dport] = quoted_ports(pkt, quote_l4_off)?;
    Ok(IcmpError {
        icmp_off,
        icmp_len,
        quote_off,
        quote_l4_off,
        proto: quote.proto,
        family: crate::AF_INET,
        saddr: [quote.saddr, 0, 0, 0],
        daddr: [quote.daddr, 0, 0, 0],
        sport,
        dport,
    })
}

/// The ICMP message of `outer`: its offset and length, when its type is
/// one `relayed` names and its length one whose checksum is summed.
#[inline(always)]
fn error_message(pkt: &impl Packet, outer: &Flow, relayed: impl Fn(u8) -> bool) -> Result<(usize, usize), NotAnError> {
    let icmp_off = outer.l4_off;
    let icmp_len = usize::from(outer.ip_len) - (icmp_off - ETH_HLEN);
    // ICMP's and ICMPv6's type and code. (A one-byte read is what the
    // verifier cannot prove inside the packet.)
    let kind_code: *const [u8; 2] = ptr_at(pkt, icmp_off).ok_or(NotAnError::BadQuote)?;
    // SAFETY: ptr_at checked the bounds.
    if !relayed(unsafe { (*kind_code)[0] }) {
        return Err(NotAnError::OtherType);
    }
    if icmp_len > MAX_ICMP_LEN {
        return Err(NotAnError::BadQuote);
    }
    Ok((icmp_off, icmp_len))
}

/// The quoted ports, source and destination, at `quote_l4_off`.
#[inline(always)]
fn quoted_ports(pkt: &impl Packet, quote_l4_off: usize) -> Result<[u16; 2], NotAnError> {
    let ports: *const [u16; 2] = ptr_at(pkt, quote_l4_off).ok_or(NotAnError::BadQuote)?;
    // SAFETY: ptr_at checked the bounds.
    Ok(unsafe { *ports })
}

/// The ICMPv6 errors IPVS relays (`ip_vs_in_icmp_v6`): destination
/// unreachable, packet too big, time exceeded.
pub const ICMPV6_DEST_UNREACH: u8 = 1;
pub const ICMPV6_TIME_EXCEED: u8 = 3;

/// [`parse_error`] for ICMPv6, in the message that `outer` (from
/// [`crate::net::parse_ipv6`], next header 58) carries. The quote's
/// extension headers are stepped over by the rules the packet's own are
/// (`ipv6_extensions`), as `ip_vs_in_icmp_v6` finds the quoted transport
/// header; one that cannot be stepped over, or a fragment past the first,
/// names no connection (`NoPorts`), and one cut short by the quote's end is
/// a `BadQuote`.
#[inline(always)]
pub fn parse_error6(pkt: &impl Packet, outer: &Flow) -> Result<IcmpError, NotAnError> {
    let (icmp_off, icmp_len) = error_message(pkt, outer, |kind| {
        matches!(kind, ICMPV6_DEST_UNREACH | ICMPV6_PKT_TOOBIG | ICMPV6_TIME_EXCEED)
    })?;
    if ICMP_HLEN + IPV6_HLEN + 8 > icmp_len {
        return Err(NotAnError::BadQuote);
    }
    let quote_off = icmp_off + ICMP_HLEN;
    let quote: *const Ipv6Hdr = ptr_at(pkt, quote_off).ok_or(NotAnError::BadQuote)?;
    // SAFETY: ptr_at checked the bounds.
    let quote = unsafe { *quote };
    if u32::from_be(quote.vtc_flow) >> 28 != 6 {
        return Err(NotAnError::BadQuote);
    }
    let ext = match ipv6_extensions(pkt, quote_off, quote.nexthdr, icmp_len - ICMP_HLEN) {
        Ok(ext) if !ext.later_fragment => ext,
        Err(ParseError::BadHeader) => return Err(NotAnError::BadQuote),
        _ => return Err(NotAnError::NoPorts),
    };
    if !matches!(ext.next, IPPROTO_TCP | IPPROTO_UDP) {
        return Err(NotAnError::NoPorts);
    }
    if ICMP_HLEN + ext.off + 8 > icmp_len {
        return Err(NotAnError::BadQuote);
    }
    let quote_l4_off = quote_off + ext.off;
    let [sport, dport] = quoted_ports(pkt, quote_l4_off)?;
    Ok(IcmpError {
        icmp_off,
        icmp_len,
        quote_off,
        quote_l4_off,
        proto: ext.next,
        family: crate::AF_INET6,
        saddr: quote.saddr,
        daddr: quote.daddr,
        sport,
        dport,
    })
}

/// The one's-complement sum of the `len` packet bytes at `off` (odd
/// lengths padded with a zero byte; `off` >= 1), or `None` when they are
/// not all in the packet or `len` is over `MAX`. Each 16-bit word is read through
/// [`ptr_at`], which is what the verifier needs, and the loop is bounded by
/// `MAX`.
#[inline(always)]
pub fn sum<const MAX: usize>(pkt: &impl Packet, off: usize, len: usize) -> Option<u32> {
    if len > MAX {
        return None;
    }
    let mut total = 0u32;
    // The odd byte first: after the loop nothing may depend on `len`, or
    // the verifier walks the rest of the program once per exit of the loop.
    if len % 2 == 1 {
        // The word that ends with the last byte: a one-byte read at the
        // very end of the packet is what the verifier cannot prove safe.
        let pair: *const [u8; 2] = ptr_at(pkt, (off + len - 2) & 0xfff)?;
        // SAFETY: ptr_at checked the bounds. In memory order the pad byte
        // follows the last byte, and native-order words add up to the same
        // folded checksum.
        total += u32::from(u16::from_ne_bytes([unsafe { (*pair)[1] }, 0]));
    }
    let mut i = 0;
    while i < MAX / 2 {
        if 2 * i + 2 > len {
            break;
        }
        // The mask changes nothing (offsets stay far below 4096) but keeps
        // LLVM from turning the index into a negative count up to zero,
        // which the verifier refuses as a packet offset.
        let word: *const u16 = ptr_at(pkt, (off + 2 * i) & 0xfff)?;
        // SAFETY: as above.
        total += u32::from(unsafe { *word });
        i += 1;
    }
    Some(total)
}

/// Whether the ICMP message of `error` sums to 0xffff: its checksum is
/// right. IPVS drops a relayed error whose checksum is wrong. ICMPv6's
/// covers the pseudo-header of `outer` as well.
#[inline(always)]
pub fn checksum_ok(pkt: &impl Packet, outer: &Flow, error: &IcmpError) -> bool {
    let pseudo = if error.family == crate::AF_INET6 {
        pseudo_header_sum6(&outer.saddr, &outer.daddr, error.icmp_len as u16, IPPROTO_ICMPV6)
    } else {
        0
    };
    sum::<MAX_ICMP_LEN>(pkt, error.icmp_off, error.icmp_len).is_some_and(|s| csum::fold(s + pseudo) == 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ipv6_pseudo_header_sums_as_rfc_8200_lays_it_out() {
        let src = [0x20u8, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        let dst = [0x20u8, 1, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let mut bytes = std::vec::Vec::new();
        bytes.extend_from_slice(&src);
        bytes.extend_from_slice(&dst);
        bytes.extend_from_slice(&48u32.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 58]);
        let want = crate::csum::fold(crate::csum::sum_be(&bytes, 0));
        let got = crate::csum::fold(pseudo_header_sum6(&crate::v6_addr(src), &crate::v6_addr(dst), 48, 58));
        // Native-order words sum to the byte-swapped big-endian sum.
        assert_eq!(u16::from_be(got), want);
    }
    use crate::net::{Aligned, ETH_P_IP, ETH_P_IPV6, ParseError, parse, parse6, parse_ipv4, parse_ipv6};

    #[test]
    fn an_icmpv6_error_names_the_connection_from_its_quote() {
        let vip = [0x20u8, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        let client = [0x20u8, 1, 0x0d, 0xb8, 0, 0xc1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        let router = [0x20u8, 1, 0x0d, 0xb8, 0, 0xc1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        // The VIP's segment to the client, quoted: IPv6 header + 8 bytes.
        let mut quote = std::vec![0x60u8, 0, 0, 0, 0, 20, IPPROTO_TCP, 63];
        quote.extend_from_slice(&vip);
        quote.extend_from_slice(&client);
        quote.extend_from_slice(&80u16.to_be_bytes());
        quote.extend_from_slice(&40000u16.to_be_bytes());
        quote.extend_from_slice(&[0, 0, 0, 1]);
        let mut icmp = std::vec![ICMPV6_PKT_TOOBIG, 0, 0, 0, 0, 0, 0x05, 0x00];
        icmp.extend_from_slice(&quote);
        let mut frame = std::vec![0u8; 12];
        frame.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
        frame.extend_from_slice(&[0x60, 0, 0, 0]);
        frame.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        frame.extend_from_slice(&[IPPROTO_ICMPV6, 64]);
        frame.extend_from_slice(&router);
        frame.extend_from_slice(&vip);
        let mut pseudo = std::vec::Vec::new();
        pseudo.extend_from_slice(&router);
        pseudo.extend_from_slice(&vip);
        pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, IPPROTO_ICMPV6]);
        let check = !crate::csum::fold(crate::csum::sum_be(&icmp, crate::csum::sum_be(&pseudo, 0)));
        icmp[2..4].copy_from_slice(&check.to_be_bytes());
        frame.extend_from_slice(&icmp);
        let aligned = Aligned::new(&frame);
        let pkt = aligned.bytes();
        assert_eq!(parse6(&pkt), Err(ParseError::Icmp));
        let outer = parse_ipv6(&pkt).unwrap();
        let error = parse_error6(&pkt, &outer).unwrap();
        let key = error.conn_key();
        assert_eq!((key.saddr, key.daddr), (crate::v6_addr(client), crate::v6_addr(vip)));
        assert_eq!((u16::from_be(key.sport), u16::from_be(key.dport), key.family), (40000, 80, crate::AF_INET6));
        assert!(checksum_ok(&pkt, &outer, &error), "the checksum covers the pseudo-header");
        let mut bad = frame.clone();
        bad[14 + 8] ^= 1; // the outer source: in the pseudo-header only
        let bad = Aligned::new(&bad);
        let bad_outer = parse_ipv6(&bad.bytes()).unwrap();
        assert!(!checksum_ok(&bad.bytes(), &bad_outer, &error));
        // Informational messages and quotes without ports are the kernel's.
        frame[14 + 40] = 128;
        assert_eq!(parse_error6(&Aligned::new(&frame).bytes(), &outer), Err(NotAnError::OtherType));
        frame[14 + 40] = ICMPV6_PKT_TOOBIG;
        frame[14 + 40 + 8 + 6] = 44;
        assert_eq!(parse_error6(&Aligned::new(&frame).bytes(), &outer), Err(NotAnError::NoPorts));
    }

    /// An ICMPv6 "packet too big" from a router to the VIP, quoting the
    /// VIP's packet to a client whose IPv6 header has next header `first`
    /// and is followed by `rest` (extension headers, then TCP ports).
    fn too_big_quoting(first: u8, rest: &[u8]) -> std::vec::Vec<u8> {
        let vip = [0x20u8, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        let client = [0x20u8, 1, 0x0d, 0xb8, 0, 0xc1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        let mut icmp = std::vec![ICMPV6_PKT_TOOBIG, 0, 0, 0, 0, 0, 0x05, 0x00, 0x60, 0, 0, 0, 0, rest.len() as u8, first, 63];
        icmp.extend_from_slice(&vip);
        icmp.extend_from_slice(&client);
        icmp.extend_from_slice(rest);
        let mut frame = std::vec![0u8; 12];
        frame.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
        frame.extend_from_slice(&[0x60, 0, 0, 0]);
        frame.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        frame.extend_from_slice(&[IPPROTO_ICMPV6, 64]);
        frame.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 0xc1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        frame.extend_from_slice(&vip);
        frame.extend_from_slice(&icmp);
        frame
    }

    fn parse_error6_of(frame: &[u8]) -> Result<IcmpError, NotAnError> {
        let aligned = Aligned::new(frame);
        let pkt = aligned.bytes();
        parse_error6(&pkt, &parse_ipv6(&pkt).unwrap())
    }

    #[test]
    fn an_icmpv6_quote_with_extension_headers_names_the_connection() {
        let ports = [0, 80, 0x9c, 0x40, 0, 0, 0, 1];
        // Hop-by-hop (8 bytes, PadN), then TCP.
        let mut hop = std::vec![IPPROTO_TCP, 0, 1, 4, 0, 0, 0, 0];
        hop.extend_from_slice(&ports);
        let error = parse_error6_of(&too_big_quoting(0, &hop)).unwrap();
        let quote_off = 14 + 40 + 8;
        assert_eq!((error.quote_off, error.quote_l4_off, error.proto), (quote_off, quote_off + 48, IPPROTO_TCP));
        assert_eq!((u16::from_be(error.conn_key().sport), u16::from_be(error.conn_key().dport)), (40000, 80));
        // Destination options (16 bytes), then a first fragment of UDP.
        let mut dest_frag = std::vec![44, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        dest_frag.extend_from_slice(&[IPPROTO_UDP, 0, 0, 1, 0, 0, 0, 9]);
        dest_frag.extend_from_slice(&ports);
        let error = parse_error6_of(&too_big_quoting(60, &dest_frag)).unwrap();
        assert_eq!((error.quote_l4_off, error.proto), (quote_off + 40 + 16 + 8, IPPROTO_UDP));
        // A fragment past the first, a routing header with segments left,
        // and a quote that ends inside the ports or inside a header.
        let mut later = std::vec![IPPROTO_TCP, 0, 0, 8, 0, 0, 0, 9];
        later.extend_from_slice(&ports);
        assert_eq!(parse_error6_of(&too_big_quoting(44, &later)), Err(NotAnError::NoPorts));
        let mut routing = std::vec![IPPROTO_TCP, 0, 0, 1, 0, 0, 0, 0];
        routing.extend_from_slice(&ports);
        assert_eq!(parse_error6_of(&too_big_quoting(43, &routing)), Err(NotAnError::NoPorts));
        assert_eq!(parse_error6_of(&too_big_quoting(0, &hop[..12])), Err(NotAnError::BadQuote));
        let long_hop = [IPPROTO_TCP, 2, 1, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse_error6_of(&too_big_quoting(0, &long_hop)), Err(NotAnError::BadQuote));
    }

    /// An IPv4 header (20 bytes) with a correct checksum.
    fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], payload_len: usize) -> std::vec::Vec<u8> {
        let mut h = std::vec![0u8; 20];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&((20 + payload_len) as u16).to_be_bytes());
        h[8] = 64;
        h[9] = proto;
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        let c = !csum::fold(csum::sum_be(&h, 0));
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }

    const VIP: [u8; 4] = [10, 100, 0, 100];
    const CLIENT: [u8; 4] = [198, 51, 100, 7];
    const ROUTER: [u8; 4] = [192, 0, 2, 1];

    /// A frame carrying an ICMP `kind`/`code` from ROUTER to the VIP that
    /// quotes `quote` (an IP packet, cut as the sender chose).
    fn icmp_frame(kind: u8, code: u8, quote: &[u8]) -> std::vec::Vec<u8> {
        let mut icmp = std::vec![kind, code, 0, 0, 0, 0, 0x05, 0xdc];
        icmp.extend_from_slice(quote);
        let c = !csum::fold(csum::sum_be(&icmp, 0));
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut f = std::vec![0u8; 12];
        f.extend_from_slice(&ETH_P_IP.to_be_bytes());
        f.extend(ipv4(crate::IPPROTO_ICMP, ROUTER, VIP, icmp.len()));
        f.extend(icmp);
        f
    }

    /// The VIP's TCP segment to the client, as a router quotes it: the IP
    /// header and the first 8 bytes of TCP.
    fn quoted_tcp() -> std::vec::Vec<u8> {
        let mut q = ipv4(IPPROTO_TCP, VIP, CLIENT, 20);
        q.extend_from_slice(&80u16.to_be_bytes());
        q.extend_from_slice(&40000u16.to_be_bytes());
        q.extend_from_slice(&[0, 0, 0, 1]);
        q
    }

    fn parse_frame(frame: &[u8]) -> Result<IcmpError, NotAnError> {
        let aligned = Aligned::new(frame);
        let pkt = aligned.bytes();
        assert_eq!(parse(&pkt), Err(ParseError::Icmp));
        let outer = crate::net::reread_ipv4(&pkt).unwrap();
        assert_eq!(Some(outer), parse_ipv4(&pkt).ok(), "the same as a full parse");
        parse_error(&pkt, &outer)
    }

    #[test]
    fn an_error_names_the_connection_from_its_quote() {
        let frame = icmp_frame(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, &quoted_tcp());
        let error = parse_frame(&frame).unwrap();
        assert_eq!((error.icmp_off, error.icmp_len, error.quote_off, error.quote_l4_off), (34, 36, 42, 62));
        let key = error.conn_key();
        assert_eq!(key.saddr[0].to_ne_bytes(), CLIENT, "the client sent the connection's first packet");
        assert_eq!(key.daddr[0].to_ne_bytes(), VIP);
        assert_eq!((u16::from_be(key.sport), u16::from_be(key.dport)), (40000, 80));
        assert_eq!(key.proto, IPPROTO_TCP);
        let aligned = Aligned::new(&frame);
        assert!(checksum_ok(&aligned.bytes(), &parse_ipv4(&aligned.bytes()).unwrap(), &error));
        let mut bad = frame.clone();
        bad[40] ^= 1;
        let bad_bytes = Aligned::new(&bad);
        assert!(!checksum_ok(&bad_bytes.bytes(), &parse_ipv4(&bad_bytes.bytes()).unwrap(), &error), "a flipped bit fails the checksum");
    }

    #[test]
    fn only_errors_with_ports_are_relayed() {
        let quote = quoted_tcp();
        let echo = icmp_frame(8, 0, &quote);
        assert_eq!(parse_frame(&echo), Err(NotAnError::OtherType));
        assert!(parse_frame(&icmp_frame(ICMP_TIME_EXCEEDED, 0, &quote)).is_ok());
        assert!(parse_frame(&icmp_frame(ICMP_SOURCE_QUENCH, 0, &quote)).is_ok());
        assert_eq!(parse_frame(&icmp_frame(ICMP_DEST_UNREACH, 3, &quote[..27])), Err(NotAnError::BadQuote), "7 bytes of L4");
        let mut v6 = quote.clone();
        v6[0] = 0x65;
        assert_eq!(parse_frame(&icmp_frame(ICMP_DEST_UNREACH, 3, &v6)), Err(NotAnError::BadQuote), "version");
        let mut ipip = quote.clone();
        ipip[9] = crate::IPPROTO_IPIP;
        assert_eq!(parse_frame(&icmp_frame(ICMP_DEST_UNREACH, 3, &ipip)), Err(NotAnError::NoPorts), "IP-in-IP");
        let mut later_fragment = quote.clone();
        later_fragment[7] = 1;
        assert_eq!(parse_frame(&icmp_frame(ICMP_DEST_UNREACH, 3, &later_fragment)), Err(NotAnError::NoPorts));
        let mut first_fragment = quote;
        first_fragment[6] = 0x20;
        assert!(parse_frame(&icmp_frame(ICMP_DEST_UNREACH, 3, &first_fragment)).is_ok(), "MF, offset 0");
    }

    #[test]
    fn the_budget_allows_a_burst_then_the_rate() {
        let mut budget = IcmpBudget::default();
        let start = 10_000_000_000;
        let burst = (0..100).filter(|_| budget.take(start)).count();
        assert_eq!(burst, 50, "a full bucket at first, then empty");
        assert!(!budget.take(start + 999_999), "under a millisecond later");
        assert!(budget.take(start + 1_000_000), "a millisecond buys one");
        let second = (1..=2000u64).filter(|ms| budget.take(start + 1_000_000 + ms * 500_000)).count();
        assert_eq!(second, 1000, "1000 in a second of tries every half millisecond: every other one");
        assert_eq!((0..100).filter(|_| budget.take(u64::MAX / 2)).count(), 50, "refilled to the burst, no more");
    }

    #[test]
    fn sum_matches_the_reference_for_every_length() {
        let bytes: std::vec::Vec<u8> = (0..64u8).map(|b| b.wrapping_mul(37)).collect();
        let aligned = Aligned::new(&bytes);
        for len in 0..=40 {
            let got = sum::<64>(&aligned.bytes(), 2, len).map(csum::fold);
            let want = csum::fold(csum::sum_be(&bytes[2..2 + len], 0));
            assert_eq!(got.map(u16::from_be), Some(want), "len {len}");
        }
        assert_eq!(sum::<64>(&aligned.bytes(), 60, 8), None, "past the end");
        assert_eq!(sum::<16>(&aligned.bytes(), 0, 18), None, "over MAX");
    }
}
