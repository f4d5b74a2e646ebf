//! Taking the virtual addresses over and giving them up: adding and
//! removing them over netlink, and announcing them, IPv4 ones with
//! gratuitous ARP and IPv6 ones with unsolicited neighbour advertisements
//! (as keepalived's `ndisc_send_unsolicited_na`).

use std::{
    collections::BTreeMap,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use futures_util::TryStreamExt as _;
use netlink_packet_route::{
    AddressFamily,
    address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressScope},
};
use pnet_datalink::{Channel, MacAddr, NetworkInterface};
use pnet_packet::{
    MutablePacket as _,
    arp::{ArpHardwareTypes, ArpOperations, MutableArpPacket},
    ethernet::{EtherTypes, MutableEthernetPacket},
    icmpv6::{
        Icmpv6Packet, Icmpv6Types,
        ndp::{Icmpv6Codes, MutableNeighborAdvertPacket, NdpOption, NdpOptionTypes, NeighborAdvertFlags},
    },
    ip::IpNextHeaderProtocols,
    ipv6::MutableIpv6Packet,
};
use rtnetlink::Handle;

use super::socket::ifindex;
use crate::config::VirtualIp;

/// The length of a gratuitous ARP frame: Ethernet header and ARP body.
pub const GARP_LEN: usize = 14 + 28;

/// An ARP request broadcast from `mac` that announces `vip`: sender and
/// target IP are both the VIP, sender MAC the interface's.
#[must_use]
pub fn garp_frame(mac: [u8; 6], vip: Ipv4Addr) -> [u8; GARP_LEN] {
    let mut frame = [0u8; GARP_LEN];
    let mac = MacAddr::from(mac);
    {
        // The buffer is exactly the right size, so these cannot fail.
        let Some(mut eth) = MutableEthernetPacket::new(&mut frame) else { return [0; GARP_LEN] };
        eth.set_destination(MacAddr::broadcast());
        eth.set_source(mac);
        eth.set_ethertype(EtherTypes::Arp);
        let Some(mut arp) = MutableArpPacket::new(eth.payload_mut()) else { return [0; GARP_LEN] };
        arp.set_hardware_type(ArpHardwareTypes::Ethernet);
        arp.set_protocol_type(EtherTypes::Ipv4);
        arp.set_hw_addr_len(6);
        arp.set_proto_addr_len(4);
        arp.set_operation(ArpOperations::Request);
        arp.set_sender_hw_addr(mac);
        arp.set_sender_proto_addr(vip);
        arp.set_target_hw_addr(MacAddr::zero());
        arp.set_target_proto_addr(vip);
    }
    frame
}

/// The length of an unsolicited neighbour advertisement frame: Ethernet,
/// IPv6, the advertisement and one target link-layer address option.
pub const UNSOLICITED_NA_LEN: usize = 14 + 40 + 24 + 8;
/// All nodes on the link, where unsolicited advertisements go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// An unsolicited neighbour advertisement (RFC 4861 7.2.6) of `vip` from
/// `mac`, as keepalived sends: from the VIP to ff02::1 (Ethernet
/// 33:33:00:00:00:01), hop limit 255, Override set so that neighbours
/// replace the old master's MAC, Router set when this host forwards, and
/// the target link-layer address option.
#[must_use]
pub fn unsolicited_na_frame(mac: [u8; 6], vip: Ipv6Addr, router: bool) -> [u8; UNSOLICITED_NA_LEN] {
    let mut frame = [0u8; UNSOLICITED_NA_LEN];
    let mac = MacAddr::from(mac);
    // The buffer is exactly the right size, so these cannot fail.
    let Some(mut eth) = MutableEthernetPacket::new(&mut frame) else { return [0; UNSOLICITED_NA_LEN] };
    eth.set_destination(MacAddr::new(0x33, 0x33, 0, 0, 0, 1));
    eth.set_source(mac);
    eth.set_ethertype(EtherTypes::Ipv6);
    let Some(mut ip) = MutableIpv6Packet::new(eth.payload_mut()) else { return [0; UNSOLICITED_NA_LEN] };
    ip.set_version(6);
    ip.set_payload_length(24 + 8);
    ip.set_next_header(IpNextHeaderProtocols::Icmpv6);
    ip.set_hop_limit(255);
    ip.set_source(vip);
    ip.set_destination(ALL_NODES);
    let Some(mut na) = MutableNeighborAdvertPacket::new(ip.payload_mut()) else { return [0; UNSOLICITED_NA_LEN] };
    na.set_icmpv6_type(Icmpv6Types::NeighborAdvert);
    na.set_icmpv6_code(Icmpv6Codes::NoCode);
    let router = if router { NeighborAdvertFlags::Router } else { 0 };
    na.set_flags(NeighborAdvertFlags::Override | router);
    na.set_target_addr(vip);
    na.set_options(&[NdpOption { option_type: NdpOptionTypes::TargetLLAddr, length: 1, data: mac.octets().to_vec() }]);
    let sum = Icmpv6Packet::new(na.packet_mut()).map(|p| pnet_packet::icmpv6::checksum(&p, &vip, &ALL_NODES));
    na.set_checksum(sum.unwrap_or(0));
    frame
}

/// Whether `interface` forwards IPv6 (this thread's network namespace):
/// the Router flag of its neighbour advertisements says so, as keepalived's.
fn forwards_ipv6(interface: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{interface}/forwarding")).is_ok_and(|v| v.trim() == "1")
}

/// Sends `count` announcements for each address, each out of its
/// interface: a gratuitous ARP for an IPv4 one, an unsolicited neighbour
/// advertisement for an IPv6 one. Returns how many frames went out;
/// failures are logged.
pub fn announce(vips: &[VirtualIp], count: u32) -> usize {
    if count == 0 || vips.is_empty() {
        return 0;
    }
    let mut by_interface: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
    for v in vips {
        by_interface.entry(v.interface.as_str()).or_default().push(v.addr);
    }
    let interfaces = pnet_datalink::interfaces();
    let mut sent = 0;
    for (name, addrs) in by_interface {
        match announce_on(&interfaces, name, &addrs, count) {
            Ok(n) => sent += n,
            Err(e) => tracing::warn!("vrrp: announcing the addresses on {name}: {e}"),
        }
    }
    sent
}

fn announce_on(interfaces: &[NetworkInterface], name: &str, addrs: &[IpAddr], count: u32) -> io::Result<usize> {
    let iface = interfaces
        .iter()
        .find(|i| i.name == name)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such interface"))?;
    let mac = iface
        .mac
        .filter(|m| *m != MacAddr::zero())
        .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "the interface has no MAC address"))?;
    let config = pnet_datalink::Config {
        promiscuous: false,
        read_buffer_size: 64,
        read_timeout: Some(std::time::Duration::from_millis(1)),
        write_timeout: Some(std::time::Duration::from_millis(100)),
        ..Default::default()
    };
    let Channel::Ethernet(mut tx, _rx) = pnet_datalink::channel(iface, config)? else {
        return Err(io::Error::other("not an Ethernet channel"));
    };
    let router = addrs.iter().any(IpAddr::is_ipv6) && forwards_ipv6(name);
    let frames: Vec<Vec<u8>> = addrs
        .iter()
        .map(|a| match a {
            IpAddr::V4(v4) => garp_frame(mac.octets(), *v4).to_vec(),
            IpAddr::V6(v6) => unsolicited_na_frame(mac.octets(), *v6, router).to_vec(),
        })
        .collect();
    let mut sent = 0;
    for _ in 0..count {
        for frame in &frames {
            match tx.send_to(frame, None) {
                Some(Ok(())) => sent += 1,
                Some(Err(e)) => return Err(e),
                None => return Err(io::Error::other("the frame did not fit the write buffer")),
            }
        }
    }
    Ok(sent)
}

/// Adds and removes addresses over rtnetlink.
pub struct Addresses {
    handle: Handle,
}

#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("interface {0} does not exist")]
    NoInterface(String),
    #[error(transparent)]
    Netlink(#[from] rtnetlink::Error),
}

impl Addresses {
    /// Opens a netlink connection; its task runs on the current runtime.
    ///
    /// # Errors
    /// When the netlink socket cannot be opened.
    pub fn new() -> io::Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// Adds `vip` to its interface; one that is there already is fine. An
    /// IPv6 address goes without duplicate address detection (IFA_F_NODAD,
    /// as keepalived adds them): it must serve at once, and the old master
    /// may still hold it for a moment.
    ///
    /// # Errors
    /// When the interface is missing or netlink refuses.
    pub async fn add(&self, vip: &VirtualIp) -> Result<(), AddressError> {
        let index = ifindex(&vip.interface).ok_or_else(|| AddressError::NoInterface(vip.interface.clone()))?;
        let mut request = self.handle.address().add(index, vip.addr, vip.prefix_len);
        if vip.addr.is_ipv6() {
            let message = request.message_mut();
            message.header.flags |= AddressHeaderFlags::Nodad;
            message.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match request.execute().await {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            other => Ok(other?),
        }
    }

    /// Removes `vip` from its interface if it is there.
    ///
    /// # Errors
    /// When netlink refuses.
    pub async fn remove(&self, vip: &VirtualIp) -> Result<(), AddressError> {
        let Some(index) = ifindex(&vip.interface) else { return Ok(()) };
        let mut found = Vec::new();
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(vip.addr)
            .execute();
        while let Some(message) = stream.try_next().await? {
            found.push(message);
        }
        for message in found {
            match self.handle.address().del(message).execute().await {
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EADDRNOTAVAIL => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// The interface's first link-local IPv6 address that can be a source:
    /// not tentative (duplicate address detection still running), not
    /// failed, and not one of `vips`: a link-local VIP the master adds is
    /// listed first by the kernel (newest first within a scope), and the
    /// primary must not change with the role. `None` when it has none yet.
    ///
    /// # Errors
    /// When netlink refuses.
    pub async fn link_local(&self, ifindex: u32, vips: &[VirtualIp]) -> Result<Option<Ipv6Addr>, AddressError> {
        let mut stream = self.handle.address().get().set_link_index_filter(ifindex).execute();
        while let Some(message) = stream.try_next().await? {
            if message.header.family != AddressFamily::Inet6 || message.header.scope != AddressScope::Link {
                continue;
            }
            let mut flags = AddressFlags::from_bits_retain(u32::from(message.header.flags.bits()));
            let mut address = None;
            for attribute in &message.attributes {
                match attribute {
                    AddressAttribute::Flags(f) => flags = *f,
                    AddressAttribute::Address(IpAddr::V6(a)) => address = Some(*a),
                    _ => {}
                }
            }
            if flags.intersects(AddressFlags::Tentative | AddressFlags::Dadfailed) {
                continue;
            }
            if let Some(a) = address.filter(|a| a.is_unicast_link_local() && !vips.iter().any(|v| v.addr == IpAddr::V6(*a))) {
                return Ok(Some(a));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gratuitous_arp_frame() {
        let frame = garp_frame([0x02, 0, 0, 0, 0, 0x01], Ipv4Addr::new(10, 0, 0, 100));
        #[rustfmt::skip]
        let expected: [u8; GARP_LEN] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x06, // Ethernet, ARP
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01,                               // Ethernet/IPv4, request
            0x02, 0, 0, 0, 0, 0x01, 10, 0, 0, 100,                                  // sender MAC, VIP
            0, 0, 0, 0, 0, 0, 10, 0, 0, 100,                                        // target: the VIP
        ];
        assert_eq!(frame, expected);
    }

    /// The advertisement keepalived sends for 2001:db8::100 from
    /// 02:00:00:00:00:01. The checksum by hand, over the pseudo-header
    /// (the VIP 0x2001 + 0x0db8 + 0x0100, ff02::1 0xff02 + 0x0001, length
    /// 0x0020, next header 0x003a) and the message (0x8800, 0x2000 with
    /// Override, the target again, option 0x0201, 0x0200, 0x0000, 0x0001):
    /// 0x2_08d1, folded 0x08d3, complemented 0xf72c; with Router (0xa000)
    /// 0x2_88d1, folded 0x88d3, complemented 0x772c.
    #[test]
    fn unsolicited_neighbour_advertisement_frame() {
        let vip: Ipv6Addr = "2001:db8::100".parse().unwrap();
        let frame = unsolicited_na_frame([0x02, 0, 0, 0, 0, 0x01], vip, false);
        let target = vip.octets();
        let mut expected = vec![
            0x33, 0x33, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x01, 0x86, 0xdd, // Ethernet to all nodes, IPv6
            0x60, 0, 0, 0, 0x00, 0x20, 58, 255, // version 6, 32 bytes of ICMPv6, hop limit 255
        ];
        expected.extend_from_slice(&target); // from the VIP
        expected.extend_from_slice(&ALL_NODES.octets());
        expected.extend_from_slice(&[136, 0, 0xf7, 0x2c, 0x20, 0, 0, 0]); // advertisement, Override
        expected.extend_from_slice(&target);
        expected.extend_from_slice(&[2, 1, 0x02, 0, 0, 0, 0, 0x01]); // target link-layer address
        assert_eq!(frame.to_vec(), expected);
        let router = unsolicited_na_frame([0x02, 0, 0, 0, 0, 0x01], vip, true);
        assert_eq!(router[54..60], [136, 0, 0x77, 0x2c, 0xa0, 0]);
    }
}
