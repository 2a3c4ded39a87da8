//! Accounts: registration, two-step login, tokens, authentication of every
//! request, logout.
//!
//! The flows here wire the parts together (the desk's checks and jobs, the
//! journal's tokens, who is online); what belongs to one part is the
//! part's: the guess limits and jobs in flight to the [`Desk`](super::desk::Desk),
//! sessions and the online map to [`Presence`](super::presence::Presence),
//! token records to the [`AccountBook`](super::state::AccountBook).

use std::sync::Arc;

use bytes::Bytes;
use rand::RngExt as _;
use rand::rngs::StdRng;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::desk::{Desk, Pending};
use super::outbox::Journal;
use super::refusal::{Flow, Refusal, Reply};
use super::session::LoginStep;
use super::state::{Change, RetryKey, Rotation, SecretHash, State, TokenRecord, User};
use super::work::HashTask;
use super::{DuplicateLogin, NAME_RULE, Server, ServerConfig, ServerLog, SessionId, valid_name};
use crate::Now;
use crate::token::{self, TokenKind};
use crate::wire::{
    Connected, EventBody, IdentityKey, Login, Opcode, Passphrase, RETRY_KEY_LEN, Register, ResponseBody, Status,
    Tokens, status,
};

const INVALID_CREDENTIALS: &str = "invalid username or password";

/// What an anonymous flow answers: `Some` now, `None` later (when its job returns) or already.
type Answer = Result<Option<Reply>, Refusal>;

/// Whether a registration may start: the fields are valid, the name free, and there is room.
pub(super) fn check_registration(
    state: &State,
    desk: &Desk,
    config: &ServerConfig,
    b: &Register,
) -> Result<(), Refusal> {
    if !valid_name(&b.username) {
        return Err(Refusal::BadRequest(format!("username must be {NAME_RULE}")));
    }
    if b.password.len() < config.min_password_len {
        return Err(Refusal::BadRequest(format!("password must be at least {} bytes", config.min_password_len)));
    }
    if b.passphrase.split_whitespace().count() < config.min_passphrase_words {
        let reason = format!("passphrase must have at least {} words", config.min_passphrase_words);
        return Err(Refusal::BadRequest(reason));
    }
    if b.identity_key.is_empty() || b.identity_key.len() > config.max_identity_key {
        return Err(Refusal::BadRequest(format!("identity key must be 1-{} bytes", config.max_identity_key)));
    }
    if state.user(&b.username).is_some() || desk.is_reserved(&b.username) {
        return Err(Refusal::Conflict("username already taken".into()));
    }
    if desk.accounts_full(state, config) {
        return Err(Desk::accounts_full_refusal(config));
    }
    desk.check_capacity(config)
}

/// What a spent refresh token presented again is ([`Server::spent`]).
enum Spent {
    /// A retry whose answer was lost: the unused pair goes, a fresh one is issued.
    Retry,
    /// Refused, nothing revoked.
    Refused(Refusal),
    /// Reuse: the login is revoked.
    Reuse,
}

/// A token exchange: `refresh`, or `refresh_keyed` with its retry key.
pub(super) struct Exchange<'a> {
    pub(super) opcode: Opcode,
    pub(super) refresh_token: &'a str,
    /// The retry key and the attempt number (`refresh_keyed`).
    pub(super) retry_key: Option<(&'a [u8], u32)>,
}

/// Issues an access and a refresh token in `family`. Returns the response body and the
/// rotation record (hashes) of the new pair.
pub(super) fn issue_tokens(
    now: Now,
    journal: &mut Journal,
    rng: &mut StdRng,
    config: &ServerConfig,
    username: &str,
    family: u64,
) -> (ResponseBody, Rotation) {
    // A split state's tokens name their partition (the router reads it, docs/PARTITIONS.md).
    let (access, refresh) = if config.partitions.is_split() {
        let p = config.partitions.index;
        (token::generate_in(rng, TokenKind::Access, p), token::generate_in(rng, TokenKind::Refresh, p))
    } else {
        (token::generate(rng, TokenKind::Access), token::generate(rng, TokenKind::Refresh))
    };
    let access_expires_ms = now.unix_ms + config.access_ttl.as_millis() as u64;
    let refresh_expires_ms = now.unix_ms + config.refresh_ttl.as_millis() as u64;
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
        journal.commit(Change::TokenIssued { hash, record });
    }
    let body = Tokens { access_token: access, refresh_token: refresh, access_expires_ms, refresh_expires_ms };
    (ResponseBody::Tokens(body), rotation)
}

pub(super) fn fetch_key(state: &State, username: &str) -> Flow {
    let user = state.user(username).ok_or_else(|| Refusal::NotFound(format!("no user {username}")))?;
    let body = IdentityKey { username: username.to_owned(), identity_key: user.identity_key.clone() };
    Ok(Reply::ok(ResponseBody::IdentityKey(body)))
}

pub(super) fn set_identity_key(journal: &mut Journal, config: &ServerConfig, user: &str, identity_key: Bytes) -> Flow {
    if identity_key.is_empty() || identity_key.len() > config.max_identity_key {
        return Err(Refusal::BadRequest(format!("identity key must be 1-{} bytes", config.max_identity_key)));
    }
    if journal.state().user(user).is_some_and(|u| !u.identity_key.is_empty()) {
        return Err(Refusal::Conflict("this account already has an identity key".into()));
    }
    journal.commit(Change::IdentityKeySet { username: user.to_owned(), identity_key });
    Ok(Reply::ok(ResponseBody::Empty))
}

/// Whether the job computed exactly one hash equal (in constant time) to `expected`.
fn matches(hashes: &Option<Vec<[u8; 32]>>, expected: Option<&[u8; 32]>) -> bool {
    match (hashes.as_deref(), expected) {
        (Some([h]), Some(e)) => bool::from(h.ct_eq(e)),
        _ => false,
    }
}

impl Server {
    pub(super) fn register(&mut self, _now: Now, session: SessionId, request_id: u32, b: Register) -> Answer {
        check_registration(self.journal.state(), &self.desk, &self.config, &b)?;
        let salts: [[u8; 16]; 2] = [self.rng.random(), self.rng.random()];
        let params = self.config.hash_params;
        let tasks = vec![
            HashTask { secret: Zeroizing::new(b.password.into_bytes()), salt: salts[0], params },
            HashTask { secret: Zeroizing::new(b.passphrase.into_bytes()), salt: salts[1], params },
        ];
        self.desk.reserve(&b.username);
        let pending =
            Pending::Register { session, request_id, username: b.username, identity_key: b.identity_key, salts };
        self.start_job(session, tasks, pending);
        Ok(None)
    }

    /// Checks the account's, the source's and the session's guess budgets, then the job capacity.
    fn check_attempt(&mut self, now: Now, session: SessionId, username: &str) -> Result<(), Refusal> {
        let s = self.presence.get_mut(session);
        let source = s.as_ref().map_or(super::SourceKey::Local, |s| s.source);
        let failures = s.map(|s| &mut s.failures);
        self.desk.check_attempt(now.instant, &self.config, username, source, failures)?;
        self.desk.check_capacity(&self.config)
    }

    /// Where `session` comes from; its attempt takes a slot of the budgets.
    fn begin_attempt(&mut self, now: Now, session: SessionId, username: &str) -> super::SourceKey {
        let source = self.presence.get(session).map_or(super::SourceKey::Local, |s| s.source);
        self.desk.begin_attempt(now.instant, &self.config, username, source);
        source
    }

    pub(super) fn login(&mut self, now: Now, session: SessionId, request_id: u32, b: Login) -> Answer {
        if self.presence.bound(session).is_some() {
            return Err(Refusal::Conflict("this connection is already logged in".into()));
        }
        self.check_attempt(now, session, &b.username)?;
        if let Some(s) = self.presence.get_mut(session) {
            s.login = LoginStep::Idle;
        }
        // An unknown user costs the same hash as a known one, with a salt
        // that is stable per name, so neither the answer nor its timing tells.
        // An account created by an OIDC provider has no password: it answers like an unknown user.
        let (salt, params, expected) = match self.journal.state().user(&b.username).filter(|u| !u.is_external()) {
            Some(u) => (u.password.salt, u.password.params, Some(u.password.hash)),
            None => (self.desk.dummy_salt(&b.username), self.config.hash_params, None),
        };
        let tasks = vec![HashTask { secret: Zeroizing::new(b.password.into_bytes()), salt, params }];
        let source = self.begin_attempt(now, session, &b.username);
        let pending = Pending::Login { session, request_id, username: b.username, source, expected };
        self.start_job(session, tasks, pending);
        Ok(None)
    }

    pub(super) fn passphrase(&mut self, now: Now, session: SessionId, request_id: u32, b: Passphrase) -> Answer {
        let Some(LoginStep::PasswordOk { username }) = self.presence.get(session).map(|s| s.login.clone()) else {
            return Err(Refusal::BadRequest("send login (username and password) first".into()));
        };
        self.check_attempt(now, session, &username)?;
        let Some(user) = self.journal.state().user(&username) else {
            return Err(Refusal::Unauthorized(INVALID_CREDENTIALS.into()));
        };
        let p = &user.passphrase;
        let tasks =
            vec![HashTask { secret: Zeroizing::new(b.passphrase.into_bytes()), salt: p.salt, params: p.params }];
        let expected = p.hash;
        let source = self.begin_attempt(now, session, &username);
        let pending = Pending::Passphrase { session, request_id, username, source, expected };
        self.start_job(session, tasks, pending);
        Ok(None)
    }

    pub(super) fn finish_job(&mut self, now: Now, pending: Pending, hashes: Option<Vec<[u8; 32]>>) {
        match pending {
            Pending::Register { session, request_id, username, identity_key, salts } => {
                self.desk.release(&username);
                // A client that left before the answer registered nothing.
                if !self.presence.contains(session) {
                    return;
                }
                let Some([pw, pp]) = hashes.as_deref() else {
                    let reason = "password hashing failed: check the server's argon2 parameters".into();
                    let refusal = Refusal::Internal(reason);
                    return self.outbox.refuse(now, session, Opcode::Register, request_id, refusal);
                };
                let params = self.config.hash_params;
                let user = User {
                    password: SecretHash { salt: salts[0], hash: *pw, params },
                    passphrase: SecretHash { salt: salts[1], hash: *pp, params },
                    identity_key,
                    secret: self.rng.random(),
                    created_ms: now.unix_ms,
                };
                self.journal.commit(Change::UserCreated { username: username.clone(), user });
                self.outbox.event(ServerLog::Registered { username });
                self.outbox.respond(now, session, Opcode::Register, request_id, Reply::created());
            }
            Pending::Login { session, request_id, username, source, expected } => {
                let ok = matches(&hashes, expected.as_ref());
                self.desk.end_attempt(now.instant, &self.config, &username, source, !ok);
                if !ok {
                    return self.login_failed(now, session, Opcode::Login, request_id);
                }
                if let Some(s) = self.presence.get_mut(session) {
                    s.login = LoginStep::PasswordOk { username };
                }
                let reply = Reply { status: Status::InProgress, code: status::ACCEPTED, body: ResponseBody::Empty };
                self.outbox.respond(now, session, Opcode::Login, request_id, reply);
            }
            Pending::Passphrase { session, request_id, username, source, expected } => {
                if let Some(s) = self.presence.get_mut(session) {
                    s.login = LoginStep::Idle;
                }
                let ok = matches(&hashes, Some(&expected));
                self.desk.end_attempt(now.instant, &self.config, &username, source, !ok);
                if !ok {
                    return self.login_failed(now, session, Opcode::Passphrase, request_id);
                }
                if !self.presence.contains(session) {
                    return;
                }
                let family = self.journal.state().accounts().last_family() + 1;
                if let Err(refusal) = self.bind_check(session, &username) {
                    return self.outbox.refuse(now, session, Opcode::Passphrase, request_id, refusal);
                }
                let (tokens, _) = issue_tokens(now, &mut self.journal, &mut self.rng, &self.config, &username, family);
                self.outbox.respond(now, session, Opcode::Passphrase, request_id, Reply::ok(tokens));
                self.bind(now, session, request_id, username, family);
            }
        }
    }

    fn login_failed(&mut self, now: Now, session: SessionId, op: Opcode, request_id: u32) {
        let (window, burst) = (self.config.login_window, self.config.login_burst);
        if let Some(s) = self.presence.get_mut(session) {
            s.failures.record(now.instant, window, burst);
        }
        let reason = if op == Opcode::Passphrase { "invalid passphrase" } else { INVALID_CREDENTIALS };
        self.outbox.refuse(now, session, op, request_id, Refusal::Unauthorized(reason.into()));
    }

    /// `refresh` (no `retry_key`) and `refresh_keyed`.
    pub(super) fn refresh(&mut self, now: Now, session: SessionId, request_id: u32, exchange: Exchange<'_>) -> Answer {
        let Exchange { opcode, refresh_token, retry_key } = exchange;
        let raw = refresh_token.as_bytes();
        let unauthorized = |reason: &str| Err(Refusal::Unauthorized(reason.into()));
        let retry = match retry_key {
            None => None,
            Some((key, attempt)) if key.len() == RETRY_KEY_LEN => {
                Some(RetryKey { key: token::hash(key), attempt, answered: false })
            }
            Some((key, _)) => {
                let reason = format!("retry_key must be {RETRY_KEY_LEN} bytes, not {}", key.len());
                return Err(Refusal::BadRequest(reason));
            }
        };
        match token::check(raw) {
            Ok(TokenKind::Refresh) => {}
            Ok(TokenKind::Access) => return unauthorized("expected a refresh token (cfr_)"),
            Err(e) => return unauthorized(&format!("malformed refresh token ({e})")),
        }
        // A split state: another partition's token is another user's, or misrouted.
        if let Some(p) = self.config.partitions.foreign_token(raw) {
            return Err(if self.presence.bound(session).is_some() {
                Refusal::Forbidden("refresh token belongs to another user".into())
            } else {
                let here = self.config.partitions.index;
                Refusal::BadRequest(format!("the refresh token is partition {p}'s, not this one's ({here})"))
            });
        }
        let hash = token::hash(raw);
        let accounts = self.journal.state().accounts();
        let Some(record) = accounts.token(&hash).cloned() else {
            if accounts.is_revoked_refresh(&hash) {
                return unauthorized(
                    "refresh token revoked: this login ended (logout, or a spent refresh token of it was \
                     presented again): log in again",
                );
            }
            return unauthorized("unknown or revoked refresh token: log in again");
        };
        if record.kind != TokenKind::Refresh {
            return unauthorized("expected a refresh token (cfr_)");
        }
        // A spent refresh token presented again: a retry, a refusal, or reuse.
        let retry_of = match record.rotated {
            None => None,
            Some(previous) => match self.spent(now, session, hash, previous, retry) {
                Spent::Retry => Some(previous),
                Spent::Refused(refusal) => return Err(refusal),
                Spent::Reuse => {
                    let refusal =
                        Refusal::Unauthorized("refresh token reused: every token of this login is revoked".into());
                    self.outbox.refuse(now, session, opcode, request_id, refusal);
                    // Every session of the login ends, this one too if it is one of them.
                    let here = self.presence.bound(session).map(|b| b.family);
                    let except = (here != Some(record.family)).then_some(session);
                    self.revoke_family(now, record.family, except);
                    return Ok(None);
                }
            },
        };
        if record.expires_ms <= now.unix_ms {
            return unauthorized("refresh token expired: log in again");
        }
        let bound = self.presence.bound(session).cloned();
        if let Some(b) = &bound
            && *b.username != *record.username
        {
            return Err(Refusal::Forbidden("refresh token belongs to another user".into()));
        }
        if bound.is_none() {
            self.bind_check(session, &record.username)?;
        }
        // Every check passed: only now is the unused pair of a retried exchange cancelled.
        if let Some(previous) = retry_of {
            self.revoke_tokens(vec![previous.access]);
        }
        let (tokens, mut rotation) =
            issue_tokens(now, &mut self.journal, &mut self.rng, &self.config, &record.username, record.family);
        if let Some(previous) = retry_of {
            // The grace runs from the first exchange: retries never extend it.
            rotation.at_ms = previous.at_ms;
            // The cancelled refresh token stays, as a token spent into the new
            // pair: whoever presents it got the answer after all, so the retry
            // was not its own (a copy of its profile made it), and that
            // presentation is reuse, which revokes the login.
            self.journal.commit(Change::TokenRotated { hash: previous.refresh, rotation });
        }
        self.journal.commit(match retry {
            None => Change::TokenRotated { hash, rotation },
            Some(retry) => Change::TokenRotatedKeyed { hash, rotation, retry },
        });
        if let Some(s) = self.presence.get_mut(session) {
            // A retry on this connection needs no key.
            s.refreshed = Some(hash);
        }
        self.outbox.respond(now, session, opcode, request_id, Reply::ok(tokens));
        match bound {
            Some(_) => {
                if let Some(s) = self.presence.get_mut(session) {
                    s.token_cache = None;
                }
            }
            None => self.bind(now, session, request_id, record.username, record.family),
        }
        Ok(None)
    }

    /// What the spent refresh token `hash`, exchanged for `previous`, is
    /// when presented again (with `retry`, the retry key of
    /// `refresh_keyed`). A spent token (a tombstone, kept as long as its
    /// login lives, even past its own expiry) presented again is reuse: the
    /// whole login is revoked. The exception is a retry whose answer the
    /// client did not get, within the grace after the first exchange, while
    /// the pair it was exchanged for is unused, proven either by coming on
    /// the very connection that made the exchange, or by the exchange's
    /// retry key with a later attempt (the client drew the key and stored it
    /// before sending, so only the holder of the profile as it was then
    /// knows it) once the connection that made the exchange is gone (while
    /// it is open, its answer may well have arrived) and while the new pair
    /// has authenticated nothing (once it has, the answer arrived). An
    /// earlier attempt with the key is a late copy of the client's own:
    /// refused, nothing revoked. Anything else fails closed: the server
    /// cannot tell a thief from the client.
    fn spent(
        &self,
        now: Now,
        session: SessionId,
        hash: [u8; 32],
        previous: Rotation,
        retry: Option<RetryKey>,
    ) -> Spent {
        let grace = self.config.refresh_retry_grace.as_millis() as u64;
        if now.unix_ms >= previous.at_ms.saturating_add(grace) {
            return Spent::Reuse;
        }
        let accounts = self.journal.state().accounts();
        let kept = accounts.retry_key(&previous.access).copied();
        let keyed = retry.zip(kept).filter(|(p, k)| bool::from(p.key.ct_eq(&k.key)));
        if let Some((presented, kept)) = keyed
            && presented.attempt <= kept.attempt
        {
            // The client's own earlier attempt, sent on a connection it gave
            // up on, arriving after a later one made the exchange (and maybe
            // after its next exchange too): whoever holds the key gains
            // nothing from a refusal.
            let reason = format!(
                "attempt {} of this exchange arrived after attempt {} made it: ignored, nothing revoked",
                presented.attempt, kept.attempt
            );
            return Spent::Refused(Refusal::Conflict(reason));
        }
        if accounts.token(&previous.refresh).is_none_or(|t| t.rotated.is_some()) {
            return Spent::Reuse; // the new refresh token was exchanged: the answer arrived
        }
        if kept.is_some_and(|k| k.answered) {
            return Spent::Reuse; // the new pair authenticated a request: the answer arrived
        }
        if self.presence.get(session).is_some_and(|s| s.refreshed == Some(hash)) {
            return Spent::Retry;
        }
        if keyed.is_none() {
            return Spent::Reuse; // no key, or another key
        }
        if self.presence.exchanged_elsewhere(hash, session) {
            let reason = "this exchange was answered on a connection that is still open: nothing revoked; \
                          retry once it is gone";
            return Spent::Refused(Refusal::Conflict(reason.into()));
        }
        Spent::Retry
    }

    pub(super) fn logout(&mut self, now: Now, session: SessionId, user: &str) -> Flow {
        if let Some(family) = self.presence.bound(session).map(|b| b.family) {
            self.revoke_family(now, family, Some(session));
        }
        if self.presence.unbind(session).is_some() {
            self.mail(now).notify_peer_gone(user);
        }
        Ok(Reply::finished(ResponseBody::Empty))
    }

    /// Revokes single tokens and forgets them in the sessions that cached them.
    fn revoke_tokens(&mut self, hashes: Vec<[u8; 32]>) {
        self.presence.forget_tokens(|t| hashes.contains(&token::hash(t)));
        self.journal.commit(Change::TokensRevoked { hashes });
    }

    /// Revokes a token family and closes the other sessions that used it.
    fn revoke_family(&mut self, now: Now, family: u64, except: Option<SessionId>) {
        self.journal.commit(Change::FamilyRevoked { family });
        for id in self.presence.of_family(family, except) {
            self.close(now, id, status::UNAUTHORIZED, "tokens revoked: log in again".into());
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
    ) -> Result<Arc<str>, Refusal> {
        let internal = || Refusal::Internal(String::new());
        let s = self.presence.get(session).ok_or_else(internal)?;
        if let (Some(bound), Some((cached, expires_ms))) = (&s.user, &s.token_cache)
            && cached[..] == *auth
        {
            if now.unix_ms < *expires_ms {
                return Ok(bound.username.clone());
            }
            if super::oidc::looks_like_jwt(auth) {
                return Err(Refusal::TokenExpired(super::oidc::EXPIRED.into()));
            }
            return Err(Refusal::TokenExpired("access token expired: refresh it".into()));
        }
        if auth.is_empty() {
            return Err(Refusal::Unauthorized("missing access token: log in, then send it in the auth field".into()));
        }
        if self.config.oidc.is_some() && super::oidc::looks_like_jwt(auth) {
            return self.authenticate_oidc(now, session, request_id, auth);
        }
        match token::check(auth) {
            Ok(TokenKind::Access) => {}
            Ok(TokenKind::Refresh) => {
                let reason = "a refresh token cannot authenticate requests: send refresh";
                return Err(Refusal::Unauthorized(reason.into()));
            }
            Err(e) => return Err(Refusal::Unauthorized(format!("malformed access token ({e})"))),
        }
        // A split state: a token of another partition is not unknown, it is another user's
        // (this session's user lives here), or misrouted (docs/PARTITIONS.md).
        if let Some(p) = self.config.partitions.foreign_token(auth) {
            return Err(if s.user.is_some() {
                Refusal::Forbidden("access token belongs to another user".into())
            } else {
                let here = self.config.partitions.index;
                Refusal::BadRequest(format!("the access token is partition {p}'s, not this one's ({here})"))
            });
        }
        let hash = token::hash(auth);
        let record = match self.journal.state().accounts().token(&hash) {
            Some(r) if r.kind == TokenKind::Access => r.clone(),
            _ => return Err(Refusal::Unauthorized("unknown or revoked access token".into())),
        };
        if record.expires_ms <= now.unix_ms {
            return Err(Refusal::TokenExpired("access token expired: refresh it".into()));
        }
        match s.username() {
            Some(u) if u != record.username => {
                return Err(Refusal::Forbidden("access token belongs to another user".into()));
            }
            Some(_) => {}
            None => {
                self.bind_check(session, &record.username)?;
                self.bind(now, session, request_id, record.username.clone(), record.family);
            }
        }
        if self.journal.state().accounts().retry_key(&hash).is_some_and(|k| !k.answered) {
            // The pair of a keyed exchange in use: its answer arrived, so the exchange is never retried.
            self.journal.commit(Change::ExchangeAnswered { access: hash });
        }
        let s = self.presence.get_mut(session).ok_or_else(internal)?;
        s.token_cache = Some((Bytes::copy_from_slice(auth), record.expires_ms));
        s.user.as_ref().map(|b| b.username.clone()).ok_or_else(internal)
    }

    /// Whether `session` may become `username` under the duplicate-login policy.
    pub(super) fn bind_check(&self, session: SessionId, username: &str) -> Result<(), Refusal> {
        match self.presence.online(username) {
            Some(other) if other != session && self.config.duplicate_login == DuplicateLogin::Refuse => {
                Err(Refusal::Conflict("already logged in on another connection".into()))
            }
            _ => Ok(()),
        }
    }

    /// Makes `session` act for `username`: replaces an older session (by
    /// policy), sends `connected`, then everything queued for the user.
    pub(super) fn bind(&mut self, now: Now, session: SessionId, request_id: u32, username: String, family: u64) {
        if let Some(old) = self.presence.bind(session, &username, family) {
            self.close(now, old, status::CONFLICT, "replaced by a newer login".into());
        }
        self.outbox.event(ServerLog::LoggedIn { session, username: username.clone() });
        let lanes = self.journal.state().lanes();
        let queued = lanes.queued_for(&username) + lanes.notices(&username).len();
        let body = EventBody::Connected(Connected { username: username.clone(), queued: queued as u32 });
        self.outbox.send_event(now, session, request_id, body);
        self.mail(now).deliver_queued(session, &username);
    }
}
