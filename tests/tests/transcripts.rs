//! Transcripts of every opcode flow, the happy path and its main errors,
//! reviewed as insta snapshots. Each line: elapsed virtual time, peer,
//! direction, frame type, `name(number)`, request id, status and code, and a
//! short body summary (tokens and secrets redacted).

use std::time::Duration;

use bytes::Bytes;
use confab_proto::server::DuplicateLogin;
use confab_proto::wire::*;
use confab_proto::*;
use confab_tests::transcript::{Script, config};

fn key(tag: &str) -> Bytes {
    Bytes::from(format!("idkey-{tag}"))
}

fn verifier(tag: &str) -> Bytes {
    Bytes::from(format!("verifier-{tag:<16}"))
}

/// A room descriptor: opaque to the server.
fn descriptor() -> Bytes {
    Bytes::from_static(b"descriptor")
}

fn register(s: &mut Script, label: &str, user: &str) {
    s.send(
        label,
        Register {
            username: user.into(),
            password: "correct horse".into(),
            passphrase: "apple river stone".into(),
            identity_key: key(user),
        },
    );
}

fn login(s: &mut Script, label: &str, user: &str) {
    s.send(label, Login { username: user.into(), password: "correct horse".into() });
    s.send(label, Passphrase { passphrase: "apple river stone".into() });
}

/// Connects `label`, registers `user` and logs in.
fn user(s: &mut Script, label: &str, user_name: &str) {
    s.connect(label);
    register(s, label, user_name);
    login(s, label, user_name);
}

#[test]
fn register_flow() {
    let mut s = Script::new(config());
    s.connect("a");
    register(&mut s, "a", "alice");
    s.note("duplicate username");
    register(&mut s, "a", "alice");
    s.note("invalid inputs");
    s.send(
        "a",
        Register {
            username: "Al".into(),
            password: "correct horse".into(),
            passphrase: "apple river stone".into(),
            identity_key: key("x"),
        },
    );
    s.send(
        "a",
        Register {
            username: "bob".into(),
            password: "short".into(),
            passphrase: "apple river stone".into(),
            identity_key: key("x"),
        },
    );
    s.send(
        "a",
        Register {
            username: "bob".into(),
            password: "correct horse".into(),
            passphrase: "two words".into(),
            identity_key: key("x"),
        },
    );
    s.send(
        "a",
        Register {
            username: "bob".into(),
            password: "correct horse".into(),
            passphrase: "apple river stone".into(),
            identity_key: Bytes::new(),
        },
    );
    insta::assert_snapshot!(s.transcript());
}

#[test]
fn login_flow() {
    let mut s = Script::new(config());
    s.connect("a");
    register(&mut s, "a", "alice");
    login(&mut s, "a", "alice");
    s.note("a second login on the same connection");
    s.send("a", Login { username: "alice".into(), password: "correct horse".into() });
    s.connect("b");
    s.note("passphrase before login");
    s.send("b", Passphrase { passphrase: "apple river stone".into() });
    s.note("wrong password and unknown user get the same answer");
    s.send("b", Login { username: "alice".into(), password: "wrong horse".into() });
    s.send("b", Login { username: "mallory".into(), password: "correct horse".into() });
    s.note("right password, wrong passphrase: back to step one");
    s.send("b", Login { username: "alice".into(), password: "correct horse".into() });
    s.send("b", Passphrase { passphrase: "wrong river stone".into() });
    s.send("b", Passphrase { passphrase: "apple river stone".into() });
    insta::assert_snapshot!(s.transcript());
}

#[test]
fn login_rate_limit() {
    let mut s = Script::new(config());
    s.connect("a");
    register(&mut s, "a", "alice");
    s.connect("b");
    for _ in 0..5 {
        s.send("b", Login { username: "alice".into(), password: "guess".into() });
    }
    s.note("the account is locked for the window, also from a fresh connection");
    s.send("b", Login { username: "alice".into(), password: "correct horse".into() });
    s.connect("c");
    s.send("c", Login { username: "alice".into(), password: "correct horse".into() });
    s.advance(Duration::from_secs(61));
    s.send("c", Login { username: "alice".into(), password: "correct horse".into() });
    insta::assert_snapshot!(s.transcript());
}

#[test]
fn token_checks() {
    // A long idle timeout: this script lets 15 minutes pass on one connection.
    let mut s = Script::new(ServerConfig { idle_timeout: Duration::from_secs(3600), ..config() });
    user(&mut s, "a", "alice");
    s.connect("b");
    s.note("no token, garbage, a token whose checksum fails, a refresh token");
    s.send_auth("b", 50, FetchKey { username: "alice".into() }, b"");
    s.send_auth("b", 51, FetchKey { username: "alice".into() }, b"Bearer xyz");
    s.send_auth("b", 52, FetchKey { username: "alice".into() }, b"cfa_UXhXblRyQmtMbVB6WXZIZV85NzdmY2YwNQ");
    let refresh = s.refresh_token("a").unwrap();
    s.send_auth("b", 53, FetchKey { username: "alice".into() }, refresh.as_bytes());
    s.note("a well-formed token the server never issued");
    s.send_auth("b", 54, FetchKey { username: "alice".into() }, examples::ACCESS_TOKEN.as_bytes());
    s.note("alice's access token on a fresh connection authenticates it (and replaces the old session)");
    let access = s.access_token("a").unwrap();
    s.send_auth("b", 55, FetchKey { username: "alice".into() }, access.as_bytes());
    s.note("after the access token expires: 419, then refresh rotates, and the new token works");
    s.advance(Duration::from_secs(15 * 60));
    s.send_auth("b", 56, FetchKey { username: "alice".into() }, access.as_bytes());
    s.send_auth("b", 57, Refresh { refresh_token: refresh.clone() }, b"");
    s.set_tokens("b", s.access_token("b"), s.refresh_token("b"));
    s.send("b", FetchKey { username: "alice".into() });
    s.note("reusing the rotated refresh token after the retry grace revokes the whole login");
    s.advance(Duration::from_secs(61));
    s.connect("c");
    s.send_auth("c", 58, Refresh { refresh_token: refresh }, b"");
    s.connect("d");
    let newest = s.access_token("b").unwrap();
    s.send_auth("d", 59, FetchKey { username: "alice".into() }, newest.as_bytes());
    insta::assert_snapshot!(s.transcript());
}

#[test]
fn logout_and_refresh_on_new_connection() {
    let mut s = Script::new(config());
    user(&mut s, "a", "alice");
    let refresh = s.refresh_token("a").unwrap();
    s.note("a new connection resumes with the refresh token alone");
    s.disconnect("a");
    s.connect("a2");
    s.send_auth("a2", 40, Refresh { refresh_token: refresh }, b"");
    s.set_tokens("a2", s.access_token("a2"), s.refresh_token("a2"));
    s.send("a2", Logout {});
    s.note("after logout the tokens are gone");
    s.send("a2", FetchKey { username: "alice".into() });
    let r = s.refresh_token("a2").unwrap();
    s.send_auth("a2", 41, Refresh { refresh_token: r }, b"");
    insta::assert_snapshot!(s.transcript());
}

#[test]
fn duplicate_login_policies() {
    let mut s = Script::new(config());
    user(&mut s, "a", "alice");
    s.note("default policy: the newer login replaces the older session");
    s.connect("a2");
    login(&mut s, "a2", "alice");
    assert!(!s.is_open("a"));
    let mut s2 = Script::new(confab_proto::ServerConfig { duplicate_login: DuplicateLogin::Refuse, ..config() });
    user(&mut s2, "a", "alice");
    s2.note("refuse policy: the newer login is refused while the older session lives");
    s2.connect("a2");
    login(&mut s2, "a2", "alice");
    assert!(s2.is_open("a"));
    insta::assert_snapshot!(format!("{}\n---- refuse ----\n{}", s.transcript(), s2.transcript()));
}

#[test]
fn identity_keys() {
    let mut s = Script::new(config());
    user(&mut s, "a", "alice");
    s.send("a", FetchKey { username: "alice".into() });
    s.send("a", FetchKey { username: "nobody".into() });
    s.note("an account that has a key cannot replace it");
    s.send("a", SetIdentityKey { identity_key: key("other") });
    insta::assert_snapshot!(s.transcript());
}

#[test]
fn rooms_flow() {
    let mut s = Script::new(config());
    user(&mut s, "a", "alice");
    user(&mut s, "b", "bob");
    user(&mut s, "c", "carol");
    s.send("a", CreateRoom { room: "room11".into(), verifier: verifier("pass2934"), descriptor: descriptor() });
    s.send("a", CreateRoom { room: "room11".into(), verifier: verifier("pass2934"), descriptor: descriptor() });
    s.send("a", CreateRoom { room: "Room 11".into(), verifier: verifier("pass2934"), descriptor: descriptor() });
    s.send("a", CreateRoom { room: "room12".into(), verifier: Bytes::from_static(b"short"), descriptor: descriptor() });
    s.send("a", CreateRoom { room: "room13".into(), verifier: verifier("pass2934"), descriptor: Bytes::new() });
    s.send("a", SendRoom { room: "room11".into(), sealed: Bytes::from_static(b"sealed-1") });
    s.note("a joiner fetches the descriptor first: any logged-in user may");
    s.send("b", RoomInfo { room: "room11".into() });
    s.send("b", RoomInfo { room: "nowhere".into() });
    s.note("wrong password, then right one: members and history come back");
    s.send("b", JoinRoom { room: "room11".into(), verifier: verifier("pass0000") });
    s.send("b", JoinRoom { room: "room11".into(), verifier: verifier("pass2934") });
    s.send("b", SendRoom { room: "room11".into(), sealed: Bytes::from_static(b"sealed-2") });
    s.note("carol is not a member");
    s.send("c", SendRoom { room: "room11".into(), sealed: Bytes::from_static(b"sealed-x") });
    s.send("c", RoomHistory { room: "room11".into() });
    s.send("c", JoinRoom { room: "nowhere".into(), verifier: verifier("pass2934") });
    s.send("b", RoomHistory { room: "room11".into() });
    s.send("b", LeaveRoom { room: "room11".into() });
    s.send("b", LeaveRoom { room: "room11".into() });
    s.send("b", DeleteRoom { room: "room11".into() });
    s.send("a", DeleteRoom { room: "room11".into() });
    s.send("a", RoomHistory { room: "room11".into() });
    insta::assert_snapshot!(s.transcript());
}

#[test]
fn room_history_keeps_the_last_twenty() {
    let mut s = Script::new(config());
    user(&mut s, "a", "alice");
    s.send("a", CreateRoom { room: "room11".into(), verifier: verifier("pass2934"), descriptor: descriptor() });
    for i in 1..=25 {
        s.send("a", SendRoom { room: "room11".into(), sealed: Bytes::from(format!("m{i}")) });
    }
    s.take_received("a");
    s.send("a", RoomHistory { room: "room11".into() });
    let got = s.take_received("a");
    let Some(Message::Response(Response { body: ResponseBody::History(h), .. })) = got.last() else {
        panic!("no history: {got:?}")
    };
    let seqs: Vec<u64> = h.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (6..=25).collect::<Vec<_>>());
    assert_eq!(&h.messages[0].sealed[..], b"m6");
}

#[test]
fn mp_flow_with_offline_peer() {
    let mut s = Script::new(config());
    user(&mut s, "a", "alice");
    user(&mut s, "b", "bob");
    s.disconnect("b");
    s.note("bob is offline: the request and the message wait for him");
    s.send("a", SendMp { peer: "bob".into(), sealed: Bytes::from_static(b"too early") });
    s.send("a", RequestMp { peer: "bob".into(), handshake: Bytes::from_static(b"hs-alice") });
    s.send("a", RequestMp { peer: "bob".into(), handshake: Bytes::from_static(b"hs-alice") });
    s.send("a", RequestMp { peer: "alice".into(), handshake: Bytes::from_static(b"hs-alice") });
    s.send("a", RequestMp { peer: "nobody".into(), handshake: Bytes::from_static(b"hs-alice") });
    s.connect("b2");
    login(&mut s, "b2", "bob");
    s.send("b2", AcceptMp { peer: "alice".into(), handshake: Bytes::from_static(b"hs-bob") });
    s.send("b2", DeliveryAck { peer: "alice".into(), seq: 1 });
    s.send("a", SendMp { peer: "bob".into(), sealed: Bytes::from_static(b"sealed hello") });
    s.send("b2", DeliveryAck { peer: "alice".into(), seq: 9 });
    s.send("b2", DeliveryAck { peer: "alice".into(), seq: 2 });
    s.send("a", DeliveryAck { peer: "bob".into(), seq: 1 });
    s.note("bob leaves: alice is told");
    s.disconnect("b2");
    s.send("a", SendMp { peer: "bob".into(), sealed: Bytes::from_static(b"while away") });
    s.connect("b3");
    login(&mut s, "b3", "bob");
    s.send("b3", DeliveryAck { peer: "alice".into(), seq: 3 });
    s.send("b3", CloseMp { peer: "alice".into() });
    s.send("b3", CloseMp { peer: "alice".into() });
    s.send("a", SendMp { peer: "bob".into(), sealed: Bytes::from_static(b"after close") });
    insta::assert_snapshot!(s.transcript());
}

#[test]
fn retries_are_idempotent() {
    let mut s = Script::new(config());
    user(&mut s, "a", "alice");
    user(&mut s, "b", "bob");
    s.send("a", RequestMp { peer: "bob".into(), handshake: Bytes::from_static(b"hs-alice") });
    s.send("b", AcceptMp { peer: "alice".into(), handshake: Bytes::from_static(b"hs-bob") });
    s.send_with_id("a", 500, SendMp { peer: "bob".into(), sealed: Bytes::from_static(b"once") });
    s.note("the same request id again: same answer, no second delivery");
    s.send_with_id("a", 500, SendMp { peer: "bob".into(), sealed: Bytes::from_static(b"once") });
    s.note("the same id for another operation is refused");
    s.send_with_id("a", 500, CloseMp { peer: "bob".into() });
    insta::assert_snapshot!(s.transcript());
    let deliveries = s
        .received
        .get("b")
        .unwrap()
        .iter()
        .filter(|m| matches!(m, Message::Event(Event { body: EventBody::UserMessage(_), .. })))
        .count();
    assert_eq!(deliveries, 1);
}

/// A refused request is recorded like a performed one: a retry with the same
/// id gets the same refusal, even once the request would now go through (a
/// `send_mp` sealed before the conversation it would land in existed).
#[test]
fn a_refused_request_stays_refused_when_retried() {
    let mut s = Script::new(config());
    user(&mut s, "a", "alice");
    user(&mut s, "b", "bob");
    let sealed = Bytes::from_static(b"sealed with no session keys");
    s.note("alice sends to bob before any conversation: refused, and the refusal is recorded");
    s.send_with_id("a", 600, SendMp { peer: "bob".into(), sealed: sealed.clone() });
    s.note("the answer is lost with the connection; a new connection of the same login opens a conversation");
    let (access, refresh) = (s.access_token("a"), s.refresh_token("a"));
    s.disconnect("a");
    s.connect("a2");
    s.set_tokens("a2", access, refresh);
    s.send("a2", RequestMp { peer: "bob".into(), handshake: Bytes::from_static(b"hs-alice") });
    s.send("b", AcceptMp { peer: "alice".into(), handshake: Bytes::from_static(b"hs-bob") });
    s.note("the retry (same id) is answered the recorded refusal and performs nothing");
    s.send_with_id("a2", 600, SendMp { peer: "bob".into(), sealed });
    s.note("a new request goes through");
    s.send_with_id("a2", 601, SendMp { peer: "bob".into(), sealed: Bytes::from_static(b"sealed for this one") });
    insta::assert_snapshot!(s.transcript());
    let delivered: Vec<Bytes> = s
        .received
        .get("b")
        .unwrap()
        .iter()
        .filter_map(|m| match m {
            Message::Event(Event { body: EventBody::UserMessage(u), .. }) => Some(u.sealed.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, vec![Bytes::from_static(b"sealed for this one")]);
}

#[test]
fn queue_bounds() {
    let mut s = Script::new(ServerConfig { queue_per_recipient: 3, ..config() });
    user(&mut s, "a", "alice");
    user(&mut s, "b", "bob");
    s.send("a", RequestMp { peer: "bob".into(), handshake: Bytes::from_static(b"hs-alice") });
    s.send("b", AcceptMp { peer: "alice".into(), handshake: Bytes::from_static(b"hs-bob") });
    s.disconnect("b");
    for i in 0..4 {
        s.send("a", SendMp { peer: "bob".into(), sealed: Bytes::from(format!("m{i}")) });
    }
    insta::assert_snapshot!(s.transcript());
}

#[test]
fn keepalive_and_idle_timeout() {
    let mut s = Script::new(config());
    s.connect("a");
    s.advance(Duration::from_secs(30));
    s.send_raw("a", &Message::Pong(Pong { nonce: 1 }).to_bytes(b""), "pong nonce=1");
    s.advance(Duration::from_secs(30));
    s.advance(Duration::from_secs(60));
    s.advance(Duration::from_secs(1));
    assert!(!s.is_open("a"));
    insta::assert_snapshot!(s.transcript());
}

#[test]
fn bad_frames() {
    let mut s = Script::new(config());
    user(&mut s, "a", "alice");
    user(&mut s, "b", "bob");
    let mut unknown = vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16];
    unknown.extend(4242u32.to_be_bytes());
    unknown.extend(1u32.to_be_bytes());
    unknown.extend(0u64.to_be_bytes());
    s.send_raw("a", &unknown, "request with unknown opcode 4242");
    let mut truncated = vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 19];
    truncated.extend(100_015u32.to_be_bytes());
    truncated.extend(77u32.to_be_bytes());
    truncated.extend(0u64.to_be_bytes());
    truncated.extend([0, 9, b'b']);
    s.send_raw("a", &truncated, "fetch_key #77 whose username is cut short");
    s.send_raw("a", &Message::Ping(Ping { nonce: 5 }).to_bytes(b""), "ping nonce=5");
    s.send_raw("a", &examples::events()[0].to_bytes(), "an event frame sent to the server");
    s.note("alice is still fine");
    s.send("a", FetchKey { username: "bob".into() });
    s.note("a length bomb closes only alice's connection");
    let mut bomb = vec![1, 1, 0, 0, 0, 0];
    bomb.extend(u64::MAX.to_be_bytes());
    s.send_raw("a", &bomb, "len_data = 2^64-1");
    s.send("b", FetchKey { username: "alice".into() });
    s.connect("c");
    s.send_raw("c", &[2, 1, 0, 0], "version 2");
    s.note("not-yet-offered operations");
    s.send("b", Jwks {});
    insta::assert_snapshot!(s.transcript());
}

#[test]
fn slow_reader_is_closed_and_keeps_its_queue() {
    let mut s = Script::new(config());
    user(&mut s, "a", "alice");
    user(&mut s, "b", "bob");
    s.send("a", RequestMp { peer: "bob".into(), handshake: Bytes::from_static(b"hs-alice") });
    s.note("bob's transport reports 9 MiB unsent: bob is closed, his lane stays queued");
    s.backlog("b", 9 << 20);
    assert!(!s.is_open("b"));
    s.connect("b2");
    login(&mut s, "b2", "bob");
    insta::assert_snapshot!(s.transcript());
}

#[test]
fn refresh_retry_after_a_lost_answer() {
    let mut s = Script::new(config());
    user(&mut s, "a", "alice");
    let r1 = s.refresh_token("a").unwrap();
    s.disconnect("a");
    s.connect("a2");
    s.note("the client refreshes but gives up waiting for the answer, and retries on the same connection");
    s.send_auth("a2", 40, Refresh { refresh_token: r1.clone() }, b"");
    let unused_access = s.access_token("a2").unwrap();
    s.note("within the grace, on the connection that made the exchange: a fresh pair, the unused one revoked");
    s.send_auth("a2", 41, Refresh { refresh_token: r1.clone() }, b"");
    s.send_auth("a2", 42, FetchKey { username: "alice".into() }, unused_access.as_bytes());
    let r3 = s.refresh_token("a2").unwrap();
    s.set_tokens("a2", s.access_token("a2"), Some(r3.clone()));
    s.send("a2", FetchKey { username: "alice".into() });
    s.note("the same retry from another connection, even within the grace, is reuse: the login is revoked");
    s.connect("a3");
    s.send_auth("a3", 43, Refresh { refresh_token: r1 }, b"");
    assert!(!s.is_open("a2"));
    s.send_auth("a3", 44, Refresh { refresh_token: r3 }, b"");
    insta::assert_snapshot!(s.transcript());
}

/// `insta::assert_snapshot!` for the tests of an included file: insta finds
/// snapshots next to the file the macro is written in, so this points it at
/// this file's `snapshots/` (the names stay `transcripts__<test>`).
macro_rules! assert_transcript {
    ($($arg:tt)*) => {
        insta::with_settings!({ snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots") }, {
            insta::assert_snapshot!($($arg)*);
        })
    };
}

// The rest of this file's tests, split for length. `include!` keeps them in
// this module, so their names (and snapshot names) do not change.
include!("transcripts/tokens_and_oidc.rs"); // refresh-token theft, third-party codes, phantom tokens, OIDC, expiry
