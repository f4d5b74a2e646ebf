//! The maps and the small accessors every stage uses. Names and layouts come
//! from `lb_common::maps`.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    programs::XdpContext,
};
use lb_common::{
    AddrKey, Buckets, Conn, ConnKey, DEFAULT_CACHE_SIZE, DEFAULT_FRAG_TABLE_SIZE, FragEntry, FragKey, DirectorCtl, SYNC_EVENTS_BYTES, SCHEDULERS_SLOTS, DEFAULT_CONN_TABLE_SIZE, LblcEntry,
    MAX_MAGLEV_SERVICES, MAX_REALS, MAX_SERVICES, MaglevTable, RangeData, Real, RealConns,
    SchedState, Service, ServiceKey, ServiceReals, Stats, Template, VipKey, counter,
    icmp::IcmpBudget, net::{Flow, Packet}, sched::LblcrEntry,
};

#[map]
pub static SERVICES: HashMap<ServiceKey, Service> = HashMap::with_max_entries(MAX_SERVICES, 0);
/// Services that cover an address range, found by longest prefix.
#[map]
pub static SERVICE_RANGES: LpmTrie<RangeData, Service> = LpmTrie::with_max_entries(MAX_SERVICES, 0);
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
/// Active/inactive/persistent counts per real; mmapable so that the
/// controller can adjust them with atomic adds too.
#[map]
pub static REAL_CONNS: Array<RealConns> = Array::with_max_entries(MAX_REALS, BPF_F_MMAPABLE);
/// dh's and sh's bucket tables, per service.
#[map]
pub static BUCKETS: Array<Buckets> = Array::with_max_entries(MAX_SERVICES, 0);
/// Maglev lookup tables, per service.
#[map]
pub static MAGLEV: HashMap<u32, MaglevTable> = HashMap::with_max_entries(MAX_MAGLEV_SERVICES, 0);
/// lblc's destination cache.
#[map]
pub static LBLC: LruHashMap<AddrKey, LblcEntry> = LruHashMap::with_max_entries(DEFAULT_CACHE_SIZE, 0);
/// lblcr's destination sets.
#[map]
pub static LBLCR: LruHashMap<AddrKey, LblcrEntry> = LruHashMap::with_max_entries(DEFAULT_CACHE_SIZE, 0);
/// The datagrams whose first fragment went by a connection: their later
/// fragments follow it (`fragment.rs`).
#[map]
pub static FRAGS: LruHashMap<FragKey, FragEntry> = LruHashMap::with_max_entries(DEFAULT_FRAG_TABLE_SIZE, 0);
/// The rate limit of the ICMP errors the data plane sends (`icmp.rs`).
#[map]
pub static ICMP_BUDGET: Array<IcmpBudget> = Array::with_max_entries(1, 0);
/// Persistence templates: a client network's real.
#[map]
pub static TEMPLATES: LruHashMap<AddrKey, Template> = LruHashMap::with_max_entries(DEFAULT_CACHE_SIZE, 0);
/// A new connection on its way from the director to its scheduler and on
/// to `connect::xlvs_connect` (see `schedule::start`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    pub service: Service,
    pub key: ConnKey,
    pub flow: Flow,
    pub now: u64,
    /// The persistence template to write with the answer, when
    /// `write_template` is 1; `previous` is the real it named before
    /// (`sched::NO_REAL` for none).
    pub template_key: AddrKey,
    pub template_previous: u32,
    pub write_template: u8,
    /// 1 while connection sync is on (`DirectorCtl::sync`).
    pub sync: u8,
    /// 1 when `answer` is a scan index, 0 when it is a real id.
    pub answer_is_index: u8,
    pub _pad: u8,
    /// `sched::NO_REAL` for "no real available".
    pub answer: u32,
}

/// The scheduler programs by scheduler id (see `schedule::start`).
#[map]
pub static SCHEDULERS: ProgramArray = ProgramArray::with_max_entries(SCHEDULERS_SLOTS, 0);
#[map]
pub static PENDING: PerCpuArray<Pending> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
/// The controller's run-time switches (`DirectorCtl`), at index 0.
#[map]
pub static DIRECTOR_CTL: Array<DirectorCtl> = Array::with_max_entries(1, 0);
/// Client entries due for sync (`SyncEvent`s), read by the controller.
#[map]
pub static SYNC_EVENTS: RingBuf = RingBuf::with_byte_size(SYNC_EVENTS_BYTES, 0);
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

/// As [`Frame`], with an end that LLVM cannot see through: what a check
/// through it proves, LLVM cannot use to drop a later check through
/// [`Frame`] (or through another `Opaque`). The CPU would not mind, but the
/// verifier tracks each load of the packet pointers apart and refuses an
/// access whose check went to an earlier load. For the slow paths that
/// parse again what the director has parsed, then rewrite.
pub struct Opaque<'a>(pub &'a XdpContext);

impl Packet for Opaque<'_> {
    #[inline(always)]
    fn start(&self) -> usize {
        self.0.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        core::hint::black_box(self.0.data_end())
    }
}
