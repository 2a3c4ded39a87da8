//! QUIC transport: quinn 0.11, ALPN `confab/1`, one bidirectional stream per
//! session.
//!
//! - [`QuicServer`] runs a quinn endpoint on its own thread (a current-thread
//!   tokio runtime) and reports every session to the core's loop through a
//!   [`HubSender`](crate::hub::HubSender); the loop answers through the
//!   [`ConnHandle`](crate::hub::ConnHandle) carried by `NetEvent::Opened`.
//! - [`connect`] makes a [`QuicLink`], the client side: a blocking
//!   [`Link`](crate::link::Link) that owns a current-thread runtime and runs
//!   it only while one of its methods waits.
//!
//! The client opens the session's stream; the server learns of it with the
//! client's first bytes (confab clients speak first). Application close codes
//! on the wire: 0 closed, 1 no stream opened in time, 2 outbound backlog over
//! the limit, 3 a second stream (stream stop/reset code), 4 server shutdown.

mod client;
mod server;

use std::time::Duration;

use quinn::{ConnectionError, VarInt};

pub use client::{QuicLink, connect};
pub use server::QuicServer;

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
    /// Inbound flow control: bytes of one connection read from its stream
    /// and not yet consumed by the loop ([`Hub::consumed`](crate::hub::Hub::consumed)).
    /// At the limit the connection's reader stops reading, and QUIC flow
    /// control (the stream's receive window) holds the peer back. At least 1.
    pub max_inbound: usize,
}

impl Default for QuicLimits {
    /// 10 000 connections, 30 s idle, 10 s handshake, 8 MiB outbound
    /// backlog, 1 MiB inbound.
    fn default() -> QuicLimits {
        QuicLimits {
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            max_outbound: 8 << 20,
            max_inbound: 1 << 20,
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
