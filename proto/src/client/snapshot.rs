//! The resumable state of a [`Client`], as plain data for a stored profile.
//!
//! [`Client::snapshot`] exports what a new process needs to carry on where
//! this one stopped: the session (refresh token, username), the next request
//! id (the server deduplicates retries by id, so ids must never repeat), the
//! last delivered sequence number per peer and per room (so replays after a
//! restart are dropped), and every authenticated request still waiting for
//! its answer, as the exact frame it was written as (so a re-send after a
//! restart carries the same id and the same bytes, and the server performs
//! it once). [`Client::restore`] is the inverse.
//!
//! Not exported: a login under way (it holds the password; it fails with a
//! restart like with a lost connection) and `register` (anonymous requests
//! cannot be retried safely).
//!
//! The snapshot holds the refresh token: it is erased from memory when the
//! snapshot is dropped; store it where only the user can read it.

use zeroize::{Zeroize, Zeroizing};

use super::Client;
use super::outbox::{Entry, Origin};
use crate::wire::{FrameDecoder, Message, Request};
use crate::{ClientConfig, Now};

/// Why a snapshot could not be restored. Nothing of it was used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// An outbox entry is not one whole, valid authenticated request frame.
    #[error("stored request {0} is malformed")]
    BadRequest(u32),
    /// An outbox entry's id is not below the next request id (ids would repeat).
    #[error("stored request {0} is not below the next request id")]
    IdOrder(u32),
    /// A stored key, session or handshake is malformed.
    #[error("stored {0} is malformed")]
    Malformed(&'static str),
}

/// The resumable state of a [`Client`]: the session (refresh token,
/// username), the next request id (ids never repeat: the server deduplicates
/// retries by id), the last delivered sequence number per peer and per room
/// (replays after a restart are dropped), and every authenticated request
/// waiting for its answer as the exact frame it was written as (re-sent with
/// the same id, performed once). Not included: a login under way (it holds
/// the password) and `register`. The refresh token is erased from memory on drop.
#[derive(Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ClientSnapshot {
    /// The logged-in user (`None`: never logged in, or logged out).
    pub username: Option<String>,
    /// The current refresh token (secret; rotates at every refresh).
    pub refresh_token: Option<String>,
    /// The retry key of the refresh token's exchange, once drawn (secret;
    /// see [`Client::set_entropy`]). Absent from snapshots of older builds.
    #[cfg_attr(feature = "serde", serde(default))]
    pub retry_key: Option<[u8; crate::wire::RETRY_KEY_LEN]>,
    /// The attempts at that exchange written so far (0 without a key).
    #[cfg_attr(feature = "serde", serde(default))]
    pub retry_attempt: u32,
    /// The id the next request gets (`None`: every id was used).
    pub next_request_id: Option<u32>,
    /// Per peer, the highest lane sequence number delivered.
    pub seen_peers: Vec<(String, u64)>,
    /// Per room, the highest room sequence number seen.
    pub seen_rooms: Vec<(String, u64)>,
    /// Requests waiting for their answer, oldest first.
    pub outbox: Vec<OutboxSnapshot>,
}

impl std::fmt::Debug for ClientSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSnapshot")
            .field("username", &self.username)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .field("has_retry_key", &self.retry_key.is_some())
            .field("next_request_id", &self.next_request_id)
            .field("outbox", &self.outbox.len())
            .finish_non_exhaustive()
    }
}

impl Drop for ClientSnapshot {
    fn drop(&mut self) {
        if let Some(token) = self.refresh_token.as_mut() {
            token.zeroize();
        }
        if let Some(key) = self.retry_key.as_mut() {
            key.zeroize();
        }
    }
}

/// One request waiting for its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct OutboxSnapshot {
    /// Its request id (also inside `frame`).
    pub request_id: u32,
    /// Its opcode number (also inside `frame`; for display).
    pub opcode: u32,
    /// The request as a whole frame with an empty auth part (`confab inspect` decodes it).
    pub frame: Vec<u8>,
    /// It was written on some connection: the server may have performed it.
    pub written: bool,
    /// A delivery acknowledgement the client made on its own (not an application command).
    pub ack: bool,
}

impl Client {
    /// Exports the resumable state. Store it (durably) before writing the
    /// transmits that follow a command: they may carry what it describes.
    #[must_use]
    pub fn snapshot(&self) -> ClientSnapshot {
        let outbox = self
            .outbox
            .entries()
            .filter(|e| e.needs_auth())
            .map(|e| {
                let request = Request { request_id: e.id, timestamp_ms: e.timestamp_ms, body: e.body.clone() };
                OutboxSnapshot {
                    request_id: e.id,
                    opcode: e.opcode().as_u32(),
                    frame: Message::Request(request).to_bytes(&[]).to_vec(),
                    written: e.written,
                    ack: e.origin == Origin::Ack,
                }
            })
            .collect();
        ClientSnapshot {
            username: self.username.clone(),
            refresh_token: self.auth.refresh.clone(),
            retry_key: self.auth.retry.as_ref().map(|r| *r.key),
            retry_attempt: self.auth.retry.as_ref().map_or(0, |r| r.attempt),
            next_request_id: self.next_id,
            seen_peers: self.lanes.seen(),
            seen_rooms: self.lanes.rooms_seen(),
            outbox,
        }
    }

    /// A client, not connected, carrying on from `snapshot`: the next
    /// [`Client::connected`] refreshes the session with the stored token,
    /// then sends every stored request again with its original id.
    /// `config.first_request_id` is ignored (the snapshot's id is used).
    pub fn restore(config: ClientConfig, snapshot: &ClientSnapshot, now: Now) -> Result<Client, SnapshotError> {
        let limits = config.limits;
        let mut client = Client::new(config, now);
        client.next_id = snapshot.next_request_id;
        for stored in &snapshot.outbox {
            let entry = decode_entry(stored, &limits)?;
            if client.next_id.is_some_and(|next| entry.id >= next) {
                return Err(SnapshotError::IdOrder(entry.id));
            }
            client.outbox.push(entry);
        }
        if let Some(username) = &snapshot.username {
            client.lanes.set_owner(username);
            client.username = Some(username.clone());
        }
        for (peer, seq) in &snapshot.seen_peers {
            client.lanes.restore_seen(peer, *seq);
        }
        for (room, seq) in &snapshot.seen_rooms {
            client.lanes.set_room(room, *seq);
        }
        client.auth.refresh.clone_from(&snapshot.refresh_token);
        if client.auth.refresh.is_some() {
            client.auth.retry = snapshot
                .retry_key
                .map(|key| super::auth::ExchangeKey { key: Zeroizing::new(key), attempt: snapshot.retry_attempt });
        }
        Ok(client)
    }
}

/// The outbox entry a stored frame describes.
fn decode_entry(stored: &OutboxSnapshot, limits: &crate::wire::Limits) -> Result<Entry, SnapshotError> {
    let bad = || SnapshotError::BadRequest(stored.request_id);
    let mut decoder = FrameDecoder::new(*limits);
    decoder.push(&stored.frame);
    let frame = decoder.next_frame().map_err(|_| bad())?.ok_or_else(bad)?;
    if decoder.buffered() != 0 {
        return Err(bad());
    }
    let Ok(Message::Request(request)) = Message::decode(&frame, limits) else { return Err(bad()) };
    if request.request_id != stored.request_id || !super::outbox::needs_auth(request.body.opcode()) {
        return Err(bad());
    }
    let origin = if stored.ack { Origin::Ack } else { Origin::User };
    let mut entry = Entry::new(request.request_id, request.timestamp_ms, request.body, origin);
    entry.written = stored.written;
    Ok(entry)
}
