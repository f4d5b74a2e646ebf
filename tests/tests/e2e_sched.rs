//! End-to-end: every scheduler, with real TCP connections from the client
//! namespace through one director, shows the choices IPVS would make.
//!
//! One lab and one `xlvs run` serve a NAT service per scheduler, each on its
//! own port of the NAT VIP, all to the three reals' port 8080. The reals are
//! added real1, real2, real3, so IPVS scans them real3, real2, real1.
//!
//! Needs root; run with `--test-threads=1` (see e2e.rs).

use std::collections::BTreeMap;

use tests::topology::{Topology, VIP_NAT};
use tests::traffic::{self, KeepAlive};
use tests::xlvs::{self, Forward, Service, Xlvs};

/// The scheduler services and their ports.
const SERVICES: [(&str, u16, &str); 12] = [
    ("rr", 81, ""),
    ("wrr", 82, ""),
    ("lc", 83, ""),
    ("wlc", 84, ""),
    ("sed", 85, ""),
    ("nq", 86, ""),
    ("dh", 87, ""),
    ("sh", 88, ""),
    ("mh", 89, ""),
    ("lblc", 90, ""),
    ("lblcr", 91, ""),
    ("rr", 92, "persistent = 60\nnetmask = \"255.255.255.0\""),
];

struct Lab {
    xlvs: Xlvs,
    topo: Topology,
}

fn lab() -> Lab {
    // SAFETY: tests run with --test-threads=1; set before any thread reads it.
    unsafe { std::env::set_var("REALSERVER_BIN", env!("CARGO_BIN_EXE_realserver")) };
    let mut topo = Topology::build().expect("build topology");
    topo.start_realservers().expect("start realservers");
    let services: Vec<Service> = SERVICES
        .iter()
        .map(|(sched, port, extra)| {
            let svc = Service::rr("tcp", &format!("{VIP_NAT}:{port}"), Forward::Nat, 8080).scheduled_by(sched);
            let svc = if *sched == "wrr" { svc.with_weights(&[4, 3, 2]) } else { svc };
            if extra.is_empty() { svc } else { svc.with_extra(extra) }
        })
        .collect();
    let config = xlvs::render_config(&topo.director_interfaces(), &services);
    let xlvs = Xlvs::start(topo.director(), &config, &topo.director_interfaces())
        .unwrap_or_else(|e| panic!("start xlvs run: {e:#}\nconfig:\n{config}"));
    Lab { xlvs, topo }
}

impl Lab {
    fn addr(port: u16) -> String {
        format!("{VIP_NAT}:{port}")
    }

    /// Which real answers each of `n` new connections, in order.
    fn sequence(&self, port: u16, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                traffic::http_get(self.topo.client(), &Self::addr(port))
                    .unwrap_or_else(|e| panic!("connection {i} to port {port}: {e:#}"))
            })
            .collect()
    }

    fn distribution(&self, port: u16, n: usize) -> BTreeMap<String, usize> {
        traffic::distribution(self.topo.client(), &Self::addr(port), n).expect("distribution")
    }

    fn hold(&self, port: u16) -> (KeepAlive, String) {
        let mut conn = KeepAlive::connect(self.topo.client(), &Self::addr(port)).expect("keep-alive connect");
        let name = conn.request().expect("keep-alive request");
        (conn, name)
    }
}

fn names(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| (*x).to_string()).collect()
}

/// All the scheduler checks share one lab: building it costs more than the
/// checks themselves.
#[test]
fn every_scheduler_chooses_as_ipvs_does() {
    let lab = lab();

    // rr: newest-added first, then round the list.
    assert_eq!(lab.sequence(81, 6), names(&["real3", "real2", "real1", "real3", "real2", "real1"]), "rr");

    // wrr with real1=4, real2=3, real3=2: the kernel's gcd/max-weight steps.
    assert_eq!(
        lab.sequence(82, 9),
        names(&["real1", "real2", "real1", "real3", "real2", "real1", "real3", "real2", "real1"]),
        "wrr 4/3/2"
    );

    // lc: a connection held open on one real (overhead 256) keeps new ones
    // away from it while the others carry only closed ones (overhead < 256).
    let (held, busy) = lab.hold(83);
    assert_eq!(busy, "real3", "lc: the first pick is the newest real");
    let spread = lab.distribution(83, 10);
    assert_eq!(spread.get("real3"), None, "lc: nothing joins the busy real: {spread:?}");
    assert_eq!(spread.get("real2"), Some(&5), "lc: ties alternate: {spread:?}");
    assert_eq!(spread.get("real1"), Some(&5), "lc: ties alternate: {spread:?}");
    drop(held);

    // wlc: the same, weighted (all weight 1 here).
    let (held, busy) = lab.hold(84);
    let spread = lab.distribution(84, 10);
    assert_eq!(spread.get(&busy), None, "wlc: nothing joins the busy real {busy}: {spread:?}");
    assert_eq!(traffic::answered(&spread), 10, "wlc: {spread:?}");
    drop(held);

    // sed: (active + 1) / weight; a held connection makes its real costlier.
    let (held, busy) = lab.hold(85);
    let next = lab.sequence(85, 1);
    assert_ne!(next[0], busy, "sed: the next connection avoids the busy real");
    drop(held);

    // nq: an idle real wins at once; with one busy, the next goes to the
    // first idle one in scan order.
    let (held, busy) = lab.hold(86);
    assert_eq!(busy, "real3", "nq: the first idle real in scan order");
    assert_eq!(lab.sequence(86, 1), names(&["real2"]), "nq: the next idle real");
    drop(held);

    // dh, sh, mh, lblc, lblcr: one destination and one client, so every
    // connection lands on one real.
    for (sched, port) in [("dh", 87), ("sh", 88), ("mh", 89), ("lblc", 90), ("lblcr", 91)] {
        let spread = lab.distribution(port, 12);
        assert_eq!(spread.len(), 1, "{sched}: one real takes all: {spread:?}");
        assert_eq!(traffic::answered(&spread), 12, "{sched}: {spread:?}");
    }

    // Persistence: rr alone would spread these; the template holds them.
    let spread = lab.distribution(92, 12);
    assert_eq!(spread.len(), 1, "persistent: one real takes all: {spread:?}");
    let json = lab.xlvs.list_json().expect("list --json");
    let persistent = json.services.iter().find(|s| s.address.ends_with(":92")).expect("the persistent service");
    assert_eq!(persistent.scheduler, "rr");
}
