//! JSON Web Keys and JWK Sets (RFC 7517), public keys only: `kty: RSA`
//! (`n`, `e`) and `kty: EC` with `crv: P-256` (`x`, `y`).
//!
//! A set keeps every key it can use and lists the others in
//! [`JwkSet::skipped`] with the reason (an OIDC provider may publish
//! encryption keys, other curves or algorithms next to its signing keys:
//! one key of an unsupported kind must not make the whole set unusable).
//! A document that is not a JWK Set at all, or that names one `kid` twice,
//! is rejected as a whole.

use p256::ecdsa::VerifyingKey as EcVerifyingKey;
use rsa::pkcs1v15::VerifyingKey as RsaVerifyingKey;
use rsa::{BoxedUint, RsaPublicKey};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{b64_decode, b64_encode, clip, is_json_object};

/// Smallest accepted RSA modulus, in bits (RFC 7518 section 3.3 and NIST SP 800-131A).
pub const RSA_MIN_BITS: usize = 2048;
/// Largest accepted RSA modulus, in bits (bounds the cost of one verification).
pub const RSA_MAX_BITS: usize = 8192;
/// Largest JWK Set document accepted, in bytes.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most keys in one JWK Set.
pub const MAX_KEYS: usize = 64;

/// Why one key is unusable. In a set, the key is skipped with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No `kty` member.
    #[error("the key has no kty")]
    MissingKty,
    /// A `kty` other than `RSA` and `EC` (for example `oct` or `OKP`).
    #[error("unsupported key type {0:?}")]
    UnsupportedKty(String),
    /// An EC key with a curve other than `P-256`.
    #[error("unsupported curve {0:?}")]
    UnsupportedCurve(String),
    /// A required member (`n`, `e`, `crv`, `x`, `y`) is missing.
    #[error("the key has no {0}")]
    MissingMember(&'static str),
    /// A member is not unpadded base64url.
    #[error("key member {0} is not unpadded base64url")]
    Base64(&'static str),
    /// The key carries private members (`d`, `p`, `q`, `dp`, `dq`, `qi`,
    /// `oth`, `k`): a published key whose private half is public is not trusted.
    #[error("the key carries private key material")]
    PrivateMaterial,
    /// An RSA modulus under [`RSA_MIN_BITS`].
    #[error("RSA modulus of {0} bits is under the 2048-bit minimum")]
    RsaTooSmall(usize),
    /// An RSA modulus over [`RSA_MAX_BITS`].
    #[error("RSA modulus of {0} bits is over the 8192-bit maximum")]
    RsaTooLarge(usize),
    /// An RSA exponent out of range (even, 1, or over 2^33 - 1) or a modulus that is not a valid RSA modulus.
    #[error("invalid RSA public key")]
    RsaInvalid,
    /// An EC coordinate that is not exactly 32 bytes (RFC 7518 section 6.2.1.2).
    #[error("EC coordinate {0} is not 32 bytes")]
    EcCoordinateLength(&'static str),
    /// The point is not on the P-256 curve.
    #[error("the point is not on the P-256 curve")]
    EcNotOnCurve,
}

/// Why a JWK or JWK Set document was rejected as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    /// The document is over [`MAX_JWKS_BYTES`].
    #[error("the document is over {0} bytes")]
    TooLarge(usize),
    /// Not a JSON object of the expected shape (a set needs a `keys` array of objects).
    #[error("not a JWK Set: {0}")]
    Json(String),
    /// More than [`MAX_KEYS`] keys.
    #[error("more than {0} keys")]
    TooManyKeys(usize),
    /// Two usable keys share one `kid`: a token naming it would be ambiguous.
    #[error("kid {0:?} appears twice")]
    DuplicateKid(String),
    /// A single JWK (not a set) is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// An RSA public key for RS256, with its encoded form kept for publishing.
#[derive(Debug, Clone)]
pub struct RsaKey {
    verifying: RsaVerifyingKey<Sha256>,
    n: Vec<u8>,
    e: Vec<u8>,
    bits: usize,
}

impl RsaKey {
    /// A key from its big-endian modulus and exponent (leading zero bytes allowed).
    pub fn from_components(n: &[u8], e: &[u8]) -> Result<RsaKey, KeyError> {
        let n = strip_zeros(n);
        let e = strip_zeros(e);
        let bits = match n.first() {
            None => 0,
            Some(top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
        };
        if bits < RSA_MIN_BITS {
            return Err(KeyError::RsaTooSmall(bits));
        }
        if bits > RSA_MAX_BITS {
            return Err(KeyError::RsaTooLarge(bits));
        }
        // 2^33 - 1 is the largest exponent the rsa crate accepts: at most 5 bytes.
        if e.is_empty() || e.len() > 5 {
            return Err(KeyError::RsaInvalid);
        }
        let precision = u32::try_from(n.len() * 8).map_err(|_| KeyError::RsaInvalid)?;
        let big_n = BoxedUint::from_be_slice(n, precision).map_err(|_| KeyError::RsaInvalid)?;
        let big_e = BoxedUint::from_be_slice(e, precision).map_err(|_| KeyError::RsaInvalid)?;
        let key = RsaPublicKey::new_with_size_limits(big_n, big_e, RSA_MIN_BITS..=RSA_MAX_BITS)
            .map_err(|_| KeyError::RsaInvalid)?;
        Ok(RsaKey { verifying: RsaVerifyingKey::new(key), n: n.to_vec(), e: e.to_vec(), bits })
    }

    /// Modulus size in bits.
    #[must_use]
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// Length of a signature made with this key, in bytes.
    #[must_use]
    pub fn signature_len(&self) -> usize {
        self.n.len()
    }

    pub(crate) fn verifying_key(&self) -> &RsaVerifyingKey<Sha256> {
        &self.verifying
    }
}

impl PartialEq for RsaKey {
    fn eq(&self, other: &Self) -> bool {
        self.n == other.n && self.e == other.e
    }
}

impl Eq for RsaKey {}

/// A P-256 public key for ES256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcKey {
    verifying: EcVerifyingKey,
    x: [u8; 32],
    y: [u8; 32],
}

impl EcKey {
    /// A key from its affine coordinates (32 bytes each, big-endian); the
    /// point must be on the curve.
    pub fn from_coordinates(x: &[u8], y: &[u8]) -> Result<EcKey, KeyError> {
        let x: [u8; 32] = x.try_into().map_err(|_| KeyError::EcCoordinateLength("x"))?;
        let y: [u8; 32] = y.try_into().map_err(|_| KeyError::EcCoordinateLength("y"))?;
        let mut sec1 = [0u8; 65];
        sec1[0] = 0x04;
        sec1[1..33].copy_from_slice(&x);
        sec1[33..].copy_from_slice(&y);
        let verifying = EcVerifyingKey::from_sec1_bytes(&sec1).map_err(|_| KeyError::EcNotOnCurve)?;
        Ok(EcKey { verifying, x, y })
    }

    /// The public half of a signing key.
    #[must_use]
    pub fn from_verifying_key(verifying: &EcVerifyingKey) -> EcKey {
        let point = verifying.to_sec1_point(false);
        let bytes = point.as_bytes();
        let mut x = [0u8; 32];
        let mut y = [0u8; 32];
        // An uncompressed SEC1 point of a valid key is 0x04 || x || y.
        if bytes.len() == 65 {
            x.copy_from_slice(&bytes[1..33]);
            y.copy_from_slice(&bytes[33..]);
        }
        EcKey { verifying: *verifying, x, y }
    }

    /// The RFC 7638 thumbprint: base64url(SHA-256 of `{"crv","kty","x","y"}` in that order, no spaces).
    #[must_use]
    pub fn thumbprint(&self) -> String {
        let canonical =
            format!(r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#, b64_encode(&self.x), b64_encode(&self.y));
        b64_encode(&Sha256::digest(canonical.as_bytes()))
    }

    pub(crate) fn verifying_key(&self) -> &EcVerifyingKey {
        &self.verifying
    }
}

/// The public key material of a JWK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// `kty: RSA`.
    Rsa(RsaKey),
    /// `kty: EC`, `crv: P-256`.
    Ec(EcKey),
}

impl PublicKey {
    /// The JWK `kty`.
    #[must_use]
    pub fn kty(&self) -> &'static str {
        match self {
            PublicKey::Rsa(_) => "RSA",
            PublicKey::Ec(_) => "EC",
        }
    }
}

/// One public JSON Web Key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    /// Key id (`kid`).
    pub kid: Option<String>,
    /// The one algorithm the key may be used with (`alg`), if it says.
    pub alg: Option<String>,
    /// Intended use (`use`): `sig` or `enc`.
    pub key_use: Option<String>,
    /// Permitted operations (`key_ops`).
    pub key_ops: Option<Vec<String>>,
    /// The key.
    pub key: PublicKey,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    key_use: Option<String>,
    key_ops: Option<Vec<String>>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    d: Option<IgnoredAny>,
    p: Option<IgnoredAny>,
    q: Option<IgnoredAny>,
    dp: Option<IgnoredAny>,
    dq: Option<IgnoredAny>,
    qi: Option<IgnoredAny>,
    oth: Option<IgnoredAny>,
    k: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<RawJwk>,
}

impl Jwk {
    /// Parses one JWK (a JSON object).
    pub fn from_json(json: &[u8]) -> Result<Jwk, JwkError> {
        if json.len() > MAX_JWKS_BYTES {
            return Err(JwkError::TooLarge(MAX_JWKS_BYTES));
        }
        if !is_json_object(json) {
            return Err(JwkError::Json("not an object".into()));
        }
        let raw: RawJwk = serde_json::from_slice(json).map_err(|e| JwkError::Json(e.to_string()))?;
        Ok(Jwk::from_raw(raw)?)
    }

    fn from_raw(raw: RawJwk) -> Result<Jwk, KeyError> {
        let private = [&raw.d, &raw.p, &raw.q, &raw.dp, &raw.dq, &raw.qi, &raw.oth, &raw.k];
        let kty = raw.kty.ok_or(KeyError::MissingKty)?;
        let key = match kty.as_str() {
            "RSA" => {
                if private.iter().any(|m| m.is_some()) {
                    return Err(KeyError::PrivateMaterial);
                }
                let n = member(raw.n.as_deref(), "n")?;
                let e = member(raw.e.as_deref(), "e")?;
                PublicKey::Rsa(RsaKey::from_components(&n, &e)?)
            }
            "EC" => {
                let crv = raw.crv.ok_or(KeyError::MissingMember("crv"))?;
                if crv != "P-256" {
                    return Err(KeyError::UnsupportedCurve(clip(&crv)));
                }
                if private.iter().any(|m| m.is_some()) {
                    return Err(KeyError::PrivateMaterial);
                }
                let x = member(raw.x.as_deref(), "x")?;
                let y = member(raw.y.as_deref(), "y")?;
                PublicKey::Ec(EcKey::from_coordinates(&x, &y)?)
            }
            other => return Err(KeyError::UnsupportedKty(clip(other))),
        };
        Ok(Jwk { kid: raw.kid, alg: raw.alg, key_use: raw.key_use, key_ops: raw.key_ops, key })
    }

    /// A key with no `kid`, `alg`, `use` or `key_ops`.
    #[must_use]
    pub fn new(key: PublicKey) -> Jwk {
        Jwk { kid: None, alg: None, key_use: None, key_ops: None, key }
    }

    /// False for keys marked for encryption (`use` other than `sig`, or
    /// `key_ops` without `verify`).
    #[must_use]
    pub fn can_verify(&self) -> bool {
        let use_ok = self.key_use.as_deref().is_none_or(|u| u == "sig");
        let ops_ok = self.key_ops.as_ref().is_none_or(|ops| ops.iter().any(|o| o == "verify"));
        use_ok && ops_ok
    }

    /// The public JWK as a JSON object (members in RFC order, base64url values).
    #[must_use]
    pub fn to_json_value(&self) -> Value {
        let mut map = Map::new();
        match &self.key {
            PublicKey::Rsa(k) => {
                map.insert("kty".into(), json!("RSA"));
                map.insert("n".into(), json!(b64_encode(&k.n)));
                map.insert("e".into(), json!(b64_encode(&k.e)));
            }
            PublicKey::Ec(k) => {
                map.insert("kty".into(), json!("EC"));
                map.insert("crv".into(), json!("P-256"));
                map.insert("x".into(), json!(b64_encode(&k.x)));
                map.insert("y".into(), json!(b64_encode(&k.y)));
            }
        }
        if let Some(kid) = &self.kid {
            map.insert("kid".into(), json!(kid));
        }
        if let Some(alg) = &self.alg {
            map.insert("alg".into(), json!(alg));
        }
        if let Some(key_use) = &self.key_use {
            map.insert("use".into(), json!(key_use));
        }
        if let Some(ops) = &self.key_ops {
            map.insert("key_ops".into(), json!(ops));
        }
        Value::Object(map)
    }
}

/// A key of a set that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// Its `kid`, if it had one.
    pub kid: Option<String>,
    /// Why it was skipped.
    pub reason: KeyError,
}

/// A JWK Set: the usable keys, looked up by `kid`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwkSet {
    keys: Vec<Jwk>,
    skipped: Vec<SkippedKey>,
}

impl JwkSet {
    /// Parses a JWK Set document (`{"keys": [...]}`).
    pub fn parse(json: &[u8]) -> Result<JwkSet, JwkError> {
        if json.len() > MAX_JWKS_BYTES {
            return Err(JwkError::TooLarge(MAX_JWKS_BYTES));
        }
        // A first, untyped pass checks the shape (serde's derived structs
        // would also take arrays); the typed pass rejects duplicate members.
        let shape: Value = serde_json::from_slice(json).map_err(|e| JwkError::Json(e.to_string()))?;
        let keys = shape
            .as_object()
            .and_then(|o| o.get("keys"))
            .and_then(Value::as_array)
            .ok_or_else(|| JwkError::Json("no keys array".into()))?;
        if keys.len() > MAX_KEYS {
            return Err(JwkError::TooManyKeys(MAX_KEYS));
        }
        if !keys.iter().all(Value::is_object) {
            return Err(JwkError::Json("a key is not an object".into()));
        }
        let raw: RawSet = serde_json::from_slice(json).map_err(|e| JwkError::Json(e.to_string()))?;
        let mut set = JwkSet::default();
        for raw_key in raw.keys {
            let kid = raw_key.kid.clone();
            match Jwk::from_raw(raw_key) {
                Ok(key) => set.insert(key)?,
                Err(reason) => set.skipped.push(SkippedKey { kid, reason }),
            }
        }
        Ok(set)
    }

    /// A set of the given keys; `kid`s must be distinct.
    pub fn from_keys(keys: impl IntoIterator<Item = Jwk>) -> Result<JwkSet, JwkError> {
        let mut set = JwkSet::default();
        for key in keys {
            set.insert(key)?;
        }
        Ok(set)
    }

    fn insert(&mut self, key: Jwk) -> Result<(), JwkError> {
        if let Some(kid) = &key.kid
            && self.get(kid).is_some()
        {
            return Err(JwkError::DuplicateKid(clip(kid)));
        }
        if self.keys.len() >= MAX_KEYS {
            return Err(JwkError::TooManyKeys(MAX_KEYS));
        }
        self.keys.push(key);
        Ok(())
    }

    /// The key with this `kid`.
    #[must_use]
    pub fn get(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }

    /// The usable keys, in document order.
    #[must_use]
    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }

    /// The keys that were skipped, with the reason.
    #[must_use]
    pub fn skipped(&self) -> &[SkippedKey] {
        &self.skipped
    }

    /// Number of usable keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is usable.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The set as a JSON document (usable keys only).
    #[must_use]
    pub fn to_json(&self) -> String {
        let keys: Vec<Value> = self.keys.iter().map(Jwk::to_json_value).collect();
        json!({ "keys": keys }).to_string()
    }
}

fn member(value: Option<&str>, name: &'static str) -> Result<Vec<u8>, KeyError> {
    let text = value.ok_or(KeyError::MissingMember(name))?;
    b64_decode(text.as_bytes()).ok_or(KeyError::Base64(name))
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}
