//! The server's event loop: one `confab_proto::Server` machine, one store,
//! and every transport, on one thread.
//!
//! ```text
//!             ┌──────────── loop thread (mio::Poll) ─────────────┐
//!  TCP+TLS ──►│ TcpServer ─┐                                      │
//!             │            ├─► NetEvent ─► Server (sans-IO core)  │
//!  QUIC ─────►│ Hub ───────┤        ▲          │ Turn: commit ─►  │
//!  (tokio     │            │        │          │  Store, then     │
//!   thread)   │ Workers ───┘ JobResult   jobs ─┴─► Workers, conns │
//!  mem ──────►│                                                   │
//!             └───────────────────────────────────────────────────┘
//! ```
//!
//! One turn of the loop: wait for readiness (or the core's next timer),
//! feed every event to the core, then drain it: each [`Turn`] hands its
//! jobs to the workers and its frames and closes out only through
//! `Turn::commit`, which commits the turn's changes to the store in one
//! transaction first. No acknowledgement ever precedes durability. A failed
//! commit stops the server before anything of that turn is written
//! (fail-stop: the store, not the network, is the source of truth).
//!
//! [`Turn`]: confab_proto::server::Turn
//!
//! Threads: the loop; the argon2 [`workers`]; QUIC's tokio runtime
//! (`confab_transports::quic`). TCP connections are sources of the loop's
//! own poll. Time is read here (the core never reads a clock) and passed
//! in as [`Now`].

mod jwks;
mod log;
mod refusals;
mod workers;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use confab_proto::server::{Action, Change, SourceKey, State};
use confab_proto::{Durable, Now, Server, ServerConfig, SessionId};
use confab_transports::hub::{ConnId, ConnIds, Hub, HubSender, NetEvent, Transport};
use confab_transports::mem::{self, MemLink};
use confab_transports::quic::{QuicLimits, QuicServer};
use confab_transports::tcp::{TcpLimits, TcpServer};
use confab_transports::tls::{self, ServerIdentity};
use mio::{Events, Poll, Token};
use tracing::{debug, error, info, warn};

use jwks::JwksFile;
use log::EventLog;
pub use log::LogLimits;
use refusals::RefusalLog;
use workers::Workers;

/// The one waker of the poll (mio allows one): off-thread transports, the
/// argon2 workers and [`NodeHandle::stop`] all wake the loop through it, and
/// each turn checks all of them.
const WAKE: Token = Token(0);

/// How long a graceful stop waits for sessions to flush their last frames.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// What a [`Node`] serves.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The core's limits and parameters.
    pub server: ServerConfig,
    /// TCP+TLS listen address; `None`: no TCP.
    pub tcp: Option<SocketAddr>,
    /// QUIC (UDP) listen address; `None`: no QUIC.
    pub quic: Option<SocketAddr>,
    /// The TLS certificate and key of both.
    pub identity: ServerIdentity,
    /// TCP connection limits.
    pub tcp_limits: TcpLimits,
    /// QUIC connection limits.
    pub quic_limits: QuicLimits,
    /// argon2 worker threads.
    pub workers: usize,
    /// The OIDC provider's JWK Set file, read again whenever the core asks
    /// for the set (`OidcConfig::jwks_refresh`, and a token naming an
    /// unknown key); `None`: no OIDC, or keys fixed. Whatever keeps the
    /// file current (a cron job fetching the provider's `jwks_uri`, a config
    /// manager) is followed within `jwks_refresh`; a provider publishes a new
    /// key well before signing with it.
    pub oidc_jwks_file: Option<PathBuf>,
    /// How many log lines of each kind are written per interval.
    pub log: LogLimits,
}

impl NodeConfig {
    /// TCP and QUIC on `addr` (port 0: two ephemeral ports), default limits.
    #[must_use]
    pub fn new(server: ServerConfig, addr: SocketAddr, identity: ServerIdentity) -> NodeConfig {
        NodeConfig {
            server,
            tcp: Some(addr),
            quic: Some(addr),
            identity,
            tcp_limits: TcpLimits::default(),
            quic_limits: QuicLimits::default(),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4),
            oidc_jwks_file: None,
            log: LogLimits::default(),
        }
    }
}

/// Stops a running [`Node`] and makes in-memory links to it, from any thread.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    stop: Arc<AtomicBool>,
    waker: Arc<mio::Waker>,
    hub: HubSender,
}

impl NodeHandle {
    /// Asks the node to stop gracefully: stop accepting, tell every session
    /// why (503 "server shutting down"), flush, commit, return from `run`.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }

    /// An in-memory link to the node (no TLS: both ends are this process).
    #[must_use]
    pub fn connect_mem(&self) -> MemLink {
        mem::connect(&self.hub)
    }
}

/// What a finished [`Node::run`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Connections accepted over the run.
    pub connections: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Changes committed.
    pub changes: u64,
    /// Connections still open when the stop's grace period ran out (their
    /// transports were dropped without a clean close).
    pub abandoned: usize,
}

/// Why [`Node::run`] stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The poll failed.
    #[error("event loop failed: {0}")]
    Poll(#[from] io::Error),
    /// A commit failed: the turn's frames were not written.
    #[error("store commit failed, stopping before acknowledging anything of it: {0}")]
    Store(String),
}

/// What the loop commits to: any [`Durable`] store of the core's changes
/// whose error can be logged (the SQLite [`Store`](crate::store::Store), a
/// [`MemoryStore`](confab_proto::server::MemoryStore) for throwaway servers).
type Store = Box<dyn Durable<[Change], Error = String> + Send>;

/// A store whose errors are reported as text, so the loop holds any store.
struct Reported<D>(D);

impl<D> Durable<[Change]> for Reported<D>
where
    D: Durable<[Change]>,
    D::Error: std::fmt::Display,
{
    type Error = String;

    fn commit(&mut self, changes: &[Change]) -> Result<(), String> {
        self.0.commit(changes).map_err(|e| e.to_string())
    }
}

/// A connection the loop knows.
#[derive(Debug, Clone, Copy)]
struct Conn {
    session: SessionId,
    transport: Transport,
}

/// The server's event loop with its transports bound.
pub struct Node {
    poll: Poll,
    core: Server,
    store: Store,
    tcp: Option<TcpServer>,
    quic: Option<QuicServer>,
    hub: Hub,
    workers: Workers,
    log: EventLog,
    stop: Arc<AtomicBool>,
    stop_waker: Arc<mio::Waker>,
    conns: HashMap<ConnId, Conn>,
    sessions: HashMap<SessionId, ConnId>,
    core_deadline: Option<Instant>,
    /// The OIDC JWK Set file, which answers the core's requests for the set.
    jwks: Option<JwksFile>,
    /// Events produced outside a poll turn (a TCP close that completed at
    /// once), handled at the start of the next turn.
    pending: Vec<NetEvent>,
    /// The TCP transport's refusals, logged at most once per interval.
    refusal_log: RefusalLog,
    summary: RunSummary,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("tcp", &self.tcp_addr())
            .field("quic", &self.quic_addr())
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

/// The wall and monotonic clocks, read together.
#[must_use]
pub fn now() -> Now {
    let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    Now::new(Instant::now(), unix_ms)
}

/// 32 bytes from the operating system, for the core's RNG seed.
///
/// # Errors
/// The OS has no randomness to give.
pub fn os_seed() -> io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| io::Error::other(format!("no OS randomness: {e}")))?;
    Ok(seed)
}

impl Node {
    /// Binds the listeners and restores the core from `state` (what `store`
    /// holds). The core's RNG is seeded from the OS.
    ///
    /// # Errors
    /// The core refuses the configuration, a listener cannot be bound, TLS
    /// refuses the identity, or the OS has no randomness.
    pub fn bind<D>(config: NodeConfig, store: D, state: State) -> io::Result<Node>
    where
        D: Durable<[Change]> + Send + 'static,
        D::Error: std::fmt::Display,
    {
        config.server.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let poll = Poll::new()?;
        let ids = ConnIds::default();
        let hub = Hub::new(poll.registry(), WAKE, ids.clone())?;
        let work_waker = hub.sender().waker();
        let stop_waker = hub.sender().waker();
        let tls = tls::server_config(&config.identity).map_err(io::Error::other)?;
        let tcp = match config.tcp {
            Some(addr) => Some(TcpServer::bind(poll.registry(), addr, Arc::new(tls.clone()), ids, config.tcp_limits)?),
            None => None,
        };
        let quic = match config.quic {
            Some(addr) => Some(QuicServer::bind(addr, tls, hub.sender(), config.quic_limits)?),
            None => None,
        };
        let workers = Workers::start(config.workers, work_waker)?;
        let jwks = match (config.oidc_jwks_file, &config.server.oidc) {
            (Some(path), Some(oidc)) => Some(JwksFile::new(path, oidc.jwks_json.as_bytes())),
            _ => None,
        };
        let core = Server::restore(config.server, os_seed()?, state, now())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(Node {
            poll,
            core,
            store: Box::new(Reported(store)),
            tcp,
            quic,
            hub,
            workers,
            log: EventLog::new(config.log),
            stop: Arc::new(AtomicBool::new(false)),
            stop_waker,
            conns: HashMap::new(),
            sessions: HashMap::new(),
            core_deadline: None,
            jwks,
            pending: Vec::new(),
            refusal_log: RefusalLog::new(refusals::INTERVAL),
            summary: RunSummary::default(),
        })
    }

    /// The TCP listener's address.
    #[must_use]
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().map(TcpServer::local_addr)
    }

    /// The QUIC endpoint's address.
    #[must_use]
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.quic.as_ref().map(QuicServer::local_addr)
    }

    /// A handle to stop the node or link to it in memory.
    #[must_use]
    pub fn handle(&self) -> NodeHandle {
        NodeHandle { stop: Arc::clone(&self.stop), waker: Arc::clone(&self.stop_waker), hub: self.hub.sender() }
    }

    /// Runs until [`NodeHandle::stop`], then stops gracefully.
    ///
    /// # Errors
    /// The poll failed or a commit failed (see [`RunError`]).
    pub fn run(mut self) -> Result<RunSummary, RunError> {
        let mut events = Events::with_capacity(1024);
        let mut net = Vec::new();
        let mut stopping: Option<Instant> = None;
        // The first drain arms the core's timers.
        self.drain(now())?;
        loop {
            let timeout = if self.pending.is_empty() {
                self.next_deadline().map(|t| t.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e.into());
            }
            let t = now();
            net.append(&mut self.pending);
            for event in &events {
                if let Some(tcp) = self.tcp.as_mut()
                    && tcp.owns(event.token())
                {
                    tcp.handle_event(self.poll.registry(), t.instant, event, &mut net);
                }
            }
            if let Some(tcp) = self.tcp.as_mut()
                && tcp.poll_timeout().is_some_and(|d| d <= t.instant)
            {
                tcp.handle_timeout(self.poll.registry(), t.instant, &mut net);
            }
            if let Some(tcp) = &self.tcp {
                self.refusal_log.report(t.instant, tcp);
            }
            while let Some(e) = self.hub.try_recv() {
                net.push(e);
            }
            for e in net.drain(..) {
                self.net_event(t, e);
            }
            while let Some(result) = self.workers.try_result() {
                self.core.handle_work(t, result);
            }
            if self.core_deadline.is_some_and(|d| d <= t.instant) {
                self.core.handle_timeout(t);
            }
            if let Some(jwks) = self.jwks.as_mut() {
                jwks.serve(t, &mut self.core);
            }
            if stopping.is_none() && self.stop.load(Ordering::SeqCst) {
                info!(sessions = self.core.session_count(), "stopping: no new connections, closing sessions");
                if let Some(tcp) = self.tcp.as_mut() {
                    tcp.stop_accepting(self.poll.registry());
                }
                if let Some(quic) = &self.quic {
                    quic.stop_accepting();
                }
                self.core.shutdown(t);
                stopping = Some(t.instant + STOP_GRACE);
            }
            self.drain(t)?;
            self.log.tick(t.instant);
            if let Some(deadline) = stopping
                && (self.conns.is_empty() || t.instant >= deadline)
            {
                break;
            }
        }
        self.summary.abandoned = self.conns.len();
        if self.summary.abandoned > 0 {
            warn!(connections = self.summary.abandoned, "stop grace period over: dropping connections still open");
        }
        if let Some(quic) = self.quic.take() {
            quic.shutdown(Duration::from_secs(1));
        }
        info!(
            connections = self.summary.connections,
            commits = self.summary.commits,
            changes = self.summary.changes,
            "stopped"
        );
        Ok(self.summary)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let tcp = self.tcp.as_ref().and_then(TcpServer::poll_timeout);
        let refusals = self.tcp.as_ref().and_then(|tcp| self.refusal_log.due(tcp.refusals()));
        // The core's validator says when it next wants the JWK Set (only asked for with a file to read).
        let jwks = self.jwks.as_ref().and_then(|_| self.core.jwks_deadline());
        [self.core_deadline, tcp, jwks, self.log.deadline(), refusals].into_iter().flatten().min()
    }

    fn net_event(&mut self, now: Now, event: NetEvent) {
        match event {
            // The per-source login limit keys on the peer address (IPv4, or IPv6 /64); mem links are local.
            NetEvent::Opened { conn, transport, peer, .. } => {
                match self.core.open_session_from(now, peer.map_or(SourceKey::Local, |p| SourceKey::from_ip(p.ip()))) {
                    Ok(session) => {
                        self.summary.connections += 1;
                        debug!(%conn, %transport, ?peer, session = session.0, "connection opened");
                        self.conns.insert(conn, Conn { session, transport });
                        self.sessions.insert(session, conn);
                    }
                    Err(e) => {
                        warn!(%conn, %transport, ?peer, "connection refused: {e}");
                        self.close_conn(conn, transport);
                    }
                }
            }
            NetEvent::Received { conn, bytes } => {
                if let Some(c) = self.conns.get(&conn) {
                    self.core.handle_input(now, c.session, &bytes);
                }
                // Inbound credit back to QUIC and mem readers (a no-op for TCP,
                // which the loop reads itself, and for conns already gone).
                self.hub.consumed(conn, bytes.len());
            }
            NetEvent::Closed { conn, reason } => {
                if let Some(c) = self.conns.remove(&conn) {
                    debug!(%conn, transport = %c.transport, session = c.session.0, %reason, "connection closed");
                    self.sessions.remove(&c.session);
                    self.core.close_session(now, c.session);
                } else {
                    // A handshake that failed or timed out, an ALPN refused,
                    // a connection over the limits, or one the core refused.
                    debug!(%conn, %reason, "connection ended before a session");
                }
            }
        }
    }

    fn close_conn(&mut self, conn: ConnId, transport: Transport) {
        match transport {
            Transport::Tcp => {
                // The Closed event may come at once (everything flushed):
                // it is handled at the start of the next turn, like any other.
                if let Some(tcp) = self.tcp.as_mut() {
                    tcp.close(self.poll.registry(), conn, &mut self.pending);
                }
            }
            Transport::Quic | Transport::Mem => self.hub.close(conn),
        }
    }

    /// Drains the core until a turn is empty: each turn's jobs to the
    /// workers, its changes committed, then its frames written and its
    /// sessions closed, then backlogs reported (which may close slow
    /// readers, hence the loop).
    fn drain(&mut self, now: Now) -> Result<(), RunError> {
        loop {
            let mut turn = self.core.drain();
            let quiet = turn.is_empty();
            for job in turn.take_jobs() {
                self.workers.submit(job);
            }
            let committed = turn.commit(&mut *self.store).map_err(|e| {
                error!("store commit failed; stopping without writing this turn's frames: {e}");
                RunError::Store(e)
            })?;
            if !committed.changes().is_empty() {
                self.summary.commits += 1;
                self.summary.changes += committed.changes().len() as u64;
            }
            self.core_deadline = committed.timeout();
            let mut written = Vec::new();
            for action in committed {
                match action {
                    Action::Transmit { session, bytes } => {
                        let Some(&conn) = self.sessions.get(&session) else { continue };
                        let Some(c) = self.conns.get(&conn) else { continue };
                        let ok = match c.transport {
                            Transport::Tcp => {
                                self.tcp.as_mut().is_some_and(|t| t.send(self.poll.registry(), conn, &bytes))
                            }
                            Transport::Quic | Transport::Mem => self.hub.send(conn, bytes),
                        };
                        if ok {
                            written.push((session, conn, c.transport));
                        }
                    }
                    Action::Close { session, code, reason } => {
                        let Some(conn) = self.sessions.remove(&session) else { continue };
                        if let Some(c) = self.conns.get(&conn) {
                            debug!(%conn, session = session.0, code, %reason, "closing session");
                            let transport = c.transport;
                            self.close_conn(conn, transport);
                        }
                    }
                    Action::Log(e) => self.log.event(now.instant, &e),
                }
            }
            if quiet {
                return Ok(());
            }
            written.sort_by_key(|(s, _, _)| s.0);
            written.dedup_by_key(|(s, _, _)| s.0);
            for (session, conn, transport) in written {
                let backlog = match transport {
                    Transport::Tcp => self.tcp.as_ref().map_or(0, |t| t.backlog(conn)),
                    Transport::Quic | Transport::Mem => self.hub.backlog(conn),
                };
                self.core.handle_backlog(now, session, backlog);
            }
        }
    }
}
