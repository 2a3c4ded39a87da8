//! The server machine alone (no I/O, no crypto): how many MP messages and
//! room messages it routes per second on one core, and whether 100 logins
//! waiting on their password hashes slow routing down.
//!
//! `cargo bench -p confab-proto --bench server`

#![allow(missing_docs)]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use confab_proto::server::{Action, HashParams};
use confab_proto::wire::*;
use confab_proto::*;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

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

fn bench_mp(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_mp_64B");
    const BATCH: u32 = 1000;
    group.throughput(Throughput::Elements(u64::from(BATCH)));
    for in_flight in [0usize, 100] {
        let mut b = setup(2);
        open_pair(&mut b);
        // Logins waiting on their password hash: the jobs are handed out and never completed.
        for _ in 0..in_flight {
            let s = b.server.open_session(b.now).unwrap();
            let login = Login { username: "user0000".into(), password: "correct horse".into() };
            b.server.handle_input(b.now, s, &request(1, login, b""));
        }
        drain(&mut b.server, b.now, false);
        let (a, ta) = b.sessions[0].clone();
        let (c_id, tc) = b.sessions[1].clone();
        let sealed = Bytes::from(vec![0xAB; 64]);
        let mut next_id = 1000u32;
        let cell = std::cell::RefCell::new(&mut b);
        group.bench_function(format!("logins_in_flight_{in_flight}"), |bencher| {
            bencher.iter_custom(|iters| {
                timed(
                    iters,
                    || send_mp_batch(&ta, &sealed, &mut next_id, BATCH),
                    |frames| {
                        let b = &mut **cell.borrow_mut();
                        b.server.handle_input(b.now, a, &frames);
                        drain(&mut b.server, b.now, false);
                    },
                    || {
                        // Acknowledge everything so the queue stays small between batches.
                        let b = &mut **cell.borrow_mut();
                        let last = b.server.state().next_seq("user0000", "user0001") - 1;
                        let ack = DeliveryAck { peer: "user0000".into(), seq: last };
                        b.server.handle_input(b.now, c_id, &request(7, ack, tc.as_bytes()));
                        drain(&mut b.server, b.now, false);
                    },
                )
            });
        });
    }
    group.finish();
}

fn bench_room(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_room_64B");
    const BATCH: u32 = 100;
    group.throughput(Throughput::Elements(u64::from(BATCH)));
    for members in [10usize, 100] {
        let mut b = setup(members);
        let verifier = Bytes::from(vec![7u8; 32]);
        let (owner, to) = b.sessions[0].clone();
        let create =
            CreateRoom { room: "bench".into(), verifier: verifier.clone(), descriptor: Bytes::from_static(b"bench") };
        b.server.handle_input(b.now, owner, &request(5, create, to.as_bytes()));
        for (s, t) in b.sessions[1..].iter().cloned() {
            let join = JoinRoom { room: "bench".into(), verifier: verifier.clone() };
            b.server.handle_input(b.now, s, &request(5, join, t.as_bytes()));
        }
        drain(&mut b.server, b.now, false);
        let sealed = Bytes::from(vec![0xCD; 64]);
        let mut next_id = 1000u32;
        group.bench_function(format!("members_{members}"), |bencher| {
            bencher.iter_custom(|iters| {
                timed(
                    iters,
                    || {
                        let mut frames = BytesMut::new();
                        for _ in 0..BATCH {
                            next_id += 1;
                            let body = SendRoom { room: "bench".into(), sealed: sealed.clone() };
                            let m =
                                Message::Request(Request { request_id: next_id, timestamp_ms: 0, body: body.into() });
                            m.encode(to.as_bytes(), &mut frames);
                        }
                        frames.freeze()
                    },
                    |frames| {
                        b.server.handle_input(b.now, owner, &frames);
                        drain(&mut b.server, b.now, false);
                    },
                    || {},
                )
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench_mp, bench_room
}
criterion_main!(benches);
