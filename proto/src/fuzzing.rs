//! Fuzz bodies, shared by the cargo-fuzz targets (`fuzz/`) and by the stable
//! test that replays the committed corpus. Built with `cfg(fuzzing)` (cargo
//! fuzz) or the `fuzzing` feature.
//!
//! Each body panics only on a real bug: a broken round trip or a decoder that
//! depends on chunking.

mod switchboard;

use bytes::{Bytes, BytesMut};

pub use switchboard::switchboard;

use crate::wire::{Frame, FrameDecoder, Limits, Message};

/// Small limits so the fuzzer reaches every limit branch quickly.
fn fuzz_limits() -> Limits {
    Limits { max_auth: 256, max_data: 64 * 1024, max_name: 64, max_text: 1024, max_items: 64 }
}

/// Decodes `data` as a frame stream three ways (all at once, one byte at a
/// time, and in chunks whose sizes come from the first byte); all must give
/// the same frames and the same error. Every frame must re-encode to exactly
/// the bytes it came from, and every decodable message must re-encode to
/// exactly its frame.
pub fn frame_decode(data: &[u8]) {
    let limits = fuzz_limits();
    let whole = decode_stream(std::iter::once(data), &limits);
    let bytewise = decode_stream(data.chunks(1), &limits);
    assert_eq!(whole, bytewise, "one-byte chunking changed the result");
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let chunked = decode_stream(data.chunks(step), &limits);
    assert_eq!(whole, chunked, "chunking by {step} changed the result");

    let (frames, _) = whole;
    let mut offset = 0;
    for frame in &frames {
        let bytes = frame.to_bytes();
        assert_eq!(&bytes[..], &data[offset..offset + bytes.len()], "frame did not re-encode identically");
        offset += bytes.len();
        if let Ok(message) = Message::decode(frame, &limits) {
            assert_eq!(message.to_bytes(&frame.auth), bytes, "message did not re-encode identically");
        }
    }
}

/// Decodes `data` as the data part of every frame type; whatever decodes
/// must re-encode to the same bytes and decode again to the same value.
pub fn message_decode(data: &[u8]) {
    let limits = fuzz_limits();
    // The frame layer refuses a data part above the limit before any message
    // decoding; such inputs cannot occur here.
    if data.len() as u64 > limits.max_data {
        return;
    }
    let data = Bytes::copy_from_slice(data);
    for frame_type in crate::wire::FrameType::ALL {
        let frame = Frame { frame_type, auth: Bytes::new(), data: data.clone() };
        if let Ok(message) = Message::decode(&frame, &limits) {
            let mut out = BytesMut::new();
            message.encode(&[], &mut out);
            let again = Frame::parse(&out.freeze(), &limits).expect("re-encoded frame parses").expect("whole frame");
            assert_eq!(again.0.data, data, "message did not re-encode identically");
            assert_eq!(Message::decode(&again.0, &limits).as_ref(), Ok(&message));
        }
    }
    // The same bytes as mail between partitions: an item or an error, and an
    // item encodes back to the same bytes.
    if let Ok(item) = crate::server::MailItem::decode(&data) {
        assert_eq!(item.encode(), data, "mail item did not re-encode identically");
    }
}

type StreamResult = (Vec<Frame>, Option<crate::wire::DecodeError>);

fn decode_stream<'a>(chunks: impl Iterator<Item = &'a [u8]>, limits: &Limits) -> StreamResult {
    let mut decoder = FrameDecoder::new(*limits);
    let mut frames = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(err) => return (frames, Some(err)),
            }
        }
    }
    (frames, None)
}

mod server_session {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    use bytes::Bytes;

    use crate::server::{Action, HashParams, State};
    use crate::wire::{
        AcceptMp, Limits, Login, Message, Passphrase, Register, Request, RequestBody, RequestMp, Response, ResponseBody,
    };
    use crate::{Ephemeral, Now, Server, ServerConfig, SessionId};

    /// Turns one drain may take before the fuzz body calls it a livelock.
    const MAX_TURNS: usize = 10_000;

    pub(super) fn config() -> ServerConfig {
        ServerConfig {
            hash_params: HashParams::INSECURE_FAST,
            limits: Limits { max_data: 64 * 1024, ..Limits::DEFAULT },
            queue_per_recipient: 64,
            queue_total: 256,
            room_history: 4,
            dedup_window: 8,
            max_deferred_bytes: 64 * 1024,
            max_session_backlog: 256 * 1024,
            // The token features on, so that their requests reach their handlers.
            codes: Some(crate::server::CodeConfig { max_in_flight: 16, ..Default::default() }),
            phantom: Some(crate::server::PhantomConfig::new("fuzz-service-credential", "confab://fuzz", "backends")),
            oidc: Some(crate::server::OidcConfig::new("https://idp.fuzz", "confab", r#"{"keys":[]}"#)),
            ..ServerConfig::default()
        }
    }

    pub(super) struct Fixture {
        pub(super) state: State,
        pub(super) start: Instant,
        /// Access tokens of alice and bob, who have an open conversation.
        pub(super) tokens: [String; 2],
    }

    fn request(id: u32, body: impl Into<RequestBody>, auth: &str) -> Bytes {
        Message::Request(Request { request_id: id, timestamp_ms: 0, body: body.into() }).to_bytes(auth.as_bytes())
    }

    /// Drains the server until a turn is empty, running jobs inline; returns the access tokens seen per session.
    pub(super) fn drain(server: &mut Server, now: Now, tokens: &mut Vec<(SessionId, String)>) {
        for _ in 0..MAX_TURNS {
            let mut turn = server.drain();
            let quiet = turn.is_empty();
            for job in turn.take_jobs() {
                let result = job.run();
                server.handle_work(now, result);
            }
            // Nothing here outlives the process: the fuzz body checks `server.state()` instead.
            let Ok(committed) = turn.commit(&mut Ephemeral);
            for action in committed {
                let Action::Transmit { session, bytes } = action else { continue };
                let mut d = crate::wire::FrameDecoder::new(server.config().limits);
                d.push(&bytes);
                while let Ok(Some(frame)) = d.next_frame() {
                    if let Ok(Message::Response(Response { body: ResponseBody::Tokens(t), .. })) =
                        Message::decode(&frame, &server.config().limits)
                    {
                        tokens.push((session, t.access_token));
                    }
                }
            }
            if quiet {
                return;
            }
        }
        panic!("the server was still busy after {MAX_TURNS} turns of one drain");
    }

    /// Two registered users with an open conversation, built once per process.
    pub(super) fn fixture() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let start = Instant::now();
            let now = Now::new(start, 1_795_305_600_000);
            let mut server = Server::new(config(), [3; 32], now).expect("a valid configuration");
            let mut seen = Vec::new();
            let mut ids = Vec::new();
            for name in ["alice", "bob"] {
                let s = server.open_session(now).expect("session");
                let reg = Register {
                    username: name.into(),
                    password: "correct horse".into(),
                    passphrase: "apple river stone".into(),
                    identity_key: Bytes::from_static(b"key"),
                };
                server.handle_input(now, s, &request(1, reg, ""));
                let login = Login { username: name.into(), password: "correct horse".into() };
                server.handle_input(now, s, &request(2, login, ""));
                server.handle_input(now, s, &request(3, Passphrase { passphrase: "apple river stone".into() }, ""));
                for _ in 0..8 {
                    drain(&mut server, now, &mut seen);
                }
                ids.push(s);
            }
            let token = |s: SessionId| seen.iter().find(|(id, _)| *id == s).expect("logged in").1.clone();
            let tokens = [token(ids[0]), token(ids[1])];
            let hs = Bytes::from_static(b"hs");
            server.handle_input(
                now,
                ids[0],
                &request(4, RequestMp { peer: "bob".into(), handshake: hs.clone() }, &tokens[0]),
            );
            server.handle_input(now, ids[1], &request(4, AcceptMp { peer: "alice".into(), handshake: hs }, &tokens[1]));
            drain(&mut server, now, &mut seen);
            Fixture { state: server.state().clone(), start, tokens }
        })
    }

    pub(super) fn check_invariants(server: &Server) {
        let state = server.state();
        let lanes = state.lanes();
        let queued: usize = lanes.lanes().map(|(_, _, l)| l.items.len()).sum();
        assert_eq!(queued, lanes.queued_total(), "queued_total out of step with the lanes");
        let per_recipient: usize = lanes.queued().map(|(_, n)| n).sum();
        assert_eq!(per_recipient, lanes.queued_total(), "per-recipient counts out of step");
        for (_, to, lane) in lanes.lanes() {
            assert!(lane.items.iter().zip(lane.items.iter().skip(1)).all(|(a, b)| a.seq < b.seq), "lane out of order");
            assert!(lane.items.back().is_none_or(|i| i.seq < lane.next_seq), "seq beyond next_seq");
            assert!(lanes.queued_for(to) >= lane.items.len(), "recipient count below its lane");
        }
        let budget = server.config().room_history_budget();
        for (_, room) in state.rooms().iter() {
            assert!(room.history.len() <= state.rooms().history_cap(), "room history above its cap");
            let bytes: usize = room.history.iter().map(|e| 2 + e.from.len() + 8 + 8 + 4 + e.sealed.len()).sum();
            assert!(bytes <= budget, "room history above its byte budget");
        }
    }

    /// Time in the fuzz body: 1 ms steps up to 255 s at a time.
    pub(super) fn step(now: Now, ms: u32) -> Now {
        now.advance(Duration::from_millis(u64::from(ms)))
    }
}

/// Drives a server whose two sessions (alice and bob, with an open private
/// conversation) are logged in, with arbitrary bytes and time steps, like
/// str0m's receive target. The input is a sequence of operations:
///
/// - `0 ms_hi ms_lo`: advance time and fire timers;
/// - `1 len data..`: raw bytes on alice's connection (any chunking);
/// - `2 len data..`: raw bytes on bob's connection;
/// - `3 len data..`: a request frame from alice carrying her access token, whose data part is `data`;
/// - `4 k`: the transport of session `k % 3` closes (the third session is an anonymous one);
/// - `5 hi lo`: alice's transport reports `(hi,lo) * 1024` unsent bytes;
/// - anything else: raw bytes on the anonymous connection.
///
/// Every drain is bounded; the durable state's invariants are checked after each operation.
pub fn server_session(data: &[u8]) {
    use server_session::*;
    let fx = fixture();
    let mut now = crate::Now::new(fx.start, 1_795_305_600_000);
    let mut server = crate::Server::restore(config(), [9; 32], fx.state.clone(), now).expect("a valid configuration");
    let alice = server.open_session(now).expect("session");
    let bob = server.open_session(now).expect("session");
    let anon = server.open_session(now).expect("session");
    let mut sink = Vec::new();
    // Bind the sessions with their access tokens (no password hashing needed).
    for (s, token) in [(alice, &fx.tokens[0]), (bob, &fx.tokens[1])] {
        let ping = crate::wire::Message::Request(crate::wire::Request {
            request_id: 1,
            timestamp_ms: 0,
            body: crate::wire::FetchKey { username: "alice".into() }.into(),
        });
        server.handle_input(now, s, &ping.to_bytes(token.as_bytes()));
    }
    drain(&mut server, now, &mut sink);
    let sessions = [alice, bob, anon];
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        // A length byte, then at most that many bytes (fewer if the input ends).
        let take = |tail: &[u8]| -> (usize, usize) {
            let len = usize::from(tail.first().copied().unwrap_or(0));
            let skip = tail.len().min(1);
            (skip, len.min(tail.len() - skip))
        };
        match op {
            0 => {
                let ms =
                    u32::from(tail.first().copied().unwrap_or(0)) << 8 | u32::from(tail.get(1).copied().unwrap_or(0));
                now = step(now, ms);
                server.handle_timeout(now);
                rest = tail.get(2..).unwrap_or(&[]);
            }
            1..=3 => {
                let (skip, len) = take(tail);
                let chunk = &tail[skip..skip + len];
                if op == 3 {
                    let frame = crate::wire::Frame {
                        frame_type: crate::wire::FrameType::Request,
                        auth: Bytes::copy_from_slice(fx.tokens[0].as_bytes()),
                        data: Bytes::copy_from_slice(chunk),
                    };
                    server.handle_input(now, alice, &frame.to_bytes());
                } else {
                    server.handle_input(now, sessions[usize::from(op) - 1], chunk);
                }
                rest = &tail[skip + len..];
            }
            4 => {
                let k = usize::from(tail.first().copied().unwrap_or(0)) % 3;
                server.close_session(now, sessions[k]);
                rest = tail.get(1..).unwrap_or(&[]);
            }
            5 => {
                let kib = usize::from(tail.first().copied().unwrap_or(0)) << 8
                    | usize::from(tail.get(1).copied().unwrap_or(0));
                server.handle_backlog(now, alice, kib * 1024);
                rest = tail.get(2..).unwrap_or(&[]);
            }
            _ => {
                let (skip, len) = take(tail);
                server.handle_input(now, anon, &tail[skip..skip + len]);
                rest = &tail[skip + len..];
            }
        }
        drain(&mut server, now, &mut sink);
        check_invariants(&server);
    }
}

/// Drives one [`Client`](crate::Client) with an arbitrary sequence of
/// commands and server input. Operations:
///
/// - `0 ms_hi ms_lo`: advance time and fire timers;
/// - `1 k len data..`: command number `k` (register, login, send_mp, ...), with `data` as its blob and names taken from a fixed table;
/// - `2 len data..`: raw server bytes;
/// - `3 k`: example frame `k` (every message of the catalog) as server input, so valid answers are easy to reach;
/// - `4`: the transport connects; `5`: it drops; `6 len data..`: resume with `data` as a refresh token.
///
/// Every drain is bounded, commits into a store that checks that nothing
/// persisted changed without a checkpoint, and every byte the client
/// transmits must decode as a stream of valid request, ping, pong or close
/// frames.
pub fn client_ops(data: &[u8]) {
    use std::time::{Duration, Instant};

    use crate::wire::{FrameDecoder, FrameType, Message};
    use crate::{Client, ClientConfig, ClientOutput, Now};

    const NAMES: [&str; 4] = ["alice", "bob", "room11", "a-very-long-name-for-the-limits-of-the-codec-to-be-tested-x"];
    let examples: Vec<Bytes> = crate::examples::all().iter().map(|e| e.to_bytes()).collect();
    let limits = Limits { max_data: 64 * 1024, ..Limits::DEFAULT };
    let mut now = Now::new(Instant::now(), 1_795_305_600_000);
    let mut client = Client::new(ClientConfig { limits, ..ClientConfig::default() }, now);
    // Exchanges with `refresh_keyed`, whose key and attempts the checked store watches.
    client.set_entropy([7; 32]);
    let mut store = crate::machine::checked::Checked::default();
    let mut wire = FrameDecoder::new(limits);
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        let byte = |i: usize| tail.get(i).copied().unwrap_or(0);
        let len = usize::from(byte(0)).min(tail.len().saturating_sub(1));
        match op % 7 {
            0 => {
                now = now.advance(Duration::from_millis(u64::from(byte(0)) << 8 | u64::from(byte(1))));
                client.handle_timeout(now);
                rest = tail.get(2..).unwrap_or(&[]);
            }
            1 => {
                let k = byte(0);
                let body = tail.get(2..).unwrap_or(&[]);
                let len = usize::from(byte(1)).min(body.len());
                let blob = Bytes::copy_from_slice(&body[..len]);
                let name = NAMES[usize::from(k >> 4) % NAMES.len()];
                let text = std::str::from_utf8(&blob).unwrap_or("apple river stone");
                let _ = match k % 16 {
                    0 => client.register(now, name, text, text, blob.clone()),
                    1 => client.login(now, name, text, text),
                    2 => client.logout(now),
                    3 => client.create_room(now, name, blob.clone(), blob.clone()),
                    4 => client.join_room(now, name, blob.clone()),
                    5 => client.send_room(now, name, blob.clone()),
                    6 => client.leave_room(now, name),
                    7 => client.room_history(now, name),
                    8 => client.delete_room(now, name),
                    9 => client.request_mp(now, name, blob.clone()),
                    10 => client.accept_mp(now, name, blob.clone()),
                    11 => client.send_mp(now, name, blob.clone()),
                    12 => client.close_mp(now, name),
                    13 => client.fetch_key(now, name),
                    14 => client.set_identity_key(now, blob.clone()),
                    _ => client.send_mp(now, text, blob.clone()),
                };
                rest = &body[len..];
            }
            2 => {
                let body = tail.get(1..).unwrap_or(&[]);
                client.handle_input(now, &body[..len]);
                rest = &body[len..];
            }
            3 => {
                client.handle_input(now, &examples[usize::from(byte(0)) % examples.len()]);
                rest = tail.get(1..).unwrap_or(&[]);
            }
            4 => {
                wire = FrameDecoder::new(limits);
                client.connected(now);
                rest = tail;
            }
            5 => {
                client.disconnected(now);
                rest = tail;
            }
            _ => {
                let body = tail.get(1..).unwrap_or(&[]);
                client.resume(String::from_utf8_lossy(&body[..len]).into_owned());
                rest = &body[len..];
            }
        }
        // Committed into a store that checks nothing changed without a checkpoint.
        let outputs = store.turn(&mut client);
        assert!(outputs.len() <= 10_000, "the client produced {} outputs in one drain", outputs.len());
        for output in outputs {
            match output {
                ClientOutput::Transmit(bytes) => {
                    wire.push(&bytes);
                    while let Some(frame) = wire.next_frame().expect("the client sent a broken stream") {
                        assert!(
                            matches!(
                                frame.frame_type,
                                FrameType::Request | FrameType::Ping | FrameType::Pong | FrameType::Close
                            ),
                            "the client sent a {:?} frame",
                            frame.frame_type
                        );
                        Message::decode(&frame, &limits).expect("the client sent an undecodable frame");
                    }
                }
                ClientOutput::Event(_) | ClientOutput::Close { .. } | ClientOutput::Timeout(_) => {}
            }
        }
    }
}

/// Token and key parsing on untrusted input: the first byte picks the
/// parser, the rest is its input.
///
/// - `0`: a JWK Set document (`JwkSet::parse`);
/// - `1`: a compact JWS checked against a fixed provider key set with
///   `jwt::verify` (fixture tokens from an independent implementation make
///   good seeds);
/// - `2`: a third-party code checked with `jwt::verify_code` (single use:
///   the same code twice must never pass twice).
///
/// Nothing may panic; a token that verifies must carry the fixture issuer.
pub fn jwt(data: &[u8]) {
    use std::sync::OnceLock;

    use crate::jwt::{JwkSet, UsedCodes, Validation, verify, verify_code};

    const FIXTURES: &str = include_str!("jwt/testdata/pyjwt_fixtures.json");
    static KEYS: OnceLock<(JwkSet, String, u64)> = OnceLock::new();
    let (keys, issuer, iat) = KEYS.get_or_init(|| {
        let doc: serde_json::Value = serde_json::from_str(FIXTURES).expect("fixture JSON");
        let jwks = doc["jwks"].to_string();
        let keys = JwkSet::parse(jwks.as_bytes()).expect("fixture key set");
        let issuer = doc["issuer"].as_str().expect("fixture issuer").to_owned();
        let iat = doc["iat"].as_u64().expect("fixture iat");
        (keys, issuer, iat)
    });
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 => {
            let _ = JwkSet::parse(rest);
        }
        1 => {
            let token = String::from_utf8_lossy(rest);
            let validation = Validation { issuer: Some(issuer.clone()), ..Validation::default() };
            if let Ok(verified) = verify(&token, keys, &validation, iat + 10) {
                assert_eq!(verified.claims.iss.as_deref(), Some(issuer.as_str()), "verified a token of another issuer");
            }
        }
        _ => {
            let code = String::from_utf8_lossy(rest);
            let mut used = UsedCodes::new(16);
            let now = (iat + 10) * 1000;
            let first = verify_code(&[7; 32], "alice", "game-7", &code, now, &mut used);
            let second = verify_code(&[7; 32], "alice", "game-7", &code, now, &mut used);
            assert!(!(first.is_ok() && second.is_ok()), "a code was accepted twice");
        }
    }
}
