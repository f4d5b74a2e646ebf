//! Active/backup end to end (issue 6): two directors running the real
//! `xlvs run` with `[vrrp]` (and `[sync]`) on a shared client segment, the
//! three reals behind both, a client that reaches the VIPs on-link (so
//! its neighbour entry follows the gratuitous ARPs), and keepalived as the
//! other router for the interop tests. See `tests::pair` for the lab.
//! The stream tests run over IPv6 too: NAT66 and DR in the dual-stack
//! pair, with the VRRP instance itself over IPv6 (adverts from the
//! link-local address to ff02::12, the VIPs announced by unsolicited
//! neighbour advertisements) and connection sync over IPv4 between the
//! directors.
//!
//! ```text
//! cargo build --release -p lb-user -p tests --bins
//! cargo test --release -p tests --test failover -- --test-threads=1
//! ```
//!
//! Needs root. Each test builds its own namespaces and removes them (and
//! stops what it started, by PID) also when it fails. The takeover time is
//! printed as `takeover_ms=N` and written to `target/bench/failover.json`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use lb_user::vrrp::packet::{self as vrrp_packet, Advert};
use tests::netns::wait_for;
use tests::pair::{
    self, Gateway, Keepalived, PairLab, Seen, Sniffer, StateSampler, Stream, VRID, VrrpOpts,
};
use tests::topology::{DIRECTOR_EXT_IP, REAL_IPS, REAL_IPS6, VIP_DR, VIP_NAT, VIP6_DR, VIP6_NAT};
use tests::traffic::KeepAlive;
use tests::xlvs::{self, Forward, Service, Xlvs};

const ADVERT_MS: u32 = 100;
const DIR1_EXT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const DIR2_EXT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 3);

fn setup_env() {
    // SAFETY: tests run with --test-threads=1; set before any thread reads it.
    unsafe { std::env::set_var("REALSERVER_BIN", env!("CARGO_BIN_EXE_realserver")) };
}

fn vip_dr() -> SocketAddrV4 {
    SocketAddrV4::new(VIP_DR.parse().unwrap(), 80)
}

fn vip_nat() -> SocketAddrV4 {
    SocketAddrV4::new(VIP_NAT.parse().unwrap(), 80)
}

fn dr_service() -> Service {
    Service::rr("tcp", &xlvs::dr_tcp_addr(), Forward::Dr, 80)
}

fn nat_service() -> Service {
    Service::rr("tcp", &xlvs::nat_tcp_addr(), Forward::Nat, 8080)
}

/// The director config of a DR pair member.
fn dr_config(priority: u8, preempt: bool, sync: bool) -> String {
    let mut v = VrrpOpts::new(priority);
    v.preempt = preempt;
    v.sync = sync;
    v.advert_ms = ADVERT_MS;
    pair::pair_config(&[dr_service()], &v)
}

/// The address family of a test's service, VRRP instance and client
/// traffic (sync between the directors is IPv4 either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    /// How `xlvs list --vrrp --json` spells it.
    fn json(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
    /// The reals' addresses.
    fn reals(self) -> [&'static str; 3] {
        match self {
            Family::V4 => REAL_IPS,
            Family::V6 => REAL_IPS6,
        }
    }
    /// The NAT reals' gateway, a VRRP address on the directors' int.
    fn floating_gw(self) -> &'static str {
        match self {
            Family::V4 => pair::FLOATING_GW,
            Family::V6 => pair::FLOATING_GW6,
        }
    }
}

/// The director config of a NAT pair member: the VIP on ext and the
/// reals' gateway on int move together. IPv6: NAT66, and the instance
/// speaks IPv6.
fn nat_config(family: Family, priority: u8) -> String {
    let mut v = VrrpOpts::new(priority);
    v.sync = true;
    v.advert_ms = ADVERT_MS;
    let (service, vip, gw_len) = match family {
        Family::V4 => (nat_service(), VIP_NAT, 24),
        Family::V6 => {
            v.family = Some("ipv6");
            (Service::rr6("tcp", VIP6_NAT, 80, Forward::Nat, 8080), VIP6_NAT, 64)
        }
    };
    v.addresses = vec![
        vip.to_string(),
        format!("{}/{gw_len} dev int", family.floating_gw()),
    ];
    pair::pair_config(&[service], &v)
}

/// The director config of a DR pair member over IPv6: the instance speaks
/// IPv6, with sync; the VIP by default (/128 on ext).
fn dr6_config(priority: u8) -> String {
    let mut v = VrrpOpts::new(priority);
    v.sync = true;
    v.advert_ms = ADVERT_MS;
    v.family = Some("ipv6");
    pair::pair_config(&[Service::rr6("tcp", VIP6_DR, 80, Forward::Dr, 80)], &v)
}

fn lab(gateway: Gateway) -> PairLab {
    setup_env();
    PairLab::build(gateway).unwrap_or_else(|e| panic!("build the pair's lab: {e:#}"))
}

fn lab6(gateway: Gateway) -> PairLab {
    setup_env();
    PairLab::build_dual_stack(gateway)
        .unwrap_or_else(|e| panic!("build the pair's dual-stack lab: {e:#}"))
}

/// Director `i`'s primary address in an instance of `family`: its ext
/// address (IPv4) or ext's link-local one (IPv6), the source of its
/// adverts and what a backup names as the master.
fn primary(lab: &PairLab, i: usize, family: &str) -> IpAddr {
    match family {
        "ipv6" => lab
            .link_local(i, "ext")
            .unwrap_or_else(|e| panic!("{e:#}"))
            .into(),
        _ => [DIR1_EXT, DIR2_EXT][i].into(),
    }
}

/// Starts dir (priority from `cfg1`) and waits for it to be master, then
/// dir2 and waits for it to follow dir as backup.
fn start_pair(lab: &PairLab, cfg1: &str, cfg2: &str) -> (Xlvs, Xlvs) {
    let t = Instant::now();
    let mut a = lab.start_xlvs(0, cfg1).unwrap_or_else(|e| panic!("{e:#}"));
    let sa = pair::wait_state(&mut a, "master", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("dir to become master: {e:#}"));
    let t1 = Instant::now();
    let mut b = lab.start_xlvs(1, cfg2).unwrap_or_else(|e| panic!("{e:#}"));
    follow(&mut b, primary(lab, 0, &sa.family));
    eprintln!(
        "pair up: dir master after {} ms, dir2 backup after {} ms more",
        (t1 - t).as_millis(),
        t1.elapsed().as_millis()
    );
    (a, b)
}

/// Waits until `x` is backup and follows `master`.
fn follow(x: &mut Xlvs, master: impl Into<IpAddr>) -> pair::VrrpStatus {
    let want = master.into().to_string();
    wait_for(
        "backup following the master",
        Duration::from_secs(5),
        || {
            x.check_running()?;
            let s = pair::vrrp_status(x)?;
            Ok((s.state == "backup" && s.master.as_deref() == Some(want.as_str())).then_some(s))
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nstatus: {:?}\nstderr:\n{}",
            pair::vrrp_status(x),
            x.stderr()
        )
    })
}

fn status(x: &Xlvs) -> pair::VrrpStatus {
    pair::vrrp_status(x)
        .unwrap_or_else(|e| panic!("xlvs list --vrrp --json: {e:#}\nstderr:\n{}", x.stderr()))
}

/// `n` new connections through `vip` all answered, by more than one real.
fn check_new_connections(
    lab: &PairLab,
    vip: impl Into<SocketAddr>,
    n: usize,
    what: &str,
) -> BTreeMap<String, usize> {
    let vip = vip.into();
    let d = pair::tally(lab.client(), vip, n).unwrap_or_else(|e| panic!("{e:#}"));
    let ok: usize = d
        .iter()
        .filter(|(k, _)| k.starts_with("real"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        ok, n,
        "{what}: not every new connection through {vip} was answered by a real: {d:?}"
    );
    assert!(
        d.len() > 1,
        "{what}: one real took every connection (rr expected): {d:?}"
    );
    d
}

/// Waits until the client's neighbour entry for `ip` has `mac`.
fn wait_client_neigh(lab: &PairLab, ip: &str, mac: &str, what: &str) {
    let mut last = None;
    wait_for(what, Duration::from_secs(3), || {
        let n = lab.client_neigh(ip)?;
        let done = n.as_ref().is_some_and(|(m, _)| m == mac);
        last = n;
        Ok(done.then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e:#}: client's entry for {ip} is {last:?}, want {mac}"));
}

fn wait_addr(lab: &PairLab, i: usize, ifname: &str, addr: &str, present: bool) {
    wait_for(
        &format!(
            "{addr} {} on {ifname} of dir{}",
            if present { "present" } else { "absent" },
            i + 1
        ),
        Duration::from_secs(3),
        || Ok((lab.has_addr(i, ifname, addr)? == present).then_some(())),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// How the master is taken out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// SIGKILL to its `xlvs run`: no priority-0 advert, nothing cleaned up.
    Kill,
    /// Its client-side link goes down (`ip link set dev ext down`).
    LinkDown,
}

fn fail_master(lab: &PairLab, x: &mut Xlvs, how: Failure) {
    match how {
        Failure::Kill => x
            .signal(libc::SIGKILL)
            .unwrap_or_else(|e| panic!("SIGKILL xlvs: {e:#}")),
        Failure::LinkDown => {
            lab.dir(0)
                .ip(&["link", "set", "dev", "ext", "down"])
                .unwrap_or_else(|e| panic!("{e:#}"));
        }
    }
}

// ------------------------------------------------------------- takeover

/// The master disappears; the backup takes over within Master_Down_Interval
/// (3 × 100 ms + skew 61 ms): it is master, holds the VIP, the client's
/// neighbour entry moves to its MAC, new connections reach the reals.
/// Returns the takeover time measured from the old master's last advert
/// to the first new connection answered through the new one.
fn takeover(how: Failure) -> Duration {
    let lab = lab(Gateway::Router);
    let (mut a, mut b) = start_pair(
        &lab,
        &dr_config(200, true, false),
        &dr_config(100, true, false),
    );
    let vip = vip_dr();
    let (mac1, mac2) = (lab.mac(0, "ext").unwrap(), lab.mac(1, "ext").unwrap());
    assert_ne!(mac1, mac2);

    // Before: dir holds the VIP and forwards; dir2 stands by.
    assert!(
        lab.has_addr(0, "ext", VIP_DR).unwrap(),
        "the master holds the VIP"
    );
    assert!(
        !lab.has_addr(1, "ext", VIP_DR).unwrap(),
        "the backup does not hold the VIP"
    );
    check_new_connections(&lab, vip, 6, "before the failover");
    wait_client_neigh(
        &lab,
        VIP_DR,
        &mac1,
        "the client to resolve the VIP to dir's MAC",
    );
    let sb = status(&b);
    assert_eq!(sb.priority, 100);
    assert!(sb.adverts_received > 0, "{sb:?}");
    let standby = b.list_json().unwrap().counter("pass_standby");
    assert!(
        standby > 0,
        "the backup's data plane did not stand by (pass_standby = 0)"
    );

    let sniffer = Sniffer::start(lab.client(), "eth0", Duration::from_secs(30)).unwrap();
    // Let it see a few adverts of the master.
    wait_for(
        "adverts of the master on the client segment",
        Duration::from_secs(2),
        || {
            Ok((sniffer
                .events()
                .iter()
                .filter(|(_, s)| matches!(s, Seen::Advert { src, .. } if *src == DIR1_EXT))
                .count()
                >= 3)
                .then_some(()))
        },
    )
    .unwrap();

    let t_fail = Instant::now();
    fail_master(&lab, &mut a, how);
    if how == Failure::Kill {
        let gone = (0..400).any(|_| {
            std::thread::sleep(Duration::from_millis(5));
            a.check_running().is_err()
        });
        assert!(gone, "the killed xlvs did not exit within 2 s");
        // By design its program stays attached (over netlink) and its
        // tail-call table pinned: the dead director keeps forwarding, and
        // scheduling, as IPVS does when keepalived dies, until the backup's
        // gratuitous ARPs move the client.
        assert!(
            xlvs::xdp_attached(lab.dir(0), "ext").unwrap(),
            "the killed director's data plane should stay attached"
        );
    }
    // That first connection went through dir2.
    let conns2 = |b: &Xlvs| -> u64 {
        let j = b.list_json().unwrap();
        let svc = j
            .service("tcp", &xlvs::dr_tcp_addr())
            .cloned()
            .expect("the DR service on dir2");
        svc.reals
            .iter()
            .filter_map(|r| r.stats.as_ref())
            .map(|s| s.conns)
            .sum()
    };
    // The takeover ends with the first connection through dir2; until
    // then a killed dir1 may still answer them itself.
    // (Polled every 10 ms, not with `wait_for`'s 50: the time is the
    // takeover figure.)
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut failed = 0;
    let (t_ok, real) = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (t, real, missed) = pair::connect_until_ok(lab.client(), vip, Duration::from_millis(10), left)
            .unwrap_or_else(|e| panic!("{e:#}\nbackup: {:?}\nbackup stderr:\n{}", pair::vrrp_status(&b), b.stderr()));
        failed += missed;
        if conns2(&b) >= 1 {
            break (t, real);
        }
        assert!(Instant::now() < deadline, "no connection went through dir2 within 5 s");
        std::thread::sleep(Duration::from_millis(10));
    };
    let last_advert = sniffer.last_advert_from(DIR1_EXT, t_fail);
    let from = last_advert.unwrap_or(t_fail);
    let took = t_ok - from;
    let first_advert2 = sniffer.first_after(
        t_fail,
        |s| matches!(s, Seen::Advert { src, .. } if *src == DIR2_EXT),
    );
    let first_garp2 = sniffer.first_after(
        t_fail,
        |s| matches!(s, Seen::Garp { mac, .. } if pair::mac_text(mac) == mac2),
    );
    let ms = |t: Option<Instant>| {
        t.map_or("-".to_string(), |t| {
            format!("{}", t.saturating_duration_since(from).as_millis())
        })
    };
    eprintln!(
        "{how:?}: last advert of dir {} ms before the failure; dir2's first advert +{} ms, first gratuitous ARP +{} ms, \
         first answered connection +{} ms ({real}, after {failed} failed attempts)",
        last_advert.map_or("-".into(), |t| t_fail
            .saturating_duration_since(t)
            .as_millis()
            .to_string()),
        ms(first_advert2),
        ms(first_garp2),
        took.as_millis()
    );
    assert!(
        last_advert.is_some(),
        "the sniffer saw no advert of the master"
    );
    assert!(
        first_advert2.is_some(),
        "dir2 sent no advert after the failure"
    );
    assert!(
        first_garp2.is_some(),
        "dir2 sent no gratuitous ARP after the failure"
    );

    // After: dir2 is master, holds the VIP, the client follows it.
    let sb = pair::wait_state(&mut b, "master", Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(sb.master.as_deref(), Some(pair::DIR2_EXT_IP), "{sb:?}");
    assert!(sb.transitions >= 2, "{sb:?}");
    wait_addr(&lab, 1, "ext", VIP_DR, true);
    wait_client_neigh(
        &lab,
        VIP_DR,
        &mac2,
        "the client's neighbour entry for the VIP to move to dir2",
    );
    let d = check_new_connections(&lab, vip, 9, "after the failover");
    eprintln!("new connections through dir2: {d:?}");
    let conns = conns2(&b);
    assert!(conns >= 10, "dir2 scheduled only {conns} connections");
    b.check_running().unwrap();
    took
}

#[test]
fn takeover_when_the_master_is_killed() {
    let took = takeover(Failure::Kill);
    println!("takeover_ms={}", took.as_millis());
    let path = pair::record_bench(&[
        ("takeover_ms", serde_json::json!(took.as_millis() as u64)),
        ("advert_interval_ms", serde_json::json!(ADVERT_MS)),
    ])
    .unwrap();
    eprintln!("written to {}", path.display());
    assert!(
        took < Duration::from_secs(1),
        "takeover took {took:?} (advert interval {ADVERT_MS} ms)"
    );
}

#[test]
fn takeover_when_the_master_link_goes_down() {
    let took = takeover(Failure::LinkDown);
    println!("link_down_takeover_ms={}", took.as_millis());
    pair::record_bench(&[
        (
            "link_down_takeover_ms",
            serde_json::json!(took.as_millis() as u64),
        ),
        ("advert_interval_ms", serde_json::json!(ADVERT_MS)),
    ])
    .unwrap();
    assert!(
        took < Duration::from_secs(1),
        "takeover took {took:?} (advert interval {ADVERT_MS} ms)"
    );
}

// ------------------------------------------------------ stream survives

/// A keep-alive connection doing a request every 50 ms through the VIP
/// survives the master's failure: no reset, no timeout, every answer from
/// the same real. The backup had it from connection sync beforehand, and
/// takes the VIP over: it holds it, announces it (gratuitous ARP or
/// unsolicited neighbour advertisement, with adverts of its own), and the
/// client's neighbour entry for it moves to the backup's MAC.
fn stream_survives(forward: Forward, family: Family, how: Failure) {
    let (gateway, real_port) = match forward {
        Forward::Nat => (Gateway::Floating, 8080),
        _ => (Gateway::Router, 80),
    };
    let lab = match family {
        Family::V4 => lab(gateway),
        Family::V6 => lab6(gateway),
    };
    let (vip, cfg1, cfg2): (SocketAddr, _, _) = match (family, forward) {
        (Family::V4, Forward::Nat) => (vip_nat().into(), nat_config(family, 200), nat_config(family, 100)),
        (Family::V4, _) => (vip_dr().into(), dr_config(200, true, true), dr_config(100, true, true)),
        (Family::V6, Forward::Nat) => (
            SocketAddr::new(VIP6_NAT.parse().unwrap(), 80),
            nat_config(family, 200),
            nat_config(family, 100),
        ),
        (Family::V6, _) => (
            SocketAddr::new(VIP6_DR.parse().unwrap(), 80),
            dr6_config(200),
            dr6_config(100),
        ),
    };
    let vip_ip = vip.ip().to_string();
    let (mut a, mut b) = start_pair(&lab, &cfg1, &cfg2);
    let sb = status(&b);
    assert_eq!(sb.family, family.json(), "the VRRP instance's family: {sb:?}");
    let (primary1, primary2) = (primary(&lab, 0, &sb.family), primary(&lab, 1, &sb.family));
    let gw = family.floating_gw();
    if forward == Forward::Nat {
        wait_addr(&lab, 0, "int", gw, true);
        assert!(!lab.has_addr(1, "int", gw).unwrap());
    }
    assert!(lab.has_addr(0, "ext", &vip_ip).unwrap(), "the master holds {vip_ip}");
    assert!(!lab.has_addr(1, "ext", &vip_ip).unwrap(), "the backup holds {vip_ip}");
    check_new_connections(&lab, vip, 3, "before the failover");
    let (mac1, mac2) = (lab.mac(0, "ext").unwrap(), lab.mac(1, "ext").unwrap());
    assert_ne!(mac1, mac2);
    wait_client_neigh(&lab, &vip_ip, &mac1, "the client to resolve the VIP to dir's MAC");

    let mut ka =
        KeepAlive::connect(lab.client(), &vip.to_string()).unwrap_or_else(|e| panic!("{e:#}"));
    let first = ka
        .request()
        .unwrap_or_else(|e| panic!("first request: {e:#}"));
    assert!(first.starts_with("real"), "{first}");
    let real_index = first.trim_start_matches("real").parse::<usize>().unwrap() - 1;
    let real = SocketAddr::new(family.reals()[real_index].parse().unwrap(), real_port).to_string();
    let stream = Stream::start(ka, Duration::from_millis(50), Duration::from_secs(40)).unwrap();
    let client = stream.local.to_string();

    // The backup has the connection from sync before anything fails.
    let row = wait_for(
        "the backup to show the synced connection",
        Duration::from_secs(5),
        || pair::find_connection(&b, &client, &real),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nbackup's connections: {:?}\nmaster's: {:?}\nbackup stderr:\n{}",
            pair::connections(&b),
            pair::connections(&a),
            b.stderr()
        )
    });
    eprintln!("synced on the backup: {row}");
    assert!(
        pair::find_connection(&a, &client, &real).unwrap().is_some(),
        "the master lists it"
    );
    wait_for("a few exchanges", Duration::from_secs(3), || {
        Ok((stream.log().len() >= 5).then_some(()))
    })
    .unwrap();

    let sniffer = Sniffer::start(lab.client(), "eth0", Duration::from_secs(30)).unwrap();
    let t_fail = Instant::now();
    fail_master(&lab, &mut a, how);
    let sb = pair::wait_state(&mut b, "master", Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(sb.master, Some(primary2.to_string()), "{sb:?}");
    // The VIP moved, and the client followed the new master's
    // announcement of it. From then on the client sends to dir2 only: a
    // killed director's data plane still forwards what it knows (IPv4),
    // so exchanges before this would not prove that dir2 carries the
    // stream.
    wait_addr(&lab, 1, "ext", &vip_ip, true);
    // A broken stream is reported below, with who reset it.
    let followed = !stream.ended();
    if followed {
        wait_client_neigh(
            &lab,
            &vip_ip,
            &mac2,
            "the client's neighbour entry for the VIP to move to dir2",
        );
    }
    let t_moved = Instant::now();
    // Twenty exchanges through dir2, or the stream's end.
    let _ = wait_for(
        "exchanges through the new master",
        Duration::from_secs(10),
        || {
            let after = stream
                .log()
                .iter()
                .filter(|e| e.at > t_moved && e.result.is_ok())
                .count();
            Ok((after >= 20 || stream.ended()).then_some(()))
        },
    );
    let log = stream.finish();
    let errors: Vec<_> = log.iter().filter(|e| e.result.is_err()).collect();
    let stall = log.iter().map(|e| e.took).max().unwrap_or_default();
    let names: BTreeMap<String, usize> =
        log.iter()
            .filter_map(|e| e.result.as_ref().ok())
            .fold(BTreeMap::new(), |mut m, n| {
                *m.entry(n.clone()).or_default() += 1;
                m
            });
    let after = log
        .iter()
        .filter(|e| e.at > t_moved && e.result.is_ok())
        .count();
    eprintln!(
        "{forward:?}/{family:?}/{how:?}: {} exchanges, {after} through dir2 once the client followed it \
         ({}), longest {} ms, answers {names:?}",
        log.len(),
        if followed {
            format!("+{} ms", t_moved.saturating_duration_since(t_fail).as_millis())
        } else {
            "not waited for: the stream had ended".into()
        },
        stall.as_millis()
    );
    println!(
        "stream_stall_ms={} ({forward:?}, {family:?}, {how:?})",
        stall.as_millis()
    );
    if let Some(e) = errors.first() {
        // Who reset it, as the client's segment saw it.
        let who = |mac: &[u8; 6]| {
            let m = pair::mac_text(mac);
            if m == mac1 {
                "dir (the old master)".to_string()
            } else if m == mac2 {
                "dir2 (the new master)".into()
            } else {
                m
            }
        };
        let resets: Vec<String> = sniffer
            .events()
            .iter()
            .filter_map(|(at, s)| match s {
                Seen::Reset { src, dst, mac } => Some(format!(
                    "+{} ms: RST {src} -> {dst} from {}",
                    at.saturating_duration_since(t_fail).as_millis(),
                    who(mac)
                )),
                _ => None,
            })
            .collect();
        panic!(
            "the connection {client} -> {vip} broke {} ms after the failure ({family:?}, {how:?}): {:?}\n\
             resets seen by the client: {resets:#?}\n\
             the old master still holds the VIP: {:?}; XDP still on its ext: {:?}\n\
             old master's stderr:\n{}\nnew master's stderr:\n{}",
            e.at.saturating_duration_since(t_fail).as_millis(),
            e.result,
            lab.has_addr(0, "ext", &vip.ip().to_string()),
            xlvs::xdp_attached(lab.dir(0), "ext"),
            a.stderr(),
            b.stderr()
        );
    }
    assert_eq!(
        names.keys().collect::<Vec<_>>(),
        [&first],
        "answers from another real: {names:?}"
    );
    assert!(after >= 20, "only {after} exchanges after the client moved to dir2");
    // The new master forwards it from the synced entry.
    assert!(
        pair::find_connection(&b, &client, &real).unwrap().is_some(),
        "{:?}",
        pair::connections(&b)
    );
    // The entry moved by the announcement, not by some later resolution.
    let announced = sniffer.first_after(t_fail, |s| match s {
        Seen::Garp { ip, mac } => ip.to_string() == vip_ip && pair::mac_text(mac) == mac2,
        Seen::UnsolicitedNa { ip, mac } => ip.to_string() == vip_ip && pair::mac_text(mac) == mac2,
        _ => false,
    });
    assert!(
        announced.is_some(),
        "dir2 did not announce {vip_ip} with its MAC {mac2} ({})",
        match family {
            Family::V4 => "gratuitous ARP",
            Family::V6 => "unsolicited neighbour advertisement",
        }
    );
    let events = sniffer.events();
    let adverts2 = events
        .iter()
        .filter(|(at, s)| *at >= t_fail && matches!(s, Seen::Advert { src, .. } if *src == primary2))
        .count();
    assert!(adverts2 >= 3, "{adverts2} adverts of dir2 from {primary2} after the failure");
    assert!(
        events.iter().all(|(_, s)| match s {
            Seen::Advert { src, ttl, vrid, .. } =>
                *vrid != VRID || (*ttl == 255 && (*src == primary1 || *src == primary2)),
            _ => true,
        }),
        "adverts of vrid {VRID} from elsewhere than {primary1}/{primary2} or without TTL/hop limit 255: {:?}",
        events.iter().filter(|(_, s)| matches!(s, Seen::Advert { .. })).collect::<Vec<_>>()
    );
    if forward == Forward::Nat {
        // The reals' gateway moved with the VIP.
        wait_addr(&lab, 1, "int", gw, true);
        let int2 = lab.mac(1, "int").unwrap();
        assert_eq!(
            lab.real_gw_mac(real_index, gw).unwrap(),
            Some(int2),
            "{first} still sends its replies elsewhere"
        );
    }
}

#[test]
fn dr_stream_survives_the_master_killed() {
    stream_survives(Forward::Dr, Family::V4, Failure::Kill);
}

#[test]
fn nat_stream_survives_the_master_killed() {
    stream_survives(Forward::Nat, Family::V4, Failure::Kill);
}

#[test]
fn dr_stream_survives_the_master_cut_off() {
    stream_survives(Forward::Dr, Family::V4, Failure::LinkDown);
}

#[test]
fn nat_stream_survives_the_master_cut_off() {
    stream_survives(Forward::Nat, Family::V4, Failure::LinkDown);
}

// A killed director's IPv6 path goes through a tail call (SCHEDULERS):
// the table stays filled after its death only because the director pins it
// in bpffs (`lb_user::dataplane::pin`); without the pin, the dead director's
// kernel, which still holds the VIP, would answer these streams with RST.
#[test]
fn dr6_stream_survives_the_master_killed() {
    stream_survives(Forward::Dr, Family::V6, Failure::Kill);
}

#[test]
fn nat6_stream_survives_the_master_killed() {
    stream_survives(Forward::Nat, Family::V6, Failure::Kill);
}

#[test]
fn dr6_stream_survives_the_master_cut_off() {
    stream_survives(Forward::Dr, Family::V6, Failure::LinkDown);
}

#[test]
fn nat6_stream_survives_the_master_cut_off() {
    stream_survives(Forward::Nat, Family::V6, Failure::LinkDown);
}

// ----------------------------------------------------------- preemption

/// dir (200) is master, stops cleanly, dir2 (100) takes over; dir comes
/// back and preempts (or, without preemption, does not). Both directors'
/// states are sampled every 20 ms throughout: never both master for longer
/// than one advert interval (plus the sampling's own resolution).
fn preemption(preempt: bool) {
    let lab = lab(Gateway::Router);
    let cfg1 = dr_config(200, preempt, false);
    let (a, mut b) = start_pair(&lab, &cfg1, &dr_config(100, preempt, false));
    let (mac1, mac2) = (lab.mac(0, "ext").unwrap(), lab.mac(1, "ext").unwrap());
    let vip = vip_dr();
    check_new_connections(&lab, vip, 3, "before");
    let t0 = Instant::now();
    let sampler = StateSampler::start(
        &[Some(a.socket()), Some(b.socket())],
        Duration::from_millis(20),
        Duration::from_secs(40),
    );
    std::thread::sleep(Duration::from_millis(300));

    // A clean stop: dir resigns (priority 0), dir2 takes over at once.
    sampler.set_socket(0, None);
    let st = a.stop().unwrap();
    assert!(st.success(), "xlvs exited with {st}");
    pair::wait_state(&mut b, "master", Duration::from_secs(2)).unwrap_or_else(|e| panic!("{e:#}"));
    wait_client_neigh(&lab, VIP_DR, &mac2, "the client to follow dir2");
    check_new_connections(&lab, vip, 3, "through dir2");
    assert!(
        !lab.has_addr(0, "ext", VIP_DR).unwrap(),
        "dir removed the VIP when it stopped"
    );

    // dir comes back with the higher priority.
    let mut a = lab.start_xlvs(0, &cfg1).unwrap_or_else(|e| panic!("{e:#}"));
    sampler.set_socket(0, Some(a.socket()));
    if preempt {
        let sa = pair::wait_state(&mut a, "master", Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(sa.master.as_deref(), Some(DIRECTOR_EXT_IP));
        follow(&mut b, DIR1_EXT);
        wait_addr(&lab, 1, "ext", VIP_DR, false);
        wait_client_neigh(&lab, VIP_DR, &mac1, "the client to follow dir again");
    } else {
        follow(&mut a, DIR2_EXT);
        // Twenty advert intervals: dir stays backup, dir2 master.
        std::thread::sleep(Duration::from_millis(20 * u64::from(ADVERT_MS)));
        let (sa, sb) = (status(&a), status(&b));
        assert_eq!(
            (sa.state.as_str(), sb.state.as_str()),
            ("backup", "master"),
            "{sa:?}\n{sb:?}"
        );
        assert!(!lab.has_addr(0, "ext", VIP_DR).unwrap());
        assert_eq!(
            lab.client_neigh(VIP_DR).unwrap().map(|n| n.0),
            Some(mac2.clone())
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let samples = sampler.finish();
    check_new_connections(&lab, vip, 6, "at the end");

    let dual = pair::dual_master(&samples);
    let log = pair::transitions(&samples, t0);
    eprintln!("state changes (sampled):\n{log}{dual:?}");
    println!(
        "dual_master_ms={} (preempt {preempt})",
        dual.longest.as_millis()
    );
    let per_dir = |i: usize| samples.iter().filter(|s| s.director == i).count();
    assert!(
        per_dir(0) > 20 && per_dir(1) > 20,
        "too few samples: {} {}",
        per_dir(0),
        per_dir(1)
    );
    let slack = (dual.max_gap * 2).max(Duration::from_millis(60));
    assert!(
        dual.longest <= Duration::from_millis(u64::from(ADVERT_MS)) + slack,
        "both directors were master for {:?} (slack {slack:?}):\n{log}",
        dual.longest
    );
    // The sampled history itself: dir2 was master in between, and dir
    // master again at the end only with preemption.
    let last = |i: usize| {
        samples
            .iter()
            .rev()
            .find(|s| s.director == i)
            .map(|s| s.state.clone())
            .unwrap()
    };
    assert!(
        samples
            .iter()
            .any(|s| s.director == 1 && s.state == "master"),
        "{log}"
    );
    if preempt {
        assert_eq!(
            (last(0).as_str(), last(1).as_str()),
            ("master", "backup"),
            "{log}"
        );
    } else {
        assert_eq!(
            (last(0).as_str(), last(1).as_str()),
            ("backup", "master"),
            "{log}"
        );
        let came_back = samples
            .iter()
            .position(|s| s.director == 0 && s.state == "backup")
            .unwrap();
        assert!(
            !samples[came_back..]
                .iter()
                .any(|s| s.director == 0 && s.state == "master"),
            "dir preempted with preempt = false:\n{log}"
        );
    }
}

#[test]
fn the_old_master_preempts_when_it_comes_back() {
    preemption(true);
}

#[test]
fn no_preemption_with_preempt_false() {
    preemption(false);
}

// ----------------------------------------------------------- keepalived

/// keepalived's view of its state, from its log.
fn keepalived_entered(ka: &Keepalived, state: &str) -> bool {
    ka.log().contains(&format!("Entering {state} STATE"))
}

/// xlvs (200) is master, keepalived (100) backup on dir2; xlvs is killed:
/// keepalived takes the VIP and the client follows it.
#[test]
fn keepalived_takes_over_from_a_killed_xlvs() {
    let lab = lab(Gateway::Router);
    let mut a = lab
        .start_xlvs(0, &dr_config(200, true, false))
        .unwrap_or_else(|e| panic!("{e:#}"));
    pair::wait_state(&mut a, "master", Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e:#}"));
    let vip_line = format!("{VIP_DR}/32 dev ext");
    let mut ka = Keepalived::start(
        lab.dir(1),
        &pair::keepalived_config(100, ADVERT_MS, &[&vip_line]),
    )
    .unwrap();
    wait_for("keepalived to enter BACKUP", Duration::from_secs(5), || {
        ka.check_running()?;
        Ok(keepalived_entered(&ka, "BACKUP").then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", ka.log()));
    // It stays backup on our adverts: well past its Master_Down_Interval.
    std::thread::sleep(Duration::from_millis(10 * u64::from(ADVERT_MS)));
    assert!(
        !keepalived_entered(&ka, "MASTER"),
        "keepalived became master next to an xlvs master:\n{}",
        ka.log()
    );
    assert!(
        !lab.has_addr(1, "ext", VIP_DR).unwrap(),
        "keepalived took the VIP"
    );
    let sa = status(&a);
    assert_eq!(sa.state, "master", "{sa:?}");
    assert_eq!(
        sa.drop_count("vrid") + sa.drop_count("checksum") + sa.drop_count("version"),
        0,
        "{sa:?}"
    );
    check_new_connections(&lab, vip_dr(), 3, "through xlvs");
    let (mac1, mac2) = (lab.mac(0, "ext").unwrap(), lab.mac(1, "ext").unwrap());
    wait_client_neigh(
        &lab,
        VIP_DR,
        &mac1,
        "the client to resolve the VIP to xlvs's director",
    );

    let t = Instant::now();
    a.signal(libc::SIGKILL).unwrap();
    wait_for("keepalived to take the VIP", Duration::from_secs(3), || {
        ka.check_running()?;
        Ok(lab.has_addr(1, "ext", VIP_DR)?.then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", ka.log()));
    println!("keepalived_takeover_ms={}", t.elapsed().as_millis());
    assert!(keepalived_entered(&ka, "MASTER"), "{}", ka.log());
    wait_client_neigh(
        &lab,
        VIP_DR,
        &mac2,
        "the client's neighbour entry to move to keepalived's director",
    );
    let log = ka.log();
    ka.stop().unwrap();
    for bad in ["invalid", "bad ", "Bad ", "wrong", "mismatch"] {
        assert!(!log.contains(bad), "keepalived complained ({bad}):\n{log}");
    }
}

/// keepalived (200) is master on dir2, xlvs (100) backup; keepalived stops
/// (SIGTERM: a priority-0 advert): xlvs takes over at once and forwards.
#[test]
fn xlvs_takes_over_from_a_stopped_keepalived() {
    let lab = lab(Gateway::Router);
    let vip_line = format!("{VIP_DR}/32 dev ext");
    let mut ka = Keepalived::start(
        lab.dir(1),
        &pair::keepalived_config(200, ADVERT_MS, &[&vip_line]),
    )
    .unwrap();
    wait_for(
        "keepalived to become master",
        Duration::from_secs(5),
        || {
            ka.check_running()?;
            Ok(
                (keepalived_entered(&ka, "MASTER") && lab.has_addr(1, "ext", VIP_DR)?)
                    .then_some(()),
            )
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", ka.log()));
    let mut a = lab
        .start_xlvs(0, &dr_config(100, true, false))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let sa = follow(&mut a, DIR2_EXT);
    assert_eq!(sa.drops.values().sum::<u64>(), 0, "{sa:?}");
    std::thread::sleep(Duration::from_millis(10 * u64::from(ADVERT_MS)));
    let sa = status(&a);
    assert_eq!(
        (sa.state.as_str(), sa.master.as_deref()),
        ("backup", Some(pair::DIR2_EXT_IP)),
        "{sa:?}\n{}",
        ka.log()
    );
    assert!(!lab.has_addr(0, "ext", VIP_DR).unwrap());
    // The client resolves the VIP to keepalived's director (whose kernel
    // refuses the connection: nothing listens there).
    let (mac1, mac2) = (lab.mac(0, "ext").unwrap(), lab.mac(1, "ext").unwrap());
    let _ = pair::tally(lab.client(), vip_dr(), 1);
    wait_client_neigh(
        &lab,
        VIP_DR,
        &mac2,
        "the client to resolve the VIP to keepalived's director",
    );
    let standby = a.list_json().unwrap().counter("pass_standby");
    assert!(
        standby > 0,
        "xlvs's data plane did not stand by as backup (pass_standby = 0)"
    );

    let sniffer = Sniffer::start(lab.client(), "eth0", Duration::from_secs(20)).unwrap();
    let t = Instant::now();
    ka.terminate().unwrap();
    let sa = pair::wait_state(&mut a, "master", Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", ka.log()));
    let took = t.elapsed();
    ka.stop().unwrap();
    // From keepalived's priority-0 advert to xlvs's first advert as master.
    let resigned = sniffer.first_after(
        t,
        |s| matches!(s, Seen::Advert { src, priority: 0, .. } if *src == DIR2_EXT),
    );
    let took_over = resigned.and_then(|r| {
        sniffer.first_after(
            r,
            |s| matches!(s, Seen::Advert { src, .. } if *src == DIR1_EXT),
        )
    });
    let (Some(resigned), Some(took_over)) = (resigned, took_over) else {
        panic!(
            "the sniffer saw no priority-0 advert of keepalived ({resigned:?}) or no advert of xlvs after it: {:?}",
            sniffer.events()
        );
    };
    let skew_ms = (took_over - resigned).as_millis();
    println!(
        "xlvs_after_keepalived_ms={} (from its priority-0 advert: {skew_ms} ms)",
        took.as_millis()
    );
    // A priority-0 advert: the skew time (156/256 of 100 ms), not 3.6 intervals.
    assert!(
        took_over - resigned < Duration::from_millis(250),
        "xlvs took {skew_ms} ms after keepalived's priority-0 advert to take over (skew 61 ms)"
    );
    assert!(
        took < Duration::from_secs(1),
        "xlvs took {took:?} after keepalived's SIGTERM"
    );
    assert_eq!(sa.master.as_deref(), Some(DIRECTOR_EXT_IP));
    wait_addr(&lab, 0, "ext", VIP_DR, true);
    wait_client_neigh(
        &lab,
        VIP_DR,
        &mac1,
        "the client's neighbour entry to move to xlvs's director",
    );
    let d = check_new_connections(&lab, vip_dr(), 9, "through xlvs after keepalived left");
    eprintln!("{d:?}");
    let j = a.list_json().unwrap();
    let conns: u64 = j
        .service("tcp", &xlvs::dr_tcp_addr())
        .map(|s| {
            s.reals
                .iter()
                .filter_map(|r| r.stats.as_ref())
                .map(|s| s.conns)
                .sum()
        })
        .unwrap_or(0);
    assert!(conns >= 9, "xlvs scheduled {conns} connections");
}

// ------------------------------------------------------------- spoofing

/// Adverts injected on the shared segment from the client's namespace
/// that must all be dropped: each claims priority 255, so accepting one
/// would make the master yield.
fn spoofed_adverts(vip: Ipv4Addr) -> Vec<(&'static str, Vec<u8>)> {
    let src = Ipv4Addr::new(10, 1, 0, 99);
    let dst = vrrp_packet::GROUP;
    let owner = Advert {
        vrid: VRID,
        priority: 255,
        interval_cs: 10,
        addresses: vec![vip.into()],
    };
    let good = vrrp_packet::ipv4_datagram(src, dst, &owner.encode(src, dst));
    let mut ttl = good.clone();
    ttl[8] = 254;
    let other = Advert {
        vrid: VRID + 1,
        ..owner.clone()
    };
    let vrid = vrrp_packet::ipv4_datagram(src, dst, &other.encode(src, dst));
    // Only 4 bytes of VRRP header.
    let mut truncated = vrrp_packet::ipv4_datagram(src, dst, &owner.encode(src, dst)[..4]);
    truncated[8] = 255;
    let mut checksum = good.clone();
    checksum[26] ^= 0x5a;
    let mut version = good.clone();
    version[20] = 0x21;
    let mut kind = good.clone();
    kind[20] = 0x32;
    vec![
        ("ttl", ttl),
        ("vrid", vrid),
        ("truncated", truncated),
        ("checksum", checksum),
        ("version", version),
        ("type", kind),
    ]
}

#[test]
fn spoofed_and_malformed_adverts_do_not_move_the_master() {
    let lab = lab(Gateway::Router);
    let (mut a, mut b) = start_pair(
        &lab,
        &dr_config(200, true, false),
        &dr_config(100, true, false),
    );
    let mac1 = lab.mac(0, "ext").unwrap();
    check_new_connections(&lab, vip_dr(), 3, "before");
    let (sa0, sb0) = (status(&a), status(&b));
    let t0 = Instant::now();
    let sampler = StateSampler::start(
        &[Some(a.socket()), Some(b.socket())],
        Duration::from_millis(20),
        Duration::from_secs(30),
    );

    const ROUNDS: u64 = 20;
    let kinds = spoofed_adverts(VIP_DR.parse().unwrap());
    let mut answered = BTreeMap::new();
    for round in 0..ROUNDS {
        for (_, d) in &kinds {
            pair::inject_ipv4(lab.client(), "eth0", vrrp_packet::GROUP, d)
                .unwrap_or_else(|e| panic!("inject: {e:#}"));
        }
        if round % 4 == 0 {
            for (k, v) in pair::tally(lab.client(), vip_dr(), 2).unwrap() {
                *answered.entry(k).or_insert(0) += v;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Well past Master_Down_Interval after the last one.
    std::thread::sleep(Duration::from_millis(5 * u64::from(ADVERT_MS)));
    let samples = sampler.finish();
    let log = pair::transitions(&samples, t0);
    let (sa, sb) = (status(&a), status(&b));
    eprintln!("master: {sa:?}\nbackup: {sb:?}\nsampled:\n{log}");
    assert!(
        samples.iter().all(|s| if s.director == 0 {
            s.state == "master"
        } else {
            s.state == "backup"
        }),
        "a spoofed advert moved the master:\n{log}"
    );
    assert_eq!(
        (sa.state.as_str(), sa.transitions),
        ("master", sa0.transitions),
        "{sa:?}"
    );
    assert_eq!(
        (sb.state.as_str(), sb.transitions, sb.master.as_deref()),
        ("backup", sb0.transitions, Some(DIRECTOR_EXT_IP)),
        "{sb:?}"
    );
    // Forwarding went on throughout, through the same director.
    let ok: usize = answered
        .iter()
        .filter(|(k, _)| k.starts_with("real"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        ok as u64,
        ROUNDS / 4 * 2,
        "connections failed during the injection: {answered:?}"
    );
    assert_eq!(
        lab.client_neigh(VIP_DR).unwrap().map(|n| n.0),
        Some(mac1.clone())
    );
    check_new_connections(&lab, vip_dr(), 6, "after the injection");
    // `list --vrrp --json` counts every one by reason, on both directors.
    for (who, before, after) in [("master", &sa0, &sa), ("backup", &sb0, &sb)] {
        for (reason, _) in &kinds {
            let n = after.drop_count(reason) - before.drop_count(reason);
            assert!(
                n >= ROUNDS,
                "{who}: drops.{reason} grew by {n}, want {ROUNDS}: {:?}",
                after.drops
            );
        }
    }
    let text = xlvs::list(a.socket(), &["--vrrp"]).unwrap();
    assert!(text.contains("dropped ") && text.contains("ttl "), "{text}");

    // The control: the same advert, well-formed, does move the master (so
    // the injection reaches it and the drops above are what kept it).
    let (src, dst) = (Ipv4Addr::new(10, 1, 0, 99), vrrp_packet::GROUP);
    let owner = Advert {
        vrid: VRID,
        priority: 255,
        interval_cs: 10,
        addresses: vec![VIP_DR.parse().unwrap()],
    };
    pair::inject_ipv4(
        lab.client(),
        "eth0",
        dst,
        &vrrp_packet::ipv4_datagram(src, dst, &owner.encode(src, dst)),
    )
    .unwrap();
    let s = wait_for(
        "the master to yield to a valid priority-255 advert, then return",
        Duration::from_secs(3),
        || {
            let s = pair::vrrp_status(&a)?;
            Ok((s.transitions >= sa.transitions + 2 && s.state == "master").then_some(s))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}: {:?}", pair::vrrp_status(&a)));
    assert!(s.adverts_received > sa.adverts_received, "{s:?}");
    pair::wait_state(&mut b, "backup", Duration::from_secs(1)).unwrap();
    a.check_running().unwrap();
}
