//! The virtual clock's agenda: events ordered by (time, insertion order),
//! so that two events at the same instant always run in the order they
//! were scheduled.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Duration;

use confab_proto::server::Job;

use super::ClientId;
use super::net::{Dir, End, LinkId, Segment};
use super::split::NodeEv;

/// Something scheduled to happen at a virtual instant.
#[derive(Debug)]
pub(crate) enum Ev {
    /// A chunk (or the end of the stream) reaches one end of a link.
    Arrive { link: LinkId, dir: Dir, seg: Segment },
    /// One end of a partitioned (or otherwise doomed) link notices it is dead.
    Detect { link: LinkId, end: End },
    /// A password-hash job of the server of `epoch` finished.
    Job { epoch: u64, job: Job },
    /// The scenario's next action.
    Action,
    /// The end of a partition.
    Heal(ClientId),
    /// The end of a hold.
    Release(ClientId),
    /// The crashed server comes back.
    Restart,
    /// A client tries to connect.
    Reconnect(ClientId),
    /// An offline user comes back.
    Online(ClientId),
    /// The hostile server replays an old item to a client.
    Replay(ClientId),
    /// Cluster mode: the paused node of this epoch resumes.
    Resume(u64),
    /// Cluster mode: a standby takes over from the paused owner of this epoch.
    Takeover(u64),
    /// Cluster mode: the old owner of this epoch learns it lost its lease.
    StaleNotices(u64),
    /// Split state: an event of the node incarnation `node`.
    Node { node: u64, ev: NodeEv },
    /// Split state: the node of this index comes back after a crash.
    NodeRestart(usize),
    /// Split state: the doorbell bus between these two nodes heals.
    BusHeal(usize, usize),
}

struct Entry {
    at: Duration,
    order: u64,
    ev: Ev,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    /// Reversed: the heap's top is the earliest, then the first scheduled.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

/// Events by virtual time (elapsed since the simulation's start).
#[derive(Default)]
pub(crate) struct Agenda {
    heap: BinaryHeap<Entry>,
    next: u64,
}

impl Agenda {
    pub(crate) fn push(&mut self, at: Duration, ev: Ev) {
        let order = self.next;
        self.next += 1;
        self.heap.push(Entry { at, order, ev });
    }

    /// When the next event is due.
    pub(crate) fn peek_time(&self) -> Option<Duration> {
        self.heap.peek().map(|e| e.at)
    }

    pub(crate) fn pop(&mut self) -> Option<(Duration, Ev)> {
        self.heap.pop().map(|e| (e.at, e.ev))
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

impl std::fmt::Debug for Agenda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agenda").field("pending", &self.heap.len()).finish()
    }
}
