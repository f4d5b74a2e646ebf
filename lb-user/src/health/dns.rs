//! `dns`: keepalived's `DNS_CHECK` over UDP. One query for `name` of type
//! `record` (SOA of the root by default); the real is up when a reply with
//! our id, the QR bit and RCODE NOERROR comes back. The answer itself is not
//! looked at: a server that answers NOERROR is serving.

use std::net::SocketAddr;

use super::{CheckError, connect::udp_socket, random_u64};

/// A DNS message over UDP is at most 512 bytes without EDNS; read more in
/// case a server sends more anyway.
const MAX_REPLY: usize = 4096;
const HEADER_LEN: usize = 12;
/// Flags of the query: a standard query with RD (recursion desired), as
/// keepalived sends, so a recursive resolver answers too.
const FLAGS_RD: u16 = 0x0100;
const FLAG_QR: u16 = 0x8000;
const CLASS_IN: u16 = 1;

pub(super) async fn check(addr: SocketAddr, name: &str, record: u16) -> Result<(), CheckError> {
    let fail = |message: String| CheckError::Protocol { kind: "dns", addr, message };
    let id = random_id();
    let query = build_query(id, name, record).map_err(fail)?;
    let socket = udp_socket(addr).await?;
    socket
        .send(&query)
        .await
        .map_err(|source| CheckError::Io { op: "send to", addr, source })?;
    let mut buf = vec![0; MAX_REPLY];
    let n = socket
        .recv(&mut buf)
        .await
        .map_err(|source| CheckError::Io { op: "receive from", addr, source })?;
    check_reply(buf.get(..n).unwrap_or_default(), id).map_err(fail)
}

/// A query id that a stray or spoofed reply cannot guess.
fn random_id() -> u16 {
    let [a, b, ..] = random_u64().to_be_bytes();
    u16::from_be_bytes([a, b])
}

/// One question (RFC 1035 4.1): the 12-byte header, the name as length-
/// prefixed labels ending in the root's empty label, the type and class IN.
fn build_query(id: u16, name: &str, record: u16) -> Result<Vec<u8>, String> {
    let mut q = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&FLAGS_RD.to_be_bytes());
    // QDCOUNT 1, ANCOUNT, NSCOUNT, ARCOUNT 0.
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    // "." and "" are the root; a trailing dot is optional.
    let name = name.strip_suffix('.').unwrap_or(name);
    if !name.is_empty() {
        for label in name.split('.') {
            let len = u8::try_from(label.len())
                .ok()
                .filter(|&l| (1..=63).contains(&l))
                .ok_or_else(|| format!("name '{name}': label '{label}' is not 1 to 63 bytes"))?;
            q.push(len);
            q.extend_from_slice(label.as_bytes());
        }
    }
    q.push(0);
    // RFC 1035 2.3.4: a name is at most 255 bytes as encoded.
    if q.len() - HEADER_LEN > 255 {
        return Err(format!("name '{name}' is longer than 255 bytes"));
    }
    q.extend_from_slice(&record.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(q)
}

/// Whether `reply` answers query `id` with success.
fn check_reply(reply: &[u8], id: u16) -> Result<(), String> {
    let (Some(&[i0, i1]), Some(&[f0, f1])) = (reply.get(0..2), reply.get(2..4)) else {
        return Err(format!("reply of {} bytes is shorter than a header", reply.len()));
    };
    let reply_id = u16::from_be_bytes([i0, i1]);
    let flags = u16::from_be_bytes([f0, f1]);
    if reply.len() < HEADER_LEN {
        return Err(format!("reply of {} bytes is shorter than a header", reply.len()));
    }
    if reply_id != id {
        return Err(format!("reply id {reply_id} does not match query id {id}"));
    }
    if flags & FLAG_QR == 0 {
        return Err("reply is a query (QR not set)".to_owned());
    }
    match flags & 0x000f {
        0 => Ok(()),
        rcode => Err(format!("rcode {rcode} ({})", rcode_name(rcode))),
    }
}

/// RFC 1035 4.1.1 and RFC 2136's names of the RCODEs a server may send.
fn rcode_name(rcode: u16) -> &'static str {
    match rcode {
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::UdpSocket;

    use super::super::{check_once, testutil::*};
    use super::*;
    use crate::config::{CheckKind, Protocol};

    const TIMEOUT: Duration = Duration::from_millis(500);

    #[test]
    fn query_of_the_root_soa() {
        let q = build_query(0xabcd, ".", 6).expect("query");
        assert_eq!(q, [0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 1]);
        assert_eq!(build_query(0xabcd, "", 6), Ok(q));
    }

    #[test]
    fn query_of_a_name() {
        let q = build_query(1, "www.example.", 1).expect("query");
        let mut want = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(b"\x03www\x07example\x00\x00\x01\x00\x01");
        assert_eq!(q, want);
        assert_eq!(build_query(1, "www.example", 1), Ok(want));
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(build_query(1, "a..b", 1).is_err());
        assert!(build_query(1, &"a".repeat(64), 1).is_err());
        let long = ["abcdefghi"; 26].join(".");
        assert!(build_query(1, &long, 1).is_err(), "{} bytes", long.len());
    }

    #[test]
    fn replies() {
        let ok = [0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        assert_eq!(check_reply(&ok, 0x1234), Ok(()));
        assert!(check_reply(&ok, 0x1235).is_err());
        assert!(check_reply(&ok[..11], 0x1234).is_err());
        assert!(check_reply(&[], 0x1234).is_err());
        let query = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        assert!(check_reply(&query, 0x1234).is_err());
        let nx = [0x12, 0x34, 0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0];
        assert_eq!(check_reply(&nx, 0x1234), Err("rcode 3 (NXDOMAIN)".to_owned()));
    }

    #[derive(Clone, Copy)]
    enum Answer {
        Rcode(u8),
        WrongId,
        Silent,
    }

    /// A DNS server that answers every query with a bare header, and reports
    /// the queries it saw.
    async fn server(answer: Answer) -> (u16, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
        let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let port = s.local_addr().expect("addr").port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = [0; 1500];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let q = buf[..n].to_vec();
                let mut reply = [0u8; HEADER_LEN];
                reply[..2].copy_from_slice(&q[..2]);
                reply[2] = 0x81;
                match answer {
                    Answer::Rcode(rcode) => reply[3] = 0x80 | rcode,
                    Answer::WrongId => reply[1] ^= 0xff,
                    Answer::Silent => {}
                }
                let _ = tx.send(q);
                if !matches!(answer, Answer::Silent) {
                    let _ = s.send_to(&reply, from).await;
                }
            }
        });
        (port, rx)
    }

    fn dns() -> crate::config::Check {
        make_check(CheckKind::Dns { name: "example.org".to_owned(), record: 1 }, TIMEOUT)
    }

    #[tokio::test]
    async fn up_on_noerror() {
        let (port, mut seen) = server(Answer::Rcode(0)).await;
        assert_eq!(check_once(&target(Protocol::Udp, port), &dns()).await.ok(), Some(None));
        let q = seen.recv().await.expect("a query");
        assert_eq!(&q[2..], &build_query(0, "example.org", 1).expect("query")[2..]);
    }

    #[tokio::test]
    async fn down_on_servfail() {
        let (port, _seen) = server(Answer::Rcode(2)).await;
        let e = down(&target(Protocol::Udp, port), &dns()).await;
        assert_eq!(e.to_string(), format!("dns 127.0.0.1:{port}: rcode 2 (SERVFAIL)"));
    }

    #[tokio::test]
    async fn down_on_a_wrong_id() {
        let (port, _seen) = server(Answer::WrongId).await;
        let e = down(&target(Protocol::Udp, port), &dns()).await;
        assert!(e.to_string().contains("does not match query id"), "{e}");
    }

    #[tokio::test]
    async fn down_when_refused() {
        let port = closed_udp_port();
        let e = down(&target(Protocol::Udp, port), &dns()).await;
        assert!(e.to_string().ends_with("connection refused"), "{e}");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let (port, _seen) = server(Answer::Silent).await;
        let e = down(&target(Protocol::Udp, port), &dns()).await;
        assert!(matches!(e, CheckError::TimedOut(_)), "{e}");
    }

    #[test]
    fn ids_vary() {
        let ids: std::collections::HashSet<u16> = (0..16).map(|_| random_id()).collect();
        assert!(ids.len() > 8, "{ids:?}");
    }
}
