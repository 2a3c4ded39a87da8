//! The server machine alone (no I/O, no crypto): how many MP messages and
//! room messages it routes per second on one core, and whether 100 logins
//! waiting on their password hashes slow routing down.
//!
//! `cargo bench -p confab-proto --bench server`
//!
//! Instructions per message (which machine load does not move): run the
//! bench binary with `CONFAB_ROUTE_COUNT=mp|room10|room100` and
//! `CONFAB_ROUTE_BATCHES=N` under callgrind, collecting only inside
//! `route_batch` (`--toggle-collect='*route_batch*'`): it routes N batches
//! and exits (see docs/BENCHMARKS.md).

#![allow(missing_docs)]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use confab_proto::server::{Action, HashParams};
use confab_proto::wire::*;
use confab_proto::*;
use criterion::{Criterion, Throughput, criterion_group};

struct Bench {
    server: Server,
    now: Now,
    sessions: Vec<(SessionId, String)>,
}

/// Drains the server until a turn is empty (committing nothing anywhere:
/// the routing cost alone); returns the transmits and their count.
fn drain(server: &mut Server, now: Now, run_jobs: bool) -> (usize, Vec<(SessionId, Bytes)>) {
    let mut out = Vec::new();
    loop {
        let mut turn = server.drain();
        let quiet = turn.is_empty();
        for job in turn.take_jobs() {
            if run_jobs {
                let r = job.run();
                server.handle_work(now, r);
            }
        }
        let Ok(committed) = turn.commit(&mut Ephemeral);
        for action in committed {
            if let Action::Transmit { session, bytes } = action {
                out.push((session, bytes));
            }
        }
        if quiet {
            return (out.len(), out);
        }
    }
}

fn request(request_id: u32, body: impl Into<RequestBody>, auth: &[u8]) -> Bytes {
    Message::Request(Request { request_id, timestamp_ms: 0, body: body.into() }).to_bytes(auth)
}

fn token_of(out: &[(SessionId, Bytes)], session: SessionId) -> Option<String> {
    let limits = Limits::default();
    for (s, bytes) in out {
        if *s != session {
            continue;
        }
        let mut d = FrameDecoder::new(limits);
        d.push(bytes);
        while let Ok(Some(f)) = d.next_frame() {
            if let Ok(Message::Response(Response { body: ResponseBody::Tokens(t), .. })) = Message::decode(&f, &limits)
            {
                return Some(t.access_token);
            }
        }
    }
    None
}

/// `users` logged-in users; `room` members joined to room "bench".
fn setup(users: usize) -> Bench {
    let config = ServerConfig {
        hash_params: HashParams::INSECURE_FAST,
        queue_per_recipient: usize::MAX,
        queue_total: usize::MAX,
        max_sessions: 100_000,
        max_pending_jobs: 100_000,
        ..ServerConfig::default()
    };
    let now = Now::new(Instant::now(), 1_795_305_600_000);
    let mut server = Server::new(config, [1; 32], now).expect("a valid configuration");
    let mut sessions = Vec::new();
    for i in 0..users {
        let name = format!("user{i:04}");
        let s = server.open_session(now).unwrap();
        let reg = Register {
            username: name.clone(),
            password: "correct horse".into(),
            passphrase: "apple river stone".into(),
            identity_key: Bytes::from_static(b"key"),
        };
        server.handle_input(now, s, &request(1, reg, b""));
        server.handle_input(
            now,
            s,
            &request(2, Login { username: name.clone(), password: "correct horse".into() }, b""),
        );
        server.handle_input(now, s, &request(3, Passphrase { passphrase: "apple river stone".into() }, b""));
        let (_, out) = drain(&mut server, now, true);
        // Jobs complete one at a time: keep draining until the tokens arrive.
        let mut all = out;
        let mut token = token_of(&all, s);
        while token.is_none() {
            let (_, more) = drain(&mut server, now, true);
            all.extend(more);
            token = token_of(&all, s);
        }
        sessions.push((s, token.unwrap()));
    }
    Bench { server, now, sessions }
}

fn open_pair(b: &mut Bench) {
    let (a, ta) = b.sessions[0].clone();
    let (c, tc) = b.sessions[1].clone();
    let hs = Bytes::from_static(b"hs");
    b.server.handle_input(
        b.now,
        a,
        &request(10, RequestMp { peer: "user0001".into(), handshake: hs.clone() }, ta.as_bytes()),
    );
    b.server.handle_input(b.now, c, &request(10, AcceptMp { peer: "user0000".into(), handshake: hs }, tc.as_bytes()));
    drain(&mut b.server, b.now, true);
}

/// Feeds one batch of frames to `session` and drains the server: the routing work measured.
#[inline(never)]
fn route_batch(server: &mut Server, now: Now, session: SessionId, frames: &Bytes) {
    server.handle_input(now, session, frames);
    drain(server, now, false);
}

/// Times `route` over `iters` batches; `prepare` builds each batch and `settle` runs after it, untimed.
fn timed<T>(
    iters: u64,
    mut prepare: impl FnMut() -> T,
    mut route: impl FnMut(T),
    mut settle: impl FnMut(),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let batch = prepare();
        let t = Instant::now();
        route(batch);
        total += t.elapsed();
        settle();
    }
    total
}

fn send_mp_batch(token: &str, sealed: &Bytes, next_id: &mut u32, n: u32) -> Bytes {
    let mut frames = BytesMut::new();
    for _ in 0..n {
        *next_id += 1;
        let m = Message::Request(Request {
            request_id: *next_id,
            timestamp_ms: 0,
            body: SendMp { peer: "user0001".into(), sealed: sealed.clone() }.into(),
        });
        m.encode(token.as_bytes(), &mut frames);
    }
    frames.freeze()
}

const MP_BATCH: u32 = 1000;
const ROOM_BATCH: u32 = 100;

/// One sender and one online recipient with an open conversation, and `in_flight` logins
/// waiting on their password hashes (handed out and never completed).
struct Mp {
    b: Bench,
    sender: (SessionId, String),
    recipient: (SessionId, String),
    sealed: Bytes,
    next_id: u32,
}

impl Mp {
    fn new(in_flight: usize) -> Mp {
        let mut b = setup(2);
        open_pair(&mut b);
        for _ in 0..in_flight {
            let s = b.server.open_session(b.now).unwrap();
            let login = Login { username: "user0000".into(), password: "correct horse".into() };
            b.server.handle_input(b.now, s, &request(1, login, b""));
        }
        drain(&mut b.server, b.now, false);
        let (sender, recipient) = (b.sessions[0].clone(), b.sessions[1].clone());
        Mp { b, sender, recipient, sealed: Bytes::from(vec![0xAB; 64]), next_id: 1000 }
    }

    fn batch(&mut self) -> Bytes {
        send_mp_batch(&self.sender.1, &self.sealed, &mut self.next_id, MP_BATCH)
    }

    fn route(&mut self, frames: &Bytes) {
        route_batch(&mut self.b.server, self.b.now, self.sender.0, frames);
    }

    /// Acknowledges everything so the queue stays small between batches.
    fn settle(&mut self) {
        let b = &mut self.b;
        let last = b.server.state().next_seq("user0000", "user0001") - 1;
        let ack = DeliveryAck { peer: "user0000".into(), seq: last };
        b.server.handle_input(b.now, self.recipient.0, &request(7, ack, self.recipient.1.as_bytes()));
        drain(&mut b.server, b.now, false);
    }
}

/// `members` online members of room "bench"; the owner sends.
struct Room {
    b: Bench,
    owner: (SessionId, String),
    sealed: Bytes,
    next_id: u32,
}

impl Room {
    fn new(members: usize) -> Room {
        let mut b = setup(members);
        let verifier = Bytes::from(vec![7u8; 32]);
        let owner = b.sessions[0].clone();
        let create =
            CreateRoom { room: "bench".into(), verifier: verifier.clone(), descriptor: Bytes::from_static(b"bench") };
        b.server.handle_input(b.now, owner.0, &request(5, create, owner.1.as_bytes()));
        for (s, t) in b.sessions[1..].iter().cloned() {
            let join = JoinRoom { room: "bench".into(), verifier: verifier.clone() };
            b.server.handle_input(b.now, s, &request(5, join, t.as_bytes()));
        }
        drain(&mut b.server, b.now, false);
        Room { b, owner, sealed: Bytes::from(vec![0xCD; 64]), next_id: 1000 }
    }

    fn batch(&mut self) -> Bytes {
        let mut frames = BytesMut::new();
        for _ in 0..ROOM_BATCH {
            self.next_id += 1;
            let body = SendRoom { room: "bench".into(), sealed: self.sealed.clone() };
            let m = Message::Request(Request { request_id: self.next_id, timestamp_ms: 0, body: body.into() });
            m.encode(self.owner.1.as_bytes(), &mut frames);
        }
        frames.freeze()
    }

    fn route(&mut self, frames: &Bytes) {
        route_batch(&mut self.b.server, self.b.now, self.owner.0, frames);
    }
}

fn bench_mp(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_mp_64B");
    group.throughput(Throughput::Elements(u64::from(MP_BATCH)));
    for in_flight in [0usize, 100] {
        let mp = std::cell::RefCell::new(Mp::new(in_flight));
        group.bench_function(format!("logins_in_flight_{in_flight}"), |bencher| {
            bencher.iter_custom(|iters| {
                timed(
                    iters,
                    || mp.borrow_mut().batch(),
                    |frames| mp.borrow_mut().route(&frames),
                    || mp.borrow_mut().settle(),
                )
            });
        });
    }
    group.finish();
}

fn bench_room(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_room_64B");
    group.throughput(Throughput::Elements(u64::from(ROOM_BATCH)));
    for members in [10usize, 100] {
        let room = std::cell::RefCell::new(Room::new(members));
        group.bench_function(format!("members_{members}"), |bencher| {
            bencher.iter_custom(|iters| {
                timed(iters, || room.borrow_mut().batch(), |frames| room.borrow_mut().route(&frames), || {})
            });
        });
    }
    group.finish();
}

/// `CONFAB_ROUTE_COUNT=mp|room10|room100`, `CONFAB_ROUTE_BATCHES=N`: routes N batches and
/// exits, for counting instructions inside `route_batch` (callgrind's `--toggle-collect`).
fn count(which: &str) {
    let batches: u32 = std::env::var("CONFAB_ROUTE_BATCHES").ok().and_then(|n| n.parse().ok()).unwrap_or(20);
    let messages = match which {
        "mp" => {
            let mut mp = Mp::new(0);
            for _ in 0..batches {
                let frames = mp.batch();
                mp.route(&frames);
                mp.settle();
            }
            batches * MP_BATCH
        }
        "room10" | "room100" => {
            let mut room = Room::new(if which == "room10" { 10 } else { 100 });
            for _ in 0..batches {
                let frames = room.batch();
                room.route(&frames);
            }
            batches * ROOM_BATCH
        }
        other => panic!("CONFAB_ROUTE_COUNT={other}: expected mp, room10 or room100"),
    };
    println!("routed {messages} messages in {batches} batches ({which})");
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench_mp, bench_room
}

fn main() {
    if let Ok(which) = std::env::var("CONFAB_ROUTE_COUNT") {
        return count(&which);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
