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
    route::{RouteAddress, RouteAttribute, RouteType},
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
        for attr in &route.attributes {
            match attr {
                RouteAttribute::Oif(i) => ifindex = Some(*i),
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = *g,
                RouteAttribute::PrefSource(RouteAddress::Inet(s)) => src = *s,
                _ => {}
            }
        }
        let Some(ifindex) = ifindex else { return Ok(None) };
        if route.header.kind == RouteType::Local {
            return Ok(Some(NextHop { ifindex, smac: [0; 6], dmac: [0; 6], src: dst, local: true }));
        }
        let Some(smac) = self.link_mac(ifindex).await? else { return Ok(None) };
        match self.neighbour_mac(ifindex, gateway).await? {
            Some(dmac) => Ok(Some(NextHop { ifindex, smac, dmac, src, local: false })),
            None => {
                poke(gateway);
                Ok(None)
            }
        }
    }

    async fn link_mac(&self, ifindex: u32) -> Result<Option<[u8; 6]>, Error> {
        let mut links = self.handle.link().get().match_index(ifindex).execute();
        while let Some(link) = links.try_next().await? {
            for attr in link.attributes {
                if let LinkAttribute::Address(mac) = attr {
                    return Ok(mac.try_into().ok());
                }
            }
        }
        Ok(None)
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
