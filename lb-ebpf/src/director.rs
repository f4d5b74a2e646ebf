//! The director's entry point: parse once, find the connection or schedule a
//! new one, then hand over to the forwarding stage.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::bpf_ktime_get_ns,
    macros::xdp,
    programs::XdpContext,
};
use lb_common::{
    CONN_F_NOOUTPUT, CONN_F_REPLY, Conn, ConnKey, FWD_NAT, IPPROTO_TCP, Real, SchedState, Service,
    ServiceKey, Stats, counter,
    net::{Flow, ParseError, TCP_RST, TCP_SYN, parse},
    sched::{Candidate, round_robin},
    tcp_state::{self, Direction},
};

use crate::{
    forward,
    maps::{
        CONNS, Frame, REAL_STATS, REALS, SCHED_STATE, SERVICE_REALS, SERVICES, verdict,
    },
};

#[xdp]
pub fn xlvs_director(ctx: XdpContext) -> u32 {
    run(&ctx)
}

#[inline(always)]
fn run(ctx: &XdpContext) -> u32 {
    let flow = match parse(&Frame(ctx)) {
        Ok(flow) => flow,
        Err(ParseError::NotIp) => return verdict(counter::PASS_NOT_IP, XDP_PASS),
        Err(ParseError::NotTcpUdp) => return verdict(counter::PASS_NOT_VIP, XDP_PASS),
        Err(ParseError::Fragment) => return verdict(counter::PASS_FRAGMENT, XDP_PASS),
        Err(ParseError::Truncated) => return verdict(counter::DROP_TRUNCATED, XDP_DROP),
        Err(ParseError::BadHeader) => return verdict(counter::DROP_BAD_HEADER, XDP_DROP),
    };
    let key = ConnKey {
        saddr: flow.saddr,
        daddr: flow.daddr,
        sport: flow.sport,
        dport: flow.dport,
        proto: flow.proto,
        family: flow.family,
        _pad: [0; 2],
    };
    let now = unsafe { bpf_ktime_get_ns() };

    if let Some(conn) = CONNS.get_ptr_mut(&key) {
        // SAFETY: a live map value; concurrent writers only race on the
        // timestamp and state bytes, which IPVS also updates locklessly.
        let conn = unsafe { &mut *conn };
        conn.last_seen_ns = now;
        if conn.flags & CONN_F_REPLY != 0 {
            return forward::nat_reply(ctx, &flow, conn, now);
        }
        update_state(conn, &flow);
        let Some(real) = REALS.get(conn.real) else {
            return verdict(counter::DROP_STALE_REAL, XDP_DROP);
        };
        if real.service != conn.service {
            return verdict(counter::DROP_STALE_REAL, XDP_DROP);
        }
        return forward::to_real(ctx, &flow, conn.real, real);
    }

    let service_key = ServiceKey {
        addr: flow.daddr,
        port: flow.dport,
        proto: flow.proto,
        family: flow.family,
    };
    let Some(service) = SERVICES.get_ptr(&service_key) else {
        return verdict(counter::PASS_NOT_VIP, XDP_PASS);
    };
    // SAFETY: a live map value, copied out.
    let service = unsafe { *service };
    // IPVS schedules TCP only on a SYN (`tcp_conn_schedule`); anything else
    // without a connection is the kernel's to answer.
    if flow.proto == IPPROTO_TCP && flow.tcp_flags & (TCP_SYN | TCP_RST) != TCP_SYN {
        return verdict(counter::PASS_NOT_SYN, XDP_PASS);
    }
    let Some(real_id) = schedule(&service) else {
        return verdict(counter::DROP_NO_REAL, XDP_DROP);
    };
    let Some(real) = REALS.get(real_id) else {
        return verdict(counter::DROP_NO_REAL, XDP_DROP);
    };
    new_connection(ctx, &flow, &key, &service, real_id, real, now);
    forward::to_real(ctx, &flow, real_id, real)
}

/// Picks a real for a new connection with the service's scheduler.
#[inline(always)]
fn schedule(service: &Service) -> Option<u32> {
    let reals = SERVICE_REALS.get(service.id)?;
    let state: *mut SchedState = SCHED_STATE.get_ptr_mut(service.id)?;
    // SAFETY: a live array slot. Two CPUs racing here can both read the same
    // cursor and pick the same real, exactly as IPVS's lockless read would
    // without its scheduler lock; the next pick moves on either way.
    let cursor = unsafe { (*state).cursor };
    let idx = round_robin(cursor, service.nreals, |i| {
        // black_box keeps the bounds check: LLVM can prove i < 256 and would
        // drop it, but the verifier cannot and insists on seeing one.
        let id = *reals.ids.get(core::hint::black_box(i) as usize)?;
        REALS.get(id).map(|r| Candidate { weight: r.weight })
    })?;
    // The pick goes through the map and is read back with a volatile load,
    // so that the verifier sees an unknown index instead of one constant per
    // loop exit; otherwise it walks the rest of the program once for every
    // possible pick and gives up at 256 reals.
    // SAFETY: a live array slot.
    let idx = unsafe {
        (*state).cursor = idx + 1;
        core::ptr::read_volatile(&raw const (*state).cursor).wrapping_sub(1)
    };
    reals.ids.get(core::hint::black_box(idx) as usize).copied()
}

/// Records a new connection: the client's entry, and for NAT the entry the
/// replies will be looked up by.
#[inline(always)]
fn new_connection(
    ctx: &XdpContext,
    flow: &Flow,
    key: &ConnKey,
    service: &Service,
    real_id: u32,
    real: &Real,
    now: u64,
) {
    let mut conn = Conn {
        last_seen_ns: now,
        real: real_id,
        service: service.id,
        vaddr: flow.daddr,
        vport: flow.dport,
        flags: if real.forward == FWD_NAT { 0 } else { CONN_F_NOOUTPUT },
        ..Conn::default()
    };
    update_state(&mut conn, flow);
    if CONNS.insert(key, &conn, 0).is_err() {
        verdict(counter::CONN_INSERT_FAIL, 0);
    }
    if real.forward == FWD_NAT {
        if let Some(eth) = forward::eth(ctx) {
            let reply_key = ConnKey {
                saddr: real.addr,
                daddr: flow.saddr,
                sport: real.port,
                dport: flow.sport,
                proto: flow.proto,
                family: flow.family,
                _pad: [0; 2],
            };
            let reply = Conn {
                flags: CONN_F_REPLY,
                ifindex: ctx.ingress_ifindex() as u32,
                // SAFETY: `forward::eth` checked the bounds.
                peer_mac: unsafe { (*eth).src },
                own_mac: unsafe { (*eth).dst },
                state: tcp_state::NONE,
                ..conn
            };
            if CONNS.insert(&reply_key, &reply, 0).is_err() {
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

/// Runs IPVS's TCP state machine on a client-side segment.
#[inline(always)]
fn update_state(conn: &mut Conn, flow: &Flow) {
    if flow.proto != IPPROTO_TCP {
        return;
    }
    let dir = if conn.flags & CONN_F_NOOUTPUT != 0 {
        Direction::InputOnly
    } else {
        Direction::Input
    };
    conn.state = tcp_state::next(conn.state, dir, flow.tcp_flags);
}

/// Adds one packet to a real's counters.
#[inline(always)]
pub fn account(real_id: u32, bytes: u64, inbound: bool) {
    if let Some(stats) = REAL_STATS.get_ptr_mut(real_id) {
        // SAFETY: a per-CPU slot.
        let stats: &mut Stats = unsafe { &mut *stats };
        if inbound {
            stats.inpkts += 1;
            stats.inbytes += bytes;
        } else {
            stats.outpkts += 1;
            stats.outbytes += bytes;
        }
    }
}
