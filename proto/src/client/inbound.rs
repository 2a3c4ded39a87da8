//! What arrives from the server: responses (matched to the outbox, the
//! login under way or the refresh under way), events (deduplicated
//! deliveries), control frames.

use super::outbox::{Entry, Origin};
use super::{Client, ClientEvent, auth::error_of};
use crate::Now;
use crate::wire::{
    DecodeError, DeliveryAck, ErrorBody, Event, EventBody, Frame, FrameType, Message, Opcode, Pong, RequestBody,
    Response, ResponseBody, Status, status,
};

impl Client {
    pub(super) fn handle_frame(&mut self, now: Now, frame: Frame) {
        match Message::decode(&frame, &self.config.limits) {
            Ok(Message::Response(r)) => self.on_response(now, r),
            Ok(Message::Event(e)) => {
                let queued_kind = is_queued_kind(&e.body);
                self.on_event(e);
                if queued_kind {
                    self.count_caught_up(true);
                }
            }
            Ok(Message::Ping(p)) => {
                if self.conn.is_some() {
                    Message::Pong(Pong { nonce: p.nonce }).encode(&[], &mut self.out);
                }
            }
            Ok(Message::Pong(_)) => {}
            Ok(Message::Close(c)) => {
                // The server closes: stop sending, no answer (docs/PROTOCOL.md, "close").
                self.out.clear();
                self.events.push_back(ClientEvent::Closed { code: c.code, reason: c.reason.clone() });
                let revoked = c.code == status::UNAUTHORIZED;
                self.closes.push_back((c.code, c.reason));
                self.drop_connection();
                if revoked {
                    // The server revoked this login's tokens (refresh token reuse).
                    self.end_session("tokens revoked: log in again");
                }
            }
            Ok(Message::Request(req)) => {
                let error = DecodeError::WrongDirection {
                    opcode: req.body.opcode().as_u32(),
                    frame_type: FrameType::Request.name(),
                    offset: frame.data_offset(),
                };
                self.events.push_back(ClientEvent::BadFrame { error });
            }
            Err(error) => match undecodable_response(&frame, &error) {
                Some(r) => self.on_response(now, r),
                None => self.events.push_back(ClientEvent::BadFrame { error }),
            },
        }
    }

    /// The stream lost its framing (a frame above the limits, an unknown
    /// frame type): the answers to what was written on this connection can
    /// no longer be told apart, and replaying those requests could bring the
    /// same unreadable answer forever. Every application request written here
    /// and not answered is settled and leaves the outbox: a query fails with
    /// the error's code (asking again is the caller's choice), any other
    /// request is indeterminate (the server may have performed it).
    pub(super) fn settle_unreadable(&mut self, error: &DecodeError) {
        for entry in self.outbox.take_written_here() {
            let opcode = entry.opcode();
            if is_query(opcode) {
                let reason = format!("its answer could not be read ({error}); not retried");
                self.fail(entry.id, opcode, error.code(), &reason, 0);
            } else {
                self.events.push_back(ClientEvent::Indeterminate {
                    request_id: entry.id,
                    opcode,
                    reason: format!(
                        "an answer on its connection could not be read ({error}); it was sent and may have been performed: not retried"
                    ),
                });
            }
        }
    }

    fn on_response(&mut self, now: Now, r: Response) {
        let id = r.request_id;
        if let Some(flow) = &self.auth.login {
            if r.opcode == Opcode::Login && id == flow.login_id && flow.login_sent {
                return self.on_login_response(now, r);
            }
            if r.opcode == Opcode::Passphrase && Some(id) == flow.passphrase_id {
                return self.on_passphrase_response(r);
            }
        }
        if matches!(r.opcode, Opcode::Refresh | Opcode::RefreshKeyed) && self.auth.refresh_in_flight == Some(id) {
            return self.on_refresh_response(now, r);
        }
        let Some(entry) = self.outbox.get(id) else {
            return; // Not ours, or already answered.
        };
        if entry.opcode() != r.opcode || !entry.sent {
            return;
        }
        if r.status == Status::Error
            && matches!(r.code, status::TOKEN_EXPIRED | status::UNAUTHORIZED)
            && entry.needs_auth()
            && self.retry_after_refusal(now, id, &r)
        {
            return;
        }
        if r.status == Status::Error && r.code == status::OUTCOME_PENDING {
            // On its way inside the server: the same request again learns its outcome (a
            // remembered request is never performed twice), after the server waited for it.
            if let Some(entry) = self.outbox.get_mut(id) {
                entry.sent = false;
            }
            self.flush();
            return;
        }
        let Some(entry) = self.outbox.take(id, r.opcode) else {
            return;
        };
        match r.status {
            Status::Error => self.on_failed(entry, &r),
            Status::Valid | Status::Finished | Status::InProgress => self.on_done(entry, r.code, r.body),
        }
    }

    fn on_done(&mut self, entry: Entry, code: u16, body: ResponseBody) {
        match (&entry.origin, &entry.body, &body) {
            (Origin::Ack, RequestBody::DeliveryAck(a), _) => return self.lanes.confirm(&a.peer, a.seq),
            (Origin::Hello, _, _) => return,
            (_, RequestBody::Logout(_), _) => return self.logged_out(entry.id),
            (_, RequestBody::JoinRoom(j), ResponseBody::RoomJoined(joined)) => {
                let last = joined.history.iter().map(|h| h.seq).max().unwrap_or(0);
                self.lanes.set_room(&j.room, last);
            }
            (_, RequestBody::DeleteRoom(d), _) => self.lanes.forget_room(&d.room),
            _ => {}
        }
        self.events.push_back(ClientEvent::Done { request_id: entry.id, opcode: entry.opcode(), code, body });
    }

    fn on_failed(&mut self, entry: Entry, r: &Response) {
        if entry.origin == Origin::Hello {
            return;
        }
        if entry.opcode() == Opcode::Logout {
            self.auth.logging_out = false;
        }
        let (reason, retry_after_ms) = error_of(r);
        self.fail(entry.id, entry.opcode(), r.code, &reason, retry_after_ms);
    }

    fn on_event(&mut self, e: Event) {
        if let EventBody::ErrorEvent(m) = &e.body
            && m.code == status::BAD_REQUEST
            && self.auth.refresh_in_flight == Some(e.request_id)
            && self.auth.keys.is_some()
            && !self.auth.keyless
        {
            // An older server: `refresh_keyed` is an unknown opcode there.
            let now = self.clock;
            return self.on_keyed_refresh_unknown(now);
        }
        let lane_item = match e.body {
            EventBody::Connected(c) => {
                self.lanes.set_owner(&c.username);
                if self.username.as_deref() != Some(c.username.as_str()) {
                    self.username = Some(c.username.clone());
                    self.dirty = true;
                }
                if let Some(conn) = self.conn.as_mut() {
                    conn.authed = true;
                    conn.catch_up = Some(c.queued);
                }
                if let Some((request_id, a, r)) = self.auth.deferred.take() {
                    self.events.push_back(ClientEvent::LoggedIn {
                        request_id,
                        username: c.username.clone(),
                        access_expires_ms: a,
                        refresh_expires_ms: r,
                    });
                }
                self.events.push_back(ClientEvent::Connected { username: c.username, queued: c.queued });
                // Nothing queued: caught up at once.
                return self.count_caught_up(false);
            }
            EventBody::UserMessage(m) => {
                if !self.lanes.receive(&m.from, m.seq) {
                    return;
                }
                ClientEvent::UserMessage { from: m.from, seq: m.seq, sent_ms: m.sent_ms, sealed: m.sealed }
            }
            EventBody::MpRequest(m) => {
                if !self.lanes.receive(&m.from, m.seq) {
                    return;
                }
                ClientEvent::MpRequest {
                    from: m.from,
                    seq: m.seq,
                    identity_key: m.identity_key,
                    handshake: m.handshake,
                }
            }
            EventBody::MpAccepted(m) => {
                if !self.lanes.receive(&m.peer, m.seq) {
                    return;
                }
                ClientEvent::MpAccepted {
                    peer: m.peer,
                    seq: m.seq,
                    identity_key: m.identity_key,
                    handshake: m.handshake,
                }
            }
            EventBody::MpClosed(m) => {
                if !self.lanes.receive(&m.peer, m.seq) {
                    return;
                }
                ClientEvent::MpClosed { peer: m.peer, seq: m.seq, reason: m.reason }
            }
            EventBody::RoomMessage(m) => {
                if !self.lanes.room_message(&m.room, m.seq) {
                    return;
                }
                ClientEvent::RoomMessage {
                    room: m.room,
                    from: m.from,
                    seq: m.seq,
                    sent_ms: m.sent_ms,
                    sealed: m.sealed,
                }
            }
            EventBody::PeerGone(p) => ClientEvent::PeerGone { peer: p.peer },
            EventBody::MpExpired(m) => ClientEvent::MpExpired { peer: m.peer, seq: m.seq },
            EventBody::ErrorEvent(m) => ClientEvent::ServerError { code: m.code, offset: m.offset, reason: m.reason },
        };
        self.events.push_back(lane_item);
    }

    /// Counts one of the queued items `connected` announced (`item`), or
    /// none (right after `connected`): [`ClientEvent::CaughtUp`] once they
    /// all arrived. The server writes them right after `connected`
    /// (docs/PROTOCOL.md, "Login and session binding"), so they are the
    /// first item frames on the connection, delivered or dropped as
    /// duplicates alike.
    fn count_caught_up(&mut self, item: bool) {
        let Some(conn) = self.conn.as_mut() else { return };
        let Some(left) = conn.catch_up.as_mut() else { return };
        if item {
            *left = left.saturating_sub(1);
        }
        if *left == 0 {
            conn.catch_up = None;
            self.events.push_back(ClientEvent::CaughtUp);
        }
    }

    /// After an input batch: the acknowledgements due go out now if
    /// `ack_batch` items wait or no delay is configured, else when
    /// `ack_delay` has passed since the first of them arrived.
    pub(super) fn schedule_acks(&mut self, now: Now) {
        let items = self.lanes.due_items();
        if items == 0 {
            return;
        }
        let delay = self.config.ack_delay;
        if delay.is_zero() || items >= self.config.ack_batch.max(1) {
            return self.send_acks(now);
        }
        if self.acks_at.is_none() {
            self.acks_at = Some(now.instant.checked_add(delay).unwrap_or(now.instant));
        }
    }

    /// One `delivery_ack` per peer that delivered something since the last
    /// ones went out, for the highest sequence number delivered (duplicates
    /// included: a replay means an earlier acknowledgement did not land).
    pub(super) fn send_acks(&mut self, now: Now) {
        self.acks_at = None;
        let due = self.lanes.take_due();
        if !self.auth.has_session() {
            return;
        }
        for (peer, seq) in due {
            if self.outbox.ack_covers(&peer, seq) {
                continue;
            }
            if let Some(entry) = self.outbox.unsent_ack_mut(&peer) {
                entry.body = RequestBody::DeliveryAck(DeliveryAck { peer, seq });
                self.dirty = true;
                continue;
            }
            let Ok(id) = self.alloc_id() else { return };
            let body = RequestBody::DeliveryAck(DeliveryAck { peer, seq });
            self.outbox.push(Entry::new(id, now.unix_ms, body, Origin::Ack));
        }
    }
}

/// Requests that only read: failing one loses nothing.
fn is_query(opcode: Opcode) -> bool {
    matches!(opcode, Opcode::RoomHistory | Opcode::FetchKey | Opcode::RoomInfo | Opcode::Introspect | Opcode::Jwks)
}

/// Whether `body` is one of the items the `queued` count of `connected`
/// counts (lane items and "message dropped" notices).
fn is_queued_kind(body: &EventBody) -> bool {
    matches!(
        body,
        EventBody::UserMessage(_)
            | EventBody::MpRequest(_)
            | EventBody::MpAccepted(_)
            | EventBody::MpClosed(_)
            | EventBody::MpExpired(_)
    )
}

/// A response frame that does not decode still names its opcode and request
/// id in its first eight data bytes: the request it answers fails instead
/// of waiting forever. The server's code is kept when the status byte says
/// `error`; otherwise the failure is the client's (500).
fn undecodable_response(frame: &Frame, error: &DecodeError) -> Option<Response> {
    if frame.frame_type != FrameType::Response {
        return None;
    }
    let data = &frame.data;
    let opcode = Opcode::from_u32(u32::from_be_bytes(data.get(0..4)?.try_into().ok()?))?;
    let request_id = u32::from_be_bytes(data.get(4..8)?.try_into().ok()?);
    if !opcode.is_request() {
        return None;
    }
    let status = data.get(16).copied().and_then(Status::from_u8);
    let server_code =
        data.get(17..19).and_then(|b| b.try_into().ok()).map(u16::from_be_bytes).filter(|c| (100..=999).contains(c));
    let code = match (status, server_code) {
        (Some(Status::Error), Some(c)) => c,
        _ => status::INTERNAL,
    };
    Some(Response {
        opcode,
        request_id,
        timestamp_ms: 0,
        status: Status::Error,
        code,
        body: ResponseBody::Error(ErrorBody { reason: format!("undecodable answer: {error}"), retry_after_ms: 0 }),
    })
}
