//! Issue 10's hostile server, in secure mode: replays of frames a client
//! already processed ([`SimConfig::hostile_replay`](super::SimConfig::hostile_replay)),
//! and the nonce-reuse invariant over every sealed blob a client sends.
//!
//! Replays: the simulator decodes the event frames each client receives;
//! `room_message`, `user_message` and `mp_request` frames of conversations
//! the client can already read are kept, and with the configured
//! probability per such frame one of them is delivered again, later, under
//! a fresh sequence number. It goes straight to the secure layer
//! ([`SecureClient::inject_event`](confab_proto::e2e::SecureClient::inject_event)):
//! a real hostile server would send it with a fresh lane or room sequence
//! number, which passes the client machine's lane deduplication but also
//! moves the lane (the client acknowledges it, and drops the genuine item
//! that later carries that number) — a loss of availability any server
//! can cause by dropping frames, not what is under test here. The user's
//! behaviour must see it refused (`Replayed`, `TooOld`, `Stale`, or a
//! handshake rejected as replayed); anything it opens is a
//! [`Invariant::Replay`] violation, and the ledger's duplicate checks would
//! see the second delivery.
//!
//! Nonce reuse: every `send_room` and `send_mp` request a client writes is
//! decoded; its sealed blob's header (epoch, counter) is recorded per
//! (sender, conversation). The same header with different bytes is a
//! [`Invariant::NonceReuse`] violation; the same bytes again are a retry.

use std::collections::HashMap;

use bytes::Bytes;
use confab_proto::ClientEvent;
use confab_proto::e2e::SecureClient;
use confab_proto::e2e::seal::peek_header;
use confab_proto::wire::{EventBody, FrameDecoder, Message, RequestBody};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

use super::check::Invariant;
use super::machine::Machine;
use super::net::LinkId;
use super::queue::Ev;
use super::{ClientId, Sim};

/// Frames kept per client for replays (the most recent ones).
const KEEP: usize = 64;

/// Added to a replayed item's sequence number: a number the server never used.
const FRESH: u64 = 1 << 40;

/// Every sealed blob's header a client sent, by (sender, conversation, epoch, counter).
#[derive(Debug, Default)]
pub(crate) struct NonceLog {
    seen: HashMap<(String, String, [u8; 16], u64), Bytes>,
    /// Blobs recorded (retries included).
    pub(crate) checked: u64,
}

impl NonceLog {
    /// Records a blob `sender` sealed for `conversation`. `Err` if the same
    /// header was recorded with other bytes (a reused nonce), or the blob has no header.
    pub(crate) fn record(&mut self, sender: &str, conversation: &str, sealed: &Bytes) -> Result<(), String> {
        self.checked += 1;
        let header =
            peek_header(sealed).map_err(|e| format!("{sender} sent {conversation} a blob without a header: {e}"))?;
        let key = (sender.to_owned(), conversation.to_owned(), header.epoch, header.counter);
        match self.seen.get(&key) {
            Some(earlier) if earlier != sealed => Err(format!(
                "{sender} sealed two different blobs for {conversation} under epoch {} counter {}",
                hex(&header.epoch),
                header.counter
            )),
            Some(_) => Ok(()),
            None => {
                self.seen.insert(key, sealed.clone());
                Ok(())
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sim {
    /// Bytes a client writes on `link`: in secure mode, every sealed blob
    /// they carry goes through the nonce log.
    pub(crate) fn observe_up(&mut self, id: ClientId, link: LinkId, bytes: &Bytes) {
        if !self.config.secure {
            return;
        }
        let limits = self.config.server.limits;
        let decoder = self.up_decoders.entry(link).or_insert_with(|| FrameDecoder::new(limits));
        decoder.push(bytes);
        let mut sent = Vec::new();
        while let Ok(Some(frame)) = decoder.next_frame() {
            if let Ok(Message::Request(req)) = Message::decode(&frame, &limits) {
                match req.body {
                    RequestBody::SendRoom(m) => sent.push((format!("room {}", m.room), m.sealed)),
                    RequestBody::SendMp(m) => sent.push((format!("mp to {}", m.peer), m.sealed)),
                    _ => {}
                }
            }
        }
        let name = self.hosts[id.0].user.name.clone();
        for (conversation, sealed) in sent {
            if let Err(detail) = self.nonces.record(&name, &conversation, &sealed) {
                self.violate(Invariant::NonceReuse, detail);
            }
        }
        self.stats.blobs_checked = self.nonces.checked;
    }

    /// Bytes reach a client on `link` (before it processes them): keeps the
    /// event frames it may see replayed, and draws whether to replay one.
    pub(crate) fn observe_down(&mut self, id: ClientId, link: LinkId, bytes: &Bytes) {
        if self.config.hostile_replay <= 0.0 || !self.config.secure {
            return;
        }
        let limits = self.config.client.limits;
        let decoder = self.down_decoders.entry(link).or_insert_with(|| FrameDecoder::new(limits));
        decoder.push(bytes);
        let mut frames = Vec::new();
        while let Ok(Some(frame)) = decoder.next_frame() {
            frames.push(frame);
        }
        for frame in frames {
            let Ok(Message::Event(e)) = Message::decode(&frame, &limits) else { continue };
            let event = match e.body {
                EventBody::UserMessage(m) => {
                    ClientEvent::UserMessage { from: m.from, seq: m.seq, sent_ms: m.sent_ms, sealed: m.sealed }
                }
                EventBody::MpRequest(m) => ClientEvent::MpRequest {
                    from: m.from,
                    seq: m.seq,
                    identity_key: m.identity_key,
                    handshake: m.handshake,
                },
                // Only messages of rooms whose key the client holds: one it
                // could not open (not a member yet) was never accepted.
                EventBody::RoomMessage(m)
                    if self.secure_client(id).is_some_and(|s| s.room_session(&m.room).is_some()) =>
                {
                    ClientEvent::RoomMessage {
                        room: m.room,
                        from: m.from,
                        seq: m.seq,
                        sent_ms: m.sent_ms,
                        sealed: m.sealed,
                    }
                }
                _ => continue,
            };
            let kept = &mut self.hosts[id.0].replayable;
            if kept.len() == KEEP {
                kept.remove(0);
            }
            kept.push(event);
            if self.rng.random_bool(self.config.hostile_replay) {
                let at = self.elapsed + self.config.action_gap.draw(&mut self.rng);
                self.agenda.push(at, Ev::Replay(id));
            }
        }
    }

    /// The hostile server delivers again, under a fresh sequence number, an
    /// item the client already processed (if it is connected and logged in).
    pub(crate) fn replay(&mut self, id: ClientId) {
        let host = &self.hosts[id.0];
        if host.link.is_none() || !host.client.is_logged_in() || host.replayable.is_empty() {
            return;
        }
        let pick = self.rng.random_range(0..host.replayable.len());
        let event = match host.replayable[pick].clone() {
            ClientEvent::UserMessage { from, seq, sent_ms, sealed } => {
                ClientEvent::UserMessage { from, seq: seq + FRESH, sent_ms, sealed }
            }
            ClientEvent::MpRequest { from, seq, identity_key, handshake } => {
                ClientEvent::MpRequest { from, seq: seq + FRESH, identity_key, handshake }
            }
            ClientEvent::RoomMessage { room, from, seq, sent_ms, sealed } => {
                ClientEvent::RoomMessage { room, from, seq: seq + FRESH, sent_ms, sealed }
            }
            _ => return,
        };
        let now = self.now();
        let Machine::Secure(client) = &mut self.hosts[id.0].client else { return };
        self.stats.replays_injected += 1;
        self.trace.note(self.elapsed, &format!("fault: server replays to client {}: {event:?}", id.0));
        client.inject_event(now, event);
        self.replaying = true;
        self.drain_client(id);
        self.replaying = false;
    }
}

impl Sim {
    /// Keeps a copy of the user's secure client state (its profile on
    /// disk: the last checkpoint), for [`Sim::restore_client`]. False in
    /// plain mode.
    pub fn save_client(&mut self, id: ClientId) -> bool {
        let Some(snapshot) = self.hosts[id.0].store.secure().cloned() else { return false };
        let kept = self.ledger.inbox(&self.hosts[id.0].user.name).len();
        self.hosts[id.0].saved = Some((Box::new(snapshot), kept));
        true
    }

    /// The user's device dies and its app starts again from the copy
    /// [`Sim::save_client`] kept (an old profile): its connection drops,
    /// the client is rebuilt from the copy with a fresh random generator,
    /// and the user's behaviour believes what the copy holds; what its
    /// application received since the copy is lost with it (the ledger
    /// keeps it apart, and a second delivery of it is no duplicate). What was in
    /// flight becomes indeterminate. The old copy reuses request ids the
    /// server may answer from its retry window without performing them
    /// (a known limit): those answers are indeterminate too. Every blob it
    /// seals afterwards goes through the nonce log like any other. False
    /// if nothing was saved or the copy does not restore.
    pub fn restore_client(&mut self, id: ClientId) -> bool {
        let Some((snapshot, kept)) = self.hosts[id.0].saved.clone() else { return false };
        let now = self.now();
        let rng = StdRng::seed_from_u64(self.rng.random());
        let restored = SecureClient::restore(
            self.config.client.clone(),
            &snapshot,
            super::identity(id.0),
            rng,
            self.config.server.hash_params,
            now,
        );
        let restored = match restored {
            Ok(c) => c,
            Err(e) => {
                self.violate(Invariant::Protocol, format!("client {}: old copy does not restore: {e}", id.0));
                return false;
            }
        };
        self.stats.client_restores += 1;
        self.trace.note(self.elapsed, &format!("fault: client {} restored from an old copy", id.0));
        if let Some(link) = self.hosts[id.0].link.take() {
            if let Some(l) = self.net.get_mut(link) {
                l.client_open = false;
            }
            self.server_lost(link);
            self.net.gc(link);
        }
        let name = self.hosts[id.0].user.name.clone();
        self.ledger.roll_back(&name, kept);
        self.hosts[id.0].client = Machine::Secure(Box::new(restored));
        self.hosts[id.0].deadline = None;
        self.hosts[id.0].replayable.clear();
        let users = self.user_names();
        self.with_user(id, |user, client, ctx, _| user.restored(client, ctx, &users));
        self.schedule_reconnect(id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(epoch: u8, counter: u64, body: &[u8]) -> Bytes {
        let mut b = vec![2u8];
        b.extend_from_slice(&[epoch; 16]);
        b.extend_from_slice(&counter.to_be_bytes());
        b.extend_from_slice(body);
        b.extend_from_slice(&[0u8; 64]);
        Bytes::from(b)
    }

    #[test]
    fn nonce_log_flags_two_blobs_under_one_header() {
        let mut log = NonceLog::default();
        let (a, b) = (blob(1, 7, b"first message"), blob(1, 7, b"other message"));
        assert_eq!(peek_header(&a).unwrap().counter, peek_header(&b).unwrap().counter);
        log.record("alice", "room lobby", &a).unwrap();
        // The same bytes again: a retry.
        log.record("alice", "room lobby", &a).unwrap();
        // Another conversation, another sender, another counter or epoch: fine.
        log.record("bob", "room lobby", &b).unwrap();
        log.record("alice", "mp to bob", &b).unwrap();
        log.record("alice", "room lobby", &blob(1, 8, b"other message")).unwrap();
        log.record("alice", "room lobby", &blob(2, 7, b"other message")).unwrap();
        let err = log.record("alice", "room lobby", &b).unwrap_err();
        assert!(err.contains("two different blobs"), "{err}");
        assert_eq!(log.checked, 7);
    }
}
