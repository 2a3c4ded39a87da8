//! The WebSocket listener and its connections, driven by the loop that owns
//! the core (the same shape as [`TcpServer`](crate::tcp::TcpServer)).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use mio::net::TcpListener;
use mio::{Interest, Registry, Token};
use rustls::{ServerConfig, ServerConnection};

use super::conn::Conn;
use super::{WsLimits, WsPolicy};
use crate::hub::{ConnId, ConnIds, NetEvent};
use crate::tcp::TcpRefusals;
use crate::tcp::conn::{Gone, Input, Phase};
use crate::tcp::server::later;
use crate::tcp::table::Table;

/// A WebSocket listener and its connections, living on the loop that owns
/// the core (see the [module docs](super)). Driven exactly like
/// [`TcpServer`](crate::tcp::TcpServer): the loop passes every mio event
/// whose token [`owns`](WsServer::owns) reports to
/// [`handle_event`](WsServer::handle_event), calls
/// [`handle_timeout`](WsServer::handle_timeout) once
/// [`poll_timeout`](WsServer::poll_timeout) has passed, and feeds the
/// [`NetEvent`]s to the core. `Opened` comes once the upgrade is done (TLS
/// first, for `wss://`); then exactly one `Closed`. A connection refused
/// during its handshake (TLS, a bad or refused upgrade, the timeout) gets
/// a `Closed` with no `Opened` before it.
pub struct WsServer {
    local_addr: SocketAddr,
    /// `None`: plain `ws://`.
    tls: Option<Arc<ServerConfig>>,
    limits: WsLimits,
    policy: WsPolicy,
    /// The listener, the admission and the connections (slot `i` is
    /// token `FIRST_TOKEN + 1 + i`).
    table: Table<Conn>,
    /// Connections that stopped reading on their budget, with input left.
    resume: Vec<usize>,
    /// `Closed` events from calls that have no `out` ([`WsServer::send`]).
    pending: Vec<NetEvent>,
    /// The latest `now` seen: "as soon as possible" for `poll_timeout`.
    last_now: Instant,
}

impl fmt::Debug for WsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsServer")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls.is_some())
            .field("accepting", &self.table.listener.is_some())
            .field("connections", &self.table.by_id.len())
            .field("handshaking", &self.table.admission.handshaking())
            .field("handshaking_sources", &self.table.admission.sources())
            .field("refusals", &self.table.admission.counts)
            .finish_non_exhaustive()
    }
}

impl WsServer {
    /// The listener's token; its connections use the ones above. Tokens
    /// below are [`TcpServer`](crate::tcp::TcpServer)'s and the caller's.
    pub const FIRST_TOKEN: usize = usize::MAX / 2 + 1;

    /// Listens on `addr` (port 0: any free port, see [`WsServer::local_addr`]);
    /// `tls`: `wss://` with this configuration (ALPN `http/1.1`, see
    /// [`tls::ws_server_config`](crate::tls::ws_server_config)), `None`: plain `ws://`.
    ///
    /// # Errors
    /// The address cannot be bound or the listener registered.
    pub fn bind(
        registry: &Registry,
        addr: SocketAddr,
        tls: Option<Arc<ServerConfig>>,
        ids: ConnIds,
        limits: WsLimits,
        policy: WsPolicy,
    ) -> io::Result<WsServer> {
        let mut listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        registry.register(&mut listener, Token(Self::FIRST_TOKEN), Interest::READABLE)?;
        Ok(WsServer {
            table: Table::new(listener, Self::FIRST_TOKEN, ids),
            local_addr,
            tls,
            limits,
            policy,
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

    /// Whether it serves `wss://` (TLS) rather than plain `ws://`.
    #[must_use]
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether a plain `GET` is answered with the policy's [`Site`](super::Site).
    #[must_use]
    pub fn serves_site(&self) -> bool {
        self.policy.site.is_some()
    }

    /// Whether `token` is the listener's or a connection's.
    #[must_use]
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= Self::FIRST_TOKEN
    }

    /// Handles one mio event of a token this server [`owns`](WsServer::owns).
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

    /// Queues `bytes` (whole frames) for `conn` as one binary message and
    /// writes what the socket takes now. False: the connection is unknown,
    /// not open, or closing — or this made its backlog exceed the outbound
    /// cap: it is then dropped and its `Closed` comes from the next
    /// [`handle_event`](WsServer::handle_event) or
    /// [`handle_timeout`](WsServer::handle_timeout) (due at once).
    pub fn send(&mut self, registry: &Registry, conn: ConnId, bytes: Bytes) -> bool {
        let Some(&slot) = self.table.by_id.get(&conn) else { return false };
        let Some(c) = self.table.slots[slot].as_mut() else { return false };
        if c.phase != Phase::Open {
            return false;
        }
        let max = self.limits.conn.max_outbound;
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
                self.remove(registry, slot, reason, &mut pending);
                self.pending = pending;
                false
            }
        }
    }

    /// Bytes queued for `conn` and not yet taken by its socket (WebSocket
    /// framing, and TLS records for `wss://`); 0 if unknown.
    #[must_use]
    pub fn backlog(&self, conn: ConnId) -> usize {
        self.conn(conn).map_or(0, Conn::backlog)
    }

    /// Flushes what is queued for `conn` (within the handshake timeout),
    /// sends a WebSocket close frame with `code` (see
    /// [`close_code_for`](super::close_code_for)) and `reason`, then TLS
    /// close_notify, and closes. Its `Closed` ("closed by the server") is
    /// pushed to `out` now if the socket took everything, else later. No-op
    /// for an unknown or already closing connection.
    pub fn close(&mut self, registry: &Registry, conn: ConnId, code: u16, reason: &str, out: &mut Vec<NetEvent>) {
        let Some(&slot) = self.table.by_id.get(&conn) else { return };
        let Some(c) = self.table.slots[slot].as_mut() else { return };
        match c.phase {
            Phase::Flushing { .. } | Phase::Draining { .. } => return,
            Phase::Handshaking { .. } => {
                self.remove(registry, slot, "closed by the server during the handshake".to_owned(), out);
                return;
            }
            Phase::Open => {}
        }
        let deadline = later(self.last_now.max(Instant::now()), self.limits.conn.handshake_timeout);
        c.start_close(code, reason, deadline);
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

    /// When [`handle_timeout`](WsServer::handle_timeout) is due: the
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
                    let what = if self.tls.is_some() { "TLS handshake and upgrade" } else { "upgrade" };
                    format!("{what} timed out after {:?}", c.handshake_timeout)
                }
                Phase::Flushing { .. } => {
                    format!("closed by the server; {} bytes were never taken by the peer", c.backlog())
                }
                Phase::Draining { .. } | Phase::Open => "closed by the server".to_owned(),
            };
            self.remove(registry, slot, reason, out);
        }
    }

    /// Connections refused so far because a limit was reached (or the
    /// connection could not be set up): the sum of
    /// [`refusals`](WsServer::refusals) but its timeouts.
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
        while let Some(admitted) = self.table.next_admitted(now, &self.limits.conn) {
            let tls = match &self.tls {
                Some(config) => match ServerConnection::new(Arc::clone(config)) {
                    Ok(tls) => Some(tls),
                    Err(_) => {
                        self.table.setup_failed(admitted.peer);
                        continue;
                    }
                },
                None => None,
            };
            let (peer, timeout) = (admitted.peer, admitted.timeout);
            self.table.hold(now, admitted, |sock, id, token, deadline| {
                Conn::new(registry, id, token, sock, peer, tls, deadline, timeout)
            });
        }
    }

    /// Runs one connection's loop: write, read (also after a write made room
    /// for a paused reader), write what reading produced, then register the
    /// interest that follows. A connection that fails is removed.
    fn drive(&mut self, registry: &Registry, slot: usize, readable: bool, writable: bool, out: &mut Vec<NetEvent>) {
        let limits = self.limits;
        let close_by = later(self.last_now, limits.conn.handshake_timeout);
        let Some(c) = self.table.slots.get_mut(slot).and_then(Option::as_mut) else { return };
        let was_handshaking = matches!(c.phase, Phase::Handshaking { .. });
        let deadline_before = c.deadline();
        let result = (|| {
            if writable {
                c.flush()?;
            }
            let unpaused = c.input == Input::Paused && !c.paused(&limits);
            if readable || unpaused {
                c.read(&limits, &self.policy, close_by, out)?;
            }
            c.flush()?;
            c.update_interest(registry, &limits)
        })();
        if was_handshaking && !matches!(c.phase, Phase::Handshaking { .. }) {
            self.table.admission.release(c.peer);
        }
        if c.deadline() != deadline_before {
            if let Some(d) = deadline_before {
                self.table.timers.remove(&(d, slot));
            }
            if let Some(d) = c.deadline() {
                self.table.timers.insert((d, slot));
            }
        }
        if matches!(c.phase, Phase::Draining { .. }) && !c.closed_reported {
            c.closed_reported = true;
            let reason = c.close_reason.take().unwrap_or_else(|| "closed by the server".to_owned());
            out.push(NetEvent::Closed { conn: c.id, reason });
        }
        match result {
            Ok(()) => {
                c.settle_input(&limits);
                if c.input == Input::Budget && !c.resume_queued {
                    c.resume_queued = true;
                    self.resume.push(slot);
                }
            }
            Err(Gone(reason)) => self.remove(registry, slot, reason, out),
        }
    }

    /// Drops a connection, reporting `Closed` with `reason` unless it was
    /// reported already (the reason the server gave for closing wins).
    fn remove(&mut self, registry: &Registry, slot: usize, reason: String, out: &mut Vec<NetEvent>) {
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
        if !c.closed_reported {
            let reason = c.close_reason.take().map_or(reason.clone(), |r| format!("{r} ({reason})"));
            out.push(NetEvent::Closed { conn: c.id, reason });
        }
    }
}
