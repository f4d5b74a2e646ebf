//! Taking the virtual addresses over and giving them up: adding and
//! removing them over netlink, and announcing them with gratuitous ARP.

use std::{collections::BTreeMap, io, net::IpAddr, net::Ipv4Addr};

use futures_util::TryStreamExt as _;
use pnet_datalink::{Channel, MacAddr, NetworkInterface};
use pnet_packet::{
    MutablePacket as _,
    arp::{ArpHardwareTypes, ArpOperations, MutableArpPacket},
    ethernet::{EtherTypes, MutableEthernetPacket},
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

/// Sends `count` gratuitous ARPs for each address, each out of its
/// interface. Returns how many frames went out; failures are logged.
pub fn garp(vips: &[VirtualIp], count: u32) -> usize {
    if count == 0 || vips.is_empty() {
        return 0;
    }
    let mut by_interface: BTreeMap<&str, Vec<Ipv4Addr>> = BTreeMap::new();
    for v in vips {
        by_interface.entry(v.interface.as_str()).or_default().push(v.addr);
    }
    let interfaces = pnet_datalink::interfaces();
    let mut sent = 0;
    for (name, addrs) in by_interface {
        match garp_on(&interfaces, name, &addrs, count) {
            Ok(n) => sent += n,
            Err(e) => tracing::warn!("vrrp: gratuitous ARP on {name}: {e}"),
        }
    }
    sent
}

fn garp_on(interfaces: &[NetworkInterface], name: &str, addrs: &[Ipv4Addr], count: u32) -> io::Result<usize> {
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
    let mut sent = 0;
    for _ in 0..count {
        for addr in addrs {
            let frame = garp_frame(mac.octets(), *addr);
            match tx.send_to(&frame, None) {
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

    /// Adds `vip` to its interface; one that is there already is fine.
    ///
    /// # Errors
    /// When the interface is missing or netlink refuses.
    pub async fn add(&self, vip: &VirtualIp) -> Result<(), AddressError> {
        let index = ifindex(&vip.interface).ok_or_else(|| AddressError::NoInterface(vip.interface.clone()))?;
        match self.handle.address().add(index, IpAddr::V4(vip.addr), vip.prefix_len).execute().await {
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
            .set_address_filter(IpAddr::V4(vip.addr))
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
}
