//! Identity keys: RSA-2048, signatures RSA-PSS-SHA256, fingerprints, safety
//! numbers, and the private key at rest.
//!
//! Every user has one RSA-2048 key pair (seed 001). The public half travels
//! as a DER SubjectPublicKeyInfo (`rsaEncryption`, the form `openssl pkey
//! -pubout -outform DER` writes) and is pinned by peers; the private half
//! never leaves the client and only **signs** (RSASSA-PSS, SHA-256, MGF1
//! with SHA-256, 32-byte salt, RFC 8017 section 8.1). It never decrypts:
//! RUSTSEC-2023-0071 ("Marvin") shows the `rsa` crate's private-key
//! operation can leak timing, and decryption oracles are where that is
//! exploitable. Signing here is blinded, takes its randomness from the
//! caller, and happens only on the key owner's machine, on messages the
//! owner chose; no server ever holds a private key.
//!
//! * Fingerprint: SHA-256 of the SPKI DER, shown as 16 groups of 4 hex
//!   digits ([`Fingerprint`]).
//! * Safety number: 60 digits for a pair of users, as in Signal: for each
//!   user, `h = 0x0000 | spki | username`, then 5200 times
//!   `h = SHA-512(h | spki)`; the first 30 bytes of `h` make six 5-digit
//!   groups (each 5 bytes, big-endian, mod 100000). The two 30-digit halves
//!   are sorted, so both users compute the same number ([`safety_number`]).
//! * At rest ([`IdentityKey::encrypt_at_rest`]):
//!
//! ```text
//! version u8 (1) | m_cost_kib u32 | t_cost u32 | p_cost u32 | salt [16] | sealed
//! ```
//!
//! `sealed` is a raw blob ([`seal::seal_with_counter`], version 1, counter
//! 0) of the PKCS#8 DER under the keys `confab v1 at-rest enc` / `mac`
//! expanded from HKDF-SHA256(salt = `"confab identity at rest v1"`,
//! ikm = argon2id(password, salt, params)); its associated data is
//! `"confab identity at rest v1"` followed by the 29 header bytes, so the
//! parameters cannot be altered either. A fresh random salt each time means
//! fresh keys each time: counter 0 is never reused under one key.

use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::pss::{Signature, SigningKey, VerifyingKey};
use rsa::signature::{RandomizedSigner, SignatureEncoding, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256, Sha512};
use zeroize::Zeroizing;

use super::kdf::KeySchedule;
use super::seal::{self, OpenError};
use crate::server::HashParams;

/// The only identity key size: RSA-2048 (seed 001).
pub const IDENTITY_BITS: usize = 2048;
/// Bytes of an identity signature (the modulus size).
pub const SIGNATURE_LEN: usize = IDENTITY_BITS / 8;
/// PSS salt length: the SHA-256 output size.
pub const PSS_SALT_LEN: usize = 32;
/// Version byte of an at-rest blob.
pub const AT_REST_VERSION: u8 = 1;
/// The largest argon2 memory an at-rest blob may ask for (1 GiB), so a
/// corrupted profile cannot make the client allocate without bound.
pub const AT_REST_MAX_M_COST_KIB: u32 = 1 << 20;
/// The most argon2 passes an at-rest blob may ask for.
pub const AT_REST_MAX_T_COST: u32 = 64;
/// The most argon2 lanes an at-rest blob may ask for.
pub const AT_REST_MAX_P_COST: u32 = 16;

const AT_REST_HEADER_LEN: usize = 1 + 4 + 4 + 4 + 16;
const AT_REST_CONTEXT: &[u8] = b"confab identity at rest v1";
const SAFETY_ITERATIONS: usize = 5200;

/// Why a key could not be loaded, encoded or generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a DER key of the expected kind (PKCS#8 private key, SPKI public key, RSA).
    #[error("malformed key")]
    Malformed,
    /// An RSA key of another size than [`IDENTITY_BITS`].
    #[error("identity keys are RSA-{IDENTITY_BITS}, this one has {bits} bits")]
    UnsupportedSize {
        /// The modulus size.
        bits: usize,
    },
    /// A valid key in another encoding than its canonical DER.
    #[error("non-canonical key encoding")]
    NonCanonical,
    /// The key could not be DER-encoded.
    #[error("key encoding failed")]
    Encoding,
    /// Key generation failed.
    #[error("key generation failed")]
    Generation,
}

/// Why signing failed (an RSA error; not expected with a valid key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RSA-PSS signing failed")]
pub struct SignError;

/// Why a signature was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not [`SIGNATURE_LEN`] bytes.
    #[error("signature has {len} bytes, {SIGNATURE_LEN} expected")]
    WrongLength {
        /// The signature's length.
        len: usize,
    },
    /// Not a signature of this message by this key.
    #[error("bad signature")]
    BadSignature,
}

/// Why an at-rest blob did not give back a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtRestError {
    /// Shorter than its header and a sealed blob.
    #[error("encrypted identity key truncated")]
    Truncated,
    /// A version byte this code does not know.
    #[error("unknown encrypted identity key version {0}")]
    UnknownVersion(u8),
    /// argon2 parameters beyond the `AT_REST_MAX_*` bounds, or refused by argon2.
    #[error("argon2 parameters out of range")]
    BadParams,
    /// Wrong password, or the blob was altered.
    #[error("wrong password or corrupted key file")]
    WrongPassword,
    /// The key did not fit in one sealed blob (unreachable).
    #[error("identity key too long to seal")]
    TooLong,
    /// The decrypted bytes are not an identity key.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// SHA-256 of a public key's SPKI DER.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl std::fmt::Display for Fingerprint {
    /// 16 space-separated groups of 4 lowercase hex digits.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, pair) in self.0.chunks(2).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{:02x}{:02x}", pair[0], pair[1])?;
        }
        Ok(())
    }
}

/// A user's public identity key, as pinned by peers.
#[derive(Clone)]
pub struct PublicIdentity {
    key: VerifyingKey<Sha256>,
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicIdentity({})", self.fingerprint())
    }
}

impl PartialEq for PublicIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.spki_der == other.spki_der
    }
}

impl Eq for PublicIdentity {}

fn check_size(key: &RsaPublicKey) -> Result<(), KeyError> {
    let bits = key.n().bits() as usize;
    if bits == IDENTITY_BITS { Ok(()) } else { Err(KeyError::UnsupportedSize { bits }) }
}

impl PublicIdentity {
    /// Parses a DER SubjectPublicKeyInfo (`rsaEncryption`) holding an
    /// RSA-2048 key. Only the canonical encoding is accepted, so the bytes a
    /// peer pins and fingerprints are the bytes the server stores.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let key = RsaPublicKey::from_public_key_der(der).map_err(|_| KeyError::Malformed)?;
        check_size(&key)?;
        let identity = Self::from_key(key)?;
        if identity.spki_der != der {
            return Err(KeyError::NonCanonical);
        }
        Ok(identity)
    }

    fn from_key(key: RsaPublicKey) -> Result<Self, KeyError> {
        // Re-encode: the pinned and fingerprinted form is the canonical DER.
        let spki_der = key.to_public_key_der().map_err(|_| KeyError::Encoding)?.into_vec();
        Ok(Self { key: VerifyingKey::new_with_salt_len(key, PSS_SALT_LEN), spki_der })
    }

    /// The DER SubjectPublicKeyInfo (what the server stores and peers pin).
    #[must_use]
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// SHA-256 of [`spki_der`](Self::spki_der).
    #[must_use]
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(Sha256::digest(&self.spki_der).into())
    }

    /// Checks an RSA-PSS-SHA256 signature (salt 32) of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
        if signature.len() != SIGNATURE_LEN {
            return Err(VerifyError::WrongLength { len: signature.len() });
        }
        let signature = Signature::try_from(signature).map_err(|_| VerifyError::BadSignature)?;
        self.key.verify(message, &signature).map_err(|_| VerifyError::BadSignature)
    }
}

/// A user's identity key pair. Lives only on the user's client.
#[derive(Clone)]
pub struct IdentityKey {
    signing: SigningKey<Sha256>,
    public: PublicIdentity,
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityKey({})", self.public.fingerprint())
    }
}

impl IdentityKey {
    /// Generates a new RSA-2048 key. Slow: about a second in an optimized
    /// build, much more in a debug one (tests use the fixture keys).
    pub fn generate(rng: &mut impl rand::CryptoRng) -> Result<Self, KeyError> {
        let private = RsaPrivateKey::new(rng, IDENTITY_BITS).map_err(|_| KeyError::Generation)?;
        Self::from_private(private)
    }

    /// Loads a DER PKCS#8 RSA-2048 private key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let private = RsaPrivateKey::from_pkcs8_der(der).map_err(|_| KeyError::Malformed)?;
        Self::from_private(private)
    }

    fn from_private(private: RsaPrivateKey) -> Result<Self, KeyError> {
        let public_key = private.to_public_key();
        check_size(&public_key)?;
        let public = PublicIdentity::from_key(public_key)?;
        Ok(Self { signing: SigningKey::new_with_salt_len(private, PSS_SALT_LEN), public })
    }

    /// The DER PKCS#8 private key (wiped when dropped).
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let document = self.signing.to_pkcs8_der().map_err(|_| KeyError::Encoding)?;
        Ok(Zeroizing::new(document.as_bytes().to_vec()))
    }

    /// The public half.
    #[must_use]
    pub fn public(&self) -> &PublicIdentity {
        &self.public
    }

    /// Signs `message` with RSA-PSS-SHA256 (salt and blinding drawn from `rng`).
    pub fn sign(&self, rng: &mut impl rand::CryptoRng, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let signature = self.signing.try_sign_with_rng(rng, message).map_err(|_| SignError)?;
        Ok(signature.to_vec())
    }

    /// Encrypts the private key under `password` (argon2id with `params`
    /// and a fresh random salt), in the at-rest layout of the module docs.
    pub fn encrypt_at_rest(
        &self,
        rng: &mut impl rand::CryptoRng,
        password: &[u8],
        params: HashParams,
    ) -> Result<Vec<u8>, AtRestError> {
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut salt);
        let mut header = Vec::with_capacity(AT_REST_HEADER_LEN);
        header.push(AT_REST_VERSION);
        header.extend_from_slice(&params.m_cost_kib.to_be_bytes());
        header.extend_from_slice(&params.t_cost.to_be_bytes());
        header.extend_from_slice(&params.p_cost.to_be_bytes());
        header.extend_from_slice(&salt);
        let keys = at_rest_schedule(password, &salt, params)?.at_rest_keys();
        let der = self.to_pkcs8_der()?;
        let sealed = seal::seal_with_counter(&keys, 0, &at_rest_ad(&header), &der).map_err(|_| AtRestError::TooLong)?;
        header.extend_from_slice(&sealed);
        Ok(header)
    }

    /// Decrypts a blob from [`encrypt_at_rest`](Self::encrypt_at_rest).
    pub fn decrypt_at_rest(blob: &[u8], password: &[u8]) -> Result<Self, AtRestError> {
        if blob.len() < AT_REST_HEADER_LEN + seal::RAW_OVERHEAD {
            return Err(AtRestError::Truncated);
        }
        if blob[0] != AT_REST_VERSION {
            return Err(AtRestError::UnknownVersion(blob[0]));
        }
        let (header, sealed) = blob.split_at(AT_REST_HEADER_LEN);
        let word = |at: usize| u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
        let params = HashParams { m_cost_kib: word(1), t_cost: word(5), p_cost: word(9) };
        if params.m_cost_kib > AT_REST_MAX_M_COST_KIB
            || params.t_cost > AT_REST_MAX_T_COST
            || params.p_cost > AT_REST_MAX_P_COST
        {
            return Err(AtRestError::BadParams);
        }
        let keys = at_rest_schedule(password, &header[13..], params)?.at_rest_keys();
        let (_, der) = seal::open_unchecked(&keys, &at_rest_ad(header), sealed).map_err(|e| match e {
            OpenError::Truncated { .. } => AtRestError::Truncated,
            OpenError::UnknownVersion(v) => AtRestError::UnknownVersion(v),
            _ => AtRestError::WrongPassword,
        })?;
        let der = Zeroizing::new(der);
        Ok(Self::from_pkcs8_der(&der)?)
    }
}

fn at_rest_ad(header: &[u8]) -> Vec<u8> {
    [AT_REST_CONTEXT, header].concat()
}

fn at_rest_schedule(password: &[u8], salt: &[u8], params: HashParams) -> Result<KeySchedule, AtRestError> {
    let mut ikm = Zeroizing::new([0u8; 32]);
    argon2id(password, salt, params, &mut ikm[..]).map_err(|_| AtRestError::BadParams)?;
    Ok(KeySchedule::new(AT_REST_CONTEXT, &ikm[..]))
}

/// argon2id (version 0x13) of `password` and `salt` into `out`.
pub(crate) fn argon2id(password: &[u8], salt: &[u8], params: HashParams, out: &mut [u8]) -> Result<(), argon2::Error> {
    let params = argon2::Params::new(params.m_cost_kib, params.t_cost, params.p_cost, Some(out.len()))?;
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(password, salt, out)
}

/// A 60-digit number two users compare out of band to check each other's
/// identity keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SafetyNumber(String);

impl SafetyNumber {
    /// The 60 digits, without spaces.
    #[must_use]
    pub fn digits(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SafetyNumber {
    /// Twelve space-separated groups of five digits.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, group) in self.0.as_bytes().chunks(5).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            // Only ASCII digits are ever stored.
            f.write_str(std::str::from_utf8(group).unwrap_or_default())?;
        }
        Ok(())
    }
}

/// The safety number of two users (order does not matter).
#[must_use]
pub fn safety_number(user_a: &str, key_a: &PublicIdentity, user_b: &str, key_b: &PublicIdentity) -> SafetyNumber {
    let mut halves = [safety_half(user_a, key_a), safety_half(user_b, key_b)];
    halves.sort();
    SafetyNumber(halves.concat())
}

/// The 30 digits of one user.
fn safety_half(username: &str, key: &PublicIdentity) -> String {
    let spki = key.spki_der();
    let mut hash: Vec<u8> = [&[0u8, 0][..], spki, username.as_bytes()].concat();
    for _ in 0..SAFETY_ITERATIONS {
        hash = Sha512::new().chain_update(&hash).chain_update(spki).finalize().to_vec();
    }
    let mut digits = String::with_capacity(30);
    for chunk in hash[..30].chunks(5) {
        let value = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        digits.push_str(&format!("{:05}", value % 100_000));
    }
    digits
}

#[cfg(test)]
#[path = "tests/identity.rs"]
mod tests;
