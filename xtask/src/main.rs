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
    /// Run the packet benchmarks and write BENCHMARKS.md. Needs root.
    Bench,
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
        Task::Bench => {
            need_root("the benchmarks")?;
            run(cargo(&root).args(["run", "--release", "-p", "bench"]))
        }
    }
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
