//! One fixed, readable example of every message: each request and event
//! opcode, each response shape, and the control frames.
//!
//! These are the examples printed in `docs/PROTOCOL.md`, snapshotted by the
//! tests, used as the fuzzers' seed corpus and as benchmark inputs. They hold
//! no random bytes: blobs are short recognisable patterns.

use bytes::Bytes;

use crate::wire::*;

/// Example access token (`cfa_` + base64url of `QxWnTrBkLmPzYvHd_977fcf05`),
/// carried in the auth part of authenticated example requests.
pub const ACCESS_TOKEN: &str = "cfa_UXhXblRyQmtMbVB6WXZIZF85NzdmY2YwNQ";
/// Example refresh token (`cfr_` + base64url of `MfRtGhJkLpQwErTy_fcea732a`).
pub const REFRESH_TOKEN: &str = "cfr_TWZSdEdoSmtMcFF3RXJUeV9mY2VhNzMyYQ";
/// Example retry key of `refresh_keyed` ([`RETRY_KEY_LEN`] bytes; a real one is random).
pub const RETRY_KEY: &[u8; RETRY_KEY_LEN] = b"example retry key, 32 bytes long";
/// Example timestamp: 2026-11-22T00:00:00Z in Unix milliseconds.
pub const TIMESTAMP_MS: u64 = 1_795_305_600_000;

fn blob(tag: &str) -> Bytes {
    Bytes::from(tag.as_bytes().to_vec())
}

/// One example message and the auth part it travels with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Short label, unique among the examples (`register`, `response_tokens`, `ping`, ...).
    pub label: String,
    /// The auth part: the example access token for authenticated requests, else empty.
    pub auth: Bytes,
    /// The message.
    pub message: Message,
}

impl Example {
    /// The example encoded as one frame.
    #[must_use]
    pub fn to_bytes(&self) -> Bytes {
        self.message.to_bytes(&self.auth)
    }
}

fn request(request_id: u32, body: impl Into<RequestBody>) -> Example {
    let body = body.into();
    // Requests before login carry no token (docs/PROTOCOL.md, "Authentication").
    let anonymous = body.opcode().has_empty_auth();
    Example {
        label: body.opcode().name().to_owned(),
        auth: if anonymous { Bytes::new() } else { Bytes::from_static(ACCESS_TOKEN.as_bytes()) },
        message: Message::Request(Request { request_id, timestamp_ms: TIMESTAMP_MS, body }),
    }
}

fn event(request_id: u32, body: impl Into<EventBody>) -> Example {
    let body = body.into();
    Example {
        label: body.opcode().name().to_owned(),
        auth: Bytes::new(),
        message: Message::Event(Event { request_id, timestamp_ms: TIMESTAMP_MS, body }),
    }
}

fn response(label: &str, opcode: Opcode, status: Status, code: u16, body: ResponseBody) -> Example {
    Example {
        label: format!("response_{label}"),
        auth: Bytes::new(),
        message: Message::Response(Response { opcode, request_id: 1, timestamp_ms: TIMESTAMP_MS, status, code, body }),
    }
}

fn entry(from: &str, seq: u64) -> HistoryEntry {
    HistoryEntry { from: from.into(), seq, sent_ms: TIMESTAMP_MS, sealed: blob("sealed") }
}

/// One request per request opcode, in opcode order.
#[must_use]
pub fn requests() -> Vec<Example> {
    vec![
        request(
            1,
            Register {
                username: "alice".into(),
                password: "correct horse".into(),
                passphrase: "apple river stone".into(),
                identity_key: blob("idkey"),
            },
        ),
        request(2, Login { username: "alice".into(), password: "correct horse".into() }),
        request(3, Passphrase { passphrase: "apple river stone".into() }),
        request(4, CreateRoom { room: "room11".into(), verifier: blob("verifier"), descriptor: blob("descriptor") }),
        request(5, JoinRoom { room: "room11".into(), verifier: blob("verifier") }),
        request(6, SendRoom { room: "room11".into(), sealed: blob("sealed") }),
        request(7, RequestMp { peer: "bob".into(), handshake: blob("hs") }),
        request(8, AcceptMp { peer: "alice".into(), handshake: blob("hs") }),
        request(9, SendMp { peer: "bob".into(), sealed: blob("sealed") }),
        request(10, Refresh { refresh_token: REFRESH_TOKEN.into() }),
        request(11, Logout {}),
        request(12, LeaveRoom { room: "room11".into() }),
        request(13, RoomHistory { room: "room11".into() }),
        request(14, CloseMp { peer: "bob".into() }),
        request(15, FetchKey { username: "bob".into() }),
        request(16, DeliveryAck { peer: "alice".into(), seq: 3 }),
        request(17, IssueCode { audience: "game-7".into() }),
        request(18, VerifyCode { username: "alice".into(), audience: "game-7".into(), code: "4f2a9c".into() }),
        request(19, Introspect { token: ACCESS_TOKEN.into() }),
        request(20, Jwks {}),
        request(21, DeleteRoom { room: "room11".into() }),
        request(22, SetIdentityKey { identity_key: blob("idkey") }),
        request(23, RoomInfo { room: "room11".into() }),
        request(
            24,
            RefreshKeyed { refresh_token: REFRESH_TOKEN.into(), retry_key: Bytes::from_static(RETRY_KEY), attempt: 1 },
        ),
    ]
}

/// One event per event opcode, in opcode order.
#[must_use]
pub fn events() -> Vec<Example> {
    vec![
        event(3, Connected { username: "alice".into(), queued: 2 }),
        event(0, UserMessage { from: "alice".into(), seq: 1, sent_ms: TIMESTAMP_MS, sealed: blob("sealed") }),
        event(
            0,
            RoomMessage {
                room: "room11".into(),
                from: "alice".into(),
                seq: 4,
                sent_ms: TIMESTAMP_MS,
                sealed: blob("sealed"),
            },
        ),
        event(0, MpRequest { from: "alice".into(), seq: 1, identity_key: blob("idkey"), handshake: blob("hs") }),
        event(0, MpAccepted { peer: "bob".into(), seq: 1, identity_key: blob("idkey"), handshake: blob("hs") }),
        event(0, MpClosed { peer: "bob".into(), seq: 7, reason: "closed by peer".into() }),
        event(0, PeerGone { peer: "bob".into() }),
        event(0, ErrorEvent { code: 400, offset: 14, reason: "unknown opcode 4242".into() }),
        event(0, MpExpired { peer: "bob".into(), seq: 5 }),
    ]
}

/// One response per response shape (and the login step-one answer).
#[must_use]
pub fn responses() -> Vec<Example> {
    vec![
        response("empty", Opcode::Register, Status::Valid, status::CREATED, ResponseBody::Empty),
        response("in_progress", Opcode::Login, Status::InProgress, status::ACCEPTED, ResponseBody::Empty),
        response(
            "error",
            Opcode::Login,
            Status::Error,
            status::RATE_LIMITED,
            ResponseBody::Error(ErrorBody { reason: "too many attempts".into(), retry_after_ms: 30_000 }),
        ),
        response(
            "tokens",
            Opcode::Passphrase,
            Status::Valid,
            status::OK,
            ResponseBody::Tokens(Tokens {
                access_token: ACCESS_TOKEN.into(),
                refresh_token: REFRESH_TOKEN.into(),
                access_expires_ms: TIMESTAMP_MS + 900_000,
                refresh_expires_ms: TIMESTAMP_MS + 2_592_000_000,
            }),
        ),
        response(
            "room_joined",
            Opcode::JoinRoom,
            Status::Valid,
            status::OK,
            ResponseBody::RoomJoined(RoomJoined {
                members: vec!["alice".into(), "bob".into()],
                history: vec![entry("alice", 1), entry("bob", 2)],
            }),
        ),
        response(
            "history",
            Opcode::RoomHistory,
            Status::Valid,
            status::OK,
            ResponseBody::History(History { messages: vec![entry("alice", 1)] }),
        ),
        response("sent", Opcode::SendMp, Status::Valid, status::ACCEPTED, ResponseBody::Sent(Sent { seq: 1 })),
        response(
            "peer_keys",
            Opcode::AcceptMp,
            Status::Valid,
            status::OK,
            ResponseBody::PeerKeys(PeerKeys {
                peer: "alice".into(),
                identity_key: blob("idkey"),
                handshake: blob("hs"),
            }),
        ),
        response(
            "identity_key",
            Opcode::FetchKey,
            Status::Valid,
            status::OK,
            ResponseBody::IdentityKey(IdentityKey { username: "bob".into(), identity_key: blob("idkey") }),
        ),
        response(
            "code_issued",
            Opcode::IssueCode,
            Status::Valid,
            status::OK,
            ResponseBody::CodeIssued(CodeIssued { code: "4f2a9c".into(), expires_ms: TIMESTAMP_MS + 60_000 }),
        ),
        response(
            "jwt",
            Opcode::Introspect,
            Status::Valid,
            status::OK,
            ResponseBody::Jwt(Jwt { jwt: "eyJhbGciOiJFUzI1NiJ9.e30.sig".into(), expires_ms: TIMESTAMP_MS + 300_000 }),
        ),
        response(
            "room_described",
            Opcode::RoomInfo,
            Status::Valid,
            status::OK,
            ResponseBody::RoomDescriptor(RoomDescribed { descriptor: blob("descriptor") }),
        ),
        response(
            "jwks",
            Opcode::Jwks,
            Status::Valid,
            status::OK,
            ResponseBody::Jwks(JwksDoc { jwks: r#"{"keys":[]}"#.into() }),
        ),
        response("finished", Opcode::Logout, Status::Finished, status::OK, ResponseBody::Empty),
    ]
}

/// Ping, pong and close.
#[must_use]
pub fn control() -> Vec<Example> {
    let plain = |label: &str, message| Example { label: label.into(), auth: Bytes::new(), message };
    vec![
        plain("ping", Message::Ping(Ping { nonce: 42 })),
        plain("pong", Message::Pong(Pong { nonce: 42 })),
        plain("close", Message::Close(Close { code: status::IDLE_TIMEOUT, reason: "idle timeout".into() })),
    ]
}

/// Every example: requests, events, responses, control frames.
#[must_use]
pub fn all() -> Vec<Example> {
    let mut all = requests();
    all.extend(events());
    all.extend(responses());
    all.extend(control());
    all
}
