//! The `[vrrp]` section: one VRRP version 3 instance (RFC 5798) that makes
//! this director master or backup of its VIPs, keepalived-compatible.
//! Every value is read as a raw [`toml::Value`] and checked here, so that a
//! wrong type is reported with its key like any other mistake.
//!
//! An instance is of one address family, as keepalived's are: `family`
//! when given, else the family of the first address (the first listed, or
//! the first service's VIP). Its adverts go over that family and list that
//! family's addresses; addresses of the other family are held as
//! keepalived's `virtual_ipaddress_excluded`: added and announced with the
//! role, never advertised.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use toml::{Spanned, Value};

use super::{ConfigError, Locator, Service};

/// keepalived's default priority.
pub const DEFAULT_PRIORITY: u8 = 100;
/// The default advert interval (keepalived's `advert_int 1`).
pub const DEFAULT_ADVERT_INTERVAL: Duration = Duration::from_secs(1);
/// The longest interval a version 3 advert can carry: 4095 centiseconds.
pub const MAX_ADVERT_INTERVAL_MS: i64 = 40_950;
/// The longest preemption delay keepalived accepts, in seconds.
pub const MAX_PREEMPT_DELAY: f64 = 1000.0;
/// Gratuitous ARPs per burst by default (keepalived's garp_master_repeat).
pub const DEFAULT_GARP_COUNT: u32 = 5;
pub const MAX_GARP_COUNT: i64 = 100;
/// The delay of the second burst by default (garp_master_delay).
pub const DEFAULT_GARP_DELAY: Duration = Duration::from_secs(5);
pub const MAX_GARP_DELAY: f64 = 3600.0;
/// Count IPvX Addr is 8 bits.
pub const MAX_ADDRESSES: usize = 255;

/// The address family of an instance: of its adverts, of its unicast
/// peers, and of the addresses its adverts list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    #[default]
    Ipv4,
    Ipv6,
}

impl Family {
    /// The family of an address.
    #[must_use]
    pub const fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::Ipv4,
            IpAddr::V6(_) => Self::Ipv6,
        }
    }

    /// How the config spells it.
    #[must_use]
    pub const fn key(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        }
    }

    /// How messages and listings spell it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ipv4 => "IPv4",
            Self::Ipv6 => "IPv6",
        }
    }

    /// The unspecified address of the family.
    #[must_use]
    pub const fn unspecified(self) -> IpAddr {
        match self {
            Self::Ipv4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Self::Ipv6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A validated `[vrrp]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpConfig {
    /// Where adverts go and come from.
    pub interface: String,
    /// Virtual router id, 1..=255.
    pub vrid: u8,
    /// The family of the adverts and of the addresses they list.
    pub family: Family,
    /// 1..=255; 255 is the address owner, master at once.
    pub priority: u8,
    /// A multiple of 10 ms, 10 ms..=40.95 s.
    pub advert_interval: Duration,
    /// A backup takes over from a lower-priority master.
    pub preempt: bool,
    /// No preemption for this long after start-up.
    pub preempt_delay: Duration,
    /// The virtual addresses, in the order given: those of `family` (at
    /// least one) are advertised; the others are only moved with the role
    /// ([`VrrpConfig::excluded`]).
    pub addresses: Vec<VirtualIp>,
    /// When not empty, adverts go to each of these instead of the group
    /// (224.0.0.18, ff02::12) and are accepted only from them; of `family`.
    pub unicast_peers: Vec<IpAddr>,
    /// Gratuitous ARPs (IPv6: unsolicited neighbour advertisements) per
    /// address per burst on becoming master.
    pub garp_count: u32,
    /// The second burst comes this long after the first (zero: none).
    pub garp_delay: Duration,
    pub notify_master: Option<String>,
    pub notify_backup: Option<String>,
    pub notify_fault: Option<String>,
}

impl VrrpConfig {
    /// An instance with every default and no address yet.
    #[must_use]
    pub fn new(interface: &str, vrid: u8) -> Self {
        Self {
            interface: interface.to_owned(),
            vrid,
            family: Family::Ipv4,
            priority: DEFAULT_PRIORITY,
            advert_interval: DEFAULT_ADVERT_INTERVAL,
            preempt: true,
            preempt_delay: Duration::ZERO,
            addresses: Vec::new(),
            unicast_peers: Vec::new(),
            garp_count: DEFAULT_GARP_COUNT,
            garp_delay: DEFAULT_GARP_DELAY,
            notify_master: None,
            notify_backup: None,
            notify_fault: None,
        }
    }

    /// The advert interval in centiseconds, as adverts carry it.
    #[must_use]
    pub fn advert_interval_cs(&self) -> u16 {
        u16::try_from(self.advert_interval.as_millis() / 10).unwrap_or(u16::MAX).clamp(1, 4095)
    }

    /// The addresses the adverts list: those of the instance's family.
    pub fn advertised(&self) -> impl Iterator<Item = &VirtualIp> {
        self.addresses.iter().filter(|v| Family::of(v.addr) == self.family)
    }

    /// keepalived's `virtual_ipaddress_excluded`: the addresses of the
    /// other family, added and announced with the role but not advertised.
    pub fn excluded(&self) -> impl Iterator<Item = &VirtualIp> {
        self.addresses.iter().filter(|v| Family::of(v.addr) != self.family)
    }
}

/// A virtual address as keepalived's `virtual_ipaddress` writes it:
/// `ADDR[/LEN] [dev IFNAME]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VirtualIp {
    pub addr: IpAddr,
    /// The whole address (32 or 128) unless given.
    pub prefix_len: u8,
    /// The instance's interface unless given.
    pub interface: String,
}

impl fmt::Display for VirtualIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} dev {}", self.addr, self.prefix_len, self.interface)
    }
}

impl VirtualIp {
    /// Parses `ADDR[/LEN] [dev IFNAME]`; the interface defaults to
    /// `default_interface`.
    ///
    /// # Errors
    /// A message for the operator.
    pub fn parse(s: &str, default_interface: &str) -> Result<Self, String> {
        let mut words = s.split_whitespace();
        let Some(first) = words.next() else {
            return Err("an address must not be empty".into());
        };
        let (addr, len) = match first.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (first, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("'{addr}' is not an IP address"))?;
        if !assignable(addr) {
            return Err(format!("{addr} cannot be a virtual address"));
        }
        let max = crate::addr::max_prefix(addr);
        let prefix_len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| (1..=max).contains(l))
                .ok_or_else(|| format!("'/{l}' is not a prefix length (1..={max})"))?,
        };
        let mut interface = default_interface.to_owned();
        match (words.next(), words.next(), words.next()) {
            (None, _, _) => {}
            (Some("dev"), Some(name), None) => {
                if !valid_interface(name) {
                    return Err(format!("'{name}' is not a valid interface name"));
                }
                name.clone_into(&mut interface);
            }
            (Some("dev"), None, _) => return Err("'dev' needs an interface name".into()),
            (Some("dev"), Some(_), Some(extra)) => return Err(format!("unexpected '{extra}': write ADDR[/LEN] [dev IFNAME]")),
            (Some(word), _, _) => return Err(format!("'{word}' is not supported: write ADDR[/LEN] [dev IFNAME]")),
        }
        Ok(Self { addr, prefix_len, interface })
    }
}

/// An address a host can hold as its own: no unspecified, broadcast,
/// multicast or loopback address, nor an IPv4-mapped IPv6 one.
fn assignable(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast() || a.is_loopback() || a.to_ipv4_mapped().is_some()),
    }
}

fn valid_interface(name: &str) -> bool {
    !name.is_empty() && name.len() < libc::IFNAMSIZ && !name.contains(['/', ' ', ':']) && !name.chars().any(char::is_control)
}

/// `[vrrp]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VrrpSection {
    interface: Option<Spanned<Value>>,
    vrid: Option<Spanned<Value>>,
    priority: Option<Spanned<Value>>,
    advert_interval: Option<Spanned<Value>>,
    preempt: Option<Spanned<Value>>,
    preempt_delay: Option<Spanned<Value>>,
    addresses: Option<Spanned<Value>>,
    family: Option<Spanned<Value>>,
    unicast_peers: Option<Spanned<Value>>,
    garp_count: Option<Spanned<Value>>,
    garp_delay: Option<Spanned<Value>>,
    notify_master: Option<Spanned<Value>>,
    notify_backup: Option<Spanned<Value>>,
    notify_fault: Option<Spanned<Value>>,
}

fn expected(at: &Locator<'_>, v: &Spanned<Value>, key: &str, what: &str) -> ConfigError {
    let found = v.get_ref();
    at.error(v.span().start, key, format!("expected {what}, found {} {found}", found.type_str()))
}

fn int(at: &Locator<'_>, v: &Spanned<Value>, key: &str, min: i64, max: i64) -> Result<i64, ConfigError> {
    let n = v.get_ref().as_integer().ok_or_else(|| expected(at, v, key, "an integer"))?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(at.error(v.span().start, key, format!("{n} is out of range {min}..={max}")))
    }
}

/// Seconds, an integer or a float, 0..=max, kept to the microsecond.
fn seconds(at: &Locator<'_>, v: &Spanned<Value>, key: &str, max: f64) -> Result<Duration, ConfigError> {
    let secs = match v.get_ref() {
        Value::Integer(n) => *n as f64,
        Value::Float(f) => *f,
        _ => return Err(expected(at, v, key, "seconds (an integer or a float)")),
    };
    // NaN fails both comparisons.
    if !(secs >= 0.0 && secs <= max) {
        return Err(at.error(v.span().start, key, format!("{} is out of range: write seconds, 0 to {max}", v.get_ref())));
    }
    // In range, so the conversion is exact.
    Ok(Duration::from_micros((secs * 1e6).round() as u64))
}

fn strings<'v>(at: &Locator<'_>, v: &'v Spanned<Value>, key: &str, what: &str) -> Result<Vec<&'v str>, ConfigError> {
    let Value::Array(items) = v.get_ref() else {
        return Err(expected(at, v, key, what));
    };
    items.iter().map(|i| i.as_str().ok_or_else(|| expected(at, v, key, what))).collect()
}

/// Validates `[vrrp]`. `span_start` is where the section stands (for a
/// missing key); `services` give the default addresses.
pub(super) fn parse(at: &Locator<'_>, s: &VrrpSection, span_start: usize, services: &[Service]) -> Result<VrrpConfig, ConfigError> {
    let interface = match &s.interface {
        None => return Err(at.error(span_start, "vrrp.interface", "missing: name the interface adverts go out of")),
        Some(v) => {
            let name = at.text(v, "vrrp.interface")?;
            if !valid_interface(name) {
                return Err(at.error(v.span().start, "vrrp.interface", format!("'{name}' is not a valid interface name")));
            }
            name.to_owned()
        }
    };
    let vrid = match &s.vrid {
        None => return Err(at.error(span_start, "vrrp.vrid", "missing: the virtual router id (1..=255), the same on every router of the group")),
        Some(v) => u8::try_from(int(at, v, "vrrp.vrid", 1, 255)?).unwrap_or(u8::MAX),
    };
    let mut c = VrrpConfig::new(&interface, vrid);
    if let Some(v) = &s.priority {
        c.priority = u8::try_from(int(at, v, "vrrp.priority", 1, 255)?).unwrap_or(u8::MAX);
    }
    if let Some(v) = &s.advert_interval {
        let ms = int(at, v, "vrrp.advert_interval", 10, MAX_ADVERT_INTERVAL_MS)?;
        if ms % 10 != 0 {
            return Err(at.error(v.span().start, "vrrp.advert_interval", format!("{ms} ms is not a multiple of 10 ms: adverts carry centiseconds")));
        }
        c.advert_interval = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    }
    if let Some(v) = &s.preempt {
        c.preempt = at.boolean(v, "vrrp.preempt")?;
    }
    if let Some(v) = &s.preempt_delay {
        c.preempt_delay = seconds(at, v, "vrrp.preempt_delay", MAX_PREEMPT_DELAY)?;
    }
    c.addresses = match &s.addresses {
        Some(v) => {
            let key = "vrrp.addresses";
            let mut list: Vec<VirtualIp> = Vec::new();
            for text in strings(at, v, key, "a list of \"ADDR[/LEN] [dev IFNAME]\"")? {
                let vip = VirtualIp::parse(text, &interface).map_err(|m| at.error(v.span().start, key, m))?;
                if list.iter().any(|o| o.addr == vip.addr) {
                    return Err(at.error(v.span().start, key, format!("{} is listed twice", vip.addr)));
                }
                list.push(vip);
            }
            if list.is_empty() {
                return Err(at.error(v.span().start, key, "list at least one address"));
            }
            if list.len() > MAX_ADDRESSES {
                return Err(at.error(v.span().start, key, format!("{} addresses: an advert holds at most {MAX_ADDRESSES}", list.len())));
            }
            list
        }
        None => {
            let mut list: Vec<VirtualIp> = Vec::new();
            for svc in services.iter().filter(|s| !s.vip.is_range()) {
                let addr = svc.vip.addr;
                if !list.iter().any(|o| o.addr == addr) {
                    list.push(VirtualIp { addr, prefix_len: crate::addr::max_prefix(addr), interface: interface.clone() });
                }
            }
            if list.is_empty() {
                return Err(at.error(span_start, "vrrp.addresses", "no address to hold: list them, or define a virtual service with a single address"));
            }
            if list.len() > MAX_ADDRESSES {
                return Err(at.error(span_start, "vrrp.addresses", format!("the services have {} VIPs: an advert holds at most {MAX_ADDRESSES}; list the addresses", list.len())));
            }
            list
        }
    };
    // The first address decides, as in keepalived; `family` says it
    // outright (keepalived's `native_ipv6`), which matters when the
    // addresses come from the services, in file order.
    let Some(first) = c.addresses.first().map(|v| v.addr) else {
        // Both ways of filling the list above refuse an empty one.
        return Err(at.error(span_start, "vrrp.addresses", "list at least one address"));
    };
    c.family = match &s.family {
        None => Family::of(first),
        Some(v) => match at.text(v, "vrrp.family")? {
            "ipv4" => Family::Ipv4,
            "ipv6" => Family::Ipv6,
            other => return Err(at.error(v.span().start, "vrrp.family", format!("'{other}' is not a family: write \"ipv4\" or \"ipv6\""))),
        },
    };
    if c.advertised().next().is_none() {
        let offset = s.family.as_ref().or(s.addresses.as_ref()).map_or(span_start, |v| v.span().start);
        return Err(at.error(
            offset,
            "vrrp.family",
            format!("the instance is {} but none of its addresses is: an advert lists at least one address of its family", c.family),
        ));
    }
    if let Some(v) = &s.unicast_peers {
        let key = "vrrp.unicast_peers";
        for text in strings(at, v, key, "a list of IP addresses")? {
            let peer: IpAddr = text.parse().map_err(|_| at.error(v.span().start, key, format!("'{text}' is not an IP address")))?;
            if !assignable(peer) {
                return Err(at.error(v.span().start, key, format!("{peer} cannot be a peer")));
            }
            if Family::of(peer) != c.family {
                let why = if s.family.is_some() { "vrrp.family".to_owned() } else { format!("its first address, {first}") };
                return Err(at.error(
                    v.span().start,
                    key,
                    format!("{peer} is {}, and the instance is {} (from {why}): adverts and their peers are of one family", Family::of(peer), c.family),
                ));
            }
            if c.unicast_peers.contains(&peer) {
                return Err(at.error(v.span().start, key, format!("{peer} is listed twice")));
            }
            c.unicast_peers.push(peer);
        }
    }
    if let Some(v) = &s.garp_count {
        c.garp_count = u32::try_from(int(at, v, "vrrp.garp_count", 0, MAX_GARP_COUNT)?).unwrap_or(0);
    }
    if let Some(v) = &s.garp_delay {
        c.garp_delay = seconds(at, v, "vrrp.garp_delay", MAX_GARP_DELAY)?;
    }
    for (key, value, slot) in [
        ("vrrp.notify_master", &s.notify_master, &mut c.notify_master),
        ("vrrp.notify_backup", &s.notify_backup, &mut c.notify_backup),
        ("vrrp.notify_fault", &s.notify_fault, &mut c.notify_fault),
    ] {
        if let Some(v) = value {
            *slot = Some(at.text(v, key)?.to_owned());
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::super::parse as parse_config;
    use super::*;

    const HEAD: &str = "[director]\ninterfaces = [\"eth0\"]\n\n[[virtual]]\naddress = \"10.1.0.100:80\"\n[[virtual]]\naddress = \"10.1.0.100:443\"\n[[virtual]]\naddress = \"10.1.0.101:53\"\nprotocol = \"udp\"\n[[virtual]]\naddress = \"10.50.0.0/16:80\"\n";

    fn vrrp(body: &str) -> Result<VrrpConfig, ConfigError> {
        parse_config("t.toml", &format!("{HEAD}\n[vrrp]\n{body}")).map(|c| c.vrrp.expect("a [vrrp] section"))
    }

    fn vip(addr: [u8; 4], prefix_len: u8, interface: &str) -> VirtualIp {
        VirtualIp { addr: Ipv4Addr::from(addr).into(), prefix_len, interface: interface.into() }
    }

    #[test]
    fn defaults() {
        let c = vrrp("interface = \"eth1\"\nvrid = 51\n").unwrap();
        let mut expected = VrrpConfig::new("eth1", 51);
        // Each single-address service's VIP once, as /32 on the interface;
        // ranges are not held.
        expected.addresses = vec![vip([10, 1, 0, 100], 32, "eth1"), vip([10, 1, 0, 101], 32, "eth1")];
        assert_eq!(c, expected);
        assert_eq!((c.priority, c.preempt, c.garp_count), (100, true, 5));
        assert_eq!((c.advert_interval, c.preempt_delay, c.garp_delay), (Duration::from_secs(1), Duration::ZERO, Duration::from_secs(5)));
        assert_eq!(c.advert_interval_cs(), 100);
        // Without a [vrrp] section there is no instance.
        assert_eq!(parse_config("t.toml", HEAD).unwrap().vrrp, None);
    }

    #[test]
    fn every_key() {
        let c = vrrp(concat!(
            "interface = \"eth1\"\nvrid = 255\npriority = 255\nadvert_interval = 40950\npreempt = false\npreempt_delay = 2.5\n",
            "addresses = [\"192.168.0.10\", \"192.168.0.11/24\", \"  192.168.1.12/32   dev  eth2 \"]\n",
            "unicast_peers = [\"192.168.0.2\", \"192.168.0.3\"]\ngarp_count = 0\ngarp_delay = 0\n",
            "notify_master = \"/bin/echo master\"\nnotify_backup = \"b\"\nnotify_fault = \"f\"\n",
        ))
        .unwrap();
        assert_eq!((c.vrid, c.priority, c.preempt), (255, 255, false));
        assert_eq!((c.advert_interval, c.advert_interval_cs()), (Duration::from_millis(40_950), 4095));
        assert_eq!(c.preempt_delay, Duration::from_millis(2500));
        assert_eq!(
            c.addresses,
            [vip([192, 168, 0, 10], 32, "eth1"), vip([192, 168, 0, 11], 24, "eth1"), vip([192, 168, 1, 12], 32, "eth2")]
        );
        assert_eq!(c.unicast_peers, [IpAddr::from([192, 168, 0, 2]), IpAddr::from([192, 168, 0, 3])]);
        assert_eq!(c.family, Family::Ipv4);
        assert_eq!((c.garp_count, c.garp_delay), (0, Duration::ZERO));
        assert_eq!(c.notify_master.as_deref(), Some("/bin/echo master"));
        assert_eq!((c.notify_backup.as_deref(), c.notify_fault.as_deref()), (Some("b"), Some("f")));
        assert_eq!(vrrp("interface = \"e\"\nvrid = 1\nadvert_interval = 10\n").unwrap().advert_interval_cs(), 1);
    }

    #[test]
    fn virtual_ip_syntax() {
        assert_eq!(VirtualIp::parse("10.0.0.1", "eth0").unwrap(), vip([10, 0, 0, 1], 32, "eth0"));
        assert_eq!(VirtualIp::parse("10.0.0.1/8 dev lo0", "eth0").unwrap(), vip([10, 0, 0, 1], 8, "lo0"));
        assert_eq!(vip([10, 0, 0, 1], 8, "lo0").to_string(), "10.0.0.1/8 dev lo0");
        for (text, message) in [
            ("", "must not be empty"),
            ("10.0.0.256", "'10.0.0.256' is not an IP address"),
            ("2001:db8::1/129", "'/129' is not a prefix length (1..=128)"),
            ("2001:db8::1/0", "not a prefix length (1..=128)"),
            ("ff02::12", "ff02::12 cannot be a virtual address"),
            ("::1", "::1 cannot be a virtual address"),
            ("::", ":: cannot be a virtual address"),
            ("::ffff:10.0.0.1", "cannot be a virtual address"),
            ("[2001:db8::1]", "'[2001:db8::1]' is not an IP address"),
            ("10.0.0.1/0", "'/0' is not a prefix length (1..=32)"),
            ("10.0.0.1/33", "not a prefix length"),
            ("10.0.0.1/", "not a prefix length"),
            ("224.0.0.18", "224.0.0.18 cannot be a virtual address"),
            ("127.0.0.2", "cannot be a virtual address"),
            ("0.0.0.0", "cannot be a virtual address"),
            ("10.0.0.1 dev", "'dev' needs an interface name"),
            ("10.0.0.1 dev a/b", "'a/b' is not a valid interface name"),
            ("10.0.0.1 dev eth0 label eth0:1", "unexpected 'label'"),
            ("10.0.0.1 label eth0:1", "'label' is not supported: write ADDR[/LEN] [dev IFNAME]"),
        ] {
            let e = VirtualIp::parse(text, "eth0").unwrap_err();
            assert!(e.contains(message), "{text:?}: {e}");
        }
    }

    #[test]
    fn errors_name_file_line_and_key() {
        // The section starts on line 14; its first key is on line 15.
        let cases: &[(&str, usize, &str, &str)] = &[
            ("vrid = 1\n", 14, "vrrp.interface", "missing: name the interface"),
            ("interface = \"eth0\"\n", 14, "vrrp.vrid", "missing: the virtual router id"),
            ("interface = \"\"\nvrid = 1\n", 15, "vrrp.interface", "must not be empty"),
            ("interface = \"a-name-that-is-far-too-long\"\nvrid = 1\n", 15, "vrrp.interface", "not a valid interface name"),
            ("interface = 3\nvrid = 1\n", 15, "vrrp.interface", "expected a string, found integer 3"),
            ("interface = \"e\"\nvrid = 0\n", 16, "vrrp.vrid", "0 is out of range 1..=255"),
            ("interface = \"e\"\nvrid = 256\n", 16, "vrrp.vrid", "256 is out of range 1..=255"),
            ("interface = \"e\"\nvrid = \"51\"\n", 16, "vrrp.vrid", "expected an integer, found string"),
            ("interface = \"e\"\nvrid = 1\npriority = 0\n", 17, "vrrp.priority", "0 is out of range 1..=255"),
            ("interface = \"e\"\nvrid = 1\npriority = 256\n", 17, "vrrp.priority", "out of range"),
            ("interface = \"e\"\nvrid = 1\nadvert_interval = 1005\n", 17, "vrrp.advert_interval", "1005 ms is not a multiple of 10 ms"),
            ("interface = \"e\"\nvrid = 1\nadvert_interval = 0\n", 17, "vrrp.advert_interval", "0 is out of range 10..=40950"),
            ("interface = \"e\"\nvrid = 1\nadvert_interval = 40960\n", 17, "vrrp.advert_interval", "out of range 10..=40950"),
            ("interface = \"e\"\nvrid = 1\nadvert_interval = 1.5\n", 17, "vrrp.advert_interval", "expected an integer, found float"),
            ("interface = \"e\"\nvrid = 1\npreempt = \"no\"\n", 17, "vrrp.preempt", "expected true or false"),
            ("interface = \"e\"\nvrid = 1\npreempt_delay = -1\n", 17, "vrrp.preempt_delay", "-1 is out of range: write seconds, 0 to 1000"),
            ("interface = \"e\"\nvrid = 1\npreempt_delay = 1001\n", 17, "vrrp.preempt_delay", "out of range"),
            ("interface = \"e\"\nvrid = 1\npreempt_delay = nan\n", 17, "vrrp.preempt_delay", "out of range"),
            ("interface = \"e\"\nvrid = 1\npreempt_delay = \"5s\"\n", 17, "vrrp.preempt_delay", "expected seconds"),
            ("interface = \"e\"\nvrid = 1\naddresses = []\n", 17, "vrrp.addresses", "list at least one address"),
            ("interface = \"e\"\nvrid = 1\naddresses = \"10.0.0.1\"\n", 17, "vrrp.addresses", "expected a list of \"ADDR[/LEN] [dev IFNAME]\", found string"),
            ("interface = \"e\"\nvrid = 1\naddresses = [1]\n", 17, "vrrp.addresses", "expected a list"),
            ("interface = \"e\"\nvrid = 1\naddresses = [\"10.0.0.1\", \"10.0.0.1/24 dev x\"]\n", 17, "vrrp.addresses", "10.0.0.1 is listed twice"),
            ("interface = \"e\"\nvrid = 1\naddresses = [\"10.0.0.1 brd 10.0.0.255\"]\n", 17, "vrrp.addresses", "'brd' is not supported"),
            ("interface = \"e\"\nvrid = 1\nunicast_peers = [\"10.0.0.x\"]\n", 17, "vrrp.unicast_peers", "'10.0.0.x' is not an IP address"),
            ("interface = \"e\"\nvrid = 1\nunicast_peers = [\"224.0.0.18\"]\n", 17, "vrrp.unicast_peers", "224.0.0.18 cannot be a peer"),
            ("interface = \"e\"\nvrid = 1\nunicast_peers = [\"10.0.0.2\", \"10.0.0.2\"]\n", 17, "vrrp.unicast_peers", "10.0.0.2 is listed twice"),
            ("interface = \"e\"\nvrid = 1\nunicast_peers = \"10.0.0.2\"\n", 17, "vrrp.unicast_peers", "expected a list of IP addresses"),
            ("interface = \"e\"\nvrid = 1\ngarp_count = -1\n", 17, "vrrp.garp_count", "-1 is out of range 0..=100"),
            ("interface = \"e\"\nvrid = 1\ngarp_delay = 3601\n", 17, "vrrp.garp_delay", "out of range: write seconds, 0 to 3600"),
            ("interface = \"e\"\nvrid = 1\nnotify_master = \"\"\n", 17, "vrrp.notify_master", "must not be empty"),
            ("interface = \"e\"\nvrid = 1\nnotify_fault = 1\n", 17, "vrrp.notify_fault", "expected a string"),
            ("interface = \"e\"\nvrid = 1\nnotify = \"x\"\n", 17, "toml", "unknown field `notify`"),
            ("interface = \"e\"\nvrid = 1\nfamily = \"inet6\"\n", 17, "vrrp.family", "'inet6' is not a family: write \"ipv4\" or \"ipv6\""),
            ("interface = \"e\"\nvrid = 1\nfamily = 6\n", 17, "vrrp.family", "expected a string"),
            ("interface = \"e\"\nvrid = 1\nfamily = \"ipv6\"\n", 17, "vrrp.family", "the instance is IPv6 but none of its addresses is"),
            ("interface = \"e\"\nvrid = 1\nunicast_peers = [\"fe80::2\"]\n", 17, "vrrp.unicast_peers", "fe80::2 is IPv6, and the instance is IPv4 (from its first address, 10.1.0.100)"),
            ("interface = \"e\"\nvrid = 1\nunicast_peers = [\"ff02::12\"]\n", 17, "vrrp.unicast_peers", "ff02::12 cannot be a peer"),
        ];
        for (body, line, key, message) in cases {
            let e = vrrp(body).expect_err(body);
            assert_eq!((e.line, e.key.as_str()), (*line, *key), "{body}: {e}");
            assert!(e.message.contains(message), "{body}: {e}");
            assert!(e.to_string().starts_with(&format!("t.toml:{line}: {key}: ")), "{e}");
        }
    }

    #[test]
    fn without_services_the_addresses_must_be_listed() {
        let text = "[director]\ninterfaces = [\"eth0\"]\n[[virtual]]\naddress = \"10.50.0.0/16:80\"\n[vrrp]\ninterface = \"eth0\"\nvrid = 1\n";
        let e = parse_config("t.toml", text).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (5, "vrrp.addresses"), "{e}");
        assert!(e.message.contains("no address to hold"), "{e}");
        let listed = format!("{text}addresses = [\"10.0.0.1\"]\n");
        assert_eq!(parse_config("t.toml", &listed).unwrap().vrrp.unwrap().addresses, [vip([10, 0, 0, 1], 32, "eth0")]);
    }

    #[test]
    fn at_most_255_addresses() {
        let many: Vec<String> = (0..256).map(|i| format!("\"10.2.{}.{}\"", i / 200, i % 200 + 1)).collect();
        let e = vrrp(&format!("interface = \"e\"\nvrid = 1\naddresses = [{}]\n", many.join(", "))).unwrap_err();
        assert!(e.message.contains("256 addresses: an advert holds at most 255"), "{e}");
    }

    fn vip6(addr: &str, prefix_len: u8, interface: &str) -> VirtualIp {
        VirtualIp { addr: addr.parse().unwrap(), prefix_len, interface: interface.into() }
    }

    #[test]
    fn an_ipv6_instance_from_its_first_address() {
        let c = vrrp(concat!(
            "interface = \"e\"\nvrid = 1\n",
            "addresses = [\"2001:db8::100/64\", \"fe80::100 dev e2\", \"10.0.0.1\"]\nunicast_peers = [\"fe80::2\", \"2001:db8::3\"]\n",
        ))
        .unwrap();
        assert_eq!(c.family, Family::Ipv6);
        assert_eq!(c.addresses, [vip6("2001:db8::100", 64, "e"), vip6("fe80::100", 128, "e2"), vip([10, 0, 0, 1], 32, "e")]);
        // The IPv4 address is moved with the role, not advertised.
        assert_eq!(c.advertised().cloned().collect::<Vec<_>>(), c.addresses[..2]);
        assert_eq!(c.excluded().cloned().collect::<Vec<_>>(), c.addresses[2..]);
        assert_eq!(c.unicast_peers, ["fe80::2".parse::<IpAddr>().unwrap(), "2001:db8::3".parse().unwrap()]);
        assert_eq!(vip6("2001:db8::100", 64, "e").to_string(), "2001:db8::100/64 dev e");
        // The other way round: IPv4 first, the IPv6 address excluded.
        let c = vrrp("interface = \"e\"\nvrid = 1\naddresses = [\"10.0.0.1\", \"2001:db8::1\"]\n").unwrap();
        assert_eq!(c.family, Family::Ipv4);
        assert_eq!(c.excluded().map(|v| v.addr).collect::<Vec<_>>(), ["2001:db8::1".parse::<IpAddr>().unwrap()]);
        // `family` overrides the first address.
        let c = vrrp("interface = \"e\"\nvrid = 1\nfamily = \"ipv6\"\naddresses = [\"10.0.0.1\", \"2001:db8::1\"]\n").unwrap();
        assert_eq!(c.family, Family::Ipv6);
        assert_eq!(c.excluded().map(|v| v.addr).collect::<Vec<_>>(), [IpAddr::from([10, 0, 0, 1])]);
    }

    #[test]
    fn ipv6_services_are_held_too() {
        // Every single-address service's VIP, of both families, the
        // instance of the first one's; /128 for an IPv6 VIP.
        let text = "[director]\ninterfaces = [\"eth0\"]\n[[virtual]]\naddress = \"[2001:db8::100]:80\"\n[[virtual]]\naddress = \"10.0.0.1:80\"\n[[virtual]]\naddress = \"[2001:db8::100]:443\"\n[vrrp]\ninterface = \"eth0\"\nvrid = 1\n";
        let c = parse_config("t.toml", text).unwrap().vrrp.unwrap();
        assert_eq!(c.family, Family::Ipv6);
        assert_eq!(c.addresses, [vip6("2001:db8::100", 128, "eth0"), vip([10, 0, 0, 1], 32, "eth0")]);
        assert_eq!(c.excluded().count(), 1);
        let ipv4 = parse_config("t.toml", &format!("{text}family = \"ipv4\"\n")).unwrap().vrrp.unwrap();
        assert_eq!((ipv4.family, ipv4.advertised().count()), (Family::Ipv4, 1));
        // An IPv6 peer of an instance made IPv4 by `family` names the key.
        let e = parse_config("t.toml", &format!("{text}family = \"ipv4\"\nunicast_peers = [\"fe80::1\"]\n")).unwrap_err();
        assert_eq!(e.key, "vrrp.unicast_peers");
        assert!(e.message.contains("fe80::1 is IPv6, and the instance is IPv4 (from vrrp.family)"), "{e}");
    }
}
