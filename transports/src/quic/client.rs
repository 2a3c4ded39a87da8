//! The client side: [`QuicLink`], a blocking [`Link`] over one QUIC stream,
//! driving its quinn-proto connection over its own mio poll and UDP socket.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::{Events, Poll, Token};
use quinn_proto::crypto::rustls::QuicClientConfig;
use quinn_proto::{
    ClientConfig, Connection, ConnectionError, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig, Event,
    ReadError, StreamEvent, StreamId, WriteError,
};

use super::udp::Udp;
use super::{CODE_CLOSED, QuicLimits, describe};
use crate::link::Link;

/// How long the client waits for the server's idle timeout before it gives up a dead path.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// QUIC keep-alive, so that an idle session outlives the server's idle timeout and NAT bindings.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// A `send` that the server's flow control holds back longer than this fails.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `close` waits for the server to acknowledge the end of the stream.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// The largest chunk `recv` returns.
const READ_CHUNK: usize = 64 * 1024;
/// The socket's receive and send buffers (best effort: the kernel caps
/// them at `net.core.rmem_max` / `wmem_max`): a burst from the server
/// while the caller is busy waits there instead of being lost.
const CLIENT_SOCKET_BUFFER: usize = 2 << 20;
/// The link's one socket.
const SOCKET: Token = Token(0);

/// A confab session over one bidirectional QUIC stream.
///
/// It runs no thread: each method drives the connection (datagrams in and
/// out, acknowledgements, retransmissions, keep-alives) while it waits. A
/// `send` returns once the stream took the bytes (it waits while flow
/// control holds them back); they leave with the next `recv` or `close`, so
/// that the frames of one turn of a [`Driver`](crate::link::Driver) (which
/// always goes on to `recv`) and the acknowledgements they carry share
/// datagrams instead of one send call each.
pub struct QuicLink {
    poll: Poll,
    events: Events,
    udp: Udp,
    endpoint: Endpoint,
    ch: ConnectionHandle,
    conn: Connection,
    stream: Option<StreamId>,
    /// The transmit buffer.
    buf: Vec<u8>,
    connected: bool,
    /// The connection was lost, and why.
    lost: Option<ConnectionError>,
    /// The server acknowledged (or stopped) our finished stream.
    finished: bool,
    /// The stream may have input not read yet.
    readable: bool,
    /// The stream may take more bytes.
    writable: bool,
    /// Bytes were written since the last transmit: they leave with the next `recv` or `close`.
    unsent: bool,
    /// Set once the link failed or ended: every later call returns it again.
    dead: Option<(io::ErrorKind, String)>,
    closed: bool,
}

impl std::fmt::Debug for QuicLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicLink")
            .field("remote", &self.conn.remote_address())
            .field("connected", &self.connected)
            .field("dead", &self.dead)
            .finish_non_exhaustive()
    }
}

/// Connects to the QUIC server at `addr`, asking for `server_name`, and
/// opens the session's stream; all within `timeout`.
///
/// # Errors
/// `tls` is not usable for QUIC, the handshake failed (wrong pin or
/// certificate, no common ALPN, refused: the message says which) or did not
/// finish within `timeout` ([`io::ErrorKind::TimedOut`]).
pub fn connect(
    addr: SocketAddr,
    server_name: &str,
    tls: rustls::ClientConfig,
    timeout: Duration,
) -> io::Result<QuicLink> {
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut config = ClientConfig::new(Arc::new(crypto));
    let limits = QuicLimits { idle_timeout: IDLE_TIMEOUT, ..QuicLimits::default() };
    config.transport_config(Arc::new(super::transport_config(&limits, Some(KEEP_ALIVE))?));

    let poll = Poll::new()?;
    let local: SocketAddr =
        if addr.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    let udp = Udp::bind(poll.registry(), SOCKET, local, 1, CLIENT_SOCKET_BUFFER)?;
    let mut endpoint = Endpoint::new(Arc::new(EndpointConfig::default()), None, !udp.may_fragment(), None);
    let started = Instant::now();
    let (ch, conn) = endpoint
        .connect(started, config, addr, server_name)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("QUIC connect to {addr}: {e}")))?;
    let mut link = QuicLink {
        poll,
        events: Events::with_capacity(4),
        udp,
        endpoint,
        ch,
        conn,
        stream: None,
        buf: Vec::new(),
        connected: false,
        lost: None,
        finished: false,
        readable: false,
        writable: false,
        unsent: false,
        dead: None,
        closed: false,
    };
    let deadline = started + timeout;
    link.drive(deadline, |l| l.stream.is_some() || l.lost.is_some())?;
    if link.stream.is_some() {
        return Ok(link);
    }
    link.closed = true;
    match link.lost.take() {
        Some(e) => {
            let kind = match &e {
                ConnectionError::TimedOut => io::ErrorKind::TimedOut,
                ConnectionError::ConnectionClosed(_) | ConnectionError::ApplicationClosed(_) => {
                    io::ErrorKind::ConnectionRefused
                }
                _ => io::ErrorKind::InvalidData,
            };
            Err(io::Error::new(kind, format!("QUIC handshake with {addr} failed: {e}")))
        }
        None => {
            link.abandon();
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("QUIC handshake with {addr}: no answer within {timeout:?}"),
            ))
        }
    }
}

/// The error a lost connection gives the client.
fn lost(e: &ConnectionError) -> (io::ErrorKind, String) {
    match e {
        ConnectionError::ApplicationClosed(c) if c.error_code == CODE_CLOSED => {
            (io::ErrorKind::UnexpectedEof, "the server closed the connection".into())
        }
        ConnectionError::ApplicationClosed(c) => (
            io::ErrorKind::ConnectionAborted,
            format!("the server closed the connection: {} (code {})", String::from_utf8_lossy(&c.reason), c.error_code),
        ),
        ConnectionError::TimedOut => (io::ErrorKind::TimedOut, "QUIC idle timeout".into()),
        ConnectionError::Reset => (io::ErrorKind::ConnectionReset, "connection reset by the server".into()),
        ConnectionError::LocallyClosed => (io::ErrorKind::NotConnected, "the link is closed".into()),
        e => (io::ErrorKind::ConnectionAborted, describe(e)),
    }
}

impl QuicLink {
    fn fail(&mut self, kind: io::ErrorKind, message: String) -> io::Error {
        // Whatever the connection still owes the server (the acknowledgement
        // of its stream's end, a close) leaves now: the link will not be driven again.
        self.transmit(Instant::now());
        self.dead = Some((kind, message.clone()));
        io::Error::new(kind, message)
    }

    fn fail_lost(&mut self) -> io::Error {
        let (kind, message) =
            self.lost.as_ref().map_or_else(|| (io::ErrorKind::NotConnected, "the link is closed".to_owned()), lost);
        self.fail(kind, message)
    }

    fn check(&self) -> io::Result<()> {
        match &self.dead {
            Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
            None if self.closed => Err(io::Error::new(io::ErrorKind::NotConnected, "the link is closed")),
            None => Ok(()),
        }
    }

    /// Handles what arrived; until `done` holds or `until` passes: sends
    /// what the connection has to send, waits for datagrams or a timer,
    /// handles them. What `done` saw is not answered here: the caller's
    /// next call sends the answer and the acknowledgements in one datagram.
    fn drive(&mut self, until: Instant, mut done: impl FnMut(&Self) -> bool) -> io::Result<()> {
        loop {
            self.receive(Instant::now());
            if done(self) || self.conn.is_drained() {
                return Ok(());
            }
            let now = Instant::now();
            self.transmit(now);
            if now >= until {
                return Ok(());
            }
            let wake = self.conn.poll_timeout().map_or(until, |t| t.min(until));
            if let Err(e) = self.poll.poll(&mut self.events, Some(wake.saturating_duration_since(now)))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            let now = Instant::now();
            if self.events.iter().any(mio::event::Event::is_writable) {
                self.udp.flush_blocked(self.poll.registry());
            }
            if self.conn.poll_timeout().is_some_and(|t| t <= now) {
                self.conn.handle_timeout(now);
            }
        }
    }

    /// Reads every datagram waiting (always before anything is sent, so
    /// that nothing goes out on a connection the server already ended) and
    /// handles the connection's events.
    fn receive(&mut self, now: Instant) {
        {
            let (endpoint, conn, ch, buf) = (&mut self.endpoint, &mut self.conn, self.ch, &mut self.buf);
            loop {
                let got = self.udp.recv(|from, ecn, data| {
                    buf.clear();
                    if let Some(DatagramEvent::ConnectionEvent(h, event)) =
                        endpoint.handle(now, from, None, ecn, data, buf)
                        && h == ch
                    {
                        conn.handle_event(event);
                    }
                });
                match got {
                    Ok(true) => {}
                    Ok(false) => break,
                    // About one datagram (an ICMP report): what is waiting is read next time.
                    Err(_) => break,
                }
            }
        }
        while let Some(event) = self.conn.poll_endpoint_events() {
            if let Some(answer) = self.endpoint.handle_event(self.ch, event) {
                self.conn.handle_event(answer);
            }
        }
        while let Some(event) = self.conn.poll() {
            match event {
                Event::Connected => self.connected = true,
                Event::Stream(StreamEvent::Finished { .. } | StreamEvent::Stopped { .. }) => self.finished = true,
                Event::Stream(StreamEvent::Readable { .. }) => self.readable = true,
                Event::Stream(StreamEvent::Writable { .. }) => self.writable = true,
                Event::ConnectionLost { reason } => self.lost = Some(reason),
                _ => {}
            }
        }
        if self.connected && self.stream.is_none() && self.lost.is_none() {
            self.stream = self.conn.streams().open(Dir::Bi);
        }
    }

    fn transmit(&mut self, now: Instant) {
        self.unsent = false;
        let max = self.udp.max_gso_segments().max(1);
        while !self.udp.is_blocked() {
            self.buf.clear();
            let Some(t) = self.conn.poll_transmit(now, max, &mut self.buf) else { break };
            self.udp.send(self.poll.registry(), &t, &self.buf);
        }
    }

    /// Closes the connection without waiting, and sends the close frame.
    fn abandon(&mut self) {
        if !self.conn.is_closed() {
            self.conn.close(Instant::now(), CODE_CLOSED, Bytes::from_static(b"closed"));
        }
        self.transmit(Instant::now());
    }
}

impl Link for QuicLink {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.check()?;
        let Some(stream) = self.stream else { return Err(self.fail_lost()) };
        let deadline = Instant::now() + SEND_TIMEOUT;
        let mut rest = bytes;
        loop {
            self.writable = false;
            match self.conn.send_stream(stream).write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(WriteError::Blocked) => {}
                Err(WriteError::Stopped(code)) => {
                    return Err(
                        self.fail(io::ErrorKind::BrokenPipe, format!("the server stopped reading (code {code})"))
                    );
                }
                Err(WriteError::ClosedStream) => return Err(self.fail_lost()),
            }
            if rest.is_empty() {
                // Sent by the next `recv` (a driver's next step) or `close`:
                // the turn's frames, and the acknowledgements they carry,
                // leave together.
                self.unsent = true;
                return match self.lost {
                    Some(_) => Err(self.fail_lost()),
                    None => Ok(()),
                };
            }
            // Held back by flow control or congestion: wait for room.
            let before = rest.len();
            self.drive(deadline, |l| l.writable || l.lost.is_some())?;
            if self.lost.is_some() {
                return Err(self.fail_lost());
            }
            if Instant::now() >= deadline && rest.len() == before {
                return Err(self.fail(io::ErrorKind::TimedOut, format!("the server took nothing for {SEND_TIMEOUT:?}")));
            }
        }
    }

    fn recv(&mut self, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
        self.check()?;
        let Some(stream) = self.stream else { return Err(self.fail_lost()) };
        if self.unsent {
            // What `send` wrote leaves now, even if bytes are waiting to be read.
            let now = Instant::now();
            self.receive(now);
            self.transmit(now);
        }
        loop {
            self.readable = false;
            let mut got = Vec::new();
            let mut end = None;
            {
                let mut recv = self.conn.recv_stream(stream);
                match recv.read(true) {
                    Ok(mut chunks) => {
                        loop {
                            match chunks.next(READ_CHUNK - got.len()) {
                                Ok(Some(chunk)) => {
                                    got.extend_from_slice(&chunk.bytes);
                                    if got.len() >= READ_CHUNK {
                                        break;
                                    }
                                }
                                Ok(None) => {
                                    end = Some(Ok(()));
                                    break;
                                }
                                Err(ReadError::Blocked) => break,
                                Err(ReadError::Reset(code)) => {
                                    end = Some(Err(code));
                                    break;
                                }
                            }
                        }
                        // Flow control credit goes out with the next transmit.
                        let _ = chunks.finalize();
                    }
                    Err(_) => end = Some(Ok(())),
                }
            }
            if end.is_some() {
                // The server ended the stream: nothing answers it, and the
                // server waits for the acknowledgement of its end before it
                // closes. A PING carries the acknowledgements now.
                self.conn.ping();
                self.transmit(Instant::now());
            }
            if !got.is_empty() {
                // Acknowledgements and credit leave with the caller's next call (its answer, most often).
                return Ok(Some(got));
            }
            match end {
                Some(Ok(())) => {
                    return Err(self.fail(io::ErrorKind::UnexpectedEof, "the server closed the stream".into()));
                }
                Some(Err(code)) => {
                    return Err(
                        self.fail(io::ErrorKind::ConnectionReset, format!("the server reset the stream (code {code})"))
                    );
                }
                None => {}
            }
            if self.lost.is_some() {
                return Err(self.fail_lost());
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            self.drive(deadline, |l| l.readable || l.lost.is_some())?;
        }
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        if self.dead.is_none()
            && let Some(stream) = self.stream
            && self.conn.send_stream(stream).finish().is_ok()
        {
            // Best effort: the server acknowledges the end of the stream (or stops it).
            let _ = self.drive(Instant::now() + CLOSE_WAIT, |l| l.finished || l.lost.is_some());
        }
        self.abandon();
    }

    fn transport(&self) -> &'static str {
        "quic"
    }
}

impl Drop for QuicLink {
    /// Closes the connection (without waiting for the stream to be acknowledged).
    fn drop(&mut self) {
        if !self.closed {
            self.closed = true;
            self.abandon();
        }
    }
}
