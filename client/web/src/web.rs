//! [`WebClient`]: the secure client machine with the page's queues around it.

use std::collections::VecDeque;
use std::convert::Infallible;

use bytes::Bytes;
use confab_proto::e2e::secure::ReceivedMp;
use confab_proto::e2e::{IdentityKey, SecureClient, SecureError, SecureOutput};
use confab_proto::server::HashParams;
use confab_proto::{Client, ClientConfig, Durable, Instant, Now};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::profile::{self, Local, Lock, ProfileError, Registering, SentMp};

/// Why a command was refused before anything was sent.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The secure client refused it (not logged in, key changed, no session, ...).
    #[error(transparent)]
    Secure(#[from] SecureError),
    /// Making or loading the identity key failed.
    #[error("identity key: {0}")]
    Key(String),
    /// The profile bytes did not give back a client.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// No pinned key for this contact yet (fetch it first).
    #[error("no key pinned for {0}")]
    NoKey(String),
    /// A login for an account whose identity key this browser does not
    /// hold: the key stays on the device that registered the account.
    #[error(
        "this browser holds no identity key for {0}: an account's identity key stays on the device that \
         registered it; log in there, or register another account here"
    )]
    NoIdentity(String),
    /// A registration on a client whose identity key already belongs to an
    /// account: a new account gets a new key (and none of this one's state).
    #[error("this client's identity key belongs to {0}: log in as {0}, or log out before registering another account")]
    Bound(String),
    /// The key record did not open with this password.
    #[error("wrong password for {0} (the identity key kept in this browser did not open)")]
    Unlock(String),
}

/// The browser client: a [`SecureClient`] plus the queues the page polls.
///
/// Inputs take a [`Now`]; outputs are polled: frames to write
/// ([`poll_transmit`](Self::poll_transmit)), events as JSON
/// ([`poll_event`](Self::poll_event)), the next timer
/// ([`poll_timeout`](Self::poll_timeout)) and the profile bytes to store
/// ([`take_checkpoint`](Self::take_checkpoint)).
pub struct WebClient {
    sc: SecureClient,
    identity_der: Zeroizing<Vec<u8>>,
    /// The verified contacts, the key's owner and record, the sent MPs.
    local: Local,
    /// A registration or login sent, with the key encrypted under the
    /// password it used: adopted when it succeeds.
    pending: Option<Pending>,
    /// For the at-rest encryption's salt and nonce.
    lock_rng: StdRng,
    /// The argon2id parameters of the at-rest encryption.
    key_params: HashParams,
    /// The room key parameters (for a machine made anew at logout).
    room_params: HashParams,
    /// The latest time a call gave.
    clock: Now,
    /// Whether the transport is up (a machine made anew is told so).
    online: bool,
    /// The session ended by a logout: the machine's state goes.
    erase: bool,
    /// The web-only state changed: the next pump stores it, with the
    /// machine's commit if there is one, else on its own.
    local_changed: bool,
    transmits: VecDeque<Bytes>,
    events: VecDeque<Value>,
    timeout: Option<Instant>,
    /// The latest profile bytes not yet taken by the page.
    checkpoint: Option<Zeroizing<Vec<u8>>>,
    /// Checkpoints made, taken by the page, confirmed stored by the page.
    made: u64,
    taken: u64,
    saved: u64,
}

impl std::fmt::Debug for WebClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebClient").field("user", &self.sc.client().username()).finish_non_exhaustive()
    }
}

/// How long the page keeps and shows a private message: one hour, as the
/// received ones (after receipt).
const MP_SHOWN_MS: u64 = 3_600_000;

/// The argon2id parameters of a browser client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Room key derivation (every member must use the same).
    pub room: HashParams,
    /// The identity key's encryption under the account password.
    pub key: HashParams,
}

/// A registration or login in flight, and what it binds when it succeeds.
struct Pending {
    request_id: u32,
    owner: String,
    blob: Vec<u8>,
}

/// The store a turn commits into: the profile bytes, kept for the page.
struct Capture<'a> {
    identity_der: &'a [u8],
    local: &'a Local,
    out: Option<Zeroizing<Vec<u8>>>,
}

impl Durable<SecureClient> for Capture<'_> {
    type Error = Infallible;

    fn commit(&mut self, sc: &SecureClient) -> Result<(), Infallible> {
        self.out = Some(profile::encode(self.identity_der, sc.snapshot(), self.local));
        Ok(())
    }
}

impl WebClient {
    /// A client for a new user with a fresh identity key, drawn from the
    /// RNG seeded with `seed` (the page's `crypto.getRandomValues`).
    /// `room_params` derive room keys; `key_params` encrypt the identity
    /// key under the account password (the key record kept after logout).
    pub fn generate(seed: [u8; 32], params: Params, now: Now) -> Result<WebClient, WebError> {
        let mut rng = StdRng::from_seed(seed);
        let identity = IdentityKey::generate(&mut rng).map_err(|e| WebError::Key(e.to_string()))?;
        Ok(Self::with_rng(identity, rng, params, now))
    }

    /// A client for a new user with this identity key (DER PKCS#8).
    pub fn with_identity(seed: [u8; 32], pkcs8_der: &[u8], params: Params, now: Now) -> Result<WebClient, WebError> {
        let identity = IdentityKey::from_pkcs8_der(pkcs8_der).map_err(|e| WebError::Key(e.to_string()))?;
        Ok(Self::with_rng(identity, StdRng::from_seed(seed), params, now))
    }

    fn with_rng(identity: IdentityKey, mut rng: StdRng, params: Params, now: Now) -> WebClient {
        let identity_der = identity.to_pkcs8_der().map(|d| Zeroizing::new(d.to_vec())).unwrap_or_default();
        let lock_rng = StdRng::from_seed(rng.random());
        let client = Client::new(ClientConfig::default(), now);
        let sc = SecureClient::new(client, identity, rng, params.room, now);
        Self::around(sc, identity_der, Local::default(), lock_rng, params, now)
    }

    /// The client stored in `profile` (bytes a [`take_checkpoint`](Self::take_checkpoint)
    /// handed out), not connected; its session resumes on connect. A key
    /// record (a logged-out account) is refused with
    /// [`ProfileError::Locked`]: [`unlock`](Self::unlock) it.
    pub fn restore(seed: [u8; 32], profile: &[u8], params: Params, now: Now) -> Result<WebClient, WebError> {
        let (der, stored) = profile::decode(profile)?;
        let identity = IdentityKey::from_pkcs8_der(&der).map_err(|_| ProfileError::Identity)?;
        let mut rng = StdRng::from_seed(seed);
        let lock_rng = StdRng::from_seed(rng.random());
        let blob =
            stored.locked.and_then(|b| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b).ok());
        match SecureClient::restore(ClientConfig::default(), &stored.state, identity, rng, params.room, now) {
            Ok(sc) => {
                // A profile written before the owner was recorded: the logged-in user's.
                let owner = stored.owner.or_else(|| sc.client().username().map(str::to_owned));
                let lock = owner.map(|owner| Lock { owner, blob });
                let registering = profile::registering(stored.registering);
                let local = Local { verified: stored.verified, lock, sent: stored.sent, registering };
                Ok(Self::around(sc, der, local, lock_rng, params, now))
            }
            Err(e) => {
                // The conversations did not restore, but the key's owner is
                // known: keep the identity key (the account stays usable
                // here) and the pinned keys of contacts with their verified
                // marks, say what was lost, and let the user log in again.
                let Some(owner) = stored.owner else { return Err(ProfileError::State(e.to_string()).into()) };
                let identity = IdentityKey::from_pkcs8_der(&der).map_err(|_| ProfileError::Identity)?;
                let mut web = Self::with_rng(identity, StdRng::from_seed(seed), params, now);
                web.keep_contacts(stored.state.contacts.clone());
                web.local.lock = Some(Lock { owner, blob });
                web.local.verified = stored.verified;
                web.events.push_back(json!({"type": "state_reset", "reason": e.to_string()}));
                web.checkpoint_now();
                Ok(web)
            }
        }
    }

    /// Why a login as `user` is refused by a browser that holds no key for
    /// it (the text of [`WebError::NoIdentity`]), without making a client.
    #[must_use]
    pub fn no_identity(user: &str) -> String {
        WebError::NoIdentity(user.to_owned()).to_string()
    }

    /// The account a key record (bytes of [`logout_record`](Self::logout_record))
    /// belongs to, or `None` if `bytes` are not a key record.
    #[must_use]
    pub fn record_owner(bytes: &[u8]) -> Option<String> {
        profile::decode_record(bytes).map(|(owner, _)| owner)
    }

    /// A logged-out client for the account of a key record, its identity key
    /// decrypted with `password`; then [`login`](Self::login) as that user.
    pub fn unlock(
        seed: [u8; 32],
        record: &[u8],
        password: &str,
        params: Params,
        now: Now,
    ) -> Result<WebClient, WebError> {
        let (owner, blob) =
            profile::decode_record(record).ok_or_else(|| ProfileError::Damaged("not a key record".into()))?;
        let identity =
            IdentityKey::decrypt_at_rest(&blob, password.as_bytes()).map_err(|_| WebError::Unlock(owner.clone()))?;
        let mut web = Self::with_rng(identity, StdRng::from_seed(seed), params, now);
        web.local.lock = Some(Lock { owner, blob: Some(blob) });
        Ok(web)
    }

    /// The account this client's identity key belongs to, once a
    /// registration or login succeeded here (or it was unlocked).
    #[must_use]
    pub fn owner(&self) -> Option<&str> {
        match (&self.local.lock, &self.local.registering) {
            (Some(lock), _) => Some(lock.owner.as_str()),
            (None, Some(r)) if r.lost => Some(r.owner.as_str()),
            _ => None,
        }
    }

    /// What the page keeps after a logout: the key record (the identity key
    /// encrypted under the password), if a login or registration with the
    /// password succeeded here; `None` otherwise (the key is lost with the rest).
    #[must_use]
    pub fn logout_record(&self) -> Option<Vec<u8>> {
        let lock = self.local.lock.as_ref()?;
        Some(profile::encode_record(&lock.owner, lock.blob.as_deref()?))
    }

    fn around(
        sc: SecureClient,
        identity_der: Zeroizing<Vec<u8>>,
        local: Local,
        lock_rng: StdRng,
        params: Params,
        now: Now,
    ) -> WebClient {
        WebClient {
            sc,
            identity_der,
            local,
            pending: None,
            lock_rng,
            key_params: params.key,
            room_params: params.room,
            clock: now,
            online: false,
            erase: false,
            local_changed: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            timeout: None,
            checkpoint: None,
            made: 0,
            taken: 0,
            saved: 0,
        }
    }

    /// [`pump`](Self::pump) at `now`, the latest time a call gave.
    fn pump_at(&mut self, now: Now) {
        self.clock = now;
        self.pump();
    }

    /// Drains the machine (see [`drain_turns`](Self::drain_turns)); after a
    /// logout, replaces it with an empty one (same identity key).
    fn pump(&mut self) {
        self.drain_turns();
        if std::mem::take(&mut self.erase) {
            self.reset_state();
            self.drain_turns();
        }
        if self.local_changed {
            self.checkpoint_now();
        }
    }

    /// A logout was answered: the sessions, room keys, inbox and sent
    /// messages go; the identity key, its record and the contacts' pinned
    /// keys stay (as the CLI's logout keeps its `identity.at_rest` and its
    /// contact book). The profile the page stores
    /// next holds nothing else, so a reload or a failed erase in the page
    /// cannot bring them back.
    fn reset_state(&mut self) {
        let Ok(identity) = IdentityKey::from_pkcs8_der(&self.identity_der) else { return };
        let contacts = self.sc.snapshot().contacts.clone();
        let rng = StdRng::from_seed(self.lock_rng.random());
        let client = Client::new(ClientConfig::default(), self.clock);
        self.sc = SecureClient::new(client, identity, rng, self.room_params, self.clock);
        self.keep_contacts(contacts);
        if self.online {
            self.sc.connected(self.clock);
        }
        self.local.sent.clear();
        self.checkpoint_now();
    }

    /// Puts `contacts` (pinned keys, a key change awaiting acceptance) into
    /// the fresh machine, as the CLI's contact book outlives a logout: after
    /// the next login a swapped key is still caught.
    fn keep_contacts(&mut self, contacts: Vec<confab_proto::e2e::secure::ContactSnapshot>) {
        if contacts.is_empty() {
            return;
        }
        let mut snapshot = self.sc.snapshot();
        snapshot.contacts = contacts;
        let Ok(identity) = IdentityKey::from_pkcs8_der(&self.identity_der) else { return };
        let rng = StdRng::from_seed(self.lock_rng.random());
        if let Ok(sc) =
            SecureClient::restore(ClientConfig::default(), &snapshot, identity, rng, self.room_params, self.clock)
        {
            self.sc = sc;
        }
    }

    /// Drains the machine: commits into the captured profile, then queues
    /// what the turn hands out.
    fn drain_turns(&mut self) {
        loop {
            let mut store = Capture { identity_der: &self.identity_der, local: &self.local, out: None };
            let Ok(outputs) = self.sc.drain().commit(&mut store);
            if let Some(bytes) = store.out {
                self.checkpoint = Some(bytes);
                self.made += 1;
                self.local_changed = false;
            }
            if outputs.is_empty() {
                return;
            }
            let mut timer_only = true;
            for output in outputs {
                match output {
                    SecureOutput::Transmit(bytes) => {
                        timer_only = false;
                        self.transmits.push_back(bytes);
                    }
                    SecureOutput::Event(event) => {
                        timer_only = false;
                        let json = crate::events::to_json(&event);
                        self.settle_pending(&json);
                        self.settle_registering(&json);
                        if json["type"] == "logged_out" {
                            self.erase = true;
                        }
                        self.events.push_back(json);
                    }
                    SecureOutput::Close { code, reason } => {
                        timer_only = false;
                        self.events.push_back(json!({"type": "close", "code": code, "reason": reason}));
                    }
                    SecureOutput::Timeout(at) => self.timeout = at,
                }
            }
            if timer_only {
                return;
            }
        }
    }

    /// Marks a change of the web-only state (verified contacts, the lock)
    /// for the next checkpoint.
    fn checkpoint_now(&mut self) {
        self.local_changed = false;
        self.checkpoint = Some(profile::encode(&self.identity_der, self.sc.snapshot(), &self.local));
        self.made += 1;
    }

    /// A login's `logged_in` binds this identity key to the account (and
    /// keeps it under the password that worked); its failure forgets the
    /// attempt.
    fn settle_pending(&mut self, event: &Value) {
        let Some(pending) = self.pending.as_ref() else { return };
        let ours = event["request_id"].as_u64() == Some(u64::from(pending.request_id));
        let succeeded = match event["type"].as_str() {
            Some("logged_in") => ours || event["username"].as_str() == Some(pending.owner.as_str()),
            Some("failed") if ours || event["request_id"].is_null() => {
                self.pending = None;
                return;
            }
            _ => false,
        };
        if succeeded && let Some(p) = self.pending.take() {
            if self.local.registering.as_ref().is_some_and(|r| r.owner == p.owner) {
                self.local.registering = None;
            }
            self.local.lock = Some(Lock { owner: p.owner, blob: Some(p.blob) });
            self.checkpoint_now();
        }
    }

    /// A registration's answer: `done` binds the key to the account; a
    /// refusal forgets it, except a 503 (the connection was lost before the
    /// answer, or the server was busy) and a 409 to a registration whose
    /// first answer may have been lost (the connection dropped, or the page
    /// reloaded, after it was sent): the server may be saying that it
    /// already holds it. That one stays until a login as the account
    /// succeeds (binding it) or the same registration, sent again, is
    /// answered.
    fn settle_registering(&mut self, event: &Value) {
        let Some(r) = self.local.registering.as_ref() else { return };
        if event["request_id"].as_u64() != Some(u64::from(r.request_id)) || event["op"] != "register" {
            return;
        }
        match event["type"].as_str() {
            Some("done") => {
                let r = self.local.registering.take().expect("checked above");
                self.local.lock = Some(Lock { owner: r.owner, blob: Some(r.blob) });
                self.checkpoint_now();
            }
            Some("failed") if r.lost && event["code"] == 409 => {}
            // "Connection lost before the answer" (or busy): it may have
            // been performed; a login, or the same registration again, tells.
            Some("failed") if event["code"] == 503 => {
                if let Some(r) = self.local.registering.as_mut() {
                    r.lost = true;
                }
            }
            Some("failed") => {
                self.local.registering = None;
                self.checkpoint_now();
            }
            Some("indeterminate") => {
                if let Some(r) = self.local.registering.as_mut() {
                    r.lost = true;
                }
            }
            _ => {}
        }
    }

    /// The identity key encrypted under `password`, for the key record.
    fn lock_under(&mut self, password: &str) -> Result<Vec<u8>, WebError> {
        self.sc
            .identity()
            .encrypt_at_rest(&mut self.lock_rng, password.as_bytes(), self.key_params)
            .map_err(|e| WebError::Key(e.to_string()))
    }

    // ----- transport and time -----

    /// The WebSocket opened.
    pub fn connected(&mut self, now: Now) {
        self.online = true;
        self.sc.connected(now);
        self.pump_at(now);
    }

    /// The WebSocket closed or failed. Frames not written yet are dropped
    /// with it, as a socket's buffer would be: the machine re-sends what
    /// must arrive (its outbox) on the next [`connected`](Self::connected).
    pub fn disconnected(&mut self, now: Now) {
        self.online = false;
        if let Some(r) = self.local.registering.as_mut() {
            r.lost = true;
        }
        self.transmits.clear();
        self.sc.disconnected(now);
        self.pump_at(now);
    }

    /// Bytes of a binary WebSocket message (any chunking of the frame stream).
    pub fn handle_input(&mut self, now: Now, bytes: &[u8]) {
        self.sc.handle_input(now, bytes);
        self.pump_at(now);
    }

    /// The instant of [`poll_timeout`](Self::poll_timeout) passed.
    pub fn handle_timeout(&mut self, now: Now) {
        self.sc.handle_timeout(now);
        self.pump_at(now);
    }

    /// The next frames to write, unless a checkpoint is not stored yet (the
    /// durability barrier: frames wait for the profile that precedes them).
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if self.saved < self.made {
            return None;
        }
        self.transmits.pop_front()
    }

    /// The next event, as JSON (see the table in the `events` module docs).
    pub fn poll_event(&mut self) -> Option<Value> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout), if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timeout
    }

    /// The profile bytes to store (secret: the page encrypts them), if the
    /// persisted state changed since the last call.
    pub fn take_checkpoint(&mut self) -> Option<Zeroizing<Vec<u8>>> {
        let bytes = self.checkpoint.take()?;
        self.taken = self.made;
        Some(bytes)
    }

    /// The page stored the bytes of the last [`take_checkpoint`](Self::take_checkpoint):
    /// frames held behind it may go.
    pub fn checkpoint_saved(&mut self) {
        self.saved = self.taken;
    }

    /// Whether profile bytes wait to be taken or confirmed.
    #[must_use]
    pub fn checkpoint_pending(&self) -> bool {
        self.saved < self.made
    }

    /// The profile bytes now, whatever changed (for an explicit save).
    #[must_use]
    pub fn snapshot(&self) -> Zeroizing<Vec<u8>> {
        profile::encode(&self.identity_der, self.sc.snapshot(), &self.local)
    }

    // ----- account -----

    /// Registers `user` with this client's identity key, then (when the page
    /// calls [`login`](Self::login) after `done`) logs in.
    pub fn register(&mut self, now: Now, user: &str, password: &str, passphrase: &str) -> Result<u32, WebError> {
        if let Some(lock) = &self.local.lock {
            return Err(WebError::Bound(lock.owner.clone()));
        }
        // A registration whose answer was lost may be sent again, for the
        // same name only.
        let lost = match &self.local.registering {
            Some(r) if r.owner != user => return Err(WebError::Bound(r.owner.clone())),
            Some(r) => r.lost,
            None => false,
        };
        let blob = self.lock_under(password)?;
        let id = self.sc.register(now, user, password, passphrase)?;
        // Stored before the frame goes, so a reload cannot lose the key of
        // an account the server created.
        self.local.registering = Some(Registering { owner: user.to_owned(), blob, request_id: id, lost });
        self.local_changed = true;
        self.pump_at(now);
        Ok(id)
    }

    /// The two-step login: `login` with the password, then `passphrase`
    /// (the machine sends the second step on the first one's answer);
    /// `logged_in` or `failed` tells the outcome. Only for the account this
    /// client's identity key belongs to (registered here, or unlocked from
    /// its key record): any other is refused with [`WebError::NoIdentity`]
    /// before anything is sent, since a session without the account's key
    /// could read nothing and would present a key nobody pinned.
    pub fn login(&mut self, now: Now, user: &str, password: &str, passphrase: &str) -> Result<u32, WebError> {
        if self.owner() != Some(user) {
            return Err(WebError::NoIdentity(user.to_owned()));
        }
        let blob = self.lock_under(password)?;
        let id = self.sc.login(now, user, password, passphrase)?;
        self.pending = Some(Pending { request_id: id, owner: user.to_owned(), blob });
        self.pump_at(now);
        Ok(id)
    }

    /// Revokes the session on the server (the page then erases its storage).
    pub fn logout(&mut self, now: Now) -> Result<u32, WebError> {
        let id = self.sc.client_mut().logout(now).map_err(SecureError::from)?;
        self.pump_at(now);
        Ok(id)
    }

    /// The logged-in user, if any.
    #[must_use]
    pub fn username(&self) -> Option<&str> {
        self.sc.client().username()
    }

    /// Whether the machine holds a session (tokens).
    #[must_use]
    pub fn is_logged_in(&self) -> bool {
        self.sc.client().is_logged_in()
    }

    /// This user's identity key fingerprint.
    #[must_use]
    pub fn fingerprint(&self) -> String {
        self.sc.identity().public().fingerprint().to_string()
    }

    // ----- rooms -----

    /// Creates `room` with `password` (the room keys are derived here).
    pub fn create_room(&mut self, now: Now, room: &str, password: &str) -> Result<u32, WebError> {
        let id = self.sc.create_room(now, room, password.as_bytes())?;
        self.pump_at(now);
        Ok(id)
    }

    /// Joins `room` (its descriptor first, then the verifier); `done` carries the members.
    pub fn join_room(&mut self, now: Now, room: &str, password: &str) -> Result<u32, WebError> {
        let id = self.sc.join_room(now, room, password.as_bytes())?;
        self.pump_at(now);
        Ok(id)
    }

    /// Sends `text` to `room`, sealed under the room key.
    pub fn send_room(&mut self, now: Now, room: &str, text: &str) -> Result<u32, WebError> {
        let id = self.sc.send_room(now, room, text)?;
        self.pump_at(now);
        Ok(id)
    }

    /// Asks for `room`'s retained history (as `room` events with `history: true`).
    pub fn room_history(&mut self, now: Now, room: &str) -> Result<u32, WebError> {
        let id = self.sc.room_history(now, room)?;
        self.pump_at(now);
        Ok(id)
    }

    /// The rooms this device holds keys for, by name.
    #[must_use]
    pub fn rooms(&self) -> Vec<String> {
        self.sc.snapshot().rooms.iter().map(|r| r.room.clone()).collect()
    }

    // ----- private conversations -----

    /// The peers of this device's private conversations with keys, by name.
    #[must_use]
    pub fn conversations(&self) -> Vec<String> {
        let mut peers: Vec<String> = self.sc.snapshot().sessions.iter().map(|s| s.peer.clone()).collect();
        peers.dedup();
        peers
    }

    /// Requests a private conversation with `peer` (who may be offline).
    pub fn request_mp(&mut self, now: Now, peer: &str) -> Result<u32, WebError> {
        let id = self.sc.request_mp(now, peer)?;
        self.pump_at(now);
        Ok(id)
    }

    /// Accepts `peer`'s verified request.
    pub fn accept_mp(&mut self, now: Now, peer: &str) -> Result<u32, WebError> {
        let id = self.sc.accept_mp(now, peer)?;
        self.pump_at(now);
        Ok(id)
    }

    /// Sends `text` to `peer`, sealed under the session keys.
    pub fn send_mp(&mut self, now: Now, peer: &str, text: &str) -> Result<u32, WebError> {
        let id = self.sc.send_mp(now, peer, text)?;
        self.forget_sent_before(now.unix_ms.saturating_sub(MP_SHOWN_MS));
        self.local
            .sent
            .entry(peer.to_owned())
            .or_default()
            .push(SentMp { text: text.to_owned(), sent_ms: now.unix_ms });
        // Stored with the turn that sends it (the checkpoint precedes the frame).
        self.local_changed = true;
        self.pump_at(now);
        Ok(id)
    }

    /// This user's own private messages to `peer` sent in the last hour,
    /// oldest first: `[{"text", "sent_ms", "expires_ms"}]`.
    #[must_use]
    pub fn sent_mps(&self, peer: &str, unix_ms: u64) -> Value {
        let shown = self.local.sent.get(peer).into_iter().flatten().filter(|m| m.sent_ms + MP_SHOWN_MS > unix_ms);
        Value::Array(
            shown
                .map(|m| json!({"text": m.text, "sent_ms": m.sent_ms, "expires_ms": m.sent_ms + MP_SHOWN_MS}))
                .collect(),
        )
    }

    /// Drops own messages sent before `unix_ms`.
    fn forget_sent_before(&mut self, unix_ms: u64) {
        for list in self.local.sent.values_mut() {
            list.retain(|m| m.sent_ms >= unix_ms);
        }
        self.local.sent.retain(|_, list| !list.is_empty());
    }

    /// Closes (or refuses) the conversation with `peer`.
    pub fn close_mp(&mut self, now: Now, peer: &str) -> Result<u32, WebError> {
        let id = self.sc.close_mp(now, peer)?;
        self.pump_at(now);
        Ok(id)
    }

    /// Whether a private conversation with `peer` has its keys.
    #[must_use]
    pub fn has_session(&self, peer: &str) -> bool {
        self.sc.has_session(peer)
    }

    /// The received private messages still readable, oldest first, with
    /// their local expiry (`expires_ms`, one hour after receipt).
    #[must_use]
    pub fn inbox(&self) -> Value {
        let all: Vec<Value> = self
            .sc
            .inbox()
            .iter()
            .map(|m: &ReceivedMp| {
                json!({"from": m.from, "text": m.text, "received_ms": m.received_ms, "expires_ms": m.expires_ms})
            })
            .collect();
        Value::Array(all)
    }

    // ----- keys -----

    /// Fetches `user`'s identity key (pinning it on first use, checking it
    /// against the pinned one otherwise: a change raises `key_changed`).
    pub fn fetch_key(&mut self, now: Now, user: &str) -> Result<u32, WebError> {
        let id = self.sc.fetch_key(now, user)?;
        self.pump_at(now);
        Ok(id)
    }

    /// The safety number with `user` (twelve groups of five digits, as the
    /// CLI's `safety-number` prints it), once their key is pinned.
    #[must_use]
    pub fn safety_number(&self, user: &str) -> Option<String> {
        self.sc.safety_number(user).map(|n| n.to_string())
    }

    /// What this device knows of `user`'s key: `{"pinned", "verified",
    /// "key_changed"}`; `verified` only while the pinned key is the one
    /// compared.
    #[must_use]
    pub fn contact(&self, user: &str) -> Value {
        let pinned = self.sc.pinned(user).map(|k| k.fingerprint().to_string());
        let verified = pinned.is_some() && self.local.verified.get(user) == pinned.as_ref();
        json!({"user": user, "pinned": pinned, "verified": verified, "key_changed": self.sc.is_blocked(user)})
    }

    /// Marks `user`'s pinned key as verified (the safety numbers were
    /// compared out of band). A later key change clears it.
    pub fn verify(&mut self, user: &str) -> Result<(), WebError> {
        let pinned = self.sc.pinned(user).ok_or_else(|| WebError::NoKey(user.to_owned()))?;
        if self.sc.is_blocked(user) {
            return Err(SecureError::KeyChanged(user.to_owned()).into());
        }
        self.local.verified.insert(user.to_owned(), pinned.fingerprint().to_string());
        self.checkpoint_now();
        Ok(())
    }

    /// Pins the new key `user` presented (after comparing the new safety
    /// number); `false` if there was no change to accept.
    pub fn accept_new_key(&mut self, user: &str) -> bool {
        let accepted = self.sc.accept_new_key(user);
        self.pump();
        if accepted {
            self.checkpoint_now();
        }
        accepted
    }
}
