//! Application commands. Each checks its inputs against the codec
//! [`Limits`](crate::wire::Limits) (the encoder must never see an over-long field),
//! takes the next request id, and queues the request in the outbox; it is
//! written at once when the connection allows, else when it does.

use bytes::Bytes;
use zeroize::Zeroizing;

use super::auth::LoginFlow;
use super::outbox::{Entry, Origin, needs_auth};
use super::{Client, CommandError};
use crate::Now;
use crate::wire::{
    AcceptMp, CloseMp, CreateRoom, DeleteRoom, FetchKey, FieldValue, IssueCode, JoinRoom, LeaveRoom, Login, Logout,
    Opcode, Passphrase, Register, RequestBody, RequestMp, RoomHistory, RoomInfo, SendMp, SendRoom, SetIdentityKey,
    VerifyCode, status,
};

/// Bytes of a request's data part before its body: opcode, request id, timestamp.
const REQUEST_HEADER: u64 = 4 + 4 + 8;

impl Client {
    /// Creates an account (anonymous). The outcome is `Done` (201) or `Failed`
    /// (400 invalid name or passphrase, 409 name taken, ...). If the
    /// connection is lost before the answer, it fails with 503: the account
    /// may or may not exist (logging in tells).
    pub fn register(
        &mut self,
        now: Now,
        username: &str,
        password: &str,
        passphrase: &str,
        identity_key: Bytes,
    ) -> Result<u32, CommandError> {
        let body = Register {
            username: username.to_owned(),
            password: password.to_owned(),
            passphrase: passphrase.to_owned(),
            identity_key,
        };
        self.submit(now, body.into())
    }

    /// Logs in: sends `login` (username and password), then on its
    /// `in_progress` answer `passphrase` (the passphrase is kept only until
    /// then). The outcome is [`ClientEvent::LoggedIn`](super::ClientEvent::LoggedIn), or `Failed` with the
    /// step that failed (401 wrong credentials, 429 rate limited, 503
    /// connection lost during the login). Made while disconnected, it is
    /// sent by the next [`Client::connected`].
    pub fn login(&mut self, now: Now, username: &str, password: &str, passphrase: &str) -> Result<u32, CommandError> {
        if self.auth.has_session() {
            return Err(CommandError::AlreadyLoggedIn);
        }
        if self.auth.login.is_some() {
            return Err(CommandError::LoginInProgress);
        }
        // The checked copies of the secrets are overwritten once checked.
        let mut step_one: RequestBody = Login { username: username.to_owned(), password: password.to_owned() }.into();
        let checked = self.validate(&step_one);
        super::auth::zeroize_secrets(&mut step_one);
        checked?;
        let mut step_two: RequestBody = Passphrase { passphrase: passphrase.to_owned() }.into();
        let checked = self.validate(&step_two);
        super::auth::zeroize_secrets(&mut step_two);
        checked?;
        let login_id = self.alloc_id()?;
        self.auth.login = Some(LoginFlow {
            login_id,
            timestamp_ms: now.unix_ms,
            username: username.to_owned(),
            password: Some(Zeroizing::new(password.to_owned())),
            passphrase: Some(Zeroizing::new(passphrase.to_owned())),
            login_sent: false,
            passphrase_id: None,
        });
        self.touch(now);
        self.send_login();
        Ok(login_id)
    }

    /// Uses a refresh token from a stored profile: the next connection (or
    /// this one, if connected) authenticates with `refresh` instead of a
    /// password. A login under way is abandoned (`Failed`, 409).
    pub fn resume(&mut self, refresh_token: String) {
        if let Some(flow) = self.auth.login.take() {
            let reason = "login abandoned for a resumed session";
            self.fail(flow.login_id, Opcode::Login, status::CONFLICT, reason, 0);
        }
        self.auth.access = None;
        self.auth.external = false;
        self.auth.external_refused = false;
        self.auth.refresh = Some(refresh_token);
        self.auth.retry = None;
        self.dirty = true;
        self.auth.refresh_retry_at = None;
        self.auth.logging_out = false;
        if let Some(conn) = self.conn.as_mut() {
            conn.authed = false;
        }
        if self.auth.refresh_in_flight.is_none() {
            let now = self.clock;
            self.start_refresh(now);
        }
    }

    /// Logs out: the server revokes this login's tokens. On the answer the
    /// client forgets its tokens and emits [`ClientEvent::LoggedOut`](super::ClientEvent::LoggedOut).
    /// Authenticated commands are refused from now on.
    pub fn logout(&mut self, now: Now) -> Result<u32, CommandError> {
        let id = self.submit(now, Logout {}.into())?;
        self.auth.logging_out = true;
        Ok(id)
    }

    /// Creates a password-protected room; `verifier` is derived from the
    /// room password on the client, with the room's public `descriptor`
    /// (random room id, key-derivation costs) that joiners fetch with
    /// [`room_info`](Self::room_info).
    pub fn create_room(
        &mut self,
        now: Now,
        room: &str,
        verifier: Bytes,
        descriptor: Bytes,
    ) -> Result<u32, CommandError> {
        let room = room.to_owned();
        self.submit(now, CreateRoom { room, verifier, descriptor }.into())
    }

    /// Fetches a room's public descriptor. The `Done` body is `RoomDescriptor`.
    pub fn room_info(&mut self, now: Now, room: &str) -> Result<u32, CommandError> {
        let room = room.to_owned();
        self.submit(now, RoomInfo { room }.into())
    }

    /// Joins a room. The `Done` body is `RoomJoined`: members and the retained sealed history.
    pub fn join_room(&mut self, now: Now, room: &str, verifier: Bytes) -> Result<u32, CommandError> {
        let room = room.to_owned();
        self.submit(now, JoinRoom { room, verifier }.into())
    }

    /// Leaves a room.
    pub fn leave_room(&mut self, now: Now, room: &str) -> Result<u32, CommandError> {
        let room = room.to_owned();
        self.submit(now, LeaveRoom { room }.into())
    }

    /// Fetches a room's retained sealed history (`Done` body `History`).
    pub fn room_history(&mut self, now: Now, room: &str) -> Result<u32, CommandError> {
        let room = room.to_owned();
        self.submit(now, RoomHistory { room }.into())
    }

    /// Deletes a room (owner only).
    pub fn delete_room(&mut self, now: Now, room: &str) -> Result<u32, CommandError> {
        let room = room.to_owned();
        self.submit(now, DeleteRoom { room }.into())
    }

    /// Sends a sealed message to a room (`Done` body `Sent` with its room sequence number).
    pub fn send_room(&mut self, now: Now, room: &str, sealed: Bytes) -> Result<u32, CommandError> {
        let room = room.to_owned();
        self.submit(now, SendRoom { room, sealed }.into())
    }

    /// Asks `peer` for a private conversation (`Done` 200, or 202 when queued for an offline peer).
    pub fn request_mp(&mut self, now: Now, peer: &str, handshake: Bytes) -> Result<u32, CommandError> {
        let peer = peer.to_owned();
        self.submit(now, RequestMp { peer, handshake }.into())
    }

    /// Accepts `peer`'s request (`Done` body `PeerKeys`: the requester's keys).
    pub fn accept_mp(&mut self, now: Now, peer: &str, handshake: Bytes) -> Result<u32, CommandError> {
        let peer = peer.to_owned();
        self.submit(now, AcceptMp { peer, handshake }.into())
    }

    /// Sends a sealed private message (`Done` 200 delivered, 202 queued; body `Sent`).
    pub fn send_mp(&mut self, now: Now, peer: &str, sealed: Bytes) -> Result<u32, CommandError> {
        let peer = peer.to_owned();
        self.submit(now, SendMp { peer, sealed }.into())
    }

    /// Ends (or refuses) a private conversation.
    pub fn close_mp(&mut self, now: Now, peer: &str) -> Result<u32, CommandError> {
        let peer = peer.to_owned();
        self.submit(now, CloseMp { peer }.into())
    }

    /// Fetches a user's identity public key (`Done` body `IdentityKey`).
    pub fn fetch_key(&mut self, now: Now, username: &str) -> Result<u32, CommandError> {
        let username = username.to_owned();
        self.submit(now, FetchKey { username }.into())
    }

    /// Registers this account's identity key, for an account that has none.
    pub fn set_identity_key(&mut self, now: Now, key: Bytes) -> Result<u32, CommandError> {
        self.submit(now, SetIdentityKey { identity_key: key }.into())
    }

    /// Asks for a single-use code proving this user to the third party
    /// `audience` (`Done` body `CodeIssued`: the code and its expiry, at most
    /// 60 s away; `Failed` 501 when the server offers no codes).
    pub fn issue_code(&mut self, now: Now, audience: &str) -> Result<u32, CommandError> {
        let audience = audience.to_owned();
        self.submit(now, IssueCode { audience }.into())
    }

    /// Checks (and consumes) a code `username` gave to `audience`; anonymous,
    /// made by the third party. `Done` (200, empty body) when valid; `Failed`
    /// 401 forged, 403 other audience, 409 already used, 410 expired.
    pub fn verify_code(&mut self, now: Now, username: &str, audience: &str, code: &str) -> Result<u32, CommandError> {
        let body = VerifyCode { username: username.to_owned(), audience: audience.to_owned(), code: code.to_owned() };
        self.submit(now, body.into())
    }

    /// Checks, numbers and queues a request, and writes it if it can go now.
    fn submit(&mut self, now: Now, body: RequestBody) -> Result<u32, CommandError> {
        if needs_auth(body.opcode()) && (!self.auth.has_session() || self.auth.logging_out) {
            return Err(CommandError::NotLoggedIn);
        }
        self.validate(&body)?;
        if self.outbox.user_len() >= self.config.max_outbox {
            return Err(CommandError::OutboxFull(self.config.max_outbox));
        }
        self.touch(now);
        // Acknowledgements due ride along with the request instead of waiting.
        self.send_acks(now);
        let id = self.alloc_id()?;
        self.outbox.push(Entry::new(id, now.unix_ms, body, Origin::User));
        self.flush();
        Ok(id)
    }

    /// Every field within its bound, and the whole request within `max_data`.
    pub(super) fn validate(&self, body: &RequestBody) -> Result<(), CommandError> {
        let limits = &self.config.limits;
        let long_max = limits.max_data.min(u64::from(u32::MAX));
        let check = |field: &'static str, len: usize, max: u64| {
            let len = len as u64;
            if len > max { Err(CommandError::FieldTooLong { field, len, max }) } else { Ok(len) }
        };
        let layout = RequestBody::layout(body.opcode()).unwrap_or(&[]);
        let mut total = REQUEST_HEADER;
        for ((_, kind), (field, value)) in layout.iter().zip(body.fields()) {
            let size = match value {
                FieldValue::Int(_) => match *kind {
                    "u16" => 2,
                    "u32" => 4,
                    _ => 8,
                },
                FieldValue::Str(s) => match *kind {
                    "name" => 2 + check(field, s.len(), u64::from(limits.max_name))?,
                    "text" => 2 + check(field, s.len(), u64::from(limits.max_text))?,
                    _ => 4 + check(field, s.len(), long_max)?,
                },
                FieldValue::Bytes(b) => 4 + check(field, b.len(), long_max)?,
                FieldValue::Names(names) => {
                    check(field, names.len(), u64::from(limits.max_items))?;
                    let mut n = 2;
                    for name in names {
                        n += 2 + check(field, name.len(), u64::from(limits.max_name))?;
                    }
                    n
                }
                // No request carries history entries.
                FieldValue::Entries(_) => return Err(CommandError::TooLarge { len: u64::MAX, max: 0 }),
            };
            total = total.saturating_add(size);
        }
        if total > limits.max_data {
            return Err(CommandError::TooLarge { len: total, max: limits.max_data });
        }
        Ok(())
    }

    /// The next request id.
    pub(super) fn alloc_id(&mut self) -> Result<u32, CommandError> {
        let id = self.next_id.ok_or(CommandError::IdsExhausted)?;
        self.next_id = id.checked_add(1);
        self.dirty = true;
        Ok(id)
    }
}
