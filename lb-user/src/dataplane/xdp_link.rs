//! Attaching the director's XDP program through netlink (`IFLA_XDP`), not a
//! BPF link. A BPF link lives as long as the process that holds it; a
//! netlink attachment stays with the interface. So when the director dies
//! (a crash, SIGKILL), its data plane keeps forwarding the connections it
//! has, as IPVS keeps forwarding when keepalived dies, until the backup's
//! gratuitous ARPs have moved the traffic, instead of leaving the VIPs on a
//! kernel that answers their clients with resets. A clean stop detaches.

use std::os::fd::RawFd;

use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage, LinkXdp},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// Attaches the program `fd` to interface `ifindex`, replacing whatever
/// XDP program it had (a crashed director's, say). The kernel picks the
/// driver mode when the driver has one, as `ip link set xdp` does.
///
/// # Errors
/// When the kernel refuses.
pub fn attach(ifindex: u32, fd: RawFd) -> std::io::Result<()> {
    set_xdp(ifindex, fd)
}

/// Detaches whatever XDP program `ifindex` has.
///
/// # Errors
/// When the kernel refuses.
pub fn detach(ifindex: u32) -> std::io::Result<()> {
    set_xdp(ifindex, -1)
}

fn set_xdp(ifindex: u32, fd: RawFd) -> std::io::Result<()> {
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    link.attributes.push(LinkAttribute::Xdp(vec![LinkXdp::Fd(fd), LinkXdp::Flags(0)]));
    let mut request = NetlinkMessage::from(RouteNetlinkMessage::SetLink(link));
    request.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    request.finalize();
    let mut bytes = vec![0; request.buffer_len()];
    request.serialize(&mut bytes);

    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket.send(&bytes, 0)?;
    let mut reply = Vec::with_capacity(8192);
    socket.recv(&mut reply, 0)?;
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    match reply.payload {
        NetlinkPayload::Error(e) if e.code.is_some() => Err(e.to_io()),
        _ => Ok(()),
    }
}
