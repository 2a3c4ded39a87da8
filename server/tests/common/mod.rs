//! A real `confab_proto::Server` driven by real `Client`s over function
//! calls, recording each server turn's changes: realistic input for the store.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use confab_proto::server::{Action, Change, HashParams, PhantomConfig, State};
use confab_proto::wire::{Jwks, Message, Request};
use confab_proto::{Client, ClientConfig, ClientOutput, Ephemeral, Now, Server, ServerConfig, SessionId};

/// A fast server configuration with phantom translation and a short room history.
pub fn config() -> ServerConfig {
    ServerConfig {
        hash_params: HashParams::INSECURE_FAST,
        room_history: 3,
        phantom: Some(PhantomConfig::new("service-secret-0123", "https://confab.test", "game")),
        ..ServerConfig::default()
    }
}

/// One server, its clients, and the changes of each server turn.
pub struct Net {
    pub server: Server,
    pub now: Now,
    clients: Vec<(SessionId, Client)>,
    /// Raw sessions (no client): what the server sends them is dropped.
    raw: Vec<SessionId>,
    /// Each non-empty group of changes the server emitted in one drain.
    pub turns: Vec<Vec<Change>>,
}

impl Net {
    pub fn new(config: ServerConfig) -> Net {
        let now = Now::new(Instant::now(), 1_795_305_600_000);
        let server = Server::new(config, [7; 32], now).expect("a valid configuration");
        Net { server, now, clients: Vec::new(), raw: Vec::new(), turns: Vec::new() }
    }

    /// A connected client; returns its index.
    pub fn connect(&mut self) -> usize {
        let session = self.server.open_session(self.now).expect("session");
        let mut client = Client::new(ClientConfig::default(), self.now);
        client.connected(self.now);
        self.clients.push((session, client));
        self.clients.len() - 1
    }

    pub fn client(&mut self, i: usize) -> &mut Client {
        &mut self.clients[i].1
    }

    /// Registers and logs in a new user on a new connection.
    pub fn user(&mut self, name: &str) -> usize {
        let i = self.connect();
        let now = self.now;
        let c = self.client(i);
        c.register(now, name, "correct horse", "apple river stone", Bytes::from(format!("ik-{name}"))).unwrap();
        self.run();
        self.login(i, name)
    }

    /// Logs an existing user in on a new connection.
    pub fn user_login(&mut self, name: &str) -> usize {
        let i = self.connect();
        self.login(i, name)
    }

    fn login(&mut self, i: usize, name: &str) -> usize {
        let now = self.now;
        self.client(i).login(now, name, "correct horse", "apple river stone").unwrap();
        self.run();
        assert!(self.client(i).is_logged_in(), "{name} logged in");
        i
    }

    /// Sends a `jwks` request on a raw session: the server makes its signing keys.
    pub fn jwks(&mut self) {
        let session = self.server.open_session(self.now).expect("session");
        self.raw.push(session);
        let msg = Message::Request(Request { request_id: 1, timestamp_ms: self.now.unix_ms, body: Jwks {}.into() });
        self.server.handle_input(self.now, session, &msg.to_bytes(b""));
        self.run();
    }

    /// Moves time forward and lets timers fire.
    pub fn advance(&mut self, d: Duration) {
        self.now = Now::new(self.now.instant + d, self.now.unix_ms + d.as_millis() as u64);
        self.server.handle_timeout(self.now);
        for (_, c) in &mut self.clients {
            c.handle_timeout(self.now);
        }
        self.run();
    }

    /// Moves bytes until nothing moves.
    pub fn run(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            let now = self.now;
            for (session, client) in &mut self.clients {
                for output in client.drain().commit(&mut Ephemeral).unwrap() {
                    match output {
                        ClientOutput::Transmit(bytes) => {
                            self.server.handle_input(now, *session, &bytes);
                            moved = true;
                        }
                        ClientOutput::Event(_) | ClientOutput::Close { .. } | ClientOutput::Timeout(_) => {}
                    }
                }
            }
            let mut turn = self.server.drain();
            let jobs = turn.take_jobs();
            // The store tests commit these turns themselves.
            let Ok(committed) = turn.commit(&mut Ephemeral);
            if !committed.changes().is_empty() {
                self.turns.push(committed.changes().to_vec());
            }
            for action in committed {
                let Action::Transmit { session, bytes } = action else { continue };
                moved = true;
                if let Some((_, c)) = self.clients.iter_mut().find(|(s, _)| *s == session) {
                    c.handle_input(now, &bytes);
                }
            }
            for job in jobs {
                moved = true;
                self.server.handle_work(now, job.run());
            }
            if !moved {
                return;
            }
        }
        panic!("the network never settled");
    }

    /// Every change so far, in order.
    pub fn changes(&self) -> Vec<Change> {
        self.turns.iter().flatten().cloned().collect()
    }
}

/// The state `turns` make from an empty one, as a store loads it.
pub fn applied(turns: &[Vec<Change>]) -> State {
    let c = config();
    let mut state = State::new(c.room_history, c.dedup_window);
    for change in turns.iter().flatten() {
        state.apply(change);
    }
    state
}

/// A realistic history: accounts, a room past its history cap, a private
/// conversation with queued and acknowledged messages, signing keys, a logout,
/// sweeps.
pub fn scenario() -> Net {
    let mut net = Net::new(config());
    let now = net.now;
    let alice = net.user("alice");
    let bob = net.user("bob");
    let carol = net.user("carol");
    net.client(alice)
        .create_room(now, "lobby", Bytes::from_static(b"verifier-0123456789"), Bytes::from_static(b"descriptor"))
        .unwrap();
    net.run();
    net.client(bob).join_room(now, "lobby", Bytes::from_static(b"verifier-0123456789")).unwrap();
    net.run();
    for n in 0..5 {
        net.client(alice).send_room(now, "lobby", Bytes::from(format!("sealed room {n}"))).unwrap();
        net.run();
    }
    net.client(alice).request_mp(now, "bob", Bytes::from_static(b"handshake-a")).unwrap();
    net.run();
    net.client(bob).accept_mp(now, "alice", Bytes::from_static(b"handshake-b")).unwrap();
    net.run();
    for n in 0..3 {
        net.client(alice).send_mp(now, "bob", Bytes::from(format!("sealed mp {n}"))).unwrap();
        net.run();
    }
    net.client(carol).request_mp(now, "bob", Bytes::from_static(b"handshake-c")).unwrap();
    net.run();
    net.jwks();
    net.client(carol).logout(now).unwrap();
    net.run();
    net.advance(Duration::from_secs(120));
    net
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("confab-store-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    /// The data directory inside (not created).
    pub fn data(&self) -> PathBuf {
        self.0.join("data")
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `State` fields each format appended, newest last: format 5
/// `retry_keys`, format 6 `mail_next` and `mail_applied`, format 7
/// `mail_pending` (maps: one zero byte each when empty).
pub const FIELDS_ADDED: [(u32, usize); 3] = [(5, 1), (6, 2), (7, 1)];

/// The bytes a snapshot of this build's format has beyond one of `format`
/// (4 or later): the fields appended since, all empty.
#[must_use]
pub fn fields_since(format: u32) -> usize {
    FIELDS_ADDED.iter().filter(|(f, _)| *f > format).map(|(_, n)| n).sum()
}

/// Turns a store of this build's format in `dir`'s data directory into one
/// of `format` (4 or later): its snapshot (if any) without the fields later
/// formats appended to `State` (which must be empty), its records as they
/// are (none of a later format's new variants may be among them).
pub fn downgrade_to_format(dir: &TempDir, format: u32) {
    let conn = rusqlite::Connection::open(dir.data().join(confab_server::store::DB_FILE)).unwrap();
    let snapshot: Option<Vec<u8>> =
        rusqlite::OptionalExtension::optional(conn.query_row("SELECT state FROM snapshot", [], |r| r.get(0))).unwrap();
    let Some(state) = snapshot else {
        conn.execute("UPDATE meta SET value = ?1 WHERE key = 'format'", [format]).unwrap();
        return;
    };
    let strip = fields_since(format);
    assert!(state[state.len() - strip..].iter().all(|&b| b == 0), "the later fields are empty");
    let state = &state[..state.len() - strip];
    // The checksums, as docs/ARCHITECTURE.md gives them: the snapshot's, then the chain of the
    // changes after it, then the head.
    use sha2::{Digest as _, Sha256};
    let upto: i64 = conn.query_row("SELECT upto FROM snapshot", [], |r| r.get(0)).unwrap();
    let mut sum: [u8; 32] = Sha256::new()
        .chain_update(b"confab-store snapshot\0")
        .chain_update(upto.to_be_bytes())
        .chain_update(state)
        .finalize()
        .into();
    conn.execute("UPDATE snapshot SET state = ?1, sum = ?2", rusqlite::params![state, &sum[..]]).unwrap();
    let changes: Vec<(i64, Vec<u8>)> = conn
        .prepare("SELECT seq, change FROM changes WHERE seq > ?1 ORDER BY seq")
        .unwrap()
        .query_map([upto], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut head = upto;
    for (seq, change) in changes {
        sum = Sha256::new()
            .chain_update(b"confab-store change\0")
            .chain_update(seq.to_be_bytes())
            .chain_update(sum)
            .chain_update(&change)
            .finalize()
            .into();
        conn.execute("UPDATE changes SET sum = ?1 WHERE seq = ?2", rusqlite::params![&sum[..], seq]).unwrap();
        head = seq;
    }
    conn.execute("UPDATE meta SET value = ?1 WHERE key = 'format'", [format]).unwrap();
    conn.execute("UPDATE meta SET value = ?1 WHERE key = 'head_seq'", [head]).unwrap();
    conn.execute("UPDATE meta SET value = ?1 WHERE key = 'head_sum'", [&sum[..]]).unwrap();
}

/// Turns a store of this build's format in `dir`'s data directory into the
/// layout of format 3: no checksum columns, no head record (format 3 had
/// neither; its records are encoded as format 4's are).
pub fn downgrade_to_format_3(dir: &TempDir) {
    downgrade_to_format(dir, 4);
    rusqlite::Connection::open(dir.data().join(confab_server::store::DB_FILE))
        .unwrap()
        .execute_batch(
            "ALTER TABLE changes DROP COLUMN sum;
             ALTER TABLE snapshot DROP COLUMN sum;
             DELETE FROM meta WHERE key IN ('head_seq', 'head_sum');
             UPDATE meta SET value = 3 WHERE key = 'format';",
        )
        .unwrap();
}

/// Every message in `bytes` (complete frames only).
pub fn decode_all(bytes: &[u8]) -> Vec<Message> {
    let limits = confab_proto::wire::Limits::default();
    let mut decoder = confab_proto::wire::FrameDecoder::new(limits);
    decoder.push(bytes);
    let mut out = Vec::new();
    while let Ok(Some(frame)) = decoder.next_frame() {
        out.push(Message::decode(&frame, &limits).expect("the server sends valid frames"));
    }
    out
}
