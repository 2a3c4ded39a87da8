//! How a simulated user behaves: registers and logs in (again, if its
//! session is lost), creates or joins rooms, asks peers for private
//! conversations and accepts every request it gets, and sends messages
//! whose sealed payloads are unique and recognisable. Its random choices
//! come from the simulation's generator; its reactions are deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use confab_proto::{Client, ClientEvent, CommandError, Now, ResponseBody, code};
use rand::RngExt as _;
use rand::rngs::StdRng;

use super::check::{Invariant, SimStats, Violation};
use super::ledger::{Delivery, DeliveryKind, Ledger, Outcome, Target};
use super::trace::Trace;

/// What a user's reactions may touch.
pub(crate) struct Ctx<'a> {
    pub(crate) now: Now,
    pub(crate) at: Duration,
    pub(crate) ledger: &'a mut Ledger,
    pub(crate) trace: &'a mut Trace,
    pub(crate) violations: &'a mut Vec<Violation>,
    pub(crate) stats: &'a mut SimStats,
}

impl Ctx<'_> {
    fn violate(&mut self, invariant: Invariant, detail: String) {
        self.trace.note(self.at, &format!("VIOLATION {invariant:?}: {detail}"));
        self.violations.push(Violation { invariant, detail });
    }
}

/// Where the user is in getting an account and a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    New,
    Registering,
    Registered,
    LoggingIn,
    LoggedIn,
}

/// A command in flight, by request id.
#[derive(Debug, Clone)]
enum Req {
    Register,
    Login,
    CreateRoom(String),
    JoinRoom(String),
    History,
    SendRoom(Bytes),
    RequestMp(String),
    AcceptMp(String),
    SendMp(Bytes),
    CloseMp(String),
}

/// One simulated user's behaviour and what it believes.
#[derive(Debug)]
pub(crate) struct User {
    pub(crate) name: String,
    /// The user wants a connection (false while "offline").
    pub(crate) want_online: bool,
    pub(crate) phase: Phase,
    /// Rooms it is a member of.
    rooms: BTreeSet<String>,
    /// Rooms it is creating or joining.
    joining: BTreeSet<String>,
    /// Peers with an open conversation.
    pub(crate) open: BTreeSet<String>,
    /// Peers it asked (or is asking) for a conversation.
    asked: BTreeSet<String>,
    /// Peers whose request it is accepting.
    accepting: BTreeSet<String>,
    requests: BTreeMap<u32, Req>,
    counter: u64,
}

/// The join verifier of a room: fixed per room name.
pub(crate) fn verifier(room: &str) -> Bytes {
    Bytes::from(format!("verifier:{room}:0123456789abcdef"))
}

impl User {
    pub(crate) fn new(name: String) -> User {
        User {
            name,
            want_online: false,
            phase: Phase::New,
            rooms: BTreeSet::new(),
            joining: BTreeSet::new(),
            open: BTreeSet::new(),
            asked: BTreeSet::new(),
            accepting: BTreeSet::new(),
            requests: BTreeMap::new(),
            counter: 0,
        }
    }

    fn password(&self) -> String {
        format!("password-of-{}", self.name)
    }

    fn passphrase(&self) -> String {
        format!("correct horse battery {}", self.name)
    }

    /// Whether the user has a session and nothing of its own in flight.
    pub(crate) fn idle(&self) -> bool {
        self.phase == Phase::LoggedIn && self.requests.is_empty()
    }

    /// Requests still waiting for their outcome.
    pub(crate) fn in_flight(&self) -> usize {
        self.requests.len()
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// Records a command's request id, or its refusal. True if it was made.
    fn issue(&mut self, ctx: &mut Ctx<'_>, r: Result<u32, CommandError>, req: Req) -> bool {
        match r {
            Ok(id) => {
                ctx.stats.commands += 1;
                self.requests.insert(id, req);
                true
            }
            Err(e) => {
                ctx.stats.refused_commands += 1;
                let name = &self.name;
                ctx.trace.step(ctx.at, b"refused", || format!("{name}: {req:?} refused: {e}"));
                false
            }
        }
    }

    /// Reacts to a batch of client events, then does what its phase needs.
    /// True if it made a command (the client has output to drain again).
    pub(crate) fn react(
        &mut self,
        client: &mut Client,
        ctx: &mut Ctx<'_>,
        events: Vec<ClientEvent>,
        connected: bool,
    ) -> bool {
        let mut acted = false;
        for e in events {
            let name = &self.name;
            let text = format!("{name}: {e:?}");
            ctx.trace.step(ctx.at, text.as_bytes(), || text.clone());
            acted |= self.on_event(client, ctx, e);
        }
        acted | self.maintain(client, ctx, connected)
    }

    /// Registers, logs in, or logs in again after losing its session.
    fn maintain(&mut self, client: &mut Client, ctx: &mut Ctx<'_>, connected: bool) -> bool {
        if self.phase == Phase::LoggedIn && !client.is_logged_in() {
            ctx.stats.relogins += 1;
            self.phase = Phase::Registered;
        }
        if !connected {
            return false;
        }
        match self.phase {
            Phase::New => {
                let key = Bytes::from(format!("idkey:{}", self.name));
                let r = client.register(ctx.now, &self.name, &self.password(), &self.passphrase(), key);
                let made = self.issue(ctx, r, Req::Register);
                if made {
                    self.phase = Phase::Registering;
                }
                made
            }
            Phase::Registered => {
                if client.is_logged_in() {
                    self.phase = Phase::LoggedIn;
                    return false;
                }
                match client.login(ctx.now, &self.name, &self.password(), &self.passphrase()) {
                    Err(CommandError::LoginInProgress) => {
                        self.phase = Phase::LoggingIn;
                        false
                    }
                    r => {
                        let made = self.issue(ctx, r, Req::Login);
                        if made {
                            self.phase = Phase::LoggingIn;
                        }
                        made
                    }
                }
            }
            Phase::Registering | Phase::LoggingIn | Phase::LoggedIn => false,
        }
    }

    fn on_event(&mut self, client: &mut Client, ctx: &mut Ctx<'_>, e: ClientEvent) -> bool {
        let me = self.name.clone();
        match e {
            ClientEvent::Done { request_id, code, body, .. } => return self.done(ctx, request_id, code, body),
            ClientEvent::Failed { request_id, code, reason, .. } => {
                return self.failed(client, ctx, request_id, code, reason);
            }
            ClientEvent::Indeterminate { request_id, reason, .. } => {
                return self.indeterminate(ctx, request_id, reason);
            }
            ClientEvent::LoggedIn { request_id, .. } => {
                self.requests.remove(&request_id);
                self.phase = Phase::LoggedIn;
            }
            ClientEvent::LoggedOut { request_id } => {
                self.requests.remove(&request_id);
                self.phase = Phase::Registered;
            }
            ClientEvent::Connected { .. }
            | ClientEvent::PeerGone { .. }
            | ClientEvent::Closed { .. }
            | ClientEvent::ExternalTokenNeeded { .. } => {}
            ClientEvent::UserMessage { from, seq, sealed, .. } => {
                self.deliver(ctx, from, DeliveryKind::Message, seq, sealed);
            }
            ClientEvent::MpRequest { from, seq, handshake, .. } => {
                self.deliver(ctx, from.clone(), DeliveryKind::MpRequest, seq, Bytes::new());
                self.open.remove(&from);
                self.asked.remove(&from);
                self.accepting.insert(from.clone());
                let n = self.next();
                let hs = Bytes::from(format!("hs:{me}->{from}:{n}:re:{}", handshake.len()));
                let r = client.accept_mp(ctx.now, &from, hs);
                return self.issue(ctx, r, Req::AcceptMp(from));
            }
            ClientEvent::MpAccepted { peer, seq, .. } => {
                self.deliver(ctx, peer.clone(), DeliveryKind::MpAccepted, seq, Bytes::new());
                self.asked.remove(&peer);
                self.open.insert(peer);
            }
            ClientEvent::MpClosed { peer, seq, .. } => {
                self.deliver(ctx, peer.clone(), DeliveryKind::MpClosed, seq, Bytes::new());
                self.asked.remove(&peer);
                self.open.remove(&peer);
            }
            ClientEvent::RoomMessage { room, from, seq, sealed, .. } => {
                self.deliver(ctx, from, DeliveryKind::Room(room), seq, sealed)
            }
            ClientEvent::MpExpired { peer, seq } => ctx.violate(
                Invariant::Protocol,
                format!("{me}: message {seq} to {peer} expired, long before the retention period"),
            ),
            ClientEvent::ServerError { code, reason, .. } => {
                ctx.violate(Invariant::Protocol, format!("{me}: server error event {code}: {reason}"));
            }
            ClientEvent::BadFrame { error } => {
                ctx.violate(Invariant::Protocol, format!("{me}: undecodable frame: {error}"));
            }
        }
        false
    }

    fn deliver(&mut self, ctx: &mut Ctx<'_>, from: String, kind: DeliveryKind, seq: u64, sealed: Bytes) {
        let at = ctx.at;
        ctx.ledger.delivered(&self.name, Delivery { at, from, kind, seq, sealed });
    }

    fn done(&mut self, ctx: &mut Ctx<'_>, id: u32, code: u16, body: ResponseBody) -> bool {
        let Some(req) = self.requests.remove(&id) else {
            let me = &self.name;
            ctx.violate(Invariant::Protocol, format!("{me}: Done for request {id}, which has no outcome pending"));
            return false;
        };
        let seq = match &body {
            ResponseBody::Sent(s) => Some(s.seq),
            _ => None,
        };
        match req {
            Req::Register => self.phase = Phase::Registered,
            Req::Login => self.phase = Phase::LoggedIn,
            Req::CreateRoom(room) | Req::JoinRoom(room) => {
                self.joining.remove(&room);
                self.rooms.insert(room);
            }
            Req::History | Req::RequestMp(_) => {}
            Req::AcceptMp(peer) => {
                self.accepting.remove(&peer);
                self.open.insert(peer);
            }
            Req::CloseMp(peer) => {
                self.open.remove(&peer);
                self.asked.remove(&peer);
            }
            Req::SendRoom(sealed) | Req::SendMp(sealed) => match seq {
                Some(seq) => ctx.ledger.settle(&sealed, Outcome::Acked { seq, code }),
                None => {
                    let me = &self.name;
                    ctx.violate(Invariant::Protocol, format!("{me}: send {id} answered without a sequence number"));
                }
            },
        }
        false
    }

    fn failed(&mut self, client: &mut Client, ctx: &mut Ctx<'_>, id: u32, code: u16, reason: String) -> bool {
        let Some(req) = self.requests.remove(&id) else {
            // A request the client made on its own (refresh, acknowledgement).
            ctx.stats.internal_failures += 1;
            return false;
        };
        let me = self.name.clone();
        match req {
            Req::Register => self.phase = if code == code::CONFLICT { Phase::Registered } else { Phase::New },
            // 401: the account may not exist (its registration was lost): register (again).
            Req::Login => self.phase = if code == code::UNAUTHORIZED { Phase::New } else { Phase::Registered },
            Req::CreateRoom(room) => {
                self.joining.remove(&room);
                if code == code::CONFLICT {
                    return self.join(client, ctx, room);
                }
                self.unexpected(ctx, "create_room", code, &reason);
            }
            Req::JoinRoom(room) => {
                self.joining.remove(&room);
                if code == code::NOT_FOUND {
                    return self.create(client, ctx, room);
                }
                self.unexpected(ctx, "join_room", code, &reason);
            }
            Req::History => self.unexpected(ctx, "room_history", code, &reason),
            Req::RequestMp(peer) => {
                self.asked.remove(&peer);
                if reason.contains("already open") {
                    self.open.insert(peer);
                }
            }
            Req::AcceptMp(peer) => {
                self.accepting.remove(&peer);
                if code == code::CONFLICT {
                    self.open.insert(peer);
                }
            }
            Req::CloseMp(_) => {}
            Req::SendRoom(sealed) | Req::SendMp(sealed) => {
                ctx.trace.note(ctx.at, &format!("{me}: send failed {code}: {reason}"));
                ctx.ledger.settle(&sealed, Outcome::Failed { code, reason });
            }
        }
        false
    }

    /// A request sent before the session ended, never answered: a send may
    /// or may not have happened; anything else is simply over.
    fn indeterminate(&mut self, ctx: &mut Ctx<'_>, id: u32, reason: String) -> bool {
        match self.requests.remove(&id) {
            Some(Req::SendRoom(sealed) | Req::SendMp(sealed)) => {
                let me = &self.name;
                ctx.trace.note(ctx.at, &format!("{me}: send not confirmed: {reason}"));
                ctx.ledger.settle(&sealed, Outcome::Unknown { reason });
            }
            Some(Req::CreateRoom(room) | Req::JoinRoom(room)) => {
                self.joining.remove(&room);
            }
            Some(Req::RequestMp(peer)) => {
                self.asked.remove(&peer);
            }
            Some(Req::AcceptMp(peer)) => {
                self.accepting.remove(&peer);
            }
            Some(_) => {}
            None => ctx.stats.internal_failures += 1,
        }
        false
    }

    fn unexpected(&mut self, ctx: &mut Ctx<'_>, what: &str, code: u16, reason: &str) {
        // Losing the session fails what was waiting: that is not a protocol error.
        if code != code::UNAUTHORIZED {
            let me = &self.name;
            ctx.violate(Invariant::Protocol, format!("{me}: {what} failed unexpectedly: {code} {reason}"));
        }
    }

    fn join(&mut self, client: &mut Client, ctx: &mut Ctx<'_>, room: String) -> bool {
        self.joining.insert(room.clone());
        let r = client.join_room(ctx.now, &room, verifier(&room));
        self.issue(ctx, r, Req::JoinRoom(room))
    }

    fn create(&mut self, client: &mut Client, ctx: &mut Ctx<'_>, room: String) -> bool {
        self.joining.insert(room.clone());
        let r = client.create_room(ctx.now, &room, verifier(&room));
        self.issue(ctx, r, Req::CreateRoom(room))
    }

    /// Sends a private message to `peer`. Returns its payload if the command was made.
    pub(crate) fn send_mp(&mut self, client: &mut Client, ctx: &mut Ctx<'_>, peer: &str) -> Option<Bytes> {
        let n = self.next();
        let sealed = Bytes::from(format!("mp:{}->{peer}:{n}", self.name));
        ctx.ledger.posted(sealed.clone(), &self.name, Target::User(peer.to_owned()), ctx.at);
        let r = client.send_mp(ctx.now, peer, sealed.clone());
        if !self.issue(ctx, r, Req::SendMp(sealed.clone())) {
            let reason = "refused by the client".to_owned();
            ctx.ledger.settle(&sealed, Outcome::Failed { code: 0, reason });
            return None;
        }
        Some(sealed)
    }

    /// Sends a message to `room`. Returns its payload if the command was made.
    pub(crate) fn send_room(&mut self, client: &mut Client, ctx: &mut Ctx<'_>, room: &str) -> Option<Bytes> {
        let n = self.next();
        let sealed = Bytes::from(format!("room:{room}:{}:{n}", self.name));
        ctx.ledger.posted(sealed.clone(), &self.name, Target::Room(room.to_owned()), ctx.at);
        let r = client.send_room(ctx.now, room, sealed.clone());
        if !self.issue(ctx, r, Req::SendRoom(sealed.clone())) {
            let reason = "refused by the client".to_owned();
            ctx.ledger.settle(&sealed, Outcome::Failed { code: 0, reason });
            return None;
        }
        Some(sealed)
    }

    /// Asks `peer` for a private conversation.
    pub(crate) fn request_mp(&mut self, client: &mut Client, ctx: &mut Ctx<'_>, peer: &str) -> bool {
        let n = self.next();
        let hs = Bytes::from(format!("hs:{}->{peer}:{n}", self.name));
        let r = client.request_mp(ctx.now, peer, hs);
        let made = self.issue(ctx, r, Req::RequestMp(peer.to_owned()));
        if made {
            self.asked.insert(peer.to_owned());
        }
        made
    }

    /// Creates or joins `room` (whichever the user guesses; the other on refusal).
    pub(crate) fn enter_room(&mut self, client: &mut Client, ctx: &mut Ctx<'_>, room: &str, create: bool) -> bool {
        if create { self.create(client, ctx, room.to_owned()) } else { self.join(client, ctx, room.to_owned()) }
    }

    /// Whether the user believes it is a member of `room`.
    pub(crate) fn in_room(&self, room: &str) -> bool {
        self.rooms.contains(room)
    }

    /// One random, sensible action. True if a command was made.
    pub(crate) fn act(
        &mut self,
        client: &mut Client,
        ctx: &mut Ctx<'_>,
        rng: &mut StdRng,
        users: &[String],
        rooms: &[String],
    ) -> bool {
        if self.phase != Phase::LoggedIn || !client.is_logged_in() {
            return false;
        }
        let unjoined: Vec<&String> =
            rooms.iter().filter(|r| !self.rooms.contains(*r) && !self.joining.contains(*r)).collect();
        let joined: Vec<String> = self.rooms.iter().cloned().collect();
        let strangers: Vec<&String> = users
            .iter()
            .filter(|u| {
                **u != self.name && !self.open.contains(*u) && !self.asked.contains(*u) && !self.accepting.contains(*u)
            })
            .collect();
        let open: Vec<String> = self.open.iter().cloned().collect();
        let weights = [
            if unjoined.is_empty() { 0 } else { 20 },
            if joined.is_empty() { 0 } else { 40 },
            if strangers.is_empty() { 0 } else { 15 },
            if open.is_empty() { 0 } else { 60 },
            if open.is_empty() { 0 } else { 3 },
            if joined.is_empty() { 0 } else { 3 },
        ];
        let total: u32 = weights.iter().sum();
        if total == 0 {
            return false;
        }
        let mut pick = rng.random_range(0..total);
        let choice = weights
            .iter()
            .position(|w| {
                if pick < *w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .unwrap_or(0);
        match choice {
            0 => {
                let room = unjoined[rng.random_range(0..unjoined.len())].clone();
                let create = rng.random_bool(0.5);
                self.enter_room(client, ctx, &room, create)
            }
            1 => {
                let room = &joined[rng.random_range(0..joined.len())];
                let burst = burst(rng);
                (0..burst).fold(false, |made, _| self.send_room(client, ctx, room).is_some() | made)
            }
            2 => {
                let peer = strangers[rng.random_range(0..strangers.len())].clone();
                self.request_mp(client, ctx, &peer)
            }
            3 => {
                let peer = &open[rng.random_range(0..open.len())];
                let burst = burst(rng);
                (0..burst).fold(false, |made, _| self.send_mp(client, ctx, peer).is_some() | made)
            }
            4 => {
                let peer = open[rng.random_range(0..open.len())].clone();
                let r = client.close_mp(ctx.now, &peer);
                self.issue(ctx, r, Req::CloseMp(peer))
            }
            _ => {
                let room = &joined[rng.random_range(0..joined.len())];
                let r = client.room_history(ctx.now, room);
                self.issue(ctx, r, Req::History)
            }
        }
    }
}

/// How many messages one send action makes: usually one, sometimes a burst.
fn burst(rng: &mut StdRng) -> usize {
    if rng.random_bool(0.2) { rng.random_range(2..=6) } else { 1 }
}
