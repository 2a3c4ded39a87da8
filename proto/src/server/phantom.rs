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

use rand::rngs::StdRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::config::PhantomConfig;
use super::outbox::Journal;
use super::refusal::{Flow, Refusal, Reply};
use super::state::{Change, State};
use super::{NAME_RULE, ServerConfig, valid_name};
use crate::Now;
use crate::jwt::{self, MintRequest, SignError, SignerConfig, SigningKeys, VerifyCodeError};
use crate::token;
use crate::wire::{CodeIssued, Introspect, IssueCode, JwksDoc, Jwt, ResponseBody, VerifyCode};

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

fn unix_secs(now: Now) -> u64 {
    now.unix_ms / 1000
}

/// The phantom-token signer and the codes accepted so far.
#[derive(Debug)]
pub(super) struct Phantom {
    /// The signer, once made or restored.
    signing_keys: Option<SigningKeys>,
    /// Third-party codes accepted and not yet expired (in memory only).
    used_codes: jwt::UsedCodes,
}

impl Phantom {
    /// The signer of a restored state, if phantom translation is configured and keys were
    /// persisted. Unusable records (corrupt store) are dropped: fresh keys are made on first use.
    pub(super) fn restore(config: &ServerConfig, state: &State) -> Phantom {
        let used_codes = jwt::UsedCodes::new(config.codes.as_ref().map_or(0, |c| c.max_in_flight));
        let records = state.accounts().signing_keys();
        let signing_keys = match &config.phantom {
            Some(p) if !records.is_empty() => SigningKeys::restore(signer_config(p), records).ok(),
            _ => None,
        };
        Phantom { signing_keys, used_codes }
    }

    /// Generates the signing keys on first use. False when phantom translation is not configured.
    fn ensure_signer(&mut self, now: Now, journal: &mut Journal, rng: &mut StdRng, config: &ServerConfig) -> bool {
        if self.signing_keys.is_some() {
            return true;
        }
        let Some(p) = &config.phantom else {
            return false;
        };
        self.signing_keys = Some(SigningKeys::generate(signer_config(p), rng, unix_secs(now)));
        self.persist_signer(journal, 0);
        true
    }

    /// Persists the key set; the current key's latest `exp` is raised by `headroom` seconds.
    fn persist_signer(&self, journal: &mut Journal, headroom: u64) {
        let Some(keys) = &self.signing_keys else {
            return;
        };
        let persisted = journal.state().accounts().signing_keys();
        let mut records = keys.records();
        for r in &mut records {
            if r.current && r.last_exp != 0 {
                r.last_exp = r.last_exp.saturating_add(headroom);
            }
            if let Some(old) = persisted.iter().find(|o| o.kid == r.kid) {
                r.last_exp = r.last_exp.max(old.last_exp);
            }
        }
        journal.commit(Change::SigningKeysSet { records });
    }

    /// Key rotation and pruning, and forgetting expired codes: run at each sweep.
    pub(super) fn sweep(&mut self, now: Now, journal: &mut Journal, rng: &mut StdRng, config: &ServerConfig) {
        self.used_codes.prune(now.unix_ms);
        let Some(p) = &config.phantom else {
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
            keys.rotate(rng, now_s);
            changed = true;
        }
        if keys.next_prune().is_some_and(|at| at <= now_s) && !keys.prune(now_s).is_empty() {
            changed = true;
        }
        if changed {
            self.persist_signer(journal, 0);
        }
    }

    /// `jwks` (anonymous): the public JWK Set of the phantom-token signer.
    pub(super) fn jwks(&mut self, now: Now, journal: &mut Journal, rng: &mut StdRng, config: &ServerConfig) -> Flow {
        if !self.ensure_signer(now, journal, rng, config) {
            let reason = "this server does not offer jwks(100020): phantom translation is not configured";
            return Err(Refusal::NotImplemented(reason.into()));
        }
        let jwks = self.signing_keys.as_ref().map(|k| k.jwks_json(unix_secs(now))).unwrap_or_default();
        Ok(Reply::ok(ResponseBody::Jwks(JwksDoc { jwks })))
    }

    /// `introspect`: a trusted backend, authenticated by the service
    /// credential in the auth part, exchanges an opaque token for a JWT.
    pub(super) fn introspect(
        &mut self,
        now: Now,
        journal: &mut Journal,
        rng: &mut StdRng,
        config: &ServerConfig,
        auth: &[u8],
        b: &Introspect,
    ) -> Flow {
        let Some(p) = &config.phantom else {
            let reason = "this server does not offer introspect(100019): phantom translation is not configured";
            return Err(Refusal::NotImplemented(reason.into()));
        };
        if auth.is_empty() {
            return Err(Refusal::Unauthorized("missing service credential in the auth field".into()));
        }
        // Hashing first makes the comparison constant-time in the length too.
        let given = Sha256::digest(auth);
        let expected = Sha256::digest(p.service_credential.as_bytes());
        if !bool::from(given.as_slice().ct_eq(expected.as_slice())) {
            return Err(Refusal::Forbidden("not a trusted backend: wrong service credential".into()));
        }
        let raw = b.token.as_bytes();
        // A split state: another partition's token is misrouted here, not inactive.
        if let Some(other) = config.partitions.foreign_token(raw) {
            let here = config.partitions.index;
            let reason = format!("the token is partition {other}'s, not this one's ({here}): ask there");
            return Err(Refusal::BadRequest(reason));
        }
        let inactive =
            || Refusal::NotFound("token is not active: malformed, unknown, revoked or already exchanged".into());
        let kind = token::check(raw).map_err(|_| inactive())?;
        let record = match journal.state().accounts().token(&token::hash(raw)) {
            Some(r) if r.kind == kind && r.rotated.is_none() => r.clone(),
            _ => return Err(inactive()),
        };
        let expired = || Refusal::Unauthorized("token has expired".into());
        if record.expires_ms <= now.unix_ms {
            return Err(expired());
        }
        self.ensure_signer(now, journal, rng, config);
        let Some(keys) = self.signing_keys.as_mut() else {
            return Err(Refusal::Internal("no signing key".into()));
        };
        let request =
            MintRequest { token: raw, kind, subject: &record.username, token_expires: record.expires_ms / 1000 };
        let minted = match keys.mint(unix_secs(now), &request) {
            Ok(m) => m,
            Err(SignError::TokenExpired) => return Err(expired()),
            Err(e) => return Err(Refusal::Internal(e.to_string())),
        };
        let headroom = keys.config().max_ttl_secs;
        let persisted = journal.state().accounts().signing_keys();
        let persisted = persisted.iter().find(|r| r.kid == minted.kid).map_or(0, |r| r.last_exp);
        if minted.exp > persisted {
            self.persist_signer(journal, headroom);
        }
        Ok(Reply::ok(ResponseBody::Jwt(Jwt { jwt: minted.jwt, expires_ms: minted.exp.saturating_mul(1000) })))
    }

    /// `issue_code` (authenticated): a single-use code for `audience`, keyed with the user's secret.
    pub(super) fn issue_code(
        now: Now,
        journal: &Journal,
        rng: &mut StdRng,
        config: &ServerConfig,
        user: &str,
        b: &IssueCode,
    ) -> Flow {
        let Some(c) = &config.codes else {
            return Err(Refusal::NotImplemented("this server does not offer issue_code(100017)".into()));
        };
        if !valid_name(&b.audience) {
            return Err(Refusal::BadRequest(format!("audience must be {NAME_RULE}")));
        }
        let ttl_ms = (c.ttl.as_millis() as u64).clamp(1, jwt::CODE_MAX_TTL_MS);
        let user_record = journal.state().user(user);
        let secret = user_record.map(|u| u.secret).ok_or_else(|| Refusal::NotFound(format!("no user {user}")))?;
        let issued = jwt::issue_code(rng, &secret, user, &b.audience, now.unix_ms, ttl_ms)
            .map_err(|e| Refusal::BadRequest(e.to_string()))?;
        let body = CodeIssued { code: issued.code.clone(), expires_ms: issued.expires_ms };
        Ok(Reply::ok(ResponseBody::CodeIssued(body)))
    }

    /// `verify_code` (anonymous, made by the third party): checks and consumes a code. An
    /// unknown user's code is checked against `unknown_secret`, a secret nobody has.
    pub(super) fn verify_code(
        &mut self,
        now: Now,
        journal: &Journal,
        config: &ServerConfig,
        unknown_secret: impl FnOnce(&str) -> [u8; 32],
        b: &VerifyCode,
    ) -> Flow {
        if config.codes.is_none() {
            return Err(Refusal::NotImplemented("this server does not offer verify_code(100018)".into()));
        }
        // An unknown user is checked against a secret nobody has: a forged code, like any other.
        let secret = match journal.state().user(&b.username) {
            Some(u) => u.secret,
            None => unknown_secret(&b.username),
        };
        match jwt::verify_code(&secret, &b.username, &b.audience, &b.code, now.unix_ms, &mut self.used_codes) {
            Ok(()) => Ok(Reply::ok(ResponseBody::Empty)),
            Err(e) => Err(code_error(e)),
        }
    }
}

/// The refusal of each code error (`docs/PROTOCOL.md`, verify_code).
fn code_error(e: VerifyCodeError) -> Refusal {
    match e {
        VerifyCodeError::Format => Refusal::BadRequest("malformed code".into()),
        VerifyCodeError::BadMac => {
            Refusal::Unauthorized("invalid code: forged, altered, or not issued to this user".into())
        }
        VerifyCodeError::WrongAudience => Refusal::Forbidden("the code was issued for another audience".into()),
        VerifyCodeError::Expired => Refusal::Gone("the code has expired".into()),
        VerifyCodeError::ExpiryTooFar => Refusal::Gone("the code expires too far in the future".into()),
        VerifyCodeError::Replayed => Refusal::Conflict("the code was already used".into()),
        VerifyCodeError::ReplayCacheFull => Refusal::Unavailable("too many codes in flight: retry shortly".into()),
    }
}
