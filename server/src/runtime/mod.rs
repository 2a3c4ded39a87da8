//! The server's event loop: its `confab_proto::Server` machines (one, or
//! one per partition of a split state it serves), their stores, and every
//! transport, on one thread.
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
//! A split state (docs/PARTITIONS.md) runs one core per partition
//! (`core.rs`), each with its own store and committer; the switchboard
//! (`confab_proto::server::Switchboard`, `switch.rs`) decides which core
//! gets each byte a connection sends, and the mail carrier
//! (`crate::store::Carrier`, `mail.rs`) brings each core the mail the
//! others committed for it. With one partition the switchboard binds every
//! connection to the one core when it opens.
//!
//! Threads: the loop; a committer per core ([`CommitMode::Pipelined`]); the argon2
//! workers (`workers.rs`); a split state's mail carrier. TCP and WebSocket connections and the QUIC
//! endpoint's UDP socket are sources of the loop's own poll; each turn ends
//! with one QUIC flush (every connection's datagrams of the turn, in GSO
//! batches). Time is read here (the core never reads a clock) and passed in
//! as [`Now`].

mod commit;
mod core;
mod edge;
mod jwks;
mod log;
mod mail;
mod node_config;
mod owner;
mod refusals;
mod switch;
mod workers;
mod ws;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use confab_proto::server::{Action, Change, Committed, PartitionId, SourceKey, State, Switchboard};
use confab_proto::{Durable, Now, Server, ServerConfig, SessionId};
use confab_transports::hub::{ConnId, ConnIds, Hub, HubSender, NetEvent, Transport};
use confab_transports::mem::{self, MemLink};
use confab_transports::quic::QuicServer;
use confab_transports::tcp::TcpServer;
use confab_transports::tls;
use mio::{Events, Poll, Token};
use tracing::{debug, error, info, warn};

use crate::relay::bells::Served;
use crate::relay::edge::EdgeRelay;
use crate::store::LeaseWatch;
pub use commit::{CommitMode, DEFAULT_MAX_TURNS};
use core::Core;
use jwks::JwksFile;
use log::EventLog;
pub use log::LogLimits;
pub use node_config::NodeConfig;
use owner::{Ownership, Stop};
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

/// Stops a running [`Node`] and makes in-memory links to it, from any
/// thread; hands a node sharing a split state the partitions it takes and
/// gives back.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    stop: Arc<AtomicBool>,
    waker: Arc<mio::Waker>,
    hub: HubSender,
    ownership: mpsc::Sender<Ownership>,
    served: Served,
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

    /// Has a node serving a split state ([`Node::bind_split`]) serve
    /// `partition` from `store` (whose lease, of fencing token `lease`, is
    /// this node's), restored from `state`, what `store` holds. A node
    /// that stopped drops the store (releasing its lease).
    pub fn take<D>(&self, partition: PartitionId, lease: u64, store: D, state: State)
    where
        D: Durable<[Change]> + Send + 'static,
        D::Error: std::fmt::Display,
    {
        let store = Box::new(Reported(store));
        self.tell(Ownership::Take { partition, lease, store, state: Box::new(state), watch: None });
    }

    /// [`take`](NodeHandle::take), with the lease's watch
    /// ([`watch_lease`](NodeHandle::watch_lease)) in the same message: no
    /// frame reaches the core before its doubt is watched.
    pub fn take_watched<D>(&self, partition: PartitionId, lease: u64, store: D, state: State, watch: LeaseWatch)
    where
        D: Durable<[Change]> + Send + 'static,
        D::Error: std::fmt::Display,
    {
        let store = Box::new(Reported(store));
        self.tell(Ownership::Take { partition, lease, store, state: Box::new(state), watch: Some(watch) });
    }

    /// Whether the node serves `partition` now (a split state's).
    #[must_use]
    pub fn serves(&self, partition: PartitionId) -> bool {
        self.served.contains(partition)
    }

    /// Has the node give `partition` back: its sessions are closed (503,
    /// "partition moved"), what its core did is committed and acted on,
    /// and its store is dropped (which releases the lease at once).
    pub fn give_back(&self, partition: PartitionId) {
        self.tell(Ownership::GiveBack { partition });
    }

    /// Tells the node that `partition`'s lease of token `lease` was lost
    /// (`reason`): its core stops at once, nothing more of it acted on. A
    /// core serving another lease of the partition (taken since) goes on;
    /// a core bound with the node ([`Node::bind_split`]) stops whatever
    /// the token.
    pub fn lease_lost(&self, partition: PartitionId, lease: u64, reason: String) {
        self.tell(Ownership::Lost { partition, lease, reason });
    }

    /// Has the node watch `partition`'s lease of token `lease` through
    /// `watch` (a core bound with the node, [`Node::bind`] or
    /// [`Node::bind_split`], whatever the token): while the lease is in
    /// doubt ([`LeaseWatch::in_doubt`]: no renewal for a while, the
    /// process stopped or the store out of reach), a frame for that core
    /// closes its connection 503 instead of being answered from a state
    /// another node may have moved past. Tell it after the take.
    pub fn watch_lease(&self, partition: PartitionId, lease: u64, watch: LeaseWatch) {
        self.tell(Ownership::Watch { partition, lease, watch });
    }

    fn tell(&self, change: Ownership) {
        if self.ownership.send(change).is_ok() {
            let _ = self.waker.wake();
        }
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
#[derive(Debug, Clone)]
struct Conn {
    transport: Transport,
    /// Where it comes from, for the cores' per-source limits.
    source: SourceKey,
    /// Its peer's address, if it has one (what a relay tells the owner).
    peer: Option<SocketAddr>,
    /// Its sessions, at each core it was opened at (one with one
    /// partition): kept until the connection closes, so that a session
    /// the switchboard closed still gets its last answers.
    sessions: Vec<(PartitionId, SessionId)>,
}

impl Conn {
    fn session_at(&self, partition: PartitionId) -> Option<SessionId> {
        self.sessions.iter().find(|(p, _)| *p == partition).map(|&(_, s)| s)
    }
}

/// The server's event loop with its transports bound.
pub struct Node {
    poll: Poll,
    /// The cores, by partition (`None`: not served by this node).
    cores: Vec<Option<Core>>,
    /// The cores' configuration (each with its own partition index), and
    /// how they commit: for the partitions taken while running.
    core_config: ServerConfig,
    commit: CommitMode,
    /// The partitions taken and given back while running ([`NodeHandle::take`]).
    ownership: mpsc::Receiver<Ownership>,
    ownership_tx: mpsc::Sender<Ownership>,
    /// The partitions it serves, for its handles.
    served: Served,
    /// The cores being given back, until their last turns are durable and
    /// acted on (`owner.rs`).
    leaving: Vec<Core>,
    /// Leases reported lost before (or after) their core: a take of one is
    /// refused (`owner.rs`).
    lost_leases: std::collections::VecDeque<(PartitionId, u64)>,
    /// Which core gets each byte a connection sends.
    board: Switchboard<ConnId>,
    /// A split state's mail.
    mail: Option<mail::MailSide>,
    /// The cores' bound on a session's unwritten bytes (an edge's on its
    /// relayed connections).
    max_session_backlog: usize,
    tcp: Option<TcpServer>,
    quic: Option<QuicServer>,
    ws: Option<ws::WsSide>,
    hub: Hub,
    workers: Workers,
    log: EventLog,
    stop: Arc<AtomicBool>,
    stop_waker: Arc<mio::Waker>,
    conns: HashMap<ConnId, Conn>,
    sessions: HashMap<(PartitionId, SessionId), ConnId>,
    /// Sessions the switchboard closed on open connections (bound at
    /// another core): their core's close ends them, not their connection.
    ending: HashSet<(PartitionId, SessionId)>,
    /// OIDC subjects routed by name during this pass of the switchboard's
    /// outputs, whose frames may not have reached their core yet.
    routed_subjects: HashMap<[u8; 32], PartitionId>,
    /// The OIDC JWK Set file, which answers the core's requests for the set.
    jwks: Option<JwksFile>,
    /// Events produced outside a poll turn (a TCP close that completed at
    /// once), handled at the start of the next turn.
    pending: Vec<NetEvent>,
    /// The TCP transport's refusals, logged at most once per interval.
    refusal_log: RefusalLog,
    summary: RunSummary,
    /// The relay to other nodes' partitions: an edge's
    /// ([`Node::bind_edge`], `pure_edge`: every connection is relayed, none
    /// reaches `core`), or a split state's node's with `[cluster] nats`
    /// (the connections whose frame goes to a partition another node serves).
    edge: Option<EdgeRelay>,
    /// The node is an edge of a single partition's owner.
    pure_edge: bool,
    /// The relayed connections.
    relayed: HashMap<ConnId, Transport>,
    /// A split state's node: the partitions whose owner its relay hears (as bits).
    owners_heard: u64,
    /// A split state's node with `[cluster] nats`: where it relays, and the
    /// relay host of each partition it serves (the edges' connections to it).
    relay: Option<crate::relay::RelayConfig>,
    hosts: std::collections::BTreeMap<PartitionId, crate::relay::host::RelayHost>,
    /// The hosts of partitions given back, until their cores are retired.
    leaving_hosts: Vec<(PartitionId, crate::relay::host::RelayHost)>,
    /// Connections leaving for the relay, waiting for this node's cores to
    /// write their last answers first (`switch.rs`, `relay_to_owner`).
    pending_relays: Vec<switch::PendingRelay>,
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
    /// (`partitions.count` above 1) is refused: it needs a store per
    /// partition and the mail between them ([`Node::bind_split`]).
    pub fn bind<D>(config: NodeConfig, store: D, state: State) -> io::Result<Node>
    where
        D: Durable<[Change]> + Send + 'static,
        D::Error: std::fmt::Display,
    {
        if config.server.partitions.is_split() {
            let why = "a split state (partitions.count above 1) needs a store per partition and their mail \
                       (Node::bind_split)";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        }
        Node::bind_cores(config, vec![(0, Box::new(Reported(store)), state)], None)
    }

    /// Binds the listeners and restores a core for each partition of a
    /// split state (`config.server.partitions.count` of them) given in
    /// `partitions` (its index, its store and what it holds), each core's
    /// RNG seeded from the OS; the mail between partitions is read from
    /// the PostgreSQL store at `mail_url` ([`crate::store::Carrier`],
    /// every `mail_poll` at least, and whenever a core's commit mailed
    /// another). The partitions not given are served elsewhere, or later
    /// ([`NodeHandle::take`]); a frame for one of them is relayed to its
    /// owner when `config.bells` names a NATS whose relay hears one, and
    /// otherwise closes its connection with 421 ("misdirected": the client
    /// tries another node).
    ///
    /// # Errors
    /// As [`Node::bind`]; a state that is not split, a partition out of
    /// range or given twice, or a mail URL that does not parse.
    pub fn bind_split<D>(
        config: NodeConfig,
        partitions: Vec<(PartitionId, D, State)>,
        mail_url: &str,
        mail_poll: Duration,
    ) -> io::Result<Node>
    where
        D: Durable<[Change]> + Send + 'static,
        D::Error: std::fmt::Display,
    {
        let count = config.server.partitions.count;
        let mut seen = HashSet::new();
        if count < 2 || partitions.iter().any(|(p, _, _)| *p >= count || !seen.insert(*p)) {
            let given: Vec<PartitionId> = partitions.iter().map(|(p, _, _)| *p).collect();
            let why = format!(
                "a split state of {count} partition(s) needs at least two, each given once at most: {given:?} given"
            );
            return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        }
        let stores =
            partitions.into_iter().map(|(p, store, state)| (p, Box::new(Reported(store)) as _, state)).collect();
        let relay = config.bells.clone();
        let mut node = Node::bind_cores(config, stores, Some((mail_url, mail_poll)))?;
        // Over NATS, a connection whose frame goes to a partition another
        // node serves is relayed to it (and this node's partitions take the
        // other nodes' relayed connections: a host each, started with the
        // lease's token).
        if let Some(relay) = relay {
            node.edge = Some(EdgeRelay::start(relay.clone(), node.hub.sender().waker())?);
            node.relay = Some(relay);
        }
        Ok(node)
    }

    fn bind_cores(
        config: NodeConfig,
        stores: Vec<(PartitionId, commit::Store, State)>,
        mail: Option<(&str, Duration)>,
    ) -> io::Result<Node> {
        config.server.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let poll = Poll::new()?;
        let ids = ConnIds::default();
        let hub = Hub::new(poll.registry(), WAKE, ids.clone())?;
        let work_waker = hub.sender().waker();
        let stop_waker = hub.sender().waker();
        let served = Served::default();
        let mut cores: Vec<Option<Core>> = (0..config.server.partitions.count).map(|_| None).collect();
        let mail = match mail {
            Some((url, every)) => Some(mail::MailSide::start(
                url,
                every,
                config.server.partitions.count,
                hub.sender().waker(),
                config.bells.clone(),
                &served,
            )?),
            None => None,
        };
        for (index, store, state) in stores {
            let mut server = config.server.clone();
            server.partitions.index = index;
            let server = Server::restore(server, os_seed()?, state, now())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let core = Core::start(server, store, config.commit, hub.sender().waker())?;
            if let Some(mail) = &mail {
                mail.own(&core);
            }
            cores[usize::from(index)] = Some(core);
            served.add(index);
        }
        let (ownership_tx, ownership) = mpsc::channel();
        let board = Switchboard::new(config.server.partitions, config.server.limits, config.server.max_deferred_bytes);
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
        Ok(Node {
            poll,
            cores,
            core_config: config.server.clone(),
            commit: config.commit,
            ownership,
            ownership_tx,
            served,
            leaving: Vec::new(),
            lost_leases: std::collections::VecDeque::new(),
            board,
            mail,
            max_session_backlog: config.server.max_session_backlog,
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
            ending: HashSet::new(),
            routed_subjects: HashMap::new(),
            jwks,
            pending: Vec::new(),
            refusal_log: RefusalLog::new(refusals::INTERVAL),
            summary: RunSummary::default(),
            edge: None,
            pure_edge: false,
            relayed: HashMap::new(),
            owners_heard: 0,
            relay: None,
            hosts: std::collections::BTreeMap::new(),
            leaving_hosts: Vec::new(),
            pending_relays: Vec::new(),
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
        NodeHandle {
            stop: Arc::clone(&self.stop),
            waker: Arc::clone(&self.stop_waker),
            hub: self.hub.sender(),
            ownership: self.ownership_tx.clone(),
            served: self.served.clone(),
        }
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
            self.ownership_turn(t);
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
            self.mail_turn(t);
            while let Some((partition, result)) = self.workers.try_result() {
                if let Some(core) = self.core_mut(partition) {
                    core.server.handle_work(t, result);
                }
            }
            for core in self.cores.iter_mut().flatten() {
                if core.deadline.is_some_and(|d| d <= t.instant) {
                    core.server.handle_timeout(t);
                }
                if let Some(jwks) = self.jwks.as_mut() {
                    jwks.serve(t, &mut core.server);
                }
            }
            if stopping.is_none() && self.stop.load(Ordering::SeqCst) {
                let sessions: usize = self.cores.iter().flatten().map(|c| c.server.session_count()).sum();
                info!(sessions, "stopping: no new connections, closing sessions");
                if self.pure_edge {
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
                for core in self.cores.iter_mut().flatten() {
                    core.server.shutdown(t);
                }
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
        let t = now();
        self.finish_leaving(t);
        for p in 0..self.cores.len() {
            let Some(core) = self.cores[p].as_mut() else { continue };
            let last = core.finish();
            let counts = core.counts();
            self.summary.commits += counts.commits;
            self.summary.changes += counts.changes;
            match last {
                Ok(last) => self.act_released(t, p, last),
                // A split state's partition fails alone: another node takes it from the store.
                Err(e) if self.mail.is_some() => error!(partition = p, "the partition's last commit failed: {e}"),
                Err(e) => return Err(e),
            }
        }
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
        let ws = self.ws.as_ref().and_then(ws::WsSide::deadline);
        let quic = self.quic.as_ref().and_then(QuicServer::poll_timeout);
        let cores = self.cores.iter().flatten().flat_map(|c| {
            let jwks = self.jwks.as_ref().and_then(|_| c.server.jwks_deadline());
            [c.deadline, jwks]
        });
        [tcp, ws, quic, self.log.deadline(), refusals].into_iter().chain(cores).flatten().min()
    }

    fn core_mut(&mut self, partition: PartitionId) -> Option<&mut Core> {
        self.cores.get_mut(usize::from(partition)).and_then(Option::as_mut)
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

    /// Drains the cores until each turn is empty, nothing more was
    /// released and the switchboard has nothing more to hand: each turn's
    /// jobs to the workers, its changes to the committer, its actions held
    /// until they are durable; then every held turn the committer's receipt
    /// covers is released in order (frames written, sessions closed) and
    /// backlogs reported (which may close slow readers, hence the loop); and
    /// the frames the cores settled are answered to the switchboard, whose
    /// next frames are handed. At `max_held` held turns a core waits for a
    /// commit before it drains more.
    fn drain(&mut self, now: Now) -> Result<(), RunError> {
        loop {
            let mut busy = false;
            for p in 0..self.cores.len() {
                let Some(core) = self.cores[p].as_mut() else { continue };
                let quiet = core.turn(Some(&self.workers));
                let released = match core.released() {
                    Ok(released) => released,
                    // A split state's partition fails alone: its core stops, nothing more
                    // of it is acted on, and a node takes it from the store.
                    Err(RunError::Store(e)) if self.mail.is_some() => {
                        let partition = PartitionId::try_from(p).unwrap_or(PartitionId::MAX);
                        self.stop_core(now, partition, Stop::Lost(format!("its commit failed: {e}")));
                        busy = true;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let targets = core.take_ring();
                busy |= !quiet || !released.is_empty();
                self.act_released(now, p, released);
                if targets != 0
                    && let Some(mail) = &self.mail
                {
                    mail.ring(targets);
                }
            }
            busy |= self.leaving_turn(now);
            busy |= self.start_relays();
            if self.settle(now) {
                self.switch(now);
                busy = true;
            }
            if !busy {
                return Ok(());
            }
        }
    }

    /// Does what the released turns of core `p` say, in order, then
    /// reports the backlogs of its sessions written to.
    fn act_released(&mut self, now: Now, p: usize, released: Vec<Committed>) {
        if released.is_empty() {
            return;
        }
        let partition = PartitionId::try_from(p).unwrap_or(PartitionId::MAX);
        let mut written = Vec::new();
        for committed in released {
            self.act(now, partition, committed, &mut written);
        }
        written.sort_by_key(|(s, _, _)| s.0);
        written.dedup_by_key(|(s, _, _)| s.0);
        for (session, conn, transport) in written {
            let backlog = self.backlog_of(conn, transport);
            if let Some(core) = self.core_mut(partition) {
                core.server.handle_backlog(now, session, backlog);
            }
        }
    }

    /// Writes a durable turn's frames, closes its sessions (a session
    /// closed by its core closes its whole connection), logs its lines;
    /// notes each session written to in `written`.
    fn act(
        &mut self,
        now: Now,
        partition: PartitionId,
        committed: Committed,
        written: &mut Vec<(SessionId, ConnId, Transport)>,
    ) {
        for action in committed {
            match action {
                Action::Transmit { session, bytes } => {
                    let Some(&conn) = self.sessions.get(&(partition, session)) else { continue };
                    let Some(transport) = self.conns.get(&conn).map(|c| c.transport) else { continue };
                    if self.send_to(conn, transport, bytes) {
                        written.push((session, conn, transport));
                    }
                }
                Action::Close { session, code, reason } => {
                    let Some(conn) = self.sessions.remove(&(partition, session)) else { continue };
                    if self.ending.remove(&(partition, session)) {
                        debug!(%conn, partition, session = session.0, "session ended: its connection is bound elsewhere");
                        continue;
                    }
                    if let Some(transport) = self.conns.get(&conn).map(|c| c.transport) {
                        debug!(%conn, partition, session = session.0, code, %reason, "closing session");
                        self.end_conn(conn, transport, code, &reason);
                        // Its sessions at other cores end too.
                        self.switch(now);
                    }
                }
                Action::Log(e) => self.log.event(now.instant, &e),
            }
        }
    }
}
