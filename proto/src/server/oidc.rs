//! Access tokens of an external OIDC provider (seed 000, Keycloak) in the
//! auth part of a request.
//!
//! A JWT (three dot-separated parts, not a `cfa_`/`cfr_` token) is verified
//! by the server's [`JwtValidator`] against the provider's JWK Set as an
//! **access** token of the configured issuer and audience (and `azp`, when a
//! list is set). The validator owns the JWK Set's refresh: periodically
//! (`OidcConfig::jwks_refresh`) and when a token names an unknown `kid`, at
//! most once per `OidcConfig::jwks_min_interval`, it asks the adapter for
//! the document through [`Server::poll_jwks_fetch`]. The user is `preferred_username`, else `sub`, and must satisfy the
//! username rule. A first-time user gets an account without password or
//! passphrase ([`SecretHash::EXTERNAL`]) and without identity key: every
//! request but `set_identity_key`, `fetch_key` and `logout` is refused with
//! 403 until it registers one. A name already taken by a password account is
//! refused (403): the provider cannot take over a local account.
//!
//! Retries are recognised within a token family (see `Server::replay`). An
//! OIDC login has no confab tokens, so its family is kept in
//! [`AccountBook::oidc_login`](super::state::AccountBook::oidc_login) under a key naming the
//! *login*, not the connection: the provider's SSO session id (`sid`, which
//! Keycloak puts in every token of one login and keeps across refreshes;
//! `session_state` in older Keycloak), else the subject. Every connection of
//! that login is bound under the same family, so a request whose answer was
//! lost with its connection is answered from the record when it is retried
//! on the next one, never performed twice. See docs/AUTH.md.

use crate::Instant;
use std::sync::Arc;

use bytes::Bytes;
use rand::RngExt as _;
use rand::rngs::StdRng;
use sha2::{Digest, Sha256};

use super::desk::Desk;
use super::outbox::{Journal, Outbox};
use super::refusal::Refusal;
use super::state::{Change, OidcLogin, SecretHash, User};
use super::{NAME_RULE, Server, ServerConfig, ServerLog, SessionId, valid_name};
use crate::Now;
use crate::jwt::{
    self, FetchRequest, JwkError, JwkSet, JwksUpdate, JwtError, JwtValidator, Validation, ValidatorConfig,
};
use crate::wire::Opcode;

/// The reason of a 419 for an expired provider token.
pub(super) const EXPIRED: &str = "OIDC access token expired: get a new one from the provider";

/// Whether an auth part looks like a compact JWS rather than an opaque token.
pub(super) fn looks_like_jwt(auth: &[u8]) -> bool {
    !auth.starts_with(b"cfa_") && !auth.starts_with(b"cfr_") && auth.iter().filter(|b| **b == b'.').count() == 2
}

/// The validator of the configured provider's tokens, starting from the configured JWK Set;
/// an unusable document gives no keys (every token refused) and a fetch is asked for at once.
pub(super) fn validator(config: &ServerConfig, now: Now) -> Option<JwtValidator> {
    let o = config.oidc.as_ref()?;
    let mut validation = Validation::access(&o.issuer, &o.audience);
    validation.authorized_parties.clone_from(&o.allowed_azp);
    validation.leeway_secs = o.leeway.as_secs();
    let config =
        ValidatorConfig { validation, min_refresh_interval: o.jwks_min_interval, max_cache_age: o.jwks_refresh };
    Some(match JwkSet::parse(o.jwks_json.as_bytes()) {
        Ok(keys) => JwtValidator::with_keys(config, keys, now),
        Err(_) => JwtValidator::new(config, now),
    })
}

/// The key of an OIDC login in [`AccountBook::oidc_login`](super::state::AccountBook::oidc_login): SHA-256 over
/// the issuer, the confab user (`user`: the account the token's subject is bound to, which a
/// renamed provider user's `preferred_username` no longer names), and the provider's session
/// id (`sid`, else Keycloak's older `session_state`) or, without one, the subject. Hashed, so
/// the store keeps no provider session id; the user is part of it, so two users never share a
/// family (and its answers).
#[must_use]
pub fn oidc_login_key(
    claims: &jwt::Claims,
    claims_json: &serde_json::Map<String, serde_json::Value>,
    user: &str,
) -> [u8; 32] {
    let session = ["sid", "session_state"]
        .iter()
        .find_map(|name| claims_json.get(*name).and_then(serde_json::Value::as_str).filter(|s| !s.is_empty()));
    let (kind, id): (&[u8], &str) = match session {
        Some(sid) => (b"sid", sid),
        None => (b"sub", claims.sub.as_deref().unwrap_or_default()),
    };
    let mut h = Sha256::new();
    for part in [b"confab oidc login".as_slice(), claims.iss.as_deref().unwrap_or_default().as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    for part in [user.as_bytes(), kind, id.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// The key of a provider user in [`AccountBook::oidc_subject`](super::state::AccountBook::oidc_subject):
/// SHA-256 over the issuer and the subject (`sub`), length-prefixed. Hashed, so the store
/// keeps no provider identifier.
#[must_use]
pub fn oidc_subject_key(issuer: &str, subject: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [b"confab oidc subject".as_slice(), issuer.as_bytes(), subject.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// Requests an OIDC account without an identity key may make.
pub(super) fn allowed_without_identity_key(opcode: Opcode) -> bool {
    matches!(opcode, Opcode::SetIdentityKey | Opcode::FetchKey | Opcode::Logout)
}

/// The confab account of a verified provider token (OIDC Core 5.7: the
/// user is (`iss`, `sub`), never a name). A subject seen before gets the
/// account it was bound to, whatever `preferred_username` says now. A new
/// subject gets an account named after its `preferred_username` (else its
/// `sub`), bound to it; a name already bound to another subject, or
/// belonging to a password account, is refused (403). An external account
/// created before subjects were bound (store format 2) is bound to the
/// first subject that names it.
fn oidc_account(
    now: Now,
    journal: &mut Journal,
    desk: &Desk,
    rng: &mut StdRng,
    outbox: &mut Outbox,
    config: &ServerConfig,
    claims: &jwt::Claims,
) -> Result<String, Refusal> {
    let (Some(iss), Some(sub)) = (claims.iss.as_deref(), claims.sub.as_deref().filter(|s| !s.is_empty())) else {
        return Err(Refusal::Unauthorized("OIDC access token refused: no sub claim".into()));
    };
    let subject = oidc_subject_key(iss, sub);
    let state = journal.state();
    if let Some(username) = state.accounts().oidc_subject(&subject) {
        return Ok(username.to_owned());
    }
    let username = claims.username().unwrap_or_default().to_owned();
    if !valid_name(&username) {
        let shown: String = username.chars().take(40).collect();
        return Err(Refusal::Forbidden(format!("OIDC user name {shown:?} is not a confab username ({NAME_RULE})")));
    }
    // A split state: an account is made at its home only (docs/PARTITIONS.md).
    if let Some(refusal) = config.partitions.not_home(&username) {
        return Err(refusal);
    }
    match state.user(&username) {
        Some(u) if !u.is_external() => {
            let reason = "this username belongs to a password account: log in with its password";
            return Err(Refusal::Forbidden(reason.into()));
        }
        Some(_) if state.accounts().is_oidc_bound(&username) => {
            let reason = "this username belongs to another user of the identity provider (another subject)";
            return Err(Refusal::Forbidden(reason.into()));
        }
        Some(_) => {}
        None if desk.is_reserved(&username) => {
            return Err(Refusal::Conflict("this username is being registered".into()));
        }
        None if desk.accounts_full(state, config) => return Err(Desk::accounts_full_refusal(config)),
        None => {
            let user = User {
                password: SecretHash::EXTERNAL,
                passphrase: SecretHash::EXTERNAL,
                identity_key: Bytes::new(),
                secret: rng.random(),
                created_ms: now.unix_ms,
            };
            journal.commit(Change::UserCreated { username: username.clone(), user });
            outbox.event(ServerLog::Registered { username: username.clone() });
        }
    }
    journal.commit(Change::OidcSubjectBound { subject, username: username.clone() });
    Ok(username)
}

impl Server {
    /// A fetch of the OIDC provider's JWK Set to start now, if the validator
    /// wants one (at start without a usable set, every `jwks_refresh`, or
    /// after a token named an unknown `kid`) and the minimum interval since
    /// the last one has passed. Answer it with [`jwks_fetched`](Self::jwks_fetched)
    /// or [`jwks_fetch_failed`](Self::jwks_fetch_failed). Always `None` without OIDC.
    pub fn poll_jwks_fetch(&mut self, now: Now) -> Option<FetchRequest> {
        self.oidc.as_mut()?.poll_fetch(now)
    }

    /// When [`poll_jwks_fetch`](Self::poll_jwks_fetch) may next ask for a fetch (`None`: never,
    /// until a token names an unknown `kid`).
    #[must_use]
    pub fn jwks_deadline(&self) -> Option<Instant> {
        self.oidc.as_ref()?.poll_timeout()
    }

    /// The fetched JWK Set document: it replaces the provider's keys (keys
    /// that left it no longer verify, on connections that already verified
    /// a token they signed too). A document that does not parse keeps
    /// the old set and counts as a failed fetch. Ignored without OIDC.
    pub fn jwks_fetched(&mut self, now: Now, document: &[u8]) -> Result<JwksUpdate, JwkError> {
        let Some(v) = self.oidc.as_mut() else { return Ok(JwksUpdate::default()) };
        let update = v.handle_jwks(now, document)?;
        if !update.removed.is_empty() {
            // A key left the set (rotated out, or leaked): a token it signed must
            // stop working on the connections that already verified it too, not
            // only on new ones. Every cached verification goes (opaque tokens are
            // looked up again once, at the cost of a hash lookup).
            self.presence.forget_tokens(|_| true);
        }
        Ok(update)
    }

    /// The fetch asked for could not be made; another is asked after the minimum interval.
    pub fn jwks_fetch_failed(&mut self, now: Now) {
        if let Some(v) = self.oidc.as_mut() {
            v.fetch_failed(now);
        }
    }

    /// Authenticates a request carrying an OIDC access token; binds an unauthenticated session.
    pub(super) fn authenticate_oidc(
        &mut self,
        now: Now,
        session: SessionId,
        request_id: u32,
        auth: &[u8],
    ) -> Result<Arc<str>, Refusal> {
        let (Some(config), Some(validator)) = (&self.config.oidc, self.oidc.as_mut()) else {
            return Err(Refusal::Unauthorized("this server does not accept JWTs".into()));
        };
        let token = std::str::from_utf8(auth).map_err(|_| Refusal::Unauthorized("malformed access token".into()))?;
        let leeway = config.leeway.as_secs();
        let verified = validator.verify(now, token).map_err(|e| match e {
            JwtError::Expired { .. } => Refusal::TokenExpired(EXPIRED.into()),
            e => Refusal::Unauthorized(format!("OIDC access token refused: {e}")),
        })?;
        // `exp` is required by the validation; the cache honours the same leeway.
        let exp = u64::try_from(verified.claims.exp.unwrap_or(0)).unwrap_or(0);
        let valid_until_ms = exp.saturating_add(leeway).saturating_mul(1000);
        let (journal, desk, rng, outbox) = (&mut self.journal, &self.desk, &mut self.rng, &mut self.outbox);
        let username = oidc_account(now, journal, desk, rng, outbox, &self.config, &verified.claims)?;
        let key = oidc_login_key(&verified.claims, &verified.claims_json, &username);
        let internal = || Refusal::Internal(String::new());
        let bound = self.presence.get(session).ok_or_else(internal)?.user.clone();
        let known = self.journal.state().accounts().oidc_login(&key).copied();
        match &bound {
            Some(b) if *b.username != *username => {
                return Err(Refusal::Forbidden("access token belongs to another user".into()));
            }
            Some(_) => {}
            None => self.bind_check(session, &username)?,
        }
        // A bound session keeps its family (a fresh token of another provider session joins it);
        // otherwise the login's family, or a new one for a new login.
        let family = match (&bound, known) {
            (Some(b), _) => b.family,
            (None, Some(l)) => l.family,
            (None, None) => self.journal.state().accounts().last_family() + 1,
        };
        let expires_ms = known.map_or(valid_until_ms, |l| l.expires_ms.max(valid_until_ms));
        let login = OidcLogin { family, expires_ms };
        if known != Some(login) {
            self.journal.commit(Change::OidcLoginBound { key, login });
        }
        if bound.is_none() {
            self.bind(now, session, request_id, username, family);
        }
        let s = self.presence.get_mut(session).ok_or_else(internal)?;
        s.token_cache = Some((Bytes::copy_from_slice(auth), valid_until_ms));
        s.user.as_ref().map(|b| b.username.clone()).ok_or_else(internal)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::oidc_login_key;
    use crate::jwt::Claims;

    fn key(user: &str, sub: &str, extra: Value) -> [u8; 32] {
        let claims = Claims {
            iss: Some("https://idp.test/realms/confab".into()),
            sub: Some(sub.into()),
            preferred_username: Some(user.into()),
            ..Claims::default()
        };
        let map: Map<String, Value> = extra.as_object().cloned().unwrap_or_default();
        oidc_login_key(&claims, &map, user)
    }

    #[test]
    fn the_login_key_follows_the_provider_session_else_the_subject() {
        let sid = |s: &str| json!({ "sid": s });
        // One provider session: one key, whatever else the token says.
        assert_eq!(key("dave", "u-1", sid("s-1")), key("dave", "u-1", json!({ "sid": "s-1", "jti": "x" })));
        // Another session (another device, a new login at the provider): another key.
        assert_ne!(key("dave", "u-1", sid("s-1")), key("dave", "u-1", sid("s-2")));
        // Keycloak before `sid`: `session_state` carries the same id.
        assert_eq!(key("dave", "u-1", sid("s-1")), key("dave", "u-1", json!({ "session_state": "s-1" })));
        // Without a session id (or an empty or non-string one): one key per subject.
        let none = key("dave", "u-1", json!({}));
        assert_eq!(none, key("dave", "u-1", sid("")));
        assert_eq!(none, key("dave", "u-1", json!({ "sid": 7 })));
        assert_ne!(none, key("dave", "u-2", json!({})));
        assert_ne!(none, key("dave", "u-1", sid("s-1")));
        // A subject that looks like a session id does not collide with one.
        assert_ne!(key("dave", "s-1", json!({})), key("dave", "u-1", sid("s-1")));
        // Two users never share a login, even with the same session id.
        assert_ne!(key("dave", "u-1", sid("s-1")), key("erin", "u-1", sid("s-1")));
    }
}
