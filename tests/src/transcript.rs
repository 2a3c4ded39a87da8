//! A scripted peer for the server machine that writes a transcript.
//!
//! Each line: elapsed virtual time, session label, direction (`->` to the
//! server, `<-` from it), frame type, `name(number)` opcode, request id,
//! status and code, and a short body summary. Tokens print as `<access>` /
//! `<refresh>` and blobs as their length (or their text when short and
//! printable), so transcripts hold no raw instants and no random bytes.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use confab_proto::server::{Action, Change, HashParams};
use confab_proto::wire::{EventBody, FieldValue, FrameDecoder, Message, Request, RequestBody, ResponseBody, Status};
use confab_proto::{Ephemeral, Now, Server, ServerConfig, SessionId};

/// Fixed wall-clock start of every script: 2026-11-22T00:00:00Z.
pub const START_UNIX_MS: u64 = confab_proto::examples::TIMESTAMP_MS;

/// A server config for scripts: cheap argon2, otherwise the defaults.
#[must_use]
pub fn config() -> ServerConfig {
    ServerConfig { hash_params: HashParams::INSECURE_FAST, ..ServerConfig::default() }
}

/// One scripted peer connection.
#[derive(Debug)]
struct Peer {
    id: SessionId,
    decoder: FrameDecoder,
    access: Option<String>,
    refresh: Option<String>,
    open: bool,
}

/// Drives a [`Server`] from named peers and records a transcript.
#[derive(Debug)]
pub struct Script {
    server: Server,
    start: Instant,
    now: Now,
    peers: BTreeMap<String, Peer>,
    labels: HashMap<SessionId, String>,
    lines: Vec<String>,
    next_request: u32,
    /// Every message received, per peer label, in order.
    pub received: BTreeMap<String, Vec<Message>>,
    /// Every change persisted, in order.
    pub changes: Vec<Change>,
}

impl Script {
    /// A script over a fresh server with `config`.
    #[must_use]
    pub fn new(config: ServerConfig) -> Script {
        Script::new_at(config, START_UNIX_MS)
    }

    /// A script whose wall clock starts at `start_unix_ms` (to replay tokens minted elsewhere).
    #[must_use]
    pub fn new_at(config: ServerConfig, start_unix_ms: u64) -> Script {
        let start = Instant::now();
        let now = Now::new(start, start_unix_ms);
        Script {
            server: Server::new(config, [7; 32], now).expect("a valid configuration"),
            start,
            now,
            peers: BTreeMap::new(),
            labels: HashMap::new(),
            lines: Vec::new(),
            next_request: 1,
            received: BTreeMap::new(),
            changes: Vec::new(),
        }
    }

    /// The server machine.
    #[must_use]
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The server machine, to call the adapter-side methods (`jwks_fetched`).
    pub fn server_mut(&mut self) -> &mut Server {
        &mut self.server
    }

    /// The current virtual time.
    #[must_use]
    pub fn now(&self) -> Now {
        self.now
    }

    fn elapsed(&self) -> String {
        let d = self.now.instant - self.start;
        format!("+{}.{:03}s", d.as_secs(), d.subsec_millis())
    }

    /// Adds a free-form comment line.
    pub fn note(&mut self, text: &str) {
        self.lines.push(format!("# {text}"));
    }

    /// Opens a connection labelled `label`.
    pub fn connect(&mut self, label: &str) {
        let id = self.server.open_session(self.now).expect("session limit");
        let decoder = FrameDecoder::new(self.server.config().limits);
        self.peers.insert(label.to_owned(), Peer { id, decoder, access: None, refresh: None, open: true });
        self.labels.insert(id, label.to_owned());
        let line = format!("{} {label} connects", self.elapsed());
        self.lines.push(line);
    }

    /// Sends a request from `label`, with its access token when it has one. Returns the request id.
    pub fn send(&mut self, label: &str, body: impl Into<RequestBody>) -> u32 {
        let id = self.next_request;
        self.next_request += 1;
        self.send_with_id(label, id, body)
    }

    /// Sends a request with a chosen id (to script retries).
    pub fn send_with_id(&mut self, label: &str, request_id: u32, body: impl Into<RequestBody>) -> u32 {
        let auth = self.peers[label].access.clone().unwrap_or_default();
        self.send_auth(label, request_id, body, auth.as_bytes())
    }

    /// Sends a request with an explicit auth part.
    pub fn send_auth(&mut self, label: &str, request_id: u32, body: impl Into<RequestBody>, auth: &[u8]) -> u32 {
        let msg = Message::Request(Request { request_id, timestamp_ms: self.now.unix_ms, body: body.into() });
        let line = format!("{} {label} -> {}", self.elapsed(), describe(&msg));
        self.lines.push(line);
        let bytes = msg.to_bytes(auth);
        self.raw(label, &bytes);
        request_id
    }

    /// Sends raw bytes from `label` (for malformed input). `note` adds a line describing them.
    pub fn send_raw(&mut self, label: &str, bytes: &[u8], note: &str) {
        let line = format!("{} {label} -> raw {} bytes: {note}", self.elapsed(), bytes.len());
        self.lines.push(line);
        self.raw(label, bytes);
    }

    fn raw(&mut self, label: &str, bytes: &[u8]) {
        let id = self.peers[label].id;
        self.server.handle_input(self.now, id, bytes);
        self.pump();
    }

    /// The transport of `label` drops.
    pub fn disconnect(&mut self, label: &str) {
        let line = format!("{} {label} disconnects", self.elapsed());
        self.lines.push(line);
        if let Some(p) = self.peers.get_mut(label) {
            p.open = false;
            let id = p.id;
            self.server.close_session(self.now, id);
        }
        self.pump();
    }

    /// `label`'s transport reports `pending` unsent bytes.
    pub fn backlog(&mut self, label: &str, pending: usize) {
        let line = format!("{} {label} transport backlog: {pending} bytes", self.elapsed());
        self.lines.push(line);
        let id = self.peers[label].id;
        self.server.handle_backlog(self.now, id, pending);
        self.pump();
    }

    /// Advances virtual time by `d` and fires the server's timers.
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now.advance(d);
        self.lines.push(format!("{} (time passes)", self.elapsed()));
        self.server.handle_timeout(self.now);
        self.pump();
    }

    /// The access token of `label` (to forge or replay it in scripts).
    #[must_use]
    pub fn access_token(&self, label: &str) -> Option<String> {
        self.peers[label].access.clone()
    }

    /// The refresh token of `label`.
    #[must_use]
    pub fn refresh_token(&self, label: &str) -> Option<String> {
        self.peers[label].refresh.clone()
    }

    /// Gives `label` tokens (to act as another connection of the same user).
    pub fn set_tokens(&mut self, label: &str, access: Option<String>, refresh: Option<String>) {
        let p = self.peers.get_mut(label).expect("known peer");
        p.access = access;
        p.refresh = refresh;
    }

    /// Whether `label`'s connection is still open on the server side.
    #[must_use]
    pub fn is_open(&self, label: &str) -> bool {
        self.peers[label].open
    }

    /// Drains the server until a turn is empty: jobs run inline, each turn's
    /// changes recorded (the script's store), then its frames decoded and recorded.
    pub fn pump(&mut self) {
        loop {
            let mut turn = self.server.drain();
            let quiet = turn.is_empty();
            for job in turn.take_jobs() {
                let result = job.run();
                self.server.handle_work(self.now, result);
            }
            let Ok(committed) = turn.commit(&mut Ephemeral);
            for change in committed.changes() {
                // A folded change is shown as the records a store logs for it.
                let unfolded = change.unfold();
                for logged in unfolded.as_ref().map_or(std::slice::from_ref(change), |parts| &parts[..]) {
                    let line = format!("{}   persist {}", self.elapsed(), describe_change(logged));
                    self.lines.push(line);
                }
                self.changes.push(change.clone());
            }
            for action in committed {
                match action {
                    Action::Transmit { session, bytes } => self.deliver(session, &bytes),
                    Action::Close { session, code, reason } => {
                        let label = self.labels.get(&session).cloned().unwrap_or_default();
                        let line = format!("{} {label} closed by server: {code} {reason:?}", self.elapsed());
                        self.lines.push(line);
                        if let Some(p) = self.peers.get_mut(&label) {
                            p.open = false;
                        }
                    }
                    Action::Log(_) => {}
                }
            }
            if quiet {
                return;
            }
        }
    }

    fn deliver(&mut self, session: SessionId, bytes: &Bytes) {
        let Some(label) = self.labels.get(&session).cloned() else {
            return;
        };
        let limits = self.server.config().limits;
        let peer = self.peers.get_mut(&label).expect("known peer");
        peer.decoder.push(bytes);
        let mut decoded = Vec::new();
        while let Ok(Some(frame)) = peer.decoder.next_frame() {
            decoded.push(Message::decode(&frame, &limits).expect("the server sends valid frames"));
        }
        for msg in decoded {
            if let Message::Response(r) = &msg
                && let ResponseBody::Tokens(t) = &r.body
            {
                let p = self.peers.get_mut(&label).expect("known peer");
                p.access = Some(t.access_token.clone());
                p.refresh = Some(t.refresh_token.clone());
            }
            let line = format!("{} {label} <- {}", self.elapsed(), describe(&msg));
            self.lines.push(line);
            self.received.entry(label.clone()).or_default().push(msg);
        }
    }

    /// Messages `label` received since the last call.
    pub fn take_received(&mut self, label: &str) -> Vec<Message> {
        self.received.remove(label).unwrap_or_default()
    }

    /// The transcript so far.
    #[must_use]
    pub fn transcript(&self) -> String {
        let mut out = self.lines.join("\n");
        out.push('\n');
        out
    }
}

/// A one-line summary of a message.
#[must_use]
pub fn describe(msg: &Message) -> String {
    let mut s = String::new();
    match msg {
        Message::Request(r) => {
            write!(s, "request {} #{}", r.body.opcode(), r.request_id).unwrap();
            fields(&mut s, &r.body.fields());
        }
        Message::Response(r) => {
            write!(s, "response {} #{} {} {}", r.opcode, r.request_id, r.status.name(), r.code).unwrap();
            if r.status == Status::Error
                && let ResponseBody::Error(e) = &r.body
            {
                write!(s, " {:?}", e.reason).unwrap();
                if e.retry_after_ms > 0 {
                    write!(s, " retry_after_ms={}", e.retry_after_ms).unwrap();
                }
            } else {
                fields(&mut s, &r.body.fields());
            }
        }
        Message::Event(e) => {
            write!(s, "event {}", e.body.opcode()).unwrap();
            if e.request_id != 0 {
                write!(s, " #{}", e.request_id).unwrap();
            }
            if let EventBody::ErrorEvent(err) = &e.body {
                write!(s, " {} at byte {} {:?}", err.code, err.offset, err.reason).unwrap();
            } else {
                fields(&mut s, &e.body.fields());
            }
        }
        Message::Ping(p) => write!(s, "ping nonce={}", p.nonce).unwrap(),
        Message::Pong(p) => write!(s, "pong nonce={}", p.nonce).unwrap(),
        Message::Close(c) => write!(s, "close {} {:?}", c.code, c.reason).unwrap(),
    }
    s
}

fn fields(s: &mut String, fields: &[(&'static str, FieldValue<'_>)]) {
    for (name, value) in fields {
        if name.ends_with("_ms") {
            continue; // wall-clock values: derived from the virtual clock, left out for readability
        }
        write!(s, " {name}=").unwrap();
        match value {
            FieldValue::Int(n) => write!(s, "{n}").unwrap(),
            FieldValue::Str(t) if t.starts_with("cfa_") => s.push_str("<access>"),
            FieldValue::Str(t) if t.starts_with("cfr_") => s.push_str("<refresh>"),
            FieldValue::Str(t) if *name == "jwt" => s.push_str(&describe_jwt(t)),
            FieldValue::Str(t) if *name == "jwks" => s.push_str(&describe_jwks(t)),
            FieldValue::Str(t) if *name == "code" => write!(s, "<code {} chars>", t.len()).unwrap(),
            FieldValue::Str(t) if name.contains("password") || name.contains("passphrase") => {
                write!(s, "<{} chars>", t.chars().count()).unwrap();
            }
            FieldValue::Str(t) => write!(s, "{t:?}").unwrap(),
            FieldValue::Bytes(b) => blob(s, b),
            FieldValue::Names(n) => write!(s, "{n:?}").unwrap(),
            FieldValue::Entries(e) => {
                let items: Vec<String> = e
                    .iter()
                    .map(|m| {
                        let mut t = format!("{}#{}:", m.from, m.seq);
                        blob(&mut t, &m.sealed);
                        t
                    })
                    .collect();
                write!(s, "[{}]", items.join(", ")).unwrap();
            }
        }
    }
}

/// The first 8 characters of a `kid`, enough to tell keys apart in a transcript.
#[must_use]
pub fn short_kid(kid: &str) -> String {
    kid.chars().take(8).collect()
}

/// A JWT as `<jwt kid=... {claims}>`, with `jti` shortened.
fn describe_jwt(jwt: &str) -> String {
    use base64::Engine as _;
    let decode = |part: Option<&str>| -> serde_json::Map<String, serde_json::Value> {
        part.and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    };
    let mut parts = jwt.split('.');
    let header = decode(parts.next());
    let mut claims = decode(parts.next());
    if let Some(serde_json::Value::String(jti)) = claims.get_mut("jti") {
        *jti = format!("{}...", &jti[..jti.len().min(8)]);
    }
    let kid = header.get("kid").and_then(|k| k.as_str()).map(short_kid).unwrap_or_default();
    let alg = header.get("alg").and_then(|k| k.as_str()).unwrap_or_default();
    format!("<jwt {alg} kid={kid} {}>", serde_json::Value::Object(claims))
}

/// A JWK Set as the short `kid`s of its keys.
fn describe_jwks(jwks: &str) -> String {
    let doc: serde_json::Value = serde_json::from_str(jwks).unwrap_or_default();
    let kids: Vec<String> = doc["keys"]
        .as_array()
        .map(|keys| keys.iter().map(|k| short_kid(k["kid"].as_str().unwrap_or("?"))).collect())
        .unwrap_or_default();
    format!("<jwks [{}]>", kids.join(", "))
}

fn blob(s: &mut String, b: &[u8]) {
    if b.len() <= 24 && b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
        write!(s, "'{}'", String::from_utf8_lossy(b)).unwrap();
    } else {
        write!(s, "<{} bytes>", b.len()).unwrap();
    }
}

/// A one-line summary of a change, without secrets.
#[must_use]
pub fn describe_change(change: &Change) -> String {
    match change {
        Change::UserCreated { username, .. } => format!("user_created {username}"),
        Change::IdentityKeySet { username, .. } => format!("identity_key_set {username}"),
        Change::TokenIssued { record, .. } => {
            format!("token_issued {:?} {} family={}", record.kind, record.username, record.family)
        }
        Change::TokenRotated { .. } => "token_rotated".into(),
        Change::TokenRotatedKeyed { .. } => "token_rotated (retry key kept)".into(),
        Change::ExchangeAnswered { .. } => "exchange_answered (its pair authenticated a request)".into(),
        Change::TokensRevoked { hashes } => format!("tokens_revoked {}", hashes.len()),
        Change::FamilyRevoked { family } => format!("family_revoked {family}"),
        Change::TokensPurged { .. } => "tokens_purged".into(),
        Change::RoomCreated { room, owner, .. } => format!("room_created {room} owner={owner}"),
        Change::RoomJoined { room, user } => format!("room_joined {room} {user}"),
        Change::RoomLeft { room, user } => format!("room_left {room} {user}"),
        Change::RoomDeleted { room } => format!("room_deleted {room}"),
        Change::RoomDescribed { room, descriptor } => format!("room_described {room} ({} bytes)", descriptor.len()),
        Change::RoomMessage { room, entry } => format!("room_message {room} #{} from {}", entry.seq, entry.from),
        Change::ConversationSet { a, b, state } => {
            use confab_proto::server::state::Conversation;
            let state = match state {
                None => "ended".to_owned(),
                Some(Conversation::Open) => "open".to_owned(),
                Some(Conversation::Requested { by, .. }) => format!("requested by {by}"),
                Some(Conversation::Requesting { by, .. }) => format!("requested by {by}, not yet answered"),
                Some(Conversation::Accepting { by, .. }) => format!("requested by {by}, accepted, not yet answered"),
            };
            format!("conversation {a}/{b} {state}")
        }
        Change::Enqueued { from, to, item } => format!("enqueued {from}->{to} #{} {}", item.seq, item_kind(&item.kind)),
        Change::Acked { from, to, upto } => format!("acked {from}->{to} up to #{upto}"),
        Change::Dropped { from, to, seq } => format!("dropped {from}->{to} #{seq}"),
        Change::NoticeAdded { user, peer, seq } => format!("notice_added {user}: {peer} #{seq}"),
        Change::NoticesCleared { user } => format!("notices_cleared {user}"),
        Change::Recorded { family, request_id, response } => {
            format!("recorded family={family} #{request_id} {} {}", response.opcode, response.code)
        }
        Change::FamilyAllocated { family } => format!("family_allocated {family}"),
        Change::OidcLoginBound { key, login } => {
            format!("oidc_login {:02x}{:02x}.. family={}", key[0], key[1], login.family)
        }
        Change::RoomHistoryTrimmed { room, upto } => format!("room_history_trimmed {room} up to #{upto}"),
        Change::MessageSent { .. } => {
            let parts = change.unfold().into_iter().flatten();
            parts.map(|part| describe_change(&part)).collect::<Vec<_>>().join("; ")
        }
        Change::MailOut { to, seq, item } => {
            let what = match confab_proto::server::MailItem::decode(item) {
                Ok(confab_proto::server::MailItem::FetchKey { peer, .. }) => format!("fetch_key {peer}"),
                Ok(confab_proto::server::MailItem::KeyFound { username, .. }) => format!("key_found {username}"),
                Ok(confab_proto::server::MailItem::Refused { code, .. }) => format!("refused {code}"),
                Ok(
                    ref item @ (confab_proto::server::MailItem::MpRequest { ref from, ref to, .. }
                    | confab_proto::server::MailItem::MpAccept { ref from, ref to, .. }
                    | confab_proto::server::MailItem::MpSend { ref from, ref to, .. }
                    | confab_proto::server::MailItem::MpClose { ref from, ref to, .. }),
                ) => format!("{} {from}->{to}", item.name()),
                Ok(confab_proto::server::MailItem::MpQueued { code, seq, .. }) => format!("mp_queued {code} #{seq}"),
                Ok(item) => item.name().to_owned(),
                Err(e) => format!("undecodable: {e}"),
            };
            format!("mail_out to p{to} #{seq} {what}")
        }
        Change::MailIn { from, seq } => format!("mail_in from p{from} #{seq}"),
        Change::RequestMailed { to, ticket, request } => {
            format!("request_mailed to p{to} #{ticket} {} #{}", request.opcode, request.request_id)
        }
        Change::RequestAnswered { from, ticket, response } => {
            format!("request_answered by p{from} #{ticket} {}", response.code)
        }
        Change::OidcSubjectBound { subject, username } => {
            format!("oidc_subject {:02x}{:02x}.. bound to {username}", subject[0], subject[1])
        }
        Change::SigningKeysSet { records } => {
            let keys: Vec<String> = records
                .iter()
                .map(|r| format!("{}{}", short_kid(&r.kid), if r.current { " (current)" } else { "" }))
                .collect();
            format!("signing_keys [{}]", keys.join(", "))
        }
    }
}

fn item_kind(kind: &confab_proto::server::state::ItemKind) -> &'static str {
    use confab_proto::server::state::ItemKind;
    match kind {
        ItemKind::Request { .. } => "mp_request",
        ItemKind::Accepted { .. } => "mp_accepted",
        ItemKind::Closed { .. } => "mp_closed",
        ItemKind::Message { .. } => "message",
    }
}
