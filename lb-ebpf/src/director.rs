//! The director's entry points: parse once, then forward an established
//! connection's packet, or hand a new connection to its scheduler
//! (`schedule::start`). `xlvs_director` takes IPv4 and hands IPv6 to
//! `xlvs_director6`; both run the same `forward_flow`.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::xdp,
    programs::XdpContext,
};
use aya_ebpf::maps::lpm_trie::Key;
use lb_common::{
    CONN_F_NOOUTPUT, CONN_F_REPLY, CONN_F_TEMPLATED, Conn, ConnKey, DirectorCtl, IPPROTO_TCP, RangeData, Service, ServiceKey,
    Stats, SLOT_FRAGMENT, SLOT_ICMP, SLOT_IPV6, SyncEvent, counter, sync_due,
    net::{
        ETH_P_IPV6, EthHdr, Flow, ParseError, TCP_RST, TCP_SYN, martian_source, parse, parse6, ptr_at, tcp_flags_impossible,
        tcp_flags_invalid_untracked,
    },
    range_prefix_len,
    tcp_state::{Direction, new_conn_expected},
};

use crate::{
    accounting, forward, fragment,
    maps::{CONNS, DIRECTOR_CTL, Frame, REAL_STATS, REALS, SCHEDULERS, SERVICE_RANGES, SERVICES, SYNC_EVENTS, verdict},
    schedule,
};

#[xdp]
pub fn xlvs_director(ctx: XdpContext) -> u32 {
    run(&ctx)
}

#[inline(always)]
fn run(ctx: &XdpContext) -> u32 {
    let ctl = DIRECTOR_CTL.get(0).copied().unwrap_or_default();
    if ctl.standby != 0 {
        return verdict(counter::PASS_STANDBY, XDP_PASS);
    }
    match parse(&Frame(ctx)) {
        Ok(flow) => forward_flow(ctx, &flow, &ctl),
        Err(ParseError::NotIp) if is_ipv6(ctx) => {
            // SAFETY: a tail call; on success it does not return.
            let _ = unsafe { SCHEDULERS.tail_call(ctx, SLOT_IPV6) };
            verdict(counter::PASS_NOT_IP, XDP_PASS)
        }
        Err(error) => refused(ctx, error),
    }
}

/// The director for IPv6 frames, tail-called by `xlvs_director` (which has
/// checked the standby switch): the same rules over `parse6`. ICMPv6 goes
/// to `xlvs_icmp` too, which relays the errors about connections and
/// leaves the rest (neighbour discovery above all) to the kernel.
#[xdp]
pub fn xlvs_director6(ctx: XdpContext) -> u32 {
    let ctl = DIRECTOR_CTL.get(0).copied().unwrap_or_default();
    match parse6(&Frame(&ctx)) {
        Ok(flow) => forward_flow(&ctx, &flow, &ctl),
        Err(error) => refused(&ctx, error),
    }
}

#[inline(always)]
fn is_ipv6(ctx: &XdpContext) -> bool {
    // SAFETY: ptr_at checked the bounds.
    ptr_at::<EthHdr>(&Frame(ctx), 0).is_some_and(|eth| unsafe { (*eth).proto } == ETH_P_IPV6.to_be())
}

/// What becomes of a frame the parser refused (`ParseError`'s rules).
#[inline(always)]
fn refused(ctx: &XdpContext, error: ParseError) -> u32 {
    match error {
        ParseError::NotIp => verdict(counter::PASS_NOT_IP, XDP_PASS),
        ParseError::NotTcpUdp => verdict(counter::PASS_NOT_VIP, XDP_PASS),
        ParseError::Icmp => {
            // SAFETY: a tail call; on success it does not return.
            let _ = unsafe { SCHEDULERS.tail_call(ctx, SLOT_ICMP) };
            verdict(counter::PASS_ICMP, XDP_PASS)
        }
        ParseError::Fragment => {
            // SAFETY: a tail call; on success it does not return.
            let _ = unsafe { SCHEDULERS.tail_call(ctx, SLOT_FRAGMENT) };
            verdict(counter::PASS_FRAGMENT, XDP_PASS)
        }
        ParseError::Extension => verdict(counter::PASS_IPV6_EXT, XDP_PASS),
        ParseError::Truncated => verdict(counter::DROP_TRUNCATED, XDP_DROP),
        ParseError::BadHeader => verdict(counter::DROP_BAD_HEADER, XDP_DROP),
        ParseError::BadChecksum => verdict(counter::DROP_BAD_IP_CHECKSUM, XDP_DROP),
        ParseError::BadOptions => verdict(counter::DROP_BAD_IP_OPTIONS, XDP_DROP),
    }
}

/// A parsed TCP or UDP packet: its connection's, or a new connection of
/// the service it is for, or the kernel's.
#[inline(always)]
fn forward_flow(ctx: &XdpContext, flow: &Flow, ctl: &DirectorCtl) -> u32 {
    let key = ConnKey {
        saddr: flow.saddr,
        daddr: flow.daddr,
        sport: flow.sport,
        dport: flow.dport,
        proto: flow.proto,
        family: flow.family,
        _pad: [0; 2],
    };
    if let Some(conn) = CONNS.get_ptr_mut(&key) {
        // Flags no TCP sends never reach a real, nor move the state.
        if flow.proto == IPPROTO_TCP && tcp_flags_impossible(flow.tcp_flags) {
            return verdict(counter::DROP_TCP_FLAGS, XDP_DROP);
        }
        // SAFETY: a live map value; concurrent writers only race on the
        // timestamp and state bytes, which IPVS also updates locklessly.
        let conn = unsafe { &mut *conn };
        let reopened = flow.proto == IPPROTO_TCP
            && conn.flags & CONN_F_REPLY == 0
            && new_conn_expected(conn.state, flow.tcp_flags, conn.flags & CONN_F_TEMPLATED != 0);
        if !reopened {
            return forward_conn(ctx, flow, &key, conn, ctl);
        }
        // A client reusing its port after a close: a new connection.
        expire_now(&key, conn);
    }

    let service_key = ServiceKey {
        addr: flow.daddr,
        port: flow.dport,
        proto: flow.proto,
        family: flow.family,
    };
    let Some(service) = find_service(&service_key) else {
        return verdict(counter::PASS_NOT_VIP, XDP_PASS);
    };
    // A source no host can have: the kernel drops it as a martian before
    // IPVS sees it, so no connection is made for it, nor does it pass.
    if martian_source(flow.family, &flow.saddr) {
        return verdict(counter::DROP_MARTIAN, XDP_DROP);
    }
    // Flags that cannot open or belong to a connection are dropped rather
    // than handed to the kernel (which would answer a FIN scan).
    if flow.proto == IPPROTO_TCP && tcp_flags_invalid_untracked(flow.tcp_flags) {
        return verdict(counter::DROP_TCP_FLAGS, XDP_DROP);
    }
    // IPVS schedules TCP only on a SYN (`tcp_conn_schedule`); anything else
    // without a connection is the kernel's to answer.
    if flow.proto == IPPROTO_TCP && flow.tcp_flags & (TCP_SYN | TCP_RST) != TCP_SYN {
        return verdict(counter::PASS_NOT_SYN, XDP_PASS);
    }
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    schedule::start(ctx, &service, flow, &key, now, ctl.sync != 0)
}

/// A packet of a known connection: the state moves, and the packet goes to
/// the connection's real (or, for a NAT reply, back to the client).
#[inline(always)]
fn forward_conn(ctx: &XdpContext, flow: &Flow, key: &ConnKey, conn: &mut Conn, ctl: &DirectorCtl) -> u32 {
    // An established packet only marks the entry as used: the coarse
    // clock (CLOCK_MONOTONIC_COARSE, a tick's resolution, as IPVS's
    // jiffies) costs a few nanoseconds where the precise one costs tens.
    // Timeouts are seconds; what compares times to decide (lblcr's set
    // expiry, templates) runs on new connections, with the precise one.
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    conn.last_seen_ns = now;
    if flow.first_fragment {
        fragment::remember(flow, key, now);
    }
    if conn.flags & CONN_F_REPLY != 0 {
        return forward::nat_reply(ctx, flow, conn, now);
    }
    let dir = client_direction(conn);
    let old_state = conn.state;
    accounting::transition(conn, flow, dir);
    if ctl.sync != 0 {
        count_for_sync(key, conn, old_state);
    }
    let Some(real) = REALS.get(conn.real) else {
        return verdict(counter::DROP_STALE_REAL, XDP_DROP);
    };
    if real.service != conn.service {
        return verdict(counter::DROP_STALE_REAL, XDP_DROP);
    }
    forward::to_real(ctx, flow, conn.real, real)
}

/// IPVS's `ip_vs_conn_expire_now` for a connection a new SYN reopens
/// (`new_conn_expected`): the entry and its NAT reply entry go, and its
/// real's count drops, so that the SYN is scheduled as any new connection.
/// Only the remover uncounts, as in the sweeper: a racing sweep or CPU
/// leaves the counts right.
#[inline(always)]
fn expire_now(key: &ConnKey, conn: &Conn) {
    let old = *conn;
    if CONNS.remove(key).is_err() {
        return;
    }
    verdict(counter::CONN_RESCHEDULED, 0);
    let Some(real) = REALS.get(old.real).filter(|r| r.service == old.service) else {
        // Its real is gone: only the count is left to drop.
        accounting::unbind(old.real, &old);
        return;
    };
    accounting::expire(old.real, &old, real);
    if old.flags & CONN_F_NOOUTPUT == 0 {
        let _ = CONNS.remove(&key.nat_reply(real.addr, real.port));
    }
}

/// The service a packet is for: an exact VIP:port first, then the longest
/// address range that covers the destination.
#[inline(always)]
fn find_service(key: &ServiceKey) -> Option<Service> {
    if let Some(service) = SERVICES.get_ptr(key) {
        // SAFETY: a live map value, copied out.
        return Some(unsafe { *service });
    }
    let range = Key::new(
        range_prefix_len(128),
        RangeData { proto: key.proto, family: key.family, port: key.port, addr: key.addr },
    );
    SERVICE_RANGES.get(&range).copied()
}

/// Connection sync, the master's half: counts a client's packet, and hands
/// the entry to the controller when IPVS would sync it (`sync_due`).
#[inline(always)]
pub fn count_for_sync(key: &ConnKey, conn: &mut Conn, old_state: u8) {
    conn.pkts = conn.pkts.wrapping_add(1);
    if sync_due(key.proto, old_state, conn.state, conn.pkts)
        && SYNC_EVENTS.output::<SyncEvent>(&SyncEvent { key: *key, conn: *conn }, 0).is_err()
    {
        verdict(counter::SYNC_LOST, 0);
    }
}

/// Which of IPVS's state tables a client's segment runs through.
#[inline(always)]
pub fn client_direction(conn: &Conn) -> Direction {
    if conn.flags & CONN_F_NOOUTPUT != 0 { Direction::InputOnly } else { Direction::Input }
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
