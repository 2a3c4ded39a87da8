//! `dm request|accept|close USER`, `dm send USER TEXT`, `dm read [USER]`.
//!
//! Every command first receives what the server queued for this user (a
//! request, an acceptance, messages): received MPs are stored in the profile
//! with their expiry (receipt + 1 h) and shown by `dm read`.

use confab_proto::ClientEvent;
use serde_json::json;

use super::pending::send_once;
use super::{CliError, Env, expect_done, print_warnings};
use crate::output::Output;
use crate::profile::PendingSend;

fn queued_or_delivered(event: &ClientEvent) -> &'static str {
    match event {
        ClientEvent::Done { code: 202, .. } => "queued for the peer (offline)",
        _ => "delivered",
    }
}

/// `confab dm request USER`.
pub fn request(env: &mut Env<'_>, out: &mut Output<'_>, peer: &str) -> Result<(), CliError> {
    let mut session = env.resume(None)?;
    let now = session.now();
    let id = session.sc().request_mp(now, peer)?;
    let done = expect_done(&mut session, env, id, "dm request")?;
    print_warnings(&mut session, out);
    session.close()?;
    let state = queued_or_delivered(&done);
    let human = format!("asked {peer} for a private conversation: {state}");
    out.item("ok", &human, json!({"command": "dm request", "peer": peer, "queued": state != "delivered"}));
    Ok(())
}

/// `confab dm accept USER`: accepts `USER`'s request; prints the safety number to compare.
pub fn accept(env: &mut Env<'_>, out: &mut Output<'_>, peer: &str) -> Result<(), CliError> {
    let mut session = env.resume(None)?;
    let now = session.now();
    let id = session.sc().accept_mp(now, peer)?;
    expect_done(&mut session, env, id, "dm accept")?;
    print_warnings(&mut session, out);
    let number = session.sc().safety_number(peer).map(|n| n.digits().to_owned()).unwrap_or_default();
    session.close()?;
    let human = format!("private conversation with {peer} ready (safety number {number})");
    out.item("ok", &human, json!({"command": "dm accept", "peer": peer, "safety_number": number}));
    Ok(())
}

/// `confab dm close USER`.
pub fn close(env: &mut Env<'_>, out: &mut Output<'_>, peer: &str) -> Result<(), CliError> {
    let mut session = env.resume(None)?;
    let now = session.now();
    let id = session.sc().close_mp(now, peer)?;
    expect_done(&mut session, env, id, "dm close")?;
    print_warnings(&mut session, out);
    session.close()?;
    out.item("ok", &format!("closed the conversation with {peer}"), json!({"command": "dm close", "peer": peer}));
    Ok(())
}

/// `confab dm send USER TEXT`.
pub fn send(env: &mut Env<'_>, out: &mut Output<'_>, peer: &str, text: &str) -> Result<(), CliError> {
    if text.trim().is_empty() {
        return Err(CliError::EmptyMessage);
    }
    let mut session = env.resume(None)?;
    let now = session.now();
    let send = PendingSend::new("dm send", peer, text, now.unix_ms);
    let sent = send_once(&mut session, env, send, |session| {
        let now = session.now();
        Ok(session.sc().send_mp(now, peer, text)?)
    })?;
    print_warnings(&mut session, out);
    session.close()?;
    let state = queued_or_delivered(&sent.done);
    let human = if sent.was_pending {
        format!(
            "this message to {peer} was already pending (request {}): {state} now, once; not sent again",
            sent.request_id
        )
    } else {
        format!("sent to {peer}: {state}")
    };
    out.item(
        "ok",
        &human,
        json!({"command": "dm send", "peer": peer, "queued": state != "delivered", "request_id": sent.request_id, "was_pending": sent.was_pending}),
    );
    Ok(())
}

/// `confab dm read [USER]`: the received MPs still held (less than an hour
/// old), oldest first, then, per peer, how many older ones expired since the
/// last `dm read` that said so.
pub fn read(env: &mut Env<'_>, out: &mut Output<'_>, peer: Option<&str>) -> Result<(), CliError> {
    let mut session = env.resume(None)?;
    print_warnings(&mut session, out);
    session.close()?;
    let inbox = session.sc().inbox();
    let mut count = 0;
    for m in inbox.iter().filter(|m| peer.is_none_or(|p| m.from == p)) {
        count += 1;
        let fields = json!({"from": m.from, "text": m.text, "received_ms": m.received_ms, "expires_ms": m.expires_ms});
        out.item("message", &format!("{}: {}", m.from, m.text), fields);
    }
    let expired = session.profile().take_expired(peer)?;
    if count == 0 && expired.is_empty() && !out.is_json() {
        out.item("ok", "no messages", json!({}));
    }
    for (from, n) in expired {
        let plural = if n == 1 { "message" } else { "messages" };
        let text = format!("{n} older {plural} expired (messages are kept one hour after receipt)");
        out.item(
            "event",
            &format!("{from}: {text}"),
            json!({"event": "expired", "peer": from, "count": n, "text": text}),
        );
    }
    Ok(())
}
