//! Parsing of the health keys: `[virtual.check]` and `[virtual.real.check]`
//! tables, and a service's `quiescent`, `fallback`, `quorum` and hook
//! commands. Every value is taken as a raw [`toml::Value`] and checked here,
//! so that a wrong type is reported with its key like any other mistake.

use std::time::Duration;

use serde::Deserialize;
use toml::{Spanned, Value};

use super::{
    Check, CheckKind, ConfigError, Forward, Health, HttpCheck, HttpMethod, Locator, Real, VirtualAddr, parse_endpoint,
    same_family,
};
use crate::addr::Endpoint;
use crate::timeouts::MAX_TIMEOUT;

/// The status codes an http(s) check accepts when `status` is absent.
pub const DEFAULT_HTTP_STATUS: (u16, u16) = (200, 299);

/// The DNS record types that may be named in `record`, with their TYPE
/// numbers (RFC 1035, 3596, 2782).
pub const DNS_RECORDS: [(&str, u16); 9] =
    [("A", 1), ("NS", 2), ("CNAME", 5), ("SOA", 6), ("PTR", 12), ("MX", 15), ("TXT", 16), ("AAAA", 28), ("SRV", 33)];

/// The name of a DNS TYPE number, when it has one here.
#[must_use]
pub fn dns_record_name(record: u16) -> Option<&'static str> {
    DNS_RECORDS.iter().find(|(_, n)| *n == record).map(|(name, _)| *name)
}

/// `[virtual.check]` or `[virtual.real.check]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct CheckSection {
    #[serde(rename = "type")]
    kind: Option<Spanned<Value>>,
    check_interval: Option<Spanned<Value>>,
    check_timeout: Option<Spanned<Value>>,
    warmup: Option<Spanned<Value>>,
    failure_count: Option<Spanned<Value>>,
    rise: Option<Spanned<Value>>,
    port: Option<Spanned<Value>>,
    // http, https
    method: Option<Spanned<Value>>,
    request: Option<Spanned<Value>>,
    receive: Option<Spanned<Value>>,
    virtualhost: Option<Spanned<Value>>,
    status: Option<Spanned<Value>>,
    // connect
    send: Option<Spanned<Value>>,
    expect: Option<Spanned<Value>>,
    // external
    command: Option<Spanned<Value>>,
    dynamic_weight: Option<Spanned<Value>>,
    // dns
    name: Option<Spanned<Value>>,
    record: Option<Spanned<Value>>,
    // smtp
    helo: Option<Spanned<Value>>,
}

/// A key only some check types have: its name, its value if written, the
/// types it belongs to, and how an error names them.
type SpecificKey<'a> = (&'static str, Option<&'a Spanned<Value>>, &'static [&'static str], &'static str);

impl CheckSection {
    fn specific_keys(&self) -> [SpecificKey<'_>; 12] {
        const HTTP: &[&str] = &["http", "https"];
        const HTTP_TEXT: &str = "http and https checks";
        [
            ("method", self.method.as_ref(), HTTP, HTTP_TEXT),
            ("request", self.request.as_ref(), HTTP, HTTP_TEXT),
            ("receive", self.receive.as_ref(), HTTP, HTTP_TEXT),
            ("virtualhost", self.virtualhost.as_ref(), HTTP, HTTP_TEXT),
            ("status", self.status.as_ref(), HTTP, HTTP_TEXT),
            ("send", self.send.as_ref(), &["connect"], "connect checks"),
            ("expect", self.expect.as_ref(), &["connect"], "connect checks"),
            ("command", self.command.as_ref(), &["external"], "external checks"),
            ("dynamic_weight", self.dynamic_weight.as_ref(), &["external"], "external checks"),
            ("name", self.name.as_ref(), &["dns"], "dns checks"),
            ("record", self.record.as_ref(), &["dns"], "dns checks"),
            ("helo", self.helo.as_ref(), &["smtp"], "smtp checks"),
        ]
    }
}

/// The check types `type` accepts, as [`CheckKind::name`] spells them
/// (`off` is read as `none`).
const CHECK_TYPES: [&str; 8] = ["none", "connect", "http", "https", "external", "ping", "dns", "smtp"];

// Typed readers of raw values: each names the key and the line when the
// value is of the wrong kind.
impl Locator<'_> {
    fn wrong_type(&self, v: &Spanned<Value>, key: &str, expected: &str) -> ConfigError {
        let found = v.get_ref();
        self.error(v.span().start, key, format!("expected {expected}, found {} {found}", found.type_str()))
    }

    pub(super) fn string<'v>(&self, v: &'v Spanned<Value>, key: &str) -> Result<&'v str, ConfigError> {
        v.get_ref().as_str().ok_or_else(|| self.wrong_type(v, key, "a string"))
    }

    /// A string that is not empty.
    pub(super) fn text<'v>(&self, v: &'v Spanned<Value>, key: &str) -> Result<&'v str, ConfigError> {
        let s = self.string(v, key)?;
        if s.trim().is_empty() {
            return Err(self.error(v.span().start, key, "must not be empty"));
        }
        Ok(s)
    }

    /// A string that goes into a protocol line (a path, a host name): no
    /// spaces, no control characters.
    fn token<'v>(&self, v: &'v Spanned<Value>, key: &str) -> Result<&'v str, ConfigError> {
        let s = self.text(v, key)?;
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(self.error(v.span().start, key, format!("'{s}' must not contain spaces or control characters")));
        }
        Ok(s)
    }

    pub(super) fn boolean(&self, v: &Spanned<Value>, key: &str) -> Result<bool, ConfigError> {
        v.get_ref().as_bool().ok_or_else(|| self.wrong_type(v, key, "true or false"))
    }

    /// An integer in `min..=max`.
    fn integer(&self, v: &Spanned<Value>, key: &str, min: i64, max: i64) -> Result<i64, ConfigError> {
        let n = v.get_ref().as_integer().ok_or_else(|| self.wrong_type(v, key, "an integer"))?;
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(self.error(v.span().start, key, format!("{n} is out of range {min}..={max}")))
        }
    }

    /// Seconds, as an integer or a float, kept to the microsecond (so that
    /// a rendered value reads back exactly). Above 0 unless `zero_ok`.
    fn seconds(&self, v: &Spanned<Value>, key: &str, zero_ok: bool) -> Result<Duration, ConfigError> {
        let max = f64::from(MAX_TIMEOUT);
        let secs = match v.get_ref() {
            Value::Integer(n) => *n as f64,
            Value::Float(f) => *f,
            _ => return Err(self.wrong_type(v, key, "seconds (an integer or a float)")),
        };
        let bound = if zero_ok { "0" } else { "above 0" };
        let micros = (secs * 1e6).round();
        // NaN fails every comparison, so it is refused here too.
        if !(secs <= max && (micros > 0.0 || (zero_ok && micros == 0.0))) {
            return Err(self.error(v.span().start, key, format!("{} is out of range: write seconds, {bound} and at most {MAX_TIMEOUT}", v.get_ref())));
        }
        // In range, so the conversion is exact.
        Ok(Duration::from_micros(micros as u64))
    }

    /// A regular expression, compiled as the checkers compile it (over
    /// bytes) so that a pattern accepted here also runs there.
    fn regex(&self, v: &Spanned<Value>, key: &str) -> Result<String, ConfigError> {
        let pattern = self.text(v, key)?;
        regex::bytes::Regex::new(pattern).map_err(|e| {
            // The syntax error's last line is the reason; the lines above
            // only repeat the pattern with a caret.
            let text = e.to_string();
            let reason = text.lines().last().unwrap_or_default().trim().trim_start_matches("error: ").to_owned();
            self.error(v.span().start, key, format!("'{pattern}' is not a valid regex: {reason}"))
        })?;
        Ok(pattern.to_owned())
    }
}

/// Resolves a check table over `base`: the service's check for a real's
/// table, [`Check::default`] for a service's. A key present overrides
/// `base`'s value; when the table changes the type, only the timing keys and
/// `port` carry over from `base`.
pub(super) fn resolve(at: &Locator<'_>, prefix: &str, section: Option<&CheckSection>, base: &Check) -> Result<Check, ConfigError> {
    let Some(s) = section else { return Ok(base.clone()) };
    let key = |k: &str| format!("{prefix}.{k}");
    let name = match &s.kind {
        None => base.kind.name(),
        Some(v) => match at.string(v, &key("type"))? {
            "off" => "none",
            t => CHECK_TYPES.iter().copied().find(|known| *known == t).ok_or_else(|| {
                at.error(v.span().start, key("type"), format!("'{t}' is not a check type: use connect, http, https, external, ping, dns, smtp or none (off)"))
            })?,
        },
    };
    for (k, value, types, text) in s.specific_keys() {
        if let Some(v) = value.filter(|_| !types.contains(&name)) {
            return Err(at.error(v.span().start, key(k), format!("'{k}' applies to {text} (this check is {name})")));
        }
    }
    let inherited = (name == base.kind.name()).then_some(&base.kind);

    let mut check = base.clone();
    if let Some(v) = &s.check_interval {
        check.interval = at.seconds(v, &key("check_interval"), false)?;
    }
    if let Some(v) = &s.check_timeout {
        check.timeout = at.seconds(v, &key("check_timeout"), false)?;
    }
    if let Some(v) = &s.warmup {
        check.warmup = at.seconds(v, &key("warmup"), true)?;
    }
    let count = |v: &Spanned<Value>, k: &str| at.integer(v, &key(k), 1, i64::from(u32::MAX)).map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    if let Some(v) = &s.failure_count {
        check.failure_count = count(v, "failure_count")?;
    }
    if let Some(v) = &s.rise {
        check.rise = count(v, "rise")?;
    }
    if let Some(v) = &s.port {
        check.port = Some(u16::try_from(at.integer(v, &key("port"), 1, 65535)?).unwrap_or(u16::MAX));
    }

    check.kind = match name {
        "none" => CheckKind::None,
        "ping" => CheckKind::Ping,
        "connect" => {
            let (mut send, mut expect) = match inherited {
                Some(CheckKind::Connect { send, expect }) => (send.clone(), expect.clone()),
                _ => (None, None),
            };
            if let Some(v) = &s.send {
                // May be empty: a UDP connect check then sends an empty datagram.
                send = Some(at.string(v, &key("send"))?.to_owned());
            }
            if let Some(v) = &s.expect {
                expect = Some(at.regex(v, &key("expect"))?);
            }
            CheckKind::Connect { send, expect }
        }
        "http" | "https" => {
            let mut h = match inherited {
                Some(CheckKind::Http(h)) => h.clone(),
                _ => HttpCheck {
                    tls: name == "https",
                    method: HttpMethod::Get,
                    request: "/".into(),
                    receive: None,
                    virtualhost: None,
                    status: vec![DEFAULT_HTTP_STATUS],
                },
            };
            if let Some(v) = &s.method {
                h.method = match at.string(v, &key("method"))?.to_ascii_uppercase().as_str() {
                    "GET" => HttpMethod::Get,
                    "HEAD" => HttpMethod::Head,
                    _ => return Err(at.error(v.span().start, key("method"), format!("'{}' is not a method: use GET or HEAD", v.get_ref().as_str().unwrap_or_default()))),
                };
            }
            if let Some(v) = &s.request {
                h.request = request_path(at, v, &key("request"))?;
            }
            if let Some(v) = &s.receive {
                h.receive = Some(at.regex(v, &key("receive"))?);
            }
            if let Some(v) = &s.virtualhost {
                h.virtualhost = Some(at.token(v, &key("virtualhost"))?.to_owned());
            }
            if let Some(v) = &s.status {
                h.status = status(at, v, &key("status"))?;
            }
            CheckKind::Http(h)
        }
        "external" => {
            let (mut command, mut dynamic_weight) = match inherited {
                Some(CheckKind::External { command, dynamic_weight }) => (Some(command.clone()), *dynamic_weight),
                _ => (None, false),
            };
            if let Some(v) = &s.command {
                command = Some(at.text(v, &key("command"))?.to_owned());
            }
            if let Some(v) = &s.dynamic_weight {
                dynamic_weight = at.boolean(v, &key("dynamic_weight"))?;
            }
            let Some(command) = command else {
                // Only a table that sets the type can get here.
                let offset = s.kind.as_ref().map_or(0, |k| k.span().start);
                return Err(at.error(offset, key("command"), "an external check needs a command"));
            };
            CheckKind::External { command, dynamic_weight }
        }
        "dns" => {
            let (mut qname, mut record) = match inherited {
                Some(CheckKind::Dns { name, record }) => (name.clone(), *record),
                _ => (super::health::DEFAULT_DNS_NAME.to_owned(), super::health::DEFAULT_DNS_TYPE),
            };
            if let Some(v) = &s.name {
                qname = at.token(v, &key("name"))?.to_owned();
            }
            if let Some(v) = &s.record {
                record = dns_record(at, v, &key("record"))?;
            }
            CheckKind::Dns { name: qname, record }
        }
        "smtp" => {
            let mut helo = match inherited {
                Some(CheckKind::Smtp { helo }) => helo.clone(),
                _ => super::health::DEFAULT_HELO.to_owned(),
            };
            if let Some(v) = &s.helo {
                helo = at.token(v, &key("helo"))?.to_owned();
            }
            CheckKind::Smtp { helo }
        }
        _ => unreachable!("CHECK_TYPES lists every name"),
    };
    Ok(check)
}

/// `request`: a path, given a leading `/` when it has none (as ldirectord's
/// `request="index.html"`).
fn request_path(at: &Locator<'_>, v: &Spanned<Value>, key: &str) -> Result<String, ConfigError> {
    let path = at.string(v, key)?;
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(at.error(v.span().start, key, format!("'{path}' must not contain spaces or control characters")));
    }
    if path.contains("://") {
        return Err(at.error(v.span().start, key, format!("'{path}' is a URL: write the path only, and the host as virtualhost")));
    }
    Ok(if path.starts_with('/') { path.to_owned() } else { format!("/{path}") })
}

/// `status`: codes and ranges, `[200, "301-302"]`.
fn status(at: &Locator<'_>, v: &Spanned<Value>, key: &str) -> Result<Vec<(u16, u16)>, ConfigError> {
    let Some(items) = v.get_ref().as_array() else {
        return Err(at.wrong_type(v, key, "a list of status codes, like [\"200-299\"]"));
    };
    if items.is_empty() {
        return Err(at.error(v.span().start, key, "list at least one status code"));
    }
    let code = |text: &str| text.trim().parse::<u16>().ok().filter(|c| (100..=599).contains(c));
    items
        .iter()
        .map(|item| {
            let range = match item {
                Value::Integer(n) => u16::try_from(*n).ok().filter(|c| (100..=599).contains(c)).map(|c| (c, c)),
                Value::String(s) => match s.split_once('-') {
                    None => code(s).map(|c| (c, c)),
                    Some((lo, hi)) => code(lo).zip(code(hi)).filter(|(lo, hi)| lo <= hi),
                },
                _ => None,
            };
            range.ok_or_else(|| {
                at.error(v.span().start, key, format!("{item} is not a status code or range: write codes 100..=599 as 200 or \"200-299\""))
            })
        })
        .collect()
}

/// `record`: a type's name (any case) or its number.
fn dns_record(at: &Locator<'_>, v: &Spanned<Value>, key: &str) -> Result<u16, ConfigError> {
    let record = match v.get_ref() {
        Value::Integer(n) => u16::try_from(*n).ok().filter(|n| *n != 0),
        Value::String(s) => DNS_RECORDS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|(_, n)| *n)
            .or_else(|| s.parse::<u16>().ok().filter(|n| *n != 0)),
        _ => None,
    };
    record.ok_or_else(|| {
        let names: Vec<&str> = DNS_RECORDS.iter().map(|(n, _)| *n).collect();
        at.error(v.span().start, key, format!("{} is not a record type: use {} or a type number (1..=65535)", v.get_ref(), names.join(", ")))
    })
}

/// A service's health keys as written.
pub(super) struct HealthKeys<'a> {
    pub quiescent: Option<&'a Spanned<Value>>,
    pub fallback: Option<&'a Spanned<Value>>,
    pub quorum: Option<&'a Spanned<Value>>,
    pub quorum_up: Option<&'a Spanned<Value>>,
    pub quorum_down: Option<&'a Spanned<Value>>,
    pub notify_up: Option<&'a Spanned<Value>>,
    pub notify_down: Option<&'a Spanned<Value>>,
}

/// Validates a service's health keys against its port, default forwarding
/// method and reals.
pub(super) fn health(at: &Locator<'_>, prefix: &str, keys: &HealthKeys<'_>, vip: VirtualAddr, default_forward: Forward, reals: &[Real]) -> Result<Health, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    let mut health = Health::default();
    if let Some(v) = keys.quiescent {
        health.quiescent = at.boolean(v, &key("quiescent"))?;
    }
    if let Some(v) = keys.fallback {
        health.fallback = Some(fallback(at, &key("fallback"), v, vip, default_forward, reals)?);
    }
    if let Some(v) = keys.quorum {
        // A quorum above the reals' total weight is allowed, as keepalived
        // allows it: draining reals (weight 0) may lose the quorum on
        // purpose, and an edit must not be refused for it.
        let n = v.get_ref().as_integer().ok_or_else(|| at.wrong_type(v, &key("quorum"), "an integer"))?;
        health.quorum = u32::try_from(n)
            .map_err(|_| at.error(v.span().start, key("quorum"), format!("{n} is out of range 0..={}", u32::MAX)))?;
    }
    let command = |v: Option<&Spanned<Value>>, k: &str| v.map(|v| at.text(v, &key(k)).map(str::to_owned)).transpose();
    health.quorum_up = command(keys.quorum_up, "quorum_up")?;
    health.quorum_down = command(keys.quorum_down, "quorum_down")?;
    health.notify_up = command(keys.notify_up, "notify_up")?;
    health.notify_down = command(keys.notify_down, "notify_down")?;
    Ok(health)
}

/// `fallback`: `"ip[:port] [gate|masq|ipip]"` (ldirectord's form) or
/// `{ address = "ip[:port]", forward = "nat" }`.
fn fallback(at: &Locator<'_>, key: &str, v: &Spanned<Value>, vip: VirtualAddr, default_forward: Forward, reals: &[Real]) -> Result<Real, ConfigError> {
    let vport = vip.port;
    let here = |m: String| at.error(v.span().start, key, m);
    let forward_named = |name: &str| {
        Forward::parse(name).ok_or_else(|| here(format!("'{name}' is not a forwarding method: use nat, dr or tun (masq, gate, ipip)")))
    };
    let (address, forward) = match v.get_ref() {
        Value::String(s) => {
            let mut words = s.split_whitespace();
            let address = words.next().ok_or_else(|| here("must not be empty".into()))?;
            let forward = words.next().map(forward_named).transpose()?;
            if let Some(extra) = words.next() {
                return Err(here(format!("unexpected '{extra}': write \"ip:port [gate|masq|ipip]\"")));
            }
            (address.to_owned(), forward)
        }
        Value::Table(t) => {
            if let Some(unknown) = t.keys().find(|k| !matches!(k.as_str(), "address" | "forward")) {
                return Err(here(format!("unknown key '{unknown}': a fallback has address and forward")));
            }
            let address = match t.get("address") {
                Some(Value::String(a)) => a.clone(),
                Some(other) => return Err(here(format!("address: expected a string, found {} {other}", other.type_str()))),
                None => return Err(here("a fallback table needs an address".into())),
            };
            let forward = match t.get("forward") {
                None => None,
                Some(Value::String(f)) => Some(forward_named(f)?),
                Some(other) => return Err(here(format!("forward: expected a string, found {} {other}", other.type_str()))),
            };
            (address, forward)
        }
        _ => return Err(at.wrong_type(v, key, "\"ip:port [gate|masq|ipip]\" or { address = \"ip:port\", forward = \"nat\" }")),
    };
    let (addr, port) = parse_endpoint(&address, Some(vport)).map_err(&here)?;
    same_family(vip.addr, addr).map_err(&here)?;
    let forward = forward.unwrap_or(default_forward);
    if forward != Forward::Nat && port != vport {
        return Err(here(format!("port {port} differs from the virtual port {vport}: only nat can map ports")));
    }
    if reals.iter().any(|r| (r.addr, r.port) == (addr, port)) {
        return Err(here(format!("{} is one of the service's reals: the fallback serves only while they are all down", Endpoint(addr, port))));
    }
    Ok(Real { addr, port, weight: 1, forward, u_threshold: 0, l_threshold: 0, check: Check::default() })
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    use super::super::{Forward, HttpMethod, parse};
    use super::*;

    const HEAD: &str = "[director]\ninterfaces = [\"e\"]\n";

    fn service(body: &str) -> super::super::Service {
        let text = format!("{HEAD}[[virtual]]\naddress = \"10.0.0.1:80\"\n{body}");
        parse("t.toml", &text).unwrap_or_else(|e| panic!("{e}\n{text}")).services.remove(0)
    }

    fn http(check: &Check) -> &HttpCheck {
        match &check.kind {
            CheckKind::Http(h) => h,
            other => panic!("not http: {other:?}"),
        }
    }

    #[test]
    fn director_keys() {
        let c = parse("t.toml", &format!("{HEAD}autoreload = true\nmetrics = \"127.0.0.1:9108\"\n")).unwrap();
        assert!(c.autoreload);
        assert_eq!(c.metrics, Some("127.0.0.1:9108".parse::<SocketAddr>().unwrap()));
        let c = parse("t.toml", HEAD).unwrap();
        assert!(!c.autoreload);
        assert_eq!(c.metrics, None);
        let c = parse("t.toml", &format!("{HEAD}metrics = \"[::1]:9108\"\n")).unwrap();
        assert_eq!(c.metrics.map(|m| m.port()), Some(9108));
    }

    #[test]
    fn no_check_table_is_none_and_off_is_none() {
        let s = service("[[virtual.real]]\naddress = \"10.0.1.1\"\n");
        assert_eq!(s.check, Check::default());
        assert_eq!(s.reals[0].check, Check::default());
        assert_eq!(s.health, Health::default());
        let s = service("[virtual.check]\ntype = \"off\"\ncheck_interval = 2\n");
        assert_eq!(s.check.kind, CheckKind::None);
        assert_eq!(s.check.interval, Duration::from_secs(2));
    }

    #[test]
    fn an_http_check_with_every_key() {
        let s = service(concat!(
            "[virtual.check]\ntype = \"https\"\ncheck_interval = 1.5\ncheck_timeout = 3\nwarmup = 0.25\n",
            "failure_count = 3\nrise = 2\nport = 8443\nmethod = \"head\"\nrequest = \"health\"\n",
            "receive = 'It (W|w)orks!'\nvirtualhost = \"www.example.com\"\nstatus = [200, \"301-302\"]\n",
            "[[virtual.real]]\naddress = \"10.0.1.1\"\n",
        ));
        let c = &s.check;
        assert_eq!((c.interval, c.timeout, c.warmup), (Duration::from_millis(1500), Duration::from_secs(3), Duration::from_millis(250)));
        assert_eq!((c.failure_count, c.rise, c.port), (3, 2, Some(8443)));
        assert_eq!(http(c), &HttpCheck {
            tls: true,
            method: HttpMethod::Head,
            request: "/health".into(),
            receive: Some("It (W|w)orks!".into()),
            virtualhost: Some("www.example.com".into()),
            status: vec![(200, 200), (301, 302)],
        });
        // A real without its own table is checked as the service says.
        assert_eq!(&s.reals[0].check, c);
        // The defaults of an http check.
        let s = service("[virtual.check]\ntype = \"http\"\n");
        assert_eq!(http(&s.check), &HttpCheck {
            tls: false,
            method: HttpMethod::Get,
            request: "/".into(),
            receive: None,
            virtualhost: None,
            status: vec![(200, 299)],
        });
        assert_eq!((s.check.interval, s.check.timeout, s.check.failure_count, s.check.rise), (Duration::from_secs(10), Duration::from_secs(5), 1, 1));
    }

    #[test]
    fn real_tables_override_key_by_key() {
        let s = service(concat!(
            "[virtual.check]\ntype = \"http\"\ncheck_interval = 2\nport = 8080\nreceive = \"OK\"\nvirtualhost = \"a.example\"\n",
            "[[virtual.real]]\naddress = \"10.0.1.1\"\n[virtual.real.check]\nreceive = \"ready\"\ncheck_timeout = 1\n",
            "[[virtual.real]]\naddress = \"10.0.1.2\"\n[virtual.real.check]\ntype = \"connect\"\nsend = \"PING\\r\\n\"\n",
            "[[virtual.real]]\naddress = \"10.0.1.3\"\n[virtual.real.check]\ntype = \"http\"\nrequest = \"/x\"\n",
            "[[virtual.real]]\naddress = \"10.0.1.4\"\n[virtual.real.check]\ntype = \"https\"\n",
        ));
        let [a, b, c, d] = [&s.reals[0].check, &s.reals[1].check, &s.reals[2].check, &s.reals[3].check];
        // Only what the real says changes.
        assert_eq!(http(a).receive.as_deref(), Some("ready"));
        assert_eq!(http(a).virtualhost.as_deref(), Some("a.example"));
        assert_eq!((a.interval, a.timeout, a.port), (Duration::from_secs(2), Duration::from_secs(1), Some(8080)));
        // Another type: timing and port carry over, the http keys do not.
        assert_eq!(b.kind, CheckKind::Connect { send: Some("PING\r\n".into()), expect: None });
        assert_eq!((b.interval, b.port), (Duration::from_secs(2), Some(8080)));
        // The same type named again keeps the service's keys.
        assert_eq!(http(c).receive.as_deref(), Some("OK"));
        assert_eq!(http(c).request, "/x");
        // http to https is a change of type: back to the defaults.
        assert_eq!(http(d), &HttpCheck { tls: true, method: HttpMethod::Get, request: "/".into(), receive: None, virtualhost: None, status: vec![(200, 299)] });
        assert_eq!(s.check.port, Some(8080));
    }

    #[test]
    fn the_other_check_types() {
        let kind = |body: &str| service(&format!("[virtual.check]\n{body}")).check.kind;
        assert_eq!(kind("type = \"ping\""), CheckKind::Ping);
        assert_eq!(kind("type = \"connect\""), CheckKind::Connect { send: None, expect: None });
        assert_eq!(kind("type = \"connect\"\nsend = \"\"\nexpect = \"^\\\\+OK\""), CheckKind::Connect { send: Some(String::new()), expect: Some("^\\+OK".into()) });
        assert_eq!(kind("type = \"external\"\ncommand = \"/bin/true\""), CheckKind::External { command: "/bin/true".into(), dynamic_weight: false });
        assert_eq!(kind("type = \"external\"\ncommand = \"check.sh\"\ndynamic_weight = true"), CheckKind::External { command: "check.sh".into(), dynamic_weight: true });
        assert_eq!(kind("type = \"dns\""), CheckKind::Dns { name: ".".into(), record: 6 });
        assert_eq!(kind("type = \"dns\"\nname = \"example.com\"\nrecord = \"aaaa\""), CheckKind::Dns { name: "example.com".into(), record: 28 });
        assert_eq!(kind("type = \"dns\"\nrecord = 255"), CheckKind::Dns { name: ".".into(), record: 255 });
        assert_eq!(kind("type = \"dns\"\nrecord = \"257\""), CheckKind::Dns { name: ".".into(), record: 257 });
        assert_eq!(kind("type = \"smtp\""), CheckKind::Smtp { helo: "localhost".into() });
        assert_eq!(kind("type = \"smtp\"\nhelo = \"lb.example\""), CheckKind::Smtp { helo: "lb.example".into() });
        for (name, n) in DNS_RECORDS {
            assert_eq!(dns_record_name(n), Some(name));
        }
        assert_eq!(dns_record_name(255), None);
    }

    #[test]
    fn health_keys() {
        let s = service(concat!(
            "forward = \"nat\"\nquiescent = false\nfallback = \"127.0.0.1:8080\"\nquorum = 3\n",
            "quorum_up = \"up.sh\"\nquorum_down = \"down.sh\"\nnotify_up = \"logger up\"\nnotify_down = \"logger down\"\n",
            "[[virtual.real]]\naddress = \"10.0.1.1\"\nweight = 2\n[[virtual.real]]\naddress = \"10.0.1.2\"\n",
        ));
        let h = &s.health;
        assert!(!h.quiescent);
        let f = h.fallback.as_ref().unwrap();
        // The service's method, and nat may map the port.
        assert_eq!((f.addr, f.port, f.forward, f.weight), (IpAddr::from(Ipv4Addr::LOCALHOST), 8080, Forward::Nat, 1));
        assert_eq!(f.check, Check::default());
        assert_eq!(h.quorum, 3);
        assert_eq!((h.quorum_up.as_deref(), h.quorum_down.as_deref()), (Some("up.sh"), Some("down.sh")));
        assert_eq!((h.notify_up.as_deref(), h.notify_down.as_deref()), (Some("logger up"), Some("logger down")));

        let fallback = |value: &str| service(&format!("forward = \"nat\"\nfallback = {value}\n")).health.fallback.unwrap();
        // ldirectord's form, the port defaulting to the VIP's.
        let f = fallback("\"127.0.0.1 gate\"");
        assert_eq!((f.port, f.forward), (80, Forward::Dr));
        let f = fallback("\"127.0.0.1:80 ipip\"");
        assert_eq!((f.port, f.forward), (80, Forward::Tun));
        let f = fallback("{ address = \"10.9.9.9:81\" }");
        assert_eq!((f.addr, f.port, f.forward), (IpAddr::from(Ipv4Addr::new(10, 9, 9, 9)), 81, Forward::Nat));
        let f = fallback("{ address = \"10.9.9.9\", forward = \"dr\" }");
        assert_eq!((f.port, f.forward), (80, Forward::Dr));
        // No reals: quorum 0 is still fine.
        assert_eq!(service("quorum = 0\n").health.quorum, 0);
    }
}
