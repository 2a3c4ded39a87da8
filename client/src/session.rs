//! The session: one [`SecureClient`] committing into one [`Profile`] over
//! one link, driven by the transports' [`Driver`]:
//!
//! ```text
//! loop:
//!   turn = sc.drain()
//!   turn.commit(profile)        <- durable first, when the state changed:
//!                                  counters, outbox, inbox, keys
//!   events -> kept, transmits -> link, close -> link closed
//!   stop if an event satisfies the predicate, or at the deadline
//!   link.recv(until min(timeout, deadline)) -> handle_input | handle_timeout
//! ```
//!
//! Committing before sending is what makes a request stored in the outbox
//! before it leaves (re-sent with the same id, never sealed anew, after a
//! crash), what was accepted stored before anything depends on it (no
//! replay accepted after a crash), and what makes a received message stored
//! before its delivery acknowledgement leaves (no message lost after a
//! crash: the server replays unacknowledged items at the next connection).
//! The secure client says when its state changed
//! ([`SecureClient::checkpoint_due`]); a turn that changed nothing writes
//! nothing.

use std::time::Duration;
use std::time::Instant;

use confab_proto::e2e::secure::{SecureClient, SecureEvent};
use confab_proto::{ClientEvent, Durable, Now};
use confab_transports::link::{DriveError, Driver};

pub use confab_transports::link::{Clock, system_clock};

use crate::connect::{ConnectError, Connector};
use crate::profile::{Profile, ProfileError};

/// Why the loop stopped short.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No link could be made.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The link failed.
    #[error("connection lost: {0}")]
    LinkLost(std::io::Error),
    /// The server (or the client, on idle timeout) closed the connection.
    #[error("connection closed ({code}): {reason}")]
    Closed {
        /// Three-digit code.
        code: u16,
        /// Why.
        reason: String,
    },
    /// The profile could not be written: nothing was sent.
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

impl From<DriveError<ProfileError>> for SessionError {
    fn from(e: DriveError<ProfileError>) -> Self {
        match e {
            DriveError::Store(e) => SessionError::Profile(e),
            DriveError::LinkLost(e) => SessionError::LinkLost(e),
            DriveError::Closed { code, reason } => SessionError::Closed { code, reason },
        }
    }
}

/// The profile is the secure client's store: a checkpoint writes its whole
/// snapshot in one transaction.
impl Durable<SecureClient> for Profile {
    type Error = ProfileError;

    fn commit(&mut self, sc: &SecureClient) -> Result<(), ProfileError> {
        if !self.writes_checkpoint(sc.client().is_logged_in()) {
            return Ok(());
        }
        self.save(&sc.snapshot())
    }
}

/// Where a session lent to a command goes back when the command drops it
/// (see [`Session::lend`]).
pub type Slot = std::rc::Rc<std::cell::RefCell<Option<Session>>>;

/// A secure client bound to its profile and (while connected) a link.
#[derive(Debug)]
pub struct Session {
    /// Always `Some` but while being handed back to its lender in `drop`.
    driver: Option<Driver<SecureClient, Profile>>,
    /// The lender's slot, for a session lent to a command: `close` then
    /// keeps the connection and dropping the session gives it back.
    lender: Option<Slot>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let (Some(slot), Some(driver)) = (self.lender.take(), self.driver.take()) {
            slot.borrow_mut().replace(Session { driver: Some(driver), lender: None });
        }
    }
}

impl Session {
    /// Binds `sc` to `profile`.
    #[must_use]
    pub fn new(sc: SecureClient, profile: Profile, clock: Clock) -> Session {
        Session { driver: Some(Driver::new(sc, profile, clock)), lender: None }
    }

    /// Lends this session to a command (a `listen` serving another
    /// process's command on its own session): the command's `close` keeps
    /// the connection, and when the command drops the session it is back in `slot`.
    #[must_use]
    pub fn lend(mut self, slot: &Slot) -> Session {
        self.lender = Some(slot.clone());
        self
    }

    fn d(&self) -> &Driver<SecureClient, Profile> {
        self.driver.as_ref().expect("a session holds its driver until dropped")
    }

    fn dm(&mut self) -> &mut Driver<SecureClient, Profile> {
        self.driver.as_mut().expect("a session holds its driver until dropped")
    }

    /// The current time.
    #[must_use]
    pub fn now(&self) -> Now {
        self.d().now()
    }

    /// The secure client.
    pub fn sc(&mut self) -> &mut SecureClient {
        self.dm().machine_mut()
    }

    /// The profile (what the secure client's snapshot does not hold: the identity key).
    pub fn profile(&mut self) -> &mut Profile {
        self.dm().store_mut()
    }

    /// Ends the session, returning the profile (closed when dropped).
    #[must_use]
    pub fn into_profile(mut self) -> Profile {
        self.lender = None;
        self.driver.take().expect("a session holds its driver until dropped").into_parts().1
    }

    /// Makes a link and tells the client (which refreshes its session on it).
    pub fn connect(&mut self, connector: &mut dyn Connector) -> Result<(), SessionError> {
        let link = connector.connect()?;
        self.dm().connect(link)?;
        Ok(())
    }

    /// A mark in the events: [`misdirected_since`](Self::misdirected_since) looks after it.
    #[must_use]
    pub fn event_mark(&self) -> usize {
        self.d().events().len()
    }

    /// Whether the server closed the connection as misdirected (421: the
    /// node does not serve this user's partition) among the events after
    /// `mark`.
    #[must_use]
    pub fn misdirected_since(&self, mark: usize) -> bool {
        let closed = |e: &SecureEvent| {
            matches!(e, SecureEvent::Plain(ClientEvent::Closed { code: confab_proto::wire::status::MISDIRECTED, .. }))
        };
        self.d().events().iter().skip(mark).any(closed)
    }

    /// The events not taken yet, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &SecureEvent> {
        self.d().events().iter()
    }

    /// Every event since the last call.
    pub fn take_events(&mut self) -> Vec<SecureEvent> {
        self.dm().take_events()
    }

    /// Drives one turn: commits it into the profile, then sends. Returns the next timer.
    pub fn pump(&mut self) -> Result<Option<Instant>, SessionError> {
        Ok(self.dm().pump()?)
    }

    /// Runs until an event satisfies `done` (true) or `deadline` passes (false).
    pub fn run_until(
        &mut self,
        deadline: Instant,
        done: impl FnMut(&SecureEvent) -> bool,
    ) -> Result<bool, SessionError> {
        Ok(self.dm().run_until(deadline, done)?)
    }

    /// Runs until the request `id` has its outcome (the event), or `timeout` passes (`None`).
    pub fn wait_outcome(&mut self, id: u32, timeout: Duration) -> Result<Option<ClientEvent>, SessionError> {
        let deadline = self.now().instant + timeout;
        if !self.run_until(deadline, |e| outcome_of(e) == Some(id))? {
            return Ok(None);
        }
        let event = self.d().events().iter().rev().find_map(|e| match e {
            SecureEvent::Plain(plain) if outcome_of(e) == Some(id) => Some(plain.clone()),
            _ => None,
        });
        Ok(event)
    }

    /// Runs until the connection is bound and everything the server had
    /// queued for this user arrived ([`ClientEvent::CaughtUp`]), or the
    /// refresh that binds it failed (the event), or `timeout` passes (`None`).
    pub fn wait_caught_up(&mut self, timeout: Duration) -> Result<Option<ClientEvent>, SessionError> {
        let deadline = self.now().instant + timeout;
        let found = |e: &SecureEvent| {
            matches!(
                e,
                SecureEvent::Plain(
                    ClientEvent::CaughtUp | ClientEvent::Failed { opcode: confab_proto::wire::Opcode::Refresh, .. }
                )
            )
        };
        if !self.run_until(deadline, found)? {
            return Ok(None);
        }
        let event = self.d().events().iter().rev().find_map(|e| match e {
            SecureEvent::Plain(plain) if found(e) => Some(plain.clone()),
            _ => None,
        });
        Ok(event)
    }

    /// Closes the connection politely (close frame, then the link); a lent
    /// session stays connected (its lender goes on with it).
    pub fn close(&mut self) -> Result<(), SessionError> {
        if self.lender.is_some() {
            self.pump()?;
            return Ok(());
        }
        Ok(self.dm().close()?)
    }

    /// Whether a link is up.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.d().is_connected()
    }
}

/// Whether `e` is a close as misdirected (421): the node does not serve
/// this user's partition (docs/PARTITIONS.md), another node does.
#[must_use]
pub fn misdirected(e: &SessionError) -> bool {
    matches!(e, SessionError::Closed { code: confab_proto::wire::status::MISDIRECTED, .. })
}

/// The request id whose outcome `event` is, if it is one.
#[must_use]
pub fn outcome_of(event: &SecureEvent) -> Option<u32> {
    match event {
        SecureEvent::Plain(
            ClientEvent::Done { request_id, .. }
            | ClientEvent::Failed { request_id, .. }
            | ClientEvent::Indeterminate { request_id, .. }
            | ClientEvent::LoggedIn { request_id, .. }
            | ClientEvent::LoggedOut { request_id },
        ) => Some(*request_id),
        _ => None,
    }
}
