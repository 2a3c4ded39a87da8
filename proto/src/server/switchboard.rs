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
//! - While a connection is not a session, each frame is routed on its own
//!   ([`route_unbound`]) and handed whole to its partition's core; the
//!   connection gets a session at a core with the first frame it sends
//!   there ([`Switched::Open`] comes before that frame).
//! - A frame routed to a partition (a login step, a refresh, a request with
//!   a token, `jwks`: whatever names someone) holds the connection's later
//!   frames until its core settled it: after each of its turns the node
//!   asks that core about the connections waiting there
//!   ([`waiting_at`](Switchboard::waiting_at)): once the session is not held
//!   ([`Server::session_held`](crate::Server::session_held)), whether it is
//!   logged in ([`Server::session_user`](crate::Server::session_user)).
//!   Bound: every later byte goes to that core, unparsed, and the
//!   connection's sessions at other cores are closed, so that two pipelined
//!   frames carrying two users' tokens never bind one connection at two
//!   cores. Not bound: the frames held are routed on.
//! - A frame carrying an OIDC token waits for the node to resolve its
//!   partition ([`Switched::Resolve`]: the store's binding of its subject,
//!   else the home of its name), then goes on as any other.
//! - A frame that names nobody (a ping, a request without a token) goes to
//!   the connection's current core (the last one a frame went to), or
//!   partition 0, and holds nothing.
//! - Bytes that do not frame (a bad version, a length past the limits) go,
//!   with everything after them, to the current core, which refuses them
//!   as a single server does; nothing more of the connection is parsed here.
//! - At most `max_held` bytes wait behind a frame (the cores'
//!   `max_deferred_bytes`): past it, they go to the core the frame went
//!   to, whose session is held too and closes the connection with 413 as
//!   a single server does; past it while an OIDC frame is resolved, the
//!   node closes the connection ([`Switched::Refuse`]).
//!
//! With one partition everything goes to partition 0 and nothing is held:
//! the switchboard costs a single server nothing but a lookup (and a node
//! that is not split need not use it).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Debug;

use bytes::{Bytes, BytesMut};

use super::partition::{PartitionId, Partitions};
use super::router::{FrameRoute, route_unbound};
use crate::wire::{Frame, FrameHeader, Limits, Message, RequestBody};

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
    /// (`token`), then call [`Switchboard::resolved`]:
    /// [`oidc_home`](super::oidc_home) with the store's bindings (the
    /// partition of the name its subject is bound to, else the home of the
    /// name the core would give the account).
    Resolve {
        /// The connection.
        link: L,
        /// The frame's auth part.
        token: Bytes,
    },
    /// Close the connection: it sent more than `max_held` bytes behind a
    /// frame whose partition was being resolved. Its sessions are closed
    /// ([`Switched::Close`] follows).
    Refuse {
        /// The connection.
        link: L,
        /// Why, for the log.
        reason: String,
    },
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
    /// For this core to settle the frame it was handed.
    Core(PartitionId),
    /// For the node to resolve an OIDC frame's partition.
    Resolve,
}

#[derive(Debug)]
struct Link {
    phase: Phase,
    /// Bytes not routed yet (unbound only).
    buffer: BytesMut,
    /// The cores where the connection has a session.
    at: BTreeSet<PartitionId>,
    /// The core of the last frame routed (where frames naming nobody go).
    current: Option<PartitionId>,
    /// The core of the last `login` (its `passphrase` follows it).
    last_login: Option<PartitionId>,
    /// The OIDC frame waiting for its partition.
    resolving: Option<Bytes>,
    /// Bytes handed to cores and not polled yet: a frame that holds is
    /// waited for once it was polled (the node handed it to its core).
    queued: usize,
}

/// A node's connections in front of its cores. See the [module docs](self).
#[derive(Debug)]
pub struct Switchboard<L> {
    parts: Partitions,
    limits: Limits,
    max_held: usize,
    links: BTreeMap<L, Link>,
    /// Per core, the connections waiting for it to settle a frame.
    waiting: BTreeMap<PartitionId, BTreeSet<L>>,
    out: VecDeque<Switched<L>>,
}

impl<L: Copy + Ord + Debug> Switchboard<L> {
    /// The switchboard of a state split as `parts` says (its index plays
    /// no part), framing with `limits` and holding at most `max_held` bytes
    /// behind a frame (the cores' `limits` and `max_deferred_bytes`).
    #[must_use]
    pub fn new(parts: Partitions, limits: Limits, max_held: usize) -> Switchboard<L> {
        Switchboard { parts, limits, max_held, links: BTreeMap::new(), waiting: BTreeMap::new(), out: VecDeque::new() }
    }

    /// A connection was accepted. Its sessions are opened as its frames
    /// reach cores.
    pub fn open(&mut self, link: L) {
        let fresh = Link {
            phase: Phase::Unbound { waiting: None },
            buffer: BytesMut::new(),
            at: BTreeSet::new(),
            current: None,
            last_login: None,
            resolving: None,
            queued: 0,
        };
        self.links.insert(link, fresh);
    }

    /// Bytes arrived on a connection, in any chunking.
    pub fn input(&mut self, link: L, bytes: &[u8]) {
        let Some(l) = self.links.get_mut(&link) else { return };
        match l.phase {
            Phase::Bound(partition) => {
                self.feed(link, partition, Bytes::copy_from_slice(bytes));
            }
            Phase::Unbound { waiting } => {
                l.buffer.extend_from_slice(bytes);
                if l.buffer.len() <= self.max_held {
                    return self.route(link);
                }
                match waiting {
                    None => self.route(link),
                    // The held core's session holds it too, and refuses it (413).
                    Some(Wait::Core(partition)) => {
                        self.unwait(link, partition);
                        let Some(l) = self.links.get_mut(&link) else { return };
                        l.phase = Phase::Bound(partition);
                        let rest = l.buffer.split().freeze();
                        self.feed(link, partition, rest);
                    }
                    Some(Wait::Resolve) => {
                        let reason = format!(
                            "sent more than {} bytes while the partition of an OIDC login was looked up",
                            self.max_held
                        );
                        self.out.push_back(Switched::Refuse { link, reason });
                        self.close(link);
                    }
                }
            }
        }
    }

    /// `partition`'s core settled the frame `link` waited on: its session
    /// there is not held any more, and is logged in (`bound`) or not.
    /// Ignored unless the connection waits for that core (and the frame was
    /// polled: see [`waiting_at`](Self::waiting_at)).
    pub fn settled(&mut self, link: L, partition: PartitionId, bound: bool) {
        if !self.waiting.get(&partition).is_some_and(|set| set.contains(&link)) {
            return;
        }
        self.unwait(link, partition);
        let Some(l) = self.links.get_mut(&link) else { return };
        if bound {
            l.phase = Phase::Bound(partition);
            l.current = Some(partition);
            for other in std::mem::take(&mut l.at) {
                if other != partition {
                    self.out.push_back(Switched::Close { link, partition: other });
                }
            }
            l.at.insert(partition);
            let rest = l.buffer.split().freeze();
            if !rest.is_empty() {
                self.feed(link, partition, rest);
            }
        } else {
            l.phase = Phase::Unbound { waiting: None };
            self.route(link);
        }
    }

    /// The node found the partition of the OIDC frame `link` waits with.
    /// Ignored unless the connection waits for a resolution.
    pub fn resolved(&mut self, link: L, partition: PartitionId) {
        let Some(l) = self.links.get_mut(&link) else { return };
        if l.phase != (Phase::Unbound { waiting: Some(Wait::Resolve) }) || partition >= self.parts.count {
            return;
        }
        l.phase = Phase::Unbound { waiting: None };
        if let Some(frame) = l.resolving.take() {
            self.hand(link, partition, frame, true);
        }
        self.route(link);
    }

    /// The connection closed (or the node closed it): its sessions are closed.
    pub fn close(&mut self, link: L) {
        let Some(l) = self.links.remove(&link) else { return };
        if let Phase::Unbound { waiting: Some(Wait::Core(partition)) } = l.phase {
            self.unwait(link, partition);
        }
        for partition in l.at {
            self.out.push_back(Switched::Close { link, partition });
        }
    }

    /// The connections waiting for `partition`'s core to settle a frame
    /// already polled (handed to it): the node asks the core about each
    /// after its turns.
    pub fn waiting_at(&self, partition: PartitionId) -> impl Iterator<Item = L> + '_ {
        self.waiting.get(&partition).into_iter().flatten().copied()
    }

    /// The core a connection is bound to, if it is.
    #[must_use]
    pub fn bound_to(&self, link: L) -> Option<PartitionId> {
        match self.links.get(&link)?.phase {
            Phase::Bound(p) => Some(p),
            Phase::Unbound { .. } => None,
        }
    }

    /// The next thing to do. Do each before polling the next: a frame that
    /// holds is waited for ([`waiting_at`](Self::waiting_at)) once polled.
    pub fn poll(&mut self) -> Option<Switched<L>> {
        let next = self.out.pop_front()?;
        if let Switched::Feed { link, .. } = &next
            && let Some(l) = self.links.get_mut(link)
        {
            l.queued = l.queued.saturating_sub(1);
            if l.queued == 0
                && let Phase::Unbound { waiting: Some(Wait::Core(partition)) } = l.phase
            {
                self.waiting.entry(partition).or_default().insert(*link);
            }
        }
        Some(next)
    }

    fn feed(&mut self, link: L, partition: PartitionId, bytes: Bytes) {
        if let Some(l) = self.links.get_mut(&link) {
            l.queued += 1;
        }
        self.out.push_back(Switched::Feed { link, partition, bytes });
    }

    /// Routes the connection's whole frames until one holds the rest.
    fn route(&mut self, link: L) {
        loop {
            let Some(l) = self.links.get_mut(&link) else { return };
            if l.phase != (Phase::Unbound { waiting: None }) || l.buffer.is_empty() {
                return;
            }
            let framed = match FrameHeader::parse(&l.buffer, &self.limits) {
                Ok(None) => return,
                Ok(Some(header)) if l.buffer.len() < header.frame_len() => return,
                Ok(Some(header)) => {
                    let bytes = Bytes::copy_from_slice(&l.buffer[..header.frame_len()]);
                    Frame::parse(&bytes, &self.limits).ok().flatten().map(|(frame, _)| (frame, bytes))
                }
                Err(_) => None,
            };
            let Some((frame, bytes)) = framed else {
                // Not framed: the current core refuses it as a single server does, and gets
                // everything after it.
                let partition = l.current.unwrap_or(0);
                l.phase = Phase::Bound(partition);
                let rest = l.buffer.split().freeze();
                self.hand(link, partition, rest, false);
                return;
            };
            let _ = l.buffer.split_to(bytes.len());
            let last_login = l.last_login;
            let current = l.current;
            let (partition, holds) = match route_unbound(&frame, &self.limits, self.parts, last_login) {
                FrameRoute::Partition(p) => (p, self.parts.is_split()),
                FrameRoute::Anywhere => (current.unwrap_or(0), false),
                FrameRoute::Oidc => {
                    l.phase = Phase::Unbound { waiting: Some(Wait::Resolve) };
                    l.resolving = Some(bytes);
                    self.out.push_back(Switched::Resolve { link, token: frame.auth });
                    return;
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
        let Some(l) = self.links.get_mut(&link) else { return };
        if l.at.insert(partition) {
            self.out.push_back(Switched::Open { link, partition });
        }
        l.current = Some(partition);
        if holds && let Phase::Unbound { waiting } = &mut l.phase {
            *waiting = Some(Wait::Core(partition));
        }
        self.feed(link, partition, bytes);
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
