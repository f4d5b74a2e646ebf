//! `bench`: what xlvs costs, in four parts (see the Method sections it
//! writes into BENCHMARKS.md). Needs root. `cargo xtask bench` runs it in
//! full:
//!
//! 1. per-packet cost of the data plane under BPF_PROG_TEST_RUN;
//! 2. (`mpps`) packets per second through veth with live frames;
//! 3. (`http`) HTTP through xlvs side by side with no balancer, nftables
//!    and HAProxy (needs wrk, nginx, haproxy and nft, which `cargo xtask
//!    bench` installs);
//! 4. (`scale`) 1M flows, the maps' memory, the cost of a weight change.
//!
//! `--quick` is CI's smoke run: parts 1, 2 and 4 at a small size, none of
//! the tools of part 3, and only target/bench/results.json is written.
//! `--only packets,mpps,http,scale` picks parts, and `--http-seconds N`,
//! `--http-rounds N`, `--mpps-seconds N` shorten them; such runs write
//! target/bench/BENCHMARKS.partial.md instead of BENCHMARKS.md.

mod empty_prog;
mod http;
mod lab;
mod mpps;
mod raw;
mod report;
mod scale;
mod sched_flows;
mod sections;
mod syscount;
// The fixture harness: the benchmark sets up its maps and checks its output
// exactly as the packet fixtures do.
#[path = "../../tests/tests/support/mod.rs"]
mod support;

use std::{
    cell::RefCell,
    path::{Path, PathBuf},
    rc::Rc,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use lb_common::{
    IPPROTO_TCP, IPPROTO_UDP, MAX_REALS_PER_SERVICE, PROG_CONNECT, PROG_DECAP, PROG_FRAGMENT, PROG_ICMP, PROG_DIRECTOR, PROG_DIRECTOR6, PROG_SCHEDULERS,
    Real, sched::Scheduler,
};

use crate::{
    empty_prog::EmptyProg,
    report::{Figures, Machine, Report, Verified},
    sched_flows::SchedFlows,
    support::*,
};

/// The parts of the benchmark.
const PARTS: [&str; 4] = ["packets", "mpps", "http", "scale"];

pub struct Settings {
    runs: usize,
    packets: usize,
    quick: bool,
    /// Parts to run, from `PARTS`.
    parts: Vec<&'static str>,
    http_seconds: u32,
    http_rounds: usize,
    mpps_seconds: f64,
    /// Part 1's cases whose names contain one of these (all when empty).
    cases: Vec<String>,
    /// Whether anything was shortened or left out (BENCHMARKS.md is then
    /// left alone).
    partial: bool,
}

impl Settings {
    fn from_args() -> Result<Self> {
        let mut quick = false;
        let mut parts: Option<Vec<&'static str>> = None;
        let mut http_seconds = None;
        let mut http_rounds = None;
        let mut mpps_seconds = None;
        let mut cases = Vec::new();
        let mut args = std::env::args().skip(1);
        let usage = "usage: bench [--quick] [--only packets,mpps,http,scale] \
                     [--cases NAME,..] [--http-seconds N] [--http-rounds N] [--mpps-seconds N]";
        while let Some(arg) = args.next() {
            let mut value = |what: &str| {
                args.next()
                    .with_context(|| format!("{what} needs a value ({usage})"))
            };
            match arg.as_str() {
                "--quick" => quick = true,
                "--only" => {
                    let list = value("--only")?;
                    let mut picked = Vec::new();
                    for name in list.split(',') {
                        let part = PARTS
                            .iter()
                            .find(|p| **p == name.trim())
                            .with_context(|| format!("unknown part {name:?} ({usage})"))?;
                        picked.push(*part);
                    }
                    parts = Some(picked);
                }
                "--cases" => {
                    cases = value("--cases")?.split(',').map(|c| c.trim().to_owned()).collect();
                }
                "--http-seconds" => http_seconds = Some(value("--http-seconds")?.parse()?),
                "--http-rounds" => http_rounds = Some(value("--http-rounds")?.parse()?),
                "--mpps-seconds" => mpps_seconds = Some(value("--mpps-seconds")?.parse()?),
                other => bail!("unknown argument {other:?} ({usage})"),
            }
        }
        let partial = quick
            || parts.is_some()
            || !cases.is_empty()
            || http_seconds.is_some()
            || http_rounds.is_some()
            || mpps_seconds.is_some();
        let parts = parts.unwrap_or_else(|| {
            if quick {
                vec!["packets", "mpps", "scale"]
            } else {
                PARTS.to_vec()
            }
        });
        Ok(Self {
            runs: if quick { 1 } else { 5 },
            packets: if quick { 2_000 } else { 100_000 },
            quick,
            parts,
            http_seconds: http_seconds.unwrap_or(8),
            http_rounds: http_rounds.unwrap_or(3),
            mpps_seconds: mpps_seconds.unwrap_or(if quick { 0.2 } else { 2.0 }),
            cases,
            partial,
        })
    }

    fn has(&self, part: &str) -> bool {
        self.parts.contains(&part)
    }
}

extern "C" fn on_signal(_sig: libc::c_int) {
    // Only an atomic store: async-signal-safe. Loops check it and unwind,
    // so that every namespace and process is cleaned up.
    tests::traffic::STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Fails once SIGINT/SIGTERM arrived.
pub fn check_stop() -> Result<()> {
    if tests::traffic::stopped() {
        bail!("interrupted");
    }
    Ok(())
}

/// One benchmark: runs a packet, checks its verdict and output, and returns
/// the kernel-measured time.
trait Case {
    fn packet(&mut self) -> Duration;
    /// Before each run, untimed.
    fn reset(&mut self) {}
}

/// Panics unless a call did exactly what was expected: a benchmark of a
/// wrong path is worse than none.
fn check(what: &str, got: (u32, &[u8]), action: u32, output: &[u8]) {
    assert!(
        got.0 == action && got.1 == output,
        "{what}: got {} with {} bytes, expected {} with {} bytes{}",
        action_name(got.0),
        got.1.len(),
        action_name(action),
        output.len(),
        if got.1 == output {
            ""
        } else {
            " (bytes differ)"
        }
    );
}

/// The same packet on every call through the director.
struct Steady {
    what: &'static str,
    lb: Lb,
    input: Vec<u8>,
    action: u32,
    expected: Vec<u8>,
    out: Vec<u8>,
}

impl Steady {
    fn new(what: &'static str, lb: Lb, input: &Pkt, action: u32, expected: Vec<u8>) -> Self {
        let input = input.frame();
        let out = vec![0; input.len() + 64];
        Self {
            what,
            lb,
            input,
            action,
            expected,
            out,
        }
    }
}

impl Case for Steady {
    fn packet(&mut self) -> Duration {
        let (action, len, time) = self.lb.run_into(PROG_DIRECTOR, &self.input, &mut self.out);
        check(
            self.what,
            (action, &self.out[..len]),
            self.action,
            &self.expected,
        );
        time
    }
}

/// The empty program, with the NAT benchmark's packet.
struct Empty {
    prog: EmptyProg,
    input: Vec<u8>,
    out: Vec<u8>,
}

impl Case for Empty {
    fn packet(&mut self) -> Duration {
        let (action, len, time) = self
            .prog
            .run_into(&self.input, &mut self.out)
            .expect("BPF_PROG_TEST_RUN, empty program");
        check(
            "empty program",
            (action, &self.out[..len]),
            XDP_PASS,
            &self.input,
        );
        time
    }
}

/// A director with VIP:80/TCP served by `real`, and one flow already open
/// from CLIENT:40000.
fn director_with_flow(real: Real) -> Lb {
    let mut lb = Lb::new();
    let service = lb.add_service(VIP, HTTP, IPPROTO_TCP);
    lb.add_real(service, real);
    let (action, _) = lb.run(&Pkt::tcp(40000, HTTP, SYN).frame());
    assert_eq!(action_name(action), "XDP_TX", "the flow's SYN is forwarded");
    lb
}

/// A client's data segment on the open flow.
fn data() -> Pkt {
    Pkt::tcp(40000, HTTP, ACK | PSH)
}

fn nat(what: &'static str) -> Steady {
    let lb = director_with_flow(nat_real(REAL1, REAL_HTTP));
    let want = nat_to(&data(), REAL1, REAL_HTTP).frame();
    Steady::new(what, lb, &data(), XDP_TX, want)
}

fn dr(what: &'static str) -> Steady {
    let lb = director_with_flow(dr_real(REAL1, HTTP));
    let want = data().macs(DIRECTOR_REAL_MAC, real_mac(REAL1)).frame();
    Steady::new(what, lb, &data(), XDP_TX, want)
}

fn tun(what: &'static str) -> Steady {
    let lb = director_with_flow(tun_real(REAL1, HTTP));
    let want = data().tunnelled(DIRECTOR_IP, REAL1, DIRECTOR_REAL_MAC, real_mac(REAL1));
    Steady::new(what, lb, &data(), XDP_TX, want)
}

fn nat_reply(what: &'static str) -> Steady {
    let lb = director_with_flow(nat_real(REAL1, REAL_HTTP));
    let reply = from_real(REAL1, REAL_HTTP, 40000, ACK | PSH)
        .with(|p| p.payload = b"HTTP/1.1 200 OK\r\n\r\n".to_vec());
    let want = back_to_client(&reply, HTTP).frame();
    Steady::new(what, lb, &reply, XDP_TX, want)
}

fn udp_nat(what: &'static str) -> Steady {
    let mut lb = Lb::new();
    let service = lb.add_service(VIP, DNS, IPPROTO_UDP);
    lb.add_real(service, nat_real(REAL1, REAL_DNS));
    let query = Pkt::udp(33000, DNS);
    let want = nat_to(&query, REAL1, REAL_DNS).frame();
    // The first datagram opens the flow; the timed ones follow it.
    assert_eq!(
        action_name(lb.run(&query.frame()).0),
        "XDP_TX",
        "the first datagram is forwarded"
    );
    Steady::new(what, lb, &query, XDP_TX, want)
}

fn pass(what: &'static str) -> Steady {
    let lb = director_with_flow(nat_real(REAL1, REAL_HTTP));
    let other = data().to(NOT_A_VIP, HTTP);
    Steady::new(what, lb, &other, XDP_PASS, other.frame())
}

fn empty() -> Result<Empty> {
    let prog = EmptyProg::load().context("loading the empty XDP program (needs root)")?;
    let input = data().frame();
    let out = vec![0; input.len() + 64];
    Ok(Empty { prog, input, out })
}

/// The established-path benchmarks, in table order: name in results.json,
/// and what the table calls it. The empty program comes first: the others'
/// net figure subtracts its median.
const PATHS: [(&str, &str); 7] = [
    ("empty", "empty XDP program (baseline)"),
    ("nat", "NAT, established flow"),
    ("dr", "DR, established flow"),
    ("tun", "TUN, established flow"),
    ("nat_reply", "NAT reply (real → client)"),
    ("udp_nat", "UDP NAT, established flow"),
    ("pass", "not for a VIP (XDP_PASS)"),
];

/// Real counts of the new-connection benchmarks: a small service, a large
/// one, and the most one service may have.
const SYN_REALS: [u64; 3] = [8, 64, MAX_REALS_PER_SERVICE as u64];

/// Every benchmark: the paths, then a new connection for each scheduler at
/// each real count (`syn_<scheduler>_<reals>`).
fn cases() -> Vec<(&'static str, &'static str)> {
    let mut cases = PATHS.to_vec();
    for sched in Scheduler::ALL {
        for n in SYN_REALS {
            let name = format!("syn_{sched}_{n}");
            let what = format!("new connection (NAT SYN), {sched} over {n} reals");
            cases.push((
                Box::leak(name.into_boxed_str()),
                Box::leak(what.into_boxed_str()),
            ));
        }
    }
    cases
}

/// The shared data plane of the new-connection benchmarks, one service
/// per benchmark.
struct Shared {
    lb: Rc<RefCell<Lb>>,
    services: u8,
}

fn build(name: &str, what: &'static str, shared: &mut Shared) -> Result<Box<dyn Case>> {
    if let Some(rest) = name.strip_prefix("syn_") {
        let (sched, n) = rest.split_once('_').expect("syn_<scheduler>_<reals>");
        let sched = sched.parse::<Scheduler>().expect("a scheduler name");
        let n = n.parse().expect("a real count");
        shared.services += 1;
        return Ok(Box::new(SchedFlows::new(
            what,
            Rc::clone(&shared.lb),
            shared.services,
            sched,
            n,
        )));
    }
    Ok(match name {
        "empty" => Box::new(empty()?),
        "nat" => Box::new(nat(what)),
        "dr" => Box::new(dr(what)),
        "tun" => Box::new(tun(what)),
        "nat_reply" => Box::new(nat_reply(what)),
        "udp_nat" => Box::new(udp_nat(what)),
        "pass" => Box::new(pass(what)),
        _ => unreachable!("{name} is not a benchmark"),
    })
}

/// What the verifier processed for each program of a loaded director: the
/// kernel's `verified_insns` (its limit is 1,000,000 per program).
fn verified(lb: &Lb) -> Result<Vec<Verified>> {
    let names = [PROG_DIRECTOR]
        .into_iter()
        .chain(PROG_SCHEDULERS.iter().map(|(_, name)| *name))
        .chain([PROG_DIRECTOR6, PROG_CONNECT, PROG_ICMP, PROG_FRAGMENT, PROG_DECAP]);
    names
        .map(|program| {
            let info = lb
                .program(program)
                .info()
                .with_context(|| format!("{program}: program info"))?;
            Ok(Verified {
                program,
                instructions: info.verified_instruction_count(),
            })
        })
        .collect()
}

/// One untimed run, then `settings.runs` timed ones; returns each timed
/// run's mean. The untimed run is a full one so that every timed run starts
/// from the same state: a connection table that has been filled and emptied
/// (a never-used table has measured faster than one that has been in use,
/// which is what a director runs on).
fn measure(name: &str, case: &mut dyn Case, settings: &Settings) -> Vec<f64> {
    case.reset();
    for _ in 0..settings.packets {
        case.packet();
    }
    (1..=settings.runs)
        .map(|run| {
            case.reset();
            let started = Instant::now();
            let total: Duration = (0..settings.packets).map(|_| case.packet()).sum();
            let mean = total.as_nanos() as f64 / settings.packets as f64;
            println!(
                "  {name:<14} run {run}/{}: {mean:7.1} ns/packet ({:.1} s)",
                settings.runs,
                started.elapsed().as_secs_f64()
            );
            mean
        })
        .collect()
}

fn workspace_dirs() -> (PathBuf, PathBuf) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_owned();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), PathBuf::from);
    (workspace, target)
}

fn main() -> Result<()> {
    let settings = Settings::from_args()?;
    install_signal_handlers();
    let started = Instant::now();
    println!(
        "bench: parts {}{}",
        settings.parts.join(", "),
        if settings.partial {
            " (BENCHMARKS.md is left alone)"
        } else {
            ""
        }
    );
    // A run killed with SIGKILL leaves its namespaces behind; its pid is in
    // their names, so they can be told from those of a live run.
    for name in tests::netns::remove_stale_labs().unwrap_or_default() {
        println!("removed the leftover {name}");
    }

    let mut figures = Vec::new();
    let mut verifier = Vec::new();
    if settings.has("packets") {
        println!(
            "\n== 1. per packet, BPF_PROG_TEST_RUN: {} run(s) of {} packets per path",
            settings.runs, settings.packets
        );
        // The new-connection benchmarks share one data plane; it also tells
        // what the verifier processed.
        let mut shared = Shared {
            lb: Rc::new(RefCell::new(Lb::new())),
            services: 0,
        };
        verifier = verified(&shared.lb.borrow())?;
        let picked = |name: &str| {
            // The empty program is every figure's baseline.
            name == "empty" || settings.cases.is_empty() || settings.cases.iter().any(|c| name.contains(c.as_str()))
        };
        for (name, what) in cases().into_iter().filter(|(name, _)| picked(name)) {
            check_stop()?;
            println!("{what}");
            // The others are built right before they run, so that at most one
            // more eBPF instance (and its connection table) is alive at a time.
            let mut case = build(name, what, &mut shared)?;
            let runs = measure(name, case.as_mut(), &settings);
            figures.push(Figures { name, what, runs });
        }
    }
    let mpps = if settings.has("mpps") {
        println!("\n== 2. packets per second through veth (live frames)");
        Some(mpps::run(&mpps::Settings {
            runs: if settings.quick { 1 } else { 3 },
            seconds: settings.mpps_seconds,
            flows: if settings.quick {
                vec![1_000]
            } else {
                vec![1_000, 65_000]
            },
            min_frames: if settings.quick { 20_000 } else { 200_000 },
        })?)
    } else {
        None
    };
    let scale = if settings.has("scale") {
        println!("\n== 4. scale: 1M flows, map memory, weight changes");
        Some(scale::run(&settings)?)
    } else {
        None
    };
    let http = if settings.has("http") {
        println!("\n== 3. HTTP side by side (wrk, nginx)");
        Some(http::run(&http::Settings {
            seconds: settings.http_seconds,
            rounds: settings.http_rounds,
        })?)
    } else {
        None
    };

    let baseline = figures.first().map_or(f64::NAN, Figures::median);
    let machine = Machine::probe();
    let report = Report {
        machine: &machine,
        figures: &figures,
        verifier: &verifier,
        baseline,
        runs: settings.runs,
        packets: settings.packets,
        quick: settings.quick,
        partial: settings.partial,
        mpps: mpps.as_ref(),
        http: http.as_ref(),
        scale: scale.as_ref(),
    };
    println!(
        "\n{}",
        report
            .markdown()
            .split("\n## Method")
            .next()
            .unwrap_or_default()
    );
    let (workspace, target) = workspace_dirs();
    report
        .write(&workspace, &target)
        .context("writing the results")?;
    println!("bench: done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
