//! How a simulated user reacts to what its client reports: outcomes of
//! its requests, deliveries, offers and sessions, and what a hostile
//! server's replays must yield.

use bytes::Bytes;
use confab_proto::ClientEvent;
use confab_proto::e2e::{DecryptError, OpenError, SecureEvent};
use confab_proto::wire::{ResponseBody, status};

use super::{Ctx, Phase, Req, User};
use crate::check::Invariant;
use crate::ledger::{Delivery, DeliveryKind, Outcome, Target};
use crate::machine::Machine;

impl User {
    /// A secure-layer event: offers are accepted, sessions become open,
    /// opened messages are delivered; anything that did not verify or open
    /// is a violation (the simulated network never tampers).
    pub(super) fn on_secure(&mut self, client: &mut Machine, ctx: &mut Ctx<'_>, e: SecureEvent) -> bool {
        let me = self.name.clone();
        if ctx.replay {
            return self.on_replayed(client, ctx, e);
        }
        match e {
            SecureEvent::MpOffered { from, .. } => {
                self.deliver(ctx, from.clone(), DeliveryKind::MpRequest, 0, Bytes::new());
                self.open.remove(&from);
                self.asked.remove(&from);
                self.accepting.insert(from.clone());
                let r = client.accept_mp(ctx.now, &from, Bytes::new());
                return self.issue(ctx, r, Req::AcceptMp(from));
            }
            SecureEvent::MpReady { peer } => {
                self.record_session_keys(client, ctx, &peer);
                if self.asked.remove(&peer) {
                    self.deliver(ctx, peer.clone(), DeliveryKind::MpAccepted, 0, Bytes::new());
                    self.open.insert(peer);
                }
            }
            SecureEvent::Mp { from, text, .. } => {
                self.deliver(ctx, from, DeliveryKind::Message, 0, Bytes::from(text));
            }
            SecureEvent::Room { room, from, seq, text, history, .. } => {
                let text = Bytes::from(text);
                if history {
                    // Already delivered live, or from before this member joined: it must be a known post.
                    let known =
                        ctx.ledger.post(&text).is_some_and(|p| p.from == from && p.to == Target::Room(room.clone()));
                    if !known {
                        let shown = String::from_utf8_lossy(&text);
                        ctx.violate(
                            Invariant::Opacity,
                            format!("{me}: {room} history opened to {shown:?}, never sent"),
                        );
                    }
                } else {
                    self.deliver(ctx, from, DeliveryKind::Room(room), seq, text);
                }
            }
            SecureEvent::MpExpiredLocally { .. } => {}
            // A live message of a room whose join (retried on a new
            // connection) is not answered yet, or whose join was
            // indeterminate (written before a lost session: the server may
            // have made this user a member, the key never came): the key
            // comes with a join answer, whose history holds the message.
            SecureEvent::DecryptFailed { room: Some(room), reason: DecryptError::NoRoomKey, .. }
                if self.joining.contains(&room) || !self.rooms.contains(&room) => {}
            e @ (SecureEvent::KeyChanged { .. }
            | SecureEvent::HandshakeRejected { .. }
            | SecureEvent::DecryptFailed { .. }) => {
                ctx.violate(Invariant::Opacity, format!("{me}: {e:?}"));
            }
            SecureEvent::Plain(e) => return self.on_event(client, ctx, e),
        }
        false
    }

    /// What the secure layer made of an item the hostile server replayed:
    /// refused as a replay, or not opened at all (its keys are gone). Anything it accepted is still delivered,
    /// so that the ledger's duplicate checks see it too.
    fn on_replayed(&mut self, client: &mut Machine, ctx: &mut Ctx<'_>, e: SecureEvent) -> bool {
        let me = self.name.clone();
        match e {
            SecureEvent::DecryptFailed {
                reason:
                    DecryptError::Open(OpenError::Replayed { .. } | OpenError::TooOld { .. } | OpenError::Stale { .. }),
                ..
            } => ctx.stats.replays_refused += 1,
            SecureEvent::HandshakeRejected { ref reason, .. } if reason.contains("replayed") => {
                ctx.stats.replays_refused += 1;
            }
            // Not opened for another reason (the session or room key it was
            // sealed under is gone: a conversation closed and opened again, a
            // room left): refused all the same, and harmless.
            SecureEvent::DecryptFailed { .. } | SecureEvent::HandshakeRejected { .. } => {
                ctx.stats.replays_unopened += 1;
            }
            e @ (SecureEvent::Mp { .. } | SecureEvent::Room { .. } | SecureEvent::MpOffered { .. }) => {
                ctx.violate(Invariant::Replay, format!("{me}: replayed item accepted: {e:?}"));
                ctx.replay = false;
                let acted = self.on_secure(client, ctx, e);
                ctx.replay = true;
                return acted;
            }
            e => ctx.violate(Invariant::Replay, format!("{me}: replayed item refused unexpectedly: {e:?}")),
        }
        false
    }

    /// Keeps the content keys of the session with `peer`, for leak checks.
    fn record_session_keys(&self, client: &Machine, ctx: &mut Ctx<'_>, peer: &str) {
        let Some(session) = client.secure().and_then(|s| s.session(peer)) else { return };
        for (dir, key) in [("send", session.send_stream()), ("receive", session.opener().stream())] {
            let what = format!("MP {dir} stream key of {} with {peer}", self.name);
            ctx.ledger.content_key(what, key.as_bytes());
        }
        let what = format!("MP send epoch keys of {} with {peer}", self.name);
        ctx.ledger.content_key(what, &session.sealer().keys().to_bytes());
    }

    pub(super) fn on_event(&mut self, client: &mut Machine, ctx: &mut Ctx<'_>, e: ClientEvent) -> bool {
        let me = self.name.clone();
        match e {
            ClientEvent::Done { request_id, code, body, .. } => return self.done(ctx, request_id, code, body),
            ClientEvent::Failed { request_id, code, reason, .. } => {
                return self.failed(client, ctx, request_id, code, reason);
            }
            ClientEvent::Indeterminate { request_id, reason, .. } => {
                return self.indeterminate(ctx, request_id, reason);
            }
            ClientEvent::LoggedIn { request_id, .. } => {
                self.requests.remove(&request_id);
                self.phase = Phase::LoggedIn;
            }
            ClientEvent::LoggedOut { request_id } => {
                self.requests.remove(&request_id);
                self.phase = Phase::Registered;
            }
            ClientEvent::ExternalTokenNeeded { .. } => return self.renew_token(client, ctx),
            ClientEvent::Connected { .. }
            | ClientEvent::CaughtUp
            | ClientEvent::PeerGone { .. }
            | ClientEvent::Closed { .. } => {}
            ClientEvent::UserMessage { from, seq, sealed, .. } => {
                self.deliver(ctx, from, DeliveryKind::Message, seq, sealed);
            }
            ClientEvent::MpRequest { from, seq, handshake, .. } => {
                self.deliver(ctx, from.clone(), DeliveryKind::MpRequest, seq, Bytes::new());
                self.open.remove(&from);
                self.asked.remove(&from);
                self.accepting.insert(from.clone());
                let n = self.next();
                let hs = Bytes::from(format!("hs:{me}->{from}:{n}:re:{}", handshake.len()));
                let r = client.accept_mp(ctx.now, &from, hs);
                return self.issue(ctx, r, Req::AcceptMp(from));
            }
            ClientEvent::MpAccepted { peer, seq, .. } => {
                self.deliver(ctx, peer.clone(), DeliveryKind::MpAccepted, seq, Bytes::new());
                self.asked.remove(&peer);
                self.open.insert(peer);
            }
            ClientEvent::MpClosed { peer, seq, .. } => {
                self.deliver(ctx, peer.clone(), DeliveryKind::MpClosed, seq, Bytes::new());
                self.asked.remove(&peer);
                self.open.remove(&peer);
            }
            ClientEvent::RoomMessage { room, from, seq, sealed, .. } => {
                self.deliver(ctx, from, DeliveryKind::Room(room), seq, sealed)
            }
            ClientEvent::MpExpired { peer, seq } => ctx.violate(
                Invariant::Protocol,
                format!("{me}: message {seq} to {peer} expired, long before the retention period"),
            ),
            ClientEvent::ServerError { code, reason, .. } => {
                ctx.violate(Invariant::Protocol, format!("{me}: server error event {code}: {reason}"));
            }
            ClientEvent::BadFrame { error } => {
                ctx.violate(Invariant::Protocol, format!("{me}: undecodable frame: {error}"));
            }
        }
        false
    }

    fn deliver(&mut self, ctx: &mut Ctx<'_>, from: String, kind: DeliveryKind, seq: u64, sealed: Bytes) {
        let at = ctx.at;
        ctx.ledger.delivered(&self.name, Delivery { at, from, kind, seq, sealed });
    }

    fn done(&mut self, ctx: &mut Ctx<'_>, id: u32, code: u16, body: ResponseBody) -> bool {
        if self.maybe_reused.remove(&id) {
            return self.answered_from_record(ctx, id);
        }
        let Some(req) = self.requests.remove(&id) else {
            if self.reused_below > 0 && id <= self.reused_below {
                // A request of the old copy's outbox, sent again: its outcome went to the lost state.
                ctx.stats.reused_ids += 1;
                return false;
            }
            let me = &self.name;
            ctx.violate(Invariant::Protocol, format!("{me}: Done for request {id}, which has no outcome pending"));
            return false;
        };
        let seq = match &body {
            ResponseBody::Sent(s) => Some(s.seq),
            _ => None,
        };
        match req {
            Req::Register => self.phase = Phase::Registered,
            Req::Login | Req::SetIdentityKey => self.phase = Phase::LoggedIn,
            Req::CreateRoom(room) | Req::JoinRoom(room) => {
                self.joining.remove(&room);
                self.rooms.insert(room);
            }
            Req::History | Req::RequestMp(_) => {}
            Req::AcceptMp(peer) => {
                self.accepting.remove(&peer);
                self.open.insert(peer);
            }
            Req::CloseMp(peer) => {
                self.open.remove(&peer);
                self.asked.remove(&peer);
            }
            Req::SendRoom(sealed) | Req::SendMp(sealed) => match seq {
                Some(seq) => ctx.ledger.settle(&sealed, Outcome::Acked { seq, code }),
                None => {
                    let me = &self.name;
                    ctx.violate(Invariant::Protocol, format!("{me}: send {id} answered without a sequence number"));
                }
            },
        }
        false
    }

    fn failed(&mut self, client: &mut Machine, ctx: &mut Ctx<'_>, id: u32, code: u16, reason: String) -> bool {
        if self.maybe_reused.remove(&id) {
            return self.answered_from_record(ctx, id);
        }
        let Some(req) = self.requests.remove(&id) else {
            // A request the client made on its own (refresh, acknowledgement).
            ctx.stats.internal_failures += 1;
            return false;
        };
        let me = self.name.clone();
        match req {
            Req::Register => self.phase = if code == status::CONFLICT { Phase::Registered } else { Phase::New },
            // 401: the account may not exist (its registration was lost): register (again).
            Req::Login => self.phase = if code == status::UNAUTHORIZED { Phase::New } else { Phase::Registered },
            // 409: the key is already registered (an earlier attempt was performed).
            Req::SetIdentityKey => self.phase = if code == status::CONFLICT { Phase::LoggedIn } else { Phase::New },
            Req::CreateRoom(room) => {
                self.joining.remove(&room);
                if code == status::CONFLICT {
                    return self.join(client, ctx, room);
                }
                self.unexpected(ctx, "create_room", code, &reason);
            }
            Req::JoinRoom(room) => {
                self.joining.remove(&room);
                if code == status::NOT_FOUND {
                    return self.create(client, ctx, room);
                }
                self.unexpected(ctx, "join_room", code, &reason);
            }
            Req::History => self.unexpected(ctx, "room_history", code, &reason),
            Req::RequestMp(peer) => {
                self.asked.remove(&peer);
                if reason.contains("already open") {
                    self.open.insert(peer);
                }
            }
            Req::AcceptMp(peer) => {
                self.accepting.remove(&peer);
                if code == status::CONFLICT {
                    self.open.insert(peer);
                }
            }
            Req::CloseMp(_) => {}
            // The login ended (a refresh token reused: issue 10) before the message went out.
            Req::SendRoom(sealed) if code == status::UNAUTHORIZED => {
                ctx.trace.note(ctx.at, &format!("{me}: room send refused {code}: {reason}; resent after login"));
                self.resend.push(sealed);
            }
            Req::SendRoom(sealed) | Req::SendMp(sealed) => {
                ctx.trace.note(ctx.at, &format!("{me}: send failed {code}: {reason}"));
                ctx.ledger.settle(&sealed, Outcome::Failed { code, reason });
            }
        }
        false
    }

    /// Sends again the room messages refused when the previous login ended.
    pub(super) fn resend_refused(&mut self, client: &mut Machine, ctx: &mut Ctx<'_>) -> bool {
        let mut made = false;
        for sealed in std::mem::take(&mut self.resend) {
            let room = match ctx.ledger.post(&sealed).map(|p| &p.to) {
                Some(Target::Room(room)) if self.rooms.contains(room) => room.clone(),
                _ => {
                    let reason = "refused when the login ended, and no longer a member".to_owned();
                    ctx.ledger.settle(&sealed, Outcome::Failed { code: status::UNAUTHORIZED, reason });
                    continue;
                }
            };
            let r = client.send_room(ctx.now, &room, &sealed);
            if self.issue(ctx, r, Req::SendRoom(sealed.clone())) {
                made = true;
            } else {
                let reason = "refused by the client".to_owned();
                ctx.ledger.settle(&sealed, Outcome::Failed { code: 0, reason });
            }
        }
        made
    }

    /// The answer to a request whose id the client's lost state had used:
    /// possibly the server's record of the old request (a known limit of
    /// restoring an old copy: SECURITY.md), so the request may not have been
    /// performed. Treated like an indeterminate outcome.
    fn answered_from_record(&mut self, ctx: &mut Ctx<'_>, id: u32) -> bool {
        ctx.stats.reused_ids += 1;
        let reason = format!("request id {id} reused after a restore from an old copy");
        ctx.trace.note(ctx.at, &format!("{}: {reason}", self.name));
        self.indeterminate(ctx, id, reason)
    }

    /// The client was restored from an old copy of its state: what was in
    /// flight is lost with the state it replaced (indeterminate), and the
    /// user believes what the old copy holds: its rooms and conversations.
    pub(crate) fn restored(&mut self, client: &Machine, ctx: &mut Ctx<'_>, users: &[String]) {
        for (_, req) in std::mem::take(&mut self.requests) {
            if let Req::SendRoom(sealed) | Req::SendMp(sealed) = req {
                let reason = "in flight when the client was restored from an old copy".to_owned();
                ctx.ledger.settle(&sealed, Outcome::Unknown { reason });
            }
        }
        for sealed in std::mem::take(&mut self.resend) {
            // Refused before it was performed, then forgotten with the lost state.
            let reason = "to be resent when the client was restored from an old copy".to_owned();
            ctx.ledger.settle(&sealed, Outcome::Unknown { reason });
        }
        self.maybe_reused.clear();
        self.reused_below = self.max_issued;
        let Some(secure) = client.secure() else { return };
        self.rooms.retain(|r| secure.room_session(r).is_some());
        self.open = users.iter().filter(|u| secure.has_session(u)).cloned().collect();
        self.joining.clear();
        self.asked.clear();
        self.accepting.clear();
        if self.phase == Phase::LoggedIn && !client.is_logged_in() {
            self.phase = Phase::Registered;
        }
    }

    /// A request sent before the session ended, never answered: a send may
    /// or may not have happened; anything else is simply over.
    fn indeterminate(&mut self, ctx: &mut Ctx<'_>, id: u32, reason: String) -> bool {
        match self.requests.remove(&id) {
            Some(Req::SendRoom(sealed) | Req::SendMp(sealed)) => {
                let me = &self.name;
                ctx.trace.note(ctx.at, &format!("{me}: send not confirmed: {reason}"));
                ctx.ledger.settle(&sealed, Outcome::Unknown { reason });
            }
            Some(Req::CreateRoom(room) | Req::JoinRoom(room)) => {
                self.joining.remove(&room);
            }
            Some(Req::RequestMp(peer)) => {
                self.asked.remove(&peer);
            }
            Some(Req::AcceptMp(peer)) => {
                self.accepting.remove(&peer);
            }
            Some(_) => {}
            None => ctx.stats.internal_failures += 1,
        }
        false
    }

    fn unexpected(&mut self, ctx: &mut Ctx<'_>, what: &str, code: u16, reason: &str) {
        // Losing the session fails what was waiting: that is not a protocol error.
        if code != status::UNAUTHORIZED {
            let me = &self.name;
            ctx.violate(Invariant::Protocol, format!("{me}: {what} failed unexpectedly: {code} {reason}"));
        }
    }
}
