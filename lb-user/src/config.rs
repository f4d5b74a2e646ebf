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

use lb_common::{
    DEFAULT_CACHE_SIZE, DEFAULT_CONN_TABLE_SIZE, DEFAULT_FRAG_TABLE_SIZE, MAX_MAGLEV_SERVICES, MAX_REALS, MAX_REALS_PER_SERVICE, MAX_SERVICES,
    SVC_F_PERSISTENT,
    sched::{Scheduler, lblc::LBLC_DEFAULT_EXPIRATION_SECS},
};
use serde::Deserialize;
use toml::Spanned;

use crate::{
    addr,
    timeouts::{MAX_TIMEOUT, Timeouts},
};

mod check_parse;
pub mod health;
pub mod sync;
#[cfg(test)]
pub(crate) mod testing;
mod render;
pub mod vrrp;
pub use check_parse::{DEFAULT_HTTP_STATUS, DNS_RECORDS, dns_record_name};
pub use health::{Check, CheckKind, Health, HttpCheck, HttpMethod};
pub use render::render;
pub use vrrp::{VirtualIp, VrrpConfig};

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
    pub fn parse(s: &str) -> Option<Self> {
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

/// The scheduler of a service without `scheduler`: IPVS's (ipvsadm's and
/// keepalived's) default.
pub const DEFAULT_SCHEDULER: Scheduler = Scheduler::Wlc;
/// `persistent = true`, like ipvsadm's `-p` without a value.
pub const DEFAULT_PERSISTENT_TIMEOUT: u32 = 360;
/// A virtual service's address: one VIP and port, or (`prefix_len` below
/// the family's 32 or 128 bits) every address of a network on that port,
/// xlvs's counterpart of an fwmark service. Written `10.0.0.1:80`,
/// `10.50.0.0/16:80`, `[2001:db8::100]:80` or `[2001:db8:100::/64]:80`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VirtualAddr {
    /// The VIP, or the network address of a range.
    pub addr: IpAddr,
    /// 32 (IPv4) or 128 (IPv6) for a single VIP.
    pub prefix_len: u8,
    pub port: u16,
}

impl VirtualAddr {
    /// A single VIP.
    #[must_use]
    pub fn single(addr: impl Into<IpAddr>, port: u16) -> Self {
        let addr = addr.into();
        Self { addr, prefix_len: addr::max_prefix(addr), port }
    }

    /// Whether this service covers a range of addresses.
    #[must_use]
    pub const fn is_range(&self) -> bool {
        self.prefix_len < addr::max_prefix(self.addr)
    }

    /// The mask of the range (all ones for a single VIP), in the VIP's family.
    #[must_use]
    pub fn mask(&self) -> IpAddr {
        addr::prefix_mask(self.addr, self.prefix_len)
    }

    /// Whether `ip` is this VIP, or an address of this range.
    #[must_use]
    pub fn covers(&self, ip: IpAddr) -> bool {
        addr::family(ip) == addr::family(self.addr) && addr::network(ip, self.prefix_len) == self.addr
    }
}

/// The IPv4 netmask of a prefix length (0..=32).
#[must_use]
pub fn prefix_mask(prefix_len: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix_len.min(32))).unwrap_or(0))
}

impl fmt::Display for VirtualAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.is_range(), self.addr) {
            (true, IpAddr::V4(a)) => write!(f, "{a}/{}:{}", self.prefix_len, self.port),
            (true, IpAddr::V6(a)) => write!(f, "[{a}/{}]:{}", self.prefix_len, self.port),
            (false, ip) => write!(f, "{}", addr::Endpoint(ip, self.port)),
        }
    }
}

impl std::str::FromStr for VirtualAddr {
    type Err = String;

    /// The config's spelling: `ip:port` or `network/len:port`.
    fn from_str(s: &str) -> Result<Self, String> {
        parse_virtual(s)
    }
}

impl serde::Serialize for VirtualAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for VirtualAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub interfaces: Vec<String>,
    pub conn_table_size: u32,
    /// Entries of each of the persistence templates' and the lblc/lblcr
    /// caches' tables.
    pub cache_size: u32,
    /// Entries of the table that follows fragmented datagrams.
    pub frag_table_size: u32,
    /// The idle timeouts at start-up (`xlvs set --timeout` changes them).
    pub timeouts: Timeouts,
    /// Re-read the file when it changes (SIGHUP always reloads).
    pub autoreload: bool,
    /// Where the Prometheus text endpoint listens, if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
    pub services: Vec<Service>,
    /// `[vrrp]`: the VRRP instance that makes this director master or
    /// backup of its VIPs; none without the section.
    pub vrrp: Option<VrrpConfig>,
    /// `[sync]`: connection sync with the other director of the pair.
    pub sync: Option<sync::SyncConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub protocol: Protocol,
    pub vip: VirtualAddr,
    pub scheduler: Scheduler,
    /// `sched::SVC_F_SCHED1..3` (`sh-port`, `mh-fallback`, ...).
    pub sched_flags: u8,
    /// Client affinity, when the service is persistent.
    pub persistence: Option<Persistence>,
    /// lblc/lblcr: how long an idle cache entry is kept, and lblcr's set
    /// expiration, in seconds.
    pub lblc_expire: u32,
    /// In config order (oldest first); the data plane scans them reversed.
    pub reals: Vec<Real>,
    /// `[virtual.check]`: how the reals are checked, unless a real says
    /// otherwise.
    pub check: Check,
    /// What happens when reals go down.
    pub health: Health,
}

impl Service {
    /// `Service::flags` of the maps: the scheduler flags, and
    /// `SVC_F_PERSISTENT` for a persistent service.
    #[must_use]
    pub fn flags(&self) -> u8 {
        self.sched_flags | if self.persistence.is_some() { SVC_F_PERSISTENT } else { 0 }
    }
}

/// IPVS's persistence: every connection from one client network (the
/// client's address under `netmask`) goes to the same real while the
/// network's template lives, `timeout` seconds past its last use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persistence {
    pub timeout: u32,
    /// In the service's family: `255.255.255.0`, or for IPv6 the mask of
    /// its prefix length (`ffff:ffff:ffff:ffff::` for /64).
    pub netmask: IpAddr,
}

impl Persistence {
    /// One client per network: the family's all-ones mask.
    #[must_use]
    pub fn whole(vip: IpAddr) -> IpAddr {
        addr::prefix_mask(vip, addr::max_prefix(vip))
    }

    /// The mask's prefix length (contiguous by construction).
    #[must_use]
    pub fn prefix_len(&self) -> u8 {
        addr::mask_prefix(self.netmask).unwrap_or_else(|| addr::max_prefix(self.netmask))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Real {
    /// Of the service's family.
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
    pub forward: Forward,
    /// Connections (active + inactive) at which the real is overloaded; 0
    /// for no limit.
    pub u_threshold: u32,
    /// Where the overload clears; 0 for 3/4 of `u_threshold`.
    pub l_threshold: u32,
    /// How this real is checked: the service's check with the real's
    /// `[virtual.real.check]` keys laid over it.
    pub check: Check,
}

// The file as written. Spanned values remember where they stood, for errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    director: DirectorSection,
    #[serde(default, rename = "virtual")]
    virtuals: Vec<VirtualSection>,
    vrrp: Option<Spanned<vrrp::VrrpSection>>,
    sync: Option<Spanned<sync::SyncSection>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectorSection {
    /// Interfaces XDP attaches to: where VIP traffic arrives, and for NAT the
    /// ones facing the reals (their replies come back there).
    interfaces: Spanned<Vec<String>>,
    /// Connection table entries (a NAT flow takes two).
    conn_table_size: Option<Spanned<u32>>,
    /// Entries of the persistence templates' table, and of each of the
    /// lblc and lblcr caches.
    cache_size: Option<Spanned<u32>>,
    /// Entries of the table that sends a datagram's later fragments after
    /// its first (one per datagram in flight).
    frag_table_size: Option<Spanned<u32>>,
    /// Idle timeout of an ESTABLISHED TCP connection, in seconds (ipvsadm
    /// `--set`'s tcp); 900 when absent.
    timeout_tcp: Option<Spanned<i64>>,
    /// Idle timeout of a TCP connection in FIN_WAIT, in seconds (`--set`'s
    /// tcpfin); 120 when absent.
    timeout_tcpfin: Option<Spanned<i64>>,
    /// Idle timeout of a UDP flow, in seconds (`--set`'s udp); 300 when
    /// absent.
    timeout_udp: Option<Spanned<i64>>,
    /// Re-read the file when it changes; false when absent.
    autoreload: Option<Spanned<toml::Value>>,
    /// `ip:port` of the Prometheus endpoint; none when absent.
    metrics: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VirtualSection {
    /// VIP:port, or network/prefix:port for every address of a network.
    address: Spanned<String>,
    /// tcp | udp; tcp when absent.
    protocol: Option<Spanned<String>>,
    /// One of IPVS's schedulers or mh; wlc when absent.
    scheduler: Option<Spanned<String>>,
    /// The scheduler's flags (ipvsadm -b): sh-fallback, sh-port for sh;
    /// mh-fallback, mh-port for mh; flag-1..flag-3 for any.
    scheduler_flags: Option<Spanned<Vec<String>>>,
    /// Persistence timeout in seconds (0 = not persistent), or true for
    /// ipvsadm's default of 360.
    persistent: Option<Spanned<toml::Value>>,
    /// The persistence netmask: `"255.255.255.0"` for IPv4, a prefix
    /// length (`64`) for IPv6; one client (/32, /128) when absent.
    netmask: Option<Spanned<toml::Value>>,
    /// lblc/lblcr: seconds an idle cache entry is kept; 86400 when absent.
    lblc_expire: Option<Spanned<i64>>,
    /// The default forwarding method of the reals: nat | dr | tun (aliases
    /// masq | gate | ipip); dr when absent, as with ipvsadm.
    forward: Option<Spanned<String>>,
    /// A down real keeps its place with weight 0 (true, the default) or
    /// leaves the service.
    quiescent: Option<Spanned<toml::Value>>,
    /// The sorry server: `"ip[:port] [gate|masq|ipip]"` or
    /// `{ address = "ip[:port]", forward = "nat" }`.
    fallback: Option<Spanned<toml::Value>>,
    /// The live weight below which the service has lost its quorum.
    quorum: Option<Spanned<toml::Value>>,
    /// Commands run when the quorum is regained / lost.
    quorum_up: Option<Spanned<toml::Value>>,
    quorum_down: Option<Spanned<toml::Value>>,
    /// Commands run when a real comes up / goes down.
    notify_up: Option<Spanned<toml::Value>>,
    notify_down: Option<Spanned<toml::Value>>,
    /// How the reals are checked; none when absent.
    check: Option<check_parse::CheckSection>,
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
    /// Upper connection threshold (ipvsadm -x); 0 or absent for none.
    u_threshold: Option<Spanned<i64>>,
    /// Lower connection threshold (ipvsadm -y); 0 or absent for 3/4 of the
    /// upper one.
    l_threshold: Option<Spanned<i64>>,
    /// Keys laid over the service's `[virtual.check]` for this real.
    check: Option<check_parse::CheckSection>,
}

/// The highest weight ipvsadm accepts.
pub const MAX_WEIGHT: i64 = 65535;
/// The highest connection threshold ipvsadm accepts (`INT_MAX`).
pub const MAX_THRESHOLD: i64 = i32::MAX as i64;

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

    /// An optional integer in `min..=max`, or `default` when absent.
    fn ranged(&self, value: Option<&Spanned<i64>>, key: impl Into<String>, min: i64, max: i64, default: u32) -> Result<u32, ConfigError> {
        let Some(v) = value else { return Ok(default) };
        let n = *v.get_ref();
        if (min..=max).contains(&n) {
            // max never exceeds u32::MAX here.
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        } else {
            Err(self.error(v.span().start, key, format!("{n} is out of range {min}..={max}")))
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
    // A table's entries, when set: at least 1024.
    let table_size = |size: &Option<Spanned<u32>>, key: &str, default: u32| match size {
        None => Ok(default),
        Some(size) if *size.get_ref() < 1024 => Err(at.error(size.span().start, key, "must be at least 1024")),
        Some(size) => Ok(*size.get_ref()),
    };
    let conn_table_size = table_size(&raw.director.conn_table_size, "director.conn_table_size", DEFAULT_CONN_TABLE_SIZE)?;
    let cache_size = table_size(&raw.director.cache_size, "director.cache_size", DEFAULT_CACHE_SIZE)?;
    let frag_table_size = table_size(&raw.director.frag_table_size, "director.frag_table_size", DEFAULT_FRAG_TABLE_SIZE)?;
    let defaults = Timeouts::default();
    let max = i64::from(MAX_TIMEOUT);
    let timeouts = Timeouts {
        tcp: at.ranged(raw.director.timeout_tcp.as_ref(), "director.timeout_tcp", 1, max, defaults.tcp)?,
        tcpfin: at.ranged(raw.director.timeout_tcpfin.as_ref(), "director.timeout_tcpfin", 1, max, defaults.tcpfin)?,
        udp: at.ranged(raw.director.timeout_udp.as_ref(), "director.timeout_udp", 1, max, defaults.udp)?,
    };

    if raw.virtuals.len() > MAX_SERVICES as usize {
        return Err(at.error(0, "virtual", format!("at most {MAX_SERVICES} virtual services")));
    }
    let mut services = Vec::new();
    let mut seen_services = HashSet::new();
    let mut maglev_services = 0u32;
    for (i, v) in raw.virtuals.iter().enumerate() {
        let service = virtual_service(&at, i, v)?;
        if !seen_services.insert((service.protocol, service.vip)) {
            return Err(at.error(v.address.span().start, format!("virtual[{i}].address"), format!("{} {} is defined twice", service.protocol, service.vip)));
        }
        if service.scheduler == Scheduler::Mh {
            maglev_services += 1;
            if maglev_services > MAX_MAGLEV_SERVICES {
                let offset = v.scheduler.as_ref().map_or(v.address.span().start, |s| s.span().start);
                return Err(at.error(offset, format!("virtual[{i}].scheduler"), format!("at most {MAX_MAGLEV_SERVICES} services can use mh")));
            }
        }
        services.push(service);
    }
    let reals: usize = services.iter().map(|s| s.reals.len()).sum();
    if reals > MAX_REALS as usize {
        return Err(at.error(0, "virtual", format!("{reals} reals in all: at most {MAX_REALS}")));
    }
    let autoreload = match &raw.director.autoreload {
        None => false,
        Some(v) => at.boolean(v, "director.autoreload")?,
    };
    let metrics = match &raw.director.metrics {
        None => None,
        Some(v) => {
            let text = at.string(v, "director.metrics")?;
            let addr = text.parse::<std::net::SocketAddr>().ok().filter(|a| a.port() != 0).ok_or_else(|| {
                at.error(v.span().start, "director.metrics", format!("'{text}' is not a socket address: write IP:PORT, like 127.0.0.1:9108"))
            })?;
            Some(addr)
        }
    };
    let vrrp = match &raw.vrrp {
        None => None,
        Some(section) => Some(vrrp::parse(&at, section.get_ref(), section.span().start, &services)?),
    };
    let sync = match &raw.sync {
        None => None,
        Some(section) => {
            let pair = vrrp.as_ref().map(|v| (v.interface.as_str(), v.unicast_peers.as_slice(), v.vrid));
            Some(sync::parse(&at, section.span().start, section.get_ref(), pair)?)
        }
    };
    Ok(Config { interfaces: interfaces.clone(), conn_table_size, cache_size, frag_table_size, timeouts, autoreload, metrics, services, vrrp, sync })
}

fn virtual_service(at: &Locator<'_>, i: usize, v: &VirtualSection) -> Result<Service, ConfigError> {
    let key = |k: &str| format!("virtual[{i}].{k}");
    let vip = parse_virtual(v.address.get_ref()).map_err(|m| at.error(v.address.span().start, key("address"), m))?;
    let port = vip.port;
    let protocol = match v.protocol.as_ref().map(|p| (p.get_ref().as_str(), p.span().start)) {
        None | Some(("tcp", _)) => Protocol::Tcp,
        Some(("udp", _)) => Protocol::Udp,
        Some((other, offset)) => {
            return Err(at.error(offset, key("protocol"), format!("'{other}' is not a protocol: use tcp or udp")));
        }
    };
    let scheduler = match &v.scheduler {
        None => DEFAULT_SCHEDULER,
        Some(s) => s.get_ref().parse::<Scheduler>().map_err(|_| {
            let names: Vec<&str> = Scheduler::ALL.iter().map(|s| s.name()).collect();
            at.error(s.span().start, key("scheduler"), format!("'{}' is not a scheduler: use one of {}", s.get_ref(), names.join(", ")))
        })?,
    };
    let sched_flags = scheduler_flags(at, &key("scheduler_flags"), scheduler, v.scheduler_flags.as_ref())?;
    let persistence = persistence(at, i, v, vip.addr)?;
    let lblc_expire = match &v.lblc_expire {
        Some(e) if !matches!(scheduler, Scheduler::Lblc | Scheduler::Lblcr) => {
            return Err(at.error(e.span().start, key("lblc_expire"), format!("only lblc and lblcr keep a cache to expire (the scheduler is {scheduler})")));
        }
        e => at.ranged(e.as_ref(), key("lblc_expire"), 1, i64::from(MAX_TIMEOUT), LBLC_DEFAULT_EXPIRATION_SECS as u32)?,
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
    let check = check_parse::resolve(at, &key("check"), v.check.as_ref(), &Check::default())?;
    let mut reals = Vec::new();
    let mut seen = HashSet::new();
    for (j, r) in v.real.iter().enumerate() {
        let rkey = |k: &str| format!("virtual[{i}].real[{j}].{k}");
        let (raddr, rport) = parse_endpoint(r.address.get_ref(), Some(port))
            .and_then(|(a, p)| same_family(vip.addr, a).map(|()| (a, p)))
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
        let u_threshold = at.ranged(r.u_threshold.as_ref(), rkey("u_threshold"), 0, MAX_THRESHOLD, 0)?;
        let l_threshold = at.ranged(r.l_threshold.as_ref(), rkey("l_threshold"), 0, MAX_THRESHOLD, 0)?;
        if let Some(l) = r.l_threshold.as_ref().filter(|_| l_threshold != 0) {
            if u_threshold == 0 {
                return Err(at.error(l.span().start, rkey("l_threshold"), "a lower threshold needs an upper one: set u_threshold too"));
            }
            if l_threshold > u_threshold {
                return Err(at.error(l.span().start, rkey("l_threshold"), format!("{l_threshold} is above u_threshold {u_threshold}")));
            }
        }
        if !seen.insert((raddr, rport)) {
            return Err(at.error(r.address.span().start, rkey("address"), format!("{} is listed twice in this service", addr::Endpoint(raddr, rport))));
        }
        let rcheck = check_parse::resolve(at, &rkey("check"), r.check.as_ref(), &check)?;
        reals.push(Real { addr: raddr, port: rport, weight, forward, u_threshold, l_threshold, check: rcheck });
    }
    let keys = check_parse::HealthKeys {
        quiescent: v.quiescent.as_ref(),
        fallback: v.fallback.as_ref(),
        quorum: v.quorum.as_ref(),
        quorum_up: v.quorum_up.as_ref(),
        quorum_down: v.quorum_down.as_ref(),
        notify_up: v.notify_up.as_ref(),
        notify_down: v.notify_down.as_ref(),
    };
    let health = check_parse::health(at, &format!("virtual[{i}]"), &keys, vip, default_forward, &reals)?;
    Ok(Service { protocol, vip, scheduler, sched_flags, persistence, lblc_expire, reals, check, health })
}

/// `scheduler_flags`: each name must be one `scheduler` knows (ipvsadm -b).
fn scheduler_flags(at: &Locator<'_>, key: &str, scheduler: Scheduler, flags: Option<&Spanned<Vec<String>>>) -> Result<u8, ConfigError> {
    let Some(flags) = flags else { return Ok(0) };
    let mut bits = 0;
    let mut seen = HashSet::new();
    for name in flags.get_ref() {
        let bit = scheduler.flag_from_name(name).ok_or_else(|| {
            let known = match scheduler {
                Scheduler::Sh => "sh-fallback, sh-port, flag-1, flag-2 or flag-3",
                Scheduler::Mh => "mh-fallback, mh-port, flag-1, flag-2 or flag-3",
                _ => "flag-1, flag-2 or flag-3",
            };
            at.error(flags.span().start, key, format!("'{name}' is not a flag of the {scheduler} scheduler: use {known}"))
        })?;
        if !seen.insert(name) {
            return Err(at.error(flags.span().start, key, format!("'{name}' is listed twice")));
        }
        bits |= bit;
    }
    Ok(bits)
}

/// `persistent` and `netmask` of a service on `vip`.
fn persistence(at: &Locator<'_>, i: usize, v: &VirtualSection, vip: IpAddr) -> Result<Option<Persistence>, ConfigError> {
    let key = |k: &str| format!("virtual[{i}].{k}");
    let timeout = match &v.persistent {
        None => 0,
        Some(p) => match p.get_ref() {
            toml::Value::Boolean(true) => DEFAULT_PERSISTENT_TIMEOUT,
            toml::Value::Boolean(false) => 0,
            toml::Value::Integer(n) => u32::try_from(*n).ok().filter(|n| *n <= MAX_TIMEOUT).ok_or_else(|| {
                at.error(p.span().start, key("persistent"), format!("{n} is out of range 0..={MAX_TIMEOUT} (seconds; 0 = not persistent)"))
            })?,
            other => {
                return Err(at.error(p.span().start, key("persistent"), format!("{other} is not a timeout: write seconds, or true for {DEFAULT_PERSISTENT_TIMEOUT}")));
            }
        },
    };
    let netmask = match &v.netmask {
        None => Persistence::whole(vip),
        Some(m) => {
            let mask = netmask(m.get_ref(), vip).map_err(|e| at.error(m.span().start, key("netmask"), e))?;
            if timeout == 0 {
                return Err(at.error(m.span().start, key("netmask"), "a netmask only applies to a persistent service: set persistent too"));
            }
            mask
        }
    };
    Ok((timeout != 0).then_some(Persistence { timeout, netmask }))
}

/// A persistence netmask for a service on `vip`: a dotted netmask for
/// IPv4 (`"255.255.255.0"`), a prefix length for IPv6 (`64` or `"64"`, as
/// ipvsadm's `-M 64` and keepalived's `persistence_granularity 64`).
pub fn netmask(value: &toml::Value, vip: IpAddr) -> Result<IpAddr, String> {
    match (vip, value) {
        (IpAddr::V4(_), toml::Value::String(text)) => {
            let mask: Ipv4Addr = text
                .parse()
                .map_err(|_| format!("'{text}' is not a netmask: write it as an address, like 255.255.255.0"))?;
            addr::mask_prefix(IpAddr::V4(mask)).ok_or_else(|| format!("{mask} is not a contiguous netmask"))?;
            Ok(IpAddr::V4(mask))
        }
        (IpAddr::V4(_), other) => Err(format!("expected a netmask string like \"255.255.255.0\" for an IPv4 service, found {} {other}", other.type_str())),
        (IpAddr::V6(_), toml::Value::Integer(n)) => v6_prefix(&n.to_string()),
        (IpAddr::V6(_), toml::Value::String(text)) => v6_prefix(text),
        (IpAddr::V6(_), other) => Err(format!("expected a prefix length like 64 for an IPv6 service, found {} {other}", other.type_str())),
    }
}

/// An IPv6 persistence prefix length, `0..=128`, as its mask.
fn v6_prefix(text: &str) -> Result<IpAddr, String> {
    let len = text.trim().trim_start_matches('/').parse::<u8>().ok().filter(|l| *l <= 128).ok_or_else(|| {
        format!("'{text}' is not an IPv6 prefix length: write 0..=128, like 64 (an IPv6 service takes a prefix length, not a dotted netmask)")
    })?;
    Ok(addr::prefix_mask(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), len))
}

/// A real (or fallback) must be of its service's family: IPVS mixes them
/// only for tunnelling, and xlvs does not.
pub fn same_family(vip: IpAddr, real: IpAddr) -> Result<(), String> {
    if addr::family(vip) == addr::family(real) {
        Ok(())
    } else {
        Err(format!("{real} is {} but the service's address is {}: a service and its reals must be of one family", addr::family_name(real), addr::family_name(vip)))
    }
}

/// Parses a virtual address: `ip:port`, `[ipv6]:port`, or for a range
/// `network/prefix:port` / `[ipv6-network/prefix]:port` (`[net]/prefix:port`
/// is read too). A full-length prefix is the single address.
fn parse_virtual(s: &str) -> Result<VirtualAddr, String> {
    let (net, len, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Err(format!("'{s}' has '[' without ']': write [IPV6]:PORT"));
        };
        let Some((len_outside, port)) = after.split_once(':') else {
            return Err(format!("'{s}' needs a port: write [ADDRESS]:PORT"));
        };
        let (net, len_inside) = match inside.split_once('/') {
            Some((net, len)) => (net, Some(len)),
            None => (inside, None),
        };
        let len = match (len_inside, len_outside.strip_prefix('/')) {
            (len, None) if len_outside.is_empty() => len,
            (None, Some(len)) => Some(len),
            _ => return Err(format!("'{s}' is not [ADDRESS]:PORT or [NETWORK/PREFIX]:PORT")),
        };
        (net, len, port)
    } else {
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!("'{s}' needs a port: write ADDRESS:PORT"));
        };
        if host.contains(':') {
            return Err(format!("'{s}': write an IPv6 address in brackets, like [2001:db8::1]:80"));
        }
        match host.split_once('/') {
            Some((net, len)) => (net, Some(len), port),
            None => (host, None, port),
        }
    };
    let addr = host_address(net)?;
    let port = parse_port(port)?;
    let max = addr::max_prefix(addr);
    let Some(len) = len else { return Ok(VirtualAddr::single(addr, port)) };
    let prefix_len = len
        .parse::<u8>()
        .ok()
        .filter(|l| (1..=max).contains(l))
        .ok_or_else(|| format!("'/{len}' is not a prefix length (1..={max})"))?;
    if prefix_len == max {
        return Ok(VirtualAddr::single(addr, port));
    }
    let network = addr::network(addr, prefix_len);
    if network != addr {
        return Err(format!("{addr}/{prefix_len} has host bits set: the network is {network}/{prefix_len}"));
    }
    Ok(VirtualAddr { addr, prefix_len, port })
}

/// An address that can be a VIP or a real: not unspecified, multicast or
/// broadcast, and IPv6 not an IPv4-mapped address (which is IPv4 in disguise).
fn host_address(host: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = host.parse().map_err(|_| format!("'{host}' is not an IP address"))?;
    let bad = match ip {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast(),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return Err(format!("{ip} is an IPv4-mapped address: write it as {v4}"));
            }
            v6.is_unspecified() || v6.is_multicast()
        }
    };
    if bad {
        return Err(format!("{ip} cannot be a service or real address"));
    }
    Ok(ip)
}

fn parse_port(p: &str) -> Result<u16, String> {
    p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("'{p}' is not a port (1..=65535)"))
}

/// Parses `ip:port` or `[ipv6]:port`, or a bare `ip` / `[ipv6]` / `ipv6`
/// when `default_port` is given.
pub fn parse_endpoint(s: &str, default_port: Option<u16>) -> Result<(IpAddr, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) if p.starts_with(':') => (h, Some(&p[1..])),
            _ => return Err(format!("'{s}' is not [ADDRESS] or [ADDRESS]:PORT")),
        }
    } else {
        match s.rsplit_once(':') {
            // Bare IPv6 (only as a real's address without a port).
            Some((h, _)) if h.contains(':') => (s, None),
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if port.is_none() && default_port.is_none() {
        let form = if host.contains(':') { "[ADDRESS]:PORT" } else { "ADDRESS:PORT" };
        return Err(format!("'{s}' needs a port: write {form}"));
    }
    let ip = host_address(host)?;
    let port = match port {
        Some(p) => parse_port(p)?,
        None => default_port.unwrap_or_default(),
    };
    Ok((ip, port))
}

#[cfg(test)]
mod tests {
    use lb_common::sched::{SVC_F_MH_PORT, SVC_F_SCHED3, SVC_F_SH_FALLBACK, SVC_F_SH_PORT};

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

    fn real(addr: [u8; 4], port: u16, weight: u32, forward: Forward) -> Real {
        Real { addr: IpAddr::from(Ipv4Addr::from(addr)), port, weight, forward, u_threshold: 0, l_threshold: 0, check: Check::default() }
    }

    #[test]
    fn the_issue_example_parses() {
        let c = parse("t.toml", GOOD).unwrap();
        assert_eq!(c.interfaces, ["veth-ext"]);
        assert_eq!(c.conn_table_size, DEFAULT_CONN_TABLE_SIZE);
        assert_eq!(c.cache_size, DEFAULT_CACHE_SIZE);
        assert_eq!(c.frag_table_size, DEFAULT_FRAG_TABLE_SIZE);
        assert_eq!(c.timeouts, Timeouts::default());
        let s = &c.services[0];
        assert_eq!((s.protocol, s.vip), (Protocol::Tcp, VirtualAddr::single(Ipv4Addr::new(10, 100, 0, 100), 80)));
        assert_eq!(s.scheduler, Scheduler::Rr);
        assert_eq!((s.sched_flags, s.persistence, s.flags()), (0, None, 0));
        assert_eq!(s.reals[1], real([10, 0, 1, 12], 8080, 2, Forward::Nat));
    }

    #[test]
    fn defaults_and_aliases() {
        let c = parse("t.toml", "[director]\ninterfaces=[\"e\"]\n[[virtual]]\naddress=\"10.1.1.1:53\"\nprotocol=\"udp\"\n[[virtual.real]]\naddress=\"10.2.2.2\"\n[[virtual.real]]\naddress=\"10.2.2.3\"\nforward=\"ipip\"\n").unwrap();
        let s = &c.services[0];
        // ipvsadm's default scheduler.
        assert_eq!(s.scheduler, Scheduler::Wlc);
        assert_eq!(s.lblc_expire, 86_400);
        assert_eq!(s.reals[0], real([10, 2, 2, 2], 53, 1, Forward::Dr));
        assert_eq!(s.reals[1].forward, Forward::Tun);
        for (alias, f) in [("masq", Forward::Nat), ("gate", Forward::Dr), ("ipip", Forward::Tun)] {
            let c = parse("t.toml", &with("forward = \"nat\"", &format!("forward = \"{alias}\""))
                .replace(":8080", ":80")).unwrap();
            assert_eq!(c.services[0].reals[0].forward, f);
        }
    }

    #[test]
    fn every_scheduler_and_its_flags() {
        for s in Scheduler::ALL {
            let c = parse("t.toml", &with("scheduler = \"rr\"", &format!("scheduler = \"{s}\""))).unwrap();
            assert_eq!(c.services[0].scheduler, s);
        }
        let sh = with("scheduler = \"rr\"", "scheduler = \"sh\"\nscheduler_flags = [\"sh-port\", \"sh-fallback\", \"flag-3\"]");
        let s = &parse("t.toml", &sh).unwrap().services[0];
        assert_eq!(s.sched_flags, SVC_F_SH_PORT | SVC_F_SH_FALLBACK | SVC_F_SCHED3);
        assert_eq!(s.flags(), s.sched_flags);
        let mh = with("scheduler = \"rr\"", "scheduler = \"mh\"\nscheduler_flags = [\"mh-port\"]");
        assert_eq!(parse("t.toml", &mh).unwrap().services[0].sched_flags, SVC_F_MH_PORT);
    }

    #[test]
    fn persistence_thresholds_and_timeouts() {
        let text = with("scheduler = \"rr\"", "scheduler = \"rr\"\npersistent = 600\nnetmask = \"255.255.255.0\"")
            .replace("weight = 2", "weight = 2\nu_threshold = 100\nl_threshold = 50")
            .replace("interfaces = [\"veth-ext\"]", "interfaces = [\"veth-ext\"]\ntimeout_tcp = 3600\ntimeout_udp = 10");
        let c = parse("t.toml", &text).unwrap();
        assert_eq!(c.timeouts, Timeouts { tcp: 3600, tcpfin: 120, udp: 10 });
        let s = &c.services[0];
        assert_eq!(s.persistence, Some(Persistence { timeout: 600, netmask: IpAddr::from(Ipv4Addr::new(255, 255, 255, 0)) }));
        assert_eq!(s.flags(), SVC_F_PERSISTENT);
        assert_eq!((s.reals[1].u_threshold, s.reals[1].l_threshold), (100, 50));
        assert_eq!((s.reals[0].u_threshold, s.reals[0].l_threshold), (0, 0));

        let p = |value: &str| {
            let text = with("scheduler = \"rr\"", &format!("scheduler = \"rr\"\npersistent = {value}"));
            parse("t.toml", &text).unwrap().services[0].persistence
        };
        assert_eq!(p("true"), Some(Persistence { timeout: 360, netmask: IpAddr::from(Ipv4Addr::BROADCAST) }));
        assert_eq!(p("false"), None);
        assert_eq!(p("0"), None);
        assert_eq!(p("1").map(|p| p.timeout), Some(1));
        // A netmask of 0.0.0.0 sends every client to one real.
        let text = with("scheduler = \"rr\"", "persistent = 1\nnetmask = \"0.0.0.0\"");
        assert_eq!(parse("t.toml", &text).unwrap().services[0].persistence.unwrap().netmask, Ipv4Addr::UNSPECIFIED);

        let lblc = with("scheduler = \"rr\"", "scheduler = \"lblcr\"\nlblc_expire = 60");
        assert_eq!(parse("t.toml", &lblc).unwrap().services[0].lblc_expire, 60);
    }

    #[test]
    fn range_services() {
        let c = parse("t.toml", &with("10.100.0.100:80", "10.50.0.0/16:80")).unwrap();
        let vip = c.services[0].vip;
        assert_eq!(vip, VirtualAddr { addr: IpAddr::from(Ipv4Addr::new(10, 50, 0, 0)), prefix_len: 16, port: 80 });
        assert!(vip.is_range());
        assert_eq!(vip.mask(), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(vip.to_string(), "10.50.0.0/16:80");
        assert_eq!("10.50.0.0/16:80".parse::<VirtualAddr>(), Ok(vip));
        assert_eq!(serde_json::to_string(&vip).unwrap(), "\"10.50.0.0/16:80\"");
        // /32 is the single address.
        let single = parse("t.toml", &with("10.100.0.100:80", "10.100.0.100/32:80")).unwrap().services[0].vip;
        assert_eq!(single.to_string(), "10.100.0.100:80");
        assert!(!single.is_range());
        // Nested ranges on one port are fine: the longest prefix wins.
        let nested = format!("{}\n[[virtual]]\naddress = \"10.50.1.0/24:80\"\n[[virtual]]\naddress = \"10.50.1.7:80\"\n", with("10.100.0.100:80", "10.50.0.0/16:80"));
        assert_eq!(parse("t.toml", &nested).unwrap().services.len(), 3);
        assert_eq!(prefix_mask(1), Ipv4Addr::new(128, 0, 0, 0));
        assert_eq!(prefix_mask(0), Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn every_mistake_has_its_own_message_with_line_and_key() {
        let cases: &[(&str, &str, usize, &str, &str)] = &[
            ("protocol = \"tcp\"", "protocol = \"sctp\"", 7, "virtual[0].protocol", "'sctp' is not a protocol"),
            ("scheduler = \"rr\"", "scheduler = \"fastest\"", 8, "virtual[0].scheduler", "'fastest' is not a scheduler: use one of rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, mh"),
            ("scheduler = \"rr\"", "scheduler = \"WLC\"", 8, "virtual[0].scheduler", "'WLC' is not a scheduler"),
            ("scheduler = \"rr\"", "scheduler = \"rr\"\nscheduler_flags = [\"sh-port\"]", 9, "virtual[0].scheduler_flags", "'sh-port' is not a flag of the rr scheduler: use flag-1, flag-2 or flag-3"),
            ("scheduler = \"rr\"", "scheduler = \"mh\"\nscheduler_flags = [\"sh-port\"]", 9, "virtual[0].scheduler_flags", "use mh-fallback, mh-port"),
            ("scheduler = \"rr\"", "scheduler = \"sh\"\nscheduler_flags = [\"sh-port\", \"sh-port\"]", 9, "virtual[0].scheduler_flags", "'sh-port' is listed twice"),
            ("scheduler = \"rr\"", "persistent = -1", 8, "virtual[0].persistent", "-1 is out of range 0..=2678400"),
            ("scheduler = \"rr\"", "persistent = 2678401", 8, "virtual[0].persistent", "out of range"),
            ("scheduler = \"rr\"", "persistent = \"yes\"", 8, "virtual[0].persistent", "is not a timeout: write seconds, or true for 360"),
            ("scheduler = \"rr\"", "persistent = 60\nnetmask = \"255.255.255.300\"", 9, "virtual[0].netmask", "is not a netmask"),
            ("scheduler = \"rr\"", "persistent = 60\nnetmask = \"255.0.255.0\"", 9, "virtual[0].netmask", "not a contiguous netmask"),
            ("scheduler = \"rr\"", "netmask = \"255.255.255.0\"", 8, "virtual[0].netmask", "only applies to a persistent service"),
            ("scheduler = \"rr\"", "scheduler = \"lblc\"\nlblc_expire = 0", 9, "virtual[0].lblc_expire", "0 is out of range 1..="),
            ("scheduler = \"rr\"", "scheduler = \"rr\"\nlblc_expire = 60", 9, "virtual[0].lblc_expire", "only lblc and lblcr keep a cache to expire (the scheduler is rr)"),
            ("forward = \"nat\"", "forward = \"teleport\"", 9, "virtual[0].forward", "'teleport' is not a forwarding method"),
            ("forward = \"nat\"", "forward = \"dr\"", 12, "virtual[0].real[0].address", "only nat can map ports"),
            ("address = \"10.100.0.100:80\"", "address = \"10.100.0.100\"", 6, "virtual[0].address", "needs a port"),
            ("address = \"10.100.0.100:80\"", "address = \"10.100.0.300:80\"", 6, "virtual[0].address", "not an IP address"),
            ("address = \"10.100.0.100:80\"", "address = \"10.100.0.100:0\"", 6, "virtual[0].address", "not a port"),
            ("address = \"10.100.0.100:80\"", "address = \"10.100.0.100:70000\"", 6, "virtual[0].address", "not a port"),
            ("address = \"10.100.0.100:80\"", "address = \"[2001:db8::1]:80\"", 12, "virtual[0].real[0].address", "10.0.1.11 is IPv4 but the service's address is IPv6: a service and its reals must be of one family"),
            ("address = \"10.100.0.100:80\"", "address = \"0.0.0.0:80\"", 6, "virtual[0].address", "cannot be a service"),
            ("address = \"10.100.0.100:80\"", "address = \"10.50.0.0/33:80\"", 6, "virtual[0].address", "'/33' is not a prefix length (1..=32)"),
            ("address = \"10.100.0.100:80\"", "address = \"10.50.0.0/0:80\"", 6, "virtual[0].address", "'/0' is not a prefix length"),
            ("address = \"10.100.0.100:80\"", "address = \"10.50.1.0/16:80\"", 6, "virtual[0].address", "10.50.1.0/16 has host bits set: the network is 10.50.0.0/16"),
            ("address = \"10.100.0.100:80\"", "address = \"10.50.0.0/16\"", 6, "virtual[0].address", "needs a port"),
            ("address = \"10.100.0.100:80\"", "address = \"10.50.0.x/16:80\"", 6, "virtual[0].address", "'10.50.0.x' is not an IP address"),
            ("address = \"10.0.1.11:8080\"", "address = \"10.0.1.0/24:8080\"", 12, "virtual[0].real[0].address", "is not an IP address"),
            ("weight = 2", "weight = -1", 17, "virtual[0].real[1].weight", "out of range"),
            ("weight = 2", "weight = 70000", 17, "virtual[0].real[1].weight", "out of range"),
            ("weight = 2", "weight = 2\nu_threshold = -5", 18, "virtual[0].real[1].u_threshold", "-5 is out of range 0..=2147483647"),
            ("weight = 2", "weight = 2\nl_threshold = 3000000000", 18, "virtual[0].real[1].l_threshold", "out of range 0..=2147483647"),
            ("weight = 2", "weight = 2\nl_threshold = 5", 18, "virtual[0].real[1].l_threshold", "a lower threshold needs an upper one"),
            ("weight = 2", "weight = 2\nu_threshold = 10\nl_threshold = 11", 19, "virtual[0].real[1].l_threshold", "11 is above u_threshold 10"),
            ("address = \"10.0.1.12:8080\"", "address = \"10.0.1.11:8080\"", 16, "virtual[0].real[1].address", "listed twice"),
            ("interfaces = [\"veth-ext\"]", "interfaces = []", 3, "director.interfaces", "at least one"),
            ("interfaces = [\"veth-ext\"]", "interfaces = [\"a\", \"a\"]", 3, "director.interfaces", "listed twice"),
            ("interfaces = [\"veth-ext\"]", "interfaces = [\"a-name-that-is-far-too-long\"]", 3, "director.interfaces", "not a valid interface name"),
            ("interfaces = [\"veth-ext\"]", "interfaces = [\"veth-ext\"]\nconn_table_size = 10", 4, "director.conn_table_size", "at least 1024"),
            ("interfaces = [\"veth-ext\"]", "interfaces = [\"veth-ext\"]\ncache_size = 1023", 4, "director.cache_size", "at least 1024"),
            ("interfaces = [\"veth-ext\"]", "interfaces = [\"veth-ext\"]\nfrag_table_size = 0", 4, "director.frag_table_size", "at least 1024"),
            ("interfaces = [\"veth-ext\"]", "interfaces = [\"veth-ext\"]\ntimeout_tcp = 0", 4, "director.timeout_tcp", "0 is out of range 1..=2678400"),
            ("interfaces = [\"veth-ext\"]", "interfaces = [\"veth-ext\"]\ntimeout_tcpfin = 2678401", 4, "director.timeout_tcpfin", "out of range 1..=2678400"),
            ("interfaces = [\"veth-ext\"]", "interfaces = [\"veth-ext\"]\ntimeout_udp = -1", 4, "director.timeout_udp", "out of range"),
            ("weight = 1", "weight = 1\nport = 3", 14, "toml", "unknown field `port`"),
            ("protocol = \"tcp\"", "protocol = tcp", 7, "toml", ""),
            ("interfaces = [\"veth-ext\"]", "interfaces = [\"veth-ext\"]\nautoreload = \"yes\"", 4, "director.autoreload", "expected true or false, found string \"yes\""),
            ("interfaces = [\"veth-ext\"]", "interfaces = [\"veth-ext\"]\nmetrics = \"localhost:9108\"", 4, "director.metrics", "'localhost:9108' is not a socket address: write IP:PORT"),
            ("interfaces = [\"veth-ext\"]", "interfaces = [\"veth-ext\"]\nmetrics = \"127.0.0.1:0\"", 4, "director.metrics", "not a socket address"),
            ("interfaces = [\"veth-ext\"]", "interfaces = [\"veth-ext\"]\nmetrics = 9108", 4, "director.metrics", "expected a string, found integer 9108"),
            ("forward = \"nat\"", "forward = \"nat\"\nquiescent = 1", 10, "virtual[0].quiescent", "expected true or false"),
            ("forward = \"nat\"", "forward = \"nat\"\nfallback = \"127.0.0.1:81 gate\"", 10, "virtual[0].fallback", "port 81 differs from the virtual port 80: only nat can map ports"),
            ("forward = \"nat\"", "forward = \"nat\"\nfallback = \"127.0.0.1:80 teleport\"", 10, "virtual[0].fallback", "'teleport' is not a forwarding method"),
            ("forward = \"nat\"", "forward = \"nat\"\nfallback = \"127.0.0.1:80 gate twice\"", 10, "virtual[0].fallback", "unexpected 'twice'"),
            ("forward = \"nat\"", "forward = \"nat\"\nfallback = \"10.0.1.11:8080\"", 10, "virtual[0].fallback", "10.0.1.11:8080 is one of the service's reals"),
            ("forward = \"nat\"", "forward = \"nat\"\nfallback = \"10.0.1.300\"", 10, "virtual[0].fallback", "'10.0.1.300' is not an IP address"),
            ("forward = \"nat\"", "forward = \"nat\"\nfallback = { address = \"127.0.0.1\", port = 80 }", 10, "virtual[0].fallback", "unknown key 'port': a fallback has address and forward"),
            ("forward = \"nat\"", "forward = \"nat\"\nfallback = { forward = \"dr\" }", 10, "virtual[0].fallback", "a fallback table needs an address"),
            ("forward = \"nat\"", "forward = \"nat\"\nfallback = { address = \"127.0.0.1:81\", forward = \"dr\" }", 10, "virtual[0].fallback", "only nat can map ports"),
            ("forward = \"nat\"", "forward = \"nat\"\nfallback = 80", 10, "virtual[0].fallback", "expected \"ip:port [gate|masq|ipip]\" or { address"),
            ("forward = \"nat\"", "forward = \"nat\"\nquorum = -1", 10, "virtual[0].quorum", "-1 is out of range 0..=4294967295"),
            ("forward = \"nat\"", "forward = \"nat\"\nquorum = \"2\"", 10, "virtual[0].quorum", "expected an integer"),
            ("forward = \"nat\"", "forward = \"nat\"\nnotify_up = \"\"", 10, "virtual[0].notify_up", "must not be empty"),
            ("forward = \"nat\"", "forward = \"nat\"\nquorum_down = true", 10, "virtual[0].quorum_down", "expected a string, found boolean true"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"tcp\"", 11, "virtual[0].check.type", "'tcp' is not a check type: use connect, http, https, external, ping, dns, smtp or none (off)"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"connect\"\nreceive = \"x\"", 12, "virtual[0].check.receive", "'receive' applies to http and https checks (this check is connect)"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\nreceive = \"x\"", 11, "virtual[0].check.receive", "'receive' applies to http and https checks (this check is none)"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"http\"\nhelo = \"x\"", 12, "virtual[0].check.helo", "'helo' applies to smtp checks (this check is http)"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"ping\"\ncommand = \"x\"", 12, "virtual[0].check.command", "'command' applies to external checks"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"smtp\"\nrecord = \"A\"", 12, "virtual[0].check.record", "'record' applies to dns checks"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"dns\"\nexpect = \"x\"", 12, "virtual[0].check.expect", "'expect' applies to connect checks"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"http\"\nreceive = \"(\"", 12, "virtual[0].check.receive", "'(' is not a valid regex: unclosed group"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"connect\"\nexpect = \"[a-\"", 12, "virtual[0].check.expect", "is not a valid regex"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"http\"\nmethod = \"POST\"", 12, "virtual[0].check.method", "'POST' is not a method: use GET or HEAD"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"http\"\nstatus = [\"2xx\"]", 12, "virtual[0].check.status", "\"2xx\" is not a status code or range"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"http\"\nstatus = [\"299-200\"]", 12, "virtual[0].check.status", "is not a status code or range"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"http\"\nstatus = [600]", 12, "virtual[0].check.status", "600 is not a status code"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"http\"\nstatus = []", 12, "virtual[0].check.status", "list at least one status code"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"http\"\nstatus = \"200\"", 12, "virtual[0].check.status", "expected a list of status codes"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"http\"\nrequest = \"http://example.com/\"", 12, "virtual[0].check.request", "is a URL: write the path only"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"http\"\nrequest = \"/a b\"", 12, "virtual[0].check.request", "must not contain spaces"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"https\"\nvirtualhost = \"a b\"", 12, "virtual[0].check.virtualhost", "must not contain spaces"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ncheck_interval = 0", 11, "virtual[0].check.check_interval", "0 is out of range: write seconds, above 0 and at most 2678400"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ncheck_interval = 0.0000001", 11, "virtual[0].check.check_interval", "out of range"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ncheck_timeout = -1.5", 11, "virtual[0].check.check_timeout", "-1.5 is out of range"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ncheck_timeout = nan", 11, "virtual[0].check.check_timeout", "out of range"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ncheck_interval = 2678401", 11, "virtual[0].check.check_interval", "out of range"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ncheck_interval = \"1s\"", 11, "virtual[0].check.check_interval", "expected seconds (an integer or a float), found string"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\nwarmup = -1", 11, "virtual[0].check.warmup", "-1 is out of range: write seconds, 0 and at most"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\nfailure_count = 0", 11, "virtual[0].check.failure_count", "0 is out of range 1..=4294967295"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\nrise = 0", 11, "virtual[0].check.rise", "out of range 1..="),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\nport = 70000", 11, "virtual[0].check.port", "70000 is out of range 1..=65535"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"external\"", 11, "virtual[0].check.command", "an external check needs a command"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"external\"\ncommand = \" \"", 12, "virtual[0].check.command", "must not be empty"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"external\"\ncommand = \"x\"\ndynamic_weight = \"yes\"", 13, "virtual[0].check.dynamic_weight", "expected true or false"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"dns\"\nrecord = \"AXFR\"", 12, "virtual[0].check.record", "\"AXFR\" is not a record type: use A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV or a type number"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"dns\"\nrecord = 0", 12, "virtual[0].check.record", "0 is not a record type"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"dns\"\nname = \"\"", 12, "virtual[0].check.name", "must not be empty"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"smtp\"\nhelo = \"my host\"", 12, "virtual[0].check.helo", "must not contain spaces"),
            ("forward = \"nat\"", "forward = \"nat\"\n[virtual.check]\ntype = \"http\"\nurl = \"/\"", 12, "toml", "unknown field `url`"),
            ("weight = 1", "weight = 1\n[virtual.real.check]\nreceive = \"x\"", 15, "virtual[0].real[0].check.receive", "(this check is none)"),
            ("weight = 1", "weight = 1\n[virtual.real.check]\ntype = \"external\"", 15, "virtual[0].real[0].check.command", "an external check needs a command"),
            ("weight = 1", "weight = 1\n[virtual.real.check]\ncheck_timeout = 0", 15, "virtual[0].real[0].check.check_timeout", "out of range"),
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
        // The same range twice is refused.
        let ranges = format!("{GOOD}\n[[virtual]]\naddress = \"10.50.0.0/16:80\"\n[[virtual]]\naddress = \"10.50.0.0/16:80\"\n");
        let e = err(&ranges);
        assert_eq!((e.key.as_str(), e.line), ("virtual[2].address", 22));
        assert!(e.message.contains("tcp 10.50.0.0/16:80 is defined twice"), "{e}");
    }

    #[test]
    fn reals_are_limited_in_all() {
        let mut text = String::from("[director]\ninterfaces = [\"e\"]\n");
        let per_service = MAX_REALS_PER_SERVICE;
        for i in 0..=(MAX_REALS as usize / per_service) {
            text += &format!("[[virtual]]\naddress = \"10.1.0.{}:80\"\n", i + 1);
            for j in 0..per_service {
                text += &format!("[[virtual.real]]\naddress = \"10.2.{}.{}\"\n", j / 200, j % 200 + 1);
            }
        }
        let e = err(&text);
        assert_eq!(e.key, "virtual");
        assert!(e.message.contains("8448 reals in all: at most 8192"), "{e}");
    }

    #[test]
    fn maglev_services_are_limited() {
        let mut text = String::from("[director]\ninterfaces = [\"e\"]\n");
        for i in 0..=MAX_MAGLEV_SERVICES {
            text += &format!("[[virtual]]\naddress = \"10.1.{}.{}:80\"\nscheduler = \"mh\"\n", i / 200, i % 200 + 1);
        }
        let e = err(&text);
        assert_eq!(e.key, format!("virtual[{MAX_MAGLEV_SERVICES}].scheduler"));
        assert!(e.message.contains("at most 256 services can use mh"), "{e}");
    }

    #[test]
    fn ipv6_addresses_ranges_and_persistence_prefixes() {
        let v6 = |t: &str| t.parse::<IpAddr>().unwrap();
        let text = "[director]\ninterfaces = [\"e\"]\n[[virtual]]\naddress = \"[2001:db8::100]:80\"\npersistent = 300\nnetmask = 64\n[[virtual.real]]\naddress = \"[2001:db8:1::11]:8080\"\nforward = \"nat\"\n[[virtual.real]]\naddress = \"[2001:db8:1::12]\"\n[[virtual]]\naddress = \"[2001:db8:100::/64]:80\"\n[[virtual]]\naddress = \"[2001:db8:200::]/48:80\"\n[[virtual]]\naddress = \"[2001:db8::7/128]:53\"\n";
        let c = parse("t.toml", text).unwrap();
        let s = &c.services[0];
        assert_eq!(s.vip, VirtualAddr { addr: v6("2001:db8::100"), prefix_len: 128, port: 80 });
        assert!(!s.vip.is_range());
        assert_eq!(s.persistence, Some(Persistence { timeout: 300, netmask: v6("ffff:ffff:ffff:ffff::") }));
        assert_eq!((s.reals[0].addr, s.reals[0].port), (v6("2001:db8:1::11"), 8080));
        assert_eq!((s.reals[1].addr, s.reals[1].port), (v6("2001:db8:1::12"), 80));
        assert_eq!(c.services[1].vip, VirtualAddr { addr: v6("2001:db8:100::"), prefix_len: 64, port: 80 });
        assert!(c.services[1].vip.is_range() && c.services[1].vip.covers(v6("2001:db8:100::5")));
        assert!(!c.services[1].vip.covers(v6("2001:db8:101::5")) && !c.services[1].vip.covers("10.0.0.1".parse().unwrap()));
        assert_eq!(c.services[2].vip.to_string(), "[2001:db8:200::/48]:80");
        assert_eq!(c.services[3].vip, VirtualAddr::single(v6("2001:db8::7"), 53));
        // Default persistence granularity is one client (/128).
        let one = "[director]\ninterfaces = [\"e\"]\n[[virtual]]\naddress = \"[2001:db8::1]:80\"\npersistent = true\n";
        assert_eq!(parse("t.toml", one).unwrap().services[0].persistence.unwrap().prefix_len(), 128);
    }

    #[test]
    fn ipv6_reals_take_every_check_type_ping_included() {
        let text = "[director]\ninterfaces = [\"e\"]\n[[virtual]]\naddress = \"[2001:db8::1]:80\"\n[virtual.check]\ntype = \"ping\"\n\
            [[virtual.real]]\naddress = \"[2001:db8::2]\"\n[[virtual.real]]\naddress = \"[2001:db8::3]\"\n[virtual.real.check]\ntype = \"connect\"\n";
        let c = parse("t.toml", text).unwrap();
        let kinds: Vec<_> = c.services[0].reals.iter().map(|r| r.check.kind.clone()).collect();
        assert_eq!(kinds, [CheckKind::Ping, CheckKind::Connect { send: None, expect: None }]);
        assert_eq!(parse("t.toml", &render(&c)).unwrap(), c);
    }

    #[test]
    fn bad_ipv6_input_names_file_line_and_key() {
        let head = "[director]\ninterfaces = [\"e\"]\n[[virtual]]\n";
        let cases: &[(&str, usize, &str, &str)] = &[
            ("address = \"2001:db8::1:80\"", 4, "virtual[0].address", "write an IPv6 address in brackets"),
            ("address = \"[2001:db8::1]\"", 4, "virtual[0].address", "needs a port"),
            ("address = \"[2001:db8::1:80\"", 4, "virtual[0].address", "'[' without ']'"),
            ("address = \"[2001:db8::zz]:80\"", 4, "virtual[0].address", "'2001:db8::zz' is not an IP address"),
            ("address = \"[ff02::1]:80\"", 4, "virtual[0].address", "cannot be a service or real address"),
            ("address = \"[::ffff:10.0.0.1]:80\"", 4, "virtual[0].address", "IPv4-mapped address: write it as 10.0.0.1"),
            ("address = \"[2001:db8::/129]:80\"", 4, "virtual[0].address", "'/129' is not a prefix length (1..=128)"),
            ("address = \"[2001:db8::1/64]:80\"", 4, "virtual[0].address", "2001:db8::1/64 has host bits set: the network is 2001:db8::/64"),
            ("address = \"[2001:db8::/64]/64:80\"", 4, "virtual[0].address", "is not [ADDRESS]:PORT or [NETWORK/PREFIX]:PORT"),
            ("address = \"[2001:db8::1]:80\"\npersistent = 60\nnetmask = \"255.255.255.0\"", 6, "virtual[0].netmask", "is not an IPv6 prefix length"),
            ("address = \"[2001:db8::1]:80\"\npersistent = 60\nnetmask = 129", 6, "virtual[0].netmask", "'129' is not an IPv6 prefix length"),
            ("address = \"10.0.0.1:80\"\npersistent = 60\nnetmask = 24", 6, "virtual[0].netmask", "expected a netmask string"),
            ("address = \"[2001:db8::1]:80\"\nnetmask = 64", 5, "virtual[0].netmask", "only applies to a persistent service"),
            ("address = \"[2001:db8::1]:80\"\n[[virtual.real]]\naddress = \"10.0.1.1\"", 6, "virtual[0].real[0].address", "10.0.1.1 is IPv4 but the service's address is IPv6"),
            ("address = \"10.0.0.1:80\"\n[[virtual.real]]\naddress = \"[2001:db8::1]:80\"", 6, "virtual[0].real[0].address", "2001:db8::1 is IPv6 but the service's address is IPv4"),
            ("address = \"[2001:db8::1]:80\"\n[[virtual.real]]\naddress = \"[2001:db8::2]:8080\"", 6, "virtual[0].real[0].address", "only nat can map ports"),
            ("address = \"[2001:db8::1]:80\"\nfallback = \"127.0.0.1:80\"", 5, "virtual[0].fallback", "127.0.0.1 is IPv4 but the service's address is IPv6"),
        ];
        for (body, line, key, message) in cases {
            let e = err(&format!("{head}{body}\n"));
            assert_eq!((e.line, e.key.as_str()), (*line, *key), "{body}: {e}");
            assert!(e.message.contains(message), "{body}: {e}");
        }
    }
}
