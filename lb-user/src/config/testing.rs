//! Small constructors the unit tests of several modules share.

use std::net::{IpAddr, Ipv4Addr};

use lb_common::sched::Scheduler;

use super::{Forward, Protocol, Real, Service, VirtualAddr};

/// A direct-routing real 10.0.1.`last`:80.
pub fn real(last: u8, weight: u32) -> Real {
    Real {
        addr: IpAddr::from(Ipv4Addr::new(10, 0, 1, last)),
        port: 80,
        weight,
        forward: Forward::Dr,
        u_threshold: 0,
        l_threshold: 0,
        check: Default::default(),
    }
}

/// A TCP service 10.100.0.1:80 with these reals.
pub fn service(scheduler: Scheduler, reals: Vec<Real>) -> Service {
    Service {
        protocol: Protocol::Tcp,
        vip: VirtualAddr::single(Ipv4Addr::new(10, 100, 0, 1), 80),
        scheduler,
        sched_flags: 0,
        persistence: None,
        lblc_expire: 86_400,
        reals,
        check: Default::default(),
        health: Default::default(),
    }
}
