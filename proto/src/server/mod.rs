//! The server machine: one state machine for every session, routing sealed
//! blobs between users.
//!
//! # Contract
//!
//! - [`Server::open_session`] when a transport accepts a connection,
//!   [`Server::handle_input`] with whatever bytes arrived (any chunking),
//!   [`Server::close_session`] when the transport lost the connection.
//! - [`Server::handle_work`] with the result of each [`Job`] handed out.
//! - [`Server::handle_timeout`] when the last [`Committed::timeout`] instant passes.
//! - [`Server::handle_backlog`] when a session's transport holds unsent bytes.
//! - With OIDC configured: [`Server::poll_jwks_fetch`] after each of these
//!   (and at [`Server::jwks_deadline`]); answer a fetch it asks for with
//!   [`Server::jwks_fetched`] or [`Server::jwks_fetch_failed`].
//! - After any of these, [`Server::drain`] the machine: the [`Turn`] it
//!   returns hands out its jobs at once, and its frames, closes, log lines
//!   and timer only through [`Turn::commit`], which makes the turn's
//!   changes durable first. Drain again until a turn is empty.
//!
//! The machine never reads a clock, never draws OS randomness and never
//! blocks: time comes in as [`Now`], randomness from the seed given at
//! construction. A panic on any input is a bug.
//!
//! # Parts
//!
//! `Server` keeps the dispatch and the wiring; each part owns its state and
//! its invariants: the `Journal` (the durable [`State`], changed only by
//! committing a [`Change`]) and the `Outbox` (jobs, per-session frames,
//! closes, events) in `outbox`; `Presence` (sessions, who is online where,
//! keepalives); the `Desk` (names being registered, password checks in
//! flight, guess limits); rooms (`rooms`) and private messages (`mp`),
//! which work on the state's books; `Phantom` (the token signer and codes);
//! and the OIDC validator. Requests are split into anonymous and
//! authenticated ones once, where they are decoded (`route`), and every
//! refusal is a typed [`Refusal`].

mod accounts;
mod backlog;
mod change;
mod config;
mod crossing;
mod desk;
mod keyed;
mod mail_item;
mod mailbox;
mod memory;
mod mp;
mod oidc;
mod outbox;
mod output;
mod pace;
pub mod partition;
mod phantom;
mod presence;
mod ratelimit;
mod refusal;
mod room_mail;
mod rooms;
mod route;
pub mod router;
mod session;
pub mod state;
pub mod switchboard;
#[cfg(test)]
mod tests;
mod turn;
mod validate;
mod work;

use crate::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;

pub use backlog::MAIL_PER_TARGET;
pub use config::{CodeConfig, DuplicateLogin, HashParams, OidcConfig, PhantomConfig, ServerConfig};
pub use crossing::MAX_PENDING;
pub use mail_item::{MAIL_VERSION, MailError, MailItem, ROLE_ANSWER, ROLE_NOTICE, ROLE_REQUEST};
pub use mailbox::{MAX_WAITING, MailOutcome};
pub use memory::MemoryStore;
pub use oidc::{oidc_login_key, oidc_subject_key};
pub use output::{OpenError, ServerLog};
pub use partition::{MAX_PARTITIONS, PartitionId, Partitions};
pub use refusal::{Refusal, Reply};
pub use router::{FrameRoute, oidc_home, oidc_subject_of, route_unbound};
pub use session::{SessionId, SourceKey};
pub use state::{Change, State};
pub use switchboard::{Switchboard, Switched};
pub use turn::{Action, Batch, Committed, Pending, Receipt, Sequencer, Turn};
pub use validate::ConfigError;
pub use work::{Job, JobId, JobResult, Scratch};

use accounts::Exchange;
use desk::Desk;
use keyed::Keyed;
use outbox::{Journal, Outbox};
use phantom::Phantom;
use presence::{Presence, Tick};
use route::{Anonymous, Authenticated, Route};

use crate::Now;
use crate::wire::{EventBody, Frame, Message, Opcode, Pong, Request, status};

/// The server machine. See the [module docs](self) for the contract.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    rng: StdRng,
    journal: Journal,
    presence: Presence,
    desk: Desk,
    outbox: Outbox,
    phantom: Phantom,
    /// Who of each room is online where, for sending its messages.
    fanout: rooms::Fanout,
    /// The OIDC provider's tokens are checked here, and its JWK Set refreshed through it.
    oidc: Option<crate::jwt::JwtValidator>,
    next_sweep: Instant,
    /// Sessions waiting for another partition's answer.
    waiters: mailbox::Waiters,
    /// How much of this partition's mail waits at each target.
    backlog: backlog::Backlog,
}

impl Server {
    /// A server with no accounts. `seed` is the only source of randomness
    /// (tokens, salts, secrets): give it 32 bytes from the OS in production,
    /// a fixed value in tests.
    ///
    /// # Errors
    /// `config` breaks one of its invariants ([`ServerConfig::validate`]).
    pub fn new(config: ServerConfig, seed: [u8; 32], now: Now) -> Result<Server, ConfigError> {
        let state = State::new(config.room_history, config.dedup_window);
        Server::restore(config, seed, state, now)
    }

    /// A server continuing from a stored state (every change of every turn
    /// it ever committed, applied in order). Use a fresh seed: reusing the
    /// old one would replay the old server's random choices.
    ///
    /// # Errors
    /// `config` breaks one of its invariants ([`ServerConfig::validate`]).
    pub fn restore(config: ServerConfig, seed: [u8; 32], mut state: State, now: Now) -> Result<Server, ConfigError> {
        config.validate()?;
        use rand::Rng as _;
        state.set_caps(config.room_history, config.dedup_window);
        let mut rng = StdRng::from_seed(seed);
        let mut dummy_key = [0u8; 32];
        rng.fill_bytes(&mut dummy_key);
        state.rekey(keyed::IntKeyed::derive(&dummy_key, "dedup"));
        let phantom = Phantom::restore(&config, &state);
        let oidc = oidc::validator(&config, now);
        Ok(Server {
            phantom,
            oidc,
            presence: Presence::new(Keyed::derive(&dummy_key, "online")),
            desk: Desk::new(&config, dummy_key),
            next_sweep: now.instant + config.sweep_interval,
            config,
            rng,
            journal: Journal::new(state),
            outbox: Outbox::default(),
            fanout: rooms::Fanout::default(),
            waiters: mailbox::Waiters::default(),
            backlog: backlog::Backlog::default(),
        })
    }

    /// The durable state, as the changes emitted so far describe it.
    #[must_use]
    pub fn state(&self) -> &State {
        self.journal.state()
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Live sessions.
    #[must_use]
    pub fn session_count(&self) -> usize {
        self.presence.len()
    }

    /// Whether a session is open: opened and not closed yet (by its
    /// transport, or by the core, whose close may still be on its way to
    /// the store). A node's [`Switchboard`] stops routing a connection
    /// whose session its core closed.
    #[must_use]
    pub fn has_session(&self, session: SessionId) -> bool {
        self.presence.get(session).is_some()
    }

    /// The user a session is logged in as, if any.
    #[must_use]
    pub fn session_user(&self, session: SessionId) -> Option<&str> {
        self.presence.get(session)?.username()
    }

    /// Whether a session's later frames wait (a password being checked, a
    /// request waiting for another partition's answer): the frames it was
    /// given are not all handled yet. A node's
    /// [`Switchboard`] asks it.
    #[must_use]
    pub fn session_held(&self, session: SessionId) -> bool {
        self.presence.get(session).is_some_and(session::Session::held)
    }

    /// A transport accepted an in-process connection (source [`SourceKey::Local`]).
    pub fn open_session(&mut self, now: Now) -> Result<SessionId, OpenError> {
        self.open_session_from(now, SourceKey::Local)
    }

    /// A transport accepted a connection from `source` (the key of the
    /// per-source login limit: see [`SourceKey::from_ip`]).
    pub fn open_session_from(&mut self, now: Now, source: SourceKey) -> Result<SessionId, OpenError> {
        let c = &self.config;
        let id = self.presence.open(now.instant, c.limits, source, c.keepalive_interval, c.max_sessions)?;
        self.outbox.open(id);
        Ok(id)
    }

    /// Bytes arrived on a session, in any chunking.
    pub fn handle_input(&mut self, now: Now, session: SessionId, bytes: &[u8]) {
        let Some(s) = self.presence.received(session, now.instant, self.config.keepalive_interval) else {
            return;
        };
        s.decoder.push(bytes);
        self.process_frames(now, session);
    }

    /// The node holds `bytes` of a partial frame of this session's
    /// connection outside the core (a split state's switchboard routes
    /// whole frames only, `Switchboard::partial`); 0: none. They count
    /// toward the session's frame deadline as bytes in its decoder would
    /// (`frame_grace`, `min_frame_rate`; past it the session is closed 408),
    /// and more of them than last told is input for its idle timeout.
    pub fn handle_partial(&mut self, now: Now, session: SessionId, bytes: usize) {
        let Some(s) = self.presence.get(session) else { return };
        if bytes > s.held_outside {
            let _ = self.presence.received(session, now.instant, self.config.keepalive_interval);
        }
        if let Some(s) = self.presence.get_mut(session) {
            s.held_outside = bytes;
        }
        self.presence.track_frame(session, now.instant, self.config.frame_grace, self.config.min_frame_rate);
    }

    /// The transport of a session is gone (peer closed, reset, timeout).
    pub fn close_session(&mut self, now: Now, session: SessionId) {
        self.end_session(now, session, status::OK, "connection closed by peer".into());
    }

    /// The transport holds `pending` unsent bytes for a session. Past
    /// `max_session_backlog` the session is closed as a slow reader; its
    /// queued private messages stay queued for its next login.
    pub fn handle_backlog(&mut self, now: Now, session: SessionId, pending: usize) {
        if pending > self.config.max_session_backlog {
            let reason =
                format!("slow reader: {pending} bytes waiting, above the limit of {}", self.config.max_session_backlog);
            self.close(now, session, status::UNAVAILABLE, reason);
        }
    }

    /// Closes every session with code 503 ("server shutting down").
    pub fn shutdown(&mut self, now: Now) {
        self.close_all(now, "server shutting down");
    }

    /// Closes every session with code 503 and `reason` (a node giving this
    /// partition to another: its clients reconnect, and find the new owner).
    pub fn close_all(&mut self, now: Now, reason: &str) {
        for id in self.presence.ids() {
            self.close(now, id, status::UNAVAILABLE, reason.to_owned());
        }
    }

    /// A job handed out by [`Turn::take_jobs`] finished.
    pub fn handle_work(&mut self, now: Now, result: JobResult) {
        let Some(pending) = self.desk.finish(now.instant, result.id) else {
            return;
        };
        let session = pending.session();
        if let Some(s) = self.presence.get_mut(session) {
            s.busy = None;
        }
        self.finish_job(now, pending, result.hashes);
        // Frames that arrived while the job ran.
        self.process_frames(now, session);
    }

    /// Timers: keepalive pings, idle timeouts, frame deadlines, retention sweeps.
    pub fn handle_timeout(&mut self, now: Now) {
        while let Some(id) = self.presence.pop_due(now.instant) {
            self.session_timer(now, id);
        }
        while let Some(id) = self.presence.pop_frame_due(now.instant) {
            self.frame_too_slow(now, id);
        }
        self.expire_waiting(now);
        if now.instant >= self.next_sweep {
            self.mail(now).sweep();
            self.phantom.sweep(now, &mut self.journal, &mut self.rng, &self.config);
            self.next_sweep = now.instant + self.config.sweep_interval;
        }
    }

    /// When the next timer is due: a session's keepalive or frame deadline, or the sweep.
    fn next_timeout(&self) -> Instant {
        let next = self.presence.next_timer().map_or(self.next_sweep, |t| t.min(self.next_sweep));
        self.waiters.next_deadline().map_or(next, |t| t.min(next))
    }

    // ---- dispatch ----

    /// Handles the session's complete frames, then sets the deadline of the
    /// partial one left in its decoder (`frame_grace`, `min_frame_rate`).
    fn process_frames(&mut self, now: Now, session: SessionId) {
        self.handle_frames(now, session);
        self.presence.track_frame(session, now.instant, self.config.frame_grace, self.config.min_frame_rate);
    }

    fn handle_frames(&mut self, now: Now, session: SessionId) {
        loop {
            let Some(s) = self.presence.get_mut(session) else {
                return;
            };
            if s.held() {
                if s.decoder.buffered() > self.config.max_deferred_bytes {
                    let what = if s.busy.is_some() {
                        "a login was being checked"
                    } else {
                        "a request waited for another partition"
                    };
                    let reason = format!("sent more than {} bytes while {what}", self.config.max_deferred_bytes);
                    self.close(now, session, status::TOO_LARGE, reason);
                }
                return;
            }
            match s.decoder.next_frame() {
                Ok(None) => return,
                Ok(Some(frame)) => {
                    // The next frame's clock starts with its own first byte.
                    s.frame_started = None;
                    self.handle_frame(now, session, frame);
                }
                Err(error) => {
                    self.outbox.event(ServerLog::BadFrame { session, error: error.clone() });
                    self.close(now, session, error.code(), error.to_string());
                    return;
                }
            }
        }
    }

    fn handle_frame(&mut self, now: Now, session: SessionId, frame: Frame) {
        match Message::decode(&frame, &self.config.limits) {
            Err(error) => {
                self.outbox.event(ServerLog::BadFrame { session, error: error.clone() });
                match Message::request_header(&frame) {
                    Some((opcode, request_id)) => {
                        self.outbox.refuse(now, session, opcode, request_id, Refusal::of_decode(&error));
                    }
                    None => {
                        // An unknown opcode still has a readable request id: echo it in the event header.
                        let request_id = match frame.frame_type {
                            crate::wire::FrameType::Request if frame.data.len() >= 8 => {
                                u32::from_be_bytes([frame.data[4], frame.data[5], frame.data[6], frame.data[7]])
                            }
                            _ => 0,
                        };
                        let body = crate::wire::ErrorEvent {
                            code: error.code(),
                            offset: error.offset() as u64,
                            reason: error.to_string(),
                        };
                        self.outbox.send_event(now, session, request_id, EventBody::ErrorEvent(body));
                    }
                }
            }
            Ok(Message::Request(Request { request_id, body, .. })) => match Route::from(body) {
                Route::Anonymous(request) => self.anonymous(now, session, request_id, &frame.auth, request),
                Route::Authenticated(request) => self.authenticated(now, session, request_id, &frame.auth, request),
            },
            Ok(Message::Ping(ping)) => self.outbox.send(session, Message::Pong(Pong { nonce: ping.nonce })),
            Ok(Message::Pong(_)) => {}
            Ok(Message::Close(close)) => {
                self.end_session(now, session, close.code, format!("closed by peer: {}", close.reason));
            }
            Ok(Message::Response(_) | Message::Event(_)) => self.outbox.error_event(
                now,
                session,
                status::BAD_REQUEST,
                1,
                "a server accepts only request, ping, pong and close frames".into(),
            ),
        }
    }

    /// Requests served without an access token. Those that start a password check answer
    /// when it returns; the others answer here.
    fn anonymous(&mut self, now: Now, session: SessionId, request_id: u32, auth: &[u8], request: Anonymous) {
        // An account is made and logged in at its home only (docs/PARTITIONS.md).
        let away = match &request {
            Anonymous::Register(b) => self.config.partitions.not_home(&b.username).map(|r| (Opcode::Register, r)),
            Anonymous::Login(b) => self.config.partitions.not_home(&b.username).map(|r| (Opcode::Login, r)),
            _ => None,
        };
        if let Some((opcode, refusal)) = away {
            return self.outbox.refuse(now, session, opcode, request_id, refusal);
        }
        let (opcode, result) = match request {
            Anonymous::Register(b) => (Opcode::Register, self.register(now, session, request_id, b)),
            Anonymous::Login(b) => (Opcode::Login, self.login(now, session, request_id, b)),
            Anonymous::Passphrase(b) => (Opcode::Passphrase, self.passphrase(now, session, request_id, b)),
            Anonymous::Refresh(b) => {
                let exchange = Exchange { opcode: Opcode::Refresh, refresh_token: &b.refresh_token, retry_key: None };
                (Opcode::Refresh, self.refresh(now, session, request_id, exchange))
            }
            Anonymous::RefreshKeyed(b) => {
                let (refresh_token, retry_key) = (&b.refresh_token, Some((&b.retry_key[..], b.attempt)));
                let exchange = Exchange { opcode: Opcode::RefreshKeyed, refresh_token, retry_key };
                (Opcode::RefreshKeyed, self.refresh(now, session, request_id, exchange))
            }
            Anonymous::Jwks(_) => {
                let flow = self.phantom.jwks(now, &mut self.journal, &mut self.rng, &self.config);
                (Opcode::Jwks, flow.map(Some))
            }
            Anonymous::Introspect(b) => {
                let (journal, rng) = (&mut self.journal, &mut self.rng);
                let flow = self.phantom.introspect(now, journal, rng, &self.config, auth, &b);
                (Opcode::Introspect, flow.map(Some))
            }
            Anonymous::VerifyCode(b) => {
                let desk = &self.desk;
                let flow =
                    self.phantom.verify_code(now, &self.journal, &self.config, |u| desk.unknown_user_secret(u), &b);
                (Opcode::VerifyCode, flow.map(Some))
            }
        };
        match result {
            Ok(Some(reply)) => self.outbox.respond(now, session, opcode, request_id, reply),
            Ok(None) => {}
            Err(refusal) => self.outbox.refuse(now, session, opcode, request_id, refusal),
        }
    }

    /// Requests made for the user the access token names: authenticated, answered from the
    /// record when retried, performed, and their answer recorded when retries must not redo them.
    fn authenticated(&mut self, now: Now, session: SessionId, request_id: u32, auth: &[u8], request: Authenticated) {
        let opcode = request.opcode();
        if matches!(request, Authenticated::IssueCode(_)) && self.config.codes.is_none() {
            let refusal = Refusal::NotImplemented(format!("this server does not offer {opcode}"));
            return self.outbox.refuse(now, session, opcode, request_id, refusal);
        }
        let user = match self.authenticate(now, session, request_id, auth) {
            Ok(user) => user,
            Err(refusal) => return self.outbox.refuse(now, session, opcode, request_id, refusal),
        };
        if self.config.oidc.is_some()
            && !oidc::allowed_without_identity_key(opcode)
            && self.journal.state().user(&user).is_some_and(|u| u.identity_key.is_empty())
        {
            let refusal = Refusal::Forbidden("register an identity key first (set_identity_key)".into());
            return self.outbox.refuse(now, session, opcode, request_id, refusal);
        }
        // A user of another partition's home: asked there (its answer is not recorded).
        if let Authenticated::FetchKey(b) = &request
            && let Some(home) = self.config.partitions.elsewhere(&b.username)
        {
            return self.ask_key(now, session, request_id, home, &b.username);
        }
        // Retries are recognised within one login (token family) of one client.
        let family = self.presence.bound(session).map_or(0, |b| b.family);
        let recorded = request.is_recorded();
        if recorded && self.replay(now, session, family, opcode, request_id) {
            return;
        }
        // An MP request with a user of another home: decided with that home (docs/PARTITIONS.md).
        if let Some(home) = request.mp_peer().and_then(|peer| self.config.partitions.elsewhere(peer)) {
            return self.cross_mp(now, session, (request_id, family), &user, home, request);
        }
        // A room of another home: decided there.
        if let Some(home) = request.room().and_then(|room| self.config.partitions.room_elsewhere(room)) {
            return self.cross_room(now, session, (request_id, family), &user, home, request);
        }
        // A routed send_mp remembers its answer in the change that queues it.
        let mut answer_recorded = false;
        let config = &self.config;
        let result = match request {
            Authenticated::Logout(_) => self.logout(now, session, &user),
            Authenticated::FetchKey(b) => accounts::fetch_key(self.journal.state(), &b.username),
            Authenticated::SetIdentityKey(b) => {
                accounts::set_identity_key(&mut self.journal, config, &user, b.identity_key)
            }
            room @ (Authenticated::CreateRoom(_)
            | Authenticated::JoinRoom(_)
            | Authenticated::SendRoom(_)
            | Authenticated::LeaveRoom(_)
            | Authenticated::RoomHistory(_)
            | Authenticated::DeleteRoom(_)
            | Authenticated::RoomInfo(_)) => self.room_request(now, &user, room),
            Authenticated::RequestMp(b) => self.mail(now).request(&user, b),
            Authenticated::AcceptMp(b) => self.mail(now).accept(&user, b),
            Authenticated::SendMp(b) => {
                let flow = self.mail(now).send(&user, b, Some((family, request_id)));
                answer_recorded = flow.is_ok();
                flow
            }
            Authenticated::CloseMp(b) => self.mail(now).close(&user, &b.peer),
            Authenticated::DeliveryAck(b) => self.mail(now).ack(&user, &b.peer, b.seq),
            Authenticated::IssueCode(b) => Phantom::issue_code(now, &self.journal, &mut self.rng, config, &user, &b),
        };
        if recorded && !answer_recorded {
            // A refusal is remembered too: a retry gets the same refusal, never a late success
            // (a send_mp sealed for a conversation that has been replaced since, say).
            self.record(family, request_id, opcode, &result);
        }
        match result {
            Ok(reply) => self.outbox.respond(now, session, opcode, request_id, reply),
            Err(refusal) => self.outbox.refuse(now, session, opcode, request_id, refusal),
        }
    }

    /// Answers a retried request from its recorded response. True if handled.
    fn replay(&mut self, now: Now, session: SessionId, family: u64, opcode: Opcode, request_id: u32) -> bool {
        let state = self.journal.state();
        let Some(rec) = state.accounts().recorded(family, request_id) else {
            // Still waiting for another partition's answer: the retry waits for it too.
            let Some(key) = state.mail().pending_of(family, request_id) else { return false };
            let first = state.mail().pending(key.0, key.1).map(|r| r.opcode);
            if first != Some(opcode) {
                let reason = format!("request id {request_id} is already in use for {}", first.unwrap_or(opcode));
                self.outbox.refuse(now, session, opcode, request_id, Refusal::Conflict(reason));
            } else {
                self.wait_again(now, session, key, family, request_id);
            }
            return true;
        };
        if rec.opcode != opcode {
            let reason = format!("request id {request_id} was already used for {}", rec.opcode);
            self.outbox.refuse(now, session, opcode, request_id, Refusal::Conflict(reason));
        } else {
            let reply = Reply { status: rec.status, code: rec.code, body: rec.body.clone() };
            self.outbox.respond(now, session, opcode, request_id, reply);
        }
        true
    }

    // ---- wiring shared by the flows ----

    /// The private-message part, for one request.
    fn mail(&mut self, now: Now) -> mp::Mail<'_> {
        mp::Mail {
            now,
            config: &self.config,
            journal: &mut self.journal,
            presence: &self.presence,
            outbox: &mut self.outbox,
        }
    }

    /// Sends a close frame, then ends the session.
    fn close(&mut self, now: Now, session: SessionId, code: u16, reason: String) {
        if !self.presence.contains(session) {
            return;
        }
        self.outbox.send_close(session, code, reason.clone());
        self.end_session(now, session, code, reason);
    }

    /// Forgets a session: flushes what it had to send, tells its peers.
    fn end_session(&mut self, now: Now, session: SessionId, code: u16, reason: String) {
        if let Some(key) = self.presence.get(session).and_then(|s| s.waiting_mail) {
            self.waiters.session_ended(key);
        }
        let Some((_, gone)) = self.presence.remove(session) else {
            return;
        };
        if let Some(user) = gone {
            self.mail(now).notify_peer_gone(&user);
        }
        self.outbox.end(session, code, reason);
    }

    fn session_timer(&mut self, now: Now, id: SessionId) {
        let (keepalive, idle) = (self.config.keepalive_interval, self.config.idle_timeout);
        match self.presence.tick(id, now.instant, keepalive, idle) {
            Some(Tick::Idle) => {
                let reason = format!("idle timeout: nothing received for {} s", idle.as_secs());
                self.close(now, id, status::IDLE_TIMEOUT, reason);
            }
            Some(Tick::Ping(nonce)) => self.outbox.send(id, Message::Ping(crate::wire::Ping { nonce })),
            Some(Tick::Wait) | None => {}
        }
    }

    /// A partial frame missed its deadline: close with 408, saying how far it got.
    fn frame_too_slow(&mut self, now: Now, id: SessionId) {
        let Some(s) = self.presence.get(id) else { return };
        let got = s.decoder.buffered() + s.held_outside;
        let of = match s.decoder.needed() {
            _ if got < crate::wire::HEADER_LEN => format!("at least {}", crate::wire::HEADER_LEN),
            // Held by the node's switchboard: the decoder does not know the rest.
            _ if s.held_outside > 0 => format!("more than {got}"),
            needed => (got + needed).to_string(),
        };
        let secs = s.frame_started.map_or(0, |t| now.instant.saturating_duration_since(t).as_secs());
        let (grace, rate) = (self.config.frame_grace.as_secs(), self.config.min_frame_rate);
        let reason = format!(
            "frame too slow: {got} of {of} bytes in {secs} s; a frame must arrive at {rate} bytes/s or more \
             after its first {grace} s"
        );
        self.close(now, id, status::IDLE_TIMEOUT, reason);
    }

    /// Hands out a password-hash job for `session`, which waits for it.
    fn start_job(&mut self, session: SessionId, tasks: Vec<work::HashTask>, pending: desk::Pending) {
        let id = self.desk.start(pending);
        if let Some(s) = self.presence.get_mut(session) {
            s.busy = Some(id);
        }
        self.outbox.job(Job { id, tasks });
    }
}

/// The rule for usernames, room names and code audiences, as told to peers.
pub(crate) const NAME_RULE: &str = "3-32 characters of a-z 0-9 _ . -, starting with a letter or a digit";

/// Whether `name` follows [`NAME_RULE`]. The first character is a letter or a
/// digit so that no name is made of punctuation only (`...`), looks like a
/// relative path (`.`, `..`) or an option (`-x`).
pub(crate) fn valid_name(name: &str) -> bool {
    (3..=32).contains(&name.len())
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
}
