//! The connections of one listener, as the TCP and WebSocket servers both
//! hold them: the listener and its retry after a descriptor shortage, the
//! admission (connection cap, handshake slots, per-source shares), a slot
//! per connection (slot `i` is token `first_token + 1 + i`), the ids, and
//! the phase deadlines. Each server keeps what its connections do.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Registry, Token};

use super::TcpLimits;
use super::admit::{Admission, TcpRefusals};
use super::server::{is_per_connection, later};
use crate::hub::{ConnId, ConnIds};

/// How long accepting pauses after the process ran out of descriptors or buffers.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// A connection accepted and admitted, with its handshake timeout.
pub(crate) struct Admitted {
    pub(crate) sock: TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) timeout: Duration,
}

/// See the module docs.
pub(crate) struct Table<C> {
    pub(crate) listener: Option<TcpListener>,
    pub(crate) accept_retry: Option<Instant>,
    /// Handshake slots, per source, and the refusal counts.
    pub(crate) admission: Admission,
    pub(crate) ids: ConnIds,
    /// Slot `i` is token `first_token + 1 + i`.
    pub(crate) slots: Vec<Option<C>>,
    pub(crate) free: Vec<usize>,
    pub(crate) by_id: HashMap<ConnId, usize>,
    /// Phase deadlines, removed when their phase ends (a due entry whose
    /// connection has another deadline is skipped all the same).
    pub(crate) timers: BTreeSet<(Instant, usize)>,
    /// Every new connection is closed as soon as it is accepted (the
    /// listener stays bound, so its port stays this server's).
    pub(crate) refusing: bool,
    first_token: usize,
}

impl<C> Table<C> {
    /// A table for `listener`, registered at `first_token`.
    pub(crate) fn new(listener: TcpListener, first_token: usize, ids: ConnIds) -> Table<C> {
        Table {
            listener: Some(listener),
            accept_retry: None,
            admission: Admission::default(),
            ids,
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            timers: BTreeSet::new(),
            refusing: false,
            first_token,
        }
    }

    /// The next connection that passes admission, if one is queued. A
    /// refused one is dropped here (its peer sees the connection closed); a
    /// shortage of descriptors or memory leaves the queue as it is and
    /// sets [`accept_retry`](Table::accept_retry).
    pub(crate) fn next_admitted(&mut self, now: Instant, limits: &TcpLimits) -> Option<Admitted> {
        loop {
            let listener = self.listener.as_ref()?;
            let (sock, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if is_per_connection(&e) => continue,
                Err(_) => {
                    // Out of descriptors or memory: the pending connections
                    // stay queued, and no new edge may come; retry soon.
                    self.accept_retry = Some(now + ACCEPT_RETRY);
                    return None;
                }
            };
            if self.refusing {
                // Dropped: the peer sees the connection closed at once.
                drop(sock);
                continue;
            }
            let Some(timeout) = self.admission.admit(peer, self.by_id.len(), limits) else { continue };
            // Latency matters more than segment count for chat frames.
            let _ = sock.set_nodelay(true);
            return Some(Admitted { sock, peer, timeout });
        }
    }

    /// Holds the connection `make` builds from an admitted socket, its id,
    /// its token and its handshake deadline; if `make` fails, the
    /// admission is given back and counted as a setup refusal.
    pub(crate) fn hold(
        &mut self,
        now: Instant,
        admitted: Admitted,
        make: impl FnOnce(TcpStream, ConnId, Token, Instant) -> io::Result<C>,
    ) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let id = self.ids.next();
        let deadline = later(now, admitted.timeout);
        match make(admitted.sock, id, Token(self.first_token + 1 + slot), deadline) {
            Ok(conn) => {
                self.slots[slot] = Some(conn);
                self.by_id.insert(id, slot);
                self.timers.insert((deadline, slot));
            }
            Err(_) => {
                self.free.push(slot);
                self.setup_failed(admitted.peer);
            }
        }
    }

    /// Stops accepting: the listener is closed.
    pub(crate) fn stop_accepting(&mut self, registry: &Registry) {
        if let Some(mut listener) = self.listener.take() {
            // The listener closes when dropped either way.
            let _ = registry.deregister(&mut listener);
        }
        self.accept_retry = None;
    }

    /// The earliest phase deadline or accept retry, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [self.timers.first().map(|&(t, _)| t), self.accept_retry].into_iter().flatten().min()
    }

    /// Whether accepting is to be retried now (the retry is then forgotten).
    pub(crate) fn retry_due(&mut self, now: Instant) -> bool {
        let due = self.accept_retry.is_some_and(|t| t <= now);
        if due {
            self.accept_retry = None;
        }
        due
    }

    /// The next phase deadline due by `now`, taken off the timers, with
    /// its slot (whose connection may have moved on to another deadline).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, usize)> {
        let &(due, slot) = self.timers.first()?;
        if due > now {
            return None;
        }
        self.timers.pop_first();
        Some((due, slot))
    }

    /// An admitted connection could not be set up.
    pub(crate) fn setup_failed(&mut self, peer: SocketAddr) {
        self.admission.release(peer);
        self.admission.counts.setup += 1;
    }

    /// The connection `conn`, if held.
    pub(crate) fn get(&self, conn: ConnId) -> Option<&C> {
        self.by_id.get(&conn).and_then(|&slot| self.slots[slot].as_ref())
    }

    /// Refused at accept so far (every reason but timeouts).
    pub(crate) fn refused(&self) -> u64 {
        self.admission.counts.refused()
    }

    /// Refusals and handshake timeouts so far, per reason.
    pub(crate) fn refusals(&self) -> TcpRefusals {
        self.admission.counts
    }

    /// Connections in their handshake.
    pub(crate) fn handshaking(&self) -> usize {
        self.admission.handshaking()
    }

    /// Sockets held.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}
