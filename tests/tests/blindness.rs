//! Blindness over a longer scenario: three `SecureClient`s exchange known
//! plaintexts (MPs both ways, a room) through a real server while users go
//! offline and come back and the server crashes and restarts from its
//! store. Every message arrives decrypted, exactly once; and neither the
//! server's state, nor its store, nor any persisted change, nor any log
//! event holds a plaintext, a content key, the room password or a private
//! identity key (as `Debug` text in any form, or inside any stored blob).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use confab_proto::e2e::{IdentityKey, SecureClient, SecureEvent, SecureOutput, fixtures};
use confab_proto::server::state::ItemKind;
use confab_proto::server::{Action, Change, HashParams, MemoryStore, ServerLog, State};
use confab_proto::{Client, ClientConfig, Ephemeral, Now, Server, ServerConfig, SessionId};
use rand::SeedableRng;
use rand::rngs::StdRng;

const ROOM: &str = "ops";
const ROOM_PASSWORD: &[u8] = b"long random room password 8c1f";
const NAMES: [&str; 3] = ["alice", "bob", "carol"];

struct User {
    name: &'static str,
    sc: SecureClient,
    session: Option<SessionId>,
    events: Vec<SecureEvent>,
}

struct World {
    config: ServerConfig,
    server: Server,
    store: MemoryStore,
    now: Now,
    users: Vec<User>,
    changes: Vec<Change>,
    log: Vec<ServerLog>,
}

impl World {
    fn new() -> World {
        let now = Now::new(Instant::now(), 1_700_000_000_000);
        let config = ServerConfig { hash_params: HashParams::INSECURE_FAST, ..ServerConfig::default() };
        let store = MemoryStore::new(&config);
        let server = Server::new(config.clone(), [1; 32], now).expect("a valid configuration");
        let keys = [fixtures::ALICE_PKCS8, fixtures::BOB_PKCS8, fixtures::MALLORY_PKCS8];
        let users = NAMES
            .iter()
            .zip(keys)
            .enumerate()
            .map(|(i, (name, pkcs8))| {
                let identity = IdentityKey::from_pkcs8_der(pkcs8).unwrap();
                let client = Client::new(ClientConfig::default(), now);
                let rng = StdRng::from_seed([i as u8 + 10; 32]);
                let sc = SecureClient::new(client, identity, rng, HashParams::INSECURE_FAST, now);
                User { name, sc, session: None, events: Vec::new() }
            })
            .collect();
        World { config, server, store, now, users, changes: Vec::new(), log: Vec::new() }
    }

    fn connect(&mut self, i: usize) {
        if self.users[i].session.is_none() {
            self.users[i].session = Some(self.server.open_session(self.now).unwrap());
            self.users[i].sc.connected(self.now);
        }
        self.pump();
    }

    fn disconnect(&mut self, i: usize) {
        if let Some(session) = self.users[i].session.take() {
            self.server.close_session(self.now, session);
        }
        self.users[i].sc.disconnected(self.now);
        self.pump();
    }

    /// The server process dies and restarts from its store (with a fresh seed).
    fn crash(&mut self, seed: u8) {
        for user in &mut self.users {
            if user.session.take().is_some() {
                user.sc.disconnected(self.now);
            }
        }
        let state = self.store.state().clone();
        self.server = Server::restore(self.config.clone(), [seed; 32], state, self.now).expect("a valid configuration");
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now.advance(d);
        self.server.handle_timeout(self.now);
        for user in &mut self.users {
            user.sc.handle_timeout(self.now);
        }
        self.pump();
    }

    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut busy = false;
            for user in &mut self.users {
                // The clients never restart here: they keep nothing.
                for output in user.sc.drain().commit(&mut Ephemeral).unwrap() {
                    match output {
                        SecureOutput::Transmit(bytes) => {
                            if let Some(session) = user.session {
                                self.server.handle_input(self.now, session, &bytes);
                            }
                        }
                        SecureOutput::Event(event) => user.events.push(event),
                        SecureOutput::Close { .. } => {
                            if let Some(session) = user.session.take() {
                                self.server.close_session(self.now, session);
                            }
                        }
                        SecureOutput::Timeout(_) => break,
                    }
                    busy = true;
                }
            }
            loop {
                let mut turn = self.server.drain();
                if turn.is_empty() {
                    break;
                }
                busy = true;
                for job in turn.take_jobs() {
                    self.server.handle_work(self.now, job.run());
                }
                // Committed before the transmits that follow it (group commit).
                let Ok(committed) = turn.commit(&mut self.store);
                self.changes.extend_from_slice(committed.changes());
                for action in committed {
                    match action {
                        Action::Log(event) => self.log.push(event),
                        Action::Transmit { session, bytes } => {
                            if let Some(user) = self.users.iter_mut().find(|u| u.session == Some(session)) {
                                user.sc.handle_input(self.now, &bytes);
                            }
                        }
                        Action::Close { session, .. } => {
                            if let Some(user) = self.users.iter_mut().find(|u| u.session == Some(session)) {
                                user.session = None;
                                user.sc.disconnected(self.now);
                            }
                        }
                    }
                }
            }
            if !busy {
                return;
            }
        }
        panic!("the network never became quiet");
    }

    fn has(&self, i: usize, f: impl Fn(&SecureEvent) -> bool) -> bool {
        self.users[i].events.iter().any(f)
    }
}

/// Every form a secret's bytes take in `Debug` text.
fn debug_forms(secret: &[u8]) -> Vec<String> {
    let escaped = format!("{:?}", Bytes::copy_from_slice(secret));
    let list = format!("{secret:?}");
    let mut forms =
        vec![hex::encode(secret), escaped[2..escaped.len() - 1].to_owned(), list[1..list.len() - 1].to_owned()];
    if let Ok(text) = std::str::from_utf8(secret) {
        forms.push(text.to_owned());
    }
    forms
}

fn check_text(secrets: &[(String, Vec<u8>)], place: &str, text: &str) {
    for (what, bytes) in secrets {
        assert!(!debug_forms(bytes).iter().any(|form| text.contains(form.as_str())), "{what} leaked into {place}");
    }
}

fn check_blob(secrets: &[(String, Vec<u8>)], place: &str, blob: &[u8]) {
    for (what, bytes) in secrets {
        assert!(!blob.windows(bytes.len()).any(|w| w == &bytes[..]), "{what} found in a blob of {place}");
    }
}

fn check_state(secrets: &[(String, Vec<u8>)], place: &str, state: &State) {
    check_text(secrets, place, &format!("{state:?}"));
    for (_, room) in state.rooms().iter() {
        check_blob(secrets, place, &room.verifier);
        for entry in &room.history {
            check_blob(secrets, place, &entry.sealed);
        }
    }
    for item in state.lanes().lanes().flat_map(|(_, _, lane)| &lane.items) {
        if let ItemKind::Message { sealed } = &item.kind {
            check_blob(secrets, place, sealed);
        }
    }
}

#[test]
fn a_long_scenario_leaves_the_server_blind() {
    let mut w = World::new();
    for (i, name) in NAMES.into_iter().enumerate() {
        w.connect(i);
        let now = w.now;
        w.users[i].sc.register(now, name, "correct horse battery", "apple river stone").unwrap();
        w.pump();
        w.users[i].sc.login(now, name, "correct horse battery", "apple river stone").unwrap();
        w.pump();
    }
    // Two MP pairs (the target offline at request time), one room.
    let pairs = [(0, 1), (1, 2)];
    for &(a, b) in &pairs {
        w.disconnect(b);
        let now = w.now;
        w.users[a].sc.request_mp(now, NAMES[b]).unwrap();
        w.pump();
        w.connect(b);
        w.users[b].sc.accept_mp(now, NAMES[a]).unwrap();
        w.pump();
        assert!(w.has(a, |e| matches!(e, SecureEvent::MpReady { peer } if peer == NAMES[b])));
    }
    let now = w.now;
    w.users[0].sc.create_room(now, ROOM, ROOM_PASSWORD).unwrap();
    w.pump();
    for i in 1..3 {
        w.users[i].sc.join_room(now, ROOM, ROOM_PASSWORD).unwrap();
        w.pump();
    }

    // Seeded random traffic, disconnections and crashes.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut mp_sent: Vec<(usize, usize, String)> = Vec::new();
    let mut room_sent: Vec<(usize, String)> = Vec::new();
    let mut crashes = 0;
    for step in 0..120 {
        let r = next();
        let now = w.now;
        match r % 8 {
            0..=2 => {
                let (a, b) = pairs[(r / 8 % 2) as usize];
                let (from, to) = if r / 16 % 2 == 0 { (a, b) } else { (b, a) };
                let text = format!("mp {step} from {} nonce {:016x}", NAMES[from], next());
                w.users[from].sc.send_mp(now, NAMES[to], &text).unwrap();
                mp_sent.push((from, to, text));
            }
            3 if room_sent.len() < 15 => {
                let from = (r / 8 % 3) as usize;
                let text = format!("room {step} from {} nonce {:016x}", NAMES[from], next());
                w.users[from].sc.send_room(now, ROOM, &text).unwrap();
                room_sent.push((from, text));
            }
            4 | 5 => {
                let i = (r / 8 % 3) as usize;
                if w.users[i].session.is_some() { w.disconnect(i) } else { w.connect(i) }
            }
            6 if crashes < 3 => {
                crashes += 1;
                w.crash(100 + crashes);
                for i in 0..3 {
                    if r >> (8 + i) & 1 == 1 {
                        w.connect(i);
                    }
                }
            }
            _ => w.advance(Duration::from_secs(5)),
        }
        w.pump();
    }
    for i in 0..3 {
        w.connect(i);
    }
    w.advance(Duration::from_secs(1));
    assert!(
        crashes > 0 && mp_sent.len() > 20 && room_sent.len() > 5,
        "{crashes} {} {}",
        mp_sent.len(),
        room_sent.len()
    );

    // Every MP arrived decrypted, exactly once, in order; nothing failed.
    for (to, user) in w.users.iter().enumerate() {
        let failed: Vec<_> = user.events.iter().filter(|e| matches!(e, SecureEvent::DecryptFailed { .. })).collect();
        assert!(failed.is_empty(), "{}: {failed:?}", user.name);
        let mut got: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for e in &user.events {
            if let SecureEvent::Mp { from, text, .. } = e {
                got.entry(from.as_str()).or_default().push(text);
            }
        }
        for (from, from_name) in NAMES.into_iter().enumerate() {
            let sent: Vec<&str> =
                mp_sent.iter().filter(|(f, t, _)| *f == from && *t == to).map(|(_, _, s)| s.as_str()).collect();
            assert_eq!(got.get(from_name).cloned().unwrap_or_default(), sent, "{from_name} -> {}", user.name);
        }
    }
    // Every room message reached the other members, live or through history.
    for (i, name) in NAMES.into_iter().enumerate() {
        let now = w.now;
        w.users[i].sc.room_history(now, ROOM).unwrap();
        w.pump();
        for (from, text) in room_sent.iter().filter(|(f, _)| *f != i) {
            assert!(
                w.has(i, |e| matches!(e, SecureEvent::Room { text: t, .. } if t == text)),
                "{name} never read {text:?} from {}",
                NAMES[*from]
            );
        }
    }

    // The secrets.
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    for text in mp_sent.iter().map(|m| &m.2).chain(room_sent.iter().map(|r| &r.1)) {
        secrets.push((format!("plaintext {text:?}"), text.as_bytes().to_vec()));
    }
    secrets.push(("the room password".into(), ROOM_PASSWORD.to_vec()));
    for &(a, b) in &pairs {
        for (me, peer) in [(a, b), (b, a)] {
            let session = w.users[me].sc.session(NAMES[peer]).expect("session");
            for stream in [session.send_stream(), session.opener().stream()] {
                secrets.push((format!("an MP stream key of {}", NAMES[me]), stream.as_bytes().to_vec()));
            }
            let bytes = session.sealer().keys().to_bytes();
            secrets.push((format!("an MP key of {}", NAMES[me]), bytes[..16].to_vec()));
            secrets.push((format!("an MP MAC key of {}", NAMES[me]), bytes[16..].to_vec()));
        }
    }
    let room_keys = w.users[0].sc.room_keys(ROOM).unwrap().clone();
    for name in NAMES {
        let stream = room_keys.sender_key(name);
        secrets.push((format!("room stream key of {name}"), stream.as_bytes().to_vec()));
    }
    for (name, pkcs8) in [("alice", fixtures::ALICE_PKCS8), ("bob", fixtures::BOB_PKCS8)] {
        // The tail of PKCS#8 is the private CRT coefficient (the head's modulus is public).
        secrets.push((format!("private key of {name}"), pkcs8[pkcs8.len() - 64..].to_vec()));
    }
    // The checks find what they look for.
    let planted = format!("{:?}", Bytes::copy_from_slice(room_keys.sender_key("bob").as_bytes()));
    assert!(std::panic::catch_unwind(|| check_text(&secrets, "planted", &planted)).is_err());

    check_state(&secrets, "the server state", w.server.state());
    check_state(&secrets, "the store", w.store.state());
    for change in &w.changes {
        check_text(&secrets, "a persisted change", &format!("{change:?}"));
        for blob in change.blobs() {
            check_blob(&secrets, "a persisted change", blob);
        }
    }
    assert!(!w.log.is_empty());
    for event in &w.log {
        check_text(&secrets, "a server log event", &format!("{event:?}"));
    }
}

// ---- the same, through the deterministic simulator ----

/// A `SealKeys::to_bytes` value as two secrets: its AES key and its MAC key.
fn add_keys(secrets: &mut Vec<(String, Vec<u8>)>, what: &str, bytes: &[u8]) {
    secrets.push((format!("{what} (encryption)"), bytes[..16].to_vec()));
    secrets.push((format!("{what} (MAC)"), bytes[16..].to_vec()));
}

/// Seeds of `the_simulator_leaves_the_server_blind` (`CONFAB_SIM_SEED=N` replays one,
/// `CONFAB_SIM_SEEDS=A..B` runs a range).
const SIM_SEEDS: std::ops::RangeInclusive<u64> = 0..=3;

/// Runs the simulator with secure clients (fixture identity keys, room
/// passwords, signed MP handshakes, known distinctive plaintexts) under the
/// flaky and WAN fault mixes (disconnects, partitions, holds, server crashes
/// restarting from the `MemoryStore`, some right after a commit); checks the
/// run's invariants (nothing acknowledged lost, nothing delivered twice,
/// every delivery opens to what was sent) and then that neither the
/// server's final state, nor the store, nor any persisted change, nor any
/// server event, nor any server line of the trace holds a plaintext, a
/// content key (every MP session key the clients held, every room key), a
/// room password or a private identity key.
#[test]
fn the_simulator_leaves_the_server_blind() {
    use confab_sim::{Sim, SimConfig, room_password};

    let seeds = if let Ok(s) = std::env::var("CONFAB_SIM_SEED") {
        let seed: u64 = s.trim().parse().expect("CONFAB_SIM_SEED must be a number");
        seed..=seed
    } else if let Ok(range) = std::env::var("CONFAB_SIM_SEEDS") {
        let (a, b) = range.trim().split_once("..").expect("CONFAB_SIM_SEEDS must look like A..B");
        let a: u64 = a.trim().parse().expect("CONFAB_SIM_SEEDS: bad start");
        a..=b.trim_start_matches('=').trim().parse().expect("CONFAB_SIM_SEEDS: bad end")
    } else {
        SIM_SEEDS
    };
    let (mut crashes, mut plaintexts, mut keys) = (0, 0, 0);
    for seed in seeds {
        let base = if seed % 2 == 0 { SimConfig::flaky(seed) } else { SimConfig::wan(seed) };
        let config = SimConfig { secure: true, record_server: true, trace: true, ..base };
        let mut sim = Sim::new(config);
        sim.start();
        sim.run_actions();
        sim.settle();
        let report = sim.report();
        assert!(report.is_ok(), "{report}");
        crashes += report.stats.crashes;

        // The secrets.
        let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
        for (payload, _) in sim.ledger().posts() {
            assert!(payload.len() >= 60 && payload.starts_with(b"plaintext "), "{payload:?}");
            secrets.push((format!("plaintext {:?}", String::from_utf8_lossy(payload)), payload.to_vec()));
        }
        plaintexts += secrets.len();
        // Every MP session key any client held during the run.
        for (what, bytes) in sim.ledger().content_keys() {
            add_keys(&mut secrets, what, bytes);
        }
        let names: Vec<String> = sim.clients().iter().map(|id| sim.name(*id).to_owned()).collect();
        let mut descriptors = std::collections::BTreeMap::new();
        for id in sim.clients() {
            let sc = sim.secure_client(id).expect("secure mode");
            // The sessions held at the end (already recorded: checks the recording).
            for peer in &names {
                if let Some(session) = sc.session(peer) {
                    let bytes = session.sealer().keys().to_bytes();
                    assert!(sim.ledger().content_keys().iter().any(|(_, k)| k[..] == bytes[..]), "unrecorded key");
                }
            }
            for room in sim.rooms() {
                if let Some(held) = sc.room_keys(&room) {
                    let descriptor = held.descriptor();
                    let derived =
                        confab_proto::e2e::RoomKeys::derive(&room, &room_password(&room), descriptor).unwrap();
                    assert_eq!(held.verifier(), derived.verifier());
                    descriptors.insert(room.clone(), *descriptor);
                }
            }
        }
        // Every room's keys, for every possible sender, and its password.
        for room in sim.rooms() {
            if let Some(descriptor) = descriptors.get(&room) {
                let room_keys = confab_proto::e2e::RoomKeys::derive(&room, &room_password(&room), descriptor).unwrap();
                for name in &names {
                    add_keys(
                        &mut secrets,
                        &format!("{room} stream key of {name}"),
                        room_keys.sender_key(name).as_bytes(),
                    );
                }
            }
            secrets.push((format!("the password of {room}"), room_password(&room)));
        }
        for (name, pkcs8) in [("alice", fixtures::ALICE_PKCS8), ("bob", fixtures::BOB_PKCS8)] {
            secrets.push((format!("private key of {name}"), pkcs8[pkcs8.len() - 64..].to_vec()));
        }
        keys += sim.ledger().content_keys().len();

        // The server did hold sealed traffic, and the checks find what they look for.
        let server = sim.server().expect("server up at the end");
        assert!(server.state().rooms().iter().any(|(_, r)| !r.history.is_empty()), "no sealed history to search");
        let planted = format!("{:?}", sim.changes().first().map(|c| format!("{c:?}")).unwrap_or_default())
            + &String::from_utf8_lossy(&secrets[0].1);
        assert!(std::panic::catch_unwind(|| check_text(&secrets, "planted", &planted)).is_err());
        let mut blob = b"prefix".to_vec();
        blob.extend_from_slice(&secrets[secrets.len() - 3].1);
        assert!(std::panic::catch_unwind(|| check_blob(&secrets, "planted", &blob)).is_err());

        let place = |what: &str| format!("{what} (seed {seed})");
        check_state(&secrets, &place("the server state"), server.state());
        check_state(&secrets, &place("the store"), sim.store().state());
        assert!(!sim.changes().is_empty() && !sim.server_events().is_empty());
        let changes: Vec<String> = sim.changes().iter().map(|c| format!("{c:?}")).collect();
        check_text(&secrets, &place("the persisted changes"), &changes.join("\n"));
        let blobs: Vec<u8> =
            sim.changes().iter().flat_map(|c| c.blobs()).flat_map(|b| [&b[..], b"\0|\0"]).flatten().copied().collect();
        check_blob(&secrets, &place("the persisted changes"), &blobs);
        let events: Vec<String> = sim.server_events().iter().map(|e| format!("{e:?}")).collect();
        check_text(&secrets, &place("the server events"), &events.join("\n"));
        // The trace's server lines (client lines legitimately show plaintexts).
        let lines = report.trace.as_deref().unwrap_or_default();
        let server_lines: Vec<&str> = lines
            .iter()
            .map(|l| l.trim_start())
            .filter(|l| l.split_once(' ').is_some_and(|(_, t)| t.starts_with("server")))
            .collect();
        assert!(!server_lines.is_empty());
        check_text(&secrets, &place("the server's trace lines"), &server_lines.join("\n"));
    }
    assert!(crashes > 0, "no server crash in any seed");
    assert!(plaintexts > 100 && keys > 10, "{plaintexts} plaintexts, {keys} keys");
}
