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

/// Issue 10: a copied refresh token replayed inside the retry grace from the
/// thief's own connection used to win (a fresh pair for the thief, and the
/// victim read "unknown"). Now it revokes the login, and the victim is told.
#[test]
fn a_thief_replaying_a_spent_refresh_token_inside_the_grace_revokes_the_login() {
    let mut s = Script::new(config());
    user(&mut s, "a", "alice");
    let stolen = s.refresh_token("a").unwrap();
    s.note("alice refreshes on her connection; a copy of the token she spends has been stolen");
    s.send_auth("a", 40, Refresh { refresh_token: stolen.clone() }, b"");
    let current = s.refresh_token("a").unwrap();
    assert_ne!(current, stolen);
    s.advance(Duration::from_secs(10));
    s.note("10 s later, inside the grace, the thief replays the copy on his own connection");
    s.connect("t");
    s.send_auth("t", 41, Refresh { refresh_token: stolen.clone() }, b"");
    assert!(s.access_token("t").is_none(), "the thief got tokens");
    assert!(matches!(last_response(&mut s, "t"), ResponseBody::Error(e) if e.reason.contains("reused")));
    assert!(!s.is_open("a"), "the revoked login's session is closed");
    s.note("alice comes back with her current refresh token: the login was revoked, and she is told so");
    s.connect("a2");
    s.send_auth("a2", 42, Refresh { refresh_token: current }, b"");
    let ResponseBody::Error(e) = last_response(&mut s, "a2") else { panic!("alice's refresh succeeded") };
    assert!(e.reason.starts_with("refresh token revoked"), "{}", e.reason);
    s.note("she logs in again; once the grace is over, a copy of a token she spent still revokes the login");
    login(&mut s, "a2", "alice");
    let spent = s.refresh_token("a2").unwrap();
    s.send_auth("a2", 43, Refresh { refresh_token: spent.clone() }, b"");
    s.advance(Duration::from_secs(61));
    s.connect("t2");
    s.send_auth("t2", 44, Refresh { refresh_token: spent }, b"");
    assert!(s.access_token("t2").is_none());
    assert!(!s.is_open("a2"));
    insta::assert_snapshot!(s.transcript());
}

// ---- tokens and identity providers (issue 4) ----

const SERVICE_CREDENTIAL: &[u8] = b"backend-service-credential";
const IDP: &str = "https://idp.test/realms/confab";

fn last_response(s: &mut Script, label: &str) -> ResponseBody {
    let got = s.take_received(label);
    match got.into_iter().rev().find_map(|m| if let Message::Response(r) = m { Some(r.body) } else { None }) {
        Some(body) => body,
        None => panic!("{label} got no response"),
    }
}

fn issued_code(s: &mut Script, label: &str) -> String {
    match last_response(s, label) {
        ResponseBody::CodeIssued(c) => c.code,
        other => panic!("expected code_issued, got {other:?}"),
    }
}

#[test]
fn third_party_codes() {
    let mut s = Script::new(ServerConfig { codes: Some(server::CodeConfig::default()), ..config() });
    user(&mut s, "a", "alice");
    s.connect("game");
    s.note("alice asks for a code for game-7 and hands it over; the game server checks it once");
    s.take_received("a");
    s.send("a", IssueCode { audience: "game-7".into() });
    let code = issued_code(&mut s, "a");
    let verify = |user: &str, audience: &str, code: &str| VerifyCode {
        username: user.into(),
        audience: audience.into(),
        code: code.into(),
    };
    s.send_auth("game", 100, verify("alice", "game-7", &code), b"");
    s.note("replayed");
    s.send_auth("game", 101, verify("alice", "game-7", &code), b"");
    s.note("a genuine code shown to another audience, another user, altered, malformed");
    s.send("a", IssueCode { audience: "game-7".into() });
    let code2 = issued_code(&mut s, "a");
    s.send_auth("game", 102, verify("alice", "game-8", &code2), b"");
    s.send_auth("game", 103, verify("mallory", "game-7", &code2), b"");
    let mut altered = code2.clone().into_bytes();
    altered[3] = if altered[3] == b'A' { b'B' } else { b'A' };
    s.send_auth("game", 104, verify("alice", "game-7", &String::from_utf8(altered).unwrap()), b"");
    s.send_auth("game", 105, verify("alice", "game-7", "not a code!"), b"");
    s.note("the code refused for the wrong audience is still good for its own, once");
    s.send_auth("game", 106, verify("alice", "game-7", &code2), b"");
    s.note("expiry: a code lives 60 s");
    s.send("a", IssueCode { audience: "game-7".into() });
    let code3 = issued_code(&mut s, "a");
    s.advance(Duration::from_secs(60));
    s.send_auth("game", 107, verify("alice", "game-7", &code3), b"");
    s.note("an invalid audience; issue_code needs a token");
    s.send("a", IssueCode { audience: "Game 7".into() });
    s.send_auth("game", 108, IssueCode { audience: "game-7".into() }, b"");
    let mut off = Script::new(config());
    user(&mut off, "a", "alice");
    off.send("a", IssueCode { audience: "game-7".into() });
    off.send_auth("a", 109, verify("alice", "game-7", &code), b"");
    insta::assert_snapshot!(format!("{}\n---- codes not configured ----\n{}", s.transcript(), off.transcript()));
}

fn phantom_config() -> ServerConfig {
    let mut phantom = server::PhantomConfig::new(
        String::from_utf8(SERVICE_CREDENTIAL.to_vec()).unwrap(),
        "https://confab.test",
        "backends",
    );
    phantom.key_rotation = Duration::from_secs(600);
    ServerConfig { phantom: Some(phantom), idle_timeout: Duration::from_secs(3600), ..config() }
}

fn jwks_doc(s: &mut Script, label: &str) -> jwt::JwkSet {
    match last_response(s, label) {
        ResponseBody::Jwks(d) => jwt::JwkSet::parse(d.jwks.as_bytes()).unwrap(),
        other => panic!("expected jwks, got {other:?}"),
    }
}

fn minted(s: &mut Script, label: &str) -> String {
    match last_response(s, label) {
        ResponseBody::Jwt(j) => j.jwt,
        other => panic!("expected jwt, got {other:?}"),
    }
}

#[test]
fn phantom_translation() {
    let mut s = Script::new(phantom_config());
    user(&mut s, "a", "alice");
    let access = s.access_token("a").unwrap();
    let refresh = s.refresh_token("a").unwrap();
    s.connect("be");
    s.note("the backend fetches the JWK Set (anonymous): the signing key is made and persisted");
    s.send_auth("be", 100, Jwks {}, b"");
    let keys = jwks_doc(&mut s, "be");
    assert_eq!(keys.len(), 1);
    s.note("without, then with a wrong service credential");
    s.send_auth("be", 101, Introspect { token: access.clone() }, b"");
    s.send_auth("be", 102, Introspect { token: access.clone() }, b"guess");
    s.note("alice's access token, then her refresh token");
    s.send_auth("be", 103, Introspect { token: access.clone() }, SERVICE_CREDENTIAL);
    let jwt_access = minted(&mut s, "be");
    s.send_auth("be", 104, Introspect { token: refresh.clone() }, SERVICE_CREDENTIAL);
    let jwt_refresh = minted(&mut s, "be");
    let now = s.now().unix_ms / 1000;
    let v = jwt::Validation::access("https://confab.test", "backends");
    let verified = jwt::verify(&jwt_access, &keys, &v, now).unwrap();
    assert_eq!(verified.claims.sub.as_deref(), Some("alice"));
    assert_eq!(verified.claims.jti.as_deref(), Some(jwt::jti(access.as_bytes()).as_str()));
    assert!(matches!(jwt::verify(&jwt_refresh, &keys, &v, now), Err(jwt::JwtError::WrongType { .. })));
    let r = jwt::Validation::refresh("https://confab.test", "backends");
    assert!(jwt::verify(&jwt_refresh, &keys, &r, now).is_ok());
    s.note("a token the server never issued, and garbage: not active");
    s.send_auth("be", 105, Introspect { token: examples::ACCESS_TOKEN.into() }, SERVICE_CREDENTIAL);
    s.send_auth("be", 106, Introspect { token: "garbage".into() }, SERVICE_CREDENTIAL);
    s.note("a JWT minted just before the key rotates");
    s.advance(Duration::from_secs(570));
    s.send_auth("be", 107, Introspect { token: access.clone() }, SERVICE_CREDENTIAL);
    let late = minted(&mut s, "be");
    s.note("the rotation (at the sweep after 600 s) keeps the old key published while its JWT lives");
    s.advance(Duration::from_secs(60));
    s.send_auth("be", 108, Jwks {}, b"");
    let rotated = jwks_doc(&mut s, "be");
    assert_eq!(rotated.len(), 2);
    let at = s.now().unix_ms / 1000;
    assert!(jwt::verify(&late, &rotated, &v, at).is_ok(), "the retired key still verifies");
    s.note("new JWTs are signed by the new key; the access token expires at 900 s");
    s.send_auth("be", 109, Introspect { token: refresh.clone() }, SERVICE_CREDENTIAL);
    s.note("at 930 s every JWT of the old key has expired (870 s + 60 s grace): the old key is dropped");
    s.note("alice's access token expired at 900 s: nothing to translate");
    s.advance(Duration::from_secs(300));
    s.send_auth("be", 110, Introspect { token: access.clone() }, SERVICE_CREDENTIAL);
    s.send_auth("be", 111, Jwks {}, b"");
    let pruned = jwks_doc(&mut s, "be");
    assert_eq!(pruned.len(), 1);
    let at = s.now().unix_ms / 1000;
    assert!(matches!(jwt::verify(&late, &pruned, &v, at), Err(jwt::JwtError::UnknownKid(_))));
    s.note("a server restored from the persisted changes publishes the same keys");
    let mut state = server::State::new(20, 1024);
    for change in &s.changes {
        state.apply(change);
    }
    let mut restored = Server::restore(phantom_config(), [8; 32], state, s.now()).expect("a valid configuration");
    let id = restored.open_session(s.now()).unwrap();
    let req = Message::Request(Request { request_id: 1, timestamp_ms: s.now().unix_ms, body: Jwks {}.into() });
    restored.handle_input(s.now(), id, &req.to_bytes(b""));
    let mut restored_jwks = None;
    let Ok(committed) = restored.drain().commit(&mut Ephemeral);
    for action in committed {
        if let server::Action::Transmit { bytes, .. } = action {
            restored_jwks = Some(bytes);
        }
    }
    let mut decoder = FrameDecoder::new(Limits::DEFAULT);
    decoder.push(&restored_jwks.expect("an answer"));
    let frame = decoder.next_frame().unwrap().unwrap();
    let Message::Response(Response { body: ResponseBody::Jwks(doc), .. }) =
        Message::decode(&frame, &Limits::DEFAULT).unwrap()
    else {
        panic!("expected jwks")
    };
    assert_eq!(jwt::JwkSet::parse(doc.jwks.as_bytes()).unwrap(), pruned);
    insta::assert_snapshot!(s.transcript());
}

/// A stand-in OIDC provider: ES256 keys that mint access tokens for `issuer` and the audience `confab`.
fn provider(issuer: &str, seed: u8, now: u64) -> jwt::SigningKeys {
    use rand::SeedableRng as _;
    let mut rng = rand::rngs::StdRng::from_seed([seed; 32]);
    jwt::SigningKeys::generate(jwt::SignerConfig::new(issuer, "confab"), &mut rng, now)
}

fn id_token(idp: &mut jwt::SigningKeys, now: u64, subject: &str) -> String {
    let request = jwt::MintRequest {
        token: subject.as_bytes(),
        kind: token::TokenKind::Access,
        subject,
        token_expires: now + 300,
    };
    idp.mint(now, &request).unwrap().jwt
}

#[test]
fn oidc_login() {
    let t0 = transcript_start_secs();
    let mut idp = provider(IDP, 21, t0);
    let oidc = server::OidcConfig::new(IDP, "confab", idp.jwks_json(t0));
    let mut s = Script::new(ServerConfig { oidc: Some(oidc), idle_timeout: Duration::from_secs(3600), ..config() });
    user(&mut s, "a", "alice");
    s.send("a", CreateRoom { room: "room11".into(), verifier: verifier("pass2934"), descriptor: descriptor() });
    let dave = id_token(&mut idp, t0, "dave");
    s.connect("d");
    s.note("dave's first request with a provider JWT creates his account, without an identity key");
    s.send_auth("d", 100, JoinRoom { room: "room11".into(), verifier: verifier("pass2934") }, dave.as_bytes());
    s.send_auth("d", 101, FetchKey { username: "alice".into() }, dave.as_bytes());
    s.send_auth("d", 102, SetIdentityKey { identity_key: key("dave") }, dave.as_bytes());
    s.note("now he can chat");
    s.send_auth("d", 103, JoinRoom { room: "room11".into(), verifier: verifier("pass2934") }, dave.as_bytes());
    s.send_auth(
        "d",
        104,
        SendRoom { room: "room11".into(), sealed: Bytes::from_static(b"hi from dave") },
        dave.as_bytes(),
    );
    s.send("a", SendRoom { room: "room11".into(), sealed: Bytes::from_static(b"hi dave") });
    s.send("a", FetchKey { username: "dave".into() });
    s.note("dave has no password: login answers like an unknown user");
    s.connect("x");
    s.send("x", Login { username: "dave".into(), password: "correct horse".into() });
    s.note("a provider JWT naming a password account, and one with a name confab does not accept");
    let alice = id_token(&mut idp, t0, "alice");
    s.send_auth("x", 105, FetchKey { username: "dave".into() }, alice.as_bytes());
    let bad = id_token(&mut idp, t0, "Dave Smith");
    s.send_auth("x", 106, FetchKey { username: "dave".into() }, bad.as_bytes());
    s.note("another issuer with the same key, and a key the server does not know");
    let mut evil =
        jwt::SigningKeys::restore(jwt::SignerConfig::new("https://evil.test", "confab"), &idp.records()).unwrap();
    let forged = id_token(&mut evil, t0, "erin");
    s.send_auth("x", 107, FetchKey { username: "dave".into() }, forged.as_bytes());
    let mut stranger = provider(IDP, 22, t0);
    let unknown = id_token(&mut stranger, t0, "erin");
    s.send_auth("x", 108, FetchKey { username: "dave".into() }, unknown.as_bytes());
    s.note("the adapter refreshes the provider's JWK Set: the new key is accepted");
    let now = s.now();
    s.server_mut().jwks_fetched(now, stranger.jwks_json(t0).as_bytes()).unwrap();
    s.send_auth("x", 109, FetchKey { username: "dave".into() }, unknown.as_bytes());
    s.note("after exp + 60 s leeway the JWT is expired: 419, a fresh one from the provider works");
    s.advance(Duration::from_secs(360));
    s.send_auth("d", 110, FetchKey { username: "alice".into() }, dave.as_bytes());
    let t1 = s.now().unix_ms / 1000;
    let mut idp2 = jwt::SigningKeys::restore(jwt::SignerConfig::new(IDP, "confab"), &idp.records()).unwrap();
    let now = s.now();
    s.server_mut().jwks_fetched(now, idp2.jwks_json(t1).as_bytes()).unwrap();
    let fresh = id_token(&mut idp2, t1, "dave");
    s.send_auth("d", 111, FetchKey { username: "alice".into() }, fresh.as_bytes());
    s.connect("d2");
    s.send_auth("d2", 112, FetchKey { username: "alice".into() }, dave.as_bytes());
    insta::assert_snapshot!(s.transcript());
}

/// An OIDC login keeps one token family across its connections (keyed by the
/// provider's `sid`), so a request whose answer was lost with its connection
/// is answered from the record when retried on the next one, with a fresh
/// token of the same provider session.
#[test]
fn oidc_retries_are_recognised_across_connections() {
    use confab_sim::{IDP_AUDIENCE, IDP_ISSUER, TestIdp};
    use rand::SeedableRng as _;
    let t0 = confab_tests::transcript::START_UNIX_MS;
    let mut idp = TestIdp::new(&mut rand::rngs::StdRng::from_seed([41; 32]), Duration::from_secs(300));
    let oidc = server::OidcConfig::new(IDP_ISSUER, IDP_AUDIENCE, idp.jwks_json());
    let mut s = Script::new(ServerConfig { oidc: Some(oidc), idle_timeout: Duration::from_secs(3600), ..config() });
    user(&mut s, "a", "alice");
    let token = idp.token(t0, "bob");
    s.connect("d");
    s.send_auth("d", 1, SetIdentityKey { identity_key: key("bob") }, token.as_bytes());
    s.send_auth("d", 2, RequestMp { peer: "alice".into(), handshake: Bytes::from_static(b"hs-bob") }, token.as_bytes());
    s.send("a", AcceptMp { peer: "bob".into(), handshake: Bytes::from_static(b"hs-alice") });
    let once = SendMp { peer: "alice".into(), sealed: Bytes::from_static(b"once") };
    s.send_auth("d", 3, once.clone(), token.as_bytes());
    s.note("the answer is lost with the connection; the retry comes on a new one with a fresh token (same sid)");
    s.disconnect("d");
    s.advance(Duration::from_secs(400));
    let fresh = idp.token(t0 + 400_000, "bob");
    s.connect("d2");
    s.send_auth("d2", 3, once, fresh.as_bytes());
    s.send_auth("d2", 4, SendMp { peer: "alice".into(), sealed: Bytes::from_static(b"and another") }, fresh.as_bytes());
    insta::assert_snapshot!(s.transcript());
    let delivered = s
        .received
        .get("a")
        .unwrap()
        .iter()
        .filter(|m| matches!(m, Message::Event(Event { body: EventBody::UserMessage(_), .. })))
        .count();
    assert_eq!(delivered, 2, "the retry was performed again");
    let logins: Vec<_> = s.server().state().accounts().oidc_logins().collect();
    assert_eq!(logins.len(), 1, "{logins:?}");
}

/// Issue 10: an OIDC account belongs to the provider's (`iss`, `sub`), bound at
/// its first login (OIDC Core 5.7), not to whoever carries its
/// `preferred_username` now.
#[test]
fn oidc_accounts_are_bound_to_the_subject_not_the_username() {
    use confab_sim::{IDP_AUDIENCE, IDP_ISSUER, TestIdp};
    use rand::SeedableRng as _;
    let t0 = confab_tests::transcript::START_UNIX_MS;
    let mut idp = TestIdp::new(&mut rand::rngs::StdRng::from_seed([43; 32]), Duration::from_secs(300));
    let oidc = server::OidcConfig::new(IDP_ISSUER, IDP_AUDIENCE, idp.jwks_json());
    let mut s = Script::new(ServerConfig { oidc: Some(oidc), idle_timeout: Duration::from_secs(3600), ..config() });
    s.note("dave (subject u-dave) logs in first: the account dave is bound to his subject");
    let dave = idp.token_for_subject(t0, "dave", "u-dave");
    s.connect("d");
    s.send_auth("d", 1, SetIdentityKey { identity_key: key("dave") }, dave.as_bytes());
    assert!(matches!(last_response(&mut s, "d"), ResponseBody::Empty));
    s.note("another provider user (subject u-mallory) now has the preferred_username dave: refused");
    let mallory = idp.token_for_subject(t0, "dave", "u-mallory");
    s.connect("m");
    s.send_auth("m", 2, FetchKey { username: "dave".into() }, mallory.as_bytes());
    let ResponseBody::Error(e) = last_response(&mut s, "m") else { panic!("mallory got dave's account") };
    assert!(e.reason.contains("another user"), "{}", e.reason);
    assert_eq!(s.server().session_user(confab_proto::SessionId(2)), None);
    s.note("dave is renamed david at the provider: same subject, still the account dave");
    let david = idp.token_for_subject(t0, "david", "u-dave");
    s.connect("d2");
    s.send_auth("d2", 3, FetchKey { username: "dave".into() }, david.as_bytes());
    let connected = s.take_received("d2").into_iter().find_map(|m| match m {
        Message::Event(Event { body: EventBody::Connected(c), .. }) => Some(c.username),
        _ => None,
    });
    assert_eq!(connected.as_deref(), Some("dave"));
    assert!(s.server().state().user("david").is_none());
    s.note("the name david is free for another provider user");
    let other = idp.token_for_subject(t0, "david", "u-other");
    s.connect("o");
    s.send_auth("o", 4, SetIdentityKey { identity_key: key("david") }, other.as_bytes());
    assert!(matches!(last_response(&mut s, "o"), ResponseBody::Empty));
    assert!(s.server().state().user("david").is_some());
    insta::assert_snapshot!(s.transcript());
}

fn transcript_start_secs() -> u64 {
    confab_tests::transcript::START_UNIX_MS / 1000
}

/// Keycloak-shaped tokens minted by PyJWT (`proto/src/jwt/testdata/`): RS256
/// and ES256 under a JWK Set of several keys (one for encryption, one too
/// weak), the user taken from `preferred_username` (the `sub` is a UUID).
#[test]
fn oidc_keycloak_tokens() {
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../../proto/src/jwt/testdata/pyjwt_fixtures.json")).unwrap();
    let token = |name: &str| doc["tokens"][name].as_str().unwrap().to_owned();
    let issuer = doc["issuer"].as_str().unwrap();
    let iat = doc["iat"].as_u64().unwrap();
    let oidc = server::OidcConfig {
        allowed_azp: vec!["confab-cli".into()],
        ..server::OidcConfig::new(issuer, "confab", doc["jwks"].to_string())
    };
    let mut s = Script::new_at(ServerConfig { oidc: Some(oidc.clone()), ..config() }, (iat + 10) * 1000);
    s.connect("rs");
    s.note("RS256 access token: alice's account is made from preferred_username");
    s.send_auth("rs", 1, SetIdentityKey { identity_key: key("alice") }, token("rs256_keycloak_access").as_bytes());
    s.connect("es");
    s.note("ES256 access token of the same user, on another connection (it replaces the first)");
    s.send_auth("es", 2, FetchKey { username: "alice".into() }, token("es256_keycloak_access").as_bytes());
    s.connect("x");
    s.note("a refresh token (it has no azp either), and the attack tokens");
    for (id, name) in [
        (3, "es256_phantom_refresh"),
        (4, "rs256_signed_by_stranger"),
        (5, "rs256_weak_key"),
        (6, "hs256_with_rsa_public_pem"),
    ] {
        s.send_auth("x", id, FetchKey { username: "alice".into() }, token(name).as_bytes());
    }
    let other = server::OidcConfig { allowed_azp: vec!["confab-web".into()], ..oidc };
    let mut s2 = Script::new_at(ServerConfig { oidc: Some(other), ..config() }, (iat + 10) * 1000);
    s2.connect("rs");
    s2.send_auth("rs", 7, FetchKey { username: "alice".into() }, token("rs256_keycloak_access").as_bytes());
    insta::assert_snapshot!(format!("{}\n---- azp confab-web only ----\n{}", s.transcript(), s2.transcript()));
}

#[test]
fn undelivered_messages_expire_and_the_sender_is_told() {
    let config = ServerConfig {
        mp_retention: Duration::from_secs(120),
        sweep_interval: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(3600),
        ..config()
    };
    let mut s = Script::new(config);
    user(&mut s, "a", "alice");
    user(&mut s, "b", "bob");
    s.send("a", RequestMp { peer: "bob".into(), handshake: Bytes::from_static(b"hs-alice") });
    s.send("b", AcceptMp { peer: "alice".into(), handshake: Bytes::from_static(b"hs-bob") });
    s.send("b", DeliveryAck { peer: "alice".into(), seq: 1 });
    s.send("a", DeliveryAck { peer: "bob".into(), seq: 1 });
    s.disconnect("b");
    s.note("bob stays away longer than the 120 s retention: alice, online, is told at once");
    s.send("a", SendMp { peer: "bob".into(), sealed: Bytes::from_static(b"never read") });
    s.advance(Duration::from_secs(150));
    s.note("the same while alice is offline too: she is told at her next login");
    s.send("a", SendMp { peer: "bob".into(), sealed: Bytes::from_static(b"also never read") });
    s.disconnect("a");
    s.advance(Duration::from_secs(150));
    s.connect("a2");
    login(&mut s, "a2", "alice");
    s.note("bob finds nothing waiting");
    s.connect("b2");
    login(&mut s, "b2", "bob");
    insta::assert_snapshot!(s.transcript());
}
