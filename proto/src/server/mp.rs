//! Private messages ("MP", tunnels): request and accept, sealed messages,
//! close, delivery acknowledgements, offline queues and their retention.
//!
//! Everything one user sends another travels in the *lane* `from -> to`,
//! numbered by a sequence that only grows: the MP request, the acceptance,
//! the messages, the close. An item stays queued until the recipient
//! acknowledges its sequence number, and is sent again after every login
//! until then; the client drops sequence numbers it has already seen, which
//! makes delivery exactly-once and in order.

use bytes::Bytes;

use super::state::{Change, Conversation, ItemKind, QueuedItem};
use super::{Flow, Server, ServerEvent, SessionId};
use crate::{
    AcceptMp, EventBody, MpAccepted, MpClosed, MpExpired, MpRequest, Now, PeerGone, PeerKeys, RequestMp, ResponseBody,
    SendMp, Sent, Status, UserMessage, code,
};

impl Server {
    pub(super) fn request_mp(&mut self, now: Now, user: &str, b: RequestMp) -> Flow {
        self.check_peer(user, &b.peer)?;
        let peer = b.peer;
        match self.state.conversation(user, &peer) {
            Some(Conversation::Open) => return Err((code::CONFLICT, format!("conversation with {peer} already open"))),
            Some(Conversation::Requested { by, .. }) if by == user => {
                return Err((code::CONFLICT, format!("already asked {peer}: waiting for an answer")));
            }
            Some(Conversation::Requested { .. }) => {
                return Err((code::CONFLICT, format!("{peer} already asked you: accept instead")));
            }
            None => {}
        }
        self.check_room_in_queue(&peer)?;
        let identity_key = self.identity_key(user);
        let state = Conversation::Requested { by: user.to_owned(), handshake: b.handshake.clone() };
        self.commit(Change::ConversationSet { a: user.to_owned(), b: peer.clone(), state: Some(state) });
        let kind = ItemKind::Request { identity_key, handshake: b.handshake };
        let (seq, online) = self.enqueue(now, user, &peer, kind);
        Ok((Status::Valid, delivered_code(online), ResponseBody::Sent(Sent { seq })))
    }

    pub(super) fn accept_mp(&mut self, now: Now, user: &str, b: AcceptMp) -> Flow {
        self.check_peer(user, &b.peer)?;
        let peer = b.peer;
        let handshake = match self.state.conversation(user, &peer) {
            Some(Conversation::Requested { by, handshake }) if *by == peer => handshake.clone(),
            Some(Conversation::Open) => return Err((code::CONFLICT, format!("conversation with {peer} already open"))),
            _ => return Err((code::NOT_FOUND, format!("no pending request from {peer}"))),
        };
        self.check_room_in_queue(&peer)?;
        self.commit(Change::ConversationSet { a: user.to_owned(), b: peer.clone(), state: Some(Conversation::Open) });
        let kind = ItemKind::Accepted { identity_key: self.identity_key(user), handshake: b.handshake };
        self.enqueue(now, user, &peer, kind);
        let body = PeerKeys { identity_key: self.identity_key(&peer), peer, handshake };
        Ok((Status::Valid, code::OK, ResponseBody::PeerKeys(body)))
    }

    pub(super) fn send_mp(&mut self, now: Now, user: &str, b: SendMp) -> Flow {
        self.check_peer(user, &b.peer)?;
        let peer = b.peer;
        if self.state.conversation(user, &peer) != Some(&Conversation::Open) {
            return Err((code::FORBIDDEN, format!("no open conversation with {peer}: request_mp first")));
        }
        if b.sealed.is_empty() {
            return Err((code::BAD_REQUEST, "empty message".into()));
        }
        self.check_room_in_queue(&peer)?;
        let (seq, online) = self.enqueue(now, user, &peer, ItemKind::Message { sealed: b.sealed });
        Ok((Status::Valid, delivered_code(online), ResponseBody::Sent(Sent { seq })))
    }

    pub(super) fn close_mp(&mut self, now: Now, user: &str, peer: &str) -> Flow {
        self.check_peer(user, peer)?;
        let peer = peer.to_owned();
        if self.state.conversation(user, &peer).is_none() {
            return Err((code::NOT_FOUND, format!("no conversation with {peer}")));
        }
        self.commit(Change::ConversationSet { a: user.to_owned(), b: peer.clone(), state: None });
        // The close notice is small and must get through: it is not refused by queue bounds.
        let kind = ItemKind::Closed { reason: "closed by peer".into() };
        let (seq, _) = self.enqueue(now, user, &peer, kind);
        Ok((Status::Finished, code::OK, ResponseBody::Sent(Sent { seq })))
    }

    pub(super) fn delivery_ack(&mut self, user: &str, peer: &str, seq: u64) -> Flow {
        let last = self.state.next_seq(peer, user) - 1;
        if seq > last {
            return Err((code::BAD_REQUEST, format!("ack of {seq} beyond the last sequence {last} from {peer}")));
        }
        let pending = self.state.lane(peer, user).and_then(|l| l.items.front()).is_some_and(|i| i.seq <= seq);
        if pending {
            self.commit(Change::Acked { from: peer.to_owned(), to: user.to_owned(), upto: seq });
        }
        Ok((Status::Valid, code::OK, ResponseBody::Empty))
    }

    /// Sends every unacknowledged item and notice for `user` to `session`, lane by lane, in order.
    pub(super) fn deliver_queued(&mut self, now: Now, session: SessionId, user: &str) {
        let senders: Vec<String> =
            self.state.inbound.get(user).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        for from in senders {
            let items: Vec<QueuedItem> =
                self.state.lane(&from, user).map(|l| l.items.iter().cloned().collect()).unwrap_or_default();
            for item in items {
                self.send_event(now, session, 0, item_event(&from, item));
            }
        }
        if let Some(notices) = self.state.notices.get(user).cloned() {
            for (peer, seq) in notices {
                self.send_event(now, session, 0, EventBody::MpExpired(MpExpired { peer, seq }));
            }
            self.commit(Change::NoticesCleared { user: user.to_owned() });
        }
    }

    /// Tells the online peers of `user`'s open conversations that it left.
    pub(super) fn notify_peer_gone(&mut self, now: Now, user: &str) {
        let peers: Vec<SessionId> = self
            .state
            .conversations
            .get(user)
            .into_iter()
            .flatten()
            .filter(|(_, c)| **c == Conversation::Open)
            .filter_map(|(peer, _)| self.online.get(peer).copied())
            .collect();
        for session in peers {
            self.send_event(now, session, 0, EventBody::PeerGone(PeerGone { peer: user.to_owned() }));
        }
    }

    /// Drops items older than the retention period (telling their senders)
    /// and forgets expired tokens and OIDC logins.
    pub(super) fn sweep(&mut self, now: Now) {
        let retention = self.config.mp_retention.as_millis() as u64;
        let mut dropped = Vec::new();
        for (from, lanes) in &self.state.lanes {
            for (to, lane) in lanes {
                for item in lane.items.iter().take_while(|i| i.sent_ms.saturating_add(retention) <= now.unix_ms) {
                    dropped.push((from.clone(), to.clone(), item.seq, matches!(item.kind, ItemKind::Message { .. })));
                }
            }
        }
        for (from, to, seq, is_message) in dropped {
            self.commit(Change::Dropped { from: from.clone(), to: to.clone(), seq });
            self.events.push_back(ServerEvent::MessageExpired { from: from.clone(), to: to.clone(), seq });
            if !is_message {
                continue;
            }
            match self.online.get(&from).copied() {
                Some(session) => self.send_event(now, session, 0, EventBody::MpExpired(MpExpired { peer: to, seq })),
                None => self.commit(Change::NoticeAdded { user: from, peer: to, seq }),
            }
        }
        // Expired tokens are kept for a grace period so that their holders
        // hear "expired" (419), not "unknown" (401).
        let before_ms = now.unix_ms.saturating_sub(self.config.token_grace.as_millis() as u64);
        if self.state.purge_due(before_ms) {
            self.commit(Change::TokensPurged { before_ms });
        }
    }

    /// Queues an item in `from -> to` and sends it if `to` is online. Returns its sequence and whether it was sent.
    fn enqueue(&mut self, now: Now, from: &str, to: &str, kind: ItemKind) -> (u64, bool) {
        let seq = self.state.next_seq(from, to);
        let item = QueuedItem { seq, sent_ms: now.unix_ms, kind };
        let target = self.online.get(to).copied();
        if let Some(session) = target {
            self.send_event(now, session, 0, item_event(from, item.clone()));
        }
        self.commit(Change::Enqueued { from: from.to_owned(), to: to.to_owned(), item });
        (seq, target.is_some())
    }

    fn check_room_in_queue(&self, peer: &str) -> Result<(), (u16, String)> {
        let queued = self.state.queued.get(peer).copied().unwrap_or(0);
        if queued >= self.config.queue_per_recipient {
            return Err((code::QUEUE_FULL, format!("{peer} has {queued} undelivered items: try again later")));
        }
        if self.state.queued_total >= self.config.queue_total {
            return Err((code::QUEUE_FULL, "the server's message queue is full: try again later".into()));
        }
        Ok(())
    }

    /// Validates the other end of a conversation.
    fn check_peer(&self, user: &str, peer: &str) -> Result<(), (u16, String)> {
        if peer == user {
            return Err((code::BAD_REQUEST, "a conversation needs another user".into()));
        }
        if !self.state.users.contains_key(peer) {
            return Err((code::NOT_FOUND, format!("no user {peer}")));
        }
        Ok(())
    }

    fn identity_key(&self, user: &str) -> Bytes {
        self.state.users.get(user).map(|u| u.identity_key.clone()).unwrap_or_default()
    }
}

fn delivered_code(online: bool) -> u16 {
    if online { code::OK } else { code::ACCEPTED }
}

/// The event that carries a queued item from `from`.
fn item_event(from: &str, item: QueuedItem) -> EventBody {
    let from = from.to_owned();
    match item.kind {
        ItemKind::Request { identity_key, handshake } => {
            EventBody::MpRequest(MpRequest { from, seq: item.seq, identity_key, handshake })
        }
        ItemKind::Accepted { identity_key, handshake } => {
            EventBody::MpAccepted(MpAccepted { peer: from, seq: item.seq, identity_key, handshake })
        }
        ItemKind::Closed { reason } => EventBody::MpClosed(MpClosed { peer: from, seq: item.seq, reason }),
        ItemKind::Message { sealed } => {
            EventBody::UserMessage(UserMessage { from, seq: item.seq, sent_ms: item.sent_ms, sealed })
        }
    }
}
