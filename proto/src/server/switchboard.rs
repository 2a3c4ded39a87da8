//! The switchboard of a node serving a split state (docs/PARTITIONS.md,
//! "Routing frames"): which core gets each byte a connection sends.
//!
//! Sans-IO, like the cores: the node tells it what its connections do
//! ([`Switchboard::open`], [`input`](Switchboard::input),
//! [`close`](Switchboard::close)) and what the cores did with the frames
//! they were handed ([`settled`](Switchboard::settled),
//! [`resolved`](Switchboard::resolved)), and drains what to do
//! ([`poll`](Switchboard::poll)): sessions to open and close at cores,
//! bytes to hand them. It reads no clock and draws no random number.
//!
//! - A connection gets a session at partition 0 (or the first partition
//!   the node gives, [`Switchboard::open_at`]) when it opens (whose idle
//!   timeout and session limit bound a connection that never sends a whole
//!   frame), and at any other core with the first frame it sends there
//!   ([`Switched::Open`] comes before that frame).
//! - While a connection is not a session, each frame is routed on its own
//!   ([`route_unbound`]) and handed whole to its partition's core.
//! - A frame routed to a partition (a login step, a refresh, a request with
//!   a token, `jwks`: whatever names someone) holds the connection's later
//!   frames until its core settled it. Its [`Switched::Feed`] carries a
//!   ticket; once that core handled the frame (the feed and the core's turn
//!   after it) and the session is not held
//!   ([`Server::session_held`](crate::Server::session_held)), the node
//!   answers [`settled`](Switchboard::settled) with the ticket and whether
//!   the session is logged in
//!   ([`Server::session_user`](crate::Server::session_user)). A node whose
//!   cores run on its own thread asks them after their turns, for the
//!   connections [`waiting_at`](Switchboard::waiting_at) each. An answer
//!   with another ticket (late, repeated, or for a frame not handed yet)
//!   changes nothing. Bound: every later byte goes to that core, unparsed,
//!   and the connection's sessions at other cores are closed, so that two
//!   pipelined frames carrying two users' tokens never bind one connection
//!   at two cores. Not bound: the frames held are routed on.
//! - A frame carrying an OIDC token waits for the node to resolve its
//!   partition ([`Switched::Resolve`], answered with
//!   [`resolved`](Switchboard::resolved) and its ticket), then goes on as a
//!   frame routed to a partition.
//! - A frame that names nobody (a request without a token, a ping) goes to
//!   the connection's current core (the last one a frame went to, partition
//!   0 at first) and holds nothing; a pong goes to every core where the
//!   connection has a session (each pings its own).
//! - Bytes that do not frame (a bad version, a length past the limits), and
//!   a close frame, go with everything after them to the current core,
//!   which refuses them (or ends the session) as a single server does;
//!   nothing more of the connection is parsed here.
//! - At most `max_held` bytes wait behind a frame (the cores'
//!   `max_deferred_bytes`): past it the connection is refused
//!   ([`Switched::Refuse`], 413) and its sessions closed.
//! - With one partition the connection is bound to partition 0 when it
//!   opens: nothing is parsed or held.
//!
//! The node's side of the contract: do each output before polling the
//! next; use each link id for one connection (not again until its
//! [`Switched::Close`]s were polled); when a core closes a session of a
//! connection, or refuses to open one, close the whole connection (with
//! the core's reason, or 503 for a refused session) as a single server
//! closes its one session; keep mapping a closed session's frames to the
//! connection until the core's turn that closed it is released (its last
//! answers are in it).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Debug;

use bytes::{Bytes, BytesMut};

use super::partition::{PartitionId, Partitions};
use super::router::{FrameRoute, route_unbound};
use crate::wire::{Frame, FrameHeader, FrameType, Limits, Message, RequestBody, status};

/// What the node does for the switchboard.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Switched<L> {
    /// Open a session for `link` at `partition`'s core (before the first
    /// bytes handed there).
    Open {
        /// The connection.
        link: L,
        /// The core.
        partition: PartitionId,
    },
    /// Hand `bytes` to `link`'s session at `partition`'s core.
    Feed {
        /// The connection.
        link: L,
        /// The core.
        partition: PartitionId,
        /// Whole frames while the connection is unbound; any bytes once bound.
        bytes: Bytes,
        /// The frame holds the connection's later frames: once the core
        /// handled it, answer [`Switchboard::settled`] with this ticket.
        ticket: Option<u64>,
    },
    /// End `link`'s session at `partition`'s core (the connection was bound
    /// at another, or it closed).
    Close {
        /// The connection.
        link: L,
        /// The core.
        partition: PartitionId,
    },
    /// Find the partition of a frame carrying an OIDC access token
    /// (`token`), then answer [`Switchboard::resolved`] with `ticket`:
    /// [`oidc_home`](super::oidc_home) with the store's bindings (the
    /// partition of the name its subject is bound to, else the home of the
    /// name the core would give the account).
    Resolve {
        /// The connection.
        link: L,
        /// The frame's auth part.
        token: Bytes,
        /// What the answer names.
        ticket: u64,
    },
    /// Close the connection with a close frame of `code` and `reason` (and
    /// log it): it sent more than `max_held` bytes behind a frame that
    /// held them. Its sessions are closed ([`Switched::Close`] follows).
    Refuse {
        /// The connection.
        link: L,
        /// The close frame's code (413).
        code: u16,
        /// Why.
        reason: String,
    },
}

impl<L: Copy> Switched<L> {
    /// The connection it concerns.
    pub fn link(&self) -> L {
        match self {
            Switched::Open { link, .. }
            | Switched::Feed { link, .. }
            | Switched::Close { link, .. }
            | Switched::Resolve { link, .. }
            | Switched::Refuse { link, .. } => *link,
        }
    }
}

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Frames routed one by one; `waiting` holds the later ones.
    Unbound { waiting: Option<Wait> },
    /// Every byte to this core.
    Bound(PartitionId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// For this core to settle the frame of this ticket.
    Core(PartitionId, u64),
    /// For the node to resolve the partition of an OIDC frame.
    Resolve(u64),
}

#[derive(Debug)]
struct Link {
    phase: Phase,
    /// Bytes not routed yet (unbound only).
    buffer: BytesMut,
    /// The cores where the connection has a session.
    at: BTreeSet<PartitionId>,
    /// The core of the last frame routed (where frames naming nobody go).
    current: PartitionId,
    /// The core of its first session.
    first: PartitionId,
    /// The core of the last `login` (its `passphrase` follows it).
    last_login: Option<PartitionId>,
    /// The OIDC frame waiting for its partition.
    resolving: Option<Bytes>,
    /// Feeds not polled yet: the frame that holds is waited for once polled.
    queued: usize,
}

/// A node's connections in front of its cores. See the [module docs](self).
#[derive(Debug)]
pub struct Switchboard<L> {
    parts: Partitions,
    limits: Limits,
    max_held: usize,
    links: BTreeMap<L, Link>,
    /// Per core, the connections waiting for it to settle a frame handed to it.
    waiting: BTreeMap<PartitionId, BTreeMap<L, u64>>,
    next_ticket: u64,
    out: VecDeque<Switched<L>>,
}

impl<L: Copy + Ord + Debug> Switchboard<L> {
    /// The switchboard of a state split as `parts` says (its index plays
    /// no part), framing with `limits` and holding at most `max_held` bytes
    /// behind a frame: the cores' `limits` and `max_deferred_bytes` (a
    /// frame the cores decode must decode here).
    #[must_use]
    pub fn new(parts: Partitions, limits: Limits, max_held: usize) -> Switchboard<L> {
        Switchboard {
            parts,
            limits,
            max_held,
            links: BTreeMap::new(),
            waiting: BTreeMap::new(),
            next_ticket: 1,
            out: VecDeque::new(),
        }
    }

    /// A connection was accepted: it gets a session at partition 0 (the
    /// only one, bound, when the state is not split). A connection already
    /// open is kept as it is.
    pub fn open(&mut self, link: L) {
        self.open_at(link, 0);
    }

    /// [`open`](Self::open), with the connection's first session at
    /// `first` (out of range: 0): a node that does not serve partition 0
    /// opens it at one it serves, where frames naming nobody go until a
    /// frame goes elsewhere.
    pub fn open_at(&mut self, link: L, first: PartitionId) {
        if self.links.contains_key(&link) {
            return;
        }
        let first = if first < self.parts.count { first } else { 0 };
        let phase = if self.parts.is_split() { Phase::Unbound { waiting: None } } else { Phase::Bound(0) };
        let first = if self.parts.is_split() { first } else { 0 };
        let fresh = Link {
            phase,
            buffer: BytesMut::new(),
            at: BTreeSet::from([first]),
            current: first,
            first,
            last_login: None,
            resolving: None,
            queued: 0,
        };
        self.links.insert(link, fresh);
        self.out.push_back(Switched::Open { link, partition: first });
    }

    /// Bytes arrived on a connection, in any chunking (a bound
    /// connection's are handed on as they are, not copied: give the
    /// transport's buffer, a `Vec<u8>` or [`Bytes`]).
    pub fn input(&mut self, link: L, bytes: impl Into<Bytes>) {
        let Some(l) = self.links.get_mut(&link) else { return };
        let bytes = bytes.into();
        if bytes.is_empty() {
            return;
        }
        match l.phase {
            Phase::Bound(partition) => self.feed(link, partition, bytes, None),
            Phase::Unbound { .. } => {
                l.buffer.extend_from_slice(&bytes);
                self.route(link);
            }
        }
    }

    /// The core of the frame of `ticket` handled it, and `link`'s session
    /// there is not held: logged in (`bound`) or not. An answer that names
    /// another ticket than the one `link` waits on (late, repeated, or
    /// before its feed was polled) changes nothing.
    pub fn settled(&mut self, link: L, ticket: u64, bound: bool) {
        let Some(l) = self.links.get(&link) else { return };
        let Phase::Unbound { waiting: Some(Wait::Core(partition, t)) } = l.phase else { return };
        if t != ticket || self.waiting.get(&partition).and_then(|w| w.get(&link)) != Some(&ticket) {
            return;
        }
        self.unwait(link, partition);
        let Some(l) = self.links.get_mut(&link) else { return };
        if bound {
            l.phase = Phase::Bound(partition);
            l.current = partition;
            for other in std::mem::take(&mut l.at) {
                if other != partition {
                    self.out.push_back(Switched::Close { link, partition: other });
                }
            }
            l.at.insert(partition);
            let rest = l.buffer.split().freeze();
            if !rest.is_empty() {
                self.feed(link, partition, rest, None);
            }
        } else {
            l.phase = Phase::Unbound { waiting: None };
            self.route(link);
        }
    }

    /// The node found that the OIDC frame of `ticket` goes to `partition`
    /// (out of range: to the connection's first core, which refuses it). An answer naming
    /// another ticket changes nothing.
    pub fn resolved(&mut self, link: L, ticket: u64, partition: PartitionId) {
        let Some(l) = self.links.get_mut(&link) else { return };
        if l.phase != (Phase::Unbound { waiting: Some(Wait::Resolve(ticket)) }) {
            return;
        }
        let partition = if partition < self.parts.count { partition } else { l.first };
        l.phase = Phase::Unbound { waiting: None };
        if let Some(frame) = l.resolving.take() {
            self.hand(link, partition, frame, true);
        }
        self.route(link);
    }

    /// The connection closed (or the node closed it): its sessions are
    /// closed, and what was queued for it and not polled is dropped.
    pub fn close(&mut self, link: L) {
        let Some(l) = self.links.remove(&link) else { return };
        if let Phase::Unbound { waiting: Some(Wait::Core(partition, _)) } = l.phase {
            self.unwait(link, partition);
        }
        // A session whose opening was not polled yet was never opened.
        let unopened: BTreeSet<PartitionId> = self
            .out
            .iter()
            .filter_map(|o| match o {
                Switched::Open { link: l, partition } if *l == link => Some(*partition),
                _ => None,
            })
            .collect();
        self.out.retain(|o| o.link() != link);
        for partition in l.at.difference(&unopened) {
            self.out.push_back(Switched::Close { link, partition: *partition });
        }
    }

    /// Takes `link` out of the switchboard to be relayed to the node that
    /// serves `partition`: call it right after polling the
    /// [`Switched::Open`] of `link` at `partition` (which this node does not
    /// serve). Returns what the connection sent that no core was handed,
    /// in order: the frames queued for `partition` and not polled (the one
    /// that opened it first), then the bytes not routed yet. Its sessions
    /// here are closed ([`Switched::Close`] follows for each opened; the
    /// one at `partition` names a core the node does not have).
    #[must_use]
    pub fn detach(&mut self, link: L, partition: PartitionId) -> Bytes {
        let Some(l) = self.links.get(&link) else { return Bytes::new() };
        let mut rest = BytesMut::new();
        for out in &self.out {
            if let Switched::Feed { link: to, partition: p, bytes, .. } = out
                && *to == link
                && *p == partition
            {
                rest.extend_from_slice(bytes);
            }
        }
        if let Some(frame) = &l.resolving {
            rest.extend_from_slice(frame);
        }
        rest.extend_from_slice(&l.buffer);
        self.close(link);
        rest.freeze()
    }

    /// The bytes of a frame not complete yet that `link` sent while
    /// unbound and not held (0 once bound, and while a frame holds the
    /// later ones: those are bounded by `max_held`). The node tells the
    /// connection's first session (at partition 0, or where
    /// [`open_at`](Self::open_at) opened it)
    /// ([`Server::handle_partial`](crate::Server::handle_partial)), so that
    /// a frame dripped before any core sees it is closed at the frame
    /// deadline (408), as a single server closes it.
    #[must_use]
    pub fn partial(&self, link: L) -> usize {
        match self.links.get(&link) {
            Some(l) if l.phase == (Phase::Unbound { waiting: None }) => l.buffer.len(),
            _ => 0,
        }
    }

    /// The connections waiting for `partition`'s core to settle a frame
    /// already polled (handed to it), with the tickets to answer: a node
    /// that runs its cores on its own thread asks the core about each after
    /// its turns.
    pub fn waiting_at(&self, partition: PartitionId) -> impl Iterator<Item = (L, u64)> + '_ {
        self.waiting.get(&partition).into_iter().flatten().map(|(l, t)| (*l, *t))
    }

    /// The core a connection is bound to, if it is.
    #[must_use]
    pub fn bound_to(&self, link: L) -> Option<PartitionId> {
        match self.links.get(&link)?.phase {
            Phase::Bound(p) => Some(p),
            Phase::Unbound { .. } => None,
        }
    }

    /// The next thing to do. Do each before polling the next.
    pub fn poll(&mut self) -> Option<Switched<L>> {
        let next = self.out.pop_front()?;
        if let Switched::Feed { link, .. } = &next
            && let Some(l) = self.links.get_mut(link)
        {
            l.queued = l.queued.saturating_sub(1);
            if l.queued == 0
                && let Phase::Unbound { waiting: Some(Wait::Core(partition, ticket)) } = l.phase
            {
                self.waiting.entry(partition).or_default().insert(*link, ticket);
            }
        }
        Some(next)
    }

    fn feed(&mut self, link: L, partition: PartitionId, bytes: Bytes, ticket: Option<u64>) {
        if let Some(l) = self.links.get_mut(&link) {
            l.queued += 1;
        }
        self.out.push_back(Switched::Feed { link, partition, bytes, ticket });
    }

    fn ticket(&mut self) -> u64 {
        let t = self.next_ticket;
        self.next_ticket += 1;
        t
    }

    /// Routes the connection's whole frames until one holds the rest.
    fn route(&mut self, link: L) {
        loop {
            let Some(l) = self.links.get_mut(&link) else { return };
            if let Phase::Unbound { waiting: Some(_) } = l.phase {
                if l.buffer.len() > self.max_held {
                    return self.refuse(link);
                }
                return;
            }
            if l.phase != (Phase::Unbound { waiting: None }) || l.buffer.is_empty() {
                return;
            }
            let framed = match FrameHeader::parse(&l.buffer, &self.limits) {
                Ok(None) => return,
                Ok(Some(header)) if l.buffer.len() < header.frame_len() => return,
                Ok(Some(header)) => {
                    let bytes = l.buffer.split_to(header.frame_len()).freeze();
                    Frame::parse(&bytes, &self.limits).ok().flatten().map(|(frame, _)| (frame, bytes))
                }
                Err(_) => None,
            };
            let current = l.current;
            let (frame, bytes) = match framed {
                Some((frame, bytes)) if frame.frame_type != FrameType::Close => (frame, bytes),
                other => {
                    // Not framed, or a close frame: the current core refuses it (or ends the
                    // session) as a single server does, and gets everything after it.
                    l.phase = Phase::Bound(current);
                    let rest = l.buffer.split().freeze();
                    let all = match other {
                        Some((_, head)) if rest.is_empty() => head,
                        Some((_, head)) => Bytes::from([head, rest].concat()),
                        None => rest,
                    };
                    return self.hand(link, current, all, false);
                }
            };
            if frame.frame_type == FrameType::Pong {
                // Each core pings its own session: the answer is for all of them.
                let at = l.at.clone();
                for partition in at {
                    self.feed(link, partition, bytes.clone(), None);
                }
                continue;
            }
            let (partition, holds) = match route_unbound(&frame, &self.limits, self.parts, l.last_login) {
                FrameRoute::Partition(p) => (p, true),
                FrameRoute::Anywhere => (current, false),
                FrameRoute::Oidc => {
                    let ticket = self.ticket();
                    let Some(l) = self.links.get_mut(&link) else { return };
                    l.phase = Phase::Unbound { waiting: Some(Wait::Resolve(ticket)) };
                    l.resolving = Some(bytes);
                    self.out.push_back(Switched::Resolve { link, token: frame.auth, ticket });
                    continue;
                }
            };
            if is_login(&frame, &self.limits) {
                l.last_login = Some(partition);
            }
            self.hand(link, partition, bytes, holds);
        }
    }

    /// Hands `bytes` to `partition`'s core, opening the connection's session
    /// there first; a frame that `holds` makes the later ones wait.
    fn hand(&mut self, link: L, partition: PartitionId, bytes: Bytes, holds: bool) {
        let ticket = holds.then(|| self.ticket());
        let Some(l) = self.links.get_mut(&link) else { return };
        if l.at.insert(partition) {
            self.out.push_back(Switched::Open { link, partition });
        }
        l.current = partition;
        if let (Some(t), Phase::Unbound { waiting }) = (ticket, &mut l.phase) {
            *waiting = Some(Wait::Core(partition, t));
        }
        self.feed(link, partition, bytes, ticket);
    }

    /// More than `max_held` bytes behind a frame that holds them.
    fn refuse(&mut self, link: L) {
        let reason = format!("sent more than {} bytes while a request was being answered", self.max_held);
        self.close(link);
        // Before the closes (`close` dropped what was queued for the link).
        let at = self.out.iter().position(|o| o.link() == link).unwrap_or(self.out.len());
        self.out.insert(at, Switched::Refuse { link, code: status::TOO_LARGE, reason });
    }

    fn unwait(&mut self, link: L, partition: PartitionId) {
        if let Some(set) = self.waiting.get_mut(&partition) {
            set.remove(&link);
            if set.is_empty() {
                self.waiting.remove(&partition);
            }
        }
    }
}

/// Whether the frame is the first step of a login.
fn is_login(frame: &Frame, limits: &Limits) -> bool {
    matches!(Message::decode(frame, limits), Ok(Message::Request(r)) if matches!(r.body, RequestBody::Login(_)))
}
