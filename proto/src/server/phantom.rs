//! Phantom-token translation (`introspect`, `jwks`; seed 004) and codes for
//! third-party servers (`issue_code`, `verify_code`; seed 003).
//!
//! - The ES256 signing keys are generated from the server's RNG on first use
//!   and persisted as [`Change::SigningKeysSet`], so a restored server keeps
//!   publishing and signing with them. The key rotates at the first sweep
//!   after `PhantomConfig::key_rotation`; a retired key stays published until
//!   every JWT it signed has expired (plus the validators' 60 s leeway).
//! - Minting moves the current key's latest `exp`; it is persisted with
//!   `max_ttl` of headroom, so one introspection in a `max_ttl` window
//!   writes, not every one.
//! - Accepted codes are remembered in memory only (see `docs/AUTH.md`).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::config::PhantomConfig;
use super::state::{Change, State};
use super::{Flow, Server, ServerConfig, SessionId, valid_name};
use crate::jwt::{self, MintRequest, SignError, SignerConfig, SigningKeys, VerifyCodeError};
use crate::token;
use crate::{CodeIssued, Introspect, IssueCode, JwksDoc, Jwt, Now, Opcode, ResponseBody, Status, VerifyCode, code};

/// The seconds a retired key stays published after its last `exp` (the validators' default leeway).
const PUBLISH_GRACE_SECS: u64 = 60;

fn signer_config(p: &PhantomConfig) -> SignerConfig {
    SignerConfig {
        issuer: p.issuer.clone(),
        audience: p.audience.clone(),
        max_ttl_secs: p.max_ttl.as_secs().max(1),
        publish_grace_secs: PUBLISH_GRACE_SECS,
    }
}

/// The signing keys of a restored state, if phantom translation is configured and keys were persisted.
/// Unusable records (corrupt store) are dropped: fresh keys are made on first use.
pub(super) fn restore_signer(config: &ServerConfig, state: &State) -> Option<SigningKeys> {
    let p = config.phantom.as_ref()?;
    if state.signing_keys.is_empty() {
        return None;
    }
    SigningKeys::restore(signer_config(p), &state.signing_keys).ok()
}

fn unix_secs(now: Now) -> u64 {
    now.unix_ms / 1000
}

impl Server {
    /// Generates the signing keys on first use. False when phantom translation is not configured.
    fn ensure_signer(&mut self, now: Now) -> bool {
        if self.signing_keys.is_some() {
            return true;
        }
        let Some(p) = &self.config.phantom else {
            return false;
        };
        self.signing_keys = Some(SigningKeys::generate(signer_config(p), &mut self.rng, unix_secs(now)));
        self.persist_signer(0);
        true
    }

    /// Persists the key set; the current key's latest `exp` is raised by `headroom` seconds.
    fn persist_signer(&mut self, headroom: u64) {
        let Some(keys) = &self.signing_keys else {
            return;
        };
        let mut records = keys.records();
        for r in &mut records {
            if r.current && r.last_exp != 0 {
                r.last_exp = r.last_exp.saturating_add(headroom);
            }
            if let Some(old) = self.state.signing_keys.iter().find(|o| o.kid == r.kid) {
                r.last_exp = r.last_exp.max(old.last_exp);
            }
        }
        self.commit(Change::SigningKeysSet { records });
    }

    /// Key rotation and pruning, and forgetting expired codes: run at each sweep.
    pub(super) fn sweep_auth(&mut self, now: Now) {
        self.used_codes.prune(now.unix_ms);
        let Some(p) = &self.config.phantom else {
            return;
        };
        let rotation = p.key_rotation.as_secs().max(1);
        let now_s = unix_secs(now);
        let Some(keys) = self.signing_keys.as_mut() else {
            return;
        };
        let created = keys.records().iter().find(|r| r.current).map_or(0, |r| r.created);
        let mut changed = false;
        if now_s >= created.saturating_add(rotation) {
            keys.rotate(&mut self.rng, now_s);
            changed = true;
        }
        if keys.next_prune().is_some_and(|at| at <= now_s) && !keys.prune(now_s).is_empty() {
            changed = true;
        }
        if changed {
            self.persist_signer(0);
        }
    }

    /// `jwks` (anonymous): the public JWK Set of the phantom-token signer.
    pub(super) fn jwks(&mut self, now: Now, session: SessionId, request_id: u32) {
        let op = Opcode::Jwks;
        if !self.ensure_signer(now) {
            let reason = "this server does not offer jwks(100020): phantom translation is not configured".into();
            return self.reject(now, session, op, request_id, code::NOT_IMPLEMENTED, reason);
        }
        let jwks = self.signing_keys.as_ref().map(|k| k.jwks_json(unix_secs(now))).unwrap_or_default();
        self.respond(now, session, op, request_id, Status::Valid, code::OK, ResponseBody::Jwks(JwksDoc { jwks }));
    }

    /// `introspect`: a trusted backend, authenticated by the service
    /// credential in the auth part, exchanges an opaque token for a JWT.
    pub(super) fn introspect(&mut self, now: Now, session: SessionId, request_id: u32, auth: &[u8], b: Introspect) {
        let op = Opcode::Introspect;
        let result = self.translate(now, auth, &b.token);
        match result {
            Ok(body) => self.respond(now, session, op, request_id, Status::Valid, code::OK, body),
            Err((code, reason)) => self.reject(now, session, op, request_id, code, reason),
        }
    }

    fn translate(&mut self, now: Now, auth: &[u8], opaque: &str) -> Result<ResponseBody, (u16, String)> {
        let Some(p) = &self.config.phantom else {
            let reason = "this server does not offer introspect(100019): phantom translation is not configured";
            return Err((code::NOT_IMPLEMENTED, reason.into()));
        };
        if auth.is_empty() {
            return Err((code::UNAUTHORIZED, "missing service credential in the auth field".into()));
        }
        // Hashing first makes the comparison constant-time in the length too.
        let given = Sha256::digest(auth);
        let expected = Sha256::digest(p.service_credential.as_bytes());
        if !bool::from(given.as_slice().ct_eq(expected.as_slice())) {
            return Err((code::FORBIDDEN, "not a trusted backend: wrong service credential".into()));
        }
        let raw = opaque.as_bytes();
        let inactive =
            || (code::NOT_FOUND, "token is not active: malformed, unknown, revoked or already exchanged".into());
        let kind = token::check(raw).map_err(|_| inactive())?;
        let record = match self.state.tokens.get(&token::hash(raw)) {
            Some(r) if r.kind == kind && r.rotated.is_none() => r.clone(),
            _ => return Err(inactive()),
        };
        let expired = || (code::UNAUTHORIZED, "token has expired".into());
        if record.expires_ms <= now.unix_ms {
            return Err(expired());
        }
        self.ensure_signer(now);
        let Some(keys) = self.signing_keys.as_mut() else {
            return Err((code::INTERNAL, "no signing key".into()));
        };
        let request =
            MintRequest { token: raw, kind, subject: &record.username, token_expires: record.expires_ms / 1000 };
        let minted = match keys.mint(unix_secs(now), &request) {
            Ok(m) => m,
            Err(SignError::TokenExpired) => return Err(expired()),
            Err(e) => return Err((code::INTERNAL, e.to_string())),
        };
        let headroom = keys.config().max_ttl_secs;
        let persisted = self.state.signing_keys.iter().find(|r| r.kid == minted.kid).map_or(0, |r| r.last_exp);
        if minted.exp > persisted {
            self.persist_signer(headroom);
        }
        Ok(ResponseBody::Jwt(Jwt { jwt: minted.jwt, expires_ms: minted.exp.saturating_mul(1000) }))
    }

    /// `issue_code` (authenticated): a single-use code for `audience`, keyed with the user's secret.
    pub(super) fn issue_code(&mut self, now: Now, user: &str, b: IssueCode) -> Flow {
        let Some(c) = &self.config.codes else {
            return Err((code::NOT_IMPLEMENTED, "this server does not offer issue_code(100017)".into()));
        };
        if !valid_name(&b.audience) {
            return Err((code::BAD_REQUEST, "audience must be 3-32 characters of a-z 0-9 _ . -".into()));
        }
        let ttl_ms = (c.ttl.as_millis() as u64).clamp(1, jwt::CODE_MAX_TTL_MS);
        let secret =
            self.state.users.get(user).map(|u| u.secret).ok_or((code::NOT_FOUND, format!("no user {user}")))?;
        let issued = jwt::issue_code(&mut self.rng, &secret, user, &b.audience, now.unix_ms, ttl_ms)
            .map_err(|e| (code::BAD_REQUEST, e.to_string()))?;
        let body = CodeIssued { code: issued.code.clone(), expires_ms: issued.expires_ms };
        Ok((Status::Valid, code::OK, ResponseBody::CodeIssued(body)))
    }

    /// `verify_code` (anonymous, made by the third party): checks and consumes a code.
    pub(super) fn verify_code(&mut self, now: Now, session: SessionId, request_id: u32, b: VerifyCode) {
        let op = Opcode::VerifyCode;
        if self.config.codes.is_none() {
            let reason = "this server does not offer verify_code(100018)".into();
            return self.reject(now, session, op, request_id, code::NOT_IMPLEMENTED, reason);
        }
        // An unknown user is checked against a secret nobody has: a forged code, like any other.
        let secret = match self.state.users.get(&b.username) {
            Some(u) => u.secret,
            None => self.unknown_user_secret(&b.username),
        };
        match jwt::verify_code(&secret, &b.username, &b.audience, &b.code, now.unix_ms, &mut self.used_codes) {
            Ok(()) => self.respond(now, session, op, request_id, Status::Valid, code::OK, ResponseBody::Empty),
            Err(e) => {
                let (code, reason) = code_error(e);
                self.reject(now, session, op, request_id, code, reason.into());
            }
        }
    }

    fn unknown_user_secret(&self, username: &str) -> [u8; 32] {
        Sha256::new()
            .chain_update(self.dummy_key)
            .chain_update(b"confab-code-unknown-user")
            .chain_update(username.as_bytes())
            .finalize()
            .into()
    }
}

/// The wire code and reason of each code refusal (`docs/PROTOCOL.md`, verify_code).
fn code_error(e: VerifyCodeError) -> (u16, &'static str) {
    match e {
        VerifyCodeError::Format => (code::BAD_REQUEST, "malformed code"),
        VerifyCodeError::BadMac => (code::UNAUTHORIZED, "invalid code: forged, altered, or not issued to this user"),
        VerifyCodeError::WrongAudience => (code::FORBIDDEN, "the code was issued for another audience"),
        VerifyCodeError::Expired => (code::GONE, "the code has expired"),
        VerifyCodeError::ExpiryTooFar => (code::GONE, "the code expires too far in the future"),
        VerifyCodeError::Replayed => (code::CONFLICT, "the code was already used"),
        VerifyCodeError::ReplayCacheFull => (code::UNAVAILABLE, "too many codes in flight: retry shortly"),
    }
}
