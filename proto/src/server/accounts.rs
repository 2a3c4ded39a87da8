//! Accounts: registration, two-step login, tokens, authentication of every
//! request, logout.

use std::sync::Arc;

use bytes::Bytes;
use rand::RngExt as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::ratelimit::Blocked;
use super::session::{Bound, LoginStep};
use super::state::{Change, Rotation, SecretHash, TokenRecord, User};
use super::work::HashTask;
use super::{DuplicateLogin, Flow, Pending, Server, ServerEvent, SessionId, SourceKey, valid_name};
use crate::token::{self, TokenKind};
use crate::{
    Connected, EventBody, IdentityKey, Login, Now, Opcode, Passphrase, Refresh, Register, ResponseBody, Status, Tokens,
    code,
};

const INVALID_CREDENTIALS: &str = "invalid username or password";

impl Server {
    pub(super) fn register(&mut self, now: Now, session: SessionId, request_id: u32, b: Register) {
        let op = Opcode::Register;
        let reject = |s: &mut Server, code, reason: &str| s.reject(now, session, op, request_id, code, reason.into());
        if !valid_name(&b.username) {
            return reject(self, code::BAD_REQUEST, "username must be 3-32 characters of a-z 0-9 _ . -");
        }
        if b.password.len() < self.config.min_password_len {
            let reason = format!("password must be at least {} bytes", self.config.min_password_len);
            return reject(self, code::BAD_REQUEST, &reason);
        }
        if b.passphrase.split_whitespace().count() < self.config.min_passphrase_words {
            let reason = format!("passphrase must have at least {} words", self.config.min_passphrase_words);
            return reject(self, code::BAD_REQUEST, &reason);
        }
        if b.identity_key.is_empty() || b.identity_key.len() > self.config.max_identity_key {
            let reason = format!("identity key must be 1-{} bytes", self.config.max_identity_key);
            return reject(self, code::BAD_REQUEST, &reason);
        }
        if self.state.users.contains_key(&b.username) || self.reserved.contains(&b.username) {
            return reject(self, code::CONFLICT, "username already taken");
        }
        if self.accounts_full() {
            let reason = format!("this server has reached its limit of {} accounts", self.config.max_accounts);
            return reject(self, code::QUEUE_FULL, &reason);
        }
        if self.jobs_full() {
            return reject(self, code::UNAVAILABLE, "server busy: try again shortly");
        }
        let salts: [[u8; 16]; 2] = [self.rng.random(), self.rng.random()];
        let params = self.config.hash_params;
        let tasks = vec![
            HashTask { secret: Zeroizing::new(b.password.into_bytes()), salt: salts[0], params },
            HashTask { secret: Zeroizing::new(b.passphrase.into_bytes()), salt: salts[1], params },
        ];
        self.reserved.insert(b.username.clone());
        let pending =
            Pending::Register { session, request_id, username: b.username, identity_key: b.identity_key, salts };
        self.start_job(session, tasks, pending);
    }

    pub(super) fn login(&mut self, now: Now, session: SessionId, request_id: u32, b: Login) {
        let op = Opcode::Login;
        if self.sessions.get(&session).is_some_and(|s| s.user.is_some()) {
            let reason = "this connection is already logged in".into();
            return self.reject(now, session, op, request_id, code::CONFLICT, reason);
        }
        if self.rate_limited(now, session, op, request_id, &b.username)
            || self.busy_reject(now, session, op, request_id)
        {
            return;
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.login = LoginStep::Idle;
        }
        // An unknown user costs the same hash as a known one, with a salt
        // that is stable per name, so neither the answer nor its timing tells.
        // An account created by an OIDC provider has no password: it answers like an unknown user.
        let (salt, params, expected) = match self.state.users.get(&b.username).filter(|u| !u.is_external()) {
            Some(u) => (u.password.salt, u.password.params, Some(u.password.hash)),
            None => (self.dummy_salt(&b.username), self.config.hash_params, None),
        };
        let tasks = vec![HashTask { secret: Zeroizing::new(b.password.into_bytes()), salt, params }];
        let source = self.begin_attempt(now, session, &b.username);
        let pending = Pending::Login { session, request_id, username: b.username, source, expected };
        self.start_job(session, tasks, pending);
    }

    pub(super) fn passphrase(&mut self, now: Now, session: SessionId, request_id: u32, b: Passphrase) {
        let op = Opcode::Passphrase;
        let Some(LoginStep::PasswordOk { username }) = self.login_step(session).cloned() else {
            let reason = "send login (username and password) first".into();
            return self.reject(now, session, op, request_id, code::BAD_REQUEST, reason);
        };
        if self.rate_limited(now, session, op, request_id, &username) || self.busy_reject(now, session, op, request_id)
        {
            return;
        }
        let Some(user) = self.state.users.get(&username) else {
            return self.reject(now, session, op, request_id, code::UNAUTHORIZED, INVALID_CREDENTIALS.into());
        };
        let p = &user.passphrase;
        let tasks =
            vec![HashTask { secret: Zeroizing::new(b.passphrase.into_bytes()), salt: p.salt, params: p.params }];
        let expected = p.hash;
        let source = self.begin_attempt(now, session, &username);
        let pending = Pending::Passphrase { session, request_id, username, source, expected };
        self.start_job(session, tasks, pending);
    }

    pub(super) fn finish_job(&mut self, now: Now, pending: Pending, hashes: Option<Vec<[u8; 32]>>) {
        match pending {
            Pending::Register { session, request_id, username, identity_key, salts } => {
                self.reserved.remove(&username);
                // A client that left before the answer registered nothing.
                if !self.sessions.contains_key(&session) {
                    return;
                }
                let Some([pw, pp]) = hashes.as_deref() else {
                    let reason = "password hashing failed: check the server's argon2 parameters".into();
                    return self.reject(now, session, Opcode::Register, request_id, code::INTERNAL, reason);
                };
                let params = self.config.hash_params;
                let user = User {
                    password: SecretHash { salt: salts[0], hash: *pw, params },
                    passphrase: SecretHash { salt: salts[1], hash: *pp, params },
                    identity_key,
                    secret: self.rng.random(),
                    created_ms: now.unix_ms,
                };
                self.commit(Change::UserCreated { username: username.clone(), user });
                self.events.push_back(ServerEvent::Registered { username });
                self.respond(
                    now,
                    session,
                    Opcode::Register,
                    request_id,
                    Status::Valid,
                    code::CREATED,
                    ResponseBody::Empty,
                );
            }
            Pending::Login { session, request_id, username, source, expected } => {
                let ok = matches(&hashes, expected.as_ref());
                self.end_attempt(now, source, &username, !ok);
                if !ok {
                    return self.login_failed(now, session, Opcode::Login, request_id);
                }
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.login = LoginStep::PasswordOk { username };
                }
                let body = ResponseBody::Empty;
                self.respond(now, session, Opcode::Login, request_id, Status::InProgress, code::ACCEPTED, body);
            }
            Pending::Passphrase { session, request_id, username, source, expected } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.login = LoginStep::Idle;
                }
                let ok = matches(&hashes, Some(&expected));
                self.end_attempt(now, source, &username, !ok);
                if !ok {
                    return self.login_failed(now, session, Opcode::Passphrase, request_id);
                }
                if !self.sessions.contains_key(&session) {
                    return;
                }
                let family = self.state.last_family + 1;
                if let Err((code, reason)) = self.bind_check(session, &username) {
                    return self.reject(now, session, Opcode::Passphrase, request_id, code, reason);
                }
                let (tokens, _) = self.issue_tokens(now, &username, family);
                self.respond(now, session, Opcode::Passphrase, request_id, Status::Valid, code::OK, tokens);
                self.bind(now, session, request_id, username, family);
            }
        }
    }

    /// A password or passphrase of `username` is handed out for hashing: it
    /// takes a slot of the account's and the source's budgets until it returns.
    fn begin_attempt(&mut self, now: Now, session: SessionId, username: &str) -> SourceKey {
        let (window, burst) = (self.config.login_window, self.config.login_burst);
        let source = self.sessions.get(&session).map_or(SourceKey::Local, |s| s.source);
        self.limiter.begin(&username.to_owned(), now.instant, window, burst);
        if source != SourceKey::Local {
            self.sources.begin(&source, now.instant, window, self.config.login_source_burst);
        }
        source
    }

    /// The attempt of [`begin_attempt`](Self::begin_attempt) came back: a failure is recorded
    /// against the account and the source, whether or not its connection is still open.
    fn end_attempt(&mut self, now: Now, source: SourceKey, username: &str, failed: bool) {
        let (window, burst) = (self.config.login_window, self.config.login_burst);
        self.limiter.end(&username.to_owned(), now.instant, window, burst, failed);
        if source != SourceKey::Local {
            self.sources.end(&source, now.instant, window, self.config.login_source_burst, failed);
        }
    }

    fn login_failed(&mut self, now: Now, session: SessionId, op: Opcode, request_id: u32) {
        let (window, burst) = (self.config.login_window, self.config.login_burst);
        if let Some(s) = self.sessions.get_mut(&session) {
            s.failures.record(now.instant, window, burst);
        }
        let reason = if op == Opcode::Passphrase { "invalid passphrase" } else { INVALID_CREDENTIALS };
        self.reject(now, session, op, request_id, code::UNAUTHORIZED, reason.into());
    }

    /// Answers 429 with the retry time if the account, the source or the session is over its
    /// failure budget (attempts being hashed count), or the account has an attempt being hashed.
    fn rate_limited(&mut self, now: Now, session: SessionId, op: Opcode, request_id: u32, username: &str) -> bool {
        let (window, burst) = (self.config.login_window, self.config.login_burst);
        let source = self.sessions.get(&session).map_or(SourceKey::Local, |s| s.source);
        let by_account = self.limiter.blocked(&username.to_owned(), now.instant, window, burst, 1);
        let source_burst = self.config.login_source_burst;
        let by_source = match source {
            SourceKey::Local => None,
            _ => self.sources.blocked(&source, now.instant, window, source_burst, source_burst),
        };
        let by_session =
            self.sessions.get_mut(&session).and_then(|s| s.failures.blocked(now.instant, window, burst, 1));
        let Some(blocked) = [by_account, by_source, by_session].into_iter().flatten().max_by_key(|b| b.wait()) else {
            return false;
        };
        let retry_after_ms = blocked.wait().as_millis() as u64;
        let seconds = retry_after_ms.div_ceil(1000);
        let reason = match blocked {
            Blocked::Failures(_) => format!("too many failed attempts: retry in {seconds} s"),
            Blocked::InFlight => format!("another login attempt is being checked: retry in {seconds} s"),
        };
        self.events.push_back(ServerEvent::Rejected {
            session,
            opcode: op,
            code: code::RATE_LIMITED,
            reason: reason.clone(),
        });
        let body = ResponseBody::Error(crate::ErrorBody { reason, retry_after_ms });
        self.respond(now, session, op, request_id, Status::Error, code::RATE_LIMITED, body);
        true
    }

    /// Whether `max_accounts` accounts exist or are being registered.
    pub(super) fn accounts_full(&self) -> bool {
        self.state.users.len() + self.reserved.len() >= self.config.max_accounts
    }

    fn busy_reject(&mut self, now: Now, session: SessionId, op: Opcode, request_id: u32) -> bool {
        if self.jobs_full() {
            self.reject(now, session, op, request_id, code::UNAVAILABLE, "server busy: try again shortly".into());
            return true;
        }
        false
    }

    fn dummy_salt(&self, username: &str) -> [u8; 16] {
        let digest = Sha256::new().chain_update(self.dummy_key).chain_update(username.as_bytes()).finalize();
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&digest[..16]);
        salt
    }

    /// Issues an access and a refresh token in `family`. Returns the
    /// response body and the rotation record (hashes) of the new pair.
    fn issue_tokens(&mut self, now: Now, username: &str, family: u64) -> (ResponseBody, Rotation) {
        let access = token::generate(&mut self.rng, TokenKind::Access);
        let refresh = token::generate(&mut self.rng, TokenKind::Refresh);
        let access_expires_ms = now.unix_ms + self.config.access_ttl.as_millis() as u64;
        let refresh_expires_ms = now.unix_ms + self.config.refresh_ttl.as_millis() as u64;
        let rotation = Rotation {
            at_ms: now.unix_ms,
            refresh: token::hash(refresh.as_bytes()),
            access: token::hash(access.as_bytes()),
        };
        for (hash, kind, expires_ms) in [
            (rotation.access, TokenKind::Access, access_expires_ms),
            (rotation.refresh, TokenKind::Refresh, refresh_expires_ms),
        ] {
            let record = TokenRecord { kind, username: username.to_owned(), family, expires_ms, rotated: None };
            self.commit(Change::TokenIssued { hash, record });
        }
        let body = Tokens { access_token: access, refresh_token: refresh, access_expires_ms, refresh_expires_ms };
        (ResponseBody::Tokens(body), rotation)
    }

    pub(super) fn refresh(&mut self, now: Now, session: SessionId, request_id: u32, b: Refresh) {
        let op = Opcode::Refresh;
        let raw = b.refresh_token.as_bytes();
        let reject = |s: &mut Server, code, reason: String| s.reject(now, session, op, request_id, code, reason);
        match token::check(raw) {
            Ok(TokenKind::Refresh) => {}
            Ok(TokenKind::Access) => return reject(self, code::UNAUTHORIZED, "expected a refresh token (cfr_)".into()),
            Err(e) => return reject(self, code::UNAUTHORIZED, format!("malformed refresh token ({e})")),
        }
        let hash = token::hash(raw);
        let Some(record) = self.state.tokens.get(&hash).cloned() else {
            if self.state.revoked_refresh.contains_key(&hash) {
                let reason = "refresh token revoked: this login ended (logout, or a spent refresh token of it \
                              was presented again): log in again";
                return reject(self, code::UNAUTHORIZED, reason.into());
            }
            return reject(self, code::UNAUTHORIZED, "unknown or revoked refresh token: log in again".into());
        };
        if record.kind != TokenKind::Refresh {
            return reject(self, code::UNAUTHORIZED, "expected a refresh token (cfr_)".into());
        }
        if let Some(previous) = record.rotated {
            // A spent refresh token (a tombstone, kept as long as its login
            // lives, even past its own expiry) presented again is reuse: the
            // whole login is revoked. One exception: within the grace after
            // the exchange, on the very connection that made it, while the
            // pair it was exchanged for is unused, it is a retry whose answer
            // the client did not get: the unused pair is revoked and a fresh
            // one issued. A copy presented on any other connection, however
            // soon, revokes the login: the server cannot tell a thief from a
            // client that lost its connection, so it fails closed.
            let grace = self.config.refresh_retry_grace.as_millis() as u64;
            let within_grace = now.unix_ms < previous.at_ms.saturating_add(grace);
            let same_connection = self.sessions.get(&session).is_some_and(|s| s.refreshed == Some(hash));
            let successor_unused = self.state.tokens.get(&previous.refresh).is_some_and(|t| t.rotated.is_none());
            if within_grace && same_connection && successor_unused {
                self.revoke_tokens(now, vec![previous.refresh, previous.access]);
            } else {
                let reason = "refresh token reused: every token of this login is revoked".into();
                reject(self, code::UNAUTHORIZED, reason);
                // Every session of the login ends, this one too if it is one of them.
                let here = self.sessions.get(&session).and_then(|s| s.user.as_ref()).map(|b| b.family);
                let except = (here != Some(record.family)).then_some(session);
                return self.revoke_family(now, record.family, except);
            }
        }
        if record.expires_ms <= now.unix_ms {
            return reject(self, code::UNAUTHORIZED, "refresh token expired: log in again".into());
        }
        let bound = self.sessions.get(&session).and_then(|s| s.user.clone());
        if let Some(b) = &bound
            && *b.username != *record.username
        {
            return reject(self, code::FORBIDDEN, "refresh token belongs to another user".into());
        }
        if bound.is_none()
            && let Err((code, reason)) = self.bind_check(session, &record.username)
        {
            return reject(self, code, reason);
        }
        let (tokens, rotation) = self.issue_tokens(now, &record.username, record.family);
        self.commit(Change::TokenRotated { hash, rotation });
        if let Some(s) = self.sessions.get_mut(&session) {
            // The retry grace of this exchange belongs to this connection only.
            s.refreshed = Some(hash);
        }
        self.respond(now, session, op, request_id, Status::Valid, code::OK, tokens);
        match bound {
            Some(_) => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.token_cache = None;
                }
            }
            None => self.bind(now, session, request_id, record.username, record.family),
        }
    }

    pub(super) fn logout(&mut self, now: Now, session: SessionId, user: &str) -> Flow {
        let family = self.sessions.get(&session).and_then(|s| s.user.as_ref()).map(|b| b.family);
        if let Some(family) = family {
            self.revoke_family(now, family, Some(session));
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.user = None;
            s.token_cache = None;
        }
        if self.online.get(user) == Some(&session) {
            self.online.remove(user);
            self.notify_peer_gone(now, user);
        }
        Ok((Status::Finished, code::OK, ResponseBody::Empty))
    }

    /// Revokes single tokens and forgets them in the sessions that cached them.
    fn revoke_tokens(&mut self, _now: Now, hashes: Vec<[u8; 32]>) {
        for s in self.sessions.values_mut() {
            if s.token_cache.as_ref().is_some_and(|(t, _)| hashes.contains(&token::hash(t))) {
                s.token_cache = None;
            }
        }
        self.commit(Change::TokensRevoked { hashes });
    }

    /// Revokes a token family and closes the other sessions that used it.
    fn revoke_family(&mut self, now: Now, family: u64, except: Option<SessionId>) {
        self.commit(Change::FamilyRevoked { family });
        let using: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(id, s)| Some(**id) != except && s.user.as_ref().is_some_and(|b| b.family == family))
            .map(|(id, _)| *id)
            .collect();
        for id in using {
            self.close(now, id, code::UNAUTHORIZED, "tokens revoked: log in again".into());
        }
    }

    /// Checks the access token in a request's auth part; binds an
    /// unauthenticated session to its user. Returns the user.
    pub(super) fn authenticate(
        &mut self,
        now: Now,
        session: SessionId,
        request_id: u32,
        auth: &[u8],
    ) -> Result<Arc<str>, (u16, String)> {
        let s = self.sessions.get(&session).ok_or((code::INTERNAL, String::new()))?;
        if let (Some(bound), Some((cached, expires_ms))) = (&s.user, &s.token_cache)
            && cached[..] == *auth
        {
            if now.unix_ms < *expires_ms {
                return Ok(bound.username.clone());
            }
            if super::oidc::looks_like_jwt(auth) {
                return Err((code::TOKEN_EXPIRED, super::oidc::EXPIRED.into()));
            }
            return Err((code::TOKEN_EXPIRED, "access token expired: refresh it".into()));
        }
        if auth.is_empty() {
            return Err((code::UNAUTHORIZED, "missing access token: log in, then send it in the auth field".into()));
        }
        if self.config.oidc.is_some() && super::oidc::looks_like_jwt(auth) {
            return self.authenticate_oidc(now, session, request_id, auth);
        }
        match token::check(auth) {
            Ok(TokenKind::Access) => {}
            Ok(TokenKind::Refresh) => {
                return Err((code::UNAUTHORIZED, "a refresh token cannot authenticate requests: send refresh".into()));
            }
            Err(e) => return Err((code::UNAUTHORIZED, format!("malformed access token ({e})"))),
        }
        let record = match self.state.tokens.get(&token::hash(auth)) {
            Some(r) if r.kind == TokenKind::Access => r.clone(),
            _ => return Err((code::UNAUTHORIZED, "unknown or revoked access token".into())),
        };
        if record.expires_ms <= now.unix_ms {
            return Err((code::TOKEN_EXPIRED, "access token expired: refresh it".into()));
        }
        match s.username() {
            Some(u) if u != record.username => {
                return Err((code::FORBIDDEN, "access token belongs to another user".into()));
            }
            Some(_) => {}
            None => {
                self.bind_check(session, &record.username)?;
                self.bind(now, session, request_id, record.username.clone(), record.family);
            }
        }
        let s = self.sessions.get_mut(&session).ok_or((code::INTERNAL, String::new()))?;
        s.token_cache = Some((Bytes::copy_from_slice(auth), record.expires_ms));
        let user = s.user.as_ref().map(|b| b.username.clone());
        user.ok_or((code::INTERNAL, String::new()))
    }

    /// Whether `session` may become `username` under the duplicate-login policy.
    pub(super) fn bind_check(&self, session: SessionId, username: &str) -> Result<(), (u16, String)> {
        match self.online.get(username) {
            Some(other) if *other != session && self.config.duplicate_login == DuplicateLogin::Refuse => {
                Err((code::CONFLICT, "already logged in on another connection".into()))
            }
            _ => Ok(()),
        }
    }

    /// Makes `session` act for `username`: replaces an older session (by
    /// policy), sends `connected`, then everything queued for the user.
    pub(super) fn bind(&mut self, now: Now, session: SessionId, request_id: u32, username: String, family: u64) {
        let previous = self.online.insert(username.clone(), session);
        if let Some(old) = previous
            && old != session
        {
            self.close(now, old, code::CONFLICT, "replaced by a newer login".into());
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.user = Some(Bound { username: Arc::from(username.as_str()), family });
            s.login = LoginStep::Idle;
            s.token_cache = None;
        }
        self.events.push_back(ServerEvent::LoggedIn { session, username: username.clone() });
        let queued = self.state.queued.get(&username).copied().unwrap_or(0)
            + self.state.notices.get(&username).map_or(0, Vec::len);
        let body = EventBody::Connected(Connected { username: username.clone(), queued: queued as u32 });
        self.send_event(now, session, request_id, body);
        self.deliver_queued(now, session, &username);
    }

    pub(super) fn fetch_key(&mut self, username: &str) -> Flow {
        let user = self.state.users.get(username).ok_or((code::NOT_FOUND, format!("no user {username}")))?;
        let body = IdentityKey { username: username.to_owned(), identity_key: user.identity_key.clone() };
        Ok((Status::Valid, code::OK, ResponseBody::IdentityKey(body)))
    }

    pub(super) fn set_identity_key(&mut self, user: &str, identity_key: Bytes) -> Flow {
        if identity_key.is_empty() || identity_key.len() > self.config.max_identity_key {
            return Err((code::BAD_REQUEST, format!("identity key must be 1-{} bytes", self.config.max_identity_key)));
        }
        if self.state.users.get(user).is_some_and(|u| !u.identity_key.is_empty()) {
            return Err((code::CONFLICT, "this account already has an identity key".into()));
        }
        self.commit(Change::IdentityKeySet { username: user.to_owned(), identity_key });
        Ok((Status::Valid, code::OK, ResponseBody::Empty))
    }
}

/// Whether the job computed exactly one hash equal (in constant time) to `expected`.
fn matches(hashes: &Option<Vec<[u8; 32]>>, expected: Option<&[u8; 32]>) -> bool {
    match (hashes.as_deref(), expected) {
        (Some([h]), Some(e)) => bool::from(h.ct_eq(e)),
        _ => false,
    }
}
