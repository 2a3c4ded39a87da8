//! [`Link`]: the client side of a transport, as a blocking byte pipe, and
//! [`Driver`]: the one loop that drives a client machine over it.
//!
//! A client program owns one sans-IO machine, its store and one `Link`: the
//! driver commits each turn of the machine into the store, writes the
//! turn's `Transmit` bytes with [`Link::send`] and feeds what
//! [`Link::recv`] returns to the machine's `handle_input`, waking at least
//! at the machine's `Timeout`. TCP+TLS, QUIC and in-memory links implement
//! it, so the `confab` client, the bench and the tests run the same loop
//! over any of them.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use confab_proto::machine::{Machine, Output};
use confab_proto::{Durable, Now};

/// A connected, ordered, reliable byte stream to a confab server.
///
/// Errors: a link the peer closed returns [`io::ErrorKind::UnexpectedEof`]
/// from [`recv`](Link::recv) once every byte before the close was returned;
/// a reset or a TLS/QUIC failure returns the underlying error. After an
/// error the link is dead: make a new one.
pub trait Link: Send {
    /// Queues `bytes` for the server and writes as much as the transport
    /// takes without blocking for long. Bytes are delivered in order.
    fn send(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Waits until bytes arrive or `deadline` passes. `Ok(None)`: the
    /// deadline passed with nothing new; `Ok(Some(bytes))`: a non-empty chunk
    /// (any split: frames may straddle chunks).
    fn recv(&mut self, deadline: Instant) -> io::Result<Option<Vec<u8>>>;

    /// Flushes what was sent and closes the link (TLS close_notify, QUIC
    /// stream finish). Best effort: errors are ignored.
    fn close(&mut self);

    /// Which transport this is, for logs and `--json` output: `"tcp"`, `"quic"` or `"mem"`.
    fn transport(&self) -> &'static str;
}

/// The time source of a [`Driver`]: a monotonic instant and the Unix time
/// in milliseconds, read together.
pub type Clock = Arc<dyn Fn() -> Now + Send + Sync>;

/// The system clock.
#[must_use]
pub fn system_clock() -> Clock {
    Arc::new(|| {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Now::new(Instant::now(), unix_ms)
    })
}

/// Why a [`Driver`] stopped short. `E` is the store's error.
#[derive(Debug, thiserror::Error)]
pub enum DriveError<E> {
    /// The store could not make the machine's state durable: nothing of
    /// the turn was sent, and the connection was dropped.
    #[error("the state could not be stored: {0}")]
    Store(#[source] E),
    /// The link failed.
    #[error("connection lost: {0}")]
    LinkLost(#[source] io::Error),
    /// No connection: the server or the machine closed it (or none was made).
    #[error("connection closed ({code}): {reason}")]
    Closed {
        /// Three-digit code.
        code: u16,
        /// Why.
        reason: String,
    },
}

/// The one loop that drives a client [`Machine`] over a [`Link`], committing
/// every turn into its store `D` before writing the turn's frames:
///
/// ```text
/// turn = machine.drain()
/// outputs = turn.commit(store)?     <- durable first, when a checkpoint is due
/// events -> kept, transmits -> link, close -> link closed
/// link.recv(until min(timer, deadline)) -> handle_input | handle_timeout
/// ```
///
/// The `confab` CLI drives a `SecureClient` committing into its profile,
/// the bench a plain `Client` into [`Ephemeral`](confab_proto::Ephemeral).
pub struct Driver<M: Machine, D: Durable<M>> {
    machine: M,
    store: D,
    link: Option<Box<dyn Link>>,
    clock: Clock,
    events: VecDeque<M::Event>,
    /// Events before this index were already offered to a `run_until` predicate.
    offered: usize,
    /// The machine's next timer.
    timer: Option<Instant>,
    /// Why the last connection ended, when the machine or the server closed it.
    closed: Option<(u16, String)>,
}

impl<M: Machine, D: Durable<M>> std::fmt::Debug for Driver<M, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("connected", &self.link.is_some())
            .field("events", &self.events.len())
            .field("timer", &self.timer)
            .finish_non_exhaustive()
    }
}

impl<M: Machine, D: Durable<M>> Driver<M, D> {
    /// Drives `machine`, committing into `store`; not connected yet.
    pub fn new(machine: M, store: D, clock: Clock) -> Self {
        Driver { machine, store, link: None, clock, events: VecDeque::new(), offered: 0, timer: None, closed: None }
    }

    /// The current time.
    #[must_use]
    pub fn now(&self) -> Now {
        (self.clock)()
    }

    /// The machine.
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The machine, for commands (drive it with [`Driver::pump`] afterwards).
    pub fn machine_mut(&mut self) -> &mut M {
        &mut self.machine
    }

    /// The store.
    pub fn store(&self) -> &D {
        &self.store
    }

    /// The store, mutably.
    pub fn store_mut(&mut self) -> &mut D {
        &mut self.store
    }

    /// The machine and the store, without the link (dropped).
    pub fn into_parts(self) -> (M, D) {
        (self.machine, self.store)
    }

    /// Events the machine reported and nobody took yet, oldest first.
    pub fn events(&self) -> &VecDeque<M::Event> {
        &self.events
    }

    /// The events, to take some out.
    pub fn events_mut(&mut self) -> &mut VecDeque<M::Event> {
        self.offered = 0;
        &mut self.events
    }

    /// Every event since the last call.
    pub fn take_events(&mut self) -> Vec<M::Event> {
        self.offered = 0;
        self.events.drain(..).collect()
    }

    /// Whether a link is up.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.link.is_some()
    }

    /// Why the last connection was closed by the machine or the server, if it was.
    #[must_use]
    pub fn closed(&self) -> Option<&(u16, String)> {
        self.closed.as_ref()
    }

    /// Uses `link` (the machine is told it is connected) and drives the first turn.
    pub fn connect(&mut self, link: Box<dyn Link>) -> Result<(), DriveError<D::Error>> {
        self.link = Some(link);
        self.closed = None;
        let now = self.now();
        self.machine.connected(now);
        self.pump().map(drop)
    }

    /// Drains one turn: commits it into the store (when a checkpoint is
    /// due), then keeps its events, writes its frames and closes the link
    /// if the machine asked to. Returns the machine's next timer.
    pub fn pump(&mut self) -> Result<Option<Instant>, DriveError<D::Error>> {
        let outputs = match self.machine.drain().commit(&mut self.store) {
            Ok(outputs) => outputs,
            Err(e) => {
                // The turn's frames are gone: so is the connection they belonged to.
                self.lost();
                return Err(DriveError::Store(e));
            }
        };
        for output in outputs {
            match output {
                Output::Event(event) => self.events.push_back(event),
                Output::Transmit(bytes) => {
                    let Some(link) = self.link.as_mut() else { continue };
                    if let Err(e) = link.send(&bytes) {
                        self.lost();
                        return Err(DriveError::LinkLost(e));
                    }
                }
                Output::Close { code, reason } => {
                    if let Some(mut link) = self.link.take() {
                        link.close();
                    }
                    self.closed = Some((code, reason));
                }
                Output::Timeout(at) => self.timer = at,
            }
        }
        Ok(self.timer)
    }

    /// Waits for bytes until `deadline` or the machine's timer, whichever
    /// comes first, hands them (or the timer) to the machine and drives the
    /// turn. True if bytes arrived. A failed link is reported to the machine
    /// (its turn driven) and returned as [`DriveError::LinkLost`].
    pub fn step(&mut self, deadline: Instant) -> Result<bool, DriveError<D::Error>> {
        let Some(link) = self.link.as_mut() else { return Err(self.not_connected()) };
        let wake = self.timer.map_or(deadline, |t| t.min(deadline));
        let received = link.recv(wake);
        let now = self.now();
        let arrived = match received {
            Ok(Some(bytes)) => {
                self.machine.handle_input(now, &bytes);
                if self.timer.is_some_and(|t| t <= now.instant) {
                    self.machine.handle_timeout(now);
                }
                true
            }
            Ok(None) => {
                self.machine.handle_timeout(now);
                false
            }
            Err(e) => {
                self.lost();
                self.pump()?;
                return Err(DriveError::LinkLost(e));
            }
        };
        self.pump()?;
        Ok(arrived)
    }

    /// Drives the machine until an event satisfies `done` (true) or
    /// `deadline` passes (false). Each event is offered once, across calls,
    /// until the events are taken.
    pub fn run_until(
        &mut self,
        deadline: Instant,
        mut done: impl FnMut(&M::Event) -> bool,
    ) -> Result<bool, DriveError<D::Error>> {
        self.pump()?;
        loop {
            while self.offered < self.events.len() {
                let event = &self.events[self.offered];
                self.offered += 1;
                if done(event) {
                    return Ok(true);
                }
            }
            if self.now().instant >= deadline {
                return Ok(false);
            }
            self.step(deadline)?;
        }
    }

    /// Closes the connection politely: the machine's close frame, then the link.
    pub fn close(&mut self) -> Result<(), DriveError<D::Error>> {
        if self.link.is_some() {
            let now = self.now();
            self.machine.close(now);
            self.pump()?;
            if let Some(mut link) = self.link.take() {
                link.close();
            }
        }
        Ok(())
    }

    /// The link is gone: the machine is told.
    fn lost(&mut self) {
        self.link = None;
        let now = self.now();
        self.machine.disconnected(now);
    }

    fn not_connected(&self) -> DriveError<D::Error> {
        let (code, reason) = self.closed.clone().unwrap_or((503, "not connected".into()));
        DriveError::Closed { code, reason }
    }
}
