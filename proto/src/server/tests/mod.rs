//! Tests of the server machine alone, driven with hand-made requests. Unlike
//! the transcripts (which run every hash job at once), this harness can hold
//! jobs back, so attempts really are in flight at the same time.

mod accounts;
mod attack;
mod attack2;
mod backlog;
mod caps;
mod deadline;
mod mp_across;
mod partitions;
mod retry_key;
mod rooms_across;
mod split;
mod switchboard;
mod turn;
mod validate;
mod work;

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Action, HashParams, Job, Server, ServerConfig, SessionId, SourceKey};
use crate::wire::{
    FrameDecoder, Login, Message, Passphrase, Register, Request, RequestBody, Response, ResponseBody, Tokens,
};
use crate::{Ephemeral, Now};

pub(super) const PASSWORD: &str = "correct horse";
pub(super) const PASSPHRASE: &str = "apple river stone";

/// Cheap argon2, otherwise the defaults.
pub(super) fn config() -> ServerConfig {
    ServerConfig { hash_params: HashParams::INSECURE_FAST, ..ServerConfig::default() }
}

/// A server and the responses it sent, per session.
pub(super) struct Harness {
    pub(super) server: Server,
    pub(super) now: Now,
    /// Jobs handed out and not yet run (when [`hold`](Self::hold) is set).
    pub(super) held: Vec<Job>,
    /// Jobs handed out so far.
    pub(super) jobs: usize,
    /// Hold jobs instead of running them at once.
    pub(super) hold: bool,
    decoders: std::collections::BTreeMap<SessionId, FrameDecoder>,
    received: std::collections::BTreeMap<SessionId, Vec<Message>>,
    next_request: u32,
    failovers: u8,
    /// The mail changes of the committed turns, in order (`MailOut`, `MailIn`).
    pub(super) mail: Vec<crate::server::Change>,
    /// The log events of the committed turns.
    pub(super) logs: Vec<crate::server::ServerLog>,
    /// The sessions the committed turns closed, with the code.
    pub(super) closed: Vec<(SessionId, u16)>,
}

impl Harness {
    pub(super) fn new(config: ServerConfig) -> Harness {
        let now = Now::new(Instant::now(), crate::examples::TIMESTAMP_MS);
        Harness {
            server: Server::new(config, [9; 32], now).expect("a valid configuration"),
            now,
            held: Vec::new(),
            jobs: 0,
            hold: false,
            decoders: std::collections::BTreeMap::new(),
            received: std::collections::BTreeMap::new(),
            next_request: 1,
            failovers: 0,
            mail: Vec::new(),
            logs: Vec::new(),
            closed: Vec::new(),
        }
    }

    pub(super) fn connect(&mut self) -> SessionId {
        self.connect_from(SourceKey::Local)
    }

    pub(super) fn connect_from(&mut self, source: SourceKey) -> SessionId {
        let id = self.server.open_session_from(self.now, source).expect("session limit");
        self.decoders.insert(id, FrameDecoder::new(self.server.config().limits));
        id
    }

    /// Sends a request with `auth`; returns its id.
    pub(super) fn send_auth(&mut self, session: SessionId, body: impl Into<RequestBody>, auth: &[u8]) -> u32 {
        let request_id = self.next_request;
        self.next_request += 1;
        let msg = Message::Request(Request { request_id, timestamp_ms: self.now.unix_ms, body: body.into() });
        self.server.handle_input(self.now, session, &msg.to_bytes(auth));
        self.pump();
        request_id
    }

    /// Sends a request with `auth` under `request_id`, as a client retrying it does.
    pub(super) fn send_as(&mut self, session: SessionId, request_id: u32, body: impl Into<RequestBody>, auth: &[u8]) {
        let msg = Message::Request(Request { request_id, timestamp_ms: self.now.unix_ms, body: body.into() });
        self.server.handle_input(self.now, session, &msg.to_bytes(auth));
        self.pump();
    }

    /// The events `session` received, in order.
    pub(super) fn events(&self, session: SessionId) -> Vec<crate::wire::EventBody> {
        let events = self.received(session).iter().filter_map(|m| match m {
            Message::Event(e) => Some(e.body.clone()),
            _ => None,
        });
        events.collect()
    }

    pub(super) fn send(&mut self, session: SessionId, body: impl Into<RequestBody>) -> u32 {
        self.send_auth(session, body, b"")
    }

    /// Runs the held jobs and feeds their results back.
    pub(super) fn run_held(&mut self) {
        for job in std::mem::take(&mut self.held) {
            let result = job.run();
            self.server.handle_work(self.now, result);
        }
        self.pump();
    }

    pub(super) fn advance(&mut self, d: Duration) {
        self.now = self.now.advance(d);
        self.server.handle_timeout(self.now);
        self.pump();
    }

    pub(super) fn pump(&mut self) {
        loop {
            let mut turn = self.server.drain();
            let quiet = turn.is_empty();
            for job in turn.take_jobs() {
                self.jobs += 1;
                if self.hold {
                    self.held.push(job);
                } else {
                    let result = job.run();
                    self.server.handle_work(self.now, result);
                }
            }
            let mail = turn
                .changes()
                .iter()
                .filter(|c| matches!(c, crate::server::Change::MailOut { .. } | crate::server::Change::MailIn { .. }));
            self.mail.extend(mail.cloned());
            let Ok(committed) = turn.commit(&mut Ephemeral);
            for action in committed {
                let (session, bytes) = match action {
                    Action::Transmit { session, bytes } => (session, bytes),
                    Action::Log(event) => {
                        self.logs.push(event);
                        continue;
                    }
                    Action::Close { session, code, .. } => {
                        self.closed.push((session, code));
                        continue;
                    }
                };
                let limits = self.server.config().limits;
                let Some(decoder) = self.decoders.get_mut(&session) else { continue };
                decoder.push(&bytes);
                while let Ok(Some(frame)) = decoder.next_frame() {
                    let msg = Message::decode(&frame, &limits).expect("the server sends valid frames");
                    self.received.entry(session).or_default().push(msg);
                }
            }
            if quiet {
                return;
            }
        }
    }

    /// The response to `request_id` on `session`.
    pub(super) fn response(&self, session: SessionId, request_id: u32) -> Response {
        self.received
            .get(&session)
            .into_iter()
            .flatten()
            .find_map(|m| match m {
                Message::Response(r) if r.request_id == request_id => Some(r.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no response to #{request_id} on {session}"))
    }

    /// Every response to `request_id` on `session`, in order (a request
    /// sent again gets one each time).
    pub(super) fn responses(&self, session: SessionId, request_id: u32) -> Vec<Response> {
        let responses = self.received(session).iter().filter_map(|m| match m {
            Message::Response(r) if r.request_id == request_id => Some(r.clone()),
            _ => None,
        });
        responses.collect()
    }

    /// Everything `session` received.
    pub(super) fn received(&self, session: SessionId) -> &[Message] {
        self.received.get(&session).map_or(&[], Vec::as_slice)
    }

    /// The code answered to `request_id` on `session`.
    pub(super) fn code(&self, session: SessionId, request_id: u32) -> u16 {
        self.response(session, request_id).code
    }

    /// The error reason answered to `request_id` on `session` (empty if it succeeded).
    pub(super) fn reason(&self, session: SessionId, request_id: u32) -> String {
        match self.response(session, request_id).body {
            ResponseBody::Error(e) => e.reason,
            _ => String::new(),
        }
    }

    /// Whether `request_id` on `session` has had no answer yet.
    pub(super) fn received_nothing(&self, session: SessionId, request_id: u32) -> bool {
        !self
            .received
            .get(&session)
            .into_iter()
            .flatten()
            .any(|m| matches!(m, Message::Response(r) if r.request_id == request_id))
    }

    /// Another node takes over: a server restored from this one's state
    /// (every change of it committed), with no connection (the old ones are
    /// gone with their node), and a generator of its own.
    pub(super) fn fail_over(&mut self) {
        let state = self.server.state().clone();
        let config = self.server.config().clone();
        self.failovers += 1;
        let seed = [10 + self.failovers; 32];
        self.server = Server::restore(config, seed, state, self.now).expect("a valid configuration");
        self.decoders.clear();
        self.received.clear();
    }

    /// The transport of `session` is gone.
    pub(super) fn disconnect(&mut self, session: SessionId) {
        self.server.close_session(self.now, session);
        self.pump();
    }

    /// The tokens answered to `request_id` on `session`.
    pub(super) fn tokens(&self, session: SessionId, request_id: u32) -> Tokens {
        match self.response(session, request_id).body {
            ResponseBody::Tokens(t) => t,
            other => panic!("expected tokens for #{request_id} on {session}, got {other:?}"),
        }
    }

    /// Registers `user` on a fresh session (jobs run at once).
    pub(super) fn register(&mut self, user: &str) -> u16 {
        let hold = std::mem::replace(&mut self.hold, false);
        let s = self.connect();
        let id = self.send(s, register_body(user));
        self.hold = hold;
        self.code(s, id)
    }

    /// Logs `user` in on a fresh session; returns the session and its tokens.
    pub(super) fn login(&mut self, user: &str) -> (SessionId, Tokens) {
        let hold = std::mem::replace(&mut self.hold, false);
        let s = self.connect();
        self.send(s, Login { username: user.into(), password: PASSWORD.into() });
        let id = self.send(s, Passphrase { passphrase: PASSPHRASE.into() });
        self.hold = hold;
        match self.response(s, id).body {
            ResponseBody::Tokens(t) => (s, t),
            other => panic!("login of {user} failed: {other:?}"),
        }
    }
}

/// A registration of `user` with the fixture password, passphrase and key.
pub(super) fn register_body(user: &str) -> Register {
    Register {
        username: user.into(),
        password: PASSWORD.into(),
        passphrase: PASSPHRASE.into(),
        identity_key: Bytes::from(format!("idkey-{user}")),
    }
}
