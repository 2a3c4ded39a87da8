//! The core's determinism promise: two servers built from the same seed and
//! fed the same inputs produce the same bytes (every job, change, frame,
//! close, log line and timer of every turn, in order) and the same persisted
//! state (every change, and the committed state's serialized form, as the
//! store writes it). A map iterated in the order of a hasher seeded
//! from OS randomness or the clock, anywhere in the server, breaks this.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use confab_proto::server::{Action, HashParams, MemoryStore};
use confab_proto::wire::{
    AcceptMp, CloseMp, CreateRoom, DeliveryAck, FrameDecoder, JoinRoom, Limits, Login, Logout, Message, Passphrase,
    Refresh, Register, Request, RequestBody, RequestMp, Response, ResponseBody, SendMp, SendRoom, Tokens,
};
use confab_proto::{Now, Server, ServerConfig, SessionId};

const USERS: usize = 12;

/// Everything observable of one run.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    /// Every output, in order, encoded.
    outputs: Vec<u8>,
    /// Every change, encoded as the store logs it.
    changes: Vec<Vec<u8>>,
    /// The final state, encoded as the store snapshots it.
    state: Vec<u8>,
}

struct Driver {
    server: Server,
    /// Where each turn commits (the persisted state is also checked through it).
    store: MemoryStore,
    now: Now,
    run: Run,
    decoders: BTreeMap<SessionId, FrameDecoder>,
    responses: BTreeMap<(SessionId, u32), Response>,
}

impl Driver {
    fn new(seed: [u8; 32], origin: Instant) -> Driver {
        let config = ServerConfig {
            hash_params: HashParams::INSECURE_FAST,
            mp_retention: Duration::from_secs(600),
            access_ttl: Duration::from_secs(900),
            ..ServerConfig::default()
        };
        let now = Now::new(origin, 1_795_305_600_000);
        Driver {
            store: MemoryStore::new(&config),
            server: Server::new(config, seed, now).expect("a valid configuration"),
            now,
            run: Run { outputs: Vec::new(), changes: Vec::new(), state: Vec::new() },
            decoders: BTreeMap::new(),
            responses: BTreeMap::new(),
        }
    }

    fn connect(&mut self) -> SessionId {
        let s = self.server.open_session(self.now).expect("session");
        self.decoders.insert(s, FrameDecoder::new(Limits::DEFAULT));
        s
    }

    fn send(&mut self, s: SessionId, request_id: u32, body: impl Into<RequestBody>, auth: &str) -> Option<Response> {
        let m = Message::Request(Request { request_id, timestamp_ms: self.now.unix_ms, body: body.into() });
        self.server.handle_input(self.now, s, &m.to_bytes(auth.as_bytes()));
        self.drain();
        self.responses.get(&(s, request_id)).cloned()
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now.advance(d);
        self.server.handle_timeout(self.now);
        self.drain();
    }

    /// Drains turn after turn until one is empty, committing each to the store.
    fn drain(&mut self) {
        loop {
            let mut turn = self.server.drain();
            let quiet = turn.is_empty();
            for job in turn.take_jobs() {
                self.run.outputs.extend_from_slice(format!("work {:?}\n", job.id).as_bytes());
                self.server.handle_work(self.now, job.run());
            }
            let Ok(committed) = turn.commit(&mut self.store);
            let out = &mut self.run.outputs;
            for change in committed.changes() {
                let bytes = postcard::to_stdvec(change).expect("encode");
                out.extend_from_slice(&bytes);
                self.run.changes.push(bytes);
            }
            let at = committed.timeout().map(|t| t.saturating_duration_since(self.now.instant));
            out.extend_from_slice(format!("timeout {at:?}\n").as_bytes());
            for action in committed {
                match action {
                    Action::Transmit { session, bytes } => {
                        out.extend_from_slice(format!("to {session}: ").as_bytes());
                        out.extend_from_slice(&bytes);
                        if let Some(d) = self.decoders.get_mut(&session) {
                            d.push(&bytes);
                            while let Ok(Some(frame)) = d.next_frame() {
                                if let Ok(Message::Response(r)) = Message::decode(&frame, &Limits::DEFAULT) {
                                    self.responses.insert((session, r.request_id), r);
                                }
                            }
                        }
                    }
                    Action::Close { session, code, reason } => {
                        out.extend_from_slice(format!("close {session} {code} {reason}\n").as_bytes());
                    }
                    Action::Log(e) => out.extend_from_slice(format!("{e:?}\n").as_bytes()),
                }
            }
            if quiet {
                return;
            }
        }
    }

    fn login(&mut self, name: &str) -> (SessionId, Tokens) {
        let s = self.connect();
        self.send(s, 1, Login { username: name.into(), password: "correct horse".into() }, "");
        let r = self.send(s, 2, Passphrase { passphrase: "apple river stone".into() }, "");
        match r.map(|r| r.body) {
            Some(ResponseBody::Tokens(t)) => (s, t),
            other => panic!("login of {name}: {other:?}"),
        }
    }
}

/// Registrations, logins, rooms, private messages to online and offline users, retention
/// sweeps, refreshes and logouts, across many users and families.
fn run(seed: [u8; 32], origin: Instant) -> Run {
    let mut d = Driver::new(seed, origin);
    let names: Vec<String> = (0..USERS).map(|i| format!("user{:02}", (i * 7) % USERS)).collect();
    for name in &names {
        let s = d.connect();
        let register = Register {
            username: name.clone(),
            password: "correct horse".into(),
            passphrase: "apple river stone".into(),
            identity_key: Bytes::from(format!("key of {name}")),
        };
        d.send(s, 1, register, "");
    }
    let mut online: Vec<(String, SessionId, Tokens)> = Vec::new();
    for name in &names {
        let (s, t) = d.login(name);
        online.push((name.clone(), s, t));
    }
    let verifier = Bytes::from_static(b"0123456789abcdef");
    for (i, (_, s, t)) in online.clone().iter().enumerate() {
        let room = format!("room{}", i % 3);
        let create =
            CreateRoom { room: room.clone(), verifier: verifier.clone(), descriptor: Bytes::from_static(b"d") };
        d.send(*s, 10, create, &t.access_token);
        d.send(*s, 11, JoinRoom { room: room.clone(), verifier: verifier.clone() }, &t.access_token);
        d.send(*s, 12, SendRoom { room, sealed: Bytes::from(format!("hello from {i}")) }, &t.access_token);
    }
    // Every user asks the next two; the asked accept.
    for (i, (_, s, t)) in online.clone().iter().enumerate() {
        for k in 1..=2 {
            let peer = online[(i + k) % USERS].0.clone();
            d.send(*s, 20 + k as u32, RequestMp { peer, handshake: Bytes::from_static(b"hs") }, &t.access_token);
        }
    }
    for (i, (_, s, t)) in online.clone().iter().enumerate() {
        for k in 1..=2 {
            let peer = online[(i + USERS - k) % USERS].0.clone();
            d.send(*s, 30 + k as u32, AcceptMp { peer, handshake: Bytes::from_static(b"hs") }, &t.access_token);
        }
    }
    // Half the users leave; the others write to them, then to everyone.
    for (_, s, t) in online.iter().skip(USERS / 2) {
        d.send(*s, 40, Logout {}, &t.access_token);
    }
    for (i, (_, s, t)) in online.iter().take(USERS / 2).enumerate() {
        for k in 1..=2 {
            let peer = online[(i + k) % USERS].0.clone();
            let sealed = Bytes::from(format!("sealed {i}->{k}"));
            d.send(*s, 50 + k as u32, SendMp { peer, sealed }, &t.access_token);
        }
    }
    d.advance(Duration::from_secs(300));
    for (i, (_, s, t)) in online.iter().take(USERS / 2).enumerate() {
        d.send(*s, 60, Refresh { refresh_token: t.refresh_token.clone() }, "");
        let peer = online[(i + 1) % USERS].0.clone();
        d.send(*s, 61, DeliveryAck { peer, seq: 1 }, &t.access_token);
        d.send(*s, 62, CloseMp { peer: online[(i + 2) % USERS].0.clone() }, &t.access_token);
    }
    // Past the retention: undelivered messages are dropped, their senders told.
    for _ in 0..12 {
        d.advance(Duration::from_secs(60));
    }
    for name in names.iter().skip(USERS / 2) {
        d.login(name);
    }
    // Past the access tokens' life and their grace: the purge.
    for _ in 0..30 {
        d.advance(Duration::from_secs(3600));
    }
    d.server.shutdown(d.now);
    d.drain();
    assert_eq!(d.store.state(), d.server.state(), "the store holds what the server has");
    let mut run = d.run;
    run.state = postcard::to_stdvec(d.store.state()).expect("encode");
    run
}

#[test]
fn the_same_seed_and_inputs_give_the_same_bytes_and_the_same_persisted_state() {
    let origin = Instant::now();
    let (a, b) = (run([3; 32], origin), run([3; 32], origin));
    assert!(a.changes.len() > 200, "a real workload: {} changes", a.changes.len());
    assert_eq!(a.changes, b.changes, "the changes differ");
    assert!(a.state == b.state, "the persisted states differ");
    assert!(a.outputs == b.outputs, "the outputs differ");
    // And the seed matters (tokens, salts, secrets).
    assert_ne!(run([4; 32], origin).state, a.state);
}
