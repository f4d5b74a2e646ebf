//! The ipvsadm views of a live director, and the controller's share of the
//! connection accounting: persistence templates, thresholds, `-c`,
//! `--timeout`, `xlvs set --timeout`, counts draining as the sweeper expires
//! entries, and range services.
//!
//! Needs root, like `e2e.rs`; run with `--test-threads=1` after
//! `cargo build --release -p lb-user`.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::netns::Proc;
use tests::topology::{REAL_IPS, Topology, VIP_NAT};
use tests::traffic::{self, KeepAlive};
use tests::xlvs::{self, Xlvs};

/// A lab with the balancer running. Field order = drop order.
struct Lab {
    xlvs: Xlvs,
    _decaps: Vec<Proc>,
    topo: Topology,
}

fn lab(services: &str) -> Lab {
    // SAFETY: tests run with --test-threads=1; set before any thread reads it.
    unsafe { std::env::set_var("REALSERVER_BIN", env!("CARGO_BIN_EXE_realserver")) };
    let mut topo = Topology::build().expect("build topology");
    topo.start_realservers().expect("start realservers");
    let ifs: Vec<String> = topo.director_interfaces().iter().map(|i| format!("{i:?}")).collect();
    let cfg = format!("[director]\ninterfaces = [{}]\n{services}", ifs.join(", "));
    let xlvs = Xlvs::start(topo.director(), &cfg, &topo.director_interfaces())
        .unwrap_or_else(|e| panic!("start xlvs run: {e:#}\nconfig:\n{cfg}"));
    Lab { xlvs, _decaps: Vec::new(), topo }
}

fn reals(port: u16, extra: &[&str]) -> String {
    REAL_IPS
        .iter()
        .zip(extra.iter().chain(std::iter::repeat(&"")))
        .map(|(ip, extra)| format!("\n[[virtual.real]]\naddress = \"{ip}:{port}\"\n{extra}\n"))
        .collect()
}

fn list(lab: &Lab, args: &[&str]) -> String {
    lab.xlvs.list(args).unwrap_or_else(|e| panic!("xlvs list {args:?}: {e:#}"))
}

fn json(lab: &Lab, args: &[&str]) -> Value {
    let text = list(lab, args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("xlvs list {args:?}: {e}\n{text}"))
}

/// The whitespace-separated columns of the `-> ADDR` line.
fn real_columns(text: &str, addr: &str) -> Vec<String> {
    text.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(addr))
        .unwrap_or_else(|| panic!("no line for {addr}:\n{text}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The `real` entries of service `address` in `list --json`.
fn json_reals<'a>(snapshot: &'a Value, address: &str) -> &'a [Value] {
    snapshot["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["address"] == address))
        .and_then(|s| s["reals"].as_array())
        .unwrap_or_else(|| panic!("no service {address} in {snapshot:#}"))
}

fn sum(reals: &[Value], field: &str) -> u64 {
    reals.iter().map(|r| r[field].as_u64().unwrap_or(0)).sum()
}

fn only_one(d: &BTreeMap<String, usize>) -> String {
    assert_eq!(d.len(), 1, "every connection should go to one real: {d:?}");
    d.keys().next().cloned().unwrap_or_default()
}

fn real_ip(name: &str) -> &'static str {
    match name {
        "real1" => REAL_IPS[0],
        "real2" => REAL_IPS[1],
        "real3" => REAL_IPS[2],
        other => panic!("unexpected real {other:?}"),
    }
}

#[test]
fn persistence_thresholds_connections_and_timeouts_views() {
    let services = format!(
        "timeout_udp = 20\n\
         [[virtual]]\naddress = \"{VIP_NAT}:80\"\nscheduler = \"wlc\"\npersistent = 360\n\
         netmask = \"255.255.255.0\"\nforward = \"nat\"\n{}\
         [[virtual]]\naddress = \"{VIP_NAT}:53\"\nprotocol = \"udp\"\nscheduler = \"sh\"\n\
         scheduler_flags = [\"sh-port\", \"sh-fallback\"]\nforward = \"nat\"\n{}",
        reals(8080, &["u_threshold = 100\nl_threshold = 50"]),
        reals(53, &[]),
    );
    let lab = lab(&services);
    let client = lab.topo.client();
    let vip = format!("{VIP_NAT}:80");

    // Persistence: five new connections from one client all go to one real,
    // and so does a keep-alive one after them.
    let sticky = only_one(&traffic::distribution(client, &vip, 5).unwrap());
    let mut ka = KeepAlive::connect(client, &vip).expect("keep-alive connect");
    assert_eq!(ka.request().unwrap(), sticky);
    let ka_addr = ka.local_addr().unwrap().to_string();
    let sticky_addr = format!("{}:8080", real_ip(&sticky));
    std::thread::sleep(Duration::from_millis(300));

    let text = list(&lab, &["-n"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.contains(&"TCP  10.100.0.100:80 wlc persistent 360 mask 255.255.255.0"), "{text}");
    assert!(lines.contains(&"UDP  10.100.0.100:53 sh (sh-fallback,sh-port)"), "{text}");

    // One template and the open connection on the sticky real; the closed
    // ones count as inactive until they expire.
    let text = list(&lab, &["-n", "--persistent-conn"]);
    assert_eq!(text.lines().nth(1), Some("Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn"));
    assert_eq!(text.lines().nth(2), Some("  -> RemoteAddress:Port"));
    for ip in REAL_IPS {
        let addr = format!("{ip}:8080");
        let cols = real_columns(&text, &addr);
        if addr == sticky_addr {
            assert_eq!(cols[2..5], ["1", "1", "1"], "weight, PersistConn, ActiveConn of {addr}:\n{text}");
            assert_eq!(cols[5], "5", "InActConn of {addr}:\n{text}");
        } else {
            assert_eq!(cols[2..6], ["1", "0", "0", "0"], "{addr}:\n{text}");
        }
    }

    let text = list(&lab, &["-n", "--thresholds"]);
    assert_eq!(text.lines().nth(1), Some("Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn"));
    assert_eq!(real_columns(&text, &format!("{}:8080", REAL_IPS[0]))[2..4], ["100", "50"], "{text}");
    assert_eq!(real_columns(&text, &format!("{}:8080", REAL_IPS[1]))[2..4], ["0", "0"], "{text}");

    // `-c`: the keep-alive connection and the template.
    let text = list(&lab, &["-n", "-c"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[..2], ["IPVS connection entries", "pro expire state       source             virtual            destination"]);
    let row = |state: &str, source: &str| {
        lines
            .iter()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|c| c.len() == 6 && c[2] == state && c[3] == source)
            .unwrap_or_else(|| panic!("no {state} row from {source}:\n{text}"))
    };
    let established = row("ESTABLISHED", &ka_addr);
    assert_eq!((established[0], established[4], established[5]), ("TCP", vip.as_str(), sticky_addr.as_str()));
    assert!(established[1] > "14:00" && established[1] <= "15:00", "{text}");
    let template = row("NONE", "10.1.0.0:0");
    assert_eq!((template[0], template[4], template[5]), ("TCP", vip.as_str(), sticky_addr.as_str()));
    assert!(template[1] > "05:00" && template[1] <= "06:00", "{text}");
    let conns = json(&lab, &["-n", "-c", "--json"]);
    let rows = conns["connections"].as_array().expect("connections");
    assert_eq!(rows.iter().filter(|r| r["template"] == true).count(), 1, "{conns:#}");
    assert_eq!(rows.iter().filter(|r| r["template"] == false).count(), 6, "{conns:#}");

    // Timeouts: from the config, then changed at run time (0 = unchanged).
    assert_eq!(list(&lab, &["--timeout"]), "Timeout (tcp tcpfin udp): 900 120 20\n");
    let out = Command::new(xlvs::xlvs_bin())
        .args(["set", "--timeout", "3600", "0", "0", "--socket"])
        .arg(lab.xlvs.socket())
        .output()
        .expect("run xlvs set");
    assert!(out.status.success(), "xlvs set: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(list(&lab, &["--timeout"]), "Timeout (tcp tcpfin udp): 3600 120 20\n");
    let t = json(&lab, &["--timeout", "--json"]);
    assert_eq!((t["tcp"].as_u64(), t["tcpfin"].as_u64(), t["udp"].as_u64()), (Some(3600), Some(120), Some(20)));
    // The new ESTABLISHED timeout applies to the open connection at once.
    let text = list(&lab, &["-n", "-c"]);
    assert!(text.lines().any(|l| l.contains("ESTABLISHED") && l.contains(" 59:")), "{text}");

    assert_eq!(ka.request().unwrap(), sticky);
}

#[test]
fn counts_and_templates_drain_as_the_sweeper_expires_them() {
    let services = format!(
        "timeout_udp = 1\n\
         [[virtual]]\naddress = \"{VIP_NAT}:53\"\nprotocol = \"udp\"\nscheduler = \"rr\"\n\
         persistent = 1\nforward = \"nat\"\n{}",
        reals(53, &[]),
    );
    let lab = lab(&services);
    let vip = format!("{VIP_NAT}:53");
    let sticky = only_one(&traffic::udp_distribution(lab.topo.client(), &vip, 6).unwrap());
    let snapshot = json(&lab, &["-n", "--json"]);
    let reals = json_reals(&snapshot, &vip);
    // Each query came from a new port: six flows, all on the template's real.
    assert!(sum(reals, "inactive") >= 1, "{snapshot:#}");
    assert_eq!(sum(reals, "active"), 0, "UDP is never active: {snapshot:#}");
    assert_eq!(sum(reals, "persistent_conns"), 1, "{snapshot:#}");
    let r = reals.iter().find(|r| r["address"] == format!("{}:53", real_ip(&sticky))).unwrap();
    assert_eq!(r["persistent_conns"], 1, "{snapshot:#}");

    // Idle for 1 s, swept every 2 s: gone within a few seconds, and with
    // them the template, which no connection holds any more.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let snapshot = json(&lab, &["-n", "--json"]);
        let reals = json_reals(&snapshot, &vip);
        let left = (sum(reals, "inactive"), sum(reals, "persistent_conns"));
        if left == (0, 0) {
            break;
        }
        assert!(Instant::now() < deadline, "counts did not drain: {left:?}\n{snapshot:#}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let text = list(&lab, &["-n", "-c"]);
    assert_eq!(text.lines().count(), 2, "no entries left:\n{text}");
}

#[test]
fn a_range_service_takes_every_address_of_its_network() {
    let services = format!(
        "[[virtual]]\naddress = \"10.100.0.0/24:80\"\nscheduler = \"dh\"\nforward = \"nat\"\n{}",
        reals(8080, &[]),
    );
    let lab = lab(&services);
    let client = lab.topo.client();
    let text = list(&lab, &["-n"]);
    assert!(text.lines().any(|l| l == "TCP  10.100.0.0/24:80 dh"), "{text}");

    // dh: one destination address always reaches the same real...
    only_one(&traffic::distribution(client, "10.100.0.55:80", 4).unwrap());
    // ...and different addresses of the range spread over the reals.
    let mut seen = BTreeMap::new();
    for host in 1..=24 {
        let name = traffic::http_get(client, &format!("10.100.0.{host}:80"))
            .unwrap_or_else(|e| panic!("10.100.0.{host}:80 through the range service: {e:#}"));
        *seen.entry(name).or_insert(0) += 1;
    }
    assert!(seen.len() > 1, "{seen:?}");
    // A port the range does not cover is not balanced.
    assert!(traffic::http_get(client, "10.100.0.55:81").is_err());
    let snapshot = json(&lab, &["-n", "--stats", "--json"]);
    let reals = json_reals(&snapshot, "10.100.0.0/24:80");
    let conns: u64 = reals.iter().map(|r| r["stats"]["conns"].as_u64().unwrap_or(0)).sum();
    assert_eq!(conns, 28, "{snapshot:#}");
}

#[test]
fn an_overloaded_real_is_skipped_until_the_sweeper_drains_it() {
    // real1 takes at most 2 connections; rr scans real3, real2, real1.
    let services = format!(
        "timeout_udp = 2\n\
         [[virtual]]\naddress = \"{VIP_NAT}:53\"\nprotocol = \"udp\"\nscheduler = \"rr\"\nforward = \"nat\"\n{}",
        reals(53, &["u_threshold = 2\nl_threshold = 1"]),
    );
    let lab = lab(&services);
    let vip = format!("{VIP_NAT}:53");
    let first = format!("{}:53", REAL_IPS[0]);
    let d = traffic::udp_distribution(lab.topo.client(), &vip, 9).unwrap();
    let expected: BTreeMap<String, usize> =
        [("real1", 2), ("real2", 3), ("real3", 4)].into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    assert_eq!(d, expected, "real1 is overloaded after its second flow");
    let snapshot = json(&lab, &["-n", "--json"]);
    let r1 = json_reals(&snapshot, &vip).iter().find(|r| r["address"] == first.as_str()).unwrap();
    assert_eq!((r1["inactive"].as_u64(), r1["overloaded"].as_bool()), (Some(2), Some(true)), "{snapshot:#}");

    // Once its flows expire the sweeper uncounts them and, below the lower
    // threshold, clears the flag: real1 gets new flows again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let snapshot = json(&lab, &["-n", "--json"]);
        let r1 = json_reals(&snapshot, &vip).iter().find(|r| r["address"] == first.as_str()).unwrap();
        if r1["overloaded"] == false && r1["inactive"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "real1 stayed overloaded: {snapshot:#}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let d = traffic::udp_distribution(lab.topo.client(), &vip, 3).unwrap();
    assert_eq!(d.get("real1"), Some(&1), "{d:?}");
}
