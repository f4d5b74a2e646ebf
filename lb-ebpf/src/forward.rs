//! The three LVS forwarding methods, and the NAT reply path.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::{bpf_redirect, bpf_xdp_adjust_head},
    programs::XdpContext,
};
use lb_common::{
    AF_INET6, Conn, ConnKey, FWD_DR, FWD_NAT, FWD_TUN, IPPROTO_ICMP, IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_TCP,
    IPPROTO_UDP, REAL_F_LOCAL, REAL_F_NEXTHOP, Real, counter, csum,
    net::{
        ETH_HLEN, ETH_P_IP, ETH_P_IPV6, EthHdr, Flow, IPV4_HLEN, IPV6_DADDR_OFF, IPV6_HLEN, IPV6_SADDR_OFF,
        Ipv4Hdr, Ipv6Hdr, TCP_CHECK_OFF, UDP_CHECK_OFF, ptr_at,
    },
    tcp_state::Direction,
};

use crate::{
    accounting,
    director::account,
    icmp,
    maps::{CONNS, Frame, REALS, verdict},
};

const IP_DF: u16 = 0x4000;

#[inline(always)]
pub fn eth(ctx: &XdpContext) -> Option<*mut EthHdr> {
    ptr_at(&Frame(ctx), 0)
}

/// Sends the frame out of `ifindex`: back out of the wire it came in on, or
/// redirected to another interface.
#[inline(always)]
fn send(ctx: &XdpContext, ifindex: u32) -> u32 {
    if ifindex == ctx.ingress_ifindex() as u32 {
        return XDP_TX;
    }
    // SAFETY: a plain helper call; it returns XDP_REDIRECT or XDP_ABORTED.
    unsafe { bpf_redirect(ifindex, 0) as u32 }
}

/// Forwards a client's packet to its real.
#[inline(always)]
pub fn to_real(ctx: &XdpContext, flow: &Flow, real_id: u32, real: &Real) -> u32 {
    account(real_id, u64::from(flow.ip_len), true);
    if real.flags & REAL_F_LOCAL != 0 {
        return verdict(counter::PASS_LOCAL, XDP_PASS);
    }
    match real.forward {
        FWD_NAT => nat_in(ctx, flow.ttl, real, |ttl| {
            rewrite(ctx, flow, Endpoint::Destination, &real.addr, real.port, ttl)
        }),
        FWD_DR => direct(ctx, real),
        FWD_TUN if flow.family == AF_INET6 => tunnel6(ctx, flow, real),
        FWD_TUN => tunnel(ctx, flow, real),
        _ => verdict(counter::DROP_STALE_REAL, XDP_DROP),
    }
}

/// Sends a packet that belongs to a connection without being one of its
/// segments (an ICMP error about it, a later fragment) to the connection's
/// real, by its method; for NAT, `nat_rewrite` puts the real in place of
/// the VIP.
#[inline(always)]
pub fn to_conn_real(ctx: &XdpContext, flow: &Flow, conn: &Conn, nat_rewrite: impl Fn(&Real, Ttl) -> Option<()>) -> u32 {
    let Some(real) = REALS.get(conn.real) else {
        return verdict(counter::DROP_STALE_REAL, XDP_DROP);
    };
    if real.service != conn.service {
        return verdict(counter::DROP_STALE_REAL, XDP_DROP);
    }
    if real.forward != FWD_NAT || real.flags & REAL_F_LOCAL != 0 {
        return to_real(ctx, flow, conn.real, real);
    }
    account(conn.real, u64::from(flow.ip_len), true);
    nat_in(ctx, flow.ttl, real, |ttl| nat_rewrite(real, ttl))
}

/// Direct routing (`ip_vs_dr_xmit`): only the MAC addresses change; the real
/// holds the VIP itself.
#[inline(always)]
pub fn direct(ctx: &XdpContext, real: &Real) -> u32 {
    if real.flags & REAL_F_NEXTHOP == 0 {
        return verdict(counter::DROP_NO_NEXTHOP, XDP_DROP);
    }
    let Some(eth) = eth(ctx) else {
        return verdict(counter::DROP_TRUNCATED, XDP_DROP);
    };
    // SAFETY: bounds checked by `eth`.
    unsafe {
        (*eth).dst = real.dmac;
        (*eth).src = real.smac;
    }
    send(ctx, real.ifindex)
}

/// NAT, inbound (`ip_vs_nat_xmit`): `rewrite` puts the real's address (and
/// port) in, and the frame goes to the real's next hop. `ttl` is the
/// packet's.
#[inline(always)]
pub fn nat_in(ctx: &XdpContext, ttl: u8, real: &Real, rewrite: impl Fn(Ttl) -> Option<()>) -> u32 {
    if ttl <= 1 {
        return verdict(counter::PASS_TTL, XDP_PASS);
    }
    if real.flags & REAL_F_NEXTHOP == 0 {
        // The kernel routes the rewritten packet (and decrements the TTL)
        // and resolves the neighbour; the controller will have the next hop
        // ready for the packets after.
        if rewrite(Ttl::Keep).is_none() {
            return verdict(counter::DROP_TRUNCATED, XDP_DROP);
        }
        return verdict(counter::PASS_NO_NEXTHOP, XDP_PASS);
    }
    if rewrite(Ttl::Decrement).is_none() {
        return verdict(counter::DROP_TRUNCATED, XDP_DROP);
    }
    let Some(eth) = eth(ctx) else {
        return verdict(counter::DROP_TRUNCATED, XDP_DROP);
    };
    // SAFETY: bounds checked by `eth`.
    unsafe {
        (*eth).dst = real.dmac;
        (*eth).src = real.smac;
    }
    send(ctx, real.ifindex)
}

/// NAT, a reply from a real: the source goes back to VIP:port and the frame
/// returns the way the client's packets came in.
#[inline(always)]
pub fn nat_reply(ctx: &XdpContext, flow: &Flow, reply: &Conn, now: u64) -> u32 {
    if flow.ttl <= 1 {
        return verdict(counter::PASS_TTL, XDP_PASS);
    }
    let client_key = ConnKey {
        saddr: flow.daddr,
        daddr: reply.vaddr,
        sport: flow.dport,
        dport: reply.vport,
        proto: flow.proto,
        family: flow.family,
        _pad: [0; 2],
    };
    if let Some(client) = CONNS.get_ptr_mut(&client_key) {
        // SAFETY: a live map value (see director.rs).
        let client = unsafe { &mut *client };
        client.last_seen_ns = now;
        accounting::transition(client, flow, Direction::Output);
    }
    account(reply.real, u64::from(flow.ip_len), false);
    if rewrite(ctx, flow, Endpoint::Source, &reply.vaddr, reply.vport, Ttl::Decrement).is_none() {
        return verdict(counter::DROP_TRUNCATED, XDP_DROP);
    }
    back_to_client(ctx, reply)
}

/// Sends a rewritten NAT reply out the way its client's packets came in.
#[inline(always)]
pub fn back_to_client(ctx: &XdpContext, reply: &Conn) -> u32 {
    let Some(eth) = eth(ctx) else {
        return verdict(counter::DROP_TRUNCATED, XDP_DROP);
    };
    // SAFETY: bounds checked by `eth`.
    unsafe {
        (*eth).dst = reply.peer_mac;
        (*eth).src = reply.own_mac;
    }
    send(ctx, reply.ifindex)
}

/// IP-in-IP (`ip_vs_tunnel_xmit`): a new outer IPv4 header towards the real,
/// with the inner header's TOS, TTL and DF.
#[inline(always)]
fn tunnel(ctx: &XdpContext, flow: &Flow, real: &Real) -> u32 {
    // The kernel would drop an encapsulated packet that carries our own
    // source address as a martian, so without a next hop there is no way on.
    if real.flags & REAL_F_NEXTHOP == 0 {
        return verdict(counter::DROP_NO_NEXTHOP, XDP_DROP);
    }
    if real.mtu != 0 && u32::from(flow.ip_len) + IPV4_HLEN as u32 > real.mtu {
        return too_big(ctx, flow, real.mtu - IPV4_HLEN as u32);
    }
    let Some(ip) = ptr_at::<Ipv4Hdr>(&Frame(ctx), ETH_HLEN) else {
        return verdict(counter::DROP_TRUNCATED, XDP_DROP);
    };
    // SAFETY: bounds checked by `ptr_at`.
    let inner = unsafe { *ip };
    let Some(tot_len) = u16::from_be(inner.tot_len).checked_add(IPV4_HLEN as u16) else {
        return verdict(counter::DROP_BAD_HEADER, XDP_DROP);
    };
    // SAFETY: a plain helper call on our own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(IPV4_HLEN as i32)) } != 0 {
        return verdict(counter::DROP_NO_HEADROOM, XDP_DROP);
    }
    let (Some(eth), Some(outer)) = (eth(ctx), ptr_at::<Ipv4Hdr>(&Frame(ctx), ETH_HLEN)) else {
        return verdict(counter::DROP_TRUNCATED, XDP_DROP);
    };
    let mut hdr = Ipv4Hdr {
        version_ihl: 0x45,
        tos: inner.tos,
        tot_len: tot_len.to_be(),
        id: inner.id,
        frag_off: inner.frag_off & IP_DF.to_be(),
        ttl: inner.ttl,
        proto: IPPROTO_IPIP,
        check: 0,
        saddr: real.tun_saddr[0],
        daddr: real.addr[0],
    };
    // SAFETY: Ipv4Hdr is 20 bytes of plain integers.
    hdr.check = csum::ipv4_header(&unsafe { core::mem::transmute::<Ipv4Hdr, [u16; 10]>(hdr) });
    // SAFETY: bounds checked above.
    unsafe {
        *outer = hdr;
        (*eth).dst = real.dmac;
        (*eth).src = real.smac;
        (*eth).proto = ETH_P_IP.to_be();
    }
    send(ctx, real.ifindex)
}

/// A packet that the outer header would take past the path MTU
/// (`ip_vs_tunnel_xmit`'s MTU check): with DF, its sender learns the MTU
/// left for it (`mtu`) from an ICMP "fragmentation needed"; without DF,
/// IPVS would fragment the outer packet, which XDP cannot, so it is
/// dropped and counted. Nor is an ICMP error ever answered with one.
#[inline(always)]
fn too_big(ctx: &XdpContext, flow: &Flow, mtu: u32) -> u32 {
    let Some(ip) = ptr_at::<Ipv4Hdr>(&Frame(ctx), ETH_HLEN) else {
        return verdict(counter::DROP_TRUNCATED, XDP_DROP);
    };
    // SAFETY: bounds checked by `ptr_at`.
    let df = unsafe { (*ip).frag_off } & IP_DF.to_be() != 0;
    if !df || flow.proto == IPPROTO_ICMP {
        return verdict(counter::DROP_TOO_BIG, XDP_DROP);
    }
    icmp::frag_needed(ctx, flow, mtu as u16)
}

/// IPv6-in-IPv6 (`ip_vs_tunnel_xmit_v6`): a new outer IPv6 header towards
/// the real, next header 41, with the inner header's traffic class and hop
/// limit and no flow label. IPv6 routers never fragment, so a packet the
/// outer header takes past the path MTU is always answered with ICMPv6
/// "packet too big" carrying the MTU left for it.
#[inline(always)]
fn tunnel6(ctx: &XdpContext, flow: &Flow, real: &Real) -> u32 {
    if real.flags & REAL_F_NEXTHOP == 0 {
        return verdict(counter::DROP_NO_NEXTHOP, XDP_DROP);
    }
    if real.mtu != 0 && u32::from(flow.ip_len) + IPV6_HLEN as u32 > real.mtu {
        // RFC 8200: no link goes below 1280, so neither does the answer.
        let mtu = (real.mtu.saturating_sub(IPV6_HLEN as u32)).max(IPV6_MIN_MTU);
        return icmp::packet_too_big(ctx, flow, mtu);
    }
    let Some(ip) = ptr_at::<Ipv6Hdr>(&Frame(ctx), ETH_HLEN) else {
        return verdict(counter::DROP_TRUNCATED, XDP_DROP);
    };
    // SAFETY: bounds checked by `ptr_at`.
    let inner = unsafe { *ip };
    let class = u32::from_be(inner.vtc_flow) & 0x0ff0_0000;
    // SAFETY: a plain helper call on our own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(IPV6_HLEN as i32)) } != 0 {
        return verdict(counter::DROP_NO_HEADROOM, XDP_DROP);
    }
    let (Some(eth), Some(outer)) = (eth(ctx), ptr_at::<Ipv6Hdr>(&Frame(ctx), ETH_HLEN)) else {
        return verdict(counter::DROP_TRUNCATED, XDP_DROP);
    };
    // SAFETY: bounds checked above.
    unsafe {
        *outer = Ipv6Hdr {
            vtc_flow: (6 << 28 | class).to_be(),
            payload_len: flow.ip_len.to_be(),
            nexthdr: IPPROTO_IPV6,
            hop_limit: inner.hop_limit,
            saddr: real.tun_saddr,
            daddr: real.addr,
        };
        (*eth).dst = real.dmac;
        (*eth).src = real.smac;
        (*eth).proto = ETH_P_IPV6.to_be();
    }
    send(ctx, real.ifindex)
}

/// IPv6's minimum link MTU (RFC 8200 5).
const IPV6_MIN_MTU: u32 = 1280;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Source,
    Destination,
}

impl Endpoint {
    /// Where its address sits in an IPv4 header.
    pub const fn addr_offset(self) -> usize {
        match self {
            Self::Source => 12,
            Self::Destination => 16,
        }
    }
    /// Where its address sits in an IPv6 header.
    pub const fn addr6_offset(self) -> usize {
        match self {
            Self::Source => IPV6_SADDR_OFF,
            Self::Destination => IPV6_DADDR_OFF,
        }
    }
    /// Where its port sits in a TCP or UDP header.
    pub const fn port_offset(self) -> usize {
        match self {
            Self::Source => 0,
            Self::Destination => 2,
        }
    }
    pub const fn other(self) -> Self {
        match self {
            Self::Source => Self::Destination,
            Self::Destination => Self::Source,
        }
    }
}

/// Whether the rewrite forwards the packet itself (and so decrements the TTL
/// as a router does) or leaves the forwarding, and the TTL, to the kernel.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    Decrement,
    Keep,
}

/// Rewrites one endpoint's address and port, maybe decrements the TTL (the
/// hop limit), and keeps the IP and L4 checksums right with incremental
/// updates.
#[inline(always)]
fn rewrite(ctx: &XdpContext, flow: &Flow, which: Endpoint, addr: &[u32; 4], port: u16, ttl: Ttl) -> Option<()> {
    let frame = Frame(ctx);
    let port_ptr: *mut u16 = ptr_at(&frame, flow.l4_off + which.port_offset())?;
    let old_addr = rewrite_addr(ctx, flow.family, which, addr, ttl)?;
    let v6 = flow.family == AF_INET6;
    // SAFETY: every pointer was bounds checked by `ptr_at`.
    unsafe {
        let old_port = *port_ptr;
        *port_ptr = port;
        match flow.proto {
            IPPROTO_TCP => {
                let c: *mut u16 = ptr_at(&frame, flow.l4_off + TCP_CHECK_OFF)?;
                *c = csum::replace2(addr_replaced(*c, v6, &old_addr, addr), old_port, port);
            }
            IPPROTO_UDP => {
                let c: *mut u16 = ptr_at(&frame, flow.l4_off + UDP_CHECK_OFF)?;
                // IPv4's 0 is "no checksum"; IPv6 always has one (`parse6`).
                if v6 || *c != 0 {
                    *c = csum::udp_fixup(csum::replace2(addr_replaced(*c, v6, &old_addr, addr), old_port, port));
                }
            }
            _ => {}
        }
    }
    Some(())
}

/// An L4 checksum after its pseudo-header's address changed.
#[inline(always)]
fn addr_replaced(check: u16, v6: bool, old: &[u32; 4], new: &[u32; 4]) -> u16 {
    if v6 { csum::replace16(check, old, new) } else { csum::replace4(check, old[0], new[0]) }
}

/// Rewrites one endpoint's address in the IP header of `family`, maybe
/// decrementing the TTL (hop limit). Returns the old address.
#[inline(always)]
pub fn rewrite_addr(ctx: &XdpContext, family: u8, which: Endpoint, addr: &[u32; 4], ttl: Ttl) -> Option<[u32; 4]> {
    if family == AF_INET6 {
        rewrite_ip6(ctx, which, addr, ttl)
    } else {
        rewrite_ip(ctx, which, addr[0], ttl).map(|old| [old, 0, 0, 0])
    }
}

/// [`rewrite_ip`] for IPv6: no header checksum, a hop limit.
#[inline(always)]
fn rewrite_ip6(ctx: &XdpContext, which: Endpoint, addr: &[u32; 4], ttl: Ttl) -> Option<[u32; 4]> {
    let frame = Frame(ctx);
    let ip: *mut Ipv6Hdr = ptr_at(&frame, ETH_HLEN)?;
    let addr_ptr: *mut [u32; 4] = ptr_at(&frame, ETH_HLEN + which.addr6_offset())?;
    // SAFETY: both pointers were bounds checked by `ptr_at`.
    unsafe {
        let old = *addr_ptr;
        *addr_ptr = *addr;
        if ttl == Ttl::Decrement {
            (*ip).hop_limit -= 1;
        }
        Some(old)
    }
}

/// Rewrites one endpoint's address in the IPv4 header, maybe decrements
/// the TTL, and keeps the header checksum right. Returns the old address.
#[inline(always)]
pub fn rewrite_ip(ctx: &XdpContext, which: Endpoint, addr: u32, ttl: Ttl) -> Option<u32> {
    let frame = Frame(ctx);
    let ip: *mut Ipv4Hdr = ptr_at(&frame, ETH_HLEN)?;
    let addr_ptr: *mut u32 = ptr_at(&frame, ETH_HLEN + which.addr_offset())?;
    let ttl_word: *mut u16 = ptr_at(&frame, ETH_HLEN + 8)?;
    // SAFETY: every pointer above was bounds checked by `ptr_at`.
    unsafe {
        let old_addr = *addr_ptr;
        *addr_ptr = addr;
        let mut check = csum::replace4((*ip).check, old_addr, addr);
        if ttl == Ttl::Decrement {
            let old_ttl = *ttl_word;
            (*ip).ttl -= 1;
            check = csum::replace2(check, old_ttl, *ttl_word);
        }
        (*ip).check = check;
        Some(old_addr)
    }
}
