//! `Dataplane::apply` against the loaded maps: a reload or an edit changes
//! only what differs, keeps the ids (so connections and counters) of what
//! stays, retires what leaves, and refuses a change it has no room for
//! without touching anything; and while attached, its tail-call table is
//! pinned. Needs root (loads the XDP object; attaches only to a veth in a
//! namespace of its own).
//!
//! ```text
//! cargo test --release -p tests --test reconcile
//! ```

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::Path;

use lb_common::sched::Scheduler;
use lb_user::{
    config::{self, Config},
    dataplane::{Applied, Dataplane, TableSizes},
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
    let mut dp = Dataplane::load(TableSizes { conns: 4096, cache: 2048, frags: 3072 }).expect("load the XDP object (root?)");
    // `[director] conn_table_size`, `cache_size` and `frag_table_size`
    // size the tables.
    let sizes: HashMap<String, u32> = aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .filter(|m| matches!(m.max_entries(), 2048 | 3072 | 4096))
        .filter_map(|m| Some((m.name_as_str()?.to_owned(), m.max_entries())))
        .collect();
    for (map, want) in [("CONNS", 4096), ("TEMPLATES", 2048), ("LBLC", 2048), ("LBLCR", 2048), ("FRAGS", 3072)] {
        assert_eq!(sizes.get(map), Some(&want), "{map}'s entries: {sizes:?}");
    }
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
    let mut dp = Dataplane::load(TableSizes { conns: 4096, ..TableSizes::default() }).expect("load the XDP object (root?)");
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

/// While attached, the tail-call table is pinned in bpffs under the
/// namespace's inode, filled, so that a director that dies attached leaves
/// a whole data plane (the failover suite kills one); a clean stop unpins.
#[test]
fn the_tail_call_table_is_pinned_while_attached() {
    use std::os::unix::fs::MetadataExt as _;
    let ns = tests::netns::Netns::create(&format!("{}-pin", tests::netns::unique_prefix())).unwrap();
    ns.ip(&["link", "add", "pin0", "type", "veth", "peer", "name", "pin1"]).unwrap();
    ns.ip(&["link", "set", "pin0", "up"]).unwrap();
    ns.ip(&["link", "set", "pin1", "up"]).unwrap();
    let pin = tests::netns::director_pin(std::fs::metadata(ns.path()).unwrap().ino());
    let slots = ns
        .run_in(|| {
            assert_eq!(pin, lb_user::dataplane::pin::path_for(std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()));
            let mut dp = Dataplane::load(TableSizes { conns: 4096, ..TableSizes::default() }).expect("load the XDP object (root?)");
            assert!(!pin.exists(), "nothing is pinned before the director attaches");
            dp.attach("pin0").expect("attach to the namespace's veth");
            let table = aya::maps::MapData::from_pin(&pin).expect("the table is pinned");
            let slots: HashSet<u32> = (0..lb_common::SCHEDULERS_SLOTS).filter(|&slot| prog_id(&table, slot).is_some()).collect();
            drop(dp);
            assert!(!pin.exists(), "a clean stop unpins");
            let xlvs_dir = pin.parent().and_then(Path::parent).unwrap();
            assert!(!xlvs_dir.exists(), "a clean stop leaves nothing of its own in bpffs: {}", xlvs_dir.display());
            slots
        })
        .unwrap();
    let want: HashSet<u32> = lb_common::PROG_SCHEDULERS
        .iter()
        .map(|(slot, _)| u32::from(*slot))
        .chain([lb_common::SCHED_CONNECT, lb_common::SLOT_ICMP, lb_common::SLOT_FRAGMENT, lb_common::SLOT_IPV6])
        .collect();
    assert_eq!(slots, want, "every slot the director tail-calls is filled in the pinned table");
}

/// The id of the program in slot `slot` of a program array (the kernel
/// answers a lookup from user space with it), if the slot is filled. aya
/// has no lookup for program arrays.
fn prog_id(table: &aya::maps::MapData, slot: u32) -> Option<u32> {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    #[repr(C)]
    struct Lookup {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let mut id = 0u32;
    let attr = Lookup {
        map_fd: table.fd().as_fd().as_raw_fd() as u32,
        _pad: 0,
        key: (&raw const slot) as u64,
        value: (&raw mut id) as u64,
        flags: 0,
    };
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    // SAFETY: a valid attr for BPF_MAP_LOOKUP_ELEM, whose key and value
    // point to live u32s.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_ELEM, &raw const attr, size_of::<Lookup>()) };
    (rc == 0).then_some(id)
}
