//! Events as output items: `(kind, human line, JSON fields)`.

use confab_proto::ClientEvent;
use confab_proto::e2e::secure::SecureEvent;
use serde_json::{Value, json};

/// How an event is shown: `message`, `room_message`, `warning` or `event`
/// (`None`: not worth showing, like the outcome of a request the command reports itself).
#[must_use]
pub fn event_item(event: &SecureEvent) -> Option<(&'static str, String, Value)> {
    Some(match event {
        SecureEvent::Mp { from, sent_ms, text } => {
            ("message", format!("{from}: {text}"), json!({"from": from, "sent_ms": sent_ms, "text": text}))
        }
        SecureEvent::Room { room, from, seq, sent_ms, text, history } => (
            "room_message",
            format!("[{room}] #{seq} {from}: {text}"),
            json!({"room": room, "from": from, "seq": seq, "sent_ms": sent_ms, "text": text, "history": history}),
        ),
        SecureEvent::MpOffered { from, safety_number } => (
            "event",
            format!(
                "{from} asks for a private conversation (safety number {safety_number}): `confab dm accept {from}`"
            ),
            json!({"event": "mp_offered", "from": from, "safety_number": safety_number.digits()}),
        ),
        SecureEvent::MpReady { peer } => {
            ("event", format!("private conversation with {peer} ready"), json!({"event": "mp_ready", "peer": peer}))
        }
        SecureEvent::KeyChanged { user, pinned, presented } => (
            "warning",
            format!(
                "THE IDENTITY KEY OF {user} CHANGED (pinned {pinned}, now {presented}): nothing is sent to or accepted from {user} until you compare `confab safety-number {user}` out of band"
            ),
            json!({"event": "key_changed", "user": user, "pinned": pinned.to_string(), "presented": presented.to_string()}),
        ),
        SecureEvent::HandshakeRejected { peer, reason } => (
            "warning",
            format!("handshake from {peer} rejected: {reason}"),
            json!({"event": "handshake_rejected", "peer": peer, "reason": reason}),
        ),
        SecureEvent::DecryptFailed { from, room, reason } => (
            "warning",
            format!(
                "a message from {from}{} did not open: {reason}",
                room.as_ref().map(|r| format!(" in {r}")).unwrap_or_default()
            ),
            json!({"event": "decrypt_failed", "from": from, "room": room, "reason": reason.to_string()}),
        ),
        SecureEvent::MpExpiredLocally { from } => (
            "event",
            format!("a message from {from} expired and was deleted"),
            json!({"event": "mp_expired_locally", "from": from}),
        ),
        SecureEvent::Plain(plain) => return plain_item(plain),
    })
}

fn plain_item(event: &ClientEvent) -> Option<(&'static str, String, Value)> {
    Some(match event {
        ClientEvent::Connected { username, queued } => (
            "event",
            format!("connected as {username} ({queued} queued)"),
            json!({"event": "connected", "username": username, "queued": queued}),
        ),
        ClientEvent::MpClosed { peer, .. } => {
            ("event", format!("{peer} closed the private conversation"), json!({"event": "mp_closed", "peer": peer}))
        }
        ClientEvent::PeerGone { peer, .. } => {
            ("event", format!("{peer} went offline"), json!({"event": "peer_gone", "peer": peer}))
        }
        ClientEvent::MpExpired { peer, .. } => (
            "warning",
            format!("a message to {peer} expired on the server undelivered"),
            json!({"event": "mp_expired", "peer": peer}),
        ),
        ClientEvent::Closed { code, reason } => (
            "event",
            format!("connection closed ({code}): {reason}"),
            json!({"event": "closed", "code": code, "reason": reason}),
        ),
        ClientEvent::Failed { request_id, opcode, code, reason, .. } => (
            "event",
            format!("request {request_id} ({}) failed ({code}): {reason}", opcode.name()),
            json!({"event": "failed", "request_id": request_id, "opcode": opcode.name(), "code": code, "reason": reason}),
        ),
        ClientEvent::Done { request_id, opcode, code, .. } => (
            "event",
            format!("request {request_id} ({}) done ({code})", opcode.name()),
            json!({"event": "done", "request_id": request_id, "opcode": opcode.name(), "code": code}),
        ),
        _ => return None,
    })
}
