//! ICMP for connections: errors about a connection relayed as IPVS relays
//! them (`ip_vs_in_icmp`, `ip_vs_out_icmp`), and the "fragmentation
//! needed" a tunnel answers when the outer header leaves no room.
//!
//! The relay is a program of its own, `xlvs_icmp`, that the director
//! tail-calls for ICMP (`SCHEDULERS[SLOT_ICMP]`): its checksum loop stays
//! out of the director's verifier budget and off its fast path.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX},
    helpers::{bpf_ktime_get_ns, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    macros::xdp,
    programs::XdpContext,
};
use lb_common::{
    AF_INET6, CONN_F_REPLY, Conn, IPPROTO_ICMP, IPPROTO_ICMPV6, counter, csum,
    icmp::{self, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ICMP_HLEN, ICMPV6_PKT_TOOBIG, Icmp6Hdr, IcmpError, IcmpHdr},
    net::{
        ETH_HLEN, ETH_P_IP, ETH_P_IPV6, EthHdr, Flow, IPV4_HLEN, IPV6_HLEN, Ipv4Hdr, Ipv6Hdr, parse_ipv6, ptr_at,
        reread_ipv4,
    },
};

use crate::{
    director::account,
    forward::{self, Endpoint, Ttl},
    maps::{CONNS, Frame, ICMP_BUDGET, Opaque, verdict},
};

#[xdp]
pub fn xlvs_icmp(ctx: XdpContext) -> u32 {
    relay(&ctx)
}

#[inline(always)]
fn relay(ctx: &XdpContext) -> u32 {
    let frame = Opaque(ctx);
    // The director has checked the IP header; this is to find it again.
    let Some((outer, error)) = read_error(&frame) else {
        return verdict(counter::PASS_ICMP, XDP_PASS);
    };
    // An error goes to the quoted packet's sender; one that does not is
    // about no packet of ours.
    if outer.daddr != error.saddr {
        return verdict(counter::PASS_ICMP, XDP_PASS);
    }
    let Some(conn) = CONNS.get_ptr(&error.conn_key()) else {
        return verdict(counter::PASS_ICMP, XDP_PASS);
    };
    // SAFETY: a live map value. Read in place: a copy would not leave the
    // stack room this program needs.
    let conn = unsafe { &*conn };
    if !icmp::checksum_ok(&frame, &outer, &error) {
        return verdict(counter::DROP_ICMP_CHECKSUM, XDP_DROP);
    }
    let action = if conn.flags & CONN_F_REPLY != 0 {
        to_client(ctx, &outer, &error, conn)
    } else {
        to_real(ctx, &outer, &error, conn)
    };
    if action == XDP_TX || action == XDP_REDIRECT {
        verdict(counter::ICMP_RELAYED, action)
    } else {
        action
    }
}

/// The outer header of an ICMP or ICMPv6 message and the error it carries,
/// if it is an error about a TCP or UDP packet.
#[inline(always)]
fn read_error(frame: &Opaque) -> Option<(Flow, IcmpError)> {
    let eth: *const EthHdr = ptr_at(frame, 0)?;
    // SAFETY: ptr_at checked the bounds.
    if unsafe { (*eth).proto } == ETH_P_IPV6.to_be() {
        let outer = parse_ipv6(frame).ok().filter(|f| f.proto == IPPROTO_ICMPV6)?;
        let error = icmp::parse_error6(frame, &outer).ok()?;
        return Some((outer, error));
    }
    let outer = reread_ipv4(frame)?;
    let error = icmp::parse_error(frame, &outer).ok()?;
    Some((outer, error))
}

/// An error about a packet the VIP sent (a router on the way to the client
/// reporting it, say): it goes to the connection's real by the
/// connection's method. NAT also puts the real in place of the VIP in both
/// the outer and the quoted header, as it does for the connection's
/// packets.
#[inline(always)]
fn to_real(ctx: &XdpContext, outer: &Flow, error: &IcmpError, conn: &Conn) -> u32 {
    forward::to_conn_real(ctx, outer, conn, |real, ttl| {
        rewrite(ctx, outer, error, Endpoint::Destination, &real.addr, real.port, ttl)
    })
}

/// NAT: a real's error about a client's packet (a UDP port unreachable,
/// say). The client must see it from the VIP, about a packet to the VIP.
#[inline(always)]
fn to_client(ctx: &XdpContext, outer: &Flow, error: &IcmpError, reply: &Conn) -> u32 {
    if outer.ttl <= 1 {
        return verdict(counter::PASS_TTL, XDP_PASS);
    }
    account(reply.real, u64::from(outer.ip_len), false);
    if rewrite(ctx, outer, error, Endpoint::Source, &reply.vaddr, reply.vport, Ttl::Decrement).is_none() {
        return verdict(counter::DROP_TRUNCATED, XDP_DROP);
    }
    forward::back_to_client(ctx, reply)
}

/// NAT for an ICMP error (`ip_vs_nat_icmp`): the outer header's `which`
/// address becomes `addr`; the quoted packet went the other way, so its
/// other endpoint gets `addr` and `port`. The quoted IPv4 checksum and the
/// ICMP checksum follow incrementally (ICMPv6's covers the outer addresses
/// too, through its pseudo-header). The quoted L4 checksum is left as it
/// is, as IPVS leaves it: nobody checks a quote's.
#[inline(always)]
fn rewrite(
    ctx: &XdpContext,
    outer: &Flow,
    error: &IcmpError,
    which: Endpoint,
    addr: &[u32; 4],
    port: u16,
    ttl: Ttl,
) -> Option<()> {
    if error.family == AF_INET6 {
        return rewrite6(ctx, outer, error, which, addr, port, ttl);
    }
    let addr = addr[0];
    let frame = Opaque(ctx);
    let quoted = which.other();
    let icmp_check: *mut u16 = ptr_at(&frame, error.icmp_off + 2)?;
    let quote: *mut Ipv4Hdr = ptr_at(&frame, error.quote_off)?;
    let quote_addr: *mut u32 = ptr_at(&frame, error.quote_off + quoted.addr_offset())?;
    let quote_port: *mut u16 = ptr_at(&frame, error.quote_l4_off + quoted.port_offset())?;
    forward::rewrite_ip(ctx, which, addr, ttl)?;
    // SAFETY: every pointer above was bounds checked by `ptr_at`.
    unsafe {
        let old_addr = *quote_addr;
        *quote_addr = addr;
        let old_quote_check = (*quote).check;
        let quote_check = csum::replace4(old_quote_check, old_addr, addr);
        (*quote).check = quote_check;
        let old_port = *quote_port;
        *quote_port = port;
        let check = csum::replace4(*icmp_check, old_addr, addr);
        let check = csum::replace2(check, old_quote_check, quote_check);
        *icmp_check = csum::replace2(check, old_port, port);
    }
    Some(())
}

/// [`rewrite`] for ICMPv6: no quoted header checksum, and the outer
/// address is in the checksum through the pseudo-header.
#[inline(always)]
fn rewrite6(
    ctx: &XdpContext,
    outer: &Flow,
    error: &IcmpError,
    which: Endpoint,
    addr: &[u32; 4],
    port: u16,
    ttl: Ttl,
) -> Option<()> {
    let frame = Opaque(ctx);
    let quoted = which.other();
    let icmp_check: *mut u16 = ptr_at(&frame, error.icmp_off + 2)?;
    let quote_addr: *mut [u32; 4] = ptr_at(&frame, error.quote_off + quoted.addr6_offset())?;
    let quote_port: *mut u16 = ptr_at(&frame, error.quote_l4_off + quoted.port_offset())?;
    let old_outer = forward::rewrite_addr(ctx, outer.family, which, addr, ttl)?;
    // SAFETY: every pointer above was bounds checked by `ptr_at`.
    unsafe {
        let old_quoted = *quote_addr;
        *quote_addr = *addr;
        let old_port = *quote_port;
        *quote_port = port;
        let check = csum::replace16(*icmp_check, &old_outer, addr);
        let check = csum::replace16(check, &old_quoted, addr);
        *icmp_check = csum::replace2(check, old_port, port);
    }
    Some(())
}

/// The IP header and the 8 payload bytes (RFC 792) that an ICMP error
/// quotes, at most: a 60-byte header with options, plus 8.
const MAX_QUOTE: usize = 60 + 8;

/// Answers `flow`'s packet, in place, with ICMP "fragmentation needed"
/// carrying `mtu` (`icmp_send(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED)`), back
/// out the way it came. As the kernel does for a packet to one of its own
/// addresses, the answer comes from the address the packet was sent to
/// (the VIP), with TTL 64 and the kernel's TOS for ICMP errors, and within
/// the kernel's rate limit (`IcmpBudget`).
#[inline(always)]
pub fn frag_needed(ctx: &XdpContext, flow: &Flow, mtu: u16) -> u32 {
    if !within_rate_limit() {
        return verdict(counter::DROP_ICMP_RATELIMIT, XDP_DROP);
    }
    let frame = Frame(ctx);
    let (Some(eth), Some(ip)) = (ptr_at::<EthHdr>(&frame, 0), ptr_at::<Ipv4Hdr>(&frame, ETH_HLEN)) else {
        return verdict(counter::DROP_TRUNCATED, XDP_DROP);
    };
    // SAFETY: bounds checked by `ptr_at`.
    let (eth_in, tos) = unsafe { (*eth, (*ip).tos) };
    let quote_len = (flow.l4_off - ETH_HLEN + 8) & 0x7f;
    if quote_len > MAX_QUOTE {
        return verdict(counter::DROP_BAD_HEADER, XDP_DROP);
    }
    if let Err(action) = reframe(ctx, quote_len, IPV4_HLEN + ICMP_HLEN) {
        return action;
    }
    let frame = Frame(ctx);
    let (Some(eth), Some(ip), Some(icmp)) = (
        ptr_at::<EthHdr>(&frame, 0),
        ptr_at::<Ipv4Hdr>(&frame, ETH_HLEN),
        ptr_at::<IcmpHdr>(&frame, ETH_HLEN + IPV4_HLEN),
    ) else {
        return verdict(counter::DROP_TRUNCATED, XDP_DROP);
    };
    let mut hdr = Ipv4Hdr {
        version_ihl: 0x45,
        tos: (tos & 0x1e) | 0xc0,
        tot_len: ((IPV4_HLEN + ICMP_HLEN + quote_len) as u16).to_be(),
        id: 0,
        frag_off: 0,
        ttl: 64,
        proto: IPPROTO_ICMP,
        check: 0,
        saddr: flow.daddr[0],
        daddr: flow.saddr[0],
    };
    // SAFETY: Ipv4Hdr is 20 bytes of plain integers.
    hdr.check = csum::ipv4_header(&unsafe { core::mem::transmute::<Ipv4Hdr, [u16; 10]>(hdr) });
    // SAFETY: bounds checked above.
    unsafe {
        *eth = EthHdr { dst: eth_in.src, src: eth_in.dst, proto: ETH_P_IP.to_be() };
        *ip = hdr;
        *icmp = IcmpHdr { kind: ICMP_DEST_UNREACH, code: ICMP_FRAG_NEEDED, check: 0, unused: 0, mtu: mtu.to_be() };
    }
    let Some(sum) = icmp::sum::<{ ICMP_HLEN + MAX_QUOTE }>(&frame, ETH_HLEN + IPV4_HLEN, ICMP_HLEN + quote_len) else {
        return verdict(counter::DROP_TRUNCATED, XDP_DROP);
    };
    // SAFETY: bounds checked above.
    unsafe { (*icmp).check = !csum::fold(sum) };
    verdict(counter::ICMP_FRAG_NEEDED_SENT, XDP_TX)
}

/// Whether the rate limit of the errors the data plane sends lets one more
/// out now (`IcmpBudget`).
#[inline(always)]
fn within_rate_limit() -> bool {
    let Some(budget) = ICMP_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a live map value; see `IcmpBudget` on racing CPUs. A plain
    // helper call.
    unsafe { (*budget).take(bpf_ktime_get_ns()) }
}

/// Cuts the frame to its Ethernet header and the `quote_len` bytes of the
/// packet an error quotes, then makes room for `headers` bytes of new IP
/// and ICMP header between them. A failure is the verdict to return.
#[inline(always)]
fn reframe(ctx: &XdpContext, quote_len: usize, headers: usize) -> Result<(), u32> {
    let frame_len = ctx.data_end() - ctx.data();
    let cut = (ETH_HLEN + quote_len) as i32 - frame_len as i32;
    // SAFETY: plain helper calls on our own context.
    if cut < 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, cut) } != 0 {
        return Err(verdict(counter::DROP_TRUNCATED, XDP_DROP));
    }
    // SAFETY: as above.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(headers as i32)) } != 0 {
        return Err(verdict(counter::DROP_NO_HEADROOM, XDP_DROP));
    }
    Ok(())
}

/// What an ICMPv6 "packet too big" quotes here: the IPv6 header, its
/// extension headers and 8 bytes of the upper layer (enough for the sender
/// to find its socket), at most this many bytes. RFC 4443 allows up to the
/// minimum MTU; the kernel needs no more than the headers.
const MAX_QUOTE6: usize = 128;

/// [`frag_needed`] for IPv6 (`icmpv6_send(ICMPV6_PKT_TOOBIG)`): `flow`'s
/// packet, in place, becomes an ICMPv6 "packet too big" carrying `mtu`,
/// from the address it was sent to, hop limit 64, within the same rate
/// limit. The checksum covers the pseudo-header (RFC 8200 8.1).
#[inline(always)]
pub fn packet_too_big(ctx: &XdpContext, flow: &Flow, mtu: u32) -> u32 {
    if !within_rate_limit() {
        return verdict(counter::DROP_ICMP_RATELIMIT, XDP_DROP);
    }
    let frame = Frame(ctx);
    let Some(eth) = ptr_at::<EthHdr>(&frame, 0) else {
        return verdict(counter::DROP_TRUNCATED, XDP_DROP);
    };
    // SAFETY: bounds checked by `ptr_at`.
    let eth_in = unsafe { *eth };
    let quote_len = (flow.l4_off - ETH_HLEN + 8).min(MAX_QUOTE6) & 0xff;
    if let Err(action) = reframe(ctx, quote_len, IPV6_HLEN + ICMP_HLEN) {
        return action;
    }
    let frame = Frame(ctx);
    let (Some(eth), Some(ip), Some(icmp)) = (
        ptr_at::<EthHdr>(&frame, 0),
        ptr_at::<Ipv6Hdr>(&frame, ETH_HLEN),
        ptr_at::<Icmp6Hdr>(&frame, ETH_HLEN + IPV6_HLEN),
    ) else {
        return verdict(counter::DROP_TRUNCATED, XDP_DROP);
    };
    let len = (ICMP_HLEN + quote_len) as u16;
    // SAFETY: bounds checked above.
    unsafe {
        *eth = EthHdr { dst: eth_in.src, src: eth_in.dst, proto: ETH_P_IPV6.to_be() };
        *ip = Ipv6Hdr {
            vtc_flow: (6u32 << 28).to_be(),
            payload_len: len.to_be(),
            nexthdr: IPPROTO_ICMPV6,
            hop_limit: 64,
            saddr: flow.daddr,
            daddr: flow.saddr,
        };
        *icmp = Icmp6Hdr { kind: ICMPV6_PKT_TOOBIG, code: 0, check: 0, mtu: mtu.to_be() };
    }
    let Some(sum) = icmp::sum::<{ ICMP_HLEN + MAX_QUOTE6 }>(&frame, ETH_HLEN + IPV6_HLEN, usize::from(len)) else {
        return verdict(counter::DROP_TRUNCATED, XDP_DROP);
    };
    let sum = sum + icmp::pseudo_header_sum6(&flow.daddr, &flow.saddr, len, IPPROTO_ICMPV6);
    // SAFETY: bounds checked above.
    unsafe { (*icmp).check = !csum::fold(sum) };
    verdict(counter::ICMP6_TOO_BIG_SENT, XDP_TX)
}
