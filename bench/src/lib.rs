//! # confab-bench
//!
//! A load generator for confab over real sockets: it starts a confab server
//! in this process on `127.0.0.1` (ephemeral ports, TCP+TLS and QUIC), then
//! drives N senders and M receivers, each a sans-IO
//! [`confab_proto::Client`] over its own [`Link`](confab_transports::link::Link),
//! one thread per client.
//!
//! ```text
//!   sender threads ──send_mp / send_room──►  in-process server  ──user_message / room_message──► receiver threads
//!        ▲   (Client + TcpLink/QuicLink)       (runtime::Node)                                     (Client + Link)
//!        └──────────────── ack (the request's answer) ◄──┘
//! ```
//!
//! Each message's "sealed" payload (opaque to the server) starts with two
//! timestamps, nanoseconds since the bench's start [`Instant`]: when it was
//! sent and when it was *meant* to be sent (the same in closed-loop mode).
//! A receiver's latency is its receive time minus the intended send time,
//! so in fixed-rate mode a server (or a sender) that falls behind shows up
//! in the latency instead of silently lowering the offered load
//! (coordinated omission corrected, as wrk2 does).
//!
//! Timeline of a run, all bounded: setup (connect, register, log in, open the
//! conversations or join the room) within [`SETUP_TIMEOUT`]; warmup; the
//! measured window (`duration`); a drain of at most [`DRAIN`] for messages
//! still in flight. Only messages whose intended send time falls inside the
//! measured window are counted. An overall deadline stops a run that hangs
//! and reports what was measured, marked incomplete.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod confab;
pub mod driver;
mod endpoint;
pub mod failover;
mod gate;
#[cfg(feature = "peers")]
pub mod peers;
pub mod procs;
mod report;
mod scratch;
mod server;
mod split_failover;
mod worker;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

pub use report::{Latency, Machine, Report};

use endpoint::System;
use gate::Gate;
use worker::{Role, Shared, WorkerStats};

/// Longest measured window a run accepts, in seconds.
pub const MAX_DURATION_SECS: u64 = 120;
/// Longest warmup a run accepts, in seconds.
pub const MAX_WARMUP_SECS: u64 = 30;
/// How long connecting, registering, logging in and opening conversations may take.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long after the measured window messages still in flight are waited for.
pub const DRAIN: Duration = Duration::from_secs(5);
/// Unacknowledged messages one sender may have at once in fixed-rate mode
/// (below the client machine's outbox bound).
pub const RATE_MAX_IN_FLIGHT: usize = 1000;
/// Smallest payload: the two timestamps.
pub const MIN_PAYLOAD: usize = 16;
/// Largest payload accepted by the bench.
pub const MAX_PAYLOAD: usize = 256 * 1024;
/// Most clients (senders plus receivers, or room members) in one run.
pub const MAX_CLIENTS: usize = 1000;

/// Which transport the clients use: TCP + TLS 1.3, QUIC, or in-memory
/// links into the same server loop (no sockets, no TLS: a baseline that
/// separates the transports' cost from the loop's).
pub use confab_transports::hub::Transport;

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Private messages: sender `i` talks to receiver `i mod M` in an open conversation.
    Mp,
    /// One room of M members; the first N members send, every other member receives each message.
    Room,
}

impl Scenario {
    /// `"mp"` or `"room"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Mp => "mp",
            Scenario::Room => "room",
        }
    }
}

/// How senders pace themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each sender keeps `window` messages unacknowledged, sending the next as soon as one is acknowledged.
    Closed,
    /// Senders send on a fixed schedule (`rate` messages per second in total);
    /// latency is measured from the scheduled time.
    Rate,
}

impl Mode {
    /// `"closed"` or `"rate"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Closed => "closed",
            Mode::Rate => "rate",
        }
    }
}

/// Where the in-process server makes changes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// In memory only.
    Memory,
    /// The SQLite store, in a temporary directory removed after the run:
    /// every commit fsynced (`[store] fsync = "always"`, the default).
    Sqlite,
    /// The same with `[store] fsync = "interval"` (the WAL fsynced every
    /// [`BENCH_FSYNC_INTERVAL`]; commits still reach the OS before their acknowledgement).
    SqliteInterval,
    /// The PostgreSQL store, in a scratch database created on the server of
    /// [`BenchConfig::postgres_url`] and dropped after the run.
    Postgres,
}

/// The fsync interval of [`StoreKind::SqliteInterval`]: the server's default `fsync_interval_ms`.
pub const BENCH_FSYNC_INTERVAL: Duration = Duration::from_secs(1);

impl StoreKind {
    /// `"memory"`, `"sqlite"` or `"sqlite-interval"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Sqlite => "sqlite",
            StoreKind::SqliteInterval => "sqlite-interval",
            StoreKind::Postgres => "postgres",
        }
    }
}

/// One run's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchConfig {
    /// Socket transport.
    pub transport: Transport,
    /// Private messages or room fan-out.
    pub scenario: Scenario,
    /// Sending clients (in a room: the first `senders` members).
    pub senders: usize,
    /// Receiving clients; in a room, the number of members (senders included).
    pub receivers: usize,
    /// Bytes of each sealed message (at least [`MIN_PAYLOAD`]).
    pub payload: usize,
    /// Closed-loop or fixed-rate.
    pub mode: Mode,
    /// Fixed-rate: messages per second, all senders together.
    pub rate: Option<u64>,
    /// Closed-loop: unacknowledged messages per sender.
    pub window: usize,
    /// Measured window.
    pub duration: Duration,
    /// Unmeasured sending before the window.
    pub warmup: Duration,
    /// The server's store.
    pub store: StoreKind,
    /// With [`Transport::Ws`]: `wss://` (the server's WebSocket listener
    /// with TLS, the clients pinning its key) instead of plain `ws://`.
    pub ws_tls: bool,
    /// The clients' [`ClientConfig::ack_delay`](confab_proto::ClientConfig::ack_delay)
    /// (zero: a `delivery_ack` per input batch).
    pub ack_delay: Duration,
    /// With [`StoreKind::Postgres`]: a PostgreSQL server's URL; the run
    /// creates a scratch database there (the user needs `CREATEDB`).
    pub postgres_url: Option<String>,
    /// The clients reach the server through a cluster's edge: a second
    /// node in this process relays their connections to the server over a
    /// NATS server of the run's own (Debian's `nats-server`), so every
    /// message crosses the relay twice (sender to owner, owner to receiver).
    pub relay: bool,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            transport: Transport::Tcp,
            scenario: Scenario::Mp,
            senders: 1,
            receivers: 1,
            payload: 1024,
            mode: Mode::Closed,
            rate: None,
            window: 1,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            store: StoreKind::Memory,
            ws_tls: false,
            ack_delay: confab_proto::ClientConfig::default().ack_delay,
            postgres_url: None,
            relay: false,
        }
    }
}

impl BenchConfig {
    /// The transport's name in reports: `tcp`, `quic`, `ws`, `wss` or `mem`.
    #[must_use]
    pub fn transport_name(&self) -> &'static str {
        if self.transport == Transport::Ws && self.ws_tls { "wss" } else { self.transport.as_str() }
    }

    /// Checks every bound.
    ///
    /// # Errors
    /// A parameter is out of range or missing (the message says which).
    pub fn validate(&self) -> Result<(), BenchError> {
        let err = |s: String| Err(BenchError(s));
        if self.senders == 0 || self.receivers == 0 {
            return err("--senders and --receivers must be at least 1".into());
        }
        let clients = match self.scenario {
            Scenario::Mp => self.senders + self.receivers,
            Scenario::Room => self.receivers,
        };
        if clients > MAX_CLIENTS {
            return err(format!("{clients} clients: at most {MAX_CLIENTS}"));
        }
        if self.scenario == Scenario::Room {
            if self.receivers < 2 {
                return err("a room needs at least 2 members (--receivers)".into());
            }
            if self.senders > self.receivers {
                return err(format!(
                    "room: the senders are members, so --senders ({}) must not exceed --receivers ({})",
                    self.senders, self.receivers
                ));
            }
        }
        if self.relay && self.transport == Transport::Mem {
            return err("--relay: in-memory links reach the server itself, never an edge".into());
        }
        if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&self.payload) {
            return err(format!("--payload {}: must be {MIN_PAYLOAD}..={MAX_PAYLOAD} bytes", self.payload));
        }
        if self.duration.is_zero() || self.duration > Duration::from_secs(MAX_DURATION_SECS) {
            return err(format!("--duration must be 1..={MAX_DURATION_SECS} seconds"));
        }
        if self.warmup > Duration::from_secs(MAX_WARMUP_SECS) {
            return err(format!("--warmup must be 0..={MAX_WARMUP_SECS} seconds"));
        }
        match self.mode {
            Mode::Closed => {
                if !(1..=RATE_MAX_IN_FLIGHT).contains(&self.window) {
                    return err(format!("--window must be 1..={RATE_MAX_IN_FLIGHT}"));
                }
            }
            Mode::Rate => match self.rate {
                None => return err("--mode rate needs --rate MSGS_PER_SEC".into()),
                Some(r) if r == 0 || r > 10_000_000 => return err("--rate must be 1..=10000000".into()),
                Some(_) => {}
            },
        }
        Ok(())
    }

    /// Deliveries each message makes: 1 for a private message, the other members for a room.
    #[must_use]
    pub fn fanout(&self) -> u64 {
        match self.scenario {
            Scenario::Mp => 1,
            Scenario::Room => self.receivers as u64 - 1,
        }
    }
}

/// Why a run could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchError(pub String);

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

impl From<std::io::Error> for BenchError {
    fn from(e: std::io::Error) -> Self {
        BenchError(e.to_string())
    }
}

/// Runs one benchmark: starts the server, sets up the clients, measures,
/// stops everything. Bounded in time by [`SETUP_TIMEOUT`] + warmup +
/// duration + [`DRAIN`] + a few seconds of teardown.
///
/// # Errors
/// Invalid configuration, or the server could not start. Failures during the
/// run (a client that cannot connect or log in, a hung thread) are reported
/// in the [`Report`] (`errors`, `incomplete`), not as an error.
pub fn run(config: &BenchConfig) -> Result<Report, BenchError> {
    config.validate()?;
    let base = Instant::now();
    let mut server = server::InProcess::start(config.store, config.ws_tls, config.postgres_url.as_deref())?;
    if config.relay {
        server.relay_through_an_edge()?;
    }
    let connect = server.connector(config.transport)?;
    let system = Box::new(confab::Confab { connect, ack_delay: config.ack_delay });
    let relayed = if config.relay { "-relayed" } else { "" };
    let label = format!("confab-{}-{}{relayed}", config.transport_name(), config.store.as_str());
    Ok(run_system(config, base, system, label, move || server.stop(Duration::from_secs(5))))
}

/// The generator over `system`'s clients: one thread per role, the
/// measured loop of `worker.rs`, the report. `stop` stops the server (if
/// this process runs it) and sums up its run.
fn run_system(
    config: &BenchConfig,
    base: Instant,
    system: Box<dyn System>,
    label: String,
    stop: impl FnOnce() -> String,
) -> Report {
    let roles = roles(config);
    let shared = Arc::new(Shared {
        config: config.clone(),
        base,
        system,
        gate: Gate::new(roles.len()),
        abort: AtomicBool::new(false),
        expected: AtomicU64::new(0),
        received: AtomicU64::new(0),
        senders_running: AtomicUsize::new(config.senders),
        setup_deadline: base + SETUP_TIMEOUT,
        timeline: std::sync::OnceLock::new(),
        results: std::sync::Mutex::new(WorkerStats::new()),
    });

    let mut handles = Vec::with_capacity(roles.len());
    for role in roles {
        let mine = Arc::clone(&shared);
        let name = format!("bench-{}", role.name);
        let handle = thread::Builder::new().name(name).spawn(move || worker::run(&mine, &role));
        match handle {
            Ok(h) => handles.push(h),
            Err(e) => {
                shared.gate.abort(format!("cannot start a client thread: {e}"));
                shared.abort.store(true, Ordering::SeqCst);
                break;
            }
        }
    }

    // The overall deadline: setup, warmup, window, drain, and a margin.
    let hard_deadline = base + SETUP_TIMEOUT + config.warmup + config.duration + DRAIN + Duration::from_secs(5);
    let total = handles.len();
    let mut incomplete = false;
    loop {
        if handles.iter().all(thread::JoinHandle::is_finished) {
            break;
        }
        if Instant::now() >= hard_deadline {
            shared.abort.store(true, Ordering::SeqCst);
            shared.gate.abort("overall deadline passed".into());
            let grace = Instant::now() + Duration::from_secs(2);
            while Instant::now() < grace && !handles.iter().all(thread::JoinHandle::is_finished) {
                thread::sleep(Duration::from_millis(20));
            }
            incomplete = true;
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let mut hung = 0;
    for h in handles {
        if h.is_finished() {
            if h.join().is_err() {
                shared
                    .results
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .error("a client thread panicked");
            }
        } else {
            // Left running; it holds only its own link and exits at its next check of `abort`.
            hung += 1;
        }
    }
    let server_summary = stop();

    let stats = std::mem::replace(
        &mut *shared.results.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        WorkerStats::new(),
    );
    let setup_error = shared.gate.aborted();
    let timeline = shared.timeline.get().copied();
    report::build(
        config,
        &stats,
        timeline,
        report::RunInfo {
            threads: total,
            hung,
            incomplete: incomplete || hung > 0 || timeline.is_none(),
            setup_error,
            server: server_summary,
            system: label,
            elapsed: base.elapsed(),
        },
    )
}

/// The clients of a run, in start order.
fn roles(config: &BenchConfig) -> Vec<Role> {
    let mut roles = Vec::new();
    match config.scenario {
        Scenario::Mp => {
            for i in 0..config.senders {
                let peer = format!("recv{}", i % config.receivers);
                roles.push(Role { name: format!("send{i}"), index: i, sends: true, peers: vec![peer], accepts: 0 });
            }
            for j in 0..config.receivers {
                let accepts = (0..config.senders).filter(|i| i % config.receivers == j).count();
                roles.push(Role { name: format!("recv{j}"), index: j, sends: false, peers: Vec::new(), accepts });
            }
        }
        Scenario::Room => {
            for i in 0..config.receivers {
                let sends = i < config.senders;
                roles.push(Role { name: format!("member{i}"), index: i, sends, peers: Vec::new(), accepts: 0 });
            }
        }
    }
    roles
}
