//! Room keys: from the room password to sealing keys and a join verifier.
//!
//! Seed 001's "room11 pass2934": everyone who knows a room's name and
//! password can read and write it; the server must not. When a room is
//! created, its creator draws a random 16-byte **room id** and picks the
//! argon2id costs; both travel in the public [`RoomDescriptor`], which the
//! server stores with the room and hands to anyone who asks (`room_info`).
//! Every member then derives:
//!
//! ```text
//! salt     = SHA-256("confab v2 room salt" | room id [16] | room name)   (32 bytes)
//! secret   = argon2id(password, salt, descriptor's m, t, p)              (32 bytes)
//! schedule = HKDF-SHA256(salt, secret)
//! verifier = expand("confab v2 room verifier")                            (32 bytes)
//! stream key of `sender`
//!          = expand("confab v2 room sender" 0x00 sender)                  (32 bytes)
//! ```
//!
//! Only the verifier leaves the client, in `create_room` / `join_room`'s
//! `verifier` field; the server compares it in constant time. It is an
//! independent HKDF output, so it reveals nothing about the message keys,
//! but it does let whoever holds it test password guesses offline, each
//! guess costing one argon2id (at least m = 64 MiB, t = 3 by default): a
//! room is exactly as secret as its password, which is why the client
//! refuses weak ones ([`check_room_password`]).
//!
//! The random salt means nothing can be computed before a room exists, and
//! that the same name and password give unrelated keys in two incarnations
//! of a room. The room id is also bound into every message's associated
//! data ([`ConversationId::room`]), so a message of a deleted room never
//! opens in a new room of the same name and password.
//!
//! Messages are sealed on the sender's stream with a fresh epoch per
//! sending session ([`seal`](super::seal)). Every member can derive every
//! member's stream key: the tag proves membership, not which member wrote
//! (the server vouches for the sender field).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::identity::argon2id;
use super::kdf::{KeySchedule, Purpose};
use super::seal::{ConversationId, OpenError, Opened, ReplayState, SealError, Sealer, StreamKey, open_stream};
use crate::server::HashParams;

/// Label hashed before the room id and name to make the argon2id salt.
pub const ROOM_SALT_LABEL: &[u8] = b"confab v2 room salt";
/// Bytes of a join verifier.
pub const VERIFIER_LEN: usize = 32;
/// Bytes of a room id.
pub const ROOM_ID_LEN: usize = 16;
/// Version byte of a [`RoomDescriptor`].
pub const DESCRIPTOR_VERSION: u8 = 1;
/// Bytes of an encoded [`RoomDescriptor`].
pub const DESCRIPTOR_LEN: usize = 1 + ROOM_ID_LEN + 12;
/// The argon2id costs a new room gets by default: m = 64 MiB, t = 3, p = 1.
pub const ROOM_PARAMS: HashParams = HashParams { m_cost_kib: 64 * 1024, t_cost: 3, p_cost: 1 };
/// The largest costs a client accepts from a descriptor (a hostile server
/// could otherwise make joining exhaust the device): 1 GiB, t = 16, p = 16.
pub const ROOM_MAX_PARAMS: HashParams = HashParams { m_cost_kib: 1024 * 1024, t_cost: 16, p_cost: 16 };
/// Shortest room password the client accepts when creating a room.
pub const MIN_ROOM_PASSWORD: usize = 10;

/// Why room keys could not be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// argon2 refused the parameters.
    #[error("argon2 parameters rejected: {0}")]
    BadParams(String),
    /// The descriptor is not one this client can use.
    #[error("unusable room descriptor: {0}")]
    BadDescriptor(&'static str),
    /// The descriptor asks for cheaper argon2id than this client accepts:
    /// a server that lowers the cost would make the password easier to guess.
    #[error(
        "room key derivation too weak: m = {m_cost_kib} KiB, t = {t_cost} (at least m = {min_m_cost_kib} KiB, t = {min_t_cost} required)"
    )]
    WeakParams {
        /// The descriptor's memory cost.
        m_cost_kib: u32,
        /// The descriptor's iterations.
        t_cost: u32,
        /// This client's minimum memory cost.
        min_m_cost_kib: u32,
        /// This client's minimum iterations.
        min_t_cost: u32,
    },
    /// The room password is too easy to guess.
    #[error("room password too weak: use at least {MIN_ROOM_PASSWORD} characters, not all the same few")]
    WeakPassword,
}

/// Refuses room passwords that are too easy to guess offline: fewer than
/// [`MIN_ROOM_PASSWORD`] characters, or fewer than 5 distinct characters.
pub fn check_room_password(password: &[u8]) -> Result<(), RoomError> {
    let Ok(text) = std::str::from_utf8(password) else { return Err(RoomError::WeakPassword) };
    let mut distinct: Vec<char> = text.chars().collect();
    let len = distinct.len();
    distinct.sort_unstable();
    distinct.dedup();
    if len < MIN_ROOM_PASSWORD || distinct.len() < 5 { Err(RoomError::WeakPassword) } else { Ok(()) }
}

/// The public description of one incarnation of a room, chosen by its
/// creator and kept by the server: a random room id and the argon2id costs.
///
/// ```text
/// version u8 (1) | room id [16] | m_cost u32 BE (KiB) | t_cost u32 BE | p_cost u32 BE
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomDescriptor {
    room_id: [u8; ROOM_ID_LEN],
    params: HashParams,
}

impl RoomDescriptor {
    /// A new room: a random id and the given costs.
    #[must_use]
    pub fn generate(rng: &mut impl rand::CryptoRng, params: HashParams) -> Self {
        let mut room_id = [0u8; ROOM_ID_LEN];
        rng.fill_bytes(&mut room_id);
        Self { room_id, params }
    }

    /// A descriptor from its parts (test vectors).
    #[must_use]
    pub fn from_parts(room_id: [u8; ROOM_ID_LEN], params: HashParams) -> Self {
        Self { room_id, params }
    }

    /// The encoding above.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; DESCRIPTOR_LEN] {
        let mut out = [0u8; DESCRIPTOR_LEN];
        out[0] = DESCRIPTOR_VERSION;
        out[1..17].copy_from_slice(&self.room_id);
        out[17..21].copy_from_slice(&self.params.m_cost_kib.to_be_bytes());
        out[21..25].copy_from_slice(&self.params.t_cost.to_be_bytes());
        out[25..29].copy_from_slice(&self.params.p_cost.to_be_bytes());
        out
    }

    /// Parses a descriptor the server handed over, refusing costs below
    /// `minimum` (the client's floor) or above [`ROOM_MAX_PARAMS`].
    pub fn parse(bytes: &[u8], minimum: HashParams) -> Result<Self, RoomError> {
        let descriptor = Self::from_bytes(bytes)?;
        let params = descriptor.params;
        if params.m_cost_kib < minimum.m_cost_kib || params.t_cost < minimum.t_cost {
            return Err(RoomError::WeakParams {
                m_cost_kib: params.m_cost_kib,
                t_cost: params.t_cost,
                min_m_cost_kib: minimum.m_cost_kib,
                min_t_cost: minimum.t_cost,
            });
        }
        Ok(descriptor)
    }

    /// Decodes a descriptor this client stored itself (no minimum cost;
    /// costs above [`ROOM_MAX_PARAMS`] are still refused).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RoomError> {
        if bytes.len() != DESCRIPTOR_LEN {
            return Err(RoomError::BadDescriptor("wrong length"));
        }
        if bytes[0] != DESCRIPTOR_VERSION {
            return Err(RoomError::BadDescriptor("unknown version"));
        }
        let word = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let params = HashParams { m_cost_kib: word(17), t_cost: word(21), p_cost: word(25) };
        if params.m_cost_kib > ROOM_MAX_PARAMS.m_cost_kib
            || params.t_cost > ROOM_MAX_PARAMS.t_cost
            || params.p_cost > ROOM_MAX_PARAMS.p_cost
            || params.p_cost == 0
            || params.m_cost_kib < 8 * params.p_cost
        {
            return Err(RoomError::BadDescriptor("argon2id costs out of range"));
        }
        let mut room_id = [0u8; ROOM_ID_LEN];
        room_id.copy_from_slice(&bytes[1..17]);
        Ok(Self { room_id, params })
    }

    /// The room id.
    #[must_use]
    pub fn room_id(&self) -> &[u8; ROOM_ID_LEN] {
        &self.room_id
    }

    /// The argon2id costs.
    #[must_use]
    pub fn params(&self) -> HashParams {
        self.params
    }
}

/// The argon2id salt of a room: `SHA-256("confab v2 room salt" | room id | name)`.
#[must_use]
pub fn room_salt(room: &str, room_id: &[u8; ROOM_ID_LEN]) -> [u8; 32] {
    Sha256::new().chain_update(ROOM_SALT_LABEL).chain_update(room_id).chain_update(room.as_bytes()).finalize().into()
}

/// The keys of one incarnation of a room, derived from its name,
/// descriptor and password.
#[derive(Clone)]
pub struct RoomKeys {
    room: String,
    descriptor: RoomDescriptor,
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
    /// Derives the room's keys. Costs one argon2id with the descriptor's
    /// costs (about a second with the default 64 MiB, t = 3): run it off
    /// any latency-sensitive path.
    pub fn derive(room: &str, password: &[u8], descriptor: &RoomDescriptor) -> Result<Self, RoomError> {
        let salt = room_salt(room, &descriptor.room_id);
        let mut secret = Zeroizing::new([0u8; 32]);
        argon2id(password, &salt, descriptor.params, &mut secret[..])
            .map_err(|e| RoomError::BadParams(e.to_string()))?;
        Ok(Self::from_secret(room, descriptor, &secret))
    }

    /// Rebuilds keys from a persisted [`secret`](Self::secret), without argon2id.
    #[must_use]
    pub fn from_secret(room: &str, descriptor: &RoomDescriptor, secret: &[u8; 32]) -> Self {
        let schedule = KeySchedule::new(&room_salt(room, &descriptor.room_id), secret);
        let verifier = schedule.room_verifier();
        Self { room: room.to_owned(), descriptor: *descriptor, secret: Zeroizing::new(*secret), schedule, verifier }
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

    /// The room's descriptor (id and costs).
    #[must_use]
    pub fn descriptor(&self) -> &RoomDescriptor {
        &self.descriptor
    }

    /// The join verifier: the only value the server sees.
    #[must_use]
    pub fn verifier(&self) -> &[u8; VERIFIER_LEN] {
        &self.verifier
    }

    /// The stream key of `sender`'s messages in this room.
    #[must_use]
    pub fn sender_key(&self, sender: &str) -> StreamKey {
        self.schedule.stream_key(Purpose::Room { sender })
    }

    /// The conversation id every message of this room binds.
    #[must_use]
    pub fn conversation(&self) -> ConversationId {
        ConversationId::room(&self.room, &self.descriptor.room_id)
    }
}

/// One member's view of a room: seals this member's messages in a sending
/// session of its own (fresh epoch), opens everyone's, remembering per
/// sender what it accepted.
#[derive(Debug, Clone)]
pub struct RoomSession {
    keys: RoomKeys,
    me: String,
    conversation: ConversationId,
    sealer: Sealer,
    received: BTreeMap<String, ReplayState>,
}

impl RoomSession {
    /// A member's session, with a fresh sending epoch and nothing accepted.
    #[must_use]
    pub fn new(keys: RoomKeys, me: &str, rng: &mut impl rand::CryptoRng) -> Self {
        let sealer = Sealer::new(&keys.sender_key(me), rng);
        let conversation = keys.conversation();
        Self { keys, me: me.to_owned(), conversation, sealer, received: BTreeMap::new() }
    }

    /// The room's keys.
    #[must_use]
    pub fn keys(&self) -> &RoomKeys {
        &self.keys
    }

    /// This session's sending epoch.
    #[must_use]
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Seals a message from this member at its clock `sent_ms`.
    pub fn seal(&mut self, sent_ms: u64, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        self.sealer.seal(&self.conversation, &self.me, sent_ms, plaintext)
    }

    /// Opens a message the server says `sender` wrote, and records it:
    /// the same message is refused the second time.
    pub fn open(&mut self, sender: &str, blob: &[u8]) -> Result<Opened, OpenError> {
        let stream = self.keys.sender_key(sender);
        // `open_stream` changes the state only when it accepts, so a known
        // sender's state is used in place; a new sender is recorded only once
        // one of its messages was accepted.
        if let Some(state) = self.received.get_mut(sender) {
            return open_stream(&stream, state, &self.conversation, sender, blob);
        }
        let mut state = ReplayState::new();
        let opened = open_stream(&stream, &mut state, &self.conversation, sender, blob)?;
        self.received.insert(sender.to_owned(), state);
        Ok(opened)
    }

    /// Opens a message without recording it (history already accepted
    /// once: shown again as history, never as new).
    pub fn peek(&self, sender: &str, blob: &[u8]) -> Result<Opened, OpenError> {
        let stream = self.keys.sender_key(sender);
        let mut scratch = ReplayState::new();
        open_stream(&stream, &mut scratch, &self.conversation, sender, blob)
    }

    /// What was accepted from `sender`, if anything.
    #[must_use]
    pub fn received(&self, sender: &str) -> Option<&ReplayState> {
        self.received.get(sender)
    }

    /// Every sender with an accepted message and what was accepted, to persist them.
    #[must_use]
    pub fn received_all(&self) -> &BTreeMap<String, ReplayState> {
        &self.received
    }

    /// Restores what was accepted from `sender`.
    pub fn restore_received(&mut self, sender: &str, state: ReplayState) {
        self.received.insert(sender.to_owned(), state);
    }
}

#[cfg(test)]
#[path = "tests/room.rs"]
mod tests;
