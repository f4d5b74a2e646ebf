//! What `xlvs list` shows: a snapshot of the running director, and its
//! rendering in `ipvsadm -L -n` layouts (ipvsadm 1.31), so that scripts which
//! parse ipvsadm keep working.

use std::{collections::BTreeMap, fmt::Write as _, net::SocketAddrV4};

use serde::{Deserialize, Serialize};

/// The state of a director, as the control socket returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub conn_table_size: u32,
    pub services: Vec<ServiceView>,
    /// Reason counters of the data plane, by name.
    pub counters: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// "tcp" or "udp".
    pub protocol: String,
    pub address: SocketAddrV4,
    pub scheduler: String,
    pub reals: Vec<RealView>,
    /// The sum over the service's reals.
    pub stats: StatsView,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealView {
    pub address: SocketAddrV4,
    /// "nat", "dr" or "tun".
    pub forward: String,
    pub weight: u32,
    pub active: u64,
    pub inactive: u64,
    pub stats: StatsView,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsView {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
}

impl std::ops::Add for StatsView {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            conns: self.conns + o.conns,
            inpkts: self.inpkts + o.inpkts,
            outpkts: self.outpkts + o.outpkts,
            inbytes: self.inbytes + o.inbytes,
            outbytes: self.outbytes + o.outbytes,
        }
    }
}

/// Which `ipvsadm -L` layout to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Forward, Weight, ActiveConn, InActConn.
    Default,
    /// Conns, InPkts, OutPkts, InBytes, OutBytes.
    Stats { exact: bool },
}

fn forward_label(forward: &str) -> &'static str {
    match forward {
        "nat" => "Masq",
        "tun" => "Tunnel",
        "dr" => "Route",
        _ => "?",
    }
}

fn protocol_label(protocol: &str) -> &'static str {
    match protocol {
        "tcp" => "TCP",
        "udp" => "UDP",
        _ => "?",
    }
}

/// ipvsadm's `print_largenum`: 9 columns, with K/M/G/T from 10^8 up unless
/// `--exact`.
fn largenum(out: &mut String, n: u64, exact: bool) {
    let _ = if exact {
        let width = n.to_string().len().max(8) + 1;
        write!(out, "{n:>width$}")
    } else if n < 100_000_000 {
        write!(out, "{n:>9}")
    } else if n < 1_000_000_000 {
        write!(out, "{:>8}K", n / 1_000)
    } else if n < 100_000_000_000 {
        write!(out, "{:>8}M", n / 1_000_000)
    } else if n < 100_000_000_000_000 {
        write!(out, "{:>8}G", n / 1_000_000_000)
    } else {
        write!(out, "{:>8}T", n / 1_000_000_000_000)
    };
}

fn stats_columns(out: &mut String, s: &StatsView, exact: bool) {
    for n in [s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes] {
        largenum(out, n, exact);
    }
}

/// Renders a snapshot like `ipvsadm -L -n`: services sorted by protocol,
/// address and port, and reals by address and port.
#[must_use]
pub fn render(snapshot: &Snapshot, layout: Layout) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "IP Virtual Server version 1.2.1 (size={})", snapshot.conn_table_size);
    match layout {
        Layout::Default => {
            out.push_str("Prot LocalAddress:Port Scheduler Flags\n");
            out.push_str("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n");
        }
        Layout::Stats { .. } => {
            out.push_str("Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n");
            out.push_str("  -> RemoteAddress:Port\n");
        }
    }
    let mut services: Vec<&ServiceView> = snapshot.services.iter().collect();
    services.sort_by_key(|s| (protocol_label(&s.protocol), *s.address.ip(), s.address.port()));
    for service in services {
        let name = format!("{:<4} {}", protocol_label(&service.protocol), service.address);
        match layout {
            Layout::Default => {
                let _ = writeln!(out, "{name} {}", service.scheduler);
            }
            Layout::Stats { exact } => {
                let _ = write!(out, "{name:<33}");
                stats_columns(&mut out, &service.stats, exact);
                out.push('\n');
            }
        }
        let mut reals: Vec<&RealView> = service.reals.iter().collect();
        reals.sort_by_key(|r| (*r.address.ip(), r.address.port()));
        for real in reals {
            match layout {
                Layout::Default => {
                    let _ = writeln!(
                        out,
                        "  -> {:<28} {:<7} {:<6} {:<10} {:<10}",
                        real.address.to_string(),
                        forward_label(&real.forward),
                        real.weight,
                        real.active,
                        real.inactive
                    );
                }
                Layout::Stats { exact } => {
                    let _ = write!(out, "  -> {:<28}", real.address.to_string());
                    stats_columns(&mut out, &real.stats, exact);
                    out.push('\n');
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let stats = |c: u64| StatsView { conns: c, inpkts: c * 6, outpkts: c * 5, inbytes: c * 400, outbytes: c * 600 };
        let real = |a: &str, f: &str, w: u32, act: u64, ina: u64, c: u64| RealView {
            address: a.parse().unwrap(),
            forward: f.into(),
            weight: w,
            active: act,
            inactive: ina,
            stats: stats(c),
        };
        Snapshot {
            conn_table_size: 4096,
            services: vec![
                ServiceView {
                    protocol: "udp".into(),
                    address: "10.100.0.100:53".parse().unwrap(),
                    scheduler: "rr".into(),
                    reals: vec![real("10.0.1.11:53", "nat", 1, 0, 2, 2)],
                    stats: stats(2),
                },
                ServiceView {
                    protocol: "tcp".into(),
                    address: "10.100.0.100:80".parse().unwrap(),
                    scheduler: "rr".into(),
                    reals: vec![
                        real("10.0.1.12:8080", "nat", 2, 1, 0, 1),
                        real("10.0.1.11:8080", "nat", 1, 0, 3, 3),
                    ],
                    stats: stats(4),
                },
                ServiceView {
                    protocol: "tcp".into(),
                    address: "10.100.0.9:80".parse().unwrap(),
                    scheduler: "rr".into(),
                    reals: vec![real("10.0.1.13:80", "dr", 1, 0, 0, 0), real("10.0.1.2:80", "tun", 0, 0, 0, 0)],
                    stats: stats(0),
                },
            ],
            counters: BTreeMap::new(),
        }
    }

    #[test]
    fn default_layout_matches_ipvsadm() {
        let expected = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.100.0.9:80 rr
  -> 10.0.1.2:80                  Tunnel  0      0          0         
  -> 10.0.1.13:80                 Route   1      0          0         
TCP  10.100.0.100:80 rr
  -> 10.0.1.11:8080               Masq    1      0          3         
  -> 10.0.1.12:8080               Masq    2      1          0         
UDP  10.100.0.100:53 rr
  -> 10.0.1.11:53                 Masq    1      0          2         
";
        assert_eq!(render(&snapshot(), Layout::Default), expected);
    }

    #[test]
    fn stats_layout_matches_ipvsadm() {
        let text = render(&snapshot(), Layout::Stats { exact: false });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes");
        assert_eq!(lines[2], "  -> RemoteAddress:Port");
        assert_eq!(lines[6], "TCP  10.100.0.100:80                     4       24       20     1600     2400");
        assert_eq!(lines[7], "  -> 10.0.1.11:8080                      3       18       15     1200     1800");
    }

    #[test]
    fn large_numbers_get_suffixes_unless_exact() {
        let mut s = String::new();
        largenum(&mut s, 99_999_999, false);
        largenum(&mut s, 123_456_789, false);
        largenum(&mut s, 12_345_678_901, false);
        assert_eq!(s, " 99999999  123456K   12345M");
        let mut e = String::new();
        largenum(&mut e, 12_345_678_901, true);
        largenum(&mut e, 7, true);
        assert_eq!(e, " 12345678901        7");
    }
}
