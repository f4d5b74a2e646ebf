//! `lb_common::net::parse`, the parser the XDP director runs, over any
//! bytes: it must never read outside the frame (the address sanitizer
//! watches), and whatever it accepts must hold the rules that
//! `ParseError` lists. ICMP goes on through `lb_common::icmp`: the error
//! reader and the checksum sum must stay inside the frame too, and what
//! they accept must be an error that quotes TCP or UDP ports.
#![no_main]

use lb_common::{
    IPPROTO_TCP, IPPROTO_UDP, icmp,
    net::{Bytes, ParseError, parse, reread_ipv4, tcp_flags_impossible, tcp_flags_invalid_untracked},
};
use libfuzzer_sys::fuzz_target;

/// The frame at a 2-mod-4 address, as the kernel lays packets out
/// (NET_IP_ALIGN), so that the parser's aligned header reads are sound; and
/// ending where its allocation ends, so that the address sanitizer catches
/// a read one byte past the frame.
fn aligned(frame: &[u8]) -> Box<[u8]> {
    let mut buf = vec![0u8; frame.len() + 2].into_boxed_slice();
    assert_eq!(
        buf.as_ptr() as usize % 4,
        0,
        "the allocator aligns to 4 at least"
    );
    buf[2..].copy_from_slice(frame);
    buf
}

fn sum(bytes: &[u8]) -> u32 {
    let mut s = 0u32;
    for pair in bytes.chunks(2) {
        s += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s
}

fuzz_target!(|frame: &[u8]| {
    let buf = aligned(frame);
    let got = parse(&Bytes(&buf[2..]));
    match got {
        Ok(flow) => {
            assert_eq!(frame[12..14], [0x08, 0x00]);
            let ip = &frame[14..];
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            assert_eq!(ip[0] >> 4, 4);
            assert!(ihl >= 20 && tot >= ihl && tot <= ip.len());
            assert_eq!(sum(&ip[..ihl]), 0xffff, "the IPv4 checksum holds");
            assert_eq!(
                u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff,
                0,
                "no fragment past the first"
            );
            assert_eq!(flow.first_fragment, ip[6] & 0x20 != 0);
            assert_eq!(flow.l4_off, 14 + ihl);
            assert_eq!(usize::from(flow.ip_len), tot);
            let l4 = &ip[ihl..tot];
            match flow.proto {
                IPPROTO_TCP => {
                    let doff = usize::from(l4[12] >> 4) * 4;
                    assert!(doff >= 20 && doff <= l4.len());
                    assert_eq!(flow.tcp_flags, l4[13]);
                }
                IPPROTO_UDP => {
                    let ulen = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
                    assert!(ulen >= 8 && (flow.first_fragment || ulen <= l4.len()));
                    assert_eq!(flow.tcp_flags, 0);
                }
                other => panic!("accepted protocol {other}"),
            }
            assert_eq!(flow.sport.to_ne_bytes(), [l4[0], l4[1]]);
            assert_eq!(flow.dport.to_ne_bytes(), [l4[2], l4[3]]);
            assert_eq!(flow.saddr[0].to_ne_bytes(), ip[12..16]);
            assert_eq!(flow.daddr[0].to_ne_bytes(), ip[16..20]);
            // The untracked rule is the stricter one.
            assert!(
                !tcp_flags_impossible(flow.tcp_flags)
                    || tcp_flags_invalid_untracked(flow.tcp_flags)
            );
        }
        Err(ParseError::Icmp) => {
            let pkt = Bytes(&buf[2..]);
            let outer = reread_ipv4(&pkt).expect("a parsed ICMP packet has an outer header");
            assert_eq!(frame[14 + 9], 1);
            if let Ok(error) = icmp::parse_error(&pkt, &outer) {
                assert!(matches!(frame[outer.l4_off], 3 | 4 | 11), "an error type");
                assert!(matches!(error.proto, IPPROTO_TCP | IPPROTO_UDP));
                assert!(error.quote_l4_off + 8 <= 14 + usize::from(outer.ip_len), "the quote holds 8 bytes of L4");
                let _ = icmp::checksum_ok(&pkt, &outer, &error);
            }
        }
        Err(ParseError::NotIp) => assert!(frame.len() >= 14 && frame[12..14] != [0x08, 0x00]),
        Err(ParseError::Truncated) => {}
        Err(_) => assert!(frame.len() >= 34, "a header error needs a header"),
    }
});
