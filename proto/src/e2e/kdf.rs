//! The key schedule: HKDF-SHA256 (RFC 5869) with one label per key.
//!
//! A [`KeySchedule`] is an HKDF pseudo-random key extracted from a secret
//! (an ECDH shared secret, an argon2id output) and a salt that binds the
//! context (the MP transcript, the room name). Every key is expanded from it
//! with its own `info` label, so no two keys ever share bytes, and knowing
//! one (say, the room verifier the server stores) says nothing about the
//! others.
//!
//! | key | HKDF `info` | bytes |
//! | --- | --- | --- |
//! | MP stream, requester to accepter | `confab v2 mp a->b` | 32 |
//! | MP stream, accepter to requester | `confab v2 mp b->a` | 32 |
//! | room stream of `sender` | `confab v2 room sender` `0x00` sender | 32 |
//! | room join verifier | `confab v2 room verifier` | 32 |
//! | identity key at rest, AES | `confab v1 at-rest enc` | 16 |
//! | identity key at rest, HMAC | `confab v1 at-rest mac` | 32 |
//!
//! A stream key never encrypts: each sending session draws a random epoch
//! and seals under keys derived from the stream key and that epoch
//! ([`StreamKey::epoch_keys`]). Room streams are per sender, so two members
//! never share keys. Usernames contain no NUL byte, and the label before it
//! is fixed, so `label 0x00 sender` is unambiguous.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroize;

use super::seal::{SealKeys, StreamKey};

/// Which way an MP stream flows. "A" is the user who requested the
/// conversation, "B" the one who accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Requester to accepter.
    AToB,
    /// Accepter to requester.
    BToA,
}

impl Direction {
    /// The other direction.
    #[must_use]
    pub fn reverse(self) -> Self {
        match self {
            Self::AToB => Self::BToA,
            Self::BToA => Self::AToB,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::AToB => "confab v2 mp a->b",
            Self::BToA => "confab v2 mp b->a",
        }
    }
}

/// What a stream key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose<'a> {
    /// One direction of an MP session.
    Mp(Direction),
    /// The messages one member sends to a room.
    Room {
        /// The sending member's username.
        sender: &'a str,
    },
}

/// An HKDF-SHA256 pseudo-random key and the labelled keys expanded from it.
#[derive(Clone)]
pub struct KeySchedule {
    hkdf: Hkdf<Sha256>,
}

impl std::fmt::Debug for KeySchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySchedule(..)")
    }
}

impl KeySchedule {
    /// HKDF-Extract(`salt`, `ikm`).
    #[must_use]
    pub fn new(salt: &[u8], ikm: &[u8]) -> Self {
        Self { hkdf: Hkdf::<Sha256>::new(Some(salt), ikm) }
    }

    /// The stream key of `purpose`.
    #[must_use]
    pub fn stream_key(&self, purpose: Purpose<'_>) -> StreamKey {
        let mut key = [0u8; 32];
        match purpose {
            Purpose::Mp(direction) => self.expand(&[direction.label().as_bytes()], &mut key),
            Purpose::Room { sender } => self.expand(&[b"confab v2 room sender", &[0], sender.as_bytes()], &mut key),
        }
        let stream = StreamKey::from_bytes(key);
        key.zeroize();
        stream
    }

    /// The AES and HMAC keys of the identity key at rest.
    #[must_use]
    pub fn at_rest_keys(&self) -> SealKeys {
        let mut enc = [0u8; 16];
        let mut mac = [0u8; 32];
        self.expand(&[b"confab v1 at-rest enc"], &mut enc);
        self.expand(&[b"confab v1 at-rest mac"], &mut mac);
        let keys = SealKeys::new(enc, mac);
        enc.zeroize();
        mac.zeroize();
        keys
    }

    /// The room join verifier: what the server stores and compares.
    #[must_use]
    pub fn room_verifier(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        self.expand(&[b"confab v2 room verifier"], &mut out);
        out
    }

    /// HKDF-Expand(info = concatenation of `info`, `out.len()` bytes).
    ///
    /// Every caller asks for at most 32 bytes, far below HKDF-SHA256's limit
    /// of 255 * 32, so this cannot fail.
    pub(crate) fn expand(&self, info: &[&[u8]], out: &mut [u8]) {
        let result = self.hkdf.expand_multi_info(info, out);
        debug_assert!(result.is_ok());
    }

    /// HKDF-Expand, for the RFC 5869 vectors (any length up to 8160 bytes).
    #[cfg(test)]
    pub(crate) fn expand_checked(&self, info: &[u8], out: &mut [u8]) -> Result<(), hkdf::InvalidLength> {
        self.hkdf.expand(info, out)
    }
}

/// HKDF-Extract alone: the PRK, for the RFC 5869 vectors.
#[cfg(test)]
pub(crate) fn extract(salt: &[u8], ikm: &[u8]) -> [u8; 32] {
    Hkdf::<Sha256>::extract(Some(salt), ikm).0.into()
}
