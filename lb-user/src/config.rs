//! The director's TOML configuration: parsing, validation, and the validated
//! model the rest of the controller works from.
//!
//! Every error names the file, the line and the key, so that an operator can
//! go straight to the mistake.

use std::{
    collections::HashSet,
    fmt,
    net::{IpAddr, Ipv4Addr},
    path::Path,
};

use lb_common::{DEFAULT_CONN_TABLE_SIZE, MAX_REALS_PER_SERVICE, MAX_SERVICES};
use serde::Deserialize;
use toml::Spanned;

/// A configuration error, located in its file.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub key: String,
    pub message: String,
}

/// A transport protocol of a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    #[must_use]
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => lb_common::IPPROTO_TCP,
            Self::Udp => lb_common::IPPROTO_UDP,
        }
    }
    /// ipvsadm's spelling.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// LVS's forwarding methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Forward {
    /// masq
    Nat,
    /// gate
    Dr,
    /// ipip
    Tun,
}

impl Forward {
    #[must_use]
    pub const fn id(self) -> u8 {
        match self {
            Self::Nat => lb_common::FWD_NAT,
            Self::Dr => lb_common::FWD_DR,
            Self::Tun => lb_common::FWD_TUN,
        }
    }
    /// The Forward column of `ipvsadm -L`.
    #[must_use]
    pub const fn ipvsadm(self) -> &'static str {
        match self {
            Self::Nat => "Masq",
            Self::Dr => "Route",
            Self::Tun => "Tunnel",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "nat" | "masq" => Some(Self::Nat),
            "dr" | "gate" | "route" => Some(Self::Dr),
            "tun" | "ipip" | "tunnel" => Some(Self::Tun),
            _ => None,
        }
    }
}

impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Nat => "nat",
            Self::Dr => "dr",
            Self::Tun => "tun",
        })
    }
}

/// IPVS's schedulers, plus Maglev.
pub const SCHEDULERS: [&str; 11] =
    ["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh"];
/// The ones this build's data plane runs.
pub const IMPLEMENTED_SCHEDULERS: [&str; 1] = ["rr"];

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub interfaces: Vec<String>,
    pub conn_table_size: u32,
    pub services: Vec<Service>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub protocol: Protocol,
    pub addr: Ipv4Addr,
    pub port: u16,
    pub scheduler: String,
    /// In config order (oldest first); the data plane scans them reversed.
    pub reals: Vec<Real>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Real {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub weight: u32,
    pub forward: Forward,
}

// The file as written. Spanned values remember where they stood, for errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    director: DirectorSection,
    #[serde(default, rename = "virtual")]
    virtuals: Vec<VirtualSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectorSection {
    /// Interfaces XDP attaches to: where VIP traffic arrives, and for NAT the
    /// ones facing the reals (their replies come back there).
    interfaces: Spanned<Vec<String>>,
    /// Connection table entries (a NAT flow takes two).
    conn_table_size: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VirtualSection {
    /// VIP:port.
    address: Spanned<String>,
    /// tcp | udp; tcp when absent.
    protocol: Option<Spanned<String>>,
    /// rr when absent.
    scheduler: Option<Spanned<String>>,
    /// The default forwarding method of the reals: nat | dr | tun (aliases
    /// masq | gate | ipip); dr when absent, as with ipvsadm.
    forward: Option<Spanned<String>>,
    #[serde(default)]
    real: Vec<RealSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RealSection {
    /// ip[:port]; the VIP's port when no port is given.
    address: Spanned<String>,
    /// 1 when absent; 0 makes the real quiescent.
    weight: Option<Spanned<i64>>,
    /// Overrides the service's `forward`.
    forward: Option<Spanned<String>>,
}

/// The highest weight ipvsadm accepts.
pub const MAX_WEIGHT: i64 = 65535;

struct Locator<'a> {
    file: &'a str,
    text: &'a str,
}

impl Locator<'_> {
    fn error(&self, offset: usize, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        let line = self.text[..offset.min(self.text.len())].matches('\n').count() + 1;
        ConfigError {
            file: self.file.to_owned(),
            line,
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Reads and validates a configuration file.
///
/// # Errors
/// A [`ConfigError`] naming the file, line and key of the first problem.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        line: 0,
        key: "-".into(),
        message: format!("cannot read: {e}"),
    })?;
    parse(&path.display().to_string(), &text)
}

/// Validates configuration text; `file` is only used in errors.
///
/// # Errors
/// A [`ConfigError`] naming the file, line and key of the first problem.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let at = Locator { file, text };
    let raw: File = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        at.error(offset, "toml", e.message().to_owned())
    })?;

    let interfaces = raw.director.interfaces.get_ref();
    if interfaces.is_empty() {
        return Err(at.error(raw.director.interfaces.span().start, "director.interfaces", "name at least one interface"));
    }
    let mut seen_ifaces = HashSet::new();
    for name in interfaces {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ']) {
            return Err(at.error(raw.director.interfaces.span().start, "director.interfaces", format!("'{name}' is not a valid interface name")));
        }
        if !seen_ifaces.insert(name) {
            return Err(at.error(raw.director.interfaces.span().start, "director.interfaces", format!("'{name}' is listed twice")));
        }
    }
    let conn_table_size = match &raw.director.conn_table_size {
        None => DEFAULT_CONN_TABLE_SIZE,
        Some(size) if *size.get_ref() < 1024 => {
            return Err(at.error(size.span().start, "director.conn_table_size", "must be at least 1024"));
        }
        Some(size) => *size.get_ref(),
    };

    if raw.virtuals.len() > MAX_SERVICES as usize {
        return Err(at.error(0, "virtual", format!("at most {MAX_SERVICES} virtual services")));
    }
    let mut services = Vec::new();
    let mut seen_services = HashSet::new();
    for (i, v) in raw.virtuals.iter().enumerate() {
        let service = virtual_service(&at, i, v)?;
        if !seen_services.insert((service.protocol, service.addr, service.port)) {
            return Err(at.error(v.address.span().start, format!("virtual[{i}].address"), format!("{} {}:{} is defined twice", service.protocol, service.addr, service.port)));
        }
        services.push(service);
    }
    Ok(Config { interfaces: interfaces.clone(), conn_table_size, services })
}

fn virtual_service(at: &Locator<'_>, i: usize, v: &VirtualSection) -> Result<Service, ConfigError> {
    let key = |k: &str| format!("virtual[{i}].{k}");
    let (addr, port) = parse_endpoint(v.address.get_ref(), None)
        .map_err(|m| at.error(v.address.span().start, key("address"), m))?;
    let protocol = match v.protocol.as_ref().map(|p| (p.get_ref().as_str(), p.span().start)) {
        None | Some(("tcp", _)) => Protocol::Tcp,
        Some(("udp", _)) => Protocol::Udp,
        Some((other, offset)) => {
            return Err(at.error(offset, key("protocol"), format!("'{other}' is not a protocol: use tcp or udp")));
        }
    };
    let scheduler = match &v.scheduler {
        None => "rr".to_owned(),
        Some(s) => {
            let name = s.get_ref().as_str();
            if !SCHEDULERS.contains(&name) {
                return Err(at.error(s.span().start, key("scheduler"), format!("'{name}' is not a scheduler: use one of {}", SCHEDULERS.join(", "))));
            }
            if !IMPLEMENTED_SCHEDULERS.contains(&name) {
                return Err(at.error(s.span().start, key("scheduler"), format!("'{name}' is not available in this build yet: use {}", IMPLEMENTED_SCHEDULERS.join(", "))));
            }
            name.to_owned()
        }
    };
    let default_forward = match &v.forward {
        None => Forward::Dr,
        Some(f) => Forward::parse(f.get_ref()).ok_or_else(|| {
            at.error(f.span().start, key("forward"), format!("'{}' is not a forwarding method: use nat, dr or tun (masq, gate, ipip)", f.get_ref()))
        })?,
    };
    if v.real.len() > MAX_REALS_PER_SERVICE {
        return Err(at.error(v.address.span().start, key("real"), format!("at most {MAX_REALS_PER_SERVICE} reals per service")));
    }
    let mut reals = Vec::new();
    let mut seen = HashSet::new();
    for (j, r) in v.real.iter().enumerate() {
        let rkey = |k: &str| format!("virtual[{i}].real[{j}].{k}");
        let (raddr, rport) = parse_endpoint(r.address.get_ref(), Some(port))
            .map_err(|m| at.error(r.address.span().start, rkey("address"), m))?;
        let forward = match &r.forward {
            None => default_forward,
            Some(f) => Forward::parse(f.get_ref()).ok_or_else(|| {
                at.error(f.span().start, rkey("forward"), format!("'{}' is not a forwarding method: use nat, dr or tun (masq, gate, ipip)", f.get_ref()))
            })?,
        };
        if forward != Forward::Nat && rport != port {
            return Err(at.error(r.address.span().start, rkey("address"), format!("port {rport} differs from the virtual port {port}: only nat can map ports")));
        }
        let weight = match &r.weight {
            None => 1,
            Some(w) => u32::try_from(*w.get_ref())
                .ok()
                .filter(|w| i64::from(*w) <= MAX_WEIGHT)
                .ok_or_else(|| at.error(w.span().start, rkey("weight"), format!("{} is out of range 0..={MAX_WEIGHT}", w.get_ref())))?,
        };
        if !seen.insert((raddr, rport)) {
            return Err(at.error(r.address.span().start, rkey("address"), format!("{raddr}:{rport} is listed twice in this service")));
        }
        reals.push(Real { addr: raddr, port: rport, weight, forward });
    }
    Ok(Service { protocol, addr, port, scheduler, reals })
}

/// Parses `ip:port`, or a bare `ip` when `default_port` is given.
fn parse_endpoint(s: &str, default_port: Option<u16>) -> Result<(Ipv4Addr, u16), String> {
    let (host, port) = match (s.rsplit_once(':'), default_port) {
        (Some((h, p)), _) if !h.contains(':') || h.starts_with('[') => (h, Some(p)),
        (_, Some(_)) => (s, None),
        (_, None) => return Err(format!("'{s}' needs a port: write ADDRESS:PORT")),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = host.parse().map_err(|_| format!("'{host}' is not an IP address"))?;
    let IpAddr::V4(ip) = ip else {
        return Err(format!("{ip} is IPv6, which this build does not forward yet"));
    };
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
        return Err(format!("{ip} cannot be a service or real address"));
    }
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("'{p}' is not a port (1..=65535)"))?,
        None => default_port.unwrap_or_default(),
    };
    Ok((ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[director]
interfaces = ["veth-ext"]

[[virtual]]
address = "10.100.0.100:80"
protocol = "tcp"
scheduler = "rr"
forward = "nat"

[[virtual.real]]
address = "10.0.1.11:8080"
weight = 1

[[virtual.real]]
address = "10.0.1.12:8080"
weight = 2
"#;

    fn err(text: &str) -> ConfigError {
        parse("t.toml", text).expect_err("should be rejected")
    }

    fn with(replace: &str, by: &str) -> String {
        assert!(GOOD.contains(replace), "{replace}");
        GOOD.replacen(replace, by, 1)
    }

    #[test]
    fn the_issue_example_parses() {
        let c = parse("t.toml", GOOD).unwrap();
        assert_eq!(c.interfaces, ["veth-ext"]);
        assert_eq!(c.conn_table_size, DEFAULT_CONN_TABLE_SIZE);
        let s = &c.services[0];
        assert_eq!((s.protocol, s.addr, s.port), (Protocol::Tcp, Ipv4Addr::new(10, 100, 0, 100), 80));
        assert_eq!(s.reals[1], Real { addr: Ipv4Addr::new(10, 0, 1, 12), port: 8080, weight: 2, forward: Forward::Nat });
    }

    #[test]
    fn defaults_and_aliases() {
        let c = parse("t.toml", "[director]\ninterfaces=[\"e\"]\n[[virtual]]\naddress=\"10.1.1.1:53\"\nprotocol=\"udp\"\n[[virtual.real]]\naddress=\"10.2.2.2\"\n[[virtual.real]]\naddress=\"10.2.2.3\"\nforward=\"ipip\"\n").unwrap();
        let s = &c.services[0];
        assert_eq!(s.scheduler, "rr");
        assert_eq!(s.reals[0], Real { addr: Ipv4Addr::new(10, 2, 2, 2), port: 53, weight: 1, forward: Forward::Dr });
        assert_eq!(s.reals[1].forward, Forward::Tun);
        for (alias, f) in [("masq", Forward::Nat), ("gate", Forward::Dr), ("ipip", Forward::Tun)] {
            let c = parse("t.toml", &with("forward = \"nat\"", &format!("forward = \"{alias}\""))
                .replace(":8080", ":80")).unwrap();
            assert_eq!(c.services[0].reals[0].forward, f);
        }
    }

    #[test]
    fn every_mistake_has_its_own_message_with_line_and_key() {
        let cases: &[(&str, &str, usize, &str, &str)] = &[
            ("protocol = \"tcp\"", "protocol = \"sctp\"", 7, "virtual[0].protocol", "'sctp' is not a protocol"),
            ("scheduler = \"rr\"", "scheduler = \"fastest\"", 8, "virtual[0].scheduler", "'fastest' is not a scheduler"),
            ("scheduler = \"rr\"", "scheduler = \"wlc\"", 8, "virtual[0].scheduler", "not available in this build yet"),
            ("forward = \"nat\"", "forward = \"teleport\"", 9, "virtual[0].forward", "'teleport' is not a forwarding method"),
            ("forward = \"nat\"", "forward = \"dr\"", 12, "virtual[0].real[0].address", "only nat can map ports"),
            ("address = \"10.100.0.100:80\"", "address = \"10.100.0.100\"", 6, "virtual[0].address", "needs a port"),
            ("address = \"10.100.0.100:80\"", "address = \"10.100.0.300:80\"", 6, "virtual[0].address", "not an IP address"),
            ("address = \"10.100.0.100:80\"", "address = \"10.100.0.100:0\"", 6, "virtual[0].address", "not a port"),
            ("address = \"10.100.0.100:80\"", "address = \"10.100.0.100:70000\"", 6, "virtual[0].address", "not a port"),
            ("address = \"10.100.0.100:80\"", "address = \"[2001:db8::1]:80\"", 6, "virtual[0].address", "IPv6"),
            ("address = \"10.100.0.100:80\"", "address = \"0.0.0.0:80\"", 6, "virtual[0].address", "cannot be a service"),
            ("weight = 2", "weight = -1", 17, "virtual[0].real[1].weight", "out of range"),
            ("weight = 2", "weight = 70000", 17, "virtual[0].real[1].weight", "out of range"),
            ("address = \"10.0.1.12:8080\"", "address = \"10.0.1.11:8080\"", 16, "virtual[0].real[1].address", "listed twice"),
            ("interfaces = [\"veth-ext\"]", "interfaces = []", 3, "director.interfaces", "at least one"),
            ("interfaces = [\"veth-ext\"]", "interfaces = [\"a\", \"a\"]", 3, "director.interfaces", "listed twice"),
            ("interfaces = [\"veth-ext\"]", "interfaces = [\"a-name-that-is-far-too-long\"]", 3, "director.interfaces", "not a valid interface name"),
            ("interfaces = [\"veth-ext\"]", "interfaces = [\"veth-ext\"]\nconn_table_size = 10", 4, "director.conn_table_size", "at least 1024"),
            ("weight = 1", "weight = 1\nport = 3", 14, "toml", "unknown field `port`"),
            ("protocol = \"tcp\"", "protocol = tcp", 7, "toml", ""),
        ];
        for (from, to, line, key, message) in cases {
            let e = err(&with(from, to));
            assert_eq!((e.line, e.key.as_str()), (*line, *key), "{to}: {e}");
            assert!(e.message.contains(message), "{to}: {e}");
            assert!(e.to_string().starts_with(&format!("t.toml:{line}: {key}: ")), "{e}");
        }
    }

    #[test]
    fn duplicate_services_and_missing_director_are_rejected() {
        let twice = format!("{GOOD}\n[[virtual]]\naddress = \"10.100.0.100:80\"\n");
        let e = err(&twice);
        assert_eq!(e.key, "virtual[1].address");
        assert!(e.message.contains("defined twice"), "{e}");
        let e = err("[[virtual]]\naddress = \"10.1.1.1:80\"\n");
        assert!(e.message.contains("missing field `director`"), "{e}");
        // The same address as UDP is a different service.
        let udp = format!("{GOOD}\n[[virtual]]\naddress = \"10.100.0.100:80\"\nprotocol = \"udp\"\n");
        assert_eq!(parse("t.toml", &udp).unwrap().services.len(), 2);
    }
}
