//! Access tokens of an external OIDC provider (seed 000, Keycloak) in the
//! auth part of a request.
//!
//! A JWT (three dot-separated parts, not a `cfa_`/`cfr_` token) is verified
//! with [`jwt::verify`] against the configured JWK Set as an **access**
//! token of the configured issuer and audience (and `azp`, when a list is
//! set). The user is `preferred_username`, else `sub`, and must satisfy the
//! username rule. A first-time user gets an account without password or
//! passphrase ([`SecretHash::EXTERNAL`]) and without identity key: every
//! request but `set_identity_key`, `fetch_key` and `logout` is refused with
//! 403 until it registers one. A name already taken by a password account is
//! refused (403): the provider cannot take over a local account.
//!
//! The session is bound under a token family of its own, allocated with
//! [`Change::FamilyAllocated`], so that retries are recognised within it.

use std::sync::Arc;

use bytes::Bytes;
use rand::RngExt as _;

use super::state::{Change, SecretHash, User};
use super::{Server, ServerEvent, SessionId, valid_name};
use crate::jwt::{self, JwkError, JwkSet, JwtError, Validation};
use crate::{Now, Opcode, code};

/// The reason of a 419 for an expired provider token.
pub(super) const EXPIRED: &str = "OIDC access token expired: get a new one from the provider";

/// Whether an auth part looks like a compact JWS rather than an opaque token.
pub(super) fn looks_like_jwt(auth: &[u8]) -> bool {
    !auth.starts_with(b"cfa_") && !auth.starts_with(b"cfr_") && auth.iter().filter(|b| **b == b'.').count() == 2
}

/// The JWK Set of the configured provider; an unusable document gives an empty set (every token refused).
pub(super) fn initial_keys(config: &super::ServerConfig) -> JwkSet {
    config.oidc.as_ref().and_then(|o| JwkSet::parse(o.jwks_json.as_bytes()).ok()).unwrap_or_default()
}

/// Requests an OIDC account without an identity key may make.
pub(super) fn allowed_without_identity_key(opcode: Opcode) -> bool {
    matches!(opcode, Opcode::SetIdentityKey | Opcode::FetchKey | Opcode::Logout)
}

impl Server {
    /// Replaces the OIDC provider's JWK Set (the adapter refetched the
    /// provider's `jwks_uri`, or reread the file). Returns the number of
    /// usable keys. A document that does not parse keeps the old set.
    pub fn set_oidc_jwks(&mut self, _now: Now, json: &[u8]) -> Result<usize, JwkError> {
        let set = JwkSet::parse(json)?;
        let n = set.len();
        self.oidc_keys = set;
        // Cached verifications stay valid: they were made with keys the provider published.
        Ok(n)
    }

    /// Authenticates a request carrying an OIDC access token; binds an unauthenticated session.
    pub(super) fn authenticate_oidc(
        &mut self,
        now: Now,
        session: SessionId,
        request_id: u32,
        auth: &[u8],
    ) -> Result<Arc<str>, (u16, String)> {
        let Some(config) = &self.config.oidc else {
            return Err((code::UNAUTHORIZED, "this server does not accept JWTs".into()));
        };
        let token = std::str::from_utf8(auth).map_err(|_| (code::UNAUTHORIZED, "malformed access token".into()))?;
        let mut validation = Validation::access(&config.issuer, &config.audience);
        validation.authorized_parties.clone_from(&config.allowed_azp);
        validation.leeway_secs = config.leeway.as_secs();
        let leeway = validation.leeway_secs;
        let verified = jwt::verify(token, &self.oidc_keys, &validation, now.unix_ms / 1000).map_err(|e| match e {
            JwtError::Expired { .. } => (code::TOKEN_EXPIRED, EXPIRED.into()),
            e => (code::UNAUTHORIZED, format!("OIDC access token refused: {e}")),
        })?;
        let username = verified.claims.username().unwrap_or_default().to_owned();
        if !valid_name(&username) {
            let shown: String = username.chars().take(40).collect();
            return Err((
                code::FORBIDDEN,
                format!("OIDC user name {shown:?} is not a confab username (3-32 characters of a-z 0-9 _ . -)"),
            ));
        }
        // `exp` is required by the validation; the cache honours the same leeway.
        let exp = u64::try_from(verified.claims.exp.unwrap_or(0)).unwrap_or(0);
        let valid_until_ms = exp.saturating_add(leeway).saturating_mul(1000);
        match self.state.users.get(&username) {
            Some(u) if !u.is_external() => {
                let reason = "this username belongs to a password account: log in with its password";
                return Err((code::FORBIDDEN, reason.into()));
            }
            Some(_) => {}
            None if self.reserved.contains(&username) => {
                return Err((code::CONFLICT, "this username is being registered".into()));
            }
            None => {
                let user = User {
                    password: SecretHash::EXTERNAL,
                    passphrase: SecretHash::EXTERNAL,
                    identity_key: Bytes::new(),
                    secret: self.rng.random(),
                    created_ms: now.unix_ms,
                };
                self.commit(Change::UserCreated { username: username.clone(), user });
                self.events.push_back(ServerEvent::Registered { username: username.clone() });
            }
        }
        let bound = self.sessions.get(&session).ok_or((code::INTERNAL, String::new()))?.username().map(str::to_owned);
        match bound {
            Some(u) if u != username => {
                return Err((code::FORBIDDEN, "access token belongs to another user".into()));
            }
            Some(_) => {}
            None => {
                self.bind_check(session, &username)?;
                let family = self.state.last_family + 1;
                self.commit(Change::FamilyAllocated { family });
                self.bind(now, session, request_id, username, family);
            }
        }
        let s = self.sessions.get_mut(&session).ok_or((code::INTERNAL, String::new()))?;
        s.token_cache = Some((Bytes::copy_from_slice(auth), valid_until_ms));
        let user = s.user.as_ref().map(|b| b.username.clone());
        user.ok_or((code::INTERNAL, String::new()))
    }
}
