//! The records the durable state holds: accounts, tokens, rooms,
//! conversations, queued items, remembered responses.

use std::collections::{BTreeSet, VecDeque};

use bytes::Bytes;

use crate::server::config::HashParams;
use crate::server::keyed::{IntKeyed, IntKeyedMap};
use crate::token::TokenKind;
use crate::wire::{HistoryEntry, Opcode, ResponseBody, Status};

/// An argon2id hash with its salt and parameters.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SecretHash {
    /// Random per-secret salt.
    pub salt: [u8; 16],
    /// argon2id output.
    pub hash: [u8; 32],
    /// The parameters it was made with.
    pub params: HashParams,
}

impl SecretHash {
    /// The marker of an account without a password or passphrase (created by
    /// a first login through an external OIDC provider): all-zero salt and
    /// hash, and argon2 parameters of zero, which argon2 refuses, so no
    /// input ever hashes to it. Such accounts log in only through the provider.
    pub const EXTERNAL: SecretHash =
        SecretHash { salt: [0; 16], hash: [0; 32], params: HashParams { m_cost_kib: 0, t_cost: 0, p_cost: 0 } };

    /// Whether this is the [`EXTERNAL`](Self::EXTERNAL) marker.
    #[must_use]
    pub fn is_external(&self) -> bool {
        self.params.m_cost_kib == 0
    }
}

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

/// An account.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct User {
    /// Password hash.
    pub password: SecretHash,
    /// Passphrase hash.
    pub passphrase: SecretHash,
    /// Identity public key (empty until set, for accounts created by an external provider).
    pub identity_key: Bytes,
    /// Random per-user secret (seed 003), keying the user's third-party codes.
    pub secret: [u8; 32],
    /// Creation time, Unix milliseconds.
    pub created_ms: u64,
}

impl User {
    /// Whether the account was created by an external OIDC provider (no password: see [`SecretHash::EXTERNAL`]).
    #[must_use]
    pub fn is_external(&self) -> bool {
        self.password.is_external()
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("identity_key_len", &self.identity_key.len())
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

/// What the server knows of one issued token (it never stores the token).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TokenRecord {
    /// Access or refresh.
    pub kind: TokenKind,
    /// Owner.
    pub username: String,
    /// Login family: every token descending from one login by rotation.
    pub family: u64,
    /// Expiry, Unix milliseconds.
    pub expires_ms: u64,
    /// Set once a refresh token has been exchanged: presenting it again is
    /// reuse, unless it is a retry within the grace interval (see [`Rotation`]).
    pub rotated: Option<Rotation>,
}

/// What a refresh token was exchanged for, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Rotation {
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// SHA-256 of the refresh token issued in exchange.
    pub refresh: [u8; 32],
    /// SHA-256 of the access token issued with it.
    pub access: [u8; 32],
}

/// The retry key of a `refresh_keyed` exchange, as the server keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RetryKey {
    /// SHA-256 of the key (never the key).
    pub key: [u8; 32],
    /// The client's attempt number of the request that made the exchange: a
    /// retry comes with a greater one, a late copy of an earlier attempt
    /// (sent on a connection the client gave up on) with a smaller one.
    pub attempt: u32,
    /// The pair the exchange issued has authenticated a request: its answer
    /// arrived, so the exchange is never retried (a later attempt is reuse).
    pub answered: bool,
}

/// A room.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Room {
    /// Join verifier derived on the client from the room password.
    pub verifier: Bytes,
    /// The room's public descriptor (random room id, key-derivation
    /// costs), opaque; empty for a room created before descriptors existed.
    pub descriptor: Bytes,
    /// Creator; the only one who may delete it.
    pub owner: String,
    /// Members.
    pub members: BTreeSet<String>,
    /// The last `room_history` sealed messages, oldest first.
    pub history: VecDeque<HistoryEntry>,
    /// Sequence number of the next message.
    pub next_seq: u64,
}

/// The state of a private conversation between two users.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Conversation {
    /// `by` asked; the other has not answered.
    Requested {
        /// The requester.
        by: String,
        /// The requester's signed ephemeral key, handed to the accepter.
        handshake: Bytes,
    },
    /// Both sides agreed.
    Open,
    /// Split states only (docs/PARTITIONS.md): `by`, a user of this home,
    /// asked a user of another home, whose home has not answered yet; its
    /// request is item `ticket` of this home's mail there. Tentative: the
    /// answer settles it as [`Conversation::Requested`] or ends it.
    Requesting {
        /// The requester (of this home).
        by: String,
        /// Its signed ephemeral key.
        handshake: Bytes,
        /// The request's number in this home's mail to the peer's home.
        ticket: u64,
    },
    /// Split states only: this home's user accepted the request of `by`, a
    /// user of another home, whose home has not answered yet (mail item
    /// `ticket`). The answer opens it, or puts it back to
    /// [`Conversation::Requested`].
    Accepting {
        /// The requester (of the other home).
        by: String,
        /// The requester's signed ephemeral key.
        handshake: Bytes,
        /// The acceptance's number in this home's mail to the peer's home.
        ticket: u64,
    },
}

/// What travels in a lane.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ItemKind {
    /// An MP request (delivered as `mp_request`).
    Request {
        /// Requester's identity key at request time.
        identity_key: Bytes,
        /// Requester's signed ephemeral key.
        handshake: Bytes,
    },
    /// An MP acceptance (delivered as `mp_accepted`).
    Accepted {
        /// Accepter's identity key.
        identity_key: Bytes,
        /// Accepter's signed ephemeral key.
        handshake: Bytes,
    },
    /// The conversation was closed (delivered as `mp_closed`).
    Closed {
        /// Why.
        reason: String,
    },
    /// A sealed private message (delivered as `user_message`).
    Message {
        /// The sealed bytes.
        sealed: Bytes,
    },
}

/// One item waiting for its recipient's `delivery_ack`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct QueuedItem {
    /// Sequence number in its lane.
    pub seq: u64,
    /// When the server accepted it, Unix milliseconds.
    pub sent_ms: u64,
    /// Content.
    pub kind: ItemKind,
}

/// One direction of delivery between two users: sequence numbers and the
/// items not yet acknowledged, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Lane {
    /// Sequence number of the next item.
    pub next_seq: u64,
    /// Unacknowledged items, by increasing sequence number.
    pub items: VecDeque<QueuedItem>,
}

/// A request mailed to another partition (split states), waiting for its
/// answer: pinned in its family's remembered responses until the answer
/// comes back, whatever happens to the session meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MailedRequest {
    /// The login (token family) that asked.
    pub family: u64,
    /// Its request id.
    pub request_id: u32,
    /// Its opcode.
    pub opcode: Opcode,
    /// The user who asked (of this home).
    pub user: String,
    /// The other user (of the target's home), or the room (whose home
    /// the target is).
    pub peer: String,
}

/// A response remembered for an idempotent retry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Recorded {
    /// The request's opcode (a retry with another opcode is refused).
    pub opcode: Opcode,
    /// The status answered.
    pub status: Status,
    /// The code answered.
    pub code: u16,
    /// The body answered.
    pub body: ResponseBody,
}

/// The token family of one OIDC login (see [`AccountBook::oidc_login`](super::AccountBook::oidc_login)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct OidcLogin {
    /// The family its sessions are bound under.
    pub family: u64,
    /// The latest expiry (`exp` + leeway, Unix milliseconds) of the provider tokens seen for it.
    pub expires_ms: u64,
}

/// The responses remembered for one token family: at most `dedup_cap`, oldest evicted first.
/// Looked up on every retried-or-not request of the kinds that are remembered, so a hash map
/// (keyed from the server's seed: request ids are the client's choice; bounded by the cap);
/// serialized in the order the responses were recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
pub struct Dedup {
    order: VecDeque<u32>,
    responses: IntKeyedMap<u32, Recorded>,
}

#[cfg(feature = "serde")]
impl serde::Serialize for Dedup {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeStruct};
        /// The responses, oldest first (the same bytes for the same history, whatever the key).
        struct InOrder<'a>(&'a Dedup);
        impl serde::Serialize for InOrder<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let d = self.0;
                let entries: Vec<_> = d.order.iter().filter_map(|id| d.responses.get(id).map(|r| (id, r))).collect();
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (id, r) in entries {
                    map.serialize_entry(id, r)?;
                }
                map.end()
            }
        }
        let mut s = serializer.serialize_struct("Dedup", 2)?;
        s.serialize_field("order", &self.order)?;
        s.serialize_field("responses", &InOrder(self))?;
        s.end()
    }
}

impl Dedup {
    /// An empty record whose map is keyed by `hasher`.
    pub(crate) fn with_hasher(hasher: IntKeyed) -> Dedup {
        Dedup { order: VecDeque::new(), responses: IntKeyedMap::with_hasher(hasher) }
    }

    /// The same record, its map keyed by `hasher`.
    pub(crate) fn rekeyed(&self, hasher: IntKeyed) -> Dedup {
        let mut responses = IntKeyedMap::with_capacity_and_hasher(self.responses.len(), hasher);
        responses.extend(self.responses.iter().map(|(id, r)| (*id, r.clone())));
        Dedup { order: self.order.clone(), responses }
    }

    /// The response recorded for `request_id`.
    #[must_use]
    pub fn get(&self, request_id: u32) -> Option<&Recorded> {
        self.responses.get(&request_id)
    }

    /// How many responses are remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none is.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub(super) fn insert(&mut self, request_id: u32, response: Recorded, cap: usize) {
        if self.responses.insert(request_id, response).is_none() {
            self.order.push_back(request_id);
        }
        while self.order.len() > cap {
            if let Some(old) = self.order.pop_front() {
                self.responses.remove(&old);
            }
        }
    }
}
