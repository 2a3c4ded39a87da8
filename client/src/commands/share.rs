//! Commands that share a profile with a running `confab listen`.
//!
//! A `listen` holds its profile (the profile's lock) and its session for as
//! long as it runs. A one-shot command on the same profile must not open a
//! session of its own: with the server's default duplicate-login policy it
//! would replace the listener's session (which then stops, see
//! [`super::listen`]). So the listener serves a Unix socket,
//! `DIR/listen.sock` (0600, in the 0700 profile directory: only the
//! profile's owner can reach it), and a command that finds a live listener
//! there sends its operation through it ([`forward`]): the listener performs
//! it on its own session ([`Sharing::serve`]) and returns the output lines
//! and the exit code, which the command prints and exits with. The profile
//! is written by one process only, the listener.
//!
//! Shared: `dm request|accept|close|send|read`, `room
//! create|join|leave|send|history`, `safety-number`, `code issue`. Not
//! shared (they need the profile to themselves): `register`, `login`,
//! `logout`, `outbox`: they say to stop the listener first.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CliError, Env, code, dm, room, safety};
use crate::output::Output;
use crate::secrets::{Fixed, Secret};
use crate::session::{Session, Slot};

/// The socket's file name in the profile directory.
pub const SOCKET: &str = "listen.sock";

/// How long a command waits for the listener to perform its operation.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(120);

/// An operation a command hands to the listener of its profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Forwarded {
    DmRequest { peer: String },
    DmAccept { peer: String },
    DmClose { peer: String },
    DmSend { peer: String, text: String },
    DmRead { peer: Option<String> },
    RoomCreate { room: String, password: String },
    RoomJoin { room: String, password: String },
    RoomLeave { room: String },
    RoomSend { room: String, text: String },
    RoomHistory { room: String },
    SafetyNumber { user: String, accept_new_key: bool },
    CodeIssue { audience: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    json: bool,
    forwarded: Forwarded,
}

/// What the listener did: the command's output and exit code.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reply {
    /// The exit code.
    pub code: u8,
    /// What the command printed on standard output.
    pub stdout: String,
    /// What it printed on standard error.
    pub stderr: String,
}

/// A connection to the listener of the profile in `dir`, if one runs
/// (`None`: no live listener, the command runs on its own; a socket file
/// left by a killed listener refuses the connection).
#[must_use]
pub fn connect(dir: &Path) -> Option<UnixStream> {
    UnixStream::connect(dir.join(SOCKET)).ok()
}

/// Has the listener at the other end of `stream` perform `forwarded`.
pub fn forward(stream: UnixStream, forwarded: Forwarded, json: bool) -> Result<Reply, std::io::Error> {
    exchange(stream, &Request { json, forwarded })
}

fn exchange(mut stream: UnixStream, request: &Request) -> Result<Reply, std::io::Error> {
    stream.set_read_timeout(Some(FORWARD_TIMEOUT))?;
    let line = serde_json::to_string(request).map_err(std::io::Error::other)?;
    stream.write_all(line.as_bytes())?;
    stream.write_all(b"\n")?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    serde_json::from_str(&reply).map_err(|e| std::io::Error::other(format!("the listener's answer: {e}")))
}

/// The listener's socket; removed when dropped.
#[derive(Debug)]
pub struct Sharing {
    listener: UnixListener,
    path: PathBuf,
}

impl Sharing {
    /// Serves `DIR/listen.sock` (a stale one, left by a killed listener, is replaced).
    pub fn bind(dir: &Path) -> Result<Sharing, CliError> {
        let path = dir.join(SOCKET);
        let io = |source| CliError::Profile(crate::profile::ProfileError::Io { path: path.clone(), source });
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        listener.set_nonblocking(true).map_err(io)?;
        Ok(Sharing { listener, path })
    }

    /// Performs every operation waiting on the socket, each on `session`
    /// (lent to the command), and gives the session back.
    pub fn serve(&self, session: Session, env: &mut Env<'_>) -> Session {
        let mut session = session;
        while let Ok((stream, _)) = self.listener.accept() {
            session = serve_one(stream, session, env);
        }
        session
    }
}

impl Drop for Sharing {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_one(stream: UnixStream, session: Session, env: &mut Env<'_>) -> Session {
    let slot: Slot = std::rc::Rc::new(std::cell::RefCell::new(Some(session)));
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let request =
        BufReader::new(&stream).read_line(&mut line).ok().and_then(|_| serde_json::from_str::<Request>(&line).ok());
    let reply = match request {
        Some(request) => perform(request, &slot, env),
        None => Reply { code: super::exit::USAGE, stdout: String::new(), stderr: "bad request\n".into() },
    };
    if let Ok(text) = serde_json::to_string(&reply) {
        let mut stream = &stream;
        let _ = stream.write_all(text.as_bytes()).and_then(|()| stream.write_all(b"\n"));
    }
    slot.borrow_mut().take().expect("a lent session comes back when the command drops it")
}

fn perform(request: Request, slot: &Slot, env: &mut Env<'_>) -> Reply {
    let mut secrets = Fixed(HashMap::new());
    if let Forwarded::RoomCreate { password, .. } | Forwarded::RoomJoin { password, .. } = &request.forwarded {
        secrets.0.insert(Secret::RoomPassword, password.clone());
    }
    let seed = &mut env.seed;
    let mut lent = Env {
        connector: &mut *env.connector,
        secrets: &mut secrets,
        clock: env.clock.clone(),
        data_dir: env.data_dir.clone(),
        user: env.user.clone(),
        profile: env.profile.clone(),
        config: env.config.clone(),
        room_params: env.room_params,
        key_params: env.key_params,
        answer_timeout: env.answer_timeout,
        listen_for: None,
        switch_server: false,
        new_identity: Box::new(|_| Err(confab_proto::e2e::KeyError::Malformed)),
        seed: Box::new(seed),
        lent: Some(slot.clone()),
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let code = {
        let mut out = Output::new(request.json, &mut stdout, &mut stderr);
        let result = run(&mut lent, &mut out, &request.forwarded);
        super::finish(result, &mut out)
    };
    Reply {
        code,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn run(env: &mut Env<'_>, out: &mut Output<'_>, op: &Forwarded) -> Result<(), CliError> {
    match op {
        Forwarded::DmRequest { peer } => dm::request(env, out, peer),
        Forwarded::DmAccept { peer } => dm::accept(env, out, peer),
        Forwarded::DmClose { peer } => dm::close(env, out, peer),
        Forwarded::DmSend { peer, text } => dm::send(env, out, peer, text),
        Forwarded::DmRead { peer } => dm::read(env, out, peer.as_deref()),
        Forwarded::RoomCreate { room, .. } => room::create(env, out, room),
        Forwarded::RoomJoin { room, .. } => room::join(env, out, room),
        Forwarded::RoomLeave { room } => room::leave(env, out, room),
        Forwarded::RoomSend { room, text } => room::send(env, out, room, text),
        Forwarded::RoomHistory { room } => room::history(env, out, room),
        Forwarded::SafetyNumber { user, accept_new_key } => safety::safety_number(env, out, user, *accept_new_key),
        Forwarded::CodeIssue { audience } => code::issue(env, out, audience),
    }
}
