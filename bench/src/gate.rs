//! A reusable barrier with a deadline and an abort: the clients' setup phases.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Instant;

use crate::BenchError;

#[derive(Debug, Default)]
struct State {
    generation: u64,
    arrived: usize,
    /// When the last phase was released.
    released_at: Option<Instant>,
    aborted: Option<String>,
}

/// Every party waits until all have arrived, the deadline passes, or someone aborts.
#[derive(Debug)]
pub(crate) struct Gate {
    parties: usize,
    state: Mutex<State>,
    cv: Condvar,
}

impl Gate {
    pub(crate) fn new(parties: usize) -> Gate {
        Gate { parties, state: Mutex::new(State::default()), cv: Condvar::new() }
    }

    /// Waits for every party; returns the instant the phase was released (the same for all).
    pub(crate) fn wait(&self, deadline: Instant) -> Result<Instant, BenchError> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(why) = &s.aborted {
            return Err(BenchError(format!("setup aborted: {why}")));
        }
        let generation = s.generation;
        s.arrived += 1;
        if s.arrived == self.parties {
            s.arrived = 0;
            s.generation += 1;
            let at = Instant::now();
            s.released_at = Some(at);
            self.cv.notify_all();
            return Ok(at);
        }
        loop {
            if let Some(why) = &s.aborted {
                return Err(BenchError(format!("setup aborted: {why}")));
            }
            if s.generation != generation {
                return Ok(s.released_at.unwrap_or_else(Instant::now));
            }
            let now = Instant::now();
            if now >= deadline {
                let why = "setup timed out waiting for the other clients".to_owned();
                s.aborted = Some(why.clone());
                self.cv.notify_all();
                return Err(BenchError(why));
            }
            s = self.cv.wait_timeout(s, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Releases every waiter with an error; later waits fail at once. The first reason is kept.
    pub(crate) fn abort(&self, why: String) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.aborted.is_none() {
            s.aborted = Some(why);
        }
        self.cv.notify_all();
    }

    /// Why the setup was aborted, if it was.
    pub(crate) fn aborted(&self) -> Option<String> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).aborted.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn releases_all_with_one_instant() {
        let gate = Arc::new(Gate::new(3));
        let deadline = Instant::now() + Duration::from_secs(5);
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let g = Arc::clone(&gate);
                std::thread::spawn(move || (g.wait(deadline).unwrap(), g.wait(deadline).unwrap()))
            })
            .collect();
        let r: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(r.iter().all(|x| x.0 == r[0].0 && x.1 == r[0].1));
    }

    #[test]
    fn deadline_and_abort() {
        let gate = Gate::new(2);
        assert!(gate.wait(Instant::now() + Duration::from_millis(10)).is_err());
        assert!(gate.wait(Instant::now() + Duration::from_secs(5)).is_err(), "aborted by the timeout");
        let gate = Gate::new(2);
        gate.abort("stop".into());
        assert_eq!(gate.aborted().as_deref(), Some("stop"));
        assert!(gate.wait(Instant::now() + Duration::from_secs(5)).is_err());
    }
}
