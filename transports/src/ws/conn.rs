//! One server-side WebSocket connection: a non-blocking mio socket, TLS or
//! not, the bounded upgrade request, then tungstenite over a [`Pipe`], and
//! the outbound buffer the socket drains.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::ServerConnection;
use tungstenite::error::{Error as WsError, ProtocolError};
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Message, WebSocketConfig};
use tungstenite::{Utf8Bytes, WebSocket};

use super::WsLimits;
use super::pipe::Pipe;
use super::upgrade::{self, RequestEnd, WsPolicy};
use crate::hub::{ConnId, NetEvent, Transport};
use crate::tcp::conn::{DRAIN_TURN, Gone, Input, OutBuf, Phase};

/// Largest read from the socket at once.
const READ_STEP: usize = 16 << 10;

/// A close the transport decided itself: its WebSocket code and reason.
type Failure = (u16, String);

/// One accepted connection.
pub(super) struct Conn {
    pub(super) id: ConnId,
    pub(super) peer: SocketAddr,
    pub(super) phase: Phase,
    pub(super) input: Input,
    /// On the server's list of connections to read again next turn.
    pub(super) resume_queued: bool,
    /// The time its handshake (TLS and upgrade) was given.
    pub(super) handshake_timeout: Duration,
    /// Its `Closed` was reported already.
    pub(super) closed_reported: bool,
    /// Why the server is closing it (reported once it is flushed).
    pub(super) close_reason: Option<String>,
    token: Token,
    sock: TcpStream,
    tls: Option<ServerConnection>,
    out: OutBuf,
    interest: Option<Interest>,
    /// The upgrade request read so far.
    request: Vec<u8>,
    ws: Option<WebSocket<Pipe>>,
}

impl Conn {
    /// A connection whose handshake must end by `deadline`, registered for reading.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        registry: &Registry,
        id: ConnId,
        token: Token,
        mut sock: TcpStream,
        peer: SocketAddr,
        mut tls: Option<ServerConnection>,
        deadline: Instant,
        handshake_timeout: Duration,
    ) -> io::Result<Conn> {
        if let Some(tls) = tls.as_mut() {
            tls.set_buffer_limit(None);
        }
        registry.register(&mut sock, token, Interest::READABLE)?;
        Ok(Conn {
            id,
            peer,
            phase: Phase::Handshaking { deadline },
            input: Input::Drained,
            resume_queued: false,
            handshake_timeout,
            closed_reported: false,
            close_reason: None,
            token,
            sock,
            tls,
            out: OutBuf::default(),
            interest: Some(Interest::READABLE),
            request: Vec::new(),
            ws: None,
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

    /// Bytes not yet taken by the socket.
    pub(super) fn backlog(&self) -> usize {
        self.out.len()
    }

    /// Whether reading is suspended because the peer does not take its answers.
    pub(super) fn paused(&self, limits: &WsLimits) -> bool {
        self.phase == Phase::Open && self.backlog() > limits.conn.max_outbound / 2
    }

    /// A paused reader whose backlog fell reads again next turn.
    pub(super) fn settle_input(&mut self, limits: &WsLimits) {
        if self.phase == Phase::Open && self.input == Input::Paused && !self.paused(limits) {
            self.input = Input::Budget;
        }
    }

    /// Stops the socket's events; it closes when `self` is dropped.
    pub(super) fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.sock);
    }

    /// Reads what the peer sent, up to this turn's budget, reporting
    /// `Opened`, `Received`, and `Closed` for a close the transport decides
    /// (a text message, a protocol error), which then flushes until `close_by`.
    pub(super) fn read(
        &mut self,
        limits: &WsLimits,
        policy: &WsPolicy,
        close_by: Instant,
        events: &mut Vec<NetEvent>,
    ) -> Result<(), Gone> {
        match self.phase {
            Phase::Handshaking { .. } | Phase::Open => {
                let mut received = Vec::new();
                let result = self.read_in(limits, policy, close_by, &mut received, events);
                if !received.is_empty() {
                    // Before any Closed of this read: what arrived before a failure counts.
                    let at = events.iter().position(|e| matches!(e, NetEvent::Closed { conn, .. } if *conn == self.id));
                    let event = NetEvent::Received { conn: self.id, bytes: received };
                    match at {
                        Some(i) => events.insert(i, event),
                        None => events.push(event),
                    }
                }
                result
            }
            Phase::Flushing { .. } => {
                self.input = Input::Drained;
                Ok(())
            }
            Phase::Draining { .. } => {
                self.input = Input::Drained;
                self.discard()
            }
        }
    }

    fn read_in(
        &mut self,
        limits: &WsLimits,
        policy: &WsPolicy,
        close_by: Instant,
        received: &mut Vec<u8>,
        events: &mut Vec<NetEvent>,
    ) -> Result<(), Gone> {
        let mut taken = 0usize;
        let mut scratch = [0u8; READ_STEP];
        loop {
            if !matches!(self.phase, Phase::Handshaking { .. } | Phase::Open) {
                return Ok(());
            }
            if self.paused(limits) {
                self.input = Input::Paused;
                return Ok(());
            }
            if taken >= limits.conn.read_chunk.max(1) {
                self.input = Input::Budget;
                return Ok(());
            }
            let step = READ_STEP.min(limits.conn.read_chunk.max(1) - taken.min(limits.conn.read_chunk));
            let (n, plain, peer_closed) = match self.read_socket(&mut scratch[..step.max(1)]) {
                Ok(Some(read)) => read,
                Ok(None) => {
                    self.input = Input::Drained;
                    return Ok(());
                }
                Err(gone) => return Err(gone),
            };
            taken += n;
            if let Some((code, reason)) = self.absorb(&plain, limits, policy, received, events)? {
                self.fail(code, &reason, close_by, events);
                return Ok(());
            }
            if peer_closed || n == 0 {
                let handshaking = matches!(self.phase, Phase::Handshaking { .. });
                return Err(Gone(match (handshaking, n == 0) {
                    (true, _) => "peer closed during the handshake".to_owned(),
                    (false, true) => "peer closed the TCP connection without a WebSocket close".to_owned(),
                    (false, false) => "peer sent TLS close_notify without a WebSocket close".to_owned(),
                }));
            }
        }
    }

    /// One read from the socket: `(raw bytes read, plaintext, TLS peer
    /// closed)`; `None`: nothing to read now. Zero raw bytes: end of file.
    fn read_socket(&mut self, scratch: &mut [u8]) -> Result<Option<(usize, Vec<u8>, bool)>, Gone> {
        let Some(tls) = self.tls.as_mut() else {
            return loop {
                match self.sock.read(scratch) {
                    Ok(n) => break Ok(Some((n, scratch[..n].to_vec(), false))),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(None),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(Gone(format!("read failed: {e}"))),
                }
            };
        };
        let n = loop {
            match tls.read_tls(&mut self.sock) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Gone(format!("read failed: {e}"))),
            }
        };
        let state = match tls.process_new_packets() {
            Ok(state) => state,
            Err(e) => {
                // Best effort: let the peer see the alert rustls queued.
                self.pull_tls();
                let _ = self.write_out();
                return Err(Gone(format!("TLS error: {e}")));
            }
        };
        let (ready, peer_closed) = (state.plaintext_bytes_to_read(), state.peer_has_closed());
        let mut plain = vec![0u8; ready];
        if ready > 0
            && let Err(e) = tls.reader().read_exact(&mut plain)
        {
            return Err(Gone(format!("TLS read failed: {e}")));
        }
        self.pull_tls();
        Ok(Some((n, plain, peer_closed)))
    }

    /// Hands plaintext to the upgrade or to tungstenite. `Some`: the
    /// transport closes the connection with this WebSocket code and reason.
    fn absorb(
        &mut self,
        plain: &[u8],
        limits: &WsLimits,
        policy: &WsPolicy,
        received: &mut Vec<u8>,
        events: &mut Vec<NetEvent>,
    ) -> Result<Option<Failure>, Gone> {
        if matches!(self.phase, Phase::Handshaking { .. }) {
            if plain.is_empty() {
                return Ok(None);
            }
            let seen = self.request.len();
            self.request.extend_from_slice(plain);
            let end = match upgrade::request_end(&self.request, seen, limits.max_request_bytes) {
                RequestEnd::Partial => return Ok(None),
                RequestEnd::TooLarge => {
                    let max = limits.max_request_bytes;
                    let refused = upgrade::refusal(
                        tungstenite::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        &format!("the upgrade request is longer than {max} bytes"),
                    );
                    return self.refuse(refused.response, refused.reason).map(|()| None);
                }
                RequestEnd::Complete(end) => end,
            };
            let request = std::mem::take(&mut self.request);
            let (head, rest) = request.split_at(end);
            match upgrade::accept(head, rest, policy, self.tls.is_some(), ws_config(limits)) {
                Ok(ws) => {
                    self.ws = Some(ws);
                    self.phase = Phase::Open;
                    events.push(NetEvent::Opened {
                        conn: self.id,
                        transport: Transport::Ws,
                        peer: Some(self.peer),
                        handle: None,
                    });
                }
                Err(refused) => return self.refuse(refused.response, refused.reason).map(|()| None),
            }
        } else if let Some(ws) = self.ws.as_mut() {
            ws.get_mut().feed(plain);
        }
        let failure = self.pump_in(received);
        self.pump_out()?;
        failure
    }

    /// Reads every complete message tungstenite has.
    fn pump_in(&mut self, received: &mut Vec<u8>) -> Result<Option<Failure>, Gone> {
        let Some(ws) = self.ws.as_mut() else { return Ok(None) };
        loop {
            match ws.read() {
                Ok(Message::Binary(bytes)) => received.extend_from_slice(&bytes),
                Ok(Message::Text(_)) => {
                    return Ok(Some((
                        1003,
                        "text message refused: confab frames travel in binary messages".to_owned(),
                    )));
                }
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Ok(Message::Close(frame)) => {
                    // tungstenite queued the echo of the close; best effort to send it.
                    let _ = self.pump_out();
                    let _ = self.write_out();
                    let why =
                        frame.map_or_else(|| "no code".to_owned(), |f| format!("{} {}", u16::from(f.code), f.reason));
                    return Err(Gone(format!("peer closed the WebSocket ({why})")));
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    return Err(Gone("peer closed the WebSocket".to_owned()));
                }
                Err(WsError::Capacity(e)) => return Ok(Some((1009, format!("message too big: {e}")))),
                Err(WsError::Utf8(e)) => return Ok(Some((1007, format!("invalid UTF-8 in a close frame: {e}")))),
                Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                    return Err(Gone("peer reset the WebSocket without a close".to_owned()));
                }
                Err(WsError::Protocol(e)) => return Ok(Some((1002, format!("WebSocket protocol error: {e}")))),
                Err(e) => return Ok(Some((1011, format!("WebSocket error: {e}")))),
            }
        }
    }

    /// Answers a refused upgrade, then closes once it is flushed.
    fn refuse(&mut self, response: Vec<u8>, reason: String) -> Result<(), Gone> {
        self.queue_plain(&response)?;
        self.close_reason = Some(reason);
        let deadline = self.deadline().unwrap_or_else(Instant::now);
        self.start_flush(deadline);
        Ok(())
    }

    /// The transport closes the connection itself: the close frame, then
    /// flushing until `deadline`; `Closed` is reported now.
    fn fail(&mut self, code: u16, reason: &str, deadline: Instant, events: &mut Vec<NetEvent>) {
        let _ = self.close_with(code, reason);
        self.start_flush(deadline);
        self.closed_reported = true;
        events.push(NetEvent::Closed { conn: self.id, reason: format!("closed by the server ({code}): {reason}") });
    }

    /// Queues `bytes` (whole frames) in one binary message (not written yet: see [`Conn::flush`]).
    pub(super) fn queue(&mut self, bytes: Bytes) -> Result<(), Gone> {
        let Some(ws) = self.ws.as_mut() else { return Err(Gone("not open".to_owned())) };
        ws.write(Message::Binary(bytes))
            .and_then(|()| ws.flush())
            .map_err(|e| Gone(format!("WebSocket write failed: {e}")))?;
        self.pump_out()
    }

    /// Starts a graceful close: a WebSocket close frame (`code`, `reason`)
    /// after what is queued, TLS close_notify, flushed by `deadline`.
    pub(super) fn start_close(&mut self, code: u16, reason: &str, deadline: Instant) {
        let _ = self.close_with(code, reason);
        self.start_flush(deadline);
    }

    fn close_with(&mut self, code: u16, reason: &str) -> Result<(), Gone> {
        if let Some(ws) = self.ws.as_mut() {
            let frame = CloseFrame { code: CloseCode::from(code), reason: Utf8Bytes::from(close_reason(reason)) };
            let _ = ws.close(Some(frame));
            let _ = ws.flush();
        }
        self.pump_out()
    }

    fn start_flush(&mut self, deadline: Instant) {
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
        }
        self.pull_tls();
        self.phase = Phase::Flushing { deadline };
    }

    /// Moves what tungstenite wrote into the outbound buffer (through TLS).
    fn pump_out(&mut self) -> Result<(), Gone> {
        let Some(ws) = self.ws.as_mut() else { return Ok(()) };
        let bytes = ws.get_mut().take_output();
        if bytes.is_empty() { Ok(()) } else { self.queue_plain(&bytes) }
    }

    fn queue_plain(&mut self, bytes: &[u8]) -> Result<(), Gone> {
        match self.tls.as_mut() {
            Some(tls) => {
                tls.writer().write_all(bytes).map_err(|e| Gone(format!("TLS write failed: {e}")))?;
                self.pull_tls();
            }
            None => self.out.write_all(bytes).map_err(|e| Gone(format!("buffer failed: {e}")))?,
        }
        Ok(())
    }

    /// Moves rustls' pending TLS records into our buffer.
    fn pull_tls(&mut self) {
        let Some(tls) = self.tls.as_mut() else { return };
        while tls.wants_write() {
            match tls.write_tls(&mut self.out) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }

    /// Reads and drops what a closing peer sent, as TCP does.
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

    /// Writes the outbound buffer until `WouldBlock`; a flushed closing
    /// connection shuts its side down and starts draining.
    pub(super) fn flush(&mut self) -> Result<(), Gone> {
        self.write_out().map_err(|e| Gone(format!("write failed: {e}")))?;
        if let Phase::Flushing { deadline } = self.phase
            && self.out.is_empty()
        {
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

    /// Registers for what the connection waits for, as TCP does.
    pub(super) fn update_interest(&mut self, registry: &Registry, limits: &WsLimits) -> Result<(), Gone> {
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
            (false, false) => return Ok(()),
        };
        if self.interest != Some(want) {
            registry.reregister(&mut self.sock, self.token, want).map_err(|e| Gone(format!("poll failed: {e}")))?;
            self.interest = Some(want);
        }
        Ok(())
    }
}

/// tungstenite's configuration for one connection: messages and frames up
/// to [`WsLimits::max_message`], small buffers (it reads from memory), and
/// every write handed to the pipe at once.
fn ws_config(limits: &WsLimits) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 << 10)
        .write_buffer_size(0)
        .max_message_size(Some(limits.max_message))
        .max_frame_size(Some(limits.max_message))
}

/// A close frame's reason: at most 123 bytes (RFC 6455), cut at a character boundary.
fn close_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}
