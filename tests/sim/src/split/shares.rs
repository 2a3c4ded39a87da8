//! The shares of the partitions (`server/src/shares.rs`, `Fleet`), and
//! the faults of a split state.
//!
//! Every running node beats every renewal period, unless it is cut from
//! the store:
//!
//! 1. a core whose lease now has another token (taken by another node
//!    while this one slept or was cut off) stops;
//! 2. its membership row and the leases it still holds are renewed;
//! 3. the live nodes (rows not expired), sorted, share the partitions:
//!    a quota of `P / N`, the first `P mod N` one more;
//! 4. above its quota it gives the last partition it holds back (a clean
//!    release: its sessions closed 503 "partition moved"); below, it takes
//!    free or expired partitions up to its quota, in an order starting
//!    after the quotas of the nodes before it, restoring each core from
//!    the partition's store under a new token.

use std::time::Duration;

use confab_proto::Server;
use confab_proto::server::{PartitionId, Partitions, ServerConfig, Switchboard};
use rand::RngExt as _;

use super::super::Sim;
use super::super::config::Span;
use super::super::queue::Ev;
use super::{Core, Lease, NodeEv};

impl Sim {
    /// Node `n` starts (or comes back): a new incarnation, no partition
    /// yet; it beats at once.
    pub(crate) fn node_start(&mut self, n: usize) {
        let (parts, config) = (self.sp_ref().parts, self.config.server.clone());
        let epoch = self.sp().id();
        let (lease, poll) = (self.sp_ref().conf.lease, self.sp_ref().conf.poll);
        let at = self.elapsed;
        let node = &mut self.sp().nodes[n];
        node.epoch = epoch;
        node.board = Switchboard::new(parts, config.limits, config.max_deferred_bytes);
        node.next_beat = at;
        node.next_poll = at + poll;
        node.row_expires = at + lease;
        self.trace.note(self.elapsed, &format!("node {n} starts (incarnation {epoch})"));
    }

    /// Node `n` beats: see the module docs.
    pub(crate) fn beat(&mut self, n: usize) {
        let conf = self.sp_ref().conf;
        self.sp().nodes[n].next_beat = self.elapsed + conf.renew_every();
        if self.sp_ref().nodes[n].store_cut {
            // No renewal gets through: a core whose lease would end before
            // the next attempt stops (its keeper gives it up before another
            // node may take it).
            let now = self.elapsed;
            let split = self.sp_ref();
            let ending: Vec<PartitionId> = split.nodes[n]
                .cores
                .iter()
                .filter(|(p, c)| {
                    split.leases[usize::from(**p)]
                        .is_none_or(|l| l.token != c.token || l.expires <= now + conf.renew_every())
                })
                .map(|(p, _)| *p)
                .collect();
            for p in ending {
                self.stop_core(n, p, "no renewal of its lease got through for a whole lease");
            }
            return;
        }
        // 1. The leases lost.
        let lost: Vec<PartitionId> = {
            let split = self.sp_ref();
            split.nodes[n]
                .cores
                .iter()
                .filter(|(p, c)| split.leases[usize::from(**p)].is_none_or(|l| l.node != n || l.token != c.token))
                .map(|(p, _)| *p)
                .collect()
        };
        for p in lost {
            self.stop_core(n, p, "its lease was taken by another node");
        }
        // 2. Renewals.
        let now = self.elapsed;
        let split = self.sp();
        split.nodes[n].row_expires = now + conf.lease;
        for (p, core) in &mut split.nodes[n].cores {
            core.renewed = now;
            if let Some(lease) = split.leases[usize::from(*p)].as_mut() {
                lease.expires = now + conf.lease;
            }
        }
        // 3. The plan.
        let live: Vec<usize> =
            (0..split.nodes.len()).filter(|&m| split.nodes[m].epoch != 0 && split.nodes[m].row_expires > now).collect();
        let count = usize::from(split.parts.count);
        let quota = |rank: usize| count / live.len() + usize::from(rank < count % live.len());
        let Some(rank) = live.iter().position(|&m| m == n) else { return };
        let quota_here = quota(rank);
        let start: usize = (0..rank).map(quota).sum();
        let held = split.nodes[n].cores.len();
        // 4. Give back or take.
        if held > quota_here {
            if let Some(&p) = split.nodes[n].cores.keys().next_back() {
                self.give_back(n, p);
            }
            return;
        }
        let free: Vec<PartitionId> = (0..count)
            .map(|i| ((start + i) % count) as PartitionId)
            .filter(|&p| {
                split.leases[usize::from(p)].is_none_or(|l| l.expires <= now) && !split.nodes[n].cores.contains_key(&p)
            })
            .take(quota_here - held)
            .collect();
        for p in free {
            self.take(n, p);
        }
    }

    /// Node `n` takes partition `p`: a new token, a core restored from the store.
    fn take(&mut self, n: usize, p: PartitionId) {
        let now = self.now();
        let seed: [u8; 32] = self.rng.random();
        let lease = self.sp_ref().conf.lease;
        let config = ServerConfig {
            partitions: Partitions { index: p, count: self.sp_ref().parts.count },
            ..self.config.server.clone()
        };
        let at = self.elapsed;
        let run = self.sp().id();
        let split = self.sp();
        let token = split.stores[usize::from(p)].take_lease();
        split.leases[usize::from(p)] = Some(Lease { node: n, token, expires: at + lease });
        let state = split.stores[usize::from(p)].memory().state().clone();
        let server = Server::restore(config, seed, state, now).expect("the simulation's server configuration is valid");
        let core = Core { server, run, token, renewed: at, sessions: Default::default(), deadline: None };
        split.nodes[n].cores.insert(p, core);
        self.stats.takes += 1;
        self.trace.note(self.elapsed, &format!("node {n} takes partition {p} (token {token})"));
        self.drain_core(n, p);
        self.carry(n, p);
    }

    /// Node `n` gives `p` back (above its quota): a clean release; its
    /// sessions are closed 503 "partition moved".
    fn give_back(&mut self, n: usize, p: PartitionId) {
        let Some(core) = self.sp().nodes[n].cores.remove(&p) else { return };
        self.sp().leases[usize::from(p)] = None;
        self.stats.give_backs += 1;
        self.trace.note(self.elapsed, &format!("node {n} gives partition {p} back"));
        self.close_sessions_of(n, &core, "partition moved to another node: reconnect");
    }

    /// Node `n` dies: its cores and connections are gone, its leases lapse
    /// at their expiry. It comes back after [`SimConfig::server_downtime`]
    /// while the scenario runs.
    ///
    /// [`SimConfig::server_downtime`]: super::super::SimConfig::server_downtime
    pub(crate) fn crash_node(&mut self, n: usize) {
        let epoch = self.sp_ref().nodes[n].epoch;
        if epoch == 0 {
            return;
        }
        self.stats.crashes += 1;
        self.trace.note(self.elapsed, &format!("node {n} crashed"));
        let (parts, config) = (self.sp_ref().parts, self.config.server.clone());
        self.sp().nodes[n] = super::Node::down(parts, &config);
        self.kill_links(|e| e == epoch);
        if self.auto_restart {
            let at = self.elapsed + self.config.server_downtime.draw(&mut self.rng);
            self.agenda.push(at, Ev::NodeRestart(n));
        }
    }

    /// Node `n` comes back, if it is down.
    pub(crate) fn node_restart(&mut self, n: usize) {
        if self.sp_ref().nodes[n].epoch == 0 {
            self.stats.restarts += 1;
            self.node_start(n);
        }
    }

    /// Node `n` pauses for `d`: nothing of it runs meanwhile (a stopped
    /// process, a frozen machine). Its leases lapse if it sleeps past them,
    /// and it resumes as it was, serving from memory until a commit is
    /// fenced or a beat tells it.
    pub(crate) fn pause_node(&mut self, n: usize, d: Duration) {
        let node = &mut self.sp().nodes[n];
        if !node.runs() {
            return;
        }
        node.paused = Some(Vec::new());
        let epoch = node.epoch;
        self.stats.pauses += 1;
        self.trace.note(self.elapsed, &format!("fault: node {n} pauses for {d:?}"));
        self.agenda.push(self.elapsed + d, Ev::Node { node: epoch, ev: NodeEv::Resume });
    }

    /// Node `n` resumes: what it missed is handed to it in order. Its
    /// lease keepers' renewals, overdue, go out at once: it beats after a
    /// round trip to the store (1 to 20 ms), and until then its cores act
    /// on what they hold in memory.
    pub(crate) fn node_resume(&mut self, n: usize) {
        let Some(missed) = self.sp().nodes[n].paused.take() else { return };
        self.trace.note(self.elapsed, &format!("node {n} resumes"));
        let at = self.elapsed + Span::ms(1, 20).draw(&mut self.rng);
        let node = &mut self.sp().nodes[n];
        node.next_beat = at;
        for ev in missed {
            self.agenda.push(self.elapsed, ev);
        }
    }

    /// Node `n` is cut from the store for `d`: its commits fail (each core
    /// that tries one stops), its carrier reads nothing, its beats renew
    /// nothing.
    pub(crate) fn cut_store(&mut self, n: usize, d: Duration) {
        let node = &mut self.sp().nodes[n];
        if !node.runs() || node.store_cut {
            return;
        }
        node.store_cut = true;
        let epoch = node.epoch;
        self.stats.store_cuts += 1;
        self.trace.note(self.elapsed, &format!("fault: node {n} cut from the store for {d:?}"));
        self.agenda.push(self.elapsed + d, Ev::Node { node: epoch, ev: NodeEv::CutEnd });
    }

    /// The doorbell bus between nodes `a` and `b` is cut for `d`.
    pub(crate) fn cut_bus(&mut self, a: usize, b: usize, d: Duration) {
        if a == b || !self.sp().bus_cut.insert((a.min(b), a.max(b))) {
            return;
        }
        self.stats.bus_cuts += 1;
        self.trace.note(self.elapsed, &format!("fault: doorbells between nodes {a} and {b} cut for {d:?}"));
        self.agenda.push(self.elapsed + d, Ev::BusHeal(a.min(b), a.max(b)));
    }

    /// The doorbell bus between two nodes heals.
    pub(crate) fn heal_bus(&mut self, a: usize, b: usize) {
        if self.sp().bus_cut.remove(&(a, b)) {
            self.trace.note(self.elapsed, &format!("doorbells between nodes {a} and {b} heal"));
        }
    }

    /// One of a split state's own faults, in proportion to their rates: a
    /// random node paused or cut from the store, or the bus between two
    /// random nodes cut, for a pause's length.
    pub(crate) fn split_fault(&mut self) {
        let conf = self.sp_ref().conf;
        let nodes = self.sp_ref().nodes.len();
        let n = self.rng.random_range(0..nodes);
        let d = conf.pause.draw(&mut self.rng);
        let r = self.rng.random::<f64>() * (conf.pause_rate + conf.store_cut_rate + conf.bus_cut_rate);
        if r < conf.pause_rate {
            self.pause_node(n, d);
        } else if r < conf.pause_rate + conf.store_cut_rate {
            self.cut_store(n, d);
        } else {
            let m = self.rng.random_range(0..nodes);
            self.cut_bus(n, m, d);
        }
    }

    /// A random running node crashes (the scenario's `crash` fault).
    pub(crate) fn crash_random_node(&mut self) {
        let nodes = self.sp_ref().nodes.len();
        let n = self.rng.random_range(0..nodes);
        self.crash_node(n);
    }

    /// The next commit of a random running node's random core is its last:
    /// the node dies right after it (the `crash_after_commit` fault).
    pub(crate) fn crash_random_node_after_commit(&mut self) {
        let nodes = self.sp_ref().nodes.len();
        let n = self.rng.random_range(0..nodes);
        let served: Vec<PartitionId> = self.sp_ref().nodes[n].cores.keys().copied().collect();
        if served.is_empty() {
            return;
        }
        let p = served[self.rng.random_range(0..served.len())];
        self.sp().stores[usize::from(p)].arm_crash(true);
    }

    /// Settling: every node resumes, reaches the store and the bus again,
    /// and comes back if down; no crash is armed.
    pub(crate) fn split_settle(&mut self) {
        for store in &mut self.sp().stores {
            store.arm_crash(false);
        }
        self.sp().bus_cut.clear();
        let nodes = self.sp_ref().nodes.len();
        for n in 0..nodes {
            self.node_resume(n);
            self.sp().nodes[n].store_cut = false;
            self.node_restart(n);
        }
    }
}
