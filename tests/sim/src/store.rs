//! The simulated server's disk: a [`MemoryStore`] (what a restart restores
//! from), wrapped with the simulator's fault hook, a crash right after a
//! commit ([`Sim::crash_after_commit`](super::Sim::crash_after_commit)).

use confab_proto::Durable;
use confab_proto::server::{Change, MemoryStore, ServerConfig};

/// A [`MemoryStore`] that can be armed to die right after its next commit
/// of changes: the changes are durable, and the commit fails so that no
/// frame of the turn leaves.
#[derive(Debug, Clone)]
pub(crate) struct SimStore {
    memory: MemoryStore,
    crash_armed: bool,
}

/// The server process died right after committing: the turn's frames are never written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Crashed;

impl SimStore {
    /// An empty disk for a server with `config`.
    pub(crate) fn new(config: &ServerConfig) -> SimStore {
        SimStore { memory: MemoryStore::new(config), crash_armed: false }
    }

    /// What was committed.
    pub(crate) fn memory(&self) -> &MemoryStore {
        &self.memory
    }

    /// The next commit of changes (not an empty one) is the last thing the process does, or not.
    pub(crate) fn arm_crash(&mut self, armed: bool) {
        self.crash_armed = armed;
    }
}

impl Durable<[Change]> for SimStore {
    type Error = Crashed;

    fn commit(&mut self, changes: &[Change]) -> Result<(), Crashed> {
        let Ok(()) = self.memory.commit(changes);
        if self.crash_armed && !changes.is_empty() {
            self.crash_armed = false;
            return Err(Crashed);
        }
        Ok(())
    }
}
