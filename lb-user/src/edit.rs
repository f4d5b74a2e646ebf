//! Runtime edits, as ipvsadm's `-A/-E/-D` (services) and `-a/-e/-d`
//! (reals): each takes the running configuration and returns the edited
//! one, or says why not. Only the options given change. The result is
//! validated by the caller exactly as a config file is.

use std::net::SocketAddr;

use lb_common::sched::Scheduler;
use serde::{Deserialize, Serialize};

use crate::config::{
    self, Config, DEFAULT_SCHEDULER, Forward, Persistence, Protocol, Real, Service, VirtualAddr,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    Add,
    Edit,
    Del,
}

/// `xlvs service add|edit|del`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEdit {
    pub verb: Verb,
    /// "tcp" or "udp".
    pub protocol: String,
    pub address: VirtualAddr,
    pub scheduler: Option<String>,
    /// Persistence timeout in seconds; 0 turns persistence off.
    pub persistent: Option<u32>,
    /// ipvsadm's `-M`: a netmask for IPv4 (`255.255.255.0`), a prefix
    /// length for IPv6 (`64`).
    pub netmask: Option<String>,
}

/// `xlvs real add|edit|del`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealEdit {
    pub verb: Verb,
    pub protocol: String,
    pub address: VirtualAddr,
    pub real: SocketAddr,
    /// "nat", "dr" or "tun" (or masq, gate, ipip).
    pub forward: Option<String>,
    pub weight: Option<u32>,
    pub u_threshold: Option<u32>,
    pub l_threshold: Option<u32>,
}

/// Validates an edited configuration by the rules of a config file: its
/// text, as `xlvs save` would print it, must parse back.
///
/// # Errors
/// The key and the problem, as a config file's error names them.
pub fn revalidate(config: &Config) -> Result<Config, String> {
    config::parse("the edited configuration", &config::render(config)).map_err(|e| format!("{}: {}", e.key, e.message))
}

fn protocol(name: &str) -> Result<Protocol, String> {
    match name {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        other => Err(format!("'{other}' is not a protocol: use tcp or udp")),
    }
}

fn find(config: &mut Config, protocol: Protocol, address: VirtualAddr) -> Result<&mut Service, String> {
    config
        .services
        .iter_mut()
        .find(|s| (s.protocol, s.vip) == (protocol, address))
        .ok_or_else(|| format!("no service {} {address}", protocol.label()))
}

/// Applies a service edit to a copy of `config`.
///
/// # Errors
/// A message naming the service and the problem.
pub fn service(config: &Config, edit: &ServiceEdit) -> Result<Config, String> {
    let mut config = config.clone();
    let proto = protocol(&edit.protocol)?;
    let scheduler = edit
        .scheduler
        .as_deref()
        .map(|s| s.parse::<Scheduler>().map_err(|_| format!("'{s}' is not a scheduler")))
        .transpose()?;
    let exists = config.services.iter().any(|s| (s.protocol, s.vip) == (proto, edit.address));
    match edit.verb {
        Verb::Add if exists => return Err(format!("service {} {} already exists", proto.label(), edit.address)),
        Verb::Add => config.services.push(Service {
            protocol: proto,
            vip: edit.address,
            scheduler: DEFAULT_SCHEDULER,
            sched_flags: 0,
            persistence: None,
            lblc_expire: lb_common::sched::lblc::LBLC_DEFAULT_EXPIRATION_SECS as u32,
            reals: Vec::new(),
            check: config::Check::default(),
            health: config::Health::default(),
        }),
        Verb::Edit => {
            find(&mut config, proto, edit.address)?;
        }
        Verb::Del => {
            find(&mut config, proto, edit.address)?;
            config.services.retain(|s| (s.protocol, s.vip) != (proto, edit.address));
            return Ok(config);
        }
    }
    let service = find(&mut config, proto, edit.address)?;
    if let Some(scheduler) = scheduler {
        if scheduler != service.scheduler {
            // Scheduler flags belong to the scheduler.
            service.sched_flags = 0;
        }
        service.scheduler = scheduler;
    }
    let vip = service.vip.addr;
    let mask = edit
        .netmask
        .as_deref()
        .map(|m| config::netmask(&toml::Value::String(m.to_owned()), vip).map_err(|e| format!("-M {m}: {e}")))
        .transpose()?;
    match (edit.persistent, mask) {
        (Some(0), Some(_)) => return Err("a netmask only applies to a persistent service".into()),
        (Some(0), None) => service.persistence = None,
        (Some(timeout), mask) => {
            let netmask = mask.or(service.persistence.map(|p| p.netmask)).unwrap_or_else(|| Persistence::whole(vip));
            service.persistence = Some(Persistence { timeout, netmask });
        }
        (None, Some(netmask)) => match service.persistence.as_mut() {
            Some(p) => p.netmask = netmask,
            None => return Err("a netmask only applies to a persistent service: give -p too".into()),
        },
        (None, None) => {}
    }
    Ok(config)
}

/// Applies a real edit to a copy of `config`.
///
/// # Errors
/// A message naming the service or real and the problem.
pub fn real(config: &Config, edit: &RealEdit) -> Result<Config, String> {
    let mut config = config.clone();
    let proto = protocol(&edit.protocol)?;
    let forward = edit
        .forward
        .as_deref()
        .map(|f| Forward::parse(f).ok_or_else(|| format!("'{f}' is not a forwarding method: use nat, dr or tun")))
        .transpose()?;
    let service = find(&mut config, proto, edit.address)?;
    let (addr, port) = (edit.real.ip(), edit.real.port());
    config::same_family(edit.address.addr, addr)?;
    let position = service.reals.iter().position(|r| (r.addr, r.port) == (addr, port));
    let label = format!("{} {}", proto.label(), edit.address);
    let real = match (edit.verb, position) {
        (Verb::Add, Some(_)) => return Err(format!("real {} is already in {label}", edit.real)),
        (Verb::Edit | Verb::Del, None) => return Err(format!("no real {} in {label}", edit.real)),
        (Verb::Del, Some(i)) => {
            service.reals.remove(i);
            return Ok(config);
        }
        (Verb::Add, None) => {
            let check = service.check.clone();
            service.reals.push(Real {
                addr,
                port,
                weight: 1,
                // ipvsadm's default method is gatewaying.
                forward: Forward::Dr,
                u_threshold: 0,
                l_threshold: 0,
                check,
            });
            service.reals.last_mut().expect("just pushed")
        }
        (Verb::Edit, Some(i)) => &mut service.reals[i],
    };
    if let Some(forward) = forward {
        real.forward = forward;
    }
    if let Some(weight) = edit.weight {
        real.weight = weight;
    }
    if let Some(u) = edit.u_threshold {
        real.u_threshold = u;
    }
    if let Some(l) = edit.l_threshold {
        real.l_threshold = l;
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn config() -> Config {
        config::parse(
            "t.toml",
            "[director]\ninterfaces = [\"e\"]\n[[virtual]]\naddress = \"10.0.0.1:80\"\nscheduler = \"rr\"\n[[virtual.real]]\naddress = \"10.0.1.1\"\n",
        )
        .unwrap()
    }

    fn vip() -> VirtualAddr {
        VirtualAddr::single(Ipv4Addr::new(10, 0, 0, 1), 80)
    }

    fn real_edit(verb: Verb, last: u8) -> RealEdit {
        RealEdit {
            verb,
            protocol: "tcp".into(),
            address: vip(),
            real: SocketAddr::new(Ipv4Addr::new(10, 0, 1, last).into(), 80),
            forward: None,
            weight: None,
            u_threshold: None,
            l_threshold: None,
        }
    }

    #[test]
    fn services_are_added_edited_and_deleted() {
        let edit = |verb, address, scheduler: Option<&str>, persistent| ServiceEdit {
            verb,
            protocol: "tcp".into(),
            address,
            scheduler: scheduler.map(Into::into),
            persistent,
            netmask: None,
        };
        let other = VirtualAddr::single(Ipv4Addr::new(10, 0, 0, 2), 443);
        let c = service(&config(), &edit(Verb::Add, other, None, Some(60))).unwrap();
        let added = &c.services[1];
        assert_eq!((added.scheduler, added.persistence.map(|p| p.timeout)), (Scheduler::Wlc, Some(60)));
        assert!(service(&c, &edit(Verb::Add, other, None, None)).unwrap_err().contains("already exists"));
        // Only what is given changes.
        let c = service(&c, &edit(Verb::Edit, other, Some("sh"), None)).unwrap();
        assert_eq!((c.services[1].scheduler, c.services[1].persistence.map(|p| p.timeout)), (Scheduler::Sh, Some(60)));
        let c = service(&c, &edit(Verb::Edit, other, None, Some(0))).unwrap();
        assert_eq!(c.services[1].persistence, None);
        let c = service(&c, &edit(Verb::Del, other, None, None)).unwrap();
        assert_eq!(c.services.len(), 1);
        assert_eq!(service(&c, &edit(Verb::Del, other, None, None)).unwrap_err(), "no service TCP 10.0.0.2:443");
        assert!(service(&c, &edit(Verb::Edit, vip(), Some("fastest"), None)).unwrap_err().contains("not a scheduler"));
    }

    #[test]
    fn reals_are_added_edited_and_deleted() {
        let mut add = real_edit(Verb::Add, 2);
        add.weight = Some(3);
        add.forward = Some("masq".into());
        let c = real(&config(), &add).unwrap();
        let r = &c.services[0].reals[1];
        assert_eq!((r.weight, r.forward, r.port), (3, Forward::Nat, 80));
        assert!(real(&c, &add).unwrap_err().contains("already in TCP 10.0.0.1:80"));
        let mut edit = real_edit(Verb::Edit, 2);
        edit.u_threshold = Some(10);
        let c = real(&c, &edit).unwrap();
        assert_eq!((c.services[0].reals[1].weight, c.services[0].reals[1].u_threshold), (3, 10));
        let c = real(&c, &real_edit(Verb::Del, 1)).unwrap();
        assert_eq!(c.services[0].reals.len(), 1);
        assert_eq!(real(&c, &real_edit(Verb::Del, 1)).unwrap_err(), "no real 10.0.1.1:80 in TCP 10.0.0.1:80");
        // Without -g/-m/-i a new real is gatewayed, as with ipvsadm.
        let c = real(&c, &real_edit(Verb::Add, 5)).unwrap();
        assert_eq!((c.services[0].reals[1].forward, c.services[0].reals[1].weight), (Forward::Dr, 1));
    }

    #[test]
    fn ipv6_services_take_a_prefix_length_and_ipv6_reals() {
        let v6: VirtualAddr = "[2001:db8::100]:80".parse().unwrap();
        let add = ServiceEdit {
            verb: Verb::Add,
            protocol: "tcp".into(),
            address: v6,
            scheduler: Some("rr".into()),
            persistent: Some(300),
            netmask: Some("64".into()),
        };
        let c = service(&config(), &add).unwrap();
        let p = c.services[1].persistence.unwrap();
        assert_eq!((p.timeout, p.prefix_len()), (300, 64));
        // An IPv6 service's -M is a prefix length, not a dotted netmask.
        let dotted = ServiceEdit { verb: Verb::Edit, netmask: Some("255.255.255.0".into()), ..add.clone() };
        assert!(service(&c, &dotted).unwrap_err().contains("is not an IPv6 prefix length"));

        let real = |addr: &str| RealEdit {
            verb: Verb::Add,
            protocol: "tcp".into(),
            address: v6,
            real: addr.parse().unwrap(),
            forward: Some("nat".into()),
            weight: None,
            u_threshold: None,
            l_threshold: None,
        };
        let c = real_edit_apply(&c, &real("[2001:db8:1::11]:8080"));
        let r = &c.services[1].reals[0];
        assert_eq!((r.addr, r.port), ("2001:db8:1::11".parse::<std::net::IpAddr>().unwrap(), 8080));
        let mixed = super::real(&c, &real("10.0.1.9:80")).unwrap_err();
        assert!(mixed.contains("10.0.1.9 is IPv4 but the service's address is IPv6"), "{mixed}");
    }

    fn real_edit_apply(c: &Config, e: &RealEdit) -> Config {
        super::real(c, e).unwrap()
    }
}
