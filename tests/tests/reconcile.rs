//! `Dataplane::apply` against the loaded maps: a reload or an edit changes
//! only what differs, keeps the ids (so connections and counters) of what
//! stays, retires what leaves, and refuses a change it has no room for
//! without touching anything. Needs root (loads the XDP object; attaches to
//! nothing).
//!
//! ```text
//! cargo test --release -p tests --test reconcile
//! ```

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use lb_common::sched::Scheduler;
use lb_user::{
    config::{self, Config},
    dataplane::{Applied, Dataplane},
};

fn parse(text: &str) -> Config {
    config::parse("reconcile.toml", &format!("[director]\ninterfaces = [\"lo\"]\n{text}")).expect("a valid config")
}

fn service(protocol: &str, vip: &str, scheduler: &str, reals: &[(&str, u32)]) -> String {
    let mut s = format!("[[virtual]]\naddress = \"{vip}\"\nprotocol = \"{protocol}\"\nscheduler = \"{scheduler}\"\n");
    for (addr, weight) in reals {
        s += &format!("[[virtual.real]]\naddress = \"{addr}\"\nweight = {weight}\n");
    }
    s
}

/// Real ids by "vip real" of every installed service, and service ids by vip.
fn ids(dp: &Dataplane) -> (HashMap<String, u32>, HashMap<String, u32>) {
    let mut reals = HashMap::new();
    let mut services = HashMap::new();
    for s in dp.installed() {
        services.insert(s.service.vip.to_string(), s.id);
        for (r, id) in s.service.reals.iter().zip(&s.real_ids) {
            reals.insert(format!("{} {}", s.service.vip, r.addr), *id);
        }
    }
    (reals, services)
}

#[test]
fn apply_changes_only_what_differs() {
    let mut dp = Dataplane::load(4096).expect("load the XDP object (root?)");
    let hops = HashMap::new();
    let a = parse(&[
        service("tcp", "10.100.0.1:80", "wrr", &[("10.0.1.1", 1), ("10.0.1.2", 2), ("10.0.1.3", 3)]),
        service("tcp", "10.100.0.2:80", "rr", &[("10.0.2.1", 1), ("10.0.2.2", 1)]),
        service("udp", "10.100.0.3:53", "mh", &[("10.0.3.1", 1), ("10.0.3.2", 1)]),
    ]
    .concat());
    let applied = dp.apply(&a.services, &hops).unwrap();
    assert_eq!((applied.services_added, applied.reals_added), (3, 7));
    let (reals_a, services_a) = ids(&dp);
    assert_eq!(reals_a.values().collect::<HashSet<_>>().len(), 7, "distinct real ids");

    // The same config again changes nothing at all.
    assert_eq!(dp.apply(&a.services, &hops).unwrap(), Applied::default());

    // Reweight one real, drop another, add one; leave the second service
    // alone; replace the third with a new one.
    let b = parse(&[
        service("tcp", "10.100.0.1:80", "wrr", &[("10.0.1.1", 1), ("10.0.1.2", 5), ("10.0.1.4", 1)]),
        service("tcp", "10.100.0.2:80", "rr", &[("10.0.2.1", 1), ("10.0.2.2", 1)]),
        service("tcp", "10.100.0.4:443", "wlc", &[("10.0.4.1", 1)]),
    ]
    .concat());
    let applied = dp.apply(&b.services, &hops).unwrap();
    assert_eq!(
        applied,
        Applied {
            services_added: 1,
            services_removed: 1,
            services_changed: 1,
            reals_added: 2,
            reals_removed: 3,
            reals_changed: 1,
        }
    );
    let (reals_b, services_b) = ids(&dp);
    for kept in ["10.100.0.1:80 10.0.1.1", "10.100.0.1:80 10.0.1.2", "10.100.0.2:80 10.0.2.1", "10.100.0.2:80 10.0.2.2"] {
        assert_eq!(reals_b[kept], reals_a[kept], "{kept} keeps its id");
    }
    assert_eq!(services_b["10.100.0.1:80"], services_a["10.100.0.1:80"]);
    assert_eq!(services_b["10.100.0.2:80"], services_a["10.100.0.2:80"]);
    // The freed service id is reused; retired real ids are not (yet).
    assert_eq!(services_b["10.100.0.4:443"], services_a["10.100.0.3:53"]);
    let retired = [reals_a["10.100.0.1:80 10.0.1.3"], reals_a["10.100.0.3:53 10.0.3.1"], reals_a["10.100.0.3:53 10.0.3.2"]];
    for id in retired {
        assert!(dp.is_retired(id), "real {id} retired");
        let entry = dp.real_entry(id).unwrap();
        assert_eq!((entry.service, entry.weight), (u32::MAX, 0), "a retired real belongs to no service");
        assert!(!reals_b.values().any(|v| *v == id), "retired id {id} not reused");
    }
    // The edited real's entry, and the service's length and wrr state:
    // IPVS's dest_changed over the scan order 10.0.1.4 (1), .2 (5), .1 (1).
    let s1 = &b.services[0];
    assert_eq!(dp.real_entry(reals_b["10.100.0.1:80 10.0.1.2"]).unwrap().weight, 5);
    assert_eq!(dp.service_entry(s1).unwrap().nreals, 3);
    let state = dp.sched_state(services_b["10.100.0.1:80"]).unwrap();
    assert_eq!((state.cursor, state.mw, state.di), (0, 5, 1));
    // The removed service is gone from the data plane's lookup.
    assert!(dp.service_entry(&a.services[2]).is_none());

    // A scheduler change starts the new scheduler from its initial state.
    let mut c = b.clone();
    c.services[0].scheduler = Scheduler::Rr;
    let applied = dp.apply(&c.services, &hops).unwrap();
    assert_eq!((applied.services_changed, applied.reals_changed), (1, 0));
    assert_eq!(dp.sched_state(services_b["10.100.0.1:80"]).unwrap(), lb_common::SchedState::default());
    assert_eq!(ids(&dp).0, reals_b, "a scheduler change keeps every real id");

    // Nothing counts on the retired reals: their ids come free.
    assert_eq!(dp.release_retired(&HashSet::new()), 3);
    // A real id some connection still names stays retired.
    dp.apply(&b.services[..2], &hops).unwrap();
    let gone = reals_b["10.100.0.4:443 10.0.4.1"];
    assert_eq!(dp.release_retired(&HashSet::from([gone])), 0);
    assert!(dp.is_retired(gone));
    assert_eq!(dp.release_retired(&HashSet::new()), 1);
}

#[test]
fn a_change_without_room_changes_nothing() {
    let mut dp = Dataplane::load(4096).expect("load the XDP object (root?)");
    let hops = HashMap::new();
    let small = parse(&service("tcp", "10.100.0.1:80", "rr", &[("10.0.1.1", 1), ("10.0.1.2", 1)]));
    dp.apply(&small.services, &hops).unwrap();
    let before = ids(&dp);
    // Every real id at once, while the two in use would only be retired.
    let mut text = String::new();
    for i in 0..(lb_common::MAX_REALS as usize / lb_common::MAX_REALS_PER_SERVICE) {
        let reals: Vec<(String, u32)> = (0..lb_common::MAX_REALS_PER_SERVICE)
            .map(|j| (Ipv4Addr::new(10, 20 + i as u8, (j / 250) as u8, (j % 250 + 1) as u8).to_string(), 1))
            .collect();
        let reals: Vec<(&str, u32)> = reals.iter().map(|(a, w)| (a.as_str(), *w)).collect();
        text += &service("tcp", &format!("10.200.0.{}:80", i + 1), "rr", &reals);
    }
    let big = parse(&text);
    let e = dp.apply(&big.services, &hops).expect_err("no room for 8192 new reals");
    assert!(e.to_string().contains("8192 new reals but only 8190 free real ids"), "{e}");
    assert_eq!(ids(&dp), before, "nothing changed");
    assert_eq!(dp.service_entry(&small.services[0]).unwrap().nreals, 2);
}
