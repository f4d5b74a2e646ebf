//! Section 2: packets per second through veth, with the real `xlvs run` on
//! the director.
//!
//! ```text
//!   gen ns                 dir ns (xlvs run, XDP on ext and int)      sink ns
//!   gen0 ───── veth ────── ext            int ───── veth ──────────── eth0 (10.0.1.11-13)
//!   gen1 ───── veth ───────────────────────────────────────────────── eth1
//! ```
//!
//! A hand-written XDP generator (`raw::generator`) runs in live-frame mode
//! with `gen0` as its ingress, so that every frame it makes crosses the veth
//! pair into `ext`, where the director's XDP program forwards it (NAT, DR or
//! TUN) out of `int`; the sink's XDP program on `eth0` counts what arrives
//! and drops it. `gen1`→`eth1` is the same without a director: what the
//! generator, veth and the sink cost by themselves.
//!
//! The generator's thread is pinned to one CPU; the director's and the
//! sink's NAPI polls run in softirq on that same CPU, in the generator's
//! context or in that CPU's ksoftirqd, so the CPU time of the two (from
//! `/proc/.../schedstat`) is the whole cost of the packets.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use etherparse::{EtherType, Ethernet2Header, IpNumber, Ipv4Header, TcpHeader};
use tests::{
    netns::{Netns, unique_prefix},
    topology::{REAL_IPS, VIP_DR, VIP_NAT, VIP_TUN},
    xlvs::{Forward, Service, Xlvs, render_config},
};

use crate::{
    lab::{self, median},
    raw::{self, Counters, GEN_COPY_AT, GEN_FRAME_LEN, GEN_HEADERS, GEN_PARAMS_AT, Link, Prog},
};

pub struct Settings {
    pub runs: usize,
    /// Target length of a timed run.
    pub seconds: f64,
    pub flows: Vec<u32>,
    /// Frames of the calibration run, and the least a timed run sends.
    pub min_frames: u32,
}

/// One timed run.
#[derive(Clone, Debug)]
pub struct Run {
    pub sent: u64,
    pub delivered: u64,
    pub wall_s: f64,
    /// CPU time of the generator's thread and of its CPU's ksoftirqd.
    pub cpu_s: f64,
    /// The kernel's mean time per frame for the test run.
    pub kernel_ns: u32,
}

impl Run {
    pub fn mpps(&self) -> f64 {
        self.delivered as f64 / self.wall_s / 1e6
    }
    pub fn mpps_per_core(&self) -> f64 {
        self.delivered as f64 / self.cpu_s / 1e6
    }
}

pub struct Row {
    /// `baseline`, `nat`, `dr` or `tun`.
    pub path: &'static str,
    pub what: &'static str,
    pub flows: u32,
    pub runs: Vec<Run>,
}

impl Row {
    pub fn mpps(&self) -> f64 {
        median(&self.runs.iter().map(Run::mpps).collect::<Vec<_>>())
    }
    pub fn mpps_per_core(&self) -> f64 {
        median(&self.runs.iter().map(Run::mpps_per_core).collect::<Vec<_>>())
    }
    /// Delivered over sent, all runs together.
    pub fn delivered(&self) -> f64 {
        let sent: u64 = self.runs.iter().map(|r| r.sent).sum();
        let got: u64 = self.runs.iter().map(|r| r.delivered).sum();
        got as f64 / sent.max(1) as f64
    }
}

pub struct Report {
    pub rows: Vec<Row>,
    pub cpu: usize,
    pub batch: u32,
    pub runs: usize,
    pub seconds: f64,
}

/// Live-mode batch: the kernel's default, NAPI's budget.
const BATCH: u32 = 64;
const SPORT: u16 = 40000;
const CLIENT_BASE: [u8; 4] = [100, 64, 0, 1];
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// The namespaces and what runs in them. Field order is drop order: the
/// director and the sink's XDP links go before the namespaces.
struct VethLab {
    xlvs: Option<Xlvs>,
    sink_link: Option<Link>,
    _base_link: Option<Link>,
    source: Netns,
    dir: Netns,
    sink: Netns,
}

fn host(name: &str) -> Result<Netns> {
    let ns = Netns::create(name)?;
    ns.sysctl(&[
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ])?;
    Ok(ns)
}

fn method_vip(path: &str) -> ([u8; 4], Forward) {
    let parse = |s: &str| -> [u8; 4] {
        s.parse::<std::net::Ipv4Addr>()
            .expect("an address")
            .octets()
    };
    match path {
        "nat" => (parse(VIP_NAT), Forward::Nat),
        "dr" => (parse(VIP_DR), Forward::Dr),
        "tun" => (parse(VIP_TUN), Forward::Tun),
        _ => unreachable!("{path} is not a method"),
    }
}

/// A generator frame: the packet of flow 0, then (past the IPv4 packet) a
/// copy of its headers and the flow count.
fn template(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    dst: [u8; 4],
    dport: u16,
    flags: u8,
    nflows: u32,
) -> Vec<u8> {
    let mut ip = Ipv4Header::new(20, 64, IpNumber::TCP, CLIENT_BASE, dst).expect("an IPv4 header");
    ip.identification = 0xffff;
    ip.dont_fragment = true;
    ip.header_checksum = ip.calc_header_checksum();
    let mut tcp = TcpHeader::new(SPORT, dport, 0x0102_0304, 0xffff);
    tcp.syn = flags & SYN != 0;
    tcp.ack = flags & ACK != 0;
    if tcp.ack {
        tcp.acknowledgment_number = 0x0a0b_0c0d;
    }
    tcp.checksum = tcp.calc_checksum_ipv4(&ip, &[]).expect("TCP checksum");
    let mut frame = Ethernet2Header {
        source: src_mac,
        destination: dst_mac,
        ether_type: EtherType::IPV4,
    }
    .to_bytes()
    .to_vec();
    ip.write(&mut frame).expect("IPv4 header");
    tcp.write(&mut frame).expect("TCP header");
    assert_eq!(frame.len(), GEN_HEADERS);
    let head = frame.clone();
    assert_eq!(frame.len(), GEN_COPY_AT);
    frame.extend_from_slice(&head);
    assert_eq!(frame.len(), GEN_PARAMS_AT);
    frame.extend_from_slice(&nflows.to_le_bytes());
    frame.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(frame.len(), GEN_FRAME_LEN);
    frame
}

/// Whether every checksum of an IPv4 packet (and of the inner one of
/// IP-in-IP) is right.
fn checksums_ok(bytes: &[u8]) -> bool {
    let Ok((ip, _)) = Ipv4Header::from_slice(bytes) else {
        return false;
    };
    if ip.header_checksum != ip.calc_header_checksum() {
        return false;
    }
    let end = usize::from(ip.total_len);
    if end > bytes.len() {
        return false;
    }
    let body = &bytes[ip.header_len()..end];
    match ip.protocol {
        IpNumber::TCP => TcpHeader::from_slice(body).is_ok_and(|(tcp, data)| {
            tcp.calc_checksum_ipv4(&ip, data)
                .is_ok_and(|c| c == tcp.checksum)
        }),
        IpNumber::IPV4 => checksums_ok(body),
        _ => false,
    }
}

/// Checks a frame the sink captured: rewritten as `path` says, every
/// checksum right.
fn check_frame(path: &str, frame: &[u8], sink_mac: [u8; 6], dir_mac: [u8; 6]) -> Result<()> {
    let (eth, ip_bytes) = Ethernet2Header::from_slice(frame).context("an Ethernet header")?;
    ensure!(eth.destination == sink_mac, "to the real's MAC");
    ensure!(eth.source == dir_mac, "from the director's MAC on int");
    ensure!(checksums_ok(ip_bytes), "every checksum right");
    let (ip, rest) = Ipv4Header::from_slice(ip_bytes).context("an IPv4 header")?;
    let reals: Vec<[u8; 4]> = REAL_IPS
        .iter()
        .map(|r| {
            r.parse::<std::net::Ipv4Addr>()
                .expect("an address")
                .octets()
        })
        .collect();
    let (vip, _) = method_vip(path);
    let (inner, l4) = if path == "tun" {
        ensure!(ip.protocol == IpNumber::IPV4, "IP-in-IP");
        ensure!(ip.source == [10, 0, 1, 1], "outer source the director's");
        ensure!(reals.contains(&ip.destination), "outer destination a real");
        let (inner, l4) = Ipv4Header::from_slice(rest).context("an inner IPv4 header")?;
        (inner, l4)
    } else {
        (ip, rest)
    };
    ensure!(inner.source[..2] == [100, 64], "from a generated client");
    let (tcp, _) = TcpHeader::from_slice(l4).context("a TCP header")?;
    ensure!(tcp.source_port == SPORT, "client port kept");
    match path {
        "nat" => {
            ensure!(reals.contains(&inner.destination), "NAT: to a real");
            ensure!(tcp.destination_port == 8080, "NAT: to the real's port");
            ensure!(inner.time_to_live == 63, "NAT: TTL decremented");
        }
        _ => {
            ensure!(inner.destination == vip, "to the VIP");
            ensure!(tcp.destination_port == 80, "to the VIP's port");
        }
    }
    Ok(())
}

/// An AF_PACKET socket on `ifname` in `ns`, to look at what arrives.
fn capture(ns: &Netns, ifname: &str) -> Result<OwnedFd> {
    let ifindex = lab::ifindex_in(ns, ifname)?;
    ns.run_in(move || -> io::Result<OwnedFd> {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket calls on a descriptor we own.
        unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex as i32;
            if libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&sll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 200_000,
            };
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::from_ref(&tv).cast(),
                size_of::<libc::timeval>() as u32,
            );
            Ok(fd)
        }
    })?
    .context("AF_PACKET socket")
}

/// Up to `want` IPv4 frames addressed to `mac`, for at most 2 s.
fn captured(fd: &OwnedFd, want: usize, mac: [u8; 6]) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut frames = Vec::new();
    let mut buf = vec![0u8; 2048];
    while frames.len() < want && Instant::now() < deadline {
        // SAFETY: recv into a buffer we own, of the length we pass.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            continue;
        }
        let f = &buf[..n as usize];
        if f.len() >= 34 && f[..6] == mac && f[12..14] == [0x08, 0x00] {
            frames.push(f.to_vec());
        }
    }
    frames
}

impl VethLab {
    fn build() -> Result<Self> {
        let prefix = unique_prefix();
        let source = host(&format!("{prefix}-gen"))?;
        let dir = host(&format!("{prefix}-dir"))?;
        let sink = host(&format!("{prefix}-sink"))?;
        let mut lab = Self {
            xlvs: None,
            sink_link: None,
            _base_link: None,
            source,
            dir,
            sink,
        };
        lab.wire()?;
        Ok(lab)
    }

    fn wire(&mut self) -> Result<()> {
        let (source, dir, sink) = (&self.source, &self.dir, &self.sink);
        source.ip(&[
            "link",
            "add",
            "gen0",
            "type",
            "veth",
            "peer",
            "name",
            "ext",
            "netns",
            dir.name(),
        ])?;
        dir.ip(&[
            "link",
            "add",
            "int",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            sink.name(),
        ])?;
        source.ip(&[
            "link",
            "add",
            "gen1",
            "type",
            "veth",
            "peer",
            "name",
            "eth1",
            "netns",
            sink.name(),
        ])?;
        source.ip(&["addr", "add", "10.1.0.2/24", "dev", "gen0"])?;
        dir.ip(&["addr", "add", "10.1.0.1/24", "dev", "ext"])?;
        dir.ip(&["addr", "add", "10.0.1.1/24", "dev", "int"])?;
        for real in REAL_IPS {
            sink.ip(&["addr", "add", &format!("{real}/24"), "dev", "eth0"])?;
        }
        for (ns, ifs) in [
            (source, &["gen0", "gen1"][..]),
            (dir, &["ext", "int"]),
            (sink, &["eth0", "eth1"]),
        ] {
            for i in ifs {
                ns.ip(&["link", "set", i, "up"])?;
            }
        }
        // Without an XDP program, a veth takes redirected frames only in
        // NAPI mode, which GRO turns on.
        for i in ["eth0", "eth1"] {
            sink.exec(&["ethtool", "-K", i, "gro", "on"])?;
        }
        let sink_mac = lab::mac_string(lab::mac_in(sink, "eth0")?);
        for real in REAL_IPS {
            dir.ip(&[
                "neigh",
                "replace",
                real,
                "lladdr",
                &sink_mac,
                "dev",
                "int",
                "nud",
                "permanent",
            ])?;
        }
        Ok(())
    }

    fn start_director(&mut self) -> Result<()> {
        let services = [
            Service::rr("tcp", &format!("{VIP_NAT}:80"), Forward::Nat, 8080),
            Service::rr("tcp", &format!("{VIP_DR}:80"), Forward::Dr, 80),
            Service::rr("tcp", &format!("{VIP_TUN}:80"), Forward::Tun, 80),
        ];
        // Room for every flow of every method (NAT takes two entries).
        let config = render_config(&["ext", "int"], &services).replacen(
            "[director]\n",
            "[director]\nconn_table_size = 1048576\n",
            1,
        );
        self.xlvs =
            Some(Xlvs::start(&self.dir, &config, &["ext", "int"]).context("starting xlvs run")?);
        Ok(())
    }
}

/// What the generator sends: its program, the frame it starts from, the
/// interface the frames enter at (in the generator's namespace), the CPU
/// it runs on.
struct Traffic<'a> {
    prog: &'a Prog,
    frame: &'a [u8],
    ifindex: u32,
    cpu: usize,
}

/// Runs the generator inside `source`: `repeat` frames. With `sink`, the
/// sink's counter slot to read.
fn drive(
    source: &Netns,
    t: &Traffic<'_>,
    repeat: u32,
    sink: Option<(&Counters, u32)>,
) -> Result<Run> {
    let (prog, frame, ifindex, cpu) = (t.prog, t.frame, t.ifindex, t.cpu);
    source.run_in(|| -> Result<Run> {
        lab::pin_to(cpu)?;
        let ksoftirqd = lab::kthread_pid(&format!("ksoftirqd/{cpu}"));
        let ksoft = || ksoftirqd.and_then(lab::process_cpu_ns).unwrap_or(0);
        let count = || sink.map_or(Ok(0), |(c, slot)| c.get(slot));
        let before = count()?;
        let (k0, t0, w0) = (ksoft(), lab::thread_cpu_ns(), Instant::now());
        let kernel_ns = prog.run_live(frame, ifindex, repeat, BATCH)?;
        let wall = w0.elapsed();
        let t1 = lab::thread_cpu_ns();
        // Whatever NAPI left to ksoftirqd finishes right after.
        std::thread::sleep(Duration::from_millis(30));
        let k1 = ksoft();
        let delivered = count()? - before;
        Ok(Run {
            sent: u64::from(repeat),
            delivered,
            wall_s: wall.as_secs_f64(),
            cpu_s: ((t1 - t0) + (k1 - k0)) as f64 / 1e9,
            kernel_ns,
        })
    })?
}

/// One row: a calibration run, then `runs` timed runs of about
/// `seconds` each.
fn measure(
    lab: &VethLab,
    t: &Traffic<'_>,
    sink: (&Counters, u32),
    s: &Settings,
    label: &str,
) -> Result<Vec<Run>> {
    let calib = drive(&lab.source, t, s.min_frames, Some(sink))?;
    let rate = calib.sent as f64 / calib.wall_s.max(1e-6);
    let repeat = ((rate * s.seconds) as u64).clamp(u64::from(s.min_frames), 50_000_000) as u32;
    let mut runs = Vec::new();
    for i in 1..=s.runs {
        crate::check_stop()?;
        let run = drive(&lab.source, t, repeat, Some(sink))?;
        println!(
            "  {label:<22} run {i}/{}: {:.3} Mpps, {:.3} Mpps per core, {:.1} % delivered ({} frames, {:.2} s)",
            s.runs,
            run.mpps(),
            run.mpps_per_core(),
            run.delivered as f64 * 100.0 / run.sent as f64,
            run.sent,
            run.wall_s
        );
        runs.push(run);
    }
    Ok(runs)
}

pub fn run(s: &Settings) -> Result<Report> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let cpu = cpus - 1;
    let mut lab = VethLab::build()?;
    lab.start_director()?;
    let counters = Counters::new(256)?;
    let sink_prog = raw::sink(&counters)?;
    let gen_counter = Counters::new(1)?;
    let gen_prog = raw::generator(&gen_counter)?;

    let gen_mac = lab::mac_in(&lab.source, "gen0")?;
    let ext_mac = lab::mac_in(&lab.dir, "ext")?;
    let int_mac = lab::mac_in(&lab.dir, "int")?;
    let sink_mac = lab::mac_in(&lab.sink, "eth0")?;
    let gen0 = lab::ifindex_in(&lab.source, "gen0")?;
    let gen1 = lab::ifindex_in(&lab.source, "gen1")?;
    let eth0 = lab::ifindex_in(&lab.sink, "eth0")?;
    let eth1 = lab::ifindex_in(&lab.sink, "eth1")?;
    let max_flows = s.flows.iter().copied().max().unwrap_or(1024);

    let mut rows = Vec::new();
    // The generator and veth alone.
    {
        let link = lab.sink.run_in(|| sink_prog.attach(eth1))??;
        lab._base_link = Some(link);
        let gen1_mac = lab::mac_in(&lab.source, "gen1")?;
        let eth1_mac = lab::mac_in(&lab.sink, "eth1")?;
        let frame = template(gen1_mac, eth1_mac, method_vip("nat").0, 80, ACK, max_flows);
        println!("generator → veth → sink, no director, {max_flows} flows");
        let t = Traffic {
            prog: &gen_prog,
            frame: &frame,
            ifindex: gen1,
            cpu,
        };
        let runs = measure(&lab, &t, (&counters, 6), s, "baseline")?;
        rows.push(Row {
            path: "baseline",
            what: "generator → veth → sink (no director)",
            flows: max_flows,
            runs,
        });
        lab._base_link = None;
    }
    for (path, what) in [("nat", "xlvs NAT"), ("dr", "xlvs DR"), ("tun", "xlvs TUN")] {
        let (vip, _) = method_vip(path);
        let proto = if path == "tun" { 4 } else { 6 };
        for &flows in &s.flows {
            println!("{what}, {flows} flows");
            // Open the flows (SYN), then bring them to ESTABLISHED with one
            // ACK each while the sink's kernel takes them, so that what
            // arrives can be looked at.
            lab.sink_link = None;
            let syn = template(gen_mac, ext_mac, vip, 80, SYN, flows);
            let to_dir = |frame| Traffic {
                prog: &gen_prog,
                frame,
                ifindex: gen0,
                cpu,
            };
            drive(&lab.source, &to_dir(&syn), flows, None)?;
            let sock = capture(&lab.sink, "eth0")?;
            let ack = template(gen_mac, ext_mac, vip, 80, ACK, flows);
            drive(&lab.source, &to_dir(&ack), flows, None)?;
            let frames = captured(&sock, 16, sink_mac);
            drop(sock);
            if frames.is_empty() {
                bail!("{what}: nothing reached the sink (is the director forwarding?)");
            }
            for f in &frames {
                check_frame(path, f, sink_mac, int_mac).with_context(|| {
                    format!(
                        "{what}: a forwarded frame is wrong: {:02x?}",
                        &f[..f.len().min(80)]
                    )
                })?;
            }
            lab.sink_link = Some(lab.sink.run_in(|| sink_prog.attach(eth0))??);
            let runs = measure(
                &lab,
                &to_dir(&ack),
                (&counters, proto),
                s,
                &format!("{path} {flows} flows"),
            )?;
            rows.push(Row {
                path,
                what,
                flows,
                runs,
            });
        }
    }
    if let Some(x) = lab.xlvs.as_mut() {
        x.check_running()?;
    }
    Ok(Report {
        rows,
        cpu,
        batch: BATCH,
        runs: s.runs,
        seconds: s.seconds,
    })
}
