//! The client machine: one per user connection-owner, outliving its
//! connections.
//!
//! # Contract
//!
//! - [`Client::connected`] when a transport is up, [`Client::disconnected`]
//!   when it is gone; the same `Client` is connected again and again.
//! - [`Client::handle_input`] with whatever bytes arrived (any chunking).
//! - [`Client::handle_timeout`] when the last [`Output::Timeout`] instant passes.
//! - Commands ([`Client::login`], [`Client::send_mp`], ...) return a request
//!   id at once; the outcome arrives later as a [`ClientEvent`].
//! - After any of these, [`Client::drain`] and commit the turn
//!   ([`ClientTurn::commit`]): the store receives the client when its
//!   persisted state changed ([`Client::checkpoint_due`]), then the turn
//!   hands out the outputs, the last one a [`Output::Timeout`].
//!
//! The machine never reads a clock (time comes in as [`Now`]), needs no
//! randomness (request ids are a counter), never blocks, and never panics on
//! any input.
//!
//! # Guarantees
//!
//! - Every request stays in the outbox until its answer arrives; a new
//!   connection first refreshes the tokens (which authenticates it), then
//!   sends every unanswered request again with its original id, in the
//!   original order. The server performs a retried `send_mp`, `send_room`,
//!   `request_mp`, `accept_mp` or `close_mp` only once.
//! - An access token the server calls expired (419, or 401 while a refresh
//!   token is held) is refreshed once and the request sent again with the
//!   same id; the application sees only the final outcome.
//! - A session authenticated by an external provider's token
//!   ([`Client::use_external_token`]) has no refresh token: a 419 or 401
//!   on it holds the requests and asks the application for a fresh token
//!   ([`ClientEvent::ExternalTokenNeeded`], [`Client::set_external_token`]);
//!   they then go out again with their original ids.
//! - Lane items (`mp_request`, `mp_accepted`, `user_message`, `mp_closed`)
//!   are delivered once each: replays after a reconnect are dropped, and the
//!   highest sequence number per peer is acknowledged at most
//!   [`ClientConfig::ack_delay`] after the first item it covers arrived
//!   (sooner after [`ClientConfig::ack_batch`] items, before any other
//!   request, and before a close frame).
//! - After each connection is bound, [`ClientEvent::CaughtUp`] says when
//!   everything the server had queued for the user has arrived.
//! - An answer that cannot be read never poisons the outbox: a response
//!   frame that does not decode fails its request; a stream that loses its
//!   framing (a frame above the limits) closes the connection and settles
//!   every request written on it and not answered (queries fail, the rest
//!   are indeterminate), so no request is replayed into the same answer
//!   forever.

mod auth;
mod commands;
mod config;
mod error;
mod event;
mod inbound;
mod lanes;
mod outbox;
mod snapshot;
#[cfg(test)]
mod tests;

pub use config::ClientConfig;
pub use error::CommandError;
pub use event::{ClientEvent, ClientOutput};
pub use snapshot::{ClientSnapshot, OutboxSnapshot, SnapshotError};

use crate::Instant;
use std::collections::VecDeque;

use bytes::BytesMut;

use crate::Now;
use crate::machine::{self, ClientTurn, Output};
use crate::wire::{Close, FrameDecoder, Message, Ping, Request, status};
use auth::Auth;
use lanes::Lanes;
use outbox::{Origin, Outbox};

/// One transport's worth of state.
#[derive(Debug)]
struct Conn {
    decoder: FrameDecoder,
    last_rx: Instant,
    /// Nonce of the keepalive ping awaiting any input.
    ping: Option<u64>,
    /// The server bound this connection to the user (`connected`).
    authed: bool,
    /// Queued items still to come after `connected`, before
    /// [`ClientEvent::CaughtUp`] (`None`: not bound yet, or caught up).
    catch_up: Option<u32>,
}

/// The client machine. See the [module docs](self) for the contract.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    /// The next request id (`None`: all used).
    next_id: Option<u32>,
    conn: Option<Conn>,
    auth: Auth,
    outbox: Outbox,
    lanes: Lanes,
    username: Option<String>,
    events: VecDeque<ClientEvent>,
    /// Encoded frames not yet handed out as a `Transmit`.
    out: BytesMut,
    closes: VecDeque<(u16, String)>,
    next_nonce: u64,
    /// The latest time passed in (for [`Client::resume`], which takes none).
    clock: Now,
    /// The session, the request ids or the username changed since the last
    /// checkpoint (the outbox and the lanes track their own changes).
    dirty: bool,
    /// When the due delivery acknowledgements go out (`None`: none is due).
    acks_at: Option<Instant>,
}

impl Client {
    /// A client with no session and no connection.
    #[must_use]
    pub fn new(config: ClientConfig, now: Now) -> Client {
        Client {
            next_id: Some(config.first_request_id.max(1)),
            lanes: Lanes::new(config.max_seen_peers, config.max_seen_rooms),
            config,
            conn: None,
            auth: Auth::default(),
            outbox: Outbox::default(),
            username: None,
            events: VecDeque::new(),
            out: BytesMut::new(),
            closes: VecDeque::new(),
            next_nonce: 1,
            clock: now,
            dirty: true,
            acks_at: None,
        }
    }

    /// A new transport is up. With a session (a refresh token), the client
    /// first sends `refresh`, which authenticates the connection (the server
    /// then sends `connected` and replays what is queued), then every
    /// unanswered request again with its original id. A login made while
    /// disconnected goes out now.
    pub fn connected(&mut self, now: Now) {
        self.touch(now);
        self.drop_connection();
        self.out.clear();
        self.closes.clear();
        self.conn = Some(Conn {
            decoder: FrameDecoder::new(self.config.limits),
            last_rx: now.instant,
            ping: None,
            authed: false,
            catch_up: None,
        });
        // Another connection may reach another server (a rolling upgrade): it is asked again.
        self.auth.keyless = false;
        if self.auth.refresh.is_some() {
            self.start_refresh(now);
        } else if self.auth.external {
            self.send_hello(now);
        } else {
            self.send_login();
        }
        self.flush();
    }

    /// The transport is gone. Unanswered requests wait in the outbox for the
    /// next connection, except those that cannot be retried there (a login
    /// under way, a `register`), which fail with 503.
    pub fn disconnected(&mut self, now: Now) {
        self.touch(now);
        self.drop_connection();
        self.out.clear();
    }

    /// Closes the connection on purpose: a close frame (200), then
    /// [`Output::Close`]. Unanswered requests wait for the next connection.
    pub fn close(&mut self, now: Now) {
        self.touch(now);
        self.send_acks(now);
        self.flush();
        self.give_up(status::OK, "client closing".into());
    }

    /// Bytes arrived from the server, in any chunking.
    pub fn handle_input(&mut self, now: Now, bytes: &[u8]) {
        self.touch(now);
        let Some(conn) = self.conn.as_mut() else { return };
        conn.last_rx = now.instant;
        conn.ping = None;
        conn.decoder.push(bytes);
        while let Some(conn) = self.conn.as_mut() {
            match conn.decoder.next_frame() {
                Ok(None) => break,
                Ok(Some(frame)) => self.handle_frame(now, frame),
                Err(error) => {
                    self.events.push_back(ClientEvent::BadFrame { error: error.clone() });
                    self.settle_unreadable(&error);
                    self.give_up(error.code(), format!("undecodable stream: {error}"));
                    break;
                }
            }
        }
        self.schedule_acks(now);
        self.flush();
    }

    /// Timers: a keepalive ping after `keepalive_interval` of silence from
    /// the server, giving up after `idle_timeout` (close frame 408,
    /// [`ClientEvent::Closed`], [`Output::Close`]), retrying a refused
    /// refresh, and the delivery acknowledgements held for
    /// [`ClientConfig::ack_delay`].
    pub fn handle_timeout(&mut self, now: Now) {
        self.touch(now);
        if self.acks_at.is_some_and(|at| at <= now.instant) {
            self.send_acks(now);
            self.flush();
        }
        let (keepalive, idle) = (self.config.keepalive_interval, self.config.idle_timeout);
        if let Some(conn) = self.conn.as_mut() {
            let silent = now.instant.saturating_duration_since(conn.last_rx);
            if silent >= idle {
                let reason = format!("idle timeout: nothing received for {} s", silent.as_secs());
                return self.give_up(status::IDLE_TIMEOUT, reason);
            }
            if silent >= keepalive && conn.ping.is_none() {
                let nonce = self.next_nonce;
                self.next_nonce = self.next_nonce.wrapping_add(1);
                conn.ping = Some(nonce);
                Message::Ping(Ping { nonce }).encode(&[], &mut self.out);
            }
        }
        if self.auth.refresh_retry_at.is_some_and(|at| at <= now.instant) {
            self.auth.refresh_retry_at = None;
            self.start_refresh(now);
        }
    }

    /// Everything the last inputs and commands produced, as one turn: its
    /// outputs come out of [`ClientTurn::commit`], after the store received
    /// the client if a checkpoint is due.
    pub fn drain(&mut self) -> ClientTurn<'_, Client> {
        let outputs = machine::collect(|| self.poll_output());
        ClientTurn::new(self, outputs, Client::checkpointed)
    }

    /// Whether the persisted state ([`Client::snapshot`]) changed since the
    /// last checkpoint: the session, the next request id, the outbox
    /// (a request made, answered, or written for the first time), the
    /// delivered sequence numbers. A new or restored client has one due.
    #[must_use]
    pub fn checkpoint_due(&self) -> bool {
        self.dirty || self.outbox.changed() || self.lanes.changed()
    }

    /// The store holds the current state.
    pub(crate) fn checkpointed(&mut self) {
        self.dirty = false;
        self.outbox.checkpointed();
        self.lanes.checkpointed();
    }

    /// The next output (until `Timeout`); only [`Client::drain`] hands them out.
    pub(crate) fn poll_output(&mut self) -> ClientOutput {
        if let Some(event) = self.events.pop_front() {
            return Output::Event(event);
        }
        if !self.out.is_empty() {
            return Output::Transmit(self.out.split().freeze());
        }
        if let Some((code, reason)) = self.closes.pop_front() {
            return Output::Close { code, reason };
        }
        Output::Timeout(self.next_deadline())
    }

    // ---- introspection ----

    /// The logged-in user, once known (after login, or the first `connected` of a resumed session).
    #[must_use]
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// Whether the client holds a session (a refresh token, or an external
    /// access token), connected or not.
    #[must_use]
    pub fn is_logged_in(&self) -> bool {
        self.auth.has_session()
    }

    /// Whether the current connection is bound to the user (the server sent
    /// `connected`): the items queued for the user reach it. A client can
    /// hold tokens ([`is_logged_in`](Self::is_logged_in)) while its new
    /// connection is not bound yet (a refresh under way, or refused for now).
    #[must_use]
    pub fn is_bound(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.authed)
    }

    /// Whether a transport is up (between [`Client::connected`] and its end).
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Gives the client entropy to draw retry keys from: from then on it
    /// exchanges its refresh token with `refresh_keyed`, whose retry key
    /// (drawn before the first attempt and kept in the snapshot until the
    /// exchange is answered) lets it retry an exchange whose answer was lost
    /// from any connection, another server node included, without the
    /// server taking the retry for a stolen token. Without it the client
    /// sends plain `refresh`, whose retry is recognised on its own connection
    /// only. [`SecureClient`](crate::e2e::SecureClient) gives it entropy
    /// from its own generator.
    pub fn set_entropy(&mut self, seed: [u8; 32]) {
        use rand::SeedableRng as _;
        self.auth.keys = Some(rand::rngs::StdRng::from_seed(seed));
    }

    /// The current refresh token, to store in a profile (it rotates at every refresh).
    #[must_use]
    pub fn refresh_token(&self) -> Option<&str> {
        self.auth.refresh.as_deref()
    }

    /// Requests waiting for their answer, delivery acknowledgements included
    /// (the login under way and a refresh are not counted).
    #[must_use]
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Whether delivery acknowledgements wait for [`ClientConfig::ack_delay`]
    /// (the next [`Output::Timeout`] is at most that instant).
    #[must_use]
    pub fn acks_due(&self) -> bool {
        self.acks_at.is_some()
    }

    /// The highest lane sequence number delivered from `peer` (0: none).
    #[must_use]
    pub fn last_seen(&self, peer: &str) -> u64 {
        self.lanes.last_seen(peer)
    }

    /// Every peer with the highest lane sequence number delivered from it, for a stored profile.
    #[must_use]
    pub fn seen_peers(&self) -> Vec<(String, u64)> {
        self.lanes.seen()
    }

    /// Restores a peer's highest delivered sequence number from a stored
    /// profile, so that replays of items delivered before a restart are
    /// dropped (a checkpoint is then due).
    pub fn set_last_seen(&mut self, peer: &str, seq: u64) {
        self.lanes.set_last_seen(peer, seq);
    }

    /// The last room sequence number delivered in `room` (0: none).
    #[must_use]
    pub fn room_last_seen(&self, room: &str) -> u64 {
        self.lanes.room_last(room)
    }

    /// The id the next request will get (store it in a profile; see
    /// [`ClientConfig::first_request_id`]). `None` once every id was used.
    #[must_use]
    pub fn next_request_id(&self) -> Option<u32> {
        self.next_id
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    // ---- internals ----

    fn touch(&mut self, now: Now) {
        self.clock = now;
    }

    /// Writes every request that may go now, in order.
    fn flush(&mut self) {
        let Some(conn) = &self.conn else { return };
        let authed = if self.auth.external {
            // Every request carries the provider's token: the first one binds the connection.
            self.auth.access.is_some() && !self.auth.external_refused
        } else {
            conn.authed && self.auth.refresh_in_flight.is_none() && self.auth.access.is_some()
        };
        for id in self.outbox.ready(authed) {
            let Some(entry) = self.outbox.get_mut(id) else { continue };
            let token = if entry.needs_auth() { self.auth.access.as_deref().unwrap_or_default() } else { "" };
            let message = Message::Request(Request {
                request_id: entry.id,
                timestamp_ms: entry.timestamp_ms,
                body: entry.body.clone(),
            });
            message.encode(token.as_bytes(), &mut self.out);
            entry.sent = true;
            let first = !entry.written;
            entry.written = true;
            entry.sent_gen = self.auth.generation;
            if first && entry.needs_auth() {
                // The stored frame's `written` flag: the server may perform it from now on.
                self.dirty = true;
            }
        }
    }

    /// Sends a close frame, reports the end, asks the adapter to close.
    fn give_up(&mut self, code: u16, reason: String) {
        if self.conn.is_none() {
            return;
        }
        let frame_reason = truncate(&reason, usize::from(self.config.limits.max_text));
        let close = Close { code, reason: frame_reason.to_owned() };
        Message::Close(close).encode(&[], &mut self.out);
        self.events.push_back(ClientEvent::Closed { code, reason: reason.clone() });
        self.closes.push_back((code, reason));
        self.drop_connection();
    }

    /// Forgets the connection: what was written on it and not answered
    /// waits for the next one, or fails if it cannot be retried there.
    fn drop_connection(&mut self) {
        if self.conn.take().is_none() {
            return;
        }
        // What was due is acknowledged after the next binding's replay (the server still holds it).
        self.acks_at = None;
        self.auth_connection_lost();
        for entry in self.outbox.connection_lost() {
            if entry.origin == Origin::User {
                let reason = "connection lost before the answer";
                self.fail(entry.id, entry.opcode(), status::UNAVAILABLE, reason, 0);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let conn = self.conn.as_ref()?;
        let idle = conn.last_rx.checked_add(self.config.idle_timeout);
        let keepalive = match conn.ping {
            None => conn.last_rx.checked_add(self.config.keepalive_interval),
            Some(_) => None,
        };
        [idle, keepalive, self.auth.refresh_retry_at, self.acks_at].into_iter().flatten().min()
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
