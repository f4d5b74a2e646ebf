//! IPVS's TCP state machine (`ip_vs_proto_tcp.c`): the state a connection is
//! in decides whether it counts as active and how long it lives when idle.

/// States in IPVS's numbering (`IP_VS_TCP_S_*`).
pub const NONE: u8 = 0;
pub const ESTABLISHED: u8 = 1;
pub const SYN_SENT: u8 = 2;
pub const SYN_RECV: u8 = 3;
pub const FIN_WAIT: u8 = 4;
pub const TIME_WAIT: u8 = 5;
pub const CLOSE: u8 = 6;
pub const CLOSE_WAIT: u8 = 7;
pub const LAST_ACK: u8 = 8;
pub const LISTEN: u8 = 9;
pub const SYNACK: u8 = 10;
pub const COUNT: usize = 11;

/// Which side a segment came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to real, when the director also sees the replies (NAT).
    Input = 0,
    /// Real to client (NAT replies).
    Output = 1,
    /// Client to real, when the replies bypass the director (DR, TUN).
    InputOnly = 2,
}

const ES: u8 = ESTABLISHED;
const SS: u8 = SYN_SENT;
const SR: u8 = SYN_RECV;
const FW: u8 = FIN_WAIT;
const TW: u8 = TIME_WAIT;
const CL: u8 = CLOSE;
const CW: u8 = CLOSE_WAIT;
const LA: u8 = LAST_ACK;
const LI: u8 = LISTEN;
#[allow(dead_code, reason = "SYNACK is only reached in secure_tcp mode")]
const SA: u8 = SYNACK;

/// `tcp_states[]` from `ip_vs_proto_tcp.c`: [direction][event][state], with
/// events syn, fin, ack, rst.
#[rustfmt::skip]
const TABLE: [[[u8; COUNT]; 4]; 3] = [
    // INPUT     NO  ES  SS  SR  FW  TW  CL  CW  LA  LI  SA
    [/* syn */ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
     /* fin */ [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW],
     /* ack */ [CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
     /* rst */ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR]],
    // OUTPUT
    [/* syn */ [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
     /* fin */ [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
     /* ack */ [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
     /* rst */ [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL]],
    // INPUT-ONLY
    [/* syn */ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
     /* fin */ [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
     /* ack */ [CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
     /* rst */ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL]],
];

/// The state after a segment with `flags` (TCP flag byte) in `dir`.
/// A segment with none of RST/SYN/FIN/ACK moves the connection to CLOSE, as
/// `set_tcp_state` does.
#[inline(always)]
#[must_use]
pub fn next(state: u8, dir: Direction, flags: u8) -> u8 {
    use crate::net::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
    let event = if flags & TCP_RST != 0 {
        3
    } else if flags & TCP_SYN != 0 {
        0
    } else if flags & TCP_FIN != 0 {
        1
    } else if flags & TCP_ACK != 0 {
        2
    } else {
        return CLOSE;
    };
    let state = if (state as usize) < COUNT { state as usize } else { 0 };
    TABLE[dir as usize][event][state]
}

/// Whether a connection in `state` counts as active (`tcp_state_active`).
#[inline(always)]
#[must_use]
pub const fn is_active(state: u8) -> bool {
    matches!(state, ESTABLISHED | SYN_SENT | SYN_RECV | SYNACK)
}

/// IPVS's `is_new_conn_expected` under its default `conn_reuse_mode` of 1:
/// a client's SYN (`tcp_flags`) on its connection in TIME_WAIT or CLOSE
/// opens a new connection, scheduled afresh, unless a persistence template
/// `controlled` the old one. (A client that reuses its port soon after a
/// close would otherwise stay on the old real, and uncounted.)
#[inline(always)]
#[must_use]
pub const fn new_conn_expected(state: u8, tcp_flags: u8, controlled: bool) -> bool {
    use crate::net::{TCP_RST, TCP_SYN};
    tcp_flags & (TCP_SYN | TCP_RST) == TCP_SYN && !controlled && matches!(state, TIME_WAIT | CLOSE)
}

/// IPVS's default idle timeouts, in seconds, indexed by state.
pub const DEFAULT_TIMEOUTS: [u32; COUNT] = [2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120];
/// IPVS's default UDP timeout, in seconds.
pub const DEFAULT_UDP_TIMEOUT: u32 = 300;

/// The names ipvsadm prints.
pub const NAMES: [&str; COUNT] = [
    "NONE",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "SYNACK",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

    #[test]
    fn only_a_syn_on_a_closed_uncontrolled_connection_reschedules() {
        for state in 0..COUNT as u8 {
            let closed = state == TIME_WAIT || state == CLOSE;
            assert_eq!(new_conn_expected(state, TCP_SYN, false), closed, "{}", NAMES[state as usize]);
            assert!(!new_conn_expected(state, TCP_SYN, true), "a template's connection stays");
            assert!(!new_conn_expected(state, TCP_ACK, false));
            assert!(!new_conn_expected(state, TCP_SYN | TCP_RST, false));
        }
        // IPVS asks only for the SYN bit.
        assert!(new_conn_expected(TIME_WAIT, TCP_SYN | TCP_ACK, false));
    }

    #[test]
    fn nat_handshake_and_close() {
        let mut s = NONE;
        s = next(s, Direction::Input, TCP_SYN);
        assert_eq!(s, SYN_RECV);
        s = next(s, Direction::Output, TCP_SYN | TCP_ACK);
        assert_eq!(s, SYN_RECV);
        s = next(s, Direction::Input, TCP_ACK);
        assert_eq!(s, ESTABLISHED);
        assert!(is_active(s));
        s = next(s, Direction::Input, TCP_FIN | TCP_ACK);
        assert_eq!(s, CLOSE_WAIT);
        assert!(!is_active(s));
        s = next(s, Direction::Output, TCP_FIN | TCP_ACK);
        assert_eq!(s, TIME_WAIT);
    }

    #[test]
    fn input_only_sees_client_fin_as_fin_wait() {
        let mut s = next(NONE, Direction::InputOnly, TCP_SYN);
        s = next(s, Direction::InputOnly, TCP_ACK);
        assert_eq!(s, ESTABLISHED);
        s = next(s, Direction::InputOnly, TCP_FIN | TCP_ACK);
        assert_eq!(s, FIN_WAIT);
        assert_eq!(next(s, Direction::InputOnly, TCP_RST), CLOSE);
    }

    #[test]
    fn no_flags_closes_and_bad_state_is_safe() {
        assert_eq!(next(ESTABLISHED, Direction::Input, 0), CLOSE);
        assert_eq!(next(200, Direction::Input, TCP_SYN), SYN_RECV);
    }

    #[test]
    fn timeouts_match_ipvs_defaults() {
        assert_eq!(DEFAULT_TIMEOUTS[ESTABLISHED as usize], 900);
        assert_eq!(DEFAULT_TIMEOUTS[SYN_RECV as usize], 60);
        assert_eq!(DEFAULT_TIMEOUTS[CLOSE as usize], 10);
    }
}
