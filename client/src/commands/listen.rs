//! `confab listen`: events and messages as they arrive, until interrupted.
//!
//! Everything is stored in the profile before it is acknowledged to the
//! server, so interrupting `listen` at any moment loses nothing. A lost
//! connection is reopened after a pause (the session resumes where it was;
//! with several server nodes, the node that served last is tried first,
//! then the others, see [`crate::connect`], and the node reached is recorded
//! in the profile for the next command; the `disconnected` warning names
//! the node lost and the `reconnected` event the node reached),
//! but a session the server closed on purpose is not: after a close 409
//! ("replaced by a newer login": another session of this account took over)
//! or 401 (its tokens were revoked) `listen` stops with an error (exit 6 or
//! 3). Reconnecting would replace the newer session, which would do the same:
//! two clients of one account would take the session from each other forever.
//!
//! While it runs, other commands on the same profile go through it
//! ([`super::share`]): they do not open a session of their own, which would
//! replace this one.

use std::time::Duration;

use super::share::Sharing;
use super::{CliError, Env, event_item};
use crate::output::Output;
use crate::session::SessionError;

/// Pause before reconnecting after a lost connection.
pub const RECONNECT_PAUSE: Duration = Duration::from_secs(2);

/// How often `listen` looks for commands sent through its socket ([`super::share`]).
pub const SHARE_POLL: Duration = Duration::from_millis(100);

/// `confab listen`.
pub fn listen(env: &mut Env<'_>, out: &mut Output<'_>) -> Result<(), CliError> {
    let mut session = env.resume(None)?;
    let sharing = Sharing::bind(session.profile().dir())?;
    let end = env.listen_for.and_then(|d| session.now().instant.checked_add(d));
    let show = |out: &mut Output<'_>, event: &confab_proto::e2e::SecureEvent| {
        if let Some((kind, human, fields)) = event_item(event) {
            out.item(kind, &human, fields);
        }
    };
    for event in session.take_events() {
        show(out, &event);
    }
    loop {
        // Wake often enough to serve shared commands (received MPs expire on the way).
        let tick = session.now().instant + SHARE_POLL;
        let deadline = end.map_or(tick, |e| e.min(tick));
        match session.run_until(deadline, |event| {
            show(out, event);
            false
        }) {
            Ok(_) => {}
            Err(SessionError::Closed { code: code @ (401 | 409), reason }) => {
                return Err(SessionError::Closed { code, reason }.into());
            }
            Err(e @ (SessionError::LinkLost(_) | SessionError::Closed { .. })) if end.is_none() => {
                let node = env.connector.connected_to().map(str::to_owned);
                let at = node.as_deref().map(|n| format!(" (node {n})")).unwrap_or_default();
                out.warning(
                    &format!("{e}{at}: reconnecting in {} s", RECONNECT_PAUSE.as_secs()),
                    serde_json::json!({"event": "disconnected", "reason": e.to_string(), "node": node}),
                );
                std::thread::sleep(RECONNECT_PAUSE);
                match session.connect(env.connector) {
                    Ok(()) => {
                        // The next command starts at the node that serves now.
                        env.remember_node(session.profile())?;
                        let node = env.connector.connected_to();
                        let to = node.map(|n| format!(" to {n}")).unwrap_or_default();
                        out.item(
                            "event",
                            &format!("reconnected{to}"),
                            serde_json::json!({"event": "reconnected", "node": node}),
                        );
                    }
                    Err(e) => out.warning(
                        &format!("{e}: retrying"),
                        serde_json::json!({"event": "reconnect_failed", "reason": e.to_string()}),
                    ),
                }
            }
            Err(e) => return Err(e.into()),
        }
        session.take_events();
        if session.is_connected() {
            session = sharing.serve(session, env, out);
        }
        if end.is_some_and(|e| session.now().instant >= e) {
            session.close()?;
            return Ok(());
        }
    }
}
