//! Fragments: the first fragment of a datagram carries the ports and goes
//! by its connection like any packet; the director remembers which
//! (`remember`, in `FRAGS`), and the later fragments, which carry no ports,
//! follow it there (`xlvs_fragment`), so that the real gets the whole
//! datagram to reassemble. A later fragment whose first did not come this
//! way (or came over `FRAG_TIMEOUT_NS` ago) goes to the kernel, counted as
//! `pass_fragment`.
//!
//! `xlvs_fragment` is tail-called by the director (`SCHEDULERS[SLOT_FRAGMENT]`).

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX},
    helpers::bpf_ktime_get_coarse_ns,
    macros::xdp,
    programs::XdpContext,
};
use lb_common::{
    CONN_F_REPLY, Conn, ConnKey, FRAG_TIMEOUT_NS, FragEntry, FragKey, counter,
    net::{ETH_P_IPV6, EthHdr, Flow, ptr_at, reread_ipv4, reread_ipv6},
};

use crate::{
    director::account,
    forward::{self, Endpoint, Ttl},
    maps::{CONNS, FRAGS, Opaque, verdict},
};

/// Remembers that the datagram `flow` is the first fragment of goes by the
/// connection `key`.
#[inline(always)]
pub fn remember(flow: &Flow, key: &ConnKey, now: u64) {
    let entry = FragEntry { conn: *key, first_seen_ns: now };
    // A full table evicts its oldest datagram; its later fragments then go
    // to the kernel, counted.
    let _ = FRAGS.insert(&FragKey::of(flow), &entry, 0);
}

#[xdp]
pub fn xlvs_fragment(ctx: XdpContext) -> u32 {
    follow(&ctx)
}

#[inline(always)]
fn follow(ctx: &XdpContext) -> u32 {
    // The director has checked the IP header; this is to find it again.
    let Some(flow) = reread(ctx) else {
        return verdict(counter::PASS_FRAGMENT, XDP_PASS);
    };
    let Some(entry) = FRAGS.get_ptr(&FragKey::of(&flow)) else {
        return verdict(counter::PASS_FRAGMENT, XDP_PASS);
    };
    // SAFETY: a live map value, copied out.
    let entry = unsafe { *entry };
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if now.saturating_sub(entry.first_seen_ns) > FRAG_TIMEOUT_NS {
        return verdict(counter::PASS_FRAGMENT, XDP_PASS);
    }
    let Some(conn) = CONNS.get_ptr_mut(&entry.conn) else {
        return verdict(counter::PASS_FRAGMENT, XDP_PASS);
    };
    // SAFETY: a live map value (see director.rs).
    let conn = unsafe { &mut *conn };
    conn.last_seen_ns = now;
    let conn = *conn;
    let action = if conn.flags & CONN_F_REPLY != 0 { to_client(ctx, &flow, &conn) } else { to_real(ctx, &flow, &conn) };
    if action == XDP_TX || action == XDP_REDIRECT {
        verdict(counter::FRAG_RELAYED, action)
    } else {
        action
    }
}

/// A later fragment's flow (addresses, id, protocol), of either family.
#[inline(always)]
fn reread(ctx: &XdpContext) -> Option<Flow> {
    let frame = Opaque(ctx);
    let eth: *const EthHdr = ptr_at(&frame, 0)?;
    // SAFETY: ptr_at checked the bounds.
    if unsafe { (*eth).proto } == ETH_P_IPV6.to_be() {
        return reread_ipv6(&frame);
    }
    reread_ipv4(&frame)
}

/// A client's fragment goes to the connection's real by its method; NAT
/// changes only the address (there is no port to change, and the L4
/// checksum, in the first fragment, is already right).
#[inline(always)]
fn to_real(ctx: &XdpContext, flow: &Flow, conn: &Conn) -> u32 {
    forward::to_conn_real(ctx, flow, conn, |real, ttl| {
        forward::rewrite_addr(ctx, flow.family, Endpoint::Destination, &real.addr, ttl).map(|_| ())
    })
}

/// NAT: a real's fragment goes back to the client from the VIP.
#[inline(always)]
fn to_client(ctx: &XdpContext, flow: &Flow, reply: &Conn) -> u32 {
    if flow.ttl <= 1 {
        return verdict(counter::PASS_TTL, XDP_PASS);
    }
    account(reply.real, u64::from(flow.ip_len), false);
    if forward::rewrite_addr(ctx, flow.family, Endpoint::Source, &reply.vaddr, Ttl::Decrement).is_none() {
        return verdict(counter::DROP_TRUNCATED, XDP_DROP);
    }
    forward::back_to_client(ctx, reply)
}
