//! [`MemoryStore`]: the server's changes kept in memory, for servers whose
//! state need not outlive the process (tests, the simulator, benchmarks,
//! an embedded throwaway server).

use std::convert::Infallible;

use super::{Change, ServerConfig, State};
use crate::Durable;

/// A [`Durable`] store that applies each committed batch of [`Change`]s to
/// its own [`State`]: what [`Server::restore`](super::Server::restore) is
/// given after a (simulated) crash. What was committed is kept, what was
/// not is gone, as with a real store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryStore {
    state: State,
    commits: u64,
    changes: u64,
}

impl MemoryStore {
    /// An empty store for a server with `config`.
    #[must_use]
    pub fn new(config: &ServerConfig) -> MemoryStore {
        MemoryStore::from_state(State::new(config.room_history, config.dedup_window))
    }

    /// A store already holding `state` (as if loaded from disk).
    #[must_use]
    pub fn from_state(state: State) -> MemoryStore {
        MemoryStore { state, commits: 0, changes: 0 }
    }

    /// Everything committed so far.
    #[must_use]
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Transactions committed (empty batches are not transactions).
    #[must_use]
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// Changes committed.
    #[must_use]
    pub fn changes(&self) -> u64 {
        self.changes
    }
}

impl Durable<[Change]> for MemoryStore {
    type Error = Infallible;

    /// Applies one turn's changes as one transaction; an empty batch is skipped.
    fn commit(&mut self, changes: &[Change]) -> Result<(), Infallible> {
        if changes.is_empty() {
            return Ok(());
        }
        for change in changes {
            self.state.apply(change);
        }
        self.commits += 1;
        self.changes += changes.len() as u64;
        Ok(())
    }
}
