//! `confab-bench failover`: how long a cluster takes to serve again after
//! its owner dies.
//!
//! Three `confab-server` nodes (the workspace's binaries, built beside
//! this one) on one PostgreSQL: the first owns the store, the others stand
//! by. Bob runs `confab listen` given the three addresses; Alice sends him
//! a DM every 20 ms (`confab dm send`, a process each, through her own
//! running `confab listen`). Each round kills
//! the owner (SIGKILL) once Bob has received a few DMs through it, then
//! measures:
//!
//! - **takeover**: from the kill to the moment a standby listens (it took
//!   the lease over once the dead owner's expired, and loaded the state);
//! - **first delivery**: from the kill to the first DM Bob receives after
//!   it, which is what a user sees (it includes `listen`'s reconnection
//!   pause and Alice's retries).
//!
//! With `--relay`, a NATS server of the run's own (Debian's `nats-server`)
//! joins the cluster and the standbys are edges: Bob listens through one
//! and Alice sends through the other, so every DM crosses the relay twice,
//! and the first delivery after a kill includes the edges hearing the new
//! owner.
//!
//! The killed node is started again as a standby before the next round.
//! PostgreSQL is the one `--postgres-url` names (in a scratch database,
//! dropped after the run) or, without it, one of the run's own
//! ([`TempPostgres`]: Debian's `postgresql` package).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use confab_tests::cluster::{ClusterNode, dm_texts, first_to_listen, relaying, standing_by};
use confab_tests::nats::TempNats;
use confab_tests::postgres::TempPostgres;
use confab_tests::procs::{CliUser, Running, ServerProc, Starting, TempDir};

use crate::BenchError;
use crate::scratch::ScratchDb;

/// What to run.
#[derive(Debug, Clone)]
pub struct FailoverConfig {
    /// An existing PostgreSQL (the run uses a scratch database on it); `None`: one of the run's own.
    pub postgres_url: Option<String>,
    /// `[cluster] lease_secs` of every node.
    pub lease_secs: u64,
    /// Kills measured.
    pub rounds: u32,
    /// Standbys relay through a NATS of the run's own (edges), and the
    /// users reach the service through them; with a split state, the
    /// nodes ring each other's doorbells through it.
    pub relay: bool,
    /// `[cluster] partitions`: 1, one owner and two standbys; more, a split
    /// state the three nodes share, and each round kills the node serving
    /// Bob's home (`bench/src/split_failover.rs`).
    pub partitions: u8,
}

/// One round's times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Kill to a standby listening, in milliseconds.
    pub takeover_ms: u64,
    /// Kill to the first DM delivered after it, in milliseconds.
    pub first_delivery_ms: u64,
}

/// Where the PostgreSQL of the run lives (dropped at the end).
enum Database {
    Own(TempPostgres),
    Scratch(Box<ScratchDb>),
}

impl Database {
    fn url(&self) -> String {
        match self {
            Database::Own(pg) => pg.url(),
            Database::Scratch(db) => db.url.clone(),
        }
    }
}

/// DMs Bob must receive through an owner before it is killed.
pub(crate) const STEADY: usize = 5;

/// How long a round's steps may take before the run fails.
pub(crate) const STEP_LIMIT: Duration = Duration::from_secs(120);

/// `from` sends `to` a DM every 20 ms (`label N`, a process each) on a
/// thread, until the flag it returns is set.
pub(crate) fn dm_every_20_ms(from: &CliUser, to: &str, label: &str) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (from, flag, to, label) = (from.clone(), Arc::clone(&stop), to.to_owned(), label.to_owned());
    let sender = std::thread::spawn(move || {
        let mut i = 0u64;
        while !flag.load(Ordering::Relaxed) {
            let _ = from.run(&["dm", "send", &to, &format!("{label} {i}")]);
            i += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (stop, sender)
}

/// Waits for `done`, failing after [`STEP_LIMIT`].
pub(crate) fn wait(what: &str, done: &dyn Fn() -> bool) -> Result<(), BenchError> {
    let deadline = Instant::now() + STEP_LIMIT;
    while !done() {
        if Instant::now() > deadline {
            return Err(BenchError(format!("{what} did not happen within {STEP_LIMIT:?}")));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Runs the rounds.
///
/// # Errors
/// PostgreSQL is missing or unreachable, or a step does not happen in time.
pub fn run(config: &FailoverConfig) -> Result<Vec<Round>, BenchError> {
    let db = match &config.postgres_url {
        Some(url) => Database::Scratch(Box::new(ScratchDb::create(url)?)),
        None => Database::Own(TempPostgres::start("confab-bench failover").ok_or_else(|| {
            BenchError(
                "PostgreSQL is not installed (Debian: apt-get install postgresql), or give --postgres-url".into(),
            )
        })?),
    };
    let url = db.url();
    let nats = if config.relay {
        Some(TempNats::start("confab-bench failover").ok_or_else(|| {
            BenchError("--relay: nats-server is not installed (Debian: apt-get install nats-server)".into())
        })?)
    } else {
        None
    };
    if config.partitions > 1 {
        return crate::split_failover::run(config, &url, nats.as_ref().map(TempNats::url).as_deref());
    }
    let dir = TempDir::new("confab-bench-failover");
    let node = |name: &str, cert_of: Option<&std::path::Path>| {
        let n = ClusterNode::new(dir.path(), name, &url, cert_of, config.lease_secs);
        match &nats {
            Some(nats) => n.relaying(&nats.url()),
            None => n,
        }
    };
    let first = node("n1", None);
    let nodes: Vec<ClusterNode> =
        std::iter::once(first.clone()).chain(["n2", "n3"].map(|n| node(n, Some(&first.data)))).collect();
    // A standby is ready once it stands by, or, as an edge, once it hears the owner.
    let ready = |s: &Starting| if config.relay { relaying(s) } else { standing_by(s) };
    let mut owner: (usize, ServerProc) = (0, first.start());
    let mut standbys: Vec<(usize, Starting)> = Vec::new();
    for (i, node) in nodes.iter().enumerate().skip(1) {
        let s = node.spawn();
        ready(&s);
        standbys.push((i, s));
    }
    // Through the edges: Bob by n2, Alice by n3 (the owner n1 last).
    let list = |order: [usize; 3]| order.map(|i| nodes[i].tcp.clone()).join(",");
    let user = |name: &str, order: [usize; 3]| {
        let mut u = CliUser::new(dir.path(), name, &owner.1, "tcp");
        u.server = list(order);
        u
    };
    let (alice, bob) = if config.relay {
        (user("alice", [2, 1, 0]), user("bob", [1, 2, 0]))
    } else {
        (user("alice", [0, 1, 2]), user("bob", [0, 1, 2]))
    };
    for (who, args) in [
        (&alice, &["register", "alice"][..]),
        (&bob, &["register", "bob"]),
        (&alice, &["dm", "request", "bob"]),
        (&bob, &["dm", "accept", "alice"]),
    ] {
        let out = who.run(args);
        if !out.status.success() {
            return Err(BenchError(format!("confab {args:?}: {}", String::from_utf8_lossy(&out.stderr))));
        }
    }
    let listen = Running::start(bob.command(&["listen"]));
    if !listen.wait_for("\"connected\"", Duration::from_secs(30)) {
        return Err(BenchError(format!("bob's listen did not connect: {}", listen.stderr())));
    }
    // Alice's sends go through her own running `listen` (one session,
    // which exchanged its refresh token when it connected): a process per
    // message would exchange it every time, and a kill between the commit of
    // an exchange and its answer revokes that login (docs/ARCHITECTURE.md,
    // "Cluster mode", limits).
    let alice_listen = Running::start(alice.command(&["listen"]));
    if !alice_listen.wait_for("\"connected\"", Duration::from_secs(30)) {
        return Err(BenchError(format!("alice's listen did not connect: {}", alice_listen.stderr())));
    }
    let (stop, sender) = dm_every_20_ms(&alice, "bob", "failover bench");
    let received = || dm_texts(&listen.lines()).len();
    let mut rounds = Vec::new();
    let result = (|| {
        for _ in 0..config.rounds {
            let before = received();
            wait("steady delivery through the owner", &|| received() >= before + STEADY)?;
            let (dead, mut server) = owner;
            server.kill();
            let killed = Instant::now();
            let after = received();
            let ((next, serving), rest) = first_to_listen(std::mem::take(&mut standbys), STEP_LIMIT);
            let takeover = killed.elapsed();
            wait("a DM delivered after the kill", &|| received() > after)?;
            let first_delivery = killed.elapsed();
            rounds.push(Round {
                takeover_ms: u64::try_from(takeover.as_millis()).unwrap_or(u64::MAX),
                first_delivery_ms: u64::try_from(first_delivery.as_millis()).unwrap_or(u64::MAX),
            });
            owner = (next, serving);
            standbys = rest;
            // The dead node comes back as a standby.
            let again = nodes[dead].spawn();
            ready(&again);
            standbys.push((dead, again));
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    result.map(|()| rounds)
}

/// The rounds as a table, with min / median / max.
#[must_use]
pub fn table(config: &FailoverConfig, rounds: &[Round]) -> String {
    let mut out = if config.partitions > 1 {
        format!(
            "failover: 3 nodes sharing {} partitions{}, lease {} s, {} rounds (SIGKILL of the node serving Bob's \
             home)\n round | takeover ms | first delivery ms\n",
            config.partitions,
            if config.relay { " (doorbells over NATS)" } else { "" },
            config.lease_secs,
            rounds.len()
        )
    } else {
        format!(
            "failover: 3 nodes{}, lease {} s, {} rounds (SIGKILL of the owner)\n round | takeover ms | first delivery ms\n",
            if config.relay { " (standbys relaying through NATS; users on the edges)" } else { "" },
            config.lease_secs,
            rounds.len()
        )
    };
    for (i, r) in rounds.iter().enumerate() {
        out.push_str(&format!(" {:>5} | {:>11} | {:>17}\n", i + 1, r.takeover_ms, r.first_delivery_ms));
    }
    let stat = |f: fn(&Round) -> u64| {
        let mut v: Vec<u64> = rounds.iter().map(f).collect();
        v.sort_unstable();
        match (v.first(), v.get(v.len() / 2), v.last()) {
            (Some(min), Some(median), Some(max)) => format!("{min} / {median} / {max}"),
            _ => "-".to_owned(),
        }
    };
    out.push_str(&format!(
        " min / median / max: takeover {} ms, first delivery {} ms\n",
        stat(|r| r.takeover_ms),
        stat(|r| r.first_delivery_ms)
    ));
    out
}
