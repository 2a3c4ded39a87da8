//! Rooms: create, join (verifier checked in constant time), send (fan-out to
//! online members, kept in a bounded history), leave, history, delete.

use subtle::ConstantTimeEq;

use super::state::Change;
use super::{Flow, Server, valid_name};
use crate::{
    CreateRoom, Event, History, HistoryEntry, JoinRoom, Message, Now, ResponseBody, RoomDescribed, RoomJoined,
    RoomMessage, SendRoom, Sent, Status, code,
};

/// Smallest accepted join verifier.
const MIN_VERIFIER: usize = 16;
/// Largest accepted room descriptor.
pub const MAX_DESCRIPTOR: usize = 64;

impl Server {
    pub(super) fn create_room(&mut self, user: &str, b: CreateRoom) -> Flow {
        if !valid_name(&b.room) {
            return Err((code::BAD_REQUEST, "room name must be 3-32 characters of a-z 0-9 _ . -".into()));
        }
        if !(MIN_VERIFIER..=self.config.max_verifier).contains(&b.verifier.len()) {
            let reason = format!("room verifier must be {MIN_VERIFIER}-{} bytes", self.config.max_verifier);
            return Err((code::BAD_REQUEST, reason));
        }
        if !(1..=MAX_DESCRIPTOR).contains(&b.descriptor.len()) {
            return Err((code::BAD_REQUEST, format!("room descriptor must be 1-{MAX_DESCRIPTOR} bytes")));
        }
        if self.state.rooms.contains_key(&b.room) {
            return Err((code::CONFLICT, format!("room {} already exists", b.room)));
        }
        let cap = self.config.max_rooms_per_user;
        if self.state.rooms.values().filter(|r| r.owner == user).count() >= cap {
            return Err((code::QUEUE_FULL, format!("you own {cap} rooms, the most allowed: delete one first")));
        }
        self.commit(Change::RoomCreated { room: b.room.clone(), verifier: b.verifier, owner: user.to_owned() });
        self.commit(Change::RoomDescribed { room: b.room, descriptor: b.descriptor });
        Ok((Status::Valid, code::CREATED, ResponseBody::Empty))
    }

    /// The public descriptor a joiner needs to derive the room's keys. Any
    /// authenticated user may ask: it holds no secret, and `join_room`
    /// already tells whether a room exists.
    pub(super) fn room_info(&mut self, name: &str) -> Flow {
        let room = self.state.rooms.get(name).ok_or_else(|| no_room(name))?;
        if room.descriptor.is_empty() {
            let reason = format!("room {name} predates room descriptors: its owner must delete and re-create it");
            return Err((code::NOT_FOUND, reason));
        }
        let body = RoomDescribed { descriptor: room.descriptor.clone() };
        Ok((Status::Valid, code::OK, ResponseBody::RoomDescriptor(body)))
    }

    pub(super) fn join_room(&mut self, user: &str, b: JoinRoom) -> Flow {
        let room = self.state.rooms.get(&b.room).ok_or_else(|| no_room(&b.room))?;
        // Different lengths compare unequal; equal lengths compare in constant time.
        if !bool::from(room.verifier.as_ref().ct_eq(b.verifier.as_ref())) {
            return Err((code::FORBIDDEN, "wrong room password".into()));
        }
        if !room.members.contains(user) {
            if room.members.len() >= self.config.max_room_members {
                return Err((code::FORBIDDEN, format!("room {} is full", b.room)));
            }
            self.commit(Change::RoomJoined { room: b.room.clone(), user: user.to_owned() });
        }
        let room = &self.state.rooms[&b.room];
        let body = RoomJoined {
            members: room.members.iter().cloned().collect(),
            history: room.history.iter().cloned().collect(),
        };
        Ok((Status::Valid, code::OK, ResponseBody::RoomJoined(body)))
    }

    pub(super) fn send_room(&mut self, now: Now, user: &str, b: SendRoom) -> Flow {
        let room = self.state.rooms.get(&b.room).ok_or_else(|| no_room(&b.room))?;
        if !room.members.contains(user) {
            return Err((code::FORBIDDEN, format!("not a member of {}: join it first", b.room)));
        }
        if b.sealed.is_empty() {
            return Err((code::BAD_REQUEST, "empty message".into()));
        }
        let seq = room.next_seq;
        let entry = HistoryEntry { from: user.to_owned(), seq, sent_ms: now.unix_ms, sealed: b.sealed };
        // The history stays within its byte budget: older entries make room, or the message is too large.
        let budget = self.config.room_history_budget();
        let cost = entry_bytes(&entry);
        if cost > budget {
            let reason = format!("message too large for the room history: {cost} bytes, at most {budget}");
            return Err((code::TOO_LARGE, reason));
        }
        let mut kept: usize = room.history.iter().map(entry_bytes).sum::<usize>() + cost;
        let mut trim = None;
        for old in &room.history {
            if kept <= budget {
                break;
            }
            kept -= entry_bytes(old);
            trim = Some(old.seq);
        }
        let targets: Vec<_> =
            room.members.iter().filter(|m| m.as_str() != user).filter_map(|m| self.online.get(m).copied()).collect();
        if !targets.is_empty() {
            // Every member gets the same frame: encode it once.
            let event = RoomMessage {
                room: b.room.clone(),
                from: entry.from.clone(),
                seq,
                sent_ms: entry.sent_ms,
                sealed: entry.sealed.clone(),
            };
            let frame = Message::Event(Event { request_id: 0, timestamp_ms: now.unix_ms, body: event.into() });
            let bytes = frame.to_bytes(&[]);
            for target in targets {
                self.send_encoded(target, &bytes);
            }
        }
        if let Some(upto) = trim {
            self.commit(Change::RoomHistoryTrimmed { room: b.room.clone(), upto });
        }
        self.commit(Change::RoomMessage { room: b.room, entry });
        Ok((Status::Valid, code::OK, ResponseBody::Sent(Sent { seq })))
    }

    pub(super) fn leave_room(&mut self, user: &str, name: &str) -> Flow {
        let room = self.state.rooms.get(name).ok_or_else(|| no_room(name))?;
        if !room.members.contains(user) {
            return Err((code::NOT_FOUND, format!("not a member of {name}")));
        }
        self.commit(Change::RoomLeft { room: name.to_owned(), user: user.to_owned() });
        Ok((Status::Valid, code::OK, ResponseBody::Empty))
    }

    pub(super) fn room_history(&mut self, user: &str, name: &str) -> Flow {
        let room = self.state.rooms.get(name).ok_or_else(|| no_room(name))?;
        if !room.members.contains(user) {
            return Err((code::FORBIDDEN, format!("not a member of {name}: join it first")));
        }
        let body = History { messages: room.history.iter().cloned().collect() };
        Ok((Status::Valid, code::OK, ResponseBody::History(body)))
    }

    pub(super) fn delete_room(&mut self, user: &str, name: &str) -> Flow {
        let room = self.state.rooms.get(name).ok_or_else(|| no_room(name))?;
        if room.owner != user {
            return Err((code::FORBIDDEN, format!("only the owner of {name} may delete it")));
        }
        self.commit(Change::RoomDeleted { room: name.to_owned() });
        Ok((Status::Valid, code::OK, ResponseBody::Empty))
    }
}

/// The encoded size of a history entry: sender (u16 length), sequence number, time, sealed blob (u32 length).
fn entry_bytes(e: &HistoryEntry) -> usize {
    2 + e.from.len() + 8 + 8 + 4 + e.sealed.len()
}

fn no_room(name: &str) -> (u16, String) {
    (code::NOT_FOUND, format!("no room {name}"))
}
