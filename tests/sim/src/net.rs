//! Simulated links: one per connection, two directions, TCP-like.
//!
//! Within a direction bytes arrive in order, cut into chunks of 1 to
//! `max_chunk` bytes, each delayed by a latency drawn from the link's own
//! range but never overtaking the chunk before it. Links draw their ranges
//! independently, so traffic of different sessions reorders freely.
//!
//! A *doomed* link (partitioned, or its server crashed) drops every byte;
//! its ends learn it is dead through [`Ev::Detect`](super::queue::Ev). A
//! *held* link buffers what is written to it and delivers it, in order, on
//! release.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use confab_proto::SessionId;
use rand::RngExt as _;
use rand::rngs::StdRng;

use super::ClientId;
use super::config::Span;
use super::queue::{Agenda, Ev};

/// Identifies one simulated connection (never reused within a run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u64);

impl std::fmt::Display for LinkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "l{}", self.0)
    }
}

/// A direction of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

/// An end of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Server,
    Client,
}

/// What travels in a direction: bytes, then possibly the end of the stream.
#[derive(Debug)]
pub(crate) enum Segment {
    Data(Bytes),
    /// The sender closed: the receiver learns the connection is gone.
    Fin,
}

/// One direction's sending state.
#[derive(Debug, Default)]
struct Half {
    /// Arrival time of the last chunk scheduled (the next may not overtake it).
    last_arrival: Duration,
    /// Segments written while the link is held.
    held: VecDeque<Segment>,
    held_bytes: usize,
}

/// One connection between a client and the server.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) client: ClientId,
    /// The server's handle for it.
    pub(crate) session: SessionId,
    /// The server incarnation the session belongs to.
    pub(crate) epoch: u64,
    pub(crate) latency: Span,
    /// The server still knows the session.
    pub(crate) server_open: bool,
    /// The client still considers itself connected through it.
    pub(crate) client_open: bool,
    /// Every byte is dropped; the ends learn of it through detection.
    pub(crate) doomed: bool,
    /// Bytes are buffered until release.
    pub(crate) held: bool,
    up: Half,
    down: Half,
}

impl Link {
    fn half(&mut self, dir: Dir) -> &mut Half {
        match dir {
            Dir::Up => &mut self.up,
            Dir::Down => &mut self.down,
        }
    }
}

/// Counters for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Connections opened.
    pub links: u64,
    /// Chunks scheduled.
    pub chunks: u64,
    /// Bytes scheduled for delivery.
    pub bytes: u64,
    /// Bytes dropped (doomed links, closed ends).
    pub dropped_bytes: u64,
    /// Bytes that waited in a hold.
    pub held_bytes: u64,
}

/// Every link of a run.
#[derive(Debug)]
pub(crate) struct Net {
    links: BTreeMap<LinkId, Link>,
    next: u64,
    max_chunk: usize,
    pub(crate) stats: NetStats,
}

impl Net {
    pub(crate) fn new(max_chunk: usize) -> Net {
        Net { links: BTreeMap::new(), next: 1, max_chunk: max_chunk.max(1), stats: NetStats::default() }
    }

    /// A new link, open at both ends.
    pub(crate) fn open(
        &mut self,
        client: ClientId,
        session: SessionId,
        epoch: u64,
        latency: Span,
        now: Duration,
    ) -> LinkId {
        let id = LinkId(self.next);
        self.next += 1;
        self.stats.links += 1;
        let half = || Half { last_arrival: now, ..Half::default() };
        self.links.insert(
            id,
            Link {
                client,
                session,
                epoch,
                latency,
                server_open: true,
                client_open: true,
                doomed: false,
                held: false,
                up: half(),
                down: half(),
            },
        );
        id
    }

    pub(crate) fn get(&self, id: LinkId) -> Option<&Link> {
        self.links.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: LinkId) -> Option<&mut Link> {
        self.links.get_mut(&id)
    }

    /// Links of a client (several while an old one is still dying).
    pub(crate) fn of_client(&self, client: ClientId) -> Vec<LinkId> {
        self.links.iter().filter(|(_, l)| l.client == client).map(|(id, _)| *id).collect()
    }

    /// Every link.
    pub(crate) fn ids(&self) -> Vec<LinkId> {
        self.links.keys().copied().collect()
    }

    /// Forgets a link once neither end uses it.
    pub(crate) fn gc(&mut self, id: LinkId) {
        if self.links.get(&id).is_some_and(|l| !l.server_open && !l.client_open) {
            self.links.remove(&id);
        }
    }

    /// Writes a segment into a direction. Returns the bytes now waiting in
    /// the hold of that direction (0 when the link is not held).
    pub(crate) fn send(
        &mut self,
        agenda: &mut Agenda,
        rng: &mut StdRng,
        now: Duration,
        id: LinkId,
        dir: Dir,
        seg: Segment,
    ) -> usize {
        let max_chunk = self.max_chunk;
        let Some(link) = self.links.get_mut(&id) else {
            if let Segment::Data(b) = &seg {
                self.stats.dropped_bytes += b.len() as u64;
            }
            return 0;
        };
        if link.doomed {
            if let Segment::Data(b) = &seg {
                self.stats.dropped_bytes += b.len() as u64;
            }
            return 0;
        }
        if link.held {
            let half = link.half(dir);
            if let Segment::Data(b) = &seg {
                half.held_bytes += b.len();
                self.stats.held_bytes += b.len() as u64;
            }
            half.held.push_back(seg);
            return half.held_bytes;
        }
        schedule(&mut self.stats, agenda, rng, now, id, link, dir, seg, max_chunk);
        0
    }

    /// Ends a hold: everything buffered leaves, in order.
    pub(crate) fn release(&mut self, agenda: &mut Agenda, rng: &mut StdRng, now: Duration, id: LinkId) {
        let max_chunk = self.max_chunk;
        let Some(link) = self.links.get_mut(&id) else { return };
        link.held = false;
        for dir in [Dir::Up, Dir::Down] {
            let half = link.half(dir);
            let segs = std::mem::take(&mut half.held);
            half.held_bytes = 0;
            for seg in segs {
                if link.doomed {
                    if let Segment::Data(b) = &seg {
                        self.stats.dropped_bytes += b.len() as u64;
                    }
                    continue;
                }
                schedule(&mut self.stats, agenda, rng, now, id, link, dir, seg, max_chunk);
            }
        }
    }
}

/// Cuts a segment into chunks and puts them on the agenda, each no earlier than the one before.
#[allow(clippy::too_many_arguments)]
fn schedule(
    stats: &mut NetStats,
    agenda: &mut Agenda,
    rng: &mut StdRng,
    now: Duration,
    id: LinkId,
    link: &mut Link,
    dir: Dir,
    seg: Segment,
    max_chunk: usize,
) {
    let latency = link.latency;
    let half = link.half(dir);
    let arrive = |rng: &mut StdRng, half: &mut Half| {
        let at = (now + latency.draw(rng)).max(half.last_arrival);
        half.last_arrival = at;
        at
    };
    match seg {
        Segment::Fin => {
            let at = arrive(rng, half);
            agenda.push(at, Ev::Arrive { link: id, dir, seg: Segment::Fin });
        }
        Segment::Data(mut bytes) => {
            stats.bytes += bytes.len() as u64;
            while !bytes.is_empty() {
                let n = rng.random_range(1..=max_chunk.min(bytes.len()));
                let chunk = bytes.split_to(n);
                let at = arrive(rng, half);
                stats.chunks += 1;
                agenda.push(at, Ev::Arrive { link: id, dir, seg: Segment::Data(chunk) });
            }
        }
    }
}
