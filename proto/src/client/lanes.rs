//! Exactly-once delivery on the receiving side.
//!
//! Everything a peer sends this user (`mp_request`, `mp_accepted`,
//! `user_message`, `mp_closed`) travels in one lane numbered by a sequence
//! that only grows. The server replays every unacknowledged item at each
//! login, so the client drops sequence numbers it has already delivered and
//! acknowledges the highest one per peer, duplicates included (an
//! acknowledgement lost with a connection is sent again when the replay
//! shows it did not land), after a short delay or a count of items,
//! whichever comes first
//! ([`ClientConfig::ack_delay`](super::ClientConfig::ack_delay)). Room
//! messages are not acknowledged; they are only deduplicated against the
//! last sequence number seen per room.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy)]
struct PeerLane {
    /// Highest sequence number delivered.
    last: u64,
    /// Highest sequence number whose acknowledgement the server confirmed.
    acked: u64,
    /// Last activity, for eviction.
    tick: u64,
}

#[derive(Debug, Clone, Copy)]
struct RoomSeen {
    last: u64,
    tick: u64,
}

/// Per-peer and per-room delivery state of one user.
#[derive(Debug)]
pub(crate) struct Lanes {
    /// The user this state belongs to: another user's login starts afresh.
    owner: Option<String>,
    peers: BTreeMap<String, PeerLane>,
    rooms: BTreeMap<String, RoomSeen>,
    /// Peers to acknowledge when the acknowledgements go out.
    due: BTreeSet<String>,
    /// Lane items (new or replayed) received since the acknowledgements last went out.
    due_items: usize,
    tick: u64,
    max_peers: usize,
    max_rooms: usize,
    /// A delivered sequence number changed since the last checkpoint.
    changed: bool,
}

impl Lanes {
    pub(crate) fn new(max_peers: usize, max_rooms: usize) -> Lanes {
        Lanes {
            owner: None,
            peers: BTreeMap::new(),
            rooms: BTreeMap::new(),
            due: BTreeSet::new(),
            due_items: 0,
            tick: 0,
            max_peers: max_peers.max(1),
            max_rooms: max_rooms.max(1),
            changed: false,
        }
    }

    /// Whether a delivered sequence number (what [`Lanes::seen`] and
    /// [`Lanes::rooms_seen`] export) changed since the last checkpoint.
    pub(crate) fn changed(&self) -> bool {
        self.changed
    }

    /// The store holds the current sequence numbers.
    pub(crate) fn checkpointed(&mut self) {
        self.changed = false;
    }

    /// The session is `username`'s: if the state belonged to someone else, forget it.
    pub(crate) fn set_owner(&mut self, username: &str) {
        if self.owner.as_deref() != Some(username) {
            self.changed |= !self.peers.is_empty() || !self.rooms.is_empty();
            self.peers.clear();
            self.rooms.clear();
            self.due.clear();
            self.due_items = 0;
            self.owner = Some(username.to_owned());
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// A lane item `seq` from `peer` arrived. True if it is new and must be
    /// delivered, false for a replay. Either way `peer` is due an acknowledgement.
    pub(crate) fn receive(&mut self, peer: &str, seq: u64) -> bool {
        let tick = self.next_tick();
        if !self.due.contains(peer) {
            self.due.insert(peer.to_owned());
        }
        self.due_items += 1;
        if let Some(lane) = self.peers.get_mut(peer) {
            lane.tick = tick;
            if seq <= lane.last {
                return false;
            }
            lane.last = seq;
            self.changed = true;
            return true;
        }
        // Down to the bound again: the lanes may hold more while acknowledgements are due.
        while self.peers.len() >= self.max_peers && self.evict_peer() {}
        self.changed = true;
        let lane = PeerLane { last: seq, acked: 0, tick };
        self.peers.insert(peer.to_owned(), lane);
        true
    }

    /// Forgets the least recently active peer, preferring one whose
    /// acknowledgement is confirmed and none that is due one now. False if
    /// every peer is due one.
    fn evict_peer(&mut self) -> bool {
        let pick = |confirmed_only: bool| {
            self.peers
                .iter()
                .filter(|(p, l)| !self.due.contains(*p) && (!confirmed_only || l.acked >= l.last))
                .min_by_key(|(_, l)| l.tick)
                .map(|(p, _)| p.clone())
        };
        let Some(peer) = pick(true).or_else(|| pick(false)) else { return false };
        self.peers.remove(&peer);
        self.changed = true;
        true
    }

    /// Lane items received since the acknowledgements last went out (0: none is due).
    pub(crate) fn due_items(&self) -> usize {
        self.due_items
    }

    /// The acknowledgements due: each peer with its highest delivered sequence number.
    pub(crate) fn take_due(&mut self) -> Vec<(String, u64)> {
        self.due_items = 0;
        std::mem::take(&mut self.due).into_iter().filter_map(|p| self.peers.get(&p).map(|l| (p, l.last))).collect()
    }

    /// The server accepted the acknowledgement of `peer`'s items up to `seq`.
    pub(crate) fn confirm(&mut self, peer: &str, seq: u64) {
        if let Some(lane) = self.peers.get_mut(peer) {
            lane.acked = lane.acked.max(seq);
        }
    }

    /// The highest sequence number delivered from `peer` (0: none).
    pub(crate) fn last_seen(&self, peer: &str) -> u64 {
        self.peers.get(peer).map_or(0, |l| l.last)
    }

    /// Sets a peer's last delivered sequence number (the application's
    /// [`Client::set_last_seen`](super::Client::set_last_seen)), within the bound.
    pub(crate) fn set_last_seen(&mut self, peer: &str, seq: u64) {
        if !self.peers.contains_key(peer) && self.peers.len() >= self.max_peers {
            self.evict_peer();
        }
        self.restore_seen(peer, seq);
    }

    /// Restores a peer's last delivered sequence number from a stored
    /// profile, never forgetting another for it: a profile stored while
    /// acknowledgements were due may hold more peers than the bound, and
    /// forgetting one whose items the server still holds would deliver
    /// them again. Later deliveries bring the lanes back to the bound.
    pub(crate) fn restore_seen(&mut self, peer: &str, seq: u64) {
        let tick = self.next_tick();
        let lane = self.peers.entry(peer.to_owned()).or_insert(PeerLane { last: 0, acked: 0, tick });
        lane.last = lane.last.max(seq);
        lane.tick = tick;
        self.changed = true;
    }

    /// Every peer with its last delivered sequence number, for a stored profile.
    pub(crate) fn seen(&self) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = self.peers.iter().map(|(p, l)| (p.clone(), l.last)).collect();
        all.sort();
        all
    }

    /// A room message `seq` arrived in `room`: true if it is new.
    pub(crate) fn room_message(&mut self, room: &str, seq: u64) -> bool {
        let tick = self.next_tick();
        if let Some(r) = self.rooms.get_mut(room) {
            r.tick = tick;
            if seq <= r.last {
                return false;
            }
            r.last = seq;
            self.changed = true;
            return true;
        }
        self.set_room(room, seq);
        true
    }

    /// The room's history as of a `join_room` answer ends at `last` (0: empty).
    /// Authoritative: a room deleted and created again starts over.
    pub(crate) fn set_room(&mut self, room: &str, last: u64) {
        let tick = self.next_tick();
        self.changed = true;
        if !self.rooms.contains_key(room) && self.rooms.len() >= self.max_rooms {
            let oldest = self.rooms.iter().min_by_key(|(_, r)| r.tick).map(|(n, _)| n.clone());
            if let Some(name) = oldest {
                self.rooms.remove(&name);
            }
        }
        self.rooms.insert(room.to_owned(), RoomSeen { last, tick });
    }

    /// This user deleted `room`: a room created later under the same name starts over.
    pub(crate) fn forget_room(&mut self, room: &str) {
        self.changed |= self.rooms.remove(room).is_some();
    }

    /// Every room with its last seen sequence number, for a stored profile.
    pub(crate) fn rooms_seen(&self) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = self.rooms.iter().map(|(r, s)| (r.clone(), s.last)).collect();
        all.sort();
        all
    }

    /// The last room sequence number seen in `room` (0: none).
    pub(crate) fn room_last(&self, room: &str) -> u64 {
        self.rooms.get(room).map_or(0, |r| r.last)
    }
}
