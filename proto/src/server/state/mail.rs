//! The numbers of the mail between partitions (docs/PARTITIONS.md,
//! "Mail"): per target, the next sequence number to send; per source, the
//! last one applied. The items themselves are the store's (its outbox),
//! never the state's.

use std::collections::BTreeMap;

use crate::server::partition::PartitionId;

/// Mail numbers, per partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailBook {
    /// Per target: the next sequence number to send (absent: 1).
    pub(super) next: BTreeMap<PartitionId, u64>,
    /// Per source: the last sequence number applied (absent: 0).
    pub(super) applied: BTreeMap<PartitionId, u64>,
}

impl MailBook {
    /// The sequence number the next item to `to` gets (the first is 1).
    #[must_use]
    pub fn next_to(&self, to: PartitionId) -> u64 {
        self.next.get(&to).copied().unwrap_or(1)
    }

    /// The last item of `from` applied here (0: none yet).
    #[must_use]
    pub fn applied_from(&self, from: PartitionId) -> u64 {
        self.applied.get(&from).copied().unwrap_or(0)
    }

    pub(super) fn mark_sent(&mut self, to: PartitionId, seq: u64) {
        let next = self.next.entry(to).or_insert(1);
        *next = (*next).max(seq.saturating_add(1));
    }

    pub(super) fn mark_applied(&mut self, from: PartitionId, seq: u64) {
        let last = self.applied.entry(from).or_insert(0);
        *last = (*last).max(seq);
    }
}
