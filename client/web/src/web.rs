//! [`WebClient`]: the secure client machine with the page's queues around it.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;

use bytes::Bytes;
use confab_proto::e2e::secure::ReceivedMp;
use confab_proto::e2e::{IdentityKey, SecureClient, SecureError, SecureOutput};
use confab_proto::server::HashParams;
use confab_proto::{Client, ClientConfig, Durable, Instant, Now};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::profile::{self, ProfileError};

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
    /// Contacts whose safety number this user compared, with the key
    /// fingerprint they compared it for.
    verified: BTreeMap<String, String>,
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

/// The store a turn commits into: the profile bytes, kept for the page.
struct Capture<'a> {
    identity_der: &'a [u8],
    verified: &'a BTreeMap<String, String>,
    out: Option<Zeroizing<Vec<u8>>>,
}

impl Durable<SecureClient> for Capture<'_> {
    type Error = Infallible;

    fn commit(&mut self, sc: &SecureClient) -> Result<(), Infallible> {
        self.out = Some(profile::encode(self.identity_der, sc.snapshot(), self.verified));
        Ok(())
    }
}

impl WebClient {
    /// A client for a new user with a fresh identity key, drawn from the
    /// RNG seeded with `seed` (the page's `crypto.getRandomValues`).
    pub fn generate(seed: [u8; 32], room_params: HashParams, now: Now) -> Result<WebClient, WebError> {
        let mut rng = StdRng::from_seed(seed);
        let identity = IdentityKey::generate(&mut rng).map_err(|e| WebError::Key(e.to_string()))?;
        Ok(Self::with_rng(identity, rng, room_params, now))
    }

    /// A client for a new user with this identity key (DER PKCS#8).
    pub fn with_identity(
        seed: [u8; 32],
        pkcs8_der: &[u8],
        room_params: HashParams,
        now: Now,
    ) -> Result<WebClient, WebError> {
        let identity = IdentityKey::from_pkcs8_der(pkcs8_der).map_err(|e| WebError::Key(e.to_string()))?;
        Ok(Self::with_rng(identity, StdRng::from_seed(seed), room_params, now))
    }

    fn with_rng(identity: IdentityKey, rng: StdRng, room_params: HashParams, now: Now) -> WebClient {
        let identity_der = identity.to_pkcs8_der().map(|d| Zeroizing::new(d.to_vec())).unwrap_or_default();
        let client = Client::new(ClientConfig::default(), now);
        let sc = SecureClient::new(client, identity, rng, room_params, now);
        Self::around(sc, identity_der, BTreeMap::new())
    }

    /// The client stored in `profile` (bytes a [`take_checkpoint`](Self::take_checkpoint)
    /// handed out), not connected; its session resumes on connect.
    pub fn restore(seed: [u8; 32], profile: &[u8], room_params: HashParams, now: Now) -> Result<WebClient, WebError> {
        let (der, stored) = profile::decode(profile)?;
        let identity = IdentityKey::from_pkcs8_der(&der).map_err(|_| ProfileError::Identity)?;
        let sc = SecureClient::restore(
            ClientConfig::default(),
            &stored.state,
            identity,
            StdRng::from_seed(seed),
            room_params,
            now,
        )
        .map_err(|e| ProfileError::State(e.to_string()))?;
        Ok(Self::around(sc, der, stored.verified))
    }

    fn around(sc: SecureClient, identity_der: Zeroizing<Vec<u8>>, verified: BTreeMap<String, String>) -> WebClient {
        WebClient {
            sc,
            identity_der,
            verified,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            timeout: None,
            checkpoint: None,
            made: 0,
            taken: 0,
            saved: 0,
        }
    }

    /// Drains the machine: commits into the captured profile, then queues
    /// what the turn hands out.
    fn pump(&mut self) {
        loop {
            let mut store = Capture { identity_der: &self.identity_der, verified: &self.verified, out: None };
            let Ok(outputs) = self.sc.drain().commit(&mut store);
            if let Some(bytes) = store.out {
                self.checkpoint = Some(bytes);
                self.made += 1;
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
                        self.events.push_back(crate::events::to_json(&event));
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

    /// Marks a change of the web-only state (verified contacts) for the next checkpoint.
    fn checkpoint_now(&mut self) {
        self.checkpoint = Some(profile::encode(&self.identity_der, self.sc.snapshot(), &self.verified));
        self.made += 1;
    }

    // ----- transport and time -----

    /// The WebSocket opened.
    pub fn connected(&mut self, now: Now) {
        self.sc.connected(now);
        self.pump();
    }

    /// The WebSocket closed or failed. Frames not written yet are dropped
    /// with it, as a socket's buffer would be: the machine re-sends what
    /// must arrive (its outbox) on the next [`connected`](Self::connected).
    pub fn disconnected(&mut self, now: Now) {
        self.transmits.clear();
        self.sc.disconnected(now);
        self.pump();
    }

    /// Bytes of a binary WebSocket message (any chunking of the frame stream).
    pub fn handle_input(&mut self, now: Now, bytes: &[u8]) {
        self.sc.handle_input(now, bytes);
        self.pump();
    }

    /// The instant of [`poll_timeout`](Self::poll_timeout) passed.
    pub fn handle_timeout(&mut self, now: Now) {
        self.sc.handle_timeout(now);
        self.pump();
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
        profile::encode(&self.identity_der, self.sc.snapshot(), &self.verified)
    }

    // ----- account -----

    /// Registers `user` with this client's identity key, then (when the page
    /// calls [`login`](Self::login) after `done`) logs in.
    pub fn register(&mut self, now: Now, user: &str, password: &str, passphrase: &str) -> Result<u32, WebError> {
        let id = self.sc.register(now, user, password, passphrase)?;
        self.pump();
        Ok(id)
    }

    /// The two-step login: `login` with the password, then `passphrase`
    /// (the machine sends the second step on the first one's answer);
    /// `logged_in` or `failed` tells the outcome.
    pub fn login(&mut self, now: Now, user: &str, password: &str, passphrase: &str) -> Result<u32, WebError> {
        let id = self.sc.login(now, user, password, passphrase)?;
        self.pump();
        Ok(id)
    }

    /// Revokes the session on the server (the page then erases its storage).
    pub fn logout(&mut self, now: Now) -> Result<u32, WebError> {
        let id = self.sc.client_mut().logout(now).map_err(SecureError::from)?;
        self.pump();
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
        self.pump();
        Ok(id)
    }

    /// Joins `room` (its descriptor first, then the verifier); `done` carries the members.
    pub fn join_room(&mut self, now: Now, room: &str, password: &str) -> Result<u32, WebError> {
        let id = self.sc.join_room(now, room, password.as_bytes())?;
        self.pump();
        Ok(id)
    }

    /// Sends `text` to `room`, sealed under the room key.
    pub fn send_room(&mut self, now: Now, room: &str, text: &str) -> Result<u32, WebError> {
        let id = self.sc.send_room(now, room, text)?;
        self.pump();
        Ok(id)
    }

    /// Asks for `room`'s retained history (as `room` events with `history: true`).
    pub fn room_history(&mut self, now: Now, room: &str) -> Result<u32, WebError> {
        let id = self.sc.room_history(now, room)?;
        self.pump();
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
        self.pump();
        Ok(id)
    }

    /// Accepts `peer`'s verified request.
    pub fn accept_mp(&mut self, now: Now, peer: &str) -> Result<u32, WebError> {
        let id = self.sc.accept_mp(now, peer)?;
        self.pump();
        Ok(id)
    }

    /// Sends `text` to `peer`, sealed under the session keys.
    pub fn send_mp(&mut self, now: Now, peer: &str, text: &str) -> Result<u32, WebError> {
        let id = self.sc.send_mp(now, peer, text)?;
        self.pump();
        Ok(id)
    }

    /// Closes (or refuses) the conversation with `peer`.
    pub fn close_mp(&mut self, now: Now, peer: &str) -> Result<u32, WebError> {
        let id = self.sc.close_mp(now, peer)?;
        self.pump();
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
        self.pump();
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
        let verified = pinned.is_some() && self.verified.get(user) == pinned.as_ref();
        json!({"user": user, "pinned": pinned, "verified": verified, "key_changed": self.sc.is_blocked(user)})
    }

    /// Marks `user`'s pinned key as verified (the safety numbers were
    /// compared out of band). A later key change clears it.
    pub fn verify(&mut self, user: &str) -> Result<(), WebError> {
        let pinned = self.sc.pinned(user).ok_or_else(|| WebError::NoKey(user.to_owned()))?;
        if self.sc.is_blocked(user) {
            return Err(SecureError::KeyChanged(user.to_owned()).into());
        }
        self.verified.insert(user.to_owned(), pinned.fingerprint().to_string());
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
