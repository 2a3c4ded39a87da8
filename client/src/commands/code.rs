//! `code issue AUDIENCE` (for the logged-in user) and `code verify USER
//! AUDIENCE CODE` (anonymous: what a third-party server does).

use confab_proto::wire::{ResponseBody, status};
use confab_proto::{Client, ClientEvent, Ephemeral};
use confab_transports::link::{DriveError, Driver};
use serde_json::json;

use super::{CliError, Env, expect_done, print_warnings};
use crate::output::Output;
use crate::session::SessionError;

/// `confab code issue AUDIENCE`: prints the single-use code (valid at most 60 s).
pub fn issue(env: &mut Env<'_>, out: &mut Output<'_>, audience: &str) -> Result<(), CliError> {
    let mut session = env.resume(None)?;
    let now = session.now();
    let id = session.sc().client_mut().issue_code(now, audience).map_err(|e| CliError::Local(e.into()))?;
    let done = expect_done(&mut session, env, id, "code issue")?;
    print_warnings(&mut session, out);
    session.close()?;
    let ClientEvent::Done { body: ResponseBody::CodeIssued(issued), .. } = done else {
        return Err(CliError::NoAnswer("code issue".into()));
    };
    let left_s = issued.expires_ms.saturating_sub(now.unix_ms) / 1000;
    let human = format!("{} (for {audience}, single use, expires in {left_s} s)", issued.code);
    out.item(
        "ok",
        &human,
        json!({"command": "code issue", "audience": audience, "code": issued.code, "expires_ms": issued.expires_ms}),
    );
    Ok(())
}

/// The least time an attempt of `code verify` waits for its answer.
const MIN_ATTEMPT: std::time::Duration = std::time::Duration::from_secs(2);

/// `confab code verify USER AUDIENCE CODE`: asks the server whether the
/// code is valid (and consumes it). No login needed.
pub fn verify(env: &mut Env<'_>, out: &mut Output<'_>, user: &str, audience: &str, code: &str) -> Result<(), CliError> {
    let deadline = (env.clock)().instant + env.answer_timeout;
    let mut tried = 0usize;
    let outcome = loop {
        let link = env.connector.connect().map_err(SessionError::from)?;
        let now = (env.clock)();
        // Anonymous and one-shot: no profile, nothing to keep.
        let mut driver = Driver::new(Client::new(env.config.clone(), now), Ephemeral, env.clock.clone());
        driver.connect(link).map_err(session_error)?;
        let id = driver.machine_mut().verify_code(now, user, audience, code).map_err(|e| CliError::Local(e.into()))?;
        let is_outcome = |e: &ClientEvent| matches!(e, ClientEvent::Done { request_id, .. } | ClientEvent::Failed { request_id, .. } if *request_id == id);
        // Each attempt waits a while for its answer, even past the command's
        // deadline: a request sent is never left without its outcome (a code is
        // used up by the node that checks it).
        let ran = driver.run_until(deadline.max(now.instant + MIN_ATTEMPT), is_outcome);
        let outcome = driver.events().iter().rev().find(|e| is_outcome(e)).cloned();
        // A node that does not serve the user's partition (421) did nothing: the next one.
        let misdirected = !matches!(outcome, Some(ClientEvent::Done { .. }))
            && (matches!(ran, Err(DriveError::Closed { code: status::MISDIRECTED, .. }))
                || driver.events().iter().any(|e| matches!(e, ClientEvent::Closed { code: status::MISDIRECTED, .. })));
        if misdirected && (env.clock)().instant < deadline {
            tried += 1;
            let nodes = env.connector.misdirected();
            if tried.is_multiple_of(nodes.max(1)) {
                let left = deadline.saturating_duration_since((env.clock)().instant);
                std::thread::sleep(super::MISDIRECTED_PAUSE.min(left));
            }
            continue;
        }
        if !ran.map_err(session_error)? {
            return Err(CliError::NoAnswer("code verify".into()));
        }
        let _ = driver.close();
        break outcome;
    };
    let Some(outcome) = outcome else { return Err(CliError::NoAnswer("code verify".into())) };
    match outcome {
        ClientEvent::Failed { code, reason, .. } => Err(CliError::Refused { what: "code verify".into(), code, reason }),
        _ => {
            let human = format!("valid: the code proves {user} to {audience} (it is now used up)");
            out.item(
                "ok",
                &human,
                json!({"command": "code verify", "user": user, "audience": audience, "valid": true}),
            );
            Ok(())
        }
    }
}

/// A driver error of a machine that keeps nothing.
fn session_error(e: DriveError<std::convert::Infallible>) -> CliError {
    match e {
        DriveError::Store(never) => match never {},
        DriveError::LinkLost(e) => SessionError::LinkLost(e).into(),
        DriveError::Closed { code, reason } => SessionError::Closed { code, reason }.into(),
    }
}
