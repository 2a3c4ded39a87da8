//! Why a JWT was rejected: one variant per reason.

use std::fmt;

use super::jwk::KeyError;
use crate::token::TokenKind;

/// One of the three parts of a compact JWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// The protected header (first part).
    Header,
    /// The payload: the JWT claims set (second part).
    Payload,
    /// The signature (third part).
    Signature,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Header => "header",
            Part::Payload => "payload",
            Part::Signature => "signature",
        })
    }
}

/// Why a JWT did not verify. The variants are checked in the order they are
/// listed: format, then header, then key, then signature, then claims. No
/// claim is looked at before the signature has verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// The token is longer than [`Validation::max_token_len`](super::Validation::max_token_len).
    #[error("token is longer than {max} bytes")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// Not three dot-separated parts (a JWE has five; JSON serializations are not accepted).
    #[error("not a compact JWS: expected three dot-separated parts")]
    Format,
    /// A part is not unpadded base64url.
    #[error("the {0} is not unpadded base64url")]
    Base64(Part),
    /// The header or payload is not a JSON object of the expected shape
    /// (including a duplicated member such as two `alg`).
    #[error("the {0} is not a valid JSON object")]
    Json(Part),
    /// The header has no `alg`.
    #[error("the header has no alg")]
    MissingAlg,
    /// `alg: none` (in any letter case): unsigned tokens are never accepted.
    #[error("alg none is never accepted")]
    AlgNone,
    /// An HMAC algorithm (`HS256`, `HS384`, `HS512`, ...): never accepted,
    /// which also defeats the "public key as HMAC secret" confusion.
    #[error("HMAC algorithm {0} is never accepted")]
    AlgHmac(String),
    /// Any other algorithm than `RS256` and `ES256`.
    #[error("algorithm {0} is not allowed (RS256 and ES256 only)")]
    AlgNotAllowed(String),
    /// The header carries a key or a key location (`jku`, `x5u`, `jwk`,
    /// `x5c`): keys come only from the configured JWK Set.
    #[error("the header carries a key reference ({0}); keys come only from the configured JWK Set")]
    EmbeddedKey(&'static str),
    /// The header has a `crit` member: no extension is understood here.
    #[error("the header lists critical extensions, none of which is supported")]
    UnsupportedCrit,
    /// The header `typ` is neither `JWT` nor `at+jwt` (another kind of JWT,
    /// such as a logout token, must not pass for an access token).
    #[error("header typ {0:?} is not JWT or at+jwt")]
    HeaderType(String),
    /// The header names a `kid` that is not in the key set.
    #[error("no key with kid {0:?} in the key set")]
    UnknownKid(String),
    /// The header names a `kid` the key set lists but could not use (an RSA
    /// key under 2048 bits, an unsupported curve, ...).
    #[error("the key {kid:?} is unusable: {reason}")]
    UnusableKey {
        /// The `kid`.
        kid: String,
        /// Why the key set skipped it.
        reason: KeyError,
    },
    /// The header has no `kid` and the key set has no key usable with its `alg`.
    #[error("no kid and no key in the set for this algorithm")]
    NoKey,
    /// The header has no `kid` and the key set has several keys usable with
    /// its `alg`: a `kid` is required to choose.
    #[error("no kid and several keys in the set for this algorithm")]
    AmbiguousKey,
    /// The algorithm does not fit the key type (`ES256` with an RSA key, `RS256` with an EC key).
    #[error("{alg} cannot be used with a {kty} key")]
    KeyTypeMismatch {
        /// The token's algorithm.
        alg: &'static str,
        /// The key's `kty`.
        kty: &'static str,
    },
    /// The key names another `alg` than the token's.
    #[error("the key is restricted to {key_alg}, the token uses {alg}")]
    KeyAlgMismatch {
        /// The token's algorithm.
        alg: &'static str,
        /// The key's `alg`.
        key_alg: String,
    },
    /// The key is for encryption (`use: enc`, or `key_ops` without `verify`).
    #[error("the key is not a signature verification key")]
    KeyNotForSigning,
    /// The signature has the wrong length for the key (`ES256`: 64 bytes;
    /// `RS256`: the modulus length). A DER-encoded ECDSA signature lands here.
    #[error("signature is {found} bytes, expected {expected}")]
    SignatureLength {
        /// Expected length.
        expected: usize,
        /// Actual length.
        found: usize,
    },
    /// The signature does not verify with the key.
    #[error("bad signature")]
    BadSignature,
    /// The token has no `exp`, or another claim that validation requires.
    #[error("the claims set has no {0}")]
    MissingClaim(&'static str),
    /// A registered claim has the wrong JSON type (for example `exp` as a string).
    #[error("claim {0} has the wrong type")]
    BadClaim(&'static str),
    /// `now >= exp + leeway`.
    #[error("token expired at {exp} (now {now})")]
    Expired {
        /// The `exp` claim.
        exp: i64,
        /// The time given.
        now: u64,
    },
    /// `now + leeway < nbf`.
    #[error("token not valid before {nbf} (now {now})")]
    NotYetValid {
        /// The `nbf` claim.
        nbf: i64,
        /// The time given.
        now: u64,
    },
    /// `iat > now + leeway`: the issuer's clock is ahead or the token is forged.
    #[error("token issued in the future at {iat} (now {now})")]
    IssuedInFuture {
        /// The `iat` claim.
        iat: i64,
        /// The time given.
        now: u64,
    },
    /// `iss` is not the configured issuer.
    #[error("wrong issuer {0:?}")]
    WrongIssuer(String),
    /// `aud` does not contain the configured audience.
    #[error("the audience does not include this service")]
    WrongAudience,
    /// `azp` is not one of the allowed authorized parties.
    #[error("authorized party {0:?} is not allowed")]
    WrongAzp(String),
    /// The token is of another kind than expected (a refresh token where an
    /// access token is required, an ID token, ...).
    #[error("expected a {expected:?} token, found {found:?}")]
    WrongType {
        /// What the caller requires.
        expected: TokenKind,
        /// The marker found (`type`, `typ` claim or header `typ` value).
        found: String,
    },
    /// The token's kind markers disagree (for example `type: access` with
    /// Keycloak's `typ: Refresh`): it is neither kind.
    #[error("the token's type markers contradict each other")]
    AmbiguousType,
}
