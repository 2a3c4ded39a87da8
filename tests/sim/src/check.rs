//! The invariants checked after a run, and the report that carries the
//! verdict.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use confab_proto::e2e::{RoomDescriptor, RoomKeys, RoomSession};
use confab_proto::server::state::ItemKind;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::Sim;
use super::ledger::{DeliveryKind, Outcome, Target};
use super::machine::room_password;
use super::net::NetStats;

/// Each room's stored history as (seq, sender, payload).
type StoredHistory = BTreeMap<String, Vec<(u64, String, Bytes)>>;

/// The properties a run must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Invariant {
    /// (a) Every private message the server acknowledged reaches its
    /// recipient exactly once, and each lane is delivered in increasing
    /// sequence order without duplicates.
    MpDelivery,
    /// (b) Every room message is eventually acknowledged, and each room's
    /// stored history is exactly the last `room_history` acknowledged
    /// messages, in sequence order.
    RoomHistory,
    /// (c) Nothing acknowledged is lost across crashes: after the final
    /// drain the running server's state equals the committed store.
    Durability,
    /// (d) The run makes progress: no runaway loop, and it settles within
    /// [`SimConfig::settle_limit`](super::SimConfig::settle_limit).
    Progress,
    /// (e) The server only ever holds sealed payloads a client sent, and
    /// every delivered payload is the one its sender sent to that recipient.
    /// In secure mode ([`SimConfig::secure`](super::SimConfig::secure)):
    /// every stored room message opens with the room's keys to a plaintext
    /// that was sent, and no client ever saw a handshake rejected, a key
    /// change or a message that did not open.
    Opacity,
    /// Nothing stays queued on the server once everyone is online and settled.
    Drained,
    /// No message reported failed to its sender is delivered anyway.
    Honesty,
    /// Protocol surprises: an unexpected error, an outcome reported twice,
    /// a client writing while disconnected.
    Protocol,
    /// A replayed item ([`SimConfig::hostile_replay`](super::SimConfig::hostile_replay))
    /// was accepted, or refused for another reason than a replay.
    Replay,
    /// A client sealed two different blobs for one conversation under the
    /// same (epoch, counter): a reused nonce (secure mode).
    NonceReuse,
    /// A client's persisted state changed in a turn that took no
    /// checkpoint: its store (a profile on disk) would miss it after a crash.
    Checkpoint,
    /// Cluster mode: a commit was written under an older lease token than
    /// one written before it (two owners committing for one partition).
    SingleOwner,
    /// A client lost its login (its tokens stopped working, so it logged in
    /// again) in a run where nobody presented a copy of its tokens: no
    /// client was restored from an old copy of its profile. Crashes after a
    /// commit, lost answers and late copies of its own requests must never
    /// cost a client its login (`refresh_keyed`, issue 16).
    KeepsLogin,
    /// Split state: a mail item between partitions was mailed twice under
    /// one number, applied twice, out of order or never (every item a
    /// partition commits is applied by its target exactly once, in order
    /// per source).
    Mail,
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which.
    pub invariant: Invariant,
    /// What happened.
    pub detail: String,
}

/// Counters of what a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Scenario actions taken.
    pub actions: u64,
    /// Commands the users made.
    pub commands: u64,
    /// Commands the client refused outright.
    pub refused_commands: u64,
    /// Failures of requests the clients made on their own (refresh, acknowledgements).
    pub internal_failures: u64,
    /// Connections opened.
    pub connects: u64,
    /// Disconnects injected.
    pub disconnects: u64,
    /// Partitions injected.
    pub partitions: u64,
    /// Holds injected.
    pub holds: u64,
    /// Latency changes injected.
    pub latency_changes: u64,
    /// Times a user went offline.
    pub offline: u64,
    /// Server crashes (all kinds).
    pub crashes: u64,
    /// Of which right after a commit, before its frames left.
    pub crashes_after_commit: u64,
    /// Server restarts.
    pub restarts: u64,
    /// Times a user lost its session and logged in again with its password.
    pub relogins: u64,
    /// Private messages acknowledged.
    pub mp_acked: u64,
    /// Room messages acknowledged.
    pub room_acked: u64,
    /// Items delivered to applications.
    pub deliveries: u64,
    /// Fresh tokens OIDC users got from the identity provider after the server refused an expired one.
    pub token_renewals: u64,
    /// Items the hostile server replayed.
    pub replays_injected: u64,
    /// Of which refused as replays by the secure client.
    pub replays_refused: u64,
    /// Of which not opened at all (the keys they were sealed under are gone).
    pub replays_unopened: u64,
    /// Sealed blobs through the nonce log (secure mode).
    pub blobs_checked: u64,
    /// Clients restored from an old copy.
    pub client_restores: u64,
    /// Answers to request ids a client restored from an old copy used again.
    pub reused_ids: u64,
    /// Turns the client machines were drained in.
    pub client_turns: u64,
    /// Of which took a checkpoint (the client's state changed).
    pub client_checkpoints: u64,
    /// Cluster mode: pauses of the owner.
    pub pauses: u64,
    /// Cluster mode: takeovers by a standby while the old owner was paused.
    pub takeovers: u64,
    /// Cluster mode: commits an old owner tried after the takeover (fenced, nothing written).
    pub fenced: u64,
    /// Cluster mode: turns an old owner wrote frames of (no change to commit) before it stopped.
    pub stale_turns: u64,
    /// Split state: partitions a node took (at its start, or expired or given back by another).
    pub takes: u64,
    /// Split state: partitions a node gave back above its quota.
    pub give_backs: u64,
    /// Split state: cores stopped because their lease was lost or their commit failed.
    pub cores_stopped: u64,
    /// Split state: connections closed 421 (a partition the node does not serve).
    pub misdirected: u64,
    /// Split state: times a node was cut from the store.
    pub store_cuts: u64,
    /// Split state: times the doorbell bus between two nodes was cut.
    pub bus_cuts: u64,
    /// Split state: doorbells rung to other nodes, and those lost.
    pub bells: u64,
    /// Split state: doorbells lost (by the bus, or a cut).
    pub bells_lost: u64,
    /// Split state: mail items applied by their target's core.
    pub mail_applied: u64,
}

/// The verdict of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed (replay with `CONFAB_SIM_SEED`).
    pub seed: u64,
    /// The preset's name.
    pub preset: &'static str,
    /// Digest of every step: equal for two runs of the same seed.
    pub digest: u64,
    /// Virtual time the run took.
    pub elapsed: Duration,
    /// Steps processed.
    pub steps: u64,
    /// Whether the final phase settled.
    pub settled: bool,
    /// What happened.
    pub stats: SimStats,
    /// Network counters.
    pub net: NetStats,
    /// Store transactions.
    pub commits: u64,
    /// Broken invariants (empty: the run passed).
    pub violations: Vec<Violation>,
    /// The trace lines, if the run kept them.
    pub trace: Option<Vec<String>>,
}

impl Report {
    /// Whether every invariant held.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// Panics with every violation (and the replay line) unless the run passed.
    pub fn assert_ok(&self) {
        assert!(self.is_ok(), "{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        writeln!(
            f,
            "seed {} ({}): {} after {:?} virtual, {} steps, digest {:016x}",
            self.seed,
            self.preset,
            if self.is_ok() { "ok" } else { "FAILED" },
            self.elapsed,
            self.steps,
            self.digest
        )?;
        writeln!(
            f,
            "  {} mp + {} room acked, {} deliveries, {} commands; {} disconnects, {} partitions, {} holds, \
             {} crashes ({} after commit), {} relogins, {} commits",
            s.mp_acked,
            s.room_acked,
            s.deliveries,
            s.commands,
            s.disconnects,
            s.partitions,
            s.holds,
            s.crashes,
            s.crashes_after_commit,
            s.relogins,
            self.commits
        )?;
        if s.pauses > 0 || s.takeovers > 0 {
            writeln!(
                f,
                "  cluster: {} pauses, {} takeovers, {} old owners' commits fenced, {} turns they served",
                s.pauses, s.takeovers, s.fenced, s.stale_turns
            )?;
        }
        if s.takes > 0 {
            writeln!(
                f,
                "  split: {} takes, {} give-backs, {} cores stopped, {} misdirected, {} store cuts, {} bus cuts, \
                 {}/{} bells lost, {} mail items applied",
                s.takes,
                s.give_backs,
                s.cores_stopped,
                s.misdirected,
                s.store_cuts,
                s.bus_cuts,
                s.bells_lost,
                s.bells,
                s.mail_applied
            )?;
        }
        for v in self.violations.iter().take(20) {
            writeln!(f, "  violated {:?}: {}", v.invariant, v.detail)?;
        }
        if self.violations.len() > 20 {
            writeln!(f, "  ... and {} more", self.violations.len() - 20)?;
        }
        if !self.is_ok() {
            writeln!(f, "simulation failed: replay with CONFAB_SIM_SEED={}", self.seed)?;
        }
        Ok(())
    }
}

impl Sim {
    /// Checks every invariant against the current state and returns the
    /// verdict. Meant for the end of a run, after [`Sim::settle`].
    pub fn report(&mut self) -> Report {
        let settled = self.settled();
        self.check_store(settled);
        self.check_mp();
        self.check_rooms(settled);
        self.check_opacity();
        self.stats.fenced = self.split.as_ref().map_or(self.store.fenced, |s| s.fenced());
        if let Some((newer, older)) = self.store.two_owners() {
            self.violate(Invariant::SingleOwner, format!("a commit under token {older} after one under {newer}"));
        }
        let queued: usize = self.states().iter().map(|s| s.lanes().queued_total()).sum();
        if settled && queued != 0 {
            self.violate(Invariant::Drained, format!("{queued} items still queued after settling"));
        }
        self.stats.deliveries = self.ledger.inboxes().map(|(_, d)| d.len() as u64).sum();
        Report {
            seed: self.config.seed,
            preset: self.config.name,
            digest: self.trace.digest(),
            elapsed: self.elapsed,
            steps: self.steps,
            settled,
            stats: self.stats,
            net: self.net.stats,
            commits: self.split.as_ref().map_or(self.store.memory().commits(), |s| s.commits()),
            violations: std::mem::take(&mut self.violations),
            trace: self.trace.lines().map(<[String]>::to_vec),
        }
    }

    /// Every room's stored history as (seq, sender, payload): the sealed
    /// bytes of plain clients; in secure mode, what they open to with the
    /// room's keys (derived from its password like a member does). A blob
    /// that does not open is reported.
    fn stored_history(&self) -> (StoredHistory, Vec<String>) {
        let mut found = Vec::new();
        let mut all = BTreeMap::new();
        for (name, room) in self.states().into_iter().flat_map(|s| s.rooms().iter()) {
            let reader = if self.config.secure {
                let descriptor = RoomDescriptor::from_bytes(&room.descriptor);
                match descriptor.and_then(|d| RoomKeys::derive(name, &room_password(name), &d)) {
                    // A reader that never seals: its epoch is irrelevant.
                    Ok(keys) => Some(RoomSession::new(keys, "", &mut StdRng::seed_from_u64(0))),
                    Err(e) => {
                        found.push(format!("{name}: room keys cannot be derived: {e}"));
                        continue;
                    }
                }
            } else {
                None
            };
            let mut entries = Vec::new();
            for e in &room.history {
                let payload = match &reader {
                    None => e.sealed.clone(),
                    Some(reader) => match reader.peek(&e.from, &e.sealed) {
                        Ok(opened) => Bytes::from(opened.plaintext),
                        Err(err) => {
                            found
                                .push(format!("{name}: stored message {} from {} does not open: {err}", e.seq, e.from));
                            continue;
                        }
                    },
                };
                entries.push((e.seq, e.from.clone(), payload));
            }
            all.insert(name.clone(), entries);
        }
        (all, found)
    }

    fn check_mp(&mut self) {
        let mut found = Vec::new();
        let mut count: HashMap<Bytes, usize> = HashMap::new();
        for (user, inbox) in self.ledger.inboxes() {
            let mut last: BTreeMap<&str, u64> = BTreeMap::new();
            for d in inbox {
                if matches!(d.kind, DeliveryKind::Room(_)) {
                    continue;
                }
                // A secure client's events carry no lane sequence number:
                // order messages by the one their sender was acknowledged with.
                let seq = match (d.seq, &d.kind) {
                    (0, DeliveryKind::Message) => match self.ledger.post(&d.sealed).map(|p| &p.outcome) {
                        Some(Outcome::Acked { seq, .. }) => *seq,
                        _ => 0,
                    },
                    (seq, _) => seq,
                };
                if seq == 0 {
                    // Unnumbered (a secure handshake, an unconfirmed message): counted below.
                } else if let Some(prev) = last.insert(&d.from, seq).filter(|prev| seq <= *prev) {
                    found.push(format!(
                        "{user} got {:?} {seq} from {} after {prev}: duplicate or out of order",
                        d.kind, d.from
                    ));
                }
                if d.kind != DeliveryKind::Message {
                    continue;
                }
                *count.entry(d.sealed.clone()).or_default() += 1;
                let text = String::from_utf8_lossy(&d.sealed);
                match self.ledger.post(&d.sealed) {
                    None => found.push(format!("{user} got {text:?}, which nobody sent")),
                    Some(p) if p.from != d.from || p.to != Target::User(user.clone()) => {
                        found.push(format!("{user} got {text:?} from {}: misrouted", d.from));
                    }
                    Some(p) => match &p.outcome {
                        Outcome::Acked { seq, .. } if d.seq != 0 && *seq != d.seq => {
                            found.push(format!("{user} got {text:?} as {}, acknowledged as {seq}", d.seq));
                        }
                        Outcome::Failed { code, reason } => self.violations.push(super::Violation {
                            invariant: Invariant::Honesty,
                            detail: format!("{user} got {text:?}, but its sender was told it failed: {code} {reason}"),
                        }),
                        _ => {}
                    },
                }
            }
        }
        // A message the user received and then lost with a device state
        // restored from an old copy was delivered (once, if not again since).
        for (user, _) in self.ledger.inboxes() {
            for d in self.ledger.lost(user).iter().filter(|d| d.kind == DeliveryKind::Message) {
                count.entry(d.sealed.clone()).or_insert(1);
            }
        }
        let mut acked = 0;
        for (sealed, post) in self.ledger.posts() {
            if !matches!(post.to, Target::User(_)) {
                continue;
            }
            let n = count.get(sealed).copied().unwrap_or(0);
            let text = String::from_utf8_lossy(sealed);
            match post.outcome {
                Outcome::Acked { .. } => {
                    acked += 1;
                    if n != 1 {
                        found.push(format!("acknowledged {text:?} delivered {n} times"));
                    }
                }
                // Not confirmed: it may or may not have been performed, but never twice.
                Outcome::Unknown { .. } if n > 1 => found.push(format!("unconfirmed {text:?} delivered {n} times")),
                _ => {}
            }
        }
        self.stats.mp_acked = acked;
        for detail in found {
            self.violate(Invariant::MpDelivery, detail);
        }
    }

    fn check_rooms(&mut self, settled: bool) {
        let mut found = Vec::new();
        let mut acked: BTreeMap<String, BTreeMap<u64, (String, Bytes)>> = BTreeMap::new();
        for (sealed, post) in self.ledger.posts() {
            let Target::Room(room) = &post.to else { continue };
            let text = String::from_utf8_lossy(sealed);
            match &post.outcome {
                Outcome::Acked { seq, .. } => {
                    let entry = (post.from.clone(), sealed.clone());
                    if let Some((_, other)) = acked.entry(room.clone()).or_default().insert(*seq, entry) {
                        let other = String::from_utf8_lossy(&other);
                        found.push(format!("{room}: {text:?} and {other:?} both acknowledged as {seq}"));
                    }
                }
                Outcome::Pending if settled => found.push(format!("{room}: {text:?} never acknowledged")),
                Outcome::Pending => {}
                // Not confirmed: accepted or not; if accepted, the store or a delivery tells its seq (below).
                Outcome::Unknown { .. } => {}
                Outcome::Failed { code, reason } => found.push(format!("{room}: {text:?} failed: {code} {reason}")),
            }
        }
        self.stats.room_acked = acked.values().map(|m| m.len() as u64).sum();
        let cap = self.config.server.room_history;
        let (stored, unreadable) = self.stored_history();
        found.extend(unreadable);
        // Unconfirmed messages the server did accept count as accepted, at the
        // seq the stored history or a delivery shows.
        let unknown =
            |sealed: &Bytes| self.ledger.post(sealed).is_some_and(|p| matches!(p.outcome, Outcome::Unknown { .. }));
        let mut seen_unknown: Vec<(String, u64, String, Bytes)> = Vec::new();
        for (name, history) in &stored {
            for (seq, from, payload) in history.iter().filter(|e| unknown(&e.2)) {
                seen_unknown.push((name.clone(), *seq, from.clone(), payload.clone()));
            }
        }
        for (_, inbox) in self.ledger.inboxes() {
            for d in inbox {
                if let DeliveryKind::Room(room) = &d.kind
                    && unknown(&d.sealed)
                {
                    seen_unknown.push((room.clone(), d.seq, d.from.clone(), d.sealed.clone()));
                }
            }
        }
        for (room, seq, from, sealed) in seen_unknown {
            let slot = acked.entry(room.clone()).or_default().entry(seq).or_insert((from, sealed.clone()));
            if slot.1 != sealed {
                let text = String::from_utf8_lossy(&sealed);
                found.push(format!("{room}: unconfirmed {text:?} seen at {seq}, which holds another message"));
            }
        }
        for (name, history) in &stored {
            let expected: Vec<(u64, &str, &[u8])> = acked
                .get(name)
                .map(|m| m.iter().map(|(seq, (from, s))| (*seq, from.as_str(), s.as_ref())).collect())
                .unwrap_or_default();
            let expected = &expected[expected.len().saturating_sub(cap)..];
            let actual: Vec<(u64, &str, &[u8])> =
                history.iter().map(|(seq, from, payload)| (*seq, from.as_str(), payload.as_ref())).collect();
            if actual != expected {
                let show = |v: &[(u64, &str, &[u8])]| {
                    let all: Vec<String> =
                        v.iter().map(|(seq, _, s)| format!("{seq}={}", String::from_utf8_lossy(s))).collect();
                    all.join(" ")
                };
                found.push(format!(
                    "{name}: stored history [{}] is not the last {cap} acknowledged [{}]",
                    show(&actual),
                    show(expected)
                ));
            }
        }
        for (room, m) in &acked {
            if !stored.contains_key(room) && !m.is_empty() {
                found.push(format!("{room}: {} acknowledged messages but the room is gone", m.len()));
            }
        }
        for (user, inbox) in self.ledger.inboxes() {
            let mut last: BTreeMap<&str, u64> = BTreeMap::new();
            let mut live: HashMap<&Bytes, u64> = HashMap::new();
            for d in inbox {
                let DeliveryKind::Room(room) = &d.kind else { continue };
                // Live deliveries only (history is not delivered): never the same message twice.
                if let Some(first) = live.insert(&d.sealed, d.seq) {
                    let text = String::from_utf8_lossy(&d.sealed);
                    found.push(format!("{user} got {room} message {text:?} twice, as {first} and {}", d.seq));
                }
                let prev = last.insert(room, d.seq).unwrap_or(0);
                if d.seq <= prev {
                    found.push(format!("{user} got {room} message {} after {prev}", d.seq));
                }
                let matches = acked.get(room).and_then(|m| m.get(&d.seq));
                if let Some((from, sealed)) = matches
                    && (*from != d.from || *sealed != d.sealed)
                {
                    found.push(format!("{user} got {room} message {} unlike the one acknowledged", d.seq));
                }
            }
        }
        for detail in found {
            self.violate(Invariant::RoomHistory, detail);
        }
    }

    fn check_opacity(&mut self) {
        let mut found = Vec::new();
        let (stored, _) = self.stored_history();
        for (name, history) in &stored {
            for (_, _, payload) in history {
                if self.ledger.post(payload).is_none() {
                    found.push(format!("{name} history holds {payload:?}, which nobody sent"));
                }
            }
        }
        // A secure client's MPs can only be opened by their recipient: the
        // recipient's deliveries are checked instead (and nothing stays queued).
        let states = if self.config.secure { Vec::new() } else { self.states() };
        for (from, to, lane) in states.into_iter().flat_map(|s| s.lanes().lanes()) {
            for item in &lane.items {
                if let ItemKind::Message { sealed } = &item.kind
                    && self.ledger.post(sealed).is_none()
                {
                    found.push(format!("lane {from}->{to} holds {sealed:?}, which nobody sent"));
                }
            }
        }
        for detail in found {
            self.violate(Invariant::Opacity, detail);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::super::ledger::{Delivery, DeliveryKind, Outcome, Target};
    use super::super::{Sim, SimConfig};
    use super::Invariant;

    fn delivery(from: &str, kind: DeliveryKind, seq: u64, sealed: &Bytes) -> Delivery {
        Delivery { at: Duration::ZERO, from: from.into(), kind, seq, sealed: sealed.clone() }
    }

    /// A replay the secure client let through shows as a second delivery
    /// of one post: the ledger checks flag it, for MPs and room messages.
    #[test]
    fn a_message_delivered_twice_is_a_violation() {
        let mut sim = Sim::new(SimConfig { clients: 2, ..SimConfig::quiet(1) });
        let (mp, room) = (Bytes::from_static(b"mp alice->bob #1"), Bytes::from_static(b"room lobby from alice #2"));
        sim.ledger.posted(mp.clone(), "alice", Target::User("bob".into()), Duration::ZERO);
        sim.ledger.settle(&mp, Outcome::Acked { seq: 1, code: 200 });
        sim.ledger.posted(room.clone(), "alice", Target::Room("lobby".into()), Duration::ZERO);
        sim.ledger.settle(&room, Outcome::Acked { seq: 1, code: 200 });
        for (kind, seq, sealed) in [
            (DeliveryKind::Message, 1, &mp),
            (DeliveryKind::Room("lobby".into()), 1, &room),
            // The replays, under fresh sequence numbers.
            (DeliveryKind::Message, 1 << 40, &mp),
            (DeliveryKind::Room("lobby".into()), 1 << 40, &room),
        ] {
            sim.ledger.delivered("bob", delivery("alice", kind, seq, sealed));
        }
        let report = sim.report();
        let flagged = |inv: Invariant, what: &str| {
            report.violations.iter().any(|v| v.invariant == inv && v.detail.contains(what))
        };
        assert!(flagged(Invariant::MpDelivery, "delivered 2 times"), "{report}");
        assert!(flagged(Invariant::RoomHistory, "twice"), "{report}");
    }
}
