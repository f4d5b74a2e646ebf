//! How long an idle connection lives: IPVS's timeout table, of which
//! `ipvsadm --set tcp tcpfin udp` (and so `xlvs set --timeout`) changes three
//! entries: TCP ESTABLISHED, TCP FIN_WAIT and UDP. Every other TCP state
//! keeps IPVS's default (`tcp_state::DEFAULT_TIMEOUTS`).

use lb_common::{IPPROTO_TCP, tcp_state};
use serde::{Deserialize, Serialize};

/// ipvsadm's `MAX_TIMEOUT`: the longest timeout it accepts, 31 days.
pub const MAX_TIMEOUT: u32 = 86_400 * 31;

/// The three timeouts an operator can change, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// TCP ESTABLISHED.
    pub tcp: u32,
    /// TCP FIN_WAIT.
    pub tcpfin: u32,
    pub udp: u32,
}

impl Default for Timeouts {
    /// IPVS's defaults: 900 120 300.
    fn default() -> Self {
        Self {
            tcp: tcp_state::DEFAULT_TIMEOUTS[tcp_state::ESTABLISHED as usize],
            tcpfin: tcp_state::DEFAULT_TIMEOUTS[tcp_state::FIN_WAIT as usize],
            udp: tcp_state::DEFAULT_UDP_TIMEOUT,
        }
    }
}

impl Timeouts {
    /// `ipvsadm --set`: each non-zero value replaces its timeout, and 0
    /// leaves it as it is.
    #[must_use]
    pub const fn updated(self, tcp: u32, tcpfin: u32, udp: u32) -> Self {
        Self {
            tcp: if tcp != 0 { tcp } else { self.tcp },
            tcpfin: if tcpfin != 0 { tcpfin } else { self.tcpfin },
            udp: if udp != 0 { udp } else { self.udp },
        }
    }

    /// The idle timeout, in seconds, of a connection of protocol `proto` in
    /// TCP state `state` (ignored for UDP).
    #[must_use]
    pub fn secs(&self, proto: u8, state: u8) -> u32 {
        if proto != IPPROTO_TCP {
            return self.udp;
        }
        match state {
            tcp_state::ESTABLISHED => self.tcp,
            tcp_state::FIN_WAIT => self.tcpfin,
            // An unknown state is treated as NONE, the shortest-lived.
            other => tcp_state::DEFAULT_TIMEOUTS
                .get(other as usize)
                .copied()
                .unwrap_or(tcp_state::DEFAULT_TIMEOUTS[tcp_state::NONE as usize]),
        }
    }

    /// [`Timeouts::secs`] in nanoseconds, the unit of the connection table's
    /// timestamps.
    #[must_use]
    pub fn ns(&self, proto: u8, state: u8) -> u64 {
        u64::from(self.secs(proto, state)) * 1_000_000_000
    }
}

#[cfg(test)]
mod tests {
    use lb_common::IPPROTO_UDP;

    use super::*;

    #[test]
    fn defaults_are_ipvs_defaults() {
        let t = Timeouts::default();
        assert_eq!((t.tcp, t.tcpfin, t.udp), (900, 120, 300));
        assert_eq!(t.secs(IPPROTO_TCP, tcp_state::ESTABLISHED), 900);
        assert_eq!(t.secs(IPPROTO_TCP, tcp_state::SYN_RECV), 60);
        assert_eq!(t.secs(IPPROTO_TCP, tcp_state::CLOSE), 10);
        assert_eq!(t.secs(IPPROTO_TCP, 200), 2);
        assert_eq!(t.secs(IPPROTO_UDP, tcp_state::NONE), 300);
        assert_eq!(t.ns(IPPROTO_UDP, 0), 300_000_000_000);
    }

    #[test]
    fn set_changes_three_states_and_zero_keeps_a_value() {
        let t = Timeouts::default().updated(3600, 0, 10);
        assert_eq!((t.tcp, t.tcpfin, t.udp), (3600, 120, 10));
        assert_eq!(t.secs(IPPROTO_TCP, tcp_state::ESTABLISHED), 3600);
        assert_eq!(t.secs(IPPROTO_TCP, tcp_state::FIN_WAIT), 120);
        // TIME_WAIT is not FIN_WAIT: ipvsadm's tcpfin does not touch it.
        assert_eq!(t.secs(IPPROTO_TCP, tcp_state::TIME_WAIT), 120);
        assert_eq!(t.updated(0, 5, 0).tcpfin, 5);
        assert_eq!(t.updated(0, 0, 0), t);
    }
}
