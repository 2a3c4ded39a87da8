//! QUIC transport: quinn-proto 0.11 driven sans-IO, ALPN `confab/1`, one
//! bidirectional stream per session.
//!
//! - [`QuicServer`] owns a quinn-proto `Endpoint`, its connections and one
//!   mio UDP socket, but not the `mio::Poll`: like
//!   [`TcpServer`](crate::tcp::TcpServer) it is driven by the loop that owns
//!   the core, on that loop's thread (`handle_event`, `handle_timeout`,
//!   `poll_timeout`, and `flush` once per turn), and every quinn-proto call
//!   gets that loop's `now`. A frame goes from the socket to the core and
//!   back with no thread hop.
//! - [`connect`] makes a [`QuicLink`], the client side: a blocking
//!   [`Link`](crate::link::Link) that drives its own quinn-proto connection
//!   over its own small `mio::Poll` and UDP socket, as
//!   [`TcpLink`](crate::tcp::TcpLink) does, only while one of its methods
//!   waits (no runtime, no thread).
//!
//! Both send through quinn-udp: GSO batches on send, GRO and `recvmmsg` on
//! receive, ECN, where the kernel supports them.
//!
//! The client opens the session's stream; the server learns of it with the
//! client's first bytes (confab clients speak first). Application close codes
//! on the wire: 0 closed, 1 no stream opened in time, 2 outbound backlog over
//! the limit, 3 a second stream (stream stop/reset code), 4 server shutdown.

mod client;
mod conn;
mod server;
mod udp;

use std::time::Duration;

use std::io;
use std::time::Instant;

use quinn_proto::{ConnectionError, VarInt};

pub use client::{QuicLink, connect};
pub use server::QuicServer;
pub use udp::UdpStats;

/// Limits of a [`QuicServer`].
#[derive(Debug, Clone)]
pub struct QuicLimits {
    /// Connections served at once; more are refused (QUIC `CONNECTION_REFUSED`).
    pub max_connections: usize,
    /// A connection with no packet from its peer for this long is closed. A
    /// connection the loop asked to close gets at most this long to flush.
    pub idle_timeout: Duration,
    /// The TLS handshake and the opening of the session's stream must both
    /// be done within this long after the first packet, or the connection is
    /// closed.
    pub handshake_timeout: Duration,
    /// Bytes queued for one connection and not yet written; a send beyond it
    /// is refused and the connection is closed (a peer that does not read).
    pub max_outbound: usize,
    /// Largest chunk of one `Received` event, and the most bytes read from
    /// one connection per turn before the others get theirs (as TCP's
    /// `read_chunk`). What is not read stays in the stream's receive window,
    /// so QUIC flow control holds the peer back while the loop lags. At least 1.
    pub read_chunk: usize,
}

impl Default for QuicLimits {
    /// 10 000 connections, 30 s idle, 10 s handshake, 8 MiB outbound
    /// backlog, 64 KiB reads.
    fn default() -> QuicLimits {
        QuicLimits {
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            max_outbound: 8 << 20,
            read_chunk: 64 << 10,
        }
    }
}

/// Application close code: closed normally.
const CODE_CLOSED: VarInt = VarInt::from_u32(0);
/// Application close code: no stream opened within the handshake timeout.
const CODE_NO_STREAM: VarInt = VarInt::from_u32(1);
/// Application close code: the peer did not read and the backlog overflowed.
const CODE_BACKLOG: VarInt = VarInt::from_u32(2);
/// Stream stop/reset code: one stream per session.
const CODE_ONE_STREAM: VarInt = VarInt::from_u32(3);
/// Application close code: the server is shutting down.
const CODE_SHUTDOWN: VarInt = VarInt::from_u32(4);

/// Why a connection ended, for the log. Peer-chosen reason text is left
/// out: only codes.
fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ApplicationClosed(c) if c.error_code == CODE_CLOSED => "peer closed the connection".into(),
        ConnectionError::ApplicationClosed(c) => format!("peer closed the connection (code {})", c.error_code),
        ConnectionError::ConnectionClosed(c) => format!("peer aborted the connection ({})", c.error_code),
        ConnectionError::Reset => "connection reset by peer".into(),
        ConnectionError::TimedOut => "idle timeout".into(),
        ConnectionError::LocallyClosed => "closed by the server".into(),
        ConnectionError::VersionMismatch => "no common QUIC version".into(),
        ConnectionError::TransportError(t) => format!("QUIC protocol error ({})", t.code),
        ConnectionError::CidsExhausted => "connection ids exhausted".into(),
    }
}

/// The transport parameters of both sides: the server's bounded windows
/// (the session's stream plus room for a second one to be seen and
/// refused), or the client's keep-alive.
fn transport_config(
    limits: &QuicLimits,
    keep_alive: Option<std::time::Duration>,
) -> io::Result<quinn_proto::TransportConfig> {
    let idle = quinn_proto::IdleTimeout::try_from(limits.idle_timeout)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("QUIC idle timeout: {e}")))?;
    let mut t = quinn_proto::TransportConfig::default();
    t.max_idle_timeout(Some(idle)).keep_alive_interval(keep_alive).max_concurrent_uni_streams(0u32.into());
    if keep_alive.is_none() {
        t.max_concurrent_bidi_streams(2u32.into())
            // Bounded buffers per connection, inbound and outbound.
            .stream_receive_window((1u32 << 20).into())
            .receive_window((2u32 << 20).into())
            .send_window(2 << 20);
    } else {
        t.max_concurrent_bidi_streams(0u32.into());
    }
    Ok(t)
}

/// `now + d`, or a year from now if `d` is too large to add.
fn later(now: Instant, d: std::time::Duration) -> Instant {
    now.checked_add(d).unwrap_or_else(|| now + std::time::Duration::from_secs(365 * 24 * 3600))
}
