//! Sends whose answer was lost, and `confab outbox`.
//!
//! A `dm send` or `room send` is stored in the profile's outbox before it
//! leaves; when its answer is lost (the connection dropped, no answer in
//! time) it stays there and is sent again, with the same request id, by the
//! next command: the server performs it once. The command says so
//! ([`CliError::Pending`]). Running the same command again (same peer or
//! room, same text) while it is pending does not make a second message: it
//! drives the pending one to its answer and reports that.

use confab_proto::ClientEvent;
use confab_proto::wire::Opcode;
use serde_json::json;

use super::{CliError, Env, expect_done};
use crate::output::Output;
use crate::profile::{self, PendingSend, Profile};
use crate::session::{Session, SessionError, outcome_of};

/// The outcome of a send made at most once.
#[derive(Debug)]
pub struct Sent {
    /// The answer.
    pub done: ClientEvent,
    /// The request id.
    pub request_id: u32,
    /// It was pending from an earlier run (this run sent nothing new).
    pub was_pending: bool,
}

/// Sends `send` (made by `make`, which returns its request id) unless the
/// same send is already pending, in which case that one is driven to its
/// answer instead. A lost answer becomes [`CliError::Pending`].
pub fn send_once(
    session: &mut Session,
    env: &Env<'_>,
    mut send: PendingSend,
    make: impl FnOnce(&mut Session) -> Result<u32, CliError>,
) -> Result<Sent, CliError> {
    let what = send.command.clone();
    let earlier = session.profile().pending()?.into_iter().find(|p| p.same_send(&send));
    if let Some(earlier) = earlier {
        let id = earlier.request_id;
        // Its answer may have come while this run caught up.
        let seen = session.events().find(|e| outcome_of(e) == Some(id)).cloned();
        let outcome = match seen {
            Some(confab_proto::e2e::SecureEvent::Plain(event)) => Ok(event),
            _ if in_stored_outbox(session.profile(), id)? => wait(session, env, id, &what),
            // Answered, and the answer already taken: delivered.
            _ => Ok(ClientEvent::Done {
                request_id: id,
                opcode: if send.command == "room send" { Opcode::SendRoom } else { Opcode::SendMp },
                code: 200,
                body: confab_proto::wire::ResponseBody::Empty,
            }),
        };
        return settle(session, id, &what, outcome).map(|done| Sent { done, request_id: id, was_pending: true });
    }
    let id = make(session)?;
    send.request_id = id;
    // Stored before the request's frame leaves (the next turn stores the outbox entry too).
    session.profile().add_pending(&send)?;
    let outcome = wait(session, env, id, &what);
    settle(session, id, &what, outcome).map(|done| Sent { done, request_id: id, was_pending: false })
}

fn wait(session: &mut Session, env: &Env<'_>, id: u32, what: &str) -> Result<ClientEvent, CliError> {
    expect_done(session, env, id, what)
}

/// Keeps the pending row while the request is still in the stored outbox
/// (its answer was lost: [`CliError::Pending`]); forgets it otherwise.
fn settle(
    session: &mut Session,
    id: u32,
    what: &str,
    outcome: Result<ClientEvent, CliError>,
) -> Result<ClientEvent, CliError> {
    let lost = matches!(
        outcome,
        Err(CliError::NoAnswer(_)
            | CliError::TakenOver { .. }
            | CliError::Revoked { .. }
            | CliError::Session(SessionError::LinkLost(_) | SessionError::Closed { .. }))
    );
    if lost && in_stored_outbox(session.profile(), id)? {
        let reason = match &outcome {
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        };
        return Err(CliError::Pending { what: what.to_owned(), request_id: id, reason });
    }
    session.profile().remove_pending(id)?;
    outcome
}

fn in_stored_outbox(profile: &Profile, id: u32) -> Result<bool, CliError> {
    Ok(profile.outbox()?.iter().any(|o| o.request_id == id))
}

/// `confab outbox`: the requests stored and not answered yet (no network).
pub fn outbox(env: &mut Env<'_>, out: &mut Output<'_>) -> Result<(), CliError> {
    let user = env.user.clone();
    let (dir, user) = env.profile_dir(user.as_deref())?;
    if !profile::exists(&dir) {
        return Err(CliError::NotLoggedIn(user));
    }
    let profile = Profile::open(&dir)?;
    profile.prune_pending()?;
    let sends = profile.pending()?;
    let mut count = 0;
    for entry in profile.outbox()? {
        let opcode = Opcode::from_u32(entry.opcode);
        if opcode == Some(Opcode::DeliveryAck) {
            continue;
        }
        count += 1;
        let name = opcode.map_or("unknown", Opcode::name);
        let send = sends.iter().find(|s| s.request_id == entry.request_id);
        let (command, target) = send.map_or((name, ""), |s| (s.command.as_str(), s.target.as_str()));
        let human = match send {
            Some(s) => format!(
                "request {}: {} {} (pending: sent again, once, by the next command)",
                entry.request_id, s.command, s.target
            ),
            None => format!("request {}: {name} (pending: sent again, once, by the next command)", entry.request_id),
        };
        let fields = json!({
            "request_id": entry.request_id, "opcode": name, "command": command, "target": target,
            "written": entry.written, "made_ms": send.map(|s| s.made_ms),
        });
        out.item("pending", &human, fields);
    }
    let human = if count == 0 { "nothing pending".to_owned() } else { format!("{count} pending") };
    out.item("ok", &human, json!({"command": "outbox", "pending": count}));
    Ok(())
}
