//! The server's outputs before a [`Turn`](super::Turn) hands them out: the
//! [`Journal`] (the durable state and the changes of the turn being built)
//! and the [`Outbox`] (jobs, the frames each session has to send, closes,
//! log events).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::keyed::IntKeyedMap;
use super::refusal::{Refusal, Reply};
use super::state::{Change, State};
use super::work::Job;
use super::{Action, ServerLog, SessionId};
use crate::Now;
use crate::wire::{Close, ErrorBody, ErrorEvent, Event, EventBody, Message, Opcode, Response, ResponseBody, Status};

/// The most changes the next turn's buffer is made ready for.
const KEPT_CHANGES: usize = 4096;

/// The largest scratch buffer kept for encoding the next frame.
const KEPT_SCRATCH: usize = 64 * 1024;

/// The most bytes a session's next turn reserves up front (from the size of its last one).
const KEPT_OUTPUT: usize = 256 * 1024;

/// The durable state and the changes made to it that no turn has handed out
/// yet. The only way to change the state is [`commit`](Self::commit), which
/// applies a change *and* records it for the store, so the two never differ.
#[derive(Debug)]
pub(crate) struct Journal {
    state: State,
    /// The changes of the turn being built (handed over whole by [`take`](Self::take)).
    pending: Vec<Change>,
    /// Counts the changes of any room's membership (for caches of who is in a room).
    rooms_generation: u64,
}

impl Journal {
    pub(crate) fn new(state: State) -> Journal {
        Journal { state, pending: Vec::new(), rooms_generation: 0 }
    }

    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// Applies `change` and queues it for the store.
    pub(crate) fn commit(&mut self, change: Change) {
        if matches!(
            change,
            Change::RoomCreated { .. }
                | Change::RoomJoined { .. }
                | Change::RoomLeft { .. }
                | Change::RoomDeleted { .. }
        ) {
            self.rooms_generation += 1;
        }
        self.state.apply(&change);
        self.pending.push(change);
    }

    /// Changes with every change of a room's members (creation and deletion included).
    pub(crate) fn rooms_generation(&self) -> u64 {
        self.rooms_generation
    }

    /// The changes of the turn, in order. The buffer is handed over whole; the next one
    /// starts as large (up to a bound), so steady traffic never regrows it and a burst does
    /// not pin its memory.
    pub(crate) fn take(&mut self) -> Vec<Change> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let next = Vec::with_capacity(self.pending.capacity().min(KEPT_CHANGES));
        std::mem::replace(&mut self.pending, next)
    }
}

/// The frames, closes, jobs and log events waiting to be polled.
///
/// Each open session has a buffer; frames for a session that has none (it
/// is gone) are dropped. A buffer written since the last poll is handed out
/// as one `Transmit`, in the order the sessions were first written to.
///
/// A frame is encoded into one scratch `Vec<u8>` kept hot across frames
/// (`Message::encode_to_vec`: appends of fixed-size fields compile to plain
/// stores, where each `BytesMut::put_*` is a call and a `memcpy`), then
/// appended to the session's own `BytesMut` in one copy. That buffer is
/// reserved as large as the session's recent turns before the first write
/// of a turn, so a busy turn does not regrow and copy it, and is split off
/// as `Bytes`; once the transport has dropped those, the next reservation
/// reuses the same memory. A frame shared by several sessions (a room message,
/// encoded once) that is the first thing a session gets in a turn is kept
/// as that same `Bytes`, not copied: a turn of one room message hands every
/// member the one buffer. Anything written after it joins it in the
/// session's own buffer (one contiguous write per session per turn).
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    work: VecDeque<Job>,
    /// Looked up once per frame (a room message: once per member), never iterated. Session
    /// ids are the server's own choice, so a fixed key is enough.
    buffers: IntKeyedMap<SessionId, Buffer>,
    /// Where each frame is encoded before it is appended to its session's buffer.
    scratch: Vec<u8>,
    /// Sessions with bytes to send, in the order they were first written to.
    dirty: VecDeque<SessionId>,
    /// The last bytes of sessions that ended, before their close.
    last: VecDeque<(SessionId, Bytes)>,
    closes: VecDeque<(SessionId, u16, String)>,
    events: VecDeque<ServerLog>,
}

#[derive(Debug, Default)]
struct Buffer {
    /// Frames for this session alone, in order (after `shared`, if any).
    out: BytesMut,
    /// A frame shared with other sessions, when it was the first written this turn.
    shared: Option<Bytes>,
    dirty: bool,
    /// How much the next turn reserves: the largest of the last turn's output and half
    /// the previous hint (a busy session alternating with small turns, as a sender's
    /// answers and a recipient's acknowledgements do, keeps most of its room); at most
    /// [`KEPT_OUTPUT`].
    hint: usize,
}

impl Buffer {
    /// Everything written since the last call, as one `Bytes` (`None`: nothing).
    fn take(&mut self) -> Option<Bytes> {
        if let Some(shared) = self.shared.take() {
            debug_assert!(self.out.is_empty(), "a write after the shared frame copies it into `out`");
            self.follow(shared.len());
            return Some(shared);
        }
        if self.out.is_empty() {
            return None;
        }
        self.follow(self.out.len());
        Some(self.out.split().freeze())
    }

    fn follow(&mut self, written: usize) {
        self.hint = written.max(self.hint / 2).min(KEPT_OUTPUT);
    }

    /// The session's own buffer, ready for more frames: large enough for a turn like
    /// the last, and holding the shared frame written before, if any.
    fn own(&mut self) -> &mut BytesMut {
        if self.out.is_empty() && self.out.capacity() < self.hint {
            self.out.reserve(self.hint);
        }
        if let Some(shared) = self.shared.take() {
            self.out.extend_from_slice(&shared);
        }
        &mut self.out
    }
}

impl Outbox {
    /// A session opened: frames for it are kept from now on.
    pub(crate) fn open(&mut self, session: SessionId) {
        self.buffers.insert(session, Buffer::default());
    }

    /// A session ended: what it had to send goes out before its close.
    pub(crate) fn end(&mut self, session: SessionId, code: u16, reason: String) {
        if let Some(mut b) = self.buffers.remove(&session)
            && let Some(bytes) = b.take()
        {
            self.last.push_back((session, bytes));
        }
        self.closes.push_back((session, code, reason.clone()));
        self.events.push_back(ServerLog::SessionClosed { session, code, reason });
    }

    pub(crate) fn job(&mut self, job: Job) {
        self.work.push_back(job);
    }

    pub(crate) fn event(&mut self, event: ServerLog) {
        self.events.push_back(event);
    }

    /// A session's buffer, marked for the next `Transmit`.
    fn buffer(&mut self, session: SessionId) -> Option<&mut Buffer> {
        let b = self.buffers.get_mut(&session)?;
        if !b.dirty {
            b.dirty = true;
            self.dirty.push_back(session);
        }
        Some(b)
    }

    pub(crate) fn send(&mut self, session: SessionId, message: Message) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        message.encode_to_vec(&[], &mut scratch);
        if let Some(b) = self.buffer(session) {
            b.own().extend_from_slice(&scratch);
        }
        // A large frame (a room's history) does not pin its size.
        if scratch.capacity() <= KEPT_SCRATCH {
            self.scratch = scratch;
        }
    }

    /// Sends a frame encoded once for several sessions (a room message): kept as the
    /// same `Bytes` if it is the session's only frame of the turn, else copied after the others.
    pub(crate) fn send_shared(&mut self, session: SessionId, frame: &Bytes) {
        if let Some(b) = self.buffer(session) {
            if b.out.is_empty() && b.shared.is_none() {
                b.shared = Some(frame.clone());
            } else {
                b.own().extend_from_slice(frame);
            }
        }
    }

    pub(crate) fn send_event(&mut self, now: Now, session: SessionId, request_id: u32, body: EventBody) {
        self.send(session, Message::Event(Event { request_id, timestamp_ms: now.unix_ms, body }));
    }

    pub(crate) fn respond(&mut self, now: Now, session: SessionId, opcode: Opcode, request_id: u32, reply: Reply) {
        let Reply { status, code, body } = reply;
        let response = Response { opcode, request_id, timestamp_ms: now.unix_ms, status, code, body };
        self.send(session, Message::Response(response));
    }

    /// Answers a refusal and logs it.
    pub(crate) fn refuse(&mut self, now: Now, session: SessionId, opcode: Opcode, request_id: u32, refusal: Refusal) {
        let code = refusal.code();
        let retry_after_ms = refusal.retry_after_ms();
        let reason = match refusal {
            Refusal::RateLimited { reason, .. } => reason,
            other => other.to_string(),
        };
        self.events.push_back(ServerLog::Rejected { session, opcode, code, reason: reason.clone() });
        let body = ResponseBody::Error(ErrorBody { reason, retry_after_ms });
        self.respond(now, session, opcode, request_id, Reply { status: Status::Error, code, body });
    }

    pub(crate) fn error_event(&mut self, now: Now, session: SessionId, code: u16, offset: u64, reason: String) {
        self.send_event(now, session, 0, EventBody::ErrorEvent(ErrorEvent { code, offset, reason }));
    }

    /// Queues a close frame (the session's end follows).
    pub(crate) fn send_close(&mut self, session: SessionId, code: u16, reason: String) {
        self.send(session, Message::Close(Close { code, reason }));
    }

    /// The jobs queued since the last call.
    pub(crate) fn take_jobs(&mut self) -> Vec<Job> {
        self.work.drain(..).collect()
    }

    /// Everything queued since the last call, in a turn's order: the last bytes of ended
    /// sessions, then every written buffer (in the order first written), then the closes,
    /// then the log lines.
    pub(crate) fn take_actions(&mut self) -> Vec<Action> {
        let capacity = self.last.len() + self.dirty.len() + self.closes.len() + self.events.len();
        let mut actions = Vec::with_capacity(capacity);
        actions.extend(self.last.drain(..).map(|(session, bytes)| Action::Transmit { session, bytes }));
        for session in self.dirty.drain(..) {
            if let Some(b) = self.buffers.get_mut(&session) {
                b.dirty = false;
                if let Some(bytes) = b.take() {
                    actions.push(Action::Transmit { session, bytes });
                }
            }
        }
        actions.extend(self.closes.drain(..).map(|(session, code, reason)| Action::Close { session, code, reason }));
        actions.extend(self.events.drain(..).map(Action::Log));
        actions
    }

    /// The transmits queued since the last call (the rest is dropped): for tests of the parts.
    #[cfg(test)]
    pub(crate) fn take_transmits(&mut self) -> Vec<(SessionId, Bytes)> {
        let actions = self.take_actions();
        actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Transmit { session, bytes } => Some((session, bytes)),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::wire::{Limits, Ping};

    fn decode(bytes: &[u8]) -> Vec<Message> {
        let mut d = crate::wire::FrameDecoder::new(Limits::DEFAULT);
        d.push(bytes);
        let mut out = Vec::new();
        while let Ok(Some(f)) = d.next_frame() {
            out.push(Message::decode(&f, &Limits::DEFAULT).unwrap());
        }
        out
    }

    #[test]
    fn one_transmit_per_session_in_first_written_order_and_none_for_the_gone() {
        let mut o = Outbox::default();
        let (a, b, gone) = (SessionId(1), SessionId(2), SessionId(3));
        o.open(a);
        o.open(b);
        o.send(b, Message::Ping(Ping { nonce: 1 }));
        o.send(a, Message::Ping(Ping { nonce: 2 }));
        o.send(b, Message::Ping(Ping { nonce: 3 }));
        o.send(gone, Message::Ping(Ping { nonce: 4 }));
        let transmits = o.take_transmits();
        assert_eq!(transmits.iter().map(|(s, bytes)| (*s, decode(bytes).len())).collect::<Vec<_>>(), [(b, 2), (a, 1)]);
        assert!(o.take_actions().is_empty());
    }

    #[test]
    fn a_shared_frame_is_linked_not_copied_and_keeps_its_place_among_own_frames() {
        let mut o = Outbox::default();
        let (a, b) = (SessionId(1), SessionId(2));
        o.open(a);
        o.open(b);
        let shared = Message::Ping(Ping { nonce: 7 }).to_bytes(&[]);
        let c = SessionId(3);
        o.open(c);
        o.send_shared(a, &shared);
        o.send(b, Message::Ping(Ping { nonce: 1 }));
        o.send_shared(b, &shared);
        o.send(b, Message::Ping(Ping { nonce: 2 }));
        o.send_shared(c, &shared);
        o.send_shared(c, &shared);
        o.send(c, Message::Ping(Ping { nonce: 3 }));
        let transmits = o.take_transmits();
        let [(sa, alone), (sb, mixed), (sc, shared_first)] = &transmits[..] else { panic!("{transmits:?}") };
        assert_eq!((*sa, *sb, *sc), (a, b, c));
        assert_eq!(alone.as_ptr(), shared.as_ptr(), "a turn of one shared frame hands out that very buffer");
        let nonces = |bytes: &Bytes| -> Vec<u64> {
            decode(bytes)
                .into_iter()
                .map(|m| match m {
                    Message::Ping(p) => p.nonce,
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(nonces(mixed), [1, 7, 2], "own, shared, own: in the order written");
        assert_eq!(nonces(shared_first), [7, 7, 3], "shared, shared, own: in the order written");
        assert!(o.take_actions().is_empty());
        o.send_shared(a, &shared);
        o.end(a, 503, "bye".into());
        let actions = o.take_actions();
        assert!(matches!(&actions[0], Action::Transmit { bytes, .. } if bytes.as_ptr() == shared.as_ptr()));
    }

    #[test]
    fn a_busy_session_starts_its_next_turn_with_room_for_as_much() {
        let mut o = Outbox::default();
        let a = SessionId(1);
        o.open(a);
        for nonce in 0..1000 {
            o.send(a, Message::Ping(Ping { nonce }));
        }
        let [(_, first)] = &o.take_transmits()[..] else { panic!("one transmit") };
        o.send(a, Message::Ping(Ping { nonce: 0 }));
        let b = &o.buffers[&a];
        assert!(b.out.capacity() >= first.len(), "{} < {}", b.out.capacity(), first.len());
        let [(_, second)] = &o.take_transmits()[..] else { panic!("one transmit") };
        assert_eq!(second.len(), first.len() / 1000);
        assert_eq!(o.buffers[&a].hint, first.len() / 2, "a small turn halves the hint");
        for _ in 0..20 {
            o.send(a, Message::Ping(Ping { nonce: 0 }));
            let _ = o.take_transmits();
        }
        assert_eq!(o.buffers[&a].hint, second.len(), "down to the size of the turns");
    }

    #[test]
    fn an_ended_session_flushes_before_its_close_and_logs_it() {
        let mut o = Outbox::default();
        let a = SessionId(1);
        o.open(a);
        o.send_close(a, 503, "bye".into());
        o.end(a, 503, "bye".into());
        let actions = o.take_actions();
        let [Action::Transmit { session, bytes }, Action::Close { session: closed, code: 503, .. }, Action::Log(log)] =
            &actions[..]
        else {
            panic!("the last bytes, the close, the log line: {actions:?}")
        };
        assert_eq!((*session, *closed), (a, a));
        assert!(matches!(&decode(bytes)[..], [Message::Close(c)] if c.code == 503));
        assert!(matches!(log, ServerLog::SessionClosed { code: 503, .. }));
        o.send(a, Message::Ping(Ping { nonce: 1 }));
        assert!(o.take_actions().is_empty(), "nothing is kept for an ended session");
    }

    #[test]
    fn a_refusal_is_answered_with_its_code_and_wait_and_logged() {
        let mut o = Outbox::default();
        let a = SessionId(1);
        o.open(a);
        let now = Now::new(Instant::now(), 5);
        let refusal = Refusal::RateLimited { reason: "slow down".into(), retry_after_ms: 1500 };
        o.refuse(now, a, Opcode::Login, 7, refusal);
        let actions = o.take_actions();
        let [Action::Transmit { bytes, .. }, Action::Log(log)] = &actions[..] else { panic!("{actions:?}") };
        let [Message::Response(r)] = &decode(bytes)[..] else { panic!("one response") };
        assert_eq!((r.request_id, r.code, r.status), (7, 429, Status::Error));
        assert_eq!(r.body, ResponseBody::Error(ErrorBody { reason: "slow down".into(), retry_after_ms: 1500 }));
        assert!(matches!(log, ServerLog::Rejected { code: 429, .. }));
    }

    #[test]
    fn the_journal_applies_what_it_queues() {
        let mut j = Journal::new(State::new(20, 8));
        j.commit(Change::NoticeAdded { user: "al".into(), peer: "bo".into(), seq: 1 });
        assert_eq!(j.state().lanes().notices("al").len(), 1);
        assert!(matches!(&j.take()[..], [Change::NoticeAdded { .. }]));
        assert!(j.take().is_empty());
    }
}
