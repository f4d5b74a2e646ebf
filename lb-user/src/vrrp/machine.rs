//! The VRRP state machine of RFC 5798 section 6.4 (Initialize, Backup,
//! Master), plus a Fault state for an interface that is down or has no
//! address of the instance's family (keepalived's FAULT). Pure: it is driven by events and a
//! clock passed in, and answers with the actions to carry out, in order.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// A virtual router's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Initialize,
    Backup,
    Master,
    /// The interface is down or has no address of the instance's family
    /// (IPv6: no usable link-local one): neither master nor backup until
    /// it comes back.
    Fault,
}

impl State {
    /// keepalived's spelling.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Initialize => "INIT",
            Self::Backup => "BACKUP",
            Self::Master => "MASTER",
            Self::Fault => "FAULT",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the machine needs to know of its router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// 1..=255; 255 is the address owner.
    pub priority: u8,
    /// Advertisement_Interval, in centiseconds (1..=4095).
    pub advert_interval_cs: u16,
    /// Preempt_Mode: a backup takes over from a lower-priority master.
    pub preempt: bool,
    /// No preemption until this long after start-up (keepalived's
    /// `preempt_delay`).
    pub preempt_delay: Duration,
    /// This router's primary address (IPv4: the interface's first; IPv6:
    /// its link-local one): the source of its adverts and the tie-breaker
    /// between equal priorities, compared as keepalived does (as unsigned
    /// big-endian numbers, which is the octets' order).
    pub primary: IpAddr,
}

/// What to do, in the order given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send an advertisement with this priority (ours, or 0 to resign).
    SendAdvert { priority: u8 },
    /// Take the addresses over: add them, gratuitous ARP, role hook.
    BecomeMaster,
    /// Give them up: role hook first, then remove the addresses.
    BecomeBackup,
    /// As [`Action::BecomeBackup`], with the fault hook.
    BecomeFault,
}

/// The RFC's state and timers for one virtual router.
#[derive(Clone, Debug)]
pub struct Machine {
    params: Params,
    state: State,
    /// Master_Adver_Interval, in centiseconds: learned from the master's
    /// adverts while backup, ours while master.
    master_adver_interval_cs: u16,
    /// The current master's address, when known (ours when master).
    master: Option<IpAddr>,
    adver_timer: Option<Instant>,
    master_down_timer: Option<Instant>,
    /// Preemption is allowed from this instant on.
    preempt_from: Option<Instant>,
    transitions: u64,
}

/// One centisecond.
const CS: Duration = Duration::from_millis(10);

impl Machine {
    #[must_use]
    pub fn new(params: Params) -> Self {
        let interval = params.advert_interval_cs;
        Self {
            params,
            state: State::Initialize,
            master_adver_interval_cs: interval,
            master: None,
            adver_timer: None,
            master_down_timer: None,
            preempt_from: None,
            transitions: 0,
        }
    }

    #[must_use]
    pub const fn state(&self) -> State {
        self.state
    }

    #[must_use]
    pub const fn params(&self) -> &Params {
        &self.params
    }

    /// The current master's address: ours while master, the last accepted
    /// advert's source while backup (none before one, or after it
    /// resigned).
    #[must_use]
    pub const fn master(&self) -> Option<IpAddr> {
        self.master
    }

    /// Master_Adver_Interval in centiseconds.
    #[must_use]
    pub const fn master_adver_interval_cs(&self) -> u16 {
        self.master_adver_interval_cs
    }

    /// Entries into Backup, Master or Fault.
    #[must_use]
    pub const fn transitions(&self) -> u64 {
        self.transitions
    }

    /// A new primary address (the interface's changed).
    pub fn set_primary(&mut self, primary: IpAddr) {
        self.params.primary = primary;
        if self.state == State::Master {
            self.master = Some(primary);
        }
    }

    /// Skew_Time: `((256 - Priority) * Master_Adver_Interval) / 256`.
    #[must_use]
    pub fn skew_time(&self) -> Duration {
        let interval_us = u64::from(self.master_adver_interval_cs) * 10_000;
        Duration::from_micros((256 - u64::from(self.params.priority)) * interval_us / 256)
    }

    /// Master_Down_Interval: `3 * Master_Adver_Interval + Skew_Time`.
    #[must_use]
    pub fn master_down_interval(&self) -> Duration {
        CS * 3 * u32::from(self.master_adver_interval_cs) + self.skew_time()
    }

    fn advert_interval(&self) -> Duration {
        CS * u32::from(self.params.advert_interval_cs)
    }

    /// When [`Machine::poll`] next has something to do.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Master => self.adver_timer,
            State::Backup => self.master_down_timer,
            State::Initialize | State::Fault => None,
        }
    }

    /// The Startup event (also the way out of Fault).
    pub fn startup(&mut self, now: Instant) -> Vec<Action> {
        if !matches!(self.state, State::Initialize | State::Fault) {
            return Vec::new();
        }
        self.preempt_from = Some(now + self.params.preempt_delay);
        if self.params.priority == 255 {
            self.become_master(now)
        } else {
            self.master_adver_interval_cs = self.params.advert_interval_cs;
            self.master = None;
            self.become_backup(now)
        }
    }

    /// The Shutdown event: back to Initialize. A master resigns with a
    /// priority-0 advert once its addresses are gone; every state gives its
    /// addresses up.
    pub fn shutdown(&mut self, _now: Instant) -> Vec<Action> {
        let was = self.state;
        self.state = State::Initialize;
        self.adver_timer = None;
        self.master_down_timer = None;
        self.master = None;
        match was {
            State::Master => vec![Action::BecomeBackup, Action::SendAdvert { priority: 0 }],
            _ => vec![Action::BecomeBackup],
        }
    }

    /// The interface went down or lost its address.
    pub fn fault(&mut self, _now: Instant) -> Vec<Action> {
        if self.state == State::Fault {
            return Vec::new();
        }
        self.state = State::Fault;
        self.transitions += 1;
        self.adver_timer = None;
        self.master_down_timer = None;
        self.master = None;
        vec![Action::BecomeFault]
    }

    /// Fires the timer that is due, if any.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            State::Backup if self.master_down_timer.is_some_and(|t| t <= now) => self.become_master(now),
            State::Master if self.adver_timer.is_some_and(|t| t <= now) => {
                self.adver_timer = Some(now + self.advert_interval());
                vec![Action::SendAdvert { priority: self.params.priority }]
            }
            _ => Vec::new(),
        }
    }

    /// An advertisement for our VRID that passed every check.
    pub fn advert(&mut self, now: Instant, src: IpAddr, priority: u8, interval_cs: u16) -> Vec<Action> {
        match self.state {
            State::Backup => {
                if priority == 0 {
                    // The master resigned: take over after the skew only.
                    self.master = None;
                    self.master_down_timer = Some(now + self.skew_time());
                } else if !self.params.preempt
                    || priority >= self.params.priority
                    || self.preempt_from.is_some_and(|t| now < t)
                {
                    self.master_adver_interval_cs = interval_cs;
                    self.master = Some(src);
                    self.master_down_timer = Some(now + self.master_down_interval());
                }
                // Else a lower priority we preempt: discarded, so the
                // Master_Down_Timer runs out.
                Vec::new()
            }
            State::Master => {
                if priority == 0 {
                    self.adver_timer = Some(now + self.advert_interval());
                    vec![Action::SendAdvert { priority: self.params.priority }]
                } else if priority > self.params.priority
                    || (priority == self.params.priority && src > self.params.primary)
                {
                    self.adver_timer = None;
                    self.master_adver_interval_cs = interval_cs;
                    self.master = Some(src);
                    self.become_backup(now)
                } else {
                    Vec::new()
                }
            }
            State::Initialize | State::Fault => Vec::new(),
        }
    }

    fn become_master(&mut self, now: Instant) -> Vec<Action> {
        self.state = State::Master;
        self.transitions += 1;
        self.master_down_timer = None;
        self.master_adver_interval_cs = self.params.advert_interval_cs;
        self.master = Some(self.params.primary);
        self.adver_timer = Some(now + self.advert_interval());
        vec![Action::SendAdvert { priority: self.params.priority }, Action::BecomeMaster]
    }

    fn become_backup(&mut self, now: Instant) -> Vec<Action> {
        self.state = State::Backup;
        self.transitions += 1;
        self.adver_timer = None;
        self.master_down_timer = Some(now + self.master_down_interval());
        vec![Action::BecomeBackup]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::{Ipv4Addr, Ipv6Addr};

    const US: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));
    const LOWER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 4));
    const HIGHER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 6));

    fn params(priority: u8) -> Params {
        Params { priority, advert_interval_cs: 100, preempt: true, preempt_delay: Duration::ZERO, primary: US }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const SEND: Action = Action::SendAdvert { priority: 100 };

    /// A machine started as backup at `t0`.
    fn backup(p: Params) -> (Machine, Instant) {
        let t0 = Instant::now();
        let mut m = Machine::new(p);
        assert_eq!(m.startup(t0), [Action::BecomeBackup]);
        (m, t0)
    }

    /// A machine that became master at `t0 + 3.61 s` (priority 100).
    fn master() -> (Machine, Instant) {
        let (mut m, t0) = backup(params(100));
        let t = t0 + m.master_down_interval();
        assert_eq!(m.poll(t), [SEND, Action::BecomeMaster]);
        (m, t)
    }

    #[test]
    fn intervals_and_skew() {
        let m = Machine::new(params(100));
        // (256 - 100) * 1 s / 256 = 609.375 ms; 3 s + skew.
        assert_eq!(m.skew_time(), Duration::from_micros(609_375));
        assert_eq!(m.master_down_interval(), Duration::from_micros(3_609_375));
        let m = Machine::new(Params { advert_interval_cs: 4095, ..params(1) });
        assert_eq!(m.skew_time(), Duration::from_micros(255 * 40_950_000 / 256));
        let m = Machine::new(params(254));
        assert_eq!(m.skew_time(), Duration::from_micros(7_812));
    }

    #[test]
    fn startup_goes_to_backup_then_master_after_master_down() {
        let (mut m, t0) = backup(params(100));
        assert_eq!((m.state(), m.master(), m.transitions()), (State::Backup, None, 1));
        assert_eq!(m.deadline(), Some(t0 + Duration::from_micros(3_609_375)));
        assert!(m.poll(t0 + ms(3600)).is_empty());
        assert_eq!(m.poll(t0 + ms(3610)), [SEND, Action::BecomeMaster]);
        assert_eq!((m.state(), m.master(), m.transitions()), (State::Master, Some(US), 2));
        // Adverts every interval from then on.
        assert_eq!(m.deadline(), Some(t0 + ms(4610)));
        assert!(m.poll(t0 + ms(4609)).is_empty());
        assert_eq!(m.poll(t0 + ms(4610)), [SEND]);
        assert_eq!(m.deadline(), Some(t0 + ms(5610)));
        assert_eq!(m.transitions(), 2);
    }

    #[test]
    fn the_owner_is_master_at_once() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(255));
        assert_eq!(m.startup(t0), [Action::SendAdvert { priority: 255 }, Action::BecomeMaster]);
        assert_eq!((m.state(), m.master()), (State::Master, Some(US)));
        assert_eq!(m.deadline(), Some(t0 + ms(1000)));
        // Even with preemption off and a delay set.
        let mut m = Machine::new(Params { preempt: false, preempt_delay: ms(60_000), ..params(255) });
        assert_eq!(m.startup(t0)[1], Action::BecomeMaster);
        // Nobody outranks it: an equal priority from a higher address does
        // (both claim to own the addresses; the RFC's tie-break decides).
        assert!(m.advert(t0, HIGHER, 254, 100).is_empty());
        assert_eq!(m.advert(t0, HIGHER, 255, 100), [Action::BecomeBackup]);
    }

    #[test]
    fn backup_accepts_higher_or_equal_and_learns_the_interval() {
        let (mut m, t0) = backup(params(100));
        let t = t0 + ms(500);
        assert!(m.advert(t, LOWER, 150, 200).is_empty());
        assert_eq!(m.master(), Some(LOWER));
        assert_eq!(m.master_adver_interval_cs(), 200);
        // Master_Down_Interval from the learned 2 s: 6 s + 1.21875 s.
        assert_eq!(m.master_down_interval(), Duration::from_micros(7_218_750));
        assert_eq!(m.deadline(), Some(t + Duration::from_micros(7_218_750)));
        // Equal priority counts as a master too, whatever the address.
        let t = t + ms(1000);
        assert!(m.advert(t, LOWER, 100, 100).is_empty());
        assert_eq!(m.master_adver_interval_cs(), 100);
        assert_eq!(m.deadline(), Some(t + Duration::from_micros(3_609_375)));
        assert_eq!(m.state(), State::Backup);
        // Silence: it takes over, with its own interval again.
        assert_eq!(m.poll(t + ms(3610)), [SEND, Action::BecomeMaster]);
        assert_eq!(m.master_adver_interval_cs(), 100);
        assert_eq!(m.deadline(), Some(t + ms(4610)));
    }

    #[test]
    fn backup_preempts_a_lower_priority_master() {
        let (mut m, t0) = backup(params(100));
        assert!(m.advert(t0 + ms(100), HIGHER, 150, 100).is_empty());
        let deadline = m.deadline();
        // A lower priority is discarded: the timer is not reset...
        assert!(m.advert(t0 + ms(1100), HIGHER, 50, 100).is_empty());
        assert_eq!(m.deadline(), deadline);
        assert_eq!(m.master(), Some(HIGHER));
        // ...so the backup takes over when it runs out.
        assert_eq!(m.poll(deadline.unwrap()), [SEND, Action::BecomeMaster]);
    }

    #[test]
    fn without_preemption_a_lower_priority_master_stays() {
        let (mut m, t0) = backup(Params { preempt: false, ..params(100) });
        let t = t0 + ms(1000);
        assert!(m.advert(t, LOWER, 50, 300).is_empty());
        assert_eq!((m.master(), m.master_adver_interval_cs()), (Some(LOWER), 300));
        assert_eq!(m.deadline(), Some(t + m.master_down_interval()));
        for i in 1..=10 {
            assert!(m.advert(t + ms(3000 * i), LOWER, 50, 300).is_empty());
            assert!(m.poll(t + ms(3000 * i + 100)).is_empty());
        }
        assert_eq!(m.state(), State::Backup);
        // A master that resigns is still taken over after the skew.
        let t = t + ms(40_000);
        assert!(m.advert(t, LOWER, 0, 300).is_empty());
        assert_eq!(m.master(), None);
        assert_eq!(m.deadline(), Some(t + m.skew_time()));
    }

    #[test]
    fn preempt_delay_holds_preemption_after_startup_only() {
        let (mut m, t0) = backup(Params { preempt_delay: ms(10_000), ..params(100) });
        // Within the delay a lower-priority master is accepted as master.
        for i in 0..9 {
            let t = t0 + ms(1000 * i);
            assert!(m.advert(t, LOWER, 50, 100).is_empty());
            assert_eq!(m.deadline(), Some(t + m.master_down_interval()));
            assert!(m.poll(t + ms(999)).is_empty());
        }
        assert_eq!(m.master(), Some(LOWER));
        // From the delay on it is discarded, and the backup takes over.
        let deadline = m.deadline().unwrap();
        assert!(m.advert(t0 + ms(10_000), LOWER, 50, 100).is_empty());
        assert!(m.advert(t0 + ms(11_000), LOWER, 50, 100).is_empty());
        assert_eq!(m.deadline(), Some(deadline));
        assert_eq!(m.poll(deadline), [SEND, Action::BecomeMaster]);
        // No master at all during the delay is no preemption: the backup
        // takes over after Master_Down_Interval as usual.
        let (mut m, t0) = backup(Params { preempt_delay: ms(60_000), ..params(100) });
        assert_eq!(m.poll(t0 + ms(3610)), [SEND, Action::BecomeMaster]);
    }

    #[test]
    fn backup_takes_over_after_skew_when_the_master_resigns() {
        let (mut m, t0) = backup(params(100));
        let t = t0 + ms(1000);
        assert!(m.advert(t, HIGHER, 200, 100).is_empty());
        let t = t + ms(500);
        assert!(m.advert(t, HIGHER, 0, 100).is_empty());
        assert_eq!(m.deadline(), Some(t + Duration::from_micros(609_375)));
        assert!(m.poll(t + ms(609)).is_empty());
        assert_eq!(m.poll(t + ms(610)), [SEND, Action::BecomeMaster]);
        // The skew follows the learned interval.
        let (mut m, t0) = backup(params(192));
        assert!(m.advert(t0, HIGHER, 200, 400).is_empty());
        assert!(m.advert(t0, HIGHER, 0, 400).is_empty());
        assert_eq!(m.deadline(), Some(t0 + ms(1000)));
    }

    #[test]
    fn master_answers_a_resignation_at_once() {
        let (mut m, t) = master();
        let t = t + ms(300);
        assert_eq!(m.advert(t, LOWER, 0, 100), [SEND]);
        assert_eq!(m.deadline(), Some(t + ms(1000)));
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn master_yields_to_a_higher_priority() {
        let (mut m, t) = master();
        let t = t + ms(200);
        assert_eq!(m.advert(t, LOWER, 101, 50), [Action::BecomeBackup]);
        assert_eq!((m.state(), m.master(), m.master_adver_interval_cs()), (State::Backup, Some(LOWER), 50));
        assert_eq!(m.deadline(), Some(t + ms(1500) + Duration::from_micros(304_687)));
        assert_eq!(m.transitions(), 3);
    }

    #[test]
    fn master_keeps_its_role_over_a_lower_priority() {
        let (mut m, t) = master();
        let deadline = m.deadline();
        assert!(m.advert(t + ms(10), HIGHER, 99, 100).is_empty());
        assert_eq!((m.state(), m.deadline(), m.master()), (State::Master, deadline, Some(US)));
    }

    #[test]
    fn ties_go_to_the_higher_address() {
        let (mut m, t) = master();
        // Equal priority from a lower address: we stay.
        assert!(m.advert(t, LOWER, 100, 100).is_empty());
        assert_eq!(m.state(), State::Master);
        // From a higher one: we yield.
        assert_eq!(m.advert(t, HIGHER, 100, 100), [Action::BecomeBackup]);
        assert_eq!(m.master(), Some(HIGHER));
        // Our own address is no tie to break.
        let (mut m, t) = master();
        assert!(m.advert(t, US, 100, 100).is_empty());
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn shutdown_resigns_a_master_only() {
        let (mut m, t) = master();
        assert_eq!(m.shutdown(t), [Action::BecomeBackup, Action::SendAdvert { priority: 0 }]);
        assert_eq!((m.state(), m.deadline(), m.master()), (State::Initialize, None, None));
        // Nothing happens in Initialize.
        assert!(m.advert(t, HIGHER, 200, 100).is_empty());
        assert!(m.poll(t + ms(100_000)).is_empty());
        let (mut m, t0) = backup(params(100));
        assert_eq!(m.shutdown(t0), [Action::BecomeBackup]);
        assert_eq!(m.deadline(), None);
        // And it can start again.
        assert_eq!(m.startup(t0), [Action::BecomeBackup]);
    }

    #[test]
    fn fault_and_recovery() {
        let (mut m, t) = master();
        assert_eq!(m.fault(t), [Action::BecomeFault]);
        assert!(m.fault(t).is_empty());
        assert_eq!((m.state(), m.deadline(), m.master(), m.transitions()), (State::Fault, None, None, 3));
        assert!(m.advert(t, HIGHER, 200, 100).is_empty());
        assert!(m.poll(t + ms(100_000)).is_empty());
        // Recovery is a new start-up: backup first.
        let t = t + ms(5000);
        assert_eq!(m.startup(t), [Action::BecomeBackup]);
        assert_eq!(m.deadline(), Some(t + m.master_down_interval()));
        // startup while running does nothing.
        assert!(m.startup(t).is_empty());
        // A fault while backup.
        assert_eq!(m.fault(t), [Action::BecomeFault]);
        assert_eq!(m.transitions(), 5);
        // Shutting down from Fault still gives the addresses up.
        assert_eq!(m.shutdown(t), [Action::BecomeBackup]);
    }

    #[test]
    fn primary_changes() {
        let (mut m, t) = master();
        m.set_primary(LOWER);
        assert_eq!(m.master(), Some(LOWER));
        // The tie-break now uses the new address.
        assert_eq!(m.advert(t, US, 100, 100), [Action::BecomeBackup]);
    }

    /// IPv6 routers break ties by their link-local addresses, compared
    /// octet by octet as keepalived's memcmp of the addresses does.
    #[test]
    fn ipv6_ties_go_to_the_higher_link_local() {
        let ll = |last: u16| IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0x00ff, 0, 0, last));
        let (mut m, t0) = backup(Params { primary: ll(0x0200), ..params(100) });
        let t = t0 + m.master_down_interval();
        assert_eq!(m.poll(t), [SEND, Action::BecomeMaster]);
        assert_eq!(m.master(), Some(ll(0x0200)));
        assert!(m.advert(t, ll(0x01ff), 100, 100).is_empty());
        assert_eq!(m.state(), State::Master);
        assert_eq!(m.advert(t, ll(0x0201), 100, 100), [Action::BecomeBackup]);
        assert_eq!(m.master(), Some(ll(0x0201)));
    }
}
