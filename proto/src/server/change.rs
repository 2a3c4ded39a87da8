//! [`Change`]: one durable fact of a server turn, committed by stores
//! ([`Turn::commit`](super::Turn::commit)) and applied to a
//! [`State`](super::State) by them and on restore.
//!
//! The store encodes changes with postcard (positional): new variants and
//! fields go at the end, and a change of encoding bumps the store's format
//! version (`confab_server::store::FORMAT_VERSION`).

use std::sync::Arc;

use bytes::Bytes;

use super::state::{
    Conversation, ItemKind, MailedRequest, OidcLogin, QueuedItem, Recorded, RetryKey, Rotation, TokenRecord, User,
};
use crate::jwt::KeyRecord;
use crate::wire::{HistoryEntry, Opcode, ResponseBody, Sent, Status};

/// One durable change of a turn, committed and replayed by stores.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[allow(missing_docs)]
pub enum Change {
    /// A new account.
    UserCreated { username: String, user: User },
    /// An account's identity key was set.
    IdentityKeySet { username: String, identity_key: Bytes },
    /// A token was issued (keyed by the SHA-256 of the token).
    TokenIssued { hash: [u8; 32], record: TokenRecord },
    /// A refresh token was exchanged for a new pair.
    TokenRotated { hash: [u8; 32], rotation: Rotation },
    /// Single tokens were revoked (the unused pair of a retried refresh).
    TokensRevoked { hashes: Vec<[u8; 32]> },
    /// Every token of a family was revoked (logout, refresh reuse).
    FamilyRevoked { family: u64 },
    /// Tokens that expired at or before `before_ms` were forgotten.
    TokensPurged { before_ms: u64 },
    /// A room was created, its owner its first member.
    RoomCreated { room: String, verifier: Bytes, owner: String },
    /// A user joined a room.
    RoomJoined { room: String, user: String },
    /// A user left a room.
    RoomLeft { room: String, user: String },
    /// A room was deleted.
    RoomDeleted { room: String },
    /// A message was appended to a room's history.
    RoomMessage { room: String, entry: HistoryEntry },
    /// A conversation's state changed (`None`: it ended).
    ConversationSet { a: String, b: String, state: Option<Conversation> },
    /// An item was queued in the lane `from -> to`; it takes the lane's next sequence number.
    /// The names are shared with the server's sessions (no copy per message); they are
    /// stored as the strings they are.
    Enqueued {
        #[cfg_attr(feature = "serde", serde(with = "shared_name"))]
        from: Arc<str>,
        #[cfg_attr(feature = "serde", serde(with = "shared_name"))]
        to: Arc<str>,
        item: QueuedItem,
    },
    /// The recipient acknowledged every item of `from -> to` up to `upto`.
    Acked { from: String, to: String, upto: u64 },
    /// An undelivered item was dropped after the retention period.
    Dropped { from: String, to: String, seq: u64 },
    /// `user` must be told that its message `seq` to `peer` was dropped.
    NoticeAdded { user: String, peer: String, seq: u64 },
    /// `user`'s notices were delivered.
    NoticesCleared { user: String },
    /// A response was remembered for retries of `request_id` within a token family.
    Recorded { family: u64, request_id: u32, response: Recorded },
    /// A token family was handed out without tokens (an OIDC session, before
    /// [`Change::OidcLoginBound`]; no longer emitted, still applied when replayed).
    FamilyAllocated { family: u64 },
    /// The phantom-token signing keys, current and retired, replacing the previous set.
    /// Carries the server's own private keys. A record's `last_exp` may be later than the
    /// last `exp` actually signed (never earlier), so that minting persists rarely.
    SigningKeysSet { records: Vec<KeyRecord> },
    /// An OIDC login (keyed by [`oidc_login_key`](super::oidc_login_key)) is bound to a token
    /// family, or its expiry moved later. Replaces the previous record of `key`.
    OidcLoginBound { key: [u8; 32], login: OidcLogin },
    /// A provider user (keyed by [`oidc_subject_key`](super::oidc_subject_key) of its `iss`
    /// and `sub`) is bound to the account `username`, for good (store format 3).
    OidcSubjectBound { subject: [u8; 32], username: String },
    /// A room's history entries up to sequence number `upto` were dropped to keep its
    /// history within `room_history_bytes` (store format 3).
    RoomHistoryTrimmed { room: String, upto: u64 },
    /// A room's public descriptor, stored right after [`Change::RoomCreated`] (store format 3).
    RoomDescribed { room: String, descriptor: Bytes },
    /// A `send_mp` routed: its item queued in `from -> to` ([`Change::Enqueued`]) and its
    /// answer (`valid`, `code`, `Sent { seq }`) remembered for retries of `request_id` within
    /// `family` ([`Change::Recorded`]), as one change: the routing path makes one change per
    /// message. The SQLite store logs it as those two records ([`unfold`](Self::unfold)), so
    /// its log holds the rows of store format 4; the serde form (variant 25) is for
    /// in-memory uses (comparing runs, say), not a store record.
    MessageSent {
        #[cfg_attr(feature = "serde", serde(with = "shared_name"))]
        from: Arc<str>,
        #[cfg_attr(feature = "serde", serde(with = "shared_name"))]
        to: Arc<str>,
        item: QueuedItem,
        family: u64,
        request_id: u32,
        code: u16,
    },
    /// A refresh token was exchanged for a new pair by `refresh_keyed`:
    /// [`Change::TokenRotated`], and `retry`, the exchange's retry key, kept
    /// with the new access token as long as it is remembered (store format 5).
    TokenRotatedKeyed { hash: [u8; 32], rotation: Rotation, retry: RetryKey },
    /// The access token whose SHA-256 is `access`, issued by a
    /// `refresh_keyed` exchange, authenticated its first request: the
    /// exchange was answered, and is never retried (store format 5).
    ExchangeAnswered { access: [u8; 32] },
    /// Mail to partition `to`, its item number `seq` (the first is 1),
    /// encoded as [`MailItem`](crate::server::MailItem) (docs/PARTITIONS.md, "Mail"): the
    /// store keeps `item` in its outbox, in the same transaction as the
    /// turn's other changes, until the target applied it; the state keeps
    /// only the next number (store format 6).
    MailOut { to: u8, seq: u64, item: Bytes },
    /// Mail item `seq` of partition `from` was applied here: its effects
    /// are the other changes of the turn, and the store drops the item
    /// from its outbox in the same transaction (store format 6).
    MailIn { from: u8, seq: u64 },
    /// A request of a session was mailed to partition `to` as item
    /// `ticket` (the [`Change::MailOut`] before it in the turn): remembered
    /// until its answer comes back, so that a retry of its request id waits
    /// for that answer instead of mailing again (store format 7).
    RequestMailed { to: u8, ticket: u64, request: MailedRequest },
    /// The answer to item `ticket` mailed to partition `from` came back:
    /// the request is no longer pending and `response` is remembered for
    /// retries of its request id, in its family (store format 7).
    RequestAnswered { from: u8, ticket: u64, response: Recorded },
}

impl Change {
    /// The records a store logs for this change: `Some` for [`Change::MessageSent`] (the
    /// [`Change::Enqueued`] and [`Change::Recorded`] it stands for, in that order, which
    /// applied in turn give the same state), `None` for every other change (logged as it is).
    #[must_use]
    pub fn unfold(&self) -> Option<[Change; 2]> {
        let Change::MessageSent { from, to, item, family, request_id, code } = self else {
            return None;
        };
        let enqueued = Change::Enqueued { from: from.clone(), to: to.clone(), item: item.clone() };
        let recorded =
            Change::Recorded { family: *family, request_id: *request_id, response: sent_response(item.seq, *code) };
        Some([enqueued, recorded])
    }

    /// The client-made blobs this change stores (identity keys, verifiers,
    /// handshakes, sealed messages), for stores and for checks that the
    /// server holds nothing but what clients sealed.
    #[must_use]
    pub fn blobs(&self) -> Vec<&Bytes> {
        match self {
            Change::UserCreated { user, .. } => vec![&user.identity_key],
            Change::IdentityKeySet { identity_key, .. } => vec![identity_key],
            Change::RoomCreated { verifier, .. } => vec![verifier],
            Change::RoomDescribed { descriptor, .. } => vec![descriptor],
            Change::RoomMessage { entry, .. } => vec![&entry.sealed],
            Change::Enqueued { item, .. } | Change::MessageSent { item, .. } => match &item.kind {
                ItemKind::Request { identity_key, handshake } | ItemKind::Accepted { identity_key, handshake } => {
                    vec![identity_key, handshake]
                }
                ItemKind::Message { sealed } => vec![sealed],
                ItemKind::Closed { .. } => vec![],
            },
            _ => vec![],
        }
    }
}

/// The remembered answer to a `send_mp` whose item got `seq`.
pub(crate) fn sent_response(seq: u64, code: u16) -> Recorded {
    Recorded { opcode: Opcode::SendMp, status: Status::Valid, code, body: ResponseBody::Sent(Sent { seq }) }
}

/// A shared name (`Arc<str>`) as the string it is, in stores: the same bytes as a `String`.
#[cfg(feature = "serde")]
mod shared_name {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(name: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(name)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<str>, D::Error> {
        String::deserialize(deserializer).map(Arc::from)
    }
}
