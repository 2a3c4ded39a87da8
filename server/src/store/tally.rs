//! What both stores keep beside their database: the state their log
//! makes, the head, the changes logged since the snapshot, the covered ones
//! still in the log, and when to write the next snapshot.

use confab_proto::server::{Change, State};

use super::check::{Head, Loaded};
use super::{DEFAULT_COMPACT_EVERY, Seqs, covered_by_snapshot};

/// A store's own account of what it committed.
pub(super) struct Tally {
    /// Everything committed so far.
    pub(super) state: State,
    /// The last committed record.
    pub(super) head: Head,
    /// Changes in the log after the snapshot.
    pub(super) log_len: u64,
    /// Changes the snapshot covers that are still in the log, oldest and
    /// newest: each commit deletes a few.
    pub(super) covered: Option<Seqs>,
    /// Logged changes that trigger a snapshot.
    pub(super) compact_every: u64,
}

impl Tally {
    /// What a load found.
    pub(super) fn loaded(loaded: Loaded) -> Tally {
        let Loaded { state, head, log_len, covered_from } = loaded;
        let covered = covered_from.map(|from| (from, head.seq - log_len as i64));
        Tally { state, head, log_len, covered, compact_every: DEFAULT_COMPACT_EVERY }
    }

    /// A commit of `changes`, logged as `records` rows, landed at `head`
    /// and left `covered`. True if a snapshot is due.
    #[must_use]
    pub(super) fn committed(&mut self, head: Head, covered: Option<Seqs>, records: usize, changes: &[Change]) -> bool {
        self.head = head;
        self.covered = covered;
        self.log_len += records as u64;
        for change in changes {
            self.state.apply(change);
        }
        self.log_len >= self.compact_every
    }

    /// A snapshot of the state landed as `head`; `deleted`: its transaction
    /// also deleted the log it covers (a migration), otherwise the commits
    /// after it will.
    pub(super) fn snapshotted(&mut self, head: Head, deleted: bool) {
        if !deleted {
            self.covered = covered_by_snapshot(self.covered, head.seq, self.log_len);
        }
        self.head = head;
        self.log_len = 0;
    }

    /// Changes the snapshot covers that the log still holds.
    pub(super) fn covered_len(&self) -> u64 {
        self.covered.map_or(0, |(from, to)| (to - from + 1) as u64)
    }
}
