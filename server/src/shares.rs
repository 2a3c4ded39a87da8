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
//! - a lease the store's keeper lost is told to the loop
//!   ([`NodeHandle::lease_lost`]), which stops that core only; the
//!   partition is taken again from the store by whichever node's plan says so.
//!
//! A failed beat (the database unreachable) changes nothing: the leases
//! are the stores' own, kept or lost by their keepers. A stop leaves the
//! cluster ([`Fleet::leave`]) once the loop has returned, so that the
//! others' quotas grow at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use confab_proto::server::{PartitionId, State};
use tracing::{info, warn};

use crate::config::RunConfig;
use crate::runtime::NodeHandle;
use crate::store::{Fleet, Init, LeaseWatch, PgStore, StoreError};

/// A partition's store opened under its lease, and what it holds.
pub type Opened = (PartitionId, PgStore, State);

/// A node that joined the cluster, before its loop runs.
#[derive(Debug)]
pub struct Joined {
    fleet: Fleet,
    watches: Vec<(PartitionId, LeaseWatch)>,
}

/// Joins the cluster of the store at `url` and opens the partitions the
/// first plan gives this node (none, when others hold them all).
///
/// # Errors
/// The database cannot be reached, or a partition's store cannot be
/// opened for another reason than another node holding it.
pub fn join(url: &str, config: &RunConfig, init: Init) -> Result<(Joined, Vec<Opened>), StoreError> {
    let count = config.server.partitions.count;
    let (mut fleet, view) = Fleet::join(url, &config.lease, count)?;
    let plan = fleet.plan(&view);
    let mut opened = Vec::new();
    let mut watches = Vec::new();
    for partition in plan.take {
        if let Some((store, state)) = open(url, config, init, partition)? {
            watches.push((partition, store.lease_watch()));
            opened.push((partition, store, state));
        }
        // Alive while the stores load.
        if let Err(e) = fleet.beat() {
            warn!("membership not renewed: {e}");
        }
    }
    Ok((Joined { fleet, watches }, opened))
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
    lease.standby = false;
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
    /// it takes and gives back.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start(joined: Joined, url: &str, config: &RunConfig, node: NodeHandle) -> std::io::Result<Shares> {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, url, config) = (Arc::clone(&stop), url.to_owned(), config.clone());
        let thread = std::thread::Builder::new()
            .name("confab-shares".into())
            .spawn(move || keep(joined, &url, &config, &node, &flag))?;
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
fn keep(joined: Joined, url: &str, config: &RunConfig, node: &NodeHandle, stop: &AtomicBool) {
    let Joined { mut fleet, mut watches } = joined;
    let every = config.lease.renew_every.max(Duration::from_millis(10));
    while !stop.load(Ordering::SeqCst) && !node.is_stopping() {
        std::thread::park_timeout(every);
        if stop.load(Ordering::SeqCst) || node.is_stopping() {
            break;
        }
        watches.retain(|(partition, watch)| match watch.lost() {
            Some(reason) => {
                warn!(partition, %reason, "partition lease lost: its core stops");
                node.lease_lost(*partition, reason);
                false
            }
            None => true,
        });
        let view = match fleet.beat() {
            Ok(view) => view,
            Err(e) => {
                warn!("membership not renewed (the leases are kept by their own sessions): {e}");
                continue;
            }
        };
        let plan = fleet.plan(&view);
        for partition in plan.take {
            if node.is_stopping() {
                break;
            }
            // `--init` was for the start: a partition's tables exist once the cluster served.
            match open(url, config, Init::IfNew, partition) {
                Ok(Some((store, state))) => {
                    watches.retain(|(p, _)| *p != partition);
                    watches.push((partition, store.lease_watch()));
                    node.take(partition, store, state);
                }
                Ok(None) => {}
                Err(e) => warn!(partition, "partition not taken: {e}"),
            }
        }
        if let Some(partition) = plan.give_back {
            info!(partition, quota = plan.quota, "giving a partition back: another node's share");
            watches.retain(|(p, _)| *p != partition);
            node.give_back(partition);
        }
    }
    if let Err(e) = fleet.leave() {
        warn!("could not leave the cluster (its row expires in a lease): {e}");
    }
}
