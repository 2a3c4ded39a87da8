//! The client side: a WebSocket (plain, or over a pinned TLS connection)
//! behind the blocking [`Link`] interface.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use tungstenite::WebSocket;
use tungstenite::client::ClientRequestBuilder;
use tungstenite::error::Error as WsError;
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::{Message, WebSocketConfig};

use super::{MIN_MESSAGE, PATH, SUBPROTOCOL, confab_code_of};
use crate::link::Link;

/// How long [`Link::close`] waits for the close to go out.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

const SOCKET: Token = Token(0);

/// A WebSocket URL as confab uses it: `ws://HOST:PORT[/PATH]` or
/// `wss://HOST:PORT[/PATH]` (the path defaults to [`PATH`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// `wss://`: TLS, with the pin or CA of the other transports.
    pub tls: bool,
    /// The host (a name, an IPv4 address, or an IPv6 address without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
    /// The endpoint path, from `/`.
    pub path: String,
}

impl WsUrl {
    /// `HOST:PORT` (IPv6 in brackets), to resolve and to name the server.
    #[must_use]
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for WsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", if self.tls { "wss" } else { "ws" }, self.authority(), self.path)
    }
}

impl FromStr for WsUrl {
    type Err = String;

    /// Parses `ws://HOST:PORT[/PATH]` or `wss://...`; the port is required.
    fn from_str(s: &str) -> Result<WsUrl, String> {
        let bad = || format!("{s:?} is not a WebSocket URL: expected ws://HOST:PORT or wss://HOST:PORT[/PATH]");
        let (tls, rest) = if let Some(rest) = s.strip_prefix("wss://") {
            (true, rest)
        } else if let Some(rest) = s.strip_prefix("ws://") {
            (false, rest)
        } else {
            return Err(bad());
        };
        let (authority, path) = rest.find('/').map_or((rest, PATH), |i| (&rest[..i], &rest[i..]));
        let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let port = port.parse::<u16>().map_err(|_| bad())?;
        if host.is_empty() || path.contains(char::is_whitespace) {
            return Err(bad());
        }
        Ok(WsUrl { tls, host: host.to_owned(), port, path: path.to_owned() })
    }
}

/// The socket, plain or under TLS; non-blocking either way.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn sock(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &mut s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => {
                // Push the TLS records rustls holds; WouldBlock is retried by the caller.
                while s.conn.wants_write() {
                    s.conn.write_tls(&mut s.sock)?;
                }
                Ok(())
            }
        }
    }
}

/// A client WebSocket connection to a confab server, as a [`Link`]:
/// each [`Link::send`] is one binary message, or several of
/// [`MIN_MESSAGE`] bytes for a larger send; [`Link::recv`] returns the
/// payloads of the binary messages that arrived. A non-blocking socket
/// with its own small `mio::Poll`, as [`TcpLink`](crate::tcp::TcpLink):
/// a send that the socket cannot take at once is kept and written while
/// [`Link::recv`] waits.
pub struct WsLink {
    poll: Poll,
    events: Events,
    ws: WebSocket<Stream>,
    url: WsUrl,
    peer: SocketAddr,
    dead: Option<(io::ErrorKind, String)>,
}

impl fmt::Debug for WsLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsLink").field("url", &self.url.to_string()).field("dead", &self.dead).finish_non_exhaustive()
    }
}

/// Connects to `addr` for `url` and completes the TLS handshake (for
/// `wss://`, with `tls`: the pinned configuration and the name to send) and
/// the WebSocket upgrade (path, subprotocol [`SUBPROTOCOL`]) within
/// `timeout` in all.
///
/// # Errors
/// The TCP connect, the TLS handshake (a pin mismatch says so), the upgrade
/// (the server's HTTP status and reason), or the timeout; `wss://` without
/// `tls`.
pub fn connect(
    addr: SocketAddr,
    url: &WsUrl,
    tls: Option<(ServerName<'static>, Arc<ClientConfig>)>,
    timeout: Duration,
) -> io::Result<WsLink> {
    let deadline = crate::tcp::server::later(Instant::now(), timeout);
    let std = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}")))?;
    std.set_nonblocking(true)?;
    std.set_nodelay(true)?;
    let mut sock = TcpStream::from_std(std);
    let mut poll = Poll::new()?;
    poll.registry().register(&mut sock, SOCKET, Interest::READABLE | Interest::WRITABLE)?;
    let stream = match (url.tls, tls) {
        (false, _) => Stream::Plain(sock),
        (true, Some((name, config))) => {
            let conn = ClientConnection::new(config, name)
                .map_err(|e| io::Error::other(format!("TLS setup for {addr} failed: {e}")))?;
            Stream::Tls(Box::new(StreamOwned::new(conn, sock)))
        }
        (true, None) => return Err(io::Error::other(format!("{url} needs TLS, and no TLS configuration was given"))),
    };
    let uri =
        url.to_string().parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{url}: {e}")))?;
    let request = ClientRequestBuilder::new(uri).with_sub_protocol(SUBPROTOCOL);
    let config = WebSocketConfig::default().write_buffer_size(0);
    let mut events = Events::with_capacity(4);
    let fail =
        |what: String| io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket upgrade at {url} failed: {what}"));
    let mut step = tungstenite::client::client_with_config(request, stream, Some(config));
    let ws = loop {
        match step {
            Ok((ws, _response)) => break ws,
            Err(HandshakeError::Interrupted(mid)) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connecting to {url} timed out after {timeout:?}"),
                    ));
                }
                wait(&mut poll, &mut events, deadline - now)?;
                step = mid.handshake();
            }
            Err(HandshakeError::Failure(WsError::Io(e))) => {
                return Err(io::Error::new(e.kind(), format!("connecting to {url} failed: {}", tls_text(&e))));
            }
            Err(HandshakeError::Failure(WsError::Http(response))) => {
                let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                return Err(fail(format!("the server answered {}: {}", response.status(), body.trim())));
            }
            Err(HandshakeError::Failure(e)) => return Err(fail(e.to_string())),
        }
    };
    Ok(WsLink { poll, events, ws, url: url.clone(), peer: addr, dead: None })
}

fn wait(poll: &mut Poll, events: &mut Events, timeout: Duration) -> io::Result<()> {
    match poll.poll(events, Some(timeout)) {
        Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(e),
        _ => Ok(()),
    }
}

/// The text of an I/O error, with rustls' words for a TLS failure (a pin
/// mismatch reads "server key ... does not match the pinned key ...").
fn tls_text(e: &io::Error) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::General(text)) => text.clone(),
        _ => e.to_string(),
    }
}

impl WsLink {
    /// The URL connected to.
    #[must_use]
    pub fn url(&self) -> &WsUrl {
        &self.url
    }

    /// The server's address.
    #[must_use]
    pub fn peer(&self) -> SocketAddr {
        self.peer
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

    /// The link ended with `e` after `bytes` arrived: the bytes now, the
    /// error (the server's close code and reason, say) from the next call.
    fn die_after(&mut self, bytes: Vec<u8>, e: io::Error) -> io::Result<Option<Vec<u8>>> {
        if bytes.is_empty() {
            return self.die(e);
        }
        self.dead = Some((e.kind(), e.to_string()));
        Ok(Some(bytes))
    }

    /// Writes what tungstenite and TLS hold; `WouldBlock` is not an error.
    fn flush(&mut self) -> io::Result<()> {
        match self.ws.flush() {
            Ok(()) => Ok(()),
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(ws_io(e)),
        }
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        wait(&mut self.poll, &mut self.events, timeout)
    }
}

/// A tungstenite error as an I/O error: a close by the server is the end of the stream.
fn ws_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection")
        }
        e => io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket error: {e}")),
    }
}

impl Link for WsLink {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.check()?;
        // Messages of at most MIN_MESSAGE bytes, which every server accepts.
        for chunk in bytes.chunks(MIN_MESSAGE) {
            match self.ws.write(Message::Binary(Bytes::copy_from_slice(chunk))) {
                Ok(()) => {}
                // Kept in tungstenite's buffer, written by the next flush.
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return self.die(ws_io(e)),
            }
        }
        match self.flush() {
            Ok(()) => Ok(()),
            Err(e) => self.die(e),
        }
    }

    fn recv(&mut self, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
        self.check()?;
        let mut bytes = Vec::new();
        loop {
            if let Err(e) = self.flush() {
                return self.die(e);
            }
            loop {
                match self.ws.read() {
                    Ok(Message::Binary(b)) => bytes.extend_from_slice(&b),
                    Ok(Message::Close(frame)) => {
                        let why = frame.map_or_else(String::new, |f| {
                            let code = u16::from(f.code);
                            match confab_code_of(code) {
                                Some(c) => format!(" (close {c}: {})", f.reason),
                                None => format!(" (WebSocket close {code}: {})", f.reason),
                            }
                        });
                        let e = io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("the server closed the connection{why}"),
                        );
                        return self.die_after(bytes, e);
                    }
                    Ok(_) => {}
                    Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return self.die_after(bytes, ws_io(e)),
                }
            }
            if !bytes.is_empty() {
                return Ok(Some(bytes));
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
        let _ = self.ws.close(None);
        let until = Instant::now() + CLOSE_FLUSH;
        while let Err(WsError::Io(e)) = self.ws.flush() {
            let now = Instant::now();
            if e.kind() != io::ErrorKind::WouldBlock || now >= until || self.wait(until - now).is_err() {
                break;
            }
        }
        if let Stream::Tls(s) = self.ws.get_mut() {
            s.conn.send_close_notify();
            let _ = s.conn.write_tls(&mut s.sock);
        }
        let _ = self.ws.get_mut().sock().shutdown(Shutdown::Write);
        self.dead = Some((io::ErrorKind::NotConnected, "the link was closed".to_owned()));
    }

    fn transport(&self) -> &'static str {
        "ws"
    }
}
