//! [`HashPace`]: how fast password-hash jobs come back, and so how long a
//! new one would wait.
//!
//! Queueing a hash whose requester has given up wastes the hash and delays
//! everyone behind it: 1,100 parallel logins once queued 1,024 jobs that
//! were answered over 34 s, long after the clients' 15 s had run out. The
//! desk refuses a job that would not be answered within
//! `ServerConfig::login_wait`, with a `retry_after_ms` that says when the
//! queue will have drained enough.
//!
//! The pace is measured, not configured: the core knows neither the worker
//! count nor the machine. It is the mean time between two completions while
//! the workers were saturated, that is while at least [`SATURATED`] jobs
//! stayed out between them (more than any pool has threads, so no worker
//! idled and the gap is the pool's service time, not the arrival rate).
//! The estimate belongs to one busy period: it is forgotten when the queue
//! empties, and it counts only once [`MIN_SAMPLES`] gaps were measured, so
//! one stall (the process paused, a swap storm) cannot close the desk: a
//! check is never refused for its wait while fewer than [`SATURATED`] are
//! queued. Until the pace is known, only `max_pending_jobs` bounds the
//! queue.

use std::time::Duration;

use crate::Instant;

/// Jobs that must stay out between two completions for their gap to count.
pub(crate) const SATURATED: usize = 8;

/// Weight of a new gap in the running mean: 1/8.
const WEIGHT_SHIFT: u32 = 3;

/// Gaps measured in a busy period before its pace counts.
pub(crate) const MIN_SAMPLES: u32 = 4;

/// The measured pace of the hash workers (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct HashPace {
    /// The running mean of saturated gaps in this busy period, in nanoseconds.
    gap_ns: Option<u64>,
    /// Gaps measured in this busy period.
    samples: u32,
    /// The last completion, if at least [`SATURATED`] jobs stayed out after it.
    busy_since: Option<Instant>,
}

impl HashPace {
    /// A job came back at `now`, leaving `remaining` out.
    pub(crate) fn finished(&mut self, now: Instant, remaining: usize) {
        if remaining == 0 {
            // The busy period is over: its pace says nothing of the next one.
            *self = HashPace::default();
            return;
        }
        if let Some(last) = self.busy_since {
            self.samples = self.samples.saturating_add(1);
            let sample = u64::try_from(now.saturating_duration_since(last).as_nanos()).unwrap_or(u64::MAX);
            self.gap_ns = Some(match self.gap_ns {
                None => sample,
                Some(mean) => mean - (mean >> WEIGHT_SHIFT) + (sample >> WEIGHT_SHIFT),
            });
        }
        self.busy_since = (remaining >= SATURATED).then_some(now);
    }

    /// The mean time between two completions under load, once measured
    /// ([`MIN_SAMPLES`] gaps in this busy period).
    pub(crate) fn gap(&self) -> Option<Duration> {
        self.gap_ns.filter(|_| self.samples >= MIN_SAMPLES).map(Duration::from_nanos)
    }

    /// How long a job handed out behind `out` others would wait for its
    /// answer, once the pace is known.
    pub(crate) fn wait(&self, out: usize) -> Option<Duration> {
        let jobs = u32::try_from(out.saturating_add(1)).unwrap_or(u32::MAX);
        Some(self.gap()?.saturating_mul(jobs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn only_gaps_under_saturation_count() {
        let t0 = Instant::now();
        let mut pace = HashPace::default();
        // Light load: one job out at a time, 10 s apart. Says nothing of the pool's pace.
        for i in 1..=5u32 {
            pace.finished(t0 + 10_000 * MS * i, 0);
        }
        assert_eq!(pace.gap(), None);
        assert_eq!(pace.wait(100), None);
        // Saturated: 30 ms between completions with the queue full.
        let t1 = t0 + Duration::from_secs(60);
        for i in 0..100u32 {
            pace.finished(t1 + 30 * MS * i, 500);
        }
        let gap = pace.gap().unwrap();
        assert!(gap >= 29 * MS && gap <= 31 * MS, "{gap:?}");
        assert_eq!(pace.wait(0), Some(gap));
        assert_eq!(pace.wait(299), Some(gap * 300));
        // The queue drains below SATURATED: the gap after that is not measured.
        pace.finished(t1 + 3_000 * MS, SATURATED - 1);
        let drained = pace.gap();
        pace.finished(t1 + 60_000 * MS, 1);
        assert_eq!(pace.gap(), drained, "an idle gap after the load is not a sample");
        // The queue empties: the busy period and its pace are over.
        pace.finished(t1 + 61_000 * MS, 0);
        assert_eq!(pace.gap(), None);
    }

    #[test]
    fn one_stall_is_not_a_pace() {
        let t0 = Instant::now();
        let mut pace = HashPace::default();
        // 8 out, then the process is paused for 11 s between two completions.
        pace.finished(t0, SATURATED);
        pace.finished(t0 + 11_000 * MS, SATURATED - 1);
        assert_eq!(pace.gap(), None, "one gap is not a pace");
        // Under sustained load the stall is averaged away.
        let t1 = t0 + 11_000 * MS;
        for i in 0..200u32 {
            pace.finished(t1 + 30 * MS * i, 100);
        }
        let gap = pace.gap().unwrap();
        assert!(gap < 40 * MS, "{gap:?}");
    }

    #[test]
    fn the_mean_follows_a_slower_pool() {
        let t0 = Instant::now();
        let mut pace = HashPace::default();
        for i in 0..50u32 {
            pace.finished(t0 + 10 * MS * i, 100);
        }
        let t1 = t0 + 500 * MS;
        for i in 1..=60u32 {
            pace.finished(t1 + 100 * MS * i, 100);
        }
        let gap = pace.gap().unwrap();
        assert!(gap > 95 * MS && gap <= 100 * MS, "{gap:?}");
    }
}
