//! What the wrapped client reports, verified and opened.

use bytes::Bytes;

use super::mp::Answer;
use super::{Contact, DecryptError, RoomPending, SecureClient, SecureEvent};
use crate::ClientEvent;
use crate::e2e::{OpenError, Opened, PublicIdentity, RoomDescriptor, RoomKeys, RoomSession};
use crate::wire::{HistoryEntry, Opcode, ResponseBody, status};

impl SecureClient {
    /// Turns one client event into secure events.
    pub(super) fn on_event(&mut self, event: ClientEvent) {
        if !matches!(
            event,
            ClientEvent::LoggedIn { .. }
                | ClientEvent::LoggedOut { .. }
                | ClientEvent::ExternalTokenNeeded { .. }
                | ClientEvent::Connected { .. }
                | ClientEvent::CaughtUp
                | ClientEvent::PeerGone { .. }
                | ClientEvent::MpExpired { .. }
                | ClientEvent::ServerError { .. }
                | ClientEvent::BadFrame { .. }
                | ClientEvent::Closed { .. }
        ) {
            // Contacts, handshakes, offers, sessions, what was accepted,
            // received MPs, pending requests or room keys may change. (The
            // wrapped client's own state changed too: a delivered item, an
            // answered request.)
            self.dirty = true;
        }
        match event {
            ClientEvent::MpRequest { from, identity_key, handshake, .. } => {
                self.on_request(&from, &identity_key, &handshake);
            }
            ClientEvent::MpAccepted { peer, identity_key, handshake, .. } => {
                self.on_accepted(&peer, &identity_key, &handshake);
            }
            ClientEvent::UserMessage { from, sealed, .. } => self.on_mp(from, &sealed),
            ClientEvent::RoomMessage { room, from, seq, sealed, .. } => {
                let Some(session) = self.rooms.get_mut(&room) else {
                    let reason = DecryptError::NoRoomKey;
                    return self.events.push_back(SecureEvent::DecryptFailed { from, room: Some(room), reason });
                };
                let event = match session.open(&from, &sealed).map_err(DecryptError::from).and_then(text) {
                    Ok((sent_ms, text)) => SecureEvent::Room { room, from, seq, sent_ms, text, history: false },
                    Err(reason) => SecureEvent::DecryptFailed { from, room: Some(room), reason },
                };
                self.events.push_back(event);
            }
            ClientEvent::Done { request_id, ref body, .. } => {
                self.on_mp_answer(request_id, Answer::Done);
                if let Some(event) = self.on_done(request_id, body, event.clone()) {
                    self.events.push_back(SecureEvent::Plain(event));
                }
            }
            ClientEvent::Failed { request_id, opcode, code, reason, retry_after_ms } => {
                let request_id = match self.room_pending.remove(&request_id) {
                    Some(RoomPending::Join { op, .. }) => op,
                    _ => request_id,
                };
                self.on_mp_answer(request_id, Answer::Failed(code));
                let event = ClientEvent::Failed { request_id, opcode, code, reason, retry_after_ms };
                self.events.push_back(SecureEvent::Plain(event));
            }
            ClientEvent::Indeterminate { request_id, opcode, reason } => {
                let request_id = match self.room_pending.remove(&request_id) {
                    Some(RoomPending::Join { op, .. }) => op,
                    _ => request_id,
                };
                self.on_mp_answer(request_id, Answer::Indeterminate);
                let event = ClientEvent::Indeterminate { request_id, opcode, reason };
                self.events.push_back(SecureEvent::Plain(event));
            }
            ClientEvent::MpClosed { ref peer, .. } => {
                // Every handshake the server held is refused or closed; a
                // request still awaiting its answer may be newer than the
                // close (queued notices arrive first on a new connection).
                self.sessions.remove(peer);
                self.requests.remove(peer);
                self.offers.remove(peer);
                self.events.push_back(SecureEvent::Plain(event));
            }
            other => self.events.push_back(SecureEvent::Plain(other)),
        }
    }

    /// Pins `der` for `user` on first use; `None` (and an event) when it is
    /// malformed or differs from the pinned key, or the contact is blocked.
    pub(super) fn pin(&mut self, user: &str, der: &[u8]) -> Option<PublicIdentity> {
        let presented = match PublicIdentity::from_spki_der(der) {
            Ok(key) => key,
            Err(error) => {
                let reason = format!("unusable identity key: {error}");
                self.events.push_back(SecureEvent::HandshakeRejected { peer: user.to_owned(), reason });
                return None;
            }
        };
        let Some(contact) = self.contacts.get_mut(user) else {
            let contact = Contact { pinned: presented.clone(), presented: None };
            self.contacts.insert(user.to_owned(), contact);
            return Some(presented);
        };
        if contact.pinned == presented && contact.presented.is_none() {
            return Some(presented);
        }
        if contact.pinned != presented && contact.presented.as_ref() != Some(&presented) {
            let event = SecureEvent::KeyChanged {
                user: user.to_owned(),
                pinned: contact.pinned.fingerprint(),
                presented: presented.fingerprint(),
            };
            contact.presented = Some(presented);
            self.events.push_back(event);
        }
        // Blocked: whatever came with this key is dropped.
        self.sessions.remove(user);
        self.offers.remove(user);
        None
    }

    fn on_mp(&mut self, from: String, sealed: &[u8]) {
        let opened = if self.is_blocked(&from) {
            Err(DecryptError::KeyChanged)
        } else {
            // The current session, then any a close in flight set aside (what the peer
            // sent before the server took the close).
            let mut opened = Err(DecryptError::NoSession);
            if let Some(session) = self.sessions.get_mut(&from) {
                opened = session.open(sealed).map_err(DecryptError::from).and_then(text);
            }
            if opened.is_err() {
                for session in self.closing_sessions(&from) {
                    if let Ok(ok) = session.open(sealed).map_err(DecryptError::from).and_then(text) {
                        opened = Ok(ok);
                        break;
                    }
                }
            }
            opened
        };
        match opened {
            Ok((sent_ms, text)) => {
                let expires = self.clock.instant + super::MP_LOCAL_RETENTION;
                let expires_ms = self.clock.unix_ms.saturating_add(super::MP_LOCAL_RETENTION.as_millis() as u64);
                let received = super::Received { at: expires, expires_ms, from: from.clone(), text: text.clone() };
                self.inbox.push_back(received);
                self.events.push_back(SecureEvent::Mp { from, sent_ms, text });
            }
            Err(reason) => self.events.push_back(SecureEvent::DecryptFailed { from, room: None, reason }),
        }
    }

    /// Handles an answer; returns the event to hand on (`None` when it was
    /// the internal `room_info` step of a join).
    fn on_done(&mut self, request_id: u32, body: &ResponseBody, event: ClientEvent) -> Option<ClientEvent> {
        if let ResponseBody::IdentityKey(key) = body {
            self.pin(&key.username, &key.identity_key);
            return Some(event);
        }
        let Some(pending) = self.room_pending.remove(&request_id) else { return Some(event) };
        let Some(me) = self.client.username().map(str::to_owned) else { return Some(event) };
        match (pending, body) {
            (RoomPending::Create(keys), _) => {
                let session = RoomSession::new(keys, &me, &mut self.rng);
                self.install_room(session);
            }
            (RoomPending::Info { room, password }, ResponseBody::RoomDescriptor(info)) => {
                return self.join_with(request_id, &room, &password, &info.descriptor);
            }
            (RoomPending::Info { room, .. }, _) => {
                return Some(ClientEvent::Failed {
                    request_id,
                    opcode: Opcode::RoomInfo,
                    code: status::BAD_REQUEST,
                    reason: format!("room {room}: the server's room_info answer carries no descriptor"),
                    retry_after_ms: 0,
                });
            }
            (RoomPending::Join { keys, op }, ResponseBody::RoomJoined(joined)) => {
                // A rejoin keeps what this device accepted in that
                // incarnation (held or retired): the server cannot replay
                // old messages as new, even by handing out another
                // descriptor in between.
                let room = keys.room().to_owned();
                let session = RoomSession::new(keys, &me, &mut self.rng);
                self.install_room(session);
                if let Some(mut session) = self.rooms.remove(&room) {
                    self.open_history(&room, &mut session, &joined.history);
                    self.rooms.insert(room, session);
                }
                return Some(with_request_id(event, op));
            }
            (RoomPending::History(room), ResponseBody::History(history)) => {
                if let Some(mut session) = self.rooms.remove(&room) {
                    self.open_history(&room, &mut session, &history.messages);
                    self.rooms.insert(room, session);
                }
            }
            _ => {}
        }
        Some(event)
    }

    /// The second step of a join: check the descriptor, derive the keys,
    /// send `join_room`. A refusal becomes the `Failed` outcome of `op`.
    fn join_with(&mut self, op: u32, room: &str, password: &[u8], descriptor: &Bytes) -> Option<ClientEvent> {
        let now = self.clock;
        let keys = RoomDescriptor::parse(descriptor, self.room_params)
            .and_then(|d| RoomKeys::derive(room, password, &d))
            .map_err(|e| e.to_string());
        let sent = keys.and_then(|keys| {
            let verifier = Bytes::copy_from_slice(keys.verifier());
            self.client.join_room(now, room, verifier).map(|id| (id, keys)).map_err(|e| e.to_string())
        });
        match sent {
            Ok((id, keys)) => {
                self.room_pending.insert(id, RoomPending::Join { keys, op });
                None
            }
            Err(reason) => Some(ClientEvent::Failed {
                request_id: op,
                opcode: Opcode::JoinRoom,
                code: status::BAD_REQUEST,
                reason: format!("room {room} refused on this device: {reason}"),
                retry_after_ms: 0,
            }),
        }
    }

    /// Opens history entries. One never accepted before is accepted now
    /// (so a later live copy is a replay); one already accepted is shown
    /// again as history, never as new. Either way it must be authentic.
    fn open_history(&mut self, room: &str, session: &mut RoomSession, entries: &[HistoryEntry]) {
        for entry in entries {
            let opened = match session.open(&entry.from, &entry.sealed) {
                Err(OpenError::Replayed { .. } | OpenError::TooOld { .. } | OpenError::Stale { .. }) => {
                    session.peek(&entry.from, &entry.sealed)
                }
                other => other,
            };
            let (room, from) = (room.to_owned(), entry.from.clone());
            let event = match opened.map_err(DecryptError::from).and_then(text) {
                Ok((sent_ms, text)) => SecureEvent::Room { room, from, seq: entry.seq, sent_ms, text, history: true },
                Err(reason) => SecureEvent::DecryptFailed { from, room: Some(room), reason },
            };
            self.events.push_back(event);
        }
    }
}

/// The sender's timestamp and the text of an opened message.
fn text(opened: Opened) -> Result<(u64, String), DecryptError> {
    let text = String::from_utf8(opened.plaintext).map_err(|_| DecryptError::NotText)?;
    Ok((opened.sent_ms, text))
}

/// The outcome event of the internal `join_room` step, under the id the
/// caller holds.
fn with_request_id(event: ClientEvent, op: u32) -> ClientEvent {
    match event {
        ClientEvent::Done { opcode, code, body, .. } => ClientEvent::Done { request_id: op, opcode, code, body },
        other => other,
    }
}
