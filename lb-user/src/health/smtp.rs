//! `smtp`: keepalived's `SMTP_CHECK`. The server's 220 greeting, then
//! `HELO name` answered with 250, then a polite QUIT. Replies may be
//! multi-line (`220-...` continued until `220 ...`, RFC 5321 4.2).

use std::net::SocketAddr;

use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

use super::CheckError;

/// RFC 5321 4.5.3.1.5: a reply line is at most 512 bytes; allow more, but
/// not without bound.
const MAX_LINE: u64 = 4096;
/// Lines of one multi-line reply before we give up on the server.
const MAX_LINES: usize = 100;

pub(super) async fn check(addr: SocketAddr, helo: &str) -> Result<(), CheckError> {
    let fail = |message: String| CheckError::Protocol { kind: "smtp", addr, message };
    let stream =
        TcpStream::connect(addr).await.map_err(|source| CheckError::Connect { addr, source })?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);

    let (code, text) = read_reply(&mut read).await.map_err(fail)?;
    if code != 220 {
        return Err(fail(format!("banner is '{text}', not 220")));
    }
    write
        .write_all(format!("HELO {helo}\r\n").as_bytes())
        .await
        .map_err(|source| CheckError::Io { op: "send to", addr, source })?;
    let (code, text) = read_reply(&mut read).await.map_err(fail)?;
    if code != 250 {
        return Err(fail(format!("HELO answered '{text}', not 250")));
    }
    // The check has passed; QUIT only spares the server a broken session.
    let _ = write.write_all(b"QUIT\r\n").await;
    Ok(())
}

/// Reads one reply: its code and the text of its last line.
async fn read_reply<R: AsyncBufRead + Unpin>(read: &mut R) -> Result<(u16, String), String> {
    let mut line = Vec::new();
    for _ in 0..MAX_LINES {
        line.clear();
        let n = (&mut *read)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| super::io_text(&e))?;
        if n == 0 {
            return Err("connection closed before a reply".to_owned());
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        let code = text
            .get(..3)
            .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| format!("malformed reply '{}'", shorten(&text)))?;
        // "250-" continues the reply; "250 " or a bare "250" ends it.
        if text.as_bytes().get(3) != Some(&b'-') {
            return Ok((code, shorten(&text)));
        }
    }
    Err(format!("reply longer than {MAX_LINES} lines"))
}

/// A server's text cut to a length fit for a log line.
fn shorten(text: &str) -> String {
    const MAX: usize = 120;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;

    use super::super::{check_once, testutil::*};
    use super::*;
    use crate::config::{CheckKind, Protocol};

    const TIMEOUT: Duration = Duration::from_millis(500);

    /// An SMTP server that sends `banner`, answers the first command with
    /// `helo_reply`, and reports the lines it received.
    async fn server(
        banner: &'static str,
        helo_reply: &'static str,
    ) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let (s, _) = l.accept().await.expect("accept");
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            let mut seen = Vec::new();
            w.write_all(banner.as_bytes()).await.expect("banner");
            if let Ok(Some(l)) = lines.next_line().await {
                seen.push(l);
                w.write_all(helo_reply.as_bytes()).await.expect("reply");
            }
            while let Ok(Some(l)) = lines.next_line().await {
                seen.push(l);
            }
            seen
        });
        (port, task)
    }

    fn smtp() -> crate::config::Check {
        make_check(CheckKind::Smtp { helo: "director.example".to_owned() }, TIMEOUT)
    }

    #[tokio::test]
    async fn up_on_220_and_250() {
        let (port, server) = server("220 mx ESMTP\r\n", "250 mx\r\n").await;
        assert_eq!(check_once(&target(Protocol::Tcp, port), &smtp()).await.ok(), Some(None));
        assert_eq!(server.await.expect("join"), ["HELO director.example", "QUIT"]);
    }

    #[tokio::test]
    async fn multi_line_replies() {
        let (port, _server) =
            server("220-mx ESMTP\r\n220-more\r\n220 ready\r\n", "250-mx\r\n250 SIZE 1000\r\n").await;
        assert_eq!(check_once(&target(Protocol::Tcp, port), &smtp()).await.ok(), Some(None));
    }

    #[tokio::test]
    async fn down_on_a_554_banner() {
        let (port, _server) = server("554 no service\r\n", "250 mx\r\n").await;
        let e = down(&target(Protocol::Tcp, port), &smtp()).await;
        assert_eq!(
            e.to_string(),
            format!("smtp 127.0.0.1:{port}: banner is '554 no service', not 220")
        );
    }

    #[tokio::test]
    async fn down_when_helo_is_refused() {
        let (port, _server) = server("220 mx\r\n", "550 go away\r\n").await;
        let e = down(&target(Protocol::Tcp, port), &smtp()).await;
        assert!(e.to_string().ends_with("HELO answered '550 go away', not 250"), "{e}");
    }

    #[tokio::test]
    async fn down_on_garbage() {
        let (port, _server) = server("HTTP/1.1 400 Bad Request\r\n", "").await;
        let e = down(&target(Protocol::Tcp, port), &smtp()).await;
        assert!(e.to_string().contains("malformed reply"), "{e}");
    }

    #[tokio::test]
    async fn down_when_refused() {
        let port = closed_port();
        let e = down(&target(Protocol::Tcp, port), &smtp()).await;
        assert!(e.to_string().ends_with("connection refused"), "{e}");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let _hold = tokio::spawn(async move {
            let conn = l.accept().await;
            std::future::pending::<()>().await;
            drop(conn);
        });
        let e = down(&target(Protocol::Tcp, port), &smtp()).await;
        assert!(matches!(e, CheckError::TimedOut(_)), "{e}");
    }

    #[tokio::test]
    async fn long_lines_are_cut_not_fatal() {
        let mut r: &[u8] = b"220-mx\r\n220 ok\r\n";
        assert_eq!(read_reply(&mut r).await, Ok((220, "220 ok".to_owned())));
        let endless = vec![b'2'; 100_000];
        let mut r = BufReader::new(&endless[..]);
        // A line cut at MAX_LINE ends a reply: it reads as one long line.
        assert!(read_reply(&mut r).await.is_ok_and(|(c, t)| c == 222 && t.len() < 200));
    }
}
