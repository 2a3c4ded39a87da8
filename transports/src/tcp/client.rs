//! The client side: a TLS connection behind the blocking [`Link`] interface.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, ClientConfig, ClientConnection};

use crate::link::Link;
use crate::tls::ALPN;

/// How long [`Link::close`] waits for the socket to take what is queued.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

const SOCKET: Token = Token(0);

/// A client TLS connection to a confab server, as a [`Link`].
///
/// Non-blocking socket with its own small `mio::Poll`: [`Link::send`]
/// encrypts and writes what the socket takes now, keeping the rest (no
/// limit: the client machine bounds what it sends); [`Link::recv`] writes
/// the rest while it waits for input, so a large send cannot deadlock
/// against a server that answers while it reads.
pub struct TcpLink {
    poll: Poll,
    events: Events,
    sock: TcpStream,
    tls: ClientConnection,
    peer: SocketAddr,
    /// The socket reached end of file.
    eof: bool,
    /// The link failed or was closed: what every later call returns.
    dead: Option<(io::ErrorKind, String)>,
}

impl std::fmt::Debug for TcpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpLink").field("peer", &self.peer).field("dead", &self.dead).finish_non_exhaustive()
    }
}

/// Connects to `addr` and completes the TLS handshake (with ALPN
/// `confab/1`) within `timeout` in all.
///
/// # Errors
/// The error text says what failed: the TCP connect (refused, unreachable,
/// timed out), the handshake (the pin or certificate check, a TLS alert from
/// the server such as a missing ALPN, the server closing, the timeout), or a
/// server that did not agree to ALPN `confab/1`.
pub fn connect(
    addr: SocketAddr,
    server_name: ServerName<'static>,
    config: Arc<ClientConfig>,
    timeout: Duration,
) -> io::Result<TcpLink> {
    let deadline = super::server::later(Instant::now(), timeout);
    let std = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}")))?;
    std.set_nonblocking(true)?;
    // Latency matters more than segment count for chat frames.
    std.set_nodelay(true)?;
    let mut sock = TcpStream::from_std(std);
    let poll = Poll::new()?;
    poll.registry().register(&mut sock, SOCKET, Interest::READABLE | Interest::WRITABLE)?;
    let mut tls = ClientConnection::new(config, server_name)
        .map_err(|e| io::Error::other(format!("TLS setup for {addr} failed: {e}")))?;
    tls.set_buffer_limit(None);
    let mut link = TcpLink { poll, events: Events::with_capacity(4), sock, tls, peer: addr, eof: false, dead: None };
    link.handshake(deadline, timeout)?;
    if link.tls.alpn_protocol() != Some(ALPN) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the server at {addr} did not agree to ALPN confab/1"),
        ));
    }
    Ok(link)
}

impl TcpLink {
    /// The server's address.
    #[must_use]
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    fn handshake(&mut self, deadline: Instant, timeout: Duration) -> io::Result<()> {
        let addr = self.peer;
        let fail = |kind: io::ErrorKind, what: String| {
            io::Error::new(kind, format!("TLS handshake with {addr} failed: {what}"))
        };
        while self.tls.is_handshaking() {
            self.write_tls().map_err(|e| fail(e.kind(), e.to_string()))?;
            self.read_tls().map_err(|e| fail(e.kind(), handshake_hint(e)))?;
            if !self.tls.is_handshaking() {
                break;
            }
            if self.eof {
                return Err(fail(io::ErrorKind::UnexpectedEof, "the server closed the connection".to_owned()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("TLS handshake with {addr} timed out after {timeout:?}"),
                ));
            }
            self.wait(deadline - now)?;
        }
        // The client's Finished: best effort now, the rest with the first send or recv.
        self.write_tls().map_err(|e| fail(e.kind(), e.to_string()))
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(e),
            _ => Ok(()),
        }
    }

    /// Writes pending TLS records until the socket says `WouldBlock`.
    fn write_tls(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads and decrypts until the socket says `WouldBlock` or closes.
    fn read_tls(&mut self) -> io::Result<()> {
        while !self.eof {
            match self.tls.read_tls(&mut self.sock) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.tls.process_new_packets() {
                // Best effort: let the server see our alert.
                let _ = self.write_tls();
                return Err(io::Error::new(io::ErrorKind::InvalidData, TlsErrorText(e)));
            }
            if self.tls.wants_read() {
                continue;
            }
            // rustls holds a full plaintext buffer: the caller takes it first.
            return Ok(());
        }
        Ok(())
    }

    /// Takes the decrypted bytes rustls holds; `Err` once the stream ended.
    fn take_plaintext(&mut self) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 16 << 10];
        loop {
            match self.tls.reader().read(&mut chunk) {
                Ok(0) => {
                    return if bytes.is_empty() {
                        Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"))
                    } else {
                        Ok(bytes)
                    };
                }
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(bytes),
                Err(e) if bytes.is_empty() => {
                    return Err(io::Error::new(e.kind(), format!("the server closed the connection: {e}")));
                }
                Err(_) => return Ok(bytes),
            }
        }
    }

    fn check(&self) -> io::Result<()> {
        match &self.dead {
            Some((kind, text)) => Err(io::Error::new(*kind, text.clone())),
            None => Ok(()),
        }
    }

    fn die<T>(&mut self, e: io::Error) -> io::Result<T> {
        self.dead = Some((e.kind(), e.to_string()));
        Err(e)
    }
}

impl Link for TcpLink {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.check()?;
        if let Err(e) = self.tls.writer().write_all(bytes) {
            return self.die(e);
        }
        match self.write_tls() {
            Ok(()) => Ok(()),
            Err(e) => self.die(e),
        }
    }

    fn recv(&mut self, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
        self.check()?;
        loop {
            let step = self.write_tls().and_then(|()| self.read_tls()).and_then(|()| self.take_plaintext());
            match step {
                Ok(bytes) if !bytes.is_empty() => return Ok(Some(bytes)),
                Ok(_) if self.eof => {
                    let e = io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection");
                    return self.die(e);
                }
                Ok(_) => {}
                Err(e) => return self.die(e),
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            if let Err(e) = self.wait(deadline - now) {
                return self.die(e);
            }
        }
    }

    fn close(&mut self) {
        if self.dead.is_some() {
            return;
        }
        self.tls.send_close_notify();
        let until = Instant::now() + CLOSE_FLUSH;
        while self.tls.wants_write() && self.write_tls().is_ok() {
            let now = Instant::now();
            if now >= until || self.wait(until - now).is_err() {
                break;
            }
        }
        // Best effort, as documented.
        let _ = self.sock.shutdown(Shutdown::Write);
        self.dead = Some((io::ErrorKind::NotConnected, "the link was closed".to_owned()));
    }

    fn transport(&self) -> &'static str {
        "tcp"
    }
}

/// A rustls error as a human sentence.
#[derive(Debug)]
struct TlsErrorText(rustls::Error);

impl std::fmt::Display for TlsErrorText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            // Our own verifier's words (a pin mismatch), without rustls' "unexpected error: ".
            rustls::Error::General(text) => f.write_str(text),
            e => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TlsErrorText {}

/// The error text of a failed handshake, with a hint for the alerts a confab server sends.
fn handshake_hint(e: io::Error) -> String {
    let hint = e.get_ref().and_then(|inner| inner.downcast_ref::<TlsErrorText>()).and_then(|t| match &t.0 {
        rustls::Error::AlertReceived(AlertDescription::NoApplicationProtocol | AlertDescription::AccessDenied) => {
            Some(" (the server requires ALPN confab/1)")
        }
        _ => None,
    });
    format!("{e}{}", hint.unwrap_or(""))
}
