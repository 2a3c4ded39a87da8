//! The session loop: one [`SecureClient`], one [`Profile`], one [`Link`].
//!
//! ```text
//! loop:
//!   drain poll_output: events -> kept, transmits -> held back, close -> noted
//!   profile.save(sc.snapshot())        <- durable first: counters, outbox, inbox
//!   link.send(held transmits)          <- then the frames that depend on it
//!   stop if an event satisfies the predicate, or at the deadline
//!   link.recv(until min(timeout, deadline)) -> handle_input | handle_timeout
//! ```
//!
//! Saving before sending is what makes a request stored in the outbox before
//! it leaves (re-sent with the same id, never sealed anew, after a crash),
//! what was accepted stored before anything depends on it (no replay accepted
//! after a crash), and what makes a received message stored before its delivery acknowledgement
//! leaves (no message lost after a crash: the server replays unacknowledged
//! items at the next connection).

use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_proto::e2e::secure::{SecureClient, SecureEvent, SecureOutput, SecureSnapshot};
use confab_proto::{ClientEvent, Now};
use confab_transports::link::Link;

use crate::connect::{ConnectError, Connector};
use crate::profile::{Profile, ProfileError};

/// The time source: a monotonic instant and the Unix time in milliseconds.
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

/// A secure client bound to its profile and (while connected) a link.
pub struct Session {
    sc: SecureClient,
    profile: Profile,
    link: Option<Box<dyn Link>>,
    clock: Clock,
    events: Vec<SecureEvent>,
    /// Events before this index were already offered to a predicate.
    checked: usize,
    closed: Option<(u16, String)>,
    /// What the profile holds (a pump that changed nothing writes nothing).
    saved: Option<SecureSnapshot>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("connected", &self.link.is_some()).finish_non_exhaustive()
    }
}

impl Session {
    /// Binds `sc` to `profile`.
    #[must_use]
    pub fn new(sc: SecureClient, profile: Profile, clock: Clock) -> Session {
        Session { sc, profile, link: None, clock, events: Vec::new(), checked: 0, closed: None, saved: None }
    }

    /// The current time.
    #[must_use]
    pub fn now(&self) -> Now {
        (self.clock)()
    }

    /// The secure client.
    pub fn sc(&mut self) -> &mut SecureClient {
        &mut self.sc
    }

    /// The profile. Whoever writes to it directly makes the next pump save the whole state again.
    pub fn profile(&mut self) -> &mut Profile {
        self.saved = None;
        &mut self.profile
    }

    /// Ends the session, returning the profile (closed when dropped).
    #[must_use]
    pub fn into_profile(self) -> Profile {
        self.profile
    }

    /// Makes a link and tells the client (which refreshes its session on it).
    pub fn connect(&mut self, connector: &mut dyn Connector) -> Result<(), SessionError> {
        let link = connector.connect()?;
        self.link = Some(link);
        self.closed = None;
        let now = self.now();
        self.sc.connected(now);
        self.pump()?;
        Ok(())
    }

    /// Every event since the last call.
    pub fn take_events(&mut self) -> Vec<SecureEvent> {
        self.checked = 0;
        std::mem::take(&mut self.events)
    }

    /// Drains the outputs: saves, then sends. Returns the next timer.
    pub fn pump(&mut self) -> Result<Option<Instant>, SessionError> {
        let mut transmits = Vec::new();
        let mut close = None;
        let timeout = loop {
            match self.sc.poll_output() {
                SecureOutput::Event(event) => self.events.push(event),
                SecureOutput::Transmit(bytes) => transmits.push(bytes),
                SecureOutput::Close { code, reason } => close = Some((code, reason)),
                SecureOutput::Timeout(at) => break at,
            }
        };
        let snapshot = self.sc.snapshot();
        if self.saved.as_ref() != Some(&snapshot) {
            self.profile.save(&snapshot)?;
            self.saved = Some(snapshot);
        }
        if let Some(link) = self.link.as_mut() {
            for bytes in &transmits {
                if let Err(e) = link.send(bytes) {
                    self.lost();
                    return Err(SessionError::LinkLost(e));
                }
            }
        }
        if let Some(close) = close {
            if let Some(mut link) = self.link.take() {
                link.close();
            }
            self.closed = Some(close);
        }
        Ok(timeout)
    }

    /// Runs until an event satisfies `done` (true) or `deadline` passes (false).
    pub fn run_until(
        &mut self,
        deadline: Instant,
        mut done: impl FnMut(&SecureEvent) -> bool,
    ) -> Result<bool, SessionError> {
        loop {
            let timeout = self.pump()?;
            let found = self.events[self.checked..].iter().any(&mut done);
            self.checked = self.events.len();
            if found {
                return Ok(true);
            }
            let now = self.now();
            if now.instant >= deadline {
                return Ok(false);
            }
            let Some(link) = self.link.as_mut() else {
                let (code, reason) = self.closed.clone().unwrap_or((503, "not connected".into()));
                return Err(SessionError::Closed { code, reason });
            };
            let wake = timeout.map_or(deadline, |t| t.min(deadline));
            let received = link.recv(wake);
            self.feed(received)?;
        }
    }

    /// Hands what `recv` gave to the machine: bytes as input, a deadline
    /// as a timeout (`Ok(false)`), a failure as a lost link.
    fn feed(&mut self, received: std::io::Result<Option<Vec<u8>>>) -> Result<bool, SessionError> {
        let now = self.now();
        match received {
            Ok(Some(bytes)) => {
                self.sc.handle_input(now, &bytes);
                Ok(true)
            }
            Ok(None) => {
                self.sc.handle_timeout(now);
                Ok(false)
            }
            Err(e) => {
                self.lost();
                self.pump()?;
                Err(SessionError::LinkLost(e))
            }
        }
    }

    /// Runs until the request `id` has its outcome (the event), or `timeout` passes (`None`).
    pub fn wait_outcome(&mut self, id: u32, timeout: Duration) -> Result<Option<ClientEvent>, SessionError> {
        let deadline = self.now().instant + timeout;
        if !self.run_until(deadline, |e| outcome_of(e) == Some(id))? {
            return Ok(None);
        }
        let event = self.events.iter().rev().find_map(|e| match e {
            SecureEvent::Plain(plain) if outcome_of(e) == Some(id) => Some(plain.clone()),
            _ => None,
        });
        Ok(event)
    }

    /// Reads until the server has been quiet for `quiet` (what was queued
    /// for this user has arrived), or `limit` passes.
    pub fn settle(&mut self, quiet: Duration, limit: Duration) -> Result<(), SessionError> {
        let end = self.now().instant + limit;
        loop {
            let timeout = self.pump()?;
            let now = self.now().instant;
            let Some(link) = self.link.as_mut() else { return Ok(()) };
            if now >= end {
                return Ok(());
            }
            let wake = (now + quiet).min(end);
            let wake = timeout.map_or(wake, |t| t.min(wake));
            let received = link.recv(wake);
            if !self.feed(received)? {
                return self.pump().map(drop);
            }
        }
    }

    /// Closes the connection politely (close frame, then the link).
    pub fn close(&mut self) -> Result<(), SessionError> {
        if self.link.is_some() {
            let now = self.now();
            self.sc.client_mut().close(now);
            self.pump()?;
            if let Some(mut link) = self.link.take() {
                link.close();
            }
        }
        Ok(())
    }

    /// Whether a link is up.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.link.is_some()
    }

    fn lost(&mut self) {
        self.link = None;
        let now = self.now();
        self.sc.disconnected(now);
    }
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
