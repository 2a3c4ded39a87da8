//! What a simulation runs: the seed, the network, the fault mix and the
//! scenario's size, with three presets.

use std::time::Duration;

use confab_proto::server::HashParams;
use confab_proto::{ClientConfig, ServerConfig};
use rand::RngExt as _;
use rand::rngs::StdRng;

/// A range of durations `[min, max]`, drawn uniformly at microsecond resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Shortest.
    pub min: Duration,
    /// Longest (inclusive).
    pub max: Duration,
}

impl Span {
    /// `[min, max]`; the bounds are swapped if given in the wrong order.
    #[must_use]
    pub fn new(min: Duration, max: Duration) -> Span {
        if min <= max { Span { min, max } } else { Span { min: max, max: min } }
    }

    /// `[min_ms, max_ms]` milliseconds.
    #[must_use]
    pub fn ms(min_ms: u64, max_ms: u64) -> Span {
        Span::new(Duration::from_millis(min_ms), Duration::from_millis(max_ms))
    }

    /// `[min_us, max_us]` microseconds.
    #[must_use]
    pub fn us(min_us: u64, max_us: u64) -> Span {
        Span::new(Duration::from_micros(min_us), Duration::from_micros(max_us))
    }

    /// Exactly `d`.
    #[must_use]
    pub fn fixed(d: Duration) -> Span {
        Span { min: d, max: d }
    }

    /// A duration drawn uniformly from the range.
    pub fn draw(&self, rng: &mut StdRng) -> Duration {
        let (lo, hi) = (micros(self.min), micros(self.max));
        if lo >= hi {
            return Duration::from_micros(lo);
        }
        Duration::from_micros(rng.random_range(lo..=hi))
    }

    /// A sub-range of this one, both bounds drawn from it (each simulated
    /// link gets its own, so links differ in latency).
    pub fn sub_span(&self, rng: &mut StdRng) -> Span {
        let (a, b) = (self.draw(rng), self.draw(rng));
        Span::new(a, b)
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// How often each fault (or user behaviour that looks like one) happens:
/// each is the probability that one scenario action is that fault. The
/// rest of the probability mass goes to ordinary user actions (send a
/// message, join a room, ask for a conversation...).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultRates {
    /// A client's connection drops; both ends notice at once; it reconnects.
    pub disconnect: f64,
    /// A client's network is cut both ways for [`SimConfig::fault_length`];
    /// its connection dies after [`SimConfig::detect_delay`].
    pub partition: f64,
    /// A client's bytes are buffered both ways for [`SimConfig::fault_length`], then delivered.
    pub hold: f64,
    /// A client's links get a new latency range drawn from [`SimConfig::latency`].
    pub latency: f64,
    /// The server process dies (for [`SimConfig::server_downtime`]) and restarts from its store.
    pub crash: f64,
    /// The server dies at its next turn that commits changes, after the commit, before its frames leave.
    pub crash_after_commit: f64,
    /// A user goes offline (closes the app), or comes back online.
    pub offline: f64,
}

impl FaultRates {
    /// No faults at all.
    pub const NONE: FaultRates = FaultRates {
        disconnect: 0.0,
        partition: 0.0,
        hold: 0.0,
        latency: 0.0,
        crash: 0.0,
        crash_after_commit: 0.0,
        offline: 0.0,
    };

    /// Sum of every probability.
    #[must_use]
    pub fn total(&self) -> f64 {
        self.disconnect
            + self.partition
            + self.hold
            + self.latency
            + self.crash
            + self.crash_after_commit
            + self.offline
    }
}

/// OIDC users: the last [`OidcUsers::users`] users authenticate with
/// access tokens from a stand-in Keycloak ([`TestIdp`](super::TestIdp)),
/// which the server trusts through its JWK Set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OidcUsers {
    /// How many users (the last ones) are OIDC users.
    pub users: usize,
    /// The provider's access token lifespan (`exp - iat`; Keycloak's default is 5 minutes).
    pub token_lifetime: Duration,
    /// The server's leeway on `exp` (`OidcConfig::leeway`).
    pub leeway: Duration,
}

impl OidcUsers {
    /// `users` OIDC users with Keycloak's defaults: 300 s tokens, 60 s of leeway.
    #[must_use]
    pub fn keycloak(users: usize) -> OidcUsers {
        OidcUsers { users, token_lifetime: Duration::from_secs(300), leeway: Duration::from_secs(60) }
    }
}

/// Cluster mode (issue 16): nodes sharing one store, one owning the state
/// through a lease with a fencing token, the others standing by.
///
/// Only the owner serves: a standby takes the state over (restored from
/// the store, under a new token) once the owner's lease has expired, and
/// the clients reconnect to it. The owner can be killed (the `crash`
/// faults: a standby takes over a lease later, see
/// [`SimConfig::server_downtime`]) or paused ([`ClusterSim::pause`]: a
/// process stopped, a machine frozen, or cut off from the store, whose
/// commits then wait): a pause longer than what is left of its lease lets a
/// standby take over meanwhile, and the old owner resumes with its memory,
/// its connections and its timers as they were, serving until it learns it
/// lost the lease (its next renewal, or its first commit, which is fenced).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterSim {
    /// Nodes: one owner, the others standbys (a node killed comes back as a standby).
    pub nodes: usize,
    /// How long a lease lasts without a renewal; the owner renews it every third of that.
    pub lease: Duration,
    /// How long a pause of the owner lasts.
    pub pause: Span,
    /// The probability, per scenario action, that the owner pauses.
    pub pause_rate: f64,
}

impl ClusterSim {
    /// Three nodes, 2 s leases, pauses of 100 ms to 8 s.
    #[must_use]
    pub fn three_nodes() -> ClusterSim {
        ClusterSim { nodes: 3, lease: Duration::from_secs(2), pause: Span::ms(100, 8_000), pause_rate: 0.05 }
    }

    /// How often the owner renews its lease.
    #[must_use]
    pub fn renew_every(&self) -> Duration {
        self.lease / 3
    }
}

/// A split state (issue 16): `partitions` partitions shared by `nodes`
/// nodes, each node running the cores of the partitions whose leases it
/// holds behind a switchboard of its own, as `confab-server` does
/// ([`SimConfig::split`], docs/PARTITIONS.md).
///
/// - **Shares.** Every node beats every [`SplitSim::renew_every`]: it
///   notices the leases it lost (a core whose token is no longer the
///   partition's stops), renews the others, and takes free or expired
///   partitions up to its quota (the live nodes sorted by name share the
///   partitions, the first `P mod N` one more), or gives one back above
///   it (its sessions closed 503 "partition moved"). A crashed node comes
///   back with no partition after [`SimConfig::server_downtime`] and takes
///   its share again.
/// - **Routing.** A client connects to one node of its list; a frame for a
///   partition that node does not serve closes the connection 421, and the
///   client tries the next node (as the reference client does).
/// - **Mail.** A commit's mail items go to the outbox table in the same
///   commit; the owner of the target reads them (its carrier) when a
///   doorbell rings (at once on the committing node, over a bus that loses
///   [`SplitSim::bell_loss`] of the bells and delays each by
///   [`SplitSim::bell_delay`] elsewhere) or at its catch-up poll
///   ([`SplitSim::poll`]).
/// - **Faults.** Node crashes (the `crash` and `crash_after_commit`
///   rates), pauses (some past the lease: the node's cores go on from
///   memory when it resumes, until a commit is fenced or a beat tells them
///   they lost their lease), store cuts (the node's commits fail, which
///   stops each core that tries one, and its leases lapse), and cuts of the
///   doorbell bus between two nodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitSim {
    /// Nodes (each has a row in the membership table while it beats).
    pub nodes: usize,
    /// Partitions of the state (`[cluster] partitions`).
    pub partitions: u8,
    /// How long a lease (and a node's membership row) lasts without a
    /// beat; each node beats every third of that.
    pub lease: Duration,
    /// The carrier's catch-up poll: how long a lost doorbell can delay mail.
    pub poll: Duration,
    /// The probability that a doorbell to another node is lost.
    pub bell_loss: f64,
    /// How long a doorbell takes to reach another node (each draws its own: they reorder).
    pub bell_delay: Span,
    /// How long a node's pause lasts.
    pub pause: Span,
    /// The probability, per scenario action, that a random node pauses.
    pub pause_rate: f64,
    /// The probability, per scenario action, that a random node is cut from the store for a pause's length.
    pub store_cut_rate: f64,
    /// The probability, per scenario action, that the doorbell bus between two nodes is cut for a pause's length.
    pub bus_cut_rate: f64,
}

impl SplitSim {
    /// Three nodes sharing four partitions, 2 s leases, a 1 s catch-up
    /// poll, a doorbell in ten lost, pauses and cuts of 100 ms to 8 s.
    #[must_use]
    pub fn three_nodes() -> SplitSim {
        SplitSim {
            nodes: 3,
            partitions: 4,
            lease: Duration::from_secs(2),
            poll: Duration::from_secs(1),
            bell_loss: 0.1,
            bell_delay: Span::us(200, 20_000),
            pause: Span::ms(100, 8_000),
            pause_rate: 0.03,
            store_cut_rate: 0.02,
            bus_cut_rate: 0.03,
        }
    }

    /// How often a node beats (renews its row and its leases).
    #[must_use]
    pub fn renew_every(&self) -> Duration {
        self.lease / 3
    }
}

/// Everything a simulation needs. Build one from a preset and change fields.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The preset this came from (`lan`, `wan`, `flaky`, `quiet`), for reports.
    pub name: &'static str,
    /// The only source of randomness: the same seed replays the same run.
    pub seed: u64,
    /// Simulated users, each with its own client machine.
    pub clients: usize,
    /// Room names the users pick from.
    pub rooms: usize,
    /// Scenario actions (user actions and faults) before the final settling phase.
    pub actions: usize,
    /// Virtual time between two scenario actions.
    pub action_gap: Span,
    /// Latency range of links: each link draws its own sub-range, then each chunk a latency in it.
    pub latency: Span,
    /// Largest chunk a write is cut into (chunks are 1 to `max_chunk` bytes).
    pub max_chunk: usize,
    /// How long a password-hash job takes in virtual time.
    pub job_delay: Span,
    /// How long a client waits before reconnecting after losing its connection.
    pub reconnect_delay: Span,
    /// How long each end of a partitioned connection takes to notice it is dead.
    pub detect_delay: Span,
    /// How long a partition or a hold lasts.
    pub fault_length: Span,
    /// How long the server stays down after a crash.
    pub server_downtime: Span,
    /// How long a user stays offline before coming back on its own.
    pub offline_length: Span,
    /// Fault probabilities per action.
    pub faults: FaultRates,
    /// Bound on the final settling phase, in virtual time: a run that has not
    /// settled by then fails.
    pub settle_limit: Duration,
    /// Bound on processed events, against livelocks.
    pub max_steps: u64,
    /// Keep a readable line per step (slower; for replaying one seed).
    pub trace: bool,
    /// Run every user as a [`SecureClient`](confab_proto::e2e::SecureClient)
    /// with real sealing (fixture identity keys, room passwords, signed MP
    /// handshakes); payloads are then plaintexts, and every delivery is
    /// checked to open to what was sent. Off: plain clients with opaque payloads.
    pub secure: bool,
    /// Some users log in with an OIDC provider's tokens (`None`: all use passwords).
    pub oidc: Option<OidcUsers>,
    /// Keep every server event and every persisted change
    /// ([`Sim::server_events`](super::Sim::server_events), [`Sim::changes`](super::Sim::changes)), for leak checks.
    pub record_server: bool,
    /// A hostile server (issue 10), in secure mode: the probability, per
    /// `room_message`, `user_message` or `mp_request` a client receives, that
    /// the server later delivers an item the client already processed again,
    /// under a fresh sequence number. The secure client must refuse every
    /// one. 0 in every preset but [`SimConfig::hostile`].
    pub hostile_replay: f64,
    /// In secure mode: the probability, per scenario action, that a random
    /// user's profile is saved, and (as much again) that a user with a saved
    /// copy is restored from it ([`Sim::restore_client`](super::Sim::restore_client)).
    /// 0 in every preset: a restored device lacks the MP sessions opened
    /// after its copy, so its peers' messages in them fail to open
    /// (`NoSession`) and are lost, and acceptances of requests made after
    /// the copy are rejected; the behaviour and the ledger do not model that
    /// loss yet, so such runs report `Opacity` and `MpDelivery` violations
    /// (never `NonceReuse` or `Replay`).
    pub client_restore: f64,
    /// Cluster mode: several nodes, one owning the state through a lease
    /// (`None`: one server, as before).
    pub cluster: Option<ClusterSim>,
    /// A split state shared by several nodes (`None`: one partition).
    /// Exclusive with [`SimConfig::cluster`] and the hostile server.
    pub split: Option<SplitSim>,
    /// The server machine's configuration.
    pub server: ServerConfig,
    /// Every client machine's configuration.
    pub client: ClientConfig,
}

impl SimConfig {
    /// The settings shared by the presets: cheap argon2, small scenario.
    fn base(seed: u64) -> SimConfig {
        SimConfig {
            name: "quiet",
            seed,
            clients: 5,
            rooms: 3,
            actions: 120,
            action_gap: Span::ms(1, 400),
            latency: Span::us(100, 2_000),
            max_chunk: 512,
            job_delay: Span::ms(2, 20),
            reconnect_delay: Span::ms(10, 500),
            detect_delay: Span::ms(500, 5_000),
            fault_length: Span::ms(100, 3_000),
            server_downtime: Span::ms(100, 2_000),
            offline_length: Span::ms(500, 10_000),
            faults: FaultRates::NONE,
            settle_limit: Duration::from_secs(600),
            max_steps: 2_000_000,
            trace: false,
            secure: false,
            oidc: None,
            record_server: false,
            hostile_replay: 0.0,
            client_restore: 0.0,
            cluster: None,
            split: None,
            server: ServerConfig { hash_params: HashParams::INSECURE_FAST, ..ServerConfig::default() },
            client: ClientConfig::default(),
        }
    }

    /// A local network: sub-millisecond to 2 ms links, large chunks, rare faults.
    #[must_use]
    pub fn lan(seed: u64) -> SimConfig {
        SimConfig {
            name: "lan",
            faults: FaultRates {
                disconnect: 0.02,
                partition: 0.0,
                hold: 0.01,
                latency: 0.01,
                crash: 0.0,
                crash_after_commit: 0.0,
                offline: 0.03,
            },
            ..SimConfig::base(seed)
        }
    }

    /// A wide-area network: 10-300 ms links, small chunks, occasional faults
    /// and a rare server crash; 30 s access tokens and 10 s keepalives, so
    /// refreshes and pings happen within a run.
    #[must_use]
    pub fn wan(seed: u64) -> SimConfig {
        SimConfig {
            name: "wan",
            latency: Span::ms(10, 300),
            max_chunk: 64,
            fault_length: Span::ms(100, 8_000),
            detect_delay: Span::ms(1_000, 20_000),
            server: ServerConfig {
                access_ttl: Duration::from_secs(30),
                keepalive_interval: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(30),
                ..SimConfig::base(seed).server
            },
            client: ClientConfig {
                keepalive_interval: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(30),
                ..ClientConfig::default()
            },
            faults: FaultRates {
                disconnect: 0.04,
                partition: 0.02,
                hold: 0.03,
                latency: 0.03,
                crash: 0.01,
                crash_after_commit: 0.01,
                offline: 0.04,
            },
            ..SimConfig::base(seed)
        }
    }

    /// A hostile network: tiny chunks, frequent disconnects, holds and
    /// partitions (up to 20 s, noticed after up to 30 s, or by the machines'
    /// 15 s idle timeouts), server crashes (some right after a commit),
    /// 10 s access tokens and a 256-byte slow-reader limit.
    #[must_use]
    pub fn flaky(seed: u64) -> SimConfig {
        SimConfig {
            name: "flaky",
            latency: Span::ms(1, 150),
            max_chunk: 24,
            fault_length: Span::ms(100, 20_000),
            detect_delay: Span::ms(500, 30_000),
            server: ServerConfig {
                access_ttl: Duration::from_secs(10),
                keepalive_interval: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(15),
                max_session_backlog: 256,
                ..SimConfig::base(seed).server
            },
            client: ClientConfig {
                keepalive_interval: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(15),
                ..ClientConfig::default()
            },
            faults: FaultRates {
                disconnect: 0.08,
                partition: 0.05,
                hold: 0.06,
                latency: 0.04,
                crash: 0.04,
                crash_after_commit: 0.04,
                offline: 0.05,
            },
            ..SimConfig::base(seed)
        }
    }

    /// One of the three presets, chosen by `seed % 3` (lan, wan, flaky), so
    /// that a range of seeds mixes them deterministically.
    #[must_use]
    pub fn mixed(seed: u64) -> SimConfig {
        match seed % 3 {
            0 => SimConfig::lan(seed),
            1 => SimConfig::wan(seed),
            _ => SimConfig::flaky(seed),
        }
    }

    /// [`SimConfig::mixed`] in secure mode with a hostile server that
    /// replays one received item in four ([`SimConfig::hostile_replay`]).
    #[must_use]
    pub fn hostile(seed: u64) -> SimConfig {
        SimConfig { secure: true, hostile_replay: 0.25, ..SimConfig::mixed(seed) }
    }

    /// [`SimConfig::mixed`] on a cluster of three nodes
    /// ([`ClusterSim::three_nodes`]): owners paused (some past their lease,
    /// so that a standby takes over while they sleep) and killed (a standby
    /// takes over once the lease expires).
    #[must_use]
    pub fn cluster(seed: u64) -> SimConfig {
        let mixed = SimConfig::mixed(seed);
        let cluster = ClusterSim::three_nodes();
        let lease = cluster.lease;
        SimConfig {
            name: match seed % 3 {
                0 => "cluster-lan",
                1 => "cluster-wan",
                _ => "cluster-flaky",
            },
            cluster: Some(cluster),
            // A standby takes over when the dead owner's lease expires: up to a lease after its last renewal.
            server_downtime: Span::new(lease - cluster.renew_every(), lease + Duration::from_millis(10)),
            faults: FaultRates { crash: mixed.faults.crash.max(0.02), ..mixed.faults },
            ..mixed
        }
    }

    /// [`SimConfig::mixed`] on a split state: four partitions shared by
    /// three nodes ([`SplitSim::three_nodes`]), nodes killed, paused, cut
    /// from the store and from each other's doorbells.
    #[must_use]
    pub fn split(seed: u64) -> SimConfig {
        let mixed = SimConfig::mixed(seed);
        let split = SplitSim::three_nodes();
        let lease = split.lease;
        SimConfig {
            name: match seed % 3 {
                0 => "split-lan",
                1 => "split-wan",
                _ => "split-flaky",
            },
            split: Some(split),
            // A node comes back within a few leases (it joins, then takes its share).
            server_downtime: Span::new(lease / 2, lease * 3),
            faults: FaultRates { crash: mixed.faults.crash.max(0.02), ..mixed.faults },
            ..mixed
        }
    }

    /// A network without any fault and no scenario actions: for scripted tests.
    #[must_use]
    pub fn quiet(seed: u64) -> SimConfig {
        SimConfig { actions: 0, ..SimConfig::base(seed) }
    }
}
