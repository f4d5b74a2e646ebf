//! IPv6 packet fixtures: `BPF_PROG_TEST_RUN` on frames built by etherparse
//! (or laid out by hand where etherparse has no builder), checked byte for
//! byte. `xlvs_director` hands IPv6 to `xlvs_director6`; these run through
//! the director as the kernel would, tail call included.
//!
//! NAT66 both ways, direct routing, IPv6-in-IPv6 with "packet too big",
//! decapsulation, extension headers within their bound, the parser's
//! refusals with their counters, fragments following their first, and
//! persistence by prefix.

mod support;

use etherparse::{EtherType, PacketBuilder};
use lb_common::{
    AF_INET6, ConnKey, FWD_DR, FWD_NAT, FWD_TUN, IPPROTO_TCP, IPPROTO_UDP, MAP_SERVICES, REAL_F_NEXTHOP, Real,
    SVC_F_PERSISTENT, Service, ServiceKey, counter, v6_addr,
};
use support::*;

const CLIENT6: [u8; 16] = ip6(0x2001_0db8_00c1, 7);
const CLIENT6_SAME_64: [u8; 16] = ip6(0x2001_0db8_00c1, 0x99);
const VIP6: [u8; 16] = ip6(0x2001_0db8_0000, 0x100);
const NOT_A_VIP6: [u8; 16] = ip6(0x2001_0db8_0000, 0x200);
const REAL6_1: [u8; 16] = ip6(0x2001_0db8_0001, 0x11);
const REAL6_2: [u8; 16] = ip6(0x2001_0db8_0001, 0x12);
const DIRECTOR6: [u8; 16] = ip6(0x2001_0db8_0001, 1);

/// `prefix48::…:low`: a /48 in the top bits, the interface id at the end.
const fn ip6(prefix48: u64, low: u16) -> [u8; 16] {
    let p = prefix48.to_be_bytes();
    let l = low.to_be_bytes();
    [p[2], p[3], p[4], p[5], p[6], p[7], 0, 0, 0, 0, 0, 0, 0, 0, l[0], l[1]]
}

const fn real6_mac(addr: [u8; 16]) -> [u8; 6] {
    [0x02, 0, 0, 0, 6, addr[15]]
}

fn real6(addr: [u8; 16], port: u16, forward: u8) -> Real {
    Real {
        addr: v6_addr(addr),
        tun_saddr: v6_addr(DIRECTOR6),
        port: port_be(port),
        forward,
        family: AF_INET6,
        weight: 1,
        flags: REAL_F_NEXTHOP,
        ifindex: LO_IFINDEX,
        dmac: real6_mac(addr),
        smac: DIRECTOR_REAL_MAC,
        ..Real::default()
    }
}

/// One side of a TCP/UDP packet over IPv6, with the fields fixtures change.
#[derive(Clone, Copy)]
struct P6 {
    macs: ([u8; 6], [u8; 6]),
    src: ([u8; 16], u16),
    dst: ([u8; 16], u16),
    hop: u8,
    /// TCP flags, or `None` for UDP.
    tcp: Option<u8>,
}

impl P6 {
    fn tcp(src: ([u8; 16], u16), dst: ([u8; 16], u16), flags: u8) -> Self {
        Self { macs: (ROUTER_MAC, DIRECTOR_MAC), src, dst, hop: 64, tcp: Some(flags) }
    }
    fn udp(src: ([u8; 16], u16), dst: ([u8; 16], u16)) -> Self {
        Self { tcp: None, ..Self::tcp(src, dst, 0) }
    }
    fn frame(&self, payload: &[u8]) -> Vec<u8> {
        let ip = PacketBuilder::ethernet2(self.macs.0, self.macs.1).ipv6(self.src.0, self.dst.0, self.hop);
        let mut out = Vec::new();
        match self.tcp {
            Some(flags) => {
                let mut b = ip.tcp(self.src.1, self.dst.1, 0x0102_0304, 64240);
                if flags & SYN != 0 {
                    b = b.syn();
                }
                if flags & ACK != 0 {
                    b = b.ack(0x0a0b_0c0d);
                }
                if flags & FIN != 0 {
                    b = b.fin();
                }
                b.write(&mut out, payload).expect("IPv6 TCP serialises");
            }
            None => ip.udp(self.src.1, self.dst.1).write(&mut out, payload).expect("IPv6 UDP serialises"),
        }
        out
    }
    /// As NAT forwards it to `real`.
    fn nat_to(self, real: [u8; 16], port: u16) -> Self {
        Self { macs: (DIRECTOR_REAL_MAC, real6_mac(real)), dst: (real, port), hop: self.hop - 1, ..self }
    }
}

/// `frame` with `ext` (extension headers, chained: the last names
/// `frame`'s upper layer) spliced in after the fixed header, whose next
/// header becomes `first`. The upper layer's checksum does not cover
/// them, so it stays right.
fn with_ext(frame: &[u8], first: u8, ext: &[u8]) -> Vec<u8> {
    let mut out = frame[..54].to_vec();
    out[20] = first;
    let plen = u16::from_be_bytes([out[18], out[19]]) + ext.len() as u16;
    out[18..20].copy_from_slice(&plen.to_be_bytes());
    out.extend_from_slice(ext);
    out.extend_from_slice(&frame[54..]);
    out
}

/// An extension header of 8 bytes (PadN), naming `next`.
fn opts(next: u8) -> [u8; 8] {
    [next, 0, 1, 4, 0, 0, 0, 0]
}

/// The fragments of `frame`'s upper layer (from byte 54) at `cuts` (in
/// bytes, multiples of 8), each behind a fragment header with `id`.
fn fragments(frame: &[u8], id: u32, cuts: &[usize]) -> Vec<Vec<u8>> {
    let upper = &frame[54..];
    let next = frame[20];
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(upper.len());
    bounds
        .windows(2)
        .map(|w| {
            let (from, to) = (w[0], w[1]);
            let mut f = frame[..54].to_vec();
            f[20] = 44;
            f[18..20].copy_from_slice(&((8 + to - from) as u16).to_be_bytes());
            let more = u16::from(to < upper.len());
            f.extend_from_slice(&[next, 0]);
            f.extend_from_slice(&((from as u16) | more).to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(&upper[from..to]);
            f
        })
        .collect()
}

fn key6(src: ([u8; 16], u16), dst: ([u8; 16], u16), proto: u8) -> ConnKey {
    ConnKey {
        saddr: v6_addr(src.0),
        daddr: v6_addr(dst.0),
        sport: port_be(src.1),
        dport: port_be(dst.1),
        proto,
        family: AF_INET6,
        _pad: [0; 2],
    }
}

#[test]
fn nat66_rewrites_both_directions_and_records_the_connection() {
    let mut lb = Lb::new();
    let http = lb.add_service6(VIP6, HTTP, IPPROTO_TCP);
    let r1 = lb.add_real(http, real6(REAL6_1, REAL_HTTP, FWD_NAT));
    let r2 = lb.add_real(http, real6(REAL6_2, REAL_HTTP, FWD_NAT));
    let client = (CLIENT6, 40000);
    let syn = P6::tcp(client, (VIP6, HTTP), SYN);
    // rr's first pick is the first real in scan order.
    lb.expect("NAT66 SYN", &syn.frame(&[]), XDP_TX, &syn.nat_to(REAL6_1, REAL_HTTP).frame(&[]));
    let entry = lb.conn(&key6(client, (VIP6, HTTP), IPPROTO_TCP)).expect("the client's entry");
    assert_eq!(entry.real, r1);
    let reply_key = key6((REAL6_1, REAL_HTTP), client, IPPROTO_TCP);
    assert!(lb.conn(&reply_key).is_some(), "the entry the replies are found by");
    // The next segment follows the connection, with data.
    let ack = P6::tcp(client, (VIP6, HTTP), ACK);
    lb.expect("NAT66 ACK", &ack.frame(b"GET /"), XDP_TX, &ack.nat_to(REAL6_1, REAL_HTTP).frame(b"GET /"));
    // The real's reply goes back from the VIP.
    let reply = P6 { macs: (real6_mac(REAL6_1), DIRECTOR_REAL_MAC), ..P6::tcp((REAL6_1, REAL_HTTP), client, SYN | ACK) };
    let back = P6 { macs: (DIRECTOR_MAC, ROUTER_MAC), src: (VIP6, HTTP), hop: 63, ..reply };
    lb.expect("NAT66 reply", &reply.frame(&[]), XDP_TX, &back.frame(&[]));
    // A second client goes to the second real.
    let other = P6::tcp((CLIENT6, 40001), (VIP6, HTTP), SYN);
    lb.expect("second SYN", &other.frame(&[]), XDP_TX, &other.nat_to(REAL6_2, REAL_HTTP).frame(&[]));
    assert_eq!(lb.conn(&key6((CLIENT6, 40001), (VIP6, HTTP), IPPROTO_TCP)).unwrap().real, r2);
    assert_eq!(lb.real_stats(r1).inpkts, 2);
    assert_eq!(lb.real_stats(r1).outpkts, 1);
    assert_eq!(lb.real_stats(r1).inbytes, 60 + 65, "IPv6 packets counted whole (40 + payload)");
    // Hop limit 1: the kernel answers with time exceeded.
    let last_hop = P6 { hop: 1, ..ack };
    lb.expect("hop limit 1", &last_hop.frame(&[]), XDP_PASS, &last_hop.frame(&[]));
    lb.assert_counters(&[(counter::CONN_NEW, 2), (counter::PASS_TTL, 1)], "NAT66");

    // UDP: the checksum is mandatory in IPv6, and rewritten right.
    let dns = lb.add_service6(VIP6, DNS, IPPROTO_UDP);
    lb.add_real(dns, real6(REAL6_2, REAL_DNS, FWD_NAT));
    let query = P6::udp((CLIENT6, 5000), (VIP6, DNS));
    lb.expect("NAT66 UDP", &query.frame(b"query"), XDP_TX, &query.nat_to(REAL6_2, REAL_DNS).frame(b"query"));
}

#[test]
fn dr_and_ipv6_in_ipv6() {
    let mut lb = Lb::new();
    let dr = lb.add_service6(VIP6, HTTP, IPPROTO_TCP);
    lb.add_real(dr, real6(REAL6_1, HTTP, FWD_DR));
    let syn = P6::tcp((CLIENT6, 40000), (VIP6, HTTP), SYN);
    // Direct routing: only the MACs change.
    let routed = P6 { macs: (DIRECTOR_REAL_MAC, real6_mac(REAL6_1)), ..syn };
    lb.expect("DR over IPv6", &syn.frame(&[]), XDP_TX, &routed.frame(&[]));

    let tun = lb.add_service6(VIP6, 443, IPPROTO_TCP);
    let mut real = real6(REAL6_2, 443, FWD_TUN);
    real.mtu = 1500;
    let r = lb.add_real(tun, real);
    let syn = P6::tcp((CLIENT6, 40000), (VIP6, 443), SYN);
    let inner = syn.frame(&[]);
    // An outer IPv6 header, next header 41, director -> real, the inner
    // traffic class and hop limit, no flow label; the inner packet as it
    // came.
    let mut want = eth_header(DIRECTOR_REAL_MAC, real6_mac(REAL6_2), EtherType::IPV6);
    want.extend_from_slice(&[0x60, 0, 0, 0]);
    want.extend_from_slice(&((inner.len() - 14) as u16).to_be_bytes());
    want.extend_from_slice(&[41, 64]);
    want.extend_from_slice(&DIRECTOR6);
    want.extend_from_slice(&REAL6_2);
    want.extend_from_slice(&inner[14..]);
    lb.expect("IPv6-in-IPv6", &inner, XDP_TX, &want);

    // The traffic class is copied.
    let mut classy = P6::tcp((CLIENT6, 40001), (VIP6, 443), SYN).frame(&[]);
    classy[14] = 0x6b;
    classy[15] = 0x80; // traffic class 0xb8 (EF), flow label 0
    let (action, out) = lb.run(&classy);
    assert_eq!(action, XDP_TX);
    assert_eq!(&out[14..16], &[0x6b, 0x80], "outer traffic class");

    // A packet the outer header would take past the path MTU: packet too
    // big, from the VIP, with the MTU left (1500 - 40), quoting the IPv6
    // header and 8 bytes of TCP.
    let ack = P6::tcp((CLIENT6, 40000), (VIP6, 443), ACK);
    let big = ack.frame(&[0x5a; 1440]); // 40 + 20 + 1440 = 1500 bytes of IPv6
    let mut ptb = eth_header(DIRECTOR_MAC, ROUTER_MAC, EtherType::IPV6);
    ptb.extend_from_slice(&[0x60, 0, 0, 0, 0, 56, 58, 64]);
    ptb.extend_from_slice(&VIP6);
    ptb.extend_from_slice(&CLIENT6);
    let mut icmp = vec![2, 0, 0, 0];
    icmp.extend_from_slice(&1460u32.to_be_bytes());
    icmp.extend_from_slice(&big[14..14 + 48]);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&VIP6);
    pseudo.extend_from_slice(&CLIENT6);
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    let sum = lb_common::csum::sum_be(&icmp, lb_common::csum::sum_be(&pseudo, 0));
    icmp[2..4].copy_from_slice(&(!lb_common::csum::fold(sum)).to_be_bytes());
    ptb.extend_from_slice(&icmp);
    lb.expect("packet too big", &big, XDP_TX, &ptb);
    // What the outer header leaves room for (1460 bytes of IPv6) fits.
    let (action, out) = lb.run(&ack.frame(&[0x5a; 1400]));
    assert_eq!((action, out.len()), (XDP_TX, 14 + 40 + 1460));
    lb.assert_counters(&[(counter::CONN_NEW, 3), (counter::ICMP6_TOO_BIG_SENT, 1)], "DR and TUN");
    assert_eq!(lb.real_stats(r).inpkts, 4);
}

#[test]
fn decap_strips_ipv6_in_ipv6_for_its_vips() {
    let mut lb = Lb::new();
    lb.add_decap_vip6(VIP6);
    let inner = P6::tcp((CLIENT6, 40000), (VIP6, HTTP), SYN).frame(b"x");
    let tunnelled = |inner: &[u8]| {
        let mut f = eth_header(DIRECTOR_REAL_MAC, real6_mac(REAL6_1), EtherType::IPV6);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&((inner.len() - 14) as u16).to_be_bytes());
        f.extend_from_slice(&[41, 64]);
        f.extend_from_slice(&DIRECTOR6);
        f.extend_from_slice(&REAL6_1);
        f.extend_from_slice(&inner[14..]);
        f
    };
    let mut want = eth_header(DIRECTOR_REAL_MAC, real6_mac(REAL6_1), EtherType::IPV6);
    want.extend_from_slice(&inner[14..]);
    lb.expect_decap("IPv6-in-IPv6 for a VIP", &tunnelled(&inner), XDP_PASS, &want);
    let stranger = tunnelled(&P6::tcp((CLIENT6, 40000), (NOT_A_VIP6, HTTP), SYN).frame(&[]));
    lb.expect_decap("not for a VIP", &stranger, XDP_PASS, &stranger);
    lb.assert_counters(&[(counter::DECAP, 1)], "decap");
}

#[test]
fn extension_headers_and_refusals_each_have_their_counter() {
    let mut lb = Lb::new();
    let http = lb.add_service6(VIP6, HTTP, IPPROTO_TCP);
    lb.add_real(http, real6(REAL6_1, REAL_HTTP, FWD_NAT));
    let syn = P6::tcp((CLIENT6, 40000), (VIP6, HTTP), SYN);
    // Hop-by-hop and destination options are stepped over; NAT rewrites
    // the TCP header behind them.
    let ext: Vec<u8> = opts(60).iter().chain(opts(IPPROTO_TCP).iter()).copied().collect();
    lb.expect(
        "SYN behind two extension headers",
        &with_ext(&syn.frame(&[]), 0, &ext),
        XDP_TX,
        &with_ext(&syn.nat_to(REAL6_1, REAL_HTTP).frame(&[]), 0, &ext),
    );
    let untouched = |lb: &Lb, what: &str, frame: &[u8], action: u32| lb.expect(what, frame, action, frame);
    let next = P6::tcp((CLIENT6, 40001), (VIP6, HTTP), SYN).frame(&[]);
    // A routing header with segments left: not at its destination yet.
    untouched(&lb, "routing, segments left", &with_ext(&next, 43, &[IPPROTO_TCP, 0, 4, 1, 0, 0, 0, 0]), XDP_PASS);
    // Five extension headers: past the bound.
    let five: Vec<u8> = (0..5).flat_map(|i| opts(if i == 4 { IPPROTO_TCP } else { 60 })).collect();
    untouched(&lb, "five extension headers", &with_ext(&next, 60, &five), XDP_PASS);
    // A header that runs past the payload.
    untouched(&lb, "extension past the payload", &with_ext(&next, 60, &[IPPROTO_TCP, 9, 1, 4, 0, 0, 0, 0]), XDP_DROP);
    // Truncated: the payload length claims more than the frame holds.
    untouched(&lb, "truncated", &next[..next.len() - 1], XDP_DROP);
    untouched(&lb, "39 bytes of IPv6", &next[..14 + 39], XDP_DROP);
    let mut v4_in_v6 = next.clone();
    v4_in_v6[14] = 0x45;
    untouched(&lb, "version 4 behind an IPv6 EtherType", &v4_in_v6, XDP_DROP);
    // Neighbour solicitation and other ICMPv6 are the kernel's.
    let ns = {
        let b = PacketBuilder::ethernet2(ROUTER_MAC, DIRECTOR_MAC).ipv6(CLIENT6, VIP6, 255).icmpv6_echo_request(1, 1);
        let mut out = Vec::new();
        b.write(&mut out, b"ping").unwrap();
        out
    };
    untouched(&lb, "ICMPv6", &ns, XDP_PASS);
    untouched(&lb, "not a VIP", &P6::tcp((CLIENT6, 40002), (NOT_A_VIP6, HTTP), SYN).frame(&[]), XDP_PASS);
    let mut zero = P6::udp((CLIENT6, 5000), (VIP6, DNS)).frame(b"q");
    zero[14 + 40 + 6..14 + 40 + 8].copy_from_slice(&[0, 0]);
    untouched(&lb, "UDP without a checksum", &zero, XDP_DROP);
    untouched(&lb, "not a SYN", &P6::tcp((CLIENT6, 40003), (VIP6, HTTP), ACK).frame(&[]), XDP_PASS);
    untouched(&lb, "SYN+FIN", &P6::tcp((CLIENT6, 40004), (VIP6, HTTP), SYN | FIN).frame(&[]), XDP_DROP);
    lb.assert_counters(
        &[
            (counter::CONN_NEW, 1),
            (counter::PASS_IPV6_EXT, 2),
            (counter::DROP_BAD_HEADER, 3),
            (counter::DROP_TRUNCATED, 2),
            (counter::PASS_ICMP, 1),
            (counter::PASS_NOT_VIP, 1),
            (counter::PASS_NOT_SYN, 1),
            (counter::DROP_TCP_FLAGS, 1),
        ],
        "IPv6 refusals",
    );
}

#[test]
fn fragments_follow_their_first_and_persistence_keys_on_the_prefix() {
    let mut lb = Lb::new();
    let dns = lb.add_service6(VIP6, DNS, IPPROTO_UDP);
    lb.add_real(dns, real6(REAL6_1, REAL_DNS, FWD_NAT));
    let r2 = lb.add_real(dns, real6(REAL6_2, REAL_DNS, FWD_NAT));
    // Make rr pick the second real first, so that "the same real" is not
    // just the first one.
    lb.expect("warm-up", &P6::udp((CLIENT6, 4999), (VIP6, DNS)).frame(b"w"), XDP_TX,
        &P6::udp((CLIENT6, 4999), (VIP6, DNS)).nat_to(REAL6_1, REAL_DNS).frame(b"w"));
    let query = P6::udp((CLIENT6, 5000), (VIP6, DNS));
    let payload = [0x42u8; 64];
    let parts = fragments(&query.frame(&payload), 0xfeed_f00d, &[32]);
    let want = fragments(&query.nat_to(REAL6_2, REAL_DNS).frame(&payload), 0xfeed_f00d, &[32]);
    lb.expect("first fragment", &parts[0], XDP_TX, &want[0]);
    lb.expect("later fragment, after its first", &parts[1], XDP_TX, &want[1]);
    // A later fragment of a datagram whose first never came is the kernel's.
    let orphan = fragments(&query.frame(&payload), 0x0bad_0bad, &[32]);
    lb.expect("orphan fragment", &orphan[1], XDP_PASS, &orphan[1]);
    lb.assert_counters(
        &[(counter::CONN_NEW, 2), (counter::FRAG_RELAYED, 1), (counter::PASS_FRAGMENT, 1)],
        "IPv6 fragments",
    );
    assert_eq!(lb.real_stats(r2).inpkts, 2);

    // Persistence over a /64: another host of the client's /64 sticks to
    // the real its neighbour got; rr alone would move it on.
    let http = lb.add_service6(VIP6, HTTP, IPPROTO_TCP);
    lb.add_real(http, real6(REAL6_1, REAL_HTTP, FWD_NAT));
    lb.add_real(http, real6(REAL6_2, REAL_HTTP, FWD_NAT));
    let key = ServiceKey { addr: v6_addr(VIP6), port: port_be(HTTP), proto: IPPROTO_TCP, family: AF_INET6 };
    let service = lb.service(&key);
    let mask = v6_addr([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
    let persistent = Service { flags: SVC_F_PERSISTENT, persist_timeout: 360, persist_mask: mask, ..service };
    lb.hash::<ServiceKey, Service>(MAP_SERVICES).insert(key, persistent, 0).unwrap();
    let first = P6::tcp((CLIENT6, 41000), (VIP6, HTTP), SYN);
    lb.expect("persistent, first", &first.frame(&[]), XDP_TX, &first.nat_to(REAL6_1, REAL_HTTP).frame(&[]));
    let neighbour = P6::tcp((CLIENT6_SAME_64, 41001), (VIP6, HTTP), SYN);
    lb.expect("persistent, same /64", &neighbour.frame(&[]), XDP_TX, &neighbour.nat_to(REAL6_1, REAL_HTTP).frame(&[]));
    let elsewhere = P6::tcp((ip6(0x2001_0db8_00c2, 7), 41002), (VIP6, HTTP), SYN);
    lb.expect("persistent, another /64", &elsewhere.frame(&[]), XDP_TX, &elsewhere.nat_to(REAL6_2, REAL_HTTP).frame(&[]));
}

/// An ICMPv6 error from `from` to `to` of `kind` (code 0, `word` in the
/// second half of its header) quoting `quote` (an IPv6 packet, cut to
/// `quote_len`), with its checksum over the pseudo-header.
fn icmp6_error(macs: ([u8; 6], [u8; 6]), from: [u8; 16], to: [u8; 16], kind: u8, word: u32, quote: &[u8]) -> Vec<u8> {
    let mut icmp = vec![kind, 0, 0, 0];
    icmp.extend_from_slice(&word.to_be_bytes());
    icmp.extend_from_slice(quote);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&from);
    pseudo.extend_from_slice(&to);
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    let sum = lb_common::csum::sum_be(&icmp, lb_common::csum::sum_be(&pseudo, 0));
    icmp[2..4].copy_from_slice(&(!lb_common::csum::fold(sum)).to_be_bytes());
    let mut f = eth_header(macs.0, macs.1, EtherType::IPV6);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 64]);
    f.extend_from_slice(&from);
    f.extend_from_slice(&to);
    f.extend_from_slice(&icmp);
    f
}

/// A NAT real's "port unreachable" quoting `quoted` bytes of `to_real`
/// (a client's UDP query as the real got it) must go back to the client
/// from the VIP, quoting the query as the client `sent` it. The quote
/// keeps the hop limit the real saw (63) and its UDP checksum (its last
/// two of the `quoted` bytes), which are not compared.
fn expect_unreachable_back(lb: &mut Lb, to_real: &[u8], sent: &[u8], quoted: usize) {
    let unreach = icmp6_error((real6_mac(REAL6_2), DIRECTOR_REAL_MAC), REAL6_2, CLIENT6, 1, 0, &to_real[14..14 + quoted]);
    let mut back = icmp6_error((DIRECTOR_MAC, ROUTER_MAC), VIP6, CLIENT6, 1, 0, &sent[14..14 + quoted]);
    back[14 + 7] = 63;
    back[14 + 48 + 7] = 63;
    let (action, out) = lb.run(&unreach);
    assert_eq!(action, XDP_TX, "back to the client");
    let blank = |f: &[u8]| {
        let mut f = f.to_vec();
        f[14 + 42..14 + 44].copy_from_slice(&[0, 0]);
        f[14 + 48 + quoted - 2..14 + 48 + quoted].copy_from_slice(&[0, 0]);
        f
    };
    assert_eq!(blank(&out), blank(&back), "outer source, quoted destination and port are the VIP's");
    assert_checksums(&out, "relayed port unreachable");
}

#[test]
fn icmpv6_errors_reach_the_connection_and_nat_rewrites_them() {
    let mut lb = Lb::new();
    let http = lb.add_service6(VIP6, HTTP, IPPROTO_TCP);
    lb.add_real(http, real6(REAL6_1, REAL_HTTP, FWD_NAT));
    let dns = lb.add_service6(VIP6, DNS, IPPROTO_UDP);
    lb.add_real(dns, real6(REAL6_2, REAL_DNS, FWD_NAT));
    let dr = lb.add_service6(VIP6, 443, IPPROTO_TCP);
    lb.add_real(dr, real6(REAL6_2, 443, FWD_DR));
    let client = (CLIENT6, 40000);
    for syn in [P6::tcp(client, (VIP6, HTTP), SYN), P6::tcp(client, (VIP6, 443), SYN)] {
        assert_eq!(lb.run(&syn.frame(&[])).0, XDP_TX);
    }
    let query = P6::udp((CLIENT6, 5000), (VIP6, DNS));
    assert_eq!(lb.run(&query.frame(b"q")).0, XDP_TX);
    let router = ip6(0x2001_0db8_00c1, 1);

    // A router on the way to the client: "packet too big" about the VIP's
    // segment. NAT sends it to the real as if the real had been quoted.
    let from_vip = P6 { macs: (DIRECTOR_MAC, ROUTER_MAC), ..P6::tcp((VIP6, HTTP), client, ACK) }.frame(&[0; 1400]);
    let quote = &from_vip[14..14 + 40 + 8];
    let ptb = icmp6_error((ROUTER_MAC, DIRECTOR_MAC), router, VIP6, 2, 1400, quote);
    let as_real_sent = P6 { macs: (DIRECTOR_MAC, ROUTER_MAC), ..P6::tcp((REAL6_1, REAL_HTTP), client, ACK) }.frame(&[0; 1400]);
    let mut want = icmp6_error((DIRECTOR_REAL_MAC, real6_mac(REAL6_1)), router, REAL6_1, 2, 1400, &as_real_sent[14..14 + 48]);
    want[14 + 7] = 63; // forwarded: one hop less (not in the checksum)
    lb.expect("NAT packet too big", &ptb, XDP_TX, &want);

    // Direct routing: the same error goes to the real unchanged but for
    // the MACs.
    let from_vip = P6 { macs: (DIRECTOR_MAC, ROUTER_MAC), ..P6::tcp((VIP6, 443), client, ACK) }.frame(&[]);
    let ptb = icmp6_error((ROUTER_MAC, DIRECTOR_MAC), router, VIP6, 2, 1280, &from_vip[14..14 + 48]);
    let mut relayed = ptb.clone();
    relayed[..12].copy_from_slice(&[real6_mac(REAL6_2), DIRECTOR_REAL_MAC].concat());
    lb.expect("DR packet too big", &ptb, XDP_TX, &relayed);

    // A NAT real's "port unreachable" about the client's query goes back
    // to the client from the VIP, quoting the query as the client sent it.
    let to_real = query.nat_to(REAL6_2, REAL_DNS).frame(b"q");
    expect_unreachable_back(&mut lb, &to_real, &query.frame(b"q"), 48);

    // A wrong checksum is dropped; echo and errors about nothing go to
    // the kernel.
    let mut bad = ptb.clone();
    bad[14 + 40 + 9] ^= 1;
    lb.expect("bad ICMPv6 checksum", &bad, XDP_DROP, &bad);
    let stranger = P6 { macs: (DIRECTOR_MAC, ROUTER_MAC), ..P6::tcp((VIP6, HTTP), (CLIENT6, 1), ACK) }.frame(&[]);
    let about_nothing = icmp6_error((ROUTER_MAC, DIRECTOR_MAC), router, VIP6, 2, 1280, &stranger[14..14 + 48]);
    lb.expect("about no connection", &about_nothing, XDP_PASS, &about_nothing);
    let solicit = icmp6_error((ROUTER_MAC, DIRECTOR_MAC), router, VIP6, 135, 0, &VIP6);
    lb.expect("neighbour solicitation", &solicit, XDP_PASS, &solicit);
    lb.assert_counters(
        &[
            (counter::CONN_NEW, 3),
            (counter::ICMP_RELAYED, 3),
            (counter::DROP_ICMP_CHECKSUM, 1),
            (counter::PASS_ICMP, 2),
        ],
        "ICMPv6",
    );
}

/// The quote of an ICMPv6 error may carry extension headers of its own:
/// they are stepped over as the packet's own are, so the error still names
/// its connection, and NAT rewrites the quoted ports where they really are.
#[test]
fn icmpv6_errors_quoting_extension_headers_reach_the_connection() {
    let mut lb = Lb::new();
    let dns = lb.add_service6(VIP6, DNS, IPPROTO_UDP);
    lb.add_real(dns, real6(REAL6_2, REAL_DNS, FWD_NAT));
    let query = P6::udp((CLIENT6, 5000), (VIP6, DNS));
    assert_eq!(lb.run(&query.frame(b"q")).0, XDP_TX);

    // The NAT real's "port unreachable" quotes its copy of the query with
    // a hop-by-hop header: back to the client, quoting the query as the
    // client sent it.
    let quoted = 40 + 8 + 8;
    let to_real = with_ext(&query.nat_to(REAL6_2, REAL_DNS).frame(b"q"), 0, &opts(IPPROTO_UDP));
    expect_unreachable_back(&mut lb, &to_real, &with_ext(&query.frame(b"q"), 0, &opts(IPPROTO_UDP)), quoted);

    // A quote that is a fragment past the first has no ports, and one
    // whose extension header runs past its end is no quote: the kernel's.
    let later = [IPPROTO_UDP, 0, 0, 8, 0, 0, 0, 9];
    let fragment = with_ext(&query.nat_to(REAL6_2, REAL_DNS).frame(b"q"), 44, &later);
    let about_a_fragment = icmp6_error((real6_mac(REAL6_2), DIRECTOR_REAL_MAC), REAL6_2, CLIENT6, 1, 0, &fragment[14..14 + quoted]);
    lb.expect("quote of a later fragment", &about_a_fragment, XDP_PASS, &about_a_fragment);
    let mut long = opts(IPPROTO_UDP);
    long[1] = 3;
    let cut = with_ext(&query.nat_to(REAL6_2, REAL_DNS).frame(b"q"), 0, &long);
    let cut_short = icmp6_error((real6_mac(REAL6_2), DIRECTOR_REAL_MAC), REAL6_2, CLIENT6, 1, 0, &cut[14..14 + quoted]);
    lb.expect("quote cut inside its extension header", &cut_short, XDP_PASS, &cut_short);
    lb.assert_counters(
        &[(counter::CONN_NEW, 1), (counter::ICMP_RELAYED, 1), (counter::PASS_ICMP, 2)],
        "ICMPv6 quoting extension headers",
    );
}
