//! The IPv6 VRRP advertisement decoder
//! (`lb_user::vrrp::packet::decode_ipv6`), fed what an IPv6 raw socket
//! delivers: the message, with the source, destination and hop limit its
//! control messages give. Never a panic, and an advertisement it accepts
//! encodes back to a message that decodes the same.
//!
//! The input is a control byte (as the `vrrp` target's: the VRID, a
//! unicast peer list holding the source, the checksum fixed up), the
//! source and destination (16 bytes each), the hop limit (a byte, 0 for
//! none known), then the message.
#![no_main]

use std::net::{IpAddr, Ipv6Addr};

use lb_user::vrrp::packet::{Filter, Ipv6Header, checksum, decode_ipv6};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 34 {
        return;
    }
    let control = data[0];
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&data[1..17]).unwrap());
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&data[17..33]).unwrap());
    let hop_limit = (data[33] != 0).then_some(data[33]);
    let mut message = data[34..].to_vec();
    if control & 0x40 != 0 && message.len() >= 8 {
        message[6..8].copy_from_slice(&[0, 0]);
        let sum = checksum(src, dst, &message);
        message[6..8].copy_from_slice(&sum.to_be_bytes());
    }
    let peers: Vec<IpAddr> = if control & 0x80 != 0 {
        vec![IpAddr::V6(src)]
    } else {
        Vec::new()
    };
    let filter = Filter {
        vrid: control & 0x3f,
        peers: &peers,
    };
    let header = Ipv6Header {
        src,
        dst,
        hop_limit,
    };
    if let Ok(received) = decode_ipv6(&message, &header, &filter) {
        let again = decode_ipv6(
            &received.advert.to_wire(received.src, received.dst),
            &header,
            &filter,
        )
        .expect("an encoded advertisement decodes");
        assert_eq!(again, received);
    }
});
