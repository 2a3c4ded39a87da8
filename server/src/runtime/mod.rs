//! The server's event loop: one `confab_proto::Server` machine, one store,
//! and every transport, on one thread.
//!
//! ```text
//!             ┌──────────── loop thread (mio::Poll) ─────────────┐
//!  TCP+TLS ──►│ TcpServer ─┐                                      │
//!             │            ├─► NetEvent ─► Server (sans-IO core)  │
//!  QUIC ─────►│ QuicServer ┤        ▲          │ Turn: commit ─►  │
//!  (UDP)      │ Hub ───────┤        │          │  Store, then     │
//!             │ Workers ───┘ JobResult   jobs ─┴─► Workers, conns │
//!  mem ──────►│                                                   │
//!             └───────────────────────────────────────────────────┘
//! ```
//!
//! One turn of the loop: wait for readiness (or the core's next timer),
//! feed every event to the core, then drain it: each [`Turn`] hands its
//! jobs to the workers; its changes go to the committer and its frames and
//! closes are held until the committer reports them durable (pipelined
//! group commit, `runtime/commit.rs`: the loop keeps reading and routing while a
//! commit runs, and the next commit takes every turn gathered meanwhile).
//! Held turns are released in turn order. No acknowledgement ever precedes
//! durability. A failed commit stops the server before anything of that
//! turn, or of any later one, is written (fail-stop: the store, not the
//! network, is the source of truth).
//!
//! [`Turn`]: confab_proto::server::Turn
//!
//! Threads: the loop; the committer ([`CommitMode::Pipelined`]); the argon2
//! workers (`workers.rs`). TCP and WebSocket connections and the QUIC
//! endpoint's UDP socket are sources of the loop's own poll; each turn ends
//! with one QUIC flush (every connection's datagrams of the turn, in GSO
//! batches). Time is read here (the core never reads a clock) and passed in
//! as [`Now`].

mod commit;
mod edge;
mod jwks;
mod log;
mod node_config;
mod refusals;
mod workers;
mod ws;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use confab_proto::server::{Action, Change, Committed, Pending, Receipt, Sequencer, SourceKey, State};
use confab_proto::{Durable, Now, Server, SessionId};
use confab_transports::hub::{ConnId, ConnIds, Hub, HubSender, NetEvent, Transport};
use confab_transports::mem::{self, MemLink};
use confab_transports::quic::QuicServer;
use confab_transports::tcp::TcpServer;
use confab_transports::tls;
use mio::{Events, Poll, Token};
use tracing::{debug, error, info, warn};

use crate::relay::edge::EdgeRelay;
use commit::Committer;
pub use commit::{CommitMode, DEFAULT_MAX_TURNS};
use jwks::JwksFile;
use log::EventLog;
pub use log::LogLimits;
pub use node_config::NodeConfig;
use refusals::RefusalLog;
use workers::Workers;
pub use ws::{WsConfig, WsSetupError, WsTls};

/// The one waker of the poll (mio allows one): off-thread transports, the
/// argon2 workers and [`NodeHandle::stop`] all wake the loop through it, and
/// each turn checks all of them.
const WAKE: Token = Token(0);

/// The QUIC endpoint's UDP socket (below the TCP and WebSocket servers' tokens).
const QUIC: Token = Token(1);

/// How long a graceful stop waits for sessions to flush their last frames.
const STOP_GRACE: Duration = Duration::from_secs(3);

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

    /// Whether [`stop`](NodeHandle::stop) was called.
    #[must_use]
    pub fn is_stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// An in-memory link to the node (no TLS: both ends are this process).
    #[must_use]
    pub fn connect_mem(&self) -> MemLink {
        mem::connect(&self.hub)
    }

    /// The node's hub, for the relay of a cluster's owner
    /// ([`crate::relay::host::RelayHost`]).
    #[must_use]
    pub fn hub(&self) -> HubSender {
        self.hub.clone()
    }
}

/// What a finished [`Node::run`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Connections accepted over the run.
    pub connections: u64,
    /// Transactions committed (one may hold several turns).
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
    /// Commits the turns' changes (see [`commit`]).
    committer: Committer,
    /// Numbers the turns for the committer.
    sequencer: Sequencer,
    /// Turns whose changes are not durable yet, oldest first.
    held: VecDeque<Pending>,
    /// The receipt up to which held turns were released.
    released: Receipt,
    /// The bound on `held` (the loop stops feeding the core at it).
    max_held: usize,
    tcp: Option<TcpServer>,
    quic: Option<QuicServer>,
    ws: Option<ws::WsSide>,
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
    /// An edge's relay to the partition's owner ([`Node::bind_edge`]):
    /// every connection is relayed, none reaches `core`.
    edge: Option<EdgeRelay>,
    /// An edge's relayed connections.
    relayed: HashMap<ConnId, Transport>,
    /// The node is stopping: no listener opens again, no relayed
    /// connection is taken.
    stopping: bool,
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
    /// refuses the identity, or the OS has no randomness. A split state
    /// (`partitions.count` above 1) is refused: the node does not carry
    /// mail between partitions yet (docs/PARTITIONS.md).
    pub fn bind<D>(config: NodeConfig, store: D, state: State) -> io::Result<Node>
    where
        D: Durable<[Change]> + Send + 'static,
        D::Error: std::fmt::Display,
    {
        config.server.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if config.server.partitions.is_split() {
            let why = "a split state (partitions.count above 1) is not served yet: this node carries no mail \
                       between partitions (docs/PARTITIONS.md)";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        }
        let poll = Poll::new()?;
        let ids = ConnIds::default();
        let hub = Hub::new(poll.registry(), WAKE, ids.clone())?;
        let work_waker = hub.sender().waker();
        let stop_waker = hub.sender().waker();
        let max_held = match config.commit {
            CommitMode::Inline => 1,
            CommitMode::Pipelined { max_turns } => max_turns.max(1),
        };
        let committer = Committer::start(Box::new(Reported(store)), config.commit, hub.sender().waker())?;
        let tls = tls::server_config(&config.identity).map_err(io::Error::other)?;
        let tcp = match config.tcp {
            Some(addr) => {
                Some(TcpServer::bind(poll.registry(), addr, Arc::new(tls.clone()), ids.clone(), config.tcp_limits)?)
            }
            None => None,
        };
        let ws = match &config.ws {
            Some(w) => {
                let tls = w.uses_tls(false).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                Some(ws::WsSide::bind(poll.registry(), w, tls, &config.identity, ids.clone())?)
            }
            None => None,
        };
        let quic = match config.quic {
            Some(addr) => {
                Some(QuicServer::bind(poll.registry(), QUIC, addr, tls, ids, config.quic_limits, Instant::now())?)
            }
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
            committer,
            sequencer: Sequencer::default(),
            held: VecDeque::new(),
            released: Receipt::default(),
            max_held,
            tcp,
            quic,
            ws,
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
            edge: None,
            relayed: HashMap::new(),
            stopping: false,
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
                let next = [self.next_deadline(), stopping].into_iter().flatten().min();
                next.map(|t| t.saturating_duration_since(Instant::now()))
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
                } else if let Some(quic) = self.quic.as_mut()
                    && quic.owns(event.token())
                {
                    quic.handle_event(self.poll.registry(), t.instant, event, &mut net);
                } else {
                    self.ws_event(t.instant, event, &mut net);
                }
            }
            if let Some(tcp) = self.tcp.as_mut()
                && tcp.poll_timeout().is_some_and(|d| d <= t.instant)
            {
                tcp.handle_timeout(self.poll.registry(), t.instant, &mut net);
            }
            if let Some(quic) = self.quic.as_mut()
                && quic.poll_timeout().is_some_and(|d| d <= t.instant)
            {
                quic.handle_timeout(self.poll.registry(), t.instant, &mut net);
            }
            if let Some(tcp) = &self.tcp {
                self.refusal_log.report(t.instant, tcp);
            }
            self.ws_turn(t.instant, &mut net);
            while let Some(e) = self.hub.try_recv() {
                net.push(e);
            }
            for e in net.drain(..) {
                self.net_event(t, e);
            }
            self.edge_turn();
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
                if self.edge.is_some() {
                    // An edge stops when its node takes the partition over and
                    // listens as the owner on the same addresses: its listeners
                    // keep the ports (refusing) until the loop ends.
                    self.set_accepting(false);
                } else {
                    if let Some(tcp) = self.tcp.as_mut() {
                        tcp.stop_accepting(self.poll.registry());
                    }
                    if let Some(w) = self.ws.as_mut() {
                        w.server.stop_accepting(self.poll.registry());
                    }
                    if let Some(quic) = self.quic.as_mut() {
                        quic.stop_accepting();
                    }
                }
                self.stopping = true;
                self.core.shutdown(t);
                self.edge_shutdown();
                stopping = Some(t.instant + STOP_GRACE);
            }
            self.drain(t)?;
            // The turn's QUIC datagrams: acks, credit and frames together.
            if let Some(quic) = self.quic.as_mut() {
                quic.flush(self.poll.registry(), t.instant);
            }
            self.log.tick(t.instant);
            if let Some(deadline) = stopping
                && ((self.conns.is_empty() && self.relayed.is_empty()) || t.instant >= deadline)
            {
                break;
            }
        }
        // An edge's relay first: its last closes go out while the listeners
        // still hold the ports the owner is about to bind.
        drop(self.edge.take());
        // The last commits: nothing the process ran is left uncommitted when it exits.
        let last = self.committer.finish();
        self.release(now(), last)?;
        let counts = self.committer.counts();
        (self.summary.commits, self.summary.changes) = (counts.commits, counts.changes);
        self.summary.abandoned = self.conns.len();
        if self.summary.abandoned > 0 {
            warn!(connections = self.summary.abandoned, "stop grace period over: dropping connections still open");
        }
        if let Some(mut quic) = self.quic.take() {
            // The sessions had their grace; their `Closed` events no longer matter.
            quic.shutdown(self.poll.registry(), Instant::now(), &mut Vec::new());
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
        let ws = self.ws.as_ref().and_then(ws::WsSide::deadline);
        let quic = self.quic.as_ref().and_then(QuicServer::poll_timeout);
        [self.core_deadline, tcp, ws, quic, jwks, self.log.deadline(), refusals].into_iter().flatten().min()
    }

    fn net_event(&mut self, now: Now, event: NetEvent) {
        if self.edge.is_some() {
            self.edge_net_event(event);
            return;
        }
        match event {
            // The per-source login limit keys on the peer address (IPv4, or IPv6 /64); mem links are local.
            // Stopping: the listeners are closed; relayed connections, which
            // no listener of this node brings, are refused the same way.
            NetEvent::Opened { conn, transport: Transport::Relay, .. } if self.stopping => {
                debug!(%conn, "relayed connection refused: stopping");
                self.close_conn(conn, Transport::Relay);
            }
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
                // Inbound credit back to mem readers (a no-op for TCP, QUIC, WebSocket,
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

    /// Writes `bytes` to `conn` through its transport; false if it is gone.
    fn send_to(&mut self, conn: ConnId, transport: Transport, bytes: bytes::Bytes) -> bool {
        match transport {
            Transport::Tcp => self.tcp.as_mut().is_some_and(|t| t.send(self.poll.registry(), conn, &bytes)),
            Transport::Quic => self.quic.as_mut().is_some_and(|q| q.send(conn, bytes)),
            Transport::Mem | Transport::Relay => self.hub.send(conn, bytes),
            Transport::Ws => self.ws_send(conn, bytes),
        }
    }

    /// The bytes `conn` has queued and not written.
    fn backlog_of(&self, conn: ConnId, transport: Transport) -> usize {
        match transport {
            Transport::Tcp => self.tcp.as_ref().map_or(0, |t| t.backlog(conn)),
            Transport::Quic => self.quic.as_ref().map_or(0, |q| q.backlog(conn)),
            Transport::Mem | Transport::Relay => self.hub.backlog(conn),
            Transport::Ws => self.ws_backlog(conn),
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
            Transport::Quic => {
                // Its Closed comes once the peer has acknowledged the stream's end.
                if let Some(quic) = self.quic.as_mut() {
                    quic.close(conn);
                }
            }
            Transport::Mem | Transport::Relay => self.hub.close(conn),
            Transport::Ws => self.ws_close(conn, None, "session refused"),
        }
    }

    /// Drains the core until a turn is empty and nothing more was
    /// released: each turn's jobs to the workers, its changes to the
    /// committer, its actions held until they are durable; then every held
    /// turn the committer's receipt covers is released in order (frames
    /// written, sessions closed) and backlogs reported (which may close slow
    /// readers, hence the loop). At `max_held` held turns the loop waits for
    /// a commit before it drains more.
    fn drain(&mut self, now: Now) -> Result<(), RunError> {
        loop {
            let mut turn = self.core.drain();
            let quiet = turn.is_empty();
            for job in turn.take_jobs() {
                self.workers.submit(job);
            }
            let (batch, pending) = self.sequencer.defer(turn);
            self.core_deadline = pending.timeout();
            if !batch.is_empty() {
                self.committer.submit(batch);
            }
            if !pending.is_empty() {
                self.held.push_back(pending);
            }
            let mut released = self.release(now, self.committer.receipt())?;
            while self.held.len() >= self.max_held {
                let receipt = self.committer.wait_past(self.released);
                released |= self.release(now, receipt)?;
            }
            if quiet && !released {
                return Ok(());
            }
        }
    }

    /// Releases, in order, every held turn `receipt` covers, then reports
    /// the backlogs of the sessions written to; whether any turn was
    /// released.
    fn release(&mut self, now: Now, receipt: Result<Receipt, String>) -> Result<bool, RunError> {
        let receipt = receipt.map_err(|e| {
            error!("store commit failed; stopping without writing this turn's frames or any later one's: {e}");
            RunError::Store(e)
        })?;
        self.released = receipt;
        let mut written = Vec::new();
        let mut any = false;
        while let Some(pending) = self.held.pop_front() {
            match pending.release(&receipt) {
                Ok(committed) => {
                    any = true;
                    self.act(now, committed, &mut written);
                }
                Err(pending) => {
                    self.held.push_front(pending);
                    break;
                }
            }
        }
        written.sort_by_key(|(s, _, _)| s.0);
        written.dedup_by_key(|(s, _, _)| s.0);
        for (session, conn, transport) in written {
            let backlog = self.backlog_of(conn, transport);
            self.core.handle_backlog(now, session, backlog);
        }
        Ok(any)
    }

    /// Writes a durable turn's frames, closes its sessions, logs its lines;
    /// notes each session written to in `written`.
    fn act(&mut self, now: Now, committed: Committed, written: &mut Vec<(SessionId, ConnId, Transport)>) {
        for action in committed {
            match action {
                Action::Transmit { session, bytes } => {
                    let Some(&conn) = self.sessions.get(&session) else { continue };
                    let Some(&Conn { transport, .. }) = self.conns.get(&conn) else { continue };
                    if self.send_to(conn, transport, bytes) {
                        written.push((session, conn, transport));
                    }
                }
                Action::Close { session, code, reason } => {
                    let Some(conn) = self.sessions.remove(&session) else { continue };
                    if let Some(&Conn { transport, .. }) = self.conns.get(&conn) {
                        debug!(%conn, session = session.0, code, %reason, "closing session");
                        match transport {
                            Transport::Ws => self.ws_close(conn, Some(code), &reason),
                            transport => self.close_conn(conn, transport),
                        }
                    }
                }
                Action::Log(e) => self.log.event(now.instant, &e),
            }
        }
    }
}
