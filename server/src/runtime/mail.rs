//! A split state's mail in the node (docs/PARTITIONS.md, "Mail"): the
//! carrier's deliveries handed to the cores, what they applied told back,
//! and the router's OIDC lookups.
//!
//! - Each item goes to its target's core (`Server::handle_mail`). What
//!   the core applied (or had applied: a duplicate) is told back to the
//!   carrier once per round and pair of partitions, which lets it hand the
//!   next items of its window; a gap makes it hand the items again from
//!   the core's cursor (`Carrier::rewind`). The item's effects are
//!   committed with the core's next turn, and the store deletes the row in
//!   that same transaction: an item whose turn never commits is handed
//!   again to whoever owns the partition next.
//! - Each count of the rows a core's mail has waiting at its targets goes
//!   to that core (`Server::handle_mail_backlog`): a target not named has
//!   none.
//! - A core's commit that mailed another partition rings the carrier
//!   (`Core::take_ring`), which reads at once instead of at its next poll.
//! - An OIDC frame's partition ([`Switched::Resolve`]) is the home of the
//!   account its subject is bound to. The node's cores are asked first
//!   (their states hold their bindings, one made by a frame handed a moment
//!   ago included, so that two frames of one subject under two names never
//!   make two accounts); a node serving every partition needs nothing more.
//!   For a partition served elsewhere the binding is
//!   in the store: the carrier looks it up, at most `MAX_LOOKUPS` at once
//!   (503 beyond), and a lookup the store cannot answer refuses the
//!   connection (503): routed by its name instead, a subject bound under
//!   another name could be given a second account. A subject bound nowhere
//!   goes to the home of its name. A node without OIDC resolves every such
//!   frame (and every token naming no subject) to the connection's first
//!   core, served here, which refuses it as any core would.
//!
//! [`Switched::Resolve`]: confab_proto::server::Switched::Resolve

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::time::Duration;

use bytes::Bytes;
use confab_proto::Now;
use confab_proto::server::{MailOutcome, PartitionId, Partitions, oidc_home, oidc_subject_of};
use confab_transports::hub::ConnId;
use tracing::{debug, warn};

use super::Node;
use super::core::Core;
use crate::relay::RelayConfig;
use crate::relay::bells::{self, Bells, Served};
use crate::store::{Carrier, Delivery};

/// The most OIDC lookups waiting for the store at once: beyond, an OIDC
/// frame's connection is refused (503), so that forged tokens (read
/// before any signature is checked) cost the store a bounded load.
const MAX_LOOKUPS: usize = 256;

/// The carrier's items and counts waiting for the loop, at most: beyond,
/// they are dropped (the loop is stalled: an item not applied is handed
/// again at the carrier's next poll but one, and a count comes every poll),
/// so a loop stuck on one partition's commit does not make the carrier's
/// re-handing grow the node's memory.
const QUEUE: usize = 16 * crate::store::WINDOW as usize;

/// Hands `d` to the loop: an item or a count to `items` unless it is full,
/// a lookup's answer to `answers` always (a frame waits for it); whether
/// it was handed.
fn hand(items: &SyncSender<Delivery>, answers: &Sender<Delivery>, d: Delivery) -> bool {
    match d {
        Delivery::Subject { .. } => answers.send(d).is_ok(),
        d => items.try_send(d).is_ok(),
    }
}

/// The node's side of the mail carrier.
pub(super) struct MailSide {
    /// The doorbells between nodes, if NATS is configured. Dropped before
    /// the carrier (fields drop in order): its thread holds a ringer of the
    /// carrier's, whose thread ends only once every ringer is gone.
    bells: Option<Bells>,
    carrier: Carrier,
    /// The partitions this node serves.
    served: Served,
    /// Items and counts, at most [`QUEUE`].
    deliveries: Receiver<Delivery>,
    /// The lookups' answers.
    answers: Receiver<Delivery>,
    /// OIDC frames waiting for the store, by lookup tag: the connection,
    /// the switchboard's ticket and the token.
    lookups: HashMap<u64, (ConnId, u64, Bytes)>,
    next_tag: u64,
}

impl MailSide {
    /// Starts the carrier on the store at `url` of a state split into
    /// `count` partitions, polling every `every`; each delivery wakes the
    /// loop with `waker`. It carries the mail of the cores it is given
    /// ([`own`](Self::own)).
    /// With `bells`, a commit's mail for a partition not in `served` rings
    /// that partition's doorbell, and a doorbell of one in `served` rings
    /// the carrier.
    pub(super) fn start(
        url: &str,
        every: Duration,
        count: u8,
        waker: Arc<mio::Waker>,
        bells: Option<RelayConfig>,
        served: &Served,
    ) -> io::Result<MailSide> {
        let (tx, deliveries) = mpsc::sync_channel(QUEUE);
        let (answer, answers) = mpsc::channel();
        let carrier = Carrier::start(url, count, every, move |d| {
            if hand(&tx, &answer, d) {
                let _ = waker.wake();
            }
        })
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let bells = match bells {
            Some(config) => {
                let ringer = carrier.ringer();
                Some(Bells::start(config, served.clone(), move || ringer.ring())?)
            }
            None => None,
        };
        Ok(MailSide {
            carrier,
            bells,
            served: served.clone(),
            deliveries,
            answers,
            lookups: HashMap::new(),
            next_tag: 1,
        })
    }

    /// Carries `core`'s mail from now on, from its cursors.
    pub(super) fn own(&self, core: &Core) {
        let count = core.server.config().partitions.count;
        let cursors =
            (0..count).filter(|&s| s != core.partition).map(|s| (s, core.server.mail_applied_from(s))).collect();
        self.carrier.own(core.partition, cursors);
    }

    /// Stops carrying `partition`'s mail (its core stopped here).
    pub(super) fn disown(&self, partition: PartitionId) {
        self.carrier.disown(partition);
    }

    /// A core's commit mailed the partitions `targets` (as bits,
    /// [`bells::bit`]): this node's carrier reads now for those served
    /// here, and the others' doorbells ring.
    pub(super) fn ring(&self, targets: u64) {
        let mut local = false;
        for target in bells::partitions_of(targets) {
            if self.served.contains(target) {
                local = true;
            } else if let Some(bells) = &self.bells {
                bells.ring(target);
            }
        }
        if local {
            self.carrier.ring();
        }
    }
}

impl Node {
    /// Hands the cores what the carrier delivered since the last turn.
    pub(super) fn mail_turn(&mut self, now: Now) {
        let Some(mail) = self.mail.as_mut() else { return };
        let mut deliveries = Vec::new();
        while let Ok(d) = mail.deliveries.try_recv() {
            deliveries.push(d);
        }
        while let Ok(d) = mail.answers.try_recv() {
            deliveries.push(d);
        }
        let mut applied = BTreeSet::new();
        for delivery in deliveries {
            match delivery {
                Delivery::Mail { to, from, seq, item } => {
                    let Some(core) = self.core_mut(to) else { continue };
                    let outcome = core.server.handle_mail(now, from, seq, &item);
                    match outcome {
                        MailOutcome::Applied | MailOutcome::Duplicate => {
                            applied.insert((to, from));
                        }
                        MailOutcome::Gap { next } => {
                            debug!(to, from, seq, next, "mail past a gap: handed again from the cursor");
                            if let Some(mail) = &self.mail {
                                mail.carrier.rewind(to, from, next.saturating_sub(1));
                            }
                        }
                        MailOutcome::Misdirected => warn!(to, from, seq, "mail for no other partition: ignored"),
                    }
                }
                Delivery::Backlog { from, waiting } => {
                    let Some(core) = self.core_mut(from) else { continue };
                    let count = core.server.config().partitions.count;
                    for to in (0..count).filter(|&t| t != from) {
                        let rows = waiting.iter().find(|(t, _)| *t == to).map_or(0, |&(_, n)| n);
                        core.server.handle_mail_backlog(to, rows);
                    }
                }
                Delivery::Subject { tag, bound } => self.resolved(now, tag, bound),
            }
        }
        for (to, from) in applied {
            let Some(upto) = self.core_mut(to).map(|c| c.server.mail_applied_from(from)) else { continue };
            if let Some(mail) = &self.mail {
                mail.carrier.applied(to, from, upto);
            }
        }
    }

    /// Finds the partition of an OIDC frame (see the module docs).
    pub(super) fn resolve(&mut self, link: ConnId, token: Bytes, ticket: u64) {
        let oidc = self.core_config.oidc.is_some();
        let Some(key) = oidc_subject_of(&token).filter(|_| oidc) else {
            // No OIDC, or a token naming no subject: any core refuses it; the
            // connection's first one is served here.
            let first = self.conns.get(&link).and_then(|c| c.sessions.first()).map_or(0, |&(p, _)| p);
            self.board.resolved(link, ticket, first);
            return;
        };
        let everywhere = self.cores.iter().all(Option::is_some);
        if let Some(partition) = self.bound_here(&key) {
            self.board.resolved(link, ticket, partition);
        } else if let Some(&partition) = self.routed_subjects.get(&key) {
            // Another frame of this subject was just routed, and is not at its core yet.
            self.board.resolved(link, ticket, partition);
        } else if everywhere {
            // Every partition's bindings are in this node's cores: none.
            let partition = oidc_home(&token, self.partitions(), |_| None);
            self.routed_subjects.insert(key, partition);
            self.board.resolved(link, ticket, partition);
        } else if let Some(mail) = self.mail.as_mut()
            && mail.lookups.len() < MAX_LOOKUPS
        {
            let tag = mail.next_tag;
            mail.next_tag += 1;
            mail.lookups.insert(tag, (link, ticket, token));
            mail.carrier.subject(tag, key);
        } else {
            warn!(conn = %link, "OIDC frame refused: {MAX_LOOKUPS} lookups already wait for the store");
            self.refuse(link, 503, "too many sign-ins are waiting for the store: try again later");
        }
    }

    /// The partition of the account a core of this node bound `key` to,
    /// in its state (durable or not yet: a binding made by a frame handed
    /// a moment ago counts, so that two frames of one subject under two
    /// names never make two accounts).
    fn bound_here(&self, key: &[u8; 32]) -> Option<PartitionId> {
        self.cores
            .iter()
            .flatten()
            .find(|c| c.server.state().accounts().oidc_subject(key).is_some())
            .map(|c| c.partition)
    }

    fn partitions(&self) -> Partitions {
        self.core_config.partitions
    }

    fn resolved(&mut self, now: Now, tag: u64, bound: Result<Option<String>, String>) {
        let Some((link, ticket, token)) = self.mail.as_mut().and_then(|m| m.lookups.remove(&tag)) else { return };
        // A binding made here since the lookup was asked wins over the store's answer.
        let here = oidc_subject_of(&token).and_then(|key| self.bound_here(&key));
        match (here, bound) {
            (Some(partition), _) => self.board.resolved(link, ticket, partition),
            (None, Ok(name)) => {
                let partition: PartitionId = oidc_home(&token, self.partitions(), |_| name);
                self.board.resolved(link, ticket, partition);
            }
            (None, Err(e)) => {
                warn!(conn = %link, "OIDC subject not looked up ({e}): connection refused for now");
                self.refuse(link, 503, "the store is unreachable: try again later");
            }
        }
        self.switch(now);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use bytes::Bytes;

    use super::hand;
    use crate::store::Delivery;

    #[test]
    fn items_are_dropped_past_the_bound_and_lookup_answers_never_are() {
        let (items, items_rx) = mpsc::sync_channel(2);
        let (answers, answers_rx) = mpsc::channel();
        let item = |seq| Delivery::Mail { to: 1, from: 0, seq, item: Bytes::from_static(b"i") };
        assert!(hand(&items, &answers, item(1)));
        assert!(hand(&items, &answers, item(2)));
        assert!(!hand(&items, &answers, item(3)), "the loop is behind: dropped, handed again later");
        for tag in 0..10 {
            assert!(hand(&items, &answers, Delivery::Subject { tag, bound: Ok(None) }));
        }
        assert_eq!(items_rx.try_iter().count(), 2);
        assert_eq!(answers_rx.try_iter().count(), 10);
    }
}
