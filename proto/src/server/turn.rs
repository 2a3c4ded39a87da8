//! [`Turn`]: what one drain of the server produced, and the durability
//! barrier between a turn's changes and its frames.
//!
//! The rules and an example are on [`Turn`]. A loop that commits off its
//! own thread (the server's pipelined group commit) splits each turn with a
//! [`Sequencer`] into a [`Batch`] of changes, for the committer, and a
//! [`Pending`] turn, whose actions it gets back only with a [`Receipt`] that
//! [`Batch::commit_group`] gave for that turn or a later one.

use crate::Instant;

use bytes::Bytes;

use super::{Change, Job, Server, ServerLog, SessionId};
use crate::Durable;

/// What one [`Server::drain`] produced.
///
/// After any input, [`Server::drain`] hands out everything the machine
/// queued since the last drain as one `Turn`:
///
/// - its jobs (password hashing), to start at once, off the routing path:
///   [`Turn::take_jobs`];
/// - its [`Change`]s, readable with [`Turn::changes`];
/// - its frames, closes, log lines and next timer, reachable **only**
///   through [`Turn::commit`], which makes the changes durable first (one
///   [`Durable`] commit of the whole batch, empty or not). A frame may
///   acknowledge a change, so no frame of a turn can leave before the turn's
///   changes survive a crash. That order is written in `commit`, once, and
///   nowhere else.
///
/// ```
/// use std::time::Instant;
/// use confab_proto::server::{Action, HashParams, MemoryStore};
/// use confab_proto::{Now, Server, ServerConfig};
/// use confab_proto::wire::{Message, Register, Request};
///
/// let now = Now::new(Instant::now(), 1_795_305_600_000);
/// let config = ServerConfig { hash_params: HashParams::INSECURE_FAST, ..ServerConfig::default() };
/// let mut store = MemoryStore::new(&config);
/// let mut server = Server::new(config, [1; 32], now)?;
/// let session = server.open_session(now)?;
/// let register = Register {
///     username: "alice".into(),
///     password: "correct horse".into(),
///     passphrase: "apple river stone".into(),
///     identity_key: bytes::Bytes::from_static(b"key"),
/// };
/// let request = Message::Request(Request { request_id: 1, timestamp_ms: now.unix_ms, body: register.into() });
/// server.handle_input(now, session, &request.to_bytes(b""));
///
/// let mut written = Vec::new();
/// loop {
///     let mut turn = server.drain();
///     let quiet = turn.is_empty();
///     for job in turn.take_jobs() {
///         let result = job.run(); // a thread pool's work in a real adapter
///         server.handle_work(now, result);
///     }
///     let committed = turn.commit(&mut store)?; // the changes are durable: the frames may leave
///     let _timeout = committed.timeout(); // call handle_timeout then
///     for action in committed {
///         match action {
///             Action::Transmit { session, bytes } => written.push((session, bytes)),
///             Action::Close { .. } => { /* close the transport once its bytes are written */ }
///             Action::Log(event) => { /* a log line */ }
///         }
///     }
///     if quiet {
///         break;
///     }
/// }
/// assert_eq!(written.len(), 1); // the answer to the registration
/// assert!(store.state().user("alice").is_some()); // durable before it was written
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Skipping the commit does not compile: a turn's frames are private until
/// then.
///
/// ```compile_fail,E0451
/// use confab_proto::server::{Action, Turn};
///
/// fn frames_without_commit(turn: Turn) -> Vec<Action> {
///     let Turn { actions, .. } = turn;
///     actions
/// }
/// ```
#[derive(Debug)]
#[must_use = "a turn's frames and timer are reachable only through Turn::commit"]
pub struct Turn {
    jobs: Vec<Job>,
    changes: Vec<Change>,
    actions: Vec<Action>,
    timeout: Option<Instant>,
}

/// What a committed turn asks its caller to do, in order: every `Transmit`
/// of the turn, then its `Close`s, then its `Log` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes (one or more whole frames) to the session's transport.
    Transmit {
        /// Destination.
        session: SessionId,
        /// Encoded frames.
        bytes: Bytes,
    },
    /// Close the session's transport once its transmits are written.
    Close {
        /// The session.
        session: SessionId,
        /// Three-digit code (also sent in the close frame, when there was one).
        code: u16,
        /// Why.
        reason: String,
    },
    /// Something worth a log line. Never carries content or secrets.
    Log(ServerLog),
}

/// A turn whose changes are durable: its actions, in order, and the next
/// timer. Iterate it (or read [`Committed::actions`]) to act.
#[derive(Debug)]
#[must_use = "a committed turn's frames must be written and its timer armed"]
pub struct Committed {
    changes: Vec<Change>,
    actions: Vec<Action>,
    timeout: Option<Instant>,
}

impl Server {
    /// Everything the machine queued since the last drain, as one [`Turn`].
    /// Call it after every input; drain again after feeding the turn's
    /// backlog reports and job results until [`Turn::is_empty`].
    pub fn drain(&mut self) -> Turn {
        let jobs = self.outbox.take_jobs();
        let changes = self.journal.take();
        let actions = self.outbox.take_actions();
        Turn { jobs, changes, actions, timeout: Some(self.next_timeout()) }
    }
}

impl Turn {
    /// The jobs still in this turn (see [`take_jobs`](Self::take_jobs)).
    #[must_use]
    pub fn jobs(&self) -> &[Job] {
        &self.jobs
    }

    /// Hands out the turn's jobs: run each (off the routing path, before or
    /// while the turn commits) and feed its result to
    /// [`Server::handle_work`]. Take them before [`commit`](Self::commit):
    /// it drops any left.
    #[must_use = "a job dropped leaves its session waiting for the hash"]
    pub fn take_jobs(&mut self) -> Vec<Job> {
        std::mem::take(&mut self.jobs)
    }

    /// The durable changes of this turn, in the order they happened.
    #[must_use]
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// Nothing at all happened: no job, no change, no action. A drain loop
    /// stops at such a turn (after committing it, which arms the timer).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty() && self.changes.is_empty() && self.actions.is_empty()
    }

    /// Makes the turn's changes durable in one commit of `store` (an empty
    /// batch too: stores skip it cheaply), then hands out the turn's
    /// actions and timer.
    ///
    /// # Errors
    /// The store's: nothing of the turn may then be written; the caller
    /// stops (the store, not the network, is the source of truth).
    pub fn commit<D: Durable<[Change]> + ?Sized>(self, store: &mut D) -> Result<Committed, D::Error> {
        debug_assert!(self.jobs.is_empty(), "take the turn's jobs before committing it");
        store.commit(&self.changes)?;
        Ok(Committed { changes: self.changes, actions: self.actions, timeout: self.timeout })
    }
}

impl Committed {
    /// The changes that were committed (empty for a turn released from a
    /// [`Pending`]: its changes went to the store in a [`Batch`]).
    #[must_use]
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// The actions, in order: transmits, then closes, then log lines.
    #[must_use]
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }

    /// Call [`Server::handle_timeout`] at this instant (or at the next input).
    #[must_use]
    pub fn timeout(&self) -> Option<Instant> {
        self.timeout
    }

    /// No action: nothing to write, close or log.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

impl IntoIterator for Committed {
    type Item = Action;
    type IntoIter = std::vec::IntoIter<Action>;

    fn into_iter(self) -> Self::IntoIter {
        self.actions.into_iter()
    }
}

/// Numbers the turns of a pipelined loop: [`defer`](Self::defer) splits a
/// turn into a [`Batch`] (its changes, for a committer that may run on
/// another thread) and a [`Pending`] turn (its actions, held until a
/// [`Receipt`] covers it).
///
/// A turn with changes gets the next number; a turn without any gets the
/// number of the last turn that had some, so it is released after that one
/// is durable: its frames may show what the earlier turns changed. Batches
/// must be committed in the order of their numbers, each exactly once
/// (a committer takes them from a FIFO queue): a receipt for number `n`
/// releases every pending turn numbered up to `n`.
///
/// ```
/// use std::time::Instant;
/// use confab_proto::server::{Batch, HashParams, MemoryStore, Receipt, Sequencer};
/// use confab_proto::{Now, Server, ServerConfig};
///
/// let now = Now::new(Instant::now(), 1_795_305_600_000);
/// let config = ServerConfig { hash_params: HashParams::INSECURE_FAST, ..ServerConfig::default() };
/// let mut store = MemoryStore::new(&config);
/// let mut server = Server::new(config, [1; 32], now)?;
/// let mut sequencer = Sequencer::default();
/// let (batch, pending) = sequencer.defer(server.drain());
/// // ... the batch goes to a committer thread, which may take several at once:
/// let receipt = Batch::commit_group(vec![batch], &mut store)?;
/// // ... the receipt comes back to the loop, which releases what it covers:
/// let committed = pending.release(&receipt).expect("covered");
/// # let _ = committed;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A pending turn's actions stay private without a receipt, and only a
/// commit makes a receipt that covers a turn with changes:
///
/// ```compile_fail,E0451
/// use confab_proto::server::Receipt;
///
/// let forged = Receipt { upto: u64::MAX };
/// ```
#[derive(Debug, Default)]
pub struct Sequencer {
    /// The number of the last turn that had changes (0: none yet).
    last: u64,
}

/// The changes of one turn, numbered by a [`Sequencer`], on their way to a
/// store: commit them (with the batches queued behind them) with
/// [`Batch::commit_group`].
#[derive(Debug)]
#[must_use = "a batch not committed leaves its turn pending forever"]
pub struct Batch {
    seq: u64,
    changes: Vec<Change>,
}

/// A turn whose changes are on their way to the store: its actions and
/// timer, released by a [`Receipt`] that covers it.
#[derive(Debug)]
#[must_use = "a pending turn's frames must be released once it is durable"]
pub struct Pending {
    seq: u64,
    changes: usize,
    actions: Vec<Action>,
    timeout: Option<Instant>,
}

/// Proof that every batch numbered up to [`upto`](Self::upto) is durable:
/// made only by [`Batch::commit_group`] (or, covering nothing, by
/// `Receipt::default()`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Receipt {
    upto: u64,
}

impl Sequencer {
    /// Takes the turn's jobs first (start them at once, as with
    /// [`Turn::commit`]); numbers it and splits it.
    pub fn defer(&mut self, turn: Turn) -> (Batch, Pending) {
        debug_assert!(turn.jobs.is_empty(), "take the turn's jobs before deferring it");
        if !turn.changes.is_empty() {
            self.last += 1;
        }
        let pending =
            Pending { seq: self.last, changes: turn.changes.len(), actions: turn.actions, timeout: turn.timeout };
        (Batch { seq: self.last, changes: turn.changes }, pending)
    }

    /// The number of the last turn that had changes (0: none yet).
    #[must_use]
    pub fn last(&self) -> u64 {
        self.last
    }
}

impl Batch {
    /// The turn's number.
    #[must_use]
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The turn's changes.
    #[must_use]
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// No change: nothing to commit (its pending turn waits only for the
    /// turns before it).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Commits the changes of `batches`, in order, as **one** commit of
    /// `store` (one transaction, one sync: several turns share it), and
    /// returns the receipt of the highest number among them. `batches` are
    /// the next ones in number order, each committed once.
    ///
    /// # Errors
    /// The store's: nothing of these turns, nor of any later one, may then
    /// be written; the caller stops.
    pub fn commit_group<D: Durable<[Change]> + ?Sized>(
        batches: Vec<Batch>,
        store: &mut D,
    ) -> Result<Receipt, D::Error> {
        let upto = batches.iter().map(|b| b.seq).max().unwrap_or(0);
        debug_assert!(batches.windows(2).all(|w| w[0].seq <= w[1].seq), "batches are committed in number order");
        match batches.len() {
            0 => {}
            1 => store.commit(&batches[0].changes)?,
            _ => {
                let changes: Vec<Change> = batches.into_iter().flat_map(|b| b.changes).collect();
                store.commit(&changes)?;
            }
        }
        Ok(Receipt { upto })
    }
}

impl Pending {
    /// The turn's number (see [`Sequencer`]).
    #[must_use]
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// How many changes the turn had.
    #[must_use]
    pub fn changes(&self) -> usize {
        self.changes
    }

    /// Call [`Server::handle_timeout`] at this instant (or at the next
    /// input): a timer reveals nothing, so it need not wait for the commit.
    #[must_use]
    pub fn timeout(&self) -> Option<Instant> {
        self.timeout
    }

    /// No action: nothing to write, close or log once durable.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// The turn's actions, if `receipt` covers it; else the turn back.
    ///
    /// # Errors
    /// The receipt is older than this turn: hold it until a later one.
    pub fn release(self, receipt: &Receipt) -> Result<Committed, Pending> {
        if self.seq > receipt.upto {
            return Err(self);
        }
        Ok(Committed { changes: Vec::new(), actions: self.actions, timeout: self.timeout })
    }
}

impl Receipt {
    /// Every batch numbered up to this one is durable.
    #[must_use]
    pub fn upto(&self) -> u64 {
        self.upto
    }
}
