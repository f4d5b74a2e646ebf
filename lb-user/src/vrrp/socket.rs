//! The raw IP socket adverts go out and come in on: protocol 112, bound to
//! the interface, a member of 224.0.0.18 there, with IP_HDRINCL so that the
//! source address (which the checksum covers) and the TTL are exactly ours.
//! Received datagrams carry their IPv4 header and, through IP_PKTINFO, the
//! interface they arrived on.

use std::{
    ffi::CString,
    io,
    mem::{MaybeUninit, size_of},
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::AsRawFd,
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::packet;

/// The interface index of `name`, if it exists (in this thread's network
/// namespace).
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

/// What the interface looks like now: whether it is up and running, and its
/// first IPv4 address (the primary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub running: bool,
    pub primary: Option<Ipv4Addr>,
}

impl Link {
    /// Usable for VRRP: up, running, with an address.
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
}

/// One datagram as received: its length in the buffer and the interface it
/// came in on.
pub struct Datagram {
    pub len: usize,
    pub ifindex: Option<u32>,
}

impl VrrpSocket {
    /// `socket(AF_INET, SOCK_RAW, 112)` bound to `interface`, joined to
    /// 224.0.0.18 there, multicast out of it with TTL 255 and no loop.
    ///
    /// # Errors
    /// When the socket cannot be made (not root, no such interface).
    pub fn open(interface: &str, ifindex: u32) -> io::Result<Self> {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(i32::from(packet::PROTOCOL))))?;
        socket.bind_device(Some(interface.as_bytes()))?;
        socket.set_header_included_v4(true)?;
        socket.join_multicast_v4_n(&packet::GROUP, &socket2::InterfaceIndexOrAddress::Index(ifindex))?;
        set_multicast_if(&socket, ifindex)?;
        socket.set_multicast_ttl_v4(u32::from(packet::TTL))?;
        socket.set_ttl_v4(u32::from(packet::TTL))?;
        socket.set_multicast_loop_v4(false)?;
        set_int(&socket, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
        socket.set_nonblocking(true)?;
        // SAFETY: the socket owns its descriptor, which stays open (and the
        // same) until the AsyncFd drops it.
        let fd = unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }.map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    /// Waits for the next datagram (IPv4 header included). Cancel-safe.
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

    /// Sends a whole IPv4 datagram (IP_HDRINCL) to `dst`. Never blocks: a
    /// full send buffer is an error.
    ///
    /// # Errors
    /// On socket errors.
    pub fn send(&self, datagram: &[u8], dst: Ipv4Addr) -> io::Result<()> {
        let addr = SockAddr::from(SocketAddrV4::new(dst, 0));
        let sent = self.fd.get_ref().send_to(datagram, &addr)?;
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

/// recvmsg with the IP_PKTINFO control message read for the interface.
fn recv_with_ifindex(socket: &Socket, buf: &mut [u8]) -> io::Result<Datagram> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // Room for one in_pktinfo control message, aligned as cmsghdr wants.
    let mut control = [MaybeUninit::<u64>::uninit(); 8];
    // SAFETY: zeroed msghdr is valid; fields set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 8]>();
    // SAFETY: msg points at live buffers of the lengths given.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut ifindex = None;
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::IPPROTO_IP && (*cmsg).cmsg_type == libc::IP_PKTINFO {
                let info = libc::CMSG_DATA(cmsg).cast::<libc::in_pktinfo>().read_unaligned();
                ifindex = u32::try_from(info.ipi_ifindex).ok();
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    // Non-negative, checked above.
    let len = usize::try_from(n).unwrap_or(0).min(buf.len());
    Ok(Datagram { len, ifindex })
}
