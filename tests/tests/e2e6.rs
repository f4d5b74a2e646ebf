//! IPv6 end to end: the dual-stack lab (`Topology::build_dual_stack`), the
//! real `xlvs` on the director with IPv6 services in every forwarding
//! method, and traffic from the client's IPv6 address.
//!
//! - NAT66, direct routing and IPv6-in-IPv6 (the reals run `xlvs decap`)
//!   each spread requests over the three reals, and `xlvs list -n` shows
//!   them in ipvsadm's bracket form;
//! - path MTU in tunnel mode: a client whose segments no longer fit once
//!   encapsulated gets "packet too big" and retries smaller;
//! - a UDP datagram larger than the path MTU, which the client's kernel
//!   fragments, reaches one real whole.
//!
//! Needs root; `cargo xtask test` runs it (see tests/tests/e2e.rs).

use std::collections::BTreeMap;

use tests::netns::Proc;
use tests::topology::{REAL_IPS6, Topology, VIP_TUN, VIP6_DR, VIP6_NAT, VIP6_TUN};
use tests::traffic;
use tests::xlvs::{self, Forward, Service, Xlvs};

/// Field order = drop order: xlvs, the decap processes, then the lab.
struct Lab {
    xlvs: Xlvs,
    _decaps: Vec<Proc>,
    topo: Topology,
}

fn lab(services: &[Service]) -> Lab {
    // SAFETY: tests run with --test-threads=1; set before any thread reads it.
    unsafe { std::env::set_var("REALSERVER_BIN", env!("CARGO_BIN_EXE_realserver")) };
    let mut topo = Topology::build_dual_stack().expect("build the dual-stack lab");
    topo.start_realservers().expect("start realservers");
    let decaps = topo
        .reals()
        .iter()
        .map(|r| xlvs::decap(&r.ns, topo.real_if(), &[VIP_TUN, VIP6_TUN]))
        .collect::<anyhow::Result<Vec<_>>>()
        .expect("xlvs decap on the reals, for both families");
    let cfg = xlvs::render_config(&topo.director_interfaces(), services);
    let xlvs = Xlvs::start(topo.director(), &cfg, &topo.director_interfaces())
        .unwrap_or_else(|e| panic!("start xlvs run: {e:#}\nconfig:\n{cfg}"));
    Lab { xlvs, _decaps: decaps, topo }
}

fn even(n: usize) -> BTreeMap<String, usize> {
    ["real1", "real2", "real3"].iter().map(|r| (r.to_string(), n)).collect()
}

#[test]
fn every_forwarding_method_balances_ipv6() {
    let lab = lab(&[
        Service::rr6("tcp", VIP6_NAT, 80, Forward::Nat, 8080),
        Service::rr6("udp", VIP6_NAT, 53, Forward::Nat, 53),
        Service::rr6("tcp", VIP6_DR, 80, Forward::Dr, 80),
        Service::rr6("tcp", VIP6_TUN, 80, Forward::Tun, 80),
    ]);
    let client = lab.topo.client();
    for (what, addr) in [
        ("NAT66", format!("[{VIP6_NAT}]:80")),
        ("DR", format!("[{VIP6_DR}]:80")),
        ("IPv6-in-IPv6", format!("[{VIP6_TUN}]:80")),
    ] {
        let got = traffic::distribution(client, &addr, 30).expect("requests");
        assert_eq!(got, even(10), "{what}: 30 requests over three reals, round robin");
    }
    let got = traffic::udp_distribution(client, &format!("[{VIP6_NAT}]:53"), 15).expect("queries");
    assert_eq!(got, even(5), "NAT66 UDP");

    // ipvsadm's bracket form, every real with its connections counted.
    let text = lab.xlvs.list(&["-n"]).expect("xlvs list -n");
    for (proto, vip, forward, port) in [
        ("TCP", VIP6_NAT, "Masq", 8080),
        ("UDP", VIP6_NAT, "Masq", 53),
        ("TCP", VIP6_DR, "Route", 80),
        ("TCP", VIP6_TUN, "Tunnel", 80),
    ] {
        let service = format!("[{vip}]:{}", if proto == "UDP" { 53 } else { 80 });
        let at = text
            .lines()
            .position(|l| l.split_whitespace().take(2).eq([proto, service.as_str()]))
            .unwrap_or_else(|| panic!("no `{proto}  {service}` line in:\n{text}"));
        let reals: Vec<&str> = text.lines().skip(at + 1).take_while(|l| l.trim_start().starts_with("->")).collect();
        assert_eq!(reals.len(), 3, "{service}: three reals in:\n{text}");
        for ip in REAL_IPS6 {
            let want = format!("[{ip}]:{port}");
            let line = reals
                .iter()
                .find(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
                .unwrap_or_else(|| panic!("no real {want} under {service} in:\n{text}"));
            assert_eq!(line.split_whitespace().nth(2), Some(forward), "{line}");
        }
    }
    let json = lab.xlvs.list_json().expect("list --json");
    let counters = |name: &str| json.counter(name);
    assert_eq!(counters("conn_new"), 30 * 3 + 15, "every request a new connection");
    assert_eq!(counters("drop_bad_header") + counters("drop_truncated"), 0);
}

#[test]
fn tunnel_path_mtu_and_fragments_over_ipv6() {
    let lab = lab(&[Service::rr6("tcp", VIP6_TUN, 80, Forward::Tun, 80), Service::rr6("udp", VIP6_NAT, 53, Forward::Nat, 53)]);
    let client = lab.topo.client();
    // A request of several full-sized segments: the first ones do not fit
    // the tunnel; the client learns the MTU from the VIP and sends smaller.
    let addr = format!("[{VIP6_TUN}]:80");
    let answer = traffic::http_get_padded(client, &addr, 4000).expect("a padded request through the tunnel");
    assert!(answer.starts_with("real"), "answered by a real: {answer:?}");
    let json = lab.xlvs.list_json().expect("list --json");
    assert!(json.counter("icmp6_too_big_sent") >= 1, "packet too big was sent: {json:?}");
    // The client's kernel now knows the smaller path MTU towards the VIP.
    let route = client.ip(&["-6", "route", "get", VIP6_TUN]).expect("ip route get");
    assert!(route.contains("mtu 1460"), "the client learnt the tunnel's MTU: {route}");
    // Later requests fit at once.
    let before = lab.xlvs.list_json().expect("list --json").counter("icmp6_too_big_sent");
    let got = traffic::distribution(client, &addr, 6).expect("requests");
    assert_eq!(got, even(2));
    assert_eq!(lab.xlvs.list_json().expect("list --json").counter("icmp6_too_big_sent"), before);

    // 3000 bytes of UDP over a 1500-byte path: the client's kernel sends
    // three fragments; the answer means one real reassembled them all.
    let answer = traffic::udp_query_sized(client, &format!("[{VIP6_NAT}]:53"), 3000).expect("a fragmented query");
    assert!(answer.starts_with("real"), "answered by a real: {answer:?}");
    let json = lab.xlvs.list_json().expect("list --json");
    assert_eq!(json.counter("frag_relayed"), 2, "the later fragments followed the first");
    assert_eq!(json.counter("pass_fragment"), 0);
}
