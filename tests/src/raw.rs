//! Raw clients for the hostile tests: plain TCP sockets and TLS connections
//! that speak frames byte by byte, from a chosen loopback source address.
//!
//! Linux routes all of 127.0.0.0/8 to `lo`, so a socket bound to 127.0.0.2
//! before it connects is "another source" for the server's per-source limits
//! (handshake slots, failed logins), while the `confab` users of
//! [`procs`](crate::procs) connect from 127.0.0.1.

use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_proto::wire::{FrameDecoder, Limits, Message, Request, RequestBody};
use confab_transports::tls::{self, ClientTrust, Pin};
use rustls::{ClientConnection, StreamOwned};

/// A plain TCP connection to `to` from the loopback address `from` (no TLS:
/// held as it is, it is a half-open connection for the server).
///
/// # Errors
/// The socket cannot be made, bound or connected.
pub fn connect_from(from: Ipv4Addr, to: SocketAddr) -> io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::from((from, 0)).into())?;
    sock.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(sock.into())
}

/// The bytes of request `id` with `body` (no auth part).
#[must_use]
pub fn request(id: u32, body: impl Into<RequestBody>) -> Vec<u8> {
    Message::Request(Request { request_id: id, timestamp_ms: 0, body: body.into() }).to_bytes(&[]).to_vec()
}

/// A TLS 1.3 connection (ALPN `confab/1`, the server pinned) from a chosen
/// loopback source, on a blocking socket: sends raw bytes, receives
/// decoded messages.
pub struct RawTls {
    stream: StreamOwned<ClientConnection, TcpStream>,
    decoder: FrameDecoder,
    limits: Limits,
}

impl std::fmt::Debug for RawTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawTls").field("peer", &self.stream.sock.peer_addr().ok()).finish_non_exhaustive()
    }
}

impl RawTls {
    /// Connects from `from` to `to` and completes the handshake within
    /// `timeout`, trusting the key whose pin is `pin`.
    ///
    /// # Errors
    /// The connect or the handshake failed (refused, closed, timed out,
    /// another key).
    pub fn connect(from: Ipv4Addr, to: SocketAddr, pin: &str, timeout: Duration) -> io::Result<RawTls> {
        let pin: Pin = pin.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("pin: {e:?}")))?;
        let config = tls::client_config(&ClientTrust::Pin(pin)).map_err(io::Error::other)?;
        let deadline = Instant::now() + timeout;
        let mut sock = connect_from(from, to)?;
        sock.set_nodelay(true)?;
        let mut tls =
            ClientConnection::new(Arc::new(config), tls::server_name("localhost")).map_err(io::Error::other)?;
        while tls.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"));
            }
            sock.set_read_timeout(Some(left))?;
            let (read, _) = tls.complete_io(&mut sock)?;
            if read == 0 && tls.is_handshaking() && !tls.wants_write() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during the TLS handshake"));
            }
        }
        let limits = Limits::default();
        Ok(RawTls { stream: StreamOwned::new(tls, sock), decoder: FrameDecoder::new(limits), limits })
    }

    /// Writes `bytes` (encrypted) and flushes them.
    ///
    /// # Errors
    /// The connection is closed or broken.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// The next message from the server, waiting until `deadline` at most:
    /// `Ok(None)` when none came by then.
    ///
    /// # Errors
    /// The server closed the connection (`UnexpectedEof`) or broke it, or
    /// sent bytes that do not decode (`InvalidData`).
    pub fn recv(&mut self, deadline: Instant) -> io::Result<Option<Message>> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(frame) = self.decoder.next_frame().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))? {
                let message =
                    Message::decode(&frame, &self.limits).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                return Ok(Some(message));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream.sock.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection")),
                Ok(n) => self.decoder.push(&buf[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
