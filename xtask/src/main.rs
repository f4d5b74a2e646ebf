//! `cargo xtask`: the project's own commands. Each one first makes sure the
//! toolchain is complete (`setup`), so that a fresh clone needs no hand steps.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: rust-src for nightly, bpf-linker, and the
    /// network tools the tests use.
    Setup,
    /// Build `target/release/xlvs` (with its XDP programs) and the test tools.
    Build,
    /// Run every test: unit tests, packet fixtures, end-to-end tests across
    /// network namespaces, and a benchmark smoke run. Needs root.
    Test,
    /// Run the demo: namespaces, a director, three reals, traffic in every
    /// forwarding method, a distribution table. Needs root.
    Demo,
    /// Run the benchmarks and write BENCHMARKS.md (installs wrk, nginx,
    /// haproxy and nftables with apt for the HTTP part). Needs root.
    /// Arguments go to the benchmark: `--quick`, `--only PARTS`, ...
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// The bpf-linker release that loads this nightly's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.10.4";
/// The nightly the fallback rust-src archive in ../shared/toolchain matches.
const FALLBACK_RUST_SRC: &str = "rust-src-nightly-1.97.0-2026-05-19.tar.xz";
const FALLBACK_NIGHTLY: &str = "1.97.0-nightly (e50aa6fba 2026-05-19)";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    setup(&root)?;
    match cli.command {
        Task::Setup => Ok(()),
        Task::Build => build(&root),
        Task::Test => test(&root),
        Task::Demo => {
            build(&root)?;
            need_root("the demo")?;
            run(Command::new(root.join("target/release/xlvs-demo")).env("XLVS_BIN", root.join("target/release/xlvs")))
        }
        Task::Bench { args } => bench(&root, &args),
    }
}

/// `cargo xtask bench`: the controller (the veth and HTTP parts run the
/// real `xlvs run`), the HTTP part's tools unless the run is quick or
/// leaves that part out, then the benchmark itself.
fn bench(root: &Path, args: &[String]) -> anyhow::Result<()> {
    need_root("the benchmarks")?;
    build(root)?;
    let quick = args.iter().any(|a| a == "--quick");
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1));
    let http = !quick && only.is_none_or(|parts| parts.split(',').any(|p| p.trim() == "http"));
    if http {
        ensure_bench_tools()?;
    }
    run(cargo(root)
        .args(["run", "--release", "-p", "bench", "--"])
        .args(args)
        .env("XLVS_BIN", root.join("target/release/xlvs")))
}

/// The HTTP benchmark's tools, from Debian's packages. The benchmark runs
/// its own nginx and HAProxy, with its own config files, inside its
/// namespaces only; the packages' system services must not run, so they
/// are kept from starting while installing (policy-rc.d, which both
/// invoke-rc.d and deb-systemd-invoke obey) and disabled afterwards.
fn ensure_bench_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = [("wrk", "wrk"), ("nginx", "nginx"), ("haproxy", "haproxy"), ("nft", "nftables")]
        .into_iter()
        .filter(|(tool, _)| output(Command::new("sh").args(["-c", &format!("command -v {tool}")])).is_none())
        .map(|(_, package)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {} for the HTTP benchmark", missing.join(" "));
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let placed = !policy.exists();
    if placed {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(policy, "#!/bin/sh\n# cargo xtask bench: no service starts while it installs packages\nexit 101\n")?;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
    }
    let installed = run(Command::new("apt-get").arg("update").arg("-qq")).and_then(|()| {
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    });
    if placed {
        let _ = std::fs::remove_file(policy);
    }
    installed?;
    // Their units are enabled at boot by the packages; nothing of theirs
    // should ever run as a service here.
    let services: Vec<&str> = missing.iter().copied().filter(|p| matches!(*p, "nginx" | "haproxy")).collect();
    if !services.is_empty() && output(Command::new("sh").args(["-c", "command -v systemctl"])).is_some() {
        let mut cmd = Command::new("systemctl");
        cmd.arg("disable").arg("--quiet");
        if Path::new("/run/systemd/system").exists() {
            cmd.arg("--now");
        }
        let _ = run(cmd.args(&services));
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
}

fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root);
    cmd
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn need_root(what: &str) -> anyhow::Result<()> {
    // SAFETY: a plain syscall.
    if unsafe { libc_geteuid() } != 0 {
        bail!("{what} create network namespaces and load XDP programs: run as root");
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Idempotent: checks each piece and installs only what is missing.
fn setup(root: &Path) -> anyhow::Result<()> {
    ensure_rust_src(root)?;
    ensure_bpf_linker()?;
    ensure_tools();
    Ok(())
}

fn ensure_rust_src(root: &Path) -> anyhow::Result<()> {
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("the nightly toolchain is missing: `rustup toolchain install nightly`")?;
    let rustlib = Path::new(&sysroot).join("lib/rustlib");
    let present = || rustlib.join("src/rust/library/core/Cargo.toml").exists();
    if present() {
        return Ok(());
    }
    eprintln!("xtask: installing rust-src for nightly");
    // rustup may also claim success for a component whose files are gone,
    // so what counts is whether the sources are there afterwards.
    let _ = run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]));
    if present() {
        return Ok(());
    }
    // rustup could not download it: unpack the copy kept beside the repo.
    let archive = root.join("../shared/toolchain").join(FALLBACK_RUST_SRC);
    let version = output(Command::new("rustc").args(["+nightly", "-V"])).unwrap_or_default();
    if !version.contains(FALLBACK_NIGHTLY) {
        bail!("rust-src is missing, rustup cannot fetch it, and {} matches {FALLBACK_NIGHTLY}, not '{version}'", archive.display());
    }
    eprintln!("xtask: unpacking {}", archive.display());
    run(Command::new("tar").arg("-xJf").arg(&archive).arg("-C").arg(&rustlib))?;
    let components = rustlib.join("components");
    let listed = std::fs::read_to_string(&components).unwrap_or_default();
    if !listed.lines().any(|l| l == "rust-src") {
        std::fs::write(&components, format!("{listed}rust-src\n"))?;
    }
    Ok(())
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    let version = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if version.contains(BPF_LINKER_VERSION) {
        return Ok(());
    }
    eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION}");
    run(Command::new("cargo").args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}"), "--locked", "--force"]))
}

/// The tests and the demo drive `ip`, `nsenter` and `ethtool`, and the VRRP
/// interop tests run keepalived as the peer (only inside their own
/// namespaces; Debian's package starts no service without a config). Best
/// effort: without root or apt the tests say what is missing themselves.
fn ensure_tools() {
    let missing: Vec<&str> = [
        ("ip", "iproute2"),
        ("nsenter", "util-linux"),
        ("ethtool", "ethtool"),
        ("keepalived", "keepalived"),
    ]
        .into_iter()
        .filter(|(tool, _)| output(Command::new("sh").args(["-c", &format!("command -v {tool}")])).is_none())
        .map(|(_, package)| package)
        .collect();
    if missing.is_empty() {
        return;
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let _ = run(Command::new("apt-get").arg("update").arg("-qq"));
    let _ = run(Command::new("apt-get").args(["install", "-y", "-qq"]).args(&missing));
}

fn build(root: &Path) -> anyhow::Result<()> {
    run(cargo(root).args(["build", "--release", "-p", "lb-user", "-p", "tests", "--bins"]))
}

fn test(root: &Path) -> anyhow::Result<()> {
    let mut total = Tally::default();
    // Host-only tier first: fast, and no root needed.
    total += run_tests(cargo(root).args(["test", "-p", "lb-common", "-p", "lb-user", "-p", "xtask"]))?;
    need_root("the packet and end-to-end tests")?;
    build(root)?;
    total += run_tests(
        cargo(root)
            .args(["test", "--release", "-p", "tests", "--", "--test-threads=1"])
            .env("XLVS_BIN", root.join("target/release/xlvs")),
    )?;
    // The benchmark must keep working; a quick run proves it without
    // rewriting BENCHMARKS.md.
    run(cargo(root).args(["run", "--release", "-p", "bench", "--", "--quick"]))?;
    println!("xtask: {} passed, {} failed", total.passed, total.failed);
    Ok(())
}

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Self) {
        self.passed += o.passed;
        self.failed += o.failed;
    }
}

/// Runs `cargo test`, echoing its output, and adds up its "test result"
/// lines so that the run ends with one total.
fn run_tests(cmd: &mut Command) -> anyhow::Result<Tally> {
    use std::io::BufRead as _;
    eprintln!("xtask: running {cmd:?}");
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().with_context(|| format!("cannot start {cmd:?}"))?;
    let mut tally = Tally::default();
    for line in std::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|part| part.trim().strip_suffix(word)?.trim().rsplit(' ').next()?.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            tally.passed += count("passed");
            tally.failed += count("failed");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(tally)
}
