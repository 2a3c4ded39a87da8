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
use confab_proto::e2e::{DecryptError, OpenError, SecureError, SecureEvent};
use confab_proto::{ClientEvent, CommandError, Now, ResponseBody, code};
use rand::RngExt as _;
use rand::rngs::StdRng;

use super::check::{Invariant, SimStats, Violation};
use super::idp::TestIdp;
use super::ledger::{Delivery, DeliveryKind, Ledger, Outcome, Target};
use super::machine::{AppEvent, Machine};
use super::trace::Trace;

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

    /// A secure-layer event: offers are accepted, sessions become open,
    /// opened messages are delivered; anything that did not verify or open
    /// is a violation (the simulated network never tampers).
    fn on_secure(&mut self, client: &mut Machine, ctx: &mut Ctx<'_>, e: SecureEvent) -> bool {
        let me = self.name.clone();
        if ctx.replay {
            return self.on_replayed(client, ctx, e);
        }
        match e {
            SecureEvent::MpOffered { from, .. } => {
                self.deliver(ctx, from.clone(), DeliveryKind::MpRequest, 0, Bytes::new());
                self.open.remove(&from);
                self.asked.remove(&from);
                self.accepting.insert(from.clone());
                let r = client.accept_mp(ctx.now, &from, Bytes::new());
                return self.issue(ctx, r, Req::AcceptMp(from));
            }
            SecureEvent::MpReady { peer } => {
                self.record_session_keys(client, ctx, &peer);
                if self.asked.remove(&peer) {
                    self.deliver(ctx, peer.clone(), DeliveryKind::MpAccepted, 0, Bytes::new());
                    self.open.insert(peer);
                }
            }
            SecureEvent::Mp { from, text, .. } => {
                self.deliver(ctx, from, DeliveryKind::Message, 0, Bytes::from(text));
            }
            SecureEvent::Room { room, from, seq, text, history, .. } => {
                let text = Bytes::from(text);
                if history {
                    // Already delivered live, or from before this member joined: it must be a known post.
                    let known =
                        ctx.ledger.post(&text).is_some_and(|p| p.from == from && p.to == Target::Room(room.clone()));
                    if !known {
                        let shown = String::from_utf8_lossy(&text);
                        ctx.violate(
                            Invariant::Opacity,
                            format!("{me}: {room} history opened to {shown:?}, never sent"),
                        );
                    }
                } else {
                    self.deliver(ctx, from, DeliveryKind::Room(room), seq, text);
                }
            }
            SecureEvent::MpExpiredLocally { .. } => {}
            // A live message of a room whose join (retried on a new
            // connection) is not answered yet, or whose join was
            // indeterminate (written before a lost session: the server may
            // have made this user a member, the key never came): the key
            // comes with a join answer, whose history holds the message.
            SecureEvent::DecryptFailed { room: Some(room), reason: DecryptError::NoRoomKey, .. }
                if self.joining.contains(&room) || !self.rooms.contains(&room) => {}
            e @ (SecureEvent::KeyChanged { .. }
            | SecureEvent::HandshakeRejected { .. }
            | SecureEvent::DecryptFailed { .. }) => {
                ctx.violate(Invariant::Opacity, format!("{me}: {e:?}"));
            }
            SecureEvent::Plain(e) => return self.on_event(client, ctx, e),
        }
        false
    }

    /// What the secure layer made of an item the hostile server replayed:
    /// refused as a replay, or not opened at all (its keys are gone). Anything it accepted is still delivered,
    /// so that the ledger's duplicate checks see it too.
    fn on_replayed(&mut self, client: &mut Machine, ctx: &mut Ctx<'_>, e: SecureEvent) -> bool {
        let me = self.name.clone();
        match e {
            SecureEvent::DecryptFailed {
                reason:
                    DecryptError::Open(OpenError::Replayed { .. } | OpenError::TooOld { .. } | OpenError::Stale { .. }),
                ..
            } => ctx.stats.replays_refused += 1,
            SecureEvent::HandshakeRejected { ref reason, .. } if reason.contains("replayed") => {
                ctx.stats.replays_refused += 1;
            }
            // Not opened for another reason (the session or room key it was
            // sealed under is gone: a conversation closed and opened again, a
            // room left): refused all the same, and harmless.
            SecureEvent::DecryptFailed { .. } | SecureEvent::HandshakeRejected { .. } => {
                ctx.stats.replays_unopened += 1;
            }
            e @ (SecureEvent::Mp { .. } | SecureEvent::Room { .. } | SecureEvent::MpOffered { .. }) => {
                ctx.violate(Invariant::Replay, format!("{me}: replayed item accepted: {e:?}"));
                ctx.replay = false;
                let acted = self.on_secure(client, ctx, e);
                ctx.replay = true;
                return acted;
            }
            e => ctx.violate(Invariant::Replay, format!("{me}: replayed item refused unexpectedly: {e:?}")),
        }
        false
    }

    /// Keeps the content keys of the session with `peer`, for leak checks.
    fn record_session_keys(&self, client: &Machine, ctx: &mut Ctx<'_>, peer: &str) {
        let Some(session) = client.secure().and_then(|s| s.session(peer)) else { return };
        for (dir, key) in [("send", session.send_stream()), ("receive", session.opener().stream())] {
            let what = format!("MP {dir} stream key of {} with {peer}", self.name);
            ctx.ledger.content_key(what, key.as_bytes());
        }
        let what = format!("MP send epoch keys of {} with {peer}", self.name);
        ctx.ledger.content_key(what, &session.sealer().keys().to_bytes());
    }

    fn on_event(&mut self, client: &mut Machine, ctx: &mut Ctx<'_>, e: ClientEvent) -> bool {
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
            ClientEvent::ExternalTokenNeeded { .. } => return self.renew_token(client, ctx),
            ClientEvent::Connected { .. }
            | ClientEvent::CaughtUp
            | ClientEvent::PeerGone { .. }
            | ClientEvent::Closed { .. } => {}
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
        if self.maybe_reused.remove(&id) {
            return self.answered_from_record(ctx, id);
        }
        let Some(req) = self.requests.remove(&id) else {
            if self.reused_below > 0 && id <= self.reused_below {
                // A request of the old copy's outbox, sent again: its outcome went to the lost state.
                ctx.stats.reused_ids += 1;
                return false;
            }
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
            Req::Login | Req::SetIdentityKey => self.phase = Phase::LoggedIn,
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

    fn failed(&mut self, client: &mut Machine, ctx: &mut Ctx<'_>, id: u32, code: u16, reason: String) -> bool {
        if self.maybe_reused.remove(&id) {
            return self.answered_from_record(ctx, id);
        }
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
            // 409: the key is already registered (an earlier attempt was performed).
            Req::SetIdentityKey => self.phase = if code == code::CONFLICT { Phase::LoggedIn } else { Phase::New },
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
            // The login ended (a refresh token reused: issue 10) before the message went out.
            Req::SendRoom(sealed) if code == code::UNAUTHORIZED => {
                ctx.trace.note(ctx.at, &format!("{me}: room send refused {code}: {reason}; resent after login"));
                self.resend.push(sealed);
            }
            Req::SendRoom(sealed) | Req::SendMp(sealed) => {
                ctx.trace.note(ctx.at, &format!("{me}: send failed {code}: {reason}"));
                ctx.ledger.settle(&sealed, Outcome::Failed { code, reason });
            }
        }
        false
    }

    /// Sends again the room messages refused when the previous login ended.
    fn resend_refused(&mut self, client: &mut Machine, ctx: &mut Ctx<'_>) -> bool {
        let mut made = false;
        for sealed in std::mem::take(&mut self.resend) {
            let room = match ctx.ledger.post(&sealed).map(|p| &p.to) {
                Some(Target::Room(room)) if self.rooms.contains(room) => room.clone(),
                _ => {
                    let reason = "refused when the login ended, and no longer a member".to_owned();
                    ctx.ledger.settle(&sealed, Outcome::Failed { code: code::UNAUTHORIZED, reason });
                    continue;
                }
            };
            let r = client.send_room(ctx.now, &room, &sealed);
            if self.issue(ctx, r, Req::SendRoom(sealed.clone())) {
                made = true;
            } else {
                let reason = "refused by the client".to_owned();
                ctx.ledger.settle(&sealed, Outcome::Failed { code: 0, reason });
            }
        }
        made
    }

    /// The answer to a request whose id the client's lost state had used:
    /// possibly the server's record of the old request (a known limit of
    /// restoring an old copy: SECURITY.md), so the request may not have been
    /// performed. Treated like an indeterminate outcome.
    fn answered_from_record(&mut self, ctx: &mut Ctx<'_>, id: u32) -> bool {
        ctx.stats.reused_ids += 1;
        let reason = format!("request id {id} reused after a restore from an old copy");
        ctx.trace.note(ctx.at, &format!("{}: {reason}", self.name));
        self.indeterminate(ctx, id, reason)
    }

    /// The client was restored from an old copy of its state: what was in
    /// flight is lost with the state it replaced (indeterminate), and the
    /// user believes what the old copy holds: its rooms and conversations.
    pub(crate) fn restored(&mut self, client: &Machine, ctx: &mut Ctx<'_>, users: &[String]) {
        for (_, req) in std::mem::take(&mut self.requests) {
            if let Req::SendRoom(sealed) | Req::SendMp(sealed) = req {
                let reason = "in flight when the client was restored from an old copy".to_owned();
                ctx.ledger.settle(&sealed, Outcome::Unknown { reason });
            }
        }
        for sealed in std::mem::take(&mut self.resend) {
            // Refused before it was performed, then forgotten with the lost state.
            let reason = "to be resent when the client was restored from an old copy".to_owned();
            ctx.ledger.settle(&sealed, Outcome::Unknown { reason });
        }
        self.maybe_reused.clear();
        self.reused_below = self.max_issued;
        let Some(secure) = client.secure() else { return };
        self.rooms.retain(|r| secure.room_session(r).is_some());
        self.open = users.iter().filter(|u| secure.has_session(u)).cloned().collect();
        self.joining.clear();
        self.asked.clear();
        self.accepting.clear();
        if self.phase == Phase::LoggedIn && !client.is_logged_in() {
            self.phase = Phase::Registered;
        }
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
