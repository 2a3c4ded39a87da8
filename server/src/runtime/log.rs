//! The structured log lines of the core's events, rate-limited.
//!
//! A flood (wrong-password logins, bad frames, connections refused by the
//! thousand) must not become a flood of log lines: 73,000 lines in 20 s
//! were seen before this limit. Each kind of line (what happened, and the
//! status code for refusals and closes) gets [`LogLimits::burst`] lines per
//! [`LogLimits::interval`]; beyond that lines are only counted, and when the
//! interval ends one summary line gives the counts of what was left out,
//! kind by kind. A line is never both written and counted, so the written
//! lines plus the summaries' counts are exactly the events.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use confab_proto::ServerLog;
use tracing::{info, warn};

/// How many lines of each kind the log takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Lines of one kind written per interval; more are counted and summed up.
    pub burst: u32,
    /// The interval (at least one second).
    pub interval: Duration,
}

impl Default for LogLimits {
    /// 20 lines of each kind per 10 s.
    fn default() -> Self {
        LogLimits { burst: 20, interval: Duration::from_secs(10) }
    }
}

/// A kind of line: its message, and the status code where it has one.
type Kind = (&'static str, u16);

fn kind(e: &ServerLog) -> Kind {
    match e {
        ServerLog::Registered { .. } => ("account registered", 0),
        ServerLog::LoggedIn { .. } => ("logged in", 0),
        ServerLog::Rejected { code, .. } => ("request refused", *code),
        ServerLog::BadFrame { .. } => ("bad frame", 0),
        ServerLog::SessionClosed { code, .. } => ("session closed", *code),
        ServerLog::MessageExpired { .. } => ("undelivered private message expired", 0),
        ServerLog::BadMail { .. } => ("mail from another partition did not decode", 0),
        ServerLog::PushDropped { .. } => ("room message not pushed to a partition behind on its mail", 0),
    }
}

/// What a finished interval left out: lines counted, not written, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Suppressed {
    /// The interval's length.
    pub(super) interval: Duration,
    /// Per kind, the lines left out (never zero).
    pub(super) counts: BTreeMap<Kind, u64>,
}

impl Suppressed {
    fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// `request refused 401 x72000, session closed 429 x1000`.
    fn detail(&self) -> String {
        let mut parts = Vec::with_capacity(self.counts.len());
        for ((what, code), n) in &self.counts {
            parts.push(if *code == 0 { format!("{what} x{n}") } else { format!("{what} {code} x{n}") });
        }
        parts.join(", ")
    }
}

/// Counts lines per kind over fixed intervals (see the module docs). Pure:
/// every call takes the time.
#[derive(Debug)]
pub(super) struct Limiter {
    limits: LogLimits,
    /// Start of the current interval; `None` until the first line.
    since: Option<Instant>,
    /// Lines of each kind seen in the current interval.
    seen: BTreeMap<Kind, u64>,
}

impl Limiter {
    pub(super) fn new(limits: LogLimits) -> Limiter {
        let interval = limits.interval.max(Duration::from_secs(1));
        Limiter { limits: LogLimits { interval, ..limits }, since: None, seen: BTreeMap::new() }
    }

    /// Ends the current interval if it is over; returns what it left out, if anything.
    #[must_use]
    pub(super) fn roll(&mut self, now: Instant) -> Option<Suppressed> {
        let since = self.since?;
        if now.saturating_duration_since(since) < self.limits.interval {
            return None;
        }
        self.since = None;
        let burst = u64::from(self.limits.burst);
        let counts: BTreeMap<Kind, u64> = std::mem::take(&mut self.seen)
            .into_iter()
            .filter_map(|(k, n)| n.checked_sub(burst).filter(|&left| left > 0).map(|left| (k, left)))
            .collect();
        (!counts.is_empty()).then_some(Suppressed { interval: self.limits.interval, counts })
    }

    /// Counts a line of `kind`; true if it is to be written. Call
    /// [`roll`](Self::roll) first.
    fn admit(&mut self, now: Instant, kind: Kind) -> bool {
        self.since.get_or_insert(now);
        let n = self.seen.entry(kind).or_insert(0);
        *n += 1;
        *n <= u64::from(self.limits.burst)
    }

    /// When the current interval ends, if a line was left out in it (the
    /// loop wakes up then to write the summary).
    pub(super) fn deadline(&self) -> Option<Instant> {
        let burst = u64::from(self.limits.burst);
        let since = self.since?;
        self.seen.values().any(|&n| n > burst).then(|| since + self.limits.interval)
    }
}

/// The loop's log: the core's events through a [`Limiter`].
#[derive(Debug)]
pub(super) struct EventLog {
    limiter: Limiter,
}

impl EventLog {
    pub(super) fn new(limits: LogLimits) -> EventLog {
        EventLog { limiter: Limiter::new(limits) }
    }

    /// Writes the line of `e`, unless its kind is over its burst.
    pub(super) fn event(&mut self, now: Instant, e: &ServerLog) {
        self.tick(now);
        if self.limiter.admit(now, kind(e)) {
            log_event(e);
        }
    }

    /// Writes the summary of an interval that is over.
    pub(super) fn tick(&mut self, now: Instant) {
        if let Some(s) = self.limiter.roll(now) {
            warn!(
                suppressed = s.total(),
                interval_secs = s.interval.as_secs(),
                "log lines left out (more than the burst of their kind): {}",
                s.detail()
            );
        }
    }

    /// When [`tick`](Self::tick) has a summary to write.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.limiter.deadline()
    }
}

/// One structured log line per core event. Events never carry content or
/// secrets (the core's contract); reasons are the texts sent to peers.
fn log_event(e: &ServerLog) {
    match e {
        ServerLog::Registered { username } => info!(user = %username, "account registered"),
        ServerLog::LoggedIn { session, username } => info!(session = session.0, user = %username, "logged in"),
        ServerLog::Rejected { session, opcode, code, reason } => {
            info!(session = session.0, ?opcode, code, %reason, "request refused");
        }
        ServerLog::BadFrame { session, error } => warn!(session = session.0, %error, "bad frame"),
        ServerLog::SessionClosed { session, code, reason } => {
            info!(session = session.0, code, %reason, "session closed");
        }
        ServerLog::MessageExpired { from, to, seq } => {
            info!(from = %from, to = %to, seq, "undelivered private message expired");
        }
        ServerLog::BadMail { from, seq, reason } => {
            warn!(from_partition = from, seq, %reason, "mail from another partition did not decode");
        }
        ServerLog::PushDropped { to, room, waiting } => {
            warn!(to_partition = to, room = %room, waiting, "room message not pushed to a partition behind on its mail");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFUSED: Kind = ("request refused", 429);
    const CLOSED: Kind = ("session closed", 401);

    fn limiter() -> (Limiter, Instant) {
        (Limiter::new(LogLimits { burst: 3, interval: Duration::from_secs(10) }), Instant::now())
    }

    #[test]
    fn a_flood_writes_the_burst_then_one_summary_per_interval() {
        let (mut l, t0) = limiter();
        let mut written = 0;
        for i in 0..73_000u64 {
            let now = t0 + Duration::from_micros(i * 100); // 7.3 s: one interval
            assert_eq!(l.roll(now), None);
            written += u64::from(l.admit(now, REFUSED));
        }
        assert_eq!(written, 3);
        assert_eq!(l.deadline(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(l.roll(t0 + Duration::from_secs(9)), None, "not before the interval ends");
        let s = l.roll(t0 + Duration::from_secs(10)).expect("a summary");
        assert_eq!(s.counts, BTreeMap::from([(REFUSED, 72_997)]));
        assert_eq!(s.detail(), "request refused 429 x72997");
        assert_eq!(l.deadline(), None);
        assert_eq!(l.roll(t0 + Duration::from_secs(30)), None, "one summary per interval");
    }

    #[test]
    fn kinds_have_their_own_burst_and_a_quiet_interval_says_nothing() {
        let (mut l, t0) = limiter();
        let admitted: Vec<bool> = [REFUSED, REFUSED, CLOSED, REFUSED, REFUSED, CLOSED, CLOSED, CLOSED]
            .into_iter()
            .map(|k| l.admit(t0, k))
            .collect();
        assert_eq!(admitted, [true, true, true, true, false, true, true, false]);
        let s = l.roll(t0 + Duration::from_secs(11)).expect("a summary");
        assert_eq!(s.counts, BTreeMap::from([(REFUSED, 1), (CLOSED, 1)]));
        // A new interval starts with a fresh burst; within it, nothing is left out.
        assert!((0..3).all(|_| l.admit(t0 + Duration::from_secs(12), REFUSED)));
        assert_eq!(l.deadline(), None);
        assert_eq!(l.roll(t0 + Duration::from_secs(30)), None);
    }

    #[test]
    fn a_kind_under_its_burst_is_not_summed_up_when_another_is_over() {
        // Found by tests/tests/hostile_load.rs: the debug server panicked
        // ("attempt to subtract with overflow") at the end of such an interval.
        let (mut l, t0) = limiter();
        assert!(l.admit(t0, CLOSED));
        for _ in 0..5 {
            let _ = l.admit(t0, REFUSED);
        }
        let s = l.roll(t0 + Duration::from_secs(10)).expect("a summary");
        assert_eq!(s.counts, BTreeMap::from([(REFUSED, 2)]));
    }
}
