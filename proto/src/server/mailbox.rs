//! Mail between the partitions of a split state (docs/PARTITIONS.md,
//! "Mail"): what a core sends ([`Change::MailOut`] in its turn's changes)
//! and how it applies what it receives ([`Server::handle_mail`]).
//!
//! The contract with the runtime: after committing a turn, the store holds
//! each `MailOut`'s item in its outbox; the target's runtime gives the
//! target core the items of each source in sequence order, each once it
//! was committed, and commits the turn each one makes (its effects and
//! [`Change::MailIn`], after which the store drops the item). A duplicate
//! or an item past a gap changes nothing, so the runtime may give items
//! again after a crash or a lost doorbell. Application is total: an item
//! that does not decode is logged and counts as applied, a request the
//! target refuses or cannot read is answered with a refusal, and an answer
//! is never answered, so no item blocks its source and no two partitions
//! bounce items at each other. The runtime also counts, now and then,
//! the items of this partition's mail still waiting at each target and
//! tells the core ([`Server::handle_mail_backlog`]): past
//! [`MAIL_PER_TARGET`](super::MAIL_PER_TARGET) requests to that target are
//! refused and room pushes to it dropped (`backlog.rs`).
//!
//! Requests that cross partitions: `fetch_key` of a user of another home,
//! the MP requests of `crossing.rs` and the room requests of
//! `room_mail.rs`. The answers of the deduplicated ones (the MP requests,
//! `send_room`) are remembered: a durable pending record until the answer,
//! then the answer; the others' are known to this run only. While one
//! waits, the session's later frames wait too (requests are handled in
//! order per connection, as while a password is checked); after
//! [`WAIT_FOR_ANSWER`] the session is answered (503 for one not remembered,
//! 504 "outcome pending" for a remembered one, whose retry waits for the
//! same answer) and goes on, and the request stays counted until its answer
//! arrives: at most [`MAX_WAITING`] requests are in flight at once, and
//! `MAX_PENDING` per login, so a target that is down bounds what its
//! sources send it. An unremembered answer reaching a home restored
//! meanwhile answers nobody (the client asks again); a remembered one is
//! recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::crossing::foreign_refusal;
use super::mail_item::{MailError, MailItem, ROLE_ANSWER, ROLE_REQUEST};
use super::outbox::Journal;
use super::partition::PartitionId;
use super::refusal::{Refusal, Reply};
use super::state::Change;
use super::{Server, ServerLog, SessionId};
use crate::wire::{IdentityKey, Opcode, ResponseBody, status};
use crate::{Instant, Now};

/// Requests in flight to other partitions at once, in all; past it, a
/// request that would cross is refused 503 with a wait.
pub const MAX_WAITING: usize = 4096;
/// How long a session waits for another partition's answer before it is
/// answered 503 (the request stays in flight).
pub const WAIT_FOR_ANSWER: Duration = Duration::from_secs(30);
/// The wait suggested with a 503 of a request that could not cross.
const RETRY_AFTER_MS: u64 = 1000;

/// What [`Server::handle_mail`] did with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a gap means the items in between must be given first"]
pub enum MailOutcome {
    /// Applied: the turn holds its effects and [`Change::MailIn`].
    Applied,
    /// Already applied (at or below the source's cursor): nothing done.
    Duplicate,
    /// Past the next item of its source (`next`): nothing done; give the
    /// items from `next` first.
    Gap {
        /// The sequence number this core needs next from that source.
        next: u64,
    },
    /// Not mail for this core: its source is this partition or none.
    Misdirected,
}

/// A request in flight to another partition: `(target, ticket)`, the
/// ticket being the request's number in this core's mail to the target.
type Key = (PartitionId, u64);

/// What a request in flight waits with.
#[derive(Debug, Clone)]
pub(super) struct Waiting {
    /// The asking session, while it waits (`None` once it ended or was
    /// answered 503).
    session: Option<SessionId>,
    /// The login it asked under: the answer goes to that login only.
    family: u64,
    request_id: u32,
    opcode: Opcode,
    /// The user asked about: an answer about another is not this one's.
    peer: String,
    deadline: Instant,
    /// Whether its answer is remembered (a pending record in the state: MP
    /// requests, `send_room`), or known to this run only (`fetch_key`,
    /// the other room requests).
    pub(super) remembered: bool,
    /// Whether the session's later frames wait behind it (a first sending;
    /// not a retry of a request already on its way, which was performed in
    /// its first place).
    held: bool,
}

/// The requests in flight to other partitions.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    by_key: BTreeMap<Key, Waiting>,
    /// The deadlines of the sessions still waiting.
    deadlines: BTreeSet<(Instant, Key)>,
    /// How many of them are not remembered.
    unremembered: usize,
    /// The same, per login (token family): with its remembered ones, what
    /// `MAX_PENDING` bounds.
    unremembered_of: BTreeMap<u64, usize>,
}

impl Waiting {
    /// A request of `family` about `peer` (a user, or a room), its answer
    /// `remembered` or not, its session not set yet.
    pub(super) fn new(
        (family, request_id, opcode): (u64, u32, Opcode),
        peer: String,
        remembered: bool,
        now: Now,
    ) -> Waiting {
        let deadline = now.instant + WAIT_FOR_ANSWER;
        Waiting { session: None, family, request_id, opcode, peer, deadline, remembered, held: true }
    }
}

impl Waiters {
    /// Requests in flight whose answers are not remembered (`fetch_key`,
    /// most room requests):
    /// with the remembered ones (`MailBook::pending_count`), what
    /// [`MAX_WAITING`] bounds.
    pub(super) fn unremembered(&self) -> usize {
        self.unremembered
    }

    /// Those of login `family`.
    pub(super) fn unremembered_of(&self, family: u64) -> usize {
        self.unremembered_of.get(&family).copied().unwrap_or(0)
    }

    fn count(&mut self, w: &Waiting, up: bool) {
        if w.remembered {
            return;
        }
        let n = self.unremembered_of.entry(w.family).or_insert(0);
        if up {
            self.unremembered += 1;
            *n += 1;
        } else {
            self.unremembered -= 1;
            *n -= 1;
            if *n == 0 {
                self.unremembered_of.remove(&w.family);
            }
        }
    }

    /// A session ended: it waits no more (its request stays in flight).
    pub(super) fn session_ended(&mut self, key: Key) {
        if let Some(w) = self.by_key.get_mut(&key) {
            w.session = None;
            self.deadlines.remove(&(w.deadline, key));
        }
    }

    /// The earliest deadline of a waiting session.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    fn take(&mut self, key: Key) -> Option<Waiting> {
        let w = self.by_key.remove(&key)?;
        self.deadlines.remove(&(w.deadline, key));
        self.count(&w, false);
        Some(w)
    }

    /// Puts `w` in for `key`; the one it replaces, if any.
    fn put(&mut self, key: Key, w: Waiting) -> Option<Waiting> {
        self.count(&w, true);
        let deadline = w.deadline;
        let old = self.by_key.insert(key, w);
        if let Some(old) = &old {
            // Before the new deadline goes in: the two may be the same instant.
            self.deadlines.remove(&(old.deadline, key));
            self.count(old, false);
        }
        self.deadlines.insert((deadline, key));
        old
    }
}

impl Server {
    /// Mail item `seq` of partition `from`, as the store holds it (see the
    /// module docs for the contract). Drain the turn after it, as after
    /// any input.
    pub fn handle_mail(&mut self, now: Now, from: PartitionId, seq: u64, item: &[u8]) -> MailOutcome {
        let parts = self.config.partitions;
        if from == parts.index || from >= parts.count {
            return MailOutcome::Misdirected;
        }
        let applied = self.journal.state().mail().applied_from(from);
        if seq <= applied {
            return MailOutcome::Duplicate;
        }
        if seq != applied + 1 {
            return MailOutcome::Gap { next: applied + 1 };
        }
        match MailItem::decode(item) {
            Ok(MailItem::FetchKey { ticket, peer }) => {
                let answer = match super::accounts::fetch_key(self.journal.state(), &peer) {
                    Ok(Reply { body: ResponseBody::IdentityKey(k), .. }) => {
                        MailItem::KeyFound { ticket, username: k.username, identity_key: k.identity_key }
                    }
                    Ok(_) => refused(ticket, &Refusal::Internal("fetch_key answered without a key".into())),
                    Err(refusal) => refused(ticket, &refusal),
                };
                self.send_mail(from, &answer);
            }
            // The answer to a request this home mailed and remembered (an MP request, send_room), whatever
            // its kind: a kind that does not fit the request is refused there, never a success.
            Ok(answer)
                if answer.role() == ROLE_ANSWER
                    && self.journal.state().mail().pending(from, answer.ticket()).is_some() =>
            {
                self.pending_answered(now, from, answer.ticket(), seq, &answer);
            }
            Ok(MailItem::KeyFound { ticket, username, identity_key }) => {
                let asked = self.waiters.by_key.get(&(from, ticket)).map(|w| w.opcode);
                let answer = if asked.is_none_or(|opcode| opcode == Opcode::FetchKey) {
                    // (Nobody waits after a restore of this home: answered to nobody, as is.)
                    let body = ResponseBody::IdentityKey(IdentityKey { username: username.clone(), identity_key });
                    Ok(Reply::ok(body))
                } else {
                    let reason = format!("partition {from} answered a request that is no fetch_key with a key");
                    self.outbox.event(ServerLog::BadMail { from, seq, reason: reason.clone() });
                    Err(Refusal::Internal(reason))
                };
                self.answer_waiting(now, (from, ticket), seq, Some(&username), answer);
            }
            Ok(
                request @ (MailItem::MpRequest { .. }
                | MailItem::MpAccept { .. }
                | MailItem::MpSend { .. }
                | MailItem::MpClose { .. }),
            ) => {
                let answer = self.apply_mp_request(now, from, request);
                self.send_mail(from, &answer);
            }
            Ok(MailItem::Refused { ticket, code, reason }) => {
                let refusal = foreign_refusal(from, code, &reason);
                self.answer_waiting(now, (from, ticket), seq, None, Err(refusal));
            }
            Ok(MailItem::Forward { ticket, user, frame }) => {
                let answer = self.apply_forward(now, from, ticket, &user, &frame);
                self.send_mail(from, &answer);
            }
            Ok(MailItem::Replied { ticket, frame }) => {
                let asked = self.waiters.by_key.get(&(from, ticket)).map(|w| w.opcode);
                if asked.is_some() {
                    let flow = self.replied(from, seq, asked, &frame);
                    self.answer_waiting(now, (from, ticket), seq, None, flow);
                }
            }
            Ok(MailItem::RoomPush { users, frame, .. }) => self.apply_room_push(from, seq, &users, &frame),
            Ok(answer @ (MailItem::MpQueued { .. } | MailItem::MpAccepted { .. })) => {
                let reason = format!("an answer to item {} of this partition, which waits for none", answer.ticket());
                self.outbox.event(ServerLog::BadMail { from, seq, reason });
            }
            Ok(notice @ (MailItem::MpExpired { .. } | MailItem::PeerGone { .. })) => {
                self.apply_notice(now, from, seq, notice);
            }
            Err(error) => self.unreadable_mail(now, from, seq, item, &error),
        }
        self.journal.commit(Change::MailIn { from, seq });
        MailOutcome::Applied
    }

    /// An item that does not decode: logged; a request of a version this
    /// build does not read is refused (with the frozen refusal of version
    /// 1), and the session waiting for an answer it cannot read is told.
    fn unreadable_mail(&mut self, now: Now, from: PartitionId, seq: u64, item: &[u8], error: &MailError) {
        self.outbox.event(ServerLog::BadMail { from, seq, reason: error.to_string() });
        let Some((ticket, role)) = MailItem::ticket_and_role(item) else { return };
        let index = self.config.partitions.index;
        if role == ROLE_REQUEST {
            // Answered whatever went wrong, so that no request waits for ever.
            let refusal = match error {
                MailError::UnknownVersion(_) | MailError::UnknownKind(_) => {
                    Refusal::NotImplemented(format!("partition {index} cannot read the request: {error}"))
                }
                _ => Refusal::BadRequest(format!("partition {index} cannot read the request: {error}")),
            };
            self.send_mail(from, &refused(ticket, &refusal));
        } else if role == ROLE_ANSWER {
            let reason = format!("partition {from} answered in a form this one cannot read: {error}");
            if self.journal.state().mail().pending(from, ticket).is_some() {
                let answer = MailItem::Refused { ticket, code: status::INTERNAL, reason };
                self.pending_answered(now, from, ticket, seq, &answer);
            } else {
                self.answer_waiting(now, (from, ticket), seq, None, Err(Refusal::Internal(reason)));
            }
        }
    }

    /// The last item of `from` this core applied: the runtime gives the
    /// items after it.
    #[must_use]
    pub fn mail_applied_from(&self, from: PartitionId) -> u64 {
        self.journal.state().mail().applied_from(from)
    }

    /// Requests in flight to other partitions, the bound of [`MAX_WAITING`]:
    /// the remembered ones (durable: counted after a restore too) and the
    /// `fetch_key`s of this run.
    pub(super) fn in_flight(&self) -> usize {
        self.journal.state().mail().pending_count() + self.waiters.unremembered()
    }

    /// Requests of this core in flight to other partitions (waited for, or
    /// no longer: their answer has not come back yet).
    #[must_use]
    pub fn waiting_requests(&self) -> usize {
        self.waiters.by_key.len()
    }

    /// Mails `item` to partition `to`, in this turn's changes.
    fn send_mail(&mut self, to: PartitionId, item: &MailItem) {
        mail_to(&mut self.journal, to, item);
    }

    /// `fetch_key` of `peer`, whose home is `home`: asked by mail; the
    /// session waits (its later frames too) until the answer comes back.
    pub(super) fn ask_key(&mut self, now: Now, session: SessionId, request_id: u32, home: PartitionId, peer: &str) {
        let opcode = Opcode::FetchKey;
        if let Some(refusal) = self.no_room_at(home) {
            return self.outbox.refuse(now, session, opcode, request_id, refusal);
        }
        if self.in_flight() >= MAX_WAITING {
            let refusal = Refusal::Busy {
                reason: format!("{MAX_WAITING} requests already wait for other partitions of this server"),
                retry_after_ms: RETRY_AFTER_MS,
            };
            return self.outbox.refuse(now, session, opcode, request_id, refusal);
        }
        let family = self.presence.bound(session).map_or(0, |b| b.family);
        // The request's own number in the mail to `home`: durable, never given twice.
        let ticket = self.journal.state().mail().next_to(home);
        let item = MailItem::FetchKey { ticket, peer: peer.to_owned() }.encode();
        self.journal.commit(Change::MailOut { to: home, seq: ticket, item });
        let waiting = Waiting::new((family, request_id, opcode), peer.to_owned(), false, now);
        self.wait_for(now, session, (home, ticket), waiting);
    }

    /// `session` waits (its later frames too) for the answer to `key`.
    pub(super) fn wait_for(&mut self, now: Now, session: SessionId, key: Key, mut waiting: Waiting) {
        waiting.session = Some(session);
        waiting.deadline = now.instant + WAIT_FOR_ANSWER;
        let held = waiting.held;
        if let Some(old) = self.waiters.put(key, waiting)
            && old.held
        {
            // A retry of the request on another connection: the first one goes on.
            if let Some(first) = old.session.filter(|s| *s != session) {
                let reason = "the request was sent again on another connection; its answer goes there".into();
                let refusal = Refusal::Pending { reason, retry_after_ms: 0 };
                self.stop_waiting(now, first, key, (old.opcode, old.request_id), refusal);
            }
        }
        if held && let Some(s) = self.presence.get_mut(session) {
            s.waiting_mail = Some(key);
        }
    }

    /// A retry of a request still waiting for another partition's answer
    /// (`pending`, its `(target, ticket)`): it is answered with that answer,
    /// and the session's later frames go on meanwhile (the request was
    /// mailed in its first place: nothing behind it can overtake it).
    pub(super) fn wait_again(&mut self, now: Now, session: SessionId, key: Key, family: u64, request_id: u32) {
        let Some(r) = self.journal.state().mail().pending(key.0, key.1) else { return };
        let waiting =
            Waiting { held: false, ..Waiting::new((family, request_id, r.opcode), r.peer.clone(), true, now) };
        self.wait_for(now, session, key, waiting);
    }

    /// `session`, waiting for `key`, is answered 503 (`reason`) and goes on
    /// with its later frames; the request stays in flight.
    fn stop_waiting(&mut self, now: Now, session: SessionId, key: Key, asked: (Opcode, u32), refusal: Refusal) {
        let Some(s) = self.presence.get_mut(session) else { return };
        if s.waiting_mail != Some(key) {
            return;
        }
        s.waiting_mail = None;
        let (opcode, request_id) = asked;
        self.outbox.refuse(now, session, opcode, request_id, refusal);
        self.process_frames(now, session);
    }

    /// An answer (item `seq` of its source) came back for `key`: the
    /// session that waits for it gets it, if it still waits under the same
    /// login; `about`, the user an answer names, must be the one asked about.
    pub(super) fn answer_waiting(
        &mut self,
        now: Now,
        key: Key,
        seq: u64,
        about: Option<&str>,
        answer: Result<Reply, Refusal>,
    ) {
        // Asked by an earlier run of this partition: nobody waits.
        let Some(w) = self.waiters.take(key) else { return };
        let answer = match about {
            Some(about) if about != w.peer => {
                let reason = format!("partition {} answered about {about} a request about {}", key.0, w.peer);
                self.outbox.event(ServerLog::BadMail { from: key.0, seq, reason: reason.clone() });
                Err(Refusal::Internal(reason))
            }
            _ => answer,
        };
        let Some(session) = w.session else { return };
        let Some(s) = self.presence.get_mut(session) else { return };
        if w.held {
            if s.waiting_mail != Some(key) {
                return;
            }
            s.waiting_mail = None;
        }
        if self.presence.bound(session).map_or(0, |b| b.family) == w.family {
            match answer {
                Ok(reply) => self.outbox.respond(now, session, w.opcode, w.request_id, reply),
                Err(refusal) => self.outbox.refuse(now, session, w.opcode, w.request_id, refusal),
            }
        }
        if w.held {
            // The frames that waited behind it.
            self.process_frames(now, session);
        }
    }

    /// Sessions whose answer is late are answered 503 and go on; their
    /// requests stay in flight.
    pub(super) fn expire_waiting(&mut self, now: Now) {
        while let Some(&(deadline, key)) = self.waiters.deadlines.first() {
            if deadline > now.instant {
                return;
            }
            self.waiters.deadlines.remove(&(deadline, key));
            let Some(w) = self.waiters.by_key.get_mut(&key) else { continue };
            let Some(session) = w.session.take() else { continue };
            let (asked, held) = ((w.opcode, w.request_id), w.held);
            let secs = WAIT_FOR_ANSWER.as_secs();
            // A remembered request (MP, send_room) is still on its way: its outcome will be known, and a retry
            // of its id learns it (504); one that is not (fetch_key) is simply asked again (503).
            let refusal = if self.journal.state().mail().pending(key.0, key.1).is_some() {
                let reason = format!(
                    "partition {} did not answer within {secs} s; the request is still on its way: send it again \
                     with the same request id to learn its outcome",
                    key.0
                );
                Refusal::Pending { reason, retry_after_ms: 0 }
            } else {
                let reason = format!(
                    "partition {} did not answer within {secs} s (the request may still be performed there); \
                     try again",
                    key.0
                );
                Refusal::Busy { reason, retry_after_ms: RETRY_AFTER_MS }
            };
            if held {
                self.stop_waiting(now, session, key, asked, refusal);
            } else if self.presence.contains(session) {
                self.outbox.refuse(now, session, asked.0, asked.1, refusal);
            }
        }
    }
}

/// Mails `item` to partition `to`, in the turn's changes: it takes the
/// next number of the mail to `to` (a request's or notice's ticket is that
/// number: build it with `next_to(to)`).
pub(super) fn mail_to(journal: &mut Journal, to: PartitionId, item: &MailItem) {
    let seq = journal.state().mail().next_to(to);
    debug_assert!(item.role() == ROLE_ANSWER || item.ticket() == seq, "a request's ticket is its number");
    journal.commit(Change::MailOut { to, seq, item: item.encode() });
}

pub(super) fn refused(ticket: u64, refusal: &Refusal) -> MailItem {
    MailItem::Refused { ticket, code: refusal.code(), reason: refusal.reason().to_owned() }
}
