//! Hostile load (issue 12, "Done when"): the real `confab-server` (default
//! configuration) under four attacks at once, while two `confab` users
//! exchange messages through it.
//!
//! The attackers use other loopback sources than the users (127.0.0.1), as
//! attackers on other machines would; one address is expected to be limited:
//!
//! - 127.0.0.2: [`HALF_OPEN`] TCP connections that never start TLS, topped up
//!   every second as the server closes them (more than one source's share of
//!   the handshake slots, 125 of 1,000: the rest are closed at once);
//! - 127.0.0.3: [`DRIPPERS`] TLS connections, each dripping a frame that
//!   declares 1 MiB at one byte per 200 ms, reconnecting when closed;
//! - 127.0.0.4: [`GUESSERS`] connections pipelining batches of wrong-password
//!   logins for alice, bob and an unknown user;
//! - 127.0.0.5: [`REGISTRARS`] x [`REGISTRAR_LINKS`] connections registering
//!   fresh accounts one after another: each costs an argon2id hash at the
//!   default (OWASP) cost, so the hash workers stay busy and the queue fills.
//!
//! Meanwhile (the attack runs for at least [`MIN_ATTACK`], and until every
//! message is through) bob sends alice [`ROUNDS`] private messages and [`ROUNDS`] room
//! messages while alice runs `confab listen`, then the other way round. Each
//! message is tagged; the test asserts:
//!
//! - **exactly once**: each tag is printed once by the listener (and once by
//!   `dm read` afterwards);
//! - **latency**: each `confab` send command completes within
//!   [`COMMAND_BOUND`] (10 s) and each message reaches the listener within
//!   [`DELIVERY_BOUND`] (10 s) of the start of its send command. Unloaded, both
//!   take ~0.1-0.3 s (a process start, a TLS handshake, a token refresh); 10 s
//!   leaves a 30x margin for a loaded 2-core CI machine and is still below
//!   the client's 15 s answer timeout: past it, the users would see errors,
//!   i.e. the attack would deny service;
//! - **memory**: the server's RSS, sampled every 500 ms, stays below
//!   [`rss_bound_kib`]: 32 MiB (13 MiB idle, SQLite's cache, the accounts
//!   registered by the flood) + one argon2id block (19 MiB) per hash worker +
//!   64 KiB per connection the attack can hold (~10 KiB measured per TLS
//!   connection in docs/BENCHMARKS.md; drip-feeders hold what they sent);
//! - every drip-feeder is closed by the partial-frame deadline (408, about
//!   `frame_grace_secs` = 10 s after its first byte; none lives past 20 s);
//! - afterwards the users still work, and the server's log has no panic and
//!   stays under 256 KiB at its default level, info (the refusals are summed
//!   up, not written one by one; the test server also logs at debug, one line
//!   per connection, which is not counted).
//!
//! The run takes about 25 s (the attack 20 s); the figures are printed
//! (`--nocapture`) and three runs are in docs/BENCHMARKS.md ("Hostile load").

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use confab_proto::wire::{Login, Message, Register, status};
use confab_tests::procs::{CliUser, ServerProc, TempDir};
use confab_tests::raw::{RawTls, connect_from, request};
use serde_json::Value;

/// The shortest the attack runs (two frame deadlines of the drip-feeders).
const MIN_ATTACK: Duration = Duration::from_secs(20);
/// Private and room messages sent each way under attack.
const ROUNDS: usize = 10;
/// The longest one `confab` command may take under attack.
const COMMAND_BOUND: Duration = Duration::from_secs(10);
/// The longest from the start of a send command to the listener printing it.
const DELIVERY_BOUND: Duration = Duration::from_secs(10);
/// Half-open connections kept open from one source.
const HALF_OPEN: usize = 900;
/// Drip-feeding TLS connections.
const DRIPPERS: usize = 50;
/// Connections pipelining wrong-password logins.
const GUESSERS: usize = 3;
/// Wrong-password logins per pipelined batch.
const GUESS_BATCH: u32 = 100;
/// Registration threads, and connections per thread.
const REGISTRARS: usize = 4;
const REGISTRAR_LINKS: usize = 96;
/// The longest a drip-feeder may keep its connection: the 10 s frame grace
/// plus a wide margin for timers on a loaded machine.
const DRIP_BOUND: Duration = Duration::from_secs(20);
/// The most the server may log at its default level (info) during the
/// whole test: a few hundred lines. Before the log was rate-limited, a
/// login flood alone wrote 12.9 MB in 20 s.
const LOG_BOUND: usize = 256 << 10;

const HALF_OPEN_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const DRIP_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const GUESS_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
const REGISTER_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);

/// What the attackers saw, by name ("register 201", "drip closed 408"...).
#[derive(Default)]
struct Tally {
    counts: Mutex<BTreeMap<String, u64>>,
    /// How long each drip-feeding connection lived (closed or, at the end, still open).
    drip_lives: Mutex<Vec<Duration>>,
}

impl Tally {
    fn add(&self, what: impl Into<String>, n: u64) {
        *self.counts.lock().unwrap().entry(what.into()).or_default() += n;
    }
    fn get(&self, what: &str) -> u64 {
        self.counts.lock().unwrap().get(what).copied().unwrap_or(0)
    }
}

/// The attackers' shared state: the target, a stop flag and the tally.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    pin: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
}

impl Target {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn tls(&self, from: Ipv4Addr) -> Option<RawTls> {
        match RawTls::connect(from, self.addr, &self.pin, Duration::from_secs(10)) {
            Ok(link) => Some(link),
            Err(_) => {
                self.tally.add(format!("{from} connect failed"), 1);
                thread::sleep(Duration::from_millis(100));
                None
            }
        }
    }

    /// The code of the next response on `link`, waiting up to 30 s (less if stopped).
    fn response(&self, link: &mut RawTls) -> Option<u16> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && !self.stopped() {
            match link.recv(Instant::now() + Duration::from_millis(250)) {
                Ok(Some(Message::Response(r))) => return Some(r.code),
                Ok(Some(Message::Close(c))) => {
                    self.tally.add(format!("closed {}", c.code), 1);
                    return None;
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }
}

/// Keeps [`HALF_OPEN`] plain TCP connections open, reopening those the server closed.
fn half_open(t: &Target) {
    let mut held: Vec<TcpStream> = Vec::new();
    while !t.stopped() {
        while held.len() < HALF_OPEN {
            match connect_from(HALF_OPEN_SOURCE, t.addr) {
                Ok(s) => {
                    s.set_nonblocking(true).unwrap();
                    held.push(s);
                    t.tally.add("half-open opened", 1);
                }
                Err(_) => {
                    t.tally.add("half-open connect failed", 1);
                    break;
                }
            }
        }
        thread::sleep(Duration::from_secs(1));
        let before = held.len();
        held.retain(|mut s| matches!(s.read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
        t.tally.add("half-open closed by the server", (before - held.len()) as u64);
    }
}

/// One drip-feeder: a frame declaring 1 MiB, one byte per 200 ms, again after each close.
fn drip(t: &Target) {
    while !t.stopped() {
        let Some(mut link) = t.tls(DRIP_SOURCE) else { continue };
        let started = Instant::now();
        let mut header = vec![1u8, 2, 0, 0, 0, 0];
        header.extend_from_slice(&(1u64 << 20).to_be_bytes());
        let mut bytes = header.into_iter().chain(std::iter::repeat(0u8));
        let closed = loop {
            if t.stopped() {
                break "still open at the end".to_owned();
            }
            // A send may fail when the server has just closed: its close frame may still be readable.
            let wait = if link.send(&[bytes.next().unwrap()]).is_ok() { 200 } else { 1000 };
            match link.recv(Instant::now() + Duration::from_millis(wait)) {
                Ok(Some(Message::Close(c))) => break format!("drip closed {}", c.code),
                Ok(_) => {}
                Err(_) => break "drip closed without a close frame".to_owned(),
            }
        };
        t.tally.drip_lives.lock().unwrap().push(started.elapsed());
        t.tally.add(closed, 1);
    }
}

/// Batches of pipelined wrong-password logins on one connection, reconnecting when closed.
fn guess(t: &Target) {
    let mut id = 0u32;
    while !t.stopped() {
        let Some(mut link) = t.tls(GUESS_SOURCE) else { continue };
        let mut batch = Vec::new();
        for k in 0..GUESS_BATCH {
            let username = ["alice", "bob", "nobody"][k as usize % 3].to_owned();
            id += 1;
            batch.extend(request(id, Login { username, password: format!("wrong guess {id}") }));
        }
        if link.send(&batch).is_err() {
            continue;
        }
        for _ in 0..GUESS_BATCH {
            let Some(code) = t.response(&mut link) else { break };
            t.tally.add(format!("login {code}"), 1);
        }
    }
}

/// [`REGISTRAR_LINKS`] connections, each registering a fresh account as soon as the last is answered.
fn register(t: &Target, thread: usize) {
    let mut links: Vec<RawTls> = Vec::new();
    let mut n = 0u32;
    while !t.stopped() {
        while links.len() < REGISTRAR_LINKS && !t.stopped() {
            links.extend(t.tls(REGISTER_SOURCE));
        }
        let mut alive = Vec::new();
        for mut link in links.drain(..) {
            n += 1;
            let body = Register {
                username: format!("flood{thread}x{n}"),
                password: format!("flood password {n}"),
                passphrase: "three whole words".into(),
                identity_key: bytes::Bytes::from_static(b"flood identity key"),
            };
            if link.send(&request(n, body)).is_ok() {
                alive.push(link);
            }
        }
        for mut link in alive {
            if let Some(code) = t.response(&mut link) {
                t.tally.add(format!("register {code}"), 1);
                links.push(link);
            }
        }
    }
}

/// The attack threads and the RSS sampler.
struct Attack {
    target: Target,
    threads: Vec<JoinHandle<()>>,
    rss: Arc<Mutex<Vec<u64>>>,
}

impl Attack {
    fn start(server: &ServerProc) -> Attack {
        let target = Target {
            addr: server.tcp,
            pin: server.pin.clone(),
            stop: Arc::new(AtomicBool::new(false)),
            tally: Arc::new(Tally::default()),
        };
        let mut threads = Vec::new();
        let mut spawn = |f: Box<dyn FnOnce(&Target) + Send>| {
            let t = target.clone();
            threads.push(thread::spawn(move || f(&t)));
        };
        spawn(Box::new(half_open));
        (0..DRIPPERS).for_each(|_| spawn(Box::new(drip)));
        (0..GUESSERS).for_each(|_| spawn(Box::new(guess)));
        (0..REGISTRARS).for_each(|i| spawn(Box::new(move |t: &Target| register(t, i))));
        let rss = Arc::new(Mutex::new(Vec::new()));
        let (samples, stop, pid) = (Arc::clone(&rss), Arc::clone(&target.stop), server.pid());
        threads.push(thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Some(kib) = rss_of(pid) {
                    samples.lock().unwrap().push(kib);
                }
                thread::sleep(Duration::from_millis(500));
            }
        }));
        Attack { target, threads, rss }
    }

    /// Stops every attacker; returns the tally and the RSS samples.
    fn stop(self) -> (Arc<Tally>, Vec<u64>) {
        self.target.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("an attack thread panicked");
        }
        let rss = self.rss.lock().unwrap().clone();
        (self.target.tally, rss)
    }
}

/// VmRSS of `pid` in KiB.
fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// The RSS bound, in KiB (see the module docs).
fn rss_bound_kib() -> u64 {
    // The server's default: one hash worker per core, 1 to 4.
    let workers = thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4) as u64;
    let connections = (125 + DRIPPERS + GUESSERS + REGISTRARS * REGISTRAR_LINKS + 4) as u64;
    32 * 1024 + workers * 19 * 1024 + connections * 64
}

/// A running `confab listen` and the lines it printed, each with when it came.
struct Listener {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, Value)>>>,
    reader: JoinHandle<()>,
}

impl Listener {
    fn start(user: &CliUser) -> Listener {
        let mut child = user.command(&["listen"]).stdin(Stdio::null()).stdout(Stdio::piped()).spawn().expect("listen");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push((Instant::now(), v));
                }
            }
        });
        Listener { child, lines, reader }
    }

    /// When each live (not history) message with text `tag` was printed.
    fn seen(&self, tag: &str) -> Vec<Instant> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|(_, v)| matches!(v["kind"].as_str(), Some("message" | "room_message")))
            .filter(|(_, v)| v["text"] == tag && v["history"] != true)
            .map(|(at, _)| *at)
            .collect()
    }

    /// Waits until every tag was printed or `until` passed.
    fn wait_all(&self, tags: &[String], until: Instant) {
        while Instant::now() < until && tags.iter().any(|t| self.seen(t).is_empty()) {
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) -> Vec<(Instant, Value)> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.reader.join();
        self.lines.lock().unwrap().clone()
    }
}

/// One message sent under attack.
struct Sample {
    tag: String,
    command: Duration,
    delivery: Option<Duration>,
    copies: usize,
}

/// `sender` sends `receiver` (listening) [`ROUNDS`] private and room messages.
fn exchange(sender: &CliUser, to: &str, receiver: &CliUser, label: &str) -> Vec<Sample> {
    let listener = Listener::start(receiver);
    // Ready when the listener prints a message sent after it started.
    let ready = format!("{label}: are you listening?");
    let _ = sender.ok(&["dm", "send", to, &ready]);
    listener.wait_all(std::slice::from_ref(&ready), Instant::now() + Duration::from_secs(30));
    assert_eq!(listener.seen(&ready).len(), 1, "{label}: the listener did not get ready within 30 s");

    let mut sent = Vec::new();
    for i in 0..ROUNDS {
        for kind in ["dm", "room"] {
            let tag = format!("{label}: {kind} {i} under attack");
            let started = Instant::now();
            let _ = match kind {
                "dm" => sender.ok(&["dm", "send", to, &tag]),
                _ => sender.ok(&["room", "send", "lobby", &tag]),
            };
            sent.push((tag, started, started.elapsed()));
        }
    }
    let tags: Vec<String> = sent.iter().map(|(t, _, _)| t.clone()).collect();
    listener.wait_all(&tags, Instant::now() + DELIVERY_BOUND);
    let samples = sent
        .into_iter()
        .map(|(tag, started, command)| {
            let seen = listener.seen(&tag);
            let delivery = seen.first().map(|at| at.saturating_duration_since(started));
            Sample { tag, command, delivery, copies: seen.len() }
        })
        .collect();
    let _ = listener.stop();
    samples
}

/// The texts of the `message` lines of `stdout`.
fn dm_texts(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "message")
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect()
}

/// The bytes of the lines of `log` at the default level, info (the test server logs at debug).
fn info_bytes(log: &str) -> usize {
    log.lines().filter(|l| !l.contains(" DEBUG ") && !l.contains(" TRACE ")).map(|l| l.len() + 1).sum()
}

fn percentile(mut v: Vec<Duration>, p: usize) -> Duration {
    v.sort();
    v.get((v.len() * p / 100).min(v.len().saturating_sub(1))).copied().unwrap_or_default()
}

#[test]
fn two_users_chat_through_half_open_floods_drips_guesses_and_registrations() {
    let dir = TempDir::new("hostile-load");
    let server = ServerProc::start(&dir.path().join("data"), None);
    let alice = CliUser::new(dir.path(), "alice", &server, "tcp");
    let bob = CliUser::new(dir.path(), "bob", &server, "tcp");
    let _ = alice.ok(&["register", "alice"]);
    let _ = bob.ok(&["register", "bob"]);
    let _ = alice.ok(&["room", "create", "lobby"]);
    let _ = bob.ok(&["room", "join", "lobby"]);
    let _ = alice.ok(&["dm", "request", "bob"]);
    let _ = bob.ok(&["dm", "accept", "alice"]);
    let _ = alice.ok(&["dm", "send", "bob", "before the attack"]);
    assert_eq!(dm_texts(&bob.ok(&["dm", "read", "alice"])), ["before the attack"]);
    let rss_start = server.rss_kib().expect("rss");

    let started = Instant::now();
    let attack = Attack::start(&server);
    // Let the flood take its slots and the hash queue fill before the users start.
    let ramp = Instant::now() + Duration::from_secs(10);
    while Instant::now() < ramp
        && (attack.target.tally.get("half-open opened") < HALF_OPEN as u64
            || attack.target.tally.get("register 201") < 10)
    {
        thread::sleep(Duration::from_millis(100));
    }
    let mut samples = exchange(&bob, "alice", &alice, "bob to alice");
    samples.extend(exchange(&alice, "bob", &bob, "alice to bob"));
    while started.elapsed() < MIN_ATTACK {
        thread::sleep(Duration::from_millis(100));
    }
    let attack_time = started.elapsed();
    let (tally, rss) = attack.stop();
    let log = server.log();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");

    // After the attack: the users still work, and every DM was stored once.
    let _ = alice.ok(&["dm", "send", "bob", "after the attack"]);
    let _ = bob.ok(&["room", "send", "lobby", "room after the attack"]);
    let bob_dms = dm_texts(&bob.ok(&["dm", "read", "alice"]));
    let alice_dms = dm_texts(&alice.ok(&["dm", "read", "bob"]));
    let history = alice.ok(&["room", "history", "lobby"]);
    assert!(history.contains("room after the attack"), "alice's history after the attack: {history}");

    let commands: Vec<Duration> = samples.iter().map(|s| s.command).collect();
    let deliveries: Vec<Duration> = samples.iter().filter_map(|s| s.delivery).collect();
    let drips = tally.drip_lives.lock().unwrap().clone();
    let rss_max = rss.iter().copied().max().unwrap_or(0);
    eprintln!(
        "hostile load: {attack_time:.1?} of attack, {} messages; command p50 {:?} p95 {:?} max {:?}; \
         delivery p50 {:?} p95 {:?} max {:?}; RSS start {} KiB, max {} KiB (bound {} KiB); \
         longest drip {:?}; log {} bytes ({} at info level); {:?}",
        samples.len(),
        percentile(commands.clone(), 50),
        percentile(commands.clone(), 95),
        commands.iter().max(),
        percentile(deliveries.clone(), 50),
        percentile(deliveries.clone(), 95),
        deliveries.iter().max(),
        rss_start,
        rss_max,
        rss_bound_kib(),
        drips.iter().max(),
        log.len(),
        info_bytes(&log),
        tally.counts.lock().unwrap(),
    );

    for s in &samples {
        assert_eq!(s.copies, 1, "{:?} was printed {} times by the listener", s.tag, s.copies);
        assert!(s.command <= COMMAND_BOUND, "sending {:?} took {:?}", s.tag, s.command);
        let delivery = s.delivery.unwrap_or_else(|| panic!("{:?} never reached the listener", s.tag));
        assert!(delivery <= DELIVERY_BOUND, "{:?} took {delivery:?} to arrive", s.tag);
        let dms = if s.tag.starts_with("bob to") { &alice_dms } else { &bob_dms };
        if s.tag.contains(": dm ") {
            assert_eq!(dms.iter().filter(|t| *t == &s.tag).count(), 1, "{:?} in dm read: {dms:?}", s.tag);
        }
    }
    assert_eq!(bob_dms.iter().filter(|t| *t == "after the attack").count(), 1, "{bob_dms:?}");
    assert!(rss_max <= rss_bound_kib(), "the server's RSS reached {rss_max} KiB (bound {} KiB)", rss_bound_kib());

    // The attacks were real: the flood met its share, the hash workers were busy,
    // the guesses were refused, and every drip-feeder met the frame deadline.
    let counts = tally.counts.lock().unwrap().clone();
    assert!(tally.get("half-open closed by the server") >= (HALF_OPEN - 125) as u64, "{counts:?}");
    assert!(tally.get("register 201") >= 10, "few registrations were hashed: {counts:?}");
    assert_eq!(tally.get("login 200"), 0, "a guess logged in");
    assert!(tally.get("login 429") > 0, "no guess was rate limited");
    // Each drip-feeder's first connection ends about 10 s into the attack (20 s at least).
    let dripped = tally.get(&format!("drip closed {}", status::IDLE_TIMEOUT));
    assert!(dripped >= DRIPPERS as u64 / 2, "{dripped} drip-feeders closed with 408");
    let longest = drips.iter().max().copied().unwrap_or_default();
    assert!(longest <= DRIP_BOUND, "a drip-feeder kept its connection for {longest:?}");

    assert!(info_bytes(&log) <= LOG_BOUND, "the server logged {} bytes at info level", info_bytes(&log));
    assert!(log.contains("TCP connections refused"), "the refused half-open connections are summed up");
    assert!(log.contains("log lines left out"), "the refused logins are summed up");
}
