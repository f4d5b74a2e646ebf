//! Health checking of the reals: one checker per `type` of check (a module
//! each), the per-real [`Monitor`] that runs a check every interval and turns
//! its results into up/down [`Event`]s with ldirectord's `failurecount` and a
//! `rise`, and the notify/quorum hooks.
//!
//! [`check_once`] is one run of one check. It never panics on a server's
//! reply: whatever a real answers is either up, up with a weight, or down
//! with a reason an operator can act on.

use std::{
    fmt, io,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use crate::config::{Check, CheckKind, Protocol, VirtualAddr};

mod connect;
mod dns;
mod external;
mod hook;
mod http;
mod monitor;
mod ping;
mod smtp;

pub use hook::run_hook;
pub use monitor::{Event, Monitor, Status};

/// What a check is aimed at: one real of one virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub protocol: Protocol,
    pub vip: VirtualAddr,
    pub addr: IpAddr,
    pub port: u16,
}

impl Target {
    /// The address a check connects to: the real's, on the check's `port`
    /// when it has one.
    #[must_use]
    pub fn check_addr(&self, check: &Check) -> SocketAddr {
        SocketAddr::new(self.addr, check.port.unwrap_or(self.port))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.protocol.label(), self.vip, crate::addr::Endpoint(self.addr, self.port))
    }
}

/// Why a check failed: the real is down for this reason. The messages are
/// what an operator reads in the log, `xlvs list --health` and a
/// `notify_down` hook.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("connect to {addr}: {}", io_text(.source))]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// Any other socket error: `op` says what we were doing ("send to",
    /// "receive from", ...).
    #[error("{op} {addr}: {}", io_text(.source))]
    Io {
        op: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("timed out after {}", format_duration(*.0))]
    TimedOut(Duration),
    #[error("status {status} not in {accepted}")]
    Status { status: u16, accepted: String },
    #[error("body does not match '{0}'")]
    Body(String),
    #[error("reply does not match '{0}'")]
    Reply(String),
    /// The config layer compiles every pattern first, so this is a bug
    /// there rather than a real that is down; it still must not panic.
    #[error("invalid regular expression '{pattern}': {source}")]
    Regex {
        pattern: String,
        #[source]
        source: regex::Error,
    },
    #[error("tls handshake with {addr}: {}", io_text(.source))]
    Tls {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// A protocol-level failure of an http, dns, smtp or ping exchange.
    #[error("{kind} {addr}: {message}")]
    Protocol { kind: &'static str, addr: SocketAddr, message: String },
    /// An external command ended other than with success.
    #[error("{0}")]
    Exit(String),
    #[error("cannot run /bin/sh: {}", io_text(.0))]
    Spawn(#[source] io::Error),
}

/// Runs `check` once against `target`, bounded by `check.timeout`.
///
/// `Ok(None)` is up, `Ok(Some(weight))` is up with a weight the check chose
/// (an external check with `dynamic_weight`), and `Err` is down.
///
/// # Errors
/// The reason the real is down: refused, timed out, a wrong status, body,
/// reply or exit code.
pub async fn check_once(target: &Target, check: &Check) -> Result<Option<u32>, CheckError> {
    let addr = target.check_addr(check);
    let run = async {
        match &check.kind {
            CheckKind::None => Ok(None),
            CheckKind::Connect { send, expect } => match target.protocol {
                Protocol::Tcp => connect::tcp(addr).await.map(|()| None),
                Protocol::Udp => connect::udp(addr, send.as_deref(), expect.as_deref())
                    .await
                    .map(|()| None),
            },
            CheckKind::Http(http) => http::check(addr, http).await.map(|()| None),
            CheckKind::External { command, dynamic_weight } => {
                external::check(target, addr.port(), command, *dynamic_weight).await
            }
            CheckKind::Ping => ping::check(target.addr).await.map(|()| None),
            CheckKind::Dns { name, record } => dns::check(addr, name, *record).await.map(|()| None),
            CheckKind::Smtp { helo } => smtp::check(addr, helo).await.map(|()| None),
        }
    };
    // Dropping the unfinished check closes its sockets and kills its
    // command, so a timed-out check leaves nothing behind.
    tokio::time::timeout(check.timeout, run)
        .await
        .unwrap_or(Err(CheckError::TimedOut(check.timeout)))
}

/// Compiles a `receive`/`expect` pattern. Patterns match bytes, since a
/// real's reply need not be UTF-8.
fn compile(pattern: &str) -> Result<regex::bytes::Regex, CheckError> {
    regex::bytes::Regex::new(pattern)
        .map_err(|source| CheckError::Regex { pattern: pattern.to_owned(), source })
}

/// 64 unpredictable bits, for a DNS query id or an ICMP echo identifier
/// that a stray or spoofed reply cannot match. Unpredictability is all they
/// need, not cryptographic strength, so std's randomly keyed hasher serves
/// without another dependency.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now())
}

/// An I/O error as a short lowercase phrase ("connection refused"), without
/// std's "(os error 111)".
fn io_text(e: &io::Error) -> String {
    use io::ErrorKind as K;
    let text = match e.kind() {
        K::ConnectionRefused => "connection refused",
        K::ConnectionReset => "connection reset",
        K::ConnectionAborted => "connection aborted",
        K::HostUnreachable => "host unreachable",
        K::NetworkUnreachable => "network unreachable",
        K::AddrNotAvailable => "address not available",
        K::PermissionDenied => "permission denied",
        K::BrokenPipe => "broken pipe",
        K::UnexpectedEof => "connection closed",
        K::TimedOut => "timed out",
        K::NotFound => "not found",
        _ => return e.to_string(),
    };
    text.to_owned()
}

/// "3s", "1.5s" or "200ms", as an operator writes a timeout.
fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// Shared helpers of the checkers' tests: targets and checks on loopback.
#[cfg(test)]
pub(crate) mod testutil {
    use std::net::Ipv4Addr;

    use super::*;

    pub fn target(protocol: Protocol, port: u16) -> Target {
        Target {
            protocol,
            vip: VirtualAddr::single(Ipv4Addr::new(10, 100, 0, 100), 80),
            addr: Ipv4Addr::LOCALHOST.into(),
            port,
        }
    }

    pub fn make_check(kind: CheckKind, timeout: Duration) -> Check {
        Check { kind, timeout, ..Check::default() }
    }

    /// A port on which nothing listens (bound, then closed).
    pub fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("local addr").port()
    }

    /// A UDP port on which nothing listens (bound, then closed).
    pub fn closed_udp_port() -> u16 {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.local_addr().expect("local addr").port()
    }

    /// The error of a check that must fail.
    pub async fn down(target: &Target, check: &Check) -> CheckError {
        match check_once(target, check).await {
            Ok(w) => panic!("{} check reported up ({w:?}), expected down", check.kind.name()),
            Err(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[tokio::test]
    async fn none_is_always_up() {
        let t = target(Protocol::Tcp, closed_port());
        assert_eq!(check_once(&t, &make_check(CheckKind::None, Duration::from_secs(1))).await.ok(), Some(None));
    }

    #[test]
    fn durations_read_as_written() {
        assert_eq!(format_duration(Duration::from_secs(3)), "3s");
        assert_eq!(format_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn io_errors_read_short() {
        let e = io::Error::from(io::ErrorKind::ConnectionRefused);
        let addr: SocketAddr = "10.0.1.11:80".parse().expect("addr");
        assert_eq!(
            CheckError::Connect { addr, source: e }.to_string(),
            "connect to 10.0.1.11:80: connection refused"
        );
    }

    #[test]
    fn the_check_port_overrides_the_reals() {
        let t = target(Protocol::Tcp, 8080);
        let mut c = Check::default();
        assert_eq!(t.check_addr(&c).port(), 8080);
        c.port = Some(81);
        assert_eq!(t.check_addr(&c).port(), 81);
    }
}
