//! The client machines' common shape: one output vocabulary ([`Output`]),
//! one trait ([`Machine`], implemented by [`Client`] and [`SecureClient`]),
//! and the durability barrier of a client, [`ClientTurn`].
//!
//! A client machine is driven in turns: an input (bytes, a timer, a
//! connection up or down, a command) changes its state, then
//! [`Machine::drain`] hands out a [`ClientTurn`]. Its outputs are reachable
//! only through [`ClientTurn::commit`], which first gives the machine to a
//! [`Durable`] store when a checkpoint is due: the machine marks itself
//! dirty whenever its persisted state changed (outbox, request ids,
//! delivered sequence numbers, tokens, end-to-end sessions and room keys,
//! received messages), and the store snapshots it then, and only then. A
//! frame that depends on that state (a request stored in the outbox, the
//! acknowledgement of a received message) therefore never leaves before
//! the state survives a crash.
//!
//! ```
//! use std::time::Instant;
//! use confab_proto::machine::{Machine, Output};
//! use confab_proto::{Client, ClientConfig, Ephemeral, Now};
//!
//! let now = Now::new(Instant::now(), 1_700_000_000_000);
//! let mut client = Client::new(ClientConfig::default(), now);
//! client.connected(now);
//! client.login(now, "alice", "correct horse", "apple river stone").unwrap();
//! // A profile would implement `Durable<Client>`; this client keeps nothing.
//! let turn = client.drain();
//! for output in turn.commit(&mut Ephemeral).unwrap() {
//!     match output {
//!         Output::Transmit(bytes) => assert!(!bytes.is_empty()), // write to the transport
//!         Output::Event(_) | Output::Close { .. } => {}
//!         Output::Timeout(_) => break,
//!     }
//! }
//! ```
//!
//! Nothing else hands out a client's frames: `poll_output` is not public,
//! and the outputs of a turn are private to it.
//!
//! ```compile_fail,E0624
//! # use std::time::Instant;
//! # use confab_proto::{Client, ClientConfig, Now};
//! # let now = Now::new(Instant::now(), 1_700_000_000_000);
//! let mut client = Client::new(ClientConfig::default(), now);
//! let _ = client.poll_output(); // private: frames come out of a committed turn only
//! ```
//!
//! ```compile_fail,E0616
//! # use std::time::Instant;
//! # use confab_proto::machine::Machine;
//! # use confab_proto::{Client, ClientConfig, Now};
//! # let now = Now::new(Instant::now(), 1_700_000_000_000);
//! let mut client = Client::new(ClientConfig::default(), now);
//! let turn = client.drain();
//! let _ = turn.outputs; // private: only `commit` hands them out
//! ```
//!
//! [`Client`]: crate::Client
//! [`SecureClient`]: crate::e2e::SecureClient

use crate::Instant;

use bytes::Bytes;

use crate::{Durable, Now};

/// What a client machine asks its caller to do, in this order within a
/// turn: every `Event`, then one `Transmit` with all pending frames, then
/// `Close`, then `Timeout` (always last, exactly once).
///
/// Acknowledgements of delivered items therefore come out after the events
/// that delivered them, and after the checkpoint that stored them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Output<E> {
    /// Write these bytes (one or more whole frames) to the transport.
    Transmit(Bytes),
    /// Something for the application.
    Event(E),
    /// Close the transport once the transmits before this are written. The
    /// machine already considers the connection gone (calling
    /// [`Machine::disconnected`] afterwards is harmless); reconnect with
    /// [`Machine::connected`].
    Close {
        /// Three-digit code (the one of the close frame, when there was one).
        code: u16,
        /// Why.
        reason: String,
    },
    /// Nothing more to do until this instant (`None`: until the next input or command).
    Timeout(Option<Instant>),
}

impl<E> Output<E> {
    /// The same output with its event mapped by `f`.
    pub fn map_event<F>(self, f: impl FnOnce(E) -> F) -> Output<F> {
        match self {
            Output::Transmit(bytes) => Output::Transmit(bytes),
            Output::Event(event) => Output::Event(f(event)),
            Output::Close { code, reason } => Output::Close { code, reason },
            Output::Timeout(at) => Output::Timeout(at),
        }
    }
}

mod sealed {
    /// Only this crate's machines are [`Machine`](super::Machine)s: the
    /// durability barrier relies on how they track what changed.
    pub trait Sealed {}
    impl Sealed for crate::Client {}
    impl Sealed for crate::e2e::SecureClient {}
}

/// A client machine: [`Client`](crate::Client), or
/// [`SecureClient`](crate::e2e::SecureClient) over it. One driving loop
/// serves both (the CLI's, the bench's, the simulator's).
///
/// Sealed: implemented by this crate's machines only.
pub trait Machine: sealed::Sealed {
    /// What the machine reports to the application.
    type Event;
    /// The machine's persisted state, as plain data (what a store writes).
    type Snapshot;

    /// A transport is up.
    fn connected(&mut self, now: Now);
    /// The transport is gone.
    fn disconnected(&mut self, now: Now);
    /// Closes the connection on purpose (a close frame, then [`Output::Close`]).
    fn close(&mut self, now: Now);
    /// Bytes arrived, in any chunking.
    fn handle_input(&mut self, now: Now, bytes: &[u8]);
    /// The last [`Output::Timeout`] instant passed.
    fn handle_timeout(&mut self, now: Now);
    /// Whether a transport is up.
    fn is_connected(&self) -> bool;
    /// The persisted state.
    fn snapshot(&self) -> Self::Snapshot;
    /// Whether the persisted state changed since the last checkpoint (a
    /// new or restored machine has one due: its first turn writes it).
    fn checkpoint_due(&self) -> bool;
    /// Everything the last inputs produced, as one turn to commit.
    fn drain(&mut self) -> ClientTurn<'_, Self>
    where
        Self: Sized;
}

/// One turn of a client machine: its outputs, held until the machine's
/// state is durable. See the [module docs](self).
#[must_use = "commit the turn: its outputs carry the frames to send"]
pub struct ClientTurn<'m, M: Machine> {
    machine: &'m mut M,
    outputs: Vec<Output<M::Event>>,
    /// Tells the machine its state was stored.
    checkpointed: fn(&mut M),
}

impl<M: Machine> std::fmt::Debug for ClientTurn<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTurn")
            .field("outputs", &self.outputs.len())
            .field("checkpoint_due", &self.checkpoint_due())
            .finish_non_exhaustive()
    }
}

impl<'m, M: Machine> ClientTurn<'m, M> {
    /// A turn of `machine` with `outputs` (the last one a `Timeout`).
    pub(crate) fn new(machine: &'m mut M, outputs: Vec<Output<M::Event>>, checkpointed: fn(&mut M)) -> Self {
        ClientTurn { machine, outputs, checkpointed }
    }

    /// Whether the machine's persisted state changed since the last
    /// checkpoint: [`commit`](Self::commit) will hand it to the store.
    #[must_use]
    pub fn checkpoint_due(&self) -> bool {
        self.machine.checkpoint_due()
    }

    /// Makes the machine's state durable if a checkpoint is due (the store
    /// receives the machine and snapshots it), then hands out the outputs,
    /// in order, the last one a `Timeout`.
    ///
    /// On error nothing may be sent: the outputs are dropped and the
    /// checkpoint stays due. The frames of this turn are lost with them, so
    /// treat the connection as gone ([`Machine::disconnected`]) before going
    /// on: requests still waiting are written again on the next one.
    pub fn commit<D: Durable<M> + ?Sized>(self, store: &mut D) -> Result<Vec<Output<M::Event>>, D::Error> {
        if self.machine.checkpoint_due() {
            store.commit(self.machine)?;
            (self.checkpointed)(self.machine);
        }
        Ok(self.outputs)
    }
}

/// Polls `poll` until it yields a `Timeout` (included).
pub(crate) fn collect<E>(mut poll: impl FnMut() -> Output<E>) -> Vec<Output<E>> {
    let mut outputs = Vec::new();
    loop {
        let output = poll();
        let last = matches!(output, Output::Timeout(_));
        outputs.push(output);
        if last {
            return outputs;
        }
    }
}

impl Machine for crate::Client {
    type Event = crate::ClientEvent;
    type Snapshot = crate::client::ClientSnapshot;

    fn connected(&mut self, now: Now) {
        crate::Client::connected(self, now);
    }

    fn disconnected(&mut self, now: Now) {
        crate::Client::disconnected(self, now);
    }

    fn close(&mut self, now: Now) {
        crate::Client::close(self, now);
    }

    fn handle_input(&mut self, now: Now, bytes: &[u8]) {
        crate::Client::handle_input(self, now, bytes);
    }

    fn handle_timeout(&mut self, now: Now) {
        crate::Client::handle_timeout(self, now);
    }

    fn is_connected(&self) -> bool {
        crate::Client::is_connected(self)
    }

    fn snapshot(&self) -> Self::Snapshot {
        crate::Client::snapshot(self)
    }

    fn checkpoint_due(&self) -> bool {
        crate::Client::checkpoint_due(self)
    }

    fn drain(&mut self) -> ClientTurn<'_, Self> {
        crate::Client::drain(self)
    }
}

impl Machine for crate::e2e::SecureClient {
    type Event = crate::e2e::SecureEvent;
    type Snapshot = crate::e2e::secure::SecureSnapshot;

    fn connected(&mut self, now: Now) {
        crate::e2e::SecureClient::connected(self, now);
    }

    fn disconnected(&mut self, now: Now) {
        crate::e2e::SecureClient::disconnected(self, now);
    }

    fn close(&mut self, now: Now) {
        crate::e2e::SecureClient::close(self, now);
    }

    fn handle_input(&mut self, now: Now, bytes: &[u8]) {
        crate::e2e::SecureClient::handle_input(self, now, bytes);
    }

    fn handle_timeout(&mut self, now: Now) {
        crate::e2e::SecureClient::handle_timeout(self, now);
    }

    fn is_connected(&self) -> bool {
        self.client().is_connected()
    }

    fn snapshot(&self) -> Self::Snapshot {
        crate::e2e::SecureClient::snapshot(self)
    }

    fn checkpoint_due(&self) -> bool {
        crate::e2e::SecureClient::checkpoint_due(self)
    }

    fn drain(&mut self) -> ClientTurn<'_, Self> {
        crate::e2e::SecureClient::drain(self)
    }
}

/// Test and fuzzing support: a store that checks the dirty tracking.
#[cfg(any(test, fuzzing, feature = "fuzzing"))]
pub(crate) mod checked {
    use super::{Machine, Output};
    use crate::Durable;

    /// Keeps the last snapshot committed; after every turn the machine's
    /// state must still be that snapshot, or it changed without a checkpoint.
    pub(crate) struct Checked<M: Machine> {
        last: Option<M::Snapshot>,
        /// Checkpoints taken.
        pub(crate) commits: usize,
    }

    impl<M: Machine> Default for Checked<M> {
        fn default() -> Self {
            Checked { last: None, commits: 0 }
        }
    }

    impl<M: Machine> Durable<M> for Checked<M> {
        type Error = std::convert::Infallible;

        fn commit(&mut self, machine: &M) -> Result<(), Self::Error> {
            self.last = Some(machine.snapshot());
            self.commits += 1;
            Ok(())
        }
    }

    impl<M: Machine> Checked<M>
    where
        M::Snapshot: PartialEq + std::fmt::Debug,
    {
        /// Drains `machine` and commits the turn here; panics if its state
        /// changed without a checkpoint being due.
        pub(crate) fn turn(&mut self, machine: &mut M) -> Vec<Output<M::Event>> {
            let Ok(outputs) = machine.drain().commit(self);
            assert_eq!(self.last.as_ref(), Some(&machine.snapshot()), "the state changed without a checkpoint");
            outputs
        }
    }
}
