//! The server's durable state and the changes that mutate it.
//!
//! The server never mutates [`State`] directly: it builds a [`Change`],
//! applies it to its own copy and hands it out in the turn's changes
//! ([`Turn::changes`](super::Turn::changes)). A store that
//! applies the same changes in the same order holds the same state, which is
//! what [`Server::restore`](crate::Server::restore) is given after a restart.
//!
//! The state is four books, each keeping its own redundant data consistent:
//! [`AccountBook`] (accounts, tokens, families), [`RoomBook`] (rooms),
//! [`LaneBook`] (conversations and queued items) and [`MailBook`] (the
//! numbers of the mail between partitions). Their fields are private:
//! the only way to change them is [`State::apply`]. Every map is ordered (a
//! B-tree), so iteration orders, and the serialized form, depend on the
//! contents only: a restored server behaves byte for byte like one that
//! never stopped, and maps keyed by client-chosen names cannot be flooded.
//! One exception, on the routing path: the responses remembered per token
//! family ([`Dedup`]) are a hash map keyed from the server's seed, never
//! iterated, and serialized in the order they were recorded.

mod accounts;
mod lanes;
mod mail;
mod rooms;
#[cfg(feature = "serde")]
mod stored;
mod types;

pub use super::change::Change;
pub use accounts::AccountBook;
pub use lanes::LaneBook;
pub use mail::MailBook;
pub use rooms::RoomBook;
pub use types::{
    Conversation, Dedup, ItemKind, Lane, MailedRequest, OidcLogin, QueuedItem, Recorded, RetryKey, Room, Rotation,
    SecretHash, TokenRecord, User,
};

/// Everything the server must not lose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    accounts: AccountBook,
    rooms: RoomBook,
    lanes: LaneBook,
    mail: MailBook,
}

impl State {
    /// An empty state keeping `history_cap` room messages and `dedup_cap` responses per token family.
    #[must_use]
    pub fn new(history_cap: usize, dedup_cap: usize) -> State {
        let mut state = State {
            accounts: AccountBook::default(),
            rooms: RoomBook::default(),
            lanes: LaneBook::default(),
            mail: MailBook::default(),
        };
        state.set_caps(history_cap, dedup_cap);
        state
    }

    /// Sets the room history and remembered-response caps (they come from the
    /// configuration, not from the store). Applies to changes applied from now on.
    pub fn set_caps(&mut self, history_cap: usize, dedup_cap: usize) {
        self.rooms.history_cap = history_cap;
        self.accounts.dedup_cap = dedup_cap;
    }

    /// Keys the state's hash maps (the remembered responses, looked up by the client's request
    /// ids) with `hasher`, derived from the server's seed. The contents do not change.
    pub(crate) fn rekey(&mut self, hasher: crate::server::keyed::IntKeyed) {
        self.accounts.rekey(hasher);
    }

    /// Accounts, tokens and token families.
    #[must_use]
    pub fn accounts(&self) -> &AccountBook {
        &self.accounts
    }

    /// Rooms.
    #[must_use]
    pub fn rooms(&self) -> &RoomBook {
        &self.rooms
    }

    /// Conversations and queued items.
    #[must_use]
    pub fn lanes(&self) -> &LaneBook {
        &self.lanes
    }

    /// The numbers of the mail between partitions.
    #[must_use]
    pub fn mail(&self) -> &MailBook {
        &self.mail
    }

    /// The account `username`.
    #[must_use]
    pub fn user(&self, username: &str) -> Option<&User> {
        self.accounts.user(username)
    }

    /// The room `name`.
    #[must_use]
    pub fn room(&self, name: &str) -> Option<&Room> {
        self.rooms.get(name)
    }

    /// The conversation between `a` and `b`, if any.
    #[must_use]
    pub fn conversation(&self, a: &str, b: &str) -> Option<&Conversation> {
        self.lanes.conversation(a, b)
    }

    /// The lane `from -> to`, if any item was ever sent in it.
    #[must_use]
    pub fn lane(&self, from: &str, to: &str) -> Option<&Lane> {
        self.lanes.lane(from, to)
    }

    /// The sequence number the next item in `from -> to` will get.
    #[must_use]
    pub fn next_seq(&self, from: &str, to: &str) -> u64 {
        self.lanes.next_seq(from, to)
    }

    /// Whether [`Change::TokensPurged`] with `before_ms` would forget anything.
    #[must_use]
    pub fn purge_due(&self, before_ms: u64) -> bool {
        self.accounts.purge_due(before_ms)
    }

    /// Applies one change. Changes are facts: applying one whose subject no
    /// longer exists is a no-op, never a panic.
    pub fn apply(&mut self, change: &Change) {
        let (a, r, l) = (&mut self.accounts, &mut self.rooms, &mut self.lanes);
        match change {
            Change::UserCreated { username, user } => a.user_created(username, user),
            Change::IdentityKeySet { username, identity_key } => a.identity_key_set(username, identity_key),
            Change::TokenIssued { hash, record } => a.token_issued(*hash, record),
            Change::TokenRotated { hash, rotation } => a.token_rotated(hash, *rotation, None),
            Change::TokenRotatedKeyed { hash, rotation, retry } => a.token_rotated(hash, *rotation, Some(*retry)),
            Change::ExchangeAnswered { access } => a.exchange_answered(access),
            Change::TokensRevoked { hashes } => a.tokens_revoked(hashes),
            Change::FamilyRevoked { family } => a.family_revoked(*family),
            Change::TokensPurged { before_ms } => a.tokens_purged(*before_ms),
            Change::Recorded { family, request_id, response } => a.recorded_response(*family, *request_id, response),
            Change::FamilyAllocated { family } => a.family_seen(*family),
            Change::SigningKeysSet { records } => a.signing_keys_set(records),
            Change::OidcLoginBound { key, login } => a.oidc_login_bound(*key, *login),
            Change::OidcSubjectBound { subject, username } => a.oidc_subject_bound(*subject, username),
            Change::RoomCreated { room, verifier, owner } => r.created(room, verifier, owner),
            Change::RoomJoined { room, user } => r.joined(room, user),
            Change::RoomLeft { room, user } => r.left(room, user),
            Change::RoomDescribed { room, descriptor } => r.described(room, descriptor),
            Change::RoomDeleted { room } => r.deleted(room),
            Change::RoomMessage { room, entry } => r.message(room, entry),
            Change::RoomHistoryTrimmed { room, upto } => r.trimmed(room, *upto),
            Change::ConversationSet { a: x, b: y, state } => l.conversation_set(x, y, state.as_ref()),
            Change::Enqueued { from, to, item } => l.enqueued(from, to, item),
            Change::MessageSent { from, to, item, family, request_id, code } => {
                l.enqueued(from, to, item);
                a.recorded_response(*family, *request_id, &super::change::sent_response(item.seq, *code));
            }
            Change::Acked { from, to, upto } => l.acked(from, to, *upto),
            Change::Dropped { from, to, seq } => l.dropped(from, to, *seq),
            Change::NoticeAdded { user, peer, seq } => l.notice_added(user, peer, *seq),
            Change::NoticesCleared { user } => l.notices_cleared(user),
            Change::MailOut { to, seq, .. } => self.mail.mark_sent(*to, *seq),
            Change::MailIn { from, seq } => self.mail.mark_applied(*from, *seq),
            Change::RequestMailed { to, ticket, request } => self.mail.request_mailed(*to, *ticket, request),
            Change::RequestAnswered { from, ticket, response } => {
                if let Some(r) = self.mail.request_answered(*from, *ticket) {
                    a.recorded_response(r.family, r.request_id, response);
                }
            }
        }
    }
}
