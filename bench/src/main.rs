//! `confab-bench`: throughput and latency of an in-process confab server
//! over loopback TCP or QUIC. See `docs/BENCHMARKS.md`.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use confab_bench::{BenchConfig, MAX_DURATION_SECS, MAX_WARMUP_SECS, Mode, Scenario, StoreKind, Transport};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TransportArg {
    /// TCP + TLS 1.3.
    Tcp,
    /// QUIC.
    Quic,
    /// WebSocket, plain ws:// on loopback (the server's default there).
    Ws,
    /// WebSocket over TLS 1.3 (wss://, the server's key pinned).
    Wss,
    /// In-memory links into the same server loop (no sockets, no TLS): a baseline.
    Mem,
}

impl TransportArg {
    fn transport(self) -> Transport {
        match self {
            TransportArg::Tcp => Transport::Tcp,
            TransportArg::Quic => Transport::Quic,
            TransportArg::Ws | TransportArg::Wss => Transport::Ws,
            TransportArg::Mem => Transport::Mem,
        }
    }

    fn ws_tls(self) -> bool {
        matches!(self, TransportArg::Wss)
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ScenarioArg {
    /// Private messages, sender i to receiver i mod M.
    Mp,
    /// One room; the first N members send.
    Room,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Each sender keeps --window messages unacknowledged.
    Closed,
    /// Fixed schedule of --rate messages per second in total.
    Rate,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StoreArg {
    /// In memory only.
    Memory,
    /// SQLite in a temporary directory, removed after the run (see --fsync).
    Sqlite,
    /// PostgreSQL: a scratch database on the server of --postgres-url, dropped after the run.
    Postgres,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FsyncArg {
    /// Every commit fsynced before its acknowledgement (synchronous=FULL): the server's default.
    Always,
    /// Commits written to the OS before their acknowledgement, the WAL fsynced every second.
    Interval,
}

/// Throughput and latency of an in-process confab server over loopback
/// (127.0.0.1 only): N senders and M receivers, one thread per client.
#[derive(Debug, Parser)]
#[command(name = "confab-bench", version)]
struct Args {
    /// Transport of every client.
    #[arg(long, value_enum, default_value = "tcp")]
    transport: TransportArg,
    /// Private messages (mp) or room fan-out (room).
    #[arg(long, value_enum, default_value = "mp")]
    scenario: ScenarioArg,
    /// Sending clients (room: the first N members).
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Receiving clients; for a room, the number of members (senders included).
    #[arg(long, default_value_t = 1)]
    receivers: usize,
    /// Bytes per message (64, 1024, 65536, or any of 16..=262144).
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    /// closed: closed loop; rate: fixed rate, latency from the intended send time.
    #[arg(long, value_enum, default_value = "closed")]
    mode: ModeArg,
    /// Fixed rate: messages per second, all senders together.
    #[arg(long)]
    rate: Option<u64>,
    /// Closed loop: unacknowledged messages per sender.
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Measured seconds (1..=120).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Unmeasured seconds of sending before the window (0..=30).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// The server's store (sqlite: in a temporary directory, removed after).
    #[arg(long, value_enum, default_value = "memory")]
    store: StoreArg,
    /// With --store sqlite: the server's `[store] fsync` setting.
    #[arg(long, value_enum, default_value = "always")]
    fsync: FsyncArg,
    /// The clients' delivery-acknowledgement delay in milliseconds (0: one
    /// `delivery_ack` per input batch; default: the client's default, 10).
    #[arg(long)]
    ack_delay_ms: Option<u64>,
    /// With --store postgres: the PostgreSQL server (postgres://user@host:port/db; the user needs CREATEDB).
    #[arg(long, value_name = "URL")]
    postgres_url: Option<String>,
    /// Reach the server through a cluster's edge: a second node in this
    /// process relays every client connection to the server over a NATS
    /// server of the run's own (Debian's nats-server package), so each
    /// message crosses the relay twice.
    #[arg(long)]
    relay: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// `confab-bench peers`: starts nats-server, mosquitto and redis-server on
/// free loopback ports and compares confab with them (bench/peers.sh).
#[cfg(feature = "peers")]
#[derive(Debug, Parser)]
#[command(name = "confab-bench peers")]
struct PeersArgs {
    /// Measured seconds of each run.
    #[arg(long, default_value_t = 3)]
    duration: u64,
    /// Unmeasured seconds before each run's window.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Fixed-rate scenario: messages per second.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Room scenario: members, one of them sending.
    #[arg(long, default_value_t = 100)]
    room: usize,
    /// Only these peers, comma-separated (nats, nats-tls, mqtt0, mqtt0-tls,
    /// redis, jetstream, jetstream-tls, mqtt1, mqtt1-tls).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also write every run's JSON object, one per line, to this file.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
    /// Rounds: every pair is measured this many times, interleaved, and the
    /// table shows medians (1..=10).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Only these scenarios, comma-separated (w1, w16, rate, room).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// confab's transport (the peers always run over TCP, with or without TLS).
    #[arg(long, value_enum, default_value_t = TransportArg::Tcp)]
    transport: TransportArg,
}

#[cfg(feature = "peers")]
fn peers_main(args: &PeersArgs) -> ExitCode {
    use confab_bench::peers::{Brokers, CompareOptions, PeerKind, compare};
    if args.duration == 0
        || args.duration > MAX_DURATION_SECS
        || args.warmup > MAX_WARMUP_SECS
        || args.room < 2
        || !(1..=10).contains(&args.repeat)
    {
        eprintln!(
            "confab-bench peers: --duration 1..={MAX_DURATION_SECS}, --warmup 0..={MAX_WARMUP_SECS}, --room at least 2, --repeat 1..=10"
        );
        return ExitCode::from(2);
    }
    if let Some(bad) = args.scenarios.iter().find(|s| !confab_bench::peers::SCENARIOS.contains(&s.as_str())) {
        eprintln!("confab-bench peers: unknown scenario {bad:?} (w1, w16, rate, room)");
        return ExitCode::from(2);
    }
    let mut only = Vec::new();
    for name in &args.only {
        match PeerKind::parse(name) {
            Some(k) => only.push(k),
            None => {
                eprintln!("confab-bench peers: unknown peer {name:?}");
                return ExitCode::from(2);
            }
        }
    }
    let brokers = match Brokers::start() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("confab-bench peers: {e}");
            return ExitCode::from(2);
        }
    };
    for (name, pid) in brokers.pids() {
        eprintln!("started {name} (pid {pid})");
    }
    let machine = confab_bench::Machine::this();
    eprintln!("machine: {} cores, {}", machine.cores, machine.cpu);
    let options = CompareOptions {
        duration: Duration::from_secs(args.duration),
        warmup: Duration::from_secs(args.warmup),
        rate: args.rate,
        room: args.room,
        only,
        json: args.json_out.clone(),
        repeat: args.repeat,
        scenarios: args.scenarios.clone(),
        transport: args.transport.transport(),
        ws_tls: args.transport.ws_tls(),
    };
    let result = compare(&brokers, &options);
    let pids = brokers.pids();
    brokers.stop();
    for (name, pid) in pids {
        eprintln!("stopped {name} (pid {pid})");
    }
    match result {
        Ok(table) => {
            println!("machine: {} cores, {}\n", machine.cores, machine.cpu);
            print!("{table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("confab-bench peers: {e}");
            ExitCode::from(2)
        }
    }
}

/// `confab-bench failover`: kills a cluster's owner, round after round,
/// and measures how long until a standby serves (bench/src/failover.rs).
#[derive(Debug, Parser)]
#[command(name = "confab-bench failover")]
struct FailoverArgs {
    /// An existing PostgreSQL (postgres://user@host:port/db; the user needs
    /// CREATEDB): the run uses a scratch database on it. Default: a
    /// PostgreSQL of the run's own (Debian's postgresql package).
    #[arg(long, value_name = "URL")]
    postgres_url: Option<String>,
    /// `[cluster] lease_secs` of every node (2..=3600).
    #[arg(long, default_value_t = 10)]
    lease_secs: u64,
    /// Kills measured (1..=20).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// The standbys relay through a NATS of the run's own (Debian's
    /// nats-server package), and the users reach the service through them.
    #[arg(long)]
    relay: bool,
    /// `[cluster] partitions` (1..=52): above 1, the three nodes share a
    /// split state and each round kills the node serving Bob's home.
    #[arg(long, default_value_t = 1)]
    partitions: u8,
}

fn failover_main(args: &FailoverArgs) -> ExitCode {
    if !(2..=3600).contains(&args.lease_secs)
        || !(1..=20).contains(&args.rounds)
        || !(1..=52).contains(&args.partitions)
    {
        eprintln!("confab-bench failover: --lease-secs is 2..=3600, --rounds 1..=20 and --partitions 1..=52");
        return ExitCode::from(2);
    }
    let config = confab_bench::failover::FailoverConfig {
        postgres_url: args.postgres_url.clone(),
        lease_secs: args.lease_secs,
        rounds: args.rounds,
        relay: args.relay,
        partitions: args.partitions,
    };
    match confab_bench::failover::run(&config) {
        Ok(rounds) => {
            print!("{}", confab_bench::failover::table(&config, &rounds));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("confab-bench failover: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("failover") {
        return failover_main(&FailoverArgs::parse_from(std::env::args().skip(1)));
    }
    #[cfg(feature = "peers")]
    if std::env::args().nth(1).as_deref() == Some("peers") {
        let args = PeersArgs::parse_from(std::env::args().skip(1));
        return peers_main(&args);
    }
    let args = Args::parse();
    // The in-process server logs through `tracing`: warnings (a session
    // closed as a slow reader, a refused connection) go to stderr; RUST_LOG
    // overrides.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if args.duration > MAX_DURATION_SECS || args.warmup > MAX_WARMUP_SECS {
        eprintln!("confab-bench: --duration is at most {MAX_DURATION_SECS} s and --warmup at most {MAX_WARMUP_SECS} s");
        return ExitCode::from(2);
    }
    let config = BenchConfig {
        transport: args.transport.transport(),
        ws_tls: args.transport.ws_tls(),
        scenario: match args.scenario {
            ScenarioArg::Mp => Scenario::Mp,
            ScenarioArg::Room => Scenario::Room,
        },
        senders: args.senders,
        receivers: args.receivers,
        payload: args.payload,
        mode: match args.mode {
            ModeArg::Closed => Mode::Closed,
            ModeArg::Rate => Mode::Rate,
        },
        rate: args.rate,
        window: args.window,
        duration: Duration::from_secs(args.duration),
        warmup: Duration::from_secs(args.warmup),
        store: match (args.store, args.fsync) {
            (StoreArg::Memory, _) => StoreKind::Memory,
            (StoreArg::Sqlite, FsyncArg::Always) => StoreKind::Sqlite,
            (StoreArg::Sqlite, FsyncArg::Interval) => StoreKind::SqliteInterval,
            (StoreArg::Postgres, _) => StoreKind::Postgres,
        },
        postgres_url: args.postgres_url.clone(),
        relay: args.relay,
        ack_delay: args.ack_delay_ms.map_or(BenchConfig::default().ack_delay, Duration::from_millis),
    };
    let report = match confab_bench::run(&config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("confab-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    if report.incomplete { ExitCode::from(3) } else { ExitCode::SUCCESS }
}
