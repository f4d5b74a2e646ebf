//! The control socket refuses every user but root (and the director's own).
//! The socket's mode 0600 keeps others from connecting at all; the server
//! checks the peer's credentials too, so a loosened mode changes nothing.
//! Needs root (to run the client as `nobody` with setpriv).

use std::{os::unix::fs::PermissionsExt as _, path::Path, process::Command, sync::Arc};

use lb_user::control::{Request, Response, Server};

const NOBODY: &str = "65534";

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `xlvs zero --socket PATH` as `nobody`: (exit success, stderr).
fn zero_as_nobody(socket: &Path) -> (bool, String) {
    let out = Command::new("setpriv")
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_xlvs"))
        .arg("zero")
        .arg("--socket")
        .arg(socket)
        .output()
        .expect("run setpriv (util-linux)");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn only_root_may_control_the_director() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    /// Removes the test's directory even when an assertion fails.
    struct TempDir(std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = std::env::temp_dir().join(format!("xlvs-peer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = TempDir(dir.clone());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.join("xlvs.sock");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = {
        let _guard = rt.enter();
        Server::bind(&socket).unwrap()
    };
    let handler = {
        let asked = asked.clone();
        Arc::new(move |_: Request| {
            asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Response::Done
        })
    };
    let task = rt.spawn(server.serve(handler));

    // As made: mode 0600, so nobody cannot even connect.
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (ok, stderr) = zero_as_nobody(&socket);
    assert!(!ok && stderr.contains("Permission denied"), "{stderr}");

    // Loosened: nobody connects, and the server refuses the request.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (ok, stderr) = zero_as_nobody(&socket);
    assert!(!ok, "nobody's request must fail");
    assert!(stderr.contains("permission denied for uid 65534: only root may control the director"), "{stderr}");
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 0, "the handler never saw it");

    // Root is answered.
    let response = lb_user::control::request(&socket, &Request::Zero).unwrap();
    assert_eq!(response, Response::Done);
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);

    task.abort();
    drop(rt);
}
