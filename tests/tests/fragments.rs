//! Fragment fixtures, run in the kernel with BPF_PROG_TEST_RUN as the other
//! packet fixtures are: the first fragment of a datagram goes by its
//! connection like any packet, the later ones (no ports) follow it to the
//! same real, in every method and on the NAT reply path; a later fragment
//! whose first was not seen, or was seen too long ago, goes to the kernel.
//! Expected frames are the expected whole datagram cut the same way.
//!
//! Needs root: `cargo test -p tests --test fragments -- --test-threads=1`.

mod support;

use etherparse::{EtherType, IpFragOffset, IpNumber, Ipv4Header};
use lb_common::{
    FRAG_TIMEOUT_NS, FragEntry, FragKey, IPPROTO_UDP, MAP_FRAGS, counter, v4_addr,
};
use support::*;

/// `pkt`'s IP datagram in two fragments, as the sender's kernel cuts it:
/// the first carries `first_len` bytes of the IP payload (a multiple of 8)
/// and more-fragments, the second the rest at offset `first_len`.
fn fragments(pkt: &Pkt, first_len: usize) -> [Vec<u8>; 2] {
    let whole = pkt.ip_bytes();
    let payload = &whole[20 + pkt.options.len()..];
    let parts = [(&payload[..first_len], 0, true), (&payload[first_len..], first_len / 8, false)];
    parts.map(|(data, offset, more)| {
        let mut ip = pkt.ip_header();
        ip.dont_fragment = false;
        ip.more_fragments = more;
        ip.fragment_offset = IpFragOffset::try_new(offset as u16).expect("a 13-bit offset");
        ip.set_payload_len(data.len()).expect("fits IPv4");
        ip.header_checksum = ip.calc_header_checksum();
        let mut out = eth_header(pkt.eth_src, pkt.eth_dst, EtherType::IPV4);
        ip.write(&mut out).expect("IPv4 serialises");
        out.extend_from_slice(data);
        out
    })
}

/// A 600-byte DNS query from `sport`, with its own IP id.
fn big_query(sport: u16, id: u16) -> Pkt {
    Pkt::udp(sport, DNS).with(|p| {
        p.id = id;
        p.payload = (0..600u16).map(|b| b as u8).collect();
    })
}

/// VIP:53/UDP by NAT over REAL1..REAL3 on 5353, in rr order.
fn nat_dns(lb: &mut Lb) -> [u32; 3] {
    let service = lb.add_service(VIP, DNS, IPPROTO_UDP);
    [REAL1, REAL2, REAL3].map(|addr| lb.add_real(service, nat_real(addr, REAL_DNS)))
}

/// NAT: each datagram's later fragment goes where its first went, even
/// when another datagram's first fragment came in between and went to
/// another real. The first fragment is rewritten as a whole datagram is
/// (address, port, UDP checksum over the whole datagram); the later one
/// gets only the address.
#[test]
fn nat_later_fragments_follow_their_first() {
    let mut lb = Lb::new();
    let [r1, r2, _] = nat_dns(&mut lb);
    let a = big_query(40000, 0x1000);
    let b = big_query(40001, 0x1001);
    let [a1, a2] = fragments(&a, 304);
    let [b1, b2] = fragments(&b, 304);
    let [want_a1, want_a2] = fragments(&nat_to(&a, REAL1, REAL_DNS), 304);
    let [want_b1, want_b2] = fragments(&nat_to(&b, REAL2, REAL_DNS), 304);
    lb.expect("A, first fragment", &a1, XDP_TX, &want_a1);
    lb.expect("B, first fragment", &b1, XDP_TX, &want_b1);
    lb.expect("A, later fragment", &a2, XDP_TX, &want_a2);
    lb.expect("B, later fragment", &b2, XDP_TX, &want_b2);
    lb.assert_counters(&[(counter::CONN_NEW, 2), (counter::FRAG_RELAYED, 2)], "two datagrams");
    for (id, what) in [(r1, "REAL1"), (r2, "REAL2")] {
        assert_eq!(lb.real_stats(id).inpkts, 2, "{what} got both fragments of one datagram");
    }
    // The reassembled datagram is the NATed one: its UDP checksum holds.
    let whole = nat_to(&a, REAL1, REAL_DNS).frame();
    assert_checksums(&whole, "the datagram the real reassembles");
}

/// A later fragment whose first did not come this way, or came longer ago
/// than the kernel keeps fragments, goes to the kernel untouched.
#[test]
fn a_later_fragment_without_its_first_passes() {
    let mut lb = Lb::new();
    nat_dns(&mut lb);
    let [_, orphan] = fragments(&big_query(40000, 0x2000), 304);
    lb.expect("no first fragment", &orphan, XDP_PASS, &orphan);

    let query = big_query(40001, 0x2001);
    let [first, later] = fragments(&query, 304);
    lb.expect("first fragment", &first, XDP_TX, &fragments(&nat_to(&query, REAL1, REAL_DNS), 304)[0]);
    let key = FragKey {
        saddr: v4_addr(CLIENT),
        daddr: v4_addr(VIP),
        id: u32::from(0x2001u16.to_be()),
        proto: IPPROTO_UDP,
        family: lb_common::AF_INET,
        _pad: [0; 2],
    };
    let mut frags = lb.hash::<FragKey, FragEntry>(MAP_FRAGS);
    let mut entry = frags.get(&key, 0).expect("the first fragment is remembered");
    assert_eq!(entry.conn, query.conn_key(), "by its connection");
    // As if the first fragment had come before the reassembly timeout.
    entry.first_seen_ns = 1;
    frags.insert(key, entry, 0).expect("FRAGS update");
    let uptime = std::fs::read_to_string("/proc/uptime").expect("uptime");
    let uptime: f64 = uptime.split_whitespace().next().and_then(|s| s.parse().ok()).expect("seconds");
    assert!(uptime * 1e9 > FRAG_TIMEOUT_NS as f64 + 1e9, "the machine has been up longer than the timeout");
    lb.expect("first fragment too old", &later, XDP_PASS, &later);
    lb.assert_counters(&[(counter::CONN_NEW, 1), (counter::PASS_FRAGMENT, 2)], "passed");
}

/// DR and TUN: a later fragment goes to the real by the connection's
/// method, unchanged but for the MACs, or inside IP-in-IP.
#[test]
fn dr_and_tun_later_fragments_follow_their_first() {
    let query = big_query(40000, 0x3000);
    let [first, later] = fragments(&query, 304);

    let mut lb = Lb::new();
    let service = lb.add_service(VIP, DNS, IPPROTO_UDP);
    lb.add_real(service, dr_real(REAL1, DNS));
    let mac = |frame: &[u8]| [&[real_mac(REAL1), DIRECTOR_REAL_MAC].concat(), &frame[12..]].concat();
    lb.expect("DR, first fragment", &first, XDP_TX, &mac(&first));
    lb.expect("DR, later fragment", &later, XDP_TX, &mac(&later));
    lb.assert_counters(&[(counter::CONN_NEW, 1), (counter::FRAG_RELAYED, 1)], "DR");

    let mut lb = Lb::new();
    let service = lb.add_service(VIP, DNS, IPPROTO_UDP);
    lb.add_real(service, tun_real(REAL1, DNS));
    for (what, frame) in [("TUN, first fragment", &first), ("TUN, later fragment", &later)] {
        let (action, out) = lb.run(frame);
        assert_eq!(action, XDP_TX, "{what}: {}", action_name(action));
        let (outer, inner) = Ipv4Header::from_slice(&out[14..]).expect("outer header");
        assert_eq!((outer.protocol, outer.source, outer.destination), (IpNumber::IPV4, DIRECTOR_IP, REAL1), "{what}");
        assert!(!outer.dont_fragment, "{what}: DF copied (clear) from the fragment");
        assert_eq!(inner, &frame[14..], "{what}: the fragment, unchanged inside");
        assert_checksums(&out, what);
    }
    lb.assert_counters(&[(counter::CONN_NEW, 1), (counter::FRAG_RELAYED, 1)], "TUN");
}

/// NAT: a real's fragmented reply goes back to the client from the VIP,
/// the first fragment with the port and the UDP checksum, the later one
/// with the address only.
#[test]
fn nat_reply_fragments_go_back_from_the_vip() {
    let mut lb = Lb::new();
    nat_dns(&mut lb);
    let query = Pkt::udp(40000, DNS);
    lb.expect("query", &query.frame(), XDP_TX, &nat_to(&query, REAL1, REAL_DNS).frame());
    let reply = Pkt::udp(REAL_DNS, 40000)
        .from(REAL1, REAL_DNS)
        .to(CLIENT, 40000)
        .macs(real_mac(REAL1), DIRECTOR_REAL_MAC)
        .with(|p| {
            p.id = 0x4000;
            p.payload = vec![0x5a; 900];
        });
    let [first, later] = fragments(&reply, 504);
    let [want_first, want_later] = fragments(&back_to_client(&reply, DNS), 504);
    lb.expect("reply, first fragment", &first, XDP_TX, &want_first);
    lb.expect("reply, later fragment", &later, XDP_TX, &want_later);
    lb.assert_counters(&[(counter::CONN_NEW, 1), (counter::FRAG_RELAYED, 1)], "reply");
}
