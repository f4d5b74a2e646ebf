//! `xlvs import-ldirectord`: an ldirectord.cf turned into an xlvs
//! configuration.
//!
//! What has a counterpart is carried with ldirectord's defaults made
//! explicit (wrr, negotiate checks, the timeouts); what has none is listed
//! as a note naming its line, so that nothing is dropped silently. A value
//! xlvs cannot take (an fwmark service, a host name, an unknown method) is
//! an error naming its line.
//!
//! IPv6 comes in ldirectord's own directives, `virtual6=`, `real6=` and
//! `fallback6=`, with bracketed addresses (`[2001:db8::1]:80`); an IPv6
//! virtual's `netmask` is a prefix length, as ipvsadm's `-M`.

use std::{net::{IpAddr, Ipv4Addr, Ipv6Addr}, str::FromStr as _, time::Duration};

use lb_common::{
    DEFAULT_CACHE_SIZE, DEFAULT_CONN_TABLE_SIZE, DEFAULT_FRAG_TABLE_SIZE,
    sched::{Scheduler, lblc::LBLC_DEFAULT_EXPIRATION_SECS},
};

use crate::{
    addr::{self, Endpoint},
    config::{
        self, Check, CheckKind, Config, DEFAULT_HTTP_STATUS, Forward, Health, HttpCheck, HttpMethod, Persistence,
        Protocol, Real, Service, VirtualAddr, health::{DEFAULT_DNS_NAME, DEFAULT_DNS_TYPE, DEFAULT_HELO},
    },
    timeouts::{MAX_TIMEOUT, Timeouts},
};

/// The interface written when none is given: ldirectord has no such
/// setting, and the config needs one.
pub const PLACEHOLDER_INTERFACE: &str = "eth0";

// ldirectord's defaults.
const CHECKINTERVAL: u32 = 10;
const CHECKTIMEOUT: u32 = 5;
const NEGOTIATETIMEOUT: u32 = 30;
const FAILURECOUNT: u32 = 1;
const SCHEDULER: Scheduler = Scheduler::Wrr;

/// The family of a directive: `virtual`, `real` and `fallback` are IPv4's,
/// their `6` forms IPv6's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    const fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }

    /// A directive's name in this family: `real`, `real6`.
    fn directive(self, base: &str) -> String {
        match self {
            Self::V4 => base.to_owned(),
            Self::V6 => format!("{base}6"),
        }
    }

    /// How an address is written, for messages.
    const fn placeholder(self) -> &'static str {
        match self {
            Self::V4 => "IP",
            Self::V6 => "[IP6]",
        }
    }
}

/// A converted configuration, and what could not be carried.
#[derive(Clone, Debug)]
pub struct Imported {
    /// Valid: [`config::parse`] accepts its [`Imported::toml`].
    pub config: Config,
    /// One line per directive dropped or changed, as
    /// `ldirectord.cf:7: emailalert: not supported, dropped`.
    pub notes: Vec<String>,
}

impl Imported {
    /// The configuration as xlvs's normalized TOML.
    #[must_use]
    pub fn toml(&self) -> String {
        config::render(&self.config)
    }
}

/// A directive xlvs cannot take, with its line (0 when the problem is not
/// one line's).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {directive}: {message}", location(.file, *.line))]
pub struct ImportError {
    pub file: String,
    pub line: usize,
    pub directive: String,
    pub message: String,
}

fn location(file: &str, line: usize) -> String {
    if line == 0 { file.to_owned() } else { format!("{file}:{line}") }
}

/// Converts ldirectord.cf text; `file` names it in notes and errors. The
/// director's interface is [`PLACEHOLDER_INTERFACE`], with a note.
///
/// # Errors
/// An [`ImportError`] for the first directive xlvs cannot take.
pub fn import(file: &str, text: &str) -> Result<Imported, ImportError> {
    import_with(file, text, &[])
}

/// [`import`], attaching to `interfaces` (the placeholder when empty).
///
/// # Errors
/// An [`ImportError`] for the first directive xlvs cannot take, or for a
/// bad interface name.
pub fn import_with(file: &str, text: &str, interfaces: &[String]) -> Result<Imported, ImportError> {
    let mut cx = Cx { file, notes: Vec::new() };
    let mut globals = Common::default();
    let mut autoreload = false;
    let mut virtuals: Vec<Virtual> = Vec::new();
    // Whether indented lines still belong to the last virtual: a global
    // directive ends its section.
    let mut in_virtual = false;

    for d in directives(text) {
        if !d.indented {
            in_virtual = false;
            match d.key {
                "virtual" | "virtual6" => {
                    let family = if d.key == "virtual" { Family::V4 } else { Family::V6 };
                    virtuals.push(Virtual::new(&cx, &d, family)?);
                    in_virtual = true;
                }
                _ => global(&mut cx, &d, &mut globals, &mut autoreload)?,
            }
        } else if in_virtual {
            let v = virtuals.last_mut().expect("in_virtual follows a virtual");
            v.directive(&mut cx, &d)?;
        } else {
            return Err(cx.error(&d, "indented, but no virtual= section is open"));
        }
    }

    let mut services: Vec<Service> = Vec::new();
    for v in &virtuals {
        let service = v.service(&mut cx, &globals)?;
        if services.iter().any(|s| (s.protocol, s.vip) == (service.protocol, service.vip)) {
            return Err(ImportError {
                file: file.to_owned(),
                line: v.line,
                directive: "virtual".into(),
                message: format!("{} {} is defined twice", service.protocol, service.vip),
            });
        }
        services.push(service);
    }

    let interfaces = if interfaces.is_empty() {
        cx.notes.push((usize::MAX, format!(
            "{file}: interfaces: ldirectord names none; set director.interfaces to the interfaces XDP attaches to \
             ('{PLACEHOLDER_INTERFACE}' is a placeholder), or pass --interface"
        )));
        vec![PLACEHOLDER_INTERFACE.to_owned()]
    } else {
        interfaces.to_vec()
    };
    let config = Config {
        interfaces,
        conn_table_size: DEFAULT_CONN_TABLE_SIZE,
        cache_size: DEFAULT_CACHE_SIZE,
        frag_table_size: DEFAULT_FRAG_TABLE_SIZE,
        timeouts: Timeouts::default(),
        autoreload,
        metrics: None,
        services,
        vrrp: None,
        sync: None,
    };
    // The whole result goes through the parser, which also checks what no
    // single line decides (interface names, the limits on reals).
    config::parse(file, &config::render(&config)).map_err(|e| ImportError {
        file: file.to_owned(),
        line: 0,
        directive: e.key,
        message: e.message,
    })?;
    // In file order, whichever pass found them.
    cx.notes.sort_by_key(|(line, _)| *line);
    Ok(Imported { config, notes: cx.notes.into_iter().map(|(_, note)| note).collect() })
}

struct Cx<'a> {
    file: &'a str,
    /// Each with its line, to be sorted.
    notes: Vec<(usize, String)>,
}

impl Cx<'_> {
    fn note(&mut self, line: usize, directive: &str, message: impl AsRef<str>) {
        self.notes.push((line, format!("{}:{line}: {directive}: {}", self.file, message.as_ref())));
    }

    fn error(&self, d: &Directive<'_>, message: impl Into<String>) -> ImportError {
        self.error_at(d.line, d.key, message)
    }

    fn error_at(&self, line: usize, directive: &str, message: impl Into<String>) -> ImportError {
        ImportError { file: self.file.to_owned(), line, directive: directive.to_owned(), message: message.into() }
    }
}

/// One `key=value` line.
struct Directive<'a> {
    line: usize,
    indented: bool,
    key: &'a str,
    /// The value, without one pair of enclosing double quotes.
    value: &'a str,
}

/// The directives of a file: comments and blank lines dropped. Unlike
/// ldirectord, a blank line does not end a virtual section, and `#` inside
/// double quotes is kept.
fn directives(text: &str) -> impl Iterator<Item = Directive<'_>> {
    text.lines().enumerate().filter_map(|(i, raw)| {
        let body = strip_comment(raw).trim_end();
        let trimmed = body.trim_start();
        if trimmed.is_empty() {
            return None;
        }
        let (key, value) = match trimmed.split_once('=') {
            Some((k, v)) => (k.trim(), unquote(v.trim())),
            None => (trimmed, ""),
        };
        Some(Directive { line: i + 1, indented: trimmed.len() != body.len(), key, value })
    })
}

fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(s)
}

/// Directives that may stand globally or in a virtual section, the virtual
/// overriding the global.
#[derive(Clone, Default)]
struct Common {
    checktimeout: Option<u32>,
    negotiatetimeout: Option<u32>,
    checkinterval: Option<u32>,
    failurecount: Option<u32>,
    quiescent: Option<bool>,
    /// `fallback`, for IPv4 virtuals.
    fallback: Option<Fallback>,
    /// `fallback6`, for IPv6 virtuals.
    fallback6: Option<Fallback>,
    fallbackcommand: Option<(usize, String)>,
}

#[derive(Clone)]
struct Fallback {
    line: usize,
    addr: IpAddr,
    port: Option<u16>,
    forward: Forward,
}

impl Common {
    /// Takes `d` if it is one of these directives, or one that either level
    /// may hold and xlvs does not carry. Returns whether it was taken.
    fn directive(&mut self, cx: &mut Cx<'_>, d: &Directive<'_>) -> Result<bool, ImportError> {
        match d.key {
            "checktimeout" => self.checktimeout = Some(seconds(cx, d)?),
            "negotiatetimeout" => self.negotiatetimeout = Some(seconds(cx, d)?),
            "checkinterval" => self.checkinterval = Some(seconds(cx, d)?),
            "failurecount" => self.failurecount = Some(positive(cx, d, "a count")?),
            "quiescent" => self.quiescent = Some(yes_no(cx, d)?),
            "fallback" => self.fallback = Some(fallback(cx, d, Family::V4)?),
            "fallback6" => self.fallback6 = Some(fallback(cx, d, Family::V6)?),
            "fallbackcommand" => {
                if d.value.is_empty() {
                    return Err(cx.error(d, "name a command"));
                }
                self.fallbackcommand = Some((d.line, d.value.to_owned()));
            }
            "checkcount" => cx.note(d.line, d.key, "not supported (deprecated in ldirectord for failurecount), dropped"),
            "connecttimeout" => cx.note(d.line, d.key, "deprecated in ldirectord for negotiatetimeout, dropped"),
            "emailalert" | "emailalertfreq" | "emailalertstatus" | "smtp" => {
                cx.note(d.line, d.key, "not supported (xlvs sends no mail; notify_down can run a command), dropped");
            }
            "cleanstop" => cx.note(d.line, d.key, "not supported (xlvs always removes its programs when it stops), dropped"),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// `self` (a virtual's) over `global`.
    fn over(&self, global: &Self) -> Self {
        Self {
            checktimeout: self.checktimeout.or(global.checktimeout),
            negotiatetimeout: self.negotiatetimeout.or(global.negotiatetimeout),
            checkinterval: self.checkinterval.or(global.checkinterval),
            failurecount: self.failurecount.or(global.failurecount),
            quiescent: self.quiescent.or(global.quiescent),
            fallback: self.fallback.clone().or_else(|| global.fallback.clone()),
            fallback6: self.fallback6.clone().or_else(|| global.fallback6.clone()),
            fallbackcommand: self.fallbackcommand.clone().or_else(|| global.fallbackcommand.clone()),
        }
    }
}

fn global(cx: &mut Cx<'_>, d: &Directive<'_>, globals: &mut Common, autoreload: &mut bool) -> Result<(), ImportError> {
    if globals.directive(cx, d)? {
        return Ok(());
    }
    match d.key {
        "autoreload" => *autoreload = yes_no(cx, d)?,
        "logfile" => cx.note(d.line, d.key, "not carried: xlvs logs to stderr (the journal under systemd) through tracing; RUST_LOG sets the level"),
        "callback" | "execute" => cx.note(d.line, d.key, "not supported, dropped"),
        "fork" => cx.note(d.line, d.key, "not needed: xlvs checks every real concurrently, dropped"),
        "supervised" => cx.note(d.line, d.key, "not needed: xlvs runs in the foreground, dropped"),
        "readdquiescent" => cx.note(d.line, d.key, "not supported: a quiescent real always keeps its place, dropped"),
        "maintenancedir" => cx.note(d.line, d.key, "not supported (set a real's weight to 0 instead), dropped"),
        _ => cx.note(d.line, d.key, "unknown directive, dropped"),
    }
    Ok(())
}

/// `checktype`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CheckType {
    Negotiate,
    Connect,
    External,
    ExternalPerl,
    Ping,
    Off,
    On,
    /// N connects, then a negotiate.
    Combined(u32),
}

struct RealLine {
    line: usize,
    addrs: Vec<IpAddr>,
    port: Option<u16>,
    forward: Forward,
    weight: u32,
    /// The per-real `"request", "receive"` pair.
    request: Option<(String, String)>,
}

/// A value with the line it came from.
type At<T> = Option<(usize, T)>;

struct Virtual {
    line: usize,
    family: Family,
    vip: IpAddr,
    port: u16,
    common: Common,
    reals: Vec<RealLine>,
    service: At<String>,
    checktype: At<CheckType>,
    checkcommand: At<String>,
    checkport: Option<u16>,
    request: At<String>,
    receive: At<String>,
    virtualhost: At<String>,
    httpmethod: At<HttpMethod>,
    scheduler: Option<Scheduler>,
    protocol: Option<Protocol>,
    persistent: At<u32>,
    /// The persistence prefix length.
    netmask: At<u8>,
}

impl Virtual {
    fn new(cx: &Cx<'_>, d: &Directive<'_>, family: Family) -> Result<Self, ImportError> {
        let v = d.value;
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(cx.error(d, format!("{v} is a firewall mark: fwmark services are not supported (a range service, address = \"NETWORK/LEN:PORT\", may do)")));
        }
        let (host, Some(port)) = split_port(v, family) else {
            return Err(cx.error(d, format!("'{v}' needs a port: write {}={}:PORT", d.key, family.placeholder())));
        };
        let vip = address(cx, d, host, family)?;
        let port = port_number(cx, d, port)?;
        Ok(Self {
            line: d.line,
            family,
            vip,
            port,
            common: Common::default(),
            reals: Vec::new(),
            service: None,
            checktype: None,
            checkcommand: None,
            checkport: None,
            request: None,
            receive: None,
            virtualhost: None,
            httpmethod: None,
            scheduler: None,
            protocol: None,
            persistent: None,
            netmask: None,
        })
    }

    fn directive(&mut self, cx: &mut Cx<'_>, d: &Directive<'_>) -> Result<(), ImportError> {
        if self.common.directive(cx, d)? {
            return Ok(());
        }
        let here = |s: &str| Some((d.line, s.to_owned()));
        match d.key {
            "real" | "real6" => {
                let family = if d.key == "real" { Family::V4 } else { Family::V6 };
                if family != self.family {
                    return Err(cx.error(d, format!(
                        "an {} real in an {} virtual: a real is of its virtual's family (write {})",
                        family.name(),
                        self.family.name(),
                        self.family.directive("real"),
                    )));
                }
                self.reals.push(real(cx, d, family)?);
            }
            "service" => {
                const SERVICES: [&str; 20] = [
                    "dns", "ftp", "http", "https", "http_proxy", "imap", "imaps", "ldap", "nntp", "mysql", "none", "oracle",
                    "pop", "pops", "radius", "pgsql", "sip", "smtp", "submission", "simpletcp",
                ];
                if !SERVICES.contains(&d.value) {
                    return Err(cx.error(d, format!("'{}' is not a service of ldirectord: use one of {}", d.value, SERVICES.join(", "))));
                }
                self.service = here(d.value);
            }
            "checktype" => {
                let t = match d.value {
                    "negotiate" => CheckType::Negotiate,
                    "connect" => CheckType::Connect,
                    "external" => CheckType::External,
                    "external-perl" => CheckType::ExternalPerl,
                    "ping" => CheckType::Ping,
                    "off" => CheckType::Off,
                    "on" => CheckType::On,
                    n => CheckType::Combined(n.parse().map_err(|_| {
                        cx.error(d, format!("'{n}' is not a check type: use negotiate, connect, external, external-perl, ping, off, on or a number"))
                    })?),
                };
                self.checktype = Some((d.line, t));
            }
            "checkcommand" => {
                if d.value.is_empty() {
                    return Err(cx.error(d, "name a command"));
                }
                self.checkcommand = here(d.value);
            }
            "checkport" => self.checkport = Some(port_number(cx, d, d.value)?),
            "request" => {
                if d.value.is_empty() {
                    return Err(cx.error(d, "no request string"));
                }
                self.request = here(d.value);
            }
            "receive" => {
                if d.value.is_empty() {
                    return Err(cx.error(d, "no receive string"));
                }
                self.receive = here(d.value);
            }
            "virtualhost" => self.virtualhost = here(d.value).filter(|(_, h)| !h.is_empty()),
            "httpmethod" => {
                let method = match d.value.to_ascii_uppercase().as_str() {
                    "GET" => HttpMethod::Get,
                    "HEAD" => HttpMethod::Head,
                    _ => return Err(cx.error(d, format!("'{}' is not a method: use GET or HEAD", d.value))),
                };
                self.httpmethod = Some((d.line, method));
            }
            "scheduler" => {
                let s = Scheduler::from_str(d.value).map_err(|_| {
                    let names: Vec<&str> = Scheduler::ALL.iter().map(|s| s.name()).collect();
                    cx.error(d, format!("'{}' is not a scheduler xlvs has: use one of {}", d.value, names.join(", ")))
                })?;
                self.scheduler = Some(s);
            }
            "protocol" => {
                self.protocol = Some(match d.value {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    "fwm" => return Err(cx.error(d, "fwmark services are not supported (a range service, address = \"NETWORK/LEN:PORT\", may do)")),
                    other => return Err(cx.error(d, format!("'{other}' is not a protocol: use tcp or udp"))),
                });
            }
            "persistent" => {
                let t = d.value.parse::<u32>().ok().filter(|t| *t <= MAX_TIMEOUT).ok_or_else(|| {
                    cx.error(d, format!("'{}' is not a persistence timeout: write seconds, 0..={MAX_TIMEOUT}", d.value))
                })?;
                self.persistent = Some((d.line, t));
            }
            "netmask" => {
                let prefix = match self.family {
                    Family::V4 => d.value.parse::<Ipv4Addr>().ok().and_then(|m| addr::mask_prefix(m.into())).ok_or_else(|| {
                        cx.error(d, format!("'{}' is not a netmask: write a contiguous one, like 255.255.255.0", d.value))
                    })?,
                    // ipvsadm's -M of an IPv6 service is a prefix length.
                    Family::V6 => d.value.parse::<u8>().ok().filter(|p| *p <= 128).ok_or_else(|| {
                        cx.error(d, format!("'{}' is not an IPv6 prefix length: write 0..=128, like 64", d.value))
                    })?,
                };
                self.netmask = Some((d.line, prefix));
            }
            "ops" => {
                if yes_no(cx, d)? {
                    cx.note(d.line, d.key, "one-packet scheduling is not supported, dropped");
                }
            }
            "login" | "passwd" | "database" | "secret" | "load" => {
                cx.note(d.line, d.key, "not supported: xlvs has no check that logs in, dropped");
            }
            "monitorfile" => cx.note(d.line, d.key, "not supported: check results go to the log, dropped"),
            _ => cx.note(d.line, d.key, "unknown directive, dropped"),
        }
        Ok(())
    }

    fn service(&self, cx: &mut Cx<'_>, globals: &Common) -> Result<Service, ImportError> {
        let c = self.common.over(globals);
        let vip = VirtualAddr::single(self.vip, self.port);
        // ldirectord's default protocol: udp for DNS's port, tcp otherwise.
        let protocol = self.protocol.unwrap_or(if self.port == 53 { Protocol::Udp } else { Protocol::Tcp });
        let scheduler = self.scheduler.unwrap_or(SCHEDULER);
        let persistence = match (self.persistent, self.netmask) {
            (Some((_, t)), mask) if t > 0 => {
                let prefix = mask.map_or(addr::max_prefix(self.vip), |(_, p)| p);
                Some(Persistence { timeout: t, netmask: addr::prefix_mask(self.vip, prefix) })
            }
            (_, Some((line, _))) => {
                cx.note(line, "netmask", "applies only to a persistent service (as in ldirectord), dropped");
                None
            }
            _ => None,
        };

        let check = self.check(cx, &c, protocol)?;
        let mut reals: Vec<Real> = Vec::new();
        for r in &self.reals {
            let mut port = r.port.unwrap_or(self.port);
            if r.forward != Forward::Nat && port != self.port {
                cx.note(r.line, "real", format!("{} cannot map ports: the real gets the virtual port {} (as with ldirectord)", r.forward, self.port));
                port = self.port;
            }
            let rcheck = self.real_check(cx, r, &check)?;
            for &addr in &r.addrs {
                if reals.iter().any(|x| (x.addr, x.port) == (addr, port)) {
                    let key = self.family.directive("real");
                    return Err(cx.error_at(r.line, &key, format!("{} is listed twice in this virtual", Endpoint(addr, port))));
                }
                reals.push(Real { addr, port, weight: r.weight, forward: r.forward, u_threshold: 0, l_threshold: 0, check: rcheck.clone() });
            }
        }

        let mut health = Health { quiescent: c.quiescent.unwrap_or(true), ..Health::default() };
        // Each family's virtuals take that family's fallback; one of the
        // other family written in this virtual has nowhere to go.
        let (fallback, other) = match self.family {
            Family::V4 => (&c.fallback, &self.common.fallback6),
            Family::V6 => (&c.fallback6, &self.common.fallback),
        };
        if let Some(f) = other {
            let key = Family::of(f.addr).directive("fallback");
            cx.note(f.line, &key, format!("an {} fallback in the {} virtual {vip}, dropped", Family::of(f.addr).name(), self.family.name()));
        }
        if let Some(f) = fallback {
            let key = self.family.directive("fallback");
            let mut port = f.port.unwrap_or(self.port);
            if f.forward != Forward::Nat && port != self.port {
                cx.note(f.line, &key, format!("{} cannot map ports: the fallback gets the virtual port {}", f.forward, self.port));
                port = self.port;
            }
            if reals.iter().any(|r| (r.addr, r.port) == (f.addr, port)) {
                cx.note(f.line, &key, format!("{} is also a real of virtual {vip}, dropped there", Endpoint(f.addr, port)));
            } else {
                health.fallback = Some(Real { addr: f.addr, port, weight: 1, forward: f.forward, u_threshold: 0, l_threshold: 0, check: Check::default() });
            }
        }
        if let Some((line, command)) = &c.fallbackcommand {
            // ldirectord runs it with "start" once every real is down and
            // with "stop" when one is back: a quorum of 1 with hooks.
            if reals.iter().any(|r| r.weight > 0) {
                health.quorum = 1;
                health.quorum_down = Some(format!("{command} start"));
                health.quorum_up = Some(format!("{command} stop"));
                cx.note(*line, "fallbackcommand", format!("carried as quorum = 1 for {vip}, with quorum_down \"{command} start\" and quorum_up \"{command} stop\""));
            } else {
                cx.note(*line, "fallbackcommand", format!("{vip} has no real with a weight, so no quorum to lose, dropped"));
            }
        }

        Ok(Service {
            protocol,
            vip,
            scheduler,
            sched_flags: 0,
            persistence,
            lblc_expire: LBLC_DEFAULT_EXPIRATION_SECS as u32,
            reals,
            check,
            health,
        })
    }

    /// The service's check from `checktype`, `service` and the timing
    /// directives, with ldirectord's choice between checktimeout and
    /// negotiatetimeout.
    fn check(&self, cx: &mut Cx<'_>, c: &Common, protocol: Protocol) -> Result<Check, ImportError> {
        let (type_line, checktype) = self.checktype.unwrap_or((self.line, CheckType::Negotiate));
        // As ldirectord's ld_setup: each timeout falls back on the other
        // before falling back on the global values.
        let v = &self.common;
        let checktimeout = v.checktimeout.or(v.negotiatetimeout).or(c.checktimeout).or(c.negotiatetimeout).unwrap_or(CHECKTIMEOUT);
        let negotiatetimeout = v.negotiatetimeout.or(v.checktimeout).or(c.negotiatetimeout).or(c.checktimeout).unwrap_or(NEGOTIATETIMEOUT);
        let mut check = Check {
            interval: Duration::from_secs(u64::from(c.checkinterval.unwrap_or(CHECKINTERVAL))),
            timeout: Duration::from_secs(u64::from(checktimeout)),
            failure_count: c.failurecount.unwrap_or(FAILURECOUNT),
            port: self.checkport,
            ..Check::default()
        };
        // ldirectord checks a UDP service's "connect" with a ping.
        let connect = || if protocol == Protocol::Udp { CheckKind::Ping } else { CheckKind::Connect { send: None, expect: None } };
        let mut uses = Uses::default();
        check.kind = match checktype {
            CheckType::On => CheckKind::None,
            CheckType::Off => {
                cx.note(type_line, "checktype", "off: ldirectord then activates no real; xlvs's none keeps every real in (set their weight to 0 to keep them out)");
                CheckKind::None
            }
            CheckType::Connect => connect(),
            CheckType::Ping => CheckKind::Ping,
            CheckType::External | CheckType::ExternalPerl => {
                if checktype == CheckType::ExternalPerl {
                    cx.note(type_line, "checktype", "external-perl: run as an external command by /bin/sh, not inside perl");
                }
                uses.command = true;
                let command = self.checkcommand.as_ref().map_or("/bin/true", |(_, c)| c.as_str());
                CheckKind::External { command: command.to_owned(), dynamic_weight: false }
            }
            CheckType::Negotiate | CheckType::Combined(_) => {
                if let CheckType::Combined(n) = checktype {
                    cx.note(type_line, "checktype", format!("{n} (connects between negotiate checks): imported as the negotiate check every interval"));
                }
                check.timeout = Duration::from_secs(u64::from(negotiatetimeout));
                let (service_line, service) = match &self.service {
                    Some((line, s)) => (*line, s.as_str()),
                    None => (self.line, port_service(self.port)),
                };
                self.negotiate(cx, service_line, service, connect(), &mut uses)?
            }
        };
        if let CheckKind::None = check.kind {
            // Nothing is checked: no timing to carry.
            check = Check::default();
        }
        for (used, field, what) in [
            (uses.request, &self.request, "request"),
            (uses.receive, &self.receive, "receive"),
            (uses.virtualhost, &self.virtualhost, "virtualhost"),
            (uses.command, &self.checkcommand, "checkcommand"),
        ] {
            if let Some((line, _)) = field.as_ref().filter(|_| !used) {
                cx.note(*line, what, "not used by this virtual's check, dropped");
            }
        }
        if let Some((line, _)) = self.httpmethod.filter(|_| !uses.method) {
            cx.note(line, "httpmethod", "not used by this virtual's check, dropped");
        }
        Ok(check)
    }

    /// The check a negotiate check of `service` becomes.
    fn negotiate(&self, cx: &mut Cx<'_>, line: usize, service: &str, connect: CheckKind, uses: &mut Uses) -> Result<CheckKind, ImportError> {
        Ok(match service {
            "http" | "https" => {
                uses.request = true;
                uses.receive = true;
                uses.virtualhost = true;
                uses.method = true;
                let request = match &self.request {
                    Some((line, r)) => request_path(cx, *line, r),
                    None => "/".to_owned(),
                };
                let receive = self.receive.as_ref().map(|(line, r)| regex(cx, *line, "receive", r)).transpose()?;
                CheckKind::Http(HttpCheck {
                    tls: service == "https",
                    method: self.httpmethod.map_or(HttpMethod::Get, |(_, m)| m),
                    request,
                    receive,
                    virtualhost: self.virtualhost.as_ref().map(|(_, h)| h.clone()),
                    status: vec![DEFAULT_HTTP_STATUS],
                })
            }
            "smtp" | "submission" => CheckKind::Smtp { helo: DEFAULT_HELO.to_owned() },
            "dns" => {
                uses.request = true;
                if let Some((line, _)) = &self.receive {
                    uses.receive = true;
                    cx.note(*line, "receive", "not carried: xlvs's dns check wants a NOERROR answer and does not match records, dropped");
                }
                match &self.request {
                    // ldirectord looks up an A record, or a PTR for an address.
                    Some((_, name)) => match name.parse::<Ipv4Addr>() {
                        Ok(ip) => {
                            let [a, b, c, d] = ip.octets();
                            CheckKind::Dns { name: format!("{d}.{c}.{b}.{a}.in-addr.arpa"), record: 12 }
                        }
                        Err(_) => CheckKind::Dns { name: name.clone(), record: 1 },
                    },
                    None => CheckKind::Dns { name: DEFAULT_DNS_NAME.to_owned(), record: DEFAULT_DNS_TYPE },
                }
            }
            "simpletcp" => {
                uses.request = true;
                uses.receive = true;
                let send = self.request.as_ref().map(|(_, r)| r.replace("\\n", "\n"));
                let expect = self.receive.as_ref().map(|(line, r)| regex(cx, *line, "receive", r)).transpose()?;
                if let CheckKind::Connect { .. } = connect {
                    CheckKind::Connect { send, expect }
                } else {
                    // UDP: the datagram and its answer.
                    CheckKind::Connect { send: Some(send.unwrap_or_default()), expect }
                }
            }
            "none" => CheckKind::None,
            other => {
                let kind = connect.name();
                cx.note(line, "service", format!("{other}: xlvs has no {other} check; imported as a {kind} check"));
                connect
            }
        })
    }

    /// A real's check: the service's, with the real's own request/receive
    /// pair when it has one.
    fn real_check(&self, cx: &mut Cx<'_>, r: &RealLine, service: &Check) -> Result<Check, ImportError> {
        let Some((request, receive)) = &r.request else { return Ok(service.clone()) };
        let mut check = service.clone();
        match &mut check.kind {
            CheckKind::Http(h) => {
                h.request = request_path(cx, r.line, request);
                h.receive = Some(regex(cx, r.line, "real", receive)?);
            }
            CheckKind::Connect { send, expect } => {
                *send = Some(request.replace("\\n", "\n"));
                *expect = Some(regex(cx, r.line, "real", receive)?);
            }
            other => {
                let kind = other.name();
                cx.note(r.line, "real", format!("the request/receive pair is not used by a {kind} check, dropped"));
            }
        }
        Ok(check)
    }
}

/// Which of a virtual's check directives its check uses.
#[derive(Default)]
struct Uses {
    request: bool,
    receive: bool,
    virtualhost: bool,
    method: bool,
    command: bool,
}

/// ldirectord's service for a virtual without `service=`, from its port.
fn port_service(port: u16) -> &'static str {
    SERVICE_PORTS.iter().find(|(_, p)| *p == port).map_or("none", |(s, _)| s)
}

/// ldirectord's services and their ports (`ld_service_to_port`), which are
/// also the port names the importer knows.
const SERVICE_PORTS: [(&str, u16); 19] = [
    ("ftp", 21),
    ("smtp", 25),
    ("dns", 53),
    ("domain", 53),
    ("http", 80),
    ("pop", 110),
    ("nntp", 119),
    ("imap", 143),
    ("ldap", 389),
    ("https", 443),
    ("submission", 587),
    ("imaps", 993),
    ("pops", 995),
    ("oracle", 1521),
    ("radius", 1812),
    ("http_proxy", 3128),
    ("mysql", 3306),
    ("sip", 5060),
    ("pgsql", 5432),
];

/// `HOST[:PORT]` split at its port. An IPv6 host is bracketed, so only a
/// colon after `]` starts a port; anything else is split as IPv4, for
/// [`address`] to say what is wrong with it.
fn split_port(endpoint: &str, family: Family) -> (&str, Option<&str>) {
    let split = match family {
        Family::V6 if endpoint.starts_with('[') => endpoint.rsplit_once("]:").map(|(h, p)| (&endpoint[..=h.len()], p)),
        _ => endpoint.rsplit_once(':'),
    };
    split.map_or((endpoint, None), |(h, p)| (h, Some(p)))
}

/// A service or real address of `family`: dotted IPv4, or bracketed IPv6.
fn address(cx: &Cx<'_>, d: &Directive<'_>, host: &str, family: Family) -> Result<IpAddr, ImportError> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let parsed = match family {
        Family::V4 => host.parse::<Ipv4Addr>().map(IpAddr::V4).ok(),
        Family::V6 => bare.and_then(|h| h.parse::<Ipv6Addr>().ok()).map(IpAddr::V6),
    };
    let Some(addr) = parsed else {
        let base = d.key.trim_end_matches('6');
        let other = bare.unwrap_or(host).parse::<IpAddr>().ok().map(Family::of).filter(|f| *f != family);
        return Err(cx.error(d, match (other, family) {
            (Some(other), _) => format!("{host} is {}: write it as {}=", other.name(), other.directive(base)),
            (None, Family::V6) if host.parse::<Ipv6Addr>().is_ok() => {
                format!("write the IPv6 address {host} in brackets: [{host}]")
            }
            (None, _) => format!("'{host}' is not an {} address (the importer does not resolve host names)", family.name()),
        }));
    };
    let bad = match addr {
        IpAddr::V4(a) => a.is_unspecified() || a.is_broadcast() || a.is_multicast(),
        IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
    };
    if bad {
        return Err(cx.error(d, format!("{addr} cannot be a service or real address")));
    }
    Ok(addr)
}

fn port_number(cx: &Cx<'_>, d: &Directive<'_>, port: &str) -> Result<u16, ImportError> {
    if let Some((_, p)) = SERVICE_PORTS.iter().find(|(name, _)| *name == port) {
        return Ok(*p);
    }
    port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| cx.error(d, format!("'{port}' is not a port (1..=65535, or a service name like http)")))
}

fn seconds(cx: &Cx<'_>, d: &Directive<'_>) -> Result<u32, ImportError> {
    d.value
        .parse::<u32>()
        .ok()
        .filter(|s| (1..=MAX_TIMEOUT).contains(s))
        .ok_or_else(|| cx.error(d, format!("'{}' is not a number of seconds (1..={MAX_TIMEOUT})", d.value)))
}

fn positive(cx: &Cx<'_>, d: &Directive<'_>, what: &str) -> Result<u32, ImportError> {
    d.value.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| cx.error(d, format!("'{}' is not {what} (1 or more)", d.value)))
}

fn yes_no(cx: &Cx<'_>, d: &Directive<'_>) -> Result<bool, ImportError> {
    match d.value {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => Err(cx.error(d, format!("'{other}' must be yes or no"))),
    }
}

/// `fallback=ip[:port] [gate|masq|ipip]` (`fallback6=[ip6][:port] ...`);
/// ldirectord's method is gate when none is given.
fn fallback(cx: &Cx<'_>, d: &Directive<'_>, family: Family) -> Result<Fallback, ImportError> {
    let usage = format!("{}={}:PORT [gate|masq|ipip]", d.key, family.placeholder());
    let mut words = d.value.split_whitespace();
    let Some(endpoint) = words.next() else { return Err(cx.error(d, format!("name the fallback server: {usage}"))) };
    let forward = words.next().map_or(Ok(Forward::Dr), |m| method(cx, d, m))?;
    if let Some(extra) = words.next() {
        return Err(cx.error(d, format!("unexpected '{extra}': write {usage}")));
    }
    let (host, port) = split_port(endpoint, family);
    let port = port.map(|p| port_number(cx, d, p)).transpose()?;
    Ok(Fallback { line: d.line, addr: address(cx, d, host, family)?, port, forward })
}

fn method(cx: &Cx<'_>, d: &Directive<'_>, m: &str) -> Result<Forward, ImportError> {
    match m {
        "gate" => Ok(Forward::Dr),
        "masq" => Ok(Forward::Nat),
        "ipip" => Ok(Forward::Tun),
        other => Err(cx.error(d, format!("'{other}' is not a forwarding method: use gate, masq or ipip"))),
    }
}

/// `real=ip[->ip][:port] gate|masq|ipip [weight] ["request", "receive"]`
/// (`real6=[ip6][->[ip6]][:port] ...`).
fn real(cx: &Cx<'_>, d: &Directive<'_>, family: Family) -> Result<RealLine, ImportError> {
    // The value was unquoted as a whole only if it started and ended with a
    // quote, which a real line never does.
    let (endpoint, rest) = d.value.split_once(char::is_whitespace).ok_or_else(|| {
        cx.error(d, format!("'{}' names no forwarding method: write {}={}[:PORT] gate|masq|ipip [WEIGHT]", d.value, d.key, family.placeholder()))
    })?;
    let (hosts, port) = split_port(endpoint, family);
    let port = port.map(|p| port_number(cx, d, p)).transpose()?;
    let addrs = match hosts.split_once("->") {
        None => vec![address(cx, d, hosts, family)?],
        Some((first, last)) => {
            // Both families counted as one number: IPv4 in the low bits.
            let number = |ip: IpAddr| match ip {
                IpAddr::V4(a) => u128::from(u32::from(a)),
                IpAddr::V6(a) => u128::from(a),
            };
            let first = address(cx, d, first, family)?;
            let (low, high) = (number(first), number(address(cx, d, last, family)?));
            if low > high {
                return Err(cx.error(d, format!("{hosts}: the range must go upwards")));
            }
            if high - low >= 256 {
                return Err(cx.error(d, format!("{hosts}: at most 256 reals in a range")));
            }
            (low..=high)
                .map(|n| match first {
                    // Within a family's width: both ends are of it.
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
                })
                .collect()
        }
    };
    let rest = rest.trim_start();
    let (word, mut rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let forward = method(cx, d, word)?;
    rest = rest.trim_start();
    let mut weight = 1;
    if rest.starts_with(|c: char| c.is_ascii_digit()) {
        let (w, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        weight = w
            .parse::<u32>()
            .ok()
            .filter(|w| *w <= 65535)
            .ok_or_else(|| cx.error(d, format!("'{w}' is not a weight (0..=65535)")))?;
        rest = after.trim_start();
    }
    let request = if rest.is_empty() {
        None
    } else {
        let (request, after) = quoted(rest).ok_or_else(|| cx.error(d, format!("unexpected '{rest}': a real takes a quoted \"request\", \"receive\" pair last")))?;
        let after = after.trim_start().trim_start_matches(',').trim_start();
        let (receive, after) = quoted(after).ok_or_else(|| cx.error(d, "the request needs a quoted receive after it"))?;
        if !after.trim().is_empty() {
            return Err(cx.error(d, format!("unexpected '{}' after the request/receive pair", after.trim())));
        }
        Some((request.to_owned(), receive.to_owned()))
    };
    Ok(RealLine { line: d.line, addrs, port, forward, weight, request })
}

/// A leading `"..."` and what follows it.
fn quoted(s: &str) -> Option<(&str, &str)> {
    let inner = s.strip_prefix('"')?;
    let end = inner.find('"')?;
    Some((&inner[..end], &inner[end + 1..]))
}

/// A request as an xlvs path. A full URL (which ldirectord fetches as is)
/// keeps its path only.
fn request_path(cx: &mut Cx<'_>, line: usize, request: &str) -> String {
    let path = match request.split_once("://") {
        Some((_, rest)) => {
            let path = rest.find('/').map_or("/", |i| &rest[i..]);
            cx.note(line, "request", format!("{request}: a URL; only its path {path} is carried (the check goes to each real; set virtualhost for the Host header)"));
            path
        }
        None => request,
    };
    let path: String = path.chars().filter(|c| !c.is_control()).collect::<String>().replace(' ', "%20");
    if path.starts_with('/') { path } else { format!("/{path}") }
}

/// A receive pattern, which must compile as the checkers compile it.
/// ldirectord's are Perl regexes; most are also Rust ones.
fn regex(cx: &Cx<'_>, line: usize, directive: &str, pattern: &str) -> Result<String, ImportError> {
    regex::bytes::Regex::new(pattern).map_err(|e| {
        let text = e.to_string();
        let reason = text.lines().last().unwrap_or_default().trim().trim_start_matches("error: ").to_owned();
        cx.error_at(line, directive, format!("'{pattern}' is not a regex xlvs can run: {reason}"))
    })?;
    Ok(pattern.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ldirectord.cf of the issue.
    const ISSUE: &str = "checktimeout=3
checkinterval=1
fallback=127.0.0.1:80
autoreload=yes
logfile=\"/var/log/ldirectord.log\"
quiescent=yes

virtual=192.168.0.100:80
\treal=192.168.0.50:80 gate
\treal=192.168.0.51:80 gate
\treal=192.168.0.52:80 gate
\tfallback=127.0.0.1:80 gate
\tservice=http
\trequest=\"index.html\"
\treceive=\"It Works!\"
\tvirtualhost=www.esempio.com
\tscheduler=rr
\tprotocol=tcp
";

    /// Imports, and checks that the text parses back to the same config.
    fn imported(text: &str) -> Imported {
        let i = import("ldirectord.cf", text).unwrap_or_else(|e| panic!("{e}"));
        let toml = i.toml();
        let parsed = config::parse("out.toml", &toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(parsed, i.config, "{toml}");
        i
    }

    fn error(text: &str) -> ImportError {
        import("ldirectord.cf", text).expect_err("should be refused")
    }

    fn has_note(i: &Imported, prefix: &str) -> bool {
        i.notes.iter().any(|n| n.starts_with(prefix))
    }

    #[test]
    fn the_issue_file_converts() {
        let i = imported(ISSUE);
        let c = &i.config;
        assert!(c.autoreload);
        assert_eq!(c.interfaces, [PLACEHOLDER_INTERFACE]);
        assert_eq!(c.services.len(), 1);
        let s = &c.services[0];
        assert_eq!((s.protocol, s.vip), (Protocol::Tcp, VirtualAddr::single(Ipv4Addr::new(192, 168, 0, 100), 80)));
        assert_eq!(s.scheduler, Scheduler::Rr);
        assert_eq!(s.persistence, None);
        let reals: Vec<_> = s.reals.iter().map(|r| (r.addr.to_string(), r.port, r.forward, r.weight)).collect();
        assert_eq!(reals, [
            ("192.168.0.50".to_owned(), 80, Forward::Dr, 1),
            ("192.168.0.51".to_owned(), 80, Forward::Dr, 1),
            ("192.168.0.52".to_owned(), 80, Forward::Dr, 1),
        ]);
        let f = s.health.fallback.as_ref().unwrap();
        assert_eq!((f.addr, f.port, f.forward), (IpAddr::from(Ipv4Addr::LOCALHOST), 80, Forward::Dr));
        assert!(s.health.quiescent);
        assert_eq!(s.check.interval, Duration::from_secs(1));
        // A negotiate check without negotiatetimeout takes checktimeout.
        assert_eq!(s.check.timeout, Duration::from_secs(3));
        assert_eq!(s.check.failure_count, 1);
        assert_eq!(s.check.kind, CheckKind::Http(HttpCheck {
            tls: false,
            method: HttpMethod::Get,
            request: "/index.html".into(),
            receive: Some("It Works!".into()),
            virtualhost: Some("www.esempio.com".into()),
            status: vec![(200, 299)],
        }));
        assert!(s.reals.iter().all(|r| r.check == s.check));
        assert_eq!(i.notes.len(), 2, "{:?}", i.notes);
        assert!(has_note(&i, "ldirectord.cf:5: logfile: not carried: xlvs logs to stderr"), "{:?}", i.notes);
        assert!(has_note(&i, "ldirectord.cf: interfaces: "), "{:?}", i.notes);
        let toml = i.toml();
        assert!(toml.contains("scheduler = \"rr\""), "{toml}");
        assert!(toml.contains("fallback = { address = \"127.0.0.1:80\", forward = \"dr\" }"), "{toml}");
    }

    #[test]
    fn interfaces_given_need_no_note_and_are_checked() {
        let i = import_with("ldirectord.cf", ISSUE, &["ens3".into(), "ens4".into()]).unwrap();
        assert_eq!(i.config.interfaces, ["ens3", "ens4"]);
        assert!(!has_note(&i, "ldirectord.cf: interfaces"));
        let e = import_with("ldirectord.cf", ISSUE, &["a name".into()]).unwrap_err();
        assert_eq!((e.line, e.directive.as_str()), (0, "director.interfaces"));
        assert!(e.to_string().starts_with("ldirectord.cf: director.interfaces: 'a name' is not a valid interface name"), "{e}");
    }

    #[test]
    fn defaults_are_ldirectords() {
        let i = imported("virtual=10.0.0.1:8080\n    real=10.0.1.1:8080 gate\n");
        let s = &i.config.services[0];
        assert!(!i.config.autoreload);
        assert_eq!(s.scheduler, Scheduler::Wrr);
        assert_eq!(s.protocol, Protocol::Tcp);
        assert!(s.health.quiescent);
        assert_eq!(s.health.fallback, None);
        // negotiate of service none (port 8080 names no service): no check.
        assert_eq!(s.check, Check::default());
        // Port 80 means http; the negotiate timeout defaults to 30 s.
        let s = &imported("virtual=10.0.0.1:80\n    real=10.0.1.1 gate\n").config.services[0];
        assert_eq!(s.reals[0].port, 80);
        assert_eq!(s.check.kind.name(), "http");
        assert_eq!((s.check.interval, s.check.timeout, s.check.failure_count), (Duration::from_secs(10), Duration::from_secs(30), 1));
        // Port 53 means udp and dns.
        let s = &imported("virtual=10.0.0.1:domain\n    real=10.0.1.1 gate\n").config.services[0];
        assert_eq!((s.protocol, s.vip.port), (Protocol::Udp, 53));
        assert_eq!(s.check.kind, CheckKind::Dns { name: ".".into(), record: 6 });
        // A connect check takes checktimeout, 5 s by default.
        let s = &imported("virtual=10.0.0.1:80\n    real=10.0.1.1 gate\n    checktype=connect\n").config.services[0];
        assert_eq!((s.check.kind.name(), s.check.timeout), ("connect", Duration::from_secs(5)));
    }

    #[test]
    fn masq_and_ipip_reals_with_weights_and_ranges() {
        let i = imported(concat!(
            "virtual=10.0.0.1:80\n",
            "\treal=10.0.1.1:8080 masq 5\n",
            "\treal=10.0.1.2 ipip 0\n",
            "\treal=10.0.1.10->10.0.1.12:80 gate 2\n",
            "\treal=10.0.1.20:81 gate\n",
            "\tchecktype=on\n",
            "\tscheduler=wlc\n",
            "\tpersistent=600\n",
            "\tnetmask=255.255.255.0\n",
        ));
        let s = &i.config.services[0];
        let reals: Vec<_> = s.reals.iter().map(|r| (crate::addr::to_map(r.addr).0[0].to_ne_bytes()[3], r.port, r.forward, r.weight)).collect();
        assert_eq!(reals, [
            (1, 8080, Forward::Nat, 5),
            (2, 80, Forward::Tun, 0),
            (10, 80, Forward::Dr, 2),
            (11, 80, Forward::Dr, 2),
            (12, 80, Forward::Dr, 2),
            // gate cannot map ports: the virtual's port, with a note.
            (20, 80, Forward::Dr, 1),
        ]);
        assert!(has_note(&i, "ldirectord.cf:5: real: dr cannot map ports"), "{:?}", i.notes);
        assert_eq!(s.scheduler, Scheduler::Wlc);
        assert_eq!(s.persistence, Some(Persistence { timeout: 600, netmask: IpAddr::from(Ipv4Addr::new(255, 255, 255, 0)) }));
        assert_eq!(s.check, Check::default());
    }

    #[test]
    fn external_ping_and_other_checks() {
        let i = imported(concat!(
            "checktimeout=4\nnegotiatetimeout=20\nfailurecount=3\n",
            "virtual=10.0.0.1:3306\n  real=10.0.1.1 gate\n  checktype=external\n  checkcommand=\"/etc/ha.d/check-mysql\"\n  checkport=3307\n",
            "virtual=10.0.0.2:3306\n  real=10.0.1.1 gate\n  checktype=external-perl\n",
            "virtual=10.0.0.3:3306\n  real=10.0.1.1 gate\n  checktype=ping\n",
            "virtual=10.0.0.4:3306\n  real=10.0.1.1 gate\n  login=\"u\"\n",
            "virtual=10.0.0.5:443\n  real=10.0.1.1 gate\n  httpmethod=head\n",
            "virtual=10.0.0.6:25\n  real=10.0.1.1 gate\n",
            "virtual=10.0.0.7:7\n  real=10.0.1.1 gate\n  service=simpletcp\n  request=\"hello\\n\"\n  receive=\"^hello\"\n",
            "virtual=10.0.0.8:5000\n  real=10.0.1.1 gate\n  protocol=udp\n  checktype=connect\n",
            "virtual=10.0.0.9:80\n  real=10.0.1.1 gate\n  checktype=off\n",
            "virtual=10.0.0.10:53\n  real=10.0.1.1 gate\n  request=\"10.1.2.3\"\n",
        ));
        let s = &i.config.services;
        assert_eq!(s[0].check.kind, CheckKind::External { command: "/etc/ha.d/check-mysql".into(), dynamic_weight: false });
        assert_eq!((s[0].check.timeout, s[0].check.failure_count, s[0].check.port), (Duration::from_secs(4), 3, Some(3307)));
        assert_eq!(s[1].check.kind, CheckKind::External { command: "/bin/true".into(), dynamic_weight: false });
        assert!(has_note(&i, "ldirectord.cf:11: checktype: external-perl"), "{:?}", i.notes);
        assert_eq!(s[2].check.kind, CheckKind::Ping);
        // mysql's negotiate check becomes a connect check, with the
        // negotiate timeout.
        assert_eq!((s[3].check.kind.name(), s[3].check.timeout), ("connect", Duration::from_secs(20)));
        assert!(has_note(&i, "ldirectord.cf:15: service: mysql: xlvs has no mysql check; imported as a connect check"), "{:?}", i.notes);
        assert!(has_note(&i, "ldirectord.cf:17: login: not supported"), "{:?}", i.notes);
        let CheckKind::Http(h) = &s[4].check.kind else { panic!("{:?}", s[4].check) };
        assert!(h.tls);
        assert_eq!(h.method, HttpMethod::Head);
        assert_eq!(s[5].check.kind, CheckKind::Smtp { helo: "localhost".into() });
        assert_eq!(s[6].check.kind, CheckKind::Connect { send: Some("hello\n".into()), expect: Some("^hello".into()) });
        assert_eq!(s[7].check.kind, CheckKind::Ping);
        assert_eq!(s[8].check, Check::default());
        assert!(has_note(&i, "ldirectord.cf:34: checktype: off"), "{:?}", i.notes);
        assert_eq!(s[9].check.kind, CheckKind::Dns { name: "3.2.1.10.in-addr.arpa".into(), record: 12 });
    }

    #[test]
    fn a_virtual_overrides_the_globals() {
        let i = imported(concat!(
            "checktimeout=3\ncheckinterval=5\nfailurecount=2\nquiescent=no\nfallback=127.0.0.1 masq\n",
            "virtual=10.0.0.1:80\n",
            "    real=10.0.1.1:80 gate\n",
            "    checkinterval=7\n    negotiatetimeout=9\n    failurecount=4\n    quiescent=yes\n    fallback=10.9.9.9:8080 masq\n",
            "virtual=10.0.0.2:80\n",
            "    real=10.0.1.1:80 gate\n",
        ));
        let [a, b] = [&i.config.services[0], &i.config.services[1]];
        assert_eq!((a.check.interval, a.check.timeout, a.check.failure_count), (Duration::from_secs(7), Duration::from_secs(9), 4));
        assert!(a.health.quiescent);
        let f = a.health.fallback.as_ref().unwrap();
        assert_eq!((f.addr, f.port, f.forward), (IpAddr::from(Ipv4Addr::new(10, 9, 9, 9)), 8080, Forward::Nat));
        assert_eq!((b.check.interval, b.check.timeout, b.check.failure_count), (Duration::from_secs(5), Duration::from_secs(3), 2));
        assert!(!b.health.quiescent);
        // The global fallback, at the virtual's port.
        let f = b.health.fallback.as_ref().unwrap();
        assert_eq!((f.addr, f.port, f.forward), (IpAddr::from(Ipv4Addr::LOCALHOST), 80, Forward::Nat));
    }

    #[test]
    fn per_real_request_and_fallback_command() {
        let i = imported(concat!(
            "fallbackcommand=\"/usr/local/bin/sorry\"\n",
            "virtual=10.0.0.1:80\n",
            "    real=10.0.1.1:80 gate 1 \".healthcheck.html\", \"OKAY\"\n",
            "    real=10.0.1.2:80 gate\n",
            "    real=127.0.0.1:80 gate\n",
            "    fallback=127.0.0.1:80\n",
            "    service=http\n",
        ));
        let s = &i.config.services[0];
        let CheckKind::Http(h) = &s.reals[0].check.kind else { panic!() };
        assert_eq!((h.request.as_str(), h.receive.as_deref()), ("/.healthcheck.html", Some("OKAY")));
        assert_eq!(s.reals[1].check, s.check);
        // The fallback is also a real: dropped, with a note.
        assert_eq!(s.health.fallback, None);
        assert!(has_note(&i, "ldirectord.cf:6: fallback: 127.0.0.1:80 is also a real"), "{:?}", i.notes);
        assert_eq!(s.health.quorum, 1);
        assert_eq!(s.health.quorum_down.as_deref(), Some("/usr/local/bin/sorry start"));
        assert_eq!(s.health.quorum_up.as_deref(), Some("/usr/local/bin/sorry stop"));
        assert!(has_note(&i, "ldirectord.cf:1: fallbackcommand: carried as quorum = 1"), "{:?}", i.notes);
    }

    #[test]
    fn unsupported_and_unknown_directives_are_noted() {
        let i = imported(concat!(
            "# a comment\n",
            "emailalert=\"root@example.com\"\n",
            "supervised=yes\n",
            "frobnicate=7\n",
            "virtual=10.0.0.1:80   # the web\n",
            "    real=10.0.1.1:80 gate\n",
            "\n",
            "    monitorfile=\"/var/log/checks\"\n",
            "    colour=blue\n",
            "    receive=\"a#b\"\n",
            "    service=none\n",
            "    netmask=255.255.0.0\n",
        ));
        let notes = &i.notes;
        for prefix in [
            "ldirectord.cf:2: emailalert: not supported",
            "ldirectord.cf:3: supervised: not needed",
            "ldirectord.cf:4: frobnicate: unknown directive, dropped",
            "ldirectord.cf:8: monitorfile: not supported",
            "ldirectord.cf:9: colour: unknown directive, dropped",
            "ldirectord.cf:10: receive: not used by this virtual's check, dropped",
            "ldirectord.cf:12: netmask: applies only to a persistent service",
        ] {
            assert!(has_note(&i, prefix), "{prefix}: {notes:?}");
        }
        // The blank line did not end the section.
        assert_eq!(i.config.services[0].reals.len(), 1);
    }

    #[test]
    fn ipv6_virtuals_reals_and_fallbacks_convert() {
        let i = imported(concat!(
            "fallback=127.0.0.1:80 gate\n",
            "fallback6=[2001:db8:2::99]:8080 masq\n",
            "virtual6=[2001:db8::100]:80\n",
            "    real6=[2001:db8:1::11]:8080 masq 2\n",
            "    real6=[2001:db8:1::fe]->[2001:db8:1::101]:8080 masq\n",
            "    service=http\n",
            "    persistent=600\n",
            "    netmask=64\n",
            "virtual6=[2001:db8::100]:53\n",
            "    real6=[2001:db8:1::11] gate\n",
            "    fallback6=[2001:db8:1::99]\n",
            "    fallback=10.9.9.9\n",
            "    service=dns\n",
            "virtual=10.0.0.1:80\n",
            "    real=10.0.1.1 gate\n",
            "virtual6=[2001:db8::100]:5060\n",
            "    real6=[2001:db8:1::11] gate\n",
            "    protocol=udp\n",
            "    checktype=connect\n",
        ));
        let c = &i.config;
        assert_eq!(c.services.len(), 4);
        // ldirectord checks a UDP service's connect with a ping, ICMPv6 here.
        assert_eq!(c.services[3].check.kind, CheckKind::Ping);
        assert_eq!(c.services[3].reals[0].check.kind, CheckKind::Ping);
        let web = &c.services[0];
        assert_eq!((web.protocol, web.vip), (Protocol::Tcp, VirtualAddr::single("2001:db8::100".parse::<Ipv6Addr>().unwrap(), 80)));
        let reals: Vec<_> = web.reals.iter().map(|r| (Endpoint(r.addr, r.port).to_string(), r.forward, r.weight)).collect();
        assert_eq!(reals, [
            ("[2001:db8:1::11]:8080".to_owned(), Forward::Nat, 2),
            ("[2001:db8:1::fe]:8080".to_owned(), Forward::Nat, 1),
            ("[2001:db8:1::ff]:8080".to_owned(), Forward::Nat, 1),
            ("[2001:db8:1::100]:8080".to_owned(), Forward::Nat, 1),
            ("[2001:db8:1::101]:8080".to_owned(), Forward::Nat, 1),
        ]);
        assert!(matches!(web.check.kind, CheckKind::Http(_)));
        assert_eq!(web.persistence, Some(Persistence { timeout: 600, netmask: "ffff:ffff:ffff:ffff::".parse().unwrap() }));
        let f = web.health.fallback.as_ref().unwrap();
        assert_eq!((Endpoint(f.addr, f.port).to_string(), f.forward), ("[2001:db8:2::99]:8080".to_owned(), Forward::Nat), "the global fallback6");

        let dns = &c.services[1];
        assert_eq!((dns.protocol, dns.vip.to_string()), (Protocol::Udp, "[2001:db8::100]:53".to_owned()));
        assert_eq!((dns.reals[0].addr.to_string(), dns.reals[0].port), ("2001:db8:1::11".to_owned(), 53));
        assert!(matches!(dns.check.kind, CheckKind::Dns { .. }));
        let f = dns.health.fallback.as_ref().unwrap();
        assert_eq!((Endpoint(f.addr, f.port).to_string(), f.forward), ("[2001:db8:1::99]:53".to_owned(), Forward::Dr), "its own fallback6");
        assert!(has_note(&i, "ldirectord.cf:12: fallback: an IPv4 fallback in the IPv6 virtual [2001:db8::100]:53, dropped"), "{:?}", i.notes);

        // IPv4 virtuals keep the IPv4 fallback.
        let f = c.services[2].health.fallback.as_ref().unwrap();
        assert_eq!(Endpoint(f.addr, f.port).to_string(), "127.0.0.1:80");

        let toml = i.toml();
        for line in ["address = \"[2001:db8::100]:80\"", "address = \"[2001:db8:1::11]:8080\"", "netmask = 64"] {
            assert!(toml.contains(line), "{line}: {toml}");
        }
    }

    #[test]
    fn bad_input_names_its_line() {
        let cases: &[(&str, usize, &str, &str)] = &[
            ("virtual=10.0.0.1\n    real=10.0.1.1 gate\n", 1, "virtual", "'10.0.0.1' needs a port: write virtual=IP:PORT"),
            ("virtual=10.0.0.1:80\n    real=10.0.1.1:80 route\n", 2, "real", "'route' is not a forwarding method: use gate, masq or ipip"),
            ("virtual=10.0.0.1:80\n    real=10.0.1.1:80\n", 2, "real", "names no forwarding method"),
            ("virtual=10.0.0.1:80\n    real=10.0.1.1:80 gate 70000\n", 2, "real", "'70000' is not a weight (0..=65535)"),
            ("virtual=10.0.0.1:80\n    real=10.0.1.1:80 gate 1 \"/x\"\n", 2, "real", "the request needs a quoted receive"),
            ("virtual=10.0.0.1:80\n    real=10.0.1.1:80 gate junk\n", 2, "real", "unexpected 'junk'"),
            ("virtual=10.0.0.1:80\n    real=10.0.1.3->10.0.1.1 gate\n", 2, "real", "the range must go upwards"),
            ("virtual=10.0.0.1:80\n    real=10.0.1.1 gate\n    real=10.0.1.1 masq\n", 3, "real", "10.0.1.1:80 is listed twice"),
            ("virtual=www.example.com:80\n", 1, "virtual", "'www.example.com' is not an IPv4 address"),
            ("virtual=10.0.0.1:gopher\n", 1, "virtual", "'gopher' is not a port"),
            ("virtual=1\n", 1, "virtual", "1 is a firewall mark: fwmark services are not supported"),
            ("virtual=10.0.0.1:80\n    protocol=fwm\n", 2, "protocol", "fwmark services are not supported"),
            ("virtual=10.0.0.1:80\n    protocol=sctp\n", 2, "protocol", "'sctp' is not a protocol"),
            ("virtual=10.0.0.1:80\n    scheduler=fastest\n", 2, "scheduler", "'fastest' is not a scheduler xlvs has"),
            ("virtual=10.0.0.1:80\n    checktype=sometimes\n", 2, "checktype", "'sometimes' is not a check type"),
            ("virtual=10.0.0.1:80\n    service=gopher\n", 2, "service", "'gopher' is not a service of ldirectord"),
            ("virtual=10.0.0.1:80\n    httpmethod=POST\n", 2, "httpmethod", "'POST' is not a method"),
            ("virtual=10.0.0.1:80\n    receive=\"(\"\n", 2, "receive", "'(' is not a regex xlvs can run: unclosed group"),
            ("virtual=10.0.0.1:80\n    persistent=forever\n", 2, "persistent", "not a persistence timeout"),
            ("virtual=10.0.0.1:80\n    netmask=255.0.255.0\n", 2, "netmask", "not a netmask"),
            ("virtual=10.0.0.1:80\n    checkport=0\n", 2, "checkport", "'0' is not a port"),
            ("virtual=10.0.0.1:80\n    quiescent=maybe\n", 2, "quiescent", "'maybe' must be yes or no"),
            ("checktimeout=0\n", 1, "checktimeout", "'0' is not a number of seconds"),
            ("checkinterval=soon\n", 1, "checkinterval", "not a number of seconds"),
            ("failurecount=0\n", 1, "failurecount", "'0' is not a count (1 or more)"),
            ("autoreload=true\n", 1, "autoreload", "'true' must be yes or no"),
            ("fallback=127.0.0.1:80 route\n", 1, "fallback", "'route' is not a forwarding method"),
            ("fallback=\n", 1, "fallback", "name the fallback server"),
            ("    real=10.0.1.1 gate\n", 1, "real", "indented, but no virtual= section is open"),
            ("virtual=10.0.0.1:80\nautoreload=no\n    real=10.0.1.1 gate\n", 3, "real", "indented, but no virtual="),
            ("virtual=[2001:db8::1]:80\n", 1, "virtual", "[2001:db8::1] is IPv6: write it as virtual6="),
            ("virtual6=10.0.0.1:80\n", 1, "virtual6", "10.0.0.1 is IPv4: write it as virtual="),
            ("virtual6=[2001:db8::1]\n", 1, "virtual6", "'[2001:db8::1]' needs a port: write virtual6=[IP6]:PORT"),
            ("virtual6=2001:db8::1:80\n", 1, "virtual6", "write the IPv6 address 2001:db8::1 in brackets"),
            ("virtual6=[2001:db8::zz]:80\n", 1, "virtual6", "'[2001:db8::zz]' is not an IPv6 address"),
            ("virtual6=[ff02::1]:80\n", 1, "virtual6", "ff02::1 cannot be a service or real address"),
            ("virtual6=[2001:db8::1]:80\n    real=10.0.1.1 gate\n", 2, "real", "an IPv4 real in an IPv6 virtual: a real is of its virtual's family (write real6)"),
            ("virtual=10.0.0.1:80\n    real6=[2001:db8::2] gate\n", 2, "real6", "an IPv6 real in an IPv4 virtual"),
            ("virtual6=[2001:db8::1]:80\n    real6=[2001:db8::2]:http\n", 2, "real6", "names no forwarding method: write real6=[IP6][:PORT]"),
            ("virtual6=[2001:db8::1]:80\n    real6=[2001:db8::2]->[2001:db8::1:1] gate\n", 2, "real6", "at most 256 reals in a range"),
            ("virtual6=[2001:db8::1]:80\n    real6=[2001:db8::3]->[2001:db8::2] gate\n", 2, "real6", "the range must go upwards"),
            ("virtual6=[2001:db8::1]:80\n    real6=[2001:db8::2] gate\n    real6=[2001:db8::2]:80 masq\n", 3, "real6", "[2001:db8::2]:80 is listed twice"),
            ("virtual6=[2001:db8::1]:80\n    netmask=255.255.255.0\n", 2, "netmask", "'255.255.255.0' is not an IPv6 prefix length"),
            ("virtual6=[2001:db8::1]:80\n    netmask=129\n", 2, "netmask", "not an IPv6 prefix length"),
            ("fallback6=[2001:db8::9]:80 route\n", 1, "fallback6", "'route' is not a forwarding method"),
            ("fallback6=\n", 1, "fallback6", "name the fallback server: fallback6=[IP6]:PORT"),
            ("fallback6=127.0.0.1:80\n", 1, "fallback6", "127.0.0.1 is IPv4: write it as fallback="),
            ("fallback=[2001:db8::9]:80\n", 1, "fallback", "[2001:db8::9] is IPv6: write it as fallback6="),
            ("virtual6=[2001:db8::1]:80\nvirtual6=[2001:db8::1]:80\n", 2, "virtual", "tcp [2001:db8::1]:80 is defined twice"),
            ("virtual=10.0.0.1:80\nvirtual=10.0.0.1:80\n", 2, "virtual", "tcp 10.0.0.1:80 is defined twice"),
        ];
        for (text, line, directive, message) in cases {
            let e = error(text);
            assert_eq!((e.line, e.directive.as_str()), (*line, *directive), "{text}: {e}");
            assert!(e.message.contains(message), "{text}: {e}");
            assert!(e.to_string().starts_with(&format!("ldirectord.cf:{line}: {directive}: ")), "{e}");
        }
    }
}
