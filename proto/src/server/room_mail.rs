//! Rooms of a split state (docs/PARTITIONS.md, "Rooms"): a room lives at
//! its home (its name hashed as a user's is), which decides every request
//! about it as one server does; a member of another home reaches it by
//! mail, and its messages reach the online members of other homes by mail.
//!
//! A room request whose room lives elsewhere is mailed there as the frame
//! the client sent ([`MailItem::Forward`], the user named beside it) and
//! answered with the response frame the room's home made
//! ([`MailItem::Replied`]). `send_room`, whose answer is remembered, keeps a
//! pending record meanwhile as the MP requests do (a retry waits for the
//! same answer); the others are not deduplicated, on one server as here.
//! A member's requests reach the room's home in the order its home mailed
//! them (one FIFO), and the room's messages reach a member's home in the
//! order the room's home committed them: one [`MailItem::RoomPush`] per
//! message and home of members, for their online sessions (an offline
//! member finds the message in the history, as on one server).

use std::collections::BTreeMap;

use bytes::Bytes;

use super::mail_item::MailItem;
use super::mailbox::{mail_to, refused};
use super::partition::PartitionId;
use super::refusal::{Flow, Refusal, Reply};
use super::route::{Authenticated, Route};
use super::{Server, ServerLog, SessionId, rooms};
use crate::Now;
use crate::wire::{
    ErrorBody, Event, EventBody, Frame, Message, Opcode, Request, Response, ResponseBody, RoomMessage, Status,
};

impl Server {
    /// A room request of `user`, decided here (this is the room's home);
    /// a message sent is pushed to the members of other homes too.
    pub(super) fn room_request(&mut self, now: Now, user: &str, request: Authenticated) -> Flow {
        let config = &self.config;
        match request {
            Authenticated::CreateRoom(b) => rooms::create(&mut self.journal, config, user, b),
            Authenticated::JoinRoom(b) => rooms::join(&mut self.journal, config, user, b),
            Authenticated::SendRoom(b) => {
                // Kept for the members of other homes only: one server copies nothing per message.
                let posted = config.partitions.is_split().then(|| (b.room.clone(), b.sealed.clone()));
                let parts = (&self.presence, &mut self.fanout);
                let flow = rooms::send(now, &mut self.journal, parts, &mut self.outbox, config, user, b);
                if let (Ok(Reply { body: ResponseBody::Sent(sent), .. }), Some((room, sealed))) = (&flow, posted) {
                    // The message as it was posted (the history may keep none: `room_history` 0).
                    let event =
                        RoomMessage { room, from: user.to_owned(), seq: sent.seq, sent_ms: now.unix_ms, sealed };
                    self.push_elsewhere(now, event);
                }
                flow
            }
            Authenticated::LeaveRoom(b) => rooms::leave(&mut self.journal, user, &b.room),
            Authenticated::RoomHistory(b) => rooms::history(&self.journal, user, &b.room),
            Authenticated::DeleteRoom(b) => rooms::delete(&mut self.journal, user, &b.room),
            Authenticated::RoomInfo(b) => rooms::info(&self.journal, &b.room),
            other => Err(Refusal::Internal(format!("{} is not a room request", other.opcode()))),
        }
    }

    /// A room request of `user` whose room lives at `home`, another
    /// partition: mailed there; the session waits for the answer.
    pub(super) fn cross_room(
        &mut self,
        now: Now,
        session: SessionId,
        (request_id, family): (u32, u64),
        user: &str,
        home: PartitionId,
        request: Authenticated,
    ) {
        let (opcode, remembered) = (request.opcode(), request.is_recorded());
        if let Some(refusal) = self.no_room_to_wait(family, home) {
            // Not remembered: a retry may cross once others are answered.
            return self.outbox.refuse(now, session, opcode, request_id, refusal);
        }
        // What the room's home would refuse for its size is not mailed (nor stored) at all.
        if let Authenticated::SendRoom(b) = &request
            && let Err(refusal) = rooms::check_size(&self.config, user, &b.sealed)
        {
            self.record(family, request_id, opcode, &Err(refusal.clone()));
            return self.outbox.refuse(now, session, opcode, request_id, refusal);
        }
        let room = request.room().unwrap_or_default().to_owned();
        let ticket = self.journal.state().mail().next_to(home);
        let body = request.into_body();
        let frame = Message::Request(Request { request_id, timestamp_ms: now.unix_ms, body }).to_bytes(b"");
        let item = MailItem::Forward { ticket, user: user.to_owned(), frame };
        self.send_request(now, session, (request_id, family, opcode), user, (home, &item), room, remembered);
    }

    /// A room request of partition `from`'s user `user`, as the frame its
    /// client sent: decided here; returns the answer to mail back.
    pub(super) fn apply_forward(
        &mut self,
        now: Now,
        from: PartitionId,
        ticket: u64,
        user: &str,
        frame: &Bytes,
    ) -> MailItem {
        let request = match decode(frame, &self.config.limits) {
            Ok(Message::Request(r)) => match Route::from(r.body) {
                Route::Authenticated(a) if a.room().is_some() => a,
                _ => return refused(ticket, &Refusal::BadRequest("a forwarded request must be a room request".into())),
            },
            Ok(_) => return refused(ticket, &Refusal::BadRequest("a forwarded frame must be a request".into())),
            Err(reason) => return refused(ticket, &Refusal::BadRequest(format!("a forwarded request: {reason}"))),
        };
        let parts = self.config.partitions;
        let room = request.room().unwrap_or_default();
        if parts.home_of_user(user) != from || parts.room_elsewhere(room).is_some() {
            let here = parts.index;
            let reason =
                format!("partition {here} is not the home of room {room}, or {from} not the home of {user}: misrouted");
            return refused(ticket, &Refusal::Internal(reason));
        }
        let opcode = request.opcode();
        let flow = self.room_request(now, user, request);
        let frame = Message::Response(response(opcode, now, flow)).to_bytes(b"");
        MailItem::Replied { ticket, frame }
    }

    /// The answer of partition `from` to a room request: the response its
    /// room's home made for `opcode`, as this home's client gets it.
    pub(super) fn replied(&mut self, from: PartitionId, seq: u64, opcode: Option<Opcode>, frame: &Bytes) -> Flow {
        let response = match decode(frame, &self.config.limits) {
            Ok(Message::Response(r))
                if Some(r.opcode) == opcode
                    && is_room_opcode(r.opcode)
                    && (r.status == Status::Error || (200..300).contains(&r.code)) =>
            {
                r
            }
            other => {
                let got = match other {
                    Ok(Message::Response(r)) => format!("a response to {} ({:?} {})", r.opcode, r.status, r.code),
                    Ok(_) => "a frame that is no response".to_owned(),
                    Err(reason) => reason,
                };
                let reason = format!("partition {from} answered a room request with {got}");
                self.outbox.event(ServerLog::BadMail { from, seq, reason: reason.clone() });
                return Err(Refusal::Internal(reason));
            }
        };
        match (response.status, response.body) {
            (Status::Error, ResponseBody::Error(e)) => {
                Err(super::crossing::foreign_refusal(from, response.code, &e.reason))
            }
            (Status::Error, _) => {
                Err(Refusal::Internal(format!("partition {from} answered an error without a reason")))
            }
            (status, body) => Ok(Reply { status, code: response.code, body }),
        }
    }

    /// The message just posted, mailed to the homes of its room's other
    /// members (one item per home, for its online members).
    fn push_elsewhere(&mut self, now: Now, event: RoomMessage) {
        let parts = self.config.partitions;
        let Some(r) = self.journal.state().room(&event.room) else { return };
        let mut homes: BTreeMap<PartitionId, Vec<String>> = BTreeMap::new();
        for member in r.members.iter().filter(|m| **m != event.from) {
            if let Some(home) = parts.elsewhere(member) {
                homes.entry(home).or_default().push(member.clone());
            }
        }
        if homes.is_empty() {
            return;
        }
        let room = event.room.clone();
        let frame =
            Message::Event(Event { request_id: 0, timestamp_ms: now.unix_ms, body: event.into() }).to_bytes(b"");
        for (home, users) in homes {
            if !self.may_push_to(home, &room) {
                continue;
            }
            let ticket = self.journal.state().mail().next_to(home);
            mail_to(&mut self.journal, home, &MailItem::RoomPush { ticket, users, frame: frame.clone() });
        }
    }

    /// A room message of partition `from` (a room's home) for the online
    /// members of this home among `users`.
    pub(super) fn apply_room_push(&mut self, from: PartitionId, seq: u64, users: &[String], frame: &Bytes) {
        let room = match decode(frame, &self.config.limits) {
            Ok(Message::Event(Event { body: EventBody::RoomMessage(m), .. })) => m.room,
            _ => {
                let reason = "a room push that is no room_message event".to_owned();
                return self.outbox.event(ServerLog::BadMail { from, seq, reason });
            }
        };
        if self.config.partitions.home_of_room(&room) != from {
            let reason = format!("a message of room {room}, which is not of partition {from}");
            return self.outbox.event(ServerLog::BadMail { from, seq, reason });
        }
        for user in users {
            if self.config.partitions.elsewhere(user).is_some() {
                let reason = format!("a room message for {user}, who is not of this home");
                self.outbox.event(ServerLog::BadMail { from, seq, reason });
                continue;
            }
            if let Some(session) = self.presence.online(user) {
                self.outbox.send_shared(session, frame);
            }
        }
    }
}

/// Whether `opcode` is a room request's (what a room's home answers).
pub(super) fn is_room_opcode(opcode: Opcode) -> bool {
    matches!(
        opcode,
        Opcode::CreateRoom
            | Opcode::JoinRoom
            | Opcode::SendRoom
            | Opcode::LeaveRoom
            | Opcode::RoomHistory
            | Opcode::DeleteRoom
            | Opcode::RoomInfo
    )
}

/// The response a client gets for `flow`, answering `opcode`.
fn response(opcode: Opcode, now: Now, flow: Flow) -> Response {
    let (status, code, body) = match flow {
        Ok(reply) => (reply.status, reply.code, reply.body),
        Err(refusal) => {
            let body = ResponseBody::Error(ErrorBody {
                reason: refusal.reason().to_owned(),
                retry_after_ms: refusal.retry_after_ms(),
            });
            (Status::Error, refusal.code(), body)
        }
    };
    Response { opcode, request_id: 0, timestamp_ms: now.unix_ms, status, code, body }
}

/// One whole frame (no more, no less) and its message.
fn decode(bytes: &Bytes, limits: &crate::wire::Limits) -> Result<Message, String> {
    match Frame::parse(bytes, limits) {
        Ok(Some((frame, len))) if len == bytes.len() => Message::decode(&frame, limits).map_err(|e| e.to_string()),
        Ok(Some((_, len))) => Err(format!("{} bytes after the frame", bytes.len() - len)),
        Ok(None) => Err("a truncated frame".into()),
        Err(e) => Err(e.to_string()),
    }
}
