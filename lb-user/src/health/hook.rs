//! The operator's hooks: `notify_up`/`notify_down` when a real changes
//! state, `quorum_up`/`quorum_down` when a service gains or loses its
//! quorum. A hook runs detached: the controller never waits for it, and a
//! hook that fails is logged, not retried.

use std::process::Stdio;

use super::external::shell;

/// Runs `/bin/sh -c 'COMMAND "$@"' xlvs ARGS...` in the background, its
/// output going where the controller's goes. A failure to start or a
/// nonzero exit is logged at warn.
///
/// Must be called from within a tokio runtime, whose task reaps the child.
pub fn run_hook(command: &str, args: &[String]) {
    let mut cmd = shell(command, args);
    cmd.stdin(Stdio::null()).stdout(Stdio::inherit()).stderr(Stdio::inherit());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            tracing::warn!(command, error = %e, "hook: cannot run /bin/sh");
            return;
        }
    };
    let command = command.to_owned();
    tokio::spawn(async move {
        match child.wait().await {
            Ok(status) if status.success() => {
                tracing::debug!(command, "hook finished");
            }
            Ok(status) => tracing::warn!(command, %status, "hook failed"),
            Err(e) => tracing::warn!(command, error = %e, "hook: cannot wait for it"),
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[tokio::test]
    async fn hooks_run_with_their_arguments() {
        let dir = std::env::temp_dir().join(format!("xlvs-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let out = dir.join("out");
        let cmd = format!("f() {{ echo \"$0 $*\" > {}; }}; f", out.display());
        run_hook(&cmd, &["up".to_owned(), "10.0.1.11:80".to_owned(), "check passed".to_owned()]);
        let deadline = Instant::now() + Duration::from_secs(5);
        let text = loop {
            if let Ok(text) = std::fs::read_to_string(&out)
                && text.ends_with('\n')
            {
                break text;
            }
            assert!(Instant::now() < deadline, "the hook did not run");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(text, "xlvs up 10.0.1.11:80 check passed\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
