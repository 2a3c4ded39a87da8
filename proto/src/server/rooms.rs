//! Rooms: create, join (verifier checked in constant time), send (fan-out to
//! online members, kept in a bounded history), leave, history, delete.
//!
//! The rooms' state is the [`RoomBook`](super::state::RoomBook) of the
//! journal's state; these requests read it and commit changes to it. Only
//! `send` reaches further: to the online members, through the outbox.

use std::collections::BTreeMap;

use subtle::ConstantTimeEq;

use super::outbox::{Journal, Outbox};
use super::presence::Presence;
use super::refusal::{Flow, Refusal, Reply};
use super::state::{Change, Room};
use super::{NAME_RULE, ServerConfig, SessionId, valid_name};
use crate::Now;
use crate::wire::{
    CreateRoom, Event, History, HistoryEntry, JoinRoom, Message, ResponseBody, RoomDescribed, RoomJoined, RoomMessage,
    SendRoom, Sent,
};

/// The sessions the online members of each room are on, as last computed, in member order:
/// valid while neither who is online where nor any room's membership has changed, so a busy
/// room's messages look no member up.
#[derive(Debug, Default)]
pub(super) struct Fanout {
    /// The presence and rooms generations the cached lists were computed at.
    generations: (u64, u64),
    rooms: BTreeMap<String, Vec<SessionId>>,
}

impl Fanout {
    /// The sessions of `room`'s online members (its sender's included).
    fn targets(&mut self, presence: &Presence, rooms_generation: u64, name: &str, room: &Room) -> &[SessionId] {
        let generations = (presence.generation(), rooms_generation);
        if generations != self.generations {
            self.rooms.clear();
            self.generations = generations;
        }
        if !self.rooms.contains_key(name) {
            let online = room.members.iter().filter_map(|m| presence.online(m)).collect();
            self.rooms.insert(name.to_owned(), online);
        }
        self.rooms.get(name).map_or(&[], Vec::as_slice)
    }
}

/// Smallest accepted join verifier.
const MIN_VERIFIER: usize = 16;
/// Largest accepted room descriptor.
pub const MAX_DESCRIPTOR: usize = 64;

pub(super) fn create(journal: &mut Journal, config: &ServerConfig, user: &str, b: CreateRoom) -> Flow {
    if !valid_name(&b.room) {
        return Err(Refusal::BadRequest(format!("room name must be {NAME_RULE}")));
    }
    if !(MIN_VERIFIER..=config.max_verifier).contains(&b.verifier.len()) {
        let reason = format!("room verifier must be {MIN_VERIFIER}-{} bytes", config.max_verifier);
        return Err(Refusal::BadRequest(reason));
    }
    if !(1..=MAX_DESCRIPTOR).contains(&b.descriptor.len()) {
        return Err(Refusal::BadRequest(format!("room descriptor must be 1-{MAX_DESCRIPTOR} bytes")));
    }
    let rooms = journal.state().rooms();
    if rooms.get(&b.room).is_some() {
        return Err(Refusal::Conflict(format!("room {} already exists", b.room)));
    }
    let cap = config.max_rooms_per_user;
    if rooms.owned_by(user) >= cap {
        return Err(Refusal::QueueFull(format!("you own {cap} rooms, the most allowed: delete one first")));
    }
    journal.commit(Change::RoomCreated { room: b.room.clone(), verifier: b.verifier, owner: user.to_owned() });
    journal.commit(Change::RoomDescribed { room: b.room, descriptor: b.descriptor });
    Ok(Reply::created())
}

/// The public descriptor a joiner needs to derive the room's keys. Any
/// authenticated user may ask: it holds no secret, and `join_room`
/// already tells whether a room exists.
pub(super) fn info(journal: &Journal, name: &str) -> Flow {
    let room = journal.state().room(name).ok_or_else(|| no_room(name))?;
    if room.descriptor.is_empty() {
        let reason = format!("room {name} predates room descriptors: its owner must delete and re-create it");
        return Err(Refusal::NotFound(reason));
    }
    let body = RoomDescribed { descriptor: room.descriptor.clone() };
    Ok(Reply::ok(ResponseBody::RoomDescriptor(body)))
}

pub(super) fn join(journal: &mut Journal, config: &ServerConfig, user: &str, b: JoinRoom) -> Flow {
    let room = journal.state().room(&b.room).ok_or_else(|| no_room(&b.room))?;
    // Different lengths compare unequal; equal lengths compare in constant time.
    if !bool::from(room.verifier.as_ref().ct_eq(b.verifier.as_ref())) {
        return Err(Refusal::Forbidden("wrong room password".into()));
    }
    if !room.members.contains(user) {
        if room.members.len() >= config.max_room_members {
            return Err(Refusal::Forbidden(format!("room {} is full", b.room)));
        }
        journal.commit(Change::RoomJoined { room: b.room.clone(), user: user.to_owned() });
    }
    let room = journal.state().room(&b.room).ok_or_else(|| no_room(&b.room))?;
    let body =
        RoomJoined { members: room.members.iter().cloned().collect(), history: room.history.iter().cloned().collect() };
    Ok(Reply::ok(ResponseBody::RoomJoined(body)))
}

/// Appends a sealed message to the room's history and sends it to the online members but the sender.
pub(super) fn send(
    now: Now,
    journal: &mut Journal,
    (presence, fanout): (&Presence, &mut Fanout),
    outbox: &mut Outbox,
    config: &ServerConfig,
    user: &str,
    b: SendRoom,
) -> Flow {
    let room = journal.state().room(&b.room).ok_or_else(|| no_room(&b.room))?;
    if !room.members.contains(user) {
        return Err(Refusal::Forbidden(format!("not a member of {}: join it first", b.room)));
    }
    if b.sealed.is_empty() {
        return Err(Refusal::BadRequest("empty message".into()));
    }
    check_size(config, user, &b.sealed)?;
    let seq = room.next_seq;
    let entry = HistoryEntry { from: user.to_owned(), seq, sent_ms: now.unix_ms, sealed: b.sealed };
    // The history stays within its byte budget: older entries make room.
    let budget = config.room_history_budget();
    let cost = entry_bytes(&entry);
    let mut kept: usize = room.history.iter().map(entry_bytes).sum::<usize>() + cost;
    let mut trim = None;
    for old in &room.history {
        if kept <= budget {
            break;
        }
        kept -= entry_bytes(old);
        trim = Some(old.seq);
    }
    // The sender's own session is the one a member named like it is online on: leaving it out
    // spares comparing every member's name with the sender's.
    let sender = presence.online(user);
    let online = fanout.targets(presence, journal.rooms_generation(), &b.room, room);
    let mut targets = online.iter().copied().filter(|s| Some(*s) != sender).peekable();
    if targets.peek().is_some() {
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
            outbox.send_shared(target, &bytes);
        }
    }
    if let Some(upto) = trim {
        journal.commit(Change::RoomHistoryTrimmed { room: b.room.clone(), upto });
    }
    journal.commit(Change::RoomMessage { room: b.room, entry });
    Ok(Reply::ok(ResponseBody::Sent(Sent { seq })))
}

pub(super) fn leave(journal: &mut Journal, user: &str, name: &str) -> Flow {
    let room = journal.state().room(name).ok_or_else(|| no_room(name))?;
    if !room.members.contains(user) {
        return Err(Refusal::NotFound(format!("not a member of {name}")));
    }
    journal.commit(Change::RoomLeft { room: name.to_owned(), user: user.to_owned() });
    Ok(Reply::ok(ResponseBody::Empty))
}

pub(super) fn history(journal: &Journal, user: &str, name: &str) -> Flow {
    let room = journal.state().room(name).ok_or_else(|| no_room(name))?;
    if !room.members.contains(user) {
        return Err(Refusal::Forbidden(format!("not a member of {name}: join it first")));
    }
    let body = History { messages: room.history.iter().cloned().collect() };
    Ok(Reply::ok(ResponseBody::History(body)))
}

pub(super) fn delete(journal: &mut Journal, user: &str, name: &str) -> Flow {
    let room = journal.state().room(name).ok_or_else(|| no_room(name))?;
    if room.owner != user {
        return Err(Refusal::Forbidden(format!("only the owner of {name} may delete it")));
    }
    journal.commit(Change::RoomDeleted { room: name.to_owned() });
    Ok(Reply::ok(ResponseBody::Empty))
}

/// Refuses a message of `user` too large for a room's history (413).
pub(super) fn check_size(config: &ServerConfig, user: &str, sealed: &[u8]) -> Result<(), Refusal> {
    let (budget, cost) = (config.room_history_budget(), entry_cost(user.len(), sealed.len()));
    if cost > budget {
        let reason = format!("message too large for the room history: {cost} bytes, at most {budget}");
        return Err(Refusal::TooLarge(reason));
    }
    Ok(())
}

/// The encoded size of a history entry: sender (u16 length), sequence number, time, sealed blob (u32 length).
fn entry_bytes(e: &HistoryEntry) -> usize {
    entry_cost(e.from.len(), e.sealed.len())
}

/// [`entry_bytes`] of an entry whose sender's name and sealed blob have these lengths.
fn entry_cost(from: usize, sealed: usize) -> usize {
    2 + from + 8 + 8 + 4 + sealed
}

fn no_room(name: &str) -> Refusal {
    Refusal::NotFound(format!("no room {name}"))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;

    use super::*;
    use crate::server::SessionId;
    use crate::server::keyed::Keyed;
    use crate::wire::{Limits, status};

    const VERIFIER: &[u8] = b"0123456789abcdef";

    fn journal() -> Journal {
        Journal::new(crate::server::State::new(2, 8))
    }

    fn create_req(room: &str) -> CreateRoom {
        CreateRoom { room: room.into(), verifier: Bytes::from_static(VERIFIER), descriptor: Bytes::from_static(b"d") }
    }

    fn join_req(room: &str, verifier: &'static [u8]) -> JoinRoom {
        JoinRoom { room: room.into(), verifier: Bytes::from_static(verifier) }
    }

    fn code_of(flow: Flow) -> u16 {
        flow.map_or_else(|r| r.code(), |r| r.code)
    }

    #[test]
    fn rooms_are_created_once_joined_with_the_verifier_and_deleted_by_their_owner() {
        let config = ServerConfig { max_rooms_per_user: 1, max_room_members: 2, ..ServerConfig::default() };
        let mut j = journal();
        assert_eq!(code_of(create(&mut j, &config, "al", create_req("room1"))), status::CREATED);
        assert_eq!(code_of(create(&mut j, &config, "bo", create_req("room1"))), status::CONFLICT);
        assert_eq!(code_of(create(&mut j, &config, "al", create_req("room2"))), status::QUEUE_FULL);
        assert_eq!(code_of(create(&mut j, &config, "bo", create_req("R!"))), status::BAD_REQUEST);
        assert_eq!(code_of(join(&mut j, &config, "bo", join_req("room1", b"fedcba9876543210"))), status::FORBIDDEN);
        assert_eq!(code_of(join(&mut j, &config, "bo", join_req("room1", VERIFIER))), status::OK);
        let full = join(&mut j, &config, "cy", join_req("room1", VERIFIER)).unwrap_err();
        assert_eq!(full, Refusal::Forbidden("room room1 is full".into()));
        assert_eq!(code_of(history(&j, "cy", "room1")), status::FORBIDDEN);
        assert_eq!(code_of(delete(&mut j, "bo", "room1")), status::FORBIDDEN);
        assert_eq!(code_of(leave(&mut j, "bo", "room1")), status::OK);
        assert_eq!(code_of(delete(&mut j, "al", "room1")), status::OK);
        assert_eq!(info(&j, "room1").unwrap_err(), Refusal::NotFound("no room room1".into()));
    }

    #[test]
    fn a_message_reaches_the_online_members_but_the_sender_and_the_history_stays_in_budget() {
        let config = ServerConfig::default();
        let mut j = journal();
        let now = Now::new(Instant::now(), 1);
        let mut presence = Presence::new(Keyed::derive(&[0; 32], "test"));
        let mut outbox = Outbox::default();
        let mut fanout = Fanout::default();
        let (al, bo) = (
            online(&mut presence, &mut outbox, &config, now, "al"),
            online(&mut presence, &mut outbox, &config, now, "bo"),
        );
        assert_eq!(code_of(create(&mut j, &config, "al", create_req("room1"))), status::CREATED);
        assert_eq!(code_of(join(&mut j, &config, "bo", join_req("room1", VERIFIER))), status::OK);
        let msg = |sealed: &'static [u8]| SendRoom { room: "room1".into(), sealed: Bytes::from_static(sealed) };
        let sent = send(now, &mut j, (&presence, &mut fanout), &mut outbox, &config, "al", msg(b"hi")).unwrap();
        assert_eq!(sent.body, ResponseBody::Sent(Sent { seq: 1 }));
        let reached: Vec<SessionId> = outbox.take_transmits().into_iter().map(|t| t.0).collect();
        assert_eq!(reached, [bo], "nothing for {al}");
        assert_eq!(
            code_of(send(now, &mut j, (&presence, &mut fanout), &mut outbox, &config, "al", msg(b""))),
            status::BAD_REQUEST
        );
        let small = ServerConfig { room_history_bytes: 60, ..ServerConfig::default() };
        let big = SendRoom { room: "room1".into(), sealed: Bytes::from(vec![0; 60]) };
        assert_eq!(
            code_of(send(now, &mut j, (&presence, &mut fanout), &mut outbox, &small, "al", big)),
            status::TOO_LARGE
        );
        let fits = send(now, &mut j, (&presence, &mut fanout), &mut outbox, &small, "al", msg(b"0123456789abcdef"));
        assert_eq!(code_of(fits), status::OK);
        let kept: Vec<u64> = j.state().room("room1").unwrap().history.iter().map(|e| e.seq).collect();
        assert_eq!(kept, [2], "the older message made room");
    }

    /// Opens a session for `user`, logged in and able to receive frames.
    fn online(presence: &mut Presence, outbox: &mut Outbox, config: &ServerConfig, now: Now, user: &str) -> SessionId {
        let s = presence
            .open(now.instant, Limits::DEFAULT, crate::server::SourceKey::Local, config.keepalive_interval, 9)
            .unwrap();
        presence.bind(s, user, 1);
        outbox.open(s);
        s
    }

    #[test]
    fn the_cached_fan_out_follows_joins_and_who_is_online() {
        let config = ServerConfig::default();
        let mut j = journal();
        let now = Now::new(Instant::now(), 1);
        let mut presence = Presence::new(Keyed::derive(&[0; 32], "test"));
        let mut outbox = Outbox::default();
        let mut fanout = Fanout::default();
        let mut sessions = Vec::new();
        for user in ["al", "bo", "cy"] {
            sessions.push(online(&mut presence, &mut outbox, &config, now, user));
        }
        let [_, bo, cy] = sessions[..] else { unreachable!("three sessions") };
        assert_eq!(code_of(create(&mut j, &config, "al", create_req("room1"))), status::CREATED);
        assert_eq!(code_of(join(&mut j, &config, "bo", join_req("room1", VERIFIER))), status::OK);
        let mut reached = |j: &mut Journal, presence: &Presence, fanout: &mut Fanout| {
            let msg = SendRoom { room: "room1".into(), sealed: Bytes::from_static(b"hi") };
            assert_eq!(code_of(send(now, j, (presence, fanout), &mut outbox, &config, "al", msg)), status::OK);
            outbox.take_transmits().into_iter().map(|t| t.0).collect::<Vec<_>>()
        };
        assert_eq!(reached(&mut j, &presence, &mut fanout), [bo]);
        assert_eq!(code_of(join(&mut j, &config, "cy", join_req("room1", VERIFIER))), status::OK);
        assert_eq!(reached(&mut j, &presence, &mut fanout), [bo, cy], "a new member is reached");
        presence.remove(bo);
        assert_eq!(reached(&mut j, &presence, &mut fanout), [cy], "a member gone offline is not");
        assert_eq!(code_of(leave(&mut j, "cy", "room1")), status::OK);
        assert!(reached(&mut j, &presence, &mut fanout).is_empty(), "nor one who left");
    }
}
