//! Private messages between users of two homes (docs/PARTITIONS.md,
//! "Conversations across two homes"): each home keeps its own copy of the
//! conversation, and the copy in the home of `x` decides what enters the
//! lane *to* `x`, which is kept there (where `x`'s sessions acknowledge it).
//!
//! A request whose peer lives elsewhere is decided in two steps: this home
//! checks its copy (perhaps refusing at once, as on one server), commits
//! the tentative state of its copy, the mail item and the pending record
//! ([`Change::RequestMailed`]) in one turn, and the session waits; the
//! peer's home decides with its copy, queues the item in the lane to its
//! user and answers; the answer settles this home's copy (only if it is
//! still the tentative state that request left: the ticket tells) and is
//! remembered for retries of the request id ([`Change::RequestAnswered`])
//! before the session hears it. A retry while the answer is out waits for
//! the same answer; nothing is mailed twice.
//!
//! Crossing requests (each user asked the other before hearing) are
//! settled by one rule applied at both homes: the request of the smaller
//! name (bytewise) wins; the other is refused 409, as the second of two
//! requests is on one server.

use std::sync::Arc;

use bytes::Bytes;

use super::mail_item::MailItem;
use super::mailbox::{Waiting, mail_to, refused};
use super::mp::{delivered_code, identity_key, request_conflict};
use super::partition::PartitionId;
use super::refusal::{Flow, Refusal, Reply};
use super::route::Authenticated;
use super::state::{Change, Conversation, ItemKind, MailedRequest, Recorded};
use super::{Server, ServerLog, SessionId};
use crate::Now;
use crate::wire::{Opcode, PeerKeys, ResponseBody, Sent, Status, status};

/// Requests of one login waiting for other partitions at once; past it,
/// a request that would cross is refused 503 with a wait.
pub const MAX_PENDING: usize = 256;
/// The wait suggested with a 503 of a request that could not cross.
const RETRY_AFTER_MS: u64 = 1000;

impl Server {
    /// `request` (an MP request of `user` whose peer's home is `home`,
    /// another partition): decided here as far as this home's copy goes,
    /// then mailed; the session waits for the answer.
    pub(super) fn cross_mp(
        &mut self,
        now: Now,
        session: SessionId,
        (request_id, family): (u32, u64),
        user: &Arc<str>,
        home: PartitionId,
        request: Authenticated,
    ) {
        let opcode = request.opcode();
        if let Some(refusal) = self.no_room_to_wait(family, home) {
            // Not remembered: a retry may cross once others are answered.
            return self.outbox.refuse(now, session, opcode, request_id, refusal);
        }
        let ticket = self.journal.state().mail().next_to(home);
        let decided = match request {
            Authenticated::RequestMp(b) => self.cross_request(user, b.peer, b.handshake, ticket),
            Authenticated::AcceptMp(b) => self.cross_accept(user, b.peer, b.handshake, ticket),
            Authenticated::SendMp(b) => self.cross_send(user, b.peer, b.sealed, ticket),
            Authenticated::CloseMp(b) => self.cross_close(user, b.peer, ticket),
            _ => Err(Refusal::Internal(format!("{opcode} does not cross partitions"))),
        };
        let (item, copy) = match decided {
            Ok(decided) => decided,
            Err(refusal) => {
                self.record(family, request_id, opcode, &Err(refusal.clone()));
                return self.outbox.refuse(now, session, opcode, request_id, refusal);
            }
        };
        let peer = peer_of(&item).to_owned();
        if let Some(state) = copy {
            self.journal.commit(Change::ConversationSet { a: user.to_string(), b: peer.clone(), state });
        }
        self.send_request(now, session, (request_id, family, opcode), user, (home, &item), peer, true);
    }

    /// Mails `item`, a request of `user` about `about` (a user or a room),
    /// to `home` (its ticket the next number there), and makes the session
    /// wait for the answer; a `remembered` one keeps a pending record until
    /// then ([`Change::RequestMailed`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_request(
        &mut self,
        now: Now,
        session: SessionId,
        (request_id, family, opcode): (u32, u64, Opcode),
        user: &str,
        (home, item): (PartitionId, &MailItem),
        about: String,
        remembered: bool,
    ) {
        let ticket = item.ticket();
        mail_to(&mut self.journal, home, item);
        if remembered {
            let request = MailedRequest { family, request_id, opcode, user: user.to_owned(), peer: about.clone() };
            self.journal.commit(Change::RequestMailed { to: home, ticket, request });
        }
        let waiting = Waiting::new((family, request_id, opcode), about, remembered, now);
        self.wait_for(now, session, (home, ticket), waiting);
    }

    /// Why a request of `family` may not cross to `home` now, if it may not.
    pub(super) fn no_room_to_wait(&self, family: u64, home: PartitionId) -> Option<Refusal> {
        if let Some(refusal) = self.no_room_at(home) {
            return Some(refusal);
        }
        let reason = if self.in_flight() >= super::MAX_WAITING {
            format!("{} requests already wait for other partitions of this server", super::MAX_WAITING)
        } else if self.journal.state().mail().pending_in(family) + self.waiters.unremembered_of(family) >= MAX_PENDING {
            format!("{MAX_PENDING} requests of this login already wait for other partitions")
        } else {
            return None;
        };
        Some(Refusal::Busy { reason, retry_after_ms: RETRY_AFTER_MS })
    }

    fn cross_request(&self, user: &str, peer: String, handshake: Bytes, ticket: u64) -> Decided {
        let state = self.journal.state();
        if let Some(refusal) = request_conflict(state.conversation(user, &peer), user, &peer) {
            return Err(refusal);
        }
        let identity_key = self.identity_key(user);
        let copy = Conversation::Requesting { by: user.to_owned(), handshake: handshake.clone(), ticket };
        let item = MailItem::MpRequest { ticket, from: user.to_owned(), to: peer, identity_key, handshake };
        Ok((item, Some(Some(copy))))
    }

    fn cross_accept(&self, user: &str, peer: String, handshake: Bytes, ticket: u64) -> Decided {
        let theirs = match self.journal.state().conversation(user, &peer) {
            Some(Conversation::Requested { by, handshake }) if *by == peer => handshake.clone(),
            Some(Conversation::Open) => {
                return Err(Refusal::Conflict(format!("conversation with {peer} already open")));
            }
            Some(Conversation::Accepting { by, .. }) if *by == peer => {
                return Err(Refusal::Conflict(format!("already accepted {peer}'s request: waiting for an answer")));
            }
            _ => return Err(Refusal::NotFound(format!("no pending request from {peer}"))),
        };
        let identity_key = self.identity_key(user);
        let copy = Conversation::Accepting { by: peer.clone(), handshake: theirs, ticket };
        let item = MailItem::MpAccept { ticket, from: user.to_owned(), to: peer, identity_key, handshake };
        Ok((item, Some(Some(copy))))
    }

    fn cross_send(&self, user: &str, peer: String, sealed: Bytes, ticket: u64) -> Decided {
        if self.journal.state().conversation(user, &peer) != Some(&Conversation::Open) {
            return Err(Refusal::Forbidden(format!("no open conversation with {peer}: request_mp first")));
        }
        if sealed.is_empty() {
            return Err(Refusal::BadRequest("empty message".into()));
        }
        Ok((MailItem::MpSend { ticket, from: user.to_owned(), to: peer, sealed }, None))
    }

    fn cross_close(&self, user: &str, peer: String, ticket: u64) -> Decided {
        match self.journal.state().conversation(user, &peer) {
            None => return Err(Refusal::NotFound(format!("no conversation with {peer}"))),
            // Its fate is being decided at the peer's home (which may let it win over the
            // peer's own crossing request): taken back only once known.
            Some(Conversation::Requesting { .. }) => {
                return Err(Refusal::Conflict(format!(
                    "your request to {peer} is on its way: close the conversation once it is answered"
                )));
            }
            Some(_) => {}
        }
        // This home's copy ends at once; the peer's when the notice arrives.
        Ok((MailItem::MpClose { ticket, from: user.to_owned(), to: peer }, Some(None)))
    }

    fn identity_key(&self, user: &str) -> Bytes {
        identity_key(self.journal.state(), user)
    }

    /// An MP request of partition `from` (whose user is `sender`) for
    /// `to`, a user of this home: decided with this home's copy, its item
    /// queued in the lane `sender -> to`; returns the answer to mail back.
    pub(super) fn apply_mp_request(&mut self, now: Now, from: PartitionId, item: MailItem) -> MailItem {
        let ticket = item.ticket();
        let answer = match self.misrouted(from, &item) {
            Some(refusal) => Err(refusal),
            None => match item {
                MailItem::MpRequest { from: sender, to, identity_key, handshake, .. } => {
                    self.mp_request_in(now, &sender, &to, identity_key, handshake)
                }
                MailItem::MpAccept { from: sender, to, identity_key, handshake, .. } => {
                    self.mp_accept_in(now, &sender, &to, identity_key, handshake)
                }
                MailItem::MpSend { from: sender, to, sealed, .. } => self.mp_send_in(now, &sender, &to, sealed),
                MailItem::MpClose { from: sender, to, .. } => Ok(self.mp_close_in(now, &sender, &to)),
                other => Err(Refusal::Internal(format!("{other:?} is not an MP request"))),
            },
        };
        match answer {
            Ok(Answer::Queued { code, seq }) => MailItem::MpQueued { ticket, code, seq },
            Ok(Answer::Keys { identity_key, handshake }) => MailItem::MpAccepted { ticket, identity_key, handshake },
            Err(refusal) => refused(ticket, &refusal),
        }
    }

    /// Why an MP item of partition `from` is not this home's to decide, if
    /// it is not: its sender must live at `from`, its peer here.
    fn misrouted(&self, from: PartitionId, item: &MailItem) -> Option<Refusal> {
        let (sender, to) = match item {
            MailItem::MpRequest { from, to, .. }
            | MailItem::MpAccept { from, to, .. }
            | MailItem::MpSend { from, to, .. }
            | MailItem::MpClose { from, to, .. } => (from, to),
            _ => return None,
        };
        let parts = self.config.partitions;
        let here = parts.index;
        if parts.home_of_user(sender) != from || parts.home_of_user(to) != here {
            return Some(Refusal::Internal(format!(
                "partition {here} is not the home of {to}, or {from} not the home of {sender}: misrouted"
            )));
        }
        None
    }

    fn mp_request_in(&mut self, now: Now, sender: &str, to: &str, identity_key: Bytes, handshake: Bytes) -> Answered {
        if self.journal.state().user(to).is_none() {
            return Err(Refusal::NotFound(format!("no user {to}")));
        }
        match self.journal.state().conversation(to, sender) {
            // Crossing requests: the smaller name's wins, at both homes, whatever the queues
            // hold: the other home refuses the loser's request telling it to accept this one,
            // which must then be there (and it takes the place of the loser's own: one item
            // for the pair, as the caps allow).
            Some(Conversation::Requesting { by, .. }) if by == to && sender.as_bytes() < to.as_bytes() => {}
            copy => {
                if let Some(refusal) = request_conflict(copy, sender, to) {
                    return Err(refusal);
                }
                self.mail(now).check_room_in_queue(to)?;
            }
        }
        let state = Conversation::Requested { by: sender.to_owned(), handshake: handshake.clone() };
        self.journal.commit(Change::ConversationSet { a: to.to_owned(), b: sender.to_owned(), state: Some(state) });
        let (seq, online) =
            self.mail(now).enqueue(&Arc::from(sender), to, ItemKind::Request { identity_key, handshake }, None);
        Ok(Answer::Queued { code: delivered_code(online), seq })
    }

    fn mp_accept_in(&mut self, now: Now, sender: &str, to: &str, identity_key: Bytes, handshake: Bytes) -> Answered {
        let theirs = match self.journal.state().conversation(to, sender) {
            Some(Conversation::Requested { by, handshake }) if by == to => handshake.clone(),
            Some(Conversation::Open) => return Err(Refusal::Conflict(format!("conversation with {to} already open"))),
            _ => return Err(Refusal::NotFound(format!("no pending request from {to}"))),
        };
        self.mail(now).check_room_in_queue(to)?;
        self.journal.commit(Change::ConversationSet {
            a: to.to_owned(),
            b: sender.to_owned(),
            state: Some(Conversation::Open),
        });
        self.mail(now).enqueue(&Arc::from(sender), to, ItemKind::Accepted { identity_key, handshake }, None);
        Ok(Answer::Keys { identity_key: self.identity_key(to), handshake: theirs })
    }

    fn mp_send_in(&mut self, now: Now, sender: &str, to: &str, sealed: Bytes) -> Answered {
        if self.journal.state().conversation(to, sender) != Some(&Conversation::Open) {
            return Err(Refusal::Forbidden(format!("no open conversation with {to}: request_mp first")));
        }
        if sealed.is_empty() {
            return Err(Refusal::BadRequest("empty message".into()));
        }
        self.mail(now).check_room_in_queue(to)?;
        let (seq, online) = self.mail(now).enqueue(&Arc::from(sender), to, ItemKind::Message { sealed }, None);
        Ok(Answer::Queued { code: delivered_code(online), seq })
    }

    /// A close is never refused. It ends the copy of the conversation the
    /// closer's side knew (requested, accepting or open), whose notice is
    /// queued as on one server (not bounded by the queue caps: that copy
    /// passed them). A copy already ended here (both closed, or the request
    /// was refused), or replaced by this home's user's own newer request
    /// (which the close predates: mail between two homes is one FIFO each
    /// way), is left alone and nobody is told: the answer's `seq` is then
    /// the lane's last.
    fn mp_close_in(&mut self, now: Now, sender: &str, to: &str) -> Answer {
        match self.journal.state().conversation(to, sender) {
            Some(Conversation::Requested { .. } | Conversation::Accepting { .. } | Conversation::Open) => {
                self.journal.commit(Change::ConversationSet { a: to.to_owned(), b: sender.to_owned(), state: None });
                let kind = ItemKind::Closed { reason: "closed by peer".into() };
                let (seq, _) = self.mail(now).enqueue(&Arc::from(sender), to, kind, None);
                Answer::Queued { code: status::OK, seq }
            }
            None | Some(Conversation::Requesting { .. }) => {
                Answer::Queued { code: status::OK, seq: self.journal.state().next_seq(sender, to) - 1 }
            }
        }
    }

    /// The answer (item `seq` of partition `from`) to the pending request
    /// `(from, ticket)` (an MP request or `send_room`): settles this home's
    /// copy of the conversation (an MP request's), remembers the answer for
    /// retries, and answers the session waiting for it, if one still does.
    pub(super) fn pending_answered(&mut self, now: Now, from: PartitionId, ticket: u64, seq: u64, answer: &MailItem) {
        let Some(request) = self.journal.state().mail().pending(from, ticket).cloned() else { return };
        let MailedRequest { opcode, user, peer, .. } = &request;
        // Only an MP request left a tentative copy (a room request's `peer` is a room, and
        // tickets are numbered per target: another request's may equal this one's).
        let is_mp = matches!(opcode, Opcode::RequestMp | Opcode::AcceptMp | Opcode::SendMp | Opcode::CloseMp);
        let copy = if is_mp { self.journal.state().conversation(user, peer).cloned() } else { None };
        let tentative = |c: &Conversation| match c {
            Conversation::Requesting { ticket: t, .. } | Conversation::Accepting { ticket: t, .. } => *t == ticket,
            _ => false,
        };
        let still = copy.as_ref().filter(|c| tentative(c));
        let (flow, settled): (Flow, Option<Option<Conversation>>) = match (opcode, answer) {
            (Opcode::RequestMp, MailItem::MpQueued { code: code @ (status::OK | status::ACCEPTED), seq, .. }) => {
                let settled = still.map(|c| match c {
                    Conversation::Requesting { by, handshake, .. } => {
                        Some(Conversation::Requested { by: by.clone(), handshake: handshake.clone() })
                    }
                    other => Some(other.clone()),
                });
                (Ok(Reply::valid(*code, ResponseBody::Sent(Sent { seq: *seq }))), settled)
            }
            (Opcode::SendMp, MailItem::MpQueued { code: code @ (status::OK | status::ACCEPTED), seq, .. }) => {
                (Ok(Reply::valid(*code, ResponseBody::Sent(Sent { seq: *seq }))), None)
            }
            (Opcode::CloseMp, MailItem::MpQueued { code: status::OK, seq, .. }) => {
                let body = ResponseBody::Sent(Sent { seq: *seq });
                (Ok(Reply { status: Status::Finished, code: status::OK, body }), None)
            }
            (Opcode::SendRoom, MailItem::Replied { frame, .. }) => {
                (self.replied(from, seq, Some(*opcode), frame), None)
            }
            (Opcode::AcceptMp, MailItem::MpAccepted { identity_key, handshake, .. }) => {
                let body =
                    PeerKeys { peer: peer.clone(), identity_key: identity_key.clone(), handshake: handshake.clone() };
                (Ok(Reply::ok(ResponseBody::PeerKeys(body))), still.map(|_| Some(Conversation::Open)))
            }
            (_, answer) => {
                let refusal = match answer {
                    MailItem::Refused { code, reason, .. } => foreign_refusal(from, *code, reason),
                    other => {
                        let reason = format!("partition {from} answered {opcode} with an unfitting {}", other.name());
                        self.outbox.event(ServerLog::BadMail { from, seq, reason: reason.clone() });
                        Refusal::Internal(reason)
                    }
                };
                // The tentative state that request left is undone.
                let settled = still.map(|c| match c {
                    Conversation::Accepting { by, handshake, .. } => {
                        Some(Conversation::Requested { by: by.clone(), handshake: handshake.clone() })
                    }
                    _ => None,
                });
                (Err(refusal), settled)
            }
        };
        if let Some(state) = settled {
            self.journal.commit(Change::ConversationSet { a: user.clone(), b: peer.clone(), state });
        }
        let response = recorded(*opcode, &flow);
        self.journal.commit(Change::RequestAnswered { from, ticket, response });
        self.answer_waiting(now, (from, ticket), seq, None, flow);
    }

    /// A notice of partition `from` for users of this home.
    pub(super) fn apply_notice(&mut self, now: Now, from: PartitionId, seq: u64, item: MailItem) {
        use crate::wire::{EventBody, MpExpired, PeerGone};
        let (users, body) = match item {
            MailItem::MpExpired { user, peer, seq, .. } => (vec![user], EventBody::MpExpired(MpExpired { peer, seq })),
            MailItem::PeerGone { peer, users, .. } => (users, EventBody::PeerGone(PeerGone { peer })),
            other => {
                let reason = format!("{} is not a notice", other.name());
                return self.outbox.event(ServerLog::BadMail { from, seq, reason });
            }
        };
        // The user it is about (who left, or the dropped message's recipient) lives at its source.
        let about = match &body {
            EventBody::MpExpired(e) => &e.peer,
            EventBody::PeerGone(g) => &g.peer,
            _ => unreachable!("the two notices"),
        };
        if self.config.partitions.home_of_user(about) != from {
            let reason = format!("a notice about {about}, who is not of partition {from}");
            return self.outbox.event(ServerLog::BadMail { from, seq, reason });
        }
        for user in users {
            if !self.is_home_of(&user) || self.journal.state().user(&user).is_none() {
                let reason = format!("a notice for {user}, who is not a user of this home");
                self.outbox.event(ServerLog::BadMail { from, seq, reason });
                continue;
            }
            // As on one server: only the peers of an open conversation hear that one left.
            if matches!(body, EventBody::PeerGone(_))
                && self.journal.state().conversation(&user, about) != Some(&Conversation::Open)
            {
                continue;
            }
            match (self.presence.online(&user), &body) {
                (Some(session), body) => self.outbox.send_event(now, session, 0, body.clone()),
                // Told at the next login, as on one server.
                (None, EventBody::MpExpired(e)) => {
                    self.journal.commit(Change::NoticeAdded { user, peer: e.peer.clone(), seq: e.seq });
                }
                // Best effort, as on one server: nobody to tell.
                (None, _) => {}
            }
        }
    }

    fn is_home_of(&self, user: &str) -> bool {
        self.config.partitions.elsewhere(user).is_none()
    }

    /// Remembers the answer of a deduplicated request for retries of its id.
    pub(super) fn record(&mut self, family: u64, request_id: u32, opcode: Opcode, flow: &Flow) {
        let response = recorded(opcode, flow);
        self.journal.commit(Change::Recorded { family, request_id, response });
    }
}

/// What a home decided about an MP request, and the change of its copy:
/// `Some(state)` sets it, `None` leaves it.
type Decided = Result<(MailItem, Option<Option<Conversation>>), Refusal>;

/// What the peer's home answers to an MP request.
enum Answer {
    /// Queued as `seq`, its recipient online (200) or not (202).
    Queued { code: u16, seq: u64 },
    /// Accepted: the requester's keys.
    Keys { identity_key: Bytes, handshake: Bytes },
}

type Answered = Result<Answer, Refusal>;

/// The user an MP request item names as its peer.
fn peer_of(item: &MailItem) -> &str {
    match item {
        MailItem::MpRequest { to, .. }
        | MailItem::MpAccept { to, .. }
        | MailItem::MpSend { to, .. }
        | MailItem::MpClose { to, .. } => to,
        _ => "",
    }
}

/// Another partition's refusal, as this home's client gets it: its 401 or
/// 419 is not about the client's tokens (a client taking it so would drop
/// or refresh its own).
pub(super) fn foreign_refusal(from: PartitionId, code: u16, reason: &str) -> Refusal {
    match code {
        // Nor is its 503 or 504 about this request's fate (a remembered 504 would make every
        // retry of it 504 at once).
        status::UNAUTHORIZED | status::TOKEN_EXPIRED | status::UNAVAILABLE | status::OUTCOME_PENDING => {
            Refusal::Internal(format!("partition {from} refused the request: {reason}"))
        }
        _ => Refusal::from_code(code, reason.to_owned()),
    }
}

/// The response remembered for `flow`: a refusal too, so that a retry gets
/// the same refusal, never a late success.
pub(super) fn recorded(opcode: Opcode, flow: &Flow) -> Recorded {
    match flow {
        Ok(reply) => Recorded { opcode, status: reply.status, code: reply.code, body: reply.body.clone() },
        Err(refusal) => {
            let body = crate::wire::ErrorBody { reason: refusal.to_string(), retry_after_ms: 0 };
            Recorded { opcode, status: Status::Error, code: refusal.code(), body: ResponseBody::Error(body) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_partitions_401_419_503_and_504_are_not_about_this_request() {
        for code in [status::UNAUTHORIZED, status::TOKEN_EXPIRED] {
            assert_eq!(foreign_refusal(2, code, "x").code(), status::INTERNAL);
        }
        assert_eq!(foreign_refusal(2, status::QUEUE_FULL, "full").code(), status::QUEUE_FULL);
        for code in [status::UNAVAILABLE, status::OUTCOME_PENDING] {
            assert_eq!(foreign_refusal(2, code, "x").code(), status::INTERNAL, "never remembered as such");
        }
    }

    #[test]
    fn a_refusal_is_remembered_as_an_error_with_its_reason() {
        let r = recorded(Opcode::SendMp, &Err(Refusal::Forbidden("no".into())));
        assert_eq!((r.status, r.code), (Status::Error, status::FORBIDDEN));
        assert!(matches!(r.body, ResponseBody::Error(ref e) if e.reason.contains("no")));
    }
}
