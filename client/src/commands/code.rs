//! `code issue AUDIENCE` (for the logged-in user) and `code verify USER
//! AUDIENCE CODE` (anonymous: what a third-party server does).

use std::time::Instant;

use confab_proto::{Client, ClientEvent, ClientOutput, ResponseBody};
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

/// `confab code verify USER AUDIENCE CODE`: asks the server whether the
/// code is valid (and consumes it). No login needed.
pub fn verify(env: &mut Env<'_>, out: &mut Output<'_>, user: &str, audience: &str, code: &str) -> Result<(), CliError> {
    let mut link = env.connector.connect().map_err(SessionError::from)?;
    let now = (env.clock)();
    let mut client = Client::new(env.config.clone(), now);
    client.connected(now);
    let id = client.verify_code(now, user, audience, code).map_err(|e| CliError::Local(e.into()))?;
    let deadline = now.instant + env.answer_timeout;
    let outcome = loop {
        let mut found = None;
        let timeout = loop {
            match client.poll_output() {
                ClientOutput::Transmit(bytes) => link.send(&bytes).map_err(SessionError::LinkLost)?,
                ClientOutput::Event(e @ (ClientEvent::Done { .. } | ClientEvent::Failed { .. })) => {
                    if matches!(&e, ClientEvent::Done { request_id, .. } | ClientEvent::Failed { request_id, .. } if *request_id == id)
                    {
                        found = Some(e);
                    }
                }
                ClientOutput::Event(_) => {}
                ClientOutput::Close { code, reason } => return Err(SessionError::Closed { code, reason }.into()),
                ClientOutput::Timeout(at) => break at,
            }
        };
        if let Some(e) = found {
            break e;
        }
        let now = (env.clock)();
        if now.instant >= deadline {
            return Err(CliError::NoAnswer("code verify".into()));
        }
        let wake: Instant = timeout.map_or(deadline, |t| t.min(deadline));
        match link.recv(wake).map_err(SessionError::LinkLost)? {
            Some(bytes) => client.handle_input((env.clock)(), &bytes),
            None => client.handle_timeout((env.clock)()),
        }
    };
    link.close();
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
