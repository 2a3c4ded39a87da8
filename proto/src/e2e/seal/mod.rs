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

use std::collections::BTreeMap;

use aes::Aes128;
use ctr::cipher::{KeyIvInit, StreamCipher};
use hkdf::Hkdf;
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

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

/// An AES-128 key and an HMAC-SHA256 key, never the same bytes: the keys of
/// one epoch of a stream, or of a raw blob.
///
/// The bytes are wiped on drop; `Debug` does not print them.
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

    /// `enc (16) || mac (32)`.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..16].copy_from_slice(&self.enc);
        out[16..].copy_from_slice(&self.mac);
        out
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

/// The 32-byte secret of one stream (one sender in one context). It only
/// ever keys HKDF: see [`StreamKey::epoch_keys`].
#[derive(Clone)]
pub struct StreamKey(Zeroizing<[u8; 32]>);

impl StreamKey {
    /// Length of the key.
    pub const LEN: usize = 32;

    /// A stream key from its bytes (derived by [`kdf`](super::kdf), or persisted).
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The key's bytes, to persist it (store them encrypted).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The keys of `epoch`: HKDF-SHA256(salt = epoch, ikm = stream key),
    /// expanded with [`EPOCH_ENC_LABEL`] (16 bytes) and [`EPOCH_MAC_LABEL`] (32 bytes).
    #[must_use]
    pub fn epoch_keys(&self, epoch: &Epoch) -> SealKeys {
        let hkdf = Hkdf::<Sha256>::new(Some(epoch), &self.0[..]);
        let mut enc = [0u8; 16];
        let mut mac = [0u8; 32];
        // 16 and 32 bytes are far below HKDF-SHA256's limit: cannot fail.
        let ok = hkdf.expand(EPOCH_ENC_LABEL, &mut enc).is_ok() && hkdf.expand(EPOCH_MAC_LABEL, &mut mac).is_ok();
        debug_assert!(ok);
        let keys = SealKeys::new(enc, mac);
        enc.zeroize();
        mac.zeroize();
        keys
    }
}

impl std::fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamKey(..)")
    }
}

impl PartialEq for StreamKey {
    /// In constant time.
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(&*other.0))
    }
}

impl Eq for StreamKey {}

/// What a message belongs to, bound into its tag: one incarnation of a
/// room, or one direction of a private conversation between two users.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConversationId(Vec<u8>);

impl ConversationId {
    /// A room: `"room" | len u64 | name | room id [16]`. The room id is
    /// chosen at random when the room is created, so a room deleted and
    /// created again under the same name is another conversation.
    #[must_use]
    pub fn room(name: &str, room_id: &[u8; 16]) -> Self {
        let mut id = b"room".to_vec();
        put_field(&mut id, name.as_bytes());
        id.extend_from_slice(room_id);
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

// ---- raw blobs: one message under a key used once (the identity key at rest) ----

fn raw_tag(keys: &SealKeys, ad: &[u8], counter: u64, ciphertext: &[u8]) -> [u8; 32] {
    let ad_len = (ad.len() as u64).to_be_bytes();
    hmac_sha256(&keys.mac, &[&[RAW_VERSION], &ad_len, ad, &counter.to_be_bytes(), ciphertext])
}

/// Seals `plaintext` as a raw blob: `version (1) | counter u64 | ciphertext | tag`,
/// the tag over `version | len u64 | ad | counter | ciphertext`.
///
/// The caller guarantees that `counter` is never used twice with `keys`
/// (the identity key at rest uses a fresh salt, hence fresh keys, each
/// time). Messages go through [`Sealer`] instead.
pub fn seal_with_counter(keys: &SealKeys, counter: u64, ad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut blob = Vec::with_capacity(plaintext.len() + RAW_OVERHEAD);
    blob.push(RAW_VERSION);
    blob.extend_from_slice(&counter.to_be_bytes());
    blob.extend_from_slice(plaintext);
    if !ctr_apply(&keys.enc, &iv_for(counter), &mut blob[9..]) {
        return Err(SealError::TooLong);
    }
    let tag = raw_tag(keys, ad, counter, &blob[9..]);
    blob.extend_from_slice(&tag);
    Ok(blob)
}

/// Opens a raw blob sealed with [`seal_with_counter`]: the counter and the plaintext.
pub fn open_unchecked(keys: &SealKeys, ad: &[u8], blob: &[u8]) -> Result<(u64, Vec<u8>), OpenError> {
    if blob.len() < RAW_OVERHEAD {
        return Err(OpenError::Truncated { len: blob.len(), min: RAW_OVERHEAD });
    }
    if blob[0] != RAW_VERSION {
        return Err(OpenError::UnknownVersion(blob[0]));
    }
    let counter = u64::from_be_bytes(blob[1..9].try_into().unwrap_or_default());
    let (ciphertext, tag) = blob[9..].split_at(blob.len() - RAW_OVERHEAD);
    let expected = raw_tag(keys, ad, counter, ciphertext);
    if !bool::from(expected.as_slice().ct_eq(tag)) {
        return Err(OpenError::BadMac);
    }
    let mut plaintext = ciphertext.to_vec();
    if !ctr_apply(&keys.enc, &iv_for(counter), &mut plaintext) {
        return Err(OpenError::BadMac);
    }
    Ok((counter, plaintext))
}

// ---- messages ----

fn tag(keys: &SealKeys, epoch: &Epoch, counter: u64, ad: &[u8], ciphertext: &[u8]) -> [u8; 32] {
    let ad_len = (ad.len() as u64).to_be_bytes();
    hmac_sha256(&keys.mac, &[&[SEAL_VERSION], epoch, &counter.to_be_bytes(), &ad_len, ad, ciphertext])
}

/// Seals one message with explicit epoch keys, epoch and counter: the
/// low-level form behind [`Sealer::seal`], for test vectors. The caller
/// guarantees that `(epoch, counter)` is never used twice under one stream key.
pub fn seal_message(
    keys: &SealKeys,
    epoch: &Epoch,
    counter: u64,
    ad: &[u8],
    sent_ms: u64,
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    let mut blob = Vec::with_capacity(plaintext.len() + OVERHEAD);
    blob.push(SEAL_VERSION);
    blob.extend_from_slice(epoch);
    blob.extend_from_slice(&counter.to_be_bytes());
    blob.extend_from_slice(&sent_ms.to_be_bytes());
    blob.extend_from_slice(plaintext);
    if !ctr_apply(&keys.enc, &iv_for(counter), &mut blob[HEADER_LEN..]) {
        return Err(SealError::TooLong);
    }
    let tag = tag(keys, epoch, counter, ad, &blob[HEADER_LEN..]);
    blob.extend_from_slice(&tag);
    Ok(blob)
}

/// The header fields of a sealed message, before authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The sender's epoch.
    pub epoch: Epoch,
    /// The counter within the epoch.
    pub counter: u64,
}

/// Reads the header of a sealed message, without authenticating it: for
/// logs and tests only, never for a decision.
pub fn peek_header(blob: &[u8]) -> Result<Header, OpenError> {
    if blob.len() < OVERHEAD {
        return Err(OpenError::Truncated { len: blob.len(), min: OVERHEAD });
    }
    if blob[0] != SEAL_VERSION {
        return Err(OpenError::UnknownVersion(blob[0]));
    }
    let mut epoch = [0u8; EPOCH_LEN];
    epoch.copy_from_slice(&blob[1..1 + EPOCH_LEN]);
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&blob[1 + EPOCH_LEN..HEADER_LEN]);
    Ok(Header { epoch, counter: u64::from_be_bytes(counter) })
}

/// A message, authenticated and decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The sender's clock when it sealed, Unix milliseconds (authenticated).
    pub sent_ms: u64,
    /// The plaintext.
    pub plaintext: Vec<u8>,
}

/// Checks the tag of a message with explicit epoch keys and decrypts it,
/// without replay checks: the low-level form behind [`Opener::open`].
pub fn open_message(keys: &SealKeys, ad: &[u8], blob: &[u8]) -> Result<(Header, Opened), OpenError> {
    let header = peek_header(blob)?;
    let (ciphertext, tag_bytes) = blob[HEADER_LEN..].split_at(blob.len() - HEADER_LEN - TAG_LEN);
    let expected = tag(keys, &header.epoch, header.counter, ad, ciphertext);
    if !bool::from(expected.as_slice().ct_eq(tag_bytes)) {
        return Err(OpenError::BadMac);
    }
    let mut plaintext = ciphertext.to_vec();
    if !ctr_apply(&keys.enc, &iv_for(header.counter), &mut plaintext) {
        // Unreachable for a blob that fits in memory; never return garbage.
        return Err(OpenError::BadMac);
    }
    let mut sent = [0u8; TIME_LEN];
    sent.copy_from_slice(&plaintext[..TIME_LEN]);
    plaintext.drain(..TIME_LEN);
    Ok((header, Opened { sent_ms: u64::from_be_bytes(sent), plaintext }))
}

/// The sending side of one stream in one sending session: the epoch's keys
/// and its next counter. Never persisted: a restarted sender makes a new
/// one, with a new epoch.
#[derive(Debug, Clone)]
pub struct Sealer {
    epoch: Epoch,
    keys: SealKeys,
    next: u64,
}

impl Sealer {
    /// A new sending session of `stream`: a fresh random epoch, counter 0.
    #[must_use]
    pub fn new(stream: &StreamKey, rng: &mut impl rand::CryptoRng) -> Self {
        let mut epoch = [0u8; EPOCH_LEN];
        rng.fill_bytes(&mut epoch);
        Self::with_epoch(stream, epoch)
    }

    /// A sending session with a given epoch: for test vectors and for
    /// callers that draw the epoch themselves. Never reuse an epoch.
    #[must_use]
    pub fn with_epoch(stream: &StreamKey, epoch: Epoch) -> Self {
        Self { keys: stream.epoch_keys(&epoch), epoch, next: 0 }
    }

    /// This session's epoch.
    #[must_use]
    pub fn epoch(&self) -> &Epoch {
        &self.epoch
    }

    /// This session's keys (for tests that look for leaks).
    #[must_use]
    pub fn keys(&self) -> &SealKeys {
        &self.keys
    }

    /// The counter the next message will use.
    #[must_use]
    pub fn next_counter(&self) -> u64 {
        self.next
    }

    /// Seals `plaintext` from `sender` in `conversation` at the sender's
    /// clock `sent_ms`, with the next counter.
    pub fn seal(
        &mut self,
        conversation: &ConversationId,
        sender: &str,
        sent_ms: u64,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        // u64::MAX is never used, so `next` never overflows.
        if self.next == u64::MAX {
            return Err(SealError::CounterExhausted);
        }
        let counter = self.next;
        self.next += 1;
        seal_message(&self.keys, &self.epoch, counter, &associated_data(conversation, sender), sent_ms, plaintext)
    }
}

/// The counters a receiver has accepted in one epoch: the highest, and which
/// of the [`REPLAY_WINDOW`] counters below it.
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

/// What a receiver remembers of one epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EpochRecord {
    /// The epoch.
    pub epoch: Epoch,
    /// Highest counter accepted in it.
    pub highest: Option<u64>,
    /// Replay bitmap below it (see [`ReplayWindow::bitmap`]).
    pub bitmap: u64,
    /// Newest sender timestamp accepted in it.
    pub newest_ms: u64,
}

/// What one receiver has accepted of one stream: the epochs it remembers
/// (at most [`MAX_EPOCHS`]) and the floor below which an unknown epoch is
/// refused. See the [module docs](self).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayState {
    epochs: BTreeMap<Epoch, (ReplayWindow, u64)>,
    floor_ms: Option<u64>,
}

impl ReplayState {
    /// Nothing accepted yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores a persisted state (see [`records`](Self::records) and
    /// [`floor_ms`](Self::floor_ms)). Extra records beyond [`MAX_EPOCHS`]
    /// are forgotten as usual.
    #[must_use]
    pub fn from_parts(records: &[EpochRecord], floor_ms: Option<u64>) -> Self {
        let mut state = Self { epochs: BTreeMap::new(), floor_ms };
        for r in records {
            state.epochs.insert(r.epoch, (ReplayWindow::from_parts(r.highest, r.bitmap), r.newest_ms));
        }
        state.forget_excess();
        state
    }

    /// Every remembered epoch, in epoch order (to persist them).
    #[must_use]
    pub fn records(&self) -> Vec<EpochRecord> {
        self.epochs
            .iter()
            .map(|(epoch, (w, newest_ms))| EpochRecord {
                epoch: *epoch,
                highest: w.highest(),
                bitmap: w.bitmap(),
                newest_ms: *newest_ms,
            })
            .collect()
    }

    /// Messages of unknown epochs must be newer than this (Unix milliseconds,
    /// sender clock); `None` until an epoch was forgotten.
    #[must_use]
    pub fn floor_ms(&self) -> Option<u64> {
        self.floor_ms
    }

    /// The window of `epoch`, if remembered.
    #[must_use]
    pub fn window(&self, epoch: &Epoch) -> Option<ReplayWindow> {
        self.epochs.get(epoch).map(|(w, _)| *w)
    }

    /// Whether a message with this header could be new, before its tag is
    /// checked (a cheap early refusal; [`accept`](Self::accept) decides).
    pub fn precheck(&self, header: &Header) -> Result<(), OpenError> {
        match self.epochs.get(&header.epoch) {
            Some((window, _)) => window.check(header.counter),
            None => Ok(()),
        }
    }

    /// Records an authenticated message, or refuses it as not new.
    ///
    /// A message sealed no later than the floor is refused whatever its
    /// epoch: an epoch forgotten and then heard from again (a sending
    /// session that outlived 512 others) comes back with an empty window,
    /// and its older messages must not pass through it a second time.
    pub fn accept(&mut self, header: &Header, sent_ms: u64) -> Result<(), OpenError> {
        if let Some(floor_ms) = self.floor_ms.filter(|floor| sent_ms <= *floor) {
            return Err(OpenError::Stale { sent_ms, floor_ms });
        }
        match self.epochs.get_mut(&header.epoch) {
            Some((window, newest)) => {
                window.check(header.counter)?;
                window.accept(header.counter);
                *newest = (*newest).max(sent_ms);
            }
            None => {
                let mut window = ReplayWindow::new();
                window.accept(header.counter);
                self.epochs.insert(header.epoch, (window, sent_ms));
                self.forget_excess();
            }
        }
        Ok(())
    }

    /// Forgets the epochs with the oldest newest message beyond
    /// [`MAX_EPOCHS`], raising the floor to cover them.
    fn forget_excess(&mut self) {
        while self.epochs.len() > MAX_EPOCHS {
            let Some((&epoch, &(_, newest))) = self.epochs.iter().min_by_key(|(e, (_, newest))| (*newest, **e)) else {
                return;
            };
            self.epochs.remove(&epoch);
            self.floor_ms = Some(self.floor_ms.map_or(newest, |floor| floor.max(newest)));
        }
    }
}

/// The receiving side of one stream: its key and what was accepted.
#[derive(Debug, Clone)]
pub struct Opener {
    stream: StreamKey,
    state: ReplayState,
}

impl Opener {
    /// A stream with nothing accepted yet.
    #[must_use]
    pub fn new(stream: StreamKey) -> Self {
        Self { stream, state: ReplayState::new() }
    }

    /// Resumes a stream with a persisted replay state.
    #[must_use]
    pub fn resume(stream: StreamKey, state: ReplayState) -> Self {
        Self { stream, state }
    }

    /// The stream's key (to persist it, encrypted).
    #[must_use]
    pub fn stream(&self) -> &StreamKey {
        &self.stream
    }

    /// What was accepted (to persist it).
    #[must_use]
    pub fn state(&self) -> &ReplayState {
        &self.state
    }

    /// Opens a blob from `sender` in `conversation`: checks the version, the
    /// window, the tag (in constant time), the floor, then records it.
    pub fn open(&mut self, conversation: &ConversationId, sender: &str, blob: &[u8]) -> Result<Opened, OpenError> {
        open_stream(&self.stream, &mut self.state, conversation, sender, blob)
    }
}

/// Opens a message of `stream` against `state` (see [`Opener::open`]).
pub(crate) fn open_stream(
    stream: &StreamKey,
    state: &mut ReplayState,
    conversation: &ConversationId,
    sender: &str,
    blob: &[u8],
) -> Result<Opened, OpenError> {
    let header = peek_header(blob)?;
    state.precheck(&header)?;
    let keys = stream.epoch_keys(&header.epoch);
    let (header, opened) = open_message(&keys, &associated_data(conversation, sender), blob)?;
    state.accept(&header, opened.sent_ms)?;
    Ok(opened)
}

#[cfg(test)]
#[path = "../tests/seal.rs"]
mod tests;
