//! Failed-login rate limiting: at most `burst` failures per `window`, per
//! account and per session.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// The failures of one key within the window.
#[derive(Debug, Default)]
pub(crate) struct FailureWindow {
    failures: VecDeque<Instant>,
}

impl FailureWindow {
    fn prune(&mut self, now: Instant, window: Duration) {
        while self.failures.front().is_some_and(|t| now.saturating_duration_since(*t) >= window) {
            self.failures.pop_front();
        }
    }

    /// How long until another attempt is allowed, if blocked now.
    pub(crate) fn retry_after(&mut self, now: Instant, window: Duration, burst: u32) -> Option<Duration> {
        self.prune(now, window);
        if self.failures.len() < burst as usize {
            return None;
        }
        let oldest = *self.failures.front()?;
        Some((oldest + window).saturating_duration_since(now).max(Duration::from_millis(1)))
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
        self.failures.is_empty()
    }
}

/// Failure windows per account name, bounded in number so that guesses at
/// random names cannot grow memory.
#[derive(Debug)]
pub(crate) struct AccountLimiter {
    accounts: BTreeMap<String, FailureWindow>,
    cap: usize,
}

impl AccountLimiter {
    pub(crate) fn new(cap: usize) -> Self {
        AccountLimiter { accounts: BTreeMap::new(), cap }
    }

    pub(crate) fn retry_after(&mut self, name: &str, now: Instant, window: Duration, burst: u32) -> Option<Duration> {
        self.accounts.get_mut(name)?.retry_after(now, window, burst)
    }

    pub(crate) fn record(&mut self, name: &str, now: Instant, window: Duration, burst: u32) {
        if !self.accounts.contains_key(name) && self.accounts.len() >= self.cap {
            self.accounts.retain(|_, w| !w.is_idle(now, window));
            if self.accounts.len() >= self.cap {
                // Still full of live windows: forget the first (deterministic) one.
                let first = self.accounts.keys().next().cloned();
                if let Some(k) = first {
                    self.accounts.remove(&k);
                }
            }
        }
        self.accounts.entry(name.to_owned()).or_default().record(now, window, burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_burst_and_reopens_after_window() {
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        let mut f = FailureWindow::default();
        for i in 0..3 {
            assert_eq!(f.retry_after(t0 + Duration::from_secs(i), w, 3), None);
            f.record(t0 + Duration::from_secs(i), w, 3);
        }
        assert_eq!(f.retry_after(t0 + Duration::from_secs(10), w, 3), Some(Duration::from_secs(50)));
        assert_eq!(f.retry_after(t0 + Duration::from_secs(60), w, 3), None);
    }

    #[test]
    fn account_map_is_bounded() {
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        let mut l = AccountLimiter::new(4);
        for i in 0..100 {
            l.record(&format!("user{i}"), t0, w, 3);
        }
        assert!(l.accounts.len() <= 4);
    }
}
