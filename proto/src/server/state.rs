//! The server's durable state and the changes that mutate it.
//!
//! The server never mutates [`State`] directly: it builds a [`Change`],
//! applies it to its own copy and hands it out in the turn's changes
//! ([`Turn::changes`](super::Turn::changes)). A store that
//! applies the same changes in the same order holds the same state, which is
//! what [`Server::restore`](crate::Server::restore) is given after a restart.
//! Iteration orders are deterministic (B-trees), so a restored server behaves
//! byte for byte like one that never stopped.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

pub use super::change::Change;
use super::config::HashParams;
use crate::jwt::KeyRecord;
use crate::token::TokenKind;
use crate::{HistoryEntry, Opcode, ResponseBody, Status};

/// The hash map used for lookups (never iterated where order matters):
/// foldhash, a fast hasher with a per-process random seed.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;

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

/// The token family of one OIDC login (see [`State::oidc_logins`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct OidcLogin {
    /// The family its sessions are bound under.
    pub family: u64,
    /// The latest expiry (`exp` + leeway, Unix milliseconds) of the provider tokens seen for it.
    pub expires_ms: u64,
}

/// The responses remembered for one user: at most `dedup_cap`, oldest evicted first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Dedup {
    order: VecDeque<u32>,
    responses: HashMap<u32, Recorded>,
}

impl Dedup {
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

    fn insert(&mut self, request_id: u32, response: Recorded, cap: usize) {
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

/// Everything the server must not lose.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct State {
    /// Accounts by username.
    pub users: HashMap<String, User>,
    /// Tokens by SHA-256 of the token.
    pub tokens: HashMap<[u8; 32], TokenRecord>,
    /// Rooms by name.
    pub rooms: BTreeMap<String, Room>,
    /// Conversations, stored under both users: `conversations[a][b] == conversations[b][a]`.
    pub conversations: BTreeMap<String, BTreeMap<String, Conversation>>,
    /// Lanes by sender, then recipient.
    pub lanes: BTreeMap<String, BTreeMap<String, Lane>>,
    /// Senders with a lane to each recipient.
    pub inbound: BTreeMap<String, BTreeSet<String>>,
    /// Queued items per recipient.
    pub queued: HashMap<String, usize>,
    /// Queued items on the server.
    pub queued_total: usize,
    /// Pending "message dropped" notices per sender: (peer, seq).
    pub notices: BTreeMap<String, Vec<(String, u64)>>,
    /// Remembered responses per token family (one login of one client).
    pub dedup: HashMap<u64, Dedup>,
    /// Room history length (from the config).
    pub history_cap: usize,
    /// Remembered responses per user (from the config).
    pub dedup_cap: usize,
    /// The highest token family handed out.
    pub last_family: u64,
    /// The phantom-token signing keys (empty until first used).
    pub signing_keys: Vec<KeyRecord>,
    /// The token family of each OIDC login, by the SHA-256 key of the login (issuer, user
    /// and the provider's SSO session id `sid`, else its subject): every connection of one
    /// login shares it, so retries are recognised across connections. Forgotten with the
    /// family, or `token_grace` after the login's last token expired.
    pub oidc_logins: BTreeMap<[u8; 32], OidcLogin>,
    /// Refresh tokens of revoked families (logout, detected reuse), by SHA-256 of the token,
    /// with the latest expiry of their family: presenting one is answered "revoked", not
    /// "unknown". Forgotten `token_grace` after that expiry. (Store format 3.)
    pub revoked_refresh: HashMap<[u8; 32], u64>,
    /// The account of each OIDC provider user, by [`oidc_subject_key`](super::oidc_subject_key)
    /// of its (`iss`, `sub`): bound at its first login, never changed (store format 3).
    pub oidc_subjects: BTreeMap<[u8; 32], String>,
    /// The reverse of [`oidc_subjects`](Self::oidc_subjects): the subject key of each bound account.
    pub oidc_accounts: BTreeMap<String, [u8; 32]>,
}

impl State {
    /// An empty state keeping `history_cap` room messages and `dedup_cap` responses per user.
    #[must_use]
    pub fn new(history_cap: usize, dedup_cap: usize) -> State {
        State {
            users: HashMap::default(),
            tokens: HashMap::default(),
            rooms: BTreeMap::new(),
            conversations: BTreeMap::new(),
            lanes: BTreeMap::new(),
            inbound: BTreeMap::new(),
            queued: HashMap::default(),
            queued_total: 0,
            notices: BTreeMap::new(),
            dedup: HashMap::default(),
            history_cap,
            dedup_cap,
            last_family: 0,
            signing_keys: Vec::new(),
            oidc_logins: BTreeMap::new(),
            revoked_refresh: HashMap::default(),
            oidc_subjects: BTreeMap::new(),
            oidc_accounts: BTreeMap::new(),
        }
    }

    /// The token families with a token that expires after `before_ms`.
    fn live_families(&self, before_ms: u64) -> std::collections::HashSet<u64, foldhash::quality::RandomState> {
        self.tokens.values().filter(|t| t.expires_ms > before_ms).map(|t| t.family).collect()
    }

    /// Whether [`Change::TokensPurged`] with `before_ms` would forget anything.
    #[must_use]
    pub fn purge_due(&self, before_ms: u64) -> bool {
        let live = self.live_families(before_ms);
        self.tokens.values().any(|t| !kept_by_purge(t, before_ms, &live))
            || self.oidc_logins.values().any(|l| l.expires_ms <= before_ms)
            || self.revoked_refresh.values().any(|e| *e <= before_ms)
    }

    /// The conversation between `a` and `b`, if any.
    #[must_use]
    pub fn conversation(&self, a: &str, b: &str) -> Option<&Conversation> {
        self.conversations.get(a)?.get(b)
    }

    /// The lane `from -> to`, if any item was ever sent in it.
    #[must_use]
    pub fn lane(&self, from: &str, to: &str) -> Option<&Lane> {
        self.lanes.get(from)?.get(to)
    }

    /// The sequence number the next item in `from -> to` will get.
    #[must_use]
    pub fn next_seq(&self, from: &str, to: &str) -> u64 {
        self.lane(from, to).map_or(1, |l| l.next_seq)
    }

    fn lane_mut(&mut self, from: &str, to: &str) -> Option<&mut Lane> {
        self.lanes.get_mut(from)?.get_mut(to)
    }

    fn unqueue(&mut self, to: &str, n: usize) {
        if n == 0 {
            return;
        }
        self.queued_total -= n;
        if let Some(q) = self.queued.get_mut(to) {
            *q -= n;
            if *q == 0 {
                self.queued.remove(to);
            }
        }
    }

    /// Applies one change. Changes are facts: applying one whose subject no
    /// longer exists is a no-op, never a panic.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::UserCreated { username, user } => {
                self.users.insert(username.clone(), user.clone());
            }
            Change::IdentityKeySet { username, identity_key } => {
                if let Some(u) = self.users.get_mut(username) {
                    u.identity_key = identity_key.clone();
                }
            }
            Change::TokenIssued { hash, record } => {
                self.last_family = self.last_family.max(record.family);
                self.tokens.insert(*hash, record.clone());
            }
            Change::TokenRotated { hash, rotation } => {
                if let Some(t) = self.tokens.get_mut(hash) {
                    t.rotated = Some(*rotation);
                }
            }
            Change::TokensRevoked { hashes } => {
                for h in hashes {
                    self.tokens.remove(h);
                }
            }
            Change::FamilyRevoked { family } => {
                let expires_ms = self.tokens.values().filter(|t| t.family == *family).map(|t| t.expires_ms).max();
                for (hash, t) in &self.tokens {
                    if t.family == *family && t.kind == TokenKind::Refresh {
                        self.revoked_refresh.insert(*hash, expires_ms.unwrap_or(t.expires_ms));
                    }
                }
                self.tokens.retain(|_, t| t.family != *family);
                self.dedup.remove(family);
                self.oidc_logins.retain(|_, l| l.family != *family);
            }
            Change::TokensPurged { before_ms } => {
                let live = self.live_families(*before_ms);
                self.tokens.retain(|_, t| kept_by_purge(t, *before_ms, &live));
                self.revoked_refresh.retain(|_, e| *e > *before_ms);
                self.oidc_logins.retain(|_, l| l.expires_ms > *before_ms);
                let live: std::collections::HashSet<u64, foldhash::quality::RandomState> =
                    self.tokens.values().map(|t| t.family).chain(self.oidc_logins.values().map(|l| l.family)).collect();
                self.dedup.retain(|family, _| live.contains(family));
            }
            Change::RoomCreated { room, verifier, owner } => {
                self.rooms.insert(
                    room.clone(),
                    Room {
                        verifier: verifier.clone(),
                        descriptor: Bytes::new(),
                        owner: owner.clone(),
                        members: BTreeSet::from([owner.clone()]),
                        history: VecDeque::new(),
                        next_seq: 1,
                    },
                );
            }
            Change::RoomJoined { room, user } => {
                if let Some(r) = self.rooms.get_mut(room) {
                    r.members.insert(user.clone());
                }
            }
            Change::RoomLeft { room, user } => {
                if let Some(r) = self.rooms.get_mut(room) {
                    r.members.remove(user);
                }
            }
            Change::RoomDescribed { room, descriptor } => {
                if let Some(r) = self.rooms.get_mut(room) {
                    r.descriptor = descriptor.clone();
                }
            }
            Change::RoomDeleted { room } => {
                self.rooms.remove(room);
            }
            Change::RoomMessage { room, entry } => {
                let cap = self.history_cap;
                if let Some(r) = self.rooms.get_mut(room) {
                    r.next_seq = r.next_seq.max(entry.seq + 1);
                    r.history.push_back(entry.clone());
                    while r.history.len() > cap {
                        r.history.pop_front();
                    }
                }
            }
            Change::ConversationSet { a, b, state } => {
                for (x, y) in [(a, b), (b, a)] {
                    match state {
                        Some(s) => {
                            self.conversations.entry(x.clone()).or_default().insert(y.clone(), s.clone());
                        }
                        None => {
                            if let Some(m) = self.conversations.get_mut(x) {
                                m.remove(y);
                                if m.is_empty() {
                                    self.conversations.remove(x);
                                }
                            }
                        }
                    }
                }
            }
            Change::Enqueued { from, to, item } => {
                // Look up before inserting: the hot path allocates no keys.
                if self.lane_mut(from, to).is_none() {
                    self.lanes.entry(from.clone()).or_default().insert(to.clone(), Lane::default());
                    self.inbound.entry(to.clone()).or_default().insert(from.clone());
                }
                if let Some(lane) = self.lane_mut(from, to) {
                    lane.next_seq = lane.next_seq.max(item.seq + 1);
                    lane.items.push_back(item.clone());
                }
                match self.queued.get_mut(to) {
                    Some(n) => *n += 1,
                    None => {
                        self.queued.insert(to.clone(), 1);
                    }
                }
                self.queued_total += 1;
            }
            Change::Acked { from, to, upto } => {
                let mut n = 0;
                if let Some(lane) = self.lane_mut(from, to) {
                    while lane.items.front().is_some_and(|i| i.seq <= *upto) {
                        lane.items.pop_front();
                        n += 1;
                    }
                }
                self.unqueue(to, n);
            }
            Change::Dropped { from, to, seq } => {
                let mut n = 0;
                if let Some(lane) = self.lane_mut(from, to)
                    && let Some(pos) = lane.items.iter().position(|i| i.seq == *seq)
                {
                    lane.items.remove(pos);
                    n = 1;
                }
                self.unqueue(to, n);
            }
            Change::NoticeAdded { user, peer, seq } => {
                self.notices.entry(user.clone()).or_default().push((peer.clone(), *seq));
            }
            Change::NoticesCleared { user } => {
                self.notices.remove(user);
            }
            Change::Recorded { family, request_id, response } => {
                let cap = self.dedup_cap;
                self.dedup.entry(*family).or_default().insert(*request_id, response.clone(), cap);
            }
            Change::FamilyAllocated { family } => {
                self.last_family = self.last_family.max(*family);
            }
            Change::SigningKeysSet { records } => {
                self.signing_keys.clone_from(records);
            }
            Change::OidcLoginBound { key, login } => {
                self.last_family = self.last_family.max(login.family);
                self.oidc_logins.insert(*key, *login);
            }
            Change::RoomHistoryTrimmed { room, upto } => {
                if let Some(r) = self.rooms.get_mut(room) {
                    while r.history.front().is_some_and(|e| e.seq <= *upto) {
                        r.history.pop_front();
                    }
                }
            }
            Change::OidcSubjectBound { subject, username } => {
                self.oidc_subjects.insert(*subject, username.clone());
                self.oidc_accounts.insert(username.clone(), *subject);
            }
        }
    }
}

/// Whether a purge up to `before_ms` keeps a token: unexpired (within the grace), or a spent
/// refresh token (a tombstone) of a family still alive, so that presenting it again is
/// recognised as reuse for as long as the login lasts.
fn kept_by_purge(
    t: &TokenRecord,
    before_ms: u64,
    live: &std::collections::HashSet<u64, foldhash::quality::RandomState>,
) -> bool {
    t.expires_ms > before_ms || (t.rotated.is_some() && live.contains(&t.family))
}
