//! The phantom-token signer (seed 004): ES256 keys with rotation, minting
//! a JWT for an opaque token, publishing the public JWK Set.
//!
//! One key is *current* and signs everything. [`SigningKeys::rotate`]
//! makes a new current key and retires the old one; a retired key stays in
//! the published set until every token it signed has expired (the latest
//! `exp` it signed, plus [`SignerConfig::publish_grace_secs`] for
//! validators' leeway), then [`SigningKeys::prune`] drops it. A key that
//! signed nothing is dropped at once.
//!
//! The core never stores a private key anywhere itself: [`SigningKeys::records`]
//! exports the state for the caller to persist, [`SigningKeys::restore`]
//! rebuilds it.

use std::fmt;

use p256::ecdsa::SigningKey;
use p256::elliptic_curve::Generate as _;
use rand::CryptoRng;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::jwk::{EcKey, Jwk, JwkSet, PublicKey};
use super::jws::sign_es256;
use crate::token::TokenKind;

/// Parameters of the signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerConfig {
    /// `iss` of every minted token.
    pub issuer: String,
    /// `aud` of every minted token.
    pub audience: String,
    /// Longest lifetime of a minted JWT, in seconds (it never outlives its opaque token either).
    pub max_ttl_secs: u64,
    /// How long a retired key stays published after the last `exp` it signed, in seconds.
    pub publish_grace_secs: u64,
}

impl SignerConfig {
    /// A configuration with 5-minute tokens and a 60-second grace.
    #[must_use]
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> SignerConfig {
        SignerConfig { issuer: issuer.into(), audience: audience.into(), max_ttl_secs: 300, publish_grace_secs: 60 }
    }
}

/// Why a token could not be minted or a key set restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The opaque token has already expired: there is nothing to translate.
    #[error("the token has expired")]
    TokenExpired,
    /// The subject is empty.
    #[error("empty subject")]
    EmptySubject,
    /// A persisted private key is not a valid P-256 scalar.
    #[error("persisted key {0:?} is invalid")]
    InvalidKey(String),
    /// The persisted records do not have exactly one current key.
    #[error("persisted keys must have exactly one current key")]
    NoCurrentKey,
}

/// What to mint: the opaque token being translated and what it stands for.
#[derive(Debug, Clone, Copy)]
pub struct MintRequest<'a> {
    /// The opaque token (`cfa_...`/`cfr_...`); only its SHA-256 goes into the JWT.
    pub token: &'a [u8],
    /// Access or refresh.
    pub kind: TokenKind,
    /// The user it belongs to (`sub`).
    pub subject: &'a str,
    /// The opaque token's expiry, Unix seconds: the JWT never outlives it.
    pub token_expires: u64,
}

/// A minted JWT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    /// The compact JWS.
    pub jwt: String,
    /// Its `exp`, Unix seconds.
    pub exp: u64,
    /// The `kid` of the key that signed it.
    pub kid: String,
}

/// One signing key as persisted by the caller.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct KeyRecord {
    /// The key id (the RFC 7638 thumbprint of the public key).
    pub kid: String,
    /// The private scalar, big-endian.
    pub secret: [u8; 32],
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Latest `exp` the key signed, Unix seconds; 0 if none.
    pub last_exp: u64,
    /// True for the current key.
    pub current: bool,
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("kid", &self.kid)
            .field("created", &self.created)
            .field("last_exp", &self.last_exp)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Entry {
    kid: String,
    key: SigningKey,
    created: u64,
    last_exp: u64,
}

impl Entry {
    fn new(key: SigningKey, created: u64) -> Entry {
        let kid = EcKey::from_verifying_key(key.verifying_key()).thumbprint();
        Entry { kid, key, created, last_exp: 0 }
    }

    fn public_jwk(&self) -> Jwk {
        Jwk {
            kid: Some(self.kid.clone()),
            alg: Some("ES256".into()),
            key_use: Some("sig".into()),
            key_ops: None,
            key: PublicKey::Ec(EcKey::from_verifying_key(self.key.verifying_key())),
        }
    }
}

/// The server's ES256 signing keys: one current, some retired.
#[derive(Clone)]
pub struct SigningKeys {
    config: SignerConfig,
    current: Entry,
    retired: Vec<Entry>,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeys")
            .field("current", &self.current.kid)
            .field("retired", &self.retired.iter().map(|e| &e.kid).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct PhantomClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    iat: u64,
    jti: String,
    #[serde(rename = "type")]
    token_type: &'static str,
}

impl SigningKeys {
    /// A fresh set with one new current key.
    pub fn generate<R: CryptoRng + ?Sized>(config: SignerConfig, rng: &mut R, now: u64) -> SigningKeys {
        SigningKeys { config, current: Entry::new(SigningKey::generate_from_rng(rng), now), retired: Vec::new() }
    }

    /// Rebuilds the set from persisted records (exactly one current).
    pub fn restore(config: SignerConfig, records: &[KeyRecord]) -> Result<SigningKeys, SignError> {
        let mut current = None;
        let mut retired = Vec::new();
        for record in records {
            let key = SigningKey::from_slice(&record.secret).map_err(|_| SignError::InvalidKey(record.kid.clone()))?;
            let mut entry = Entry::new(key, record.created);
            entry.last_exp = record.last_exp;
            if record.current {
                if current.replace(entry).is_some() {
                    return Err(SignError::NoCurrentKey);
                }
            } else {
                retired.push(entry);
            }
        }
        let current = current.ok_or(SignError::NoCurrentKey)?;
        Ok(SigningKeys { config, current, retired })
    }

    /// The state to persist: every key, current and retired.
    #[must_use]
    pub fn records(&self) -> Vec<KeyRecord> {
        let record = |e: &Entry, current: bool| KeyRecord {
            kid: e.kid.clone(),
            secret: e.key.to_bytes().into(),
            created: e.created,
            last_exp: e.last_exp,
            current,
        };
        std::iter::once(record(&self.current, true)).chain(self.retired.iter().map(|e| record(e, false))).collect()
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &SignerConfig {
        &self.config
    }

    /// The `kid` of the current key.
    #[must_use]
    pub fn current_kid(&self) -> &str {
        &self.current.kid
    }

    /// Makes a new current key; the old one is retired (or dropped if it
    /// signed nothing still valid). Returns the new `kid`.
    pub fn rotate<R: CryptoRng + ?Sized>(&mut self, rng: &mut R, now: u64) -> String {
        let old = std::mem::replace(&mut self.current, Entry::new(SigningKey::generate_from_rng(rng), now));
        self.retired.push(old);
        self.prune(now);
        self.current.kid.clone()
    }

    fn still_needed(&self, entry: &Entry, now: u64) -> bool {
        entry.last_exp != 0 && now < entry.last_exp.saturating_add(self.config.publish_grace_secs)
    }

    /// Drops the retired keys no valid token needs any more; returns their `kid`s.
    pub fn prune(&mut self, now: u64) -> Vec<String> {
        let (keep, drop): (Vec<Entry>, Vec<Entry>) =
            std::mem::take(&mut self.retired).into_iter().partition(|e| self.still_needed(e, now));
        self.retired = keep;
        drop.into_iter().map(|e| e.kid).collect()
    }

    /// When the next retired key may be pruned, Unix seconds.
    #[must_use]
    pub fn next_prune(&self) -> Option<u64> {
        self.retired.iter().map(|e| e.last_exp.saturating_add(self.config.publish_grace_secs)).min()
    }

    /// Mints an ES256 JWT for an opaque token: `kid` in the header; `iss`,
    /// `sub`, `aud`, `exp` (the earlier of the token's expiry and
    /// `now + max_ttl_secs`), `iat`, `jti` (lowercase hex SHA-256 of the
    /// opaque token, never the token) and `type` (`access`/`refresh`).
    pub fn mint(&mut self, now: u64, request: &MintRequest<'_>) -> Result<Minted, SignError> {
        if request.subject.is_empty() {
            return Err(SignError::EmptySubject);
        }
        if request.token_expires <= now {
            return Err(SignError::TokenExpired);
        }
        let exp = request.token_expires.min(now.saturating_add(self.config.max_ttl_secs));
        let claims = PhantomClaims {
            iss: &self.config.issuer,
            sub: request.subject,
            aud: &self.config.audience,
            exp,
            iat: now,
            jti: jti(request.token),
            token_type: match request.kind {
                TokenKind::Access => "access",
                TokenKind::Refresh => "refresh",
            },
        };
        // Serializing a struct of strings and integers cannot fail.
        let json = serde_json::to_vec(&claims).unwrap_or_default();
        let jwt = sign_es256(&self.current.key, &self.current.kid, &json);
        self.current.last_exp = self.current.last_exp.max(exp);
        Ok(Minted { jwt, exp, kid: self.current.kid.clone() })
    }

    /// The public keys to publish at `now`: the current key and every
    /// retired key still needed.
    #[must_use]
    pub fn jwks(&self, now: u64) -> JwkSet {
        let keys = std::iter::once(&self.current).chain(self.retired.iter().filter(|e| self.still_needed(e, now)));
        // Thumbprints of distinct keys are distinct; a (practically
        // impossible) collision would publish the current key only.
        JwkSet::from_keys(keys.map(Entry::public_jwk))
            .unwrap_or_else(|_| JwkSet::from_keys([self.current.public_jwk()]).unwrap_or_default())
    }

    /// [`jwks`](Self::jwks) as a JSON document.
    #[must_use]
    pub fn jwks_json(&self, now: u64) -> String {
        self.jwks(now).to_json()
    }
}

/// The `jti` of a translated token: lowercase hex SHA-256 of the opaque token.
#[must_use]
pub fn jti(token: &[u8]) -> String {
    Sha256::digest(token).iter().map(|b| format!("{b:02x}")).collect()
}
