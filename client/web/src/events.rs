//! What the page is told: each [`SecureEvent`] as one JSON object with a
//! `type` field, in the order the machine produced them.
//!
//! | `type` | fields | meaning |
//! | --- | --- | --- |
//! | `done` | `request_id`, `op`, `code`, and `members` for a join, `seq` for a send | a request succeeded |
//! | `failed` | `request_id`, `op`, `code`, `reason`, `retry_after_ms` | a request was refused |
//! | `indeterminate` | `request_id`, `op`, `reason` | the connection was lost before the answer |
//! | `logged_in` | `request_id`, `username` | the two-step login finished |
//! | `logged_out` | `request_id` | the session was revoked; the client then drops its sessions, room keys and messages (the identity key, its record and the contacts' pinned keys stay) |
//! | `state_reset` | `reason` | at restore: the stored conversations did not restore (a session that ended without a logout); the identity key was kept, log in again |
//! | `connected` | `username`, `queued` | the server knows this connection's user |
//! | `caught_up` | | the server delivered everything held for this user |
//! | `mp_offered` | `from`, `safety_number` | a verified request for a private conversation |
//! | `mp_ready` | `peer` | keys derived: messages can go both ways |
//! | `mp` | `from`, `sent_ms`, `text` | a private message, opened and verified |
//! | `mp_closed` | `peer`, `reason` | the conversation was closed |
//! | `mp_expired` | `peer` | the server dropped a request or message after its hour |
//! | `mp_expired_locally` | `from` | a received message was deleted after its hour |
//! | `peer_gone` | `peer` | the peer's connection went away |
//! | `room` | `room`, `from`, `seq`, `sent_ms`, `text`, `history` | a room message, opened and verified |
//! | `key_changed` | `user`, `pinned`, `presented` | a contact's identity key changed: blocked until accepted |
//! | `handshake_rejected` | `peer`, `reason` | a handshake did not verify |
//! | `decrypt_failed` | `from`, `room`, `reason` | a blob did not open (tampered, replayed, foreign) |
//! | `server_error` | `code`, `reason` | the server reported an error not tied to a request (or sent a bad frame) |
//! | `closed` | `code`, `reason` | the connection ended (a close frame, or the client gave up) |
//! | `close` | `code`, `reason` | close the WebSocket now (the machine ended the connection) |

use confab_proto::ClientEvent;
use confab_proto::e2e::SecureEvent;
use confab_proto::wire::ResponseBody;
use serde_json::{Value, json};

/// One event as the page sees it.
pub(crate) fn to_json(event: &SecureEvent) -> Value {
    match event {
        SecureEvent::Plain(plain) => plain_to_json(plain),
        SecureEvent::MpOffered { from, safety_number } => {
            json!({"type": "mp_offered", "from": from, "safety_number": safety_number.to_string()})
        }
        SecureEvent::MpReady { peer } => json!({"type": "mp_ready", "peer": peer}),
        SecureEvent::Mp { from, sent_ms, text } => {
            json!({"type": "mp", "from": from, "sent_ms": sent_ms, "text": text})
        }
        SecureEvent::Room { room, from, seq, sent_ms, text, history } => json!({
            "type": "room", "room": room, "from": from, "seq": seq, "sent_ms": sent_ms, "text": text, "history": history,
        }),
        SecureEvent::KeyChanged { user, pinned, presented } => json!({
            "type": "key_changed", "user": user, "pinned": pinned.to_string(), "presented": presented.to_string(),
        }),
        SecureEvent::HandshakeRejected { peer, reason } => {
            json!({"type": "handshake_rejected", "peer": peer, "reason": reason})
        }
        SecureEvent::DecryptFailed { from, room, reason } => {
            json!({"type": "decrypt_failed", "from": from, "room": room, "reason": reason.to_string()})
        }
        SecureEvent::MpExpiredLocally { from } => json!({"type": "mp_expired_locally", "from": from}),
    }
}

fn plain_to_json(event: &ClientEvent) -> Value {
    match event {
        ClientEvent::Done { request_id, opcode, code, body } => {
            let mut v = json!({"type": "done", "request_id": request_id, "op": opcode.name(), "code": code});
            match body {
                ResponseBody::RoomJoined(joined) => v["members"] = json!(joined.members),
                // The place the server gave a message this user sent.
                ResponseBody::Sent(sent) => v["seq"] = json!(sent.seq),
                _ => {}
            }
            v
        }
        ClientEvent::Failed { request_id, opcode, code, reason, retry_after_ms } => json!({
            "type": "failed", "request_id": request_id, "op": opcode.name(), "code": code,
            "reason": reason, "retry_after_ms": retry_after_ms,
        }),
        ClientEvent::Indeterminate { request_id, opcode, reason } => {
            json!({"type": "indeterminate", "request_id": request_id, "op": opcode.name(), "reason": reason})
        }
        ClientEvent::LoggedIn { request_id, username, .. } => {
            json!({"type": "logged_in", "request_id": request_id, "username": username})
        }
        ClientEvent::ExternalTokenNeeded { code, reason } => {
            json!({"type": "failed", "request_id": null, "op": "login", "code": code, "reason": reason, "retry_after_ms": 0})
        }
        ClientEvent::LoggedOut { request_id } => json!({"type": "logged_out", "request_id": request_id}),
        ClientEvent::Connected { username, queued } => {
            json!({"type": "connected", "username": username, "queued": queued})
        }
        ClientEvent::CaughtUp => json!({"type": "caught_up"}),
        ClientEvent::MpClosed { peer, reason, .. } => json!({"type": "mp_closed", "peer": peer, "reason": reason}),
        ClientEvent::PeerGone { peer } => json!({"type": "peer_gone", "peer": peer}),
        ClientEvent::MpExpired { peer, .. } => json!({"type": "mp_expired", "peer": peer}),
        ClientEvent::ServerError { code, reason, .. } => {
            json!({"type": "server_error", "code": code, "reason": reason})
        }
        ClientEvent::BadFrame { error } => json!({"type": "server_error", "code": 400, "reason": error.to_string()}),
        ClientEvent::Closed { code, reason } => json!({"type": "closed", "code": code, "reason": reason}),
        // The secure layer turns these into the events above; kept for completeness.
        ClientEvent::UserMessage { from, .. } | ClientEvent::RoomMessage { from, .. } => {
            json!({"type": "decrypt_failed", "from": from, "room": null, "reason": "not opened"})
        }
        ClientEvent::MpRequest { from, .. } => {
            json!({"type": "handshake_rejected", "peer": from, "reason": "not verified"})
        }
        ClientEvent::MpAccepted { peer, .. } => {
            json!({"type": "handshake_rejected", "peer": peer, "reason": "not verified"})
        }
    }
}
