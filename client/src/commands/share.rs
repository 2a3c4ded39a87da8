//! Commands that share a profile with a running `confab listen`.
//!
//! A `listen` holds its profile (the profile's lock) and its session for as
//! long as it runs. A one-shot command on the same profile must not open a
//! session of its own: with the server's default duplicate-login policy it
//! would replace the listener's session (which then stops, see
//! [`super::listen`]). So the listener serves a Unix socket,
//! `DIR/listen.sock` (0600, in the 0700 profile directory: only the
//! profile's owner can reach it), and a command that finds a live listener
//! there, and checks that it is its own ([`guard`]: a private directory of
//! its user, a socket of its user, served by a process of its user), sends
//! its operation through it ([`forward`]): the listener performs
//! it on its own session ([`Sharing::serve`]) and returns the output lines
//! and the exit code, which the command prints (control characters escaped,
//! as all human output is: [`Reply::print`]) and exits with. The profile
//! is written by one process only, the listener.
//!
//! Shared: `dm request|accept|close|send|read`, `room
//! create|join|leave|send|history`, `safety-number`, `code issue`. Not
//! shared (they need the profile to themselves): `register`, `login`,
//! `logout`, `outbox`: they say to stop the listener first.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{CliError, Env, code, dm, room, safety};
use crate::output::{Output, escape_controls};
use crate::secrets::{Fixed, Secret};
use crate::session::{Session, Slot};

pub mod guard;
pub mod request;

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
/// (`Ok(None)`: no live listener, the command runs on its own; a socket
/// file left by a killed listener refuses the connection). A socket that
/// fails the [`guard`] checks is refused: `Err`, nothing is sent to it.
pub fn find(dir: &Path) -> Result<Option<UnixStream>, guard::Refused> {
    let path = dir.join(SOCKET);
    if let Err(e) = std::fs::symlink_metadata(&path)
        && e.kind() == std::io::ErrorKind::NotFound
    {
        return Ok(None);
    }
    guard::check_socket(dir, &path)?;
    let Ok(stream) = UnixStream::connect(&path) else { return Ok(None) };
    guard::check_peer(&stream, &path)?;
    Ok(Some(stream))
}

/// [`find`], `None` when there is no listener or it is refused.
#[must_use]
pub fn connect(dir: &Path) -> Option<UnixStream> {
    find(dir).ok().flatten()
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

impl Reply {
    /// Prints the output the listener returned as this command's own: each
    /// line with its control characters escaped ([`escape_controls`]); in
    /// JSON mode a line that is JSON is written again as JSON (which escapes
    /// them), any other is escaped.
    pub fn print(&self, json: bool, stdout: &mut dyn Write, stderr: &mut dyn Write) {
        print_lines(&self.stdout, json, stdout);
        print_lines(&self.stderr, json, stderr);
    }
}

fn print_lines(text: &str, json: bool, to: &mut dyn Write) {
    for line in text.lines() {
        let line = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(value) if json => value.to_string(),
            _ => escape_controls(line).into_owned(),
        };
        let _ = writeln!(to, "{line}");
    }
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
    /// (lent to the command), and gives the session back. A caller running
    /// as another user ([`guard::check_peer`]) is refused (and `out` says so).
    pub fn serve(&self, session: Session, env: &mut Env<'_>, out: &mut Output<'_>) -> Session {
        let mut session = session;
        while let Ok((stream, _)) = self.listener.accept() {
            if let Err(e) = guard::check_peer(&stream, &self.path) {
                let reason = format!("refused a caller on {SOCKET}: {e}");
                out.warning(&reason, serde_json::json!({"event": "share_refused", "reason": e.to_string()}));
                let reply = Reply { code: super::exit::REFUSED, stdout: String::new(), stderr: format!("{reason}\n") };
                send_reply(&stream, &reply);
                continue;
            }
            session = serve_one(stream, session, env, out);
        }
        session
    }
}

impl Drop for Sharing {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_one(stream: UnixStream, session: Session, env: &mut Env<'_>, out: &mut Output<'_>) -> Session {
    let deadline = Instant::now() + request::REQUEST_DEADLINE;
    let _ = stream.set_nonblocking(false);
    let request = match request::read_line(&stream, deadline) {
        // A command that only looked whether a listener runs sends nothing: not an error.
        Err(request::RequestError::Empty) => return session,
        Err(e) => Err(e.to_string()),
        Ok(line) => serde_json::from_slice::<Request>(&line).map_err(|e| format!("malformed request: {e}")),
    };
    let request = match request {
        Ok(request) => request,
        Err(reason) => {
            let reason = format!("refused a request on {SOCKET}: {reason}");
            out.warning(&reason, serde_json::json!({"event": "share_refused", "reason": reason}));
            let reply = Reply { code: super::exit::USAGE, stdout: String::new(), stderr: format!("{reason}\n") };
            send_reply(&stream, &reply);
            return session;
        }
    };
    let slot: Slot = std::rc::Rc::new(std::cell::RefCell::new(Some(session)));
    let reply = perform(request, &slot, env);
    send_reply(&stream, &reply);
    slot.borrow_mut().take().expect("a lent session comes back when the command drops it")
}

fn send_reply(mut stream: &UnixStream, reply: &Reply) {
    let _ = stream.set_write_timeout(Some(request::REPLY_DEADLINE));
    if let Ok(text) = serde_json::to_string(reply) {
        let _ = stream.write_all(text.as_bytes()).and_then(|()| stream.write_all(b"\n"));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_printed_with_its_control_characters_escaped() {
        let reply = Reply {
            code: 0,
            stdout: "\u{1b}]0;owned\u{7}joined team\nok\n".into(),
            stderr: "{\"kind\":\"warning\",\"message\":\"a\\u001bb\"}\n".into(),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        reply.print(false, &mut out, &mut err);
        assert_eq!(String::from_utf8(out).unwrap(), "\\u{001b}]0;owned\\u{0007}joined team\nok\n");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        reply.print(true, &mut out, &mut err);
        assert_eq!(String::from_utf8(out).unwrap(), "\\u{001b}]0;owned\\u{0007}joined team\nok\n");
        assert_eq!(String::from_utf8(err).unwrap(), "{\"kind\":\"warning\",\"message\":\"a\\u001bb\"}\n");
    }
}
