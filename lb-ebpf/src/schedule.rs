//! Picking a real for a new connection: persistence first, then the
//! service's scheduler. The scheduling logic itself is `lb_common::sched`,
//! the very code the host tests check; this module only feeds it the maps.

use core::hint::black_box;

use aya_ebpf::{bindings::xdp_action::XDP_DROP, macros::xdp, programs::XdpContext};
use lb_common::{
    AddrKey, ConnKey, LblcEntry, SCHED_CONNECT, SVC_F_PERSISTENT, Service, ServiceReals, counter,
    net::Flow,
    sched::{
        Dest, LblcrEntry, NO_REAL, Probe, SVC_F_MH_PORT, dh_schedule, lblc_schedule_with,
        lblc_overloaded, lblcr_schedule_with, lc_schedule, mh_fallback, mh_first, mh_probe, nq_schedule, rr_schedule, sed_schedule, sh_schedule, wlc_schedule,
        wrr_schedule,
    },
};

use crate::{
    accounting,
    maps::{
        BUCKETS, LBLC, LBLCR, MAGLEV, PENDING, Pending, REAL_CONNS, REALS, SCHED_STATE, SCHEDULERS,
        SERVICE_REALS, TEMPLATES, verdict,
    },
};

/// Hands a new connection of `service` to its scheduler: records it in
/// this CPU's `PENDING` slot and tail-calls the service's scheduler
/// program, which picks the real and tail-calls `connect::xlvs_connect`
/// to finish the connection. Each scheduler is a program of its own so
/// that each gets the verifier's whole budget: with 256 reals, the scan
/// loops of all of them together would exceed what one program may cost.
///
/// Persistence comes first (`ip_vs_sched_persist`): a client network's
/// connections stick to the real its template names while that real is in
/// the service with a weight, with no scheduler involved (`xlvs_connect`
/// finishes them); otherwise the scheduler picks and the template is
/// (re)written with its pick.
#[inline(always)]
pub fn start(ctx: &XdpContext, service: &Service, flow: &Flow, key: &ConnKey, now: u64, sync: bool) -> u32 {
    let Some(pending) = PENDING.get_ptr_mut(0) else {
        return verdict(counter::DROP_SCHED_CALL, XDP_DROP);
    };
    // SAFETY: this CPU's own slot; one packet at a time runs on a CPU.
    let p = unsafe { &mut *pending };
    *p = Pending {
        service: *service,
        key: *key,
        flow: *flow,
        now,
        template_key: AddrKey::default(),
        template_previous: NO_REAL,
        write_template: 0,
        sync: u8::from(sync),
        answer_is_index: 0,
        _pad: 0,
        answer: NO_REAL,
    };
    if service.flags & SVC_F_PERSISTENT != 0 {
        let mut client = flow.saddr;
        for (word, mask) in client.iter_mut().zip(service.persist_mask) {
            *word &= mask;
        }
        let template_key = AddrKey { service: service.id, family: flow.family, _pad: [0; 3], addr: client };
        if let Some(template) = TEMPLATES.get_ptr_mut(&template_key) {
            // SAFETY: a live map value.
            let template = unsafe { &mut *template };
            if REALS.get(template.real).is_some_and(|r| r.service == service.id && r.weight > 0) {
                template.last_used_ns = now;
                p.answer = template.real;
                // SAFETY: a tail call; on success it does not return.
                let _ = unsafe { SCHEDULERS.tail_call(ctx, SCHED_CONNECT) };
                return verdict(counter::DROP_SCHED_CALL, XDP_DROP);
            }
            p.template_previous = template.real;
        }
        p.template_key = template_key;
        p.write_template = 1;
    }
    // SAFETY: a tail call; on success it does not return.
    let _ = unsafe { SCHEDULERS.tail_call(ctx, u32::from(service.scheduler)) };
    verdict(counter::DROP_SCHED_CALL, XDP_DROP)
}

/// A scheduler program's frame: run `pick` over the pending connection's
/// service and hand its answer to `xlvs_connect`.
#[inline(always)]
fn decide(ctx: &XdpContext, is_index: bool, pick: impl FnOnce(&Pending, &ServiceReals) -> Option<u32>) -> u32 {
    let Some(pending) = PENDING.get_ptr_mut(0) else { return verdict(counter::DROP_SCHED_CALL, XDP_DROP) };
    // SAFETY: this CPU's slot, written by the director just before the jump.
    let p = unsafe { &mut *pending };
    let answer = SERVICE_REALS.get(p.service.id).and_then(|reals| pick(p, reals)).unwrap_or(NO_REAL);
    p.answer = answer;
    p.answer_is_index = u8::from(is_index);
    // SAFETY: a tail call; on success it does not return.
    let _ = unsafe { SCHEDULERS.tail_call(ctx, SCHED_CONNECT) };
    verdict(counter::DROP_SCHED_CALL, XDP_DROP)
}

/// Declares one scheduler program that answers a scan index.
macro_rules! scan_scheduler {
    ($name:ident, |$p:ident, $reals:ident| $pick:expr) => {
        #[xdp]
        pub fn $name(ctx: XdpContext) -> u32 {
            decide(&ctx, true, |$p, $reals| $pick)
        }
    };
}

/// The list length the scan schedulers are given: always the maximum, with
/// `dest_in` answering `None` past the service's real end. Comparing a loop
/// index with the real length would narrow that length differently at
/// every exit, and the verifier would walk what follows once per exit.
const SCAN: u32 = lb_common::MAX_REALS_PER_SERVICE as u32;

/// The real at scan index `i` of the pending service, or `None` past its
/// end. The length is loaded afresh (volatile) each time for the reason
/// given at `SCAN`.
#[inline(always)]
fn dest_in(p: &Pending, reals: &ServiceReals, i: u32) -> Option<Dest> {
    // SAFETY: `p` points into this CPU's PENDING slot.
    let nreals = unsafe { core::ptr::read_volatile(&raw const p.service.nreals) };
    if i >= nreals {
        return None;
    }
    dest_at(reals, i)
}

scan_scheduler!(xlvs_sched_rr, |p, reals| {
    let state = SCHED_STATE.get_ptr_mut(p.service.id)?;
    // SAFETY: a live array slot. CPUs racing here may pick the same real
    // twice, as IPVS would without its scheduler lock.
    let idx = rr_schedule(unsafe { (*state).cursor }, p.service.nreals, |i| dest_at(reals, i));
    if let Some(idx) = idx {
        unsafe { (*state).cursor = idx + 1 };
    }
    idx
});
scan_scheduler!(xlvs_sched_wrr, |p, reals| {
    let state = SCHED_STATE.get_ptr_mut(p.service.id)?;
    // SAFETY: as for rr.
    wrr_schedule(unsafe { &mut *state }, SCAN, |i| dest_in(p, reals, i))
});
scan_scheduler!(xlvs_sched_lc, |p, reals| lc_schedule(SCAN, |i| dest_in(p, reals, i)));
scan_scheduler!(xlvs_sched_wlc, |p, reals| wlc_schedule(SCAN, |i| dest_in(p, reals, i)));
scan_scheduler!(xlvs_sched_sed, |p, reals| sed_schedule(SCAN, |i| dest_in(p, reals, i)));
scan_scheduler!(xlvs_sched_nq, |p, reals| nq_schedule(SCAN, |i| dest_in(p, reals, i)));
scan_scheduler!(xlvs_sched_dh, |p, reals| {
    let buckets = BUCKETS.get(p.service.id)?;
    dh_schedule(&p.flow.daddr, p.flow.family, |b| buckets.reals.get(black_box(b) as usize).copied(), |i| {
        dest_at(reals, i)
    })
});
scan_scheduler!(xlvs_sched_sh, |p, reals| {
    let buckets = BUCKETS.get(p.service.id)?;
    sh_schedule(
        &p.flow.saddr,
        p.flow.family,
        p.flow.sport,
        p.service.flags,
        |b| buckets.reals.get(black_box(b) as usize).copied(),
        |i| dest_at(reals, i),
    )
});
scan_scheduler!(xlvs_sched_mh, |p, reals| {
    // SAFETY: a live map value, read only.
    let table = unsafe { MAGLEV.get(&p.service.id) }?;
    let first = mh_first(
        &p.flow.saddr,
        p.flow.family,
        mh_port(p),
        &mut |s| table.reals.get(black_box(s) as usize).copied(),
        &mut |i| dest_at(reals, i),
    )?;
    mh_fallback(first, p.service.flags, |offset, ihash| match xlvs_mh_probe(offset, ihash) {
        PROBE_STOP => Probe::Stop,
        PROBE_NEXT => Probe::Next,
        idx => Probe::Found(idx),
    })
});

const PROBE_STOP: u32 = NO_REAL;
const PROBE_NEXT: u32 = NO_REAL - 1;

fn mh_port(p: &Pending) -> u16 {
    if p.service.flags & SVC_F_MH_PORT != 0 { p.flow.sport } else { 0 }
}

/// One `mh-fallback` probe, a global function so that the verifier checks
/// the hashing once rather than for each of up to 4093 probes.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn xlvs_mh_probe(offset: u32, ihash: u32) -> u32 {
    let Some(pending) = PENDING.get_ptr(0) else { return PROBE_STOP };
    // SAFETY: this CPU's slot, written by the director.
    let p = unsafe { &*pending };
    // SAFETY: a live map value, read only.
    let (Some(reals), Some(table)) = (SERVICE_REALS.get(p.service.id), unsafe { MAGLEV.get(&p.service.id) }) else {
        return PROBE_STOP;
    };
    let probe = mh_probe(
        &p.flow.saddr,
        p.flow.family,
        mh_port(p),
        ihash,
        offset,
        &mut |s| table.reals.get(black_box(s) as usize).copied(),
        &mut |i| dest_at(reals, i),
    );
    match probe {
        Probe::Found(idx) => idx,
        Probe::Next => PROBE_NEXT,
        Probe::Stop => PROBE_STOP,
    }
}

/// lblc's overload rule for a real with `active` connections and `weight`
/// (does some real of the pending service have `active * 2 < weight`?), a
/// global function so that the verifier checks its scan once rather than
/// once for every path into it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn xlvs_lblc_overloaded(active: u32, weight: u32) -> u32 {
    let Some(pending) = PENDING.get_ptr(0) else { return 0 };
    // SAFETY: this CPU's slot, written by the director.
    let p = unsafe { &*pending };
    let Some(reals) = SERVICE_REALS.get(p.service.id) else { return 0 };
    let dest = Dest { active, weight, ..Dest::default() };
    u32::from(lblc_overloaded(&dest, SCAN, &mut |i| dest_in(p, reals, i)))
}

/// wlc over all the pending service's reals, as a scan index: a global
/// function, so that lblc and lblcr, which may need it on several paths,
/// have it checked once.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn xlvs_wlc_index() -> u32 {
    let Some(pending) = PENDING.get_ptr(0) else { return NO_REAL };
    // SAFETY: this CPU's slot, written by the director.
    let p = unsafe { &*pending };
    let Some(reals) = SERVICE_REALS.get(p.service.id) else { return NO_REAL };
    wlc_schedule(SCAN, |i| dest_in(p, reals, i)).unwrap_or(NO_REAL)
}

/// [`xlvs_wlc_index`]'s pick as the real it is.
#[inline(always)]
fn least(reals: &ServiceReals) -> Option<Dest> {
    let id = *reals.ids.get(black_box(xlvs_wlc_index()) as usize)?;
    dest(id)
}

/// lblc and lblcr answer a real id (their caches name reals).
#[xdp]
pub fn xlvs_sched_lblc(ctx: XdpContext) -> u32 {
    decide(&ctx, false, |p, reals| lblc(&p.service, reals, p))
}

#[xdp]
pub fn xlvs_sched_lblcr(ctx: XdpContext) -> u32 {
    decide(&ctx, false, |p, reals| lblcr(&p.service, reals, p))
}

/// lblc: the destination's cached real, or wlc's pick, which is cached.
#[inline(always)]
fn lblc(service: &Service, reals: &ServiceReals, p: &Pending) -> Option<u32> {
    let now = p.now;
    let key = AddrKey { service: service.id, family: p.flow.family, _pad: [0; 3], addr: p.flow.daddr };
    let entry = LBLC.get_ptr_mut(&key);
    // SAFETY: a live map value.
    let cached = entry.and_then(|e| member(service, unsafe { (*e).real }));
    let pick = lblc_schedule_with(
        cached,
        |i| dest_in(p, reals, i),
        |d, _| xlvs_lblc_overloaded(d.active, d.weight) != 0,
        |_| least(reals),
    )?;
    match entry {
        // SAFETY: as above.
        Some(e) => unsafe {
            (*e).lastuse = now;
            (*e).real = pick.id;
        },
        None => {
            let _ = LBLC.insert(&key, &LblcEntry { lastuse: now, real: pick.id, _pad: 0 }, 0);
        }
    }
    Some(pick.id)
}

/// lblcr: wlc within the destination's set of reals, growing and shrinking
/// the set as `ip_vs_lblcr.c` does.
#[inline(always)]
fn lblcr(service: &Service, reals: &ServiceReals, p: &Pending) -> Option<u32> {
    let now = p.now;
    let key = AddrKey { service: service.id, family: p.flow.family, _pad: [0; 3], addr: p.flow.daddr };
    // SAFETY: a live map value, copied out.
    let mut entry: LblcrEntry = LBLCR.get_ptr(&key).map_or_else(LblcrEntry::default, |e| unsafe { *e });
    let pick = lblcr_schedule_with(
        &mut entry,
        now,
        service.lblc_expire_ns,
        |id| member(service, id),
        |i| dest_in(p, reals, i),
        |d, _| xlvs_lblc_overloaded(d.active, d.weight) != 0,
        |_| least(reals),
    );
    // The kernel edits the set in place, so what the call changed (a shed
    // member, lastuse, lastmod) stands even when no real was available.
    if entry.len > 0 {
        let _ = LBLCR.insert(&key, &entry, 0);
    }
    pick.map(|d| d.id)
}

/// The real at scan index `i` as the schedulers see it.
#[inline(always)]
fn dest_at(reals: &ServiceReals, i: u32) -> Option<Dest> {
    // black_box keeps the bounds check: LLVM can prove i < 256 and would
    // drop it, but the verifier cannot and insists on seeing one.
    let id = *reals.ids.get(black_box(i) as usize)?;
    dest(id)
}

/// A real by id, if it still belongs to `service` (lblc/lblcr caches and
/// templates may name a real that has since been removed).
#[inline(always)]
fn member(service: &Service, id: u32) -> Option<Dest> {
    if REALS.get(id)?.service != service.id {
        return None;
    }
    dest(id)
}

#[inline(always)]
fn dest(id: u32) -> Option<Dest> {
    let real = REALS.get(id)?;
    let conns = REAL_CONNS.get(id)?;
    Some(Dest {
        id,
        weight: real.weight,
        active: accounting::narrow(conns.active),
        inactive: accounting::narrow(conns.inactive),
        overloaded: conns.overloaded != 0,
    })
}


