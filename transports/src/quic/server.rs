//! The server side: a quinn-proto endpoint over one mio UDP socket, driven
//! by the loop that owns the core, on that loop's thread.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use mio::{Registry, Token};
use quinn_proto::crypto::rustls::QuicServerConfig;
use quinn_proto::{ConnectionHandle, DatagramEvent, Endpoint, EndpointConfig};

use super::conn::Conn;
use super::udp::{Udp, UdpStats};
use super::{CODE_BACKLOG, CODE_CLOSED, CODE_NO_STREAM, CODE_SHUTDOWN, QuicLimits, later};
use crate::hub::{ConnId, ConnIds, NetEvent};

/// Receive calls per turn (each up to `quinn_udp::BATCH_SIZE` buffers)
/// before the loop gets its turn; the rest is read next turn.
const RECV_CALLS_PER_TURN: usize = 16;

/// The socket's receive and send buffers (best effort: the kernel caps
/// them at `net.core.rmem_max` / `wmem_max`): every connection's datagrams
/// of a turn wait there while the loop works.
const SERVER_SOCKET_BUFFER: usize = 8 << 20;

/// A QUIC endpoint and its connections, living on the loop that owns the
/// core (see the [module docs](super)).
///
/// Driven like [`TcpServer`](crate::tcp::TcpServer): the loop passes every
/// mio event whose token [`owns`](QuicServer::owns) reports to
/// [`handle_event`](QuicServer::handle_event), calls
/// [`handle_timeout`](QuicServer::handle_timeout) once
/// [`poll_timeout`](QuicServer::poll_timeout) has passed, feeds the
/// [`NetEvent`]s these push to the core, answers with
/// [`send`](QuicServer::send) and [`close`](QuicServer::close), and ends
/// every turn with [`flush`](QuicServer::flush), which sends what the turn
/// produced: one `poll_transmit` loop per connection touched (acks, flow
/// control credit and frames leave together, in GSO batches), not one per
/// frame. Every connection whose session stream arrived gets one `Opened`,
/// then exactly one `Closed`; a connection that never opened its stream
/// gets neither.
pub struct QuicServer {
    udp: Udp,
    endpoint: Endpoint,
    config: Arc<quinn_proto::ServerConfig>,
    local_addr: SocketAddr,
    ids: ConnIds,
    limits: QuicLimits,
    accepting: bool,
    conns: HashMap<ConnectionHandle, Conn>,
    by_id: HashMap<ConnId, ConnectionHandle>,
    /// Each connection's earliest deadline (its `Conn::timer`).
    timers: BTreeSet<(Instant, ConnectionHandle)>,
    /// Connections with something to transmit.
    dirty: Vec<ConnectionHandle>,
    /// Connections that stopped reading on their budget, with input left.
    resume: Vec<ConnectionHandle>,
    /// Connections touched by this turn's datagrams, to service.
    touched: Vec<ConnectionHandle>,
    /// Datagrams may be waiting that no edge will announce (the per-turn budget ran out).
    recv_more: bool,
    /// `Closed` events from calls that have no `out` ([`QuicServer::send`]).
    pending: Vec<NetEvent>,
    refused: u64,
    /// The transmit buffer.
    buf: Vec<u8>,
    /// The latest `now` seen: "as soon as possible" for `poll_timeout`.
    last_now: Instant,
}

impl fmt::Debug for QuicServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicServer")
            .field("local_addr", &self.local_addr)
            .field("accepting", &self.accepting)
            .field("connections", &self.conns.len())
            .field("refused", &self.refused)
            .finish_non_exhaustive()
    }
}

impl QuicServer {
    /// Binds UDP `addr` and registers the socket with `registry` under
    /// `token` (one the caller leaves to this server). Every session is one
    /// bidirectional stream that the client opens; its `Opened` carries a
    /// fresh id from `ids`, `Transport::Quic` and the peer's address.
    ///
    /// # Errors
    /// `tls` is not usable for QUIC (it must offer TLS 1.3 with
    /// AES-128-GCM), a limit is out of QUIC's range, or the address cannot be
    /// bound or registered.
    pub fn bind(
        registry: &Registry,
        token: Token,
        addr: SocketAddr,
        tls: rustls::ServerConfig,
        ids: ConnIds,
        limits: QuicLimits,
        now: Instant,
    ) -> io::Result<QuicServer> {
        let crypto = QuicServerConfig::try_from(tls).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut config = quinn_proto::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(Arc::new(super::transport_config(&limits, None)?));
        let config = Arc::new(config);
        let udp = Udp::bind(registry, token, addr, quinn_udp::BATCH_SIZE, SERVER_SOCKET_BUFFER)?;
        let local_addr = udp.local_addr()?;
        let endpoint =
            Endpoint::new(Arc::new(EndpointConfig::default()), Some(config.clone()), !udp.may_fragment(), None);
        Ok(QuicServer {
            udp,
            endpoint,
            config,
            local_addr,
            ids,
            limits,
            accepting: true,
            conns: HashMap::new(),
            by_id: HashMap::new(),
            timers: BTreeSet::new(),
            dirty: Vec::new(),
            resume: Vec::new(),
            touched: Vec::new(),
            recv_more: false,
            pending: Vec::new(),
            refused: 0,
            buf: Vec::new(),
            last_now: now,
        })
    }

    /// The bound address (the actual port when bound to port 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether `token` is this server's socket.
    #[must_use]
    pub fn owns(&self, token: Token) -> bool {
        token == self.udp_token()
    }

    fn udp_token(&self) -> Token {
        self.udp.token
    }

    /// Refuses new connections from now on (QUIC `CONNECTION_REFUSED`); existing ones go on.
    pub fn stop_accepting(&mut self) {
        self.accepting = false;
    }

    /// Accepts new connections again after [`stop_accepting`](Self::stop_accepting).
    pub fn resume_accepting(&mut self) {
        self.accepting = true;
    }

    /// Connections held: handshaking, open and closing (until drained).
    #[must_use]
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Connections refused so far (over `max_connections`, or not accepting).
    #[must_use]
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Datagrams and send calls since the server was bound.
    #[must_use]
    pub fn udp_stats(&self) -> UdpStats {
        self.udp.stats
    }

    /// Handles one mio event of this server's socket: reads the datagrams
    /// waiting (a bounded number per turn), services the connections they
    /// concern, and sends what waited for room in the socket buffer.
    pub fn handle_event(
        &mut self,
        registry: &Registry,
        now: Instant,
        event: &mio::event::Event,
        out: &mut Vec<NetEvent>,
    ) {
        self.last_now = self.last_now.max(now);
        out.append(&mut self.pending);
        if event.is_writable() {
            self.udp.flush_blocked(registry);
        }
        if event.is_readable() || event.is_error() {
            self.receive(registry, now, out);
        }
    }

    /// Queues `bytes` for `conn` and writes what its stream takes (sent at
    /// [`flush`](QuicServer::flush)). False: the connection is unknown, not
    /// open or closing, or this made its backlog exceed
    /// [`QuicLimits::max_outbound`]: it is then closed (code 2) and its
    /// `Closed` comes from the next `handle_event` or `handle_timeout` (due at once).
    pub fn send(&mut self, conn: ConnId, bytes: Bytes) -> bool {
        let Some(&ch) = self.by_id.get(&conn) else { return false };
        let Some(c) = self.conns.get_mut(&ch) else { return false };
        if !c.is_open() {
            return false;
        }
        let max = self.limits.max_outbound;
        let now = self.last_now;
        let ok = match c.queue(bytes) {
            Ok(()) if c.backlog() > max => {
                let reason = format!("outbound backlog over {max} bytes: the peer does not read");
                c.close(now, CODE_BACKLOG, b"too slow", reason, &mut self.pending);
                false
            }
            Ok(()) => true,
            Err(reason) => {
                c.close(now, CODE_CLOSED, b"closed", reason, &mut self.pending);
                false
            }
        };
        self.mark_dirty(ch);
        ok
    }

    /// Bytes queued for `conn` and not yet taken by its stream; 0 if unknown.
    #[must_use]
    pub fn backlog(&self, conn: ConnId) -> usize {
        self.by_id.get(&conn).and_then(|ch| self.conns.get(ch)).map_or(0, Conn::backlog)
    }

    /// Flushes what is queued for `conn`, finishes its stream and, once the
    /// peer has acknowledged everything (or within
    /// [`QuicLimits::idle_timeout`]), closes it (code 0). Its `Closed`
    /// ("closed by the server") follows from a later call. No-op for an
    /// unknown or already closing connection.
    pub fn close(&mut self, conn: ConnId) {
        let Some(&ch) = self.by_id.get(&conn) else { return };
        let Some(c) = self.conns.get_mut(&ch) else { return };
        if !c.is_open() {
            return;
        }
        let now = self.last_now;
        if let Err(reason) = c.start_close(later(now, self.limits.idle_timeout)) {
            c.close(now, CODE_CLOSED, b"closed", reason, &mut self.pending);
        }
        self.update_timer(ch);
        self.mark_dirty(ch);
    }

    /// When [`handle_timeout`](QuicServer::handle_timeout) is due: the
    /// earliest connection deadline (QUIC's timers, handshakes, closes), or
    /// an instant already past when work is waiting (input or datagrams
    /// left over from a turn, a `Closed` to report, something to transmit).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let soon = (!self.pending.is_empty() || !self.resume.is_empty() || !self.dirty.is_empty() || self.recv_more)
            .then_some(self.last_now);
        [self.timers.first().map(|&(t, _)| t), soon].into_iter().flatten().min()
    }

    /// Runs due timers (QUIC's, handshake and close deadlines), resumes
    /// reads and receives left over from the last turn, reports pending
    /// `Closed` events and transmits.
    pub fn handle_timeout(&mut self, registry: &Registry, now: Instant, out: &mut Vec<NetEvent>) {
        self.last_now = self.last_now.max(now);
        out.append(&mut self.pending);
        if self.recv_more {
            self.receive(registry, now, out);
        }
        while let Some(&(due, ch)) = self.timers.first() {
            if due > now {
                break;
            }
            self.timers.pop_first();
            let Some(c) = self.conns.get_mut(&ch) else { continue };
            c.timer = None;
            if c.conn.poll_timeout().is_some_and(|t| t <= now) {
                c.conn.handle_timeout(now);
            }
            if c.handshake_deadline.is_some_and(|t| t <= now) {
                c.handshake_deadline = None;
                if !c.conn.is_closed() {
                    c.conn.close(now, CODE_NO_STREAM, Bytes::from_static(b"no stream opened"));
                }
            }
            if c.closing.is_some_and(|t| t <= now) {
                c.closing = None;
                c.close(now, CODE_CLOSED, b"closed", "closed by the server (flush timed out)".into(), out);
            }
            self.touched.push(ch);
        }
        self.touched.append(&mut self.resume);
        self.service_touched(now, out);
        self.flush(registry, now);
    }

    /// Sends what this turn produced: for every connection touched, one
    /// `poll_transmit` loop (GSO batches where the kernel has GSO). Call
    /// once at the end of each turn, after the core's output was passed on.
    pub fn flush(&mut self, registry: &Registry, now: Instant) {
        self.last_now = self.last_now.max(now);
        let max_datagrams = self.udp.max_gso_segments().max(1);
        let mut dirty = std::mem::take(&mut self.dirty);
        for (i, &ch) in dirty.iter().enumerate() {
            if self.udp.is_blocked() {
                // The rest (still marked) waits for the socket's writable edge.
                self.dirty.extend_from_slice(&dirty[i..]);
                break;
            }
            let Some(c) = self.conns.get_mut(&ch) else { continue };
            c.dirty = false;
            loop {
                self.buf.clear();
                let Some(transmit) = c.conn.poll_transmit(now, max_datagrams, &mut self.buf) else { break };
                self.udp.send(registry, &transmit, &self.buf);
                if self.udp.is_blocked() {
                    c.dirty = true;
                    self.dirty.push(ch);
                    break;
                }
            }
            self.endpoint_events(ch);
            self.update_timer(ch);
            self.drop_if_drained(ch);
        }
        dirty.clear();
        if self.dirty.is_empty() {
            // Keep the allocation.
            self.dirty = dirty;
        }
    }

    /// Closes every connection now (code 4, "server shutdown"), reports
    /// `Closed` for each one still open, and sends the close frames. The
    /// grace period is the loop's: it asked the sessions to close first.
    pub fn shutdown(&mut self, registry: &Registry, now: Instant, out: &mut Vec<NetEvent>) {
        self.accepting = false;
        out.append(&mut self.pending);
        let handles: Vec<_> = self.conns.keys().copied().collect();
        for ch in handles {
            if let Some(c) = self.conns.get_mut(&ch) {
                c.close(now, CODE_SHUTDOWN, b"server shutdown", "server shutdown".into(), out);
            }
            self.mark_dirty(ch);
        }
        self.flush(registry, now);
    }

    /// Reads datagrams (at most [`RECV_CALLS_PER_TURN`] calls), hands them
    /// to the endpoint and services the connections they concern.
    fn receive(&mut self, registry: &Registry, now: Instant, out: &mut Vec<NetEvent>) {
        self.recv_more = false;
        let mut incoming = Vec::new();
        let mut responses = Vec::new();
        for call in 0..=RECV_CALLS_PER_TURN {
            if call == RECV_CALLS_PER_TURN {
                self.recv_more = true;
                break;
            }
            let (endpoint, conns, touched, buf) =
                (&mut self.endpoint, &mut self.conns, &mut self.touched, &mut self.buf);
            let got = self.udp.recv(|from, ecn, data: BytesMut| {
                buf.clear();
                match endpoint.handle(now, from, None, ecn, data, buf) {
                    Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                        if let Some(c) = conns.get_mut(&ch) {
                            c.conn.handle_event(event);
                            touched.push(ch);
                        }
                    }
                    Some(DatagramEvent::NewConnection(inc)) => incoming.push(inc),
                    Some(DatagramEvent::Response(transmit)) => responses.push((transmit, buf.clone())),
                    None => {}
                }
            });
            for (transmit, bytes) in responses.drain(..) {
                self.udp.send(registry, &transmit, &bytes);
            }
            for inc in incoming.drain(..) {
                self.admit(registry, now, inc);
            }
            match got {
                Ok(true) => {}
                // Nothing waiting, or an error about one datagram (ICMP): the next edge brings more.
                Ok(false) | Err(_) => break,
            }
        }
        self.service_touched(now, out);
    }

    /// Accepts a new connection, or refuses it (not accepting, or
    /// `max_connections` held).
    fn admit(&mut self, registry: &Registry, now: Instant, incoming: quinn_proto::Incoming) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        if !self.accepting || self.conns.len() >= self.limits.max_connections {
            self.refused += 1;
            let transmit = self.endpoint.refuse(incoming, &mut buf);
            self.udp.send(registry, &transmit, &buf);
        } else {
            let peer = incoming.remote_address();
            match self.endpoint.accept(incoming, now, &mut buf, Some(self.config.clone())) {
                Ok((ch, conn)) => {
                    self.conns.insert(ch, Conn::new(conn, peer, later(now, self.limits.handshake_timeout)));
                    self.touched.push(ch);
                }
                Err(e) => {
                    self.refused += 1;
                    if let Some(transmit) = e.response {
                        self.udp.send(registry, &transmit, &buf);
                    }
                }
            }
        }
        self.buf = buf;
    }

    /// Services every connection touched this turn (once each), in order.
    fn service_touched(&mut self, now: Instant, out: &mut Vec<NetEvent>) {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        let budget = self.limits.read_chunk;
        for &ch in &touched {
            self.endpoint_events(ch);
            let Some(c) = self.conns.get_mut(&ch) else { continue };
            let was_open = c.id;
            let serviced = c.service(now, &self.ids, budget, out);
            if was_open.is_none()
                && let Some(id) = c.id
            {
                self.by_id.insert(id, ch);
            }
            if serviced.more_input {
                self.resume.push(ch);
            }
            self.mark_dirty(ch);
            self.update_timer(ch);
            self.drop_if_drained(ch);
        }
        touched.clear();
        self.touched = touched;
    }

    /// Passes a connection's endpoint events (connection ids, drained) to
    /// the endpoint, and the endpoint's answers back.
    fn endpoint_events(&mut self, ch: ConnectionHandle) {
        let Some(c) = self.conns.get_mut(&ch) else { return };
        while let Some(event) = c.conn.poll_endpoint_events() {
            if let Some(answer) = self.endpoint.handle_event(ch, event) {
                c.conn.handle_event(answer);
            }
        }
    }

    fn mark_dirty(&mut self, ch: ConnectionHandle) {
        if let Some(c) = self.conns.get_mut(&ch)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty.push(ch);
        }
    }

    /// Moves the connection's entry in the timer set to its current deadline.
    fn update_timer(&mut self, ch: ConnectionHandle) {
        let Some(c) = self.conns.get_mut(&ch) else { return };
        let due = c.deadline();
        if due != c.timer {
            if let Some(old) = c.timer {
                self.timers.remove(&(old, ch));
            }
            if let Some(new) = due {
                self.timers.insert((new, ch));
            }
            c.timer = due;
        }
    }

    /// Forgets a connection quinn is done with (its `Closed` reported, if it opened).
    fn drop_if_drained(&mut self, ch: ConnectionHandle) {
        let Some(c) = self.conns.get(&ch) else { return };
        if !c.conn.is_drained() {
            return;
        }
        let Some(mut c) = self.conns.remove(&ch) else { return };
        // A connection drains only after it was lost or closed, which reported; this is a safety net.
        c.report("connection ended".into(), &mut self.pending);
        if let Some(t) = c.timer {
            self.timers.remove(&(t, ch));
        }
        if let Some(id) = c.id {
            self.by_id.remove(&id);
        }
    }
}
