//! `register USER`, `login USER`, `logout`.
//!
//! `register` makes the identity key, creates the account and logs in, in
//! one go (one password prompt). `login` needs the identity key stored on
//! this device by `register` (keys never leave the device); it opens it with
//! the password (a local check before anything is sent). Both leave a
//! session in the profile: later commands log in with the refresh token.
//! `logout` revokes the session on the server and erases the local secrets.

use confab_proto::e2e::IdentityKey;
use confab_proto::e2e::secure::SecureClient;
use confab_proto::{Client, ClientConfig};
use serde_json::json;

use super::{CliError, Env, expect_done, with_busy_retry};
use crate::output::Output;
use crate::profile::Profile;
use crate::secrets::Secret;
use crate::session::Session;

/// A config whose first request id continues what this profile used before
/// (the server deduplicates retries by id: ids must never repeat for a user).
fn config_for(env: &Env<'_>, profile: &Profile) -> Result<ClientConfig, CliError> {
    let mut config = env.config.clone();
    if let Some(next) = profile.meta("next_request_id")?.and_then(|v| v.parse::<u32>().ok()) {
        config.first_request_id = config.first_request_id.max(next);
    }
    Ok(config)
}

/// Refuses to use a profile that belongs to another user: its identity key,
/// contacts, MP sessions and room keys are that user's, and a login as
/// someone else would replace them.
fn check_owner(profile: &Profile, user: &str) -> Result<(), CliError> {
    match profile.owner()? {
        Some(owner) if owner != user => {
            Err(CliError::OtherUser { owner, user: user.to_owned(), dir: profile.dir().to_owned() })
        }
        _ => Ok(()),
    }
}

/// Logs in, waiting out one 503 "busy" when its wait fits ([`with_busy_retry`]).
fn login_retrying(
    session: &mut Session,
    env: &mut Env<'_>,
    out: &mut Output<'_>,
    user: &str,
    password: &str,
    passphrase: &str,
) -> Result<(), CliError> {
    with_busy_retry(session, env, out, "login", |session| {
        let now = session.now();
        Ok(session.sc().login(now, user, password, passphrase)?)
    })
    .map(drop)
}

/// `confab register USER`.
///
/// The new key is stored (encrypted under the password) before `register`
/// is sent, so an account the server created is never left without its
/// private key, even if the answer is lost; running `register` again then
/// reuses that key. A refused registration forgets it.
pub fn register(env: &mut Env<'_>, out: &mut Output<'_>, user: &str) -> Result<(), CliError> {
    let (dir, _) = env.profile_dir(Some(user))?;
    let profile = Profile::open(&dir)?;
    check_owner(&profile, user)?;
    env.start_at_last_node(&profile)?;
    let password = env.secrets.get(Secret::Password)?;
    let passphrase = env.secrets.get(Secret::Passphrase)?;
    let mut rng = env.rng();
    let (identity, at_rest, made_now) = match profile.identity()? {
        Some(stored) if stored.session.is_some() => {
            let reason = format!("this device already holds a session for {user}");
            return Err(CliError::Refused { what: "register".into(), code: 409, reason });
        }
        Some(stored) => {
            let identity = IdentityKey::decrypt_at_rest(&stored.at_rest, password.as_bytes())
                .map_err(|_| CliError::WrongPassword)?;
            (identity, stored.at_rest, false)
        }
        None => {
            let identity = (env.new_identity)(&mut rng).map_err(|e| CliError::Key(e.to_string()))?;
            let at_rest = identity
                .encrypt_at_rest(&mut rng, password.as_bytes(), env.key_params)
                .map_err(|e| CliError::Key(e.to_string()))?;
            (identity, at_rest, true)
        }
    };
    let der = identity.to_pkcs8_der().map_err(|e| CliError::Key(e.to_string()))?;
    let public = identity.public().spki_der().to_vec();
    let fingerprint = identity.public().fingerprint().to_string();
    let now = (env.clock)();
    let client = Client::new(config_for(env, &profile)?, now);
    let sc = SecureClient::new(client, identity, env.rng(), env.room_params, now);
    let mut session = Session::new(sc, profile, env.clock.clone());
    session.connect(env.connector)?;
    session.profile().set_identity(&public, &at_rest, None)?;
    session.profile().set_meta("owner", user)?;
    let registered = with_busy_retry(&mut session, env, out, "register", |session| {
        let now = session.now();
        Ok(session.sc().register(now, user, &password, &passphrase)?)
    });
    if let Err(e) = registered {
        if made_now && matches!(e, CliError::Refused { .. } | CliError::Busy { .. }) {
            session.profile().delete_identity()?;
            session.profile().delete_meta("owner")?;
        }
        return Err(e);
    }
    login_retrying(&mut session, env, out, user, &password, &passphrase)?;
    session.profile().set_identity(&public, &at_rest, Some(&der))?;
    session.pump()?;
    env.remember_server(session.profile(), out)?;
    env.remember_user(user);
    session.close()?;
    let human = format!("registered and logged in as {user} (identity key {fingerprint})");
    out.item("ok", &human, json!({"command": "register", "user": user, "fingerprint": fingerprint}));
    Ok(())
}

/// `confab login USER`.
pub fn login(env: &mut Env<'_>, out: &mut Output<'_>, user: &str) -> Result<(), CliError> {
    let (dir, _) = env.profile_dir(Some(user))?;
    if !crate::profile::exists(&dir) {
        return Err(CliError::NoIdentity(user.to_owned()));
    }
    let mut profile = Profile::open(&dir)?;
    check_owner(&profile, user)?;
    env.start_at_last_node(&profile)?;
    let stored = profile.identity()?.ok_or_else(|| CliError::NoIdentity(user.to_owned()))?;
    let password = env.secrets.get(Secret::Password)?;
    let identity =
        IdentityKey::decrypt_at_rest(&stored.at_rest, password.as_bytes()).map_err(|_| CliError::WrongPassword)?;
    let passphrase = env.secrets.get(Secret::Passphrase)?;
    let der = identity.to_pkcs8_der().map_err(|e| CliError::Key(e.to_string()))?;
    let now = (env.clock)();
    // Keep this device's sessions, rooms and contacts; only the tokens are new.
    let sc = match profile.load(now.unix_ms)? {
        Some(mut snapshot) if snapshot.client.username.as_deref() == Some(user) => {
            snapshot.client.refresh_token = None;
            SecureClient::restore(env.config.clone(), &snapshot, identity, env.rng(), env.room_params, now)
                .map_err(|e| CliError::Profile(crate::profile::ProfileError::Damaged(e.to_string())))?
        }
        _ => {
            let client = Client::new(config_for(env, &profile)?, now);
            SecureClient::new(client, identity, env.rng(), env.room_params, now)
        }
    };
    // Nothing is written before the login succeeds: a refused login, or one
    // without an answer, leaves the profile (and its working session) as it was.
    profile.hold_until_logged_in();
    let mut session = Session::new(sc, profile, env.clock.clone());
    session.connect(env.connector)?;
    login_retrying(&mut session, env, out, user, &password, &passphrase)?;
    session.profile().set_identity(&stored.public, &stored.at_rest, Some(&der))?;
    session.profile().set_meta("owner", user)?;
    session.pump()?;
    env.remember_server(session.profile(), out)?;
    env.remember_user(user);
    session.close()?;
    out.item("ok", &format!("logged in as {user}"), json!({"command": "login", "user": user}));
    Ok(())
}

/// `confab logout`: revokes the session on the server, then erases the
/// local secrets (even when the server cannot be reached: then the error
/// says the server was not told).
pub fn logout(env: &mut Env<'_>, out: &mut Output<'_>, user: Option<&str>) -> Result<(), CliError> {
    let revoked = match env.resume(user) {
        Ok(mut session) => {
            let now = session.now();
            let result = match session.sc().client_mut().logout(now) {
                Ok(id) => expect_done(&mut session, env, id, "logout").map(drop),
                Err(e) => Err(CliError::Local(e.into())),
            };
            let _ = session.close();
            session.profile().erase_secrets()?;
            result
        }
        Err(
            e @ (CliError::Session(_) | CliError::NoAnswer(_) | CliError::TakenOver { .. } | CliError::Revoked { .. }),
        ) => Err(e),
        Err(e) => return Err(e),
    };
    if revoked.is_err() {
        let (dir, _) = env.profile_dir(user)?;
        if crate::profile::exists(&dir) {
            Profile::open(&dir)?.erase_secrets()?;
        }
    }
    revoked?;
    out.item("ok", "logged out: the session is revoked and its secrets erased", json!({"command": "logout"}));
    Ok(())
}
