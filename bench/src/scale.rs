//! Section 4: scale.
//!
//! - The fast path with 1M established NAT flows in the connection table
//!   against 1k, each packet of another flow (BPF_PROG_TEST_RUN, as
//!   section 1; every output checked).
//! - The memory of every map at the default sizes (the kernel's `memlock`
//!   of each map, from `/proc/self/fdinfo`).
//! - What a weight change costs on a 256-real service: the map writes the
//!   controller's `Dataplane::apply` makes (counted with perf on the bpf(2)
//!   tracepoint) and its time.

use std::{
    collections::HashMap as StdHashMap,
    os::fd::{AsFd as _, AsRawFd as _},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData},
    programs::{TestRun, TestRunOptions, Xdp},
};
use lb_common::{
    AF_INET, DEFAULT_CONN_TABLE_SIZE, IPPROTO_TCP, MAP_CONNS, MAP_REALS, MAP_SCHED_STATE,
    MAP_SERVICE_REALS, MAP_SERVICES, PROG_DIRECTOR, Real, SCHED_RR, SchedState, Service,
    ServiceKey, ServiceReals, counter, v4_addr,
};
use lb_user::dataplane::{Dataplane, TableSizes};

use crate::{
    Case, Settings, check,
    lab::median,
    support::{
        ACK, HTTP, PSH, Pkt, REAL_HTTP, REAL1, SYN, VIP, XDP_TX, action_name, nat_real, nat_to,
        port_be,
    },
    syscount::{Counts, SysCount},
};

/// One map of the object: its kernel facts and memory.
pub struct MapMemory {
    pub name: String,
    pub kind: String,
    pub max_entries: u32,
    pub key_size: u32,
    pub value_size: u32,
    /// The kernel's accounting of the map's memory (`memlock` in fdinfo).
    pub bytes: u64,
}

pub struct WeightChange {
    pub scheduler: &'static str,
    pub change: &'static str,
    pub counts: Counts,
    /// Median wall time of `Dataplane::apply`.
    pub seconds: f64,
    pub repeats: usize,
}

pub struct Report {
    /// Flow counts measured: (flows, per-packet figures).
    pub small_flows: u32,
    pub large_flows: u32,
    pub small: Vec<f64>,
    pub large: Vec<f64>,
    pub empty: Vec<f64>,
    pub table_size: u32,
    /// CONNS's memory at `table_size`.
    pub table_bytes: u64,
    pub open_seconds: f64,
    pub insert_failures: u64,
    pub maps: Vec<MapMemory>,
    pub weights: Vec<WeightChange>,
    pub weight_error: Option<String>,
    pub packets: usize,
    pub runs: usize,
}

impl Report {
    pub fn net(&self, runs: &[f64]) -> f64 {
        median(runs) - median(&self.empty)
    }
}

pub struct Params {
    small_flows: u32,
    large_flows: u32,
    table_size: u32,
    weight_repeats: usize,
}

impl Params {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                small_flows: 1_000,
                large_flows: 10_000,
                table_size: 1 << 16,
                weight_repeats: 3,
            }
        } else {
            Self {
                small_flows: 1_000,
                large_flows: 1_000_000,
                // A NAT flow takes two entries: 2M of 4M, so that the LRU
                // never has to evict.
                table_size: 1 << 22,
                weight_repeats: 21,
            }
        }
    }
}

/// The `MapData` of a map of the object, for its descriptor.
fn map_data(map: &Map) -> Option<&MapData> {
    Some(match map {
        Map::Array(m)
        | Map::HashMap(m)
        | Map::LruHashMap(m)
        | Map::PerCpuArray(m)
        | Map::PerCpuHashMap(m)
        | Map::LpmTrie(m)
        | Map::ProgramArray(m)
        | Map::RingBuf(m)
        | Map::Unsupported(m) => m,
        _ => return None,
    })
}

/// The kernel's memory figure of a map descriptor of this process.
fn memlock(fd: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn memory_of(ebpf: &Ebpf) -> Vec<MapMemory> {
    let mut maps: Vec<MapMemory> = ebpf
        .maps()
        .filter_map(|(name, map)| {
            let data = map_data(map)?;
            let info = data.info().ok()?;
            Some(MapMemory {
                name: name.to_owned(),
                kind: info
                    .map_type()
                    .map_or_else(|_| "?".to_owned(), |t| format!("{t:?}")),
                max_entries: info.max_entries(),
                key_size: info.key_size(),
                value_size: info.value_size(),
                bytes: memlock(data.fd().as_fd().as_raw_fd()),
            })
        })
        .collect();
    maps.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
    maps
}

/// A director with a connection table of `size` entries and one NAT
/// service, VIP:80 → REAL1:8080, written into its maps as the fixtures do.
struct Director {
    ebpf: Ebpf,
    _schedulers: aya::maps::Map,
}

impl Director {
    fn load(size: u32) -> Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(MAP_CONNS, size)
            .load(lb_user::ebpf_object())
            .context("loading the xlvs object")?;
        let schedulers = lb_user::dataplane::programs::load_director(&mut ebpf)
            .map_err(|e| anyhow::anyhow!("loading the director: {e:?}"))?;
        let mut d = Self {
            ebpf,
            _schedulers: schedulers,
        };
        let key = ServiceKey {
            addr: v4_addr(VIP),
            port: port_be(HTTP),
            proto: IPPROTO_TCP,
            family: AF_INET,
        };
        let mut list = ServiceReals::default();
        list.ids[0] = 1;
        Array::<_, ServiceReals>::try_from(d.map(MAP_SERVICE_REALS)?)?.set(0, list, 0)?;
        Array::<_, SchedState>::try_from(d.map(MAP_SCHED_STATE)?)?.set(
            0,
            SchedState::default(),
            0,
        )?;
        Array::<_, Real>::try_from(d.map(MAP_REALS)?)?.set(
            1,
            Real {
                service: 0,
                ..nat_real(REAL1, REAL_HTTP)
            },
            0,
        )?;
        let service = Service {
            id: 0,
            nreals: 1,
            scheduler: SCHED_RR,
            ..Service::default()
        };
        HashMap::<_, ServiceKey, Service>::try_from(d.map(MAP_SERVICES)?)?
            .insert(key, service, 0)?;
        Ok(d)
    }

    fn map(&mut self, name: &str) -> Result<&mut Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("map {name}"))
    }

    fn conns_bytes(&self) -> u64 {
        self.ebpf
            .map(MAP_CONNS)
            .and_then(map_data)
            .map_or(0, |d| memlock(d.fd().as_fd().as_raw_fd()))
    }

    fn counter(&self, index: u32) -> u64 {
        let Some(map) = self.ebpf.map(lb_common::MAP_COUNTERS) else {
            return 0;
        };
        aya::maps::PerCpuArray::<_, u64>::try_from(map)
            .ok()
            .and_then(|a| a.get(&index, 0).ok())
            .map_or(0, |v| v.iter().sum())
    }

    fn run_into(&self, frame: &[u8], out: &mut [u8]) -> (u32, usize, Duration) {
        let prog: &Xdp = self
            .ebpf
            .program(PROG_DIRECTOR)
            .expect("the director program")
            .try_into()
            .expect("an XDP program");
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(out),
                ..TestRunOptions::default()
            })
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {e:?}"));
        (r.return_value, r.data_size_out as usize, r.duration)
    }
}

/// Flow `i`'s client: 100.64.0.0/10 has room for 4M.
fn client(i: u32) -> [u8; 4] {
    (0x6440_0000 + i).to_be_bytes()
}

fn packet(i: u32, flags: u8) -> Pkt {
    Pkt::tcp(40000, HTTP, flags).from(client(i), 40000)
}

/// Opens flows `from..to` (a SYN each, then one data segment, which makes
/// them ESTABLISHED), checking each verdict.
fn open(d: &Director, from: u32, to: u32) -> Result<()> {
    let mut out = vec![0u8; 256];
    let started = Instant::now();
    for flags in [SYN, ACK | PSH] {
        for i in from..to {
            if i % 100_000 == 0 {
                crate::check_stop()?;
                if i > from {
                    println!(
                        "  opening flows: {i}/{to} ({}, {:.0} s)",
                        if flags == SYN { "SYN" } else { "first data" },
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            let (action, _, _) = d.run_into(&packet(i, flags).frame(), &mut out);
            anyhow::ensure!(
                action == XDP_TX,
                "flow {i}: {} instead of XDP_TX",
                action_name(action)
            );
        }
    }
    Ok(())
}

/// The Internet checksum of `data` (RFC 1071), with `sum` already added.
fn csum(data: &[u8], mut sum: u32) -> u16 {
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Makes `frame` (a copy of `base`, an Ethernet/IPv4/TCP frame) come from
/// `src`, with both checksums computed afresh.
fn patch(frame: &mut Vec<u8>, base: &[u8], src: [u8; 4]) {
    frame.clear();
    frame.extend_from_slice(base);
    frame[26..30].copy_from_slice(&src);
    frame[24..26].fill(0);
    let ip = csum(&frame[14..34], 0);
    frame[24..26].copy_from_slice(&ip.to_be_bytes());
    frame[50..52].fill(0);
    let tcp_len = frame.len() - 34;
    let mut pseudo = 6u32 + tcp_len as u32;
    for c in frame[26..34].chunks(2) {
        pseudo += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    let tcp = csum(&frame[34..], pseudo);
    frame[50..52].copy_from_slice(&tcp.to_be_bytes());
}

/// Established packets, each of another of the first `flows` flows
/// (a multiplicative walk, so that consecutive packets are far apart in
/// the table). The frames are flow 0's, as etherparse builds them, with
/// the client address patched in (so that little user-space work runs
/// between two packets); every 1024th is checked against etherparse's.
struct Spread<'a> {
    d: &'a Director,
    flows: u32,
    next: u64,
    base_in: Vec<u8>,
    base_out: Vec<u8>,
    input: Vec<u8>,
    want: Vec<u8>,
    out: Vec<u8>,
}

impl<'a> Spread<'a> {
    fn new(d: &'a Director, flows: u32) -> Self {
        let p = packet(0, ACK | PSH);
        Self {
            d,
            flows,
            next: 0,
            base_in: p.frame(),
            base_out: nat_to(&p, REAL1, REAL_HTTP).frame(),
            input: Vec::with_capacity(128),
            want: Vec::with_capacity(128),
            out: vec![0; 256],
        }
    }
}

impl Case for Spread<'_> {
    fn packet(&mut self) -> Duration {
        let i = ((self.next * 2_654_435_761) % u64::from(self.flows)) as u32;
        self.next += 1;
        patch(&mut self.input, &self.base_in, client(i));
        patch(&mut self.want, &self.base_out, client(i));
        if self.next.is_multiple_of(1024) {
            let p = packet(i, ACK | PSH);
            assert!(
                self.input == p.frame() && self.want == nat_to(&p, REAL1, REAL_HTTP).frame(),
                "a patched frame differs from etherparse's"
            );
        }
        let (action, len, time) = self.d.run_into(&self.input, &mut self.out);
        check(
            "established flow of many",
            (action, &self.out[..len]),
            XDP_TX,
            &self.want,
        );
        time
    }
}

/// A 256-real service under `scheduler` as a config file gives it.
fn weighted_service(
    vip: usize,
    scheduler: &str,
    weights: &[u32],
) -> Result<lb_user::config::Service> {
    let mut text = format!(
        "[director]\ninterfaces = [\"lo\"]\n\n[[virtual]]\naddress = \"10.100.7.{}:80\"\n\
         scheduler = \"{scheduler}\"\nforward = \"nat\"\n",
        vip + 1
    );
    for (i, w) in weights.iter().enumerate() {
        text.push_str(&format!(
            "\n[[virtual.real]]\naddress = \"10.7.{}.{}:8080\"\nweight = {w}\n",
            i / 250,
            i % 250 + 1
        ));
    }
    let mut config =
        lb_user::config::parse("weights.toml", &text).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(config.services.remove(0))
}

fn weight_changes(repeats: usize) -> Result<Vec<WeightChange>> {
    let mut dp = Dataplane::load(TableSizes::default())
        .map_err(|e| anyhow::anyhow!("loading the data plane: {e:?}"))?;
    let counter = SysCount::new()?;
    let hops = StdHashMap::new();
    let n = lb_common::MAX_REALS_PER_SERVICE;
    let base: Vec<u32> = (0..n).map(|i| 1 + (i % 3) as u32).collect();
    let mut rows = Vec::new();
    for (k, scheduler) in ["wlc", "wrr", "sh", "mh"].into_iter().enumerate() {
        crate::check_stop()?;
        // The previous service leaves first, so that what is timed is the
        // install alone.
        dp.apply(&[], &hops).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let install = weighted_service(k, scheduler, &base)?;
        let started = Instant::now();
        let (applied, counts) = counter.count(|| dp.apply(std::slice::from_ref(&install), &hops));
        applied.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        rows.push(WeightChange {
            scheduler: leak(scheduler),
            change: "install the service",
            counts,
            seconds: started.elapsed().as_secs_f64(),
            repeats: 1,
        });
        let mut current = base.clone();
        for (change, all) in [("one real's weight", false), ("every real's weight", true)] {
            let mut times = Vec::new();
            let mut last = Counts::default();
            for _ in 0..repeats {
                // Each weight picked goes from its base value to base + 3,
                // or back, so that every apply changes exactly those.
                for (i, w) in current.iter_mut().enumerate() {
                    if all || i == 0 {
                        *w = if *w == base[i] { base[i] + 3 } else { base[i] };
                    }
                }
                let want = weighted_service(k, scheduler, &current)?;
                let t = Instant::now();
                let (applied, counts) =
                    counter.count(|| dp.apply(std::slice::from_ref(&want), &hops));
                times.push(t.elapsed().as_secs_f64());
                let applied = applied.map_err(|e| anyhow::anyhow!("{e:?}"))?;
                anyhow::ensure!(
                    applied.reals_changed == if all { n } else { 1 },
                    "{scheduler}: {change}: apply changed {} reals",
                    applied.reals_changed
                );
                last = counts;
            }
            println!(
                "  {scheduler:<4} {change:<20} {} map writes, {} lookups, {:.3} ms",
                last.updates,
                last.lookups,
                median(&times) * 1e3
            );
            rows.push(WeightChange {
                scheduler: leak(scheduler),
                change,
                counts: last,
                seconds: median(&times),
                repeats,
            });
        }
    }
    // Leave nothing installed (the reals are retired with the data plane).
    let _ = dp.apply(&[], &hops);
    Ok(rows)
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

pub fn run(settings: &Settings) -> Result<Report> {
    let p = Params::new(settings.quick);

    println!("map memory at the default sizes");
    let maps = {
        let ebpf = EbpfLoader::new()
            .load(lb_user::ebpf_object())
            .context("loading the xlvs object")?;
        memory_of(&ebpf)
    };
    for m in &maps {
        println!("  {:<16} {:>12} bytes", m.name, m.bytes);
    }

    println!("empty program (baseline)");
    let mut empty = crate::empty()?;
    let empty_runs = crate::measure("empty", &mut empty, settings);

    println!(
        "fast path over {} and {} established NAT flows (table of {} entries)",
        p.small_flows, p.large_flows, p.table_size
    );
    let d = Director::load(p.table_size)?;
    open(&d, 0, p.small_flows)?;
    let mut case = Spread::new(&d, p.small_flows);
    let small = crate::measure(&format!("{} flows", p.small_flows), &mut case, settings);
    let started = Instant::now();
    open(&d, p.small_flows, p.large_flows)?;
    let open_seconds = started.elapsed().as_secs_f64();
    let mut case = Spread::new(&d, p.large_flows);
    let large = crate::measure(&format!("{} flows", p.large_flows), &mut case, settings);
    let insert_failures = d.counter(counter::CONN_INSERT_FAIL);
    let table_bytes = d.conns_bytes();
    drop(d);

    println!(
        "weight changes on a service of {} reals",
        lb_common::MAX_REALS_PER_SERVICE
    );
    let (weights, weight_error) = match weight_changes(p.weight_repeats) {
        Ok(w) => (w, None),
        Err(e) => {
            println!("  weight changes not measured: {e:#}");
            (Vec::new(), Some(format!("{e:#}")))
        }
    };
    Ok(Report {
        small_flows: p.small_flows,
        large_flows: p.large_flows,
        small,
        large,
        empty: empty_runs,
        table_size: p.table_size,
        table_bytes,
        open_seconds,
        insert_failures,
        maps,
        weights,
        weight_error,
        packets: settings.packets,
        runs: settings.runs,
    })
}
