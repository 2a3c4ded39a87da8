//! The client side: [`QuicLink`], a blocking [`Link`] over one QUIC stream.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Connection, ConnectionError, Endpoint, ReadError, RecvStream, SendStream, WriteError};
use tokio::runtime::Runtime;

use super::{CODE_CLOSED, describe};
use crate::link::Link;

/// How long the client waits for the server's idle timeout before it gives up a dead path.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// QUIC keep-alive, so that an idle session outlives the server's idle timeout and NAT bindings.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// A `send` that the server's flow control holds back longer than this fails.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `close` waits for the server to acknowledge the end of the stream.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long the runtime runs after a close so that the close frame goes out.
const CLOSE_LINGER: Duration = Duration::from_millis(20);
/// The largest chunk `recv` returns.
const READ_CHUNK: usize = 64 * 1024;

/// A confab session over one bidirectional QUIC stream.
///
/// It owns a tokio runtime with one worker thread, which drives the
/// connection (acknowledgements, retransmissions, keep-alives) while the
/// caller does something else; the methods block on it.
#[derive(Debug)]
pub struct QuicLink {
    runtime: Runtime,
    endpoint: Endpoint,
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    /// Set once the link failed or ended: every later call returns it again.
    dead: Option<(io::ErrorKind, String)>,
    closed: bool,
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
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let idle = quinn::IdleTimeout::try_from(IDLE_TIMEOUT).map_err(io::Error::other)?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_concurrent_bidi_streams(0u32.into())
        .max_concurrent_uni_streams(0u32.into());
    config.transport_config(Arc::new(transport));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("confab-quic-link")
        .enable_all()
        .build()?;
    let local: SocketAddr =
        if addr.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    // Both spawn their drivers on the runtime.
    let (endpoint, connecting) = {
        let _entered = runtime.enter();
        let endpoint = Endpoint::client(local)?;
        let connecting = endpoint
            .connect_with(config, addr, server_name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("QUIC connect to {addr}: {e}")))?;
        (endpoint, connecting)
    };
    let opened = runtime.block_on(async {
        tokio::time::timeout(timeout, async {
            let conn = connecting.await?;
            let (send, recv) = conn.open_bi().await?;
            Ok::<_, ConnectionError>((conn, send, recv))
        })
        .await
    });
    match opened {
        Ok(Ok((conn, send, recv))) => Ok(QuicLink { runtime, endpoint, conn, send, recv, dead: None, closed: false }),
        Ok(Err(e)) => {
            let kind = match &e {
                ConnectionError::TimedOut => io::ErrorKind::TimedOut,
                ConnectionError::ConnectionClosed(_) | ConnectionError::ApplicationClosed(_) => {
                    io::ErrorKind::ConnectionRefused
                }
                _ => io::ErrorKind::InvalidData,
            };
            Err(io::Error::new(kind, format!("QUIC handshake with {addr} failed: {e}")))
        }
        Err(_) => {
            endpoint.close(CODE_CLOSED, b"closed");
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
        self.dead = Some((kind, message.clone()));
        io::Error::new(kind, message)
    }

    fn check(&self) -> io::Result<()> {
        match &self.dead {
            Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
            None if self.closed => Err(io::Error::new(io::ErrorKind::NotConnected, "the link is closed")),
            None => Ok(()),
        }
    }
}

impl Link for QuicLink {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.check()?;
        let written =
            self.runtime.block_on(async { tokio::time::timeout(SEND_TIMEOUT, self.send.write_all(bytes)).await });
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(WriteError::ConnectionLost(e))) => {
                let (kind, message) = lost(&e);
                Err(self.fail(kind, message))
            }
            Ok(Err(WriteError::Stopped(code))) => {
                Err(self.fail(io::ErrorKind::BrokenPipe, format!("the server stopped reading (code {code})")))
            }
            Ok(Err(e)) => Err(self.fail(io::ErrorKind::BrokenPipe, format!("QUIC stream write failed: {e}"))),
            Err(_) => Err(self.fail(io::ErrorKind::TimedOut, format!("the server took nothing for {SEND_TIMEOUT:?}"))),
        }
    }

    fn recv(&mut self, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
        self.check()?;
        let deadline = tokio::time::Instant::from_std(deadline);
        let read = self
            .runtime
            .block_on(async { tokio::time::timeout_at(deadline, self.recv.read_chunk(READ_CHUNK, true)).await });
        match read {
            Err(_) => Ok(None),
            Ok(Ok(Some(chunk))) => Ok(Some(Vec::from(chunk.bytes))),
            Ok(Ok(None)) => Err(self.fail(io::ErrorKind::UnexpectedEof, "the server closed the stream".into())),
            Ok(Err(ReadError::ConnectionLost(e))) => {
                let (kind, message) = lost(&e);
                Err(self.fail(kind, message))
            }
            Ok(Err(ReadError::Reset(code))) => {
                Err(self.fail(io::ErrorKind::ConnectionReset, format!("the server reset the stream (code {code})")))
            }
            Ok(Err(e)) => Err(self.fail(io::ErrorKind::Other, format!("QUIC stream read failed: {e}"))),
        }
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        if self.dead.is_none() && self.send.finish().is_ok() {
            let stopped = self.send.stopped();
            let _ = self.runtime.block_on(async { tokio::time::timeout(CLOSE_WAIT, stopped).await });
        }
        self.conn.close(CODE_CLOSED, b"closed");
        let _ = self.runtime.block_on(async { tokio::time::timeout(CLOSE_LINGER, self.endpoint.wait_idle()).await });
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
            self.conn.close(CODE_CLOSED, b"closed");
            let _ =
                self.runtime.block_on(async { tokio::time::timeout(CLOSE_LINGER, self.endpoint.wait_idle()).await });
        }
    }
}
