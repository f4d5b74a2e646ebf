//! The VRRP advertisement decoder (`lb_user::vrrp::packet::decode`), fed
//! what a raw socket delivers: never a panic, and an advertisement it
//! accepts encodes back to a datagram that decodes the same.
//!
//! The first byte picks the filter (the VRID; its top bit: a unicast peer
//! list holding the datagram's source) and, with its second-highest bit,
//! asks for the VRRP checksum to be fixed up, so that the fuzzer gets past
//! it to the checks after.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use lb_user::vrrp::packet::{Filter, checksum, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, datagram)) = data.split_first() else {
        return;
    };
    let mut datagram = datagram.to_vec();
    let source = datagram
        .get(12..16)
        .map(|a| Ipv4Addr::new(a[0], a[1], a[2], a[3]));
    let destination = datagram
        .get(16..20)
        .map(|a| Ipv4Addr::new(a[0], a[1], a[2], a[3]));
    if control & 0x40 != 0
        && let (Some(src), Some(dst)) = (source, destination)
    {
        let ihl = usize::from(datagram[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([datagram[2], datagram[3]])).min(datagram.len());
        if ihl + 8 <= total {
            datagram[ihl + 6..ihl + 8].copy_from_slice(&[0, 0]);
            let sum = checksum(src, dst, &datagram[ihl..total]);
            datagram[ihl + 6..ihl + 8].copy_from_slice(&sum.to_be_bytes());
        }
    }
    let peers: Vec<IpAddr> = if control & 0x80 != 0 {
        source.into_iter().map(IpAddr::V4).collect()
    } else {
        Vec::new()
    };
    let filter = Filter {
        vrid: control & 0x3f,
        peers: &peers,
    };
    if let Ok(received) = decode(&datagram, &filter) {
        let wire = received.advert.to_wire(received.src, received.dst);
        let again = decode(&wire, &filter)
            .expect("an encoded advertisement decodes");
        assert_eq!(again, received);
    }
});
