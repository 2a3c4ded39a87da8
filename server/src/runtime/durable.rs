//! Where the loop makes the core's changes durable: [`Durable`], with the
//! SQLite [`Store`](crate::store::Store) for real servers and
//! [`MemoryStore`] for throwaway ones.

use confab_proto::ServerConfig;
use confab_proto::server::{Change, State};

/// Where the loop makes changes durable.
pub trait Durable: Send {
    /// Makes every change of one loop turn durable, atomically (all or none).
    ///
    /// # Errors
    /// The changes may not be durable: the loop stops without writing the
    /// turn's frames.
    fn commit(&mut self, changes: &[Change]) -> Result<(), String>;
}

/// A [`Durable`] that keeps the state in memory only, for tests and for
/// embedding a throwaway server.
#[derive(Debug)]
pub struct MemoryStore {
    state: State,
}

impl MemoryStore {
    /// An empty store for `config`.
    #[must_use]
    pub fn new(config: &ServerConfig) -> MemoryStore {
        MemoryStore { state: State::new(config.room_history, config.dedup_window) }
    }

    /// What was committed.
    #[must_use]
    pub fn state(&self) -> &State {
        &self.state
    }
}

impl Durable for MemoryStore {
    fn commit(&mut self, changes: &[Change]) -> Result<(), String> {
        for c in changes {
            self.state.apply(c);
        }
        Ok(())
    }
}

impl Durable for crate::store::Store {
    fn commit(&mut self, changes: &[Change]) -> Result<(), String> {
        crate::store::Store::commit(self, changes).map_err(|e| e.to_string())
    }
}
