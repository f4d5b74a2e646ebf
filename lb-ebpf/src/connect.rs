//! A new connection, from the scheduler's answer to the forwarded packet:
//! the persistence template, the connection's entries and counts, and the
//! first rewrite.
//!
//! It is a program of its own, `xlvs_connect`, tail-called with the answer
//! in this CPU's `PENDING` slot by the scheduler that picked the real (or by
//! the director, when a persistence template names it): the packet goes
//! through the director, its scheduler and this program once each, and the
//! schedulers' scan loops, which are what the verifier finds costly, stay
//! apart from this code.

use aya_ebpf::{
    bindings::xdp_action::XDP_DROP,
    macros::xdp,
    programs::XdpContext,
};
use core::hint::black_box;
use lb_common::{
    CONN_F_INACTIVE, CONN_F_NOOUTPUT, CONN_F_REPLY, CONN_F_TEMPLATED, Conn, ConnKey, FWD_NAT, Real, SVC_F_PERSISTENT,
    Service, Template, counter,
    net::Flow,
    sched::NO_REAL,
    tcp_state,
};

use crate::{
    accounting,
    director::{client_direction, count_for_sync},
    forward, fragment,
    maps::{CONNS, PENDING, REAL_STATS, REALS, SERVICE_REALS, TEMPLATES, verdict},
};

/// A bound on the L4 offset of a parsed frame, as a mask (the parser's own:
/// IPv6 extension headers can take it past IPv4's 74 bytes): `PENDING`
/// hands the offset over as a plain number, and the verifier needs a bound
/// before it lets the packet be read there.
const L4_OFF_MASK: usize = 0x3fff;

/// Finishes the pending connection of this CPU (`PENDING`) with its answer
/// (`SCHEDULERS[SCHED_CONNECT]`): drops the packet when no real was
/// available, else records the connection and forwards the packet to the
/// real.
#[xdp]
pub fn xlvs_connect(ctx: XdpContext) -> u32 {
    let Some(pending) = PENDING.get_ptr_mut(0) else {
        return verdict(counter::DROP_SCHED_CALL, XDP_DROP);
    };
    // SAFETY: this CPU's slot; one packet at a time runs on a CPU.
    let p = unsafe { &mut *pending };
    let Some(real_id) = real_id(&p.service, p.answer, p.answer_is_index != 0) else {
        return verdict(counter::DROP_NO_REAL, XDP_DROP);
    };
    if p.write_template != 0 {
        let template = Template { last_used_ns: p.now, real: real_id, _pad: 0 };
        if TEMPLATES.insert(&p.template_key, &template, 0).is_ok() {
            let previous = p.template_previous;
            accounting::template_moved((previous != NO_REAL).then_some(previous), real_id);
        }
    }
    let Some(real) = REALS.get(real_id) else {
        return verdict(counter::DROP_NO_REAL, XDP_DROP);
    };
    let mut flow = p.flow;
    flow.l4_off &= L4_OFF_MASK;
    record(&ctx, &flow, &p.key, &p.service, real_id, real, p.now, p.sync != 0);
    if flow.first_fragment {
        fragment::remember(&flow, &p.key, p.now);
    }
    forward::to_real(&ctx, &flow, real_id, real)
}

/// The real id of an answer: scan schedulers answer a scan index, which is
/// turned into an id here, where it is a plain value read from a map (inside
/// the scheduler, the verifier would have to track it exactly at every loop
/// exit); lblc, lblcr and templates answer an id.
#[inline(always)]
fn real_id(service: &Service, answer: u32, is_index: bool) -> Option<u32> {
    if answer == NO_REAL {
        return None;
    }
    if !is_index {
        return Some(answer);
    }
    SERVICE_REALS.get(service.id)?.ids.get(black_box(answer) as usize).copied()
}

/// Records a new connection: the client's entry, and for NAT the entry the
/// replies will be looked up by.
#[inline(always)]
fn record(
    ctx: &XdpContext,
    flow: &Flow,
    key: &ConnKey,
    service: &Service,
    real_id: u32,
    real: &Real,
    now: u64,
    sync: bool,
) {
    let mut conn = Conn {
        last_seen_ns: now,
        real: real_id,
        service: service.id,
        vaddr: flow.daddr,
        vport: flow.dport,
        flags: CONN_F_INACTIVE
            | if real.forward == FWD_NAT { 0 } else { CONN_F_NOOUTPUT }
            | if service.flags & SVC_F_PERSISTENT != 0 { CONN_F_TEMPLATED } else { 0 },
        ..Conn::default()
    };
    accounting::bind(real_id, real);
    let dir = client_direction(&conn);
    accounting::transition(&mut conn, flow, dir);
    if sync {
        count_for_sync(key, &mut conn, tcp_state::NONE);
    }
    if CONNS.insert(key, &conn, 0).is_err() {
        accounting::unbind(real_id, &conn);
        verdict(counter::CONN_INSERT_FAIL, 0);
        return;
    }
    if real.forward == FWD_NAT {
        if let Some(eth) = forward::eth(ctx) {
            let reply_key = key.nat_reply(real.addr, real.port);
            // The client's entry is in the table: the reply entry is built
            // in the same place, to keep this function's stack small (the
            // schedulers that call it have large frames of their own).
            conn.flags = CONN_F_REPLY;
            conn.ifindex = ctx.ingress_ifindex() as u32;
            // SAFETY: `forward::eth` checked the bounds.
            unsafe {
                conn.peer_mac = (*eth).src;
                conn.own_mac = (*eth).dst;
            }
            conn.state = tcp_state::NONE;
            if CONNS.insert(&reply_key, &conn, 0).is_err() {
                verdict(counter::CONN_INSERT_FAIL, 0);
            }
        }
    }
    if let Some(stats) = REAL_STATS.get_ptr_mut(real_id) {
        // SAFETY: a per-CPU slot.
        unsafe { (*stats).conns += 1 };
    }
    verdict(counter::CONN_NEW, 0);
}
