//! The numbers of the mail between partitions (docs/PARTITIONS.md,
//! "Mail"): per target, the next sequence number to send; per source, the
//! last one applied. The items themselves are the store's (its outbox),
//! never the state's.

use std::collections::BTreeMap;

use super::types::MailedRequest;
use crate::server::partition::PartitionId;

/// Mail numbers, per partition, and the requests waiting for an answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailBook {
    /// Per target: the next sequence number to send (absent: 1).
    pub(super) next: BTreeMap<PartitionId, u64>,
    /// Per source: the last sequence number applied (absent: 0).
    pub(super) applied: BTreeMap<PartitionId, u64>,
    /// The requests mailed and not answered yet, by `(target, ticket)`.
    pub(super) pending: BTreeMap<(PartitionId, u64), MailedRequest>,
    /// The same, by `(family, request_id)` (derived: not stored).
    pub(super) by_request: BTreeMap<(u64, u32), (PartitionId, u64)>,
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

    /// The request mailed as item `ticket` to `target`, while unanswered.
    #[must_use]
    pub fn pending(&self, target: PartitionId, ticket: u64) -> Option<&MailedRequest> {
        self.pending.get(&(target, ticket))
    }

    /// The `(target, ticket)` of the unanswered request `request_id` of `family`.
    #[must_use]
    pub fn pending_of(&self, family: u64, request_id: u32) -> Option<(PartitionId, u64)> {
        self.by_request.get(&(family, request_id)).copied()
    }

    /// How many requests wait for an answer, in all.
    #[must_use]
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// How many requests of `family` wait for an answer.
    #[must_use]
    pub fn pending_in(&self, family: u64) -> usize {
        self.by_request.range((family, 0)..=(family, u32::MAX)).count()
    }

    /// Every unanswered request.
    pub fn pending_all(&self) -> impl Iterator<Item = (&(PartitionId, u64), &MailedRequest)> {
        self.pending.iter()
    }

    pub(super) fn request_mailed(&mut self, to: PartitionId, ticket: u64, request: &MailedRequest) {
        self.by_request.insert((request.family, request.request_id), (to, ticket));
        if let Some(old) = self.pending.insert((to, ticket), request.clone()) {
            // A ticket is never given twice; if a log said so, the index stays exact.
            if (old.family, old.request_id) != (request.family, request.request_id) {
                self.by_request.remove(&(old.family, old.request_id));
            }
        }
    }

    /// The request answered, taken out (`None` if it was not waiting).
    pub(super) fn request_answered(&mut self, from: PartitionId, ticket: u64) -> Option<MailedRequest> {
        let request = self.pending.remove(&(from, ticket))?;
        if self.by_request.get(&(request.family, request.request_id)) == Some(&(from, ticket)) {
            self.by_request.remove(&(request.family, request.request_id));
        }
        Some(request)
    }

    /// Rebuilds the derived index (after a load).
    #[cfg(feature = "serde")]
    pub(super) fn reindex(&mut self) {
        self.by_request = self.pending.iter().map(|(k, r)| ((r.family, r.request_id), *k)).collect();
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
