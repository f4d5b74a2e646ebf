//! The director's entry point: parse once, find the connection or schedule a
//! new one, then hand over to the forwarding stage.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::bpf_ktime_get_ns,
    macros::xdp,
    programs::XdpContext,
};
use aya_ebpf::maps::lpm_trie::Key;
use lb_common::{
    CONN_F_INACTIVE, CONN_F_NOOUTPUT, CONN_F_REPLY, Conn, ConnKey, FWD_NAT, IPPROTO_TCP, RangeData,
    Real, Service, ServiceKey, Stats, SyncEvent, counter, sync_due,
    net::{Flow, ParseError, TCP_RST, TCP_SYN, parse, tcp_flags_impossible, tcp_flags_invalid_untracked},
    range_prefix_len,
    tcp_state::{self, Direction},
};

use crate::{
    accounting, forward,
    maps::{CONNS, DIRECTOR_CTL, Frame, REAL_STATS, REALS, SERVICE_RANGES, SERVICES, SYNC_EVENTS, verdict},
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
    let flow = match parse(&Frame(ctx)) {
        Ok(flow) => flow,
        Err(ParseError::NotIp) => return verdict(counter::PASS_NOT_IP, XDP_PASS),
        Err(ParseError::NotTcpUdp) => return verdict(counter::PASS_NOT_VIP, XDP_PASS),
        Err(ParseError::Fragment) => return verdict(counter::PASS_FRAGMENT, XDP_PASS),
        Err(ParseError::Truncated) => return verdict(counter::DROP_TRUNCATED, XDP_DROP),
        Err(ParseError::BadHeader) => return verdict(counter::DROP_BAD_HEADER, XDP_DROP),
        Err(ParseError::BadChecksum) => return verdict(counter::DROP_BAD_IP_CHECKSUM, XDP_DROP),
        Err(ParseError::BadOptions) => return verdict(counter::DROP_BAD_IP_OPTIONS, XDP_DROP),
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
        // Flags no TCP sends never reach a real, nor move the state.
        if flow.proto == IPPROTO_TCP && tcp_flags_impossible(flow.tcp_flags) {
            return verdict(counter::DROP_TCP_FLAGS, XDP_DROP);
        }
        // SAFETY: a live map value; concurrent writers only race on the
        // timestamp and state bytes, which IPVS also updates locklessly.
        let conn = unsafe { &mut *conn };
        conn.last_seen_ns = now;
        if conn.flags & CONN_F_REPLY != 0 {
            return forward::nat_reply(ctx, &flow, conn, now);
        }
        let dir = client_direction(conn);
        let old_state = conn.state;
        accounting::transition(conn, &flow, dir);
        if ctl.sync != 0 {
            count_for_sync(&key, conn, old_state);
        }
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
    let Some(service) = find_service(&service_key) else {
        return verdict(counter::PASS_NOT_VIP, XDP_PASS);
    };
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
    let Some(real_id) = schedule::pick(ctx, &service, &flow, &key, now) else {
        return verdict(counter::DROP_NO_REAL, XDP_DROP);
    };
    let Some(real) = REALS.get(real_id) else {
        return verdict(counter::DROP_NO_REAL, XDP_DROP);
    };
    new_connection(ctx, &flow, &key, &service, real_id, real, now, ctl.sync != 0);
    forward::to_real(ctx, &flow, real_id, real)
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
    sync: bool,
) {
    let mut conn = Conn {
        last_seen_ns: now,
        real: real_id,
        service: service.id,
        vaddr: flow.daddr,
        vport: flow.dport,
        flags: CONN_F_INACTIVE | if real.forward == FWD_NAT { 0 } else { CONN_F_NOOUTPUT },
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

/// Connection sync, the master's half: counts a client's packet, and hands
/// the entry to the controller when IPVS would sync it (`sync_due`).
#[inline(always)]
fn count_for_sync(key: &ConnKey, conn: &mut Conn, old_state: u8) {
    conn.pkts = conn.pkts.wrapping_add(1);
    if sync_due(key.proto, old_state, conn.state, conn.pkts)
        && SYNC_EVENTS.output::<SyncEvent>(&SyncEvent { key: *key, conn: *conn }, 0).is_err()
    {
        verdict(counter::SYNC_LOST, 0);
    }
}

/// Which of IPVS's state tables a client's segment runs through.
#[inline(always)]
fn client_direction(conn: &Conn) -> Direction {
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
