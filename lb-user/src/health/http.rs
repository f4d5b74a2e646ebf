//! `http` / `https`: ldirectord's negotiate check, keepalived's `HTTP_GET` and
//! `SSL_GET`. One GET or HEAD of `request` over HTTP/1.1 to the real itself,
//! with `virtualhost` as the Host header (and the TLS server name), an
//! accepted status, and optionally a body matching `receive`.
//!
//! hyper's connection-level client rather than a full client (reqwest): we
//! connect to the real's address ourselves and never resolve, redirect or
//! proxy, which is all a full client would add, at several times the build.
//! Certificates are not verified, as neither ldirectord nor keepalived
//! verify a real's: the real is checked for serving, not for who it is.

use std::{
    error::Error as StdError,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use http_body_util::{BodyExt, Empty};
use hyper::{
    Request,
    body::{Bytes, Incoming},
    client::conn::http1,
    header,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::{
    TlsConnector,
    rustls::{
        self, ClientConfig, DigitallySignedStruct, SignatureScheme,
        client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        crypto::CryptoProvider,
        pki_types::{CertificateDer, ServerName, UnixTime},
    },
};

use super::{CheckError, compile};
use crate::config::{HttpCheck, HttpMethod};

/// How much of a body `receive` is matched against; the rest is not read.
const MAX_BODY: usize = 1 << 20;
/// The accepted statuses when `status` is empty, as keepalived's
/// `status_code` and ldirectord's `is_success`.
const DEFAULT_STATUS: (u16, u16) = (200, 299);
const USER_AGENT: &str = "xlvs health check";

pub(super) async fn check(addr: SocketAddr, http: &HttpCheck) -> Result<(), CheckError> {
    let kind = if http.tls { "https" } else { "http" };
    let fail = |message: String| CheckError::Protocol { kind, addr, message };
    let receive = http.receive.as_deref().map(compile).transpose()?;
    let request = build_request(addr, http).map_err(fail)?;

    let tcp =
        TcpStream::connect(addr).await.map_err(|source| CheckError::Connect { addr, source })?;
    // Nagle would hold the request back for nothing.
    let _ = tcp.set_nodelay(true);
    let (status, body) = if http.tls {
        let connector = TlsConnector::from(tls_config().map_err(fail)?);
        let name = server_name(http.virtualhost.as_deref(), addr.ip());
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|source| CheckError::Tls { addr, source })?;
        exchange(TokioIo::new(tls), request, receive.is_some()).await
    } else {
        exchange(TokioIo::new(tcp), request, receive.is_some()).await
    }
    .map_err(fail)?;

    let accepted: &[(u16, u16)] =
        if http.status.is_empty() { &[DEFAULT_STATUS] } else { &http.status };
    if !accepted.iter().any(|&(lo, hi)| (lo..=hi).contains(&status)) {
        return Err(CheckError::Status { status, accepted: format_ranges(accepted) });
    }
    match receive {
        Some(re) if !re.is_match(&body) => Err(CheckError::Body(re.as_str().to_owned())),
        _ => Ok(()),
    }
}

fn build_request(addr: SocketAddr, http: &HttpCheck) -> Result<Request<Empty<Bytes>>, String> {
    let path = if http.request.starts_with('/') {
        http.request.clone()
    } else {
        format!("/{}", http.request)
    };
    let default_port = if http.tls { 443 } else { 80 };
    let host = match &http.virtualhost {
        Some(vhost) => vhost.clone(),
        None if addr.port() == default_port => addr.ip().to_string(),
        None => addr.to_string(),
    };
    let method = match http.method {
        HttpMethod::Get => hyper::Method::GET,
        HttpMethod::Head => hyper::Method::HEAD,
    };
    Request::builder()
        .method(method)
        .uri(&path)
        .header(header::HOST, &host)
        .header(header::USER_AGENT, USER_AGENT)
        // One request per check: the real should not keep a connection for us.
        .header(header::CONNECTION, "close")
        .body(Empty::new())
        .map_err(|e| format!("request '{path}' with Host '{host}': {e}"))
}

/// Sends `request` on `io` and returns the status and, when `read_body`, up
/// to `MAX_BODY` bytes of the body.
async fn exchange<T>(
    io: T,
    request: Request<Empty<Bytes>>,
    read_body: bool,
) -> Result<(u16, Vec<u8>), String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    let (mut sender, conn) = http1::handshake(io).await.map_err(|e| chain(&e))?;
    let work = async move {
        let response = sender.send_request(request).await.map_err(|e| chain(&e))?;
        let status = response.status().as_u16();
        let body = if read_body { read_capped(response.into_body()).await? } else { Vec::new() };
        Ok((status, body))
    };
    // The connection is driven here rather than in a spawned task, so that
    // a timed-out check drops it, socket and all.
    let mut conn = std::pin::pin!(conn);
    let mut work = std::pin::pin!(work);
    let mut conn_done = false;
    loop {
        tokio::select! {
            result = &mut work => return result,
            result = &mut conn, if !conn_done => {
                conn_done = true;
                result.map_err(|e| chain(&e))?;
            }
        }
    }
}

/// The body's first `MAX_BODY` bytes; a longer body is matched by its
/// start, as ldirectord's LWP `max_size`.
async fn read_capped(mut body: Incoming) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    while data.len() < MAX_BODY {
        let Some(frame) = body.frame().await else { break };
        let frame = frame.map_err(|e| format!("reading the body: {}", chain(&e)))?;
        if let Ok(chunk) = frame.into_data() {
            let room = MAX_BODY - data.len();
            data.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        }
    }
    Ok(data)
}

/// An error and its causes on one line: hyper's top-level messages alone
/// ("error reading a body from connection") hide the reason.
fn chain(e: &dyn StdError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// "200-299", or "200-299,301-302,404" for several ranges.
fn format_ranges(ranges: &[(u16, u16)]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|&(lo, hi)| if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") })
        .collect();
    parts.join(",")
}

/// The TLS server name: the virtual host without any `:port`, or the real's
/// address, for which rustls sends no SNI (RFC 6066 allows only names).
fn server_name(virtualhost: Option<&str>, addr: IpAddr) -> ServerName<'static> {
    virtualhost
        .map(|v| match v.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => host,
            _ => v,
        })
        .and_then(|host| ServerName::try_from(host.to_owned()).ok())
        .unwrap_or(ServerName::IpAddress(addr.into()))
}

/// A client config with the ring provider that accepts any certificate.
/// Built per check (microseconds), so no session is resumed: each check
/// makes a full handshake, as a new client would.
fn tls_config() -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts whatever certificate a real presents. The handshake signature is
/// still checked against it, so the peer does hold the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::{
        io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
        net::TcpListener,
        sync::mpsc,
    };
    use tokio_rustls::{
        TlsAcceptor,
        rustls::{ServerConfig, pki_types::PrivateKeyDer},
    };

    use super::super::{check_once, testutil::*};
    use super::*;
    use crate::config::{Check, CheckKind, Protocol};

    const TIMEOUT: Duration = Duration::from_secs(1);
    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nIt Works!";

    fn http(f: impl FnOnce(&mut HttpCheck)) -> Check {
        let mut h = HttpCheck {
            tls: false,
            method: HttpMethod::Get,
            request: "/".to_owned(),
            receive: None,
            virtualhost: None,
            status: Vec::new(),
        };
        f(&mut h);
        make_check(CheckKind::Http(h), TIMEOUT)
    }

    /// What a test server saw of one request.
    #[derive(Debug)]
    struct Seen {
        head: String,
        sni: Option<String>,
    }

    /// Reads a request head, then answers `response` and closes.
    async fn answer<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, response: &[u8]) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 65_536 {
            match s.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        let _ = s.write_all(response).await;
        let _ = s.shutdown().await;
        String::from_utf8_lossy(&head).into_owned()
    }

    /// An HTTP server answering every request with `response`.
    async fn server(response: impl Into<Vec<u8>>) -> (u16, mpsc::UnboundedReceiver<Seen>) {
        let response: Arc<[u8]> = response.into().into();
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let head = answer(&mut s, &response).await;
                let _ = tx.send(Seen { head, sni: None });
            }
        });
        (port, rx)
    }

    /// An HTTPS server with a self-signed certificate for
    /// `www.example.test`, reporting the SNI name each client sent.
    async fn tls_server(response: &'static str) -> (u16, mpsc::UnboundedReceiver<Seen>) {
        let cert = rcgen::generate_simple_self_signed(vec!["www.example.test".to_owned()])
            .expect("self-signed certificate");
        let key = PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .expect("server config");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let Ok(mut tls) = acceptor.accept(s).await else { continue };
                let sni = tls.get_ref().1.server_name().map(str::to_owned);
                let head = answer(&mut tls, response.as_bytes()).await;
                let _ = tx.send(Seen { head, sni });
            }
        });
        (port, rx)
    }

    #[tokio::test]
    async fn get_up_with_matching_body() {
        let (port, mut seen) = server(OK).await;
        let c = http(|h| {
            h.request = "index.html".to_owned();
            h.receive = Some("It Works!".to_owned());
        });
        assert_eq!(check_once(&target(Protocol::Tcp, port), &c).await.ok(), Some(None));
        let head = seen.recv().await.expect("a request").head;
        assert!(head.starts_with("GET /index.html HTTP/1.1\r\n"), "{head}");
        let host = format!("host: 127.0.0.1:{port}\r\n");
        assert!(head.to_ascii_lowercase().contains(&host), "{head}");
    }

    #[tokio::test]
    async fn wrong_body_is_down() {
        let (port, _seen) = server("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nOops").await;
        let c = http(|h| h.receive = Some("It Works!".to_owned()));
        let e = down(&target(Protocol::Tcp, port), &c).await;
        assert_eq!(e.to_string(), "body does not match 'It Works!'");
    }

    #[tokio::test]
    async fn wrong_status_is_down() {
        let (port, _seen) =
            server("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").await;
        let e = down(&target(Protocol::Tcp, port), &http(|_| {})).await;
        assert_eq!(e.to_string(), "status 503 not in 200-299");
    }

    #[tokio::test]
    async fn accepted_status_ranges() {
        let (port, _seen) = server("HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n").await;
        let t = target(Protocol::Tcp, port);
        let c = http(|h| h.status = vec![(200, 299), (301, 302)]);
        assert_eq!(check_once(&t, &c).await.ok(), Some(None));
        let c = http(|h| h.status = vec![(200, 200), (304, 304)]);
        assert_eq!(down(&t, &c).await.to_string(), "status 302 not in 200,304");
        assert_eq!(down(&t, &http(|_| {})).await.to_string(), "status 302 not in 200-299");
    }

    #[tokio::test]
    async fn head_request() {
        // A HEAD answer announces a length but carries no body.
        let (port, mut seen) = server("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n").await;
        let c = http(|h| h.method = HttpMethod::Head);
        assert_eq!(check_once(&target(Protocol::Tcp, port), &c).await.ok(), Some(None));
        let head = seen.recv().await.expect("a request").head;
        assert!(head.starts_with("HEAD / HTTP/1.1\r\n"), "{head}");
    }

    #[tokio::test]
    async fn virtualhost_is_the_host_header() {
        let (port, mut seen) = server(OK).await;
        let c = http(|h| h.virtualhost = Some("www.example.test".to_owned()));
        assert_eq!(check_once(&target(Protocol::Tcp, port), &c).await.ok(), Some(None));
        let head = seen.recv().await.expect("a request").head.to_ascii_lowercase();
        assert!(head.contains("\r\nhost: www.example.test\r\n"), "{head}");
    }

    #[tokio::test]
    async fn chunked_and_close_delimited_bodies() {
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                       3\r\nIt \r\n6\r\nWorks!\r\n0\r\n\r\n";
        let (port, _seen) = server(chunked).await;
        let c = http(|h| h.receive = Some("It Works!".to_owned()));
        assert_eq!(check_once(&target(Protocol::Tcp, port), &c).await.ok(), Some(None));
        let (port, _seen) = server("HTTP/1.0 200 OK\r\n\r\nIt Works!").await;
        assert_eq!(check_once(&target(Protocol::Tcp, port), &c).await.ok(), Some(None));
    }

    #[tokio::test]
    async fn only_the_first_mib_of_a_body_is_matched() {
        let mut big = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 3)
            .into_bytes();
        big.resize(big.len() + MAX_BODY, b'a');
        big.extend_from_slice(b"END");
        let (port, _seen) = server(big).await;
        let t = target(Protocol::Tcp, port);
        let c = http(|h| h.receive = Some("aaaa".to_owned()));
        assert_eq!(check_once(&t, &c).await.ok(), Some(None));
        let c = http(|h| h.receive = Some("END".to_owned()));
        assert_eq!(down(&t, &c).await.to_string(), "body does not match 'END'");
    }

    #[tokio::test]
    async fn garbage_is_down() {
        let (port, _seen) = server("SSH-2.0-OpenSSH_9.6\r\n").await;
        let e = down(&target(Protocol::Tcp, port), &http(|_| {})).await;
        assert!(e.to_string().starts_with(&format!("http 127.0.0.1:{port}: ")), "{e}");
    }

    #[tokio::test]
    async fn refused_is_down() {
        let port = closed_port();
        let e = down(&target(Protocol::Tcp, port), &http(|_| {})).await;
        assert_eq!(e.to_string(), format!("connect to 127.0.0.1:{port}: connection refused"));
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let started = tokio::time::Instant::now();
        let e = down(&target(Protocol::Tcp, port), &http(|_| {})).await;
        assert_eq!(e.to_string(), "timed out after 1s");
        assert!(started.elapsed() < TIMEOUT * 2);
    }

    #[tokio::test]
    async fn https_with_sni_of_the_virtualhost() {
        let (port, mut seen) = tls_server(OK).await;
        let c = http(|h| {
            h.tls = true;
            h.virtualhost = Some("www.example.test".to_owned());
            h.receive = Some("Works".to_owned());
        });
        assert_eq!(check_once(&target(Protocol::Tcp, port), &c).await.ok(), Some(None));
        let seen = seen.recv().await.expect("a request");
        assert_eq!(seen.sni.as_deref(), Some("www.example.test"));
        assert!(seen.head.to_ascii_lowercase().contains("\r\nhost: www.example.test\r\n"));
    }

    #[tokio::test]
    async fn https_to_the_address_sends_no_sni() {
        let (port, mut seen) = tls_server(OK).await;
        let c = http(|h| h.tls = true);
        assert_eq!(check_once(&target(Protocol::Tcp, port), &c).await.ok(), Some(None));
        let seen = seen.recv().await.expect("a request");
        assert_eq!(seen.sni, None);
        let host = format!("\r\nhost: 127.0.0.1:{port}\r\n");
        assert!(seen.head.to_ascii_lowercase().contains(&host), "{}", seen.head);
    }

    #[tokio::test]
    async fn https_status_is_checked_too() {
        let (port, _seen) =
            tls_server("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n").await;
        let c = http(|h| h.tls = true);
        let e = down(&target(Protocol::Tcp, port), &c).await;
        assert_eq!(e.to_string(), "status 500 not in 200-299");
    }

    #[tokio::test]
    async fn https_to_a_plain_server_is_down() {
        // A plain server that answers a ClientHello as a bad request.
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let c = http(|h| h.tls = true);
        let e = down(&target(Protocol::Tcp, port), &c).await;
        assert!(e.to_string().starts_with(&format!("tls handshake with 127.0.0.1:{port}: ")), "{e}");
    }

    #[test]
    fn server_names() {
        let ip: IpAddr = "10.0.1.11".parse().expect("ip");
        let dns = |s: &str| ServerName::try_from(s.to_owned()).expect("name");
        assert_eq!(server_name(Some("www.example.test"), ip), dns("www.example.test"));
        assert_eq!(server_name(Some("www.example.test:8443"), ip), dns("www.example.test"));
        assert_eq!(server_name(None, ip), ServerName::IpAddress(ip.into()));
        assert_eq!(server_name(Some("bad name!"), ip), ServerName::IpAddress(ip.into()));
    }

    #[test]
    fn request_paths_and_hosts() {
        let addr: SocketAddr = "10.0.1.11:80".parse().expect("addr");
        let h = HttpCheck {
            tls: false,
            method: HttpMethod::Get,
            request: "status".to_owned(),
            receive: None,
            virtualhost: None,
            status: Vec::new(),
        };
        let r = build_request(addr, &h).expect("request");
        assert_eq!(r.uri(), "/status");
        assert_eq!(r.headers()[header::HOST], "10.0.1.11");
        let bad = HttpCheck { request: "/a b".to_owned(), ..h };
        assert!(build_request(addr, &bad).is_err());
    }
}
