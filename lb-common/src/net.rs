//! Wire layouts of the headers the data plane touches, one bounds-checked
//! way to reach them, and the parser that turns a frame into a [`Flow`].
//!
//! The parser runs unchanged in XDP (over `XdpContext`) and on the host (over
//! a byte slice) so that the unit tests here check what the kernel runs.

use core::mem::size_of;

use crate::{AF_INET, IPPROTO_TCP, IPPROTO_UDP};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_HLEN: usize = 14;
pub const IPV4_HLEN: usize = 20;

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
pub const TCP_ACK: u8 = 0x10;

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
    /// The IPv4 total length: what IPVS counts as the packet's bytes (the
    /// frame may carry Ethernet padding beyond it).
    pub ip_len: u16,
}

/// Why a frame is not a [`Flow`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not IPv4 (the kernel's business).
    NotIp,
    /// IPv4, but neither TCP nor UDP.
    NotTcpUdp,
    /// A fragment: no ports to key on.
    Fragment,
    /// A header runs past the end of the frame.
    Truncated,
    /// A header that cannot be valid (IHL < 5, version, TCP doff < 5, a total
    /// length shorter than the headers).
    BadHeader,
}

/// Parses Ethernet, IPv4 and the TCP/UDP ports.
#[inline(always)]
pub fn parse(pkt: &impl Packet) -> Result<Flow, ParseError> {
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
    if ihl < IPV4_HLEN || usize::from(u16::from_be(ip.tot_len)) < ihl {
        return Err(ParseError::BadHeader);
    }
    if ETH_HLEN + usize::from(u16::from_be(ip.tot_len)) > pkt.end() - pkt.start() {
        return Err(ParseError::Truncated);
    }
    // More-fragments set, or a non-zero offset.
    if u16::from_be(ip.frag_off) & 0x3fff != 0 {
        return Err(ParseError::Fragment);
    }
    let l4_off = ETH_HLEN + ihl;
    let tot_len = usize::from(u16::from_be(ip.tot_len));
    let mut flow = Flow {
        ip_len: u16::from_be(ip.tot_len),
        family: AF_INET,
        proto: ip.proto,
        saddr: [ip.saddr, 0, 0, 0],
        daddr: [ip.daddr, 0, 0, 0],
        ttl: ip.ttl,
        l4_off,
        ..Flow::default()
    };
    match ip.proto {
        IPPROTO_TCP => {
            let tcp: *mut TcpHdr = ptr_at(pkt, l4_off).ok_or(ParseError::Truncated)?;
            // SAFETY: as above.
            let tcp = unsafe { *tcp };
            let doff = usize::from(tcp.doff_res >> 4) * 4;
            if doff < 20 || tot_len < ihl + doff {
                return Err(ParseError::BadHeader);
            }
            flow.sport = tcp.sport;
            flow.dport = tcp.dport;
            flow.tcp_flags = tcp.flags;
        }
        IPPROTO_UDP => {
            let udp: *mut UdpHdr = ptr_at(pkt, l4_off).ok_or(ParseError::Truncated)?;
            // SAFETY: as above.
            let udp = unsafe { *udp };
            if tot_len < ihl + size_of::<UdpHdr>() {
                return Err(ParseError::BadHeader);
            }
            flow.sport = udp.sport;
            flow.dport = udp.dport;
        }
        _ => return Err(ParseError::NotTcpUdp),
    }
    Ok(flow)
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
        p
    }

    #[test]
    fn parses_a_tcp_syn() {
        let p = tcp_syn();
        let f = parse(&Aligned::new(&p).bytes()).unwrap();
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
        let mut p = std::vec![0u8; 14 + 24 + 8];
        p[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        p[14] = 0x46; // IHL 6: one word of options
        p[16..18].copy_from_slice(&32u16.to_be_bytes());
        p[23] = IPPROTO_UDP;
        p[38..40].copy_from_slice(&53u16.to_be_bytes());
        p[40..42].copy_from_slice(&5353u16.to_be_bytes());
        let f = parse(&Aligned::new(&p).bytes()).unwrap();
        assert_eq!(f.l4_off, 38);
        assert_eq!(u16::from_be(f.sport), 53);
        assert_eq!(u16::from_be(f.dport), 5353);
    }

    #[test]
    fn rejects_what_it_cannot_key_on() {
        let syn = tcp_syn();
        for cut in [0, 13, 14, 33, 34, 53] {
            assert_eq!(parse(&Aligned::new(&syn[..cut]).bytes()), Err(ParseError::Truncated), "cut at {cut}");
        }
        let mut arp = syn.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(parse(&Aligned::new(&arp).bytes()), Err(ParseError::NotIp));
        let mut ihl4 = syn.clone();
        ihl4[14] = 0x44;
        assert_eq!(parse(&Aligned::new(&ihl4).bytes()), Err(ParseError::BadHeader));
        let mut v6 = syn.clone();
        v6[14] = 0x65;
        assert_eq!(parse(&Aligned::new(&v6).bytes()), Err(ParseError::BadHeader));
        let mut long = syn.clone();
        long[16..18].copy_from_slice(&41u16.to_be_bytes());
        assert_eq!(parse(&Aligned::new(&long).bytes()), Err(ParseError::Truncated));
        let mut frag = syn.clone();
        frag[20] = 0x20; // MF
        assert_eq!(parse(&Aligned::new(&frag).bytes()), Err(ParseError::Fragment));
        let mut icmp = syn.clone();
        icmp[23] = 1;
        assert_eq!(parse(&Aligned::new(&icmp).bytes()), Err(ParseError::NotTcpUdp));
        let mut doff = syn.clone();
        doff[46] = 4 << 4;
        assert_eq!(parse(&Aligned::new(&doff).bytes()), Err(ParseError::BadHeader));
        // The IP total length must cover the TCP header, even when the frame
        // (with padding) holds it.
        let mut short = syn.clone();
        short[16..18].copy_from_slice(&30u16.to_be_bytes());
        assert_eq!(parse(&Aligned::new(&short).bytes()), Err(ParseError::BadHeader));
        let mut options = syn;
        options[46] = 6 << 4; // doff 6: options beyond the total length
        assert_eq!(parse(&Aligned::new(&options).bytes()), Err(ParseError::BadHeader));
    }
}
