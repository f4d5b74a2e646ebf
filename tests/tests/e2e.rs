//! End-to-end tests: a namespace lab (client, director, three reals), the
//! real `xlvs` binary on the director and traffic from the client.
//!
//! Needs root and a kernel with XDP; each test builds its own lab with a
//! unique name prefix. Build the controller first and run one test at a time:
//!
//! ```text
//! cargo build --release -p lb-user
//! cargo test -p tests --test e2e -- --test-threads=1
//! ```
//!
//! `XLVS_BIN` overrides the controller binary (default
//! `target/release/xlvs`).

use std::collections::BTreeMap;
use std::time::Duration;

use tests::netns::{Proc, ip};
use tests::topology::{self, REAL_IPS, Topology};
use tests::traffic::{self, KeepAlive};
use tests::xlvs::{self, Forward, ListJson, Service, Xlvs};

fn setup_env() {
    // The realserver binary of this very build.
    // SAFETY: tests run with --test-threads=1; set before any thread reads it.
    unsafe { std::env::set_var("REALSERVER_BIN", env!("CARGO_BIN_EXE_realserver")) };
}

/// A lab with the balancer running. Field order = drop order: xlvs first,
/// then the decap processes, then the topology (realservers, namespaces).
struct Lab {
    xlvs: Xlvs,
    _decaps: Vec<Proc>,
    topo: Topology,
}

fn lab(config: impl FnOnce(&Topology) -> String) -> Lab {
    setup_env();
    let mut topo = Topology::build().expect("build topology");
    topo.start_realservers().expect("start realservers");
    let decaps = xlvs::decap_all(&topo).expect("start xlvs decap on the reals");
    let cfg = config(&topo);
    let xlvs = Xlvs::start(topo.director(), &cfg, &topo.director_interfaces())
        .unwrap_or_else(|e| panic!("start xlvs run: {e:#}\nconfig:\n{cfg}"));
    Lab {
        xlvs,
        _decaps: decaps,
        topo,
    }
}

fn names(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn even(n: usize) -> BTreeMap<String, usize> {
    names(&[("real1", n), ("real2", n), ("real3", n)])
}

fn real_index(name: &str) -> usize {
    match name {
        "real1" => 0,
        "real2" => 1,
        "real3" => 2,
        other => panic!("unexpected real name {other:?}"),
    }
}

/// The `-> ADDR ...` line of real `addr` in the block of service
/// `proto vip` of `list -n` output.
fn real_line<'a>(text: &'a str, proto: &str, vip: &str, addr: &str) -> &'a str {
    text.lines()
        .skip_while(|l| {
            let mut w = l.split_whitespace();
            !(w.next() == Some(proto) && w.next() == Some(vip))
        })
        .skip(1)
        .take_while(|l| l.trim_start().starts_with("->"))
        .find(|l| l.split_whitespace().nth(1) == Some(addr))
        .unwrap_or_else(|| {
            panic!("no line for real {addr} under {proto} {vip} in `xlvs list -n`:\n{text}")
        })
}

fn check_list_text(
    lab: &Lab,
    proto: &str,
    vip: &str,
    forward: Forward,
    real_port: u16,
    weights: [u32; 3],
) {
    let text = lab.xlvs.list(&["-n"]).expect("xlvs list -n");
    assert!(
        text.lines()
            .next()
            .unwrap_or("")
            .starts_with("IP Virtual Server version"),
        "unexpected header:\n{text}"
    );
    let svc_line = text
        .lines()
        .find(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some(proto) && w.next() == Some(vip)
        })
        .unwrap_or_else(|| panic!("no service line `{proto}  {vip}` in:\n{text}"));
    assert!(
        svc_line.split_whitespace().any(|w| w == "rr"),
        "scheduler missing: {svc_line:?}"
    );
    for (ip, w) in REAL_IPS.iter().zip(weights) {
        let line = real_line(&text, proto, vip, &format!("{ip}:{real_port}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        // -> ADDR Forward Weight ActiveConn InActConn
        assert_eq!(
            cols.get(2),
            Some(&forward.list_name()),
            "forward column in {line:?}\n{text}"
        );
        assert_eq!(
            cols.get(3),
            Some(&w.to_string().as_str()),
            "weight column in {line:?}\n{text}"
        );
    }
}

/// No data-plane drop counter moved (the lab has no malformed traffic).
fn check_no_drops(json: &ListJson) {
    let nonzero: BTreeMap<_, _> = json.counters.iter().filter(|(_, v)| **v != 0).collect();
    eprintln!("data-plane counters (non-zero): {nonzero:?}");
    for (name, v) in &json.counters {
        assert!(
            !name.starts_with("drop") || *v == 0,
            "counter {name} = {v}: {:?}",
            json.counters
        );
    }
}

/// 300 new connections → 100 per real; then a keep-alive connection stays on
/// its real while 30 other connections come and go (10 per real); then the
/// counters in `list --json` and the `list -n` text agree.
fn method_test(forward: Forward, vip_addr: &str, real_port: u16) {
    let lab = lab(xlvs::demo_config);
    let client = lab.topo.client();

    let d = traffic::distribution(client, vip_addr, 300).unwrap();
    assert_eq!(
        d,
        even(100),
        "300 new connections to {vip_addr} ({forward:?})"
    );

    let mut ka = KeepAlive::connect(client, vip_addr).expect("keep-alive connect");
    let sticky = ka.request().expect("first keep-alive request");
    let mut others = BTreeMap::new();
    for i in 0..30 {
        let name = traffic::http_get(client, vip_addr)
            .unwrap_or_else(|e| panic!("new connection {i} during keep-alive: {e:#}"));
        *others.entry(name).or_insert(0usize) += 1;
        let again = ka
            .request()
            .unwrap_or_else(|e| panic!("keep-alive request {i}: {e:#}"));
        assert_eq!(
            again, sticky,
            "keep-alive connection moved to another real (request {i})"
        );
    }
    assert_eq!(others, even(10), "30 connections around the keep-alive one");

    std::thread::sleep(Duration::from_millis(300));
    let json: ListJson = lab.xlvs.list_json().expect("xlvs list --json");
    let svc = json
        .service("tcp", vip_addr)
        .unwrap_or_else(|| panic!("service tcp {vip_addr} missing in {json:#?}"));
    assert_eq!(svc.scheduler, "rr");
    assert_eq!(svc.reals.len(), 3, "{svc:#?}");
    let sticky_idx = real_index(&sticky);
    let mut total = 0;
    for (i, ip) in REAL_IPS.iter().enumerate() {
        let addr = format!("{ip}:{real_port}");
        let r = svc
            .real(&addr)
            .unwrap_or_else(|| panic!("real {addr} missing in {svc:#?}"));
        assert_eq!(r.forward, forward.config_name(), "{r:#?}");
        assert_eq!(r.weight, 1);
        let stats = r
            .stats
            .as_ref()
            .unwrap_or_else(|| panic!("no stats for {addr}: {r:#?}"));
        let want = 110 + u64::from(i == sticky_idx);
        assert_eq!(stats.conns, want, "conns of {addr} ({forward:?}): {r:#?}");
        assert!(stats.inpkts >= 3 * want, "inpkts of {addr}: {r:#?}");
        assert!(stats.inbytes > 0, "inbytes of {addr}: {r:#?}");
        if forward == Forward::Nat {
            assert!(
                stats.outpkts >= 2 * want,
                "outpkts of {addr} (NAT sees replies): {r:#?}"
            );
            assert!(stats.outbytes > 0, "outbytes of {addr}: {r:#?}");
        }
        let active = u64::from(i == sticky_idx);
        assert_eq!(
            r.active,
            active,
            "ActiveConn of {addr} (only the keep-alive one is open): {r:#?}\nconnections:\n{}",
            lab.xlvs.list(&["-c", "-n"]).unwrap_or_default()
        );
        total += stats.conns;
    }
    assert_eq!(total, 331);
    if let Some(s) = &svc.stats {
        assert_eq!(s.conns, 331, "service conns: {svc:#?}");
    }
    check_no_drops(&json);

    check_list_text(&lab, "TCP", vip_addr, forward, real_port, [1, 1, 1]);
    let stats_text = lab
        .xlvs
        .list(&["-n", "--stats"])
        .expect("xlvs list -n --stats");
    assert!(stats_text.contains(vip_addr), "{stats_text}");

    // The keep-alive connection still works at the end.
    assert_eq!(ka.request().expect("last keep-alive request"), sticky);
    drop(ka);
    let mut lab = lab;
    lab.xlvs.check_running().expect("xlvs still running");
}

#[test]
fn topology_kernel_forwarding_without_balancer() {
    setup_env();
    let prefix;
    {
        let mut topo = Topology::build().expect("build topology");
        prefix = topo.prefix().to_string();
        topo.start_realservers().expect("start realservers");
        for (i, ip) in REAL_IPS.iter().enumerate() {
            let want = format!("real{}", i + 1);
            let got =
                traffic::http_get(topo.client(), &format!("{ip}:8080")).expect("http via director");
            assert_eq!(got, want);
            let got = traffic::http_get(topo.client(), &format!("{ip}:80")).expect("http :80");
            assert_eq!(got, want);
            let got =
                traffic::udp_query(topo.client(), &format!("{ip}:53")).expect("udp via director");
            assert_eq!(got, want);
        }
        let mut ka = KeepAlive::connect(topo.client(), "10.0.1.12:8080").unwrap();
        assert_eq!(ka.requests(5).unwrap(), vec!["real2"; 5]);
        let d = traffic::distribution(topo.client(), "10.0.1.13:8080", 20).unwrap();
        assert_eq!(d, names(&[("real3", 20)]));
        // The reals own the DR/TUN VIPs on lo (reachable from their own ns).
        let r1 = &topo.reals()[0].ns;
        let got = traffic::http_get(r1, &format!("{}:80", topology::VIP_DR)).unwrap();
        assert_eq!(got, "real1");
        // A second director can join both segments (for active/backup).
        let dir2 = topo
            .add_director("dir2", "10.1.0.3/24", "10.0.1.3/24")
            .expect("add a second director")
            .name()
            .to_string();
        let dir2 = topo.ns(&dir2).unwrap();
        assert_eq!(traffic::http_get(dir2, "10.0.1.11:8080").unwrap(), "real1");
        assert_eq!(traffic::udp_query(dir2, "10.0.1.13:53").unwrap(), "real3");
        // Nothing of the lab is in the root namespace.
        let links = ip(&["-o", "link", "show"]).unwrap();
        for p in topo.ports() {
            assert!(
                !links.contains(&format!(" {}@", p.port)),
                "{} leaked into the root ns",
                p.port
            );
        }
    }
    let left = ip(&["netns", "list"]).unwrap();
    assert!(!left.contains(&prefix), "namespaces left behind:\n{left}");
}

#[test]
fn nat_tcp_rr() {
    method_test(Forward::Nat, &xlvs::nat_tcp_addr(), 8080);
}

#[test]
fn dr_tcp_rr() {
    method_test(Forward::Dr, &xlvs::dr_tcp_addr(), 80);
}

#[test]
fn tun_tcp_rr() {
    method_test(Forward::Tun, &xlvs::tun_tcp_addr(), 80);
}

/// TUN and path MTU discovery: the tunnel header takes the client's
/// full-sized segments past the 1500-byte MTU towards the reals. The
/// director answers each with "fragmentation needed" (1480), the client's
/// kernel lowers its path MTU to the VIP and sends smaller segments, and a
/// request that spans several segments gets its answer.
#[test]
fn tun_path_mtu_discovery() {
    let lab = lab(xlvs::demo_config);
    let addr = xlvs::tun_tcp_addr();
    let vip = addr.split(':').next().expect("VIP:port");
    let got = traffic::http_get_padded(lab.topo.client(), &addr, 6000).expect("a 6 KB request through the tunnel");
    assert!(got.starts_with("real"), "answered by {got:?}");
    let json = lab.xlvs.list_json().expect("list --json");
    let sent = json.counters.get("icmp_frag_needed_sent").copied().unwrap_or(0);
    assert!(sent >= 1, "the director sent no fragmentation needed: {:?}", json.counters);
    let route = lab.topo.client().ip(&["route", "get", vip]).expect("ip route get");
    assert!(route.contains("mtu 1480"), "the client learnt no path MTU to {vip}: {route}");
    check_no_drops(&json);
}

/// Fragments: a 4000-byte datagram leaves the client in three fragments;
/// the director sends the later two after the first, to the same real,
/// which reassembles the datagram and answers. Ten such queries go round
/// the reals as whole datagrams do.
#[test]
fn nat_udp_fragmented_datagrams_reach_one_real_whole() {
    let lab = lab(xlvs::demo_config);
    let addr = xlvs::nat_udp_addr();
    let mut answered = BTreeMap::new();
    for i in 0..9 {
        let name = traffic::udp_query_sized(lab.topo.client(), &addr, 4000)
            .unwrap_or_else(|e| panic!("fragmented query {i} to {addr}: {e:#}"));
        *answered.entry(name).or_insert(0) += 1;
    }
    assert_eq!(answered, even(3), "9 fragmented queries, round robin");
    let json = lab.xlvs.list_json().expect("list --json");
    let relayed = json.counters.get("frag_relayed").copied().unwrap_or(0);
    assert_eq!(relayed, 18, "two later fragments per query: {:?}", json.counters);
    check_no_drops(&json);
}

#[test]
fn nat_udp_rr() {
    let lab = lab(xlvs::demo_config);
    let addr = xlvs::nat_udp_addr();
    let d = traffic::udp_distribution(lab.topo.client(), &addr, 30).unwrap();
    assert_eq!(d, even(10), "30 UDP queries to {addr}");
    let json = lab.xlvs.list_json().expect("list --json");
    let svc = json
        .service("udp", &addr)
        .unwrap_or_else(|| panic!("no udp service in {json:#?}"));
    for ip in REAL_IPS {
        let a = format!("{ip}:53");
        let r = svc
            .real(&a)
            .unwrap_or_else(|| panic!("real {a} missing: {svc:#?}"));
        let st = r
            .stats
            .as_ref()
            .unwrap_or_else(|| panic!("no stats: {r:#?}"));
        assert_eq!(st.conns, 10, "{r:#?}");
        assert_eq!(st.inpkts, 10, "{r:#?}");
        assert_eq!(st.outpkts, 10, "{r:#?}");
    }
    check_no_drops(&json);
    check_list_text(&lab, "UDP", &addr, Forward::Nat, 53, [1, 1, 1]);
}

#[test]
fn weight_zero_gets_nothing() {
    let lab = lab(|t| {
        xlvs::render_config(
            &t.director_interfaces(),
            &[
                Service::rr("tcp", &xlvs::nat_tcp_addr(), Forward::Nat, 8080)
                    .with_weights(&[1, 1, 0]),
            ],
        )
    });
    let addr = xlvs::nat_tcp_addr();
    let d = traffic::distribution(lab.topo.client(), &addr, 300).unwrap();
    assert_eq!(d, names(&[("real1", 150), ("real2", 150)]), "weights 1/1/0");
    check_list_text(&lab, "TCP", &addr, Forward::Nat, 8080, [1, 1, 0]);
    let json = lab.xlvs.list_json().unwrap();
    let svc = json.service("tcp", &addr).unwrap();
    let r3 = svc.real("10.0.1.13:8080").unwrap();
    assert_eq!(r3.weight, 0);
    assert_eq!(r3.stats.as_ref().map(|s| s.conns).unwrap_or(0), 0);
}

#[test]
fn xlvs_stops_cleanly_and_detaches() {
    let lab = lab(xlvs::demo_config);
    assert_eq!(
        traffic::http_get(lab.topo.client(), &xlvs::nat_tcp_addr())
            .unwrap()
            .len(),
        5
    );
    let Lab {
        xlvs: x,
        _decaps,
        topo,
    } = lab;
    let status = x.stop().expect("stop xlvs");
    assert!(status.success(), "xlvs run exited with {status} on SIGTERM");
    for ifname in topo.director_interfaces() {
        assert!(
            !xlvs::xdp_attached(topo.director(), ifname).unwrap(),
            "XDP still attached to {ifname} after xlvs run exited"
        );
    }
}
