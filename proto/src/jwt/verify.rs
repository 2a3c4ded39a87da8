//! Verifying a JWT against a JWK Set: the JWS steps, then the claims.

use serde_json::{Map, Value};

use super::b64_decode;
use super::claims::{self, Claims, Validation};
use super::error::{JwtError, Part};
use super::jwk::JwkSet;
use super::jws::{self, Header};
use crate::token::TokenKind;

/// A token that verified: its header, claims and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The checked header.
    pub header: Header,
    /// The registered claims.
    pub claims: Claims,
    /// Access or refresh, when the token says (see [`Validation::kind`]).
    pub kind: Option<TokenKind>,
    /// The whole header as JSON, for display.
    pub header_json: Map<String, Value>,
    /// The whole claims set as JSON, for display and for claims this module does not model.
    pub claims_json: Map<String, Value>,
}

/// Verifies a compact JWS JWT with the keys of `keys` and checks its claims
/// against `validation` at `now` (Unix seconds).
///
/// Order: length, format, header (algorithm rules, `crit`, embedded keys,
/// `typ`), key choice and binding, signature, then claims. Nothing from the
/// payload is trusted or even parsed before the signature verifies.
pub fn verify(token: &str, keys: &JwkSet, validation: &Validation, now: u64) -> Result<Verified, JwtError> {
    let token = token.as_bytes();
    if token.len() > validation.max_token_len {
        return Err(JwtError::TooLong { max: validation.max_token_len });
    }
    let compact = jws::parse(token)?;
    let key = jws::select_key(&compact.header, keys)?;
    let signature = jws::decode_signature(&compact)?;
    jws::verify_with(compact.header.alg, &key.key, compact.signing_input, &signature)?;

    let payload = b64_decode(compact.payload_b64).ok_or(JwtError::Base64(Part::Payload))?;
    let (claims, claims_json) = claims::parse(&payload)?;
    let kind = validation.check(&compact.header, &claims, now)?;
    Ok(Verified { header: compact.header, claims, kind, header_json: compact.header_json, claims_json })
}

/// The claims of a token, **not verified**: only to route a frame to the
/// partition whose core verifies it (docs/PARTITIONS.md, "Routing frames"),
/// never to trust anything. Its header is checked as [`verify`] checks it.
///
/// # Errors
/// The token is not a compact JWS with a JSON object for claims.
pub fn unverified_claims(token: &[u8]) -> Result<Claims, JwtError> {
    let compact = jws::parse(token)?;
    let payload = b64_decode(compact.payload_b64).ok_or(JwtError::Base64(Part::Payload))?;
    Ok(claims::parse(&payload)?.0)
}
