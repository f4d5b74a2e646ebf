//! `lb_common::net::parse6`, the IPv6 director's parser, over any bytes
//! behind an IPv6 EtherType: it must never read outside the frame, and
//! what it accepts must hold `parse_ipv6`'s rules. ICMPv6 goes on through
//! `lb_common::icmp::parse_error6` and the checksum over the
//! pseudo-header; a later fragment through `reread_ipv6`.
#![no_main]

use lb_common::{
    AF_INET6, IPPROTO_TCP, IPPROTO_UDP, icmp,
    net::{Bytes, ParseError, parse_ipv6, parse6, reread_ipv6},
};
use libfuzzer_sys::fuzz_target;

fn aligned(frame: &[u8]) -> Box<[u8]> {
    let mut buf = vec![0u8; frame.len() + 2].into_boxed_slice();
    buf[2..].copy_from_slice(frame);
    buf
}

fuzz_target!(|data: &[u8]| {
    // Every input is an IPv6 frame: the EtherType is set, the rest fuzzed.
    let mut frame = vec![0u8; 12];
    frame.extend_from_slice(&[0x86, 0xdd]);
    frame.extend_from_slice(data);
    let buf = aligned(&frame);
    let pkt = Bytes(&buf[2..]);
    match parse6(&pkt) {
        Ok(flow) => {
            let ip = &frame[14..];
            let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            assert_eq!(ip[0] >> 4, 6);
            assert!(payload > 0 && 40 + payload <= ip.len());
            assert_eq!(flow.family, AF_INET6);
            assert_eq!(usize::from(flow.ip_len), 40 + payload);
            assert!(flow.l4_off >= 54 && flow.l4_off + 8 <= 14 + 40 + payload, "the L4 header inside the payload");
            let l4 = &frame[flow.l4_off..14 + 40 + payload];
            match flow.proto {
                IPPROTO_TCP => {
                    let doff = usize::from(l4[12] >> 4) * 4;
                    assert!(doff >= 20 && doff <= l4.len());
                }
                IPPROTO_UDP => assert_ne!([l4[6], l4[7]], [0, 0], "IPv6 UDP has a checksum"),
                other => panic!("accepted protocol {other}"),
            }
            assert_eq!(flow.sport.to_ne_bytes(), [l4[0], l4[1]]);
            assert_eq!(flow.dport.to_ne_bytes(), [l4[2], l4[3]]);
        }
        Err(ParseError::Icmp) => {
            let outer = parse_ipv6(&pkt).expect("an ICMPv6 packet has a parsed header");
            if let Ok(error) = icmp::parse_error6(&pkt, &outer) {
                assert!(matches!(frame[outer.l4_off], 1..=3), "an error type");
                assert!(matches!(error.proto, IPPROTO_TCP | IPPROTO_UDP));
                assert!(error.quote_l4_off + 4 <= 14 + usize::from(outer.ip_len), "the quoted ports inside");
                let _ = icmp::checksum_ok(&pkt, &outer, &error);
            }
        }
        Err(ParseError::Fragment) => {
            let later = reread_ipv6(&pkt).expect("a later fragment reads again");
            assert!(!later.first_fragment);
        }
        Err(ParseError::NotIp | ParseError::BadChecksum | ParseError::BadOptions) => {
            panic!("not an IPv6 parser's error")
        }
        Err(_) => {}
    }
});
