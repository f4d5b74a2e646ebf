//! The raw IP socket adverts go out and come in on: protocol 112, bound to
//! the interface, a member of the VRRP group there.
//!
//! IPv4: with IP_HDRINCL, so that the source address (which the checksum
//! covers) and the TTL are exactly ours; received datagrams carry their
//! IPv4 header and, through IP_PKTINFO, the interface they arrived on.
//!
//! IPv6: the kernel writes the header on sending (hop limit 255 by
//! IPV6_MULTICAST_HOPS and IPV6_UNICAST_HOPS, the link-local source given
//! per message with IPV6_PKTINFO) and strips it on receiving, so the
//! destination, interface and hop limit come as IPV6_PKTINFO and
//! IPV6_HOPLIMIT control messages. The checksum is ours both ways, not the
//! kernel's (IPV6_CHECKSUM), which would drop bad ones uncounted.

use std::{
    ffi::CString,
    io,
    mem::{MaybeUninit, size_of},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4},
    os::fd::AsRawFd,
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::packet;
use crate::config::vrrp::Family;

/// The interface index of `name`, if it exists (in this thread's network
/// namespace).
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

/// What the interface looks like now: whether it is up and running, and its
/// first IPv4 address (an IPv4 instance's primary). An IPv6 instance's
/// primary, the link-local address, needs its DAD flags, which only
/// netlink tells ([`super::takeover::Addresses::link_local`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub running: bool,
    pub primary: Option<Ipv4Addr>,
}

impl Link {
    /// Usable for an IPv4 instance: up, running, with an IPv4 address.
    #[must_use]
    pub fn usable(&self) -> Option<Ipv4Addr> {
        self.primary.filter(|_| self.running)
    }
}

/// Reads `name`'s state with getifaddrs. `None` when the interface is gone.
pub fn link(name: &str) -> Option<Link> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return None;
    }
    let mut found = None::<Link>;
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let ifa = unsafe { &*cursor };
        cursor = ifa.ifa_next;
        // SAFETY: ifa_name is a NUL-terminated string.
        let ifa_name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if ifa_name.to_bytes() != name.as_bytes() {
            continue;
        }
        let flags = ifa.ifa_flags;
        let running = flags & libc::IFF_UP as u32 != 0 && flags & libc::IFF_RUNNING as u32 != 0;
        let link = found.get_or_insert(Link { running, primary: None });
        link.running = running;
        if link.primary.is_none() && !ifa.ifa_addr.is_null() {
            // SAFETY: a sockaddr of the family it says.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: AF_INET means a sockaddr_in.
                let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                link.primary = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            }
        }
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(head) };
    found
}

pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
    family: Family,
    ifindex: u32,
}

/// One datagram as received: its length in the buffer, the interface it
/// came in on, and for IPv6 what the kernel said of its header (`None`
/// when it did not give the source or destination).
pub struct Datagram {
    pub len: usize,
    pub ifindex: Option<u32>,
    pub ipv6: Option<packet::Ipv6Header>,
}

impl VrrpSocket {
    /// A raw socket of protocol 112 and `family` bound to `interface`,
    /// joined to the group (224.0.0.18, ff02::12) there, multicast out of
    /// it with TTL (hop limit) 255 and no loop.
    ///
    /// # Errors
    /// When the socket cannot be made (not root, no such interface).
    pub fn open(interface: &str, ifindex: u32, family: Family) -> io::Result<Self> {
        let protocol = Some(Protocol::from(i32::from(packet::PROTOCOL)));
        let socket = match family {
            Family::Ipv4 => {
                let socket = Socket::new(Domain::IPV4, Type::RAW, protocol)?;
                socket.bind_device(Some(interface.as_bytes()))?;
                socket.set_header_included_v4(true)?;
                socket.join_multicast_v4_n(&packet::GROUP, &socket2::InterfaceIndexOrAddress::Index(ifindex))?;
                set_multicast_if(&socket, ifindex)?;
                socket.set_multicast_ttl_v4(u32::from(packet::TTL))?;
                socket.set_ttl_v4(u32::from(packet::TTL))?;
                socket.set_multicast_loop_v4(false)?;
                set_int(&socket, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
                socket
            }
            Family::Ipv6 => {
                let socket = Socket::new(Domain::IPV6, Type::RAW, protocol)?;
                socket.bind_device(Some(interface.as_bytes()))?;
                socket.join_multicast_v6(&packet::GROUP6, ifindex)?;
                socket.set_multicast_if_v6(ifindex)?;
                socket.set_multicast_hops_v6(u32::from(packet::TTL))?;
                socket.set_unicast_hops_v6(u32::from(packet::TTL))?;
                socket.set_multicast_loop_v6(false)?;
                set_int(&socket, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
                set_int(&socket, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)?;
                socket
            }
        };
        socket.set_nonblocking(true)?;
        // SAFETY: the socket owns its descriptor, which stays open (and the
        // same) until the AsyncFd drops it.
        let fd = unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }.map_err(io::Error::from)?;
        Ok(Self { fd, family, ifindex })
    }

    /// Waits for the next datagram (IPv4: header included; IPv6: the VRRP
    /// message alone). Cancel-safe.
    ///
    /// # Errors
    /// On socket errors.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Datagram> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|s| recv_with_ifindex(s.get_ref(), buf)) {
                Ok(result) => return result,
                Err(_would_block) => {}
            }
        }
    }

    /// Sends what [`packet::Advert::to_wire`] made to `dst`: over IPv4 a
    /// whole datagram (IP_HDRINCL; `src` is in it), over IPv6 a message
    /// from `src` (IPV6_PKTINFO). Never blocks: a full send buffer is an
    /// error.
    ///
    /// # Errors
    /// On socket errors, and for addresses of another family than the
    /// socket's.
    pub fn send(&self, datagram: &[u8], src: IpAddr, dst: IpAddr) -> io::Result<()> {
        let sent = match (self.family, src, dst) {
            (Family::Ipv4, IpAddr::V4(_), IpAddr::V4(dst)) => {
                self.fd.get_ref().send_to(datagram, &SockAddr::from(SocketAddrV4::new(dst, 0)))?
            }
            (Family::Ipv6, IpAddr::V6(src), IpAddr::V6(dst)) => send_v6(self.fd.get_ref(), datagram, src, dst, self.ifindex)?,
            _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{src} to {dst} on an {} socket", self.family))),
        };
        if sent != datagram.len() {
            return Err(io::Error::other(format!("sent {sent} of {} bytes", datagram.len())));
        }
        Ok(())
    }
}

fn set_int(socket: &Socket, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: an int option of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// IP_MULTICAST_IF by interface index (`struct ip_mreqn`), so that a change
/// of the interface's address does not matter.
fn set_multicast_if(socket: &Socket, ifindex: u32) -> io::Result<()> {
    let mreqn = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: i32::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
    };
    // SAFETY: a struct ip_mreqn of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            (&raw const mreqn).cast(),
            size_of::<libc::ip_mreqn>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// sendmsg of `message` from `src` (an IPV6_PKTINFO control message,
/// which also names the interface) to `dst`, scoped to the interface (a
/// link-local or multicast destination needs it; others ignore it).
fn send_v6(socket: &Socket, message: &[u8], src: Ipv6Addr, dst: Ipv6Addr, ifindex: u32) -> io::Result<usize> {
    // SAFETY: zeroed sockaddr_in6 is valid; fields set below.
    let mut to: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    to.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    to.sin6_addr.s6_addr = dst.octets();
    to.sin6_scope_id = ifindex;
    let info = libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: src.octets() }, ipi6_ifindex: ifindex };
    let mut control = [0u64; 8];
    let mut iov = libc::iovec { iov_base: message.as_ptr().cast_mut().cast(), iov_len: message.len() };
    // SAFETY: zeroed msghdr is valid; fields set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut to).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) } as usize;
    // SAFETY: `control` is 64 bytes, more than one in6_pktinfo message
    // needs; the kernel reads `message` only (iov_base is not written).
    let n = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
        (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as usize;
        libc::CMSG_DATA(cmsg).cast::<libc::in6_pktinfo>().write_unaligned(info);
        libc::sendmsg(socket.as_raw_fd(), &raw const msg, libc::MSG_DONTWAIT)
    };
    // Non-negative once checked.
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// recvmsg with the control messages read: the interface (IP_PKTINFO,
/// IPV6_PKTINFO), and for IPv6 the destination and hop limit, with the
/// source from the address recvmsg fills in.
fn recv_with_ifindex(socket: &Socket, buf: &mut [u8]) -> io::Result<Datagram> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // Room for an in6_pktinfo and a hop limit message, aligned as cmsghdr
    // wants.
    let mut control = [MaybeUninit::<u64>::uninit(); 16];
    // SAFETY: zeroed sockaddr_storage is valid (family AF_UNSPEC).
    let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: zeroed msghdr is valid; fields set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut from).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 16]>();
    // SAFETY: msg points at live buffers of the lengths given.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut ifindex = None;
    let mut dst6 = None;
    let mut hop_limit = None;
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let info = libc::CMSG_DATA(cmsg).cast::<libc::in_pktinfo>().read_unaligned();
                    ifindex = u32::try_from(info.ipi_ifindex).ok();
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = libc::CMSG_DATA(cmsg).cast::<libc::in6_pktinfo>().read_unaligned();
                    ifindex = Some(info.ipi6_ifindex);
                    dst6 = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                    let hops = libc::CMSG_DATA(cmsg).cast::<libc::c_int>().read_unaligned();
                    hop_limit = u8::try_from(hops).ok();
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    let src6 = (i32::from(from.ss_family) == libc::AF_INET6).then(|| {
        // SAFETY: the kernel wrote a sockaddr_in6 when it says AF_INET6.
        let sin6 = unsafe { &*(&raw const from).cast::<libc::sockaddr_in6>() };
        Ipv6Addr::from(sin6.sin6_addr.s6_addr)
    });
    let ipv6 = match (src6, dst6) {
        (Some(src), Some(dst)) => Some(packet::Ipv6Header { src, dst, hop_limit }),
        _ => None,
    };
    // Non-negative, checked above.
    let len = usize::try_from(n).unwrap_or(0).min(buf.len());
    Ok(Datagram { len, ifindex, ipv6 })
}
