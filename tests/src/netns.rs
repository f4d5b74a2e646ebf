//! Network namespace guard, command execution inside a namespace and
//! process guards.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A fresh prefix for everything one lab creates: `xlvs-<pid>-<n>`, unique
/// across processes (pid) and within one process (counter).
pub fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "xlvs-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `cmd`, failing with its stderr (and stdout) when it does not succeed.
pub fn run_checked(cmd: &mut Command) -> Result<Output> {
    let desc = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to start `{desc}`"))?;
    if !out.status.success() {
        bail!(
            "`{desc}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            if out.stdout.is_empty() {
                String::new()
            } else {
                format!("\nstdout: {}", String::from_utf8_lossy(&out.stdout).trim())
            }
        );
    }
    Ok(out)
}

/// `ip ARGS...` in the current (root) namespace. Use `ip -n NS ...` to act in
/// a namespace.
pub fn ip(args: &[&str]) -> Result<String> {
    let out = run_checked(Command::new("ip").args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// A named network namespace (`ip netns add NAME`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace `name` (it must not exist yet) and brings its
    /// `lo` up.
    pub fn create(name: &str) -> Result<Self> {
        if name.is_empty() || name.contains('/') {
            bail!("bad namespace name {name:?}");
        }
        ip(&["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`, usable with `nsenter --net=` or `setns`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n NAME ARGS...`; returns stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A `Command` that runs `program args...` inside this namespace via
    /// `nsenter --net=` (unlike `ip netns exec` this keeps /sys and bpffs).
    pub fn command<S: AsRef<OsStr>>(&self, program: S) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        c
    }

    /// Runs `argv` inside the namespace, failing with its stderr on error;
    /// returns stdout.
    pub fn exec(&self, argv: &[&str]) -> Result<String> {
        let (prog, args) = argv.split_first().context("exec: empty argv")?;
        let out = run_checked(self.command(prog).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Sets sysctls (`key=value`) inside the namespace.
    pub fn sysctl(&self, settings: &[&str]) -> Result<()> {
        let mut argv = vec!["sysctl", "-q"];
        for s in settings {
            argv.push("-w");
            argv.push(s);
        }
        self.exec(&argv).map(|_| ())
    }

    /// Spawns `argv` inside the namespace (stdin null, stdout/stderr
    /// inherited). See [`Proc::spawn`].
    pub fn spawn(&self, argv: &[&str]) -> Result<Proc> {
        let (prog, args) = argv.split_first().context("spawn: empty argv")?;
        let mut cmd = self.command(prog);
        cmd.args(args);
        Proc::spawn(&format!("{} (in {})", argv.join(" "), self.name), cmd)
    }

    /// Runs `f` on a new thread that has joined this namespace (the network
    /// namespace is per thread); sockets created in `f` belong to the
    /// namespace and stay usable from any thread afterwards.
    pub fn run_in<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> Result<T> {
        run_in_path(&self.path(), f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // A director killed in here left its tail-call table pinned
        // (`lb_user::dataplane::pin`): it goes with the namespace.
        if let Ok(meta) = std::fs::metadata(self.path()) {
            use std::os::unix::fs::MetadataExt as _;
            let pin = director_pin(meta.ino());
            let _ = std::fs::remove_file(&pin);
            // Its namespace's directory, then `xlvs` itself, once empty.
            for dir in pin.ancestors().skip(1).take(2) {
                if std::fs::remove_dir(dir).is_err() {
                    break;
                }
            }
        }
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: deleting namespace {}: {e:#}", self.name);
        }
    }
}

/// Where a director in the network namespace of inode `netns` pins its
/// tail-call table: `lb_user::dataplane::pin::path_for`, which this crate's
/// library does not link (`reconcile.rs` checks that the two agree).
pub fn director_pin(netns: u64) -> PathBuf {
    Path::new("/sys/fs/bpf/xlvs").join(format!("net-{netns}")).join("schedulers")
}

/// [`Netns::run_in`] for a namespace given by name (`/run/netns/NAME`).
pub fn run_in<T: Send, F: FnOnce() -> T + Send>(ns_name: &str, f: F) -> Result<T> {
    run_in_path(&Path::new("/run/netns").join(ns_name), f)
}

fn run_in_path<T: Send, F: FnOnce() -> T + Send>(path: &Path, f: F) -> Result<T> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("netns".into())
            .spawn_scoped(s, move || -> Result<T> {
                // SAFETY: plain syscall on a valid fd; only this thread's
                // network namespace changes.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    bail!(
                        "setns({}): {}",
                        path.display(),
                        std::io::Error::last_os_error()
                    );
                }
                drop(file);
                Ok(f())
            })
            .context("spawn netns thread")?;
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// A child process the harness started. On drop it is sent SIGTERM and waited
/// for; SIGKILL follows after [`Proc::STOP_GRACE`]. Only this PID is ever
/// signalled.
///
/// Children also get `PR_SET_PDEATHSIG(SIGTERM)`, so they end if the thread
/// that spawned them dies without running destructors (e.g. the harness is
/// SIGKILLed). Spawn them from a long-lived thread (the main or test thread),
/// not from a short-lived helper thread. They run in their own process group
/// so a terminal Ctrl-C reaches only the harness, which then tears down in
/// order.
#[derive(Debug)]
pub struct Proc {
    desc: String,
    child: Option<Child>,
    stderr_log: Option<PathBuf>,
}

impl Proc {
    pub const STOP_GRACE: Duration = Duration::from_secs(5);

    /// Spawns `cmd` (stdin is set to null; set stdout/stderr on `cmd` as
    /// wanted before).
    pub fn spawn(desc: &str, mut cmd: Command) -> Result<Proc> {
        cmd.stdin(Stdio::null());
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork
        // and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGTERM as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("failed to start {desc}"))?;
        Ok(Proc {
            desc: desc.to_string(),
            child: Some(child),
            stderr_log: None,
        })
    }

    /// Records a file that holds the process's stderr, for error messages.
    /// The file is removed when the guard drops (its content is printed
    /// first if the thread is panicking).
    pub fn with_stderr_log(mut self, path: PathBuf) -> Self {
        self.stderr_log = Some(path);
        self
    }

    pub fn desc(&self) -> &str {
        &self.desc
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("process already stopped")
    }

    /// The captured stderr, if it goes to a log file.
    pub fn stderr_text(&self) -> String {
        match &self.stderr_log {
            Some(p) => std::fs::read_to_string(p).unwrap_or_default(),
            None => String::new(),
        }
    }

    /// `Some(status)` if the process has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => bail!("{} already stopped", self.desc),
        }
    }

    /// Fails (with the captured stderr) if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.try_wait()? {
            bail!(
                "{} exited early ({status}); stderr:\n{}",
                self.desc,
                self.stderr_text()
            );
        }
        Ok(())
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; returns the exit status.
    pub fn stop_with(&mut self, grace: Duration) -> Result<ExitStatus> {
        let mut child = self.child.take().context("process already stopped")?;
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        // The child is not reaped yet, so its PID cannot have been reused.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(st) = child.try_wait()? {
                return Ok(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "warning: {} ignored SIGTERM for {grace:?}; killing it",
            self.desc
        );
        let _ = child.kill();
        Ok(child.wait()?)
    }

    /// [`Proc::stop_with`] with the default grace period.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.stop_with(Self::STOP_GRACE)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.is_some()
            && let Err(e) = self.stop()
        {
            eprintln!("warning: stopping {}: {e:#}", self.desc);
        }
        if let Some(log) = self.stderr_log.take() {
            if std::thread::panicking() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if !text.trim().is_empty() {
                    eprintln!("---- stderr of {} ----\n{text}", self.desc);
                }
            }
            let _ = std::fs::remove_file(&log);
        }
    }
}

/// A directory removed (recursively) on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `/tmp/NAME` (removing a stale one of the same name first).
    pub fn new(name: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Polls `f` every 50 ms until it returns `Ok(Some(_))`, fails, `timeout`
/// passes or [`crate::traffic::STOP`] is set.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if crate::traffic::stopped() {
            bail!("interrupted while waiting for {what}");
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Parses `xlvs-<pid>-<n>-...` (the harness's naming) into the pid.
fn lab_owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("xlvs-")?;
    let mut parts = rest.splitn(3, '-');
    let pid: u32 = parts.next()?.parse().ok()?;
    let _n: u32 = parts.next()?.parse().ok()?;
    parts.next()?;
    Some(pid)
}

/// Removes what a harness run killed with SIGKILL left behind: namespaces
/// and `/tmp` entries named `xlvs-<pid>-<n>-*` whose `<pid>` is no longer
/// running. (Its processes are already gone: they get PDEATHSIG.) Returns
/// the names removed.
pub fn remove_stale_labs() -> Result<Vec<String>> {
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    let mut removed = Vec::new();
    let list = ip(&["netns", "list"])?;
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if let Some(pid) = lab_owner_pid(name)
            && !alive(pid)
        {
            ip(&["netns", "del", name])?;
            removed.push(name.to_string());
        }
    }
    if let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = lab_owner_pid(&name)
                && !alive(pid)
            {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                removed.push(p.display().to_string());
            }
        }
    }
    Ok(removed)
}
