//! The TCP and WebSocket transports' refusals, logged at most once per interval with
//! their counts per reason since the previous line (never one line per
//! refused connection: a flood would turn into a log flood).

use std::time::{Duration, Instant};

use confab_transports::tcp::{TcpRefusals, TcpServer};
use tracing::{info, warn};

/// At most one line per this interval.
pub(super) const INTERVAL: Duration = Duration::from_secs(10);

/// What was logged last, and when.
#[derive(Debug)]
pub(super) struct RefusalLog {
    interval: Duration,
    logged: TcpRefusals,
    last: Option<Instant>,
}

impl RefusalLog {
    pub(super) fn new(interval: Duration) -> RefusalLog {
        RefusalLog { interval, logged: TcpRefusals::default(), last: None }
    }

    /// The counts to log now, if any are new and the last line is at least
    /// an interval old; they then count as logged.
    pub(super) fn take(&mut self, now: Instant, current: TcpRefusals) -> Option<TcpRefusals> {
        let new = current.since(&self.logged);
        if new.total() == 0 || self.last.is_some_and(|t| now < t + self.interval) {
            return None;
        }
        self.logged = current;
        self.last = Some(now);
        Some(new)
    }

    /// When counts not yet logged may be: the loop wakes then even if
    /// nothing else happens, so the last counts of a flood are not held back.
    pub(super) fn due(&self, current: TcpRefusals) -> Option<Instant> {
        if current.since(&self.logged).total() == 0 {
            return None;
        }
        Some(self.last.map_or_else(Instant::now, |t| t + self.interval))
    }

    /// Logs the counts of `tcp` if [`take`](RefusalLog::take) gives any.
    pub(super) fn report(&mut self, now: Instant, tcp: &TcpServer) {
        self.report_counts(now, "TCP", tcp.refusals(), tcp.handshaking(), tcp.len());
    }

    /// Logs `current` (the counts of a transport named `transport`, which
    /// holds `held` sockets, `handshaking` of them in their handshake) if
    /// [`take`](RefusalLog::take) gives any.
    pub(super) fn report_counts(
        &mut self,
        now: Instant,
        transport: &str,
        current: TcpRefusals,
        handshaking: usize,
        held: usize,
    ) {
        let Some(n) = self.take(now, current) else { return };
        let since = self.interval.as_secs();
        if n.refused() > 0 {
            warn!(
                max_connections = n.connections,
                max_handshaking = n.handshaking,
                per_source = n.per_source,
                setup_failed = n.setup,
                handshake_timed_out = n.timed_out,
                handshaking,
                held,
                "{transport} connections refused (counts per reason, at most one line per {since} s)"
            );
        } else {
            info!(
                handshake_timed_out = n.timed_out,
                handshaking, held, "{transport} handshakes timed out (at most one line per {since} s)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(per_source: u64, timed_out: u64) -> TcpRefusals {
        TcpRefusals { per_source, timed_out, ..TcpRefusals::default() }
    }

    #[test]
    fn a_flood_gives_one_line_per_interval_with_the_counts_since_the_last() {
        let start = Instant::now();
        let mut log = RefusalLog::new(INTERVAL);
        assert_eq!(log.take(start, TcpRefusals::default()), None);
        assert_eq!(log.due(TcpRefusals::default()), None);
        // The first refusal after a quiet time is logged at once.
        assert_eq!(log.take(start, refused(1, 0)), Some(refused(1, 0)));
        // 999 more within the interval: no line, but one is due at its end.
        let mut lines = 0;
        for i in 1..1000u64 {
            let now = start + Duration::from_millis(i * 5);
            lines += usize::from(log.take(now, refused(1 + i, i / 100)).is_some());
        }
        assert_eq!(lines, 0);
        assert_eq!(log.due(refused(1000, 9)), Some(start + INTERVAL));
        assert_eq!(log.take(start + INTERVAL, refused(1000, 9)), Some(refused(999, 9)));
        // Nothing new: no line and nothing due, however long it is quiet.
        assert_eq!(log.due(refused(1000, 9)), None);
        assert_eq!(log.take(start + 100 * INTERVAL, refused(1000, 9)), None);
        // The next refusal, much later, is logged at once again.
        assert_eq!(log.take(start + 100 * INTERVAL, refused(1000, 10)), Some(refused(0, 1)));
    }
}
