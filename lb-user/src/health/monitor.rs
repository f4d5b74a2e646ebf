//! The per-real check loop. Each real has a task of its own, so a real whose
//! checks hang delays no other. A check starts every `interval`; after
//! `warmup` its results count, and ldirectord's `failurecount` consecutive
//! failures take an up real down, `rise` consecutive successes bring it
//! back. Only changes are reported (and logged): up to down, down to up,
//! and a new dynamic weight.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::{
    sync::mpsc::UnboundedSender,
    task::JoinHandle,
    time::{Instant, sleep_until},
};

use super::{CheckError, Target, check_once};
use crate::config::Check;

/// A real changed state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub target: Target,
    /// The real's state after the change.
    pub up: bool,
    /// The weight a check chose (an external check with `dynamic_weight`),
    /// if one has; `None` means the configured weight.
    pub weight: Option<u32>,
    /// Why: the failed check's error when down, what passed when up.
    pub reason: String,
    /// How long the check that made the change took.
    pub latency: Duration,
}

/// The latest view of a real's health, for the metrics and
/// `xlvs list --health`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The state after the thresholds: what the data plane was told.
    pub up: bool,
    pub weight: Option<u32>,
    /// Checks run, including those during warmup.
    pub checks: u64,
    /// Checks failed, including those during warmup.
    pub failures: u64,
    pub last_latency: Option<Duration>,
    /// The error of the latest check; `None` when it passed.
    pub last_error: Option<String>,
}

impl Default for Status {
    fn default() -> Self {
        Self { up: true, weight: None, checks: 0, failures: 0, last_latency: None, last_error: None }
    }
}

/// The check loop of one real. Dropping it stops the loop.
#[derive(Debug)]
pub struct Monitor {
    status: Arc<Mutex<Status>>,
    task: JoinHandle<()>,
}

/// A floor under `interval`: an interval of zero would spin on the checks.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

impl Monitor {
    /// Starts checking `target` with `check`, reporting changes on `events`.
    /// The real starts up. Must be called within a tokio runtime.
    #[must_use]
    pub fn spawn(target: Target, check: Check, events: UnboundedSender<Event>) -> Self {
        Self::resume(target, check, events, true, None)
    }

    /// Starts checking a real whose state is already known (its check was
    /// replaced by a reload or an edit): it stays up or down, with its
    /// dynamic weight, until the new check's results say otherwise, so a
    /// down real does not come back just because its check changed.
    #[must_use]
    pub fn resume(target: Target, check: Check, events: UnboundedSender<Event>, up: bool, weight: Option<u32>) -> Self {
        let status = Arc::new(Mutex::new(Status { up, weight, ..Status::default() }));
        let task = tokio::spawn(run(target, check, events, Arc::clone(&status), up, weight));
        Self { status, task }
    }

    /// The latest status.
    #[must_use]
    pub fn status(&self) -> Status {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    target: Target,
    check: Check,
    events: UnboundedSender<Event>,
    status: Arc<Mutex<Status>>,
    up: bool,
    weight: Option<u32>,
) {
    let started = Instant::now();
    let counts_from = started + check.warmup;
    let interval = check.interval.max(MIN_INTERVAL);
    let mut tracker = Tracker::new(&check);
    tracker.up = up;
    tracker.weight = weight;
    let mut next = started;
    loop {
        sleep_until(next).await;
        let begun = Instant::now();
        let result = check_once(&target, &check).await;
        let now = Instant::now();
        let latency = now - begun;
        let change = if now >= counts_from { tracker.record(&result) } else { None };
        {
            let mut s = status.lock().unwrap_or_else(PoisonError::into_inner);
            s.checks += 1;
            s.failures += u64::from(result.is_err());
            s.last_latency = Some(latency);
            s.last_error = result.as_ref().err().map(ToString::to_string);
            s.up = tracker.up;
            s.weight = tracker.weight;
        }
        if change.is_some() {
            let event = describe(target, &tracker, &result, latency);
            if event.up {
                tracing::info!(real = %target, reason = %event.reason, "real up");
            } else {
                tracing::warn!(real = %target, reason = %event.reason, "real down");
            }
            if events.send(event).is_err() {
                // Nobody listens any more: the controller is shutting down.
                return;
            }
        }
        next = next_start(begun, interval, Instant::now());
    }
}

/// When the next check starts: `interval` after the start of the last, or
/// right away when the last took longer than that.
fn next_start(last_start: Instant, interval: Duration, now: Instant) -> Instant {
    (last_start + interval).max(now)
}

/// The event of a change: a change to down comes from a failed check, to
/// up or a new weight from a passed one.
fn describe(
    target: Target,
    tracker: &Tracker,
    result: &Result<Option<u32>, CheckError>,
    latency: Duration,
) -> Event {
    let reason = match (result, tracker.weight) {
        (Err(e), _) => e.to_string(),
        (Ok(_), Some(w)) => format!("check passed, weight {w}"),
        (Ok(_), None) => "check passed".to_owned(),
    };
    Event { target, up: tracker.up, weight: tracker.weight, reason, latency }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Down,
    Up,
    Weight,
}

/// The thresholds of one real, apart from any socket so that they are
/// tested alone.
#[derive(Debug)]
struct Tracker {
    up: bool,
    /// The latest weight a check chose; a check that passes without one
    /// leaves it unchanged, as keepalived's `misc_dynamic` exit 0.
    weight: Option<u32>,
    /// Consecutive failures while up, consecutive successes while down.
    streak: u32,
    failure_count: u32,
    rise: u32,
}

impl Tracker {
    fn new(check: &Check) -> Self {
        Self {
            up: true,
            weight: None,
            streak: 0,
            // 0 would mean "never counts"; the config refuses it, and 1 is
            // the only sensible reading anyway.
            failure_count: check.failure_count.max(1),
            rise: check.rise.max(1),
        }
    }

    /// Takes one counted result; returns the change it makes, if any.
    fn record<E>(&mut self, result: &Result<Option<u32>, E>) -> Option<Change> {
        match (self.up, result) {
            (true, Ok(weight)) => {
                self.streak = 0;
                match *weight {
                    Some(w) if self.weight != Some(w) => {
                        self.weight = Some(w);
                        Some(Change::Weight)
                    }
                    _ => None,
                }
            }
            (true, Err(_)) => {
                self.streak += 1;
                (self.streak >= self.failure_count).then(|| {
                    self.up = false;
                    self.streak = 0;
                    Change::Down
                })
            }
            (false, Ok(weight)) => {
                if weight.is_some() {
                    self.weight = *weight;
                }
                self.streak += 1;
                (self.streak >= self.rise).then(|| {
                    self.up = true;
                    self.streak = 0;
                    Change::Up
                })
            }
            (false, Err(_)) => {
                self.streak = 0;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tokio::{net::TcpListener, sync::mpsc};

    use super::super::testutil::*;
    use super::*;
    use crate::config::{CheckKind, Protocol};

    /// Waits for the next event, at most `within`.
    async fn next_event(rx: &mut mpsc::UnboundedReceiver<Event>, within: Duration) -> Event {
        match tokio::time::timeout(within, rx.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => panic!("the monitor stopped"),
            Err(tokio::time::error::Elapsed { .. }) => panic!("no event within {within:?}"),
        }
    }

    /// Asserts that no event comes for `quiet`.
    async fn no_event(rx: &mut mpsc::UnboundedReceiver<Event>, quiet: Duration) {
        if let Ok(e) = tokio::time::timeout(quiet, rx.recv()).await {
            panic!("unexpected event {e:?}");
        }
    }

    fn tracker(failure_count: u32, rise: u32) -> Tracker {
        Tracker::new(&Check { failure_count, rise, ..Check::default() })
    }

    /// Feeds results ('+' up, '-' down, a digit: up with that weight) and
    /// returns the changes.
    fn feed(t: &mut Tracker, results: &str) -> Vec<Option<Change>> {
        results
            .chars()
            .map(|c| {
                let r: Result<Option<u32>, ()> = match c {
                    '+' => Ok(None),
                    '-' => Err(()),
                    d => Ok(Some(d.to_digit(10).expect("a digit"))),
                };
                t.record(&r)
            })
            .collect()
    }

    const D: Option<Change> = Some(Change::Down);
    const U: Option<Change> = Some(Change::Up);
    const W: Option<Change> = Some(Change::Weight);

    #[test]
    fn failure_count_consecutive_failures_take_it_down() {
        let mut t = tracker(3, 1);
        assert_eq!(feed(&mut t, "--+--+---"), [None, None, None, None, None, None, None, None, D]);
        assert!(!t.up);
    }

    #[test]
    fn rise_consecutive_successes_bring_it_back() {
        let mut t = tracker(1, 3);
        assert_eq!(feed(&mut t, "-++-+++"), [D, None, None, None, None, None, U]);
        assert!(t.up);
        // The streak starts over after each change.
        assert_eq!(feed(&mut t, "-+++"), [D, None, None, U]);
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let mut t = tracker(0, 0);
        assert_eq!(feed(&mut t, "-+"), [D, U]);
    }

    #[test]
    fn weight_changes_while_up() {
        let mut t = tracker(1, 1);
        assert_eq!(feed(&mut t, "33+5"), [W, None, None, W]);
        assert_eq!(t.weight, Some(5));
        // Down, then back with a new weight: one change, to up.
        assert_eq!(feed(&mut t, "-7"), [D, U]);
        assert_eq!(t.weight, Some(7));
    }

    #[test]
    fn next_check_is_an_interval_after_the_last_start() {
        let start = Instant::now();
        let interval = Duration::from_millis(100);
        assert_eq!(next_start(start, interval, start + Duration::from_millis(30)), start + interval);
        let late = start + Duration::from_millis(250);
        assert_eq!(next_start(start, interval, late), late);
    }

    fn connect_check(failure_count: u32, rise: u32) -> Check {
        Check {
            kind: CheckKind::Connect { send: None, expect: None },
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
            failure_count,
            rise,
            ..Check::default()
        }
    }

    /// A TCP server that the test turns off (nothing listens: refused) and on
    /// again on the same port.
    struct Toggle {
        port: u16,
        listener: Option<TcpListener>,
    }

    impl Toggle {
        async fn new() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            Self { port: listener.local_addr().expect("addr").port(), listener: Some(listener) }
        }
        fn off(&mut self) {
            self.listener = None;
        }
        async fn on(&mut self) {
            self.listener =
                Some(TcpListener::bind((Ipv4Addr::LOCALHOST, self.port)).await.expect("rebind"));
        }
    }

    #[tokio::test]
    async fn failure_count_and_rise_on_a_real_server() {
        let mut server = Toggle::new().await;
        let t = target(Protocol::Tcp, server.port);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let m = Monitor::spawn(t, connect_check(2, 2), tx);

        // Up from the start, and passing checks say nothing.
        no_event(&mut rx, Duration::from_millis(350)).await;
        let s = m.status();
        assert!(s.up && s.checks >= 2 && s.failures == 0, "{s:?}");
        assert!(s.last_latency.is_some() && s.last_error.is_none());

        server.off();
        let down = next_event(&mut rx, Duration::from_secs(5)).await;
        let at_down = m.status();
        assert!(!down.up);
        assert_eq!(down.target, t);
        assert_eq!(down.reason, format!("connect to 127.0.0.1:{}: connection refused", server.port));
        assert_eq!(at_down.failures, 2, "down on the second failure: {at_down:?}");
        assert!(!at_down.up);

        // Still down, still failing: nothing more.
        no_event(&mut rx, Duration::from_millis(300)).await;
        assert!(m.status().last_error.is_some());

        server.on().await;
        let up = next_event(&mut rx, Duration::from_secs(5)).await;
        let at_up = m.status();
        assert!(up.up);
        assert_eq!(up.reason, "check passed");
        assert_eq!(up.weight, None);
        let passes = (at_up.checks - at_down.checks) - (at_up.failures - at_down.failures);
        assert_eq!(passes, 2, "up on the second success: {at_down:?} then {at_up:?}");

        no_event(&mut rx, Duration::from_millis(300)).await;
        assert!(m.status().up);
    }

    #[tokio::test]
    async fn warmup_results_do_not_count() {
        let warmup = Duration::from_millis(500);
        let check = Check { warmup, ..connect_check(1, 1) };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let spawned = Instant::now();
        let m = Monitor::spawn(target(Protocol::Tcp, closed_port()), check, tx);
        let down = next_event(&mut rx, Duration::from_secs(5)).await;
        assert!(!down.up);
        assert!(spawned.elapsed() >= warmup, "down after {:?}", spawned.elapsed());
        let s = m.status();
        assert!(s.failures >= 3, "failed checks during warmup were run: {s:?}");
    }

    #[tokio::test]
    async fn dynamic_weight_changes_are_events() {
        let dir = std::env::temp_dir().join(format!("xlvs-monitor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let code = dir.join("code");
        std::fs::write(&code, "5").expect("write");
        let check = Check {
            kind: CheckKind::External {
                command: format!("f() {{ exit $(cat {}); }}; f", code.display()),
                dynamic_weight: true,
            },
            ..connect_check(1, 1)
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _m = Monitor::spawn(target(Protocol::Tcp, 80), check, tx);
        let e = next_event(&mut rx, Duration::from_secs(5)).await;
        assert_eq!((e.up, e.weight, e.reason.as_str()), (true, Some(3), "check passed, weight 3"));
        // Exit 0 keeps the weight: no event.
        std::fs::write(&code, "0").expect("write");
        no_event(&mut rx, Duration::from_millis(400)).await;
        std::fs::write(&code, "12").expect("write");
        let e = next_event(&mut rx, Duration::from_secs(5)).await;
        assert_eq!((e.up, e.weight), (true, Some(10)));
        std::fs::write(&code, "1").expect("write");
        let e = next_event(&mut rx, Duration::from_secs(5)).await;
        assert_eq!((e.up, e.reason.as_str()), (false, "exit status 1"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A real whose check hangs until its timeout does not hold back another.
    #[tokio::test]
    async fn a_hung_real_delays_no_other() {
        let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let silent_port = silent.local_addr().expect("addr").port();
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let hung = Check {
            kind: CheckKind::Smtp { helo: "x".to_owned() },
            timeout: Duration::from_secs(30),
            ..connect_check(1, 1)
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let a = Monitor::spawn(target(Protocol::Tcp, silent_port), hung, tx.clone());
        let dead = closed_port();
        let _b = Monitor::spawn(target(Protocol::Tcp, dead), connect_check(1, 1), tx);
        let e = next_event(&mut rx, Duration::from_secs(2)).await;
        assert_eq!(e.target.port, dead);
        assert_eq!(a.status().checks, 0, "the hung check is still running");
    }

    #[tokio::test]
    async fn dropping_the_monitor_stops_it() {
        let check = Check { warmup: Duration::from_mins(1), ..connect_check(1, 1) };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let m = Monitor::spawn(target(Protocol::Tcp, closed_port()), check, tx);
        drop(m);
        // The task's sender goes with it.
        let closed = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
        assert!(matches!(closed, Ok(None)), "{closed:?}");
    }
}
