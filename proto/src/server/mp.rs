//! Private messages ("MP", tunnels): request and accept, sealed messages,
//! close, delivery acknowledgements, offline queues and their retention.
//!
//! Everything one user sends another travels in the *lane* `from -> to`,
//! numbered by a sequence that only grows: the MP request, the acceptance,
//! the messages, the close. An item stays queued until the recipient
//! acknowledges its sequence number, and is sent again after every login
//! until then; the client drops sequence numbers it has already seen, which
//! makes delivery exactly-once and in order.

//!
//! The lanes' state is the [`LaneBook`](super::state::LaneBook) of the
//! journal's state; [`Mail`] reads it and commits changes to it, and
//! reaches online recipients through the outbox.

use std::sync::Arc;

use bytes::Bytes;

use super::mail_item::MailItem;
use super::mailbox::mail_to;
use super::outbox::{Journal, Outbox};
use super::presence::Presence;
use super::refusal::{Flow, Refusal, Reply};
use super::state::{Change, Conversation, ItemKind, QueuedItem, State};
use super::{ServerConfig, ServerLog, SessionId};
use crate::Now;
use crate::wire::{
    AcceptMp, EventBody, MpAccepted, MpClosed, MpExpired, MpRequest, PeerGone, PeerKeys, RequestMp, ResponseBody,
    SendMp, Sent, Status, UserMessage, status,
};

/// The parts a private-message request works with: the journal (lanes and
/// conversations), who is online, and the outbox.
pub(super) struct Mail<'a> {
    pub(super) now: Now,
    pub(super) config: &'a ServerConfig,
    pub(super) journal: &'a mut Journal,
    pub(super) presence: &'a Presence,
    pub(super) outbox: &'a mut Outbox,
}

impl Mail<'_> {
    pub(super) fn request(&mut self, user: &str, b: RequestMp) -> Flow {
        self.check_peer(user, &b.peer)?;
        let peer = b.peer;
        if let Some(refusal) = request_conflict(self.journal.state().conversation(user, &peer), user, &peer) {
            return Err(refusal);
        }
        self.check_room_in_queue(&peer)?;
        let identity_key = self.identity_key(user);
        let state = Conversation::Requested { by: user.to_owned(), handshake: b.handshake.clone() };
        self.journal.commit(Change::ConversationSet { a: user.to_owned(), b: peer.clone(), state: Some(state) });
        let kind = ItemKind::Request { identity_key, handshake: b.handshake };
        let (seq, online) = self.enqueue(&Arc::from(user), &peer, kind, None);
        Ok(Reply::valid(delivered_code(online), ResponseBody::Sent(Sent { seq })))
    }

    pub(super) fn accept(&mut self, user: &str, b: AcceptMp) -> Flow {
        self.check_peer(user, &b.peer)?;
        let peer = b.peer;
        let handshake = match self.journal.state().conversation(user, &peer) {
            Some(Conversation::Requested { by, handshake }) if *by == peer => handshake.clone(),
            Some(Conversation::Open) => {
                return Err(Refusal::Conflict(format!("conversation with {peer} already open")));
            }
            _ => return Err(Refusal::NotFound(format!("no pending request from {peer}"))),
        };
        self.check_room_in_queue(&peer)?;
        let open = Some(Conversation::Open);
        self.journal.commit(Change::ConversationSet { a: user.to_owned(), b: peer.clone(), state: open });
        let kind = ItemKind::Accepted { identity_key: self.identity_key(user), handshake: b.handshake };
        self.enqueue(&Arc::from(user), &peer, kind, None);
        let body = PeerKeys { identity_key: self.identity_key(&peer), peer, handshake };
        Ok(Reply::ok(ResponseBody::PeerKeys(body)))
    }

    /// Routes a sealed message. With `record` (the token family and request id), the
    /// answer is remembered for retries in the same change as the item (`Change::MessageSent`).
    pub(super) fn send(&mut self, user: &Arc<str>, b: SendMp, record: Option<(u64, u32)>) -> Flow {
        let peer = b.peer;
        if self.journal.state().conversation(user, &peer) != Some(&Conversation::Open) {
            self.check_peer(user, &peer)?;
            return Err(Refusal::Forbidden(format!("no open conversation with {peer}: request_mp first")));
        }
        // An open conversation is between two accounts (never with oneself, and accounts are
        // never deleted): the peer needs no other check on the routing path.
        debug_assert!(peer != **user && self.journal.state().user(&peer).is_some());
        if b.sealed.is_empty() {
            return Err(Refusal::BadRequest("empty message".into()));
        }
        self.check_room_in_queue(&peer)?;
        let (seq, online) = self.enqueue(user, &peer, ItemKind::Message { sealed: b.sealed }, record);
        Ok(Reply::valid(delivered_code(online), ResponseBody::Sent(Sent { seq })))
    }

    pub(super) fn close(&mut self, user: &str, peer: &str) -> Flow {
        self.check_peer(user, peer)?;
        let peer = peer.to_owned();
        if self.journal.state().conversation(user, &peer).is_none() {
            return Err(Refusal::NotFound(format!("no conversation with {peer}")));
        }
        self.journal.commit(Change::ConversationSet { a: user.to_owned(), b: peer.clone(), state: None });
        // The close notice is small and must get through: it is not refused by queue bounds.
        let kind = ItemKind::Closed { reason: "closed by peer".into() };
        let (seq, _) = self.enqueue(&Arc::from(user), &peer, kind, None);
        Ok(Reply { status: Status::Finished, code: status::OK, body: ResponseBody::Sent(Sent { seq }) })
    }

    pub(super) fn ack(&mut self, user: &str, peer: &str, seq: u64) -> Flow {
        let lanes = self.journal.state().lanes();
        let last = lanes.next_seq(peer, user) - 1;
        if seq > last {
            return Err(Refusal::BadRequest(format!("ack of {seq} beyond the last sequence {last} from {peer}")));
        }
        let pending = lanes.lane(peer, user).and_then(|l| l.items.front()).is_some_and(|i| i.seq <= seq);
        if pending {
            self.journal.commit(Change::Acked { from: peer.to_owned(), to: user.to_owned(), upto: seq });
        }
        Ok(Reply::ok(ResponseBody::Empty))
    }

    /// Sends every unacknowledged item and notice for `user` to `session`, lane by lane, in order.
    pub(super) fn deliver_queued(&mut self, session: SessionId, user: &str) {
        let lanes = self.journal.state().lanes();
        for from in lanes.senders_to(user) {
            for item in lanes.lane(from, user).into_iter().flat_map(|l| l.items.iter()) {
                self.outbox.send_event(self.now, session, 0, item_event(from, item.clone()));
            }
        }
        let notices = lanes.notices(user);
        if !notices.is_empty() {
            for (peer, seq) in notices {
                let body = EventBody::MpExpired(MpExpired { peer: peer.clone(), seq: *seq });
                self.outbox.send_event(self.now, session, 0, body);
            }
            self.journal.commit(Change::NoticesCleared { user: user.to_owned() });
        }
    }

    /// Tells the online peers of `user`'s open conversations that it left
    /// (peers of another home by mail, which tells them if online).
    pub(super) fn notify_peer_gone(&mut self, user: &str) {
        let lanes = self.journal.state().lanes();
        let parts = self.config.partitions;
        // Peers of other homes, by home: one notice per home.
        let mut away: std::collections::BTreeMap<_, Vec<String>> = std::collections::BTreeMap::new();
        for (peer, _) in lanes.conversations_of(user).filter(|(_, c)| **c == Conversation::Open) {
            if let Some(home) = parts.elsewhere(peer) {
                away.entry(home).or_default().push(peer.clone());
            } else if let Some(session) = self.presence.online(peer) {
                self.outbox.send_event(self.now, session, 0, EventBody::PeerGone(PeerGone { peer: user.to_owned() }));
            }
        }
        for (home, users) in away {
            let ticket = self.journal.state().mail().next_to(home);
            mail_to(self.journal, home, &MailItem::PeerGone { ticket, peer: user.to_owned(), users });
        }
    }

    /// Drops items older than the retention period (telling their senders)
    /// and forgets expired tokens and OIDC logins.
    pub(super) fn sweep(&mut self) {
        let now = self.now;
        let retention = self.config.mp_retention.as_millis() as u64;
        let mut dropped = Vec::new();
        for (from, to, lane) in self.journal.state().lanes().lanes() {
            for item in lane.items.iter().take_while(|i| i.sent_ms.saturating_add(retention) <= now.unix_ms) {
                dropped.push((from.clone(), to.clone(), item.seq, matches!(item.kind, ItemKind::Message { .. })));
            }
        }
        for (from, to, seq, is_message) in dropped {
            self.journal.commit(Change::Dropped { from: from.clone(), to: to.clone(), seq });
            self.outbox.event(ServerLog::MessageExpired { from: from.clone(), to: to.clone(), seq });
            if !is_message {
                continue;
            }
            if let Some(home) = self.config.partitions.elsewhere(&from) {
                let ticket = self.journal.state().mail().next_to(home);
                mail_to(self.journal, home, &MailItem::MpExpired { ticket, user: from, peer: to, seq });
                continue;
            }
            match self.presence.online(&from) {
                Some(session) => {
                    self.outbox.send_event(now, session, 0, EventBody::MpExpired(MpExpired { peer: to, seq }));
                }
                None => self.journal.commit(Change::NoticeAdded { user: from, peer: to, seq }),
            }
        }
        // Expired tokens are kept for a grace period so that their holders
        // hear "expired" (419), not "unknown" (401).
        let before_ms = now.unix_ms.saturating_sub(self.config.token_grace.as_millis() as u64);
        if self.journal.state().purge_due(before_ms) {
            self.journal.commit(Change::TokensPurged { before_ms });
        }
    }

    /// Queues an item in `from -> to` and sends it if `to` is online. Returns its sequence and
    /// whether it was sent. With `record`, the `send_mp` answer (`Sent`) is remembered too.
    pub(super) fn enqueue(
        &mut self,
        from: &Arc<str>,
        to: &str,
        kind: ItemKind,
        record: Option<(u64, u32)>,
    ) -> (u64, bool) {
        let seq = self.journal.state().next_seq(from, to);
        let item = QueuedItem { seq, sent_ms: self.now.unix_ms, kind };
        // An online recipient's name is shared with its session: no copy per message.
        let (to, target) = match self.presence.online_named(to) {
            Some((name, session)) => {
                self.outbox.send_event(self.now, session, 0, item_event(from, item.clone()));
                (name.clone(), Some(session))
            }
            None => (Arc::from(to), None),
        };
        let from = from.clone();
        let change = match record {
            None => Change::Enqueued { from, to, item },
            Some((family, request_id)) => {
                let code = delivered_code(target.is_some());
                Change::MessageSent { from, to, item, family, request_id, code }
            }
        };
        self.journal.commit(change);
        (seq, target.is_some())
    }

    pub(super) fn check_room_in_queue(&self, peer: &str) -> Result<(), Refusal> {
        let lanes = self.journal.state().lanes();
        let queued = lanes.queued_for(peer);
        if queued >= self.config.queue_per_recipient {
            return Err(Refusal::QueueFull(format!("{peer} has {queued} undelivered items: try again later")));
        }
        // Split states: each partition holds its share of the server's queue.
        if lanes.queued_total() >= self.config.partitions.share(self.config.queue_total) {
            return Err(Refusal::QueueFull("the server's message queue is full: try again later".into()));
        }
        Ok(())
    }

    /// Validates the other end of a conversation.
    fn check_peer(&self, user: &str, peer: &str) -> Result<(), Refusal> {
        if peer == user {
            return Err(Refusal::BadRequest("a conversation needs another user".into()));
        }
        if self.journal.state().user(peer).is_none() {
            return Err(Refusal::NotFound(format!("no user {peer}")));
        }
        Ok(())
    }

    fn identity_key(&self, user: &str) -> Bytes {
        identity_key(self.journal.state(), user)
    }
}

/// `user`'s identity key (empty for an account without one, or no account).
pub(super) fn identity_key(state: &State, user: &str) -> Bytes {
    state.user(user).map(|u| u.identity_key.clone()).unwrap_or_default()
}

/// Why `user` may not ask `peer` for a conversation whose state is
/// `copy`, if it may not: one rule for one home and across two (where
/// `copy` is the home's copy, perhaps tentative).
pub(super) fn request_conflict(copy: Option<&Conversation>, user: &str, peer: &str) -> Option<Refusal> {
    let reason = match copy? {
        Conversation::Open => format!("conversation with {peer} already open"),
        Conversation::Requested { by, .. } | Conversation::Requesting { by, .. } if by == user => {
            format!("already asked {peer}: waiting for an answer")
        }
        Conversation::Requested { .. } | Conversation::Requesting { .. } | Conversation::Accepting { .. } => {
            format!("{peer} already asked you: accept instead")
        }
    };
    Some(Refusal::Conflict(reason))
}

pub(super) fn delivered_code(online: bool) -> u16 {
    if online { status::OK } else { status::ACCEPTED }
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::server::keyed::Keyed;
    use crate::server::state::{SecretHash, State, User};
    use crate::wire::{Limits, Message};

    struct Parts {
        config: ServerConfig,
        journal: Journal,
        presence: Presence,
        outbox: Outbox,
        now: Now,
    }

    impl Parts {
        fn new(config: ServerConfig) -> Parts {
            let mut journal = Journal::new(State::new(20, 8));
            for name in ["al", "bo"] {
                let user = User {
                    password: SecretHash::EXTERNAL,
                    passphrase: SecretHash::EXTERNAL,
                    identity_key: Bytes::from(format!("key-{name}")),
                    secret: [0; 32],
                    created_ms: 0,
                };
                journal.commit(Change::UserCreated { username: name.into(), user });
            }
            let now = Now::new(Instant::now(), 1_000);
            let presence = Presence::new(Keyed::derive(&[0; 32], "test"));
            Parts { config, journal, presence, outbox: Outbox::default(), now }
        }

        fn mail(&mut self) -> Mail<'_> {
            Mail {
                now: self.now,
                config: &self.config,
                journal: &mut self.journal,
                presence: &self.presence,
                outbox: &mut self.outbox,
            }
        }

        fn online(&mut self, user: &str) -> SessionId {
            let c = &self.config;
            let s = self.presence.open(
                self.now.instant,
                Limits::DEFAULT,
                crate::server::SourceKey::Local,
                c.keepalive_interval,
                9,
            );
            let s = s.expect("session");
            self.presence.bind(s, user, 1);
            self.outbox.open(s);
            s
        }

        /// The events sent to `session` since the last call.
        fn events(&mut self, session: SessionId) -> Vec<EventBody> {
            let mut out = Vec::new();
            for (s, bytes) in self.outbox.take_transmits() {
                let mut d = crate::wire::FrameDecoder::new(Limits::DEFAULT);
                d.push(&bytes);
                while let Ok(Some(f)) = d.next_frame() {
                    if let (true, Ok(Message::Event(e))) = (s == session, Message::decode(&f, &Limits::DEFAULT)) {
                        out.push(e.body);
                    }
                }
            }
            out
        }
    }

    fn code_of(flow: Flow) -> u16 {
        flow.map_or_else(|r| r.code(), |r| r.code)
    }

    #[test]
    fn an_offline_peer_gets_its_queue_in_order_at_login_until_it_acknowledges() {
        let mut p = Parts::new(ServerConfig::default());
        let hs = || Bytes::from_static(b"hs");
        assert_eq!(code_of(p.mail().request("al", RequestMp { peer: "bo".into(), handshake: hs() })), status::ACCEPTED);
        assert_eq!(code_of(p.mail().request("al", RequestMp { peer: "bo".into(), handshake: hs() })), status::CONFLICT);
        assert_eq!(
            code_of(p.mail().request("al", RequestMp { peer: "al".into(), handshake: hs() })),
            status::BAD_REQUEST
        );
        assert_eq!(code_of(p.mail().accept("bo", AcceptMp { peer: "al".into(), handshake: hs() })), status::OK);
        let message = |s: &'static [u8]| SendMp { peer: "bo".into(), sealed: Bytes::from_static(s) };
        assert_eq!(code_of(p.mail().send(&"al".into(), message(b"one"), None)), status::ACCEPTED);
        assert_eq!(code_of(p.mail().send(&"al".into(), message(b""), None)), status::BAD_REQUEST);
        let bo = p.online("bo");
        p.mail().deliver_queued(bo, "bo");
        let seqs: Vec<u64> = p
            .events(bo)
            .into_iter()
            .map(|e| match e {
                EventBody::MpRequest(r) => r.seq,
                EventBody::UserMessage(m) => m.seq,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(seqs, [1, 2]);
        assert_eq!(code_of(p.mail().ack("bo", "al", 3)), status::BAD_REQUEST, "beyond the last");
        assert_eq!(code_of(p.mail().ack("bo", "al", 2)), status::OK);
        assert_eq!(p.journal.state().lanes().queued_for("bo"), 0);
        assert_eq!(p.journal.state().lanes().queued_for("al"), 1, "bo's acceptance waits for al");
        // Online now: the next one goes out at once.
        assert_eq!(code_of(p.mail().send(&"al".into(), message(b"two"), None)), status::OK);
        assert!(matches!(&p.events(bo)[..], [EventBody::UserMessage(m)] if m.seq == 3));
    }

    #[test]
    fn queues_are_bounded_and_expired_messages_are_reported_to_their_sender() {
        let config =
            ServerConfig { queue_per_recipient: 1, mp_retention: Duration::from_secs(60), ..ServerConfig::default() };
        let mut p = Parts::new(config);
        let hs = || Bytes::from_static(b"hs");
        assert_eq!(code_of(p.mail().request("al", RequestMp { peer: "bo".into(), handshake: hs() })), status::ACCEPTED);
        let full = p.mail().request("bo", RequestMp { peer: "al".into(), handshake: hs() });
        assert_eq!(code_of(full), status::CONFLICT, "al already asked bo");
        p.journal.commit(Change::ConversationSet { a: "al".into(), b: "bo".into(), state: Some(Conversation::Open) });
        let refused = p.mail().send(&"al".into(), SendMp { peer: "bo".into(), sealed: Bytes::from_static(b"x") }, None);
        assert_eq!(code_of(refused), status::QUEUE_FULL);
        p.journal.commit(Change::Acked { from: "al".into(), to: "bo".into(), upto: 1 });
        let queued = p.mail().send(&"al".into(), SendMp { peer: "bo".into(), sealed: Bytes::from_static(b"x") }, None);
        assert_eq!(code_of(queued), status::ACCEPTED);
        p.now = p.now.advance(Duration::from_secs(61));
        p.mail().sweep();
        assert_eq!(p.journal.state().lanes().queued_total(), 0);
        assert_eq!(p.journal.state().lanes().notices("al"), [("bo".to_owned(), 2)], "al was offline: a notice");
        let al = p.online("al");
        p.mail().deliver_queued(al, "al");
        assert!(matches!(&p.events(al)[..], [EventBody::MpExpired(e)] if e.seq == 2 && e.peer == "bo"));
        assert!(p.journal.state().lanes().notices("al").is_empty());
    }
}
