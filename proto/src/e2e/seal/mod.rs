//! Sealing: AES-128-CTR + HMAC-SHA256, encrypt-then-MAC, with sender epochs
//! and replay windows.
//!
//! docs/E2E.md gives every byte of this module; this is the summary.
//!
//! # Streams and epochs
//!
//! A *stream* is everything one sender seals in one context: one direction
//! of an MP session, or one member's messages in one room. It has a 32-byte
//! [`StreamKey`], derived by [`kdf`](super::kdf). A stream key never
//! encrypts anything itself: every *sending session* (a [`Sealer`], made
//! when a session is established, a room joined, or a profile restored)
//! draws a fresh random 128-bit **epoch** and seals under
//!
//! ```text
//! epoch keys = HKDF-SHA256(salt = epoch, ikm = stream key)
//!   enc = expand("confab v2 epoch enc", 16)      AES-128 key
//!   mac = expand("confab v2 epoch mac", 32)      HMAC-SHA256 key
//! ```
//!
//! with its counter starting at 0. The epoch lives only in memory: no
//! snapshot, profile or server answer ever sets it, so a restored profile,
//! a second device, a logout and login or a hostile server that returns an
//! empty history can never make a sender reuse a (key, nonce) pair. Two
//! sending sessions collide only if two random 128-bit epochs are equal.
//!
//! # Blob layout
//!
//! ```text
//! offset  size  field
//! 0       1     version       = SEAL_VERSION (2)
//! 1       16    epoch         random, per sending session
//! 17      8     counter       u64 BE; 0, 1, 2, ... within the epoch
//! 25      8+n   ciphertext    AES-128-CTR(enc, iv(counter), sent_ms u64 BE | plaintext)
//! 33+n    32    tag           HMAC-SHA256(mac, mac_input)
//! ```
//!
//! A sealed blob is exactly [`OVERHEAD`] (65) bytes longer than its
//! plaintext. `sent_ms` is the sender's own clock (Unix milliseconds) when
//! it sealed: authenticated end to end, unlike the server's `sent_ms`. The
//! CTR initial counter block is `counter (8 bytes, BE) || 0^64`, incremented
//! as a 128-bit big-endian integer, so distinct counters never share a key
//! stream block under one key.
//!
//! The tag covers, in this order (`mac_input`):
//!
//! ```text
//! version u8 | epoch [16] | counter u64 | len u64 | associated data | ciphertext
//! ```
//!
//! The associated data is not stored in the blob but known to both ends:
//! [`associated_data`] of the [`ConversationId`] and the sender's username.
//!
//! # Replays
//!
//! The receiving side ([`Opener`]) keeps, per stream, the epochs it has
//! accepted, each with a [`ReplayWindow`] (a counter is accepted once, and
//! only within [`REPLAY_WINDOW`] of the highest seen) and the newest
//! `sent_ms` seen in it. It remembers at most [`MAX_EPOCHS`] epochs; to
//! forget one it raises a floor to that epoch's newest `sent_ms`, and a
//! message (of any epoch) is accepted only if its `sent_ms` is above the
//! floor. So a message is accepted at most once, whatever the
//! server replays and however long after. The tag is checked before any
//! state changes: forged blobs move nothing.

//!
//! | file | concern |
//! | --- | --- |
//! | `mod.rs` | sizes, labels, errors, the AES-CTR and HMAC primitives |
//! | `keys.rs` | [`SealKeys`], [`StreamKey`], [`ConversationId`], [`associated_data`] |
//! | `raw.rs` | raw blobs under a key used once ([`seal_with_counter`], [`open_unchecked`]) |
//! | `message.rs` | the message blob ([`seal_message`], [`open_message`], [`peek_header`]) and the [`Sealer`] |
//! | `replay.rs` | [`ReplayWindow`], [`ReplayState`] and the [`Opener`] |

use aes::Aes128;
use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::{KeyInit, Mac};

mod keys;
mod message;
mod raw;
mod replay;

pub use keys::{ConversationId, SealKeys, StreamKey, associated_data};
pub use message::{Header, Opened, Sealer, open_message, peek_header, seal_message};
pub use raw::{open_unchecked, seal_with_counter};
pub(crate) use replay::open_stream;
pub use replay::{EpochRecord, Opener, ReplayState, ReplayWindow};

/// The version byte of a sealed message.
pub const SEAL_VERSION: u8 = 2;
/// Bytes of an epoch.
pub const EPOCH_LEN: usize = 16;
/// Bytes of the header: version (1) + epoch (16) + counter (8).
pub const HEADER_LEN: usize = 1 + EPOCH_LEN + 8;
/// Bytes of the sender's timestamp at the start of the ciphertext.
pub const TIME_LEN: usize = 8;
/// Bytes of the HMAC-SHA256 tag.
pub const TAG_LEN: usize = 32;
/// Bytes a sealed message adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TIME_LEN + TAG_LEN;
/// How far behind the highest counter seen in an epoch a message may still arrive.
pub const REPLAY_WINDOW: u64 = 64;
/// How many epochs of one stream a receiver remembers.
pub const MAX_EPOCHS: usize = 512;
/// Version byte of a raw blob ([`seal_with_counter`]): the identity key at rest.
pub const RAW_VERSION: u8 = 1;
/// Bytes a raw blob adds to its plaintext: version (1) + counter (8) + tag (32).
pub const RAW_OVERHEAD: usize = 1 + 8 + TAG_LEN;

/// HKDF `info` of an epoch's AES key.
pub const EPOCH_ENC_LABEL: &[u8] = b"confab v2 epoch enc";
/// HKDF `info` of an epoch's HMAC key.
pub const EPOCH_MAC_LABEL: &[u8] = b"confab v2 epoch mac";

type Aes128Ctr = ctr::Ctr128BE<Aes128>;
type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// An epoch: 16 random bytes drawn by each sending session.
pub type Epoch = [u8; EPOCH_LEN];

/// Why a message could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Every counter of this epoch has been used: start a new sending
    /// session. Unreachable in practice (2^64 - 1 messages).
    #[error("the sending counter is exhausted: a new epoch is needed")]
    CounterExhausted,
    /// The CTR key stream of one counter would wrap: more than 2^64 blocks.
    /// Unreachable for a message that fits in memory.
    #[error("message too long")]
    TooLong,
}

/// Why a sealed blob was rejected. Every variant means "not authentic or
/// not new": show none of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Shorter than a header, a timestamp and a tag.
    #[error("sealed blob truncated: {len} bytes, at least {min} needed")]
    Truncated {
        /// The blob's length.
        len: usize,
        /// The shortest valid blob.
        min: usize,
    },
    /// A version byte this code does not know.
    #[error("unknown sealed blob version {0}")]
    UnknownVersion(u8),
    /// The tag does not match: tampered, wrong key, wrong conversation or
    /// wrong sender.
    #[error("message authentication failed")]
    BadMac,
    /// This counter of this epoch was already accepted.
    #[error("replayed message (counter {counter})")]
    Replayed {
        /// The blob's counter.
        counter: u64,
    },
    /// The counter is more than [`REPLAY_WINDOW`] behind the highest seen in its epoch.
    #[error("message too old (counter {counter}, highest seen {highest})")]
    TooOld {
        /// The blob's counter.
        counter: u64,
        /// The highest counter accepted in the epoch.
        highest: u64,
    },
    /// An epoch this receiver does not remember, sealed no later than the
    /// newest message of an epoch it has forgotten: possibly a replay.
    #[error("message from a forgotten sending session (sent at {sent_ms}, floor {floor_ms})")]
    Stale {
        /// The sender's timestamp in the message.
        sent_ms: u64,
        /// The receiver's floor for unknown epochs.
        floor_ms: u64,
    },
}

/// Applies the AES-128-CTR key stream that starts at `iv` to `buf`.
///
/// Returns `false` (and leaves `buf` untouched) if the 128-bit counter would
/// wrap within `buf`, which [`iv_for`] counters never do.
pub(crate) fn ctr_apply(key: &[u8; 16], iv: &[u8; 16], buf: &mut [u8]) -> bool {
    let mut cipher = Aes128Ctr::new(key.into(), iv.into());
    cipher.try_apply_keystream(buf).is_ok()
}

/// The initial counter block of the message numbered `counter`.
pub(crate) fn iv_for(counter: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..8].copy_from_slice(&counter.to_be_bytes());
    iv
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
#[path = "../tests/seal.rs"]
mod tests;
