//! Password-guess limiting: at most `burst` failed attempts per `window`, per
//! account, per source and per session. An attempt counts from the moment its
//! hash is handed out, not when it fails: an attempt *in flight* takes a slot
//! of the budget, and an account has at most one hash in flight, so parallel
//! connections cannot race past the check.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::Instant;

/// The wait suggested while an attempt of the same key is being hashed.
pub(crate) const IN_FLIGHT_RETRY: Duration = Duration::from_secs(1);

/// Why an attempt is refused before hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// `burst` failures within the window: retry after this.
    Failures(Duration),
    /// Attempts being hashed fill the budget: retry after [`IN_FLIGHT_RETRY`].
    InFlight,
}

impl Blocked {
    /// How long to wait.
    pub(crate) fn wait(self) -> Duration {
        match self {
            Blocked::Failures(d) => d,
            Blocked::InFlight => IN_FLIGHT_RETRY,
        }
    }
}

/// The failures of one key within the window, and its attempts in flight.
#[derive(Debug, Default)]
pub(crate) struct FailureWindow {
    failures: VecDeque<Instant>,
    in_flight: u32,
}

impl FailureWindow {
    fn prune(&mut self, now: Instant, window: Duration) {
        while self.failures.front().is_some_and(|t| now.saturating_duration_since(*t) >= window) {
            self.failures.pop_front();
        }
    }

    /// Why another attempt is not allowed now, if it is not: `burst`
    /// failures within the window, or failures and attempts in flight
    /// together at `burst`, or `max_in_flight` attempts being hashed.
    pub(crate) fn blocked(
        &mut self,
        now: Instant,
        window: Duration,
        burst: u32,
        max_in_flight: u32,
    ) -> Option<Blocked> {
        self.prune(now, window);
        let failed = self.failures.len();
        if failed >= burst as usize {
            let oldest = *self.failures.front()?;
            let wait = (oldest + window).saturating_duration_since(now).max(Duration::from_millis(1));
            return Some(Blocked::Failures(wait));
        }
        if self.in_flight >= max_in_flight || failed + self.in_flight as usize >= burst as usize {
            return Some(Blocked::InFlight);
        }
        None
    }

    /// An attempt was handed out for hashing.
    pub(crate) fn begin(&mut self) {
        self.in_flight += 1;
    }

    /// An attempt handed out by [`begin`](Self::begin) came back.
    pub(crate) fn end(&mut self, now: Instant, window: Duration, burst: u32, failed: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if failed {
            self.record(now, window, burst);
        }
    }

    pub(crate) fn record(&mut self, now: Instant, window: Duration, burst: u32) {
        self.prune(now, window);
        self.failures.push_back(now);
        while self.failures.len() > burst as usize {
            self.failures.pop_front();
        }
    }

    fn is_idle(&mut self, now: Instant, window: Duration) -> bool {
        self.prune(now, window);
        self.failures.is_empty() && self.in_flight == 0
    }

    fn is_locked(&self, burst: u32) -> bool {
        self.failures.len() >= burst as usize
    }
}

#[derive(Debug, Default)]
struct Tracked {
    window: FailureWindow,
    /// Recency: the limiter's tick when the key was last checked or updated.
    used: u64,
}

/// Failure windows per key (account name, source), bounded in number so that
/// guesses at random names cannot grow memory.
///
/// When full, idle windows are forgotten first; then the least recently used
/// window that is not locked; then the least recently used locked one. A
/// window with an attempt in flight is never forgotten. So clearing a locked
/// account's record takes `cap` other locked windows newer than it (`burst`
/// hashed failures each), not a choice of names. A B-tree: the keys are
/// chosen by peers (no hash to flood), and eviction scans in key order.
#[derive(Debug)]
pub(crate) struct Limiter<K> {
    entries: BTreeMap<K, Tracked>,
    cap: usize,
    tick: u64,
}

impl<K: Ord + Clone> Limiter<K> {
    pub(crate) fn new(cap: usize) -> Self {
        Limiter { entries: BTreeMap::new(), cap: cap.max(1), tick: 0 }
    }

    fn touch(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Why `key` may not make another attempt now, if it may not (see [`FailureWindow::blocked`]).
    pub(crate) fn blocked(
        &mut self,
        key: &K,
        now: Instant,
        window: Duration,
        burst: u32,
        max_in_flight: u32,
    ) -> Option<Blocked> {
        let tick = self.touch();
        let t = self.entries.get_mut(key)?;
        t.used = tick;
        t.window.blocked(now, window, burst, max_in_flight)
    }

    /// An attempt of `key` was handed out for hashing.
    pub(crate) fn begin(&mut self, key: &K, now: Instant, window: Duration, burst: u32) {
        self.entry(key, now, window, burst).window.begin();
    }

    /// An attempt of `key` came back, `failed` or not.
    pub(crate) fn end(&mut self, key: &K, now: Instant, window: Duration, burst: u32, failed: bool) {
        self.entry(key, now, window, burst).window.end(now, window, burst, failed);
    }

    fn entry(&mut self, key: &K, now: Instant, window: Duration, burst: u32) -> &mut Tracked {
        if !self.entries.contains_key(key) && self.entries.len() >= self.cap {
            self.entries.retain(|_, t| !t.window.is_idle(now, window));
            if self.entries.len() >= self.cap {
                // Still full of live windows: forget the least recently used, unlocked ones first.
                let victim = self
                    .entries
                    .iter()
                    .filter(|(_, t)| t.window.in_flight == 0)
                    .min_by_key(|(_, t)| (t.window.is_locked(burst), t.used))
                    .map(|(k, _)| k.clone());
                if let Some(k) = victim {
                    self.entries.remove(&k);
                }
            }
        }
        let tick = self.touch();
        let t = self.entries.entry(key.clone()).or_default();
        t.used = tick;
        t
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(60);

    #[test]
    fn blocks_after_burst_and_reopens_after_window() {
        let t0 = Instant::now();
        let mut f = FailureWindow::default();
        for i in 0..3 {
            assert_eq!(f.blocked(t0 + Duration::from_secs(i), W, 3, 1), None);
            f.record(t0 + Duration::from_secs(i), W, 3);
        }
        assert_eq!(f.blocked(t0 + Duration::from_secs(10), W, 3, 1), Some(Blocked::Failures(Duration::from_secs(50))));
        assert_eq!(f.blocked(t0 + Duration::from_secs(60), W, 3, 1), None);
    }

    #[test]
    fn attempts_in_flight_take_a_slot() {
        let t0 = Instant::now();
        let mut f = FailureWindow::default();
        f.begin();
        assert_eq!(f.blocked(t0, W, 3, 1), Some(Blocked::InFlight), "one in flight at most");
        assert_eq!(f.blocked(t0, W, 3, 5), None);
        f.begin();
        f.record(t0, W, 3);
        assert_eq!(f.blocked(t0, W, 3, 5), Some(Blocked::InFlight), "1 failure + 2 in flight = burst");
        f.end(t0, W, 3, false);
        assert_eq!(f.blocked(t0, W, 3, 5), None);
    }

    #[test]
    fn the_map_is_bounded() {
        let t0 = Instant::now();
        let mut l = Limiter::new(4);
        for i in 0..100 {
            l.end(&format!("user{i}"), t0, W, 3, true);
        }
        assert!(l.len() <= 4);
    }

    #[test]
    fn a_locked_window_outlives_newer_unlocked_ones() {
        let t0 = Instant::now();
        let mut l = Limiter::new(4);
        for _ in 0..3 {
            l.end(&"victim".to_owned(), t0, W, 3, true);
        }
        for i in 0..100 {
            l.end(&format!("a{i:03}"), t0, W, 3, true);
        }
        assert!(l.blocked(&"victim".to_owned(), t0, W, 3, 1).is_some());
        assert!(l.len() <= 4);
    }
}
