//! Where to send a packet for a real: the egress interface, the director's
//! MAC on it, the next hop's MAC and the source address for tunnelling,
//! resolved from the kernel's routing and neighbour tables over netlink.
//! Nobody types MAC addresses into the config.

use std::net::{Ipv4Addr, UdpSocket};

use futures_util::TryStreamExt as _;
use netlink_packet_route::{
    AddressFamily,
    link::LinkAttribute,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteMetric, RouteType},
};
use rtnetlink::{Handle, RouteMessageBuilder};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    /// The director's preferred source address towards the real.
    pub src: Ipv4Addr,
    /// The real is one of the director's own addresses (a local route):
    /// its packets go to the kernel, as IPVS's Local forwarding.
    pub local: bool,
    /// The path MTU towards the real, as the kernel's `dst_mtu`: the route's
    /// (a learned PMTU, or an `mtu` set on the route) or else the link's.
    pub mtu: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("netlink request")]
    Netlink(#[from] rtnetlink::Error),
    #[error("netlink socket")]
    Io(#[from] std::io::Error),
}

pub struct Resolver {
    handle: Handle,
}

impl Resolver {
    /// Opens a netlink connection; its task runs on the current tokio runtime.
    ///
    /// # Errors
    /// When the netlink socket cannot be opened.
    pub fn new() -> Result<Self, Error> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// Resolves the next hop towards `dst`. `Ok(None)` means the route exists
    /// but the neighbour is not known yet: resolution has been started (a
    /// datagram to the discard port makes the kernel ARP for it), so ask again
    /// shortly.
    ///
    /// # Errors
    /// On netlink failures, including "no route".
    pub async fn resolve(&self, dst: Ipv4Addr) -> Result<Option<NextHop>, Error> {
        let request = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(dst, 32).build();
        let Some(route) = self.handle.route().get(request).execute().try_next().await? else {
            return Ok(None);
        };
        let mut ifindex = None;
        let mut gateway = dst;
        let mut src = Ipv4Addr::UNSPECIFIED;
        let mut route_mtu = None;
        for attr in &route.attributes {
            match attr {
                RouteAttribute::Oif(i) => ifindex = Some(*i),
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = *g,
                RouteAttribute::PrefSource(RouteAddress::Inet(s)) => src = *s,
                RouteAttribute::Metrics(metrics) => {
                    route_mtu = metrics.iter().find_map(|m| match m {
                        RouteMetric::Mtu(mtu) => Some(*mtu),
                        _ => None,
                    });
                }
                _ => {}
            }
        }
        let Some(ifindex) = ifindex else { return Ok(None) };
        if route.header.kind == RouteType::Local {
            return Ok(Some(NextHop { ifindex, smac: [0; 6], dmac: [0; 6], src: dst, local: true, mtu: 0 }));
        }
        let Some((smac, link_mtu)) = self.link(ifindex).await? else { return Ok(None) };
        let mtu = route_mtu.unwrap_or(link_mtu);
        match self.neighbour_mac(ifindex, gateway).await? {
            Some(dmac) => Ok(Some(NextHop { ifindex, smac, dmac, src, local: false, mtu })),
            None => {
                poke(gateway);
                Ok(None)
            }
        }
    }

    /// The link's MAC address and MTU.
    async fn link(&self, ifindex: u32) -> Result<Option<([u8; 6], u32)>, Error> {
        let mut links = self.handle.link().get().match_index(ifindex).execute();
        let Some(link) = links.try_next().await? else { return Ok(None) };
        let mut mac = None;
        let mut mtu = 0;
        for attr in link.attributes {
            match attr {
                LinkAttribute::Address(a) => mac = <[u8; 6]>::try_from(a).ok(),
                LinkAttribute::Mtu(m) => mtu = m,
                _ => {}
            }
        }
        Ok(mac.map(|mac| (mac, mtu)))
    }

    async fn neighbour_mac(&self, ifindex: u32, addr: Ipv4Addr) -> Result<Option<[u8; 6]>, Error> {
        let mut neighbours = self.handle.neighbours().get().set_address_family(AddressFamily::Inet).execute();
        while let Some(n) = neighbours.try_next().await? {
            let usable = matches!(
                n.header.state,
                NeighbourState::Reachable
                    | NeighbourState::Stale
                    | NeighbourState::Delay
                    | NeighbourState::Probe
                    | NeighbourState::Permanent
                    | NeighbourState::Noarp
            );
            if n.header.ifindex != ifindex || !usable {
                continue;
            }
            let mut matches = false;
            let mut mac = None;
            for attr in n.attributes {
                match attr {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => matches = a == addr,
                    NeighbourAttribute::LinkLayerAddress(l) => mac = <[u8; 6]>::try_from(l).ok(),
                    _ => {}
                }
            }
            if matches && mac.is_some() {
                return Ok(mac);
            }
        }
        Ok(None)
    }
}

/// Makes the kernel resolve `addr`'s MAC by sending it one empty datagram to
/// the discard port. Best effort: a failure only delays resolution.
fn poke(addr: Ipv4Addr) {
    if let Ok(socket) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) {
        let _ = socket.send_to(&[], (addr, 9));
    }
}
