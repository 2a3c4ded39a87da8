//! [`RoomBook`]: rooms, their members and their bounded history.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::types::Room;
use crate::wire::HistoryEntry;

/// Rooms by name. Keeps every room's history within `history_cap` entries
/// and its next sequence number past every entry it ever held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomBook {
    pub(super) rooms: BTreeMap<String, Room>,
    /// Room history length (from the config).
    pub(super) history_cap: usize,
}

impl RoomBook {
    /// The room `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Room> {
        self.rooms.get(name)
    }

    /// Every room, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Room)> {
        self.rooms.iter()
    }

    /// How many rooms exist.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether there is none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// How many rooms `user` owns.
    #[must_use]
    pub fn owned_by(&self, user: &str) -> usize {
        self.rooms.values().filter(|r| r.owner == user).count()
    }

    /// The most messages a room keeps.
    #[must_use]
    pub fn history_cap(&self) -> usize {
        self.history_cap
    }

    pub(super) fn created(&mut self, room: &str, verifier: &Bytes, owner: &str) {
        let members = BTreeSet::from([owner.to_owned()]);
        let new = Room {
            verifier: verifier.clone(),
            descriptor: Bytes::new(),
            owner: owner.to_owned(),
            members,
            history: VecDeque::new(),
            next_seq: 1,
        };
        self.rooms.insert(room.to_owned(), new);
    }

    pub(super) fn joined(&mut self, room: &str, user: &str) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.members.insert(user.to_owned());
        }
    }

    pub(super) fn left(&mut self, room: &str, user: &str) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.members.remove(user);
        }
    }

    pub(super) fn described(&mut self, room: &str, descriptor: &Bytes) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.descriptor = descriptor.clone();
        }
    }

    pub(super) fn deleted(&mut self, room: &str) {
        self.rooms.remove(room);
    }

    pub(super) fn message(&mut self, room: &str, entry: &HistoryEntry) {
        let cap = self.history_cap;
        if let Some(r) = self.rooms.get_mut(room) {
            r.next_seq = r.next_seq.max(entry.seq + 1);
            r.history.push_back(entry.clone());
            while r.history.len() > cap {
                r.history.pop_front();
            }
        }
    }

    pub(super) fn trimmed(&mut self, room: &str, upto: u64) {
        if let Some(r) = self.rooms.get_mut(room) {
            while r.history.front().is_some_and(|e| e.seq <= upto) {
                r.history.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> HistoryEntry {
        HistoryEntry { from: "al".into(), seq, sent_ms: seq, sealed: Bytes::from_static(b"x") }
    }

    #[test]
    fn history_stays_within_its_cap_and_sequence_numbers_only_grow() {
        let mut book = RoomBook { history_cap: 2, ..RoomBook::default() };
        book.created("rm", &Bytes::from_static(b"v"), "al");
        for seq in 1..=3 {
            book.message("rm", &entry(seq));
        }
        let room = book.get("rm").unwrap();
        assert_eq!(room.history.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(room.next_seq, 4);
        book.trimmed("rm", 2);
        assert_eq!(book.get("rm").unwrap().history.len(), 1);
        assert_eq!(book.get("rm").unwrap().next_seq, 4, "trimming never reuses a number");
    }

    #[test]
    fn owners_are_members_and_changes_to_a_missing_room_do_nothing() {
        let mut book = RoomBook { history_cap: 2, ..RoomBook::default() };
        book.created("rm", &Bytes::from_static(b"v"), "al");
        assert!(book.get("rm").unwrap().members.contains("al"));
        assert_eq!(book.owned_by("al"), 1);
        book.joined("nope", "bo");
        book.message("nope", &entry(1));
        book.deleted("rm");
        assert!(book.is_empty());
    }
}
