//! `realserver`: a tiny backend that answers every request with its own name.
//!
//! ```text
//! realserver --name real1 --tcp 0.0.0.0:8080 --tcp 0.0.0.0:80 --udp 0.0.0.0:8080
//! ```
//!
//! * TCP: minimal HTTP/1.1 with keep-alive. Every request (everything up to
//!   `\r\n\r\n`; request bodies are not supported) is answered with
//!   `HTTP/1.1 200 OK\r\nContent-Length: N\r\n\r\n<name>\n`. The connection is
//!   closed after the response if the request says `Connection: close` (or is
//!   HTTP/1.0 without `Connection: keep-alive`).
//! * UDP: every datagram is answered with `<name>\n`.
//! * `--page PATH=TEXT` (repeatable): a request for exactly PATH is answered
//!   with `TEXT\n` instead of the name (e.g. `--page '/index.html=It Works!'`
//!   for an ldirectord-style check). With `--page-host HOST`, these pages are
//!   served only to requests whose `Host` header is HOST (case-insensitive,
//!   port ignored); others get `404 Not Found` with body `wrong host\n`.
//!   Every other path still answers with the name.
//!
//! Once every socket is bound it prints `READY` on stdout (the test harness
//! waits for that line) and then serves until SIGTERM/SIGINT, whose default
//! action ends the process.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

/// Idle connections are dropped after this long so threads do not pile up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Requests (headers) larger than this are refused.
const MAX_REQUEST: usize = 64 * 1024;

struct Args {
    name: String,
    tcp: Vec<SocketAddr>,
    udp: Vec<SocketAddr>,
    pages: Vec<(String, String)>,
    page_host: Option<String>,
}

/// What TCP connections answer besides the name.
struct Pages {
    pages: Vec<(String, String)>,
    host: Option<String>,
}

fn usage() -> &'static str {
    "usage: realserver --name NAME [--tcp ADDR:PORT]... [--udp ADDR:PORT]... [--page PATH=TEXT]... [--page-host HOST]"
}

fn parse_args() -> Result<Args, String> {
    let mut name = None;
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    let mut pages = Vec::new();
    let mut page_host = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (flag, None),
        };
        if flag == "-h" || flag == "--help" {
            println!("{}", usage());
            std::process::exit(0);
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))?,
        };
        let addr = |v: &str| -> Result<SocketAddr, String> {
            v.parse()
                .map_err(|e| format!("bad address {v:?} for {flag}: {e}"))
        };
        match flag.as_str() {
            "--name" => name = Some(value),
            "--tcp" => tcp.push(addr(&value)?),
            "--udp" => udp.push(addr(&value)?),
            "--page" => {
                let (path, text) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--page wants PATH=TEXT, got {value:?}"))?;
                pages.push((path.to_string(), text.to_string()));
            }
            "--page-host" => page_host = Some(value),
            _ => return Err(format!("unknown flag {flag}\n{}", usage())),
        }
    }
    let name = name.ok_or_else(|| format!("--name is required\n{}", usage()))?;
    if tcp.is_empty() && udp.is_empty() {
        return Err(format!(
            "nothing to serve: give --tcp and/or --udp\n{}",
            usage()
        ));
    }
    Ok(Args {
        name,
        tcp,
        udp,
        pages,
        page_host,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("realserver: {e}");
            return ExitCode::from(2);
        }
    };
    let name: &'static str = Box::leak(args.name.into_boxed_str());
    let pages: &'static Pages = Box::leak(Box::new(Pages {
        pages: args.pages,
        host: args.page_host,
    }));

    // Bind everything first so READY means "all sockets are listening".
    let mut listeners = Vec::new();
    for addr in &args.tcp {
        match TcpListener::bind(addr) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                eprintln!("realserver {name}: bind tcp {addr}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let mut udps = Vec::new();
    for addr in &args.udp {
        match UdpSocket::bind(addr) {
            Ok(s) => udps.push(s),
            Err(e) => {
                eprintln!("realserver {name}: bind udp {addr}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }

    let mut threads = Vec::new();
    for l in listeners {
        threads.push(thread::spawn(move || serve_tcp(name, pages, l)));
    }
    for s in udps {
        threads.push(thread::spawn(move || serve_udp(name, s)));
    }

    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "READY");
        let _ = out.flush();
    }

    for t in threads {
        let _ = t.join();
    }
    ExitCode::FAILURE
}

fn serve_tcp(name: &'static str, pages: &'static Pages, listener: TcpListener) {
    loop {
        match listener.accept() {
            Ok((stream, _peer)) => {
                let _ = thread::Builder::new().name("conn".into()).spawn(move || {
                    let _ = handle_conn(name, pages, stream);
                });
            }
            Err(e) => {
                eprintln!("realserver {name}: accept: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn find_header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Whether the connection should be closed after answering this request.
fn wants_close(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines();
    let request_line = lines.next().unwrap_or("");
    let http10 = request_line.trim_end().ends_with("HTTP/1.0");
    let mut close = http10;
    for line in lines {
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("connection")
        {
            for token in v.split(',') {
                let t = token.trim();
                if t.eq_ignore_ascii_case("close") {
                    close = true;
                } else if t.eq_ignore_ascii_case("keep-alive") {
                    close = false;
                }
            }
        }
    }
    close
}

/// The status line and body for one request head: a `--page` if its path
/// matches (and the Host does, with `--page-host`), else the name.
fn answer(name: &str, pages: &Pages, head: &[u8]) -> (&'static str, String) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines();
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    let Some((_, page)) = pages.pages.iter().find(|(p, _)| p == path) else {
        return ("200 OK", format!("{name}\n"));
    };
    if let Some(want) = &pages.host {
        let host = lines.find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("host")
                .then(|| v.trim().to_string())
        });
        let host_name = host.as_deref().map(|h| h.split(':').next().unwrap_or(h));
        if !host_name.is_some_and(|h| h.eq_ignore_ascii_case(want)) {
            return ("404 Not Found", "wrong host\n".to_string());
        }
    }
    ("200 OK", format!("{page}\n"))
}

fn handle_conn(name: &str, pages: &Pages, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        // Serve every complete request already buffered (pipelining).
        while let Some(end) = find_header_end(&buf) {
            let close = wants_close(&buf[..end]);
            let (status, body) = answer(name, pages, &buf[..end]);
            buf.drain(..end);
            let mut resp = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
            if close {
                resp.push_str("Connection: close\r\n");
            }
            resp.push_str("\r\n");
            resp.push_str(&body);
            stream.write_all(resp.as_bytes())?;
            if close {
                let _ = stream.shutdown(std::net::Shutdown::Write);
                // Drain until the peer closes (bounded by the read timeout)
                // so the close is orderly rather than a RST.
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = std::io::BufReader::new(&stream).fill_buf();
                return Ok(());
            }
        }
        if buf.len() > MAX_REQUEST {
            let _ = stream.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return Ok(());
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn serve_udp(name: &'static str, sock: UdpSocket) {
    let reply = format!("{name}\n");
    let mut buf = [0u8; 65536];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((_n, peer)) => {
                if let Err(e) = sock.send_to(reply.as_bytes(), peer) {
                    eprintln!("realserver {name}: udp send to {peer}: {e}");
                }
            }
            Err(e) => {
                eprintln!("realserver {name}: udp recv: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
