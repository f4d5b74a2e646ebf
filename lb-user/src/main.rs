//! `xlvs`: the command line of the xlvs director.

use std::{net::IpAddr, path::PathBuf};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use lb_user::{
    control::{self, DEFAULT_SOCKET, Request, Response},
    dataplane::Decap,
    timeouts::MAX_TIMEOUT,
    view::{self, Layout},
};
use tokio::signal::unix::{SignalKind, signal};

mod admin;

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
        #[arg(long, group = "view")]
        stats: bool,
        /// Upper and lower connection thresholds of the reals.
        #[arg(long, group = "view")]
        thresholds: bool,
        /// Persistence templates per real (PersistConn).
        #[arg(long = "persistent-conn", group = "view")]
        persistent_conn: bool,
        /// Connection, packet and byte rates per second (CPS, InPPS, OutPPS,
        /// InBPS, OutBPS), estimated as IPVS does.
        #[arg(long, group = "view")]
        rate: bool,
        /// The reals' health checks: state, check, counts, latency and last
        /// error (not an ipvsadm layout).
        #[arg(long, group = "view")]
        health: bool,
        /// The VRRP instance: state, priority, master, transitions.
        #[arg(long, group = "view")]
        vrrp: bool,
        /// The connection entries and persistence templates (`ipvsadm -L -c`).
        #[arg(short = 'c', long = "connection", group = "view")]
        connection: bool,
        /// The tcp, tcpfin and udp idle timeouts.
        #[arg(long, group = "view")]
        timeout: bool,
        /// Exact numbers, without K/M/G suffixes (--stats, --rate).
        #[arg(short = 'X', long)]
        exact: bool,
        /// JSON instead of the ipvsadm layout.
        #[arg(long)]
        json: bool,
        /// The control socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Change a running director's settings, as `ipvsadm --set`.
    Set {
        /// The idle timeouts of TCP ESTABLISHED, TCP FIN_WAIT and UDP, in
        /// seconds; 0 leaves one unchanged.
        #[arg(long, num_args = 3, value_names = ["TCP", "TCPFIN", "UDP"], required = true,
              value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_TIMEOUT)))]
        timeout: Vec<u32>,
        /// The control socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Add, edit or delete a virtual service, as `ipvsadm -A|-E|-D`.
    Service(admin::ServiceArgs),
    /// Add, edit or delete a real server, as `ipvsadm -a|-e|-d`.
    Real(admin::RealArgs),
    /// Zero the packet, byte and connection counters, as `ipvsadm -Z`.
    Zero {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Print the running configuration as a config file.
    Save {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Re-read the config file, as SIGHUP.
    Reload {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Validate a config file and print it normalized (every effective
    /// value written out); exit 1 with `file:line: key: message` otherwise.
    Check {
        /// The TOML configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Convert an ldirectord.cf: the xlvs config on stdout, what could not
    /// be carried on stderr.
    ImportLdirectord {
        /// The ldirectord configuration file.
        file: PathBuf,
        /// An interface for `director.interfaces` (repeat for several);
        /// ldirectord has none, so a placeholder is written without it.
        #[arg(long)]
        interface: Vec<String>,
    },
    /// On a real server in tunnel mode: strip the IP-in-IP header of packets
    /// for the given VIPs (runs until SIGINT or SIGTERM).
    Decap {
        /// The interface the tunnelled packets arrive on.
        #[arg(short, long)]
        interface: String,
        /// A VIP this real serves, IPv4 or IPv6 (repeat for several): IPv4
        /// VIPs come in IPv4-in-IPv4, IPv6 VIPs IPv6-in-IPv6.
        #[arg(long, required = true)]
        vip: Vec<IpAddr>,
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
        Command::List {
            numeric: _,
            stats,
            thresholds,
            persistent_conn,
            rate,
            health,
            vrrp,
            connection,
            timeout,
            exact,
            json,
            socket,
        } => {
            let what = if vrrp {
                What::Vrrp
            } else if connection {
                What::Connections
            } else if timeout {
                What::Timeout
            } else if stats {
                What::Services(Layout::Stats { exact })
            } else if rate {
                What::Services(Layout::Rate { exact })
            } else if health {
                What::Services(Layout::Health)
            } else if thresholds {
                What::Services(Layout::Thresholds)
            } else if persistent_conn {
                What::Services(Layout::PersistentConn)
            } else {
                What::Services(Layout::Default)
            };
            list(&socket, what, json)
        }
        Command::Set { timeout, socket } => set_timeout(&socket, &timeout),
        Command::Service(args) => admin::service(args),
        Command::Real(args) => admin::real(args),
        Command::Zero { socket } => admin::simple(&socket, &Request::Zero),
        Command::Save { socket } => admin::save(&socket),
        Command::Reload { socket } => admin::simple(&socket, &Request::Reload),
        Command::Check { config } => check_config(&config),
        Command::ImportLdirectord { file, interface } => import_ldirectord(&file, &interface),
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

/// What `xlvs list` shows.
enum What {
    Services(Layout),
    Connections,
    Timeout,
    Vrrp,
}

fn ask(socket: &std::path::Path, request: &Request) -> anyhow::Result<Response> {
    match control::request(socket, request)? {
        Response::Error(e) => bail!("the director says: {e}"),
        response => Ok(response),
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn list(socket: &std::path::Path, what: What, json: bool) -> anyhow::Result<()> {
    let request = match what {
        What::Services(_) => Request::List,
        What::Connections => Request::Connections,
        What::Timeout => Request::Timeout,
        What::Vrrp => Request::Vrrp,
    };
    match (ask(socket, &request)?, what) {
        (Response::Snapshot(s), _) if json => print_json(&s)?,
        (Response::Snapshot(s), What::Services(layout)) => print!("{}", view::render(&s, layout)),
        (Response::Connections(c), _) if json => print_json(&serde_json::json!({ "connections": c }))?,
        (Response::Connections(c), _) => print!("{}", view::render_connections(&c)),
        (Response::Timeout(t), _) if json => print_json(&t)?,
        (Response::Timeout(t), _) => print!("{}", view::render_timeout(&t)),
        (Response::Vrrp(v), _) if json => print_json(&v)?,
        (Response::Vrrp(Some(v)), _) => print!("{}", lb_user::vrrp::render_status(&v)),
        (Response::Vrrp(None), _) => println!("no [vrrp] instance"),
        (other, _) => bail!("unexpected answer from the director: {other:?}"),
    }
    Ok(())
}

fn set_timeout(socket: &std::path::Path, timeout: &[u32]) -> anyhow::Result<()> {
    let &[tcp, tcpfin, udp] = timeout else { bail!("--timeout takes three values: TCP TCPFIN UDP") };
    match ask(socket, &Request::SetTimeout { tcp, tcpfin, udp })? {
        Response::Timeout(_) => Ok(()),
        other => bail!("unexpected answer from the director: {other:?}"),
    }
}

async fn decap(interface: &str, vips: &[IpAddr]) -> anyhow::Result<()> {
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

/// `xlvs check`: the normalized config, or the first error (its
/// `file:line: key: message` is the whole message).
fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let config = lb_user::config::load(path)?;
    print!("{}", lb_user::config::render(&config));
    Ok(())
}

/// `xlvs import-ldirectord`: TOML on stdout, so that it can be redirected
/// to a file, and the notes on stderr.
fn import_ldirectord(path: &std::path::Path, interfaces: &[String]) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let imported = lb_user::ldirectord::import_with(&path.display().to_string(), &text, interfaces)?;
    for note in &imported.notes {
        eprintln!("{note}");
    }
    print!("{}", imported.toml());
    Ok(())
}
