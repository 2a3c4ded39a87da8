//! The `confab` commands, one module per family, each a function over an
//! [`Env`] (where to connect, where secrets and time come from, where the
//! profile lives) and an [`Output`]. The binary builds the real `Env`; tests
//! build one over an in-process server.
//!
//! | module | commands |
//! | --- | --- |
//! | [`account`] | `register`, `login`, `logout` |
//! | [`room`] | `room create/join/leave/send/history` |
//! | [`dm`] | `dm request/accept/close/send/read` |
//! | [`listen`] | `listen` |
//! | [`pending`] | `outbox`, and sends made at most once across lost answers |
//! | [`code`] | `code issue`, `code verify` |
//! | [`safety`] | `safety-number` |
//! | [`share`] | commands sent through a running `listen` of the same profile |

pub mod account;
pub mod code;
pub mod dm;
pub mod listen;
pub mod pending;
mod render;
pub mod room;
pub mod safety;
pub mod share;

use std::path::PathBuf;
use std::time::Duration;

use confab_proto::e2e::SecureEvent;
use confab_proto::e2e::secure::{SecureClient, SecureError};
use confab_proto::e2e::{IdentityKey, KeyError};
use confab_proto::server::HashParams;
use confab_proto::{ClientConfig, ClientEvent};
use rand::SeedableRng;
use rand::rngs::StdRng;

pub use render::event_item;

use crate::connect::Connector;
use crate::output::Output;
use crate::profile::{self, Profile, ProfileError};
use crate::secrets::{SecretError, Secrets};
use crate::session::{Clock, Session, SessionError, misdirected};

/// Makes the identity key of a new account.
pub type NewIdentity<'a> = dyn FnMut(&mut StdRng) -> Result<IdentityKey, KeyError> + 'a;

/// Everything a command needs from the outside world.
pub struct Env<'a> {
    /// Makes links to the server.
    pub connector: &'a mut dyn Connector,
    /// Passwords and passphrases.
    pub secrets: &'a mut dyn Secrets,
    /// The time source.
    pub clock: Clock,
    /// The base of default profile directories (`$XDG_DATA_HOME` or `~/.local/share`).
    pub data_dir: Option<PathBuf>,
    /// `--user USER`: whose profile commands without a USER argument use
    /// (default: the last `login`/`register` against this server).
    pub user: Option<String>,
    /// `--profile DIR`: overrides the default profile directory.
    pub profile: Option<PathBuf>,
    /// The client machine's configuration.
    pub config: ClientConfig,
    /// argon2id costs of room keys (every member must use the same).
    pub room_params: HashParams,
    /// argon2id costs of the identity key at rest.
    pub key_params: HashParams,
    /// How long to wait for an answer.
    pub answer_timeout: Duration,
    /// How long `listen` runs (`None`: until interrupted).
    pub listen_for: Option<Duration>,
    /// `--switch-server`: record the server and trust used in the profile
    /// although it remembered others (checked before the `Env` is built).
    pub switch_server: bool,
    /// Makes the identity key of a new account (default: a new RSA-2048 key).
    pub new_identity: Box<NewIdentity<'a>>,
    /// Seeds the RNGs (default: the operating system).
    pub seed: Box<dyn FnMut() -> [u8; 32] + 'a>,
    /// A session lent by a running `listen` ([`share`]): [`Env::resume`]
    /// uses it instead of opening the profile and connecting.
    pub lent: Option<crate::session::Slot>,
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").field("server", &self.connector.server()).finish_non_exhaustive()
    }
}

/// Why a command failed. Each maps to one line, a hint and an exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No session in the profile.
    #[error("not logged in{}", .0.as_deref().map(|u| format!(" as {u}")).unwrap_or_default())]
    NotLoggedIn(Option<String>),
    /// No USER argument and no last login recorded for this server.
    #[error("no user given and no previous login against {0}")]
    NoUser(String),
    /// `login` on a device that holds no identity key for the user.
    #[error("no identity key for {0} on this device")]
    NoIdentity(String),
    /// `login`/`register` of a user in a profile that belongs to another.
    #[error("the profile at {} belongs to {owner}: refusing to log in as {user} there (it would replace {owner}'s keys and sessions)", .dir.display())]
    OtherUser {
        /// Whose profile it is.
        owner: String,
        /// Who tried to log in.
        user: String,
        /// The profile directory.
        dir: PathBuf,
    },
    /// The password does not open the stored identity key.
    #[error("wrong password: it does not open the identity key stored on this device")]
    WrongPassword,
    /// The server refused the request.
    #[error("{what} refused ({code}): {reason}")]
    Refused {
        /// What was asked.
        what: String,
        /// Three-digit code.
        code: u16,
        /// The server's reason.
        reason: String,
    },
    /// The server is too busy to take the request now (503 with a
    /// `retry_after_ms`: its password-hash queue is full) and said when to retry.
    #[error("{what}: server busy: retry in {} s ({reason})", .retry_after_ms.div_ceil(1000))]
    Busy {
        /// What was asked.
        what: String,
        /// When the server will have room, in milliseconds.
        retry_after_ms: u64,
        /// The server's reason.
        reason: String,
    },
    /// No answer in time (the request stays in the outbox and is re-sent next time).
    #[error("no answer from the server for {0} in time; it stays queued and is sent again by the next command")]
    NoAnswer(String),
    /// A send whose answer was lost: it is stored and pending, and will be
    /// delivered once (re-sent with the same id by the next command).
    #[error(
        "no answer for {what} ({reason}): the message is pending (request {request_id}) and will be delivered once, by the next command or `confab listen`; running the same command again does not send it twice"
    )]
    Pending {
        /// What was asked.
        what: String,
        /// The pending request.
        request_id: u32,
        /// Why there was no answer.
        reason: String,
    },
    /// A message without text (nothing, or only white space).
    #[error("empty message: nothing to send")]
    EmptyMessage,
    /// The message text could not be read from standard input.
    #[error("cannot read the message from standard input: {0}")]
    Stdin(std::io::Error),
    /// The command was refused locally.
    #[error(transparent)]
    Local(#[from] SecureError),
    /// The server closed this session because another session of the same
    /// account took over (close 409, "replaced by a newer login"). Never
    /// followed by an automatic reconnection: two clients of one account
    /// would take the session from each other in turn.
    #[error(
        "another session of this account took over: the server closed this one ({reason}); not reconnecting, so the two do not take turns"
    )]
    TakenOver {
        /// The server's reason.
        reason: String,
    },
    /// The server closed this session because its tokens were revoked
    /// (close 401: a `logout`, or the refresh token presented twice).
    #[error("this session's tokens were revoked ({reason}): not reconnecting")]
    Revoked {
        /// The server's reason.
        reason: String,
    },
    /// Connecting or the connection failed.
    #[error(transparent)]
    Session(SessionError),
    /// The profile failed.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// A secret was missing.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// Another server or pin than the profile remembers.
    #[error(transparent)]
    OtherServer(#[from] crate::remember::Mismatch),
    /// The listener socket of the profile failed its checks, and running
    /// without it is not safe either (the directory is not private to this user).
    #[error(transparent)]
    UnsafeProfile(#[from] share::guard::Refused),
    /// Something about keys (generation, stored key damaged).
    #[error("identity key: {0}")]
    Key(String),
}

impl From<SessionError> for CliError {
    /// A close 409 is [`CliError::TakenOver`] and a close 401 [`CliError::Revoked`]:
    /// what the user can do about them differs from a lost connection.
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Closed { code: 409, reason } => CliError::TakenOver { reason },
            SessionError::Closed { code: 401, reason } => CliError::Revoked { reason },
            e => CliError::Session(e),
        }
    }
}

/// Exit codes of `confab` (documented in `main.rs`).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The server refused, or a local check failed.
    pub const REFUSED: u8 = 1;
    /// Bad usage (clap's code).
    pub const USAGE: u8 = 2;
    /// Not logged in / no profile / wrong password.
    pub const AUTH: u8 = 3;
    /// Network: cannot connect, connection lost, no answer in time.
    pub const NETWORK: u8 = 4;
    /// The local profile or a secret could not be read or written.
    pub const LOCAL: u8 = 5;
    /// Another session of this account took over (close 409): not retried.
    pub const TAKEN_OVER: u8 = 6;
    /// A temporary failure: the server is busy and said when to retry.
    pub const BUSY: u8 = 7;
}

impl CliError {
    /// What to do about it.
    #[must_use]
    pub fn hint(&self) -> String {
        match self {
            CliError::NotLoggedIn(user) => {
                format!("run `confab login {}` first", user.as_deref().unwrap_or("USER"))
            }
            CliError::NoUser(_) => "name the user: `confab login USER` (or pass --profile DIR)".into(),
            CliError::NoIdentity(user) => {
                format!(
                    "keys never leave the device they were made on: use that device, or `confab register` a new account (not {user})"
                )
            }
            CliError::WrongPassword => "check CONFAB_PASSWORD, or type the password again".into(),
            CliError::OtherUser { user, .. } => format!(
                "one profile per user: give {user} another directory (CONFAB_PROFILE or --profile), or unset both to use the default one per user"
            ),
            CliError::Refused { code: 401, .. } => "check the credentials, or log in again".into(),
            CliError::Refused { code: 404, .. } => "check the name".into(),
            CliError::Refused { code: 409, .. } => "it already exists or was already done".into(),
            CliError::Refused { code: 429 | 503, .. } => "wait a little and try again".into(),
            CliError::Refused { .. } => String::new(),
            CliError::Busy { retry_after_ms, .. } => format!(
                "the server is checking many passwords at once: run the command again in {} s",
                retry_after_ms.div_ceil(1000)
            ),
            CliError::NoAnswer(_) => "check the server, then run any command (or `confab listen`) to flush it".into(),
            CliError::Pending { .. } => "`confab outbox` lists what is pending".into(),
            CliError::EmptyMessage => "give the text as an argument, or `-` to read it from standard input".into(),
            CliError::Stdin(_) => String::new(),
            CliError::Local(SecureError::NoSession(peer)) => {
                format!("run `confab dm request {peer}` and wait for `{peer}` to accept")
            }
            CliError::Local(SecureError::NoOffer(peer)) => {
                format!("{peer} has not asked (or asked another device): `confab dm request {peer}` instead")
            }
            CliError::Local(SecureError::NoRoomKey(room)) => format!("run `confab room join {room}` first"),
            CliError::Local(SecureError::KeyChanged(user)) => {
                format!(
                    "compare `confab safety-number {user}` with {user} out of band, then `confab safety-number {user} --accept-new-key`"
                )
            }
            CliError::Local(_) => String::new(),
            CliError::TakenOver { .. } => {
                "another `confab listen` or command of this account (on this device or another) holds the session now: stop it first, then run `confab listen` here again to take the session back".into()
            }
            CliError::Revoked { .. } => "log in again: `confab login USER`".into(),
            CliError::Session(SessionError::Connect(e)) => e.hint().into(),
            CliError::Session(_) => {
                "check the server and try again; unanswered requests stay pending (`confab outbox`) and go out again, once, with the next command".into()
            }
            CliError::Profile(ProfileError::Busy(_)) => "another confab uses this profile: wait for it, or stop the `confab listen` that holds it (register, login, logout and outbox need the profile to themselves; other commands go through a running listen)".into(),
            CliError::Profile(_) => "check the profile directory (--profile) and its permissions".into(),
            CliError::Secret(e) => format!("set {} or run confab on a terminal", secret_var(e)),
            CliError::Key(_) => String::new(),
            CliError::OtherServer(e) => e.hint(),
            CliError::UnsafeProfile(e) => e.hint(),
        }
    }

    /// The process exit code.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::NotLoggedIn(_) | CliError::NoUser(_) | CliError::NoIdentity(_) | CliError::WrongPassword => {
                exit::AUTH
            }
            CliError::Refused { code: 401, .. } | CliError::Revoked { .. } => exit::AUTH,
            CliError::TakenOver { .. } => exit::TAKEN_OVER,
            CliError::Busy { .. } => exit::BUSY,
            CliError::Refused { .. }
            | CliError::Local(_)
            | CliError::Key(_)
            | CliError::OtherUser { .. }
            | CliError::OtherServer(_) => exit::REFUSED,
            CliError::NoAnswer(_) | CliError::Pending { .. } | CliError::Session(_) => exit::NETWORK,
            CliError::Profile(_) | CliError::Secret(_) | CliError::Stdin(_) | CliError::UnsafeProfile(_) => exit::LOCAL,
            CliError::EmptyMessage => exit::USAGE,
        }
    }
}

fn secret_var(e: &SecretError) -> &'static str {
    match e {
        SecretError::NoTerminal { secret, .. } | SecretError::Empty(secret) => secret.var(),
    }
}

/// The text of a message to send: `arg` itself, or standard input when it
/// is `-` (one trailing newline dropped, as `echo` adds it). Empty text (or
/// only white space) is refused: it would send nothing.
pub fn message_text(arg: &str, stdin: &mut dyn std::io::Read) -> Result<String, CliError> {
    let text = if arg == "-" {
        let mut text = String::new();
        stdin.read_to_string(&mut text).map_err(CliError::Stdin)?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        text
    } else {
        arg.to_owned()
    };
    if text.trim().is_empty() {
        return Err(CliError::EmptyMessage);
    }
    Ok(text)
}

/// Runs a command's result to the output and returns the exit code.
pub fn finish(result: Result<(), CliError>, out: &mut Output<'_>) -> u8 {
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            let code = e.exit_code();
            out.error(&e.to_string(), &e.hint(), code);
            code
        }
    }
}

impl Env<'_> {
    /// The profile directory of `user` (explicit, or the last login against this server).
    pub fn profile_dir(&self, user: Option<&str>) -> Result<(PathBuf, Option<String>), CliError> {
        if let Some(dir) = &self.profile {
            return Ok((dir.clone(), user.map(str::to_owned)));
        }
        let server = self.connector.server().to_owned();
        let base = self.data_dir.clone().ok_or_else(|| CliError::NoUser(server.clone()))?;
        let user = match user {
            Some(u) => u.to_owned(),
            None => profile::last_user(&base, &server).ok_or(CliError::NoUser(server.clone()))?,
        };
        Ok((profile::profile_dir(&base, &user, &server), Some(user)))
    }

    /// Records `user` as the last login against this server (best effort).
    pub fn remember_user(&self, user: &str) {
        if self.profile.is_none()
            && let Some(base) = &self.data_dir
        {
            let _ = profile::set_last_user(base, self.connector.server(), user);
            let _ = crate::remember::set_last_server(base, self.connector.server());
        }
    }

    /// Records in `profile` the server and trust this command connected with
    /// (a `register`/`login`, or `--switch-server`) and the node that took
    /// the connection ([`Env::remember_node`]), and says so when the key was
    /// trusted on first use.
    pub fn remember_server(&mut self, profile: &Profile, out: &mut Output<'_>) -> Result<(), CliError> {
        crate::remember::record(profile, self.connector.server(), &self.connector.trust())?;
        self.remember_node(profile)?;
        if let Some(pin) = self.connector.take_first_use() {
            let server = self.connector.server();
            let node = self.connector.connected_to().unwrap_or(server);
            let human = if node == server {
                format!(
                    "trusted the key of {server} on first use: pin {pin}; compare it with the pin the server printed (DATA/server.pin); the profile now accepts only this key"
                )
            } else {
                format!(
                    "trusted the key of {node} on first use: pin {pin}; compare it with the pin the server printed (DATA/server.pin); the profile now accepts only this key, from every node of {server}"
                )
            };
            out.warning(
                &human,
                serde_json::json!({"event": "trusted_on_first_use", "server": server, "node": node, "pin": pin}),
            );
        }
        Ok(())
    }

    /// Has the connector try first the node that served the profile's last
    /// connection ([`crate::remember::last_node`]; a value that is not a
    /// node of the server list is ignored): each command is a new process,
    /// whose connector has not connected anywhere yet. Call it before the
    /// first connection.
    pub fn start_at_last_node(&mut self, profile: &Profile) -> Result<(), CliError> {
        if let Some(node) = crate::remember::last_node(profile, self.connector.server())? {
            self.connector.start_at(&node);
        }
        Ok(())
    }

    /// Records in `profile` the node the connector's last link went to,
    /// once a session is open through it, when it changed
    /// ([`crate::remember::record_last_node`]; nothing for a single address).
    pub fn remember_node(&self, profile: &Profile) -> Result<(), CliError> {
        if let Some(node) = self.connector.connected_to() {
            crate::remember::record_last_node(profile, self.connector.server(), node)?;
        }
        Ok(())
    }

    fn rng(&mut self) -> StdRng {
        StdRng::from_seed((self.seed)())
    }

    /// Opens the profile of `user` (or the last one), restores the secure
    /// client from it and connects: the stored refresh token logs in.
    pub fn resume(&mut self, user: Option<&str>) -> Result<Session, CliError> {
        if let Some(slot) = &self.lent
            && let Some(session) = slot.borrow_mut().take()
        {
            return Ok(session.lend(slot));
        }
        let user = user.map(str::to_owned).or_else(|| self.user.clone());
        let (dir, user) = self.profile_dir(user.as_deref())?;
        if !profile::exists(&dir) {
            return Err(CliError::NotLoggedIn(user));
        }
        let profile = Profile::open(&dir)?;
        // Sends no longer in the outbox were answered by an earlier process.
        profile.prune_pending()?;
        let now = (self.clock)();
        let not_logged_in = || CliError::NotLoggedIn(user.clone());
        let stored = profile.identity()?.ok_or_else(not_logged_in)?;
        let der = stored.session.ok_or_else(not_logged_in)?;
        let snapshot = profile.load(now.unix_ms)?.ok_or_else(not_logged_in)?;
        if snapshot.client.refresh_token.is_none() {
            return Err(not_logged_in());
        }
        let identity = IdentityKey::from_pkcs8_der(&der).map_err(|e| CliError::Key(e.to_string()))?;
        let rng = self.rng();
        let sc = SecureClient::restore(self.config.clone(), &snapshot, identity, rng, self.room_params, now)
            .map_err(|e| CliError::Profile(ProfileError::Damaged(e.to_string())))?;
        self.start_at_last_node(&profile)?;
        let mut session = Session::new(sc, profile, self.clock.clone());
        session.connect(self.connector)?;
        // The refresh binds the connection; what was queued for this user
        // (requests, acceptances, messages) follows, then the client says
        // it caught up. A node that does not serve this user's partition
        // closes the connection as misdirected: the next node is tried.
        let timeout = self.answer_timeout;
        let caught_up = until_served(&mut session, self, |s| Ok(s.wait_caught_up(timeout)?))?;
        if !session.sc().client().is_logged_in() {
            return Err(CliError::NotLoggedIn(user));
        }
        let connected = || session.events().any(|e| matches!(e, SecureEvent::Plain(ClientEvent::Connected { .. })));
        if caught_up.is_none() && !connected() {
            return Err(CliError::NoAnswer("the session refresh".into()));
        }
        if self.switch_server {
            crate::remember::record(session.profile(), self.connector.server(), &self.connector.trust())?;
        } else {
            crate::remember::record_missing_ca_digest(session.profile(), &self.connector.trust())?;
        }
        self.remember_node(session.profile())?;
        Ok(session)
    }
}

/// Whether `outcome` is a success: nothing that came with it sends the
/// request anywhere else.
fn succeeded(outcome: &Result<Option<ClientEvent>, CliError>) -> bool {
    matches!(
        outcome,
        Ok(Some(
            ClientEvent::Done { .. }
                | ClientEvent::LoggedIn { .. }
                | ClientEvent::LoggedOut { .. }
                | ClientEvent::CaughtUp
        ))
    )
}

/// The pause after every node of the list closed a request's connection as
/// misdirected (a partition moving: given back, or its node gone and its
/// lease not expired yet), before trying them again.
pub const MISDIRECTED_PAUSE: Duration = Duration::from_millis(500);

/// Runs `attempt` (a request that binds the connection at its user's
/// partition: `register`, `login`, the refresh that resumes a session),
/// and, while the node closes the connection as misdirected (421: it does
/// not serve that partition; nothing was done), again on the next node,
/// each node once per round, with [`MISDIRECTED_PAUSE`] between rounds,
/// until the answer timeout; then the last close is the error. An outcome
/// that succeeded is kept whatever came with it.
pub fn until_served(
    session: &mut Session,
    env: &mut Env<'_>,
    mut attempt: impl FnMut(&mut Session) -> Result<Option<ClientEvent>, CliError>,
) -> Result<Option<ClientEvent>, CliError> {
    let deadline = session.now().instant + env.answer_timeout;
    let mut tried = 0usize;
    loop {
        let mark = session.event_mark();
        let outcome = attempt(session);
        let closed = matches!(&outcome, Err(CliError::Session(e)) if misdirected(e));
        if succeeded(&outcome) || !(closed || session.misdirected_since(mark)) {
            return outcome;
        }
        tried += 1;
        let nodes = env.connector.misdirected();
        if session.now().instant >= deadline {
            return Err(CliError::Session(SessionError::Closed {
                code: confab_proto::wire::status::MISDIRECTED,
                reason: format!("no node of the {nodes} listed serves this user's partition now"),
            }));
        }
        if tried.is_multiple_of(nodes.max(1)) {
            std::thread::sleep(MISDIRECTED_PAUSE.min(deadline.saturating_duration_since(session.now().instant)));
        }
        session.connect(env.connector)?;
    }
}

/// Waits for the outcome of `id`; `Done` is Ok, anything else an error.
pub fn expect_done(session: &mut Session, env: &Env<'_>, id: u32, what: &str) -> Result<ClientEvent, CliError> {
    done_or_error(session.wait_outcome(id, env.answer_timeout)?, what)
}

/// An outcome as a result: `Done` (and a login's or logout's end) is Ok; a
/// refusal, a 503 with a retry hint ([`CliError::Busy`]), or no outcome is an error.
pub fn done_or_error(outcome: Option<ClientEvent>, what: &str) -> Result<ClientEvent, CliError> {
    match outcome {
        Some(event @ (ClientEvent::Done { .. } | ClientEvent::LoggedIn { .. } | ClientEvent::LoggedOut { .. })) => {
            Ok(event)
        }
        Some(ClientEvent::Failed { code: 503, reason, retry_after_ms, .. }) if retry_after_ms > 0 => {
            Err(CliError::Busy { what: what.into(), retry_after_ms, reason })
        }
        Some(ClientEvent::Failed { code, reason, .. }) => Err(CliError::Refused { what: what.into(), code, reason }),
        Some(ClientEvent::Indeterminate { reason, .. }) => {
            Err(CliError::Refused { what: what.into(), code: 0, reason })
        }
        Some(_) | None => Err(CliError::NoAnswer(what.into())),
    }
}

/// Sends a password check (`register`, `login`) with `send` and waits for
/// its outcome; a 503 whose `retry_after_ms` fits in the answer timeout is
/// waited out on the open connection and the request sent again, once
/// (docs/PROTOCOL.md, "Password checks under load"); a longer wait, or a
/// second 503, is [`CliError::Busy`], which says when to retry. A node
/// that closes the connection as misdirected (421: it does not serve the
/// user's partition, so nothing was done) sends the request on to the next
/// node, once per node at most.
pub fn with_busy_retry(
    session: &mut Session,
    env: &mut Env<'_>,
    out: &mut Output<'_>,
    what: &str,
    mut send: impl FnMut(&mut Session) -> Result<u32, CliError>,
) -> Result<ClientEvent, CliError> {
    let timeout = env.answer_timeout;
    let first = until_served(session, env, |s| {
        let id = send(s)?;
        Ok(s.wait_outcome(id, timeout)?)
    })
    .and_then(|outcome| done_or_error(outcome, what));
    match first {
        Err(CliError::Busy { retry_after_ms, reason, .. })
            if Duration::from_millis(retry_after_ms) <= env.answer_timeout =>
        {
            let seconds = retry_after_ms.div_ceil(1000);
            out.warning(
                &format!("{what}: server busy ({reason}): retrying in {seconds} s"),
                serde_json::json!({"event": "server_busy", "what": what, "retry_after_ms": retry_after_ms}),
            );
            let until = session.now().instant + Duration::from_millis(retry_after_ms);
            session.run_until(until, |_| false)?;
            let id = send(session)?;
            expect_done(session, env, id, what)
        }
        outcome => outcome,
    }
}

/// Prints the collected events whose kind `show` selects, and every warning.
pub fn print_events(session: &mut Session, out: &mut Output<'_>, show: impl Fn(&str) -> bool) {
    for event in session.take_events() {
        if let Some((kind, human, fields)) = event_item(&event) {
            if kind == "warning" {
                out.warning(&human, fields);
            } else if show(kind) {
                out.item(kind, &human, fields);
            }
        }
    }
}

/// Prints the warnings among the collected events (a changed key, a message that did not open).
pub fn print_warnings(session: &mut Session, out: &mut Output<'_>) {
    print_events(session, out, |_| false);
}
