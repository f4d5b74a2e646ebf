//! The xlvs controller: configuration, the data plane's maps, next-hop
//! resolution, the control socket and the ipvsadm-style views. The `xlvs`
//! binary is a thin command line over this library.

pub mod addr;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod director;
pub mod edit;
pub mod effective;
pub mod health;
pub mod ldirectord;
pub mod listing;
pub mod metrics;
pub mod nexthop;
pub mod privilege;
pub mod rate;
pub mod sweep;
pub mod sync;
pub mod timeouts;
pub mod view;
pub mod vrrp;

/// The XDP programs, built from `lb-ebpf` by build.rs and embedded so that
/// the one `xlvs` file is all a director needs.
#[must_use]
pub fn ebpf_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"))
}

/// The index of a network interface of this namespace.
#[must_use]
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

/// The MAC address of a network interface of this namespace.
///
/// # Errors
/// When there is no such interface.
pub fn interface_mac(name: &str) -> std::io::Result<[u8; 6]> {
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: a plain datagram socket for the ioctl, closed by OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is ours and valid.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: SIOCGIFHWADDR fills the ifreq we pass.
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::SIOCGIFHWADDR, &mut req) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the union's hwaddr member is what SIOCGIFHWADDR sets.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    Ok(mac)
}
