//! Machinery for the packet fixtures: packets described once and serialised
//! by etherparse (so expected bytes never come from the code under test), an
//! independent checksum check, and [`Lb`], a harness around one freshly loaded
//! eBPF object whose maps the fixtures fill and read back directly.
//!
//! The benchmark (`bench/`) includes this file too, so that it sets up and
//! checks its scenarios exactly as the fixtures do.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::time::Duration;

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, PerCpuValues, lpm_trie::Key},
    programs::{TestRun, TestRunOptions, Xdp},
};
use etherparse::{
    ArpEthIpv4Packet, ArpOperation, EtherType, Ethernet2Header, IpDscp, IpEcn, IpFragOffset,
    IpNumber, Ipv4Header, Ipv4Options, PacketBuilder, TcpHeader, UdpHeader,
};
use lb_common::{
    AF_INET, Buckets, Conn, ConnKey, FWD_DR, FWD_NAT, FWD_TUN, MAP_BUCKETS, MAP_CONNS,
    MAP_COUNTERS, MAP_DECAP_VIPS, MAP_MAGLEV, MAP_REAL_CONNS, MAP_REAL_STATS, MAP_REALS,
    MAP_SCHED_STATE, MAP_SERVICE_RANGES, MAP_SERVICE_REALS, MAP_SERVICES, MAX_REALS_PER_SERVICE,
    MaglevTable, PROG_DECAP, PROG_DIRECTOR, REAL_F_NEXTHOP, RangeData, Real, RealConns, SCHED_DH,
    SCHED_MH, SCHED_RR, SCHED_SH, SCHED_WRR, SchedState, Service, ServiceKey, ServiceReals, Stats,
    VipKey, counter, range_prefix_len,
    sched::{MhReal, dh_build, mh_build, sh_build},
    v4_addr,
};

// XDP verdicts (`enum xdp_action`).
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// `BPF_PROG_TEST_RUN` without a context runs the packet as if it came in
/// on the loopback device, so a next hop on ifindex 1 means "back out the
/// same wire" (XDP_TX) and any other ifindex means XDP_REDIRECT.
pub const LO_IFINDEX: u32 = 1;
pub const OTHER_IFINDEX: u32 = 7;

// The topology every fixture uses.
pub const CLIENT: [u8; 4] = [198, 51, 100, 7];
pub const CLIENT2: [u8; 4] = [198, 51, 100, 8];
pub const VIP: [u8; 4] = [10, 100, 0, 100];
pub const VIP2: [u8; 4] = [10, 100, 0, 101];
pub const NOT_A_VIP: [u8; 4] = [10, 100, 0, 200];
pub const REAL1: [u8; 4] = [10, 0, 1, 11];
pub const REAL2: [u8; 4] = [10, 0, 1, 12];
pub const REAL3: [u8; 4] = [10, 0, 1, 13];
/// The director's own address towards the reals (outer source of tunnels).
pub const DIRECTOR_IP: [u8; 4] = [10, 0, 1, 1];
/// The client-side router: source MAC of every client packet.
pub const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// The director's MAC on the client side.
pub const DIRECTOR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xd0];
/// The director's MAC on the reals' side.
pub const DIRECTOR_REAL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xd1];

pub const HTTP: u16 = 80;
pub const DNS: u16 = 53;
pub const REAL_HTTP: u16 = 8080;
pub const REAL_DNS: u16 = 5353;

// TCP flag bits, spelled out here rather than taken from the data plane.
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// A real's own MAC: the last octet of its address, so mixes stand out.
pub const fn real_mac(addr: [u8; 4]) -> [u8; 6] {
    [0x02, 0, 0, 0, 1, addr[3]]
}

/// An IPv4 address and a port as the maps hold them (network order).
pub fn port_be(port: u16) -> u16 {
    port.to_be()
}

/// The transport part of a [`Pkt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    /// `zero_checksum`: send 0, UDP-over-IPv4's "no checksum".
    Udp {
        sport: u16,
        dport: u16,
        zero_checksum: bool,
    },
}

/// An Ethernet + IPv4 + TCP/UDP packet, described by its fields. Fixtures
/// derive the expected output from the input by changing fields, and both
/// are serialised by etherparse with freshly computed checksums.
#[derive(Clone, Debug)]
pub struct Pkt {
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub ttl: u8,
    pub tos: u8,
    pub id: u16,
    pub df: bool,
    pub mf: bool,
    /// Fragment offset in 8-byte units.
    pub frag_off: u16,
    /// IPv4 options; a multiple of 4 bytes.
    pub options: Vec<u8>,
    pub l4: L4,
    pub payload: Vec<u8>,
}

impl Pkt {
    /// A client's TCP segment to VIP:port, as the client-side router sends it.
    pub fn tcp(sport: u16, dport: u16, flags: u8) -> Self {
        Self {
            eth_src: ROUTER_MAC,
            eth_dst: DIRECTOR_MAC,
            src: CLIENT,
            dst: VIP,
            ttl: 64,
            tos: 0,
            id: 0x1c46,
            df: true,
            mf: false,
            frag_off: 0,
            options: Vec::new(),
            l4: L4::Tcp {
                sport,
                dport,
                flags,
            },
            // A SYN carries no data; anything later carries some, so that
            // the L4 checksum covers more than headers.
            payload: if flags & SYN != 0 {
                Vec::new()
            } else {
                b"GET / HTTP/1.1\r\n\r\n".to_vec()
            },
        }
    }

    /// A client's UDP datagram to VIP:port, with a checksum.
    pub fn udp(sport: u16, dport: u16) -> Self {
        Self {
            l4: L4::Udp {
                sport,
                dport,
                zero_checksum: false,
            },
            payload: b"\x12\x34\x01\x00\x00\x01 xlvs query".to_vec(),
            ..Self::tcp(sport, dport, 0)
        }
    }

    /// Applies `f` to a copy: `p.with(|p| p.ttl = 1)`.
    #[must_use]
    pub fn with(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }

    #[must_use]
    pub fn from(self, addr: [u8; 4], port: u16) -> Self {
        self.with(|p| {
            p.src = addr;
            match &mut p.l4 {
                L4::Tcp { sport, .. } | L4::Udp { sport, .. } => *sport = port,
            }
        })
    }

    #[must_use]
    pub fn to(self, addr: [u8; 4], port: u16) -> Self {
        self.with(|p| {
            p.dst = addr;
            match &mut p.l4 {
                L4::Tcp { dport, .. } | L4::Udp { dport, .. } => *dport = port,
            }
        })
    }

    #[must_use]
    pub fn macs(self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.with(|p| {
            p.eth_src = src;
            p.eth_dst = dst;
        })
    }

    #[must_use]
    pub fn ttl(self, ttl: u8) -> Self {
        self.with(|p| p.ttl = ttl)
    }

    pub fn ports(&self) -> (u16, u16) {
        match self.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport, .. } => (sport, dport),
        }
    }

    fn proto(&self) -> IpNumber {
        match self.l4 {
            L4::Tcp { .. } => IpNumber::TCP,
            L4::Udp { .. } => IpNumber::UDP,
        }
    }

    /// The connection-table key of this packet, as the director sees it.
    pub fn conn_key(&self) -> ConnKey {
        let (sport, dport) = self.ports();
        ConnKey {
            saddr: v4_addr(self.src),
            daddr: v4_addr(self.dst),
            sport: port_be(sport),
            dport: port_be(dport),
            proto: self.proto().0,
            family: AF_INET,
            _pad: [0; 2],
        }
    }

    /// The IPv4 header of this packet, checksum not yet set.
    pub fn ip_header(&self) -> Ipv4Header {
        let mut ip = Ipv4Header {
            dscp: IpDscp::try_new(self.tos >> 2).expect("a 6-bit DSCP"),
            ecn: IpEcn::try_new(self.tos & 3).expect("a 2-bit ECN"),
            identification: self.id,
            dont_fragment: self.df,
            more_fragments: self.mf,
            fragment_offset: IpFragOffset::try_new(self.frag_off).expect("a 13-bit offset"),
            time_to_live: self.ttl,
            protocol: self.proto(),
            source: self.src,
            destination: self.dst,
            options: Ipv4Options::try_from(&self.options[..])
                .expect("IPv4 options of a multiple of 4 bytes, <= 40"),
            ..Ipv4Header::default()
        };
        ip.set_payload_len(self.l4_bytes_len())
            .expect("a payload that fits IPv4");
        ip
    }

    fn l4_bytes_len(&self) -> usize {
        let header = match self.l4 {
            L4::Tcp { .. } => TcpHeader::MIN_LEN,
            L4::Udp { .. } => UdpHeader::LEN,
        };
        header + self.payload.len()
    }

    /// The IPv4 packet (header, L4 header, payload) with correct checksums.
    pub fn ip_bytes(&self) -> Vec<u8> {
        let ip = self.ip_header();
        let mut out = Vec::new();
        ip.write(&mut out).expect("IPv4 header serialises");
        match self.l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => {
                let mut tcp = TcpHeader::new(sport, dport, 0x0102_0304, 64240);
                tcp.fin = flags & FIN != 0;
                tcp.syn = flags & SYN != 0;
                tcp.rst = flags & RST != 0;
                tcp.psh = flags & PSH != 0;
                tcp.ack = flags & ACK != 0;
                if tcp.ack {
                    tcp.acknowledgment_number = 0x0a0b_0c0d;
                }
                tcp.checksum = tcp
                    .calc_checksum_ipv4(&ip, &self.payload)
                    .expect("TCP checksum");
                tcp.write(&mut out).expect("TCP header serialises");
            }
            L4::Udp {
                sport,
                dport,
                zero_checksum,
            } => {
                let mut udp = UdpHeader::with_ipv4_checksum(sport, dport, &ip, &self.payload)
                    .expect("UDP checksum");
                if zero_checksum {
                    udp.checksum = 0;
                }
                udp.write(&mut out).expect("UDP header serialises");
            }
        }
        out.extend_from_slice(&self.payload);
        out
    }

    /// The whole Ethernet frame.
    pub fn frame(&self) -> Vec<u8> {
        let mut out = eth_header(self.eth_src, self.eth_dst, EtherType::IPV4);
        out.extend_from_slice(&self.ip_bytes());
        out
    }

    /// This packet as a tunnelling director sends it to `real`
    /// (`ip_vs_tunnel_xmit`): a new Ethernet header towards the real, then an
    /// outer IPv4 header (protocol 4, director -> real, TOS, TTL, DF and id
    /// of the inner header), then this packet's IPv4 bytes unchanged.
    pub fn tunnelled(
        &self,
        saddr: [u8; 4],
        real: [u8; 4],
        smac: [u8; 6],
        dmac: [u8; 6],
    ) -> Vec<u8> {
        let inner = self.ip_bytes();
        let mut outer = Ipv4Header {
            dscp: IpDscp::try_new(self.tos >> 2).expect("a 6-bit DSCP"),
            ecn: IpEcn::try_new(self.tos & 3).expect("a 2-bit ECN"),
            identification: self.id,
            dont_fragment: self.df,
            time_to_live: self.ttl,
            protocol: IpNumber::IPV4,
            source: saddr,
            destination: real,
            ..Ipv4Header::default()
        };
        outer.set_payload_len(inner.len()).expect("fits IPv4");
        let mut out = eth_header(smac, dmac, EtherType::IPV4);
        outer.write(&mut out).expect("IPv4 header serialises");
        out.extend_from_slice(&inner);
        out
    }
}

/// A client packet as NAT forwards it (`ip_vs_nat_xmit`): destination is the
/// real's address and port, TTL one less, MACs of the hop towards the real.
pub fn nat_to(p: &Pkt, real: [u8; 4], port: u16) -> Pkt {
    p.clone()
        .to(real, port)
        .ttl(p.ttl - 1)
        .macs(DIRECTOR_REAL_MAC, real_mac(real))
}

/// A real's packet to the client on a NAT flow, as it reaches the director.
pub fn from_real(real: [u8; 4], rport: u16, client_port: u16, flags: u8) -> Pkt {
    Pkt::tcp(rport, client_port, flags)
        .from(real, rport)
        .to(CLIENT, client_port)
        .macs(real_mac(real), DIRECTOR_REAL_MAC)
}

/// A real's reply as the director sends it back: source VIP:vport, TTL one
/// less, back to the router the client's packets came from.
pub fn back_to_client(reply: &Pkt, vport: u16) -> Pkt {
    reply
        .clone()
        .from(VIP, vport)
        .ttl(reply.ttl - 1)
        .macs(DIRECTOR_MAC, ROUTER_MAC)
}

/// A 14-byte Ethernet header.
pub fn eth_header(src: [u8; 6], dst: [u8; 6], ether_type: EtherType) -> Vec<u8> {
    Ethernet2Header {
        source: src,
        destination: dst,
        ether_type,
    }
    .to_bytes()
    .to_vec()
}

/// An ARP who-has for the VIP.
pub fn arp_request() -> Vec<u8> {
    let arp = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: ROUTER_MAC,
        sender_ipv4: CLIENT,
        target_mac: [0; 6],
        target_ipv4: VIP,
    };
    let builder = PacketBuilder::ethernet2(ROUTER_MAC, [0xff; 6]).arp(arp.into());
    let mut out = Vec::new();
    builder.write(&mut out).expect("ARP serialises");
    out
}

/// An IPv6 TCP SYN to port 80.
pub fn ipv6_syn() -> Vec<u8> {
    let vip6 = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64,
    ];
    let client6 = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07,
    ];
    let builder = PacketBuilder::ethernet2(ROUTER_MAC, DIRECTOR_MAC)
        .ipv6(client6, vip6, 64)
        .tcp(40000, HTTP, 1, 64240)
        .syn();
    let mut out = Vec::new();
    builder.write(&mut out, &[]).expect("IPv6 serialises");
    out
}

/// An ICMP echo request from the client to `dst`.
pub fn icmp_echo(dst: [u8; 4]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(ROUTER_MAC, DIRECTOR_MAC)
        .ipv4(CLIENT, dst, 64)
        .icmpv4_echo_request(0x4242, 1);
    let mut out = Vec::new();
    builder.write(&mut out, b"ping").expect("ICMP serialises");
    out
}

/// Checks every checksum of an Ethernet/IPv4 or IPv6 frame from scratch:
/// the IPv4 header, and the TCP, UDP (an IPv4 UDP 0 means "none") or ICMP
/// checksum; a tunnelled packet is checked at both layers.
pub fn assert_checksums(frame: &[u8], what: &str) {
    let (eth, ip) = Ethernet2Header::from_slice(frame).expect("an Ethernet header");
    match eth.ether_type {
        EtherType::IPV4 => assert_ip_checksums(ip, what),
        EtherType::IPV6 => assert_ip6_checksums(ip, what),
        other => panic!("{what}: the output is not IP but {other:?}"),
    }
}

/// Whether an IPv6 packet has a fragment header among its extensions.
fn has_fragment_header(ip: &[u8]) -> bool {
    let (mut next, mut off) = (ip[6], 40);
    while matches!(next, 0 | 43 | 60) && off + 2 <= ip.len() {
        next = ip[off];
        off += (usize::from(ip[off + 1]) + 1) * 8;
    }
    next == 44
}

/// IPv6: the upper layer's checksum over its pseudo-header (RFC 8200 8.1),
/// summed here from the bytes, past any extension headers.
fn assert_ip6_checksums(bytes: &[u8], what: &str) {
    let ip = etherparse::Ipv6Slice::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{what}: output IPv6 packet does not parse: {e}"));
    let payload = ip.payload();
    // etherparse 0.19's slice reads a fragment's offset with the wrong
    // mask (it misses offsets below 256 bytes), so look for the header here.
    if payload.fragmented || has_fragment_header(bytes) {
        return;
    }
    let header = ip.header();
    let body = payload.payload;
    let pseudo_sum = |next: u8| {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&header.source());
        pseudo.extend_from_slice(&header.destination());
        pseudo.extend_from_slice(&(body.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, next]);
        lb_common::csum::fold(lb_common::csum::sum_be(body, lb_common::csum::sum_be(&pseudo, 0)))
    };
    match payload.ip_number {
        IpNumber::TCP | IpNumber::UDP | IpNumber::IPV6_ICMP => {
            assert_eq!(pseudo_sum(payload.ip_number.0), 0xffff, "{what}: {:?} checksum", payload.ip_number);
            if payload.ip_number == IpNumber::IPV6_ICMP && body.len() >= 48 {
                // An error quotes an IPv6 header, which must parse.
                etherparse::Ipv6Header::from_slice(&body[8..])
                    .unwrap_or_else(|e| panic!("{what}: quoted IPv6 header does not parse: {e}"));
            }
        }
        IpNumber(41) => assert_ip6_checksums(body, what),
        other => panic!("{what}: unexpected IPv6 next header {other:?}"),
    }
}

fn assert_ip_checksums(bytes: &[u8], what: &str) {
    let (ip, _) = Ipv4Header::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{what}: output IPv4 header does not parse: {e}"));
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "{what}: IPv4 header checksum"
    );
    // A fragment's L4 checksum covers the whole datagram: nothing to check
    // in one piece of it.
    if ip.more_fragments || ip.fragment_offset.value() != 0 {
        return;
    }
    let end = usize::from(ip.total_len);
    assert!(
        end <= bytes.len(),
        "{what}: IPv4 total length {end} > {} bytes present",
        bytes.len()
    );
    let body = &bytes[ip.header_len()..end];
    match ip.protocol {
        IpNumber::TCP => {
            let (tcp, data) = TcpHeader::from_slice(body).expect("a TCP header");
            let want = tcp.calc_checksum_ipv4(&ip, data).expect("TCP checksum");
            assert_eq!(tcp.checksum, want, "{what}: TCP checksum");
        }
        IpNumber::UDP => {
            let (udp, data) = UdpHeader::from_slice(body).expect("a UDP header");
            if udp.checksum != 0 {
                let want = udp.calc_checksum_ipv4(&ip, data).expect("UDP checksum");
                assert_eq!(udp.checksum, want, "{what}: UDP checksum");
            }
        }
        IpNumber::IPV4 => assert_ip_checksums(body, what),
        IpNumber::ICMP => {
            let sum = lb_common::csum::sum_be(body, 0);
            assert_eq!(lb_common::csum::fold(sum), 0xffff, "{what}: ICMP checksum");
            // An error quotes an IP header, whose checksum must hold too.
            if matches!(body.first(), Some(3 | 4 | 11)) && body.len() >= 28 {
                let (quoted, _) = Ipv4Header::from_slice(&body[8..])
                    .unwrap_or_else(|e| panic!("{what}: quoted header does not parse: {e}"));
                assert_eq!(quoted.header_checksum, quoted.calc_header_checksum(), "{what}: quoted IPv4 checksum");
            }
        }
        other => panic!("{what}: unexpected IP protocol {other:?}"),
    }
}

pub fn action_name(action: u32) -> &'static str {
    match action {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
        _ => "unknown action",
    }
}

/// Where two frames first differ, with both as hex, for assertion messages.
fn byte_diff(got: &[u8], want: &[u8]) -> String {
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let hex = |b: &[u8]| {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "first difference at byte {first} (lengths {} vs {})\n   got: {}\n  want: {}",
        got.len(),
        want.len(),
        hex(got),
        hex(want)
    )
}

/// A real reached by NAT on `ifindex` 1 with its next hop resolved.
pub fn nat_real(addr: [u8; 4], port: u16) -> Real {
    Real {
        addr: v4_addr(addr),
        port: port_be(port),
        forward: FWD_NAT,
        family: AF_INET,
        weight: 1,
        flags: REAL_F_NEXTHOP,
        ifindex: LO_IFINDEX,
        dmac: real_mac(addr),
        smac: DIRECTOR_REAL_MAC,
        ..Real::default()
    }
}

/// A direct-routing real: it holds the VIP itself, so its port is the VIP's.
pub fn dr_real(addr: [u8; 4], vport: u16) -> Real {
    Real {
        forward: FWD_DR,
        ..nat_real(addr, vport)
    }
}

/// A tunnelling real, reached from `DIRECTOR_IP`.
pub fn tun_real(addr: [u8; 4], vport: u16) -> Real {
    Real {
        forward: FWD_TUN,
        tun_saddr: v4_addr(DIRECTOR_IP),
        ..nat_real(addr, vport)
    }
}

/// One freshly loaded copy of the data plane: its own maps, both programs.
pub struct Lb {
    ebpf: Ebpf,
    /// Keeps the scheduler table filled while the instance lives.
    _schedulers: aya::maps::Map,
    services: Vec<ServiceKey>,
    next_real: u32,
}

impl Lb {
    pub fn new() -> Self {
        let mut ebpf = Ebpf::load(lb_user::ebpf_object())
            .expect("loading the xlvs eBPF object (these tests need root)");
        // The director with its scheduler programs, as `xlvs run` loads it.
        let schedulers = lb_user::dataplane::programs::load_director(&mut ebpf)
            .unwrap_or_else(|e| panic!("the verifier accepts the director: {e:?}"));
        for name in [PROG_DECAP] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .unwrap_or_else(|| panic!("program {name} in the object"))
                .try_into()
                .unwrap_or_else(|e| panic!("{name} is an XDP program: {e}"));
            prog.load()
                .unwrap_or_else(|e| panic!("the verifier accepts {name}: {e:?}"));
        }
        // Real ids start at 1 so that an unset SERVICE_REALS slot (0) never
        // names a configured real by accident.
        Self {
            ebpf,
            _schedulers: schedulers,
            services: Vec::new(),
            next_real: 1,
        }
    }

    /// A map of this instance as an array, for direct reads and writes.
    pub fn array<V: aya::Pod>(&mut self, name: &str) -> Array<&mut MapData, V> {
        Array::try_from(
            self.ebpf
                .map_mut(name)
                .unwrap_or_else(|| panic!("map {name}")),
        )
        .unwrap_or_else(|e| panic!("map {name} as an array: {e}"))
    }

    /// A map of this instance as a hash map.
    pub fn hash<K: aya::Pod, V: aya::Pod>(&mut self, name: &str) -> HashMap<&mut MapData, K, V> {
        HashMap::try_from(
            self.ebpf
                .map_mut(name)
                .unwrap_or_else(|| panic!("map {name}")),
        )
        .unwrap_or_else(|e| panic!("map {name} as a hash: {e}"))
    }

    fn per_cpu_sum<V: aya::Pod>(&self, name: &str, index: u32) -> Vec<V> {
        let map = self.ebpf.map(name).unwrap_or_else(|| panic!("map {name}"));
        let array: PerCpuArray<&MapData, V> =
            PerCpuArray::try_from(map).unwrap_or_else(|e| panic!("map {name} as per-CPU: {e}"));
        let values: PerCpuValues<V> = array
            .get(&index, 0)
            .unwrap_or_else(|e| panic!("{name}[{index}]: {e}"));
        values.iter().copied().collect()
    }

    /// Adds an empty round-robin service and returns its id.
    pub fn add_service(&mut self, vip: [u8; 4], port: u16, proto: u8) -> u32 {
        self.add_service_key(ServiceKey {
            addr: v4_addr(vip),
            port: port_be(port),
            proto,
            family: AF_INET,
        })
    }

    /// As [`Lb::add_service`], for an IPv6 VIP.
    pub fn add_service6(&mut self, vip: [u8; 16], port: u16, proto: u8) -> u32 {
        self.add_service_key(ServiceKey {
            addr: lb_common::v6_addr(vip),
            port: port_be(port),
            proto,
            family: lb_common::AF_INET6,
        })
    }

    fn add_service_key(&mut self, key: ServiceKey) -> u32 {
        let id = u32::try_from(self.services.len()).expect("few services");
        self.services.push(key);
        self.set_service(id, 0);
        self.array::<ServiceReals>(MAP_SERVICE_REALS)
            .set(id, ServiceReals::default(), 0)
            .expect("clear SERVICE_REALS");
        self.array::<SchedState>(MAP_SCHED_STATE)
            .set(id, SchedState::default(), 0)
            .expect("clear SCHED_STATE");
        id
    }

    fn set_service(&mut self, id: u32, nreals: u32) {
        let key = self.services[id as usize];
        let service = Service {
            id,
            nreals,
            scheduler: SCHED_RR,
            ..Service::default()
        };
        self.hash::<ServiceKey, Service>(MAP_SERVICES)
            .insert(key, service, 0)
            .expect("insert into SERVICES");
    }

    /// Appends `real` to the end of the service's scan order; returns its id.
    pub fn add_real(&mut self, service: u32, real: Real) -> u32 {
        let id = self.next_real;
        self.next_real += 1;
        self.set_real(id, Real { service, ..real });
        let key = self.services[service as usize];
        let nreals = self.service(&key).nreals as usize;
        let mut reals = self.array::<ServiceReals>(MAP_SERVICE_REALS);
        let mut list = reals.get(&service, 0).expect("read SERVICE_REALS");
        assert!(
            nreals < MAX_REALS_PER_SERVICE,
            "at most {MAX_REALS_PER_SERVICE} reals"
        );
        list.ids[nreals] = id;
        reals.set(service, list, 0).expect("write SERVICE_REALS");
        self.set_service(service, nreals as u32 + 1);
        id
    }

    /// Overwrites the REALS slot `id`.
    pub fn set_real(&mut self, id: u32, real: Real) {
        self.array::<Real>(MAP_REALS)
            .set(id, real, 0)
            .expect("write REALS");
    }

    pub fn service(&mut self, key: &ServiceKey) -> Service {
        self.hash::<ServiceKey, Service>(MAP_SERVICES)
            .get(key, 0)
            .expect("a service")
    }

    pub fn sched_cursor(&mut self, service: u32) -> u32 {
        self.array::<SchedState>(MAP_SCHED_STATE)
            .get(&service, 0)
            .expect("SCHED_STATE")
            .cursor
    }

    pub fn add_decap_vip(&mut self, vip: [u8; 4]) {
        self.add_decap_key(VipKey {
            addr: v4_addr(vip),
            family: AF_INET,
            _pad: [0; 3],
        });
    }

    pub fn add_decap_vip6(&mut self, vip: [u8; 16]) {
        self.add_decap_key(VipKey {
            addr: lb_common::v6_addr(vip),
            family: lb_common::AF_INET6,
            _pad: [0; 3],
        });
    }

    fn add_decap_key(&mut self, key: VipKey) {
        self.hash::<VipKey, u32>(MAP_DECAP_VIPS)
            .insert(key, 1, 0)
            .expect("insert DECAP_VIPS");
    }

    pub fn conn(&mut self, key: &ConnKey) -> Option<Conn> {
        self.hash::<ConnKey, Conn>(MAP_CONNS).get(key, 0).ok()
    }

    pub fn insert_conn(&mut self, key: ConnKey, conn: Conn) {
        self.hash::<ConnKey, Conn>(MAP_CONNS)
            .insert(key, conn, 0)
            .expect("insert into CONNS");
    }

    pub fn conn_count(&mut self) -> usize {
        self.hash::<ConnKey, Conn>(MAP_CONNS).keys().count()
    }

    /// A COUNTERS slot summed over CPUs.
    pub fn counter(&self, index: u32) -> u64 {
        self.per_cpu_sum::<u64>(MAP_COUNTERS, index).iter().sum()
    }

    /// A real's REAL_STATS summed over CPUs.
    pub fn real_stats(&self, real: u32) -> Stats {
        self.per_cpu_sum::<Stats>(MAP_REAL_STATS, real)
            .iter()
            .fold(Stats::default(), |a, s| Stats {
                conns: a.conns + s.conns,
                inpkts: a.inpkts + s.inpkts,
                outpkts: a.outpkts + s.outpkts,
                inbytes: a.inbytes + s.inbytes,
                outbytes: a.outbytes + s.outbytes,
            })
    }

    /// Asserts that the counters listed are what `expected` says and every
    /// other one is zero.
    pub fn assert_counters(&self, expected: &[(u32, u64)], what: &str) {
        for index in 0..counter::COUNT {
            let want = expected
                .iter()
                .find(|(i, _)| *i == index)
                .map_or(0, |&(_, n)| n);
            let got = self.counter(index);
            assert_eq!(
                got,
                want,
                "{what}: counter {}",
                counter::NAMES[index as usize]
            );
        }
    }

    /// Empties CONNS (the benchmark's new-flow runs would fill it).
    pub fn clear_conns(&mut self) {
        let mut conns = self.hash::<ConnKey, Conn>(MAP_CONNS);
        let keys: Vec<ConnKey> = conns.keys().map(|k| k.expect("a CONNS key")).collect();
        for key in &keys {
            conns.remove(key).expect("delete from CONNS");
        }
    }

    /// One of the loaded XDP programs.
    pub fn program(&self, name: &str) -> &Xdp {
        self.ebpf
            .program(name)
            .unwrap_or_else(|| panic!("program {name}"))
            .try_into()
            .expect("an XDP program")
    }

    /// One BPF_PROG_TEST_RUN of `name` (repeat 1) into `out`, which must have
    /// room for the output: (action, output length, kernel-measured time).
    pub fn run_into(&self, name: &str, frame: &[u8], out: &mut [u8]) -> (u32, usize, Duration) {
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(out),
            ..TestRunOptions::default()
        };
        let result = self
            .program(name)
            .test_run(opts)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN {name}: {e:?}"));
        (
            result.return_value,
            result.data_size_out as usize,
            result.duration,
        )
    }

    fn run_prog(&self, name: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        // Room for a tunnel header and then some.
        let mut out = vec![0u8; frame.len() + 64];
        let (action, len, _) = self.run_into(name, frame, &mut out);
        out.truncate(len);
        (action, out)
    }

    /// Runs one frame through `xlvs_director`: (action, output frame).
    pub fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run_prog(PROG_DIRECTOR, frame)
    }

    /// Runs one frame through `xlvs_decap`.
    pub fn run_decap(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run_prog(PROG_DECAP, frame)
    }

    /// One fixture through the director: the verdict and the exact output.
    /// Rewritten output also has all its checksums recomputed and checked.
    /// Returns the output for any further checks.
    pub fn expect(&self, what: &str, input: &[u8], action: u32, output: &[u8]) -> Vec<u8> {
        let (got_action, got) = self.run(input);
        check_result(what, input, (got_action, &got), action, output);
        got
    }

    /// As [`Lb::expect`], through `xlvs_decap`.
    pub fn expect_decap(&self, what: &str, input: &[u8], action: u32, output: &[u8]) -> Vec<u8> {
        let (got_action, got) = self.run_decap(input);
        check_result(what, input, (got_action, &got), action, output);
        got
    }
}

fn check_result(what: &str, input: &[u8], got: (u32, &[u8]), action: u32, output: &[u8]) {
    assert_eq!(
        got.0,
        action,
        "{what}: got {} instead of {}",
        action_name(got.0),
        action_name(action)
    );
    assert!(
        got.1 == output,
        "{what}: output bytes differ\n{}",
        byte_diff(got.1, output)
    );
    if got.1 != input {
        assert_checksums(got.1, what);
    }
}

/// Where a service is found: one VIP:port, or an address range
/// (`10.50.0.0/16:80`, in `SERVICE_RANGES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vip {
    Exact([u8; 4], u16),
    Range([u8; 4], u8, u16),
}

/// The scheduler tables of a service with these reals, as the controller
/// builds them: `reals` in scan order (newest-added first), `last_weights`
/// mh's last non-zero weights (`sched::mh_last_weight`) in the same order.
pub fn sched_tables(
    scheduler: u8,
    reals: &[Real],
    last_weights: &[u32],
) -> (SchedState, Option<Buckets>, Option<Box<MaglevTable>>) {
    let weights: Vec<u32> = reals.iter().map(|r| r.weight).collect();
    let mut state = SchedState::default();
    let (mut buckets, mut maglev) = (None, None);
    match scheduler {
        SCHED_WRR => state = SchedState::new(weights.iter().copied()),
        SCHED_DH => {
            let mut b = Buckets::default();
            dh_build(reals.len() as u32, &mut b.reals);
            buckets = Some(b);
        }
        SCHED_SH => {
            let mut b = Buckets::default();
            sh_build(&weights, &mut b.reals);
            buckets = Some(b);
        }
        SCHED_MH => {
            let mh: Vec<MhReal> = reals
                .iter()
                .zip(last_weights)
                .map(|(r, &last_weight)| MhReal {
                    addr: r.addr,
                    port: r.port,
                    last_weight,
                })
                .collect();
            let mut t = Box::<MaglevTable>::default();
            mh_build(&mh, AF_INET, &mut t.reals);
            maglev = Some(t);
        }
        _ => {}
    }
    (state, buckets, maglev)
}

/// Writing the maps as the controller does, for services of any scheduler,
/// with reals added and removed one at a time (the scheduler conformance
/// suite and the benchmark).
impl Lb {
    /// The eBPF object, for program information.
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// The `SERVICE_RANGES` trie.
    pub fn ranges(&mut self) -> LpmTrie<&mut MapData, RangeData, Service> {
        LpmTrie::try_from(
            self.ebpf
                .map_mut(MAP_SERVICE_RANGES)
                .expect("map SERVICE_RANGES"),
        )
        .expect("SERVICE_RANGES as an LPM trie")
    }

    /// A service id for a caller that writes the service's maps itself
    /// ([`Lb::put_service`]).
    pub fn reserve_service(&mut self) -> u32 {
        let id = u32::try_from(self.services.len()).expect("few services");
        self.services.push(ServiceKey::default());
        id
    }

    /// A fresh real id (ids are never reused).
    pub fn reserve_real(&mut self) -> u32 {
        let id = self.next_real;
        self.next_real += 1;
        id
    }

    /// Real ids handed out so far (the next one).
    pub fn next_real_id(&self) -> u32 {
        self.next_real
    }

    /// Writes a service's value where the director looks it up.
    pub fn put_service(&mut self, vip: Vip, proto: u8, service: Service) {
        match vip {
            Vip::Exact(addr, port) => {
                let key = ServiceKey {
                    addr: v4_addr(addr),
                    port: port_be(port),
                    proto,
                    family: AF_INET,
                };
                self.hash::<ServiceKey, Service>(MAP_SERVICES)
                    .insert(key, service, 0)
                    .expect("insert into SERVICES");
            }
            Vip::Range(addr, prefix, port) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(prefix))
                    .unwrap_or(0)
                    .to_be_bytes();
                let net: Vec<u8> = addr.iter().zip(mask).map(|(a, m)| a & m).collect();
                let key = Key::new(
                    range_prefix_len(u32::from(prefix)),
                    RangeData {
                        proto,
                        family: AF_INET,
                        port: port_be(port),
                        addr: v4_addr([net[0], net[1], net[2], net[3]]),
                    },
                );
                self.ranges()
                    .insert(&key, service, 0)
                    .expect("insert into SERVICE_RANGES");
            }
        }
    }

    /// `SERVICE_REALS[service]`: real ids in scan order.
    pub fn put_service_reals(&mut self, service: u32, ids: &[u32]) {
        assert!(
            ids.len() <= MAX_REALS_PER_SERVICE,
            "at most {MAX_REALS_PER_SERVICE} reals"
        );
        let mut list = ServiceReals::default();
        list.ids[..ids.len()].copy_from_slice(ids);
        self.array::<ServiceReals>(MAP_SERVICE_REALS)
            .set(service, list, 0)
            .expect("write SERVICE_REALS");
    }

    pub fn sched_state(&mut self, service: u32) -> SchedState {
        self.array::<SchedState>(MAP_SCHED_STATE)
            .get(&service, 0)
            .expect("read SCHED_STATE")
    }

    pub fn put_sched_state(&mut self, service: u32, state: SchedState) {
        self.array::<SchedState>(MAP_SCHED_STATE)
            .set(service, state, 0)
            .expect("write SCHED_STATE");
    }

    pub fn put_buckets(&mut self, service: u32, buckets: &Buckets) {
        self.array::<Buckets>(MAP_BUCKETS)
            .set(service, buckets, 0)
            .expect("write BUCKETS");
    }

    pub fn put_maglev(&mut self, service: u32, table: &MaglevTable) {
        self.hash::<u32, MaglevTable>(MAP_MAGLEV)
            .insert(service, table, 0)
            .expect("write MAGLEV");
    }

    /// A real's `REAL_CONNS` slot.
    pub fn real_conns(&mut self, real: u32) -> RealConns {
        self.array::<RealConns>(MAP_REAL_CONNS)
            .get(&real, 0)
            .expect("read REAL_CONNS")
    }

    /// Overwrites a real's `REAL_CONNS` slot (the controller's counterpart
    /// is an atomic add; nothing runs concurrently in a test).
    pub fn put_real_conns(&mut self, real: u32, conns: RealConns) {
        self.array::<RealConns>(MAP_REAL_CONNS)
            .set(real, conns, 0)
            .expect("write REAL_CONNS");
    }

    /// Adds a service of any scheduler with `reals` in scan order (the
    /// first is the newest-added) and its scheduler tables, as `xlvs`
    /// installs one. Returns the service id and the reals' ids.
    pub fn add_scheduled_service(
        &mut self,
        vip: Vip,
        proto: u8,
        scheduler: u8,
        flags: u8,
        reals: &[Real],
    ) -> (u32, Vec<u32>) {
        let id = self.reserve_service();
        let ids: Vec<u32> = reals
            .iter()
            .map(|real| {
                let rid = self.reserve_real();
                self.set_real(
                    rid,
                    Real {
                        service: id,
                        ..*real
                    },
                );
                rid
            })
            .collect();
        self.put_service_reals(id, &ids);
        let weights: Vec<u32> = reals.iter().map(|r| r.weight).collect();
        let (state, buckets, maglev) = sched_tables(scheduler, reals, &weights);
        self.put_sched_state(id, state);
        if let Some(b) = buckets {
            self.put_buckets(id, &b);
        }
        if let Some(t) = maglev {
            self.put_maglev(id, &t);
        }
        let service = Service {
            id,
            nreals: ids.len() as u32,
            scheduler,
            flags,
            persist_mask: v4_addr([255; 4]),
            lblc_expire_ns: 86_400 * 1_000_000_000,
            ..Service::default()
        };
        self.put_service(vip, proto, service);
        (id, ids)
    }
}

/// Hostile-input helpers (`tests/tests/hostile.rs`).
impl Lb {
    /// As [`Lb::new`], with a connection table (`CONNS`, an LRU hash) of
    /// `entries`, as `[director] conn_table_size` sets it.
    pub fn with_conn_table_size(entries: u32) -> Self {
        let mut ebpf = aya::EbpfLoader::new()
            .map_max_entries(lb_common::MAP_CONNS, entries)
            .load(lb_user::ebpf_object())
            .expect("loading the xlvs eBPF object (these tests need root)");
        let schedulers = lb_user::dataplane::programs::load_director(&mut ebpf)
            .unwrap_or_else(|e| panic!("the verifier accepts the director: {e:?}"));
        Self {
            ebpf,
            _schedulers: schedulers,
            services: Vec::new(),
            next_real: 1,
        }
    }

    /// Every COUNTERS slot, summed over CPUs, by index.
    pub fn counters(&self) -> Vec<u64> {
        (0..counter::COUNT).map(|i| self.counter(i)).collect()
    }

    /// Every CONNS entry.
    pub fn conns(&mut self) -> Vec<(ConnKey, Conn)> {
        self.hash::<ConnKey, Conn>(MAP_CONNS)
            .iter()
            .map(|e| e.expect("a CONNS entry"))
            .collect()
    }

    /// One BPF_PROG_TEST_RUN of the director that may fail (the kernel
    /// refuses frames shorter than an Ethernet header): the action and the
    /// output, or the error.
    pub fn try_run(&self, frame: &[u8]) -> Result<(u32, Vec<u8>), String> {
        let mut out = vec![0u8; frame.len() + 64];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        };
        let result = self
            .program(PROG_DIRECTOR)
            .test_run(opts)
            .map_err(|e| format!("{e:?}"))?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out))
    }
}
