//! What the simulated users sent, what the server acknowledged and what
//! arrived: the evidence the invariants are checked against.
//!
//! Every payload is unique and recognisable (`mp:alice->bob:17`,
//! `room:lobby:alice:3`; in secure mode the plaintext, `plaintext mp
//! alice->bob #17, tag ...`), so a delivery names the post it delivers.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;

/// Where a post went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A private message to this user.
    User(String),
    /// A message to this room.
    Room(String),
}

/// What became of a post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No answer yet.
    Pending,
    /// The server acknowledged it with this sequence number and code.
    Acked {
        /// Sequence number in its lane or room.
        seq: u64,
        /// 200 (delivered live) or 202 (queued).
        code: u16,
    },
    /// The client reported a failure.
    Failed {
        /// The code.
        code: u16,
        /// Why.
        reason: String,
    },
    /// The session ended after the request was sent and before its answer:
    /// the server may or may not have performed it (delivered at most once).
    Unknown {
        /// Why.
        reason: String,
    },
}

/// One `send_mp` or `send_room` a user made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    /// Sender.
    pub from: String,
    /// Recipient or room.
    pub to: Target,
    /// Virtual time of the command.
    pub at: Duration,
    /// Its outcome so far.
    pub outcome: Outcome,
}

/// The kind of a delivered item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryKind {
    /// `mp_request`.
    MpRequest,
    /// `mp_accepted`.
    MpAccepted,
    /// `mp_closed`.
    MpClosed,
    /// `user_message`.
    Message,
    /// `room_message` in this room.
    Room(String),
}

/// One item a user's application received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Virtual time of arrival.
    pub at: Duration,
    /// Sender (or peer).
    pub from: String,
    /// What it was.
    pub kind: DeliveryKind,
    /// Its sequence number (lane or room).
    pub seq: u64,
    /// The sealed payload (empty for control items).
    pub sealed: Bytes,
}

/// Every post and every delivery of a run.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    posts: HashMap<Bytes, Post>,
    /// Posts in the order they were made.
    order: Vec<Bytes>,
    inbox: BTreeMap<String, Vec<Delivery>>,
    /// Deliveries lost with a device state replaced by an old copy, by user.
    lost: BTreeMap<String, Vec<Delivery>>,
    /// Content keys the secure clients held (what, raw bytes), for leak checks.
    keys: Vec<(String, Vec<u8>)>,
}

impl Ledger {
    pub(crate) fn posted(&mut self, sealed: Bytes, from: &str, to: Target, at: Duration) {
        let post = Post { from: from.to_owned(), to, at, outcome: Outcome::Pending };
        self.order.push(sealed.clone());
        self.posts.insert(sealed, post);
    }

    pub(crate) fn settle(&mut self, sealed: &Bytes, outcome: Outcome) {
        if let Some(p) = self.posts.get_mut(sealed) {
            p.outcome = outcome;
        }
    }

    pub(crate) fn delivered(&mut self, user: &str, delivery: Delivery) {
        self.inbox.entry(user.to_owned()).or_default().push(delivery);
    }

    /// The user's application was restored from a copy taken when its
    /// inbox held `kept` items: what it received since is lost with the
    /// replaced state (and may rightly be delivered again).
    pub(crate) fn roll_back(&mut self, user: &str, kept: usize) {
        let inbox = self.inbox.entry(user.to_owned()).or_default();
        let lost: Vec<Delivery> = inbox.drain(kept.min(inbox.len())..).collect();
        self.lost.entry(user.to_owned()).or_default().extend(lost);
    }

    /// Deliveries `user` lost when its state was restored from an old copy.
    #[must_use]
    pub fn lost(&self, user: &str) -> &[Delivery] {
        self.lost.get(user).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn content_key(&mut self, what: String, bytes: &[u8]) {
        if !self.keys.iter().any(|(_, k)| k == bytes) {
            self.keys.push((what, bytes.to_vec()));
        }
    }

    /// Every MP session key a secure client held during the run (each
    /// [`SealKeys::to_bytes`](confab_proto::e2e::SealKeys::to_bytes): 16
    /// bytes of AES key, then 32 of MAC key), named. Empty in plain mode.
    #[must_use]
    pub fn content_keys(&self) -> &[(String, Vec<u8>)] {
        &self.keys
    }

    /// A post by its payload.
    #[must_use]
    pub fn post(&self, sealed: &[u8]) -> Option<&Post> {
        self.posts.get(sealed)
    }

    /// Every post, in the order made.
    pub fn posts(&self) -> impl Iterator<Item = (&Bytes, &Post)> {
        self.order.iter().filter_map(|s| self.posts.get(s).map(|p| (s, p)))
    }

    /// Whether the server acknowledged the post with this payload.
    #[must_use]
    pub fn is_acked(&self, sealed: &[u8]) -> bool {
        matches!(self.post(sealed).map(|p| &p.outcome), Some(Outcome::Acked { .. }))
    }

    /// Everything `user`'s application received, in order.
    #[must_use]
    pub fn inbox(&self, user: &str) -> &[Delivery] {
        self.inbox.get(user).map_or(&[], Vec::as_slice)
    }

    /// Every inbox, by user.
    pub fn inboxes(&self) -> impl Iterator<Item = (&String, &Vec<Delivery>)> {
        self.inbox.iter()
    }
}
