//! Client configuration: every limit and timer of the client machine.

use std::time::Duration;

use crate::wire::Limits;

/// Every limit and parameter of the [`Client`](super::Client) machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Codec limits, for decoding what the server sends and for checking
    /// commands before they are encoded. They must not exceed the server's
    /// (the defaults are the protocol's).
    pub limits: Limits,
    /// Silence from the server after which the client sends a ping.
    pub keepalive_interval: Duration,
    /// Silence from the server after which the client gives up on the
    /// connection: it sends a close frame (408) and asks the adapter to close.
    pub idle_timeout: Duration,
    /// Requests made by the application that may wait for their answer at
    /// once (sent or not); more are refused with
    /// [`CommandError::OutboxFull`](super::CommandError::OutboxFull).
    pub max_outbox: usize,
    /// Peers whose last delivered sequence number is remembered. Past this
    /// bound the least recently active peer whose acknowledgement the server
    /// confirmed is forgotten (the server never replays an acknowledged item,
    /// so forgetting it cannot cause a duplicate).
    pub max_seen_peers: usize,
    /// Rooms whose last delivered sequence number is remembered; past this
    /// bound the least recently active room is forgotten.
    pub max_seen_rooms: usize,
    /// Wait before trying a token refresh again after the server refused it
    /// for a reason that may pass (busy, duplicate login refused), unless
    /// the answer said how long to wait.
    pub refresh_retry: Duration,
    /// How long a `delivery_ack` may wait after the first lane item it
    /// covers arrived, so that one acknowledgement covers every item of a
    /// burst (a receiver then writes, and is woken by answers, far less
    /// often than it reads). Zero acknowledges at the end of each input
    /// batch. Delaying costs nothing but the server's memory: an item not
    /// acknowledged yet is replayed after a reconnection and dropped as a
    /// duplicate. Acknowledgements due go out at once when `ack_batch`
    /// items are waiting, before any request the application makes, and
    /// before [`Client::close`](super::Client::close)'s close frame.
    pub ack_delay: Duration,
    /// Lane items after which the acknowledgements go out without waiting
    /// for `ack_delay` (at least 1). Keep it well below the server's
    /// per-recipient queue bound, which counts items until they are
    /// acknowledged.
    pub ack_batch: usize,
    /// The first request id. Ids only grow from there. A client restored
    /// from a stored profile continues from the profile's
    /// [`Client::next_request_id`](super::Client::next_request_id), since the
    /// server remembers recent ids per user to make retries idempotent.
    pub first_request_id: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            limits: Limits::DEFAULT,
            keepalive_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            max_outbox: 1024,
            max_seen_peers: 65_536,
            max_seen_rooms: 4096,
            refresh_retry: Duration::from_secs(5),
            ack_delay: Duration::from_millis(10),
            ack_batch: 64,
            first_request_id: 1,
        }
    }
}
