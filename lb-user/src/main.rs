//! `xlvs`: the command line of the xlvs director.

use std::{net::Ipv4Addr, path::PathBuf};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use lb_user::{
    control::{self, DEFAULT_SOCKET, Request, Response},
    dataplane::Decap,
    view::{self, Layout},
};
use tokio::signal::unix::{SignalKind, signal};

/// A Linux Virtual Server on XDP.
#[derive(Parser)]
#[command(name = "xlvs", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a director in the foreground until SIGINT or SIGTERM.
    Run {
        /// The TOML configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// The control socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// List the virtual services of a running director, as `ipvsadm -L`.
    List {
        /// Numeric output (xlvs never resolves names; accepted for ipvsadm
        /// compatibility).
        #[arg(short = 'n', long)]
        numeric: bool,
        /// Connection, packet and byte counters.
        #[arg(long)]
        stats: bool,
        /// Exact numbers, without K/M/G suffixes.
        #[arg(long)]
        exact: bool,
        /// JSON instead of the ipvsadm layout.
        #[arg(long)]
        json: bool,
        /// The control socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// On a real server in tunnel mode: strip the IP-in-IP header of packets
    /// for the given VIPs (runs until SIGINT or SIGTERM).
    Decap {
        /// The interface the tunnelled packets arrive on.
        #[arg(short, long)]
        interface: String,
        /// A VIP this real serves (repeat for several).
        #[arg(long, required = true)]
        vip: Vec<Ipv4Addr>,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, socket } => {
            runtime().and_then(|rt| rt.block_on(lb_user::director::run(&config, &socket)))
        }
        Command::List { numeric: _, stats, exact, json, socket } => list(&socket, stats, exact, json),
        Command::Decap { interface, vip } => runtime().and_then(|rt| rt.block_on(decap(&interface, &vip))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain on one line; a verifier log follows its
            // own line breaks.
            eprintln!("xlvs: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")
}

fn list(socket: &std::path::Path, stats: bool, exact: bool, json: bool) -> anyhow::Result<()> {
    let snapshot = match control::request(socket, &Request::List)? {
        Response::Snapshot(s) => s,
        Response::Error(e) => bail!("the director says: {e}"),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&snapshot)?);
    } else {
        let layout = if stats { Layout::Stats { exact } } else { Layout::Default };
        print!("{}", view::render(&snapshot, layout));
    }
    Ok(())
}

async fn decap(interface: &str, vips: &[Ipv4Addr]) -> anyhow::Result<()> {
    let _decap = Decap::start(interface, vips)?;
    tracing::info!(interface, vips = ?vips, "decapsulating IP-in-IP for the VIPs");
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}
