//! The maps and the small accessors every stage uses. Names and layouts come
//! from `lb_common::maps`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use lb_common::{
    Conn, ConnKey, DEFAULT_CONN_TABLE_SIZE, MAX_REALS, MAX_SERVICES, Real, SchedState, Service,
    ServiceKey, ServiceReals, Stats, VipKey, counter, net::Packet,
};

#[map]
pub static SERVICES: HashMap<ServiceKey, Service> = HashMap::with_max_entries(MAX_SERVICES, 0);
#[map]
pub static SERVICE_REALS: Array<ServiceReals> = Array::with_max_entries(MAX_SERVICES, 0);
#[map]
pub static REALS: Array<Real> = Array::with_max_entries(MAX_REALS, 0);
#[map]
pub static SCHED_STATE: Array<SchedState> = Array::with_max_entries(MAX_SERVICES, 0);
#[map]
pub static CONNS: LruHashMap<ConnKey, Conn> =
    LruHashMap::with_max_entries(DEFAULT_CONN_TABLE_SIZE, 0);
/// Per-real stats; a service's stats are the sum over its reals.
#[map]
pub static REAL_STATS: PerCpuArray<Stats> = PerCpuArray::with_max_entries(MAX_REALS, 0);
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
#[map]
pub static DECAP_VIPS: HashMap<VipKey, u32> = HashMap::with_max_entries(MAX_SERVICES, 0);

/// Bumps a reason counter and returns `action`, so that a stage can end with
/// `return verdict(counter::X, XDP_PASS)`.
#[inline(always)]
pub fn verdict(reason: u32, action: u32) -> u32 {
    if let Some(c) = COUNTERS.get_ptr_mut(reason) {
        // SAFETY: a per-CPU slot, written only by this CPU.
        unsafe { *c += 1 };
    }
    action
}

/// The packet behind an `XdpContext`, for `lb_common::net`.
pub struct Frame<'a>(pub &'a XdpContext);

impl Packet for Frame<'_> {
    #[inline(always)]
    fn start(&self) -> usize {
        self.0.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.0.data_end()
    }
}
