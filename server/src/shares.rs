//! A node's share of a split state (docs/PARTITIONS.md, "Ownership"):
//! its membership of the cluster, and the partitions it takes and gives
//! back while it runs.
//!
//! At start ([`join`]) the node beats once ([`Fleet::join`]) and opens the
//! stores of the partitions its plan takes, each under its own lease: the
//! first node of a cluster takes every partition; a node joining a cluster
//! whose partitions are all held starts with none. Then a thread
//! ([`Shares::start`]) beats every lease renewal period and does what the
//! plan says:
//!
//! - partitions free (their lease expired: a node gone; or released: a node
//!   giving back) up to its quota are opened (the lease's own statement
//!   decides a race with another node) and handed to the loop
//!   ([`NodeHandle::take`]);
//! - above its quota (a node joined), one partition per beat is given back
//!   ([`NodeHandle::give_back`]): the loop closes its sessions, commits,
//!   and drops the store, which releases the lease at once;
//! - a lease the store's keeper lost is told to the loop at once, on the
//!   keeper's thread ([`LeaseWatch::on_lost`], [`NodeHandle::lease_lost`]
//!   with the lease's token: a loss of an older lease of a partition taken
//!   again since stops nothing), which stops that core only; the partition
//!   is taken again from the store by whichever node's plan says so.
//!
//! A failed beat (the database unreachable) changes nothing: the leases
//! are the stores' own, kept or lost by their keepers. A partition is taken
//! only while the database answers (a lease's length at most through a
//! lost connection, [`LeaseConfig::impatient`]), and the node beats between
//! two loads. A partition above the quota that no core serves here (its
//! commit failed: its lease has not expired yet) is not given back: it
//! expires. A stop leaves the cluster ([`Fleet::leave`]) as soon as the
//! loop is stopping, so that the others' quotas grow at once.
//!
//! [`LeaseConfig::impatient`]: crate::store::LeaseConfig::impatient

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use confab_proto::server::{PartitionId, State};
use tracing::{debug, info, warn};

use crate::config::RunConfig;
use crate::runtime::NodeHandle;
use crate::store::{Fleet, Init, LeaseWatch, PgStore, StoreError};

/// A partition's store opened under its lease, and what it holds.
pub type Opened = (PartitionId, PgStore, State);

/// A node that joined the cluster, before its loop runs.
#[derive(Debug)]
pub struct Joined {
    fleet: Fleet,
    /// The leases of the partitions it opened at start, by token.
    leases: Vec<(PartitionId, u64, LeaseWatch)>,
}

/// Joins the cluster of the store at `url` and opens the partitions the
/// first plan gives this node (none, when others hold them all).
///
/// # Errors
/// The database cannot be reached, the store was made for another count
/// of partitions or by a newer build, or a partition's store cannot be
/// opened for another reason than another node holding it.
pub fn join(url: &str, config: &RunConfig, init: Init) -> Result<(Joined, Vec<Opened>), StoreError> {
    let count = config.server.partitions.count;
    let (mut fleet, view) = Fleet::join(url, &config.lease, count)?;
    let plan = fleet.plan(&view);
    let mut opened = Vec::new();
    let mut leases = Vec::new();
    for partition in plan.take {
        if let Some((store, state)) = open(url, config, init, partition)? {
            leases.push((partition, token(&store), store.lease_watch()));
            opened.push((partition, store, state));
        }
        // Alive while the stores load.
        if let Err(e) = fleet.beat() {
            warn!("membership not renewed: {e}");
        }
    }
    Ok((Joined { fleet, leases }, opened))
}

/// The fencing token of `store`'s lease.
fn token(store: &PgStore) -> u64 {
    u64::try_from(store.token()).unwrap_or_default()
}

/// Has the loop behind `node` watch the lease `token` of `partition`
/// (whether it is in doubt), and tells it when the lease is lost: at once,
/// on the thread that finds it.
fn watch(node: &NodeHandle, partition: PartitionId, token: u64, watch: &LeaseWatch) {
    node.watch_lease(partition, token, watch.clone());
    let node = node.clone();
    watch.on_lost(move |reason| {
        warn!(partition, token, %reason, "partition lease lost: its core stops");
        node.lease_lost(partition, token, reason);
    });
}

/// Opens `partition`'s store, if its lease can be this node's (`None`:
/// another node holds it).
fn open(
    url: &str,
    config: &RunConfig,
    init: Init,
    partition: PartitionId,
) -> Result<Option<(PgStore, State)>, StoreError> {
    let mut server = config.server.clone();
    server.partitions.index = partition;
    let mut lease = config.lease.clone();
    (lease.standby, lease.impatient) = (false, true);
    match PgStore::open_leased(url, &server, init, Some(&config.data), lease) {
        Ok((mut store, state)) => {
            store.set_compact_every(config.compact_every);
            info!(
                store = %store.label().display(),
                node = %config.lease.node,
                partition,
                partitions = server.partitions.count,
                token = store.token(),
                users = state.accounts().user_count(),
                rooms = state.rooms().len(),
                queued = state.lanes().queued_total(),
                "partition owned: PostgreSQL store"
            );
            Ok(Some((store, state)))
        }
        Err(StoreError::LeaseHeld { holder, .. }) => {
            info!(partition, %holder, "partition not taken: another node holds it");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The thread that keeps a node's share (see the [module docs](self)).
/// Dropping it stops the thread and leaves the cluster.
#[derive(Debug)]
pub struct Shares {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Shares {
    /// Starts beating for `joined`, handing the loop behind `node` what
    /// it takes and gives back; the leases `joined` opened tell the loop
    /// when they are lost from now on.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start(joined: Joined, url: &str, config: &RunConfig, node: NodeHandle) -> std::io::Result<Shares> {
        let Joined { fleet, leases } = joined;
        for (partition, token, lease) in &leases {
            watch(&node, *partition, *token, lease);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, url, config) = (Arc::clone(&stop), url.to_owned(), config.clone());
        let thread = std::thread::Builder::new()
            .name("confab-shares".into())
            .spawn(move || keep(fleet, &url, &config, &node, &flag))?;
        Ok(Shares { stop, thread: Some(thread) })
    }
}

impl Drop for Shares {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// The beat loop: until `stop`, or the node stopping.
fn keep(mut fleet: Fleet, url: &str, config: &RunConfig, node: &NodeHandle, stop: &AtomicBool) {
    let every = config.lease.renew_every.max(Duration::from_millis(10));
    let stopping = || stop.load(Ordering::SeqCst) || node.is_stopping();
    while !stopping() {
        std::thread::park_timeout(every);
        if stopping() {
            break;
        }
        let view = match fleet.beat() {
            Ok(view) => view,
            Err(e) => {
                warn!("membership not renewed (the leases are kept by their own sessions): {e}");
                continue;
            }
        };
        let plan = fleet.plan(&view);
        for partition in plan.take {
            if stopping() {
                break;
            }
            // `--init` was for the start: a partition's tables exist once the cluster served.
            match open(url, config, Init::IfNew, partition) {
                Ok(Some((store, state))) => {
                    let (token, lease) = (token(&store), store.lease_watch());
                    node.take_watched(partition, token, store, state, lease.clone());
                    // After the take: a loss found meanwhile is told after it (the loop
                    // also refuses a take whose loss came first).
                    watch(node, partition, token, &lease);
                }
                Ok(None) => {}
                // This build can never serve this store: a member that keeps a quota it
                // cannot serve would leave partitions unserved. It stops (its clients go
                // to the other nodes), and a node of the right build takes its share.
                Err(
                    e @ (StoreError::SchemaTooNew { .. }
                    | StoreError::PartitionCount { .. }
                    | StoreError::NotAStore { .. }
                    | StoreError::BadPartition { .. }),
                ) => {
                    tracing::error!(partition, "this node cannot serve the store any more, stopping: {e}");
                    node.stop();
                    break;
                }
                Err(e) => warn!(partition, "partition not taken: {e}"),
            }
            // Alive while the stores load.
            if let Err(e) = fleet.beat() {
                warn!("membership not renewed: {e}");
            }
        }
        match plan.give_back {
            Some(partition) if node.serves(partition) => {
                info!(partition, quota = plan.quota, "giving a partition back: another node's share");
                node.give_back(partition);
            }
            // Its core stopped here (a failed commit) and its lease has not expired yet.
            Some(partition) => debug!(partition, "above the quota by a lease no core serves: it expires"),
            None => {}
        }
    }
    if let Err(e) = fleet.leave() {
        warn!("could not leave the cluster (its row expires in a lease): {e}");
    }
}
