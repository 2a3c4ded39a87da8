//! The confab server, in this process, on 127.0.0.1 ephemeral ports.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use confab_proto::ServerConfig;
use confab_proto::server::{HashParams, MemoryStore, State};
use confab_server::relay::RelayConfig;
use confab_server::relay::host::RelayHost;
use confab_server::runtime::{CommitMode, Node, NodeConfig, NodeHandle, RunError, RunSummary, WsTls};
use confab_server::store::Fsync;
use confab_tests::nats::TempNats;
use confab_transports::link::Link;
use confab_transports::tls::{self, ClientTrust, Pin, ServerIdentity};
use confab_transports::ws::{self, WsUrl};

use crate::{BenchError, StoreKind, Transport};

/// Makes a new connected link to the server (one per client).
pub(crate) type Connector = Box<dyn Fn() -> io::Result<Box<dyn Link>> + Send + Sync>;

/// How long an edge may take to hear the server's relay (NATS started, a heartbeat every 0.5 s).
const EDGE_READY: Duration = Duration::from_secs(10);
/// How long one client may take to connect (TCP or QUIC handshake plus TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The name in the self-signed certificate (the client trusts the key's pin, not the name).
const SERVER_NAME: &str = "localhost";

/// The server configuration of every run: the defaults, except the
/// cheapest password hashing (setup registers and logs in every client)
/// and queue bounds high enough that a fast sender is not refused while
/// its receiver acknowledges.
#[must_use]
pub(crate) fn bench_server_config() -> ServerConfig {
    ServerConfig {
        hash_params: HashParams::INSECURE_FAST,
        queue_per_recipient: 100_000,
        queue_total: 1_000_000,
        // Every simulated client logs in from 127.0.0.1: one source, many accounts at once.
        login_source_burst: u32::MAX,
        ..ServerConfig::default()
    }
}

/// A running server.
pub(crate) struct InProcess {
    handle: NodeHandle,
    thread: Option<JoinHandle<Result<RunSummary, RunError>>>,
    tcp: SocketAddr,
    quic: SocketAddr,
    /// The WebSocket listener (plain `ws://` on loopback, unless started with `ws_tls`).
    ws: SocketAddr,
    ws_tls: bool,
    pin: Pin,
    /// The SQLite store's directory, removed at the end.
    dir: Option<PathBuf>,
    /// The PostgreSQL store's scratch database, dropped at the end.
    scratch: Option<crate::scratch::ScratchDb>,
    /// With `--relay`: the edge the clients reach the server through.
    edge: Option<Edge>,
}

/// A cluster's edge in this process, relaying to the in-process server
/// over a NATS server of the run's own. Its fields drop in order: the
/// edge's node first, then the owner's relay, then NATS.
struct Edge {
    handle: NodeHandle,
    thread: Option<JoinHandle<Result<RunSummary, RunError>>>,
    host: Option<RelayHost>,
    _nats: TempNats,
}

impl Edge {
    fn stop(&mut self) {
        self.handle.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        drop(self.host.take());
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The cluster's name and the relay's lease token in a relayed run (the
/// in-process server holds no lease: the token only has to match).
const RELAY_CLUSTER: &str = "bench";
const RELAY_TOKEN: u64 = 1;

/// The configuration of a node of the run (the in-process server, or its edge).
fn node_config(identity: ServerIdentity, ws_tls: bool) -> NodeConfig {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let mut node_config = NodeConfig::new(bench_server_config(), addr, identity);
    // Every client connects from 127.0.0.1 at once: one source may hold every handshake slot
    // (the default share, 125, refused a 100 + 100 client setup).
    node_config.tcp_limits.max_handshaking_per_source = node_config.tcp_limits.max_handshaking;
    if let Some(ws) = node_config.ws.as_mut() {
        ws.limits.conn.max_handshaking_per_source = ws.limits.conn.max_handshaking;
        if ws_tls {
            ws.tls = WsTls::Always;
        }
    }
    node_config
}

/// A new self-signed identity and its pin.
fn identity() -> Result<(ServerIdentity, Pin), BenchError> {
    let names = vec![SERVER_NAME.to_owned(), Ipv4Addr::LOCALHOST.to_string()];
    let identity: ServerIdentity =
        ServerIdentity::self_signed(&names).map_err(|e| BenchError(format!("self-signed identity: {e}")))?.identity;
    let pin = identity.pin().map_err(|e| BenchError(format!("certificate pin: {e}")))?;
    Ok((identity, pin))
}

impl InProcess {
    /// Binds TCP, QUIC and WebSocket on 127.0.0.1 (ephemeral ports) and runs the loop on its own thread.
    /// `ws_tls`: its WebSocket listener speaks TLS (`wss://`).
    pub(crate) fn start(store: StoreKind, ws_tls: bool, postgres_url: Option<&str>) -> Result<InProcess, BenchError> {
        let config = bench_server_config();
        let (identity, pin) = identity()?;
        let node_config = node_config(identity, ws_tls);
        let mut scratch = None;
        let (bound, dir) = match store {
            StoreKind::Postgres => {
                let url = postgres_url.ok_or_else(|| BenchError("--store postgres needs --postgres-url".into()))?;
                let db = crate::scratch::ScratchDb::create(url)?;
                let (pg, state) = confab_server::store::PgStore::open(&db.url, &config)
                    .map_err(|e| BenchError(format!("PostgreSQL store: {e}")))?;
                scratch = Some(db);
                (Node::bind(node_config, pg, state), None)
            }
            StoreKind::Memory => {
                let state = State::new(config.room_history, config.dedup_window);
                // A commit that costs nothing gains nothing from a committer thread, and the hop
                // costs latency (docs/BENCHMARKS.md, "Durable throughput").
                let node_config = NodeConfig { commit: CommitMode::Inline, ..node_config };
                (Node::bind(node_config, MemoryStore::new(&config), state), None)
            }
            StoreKind::Sqlite | StoreKind::SqliteInterval => {
                let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
                let dir = std::env::temp_dir().join(format!("confab-bench-{}-{nanos}", std::process::id()));
                // The store creates the directory itself (mode 0700); it must not exist yet.
                match confab_server::store::Store::open(&dir, &config) {
                    Ok((mut sqlite, state)) => {
                        if store == StoreKind::SqliteInterval
                            && let Err(e) = sqlite.set_fsync(Fsync::Interval(crate::BENCH_FSYNC_INTERVAL))
                        {
                            let _ = std::fs::remove_dir_all(&dir);
                            return Err(BenchError(format!("SQLite store: {e}")));
                        }
                        (Node::bind(node_config, sqlite, state), Some(dir))
                    }
                    Err(e) => {
                        let _ = std::fs::remove_dir_all(&dir);
                        return Err(BenchError(format!("SQLite store: {e}")));
                    }
                }
            }
        };
        let node = match bound {
            Ok(node) => node,
            Err(e) => {
                if let Some(dir) = &dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
                return Err(BenchError(format!("server bind: {e}")));
            }
        };
        let (Some(tcp), Some(quic), Some(ws)) = (node.tcp_addr(), node.quic_addr(), node.ws_addr()) else {
            return Err(BenchError("the server did not bind TCP, QUIC and WebSocket".into()));
        };
        // Loopback only: the bench never sends a byte off this machine.
        if !tcp.ip().is_loopback() || !quic.ip().is_loopback() || !ws.ip().is_loopback() {
            return Err(BenchError(format!("refusing non-loopback addresses {tcp} / {quic}")));
        }
        let handle = node.handle();
        let thread = thread::Builder::new()
            .name("bench-server".into())
            .spawn(move || node.run())
            .map_err(|e| BenchError(format!("server thread: {e}")))?;
        Ok(InProcess { handle, thread: Some(thread), tcp, quic, ws, ws_tls, pin, dir, scratch, edge: None })
    }

    /// From now on the clients reach the server through an edge: starts a
    /// NATS server (Debian's `nats-server`), the server's relay host, and an
    /// edge node (a second self-signed identity, which the clients pin
    /// instead), and waits until the edge hears the server.
    pub(crate) fn relay_through_an_edge(&mut self) -> Result<(), BenchError> {
        let nats = TempNats::start("confab-bench --relay").ok_or_else(|| {
            BenchError("--relay: nats-server is not installed (Debian: apt-get install nats-server)".into())
        })?;
        let relay = |node: &str| RelayConfig { url: nats.url(), cluster: RELAY_CLUSTER.into(), node: node.into() };
        let host = RelayHost::start(relay("bench-server"), 0, RELAY_TOKEN, self.handle.hub(), {
            let handle = self.handle.clone();
            move || handle.is_stopping()
        })
        .map_err(|e| BenchError(format!("the server's relay: {e}")))?;
        let (identity, pin) = identity()?;
        let node = Node::bind_edge(node_config(identity, self.ws_tls), relay("bench-edge"))
            .map_err(|e| BenchError(format!("edge bind: {e}")))?;
        let (Some(tcp), Some(quic), Some(ws)) = (node.tcp_addr(), node.quic_addr(), node.ws_addr()) else {
            return Err(BenchError("the edge did not bind TCP, QUIC and WebSocket".into()));
        };
        let handle = node.handle();
        let thread = thread::Builder::new()
            .name("bench-edge".into())
            .spawn(move || node.run())
            .map_err(|e| BenchError(format!("edge thread: {e}")))?;
        let edge = Edge { handle, thread: Some(thread), host: Some(host), _nats: nats };
        (self.tcp, self.quic, self.ws, self.pin) = (tcp, quic, ws, pin);
        self.edge = Some(edge);
        // The edge refuses connections until it hears the server's heartbeat (every 0.5 s).
        let connect = self.connector(Transport::Tcp)?;
        let deadline = Instant::now() + EDGE_READY;
        loop {
            match connect() {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(BenchError(format!("the edge did not relay within {EDGE_READY:?}: {e}")));
                }
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// A connector for `transport`, trusting exactly this server's key.
    pub(crate) fn connector(&self, transport: Transport) -> Result<Connector, BenchError> {
        let client = tls::client_config(&ClientTrust::Pin(self.pin)).map_err(|e| BenchError(format!("TLS: {e}")))?;
        Ok(match transport {
            Transport::Tcp => {
                let (addr, client) = (self.tcp, Arc::new(client));
                Box::new(move || {
                    let link = confab_transports::tcp::connect(
                        addr,
                        tls::server_name(SERVER_NAME),
                        Arc::clone(&client),
                        CONNECT_TIMEOUT,
                    )?;
                    Ok(Box::new(link) as Box<dyn Link>)
                })
            }
            Transport::Quic => {
                let addr = self.quic;
                Box::new(move || {
                    let link = confab_transports::quic::connect(addr, SERVER_NAME, client.clone(), CONNECT_TIMEOUT)?;
                    Ok(Box::new(link) as Box<dyn Link>)
                })
            }
            Transport::Ws => {
                let (addr, tls) = (self.ws, self.ws_tls);
                let url = WsUrl { tls, host: addr.ip().to_string(), port: addr.port(), path: ws::PATH.to_owned() };
                let config =
                    tls::ws_client_config(&ClientTrust::Pin(self.pin)).map_err(|e| BenchError(format!("TLS: {e}")))?;
                let config = Arc::new(config);
                Box::new(move || {
                    let tls = tls.then(|| (tls::server_name(SERVER_NAME), Arc::clone(&config)));
                    Ok(Box::new(ws::connect(addr, &url, tls, CONNECT_TIMEOUT)?) as Box<dyn Link>)
                })
            }
            Transport::Mem => {
                let handle = self.handle.clone();
                Box::new(move || Ok(Box::new(handle.connect_mem()) as Box<dyn Link>))
            }
            Transport::Relay => {
                return Err(BenchError("a relayed connection is made by a cluster's edge, not by a client".into()));
            }
        })
    }

    /// Stops the server gracefully, waiting at most `timeout`; a one-line summary of its run.
    pub(crate) fn stop(mut self, timeout: Duration) -> String {
        self.shutdown(timeout)
    }

    fn shutdown(&mut self, timeout: Duration) -> String {
        // The edge first: its clients' connections end as it stops.
        drop(self.edge.take());
        self.handle.stop();
        let summary = match self.thread.take() {
            None => "stopped".to_owned(),
            Some(thread) => {
                let deadline = Instant::now() + timeout;
                while !thread.is_finished() && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(10));
                }
                if !thread.is_finished() {
                    "did not stop in time".to_owned()
                } else {
                    match thread.join() {
                        Ok(Ok(s)) => {
                            format!("{} connections, {} commits, {} changes", s.connections, s.commits, s.changes)
                        }
                        Ok(Err(e)) => format!("failed: {e}"),
                        Err(_) => "panicked".to_owned(),
                    }
                }
            }
        };
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        drop(self.scratch.take());
        summary
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if self.thread.is_some() || self.dir.is_some() || self.scratch.is_some() || self.edge.is_some() {
            self.shutdown(Duration::from_secs(5));
        }
    }
}
