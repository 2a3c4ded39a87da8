//! The admin commands of the `confab-server` binary, as functions (the
//! binary parses arguments, reads files and the clock, and prints).

use std::path::Path;

use confab_proto::ServerConfig;
use confab_proto::jwt::{JwkError, JwkSet, JwtError, SignError, SignerConfig, SigningKeys, Validation, verify};
use confab_proto::token::TokenKind;
use serde_json::{Value, json};

use crate::store::{Store, StoreError};

/// What `jwt verify` checks besides the signature, `exp`, `nbf` and `iat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyArgs {
    /// Required `iss`; `None`: not checked.
    pub issuer: Option<String>,
    /// An audience `aud` must contain; `None`: not checked.
    pub audience: Option<String>,
    /// Unix seconds.
    pub now: u64,
    /// Clock skew tolerated, in seconds.
    pub leeway_secs: u64,
}

/// Why `jwt verify` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyFailure {
    /// The JWK Set document is unusable.
    Jwks(JwkError),
    /// The token was refused.
    Token(JwtError),
}

/// Verifies `token` against the JWK Set document `jwks`; on success, the
/// pretty JSON `{"header": ..., "claims": ..., "kind": ...}` where `kind` is
/// `access`, `refresh` or null.
pub fn jwt_verify(jwks: &[u8], args: &VerifyArgs, token: &str) -> Result<String, VerifyFailure> {
    let keys = JwkSet::parse(jwks).map_err(VerifyFailure::Jwks)?;
    let validation = Validation {
        issuer: args.issuer.clone(),
        audience: args.audience.clone(),
        leeway_secs: args.leeway_secs,
        ..Validation::default()
    };
    let verified = verify(token, &keys, &validation, args.now).map_err(VerifyFailure::Token)?;
    let kind = match verified.kind {
        Some(TokenKind::Access) => Value::from("access"),
        Some(TokenKind::Refresh) => Value::from("refresh"),
        None => Value::Null,
    };
    let doc = json!({ "header": verified.header_json, "claims": verified.claims_json, "kind": kind });
    Ok(serde_json::to_string_pretty(&doc).unwrap_or_default())
}

/// Why `jwt jwks` failed.
#[derive(Debug, thiserror::Error)]
pub enum JwksFailure {
    /// The store could not be read (no data directory, no database, another format...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored signing keys do not rebuild a key set.
    #[error("the stored phantom signing keys are unusable ({0}): the server makes new ones on its next jwks request")]
    Keys(#[from] SignError),
}

/// The public keys `jwt jwks` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedKeys {
    /// The JWK Set document (`{"keys":[...]}`).
    pub json: String,
    /// How many keys it holds; 0 when the server never made any.
    pub keys: usize,
}

/// Seconds a retired key stays published after the last `exp` it signed: the
/// server's own grace (the validators' default leeway).
const PUBLISH_GRACE_SECS: u64 = 60;

/// The public JWK Set of the phantom-token signing keys stored in the data
/// directory `data`, as the server publishes it at `now` (Unix seconds): the
/// current key and the retired keys whose tokens may still be valid. Reads
/// the store without creating anything; no keys gives `{"keys":[]}`.
pub fn jwt_jwks(data: &Path, now: u64) -> Result<PublishedKeys, JwksFailure> {
    let state = Store::read(data, &ServerConfig::default())?;
    if state.accounts().signing_keys().is_empty() {
        return Ok(PublishedKeys { json: JwkSet::default().to_json(), keys: 0 });
    }
    // Only the publication rule matters here; issuer and audience are not used.
    let config = SignerConfig { publish_grace_secs: PUBLISH_GRACE_SECS, ..SignerConfig::new("", "") };
    let set = SigningKeys::restore(config, state.accounts().signing_keys())?.jwks(now);
    Ok(PublishedKeys { json: set.to_json(), keys: set.len() })
}
