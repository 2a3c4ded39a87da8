//! The loop's committer: pipelined group commit.
//!
//! The loop splits every drained turn with a [`Sequencer`] into a [`Batch`]
//! (its changes) and a [`Pending`] turn (its frames, closes, log lines),
//! hands the batch to the committer and holds the pending turn. The
//! committer thread owns the store: it takes **every** batch queued since
//! its last commit and commits them as one transaction (one fsync for
//! several turns), then publishes the [`Receipt`] and wakes the loop through
//! the poll's waker. The loop meanwhile goes on reading and routing; when
//! woken it releases, in turn order, every pending turn the receipt covers.
//!
//! A failed commit is published instead of a receipt and the thread stops
//! committing: the loop then stops (fail-stop) and nothing of that turn or
//! of any later one is ever written. Dropping the committer (or
//! [`Committer::finish`]) commits what is still queued and joins the thread.
//!
//! [`CommitMode::Inline`] commits on the loop's thread instead (the turn's
//! frames then leave in the same loop turn): what a store whose commit costs
//! nothing (`MemoryStore`) is best served by.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use confab_proto::Durable;
use confab_proto::server::{Batch, Change, Receipt};
use tracing::error;

/// What the loop commits to: any [`Durable`] store of the core's changes
/// whose error is reported as text.
pub(super) type Store = Box<dyn Durable<[Change], Error = String> + Send>;

/// Where a [`Node`](super::Node) commits its turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitMode {
    /// On the loop's thread, each turn before its frames leave.
    Inline,
    /// On a committer thread, several turns per commit, while the loop goes
    /// on; at most `max_turns` turns with something to write wait for their
    /// commit (then the loop stops feeding the core until one returns).
    Pipelined {
        /// The bound on turns held (at least 1).
        max_turns: usize,
    },
}

/// Turns held at most while their commits run, by default: enough for every
/// session of a busy loop to have a request in flight, and a bound on the
/// memory held (each turn holds its frames).
pub const DEFAULT_MAX_TURNS: usize = 1024;

impl Default for CommitMode {
    fn default() -> Self {
        CommitMode::Pipelined { max_turns: DEFAULT_MAX_TURNS }
    }
}

/// Transactions and changes committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counts {
    pub commits: u64,
    pub changes: u64,
}

/// What the committer thread and the loop share.
#[derive(Default)]
struct Shared {
    queue: Vec<Batch>,
    receipt: Receipt,
    failed: Option<String>,
    counts: Counts,
    stop: bool,
}

/// The committer thread, with the queue it takes from.
pub(super) struct Pipe {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

/// The loop's side of the commit path.
pub(super) enum Committer {
    /// Commits on the loop's thread.
    Inline { store: Store, receipt: Receipt, failed: Option<String>, counts: Counts },
    /// Commits on its own thread.
    Piped(Pipe),
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic on the committer thread while holding the lock leaves the data consistent.
    shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Committer {
    /// A committer for `store`: on the loop's thread, or on a thread that
    /// wakes the loop through `waker` after each commit.
    pub(super) fn start(store: Store, mode: CommitMode, waker: Arc<mio::Waker>) -> std::io::Result<Committer> {
        if mode == CommitMode::Inline {
            return Ok(Committer::Inline {
                store,
                receipt: Receipt::default(),
                failed: None,
                counts: Counts::default(),
            });
        }
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("confab-commit".into())
            .spawn(move || commit_loop(store, &theirs, &waker))?;
        Ok(Committer::Piped(Pipe { shared, thread: Some(thread) }))
    }

    /// Queues a turn's changes (inline: commits them now).
    pub(super) fn submit(&mut self, batch: Batch) {
        match self {
            Committer::Inline { store, receipt, failed, counts } => {
                if failed.is_some() {
                    return;
                }
                let changes = batch.changes().len() as u64;
                match Batch::commit_group(vec![batch], &mut **store) {
                    Ok(r) => {
                        *receipt = r;
                        counts.commits += 1;
                        counts.changes += changes;
                    }
                    Err(e) => *failed = Some(e),
                }
            }
            Committer::Piped(pipe) => {
                let (m, cv) = &*pipe.shared;
                lock(m).queue.push(batch);
                cv.notify_one();
            }
        }
    }

    /// The latest receipt, or the failure that stopped the commits.
    ///
    /// # Errors
    /// A commit failed: nothing after the receipt before it may be written.
    pub(super) fn receipt(&self) -> Result<Receipt, String> {
        match self {
            Committer::Inline { receipt, failed, .. } => failed.clone().map_or(Ok(*receipt), Err),
            Committer::Piped(pipe) => {
                let s = lock(&pipe.shared.0);
                s.failed.clone().map_or(Ok(s.receipt), Err)
            }
        }
    }

    /// Waits until the receipt passes `seen` (or a commit fails); inline
    /// commits never leave anything to wait for.
    ///
    /// # Errors
    /// As [`receipt`](Self::receipt).
    pub(super) fn wait_past(&self, seen: Receipt) -> Result<Receipt, String> {
        let Committer::Piped(pipe) = self else { return self.receipt() };
        let (m, cv) = &*pipe.shared;
        let mut s = lock(m);
        while s.failed.is_none() && s.receipt <= seen && !(s.queue.is_empty() && s.stop) {
            s = cv.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        s.failed.clone().map_or(Ok(s.receipt), Err)
    }

    /// Transactions and changes committed so far.
    pub(super) fn counts(&self) -> Counts {
        match self {
            Committer::Inline { counts, .. } => *counts,
            Committer::Piped(pipe) => lock(&pipe.shared.0).counts,
        }
    }

    /// Commits everything queued, stops the thread and returns the last
    /// receipt: what a stop waits for before the process exits.
    ///
    /// # Errors
    /// As [`receipt`](Self::receipt).
    pub(super) fn finish(&mut self) -> Result<Receipt, String> {
        if let Committer::Piped(pipe) = self {
            pipe.stop();
        }
        self.receipt()
    }
}

impl Pipe {
    fn stop(&mut self) {
        {
            let (m, cv) = &*self.shared;
            lock(m).stop = true;
            cv.notify_all();
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            let mut s = lock(&self.shared.0);
            s.failed.get_or_insert_with(|| "the committer thread panicked".to_owned());
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The committer thread: takes every queued batch, commits them as one,
/// publishes the receipt, wakes the loop; stops at the first failure, or
/// when asked to once the queue is empty.
fn commit_loop(mut store: Store, shared: &(Mutex<Shared>, Condvar), waker: &mio::Waker) {
    let (m, cv) = shared;
    loop {
        let batches = {
            let mut s = lock(m);
            while s.queue.is_empty() && !s.stop {
                s = cv.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if s.queue.is_empty() {
                return;
            }
            std::mem::take(&mut s.queue)
        };
        let changes: u64 = batches.iter().map(|b| b.changes().len() as u64).sum();
        // A store that panics has failed: the loop must stop, not wait for a receipt forever.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Batch::commit_group(batches, &mut *store)))
                .unwrap_or_else(|_| Err("the store panicked while committing".to_owned()));
        {
            let mut s = lock(m);
            match result {
                Ok(receipt) => {
                    s.receipt = receipt;
                    s.counts.commits += 1;
                    s.counts.changes += changes;
                }
                Err(e) => {
                    error!("store commit failed; nothing of its turns or later ones will be written: {e}");
                    s.failed = Some(e);
                }
            }
            cv.notify_all();
            if s.failed.is_some() {
                let _ = waker.wake();
                return;
            }
        }
        let _ = waker.wake();
    }
}
