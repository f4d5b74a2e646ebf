//! `external`: ldirectord's external check and keepalived's `MISC_CHECK`. The
//! command runs under `/bin/sh` with ldirectord's arguments (VIP, VIP port,
//! real address, real port), so scripts written for ldirectord work as they
//! are. Exit 0 is up; with `dynamic_weight` (keepalived's `misc_dynamic`),
//! 2..=255 is up with weight `code - 2`; anything else is down.

use std::{os::unix::process::ExitStatusExt, process::Stdio};

use tokio::process::Command;

use super::{CheckError, Target};

/// The `$0` of the commands we run, so that they show up as ours in `ps`.
pub(super) const ARGV0: &str = "xlvs";

/// `/bin/sh -c 'COMMAND "$@"' xlvs ARGS...`: the command line is the
/// operator's shell text, and the arguments are passed as positional
/// parameters, never spliced into it.
pub(super) fn shell(command: &str, args: &[String]) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(format!("{command} \"$@\"")).arg(ARGV0).args(args);
    cmd
}

pub(super) async fn check(
    target: &Target,
    port: u16,
    command: &str,
    dynamic_weight: bool,
) -> Result<Option<u32>, CheckError> {
    let args = [
        target.vip.addr.to_string(),
        target.vip.port.to_string(),
        target.addr.to_string(),
        port.to_string(),
    ];
    let mut cmd = shell(command, &args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // The command's own process group, so that a timeout kills what it
        // started too (a pipeline, a `curl` under a script), not only the
        // shell.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(CheckError::Spawn)?;
    let group = KillGroup(child.id());
    let status = child.wait().await.map_err(CheckError::Spawn)?;
    group.disarm();
    match status.code() {
        Some(0) => Ok(None),
        Some(code @ 2..=255) if dynamic_weight => Ok(Some(u32::try_from(code - 2).unwrap_or(0))),
        Some(code) => Err(CheckError::Exit(format!("exit status {code}"))),
        None => Err(CheckError::Exit(match status.signal() {
            Some(sig) => format!("killed by signal {sig}"),
            None => format!("{status}"),
        })),
    }
}

/// Kills a check command's process group unless disarmed: dropped
/// unfinished, when the check timed out. The group leader is not reaped
/// until tokio's `kill_on_drop` after this runs, so its id cannot have
/// been reused.
struct KillGroup(Option<u32>);

impl KillGroup {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.and_then(|id| libc::pid_t::try_from(id).ok()) {
            // SAFETY: kill(2) takes no pointers; a negative pid names the
            // process group we created with process_group(0).
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::{check_once, testutil::*};
    use crate::config::{CheckKind, Protocol};

    const TIMEOUT: Duration = Duration::from_secs(2);

    fn external(command: &str, dynamic_weight: bool) -> crate::config::Check {
        make_check(CheckKind::External { command: command.to_owned(), dynamic_weight }, TIMEOUT)
    }

    #[tokio::test]
    async fn exit_0_is_up() {
        let t = target(Protocol::Tcp, 8080);
        assert_eq!(check_once(&t, &external("true", false)).await.ok(), Some(None));
    }

    #[tokio::test]
    async fn exit_1_is_down() {
        let t = target(Protocol::Tcp, 8080);
        assert_eq!(down(&t, &external("false", false)).await.to_string(), "exit status 1");
        assert_eq!(down(&t, &external("false", true)).await.to_string(), "exit status 1");
    }

    #[tokio::test]
    async fn dynamic_weight_from_the_exit_code() {
        let t = target(Protocol::Tcp, 8080);
        assert_eq!(check_once(&t, &external("sh -c 'exit 5'", true)).await.ok(), Some(Some(3)));
        assert_eq!(check_once(&t, &external("sh -c 'exit 2'", true)).await.ok(), Some(Some(0)));
        assert_eq!(check_once(&t, &external("sh -c 'exit 255'", true)).await.ok(), Some(Some(253)));
        // Without dynamic_weight the same code is a failure.
        assert_eq!(down(&t, &external("sh -c 'exit 5'", false)).await.to_string(), "exit status 5");
    }

    #[tokio::test]
    async fn ldirectords_arguments() {
        let t = target(Protocol::Tcp, 8080);
        let cmd = r#"f() { [ "$0" = xlvs ] && [ "$*" = "10.100.0.100 80 127.0.0.1 8080" ]; }; f"#;
        assert_eq!(check_once(&t, &external(cmd, false)).await.ok(), Some(None));
        // The check port stands in for the real's.
        let mut c = external(r#"f() { [ "$4" = 81 ]; }; f"#, false);
        c.port = Some(81);
        assert_eq!(check_once(&t, &c).await.ok(), Some(None));
        c.port = Some(82);
        assert!(check_once(&t, &c).await.is_err());
    }

    #[tokio::test]
    async fn a_missing_command_is_down() {
        let t = target(Protocol::Tcp, 8080);
        assert_eq!(
            down(&t, &external("/nonexistent/check", false)).await.to_string(),
            "exit status 127"
        );
    }

    /// A hung command times out, and it and its children are killed.
    #[tokio::test]
    async fn slow_command_times_out_and_is_killed() {
        let dir = std::env::temp_dir().join(format!("xlvs-health-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let pidfile = dir.join("sleep.pid");
        // A shell that forks a child (the sleep), as a script would.
        let cmd = format!("sh -c 'sleep 30 & echo $! > {}; wait'", pidfile.display());
        let mut c = external(&cmd, false);
        c.timeout = Duration::from_millis(300);
        let started = Instant::now();
        let e = down(&target(Protocol::Tcp, 80), &c).await;
        assert_eq!(e.to_string(), "timed out after 300ms");
        assert!(started.elapsed() < Duration::from_secs(2));

        let pid = std::fs::read_to_string(&pidfile).expect("pid file");
        let proc_stat = format!("/proc/{}/stat", pid.trim());
        let deadline = Instant::now() + Duration::from_secs(5);
        // Gone, or a zombie waiting for init to reap it.
        while std::fs::read_to_string(&proc_stat)
            .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
        {
            assert!(Instant::now() < deadline, "the sleep {} was not killed", pid.trim());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
