//! One partition's core in a node: the sans-IO machine, its committer, and
//! its turns held until durable.
//!
//! A node runs one [`Core`] (a single server, or a cluster of one
//! partition) or one per partition it owns (a split state,
//! docs/PARTITIONS.md). Each core is single-writer over its own store: its
//! own committer, its own turn numbers, its own receipts. The loop drains
//! each in turn ([`Core::turn`], then [`Core::released`]) and acts on what
//! is released, which only ever follows durability.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use confab_proto::Server;
use confab_proto::server::{Change, Committed, PartitionId, Pending, Receipt, Sequencer};
use tracing::error;

use super::RunError;
use super::commit::{CommitMode, Committer, Counts, Store};
use super::workers::Workers;
use crate::relay::bells::bit;
use crate::store::LeaseWatch;

/// One partition's core. See the [module docs](self).
pub(super) struct Core {
    /// Its partition.
    pub(super) partition: PartitionId,
    /// The fencing token of the lease it serves under, when the node was
    /// told ([`NodeHandle::take`](super::NodeHandle::take)): a loss
    /// reported for another token is not this core's.
    pub(super) lease: Option<u64>,
    /// Its lease's watch, when the node was told
    /// ([`NodeHandle::watch_lease`](super::NodeHandle::watch_lease)).
    pub(super) watch: Option<LeaseWatch>,
    /// The machine.
    pub(super) server: Server,
    /// Commits the turns' changes (see `commit.rs`).
    committer: Committer,
    /// Numbers the turns for the committer.
    sequencer: Sequencer,
    /// Turns whose changes are not durable yet, oldest first.
    held: VecDeque<Pending>,
    /// The receipt up to which held turns were released.
    released: Receipt,
    /// The bound on `held` (the loop stops feeding the core at it).
    max_held: usize,
    /// The machine's next timer.
    pub(super) deadline: Option<Instant>,
    /// The batches that mailed another partition and were not rung for.
    rings: Rings,
    /// Turns taken, held turns pushed and released: what a connection
    /// leaving for the relay waits on ([`Core::mark`], [`Core::passed`]).
    turns: u64,
    pushed: u64,
    popped: u64,
}

/// Where a core's outputs stood when a connection left it for the relay:
/// its turn count then, and once it took a turn after, the held turns to
/// be released before the relay's answers may follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mark {
    turns: u64,
    pushed: Option<u64>,
}

/// The batches that mailed another partition since the last ring: a ring
/// is due once a receipt covers the oldest (its mail is in the store), and
/// the next once one covers any later. (Waiting for the newest instead
/// would never ring while every turn mails and commits are pipelined.)
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Rings {
    /// The oldest batch not rung for (0: none).
    first: u64,
    /// The newest.
    last: u64,
    /// The partitions they mailed, as bits.
    targets: u64,
}

impl Rings {
    fn mailed(&mut self, seq: u64, targets: u64) {
        if self.first == 0 {
            self.first = seq;
        }
        self.last = seq;
        self.targets |= targets;
    }

    /// The partitions (as bits) whose bells are due now that every batch up
    /// to `upto` is durable: 0 for none.
    fn take(&mut self, upto: u64) -> u64 {
        if self.first == 0 || upto < self.first {
            return 0;
        }
        let targets = self.targets;
        if upto >= self.last {
            *self = Rings::default();
        } else {
            // A batch after `upto` mailed; which one, and to whom, is not
            // kept: the next receipt past `upto` rings them all again (once
            // too often at worst).
            self.first = upto + 1;
        }
        targets
    }
}

impl Core {
    /// `server` (restored from what `store` holds), committing to `store`
    /// as `mode` says; each commit wakes the loop with `waker`.
    pub(super) fn start(
        server: Server,
        store: Store,
        mode: CommitMode,
        waker: Arc<mio::Waker>,
    ) -> std::io::Result<Core> {
        let max_held = match mode {
            CommitMode::Inline => 1,
            CommitMode::Pipelined { max_turns } => max_turns.max(1),
        };
        Ok(Core {
            partition: server.config().partitions.index,
            lease: None,
            watch: None,
            server,
            committer: Committer::start(store, mode, waker)?,
            sequencer: Sequencer::default(),
            held: VecDeque::new(),
            released: Receipt::default(),
            max_held,
            deadline: None,
            rings: Rings::default(),
            turns: 0,
            pushed: 0,
            popped: 0,
        })
    }

    /// Takes one turn of the machine: its jobs to `workers` (dropped
    /// without), its changes to the committer, its actions held until they
    /// are durable. Whether the turn was empty.
    pub(super) fn turn(&mut self, workers: Option<&Workers>) -> bool {
        let mut turn = self.server.drain();
        let quiet = turn.is_empty();
        for job in turn.take_jobs() {
            // A core leaving (given back) has no workers: its sessions are closed.
            if let Some(workers) = workers {
                workers.submit(self.partition, job);
            }
        }
        self.turns += 1;
        let (batch, pending) = self.sequencer.defer(turn);
        self.deadline = pending.timeout();
        if !batch.is_empty() {
            let targets = batch.changes().iter().fold(0, |bits, c| match c {
                Change::MailOut { to, .. } => bits | bit(*to),
                _ => bits,
            });
            if targets != 0 {
                self.rings.mailed(batch.seq(), targets);
            }
            self.committer.submit(batch);
        }
        if !pending.is_empty() {
            self.held.push_back(pending);
            self.pushed += 1;
        }
        quiet
    }

    /// Where its outputs stand now (frames were just handed to it).
    pub(super) fn mark(&self) -> Mark {
        Mark { turns: self.turns, pushed: None }
    }

    /// Whether every output of the frames handed before `mark` was released
    /// (it took a turn since, and every turn held then is out).
    pub(super) fn passed(&self, mark: &mut Mark) -> bool {
        if mark.pushed.is_none() && self.turns > mark.turns {
            mark.pushed = Some(self.pushed);
        }
        mark.pushed.is_some_and(|pushed| self.popped >= pushed)
    }

    /// The held turns the committer's receipt now covers, in order; at
    /// `max_held` held turns, waits for commits until below it.
    ///
    /// # Errors
    /// A commit failed: nothing of that turn or any later one may be acted on.
    pub(super) fn released(&mut self) -> Result<Vec<Committed>, RunError> {
        let receipt = self.committer.receipt();
        let mut out = self.release(receipt)?;
        while self.held.len() >= self.max_held {
            let receipt = self.committer.wait_past(self.released);
            out.extend(self.release(receipt)?);
        }
        Ok(out)
    }

    /// Waits for every commit submitted; the held turns they release.
    ///
    /// # Errors
    /// As [`released`](Self::released).
    pub(super) fn finish(&mut self) -> Result<Vec<Committed>, RunError> {
        let last = self.committer.finish();
        self.release(last)
    }

    /// The partitions (as bits, `relay::bells::bit`) that a batch made durable since
    /// last asked mailed: their readers should look now.
    pub(super) fn take_ring(&mut self) -> u64 {
        self.rings.take(self.released.upto())
    }

    /// Whether no turn of it waits for its commit.
    pub(super) fn is_idle(&self) -> bool {
        self.held.is_empty()
    }

    /// What the committer committed.
    pub(super) fn counts(&self) -> Counts {
        self.committer.counts()
    }

    fn release(&mut self, receipt: Result<Receipt, String>) -> Result<Vec<Committed>, RunError> {
        let partition = self.partition;
        let receipt = receipt.map_err(|e| {
            error!(
                partition,
                "store commit failed; stopping without writing this turn's frames or any later one's: {e}"
            );
            RunError::Store(e)
        })?;
        self.released = receipt;
        let mut out = Vec::new();
        while let Some(pending) = self.held.pop_front() {
            match pending.release(&receipt) {
                Ok(committed) => {
                    self.popped += 1;
                    out.push(committed);
                }
                Err(pending) => {
                    self.held.push_front(pending);
                    break;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::Rings;

    #[test]
    fn a_ring_is_due_once_the_oldest_mailing_batch_is_durable_and_again_for_later_ones() {
        let mut rings = Rings::default();
        assert_eq!(rings.take(5), 0, "nothing mailed");
        rings.mailed(1, 0b10);
        rings.mailed(2, 0b100);
        assert_eq!(rings.take(0), 0);
        // Batch 2 is still on its way: batch 1's mail rings now, not once 2 is durable.
        assert_ne!(rings.take(1), 0);
        assert_eq!(rings.take(1), 0, "rung once");
        rings.mailed(3, 0b1000);
        assert_eq!(rings.take(2), 0b1110, "every target since the last full ring");
        assert_eq!(rings.take(3), 0b1110);
        assert_eq!(rings.take(9), 0, "every mailing batch rung for");
        rings.mailed(10, 0b1);
        assert_eq!(rings.take(10), 0b1, "a full ring forgets the targets rung");
        // Every turn mailing while commits are pipelined still rings every receipt.
        for seq in 11..20 {
            rings.mailed(seq, 0b1);
            assert!(rings.take(seq - 1) != 0 || seq == 11);
        }
    }
}
