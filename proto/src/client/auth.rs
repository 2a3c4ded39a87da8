//! Tokens and the session: the two-step login, refresh (on a new connection,
//! and when the server says the access token expired), logout, and what
//! happens when the session's tokens stop working.

use crate::Instant;

use bytes::Bytes;
use rand::RngExt as _;
use rand::rngs::StdRng;
use zeroize::{Zeroize as _, Zeroizing};

use super::outbox::{Entry, Origin};
use super::{Client, ClientEvent, CommandError};
use crate::Now;
use crate::wire::{
    ErrorBody, FetchKey, Login, Message, Opcode, Passphrase, RETRY_KEY_LEN, Refresh, RefreshKeyed, Request,
    RequestBody, Response, ResponseBody, Status, Tokens, status,
};

/// A login under way: step one (`login`), then step two (`passphrase`).
pub(crate) struct LoginFlow {
    /// The id the `login` command returned; every outcome is reported under it.
    pub(crate) login_id: u32,
    pub(crate) timestamp_ms: u64,
    pub(crate) username: String,
    /// Held until `login` is written; overwritten when dropped.
    pub(crate) password: Option<Zeroizing<String>>,
    /// Held until step one is answered; overwritten when dropped.
    pub(crate) passphrase: Option<Zeroizing<String>>,
    pub(crate) login_sent: bool,
    pub(crate) passphrase_id: Option<u32>,
}

/// The retry key of a refresh-token exchange, and the attempts at it written
/// so far (one more before every send, so a retry always carries a number
/// greater than any earlier attempt, which the server can then tell from a
/// late copy of one).
pub(crate) struct ExchangeKey {
    pub(crate) key: Zeroizing<[u8; RETRY_KEY_LEN]>,
    pub(crate) attempt: u32,
}

/// The session's credentials and the exchanges that renew them.
#[derive(Default)]
pub(crate) struct Auth {
    pub(crate) access: Option<String>,
    pub(crate) access_expires_ms: u64,
    pub(crate) refresh: Option<String>,
    pub(crate) refresh_expires_ms: u64,
    /// Bumped at every new access token; an entry refused with an older one is simply sent again.
    pub(crate) generation: u64,
    /// The id of the `refresh` written on the current connection, unanswered.
    pub(crate) refresh_in_flight: Option<u32>,
    /// When to try a refused refresh again.
    pub(crate) refresh_retry_at: Option<Instant>,
    pub(crate) login: Option<LoginFlow>,
    /// `logout` was asked for: authenticated commands are refused from now on.
    pub(crate) logging_out: bool,
    /// Tokens from a refresh that authenticated the connection before the
    /// username was known (a resumed profile): `LoggedIn` waits for `connected`.
    pub(crate) deferred: Option<(u32, u64, u64)>,
    /// Draws retry keys (`None`: the client was given no entropy, and
    /// exchanges with plain `refresh`). See [`Client::set_entropy`].
    pub(crate) keys: Option<StdRng>,
    /// The stored refresh token's exchange under way: drawn before its
    /// first `refresh_keyed` is written (and stored with the token), sent
    /// again with every retry of that exchange, dropped with the token.
    pub(crate) retry: Option<ExchangeKey>,
    /// The server answered `refresh_keyed` as an unknown opcode (an older
    /// server): this client exchanges with plain `refresh` until its next
    /// connection.
    pub(crate) keyless: bool,
    /// `access` is an external OIDC provider's access token
    /// ([`Client::use_external_token`]): no refresh token, every request carries it.
    pub(crate) external: bool,
    /// The server refused the external token (419, 401): authenticated
    /// requests wait for [`Client::set_external_token`].
    pub(crate) external_refused: bool,
}

impl Auth {
    /// Whether the client holds a session: a refresh token, or an external access token.
    pub(crate) fn has_session(&self) -> bool {
        self.refresh.is_some() || (self.external && self.access.is_some())
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print tokens or passwords.
        f.debug_struct("Auth")
            .field("has_access", &self.access.is_some())
            .field("access_expires_ms", &self.access_expires_ms)
            .field("has_refresh", &self.refresh.is_some())
            .field("refresh_expires_ms", &self.refresh_expires_ms)
            .field("generation", &self.generation)
            .field("refresh_in_flight", &self.refresh_in_flight)
            .field("retry_attempt", &self.retry.as_ref().map(|r| r.attempt))
            .field("keyless", &self.keyless)
            .field("login", &self.login.as_ref().map(|l| l.login_id))
            .field("logging_out", &self.logging_out)
            .field("external", &self.external)
            .field("external_refused", &self.external_refused)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Writes `login` for the flow under way, if it is not written yet.
    pub(super) fn send_login(&mut self) {
        if self.conn.is_none() {
            return;
        }
        let Some(flow) = self.auth.login.as_mut() else { return };
        if flow.login_sent {
            return;
        }
        let Some(mut password) = flow.password.take() else { return };
        flow.login_sent = true;
        let mut body =
            RequestBody::Login(Login { username: flow.username.clone(), password: std::mem::take(&mut *password) });
        encode_request(&mut self.out, flow.login_id, flow.timestamp_ms, &mut body);
    }

    /// Writes `refresh` with the stored refresh token, unless one is under way.
    pub(super) fn start_refresh(&mut self, now: Now) {
        if self.conn.is_none() || self.auth.refresh_in_flight.is_some() {
            return;
        }
        let Some(token) = self.auth.refresh.clone() else { return };
        let Ok(id) = self.alloc_id() else { return };
        if token.is_empty() || token.len() > usize::from(self.config.limits.max_text) {
            self.fail(id, Opcode::Refresh, status::UNAUTHORIZED, "the stored refresh token is malformed", 0);
            return self.end_session("the stored refresh token is malformed: log in again");
        }
        self.auth.refresh_in_flight = Some(id);
        self.auth.refresh_retry_at = None;
        let body = match self.auth.keys.as_mut().filter(|_| !self.auth.keyless) {
            Some(keys) => {
                let retry = self
                    .auth
                    .retry
                    .get_or_insert_with(|| ExchangeKey { key: Zeroizing::new(keys.random()), attempt: 0 });
                // Both stored (the checkpoint before this turn's frames) before the request is sent.
                retry.attempt = retry.attempt.saturating_add(1);
                self.dirty = true;
                let (retry_key, attempt) = (Bytes::copy_from_slice(&*retry.key), retry.attempt);
                RequestBody::RefreshKeyed(RefreshKeyed { refresh_token: token, retry_key, attempt })
            }
            None => RequestBody::Refresh(Refresh { refresh_token: token }),
        };
        let message = Message::Request(Request { request_id: id, timestamp_ms: now.unix_ms, body });
        message.encode(&[], &mut self.out);
    }

    /// The server answered the `refresh_keyed` in flight as an unknown
    /// opcode: an older server. The exchange goes again as plain `refresh`.
    pub(super) fn on_keyed_refresh_unknown(&mut self, now: Now) {
        self.auth.keyless = true;
        self.auth.refresh_in_flight = None;
        self.start_refresh(now);
    }

    /// Answer to `login` (step one): on `in_progress`, step two goes out at once.
    pub(super) fn on_login_response(&mut self, now: Now, r: Response) {
        let Some(login_id) = self.auth.login.as_ref().map(|f| f.login_id) else {
            return;
        };
        if r.status == Status::InProgress {
            let Some(mut passphrase) = self.auth.login.as_mut().and_then(|f| f.passphrase.take()) else {
                return;
            };
            let Ok(id) = self.alloc_id() else {
                self.auth.login = None;
                return self.fail(login_id, Opcode::Login, status::INTERNAL, "request ids exhausted", 0);
            };
            if let Some(flow) = self.auth.login.as_mut() {
                flow.passphrase_id = Some(id);
            }
            let mut body = RequestBody::Passphrase(Passphrase { passphrase: std::mem::take(&mut *passphrase) });
            return encode_request(&mut self.out, id, now.unix_ms, &mut body);
        }
        self.auth.login = None;
        let (reason, retry) = error_of(&r);
        self.fail(login_id, Opcode::Login, r.code, &reason, retry);
    }

    /// Answer to `passphrase` (step two): tokens, or the login failed.
    pub(super) fn on_passphrase_response(&mut self, r: Response) {
        let Some(flow) = self.auth.login.take() else { return };
        match r.body {
            ResponseBody::Tokens(tokens) if r.status != Status::Error => {
                self.lanes.set_owner(&flow.username);
                self.username = Some(flow.username);
                self.dirty = true;
                self.on_tokens(flow.login_id, Opcode::Passphrase, tokens);
            }
            _ => {
                let (reason, retry) = error_of(&r);
                self.fail(flow.login_id, Opcode::Passphrase, r.code, &reason, retry);
            }
        }
    }

    /// Answer to `refresh`: new tokens, or the session ended (401, 403), or
    /// try again later (anything else: busy, duplicate login refused, ...).
    pub(super) fn on_refresh_response(&mut self, now: Now, r: Response) {
        self.auth.refresh_in_flight = None;
        if r.status != Status::Error
            && let ResponseBody::Tokens(tokens) = r.body
        {
            return self.on_tokens(r.request_id, Opcode::Refresh, tokens);
        }
        let (reason, retry_after_ms) = error_of(&r);
        self.fail(r.request_id, Opcode::Refresh, r.code, &reason, retry_after_ms);
        if matches!(r.code, status::UNAUTHORIZED | status::FORBIDDEN) {
            return self.end_session(&format!("session ended: {reason}"));
        }
        let wait = std::time::Duration::from_millis(retry_after_ms).max(self.config.refresh_retry);
        self.auth.refresh_retry_at = now.instant.checked_add(wait);
    }

    /// A new token pair from `passphrase` or `refresh`: keep only the newest,
    /// and send what waited for it.
    fn on_tokens(&mut self, request_id: u32, opcode: Opcode, t: Tokens) {
        let max_auth = usize::try_from(self.config.limits.max_auth).unwrap_or(usize::MAX);
        if t.access_token.is_empty() || t.access_token.len() > max_auth || t.refresh_token.is_empty() {
            let reason = "the server sent unusable tokens";
            self.fail(request_id, opcode, status::INTERNAL, reason, 0);
            return self.end_session(reason);
        }
        self.auth.access = Some(t.access_token);
        self.auth.refresh = Some(t.refresh_token);
        self.auth.retry = None;
        self.dirty = true;
        self.auth.access_expires_ms = t.access_expires_ms;
        self.auth.refresh_expires_ms = t.refresh_expires_ms;
        self.auth.generation += 1;
        self.auth.refresh_retry_at = None;
        if let Some(conn) = self.conn.as_mut() {
            conn.authed = true;
        }
        let (a, r) = (t.access_expires_ms, t.refresh_expires_ms);
        match self.username.clone() {
            Some(username) => self.events.push_back(ClientEvent::LoggedIn {
                request_id,
                username,
                access_expires_ms: a,
                refresh_expires_ms: r,
            }),
            None => self.auth.deferred = Some((request_id, a, r)),
        }
        self.flush();
    }

    /// The server refused the token of the outbox entry `id` (419, or 401).
    /// Returns true if the entry will be sent again after a refresh, false
    /// if the refusal must be reported.
    pub(super) fn retry_after_refusal(&mut self, now: Now, id: u32, r: &Response) -> bool {
        let generation = self.auth.generation;
        if self.auth.external {
            return self.external_refusal(id, r);
        }
        if self.auth.refresh.is_none() {
            return false;
        }
        let Some(entry) = self.outbox.get_mut(id) else {
            return false;
        };
        if entry.sent_gen < generation {
            // Sent with a token that has been replaced since: just send it again.
            entry.sent = false;
            self.flush();
            return true;
        }
        if entry.auth_refusals > 0 {
            return false;
        }
        entry.auth_refusals += 1;
        entry.sent = false;
        self.start_refresh(now);
        true
    }

    /// `logout` was answered: the session is over.
    pub(super) fn logged_out(&mut self, request_id: u32) {
        self.events.push_back(ClientEvent::LoggedOut { request_id });
        self.end_session("logged out");
    }

    /// Forgets the tokens. Authenticated requests still waiting can no
    /// longer be sent: one never written fails with 401; one written on an
    /// earlier connection may have been performed, so its outcome is
    /// reported as unknown (a waiting `logout` completes).
    pub(super) fn end_session(&mut self, reason: &str) {
        self.auth.access = None;
        self.auth.refresh = None;
        self.auth.retry = None;
        self.dirty = true;
        self.auth.refresh_in_flight = None;
        self.auth.refresh_retry_at = None;
        self.auth.logging_out = false;
        self.auth.deferred = None;
        self.auth.external = false;
        self.auth.external_refused = false;
        self.username = None;
        if let Some(conn) = self.conn.as_mut() {
            conn.authed = false;
        }
        for entry in self.outbox.drain_auth() {
            match (entry.origin, entry.opcode()) {
                (Origin::Ack | Origin::Hello, _) => {}
                (Origin::User, Opcode::Logout) => {
                    self.events.push_back(ClientEvent::LoggedOut { request_id: entry.id });
                }
                (Origin::User, opcode) if entry.written => {
                    self.events.push_back(ClientEvent::Indeterminate {
                        request_id: entry.id,
                        opcode,
                        reason: format!("{reason}; it was sent before and may have been performed"),
                    });
                }
                (Origin::User, opcode) => self.fail(entry.id, opcode, status::UNAUTHORIZED, reason, 0),
            }
        }
    }

    /// The connection is gone: a login written on it cannot go on.
    pub(super) fn auth_connection_lost(&mut self) {
        self.auth.refresh_in_flight = None;
        self.auth.deferred = None;
        if self.auth.login.as_ref().is_some_and(|f| f.login_sent)
            && let Some(flow) = self.auth.login.take()
        {
            let opcode = if flow.passphrase_id.is_some() { Opcode::Passphrase } else { Opcode::Login };
            let reason = "connection lost during login: log in again";
            self.fail(flow.login_id, opcode, status::UNAVAILABLE, reason, 0);
        }
    }

    pub(super) fn fail(&mut self, request_id: u32, opcode: Opcode, code: u16, reason: &str, retry_after_ms: u64) {
        self.events.push_back(ClientEvent::Failed {
            request_id,
            opcode,
            code,
            reason: reason.to_owned(),
            retry_after_ms,
        });
    }
}

/// External access tokens (an OIDC provider's, [`Client::use_external_token`]).
impl Client {
    /// Authenticates with an access token from an external OIDC provider
    /// (Keycloak, ...) instead of a password login. There is no refresh
    /// token: every authenticated request carries `jwt` in its auth part,
    /// the first one binds the connection (the server then sends
    /// `connected` and what is queued), and on each new connection the
    /// client sends a `fetch_key` of its own name (the name the token
    /// carries) so that queued items arrive even before the next command.
    ///
    /// When the server refuses the token (419 expired, 401 refused), the
    /// requests wait in the outbox and the client emits
    /// [`ClientEvent::ExternalTokenNeeded`] once: get a fresh token from
    /// the provider and hand it over with [`Client::set_external_token`];
    /// the waiting requests then go out again with their original ids.
    /// A first-time provider user must register an identity key
    /// ([`Client::set_identity_key`]) before anything else.
    ///
    /// Refused with [`CommandError::AlreadyLoggedIn`] while a password
    /// session is held, [`CommandError::LoginInProgress`] during a login,
    /// and [`CommandError::FieldTooLong`] for an empty token or one longer
    /// than the codec's `max_auth`.
    pub fn use_external_token(&mut self, now: Now, jwt: &str) -> Result<(), CommandError> {
        if self.auth.refresh.is_some() {
            return Err(CommandError::AlreadyLoggedIn);
        }
        if self.auth.login.is_some() {
            return Err(CommandError::LoginInProgress);
        }
        self.check_external(jwt)?;
        self.touch(now);
        let fresh = !self.auth.external;
        self.install_external(jwt);
        if fresh && self.conn.is_some() {
            self.send_hello(now);
        }
        self.flush();
        Ok(())
    }

    /// Replaces the external access token (the provider refreshed it, or
    /// after [`ClientEvent::ExternalTokenNeeded`]): requests waiting for a
    /// token go out with it. [`CommandError::NotLoggedIn`] without an
    /// external session ([`Client::use_external_token`] first).
    pub fn set_external_token(&mut self, now: Now, jwt: &str) -> Result<(), CommandError> {
        if !self.auth.external {
            return Err(CommandError::NotLoggedIn);
        }
        self.check_external(jwt)?;
        self.touch(now);
        self.install_external(jwt);
        self.flush();
        Ok(())
    }

    /// Whether the session is authenticated by an external provider's token.
    #[must_use]
    pub fn uses_external_token(&self) -> bool {
        self.auth.external
    }

    /// Whether the external token was refused and the client waits for
    /// [`Client::set_external_token`].
    #[must_use]
    pub fn external_token_needed(&self) -> bool {
        self.auth.external && self.auth.external_refused
    }

    fn check_external(&self, jwt: &str) -> Result<(), CommandError> {
        let max = self.config.limits.max_auth;
        let len = jwt.len() as u64;
        if jwt.is_empty() || len > u64::from(max) {
            return Err(CommandError::FieldTooLong { field: "access_token", len, max: u64::from(max) });
        }
        Ok(())
    }

    fn install_external(&mut self, jwt: &str) {
        self.auth.access = Some(jwt.to_owned());
        self.auth.external = true;
        self.auth.external_refused = false;
        self.auth.access_expires_ms = 0;
        self.auth.generation += 1;
        self.auth.logging_out = false;
    }

    /// On a new connection of an external session: an internal `fetch_key`
    /// of the token's own user, which binds the connection (one at a time:
    /// one still waiting from an earlier connection goes out again instead).
    pub(super) fn send_hello(&mut self, now: Now) {
        if self.outbox.has_origin(Origin::Hello) {
            return;
        }
        let Some(name) = self.auth.access.as_deref().and_then(token_username) else { return };
        if name.is_empty() || name.len() > usize::from(self.config.limits.max_name) {
            return;
        }
        let Ok(id) = self.alloc_id() else { return };
        let body = RequestBody::FetchKey(FetchKey { username: name });
        self.outbox.push(Entry::new(id, now.unix_ms, body, Origin::Hello));
    }

    /// The server refused the external token for the outbox entry `id`.
    /// Always true: the entry waits for a new token (or goes again at once
    /// if it was sent with a token replaced since).
    fn external_refusal(&mut self, id: u32, r: &Response) -> bool {
        let generation = self.auth.generation;
        let Some(entry) = self.outbox.get_mut(id) else {
            return false;
        };
        entry.sent = false;
        if entry.sent_gen < generation {
            self.flush();
            return true;
        }
        if !self.auth.external_refused {
            self.auth.external_refused = true;
            let (reason, _) = error_of(r);
            self.events.push_back(ClientEvent::ExternalTokenNeeded { code: r.code, reason });
        }
        true
    }
}

/// The user an (unverified) JWT names: `preferred_username`, else `sub`.
/// Only used to name the client's own `fetch_key`; the server verifies.
fn token_username(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = crate::jwt::b64_decode(payload.as_bytes())?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let name = claims.get("preferred_username").or_else(|| claims.get("sub"))?.as_str()?;
    Some(name.to_owned())
}

/// The reason and retry delay of an error response (or a note for an unexpected answer).
pub(super) fn error_of(r: &Response) -> (String, u64) {
    match &r.body {
        ResponseBody::Error(ErrorBody { reason, retry_after_ms }) => (reason.clone(), *retry_after_ms),
        _ => (format!("unexpected {} answer with code {}", r.status.name(), r.code), 0),
    }
}

/// Encodes a request carrying a password or passphrase into `out`, then
/// overwrites the secret in `body`, so no copy of it outlives the encoding
/// but the outbound bytes themselves.
fn encode_request(out: &mut bytes::BytesMut, request_id: u32, timestamp_ms: u64, body: &mut RequestBody) {
    let message = Message::Request(Request {
        request_id,
        timestamp_ms,
        body: std::mem::replace(body, RequestBody::Logout(crate::wire::Logout {})),
    });
    message.encode(&[], out);
    if let Message::Request(Request { body: mut sent, .. }) = message {
        zeroize_secrets(&mut sent);
    }
}

/// Overwrites the password and passphrase fields of a request body.
pub(crate) fn zeroize_secrets(body: &mut RequestBody) {
    match body {
        RequestBody::Login(l) => l.password.zeroize(),
        RequestBody::Passphrase(p) => p.passphrase.zeroize(),
        RequestBody::Register(r) => {
            r.password.zeroize();
            r.passphrase.zeroize();
        }
        _ => {}
    }
}
