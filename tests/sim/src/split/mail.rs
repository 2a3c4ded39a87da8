//! Mail between partitions: the outbox table (`confab_outbox`), written in
//! the committing turn's transaction; doorbells (at once on the committing
//! node, over the lossy, reordering bus to the others); the carrier, which
//! hands a core the items its sources committed after its cursors, in
//! order per source, when rung or at its catch-up poll.

use confab_proto::server::{Change, MailOutcome, PartitionId};
use rand::RngExt as _;

use super::super::queue::Ev;
use super::super::{Invariant, Sim};
use super::NodeEv;

impl Sim {
    /// A commit of node `n`'s core of `p` succeeded: its mail enters and
    /// leaves the outbox table, and its targets' owners are rung.
    pub(crate) fn mail_committed(&mut self, n: usize, p: PartitionId, mail: Vec<Change>) {
        let mut targets = Vec::new();
        let mut found = Vec::new();
        let split = self.sp();
        for change in mail {
            match change {
                Change::MailOut { to, seq, item } => {
                    if split.outbox.insert((p, to, seq), item).is_some() {
                        found.push(format!("partition {p} mailed item {seq} to {to} twice"));
                    }
                    if !targets.contains(&to) {
                        targets.push(to);
                    }
                }
                Change::MailIn { from, seq } if split.outbox.remove(&(from, p, seq)).is_none() => {
                    found.push(format!("partition {p} applied item {seq} of {from}, which the outbox does not hold"));
                }
                _ => {}
            }
        }
        for detail in found {
            self.violate(Invariant::Mail, detail);
        }
        for to in targets {
            self.ring(n, to);
        }
    }

    /// Rings `to`'s doorbell: node `n`'s own carrier at once if it serves
    /// `to`, and every other running node over the bus (which loses some
    /// bells, and delays each on its own: they reorder).
    fn ring(&mut self, n: usize, to: PartitionId) {
        let conf = self.sp_ref().conf;
        let count = self.sp_ref().nodes.len();
        for m in 0..count {
            let epoch = self.sp_ref().nodes[m].epoch;
            if epoch == 0 {
                continue;
            }
            if m == n {
                if self.sp_ref().nodes[n].cores.contains_key(&to) {
                    self.agenda.push(self.elapsed, Ev::Node { node: epoch, ev: NodeEv::Carry(to) });
                }
                continue;
            }
            self.stats.bells += 1;
            let cut = self.sp_ref().bus_cut.contains(&(n.min(m), n.max(m)));
            if cut || self.rng.random_bool(conf.bell_loss) {
                self.stats.bells_lost += 1;
                continue;
            }
            let at = self.elapsed + conf.bell_delay.draw(&mut self.rng);
            self.agenda.push(at, Ev::Node { node: epoch, ev: NodeEv::Bell(to) });
        }
    }

    /// Node `n`'s carrier reads `p`'s mail (if it serves `p` and reaches
    /// the store): every source's items after the core's cursor, in order,
    /// each handed to the core and its turn drained.
    pub(crate) fn carry(&mut self, n: usize, p: PartitionId) {
        let node = &self.sp_ref().nodes[n];
        if node.store_cut || !node.cores.contains_key(&p) {
            return;
        }
        let count = self.sp_ref().parts.count;
        for from in (0..count).filter(|&s| s != p) {
            loop {
                let now = self.now();
                let split = self.sp();
                let Some(core) = split.nodes[n].cores.get_mut(&p) else { return };
                let next = core.server.state().mail().applied_from(from) + 1;
                let Some(item) = split.outbox.get(&(from, p, next)).cloned() else { break };
                let outcome = core.server.handle_mail(now, from, next, &item);
                self.trace.step(self.elapsed, &next.to_le_bytes(), || {
                    format!("node {n} core {p} gets mail {from}#{next}: {outcome:?}")
                });
                if outcome != MailOutcome::Applied {
                    self.violate(
                        Invariant::Mail,
                        format!("partition {p}: item {from}#{next} handed in order: {outcome:?}"),
                    );
                    break;
                }
                self.stats.mail_applied += 1;
                self.drain_core(n, p);
                self.run_node(n);
            }
        }
    }
}
