//! Client-side traffic, always from sockets created inside a namespace
//! (normally the lab's client). Every operation is bounded: 2 s connect and
//! read/write timeouts, a fixed number of requests and an overall deadline.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::netns::Netns;

pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Set (e.g. by a SIGINT handler) to make running loads stop early.
pub static STOP: AtomicBool = AtomicBool::new(false);

pub fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

fn addr(a: &str) -> Result<SocketAddr> {
    a.to_socket_addrs()
        .with_context(|| format!("bad address {a:?}"))?
        .next()
        .with_context(|| format!("no address for {a:?}"))
}

/// The next source port for a client connection: outside the kernel's
/// ephemeral range, and never the same twice in a test process. A director
/// keeps the entry of a closed connection for a while (as IPVS does, and a
/// DR director cannot tell a client's port reuse from a late segment), so a
/// client that reused a port could meet its old real instead of the
/// scheduler's pick.
fn next_source_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    (10_000 + NEXT.fetch_add(1, Ordering::Relaxed) % 22_000) as u16
}

/// The wildcard address of `addr`'s family, to bind a client socket to.
fn unspecified(addr: SocketAddr) -> std::net::IpAddr {
    match addr {
        SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    }
}

fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let s = connect_from_fresh_port(addr).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Sends one GET and reads one response (by Content-Length); returns the
/// trimmed body.
fn request(s: &mut TcpStream, host: &str, close: bool) -> Result<String> {
    request_padded(s, host, close, 0)
}

/// As [`request`], with an `X-Pad` header of `pad` bytes: a request that
/// takes several full-sized segments.
fn request_padded(s: &mut TcpStream, host: &str, close: bool, pad: usize) -> Result<String> {
    let pad = if pad == 0 { String::new() } else { format!("X-Pad: {}\r\n", "a".repeat(pad)) };
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: xlvs-tests\r\n{pad}{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    );
    s.write_all(req.as_bytes()).context("send request")?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > 16 * 1024 {
            bail!("response header too large");
        }
        let n = s.read(&mut chunk).context("read response")?;
        if n == 0 {
            bail!(
                "connection closed before a response (got {} bytes)",
                buf.len()
            );
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "unexpected response: {:?}",
            head.lines().next().unwrap_or("")
        );
    }
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .context("response without Content-Length")?;
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).context("read body")?;
        if n == 0 {
            bail!("connection closed in the body");
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Ok(String::from_utf8_lossy(&body).trim().to_string())
}

/// One HTTP GET on a new connection (with `Connection: close`) from
/// namespace `ns` to `addr` (e.g. `10.100.0.100:80`); returns the body, i.e.
/// the name of the real that answered.
pub fn http_get(ns: &Netns, addr_s: &str) -> Result<String> {
    let a = addr(addr_s)?;
    ns.run_in(|| -> Result<String> {
        let mut s = connect(a)?;
        request(&mut s, addr_s, true)
    })?
}

/// As [`http_get`], with `pad` bytes of padding header: the client's
/// segments are as large as its path MTU allows.
pub fn http_get_padded(ns: &Netns, addr_s: &str, pad: usize) -> Result<String> {
    let a = addr(addr_s)?;
    ns.run_in(|| -> Result<String> {
        let mut s = connect(a)?;
        request_padded(&mut s, addr_s, true, pad)
    })?
}

/// `n` sequential HTTP GETs from `ns`, each on a new connection with
/// `Connection: close`. Returns how often each real answered; failures are
/// counted under keys starting with `!` (e.g. `!error: connect ...`).
/// Bounded by `n`, the per-operation timeouts, an overall deadline of
/// 30 s + 1 s per 10 requests and [`STOP`].
pub fn distribution(ns: &Netns, addr_s: &str, n: usize) -> Result<BTreeMap<String, usize>> {
    let a = addr(addr_s)?;
    tally(ns, n, || connect(a).and_then(|mut s| request(&mut s, addr_s, true)))
}

/// Runs `one` up to `n` times inside `ns` and counts its answers, with
/// failures under `!` keys; bounded by an overall deadline of 30 s + 1 s
/// per 10 tries and by [`STOP`].
fn tally(ns: &Netns, n: usize, one: impl Fn() -> Result<String> + Send + Sync) -> Result<BTreeMap<String, usize>> {
    ns.run_in(|| {
        let deadline =
            Instant::now() + Duration::from_secs(30) + Duration::from_millis(100 * n as u64);
        let mut counts = BTreeMap::new();
        for i in 0..n {
            if stopped() {
                *counts.entry("!stopped".to_string()).or_default() += n - i;
                break;
            }
            if Instant::now() > deadline {
                *counts.entry("!deadline".to_string()).or_default() += n - i;
                break;
            }
            let key = match one() {
                Ok(name) => name,
                Err(e) => format!("!error: {:#}", e),
            };
            *counts.entry(key).or_default() += 1;
        }
        counts
    })
}

/// One UDP query of `size` bytes from `ns` to `addr`, which the sender's
/// kernel fragments when it exceeds the path MTU; returns the trimmed reply.
/// A reply means one real got every fragment and reassembled them.
pub fn udp_query_sized(ns: &Netns, addr_s: &str, size: usize) -> Result<String> {
    let a = addr(addr_s)?;
    ns.run_in(|| -> Result<String> {
        let s = UdpSocket::bind(SocketAddr::new(unspecified(a), 0))?;
        query_with(&s, a, &vec![b'q'; size])
    })?
}

/// One UDP query from `ns` to `addr`; returns the trimmed reply (the real's
/// name).
pub fn udp_query(ns: &Netns, addr_s: &str) -> Result<String> {
    let a = addr(addr_s)?;
    ns.run_in(|| -> Result<String> {
        let s = UdpSocket::bind(SocketAddr::new(unspecified(a), 0))?;
        query_on(&s, a)
    })?
}

fn query_on(s: &UdpSocket, a: SocketAddr) -> Result<String> {
    query_with(s, a, b"who are you?\n")
}

fn query_with(s: &UdpSocket, a: SocketAddr, query: &[u8]) -> Result<String> {
    s.set_read_timeout(Some(TIMEOUT))?;
    s.send_to(query, a)
        .with_context(|| format!("send to {a}"))?;
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (n, from) = s
            .recv_from(&mut buf)
            .with_context(|| format!("no UDP reply from {a}"))?;
        if from == a {
            return Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string());
        }
        // A reply from an unexpected source (e.g. an un-NATed real) does
        // not count.
        if Instant::now() > deadline {
            bail!("only replies from wrong sources (last {from}) for {a}");
        }
    }
}

/// `n` UDP queries from `ns`, each from a new socket (new source port).
/// Same result convention and bounds as [`distribution`].
pub fn udp_distribution(ns: &Netns, addr_s: &str, n: usize) -> Result<BTreeMap<String, usize>> {
    let a = addr(addr_s)?;
    tally(ns, n, || {
        UdpSocket::bind(SocketAddr::new(unspecified(a), 0))
            .map_err(anyhow::Error::from)
            .and_then(|s| query_on(&s, a))
    })
}

/// A persistent HTTP/1.1 connection sending repeated keep-alive requests.
pub struct KeepAlive {
    stream: TcpStream,
    host: String,
}

impl KeepAlive {
    /// Connects from namespace `ns` to `addr`.
    pub fn connect(ns: &Netns, addr_s: &str) -> Result<KeepAlive> {
        let a = addr(addr_s)?;
        let stream = ns.run_in(|| connect(a))??;
        Ok(KeepAlive {
            stream,
            host: addr_s.to_string(),
        })
    }

    /// One request on the connection; returns the real's name.
    pub fn request(&mut self) -> Result<String> {
        request(&mut self.stream, &self.host, false)
    }

    /// `n` requests on the connection; returns the names in order.
    pub fn requests(&mut self, n: usize) -> Result<Vec<String>> {
        (0..n).map(|_| self.request()).collect()
    }

    /// The client-side address of the connection.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.stream.local_addr()?)
    }
}

/// Total of the non-error entries of a distribution.
pub fn answered(d: &BTreeMap<String, usize>) -> usize {
    d.iter()
        .filter(|(k, _)| !k.starts_with('!'))
        .map(|(_, v)| v)
        .sum()
}

/// A whole HTTP response, as [`http_fetch`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    /// The status code (`200`).
    pub status: u16,
    /// The header block, without the status line.
    pub headers: String,
    /// The body, untrimmed.
    pub body: String,
}

/// The most [`http_fetch`] reads of one response.
const MAX_FETCH: usize = 8 * 1024 * 1024;

/// `GET path` with `Host: host` and `Connection: close` on a new connection
/// from namespace `ns` to `addr`; returns the status, headers and body of
/// any status (unlike [`http_get`], which wants a 200 from a realserver).
/// The body ends at its Content-Length, or when the server closes. Bounded
/// by [`TIMEOUT`] per operation, 10 s overall and 8 MiB.
pub fn http_fetch(ns: &Netns, addr_s: &str, path: &str, host: &str) -> Result<HttpReply> {
    let a = addr(addr_s)?;
    ns.run_in(|| -> Result<HttpReply> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = connect(a)?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: xlvs-tests\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).context("send request")?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let mut want: Option<usize> = None;
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) {
                if want.is_none() {
                    let head = String::from_utf8_lossy(&buf[..end]);
                    want = head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                            .map(|n| end + n)
                    });
                }
                if want.is_some_and(|w| buf.len() >= w) {
                    break;
                }
            }
            if buf.len() > MAX_FETCH {
                bail!("response from {a} larger than {MAX_FETCH} bytes");
            }
            if Instant::now() > deadline {
                bail!("response from {a} not complete after 10 s");
            }
            let n = s.read(&mut chunk).with_context(|| format!("read from {a}"))?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let end = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 4)
            .with_context(|| format!("no complete response header from {a} ({} bytes)", buf.len()))?;
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let (status_line, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        let mut body = buf[end..].to_vec();
        if let Some(w) = want {
            body.truncate(w - end);
        }
        Ok(HttpReply {
            status,
            headers: headers.trim_end().to_string(),
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    })?
}

/// Connects from a source port of [`next_source_port`] (skipping ports in
/// use).
fn connect_from_fresh_port(addr: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let mut last = None;
    for _ in 0..100 {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        let local = SocketAddr::new(unspecified(addr), next_source_port());
        if let Err(e) = socket.bind(&SockAddr::from(local)) {
            last = Some(e);
            continue;
        }
        socket.connect_timeout(&SockAddr::from(addr), TIMEOUT)?;
        return Ok(socket.into());
    }
    Err(last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AddrInUse)))
}
