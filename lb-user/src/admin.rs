//! `xlvs service`, `xlvs real`, `xlvs zero`, `xlvs save`, `xlvs reload`:
//! changes to a running director through its control socket, with
//! ipvsadm's flags where they fit.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::bail;
use clap::{Args, ValueEnum};
use lb_user::{
    config::VirtualAddr,
    control::{self, DEFAULT_SOCKET, Request, Response},
    edit::{RealEdit, ServiceEdit, Verb},
};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum VerbArg {
    Add,
    Edit,
    Del,
}

impl From<VerbArg> for Verb {
    fn from(v: VerbArg) -> Self {
        match v {
            VerbArg::Add => Self::Add,
            VerbArg::Edit => Self::Edit,
            VerbArg::Del => Self::Del,
        }
    }
}

/// `-t VIP:PORT` or `-u VIP:PORT`.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct VirtualArg {
    /// A TCP virtual service, VIP:PORT (or NETWORK/PREFIX:PORT).
    #[arg(short = 't', long = "tcp-service", value_name = "VIP:PORT")]
    tcp: Option<VirtualAddr>,
    /// A UDP virtual service.
    #[arg(short = 'u', long = "udp-service", value_name = "VIP:PORT")]
    udp: Option<VirtualAddr>,
}

impl VirtualArg {
    fn get(&self) -> (String, VirtualAddr) {
        match (self.tcp, self.udp) {
            (Some(v), _) => ("tcp".into(), v),
            (_, Some(v)) => ("udp".into(), v),
            // clap requires one of them.
            (None, None) => unreachable!("clap requires -t or -u"),
        }
    }
}

/// `xlvs service add|edit|del`, as `ipvsadm -A|-E|-D`.
#[derive(Args, Debug)]
pub struct ServiceArgs {
    #[arg(value_enum)]
    verb: VerbArg,
    #[command(flatten)]
    service: VirtualArg,
    /// The scheduler (wlc when a service is added without one).
    #[arg(short = 's', long = "scheduler")]
    scheduler: Option<String>,
    /// Persistence in seconds (360 without a value; 0 turns it off).
    #[arg(short = 'p', long = "persistent", num_args = 0..=1, default_missing_value = "360", value_name = "TIMEOUT")]
    persistent: Option<u32>,
    /// The client netmask of persistence: 255.255.255.0 for IPv4, a
    /// prefix length (64) for IPv6, as ipvsadm's -M.
    #[arg(short = 'M', long = "netmask")]
    netmask: Option<String>,
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

/// `xlvs real add|edit|del`, as `ipvsadm -a|-e|-d`.
#[derive(Args, Debug)]
pub struct RealArgs {
    #[arg(value_enum)]
    verb: VerbArg,
    #[command(flatten)]
    service: VirtualArg,
    /// The real server, ADDRESS[:PORT] (the VIP's port when absent).
    #[arg(short = 'r', long = "real-server", value_name = "ADDRESS[:PORT]")]
    real: String,
    /// Direct routing (gatewaying), the default for a new real.
    #[arg(short = 'g', long = "gatewaying", group = "method")]
    gatewaying: bool,
    /// NAT (masquerading).
    #[arg(short = 'm', long = "masquerading", group = "method")]
    masquerading: bool,
    /// IP-in-IP tunnelling.
    #[arg(short = 'i', long = "ipip", group = "method")]
    ipip: bool,
    /// The weight, 0..65535 (1 when a real is added without one).
    #[arg(short = 'w', long = "weight", value_parser = clap::value_parser!(u32).range(0..=65535))]
    weight: Option<u32>,
    /// Upper connection threshold (0: none).
    #[arg(short = 'x', long = "u-threshold", value_parser = clap::value_parser!(u32).range(0..=i64::from(i32::MAX)))]
    u_threshold: Option<u32>,
    /// Lower connection threshold.
    #[arg(short = 'y', long = "l-threshold", value_parser = clap::value_parser!(u32).range(0..=i64::from(i32::MAX)))]
    l_threshold: Option<u32>,
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

fn done(socket: &Path, request: &Request) -> anyhow::Result<Response> {
    match control::request(socket, request)? {
        Response::Error(e) => bail!("{e}"),
        response => Ok(response),
    }
}

pub fn service(args: ServiceArgs) -> anyhow::Result<()> {
    let (protocol, address) = args.service.get();
    let edit = ServiceEdit {
        verb: args.verb.into(),
        protocol,
        address,
        scheduler: args.scheduler,
        persistent: args.persistent,
        netmask: args.netmask,
    };
    done(&args.socket, &Request::Service(edit)).map(drop)
}

pub fn real(args: RealArgs) -> anyhow::Result<()> {
    let (protocol, address) = args.service.get();
    // ADDRESS[:PORT] or [IPV6][:PORT]; the service's port when none.
    let real = lb_user::config::parse_endpoint(&args.real, Some(address.port))
        .map(|(ip, port)| SocketAddr::new(ip, port))
        .map_err(|e| anyhow::anyhow!("-r {}: {e}", args.real))?;
    let forward = if args.masquerading {
        Some("nat")
    } else if args.ipip {
        Some("tun")
    } else if args.gatewaying {
        Some("dr")
    } else {
        None
    };
    let edit = RealEdit {
        verb: args.verb.into(),
        protocol,
        address,
        real,
        forward: forward.map(Into::into),
        weight: args.weight,
        u_threshold: args.u_threshold,
        l_threshold: args.l_threshold,
    };
    done(&args.socket, &Request::Real(edit)).map(drop)
}

/// `xlvs zero`, `xlvs reload`.
pub fn simple(socket: &Path, request: &Request) -> anyhow::Result<()> {
    done(socket, request).map(drop)
}

/// `xlvs save`: print the running configuration.
pub fn save(socket: &Path) -> anyhow::Result<()> {
    match done(socket, &Request::Save)? {
        Response::Saved(text) => {
            print!("{text}");
            Ok(())
        }
        other => bail!("unexpected answer from the director: {other:?}"),
    }
}
