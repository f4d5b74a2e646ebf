//! `connect`: ldirectord's connect check (keepalived's `TCP_CHECK`). For TCP a
//! completed handshake is up. UDP has no handshake, so a datagram must be
//! answered: any reply is up unless `expect` says what it must contain, and
//! an ICMP port unreachable (ECONNREFUSED on a connected socket) is down.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::{TcpStream, UdpSocket};

use super::{CheckError, compile};

/// The largest UDP reply read; the rest of a longer datagram is cut off.
const MAX_REPLY: usize = 65_536;

pub(super) async fn tcp(addr: SocketAddr) -> Result<(), CheckError> {
    TcpStream::connect(addr)
        .await
        .map(drop)
        .map_err(|source| CheckError::Connect { addr, source })
}

pub(super) async fn udp(
    addr: SocketAddr,
    send: Option<&str>,
    expect: Option<&str>,
) -> Result<(), CheckError> {
    let expect = expect.map(compile).transpose()?;
    let socket = udp_socket(addr).await?;
    let payload = send.unwrap_or_default().as_bytes();
    socket
        .send(payload)
        .await
        .map_err(|source| CheckError::Io { op: "send to", addr, source })?;
    let mut buf = vec![0; MAX_REPLY];
    let n = socket
        .recv(&mut buf)
        .await
        .map_err(|source| CheckError::Io { op: "receive from", addr, source })?;
    match expect {
        Some(re) if !re.is_match(buf.get(..n).unwrap_or_default()) => {
            Err(CheckError::Reply(re.as_str().to_owned()))
        }
        _ => Ok(()),
    }
}

/// A UDP socket connected to `addr`: it receives only `addr`'s datagrams,
/// and the kernel reports an ICMP port unreachable from it as
/// ECONNREFUSED. Shared with the dns checker.
pub(super) async fn udp_socket(addr: SocketAddr) -> Result<UdpSocket, CheckError> {
    let any: SocketAddr = if addr.is_ipv6() { (Ipv6Addr::UNSPECIFIED, 0).into() } else { (Ipv4Addr::UNSPECIFIED, 0).into() };
    let socket = UdpSocket::bind(any)
        .await
        .map_err(|source| CheckError::Io { op: "bind a socket for", addr, source })?;
    socket.connect(addr).await.map_err(|source| CheckError::Connect { addr, source })?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::{
        io::AsyncReadExt,
        net::{TcpListener, UdpSocket},
    };

    use super::super::{check_once, testutil::*};
    use super::*;
    use crate::config::{CheckKind, Protocol};

    const TIMEOUT: Duration = Duration::from_millis(500);

    fn connect(send: Option<&str>, expect: Option<&str>) -> CheckKind {
        CheckKind::Connect { send: send.map(str::to_owned), expect: expect.map(str::to_owned) }
    }

    #[tokio::test]
    async fn tcp_up_when_listening() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let t = target(Protocol::Tcp, l.local_addr().expect("addr").port());
        assert_eq!(check_once(&t, &make_check(connect(None, None), TIMEOUT)).await.ok(), Some(None));
    }

    #[tokio::test]
    async fn tcp_down_when_refused() {
        let port = closed_port();
        let e = down(&target(Protocol::Tcp, port), &make_check(connect(None, None), TIMEOUT)).await;
        assert_eq!(e.to_string(), format!("connect to 127.0.0.1:{port}: connection refused"));
    }

    #[tokio::test]
    async fn tcp_uses_the_check_port() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut c = make_check(connect(None, None), TIMEOUT);
        c.port = Some(l.local_addr().expect("addr").port());
        let t = target(Protocol::Tcp, closed_port());
        assert_eq!(check_once(&t, &c).await.ok(), Some(None));
    }

    /// A TCP connect to an address that never answers the SYN: 192.0.2.1
    /// (TEST-NET-1) would leave the machine, so instead a listener whose
    /// backlog is full, which makes the kernel drop further SYNs.
    #[tokio::test]
    async fn tcp_slow_times_out() {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        sock.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into()).expect("bind");
        sock.listen(0).expect("listen");
        let addr = sock.local_addr().expect("addr").as_socket().expect("inet");
        // Fill the backlog (never accepted) so the next SYN goes unanswered.
        let mut held = Vec::new();
        for _ in 0..4 {
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
            {
                held.push(s);
            }
        }
        let started = tokio::time::Instant::now();
        let e = down(&target(Protocol::Tcp, addr.port()), &make_check(connect(None, None), TIMEOUT)).await;
        assert!(matches!(e, CheckError::TimedOut(_)), "{e}");
        assert_eq!(e.to_string(), "timed out after 500ms");
        assert!(started.elapsed() < TIMEOUT * 2);
    }

    /// A UDP server answering each datagram with `reply`, and telling the
    /// test what it received.
    async fn udp_server(reply: Option<&'static [u8]>) -> (u16, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
        let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let port = s.local_addr().expect("addr").port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = [0; 1500];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let _ = tx.send(buf[..n].to_vec());
                if let Some(reply) = reply {
                    let _ = s.send_to(reply, from).await;
                }
            }
        });
        (port, rx)
    }

    #[tokio::test]
    async fn udp_up_on_any_reply() {
        let (port, mut seen) = udp_server(Some(b"pong")).await;
        let t = target(Protocol::Udp, port);
        assert_eq!(check_once(&t, &make_check(connect(Some("ping"), None), TIMEOUT)).await.ok(), Some(None));
        assert_eq!(seen.recv().await.as_deref(), Some(&b"ping"[..]));
    }

    #[tokio::test]
    async fn udp_sends_an_empty_datagram_by_default() {
        let (port, mut seen) = udp_server(Some(b"x")).await;
        let t = target(Protocol::Udp, port);
        assert_eq!(check_once(&t, &make_check(connect(None, None), TIMEOUT)).await.ok(), Some(None));
        assert_eq!(seen.recv().await.as_deref(), Some(&b""[..]));
    }

    #[tokio::test]
    async fn udp_expect_must_match() {
        let (port, _seen) = udp_server(Some(b"status: ok")).await;
        let t = target(Protocol::Udp, port);
        let ok = make_check(connect(Some("status?"), Some("^status: (ok|fine)$")), TIMEOUT);
        assert_eq!(check_once(&t, &ok).await.ok(), Some(None));
        let bad = make_check(connect(Some("status?"), Some("busy")), TIMEOUT);
        assert_eq!(down(&t, &bad).await.to_string(), "reply does not match 'busy'");
    }

    #[tokio::test]
    async fn udp_down_when_port_unreachable() {
        let port = closed_udp_port();
        let e = down(&target(Protocol::Udp, port), &make_check(connect(None, None), TIMEOUT)).await;
        assert_eq!(e.to_string(), format!("receive from 127.0.0.1:{port}: connection refused"));
    }

    #[tokio::test]
    async fn udp_silent_server_times_out() {
        let (port, mut seen) = udp_server(None).await;
        let e = down(&target(Protocol::Udp, port), &make_check(connect(None, None), TIMEOUT)).await;
        assert!(matches!(e, CheckError::TimedOut(_)), "{e}");
        assert!(seen.recv().await.is_some(), "the datagram was sent");
    }

    #[tokio::test]
    async fn tcp_check_does_not_read() {
        // A server that accepts and reads: the check closes without sending.
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.map(|_| buf)
        });
        check_once(&target(Protocol::Tcp, port), &make_check(connect(None, None), TIMEOUT))
            .await
            .expect("up");
        let sent = server.await.expect("join").expect("read");
        assert!(sent.is_empty());
    }
}
