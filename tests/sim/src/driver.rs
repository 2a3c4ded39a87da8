//! How a simulated user behaves: registers and logs in (again, if its
//! session is lost) or, as an OIDC user, authenticates with a token from
//! the test identity provider and registers its identity key; creates or
//! joins rooms, asks peers for private conversations and accepts every
//! request it gets, and sends messages whose payloads are unique and
//! recognisable (sealed bytes of a plain client, plaintexts of a secure
//! one). Its random choices come from the simulation's generator; its
//! reactions are deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use confab_proto::e2e::SecureError;
use confab_proto::{CommandError, Now};
use rand::RngExt as _;
use rand::rngs::StdRng;

use super::check::{Invariant, SimStats, Violation};
use super::idp::TestIdp;
use super::ledger::{Ledger, Outcome, Target};
use super::machine::{AppEvent, Machine};
use super::trace::Trace;

mod reactions;

/// What a user's reactions may touch.
pub(crate) struct Ctx<'a> {
    pub(crate) now: Now,
    pub(crate) at: Duration,
    pub(crate) ledger: &'a mut Ledger,
    pub(crate) trace: &'a mut Trace,
    pub(crate) violations: &'a mut Vec<Violation>,
    pub(crate) stats: &'a mut SimStats,
    /// The identity provider of OIDC users.
    pub(crate) idp: &'a mut Option<TestIdp>,
    /// These events answer an item the hostile server replayed: it must be refused.
    pub(crate) replay: bool,
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
    SetIdentityKey,
}

/// One simulated user's behaviour and what it believes.
#[derive(Debug)]
pub(crate) struct User {
    pub(crate) name: String,
    /// Authenticates with the identity provider's tokens instead of a password.
    pub(crate) oidc: bool,
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
    /// Room messages refused with 401 because the login ended (never
    /// performed: the client fails only requests it never wrote, and the
    /// server refuses a revoked token before doing anything): sent again,
    /// as an application would, once logged in again.
    resend: Vec<Bytes>,
    counter: u64,
    /// The highest request id the client had issued when it was last
    /// restored from an old copy ([`Sim::restore_client`](super::Sim::restore_client)): 0 if never.
    reused_below: u32,
    /// The highest request id issued.
    max_issued: u32,
    /// Requests made after a restore with an id the lost state had already
    /// used: the server's retry window may answer them from its record
    /// (the original's answer, not performed) instead of performing them.
    maybe_reused: BTreeSet<u32>,
}

impl User {
    pub(crate) fn new(name: String, oidc: bool) -> User {
        User {
            name,
            oidc,
            want_online: false,
            phase: Phase::New,
            rooms: BTreeSet::new(),
            joining: BTreeSet::new(),
            open: BTreeSet::new(),
            asked: BTreeSet::new(),
            accepting: BTreeSet::new(),
            requests: BTreeMap::new(),
            resend: Vec::new(),
            counter: 0,
            reused_below: 0,
            max_issued: 0,
            maybe_reused: BTreeSet::new(),
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
        self.phase == Phase::LoggedIn && self.requests.is_empty() && self.resend.is_empty()
    }

    /// Requests still waiting for their outcome.
    pub(crate) fn in_flight(&self) -> usize {
        self.requests.len() + self.resend.len()
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// Records a command's request id, or its refusal. True if it was made.
    fn issue(&mut self, ctx: &mut Ctx<'_>, r: Result<u32, SecureError>, req: Req) -> bool {
        match r {
            Ok(id) => {
                ctx.stats.commands += 1;
                self.max_issued = self.max_issued.max(id);
                if id <= self.reused_below {
                    self.maybe_reused.insert(id);
                }
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
        client: &mut Machine,
        ctx: &mut Ctx<'_>,
        events: Vec<AppEvent>,
        connected: bool,
    ) -> bool {
        let mut acted = false;
        for e in events {
            let name = &self.name;
            let text = match &e {
                AppEvent::Plain(e) => format!("{name}: {e:?}"),
                AppEvent::Secure(e) => format!("{name}: {e:?}"),
            };
            ctx.trace.step(ctx.at, text.as_bytes(), || text.clone());
            acted |= match e {
                AppEvent::Plain(e) => self.on_event(client, ctx, e),
                AppEvent::Secure(e) => self.on_secure(client, ctx, e),
            };
        }
        acted | self.maintain(client, ctx, connected)
    }

    /// Registers, logs in, or logs in again after losing its session.
    fn maintain(&mut self, client: &mut Machine, ctx: &mut Ctx<'_>, connected: bool) -> bool {
        if self.phase == Phase::LoggedIn && !client.is_logged_in() {
            ctx.stats.relogins += 1;
            self.phase = Phase::Registered;
            if ctx.stats.client_restores == 0 {
                ctx.violate(Invariant::KeepsLogin, format!("{} lost its login", self.name));
            }
        }
        if !connected {
            return false;
        }
        if self.phase == Phase::LoggedIn && client.is_logged_in() && !self.resend.is_empty() {
            return self.resend_refused(client, ctx);
        }
        if self.oidc {
            return self.maintain_oidc(client, ctx);
        }
        match self.phase {
            Phase::New => {
                let r = client.register(ctx.now, &self.name, &self.password(), &self.passphrase());
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
                    Err(SecureError::Command(CommandError::LoginInProgress)) => {
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

    /// An OIDC user: a token from the provider, then its identity key (a
    /// first login creates the account without one); after losing its
    /// session, a new token.
    fn maintain_oidc(&mut self, client: &mut Machine, ctx: &mut Ctx<'_>) -> bool {
        let Some(idp) = ctx.idp.as_mut() else { return false };
        match self.phase {
            Phase::New | Phase::Registered => {
                // The client has output to drain again if anything changed.
                let installed = !client.client().uses_external_token();
                if installed {
                    let token = idp.token(ctx.now.unix_ms, &self.name);
                    if let Err(e) = client.client_mut().use_external_token(ctx.now, &token) {
                        ctx.violate(Invariant::Protocol, format!("{}: external token refused: {e}", self.name));
                        return false;
                    }
                }
                if self.phase == Phase::Registered {
                    self.phase = Phase::LoggedIn;
                    return installed;
                }
                let r = client.set_identity_key(ctx.now, &self.name);
                let made = self.issue(ctx, r, Req::SetIdentityKey);
                if made {
                    self.phase = Phase::Registering;
                }
                installed || made
            }
            Phase::Registering | Phase::LoggingIn | Phase::LoggedIn => false,
        }
    }

    /// The server refused the provider's token (expired): get a fresh one.
    fn renew_token(&mut self, client: &mut Machine, ctx: &mut Ctx<'_>) -> bool {
        let Some(idp) = ctx.idp.as_mut() else {
            ctx.violate(Invariant::Protocol, format!("{}: asked for an external token", self.name));
            return false;
        };
        let token = idp.token(ctx.now.unix_ms, &self.name);
        ctx.stats.token_renewals += 1;
        if let Err(e) = client.client_mut().set_external_token(ctx.now, &token) {
            ctx.violate(Invariant::Protocol, format!("{}: fresh external token refused: {e}", self.name));
        }
        true
    }

    fn join(&mut self, client: &mut Machine, ctx: &mut Ctx<'_>, room: String) -> bool {
        self.joining.insert(room.clone());
        let r = client.join_room(ctx.now, &room);
        self.issue(ctx, r, Req::JoinRoom(room))
    }

    fn create(&mut self, client: &mut Machine, ctx: &mut Ctx<'_>, room: String) -> bool {
        self.joining.insert(room.clone());
        let r = client.create_room(ctx.now, &room);
        self.issue(ctx, r, Req::CreateRoom(room))
    }

    /// Sends a private message to `peer`. Returns its payload if the command was made.
    pub(crate) fn send_mp(&mut self, client: &mut Machine, ctx: &mut Ctx<'_>, peer: &str) -> Option<Bytes> {
        let n = self.next();
        let sealed = match client.secure() {
            None => Bytes::from(format!("mp:{}->{peer}:{n}", self.name)),
            Some(_) => plaintext(&format!("mp {}->{peer} #{n}", self.name)),
        };
        ctx.ledger.posted(sealed.clone(), &self.name, Target::User(peer.to_owned()), ctx.at);
        let r = client.send_mp(ctx.now, peer, &sealed);
        if !self.issue(ctx, r, Req::SendMp(sealed.clone())) {
            let reason = "refused by the client".to_owned();
            ctx.ledger.settle(&sealed, Outcome::Failed { code: 0, reason });
            return None;
        }
        Some(sealed)
    }

    /// Sends a message to `room`. Returns its payload if the command was made.
    pub(crate) fn send_room(&mut self, client: &mut Machine, ctx: &mut Ctx<'_>, room: &str) -> Option<Bytes> {
        let n = self.next();
        let sealed = match client.secure() {
            None => Bytes::from(format!("room:{room}:{}:{n}", self.name)),
            Some(_) => plaintext(&format!("room {room} from {} #{n}", self.name)),
        };
        ctx.ledger.posted(sealed.clone(), &self.name, Target::Room(room.to_owned()), ctx.at);
        let r = client.send_room(ctx.now, room, &sealed);
        if !self.issue(ctx, r, Req::SendRoom(sealed.clone())) {
            let reason = "refused by the client".to_owned();
            ctx.ledger.settle(&sealed, Outcome::Failed { code: 0, reason });
            return None;
        }
        Some(sealed)
    }

    /// Asks `peer` for a private conversation.
    pub(crate) fn request_mp(&mut self, client: &mut Machine, ctx: &mut Ctx<'_>, peer: &str) -> bool {
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
    pub(crate) fn enter_room(&mut self, client: &mut Machine, ctx: &mut Ctx<'_>, room: &str, create: bool) -> bool {
        if create { self.create(client, ctx, room.to_owned()) } else { self.join(client, ctx, room.to_owned()) }
    }

    /// Whether the user believes it is a member of `room`.
    pub(crate) fn in_room(&self, room: &str) -> bool {
        self.rooms.contains(room)
    }

    /// One random, sensible action. True if a command was made.
    pub(crate) fn act(
        &mut self,
        client: &mut Machine,
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

/// A plaintext of a secure user: long, unique (`what` names sender and
/// number) and distinctive (a tag no server field can contain by chance),
/// so that finding it in the server's state means it leaked.
fn plaintext(what: &str) -> Bytes {
    let tag =
        what.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
    Bytes::from(format!("plaintext {what}, tag {tag:016x}: the owl flies at midnight"))
}

/// How many messages one send action makes: usually one, sometimes a burst.
fn burst(rng: &mut StdRng) -> usize {
    if rng.random_bool(0.2) { rng.random_range(2..=6) } else { 1 }
}
