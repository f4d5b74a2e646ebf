//! What the data plane should hold, given the configured services and what
//! the health checks say: ldirectord's and keepalived's rules, as one pure
//! function.
//!
//! - A real that is down keeps its place with weight 0 when its service is
//!   quiescent (established connections carry on, new ones go elsewhere),
//!   and is left out otherwise (its connections are dropped).
//! - An external check with a dynamic weight sets the weight of a real that
//!   is up.
//! - The fallback (sorry server) is in the service only while none of its
//!   reals is up.

use std::collections::HashMap;

use crate::{
    config::{Real, Service},
    dataplane::{RealKey, ServiceAddr, apply::{real_key, service_key}},
};

/// What the checks last said about one real.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealState {
    pub up: bool,
    /// A dynamic weight from the check, overriding the configured one.
    pub weight: Option<u32>,
}

impl Default for RealState {
    /// A real starts up, with its configured weight.
    fn default() -> Self {
        Self { up: true, weight: None }
    }
}

/// The state of every checked real; a real missing here is up.
pub type States = HashMap<(ServiceAddr, RealKey), RealState>;

fn state(states: &States, service: &Service, real: &Real) -> RealState {
    states.get(&(service_key(service), real_key(real))).copied().unwrap_or_default()
}

/// Whether any real of the service is up.
#[must_use]
pub fn any_up(service: &Service, states: &States) -> bool {
    service.reals.iter().any(|r| state(states, service, r).up)
}

/// keepalived's quorum measure: the sum of the weights of the reals that
/// are up.
#[must_use]
pub fn live_weight(service: &Service, states: &States) -> u64 {
    service
        .reals
        .iter()
        .map(|r| (r, state(states, service, r)))
        .filter(|(_, s)| s.up)
        .map(|(r, s)| u64::from(s.weight.unwrap_or(r.weight)))
        .sum()
}

/// The services as the data plane should hold them.
#[must_use]
pub fn effective(configured: &[Service], states: &States) -> Vec<Service> {
    configured
        .iter()
        .map(|service| {
            let mut out = service.clone();
            out.reals = service
                .reals
                .iter()
                .filter_map(|real| {
                    let s = state(states, service, real);
                    match (s.up, service.health.quiescent) {
                        (true, _) => Some(Real { weight: s.weight.unwrap_or(real.weight), ..real.clone() }),
                        (false, true) => Some(Real { weight: 0, ..real.clone() }),
                        (false, false) => None,
                    }
                })
                .collect();
            if let Some(fallback) = service.health.fallback.as_ref().filter(|_| !any_up(service, states)) {
                out.reals.push(fallback.clone());
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use lb_common::sched::Scheduler;

    use super::*;
    use crate::config::testing::real;

    fn service(quiescent: bool) -> Service {
        let mut s = crate::config::testing::service(Scheduler::Wrr, vec![real(1, 2), real(2, 3)]);
        s.health.quiescent = quiescent;
        s.health.fallback = Some(real(99, 1));
        s
    }

    fn set(states: &mut States, s: &Service, last: u8, up: bool, weight: Option<u32>) {
        states.insert((service_key(s), (IpAddr::from(Ipv4Addr::new(10, 0, 1, last)), 80)), RealState { up, weight });
    }

    fn weights(s: &Service) -> Vec<(u8, u32)> {
        s.reals.iter().map(|r| (crate::addr::to_map(r.addr).0[0].to_ne_bytes()[3], r.weight)).collect()
    }

    #[test]
    fn reals_start_up_with_their_weights_and_no_fallback() {
        let s = service(true);
        let out = effective(std::slice::from_ref(&s), &States::new());
        assert_eq!(weights(&out[0]), [(1, 2), (2, 3)]);
        assert_eq!(live_weight(&s, &States::new()), 5);
    }

    #[test]
    fn a_down_real_is_quiesced_or_removed() {
        for (quiescent, expected) in [(true, vec![(1, 0), (2, 3)]), (false, vec![(2, 3)])] {
            let s = service(quiescent);
            let mut states = States::new();
            set(&mut states, &s, 1, false, None);
            let out = effective(std::slice::from_ref(&s), &states);
            assert_eq!(weights(&out[0]), expected, "quiescent = {quiescent}");
            assert_eq!(live_weight(&s, &states), 3);
        }
    }

    #[test]
    fn the_fallback_serves_only_while_every_real_is_down() {
        let s = service(true);
        let mut states = States::new();
        set(&mut states, &s, 1, false, None);
        set(&mut states, &s, 2, false, None);
        assert_eq!(weights(&effective(std::slice::from_ref(&s), &states)[0]), [(1, 0), (2, 0), (99, 1)]);
        let gone = service(false);
        assert_eq!(weights(&effective(std::slice::from_ref(&gone), &states)[0]), [(99, 1)]);
        set(&mut states, &s, 2, true, None);
        assert_eq!(weights(&effective(std::slice::from_ref(&s), &states)[0]), [(1, 0), (2, 3)]);
    }

    #[test]
    fn a_dynamic_weight_applies_while_up() {
        let s = service(true);
        let mut states = States::new();
        set(&mut states, &s, 2, true, Some(7));
        assert_eq!(weights(&effective(std::slice::from_ref(&s), &states)[0]), [(1, 2), (2, 7)]);
        assert_eq!(live_weight(&s, &states), 9);
    }
}
