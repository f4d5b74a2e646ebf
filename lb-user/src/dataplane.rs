//! The loaded XDP programs and their maps. This is the only place that
//! writes the maps: the controller hands it a validated config and the
//! resolved next hops, and reads counters and connections back from it.

use std::{collections::HashMap as StdHashMap, net::IpAddr};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, RingBuf},
    programs::{ProgramError, Xdp, XdpMode},
};
use lb_common::{
    AddrKey, Buckets, Conn, ConnKey, DEFAULT_CACHE_SIZE, DEFAULT_CONN_TABLE_SIZE, DEFAULT_FRAG_TABLE_SIZE, LblcEntry,
    MAP_BUCKETS, MAP_CONNS, MAP_COUNTERS, MAP_DECAP_VIPS, MAP_FRAGS, MAP_LBLC, MAP_LBLCR, MAP_MAGLEV, MAP_REAL_CONNS, MAP_REAL_STATS, MAP_REALS,
    MAP_SCHED_STATE, MAP_SERVICE_RANGES, MAP_SERVICE_REALS, MAP_SERVICES, MAP_TEMPLATES,
    FWD_TUN, MaglevTable, PROG_DECAP, RangeData, PROG_DIRECTOR, REAL_F_LOCAL, REAL_F_NEXTHOP, Real, RealConns, SchedState, Service,
    ServiceKey, ServiceReals, Stats, Template, VipKey, counter, sched::LblcrEntry,
    DirectorCtl, MAP_DIRECTOR_CTL, MAP_SYNC_EVENTS,
};

use crate::{addr, config, nexthop::NextHop};

pub mod apply;
pub mod conns;
pub mod programs;
pub mod tables;
pub mod xdp_link;
pub mod pin;

pub use apply::{Applied, RealKey, ServiceKey as ServiceAddr};

pub use conns::SharedCounters;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading the eBPF object")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}")]
    Program { name: &'static str, source: ProgramError },
    #[error("attaching XDP to interface '{interface}'")]
    Attach { interface: String, source: ProgramError },
    #[error("map {name}")]
    Map { name: &'static str, source: MapError },
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    #[error("map {name} is not an array")]
    NotArray { name: &'static str },
    #[error("map {name}")]
    Counters { name: &'static str, source: conns::Error },
    #[error("{wanted} new reals but only {free} free real ids ({retired} removed reals still hold connections)")]
    NoFreeIds { wanted: usize, free: usize, retired: usize },
    #[error("counting the CPUs")]
    Cpus(#[source] std::io::Error),
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> Error {
    move |source| Error::Map { name, source }
}

/// Where one configured service lives in the maps.
#[derive(Clone, Debug)]
pub struct Installed {
    pub service: config::Service,
    pub id: u32,
    /// Real ids, in config order.
    pub real_ids: Vec<u32>,
}

pub struct Dataplane {
    ebpf: Ebpf,
    /// The tail-call table, held to keep it filled (see
    /// `programs::load_director`), and pinned while attached (`pin`).
    schedulers: Map,
    pinned: Option<std::path::PathBuf>,
    services: HashMap<MapData, ServiceKey, Service>,
    service_ranges: LpmTrie<MapData, RangeData, Service>,
    service_reals: Array<MapData, ServiceReals>,
    reals: Array<MapData, Real>,
    sched_state: Array<MapData, SchedState>,
    buckets: Array<MapData, Buckets>,
    maglev: HashMap<MapData, u32, MaglevTable>,
    lblc: HashMap<MapData, AddrKey, LblcEntry>,
    lblcr: HashMap<MapData, AddrKey, LblcrEntry>,
    templates: HashMap<MapData, AddrKey, Template>,
    conns: HashMap<MapData, ConnKey, Conn>,
    real_conns: SharedCounters,
    real_stats: PerCpuArray<MapData, Stats>,
    counters: PerCpuArray<MapData, u64>,
    ctl: Array<MapData, DirectorCtl>,
    /// Taken by the sync sender (`take_sync_events`).
    sync_events: Option<RingBuf<MapData>>,
    conn_table_size: u32,
    /// The services in the maps (see `apply`).
    installed: Vec<Installed>,
    ids: apply::Ids,
    /// mh's last non-zero weight of each real id (`mh_last_weight`).
    mh_weights: StdHashMap<u32, u32>,
    /// The interfaces the director is attached to (see `xdp_link`).
    attached: Vec<u32>,
}

impl Drop for Dataplane {
    /// A clean stop (or a failed start) detaches; only a process that dies
    /// without dropping leaves the program forwarding.
    fn drop(&mut self) {
        for ifindex in self.attached.drain(..) {
            if let Err(e) = xdp_link::detach(ifindex) {
                tracing::warn!(ifindex, error = %e, "cannot detach XDP");
            }
        }
        if let Some(path) = self.pinned.take() {
            pin::remove(&path);
        }
    }
}

fn take<T: TryFrom<aya::maps::Map, Error = MapError>>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, Error> {
    let map = ebpf.take_map(name).ok_or(Error::Missing(name))?;
    T::try_from(map).map_err(map_err(name))
}

/// `REAL_CONNS`, mapped into this process.
fn take_counters(ebpf: &mut Ebpf) -> Result<SharedCounters, Error> {
    let name = MAP_REAL_CONNS;
    match ebpf.take_map(name).ok_or(Error::Missing(name))? {
        Map::Array(data) => SharedCounters::open(data).map_err(|source| Error::Counters { name, source }),
        _ => Err(Error::NotArray { name }),
    }
}

/// The entries of the tables `[director]` sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSizes {
    /// `CONNS` (`conn_table_size`).
    pub conns: u32,
    /// Each of the persistence templates' and the lblc/lblcr caches' tables
    /// (`cache_size`).
    pub cache: u32,
    /// `FRAGS` (`frag_table_size`).
    pub frags: u32,
}

impl Default for TableSizes {
    fn default() -> Self {
        Self { conns: DEFAULT_CONN_TABLE_SIZE, cache: DEFAULT_CACHE_SIZE, frags: DEFAULT_FRAG_TABLE_SIZE }
    }
}

impl TableSizes {
    /// The sizes a configuration sets.
    #[must_use]
    pub const fn of(config: &config::Config) -> Self {
        Self { conns: config.conn_table_size, cache: config.cache_size, frags: config.frag_table_size }
    }
}

impl Dataplane {
    /// Loads the director program (through the verifier) and takes its
    /// maps, with its tables of `sizes` entries.
    ///
    /// # Errors
    /// When the object does not load; a verifier rejection carries its log.
    pub fn load(sizes: TableSizes) -> Result<Self, Error> {
        let conn_table_size = sizes.conns;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(MAP_CONNS, sizes.conns)
            .map_max_entries(MAP_TEMPLATES, sizes.cache)
            .map_max_entries(MAP_LBLC, sizes.cache)
            .map_max_entries(MAP_LBLCR, sizes.cache)
            .map_max_entries(MAP_FRAGS, sizes.frags)
            .load(crate::ebpf_object())?;
        let schedulers = programs::load_director(&mut ebpf)?;
        Ok(Self {
            schedulers,
            pinned: None,
            services: take(&mut ebpf, MAP_SERVICES)?,
            service_ranges: take(&mut ebpf, MAP_SERVICE_RANGES)?,
            service_reals: take(&mut ebpf, MAP_SERVICE_REALS)?,
            reals: take(&mut ebpf, MAP_REALS)?,
            sched_state: take(&mut ebpf, MAP_SCHED_STATE)?,
            buckets: take(&mut ebpf, MAP_BUCKETS)?,
            maglev: take(&mut ebpf, MAP_MAGLEV)?,
            lblc: take(&mut ebpf, MAP_LBLC)?,
            lblcr: take(&mut ebpf, MAP_LBLCR)?,
            templates: take(&mut ebpf, MAP_TEMPLATES)?,
            conns: take(&mut ebpf, MAP_CONNS)?,
            real_conns: take_counters(&mut ebpf)?,
            real_stats: take(&mut ebpf, MAP_REAL_STATS)?,
            counters: take(&mut ebpf, MAP_COUNTERS)?,
            ctl: take(&mut ebpf, MAP_DIRECTOR_CTL)?,
            sync_events: Some(take(&mut ebpf, MAP_SYNC_EVENTS)?),
            ebpf,
            conn_table_size,
            installed: Vec::new(),
            ids: apply::Ids::default(),
            mh_weights: StdHashMap::new(),
            attached: Vec::new(),
        })
    }

    #[must_use]
    pub const fn conn_table_size(&self) -> u32 {
        self.conn_table_size
    }

    /// Attaches the director to an interface. It stays attached until the
    /// `Dataplane` is dropped.
    ///
    /// # Errors
    /// When the interface does not exist or refuses XDP.
    pub fn attach(&mut self, interface: &str) -> Result<(), Error> {
        let attach_err = |source: std::io::Error| Error::Attach {
            interface: interface.to_owned(),
            source: ProgramError::SyscallError(aya::sys::SyscallError { call: "IFLA_XDP", io_error: source }),
        };
        let ifindex = crate::ifindex(interface)
            .ok_or_else(|| attach_err(std::io::Error::from(std::io::ErrorKind::NotFound)))?;
        let program: &Xdp = self
            .ebpf
            .program(PROG_DIRECTOR)
            .ok_or(Error::Missing(PROG_DIRECTOR))?
            .try_into()
            .map_err(|source| Error::Program { name: PROG_DIRECTOR, source })?;
        let fd = program.fd().map_err(|source| Error::Program { name: PROG_DIRECTOR, source })?;
        xdp_link::attach(ifindex, std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(fd))).map_err(attach_err)?;
        self.attached.push(ifindex);
        if self.pinned.is_none() {
            self.pin_schedulers();
        }
        Ok(())
    }

    /// Pins the tail-call table, so that it outlives this process if it
    /// dies attached (`pin`). Without bpffs the director still runs, but a
    /// dead one keeps only IPv4's established flows: said once, here.
    fn pin_schedulers(&mut self) {
        let pinned = pin::prepare().and_then(|path| {
            self.schedulers.pin(&path).map_err(|e| std::io::Error::other(e.to_string()))?;
            Ok(path)
        });
        match pinned {
            Ok(path) => {
                tracing::debug!(path = %path.display(), "tail-call table pinned");
                self.pinned = Some(path);
            }
            Err(e) => tracing::warn!(
                error = %e,
                "cannot pin the tail-call table in bpffs: if this director dies without \
                 stopping, its data plane keeps only IPv4's established flows"
            ),
        }
    }

    /// Sets the run-time switches (standby, sync).
    ///
    /// # Errors
    /// When the map write fails.
    pub fn set_ctl(&mut self, ctl: DirectorCtl) -> Result<(), Error> {
        self.ctl.set(0, ctl, 0).map_err(map_err(MAP_DIRECTOR_CTL))
    }

    /// The switches in force.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn ctl(&self) -> Result<DirectorCtl, Error> {
        self.ctl.get(&0, 0).map_err(map_err(MAP_DIRECTOR_CTL))
    }

    /// The ring of client entries due for sync; only the first call gets it.
    pub fn take_sync_events(&mut self) -> Option<RingBuf<MapData>> {
        self.sync_events.take()
    }

    /// Inserts or replaces a connection entry the controller made (a synced
    /// one).
    ///
    /// # Errors
    /// When the table refuses it.
    pub fn put_connection(&mut self, key: &ConnKey, conn: &Conn) -> Result<(), Error> {
        self.conns.insert(key, conn, 0).map_err(map_err(MAP_CONNS))
    }

    /// Updates the next hop of one real in place.
    ///
    /// # Errors
    /// When the map cannot be read or written.
    pub fn set_nexthop(&mut self, real_id: u32, hop: Option<&NextHop>) -> Result<(), Error> {
        let mut real = self.reals.get(&real_id, 0).map_err(map_err(MAP_REALS))?;
        apply_nexthop(&mut real, hop);
        self.reals.set(real_id, real, 0).map_err(map_err(MAP_REALS))
    }

    /// A real's counters, summed over CPUs.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn real_stats(&self, real_id: u32) -> Result<Stats, Error> {
        let per_cpu = self.real_stats.get(&real_id, 0).map_err(map_err(MAP_REAL_STATS))?;
        Ok(per_cpu.iter().fold(Stats::default(), |a, s| Stats {
            conns: a.conns + s.conns,
            inpkts: a.inpkts + s.inpkts,
            outpkts: a.outpkts + s.outpkts,
            inbytes: a.inbytes + s.inbytes,
            outbytes: a.outbytes + s.outbytes,
        }))
    }

    /// Every reason counter by name, summed over CPUs.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn counters(&self) -> Result<Vec<(&'static str, u64)>, Error> {
        (0..counter::COUNT)
            .map(|i| {
                let per_cpu = self.counters.get(&i, 0).map_err(map_err(MAP_COUNTERS))?;
                Ok((counter::NAMES[i as usize], per_cpu.iter().sum()))
            })
            .collect()
    }

    /// All connection entries. Entries that vanish while the table is walked
    /// are skipped.
    #[must_use]
    pub fn connections(&self) -> Vec<(ConnKey, Conn)> {
        self.conns.iter().filter_map(Result::ok).collect()
    }

    /// Removes a connection entry. Returns whether this call removed it (a
    /// missing entry is not an error, but nothing to uncount either).
    pub fn remove_connection(&mut self, key: &ConnKey) -> bool {
        self.conns.remove(key).is_ok()
    }

    /// Looks a connection up.
    #[must_use]
    pub fn connection(&self, key: &ConnKey) -> Option<Conn> {
        self.conns.get(key, 0).ok()
    }

    /// A real's connection counts and OVERLOAD flag.
    #[must_use]
    pub fn real_conns(&self, real_id: u32) -> RealConns {
        self.real_conns.get(real_id)
    }

    /// The counters shared with the data plane, for uncounting.
    #[must_use]
    pub const fn shared_counters(&self) -> &SharedCounters {
        &self.real_conns
    }

    /// All persistence templates.
    #[must_use]
    pub fn templates(&self) -> Vec<(AddrKey, Template)> {
        self.templates.iter().filter_map(Result::ok).collect()
    }

    /// Removes a template; returns whether this call removed it.
    pub fn remove_template(&mut self, key: &AddrKey) -> bool {
        self.templates.remove(key).is_ok()
    }

    /// The lblc cache entries with their last use.
    #[must_use]
    pub fn lblc_entries(&self) -> Vec<(AddrKey, u64)> {
        self.lblc.iter().filter_map(Result::ok).map(|(k, e)| (k, e.lastuse)).collect()
    }

    /// The lblcr cache entries with their last use.
    #[must_use]
    pub fn lblcr_entries(&self) -> Vec<(AddrKey, u64)> {
        self.lblcr.iter().filter_map(Result::ok).map(|(k, e)| (k, e.lastuse)).collect()
    }

    /// Removes an lblc cache entry.
    pub fn remove_lblc(&mut self, key: &AddrKey) -> bool {
        self.lblc.remove(key).is_ok()
    }

    /// Removes an lblcr cache entry.
    pub fn remove_lblcr(&mut self, key: &AddrKey) -> bool {
        self.lblcr.remove(key).is_ok()
    }
}

fn real_entry(real: &config::Real, service: u32, hop: Option<&NextHop>) -> Real {
    let (addr, family) = addr::to_map(real.addr);
    let mut entry = Real {
        addr,
        port: real.port.to_be(),
        forward: real.forward.id(),
        family,
        weight: real.weight,
        service,
        u_threshold: real.u_threshold,
        l_threshold: real.l_threshold,
        ..Real::default()
    };
    apply_nexthop(&mut entry, hop);
    entry
}

fn apply_nexthop(real: &mut Real, hop: Option<&NextHop>) {
    match hop {
        // A tunnel needs a source for its outer header: with none (an
        // interface without a global IPv6 address), its packets are dropped
        // as having no next hop (`drop_no_nexthop`) rather than sent from
        // `::`, which the real would discard.
        Some(hop) if real.forward == FWD_TUN && !hop.local && hop.src.is_unspecified() => {
            real.flags &= !(REAL_F_NEXTHOP | REAL_F_LOCAL);
        }
        Some(hop) => {
            real.flags |= REAL_F_NEXTHOP;
            if hop.local {
                real.flags |= REAL_F_LOCAL;
            } else {
                real.flags &= !REAL_F_LOCAL;
            }
            real.ifindex = hop.ifindex;
            real.smac = hop.smac;
            real.dmac = hop.dmac;
            real.tun_saddr = addr::to_map(hop.src).0;
            real.mtu = hop.mtu;
        }
        None => real.flags &= !(REAL_F_NEXTHOP | REAL_F_LOCAL),
    }
}

/// The `DECAP_VIPS` key of a VIP.
fn decap_key(vip: IpAddr) -> VipKey {
    let (addr, family) = addr::to_map(vip);
    VipKey { addr, family, _pad: [0; 3] }
}

fn load_program(ebpf: &mut Ebpf, name: &'static str) -> Result<(), Error> {
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(Error::Missing(name))?
        .try_into()
        .map_err(|source| Error::Program { name, source })?;
    program.load().map_err(|source| Error::Program { name, source })
}

fn attach(ebpf: &mut Ebpf, name: &'static str, interface: &str) -> Result<(), Error> {
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(Error::Missing(name))?
        .try_into()
        .map_err(|source| Error::Program { name, source })?;
    program
        .attach(interface, XdpMode::Default)
        .map(drop)
        .map_err(|source| Error::Attach { interface: interface.to_owned(), source })
}

/// The decapsulation program of a real server in tunnel mode.
pub struct Decap {
    _ebpf: Ebpf,
}

impl Decap {
    /// Loads the decapsulation program, accepts tunnelled packets for `vips`
    /// (IPv4-in-IPv4 for IPv4 VIPs, IPv6-in-IPv6 for IPv6 ones) and attaches
    /// to `interface`.
    ///
    /// # Errors
    /// When loading, the map write or attaching fails.
    pub fn start(interface: &str, vips: &[IpAddr]) -> Result<Self, Error> {
        // The connection table is the director's; keep it tiny here.
        let mut ebpf = EbpfLoader::new().map_max_entries(MAP_CONNS, 1).load(crate::ebpf_object())?;
        load_program(&mut ebpf, PROG_DECAP)?;
        {
            let mut map: HashMap<&mut MapData, VipKey, u32> = HashMap::try_from(
                ebpf.map_mut(MAP_DECAP_VIPS).ok_or(Error::Missing(MAP_DECAP_VIPS))?,
            )
            .map_err(map_err(MAP_DECAP_VIPS))?;
            for vip in vips {
                let key = decap_key(*vip);
                map.insert(key, 1, 0).map_err(map_err(MAP_DECAP_VIPS))?;
            }
        }
        attach(&mut ebpf, PROG_DECAP, interface)?;
        Ok(Self { _ebpf: ebpf })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use lb_common::{AF_INET, AF_INET6, v4_addr, v6_addr};

    use super::*;
    use crate::config::Forward;

    fn real(addr: IpAddr) -> config::Real {
        config::Real { addr, port: 80, weight: 3, forward: Forward::Tun, u_threshold: 0, l_threshold: 0, check: Default::default() }
    }

    #[test]
    fn ipv6_reals_get_their_family_address_and_tunnel_source() {
        let addr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x11));
        let src = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1));
        let hop = NextHop { ifindex: 4, smac: [1; 6], dmac: [2; 6], src, local: false, mtu: 1500 };
        let e = real_entry(&real(addr), 9, Some(&hop));
        assert_eq!((e.family, e.forward, e.service, e.weight), (AF_INET6, FWD_TUN, 9, 3));
        let IpAddr::V6(a) = addr else { unreachable!() };
        let IpAddr::V6(s) = src else { unreachable!() };
        assert_eq!(e.addr, v6_addr(a.octets()));
        assert_eq!(e.tun_saddr, v6_addr(s.octets()));
        assert_eq!((e.flags, e.ifindex, e.mtu, e.dmac), (REAL_F_NEXTHOP, 4, 1500, [2; 6]));
        let none = real_entry(&real(addr), 9, None);
        assert_eq!(none.flags & REAL_F_NEXTHOP, 0);
        let sourceless = NextHop { src: IpAddr::V6(Ipv6Addr::UNSPECIFIED), ..hop };
        assert_eq!(real_entry(&real(addr), 9, Some(&sourceless)).flags & REAL_F_NEXTHOP, 0, "no tunnel from ::");
        let nat = config::Real { forward: Forward::Nat, ..real(addr) };
        assert_eq!(real_entry(&nat, 9, Some(&sourceless)).flags, REAL_F_NEXTHOP, "NAT needs no source");

        let v4 = real_entry(&real(Ipv4Addr::new(10, 0, 1, 11).into()), 0, None);
        assert_eq!((v4.family, v4.addr), (AF_INET, v4_addr([10, 0, 1, 11])));
    }

    #[test]
    fn decap_keys_name_the_vip_in_its_family() {
        let k = decap_key("2001:db8::100".parse().unwrap());
        assert_eq!(k.family, AF_INET6);
        assert_eq!(k.addr[0].to_ne_bytes(), [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(k.addr[3].to_ne_bytes(), [0, 0, 0x01, 0x00]);
        let k = decap_key("10.0.0.1".parse().unwrap());
        assert_eq!((k.family, k.addr), (AF_INET, v4_addr([10, 0, 0, 1])));
    }
}
