//! A split state ([`SimConfig::split`](super::SimConfig::split), issue 16):
//! `P` partitions shared by `N` nodes, each node a switchboard in front of
//! the cores of the partitions whose leases it holds, over a model of the
//! shared store (a log, a lease and a fencing token per partition, the
//! membership rows, the outbox table) and a lossy, reordering doorbell bus.
//! [`SplitSim`](super::SplitSim) says what each node does; this module
//! is its machinery:
//!
//! - `mod.rs`: the nodes and cores, and the client-facing side (a
//!   connection to a node, its bytes, its end);
//! - `node.rs`: a node's switchboard outputs, its cores' turns (committed
//!   to the partition's store under the core's token before their frames
//!   leave), the 421 and 503 closes;
//! - `shares.rs`: beats, leases, takes and give-backs, and the faults
//!   (crash, pause, store cut, bus cut);
//! - `mail.rs`: the outbox table, doorbells and the carrier.
//!
//! Every event of a node's incarnation (its connections' bytes, its cores'
//! jobs, its doorbells) is kept while the node is paused and handed to it
//! in order when it resumes, as for the single owner of cluster mode.

mod mail;
mod node;
mod shares;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use confab_proto::server::{PartitionId, Partitions, ServerConfig, State, Switchboard};
use confab_proto::{Server, SessionId};

use super::config::SplitSim;
use super::net::{Dir, End, LinkId};
use super::queue::Ev;
use super::store::SimStore;
use super::{ClientId, Invariant, Sim};

/// What happens to a node's incarnation (kept while it is paused, but its
/// resumption and the end of a store cut).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeEv {
    /// A doorbell for this partition reaches the node.
    Bell(PartitionId),
    /// The node's carrier reads this partition's mail (rung by a commit of its own).
    Carry(PartitionId),
    /// The node's pause ends.
    Resume,
    /// The node's store cut ends.
    CutEnd,
}

/// A node's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeTimer {
    /// Its beat (leases, shares).
    Beat(usize),
    /// Its carrier's catch-up poll.
    Poll(usize),
    /// A core's timer.
    Core(usize, PartitionId),
}

/// A lease as the store holds it.
#[derive(Debug, Clone, Copy)]
struct Lease {
    node: usize,
    token: u64,
    expires: Duration,
}

/// One partition's core on a node, under a lease token.
///
/// A core whose node last renewed its lease nearly a lease ago (a quarter
/// renewal period before it could expire: the node was paused) is in
/// doubt: a frame for it closes its connection 503 instead of being
/// answered from what may be an old state, until a beat renews the lease
/// or finds it lost (`LeaseWatch::in_doubt` in the server).
#[derive(Debug)]
struct Core {
    server: Server,
    /// Unique in the run: its jobs name it.
    run: u64,
    token: u64,
    /// When this node last renewed its lease (its take, or a beat).
    renewed: Duration,
    sessions: HashMap<SessionId, LinkId>,
    deadline: Option<Duration>,
}

/// One node.
#[derive(Debug)]
struct Node {
    /// Its incarnation (its connections and events name it); 0 while down.
    epoch: u64,
    board: Switchboard<LinkId>,
    cores: BTreeMap<PartitionId, Core>,
    /// Each connection's sessions: (partition, core run, session).
    conns: BTreeMap<LinkId, Vec<(PartitionId, u64, SessionId)>>,
    /// Sessions the switchboard closed (their core's close is not the connection's).
    ending: BTreeSet<(u64, SessionId)>,
    /// Paused: the events it will process when it resumes.
    paused: Option<Vec<Ev>>,
    store_cut: bool,
    next_beat: Duration,
    next_poll: Duration,
    /// Its membership row's expiry.
    row_expires: Duration,
}

impl Node {
    fn down(parts: Partitions, config: &ServerConfig) -> Node {
        Node {
            epoch: 0,
            board: Switchboard::new(parts, config.limits, config.max_deferred_bytes),
            cores: BTreeMap::new(),
            conns: BTreeMap::new(),
            ending: BTreeSet::new(),
            paused: None,
            store_cut: false,
            next_beat: Duration::MAX,
            next_poll: Duration::MAX,
            row_expires: Duration::ZERO,
        }
    }

    fn runs(&self) -> bool {
        self.epoch != 0 && self.paused.is_none()
    }

    /// The core of `run`.
    fn core_of_run(&self, run: u64) -> Option<PartitionId> {
        self.cores.iter().find(|(_, c)| c.run == run).map(|(p, _)| *p)
    }

    /// `link`'s session at `partition`, if that core is the one it was opened at.
    fn session_at(&self, link: LinkId, partition: PartitionId) -> Option<SessionId> {
        let run = self.cores.get(&partition)?.run;
        self.conns.get(&link)?.iter().find(|(p, r, _)| *p == partition && *r == run).map(|(_, _, s)| *s)
    }
}

/// The split state's nodes, stores, bus and outbox. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Split {
    conf: SplitSim,
    parts: Partitions,
    nodes: Vec<Node>,
    /// Per partition: its log and lease token (fencing every commit).
    stores: Vec<SimStore>,
    leases: Vec<Option<Lease>>,
    /// `(source, target, seq)` -> item: committed, not applied by the target yet.
    outbox: BTreeMap<(PartitionId, PartitionId, u64), Bytes>,
    /// Cut bus links (the lower node first).
    bus_cut: BTreeSet<(usize, usize)>,
    next_id: u64,
}

impl Split {
    pub(crate) fn new(conf: SplitSim, config: &ServerConfig) -> Split {
        let parts = Partitions { index: 0, count: conf.partitions };
        let stores = (0..conf.partitions)
            .map(|index| {
                SimStore::new(&ServerConfig { partitions: Partitions { index, count: parts.count }, ..config.clone() })
            })
            .collect();
        Split {
            conf,
            parts,
            nodes: (0..conf.nodes).map(|_| Node::down(parts, config)).collect(),
            stores,
            leases: vec![None; usize::from(conf.partitions)],
            outbox: BTreeMap::new(),
            bus_cut: BTreeSet::new(),
            next_id: 1,
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The node of incarnation `epoch`.
    fn node_of(&self, epoch: u64) -> Option<usize> {
        if epoch == 0 {
            return None;
        }
        self.nodes.iter().position(|n| n.epoch == epoch)
    }

    /// The node running the core of `run`.
    fn node_of_run(&self, run: u64) -> Option<(usize, PartitionId)> {
        self.nodes.iter().enumerate().find_map(|(i, n)| n.core_of_run(run).map(|p| (i, p)))
    }

    /// Every partition's committed state.
    pub(crate) fn states(&self) -> Vec<&State> {
        self.stores.iter().map(|s| s.memory().state()).collect()
    }

    /// Whether every partition is served by a running node under its
    /// lease, every node runs, and no mail waits.
    pub(crate) fn at_rest(&self) -> bool {
        self.outbox.is_empty()
            && self.nodes.iter().all(|n| n.runs() && !n.store_cut)
            && (0..self.parts.count).all(|p| self.holder(p).is_some())
    }

    /// What is not at rest, for a report.
    pub(crate) fn unrest(&self) -> String {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.runs() || n.store_cut {
                out.push(format!("node {i} (epoch {}, paused {}, cut {})", n.epoch, n.paused.is_some(), n.store_cut));
            }
        }
        for p in 0..self.parts.count {
            if self.holder(p).is_none() {
                let cores: Vec<String> = self
                    .nodes
                    .iter()
                    .enumerate()
                    .filter_map(|(i, n)| n.cores.get(&p).map(|c| format!("node {i} token {}", c.token)))
                    .collect();
                out.push(format!("partition {p} unserved (lease {:?}, cores {cores:?})", self.leases[usize::from(p)]));
            }
        }
        if !self.outbox.is_empty() {
            let first: Vec<String> = self
                .outbox
                .keys()
                .take(4)
                .map(|&(from, to, seq)| {
                    let cursor =
                        self.holder(to).map(|n| self.nodes[n].cores[&to].server.state().mail().applied_from(from));
                    let stored = self.stores[usize::from(to)].memory().state().mail().applied_from(from);
                    format!("{from}->{to}#{seq} (cursor {cursor:?}, stored {stored})")
                })
                .collect();
            out.push(format!("{} mail items waiting: {}", self.outbox.len(), first.join(" ")));
        }
        out.join(", ")
    }

    /// The node serving `p` under its current lease.
    fn holder(&self, p: PartitionId) -> Option<usize> {
        let lease = self.leases[usize::from(p)]?;
        let node = &self.nodes[lease.node];
        node.cores.get(&p).filter(|c| c.token == lease.token && node.epoch != 0).map(|_| lease.node)
    }

    /// The earliest timer of a running node.
    pub(crate) fn next_timer(&self) -> Option<(Duration, NodeTimer)> {
        let mut best: Option<(Duration, NodeTimer)> = None;
        let mut consider = |t: Duration, who: NodeTimer| {
            if best.is_none_or(|(b, _)| t < b) {
                best = Some((t, who));
            }
        };
        for (i, n) in self.nodes.iter().enumerate().filter(|(_, n)| n.runs()) {
            consider(n.next_beat, NodeTimer::Beat(i));
            consider(n.next_poll, NodeTimer::Poll(i));
            for (p, c) in &n.cores {
                if let Some(t) = c.deadline {
                    consider(t, NodeTimer::Core(i, *p));
                }
            }
        }
        best
    }

    /// Commits fenced, summed over the partitions.
    pub(crate) fn fenced(&self) -> u64 {
        self.stores.iter().map(|s| s.fenced).sum()
    }

    /// Commits, summed over the partitions.
    pub(crate) fn commits(&self) -> u64 {
        self.stores.iter().map(|s| s.memory().commits()).sum()
    }
}

impl Sim {
    /// Split state: the node serving `partition` under its current lease
    /// (`None` while nobody does, or without a split state).
    #[must_use]
    pub fn serving(&self, partition: PartitionId) -> Option<usize> {
        self.split.as_ref()?.holder(partition)
    }

    /// Split state: the home partition of a user (0 without a split state).
    #[must_use]
    pub fn home_of(&self, id: ClientId) -> PartitionId {
        self.split.as_ref().map_or(0, |s| s.parts.home_of_user(self.name(id)))
    }

    /// Split state: node `n` dies now (see [`SimConfig::split`](super::SimConfig::split)).
    pub fn kill_node(&mut self, n: usize) {
        if self.split.is_some() {
            self.crash_node(n);
        }
    }

    fn sp(&mut self) -> &mut Split {
        self.split.as_mut().expect("a split state")
    }

    fn sp_ref(&self) -> &Split {
        self.split.as_ref().expect("a split state")
    }

    /// Starts every node: the first takes every partition at its first
    /// beat, the others join and take their shares from it.
    pub(crate) fn split_start(&mut self) {
        let n = self.sp_ref().nodes.len();
        for i in 0..n {
            self.node_start(i);
        }
    }

    /// Where an event goes in a split state: `None` if it was kept for a
    /// paused node (or is of no node now), `Some` to be processed now.
    pub(crate) fn split_route(&mut self, ev: Ev) -> Option<Ev> {
        let node = match &ev {
            Ev::Arrive { link, dir: Dir::Up, .. } | Ev::Detect { link, end: End::Server } => {
                self.net.get(*link).and_then(|l| self.sp_ref().node_of(l.epoch))
            }
            Ev::Job { epoch, .. } => self.sp_ref().node_of_run(*epoch).map(|(n, _)| n),
            Ev::Node { node, ev: NodeEv::Bell(_) | NodeEv::Carry(_) } => self.sp_ref().node_of(*node),
            _ => return Some(ev),
        };
        let Some(node) = node else { return Some(ev) };
        match self.sp().nodes[node].paused.as_mut() {
            Some(kept) => {
                kept.push(ev);
                None
            }
            None => Some(ev),
        }
    }

    /// An event of a node's incarnation.
    pub(crate) fn node_event(&mut self, epoch: u64, ev: NodeEv) {
        let Some(n) = self.sp_ref().node_of(epoch) else { return };
        match ev {
            NodeEv::Bell(p) | NodeEv::Carry(p) => self.carry(n, p),
            NodeEv::Resume => self.node_resume(n),
            NodeEv::CutEnd => {
                if std::mem::take(&mut self.sp().nodes[n].store_cut) {
                    self.trace.note(self.elapsed, &format!("node {n} reaches the store again"));
                }
            }
        }
    }

    /// A node's timer fires.
    pub(crate) fn node_timer(&mut self, timer: NodeTimer) {
        match timer {
            NodeTimer::Beat(n) => self.beat(n),
            NodeTimer::Poll(n) => {
                let poll = self.sp_ref().conf.poll;
                self.sp().nodes[n].next_poll = self.elapsed + poll;
                let served: Vec<PartitionId> = self.sp_ref().nodes[n].cores.keys().copied().collect();
                for p in served {
                    self.carry(n, p);
                }
            }
            NodeTimer::Core(n, p) => {
                let now = self.now();
                let Some(core) = self.sp().nodes[n].cores.get_mut(&p) else { return };
                core.deadline = None;
                core.server.handle_timeout(now);
                self.trace.step(self.elapsed, &[n as u8, p], || format!("node {n} core {p} timeout"));
                self.drain_core(n, p);
                self.run_node(n);
            }
        }
    }

    /// A client connects to the node its list points at, if it runs (else
    /// it tries the next one later). True if connected.
    pub(crate) fn split_connect(&mut self, id: ClientId) -> bool {
        let h = &self.hosts[id.0];
        let n = h.node % self.sp_ref().nodes.len();
        let node = &self.sp_ref().nodes[n];
        if h.partitioned || !node.runs() {
            self.hosts[id.0].node = n + 1;
            self.schedule_reconnect(id);
            return false;
        }
        let epoch = node.epoch;
        let latency = match h.latency {
            Some(l) => l,
            None => self.config.latency.sub_span(&mut self.rng),
        };
        let held = h.held;
        let link = self.net.open(id, SessionId(0), epoch, latency, self.elapsed);
        if let Some(l) = self.net.get_mut(link) {
            l.held = held;
        }
        self.hosts[id.0].link = Some(link);
        self.stats.connects += 1;
        self.trace
            .step(self.elapsed, &link.0.to_le_bytes(), || format!("client {} connects to node {n}: {link}", id.0));
        let split = self.sp();
        let first = split.nodes[n].cores.keys().next().copied().unwrap_or(0);
        split.nodes[n].conns.insert(link, Vec::new());
        split.nodes[n].board.open_at(link, first);
        self.run_node(n);
        let now = self.now();
        self.hosts[id.0].client.connected(now);
        self.drain_client(id);
        true
    }

    /// A password-hash job of a core's `run` finished.
    pub(crate) fn split_job_done(&mut self, run: u64, job: confab_proto::server::Job) {
        let Some((n, p)) = self.sp_ref().node_of_run(run) else { return };
        let now = self.now();
        let Some(core) = self.sp().nodes[n].cores.get_mut(&p) else { return };
        let result = job.run();
        core.server.handle_work(now, result);
        self.trace.step(self.elapsed, &job.id.0.to_le_bytes(), || format!("node {n} core {p}: job {:?} done", job.id));
        self.drain_core(n, p);
        self.run_node(n);
    }

    /// Bytes reach a node.
    pub(crate) fn split_input(&mut self, link: LinkId, bytes: &Bytes) {
        let Some(l) = self.net.get(link) else { return };
        if !l.server_open {
            return;
        }
        let Some(n) = self.sp_ref().node_of(l.epoch) else { return };
        self.sp().nodes[n].board.input(link, bytes.clone());
        self.run_node(n);
    }

    /// A node's side of `link` learned the connection is gone.
    pub(crate) fn split_lost(&mut self, link: LinkId) {
        let Some(l) = self.net.get_mut(link) else { return };
        if !l.server_open {
            return;
        }
        l.server_open = false;
        let epoch = l.epoch;
        self.net.gc(link);
        let Some(n) = self.sp_ref().node_of(epoch) else { return };
        self.trace.step(self.elapsed, &link.0.to_le_bytes(), || format!("node {n} loses {link}"));
        self.sp().nodes[n].board.close(link);
        self.run_node(n);
    }

    /// Checks, after the final drain, that each partition's core holds
    /// exactly what its store committed, and that no mail was left.
    pub(crate) fn split_check(&mut self, settled: bool) {
        let mut found = Vec::new();
        let split = self.sp_ref();
        for p in 0..split.parts.count {
            match split.holder(p) {
                None => found.push((Invariant::Durability, format!("partition {p} served by no node at the end"))),
                Some(n) => {
                    let core = &split.nodes[n].cores[&p];
                    if core.server.state() != split.stores[usize::from(p)].memory().state() {
                        found.push((
                            Invariant::Durability,
                            format!("partition {p}: node {n}'s core differs from the committed store"),
                        ));
                    }
                }
            }
            if let Some((newer, older)) = split.stores[usize::from(p)].two_owners() {
                found.push((
                    Invariant::SingleOwner,
                    format!("partition {p}: a commit under token {older} after one under {newer}"),
                ));
            }
        }
        if settled && !split.outbox.is_empty() {
            let keys: Vec<_> = split.outbox.keys().take(8).collect();
            found.push((Invariant::Mail, format!("{} mail items never applied: {keys:?}", split.outbox.len())));
        }
        for (invariant, detail) in found {
            self.violate(invariant, detail);
        }
    }
}
