//! The BPF maps that the data plane and the controller share: their names,
//! their limits and the `#[repr(C)]` layout of every key and value.
//!
//! Layout rules: fixed-width integers and byte arrays only, explicit `_pad`
//! fields, and a compile-time size check, because implicit padding in a hash
//! key silently breaks lookups. Addresses are 16 bytes for both families (an
//! IPv4 address sits in `addr[0]`, the rest zero) so IPv6 needs no new maps.
//! Fields marked "network order" hold the bytes as they are on the wire.

/// Limits shared by both sides.
pub const MAX_SERVICES: u32 = 1024;
pub const MAX_REALS: u32 = 8192;
/// The longest real list one service can have; every scheduler loop is
/// bounded by it, which is what keeps the verifier's work finite.
pub const MAX_REALS_PER_SERVICE: usize = 256;
/// Default size of the connection table (both directions of a NAT flow use
/// an entry each). `[director] conn_table_size` overrides it.
pub const DEFAULT_CONN_TABLE_SIZE: u32 = 1 << 18;

/// Map names, as the eBPF object spells them.
pub const MAP_SERVICES: &str = "SERVICES";
pub const MAP_SERVICE_REALS: &str = "SERVICE_REALS";
pub const MAP_REALS: &str = "REALS";
pub const MAP_SCHED_STATE: &str = "SCHED_STATE";
pub const MAP_CONNS: &str = "CONNS";
pub const MAP_SERVICE_STATS: &str = "SERVICE_STATS";
pub const MAP_REAL_STATS: &str = "REAL_STATS";
pub const MAP_COUNTERS: &str = "COUNTERS";
pub const MAP_DECAP_VIPS: &str = "DECAP_VIPS";
pub const MAP_SERVICE_RANGES: &str = "SERVICE_RANGES";
pub const MAP_REAL_CONNS: &str = "REAL_CONNS";
pub const MAP_BUCKETS: &str = "BUCKETS";
pub const MAP_MAGLEV: &str = "MAGLEV";
pub const MAP_LBLC: &str = "LBLC";
pub const MAP_LBLCR: &str = "LBLCR";
pub const MAP_TEMPLATES: &str = "TEMPLATES";
/// Services that may use Maglev at once (each table is 16 KiB).
pub const MAX_MAGLEV_SERVICES: u32 = 256;
/// Entries of the lblc/lblcr caches and of the persistence templates.
pub const DEFAULT_CACHE_SIZE: u32 = 1 << 16;
pub const MAP_FRAGS: &str = "FRAGS";
pub const MAP_ICMP_BUDGET: &str = "ICMP_BUDGET";
/// Datagrams whose later fragments the director can follow at once, by
/// default; `[director] frag_table_size` overrides it.
pub const DEFAULT_FRAG_TABLE_SIZE: u32 = 1 << 14;
/// How long the later fragments of a datagram follow its first: the
/// kernel's reassembly timeout (`ipfrag_time`, 30 s).
pub const FRAG_TIMEOUT_NS: u64 = 30_000_000_000;
pub const MAP_SCHEDULERS: &str = "SCHEDULERS";
pub const MAP_DIRECTOR_CTL: &str = "DIRECTOR_CTL";
pub const MAP_SYNC_EVENTS: &str = "SYNC_EVENTS";
/// Bytes of the `SYNC_EVENTS` ring buffer (a power of two pages).
pub const SYNC_EVENTS_BYTES: u32 = 1 << 20;
/// Program names.
pub const PROG_DIRECTOR: &str = "xlvs_director";
/// The scheduler programs, by scheduler id: the director tail-calls
/// `SCHEDULERS[id]` for a new connection, and the scheduler picks the real
/// and tail-calls `xlvs_connect`. Each is a program of its own so that each
/// gets the verifier's whole budget.
pub const PROG_SCHEDULERS: [(u8, &str); 11] = [
    (SCHED_RR, "xlvs_sched_rr"),
    (SCHED_WRR, "xlvs_sched_wrr"),
    (SCHED_LC, "xlvs_sched_lc"),
    (SCHED_WLC, "xlvs_sched_wlc"),
    (SCHED_LBLC, "xlvs_sched_lblc"),
    (SCHED_LBLCR, "xlvs_sched_lblcr"),
    (SCHED_DH, "xlvs_sched_dh"),
    (SCHED_SH, "xlvs_sched_sh"),
    (SCHED_SED, "xlvs_sched_sed"),
    (SCHED_NQ, "xlvs_sched_nq"),
    (SCHED_MH, "xlvs_sched_mh"),
];
/// Finishes a new connection once its real is known: records it and
/// forwards the packet. `SCHEDULERS[SCHED_CONNECT]`, tail-called by a
/// scheduler, or by the director when a persistence template names the real.
pub const PROG_CONNECT: &str = "xlvs_connect";
pub const SCHED_CONNECT: u32 = 15;
/// The program that relays ICMP errors about connections (`lb_common::icmp`):
/// `SCHEDULERS[SLOT_ICMP]`, tail-called by the director for ICMP.
pub const PROG_ICMP: &str = "xlvs_icmp";
pub const SLOT_ICMP: u32 = 14;
/// The program that sends fragments past the first after it (`FRAGS`):
/// `SCHEDULERS[SLOT_FRAGMENT]`, tail-called by the director.
pub const PROG_FRAGMENT: &str = "xlvs_fragment";
pub const SLOT_FRAGMENT: u32 = 13;
/// The director's IPv6 half (`xlvs_director6`): `SCHEDULERS[SLOT_IPV6]`,
/// tail-called by `xlvs_director` for an IPv6 frame, so that each family's
/// parser and rewrites get a verifier budget of their own and IPv4's fast
/// path carries nothing of IPv6's.
pub const PROG_DIRECTOR6: &str = "xlvs_director6";
pub const SLOT_IPV6: u32 = 12;
pub const SCHEDULERS_SLOTS: u32 = 16;
pub const PROG_DECAP: &str = "xlvs_decap";

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_IPIP: u8 = 4;
/// IPv6 in IPv6 (RFC 2473), the tunnel's next header.
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_ICMPV6: u8 = 58;

/// How a real is reached: LVS's three forwarding methods.
pub const FWD_NAT: u8 = 0;
pub const FWD_DR: u8 = 1;
pub const FWD_TUN: u8 = 2;

/// Scheduler ids (the order of ipvsadm's list, then Maglev).
pub const SCHED_RR: u8 = 0;
pub const SCHED_WRR: u8 = 1;
pub const SCHED_LC: u8 = 2;
pub const SCHED_WLC: u8 = 3;
pub const SCHED_LBLC: u8 = 4;
pub const SCHED_LBLCR: u8 = 5;
pub const SCHED_DH: u8 = 6;
pub const SCHED_SH: u8 = 7;
pub const SCHED_SED: u8 = 8;
pub const SCHED_NQ: u8 = 9;
pub const SCHED_MH: u8 = 10;

/// Key of `SERVICES`: a virtual service, VIP:port/protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// VIP, network order.
    pub addr: [u32; 4],
    /// VIP port, network order.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

/// `Service::flags`: connections from one client network stick to one real
/// (IPVS's `IP_VS_SVC_F_PERSISTENT`). The scheduler flags (`sh-port`,
/// `sh-fallback`, ...) are `sched::SVC_F_*` in the same byte.
pub const SVC_F_PERSISTENT: u8 = 0x01;

/// Value of `SERVICES` and `SERVICE_RANGES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Service {
    /// Index into `SERVICE_REALS`, `SCHED_STATE`, `BUCKETS` and `MAGLEV`.
    pub id: u32,
    /// How many entries of `SERVICE_REALS[id]` are in use.
    pub nreals: u32,
    /// `SCHED_*`.
    pub scheduler: u8,
    /// `SVC_F_PERSISTENT` | `sched::SVC_F_*`.
    pub flags: u8,
    pub _pad: [u8; 2],
    /// Persistence: how long a client network's template outlives its last
    /// connection, in seconds.
    pub persist_timeout: u32,
    /// Persistence: the client netmask, network order (IPv4 in word 0).
    pub persist_mask: [u32; 4],
    /// lblc/lblcr: how long an idle cache entry is kept, and lblcr's set
    /// expiration, in ns.
    pub lblc_expire_ns: u64,
}

/// Value of `SERVICE_REALS` (an array indexed by service id): the real ids of
/// one service in IPVS scan order, newest-added first.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceReals {
    pub ids: [u32; MAX_REALS_PER_SERVICE],
}

impl Default for ServiceReals {
    fn default() -> Self {
        Self { ids: [0; MAX_REALS_PER_SERVICE] }
    }
}

/// `Real::flags`: the controller has resolved the next hop towards the real
/// (`ifindex`, `smac`, `dmac`, `tun_saddr` are valid).
pub const REAL_F_NEXTHOP: u32 = 1;
/// `Real::flags`: the real is an address of the director itself (IPVS's
/// Local forwarding, ldirectord's `fallback=127.0.0.1:80`): its packets go to
/// the kernel unchanged, for a local server on the VIP or a wildcard address.
pub const REAL_F_LOCAL: u32 = 2;

/// Value of `REALS` (an array indexed by real id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Real {
    /// The real's address, network order.
    pub addr: [u32; 4],
    /// Tunnelling: the outer source address, the director's own address on
    /// the route towards the real. Network order.
    pub tun_saddr: [u32; 4],
    /// The real's port, network order (differs from the VIP's only in NAT).
    pub port: u16,
    pub forward: u8,
    pub family: u8,
    /// 0 means quiescent: no new connections.
    pub weight: u32,
    pub flags: u32,
    /// Egress interface towards the real.
    pub ifindex: u32,
    /// Next hop's MAC (the real's own when it is on-link).
    pub dmac: [u8; 6],
    /// The director's MAC on `ifindex`.
    pub smac: [u8; 6],
    /// The service this real belongs to.
    pub service: u32,
    /// Upper connection threshold (0 = none): at `active + inactive >=` it
    /// the real is overloaded and gets no new connections.
    pub u_threshold: u32,
    /// Lower threshold: overload clears below it (0 = below 3/4 of upper).
    pub l_threshold: u32,
    /// The path MTU towards the real (0 = unknown): what an IP-in-IP packet
    /// may not exceed.
    pub mtu: u32,
}

/// Value of `SCHED_STATE` (an array indexed by service id): rr's cursor, and
/// wrr's cursor and weights.
pub type SchedState = crate::sched::WrrState;

/// Value of `REAL_CONNS` (an array indexed by real id, mmapable): IPVS's
/// per-destination connection counts. The data plane and the controller
/// both change them with atomic adds, so no update is lost. They are 64-bit
/// because the BPF target has no 32-bit atomics.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealConns {
    /// ActiveConn.
    pub active: u64,
    /// InActConn.
    pub inactive: u64,
    /// PersistConn: persistence templates naming this real.
    pub persist: u64,
    /// 1 while the real is over its thresholds (IPVS's OVERLOAD flag).
    pub overloaded: u64,
}

/// Key data of `SERVICE_RANGES` (an LPM trie, so the full key is aya's
/// `Key<RangeData>`: a `prefix_len` then this): a virtual service that
/// covers an address range (`10.50.0.0/16:80`), xlvs's answer to fwmark
/// services. `prefix_len` counts the 32 bits of `proto`, `family` and `port`
/// plus the address prefix: see [`range_prefix_len`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RangeData {
    pub proto: u8,
    pub family: u8,
    /// Network order.
    pub port: u16,
    /// Network order, masked to the prefix.
    pub addr: [u32; 4],
}

/// The LPM `prefix_len` of a range whose address prefix is `addr_bits` long
/// (a lookup uses `range_prefix_len(128)`).
#[must_use]
pub const fn range_prefix_len(addr_bits: u32) -> u32 {
    32 + addr_bits
}

/// Value of `BUCKETS` (an array indexed by service id): dh's and sh's 256
/// buckets, each a scan index into the service's reals (`sched::NO_REAL`
/// for none), built by the controller whenever the reals change.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buckets {
    pub reals: [u32; crate::sched::DH_TAB_SIZE],
}

impl Default for Buckets {
    fn default() -> Self {
        Self { reals: [crate::sched::NO_REAL; crate::sched::DH_TAB_SIZE] }
    }
}

/// Value of `MAGLEV` (a hash keyed by service id): the lookup table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevTable {
    pub reals: [u32; crate::sched::MH_TAB_SIZE],
    pub _pad: u32,
}

impl Default for MaglevTable {
    fn default() -> Self {
        Self { reals: [crate::sched::NO_REAL; crate::sched::MH_TAB_SIZE], _pad: 0 }
    }
}

/// Key of `LBLC`, `LBLCR` and `TEMPLATES`: an address within a service (the
/// destination for lblc/lblcr, the masked client for persistence).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AddrKey {
    pub service: u32,
    pub family: u8,
    pub _pad: [u8; 3],
    /// Network order.
    pub addr: [u32; 4],
}

/// Value of `LBLC`: the real a destination address is cached to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LblcEntry {
    pub lastuse: u64,
    /// Real id.
    pub real: u32,
    pub _pad: u32,
}

/// Value of `TEMPLATES`: a persistence template (IPVS's template
/// connection): the real a client network sticks to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Template {
    /// When a connection last used it (`bpf_ktime_get_ns`).
    pub last_used_ns: u64,
    /// Real id.
    pub real: u32,
    pub _pad: u32,
}

/// Key of `FRAGS`: what the fragments of one datagram share (RFC 791).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// Network order.
    pub saddr: [u32; 4],
    /// Network order.
    pub daddr: [u32; 4],
    /// The identification, network order (32 bits, for IPv6's).
    pub id: u32,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

impl FragKey {
    /// The datagram `flow` is a fragment of.
    #[must_use]
    pub const fn of(flow: &crate::net::Flow) -> Self {
        Self {
            saddr: flow.saddr,
            daddr: flow.daddr,
            id: flow.ip_id as u32,
            proto: flow.proto,
            family: flow.family,
            _pad: [0; 2],
        }
    }
}

/// Value of `FRAGS`: the connection a datagram's first fragment went by,
/// which its later fragments, without ports, follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragEntry {
    pub conn: ConnKey,
    pub first_seen_ns: u64,
}

/// Key of `CONNS`: a packet's 5-tuple as it arrives.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Network order.
    pub saddr: [u32; 4],
    /// Network order.
    pub daddr: [u32; 4],
    /// Network order.
    pub sport: u16,
    /// Network order.
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

impl ConnKey {
    /// The tuple of the packets that travel the other way.
    #[must_use]
    pub const fn reversed(&self) -> Self {
        Self {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            family: self.family,
            _pad: [0; 2],
        }
    }

    /// The key of a NAT connection's replies: from the real at `addr` and
    /// `port` (network order) back to this client key's client.
    #[must_use]
    pub const fn nat_reply(&self, addr: [u32; 4], port: u16) -> Self {
        Self { saddr: addr, daddr: self.saddr, sport: port, dport: self.sport, ..*self }
    }
}

/// `Conn::flags`: this entry is keyed by a NAT reply (real → client).
pub const CONN_F_REPLY: u8 = 1;
/// `Conn::flags`: the director sees only the client's side (DR, TUN), so the
/// TCP state machine runs on the client's flags alone (IPVS's NOOUTPUT).
pub const CONN_F_NOOUTPUT: u8 = 2;
/// `Conn::flags`: the connection is counted in its real's `inactive`, not
/// `active` (IPVS's `IP_VS_CONN_F_INACTIVE`). Every connection starts so.
pub const CONN_F_INACTIVE: u8 = 4;
/// `Conn::flags`: made for a persistent service, under its client's
/// template (IPVS's `cp->control`): a new SYN on it never reschedules it
/// (`tcp_state::new_conn_expected`).
pub const CONN_F_TEMPLATED: u8 = 8;

/// Value of `CONNS`. A client's flow has one entry; a NAT flow also has one
/// keyed by the reply tuple, which carries what the reply path needs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conn {
    /// `bpf_ktime_get_ns` of the last packet (CLOCK_MONOTONIC).
    pub last_seen_ns: u64,
    pub real: u32,
    pub service: u32,
    /// The VIP, network order (reply entries rewrite the source back to it).
    pub vaddr: [u32; 4],
    /// The VIP port, network order.
    pub vport: u16,
    /// `tcp_state::State` as u8 (client entries only; UDP keeps NONE).
    pub state: u8,
    pub flags: u8,
    /// Reply entries: the interface the client's packets arrived on.
    pub ifindex: u32,
    /// Reply entries: the client-side next hop (source MAC of the client's
    /// packets), where replies go back to.
    pub peer_mac: [u8; 6],
    /// Reply entries: the director's MAC on `ifindex`.
    pub own_mac: [u8; 6],
    /// Client entries, while connection sync is on: the client's packets so
    /// far (IPVS's `in_pkts`), which decide when the entry is synced.
    pub pkts: u32,
}

/// Value of `SERVICE_STATS` and `REAL_STATS` (per-CPU arrays, summed by the
/// controller).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
}

/// Indexes of the `COUNTERS` per-CPU array: every XDP verdict has a reason.
pub mod counter {
    /// Not IPv4 (ARP, IPv6, VLAN...): handed to the kernel.
    pub const PASS_NOT_IP: u32 = 0;
    /// IPv4 but not TCP/UDP for a VIP:port: handed to the kernel.
    pub const PASS_NOT_VIP: u32 = 1;
    /// A fragment past the first whose first fragment did not go through
    /// the director (or went over `FRAG_TIMEOUT_NS` ago): handed to the
    /// kernel untouched.
    pub const PASS_FRAGMENT: u32 = 2;
    /// A TCP segment for a VIP with no connection that is not a SYN.
    pub const PASS_NOT_SYN: u32 = 3;
    /// NAT with TTL <= 1: the kernel sends the ICMP time exceeded.
    pub const PASS_TTL: u32 = 4;
    /// The next hop is not resolved yet and the rewritten packet is routable.
    pub const PASS_NO_NEXTHOP: u32 = 5;
    /// A header claims more bytes than the frame has.
    pub const DROP_TRUNCATED: u32 = 6;
    /// A malformed IPv4 or L4 header.
    pub const DROP_BAD_HEADER: u32 = 7;
    /// No real is available for a new connection.
    pub const DROP_NO_REAL: u32 = 8;
    /// DR with no resolved next hop: the packet cannot be delivered.
    pub const DROP_NO_NEXTHOP: u32 = 9;
    /// `bpf_xdp_adjust_head` failed (no headroom for the tunnel header).
    pub const DROP_NO_HEADROOM: u32 = 10;
    /// A connection entry points at a real that no longer exists.
    pub const DROP_STALE_REAL: u32 = 11;
    /// A new connection was scheduled. (Forwarded packets are counted per
    /// real in `REAL_STATS`, which keeps the fast path to one counter.)
    pub const CONN_NEW: u32 = 12;
    /// The connection table refused an insert.
    pub const CONN_INSERT_FAIL: u32 = 13;
    /// Decapsulated an IP-in-IP packet for a VIP (`xlvs decap`).
    pub const DECAP: u32 = 14;
    /// A tail call to or back from a scheduler program failed (a program
    /// missing from `SCHEDULERS`): the new connection's packet is dropped.
    pub const DROP_SCHED_CALL: u32 = 15;
    /// A packet for a real that is the director itself: handed to the
    /// kernel unchanged.
    pub const PASS_LOCAL: u32 = 16;
    /// This director is the backup (`DirectorCtl::standby`): everything goes
    /// to the kernel, which holds no VIP.
    pub const PASS_STANDBY: u32 = 17;
    /// A connection due for sync found the `SYNC_EVENTS` ring full.
    pub const SYNC_LOST: u32 = 18;
    /// A TCP segment for a VIP with flags no TCP sends (SYN+FIN, SYN+RST,
    /// FIN+RST, none of SYN/FIN/RST/ACK), or, opening no tracked
    /// connection, a FIN without ACK (`net::tcp_flags_impossible`,
    /// `net::tcp_flags_invalid_untracked`). Other traffic is not checked.
    pub const DROP_TCP_FLAGS: u32 = 19;
    /// An IPv4 header whose checksum is wrong (the kernel would drop it).
    pub const DROP_BAD_IP_CHECKSUM: u32 = 20;
    /// IPv4 options that are not a well-formed list (the kernel would drop
    /// them: `ip_options_compile`).
    pub const DROP_BAD_IP_OPTIONS: u32 = 21;
    /// ICMP that is not an error about a tracked connection (echo, an
    /// error the director's own traffic caused, a quote without ports):
    /// handed to the kernel.
    pub const PASS_ICMP: u32 = 22;
    /// An ICMP error about a connection relayed: to its real, or (NAT) from
    /// the real back to the client with the VIP put back in both headers.
    pub const ICMP_RELAYED: u32 = 23;
    /// An ICMP error about a connection whose ICMP checksum is wrong.
    pub const DROP_ICMP_CHECKSUM: u32 = 24;
    /// Tunnelling: a packet with DF set that the outer header would take
    /// past the path MTU, answered with ICMP "fragmentation needed".
    pub const ICMP_FRAG_NEEDED_SENT: u32 = 25;
    /// Tunnelling: a packet without DF too big once encapsulated. IPVS
    /// would fragment it; XDP cannot.
    pub const DROP_TOO_BIG: u32 = 26;
    /// A fragment past the first sent after it, by its connection.
    pub const FRAG_RELAYED: u32 = 27;
    /// Tunnelling: a DF packet too big whose fragmentation needed the
    /// ICMP rate limit held back (`icmp::ICMP_RATE_PER_SEC`): dropped, as
    /// the kernel drops it; its sender retries.
    pub const DROP_ICMP_RATELIMIT: u32 = 28;
    /// IPv6 with extension headers the data plane does not walk (more than
    /// `net::MAX_IPV6_EXT_HEADERS`, or a routing header with segments
    /// left): handed to the kernel.
    pub const PASS_IPV6_EXT: u32 = 29;
    /// Tunnelling over IPv6: a packet that the outer header would take past
    /// the path MTU, answered with ICMPv6 "packet too big".
    pub const ICMP6_TOO_BIG_SENT: u32 = 30;
    /// Traffic for a VIP from a source no host can have
    /// (`net::martian_source`): dropped, as the kernel drops martians.
    pub const DROP_MARTIAN: u32 = 31;
    /// A client's SYN on its connection in TIME_WAIT or CLOSE: the old
    /// connection expired at once and the SYN scheduled afresh (IPVS's
    /// `conn_reuse_mode` 1). Counted beside the new connection's verdict.
    pub const CONN_RESCHEDULED: u32 = 32;
    pub const COUNT: u32 = 33;

    /// Names for views and metrics, indexed by counter.
    pub const NAMES: [&str; COUNT as usize] = [
        "pass_not_ip",
        "pass_not_vip",
        "pass_fragment",
        "pass_not_syn",
        "pass_ttl_exceeded",
        "pass_no_nexthop",
        "drop_truncated",
        "drop_bad_header",
        "drop_no_real",
        "drop_no_nexthop",
        "drop_no_headroom",
        "drop_stale_real",
        "conn_new",
        "conn_insert_fail",
        "decap",
        "drop_sched_call",
        "pass_local",
        "pass_standby",
        "sync_lost",
        "drop_tcp_flags",
        "drop_bad_ip_checksum",
        "drop_bad_ip_options",
        "pass_icmp",
        "icmp_relayed",
        "drop_icmp_checksum",
        "icmp_frag_needed_sent",
        "drop_too_big",
        "frag_relayed",
        "drop_icmp_ratelimit",
        "pass_ipv6_ext",
        "icmp6_too_big_sent",
        "drop_martian",
        "conn_rescheduled",
    ];
}

/// Key of `DECAP_VIPS`: a VIP that `xlvs decap` accepts tunnelled packets for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipKey {
    /// Network order.
    pub addr: [u32; 4],
    pub family: u8,
    pub _pad: [u8; 3],
}

const _: () = {
    assert!(core::mem::size_of::<ServiceKey>() == 20);
    assert!(core::mem::size_of::<Service>() == 40);
    assert!(core::mem::size_of::<Real>() == 76);
    assert!(core::mem::size_of::<RealConns>() == 32);
    assert!(core::mem::size_of::<RangeData>() == 20);
    assert!(core::mem::size_of::<Buckets>() == 1024);
    assert!(core::mem::size_of::<MaglevTable>() == 16376);
    assert!(core::mem::size_of::<AddrKey>() == 24);
    assert!(core::mem::size_of::<LblcEntry>() == 16);
    assert!(core::mem::size_of::<Template>() == 16);
    assert!(core::mem::size_of::<ConnKey>() == 40);
    assert!(core::mem::size_of::<Conn>() == 56);
    assert!(core::mem::size_of::<FragKey>() == 40);
    assert!(core::mem::size_of::<FragEntry>() == 48);
    assert!(core::mem::size_of::<Stats>() == 40);
    assert!(core::mem::size_of::<VipKey>() == 20);
    assert!(core::mem::size_of::<SchedState>() == 16);
    assert!(core::mem::size_of::<Conn>() == 56);
    assert!(core::mem::size_of::<FragKey>() == 40);
    assert!(core::mem::size_of::<FragEntry>() == 48);
    assert!(core::mem::size_of::<SyncEvent>() == 96);
};

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), made of integers and byte arrays, with
    // every padding byte spelled out as a field.
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for Service {}
    unsafe impl aya::Pod for ServiceReals {}
    unsafe impl aya::Pod for Real {}
    unsafe impl aya::Pod for RealConns {}
    unsafe impl aya::Pod for RangeData {}
    unsafe impl aya::Pod for Buckets {}
    unsafe impl aya::Pod for MaglevTable {}
    unsafe impl aya::Pod for AddrKey {}
    unsafe impl aya::Pod for LblcEntry {}
    unsafe impl aya::Pod for Template {}
    unsafe impl aya::Pod for ConnKey {}
    unsafe impl aya::Pod for FragKey {}
    unsafe impl aya::Pod for FragEntry {}
    unsafe impl aya::Pod for crate::icmp::IcmpBudget {}
    unsafe impl aya::Pod for Conn {}
    unsafe impl aya::Pod for Stats {}
    unsafe impl aya::Pod for VipKey {}
    unsafe impl aya::Pod for DirectorCtl {}
    unsafe impl aya::Pod for SyncEvent {}
}

/// An IPv4 address as the maps hold it.
#[must_use]
pub const fn v4_addr(octets: [u8; 4]) -> [u32; 4] {
    [u32::from_ne_bytes(octets), 0, 0, 0]
}

/// An IPv6 address as the maps hold it: its 16 bytes in wire order, four
/// to a word.
#[must_use]
pub const fn v6_addr(o: [u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
        u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
        u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
        u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
    ]
}

/// Value of `DIRECTOR_CTL[0]`: the switches the controller flips while the
/// director runs. All zero (the default) is a lone director: forwarding,
/// no sync.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectorCtl {
    /// 1 on a backup director: pass every packet to the kernel.
    pub standby: u32,
    /// 1 on a master that syncs its connections: count each client
    /// entry's packets and send it to `SYNC_EVENTS` when due.
    pub sync: u32,
}

/// A record of `SYNC_EVENTS`: a client entry that is due for sync.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncEvent {
    pub key: ConnKey,
    pub conn: Conn,
}

/// IPVS's `sync_threshold`: a connection is first synced on its third packet
/// (a one-packet flow is never worth it)...
pub const SYNC_THRESHOLD: u32 = 3;
/// ...then every `sync_period` packets.
pub const SYNC_PERIOD: u32 = 50;

/// `ip_vs_sync_conn_needed()` without a refresh period: whether a client
/// entry is due for sync after its `pkts`-th packet moved it from
/// `old_state` to `state`. TCP syncs only in the states a backup needs
/// (ESTABLISHED, FIN_WAIT, CLOSE, CLOSE_WAIT, TIME_WAIT), and at once on a
/// change into one of them.
#[must_use]
#[inline(always)]
pub const fn sync_due(proto: u8, old_state: u8, state: u8, pkts: u32) -> bool {
    use crate::tcp_state::{CLOSE, CLOSE_WAIT, ESTABLISHED, FIN_WAIT, TIME_WAIT};
    if proto == IPPROTO_TCP {
        let wanted = matches!(state, ESTABLISHED | FIN_WAIT | CLOSE | CLOSE_WAIT | TIME_WAIT);
        if !wanted {
            return false;
        }
        if state != old_state {
            return true;
        }
    }
    pkts % SYNC_PERIOD == SYNC_THRESHOLD
}

#[cfg(test)]
mod sync_tests {
    use super::*;
    use crate::tcp_state::{CLOSE, ESTABLISHED, FIN_WAIT, NONE, SYN_RECV, TIME_WAIT};

    #[test]
    fn tcp_syncs_on_entering_a_wanted_state_then_by_count() {
        // SYN: SYN_RECV is not worth a sync.
        assert!(!sync_due(IPPROTO_TCP, NONE, SYN_RECV, 1));
        // The handshake's ACK: into ESTABLISHED, at once.
        assert!(sync_due(IPPROTO_TCP, SYN_RECV, ESTABLISHED, 2));
        // Then on the 3rd, 53rd, 103rd... packet.
        let due: std::vec::Vec<u32> = (3..=200).filter(|&p| sync_due(IPPROTO_TCP, ESTABLISHED, ESTABLISHED, p)).collect();
        assert_eq!(due, [3, 53, 103, 153]);
        assert!(sync_due(IPPROTO_TCP, ESTABLISHED, FIN_WAIT, 7));
        assert!(sync_due(IPPROTO_TCP, FIN_WAIT, TIME_WAIT, 8));
        assert!(sync_due(IPPROTO_TCP, TIME_WAIT, CLOSE, 9));
        assert!(!sync_due(IPPROTO_TCP, SYN_RECV, SYN_RECV, 3), "not in a state worth syncing");
    }

    #[test]
    fn udp_syncs_by_count_only() {
        let due: std::vec::Vec<u32> = (1..=60).filter(|&p| sync_due(IPPROTO_UDP, NONE, NONE, p)).collect();
        assert_eq!(due, [3, 53]);
    }
}
