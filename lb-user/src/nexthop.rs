//! Where to send a packet for a real: the egress interface, the director's
//! MAC on it, the next hop's MAC and the source address for tunnelling,
//! resolved from the kernel's routing and neighbour tables over netlink.
//! Nobody types MAC addresses into the config.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};

use futures_util::TryStreamExt as _;
use netlink_packet_route::{
    AddressFamily,
    address::{AddressAttribute, AddressScope},
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
    /// The director's preferred source address towards the real, of the
    /// real's family: the route's `src` (prefsrc), else (IPv6) the first
    /// global address of the egress link.
    pub src: IpAddr,
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
    /// datagram to the discard port makes the kernel ARP, or for IPv6 send a
    /// neighbour solicitation, for it), so ask again shortly.
    ///
    /// # Errors
    /// On netlink failures, including "no route".
    pub async fn resolve(&self, dst: IpAddr) -> Result<Option<NextHop>, Error> {
        let request = match dst {
            IpAddr::V4(d) => RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(d, 32).build(),
            IpAddr::V6(d) => RouteMessageBuilder::<Ipv6Addr>::new().destination_prefix(d, 128).build(),
        };
        let Some(route) = self.handle.route().get(request).execute().try_next().await? else {
            return Ok(None);
        };
        let mut ifindex = None;
        let mut gateway = dst;
        let mut src = None;
        let mut route_mtu = None;
        for attr in &route.attributes {
            match attr {
                RouteAttribute::Oif(i) => ifindex = Some(*i),
                RouteAttribute::Gateway(g) => gateway = route_ip(g).unwrap_or(gateway),
                RouteAttribute::PrefSource(s) => src = route_ip(s),
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
        let src = match (src, dst) {
            (Some(s), _) if crate::addr::family(s) == crate::addr::family(dst) => s,
            (_, IpAddr::V6(_)) => self.global_v6_address(ifindex).await?.map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), IpAddr::V6),
            (_, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        match self.neighbour_mac(ifindex, gateway).await? {
            Some(dmac) => Ok(Some(NextHop { ifindex, smac, dmac, src, local: false, mtu })),
            None => {
                poke(gateway, ifindex);
                Ok(None)
            }
        }
    }

    /// The first global (universe-scope) IPv6 address of a link, the
    /// source of IPv6 tunnels when the route names none.
    async fn global_v6_address(&self, ifindex: u32) -> Result<Option<Ipv6Addr>, Error> {
        let mut addresses = self.handle.address().get().set_link_index_filter(ifindex).execute();
        while let Some(a) = addresses.try_next().await? {
            if a.header.family != AddressFamily::Inet6 || a.header.scope != AddressScope::Universe {
                continue;
            }
            let found = a.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Address(IpAddr::V6(v6)) => Some(*v6),
                _ => None,
            });
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
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

    async fn neighbour_mac(&self, ifindex: u32, addr: IpAddr) -> Result<Option<[u8; 6]>, Error> {
        let family = match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        let mut neighbours = self.handle.neighbours().get().set_address_family(family).execute();
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
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => matches = IpAddr::V4(a) == addr,
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => matches = IpAddr::V6(a) == addr,
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

/// An address of a route attribute, of either family.
const fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Makes the kernel resolve `addr`'s MAC (ARP, or NDP for IPv6) by sending
/// it one empty datagram to the discard port, out of `ifindex` when the
/// address is link-local (an IPv6 gateway usually is). Best effort: a
/// failure only delays resolution.
fn poke(addr: IpAddr, ifindex: u32) {
    let (bind, to) = match addr {
        IpAddr::V4(v4) => (SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), SocketAddr::from((v4, 9))),
        // The scope id only counts for link-local addresses.
        IpAddr::V6(v6) => (SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)), SocketAddr::V6(SocketAddrV6::new(v6, 9, 0, ifindex))),
    };
    if let Ok(socket) = UdpSocket::bind(bind) {
        let _ = socket.send_to(&[], to);
    }
}
