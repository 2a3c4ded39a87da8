//! The client machine a simulated user runs: the plain [`Client`], whose
//! payloads are opaque recognisable bytes, or a [`SecureClient`] that seals
//! for real (room passwords, signed MP handshakes, AES-CTR + HMAC).
//!
//! Either way the user's behaviour deals in *payloads*: the sealed bytes of
//! a plain client, the plaintext of a secure one. The ledger keys posts by
//! payload, so the same invariants hold in both modes.
//!
//! Either way its turns are committed into a [`ClientStore`] (what a
//! profile on disk would hold), which checks that the machine's state never
//! changes in a turn that takes no checkpoint.

use bytes::Bytes;
use confab_proto::client::ClientSnapshot;
use confab_proto::e2e::secure::SecureSnapshot;
use confab_proto::e2e::{SecureClient, SecureError, SecureEvent};
use confab_proto::machine::Output;
use confab_proto::{Client, ClientEvent, Durable, Now};

/// A simulated user's client machine.
#[derive(Debug)]
pub(crate) enum Machine {
    /// Opaque payloads, sent as they are.
    Plain(Box<Client>),
    /// Real end-to-end encryption: payloads are plaintexts.
    Secure(Box<SecureClient>),
}

/// Something the machine reports to the user's behaviour.
#[derive(Debug)]
pub(crate) enum AppEvent {
    /// A client event (in secure mode: those the secure layer passes through).
    Plain(ClientEvent),
    /// A secure-layer event (never `SecureEvent::Plain`).
    Secure(SecureEvent),
}

/// A client's store: its last checkpoint, as a profile on disk holds it.
#[derive(Debug, Default)]
pub(crate) struct ClientStore {
    plain: Option<ClientSnapshot>,
    secure: Option<Box<SecureSnapshot>>,
    /// Checkpoints taken.
    pub(crate) checkpoints: u64,
}

impl ClientStore {
    /// The secure client's last checkpoint (what an old copy of its profile holds).
    pub(crate) fn secure(&self) -> Option<&SecureSnapshot> {
        self.secure.as_deref()
    }
}

impl Durable<Client> for ClientStore {
    type Error = std::convert::Infallible;

    fn commit(&mut self, client: &Client) -> Result<(), Self::Error> {
        self.plain = Some(client.snapshot());
        self.checkpoints += 1;
        Ok(())
    }
}

impl Durable<SecureClient> for ClientStore {
    type Error = std::convert::Infallible;

    fn commit(&mut self, client: &SecureClient) -> Result<(), Self::Error> {
        self.secure = Some(Box::new(client.snapshot()));
        self.checkpoints += 1;
        Ok(())
    }
}

/// What differs between the stored client snapshot and the current one.
fn unsaved_client(stored: Option<&ClientSnapshot>, now: &ClientSnapshot) -> Option<String> {
    let Some(stored) = stored else { return Some("no checkpoint ever".into()) };
    let fields = [
        ("username", stored.username != now.username),
        ("refresh token", stored.refresh_token != now.refresh_token),
        ("next request id", stored.next_request_id != now.next_request_id),
        ("seen peers", stored.seen_peers != now.seen_peers),
        ("seen rooms", stored.seen_rooms != now.seen_rooms),
        ("outbox", stored.outbox != now.outbox),
    ];
    let differ: Vec<&str> = fields.iter().filter(|(_, d)| *d).map(|(f, _)| *f).collect();
    (!differ.is_empty()).then(|| differ.join(", "))
}

/// What differs between the stored secure snapshot and the current one.
fn unsaved_secure(stored: Option<&SecureSnapshot>, now: &SecureSnapshot) -> Option<String> {
    let Some(stored) = stored else { return Some("no checkpoint ever".into()) };
    let mut differ: Vec<String> = unsaved_client(Some(&stored.client), &now.client).into_iter().collect();
    let fields = [
        ("contacts", stored.contacts != now.contacts),
        ("requests", stored.requests != now.requests),
        ("offers", stored.offers != now.offers),
        ("sessions", stored.sessions != now.sessions),
        ("rooms", stored.rooms != now.rooms),
        ("room requests", stored.room_pending != now.room_pending),
        ("MP requests", stored.mp_pending != now.mp_pending),
        ("inbox", stored.inbox != now.inbox),
        ("seen requests", stored.seen_requests != now.seen_requests),
        ("retired rooms", stored.retired_rooms != now.retired_rooms),
    ];
    differ.extend(fields.iter().filter(|(_, d)| *d).map(|(f, _)| (*f).to_owned()));
    (!differ.is_empty()).then(|| differ.join(", "))
}

/// The password of a room in secure mode: fixed per room name, so that every member derives the same keys.
#[must_use]
pub fn room_password(room: &str) -> Vec<u8> {
    format!("room password of {room}: 5f0c2e91b7d4").into_bytes()
}

/// The join verifier of a room in plain mode: fixed per room name.
pub(crate) fn plain_verifier(room: &str) -> Bytes {
    Bytes::from(format!("verifier:{room}:0123456789abcdef"))
}

/// The room descriptor in plain mode: opaque to the server, fixed per room name.
pub(crate) fn plain_descriptor(room: &str) -> Bytes {
    Bytes::from(format!("descriptor:{room}"))
}

/// A payload as text (the behaviour makes them with `format!`: always UTF-8).
fn text(payload: &Bytes) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(payload)
}

impl Machine {
    pub(crate) fn client(&self) -> &Client {
        match self {
            Machine::Plain(c) => c,
            Machine::Secure(s) => s.client(),
        }
    }

    pub(crate) fn client_mut(&mut self) -> &mut Client {
        match self {
            Machine::Plain(c) => c,
            Machine::Secure(s) => s.client_mut(),
        }
    }

    pub(crate) fn secure(&self) -> Option<&SecureClient> {
        match self {
            Machine::Plain(_) => None,
            Machine::Secure(s) => Some(s),
        }
    }

    pub(crate) fn is_logged_in(&self) -> bool {
        self.client().is_logged_in()
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.client().is_connected()
    }

    pub(crate) fn is_bound(&self) -> bool {
        self.client().is_bound()
    }

    pub(crate) fn outbox_len(&self) -> usize {
        self.client().outbox_len()
    }

    pub(crate) fn acks_due(&self) -> bool {
        self.client().acks_due()
    }

    pub(crate) fn connected(&mut self, now: Now) {
        match self {
            Machine::Plain(c) => c.connected(now),
            Machine::Secure(s) => s.connected(now),
        }
    }

    pub(crate) fn disconnected(&mut self, now: Now) {
        match self {
            Machine::Plain(c) => c.disconnected(now),
            Machine::Secure(s) => s.disconnected(now),
        }
    }

    pub(crate) fn handle_input(&mut self, now: Now, bytes: &[u8]) {
        match self {
            Machine::Plain(c) => c.handle_input(now, bytes),
            Machine::Secure(s) => s.handle_input(now, bytes),
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Now) {
        match self {
            Machine::Plain(c) => c.handle_timeout(now),
            Machine::Secure(s) => s.handle_timeout(now),
        }
    }

    /// Drains one turn and commits it into `store`. Also says what of the
    /// state the store holds is no longer the machine's (it changed without
    /// a checkpoint: a crash would lose it), if anything.
    pub(crate) fn drain(&mut self, store: &mut ClientStore) -> (Vec<Output<AppEvent>>, Option<String>) {
        match self {
            Machine::Plain(c) => {
                let turn = c.drain();
                let due = turn.checkpoint_due();
                let Ok(outputs) = turn.commit(store);
                let unsaved = if due { None } else { unsaved_client(store.plain.as_ref(), &c.snapshot()) };
                (outputs.into_iter().map(|o| o.map_event(AppEvent::Plain)).collect(), unsaved)
            }
            Machine::Secure(s) => {
                let turn = s.drain();
                let due = turn.checkpoint_due();
                let Ok(outputs) = turn.commit(store);
                let unsaved = if due { None } else { unsaved_secure(store.secure.as_deref(), &s.snapshot()) };
                let event = |e| match e {
                    SecureEvent::Plain(e) => AppEvent::Plain(e),
                    e => AppEvent::Secure(e),
                };
                (outputs.into_iter().map(|o| o.map_event(event)).collect(), unsaved)
            }
        }
    }

    /// The identity public key this user registers.
    pub(crate) fn identity_key(&self, name: &str) -> Bytes {
        match self {
            Machine::Plain(_) => Bytes::from(format!("idkey:{name}")),
            Machine::Secure(s) => Bytes::copy_from_slice(s.identity().public().spki_der()),
        }
    }

    pub(crate) fn register(
        &mut self,
        now: Now,
        name: &str,
        password: &str,
        passphrase: &str,
    ) -> Result<u32, SecureError> {
        match self {
            Machine::Plain(c) => {
                let key = Bytes::from(format!("idkey:{name}"));
                Ok(c.register(now, name, password, passphrase, key)?)
            }
            Machine::Secure(s) => s.register(now, name, password, passphrase),
        }
    }

    pub(crate) fn login(&mut self, now: Now, name: &str, password: &str, passphrase: &str) -> Result<u32, SecureError> {
        match self {
            Machine::Plain(c) => Ok(c.login(now, name, password, passphrase)?),
            Machine::Secure(s) => s.login(now, name, password, passphrase),
        }
    }

    pub(crate) fn set_identity_key(&mut self, now: Now, name: &str) -> Result<u32, SecureError> {
        let key = self.identity_key(name);
        Ok(self.client_mut().set_identity_key(now, key)?)
    }

    pub(crate) fn create_room(&mut self, now: Now, room: &str) -> Result<u32, SecureError> {
        match self {
            Machine::Plain(c) => Ok(c.create_room(now, room, plain_verifier(room), plain_descriptor(room))?),
            Machine::Secure(s) => s.create_room(now, room, &room_password(room)),
        }
    }

    pub(crate) fn join_room(&mut self, now: Now, room: &str) -> Result<u32, SecureError> {
        match self {
            Machine::Plain(c) => Ok(c.join_room(now, room, plain_verifier(room))?),
            Machine::Secure(s) => s.join_room(now, room, &room_password(room)),
        }
    }

    pub(crate) fn room_history(&mut self, now: Now, room: &str) -> Result<u32, SecureError> {
        match self {
            Machine::Plain(c) => Ok(c.room_history(now, room)?),
            Machine::Secure(s) => s.room_history(now, room),
        }
    }

    pub(crate) fn send_room(&mut self, now: Now, room: &str, payload: &Bytes) -> Result<u32, SecureError> {
        match self {
            Machine::Plain(c) => Ok(c.send_room(now, room, payload.clone())?),
            Machine::Secure(s) => s.send_room(now, room, &text(payload)),
        }
    }

    pub(crate) fn send_mp(&mut self, now: Now, peer: &str, payload: &Bytes) -> Result<u32, SecureError> {
        match self {
            Machine::Plain(c) => Ok(c.send_mp(now, peer, payload.clone())?),
            Machine::Secure(s) => s.send_mp(now, peer, &text(payload)),
        }
    }

    /// Asks `peer` for a conversation (`handshake` is the plain client's stand-in blob).
    pub(crate) fn request_mp(&mut self, now: Now, peer: &str, handshake: Bytes) -> Result<u32, SecureError> {
        match self {
            Machine::Plain(c) => Ok(c.request_mp(now, peer, handshake)?),
            Machine::Secure(s) => s.request_mp(now, peer),
        }
    }

    /// Accepts `peer`'s request (`handshake` is the plain client's stand-in blob).
    pub(crate) fn accept_mp(&mut self, now: Now, peer: &str, handshake: Bytes) -> Result<u32, SecureError> {
        match self {
            Machine::Plain(c) => Ok(c.accept_mp(now, peer, handshake)?),
            Machine::Secure(s) => s.accept_mp(now, peer),
        }
    }

    pub(crate) fn close_mp(&mut self, now: Now, peer: &str) -> Result<u32, SecureError> {
        match self {
            Machine::Plain(c) => Ok(c.close_mp(now, peer)?),
            Machine::Secure(s) => s.close_mp(now, peer),
        }
    }
}
