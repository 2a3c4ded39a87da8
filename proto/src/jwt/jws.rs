//! The JWS layer (RFC 7515, compact serialization): splitting a token,
//! decoding and checking its header, choosing the key, and the two
//! signature primitives, RS256 and ES256.

use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature as EcSignature, SigningKey};
use rsa::pkcs1v15::Signature as RsaSignature;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use super::error::{JwtError, Part};
use super::jwk::{EcKey, Jwk, JwkSet, PublicKey, RsaKey};
use super::{b64_decode, b64_encode, clip, is_json_object};
use crate::token::TokenKind;

/// The signature algorithms accepted (RFC 7518 section 3.1 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 using SHA-256.
    Rs256,
    /// ECDSA using P-256 and SHA-256.
    Es256,
}

impl Algorithm {
    /// The JOSE name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
        }
    }

    /// Maps an `alg` value to an accepted algorithm or the reason it is refused.
    pub fn from_name(alg: &str) -> Result<Algorithm, JwtError> {
        match alg {
            "RS256" => Ok(Algorithm::Rs256),
            "ES256" => Ok(Algorithm::Es256),
            _ if alg.eq_ignore_ascii_case("none") => Err(JwtError::AlgNone),
            _ if alg.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("HS")) => Err(JwtError::AlgHmac(clip(alg))),
            _ => Err(JwtError::AlgNotAllowed(clip(alg))),
        }
    }

    fn fits(self, key: &PublicKey) -> bool {
        matches!((self, key), (Algorithm::Rs256, PublicKey::Rsa(_)) | (Algorithm::Es256, PublicKey::Ec(_)))
    }
}

/// The checked protected header of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `alg`.
    pub alg: Algorithm,
    /// `kid`, if any.
    pub kid: Option<String>,
    /// `typ`, if any (`JWT` or `at+jwt`, in any case, optionally `application/`-prefixed).
    pub typ: Option<String>,
}

impl Header {
    /// The token kind the header implies: `at+jwt` (RFC 9068) means an access token.
    pub(crate) fn kind_marker(&self) -> Option<TokenKind> {
        self.typ.as_deref().filter(|t| media_type(t) == "at+jwt").map(|_| TokenKind::Access)
    }
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
    typ: Option<String>,
    crit: Option<IgnoredAny>,
    jku: Option<IgnoredAny>,
    x5u: Option<IgnoredAny>,
    jwk: Option<IgnoredAny>,
    x5c: Option<IgnoredAny>,
}

/// A token cut into its parts, the header checked, nothing verified yet.
pub(crate) struct Compact<'a> {
    pub header: Header,
    pub header_json: Map<String, Value>,
    /// `BASE64URL(header) '.' BASE64URL(payload)`: what the signature covers.
    pub signing_input: &'a [u8],
    pub payload_b64: &'a [u8],
    pub signature_b64: &'a [u8],
}

/// Splits a compact JWS and checks its header (steps 1 to 5 of RFC 7515
/// section 5.2, plus the RFC 8725 algorithm rules).
pub(crate) fn parse(token: &[u8]) -> Result<Compact<'_>, JwtError> {
    let mut dots = token.iter().enumerate().filter(|(_, b)| **b == b'.').map(|(i, _)| i);
    let (Some(first), Some(second), None) = (dots.next(), dots.next(), dots.next()) else {
        return Err(JwtError::Format);
    };
    let header_b64 = &token[..first];
    let payload_b64 = &token[first + 1..second];
    let signature_b64 = &token[second + 1..];

    let header_bytes = b64_decode(header_b64).ok_or(JwtError::Base64(Part::Header))?;
    if !is_json_object(&header_bytes) {
        return Err(JwtError::Json(Part::Header));
    }
    let raw: RawHeader = serde_json::from_slice(&header_bytes).map_err(|_| JwtError::Json(Part::Header))?;
    let header_json: Map<String, Value> =
        serde_json::from_slice(&header_bytes).map_err(|_| JwtError::Json(Part::Header))?;

    let alg = Algorithm::from_name(raw.alg.as_deref().ok_or(JwtError::MissingAlg)?)?;
    if raw.crit.is_some() {
        return Err(JwtError::UnsupportedCrit);
    }
    for (present, name) in [(&raw.jku, "jku"), (&raw.x5u, "x5u"), (&raw.jwk, "jwk"), (&raw.x5c, "x5c")] {
        if present.is_some() {
            return Err(JwtError::EmbeddedKey(name));
        }
    }
    if let Some(typ) = raw.typ.as_deref() {
        let media = media_type(typ);
        if media != "jwt" && media != "at+jwt" {
            return Err(JwtError::HeaderType(clip(typ)));
        }
    }
    Ok(Compact {
        header: Header { alg, kid: raw.kid, typ: raw.typ },
        header_json,
        signing_input: &token[..second],
        payload_b64,
        signature_b64,
    })
}

/// `typ` compared as RFC 7515 section 4.1.9 says: case-insensitively, with
/// an optional `application/` prefix.
fn media_type(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    lower.strip_prefix("application/").map(str::to_owned).unwrap_or(lower)
}

/// Chooses the key for a header: by `kid`, or the only key fitting the
/// algorithm when there is no `kid`; then checks the key may verify with it.
pub(crate) fn select_key<'k>(header: &Header, keys: &'k JwkSet) -> Result<&'k Jwk, JwtError> {
    let key = match &header.kid {
        Some(kid) => match keys.get(kid) {
            Some(key) => key,
            None => {
                return Err(match keys.skipped().iter().find(|s| s.kid.as_deref() == Some(kid.as_str())) {
                    Some(skipped) => JwtError::UnusableKey { kid: clip(kid), reason: skipped.reason.clone() },
                    None => JwtError::UnknownKid(clip(kid)),
                });
            }
        },
        None => {
            let mut fitting = keys.keys().iter().filter(|k| header.alg.fits(&k.key) && k.can_verify());
            match (fitting.next(), fitting.next()) {
                (Some(key), None) => key,
                (None, _) => return Err(JwtError::NoKey),
                (Some(_), Some(_)) => return Err(JwtError::AmbiguousKey),
            }
        }
    };
    if !header.alg.fits(&key.key) {
        return Err(JwtError::KeyTypeMismatch { alg: header.alg.name(), kty: key.key.kty() });
    }
    if let Some(key_alg) = &key.alg
        && key_alg != header.alg.name()
    {
        return Err(JwtError::KeyAlgMismatch { alg: header.alg.name(), key_alg: clip(key_alg) });
    }
    if !key.can_verify() {
        return Err(JwtError::KeyNotForSigning);
    }
    Ok(key)
}

/// Verifies a signature over `message` with the key, for the algorithm the
/// key was selected for.
pub(crate) fn verify_with(alg: Algorithm, key: &PublicKey, message: &[u8], signature: &[u8]) -> Result<(), JwtError> {
    match (alg, key) {
        (Algorithm::Rs256, PublicKey::Rsa(k)) => verify_rs256(k, message, signature),
        (Algorithm::Es256, PublicKey::Ec(k)) => verify_es256(k, message, signature),
        _ => Err(JwtError::KeyTypeMismatch { alg: alg.name(), kty: key.kty() }),
    }
}

/// RS256: RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 section 8.2.2). The
/// signature must be exactly as long as the modulus.
pub fn verify_rs256(key: &RsaKey, message: &[u8], signature: &[u8]) -> Result<(), JwtError> {
    if signature.len() != key.signature_len() {
        return Err(JwtError::SignatureLength { expected: key.signature_len(), found: signature.len() });
    }
    let signature = RsaSignature::try_from(signature).map_err(|_| JwtError::BadSignature)?;
    key.verifying_key().verify(message, &signature).map_err(|_| JwtError::BadSignature)
}

/// ES256: ECDSA P-256 with SHA-256; the signature is `r || s`, 32 bytes
/// each, big-endian (RFC 7518 section 3.4, IEEE P1363), not DER.
pub fn verify_es256(key: &EcKey, message: &[u8], signature: &[u8]) -> Result<(), JwtError> {
    if signature.len() != 64 {
        return Err(JwtError::SignatureLength { expected: 64, found: signature.len() });
    }
    let signature = EcSignature::from_slice(signature).map_err(|_| JwtError::BadSignature)?;
    key.verifying_key().verify(message, &signature).map_err(|_| JwtError::BadSignature)
}

/// Signs `claims` (a serialized JSON object) as an ES256 compact JWS with
/// header `{"alg":"ES256","typ":"JWT","kid":kid}`. ECDSA nonces are
/// derived deterministically (RFC 6979), so signing needs no randomness.
#[must_use]
pub fn sign_es256(key: &SigningKey, kid: &str, claims: &[u8]) -> String {
    let header = serde_json::json!({ "alg": "ES256", "typ": "JWT", "kid": kid }).to_string();
    let mut token = b64_encode(header.as_bytes());
    token.push('.');
    token.push_str(&b64_encode(claims));
    let signature: EcSignature = key.sign(token.as_bytes());
    token.push('.');
    token.push_str(&b64_encode(&signature.to_bytes()));
    token
}

/// Decodes the signature part.
pub(crate) fn decode_signature(compact: &Compact<'_>) -> Result<Vec<u8>, JwtError> {
    b64_decode(compact.signature_b64).ok_or(JwtError::Base64(Part::Signature))
}
