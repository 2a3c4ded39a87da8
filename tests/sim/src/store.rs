//! The simulated server's disk: a [`MemoryStore`] (what a restart restores
//! from), wrapped with the simulator's fault hook, a crash right after a
//! commit ([`Sim::crash_after_commit`](super::Sim::crash_after_commit)),
//! and, in cluster mode, the lease of the PostgreSQL store: a token given
//! to each node that takes the state over, and every commit fenced by it
//! (the model of `confab_lease` and of the commit statement's `FOR SHARE`
//! check, `server/src/store/lease.rs`).

use confab_proto::Durable;
use confab_proto::server::{Change, MemoryStore, ServerConfig};

/// A [`MemoryStore`] that can be armed to die right after its next commit
/// of changes: the changes are durable, and the commit fails so that no
/// frame of the turn leaves. Commits are made under the token of the node
/// making them ([`SimStore::set_writer`]) and refused, writing nothing,
/// unless it is the lease's.
#[derive(Debug, Clone)]
pub(crate) struct SimStore {
    memory: MemoryStore,
    crash_armed: bool,
    /// The lease's current token (0: no lease taken, a single node).
    lease: u64,
    /// The token of the node committing now.
    writer: u64,
    /// The token of the last commit written, and whether one was ever
    /// written under a token older than an earlier one (two owners).
    last_written: u64,
    two_owners: Option<(u64, u64)>,
    /// Commits refused because their token was not the lease's.
    pub(crate) fenced: u64,
}

/// Why a commit did not return normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The server process died right after committing: the turn's frames are never written.
    Crashed,
    /// The committing node's token is not the lease's (another node took
    /// over): nothing was written, and the node stops.
    Fenced,
}

impl SimStore {
    /// An empty disk for a server with `config`.
    pub(crate) fn new(config: &ServerConfig) -> SimStore {
        SimStore {
            memory: MemoryStore::new(config),
            crash_armed: false,
            lease: 0,
            writer: 0,
            last_written: 0,
            two_owners: None,
            fenced: 0,
        }
    }

    /// What was committed.
    pub(crate) fn memory(&self) -> &MemoryStore {
        &self.memory
    }

    /// The next commit of changes (not an empty one) is the last thing the process does, or not.
    pub(crate) fn arm_crash(&mut self, armed: bool) {
        self.crash_armed = armed;
    }

    /// A node takes the lease over: its new token (never one given before).
    pub(crate) fn take_lease(&mut self) -> u64 {
        self.lease += 1;
        self.lease
    }

    /// The node committing from now on holds `token`.
    pub(crate) fn set_writer(&mut self, token: u64) {
        self.writer = token;
    }

    /// Two commits written under tokens out of order (an older owner
    /// committed after a newer one), if that ever happened.
    pub(crate) fn two_owners(&self) -> Option<(u64, u64)> {
        self.two_owners
    }
}

impl Durable<[Change]> for SimStore {
    type Error = Fault;

    fn commit(&mut self, changes: &[Change]) -> Result<(), Fault> {
        if !changes.is_empty() {
            if self.writer != self.lease {
                self.fenced += 1;
                return Err(Fault::Fenced);
            }
            if self.writer < self.last_written && self.two_owners.is_none() {
                self.two_owners = Some((self.last_written, self.writer));
            }
            self.last_written = self.writer;
        }
        let Ok(()) = self.memory.commit(changes);
        if self.crash_armed && !changes.is_empty() {
            self.crash_armed = false;
            return Err(Fault::Crashed);
        }
        Ok(())
    }
}
