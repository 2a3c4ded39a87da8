//! The simulated server's durable store: a [`State`] fed the same
//! [`Change`]s the server emits, one group commit per server turn.

use confab_proto::ServerConfig;
use confab_proto::server::{Change, State};

/// An in-memory store with the commit discipline of a real adapter: what
/// is committed survives a crash, what is not is gone.
#[derive(Debug, Clone)]
pub struct MemStore {
    state: State,
    commits: u64,
    changes: u64,
}

impl MemStore {
    /// An empty store for a server with `config`.
    #[must_use]
    pub fn new(config: &ServerConfig) -> MemStore {
        MemStore { state: State::new(config.room_history, config.dedup_window), commits: 0, changes: 0 }
    }

    /// Applies one turn's changes as one transaction.
    pub fn commit(&mut self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        for change in changes {
            self.state.apply(change);
        }
        self.commits += 1;
        self.changes += changes.len() as u64;
    }

    /// Everything committed so far: what [`Server::restore`](confab_proto::Server::restore) is given.
    #[must_use]
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Transactions committed.
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
