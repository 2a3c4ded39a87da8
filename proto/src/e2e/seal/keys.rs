//! The keys of sealing and what a tag binds: [`SealKeys`] (one epoch's AES
//! and HMAC keys), [`StreamKey`] (one sender in one context) and the
//! [`ConversationId`] and sender name of the associated data.

use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use super::{EPOCH_ENC_LABEL, EPOCH_MAC_LABEL, Epoch};

/// An AES-128 key and an HMAC-SHA256 key, never the same bytes: the keys of
/// one epoch of a stream, or of a raw blob.
///
/// The bytes are wiped on drop; `Debug` does not print them.
#[derive(Clone)]
pub struct SealKeys {
    /// The AES-128 key (read by the sealing code beside this file).
    pub(super) enc: [u8; 16],
    /// The HMAC-SHA256 key.
    pub(super) mac: [u8; 32],
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

    /// A stream key from its bytes (derived by [`kdf`](crate::e2e::kdf), or persisted).
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
