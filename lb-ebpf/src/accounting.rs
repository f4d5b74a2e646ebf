//! IPVS's per-real connection counts (`ip_vs_bind_dest`, `set_tcp_state`):
//! every connection counts as inactive at first, and moves between active
//! and inactive as its TCP state does. The counts live in `REAL_CONNS` and
//! change only by atomic adds, here and in the controller (which subtracts
//! when it expires a connection), so concurrent CPUs lose no update.

use core::intrinsics::{AtomicOrdering, atomic_and, atomic_or, atomic_xadd};

use lb_common::{CONN_F_INACTIVE, Conn, IPPROTO_TCP, Real, net::Flow, sched, tcp_state};

use crate::maps::REAL_CONNS;

#[inline(always)]
fn add(counter: *mut u64, delta: u64) {
    // SAFETY: `counter` points into a live REAL_CONNS value; a wrapping add
    // of `u64::MAX` is a subtraction of one.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, delta) };
}

const MINUS_ONE: u64 = u64::MAX;

/// A new connection to `real` (flagged inactive): count it, and flag the
/// real overloaded once it reaches its upper threshold.
#[inline(always)]
pub fn bind(real_id: u32, real: &Real) {
    let Some(c) = REAL_CONNS.get_ptr_mut(real_id) else { return };
    // SAFETY: a live array slot.
    unsafe {
        add(&raw mut (*c).inactive, 1);
        let (active, inactive) = (narrow((*c).active), narrow((*c).inactive));
        if sched::overload_on_bind(active, inactive, real.u_threshold, (*c).overloaded != 0) {
            (*c).overloaded = 1;
        }
    }
}

/// The scheduler's 32-bit view of a 64-bit count. A plain truncation: no
/// real holds 2^32 connections, and a branch here would double the
/// verifier's paths through every scheduler loop.
#[inline(always)]
pub fn narrow(count: u64) -> u32 {
    count as u32
}

/// Undoes `bind` for a connection that could not be recorded.
#[inline(always)]
pub fn unbind(real_id: u32, conn: &Conn) {
    let Some(c) = REAL_CONNS.get_ptr_mut(real_id) else { return };
    // SAFETY: a live array slot.
    unsafe {
        if conn.flags & CONN_F_INACTIVE != 0 {
            add(&raw mut (*c).inactive, MINUS_ONE);
        } else {
            add(&raw mut (*c).active, MINUS_ONE);
        }
    }
}

/// A connection expired in the data plane (`ip_vs_unbind_dest`): uncounted,
/// and its real's OVERLOAD flag cleared once the real is below its lower
/// threshold, as the sweeper does for the connections it expires.
#[inline(always)]
pub fn expire(real_id: u32, conn: &Conn, real: &Real) {
    unbind(real_id, conn);
    let Some(c) = REAL_CONNS.get_ptr_mut(real_id) else { return };
    // SAFETY: a live array slot.
    unsafe {
        let (active, inactive) = (narrow((*c).active), narrow((*c).inactive));
        if (*c).overloaded != 0 && !sched::overload_on_unbind(active, inactive, real.u_threshold, real.l_threshold, true) {
            (*c).overloaded = 0;
        }
    }
}

/// Runs IPVS's TCP state machine on a segment and moves the connection
/// between its real's active and inactive counts when that changes.
#[inline(always)]
pub fn transition(conn: &mut Conn, flow: &Flow, dir: tcp_state::Direction) {
    if flow.proto != IPPROTO_TCP {
        return;
    }
    conn.state = tcp_state::next(conn.state, dir, flow.tcp_flags);
    let active = tcp_state::is_active(conn.state);
    if active == (conn.flags & CONN_F_INACTIVE == 0) {
        return;
    }
    // The client's and the real's segments of one NAT connection may run on
    // two CPUs at once (a FIN each way, say). Only the CPU whose atomic flip
    // of the flag changes it moves the counts, so they move once.
    let word = (&raw mut conn.vport).cast::<u64>();
    // SAFETY: `word` is the 8-aligned word of `vport`, `state`, `flags` and `ifindex`
    // (see `INACTIVE_BIT`), inside a live map value or a local.
    let before = unsafe {
        if active {
            atomic_and::<u64, u64, { AtomicOrdering::SeqCst }>(word, !INACTIVE_BIT)
        } else {
            atomic_or::<u64, u64, { AtomicOrdering::SeqCst }>(word, INACTIVE_BIT)
        }
    };
    if active != (before & INACTIVE_BIT != 0) {
        return;
    }
    let Some(c) = REAL_CONNS.get_ptr_mut(conn.real) else { return };
    // SAFETY: a live array slot.
    unsafe {
        if active {
            add(&raw mut (*c).active, 1);
            add(&raw mut (*c).inactive, MINUS_ONE);
        } else {
            add(&raw mut (*c).inactive, 1);
            add(&raw mut (*c).active, MINUS_ONE);
        }
    }
}

/// `CONN_F_INACTIVE` within the little-endian 64-bit word at `Conn::vport`
/// (`vport`: bytes 0-1, `state`: byte 2, `flags`: byte 3, `ifindex`), which BPF can
/// flip atomically where it cannot touch a single byte.
const INACTIVE_BIT: u64 = (CONN_F_INACTIVE as u64) << 24;
const _: () = {
    assert!(core::mem::offset_of!(Conn, vport) % 8 == 0);
    assert!(core::mem::offset_of!(Conn, flags) == core::mem::offset_of!(Conn, vport) + 3);
};

/// A persistence template now names `to` instead of `from` (or is new).
#[inline(always)]
pub fn template_moved(from: Option<u32>, to: u32) {
    if let Some(c) = from.and_then(|id| REAL_CONNS.get_ptr_mut(id)) {
        // SAFETY: a live array slot.
        add(unsafe { &raw mut (*c).persist }, MINUS_ONE);
    }
    if let Some(c) = REAL_CONNS.get_ptr_mut(to) {
        // SAFETY: a live array slot.
        add(unsafe { &raw mut (*c).persist }, 1);
    }
}
