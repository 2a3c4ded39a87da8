//! One server-side TLS connection: rustls' buffered loop over a
//! non-blocking mio socket, with its outbound buffer and interest.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::ServerConnection;

use super::TcpLimits;
use crate::hub::{ConnId, NetEvent, Transport};
use crate::tls::ALPN;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// TLS handshake in progress; dropped at `deadline`.
    Handshaking { deadline: Instant },
    /// `Opened` was reported; carrying frames.
    Open,
    /// Closed by the server: writing what is queued and the close_notify
    /// (`Closed` is reported once that is done, or at `deadline`).
    Flushing { deadline: Instant },
    /// Our side is shut down: reading and discarding until the peer closes
    /// too, so that unread input does not turn our close into a reset that
    /// destroys the bytes just flushed. Dropped at `deadline`.
    Draining { deadline: Instant },
}

/// Why reading stopped last time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// The socket said `WouldBlock`: the next readable edge wakes us.
    Drained,
    /// This turn's read budget ran out: more may be waiting, with no edge to come.
    Budget,
    /// The backlog is above half the outbound cap: not reading until it falls.
    Paused,
}

/// The connection is gone, and why (a human reason for `Closed`).
#[derive(Debug)]
pub(crate) struct Gone(pub(crate) String);

/// A buffer released when emptied is shrunk to this, so idle connections hold little.
pub(crate) const IDLE_CAPACITY: usize = 16 << 10;

/// Most bytes discarded per turn from a peer that sent or sends after our close.
pub(crate) const DRAIN_TURN: usize = 256 << 10;

/// One accepted connection.
pub(super) struct Conn {
    pub(super) id: ConnId,
    pub(super) peer: SocketAddr,
    pub(super) phase: Phase,
    pub(super) input: Input,
    /// On the server's list of connections to read again next turn.
    pub(super) resume_queued: bool,
    /// The time its handshake was given (for the timeout's reason).
    pub(super) handshake_timeout: Duration,
    token: Token,
    sock: TcpStream,
    tls: ServerConnection,
    out: OutBuf,
    interest: Option<Interest>,
}

impl Conn {
    /// A connection whose handshake must end by `deadline`, registered for reading.
    pub(super) fn new(
        registry: &Registry,
        id: ConnId,
        token: Token,
        mut sock: TcpStream,
        peer: SocketAddr,
        mut tls: ServerConnection,
        deadline: Instant,
    ) -> io::Result<Conn> {
        // Our own buffer (`out`) is the bounded one; rustls' is emptied into
        // it after every write.
        tls.set_buffer_limit(None);
        registry.register(&mut sock, token, Interest::READABLE)?;
        Ok(Conn {
            id,
            peer,
            phase: Phase::Handshaking { deadline },
            input: Input::Drained,
            resume_queued: false,
            handshake_timeout: Duration::ZERO,
            token,
            sock,
            tls,
            out: OutBuf::default(),
            interest: Some(Interest::READABLE),
        })
    }

    /// The instant this connection's phase ends, if it has one.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Handshaking { deadline } | Phase::Flushing { deadline } | Phase::Draining { deadline } => {
                Some(deadline)
            }
            Phase::Open => None,
        }
    }

    /// TLS bytes not yet taken by the socket.
    pub(super) fn backlog(&self) -> usize {
        self.out.len()
    }

    /// Whether reading is suspended because the peer does not take its answers.
    pub(super) fn paused(&self, limits: &TcpLimits) -> bool {
        self.phase == Phase::Open && self.backlog() > limits.max_outbound / 2
    }

    /// A reader paused earlier whose backlog has since fallen (a write made
    /// room) has input waiting that no edge will announce: it reads again
    /// next turn, like one that ran out of budget.
    pub(super) fn settle_input(&mut self, limits: &TcpLimits) {
        if self.phase == Phase::Open && self.input == Input::Paused && !self.paused(limits) {
            self.input = Input::Budget;
        }
    }

    /// Stops the socket's events; it closes when `self` is dropped.
    pub(super) fn deregister(&mut self, registry: &Registry) {
        // Deregistering a socket mio already forgot is not worth reporting.
        let _ = registry.deregister(&mut self.sock);
    }

    /// Reads what the peer sent, up to this turn's budget, reporting
    /// `Opened` and `Received`. `Err`: the connection is gone.
    pub(super) fn read(&mut self, limits: &TcpLimits, events: &mut Vec<NetEvent>) -> Result<(), Gone> {
        match self.phase {
            Phase::Handshaking { .. } | Phase::Open => self.read_tls(limits, events),
            Phase::Flushing { .. } => {
                // Input is ignored while flushing; draining registers for it
                // again, which reports what is waiting.
                self.input = Input::Drained;
                Ok(())
            }
            Phase::Draining { .. } => {
                self.input = Input::Drained;
                self.discard()
            }
        }
    }

    fn read_tls(&mut self, limits: &TcpLimits, events: &mut Vec<NetEvent>) -> Result<(), Gone> {
        let mut taken = 0usize;
        let mut plain = Vec::new();
        let result = loop {
            if self.paused(limits) {
                self.input = Input::Paused;
                break Ok(());
            }
            if taken >= limits.read_chunk.max(1) {
                self.input = Input::Budget;
                break Ok(());
            }
            let eof = match self.tls.read_tls(&mut self.sock) {
                Ok(0) => true,
                Ok(n) => {
                    taken += n;
                    false
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.input = Input::Drained;
                    break Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(Gone(format!("read failed: {e}"))),
            };
            let state = match self.tls.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // Best effort: let the peer see the alert rustls queued.
                    self.pull_tls();
                    let _ = self.write_out();
                    break Err(Gone(format!("TLS error: {e}")));
                }
            };
            let (ready, peer_closed) = (state.plaintext_bytes_to_read(), state.peer_has_closed());
            if let Err(gone) = self.check_opened(events) {
                break Err(gone);
            }
            if ready > 0 {
                let at = plain.len();
                plain.resize(at + ready, 0);
                if let Err(e) = self.tls.reader().read_exact(&mut plain[at..]) {
                    break Err(Gone(format!("TLS read failed: {e}")));
                }
            }
            // Handshake answers, key updates, alerts.
            self.pull_tls();
            if peer_closed {
                break Err(Gone("peer closed".to_owned()));
            }
            if eof {
                break Err(Gone(match self.phase {
                    Phase::Handshaking { .. } => "peer closed during the TLS handshake".to_owned(),
                    _ => "peer closed without close_notify".to_owned(),
                }));
            }
        };
        if !plain.is_empty() {
            events.push(NetEvent::Received { conn: self.id, bytes: plain });
        }
        result
    }

    /// Reports `Opened` once the handshake is complete with our ALPN.
    fn check_opened(&mut self, events: &mut Vec<NetEvent>) -> Result<(), Gone> {
        if matches!(self.phase, Phase::Handshaking { .. }) && !self.tls.is_handshaking() {
            if self.tls.alpn_protocol() != Some(ALPN) {
                return Err(Gone("TLS client did not negotiate ALPN confab/1".to_owned()));
            }
            self.phase = Phase::Open;
            events.push(NetEvent::Opened {
                conn: self.id,
                transport: Transport::Tcp,
                peer: Some(self.peer),
                handle: None,
            });
        }
        Ok(())
    }

    /// Reads and drops what a closing peer sent or still sends, until it
    /// closes: at most [`DRAIN_TURN`] bytes a turn (then `Input::Budget`),
    /// and no longer than the phase's deadline.
    fn discard(&mut self) -> Result<(), Gone> {
        let mut scratch = [0u8; 16 << 10];
        let mut dropped = 0;
        loop {
            if dropped >= DRAIN_TURN {
                self.input = Input::Budget;
                return Ok(());
            }
            match self.sock.read(&mut scratch) {
                Ok(0) => return Err(Gone("peer closed".to_owned())),
                Ok(n) => dropped += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Gone(format!("read failed: {e}"))),
            }
        }
    }

    /// Encrypts `bytes` into the outbound buffer (not written yet: see [`Conn::flush`]).
    pub(super) fn queue(&mut self, bytes: &[u8]) -> Result<(), Gone> {
        self.tls.writer().write_all(bytes).map_err(|e| Gone(format!("TLS write failed: {e}")))?;
        self.pull_tls();
        Ok(())
    }

    /// Starts a graceful close: close_notify after what is queued, flushed by `deadline`.
    pub(super) fn start_close(&mut self, deadline: Instant) {
        self.tls.send_close_notify();
        self.pull_tls();
        self.phase = Phase::Flushing { deadline };
    }

    /// Moves rustls' pending TLS records into our buffer.
    fn pull_tls(&mut self) {
        while self.tls.wants_write() {
            // Writing into a Vec does not fail; a zero means nothing was pending.
            match self.tls.write_tls(&mut self.out) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }

    /// Writes the outbound buffer until the socket says `WouldBlock`; a
    /// flushed closing connection shuts its side down and starts draining.
    pub(super) fn flush(&mut self) -> Result<(), Gone> {
        self.write_out().map_err(|e| Gone(format!("write failed: {e}")))?;
        if let Phase::Flushing { deadline } = self.phase
            && self.out.is_empty()
        {
            // The peer may already be gone; draining finds out.
            let _ = self.sock.shutdown(Shutdown::Write);
            self.phase = Phase::Draining { deadline };
        }
        Ok(())
    }

    fn write_out(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            match self.sock.write(self.out.pending()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Registers for what the connection waits for: readable unless reading
    /// is paused or the server is flushing, writable while bytes wait.
    pub(super) fn update_interest(&mut self, registry: &Registry, limits: &TcpLimits) -> Result<(), Gone> {
        let read = match self.phase {
            Phase::Handshaking { .. } | Phase::Draining { .. } => true,
            Phase::Open => !self.paused(limits),
            Phase::Flushing { .. } => false,
        };
        let write = !self.out.is_empty();
        let want = match (read, write) {
            (true, true) => Interest::READABLE | Interest::WRITABLE,
            (true, false) => Interest::READABLE,
            (false, true) => Interest::WRITABLE,
            // Nothing to wait for (a paused connection always has bytes
            // waiting): keep the registration as it is.
            (false, false) => return Ok(()),
        };
        if self.interest != Some(want) {
            registry.reregister(&mut self.sock, self.token, want).map_err(|e| Gone(format!("poll failed: {e}")))?;
            self.interest = Some(want);
        }
        Ok(())
    }
}

/// Bytes waiting for the socket: a vector consumed from the front.
#[derive(Default)]
pub(crate) struct OutBuf {
    buf: Vec<u8>,
    start: usize,
}

impl OutBuf {
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.buf.len() {
            self.buf.clear();
            self.start = 0;
            self.buf.shrink_to(IDLE_CAPACITY);
        }
    }
}

impl Write for OutBuf {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
