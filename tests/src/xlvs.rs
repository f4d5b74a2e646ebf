//! Driving the `xlvs` binary: `xlvs run` in the director namespace, `xlvs
//! decap` on the reals, `xlvs list`, and writing configs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::netns::{Netns, Proc, TempDir, run_checked, wait_for};
use crate::topology::{self, Topology};

/// How long `xlvs run` / `xlvs decap` may take to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The `xlvs` binary: `$XLVS_BIN`, else `<workspace>/target/release/xlvs`.
pub fn xlvs_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("XLVS_BIN") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/xlvs")
}

fn check_bin() -> Result<PathBuf> {
    let bin = xlvs_bin();
    if !bin.is_file() {
        bail!(
            "xlvs binary not found at {} (build it with `cargo build --release -p lb-user`, or set XLVS_BIN)",
            bin.display()
        );
    }
    Ok(bin)
}

/// `xlvs list ARGS... --socket SOCKET` (from the current namespace: the
/// control socket is a filesystem path). Returns stdout.
pub fn list(socket: &Path, args: &[&str]) -> Result<String> {
    let bin = check_bin()?;
    let out = run_checked(
        Command::new(&bin)
            .arg("list")
            .args(args)
            .arg("--socket")
            .arg(socket),
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether an XDP program is attached to `ifname` in `ns`.
pub fn xdp_attached(ns: &Netns, ifname: &str) -> Result<bool> {
    let out = ns.ip(&["-d", "link", "show", "dev", ifname])?;
    Ok(out.contains("prog/xdp")
        || out.contains(" xdp")
        || out.contains("xdpgeneric")
        || out.contains("xdpdrv"))
}

/// A running `xlvs run`. Dropping it sends SIGTERM and waits (SIGKILL after
/// 5 s), then removes its work directory (config, socket, logs).
pub struct Xlvs {
    proc: Proc,
    ns: String,
    socket: PathBuf,
    config: PathBuf,
    dir: TempDir,
}

impl Xlvs {
    /// Writes `config` to a fresh work directory and starts
    /// `xlvs run -c FILE --socket PATH` in namespace `ns`, then waits until
    /// `xlvs list -n` answers and an XDP program shows on each of
    /// `xdp_ifaces` (interfaces in `ns`). Fails with xlvs's stderr if it
    /// exits early.
    pub fn start(ns: &Netns, config: &str, xdp_ifaces: &[&str]) -> Result<Xlvs> {
        Self::start_within(ns, config, xdp_ifaces, START_TIMEOUT)
    }

    /// [`Xlvs::start`], allowing `timeout` (instead of [`START_TIMEOUT`])
    /// for the director to answer and attach (loading and verifying the
    /// XDP programs takes longer on a busy machine).
    pub fn start_within(
        ns: &Netns,
        config: &str,
        xdp_ifaces: &[&str],
        timeout: Duration,
    ) -> Result<Xlvs> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let bin = check_bin()?;
        let dir = TempDir::new(&format!(
            "{}-xlvs{}",
            ns.name(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))?;
        let config_path = dir.path().join("xlvs.toml");
        std::fs::write(&config_path, config)?;
        let socket = dir.path().join("xlvs.sock");
        let stderr_path = dir.path().join("stderr.log");
        let stdout_path = dir.path().join("stdout.log");

        let mut cmd = ns.command(&bin);
        cmd.arg("run")
            .arg("-c")
            .arg(&config_path)
            .arg("--socket")
            .arg(&socket);
        cmd.stdout(Stdio::from(File::create(&stdout_path)?));
        cmd.stderr(Stdio::from(File::create(&stderr_path)?));
        let proc =
            Proc::spawn(&format!("xlvs run (in {})", ns.name()), cmd)?.with_stderr_log(stderr_path);
        let mut x = Xlvs {
            proc,
            ns: ns.name().to_string(),
            socket,
            config: config_path,
            dir,
        };

        let mut last_err = String::new();
        wait_for("`xlvs list -n` to answer", timeout, || {
            x.proc.check_running()?;
            match list(&x.socket, &["-n"]) {
                Ok(_) => Ok(Some(())),
                Err(e) => {
                    last_err = format!("{e:#}");
                    Ok(None)
                }
            }
        })
        .with_context(|| {
            format!(
                "last `xlvs list` error: {last_err}\nxlvs stderr:\n{}",
                x.stderr()
            )
        })?;
        for ifname in xdp_ifaces {
            wait_for(
                &format!("XDP on {ifname} in {}", ns.name()),
                timeout,
                || {
                    x.proc.check_running()?;
                    Ok(xdp_attached(ns, ifname)?.then_some(()))
                },
            )
            .with_context(|| format!("xlvs stderr:\n{}", x.stderr()))?;
        }
        Ok(x)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
    pub fn config_path(&self) -> &Path {
        &self.config
    }
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn netns(&self) -> &str {
        &self.ns
    }
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    /// Everything xlvs wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.proc.stderr_text()
    }

    /// Fails (with stderr) if `xlvs run` has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.proc.check_running()
    }

    /// `xlvs list ARGS... --socket <ours>`.
    pub fn list(&self, args: &[&str]) -> Result<String> {
        list(&self.socket, args)
    }

    /// `xlvs list -n --stats --json`, parsed.
    pub fn list_json(&self) -> Result<ListJson> {
        let text = self.list(&["-n", "--stats", "--json"])?;
        serde_json::from_str(&text)
            .with_context(|| format!("parsing `xlvs list --json` output:\n{text}"))
    }

    /// SIGTERM and wait; returns the exit status (xlvs should exit 0).
    pub fn stop(mut self) -> Result<ExitStatus> {
        self.proc.stop()
    }

    /// `xlvs ARGS... --socket <ours>` (a subcommand that takes `--socket`:
    /// service, real, zero, save, reload, list, set), whatever its exit
    /// status; see [`Xlvs::ctl_ok`].
    pub fn ctl(&self, args: &[&str]) -> Result<Output> {
        let bin = check_bin()?;
        Command::new(&bin)
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running xlvs {}", args.join(" ")))
    }

    /// [`Xlvs::ctl`], failing with its stderr unless it succeeds; returns
    /// stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> Result<String> {
        let bin = check_bin()?;
        let out = run_checked(
            Command::new(&bin)
                .args(args)
                .arg("--socket")
                .arg(&self.socket),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Replaces the config file `xlvs run` reads (atomically: a new file
    /// renamed over it, so a poll never sees half of it).
    pub fn write_config(&self, text: &str) -> Result<()> {
        let tmp = self.dir.path().join("xlvs.toml.new");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.config)
            .with_context(|| format!("rename {} over {}", tmp.display(), self.config.display()))?;
        Ok(())
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to our `xlvs run`, after
    /// checking that it still runs (its PID is not reaped, so it is ours).
    pub fn signal(&mut self, signal: libc::c_int) -> Result<()> {
        self.proc.check_running()?;
        // SAFETY: plain syscall on the PID of our unreaped child.
        if unsafe { libc::kill(self.proc.pid() as libc::pid_t, signal) } != 0 {
            bail!(
                "kill({}, {signal}): {}",
                self.proc.pid(),
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }
}

/// `xlvs ARGS...` (any subcommand, no socket added), whatever its exit
/// status.
pub fn run(args: &[&str]) -> Result<Output> {
    let bin = check_bin()?;
    Command::new(&bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running xlvs {}", args.join(" ")))
}

/// Starts `xlvs decap --interface IFACE --vip V...` in `ns` and waits until
/// its XDP program is attached. The returned guard stops it (SIGTERM) on
/// drop.
pub fn decap(ns: &Netns, iface: &str, vips: &[&str]) -> Result<Proc> {
    let bin = check_bin()?;
    let mut cmd = ns.command(&bin);
    cmd.args(["decap", "--interface", iface]);
    for v in vips {
        cmd.args(["--vip", v]);
    }
    let log = std::env::temp_dir().join(format!("{}-decap-{iface}.stderr", ns.name()));
    cmd.stdout(Stdio::null());
    cmd.stderr(Stdio::from(File::create(&log)?));
    let mut p = Proc::spawn(&format!("xlvs decap (in {})", ns.name()), cmd)?.with_stderr_log(log);
    let r = wait_for(
        &format!("xlvs decap XDP on {iface} in {}", ns.name()),
        START_TIMEOUT,
        || {
            p.check_running()?;
            Ok(xdp_attached(ns, iface)?.then_some(()))
        },
    );
    if let Err(e) = r {
        let text = p.stderr_text();
        return Err(e.context(format!("decap stderr:\n{text}")));
    }
    Ok(p)
}

/// `xlvs decap --interface eth0 --vip 10.100.0.102` on every real of `topo`.
pub fn decap_all(topo: &Topology) -> Result<Vec<Proc>> {
    topo.reals()
        .iter()
        .map(|r| decap(&r.ns, topo.real_if(), &[topology::VIP_TUN]))
        .collect()
}

// ---------------------------------------------------------------- config

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Forward {
    Nat,
    Dr,
    Tun,
}

impl Forward {
    /// The config-file spelling (`nat`, `dr`, `tun`), also used in JSON.
    pub fn config_name(self) -> &'static str {
        match self {
            Forward::Nat => "nat",
            Forward::Dr => "dr",
            Forward::Tun => "tun",
        }
    }
    /// The ipvsadm `Forward` column (`Masq`, `Route`, `Tunnel`).
    pub fn list_name(self) -> &'static str {
        match self {
            Forward::Nat => "Masq",
            Forward::Dr => "Route",
            Forward::Tun => "Tunnel",
        }
    }
}

/// One `[[virtual]]` section.
#[derive(Debug, Clone)]
pub struct Service {
    pub address: String,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    pub scheduler: String,
    pub forward: Forward,
    /// (address, weight)
    pub reals: Vec<(String, u32)>,
    /// More keys of the `[[virtual]]` section, as TOML lines
    /// (`persistent = 60`, `scheduler_flags = ["sh-port"]`, ...).
    pub extra: String,
}

impl Service {
    /// A service with scheduler `rr` and the lab's three reals on
    /// `real_port`, weight 1.
    pub fn rr(protocol: &'static str, address: &str, forward: Forward, real_port: u16) -> Service {
        Service {
            address: address.to_string(),
            protocol,
            scheduler: "rr".into(),
            forward,
            reals: topology::REAL_IPS
                .iter()
                .map(|ip| (format!("{ip}:{real_port}"), 1))
                .collect(),
            extra: String::new(),
        }
    }

    /// A round-robin service on `[vip]:port` over the lab's IPv6 reals
    /// ([`topology::REAL_IPS6`]) on `real_port`, weight 1.
    pub fn rr6(protocol: &'static str, vip: &str, port: u16, forward: Forward, real_port: u16) -> Service {
        Service {
            reals: topology::REAL_IPS6
                .iter()
                .map(|ip| (format!("[{ip}]:{real_port}"), 1))
                .collect(),
            ..Service::rr(protocol, &format!("[{vip}]:{port}"), forward, real_port)
        }
    }

    /// The same service under another scheduler.
    pub fn scheduled_by(mut self, scheduler: &str) -> Service {
        self.scheduler = scheduler.into();
        self
    }

    /// Adds TOML lines to the `[[virtual]]` section.
    pub fn with_extra(mut self, lines: &str) -> Service {
        self.extra.push_str(lines);
        self.extra.push('\n');
        self
    }

    pub fn with_weights(mut self, weights: &[u32]) -> Service {
        for (r, w) in self.reals.iter_mut().zip(weights) {
            r.1 = *w;
        }
        self
    }
}

/// Renders a config file for `interfaces` and `services`.
pub fn render_config(interfaces: &[&str], services: &[Service]) -> String {
    let mut s = String::new();
    let ifs: Vec<String> = interfaces.iter().map(|i| format!("{i:?}")).collect();
    let _ = writeln!(s, "[director]\ninterfaces = [{}]", ifs.join(", "));
    for svc in services {
        let _ = writeln!(
            s,
            "\n[[virtual]]\naddress = {:?}\nprotocol = {:?}\nscheduler = {:?}\nforward = {:?}",
            svc.address,
            svc.protocol,
            svc.scheduler,
            svc.forward.config_name()
        );
        s.push_str(&svc.extra);
        for (addr, weight) in &svc.reals {
            let _ = writeln!(
                s,
                "\n[[virtual.real]]\naddress = {addr:?}\nweight = {weight}"
            );
        }
    }
    s
}

pub fn nat_tcp_addr() -> String {
    format!("{}:80", topology::VIP_NAT)
}
pub fn nat_udp_addr() -> String {
    format!("{}:53", topology::VIP_NAT)
}
pub fn dr_tcp_addr() -> String {
    format!("{}:80", topology::VIP_DR)
}
pub fn tun_tcp_addr() -> String {
    format!("{}:80", topology::VIP_TUN)
}

/// The demo services: NAT tcp 10.100.0.100:80 → reals :8080, NAT udp
/// 10.100.0.100:53 → reals :53, DR 10.100.0.101:80 → reals :80, TUN
/// 10.100.0.102:80 → reals :80; all rr, weight 1.
pub fn demo_services() -> Vec<Service> {
    vec![
        Service::rr("tcp", &nat_tcp_addr(), Forward::Nat, 8080),
        Service::rr("udp", &nat_udp_addr(), Forward::Nat, 53),
        Service::rr("tcp", &dr_tcp_addr(), Forward::Dr, 80),
        Service::rr("tcp", &tun_tcp_addr(), Forward::Tun, 80),
    ]
}

/// The demo config for `topo` (see [`demo_services`]).
pub fn demo_config(topo: &Topology) -> String {
    render_config(&topo.director_interfaces(), &demo_services())
}

// ------------------------------------------------------------ list --json

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Stats {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RealJson {
    pub address: String,
    #[serde(default)]
    pub forward: String,
    #[serde(default)]
    pub weight: u32,
    #[serde(default)]
    pub active: u64,
    #[serde(default)]
    pub inactive: u64,
    #[serde(default)]
    pub stats: Option<Stats>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServiceJson {
    pub protocol: String,
    pub address: String,
    #[serde(default)]
    pub scheduler: String,
    #[serde(default)]
    pub reals: Vec<RealJson>,
    #[serde(default)]
    pub stats: Option<Stats>,
}

/// `xlvs list -n --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct ListJson {
    pub services: Vec<ServiceJson>,
    /// Data-plane counters by name. Accepts an object (`{"name": n}`) or a
    /// list of `["name", n]` pairs.
    #[serde(default, deserialize_with = "counters")]
    pub counters: BTreeMap<String, u64>,
}

fn counters<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, u64>, D::Error> {
    use serde::de::Error;
    let v = serde_json::Value::deserialize(d)?;
    let num = |name: &str, v: &serde_json::Value| {
        v.as_u64()
            .ok_or_else(|| D::Error::custom(format!("counter {name}: not a number: {v}")))
    };
    let mut out = BTreeMap::new();
    match &v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                out.insert(k.clone(), num(k, v)?);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                match item.as_array().map(|a| a.as_slice()) {
                    Some([serde_json::Value::String(k), v]) => {
                        out.insert(k.clone(), num(k, v)?);
                    }
                    _ => {
                        return Err(D::Error::custom(format!(
                            "counters: unexpected entry {item}"
                        )));
                    }
                }
            }
        }
        serde_json::Value::Null => {}
        other => return Err(D::Error::custom(format!("counters: unexpected {other}"))),
    }
    Ok(out)
}

impl ListJson {
    /// A data-plane counter (0 if absent).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    pub fn service(&self, protocol: &str, address: &str) -> Option<&ServiceJson> {
        self.services
            .iter()
            .find(|s| s.protocol.eq_ignore_ascii_case(protocol) && s.address == address)
    }
}

impl ServiceJson {
    pub fn real(&self, address: &str) -> Option<&RealJson> {
        self.reals.iter().find(|r| r.address == address)
    }
}
