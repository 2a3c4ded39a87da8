//! [`SecureClient`]: the [`Client`] machine with end-to-end encryption on top.
//!
//! Sans-IO like the machine it wraps: time comes in as [`Now`], randomness
//! from the seeded [`StdRng`] given at construction (the only randomness a
//! confab client needs is here: ephemeral keys and RSA-PSS salts).
//!
//! - **Contacts**: identity keys are pinned on first use (from the key an
//!   `MpRequest` / `MpAccepted` event carries, or a `fetch_key` answer). A
//!   pinned contact whose key changes raises [`SecureEvent::KeyChanged`];
//!   sending to that contact is refused until [`SecureClient::accept_new_key`].
//! - **MP sessions**: [`SecureClient::request_mp`] / [`SecureClient::accept_mp`]
//!   carry the signed handshake blobs; [`SecureEvent::MpReady`] once keys
//!   are derived. The target may be offline at request time.
//! - **Rooms**: [`SecureClient::create_room`] draws the room's descriptor
//!   (random room id, argon2id costs); [`SecureClient::join_room`] fetches it
//!   (`room_info`) and refuses costs below this client's floor. Both derive
//!   the room keys from the password and send only the verifier. The
//!   history a join returns is opened on the client; what this device
//!   accepted survives a rejoin, so nothing is accepted twice as new.
//! - **Messages**: [`SecureClient::send_mp`] / [`SecureClient::send_room`]
//!   seal; what arrives is opened and verified, and anything tampered,
//!   replayed or foreign becomes [`SecureEvent::DecryptFailed`], never text.
//! - **Local expiry**: a received MP is readable through
//!   [`SecureClient::messages`] for [`MP_LOCAL_RETENTION`] after receipt, then
//!   deleted ([`SecureEvent::MpExpiredLocally`]); the deadline is part of the
//!   [`Output::Timeout`] instant.
//!
//! - **Persistence**: [`SecureClient::drain`] hands out a turn whose
//!   outputs come out of [`ClientTurn::commit`], after the store received
//!   the machine whenever its persisted state changed
//!   ([`SecureClient::checkpoint_due`]: outbox, request ids, tokens,
//!   contacts, handshakes, sessions, room keys, what was accepted, received
//!   MPs); the store writes [`SecureClient::snapshot`] (see
//!   [`SecureSnapshot`]), [`SecureClient::restore`] is the inverse. No
//!   sending state is persisted: every sending session draws a new random
//!   epoch, so no restore, copy or second device ever repeats a (key,
//!   nonce) pair.
//!
//! # Example
//!
//! Alice and Bob through an in-process server (a real adapter moves the
//! same bytes over sockets):
//!
//! ```
//! use std::time::Instant;
//!
//! use confab_proto::e2e::{fixtures, IdentityKey, SecureClient, SecureEvent, SecureOutput};
//! use confab_proto::server::{Action, HashParams};
//! use confab_proto::{Client, ClientConfig, Ephemeral, Now, Server, ServerConfig, SessionId};
//! use rand::{SeedableRng, rngs::StdRng};
//!
//! type User = (SecureClient, SessionId, Vec<SecureEvent>);
//!
//! /// Shuttles bytes until everyone is quiet; keeps each user's events.
//! fn pump(now: Now, server: &mut Server, users: &mut [User]) {
//!     loop {
//!         let mut busy = false;
//!         for (sc, session, events) in users.iter_mut() {
//!             // A real client commits into its profile (`Durable<SecureClient>`).
//!             for output in sc.drain().commit(&mut Ephemeral).unwrap() {
//!                 match output {
//!                     SecureOutput::Transmit(bytes) => server.handle_input(now, *session, &bytes),
//!                     SecureOutput::Event(event) => events.push(event),
//!                     SecureOutput::Close { .. } => {}
//!                     SecureOutput::Timeout(_) => break,
//!                 }
//!                 busy = true;
//!             }
//!         }
//!         loop {
//!             let mut turn = server.drain();
//!             if turn.is_empty() {
//!                 break;
//!             }
//!             for job in turn.take_jobs() {
//!                 server.handle_work(now, job.run());
//!             }
//!             // A real server commits the turn's changes to its store here.
//!             let Ok(committed) = turn.commit(&mut Ephemeral);
//!             for action in committed {
//!                 if let Action::Transmit { session, bytes } = action
//!                     && let Some(user) = users.iter_mut().find(|u| u.1 == session)
//!                 {
//!                     user.0.handle_input(now, &bytes);
//!                 }
//!             }
//!             busy = true;
//!         }
//!         if !busy {
//!             return;
//!         }
//!     }
//! }
//!
//! let now = Now::new(Instant::now(), 1_700_000_000_000);
//! let config = ServerConfig { hash_params: HashParams::INSECURE_FAST, ..ServerConfig::default() };
//! let mut server = Server::new(config, [7; 32], now)?;
//! let mut users = Vec::new();
//! for (seed, pkcs8) in [(1, fixtures::ALICE_PKCS8), (2, fixtures::BOB_PKCS8)] {
//!     let identity = IdentityKey::from_pkcs8_der(pkcs8)?;
//!     let rng = StdRng::from_seed([seed; 32]); // a real client seeds it from the OS
//!     let client = Client::new(ClientConfig::default(), now);
//!     let mut sc = SecureClient::new(client, identity, rng, HashParams::INSECURE_FAST, now);
//!     sc.connected(now);
//!     users.push((sc, server.open_session(now).unwrap(), Vec::new()));
//! }
//! for (i, name) in ["alice", "bob"].into_iter().enumerate() {
//!     users[i].0.register(now, name, "correct horse battery", "apple river stone")?;
//!     pump(now, &mut server, &mut users);
//!     users[i].0.login(now, name, "correct horse battery", "apple river stone")?;
//!     pump(now, &mut server, &mut users);
//! }
//!
//! users[0].0.request_mp(now, "bob")?; // signed ephemeral key; Bob's key is pinned on first use
//! pump(now, &mut server, &mut users);
//! assert!(users[1].2.iter().any(|e| matches!(e, SecureEvent::MpOffered { from, .. } if from == "alice")));
//! users[1].0.accept_mp(now, "alice")?;
//! pump(now, &mut server, &mut users);
//! users[0].0.send_mp(now, "bob", "hi bob")?; // sealed: the server sees 71 opaque bytes
//! pump(now, &mut server, &mut users);
//! assert!(users[1].2.iter().any(|e| matches!(e, SecureEvent::Mp { from, text, .. } if from == "alice" && text == "hi bob")));
//! assert_eq!(users[1].0.messages("alice"), ["hi bob"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod event;
mod inbound;
mod mp;
mod snapshot;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::Instant;

use bytes::Bytes;
use rand::rngs::StdRng;

pub use event::{DecryptError, SecureError, SecureEvent, SecureOutput};
use mp::MpPending;
pub use mp::PENDING_HANDSHAKES;
pub use snapshot::{
    ContactSnapshot, MpPendingSnapshot, ReceivedMp, ReceivedSnapshot, RetiredRoomSnapshot, RoomPendingSnapshot,
    RoomSnapshot, SecureSnapshot, SeenRequestsSnapshot, SessionSnapshot,
};

use zeroize::Zeroizing;

use super::{
    IdentityKey, MpOffer, MpRequest, MpSession, PublicIdentity, ReplayState, RoomDescriptor, RoomKeys, RoomSession,
    SafetyNumber, check_room_password, safety_number,
};
use crate::machine::{self, ClientTurn, Output};
use crate::server::HashParams;
use crate::{Client, ClientEvent, Now};

/// How long a received MP stays readable on this device.
pub const MP_LOCAL_RETENTION: Duration = Duration::from_secs(3600);

/// A received MP, readable until `at`.
#[derive(Debug)]
struct Received {
    /// When it is deleted.
    at: Instant,
    /// The same, Unix milliseconds, fixed at receipt (what a snapshot stores).
    expires_ms: u64,
    from: String,
    text: String,
}

/// A pinned contact.
#[derive(Debug, Clone)]
struct Contact {
    pinned: PublicIdentity,
    /// A different key was presented: blocked until accepted.
    presented: Option<PublicIdentity>,
}

/// A request awaiting its room answer.
#[derive(Debug)]
enum RoomPending {
    Create(RoomKeys),
    /// `room_info`, the first step of a join: the password waits in memory
    /// only (never in a snapshot) for the descriptor.
    Info {
        room: String,
        password: Zeroizing<Vec<u8>>,
    },
    /// `join_room`, the second step; `op` is the id `join_room` returned.
    Join {
        keys: RoomKeys,
        op: u32,
    },
    History(String),
}

/// How many request ephemeral keys are remembered per peer, to refuse a replayed request.
pub const SEEN_REQUESTS: usize = 64;

/// How many replaced room incarnations' replay memories are kept (a rejoin
/// of one of them gets its memory back: a server cannot wipe it by handing
/// out another descriptor in between).
pub const RETIRED_ROOMS: usize = 64;

/// What was accepted in one room incarnation no session holds any more.
type Retired = (String, [u8; 16], BTreeMap<String, ReplayState>);

/// The end-to-end layer over a [`Client`]. See the [module docs](self).
#[derive(Debug)]
pub struct SecureClient {
    client: Client,
    rng: StdRng,
    identity: IdentityKey,
    room_params: HashParams,
    contacts: BTreeMap<String, Contact>,
    /// Requests this user made that the server may hold, per peer, awaiting
    /// acceptance (see [`mp`]); requests awaiting their answer hold theirs
    /// in `mp_pending`.
    requests: BTreeMap<String, Vec<MpRequest>>,
    /// Verified requests from peers, awaiting this user's acceptance.
    offers: BTreeMap<String, MpOffer>,
    sessions: BTreeMap<String, MpSession>,
    rooms: BTreeMap<String, RoomSession>,
    room_pending: BTreeMap<u32, RoomPending>,
    /// SHA-256 of the ephemeral keys of the last [`SEEN_REQUESTS`] requests
    /// verified from each peer, oldest first: a request seen again is a replay.
    seen_requests: BTreeMap<String, VecDeque<[u8; 32]>>,
    /// Replay memories of room incarnations replaced by another (a new
    /// descriptor, a re-created room), oldest first, at most [`RETIRED_ROOMS`].
    retired_rooms: VecDeque<Retired>,
    mp_pending: BTreeMap<u32, MpPending>,
    /// Received MPs, oldest first.
    inbox: VecDeque<Received>,
    events: VecDeque<SecureEvent>,
    clock: Now,
    /// The end-to-end state changed since the last checkpoint (the wrapped
    /// client tracks its own).
    dirty: bool,
}

impl SecureClient {
    /// Wraps `client` for the user whose identity key is `identity`.
    /// `room_params` are the argon2id costs of the rooms this client
    /// creates, and the least it accepts from a room's descriptor
    /// ([`room::ROOM_PARAMS`](crate::e2e::room::ROOM_PARAMS) for real use).
    #[must_use]
    pub fn new(mut client: Client, identity: IdentityKey, mut rng: StdRng, room_params: HashParams, now: Now) -> Self {
        // The client's retry keys (`refresh_keyed`) come from a generator of their own.
        client.set_entropy(rand::RngExt::random(&mut rng));
        Self {
            client,
            rng,
            identity,
            room_params,
            contacts: BTreeMap::new(),
            requests: BTreeMap::new(),
            offers: BTreeMap::new(),
            sessions: BTreeMap::new(),
            rooms: BTreeMap::new(),
            room_pending: BTreeMap::new(),
            seen_requests: BTreeMap::new(),
            retired_rooms: VecDeque::new(),
            mp_pending: BTreeMap::new(),
            inbox: VecDeque::new(),
            events: VecDeque::new(),
            clock: now,
            dirty: true,
        }
    }

    // ---- transport, as on Client ----

    /// See [`Client::connected`].
    pub fn connected(&mut self, now: Now) {
        self.clock = now;
        self.client.connected(now);
    }

    /// See [`Client::disconnected`].
    pub fn disconnected(&mut self, now: Now) {
        self.clock = now;
        self.client.disconnected(now);
    }

    /// See [`Client::handle_input`].
    pub fn handle_input(&mut self, now: Now, bytes: &[u8]) {
        self.clock = now;
        self.client.handle_input(now, bytes);
    }

    /// See [`Client::close`].
    pub fn close(&mut self, now: Now) {
        self.clock = now;
        self.client.close(now);
    }

    /// See [`Client::handle_timeout`]; also deletes received MPs whose hour is up.
    pub fn handle_timeout(&mut self, now: Now) {
        self.clock = now;
        while self.inbox.front().is_some_and(|m| m.at <= now.instant) {
            if let Some(Received { from, .. }) = self.inbox.pop_front() {
                self.dirty = true;
                self.events.push_back(SecureEvent::MpExpiredLocally { from });
            }
        }
        self.client.handle_timeout(now);
    }

    /// Processes `event` as if the client machine had just reported it.
    /// Test support for hostile-server simulations: what a server achieves
    /// by sending an old frame again under a fresh sequence number, without
    /// that number's side effects on the lane state (acknowledgements,
    /// later deliveries dropped as duplicates).
    #[doc(hidden)]
    pub fn inject_event(&mut self, now: Now, event: ClientEvent) {
        self.clock = now;
        self.on_event(event);
    }

    /// Everything the last inputs and commands produced, verified and
    /// opened, as one turn: its outputs come out of [`ClientTurn::commit`],
    /// after the store received the machine if a checkpoint is due.
    pub fn drain(&mut self) -> ClientTurn<'_, SecureClient> {
        let outputs = machine::collect(|| self.poll_output());
        ClientTurn::new(self, outputs, SecureClient::checkpointed)
    }

    /// Whether the persisted state ([`SecureClient::snapshot`]) changed
    /// since the last checkpoint (the wrapped client's included). A new or
    /// restored machine has one due.
    #[must_use]
    pub fn checkpoint_due(&self) -> bool {
        self.dirty || self.client.checkpoint_due()
    }

    /// The store holds the current state.
    fn checkpointed(&mut self) {
        self.dirty = false;
        self.client.checkpointed();
    }

    /// The next output (until `Timeout`); only [`SecureClient::drain`] hands them out.
    pub(crate) fn poll_output(&mut self) -> SecureOutput {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Output::Event(event);
            }
            match self.client.poll_output() {
                Output::Event(event) => self.on_event(event),
                Output::Transmit(bytes) => return Output::Transmit(bytes),
                Output::Close { code, reason } => return Output::Close { code, reason },
                Output::Timeout(at) => {
                    let expiry = self.inbox.front().map(|m| m.at);
                    return Output::Timeout(at.into_iter().chain(expiry).min());
                }
            }
        }
    }

    // ---- commands ----

    /// Registers the account with this client's identity public key.
    pub fn register(&mut self, now: Now, username: &str, password: &str, passphrase: &str) -> Result<u32, SecureError> {
        self.clock = now;
        let key = Bytes::copy_from_slice(self.identity.public().spki_der());
        Ok(self.client.register(now, username, password, passphrase, key)?)
    }

    /// See [`Client::login`].
    pub fn login(&mut self, now: Now, username: &str, password: &str, passphrase: &str) -> Result<u32, SecureError> {
        self.clock = now;
        Ok(self.client.login(now, username, password, passphrase)?)
    }

    /// Creates a room protected by `password`: draws the room's descriptor
    /// (a random room id, this client's argon2id costs), derives the keys,
    /// and sends only the verifier and the descriptor. Weak passwords are
    /// refused ([`check_room_password`]).
    pub fn create_room(&mut self, now: Now, room: &str, password: &[u8]) -> Result<u32, SecureError> {
        self.clock = now;
        check_room_password(password)?;
        let descriptor = RoomDescriptor::generate(&mut self.rng, self.room_params);
        let keys = RoomKeys::derive(room, password, &descriptor)?;
        let verifier = Bytes::copy_from_slice(keys.verifier());
        let id = self.client.create_room(now, room, verifier, Bytes::copy_from_slice(&descriptor.to_bytes()))?;
        self.room_pending.insert(id, RoomPending::Create(keys));
        self.dirty = true;
        Ok(id)
    }

    /// Joins a room with its password, in two requests: `room_info` fetches
    /// the room's descriptor; once it arrives (and its costs are at least
    /// this client's), the keys are derived and `join_room` sends the
    /// verifier. The returned id gets the outcome of the whole join (`Done`
    /// with `RoomJoined`, or `Failed`); the history is opened here. The
    /// password stays in memory only until the descriptor arrives.
    pub fn join_room(&mut self, now: Now, room: &str, password: &[u8]) -> Result<u32, SecureError> {
        self.clock = now;
        let id = self.client.room_info(now, room)?;
        let pending = RoomPending::Info { room: room.to_owned(), password: Zeroizing::new(password.to_vec()) };
        self.room_pending.insert(id, pending);
        Ok(id)
    }

    /// Fetches and opens a joined room's retained history.
    pub fn room_history(&mut self, now: Now, room: &str) -> Result<u32, SecureError> {
        self.clock = now;
        if !self.rooms.contains_key(room) {
            return Err(SecureError::NoRoomKey(room.to_owned()));
        }
        let id = self.client.room_history(now, room)?;
        self.room_pending.insert(id, RoomPending::History(room.to_owned()));
        self.dirty = true;
        Ok(id)
    }

    /// Seals `plaintext` for `room` and sends it.
    pub fn send_room(&mut self, now: Now, room: &str, plaintext: &str) -> Result<u32, SecureError> {
        self.clock = now;
        let session = self.rooms.get_mut(room).ok_or_else(|| SecureError::NoRoomKey(room.to_owned()))?;
        let sealed = session.seal(now.unix_ms, plaintext.as_bytes())?;
        Ok(self.client.send_room(now, room, sealed.into())?)
    }

    /// Seals `plaintext` for `peer` (an established session) and sends it.
    pub fn send_mp(&mut self, now: Now, peer: &str, plaintext: &str) -> Result<u32, SecureError> {
        self.clock = now;
        self.check_unblocked(peer)?;
        let session = self.sessions.get_mut(peer).ok_or_else(|| SecureError::NoSession(peer.to_owned()))?;
        let sealed = session.seal(now.unix_ms, plaintext.as_bytes())?;
        Ok(self.client.send_mp(now, peer, sealed.into())?)
    }

    /// Fetches `user`'s identity key from the server to pin it (a changed
    /// key raises [`SecureEvent::KeyChanged`]).
    pub fn fetch_key(&mut self, now: Now, user: &str) -> Result<u32, SecureError> {
        self.clock = now;
        Ok(self.client.fetch_key(now, user)?)
    }

    /// Pins the key `user` presented after a [`SecureEvent::KeyChanged`]
    /// (after comparing safety numbers). The old session is dropped: start
    /// a new handshake. Returns whether there was a changed key to accept.
    pub fn accept_new_key(&mut self, user: &str) -> bool {
        let Some(contact) = self.contacts.get_mut(user) else { return false };
        let Some(new) = contact.presented.take() else { return false };
        contact.pinned = new;
        self.dirty = true;
        self.sessions.remove(user);
        self.forget_requests(user);
        self.offers.remove(user);
        true
    }

    // ---- introspection ----

    /// The plaintexts received from `peer` still held (less than an hour old), oldest first.
    #[must_use]
    pub fn messages(&self, peer: &str) -> Vec<&str> {
        self.inbox.iter().filter(|m| m.from == peer).map(|m| m.text.as_str()).collect()
    }

    /// The pinned identity key of `user`, if any.
    #[must_use]
    pub fn pinned(&self, user: &str) -> Option<&PublicIdentity> {
        self.contacts.get(user).map(|c| &c.pinned)
    }

    /// Whether sending to `user` is blocked by a changed key.
    #[must_use]
    pub fn is_blocked(&self, user: &str) -> bool {
        self.contacts.get(user).is_some_and(|c| c.presented.is_some())
    }

    /// Whether an MP session with `peer` is established.
    #[must_use]
    pub fn has_session(&self, peer: &str) -> bool {
        self.sessions.contains_key(peer)
    }

    /// The safety number of this user and `user` (pinned key), to compare out of band.
    #[must_use]
    pub fn safety_number(&self, user: &str) -> Option<SafetyNumber> {
        let me = self.client.username()?;
        let theirs = &self.contacts.get(user)?.pinned;
        Some(safety_number(me, self.identity.public(), user, theirs))
    }

    /// The wrapped client (for commands without an e2e side: logout, leave_room, close_mp, ...).
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The wrapped client, mutably.
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// This user's identity key.
    #[must_use]
    pub fn identity(&self) -> &IdentityKey {
        &self.identity
    }

    /// The key material of the room session of `room`, for tests that look for leaks.
    #[must_use]
    pub fn room_keys(&self, room: &str) -> Option<&RoomKeys> {
        self.rooms.get(room).map(RoomSession::keys)
    }

    /// The room session of `room` (keys, sending epoch, what was accepted).
    #[must_use]
    pub fn room_session(&self, room: &str) -> Option<&RoomSession> {
        self.rooms.get(room)
    }

    /// The MP session with `peer`, for tests that look for leaks.
    #[must_use]
    pub fn session(&self, peer: &str) -> Option<&MpSession> {
        self.sessions.get(peer)
    }

    // ---- internals ----

    fn me(&self) -> Result<String, SecureError> {
        self.client.username().map(str::to_owned).ok_or(SecureError::NotLoggedIn)
    }

    /// Installs `session` for its room: what this device accepted in the
    /// same incarnation (held, or retired earlier) carries over; a held
    /// session of another incarnation is retired, not forgotten.
    fn install_room(&mut self, mut session: RoomSession) {
        let room = session.keys().room().to_owned();
        let room_id = *session.keys().descriptor().room_id();
        if let Some(held) = self.rooms.remove(&room) {
            if held.keys().descriptor().room_id() == &room_id {
                merge_received(&mut session, held.received_all());
            } else {
                let id = *held.keys().descriptor().room_id();
                self.retire(room.clone(), id, held.received_all().clone());
            }
        }
        if let Some(at) = self.retired_rooms.iter().position(|(r, id, _)| *r == room && *id == room_id)
            && let Some((_, _, received)) = self.retired_rooms.remove(at)
        {
            merge_received(&mut session, &received);
        }
        self.rooms.insert(room, session);
    }

    fn retire(&mut self, room: String, room_id: [u8; 16], received: BTreeMap<String, ReplayState>) {
        if received.is_empty() {
            return;
        }
        if let Some(at) = self.retired_rooms.iter().position(|(r, id, _)| *r == room && *id == room_id) {
            self.retired_rooms.remove(at);
        }
        self.retired_rooms.push_back((room, room_id, received));
        while self.retired_rooms.len() > RETIRED_ROOMS {
            self.retired_rooms.pop_front();
        }
    }

    fn check_unblocked(&self, peer: &str) -> Result<(), SecureError> {
        if self.is_blocked(peer) { Err(SecureError::KeyChanged(peer.to_owned())) } else { Ok(()) }
    }
}

/// Adds what was accepted in `from` to `session`, keeping the session's own
/// state for a sender both know (it is the newer).
fn merge_received(session: &mut RoomSession, from: &BTreeMap<String, ReplayState>) {
    for (sender, state) in from {
        if session.received(sender).is_none() {
            session.restore_received(sender, state.clone());
        }
    }
}
