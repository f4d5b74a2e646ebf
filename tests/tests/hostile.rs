//! Hostile and malformed input (issue 8; IPv6's own fixtures are in
//! tests/tests/ipv6.rs, and the fuzz test models IPv6 too): packet fixtures for every
//! malformed case (input frame -> XDP action, exact output bytes, reason
//! counters), the SYN flood against a bounded connection table, and a
//! test-run fuzz mode that pushes random and mutated packets through the
//! loaded director and checks every one of them against an independent
//! model of the rules.
//!
//! The rules, per case (`lb_common::net::ParseError` documents the order):
//!
//! | input                                                   | verdict | counter                |
//! |---------------------------------------------------------|---------|------------------------|
//! | frame < 14 bytes (0, 1, 13)                             | -       | refused by the kernel* |
//! | EtherType IPv4, < 20 bytes of IP header                 | DROP    | `drop_truncated`       |
//! | IP version != 4, IHL < 5, total length < IHL            | DROP    | `drop_bad_header`      |
//! | total length > the frame                                | DROP    | `drop_truncated`       |
//! | total length < the frame                                | as the packet: the rest is padding, kept |
//! | IPv4 header checksum wrong                              | DROP    | `drop_bad_ip_checksum` |
//! | IP options malformed (length < 2, past the header)      | DROP    | `drop_bad_ip_options`  |
//! | IP options well-formed (IHL 6..15)                      | parsed past, forwarded unchanged |
//! | first fragment (more-fragments, offset 0)               | as any packet; its datagram is remembered |
//! | later fragment of a remembered datagram, its connection tracked | forwarded after its first | `frag_relayed` |
//! | later fragment otherwise                                | PASS    | `pass_fragment`        |
//! | ICMP echo (errors: `tests/tests/icmp.rs`)               | PASS    | `pass_icmp`            |
//! | total length short of the TCP/UDP header                | DROP    | `drop_bad_header`      |
//! | TCP data offset < 5 or past the packet                  | DROP    | `drop_bad_header`      |
//! | UDP length < 8 or past the packet                       | DROP    | `drop_bad_header`      |
//! | TCP to a VIP: SYN+FIN, SYN+RST, FIN+RST, no SYN/FIN/RST/ACK | DROP | `drop_tcp_flags`     |
//! | TCP to a VIP, untracked: FIN without ACK                | DROP    | `drop_tcp_flags`       |
//! | TCP to a VIP, untracked, ACK / FIN+ACK / RST / SYN+ACK  | PASS    | `pass_not_syn`         |
//! | TCP with any flags, not for a VIP                       | PASS    | `pass_not_vip`         |
//! | for a VIP from 0/8, 127/8, 224/4, 255.255.255.255 (IPv6: ::, ::1, ff00::/8, ::ffff:0:0/96) | DROP | `drop_martian` |
//! | IPv6: as `lb_common::net::parse_ipv6`'s table; extension headers past the bound | PASS | `pass_ipv6_ext` |
//! | SYN flood                                               | each SYN scheduled (`conn_new`); the LRU table evicts the least recently used entries |
//!
//! \* `BPF_PROG_TEST_RUN` refuses frames shorter than an Ethernet header
//! (EINVAL), and no driver hands XDP one; the parser counts them as
//! truncated all the same (`lb_common::net` unit tests).
//!
//! Header errors are dropped whatever the destination: the kernel's
//! `ip_rcv`, TCP and UDP would drop them too, and without a sound header
//! the data plane cannot tell whether the packet is its own. TCP flags are
//! judged only for packets of a virtual service; everything else passes.
//!
//! Needs root: `cargo test --release -p tests --test hostile -- --test-threads=1`.
//! The fuzz test takes `XLVS_FUZZ_SEED` (the seed it prints on every run
//! and in every failure) and `XLVS_FUZZ_PACKETS` (default 100000).

mod support;

use std::{
    collections::HashMap,
    fmt::Write as _,
    time::{Duration, Instant, SystemTime},
};

use etherparse::{EtherType, Ipv4Header};
use lb_common::{
    AF_INET, CONN_F_INACTIVE, CONN_F_REPLY, CONN_F_TEMPLATED, ConnKey, FWD_DR, FWD_NAT, FWD_TUN, IPPROTO_TCP,
    IPPROTO_UDP, Real, counter, tcp_state, v4_addr,
};
use support::*;

const ETH: usize = 14;
const URG: u8 = 0x20;
const ECE: u8 = 0x40;
const CWR: u8 = 0x80;

// ---------------------------------------------------------------- helpers

/// VIP:80/TCP with NAT reals REAL1, REAL2, REAL3 on port 8080 (rr, in that
/// order). Returns the real ids.
fn nat_http(lb: &mut Lb) -> [u32; 3] {
    let service = lb.add_service(VIP, HTTP, IPPROTO_TCP);
    [REAL1, REAL2, REAL3].map(|addr| lb.add_real(service, nat_real(addr, REAL_HTTP)))
}

/// VIP:53/UDP with one NAT real REAL1:5353.
fn nat_dns(lb: &mut Lb) -> u32 {
    let service = lb.add_service(VIP, DNS, IPPROTO_UDP);
    lb.add_real(service, nat_real(REAL1, REAL_DNS))
}

/// The one's-complement sum of `bytes` folded to 16 bits: 0xffff over a
/// header with a right checksum.
fn ones_sum(bytes: &[u8], initial: u32) -> u16 {
    let mut sum = u64::from(initial);
    for pair in bytes.chunks(2) {
        let hi = u64::from(pair[0]) << 8;
        sum += hi | pair.get(1).map_or(0, |&b| u64::from(b));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Recomputes the IPv4 header checksum of an Ethernet frame in place (over
/// the IHL, as far as the frame goes).
/// An IPv4 frame (20-byte header) as two fragments, cut past its L4
/// header at a multiple of 8; the frame unchanged when it is too short.
fn split_in_two(frame: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    let l4 = ETH + 20;
    let tot = usize::from(be16(&frame[ETH + 2..]));
    let header = if frame[ETH + 9] == IPPROTO_TCP { 24 } else { 8 };
    if frame[ETH] != 0x45 || ETH + tot > frame.len() || tot <= 20 + header {
        return (frame.to_vec(), None);
    }
    let piece = |from: usize, to: usize, flags: u16| {
        let mut f = frame[..l4].to_vec();
        f.extend_from_slice(&frame[l4 + from..l4 + to]);
        f[ETH + 2..ETH + 4].copy_from_slice(&((20 + to - from) as u16).to_be_bytes());
        f[ETH + 6..ETH + 8].copy_from_slice(&(flags | (from / 8) as u16).to_be_bytes());
        fix_ip_checksum(&mut f);
        f
    };
    (piece(0, header, 0x2000), Some(piece(header, tot - 20, 0)))
}

fn fix_ip_checksum(frame: &mut [u8]) {
    if frame.len() < ETH + 20 {
        return;
    }
    let ihl = (usize::from(frame[ETH] & 0x0f) * 4).clamp(20, frame.len() - ETH);
    frame[ETH + 10..ETH + 12].copy_from_slice(&[0, 0]);
    let c = !ones_sum(&frame[ETH..ETH + ihl], 0);
    frame[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
}

/// `frame` with `bytes` at `offset`, the IPv4 checksum fixed again: the
/// header is wrong only in the way the case means.
fn patched(frame: &[u8], offset: usize, bytes: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[offset..offset + bytes.len()].copy_from_slice(bytes);
    fix_ip_checksum(&mut f);
    f
}

/// `frame` with `bytes` at `offset`, checksum left as it was.
fn raw_patched(frame: &[u8], offset: usize, bytes: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[offset..offset + bytes.len()].copy_from_slice(bytes);
    f
}

/// A frame padded with `fill` to `len` bytes.
fn padded(mut frame: Vec<u8>, len: usize, fill: u8) -> Vec<u8> {
    frame.resize(len, fill);
    frame
}

/// A TCP packet's frame with the flag byte set to `flags` (all eight bits:
/// `Pkt` spells only FIN, SYN, RST, PSH and ACK) and the TCP checksum
/// computed again. IPv4 without options, no padding.
fn tcp_frame(p: &Pkt, flags: u8) -> Vec<u8> {
    let mut f = p.frame();
    let tcp = ETH + 20;
    f[tcp + 13] = flags;
    f[tcp + 16..tcp + 18].copy_from_slice(&[0, 0]);
    let mut pseudo = f[ETH + 12..ETH + 20].to_vec();
    pseudo.extend_from_slice(&[0, IPPROTO_TCP]);
    pseudo.extend_from_slice(&((f.len() - tcp) as u16).to_be_bytes());
    let c = !ones_sum(&f[tcp..], u32::from(ones_sum(&pseudo, 0)));
    f[tcp + 16..tcp + 18].copy_from_slice(&c.to_be_bytes());
    f
}

/// Runs each case and expects it dropped or passed untouched.
fn untouched(lb: &Lb, cases: &[(&str, Vec<u8>)], action: u32) {
    for (what, frame) in cases {
        lb.expect(what, frame, action, frame);
    }
}

/// Sources no host can have, for a VIP: dropped as the kernel drops
/// martians, in both families, without a connection; the same client
/// ports from a real address still connect.
#[test]
fn martian_sources_are_dropped() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    for src in [[0, 0, 0, 0], [127, 0, 0, 1], [224, 0, 0, 1], [255, 255, 255, 255]] {
        let f = Pkt::tcp(40000, HTTP, SYN).from(src, 40000).frame();
        lb.expect(&format!("SYN from {src:?}"), &f, XDP_DROP, &f);
    }
    let f = Pkt::tcp(40000, HTTP, ACK).from([127, 0, 0, 1], 40000).frame();
    lb.expect("ACK from loopback", &f, XDP_DROP, &f);
    assert_eq!(lb.run(&Pkt::tcp(40000, HTTP, SYN).frame()).0, XDP_TX, "a real client");
    let vip6 = "2001:db8::64".parse::<std::net::Ipv6Addr>().unwrap().octets();
    lb.add_service6(vip6, HTTP, IPPROTO_TCP);
    for src in ["::1", "ff02::1", "::ffff:198.51.100.7"] {
        let mut f = ipv6_syn();
        f[22..38].copy_from_slice(&src.parse::<std::net::Ipv6Addr>().unwrap().octets());
        lb.expect(&format!("IPv6 SYN from {src}"), &f, XDP_DROP, &f);
    }
    lb.assert_counters(&[(counter::DROP_MARTIAN, 8), (counter::CONN_NEW, 1)], "martians");
    assert_eq!(lb.conn_count(), 2, "only the real client's connection (both directions)");
}

// ---------------------------------------------------------------- sizes

/// Zero, one and 13 bytes never reach XDP: the kernel's test run refuses
/// them, as drivers never deliver them. Nothing is counted.
#[test]
fn frames_shorter_than_ethernet_never_reach_the_program() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    let syn = Pkt::tcp(40000, HTTP, SYN).frame();
    for len in [0, 1, 13] {
        let got = lb.try_run(&syn[..len]);
        assert!(
            got.is_err(),
            "{len}-byte frame: the kernel refuses it, got {got:?}"
        );
    }
    lb.assert_counters(&[], "nothing ran");
}

/// Truncated Ethernet and IP headers, at odd and even sizes: dropped as
/// truncated, IPv4 or not... unless the EtherType says it is not IPv4,
/// which is the kernel's.
#[test]
fn truncated_ethernet_and_ip_headers_are_dropped() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    let syn = Pkt::tcp(40000, HTTP, SYN).frame();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("14 bytes: Ethernet, no IP", syn[..ETH].to_vec()),
        ("15 bytes: one byte of IP", syn[..ETH + 1].to_vec()),
        ("21 bytes", syn[..ETH + 7].to_vec()),
        (
            "33 bytes: 19 of 20 IP header bytes",
            syn[..ETH + 19].to_vec(),
        ),
        ("34 bytes: an IP header, no TCP", syn[..ETH + 20].to_vec()),
        ("35 bytes", syn[..ETH + 21].to_vec()),
        (
            "53 bytes: 19 of 20 TCP header bytes",
            syn[..ETH + 39].to_vec(),
        ),
    ];
    untouched(&lb, &cases, XDP_DROP);
    lb.assert_counters(&[(counter::DROP_TRUNCATED, 7)], "truncated headers");
    let arp = eth_header(ROUTER_MAC, [0xff; 6], EtherType::ARP);
    lb.expect("14 bytes of ARP", &arp, XDP_PASS, &arp);
    lb.assert_counters(
        &[(counter::DROP_TRUNCATED, 7), (counter::PASS_NOT_IP, 1)],
        "ARP",
    );
}

/// Truncated L4 headers and payloads: the IP total length says more than
/// the frame holds.
#[test]
fn truncated_tcp_and_udp_are_dropped() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    nat_dns(&mut lb);
    let data = Pkt::tcp(40000, HTTP, ACK | PSH).frame();
    let query = Pkt::udp(33000, DNS).frame();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("TCP header cut at 10 bytes", data[..ETH + 20 + 10].to_vec()),
        (
            "TCP payload cut by one (odd size)",
            data[..data.len() - 1].to_vec(),
        ),
        ("UDP header cut at 5 bytes", query[..ETH + 20 + 5].to_vec()),
        ("UDP payload cut by 3", query[..query.len() - 3].to_vec()),
    ];
    untouched(&lb, &cases, XDP_DROP);
    lb.assert_counters(&[(counter::DROP_TRUNCATED, 4)], "truncated L4");
}

/// Odd sizes that are whole packets are ordinary traffic: odd payloads of
/// 1, 3 and 1459 bytes, an empty UDP datagram, and a 1514-byte frame are
/// forwarded with their checksums right.
#[test]
fn odd_sized_whole_packets_are_forwarded() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    nat_dns(&mut lb);
    let syn = Pkt::tcp(40000, HTTP, SYN);
    lb.expect(
        "SYN",
        &syn.frame(),
        XDP_TX,
        &nat_to(&syn, REAL1, REAL_HTTP).frame(),
    );
    for n in [1usize, 3, 1459, 1460] {
        let data = Pkt::tcp(40000, HTTP, ACK | PSH)
            .with(|p| p.payload = (0..n).map(|i| i as u8).collect());
        let what = format!("{n}-byte payload ({}-byte frame)", data.frame().len());
        lb.expect(
            &what,
            &data.frame(),
            XDP_TX,
            &nat_to(&data, REAL1, REAL_HTTP).frame(),
        );
    }
    let empty = Pkt::udp(33000, DNS).with(|p| p.payload.clear());
    lb.expect(
        "empty UDP datagram",
        &empty.frame(),
        XDP_TX,
        &nat_to(&empty, REAL1, REAL_DNS).frame(),
    );
    lb.assert_counters(&[(counter::CONN_NEW, 2)], "whole packets");
}

// ---------------------------------------------------------------- IPv4 header

/// IP version, IHL and total length that contradict each other.
#[test]
fn wrong_version_ihl_and_total_length_are_bad_headers() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    let syn = Pkt::tcp(40000, HTTP, SYN).frame();
    let mut cases: Vec<(String, Vec<u8>)> = (0..5u8)
        .map(|ihl| (format!("IHL {ihl}"), patched(&syn, ETH, &[0x40 | ihl])))
        .collect();
    cases.extend([
        (
            "version 6 in an IPv4 frame".into(),
            patched(&syn, ETH, &[0x65]),
        ),
        ("version 0".into(), patched(&syn, ETH, &[0x05])),
        (
            "IHL 15 (60 bytes) > total length 40".into(),
            patched(&syn, ETH, &[0x4f]),
        ),
        ("total length 0".into(), patched(&syn, ETH + 2, &[0, 0])),
        (
            "total length 19 < IHL".into(),
            patched(&syn, ETH + 2, &[0, 19]),
        ),
        (
            "total length 39 < IP + TCP headers".into(),
            patched(&syn, ETH + 2, &[0, 39]),
        ),
        // The same total length of 39 in a frame padded far past it.
        (
            "total length 39, padded".into(),
            padded(patched(&syn, ETH + 2, &[0, 39]), 60, 0),
        ),
    ]);
    for (what, frame) in &cases {
        lb.expect(what, frame, XDP_DROP, frame);
    }
    lb.assert_counters(
        &[(counter::DROP_BAD_HEADER, cases.len() as u64)],
        "bad IPv4 headers",
    );
    assert_eq!(lb.conn_count(), 0, "nothing recorded");
}

/// A total length beyond the frame is a truncated packet; one short of the
/// frame leaves Ethernet padding, which NAT, DR and TUN all carry as it was.
#[test]
fn total_length_against_the_frame() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    let dr = lb.add_service(VIP, 81, IPPROTO_TCP);
    lb.add_real(dr, dr_real(REAL2, 81));
    let tun = lb.add_service(VIP, 82, IPPROTO_TCP);
    lb.add_real(tun, tun_real(REAL3, 82));

    let data = Pkt::tcp(40000, HTTP, ACK | PSH).frame();
    let long = patched(
        &data,
        ETH + 2,
        &(data.len() as u16 - ETH as u16 + 1).to_be_bytes(),
    );
    lb.expect("total length one past the frame", &long, XDP_DROP, &long);
    let huge = patched(&data, ETH + 2, &[0xff, 0xff]);
    lb.expect("total length 65535", &huge, XDP_DROP, &huge);
    lb.assert_counters(&[(counter::DROP_TRUNCATED, 2)], "long total length");

    // Padding of every sort: zeros to the 60-byte minimum, and junk.
    for (k, (fill, len)) in [(0u8, 60usize), (0xa5, 61), (0xff, 200)]
        .into_iter()
        .enumerate()
    {
        let syn = Pkt::tcp(41000 + len as u16, HTTP, SYN);
        let what = format!("NAT SYN padded to {len} with {fill:#04x}");
        let real = [REAL1, REAL2, REAL3][k];
        lb.expect(
            &what,
            &padded(syn.frame(), len, fill),
            XDP_TX,
            &padded(nat_to(&syn, real, REAL_HTTP).frame(), len, fill),
        );
        let syn = Pkt::tcp(41000 + len as u16, 81, SYN);
        let want = syn.clone().macs(DIRECTOR_REAL_MAC, real_mac(REAL2));
        lb.expect(
            "DR SYN, padded",
            &padded(syn.frame(), len, fill),
            XDP_TX,
            &padded(want.frame(), len, fill),
        );
        // TUN: the outer total length covers the IP packet, the padding
        // rides along after it.
        let syn = Pkt::tcp(41000 + len as u16, 82, SYN);
        let want = syn.tunnelled(DIRECTOR_IP, REAL3, DIRECTOR_REAL_MAC, real_mac(REAL3));
        let input = padded(syn.frame(), len, fill);
        let out_len = input.len() + 20;
        let (action, out) = lb.run(&input);
        assert_eq!(action_name(action), "XDP_TX", "TUN SYN, padded");
        assert_eq!(out.len(), out_len, "TUN SYN, padded: length");
        assert_eq!(
            &out[..want.len()],
            &want[..],
            "TUN SYN, padded: headers and packet"
        );
        assert_eq!(
            &out[want.len()..],
            &input[syn.frame().len()..],
            "TUN SYN, padded: the padding"
        );
    }
    lb.assert_counters(
        &[(counter::DROP_TRUNCATED, 2), (counter::CONN_NEW, 9)],
        "padded frames",
    );
}

/// A header whose checksum is wrong is dropped: the kernel would drop it,
/// and a NAT rewrite would carry the error on to the real.
#[test]
fn wrong_ip_checksum_is_dropped() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    let syn = Pkt::tcp(40000, HTTP, SYN).frame();
    let check = u16::from_be_bytes([syn[ETH + 10], syn[ETH + 11]]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "checksum off by one",
            raw_patched(&syn, ETH + 10, &(check ^ 1).to_be_bytes()),
        ),
        ("checksum zero", raw_patched(&syn, ETH + 10, &[0, 0])),
        (
            "a flipped bit in the source",
            raw_patched(&syn, ETH + 12, &[syn[ETH + 12] ^ 0x10]),
        ),
        (
            "TTL changed, checksum not",
            raw_patched(&syn, ETH + 8, &[63]),
        ),
        (
            "to another address (not a VIP: the kernel would drop it too)",
            raw_patched(
                &Pkt::tcp(40000, HTTP, SYN).to(NOT_A_VIP, HTTP).frame(),
                ETH + 10,
                &[0, 0],
            ),
        ),
    ];
    untouched(&lb, &cases, XDP_DROP);
    lb.assert_counters(&[(counter::DROP_BAD_IP_CHECKSUM, 5)], "bad checksums");
    assert_eq!(lb.conn_count(), 0, "nothing recorded");
}

// ---------------------------------------------------------------- IP options

/// Well-formed options are parsed past and carried unchanged: NAT, DR and
/// TUN, with the longest header there is (IHL 15) too.
#[test]
fn ip_options_are_forwarded_unchanged() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    let dr = lb.add_service(VIP, 81, IPPROTO_TCP);
    lb.add_real(dr, dr_real(REAL2, 81));
    let tun = lb.add_service(VIP, 82, IPPROTO_TCP);
    lb.add_real(tun, tun_real(REAL3, 82));
    let mut forty = vec![1u8; 40];
    forty[36..].copy_from_slice(&[0x94, 4, 0, 0]);
    let options: [(&str, Vec<u8>); 5] = [
        ("Router Alert", vec![0x94, 4, 0, 0]),
        ("NOPs and EOL", vec![1, 1, 1, 0]),
        ("Record Route with one slot", vec![7, 7, 4, 0, 0, 0, 0, 0]),
        ("EOL then junk", vec![0, 0xde, 0xad, 0xbe]),
        ("40 bytes (IHL 15)", forty),
    ];
    for (i, (name, opts)) in options.iter().enumerate() {
        let sport = 40000 + i as u16;
        let with = |p: &mut Pkt| p.options = opts.clone();
        let syn = Pkt::tcp(sport, HTTP, SYN).with(with);
        assert!(syn.frame()[ETH] & 0x0f > 5, "{name}: options present");
        lb.expect(
            &format!("NAT, {name}"),
            &syn.frame(),
            XDP_TX,
            &nat_to(&syn, REAL1, REAL_HTTP).frame(),
        );
        let data = Pkt::tcp(sport, HTTP, ACK | PSH).with(with);
        lb.expect(
            &format!("NAT data, {name}"),
            &data.frame(),
            XDP_TX,
            &nat_to(&data, REAL1, REAL_HTTP).frame(),
        );
        let syn = Pkt::tcp(sport, 81, SYN).with(with);
        let want = syn.clone().macs(DIRECTOR_REAL_MAC, real_mac(REAL2));
        lb.expect(&format!("DR, {name}"), &syn.frame(), XDP_TX, &want.frame());
        let syn = Pkt::tcp(sport, 82, SYN).with(with);
        let want = syn.tunnelled(DIRECTOR_IP, REAL3, DIRECTOR_REAL_MAC, real_mac(REAL3));
        lb.expect(&format!("TUN, {name}"), &syn.frame(), XDP_TX, &want);
        // rr: the next SYN of the NAT service goes to REAL2, then REAL3;
        // send two more to come back round to REAL1.
        for k in 0..2 {
            let other = Pkt::tcp(50000 + (i * 2 + k) as u16, HTTP, SYN);
            let (action, _) = lb.run(&other.frame());
            assert_eq!(action_name(action), "XDP_TX");
        }
    }
    lb.assert_counters(&[(counter::CONN_NEW, 25)], "options");
}

/// Options that do not parse as the kernel walks them are dropped.
#[test]
fn malformed_ip_options_are_dropped() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    let bad: [(&str, [u8; 4]); 5] = [
        ("option length 0", [0x94, 0, 0, 0]),
        ("option length 1", [0x94, 1, 0, 0]),
        ("option length past the header", [0x94, 5, 0, 0]),
        ("no room for the length byte", [1, 1, 1, 0x44]),
        ("length 255", [0x07, 0xff, 4, 0]),
    ];
    for (what, opts) in bad {
        let syn = Pkt::tcp(40000, HTTP, SYN).with(|p| p.options = opts.to_vec());
        let frame = syn.frame();
        lb.expect(what, &frame, XDP_DROP, &frame);
    }
    // IHL 6 without options in the frame: the TCP ports are read as
    // options (0x9c 0x40: a length of 64).
    let syn = Pkt::tcp(40000, HTTP, SYN).frame();
    let ihl6 = patched(&syn, ETH, &[0x46]);
    lb.expect("IHL 6 over the TCP header", &ihl6, XDP_DROP, &ihl6);
    lb.assert_counters(&[(counter::DROP_BAD_IP_OPTIONS, 6)], "bad options");
}

// ---------------------------------------------------------------- L4 header

/// TCP data offsets and UDP lengths that do not fit.
#[test]
fn bad_l4_headers_are_dropped() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    nat_dns(&mut lb);
    let syn = Pkt::tcp(40000, HTTP, SYN).frame();
    let data = Pkt::tcp(40000, HTTP, ACK | PSH).frame();
    let query = Pkt::udp(33000, DNS).frame();
    let udp_len = (query.len() - ETH - 20) as u16;
    let mut cases: Vec<(String, Vec<u8>)> = [0u8, 1, 4]
        .map(|doff| {
            (
                format!("TCP data offset {doff}"),
                patched(&syn, ETH + 32, &[doff << 4]),
            )
        })
        .to_vec();
    cases.extend([
        ("TCP data offset 6 past a bare SYN".into(), patched(&syn, ETH + 32, &[6 << 4])),
        ("TCP data offset 15 past a data segment".into(), patched(&data, ETH + 32, &[15 << 4])),
        ("UDP length 0".into(), patched(&query, ETH + 24, &[0, 0])),
        ("UDP length 7".into(), patched(&query, ETH + 24, &[0, 7])),
        ("UDP length one past the packet".into(), patched(&query, ETH + 24, &(udp_len + 1).to_be_bytes())),
        ("UDP length 65535".into(), patched(&query, ETH + 24, &[0xff, 0xff])),
        ("total length short of the UDP header".into(), patched(&query, ETH + 2, &[0, 27])),
        (
            "bad TCP data offset to another address (header errors are dropped whatever the destination)".into(),
            patched(&Pkt::tcp(40000, HTTP, SYN).to(NOT_A_VIP, HTTP).frame(), ETH + 32, &[4 << 4]),
        ),
    ]);
    for (what, frame) in &cases {
        lb.expect(what, frame, XDP_DROP, frame);
    }
    lb.assert_counters(
        &[(counter::DROP_BAD_HEADER, cases.len() as u64)],
        "bad L4 headers",
    );
    assert_eq!(lb.conn_count(), 0, "nothing recorded");
}

/// A UDP length shorter than the IP payload is legal (the kernel trims the
/// rest): the datagram is forwarded as it is, trailing bytes and all.
#[test]
fn udp_length_short_of_the_payload_is_forwarded() {
    let mut lb = Lb::new();
    nat_dns(&mut lb);
    let query = Pkt::udp(33000, DNS).with(|p| {
        p.l4 = L4::Udp {
            sport: 33000,
            dport: DNS,
            zero_checksum: true,
        };
    });
    let input = raw_patched(&query.frame(), ETH + 24, &[0, 12]);
    let want = raw_patched(&nat_to(&query, REAL1, REAL_DNS).frame(), ETH + 24, &[0, 12]);
    lb.expect("UDP length 12 of a longer payload", &input, XDP_TX, &want);
    lb.assert_counters(&[(counter::CONN_NEW, 1)], "short UDP length");
}

// ---------------------------------------------------------------- TCP flags

/// Untracked segments for a VIP: impossible flags and FIN scans are
/// dropped; what may belong to a connection the kernel knows passes to it;
/// a SYN (with ECN, or with ACK as IPVS allows for active FTP) is scheduled.
#[test]
fn tcp_flags_of_untracked_segments() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    let dropped = [
        ("SYN+FIN", SYN | FIN),
        ("SYN+RST", SYN | RST),
        ("FIN+RST", FIN | RST),
        ("SYN+FIN+ACK", SYN | FIN | ACK),
        ("SYN+RST+ACK", SYN | RST | ACK),
        ("no flags (null scan)", 0),
        ("PSH only", PSH),
        ("URG only", URG),
        ("ECE+CWR only", ECE | CWR),
        ("FIN without ACK (FIN scan)", FIN),
        ("FIN+PSH+URG (Xmas scan)", FIN | PSH | URG),
        ("every flag", 0xff),
    ];
    for (i, (what, flags)) in dropped.iter().enumerate() {
        let frame = tcp_frame(&Pkt::tcp(40000 + i as u16, HTTP, *flags), *flags);
        lb.expect(what, &frame, XDP_DROP, &frame);
    }
    let passed = [
        ("ACK", ACK),
        ("FIN+ACK", FIN | ACK),
        ("RST", RST),
        ("RST+ACK", RST | ACK),
        ("data", ACK | PSH),
    ];
    for (i, (what, flags)) in passed.iter().enumerate() {
        let frame = tcp_frame(&Pkt::tcp(41000 + i as u16, HTTP, *flags), *flags);
        lb.expect(what, &frame, XDP_PASS, &frame);
    }
    lb.assert_counters(
        &[
            (counter::DROP_TCP_FLAGS, dropped.len() as u64),
            (counter::PASS_NOT_SYN, passed.len() as u64),
        ],
        "untracked flags",
    );
    assert_eq!(lb.conn_count(), 0, "nothing recorded");
    // What opens a connection: a SYN, with ECN's flags, with PSH, with ACK.
    for (i, flags) in [SYN, SYN | ECE | CWR, SYN | PSH, SYN | ACK]
        .into_iter()
        .enumerate()
    {
        let syn = Pkt::tcp(42000 + i as u16, HTTP, flags);
        let real = [REAL1, REAL2, REAL3][i % 3];
        let want = tcp_frame(&nat_to(&syn, real, REAL_HTTP), flags);
        lb.expect(
            &format!("flags {flags:#04x}"),
            &tcp_frame(&syn, flags),
            XDP_TX,
            &want,
        );
    }
}

/// Tracked connections: impossible flags are dropped in both NAT directions
/// and leave the state alone; a FIN without ACK goes through IPVS's state
/// machine, as it always did.
#[test]
fn tcp_flags_of_tracked_segments() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    let syn = Pkt::tcp(40000, HTTP, SYN);
    lb.expect(
        "SYN",
        &syn.frame(),
        XDP_TX,
        &nat_to(&syn, REAL1, REAL_HTTP).frame(),
    );
    let synack = from_real(REAL1, REAL_HTTP, 40000, SYN | ACK);
    lb.expect(
        "SYN-ACK",
        &synack.frame(),
        XDP_TX,
        &back_to_client(&synack, HTTP).frame(),
    );
    let ack = Pkt::tcp(40000, HTTP, ACK);
    lb.expect(
        "ACK",
        &ack.frame(),
        XDP_TX,
        &nat_to(&ack, REAL1, REAL_HTTP).frame(),
    );
    let key = syn.conn_key();
    let state = |lb: &mut Lb| lb.conn(&key).expect("the connection").state;
    assert_eq!(state(&mut lb), tcp_state::ESTABLISHED);

    for (what, flags) in [
        ("SYN+FIN", SYN | FIN),
        ("SYN+RST", SYN | RST),
        ("FIN+RST", FIN | RST),
        ("null", 0),
        ("URG+PSH", URG | PSH),
    ] {
        let client = tcp_frame(&Pkt::tcp(40000, HTTP, flags), flags);
        lb.expect(&format!("client {what}"), &client, XDP_DROP, &client);
        let real = tcp_frame(&from_real(REAL1, REAL_HTTP, 40000, flags), flags);
        lb.expect(&format!("real {what}"), &real, XDP_DROP, &real);
        assert_eq!(
            state(&mut lb),
            tcp_state::ESTABLISHED,
            "{what} leaves the state alone"
        );
    }
    let fin = Pkt::tcp(40000, HTTP, FIN);
    lb.expect(
        "client FIN without ACK",
        &fin.frame(),
        XDP_TX,
        &nat_to(&fin, REAL1, REAL_HTTP).frame(),
    );
    assert_eq!(
        state(&mut lb),
        tcp_state::CLOSE_WAIT,
        "IPVS's table takes the FIN"
    );
    lb.assert_counters(
        &[(counter::CONN_NEW, 1), (counter::DROP_TCP_FLAGS, 10)],
        "tracked flags",
    );
}

/// Flags are judged only for a virtual service's packets: anything else,
/// however odd, is the kernel's.
#[test]
fn tcp_flags_of_other_traffic_are_not_judged() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    let cases: Vec<(String, Vec<u8>)> = [SYN | FIN, SYN | RST, 0, FIN, URG | PSH, 0xff]
        .into_iter()
        .flat_map(|flags| {
            [
                (
                    format!("flags {flags:#04x} to another address"),
                    tcp_frame(&Pkt::tcp(40000, HTTP, flags).to(NOT_A_VIP, HTTP), flags),
                ),
                (
                    format!("flags {flags:#04x} to another port of the VIP"),
                    tcp_frame(&Pkt::tcp(40000, 443, flags), flags),
                ),
            ]
        })
        .collect();
    for (what, frame) in &cases {
        lb.expect(what, frame, XDP_PASS, frame);
    }
    lb.assert_counters(
        &[(counter::PASS_NOT_VIP, cases.len() as u64)],
        "other traffic",
    );
}

// ---------------------------------------------------------------- SYN flood

/// The flood's traffic, interleaved with the busy connections' packets
/// (checked to the byte: they keep their real).
struct Busy {
    nat: Pkt,
    nat_reply: Pkt,
    dr: Pkt,
}

impl Busy {
    fn send(&self, lb: &Lb) {
        lb.expect(
            "busy NAT data",
            &self.nat.frame(),
            XDP_TX,
            &nat_to(&self.nat, REAL1, REAL_HTTP).frame(),
        );
        let back = back_to_client(&self.nat_reply, HTTP).frame();
        lb.expect("busy NAT reply", &self.nat_reply.frame(), XDP_TX, &back);
        let dr = self
            .dr
            .clone()
            .macs(DIRECTOR_REAL_MAC, real_mac(REAL2))
            .frame();
        lb.expect("busy DR data", &self.dr.frame(), XDP_TX, &dr);
    }
}

/// `count` new connections from distinct clients of `net` (10.net.x.y),
/// each a SYN, then the client's ACK when `ack`; the busy connections send
/// every 8 of them. Returns the most entries the table was seen to hold.
fn flood(lb: &mut Lb, busy: &Busy, net: u8, count: u32, ack: bool, table: u32) -> usize {
    let mut max_entries = 0;
    for i in 0..count {
        let client = [10, net + (i >> 16) as u8, (i >> 8) as u8, i as u8];
        let port = 1024 + (i % 60000) as u16;
        let syn = Pkt::tcp(port, HTTP, SYN).from(client, port);
        let (action, out) = lb.run(&syn.frame());
        assert_eq!(action_name(action), "XDP_TX", "flood SYN #{i} is scheduled");
        assert_eq!(out.len(), syn.frame().len(), "flood SYN #{i}");
        if ack {
            let (action, _) = lb.run(&Pkt::tcp(port, HTTP, ACK).from(client, port).frame());
            assert_eq!(
                action_name(action),
                "XDP_TX",
                "flood ACK #{i} follows its connection"
            );
        }
        if i % 8 == 0 {
            busy.send(lb);
        }
        if i % 1024 == 0 {
            let n = lb.conn_count();
            assert!(n <= table as usize, "the table holds {n} > {table} entries");
            max_entries = max_entries.max(n);
        }
    }
    max_entries
}

/// Floods against a connection table of 512 entries (`conn_table_size`),
/// each 16 times what it holds, from distinct clients, while one NAT and
/// one DR connection keep sending (and the NAT real answering):
///
/// 1. a SYN flood (spoofed sources: one SYN each). The busy connections
///    keep their real to the byte, and so does an established connection
///    that has gone idle: the kernel's LRU keeps entries that were used
///    more than once on its active list, and evicts from the inactive one,
///    where the flood's used-once entries are.
/// 2. a connection flood (each client completes its side: SYN, then ACK),
///    whose entries are used twice and compete with everyone's. The busy
///    connections still keep their real; the idle one is now the least
///    recently used and is evicted, and its next segment is the kernel's to
///    answer (`pass_not_syn`).
///
/// The table never holds more than its size, and every eviction is
/// accounted: the kernel's LRU does not report them, so they are the
/// connections scheduled (`conn_new`, and the reals' counts in REAL_CONNS)
/// less those the table still holds. That is what the controller's sweeper
/// computes from the same maps and exports as `xlvs_conn_evictions_total`
/// (`lb_user::sweep::Evictions`), run here on the table the floods left.
#[test]
fn syn_flood_evicts_least_recently_used_and_established_connections_keep_their_real() {
    const TABLE: u32 = 512;
    const FLOOD: u32 = 16 * TABLE;
    let mut lb = Lb::with_conn_table_size(TABLE);
    let nat_ids = nat_http(&mut lb);
    let dr = lb.add_service(VIP, 81, IPPROTO_TCP);
    let dr_id = lb.add_real(dr, dr_real(REAL2, 81));

    // The tracked connections: NAT to REAL1, DR to REAL2, and an idle NAT
    // one (REAL2) that goes quiet after its handshake.
    let handshake = |lb: &mut Lb, client: [u8; 4], port: u16, real: [u8; 4]| {
        let syn = Pkt::tcp(port, HTTP, SYN).from(client, port);
        lb.expect(
            "SYN",
            &syn.frame(),
            XDP_TX,
            &nat_to(&syn, real, REAL_HTTP).frame(),
        );
        let synack = from_real(real, REAL_HTTP, port, SYN | ACK).to(client, port);
        lb.expect(
            "SYN-ACK",
            &synack.frame(),
            XDP_TX,
            &back_to_client(&synack, HTTP).frame(),
        );
        let ack = Pkt::tcp(port, HTTP, ACK).from(client, port);
        lb.expect(
            "ACK",
            &ack.frame(),
            XDP_TX,
            &nat_to(&ack, real, REAL_HTTP).frame(),
        );
    };
    handshake(&mut lb, CLIENT, 40000, REAL1);
    handshake(&mut lb, CLIENT2, 40001, REAL2);
    let dr_syn = Pkt::tcp(40002, 81, SYN);
    let dr_want = dr_syn
        .clone()
        .macs(DIRECTOR_REAL_MAC, real_mac(REAL2))
        .frame();
    lb.expect("DR SYN", &dr_syn.frame(), XDP_TX, &dr_want);
    let busy = Busy {
        nat: Pkt::tcp(40000, HTTP, ACK | PSH),
        nat_reply: from_real(REAL1, REAL_HTTP, 40000, ACK | PSH),
        dr: Pkt::tcp(40002, 81, ACK | PSH),
    };
    let idle = Pkt::tcp(40001, HTTP, ACK).from(CLIENT2, 40001);
    let idle_reply = from_real(REAL2, REAL_HTTP, 40001, ACK).to(CLIENT2, 40001);
    let busy_keys = [
        ("busy NAT client entry", busy.nat.conn_key()),
        ("busy NAT reply entry", busy.nat_reply.conn_key()),
        ("busy DR entry", busy.dr.conn_key()),
    ];

    // 1. SYN flood.
    let started = Instant::now();
    let mut max_entries = flood(&mut lb, &busy, 200, FLOOD, false, TABLE);
    let syn_flood = started.elapsed();
    for (what, key) in &busy_keys {
        assert!(lb.conn(key).is_some(), "SYN flood: the {what} survived");
    }
    assert!(
        lb.conn(&idle.conn_key()).is_some(),
        "SYN flood: the idle connection survived"
    );
    assert!(
        lb.conn(&idle_reply.conn_key()).is_some(),
        "SYN flood: the idle connection's reply entry survived"
    );
    assert_eq!(
        lb.counter(counter::CONN_NEW),
        u64::from(FLOOD) + 3,
        "every SYN was scheduled"
    );
    let flood_entries = lb.conns().len() - 5;
    assert!(
        flood_entries < TABLE as usize,
        "SYN flood: {flood_entries} flood entries left"
    );

    // 2. Connection flood.
    let started = Instant::now();
    max_entries = max_entries.max(flood(&mut lb, &busy, 220, FLOOD, true, TABLE));
    let conn_flood = started.elapsed();
    for (what, key) in &busy_keys {
        assert!(
            lb.conn(key).is_some(),
            "connection flood: the {what} survived"
        );
    }
    assert_eq!(
        lb.conn(&busy.nat.conn_key()).unwrap().state,
        tcp_state::ESTABLISHED
    );
    assert!(
        lb.conn(&idle.conn_key()).is_none(),
        "connection flood: the idle connection was evicted"
    );
    let idle_frame = idle.frame();
    lb.expect(
        "the evicted connection's ACK",
        &idle_frame,
        XDP_PASS,
        &idle_frame,
    );
    lb.assert_counters(
        &[
            (counter::CONN_NEW, 2 * u64::from(FLOOD) + 3),
            (counter::PASS_NOT_SYN, 1),
        ],
        "two floods",
    );

    // Eviction accounting.
    let scheduled = 2 * u64::from(FLOOD) + 3;
    let entries = lb.conns();
    assert!(entries.len() <= TABLE as usize, "{} entries", entries.len());
    let mut held: HashMap<u32, (u64, u64)> = HashMap::new();
    for (_, c) in entries.iter().filter(|(_, c)| c.flags & CONN_F_REPLY == 0) {
        let h = held.entry(c.real).or_default();
        if c.flags & CONN_F_INACTIVE != 0 {
            h.1 += 1;
        } else {
            h.0 += 1;
        }
    }
    let live: u64 = held.values().map(|(a, i)| a + i).sum();
    let evicted = scheduled - live;
    let mut counted: HashMap<u32, (u64, u64)> = HashMap::new();
    for id in nat_ids.into_iter().chain([dr_id]) {
        let c = lb.real_conns(id);
        counted.insert(id, (c.active, c.inactive));
    }
    let counted_total: u64 = counted.values().map(|(a, i)| a + i).sum();
    assert_eq!(
        counted_total, scheduled,
        "REAL_CONNS counts every scheduled connection"
    );
    let mut sweeper = lb_user::sweep::Evictions::default();
    assert!(
        sweeper.correct(&counted, &held).is_empty(),
        "the sweeper waits for a second look"
    );
    let taken: u64 = sweeper
        .correct(&counted, &held)
        .iter()
        .map(|(_, a, i)| a + i)
        .sum();
    assert_eq!(
        taken, evicted,
        "the sweeper uncounts exactly the evicted connections"
    );
    assert_eq!(sweeper.total, evicted, "xlvs_conn_evictions_total");
    assert!(
        evicted >= 2 * u64::from(FLOOD - TABLE),
        "a {TABLE}-entry table kept {live} of {scheduled} connections"
    );
    eprintln!(
        "floods into a {TABLE}-entry table: {FLOOD} SYNs in {syn_flood:?}, then {FLOOD} connections (SYN, ACK) in \
         {conn_flood:?}; at most {max_entries} entries seen; {live} connections held at the end, {evicted} evicted \
         (what the sweeper counts in xlvs_conn_evictions_total); the busy NAT and DR connections kept their reals"
    );
}

// ---------------------------------------------------------------- fuzz

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pct(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// A packet the model parsed: what the director keys on.
#[derive(Clone, Copy, Debug)]
struct Parsed {
    ihl: usize,
    tot: usize,
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    flags: u8,
    ttl: u8,
    /// More-fragments set, offset 0: a flow like any other packet, that its
    /// datagram's later fragments follow.
    first_fragment: bool,
    id: u16,
}

impl Parsed {
    fn tuple(&self) -> Tuple {
        (self.src, self.dst, self.sport, self.dport, self.proto)
    }
}

type Tuple = ([u8; 4], [u8; 4], u16, u16, u8);
/// What a datagram's fragments share: source, destination, IP id, protocol.
type FragTuple = ([u8; 4], [u8; 4], u16, u8);

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// The model's IPv4 options walk (RFC 791, as `ip_options_compile`).
fn options_ok(opts: &[u8]) -> bool {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => return true,
            1 => i += 1,
            _ => {
                let Some(&len) = opts.get(i + 1) else {
                    return false;
                };
                let len = usize::from(len);
                if len < 2 || i + len > opts.len() {
                    return false;
                }
                i += len;
            }
        }
    }
    true
}

/// The parser's rules, written again from the table at the top of this
/// file: the packet, or the reason counter it must end in.
fn model_parse(f: &[u8]) -> Result<Parsed, u32> {
    if f.len() < ETH {
        return Err(counter::DROP_TRUNCATED);
    }
    if f[12..14] == [0x86, 0xdd] {
        return Err(model_parse6(f));
    }
    if f[12..14] != [0x08, 0x00] {
        return Err(counter::PASS_NOT_IP);
    }
    if f.len() < ETH + 20 {
        return Err(counter::DROP_TRUNCATED);
    }
    let ip = &f[ETH..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let tot = usize::from(be16(&ip[2..]));
    if ip[0] >> 4 != 4 || ihl < 20 || tot < ihl {
        return Err(counter::DROP_BAD_HEADER);
    }
    if tot > ip.len() {
        return Err(counter::DROP_TRUNCATED);
    }
    if ones_sum(&ip[..ihl], 0) != 0xffff {
        return Err(counter::DROP_BAD_IP_CHECKSUM);
    }
    if !options_ok(&ip[20..ihl]) {
        return Err(counter::DROP_BAD_IP_OPTIONS);
    }
    // A fragment past the first: `Fuzz::expect_later_fragment` decides.
    let frag = be16(&ip[6..]);
    if frag & 0x1fff != 0 {
        return Err(counter::PASS_FRAGMENT);
    }
    let first_fragment = frag & 0x2000 != 0;
    let l4 = &ip[ihl..tot];
    let mut p = Parsed {
        ihl,
        tot,
        proto: ip[9],
        src: ip[12..16].try_into().unwrap(),
        dst: ip[16..20].try_into().unwrap(),
        sport: 0,
        dport: 0,
        flags: 0,
        ttl: ip[8],
        first_fragment,
        id: be16(&ip[4..]),
    };
    match p.proto {
        IPPROTO_TCP => {
            if l4.len() < 20
                || usize::from(l4[12] >> 4) * 4 < 20
                || usize::from(l4[12] >> 4) * 4 > l4.len()
            {
                return Err(counter::DROP_BAD_HEADER);
            }
            p.flags = l4[13];
        }
        IPPROTO_UDP => {
            // A first fragment holds only part of the datagram.
            if l4.len() < 8
                || be16(&l4[4..]) < 8
                || (!first_fragment && usize::from(be16(&l4[4..])) > l4.len())
            {
                return Err(counter::DROP_BAD_HEADER);
            }
        }
        // Echo here; the ICMP fixtures (tests/tests/icmp.rs) cover errors.
        lb_common::IPPROTO_ICMP => return Err(counter::PASS_ICMP),
        _ => return Err(counter::PASS_NOT_VIP),
    }
    p.sport = be16(l4);
    p.dport = be16(&l4[2..]);
    // An independent parser must agree that this is a packet.
    let sliced = etherparse::Ipv4Slice::from_slice(&ip[..tot])
        .expect("etherparse takes what the model takes");
    let payload = sliced.payload().payload;
    if p.proto == IPPROTO_TCP {
        etherparse::TcpSlice::from_slice(payload).expect("etherparse takes the TCP header");
    } else if !first_fragment {
        etherparse::UdpSlice::from_slice(payload).expect("etherparse takes the UDP header");
    }
    Ok(p)
}

/// The IPv6 parser's rules (`net::parse_ipv6`, `net::parse6`), written
/// again: the reason counter an IPv6 frame ends in. The fuzz test has no
/// IPv6 service, so a well-formed TCP or UDP packet is `pass_not_vip`.
fn model_parse6(f: &[u8]) -> u32 {
    if f.len() < ETH + 40 {
        return counter::DROP_TRUNCATED;
    }
    let ip = &f[ETH..];
    let payload = usize::from(be16(&ip[4..]));
    if ip[0] >> 4 != 6 || payload == 0 {
        return counter::DROP_BAD_HEADER;
    }
    if 40 + payload > ip.len() {
        return counter::DROP_TRUNCATED;
    }
    let end = 40 + payload;
    let (mut next, mut off) = (ip[6], 40);
    let mut first_fragment = false;
    let mut fragmented = false;
    for _ in 0..4 {
        match next {
            0 | 43 | 60 => {
                let Some(h) = ip.get(off..off + 4) else { return counter::DROP_BAD_HEADER };
                if next == 43 && h[3] != 0 {
                    return counter::PASS_IPV6_EXT;
                }
                next = h[0];
                off += (usize::from(h[1]) + 1) * 8;
            }
            44 if fragmented => return counter::DROP_BAD_HEADER,
            44 => {
                fragmented = true;
                let Some(h) = ip.get(off..off + 8) else { return counter::DROP_BAD_HEADER };
                if be16(&h[2..]) & 0xfff8 != 0 {
                    // No first fragment of any IPv6 datagram went by.
                    return counter::PASS_FRAGMENT;
                }
                first_fragment = be16(&h[2..]) & 1 != 0;
                next = h[0];
                off += 8;
            }
            _ => break,
        }
        if off > end {
            return counter::DROP_BAD_HEADER;
        }
    }
    if matches!(next, 0 | 43 | 44 | 60) {
        return counter::PASS_IPV6_EXT;
    }
    let l4 = &ip[off.min(ip.len())..];
    match next {
        IPPROTO_TCP => {
            if l4.len() < 20 || end < off + 20 {
                return counter::DROP_BAD_HEADER;
            }
            let doff = usize::from(l4[12] >> 4) * 4;
            if doff < 20 || end < off + doff {
                return counter::DROP_BAD_HEADER;
            }
        }
        IPPROTO_UDP => {
            if l4.len() < 8 || end < off + 8 {
                return counter::DROP_BAD_HEADER;
            }
            let ulen = usize::from(be16(&l4[4..]));
            if ulen < 8 || (!first_fragment && off + ulen > end) || be16(&l4[6..]) == 0 {
                return counter::DROP_BAD_HEADER;
            }
        }
        58 => return counter::PASS_ICMP,
        _ => {}
    }
    counter::PASS_NOT_VIP
}

/// Flags no TCP sends (model): SYN with FIN or RST, FIN with RST, none of
/// SYN/FIN/RST/ACK.
fn impossible(flags: u8) -> bool {
    let has = |f: u8| flags & f != 0;
    (has(SYN) && has(FIN))
        || (has(SYN) && has(RST))
        || (has(FIN) && has(RST))
        || flags & (SYN | FIN | RST | ACK) == 0
}

/// An IPv6 frame for the fuzz test's mutations: a SYN, behind extension
/// headers (hop-by-hop, destination options, a routing header, a fragment
/// header as a first, later or atomic fragment), or UDP with or without a
/// checksum.
fn ipv6_variant(r: &mut Rng) -> Vec<u8> {
    let syn = ipv6_syn();
    // (the fixed header's next header, one extension header naming TCP)
    let (first, ext): (u8, &[u8]) = match r.below(8) {
        0 => (0, &[6, 0, 1, 4, 0, 0, 0, 0]),
        1 => (60, &[6, 0, 1, 4, 0, 0, 0, 0]),
        2 => (43, &[6, 0, 4, 0, 0, 0, 0, 0]),
        3 => (44, &[6, 0, 0, 1, 0, 0, 0, 7]),
        4 => (44, &[6, 0, 0, 8, 0, 0, 0, 7]),
        5 => (44, &[6, 0, 0, 0, 0, 0, 0, 7]),
        _ => (6, &[]),
    };
    let mut f = syn[..54].to_vec();
    f[20] = first;
    let plen = be16(&f[18..]) + ext.len() as u16;
    f[18..20].copy_from_slice(&plen.to_be_bytes());
    f.extend_from_slice(ext);
    f.extend_from_slice(&syn[54..]);
    if r.pct(25) {
        // UDP in place of TCP: its checksum field is the TCP sequence's
        // second half (not zero), or sometimes zero.
        let l4 = f.len() - 20;
        let names_l4 = if ext.is_empty() { 20 } else { 54 };
        f[names_l4] = IPPROTO_UDP;
        f[l4 + 4..l4 + 6].copy_from_slice(&20u16.to_be_bytes());
        if r.pct(30) {
            f[l4 + 6..l4 + 8].copy_from_slice(&[0, 0]);
        }
    }
    f
}

/// A real as the fuzz test installed it.
#[derive(Clone, Copy, Debug)]
struct FuzzReal {
    addr: [u8; 4],
    port: u16,
    forward: u8,
    ifindex: u32,
}

/// A tracked client tuple: its real.
#[derive(Clone, Copy, Debug)]
struct Tracked {
    real: u32,
}

/// A tracked NAT reply tuple: where its packets go back to.
#[derive(Clone, Copy, Debug)]
struct ReplyTrack {
    vport: u16,
    peer_mac: [u8; 6],
    own_mac: [u8; 6],
}

/// What the model expects of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Dropped or passed untouched, with this reason.
    Reason(u32),
    /// A new connection: scheduled, then handled as a tracked client.
    New,
    /// A tracked client's packet, to this real.
    Client(u32),
    /// A tracked NAT reply.
    Reply,
    /// A fragment past the first, following its first's connection: a
    /// client's to this real, or (`None`) a NAT reply. Not `sure` when its
    /// first came about `FRAG_TIMEOUT_NS` ago, and may have expired.
    Later { real: Option<u32>, sure: bool },
}

const L4_CHECK_TCP: usize = 16;
const L4_CHECK_UDP: usize = 6;

/// Whether the L4 checksum of an IPv4 packet (`ip` starts at the IP header)
/// holds; `None` for UDP's "no checksum".
fn l4_checksum_ok(ip: &[u8], p: &Parsed) -> Option<bool> {
    let l4 = &ip[p.ihl..p.tot];
    if p.proto == IPPROTO_UDP && be16(&l4[L4_CHECK_UDP..]) == 0 {
        return None;
    }
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, p.proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    let initial = u32::from(ones_sum(&pseudo, 0));
    Some(ones_sum(l4, initial) == 0xffff)
}

struct Fuzz {
    lb: Lb,
    rng: Rng,
    /// The later fragment of the last frame, sent next.
    later_fragment: Option<Vec<u8>>,
    seed: u64,
    reals: HashMap<u32, FuzzReal>,
    /// (VIP, port, proto) -> real ids (the services).
    services: HashMap<([u8; 4], u16, u8), Vec<u32>>,
    clients: HashMap<Tuple, Tracked>,
    replies: HashMap<Tuple, ReplyTrack>,
    /// Datagrams whose first fragment went by a connection (source,
    /// destination, id, protocol): its tuple, and when.
    frags: HashMap<FragTuple, (Tuple, Instant)>,
    counters: Vec<u64>,
    /// Tallies for the identities at the end.
    sent: u64,
    refused: u64,
    actions: [u64; 5],
    new: u64,
    inpkts: u64,
    inbytes: u64,
    outpkts: u64,
    malformed: u64,
    by_reason: Vec<u64>,
}

impl Fuzz {
    fn new(seed: u64) -> Self {
        let mut lb = Lb::new();
        let mut reals = HashMap::new();
        let mut services = HashMap::new();
        let mut add = |lb: &mut Lb, vip: [u8; 4], port: u16, proto: u8, list: &[Real]| {
            let s = lb.add_service(vip, port, proto);
            let ids: Vec<u32> = list
                .iter()
                .map(|r| {
                    let id = lb.add_real(s, *r);
                    let addr = r.addr[0].to_ne_bytes();
                    reals.insert(
                        id,
                        FuzzReal {
                            addr,
                            port: u16::from_be(r.port),
                            forward: r.forward,
                            ifindex: r.ifindex,
                        },
                    );
                    id
                })
                .collect();
            services.insert((vip, port, proto), ids);
        };
        let redirected = |r: Real| Real {
            ifindex: OTHER_IFINDEX,
            ..r
        };
        add(
            &mut lb,
            VIP,
            HTTP,
            IPPROTO_TCP,
            &[
                nat_real(REAL1, REAL_HTTP),
                nat_real(REAL2, REAL_HTTP),
                nat_real(REAL3, REAL_HTTP),
            ],
        );
        add(
            &mut lb,
            VIP,
            DNS,
            IPPROTO_UDP,
            &[
                nat_real(REAL1, REAL_DNS),
                redirected(nat_real(REAL2, REAL_DNS)),
            ],
        );
        add(
            &mut lb,
            VIP,
            81,
            IPPROTO_TCP,
            &[dr_real(REAL2, 81), redirected(dr_real(REAL3, 81))],
        );
        add(
            &mut lb,
            VIP,
            82,
            IPPROTO_TCP,
            &[tun_real(REAL3, 82), redirected(tun_real(REAL1, 82))],
        );
        add(&mut lb, VIP2, 83, IPPROTO_UDP, &[dr_real(REAL1, 83)]);
        add(&mut lb, VIP2, 84, IPPROTO_UDP, &[tun_real(REAL2, 84)]);
        let counters = lb.counters();
        Self {
            lb,
            rng: Rng(seed | 1),
            later_fragment: None,
            seed,
            reals,
            services,
            clients: HashMap::new(),
            replies: HashMap::new(),
            frags: HashMap::new(),
            counters,
            sent: 0,
            refused: 0,
            actions: [0; 5],
            new: 0,
            inpkts: 0,
            inbytes: 0,
            outpkts: 0,
            malformed: 0,
            by_reason: vec![0; counter::COUNT as usize],
        }
    }

    /// A well-formed packet of one of the shapes the director meets.
    fn base(&mut self) -> Vec<u8> {
        let r = &mut self.rng;
        let client = [198, 51, 100, 1 + r.below(12) as u8];
        let cport = 40000 + r.below(6) as u16;
        let client_flags = r.pick(&[
            SYN,
            SYN,
            SYN,
            ACK,
            ACK | PSH,
            FIN | ACK,
            RST,
            RST | ACK,
            SYN | ACK,
            FIN,
        ]);
        let real_flags = r.pick(&[SYN | ACK, ACK, ACK | PSH, FIN | ACK, RST]);
        let shape = r.below(14);
        let mut p = match shape {
            0..=3 => Pkt::tcp(cport, HTTP, client_flags),
            4 | 5 => Pkt::udp(cport, DNS),
            6 => Pkt::tcp(cport, 81, client_flags),
            7 => Pkt::tcp(cport, 82, client_flags),
            8 => Pkt::udp(cport, 83).to(VIP2, 83),
            9 => Pkt::udp(cport, 84).to(VIP2, 84),
            10 | 11 => {
                // A NAT real's answer.
                let real = r.pick(&[REAL1, REAL2, REAL3]);
                from_real(real, REAL_HTTP, cport, real_flags)
                    .to(client, cport)
                    .macs(real_mac(real), DIRECTOR_REAL_MAC)
            }
            12 => Pkt::udp(REAL_DNS, cport)
                .from(r.pick(&[REAL1, REAL2]), REAL_DNS)
                .to(client, cport),
            _ => {
                let port = r.pick(&[HTTP, 443, 22]);
                Pkt::tcp(cport, port, client_flags).to(r.pick(&[NOT_A_VIP, VIP2]), port)
            }
        };
        if !(10..=12).contains(&shape) {
            p.src = client;
        }
        if r.pct(15) {
            // Clients that look like reals, and other odd neighbours.
            p.src = r.pick(&[
                REAL1,
                VIP,
                [0, 0, 0, 0],
                [255, 255, 255, 255],
                [127, 0, 0, 1],
            ]);
        }
        p.ttl = if r.pct(10) { r.pick(&[0, 1, 2]) } else { 64 };
        p.tos = r.byte();
        p.id = r.next() as u16;
        p.df = r.pct(70);
        let plen = if r.pct(30) { 0 } else { r.below(300) };
        p.payload = r.bytes(plen);
        if let L4::Udp { zero_checksum, .. } = &mut p.l4 {
            *zero_checksum = r.pct(20);
        }
        if r.pct(20) {
            p.options = valid_options(r);
        }
        let mut frame = p.frame();
        if r.pct(15) {
            // Ethernet padding, or trailing junk.
            let extra = if r.pct(50) {
                60usize.saturating_sub(frame.len())
            } else {
                1 + r.below(40)
            };
            let fill = if r.pct(50) { 0 } else { r.byte() };
            frame.extend(std::iter::repeat_n(fill, extra));
        }
        match r.below(40) {
            0 => arp_request(),
            1 => ipv6_variant(r),
            2 => icmp_echo(r.pick(&[VIP, NOT_A_VIP])),
            _ => frame,
        }
    }

    /// A frame to send: a base packet, mutated or not, or random bytes.
    fn frame(&mut self) -> Vec<u8> {
        if let Some(later) = self.later_fragment.take() {
            return later;
        }
        let kind = self.rng.below(100);
        if kind < 8 {
            // Random bytes, some behind an IPv4 EtherType.
            let len = self.rng.below(120);
            let mut f = self.rng.bytes(len);
            if len >= ETH && self.rng.pct(60) {
                f[12..14].copy_from_slice(&[0x08, 0x00]);
                if len > ETH && self.rng.pct(50) {
                    f[ETH] = 0x45;
                }
            }
            return f;
        }
        let mut f = self.base();
        let r = &mut self.rng;
        match kind {
            8..=20 => {}
            21..=24 => {
                // In two fragments: the first (with the L4 header) now,
                // the later one next.
                let (first, later) = split_in_two(&f);
                f = first;
                self.later_fragment = later;
            }
            25..=39 => {
                // Bit flips anywhere.
                for _ in 0..1 + r.below(4) {
                    let at = r.below(f.len());
                    f[at] ^= 1 << r.below(8);
                }
            }
            40..=49 => {
                // Bit flips, then a checksum that covers them: the header
                // is wrong only in its fields.
                for _ in 0..1 + r.below(3) {
                    let at = ETH + r.below((f.len() - ETH).min(60));
                    f[at] ^= 1 << r.below(8);
                }
                fix_ip_checksum(&mut f);
            }
            50..=69 => mutate_field(r, &mut f),
            70..=77 => {
                let len = r.below(f.len() + 1);
                f.truncate(len);
            }
            78..=84 => {
                let n = 1 + r.below(64);
                let extra = r.bytes(n);
                f.extend(extra);
            }
            85..=91 => {
                // Random L4 bytes behind a sound IPv4 header.
                if f.len() >= ETH + 20 && f[12..14] == [8, 0] {
                    let ihl = usize::from(f[ETH] & 0x0f) * 4;
                    let n = r.below(64);
                    f.truncate(ETH + ihl.min(f.len() - ETH));
                    f.extend(r.bytes(n));
                    let tot = (f.len() - ETH) as u16;
                    f[ETH + 2..ETH + 4].copy_from_slice(&tot.to_be_bytes());
                    f[ETH + 9] = r.pick(&[IPPROTO_TCP, IPPROTO_UDP]);
                    fix_ip_checksum(&mut f);
                }
            }
            _ => {
                // Options junk, the IHL and total length adjusted to it.
                if f.len() >= ETH + 20 && f[12..14] == [8, 0] && f[ETH] == 0x45 {
                    let words = 1 + r.below(10);
                    let junk = if r.pct(50) {
                        r.bytes(words * 4)
                    } else {
                        option_soup(r, words * 4)
                    };
                    let mut g = f[..ETH + 20].to_vec();
                    g.extend(junk);
                    g.extend_from_slice(&f[ETH + 20..]);
                    g[ETH] = 0x40 | (5 + words) as u8;
                    let tot = be16(&g[ETH + 2..]) + (words * 4) as u16;
                    g[ETH + 2..ETH + 4].copy_from_slice(&tot.to_be_bytes());
                    fix_ip_checksum(&mut g);
                    f = g;
                }
            }
        }
        f
    }

    /// The model's verdict for a fragment past the first (whose headers the
    /// parser checked): it follows its first fragment's connection, while
    /// that is tracked and the first came under `FRAG_TIMEOUT_NS` ago.
    fn expect_later_fragment(&self, input: &[u8]) -> Expect {
        let ip = &input[ETH..];
        let key = (ip[12..16].try_into().unwrap(), ip[16..20].try_into().unwrap(), be16(&ip[4..]), ip[9]);
        let Some((tuple, when)) = self.frags.get(&key) else {
            return Expect::Reason(counter::PASS_FRAGMENT);
        };
        let age = when.elapsed();
        let timeout = Duration::from_nanos(lb_common::FRAG_TIMEOUT_NS);
        if age > timeout + Duration::from_secs(1) {
            return Expect::Reason(counter::PASS_FRAGMENT);
        }
        let sure = age + Duration::from_secs(1) < timeout;
        if self.replies.contains_key(tuple) {
            return Expect::Later { real: None, sure };
        }
        match self.clients.get(tuple) {
            Some(t) => Expect::Later { real: Some(t.real), sure },
            None => Expect::Reason(counter::PASS_FRAGMENT),
        }
    }

    /// Whether `p` is a tracked client's SYN that reopens its connection
    /// as a new one: by the rule of `tcp_state::new_conn_expected`, on the
    /// state the director's entry is in now.
    fn reopens(&mut self, p: &Parsed) -> bool {
        if p.proto != IPPROTO_TCP || impossible(p.flags) || !self.clients.contains_key(&p.tuple()) {
            return false;
        }
        self.lb.conn(&conn_key(p.tuple())).is_some_and(|c| {
            tcp_state::new_conn_expected(c.state, p.flags, c.flags & CONN_F_TEMPLATED != 0)
        })
    }

    /// The model's verdict for a parsed packet; `reopened` when it is a
    /// tracked client's SYN that opens a new connection (`reopens`).
    fn expect(&self, p: &Parsed, reopened: bool) -> Expect {
        let tuple = p.tuple();
        if self.replies.contains_key(&tuple) {
            if p.proto == IPPROTO_TCP && impossible(p.flags) {
                return Expect::Reason(counter::DROP_TCP_FLAGS);
            }
            if p.ttl <= 1 {
                return Expect::Reason(counter::PASS_TTL);
            }
            return Expect::Reply;
        }
        if let Some(t) = self.clients.get(&tuple) {
            if p.proto == IPPROTO_TCP && impossible(p.flags) {
                return Expect::Reason(counter::DROP_TCP_FLAGS);
            }
            if !reopened {
                return Expect::Client(t.real);
            }
        }
        if !self.services.contains_key(&(p.dst, p.dport, p.proto)) {
            return Expect::Reason(counter::PASS_NOT_VIP);
        }
        let [a, ..] = p.src;
        if a == 0 || a == 127 || (224..240).contains(&a) || p.src == [255; 4] {
            return Expect::Reason(counter::DROP_MARTIAN);
        }
        if p.proto == IPPROTO_TCP {
            if impossible(p.flags) || p.flags & (FIN | ACK) == FIN {
                return Expect::Reason(counter::DROP_TCP_FLAGS);
            }
            if p.flags & (SYN | RST) != SYN {
                return Expect::Reason(counter::PASS_NOT_SYN);
            }
        }
        Expect::New
    }

    fn fail(&self, i: u64, what: &str, input: &[u8], got: Option<(u32, &[u8])>) -> ! {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let mut msg = format!(
            "hostile fuzz, seed {:#x} (XLVS_FUZZ_SEED={:#x} repeats it), packet #{i}: {what}\n  input:  {}\n",
            self.seed,
            self.seed,
            hex(input)
        );
        if let Some((action, out)) = got {
            let _ = writeln!(
                msg,
                "  action: {}\n  output: {}",
                action_name(action),
                hex(out)
            );
        }
        panic!("{msg}");
    }

    /// Sends one frame and checks everything about it.
    fn one(&mut self, i: u64, input: &[u8]) {
        let parsed = model_parse(input);
        if input.len() < ETH {
            // The kernel refuses it; nothing may be counted.
            if self.lb.try_run(input).is_ok() {
                self.fail(i, "a frame shorter than Ethernet ran", input, None);
            }
            self.refused += 1;
            return;
        }
        let reopened = parsed.as_ref().is_ok_and(|p| self.reopens(p));
        let expect = match &parsed {
            Err(reason) if *reason == counter::PASS_FRAGMENT && input[12..14] == [8, 0] => {
                self.expect_later_fragment(input)
            }
            Err(reason) => Expect::Reason(*reason),
            Ok(p) => self.expect(p, reopened),
        };
        // Whether the director remembers this first fragment's datagram: it
        // does for a tracked tuple whose flags it does not drop, and for a
        // new connection.
        let remembered = parsed.as_ref().is_ok_and(|p| {
            let tracked = self.clients.contains_key(&p.tuple()) || self.replies.contains_key(&p.tuple());
            p.first_fragment
                && (expect == Expect::New
                    || (tracked && !(p.proto == IPPROTO_TCP && impossible(p.flags))))
        });
        let (action, out) = self
            .lb
            .try_run(input)
            .unwrap_or_else(|e| self.fail(i, &format!("test run failed: {e}"), input, None));
        self.sent += 1;
        if action as usize >= self.actions.len() {
            self.fail(i, "unknown action", input, Some((action, &out)));
        }
        self.actions[action as usize] += 1;
        let now = self.lb.counters();
        let delta: Vec<u64> = now.iter().zip(&self.counters).map(|(a, b)| a - b).collect();
        self.counters = now;
        if remembered {
            let p = parsed.as_ref().unwrap();
            self.frags.insert((p.src, p.dst, p.id, p.proto), (p.tuple(), Instant::now()));
        }
        // A later fragment whose first may have expired: as the director saw it.
        let expect = match expect {
            Expect::Later { sure: false, .. } if delta[counter::FRAG_RELAYED as usize] == 0 => {
                Expect::Reason(counter::PASS_FRAGMENT)
            }
            other => other,
        };

        // A reopened connection is gone, with its reply entry.
        if delta[counter::CONN_RESCHEDULED as usize] != u64::from(reopened) {
            self.fail(i, &format!("conn_rescheduled moved {delta:?}, reopened: {reopened}"), input, Some((action, &out)));
        }
        if reopened {
            let p = parsed.as_ref().unwrap();
            let old = self.clients.remove(&p.tuple()).unwrap();
            let real = self.reals[&old.real];
            self.replies.remove(&(real.addr, p.src, real.port, p.sport, p.proto));
        }
        // A new connection: learn its real from the table.
        let mut expect = expect;
        if expect == Expect::New {
            let p = parsed.as_ref().unwrap();
            if delta[counter::CONN_NEW as usize] != 1 {
                self.fail(
                    i,
                    &format!("a new connection was expected, counters moved {delta:?}"),
                    input,
                    Some((action, &out)),
                );
            }
            self.new += 1;
            let key = conn_key(p.tuple());
            let Some(conn) = self.lb.conn(&key) else {
                self.fail(
                    i,
                    "no CONNS entry for the new connection",
                    input,
                    Some((action, &out)),
                )
            };
            let real = self.reals[&conn.real];
            self.clients.insert(p.tuple(), Tracked { real: conn.real });
            if real.forward == FWD_NAT {
                let reply: Tuple = (real.addr, p.src, real.port, p.sport, p.proto);
                self.clients.remove(&reply);
                self.replies.insert(
                    reply,
                    ReplyTrack {
                        vport: p.dport,
                        peer_mac: input[6..12].try_into().unwrap(),
                        own_mac: input[..6].try_into().unwrap(),
                    },
                );
            }
            expect = Expect::Client(conn.real);
        } else if delta[counter::CONN_NEW as usize] != 0 {
            self.fail(
                i,
                &format!("an unexpected new connection ({expect:?})"),
                input,
                Some((action, &out)),
            );
        }

        // The reason the model expects, and the forwarded packet's checks.
        let forwarded = action == XDP_TX || action == XDP_REDIRECT;
        let reason = match expect {
            Expect::Reason(r) => Some(r),
            Expect::Client(real) => {
                let p = parsed.as_ref().unwrap();
                let r = self.reals[&real];
                self.inpkts += 1;
                self.inbytes += p.tot as u64;
                if r.forward == FWD_NAT && p.ttl <= 1 {
                    Some(counter::PASS_TTL)
                } else {
                    if !forwarded {
                        self.fail(
                            i,
                            &format!("expected forwarding to real {real} ({r:?})"),
                            input,
                            Some((action, &out)),
                        );
                    }
                    self.check_client(i, input, p, r, action, &out);
                    None
                }
            }
            Expect::Reply => {
                let p = parsed.as_ref().unwrap();
                self.outpkts += 1;
                if !forwarded {
                    self.fail(
                        i,
                        "expected a NAT reply forwarded",
                        input,
                        Some((action, &out)),
                    );
                }
                self.check_reply(i, input, p, action, &out);
                None
            }
            Expect::Later { real, .. } => {
                let ip = &input[ETH..];
                let (tot, ttl) = (u64::from(be16(&ip[2..])), ip[8]);
                let nat = real.is_none_or(|real| self.reals[&real].forward == FWD_NAT);
                match real {
                    Some(_) => {
                        self.inpkts += 1;
                        self.inbytes += tot;
                    }
                    None if ttl > 1 => self.outpkts += 1,
                    None => {}
                }
                if nat && ttl <= 1 {
                    Some(counter::PASS_TTL)
                } else {
                    let ihl = usize::from(out.get(ETH).copied().unwrap_or(0) & 0x0f) * 4;
                    if !forwarded || out.len() < ETH + ihl || ones_sum(&out[ETH..ETH + ihl], 0) != 0xffff {
                        self.fail(i, "expected a later fragment forwarded, its IPv4 checksum right", input, Some((action, &out)));
                    }
                    if delta[counter::FRAG_RELAYED as usize] != 1 {
                        self.fail(i, "a later fragment forwarded, not counted frag_relayed", input, Some((action, &out)));
                    }
                    None
                }
            }
            Expect::New => unreachable!(),
        };
        let moved: Vec<usize> = delta
            .iter()
            .enumerate()
            .filter(|&(c, &d)| {
                d != 0 && ![counter::CONN_NEW, counter::FRAG_RELAYED, counter::CONN_RESCHEDULED].contains(&(c as u32))
            })
            .map(|(c, _)| c)
            .collect();
        match reason {
            Some(r) => {
                let want_action = if counter::NAMES[r as usize].starts_with("pass_") {
                    XDP_PASS
                } else {
                    XDP_DROP
                };
                if action != want_action || moved != [r as usize] || delta[r as usize] != 1 {
                    let names: Vec<&str> = moved.iter().map(|&c| counter::NAMES[c]).collect();
                    self.fail(
                        i,
                        &format!(
                            "expected {} and {}, counters moved: {names:?}",
                            action_name(want_action),
                            counter::NAMES[r as usize]
                        ),
                        input,
                        Some((action, &out)),
                    );
                }
                // Dropped or passed: untouched.
                if out != input {
                    self.fail(
                        i,
                        "a packet dropped or passed was changed",
                        input,
                        Some((action, &out)),
                    );
                }
                self.by_reason[r as usize] += 1;
                if (parsed.is_err() || r == counter::DROP_TCP_FLAGS)
                    && counter::NAMES[r as usize].starts_with("drop_")
                {
                    self.malformed += 1;
                }
            }
            None => {
                if !moved.is_empty() {
                    let names: Vec<&str> = moved.iter().map(|&c| counter::NAMES[c]).collect();
                    self.fail(
                        i,
                        &format!("forwarded, yet reason counters moved: {names:?}"),
                        input,
                        Some((action, &out)),
                    );
                }
            }
        }
    }

    /// A client's packet forwarded to `r`: exactly the rewrite of its method.
    fn check_client(&self, i: u64, input: &[u8], p: &Parsed, r: FuzzReal, action: u32, out: &[u8]) {
        let want_action = if r.ifindex == LO_IFINDEX {
            XDP_TX
        } else {
            XDP_REDIRECT
        };
        if action != want_action {
            self.fail(
                i,
                &format!("expected {} towards {r:?}", action_name(want_action)),
                input,
                Some((action, out)),
            );
        }
        let mut want = input.to_vec();
        want[..6].copy_from_slice(&real_mac(r.addr));
        want[6..12].copy_from_slice(&DIRECTOR_REAL_MAC);
        match r.forward {
            FWD_DR => {
                if out != want {
                    self.fail(i, "DR: only the MACs change", input, Some((action, out)));
                }
            }
            FWD_TUN => {
                let mut outer = Ipv4Header {
                    dscp: etherparse::IpDscp::try_new(input[ETH + 1] >> 2).unwrap(),
                    ecn: etherparse::IpEcn::try_new(input[ETH + 1] & 3).unwrap(),
                    identification: be16(&input[ETH + 4..]),
                    dont_fragment: input[ETH + 6] & 0x40 != 0,
                    time_to_live: p.ttl,
                    protocol: etherparse::IpNumber::IPV4,
                    source: DIRECTOR_IP,
                    destination: r.addr,
                    ..Ipv4Header::default()
                };
                outer.set_payload_len(p.tot).unwrap();
                let mut tunnelled =
                    eth_header(DIRECTOR_REAL_MAC, real_mac(r.addr), EtherType::IPV4);
                outer.write(&mut tunnelled).unwrap();
                tunnelled.extend_from_slice(&input[ETH..]);
                if out != tunnelled {
                    self.fail(
                        i,
                        "TUN: an outer header towards the real, the frame after it unchanged",
                        input,
                        Some((action, out)),
                    );
                }
            }
            _ => {
                want[ETH + 8] -= 1;
                want[ETH + 16..ETH + 20].copy_from_slice(&r.addr);
                want[ETH + p.ihl + 2..ETH + p.ihl + 4].copy_from_slice(&r.port.to_be_bytes());
                self.check_nat(i, input, p, &mut want, action, out, "NAT to the real");
            }
        }
    }

    /// A NAT reply: source back to VIP:vport, towards the client's router.
    fn check_reply(&self, i: u64, input: &[u8], p: &Parsed, action: u32, out: &[u8]) {
        let track = self.replies[&p.tuple()];
        if action != XDP_TX {
            self.fail(
                i,
                "a reply goes back out of the wire the client came in on",
                input,
                Some((action, out)),
            );
        }
        let mut want = input.to_vec();
        want[..6].copy_from_slice(&track.peer_mac);
        want[6..12].copy_from_slice(&track.own_mac);
        want[ETH + 8] -= 1;
        want[ETH + 12..ETH + 16].copy_from_slice(&VIP);
        want[ETH + p.ihl..ETH + p.ihl + 2].copy_from_slice(&track.vport.to_be_bytes());
        self.check_nat(i, input, p, &mut want, action, out, "NAT reply");
    }

    /// A NAT rewrite: every byte as `want` but the checksums, the IPv4
    /// checksum right, the L4 checksum right exactly when it was (a UDP 0
    /// stays 0).
    #[allow(clippy::too_many_arguments)]
    fn check_nat(
        &self,
        i: u64,
        input: &[u8],
        p: &Parsed,
        want: &mut [u8],
        action: u32,
        out: &[u8],
        what: &str,
    ) {
        if out.len() != want.len() {
            self.fail(i, &format!("{what}: length"), input, Some((action, out)));
        }
        let l4_check = ETH
            + p.ihl
            + if p.proto == IPPROTO_TCP {
                L4_CHECK_TCP
            } else {
                L4_CHECK_UDP
            };
        let mut masked = out.to_vec();
        for at in [ETH + 10, ETH + 11, l4_check, l4_check + 1] {
            masked[at] = 0;
            want[at] = 0;
        }
        if masked != want {
            self.fail(
                i,
                &format!("{what}: rewritten fields"),
                input,
                Some((action, out)),
            );
        }
        if ones_sum(&out[ETH..ETH + p.ihl], 0) != 0xffff {
            self.fail(
                i,
                &format!("{what}: IPv4 checksum"),
                input,
                Some((action, out)),
            );
        }
        let before = l4_checksum_ok(&input[ETH..], p);
        let after = l4_checksum_ok(&out[ETH..], p);
        if before != after {
            self.fail(
                i,
                &format!("{what}: L4 checksum was {before:?}, is {after:?}"),
                input,
                Some((action, out)),
            );
        }
        // etherparse reads the output as the packet it should be.
        let sliced =
            etherparse::SlicedPacket::from_ethernet(&out[..ETH + p.tot]).unwrap_or_else(|e| {
                self.fail(
                    i,
                    &format!("{what}: etherparse refuses the output: {e}"),
                    input,
                    Some((action, out)),
                )
            });
        let Some(etherparse::NetSlice::Ipv4(ip)) = sliced.net else {
            self.fail(i, "not IPv4", input, Some((action, out)))
        };
        let h = ip.header().to_header();
        // (0 and 0xffff are the same one's-complement sum; etherparse's
        // header has no field for the reserved flag, so its sum is off
        // when that is set.)
        let (have, calc) = (h.header_checksum, h.calc_header_checksum());
        let evil = out[ETH + 6] & 0x80 != 0;
        if !evil && have != calc && !(have | calc == 0xffff && (have == 0 || calc == 0)) {
            self.fail(
                i,
                &format!("{what}: etherparse's IPv4 checksum"),
                input,
                Some((action, out)),
            );
        }
        if what == "NAT to the real"
            && !self
                .reals
                .values()
                .any(|r| r.addr == h.destination && r.forward == FWD_NAT)
        {
            self.fail(
                i,
                "NAT: the destination is not a real",
                input,
                Some((action, out)),
            );
        }
    }
}

fn conn_key(t: Tuple) -> ConnKey {
    ConnKey {
        saddr: v4_addr(t.0),
        daddr: v4_addr(t.1),
        sport: t.2.to_be(),
        dport: t.3.to_be(),
        proto: t.4,
        family: AF_INET,
        _pad: [0; 2],
    }
}

/// Well-formed IPv4 options, padded with EOL to whole words.
fn valid_options(r: &mut Rng) -> Vec<u8> {
    let mut o = Vec::new();
    for _ in 0..1 + r.below(4) {
        match r.below(4) {
            0 => o.push(1),
            1 => o.extend_from_slice(&[0x94, 4, 0, 0]),
            2 => o.extend_from_slice(&[7, 7, 4, 0, 0, 0, 0]),
            _ => o.extend_from_slice(&[0x88, 4, r.byte(), r.byte()]),
        }
    }
    while o.len() % 4 != 0 {
        o.push(0);
    }
    o.truncate(40);
    o
}

/// Option-like bytes: types and lengths near the edges.
fn option_soup(r: &mut Rng, len: usize) -> Vec<u8> {
    let mut o = Vec::new();
    while o.len() < len {
        match r.below(5) {
            0 => o.push(1),
            1 => o.push(0),
            _ => {
                o.push({
                    let x = r.byte();
                    r.pick(&[0x94, 7, 0x44, 0x83, 0x89, 0x88, x])
                });
                o.push({
                    let x = r.byte();
                    r.pick(&[
                        0,
                        1,
                        2,
                        3,
                        4,
                        (len - o.len()) as u8,
                        (len - o.len() + 1) as u8,
                        x,
                    ])
                });
            }
        }
    }
    o.truncate(len);
    o
}

/// Changes one header field of an Ethernet/IPv4 frame to an edge value,
/// mostly keeping the IPv4 checksum right.
fn mutate_field(r: &mut Rng, f: &mut [u8]) {
    if f.len() < ETH + 20 || f[12..14] != [8, 0] {
        return;
    }
    let ihl = (usize::from(f[ETH] & 0x0f) * 4).max(20);
    let l4 = ETH + ihl;
    let frame_ip = (f.len() - ETH) as u16;
    match r.below(11) {
        0 => f[ETH] = (f[ETH] & 0x0f) | (r.below(16) as u8) << 4,
        1 => f[ETH] = 0x40 | r.below(16) as u8,
        2 => {
            let tot = be16(&f[ETH + 2..]);
            let v = {
                let x = r.next() as u16;
                r.pick(&[
                    0,
                    1,
                    19,
                    20,
                    39,
                    tot.wrapping_sub(1),
                    tot.wrapping_add(1),
                    frame_ip,
                    frame_ip + 1,
                    0xffff,
                    x,
                ])
            };
            f[ETH + 2..ETH + 4].copy_from_slice(&v.to_be_bytes());
        }
        3 => {
            let v = {
                let x = r.next() as u16;
                r.pick(&[0x2000u16, 0x0001, 0x4000, 0x8000, 0x3fff, 0x6000, x])
            };
            f[ETH + 6..ETH + 8].copy_from_slice(&v.to_be_bytes());
        }
        4 => {
            f[ETH + 9] = {
                let x = r.byte();
                r.pick(&[1, 4, 6, 17, 41, 132, x])
            }
        }
        5 => f[ETH + 8] = r.pick(&[0, 1, 2, 255]),
        6 if f.len() > l4 + 13 => f[l4 + 12] = (r.below(16) as u8) << 4 | (f[l4 + 12] & 0x0f),
        7 if f.len() > l4 + 13 => f[l4 + 13] = r.byte(),
        8 if f.len() > l4 + 5 => {
            let ulen = frame_ip.saturating_sub(ihl as u16);
            let v = {
                let x = r.next() as u16;
                r.pick(&[0, 1, 7, 8, ulen.wrapping_sub(1), ulen, ulen + 1, 0xffff, x])
            };
            f[l4 + 4..l4 + 6].copy_from_slice(&v.to_be_bytes());
        }
        9 if f.len() > l4 + 3 => {
            // Ports and addresses that hit, or nearly hit, a service.
            let port = r.pick(&[HTTP, DNS, 81, 82, 83, 84, REAL_HTTP, REAL_DNS, 0, 0xffff]);
            f[l4 + 2 * r.below(2)..][..2].copy_from_slice(&port.to_be_bytes());
        }
        _ => {
            let addr = r.pick(&[VIP, VIP2, REAL1, REAL2, REAL3, NOT_A_VIP, CLIENT]);
            let at = ETH + 12 + 4 * r.below(2);
            f[at..at + 4].copy_from_slice(&addr);
        }
    }
    if r.pct(85) {
        fix_ip_checksum(f);
    }
}

/// At least 100,000 random and mutated packets through the loaded director
/// (TCP and UDP; NAT, DR and TUN services; NAT replies), each checked
/// against the model: the reason counter it must move (and no other), the
/// action, untouched bytes when dropped or passed, the exact rewrite when
/// forwarded (to a configured real, the real its connection already has,
/// checksums right, or an L4 checksum exactly as wrong as it came in), and
/// never anything malformed forwarded. At the end, the counters add up:
///
/// - sum(pass_*) = XDP_PASS, sum(drop_*) = XDP_DROP, no XDP_ABORTED;
/// - XDP_PASS + XDP_DROP + XDP_TX + XDP_REDIRECT = packets sent;
/// - conn_new = new connections = sum of REAL_STATS.conns;
/// - REAL_STATS in/out packets = client/reply packets that reached their
///   real's stage (forwarded, plus NAT's pass_ttl, which IPVS also counts),
///   and inbytes their IP total lengths.
#[test]
fn fuzz_random_and_mutated_packets_through_the_director() {
    let seed = std::env::var("XLVS_FUZZ_SEED")
        .ok()
        .map(|s| {
            let s = s.trim();
            s.strip_prefix("0x")
                .map_or_else(|| s.parse(), |h| u64::from_str_radix(h, 16))
                .expect("XLVS_FUZZ_SEED: a number")
        })
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let packets: u64 = std::env::var("XLVS_FUZZ_PACKETS")
        .ok()
        .map_or(100_000, |s| s.parse().expect("XLVS_FUZZ_PACKETS: a number"));
    eprintln!(
        "hostile fuzz: seed {seed:#x} (XLVS_FUZZ_SEED={seed:#x} repeats it), {packets} packets"
    );
    let mut fuzz = Fuzz::new(seed);
    let started = Instant::now();
    let mut i = 0;
    while fuzz.sent < packets {
        let frame = fuzz.frame();
        fuzz.one(i, &frame);
        i += 1;
    }
    let elapsed = started.elapsed();

    let f = &mut fuzz;
    let c = f.lb.counters();
    let sum = |prefix: &str| -> u64 {
        (0..counter::COUNT as usize)
            .filter(|&k| counter::NAMES[k].starts_with(prefix))
            .map(|k| c[k])
            .sum()
    };
    let what = format!("seed {seed:#x}");
    assert_eq!(f.actions[XDP_ABORTED as usize], 0, "{what}: XDP_ABORTED");
    assert_eq!(
        sum("pass_"),
        f.actions[XDP_PASS as usize],
        "{what}: pass_* = XDP_PASS"
    );
    assert_eq!(
        sum("drop_"),
        f.actions[XDP_DROP as usize],
        "{what}: drop_* = XDP_DROP"
    );
    let forwarded = f.actions[XDP_TX as usize] + f.actions[XDP_REDIRECT as usize];
    assert_eq!(
        sum("pass_") + sum("drop_") + forwarded,
        f.sent,
        "{what}: every packet has one outcome"
    );
    assert_eq!(c[counter::CONN_NEW as usize], f.new, "{what}: conn_new");
    let ids: Vec<u32> = f.reals.keys().copied().collect();
    let stats: Vec<_> = ids.iter().map(|&id| f.lb.real_stats(id)).collect();
    assert_eq!(
        stats.iter().map(|s| s.conns).sum::<u64>(),
        f.new,
        "{what}: REAL_STATS conns"
    );
    assert_eq!(
        stats.iter().map(|s| s.inpkts).sum::<u64>(),
        f.inpkts,
        "{what}: REAL_STATS inpkts"
    );
    assert_eq!(
        stats.iter().map(|s| s.inbytes).sum::<u64>(),
        f.inbytes,
        "{what}: REAL_STATS inbytes"
    );
    assert_eq!(
        stats.iter().map(|s| s.outpkts).sum::<u64>(),
        f.outpkts,
        "{what}: REAL_STATS outpkts"
    );
    let entries = f.lb.conn_count();
    assert_eq!(
        entries,
        f.clients.len() + f.replies.len(),
        "{what}: CONNS holds every tracked tuple"
    );

    let mut report = String::new();
    for (name, n) in counter::NAMES.iter().zip(&c) {
        if *n > 0 {
            let _ = write!(report, " {name}={n}");
        }
    }
    eprintln!(
        "hostile fuzz: {} packets in {elapsed:?} ({} frames under 14 bytes refused by the kernel); \
         XDP_TX={} XDP_REDIRECT={} XDP_PASS={} XDP_DROP={}; {} malformed, none forwarded; {} connections\n  counters:{report}",
        f.sent,
        f.refused,
        f.actions[XDP_TX as usize],
        f.actions[XDP_REDIRECT as usize],
        f.actions[XDP_PASS as usize],
        f.actions[XDP_DROP as usize],
        f.malformed,
        f.new,
    );
    // The mix reached every case it is meant to.
    for (name, reason) in [
        ("truncated", counter::DROP_TRUNCATED),
        ("bad header", counter::DROP_BAD_HEADER),
        ("bad checksum", counter::DROP_BAD_IP_CHECKSUM),
        ("bad options", counter::DROP_BAD_IP_OPTIONS),
        ("TCP flags", counter::DROP_TCP_FLAGS),
        ("fragments", counter::PASS_FRAGMENT),
        ("not a SYN", counter::PASS_NOT_SYN),
        ("TTL", counter::PASS_TTL),
    ] {
        assert!(
            f.by_reason[reason as usize] > 0,
            "{what}: no {name} case was generated"
        );
    }
    assert!(
        f.actions[XDP_TX as usize] > 1000 && f.actions[XDP_REDIRECT as usize] > 100,
        "{what}: enough forwarded"
    );
    assert!(f.outpkts > 100, "{what}: enough NAT replies");
    assert!(
        c[counter::FRAG_RELAYED as usize] > 100,
        "{what}: enough later fragments sent after their first"
    );
}

/// The identity the fuzz test checks, on a handful of packets whose
/// outcome is known: every packet ends in exactly one reason counter or is
/// forwarded (and counted for its real).
#[test]
fn counters_add_up_on_a_known_mix() {
    let mut lb = Lb::new();
    let [r1, ..] = nat_http(&mut lb);
    let syn = Pkt::tcp(40000, HTTP, SYN);
    let frames = [
        syn.frame(),                                            // forwarded, conn_new
        Pkt::tcp(40000, HTTP, ACK).frame(),                     // forwarded
        Pkt::tcp(40001, HTTP, ACK).frame(),                     // pass_not_syn
        Pkt::tcp(40002, HTTP, SYN | FIN).frame(),               // drop_tcp_flags
        raw_patched(&syn.frame(), ETH + 10, &[0, 0]),           // drop_bad_ip_checksum
        syn.frame()[..30].to_vec(),                             // drop_truncated
        patched(&syn.frame(), ETH, &[0x44]),                    // drop_bad_header
        Pkt::tcp(40000, HTTP, SYN).to(NOT_A_VIP, HTTP).frame(), // pass_not_vip
        arp_request(),                                          // pass_not_ip
    ];
    let mut actions = [0u64; 5];
    for f in &frames {
        actions[lb.run(f).0 as usize] += 1;
    }
    lb.assert_counters(
        &[
            (counter::CONN_NEW, 1),
            (counter::PASS_NOT_SYN, 1),
            (counter::DROP_TCP_FLAGS, 1),
            (counter::DROP_BAD_IP_CHECKSUM, 1),
            (counter::DROP_TRUNCATED, 1),
            (counter::DROP_BAD_HEADER, 1),
            (counter::PASS_NOT_VIP, 1),
            (counter::PASS_NOT_IP, 1),
        ],
        "known mix",
    );
    assert_eq!(actions[XDP_TX as usize], 2);
    assert_eq!(
        lb.real_stats(r1).inpkts,
        2,
        "forwarded packets are counted per real"
    );
    assert_eq!(actions[XDP_PASS as usize], 3);
    assert_eq!(actions[XDP_DROP as usize], 4);
}
