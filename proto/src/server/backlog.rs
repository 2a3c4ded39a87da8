//! How much of this partition's mail waits at each target (docs/PARTITIONS.md,
//! "Mail": the bound `mail_per_target`).
//!
//! A core cannot see whether its mail was applied: the items wait in the
//! store's outbox until their target's owner applies them, and a target
//! that has no owner (its node died, its lease not taken yet) applies
//! nothing. The runtime counts the rows waiting from this partition to
//! each target and tells the core ([`Server::handle_mail_backlog`]); the
//! core adds what it mailed since. Past [`MAIL_PER_TARGET`]:
//!
//! - a request that would cross to that target is refused 503 with a wait
//!   (recorded nowhere: a retry may cross once the target caught up);
//! - a room message's push to that target is not mailed (its members there
//!   find the message in the room's history, as an offline member does;
//!   while the target applies nothing, none of them has a session anyway);
//! - answers and notices are mailed whatever the backlog: an answer is owed
//!   to a request the target sent (the target's own bounds count those),
//!   and a notice carries a change of state (`peer_gone`, `mp_expired`: as
//!   many as the conversations and the queued items, which have bounds of
//!   their own).
//!
//! The count is an estimate that errs high: the items the target applied
//! since the runtime counted are still counted until the next count. A
//! core told nothing (a restored one, before the runtime's first count)
//! assumes nothing waits.

use std::collections::BTreeMap;

use super::partition::PartitionId;
use super::refusal::Refusal;
use super::{Server, ServerLog};

/// Items of this partition's mail that may wait at one target before
/// requests to it are refused and room pushes to it dropped.
pub const MAIL_PER_TARGET: u64 = 10_000;

/// The wait suggested with a 503 of a request refused for the backlog.
const RETRY_AFTER_MS: u64 = 5000;

/// The runtime's last count per target: the rows it saw waiting, and the
/// number this core's next item to that target had when it was told.
#[derive(Debug, Default)]
pub(super) struct Backlog {
    counted: BTreeMap<PartitionId, (u64, u64)>,
}

impl Server {
    /// The runtime counted `rows` items of this partition's mail waiting at
    /// partition `to` (not applied there yet). With what the core mailed
    /// there since, past [`MAIL_PER_TARGET`], requests that would cross to
    /// `to` are refused 503 (recorded nowhere) and room messages are not
    /// pushed there; answers and notices are mailed whatever the count.
    pub fn handle_mail_backlog(&mut self, to: PartitionId, rows: u64) {
        let next = self.journal.state().mail().next_to(to);
        self.backlog.counted.insert(to, (rows, next));
    }

    /// The items of this partition's mail that wait at `to`, as far as
    /// this core knows (the runtime's last count and what was mailed since).
    #[must_use]
    pub fn mail_backlog(&self, to: PartitionId) -> u64 {
        let next = self.journal.state().mail().next_to(to);
        self.backlog.counted.get(&to).map_or(0, |&(rows, then)| rows.saturating_add(next.saturating_sub(then)))
    }

    /// Why a request may not be mailed to `to` now, if it may not.
    pub(super) fn no_room_at(&self, to: PartitionId) -> Option<Refusal> {
        let waiting = self.mail_backlog(to);
        (waiting >= MAIL_PER_TARGET).then(|| Refusal::Busy {
            reason: format!(
                "partition {to} has not applied {waiting} items of this partition's mail yet (it may have no owner \
                 now); try again"
            ),
            retry_after_ms: RETRY_AFTER_MS,
        })
    }

    /// Whether a room message may be pushed to `to` (logged when not).
    pub(super) fn may_push_to(&mut self, to: PartitionId, room: &str) -> bool {
        let waiting = self.mail_backlog(to);
        if waiting < MAIL_PER_TARGET {
            return true;
        }
        self.outbox.event(ServerLog::PushDropped { to, room: room.to_owned(), waiting });
        false
    }
}
