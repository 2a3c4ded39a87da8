//! `room create|join|leave NAME`, `room send NAME TEXT`, `room history NAME`.
//!
//! The room password (`CONFAB_ROOM_PASSWORD` or a prompt) never leaves the
//! device: the room key and the join verifier are derived from it here.

use confab_proto::ClientEvent;
use confab_proto::wire::ResponseBody;
use serde_json::json;

use super::pending::send_once;
use super::{CliError, Env, expect_done, print_events, print_warnings};
use crate::output::Output;
use crate::profile::PendingSend;
use crate::secrets::Secret;

/// `confab room create NAME`.
pub fn create(env: &mut Env<'_>, out: &mut Output<'_>, room: &str) -> Result<(), CliError> {
    let password = env.secrets.get(Secret::RoomPassword)?;
    let mut session = env.resume(None)?;
    let now = session.now();
    let id = session.sc().create_room(now, room, password.as_bytes())?;
    expect_done(&mut session, env, id, "room create")?;
    print_warnings(&mut session, out);
    session.close()?;
    out.item("ok", &format!("created room {room}"), json!({"command": "room create", "room": room}));
    Ok(())
}

/// `confab room join NAME`: prints the retained history, oldest first.
pub fn join(env: &mut Env<'_>, out: &mut Output<'_>, room: &str) -> Result<(), CliError> {
    let password = env.secrets.get(Secret::RoomPassword)?;
    let mut session = env.resume(None)?;
    let now = session.now();
    let id = session.sc().join_room(now, room, password.as_bytes())?;
    let done = expect_done(&mut session, env, id, "room join")?;
    let members = match done {
        ClientEvent::Done { body: ResponseBody::RoomJoined(joined), .. } => joined.members,
        _ => Vec::new(),
    };
    print_events(&mut session, out, |kind| kind == "room_message");
    session.close()?;
    let human = format!("joined room {room} (members: {})", members.join(", "));
    out.item("ok", &human, json!({"command": "room join", "room": room, "members": members}));
    Ok(())
}

/// `confab room leave NAME`.
pub fn leave(env: &mut Env<'_>, out: &mut Output<'_>, room: &str) -> Result<(), CliError> {
    let mut session = env.resume(None)?;
    let now = session.now();
    let id = session.sc().client_mut().leave_room(now, room).map_err(|e| CliError::Local(e.into()))?;
    expect_done(&mut session, env, id, "room leave")?;
    print_warnings(&mut session, out);
    session.close()?;
    out.item("ok", &format!("left room {room}"), json!({"command": "room leave", "room": room}));
    Ok(())
}

/// `confab room send NAME TEXT`.
pub fn send(env: &mut Env<'_>, out: &mut Output<'_>, room: &str, text: &str) -> Result<(), CliError> {
    if text.trim().is_empty() {
        return Err(CliError::EmptyMessage);
    }
    let mut session = env.resume(None)?;
    let now = session.now();
    let send = PendingSend::new("room send", room, text, now.unix_ms);
    let sent = send_once(&mut session, env, send, |session| {
        let now = session.now();
        Ok(session.sc().send_room(now, room, text)?)
    })?;
    let seq = match &sent.done {
        ClientEvent::Done { body: ResponseBody::Sent(s), .. } => Some(s.seq),
        _ => None,
    };
    print_warnings(&mut session, out);
    session.close()?;
    let number = seq.map(|s| format!(" (#{s})")).unwrap_or_default();
    let human = if sent.was_pending {
        format!(
            "this message to {room} was already pending (request {}): sent now{number}, once; not sent again",
            sent.request_id
        )
    } else {
        format!("sent to {room}{number}")
    };
    let fields = json!({"command": "room send", "room": room, "seq": seq, "request_id": sent.request_id, "was_pending": sent.was_pending});
    out.item("ok", &human, fields);
    Ok(())
}

/// `confab room history NAME`: the retained messages, opened here, oldest first.
pub fn history(env: &mut Env<'_>, out: &mut Output<'_>, room: &str) -> Result<(), CliError> {
    let mut session = env.resume(None)?;
    session.take_events();
    let now = session.now();
    let id = session.sc().room_history(now, room)?;
    expect_done(&mut session, env, id, "room history")?;
    print_events(&mut session, out, |kind| kind == "room_message");
    session.close()?;
    Ok(())
}
