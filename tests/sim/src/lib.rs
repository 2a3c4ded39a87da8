//! The deterministic simulator: one [`Server`] machine and many [`Client`]
//! machines over simulated links, in virtual time, with faults.
//!
//! Everything random comes from one [`StdRng`] seeded by
//! [`SimConfig::seed`]: the same seed replays the same run, step for step
//! (compare [`Report::digest`]). Time is virtual: an agenda of events
//! ordered by (time, insertion order) drives the clock; nothing sleeps and
//! no clock is read (apart from one `Instant` taken as an opaque origin,
//! since `Instant` cannot be built otherwise; only offsets from it matter).
//!
//! - Links: TCP-like, in order per direction, cut into random chunks, each
//!   link with its own latency range, so traffic reorders across sessions.
//! - Faults: [`Sim::disconnect`], [`Sim::reconnect`], [`Sim::partition`] /
//!   [`Sim::heal`], [`Sim::hold`] / [`Sim::release`], [`Sim::set_latency`],
//!   [`Sim::crash_server`] / [`Sim::restart_server`] and the crash point
//!   [`Sim::crash_after_commit`].
//! - Persistence: the server is drained in turns ([`confab_proto::server::Turn`])
//!   until a turn is empty, like the real server's loop; each turn's changes
//!   are committed to a [`MemoryStore`] before that turn's frames leave (group
//!   commit); a restart restores from the store. Each client's turns are
//!   committed the same way ([`ClientTurn`](confab_proto::machine::ClientTurn))
//!   into a store of its own (the last checkpoint, what its profile would
//!   hold); a client state that changed without a checkpoint is a violation
//!   ([`Invariant::Checkpoint`]), and so is a client that loses its login
//!   when no old copy of a profile was restored ([`Invariant::KeepsLogin`]).
//! - The scenario ([`Sim::run`]) makes users act randomly but sensibly,
//!   then heals everything, lets the system settle and checks the
//!   invariants ([`Report`]).
//! - Secure mode ([`SimConfig::secure`]): every user runs a
//!   [`SecureClient`] (fixture identity keys, room passwords from
//!   [`room_password`], signed MP handshakes, real sealing); payloads are
//!   distinctive plaintexts and every delivery must open to exactly what was
//!   sent. The content keys the clients held are kept
//!   ([`Ledger::content_keys`]) and, with [`SimConfig::record_server`], every
//!   server event and persisted change ([`Sim::server_events`],
//!   [`Sim::changes`]), so a test can check the server never saw them.
//! - A hostile server ([`SimConfig::hostile`], issue 10): in secure mode
//!   the server replays items a client already processed, under fresh
//!   sequence numbers ([`SimConfig::hostile_replay`]); each must be refused
//!   ([`Invariant::Replay`]). In secure mode every sealed blob a client
//!   sends goes through a nonce log ([`Invariant::NonceReuse`]), also across
//!   [`Sim::restore_client`] (a profile restored from an old copy).
//! - OIDC users ([`SimConfig::oidc`]): the last users authenticate with
//!   Keycloak-shaped ES256 access tokens from a [`TestIdp`] the server trusts
//!   through its JWK Set (three keys; the signing key rotates every second
//!   token), register their identity
//!   key, and get a fresh token whenever the server says theirs expired
//!   ([`ClientEvent::ExternalTokenNeeded`]).
//!
//! - Cluster mode ([`SimConfig::cluster`], issue 16): three nodes share the
//!   store, one owning the state through a lease whose token fences every
//!   commit ([`ClusterSim`]). Besides crashes (a standby takes over a lease
//!   later), the owner pauses ([`Sim::pause_owner`]: a stopped process, a
//!   frozen machine, a store cut off); a pause past its lease lets a standby
//!   take over, and the old owner resumes as it was, serving from memory
//!   until its first commit is fenced or its renewal fails
//!   ([`Invariant::SingleOwner`]: never two owners committing).
//! - A split state ([`SimConfig::split`], [`SplitSim`]): four partitions
//!   shared by three nodes, each a switchboard in front of the cores of the
//!   partitions whose leases it holds, over a store model with a log, a
//!   lease and a fencing token per partition, membership rows and the
//!   outbox table, and a doorbell bus that loses, delays and reorders.
//!   Nodes crash, pause past their leases, lose the store and each other's
//!   doorbells; clients move to the next node on a 421. On top of the
//!   other checks: every mail item applied once and in order
//!   ([`Invariant::Mail`]), and never two owners committing for one
//!   partition.
//!
//! A failing run prints `simulation failed: replay with CONFAB_SIM_SEED=<seed>`;
//! [`SimConfig::trace`] keeps a readable line per step for the replay.
//!
//! ```
//! use confab_sim::{Sim, SimConfig};
//!
//! let report = Sim::run(SimConfig::lan(7));
//! report.assert_ok();
//! assert_eq!(report.digest, Sim::run(SimConfig::lan(7)).digest);
//! ```
//!
//! Scripted scenarios drive the same machinery step by step:
//!
//! ```
//! use std::time::Duration;
//! use confab_sim::{ClientId, Sim, SimConfig};
//!
//! let mut sim = Sim::new(SimConfig { clients: 2, ..SimConfig::quiet(1) });
//! sim.start();
//! let (alice, bob) = (ClientId(0), ClientId(1));
//! assert!(sim.run_until(Duration::from_secs(10), |s| s.logged_in(alice) && s.logged_in(bob)));
//! sim.request_mp(alice, bob);
//! assert!(sim.run_until(Duration::from_secs(10), |s| s.conversation_open(alice, bob)));
//! let sealed = sim.send_mp(alice, bob).unwrap();
//! sim.crash_server();
//! sim.restart_server();
//! assert!(sim.settle());
//! assert_eq!(sim.ledger().inbox("bob").last().unwrap().sealed, sealed);
//! sim.report().assert_ok();
//! ```

mod check;
mod client;
mod cluster;
mod config;
mod driver;
mod fault;
mod hostile;
mod idp;
mod ledger;
mod machine;
mod net;
mod queue;
mod scenario;
mod server;
mod split;
mod store;
mod trace;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use confab_proto::e2e::secure::SecureSnapshot;
use confab_proto::e2e::{IdentityKey, SecureClient, fixtures};
use confab_proto::server::{Change, MemoryStore, OidcConfig, ServerLog};
use confab_proto::wire::FrameDecoder;
use confab_proto::{Client, ClientEvent, Now, Server, SessionId};
use rand::SeedableRng as _;
use rand::rngs::StdRng;

pub use check::{Invariant, Report, SimStats, Violation};
pub use config::{ClusterSim, FaultRates, OidcUsers, SimConfig, Span, SplitSim};
pub use idp::{AUDIENCE as IDP_AUDIENCE, CLIENT_ID as IDP_CLIENT_ID, ISSUER as IDP_ISSUER, TestIdp};
pub use ledger::{Delivery, DeliveryKind, Ledger};
pub use machine::room_password;
pub use net::{LinkId, NetStats};
pub use trace::{SeedGuard, Trace};

use driver::User;
use machine::{ClientStore, Machine};
use net::Net;
use queue::{Agenda, Ev};
use store::SimStore;

/// Wall-clock time at which every simulation starts: 2026-11-22T00:00:00Z.
pub const START_UNIX_MS: u64 = confab_proto::examples::TIMESTAMP_MS;

/// Identifies a simulated user and its client machine (an index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub usize);

/// One simulated user: its client machine, its connection, its behaviour.
#[derive(Debug)]
pub(crate) struct Host {
    pub(crate) client: Machine,
    /// Where its turns are committed.
    pub(crate) store: ClientStore,
    /// The connection the client considers current.
    pub(crate) link: Option<LinkId>,
    /// When the client's timer is due (elapsed virtual time).
    pub(crate) deadline: Option<Duration>,
    pub(crate) partitioned: bool,
    pub(crate) held: bool,
    /// Latency range of this client's links (`None`: each link draws its own).
    pub(crate) latency: Option<Span>,
    pub(crate) reconnect_pending: bool,
    pub(crate) user: User,
    /// Items the client processed that the hostile server may replay.
    pub(crate) replayable: Vec<ClientEvent>,
    /// A copy of the secure client's state ([`Sim::save_client`]).
    /// With the length of the user's inbox then.
    pub(crate) saved: Option<(Box<SecureSnapshot>, usize)>,
    /// Split state: the node of its list it connects to next (modulo the nodes).
    pub(crate) node: usize,
}

/// A simulation. See the [module docs](self).
#[derive(Debug)]
pub struct Sim {
    config: SimConfig,
    rng: StdRng,
    /// Virtual time zero.
    origin: Now,
    /// Virtual time elapsed.
    elapsed: Duration,
    agenda: Agenda,
    net: Net,
    server: Option<Server>,
    /// Incarnation of the server (bumped at each crash).
    epoch: u64,
    server_deadline: Option<Duration>,
    /// The current server's sessions.
    sessions: HashMap<SessionId, LinkId>,
    store: SimStore,
    /// Restart the server by itself after a crash (during a scenario's actions).
    auto_restart: bool,
    /// Cluster mode: the owner's lease token (0 with one server).
    token: u64,
    /// Cluster mode: the owner is paused; the events it has not processed yet, in order.
    paused: Option<Vec<Ev>>,
    /// Cluster mode: former owners, paused or resumed and unaware they lost their lease.
    stales: Vec<cluster::Stale>,
    /// The former owner is swapped in ([`Sim::as_stale`]).
    acting_stale: bool,
    /// A split state's nodes, stores and bus (then `server` is `None`).
    split: Option<Box<split::Split>>,
    hosts: Vec<Host>,
    ledger: Ledger,
    trace: Trace,
    stats: SimStats,
    actions_left: usize,
    /// Problems noticed while running (checked invariants are added by [`Sim::report`]).
    violations: Vec<Violation>,
    steps: u64,
    /// The last timer fired (time, machine) and how often in a row, against timer livelocks.
    last_timer: (Duration, Timer, u32),
    /// The run was stopped (stuck): nothing more is processed.
    halted: bool,
    /// The OIDC users' identity provider.
    idp: Option<TestIdp>,
    /// Every server event, if [`SimConfig::record_server`].
    server_events: Vec<ServerLog>,
    /// Every persisted change, if [`SimConfig::record_server`].
    changes: Vec<Change>,
    /// Decoders of what clients write, per link (secure mode: the nonce log).
    up_decoders: HashMap<LinkId, FrameDecoder>,
    /// Decoders of what clients receive, per link (replays).
    down_decoders: HashMap<LinkId, FrameDecoder>,
    /// Every sealed blob's header the clients sent.
    nonces: hostile::NonceLog,
    /// A replayed item is being processed: the user's behaviour expects it refused.
    replaying: bool,
    /// Prints the seed if the run panics.
    _guard: SeedGuard,
}

/// The secure client of user `i`: a fixture identity key (the three
/// fixtures in turn: generating RSA keys takes seconds), its own seeded RNG,
/// cheap room-key hashing.
fn secure_client(client: Client, i: usize, rng_seed: u64, config: &SimConfig, now: Now) -> SecureClient {
    let rng = StdRng::seed_from_u64(rng_seed);
    SecureClient::new(client, identity(i), rng, config.server.hash_params, now)
}

/// User `i`'s identity key: one of the three fixtures.
fn identity(i: usize) -> IdentityKey {
    let pkcs8 = [fixtures::ALICE_PKCS8, fixtures::BOB_PKCS8, fixtures::MALLORY_PKCS8][i % 3];
    match IdentityKey::from_pkcs8_der(pkcs8) {
        Ok(key) => key,
        Err(e) => panic!("fixture identity key unusable: {e}"),
    }
}

/// Whose timer is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// The owner's (the server's).
    Server,
    /// An old owner's, by its epoch (cluster mode).
    Stale(u64),
    /// A node's or one of its cores' (split state).
    Node(split::NodeTimer),
    /// A client's.
    Client(ClientId),
}

/// Timer firings of one machine at one instant before the run is declared stuck.
const MAX_TIMER_REPEATS: u32 = 1000;

/// Names of the simulated users (more users get a numeric suffix).
const NAMES: [&str; 10] = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"];

impl Sim {
    /// A simulation with a fresh server and `config.clients` disconnected,
    /// unregistered users. Nothing happens until [`Sim::start`].
    #[must_use]
    pub fn new(mut config: SimConfig) -> Sim {
        let mut rng = StdRng::seed_from_u64(config.seed);
        // The only clock read: an opaque origin for `Instant`s.
        let origin = Now::new(Instant::now(), START_UNIX_MS);
        let seed: [u8; 32] = rand::RngExt::random(&mut rng);
        let idp = config.oidc.map(|o| {
            let idp = TestIdp::new(&mut rng, o.token_lifetime);
            config.server.oidc = Some(OidcConfig {
                allowed_azp: vec![idp::CLIENT_ID.into()],
                leeway: o.leeway,
                ..OidcConfig::new(idp::ISSUER, idp::AUDIENCE, idp.jwks_json())
            });
            idp
        });
        let oidc_from = config.clients.saturating_sub(config.oidc.map_or(0, |o| o.users));
        let server =
            Server::new(config.server.clone(), seed, origin).expect("the simulation's server configuration is valid");
        let hosts = (0..config.clients)
            .map(|i| {
                let name = match NAMES.get(i) {
                    Some(n) => (*n).to_owned(),
                    None => format!("{}{}", NAMES[i % NAMES.len()], i / NAMES.len()),
                };
                let mut client = Client::new(config.client.clone(), origin);
                // Retry keys (`refresh_keyed`), from a generator of the client's own: derived
                // from the seed, not drawn from the run's (whose draws every seed's run is made of).
                let mut keys = StdRng::seed_from_u64(config.seed ^ 0x6b65_7973_0000_0000 ^ i as u64);
                client.set_entropy(rand::RngExt::random(&mut keys));
                let client = if config.secure {
                    let rng_seed: u64 = rand::RngExt::random(&mut rng);
                    Machine::Secure(Box::new(secure_client(client, i, rng_seed, &config, origin)))
                } else {
                    Machine::Plain(Box::new(client))
                };
                Host {
                    client,
                    store: ClientStore::default(),
                    link: None,
                    deadline: None,
                    partitioned: false,
                    held: false,
                    latency: None,
                    reconnect_pending: false,
                    user: User::new(name, i >= oidc_from),
                    replayable: Vec::new(),
                    saved: None,
                    node: i,
                }
            })
            .collect();
        let mut sim = Sim {
            rng,
            origin,
            elapsed: Duration::ZERO,
            agenda: Agenda::default(),
            net: Net::new(config.max_chunk),
            server: if config.split.is_some() { None } else { Some(server) },
            epoch: 1,
            server_deadline: None,
            sessions: HashMap::new(),
            store: SimStore::new(&config.server),
            auto_restart: false,
            token: 0,
            paused: None,
            stales: Vec::new(),
            acting_stale: false,
            split: config.split.map(|s| Box::new(split::Split::new(s, &config.server))),
            hosts,
            ledger: Ledger::default(),
            trace: Trace::new(config.trace),
            stats: SimStats::default(),
            actions_left: config.actions,
            violations: Vec::new(),
            steps: 0,
            last_timer: (Duration::ZERO, Timer::Server, 0),
            halted: false,
            idp,
            server_events: Vec::new(),
            changes: Vec::new(),
            up_decoders: HashMap::new(),
            down_decoders: HashMap::new(),
            nonces: hostile::NonceLog::default(),
            replaying: false,
            _guard: SeedGuard::new(config.seed),
            config,
        };
        sim.drain_server();
        sim
    }

    /// Runs the whole scenario for `config`: start, random actions and
    /// faults, settling, invariant checks.
    #[must_use]
    pub fn run(config: SimConfig) -> Report {
        let mut sim = Sim::new(config);
        sim.start();
        sim.run_actions();
        sim.settle();
        sim.report()
    }

    /// Every user wants to be online: each connects after a short random
    /// delay, registers and logs in. Schedules the scenario's actions
    /// (during which a crashed server restarts by itself after
    /// [`SimConfig::server_downtime`]).
    pub fn start(&mut self) {
        if self.split.is_some() {
            self.split_start();
        }
        for i in 0..self.hosts.len() {
            self.hosts[i].user.want_online = true;
            self.schedule_reconnect(ClientId(i));
        }
        if self.actions_left > 0 {
            self.auto_restart = true;
            let at = self.elapsed + self.config.action_gap.draw(&mut self.rng);
            self.agenda.push(at, Ev::Action);
        }
    }

    /// Runs until every scenario action has been taken.
    pub fn run_actions(&mut self) {
        while self.actions_left > 0 && self.step() {}
    }

    // ---- accessors ----

    /// The seed.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Virtual time since the start.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The current time as the machines see it.
    #[must_use]
    pub fn now(&self) -> Now {
        self.origin.advance(self.elapsed)
    }

    /// The server machine (`None` while crashed).
    #[must_use]
    pub fn server(&self) -> Option<&Server> {
        self.server.as_ref()
    }

    /// Every partition's committed state (the one store's, with one partition).
    pub(crate) fn states(&self) -> Vec<&confab_proto::server::State> {
        match &self.split {
            Some(split) => split.states(),
            None => vec![self.store.memory().state()],
        }
    }

    /// The server's durable store.
    #[must_use]
    pub fn store(&self) -> &MemoryStore {
        self.store.memory()
    }

    /// A user's client machine (in secure mode, the one its [`SecureClient`] wraps).
    #[must_use]
    pub fn client(&self, id: ClientId) -> &Client {
        self.hosts[id.0].client.client()
    }

    /// A user's secure client (`None` unless [`SimConfig::secure`]).
    #[must_use]
    pub fn secure_client(&self, id: ClientId) -> Option<&SecureClient> {
        self.hosts[id.0].client.secure()
    }

    /// Whether the user logs in with the identity provider's tokens.
    #[must_use]
    pub fn is_oidc_user(&self, id: ClientId) -> bool {
        self.hosts[id.0].user.oidc
    }

    /// The OIDC users' identity provider (`None` without [`SimConfig::oidc`]).
    #[must_use]
    pub fn idp(&self) -> Option<&TestIdp> {
        self.idp.as_ref()
    }

    /// Every event the server machines emitted (its log), if [`SimConfig::record_server`].
    #[must_use]
    pub fn server_events(&self) -> &[ServerLog] {
        &self.server_events
    }

    /// Every change the server persisted, in commit order, if [`SimConfig::record_server`].
    #[must_use]
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// A user's name.
    #[must_use]
    pub fn name(&self, id: ClientId) -> &str {
        &self.hosts[id.0].user.name
    }

    /// Every user.
    #[must_use]
    pub fn clients(&self) -> Vec<ClientId> {
        (0..self.hosts.len()).map(ClientId).collect()
    }

    /// What every user sent, got acknowledged and received.
    #[must_use]
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The run's trace (digest, and lines if [`SimConfig::trace`]).
    #[must_use]
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    // ---- the event loop ----

    /// Processes the next event or timer. False when nothing at all is pending.
    pub fn step(&mut self) -> bool {
        let timer = self.next_timer();
        let event = self.agenda.peek_time();
        let (at, fire_timer) = match (timer, event) {
            (None, None) => return false,
            (Some((t, _)), Some(e)) if t <= e => (t, true),
            (Some((t, _)), None) => (t, true),
            (_, Some(e)) => (e, false),
        };
        if self.halted {
            return false;
        }
        self.steps += 1;
        if self.steps > self.config.max_steps {
            self.violate(Invariant::Progress, format!("more than {} steps", self.config.max_steps));
            self.halted = true;
            return false;
        }
        self.elapsed = self.elapsed.max(at);
        if fire_timer && let Some((_, who)) = timer {
            let (last_at, last_who, n) = self.last_timer;
            let n = if (last_at, last_who) == (self.elapsed, who) { n + 1 } else { 0 };
            self.last_timer = (self.elapsed, who, n);
            if n >= MAX_TIMER_REPEATS {
                let machine = match who {
                    Timer::Server => "server".to_owned(),
                    Timer::Stale(epoch) => format!("old owner (epoch {epoch})"),
                    Timer::Node(t) => format!("{t:?}"),
                    Timer::Client(id) => format!("client {}", id.0),
                };
                self.violate(
                    Invariant::Progress,
                    format!("{machine} asked for its timer at the same instant {n} times in a row"),
                );
                self.halted = true;
                return false;
            }
            match who {
                Timer::Server => self.server_timeout(),
                Timer::Stale(epoch) => self.as_stale(epoch, Sim::server_timeout),
                Timer::Node(t) => self.node_timer(t),
                Timer::Client(id) => self.client_timeout(id),
            }
        } else if let Some((_, ev)) = self.agenda.pop() {
            self.dispatch(ev);
        }
        true
    }

    /// The earliest machine timer (a paused node's does not run).
    fn next_timer(&self) -> Option<(Duration, Timer)> {
        let mut best = self.server_deadline.filter(|_| self.paused.is_none()).map(|t| (t, Timer::Server));
        if let Some((t, epoch)) = self.stale_deadline()
            && best.is_none_or(|(b, _)| t < b)
        {
            best = Some((t, Timer::Stale(epoch)));
        }
        if let Some((t, who)) = self.split.as_ref().and_then(|s| s.next_timer())
            && best.is_none_or(|(b, _)| t < b)
        {
            best = Some((t, Timer::Node(who)));
        }
        for (i, h) in self.hosts.iter().enumerate() {
            if let Some(t) = h.deadline
                && best.is_none_or(|(b, _)| t < b)
            {
                best = Some((t, Timer::Client(ClientId(i))));
            }
        }
        best
    }

    fn dispatch(&mut self, ev: Ev) {
        let ev = if self.split.is_some() { self.split_route(ev) } else { self.route(ev) };
        if let Some(ev) = ev {
            self.dispatch_now(ev);
        }
    }

    /// Processes an event (server-side ones already routed, see [`Sim::route`]).
    pub(crate) fn dispatch_now(&mut self, ev: Ev) {
        match ev {
            Ev::Arrive { link, dir, seg } => self.arrive(link, dir, seg),
            Ev::Detect { link, end } => self.detect(link, end),
            Ev::Job { epoch, job } => self.job_done(epoch, job),
            Ev::Action => self.action(),
            Ev::Heal(id) => self.heal(id),
            Ev::Release(id) => self.release(id),
            Ev::Restart => self.restart_server(),
            Ev::Reconnect(id) => {
                self.hosts[id.0].reconnect_pending = false;
                self.try_connect(id);
            }
            Ev::Online(id) => self.go_online(id),
            Ev::Replay(id) => self.replay(id),
            Ev::Resume(epoch) => self.resume(epoch),
            Ev::Takeover(epoch) => self.takeover(epoch),
            Ev::StaleNotices(epoch) => self.stale_notices(epoch),
            Ev::Node { node, ev } => self.node_event(node, ev),
            Ev::NodeRestart(n) => self.node_restart(n),
            Ev::BusHeal(a, b) => self.heal_bus(a, b),
        }
    }

    /// Runs for `d` of virtual time (or until nothing is pending).
    pub fn run_for(&mut self, d: Duration) {
        let end = self.elapsed + d;
        while self.next_time().is_some_and(|t| t <= end) && self.step() {}
        self.elapsed = self.elapsed.max(end);
    }

    /// Runs until `done` holds, for at most `limit` of virtual time. True if it held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.elapsed + limit;
        loop {
            if done(self) {
                return true;
            }
            if self.next_time().is_none_or(|t| t > end) || !self.step() {
                return done(self);
            }
        }
    }

    fn next_time(&self) -> Option<Duration> {
        let timer = self.next_timer().map(|(t, _)| t);
        match (timer, self.agenda.peek_time()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Converts a machine's deadline to elapsed virtual time.
    fn to_elapsed(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.origin.instant)
    }

    pub(crate) fn violate(&mut self, invariant: Invariant, detail: String) {
        self.trace.note(self.elapsed, &format!("VIOLATION {invariant:?}: {detail}"));
        self.violations.push(Violation { invariant, detail });
    }
}
