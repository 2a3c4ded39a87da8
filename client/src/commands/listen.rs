//! `confab listen`: events and messages as they arrive, until interrupted.
//!
//! Everything is stored in the profile before it is acknowledged to the
//! server, so interrupting `listen` at any moment loses nothing. A lost
//! connection is reopened after a pause (the session resumes where it was;
//! with several server nodes, the node that served last is tried first,
//! then the others, see [`crate::connect`], and the node reached is recorded
//! in the profile for the next command; the `disconnected` warning names
//! the node lost and the `reconnected` event the node reached; a node that
//! closed the session as misdirected, 421, because it does not serve the
//! user's partition of a split state, is tried after the others),
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
use crate::session::{SessionError, misdirected};

/// The pause before the first reconnection attempt after a lost connection.
/// Each attempt that does not give a session that stays up doubles it, up
/// to [`MAX_RECONNECT_PAUSE`] (the pause before this change, for every
/// attempt); each pause is drawn within ±25 % of that ([`jittered`]), so that
/// the clients of a node that died do not all come back at the same instants.
pub const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// The longest pause between two reconnection attempts.
pub const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(2);

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
    let mut pause = RECONNECT_PAUSE;
    let mut attempts = 0u64;
    loop {
        // Wake often enough to serve shared commands (received MPs expire on the way).
        let tick = session.now().instant + SHARE_POLL;
        let deadline = end.map_or(tick, |e| e.min(tick));
        match session.run_until(deadline, |event| {
            show(out, event);
            false
        }) {
            // A session that stays up starts the pauses over (one closed at
            // once, a busy server's 503, keeps backing off).
            Ok(_) => pause = RECONNECT_PAUSE,
            Err(SessionError::Closed { code: code @ (401 | 409), reason }) => {
                return Err(SessionError::Closed { code, reason }.into());
            }
            Err(e @ (SessionError::LinkLost(_) | SessionError::Closed { .. })) if end.is_none() => {
                let node = env.connector.connected_to().map(str::to_owned);
                if misdirected(&e) {
                    // That node does not serve this user's partition (any more: it
                    // moved, or no node took it yet): the next one is tried first.
                    env.connector.misdirected();
                }
                let at = node.as_deref().map(|n| format!(" (node {n})")).unwrap_or_default();
                attempts += 1;
                let wait = jittered(pause, attempts);
                pause = (pause * 2).min(MAX_RECONNECT_PAUSE);
                out.warning(
                    &format!("{e}{at}: reconnecting in {:.1} s", wait.as_secs_f64()),
                    serde_json::json!({"event": "disconnected", "reason": e.to_string(), "node": node}),
                );
                std::thread::sleep(wait);
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
                    Err(e) => {
                        out.warning(
                            &format!("{e}: retrying"),
                            serde_json::json!({"event": "reconnect_failed", "reason": e.to_string()}),
                        );
                    }
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

/// `pause` within ±25 %, drawn from this process's id and the attempt's
/// number (no OS randomness: the client's only one seeds its RNG), so that
/// clients, and one client's attempts, differ.
#[must_use]
pub fn jittered(pause: Duration, attempt: u64) -> Duration {
    // splitmix64 of (pid, attempt): a well-spread 64-bit value.
    let mut x = (u64::from(std::process::id()) << 32) ^ attempt;
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    // A factor in [0.75, 1.25).
    let factor = 0.75 + (x >> 11) as f64 / (1u64 << 53) as f64 / 2.0;
    pause.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{MAX_RECONNECT_PAUSE, RECONNECT_PAUSE, jittered};

    #[test]
    fn reconnection_pauses_stay_within_a_quarter_and_differ_between_attempts() {
        let pauses: Vec<Duration> = (1..=200).map(|a| jittered(RECONNECT_PAUSE, a)).collect();
        for p in &pauses {
            assert!(*p >= RECONNECT_PAUSE.mul_f64(0.75) && *p < RECONNECT_PAUSE.mul_f64(1.25), "{p:?}");
        }
        let distinct: std::collections::BTreeSet<_> = pauses.iter().collect();
        assert!(distinct.len() > 150, "spread: {} distinct of 200", distinct.len());
        assert!(jittered(MAX_RECONNECT_PAUSE, 7) < Duration::from_millis(2500));
    }
}
