//! JSON Web Tokens for confab: a small in-house JWS verifier and signer, JWK
//! Sets, a caching validator, the phantom-token signer and third-party codes.
//!
//! Everything here is sans-IO like the rest of the crate: time is passed in
//! (`now`, Unix **seconds** for JWTs, Unix **milliseconds** for codes),
//! randomness comes from a [`rand::CryptoRng`] the caller owns, and nothing
//! fetches anything: a [`JwtValidator`] *asks* for a JWK Set through
//! [`JwtValidator::poll_fetch`] and is handed the bytes back.
//!
//! ## What is accepted (RFC 7515, RFC 7517, RFC 7519, RFC 8725)
//!
//! - Compact serialization only (`header.payload.signature`, unpadded
//!   base64url); JWE and the JSON serializations are rejected.
//! - Algorithms: `RS256` (RSASSA-PKCS1-v1_5 with SHA-256, RSA keys of 2048 to
//!   8192 bits) and `ES256` (ECDSA P-256 with SHA-256, the 64-byte `r || s`
//!   signature). `none` and every `HS*` are rejected by name; anything else is
//!   not allowed.
//! - The algorithm is bound to the key: `RS256` only with a `kty: RSA` key,
//!   `ES256` only with a `kty: EC`, `crv: P-256` key, and if the key names an
//!   `alg`, the token's must equal it. Keys marked `use: enc` (or whose
//!   `key_ops` lack `verify`) never verify anything.
//! - Keys come only from the configured JWK Set: a token whose header carries
//!   `jku`, `x5u`, `jwk` or `x5c` is **rejected** (not merely ignored), so
//!   an attempt to smuggle a key in is visible in the logs.
//! - `crit` is rejected whatever it lists: this verifier understands no
//!   extension.
//! - Claims are checked only after the signature: `exp` is required; `nbf`
//!   and `iat` are checked when present; `iss`, `aud`, `azp`, `sub` and the
//!   token kind as configured in [`Validation`], all with a leeway.
//!
//! `docs/AUTH.md` lists every rejection reason with its meaning.

mod claims;
mod codes;
mod error;
mod jwk;
mod jws;
mod signer;
mod validator;
mod verify;

#[cfg(test)]
mod tests;

pub use claims::{Claims, Validation};
pub use codes::{
    CODE_MAX_TTL_MS, IssueCodeError, IssuedCode, MAX_AUDIENCE_LEN, MAX_USERNAME_LEN, UsedCodes, VerifyCodeError,
    issue_code, verify_code,
};
pub use error::{JwtError, Part};
pub use jwk::{
    EcKey, Jwk, JwkError, JwkSet, KeyError, MAX_JWKS_BYTES, MAX_KEYS, PublicKey, RSA_MAX_BITS, RSA_MIN_BITS, RsaKey,
    SkippedKey,
};
pub use jws::{Algorithm, Header, sign_es256, verify_es256, verify_rs256};
pub use signer::{KeyRecord, MintRequest, Minted, SignError, SignerConfig, SigningKeys, jti};
pub use validator::{FetchReason, FetchRequest, JwksUpdate, JwtValidator, ValidatorConfig};
pub use verify::{Verified, unverified_claims, verify};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Unpadded base64url encoding (RFC 4648 section 5), as JOSE uses it.
pub(crate) fn b64_encode(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Strict unpadded base64url decoding: padding, other alphabets and
/// non-canonical trailing bits are all rejected.
pub(crate) fn b64_decode(text: &[u8]) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// True when `json`, after leading whitespace, opens an object. serde's
/// derived structs also accept arrays; JOSE objects must be objects.
pub(crate) fn is_json_object(json: &[u8]) -> bool {
    json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// A copy of an attacker-controlled string short enough for an error or a log line.
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
