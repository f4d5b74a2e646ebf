//! End-to-end tests of the controller (issue 5): health checks (quiescent or
//! not), the fallback server, quorum and notify hooks, autoreload / SIGHUP /
//! `xlvs reload`, runtime edits (`xlvs service|real add|edit|del`, `zero`),
//! `xlvs save` → `xlvs check` → `xlvs run` round trip, `xlvs
//! import-ldirectord`, and the Prometheus endpoint.
//!
//! Same lab as `tests/e2e.rs` (client, director, three reals, each test its
//! own uniquely named namespaces); `xlvs run` is the real binary. Run as
//! root, one test at a time:
//!
//! ```text
//! cargo build --release -p lb-user
//! cargo test --release -p tests --test controller -- --test-threads=1
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::netns::{Netns, TempDir, wait_for};
use tests::topology::{self, REAL_IPS, Topology};
use tests::traffic::{self, KeepAlive};
use tests::xlvs::{self, Xlvs};

// ------------------------------------------------------------------ lab

fn setup_env() {
    // The realserver binary of this very build.
    // SAFETY: tests run with --test-threads=1; set before any thread reads it.
    unsafe { std::env::set_var("REALSERVER_BIN", env!("CARGO_BIN_EXE_realserver")) };
}

/// A lab with a director running. Field order = drop order: xlvs first,
/// then the topology (realservers, namespaces), then the temp dir.
struct Lab {
    xlvs: Xlvs,
    topo: Topology,
    /// `/tmp/<prefix>-ctl`: hook output and files the test writes.
    tmp: TempDir,
}

/// Builds a lab: `prepare` may add hosts and start servers (the reals'
/// servers are started first, with `realserver_args`), then `config` is
/// rendered with the temp dir's path and `xlvs run` starts on it.
fn lab_with(
    realserver_args: &[&str],
    prepare: impl FnOnce(&mut Topology),
    config: impl FnOnce(&Topology, &Path) -> String,
) -> Lab {
    setup_env();
    let mut topo = Topology::build().expect("build topology");
    let tmp = TempDir::new(&format!("{}-ctl", topo.prefix())).expect("temp dir");
    topo.start_realservers_with(realserver_args)
        .expect("start realservers");
    prepare(&mut topo);
    let cfg = config(&topo, tmp.path());
    let xlvs = Xlvs::start_within(topo.director(), &cfg, &topo.director_interfaces(), START)
        .unwrap_or_else(|e| panic!("start xlvs run: {e:#}\nconfig:\n{cfg}"));
    Lab { xlvs, topo, tmp }
}

fn lab(config: impl FnOnce(&Topology, &Path) -> String) -> Lab {
    lab_with(&[], |_| {}, config)
}

const NAT_VIP: &str = "10.100.0.100:80";
const DR_VIP: &str = "10.100.0.101:80";
/// How long `xlvs run` may take to answer and attach: loading and
/// verifying the XDP programs took up to ~12 s on a busy 2-CPU machine,
/// close to the harness's default of 15 s.
const START: Duration = Duration::from_secs(40);
/// The extra host used as fallback (sorry) server, on the reals' segment.
const FALLBACK_IP: &str = "10.0.1.14";

fn director_header(autoreload: bool, extra: &str) -> String {
    format!("[director]\ninterfaces = [\"ext\", \"int\"]\nautoreload = {autoreload}\n{extra}\n")
}

/// A `[[virtual]]` section: `keys` go into the service table, `check` (if
/// not empty) is the `[virtual.check]` body, then the reals as
/// `(address, weight)`.
fn virtual_section(
    vip: &str,
    forward: &str,
    scheduler: &str,
    keys: &str,
    check: &str,
    reals: &[(String, u32)],
) -> String {
    let mut s = format!(
        "\n[[virtual]]\naddress = \"{vip}\"\nprotocol = \"tcp\"\nscheduler = \"{scheduler}\"\nforward = \"{forward}\"\n{keys}\n"
    );
    if !check.is_empty() {
        s.push_str(&format!("\n[virtual.check]\n{check}\n"));
    }
    for (addr, w) in reals {
        s.push_str(&format!(
            "\n[[virtual.real]]\naddress = \"{addr}\"\nweight = {w}\n"
        ));
    }
    s
}

fn reals_on(port: u16, weights: [u32; 3]) -> Vec<(String, u32)> {
    REAL_IPS
        .iter()
        .zip(weights)
        .map(|(ip, w)| (format!("{ip}:{port}"), w))
        .collect()
}

fn real_addr(i: usize, port: u16) -> String {
    format!("{}:{port}", REAL_IPS[i])
}

fn names(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn even(n: usize) -> BTreeMap<String, usize> {
    names(&[("real1", n), ("real2", n), ("real3", n)])
}

/// The fast http check of most tests: 0.3 s interval, 0.5 s timeout, one
/// failure takes a real down.
const FAST_HTTP_CHECK: &str = "type = \"http\"\ncheck_interval = 0.3\ncheck_timeout = 0.5\nfailure_count = 1\nrise = 1\nrequest = \"/\"";
const FAST_INTERVAL: Duration = Duration::from_millis(300);
const FAST_TIMEOUT: Duration = Duration::from_millis(500);
/// What a health change may take beyond interval + timeout (the event, the
/// map update, a `list` round trip, a loaded machine).
const SLACK: Duration = Duration::from_millis(1500);

// ----------------------------------------------------------- list views

/// The columns of real `addr`'s `->` line under service `TCP vip` of a
/// `list -n` layout, or `None` when the service has no such real. Panics
/// when the service itself is missing.
fn real_cols(text: &str, vip: &str, addr: &str) -> Option<Vec<String>> {
    let mut lines = text.lines().skip_while(|l| {
        let mut w = l.split_whitespace();
        !(w.next() == Some("TCP") && w.next() == Some(vip))
    });
    assert!(
        lines.next().is_some(),
        "no service TCP {vip} in `xlvs list`:\n{text}"
    );
    lines
        .take_while(|l| l.trim_start().starts_with("->"))
        .find(|l| l.split_whitespace().nth(1) == Some(addr))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
}

fn has_service(text: &str, vip: &str) -> bool {
    text.lines().any(|l| {
        let mut w = l.split_whitespace();
        w.next() == Some("TCP") && w.next() == Some(vip)
    })
}

/// The Weight column of `addr` under `TCP vip` in `xlvs list -n`.
fn weight_in_list(x: &Xlvs, vip: &str, addr: &str) -> Option<u32> {
    let text = x.list(&["-n"]).expect("xlvs list -n");
    real_cols(&text, vip, addr).map(|c| {
        c[3].parse()
            .unwrap_or_else(|_| panic!("weight column of {addr}: {c:?}\n{text}"))
    })
}

/// The Health column (`up`, `down`, `fallback`, `-`) of `addr` in
/// `xlvs list -n --health`.
fn health_in_list(x: &Xlvs, vip: &str, addr: &str) -> Option<String> {
    let text = x.list(&["-n", "--health"]).expect("xlvs list -n --health");
    real_cols(&text, vip, addr).map(|c| {
        c.get(6)
            .unwrap_or_else(|| panic!("no health column for {addr}: {c:?}\n{text}"))
            .clone()
    })
}

/// `xlvs list -n --stats --json` as JSON.
fn snapshot(x: &Xlvs) -> Value {
    let text = x.list(&["-n", "--stats", "--json"]).expect("list --json");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{text}"))
}

fn service_json<'a>(snap: &'a Value, vip: &str) -> Option<&'a Value> {
    snap["services"]
        .as_array()?
        .iter()
        .find(|s| s["protocol"] == "tcp" && s["address"] == vip)
}

fn real_json<'a>(snap: &'a Value, vip: &str, addr: &str) -> Option<&'a Value> {
    service_json(snap, vip)?["reals"]
        .as_array()?
        .iter()
        .find(|r| r["address"] == addr)
}

fn conns(snap: &Value, vip: &str, addr: &str) -> u64 {
    real_json(snap, vip, addr)
        .and_then(|r| r["stats"]["conns"].as_u64())
        .unwrap_or_else(|| panic!("no conns for {addr} under {vip}: {snap:#}"))
}

/// What the configuration decides, without counters or health state:
/// services (protocol, address, scheduler, flags, persistence) and their
/// reals (address, forward, weight, thresholds, check type), sorted.
fn structure(snap: &Value) -> Value {
    let mut services: Vec<Value> = snap["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| {
            let mut reals: Vec<Value> = s["reals"]
                .as_array()
                .expect("reals")
                .iter()
                .map(|r| {
                    json!({
                        "address": r["address"],
                        "forward": r["forward"],
                        "weight": r["weight"],
                        "u_threshold": r["u_threshold"],
                        "l_threshold": r["l_threshold"],
                        "check": r["health"]["check"],
                    })
                })
                .collect();
            reals.sort_by_key(|r| r["address"].to_string());
            json!({
                "protocol": s["protocol"],
                "address": s["address"],
                "scheduler": s["scheduler"],
                "scheduler_flags": s["scheduler_flags"],
                "persistent": s["persistent"],
                "netmask": s["netmask"],
                "reals": reals,
            })
        })
        .collect();
    services.sort_by_key(|s| format!("{}{}", s["protocol"], s["address"]));
    Value::Array(services)
}

/// Waits until every real of `vip` has been checked at least once and is
/// up, as `list --json` reports it.
fn wait_all_checked_up(x: &Xlvs, vip: &str, addrs: &[String]) {
    wait_for("every real checked and up", Duration::from_secs(10), || {
        let snap = snapshot(x);
        Ok(addrs
            .iter()
            .all(|a| {
                real_json(&snap, vip, a).is_some_and(|r| {
                    r["health"]["up"] == true && r["health"]["checks"].as_u64().unwrap_or(0) > 0
                })
            })
            .then_some(()))
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\n{}\nxlvs stderr:\n{}",
            x.list(&["-n", "--health"]).unwrap_or_default(),
            x.stderr()
        )
    });
}

/// Waits (bounded) until `f` holds, panicking with the `--health` view and
/// xlvs's stderr otherwise; returns how long it took.
fn wait_until(x: &Xlvs, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    wait_for(what, timeout, || Ok(f().then_some(()))).unwrap_or_else(|e| {
        panic!(
            "{e:#}\n`xlvs list -n --health`:\n{}\nxlvs stderr:\n{}",
            x.list(&["-n", "--health"]).unwrap_or_default(),
            x.stderr()
        )
    });
    start.elapsed()
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn stderr_text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout_text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ------------------------------------------------------------- 1 health

/// A quiescent http-checked NAT service: a real whose server stops gets
/// weight 0 within interval + timeout, shows `down`, gets no requests, and
/// comes back with its weight; notify_down / notify_up run with the real.
#[test]
fn health_quiescent_real_gets_weight_zero_and_comes_back() {
    let lab = lab(|_, tmp| {
        let log = tmp.join("notify.log");
        let keys = format!(
            "notify_down = \"echo >> {0}\"\nnotify_up = \"echo >> {0}\"",
            log.display()
        );
        director_header(false, "")
            + &virtual_section(
                NAT_VIP,
                "nat",
                "rr",
                &keys,
                FAST_HTTP_CHECK,
                &reals_on(8080, [1; 3]),
            )
    });
    let mut lab = lab;
    let x = &lab.xlvs;
    let notify_log = lab.tmp.path().join("notify.log");
    let addrs: Vec<String> = (0..3).map(|i| real_addr(i, 8080)).collect();
    wait_all_checked_up(x, NAT_VIP, &addrs);
    assert_eq!(
        traffic::distribution(lab.topo.client(), NAT_VIP, 30).unwrap(),
        even(10)
    );
    assert!(
        read_lines(&notify_log).is_empty(),
        "no hook may run while every real is up: {:?}",
        read_lines(&notify_log)
    );

    lab.topo.stop_realserver(1).expect("stop real2's server");
    let real2 = &addrs[1];
    let took = wait_until(
        x,
        "real2 at weight 0 in `list -n`",
        Duration::from_secs(10),
        || weight_in_list(x, NAT_VIP, real2) == Some(0),
    );
    assert!(
        took <= FAST_INTERVAL + FAST_TIMEOUT + SLACK,
        "real2 went to weight 0 only after {took:?} (interval {FAST_INTERVAL:?} + timeout {FAST_TIMEOUT:?})"
    );
    assert_eq!(health_in_list(x, NAT_VIP, real2).as_deref(), Some("down"));
    for i in [0, 2] {
        assert_eq!(weight_in_list(x, NAT_VIP, &addrs[i]), Some(1));
        assert_eq!(health_in_list(x, NAT_VIP, &addrs[i]).as_deref(), Some("up"));
    }
    let snap = snapshot(x);
    let h = &real_json(&snap, NAT_VIP, real2).unwrap()["health"];
    assert_eq!(h["up"], false, "{h:#}");
    assert_eq!(h["check"], "http", "{h:#}");
    assert!(
        h["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("10.0.1.12:8080")),
        "the last error names the real: {h:#}"
    );

    let d = traffic::distribution(lab.topo.client(), NAT_VIP, 60).unwrap();
    assert_eq!(
        d,
        names(&[("real1", 30), ("real3", 30)]),
        "60 requests with real2 down (quiescent, weight 0)"
    );

    lab.topo
        .start_realserver(1, &[])
        .expect("restart real2's server");
    wait_until(
        x,
        "real2 back at weight 1, up",
        Duration::from_secs(10),
        || {
            weight_in_list(x, NAT_VIP, real2) == Some(1)
                && health_in_list(x, NAT_VIP, real2).as_deref() == Some("up")
        },
    );
    assert_eq!(
        traffic::distribution(lab.topo.client(), NAT_VIP, 30).unwrap(),
        even(10)
    );

    wait_until(x, "two notify lines", Duration::from_secs(5), || {
        read_lines(&notify_log).len() >= 2
    });
    let lines = read_lines(&notify_log);
    assert_eq!(lines.len(), 2, "exactly one down and one up: {lines:?}");
    assert!(
        lines[0].starts_with(&format!("down {NAT_VIP} {real2} ")),
        "notify_down line: {lines:?}"
    );
    assert!(
        lines[1].starts_with(&format!("up {NAT_VIP} {real2}")),
        "notify_up line: {lines:?}"
    );
    lab.xlvs.check_running().expect("xlvs still running");
}

/// A real that accepts connections but never answers (its server paused
/// with SIGSTOP) fails the http check by its timeout: weight 0 within
/// interval + timeout, "timed out" as the reason; back when it resumes.
#[test]
fn health_a_hung_real_fails_by_timeout() {
    let mut lab = lab(|_, _| {
        director_header(false, "")
            + &virtual_section(
                NAT_VIP,
                "nat",
                "rr",
                "",
                FAST_HTTP_CHECK,
                &reals_on(8080, [1; 3]),
            )
    });
    let addrs: Vec<String> = (0..3).map(|i| real_addr(i, 8080)).collect();
    wait_all_checked_up(&lab.xlvs, NAT_VIP, &addrs);

    lab.topo
        .signal_realserver(1, libc::SIGSTOP)
        .expect("pause real2's server");
    let x = &lab.xlvs;
    let took = wait_until(x, "hung real2 at weight 0", Duration::from_secs(10), || {
        weight_in_list(x, NAT_VIP, &addrs[1]) == Some(0)
    });
    assert!(
        took <= FAST_INTERVAL + FAST_TIMEOUT + SLACK,
        "a hung real2 went to weight 0 only after {took:?}"
    );
    let snap = snapshot(x);
    let h = &real_json(&snap, NAT_VIP, &addrs[1]).unwrap()["health"];
    assert_eq!(h["up"], false, "{h:#}");
    assert!(
        h["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "the reason is the timeout: {h:#}"
    );
    let d = traffic::distribution(lab.topo.client(), NAT_VIP, 30).unwrap();
    assert_eq!(d, names(&[("real1", 15), ("real3", 15)]));

    lab.topo
        .signal_realserver(1, libc::SIGCONT)
        .expect("resume real2's server");
    let x = &lab.xlvs;
    wait_until(x, "real2 back at weight 1", Duration::from_secs(10), || {
        weight_in_list(x, NAT_VIP, &addrs[1]) == Some(1)
    });
    assert_eq!(
        traffic::distribution(lab.topo.client(), NAT_VIP, 30).unwrap(),
        even(10)
    );
    lab.xlvs.check_running().expect("xlvs still running");
}

/// `check_interval = 0.2` is 0.2 s (the check count grows at ~5/s), and
/// `failure_count = 3` / `rise = 3` need three checks in a row: a real goes
/// down no sooner than two intervals after it stops, and back no sooner
/// than two intervals after it restarts.
#[test]
fn health_float_interval_failure_count_and_rise() {
    let check =
        "type = \"http\"\ncheck_interval = 0.2\ncheck_timeout = 0.5\nfailure_count = 3\nrise = 3";
    let interval = Duration::from_millis(200);
    let mut lab = lab(|_, _| {
        director_header(false, "")
            + &virtual_section(NAT_VIP, "nat", "rr", "", check, &reals_on(8080, [1; 3]))
    });
    let addrs: Vec<String> = (0..3).map(|i| real_addr(i, 8080)).collect();
    wait_all_checked_up(&lab.xlvs, NAT_VIP, &addrs);
    let checks = |x: &Xlvs| -> u64 {
        real_json(&snapshot(x), NAT_VIP, &addrs[0]).unwrap()["health"]["checks"]
            .as_u64()
            .unwrap()
    };
    let (c0, t0) = (checks(&lab.xlvs), Instant::now());
    std::thread::sleep(Duration::from_millis(2000));
    let (c1, t1) = (checks(&lab.xlvs), Instant::now());
    let expected = (t1 - t0).as_secs_f64() / interval.as_secs_f64();
    let got = (c1 - c0) as f64;
    assert!(
        (got - expected).abs() <= 2.5,
        "{got} checks in {:?} with check_interval = 0.2 (expected ~{expected:.1})",
        t1 - t0
    );

    lab.topo.stop_realserver(0).unwrap();
    let x = &lab.xlvs;
    let took = wait_until(x, "real1 down", Duration::from_secs(10), || {
        weight_in_list(x, NAT_VIP, &addrs[0]) == Some(0)
    });
    assert!(
        took >= interval * 2 - Duration::from_millis(20),
        "failure_count = 3, yet down after {took:?}"
    );
    assert!(took <= interval * 3 + SLACK, "down only after {took:?}");
    let h = real_json(&snapshot(x), NAT_VIP, &addrs[0]).unwrap()["health"].clone();
    assert!(h["failures"].as_u64().unwrap_or(0) >= 3, "{h:#}");

    lab.topo.start_realserver(0, &[]).unwrap();
    let x = &lab.xlvs;
    let took = wait_until(x, "real1 up", Duration::from_secs(10), || {
        weight_in_list(x, NAT_VIP, &addrs[0]) == Some(1)
    });
    assert!(
        took >= interval * 2 - Duration::from_millis(20),
        "rise = 3, yet up after {took:?}"
    );
    lab.xlvs.check_running().expect("xlvs still running");
}

// ------------------------------------------------- 2 health, not quiescent

/// `quiescent = false` on a DR service: a down real leaves `list -n`
/// (and gets no requests), and returns when its server is back.
#[test]
fn health_not_quiescent_real_leaves_and_returns() {
    let mut lab = lab(|_, _| {
        let check = FAST_HTTP_CHECK.replace("type = \"http\"", "type = \"connect\"");
        let check = check.replace("request = \"/\"", "");
        director_header(false, "")
            + &virtual_section(
                DR_VIP,
                "dr",
                "rr",
                "quiescent = false",
                &check,
                &reals_on(80, [1; 3]),
            )
    });
    let addrs: Vec<String> = (0..3).map(|i| real_addr(i, 80)).collect();
    wait_all_checked_up(&lab.xlvs, DR_VIP, &addrs);
    assert_eq!(
        traffic::distribution(lab.topo.client(), DR_VIP, 30).unwrap(),
        even(10)
    );

    lab.topo.stop_realserver(2).expect("stop real3's server");
    let x = &lab.xlvs;
    let took = wait_until(
        x,
        "real3 gone from `list -n`",
        Duration::from_secs(10),
        || weight_in_list(x, DR_VIP, &addrs[2]).is_none(),
    );
    assert!(
        took <= FAST_INTERVAL + FAST_TIMEOUT + SLACK,
        "real3 left only after {took:?}"
    );
    for i in [0, 1] {
        assert_eq!(weight_in_list(x, DR_VIP, &addrs[i]), Some(1));
    }
    let d = traffic::distribution(lab.topo.client(), DR_VIP, 30).unwrap();
    assert_eq!(d, names(&[("real1", 15), ("real2", 15)]), "real3 removed");

    lab.topo
        .start_realserver(2, &[])
        .expect("restart real3's server");
    let x = &lab.xlvs;
    wait_until(
        x,
        "real3 back in `list -n`",
        Duration::from_secs(10),
        || weight_in_list(x, DR_VIP, &addrs[2]) == Some(1),
    );
    assert_eq!(health_in_list(x, DR_VIP, &addrs[2]).as_deref(), Some("up"));
    assert_eq!(
        traffic::distribution(lab.topo.client(), DR_VIP, 30).unwrap(),
        even(10)
    );
    lab.xlvs.check_running().expect("xlvs still running");
}

/// Opens keep-alive connections to `vip` until one lands on `want` (rr:
/// at most three tries); returns it.
fn keepalive_on(client: &Netns, vip: &str, want: &str) -> KeepAlive {
    for _ in 0..6 {
        let mut ka = KeepAlive::connect(client, vip).expect("keep-alive connect");
        if ka.request().expect("first keep-alive request") == want {
            return ka;
        }
    }
    panic!("no keep-alive connection to {vip} landed on {want} in 6 tries");
}

/// A real whose check fails (its separate health port closes, its service
/// port still serves): with quiescent = true its established connection
/// carries on at weight 0; with quiescent = false it is removed "with its
/// connections", so its established connection stops being forwarded.
#[test]
fn quiescent_keeps_established_connections_not_quiescent_drops_them() {
    let mut lab = lab_with(
        &[],
        |topo| {
            for i in 0..3 {
                let ns = topo.reals()[i].ns.name().to_string();
                topo.start_server(&ns, "health", &["--tcp", "0.0.0.0:8081"])
                    .expect("start a health-port server");
            }
        },
        |_, _| {
            let check =
                "type = \"connect\"\nport = 8081\ncheck_interval = 0.3\ncheck_timeout = 0.5";
            director_header(false, "")
                + &virtual_section(
                    NAT_VIP,
                    "nat",
                    "rr",
                    "quiescent = true",
                    check,
                    &reals_on(8080, [1; 3]),
                )
                + &virtual_section(
                    DR_VIP,
                    "dr",
                    "rr",
                    "quiescent = false",
                    check,
                    &reals_on(80, [1; 3]),
                )
        },
    );
    wait_all_checked_up(
        &lab.xlvs,
        NAT_VIP,
        &(0..3).map(|i| real_addr(i, 8080)).collect::<Vec<_>>(),
    );
    wait_all_checked_up(
        &lab.xlvs,
        DR_VIP,
        &(0..3).map(|i| real_addr(i, 80)).collect::<Vec<_>>(),
    );
    let mut nat_ka = keepalive_on(lab.topo.client(), NAT_VIP, "real1");
    let mut dr_ka = keepalive_on(lab.topo.client(), DR_VIP, "real1");

    let ns = lab.topo.reals()[0].ns.name().to_string();
    lab.topo
        .stop_server(&ns, "health")
        .expect("stop real1's health port");
    let x = &lab.xlvs;
    wait_until(
        x,
        "real1 quiescent in NAT and gone from DR",
        Duration::from_secs(10),
        || {
            weight_in_list(x, NAT_VIP, &real_addr(0, 8080)) == Some(0)
                && weight_in_list(x, DR_VIP, &real_addr(0, 80)).is_none()
        },
    );
    // quiescent: the established connection carries on.
    for i in 0..3 {
        assert_eq!(
            nat_ka
                .request()
                .unwrap_or_else(|e| panic!("quiescent real1's keep-alive, request {i}: {e:#}")),
            "real1"
        );
    }
    let d = traffic::distribution(lab.topo.client(), NAT_VIP, 20).unwrap();
    assert_eq!(d, names(&[("real2", 10), ("real3", 10)]));
    // not quiescent: removed with its connections.
    let r = dr_ka.request();
    assert!(
        r.is_err(),
        "a connection of a real removed by quiescent = false still answered: {r:?}\nconnections:\n{}",
        x.list(&["-c", "-n"]).unwrap_or_default()
    );
    let d = traffic::distribution(lab.topo.client(), DR_VIP, 20).unwrap();
    assert_eq!(d, names(&[("real2", 10), ("real3", 10)]));
    lab.xlvs.check_running().expect("xlvs still running");
}

/// A persistence template does not pin a client to a real that is down.
#[test]
fn persistence_does_not_stick_to_a_down_real() {
    let mut lab = lab(|_, _| {
        director_header(false, "")
            + &virtual_section(
                NAT_VIP,
                "nat",
                "rr",
                "persistent = 60",
                FAST_HTTP_CHECK,
                &reals_on(8080, [1; 3]),
            )
    });
    let addrs: Vec<String> = (0..3).map(|i| real_addr(i, 8080)).collect();
    wait_all_checked_up(&lab.xlvs, NAT_VIP, &addrs);
    let d = traffic::distribution(lab.topo.client(), NAT_VIP, 10).unwrap();
    assert_eq!(d.len(), 1, "persistent: one real for the client: {d:?}");
    let (first, n) = d.iter().next().unwrap();
    assert_eq!(*n, 10, "{d:?}");
    let i = (1..=3)
        .position(|k| *first == format!("real{k}"))
        .expect("a real");

    lab.topo.stop_realserver(i).unwrap();
    let x = &lab.xlvs;
    wait_until(
        x,
        "the persistent real at weight 0",
        Duration::from_secs(10),
        || weight_in_list(x, NAT_VIP, &addrs[i]) == Some(0),
    );
    let d = traffic::distribution(lab.topo.client(), NAT_VIP, 10).unwrap();
    assert_eq!(
        d.len(),
        1,
        "a new real, persistently: {d:?}\n{}",
        x.list(&["-c", "-n"]).unwrap_or_default()
    );
    let (second, n) = d.iter().next().unwrap();
    assert!(
        second != first && !second.starts_with('!') && *n == 10,
        "{d:?}"
    );

    lab.topo.start_realserver(i, &[]).unwrap();
    let x = &lab.xlvs;
    wait_until(x, "the first real back", Duration::from_secs(10), || {
        weight_in_list(x, NAT_VIP, &addrs[i]) == Some(1)
    });
    let d = traffic::distribution(lab.topo.client(), NAT_VIP, 10).unwrap();
    assert_eq!(d, names(&[(second.as_str(), 10)]), "the new template holds");
    lab.xlvs.check_running().expect("xlvs still running");
}

/// A down real stays down (weight 0, no hook) through a reload that does
/// not change its check and through a runtime weight edit; `xlvs save`
/// prints the configured weight, and the real comes back with it.
#[test]
fn health_state_survives_reload_and_edits() {
    let config = |tmp: &Path, weights: [u32; 3]| {
        let log = tmp.join("notify.log");
        let keys = format!(
            "notify_down = \"echo >> {0}\"\nnotify_up = \"echo >> {0}\"",
            log.display()
        );
        director_header(false, "")
            + &virtual_section(
                NAT_VIP,
                "nat",
                "rr",
                &keys,
                FAST_HTTP_CHECK,
                &reals_on(8080, weights),
            )
    };
    let mut lab = lab(|_, tmp| config(tmp, [1; 3]));
    let notify_log = lab.tmp.path().join("notify.log");
    let addrs: Vec<String> = (0..3).map(|i| real_addr(i, 8080)).collect();
    wait_all_checked_up(&lab.xlvs, NAT_VIP, &addrs);
    lab.topo.stop_realserver(1).unwrap();
    let x = &lab.xlvs;
    wait_until(x, "real2 down", Duration::from_secs(10), || {
        weight_in_list(x, NAT_VIP, &addrs[1]) == Some(0)
    });
    wait_until(x, "the notify_down line", Duration::from_secs(5), || {
        read_lines(&notify_log).len() == 1
    });

    x.write_config(&config(lab.tmp.path(), [1, 1, 2])).unwrap();
    x.ctl_ok(&["reload"]).expect("xlvs reload");
    assert_eq!(
        weight_in_list(x, NAT_VIP, &addrs[2]),
        Some(2),
        "the reload applied"
    );
    assert_eq!(
        weight_in_list(x, NAT_VIP, &addrs[1]),
        Some(0),
        "down real2 came back on a reload"
    );
    assert_eq!(
        health_in_list(x, NAT_VIP, &addrs[1]).as_deref(),
        Some("down")
    );

    x.ctl_ok(&["real", "edit", "-t", NAT_VIP, "-r", &addrs[1], "-w", "5"])
        .expect("real edit -w 5");
    assert_eq!(
        weight_in_list(x, NAT_VIP, &addrs[1]),
        Some(0),
        "an edit gave down real2 its weight"
    );
    // A few check intervals: still down, no hook ran again.
    std::thread::sleep(FAST_INTERVAL * 4);
    assert_eq!(weight_in_list(x, NAT_VIP, &addrs[1]), Some(0));
    assert_eq!(
        read_lines(&notify_log).len(),
        1,
        "{:?}",
        read_lines(&notify_log)
    );
    let d = traffic::distribution(lab.topo.client(), NAT_VIP, 30).unwrap();
    assert_eq!(d, names(&[("real1", 15), ("real3", 15)]));

    let saved = x.ctl_ok(&["save"]).expect("xlvs save");
    let weights: Vec<&str> = saved
        .lines()
        .filter(|l| l.trim_start().starts_with("weight"))
        .collect();
    assert_eq!(
        weights,
        ["weight = 1", "weight = 5", "weight = 2"],
        "save prints the configured weights, not the health's:\n{saved}"
    );

    lab.topo.start_realserver(1, &[]).unwrap();
    let x = &lab.xlvs;
    wait_until(
        x,
        "real2 back with weight 5",
        Duration::from_secs(10),
        || weight_in_list(x, NAT_VIP, &addrs[1]) == Some(5),
    );
    wait_until(x, "the notify_up line", Duration::from_secs(5), || {
        read_lines(&notify_log).len() == 2
    });
    let lines = read_lines(&notify_log);
    assert!(
        lines[0].starts_with("down ") && lines[1].starts_with("up "),
        "{lines:?}"
    );
    lab.xlvs.check_running().expect("xlvs still running");
}

/// The health views must show a checked real that is down even when
/// `quiescent = false` took it out of the data plane: `xlvs list -n` (the
/// ipvsadm layout) drops it, but `--health` ("the reals' health checks:
/// state, check, counts, latency and last error") and `xlvs_real_up` ("0
/// when they fail") are where an operator looks for it.
#[test]
fn health_views_show_a_down_real_removed_by_quiescent_false() {
    let mut lab = lab(|_, _| {
        director_header(false, "metrics = \"127.0.0.1:9108\"")
            + &virtual_section(
                DR_VIP,
                "dr",
                "rr",
                "quiescent = false",
                FAST_HTTP_CHECK,
                &reals_on(80, [1; 3]),
            )
    });
    let addrs: Vec<String> = (0..3).map(|i| real_addr(i, 80)).collect();
    wait_all_checked_up(&lab.xlvs, DR_VIP, &addrs);
    lab.topo.stop_realserver(2).unwrap();
    let x = &lab.xlvs;
    wait_until(
        x,
        "real3 gone from `list -n`",
        Duration::from_secs(10),
        || weight_in_list(x, DR_VIP, &addrs[2]).is_none(),
    );
    let health = x.list(&["-n", "--health"]).unwrap();
    let line = health.lines().find(|l| l.contains(addrs[2].as_str()));
    assert!(
        line.is_some_and(|l| l.split_whitespace().any(|w| w == "down")),
        "`xlvs list -n --health` does not show down real {} (removed by quiescent = false):\n{health}",
        addrs[2]
    );
    let metrics = fetch_metrics(lab.topo.director()).body;
    let labels = [
        ("protocol", "tcp"),
        ("vip", DR_VIP),
        ("real", addrs[2].as_str()),
    ];
    assert_eq!(
        metric(&metrics, "xlvs_real_up", &labels),
        [0.0],
        "xlvs_real_up of the down, removed real {}:\n{metrics}",
        addrs[2]
    );
}

/// A reload that changes only a service's check timing must not bring a
/// down real back: `adopt` restarts the real's check "up", so until the new
/// check times out the dead real is in the data plane with its weight
/// again, and the new check's failure runs `notify_down` a second time,
/// with no `up` in between. The real here hangs (its server paused), so
/// each check takes its whole 0.5 s timeout.
#[test]
fn reload_changing_the_check_keeps_a_down_real_down() {
    let config = |tmp: &Path, interval: &str| {
        let log = tmp.join("notify.log");
        let keys = format!(
            "notify_down = \"echo >> {0}\"\nnotify_up = \"echo >> {0}\"",
            log.display()
        );
        let check = FAST_HTTP_CHECK.replace(
            "check_interval = 0.3",
            &format!("check_interval = {interval}"),
        );
        director_header(false, "")
            + &virtual_section(NAT_VIP, "nat", "rr", &keys, &check, &reals_on(8080, [1; 3]))
    };
    let mut lab = lab(|_, tmp| config(tmp, "0.3"));
    let notify_log = lab.tmp.path().join("notify.log");
    let addrs: Vec<String> = (0..3).map(|i| real_addr(i, 8080)).collect();
    wait_all_checked_up(&lab.xlvs, NAT_VIP, &addrs);
    lab.topo
        .signal_realserver(1, libc::SIGSTOP)
        .expect("pause real2's server");
    let x = &lab.xlvs;
    wait_until(x, "hung real2 down", Duration::from_secs(10), || {
        weight_in_list(x, NAT_VIP, &addrs[1]) == Some(0)
    });
    wait_until(x, "the notify_down line", Duration::from_secs(5), || {
        read_lines(&notify_log).len() == 1
    });

    x.write_config(&config(lab.tmp.path(), "0.25")).unwrap();
    x.ctl_ok(&["reload"]).expect("xlvs reload");
    // Sample the weight over the new check's first timeout and a bit more.
    let mut weights = Vec::new();
    let end = Instant::now() + FAST_TIMEOUT + Duration::from_millis(700);
    while Instant::now() < end {
        weights.push(weight_in_list(x, NAT_VIP, &addrs[1]));
        std::thread::sleep(Duration::from_millis(50));
    }
    let lines = read_lines(&notify_log);
    lab.topo
        .signal_realserver(1, libc::SIGCONT)
        .expect("resume real2's server");
    assert!(
        weights.iter().all(|w| *w == Some(0)),
        "down real2's weight after a reload that changed only check_interval: {weights:?}"
    );
    assert_eq!(
        lines.len(),
        1,
        "notify lines (a second `down` without an `up`): {lines:?}"
    );
}

// ------------------------------------------------------------ 3 fallback

/// A fallback host on the reals' segment serves a NAT service only while
/// every real is down; quorum_down runs when the live weight drops below
/// the quorum, quorum_up when it is back.
#[test]
fn fallback_serves_only_while_every_real_is_down() {
    let fallback = format!("{FALLBACK_IP}:8080");
    let mut lab = lab_with(
        &[],
        |topo| {
            let ns = topo
                .add_real_host("fb", FALLBACK_IP)
                .expect("add the fallback host");
            topo.start_server(&ns, "fallback", &["--tcp", "0.0.0.0:8080"])
                .expect("start the fallback server");
        },
        |_, tmp| {
            let log = tmp.join("quorum.log");
            let keys = format!(
                "fallback = \"{FALLBACK_IP}:8080\"\nquorum = 2\nquorum_down = \"echo quorum-down >> {0}\"\nquorum_up = \"echo quorum-up >> {0}\"",
                log.display()
            );
            director_header(false, "")
                + &virtual_section(
                    NAT_VIP,
                    "nat",
                    "rr",
                    &keys,
                    FAST_HTTP_CHECK,
                    &reals_on(8080, [1; 3]),
                )
        },
    );
    let quorum_log = lab.tmp.path().join("quorum.log");
    let addrs: Vec<String> = (0..3).map(|i| real_addr(i, 8080)).collect();
    wait_all_checked_up(&lab.xlvs, NAT_VIP, &addrs);
    assert_eq!(
        weight_in_list(&lab.xlvs, NAT_VIP, &fallback),
        None,
        "no fallback while reals are up"
    );
    // The fallback host answers (directly) before it is needed.
    assert_eq!(
        traffic::http_get(lab.topo.client(), &fallback).unwrap(),
        "fallback"
    );
    assert_eq!(
        traffic::distribution(lab.topo.client(), NAT_VIP, 30).unwrap(),
        even(10)
    );

    for i in 0..3 {
        lab.topo.stop_realserver(i).expect("stop a real's server");
    }
    let x = &lab.xlvs;
    wait_until(
        x,
        "the fallback in `list -n`",
        Duration::from_secs(10),
        || weight_in_list(x, NAT_VIP, &fallback).is_some(),
    );
    assert_eq!(
        health_in_list(x, NAT_VIP, &fallback).as_deref(),
        Some("fallback")
    );
    wait_until(x, "every real down", Duration::from_secs(5), || {
        addrs
            .iter()
            .all(|a| health_in_list(x, NAT_VIP, a).as_deref() == Some("down"))
    });
    let d = traffic::distribution(lab.topo.client(), NAT_VIP, 30).unwrap();
    assert_eq!(
        d,
        names(&[("fallback", 30)]),
        "every request to the fallback"
    );

    lab.topo
        .start_realserver(0, &[])
        .expect("restart real1's server");
    let x = &lab.xlvs;
    wait_until(
        x,
        "the fallback gone from `list -n`",
        Duration::from_secs(10),
        || weight_in_list(x, NAT_VIP, &fallback).is_none(),
    );
    assert_eq!(weight_in_list(x, NAT_VIP, &addrs[0]), Some(1));
    let d = traffic::distribution(lab.topo.client(), NAT_VIP, 30).unwrap();
    assert_eq!(
        d,
        names(&[("real1", 30)]),
        "real1 alone (the others quiescent)"
    );

    // Live weight 1 < quorum 2 since the reals stopped; real2 makes it 2.
    let lines = read_lines(&quorum_log);
    assert_eq!(lines.len(), 1, "one quorum_down so far: {lines:?}");
    assert!(
        lines[0].starts_with(&format!("quorum-down {NAT_VIP} ")) && lines[0].ends_with(" 2"),
        "quorum_down line (VIP, live weight, quorum): {lines:?}"
    );
    lab.topo
        .start_realserver(1, &[])
        .expect("restart real2's server");
    let x = &lab.xlvs;
    wait_until(x, "a quorum_up line", Duration::from_secs(10), || {
        read_lines(&quorum_log).len() >= 2
    });
    let lines = read_lines(&quorum_log);
    assert_eq!(
        lines.get(1).map(String::as_str),
        Some(format!("quorum-up {NAT_VIP} 2 2").as_str()),
        "quorum_up line: {lines:?}"
    );
    assert_eq!(weight_in_list(x, NAT_VIP, &fallback), None);
    lab.xlvs.check_running().expect("xlvs still running");
}

// ----------------------------------------------------------- 4 reloads

fn reload_config(autoreload: bool, weights: [u32; 3], with_dr: bool) -> String {
    let mut s = director_header(autoreload, "")
        + &virtual_section(NAT_VIP, "nat", "rr", "", "", &reals_on(8080, weights));
    if with_dr {
        s += &virtual_section(DR_VIP, "dr", "rr", "", "", &reals_on(80, [1; 3]));
    }
    s
}

fn count_refused(x: &Xlvs) -> usize {
    x.stderr().matches("reload refused").count()
}

/// autoreload applies only the difference: a keep-alive connection stays on
/// its real and unchanged reals keep their counters; an invalid file
/// changes nothing and is logged as refused; with autoreload off, SIGHUP
/// and `xlvs reload` reload.
#[test]
fn autoreload_applies_the_difference_and_refuses_a_bad_file() {
    let mut lab = lab(|_, _| reload_config(true, [1; 3], false));
    let client = lab.topo.client();
    assert_eq!(
        traffic::distribution(client, NAT_VIP, 30).unwrap(),
        even(10)
    );

    let mut ka = KeepAlive::connect(client, NAT_VIP).expect("keep-alive connect");
    let sticky = ka.request().expect("first keep-alive request");
    let s = (1..=3)
        .position(|i| sticky == format!("real{i}"))
        .expect("a real's name");
    let (changed, untouched) = ((s + 1) % 3, (s + 2) % 3);
    let before = snapshot(&lab.xlvs);
    for i in [s, untouched] {
        assert!(
            conns(&before, NAT_VIP, &real_addr(i, 8080)) >= 10,
            "{before:#}"
        );
    }

    let mut weights = [1; 3];
    weights[changed] = 3;
    lab.xlvs
        .write_config(&reload_config(true, weights, true))
        .expect("rewrite the config");
    let x = &lab.xlvs;
    wait_until(
        x,
        "the reloaded config in `list -n`",
        Duration::from_secs(10),
        || {
            let text = x.list(&["-n"]).unwrap_or_default();
            has_service(&text, DR_VIP)
                && real_cols(&text, NAT_VIP, &real_addr(changed, 8080)).is_some_and(|c| c[3] == "3")
        },
    );
    for _ in 0..5 {
        assert_eq!(
            ka.request().expect("keep-alive request after the reload"),
            sticky,
            "the keep-alive connection moved"
        );
    }
    let after = snapshot(x);
    for i in [s, untouched] {
        let a = real_addr(i, 8080);
        assert_eq!(
            conns(&after, NAT_VIP, &a),
            conns(&before, NAT_VIP, &a),
            "conns of unchanged real {a} changed over the reload"
        );
    }
    // An edited real is the same real (as `ipvsadm -e`): its counters stay.
    let a = real_addr(changed, 8080);
    assert_eq!(
        conns(&after, NAT_VIP, &a),
        conns(&before, NAT_VIP, &a),
        "conns of real {a}, whose weight the reload changed, were reset"
    );
    let r = real_json(&after, NAT_VIP, &real_addr(s, 8080)).unwrap();
    assert_eq!(
        r["active"], 1,
        "the keep-alive connection is still active: {r:#}"
    );
    assert!(
        x.stderr().contains("configuration reloaded"),
        "{}",
        x.stderr()
    );
    let d = traffic::distribution(client, DR_VIP, 30).unwrap();
    assert_eq!(d, even(10), "the added DR service");

    // An invalid file: refused, nothing changes.
    let structure_before = structure(&snapshot(x));
    let refused_before = count_refused(x);
    let mut bad = reload_config(true, weights, true);
    bad = bad.replacen("weight = 1\n", "weight = 70000\n", 1);
    x.write_config(&bad).expect("write an invalid config");
    wait_until(
        x,
        "\"reload refused\" in xlvs's stderr",
        Duration::from_secs(10),
        || count_refused(x) > refused_before,
    );
    assert_eq!(
        structure(&snapshot(x)),
        structure_before,
        "a refused reload changed the services"
    );
    let d = traffic::distribution(client, NAT_VIP, 30).unwrap();
    assert_eq!(
        traffic::answered(&d),
        30,
        "requests after the refused reload: {d:?}"
    );
    assert_eq!(
        ka.request().expect("keep-alive after the refused reload"),
        sticky
    );
    let out = x.ctl(&["reload"]).expect("xlvs reload");
    assert!(
        !out.status.success(),
        "`xlvs reload` of an invalid file must fail"
    );
    assert!(
        stderr_text(&out).contains("70000"),
        "`xlvs reload` says what is wrong: {}",
        stderr_text(&out)
    );
    assert_eq!(structure(&snapshot(x)), structure_before);

    // autoreload off: a change waits for SIGHUP or `xlvs reload`.
    x.write_config(&reload_config(false, [1; 3], true)).unwrap();
    wait_until(
        x,
        "weights back to 1 (the last autoreload)",
        Duration::from_secs(10),
        || weight_in_list(x, NAT_VIP, &real_addr(changed, 8080)) == Some(1),
    );
    x.write_config(&reload_config(false, [2, 2, 2], false))
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        weight_in_list(x, NAT_VIP, &real_addr(0, 8080)),
        Some(1),
        "autoreload = false, yet the file was reloaded"
    );
    lab.xlvs.signal(libc::SIGHUP).expect("SIGHUP");
    let x = &lab.xlvs;
    wait_until(x, "SIGHUP applied", Duration::from_secs(5), || {
        let text = x.list(&["-n"]).unwrap_or_default();
        !has_service(&text, DR_VIP)
            && real_cols(&text, NAT_VIP, &real_addr(0, 8080)).is_some_and(|c| c[3] == "2")
    });
    x.write_config(&reload_config(false, [4, 2, 2], false))
        .unwrap();
    x.ctl_ok(&["reload"]).expect("xlvs reload");
    assert_eq!(
        weight_in_list(x, NAT_VIP, &real_addr(0, 8080)),
        Some(4),
        "`xlvs reload` returned before applying the file"
    );
    assert_eq!(ka.request().expect("keep-alive at the end"), sticky);
    drop(ka);
    lab.xlvs.check_running().expect("xlvs still running");
}

// ------------------------------------------------------- 5 runtime edits

/// `xlvs real|service add|edit|del` change the running director; bad
/// edits fail with a message and change nothing.
#[test]
fn runtime_edits_change_the_running_director() {
    let lab = lab(|_, tmp| {
        let mut reals = reals_on(8080, [1; 3]);
        reals.truncate(2);
        let keys = format!(
            "quorum = 2\nquorum_down = \"echo quorum-down >> {0}\"\nquorum_up = \"echo quorum-up >> {0}\"",
            tmp.join("quorum.log").display()
        );
        director_header(false, "") + &virtual_section(NAT_VIP, "nat", "rr", &keys, "", &reals)
    });
    let (x, client) = (&lab.xlvs, lab.topo.client());
    let quorum_log = lab.tmp.path().join("quorum.log");
    let d = traffic::distribution(client, NAT_VIP, 20).unwrap();
    assert_eq!(d, names(&[("real1", 10), ("real2", 10)]));

    let real3 = real_addr(2, 8080);
    x.ctl_ok(&["real", "add", "-t", NAT_VIP, "-r", &real3, "-m", "-w", "1"])
        .expect("real add");
    let cols = real_cols(&x.list(&["-n"]).unwrap(), NAT_VIP, &real3).expect("real3 listed");
    assert_eq!(
        (cols[2].as_str(), cols[3].as_str()),
        ("Masq", "1"),
        "{cols:?}"
    );
    assert_eq!(
        traffic::distribution(client, NAT_VIP, 30).unwrap(),
        even(10)
    );

    x.ctl_ok(&["real", "edit", "-t", NAT_VIP, "-r", &real3, "-w", "0"])
        .expect("real edit -w 0");
    assert_eq!(weight_in_list(x, NAT_VIP, &real3), Some(0));
    let d = traffic::distribution(client, NAT_VIP, 20).unwrap();
    assert_eq!(
        d,
        names(&[("real1", 10), ("real2", 10)]),
        "weight 0: no new connections"
    );

    // A new DR service, built at runtime.
    x.ctl_ok(&["service", "add", "-t", DR_VIP, "-s", "rr"])
        .expect("service add");
    for i in 0..3 {
        x.ctl_ok(&["real", "add", "-t", DR_VIP, "-r", &real_addr(i, 80), "-g"])
            .expect("real add -g");
    }
    let text = x.list(&["-n"]).unwrap();
    assert!(has_service(&text, DR_VIP), "{text}");
    for i in 0..3 {
        let c = real_cols(&text, DR_VIP, &real_addr(i, 80)).expect("DR real listed");
        assert_eq!((c[2].as_str(), c[3].as_str()), ("Route", "1"), "{text}");
    }
    assert_eq!(traffic::distribution(client, DR_VIP, 30).unwrap(), even(10));

    x.ctl_ok(&["service", "del", "-t", DR_VIP])
        .expect("service del");
    let text = x.list(&["-n"]).unwrap();
    assert!(
        !has_service(&text, DR_VIP),
        "deleted service still listed:\n{text}"
    );
    assert!(has_service(&text, NAT_VIP), "{text}");
    let d = traffic::distribution(client, NAT_VIP, 20).unwrap();
    assert_eq!(
        d,
        names(&[("real1", 10), ("real2", 10)]),
        "the other service after the delete"
    );
    // The same VIP again, from scratch.
    x.ctl_ok(&["service", "add", "-t", DR_VIP, "-s", "rr"])
        .expect("service add again");
    x.ctl_ok(&["real", "add", "-t", DR_VIP, "-r", &real_addr(1, 80)])
        .expect("real add (default -g)");
    let d = traffic::distribution(client, DR_VIP, 10).unwrap();
    assert_eq!(d, names(&[("real2", 10)]), "the re-added service");
    let snap = snapshot(x);
    assert_eq!(
        conns(&snap, DR_VIP, &real_addr(1, 80)),
        10,
        "a re-added service's real starts from zero, not from the deleted one's counters: {snap:#}"
    );

    // Bad edits: a non-zero exit, a message, no change.
    let before = structure(&snapshot(x));
    let bad: [(&[&str], &str); 8] = [
        (
            &["real", "add", "-t", NAT_VIP, "-r", real3.as_str(), "-m"],
            "already",
        ),
        (
            &[
                "real",
                "edit",
                "-t",
                NAT_VIP,
                "-r",
                real3.as_str(),
                "-w",
                "70000",
            ],
            "70000",
        ),
        (
            &[
                "real",
                "add",
                "-t",
                NAT_VIP,
                "-r",
                "10.0.1.14:8080",
                "-m",
                "-w",
                "70000",
            ],
            "70000",
        ),
        (
            &[
                "real",
                "edit",
                "-t",
                NAT_VIP,
                "-r",
                "10.0.1.99:8080",
                "-w",
                "2",
            ],
            "10.0.1.99:8080",
        ),
        (
            &["service", "add", "-t", NAT_VIP, "-s", "rr"],
            "already exists",
        ),
        (
            &[
                "real",
                "add",
                "-t",
                "10.100.0.199:80",
                "-r",
                real3.as_str(),
                "-m",
            ],
            "no service",
        ),
        (
            &["service", "edit", "-t", NAT_VIP, "-M", "255.255.255.0"],
            "persistent",
        ),
        (
            &[
                "real",
                "edit",
                "-t",
                NAT_VIP,
                "-r",
                real3.as_str(),
                "-x",
                "10",
                "-y",
                "20",
            ],
            "threshold",
        ),
    ];
    for (args, says) in bad {
        let out = x.ctl(args).expect("run xlvs");
        let err = stderr_text(&out);
        assert!(
            !out.status.success(),
            "xlvs {args:?} should fail; stderr: {err}"
        );
        assert!(
            err.contains(says),
            "xlvs {args:?}: the message should say {says:?}: {err}"
        );
        assert_eq!(
            structure(&snapshot(x)),
            before,
            "xlvs {args:?} changed the services"
        );
    }
    // A real with another port under dr: only nat maps ports.
    let out = x
        .ctl(&["real", "add", "-t", NAT_VIP, "-r", "10.0.1.14:8081", "-g"])
        .expect("run xlvs");
    assert!(
        !out.status.success(),
        "dr with a port mapping must be refused: {}",
        stderr_text(&out)
    );
    assert!(stderr_text(&out).contains("port"), "{}", stderr_text(&out));
    assert_eq!(structure(&snapshot(x)), before);
    let d = traffic::distribution(client, NAT_VIP, 20).unwrap();
    assert_eq!(
        d,
        names(&[("real1", 10), ("real2", 10)]),
        "after the refused edits"
    );

    // -p without a value is 360 s, -p 0 turns persistence off.
    x.ctl_ok(&["service", "edit", "-t", NAT_VIP, "-p"])
        .expect("service edit -p");
    let snap = snapshot(x);
    assert_eq!(
        service_json(&snap, NAT_VIP).unwrap()["persistent"],
        360,
        "{snap:#}"
    );
    let text = x.list(&["-n"]).unwrap();
    assert!(
        text.contains(&format!("TCP  {NAT_VIP} rr persistent 360")),
        "{text}"
    );
    x.ctl_ok(&["service", "edit", "-t", NAT_VIP, "-p", "0"])
        .expect("service edit -p 0");
    assert_eq!(structure(&snapshot(x)), before, "-p then -p 0");

    // Draining real2 takes the live weight (real1 1 + real2 0 + real3 0)
    // below the quorum (2): allowed, as keepalived allows it, and
    // quorum_down runs once; its weight back, quorum_up runs.
    let drain = |weight: &str| {
        x.ctl_ok(&["real", "edit", "-t", NAT_VIP, "-r", &real_addr(1, 8080), "-w", weight])
            .unwrap_or_else(|e| panic!("real edit -w {weight}: {e:#}"));
    };
    drain("0");
    wait_until(x, "quorum_down after draining", Duration::from_secs(10), || !read_lines(&quorum_log).is_empty());
    let lines = read_lines(&quorum_log);
    assert!(lines.len() == 1 && lines[0].starts_with("quorum-down "), "{lines:?}");
    drain("1");
    wait_until(x, "quorum_up after the weight is back", Duration::from_secs(10), || read_lines(&quorum_log).len() >= 2);
    let lines = read_lines(&quorum_log);
    assert!(lines.len() == 2 && lines[1].starts_with("quorum-up "), "{lines:?}");
    assert_eq!(structure(&snapshot(x)), before);

    // zero: every counter back to 0.
    x.ctl_ok(&["zero"]).expect("xlvs zero");
    let snap = snapshot(x);
    for r in service_json(&snap, NAT_VIP).unwrap()["reals"]
        .as_array()
        .unwrap()
    {
        assert_eq!(r["stats"]["conns"], 0, "after zero: {r:#}");
        assert_eq!(r["stats"]["inpkts"], 0, "after zero: {r:#}");
    }
    let mut lab = lab;
    lab.xlvs.check_running().expect("xlvs still running");
}

// ------------------------------------------------------------ 6 save

/// After runtime edits, `xlvs save` prints a file that `xlvs check`
/// reprints unchanged and that a new `xlvs run` turns into the same
/// services.
#[test]
fn save_check_and_run_round_trip() {
    setup_env();
    let mut topo = Topology::build().expect("build topology");
    topo.start_realservers().expect("start realservers");
    let tmp = TempDir::new(&format!("{}-ctl", topo.prefix())).expect("temp dir");
    let fb = topo
        .add_real_host("fb", FALLBACK_IP)
        .expect("fallback host");
    topo.start_server(&fb, "fallback", &["--tcp", "0.0.0.0:8080"])
        .expect("fallback server");
    let mut reals = reals_on(8080, [1; 3]);
    reals.truncate(2);
    let keys = format!(
        "fallback = \"{FALLBACK_IP}:8080\"\nquorum = 1\nquorum_down = \"true qd\"\nquorum_up = \"true qu\"\nnotify_down = \"true nd\"\nnotify_up = \"true nu\""
    );
    let cfg = director_header(false, "timeout_tcp = 600")
        + &virtual_section(NAT_VIP, "nat", "wlc", &keys, FAST_HTTP_CHECK, &reals);
    let x = Xlvs::start_within(topo.director(), &cfg, &topo.director_interfaces(), START)
        .unwrap_or_else(|e| panic!("start xlvs: {e:#}"));

    let real3 = real_addr(2, 8080);
    for args in [
        vec![
            "real",
            "add",
            "-t",
            NAT_VIP,
            "-r",
            real3.as_str(),
            "-m",
            "-w",
            "2",
            "-x",
            "100",
            "-y",
            "50",
        ],
        vec![
            "real",
            "edit",
            "-t",
            NAT_VIP,
            "-r",
            "10.0.1.11:8080",
            "-w",
            "3",
        ],
        vec!["service", "edit", "-t", NAT_VIP, "-s", "rr"],
        vec![
            "service",
            "add",
            "-t",
            DR_VIP,
            "-s",
            "sh",
            "-p",
            "120",
            "-M",
            "255.255.255.0",
        ],
        vec![
            "real",
            "add",
            "-t",
            DR_VIP,
            "-r",
            "10.0.1.12:80",
            "-g",
            "-w",
            "5",
        ],
        vec!["real", "add", "-t", DR_VIP, "-r", "10.0.1.13", "-g"],
    ] {
        x.ctl_ok(&args)
            .unwrap_or_else(|e| panic!("xlvs {args:?}: {e:#}"));
    }
    x.ctl_ok(&["set", "--timeout", "0", "0", "200"])
        .expect("xlvs set --timeout");
    // The real added at runtime is checked like the others.
    wait_all_checked_up(
        &x,
        NAT_VIP,
        &(0..3).map(|i| real_addr(i, 8080)).collect::<Vec<_>>(),
    );
    let before = structure(&snapshot(&x));
    let expect_nat = json!([
        {"address": "10.0.1.11:8080", "weight": 3, "forward": "nat"},
        {"address": "10.0.1.12:8080", "weight": 1, "forward": "nat"},
        {"address": "10.0.1.13:8080", "weight": 2, "forward": "nat", "u_threshold": 100, "l_threshold": 50},
    ]);
    let nat = before
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == NAT_VIP)
        .expect("NAT service");
    assert_eq!(nat["scheduler"], "rr", "{before:#}");
    for want in expect_nat.as_array().unwrap() {
        let got = nat["reals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["address"] == want["address"])
            .unwrap_or_else(|| panic!("{} missing: {before:#}", want["address"]));
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&got[k], v, "{k} of {}: {before:#}", want["address"]);
        }
    }
    let dr = before
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == DR_VIP)
        .expect("DR service");
    assert_eq!(
        (&dr["scheduler"], &dr["persistent"], &dr["netmask"]),
        (&json!("sh"), &json!(120), &json!("255.255.255.0")),
        "{before:#}"
    );
    assert_eq!(dr["reals"].as_array().unwrap().len(), 2, "{before:#}");

    let saved = x.ctl_ok(&["save"]).expect("xlvs save");
    let file = tmp.path().join("saved.toml");
    std::fs::write(&file, &saved).unwrap();
    let out = xlvs::run(&["check", "-c", file.to_str().unwrap()]).expect("xlvs check");
    assert!(
        out.status.success(),
        "xlvs check of the saved file: {}\n{saved}",
        stderr_text(&out)
    );
    assert_eq!(
        stdout_text(&out),
        saved,
        "`xlvs check` reprints a saved file unchanged"
    );
    assert!(
        saved.contains("timeout_udp = 200"),
        "the set timeout is saved:\n{saved}"
    );
    for key in [
        "fallback",
        "quorum = 1",
        "\"true qd\"",
        "\"true qu\"",
        "\"true nd\"",
        "\"true nu\"",
        "check_interval",
    ] {
        assert!(saved.contains(key), "{key} is saved:\n{saved}");
    }

    let status = x.stop().expect("stop xlvs");
    assert!(status.success(), "xlvs run exit status {status}");
    let x = Xlvs::start_within(topo.director(), &saved, &topo.director_interfaces(), START)
        .unwrap_or_else(|e| panic!("xlvs run on the saved file: {e:#}\n{saved}"));
    let after = structure(&snapshot(&x));
    assert_eq!(
        after, before,
        "the saved file runs as the services it was saved from\n{saved}"
    );
    let saved_again = x.ctl_ok(&["save"]).expect("xlvs save again");
    assert_eq!(saved_again, saved, "save → run → save changed the text");
    assert_eq!(
        x.list(&["--timeout"]).unwrap().trim(),
        "Timeout (tcp tcpfin udp): 600 120 200"
    );
    wait_all_checked_up(
        &x,
        NAT_VIP,
        &(0..3).map(|i| real_addr(i, 8080)).collect::<Vec<_>>(),
    );
    let d = traffic::distribution(topo.client(), NAT_VIP, 60).unwrap();
    assert_eq!(d, even(20), "rr (weights only matter at 0)");
    drop(x);
    drop(topo);
}

// --------------------------------------------------- 7 import-ldirectord

const LDIRECTORD_CF: &str = "\
checktimeout=3
checkinterval=1
fallback=FALLBACK:80
autoreload=yes
logfile=\"/var/log/ldirectord.log\"
quiescent=yes

virtual=VIP:80
\treal=REAL1:80 gate
\treal=REAL2:80 gate
\treal=REAL3:80 gate
\tfallback=FALLBACK:80 gate
\tservice=http
\trequest=\"index.html\"
\treceive=\"It Works!\"
\tvirtualhost=www.esempio.com
\tscheduler=rr
\tprotocol=tcp
";

const ITWORKS: [&str; 4] = [
    "--page",
    "/index.html=It Works!",
    "--page-host",
    "www.esempio.com",
];

/// The issue's ldirectord.cf, imported and run: rr over the three reals,
/// the http check (path, receive, virtualhost) in force, and the fallback
/// when every real is down.
#[test]
fn import_ldirectord_runs_the_issue_config() {
    let cf = LDIRECTORD_CF
        .replace("FALLBACK", FALLBACK_IP)
        .replace("VIP", topology::VIP_DR)
        .replace("REAL1", REAL_IPS[0])
        .replace("REAL2", REAL_IPS[1])
        .replace("REAL3", REAL_IPS[2]);
    let mut lab = lab_with(
        &ITWORKS,
        |topo| {
            let ns = topo
                .add_real_host("fb", FALLBACK_IP)
                .expect("fallback host");
            topo.start_server(&ns, "fallback", &["--tcp", "0.0.0.0:80"])
                .expect("fallback server");
        },
        |topo, tmp| {
            let path = tmp.join("ldirectord.cf");
            std::fs::write(&path, &cf).unwrap();
            let mut args = vec!["import-ldirectord", path.to_str().unwrap()];
            for i in topo.director_interfaces() {
                args.extend(["--interface", i]);
            }
            let out = xlvs::run(&args).expect("xlvs import-ldirectord");
            assert!(
                out.status.success(),
                "import-ldirectord failed: {}",
                stderr_text(&out)
            );
            let notes = stderr_text(&out);
            assert!(
                notes.contains("ldirectord.cf:5: logfile"),
                "the dropped logfile is noted with its line: {notes}"
            );
            let toml = stdout_text(&out);
            assert!(toml.contains("interfaces = [\"ext\", \"int\"]"), "{toml}");
            let path = tmp.join("imported.toml");
            std::fs::write(&path, &toml).unwrap();
            let check = xlvs::run(&["check", "-c", path.to_str().unwrap()]).unwrap();
            assert!(
                check.status.success(),
                "the import does not validate: {}\n{toml}",
                stderr_text(&check)
            );
            toml
        },
    );
    // The running config is the import, as `xlvs save` and `xlvs check` print it.
    let imported = std::fs::read_to_string(lab.xlvs.config_path()).unwrap();
    assert_eq!(
        lab.xlvs.ctl_ok(&["save"]).unwrap(),
        imported,
        "`xlvs save` of the imported config"
    );
    let check = xlvs::run(&["check", "-c", lab.xlvs.config_path().to_str().unwrap()]).unwrap();
    assert_eq!(
        stdout_text(&check),
        imported,
        "`xlvs check` of an import (already normalized)"
    );
    for key in [
        "autoreload = true",
        "check_interval = 1",
        "check_timeout = 3",
        "virtualhost = \"www.esempio.com\"",
    ] {
        assert!(imported.contains(key), "{key} in the import:\n{imported}");
    }
    // The real servers pass the check only with the right path and Host.
    let page = traffic::http_fetch(
        lab.topo.client(),
        "10.0.1.11:80",
        "/index.html",
        "www.esempio.com",
    )
    .unwrap();
    assert_eq!((page.status, page.body.trim()), (200, "It Works!"));
    let page = traffic::http_fetch(
        lab.topo.client(),
        "10.0.1.11:80",
        "/index.html",
        "10.0.1.11",
    )
    .unwrap();
    assert_eq!(page.status, 404);

    let addrs: Vec<String> = (0..3).map(|i| real_addr(i, 80)).collect();
    let x = &lab.xlvs;
    wait_all_checked_up(x, DR_VIP, &addrs);
    let snap = snapshot(x);
    let svc = service_json(&snap, DR_VIP).expect("the imported service");
    assert_eq!(svc["scheduler"], "rr", "{svc:#}");
    for a in &addrs {
        let r = real_json(&snap, DR_VIP, a).unwrap();
        assert_eq!(
            (&r["forward"], &r["health"]["check"]),
            (&json!("dr"), &json!("http")),
            "{r:#}"
        );
    }
    assert_eq!(
        traffic::distribution(lab.topo.client(), DR_VIP, 60).unwrap(),
        even(20),
        "rr across the three reals"
    );

    // A real that stops saying "It Works!" fails the receive check.
    lab.topo.stop_realserver(2).unwrap();
    lab.topo.start_realserver(2, &[]).unwrap();
    let x = &lab.xlvs;
    wait_until(x, "real3 down on its body", Duration::from_secs(10), || {
        health_in_list(x, DR_VIP, &addrs[2]).as_deref() == Some("down")
    });
    let snap = snapshot(x);
    let h = &real_json(&snap, DR_VIP, &addrs[2]).unwrap()["health"];
    assert!(
        h["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("It Works!")),
        "the error names the receive pattern: {h:#}"
    );
    assert_eq!(
        weight_in_list(x, DR_VIP, &addrs[2]),
        Some(0),
        "quiescent=yes"
    );

    for i in 0..3 {
        lab.topo.stop_realserver(i).unwrap();
    }
    let x = &lab.xlvs;
    // checkinterval 1 s: every real down within 1 s + slack.
    let fallback = format!("{FALLBACK_IP}:80");
    wait_until(
        x,
        "the fallback in the service",
        Duration::from_secs(8),
        || health_in_list(x, DR_VIP, &fallback).as_deref() == Some("fallback"),
    );
    let d = traffic::distribution(lab.topo.client(), DR_VIP, 20).unwrap();
    assert_eq!(
        d,
        names(&[("fallback", 20)]),
        "the fallback answers every request"
    );

    lab.topo.start_realserver(1, &ITWORKS).unwrap();
    let x = &lab.xlvs;
    wait_until(x, "the fallback leaves", Duration::from_secs(8), || {
        weight_in_list(x, DR_VIP, &fallback).is_none()
    });
    let d = traffic::distribution(lab.topo.client(), DR_VIP, 20).unwrap();
    assert_eq!(d, names(&[("real2", 20)]));
    lab.xlvs.check_running().expect("xlvs still running");
}

// ------------------------------------------------------------ 8 metrics

/// The samples of metric `name` whose labels contain every `labels` pair.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("bad sample {l:?}"))
        })
        .collect()
}

/// `GET /metrics` from inside the director's namespace.
fn fetch_metrics(director: &Netns) -> traffic::HttpReply {
    let r = traffic::http_fetch(director, "127.0.0.1:9108", "/metrics", "127.0.0.1:9108")
        .expect("GET /metrics in the director's namespace");
    assert_eq!(r.status, 200, "{r:?}");
    r
}

fn one_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let v = metric(text, name, labels);
    assert_eq!(v.len(), 1, "{name} {labels:?}: {v:?} in\n{text}");
    v[0]
}

/// `[director] metrics` serves Prometheus text inside the director's
/// namespace; its counters agree with `list --stats --json`.
#[test]
fn metrics_match_the_listing() {
    let mut lab = lab(|_, _| {
        director_header(false, "metrics = \"127.0.0.1:9108\"")
            + &virtual_section(
                NAT_VIP,
                "nat",
                "rr",
                "",
                FAST_HTTP_CHECK,
                &reals_on(8080, [1; 3]),
            )
    });
    let addrs: Vec<String> = (0..3).map(|i| real_addr(i, 8080)).collect();
    wait_all_checked_up(&lab.xlvs, NAT_VIP, &addrs);
    assert_eq!(
        traffic::distribution(lab.topo.client(), NAT_VIP, 30).unwrap(),
        even(10)
    );
    let reply = fetch_metrics(lab.topo.director());
    assert!(
        reply
            .headers
            .to_ascii_lowercase()
            .contains("text/plain; version=0.0.4"),
        "content type: {}",
        reply.headers
    );
    let text = reply.body;
    let snap = snapshot(&lab.xlvs);
    let mut total = 0;
    for a in &addrs {
        let labels = [("protocol", "tcp"), ("vip", NAT_VIP), ("real", a.as_str())];
        let want = conns(&snap, NAT_VIP, a);
        assert_eq!(want, 10, "{snap:#}");
        assert_eq!(
            one_metric(&text, "xlvs_real_connections_total", &labels),
            want as f64,
            "{a}"
        );
        assert_eq!(one_metric(&text, "xlvs_real_up", &labels), 1.0, "{a}");
        assert_eq!(one_metric(&text, "xlvs_real_weight", &labels), 1.0, "{a}");
        total += want;
    }
    assert_eq!(
        one_metric(
            &text,
            "xlvs_service_connections_total",
            &[("protocol", "tcp"), ("vip", NAT_VIP)]
        ),
        total as f64
    );

    // The rate estimator (every 2 s) has seen the connections.
    let x = &lab.xlvs;
    wait_until(
        x,
        "a non-zero service rate in `list --rate --json`",
        Duration::from_secs(8),
        || {
            let text = x.list(&["-n", "--rate", "--json"]).unwrap_or_default();
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            service_json(&v, NAT_VIP).is_some_and(|s| s["rate"]["inpps"].as_u64().unwrap_or(0) > 0)
        },
    );
    let rate = x.list(&["-n", "--rate"]).unwrap();
    assert!(rate.contains("CPS") && rate.contains(NAT_VIP), "{rate}");

    // A real whose server stops: up 0, weight 0.
    lab.topo.stop_realserver(0).unwrap();
    let x = &lab.xlvs;
    let l1 = [
        ("protocol", "tcp"),
        ("vip", NAT_VIP),
        ("real", addrs[0].as_str()),
    ];
    wait_until(
        x,
        "xlvs_real_up 0 for real1",
        Duration::from_secs(10),
        || {
            metric(
                &fetch_metrics(lab.topo.director()).body,
                "xlvs_real_up",
                &l1,
            ) == [0.0]
        },
    );
    let text = fetch_metrics(lab.topo.director()).body;
    assert_eq!(one_metric(&text, "xlvs_real_weight", &l1), 0.0);
    assert_eq!(one_metric(&text, "xlvs_real_connections_total", &l1), 10.0);

    // Other paths are not found.
    let r =
        traffic::http_fetch(lab.topo.director(), "127.0.0.1:9108", "/nope", "127.0.0.1").unwrap();
    assert_eq!(r.status, 404, "{r:?}");
    lab.xlvs.check_running().expect("xlvs still running");
}
