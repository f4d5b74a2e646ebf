//! Section 3: HTTP through xlvs side by side with what operators use
//! instead, in one lab and one run.
//!
//! The lab is `tests::topology`'s (client, director, three reals on two
//! bridges) with nginx on the reals, and wrk on the client (2 threads, 64
//! connections, for a fixed time). Cases: no balancer at all (routed by
//! the director, three nginx workers on real1), nftables DNAT (`numgen inc
//! mod 3`), HAProxy (`mode tcp`, roundrobin), xlvs NAT, DR and TUN (rr).
//! The balanced cases have one nginx worker on each real.
//!
//! DR and TUN replies leave the reals straight for the client, over a leg
//! the client has on the reals' segment (policy routing by the VIP as the
//! source), as they would through a router in front of a real director;
//! everything else comes back through the director.
//!
//! The director's CPU: GRO is on for its two interfaces, and their NAPI
//! runs threaded (`/sys/class/net/IF/threaded`), so that all its receive
//! work (XDP, or the kernel's forwarding, conntrack and TCP) runs in two
//! kernel threads of its own; the bridge ports facing it are threaded too,
//! so that what it sends is handed over rather than carried on to the
//! reals' stacks in its threads. Its CPU time is those two threads' plus
//! that of every process in its namespace (HAProxy, `xlvs run`), from
//! `/proc/.../schedstat`.

use std::{
    collections::HashMap,
    fs::File,
    io::Read as _,
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use tests::{
    netns::{Netns, Proc, TempDir},
    topology::{CLIENT_IP, DIRECTOR_EXT_IP, REAL_IPS, Segment, Topology, VIP_DR, VIP_NAT, VIP_TUN},
    traffic,
    xlvs::{self, Forward, Service, Xlvs},
};

use crate::{check_stop, lab};

pub struct Settings {
    pub seconds: u32,
    pub rounds: usize,
}

/// The cases, in table order: name, what the table calls it.
pub const CASES: [(&str, &str); 6] = [
    ("none", "no balancer (routed; 3 nginx workers on one real)"),
    ("nft", "nftables DNAT, `numgen inc mod 3`"),
    ("haproxy", "HAProxy, `mode tcp`, roundrobin"),
    ("nat", "xlvs NAT (rr)"),
    ("dr", "xlvs DR (rr)"),
    ("tun", "xlvs TUN (rr)"),
];
pub const MODES: [(&str, &str); 2] = [("keepalive", "keep-alive"), ("close", "Connection: close")];
pub const THREADS: u32 = 2;
pub const CONNECTIONS: u32 = 64;

/// One wrk run.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    /// Socket errors, timeouts and non-2xx answers.
    pub errors: u64,
    pub director_cpu_s: f64,
    /// The director's NAPI threads' part of it.
    pub director_napi_s: f64,
    /// xlvs's data-plane reason counters over the run (xlvs cases), those
    /// that moved.
    pub xdp_counters: std::collections::BTreeMap<String, u64>,
}

impl Sample {
    pub fn cpu_per_100k(&self) -> f64 {
        self.director_cpu_s / self.requests.max(1) as f64 * 1e5
    }
}

pub struct Cell {
    pub case: &'static str,
    pub mode: &'static str,
    pub samples: Vec<Sample>,
}

impl Cell {
    fn of(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        lab::median(&self.samples.iter().map(f).collect::<Vec<_>>())
    }
    pub fn rps(&self) -> f64 {
        self.of(|s| s.rps)
    }
    pub fn p50(&self) -> f64 {
        self.of(|s| s.p50_ms)
    }
    pub fn p99(&self) -> f64 {
        self.of(|s| s.p99_ms)
    }
    pub fn cpu(&self) -> f64 {
        self.of(Sample::cpu_per_100k)
    }
    pub fn errors(&self) -> u64 {
        self.samples.iter().map(|s| s.errors).sum()
    }
}

pub struct Report {
    pub cells: Vec<Cell>,
    pub seconds: u32,
    pub rounds: usize,
    pub versions: Vec<(String, String)>,
}

impl Report {
    pub fn cell(&self, case: &str, mode: &str) -> Option<&Cell> {
        self.cells.iter().find(|c| c.case == case && c.mode == mode)
    }
}

/// nginx on a real, stopped (and its workers checked gone) on drop.
struct Nginx {
    proc: Option<Proc>,
    workers: Vec<(u32, String)>,
    _dir: TempDir,
}

/// A process's start time, to tell it from a later one with its PID.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22, counted after the parenthesised name.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)
        .map(str::to_owned)
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

impl Drop for Nginx {
    fn drop(&mut self) {
        drop(self.proc.take());
        // The master takes its workers with it; one that outlived a master
        // killed by force would be ours still (same PID, same start time).
        for (pid, started) in &self.workers {
            if start_time(*pid).as_ref() == Some(started) {
                // SAFETY: a plain kill of a process we started.
                unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}

/// Waits until something accepts TCP on `addr` from inside `ns`.
fn wait_listening(ns: &Netns, addr: &str, what: &str) -> Result<()> {
    let a: SocketAddr = addr.parse()?;
    lab::poll(what, Duration::from_secs(10), || {
        ns.run_in(move || TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok())
            .ok()
            .and_then(|ok| ok.then_some(()))
    })
}

fn start_nginx(
    ns: &Netns,
    prefix: &str,
    name: &str,
    workers: u32,
    ports: &[u16],
    body: &str,
) -> Result<Nginx> {
    let dir = TempDir::new(&format!("{prefix}-nginx-{name}"))?;
    let d = dir.path().display().to_string();
    let listen: String = ports
        .iter()
        .map(|p| format!("        listen {p} reuseport backlog=4096;\n"))
        .collect();
    let conf = format!(
        "worker_processes {workers};\n\
         daemon off;\n\
         master_process on;\n\
         user nobody nogroup;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         worker_rlimit_nofile 65536;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n\
             access_log off;\n\
             default_type text/plain;\n\
             keepalive_timeout 75s;\n\
             keepalive_requests 1000000;\n\
             client_body_temp_path {d}/client_body;\n\
             proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n\
             server {{\n{listen}\
                 location / {{ return 200 \"{body}\\n\"; }}\n\
             }}\n\
         }}\n"
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let mut cmd = ns.command("nginx");
    cmd.args(["-p", &d, "-e", &format!("{d}/error.log"), "-c"])
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::from(File::create(dir.path().join("stderr.log"))?));
    let proc = Proc::spawn(&format!("nginx {name} (in {})", ns.name()), cmd)?
        .with_stderr_log(dir.path().join("stderr.log"));
    let mut n = Nginx {
        proc: Some(proc),
        workers: Vec::new(),
        _dir: dir,
    };
    let master = n.proc.as_ref().map_or(0, Proc::pid);
    for &port in ports {
        wait_listening(
            ns,
            &format!("127.0.0.1:{port}"),
            &format!("nginx {name} on port {port}"),
        )
        .with_context(|| {
            let log = std::fs::read_to_string(Path::new(&d).join("error.log")).unwrap_or_default();
            format!("nginx error log:\n{log}")
        })?;
    }
    let workers_of = lab::poll("nginx's workers", Duration::from_secs(5), || {
        let c = children(master);
        (c.len() == workers as usize).then_some(c)
    })?;
    n.workers = workers_of
        .into_iter()
        .filter_map(|pid| Some((pid, start_time(pid)?)))
        .collect();
    Ok(n)
}

/// HAProxy in the director namespace, in the foreground.
fn start_haproxy(topo: &Topology, dir: &TempDir) -> Result<Proc> {
    let servers: String = REAL_IPS
        .iter()
        .enumerate()
        .map(|(i, ip)| format!("    server r{} {ip}:8080\n", i + 1))
        .collect();
    let conf = format!(
        "global\n    maxconn 4000\n\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\n\
         frontend fe\n    bind {DIRECTOR_EXT_IP}:80\n    default_backend be\n\n\
         backend be\n    balance roundrobin\n{servers}"
    );
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, conf)?;
    let log = dir.path().join("haproxy.stderr");
    let mut cmd = topo.director().command("haproxy");
    cmd.arg("-db").arg("-f").arg(&path);
    cmd.stdout(Stdio::null())
        .stderr(Stdio::from(File::create(&log)?));
    let mut proc =
        Proc::spawn(&format!("haproxy (in {})", topo.director().name()), cmd)?.with_stderr_log(log);
    if let Err(e) = wait_listening(topo.director(), &format!("{DIRECTOR_EXT_IP}:80"), "haproxy") {
        proc.check_running()?;
        return Err(e.context(format!("haproxy's stderr:\n{}", proc.stderr_text())));
    }
    Ok(proc)
}

/// The nftables table of the DNAT case; deleted on drop.
struct Nft<'a> {
    ns: &'a Netns,
}

const NFT_TABLE: &str = "xlvs_bench";

impl<'a> Nft<'a> {
    fn load(ns: &'a Netns, dir: &TempDir) -> Result<Self> {
        let reals: Vec<String> = REAL_IPS
            .iter()
            .enumerate()
            .map(|(i, ip)| format!("{i} : {ip}"))
            .collect();
        let rules = format!(
            "table ip {NFT_TABLE} {{\n\
               chain prerouting {{\n\
                 type nat hook prerouting priority dstnat; policy accept;\n\
                 ip daddr {VIP_NAT} tcp dport 80 dnat to numgen inc mod 3 map {{ {} }} : 8080\n\
               }}\n\
             }}\n",
            reals.join(", ")
        );
        let path = dir.path().join("dnat.nft");
        std::fs::write(&path, rules)?;
        ns.exec(&["nft", "-f", &path.display().to_string()])?;
        Ok(Self { ns })
    }
}

impl Drop for Nft<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.ns.exec(&["nft", "delete", "table", "ip", NFT_TABLE]) {
            eprintln!("warning: deleting the nftables table: {e:#}");
        }
    }
}

/// What a wrk run printed.
fn parse_wrk(text: &str) -> Result<Sample> {
    let ms = |v: &str| -> Option<f64> {
        let v = v.trim();
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = num.parse().ok()?;
        Some(match unit {
            "us" => n / 1e3,
            "ms" => n,
            "s" => n * 1e3,
            "m" => n * 60e3,
            _ => return None,
        })
    };
    let mut s = Sample::default();
    let (mut p50, mut p99, mut rps, mut requests) = (None, None, None, None);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => p50 = ms(v),
            ["99%", v] => p99 = ms(v),
            ["Requests/sec:", v] => rps = v.parse().ok(),
            [n, "requests", "in", ..] => requests = n.parse().ok(),
            ["Socket", "errors:", rest @ ..] => {
                s.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => s.errors += n.parse::<u64>().unwrap_or(0),
            _ => {}
        }
    }
    s.p50_ms = p50.context("wrk printed no 50% latency")?;
    s.p99_ms = p99.context("wrk printed no 99% latency")?;
    s.rps = rps.context("wrk printed no Requests/sec")?;
    s.requests = requests.context("wrk printed no request count")?;
    Ok(s)
}

/// Runs wrk from the client against `target` for `seconds`.
fn wrk(topo: &Topology, dir: &TempDir, target: &str, close: bool, seconds: u32) -> Result<String> {
    let out_path = dir.path().join("wrk.out");
    let mut cmd = topo.client().command("wrk");
    cmd.args([
        format!("-t{THREADS}"),
        format!("-c{CONNECTIONS}"),
        format!("-d{seconds}s"),
        "--timeout".into(),
        "5s".into(),
        "--latency".into(),
    ]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(format!("http://{target}/"));
    cmd.stdout(Stdio::from(File::create(&out_path)?))
        .stderr(Stdio::null());
    let mut proc = Proc::spawn(&format!("wrk (in {})", topo.client().name()), cmd)?;
    let deadline = Instant::now() + Duration::from_secs(u64::from(seconds) + 20);
    loop {
        if let Some(status) = proc.try_wait()? {
            ensure!(status.success(), "wrk failed: {status}");
            break;
        }
        if Instant::now() > deadline {
            bail!("wrk did not finish within {seconds} s + 20 s");
        }
        if traffic::stopped() {
            bail!("interrupted");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut text = String::new();
    File::open(&out_path)?.read_to_string(&mut text)?;
    Ok(text)
}

/// The director's CPU so far: its NAPI threads and its processes, in ns
/// by task.
fn director_cpu(topo: &Topology, napi: &[u32]) -> HashMap<(u32, Option<String>), u64> {
    let mut m = HashMap::new();
    for &pid in napi {
        m.insert(
            (pid, start_time(pid)),
            lab::process_cpu_ns(pid).unwrap_or(0),
        );
    }
    for pid in lab::pids_in_netns(topo.director()) {
        if let Some(ns) = lab::process_cpu_ns(pid) {
            m.insert((pid, start_time(pid)), ns);
        }
    }
    m
}

fn cpu_delta(
    before: &HashMap<(u32, Option<String>), u64>,
    after: &HashMap<(u32, Option<String>), u64>,
) -> f64 {
    // A task that started during the run counts from 0; one that ended
    // is lost (none should: the run starts after every process is up).
    after
        .iter()
        .map(|(k, &a)| a.saturating_sub(before.get(k).copied().unwrap_or(0)))
        .sum::<u64>() as f64
        / 1e9
}

/// Makes the NAPI of `ifname` in namespace `ns` threaded; returns the PID
/// of its kernel thread (named `napi/IFNAME-ID`).
fn threaded_napi(ns: &Netns, ifname: &str) -> Result<u32> {
    let prefix = format!("napi/{ifname}-");
    let before = lab::kthreads_named(&prefix);
    // `ip netns exec` mounts the namespace's own /sys.
    tests::netns::run_checked(std::process::Command::new("ip").args([
        "netns",
        "exec",
        ns.name(),
        "sh",
        "-c",
        &format!("echo 1 > /sys/class/net/{ifname}/threaded"),
    ]))?;
    lab::poll(
        &format!("the NAPI thread of {ifname}"),
        Duration::from_secs(5),
        || {
            let new: Vec<u32> = lab::kthreads_named(&prefix)
                .into_keys()
                .filter(|p| !before.contains_key(p))
                .collect();
            (new.len() == 1).then(|| new[0])
        },
    )
}

/// The lab of this section.
/// Field order is drop order: the servers stop before the namespaces go.
struct Lab {
    _nginx: Vec<Nginx>,
    /// The director's two NAPI threads.
    napi: Vec<u32>,
    dir: TempDir,
    topo: Topology,
}

fn build_lab() -> Result<Lab> {
    let mut topo = Topology::build()?;
    let dir = TempDir::new(&format!("{}-bench", topo.prefix()))?;
    // The client's leg on the reals' segment, for the DR and TUN replies.
    let client = topo.client().name().to_string();
    topo.connect(&client, Segment::Int, "eth1", "10.1.0.3/32")?;
    topo.client().sysctl(&[
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.default.rp_filter=0",
        "net.ipv4.conf.eth0.rp_filter=0",
        "net.ipv4.conf.eth1.rp_filter=0",
    ])?;
    let eth1_mac = lab::mac_string(lab::mac_in(topo.client(), "eth1")?);
    // The leg only receives, so the bridge would never learn where its MAC
    // is and would flood every reply to the whole segment, the director
    // included.
    let eth1_port = topo
        .port_of(&client, "eth1")
        .context("the client's eth1 port")?
        .port
        .clone();
    topo.switch().exec(&[
        "bridge", "fdb", "replace", &eth1_mac, "dev", &eth1_port, "master", "static",
    ])?;
    for real in topo.reals() {
        for vip in [VIP_DR, VIP_TUN] {
            real.ns.ip(&["rule", "add", "from", vip, "table", "100"])?;
        }
        real.ns.ip(&[
            "route",
            "add",
            &format!("{CLIENT_IP}/32"),
            "dev",
            "eth0",
            "table",
            "100",
        ])?;
        real.ns.ip(&[
            "neigh",
            "replace",
            CLIENT_IP,
            "lladdr",
            &eth1_mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])?;
    }
    // The director's receive work in threads of its own.
    let dir_name = topo.director().name().to_string();
    let mut napi = Vec::new();
    for ifname in topo.director_interfaces() {
        topo.director()
            .exec(&["ethtool", "-K", ifname, "gro", "on"])?;
        napi.push(threaded_napi(topo.director(), ifname)?);
        let port = topo
            .port_of(&dir_name, ifname)
            .context("the director's bridge port")?
            .port
            .clone();
        threaded_napi(topo.switch(), &port)?;
        // A veth hands a packet to its peer's NAPI only if the packet cannot
        // be a TSO one (or XDP is attached), so without this the director's
        // forwarding would run in the sender's context.
        topo.switch()
            .exec(&["ethtool", "-K", &port, "tso", "off"])?;
    }
    let prefix = topo.prefix().to_string();
    let mut nginx = Vec::new();
    for (i, real) in topo.reals().iter().enumerate() {
        nginx.push(start_nginx(
            &real.ns,
            &prefix,
            &real.name,
            1,
            &[8080, 80],
            &real.name,
        )?);
        if i == 0 {
            // The ceiling's server: as many workers as the balanced cases
            // have in all.
            nginx.push(start_nginx(
                &real.ns,
                &prefix,
                "none",
                3,
                &[8081],
                &real.name,
            )?);
        }
    }
    Ok(Lab {
        _nginx: nginx,
        napi,
        dir,
        topo,
    })
}

fn target(case: &str) -> String {
    match case {
        "none" => format!("{}:8081", REAL_IPS[0]),
        "nft" | "nat" => format!("{VIP_NAT}:80"),
        "haproxy" => format!("{DIRECTOR_EXT_IP}:80"),
        "dr" => format!("{VIP_DR}:80"),
        "tun" => format!("{VIP_TUN}:80"),
        _ => unreachable!("{case}"),
    }
}

/// A few requests, before a case's first run: it answers, and every real
/// takes its share (the ceiling has one real).
fn probe(lab: &Lab, case: &str) -> Result<()> {
    let d = traffic::distribution(lab.topo.client(), &target(case), 6)?;
    let bad: Vec<&String> = d.keys().filter(|k| k.starts_with('!')).collect();
    ensure!(bad.is_empty(), "{case}: probe requests failed: {d:?}");
    let want = if case == "none" { 1 } else { 3 };
    ensure!(
        d.len() == want,
        "{case}: answered by {d:?}, expected {want} real(s)"
    );
    Ok(())
}

/// What runs while a case is measured: the director's balancer.
/// (Held for its drop: the table is deleted, HAProxy stopped.)
#[allow(dead_code, reason = "held only to be dropped at the end of the case")]
enum Balancer<'a> {
    None,
    Nft(Nft<'a>),
    Haproxy(Proc),
}

fn xdp_counters(x: Option<&Xlvs>) -> Result<std::collections::BTreeMap<String, u64>> {
    Ok(match x {
        Some(x) => x.list_json()?.counters,
        None => Default::default(),
    })
}

fn one_run(
    lab: &Lab,
    x: Option<&Xlvs>,
    case: &'static str,
    mode: &'static str,
    s: &Settings,
) -> Result<Sample> {
    check_stop()?;
    let close = mode == "close";
    let counters_before = xdp_counters(x)?;
    let before = director_cpu(&lab.topo, &lab.napi);
    let text = wrk(&lab.topo, &lab.dir, &target(case), close, s.seconds)?;
    let after = director_cpu(&lab.topo, &lab.napi);
    let counters_after = xdp_counters(x)?;
    let mut sample = parse_wrk(&text).with_context(|| format!("wrk's output:\n{text}"))?;
    sample.director_cpu_s = cpu_delta(&before, &after);
    let napi_only =
        |m: &HashMap<(u32, Option<String>), u64>| -> HashMap<(u32, Option<String>), u64> {
            m.iter()
                .filter(|(k, _)| lab.napi.contains(&k.0))
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        };
    sample.director_napi_s = cpu_delta(&napi_only(&before), &napi_only(&after));
    sample.xdp_counters = counters_after
        .iter()
        .map(|(k, &v)| {
            (
                k.clone(),
                v.saturating_sub(counters_before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect();
    println!(
        "  {case:<8} {mode:<9} {:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  director {:.3} CPU s/100k req{}",
        sample.rps,
        sample.p50_ms,
        sample.p99_ms,
        sample.cpu_per_100k(),
        if sample.xdp_counters.is_empty() && sample.errors == 0 {
            String::new()
        } else {
            format!(
                "  (NAPI {:.2} s of {:.2} s; XDP {:?})",
                sample.director_napi_s, sample.director_cpu_s, sample.xdp_counters
            )
        } + &if sample.errors > 0 {
            format!("  ({} errors)", sample.errors)
        } else {
            String::new()
        }
    );
    Ok(sample)
}

fn xlvs_config(topo: &Topology) -> String {
    let services = [
        Service::rr("tcp", &xlvs::nat_tcp_addr(), Forward::Nat, 8080),
        Service::rr("tcp", &xlvs::dr_tcp_addr(), Forward::Dr, 80),
        Service::rr("tcp", &xlvs::tun_tcp_addr(), Forward::Tun, 80),
    ];
    xlvs::render_config(&topo.director_interfaces(), &services)
}

fn tool_version(argv: &[&str]) -> String {
    std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines().next().unwrap_or("").trim().to_owned()
        })
        .unwrap_or_else(|_| "not found".into())
}

pub fn run(s: &Settings) -> Result<Report> {
    for tool in ["wrk", "nginx", "haproxy", "nft"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        ensure!(
            found,
            "{tool} is not installed (`cargo xtask bench` installs it with apt)"
        );
    }
    let versions = vec![
        ("wrk".to_owned(), tool_version(&["wrk", "-v"])),
        ("nginx".to_owned(), tool_version(&["nginx", "-v"])),
        ("HAProxy".to_owned(), tool_version(&["haproxy", "-v"])),
        ("nftables".to_owned(), tool_version(&["nft", "--version"])),
    ];
    let lab = build_lab()?;
    let mut cells: Vec<Cell> = MODES
        .iter()
        .flat_map(|(mode, _)| {
            CASES.iter().map(|(case, _)| Cell {
                case,
                mode,
                samples: Vec::new(),
            })
        })
        .collect();
    let mut probed: Vec<&str> = Vec::new();
    let others = ["none", "nft", "haproxy"];
    let ours = ["nat", "dr", "tun"];
    for round in 0..s.rounds {
        println!("round {}/{}", round + 1, s.rounds);
        let forward = round % 2 == 0;
        let order = |list: [&'static str; 3]| -> Vec<&'static str> {
            if forward {
                list.to_vec()
            } else {
                list.iter().rev().copied().collect()
            }
        };
        let modes: Vec<&'static str> = if forward {
            vec!["keepalive", "close"]
        } else {
            vec!["close", "keepalive"]
        };
        let run_others = |cells: &mut Vec<Cell>, probed: &mut Vec<&'static str>| -> Result<()> {
            for case in order(others) {
                let _balancer = match case {
                    "nft" => Balancer::Nft(Nft::load(lab.topo.director(), &lab.dir)?),
                    "haproxy" => Balancer::Haproxy(start_haproxy(&lab.topo, &lab.dir)?),
                    _ => Balancer::None,
                };
                if !probed.contains(&case) {
                    probe(&lab, case)?;
                    probed.push(case);
                }
                for &mode in &modes {
                    let sample = one_run(&lab, None, case, mode, s)?;
                    cell(cells, case, mode).samples.push(sample);
                }
            }
            Ok(())
        };
        let run_ours = |cells: &mut Vec<Cell>, probed: &mut Vec<&'static str>| -> Result<()> {
            let mut x = Xlvs::start(
                lab.topo.director(),
                &xlvs_config(&lab.topo),
                &lab.topo.director_interfaces(),
            )
            .context("starting xlvs run")?;
            for case in order(ours) {
                let _decaps = if case == "tun" {
                    xlvs::decap_all(&lab.topo)?
                } else {
                    Vec::new()
                };
                if !probed.contains(&case) {
                    probe(&lab, case)?;
                    probed.push(case);
                }
                for &mode in &modes {
                    let sample = one_run(&lab, Some(&x), case, mode, s)?;
                    cell(cells, case, mode).samples.push(sample);
                }
            }
            x.check_running()?;
            Ok(())
        };
        if forward {
            run_others(&mut cells, &mut probed)?;
            run_ours(&mut cells, &mut probed)?;
        } else {
            run_ours(&mut cells, &mut probed)?;
            run_others(&mut cells, &mut probed)?;
        }
    }
    drop(lab);
    Ok(Report {
        cells,
        seconds: s.seconds,
        rounds: s.rounds,
        versions,
    })
}

fn cell<'a>(cells: &'a mut [Cell], case: &str, mode: &str) -> &'a mut Cell {
    cells
        .iter_mut()
        .find(|c| c.case == case && c.mode == mode)
        .expect("every case and mode has a cell")
}
