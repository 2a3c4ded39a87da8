//! [`LaneBook`]: private conversations, the lanes of queued items between
//! users, and the "message dropped" notices owed to senders.

use std::collections::{BTreeMap, BTreeSet};

use super::types::{Conversation, Lane, QueuedItem};

/// Conversations and lanes. Keeps its redundant data consistent:
/// conversations are stored under both users (`conversation(a, b) ==
/// conversation(b, a)`), every lane is indexed by recipient, and the queued
/// counts (per recipient and in total) equal the items in the lanes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaneBook {
    pub(super) conversations: BTreeMap<String, BTreeMap<String, Conversation>>,
    /// Lanes by sender, then recipient.
    pub(super) lanes: BTreeMap<String, BTreeMap<String, Lane>>,
    /// Senders with a lane to each recipient.
    pub(super) inbound: BTreeMap<String, BTreeSet<String>>,
    /// Queued items per recipient (absent: none).
    pub(super) queued: BTreeMap<String, usize>,
    /// Queued items on the server.
    pub(super) queued_total: usize,
    /// Pending "message dropped" notices per sender: (peer, seq).
    pub(super) notices: BTreeMap<String, Vec<(String, u64)>>,
}

impl LaneBook {
    /// The conversation between `a` and `b`, if any.
    #[must_use]
    pub fn conversation(&self, a: &str, b: &str) -> Option<&Conversation> {
        self.conversations.get(a)?.get(b)
    }

    /// The conversations of `user`, by peer.
    pub fn conversations_of(&self, user: &str) -> impl Iterator<Item = (&String, &Conversation)> {
        self.conversations.get(user).into_iter().flatten()
    }

    /// The lane `from -> to`, if any item was ever sent in it.
    #[must_use]
    pub fn lane(&self, from: &str, to: &str) -> Option<&Lane> {
        self.lanes.get(from)?.get(to)
    }

    /// Every lane: sender, recipient, lane; by sender, then recipient.
    pub fn lanes(&self) -> impl Iterator<Item = (&String, &String, &Lane)> {
        self.lanes.iter().flat_map(|(from, lanes)| lanes.iter().map(move |(to, lane)| (from, to, lane)))
    }

    /// The senders with a lane to `to`, in order.
    pub fn senders_to(&self, to: &str) -> impl Iterator<Item = &String> {
        self.inbound.get(to).into_iter().flatten()
    }

    /// The sequence number the next item in `from -> to` will get.
    #[must_use]
    pub fn next_seq(&self, from: &str, to: &str) -> u64 {
        self.lane(from, to).map_or(1, |l| l.next_seq)
    }

    /// Items queued for `to`.
    #[must_use]
    pub fn queued_for(&self, to: &str) -> usize {
        self.queued.get(to).copied().unwrap_or(0)
    }

    /// The recipients with items queued, and how many.
    pub fn queued(&self) -> impl Iterator<Item = (&String, usize)> {
        self.queued.iter().map(|(to, n)| (to, *n))
    }

    /// Items queued on the server.
    #[must_use]
    pub fn queued_total(&self) -> usize {
        self.queued_total
    }

    /// The "message dropped" notices owed to `user`: (peer, seq).
    #[must_use]
    pub fn notices(&self, user: &str) -> &[(String, u64)] {
        self.notices.get(user).map_or(&[], Vec::as_slice)
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

    pub(super) fn conversation_set(&mut self, a: &str, b: &str, state: Option<&Conversation>) {
        for (x, y) in [(a, b), (b, a)] {
            match state {
                Some(s) => {
                    self.conversations.entry(x.to_owned()).or_default().insert(y.to_owned(), s.clone());
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

    pub(super) fn enqueued(&mut self, from: &str, to: &str, item: &QueuedItem) {
        // One lookup on the hot path (an existing lane), and no key allocated.
        let push = |lane: &mut Lane| {
            lane.next_seq = lane.next_seq.max(item.seq + 1);
            lane.items.push_back(item.clone());
        };
        match self.lane_mut(from, to) {
            Some(lane) => push(lane),
            None => {
                let mut lane = Lane::default();
                push(&mut lane);
                self.lanes.entry(from.to_owned()).or_default().insert(to.to_owned(), lane);
                self.inbound.entry(to.to_owned()).or_default().insert(from.to_owned());
            }
        }
        match self.queued.get_mut(to) {
            Some(n) => *n += 1,
            None => {
                self.queued.insert(to.to_owned(), 1);
            }
        }
        self.queued_total += 1;
    }

    pub(super) fn acked(&mut self, from: &str, to: &str, upto: u64) {
        let mut n = 0;
        if let Some(lane) = self.lane_mut(from, to) {
            while lane.items.front().is_some_and(|i| i.seq <= upto) {
                lane.items.pop_front();
                n += 1;
            }
        }
        self.unqueue(to, n);
    }

    pub(super) fn dropped(&mut self, from: &str, to: &str, seq: u64) {
        let mut n = 0;
        if let Some(lane) = self.lane_mut(from, to)
            && let Some(pos) = lane.items.iter().position(|i| i.seq == seq)
        {
            lane.items.remove(pos);
            n = 1;
        }
        self.unqueue(to, n);
    }

    pub(super) fn notice_added(&mut self, user: &str, peer: &str, seq: u64) {
        self.notices.entry(user.to_owned()).or_default().push((peer.to_owned(), seq));
    }

    pub(super) fn notices_cleared(&mut self, user: &str) {
        self.notices.remove(user);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::server::state::ItemKind;

    fn item(seq: u64) -> QueuedItem {
        QueuedItem { seq, sent_ms: 0, kind: ItemKind::Message { sealed: Bytes::from_static(b"m") } }
    }

    /// The counts equal the items in the lanes.
    fn consistent(book: &LaneBook) -> bool {
        let mut per: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, to, lane) in book.lanes() {
            *per.entry(to.as_str()).or_default() += lane.items.len();
        }
        per.retain(|_, n| *n > 0);
        let total: usize = per.values().sum();
        total == book.queued_total() && per.iter().all(|(to, n)| book.queued_for(to) == *n) && {
            book.queued.len() == per.len()
        }
    }

    #[test]
    fn queued_counts_follow_enqueue_ack_and_drop() {
        let mut book = LaneBook::default();
        for seq in 1..=3 {
            book.enqueued("al", "bo", &item(seq));
        }
        book.enqueued("cy", "bo", &item(1));
        assert_eq!((book.queued_for("bo"), book.queued_total()), (4, 4));
        assert_eq!(book.senders_to("bo").collect::<Vec<_>>(), ["al", "cy"]);
        book.acked("al", "bo", 2);
        book.dropped("cy", "bo", 1);
        book.dropped("cy", "bo", 1);
        assert!(consistent(&book));
        assert_eq!(book.queued_for("bo"), 1);
        book.acked("al", "bo", 3);
        assert!(consistent(&book));
        assert_eq!(book.queued_total(), 0);
        assert_eq!(book.next_seq("al", "bo"), 4, "sequence numbers survive the acknowledgement");
    }

    #[test]
    fn a_conversation_is_the_same_from_both_ends() {
        let mut book = LaneBook::default();
        book.conversation_set("al", "bo", Some(&Conversation::Open));
        assert_eq!(book.conversation("bo", "al"), Some(&Conversation::Open));
        book.conversation_set("bo", "al", None);
        assert!(book.conversation("al", "bo").is_none() && book.conversations.is_empty());
    }

    #[test]
    fn notices_accumulate_until_cleared() {
        let mut book = LaneBook::default();
        book.notice_added("al", "bo", 1);
        book.notice_added("al", "cy", 2);
        assert_eq!(book.notices("al").len(), 2);
        book.notices_cleared("al");
        assert!(book.notices("al").is_empty());
    }
}
