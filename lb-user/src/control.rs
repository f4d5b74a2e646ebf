//! The control socket: one JSON request per line, one JSON response per
//! line. `xlvs list` and `xlvs set` talk to a running director through it.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream as StdUnixStream},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _},
    net::UnixListener,
};

use crate::{
    edit::{RealEdit, ServiceEdit},
    timeouts::Timeouts,
    view::{ConnView, Snapshot},
};

pub const DEFAULT_SOCKET: &str = "/run/xlvs/xlvs.sock";
/// The longest request line accepted; anything longer is refused.
const MAX_REQUEST: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Services, reals and counters (`xlvs list`).
    List,
    /// Connection entries and persistence templates (`xlvs list -c`).
    Connections,
    /// The idle timeouts (`xlvs list --timeout`).
    Timeout,
    /// `xlvs set --timeout`, as `ipvsadm --set`: 0 leaves a value as it is.
    SetTimeout { tcp: u32, tcpfin: u32, udp: u32 },
    /// `xlvs service add|edit|del`.
    Service(ServiceEdit),
    /// `xlvs real add|edit|del`.
    Real(RealEdit),
    /// `xlvs save`: the running configuration as a config file.
    Save,
    /// `xlvs reload`: re-read the config file, as SIGHUP.
    Reload,
    /// `xlvs zero`: the packet, byte and connection counters back to 0.
    Zero,
    /// `xlvs list --vrrp`.
    Vrrp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Snapshot(Snapshot),
    Connections(Vec<ConnView>),
    /// The timeouts in force (after a `SetTimeout`, the new ones).
    Timeout(Timeouts),
    /// The running configuration, as TOML.
    Saved(String),
    /// A change was applied.
    Done,
    /// The VRRP instance's state; none without `[vrrp]`.
    Vrrp(Option<crate::vrrp::Status>),
    Error(String),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("another director is already listening on {0}")]
    InUse(PathBuf),
    #[error("control socket {path}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("no director answers on {path}")]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("bad answer from the director: {0}")]
    Protocol(String),
}

/// A bound control socket; the file is removed on drop.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Binds `path` (mode 0600), replacing a stale socket file but never a
    /// live director's.
    ///
    /// # Errors
    /// When another director answers there, or the socket cannot be made.
    pub fn bind(path: &Path) -> Result<Self, Error> {
        let io = |source| Error::Io { path: path.to_owned(), source };
        if path.exists() {
            if StdUnixStream::connect(path).is_ok() {
                return Err(Error::InUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let listener = UnixListener::bind(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        Ok(Self { listener, path: path.to_owned() })
    }

    /// Answers requests with `handle` until the task is dropped. Only root
    /// and this process's own user may ask: the socket's mode keeps others
    /// out, and the peer's credentials are checked again in case someone
    /// loosened it.
    pub async fn serve(self, handle: Arc<dyn Fn(Request) -> Response + Send + Sync>) {
        // SAFETY: geteuid cannot fail.
        let own = unsafe { libc::geteuid() };
        loop {
            let Ok((stream, _)) = self.listener.accept().await else { continue };
            let handle = handle.clone();
            tokio::spawn(async move {
                let peer = stream.peer_cred().map(|c| c.uid());
                let allowed = matches!(peer, Ok(uid) if uid == 0 || uid == own);
                let (read, mut write) = stream.into_split();
                // The request is read whole even when it will be refused, so
                // that the client gets the answer rather than a broken pipe.
                let mut line = Vec::new();
                let mut reader = tokio::io::BufReader::new(read).take(MAX_REQUEST as u64 + 1);
                let response = match reader.read_until(b'\n', &mut line).await {
                    Ok(_) if !allowed => {
                        let who = peer.map_or_else(|e| format!("unknown ({e})"), |uid| format!("uid {uid}"));
                        tracing::warn!(peer = %who, "control request refused: not root");
                        Response::Error(format!("permission denied for {who}: only root may control the director"))
                    }
                    Ok(_) if line.len() > MAX_REQUEST => Response::Error("request too long".into()),
                    Ok(_) => match serde_json::from_slice::<Request>(&line) {
                        Ok(request) => handle(request),
                        Err(e) => Response::Error(format!("bad request: {e}")),
                    },
                    Err(e) => Response::Error(format!("reading the request: {e}")),
                };
                let mut text = serde_json::to_vec(&response).unwrap_or_default();
                text.push(b'\n');
                let _ = write.write_all(&text).await;
            });
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

use tokio::io::AsyncReadExt as _;

/// Sends one request to the director at `path` and waits for its answer.
///
/// # Errors
/// When nobody listens, or the answer is not a response.
pub fn request(path: &Path, request: &Request) -> Result<Response, Error> {
    let connect = |source| Error::Connect { path: path.to_owned(), source };
    let mut stream = StdUnixStream::connect(path).map_err(connect)?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(connect)?;
    let mut text = serde_json::to_vec(request).map_err(|e| Error::Protocol(e.to_string()))?;
    text.push(b'\n');
    stream.write_all(&text).map_err(connect)?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(connect)?;
    serde_json::from_str(&line).map_err(|e| Error::Protocol(e.to_string()))
}
