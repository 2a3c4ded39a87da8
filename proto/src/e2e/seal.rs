//! Sealing: AES-128-CTR + HMAC-SHA256, encrypt-then-MAC, with a replay window.
//!
//! # Blob layout
//!
//! ```text
//! offset  size  field
//! 0       1     version       = SEAL_VERSION (1)
//! 1       8     counter       u64, big-endian; unique per (key, message)
//! 9       n     ciphertext    AES-128-CTR(enc_key, iv(counter), plaintext); n = plaintext length
//! 9+n     32    tag           HMAC-SHA256(mac_key, mac_input)
//! ```
//!
//! A sealed blob is therefore exactly [`OVERHEAD`] (41) bytes longer than its
//! plaintext. The CTR initial counter block is `counter (8 bytes, BE) || 0^64`
//! and the whole 128-bit block is incremented big-endian (`Ctr128BE`), so the
//! message with counter `c` uses the key stream blocks `c·2^64 .. c·2^64 + 2^64`:
//! distinct counters never share a key stream block under one key.
//!
//! The tag covers, in this order (`mac_input`):
//!
//! ```text
//! version u8 | len u64 | associated data | counter u64 | ciphertext
//! ```
//!
//! where the associated data is not stored in the blob but known to both
//! ends. For messages it is built by [`associated_data`] from the
//! [`ConversationId`] and the sender's username:
//!
//! ```text
//! len u64 | conversation id bytes | len u64 | sender (UTF-8)
//! ```
//!
//! Every variable-length field is length-prefixed and the ciphertext is the
//! last field before a fixed-size tag, so the encoding is unambiguous. All
//! integers are big-endian.
//!
//! # Counters and replays
//!
//! The sending side ([`Sealer`]) numbers its messages 0, 1, 2, ... per key
//! (one key per direction and purpose, see [`kdf`](super::kdf)). The
//! receiving side ([`Opener`]) keeps a [`ReplayWindow`]: a counter is
//! accepted once, and only if it is newer than the highest seen or within
//! [`REPLAY_WINDOW`] (64) of it. The tag is checked before the window is
//! updated, so forged blobs never move it.
//!
//! A key whose sending counter is lost (a reinstalled client that re-derives
//! the same room key) would reuse key stream: callers persist
//! [`Sealer::next_counter`] before a sealed message leaves, and resume with
//! [`Sealer::resume`].

use aes::Aes128;
use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// The version byte of a sealed blob.
pub const SEAL_VERSION: u8 = 1;
/// Bytes of the header: version (1) + counter (8).
pub const HEADER_LEN: usize = 9;
/// Bytes of the HMAC-SHA256 tag.
pub const TAG_LEN: usize = 32;
/// Bytes a sealed blob adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// How far behind the highest counter seen a message may still arrive.
pub const REPLAY_WINDOW: u64 = 64;

type Aes128Ctr = ctr::Ctr128BE<Aes128>;
type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The key pair of one sealing stream (one direction of one purpose):
/// a 128-bit AES key and a 256-bit HMAC key, never the same bytes.
///
/// Derive them with [`KeySchedule`](super::kdf::KeySchedule). The bytes are
/// wiped on drop; `Debug` does not print them.
#[derive(Clone)]
pub struct SealKeys {
    enc: [u8; 16],
    mac: [u8; 32],
}

impl SealKeys {
    /// Length of [`to_bytes`](Self::to_bytes).
    pub const LEN: usize = 48;

    /// Keys from their raw parts.
    #[must_use]
    pub fn new(enc: [u8; 16], mac: [u8; 32]) -> Self {
        Self { enc, mac }
    }

    /// `enc (16) || mac (32)`, for a caller that persists a session (store
    /// it encrypted).
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..16].copy_from_slice(&self.enc);
        out[16..].copy_from_slice(&self.mac);
        out
    }

    /// The inverse of [`to_bytes`](Self::to_bytes).
    #[must_use]
    pub fn from_bytes(bytes: &[u8; Self::LEN]) -> Self {
        let mut enc = [0u8; 16];
        let mut mac = [0u8; 32];
        enc.copy_from_slice(&bytes[..16]);
        mac.copy_from_slice(&bytes[16..]);
        Self { enc, mac }
    }
}

impl std::fmt::Debug for SealKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKeys(..)")
    }
}

impl PartialEq for SealKeys {
    /// In constant time.
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.enc.ct_eq(&other.enc) & self.mac.ct_eq(&other.mac))
    }
}

impl Eq for SealKeys {}

impl Drop for SealKeys {
    fn drop(&mut self) {
        self.enc.zeroize();
        self.mac.zeroize();
    }
}

/// What a message belongs to, bound into its tag: a room, or one direction
/// of a private conversation between two users.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConversationId(Vec<u8>);

impl ConversationId {
    /// A room: `"room" | len u64 | name`.
    #[must_use]
    pub fn room(name: &str) -> Self {
        let mut id = b"room".to_vec();
        put_field(&mut id, name.as_bytes());
        Self(id)
    }

    /// A private conversation from `sender` to `recipient`: the ordered pair
    /// (lower username first, so both users name the conversation the same
    /// way) and the direction: `"mp" | len u64 | low | len u64 | high | dir u8`
    /// with `dir` = 0 when `sender` is `low`, 1 otherwise.
    #[must_use]
    pub fn mp(sender: &str, recipient: &str) -> Self {
        let (low, high, dir) = if sender <= recipient { (sender, recipient, 0) } else { (recipient, sender, 1) };
        let mut id = b"mp".to_vec();
        put_field(&mut id, low.as_bytes());
        put_field(&mut id, high.as_bytes());
        id.push(dir);
        Self(id)
    }

    /// The encoded id (the bytes the tag covers).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The associated data of a message: `len u64 | conversation | len u64 | sender`.
#[must_use]
pub fn associated_data(conversation: &ConversationId, sender: &str) -> Vec<u8> {
    let mut ad = Vec::with_capacity(16 + conversation.0.len() + sender.len());
    put_field(&mut ad, &conversation.0);
    put_field(&mut ad, sender.as_bytes());
    ad
}

fn put_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_be_bytes());
    out.extend_from_slice(field);
}

/// Why a message could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Every counter of this key has been used: derive new keys (a new MP
    /// handshake). Unreachable in practice (2^64 - 1 messages).
    #[error("the sending counter is exhausted: a new key is needed")]
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
    /// Shorter than a header and a tag.
    #[error("sealed blob truncated: {len} bytes, at least {OVERHEAD} needed")]
    Truncated {
        /// The blob's length.
        len: usize,
    },
    /// A version byte this code does not know.
    #[error("unknown sealed blob version {0}")]
    UnknownVersion(u8),
    /// The tag does not match: tampered, wrong key, wrong conversation or
    /// wrong sender.
    #[error("message authentication failed")]
    BadMac,
    /// This counter was already accepted.
    #[error("replayed message (counter {counter})")]
    Replayed {
        /// The blob's counter.
        counter: u64,
    },
    /// The counter is more than [`REPLAY_WINDOW`] behind the highest seen.
    #[error("message too old (counter {counter}, highest seen {highest})")]
    TooOld {
        /// The blob's counter.
        counter: u64,
        /// The highest counter accepted so far.
        highest: u64,
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

fn tag(keys: &SealKeys, version: u8, ad: &[u8], counter: u64, ciphertext: &[u8]) -> [u8; 32] {
    let ad_len = (ad.len() as u64).to_be_bytes();
    hmac_sha256(&keys.mac, &[&[version], &ad_len, ad, &counter.to_be_bytes(), ciphertext])
}

/// Seals `plaintext` with an explicit counter and associated data.
///
/// The low-level form: the caller guarantees that `counter` is never used
/// twice with `keys`. Messages go through [`Sealer`] instead.
pub fn seal_with_counter(keys: &SealKeys, counter: u64, ad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut blob = Vec::with_capacity(plaintext.len() + OVERHEAD);
    blob.push(SEAL_VERSION);
    blob.extend_from_slice(&counter.to_be_bytes());
    blob.extend_from_slice(plaintext);
    // The key stream of one counter is 2^64 blocks long: this cannot fail
    // for a buffer that fits in memory, and on failure nothing is returned.
    if !ctr_apply(&keys.enc, &iv_for(counter), &mut blob[HEADER_LEN..]) {
        return Err(SealError::TooLong);
    }
    let tag = tag(keys, SEAL_VERSION, ad, counter, &blob[HEADER_LEN..]);
    blob.extend_from_slice(&tag);
    Ok(blob)
}

/// The parts of a blob, before authentication.
struct Parsed<'a> {
    counter: u64,
    ciphertext: &'a [u8],
    tag: &'a [u8],
}

fn parse(blob: &[u8]) -> Result<Parsed<'_>, OpenError> {
    if blob.len() < OVERHEAD {
        return Err(OpenError::Truncated { len: blob.len() });
    }
    if blob[0] != SEAL_VERSION {
        return Err(OpenError::UnknownVersion(blob[0]));
    }
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&blob[1..HEADER_LEN]);
    let (ciphertext, tag) = blob[HEADER_LEN..].split_at(blob.len() - OVERHEAD);
    Ok(Parsed { counter: u64::from_be_bytes(counter), ciphertext, tag })
}

/// The counter of a sealed blob, without authenticating it (for logs and
/// ordering only).
pub fn peek_counter(blob: &[u8]) -> Result<u64, OpenError> {
    parse(blob).map(|p| p.counter)
}

fn verify_and_decrypt(keys: &SealKeys, ad: &[u8], parsed: &Parsed<'_>) -> Result<Vec<u8>, OpenError> {
    let expected = tag(keys, SEAL_VERSION, ad, parsed.counter, parsed.ciphertext);
    if !bool::from(expected.as_slice().ct_eq(parsed.tag)) {
        return Err(OpenError::BadMac);
    }
    let mut plaintext = parsed.ciphertext.to_vec();
    if !ctr_apply(&keys.enc, &iv_for(parsed.counter), &mut plaintext) {
        // Unreachable for a blob that fits in memory; never return garbage.
        return Err(OpenError::BadMac);
    }
    Ok(plaintext)
}

/// Opens a blob sealed with [`seal_with_counter`], without replay checks.
///
/// Returns the counter and the plaintext. The low-level form, for data at
/// rest; messages go through [`Opener`].
pub fn open_unchecked(keys: &SealKeys, ad: &[u8], blob: &[u8]) -> Result<(u64, Vec<u8>), OpenError> {
    let parsed = parse(blob)?;
    let plaintext = verify_and_decrypt(keys, ad, &parsed)?;
    Ok((parsed.counter, plaintext))
}

/// The sending side of one stream: its keys and its next counter.
#[derive(Debug, Clone)]
pub struct Sealer {
    keys: SealKeys,
    next: u64,
}

impl Sealer {
    /// A fresh stream: the first message gets counter 0.
    #[must_use]
    pub fn new(keys: SealKeys) -> Self {
        Self { keys, next: 0 }
    }

    /// Resumes a stream whose next unused counter is `next_counter` (as
    /// persisted from [`next_counter`](Self::next_counter)).
    #[must_use]
    pub fn resume(keys: SealKeys, next_counter: u64) -> Self {
        Self { keys, next: next_counter }
    }

    /// The stream's keys (to persist them, encrypted).
    #[must_use]
    pub fn keys(&self) -> &SealKeys {
        &self.keys
    }

    /// The counter the next message will use. Persist it before the sealed
    /// message leaves: reusing a counter reuses key stream.
    #[must_use]
    pub fn next_counter(&self) -> u64 {
        self.next
    }

    /// Seals `plaintext` from `sender` in `conversation`, with the next counter.
    pub fn seal(
        &mut self,
        conversation: &ConversationId,
        sender: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        // u64::MAX is never used, so `next` never overflows.
        if self.next == u64::MAX {
            return Err(SealError::CounterExhausted);
        }
        let counter = self.next;
        self.next += 1;
        seal_with_counter(&self.keys, counter, &associated_data(conversation, sender), plaintext)
    }
}

/// The counters a receiver has accepted: the highest, and which of the
/// [`REPLAY_WINDOW`] counters below it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// `None` until the first message.
    highest: Option<u64>,
    /// Bit `i` set: counter `highest - i` was accepted (bit 0 is `highest`).
    seen: u64,
}

impl ReplayWindow {
    /// A window that has seen nothing.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores a window from [`highest`](Self::highest) and [`bitmap`](Self::bitmap).
    #[must_use]
    pub fn from_parts(highest: Option<u64>, bitmap: u64) -> Self {
        match highest {
            Some(_) => Self { highest, seen: bitmap | 1 },
            None => Self::default(),
        }
    }

    /// The highest counter accepted, if any.
    #[must_use]
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Bit `i` set: counter `highest - i` was accepted.
    #[must_use]
    pub fn bitmap(&self) -> u64 {
        self.seen
    }

    /// Whether `counter` would be accepted (does not record it).
    pub fn check(&self, counter: u64) -> Result<(), OpenError> {
        let Some(highest) = self.highest else { return Ok(()) };
        if counter > highest {
            return Ok(());
        }
        let behind = highest - counter;
        if behind >= REPLAY_WINDOW {
            return Err(OpenError::TooOld { counter, highest });
        }
        if self.seen & (1u64 << behind) != 0 {
            return Err(OpenError::Replayed { counter });
        }
        Ok(())
    }

    /// Records `counter` as accepted. Call only after [`check`](Self::check)
    /// and authentication succeeded.
    pub fn accept(&mut self, counter: u64) {
        match self.highest {
            None => {
                self.highest = Some(counter);
                self.seen = 1;
            }
            Some(highest) if counter > highest => {
                let shift = counter - highest;
                self.seen = if shift >= 64 { 1 } else { (self.seen << shift) | 1 };
                self.highest = Some(counter);
            }
            Some(highest) => {
                let behind = highest - counter;
                if behind < 64 {
                    self.seen |= 1u64 << behind;
                }
            }
        }
    }
}

/// The receiving side of one stream: its keys and its replay window.
#[derive(Debug, Clone)]
pub struct Opener {
    keys: SealKeys,
    window: ReplayWindow,
}

impl Opener {
    /// A fresh stream: accepts any first counter.
    #[must_use]
    pub fn new(keys: SealKeys) -> Self {
        Self { keys, window: ReplayWindow::new() }
    }

    /// Resumes a stream with a persisted window.
    #[must_use]
    pub fn resume(keys: SealKeys, window: ReplayWindow) -> Self {
        Self { keys, window }
    }

    /// The stream's keys (to persist them, encrypted).
    #[must_use]
    pub fn keys(&self) -> &SealKeys {
        &self.keys
    }

    /// The replay window (to persist it).
    #[must_use]
    pub fn window(&self) -> ReplayWindow {
        self.window
    }

    /// Opens a blob from `sender` in `conversation`: checks the version, the
    /// window, the tag (in constant time), then records the counter.
    pub fn open(&mut self, conversation: &ConversationId, sender: &str, blob: &[u8]) -> Result<Vec<u8>, OpenError> {
        let parsed = parse(blob)?;
        self.window.check(parsed.counter)?;
        let plaintext = verify_and_decrypt(&self.keys, &associated_data(conversation, sender), &parsed)?;
        self.window.accept(parsed.counter);
        Ok(plaintext)
    }
}

#[cfg(test)]
#[path = "tests/seal.rs"]
mod tests;
