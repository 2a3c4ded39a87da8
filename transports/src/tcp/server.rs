//! The listener and its connections, driven by the loop that owns the core.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Interest, Registry, Token};
use rustls::{ServerConfig, ServerConnection};

use super::TcpLimits;
use super::admit::TcpRefusals;
use super::conn::{Conn, Gone, Input, Phase};
use super::table::Table;
use crate::hub::{ConnId, ConnIds, NetEvent};

/// A TCP+TLS listener and its connections, living on the loop that owns
/// the core (see the [module docs](super)).
///
/// The loop registers nothing itself: it passes every mio event whose
/// token [`owns`](TcpServer::owns) reports to
/// [`handle_event`](TcpServer::handle_event), calls
/// [`handle_timeout`](TcpServer::handle_timeout) once
/// [`poll_timeout`](TcpServer::poll_timeout) has passed (it may lie in the
/// past: work is waiting), and feeds the [`NetEvent`]s these push to the
/// core. Every connection gets one `Opened` (handshake done with ALPN
/// `confab/1`) and then exactly one `Closed`; a connection whose handshake
/// fails or times out also gets a `Closed`, with no `Opened` before it, so
/// the loop can log why (it ignores ids it does not know).
pub struct TcpServer {
    local_addr: SocketAddr,
    tls: Arc<ServerConfig>,
    limits: TcpLimits,
    /// The listener, the admission and the connections (slot `i` is
    /// token `FIRST_TOKEN + 1 + i`).
    table: Table<Conn>,
    /// Connections that stopped reading on their budget, with input left.
    resume: Vec<usize>,
    /// `Closed` events from calls that have no `out` ([`TcpServer::send`]).
    pending: Vec<NetEvent>,
    /// The latest `now` seen: "as soon as possible" for `poll_timeout`.
    last_now: Instant,
}

impl fmt::Debug for TcpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpServer")
            .field("local_addr", &self.local_addr)
            .field("accepting", &self.table.listener.is_some())
            .field("connections", &self.table.by_id.len())
            .field("handshaking", &self.table.admission.handshaking())
            .field("handshaking_sources", &self.table.admission.sources())
            .field("refusals", &self.table.admission.counts)
            .finish_non_exhaustive()
    }
}

impl TcpServer {
    /// Tokens below this are left to the caller (waker, signals...); the
    /// listener and every connection use this one and above.
    pub const FIRST_TOKEN: usize = 16;

    /// Listens on `addr` (port 0: any free port, see [`TcpServer::local_addr`]).
    ///
    /// # Errors
    /// The address cannot be bound or the listener registered.
    pub fn bind(
        registry: &Registry,
        addr: SocketAddr,
        tls: Arc<ServerConfig>,
        ids: ConnIds,
        limits: TcpLimits,
    ) -> io::Result<TcpServer> {
        let mut listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        registry.register(&mut listener, Token(Self::FIRST_TOKEN), Interest::READABLE)?;
        Ok(TcpServer {
            table: Table::new(listener, Self::FIRST_TOKEN, ids),
            local_addr,
            tls,
            limits,
            resume: Vec::new(),
            pending: Vec::new(),
            last_now: Instant::now(),
        })
    }

    /// The address listened on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Tokens from this one up are another transport's (the WebSocket
    /// server's, [`WsServer::FIRST_TOKEN`](crate::ws::WsServer::FIRST_TOKEN)).
    pub const END_TOKEN: usize = crate::ws::WsServer::FIRST_TOKEN;

    /// Whether `token` is the listener's or a connection's.
    #[must_use]
    pub fn owns(&self, token: Token) -> bool {
        (Self::FIRST_TOKEN..Self::END_TOKEN).contains(&token.0)
    }

    /// Handles one mio event of a token this server [`owns`](TcpServer::owns).
    pub fn handle_event(
        &mut self,
        registry: &Registry,
        now: Instant,
        event: &mio::event::Event,
        out: &mut Vec<NetEvent>,
    ) {
        self.last_now = self.last_now.max(now);
        out.append(&mut self.pending);
        let token = event.token().0;
        if token == Self::FIRST_TOKEN {
            self.accept(registry, now);
            return;
        }
        let Some(slot) = token.checked_sub(Self::FIRST_TOKEN + 1) else { return };
        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
        let writable = event.is_writable() || event.is_write_closed() || event.is_error();
        self.drive(registry, slot, readable, writable, out);
    }

    /// Queues `bytes` (whole frames) for `conn` and writes what the socket
    /// takes now. False: the connection is unknown, not open, or closing —
    /// or this made its backlog exceed [`TcpLimits::max_outbound`]: it is
    /// then dropped and its `Closed` comes from the next
    /// [`handle_event`](TcpServer::handle_event) or
    /// [`handle_timeout`](TcpServer::handle_timeout) (due at once).
    pub fn send(&mut self, registry: &Registry, conn: ConnId, bytes: &[u8]) -> bool {
        let Some(&slot) = self.table.by_id.get(&conn) else { return false };
        let Some(c) = self.table.slots[slot].as_mut() else { return false };
        if c.phase != Phase::Open {
            return false;
        }
        let max = self.limits.max_outbound;
        let result = c.queue(bytes).and_then(|()| c.flush()).and_then(|()| {
            let backlog = c.backlog();
            if backlog > max {
                Err(Gone(format!(
                    "outbound buffer full: {backlog} bytes not taken by the peer, above the limit of {max}"
                )))
            } else {
                c.update_interest(registry, &self.limits)
            }
        });
        match result {
            Ok(()) => {
                c.settle_input(&self.limits);
                if c.input == Input::Budget && !c.resume_queued {
                    c.resume_queued = true;
                    self.resume.push(slot);
                }
                true
            }
            Err(Gone(reason)) => {
                let mut pending = std::mem::take(&mut self.pending);
                self.remove(registry, slot, Some(reason), &mut pending);
                self.pending = pending;
                false
            }
        }
    }

    /// Bytes queued for `conn` and not yet taken by its socket (TLS
    /// records, so a little more than the plaintext); 0 if unknown.
    #[must_use]
    pub fn backlog(&self, conn: ConnId) -> usize {
        self.conn(conn).map_or(0, Conn::backlog)
    }

    /// Flushes what is queued for `conn` (within
    /// [`TcpLimits::handshake_timeout`]), sends close_notify and closes.
    /// Its `Closed` ("closed by the server") is pushed to `out` now if the
    /// socket took everything, else later from
    /// [`handle_event`](TcpServer::handle_event) or
    /// [`handle_timeout`](TcpServer::handle_timeout). No-op for an unknown
    /// or already closing connection.
    pub fn close(&mut self, registry: &Registry, conn: ConnId, out: &mut Vec<NetEvent>) {
        let Some(&slot) = self.table.by_id.get(&conn) else { return };
        let Some(c) = self.table.slots[slot].as_mut() else { return };
        match c.phase {
            Phase::Flushing { .. } | Phase::Draining { .. } => return,
            Phase::Handshaking { .. } => {
                self.remove(registry, slot, Some("closed by the server during the TLS handshake".to_owned()), out);
                return;
            }
            Phase::Open => {}
        }
        let deadline = later(self.last_now.max(Instant::now()), self.limits.handshake_timeout);
        c.start_close(deadline);
        self.table.timers.insert((deadline, slot));
        self.drive(registry, slot, false, true, out);
    }

    /// Stops accepting: the listener is closed; open connections go on.
    pub fn stop_accepting(&mut self, registry: &Registry) {
        self.table.stop_accepting(registry);
    }

    /// Closes every new connection as soon as it is accepted (`true`), or
    /// serves them again (`false`). Unlike [`stop_accepting`](Self::stop_accepting),
    /// the listener stays bound, so its port stays this server's: a
    /// cluster's edge refuses so while it hears no owner to relay to, and
    /// its clients, whose handshake fails at once, try another node.
    pub fn refuse_new(&mut self, refuse: bool) {
        self.table.refusing = refuse;
    }

    /// When [`handle_timeout`](TcpServer::handle_timeout) is due: the
    /// earliest handshake or close deadline, or an instant already past
    /// when work is waiting (input left over from a turn, a `Closed` to
    /// report, accepting to retry).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let soon = (!self.pending.is_empty() || !self.resume.is_empty()).then_some(self.last_now);
        [self.table.next_deadline(), soon].into_iter().flatten().min()
    }

    /// Expires handshakes and closes, resumes reads left over from the last
    /// turn, retries accepting, and reports pending `Closed` events.
    pub fn handle_timeout(&mut self, registry: &Registry, now: Instant, out: &mut Vec<NetEvent>) {
        self.last_now = self.last_now.max(now);
        out.append(&mut self.pending);
        if self.table.retry_due(now) {
            self.accept(registry, now);
        }
        for slot in std::mem::take(&mut self.resume) {
            let Some(c) = self.table.slots[slot].as_mut() else { continue };
            c.resume_queued = false;
            if c.input == Input::Budget {
                self.drive(registry, slot, true, false, out);
            }
        }
        while let Some((due, slot)) = self.table.pop_due(now) {
            let Some(c) = self.table.slots[slot].as_ref() else { continue };
            if c.deadline() != Some(due) {
                continue;
            }
            let reason = match c.phase {
                Phase::Handshaking { .. } => {
                    self.table.admission.counts.timed_out += 1;
                    Some(format!("TLS handshake timed out after {:?}", c.handshake_timeout))
                }
                Phase::Flushing { .. } => {
                    Some(format!("closed by the server; {} bytes were never taken by the peer", c.backlog()))
                }
                Phase::Draining { .. } | Phase::Open => None,
            };
            self.remove(registry, slot, reason, out);
        }
    }

    /// Connections refused so far because a limit was reached (or the
    /// connection could not be set up): the sum of
    /// [`refusals`](TcpServer::refusals) but its timeouts.
    #[must_use]
    pub fn refused(&self) -> u64 {
        self.table.refused()
    }

    /// Connections refused so far, and handshakes timed out, per reason.
    #[must_use]
    pub fn refusals(&self) -> TcpRefusals {
        self.table.refusals()
    }

    /// Connections in their TLS handshake.
    #[must_use]
    pub fn handshaking(&self) -> usize {
        self.table.handshaking()
    }

    /// Sockets held: handshaking, open and closing.
    #[must_use]
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no socket is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    fn conn(&self, conn: ConnId) -> Option<&Conn> {
        self.table.get(conn)
    }

    fn accept(&mut self, registry: &Registry, now: Instant) {
        while let Some(admitted) = self.table.next_admitted(now, &self.limits) {
            let Ok(tls) = ServerConnection::new(Arc::clone(&self.tls)) else {
                self.table.setup_failed(admitted.peer);
                continue;
            };
            let (peer, timeout) = (admitted.peer, admitted.timeout);
            self.table.hold(now, admitted, |sock, id, token, deadline| {
                let mut conn = Conn::new(registry, id, token, sock, peer, tls, deadline)?;
                conn.handshake_timeout = timeout;
                Ok(conn)
            });
        }
    }

    /// Runs one connection's loop: write, read (also after a write made room
    /// for a paused reader), write what reading produced, then register the
    /// interest that follows. A connection that fails is removed.
    fn drive(&mut self, registry: &Registry, slot: usize, readable: bool, writable: bool, out: &mut Vec<NetEvent>) {
        let limits = self.limits;
        let Some(c) = self.table.slots.get_mut(slot).and_then(Option::as_mut) else { return };
        let was_handshaking = matches!(c.phase, Phase::Handshaking { .. });
        let handshake_deadline = c.deadline();
        let was_flushing = matches!(c.phase, Phase::Flushing { .. });
        let result = (|| {
            if writable {
                c.flush()?;
            }
            let unpaused = c.input == Input::Paused && !c.paused(&limits);
            if readable || unpaused {
                c.read(&limits, out)?;
            }
            c.flush()?;
            c.update_interest(registry, &limits)
        })();
        if was_handshaking && !matches!(c.phase, Phase::Handshaking { .. }) {
            self.table.admission.release(c.peer);
            if let Some(deadline) = handshake_deadline {
                self.table.timers.remove(&(deadline, slot));
            }
        }
        if was_flushing && matches!(c.phase, Phase::Draining { .. }) {
            out.push(NetEvent::Closed { conn: c.id, reason: "closed by the server".to_owned() });
        }
        match result {
            Ok(()) => {
                c.settle_input(&limits);
                if c.input == Input::Budget && !c.resume_queued {
                    c.resume_queued = true;
                    self.resume.push(slot);
                }
            }
            Err(Gone(reason)) => {
                let reason = (!matches!(c.phase, Phase::Draining { .. })).then_some(reason);
                self.remove(registry, slot, reason, out);
            }
        }
    }

    /// Drops a connection, reporting `Closed` with `reason` unless `None`
    /// (its `Closed` was already reported).
    fn remove(&mut self, registry: &Registry, slot: usize, reason: Option<String>, out: &mut Vec<NetEvent>) {
        let Some(mut c) = self.table.slots[slot].take() else { return };
        c.deregister(registry);
        if let Some(deadline) = c.deadline() {
            self.table.timers.remove(&(deadline, slot));
        }
        if matches!(c.phase, Phase::Handshaking { .. }) {
            self.table.admission.release(c.peer);
        }
        self.table.by_id.remove(&c.id);
        self.table.free.push(slot);
        if let Some(reason) = reason {
            out.push(NetEvent::Closed { conn: c.id, reason });
        }
    }
}

/// `now + d`, or a year from now if `d` is too large to add.
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// Accept errors about one connection (it went away while queued), after which accepting goes on.
pub(crate) fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::PermissionDenied
    )
}
