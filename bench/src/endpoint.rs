//! What the generator drives: one client of the system under test (a
//! confab client, or a NATS, MQTT or Redis client when the `peers` feature
//! is on), seen through the few operations the measured loop needs.
//!
//! The generator (`worker.rs`) owns the pacing (closed-loop window, fixed
//! rate), the payload timestamps and the counting; an endpoint only sends
//! a payload, says when the system acknowledged it, and hands over the
//! payloads it received.

use std::time::Instant;

use bytes::Bytes;

use crate::BenchError;
use crate::worker::{Role, Shared};

/// Something an endpoint observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// The system acknowledged the message sent as `id`.
    Acked(u32),
    /// The system refused (or could not confirm) the message sent as `id`.
    Refused(u32, String),
    /// A payload arrived (a delivery to this client).
    Delivered(Bytes),
    /// The connection is gone.
    Closed(String),
    /// Something went wrong that does not end the run (counted as an error).
    Error(String),
}

/// One client of the system under test, driven by one bench thread.
pub(crate) trait Endpoint {
    /// Queues `payload` for the run's target (the conversation, subject,
    /// topic or channel of this client's role); the id its [`Event::Acked`]
    /// will carry.
    fn send(&mut self, payload: Bytes) -> Result<u32, BenchError>;
    /// Writes what [`Endpoint::send`] queued.
    fn pump(&mut self) -> Result<(), BenchError>;
    /// Waits for input until `deadline` (a deadline already past: only what
    /// is there), and keeps what arrived as events.
    fn step(&mut self, deadline: Instant) -> Result<(), BenchError>;
    /// The oldest event not taken yet.
    fn next_event(&mut self) -> Option<Event>;
    /// Whether an event is waiting.
    fn has_events(&self) -> bool;
    /// Closes the connection (best effort).
    fn close(self: Box<Self>);
}

/// A system the generator can measure: it connects one client per role
/// and prepares it (accounts, conversations, subscriptions) so that it is
/// ready to send and receive when the measured loop starts.
pub(crate) trait System: Send + Sync {
    /// Connects and prepares the client of `role`. Every role's setup must
    /// wait at the shared gate ([`crate::gate::Gate`]) the same number of times.
    fn setup(&self, shared: &Shared, role: &Role) -> Result<Box<dyn Endpoint>, BenchError>;
}
