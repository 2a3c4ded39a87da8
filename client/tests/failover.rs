//! Failover across several server addresses (`--server A,B,...`), against
//! server nodes on real sockets: each node is a `TcpServer` (and, for some
//! tests, a `QuicServer` or a `wss://` `WsServer`) on its own loopback port and mio poll, and all the
//! nodes of a [`Cluster`] feed one in-process core, as the nodes of a real
//! cluster share one state (in PostgreSQL). A node can be stopped (its
//! sockets closed, its sessions ended) and started again on the same port.
//! The commands run as in the binary, with the real `ConnectOpts` connector
//! and the system clock.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use confab_client::commands::{CliError, Env, account, dm, exit, listen, room};
use confab_client::connect::{CONNECT_TIMEOUT, ConnectError, ConnectOpts, Connector, FIRST_ATTEMPT, Transport, Trust};
use confab_client::output::Output;
use confab_client::proto::e2e::{IdentityKey, fixtures};
use confab_client::proto::server::{Action, HashParams, SessionId};
use confab_client::proto::wire::{Close, Message};
use confab_client::proto::{ClientConfig, Ephemeral, Now, Server, ServerConfig};
use confab_client::secrets::{Fixed, Secret};
use confab_client::{profile, remember, session};
use confab_transports::hub::{ConnId, ConnIds, NetEvent, Transport as Carrier};
use confab_transports::quic::{QuicLimits, QuicServer};
use confab_transports::tcp::{TcpLimits, TcpServer};
use confab_transports::tls::{self, ServerIdentity};
use confab_transports::ws::{self, WsLimits, WsPolicy, WsServer};
use serde_json::Value;

const PASSWORD: &str = "correct horse battery";
const PASSPHRASE: &str = "apple river stone";
const ROOM_PASSWORD: &str = "pass2934 of room11";
/// How long a test waits for what it knows is coming.
const PATIENCE: Duration = Duration::from_secs(30);
/// The QUIC socket's token on a node's poll (the TCP server's start at 16).
const QUIC_TOKEN: mio::Token = mio::Token(1);

/// A TLS key pair and certificate: the nodes of one service share one.
struct Key {
    identity: ServerIdentity,
    pin: String,
}

fn key() -> Arc<Key> {
    let made = ServerIdentity::self_signed(&["localhost".to_owned()]).unwrap();
    let pin = made.identity.pin().unwrap().to_string();
    Arc::new(Key { identity: made.identity, pin })
}

/// A loopback port nothing listens on (bound, then released).
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A node's addresses.
#[derive(Debug, Clone, Copy)]
struct Node {
    index: usize,
    tcp: SocketAddr,
    quic: Option<SocketAddr>,
    ws: Option<SocketAddr>,
}

impl Node {
    fn quic(&self) -> SocketAddr {
        self.quic.expect("a node started with QUIC")
    }

    /// The node's `wss://` URL.
    fn wss(&self) -> String {
        format!("wss://{}{}", self.ws.expect("a node started with WebSocket"), ws::PATH)
    }
}

/// The listeners of a node besides TCP.
#[derive(Debug, Clone, Copy, Default)]
struct Extra {
    quic: bool,
    ws: bool,
}

enum Command {
    Start {
        port: u16,
        extra: Extra,
        key: Arc<Key>,
        bound: mpsc::Sender<io::Result<Node>>,
    },
    Stop {
        node: usize,
        done: mpsc::Sender<()>,
    },
    /// From now on `node` does (`on`) or does not close every connection
    /// that sends it a frame with 421, as a node of a split state that
    /// does not serve the user's partition.
    Misdirect {
        node: usize,
        on: bool,
        done: mpsc::Sender<()>,
    },
}

/// Server nodes sharing one core, driven by one thread.
struct Cluster {
    commands: mpsc::Sender<Command>,
    /// Sessions opened so far on each node (a completed TLS or QUIC handshake).
    opened: Arc<Mutex<Vec<usize>>>,
}

/// One node's transports and poll.
struct Running {
    poll: mio::Poll,
    events: mio::Events,
    tcp: TcpServer,
    quic: Option<QuicServer>,
    ws: Option<WsServer>,
}

fn now() -> Now {
    let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    Now::new(Instant::now(), unix_ms)
}

impl Cluster {
    fn new() -> Cluster {
        let (commands, rx) = mpsc::channel();
        let opened = Arc::new(Mutex::new(Vec::new()));
        let counts = Arc::clone(&opened);
        thread::spawn(move || run_cluster(&rx, &counts));
        Cluster { commands, opened }
    }

    /// Starts a node with `key` on loopback `port` (0: any) for TCP, and a
    /// UDP port of its own for QUIC if `quic`.
    fn start(&self, key: &Arc<Key>, port: u16, quic: bool) -> Node {
        self.start_with(key, port, Extra { quic, ws: false })
    }

    /// Starts a node with `key` on loopback `port` (0: any) for TCP, and
    /// ports of its own for the `extra` listeners.
    fn start_with(&self, key: &Arc<Key>, port: u16, extra: Extra) -> Node {
        let (bound, rx) = mpsc::channel();
        self.commands.send(Command::Start { port, extra, key: Arc::clone(key), bound }).unwrap();
        rx.recv().unwrap().expect("the node binds its ports")
    }

    /// Stops `node`: its sockets close and its sessions end.
    fn stop(&self, node: &Node) {
        let (done, rx) = mpsc::channel();
        self.commands.send(Command::Stop { node: node.index, done }).unwrap();
        rx.recv().unwrap();
    }

    /// `node` misdirects every connection (`on`: see [`Command::Misdirect`]), or serves again.
    fn misdirect(&self, node: &Node, on: bool) {
        let (done, rx) = mpsc::channel();
        self.commands.send(Command::Misdirect { node: node.index, on, done }).unwrap();
        rx.recv().unwrap();
    }

    /// Sessions opened so far on `node`.
    fn opened(&self, node: &Node) -> usize {
        self.opened.lock().unwrap()[node.index]
    }

    /// Waits until `node` opened `n` sessions (the server sees a handshake
    /// end a moment after the client does).
    fn wait_opened(&self, node: &Node, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.opened(node) < n {
            assert!(Instant::now() < deadline, "node {} opened {} sessions, not {n}", node.tcp, self.opened(node));
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The cluster's loop: commands, each live node's events and timers, the
/// core's turns (jobs run inline, an ephemeral store), the frames to the
/// node that holds each session.
fn run_cluster(commands: &mpsc::Receiver<Command>, opened: &Mutex<Vec<usize>>) {
    let config = ServerConfig { hash_params: HashParams::INSECURE_FAST, ..ServerConfig::default() };
    let mut core = Server::new(config, [7; 32], now()).expect("a valid configuration");
    let ids = ConnIds::default();
    let mut nodes: Vec<Option<Running>> = Vec::new();
    let mut conns: HashMap<ConnId, (usize, Carrier, SessionId)> = HashMap::new();
    let mut sessions: HashMap<SessionId, ConnId> = HashMap::new();
    let mut core_deadline: Option<Instant> = None;
    let mut closed: Vec<(usize, NetEvent)> = Vec::new();
    let mut misdirecting = std::collections::HashSet::new();
    loop {
        loop {
            match commands.try_recv() {
                Ok(Command::Start { port, extra, key, bound }) => {
                    let index = nodes.len();
                    let started = start_node(&key, port, extra, &ids).map(|running| {
                        let tcp = running.tcp.local_addr();
                        let quic = running.quic.as_ref().map(QuicServer::local_addr);
                        let ws = running.ws.as_ref().map(WsServer::local_addr);
                        nodes.push(Some(running));
                        opened.lock().unwrap().push(0);
                        Node { index, tcp, quic, ws }
                    });
                    let _ = bound.send(started);
                }
                Ok(Command::Stop { node, done }) => {
                    // Dropping the transports closes every socket of the node.
                    drop(nodes[node].take());
                    let t = now();
                    conns.retain(|_, &mut (n, _, session)| {
                        if n == node {
                            sessions.remove(&session);
                            core.close_session(t, session);
                        }
                        n != node
                    });
                    let _ = done.send(());
                }
                Ok(Command::Misdirect { node, on, done }) => {
                    if on {
                        misdirecting.insert(node);
                    } else {
                        misdirecting.remove(&node);
                    }
                    let _ = done.send(());
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        }
        let mut net = std::mem::take(&mut closed);
        if nodes.iter().all(Option::is_none) {
            thread::sleep(Duration::from_millis(2));
        }
        for (index, slot) in nodes.iter_mut().enumerate() {
            let Some(node) = slot else { continue };
            node.poll.poll(&mut node.events, Some(Duration::from_millis(1))).unwrap();
            let t = Instant::now();
            let mut out = Vec::new();
            for event in &node.events {
                if node.tcp.owns(event.token()) {
                    node.tcp.handle_event(node.poll.registry(), t, event, &mut out);
                } else if let Some(quic) = node.quic.as_mut().filter(|q| q.owns(event.token())) {
                    quic.handle_event(node.poll.registry(), t, event, &mut out);
                } else if let Some(ws) = node.ws.as_mut().filter(|w| w.owns(event.token())) {
                    ws.handle_event(node.poll.registry(), t, event, &mut out);
                }
            }
            if node.tcp.poll_timeout().is_some_and(|d| d <= t) {
                node.tcp.handle_timeout(node.poll.registry(), t, &mut out);
            }
            if let Some(ws) = node.ws.as_mut()
                && ws.poll_timeout().is_some_and(|d| d <= t)
            {
                ws.handle_timeout(node.poll.registry(), t, &mut out);
            }
            if let Some(quic) = node.quic.as_mut()
                && quic.poll_timeout().is_some_and(|d| d <= t)
            {
                quic.handle_timeout(node.poll.registry(), t, &mut out);
            }
            net.extend(out.into_iter().map(|e| (index, e)));
        }
        let t = now();
        for (index, event) in net {
            match event {
                NetEvent::Opened { conn, transport, .. } => match core.open_session(t) {
                    Ok(session) => {
                        conns.insert(conn, (index, transport, session));
                        sessions.insert(session, conn);
                        opened.lock().unwrap()[index] += 1;
                    }
                    Err(e) => panic!("the core refused a session: {e}"),
                },
                NetEvent::Received { conn, bytes } => match conns.get(&conn) {
                    Some(&(index, _, session)) if misdirecting.contains(&index) => {
                        // Not this node's partition: nothing reaches the core.
                        sessions.remove(&session);
                        core.close_session(t, session);
                        conns.remove(&conn);
                        if let Some(node) = nodes[index].as_mut() {
                            let close = Close { code: 421, reason: "partition 0 is not served by this node".into() };
                            node.tcp.send(node.poll.registry(), conn, &Message::Close(close).to_bytes(b""));
                            let mut out = Vec::new();
                            node.tcp.close(node.poll.registry(), conn, &mut out);
                            closed.extend(out.into_iter().map(|e| (index, e)));
                        }
                    }
                    Some(&(_, _, session)) => core.handle_input(t, session, &bytes),
                    None => {}
                },
                NetEvent::Closed { conn, .. } => {
                    if let Some((_, _, session)) = conns.remove(&conn) {
                        sessions.remove(&session);
                        core.close_session(t, session);
                    }
                }
            }
        }
        if core_deadline.is_some_and(|d| d <= t.instant) {
            core.handle_timeout(t);
        }
        loop {
            let mut turn = core.drain();
            let quiet = turn.is_empty();
            for job in turn.take_jobs() {
                let result = job.run();
                core.handle_work(t, result);
            }
            let Ok(committed) = turn.commit(&mut Ephemeral);
            core_deadline = committed.timeout();
            for action in committed {
                let (session, bytes, code) = match action {
                    Action::Transmit { session, bytes } => (session, Some(bytes), 0),
                    Action::Close { session, code, .. } => (session, None, code),
                    Action::Log(_) => continue,
                };
                let Some(&conn) = sessions.get(&session) else { continue };
                let Some(&(index, transport, _)) = conns.get(&conn) else { continue };
                let Some(node) = nodes[index].as_mut() else { continue };
                match (bytes, transport) {
                    (Some(bytes), Carrier::Quic) => {
                        if let Some(quic) = node.quic.as_mut() {
                            quic.send(conn, bytes);
                        }
                    }
                    (Some(bytes), Carrier::Ws) => {
                        if let Some(ws) = node.ws.as_mut() {
                            ws.send(node.poll.registry(), conn, bytes);
                        }
                    }
                    (Some(bytes), _) => {
                        node.tcp.send(node.poll.registry(), conn, &bytes);
                    }
                    (None, Carrier::Quic) => {
                        sessions.remove(&session);
                        if let Some(quic) = node.quic.as_mut() {
                            quic.close(conn);
                        }
                    }
                    (None, Carrier::Ws) => {
                        sessions.remove(&session);
                        let mut out = Vec::new();
                        if let Some(ws) = node.ws.as_mut() {
                            ws.close(node.poll.registry(), conn, ws::close_code_for(code), "closed", &mut out);
                        }
                        closed.extend(out.into_iter().map(|e| (index, e)));
                    }
                    (None, _) => {
                        sessions.remove(&session);
                        let mut out = Vec::new();
                        node.tcp.close(node.poll.registry(), conn, &mut out);
                        closed.extend(out.into_iter().map(|e| (index, e)));
                    }
                }
            }
            if quiet {
                break;
            }
        }
        for node in nodes.iter_mut().flatten() {
            if let Some(quic) = node.quic.as_mut() {
                quic.flush(node.poll.registry(), Instant::now());
            }
        }
    }
}

fn start_node(key: &Key, port: u16, extra: Extra, ids: &ConnIds) -> io::Result<Running> {
    let poll = mio::Poll::new()?;
    let config = tls::server_config(&key.identity).map_err(io::Error::other)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let tcp = TcpServer::bind(poll.registry(), addr, Arc::new(config.clone()), ids.clone(), TcpLimits::default())?;
    let quic = if extra.quic {
        let limits = QuicLimits::default();
        Some(QuicServer::bind(poll.registry(), QUIC_TOKEN, any, config, ids.clone(), limits, Instant::now())?)
    } else {
        None
    };
    let ws = if extra.ws {
        let config = Arc::new(tls::ws_server_config(&key.identity).map_err(io::Error::other)?);
        let (limits, policy) = (WsLimits::default(), WsPolicy::default());
        Some(WsServer::bind(poll.registry(), any, Some(config), ids.clone(), limits, policy)?)
    } else {
        None
    };
    Ok(Running { poll, events: mio::Events::with_capacity(256), tcp, quic, ws })
}

/// The connector a new `confab` process would build.
fn opts(server: &str, transport: Transport, trust: Trust) -> ConnectOpts {
    ConnectOpts { server: server.to_owned(), transport, trust, first_use: None, last: None }
}

fn pinned(server: &str, key: &Key) -> ConnectOpts {
    opts(server, Transport::Tcp, Trust::Pin(key.pin.clone()))
}

/// A fresh data directory, removed when dropped.
struct Data(PathBuf);

impl Data {
    fn new(name: &str) -> Data {
        let dir = std::env::temp_dir().join(format!("confab-failover-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Data(dir)
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Output the test reads while the command runs (`listen` in a thread).
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect()
    }

    /// Waits for a line that `found` accepts.
    fn wait_for(&self, what: &str, found: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| found(l)) {
                return line;
            }
            assert!(Instant::now() < deadline, "no {what} in {:#?}", self.lines());
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs one command as `user` ("a new process") through `connector`, with
/// JSON output to `stdout` (standard error's lines are returned): its exit
/// code and the lines of both. `listen_for: None` runs `listen` until the
/// process ends.
fn run_to(
    data: &Path,
    connector: &mut dyn Connector,
    user: &str,
    listen_for: Option<Duration>,
    stdout: &mut dyn Write,
    command: impl FnOnce(&mut Env<'_>, &mut Output<'_>) -> Result<(), CliError>,
) -> (u8, Vec<Value>) {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let mut secrets = Fixed(HashMap::from([
        (Secret::Password, PASSWORD.to_owned()),
        (Secret::Passphrase, PASSPHRASE.to_owned()),
        (Secret::RoomPassword, ROOM_PASSWORD.to_owned()),
    ]));
    let fixture = if user == "bob" { fixtures::BOB_PKCS8 } else { fixtures::ALICE_PKCS8 };
    let mut counter = 0u8;
    let mut env = Env {
        connector,
        secrets: &mut secrets,
        clock: session::system_clock(),
        data_dir: Some(data.to_owned()),
        user: Some(user.to_owned()),
        profile: None,
        config: ClientConfig::default(),
        room_params: HashParams::INSECURE_FAST,
        key_params: HashParams::INSECURE_FAST,
        answer_timeout: Duration::from_secs(10),
        listen_for,
        switch_server: false,
        new_identity: Box::new(move |_| IdentityKey::from_pkcs8_der(fixture)),
        seed: Box::new(move || {
            counter = counter.wrapping_add(1);
            let mut seed = [counter; 32];
            seed[..8].copy_from_slice(&run.to_be_bytes());
            seed
        }),
        lent: None,
    };
    let mut stderr = Vec::new();
    let code = {
        let mut out = Output::new(true, stdout, &mut stderr);
        let result = command(&mut env, &mut out);
        confab_client::commands::finish(result, &mut out)
    };
    let lines = stderr.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap());
    (code, lines.collect())
}

/// [`run_to`] with standard output collected too.
fn run(
    data: &Path,
    connector: &mut dyn Connector,
    user: &str,
    command: impl FnOnce(&mut Env<'_>, &mut Output<'_>) -> Result<(), CliError>,
) -> (u8, Vec<Value>) {
    let mut stdout = Vec::new();
    let (code, errors) = run_to(data, connector, user, Some(Duration::from_millis(50)), &mut stdout, command);
    let mut lines: Vec<Value> =
        stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect();
    lines.extend(errors);
    (code, lines)
}

fn ok((code, lines): (u8, Vec<Value>)) -> Vec<Value> {
    assert_eq!(code, exit::OK, "{lines:#?}");
    lines
}

fn of_kind<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["kind"] == kind).collect()
}

fn error_of(lines: &[Value]) -> (String, String) {
    let error = of_kind(lines, "error").first().copied().cloned().unwrap_or_else(|| panic!("no error in {lines:#?}"));
    (error["message"].as_str().unwrap().to_owned(), error["hint"].as_str().unwrap().to_owned())
}

#[test]
fn a_dead_first_address_is_skipped_and_every_command_works_through_the_live_one() {
    let cluster = Cluster::new();
    let key = key();
    let live = cluster.start(&key, 0, false);
    let dead = format!("127.0.0.1:{}", dead_port());
    let server = format!("{dead}, {}", live.tcp);
    let data = Data::new("dead-first");
    let new_process = || pinned(&server, &key);

    let mut connector = new_process();
    ok(run(&data.0, &mut connector, "alice", |e, o| account::register(e, o, "alice")));
    assert_eq!(connector.connected_to(), Some(live.tcp.to_string().as_str()), "the second node served");
    assert_eq!(connector.last, Some(1));
    ok(run(&data.0, &mut new_process(), "alice", |e, o| room::create(e, o, "room11")));
    ok(run(&data.0, &mut new_process(), "alice", |e, o| room::send(e, o, "room11", "through the live node")));
    ok(run(&data.0, &mut new_process(), "alice", |e, o| account::logout(e, o, None)));
    ok(run(&data.0, &mut new_process(), "alice", |e, o| account::login(e, o, "alice")));
    ok(run(&data.0, &mut new_process(), "alice", |e, o| room::join(e, o, "room11")));
    let lines = ok(run(&data.0, &mut new_process(), "alice", |e, o| room::history(e, o, "room11")));
    let texts: Vec<&str> = of_kind(&lines, "room_message").iter().filter_map(|l| l["text"].as_str()).collect();
    assert_eq!(texts, ["through the live node"], "{lines:#?}");
    assert_eq!(cluster.opened(&live), 7, "one session per command, all on the live node");

    // The profile is the list's, and remembers the list as it was given.
    let dir = profile::profile_dir(&data.0, "alice", &server);
    assert!(profile::exists(&dir), "{}", dir.display());
    assert_eq!(remember::read(&dir).unwrap().server.as_deref(), Some(server.as_str()));
    assert_eq!(profile::profile_dir(&data.0, "alice", &format!("{},{dead}", live.tcp)), dir, "any order, one profile");
}

#[test]
fn when_every_address_is_dead_the_error_names_each_one_with_its_reason() {
    let key = key();
    let data = Data::new("all-dead");
    let (a, b) = (format!("127.0.0.1:{}", dead_port()), format!("127.0.0.1:{}", dead_port()));
    let (code, lines) =
        run(&data.0, &mut pinned(&format!("{a},{b}"), &key), "alice", |e, o| account::register(e, o, "alice"));
    assert_eq!(code, exit::NETWORK, "{lines:#?}");
    let (message, hint) = error_of(&lines);
    assert!(message.contains("2 tried"), "{message}");
    assert!(message.contains(&format!("1) cannot connect to {a} over tcp")), "{message}");
    assert!(message.contains(&format!("2) cannot connect to {b} over tcp")), "{message}");
    assert!(message.matches("refused").count() >= 2, "each with its own reason: {message}");
    assert!(hint.contains("at least one node"), "{hint}");

    // QUIC: each closed UDP port is found by its ICMP answer, in about a second each.
    let (a, b) = (format!("127.0.0.1:{}", dead_port()), format!("127.0.0.1:{}", dead_port()));
    let started = Instant::now();
    let mut quic = opts(&format!("{a},{b}"), Transport::Quic, Trust::Pin(key.pin.clone()));
    let Err(e) = quic.connect() else { panic!("nothing listens at {a} or {b}") };
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    let ConnectError::Unreachable { tried } = &e else { panic!("{e:?}") };
    let named: Vec<&str> = tried
        .iter()
        .map(|e| match e {
            ConnectError::NothingListens { server } => server.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(named, [a.as_str(), b.as_str()], "{e}");
    assert!(e.to_string().contains("no program listens on that UDP port"), "{e}");
}

#[test]
fn a_pin_mismatch_on_the_first_address_is_reported_not_skipped() {
    let cluster = Cluster::new();
    let (ours, other) = (key(), key());
    let impostor = cluster.start(&other, 0, false);
    let node = cluster.start(&ours, 0, false);
    let data = Data::new("mismatch");
    let server = format!("{},{}", impostor.tcp, node.tcp);

    let (code, lines) = run(&data.0, &mut pinned(&server, &ours), "alice", |e, o| account::register(e, o, "alice"));
    assert_eq!(code, exit::NETWORK, "{lines:#?}");
    let (message, hint) = error_of(&lines);
    assert!(message.starts_with(&format!("the key of {} changed", impostor.tcp)), "{message}");
    assert!(message.contains(&other.pin) && message.contains(&ours.pin), "{message}");
    assert!(hint.contains("new pin") && hint.contains("someone may be in the middle"), "{hint}");
    assert_eq!(cluster.opened(&node), 0, "the node with the pinned key was not tried after the mismatch");

    // Served last by the good node, a reconnection still reports the other.
    let mut connector = pinned(&server, &ours);
    connector.last = Some(1);
    drop(connector.connect().expect("the node with the pinned key connects"));
    cluster.stop(&node);
    let Err(e) = connector.connect() else { panic!("connected to a node with another key") };
    assert!(matches!(&e, ConnectError::KeyChanged { server, .. } if *server == impostor.tcp.to_string()), "{e:?}");
}

#[test]
fn trust_on_first_use_pins_the_first_node_that_answers_and_no_other_key() {
    let cluster = Cluster::new();
    let (shared, other) = (key(), key());
    let first = cluster.start(&shared, 0, false);
    let stranger = cluster.start(&other, 0, false);
    let dead = format!("127.0.0.1:{}", dead_port());
    let server = format!("{dead},{},{}", first.tcp, stranger.tcp);
    let data = Data::new("tofu");

    let mut connector = opts(&server, Transport::Tcp, Trust::FirstUse);
    let lines = ok(run(&data.0, &mut connector, "alice", |e, o| account::register(e, o, "alice")));
    let tofu = lines.iter().find(|l| l["event"] == "trusted_on_first_use").unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(tofu["pin"], shared.pin.as_str(), "{tofu}");
    assert_eq!(tofu["node"], first.tcp.to_string().as_str(), "{tofu}");
    assert_eq!(tofu["server"], server.as_str(), "{tofu}");
    assert_eq!(connector.trust, Trust::Pin(shared.pin.clone()));
    assert_eq!(cluster.opened(&stranger), 0);

    // The first node gone, the next presents another key: refused, not trusted.
    cluster.stop(&first);
    let Err(e) = connector.connect() else { panic!("a node with another key was accepted") };
    assert!(matches!(&e, ConnectError::KeyChanged { server, .. } if *server == stranger.tcp.to_string()), "{e:?}");
    assert!(e.hint().contains("every node must present the same key"), "{}", e.hint());
}

#[test]
fn a_reconnection_tries_the_node_that_served_last_first() {
    let cluster = Cluster::new();
    let key = key();
    let port_a = dead_port();
    let b = cluster.start(&key, 0, false);
    let mut connector = pinned(&format!("127.0.0.1:{port_a},{}", b.tcp), &key);

    drop(connector.connect().expect("b is up"));
    assert_eq!((connector.last, connector.connected_to()), (Some(1), Some(b.tcp.to_string().as_str())));
    cluster.wait_opened(&b, 1);
    // a comes up: the next connection still goes to b, which served last.
    let a = cluster.start(&key, port_a, false);
    drop(connector.connect().expect("b is up"));
    assert_eq!(connector.last, Some(1), "b served last, so it is tried first");
    cluster.wait_opened(&b, 2);
    assert_eq!(cluster.opened(&a), 0);
    // b goes: a, then a again.
    cluster.stop(&b);
    drop(connector.connect().expect("a is up"));
    assert_eq!(connector.last, Some(0));
    drop(connector.connect().expect("a is up"));
    cluster.wait_opened(&a, 2);
    assert_eq!(cluster.opened(&b), 2);
}

#[test]
fn over_quic_a_silent_address_costs_about_two_seconds_not_ten() {
    let cluster = Cluster::new();
    let key = key();
    let node = cluster.start(&key, 0, true);
    // A bound UDP port that never answers and never reads: no handshake,
    // no ICMP "port unreachable" either (a dead host, or ICMP filtered).
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = format!("{},{}", silent.local_addr().unwrap(), node.quic());
    let mut connector = opts(&server, Transport::Quic, Trust::Pin(key.pin.clone()));
    let started = Instant::now();
    drop(connector.connect().expect("the QUIC node answers"));
    let took = started.elapsed();
    assert_eq!(connector.connected_to(), Some(node.quic().to_string().as_str()));
    assert!(took >= Duration::from_secs(1), "the silent address was tried first: {took:?}");
    assert!(took < Duration::from_secs(5), "a silent address must not cost the whole 10 s timeout: {took:?}");
}

/// How many connections wait in `listener`'s queue (taken from it).
fn queued(listener: &std::net::TcpListener) -> usize {
    listener.set_nonblocking(true).unwrap();
    std::iter::from_fn(|| listener.accept().ok()).count()
}

#[test]
fn over_tcp_and_websocket_a_node_that_never_answers_tls_costs_about_a_second_not_ten() {
    let cluster = Cluster::new();
    let key = key();
    let live = cluster.start_with(&key, 0, Extra { quic: false, ws: true });
    // Listening, never accepting nor reading: the kernel completes the TCP
    // handshake, and TLS never answers (a node paused with SIGSTOP).
    let paused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = paused.local_addr().unwrap();
    let data = Data::new("paused-first");

    let mut connector = pinned(&format!("{at},{}", live.tcp), &key);
    let started = Instant::now();
    ok(run(&data.0, &mut connector, "alice", |e, o| account::register(e, o, "alice")));
    let took = started.elapsed();
    assert_eq!(connector.connected_to(), Some(live.tcp.to_string().as_str()), "the live node served");
    assert_eq!(queued(&paused), 1, "the paused node was tried once, first, and not again once the live one answered");
    assert!(took >= FIRST_ATTEMPT, "the paused node had its short attempt first: {took:?}");
    assert!(took < Duration::from_secs(5), "a paused node must not cost the whole {CONNECT_TIMEOUT:?}: {took:?}");

    // WebSocket over TLS: the handshake and the upgrade are never answered.
    let server = format!("wss://{at}{},{}", ws::PATH, live.wss());
    let mut connector = opts(&server, Transport::Ws, Trust::Pin(key.pin.clone()));
    let started = Instant::now();
    drop(connector.connect().expect("the live node's WebSocket listener answers"));
    let took = started.elapsed();
    assert_eq!(connector.connected_to(), Some(live.wss().as_str()));
    assert_eq!(queued(&paused), 1, "tried once, first");
    assert!(took >= FIRST_ATTEMPT, "{took:?}");
    assert!(took < Duration::from_secs(5), "a paused node must not cost the whole {CONNECT_TIMEOUT:?}: {took:?}");
}

#[test]
fn the_next_command_starts_at_the_node_that_served_the_last_one() {
    let cluster = Cluster::new();
    let key = key();
    let (a, b) = (cluster.start(&key, 0, false), cluster.start(&key, 0, false));
    let server = format!("{},{}", a.tcp, b.tcp);
    let data = Data::new("last-node");
    // Each command a new process: a new connector that has not connected yet.
    let new_process = || pinned(&server, &key);
    let dir = profile::profile_dir(&data.0, "alice", &server);
    let recorded = || profile::Profile::open(&dir).unwrap().meta(remember::LAST_NODE).unwrap();

    ok(run(&data.0, &mut new_process(), "alice", |e, o| account::register(e, o, "alice")));
    assert_eq!((cluster.opened(&a), cluster.opened(&b)), (1, 0), "the list's order");
    assert_eq!(recorded().as_deref(), Some(a.tcp.to_string().as_str()));
    // a goes: b serves, and the profile says so.
    cluster.stop(&a);
    ok(run(&data.0, &mut new_process(), "alice", |e, o| room::create(e, o, "room11")));
    assert_eq!(cluster.opened(&b), 1);
    assert_eq!(recorded().as_deref(), Some(b.tcp.to_string().as_str()));

    // a comes back: the next commands still start at b, which served last.
    let a = cluster.start(&key, a.tcp.port(), false);
    ok(run(&data.0, &mut new_process(), "alice", |e, o| room::send(e, o, "room11", "through b")));
    ok(run(&data.0, &mut new_process(), "alice", |e, o| room::history(e, o, "room11")));
    assert_eq!((cluster.opened(&a), cluster.opened(&b)), (0, 3), "b first, a not even tried");

    // A value that is not a node of the list (foreign, or of a list that
    // changed since): ignored, the list's order, and replaced.
    profile::Profile::open(&dir).unwrap().set_meta(remember::LAST_NODE, "127.0.0.1:1").unwrap();
    ok(run(&data.0, &mut new_process(), "alice", |e, o| room::history(e, o, "room11")));
    assert_eq!((cluster.opened(&a), cluster.opened(&b)), (1, 3));
    assert_eq!(recorded().as_deref(), Some(a.tcp.to_string().as_str()));

    // A single address records no node.
    let one = b.tcp.to_string();
    ok(run(&data.0, &mut pinned(&one, &key), "bob", |e, o| account::register(e, o, "bob")));
    ok(run(&data.0, &mut pinned(&one, &key), "bob", |e, o| room::create(e, o, "room12")));
    let bob = profile::Profile::open(&profile::profile_dir(&data.0, "bob", &one)).unwrap();
    assert_eq!(bob.meta(remember::LAST_NODE).unwrap(), None);
}

#[test]
fn listen_reaches_the_surviving_node_after_the_one_it_used_stops() {
    let cluster = Cluster::new();
    let key = key();
    let (a, b) = (cluster.start(&key, 0, false), cluster.start(&key, 0, false));
    let server = format!("{},{}", a.tcp, b.tcp);
    let data = Data::new("listen");
    let new_process = || pinned(&server, &key);
    ok(run(&data.0, &mut new_process(), "alice", |e, o| account::register(e, o, "alice")));
    ok(run(&data.0, &mut new_process(), "bob", |e, o| account::register(e, o, "bob")));
    ok(run(&data.0, &mut new_process(), "alice", |e, o| dm::request(e, o, "bob")));
    ok(run(&data.0, &mut new_process(), "bob", |e, o| dm::accept(e, o, "alice")));
    ok(run(&data.0, &mut new_process(), "alice", |e, o| dm::read(e, o, None)));
    assert_eq!(cluster.opened(&b), 0, "everything went to the first node so far");

    let output = Shared::default();
    {
        let (data, mut stdout, mut connector) = (data.0.clone(), output.clone(), new_process());
        // Runs until the test process ends, as `confab listen` until interrupted.
        thread::spawn(move || run_to(&data, &mut connector, "alice", None, &mut stdout, listen::listen));
    }
    output.wait_for("connected event", |l| l["event"] == "connected");
    cluster.stop(&a);
    let lost = output.wait_for("disconnected warning", |l| l["event"] == "disconnected");
    assert_eq!(lost["kind"], "warning", "{lost}");
    assert_eq!(lost["node"], a.tcp.to_string().as_str(), "{lost}");
    let back = output.wait_for("reconnected event", |l| l["event"] == "reconnected");
    assert_eq!(back["kind"], "event", "{back}");
    assert_eq!(back["node"], b.tcp.to_string().as_str(), "the surviving node: {back}");

    ok(run(&data.0, &mut new_process(), "bob", |e, o| dm::send(e, o, "alice", "after the failover")));
    let message = output.wait_for("the message", |l| l["kind"] == "message");
    assert_eq!((message["from"].as_str(), message["text"].as_str()), (Some("bob"), Some("after the failover")));
}

/// A node of a split state that does not serve the user's partition
/// closes the connection 421 ("misdirected"): `register`, the refresh that
/// resumes a session (every later command), `login` and `listen` go on to
/// the next node of the list; when the partition moves, the next command
/// follows it; when no node serves it, a command tries round after round
/// until its answer timeout, then says so.
#[test]
fn a_misdirected_request_goes_on_to_the_next_node() {
    let cluster = Cluster::new();
    let key = key();
    let (a, b) = (cluster.start(&key, 0, false), cluster.start(&key, 0, false));
    cluster.misdirect(&a, true);
    let server = format!("{},{}", a.tcp, b.tcp);
    let data = Data::new("misdirected");
    let new_process = || pinned(&server, &key);
    ok(run(&data.0, &mut new_process(), "alice", |e, o| account::register(e, o, "alice")));
    assert_eq!((cluster.opened(&a), cluster.opened(&b)), (1, 1), "a refused it, b served it");
    ok(run(&data.0, &mut new_process(), "alice", |e, o| room::create(e, o, "room11")));
    assert_eq!((cluster.opened(&a), cluster.opened(&b)), (1, 2), "b, which served last");

    // The partition moves to a: the next command is sent on from b.
    cluster.misdirect(&b, true);
    cluster.misdirect(&a, false);
    ok(run(&data.0, &mut new_process(), "alice", |e, o| room::send(e, o, "room11", "after the move")));
    assert_eq!((cluster.opened(&a), cluster.opened(&b)), (2, 3));
    ok(run(&data.0, &mut new_process(), "alice", |e, o| account::logout(e, o, None)));
    cluster.misdirect(&a, true);
    cluster.misdirect(&b, false);
    ok(run(&data.0, &mut new_process(), "alice", |e, o| account::login(e, o, "alice")));
    ok(run(&data.0, &mut new_process(), "alice", |e, o| room::join(e, o, "room11")));
    let lines = ok(run(&data.0, &mut new_process(), "alice", |e, o| room::history(e, o, "room11")));
    let texts: Vec<&str> = of_kind(&lines, "room_message").iter().filter_map(|l| l["text"].as_str()).collect();
    assert_eq!(texts, ["after the move"], "{lines:#?}");

    // No node serves it (a takeover under way): rounds until the answer timeout, then the error.
    cluster.misdirect(&b, true);
    let before = (cluster.opened(&a), cluster.opened(&b));
    let started = Instant::now();
    let (code, lines) = run(&data.0, &mut new_process(), "alice", |e, o| room::history(e, o, "room11"));
    assert_ne!(code, 0, "{lines:#?}");
    let (message, _) = error_of(&lines);
    assert!(message.contains("421") && message.contains("serves this user's partition"), "{message}");
    assert!(started.elapsed() >= Duration::from_secs(9), "tried until the answer timeout: {:?}", started.elapsed());
    let tries = (cluster.opened(&a) - before.0, cluster.opened(&b) - before.1);
    assert!(tries.0 >= 3 && tries.1 >= 3, "round after round: {tries:?}");
}
