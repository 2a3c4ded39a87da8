//! The JavaScript API (wasm-bindgen), on `wasm32-unknown-unknown` only.
//!
//! Every call that can change state takes the page's two clocks,
//! `Date.now()` (`unix_ms`) and `performance.now()` (`mono_ms`); this module
//! maps them to the core's [`Now`] without reading a clock itself. Events,
//! the inbox and contacts come out as JSON text (`JSON.parse` them); frames
//! and profile bytes as `Uint8Array`; errors as thrown `Error`s.

use std::time::Duration;

use confab_proto::e2e::room::ROOM_PARAMS;
use confab_proto::server::HashParams;
use confab_proto::{Instant, Now};
use wasm_bindgen::prelude::*;

use crate::web;

/// The page's clocks as the core's time. `performance.now()` counts from
/// the page's load; it never goes back, and the mapping keeps it so.
struct Clock {
    last: Instant,
}

impl Clock {
    fn new() -> Clock {
        Clock { last: Instant::from_origin(Duration::ZERO) }
    }

    fn now(&mut self, unix_ms: f64, mono_ms: f64) -> Now {
        // `as` saturates: NaN and negatives give 0, huge values the maximum.
        let micros = (mono_ms * 1000.0) as u64;
        let instant = Instant::from_origin(Duration::from_micros(micros)).max(self.last);
        self.last = instant;
        Now::new(instant, unix_ms as u64)
    }
}

/// Room keys with the parameters every client uses; the identity key under
/// the password with the `confab` CLI's (OWASP's argon2id minimum).
const PARAMS: web::Params = web::Params { room: ROOM_PARAMS, key: HashParams::OWASP };

fn seed(bytes: &[u8]) -> Result<[u8; 32], JsError> {
    bytes.try_into().map_err(|_| JsError::new("the seed must be 32 bytes from crypto.getRandomValues"))
}

fn js(e: web::WebError) -> JsError {
    JsError::new(&e.to_string())
}

/// The confab client of the page. See the crate docs.
#[wasm_bindgen]
pub struct WebClient {
    inner: web::WebClient,
    clock: Clock,
}

#[wasm_bindgen]
impl WebClient {
    /// A client for a new user, with a fresh identity key.
    #[wasm_bindgen(constructor)]
    pub fn new(seed_bytes: &[u8], unix_ms: f64, mono_ms: f64) -> Result<WebClient, JsError> {
        let mut clock = Clock::new();
        let now = clock.now(unix_ms, mono_ms);
        let inner = web::WebClient::generate(seed(seed_bytes)?, PARAMS, now).map_err(js)?;
        Ok(WebClient { inner, clock })
    }

    /// The client stored in `profile` (bytes `take_checkpoint` handed out).
    pub fn restore(seed_bytes: &[u8], profile: &[u8], unix_ms: f64, mono_ms: f64) -> Result<WebClient, JsError> {
        let mut clock = Clock::new();
        let now = clock.now(unix_ms, mono_ms);
        let inner = web::WebClient::restore(seed(seed_bytes)?, profile, PARAMS, now).map_err(js)?;
        Ok(WebClient { inner, clock })
    }

    /// Why a login as `user` is refused where no key for it is held.
    pub fn no_identity(user: &str) -> String {
        web::WebClient::no_identity(user)
    }

    /// The account of a key record (what a logout left), or `undefined`
    /// if the bytes are not one.
    pub fn record_owner(bytes: &[u8]) -> Option<String> {
        web::WebClient::record_owner(bytes)
    }

    /// A client for the account of a key record, its identity key decrypted
    /// with `password` (throws on a wrong one); then `login` as that account.
    pub fn unlock(
        seed_bytes: &[u8],
        record: &[u8],
        password: &str,
        unix_ms: f64,
        mono_ms: f64,
    ) -> Result<WebClient, JsError> {
        let mut clock = Clock::new();
        let now = clock.now(unix_ms, mono_ms);
        let inner = web::WebClient::unlock(seed(seed_bytes)?, record, password, PARAMS, now).map_err(js)?;
        Ok(WebClient { inner, clock })
    }

    /// The account this client's identity key belongs to (registered here
    /// or unlocked), or `undefined`.
    pub fn owner(&self) -> Option<String> {
        self.inner.owner().map(str::to_owned)
    }

    /// The key record to keep after a logout (the identity key encrypted
    /// under the password), or `undefined` if there is none to keep.
    pub fn logout_record(&self) -> Option<Vec<u8>> {
        self.inner.logout_record()
    }

    /// The WebSocket opened.
    pub fn connected(&mut self, unix_ms: f64, mono_ms: f64) {
        let now = self.clock.now(unix_ms, mono_ms);
        self.inner.connected(now);
    }

    /// The WebSocket closed.
    pub fn disconnected(&mut self, unix_ms: f64, mono_ms: f64) {
        let now = self.clock.now(unix_ms, mono_ms);
        self.inner.disconnected(now);
    }

    /// A binary WebSocket message arrived.
    pub fn handle_input(&mut self, unix_ms: f64, mono_ms: f64, bytes: &[u8]) {
        let now = self.clock.now(unix_ms, mono_ms);
        self.inner.handle_input(now, bytes);
    }

    /// The time `poll_timeout` gave passed.
    pub fn handle_timeout(&mut self, unix_ms: f64, mono_ms: f64) {
        let now = self.clock.now(unix_ms, mono_ms);
        self.inner.handle_timeout(now);
    }

    /// Bytes to send as one binary message, or `undefined`.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.inner.poll_transmit().map(|b| b.to_vec())
    }

    /// The next event as JSON text, or `undefined`.
    pub fn poll_event(&mut self) -> Option<String> {
        self.inner.poll_event().map(|v| v.to_string())
    }

    /// When (on the `performance.now()` scale, ms) to call `handle_timeout`, or `undefined`.
    pub fn poll_timeout(&self) -> Option<f64> {
        self.inner.poll_timeout().map(|at| at.since_origin().as_secs_f64() * 1000.0)
    }

    /// Profile bytes to encrypt and store, or `undefined`; then call `checkpoint_saved`.
    pub fn take_checkpoint(&mut self) -> Option<Vec<u8>> {
        self.inner.take_checkpoint().map(|b| b.to_vec())
    }

    /// The bytes of the last `take_checkpoint` are stored: held frames may go.
    pub fn checkpoint_saved(&mut self) {
        self.inner.checkpoint_saved();
    }

    /// Registers `user` (then log in).
    pub fn register(
        &mut self,
        unix_ms: f64,
        mono_ms: f64,
        user: &str,
        password: &str,
        passphrase: &str,
    ) -> Result<u32, JsError> {
        let now = self.clock.now(unix_ms, mono_ms);
        self.inner.register(now, user, password, passphrase).map_err(js)
    }

    /// The two-step login (password, then passphrase).
    pub fn login(
        &mut self,
        unix_ms: f64,
        mono_ms: f64,
        user: &str,
        password: &str,
        passphrase: &str,
    ) -> Result<u32, JsError> {
        let now = self.clock.now(unix_ms, mono_ms);
        self.inner.login(now, user, password, passphrase).map_err(js)
    }

    /// Revokes the session.
    pub fn logout(&mut self, unix_ms: f64, mono_ms: f64) -> Result<u32, JsError> {
        let now = self.clock.now(unix_ms, mono_ms);
        self.inner.logout(now).map_err(js)
    }

    /// The logged-in user, or `undefined`.
    pub fn username(&self) -> Option<String> {
        self.inner.username().map(str::to_owned)
    }

    /// Whether a session is held.
    pub fn is_logged_in(&self) -> bool {
        self.inner.is_logged_in()
    }

    /// This user's key fingerprint.
    pub fn fingerprint(&self) -> String {
        self.inner.fingerprint()
    }

    /// Creates a room.
    pub fn create_room(&mut self, unix_ms: f64, mono_ms: f64, room: &str, password: &str) -> Result<u32, JsError> {
        let now = self.clock.now(unix_ms, mono_ms);
        self.inner.create_room(now, room, password).map_err(js)
    }

    /// Joins a room.
    pub fn join_room(&mut self, unix_ms: f64, mono_ms: f64, room: &str, password: &str) -> Result<u32, JsError> {
        let now = self.clock.now(unix_ms, mono_ms);
        self.inner.join_room(now, room, password).map_err(js)
    }

    /// Sends to a room.
    pub fn send_room(&mut self, unix_ms: f64, mono_ms: f64, room: &str, text: &str) -> Result<u32, JsError> {
        let now = self.clock.now(unix_ms, mono_ms);
        self.inner.send_room(now, room, text).map_err(js)
    }

    /// Asks for a room's history.
    pub fn room_history(&mut self, unix_ms: f64, mono_ms: f64, room: &str) -> Result<u32, JsError> {
        let now = self.clock.now(unix_ms, mono_ms);
        self.inner.room_history(now, room).map_err(js)
    }

    /// The rooms this device holds keys for, JSON text (an array of names).
    pub fn rooms(&self) -> String {
        serde_json::Value::from(self.inner.rooms()).to_string()
    }

    /// The peers of the conversations with keys, JSON text (an array of names).
    pub fn conversations(&self) -> String {
        serde_json::Value::from(self.inner.conversations()).to_string()
    }

    /// Requests a private conversation.
    pub fn request_mp(&mut self, unix_ms: f64, mono_ms: f64, peer: &str) -> Result<u32, JsError> {
        let now = self.clock.now(unix_ms, mono_ms);
        self.inner.request_mp(now, peer).map_err(js)
    }

    /// Accepts a request.
    pub fn accept_mp(&mut self, unix_ms: f64, mono_ms: f64, peer: &str) -> Result<u32, JsError> {
        let now = self.clock.now(unix_ms, mono_ms);
        self.inner.accept_mp(now, peer).map_err(js)
    }

    /// Sends a private message.
    pub fn send_mp(&mut self, unix_ms: f64, mono_ms: f64, peer: &str, text: &str) -> Result<u32, JsError> {
        let now = self.clock.now(unix_ms, mono_ms);
        self.inner.send_mp(now, peer, text).map_err(js)
    }

    /// Closes a private conversation.
    pub fn close_mp(&mut self, unix_ms: f64, mono_ms: f64, peer: &str) -> Result<u32, JsError> {
        let now = self.clock.now(unix_ms, mono_ms);
        self.inner.close_mp(now, peer).map_err(js)
    }

    /// Whether the conversation with `peer` has its keys.
    pub fn has_session(&self, peer: &str) -> bool {
        self.inner.has_session(peer)
    }

    /// The readable received private messages, JSON text.
    pub fn inbox(&self) -> String {
        self.inner.inbox().to_string()
    }

    /// This user's own private messages to `peer` of the last hour (before
    /// `unix_ms`'s hour ends), JSON text: `[{"text", "sent_ms", "expires_ms"}]`.
    pub fn sent_mps(&self, peer: &str, unix_ms: f64) -> String {
        self.inner.sent_mps(peer, unix_ms as u64).to_string()
    }

    /// Fetches (and pins or checks) a user's key.
    pub fn fetch_key(&mut self, unix_ms: f64, mono_ms: f64, user: &str) -> Result<u32, JsError> {
        let now = self.clock.now(unix_ms, mono_ms);
        self.inner.fetch_key(now, user).map_err(js)
    }

    /// The safety number with `user`, or `undefined`.
    pub fn safety_number(&self, user: &str) -> Option<String> {
        self.inner.safety_number(user)
    }

    /// What is known of `user`'s key, JSON text.
    pub fn contact(&self, user: &str) -> String {
        self.inner.contact(user).to_string()
    }

    /// Marks `user`'s pinned key verified.
    pub fn verify(&mut self, user: &str) -> Result<(), JsError> {
        self.inner.verify(user).map_err(js)
    }

    /// Pins the new key `user` presented.
    pub fn accept_new_key(&mut self, user: &str) -> bool {
        self.inner.accept_new_key(user)
    }
}
