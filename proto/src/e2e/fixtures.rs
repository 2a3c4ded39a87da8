//! Fixed RSA-2048 identity keys for tests, examples and benchmarks.
//!
//! Generating an RSA-2048 key takes seconds in a debug build, so tests load
//! these instead. They were made once with OpenSSL 3.0:
//!
//! ```text
//! openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -outform DER -out k.der  # PKCS#1
//! openssl pkcs8 -topk8 -nocrypt -inform DER -in k.der -outform DER -out NAME.pk8.der
//! openssl pkey -inform DER -in k.der -pubout -outform DER -out NAME.spki.der
//! ```
//!
//! **They are public: never use them for anything real.**

/// Alice's private key, DER PKCS#8.
pub const ALICE_PKCS8: &[u8] = include_bytes!("fixtures/alice.pk8.der");
/// Alice's public key, DER SubjectPublicKeyInfo as OpenSSL writes it.
pub const ALICE_SPKI: &[u8] = include_bytes!("fixtures/alice.spki.der");
/// Bob's private key, DER PKCS#8.
pub const BOB_PKCS8: &[u8] = include_bytes!("fixtures/bob.pk8.der");
/// Bob's public key, DER SubjectPublicKeyInfo as OpenSSL writes it.
pub const BOB_SPKI: &[u8] = include_bytes!("fixtures/bob.spki.der");
/// Mallory's private key (the attacker in tests), DER PKCS#8.
pub const MALLORY_PKCS8: &[u8] = include_bytes!("fixtures/mallory.pk8.der");
/// Mallory's public key, DER SubjectPublicKeyInfo as OpenSSL writes it.
pub const MALLORY_SPKI: &[u8] = include_bytes!("fixtures/mallory.spki.der");
