//! `confab safety-number USER`: the number both users read to each other
//! out of band; equal numbers mean neither key was swapped by the server.
//!
//! When a contact's key changed (a `warning` said so), nothing goes to or
//! comes from them until `safety-number USER --accept-new-key` pins the new
//! key, after comparing the new number out of band. The old private
//! conversation is dropped: `dm close USER`, then a new `dm request USER`.

use serde_json::json;

use super::{CliError, Env, expect_done, print_warnings};
use crate::output::Output;

/// `confab safety-number USER [--accept-new-key]`: fetches and pins `USER`'s
/// key first if it is not pinned yet (checking it against the pinned one
/// otherwise); with `accept_new_key`, pins the changed key `USER` presented.
pub fn safety_number(
    env: &mut Env<'_>,
    out: &mut Output<'_>,
    user: &str,
    accept_new_key: bool,
) -> Result<(), CliError> {
    let mut session = env.resume(None)?;
    let now = session.now();
    let id = session.sc().fetch_key(now, user)?;
    expect_done(&mut session, env, id, "fetch key")?;
    print_warnings(&mut session, out);
    let accepted = accept_new_key && session.sc().accept_new_key(user);
    session.close()?;
    let sc = session.sc();
    let number = sc.safety_number(user).ok_or_else(|| CliError::Key(format!("no key pinned for {user}")))?;
    let fingerprint = sc.pinned(user).map(|k| k.fingerprint().to_string()).unwrap_or_default();
    let blocked = sc.is_blocked(user);
    let digits = number.digits();
    let grouped: Vec<&str> =
        (0..digits.len()).step_by(5).filter_map(|i| digits.get(i..(i + 5).min(digits.len()))).collect();
    let mut human = vec![
        format!("safety number with {user}: {}", grouped.join(" ")),
        format!("{user}'s pinned key: {fingerprint}"),
    ];
    if blocked {
        human.push(format!(
            "WARNING: {user} presented a different key; it is not trusted (compare the new number out of band, then `confab safety-number {user} --accept-new-key`)"
        ));
    }
    if accepted {
        human.push(format!("the new key of {user} is now pinned: end the old conversation (`confab dm close {user}`) and start a new one (`confab dm request {user}`)"));
    }
    out.item_lines("ok", &human, json!({"command": "safety-number", "user": user, "safety_number": digits, "fingerprint": fingerprint, "key_changed": blocked, "accepted_new_key": accepted}));
    Ok(())
}
