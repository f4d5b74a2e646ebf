//! The validated model of health checking: how each real is checked, and
//! what a service does when its reals go down (quiescent, fallback, quorum,
//! notifications). Defaults follow ldirectord's where it has one.

use std::time::Duration;

/// ldirectord's `checkinterval` default.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// ldirectord's `checktimeout` default.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// ldirectord's `failurecount` default.
pub const DEFAULT_FAILURE_COUNT: u32 = 1;
/// keepalived's DNS_CHECK default query type (SOA) and name (the root).
pub const DEFAULT_DNS_TYPE: u16 = 6;
pub const DEFAULT_DNS_NAME: &str = ".";
/// The name an SMTP check greets with.
pub const DEFAULT_HELO: &str = "localhost";

/// How one real is checked: a service's `[virtual.check]` with the real's
/// own `[virtual.real.check]` keys laid over it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub kind: CheckKind,
    /// `check_interval`: from the start of one check to the start of the next.
    pub interval: Duration,
    /// `check_timeout`: a check still running after this has failed.
    pub timeout: Duration,
    /// `failure_count`: consecutive failures before an up real goes down.
    pub failure_count: u32,
    /// `rise`: consecutive successes before a down real comes back.
    pub rise: u32,
    /// `warmup`: how long after the real is first checked its results start
    /// to count (a real starts up).
    pub warmup: Duration,
    /// `port`: the port checked, when not the real's own.
    pub port: Option<u16>,
}

impl Default for Check {
    fn default() -> Self {
        Self {
            kind: CheckKind::None,
            interval: DEFAULT_CHECK_INTERVAL,
            timeout: DEFAULT_CHECK_TIMEOUT,
            failure_count: DEFAULT_FAILURE_COUNT,
            rise: 1,
            warmup: Duration::ZERO,
            port: None,
        }
    }
}

/// `type` of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// `none` / `off`: always up. A service without `[virtual.check]` has it.
    None,
    /// `connect`: a TCP connect; for a UDP service, a datagram (`send`, empty
    /// when absent) answered by any reply, or one matching `expect`.
    Connect { send: Option<String>, expect: Option<String> },
    /// `http` / `https`.
    Http(HttpCheck),
    /// `external`: `command` run by `/bin/sh` with ldirectord's arguments
    /// (VIP, VIP port, real address, real port); exit 0 is up. With
    /// `dynamic_weight`, as keepalived's MISC_CHECK `misc_dynamic`, an exit
    /// code of 2..=255 is up with weight `code - 2`.
    External { command: String, dynamic_weight: bool },
    /// `ping`: an ICMP echo answered.
    Ping,
    /// `dns`: a query for `name` of type `record` (a DNS TYPE number)
    /// answered with RCODE NOERROR.
    Dns { name: String, record: u16 },
    /// `smtp`: a 220 banner, then `HELO helo` answered with 250.
    Smtp { helo: String },
}

impl CheckKind {
    /// The name of the `type` key.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Connect { .. } => "connect",
            Self::Http(h) if h.tls => "https",
            Self::Http(_) => "http",
            Self::External { .. } => "external",
            Self::Ping => "ping",
            Self::Dns { .. } => "dns",
            Self::Smtp { .. } => "smtp",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpMethod {
    Get,
    Head,
}

/// An `http` or `https` check (ldirectord's negotiate, keepalived's
/// HTTP_GET / SSL_GET).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCheck {
    pub tls: bool,
    /// `method`: GET (default) or HEAD.
    pub method: HttpMethod,
    /// `request`: the path, `/` when absent (a path without a leading `/`, as
    /// ldirectord's `request="index.html"`, gets one).
    pub request: String,
    /// `receive`: a regular expression the body must match (already checked
    /// to compile).
    pub receive: Option<String>,
    /// `virtualhost`: the Host header, and the SNI name for https.
    pub virtualhost: Option<String>,
    /// `status`: the accepted status codes as inclusive ranges; 200-299 when
    /// absent.
    pub status: Vec<(u16, u16)>,
}

/// What a service does about its reals' health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// `quiescent`: a down real keeps its place with weight 0 (true, the
    /// default, as ldirectord), or is removed with its connections (false).
    pub quiescent: bool,
    /// `fallback`: the sorry server, in the service only while every real is
    /// down. Its weight is 1.
    pub fallback: Option<super::Real>,
    /// `quorum`: the sum of live weights below which the service has lost
    /// its quorum (0: no quorum).
    pub quorum: u32,
    /// `quorum_up` / `quorum_down`: commands run when the quorum is regained
    /// or lost.
    pub quorum_up: Option<String>,
    pub quorum_down: Option<String>,
    /// `notify_up` / `notify_down`: commands run when a real comes up or goes
    /// down, with the real and the reason.
    pub notify_up: Option<String>,
    pub notify_down: Option<String>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            quiescent: true,
            fallback: None,
            quorum: 0,
            quorum_up: None,
            quorum_down: None,
            notify_up: None,
            notify_down: None,
        }
    }
}
