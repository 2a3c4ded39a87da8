//! The loop's pipelined group commit, with a store whose commit blocks until
//! the test opens it: while a commit runs, the loop goes on gathering turns
//! and the next commit takes them together; no frame of a turn is written
//! before the turn is durable; a failed commit with turns queued behind it
//! writes nothing of any of them; a stop waits for the commit in flight; at
//! the bound on held turns the loop waits for the commit.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use confab_proto::server::{Change, HashParams, MemoryStore, State};
use confab_proto::wire::{Message, Ping};
use confab_proto::{Client, ClientConfig, ClientEvent, ClientOutput, Durable, Ephemeral, ServerConfig};
use confab_server::runtime::{CommitMode, Node, NodeConfig, NodeHandle, RunError, RunSummary};
use confab_transports::link::Link;
use confab_transports::mem::MemLink;
use confab_transports::tls::{self, ClientTrust, Pin, ServerIdentity};
use std::net::SocketAddr;

mod common;

/// What the test and the store share.
#[derive(Default)]
struct Shared {
    /// Commits with changes that entered the store.
    entered: usize,
    /// Commits let through (blocked while `entered > allowed`).
    allowed: usize,
    /// The commit numbered so (1-based) fails instead of committing.
    fail_at: Option<usize>,
    /// What was committed.
    durable: Option<MemoryStore>,
    /// The number of changes of each commit.
    sizes: Vec<usize>,
}

/// A store whose commits with changes wait for the test's permission.
#[derive(Clone)]
struct Gate(Arc<(Mutex<Shared>, Condvar)>);

impl Gate {
    fn new(config: &ServerConfig, allowed: usize, fail_at: Option<usize>) -> Gate {
        let shared = Shared { allowed, fail_at, durable: Some(MemoryStore::new(config)), ..Shared::default() };
        Gate(Arc::new((Mutex::new(shared), Condvar::new())))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        let mut s = self.0.0.lock().expect("lock");
        let t = f(&mut s);
        self.0.1.notify_all();
        t
    }

    /// Waits until `n` commits with changes have entered the store.
    fn wait_entered(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = self.0.0.lock().expect("lock");
        while s.entered < n {
            assert!(Instant::now() < deadline, "commit {n} never came");
            s = self.0.1.wait_timeout(s, Duration::from_millis(50)).expect("lock").0;
        }
    }

    fn has_user(&self, name: &str) -> bool {
        self.with(|s| s.durable.as_ref().is_some_and(|d| d.state().user(name).is_some()))
    }
}

impl Durable<[Change]> for Gate {
    type Error = String;

    fn commit(&mut self, changes: &[Change]) -> Result<(), String> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut s = self.0.0.lock().expect("lock");
        s.entered += 1;
        let number = s.entered;
        self.0.1.notify_all();
        while s.allowed < number {
            s = self.0.1.wait(s).expect("lock");
        }
        if s.fail_at == Some(number) {
            return Err("disk gone".into());
        }
        let Ok(()) = s.durable.as_mut().expect("store").commit(changes);
        s.sizes.push(changes.len());
        Ok(())
    }
}

/// A running node (TCP on an ephemeral port, and mem links) over `gate`.
struct Running {
    handle: NodeHandle,
    tcp: SocketAddr,
    pin: Pin,
    thread: std::thread::JoinHandle<Result<RunSummary, RunError>>,
}

fn start(gate: &Gate, config: &ServerConfig) -> Running {
    start_with(gate, config, CommitMode::default())
}

fn start_with(gate: &Gate, config: &ServerConfig, commit: CommitMode) -> Running {
    let made = ServerIdentity::self_signed(&["localhost".to_owned()]).expect("certificate");
    let pin = made.identity.pin().expect("pin");
    let mut node_config = NodeConfig::new(config.clone(), "127.0.0.1:0".parse().expect("addr"), made.identity);
    node_config.quic = None;
    node_config.commit = commit;
    let state = State::new(config.room_history, config.dedup_window);
    let node = Node::bind(node_config, gate.clone(), state).expect("bind");
    let (handle, tcp) = (node.handle(), node.tcp_addr().expect("tcp"));
    Running { handle, tcp, pin, thread: std::thread::spawn(move || node.run()) }
}

/// A client on a mem link, registering `name`.
struct User {
    name: String,
    client: Client,
    link: MemLink,
    done: bool,
    ended: bool,
}

impl User {
    fn register(handle: &NodeHandle, name: &str) -> User {
        let now = confab_server::runtime::now;
        let mut client = Client::new(ClientConfig::default(), now());
        client.connected(now());
        let key = bytes::Bytes::from(format!("ik-{name}"));
        client.register(now(), name, "a long password", "tulip anchor violet", key).expect("command");
        let mut user = User { name: name.into(), client, link: handle.connect_mem(), done: false, ended: false };
        user.pump(Instant::now());
        user
    }

    /// Sends what the client has to send, reads what arrived until `until`;
    /// a `Done` must find the user already durable in `gate`.
    fn pump_checked(&mut self, until: Instant, gate: &Gate) {
        if self.pump(until) {
            assert!(gate.has_user(&self.name), "{} acknowledged before its commit", self.name);
        }
    }

    /// Whether the registration was answered in this call.
    fn pump(&mut self, until: Instant) -> bool {
        let now = confab_server::runtime::now;
        let mut answered = false;
        loop {
            for output in self.client.drain().commit(&mut Ephemeral).expect("ephemeral") {
                match output {
                    ClientOutput::Transmit(bytes) => {
                        let _ = self.link.send(&bytes);
                    }
                    ClientOutput::Event(ClientEvent::Done { .. }) => {
                        self.done = true;
                        answered = true;
                    }
                    ClientOutput::Event(_) | ClientOutput::Close { .. } | ClientOutput::Timeout(_) => {}
                }
            }
            if self.ended || answered || Instant::now() >= until {
                return answered;
            }
            match self.link.recv(until.min(Instant::now() + Duration::from_millis(20))) {
                Ok(Some(bytes)) => self.client.handle_input(now(), &bytes),
                Ok(None) => {}
                Err(_) => self.ended = true,
            }
        }
    }
}

fn config() -> ServerConfig {
    ServerConfig { hash_params: HashParams::INSECURE_FAST, ..ServerConfig::default() }
}

#[test]
fn turns_gathered_during_a_slow_commit_share_the_next_one_and_wait_for_it() {
    let config = config();
    // Commit 1 is held until the test allows it.
    let gate = Gate::new(&config, 0, None);
    let Running { handle, tcp, pin, thread: running } = start(&gate, &config);
    let mut first = User::register(&handle, "alice");
    gate.wait_entered(1);

    // While alice's commit is blocked the loop goes on: a TLS handshake completes (the loop
    // drives it), and three more registrations reach the core, each its own turn.
    let client_tls = Arc::new(tls::client_config(&ClientTrust::Pin(pin)).expect("client config"));
    let mut pinger =
        confab_transports::tcp::connect(tcp, tls::server_name("localhost"), client_tls, Duration::from_secs(3))
            .expect("a handshake completes while a commit runs");
    pinger.send(&Message::Ping(Ping { nonce: 7 }).to_bytes(&[])).expect("ping");
    let mut others = Vec::new();
    for name in ["bob", "carol", "dave"] {
        others.push(User::register(&handle, name));
        std::thread::sleep(Duration::from_millis(100));
    }
    let quiet_until = Instant::now() + Duration::from_millis(400);
    for user in std::iter::once(&mut first).chain(others.iter_mut()) {
        user.pump_checked(quiet_until, &gate);
        assert!(!user.done && !user.ended, "{}: answered while nothing is durable", user.name);
    }
    assert_eq!(gate.with(|s| s.entered), 1, "the loop waits for the running commit before the next");
    let early = pinger.recv(Instant::now() + Duration::from_millis(50)).expect("recv");
    assert!(early.is_none(), "a pong is held behind the turns before it: it may show what they changed");

    // Let every commit through: alice's, then one taking bob's, carol's and dave's turns together.
    gate.with(|s| s.allowed = usize::MAX);
    let deadline = Instant::now() + Duration::from_secs(10);
    for user in std::iter::once(&mut first).chain(others.iter_mut()) {
        while !user.done {
            assert!(Instant::now() < deadline && !user.ended, "{} never answered", user.name);
            user.pump_checked(deadline, &gate);
        }
    }
    let mut got = Vec::new();
    while !common::decode_all(&got).iter().any(|m| matches!(m, Message::Pong(p) if p.nonce == 7)) {
        got.extend_from_slice(&pinger.recv(deadline).expect("recv").expect("the pong, once alice is durable"));
    }
    let sizes = gate.with(|s| s.sizes.clone());
    assert_eq!(sizes.len(), 2, "alice's commit, then one for the three turns gathered meanwhile: {sizes:?}");
    assert_eq!(sizes[1], 3 * sizes[0], "the second commit holds three registrations' changes: {sizes:?}");

    handle.stop();
    let summary = running.join().expect("no panic").expect("clean stop");
    assert_eq!(summary.commits, 2);
}

#[test]
fn a_failed_commit_writes_nothing_of_its_turns_nor_of_those_queued_behind_it() {
    let config = config();
    // Commit 1 is held, then fails; commit 2 (the turns gathered meanwhile) would succeed.
    let gate = Gate::new(&config, 0, Some(1));
    let Running { handle, thread: running, .. } = start(&gate, &config);
    let mut users = vec![User::register(&handle, "alice")];
    gate.wait_entered(1);
    users.extend(["bob", "carol"].iter().map(|n| User::register(&handle, n)));
    let settle = Instant::now() + Duration::from_millis(500);
    for user in &mut users {
        user.pump(settle);
    }
    gate.with(|s| s.allowed = usize::MAX);

    let result = running.join().expect("no panic");
    assert!(matches!(&result, Err(RunError::Store(reason)) if reason == "disk gone"), "{result:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    for user in &mut users {
        while !user.ended {
            assert!(Instant::now() < deadline, "{}: the link never ended", user.name);
            user.pump(deadline);
        }
        assert!(!user.done, "{}: acknowledged although the server stopped on a failed commit", user.name);
    }
    assert_eq!(gate.with(|s| s.entered), 1, "nothing is committed after a failure");
}

#[test]
fn a_stop_waits_for_the_commit_in_flight_before_run_returns() {
    let config = config();
    let gate = Gate::new(&config, 0, None);
    let Running { handle, thread: running, .. } = start(&gate, &config);
    let mut alice = User::register(&handle, "alice");
    gate.wait_entered(1);
    handle.stop();
    // Past the stop's grace period (3 s) the loop gives up on the sessions, not on the commit.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        alice.pump(until);
    }
    assert!(!running.is_finished(), "run returned with a commit still running");
    gate.with(|s| s.allowed = usize::MAX);
    let summary = running.join().expect("no panic").expect("clean stop");
    assert_eq!(summary.commits, 1);
    assert!(gate.has_user("alice"), "the last commit finished before the process could exit");
}

#[test]
fn at_the_bound_on_held_turns_the_loop_waits_for_the_commit() {
    let config = config();
    let gate = Gate::new(&config, 0, None);
    // One held turn at most: alice's answer, waiting for its commit, is the bound.
    let Running { handle, tcp, pin, thread: running } =
        start_with(&gate, &config, CommitMode::Pipelined { max_turns: 1 });
    let mut alice = User::register(&handle, "alice");
    gate.wait_entered(1);
    let client_tls = Arc::new(tls::client_config(&ClientTrust::Pin(pin)).expect("client config"));
    let connect =
        |within| confab_transports::tcp::connect(tcp, tls::server_name("localhost"), Arc::clone(&client_tls), within);
    assert!(connect(Duration::from_secs(1)).is_err(), "the loop serves nothing more until the commit returns");
    gate.with(|s| s.allowed = usize::MAX);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !alice.done {
        assert!(Instant::now() < deadline && !alice.ended, "alice never answered");
        alice.pump_checked(deadline, &gate);
    }
    assert!(connect(Duration::from_secs(5)).is_ok(), "served again once the commit returned");
    handle.stop();
    running.join().expect("no panic").expect("clean stop");
}

/// A store with a bug: its first commit with changes panics.
struct Panicking;

impl Durable<[Change]> for Panicking {
    type Error = String;

    fn commit(&mut self, changes: &[Change]) -> Result<(), String> {
        assert!(changes.is_empty(), "a bug in the store");
        Ok(())
    }
}

#[test]
fn a_store_that_panics_stops_the_server_like_a_failed_commit() {
    let config = config();
    let made = ServerIdentity::self_signed(&["localhost".to_owned()]).expect("certificate");
    let mut node_config = NodeConfig::new(config.clone(), "127.0.0.1:0".parse().expect("addr"), made.identity);
    (node_config.tcp, node_config.quic) = (None, None);
    let state = State::new(config.room_history, config.dedup_window);
    let node = Node::bind(node_config, Panicking, state).expect("bind");
    let handle = node.handle();
    let running = std::thread::spawn(move || node.run());
    let mut alice = User::register(&handle, "alice");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !alice.ended {
        assert!(Instant::now() < deadline, "the server never stopped");
        alice.pump(deadline);
    }
    assert!(!alice.done, "acknowledged although nothing was committed");
    let result = running.join().expect("the loop itself does not panic");
    assert!(matches!(&result, Err(RunError::Store(reason)) if reason.contains("panicked")), "{result:?}");
}
