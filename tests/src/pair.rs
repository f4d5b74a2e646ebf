//! An active/backup pair of directors for the failover tests
//! (`tests/failover.rs`): the lab of [`Topology`] plus a second director
//! on both segments, and the tools to watch a VRRP takeover from outside:
//! `xlvs list --vrrp --json`, the client's neighbour table, a sniffer that
//! timestamps adverts and gratuitous ARPs on the client segment, a raw
//! injector for spoofed adverts, a keepalived guard and a keep-alive
//! request stream.
//!
//! ```text
//!   client (eth0 10.1.0.2/24; the VIPs 10.100.0.0/24 are on-link, so the
//!      |    client ARPs for them and follows the gratuitous ARPs)
//!   [ext bridge] ------------------------------------------+
//!      |                         |                         |
//!   dir  ext 10.1.0.1         dir2 ext 10.1.0.3         rtr ext 10.1.0.250
//!        int 10.0.1.1              int 10.0.1.3             int 10.0.1.250
//!      |                         |                         |   (Gateway::Router)
//!   [int bridge] ------------------------------------------+
//!      |            |            |
//!   real1 .11    real2 .12    real3 .13   default route: via rtr (DR), or
//!                                         via 10.0.1.254, a VRRP address that
//!                                         moves with the VIP (NAT)
//! ```
//!
//! [`PairLab::build_dual_stack`] adds IPv6 to every host as
//! [`Topology::build_dual_stack`] does (ext 2001:db8:c1::/64, int
//! 2001:db8:1::/64: dir ::1, dir2 ::3, rtr ::250, the client c1::2, the
//! reals 1::11-13), the IPv6 VIPs 2001:db8:100::/64 on-link for the client
//! too, and the reals' IPv6 default route via rtr or [`FLOATING_GW6`].
//!
//! Everything lives in namespaces of the [`Topology`] (same prefix, same
//! clean-up). Processes are only signalled by the PIDs the harness got
//! when it spawned them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::netns::{Netns, Proc, TempDir, wait_for};
use crate::topology::{Segment, Topology};
use crate::traffic::KeepAlive;
use crate::xlvs::{self, Service, Xlvs};

/// The second director's addresses.
pub const DIR2_EXT_IP: &str = "10.1.0.3";
pub const DIR2_INT_IP: &str = "10.0.1.3";
/// The reals' router for DR ([`Gateway::Router`]).
pub const ROUTER_EXT_IP: &str = "10.1.0.250";
pub const ROUTER_INT_IP: &str = "10.0.1.250";
/// The reals' gateway for NAT ([`Gateway::Floating`]): a VRRP address on
/// the directors' `int`, held by the master.
pub const FLOATING_GW: &str = "10.0.1.254";
/// The virtual router id every test uses.
pub const VRID: u8 = 51;
/// How long `xlvs run` may take to answer and attach.
pub const XLVS_START: Duration = Duration::from_secs(40);
/// The network the client reaches on-link (the VIPs).
pub const VIP_NET: &str = "10.100.0.0/24";
/// The IPv6 counterparts ([`PairLab::build_dual_stack`]).
pub const DIR2_EXT_IP6: &str = "2001:db8:c1::3";
pub const DIR2_INT_IP6: &str = "2001:db8:1::3";
pub const ROUTER_EXT_IP6: &str = "2001:db8:c1::250";
pub const ROUTER_INT_IP6: &str = "2001:db8:1::250";
pub const FLOATING_GW6: &str = "2001:db8:1::254";
pub const VIP6_NET: &str = "2001:db8:100::/64";

/// How the reals send their replies to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gateway {
    /// Through a router of their own (DR and TUN: replies bypass the
    /// directors).
    Router,
    /// Through [`FLOATING_GW`] (IPv6: [`FLOATING_GW6`]), which the master
    /// holds (NAT: replies must cross the director that rewrites them).
    Floating,
}

/// The pair's lab: [`Topology`] with `dir` (index 0) and `dir2` (index 1).
pub struct PairLab {
    pub topo: Topology,
    dir2: String,
    pub gateway: Gateway,
}

impl std::fmt::Debug for PairLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairLab")
            .field("topo", &self.topo)
            .finish_non_exhaustive()
    }
}

impl PairLab {
    /// Builds the lab (see the module doc) and starts the realservers.
    pub fn build(gateway: Gateway) -> Result<PairLab> {
        Self::build_with(gateway, false)
    }

    /// [`PairLab::build`] with IPv6 as well (see the module doc).
    pub fn build_dual_stack(gateway: Gateway) -> Result<PairLab> {
        Self::build_with(gateway, true)
    }

    fn build_with(gateway: Gateway, ipv6: bool) -> Result<PairLab> {
        let mut topo = if ipv6 {
            Topology::build_dual_stack()?
        } else {
            Topology::build()?
        };
        let dir2 = topo
            .add_director(
                "dir2",
                &format!("{DIR2_EXT_IP}/24"),
                &format!("{DIR2_INT_IP}/24"),
            )?
            .name()
            .to_string();
        if ipv6 {
            topo.add_ipv6(&dir2, "ext", DIR2_EXT_IP6, None)?;
            topo.add_ipv6(&dir2, "int", DIR2_INT_IP6, None)?;
            topo.ns(&dir2)
                .expect("just added")
                .sysctl(&["net.ipv6.conf.all.forwarding=1"])?;
        }
        let (gw, gw6) = match gateway {
            Gateway::Router => {
                let rtr = topo.add_host("rtr")?.name().to_string();
                topo.connect(&rtr, Segment::Ext, "ext", &format!("{ROUTER_EXT_IP}/24"))?;
                topo.connect(&rtr, Segment::Int, "int", &format!("{ROUTER_INT_IP}/24"))?;
                topo.ns(&rtr).expect("just added").sysctl(&[
                    "net.ipv4.ip_forward=1",
                    "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.default.rp_filter=0",
                ])?;
                if ipv6 {
                    topo.add_ipv6(&rtr, "ext", ROUTER_EXT_IP6, None)?;
                    topo.add_ipv6(&rtr, "int", ROUTER_INT_IP6, None)?;
                    topo.ns(&rtr)
                        .expect("just added")
                        .sysctl(&["net.ipv6.conf.all.forwarding=1"])?;
                }
                (ROUTER_INT_IP, ROUTER_INT_IP6)
            }
            Gateway::Floating => (FLOATING_GW, FLOATING_GW6),
        };
        topo.client()
            .ip(&["route", "add", VIP_NET, "dev", "eth0"])?;
        for r in topo.reals() {
            r.ns.ip(&["route", "replace", "default", "via", gw])?;
        }
        if ipv6 {
            topo.client()
                .ip(&["-6", "route", "add", VIP6_NET, "dev", "eth0"])?;
            for r in topo.reals() {
                r.ns.ip(&["-6", "route", "replace", "default", "via", gw6])?;
            }
        }
        let lab = PairLab {
            topo,
            dir2,
            gateway,
        };
        // VRRP starts in fault on an interface without carrier yet.
        for i in 0..2 {
            for ifname in ["ext", "int"] {
                let ns = lab.dir(i);
                wait_for(
                    &format!("carrier on {ifname} in {}", ns.name()),
                    Duration::from_secs(5),
                    || {
                        Ok(ns
                            .ip(&["link", "show", "dev", ifname])?
                            .contains("LOWER_UP")
                            .then_some(()))
                    },
                )?;
            }
        }
        let mut lab = lab;
        lab.topo.start_realservers()?;
        Ok(lab)
    }

    /// Director `i`: 0 is `dir`, 1 is `dir2`.
    pub fn dir(&self, i: usize) -> &Netns {
        match i {
            0 => self.topo.director(),
            _ => self.topo.ns(&self.dir2).expect("dir2 exists"),
        }
    }

    pub fn client(&self) -> &Netns {
        self.topo.client()
    }

    /// The MAC address of `ifname` in director `i`, as `ip` prints it.
    pub fn mac(&self, i: usize, ifname: &str) -> Result<String> {
        mac_of(self.dir(i), ifname)
    }

    /// The client's neighbour entry for `ip`: `(lladdr, state)`, if any.
    pub fn client_neigh(&self, ip: &str) -> Result<Option<(String, String)>> {
        neigh(self.client(), ip, "eth0")
    }

    /// Whether director `i` holds `addr` (without prefix) on `ifname`.
    pub fn has_addr(&self, i: usize, ifname: &str, addr: &str) -> Result<bool> {
        has_addr(self.dir(i), ifname, addr)
    }

    /// Director `i`'s link-local address on `ifname` once past duplicate
    /// address detection (an IPv6 VRRP instance's primary address, the
    /// source of its adverts), waiting up to 5 s for it.
    pub fn link_local(&self, i: usize, ifname: &str) -> Result<Ipv6Addr> {
        let ns = self.dir(i);
        wait_for(
            &format!("a link-local address past DAD on {ifname} in {}", ns.name()),
            Duration::from_secs(5),
            || {
                let out = ns.ip(&["-6", "-o", "addr", "show", "dev", ifname, "scope", "link"])?;
                Ok(out
                    .lines()
                    .find(|l| !l.contains("tentative"))
                    .and_then(|l| l.split_whitespace().skip_while(|w| *w != "inet6").nth(1))
                    .and_then(|a| a.split('/').next())
                    .and_then(|a| a.parse().ok()))
            },
        )
    }

    /// Starts `xlvs run` with `config` on director `i` (XDP on ext and
    /// int), allowing [`XLVS_START`] for it (loading and verifying the XDP
    /// programs takes 10-15 s on a busy 2-core machine).
    pub fn start_xlvs(&self, i: usize, config: &str) -> Result<Xlvs> {
        Xlvs::start_within(self.dir(i), config, &["ext", "int"], XLVS_START)
            .with_context(|| format!("starting xlvs on {} with:\n{config}", self.dir(i).name()))
    }

    /// Real `real`'s (0-based) neighbour entry for `gateway`
    /// ([`FLOATING_GW`] or [`FLOATING_GW6`]): the MAC it sends its replies
    /// to.
    pub fn real_gw_mac(&self, real: usize, gateway: &str) -> Result<Option<String>> {
        let ns = &self.topo.reals()[real].ns;
        Ok(neigh(ns, gateway, "eth0")?.map(|(m, _)| m))
    }
}

/// The MAC of `ifname` in `ns`.
pub fn mac_of(ns: &Netns, ifname: &str) -> Result<String> {
    let out = ns.ip(&["-o", "link", "show", "dev", ifname])?;
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_string)
        .with_context(|| format!("no MAC in {out:?}"))
}

/// `ns`'s neighbour entry for `ip` on `dev`: `(lladdr, state)`.
pub fn neigh(ns: &Netns, ip: &str, dev: &str) -> Result<Option<(String, String)>> {
    let out = ns.ip(&["neigh", "show", ip, "dev", dev])?;
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&ip) {
            continue;
        }
        let mac = words
            .iter()
            .position(|w| *w == "lladdr")
            .and_then(|p| words.get(p + 1))
            .map(|s| s.to_string());
        let state = words.last().map(|s| s.to_string()).unwrap_or_default();
        if let Some(mac) = mac {
            return Ok(Some((mac, state)));
        }
    }
    Ok(None)
}

/// Whether `addr` (IPv4 or IPv6) is an address of `ifname` in `ns`.
pub fn has_addr(ns: &Netns, ifname: &str, addr: &str) -> Result<bool> {
    let out = ns.ip(&["-o", "addr", "show", "dev", ifname])?;
    Ok(out.lines().any(|l| {
        l.split_whitespace()
            .skip_while(|w| *w != "inet" && *w != "inet6")
            .nth(1)
            .and_then(|a| a.split('/').next())
            == Some(addr)
    }))
}

// ------------------------------------------------------------- config

/// The `[vrrp]` (and `[sync]`) sections of one director.
#[derive(Debug, Clone)]
pub struct VrrpOpts {
    pub priority: u8,
    pub advert_ms: u32,
    pub preempt: bool,
    /// `addresses = [...]`; empty: the default (the services' VIPs).
    pub addresses: Vec<String>,
    /// Adds `[sync]` (defaults: the vrrp interface, the multicast group).
    pub sync: bool,
    /// `family = "..."` (`ipv4`, `ipv6`); `None`: the default (the first
    /// address's).
    pub family: Option<&'static str>,
}

impl VrrpOpts {
    pub fn new(priority: u8) -> VrrpOpts {
        VrrpOpts {
            priority,
            advert_ms: 100,
            preempt: true,
            addresses: Vec::new(),
            sync: false,
            family: None,
        }
    }
}

/// A director config: `services` on `ext` and `int`, VRRP on `ext`.
pub fn pair_config(services: &[Service], v: &VrrpOpts) -> String {
    let mut s = xlvs::render_config(&["ext", "int"], services);
    let _ = write!(
        s,
        "\n[vrrp]\ninterface = \"ext\"\nvrid = {VRID}\npriority = {}\nadvert_interval = {}\npreempt = {}\n",
        v.priority, v.advert_ms, v.preempt
    );
    if let Some(f) = v.family {
        let _ = writeln!(s, "family = {f:?}");
    }
    if !v.addresses.is_empty() {
        let list: Vec<String> = v.addresses.iter().map(|a| format!("{a:?}")).collect();
        let _ = writeln!(s, "addresses = [{}]", list.join(", "));
    }
    if v.sync {
        s.push_str("\n[sync]\n");
    }
    s
}

// -------------------------------------------------------- list --vrrp

/// `xlvs list --vrrp --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct VrrpStatus {
    /// `master`, `backup`, `fault`, `initialize`.
    pub state: String,
    /// `ipv4`, `ipv6`: of the adverts.
    #[serde(default)]
    pub family: String,
    pub priority: u8,
    #[serde(default)]
    pub primary: Option<String>,
    #[serde(default)]
    pub master: Option<String>,
    #[serde(default)]
    pub transitions: u64,
    #[serde(default)]
    pub adverts_sent: u64,
    #[serde(default)]
    pub adverts_received: u64,
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
    #[serde(default)]
    pub addresses: Vec<String>,
}

impl VrrpStatus {
    pub fn is_master(&self) -> bool {
        self.state.eq_ignore_ascii_case("master")
    }
    pub fn drop_count(&self, reason: &str) -> u64 {
        self.drops.get(reason).copied().unwrap_or(0)
    }
}

/// `xlvs list --vrrp --json` over `socket`.
pub fn vrrp_status_at(socket: &Path) -> Result<VrrpStatus> {
    let text = xlvs::list(socket, &["--vrrp", "--json"])?;
    let v: Option<VrrpStatus> = serde_json::from_str(&text)
        .with_context(|| format!("parsing `xlvs list --vrrp --json`:\n{text}"))?;
    v.with_context(|| format!("no [vrrp] instance: {text}"))
}

/// `xlvs list --vrrp --json` of a running director.
pub fn vrrp_status(x: &Xlvs) -> Result<VrrpStatus> {
    vrrp_status_at(x.socket())
}

/// Waits until `x`'s VRRP state is `state`; returns the status.
pub fn wait_state(x: &mut Xlvs, state: &str, timeout: Duration) -> Result<VrrpStatus> {
    let mut last = None;
    let r = wait_for(
        &format!("VRRP state {state} in {}", x.netns()),
        timeout,
        || {
            x.check_running()?;
            let s = vrrp_status(x)?;
            let done = s.state.eq_ignore_ascii_case(state);
            last = Some(s.clone());
            Ok(done.then_some(s))
        },
    );
    r.with_context(|| format!("last status: {last:?}\nxlvs stderr:\n{}", x.stderr()))
}

/// The connection rows of `xlvs list -n -c --json`.
pub fn connections(x: &Xlvs) -> Result<Vec<serde_json::Value>> {
    let text = x.list(&["-n", "-c", "--json"])?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {text}"))?;
    Ok(v.get("connections")
        .and_then(|c| c.as_array())
        .cloned()
        .unwrap_or_default())
}

/// Whether `xlvs list -c` of `x` shows a connection from `client` (ip:port)
/// to `real` (ip:port); returns its row.
pub fn find_connection(x: &Xlvs, client: &str, real: &str) -> Result<Option<serde_json::Value>> {
    Ok(connections(x)?.into_iter().find(|c| {
        c.get("source").and_then(|s| s.as_str()) == Some(client)
            && c.get("destination").and_then(|s| s.as_str()) == Some(real)
    }))
}

// -------------------------------------------------- state sampling

/// One sample of a director's VRRP state.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub director: usize,
    /// The state, or `down` when `xlvs list` did not answer.
    pub state: String,
}

/// Samples the VRRP state of several directors (each on its own thread,
/// every `period`) until dropped or [`StateSampler::finish`]ed; bounded by
/// `max` overall. A socket that does not answer (a director that is not
/// running) samples as `down`.
pub struct StateSampler {
    stop: Arc<AtomicBool>,
    sockets: Arc<Mutex<Vec<Option<PathBuf>>>>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<JoinHandle<()>>,
}

impl StateSampler {
    /// Starts sampling the directors at `sockets` (`None`: not running).
    pub fn start(sockets: &[Option<&Path>], period: Duration, max: Duration) -> StateSampler {
        let n = sockets.len();
        let stop = Arc::new(AtomicBool::new(false));
        let sockets = Arc::new(Mutex::new(
            sockets
                .iter()
                .map(|s| s.map(Path::to_path_buf))
                .collect::<Vec<_>>(),
        ));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let deadline = Instant::now() + max;
        let threads = (0..n)
            .map(|i| {
                let (stop, sockets, samples) = (stop.clone(), sockets.clone(), samples.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed)
                        && Instant::now() < deadline
                        && !crate::traffic::stopped()
                    {
                        let t0 = Instant::now();
                        let socket = sockets.lock().unwrap()[i].clone();
                        let state = match socket {
                            None => "down".to_string(),
                            Some(s) => vrrp_status_at(&s)
                                .map(|s| s.state.to_ascii_lowercase())
                                .unwrap_or_else(|_| "down".into()),
                        };
                        samples.lock().unwrap().push(Sample {
                            at: Instant::now(),
                            director: i,
                            state,
                        });
                        if let Some(rest) = period.checked_sub(t0.elapsed()) {
                            std::thread::sleep(rest);
                        }
                    }
                })
            })
            .collect();
        StateSampler {
            stop,
            sockets,
            samples,
            threads,
        }
    }

    /// Director `i` is (now) reached over `socket`; `None`: it is not
    /// running.
    pub fn set_socket(&self, i: usize, socket: Option<&Path>) {
        self.sockets.lock().unwrap()[i] = socket.map(Path::to_path_buf);
    }

    /// Stops sampling; returns every sample in time order.
    pub fn finish(mut self) -> Vec<Sample> {
        self.stop_threads();
        let mut v = std::mem::take(&mut *self.samples.lock().unwrap());
        v.sort_by_key(|s| s.at);
        v
    }

    fn stop_threads(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for StateSampler {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// What [`dual_master`] found.
#[derive(Debug, Clone, Default)]
pub struct DualMaster {
    /// The longest stretch with both directors master, bounded
    /// conservatively: from the first sample of the second master to the
    /// first later sample showing either of them not master.
    pub longest: Duration,
    /// The largest gap between two consecutive samples of one director.
    pub max_gap: Duration,
    /// How many stretches there were.
    pub stretches: usize,
}

/// The times both director 0 and 1 were master at once, from `samples`
/// (in time order).
pub fn dual_master(samples: &[Sample]) -> DualMaster {
    let mut state: [Option<&str>; 2] = [None, None];
    let mut last_at: [Option<Instant>; 2] = [None, None];
    let mut out = DualMaster::default();
    let mut since: Option<Instant> = None;
    for s in samples.iter().filter(|s| s.director < 2) {
        if let Some(prev) = last_at[s.director] {
            out.max_gap = out.max_gap.max(s.at - prev);
        }
        last_at[s.director] = Some(s.at);
        state[s.director] = Some(&s.state);
        let both = state.iter().all(|st| *st == Some("master"));
        match (both, since) {
            (true, None) => {
                since = Some(s.at);
                out.stretches += 1;
            }
            (false, Some(t)) => {
                out.longest = out.longest.max(s.at - t);
                since = None;
            }
            _ => {}
        }
    }
    if let (Some(t), Some(end)) = (since, samples.last()) {
        out.longest = out.longest.max(end.at - t);
    }
    out
}

/// `(director, state, from)` runs of `samples`: each change of a
/// director's state, for messages.
pub fn transitions(samples: &[Sample], t0: Instant) -> String {
    let mut last: BTreeMap<usize, String> = BTreeMap::new();
    let mut out = String::new();
    for s in samples {
        if last.get(&s.director) != Some(&s.state) {
            let _ = writeln!(
                out,
                "  +{:>6} ms  dir{} {}",
                s.at.saturating_duration_since(t0).as_millis(),
                s.director + 1,
                s.state
            );
            last.insert(s.director, s.state.clone());
        }
    }
    out
}

// ------------------------------------------------------------ sniffer

/// Something the sniffer saw on the client's segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A VRRP datagram (IP protocol / next header 112); `ttl` is IPv6's
    /// hop limit.
    Advert {
        src: IpAddr,
        ttl: u8,
        vrid: u8,
        priority: u8,
    },
    /// A gratuitous ARP (sender IP = target IP).
    Garp { ip: Ipv4Addr, mac: [u8; 6] },
    /// An unsolicited neighbour advertisement (to ff02::1, Override set),
    /// and the MAC of its target link-layer address option: what a
    /// neighbour that follows it will send to.
    UnsolicitedNa { ip: Ipv6Addr, mac: [u8; 6] },
    /// A TCP segment with RST, and the MAC it came from.
    Reset {
        src: SocketAddr,
        dst: SocketAddr,
        mac: [u8; 6],
    },
}

/// Timestamps VRRP adverts, gratuitous ARPs, unsolicited neighbour
/// advertisements and TCP resets arriving at an interface
/// (an `AF_PACKET` socket created in its namespace), on a thread of its
/// own, until dropped; bounded by `max`.
pub struct Sniffer {
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<(Instant, Seen)>>>,
    thread: Option<JoinHandle<()>>,
}

impl Sniffer {
    pub fn start(ns: &Netns, ifname: &str, max: Duration) -> Result<Sniffer> {
        let name = std::ffi::CString::new(ifname)?;
        let fd = ns.run_in(|| -> Result<OwnedFd> {
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain syscalls; the fd is owned right away.
            unsafe {
                let fd = libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    i32::from(proto),
                );
                if fd < 0 {
                    bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
                }
                let fd = OwnedFd::from_raw_fd(fd);
                let index = libc::if_nametoindex(name.as_ptr());
                if index == 0 {
                    bail!("no interface {name:?}");
                }
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = proto;
                sll.sll_ifindex = index as i32;
                if libc::bind(
                    fd.as_raw_fd(),
                    (&raw const sll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                ) != 0
                {
                    bail!("bind AF_PACKET: {}", std::io::Error::last_os_error());
                }
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 20_000,
                };
                if libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw const tv).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                ) != 0
                {
                    bail!("SO_RCVTIMEO: {}", std::io::Error::last_os_error());
                }
                Ok(fd)
            }
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let deadline = Instant::now() + max;
        let thread = {
            let (stop, events) = (stop.clone(), events.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                    let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                    // SAFETY: buffers of the sizes given, valid for the call.
                    let n = unsafe {
                        libc::recvfrom(
                            fd.as_raw_fd(),
                            buf.as_mut_ptr().cast(),
                            buf.len(),
                            0,
                            (&raw mut sll).cast(),
                            &mut len,
                        )
                    };
                    let at = Instant::now();
                    if n <= 0 {
                        continue;
                    }
                    if sll.sll_pkttype == libc::PACKET_OUTGOING {
                        continue;
                    }
                    if let Some(seen) = parse_frame(&buf[..n as usize]) {
                        events.lock().unwrap().push((at, seen));
                    }
                }
            })
        };
        Ok(Sniffer {
            stop,
            events,
            thread: Some(thread),
        })
    }

    /// Everything seen so far, in order.
    pub fn events(&self) -> Vec<(Instant, Seen)> {
        self.events.lock().unwrap().clone()
    }

    /// The last advert from `src` seen at or before `before`.
    pub fn last_advert_from(&self, src: impl Into<IpAddr>, before: Instant) -> Option<Instant> {
        let src = src.into();
        self.events()
            .iter()
            .rev()
            .find(|(at, s)| *at <= before && matches!(s, Seen::Advert { src: a, .. } if *a == src))
            .map(|(at, _)| *at)
    }

    /// The first event matching `f` at or after `after`.
    pub fn first_after(&self, after: Instant, f: impl Fn(&Seen) -> bool) -> Option<Instant> {
        self.events()
            .iter()
            .find(|(at, s)| *at >= after && f(s))
            .map(|(at, _)| *at)
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn parse_frame(f: &[u8]) -> Option<Seen> {
    if f.len() < 14 {
        return None;
    }
    let ethertype = u16::from_be_bytes([f[12], f[13]]);
    let p = &f[14..];
    match ethertype {
        0x0800 if p.len() >= 20 && p[9] == 112 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let msg = p.get(ihl..)?;
            if msg.len() < 3 {
                return None;
            }
            Some(Seen::Advert {
                src: Ipv4Addr::new(p[12], p[13], p[14], p[15]).into(),
                ttl: p[8],
                vrid: msg[1],
                priority: msg[2],
            })
        }
        0x0800 if p.len() >= 20 && p[9] == 6 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
            let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
            reset(p.get(ihl..)?, src.into(), dst.into(), f)
        }
        // IPv6 without extension headers: all the lab sends.
        0x86dd if p.len() >= 40 => {
            let (next, hop_limit) = (p[6], p[7]);
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).expect("16 bytes"));
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).expect("16 bytes"));
            let l4 = &p[40..];
            match next {
                112 if l4.len() >= 3 => Some(Seen::Advert {
                    src: src.into(),
                    ttl: hop_limit,
                    vrid: l4[1],
                    priority: l4[2],
                }),
                6 => reset(l4, src.into(), dst.into(), f),
                // Type 136; flags R S O in the top bits; the target, then
                // options of (type, length in 8 bytes, data).
                58 if l4.len() >= 24 && l4[0] == 136 => {
                    let (solicited, overriding) = (l4[4] & 0x40 != 0, l4[4] & 0x20 != 0);
                    if solicited || !overriding || !dst.is_multicast() {
                        return None;
                    }
                    let target = Ipv6Addr::from(<[u8; 16]>::try_from(&l4[8..24]).expect("16 bytes"));
                    let mut opts = &l4[24..];
                    while opts.len() >= 8 && opts[1] > 0 {
                        let len = usize::from(opts[1]) * 8;
                        if opts[0] == 2 {
                            return Some(Seen::UnsolicitedNa {
                                ip: target,
                                mac: opts[2..8].try_into().expect("6 bytes"),
                            });
                        }
                        opts = opts.get(len..)?;
                    }
                    None
                }
                _ => None,
            }
        }
        0x0806 if p.len() >= 28 => {
            let (spa, tpa) = (&p[14..18], &p[24..28]);
            (spa == tpa).then(|| Seen::Garp {
                ip: Ipv4Addr::new(spa[0], spa[1], spa[2], spa[3]),
                mac: p[8..14].try_into().expect("6 bytes"),
            })
        }
        _ => None,
    }
}

/// A [`Seen::Reset`] if `tcp` (from `src` to `dst`, in `frame`) has RST.
fn reset(tcp: &[u8], src: IpAddr, dst: IpAddr, frame: &[u8]) -> Option<Seen> {
    let tcp = tcp.get(..14)?;
    (tcp[13] & 0x04 != 0).then(|| Seen::Reset {
        src: SocketAddr::new(src, u16::from_be_bytes([tcp[0], tcp[1]])),
        dst: SocketAddr::new(dst, u16::from_be_bytes([tcp[2], tcp[3]])),
        mac: frame[6..12].try_into().expect("6 bytes"),
    })
}

/// Formats a MAC as `ip` prints it.
pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

// ----------------------------------------------------------- injection

/// Sends `datagram` (a whole IPv4 datagram: our header, TTL and all; the
/// kernel fills in the header checksum and id) from namespace `ns` out of
/// `dev` to `dst`.
pub fn inject_ipv4(ns: &Netns, dev: &str, dst: Ipv4Addr, datagram: &[u8]) -> Result<()> {
    let dev = dev.to_string();
    ns.run_in(|| -> Result<()> {
        // SAFETY: plain syscalls on an fd owned right away; buffers valid
        // for each call.
        unsafe {
            let fd = libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_RAW,
            );
            if fd < 0 {
                bail!("raw socket: {}", std::io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            if libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                dev.as_ptr().cast(),
                dev.len() as u32,
            ) != 0
            {
                bail!("SO_BINDTODEVICE {dev}: {}", std::io::Error::last_os_error());
            }
            let mut sin: libc::sockaddr_in = std::mem::zeroed();
            sin.sin_family = libc::AF_INET as u16;
            sin.sin_addr.s_addr = u32::from_ne_bytes(dst.octets());
            let n = libc::sendto(
                fd.as_raw_fd(),
                datagram.as_ptr().cast(),
                datagram.len(),
                0,
                (&raw const sin).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            );
            if n < 0 {
                bail!("sendto {dst}: {}", std::io::Error::last_os_error());
            }
        }
        Ok(())
    })?
}

// ------------------------------------------------------------ traffic

/// One HTTP GET (Connection: close) on a connection that must be set up
/// within `connect_timeout`; the answer within 1 s. Call from inside the
/// client namespace (e.g. in [`Netns::run_in`]).
fn get_once(addr: SocketAddr, connect_timeout: Duration) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, connect_timeout)?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.set_write_timeout(Some(Duration::from_secs(1)))?;
    let _ = s.set_nodelay(true);
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 || Instant::now() > deadline || buf.len() > 64 * 1024 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no complete response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("unexpected response {head:?}");
    }
    Ok(body.trim().to_string())
}

/// From `ns`, tries a new connection to `addr` every `every` (each attempt
/// may take `every`) until one answers, up to `timeout`; returns when the
/// answer came and which real gave it, and how many attempts failed.
pub fn connect_until_ok(
    ns: &Netns,
    addr: impl Into<SocketAddr>,
    every: Duration,
    timeout: Duration,
) -> Result<(Instant, String, usize)> {
    let addr = addr.into();
    ns.run_in(|| -> Result<(Instant, String, usize)> {
        let start = Instant::now();
        let max_attempts = (timeout.as_millis() / every.as_millis().max(1)) as usize + 1;
        let mut last_err = String::new();
        for attempt in 0..max_attempts {
            if crate::traffic::stopped() || start.elapsed() > timeout {
                break;
            }
            let t0 = Instant::now();
            match get_once(addr, every) {
                Ok(name) => return Ok((Instant::now(), name, attempt)),
                Err(e) => last_err = format!("{e:#}"),
            }
            if let Some(rest) = every.checked_sub(t0.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        bail!("no connection to {addr} answered within {timeout:?} (last error: {last_err})")
    })?
}

/// `n` new connections from `ns` to `addr` (each may take 1 s); returns
/// the count per real, failures under `!` keys.
pub fn tally(ns: &Netns, addr: impl Into<SocketAddr>, n: usize) -> Result<BTreeMap<String, usize>> {
    let addr = addr.into();
    ns.run_in(|| {
        let mut out = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        for _ in 0..n {
            if Instant::now() > deadline || crate::traffic::stopped() {
                *out.entry("!deadline".to_string()).or_default() += 1;
                break;
            }
            let k = match get_once(addr, Duration::from_secs(1)) {
                Ok(name) => name,
                Err(e) => format!("!{e:#}"),
            };
            *out.entry(k).or_default() += 1;
        }
        out
    })
}

/// What one request of a [`Stream`] got.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub at: Instant,
    pub took: Duration,
    /// The real's name, or the error.
    pub result: std::result::Result<String, String>,
}

/// A keep-alive HTTP connection doing a request every `period` on a
/// thread of its own, until stopped or the first error; bounded by `max`.
pub struct Stream {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Exchange>>>,
    thread: Option<JoinHandle<()>>,
    pub local: SocketAddr,
}

impl Stream {
    pub fn start(mut ka: KeepAlive, period: Duration, max: Duration) -> Result<Stream> {
        let local = ka.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let deadline = Instant::now() + max;
        let thread = {
            let (stop, log) = (stop.clone(), log.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed)
                    && Instant::now() < deadline
                    && !crate::traffic::stopped()
                {
                    let at = Instant::now();
                    let result = ka.request().map_err(|e| format!("{e:#}"));
                    let failed = result.is_err();
                    log.lock().unwrap().push(Exchange {
                        at,
                        took: at.elapsed(),
                        result,
                    });
                    if failed {
                        break;
                    }
                    if let Some(rest) = period.checked_sub(at.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
            })
        };
        Ok(Stream {
            stop,
            log,
            thread: Some(thread),
            local,
        })
    }

    /// The exchanges so far.
    pub fn log(&self) -> Vec<Exchange> {
        self.log.lock().unwrap().clone()
    }

    /// Whether the thread has ended (an error, or the bound).
    pub fn ended(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops and returns the whole log.
    pub fn finish(mut self) -> Vec<Exchange> {
        self.stop_thread();
        self.log()
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

// ---------------------------------------------------------- keepalived

/// The keepalived binary, if installed.
pub fn keepalived_bin() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join("keepalived"))
        .find(|p| p.is_file())
}

/// keepalived (VRRP only) in a lab namespace: `keepalived -n -l -D -P -f
/// CONF -p PID -r VRRP_PID`, its log in a temp dir. Dropping it sends
/// SIGTERM to the PID we started (SIGKILL after 5 s) and, should its VRRP
/// child outlive it, SIGKILL to that child's PID (read from the pid file
/// and checked to be a keepalived with our config).
pub struct Keepalived {
    proc: Option<Proc>,
    log: PathBuf,
    conf: PathBuf,
    vrrp_pid: PathBuf,
    _dir: TempDir,
}

/// A keepalived instance for the pair: `interface ext`, version 3, the
/// pair's VRID, `addresses` as `virtual_ipaddress` lines.
pub fn keepalived_config(priority: u8, advert_ms: u32, addresses: &[&str]) -> String {
    let vips: String = addresses.iter().map(|a| format!("    {a}\n")).collect();
    format!(
        "global_defs {{\n  router_id xlvs_pair\n  vrrp_version 3\n  enable_script_security\n}}\n\
         vrrp_instance VI_1 {{\n  state BACKUP\n  interface ext\n  virtual_router_id {VRID}\n  priority {priority}\n  \
         advert_int {}\n  virtual_ipaddress {{\n{vips}  }}\n}}\n",
        f64::from(advert_ms) / 1000.0
    )
}

impl Keepalived {
    pub fn start(ns: &Netns, config: &str) -> Result<Keepalived> {
        let bin = keepalived_bin()
            .context("keepalived is not installed (cargo xtask setup installs it)")?;
        let dir = TempDir::new(&format!("{}-keepalived", ns.name()))?;
        let conf = dir.path().join("keepalived.conf");
        std::fs::write(&conf, config)?;
        let log = dir.path().join("keepalived.log");
        let out = std::fs::File::create(&log)?;
        let vrrp_pid = dir.path().join("vrrp.pid");
        let mut cmd = ns.command(&bin);
        cmd.args(["-n", "-l", "-D", "-P", "-f"])
            .arg(&conf)
            .arg("-p")
            .arg(dir.path().join("keepalived.pid"))
            .arg("-r")
            .arg(&vrrp_pid)
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out));
        let proc = Proc::spawn(&format!("keepalived (in {})", ns.name()), cmd)?;
        Ok(Keepalived {
            proc: Some(proc),
            log,
            conf,
            vrrp_pid,
            _dir: dir,
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails with the log if keepalived has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(p) = self.proc.as_mut()
            && let Some(st) = p.try_wait()?
        {
            bail!("keepalived exited ({st}):\n{}", self.log());
        }
        Ok(())
    }

    /// Sends SIGTERM (keepalived resigns with a priority-0 advert) to the
    /// PID we started, without waiting; [`Keepalived::stop`] waits.
    pub fn terminate(&mut self) -> Result<()> {
        let p = self.proc.as_mut().context("keepalived already stopped")?;
        if p.try_wait()?.is_some() {
            bail!("keepalived has exited:\n{}", self.log());
        }
        // SAFETY: plain syscall on the PID of our unreaped child.
        if unsafe { libc::kill(p.pid() as libc::pid_t, libc::SIGTERM) } != 0 {
            bail!("kill keepalived: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIGTERM (keepalived resigns with a priority-0 advert) and wait.
    pub fn stop(&mut self) -> Result<()> {
        let child = self.child_pid();
        if let Some(mut p) = self.proc.take() {
            p.stop()?;
        }
        self.reap_child(child);
        Ok(())
    }

    /// The VRRP child's PID, if its pid file names a live keepalived
    /// process started with our config.
    fn child_pid(&self) -> Option<libc::pid_t> {
        let pid: libc::pid_t = std::fs::read_to_string(&self.vrrp_pid)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        (cmdline.contains("keepalived") && cmdline.contains(&*self.conf.to_string_lossy()))
            .then_some(pid)
    }

    fn reap_child(&self, before: Option<libc::pid_t>) {
        let Some(pid) = before else { return };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if self.child_pid() != Some(pid) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.child_pid() == Some(pid) {
            eprintln!("warning: keepalived's VRRP child {pid} outlived its parent; killing it");
            // SAFETY: plain syscall; the PID was just checked to be the
            // keepalived child started with our config.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        if self.proc.is_some() {
            if std::thread::panicking() {
                eprintln!("---- keepalived log ----\n{}", self.log());
            }
            let _ = self.stop();
        }
    }
}

// -------------------------------------------------------------- bench

/// Merges `fields` into `target/bench/failover.json` (created if needed).
pub fn record_bench(fields: &[(&str, serde_json::Value)]) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
            tests.parent().unwrap_or(tests).join("target")
        });
    let dir = target.join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("failover.json");
    let mut obj = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&t).ok())
        .unwrap_or_default();
    for (k, v) in fields {
        obj.insert(k.to_string(), v.clone());
    }
    let text = serde_json::to_string_pretty(&obj)? + "\n";
    let tmp = dir.join("failover.json.new");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}
