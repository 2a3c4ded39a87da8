//! Partitions taken and given back while the node runs: a split state
//! shared by several nodes (docs/PARTITIONS.md, "Ownership").
//!
//! The node's membership (`crate::shares`, on a thread of its own) opens a
//! partition's store once its lease is this node's and hands it over
//! ([`NodeHandle::take`]); it asks for a partition back when another node
//! should own it ([`NodeHandle::give_back`]), and says when a lease was
//! lost ([`NodeHandle::lease_lost`]). The loop does each at the start of a
//! turn:
//!
//! - **Take**: the core is restored from the store's state, its mail is
//!   read from its cursors, and connections opened from then on may start
//!   there.
//! - **Give back**: the partition is not served from then on and every
//!   session of the core is closed (503, "partition moved": its clients
//!   reconnect and find the new owner); the core leaves in the background:
//!   its last turns are committed and acted on while the loop goes on (a
//!   store that hangs holds no other partition back), and once nothing of
//!   it is held its store is dropped, which releases the lease at once.
//! - **Lost** (the lease, or a commit of a split state's core): the core
//!   stops without anything more of it acted on (nothing it did since its
//!   last durable commit is acknowledged); the connections with a live
//!   session there are closed (503). The store is dropped: another node, or
//!   this one at its next beat, takes the partition from the store.
//!
//! A stopped core's argon2 jobs are forgotten ([`Workers::retire`]), so
//! that a result never reaches a later core of the same partition, and its
//! sessions' entries leave the node's maps once it is retired, before any
//! later core of its partition starts (a later core numbers its sessions
//! from 1 again). A retired core is dropped off the loop.
//!
//! [`NodeHandle::take`]: super::NodeHandle::take
//! [`NodeHandle::give_back`]: super::NodeHandle::give_back
//! [`NodeHandle::lease_lost`]: super::NodeHandle::lease_lost
//! [`Workers::retire`]: super::workers::Workers::retire

use confab_proto::server::{PartitionId, State};
use confab_proto::{Now, Server};
use confab_transports::hub::ConnId;
use tracing::{error, info, warn};

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::commit::Store;
use super::core::Core;
use super::{Node, os_seed};
use crate::relay::host::RelayHost;
use crate::store::LeaseWatch;

/// What the node's membership asks of the loop.
pub(super) enum Ownership {
    /// Serve `partition` from `store` (its lease, of token `lease`, this
    /// node's), restored from `state`.
    Take { partition: PartitionId, lease: u64, store: Store, state: Box<State>, watch: Option<LeaseWatch> },
    /// Give `partition` back to the cluster.
    GiveBack { partition: PartitionId },
    /// `partition`'s lease of token `lease` was lost.
    Lost { partition: PartitionId, lease: u64, reason: String },
    /// Watch `partition`'s lease of token `lease` (whether it is in doubt).
    Watch { partition: PartitionId, lease: u64, watch: LeaseWatch },
}

/// How a core stops.
pub(super) enum Stop {
    /// Cleanly: sessions closed, everything committed, the lease released.
    GiveBack,
    /// At once: its lease is gone, or its store failed.
    Lost(String),
}

/// How many losses of leases not (or no longer) served a node remembers:
/// a take comes within a beat of its loss, if ever.
const LOST_REMEMBERED: usize = 64;

/// What a client is told when its partition's core stops here.
const MOVED: &str = "partition moved to another node: reconnect";

impl Node {
    /// Does what the node's membership asked since the last turn.
    pub(super) fn ownership_turn(&mut self, now: Now) {
        while let Ok(change) = self.ownership.try_recv() {
            match change {
                Ownership::Take { partition, lease, store, state, watch } => {
                    self.take(now, partition, lease, store, *state);
                    let core = self.cores.get_mut(usize::from(partition)).and_then(Option::as_mut);
                    if let Some(core) = core.filter(|c| c.lease == Some(lease)) {
                        core.watch = watch;
                    }
                }
                Ownership::GiveBack { partition } => self.stop_core(now, partition, Stop::GiveBack),
                Ownership::Watch { partition, lease, watch } => {
                    let core = self.cores.get_mut(usize::from(partition)).and_then(Option::as_mut);
                    if let Some(core) = core.filter(|c| c.lease.is_none_or(|l| l == lease)) {
                        core.watch = Some(watch);
                        // A core bound with the node: its lease's token is known now.
                        if !self.hosts.contains_key(&partition) {
                            self.host(partition, lease);
                        }
                    }
                }
                Ownership::Lost { partition, lease, reason } => {
                    // A loss of a lease the core does not serve under (a stale one: the
                    // partition was taken again since) is not this core's; one that comes
                    // before its take is remembered, and refuses the take.
                    let ours = |c: &Core| c.partition == partition && c.lease.is_none_or(|l| l == lease);
                    let core = self.cores.get(usize::from(partition)).and_then(Option::as_ref);
                    if core.is_some_and(ours) || self.leaving.iter().any(ours) {
                        self.stop_core(now, partition, Stop::Lost(reason));
                    } else {
                        if self.lost_leases.len() >= LOST_REMEMBERED {
                            self.lost_leases.pop_front();
                        }
                        self.lost_leases.push_back((partition, lease));
                    }
                }
            }
        }
    }

    fn take(&mut self, now: Now, partition: PartitionId, lease: u64, store: Store, state: State) {
        let p = usize::from(partition);
        if p >= self.cores.len() || self.stopping {
            // Dropped: its lease is released at once.
            warn!(partition, "partition not taken: {}", if self.stopping { "stopping" } else { "out of range" });
            return;
        }
        if self.lost_leases.contains(&(partition, lease)) {
            // Lost before the loop saw it taken: dropped, nothing served on it.
            warn!(partition, lease, "partition not taken: its lease was lost already");
            return;
        }
        if self.cores[p].is_some() || self.leaving.iter().any(|c| c.partition == partition) {
            // The membership took the lease again: the core serving (or being given back)
            // was fenced out meanwhile.
            self.stop_core(now, partition, Stop::Lost("its lease was taken again".into()));
        }
        let mut config = self.core_config.clone();
        config.partitions.index = partition;
        let (users, rooms) = (state.accounts().user_count(), state.rooms().len());
        let core = os_seed()
            .and_then(|seed| {
                Server::restore(config, seed, state, now)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            })
            .and_then(|server| Core::start(server, store, self.commit, self.hub.sender().waker()));
        let mut core = match core {
            Ok(core) => core,
            Err(e) => {
                error!(partition, "partition not served: its core cannot start: {e}");
                return;
            }
        };
        if let Some(mail) = &self.mail {
            mail.own(&core);
        }
        info!(partition, lease, users, rooms, "partition served: its core started");
        core.lease = Some(lease);
        self.cores[p] = Some(core);
        self.served.add(partition);
        self.host(partition, lease);
    }

    /// Takes the other nodes' connections relayed to `partition`, served
    /// here under its lease of token `lease` (a split state over NATS): a
    /// relay host of its own, replacing one of another lease.
    pub(super) fn host(&mut self, partition: PartitionId, lease: u64) {
        let Some(relay) = self.relay.clone() else { return };
        let stop = Arc::clone(&self.stop);
        match RelayHost::start(relay, partition, lease, self.hub.sender(), move || stop.load(Ordering::SeqCst)) {
            Ok(host) => {
                if let Some(old) = self.hosts.insert(partition, host) {
                    drop_off_loop(old);
                }
            }
            Err(e) => warn!(partition, "relay host not started ({e}): no other node relays to this partition"),
        }
    }

    /// Stops `partition`'s core as `how` says (see the module docs). A
    /// core given back leaves in the background: its sessions are closed
    /// now, its last turns are committed and acted on by
    /// [`leaving_turn`](Self::leaving_turn) while the loop goes on, and it is
    /// retired once nothing of it is held.
    pub(super) fn stop_core(&mut self, now: Now, partition: PartitionId, how: Stop) {
        let Some(mut core) = self.cores.get_mut(usize::from(partition)).and_then(Option::take) else {
            // A core being given back whose lease was lost meanwhile: nothing more of it is acted on.
            if let Stop::Lost(reason) = how
                && let Some(i) = self.leaving.iter().position(|c| c.partition == partition)
            {
                let core = self.leaving.swap_remove(i);
                self.retire_core(now, core, &reason);
            }
            return;
        };
        self.served.remove(partition);
        if let Some(mail) = &self.mail {
            mail.disown(partition);
        }
        // Nothing new is relayed to it from here (this node's edge still hears
        // its own host until that one says it leaves).
        self.owners_heard &= !crate::relay::bells::bit(partition);
        // A partition given back keeps its host until its core is retired (its
        // last answers and closes reach relayed clients too); a lost one's goes now.
        if let Some(host) = self.hosts.remove(&partition) {
            match how {
                Stop::GiveBack => self.leaving_hosts.push((partition, host)),
                Stop::Lost(_) => drop_off_loop(host),
            }
        }
        // No job of this core ever reaches a later one: the jobs of its last turns are dropped.
        self.workers.retire(partition);
        match how {
            Stop::GiveBack => {
                core.server.close_all(now, MOVED);
                info!(partition, "giving the partition back: its sessions closed, its last commits under way");
                self.leaving.push(core);
            }
            Stop::Lost(reason) => self.retire_core(now, core, &reason),
        }
    }

    /// Drains the cores being given back: their last turns committed and
    /// acted on; one with nothing held any more is retired (its store
    /// dropped, which releases its lease at once). Whether anything moved.
    pub(super) fn leaving_turn(&mut self, now: Now) -> bool {
        let mut busy = false;
        let mut i = 0;
        while i < self.leaving.len() {
            let core = &mut self.leaving[i];
            let partition = core.partition;
            let quiet = core.turn(None);
            match core.released() {
                Ok(released) => {
                    busy |= !quiet || !released.is_empty();
                    self.act_released(now, usize::from(partition), released);
                }
                Err(e) => {
                    let core = self.leaving.swap_remove(i);
                    self.retire_core(now, core, &format!("its last commit failed while given back: {e}"));
                    busy = true;
                    continue;
                }
            }
            if self.leaving[i].is_idle() {
                let core = self.leaving.swap_remove(i);
                self.retire_core(now, core, "given back");
                busy = true;
                continue;
            }
            i += 1;
        }
        busy
    }

    /// Commits what the cores being given back still hold and acts on it
    /// (the node is stopping), then retires them.
    pub(super) fn finish_leaving(&mut self, now: Now) {
        for mut core in std::mem::take(&mut self.leaving) {
            match core.finish() {
                Ok(last) => self.act_released(now, usize::from(core.partition), last),
                Err(e) => warn!(partition = core.partition, "giving the partition back: its last commit failed: {e}"),
            }
            self.retire_core(now, core, "given back");
        }
    }

    /// Forgets a stopped core: its sessions still mapped end (those of
    /// connections bound elsewhere) or close their connections (503), and
    /// it is dropped off the loop (its committer may wait for a store that
    /// went away, the likely cause of a lost lease; whatever it still
    /// commits is fenced, or durable and never acknowledged, as after a
    /// crash; a store dropped cleanly releases its lease).
    fn retire_core(&mut self, now: Now, core: Core, reason: &str) {
        let partition = core.partition;
        // Its host (kept while it left) stops: it tells the edges it leaves.
        while let Some(i) = self.leaving_hosts.iter().position(|(p, _)| *p == partition) {
            drop_off_loop(self.leaving_hosts.swap_remove(i).1);
        }
        let counts = core.counts();
        self.summary.commits += counts.commits;
        self.summary.changes += counts.changes;
        let mut close: Vec<ConnId> = Vec::new();
        self.sessions.retain(|&(p, session), &mut conn| {
            if p == partition && !self.ending.remove(&(p, session)) {
                close.push(conn);
            }
            p != partition
        });
        self.ending.retain(|&(p, _)| p != partition);
        for conn in self.conns.values_mut() {
            conn.sessions.retain(|&(p, _)| p != partition);
        }
        close.sort_unstable();
        close.dedup();
        for link in close {
            self.refuse(link, confab_proto::wire::status::UNAVAILABLE, MOVED);
        }
        self.switch(now);
        info!(partition, %reason, "partition no longer served by this node");
        let dropped = std::thread::Builder::new().name("confab-core-stop".into()).spawn(move || drop(core));
        if let Err(e) = dropped {
            warn!(partition, "stopping the core on the loop: {e}");
        }
    }

    /// The partition a new connection's first session opens at: the
    /// lowest one this node serves (0 when it serves none: refused there).
    pub(super) fn first_served(&self) -> PartitionId {
        self.cores.iter().position(Option::is_some).and_then(|p| PartitionId::try_from(p).ok()).unwrap_or(0)
    }
}

/// Drops a relay host on a thread of its own: its stop tells the edges
/// (within a second), which the loop does not wait for.
fn drop_off_loop(host: RelayHost) {
    let spawned = std::thread::Builder::new().name("confab-relay-stop".into()).spawn(move || drop(host));
    if let Err(e) = spawned {
        warn!("relay host stopped on the loop: {e}");
    }
}
