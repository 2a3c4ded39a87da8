//! Time as the core sees it: always passed in, never read.

use std::time::{Duration, Instant};

/// The current time, given to every call that can change state.
///
/// `instant` drives timers (keepalive, idle timeout, rate-limit windows);
/// `unix_ms` is wall-clock time for what outlives the process or travels on
/// the wire (token expiry, message timestamps, retention). A simulator
/// advances both together from a seed-independent start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub instant: Instant,
    /// Wall-clock time, Unix milliseconds.
    pub unix_ms: u64,
}

impl Now {
    /// A time from its two readings.
    #[must_use]
    pub fn new(instant: Instant, unix_ms: u64) -> Now {
        Now { instant, unix_ms }
    }

    /// This time moved forward by `d` on both clocks.
    #[must_use]
    pub fn advance(self, d: Duration) -> Now {
        Now { instant: self.instant + d, unix_ms: self.unix_ms.saturating_add(d.as_millis() as u64) }
    }
}
