//! What the wrapped client reports, verified and opened.

use super::{Contact, DecryptError, MpPending, RoomPending, SecureClient, SecureEvent};
use crate::e2e::seal::peek_counter;
use crate::e2e::{MpOffer, PublicIdentity, RoomSession, safety_number};
use crate::{ClientEvent, HistoryEntry, ResponseBody};

impl SecureClient {
    /// Turns one client event into secure events.
    pub(super) fn on_event(&mut self, event: ClientEvent) {
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
                let event = room_event(session, room, from, seq, &sealed, false);
                self.events.push_back(event);
            }
            ClientEvent::Done { request_id, ref body, .. } => {
                self.mp_pending.remove(&request_id);
                self.on_done(request_id, body);
                self.events.push_back(SecureEvent::Plain(event));
            }
            ClientEvent::Failed { request_id, .. } => {
                self.room_pending.remove(&request_id);
                match self.mp_pending.remove(&request_id) {
                    Some(MpPending::Request(peer)) => drop(self.requests.remove(&peer)),
                    Some(MpPending::Accept(peer)) => drop(self.sessions.remove(&peer)),
                    None => {}
                }
                self.events.push_back(SecureEvent::Plain(event));
            }
            ClientEvent::MpClosed { ref peer, .. } => {
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
    fn pin(&mut self, user: &str, der: &[u8]) -> Option<PublicIdentity> {
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

    fn on_request(&mut self, from: &str, identity_key: &[u8], handshake: &[u8]) {
        let Some(key) = self.pin(from, identity_key) else { return };
        let Some(me) = self.client.username().map(str::to_owned) else { return };
        match MpOffer::verify(from, &key, &me, handshake) {
            Ok(offer) => {
                self.offers.insert(from.to_owned(), offer);
                let number = safety_number(&me, self.identity.public(), from, &key);
                self.events.push_back(SecureEvent::MpOffered { from: from.to_owned(), safety_number: number });
            }
            Err(error) => {
                let reason = error.to_string();
                self.events.push_back(SecureEvent::HandshakeRejected { peer: from.to_owned(), reason });
            }
        }
    }

    fn on_accepted(&mut self, peer: &str, identity_key: &[u8], handshake: &[u8]) {
        let Some(key) = self.pin(peer, identity_key) else { return };
        let Some(pending) = self.requests.get(peer) else {
            let reason = "no request of ours pending".to_owned();
            return self.events.push_back(SecureEvent::HandshakeRejected { peer: peer.to_owned(), reason });
        };
        match pending.complete(&key, handshake) {
            Ok(session) => {
                self.requests.remove(peer);
                self.sessions.insert(peer.to_owned(), session);
                self.events.push_back(SecureEvent::MpReady { peer: peer.to_owned() });
            }
            Err(error) => {
                let reason = error.to_string();
                self.events.push_back(SecureEvent::HandshakeRejected { peer: peer.to_owned(), reason });
            }
        }
    }

    fn on_mp(&mut self, from: String, sealed: &[u8]) {
        let opened = if self.is_blocked(&from) {
            Err(DecryptError::KeyChanged)
        } else if let Some(session) = self.sessions.get_mut(&from) {
            session.open(sealed).map_err(DecryptError::from).and_then(text)
        } else {
            Err(DecryptError::NoSession)
        };
        match opened {
            Ok(text) => {
                let expires = self.clock.instant + super::MP_LOCAL_RETENTION;
                self.inbox.push_back((expires, from.clone(), text.clone()));
                self.events.push_back(SecureEvent::Mp { from, text });
            }
            Err(reason) => self.events.push_back(SecureEvent::DecryptFailed { from, room: None, reason }),
        }
    }

    fn on_done(&mut self, request_id: u32, body: &ResponseBody) {
        if let ResponseBody::IdentityKey(key) = body {
            self.pin(&key.username, &key.identity_key);
            return;
        }
        let Some(pending) = self.room_pending.remove(&request_id) else { return };
        let Some(me) = self.client.username().map(str::to_owned) else { return };
        match (pending, body) {
            (RoomPending::Create(keys), _) => {
                let room = keys.room().to_owned();
                self.rooms.insert(room, RoomSession::new(keys, &me));
            }
            (RoomPending::Join(keys), ResponseBody::RoomJoined(joined)) => {
                // Never reuse a counter of ours the room has seen (a rejoin
                // derives the same keys): resume after the highest retained.
                // A session this client already holds for the same keys may
                // be further along (its messages fell out of the history).
                let room = keys.room().to_owned();
                let held = self.rooms.get(&room).filter(|s| s.keys().verifier() == keys.verifier());
                let next = joined
                    .history
                    .iter()
                    .filter(|entry| entry.from == me)
                    .filter_map(|entry| peek_counter(&entry.sealed).ok())
                    .max()
                    .map_or(0, |c| c.saturating_add(1))
                    .max(held.map_or(0, RoomSession::next_counter));
                let session = RoomSession::resume(keys, &me, next);
                self.open_history(&room, &session, &joined.history);
                self.rooms.insert(room, session);
            }
            (RoomPending::History(room), ResponseBody::History(history)) => {
                if let Some(session) = self.rooms.get(&room) {
                    let session = session.clone();
                    self.open_history(&room, &session, &history.messages);
                }
            }
            _ => {}
        }
    }

    /// Opens history with fresh replay windows (history may repeat what was
    /// delivered live; a replay within one batch is still refused).
    fn open_history(&mut self, room: &str, session: &RoomSession, entries: &[HistoryEntry]) {
        let mut reader = RoomSession::new(session.keys().clone(), "");
        for entry in entries {
            let event = room_event(&mut reader, room.to_owned(), entry.from.clone(), entry.seq, &entry.sealed, true);
            self.events.push_back(event);
        }
    }
}

fn text(plaintext: Vec<u8>) -> Result<String, DecryptError> {
    String::from_utf8(plaintext).map_err(|_| DecryptError::NotText)
}

fn room_event(
    session: &mut RoomSession,
    room: String,
    from: String,
    seq: u64,
    sealed: &[u8],
    history: bool,
) -> SecureEvent {
    match session.open(&from, sealed).map_err(DecryptError::from).and_then(text) {
        Ok(text) => SecureEvent::Room { room, from, seq, text, history },
        Err(reason) => SecureEvent::DecryptFailed { from, room: Some(room), reason },
    }
}
