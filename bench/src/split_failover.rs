//! `confab-bench failover --partitions N`: how long a split state takes to
//! serve a dead node's partitions again.
//!
//! Three `confab-server` nodes share a state split into `N` partitions on
//! one PostgreSQL, each serving its share (no standby). Alice and Bob are
//! named so that two different nodes serve their homes; Bob runs `confab
//! listen` and Alice sends him a DM every 20 ms through her own running
//! `listen`, both given the three addresses (a node that does not serve a
//! partition closes the connection 421, and the client tries the next).
//! Each round kills (SIGKILL) the node serving Bob's home once Bob has
//! received a few DMs through it, then measures:
//!
//! - **takeover**: from the kill to a surviving node saying it serves Bob's
//!   home (it took the partition's lease once the dead node's expired, and
//!   loaded the partition);
//! - **first delivery**: from the kill to the first DM Bob receives after
//!   it (his `listen` found the new owner, Alice's DM crossed from her
//!   home's node to his through the outbox).
//!
//! The killed node is started again before the next round: it joins, the
//! others give partitions back to it, and the round starts once the shares
//! settled and DMs flow again. With `--relay`, a NATS server of the run's
//! own carries the nodes' doorbells (mail read at once instead of at the
//! next one-second poll).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use confab_proto::server::{PartitionId, Partitions};
use confab_tests::cluster::{ClusterNode, dm_texts, served};
use confab_tests::procs::{CliUser, Running, ServerProc, TempDir};

use crate::BenchError;
use crate::failover::{FailoverConfig, Round, STEADY, dm_every_20_ms, wait};

/// The carrier's catch-up poll without doorbells (the default `mail_poll_ms`).
const MAIL_POLL_MS: u64 = 1000;

/// The first of `prefix0`, `prefix1`, ... whose home is `home`.
fn named_at(parts: Partitions, prefix: &str, home: PartitionId) -> String {
    (0..).map(|i| format!("{prefix}{i}")).find(|n| parts.home_of_user(n) == home).unwrap_or_default()
}

/// What each running node says it serves (`None`: not running).
fn shares(running: &[Option<ServerProc>]) -> Vec<Option<BTreeSet<PartitionId>>> {
    running.iter().map(|n| n.as_ref().map(|n| served(&n.log()))).collect()
}

/// Whether the running nodes' shares settled: every partition served by
/// exactly one, each node at its quota (the first `count mod live` nodes by
/// name one more).
fn settled(running: &[Option<ServerProc>], count: u8) -> bool {
    let shares: Vec<BTreeSet<PartitionId>> = shares(running).into_iter().flatten().collect();
    let live = shares.len();
    let all: BTreeSet<PartitionId> = shares.iter().flatten().copied().collect();
    let total: usize = shares.iter().map(BTreeSet::len).sum();
    let count = usize::from(count);
    live > 0
        && all.len() == count
        && total == count
        && shares.iter().enumerate().all(|(rank, s)| s.len() == count / live + usize::from(rank < count % live))
}

/// The running node serving `partition`.
fn serving(running: &[Option<ServerProc>], partition: PartitionId) -> Option<usize> {
    shares(running).iter().position(|s| s.as_ref().is_some_and(|s| s.contains(&partition)))
}

/// Runs the rounds on the store `url` (with the doorbells on `nats`).
///
/// # Errors
/// A node does not start, a command fails, or a step does not happen in time.
pub fn run(config: &FailoverConfig, url: &str, nats: Option<&str>) -> Result<Vec<Round>, BenchError> {
    let parts = Partitions { index: 0, count: config.partitions };
    let dir = TempDir::new("confab-bench-split-failover");
    let node = |name: &str, cert_of: Option<&std::path::Path>| {
        let poll = if nats.is_some() { 60_000 } else { MAIL_POLL_MS };
        let n = ClusterNode::new(dir.path(), name, url, cert_of, config.lease_secs).split(parts.count, poll);
        match nats {
            Some(nats) => n.relaying(nats),
            None => n,
        }
    };
    let n1 = node("n1", None);
    let nodes = [n1.clone(), node("n2", Some(&n1.data)), node("n3", Some(&n1.data))];
    let mut running: Vec<Option<ServerProc>> = vec![Some(nodes[0].start())];
    running.extend(nodes[1..].iter().map(|n| Some(n.start())));
    wait("the shares settling", &|| settled(&running, parts.count))?;
    let home_of = |node: usize| shares(&running)[node].as_ref().and_then(|s| s.iter().next().copied());
    let (Some(alice_home), Some(bob_home)) = (home_of(2), home_of(1)) else {
        return Err(BenchError("a node serves no partition".into()));
    };
    let (a, b) = (named_at(parts, "alice", alice_home), named_at(parts, "bob", bob_home));
    let servers = nodes.iter().map(|n| n.tcp.clone()).collect::<Vec<_>>().join(",");
    let first = running[0].as_ref().ok_or_else(|| BenchError("the first node is not running".into()))?;
    let user = |name: &str| {
        let mut u = CliUser::new(dir.path(), name, first, "tcp");
        u.server.clone_from(&servers);
        u
    };
    let (alice, bob) = (user(&a), user(&b));
    for (who, args) in [
        (&alice, &["register", a.as_str()][..]),
        (&bob, &["register", b.as_str()]),
        (&alice, &["dm", "request", b.as_str()]),
        (&bob, &["dm", "accept", a.as_str()]),
    ] {
        let out = who.run(args);
        if !out.status.success() {
            return Err(BenchError(format!("confab {args:?}: {}", String::from_utf8_lossy(&out.stderr))));
        }
    }
    let listen = Running::start(bob.command(&["listen"]));
    let alice_listen = Running::start(alice.command(&["listen"]));
    for (who, l) in [("bob", &listen), ("alice", &alice_listen)] {
        if !l.wait_for("\"connected\"", Duration::from_secs(30)) {
            return Err(BenchError(format!("{who}'s listen did not connect: {}", l.stderr())));
        }
    }
    let (stop, sender) = dm_every_20_ms(&alice, &b, "split failover bench");
    let received = || dm_texts(&listen.lines()).len();
    let mut rounds = Vec::new();
    let result = (|| {
        for _ in 0..config.rounds {
            let before = received();
            wait("steady delivery", &|| received() >= before + STEADY)?;
            let dead = serving(&running, bob_home).ok_or_else(|| BenchError("Bob's home is not served".into()))?;
            if let Some(mut n) = running[dead].take() {
                n.kill();
            }
            let killed = Instant::now();
            let after = received();
            wait("Bob's home taken by a survivor", &|| serving(&running, bob_home).is_some())?;
            let takeover = killed.elapsed();
            wait("a DM delivered after the kill", &|| received() > after)?;
            let first_delivery = killed.elapsed();
            rounds.push(Round {
                takeover_ms: u64::try_from(takeover.as_millis()).unwrap_or(u64::MAX),
                first_delivery_ms: u64::try_from(first_delivery.as_millis()).unwrap_or(u64::MAX),
            });
            // The dead node comes back, and takes its share again.
            running[dead] = Some(nodes[dead].start());
            wait("the shares settling again", &|| settled(&running, parts.count))?;
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    result.map(|()| rounds)
}
