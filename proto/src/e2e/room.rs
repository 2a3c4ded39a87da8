//! Room keys: from the room password to sealing keys and a join verifier.
//!
//! Seed 001's "room11 pass2934": everyone who knows a room's name and
//! password can read and write it; the server must not. The client derives:
//!
//! ```text
//! salt     = SHA-256("confab room salt v1" | room name)          (32 bytes)
//! secret   = argon2id(password, salt, params)                   (32 bytes)
//! schedule = HKDF-SHA256(salt, secret)
//! verifier = expand("confab v1 room verifier")                   (32 bytes)
//! keys of the messages of `sender`
//!          = expand("confab v1 room enc" 0x00 sender)            (16 bytes, AES)
//!            expand("confab v1 room mac" 0x00 sender)            (32 bytes, HMAC)
//! ```
//!
//! Only the verifier leaves the client, in `create_room` / `join_room`'s
//! `verifier` field; the server compares it in constant time. It is an
//! independent HKDF output, so it reveals nothing about the message keys,
//! but it does let whoever holds it test password guesses offline, each
//! guess costing one argon2id: a room is exactly as secret as its password.
//!
//! The salt binds the room name, so the same password gives unrelated keys
//! in two rooms, and precomputation must target one room at a time.
//!
//! Messages are sealed with the sender's keys and associated data
//! `ConversationId::room(name)` and the sender's username. Every member can
//! derive every member's keys: the tag proves membership, not which member
//! wrote (the server vouches for the sender field). Per-sender keys keep the
//! CTR nonces of different senders apart. A member's sending counter must
//! survive restarts: [`RoomSession::resume`] continues from a persisted
//! counter, e.g. one past the highest counter of the member's own messages
//! in the history a join returns.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::identity::argon2id;
use super::kdf::{KeySchedule, Purpose};
use super::seal::{ConversationId, OpenError, Opener, ReplayWindow, SealError, SealKeys, Sealer};
use crate::server::HashParams;

/// Label hashed before the room name to make the argon2id salt.
pub const ROOM_SALT_LABEL: &[u8] = b"confab room salt v1";
/// Bytes of a join verifier.
pub const VERIFIER_LEN: usize = 32;

/// Why room keys could not be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// argon2 refused the parameters.
    #[error("argon2 parameters rejected: {0}")]
    BadParams(String),
}

/// The argon2id salt of a room: `SHA-256("confab room salt v1" | name)`.
#[must_use]
pub fn room_salt(room: &str) -> [u8; 32] {
    Sha256::new().chain_update(ROOM_SALT_LABEL).chain_update(room.as_bytes()).finalize().into()
}

/// The keys of one room, derived from its name and password.
#[derive(Clone)]
pub struct RoomKeys {
    room: String,
    /// The argon2id output the schedule is extracted from (kept to persist the keys).
    secret: Zeroizing<[u8; 32]>,
    schedule: KeySchedule,
    verifier: [u8; VERIFIER_LEN],
}

impl std::fmt::Debug for RoomKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomKeys").field("room", &self.room).finish_non_exhaustive()
    }
}

impl RoomKeys {
    /// Derives the room's keys. Costs one argon2id with `params` (tens of
    /// milliseconds with OWASP parameters): run it off any latency-sensitive
    /// path.
    pub fn derive(room: &str, password: &[u8], params: HashParams) -> Result<Self, RoomError> {
        let salt = room_salt(room);
        let mut secret = Zeroizing::new([0u8; 32]);
        argon2id(password, &salt, params, &mut secret[..]).map_err(|e| RoomError::BadParams(e.to_string()))?;
        Ok(Self::from_secret(room, &secret))
    }

    /// Rebuilds keys from a persisted [`secret`](Self::secret), without argon2id.
    #[must_use]
    pub fn from_secret(room: &str, secret: &[u8; 32]) -> Self {
        let schedule = KeySchedule::new(&room_salt(room), secret);
        let verifier = schedule.room_verifier();
        Self { room: room.to_owned(), secret: Zeroizing::new(*secret), schedule, verifier }
    }

    /// The room secret every key is derived from (the argon2id output of the
    /// password): persist it encrypted, like the keys it stands for.
    #[must_use]
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The room's name.
    #[must_use]
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The join verifier: the only value the server sees.
    #[must_use]
    pub fn verifier(&self) -> &[u8; VERIFIER_LEN] {
        &self.verifier
    }

    /// The sealing keys of `sender`'s messages in this room.
    #[must_use]
    pub fn sender_keys(&self, sender: &str) -> SealKeys {
        self.schedule.seal_keys(Purpose::Room { sender })
    }
}

/// One member's view of a room: seals this member's messages, opens
/// everyone's (each sender with its own replay window).
#[derive(Debug, Clone)]
pub struct RoomSession {
    keys: RoomKeys,
    me: String,
    conversation: ConversationId,
    sealer: Sealer,
    windows: BTreeMap<String, ReplayWindow>,
}

impl RoomSession {
    /// A member who has never sent in this room with these keys.
    #[must_use]
    pub fn new(keys: RoomKeys, me: &str) -> Self {
        Self::resume(keys, me, 0)
    }

    /// A member whose next unused counter is `next_counter`.
    #[must_use]
    pub fn resume(keys: RoomKeys, me: &str, next_counter: u64) -> Self {
        let sealer = Sealer::resume(keys.sender_keys(me), next_counter);
        let conversation = ConversationId::room(&keys.room);
        Self { keys, me: me.to_owned(), conversation, sealer, windows: BTreeMap::new() }
    }

    /// The room's keys.
    #[must_use]
    pub fn keys(&self) -> &RoomKeys {
        &self.keys
    }

    /// The counter of this member's next message (persist it).
    #[must_use]
    pub fn next_counter(&self) -> u64 {
        self.sealer.next_counter()
    }

    /// Seals a message from this member.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        self.sealer.seal(&self.conversation, &self.me, plaintext)
    }

    /// Opens a message the server says `sender` wrote (live or history).
    pub fn open(&mut self, sender: &str, blob: &[u8]) -> Result<Vec<u8>, OpenError> {
        let window = self.windows.get(sender).copied().unwrap_or_default();
        let mut opener = Opener::resume(self.keys.sender_keys(sender), window);
        let plaintext = opener.open(&self.conversation, sender, blob)?;
        self.windows.insert(sender.to_owned(), opener.window());
        Ok(plaintext)
    }

    /// The replay window of `sender`'s messages, if any was accepted.
    #[must_use]
    pub fn window(&self, sender: &str) -> Option<ReplayWindow> {
        self.windows.get(sender).copied()
    }

    /// Every sender with an accepted message and its replay window, to persist them.
    #[must_use]
    pub fn windows(&self) -> Vec<(String, ReplayWindow)> {
        self.windows.iter().map(|(s, w)| (s.clone(), *w)).collect()
    }

    /// Restores a persisted replay window.
    pub fn restore_window(&mut self, sender: &str, window: ReplayWindow) {
        self.windows.insert(sender.to_owned(), window);
    }
}

#[cfg(test)]
#[path = "tests/room.rs"]
mod tests;
