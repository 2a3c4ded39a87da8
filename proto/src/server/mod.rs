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
//! - [`Server::set_oidc_jwks`] when the adapter refetched the OIDC provider's JWK Set.
//! - After any of these, [`Server::drain`] the machine: the [`Turn`] it
//!   returns hands out its jobs at once, and its frames, closes, log lines
//!   and timer only through [`Turn::commit`], which makes the turn's
//!   changes durable first. Drain again until a turn is empty.
//!
//! The machine never reads a clock, never draws OS randomness and never
//! blocks: time comes in as [`Now`], randomness from the seed given at
//! construction. A panic on any input is a bug.

mod accounts;
mod change;
mod config;
mod memory;
mod mp;
mod oidc;
mod phantom;
mod ratelimit;
mod rooms;
mod session;
pub mod state;
#[cfg(test)]
mod tests;
mod turn;
mod validate;
mod work;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::StdRng;

pub use config::{CodeConfig, DuplicateLogin, HashParams, OidcConfig, PhantomConfig, ServerConfig};
pub use memory::MemoryStore;
pub use oidc::{oidc_login_key, oidc_subject_key};
use session::{LoginStep, Session};
pub use session::{SessionId, SourceKey};
use state::HashMap;
pub use state::{Change, State};
pub use turn::{Action, Committed, Turn};
pub use validate::ConfigError;
pub use work::{Job, JobId, JobResult};

use crate::{
    Close, DecodeError, ErrorBody, ErrorEvent, Event, EventBody, Frame, Message, Now, Opcode, Pong, Request,
    RequestBody, Response, ResponseBody, Status, code,
};

/// Log-worthy facts, for the adapter's structured logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// An account was created.
    Registered {
        /// Its name.
        username: String,
    },
    /// A session authenticated as a user.
    LoggedIn {
        /// The session.
        session: SessionId,
        /// The user.
        username: String,
    },
    /// A request was refused.
    Rejected {
        /// The session.
        session: SessionId,
        /// The request's opcode.
        opcode: Opcode,
        /// The code answered.
        code: u16,
        /// The reason sent to the peer.
        reason: String,
    },
    /// A frame could not be decoded.
    BadFrame {
        /// The session.
        session: SessionId,
        /// Why.
        error: DecodeError,
    },
    /// A session ended.
    SessionClosed {
        /// The session.
        session: SessionId,
        /// Code.
        code: u16,
        /// Why.
        reason: String,
    },
    /// An undelivered private message was dropped after the retention period.
    MessageExpired {
        /// Sender.
        from: String,
        /// Recipient.
        to: String,
        /// Sequence number.
        seq: u64,
    },
}

/// [`Server::open_session`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// `max_sessions` sessions are already open.
    #[error("too many sessions (limit {0})")]
    TooManySessions(usize),
}

/// What to do when a job comes back.
#[derive(Debug)]
enum Pending {
    Register {
        session: SessionId,
        request_id: u32,
        username: String,
        identity_key: Bytes,
        salts: [[u8; 16]; 2],
    },
    Login {
        session: SessionId,
        request_id: u32,
        username: String,
        /// Where the attempt came from (its in-flight slot is released on return).
        source: SourceKey,
        /// The stored hash, or `None` for an unknown user (the job ran anyway).
        expected: Option<[u8; 32]>,
    },
    Passphrase {
        session: SessionId,
        request_id: u32,
        username: String,
        source: SourceKey,
        expected: [u8; 32],
    },
}

/// The server machine. See the [module docs](self) for the contract.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    rng: StdRng,
    state: State,
    sessions: BTreeMap<SessionId, Session>,
    online: HashMap<String, SessionId>,
    jobs: HashMap<JobId, Pending>,
    reserved: HashSet<String>,
    /// Failed and in-flight password checks per account name.
    limiter: ratelimit::Limiter<String>,
    /// Failed and in-flight password checks per source.
    sources: ratelimit::Limiter<SourceKey>,
    work: VecDeque<Job>,
    /// The changes of the turn being built (handed over whole by [`Server::drain`]).
    persist: Vec<Change>,
    final_transmits: VecDeque<(SessionId, Bytes)>,
    dirty: VecDeque<SessionId>,
    closes: VecDeque<(SessionId, u16, String)>,
    events: VecDeque<ServerEvent>,
    timers: BinaryHeap<Reverse<(Instant, SessionId)>>,
    next_sweep: Instant,
    next_session: u64,
    next_job: u64,
    next_ping: u64,
    /// Keys the fake salts of unknown users, so a probe always hashes with the same salt.
    dummy_key: [u8; 32],
    /// Third-party codes accepted and not yet expired (in memory only).
    used_codes: crate::jwt::UsedCodes,
    /// The phantom-token signer, once made or restored.
    signing_keys: Option<crate::jwt::SigningKeys>,
    /// The OIDC provider's keys.
    oidc_keys: crate::jwt::JwkSet,
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
        state.history_cap = config.room_history;
        state.dedup_cap = config.dedup_window;
        let mut rng = StdRng::from_seed(seed);
        let mut dummy_key = [0u8; 32];
        rng.fill_bytes(&mut dummy_key);
        let used_codes = crate::jwt::UsedCodes::new(config.codes.as_ref().map_or(0, |c| c.max_in_flight));
        let signing_keys = phantom::restore_signer(&config, &state);
        let oidc_keys = oidc::initial_keys(&config);
        Ok(Server {
            used_codes,
            signing_keys,
            oidc_keys,
            limiter: ratelimit::Limiter::new(config.max_tracked_accounts),
            sources: ratelimit::Limiter::new(config.max_tracked_sources),
            next_sweep: now.instant + config.sweep_interval,
            config,
            rng,
            state,
            sessions: BTreeMap::new(),
            online: HashMap::default(),
            jobs: HashMap::default(),
            reserved: HashSet::new(),
            work: VecDeque::new(),
            persist: Vec::new(),
            final_transmits: VecDeque::new(),
            dirty: VecDeque::new(),
            closes: VecDeque::new(),
            events: VecDeque::new(),
            timers: BinaryHeap::new(),
            next_session: 1,
            next_job: 1,
            next_ping: 1,
            dummy_key,
        })
    }

    /// The durable state, as the changes emitted so far describe it.
    #[must_use]
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Live sessions.
    #[must_use]
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The user a session is logged in as, if any.
    #[must_use]
    pub fn session_user(&self, session: SessionId) -> Option<&str> {
        self.sessions.get(&session)?.username()
    }

    /// A transport accepted an in-process connection (source [`SourceKey::Local`]).
    pub fn open_session(&mut self, now: Now) -> Result<SessionId, OpenError> {
        self.open_session_from(now, SourceKey::Local)
    }

    /// A transport accepted a connection from `source` (the key of the
    /// per-source login limit: see [`SourceKey::from_ip`]).
    pub fn open_session_from(&mut self, now: Now, source: SourceKey) -> Result<SessionId, OpenError> {
        if self.sessions.len() >= self.config.max_sessions {
            return Err(OpenError::TooManySessions(self.config.max_sessions));
        }
        let id = SessionId(self.next_session);
        self.next_session += 1;
        let deadline = now.instant + self.config.keepalive_interval;
        self.sessions.insert(id, Session::new(self.config.limits, now.instant, source));
        self.timers.push(Reverse((deadline, id)));
        Ok(id)
    }

    /// Bytes arrived on a session, in any chunking.
    pub fn handle_input(&mut self, now: Now, session: SessionId, bytes: &[u8]) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        s.last_rx = now.instant;
        if s.ping.take().is_some() {
            // The pending timer was set for the idle deadline: bring the next keepalive forward.
            self.timers.push(Reverse((now.instant + self.config.keepalive_interval, session)));
        }
        s.decoder.push(bytes);
        self.process_frames(now, session);
    }

    /// The transport of a session is gone (peer closed, reset, timeout).
    pub fn close_session(&mut self, now: Now, session: SessionId) {
        self.end_session(now, session, code::OK, "connection closed by peer".into());
    }

    /// The transport holds `pending` unsent bytes for a session. Past
    /// `max_session_backlog` the session is closed as a slow reader; its
    /// queued private messages stay queued for its next login.
    pub fn handle_backlog(&mut self, now: Now, session: SessionId, pending: usize) {
        if pending > self.config.max_session_backlog {
            let reason =
                format!("slow reader: {pending} bytes waiting, above the limit of {}", self.config.max_session_backlog);
            self.close(now, session, code::UNAVAILABLE, reason);
        }
    }

    /// Closes every session with code 503 ("server shutting down").
    pub fn shutdown(&mut self, now: Now) {
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in ids {
            self.close(now, id, code::UNAVAILABLE, "server shutting down".into());
        }
    }

    /// A job handed out by [`Turn::take_jobs`] finished.
    pub fn handle_work(&mut self, now: Now, result: JobResult) {
        let Some(pending) = self.jobs.remove(&result.id) else {
            return;
        };
        let session = match &pending {
            Pending::Register { session, .. }
            | Pending::Login { session, .. }
            | Pending::Passphrase { session, .. } => *session,
        };
        if let Some(s) = self.sessions.get_mut(&session) {
            s.busy = None;
        }
        self.finish_job(now, pending, result.hashes);
        // Frames that arrived while the job ran.
        self.process_frames(now, session);
    }

    /// Timers: keepalive pings, idle timeouts, retention sweeps.
    pub fn handle_timeout(&mut self, now: Now) {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now.instant {
                break;
            }
            self.timers.pop();
            self.session_timer(now, id);
        }
        if now.instant >= self.next_sweep {
            self.sweep(now);
            self.sweep_auth(now);
            self.next_sweep = now.instant + self.config.sweep_interval;
        }
    }

    // ---- internals shared by the flows ----

    fn process_frames(&mut self, now: Now, session: SessionId) {
        loop {
            let Some(s) = self.sessions.get_mut(&session) else {
                return;
            };
            if s.busy.is_some() {
                if s.decoder.buffered() > self.config.max_deferred_bytes {
                    let reason = format!(
                        "sent more than {} bytes while a login was being checked",
                        self.config.max_deferred_bytes
                    );
                    self.close(now, session, code::TOO_LARGE, reason);
                }
                return;
            }
            match s.decoder.next_frame() {
                Ok(None) => return,
                Ok(Some(frame)) => self.handle_frame(now, session, frame),
                Err(error) => {
                    self.events.push_back(ServerEvent::BadFrame { session, error: error.clone() });
                    self.close(now, session, error.code(), error.to_string());
                    return;
                }
            }
        }
    }

    fn handle_frame(&mut self, now: Now, session: SessionId, frame: Frame) {
        match Message::decode(&frame, &self.config.limits) {
            Err(error) => {
                self.events.push_back(ServerEvent::BadFrame { session, error: error.clone() });
                match Message::request_header(&frame) {
                    Some((opcode, request_id)) => {
                        self.reject(now, session, opcode, request_id, error.code(), error.to_string());
                    }
                    None => {
                        // An unknown opcode still has a readable request id: echo it in the event header.
                        let request_id = match frame.frame_type {
                            crate::FrameType::Request if frame.data.len() >= 8 => {
                                u32::from_be_bytes([frame.data[4], frame.data[5], frame.data[6], frame.data[7]])
                            }
                            _ => 0,
                        };
                        let body =
                            ErrorEvent { code: error.code(), offset: error.offset() as u64, reason: error.to_string() };
                        self.send_event(now, session, request_id, EventBody::ErrorEvent(body));
                    }
                }
            }
            Ok(Message::Request(request)) => self.handle_request(now, session, &frame.auth, request),
            Ok(Message::Ping(ping)) => self.send(session, Message::Pong(Pong { nonce: ping.nonce })),
            Ok(Message::Pong(_)) => {}
            Ok(Message::Close(close)) => {
                self.end_session(now, session, close.code, format!("closed by peer: {}", close.reason));
            }
            Ok(Message::Response(_) | Message::Event(_)) => self.error_event(
                now,
                session,
                code::BAD_REQUEST,
                1,
                "a server accepts only request, ping, pong and close frames".into(),
            ),
        }
    }

    fn handle_request(&mut self, now: Now, session: SessionId, auth: &[u8], request: Request) {
        let Request { request_id, body, .. } = request;
        let opcode = body.opcode();
        match body {
            RequestBody::Register(b) => return self.register(now, session, request_id, b),
            RequestBody::Login(b) => return self.login(now, session, request_id, b),
            RequestBody::Passphrase(b) => return self.passphrase(now, session, request_id, b),
            RequestBody::Refresh(b) => return self.refresh(now, session, request_id, b),
            RequestBody::Jwks(_) => return self.jwks(now, session, request_id),
            RequestBody::Introspect(b) => return self.introspect(now, session, request_id, auth, b),
            RequestBody::VerifyCode(b) => return self.verify_code(now, session, request_id, b),
            RequestBody::IssueCode(_) if self.config.codes.is_none() => {
                let reason = format!("this server does not offer {opcode}");
                return self.reject(now, session, opcode, request_id, code::NOT_IMPLEMENTED, reason);
            }
            _ => {}
        }
        let user = match self.authenticate(now, session, request_id, auth) {
            Ok(user) => user,
            Err((code, reason)) => return self.reject(now, session, opcode, request_id, code, reason),
        };
        if self.config.oidc.is_some()
            && !oidc::allowed_without_identity_key(opcode)
            && self.state.users.get(&*user).is_some_and(|u| u.identity_key.is_empty())
        {
            let reason = "register an identity key first (set_identity_key)".into();
            return self.reject(now, session, opcode, request_id, code::FORBIDDEN, reason);
        }
        // Retries are recognised within one login (token family) of one client.
        let family = self.sessions.get(&session).and_then(|s| s.user.as_ref()).map_or(0, |b| b.family);
        if self.replay(now, session, family, opcode, request_id) {
            return;
        }
        let result = match body {
            RequestBody::Logout(_) => self.logout(now, session, &user),
            RequestBody::FetchKey(b) => self.fetch_key(&b.username),
            RequestBody::SetIdentityKey(b) => self.set_identity_key(&user, b.identity_key),
            RequestBody::CreateRoom(b) => self.create_room(&user, b),
            RequestBody::JoinRoom(b) => self.join_room(&user, b),
            RequestBody::SendRoom(b) => self.send_room(now, &user, b),
            RequestBody::LeaveRoom(b) => self.leave_room(&user, &b.room),
            RequestBody::RoomHistory(b) => self.room_history(&user, &b.room),
            RequestBody::DeleteRoom(b) => self.delete_room(&user, &b.room),
            RequestBody::RoomInfo(b) => self.room_info(&b.room),
            RequestBody::RequestMp(b) => self.request_mp(now, &user, b),
            RequestBody::AcceptMp(b) => self.accept_mp(now, &user, b),
            RequestBody::SendMp(b) => self.send_mp(now, &user, b),
            RequestBody::CloseMp(b) => self.close_mp(now, &user, &b.peer),
            RequestBody::DeliveryAck(b) => self.delivery_ack(&user, &b.peer, b.seq),
            RequestBody::IssueCode(b) => self.issue_code(now, &user, b),
            RequestBody::Register(_)
            | RequestBody::Login(_)
            | RequestBody::Passphrase(_)
            | RequestBody::Refresh(_)
            | RequestBody::Jwks(_)
            | RequestBody::Introspect(_)
            | RequestBody::VerifyCode(_) => unreachable!("handled above"),
        };
        match result {
            Ok((status, code, body)) => {
                if is_recorded(opcode) {
                    let response = state::Recorded { opcode, status, code, body: body.clone() };
                    self.commit(Change::Recorded { family, request_id, response });
                }
                self.respond(now, session, opcode, request_id, status, code, body);
            }
            Err((code, reason)) => {
                if is_recorded(opcode) {
                    // A refusal is remembered too: a retry gets the same refusal, never a late success
                    // (a send_mp sealed for a conversation that has been replaced since, say).
                    let body = ResponseBody::Error(ErrorBody { reason: reason.clone(), retry_after_ms: 0 });
                    let response = state::Recorded { opcode, status: Status::Error, code, body };
                    self.commit(Change::Recorded { family, request_id, response });
                }
                self.reject(now, session, opcode, request_id, code, reason);
            }
        }
    }

    /// Answers a retried request from its recorded response. True if handled.
    fn replay(&mut self, now: Now, session: SessionId, family: u64, opcode: Opcode, request_id: u32) -> bool {
        if !is_recorded(opcode) {
            return false;
        }
        let Some(rec) = self.state.dedup.get(&family).and_then(|d| d.get(request_id)) else {
            return false;
        };
        if rec.opcode != opcode {
            let reason = format!("request id {request_id} was already used for {}", rec.opcode);
            self.reject(now, session, opcode, request_id, code::CONFLICT, reason);
        } else {
            let rec = rec.clone();
            self.respond(now, session, opcode, request_id, rec.status, rec.code, rec.body);
        }
        true
    }

    fn commit(&mut self, change: Change) {
        self.state.apply(&change);
        self.persist.push(change);
    }

    fn send(&mut self, session: SessionId, message: Message) {
        if let Some(out) = self.out(session) {
            message.encode(&[], out);
        }
    }

    /// Appends an already encoded frame (room fan-out encodes once for all members).
    fn send_encoded(&mut self, session: SessionId, frame: &[u8]) {
        if let Some(out) = self.out(session) {
            out.extend_from_slice(frame);
        }
    }

    /// A session's outbound buffer, marked for the next `Transmit`.
    fn out(&mut self, session: SessionId) -> Option<&mut bytes::BytesMut> {
        let s = self.sessions.get_mut(&session)?;
        if !s.dirty {
            s.dirty = true;
            self.dirty.push_back(session);
        }
        Some(&mut s.out)
    }

    fn send_event(&mut self, now: Now, session: SessionId, request_id: u32, body: EventBody) {
        self.send(session, Message::Event(Event { request_id, timestamp_ms: now.unix_ms, body }));
    }

    #[allow(clippy::too_many_arguments)]
    fn respond(
        &mut self,
        now: Now,
        session: SessionId,
        opcode: Opcode,
        request_id: u32,
        status: Status,
        code: u16,
        body: ResponseBody,
    ) {
        let response = Response { opcode, request_id, timestamp_ms: now.unix_ms, status, code, body };
        self.send(session, Message::Response(response));
    }

    fn reject(&mut self, now: Now, session: SessionId, opcode: Opcode, request_id: u32, code: u16, reason: String) {
        self.events.push_back(ServerEvent::Rejected { session, opcode, code, reason: reason.clone() });
        let body = ResponseBody::Error(ErrorBody { reason, retry_after_ms: 0 });
        self.respond(now, session, opcode, request_id, Status::Error, code, body);
    }

    fn error_event(&mut self, now: Now, session: SessionId, code: u16, offset: u64, reason: String) {
        self.send_event(now, session, 0, EventBody::ErrorEvent(ErrorEvent { code, offset, reason }));
    }

    /// Sends a close frame, then ends the session.
    fn close(&mut self, now: Now, session: SessionId, code: u16, reason: String) {
        if !self.sessions.contains_key(&session) {
            return;
        }
        self.send(session, Message::Close(Close { code, reason: reason.clone() }));
        self.end_session(now, session, code, reason);
    }

    /// Forgets a session: flushes what it had to send, tells its peers.
    fn end_session(&mut self, now: Now, session: SessionId, code: u16, reason: String) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        if !s.out.is_empty() {
            self.final_transmits.push_back((session, s.out.freeze()));
        }
        if let Some(bound) = s.user
            && self.online.get(&*bound.username) == Some(&session)
        {
            self.online.remove(&*bound.username);
            self.notify_peer_gone(now, &bound.username);
        }
        self.closes.push_back((session, code, reason.clone()));
        self.events.push_back(ServerEvent::SessionClosed { session, code, reason });
    }

    fn session_timer(&mut self, now: Now, id: SessionId) {
        let (keepalive, idle) = (self.config.keepalive_interval, self.config.idle_timeout);
        let Some(s) = self.sessions.get_mut(&id) else { return };
        let silent = now.instant.saturating_duration_since(s.last_rx);
        if silent >= idle {
            let reason = format!("idle timeout: nothing received for {} s", idle.as_secs());
            return self.close(now, id, code::IDLE_TIMEOUT, reason);
        }
        let next = if silent >= keepalive && s.ping.is_none() {
            let nonce = self.next_ping;
            self.next_ping += 1;
            s.ping = Some(nonce);
            let next = s.last_rx + idle;
            self.send(id, Message::Ping(crate::Ping { nonce }));
            next
        } else if s.ping.is_some() {
            s.last_rx + idle
        } else {
            s.last_rx + keepalive
        };
        self.timers.push(Reverse((next, id)));
    }

    fn next_job_id(&mut self) -> JobId {
        let id = JobId(self.next_job);
        self.next_job += 1;
        id
    }

    fn start_job(&mut self, session: SessionId, tasks: Vec<work::HashTask>, pending: Pending) {
        let id = self.next_job_id();
        if let Some(s) = self.sessions.get_mut(&session) {
            s.busy = Some(id);
        }
        self.jobs.insert(id, pending);
        self.work.push_back(Job { id, tasks });
    }

    fn jobs_full(&self) -> bool {
        self.jobs.len() >= self.config.max_pending_jobs
    }

    fn login_step(&self, session: SessionId) -> Option<&LoginStep> {
        self.sessions.get(&session).map(|s| &s.login)
    }
}

/// Requests whose response (success or refusal) is remembered so that a retry is not performed
/// twice, nor performed after it was refused.
fn is_recorded(opcode: Opcode) -> bool {
    matches!(opcode, Opcode::SendMp | Opcode::SendRoom | Opcode::RequestMp | Opcode::AcceptMp | Opcode::CloseMp)
}

/// The 3-32 characters of `a-z 0-9 _ . -` rule for usernames and room names.
pub(crate) fn valid_name(name: &str) -> bool {
    (3..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
}

type Flow = Result<(Status, u16, ResponseBody), (u16, String)>;
