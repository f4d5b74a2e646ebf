//! Wire layouts of the headers the data plane touches, one bounds-checked
//! way to reach them, and the parser that turns a frame into a [`Flow`].
//!
//! The parser runs unchanged in XDP (over `XdpContext`) and on the host (over
//! a byte slice) so that the unit tests here check what the kernel runs.

use core::mem::size_of;

use crate::{AF_INET, AF_INET6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_HLEN: usize = 14;
pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// Network order.
    pub proto: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub saddr: u32,
    pub daddr: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv6Hdr {
    /// Version (4 bits), traffic class (8), flow label (20); network order.
    pub vtc_flow: u32,
    /// Network order.
    pub payload_len: u16,
    pub nexthdr: u8,
    pub hop_limit: u8,
    pub saddr: [u32; 4],
    pub daddr: [u32; 4],
}

/// Where the addresses sit in an IPv6 header.
pub const IPV6_SADDR_OFF: usize = 8;
pub const IPV6_DADDR_OFF: usize = 24;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpHdr {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack_seq: u32,
    pub doff_res: u8,
    pub flags: u8,
    pub window: u16,
    pub check: u16,
    pub urg_ptr: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpHdr {
    pub sport: u16,
    pub dport: u16,
    pub len: u16,
    pub check: u16,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;

/// Offset of the checksum field inside each L4 header.
pub const TCP_CHECK_OFF: usize = 16;
pub const UDP_CHECK_OFF: usize = 6;

/// A packet buffer: the half-open byte range `[start, end)`.
pub trait Packet {
    fn start(&self) -> usize;
    fn end(&self) -> usize;
}

/// A pointer to a `T` at `offset`, or `None` when the packet is too short.
///
/// This is the only way the data plane reaches packet bytes; the comparison
/// against `end` is what the verifier needs to see before every access.
#[inline(always)]
pub fn ptr_at<T>(pkt: &impl Packet, offset: usize) -> Option<*mut T> {
    let start = pkt.start();
    if start + offset + size_of::<T>() > pkt.end() {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// What the data plane needs to know about a packet, parsed once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    pub family: u8,
    pub proto: u8,
    /// Network order.
    pub saddr: [u32; 4],
    /// Network order.
    pub daddr: [u32; 4],
    /// Network order.
    pub sport: u16,
    /// Network order.
    pub dport: u16,
    /// TCP flags, 0 for UDP.
    pub tcp_flags: u8,
    pub ttl: u8,
    /// Where the L4 header starts.
    pub l4_off: usize,
    /// The IP packet's length (IPv4's total length, IPv6's payload length
    /// plus its fixed header): what IPVS counts as the packet's bytes (the
    /// frame may carry Ethernet padding beyond it).
    pub ip_len: u16,
    /// The identification, network order (IPv4's 16 bits, IPv6's fragment
    /// header's 32): with the addresses and the protocol, what the
    /// fragments of one datagram share.
    pub ip_id: u32,
    /// The first fragment of a datagram (more-fragments set, offset 0): it
    /// carries the ports, and the later fragments follow it
    /// (`maps::FragKey`).
    pub first_fragment: bool,
}

/// Why a frame is not a [`Flow`].
///
/// The rules, checked in this order (the first that applies wins):
///
/// | frame                                                        | error         |
/// |--------------------------------------------------------------|---------------|
/// | shorter than an Ethernet header (0..=13 bytes)               | `Truncated`   |
/// | EtherType not IPv4 (ARP, IPv6, VLAN...)                      | `NotIp`       |
/// | fewer than 20 bytes after the Ethernet header                | `Truncated`   |
/// | version not 4, IHL < 5, total length < IHL                   | `BadHeader`   |
/// | total length > the bytes after the Ethernet header           | `Truncated`   |
/// | header checksum wrong (over the IHL, options included)       | `BadChecksum` |
/// | options that do not parse as `ip_options_compile` walks them | `BadOptions`  |
/// | a fragment offset: a fragment past the first, without ports  | `Fragment`    |
/// | ICMP (see `icmp::parse_error` for the rest)                  | `Icmp`        |
/// | neither TCP nor UDP                                          | `NotTcpUdp`   |
/// | total length too short for the TCP (20) / UDP (8) header     | `BadHeader`   |
/// | TCP data offset < 5 or past the total length                 | `BadHeader`   |
/// | UDP length < 8 or past the total length (in a first fragment, | `BadHeader`   |
/// | which carries only part of the datagram, < 8 alone)          |               |
///
/// A first fragment (more-fragments set, offset 0) is a flow like any
/// other packet (`Flow::first_fragment`): it holds the ports, and its TCP
/// header must be whole in it.
///
/// A total length shorter than the frame is fine: the rest is Ethernet
/// padding (a 60-byte minimum frame), left as it is. Well-formed options
/// are parsed past and forwarded unchanged. The L4 checksum is not checked
/// (neither does IPVS): a NAT rewrite updates it incrementally, so a wrong
/// one stays wrong and the real drops the segment.
///
/// The header errors are what the kernel's `ip_rcv` (and TCP/UDP receive)
/// would drop anyway, so the data plane drops them whatever their
/// destination; nothing it forwards or rewrites is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Neither IPv4 nor IPv6 (the kernel's business); from [`parse`], not
    /// IPv4.
    NotIp,
    /// IPv4, but neither TCP nor UDP nor ICMP.
    NotTcpUdp,
    /// ICMP: an error may be about a connection (`icmp::parse_error`).
    Icmp,
    /// A fragment past the first: no ports to key on.
    Fragment,
    /// A header runs past the end of the frame.
    Truncated,
    /// A header that cannot be valid (IHL < 5, version, TCP doff < 5, a total
    /// length shorter than the headers, a UDP length outside the packet).
    BadHeader,
    /// The IPv4 header checksum is wrong.
    BadChecksum,
    /// The IPv4 options are not a well-formed list.
    BadOptions,
    /// IPv6 extension headers the data plane does not walk: more than
    /// [`MAX_IPV6_EXT_HEADERS`], or a routing header with segments left
    /// (the packet is not at its final destination yet). The kernel's.
    Extension,
}

/// Option bytes an IPv4 header can carry (IHL 15).
pub const MAX_IPV4_OPTIONS: usize = 40;
const IPOPT_END: u8 = 0;
const IPOPT_NOOP: u8 = 1;

/// Whether the IPv4 header (with its options) at `ETH_HLEN`, `ihl` bytes
/// long, sums to 0xffff: its checksum is right. The caller has checked that
/// `ihl` bytes are in the frame; every read is bounds checked again for the
/// verifier.
#[inline(always)]
fn ipv4_checksum_ok(pkt: &impl Packet, ihl: usize) -> Result<bool, ParseError> {
    let fixed: *const [u16; 10] = ptr_at(pkt, ETH_HLEN).ok_or(ParseError::Truncated)?;
    // SAFETY: ptr_at checked the bounds.
    let fixed = unsafe { *fixed };
    let mut sum = 0u32;
    for w in fixed {
        sum += u32::from(w);
    }
    let mut i = 0;
    while i < MAX_IPV4_OPTIONS / 4 {
        let off = IPV4_HLEN + i * 4;
        if off >= ihl {
            break;
        }
        let w: *const u32 = ptr_at(pkt, ETH_HLEN + off).ok_or(ParseError::Truncated)?;
        // SAFETY: as above.
        let w = unsafe { *w };
        sum += (w & 0xffff) + (w >> 16);
        i += 1;
    }
    Ok(crate::csum::fold(sum) == 0xffff)
}

/// Walks the options as the kernel's `ip_options_compile` does: END stops
/// the walk (the rest is padding), NOOP is one byte, and any other option
/// is a type, a length of at least 2 that stays inside the options, and
/// its data. `len` is the options' length (IHL*4 - 20, at most 40).
#[inline(always)]
fn ipv4_options_ok(pkt: &impl Packet, len: usize) -> Result<bool, ParseError> {
    let len = len & 0x3f;
    let mut pos = 0usize;
    // Each step consumes at least one byte.
    let mut steps = 0;
    while steps < MAX_IPV4_OPTIONS {
        steps += 1;
        if pos >= len {
            return Ok(true);
        }
        let kind: *const u8 = ptr_at(pkt, ETH_HLEN + IPV4_HLEN + pos).ok_or(ParseError::Truncated)?;
        // SAFETY: ptr_at checked the bounds.
        match unsafe { *kind } {
            IPOPT_END => return Ok(true),
            IPOPT_NOOP => {
                pos += 1;
                continue;
            }
            _ => {}
        }
        if pos + 2 > len {
            return Ok(false);
        }
        let optlen: *const u8 = ptr_at(pkt, ETH_HLEN + IPV4_HLEN + pos + 1).ok_or(ParseError::Truncated)?;
        // SAFETY: as above.
        let optlen = usize::from(unsafe { *optlen });
        if optlen < 2 || pos + optlen > len {
            return Ok(false);
        }
        pos += optlen;
    }
    Ok(true)
}

/// Parses Ethernet and IPv4, checking everything up to the fragment rule
/// of [`ParseError`]: a [`Flow`] with the addresses, protocol, TTL, total
/// length and `l4_off`, and no ports yet.
#[inline(always)]
pub fn parse_ipv4(pkt: &impl Packet) -> Result<Flow, ParseError> {
    let eth: *mut EthHdr = ptr_at(pkt, 0).ok_or(ParseError::Truncated)?;
    // SAFETY: ptr_at checked that the header lies inside the packet.
    let eth_proto = u16::from_be(unsafe { (*eth).proto });
    if eth_proto != ETH_P_IP {
        return Err(ParseError::NotIp);
    }
    let ip: *mut Ipv4Hdr = ptr_at(pkt, ETH_HLEN).ok_or(ParseError::Truncated)?;
    // SAFETY: as above.
    let ip = unsafe { *ip };
    if ip.version_ihl >> 4 != 4 {
        return Err(ParseError::BadHeader);
    }
    let ihl = usize::from(ip.version_ihl & 0x0f) * 4;
    let tot_len = usize::from(u16::from_be(ip.tot_len));
    if ihl < IPV4_HLEN || tot_len < ihl {
        return Err(ParseError::BadHeader);
    }
    // Opaque to the compiler: were it not, it could prove the bounds checks
    // of the reads below redundant from this comparison and drop them, and
    // the verifier, which cannot follow this arithmetic, would refuse the
    // reads.
    let frame_len = core::hint::black_box(pkt.end() - pkt.start());
    if ETH_HLEN + tot_len > frame_len {
        return Err(ParseError::Truncated);
    }
    if !ipv4_checksum_ok(pkt, ihl)? {
        return Err(ParseError::BadChecksum);
    }
    if ihl > IPV4_HLEN && !ipv4_options_ok(pkt, ihl - IPV4_HLEN)? {
        return Err(ParseError::BadOptions);
    }
    let frag_off = u16::from_be(ip.frag_off);
    if frag_off & IP_OFFSET != 0 {
        return Err(ParseError::Fragment);
    }
    Ok(ipv4_flow(&ip, ihl, frag_off))
}

/// More-fragments, and the fragment offset, in `Ipv4Hdr::frag_off`.
pub const IP_MF: u16 = 0x2000;
pub const IP_OFFSET: u16 = 0x1fff;

#[inline(always)]
fn ipv4_flow(ip: &Ipv4Hdr, ihl: usize, frag_off: u16) -> Flow {
    Flow {
        ip_len: u16::from_be(ip.tot_len),
        family: AF_INET,
        proto: ip.proto,
        saddr: [ip.saddr, 0, 0, 0],
        daddr: [ip.daddr, 0, 0, 0],
        ttl: ip.ttl,
        l4_off: ETH_HLEN + ihl,
        ip_id: u32::from(ip.id),
        first_fragment: frag_off & (IP_MF | IP_OFFSET) == IP_MF,
        ..Flow::default()
    }
}

/// The IPv4 header of a packet that [`parse`] has already checked, read
/// again by a program the director tail-calls (ICMP, later fragments)
/// without walking its options and checksum a second time: the verifier
/// would follow every outcome of those loops through the rest of the
/// program. No ports are read.
#[inline(always)]
pub fn reread_ipv4(pkt: &impl Packet) -> Option<Flow> {
    let ip: *const Ipv4Hdr = ptr_at(pkt, ETH_HLEN)?;
    // SAFETY: ptr_at checked the bounds.
    let ip = unsafe { *ip };
    let ihl = usize::from(ip.version_ihl & 0x0f) * 4;
    if ihl < IPV4_HLEN || usize::from(u16::from_be(ip.tot_len)) < ihl {
        return None;
    }
    Some(ipv4_flow(&ip, ihl, u16::from_be(ip.frag_off)))
}

pub const NEXTHDR_HOP: u8 = 0;
pub const NEXTHDR_ROUTING: u8 = 43;
pub const NEXTHDR_FRAGMENT: u8 = 44;
pub const NEXTHDR_DEST: u8 = 60;
/// Extension headers walked before the upper-layer header; a packet with
/// more goes to the kernel (`ParseError::Extension`). Four covers every
/// order RFC 8200 recommends with one of each that a VIP's traffic carries
/// (hop-by-hop, destination options, routing, fragment).
pub const MAX_IPV6_EXT_HEADERS: usize = 4;

/// The IPv6 fragment header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv6FragHdr {
    pub nexthdr: u8,
    pub _reserved: u8,
    /// Offset (13 bits, in 8-byte units), 2 reserved bits, more-fragments;
    /// network order.
    pub frag_off: u16,
    /// Network order.
    pub id: u32,
}

/// Parses Ethernet, IPv6 and its extension headers: a [`Flow`] with the
/// addresses, the upper-layer protocol, the hop limit, the packet's length
/// and `l4_off`, and no ports yet. The rules, in order:
///
/// | frame                                                        | error       |
/// |--------------------------------------------------------------|-------------|
/// | shorter than an Ethernet header                              | `Truncated` |
/// | EtherType not IPv6                                           | `NotIp`     |
/// | fewer than 40 bytes after the Ethernet header                | `Truncated` |
/// | version not 6; payload length 0 (a jumbogram)                | `BadHeader` |
/// | payload length past the bytes after the header               | `Truncated` |
/// | an extension header that runs past the payload               | `BadHeader` |
/// | a second fragment header                                     | `BadHeader` |
/// | a routing header with segments left; more than [`MAX_IPV6_EXT_HEADERS`] extension headers | `Extension` |
/// | a fragment header with an offset: a fragment past the first  | `Fragment`  |
///
/// Hop-by-hop, destination options and routing headers (with no segments
/// left) are stepped over, as the kernel steps over them for a packet
/// addressed to itself; a fragment header with offset 0 and more-fragments
/// makes a first fragment (`Flow::first_fragment`, its 32-bit id in
/// `ip_id`); one without more-fragments is an atomic fragment, a whole
/// datagram. Then [`parse6`] reads the upper-layer header as [`parse`]
/// does for IPv4.
#[inline(always)]
pub fn parse_ipv6(pkt: &impl Packet) -> Result<Flow, ParseError> {
    match ipv6_headers(pkt)? {
        (_, true) => Err(ParseError::Fragment),
        (flow, false) => Ok(flow),
    }
}

/// The IPv6 header of a fragment past the first, which [`parse6`] has
/// already checked, read again by the program the director tail-calls for
/// it: the addresses, the id and the protocol its first fragment carries.
#[inline(always)]
pub fn reread_ipv6(pkt: &impl Packet) -> Option<Flow> {
    match ipv6_headers(pkt) {
        Ok((flow, true)) => Some(flow),
        _ => None,
    }
}

/// [`parse_ipv6`]'s walk; the flag says the packet is a fragment past the
/// first (its flow is then the fragment header's: id and protocol).
#[inline(always)]
fn ipv6_headers(pkt: &impl Packet) -> Result<(Flow, bool), ParseError> {
    let eth: *mut EthHdr = ptr_at(pkt, 0).ok_or(ParseError::Truncated)?;
    // SAFETY: ptr_at checked that the header lies inside the packet.
    if u16::from_be(unsafe { (*eth).proto }) != ETH_P_IPV6 {
        return Err(ParseError::NotIp);
    }
    let ip: *mut Ipv6Hdr = ptr_at(pkt, ETH_HLEN).ok_or(ParseError::Truncated)?;
    // SAFETY: as above.
    let ip = unsafe { *ip };
    if u32::from_be(ip.vtc_flow) >> 28 != 6 {
        return Err(ParseError::BadHeader);
    }
    let payload = usize::from(u16::from_be(ip.payload_len));
    if payload == 0 {
        return Err(ParseError::BadHeader);
    }
    // Opaque to the compiler, for the reason given in `parse_ipv4`.
    let frame_len = core::hint::black_box(pkt.end() - pkt.start());
    if ETH_HLEN + IPV6_HLEN + payload > frame_len {
        return Err(ParseError::Truncated);
    }
    let ext = ipv6_extensions(pkt, ETH_HLEN, ip.nexthdr, IPV6_HLEN + payload)?;
    let flow = Flow {
        ip_len: (IPV6_HLEN + payload) as u16,
        family: AF_INET6,
        proto: ext.next,
        saddr: ip.saddr,
        daddr: ip.daddr,
        ttl: ip.hop_limit,
        l4_off: ETH_HLEN + ext.off,
        ip_id: ext.id,
        first_fragment: ext.first_fragment,
        ..Flow::default()
    };
    Ok((flow, ext.later_fragment))
}

/// Where an IPv6 packet's extension headers end, as [`ipv6_extensions`]
/// found it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv6Extensions {
    /// The upper-layer protocol (a fragment's, past the first).
    pub next: u8,
    /// The upper-layer header's offset from the IPv6 header (below 0x4000).
    pub off: usize,
    /// A fragment header with offset 0 and more-fragments.
    pub first_fragment: bool,
    /// A fragment header with an offset: no upper-layer header follows.
    pub later_fragment: bool,
    /// The fragment header's id, network order.
    pub id: u32,
}

/// Steps over the extension headers of the IPv6 header at `ip_off`, whose
/// next header is `first` and whose headers and payload take `end` bytes
/// (all there, or fewer for an ICMP error's quote). The rules of
/// [`parse_ipv6`]: hop-by-hop, destination options and routing headers
/// without segments left are stepped over, a fragment header ends the walk
/// when it has an offset; a header past `end` or a second fragment header is
/// `BadHeader`, segments left or more than [`MAX_IPV6_EXT_HEADERS`] headers
/// `Extension`. One walk for the packet and for the packet an error quotes.
#[inline(always)]
pub fn ipv6_extensions(pkt: &impl Packet, ip_off: usize, first: u8, end: usize) -> Result<Ipv6Extensions, ParseError> {
    let mut ext = Ipv6Extensions { next: first, off: IPV6_HLEN, ..Ipv6Extensions::default() };
    let mut fragmented = false;
    let mut i = 0;
    while i < MAX_IPV6_EXT_HEADERS {
        i += 1;
        // Each step adds at most 2048 to `off`; the mask bounds it for the
        // verifier.
        let at = ip_off + (ext.off & 0x3fff);
        match ext.next {
            NEXTHDR_HOP | NEXTHDR_DEST | NEXTHDR_ROUTING => {
                let hdr: *const [u8; 4] = ptr_at(pkt, at).ok_or(ParseError::BadHeader)?;
                // SAFETY: ptr_at checked the bounds.
                let hdr = unsafe { *hdr };
                // The routing header's fourth byte: segments left.
                if ext.next == NEXTHDR_ROUTING && hdr[3] != 0 {
                    return Err(ParseError::Extension);
                }
                ext.next = hdr[0];
                ext.off += (usize::from(hdr[1]) + 1) * 8;
            }
            // A datagram is fragmented once (RFC 8200 4.5): a second
            // fragment header cannot be parsed soundly.
            NEXTHDR_FRAGMENT if fragmented => return Err(ParseError::BadHeader),
            NEXTHDR_FRAGMENT => {
                fragmented = true;
                let frag: *const Ipv6FragHdr = ptr_at(pkt, at).ok_or(ParseError::BadHeader)?;
                // SAFETY: as above.
                let frag = unsafe { *frag };
                let frag_off = u16::from_be(frag.frag_off);
                ext.id = frag.id;
                ext.next = frag.nexthdr;
                ext.off += size_of::<Ipv6FragHdr>();
                if frag_off & IP6_OFFSET != 0 {
                    ext.later_fragment = true;
                    break;
                }
                ext.first_fragment = frag_off & IP6_MF != 0;
            }
            _ => break,
        }
        if ext.off > end {
            return Err(ParseError::BadHeader);
        }
    }
    if !ext.later_fragment && matches!(ext.next, NEXTHDR_HOP | NEXTHDR_DEST | NEXTHDR_ROUTING | NEXTHDR_FRAGMENT) {
        return Err(ParseError::Extension);
    }
    ext.off &= 0x3fff;
    Ok(ext)
}

/// The fragment offset and more-fragments in `Ipv6FragHdr::frag_off`.
pub const IP6_OFFSET: u16 = 0xfff8;
pub const IP6_MF: u16 = 0x0001;

/// Parses Ethernet, IPv4 and the TCP/UDP ports; see [`ParseError`] for
/// what is refused, and why.
#[inline(always)]
pub fn parse(pkt: &impl Packet) -> Result<Flow, ParseError> {
    let flow = parse_ipv4(pkt)?;
    if flow.proto == IPPROTO_ICMP {
        return Err(ParseError::Icmp);
    }
    parse_l4(pkt, flow)
}

/// Parses Ethernet, IPv6 (with its extension headers) and the TCP/UDP
/// ports: [`parse`] for IPv6, with the rules at [`parse_ipv6`].
#[inline(always)]
pub fn parse6(pkt: &impl Packet) -> Result<Flow, ParseError> {
    let flow = parse_ipv6(pkt)?;
    if flow.proto == IPPROTO_ICMPV6 {
        return Err(ParseError::Icmp);
    }
    parse_l4(pkt, flow)
}

/// The TCP or UDP header of a flow whose IP header is parsed: its ports and
/// flags, checked against the IP payload (`ip_len` less the IP headers).
#[inline(always)]
fn parse_l4(pkt: &impl Packet, mut flow: Flow) -> Result<Flow, ParseError> {
    let l4_off = flow.l4_off;
    let l3_len = l4_off - ETH_HLEN;
    let tot_len = usize::from(flow.ip_len);
    match flow.proto {
        IPPROTO_TCP => {
            // The frame holds the total length, so a frame too short for
            // the header means a total length too short for it.
            let tcp: *mut TcpHdr = ptr_at(pkt, l4_off).ok_or(ParseError::BadHeader)?;
            if tot_len < l3_len + size_of::<TcpHdr>() {
                return Err(ParseError::BadHeader);
            }
            // SAFETY: as above.
            let tcp = unsafe { *tcp };
            let doff = usize::from(tcp.doff_res >> 4) * 4;
            if doff < 20 || tot_len < l3_len + doff {
                return Err(ParseError::BadHeader);
            }
            flow.sport = tcp.sport;
            flow.dport = tcp.dport;
            flow.tcp_flags = tcp.flags;
        }
        IPPROTO_UDP => {
            let udp: *mut UdpHdr = ptr_at(pkt, l4_off).ok_or(ParseError::BadHeader)?;
            if tot_len < l3_len + size_of::<UdpHdr>() {
                return Err(ParseError::BadHeader);
            }
            // SAFETY: as above.
            let udp = unsafe { *udp };
            // The UDP length may be shorter than the IP payload (the kernel
            // trims the rest), never shorter than its header or longer.
            let ulen = usize::from(u16::from_be(udp.len));
            if ulen < size_of::<UdpHdr>() || (!flow.first_fragment && l3_len + ulen > tot_len) {
                return Err(ParseError::BadHeader);
            }
            // IPv6 has no UDP datagram without a checksum (RFC 8200 8.1):
            // the kernel drops one, and a NAT rewrite could not keep it
            // right.
            if flow.family == AF_INET6 && udp.check == 0 {
                return Err(ParseError::BadHeader);
            }
            flow.sport = udp.sport;
            flow.dport = udp.dport;
        }
        _ => return Err(ParseError::NotTcpUdp),
    }
    Ok(flow)
}

/// A source address no host can have, which the kernel drops as a martian
/// (`ip_route_input_slow`, `ip6_rcv_core`): IPv4 0/8, 127/8, multicast and
/// the limited broadcast; IPv6 unspecified, loopback, multicast and
/// IPv4-mapped. DHCP's 0.0.0.0 never asks a VIP.
#[inline(always)]
#[must_use]
pub const fn martian_source(family: u8, saddr: &[u32; 4]) -> bool {
    // The words hold wire-order bytes: compare them in that order.
    let first = u32::from_be(saddr[0]);
    if family != AF_INET6 {
        let top = first >> 24;
        return top == 0 || top == 127 || top >= 224 && top < 240 || first == u32::MAX;
    }
    let rest_zero = saddr[1] == 0 && saddr[2] == 0;
    let last = u32::from_be(saddr[3]);
    first >> 24 == 0xff
        || (first == 0 && rest_zero && (last == 0 || last == 1))
        || (first == 0 && saddr[1] == 0 && u32::from_be(saddr[2]) == 0xffff)
}

/// TCP flag combinations that no TCP sends in any state: SYN with FIN or
/// RST, FIN with RST, or none of SYN, FIN, RST and ACK (a "null" or
/// URG/PSH-only segment). A segment for a VIP with these is dropped
/// (`drop_tcp_flags`), tracked connection or not; a conforming peer's
/// connection never loses a segment to this.
#[inline(always)]
#[must_use]
pub const fn tcp_flags_impossible(flags: u8) -> bool {
    let syn = flags & TCP_SYN != 0;
    let fin = flags & TCP_FIN != 0;
    let rst = flags & TCP_RST != 0;
    (syn && (fin || rst)) || (fin && rst) || flags & (TCP_SYN | TCP_FIN | TCP_RST | TCP_ACK) == 0
}

/// Flags that a segment opening no known connection may not carry: the
/// impossible ones, and a FIN without ACK (a FIN scan: only a connection
/// the director tracks may see one, which IPVS's state machine takes).
/// The rest of an untracked segment that is not a SYN (ACK, FIN+ACK, RST)
/// may belong to a connection the kernel knows, and goes to it
/// (`pass_not_syn`).
#[inline(always)]
#[must_use]
pub const fn tcp_flags_invalid_untracked(flags: u8) -> bool {
    tcp_flags_impossible(flags) || flags & (TCP_FIN | TCP_ACK) == TCP_FIN
}

/// A byte slice as a [`Packet`], for host-side tests and tools.
///
/// The headers are read as aligned structs, as the kernel lays packets out
/// (`NET_IP_ALIGN`): the slice must start 2 bytes past a 4-byte boundary, so
/// that the IP header is 4-byte aligned. [`Aligned`] makes such a slice.
pub struct Bytes<'a>(pub &'a [u8]);

/// Holds a frame at a 2-mod-4 offset, so that [`Bytes`] can read it.
#[cfg(test)]
pub struct Aligned {
    words: std::vec::Vec<u32>,
    len: usize,
}

#[cfg(test)]
impl Aligned {
    pub fn new(frame: &[u8]) -> Self {
        let mut words = std::vec![0u32; frame.len() / 4 + 2];
        let len = frame.len();
        // SAFETY: the Vec holds at least len + 2 bytes.
        let bytes = unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len + 2) };
        bytes[2..].copy_from_slice(frame);
        Self { words, len }
    }
    pub fn bytes(&self) -> Bytes<'_> {
        // SAFETY: as in `new`.
        let all = unsafe { core::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len + 2) };
        Bytes(&all[2..])
    }
}

impl Packet for Bytes<'_> {
    fn start(&self) -> usize {
        self.0.as_ptr() as usize
    }
    fn end(&self) -> usize {
        self.0.as_ptr() as usize + self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recomputes the IPv4 header checksum over the IHL (options included).
    fn fix(mut p: std::vec::Vec<u8>) -> std::vec::Vec<u8> {
        if p.len() < 34 {
            return p;
        }
        let ihl = (usize::from(p[14] & 0x0f) * 4).min(p.len() - 14);
        p[24..26].copy_from_slice(&[0, 0]);
        let c = !crate::csum::fold(crate::csum::sum_be(&p[14..14 + ihl], 0));
        p[24..26].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// `frame` with `bytes` at `offset`, the IP checksum recomputed: the
    /// header is wrong only in the way the test means.
    fn patched(frame: &[u8], offset: usize, bytes: &[u8]) -> std::vec::Vec<u8> {
        let mut p = frame.to_vec();
        p[offset..offset + bytes.len()].copy_from_slice(bytes);
        fix(p)
    }

    fn parse_bytes(p: &[u8]) -> Result<Flow, ParseError> {
        parse(&Aligned::new(p).bytes())
    }

    /// Ethernet + IPv4 + TCP SYN 10.1.0.2:40000 -> 10.100.0.100:80.
    fn tcp_syn() -> std::vec::Vec<u8> {
        let mut p = std::vec![0u8; 14 + 20 + 20];
        p[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        p[14] = 0x45;
        p[16..18].copy_from_slice(&40u16.to_be_bytes());
        p[22] = 64;
        p[23] = IPPROTO_TCP;
        p[26..30].copy_from_slice(&[10, 1, 0, 2]);
        p[30..34].copy_from_slice(&[10, 100, 0, 100]);
        p[34..36].copy_from_slice(&40000u16.to_be_bytes());
        p[36..38].copy_from_slice(&80u16.to_be_bytes());
        p[46] = 5 << 4;
        p[47] = TCP_SYN;
        fix(p)
    }

    /// Ethernet + IPv4 with `options` + UDP 53 -> 5353 with 4 bytes of data.
    fn udp_with_options(options: &[u8]) -> std::vec::Vec<u8> {
        let ihl = 20 + options.len();
        let mut p = std::vec![0u8; 14 + ihl + 12];
        p[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        p[14] = 0x40 | (ihl / 4) as u8;
        p[16..18].copy_from_slice(&((ihl + 12) as u16).to_be_bytes());
        p[22] = 64;
        p[23] = IPPROTO_UDP;
        p[34..34 + options.len()].copy_from_slice(options);
        let l4 = 14 + ihl;
        p[l4..l4 + 2].copy_from_slice(&53u16.to_be_bytes());
        p[l4 + 2..l4 + 4].copy_from_slice(&5353u16.to_be_bytes());
        p[l4 + 4..l4 + 6].copy_from_slice(&12u16.to_be_bytes());
        fix(p)
    }

    #[test]
    fn parses_a_tcp_syn() {
        let p = tcp_syn();
        let f = parse_bytes(&p).unwrap();
        assert_eq!(f.proto, IPPROTO_TCP);
        assert_eq!(f.saddr[0].to_ne_bytes(), [10, 1, 0, 2]);
        assert_eq!(f.daddr[0].to_ne_bytes(), [10, 100, 0, 100]);
        assert_eq!(u16::from_be(f.sport), 40000);
        assert_eq!(u16::from_be(f.dport), 80);
        assert_eq!(f.tcp_flags, TCP_SYN);
        assert_eq!(f.ttl, 64);
        assert_eq!(f.l4_off, 34);
        assert_eq!(f.ip_len, 40);
    }

    #[test]
    fn parses_udp_and_ip_options() {
        // One word of options: EOL then padding.
        let p = udp_with_options(&[0, 0, 0, 0]);
        let f = parse_bytes(&p).unwrap();
        assert_eq!(f.l4_off, 38);
        assert_eq!(u16::from_be(f.sport), 53);
        assert_eq!(u16::from_be(f.dport), 5353);
    }

    #[test]
    fn rejects_what_it_cannot_key_on() {
        let syn = tcp_syn();
        // Zero, one and odd sizes up to the end of the TCP header.
        for cut in [0, 1, 13, 14, 15, 33, 34, 35, 53] {
            assert_eq!(parse_bytes(&syn[..cut]), Err(ParseError::Truncated), "cut at {cut}");
        }
        let mut arp = syn.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(parse_bytes(&arp), Err(ParseError::NotIp));
        assert_eq!(parse_bytes(&patched(&syn, 14, &[0x44])), Err(ParseError::BadHeader), "IHL 4");
        assert_eq!(parse_bytes(&patched(&syn, 14, &[0x40])), Err(ParseError::BadHeader), "IHL 0");
        assert_eq!(parse_bytes(&patched(&syn, 14, &[0x65])), Err(ParseError::BadHeader), "version 6");
        assert_eq!(parse_bytes(&patched(&syn, 16, &[0, 41])), Err(ParseError::Truncated), "total length past the frame");
        assert_eq!(parse_bytes(&patched(&syn, 16, &[0, 19])), Err(ParseError::BadHeader), "total length < IHL");
        assert_eq!(parse_bytes(&patched(&syn, 16, &[0, 0])), Err(ParseError::BadHeader), "total length 0");
        // IHL 6 with no options in the frame: the TCP ports are read as
        // options (0x9c 0x40: a length of 64)...
        assert_eq!(parse_bytes(&patched(&syn, 14, &[0x46])), Err(ParseError::BadOptions), "IHL 6");
        // ...and when they happen to parse (NOPs), the total length (40)
        // leaves only 16 bytes for TCP.
        let nops = patched(&patched(&syn, 34, &[1, 1, 1, 1]), 14, &[0x46]);
        assert_eq!(parse_bytes(&nops), Err(ParseError::BadHeader), "IHL 6 over NOPs");
        // IHL 15 (60 bytes) > total length 40.
        assert_eq!(parse_bytes(&patched(&syn, 14, &[0x4f])), Err(ParseError::BadHeader), "IHL 15");
        assert_eq!(parse_bytes(&patched(&syn, 20, &[0x00, 0x01])), Err(ParseError::Fragment), "offset");
        assert_eq!(parse_bytes(&patched(&syn, 20, &[0x20, 0x01])), Err(ParseError::Fragment), "MF and offset");
        let first = parse_bytes(&patched(&syn, 20, &[0x20, 0x00])).expect("a first fragment is a flow");
        assert!(first.first_fragment);
        assert_eq!(first.ip_id, 0);
        assert!(!parse_bytes(&syn).unwrap().first_fragment);
        assert_eq!(parse_bytes(&patched(&syn, 23, &[1])), Err(ParseError::Icmp), "ICMP");
        assert_eq!(parse_bytes(&patched(&syn, 23, &[47])), Err(ParseError::NotTcpUdp), "GRE");
        assert_eq!(parse_bytes(&patched(&syn, 46, &[4 << 4])), Err(ParseError::BadHeader), "doff 4");
        assert_eq!(parse_bytes(&patched(&syn, 46, &[0])), Err(ParseError::BadHeader), "doff 0");
        // The IP total length must cover the TCP header, even when the frame
        // (with padding) holds it...
        assert_eq!(parse_bytes(&patched(&syn, 16, &[0, 30])), Err(ParseError::BadHeader), "total length 30");
        // ...and the same packet without the padding is the same error.
        assert_eq!(parse_bytes(&patched(&syn, 16, &[0, 30])[..44]), Err(ParseError::BadHeader), "unpadded");
        // doff 6: options beyond the total length.
        assert_eq!(parse_bytes(&patched(&syn, 46, &[6 << 4])), Err(ParseError::BadHeader), "doff 6");
        assert_eq!(parse_bytes(&patched(&syn, 46, &[15 << 4])), Err(ParseError::BadHeader), "doff 15");
    }

    #[test]
    fn the_ip_checksum_must_hold() {
        let syn = tcp_syn();
        // A flip anywhere past the version/IHL and total length fields is
        // a checksum error (those two fail their own checks first).
        for bit in 32..160 {
            let mut p = syn.clone();
            p[14 + bit / 8] ^= 1 << (bit % 8);
            assert_eq!(parse_bytes(&p), Err(ParseError::BadChecksum), "bit {bit}");
        }
        for bit in 0..32 {
            let mut p = syn.clone();
            p[14 + bit / 8] ^= 1 << (bit % 8);
            assert!(parse_bytes(&p).is_err(), "bit {bit}");
        }
        // The checksum covers the options too.
        let mut opt = udp_with_options(&[1, 1, 1, 0]);
        opt[35] = 0;
        assert_eq!(parse_bytes(&opt), Err(ParseError::BadChecksum), "options outside the sum");
        // 0xffff and 0x0000 are the same sum in one's complement: a header
        // whose checksum field is the other zero still checks.
        let p = tcp_syn();
        let c = u16::from_be_bytes([p[24], p[25]]);
        if c == 0xffff || c == 0 {
            let other = patched(&p, 24, &(!c).to_be_bytes());
            assert!(parse_bytes(&other).is_ok());
        }
    }

    #[test]
    fn ip_options_are_walked_as_the_kernel_does() {
        let ok: [&[u8]; 8] = [
            &[0, 0, 0, 0],                        // EOL
            &[1, 1, 1, 1],                        // NOPs
            &[1, 1, 1, 0],                        // NOPs, EOL
            &[0x94, 4, 0, 0],                     // Router Alert
            &[0x94, 4, 0, 0, 0, 0xff, 0xff, 0xff], // EOL, then anything
            &[0x07, 7, 4, 0, 0, 0, 0, 0],         // Record Route, one slot, EOL
            &[0x86, 8, 1, 2, 3, 4, 5, 6],         // an option filling the space
            &[1, 0x88, 4, 0, 0, 1, 1, 0],         // NOP, Stream ID, NOP...
        ];
        for o in ok {
            assert!(parse_bytes(&udp_with_options(o)).is_ok(), "{o:?}");
        }
        let bad: [&[u8]; 6] = [
            &[0x94, 0, 0, 0],             // length 0
            &[0x94, 1, 0, 0],             // length 1
            &[0x94, 5, 0, 0],             // past the options
            &[1, 1, 1, 0x94],             // no room for the length
            &[0x07, 3, 4, 0x94, 8, 0, 0, 0], // the second one runs past
            &[0x86, 41, 0, 0],            // longer than any options can be
        ];
        for o in bad {
            assert_eq!(parse_bytes(&udp_with_options(o)), Err(ParseError::BadOptions), "{o:?}");
        }
        // The longest options, 40 bytes of NOPs and an EOL: every step
        // the walk may take.
        let mut forty = [1u8; 40];
        forty[39] = 0;
        assert!(parse_bytes(&udp_with_options(&forty)).is_ok());
        let mut tail = [1u8; 40];
        tail[39] = 0x94;
        assert_eq!(parse_bytes(&udp_with_options(&tail)), Err(ParseError::BadOptions));
    }

    #[test]
    fn udp_length_must_fit() {
        let p = udp_with_options(&[]);
        let l4 = 34;
        for (ulen, ok) in [(0u16, false), (7, false), (8, true), (11, true), (12, true), (13, false), (0xffff, false)] {
            let q = patched(&p, l4 + 4, &ulen.to_be_bytes());
            assert_eq!(parse_bytes(&q).is_ok(), ok, "UDP length {ulen}");
            if !ok {
                assert_eq!(parse_bytes(&q), Err(ParseError::BadHeader), "UDP length {ulen}");
            }
        }
        // A total length that leaves less than a UDP header.
        assert_eq!(parse_bytes(&patched(&p, 16, &[0, 27])), Err(ParseError::BadHeader));
    }

    #[test]
    fn padding_past_the_total_length_is_fine() {
        let mut p = tcp_syn();
        p.resize(60, 0xee);
        let f = parse_bytes(&p).unwrap();
        assert_eq!(f.ip_len, 40);
        // Any amount of trailing bytes: the IP packet is what counts.
        p.resize(1500, 0xee);
        assert_eq!(parse_bytes(&p).unwrap(), f);
    }

    #[test]
    fn martian_sources() {
        let v4 = |o: [u8; 4]| martian_source(AF_INET, &crate::v4_addr(o));
        for o in [[0, 0, 0, 0], [0, 1, 2, 3], [127, 0, 0, 1], [224, 0, 0, 18], [239, 255, 255, 250], [255, 255, 255, 255]] {
            assert!(v4(o), "{o:?}");
        }
        for o in [[1, 0, 0, 0], [10, 1, 0, 2], [126, 255, 255, 255], [128, 0, 0, 1], [223, 255, 255, 255], [240, 0, 0, 1], [255, 255, 255, 254]] {
            assert!(!v4(o), "{o:?}");
        }
        let v6 = |s: &str| martian_source(AF_INET6, &crate::v6_addr(s.parse::<std::net::Ipv6Addr>().unwrap().octets()));
        for a in ["::", "::1", "ff02::1", "ff05::2", "::ffff:10.1.0.2"] {
            assert!(v6(a), "{a}");
        }
        for a in ["2001:db8::1", "fe80::1", "::2", "fd00::1", "64:ff9b::a01:2", "feff::1"] {
            assert!(!v6(a), "{a}");
        }
    }

    #[test]
    fn impossible_tcp_flags() {
        const FIN: u8 = TCP_FIN;
        const SYN: u8 = TCP_SYN;
        const RST: u8 = TCP_RST;
        const PSH: u8 = TCP_PSH;
        const ACK: u8 = TCP_ACK;
        const URG: u8 = TCP_URG;
        const ECE: u8 = 0x40;
        const CWR: u8 = 0x80;
        // What conforming stacks send, in some state.
        for f in [SYN, SYN | ECE | CWR, SYN | ACK, SYN | ACK | ECE, ACK, ACK | PSH, ACK | URG, FIN | ACK, FIN | ACK | PSH, RST, RST | ACK, RST | ACK | PSH, ACK | CWR] {
            assert!(!tcp_flags_impossible(f), "{f:#04x}");
            assert!(!tcp_flags_invalid_untracked(f), "{f:#04x}");
        }
        for f in [0, PSH, URG, URG | PSH, ECE | CWR, SYN | FIN, SYN | RST, FIN | RST, SYN | FIN | ACK, SYN | RST | ACK, FIN | RST | ACK, 0xff, 0x3f] {
            assert!(tcp_flags_impossible(f), "{f:#04x}");
            assert!(tcp_flags_invalid_untracked(f), "{f:#04x}");
        }
        // FIN without ACK (FIN scan, Xmas): a tracked connection's state
        // machine takes it; nothing else may.
        for f in [FIN, FIN | PSH, FIN | URG | PSH] {
            assert!(!tcp_flags_impossible(f), "{f:#04x}");
            assert!(tcp_flags_invalid_untracked(f), "{f:#04x}");
        }
        // Every byte: untracked is the stricter rule.
        for f in 0..=255u8 {
            assert!(!tcp_flags_impossible(f) || tcp_flags_invalid_untracked(f));
        }
    }

    /// Ethernet + IPv6 (with `ext`, extension headers already chained:
    /// `first` is the next header of the fixed header) + TCP SYN
    /// [2001:db8:1::2]:40000 -> [2001:db8::100]:80.
    fn tcp6_syn_with(first: u8, ext: &[u8]) -> std::vec::Vec<u8> {
        let mut p = std::vec![0u8; 14 + 40];
        p[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
        p[14] = 0x60;
        p[18..20].copy_from_slice(&((ext.len() + 20) as u16).to_be_bytes());
        p[20] = if ext.is_empty() { IPPROTO_TCP } else { first };
        p[21] = 64;
        p[22..38].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p[38..54].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        p.extend_from_slice(ext);
        let mut tcp = [0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = TCP_SYN;
        p.extend_from_slice(&tcp);
        p
    }

    fn parse6_bytes(p: &[u8]) -> Result<Flow, ParseError> {
        parse6(&Aligned::new(p).bytes())
    }

    #[test]
    fn parses_an_ipv6_tcp_syn() {
        let p = tcp6_syn_with(0, &[]);
        let f = parse6_bytes(&p).unwrap();
        assert_eq!((f.family, f.proto, f.ttl, f.l4_off, f.ip_len), (AF_INET6, IPPROTO_TCP, 64, 54, 60));
        assert_eq!(f.saddr, crate::v6_addr(p[22..38].try_into().unwrap()));
        assert_eq!(f.daddr, crate::v6_addr(p[38..54].try_into().unwrap()));
        assert_eq!((u16::from_be(f.sport), u16::from_be(f.dport), f.tcp_flags), (40000, 80, TCP_SYN));
        assert!(!f.first_fragment);
        // IPv4's parser leaves it to the kernel, and the other way round.
        assert_eq!(parse_bytes(&p), Err(ParseError::NotIp));
        assert_eq!(parse6_bytes(&tcp_syn()), Err(ParseError::NotIp));
    }

    #[test]
    fn ipv6_extension_headers_are_walked_within_a_bound() {
        // Hop-by-hop (8 bytes: PadN), destination options (16), then TCP.
        let hop = [NEXTHDR_DEST, 0, 1, 4, 0, 0, 0, 0];
        let mut dest = [0u8; 16];
        dest[0] = IPPROTO_TCP;
        dest[1] = 1;
        dest[2] = 1;
        dest[3] = 12;
        let ext: std::vec::Vec<u8> = hop.iter().chain(dest.iter()).copied().collect();
        let f = parse6_bytes(&tcp6_syn_with(NEXTHDR_HOP, &ext)).unwrap();
        assert_eq!((f.l4_off, f.ip_len, u16::from_be(f.dport)), (54 + 24, 84, 80));
        // A routing header with no segments left is stepped over; with
        // segments left the packet is not for us yet.
        let routing = [IPPROTO_TCP, 0, 4, 0, 0, 0, 0, 0];
        assert_eq!(parse6_bytes(&tcp6_syn_with(NEXTHDR_ROUTING, &routing)).unwrap().l4_off, 62);
        let routing = [IPPROTO_TCP, 0, 4, 1, 0, 0, 0, 0];
        assert_eq!(parse6_bytes(&tcp6_syn_with(NEXTHDR_ROUTING, &routing)), Err(ParseError::Extension));
        // Five destination options headers: past the bound.
        let mut five = std::vec::Vec::new();
        for i in 0..5 {
            five.extend_from_slice(&[if i == 4 { IPPROTO_TCP } else { NEXTHDR_DEST }, 0, 1, 4, 0, 0, 0, 0]);
        }
        assert_eq!(parse6_bytes(&tcp6_syn_with(NEXTHDR_DEST, &five)), Err(ParseError::Extension));
        assert!(parse6_bytes(&tcp6_syn_with(NEXTHDR_DEST, &five[8..])).is_ok(), "four is fine");
        // A header longer than the payload.
        let long = [IPPROTO_TCP, 200, 1, 4, 0, 0, 0, 0];
        assert_eq!(parse6_bytes(&tcp6_syn_with(NEXTHDR_DEST, &long)), Err(ParseError::BadHeader));
        // Unknown upper layers are the kernel's; ICMPv6 goes its own way.
        let mut p = tcp6_syn_with(0, &[]);
        p[20] = 59;
        assert_eq!(parse6_bytes(&p), Err(ParseError::NotTcpUdp), "no next header");
        p[20] = IPPROTO_ICMPV6;
        assert_eq!(parse6_bytes(&p), Err(ParseError::Icmp));
    }

    #[test]
    fn ipv6_fragments() {
        let first = [IPPROTO_TCP, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef];
        let f = parse6_bytes(&tcp6_syn_with(NEXTHDR_FRAGMENT, &first)).unwrap();
        assert!(f.first_fragment);
        assert_eq!((u32::from_be(f.ip_id), f.l4_off), (0xdead_beef, 62));
        let atomic = [IPPROTO_TCP, 0, 0x00, 0x00, 0, 0, 0, 1];
        assert!(!parse6_bytes(&tcp6_syn_with(NEXTHDR_FRAGMENT, &atomic)).unwrap().first_fragment);
        let later = [IPPROTO_TCP, 0, 0x00, 0x08, 0xde, 0xad, 0xbe, 0xef];
        let p = tcp6_syn_with(NEXTHDR_FRAGMENT, &later);
        assert_eq!(parse6_bytes(&p), Err(ParseError::Fragment));
        // The later fragment names the same datagram as its first.
        let again = reread_ipv6(&Aligned::new(&p).bytes()).unwrap();
        assert_eq!((again.ip_id, again.proto, again.saddr, again.daddr), (f.ip_id, f.proto, f.saddr, f.daddr));
        assert_eq!(reread_ipv6(&Aligned::new(&tcp6_syn_with(0, &[])).bytes()), None, "not a fragment");
        // Fragmented twice (the fuzzer's find): malformed.
        let twice = [NEXTHDR_FRAGMENT, 0, 0x00, 0x01, 0, 0, 0, 1, IPPROTO_TCP, 0, 0x00, 0x08, 0, 0, 0, 2];
        assert_eq!(parse6_bytes(&tcp6_syn_with(NEXTHDR_FRAGMENT, &twice)), Err(ParseError::BadHeader));
    }

    #[test]
    fn rejects_broken_ipv6() {
        let syn = tcp6_syn_with(0, &[]);
        for cut in [0, 13, 14, 53] {
            assert_eq!(parse6_bytes(&syn[..cut]), Err(ParseError::Truncated), "cut at {cut}");
        }
        // The payload length claims the TCP header the frame lacks.
        assert_eq!(parse6_bytes(&syn[..60]), Err(ParseError::Truncated));
        assert_eq!(parse6_bytes(&patched6(&syn, 14, &[0x40])), Err(ParseError::BadHeader), "version 4");
        assert_eq!(parse6_bytes(&patched6(&syn, 18, &[0, 0])), Err(ParseError::BadHeader), "jumbogram");
        assert_eq!(parse6_bytes(&patched6(&syn, 18, &[0, 19])), Err(ParseError::BadHeader), "payload < TCP");
        assert_eq!(parse6_bytes(&patched6(&syn, 18, &[0, 21])), Err(ParseError::Truncated), "payload > frame");
        assert_eq!(parse6_bytes(&patched6(&syn, 66, &[4 << 4])), Err(ParseError::BadHeader), "doff 4");
        // Padding past the payload is fine.
        let mut padded = syn.clone();
        padded.resize(100, 0xee);
        assert_eq!(parse6_bytes(&padded), parse6_bytes(&syn));
        // UDP without a checksum does not exist in IPv6.
        let mut udp = patched6(&syn, 20, &[IPPROTO_UDP]);
        udp[58..60].copy_from_slice(&20u16.to_be_bytes());
        udp[60..62].copy_from_slice(&[0x12, 0x34]);
        assert_eq!(u16::from_be(parse6_bytes(&udp).unwrap().dport), 80);
        udp[60..62].copy_from_slice(&[0, 0]);
        assert_eq!(parse6_bytes(&udp), Err(ParseError::BadHeader), "UDP checksum 0");
    }

    fn patched6(frame: &[u8], offset: usize, bytes: &[u8]) -> std::vec::Vec<u8> {
        let mut p = frame.to_vec();
        p[offset..offset + bytes.len()].copy_from_slice(bytes);
        p
    }

    /// Random frames never make the parser read out of bounds or accept
    /// what its rules refuse: a cheap host-side fuzz (the `fuzz/` targets go
    /// further).
    #[test]
    fn random_mutations_hold_the_rules() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let bases = [tcp_syn(), udp_with_options(&[0x94, 4, 0, 0]), udp_with_options(&[])];
        for i in 0..20_000 {
            let mut p = bases[i % bases.len()].clone();
            for _ in 0..(next() % 4) {
                let at = (next() as usize) % p.len();
                p[at] ^= 1 << (next() % 8);
            }
            if next() % 3 == 0 {
                p = fix(p);
            }
            if next() % 5 == 0 {
                let n = (next() as usize) % (p.len() + 1);
                p.truncate(n);
            }
            if let Ok(f) = parse_bytes(&p) {
                let ihl = usize::from(p[14] & 0x0f) * 4;
                let tot = usize::from(u16::from_be_bytes([p[16], p[17]]));
                assert_eq!(p[14] >> 4, 4);
                assert!(ihl >= 20 && tot >= ihl && 14 + tot <= p.len());
                assert_eq!(crate::csum::fold(crate::csum::sum_be(&p[14..14 + ihl], 0)), 0xffff);
                assert_eq!(f.l4_off, 14 + ihl);
                assert!(f.proto == IPPROTO_TCP || f.proto == IPPROTO_UDP);
                let l4 = if f.proto == IPPROTO_TCP { usize::from(p[14 + ihl + 12] >> 4) * 4 } else { 8 };
                assert!(l4 >= 8 && ihl + l4 <= tot);
            }
        }
    }
}
