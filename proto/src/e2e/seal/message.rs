//! The sealed message blob (version 2): sealing and opening with explicit
//! epoch keys, reading its header, and the [`Sealer`] that numbers the
//! messages of one sending session.

use subtle::ConstantTimeEq;

use super::{
    ConversationId, EPOCH_LEN, Epoch, HEADER_LEN, OVERHEAD, OpenError, SEAL_VERSION, SealError, SealKeys, StreamKey,
    TAG_LEN, TIME_LEN, associated_data, ctr_apply, hmac_sha256, iv_for,
};

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
/// without replay checks: the low-level form behind [`Opener::open`](super::Opener::open).
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
    /// The next counter (`pub(super)` so the tests can start near `u64::MAX`).
    pub(super) next: u64,
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
