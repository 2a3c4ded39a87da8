//! TCP + TLS 1.3: rustls (ring provider) over mio 1, ALPN `confab/1`.
//!
//! - Server: [`TcpServer`] owns the listener and every accepted socket but
//!   not the `mio::Poll`: it is driven by the loop that owns the core, on
//!   that loop's thread, through [`TcpServer::handle_event`],
//!   [`TcpServer::handle_timeout`] and [`TcpServer::poll_timeout`]. Each
//!   connection runs rustls' buffered loop (`read_tls` →
//!   `process_new_packets` → `reader`; `writer` → `write_tls`), with
//!   `wants_read` / `wants_write` mapped to mio interests (edge-triggered:
//!   reads and writes are drained until `WouldBlock`).
//! - Client: [`connect`] returns a [`TcpLink`], a blocking
//!   [`Link`](crate::link::Link) with its own small `mio::Poll`.
//!
//! Outbound bytes go through a per-connection buffer of TLS records waiting
//! for the socket, which [`TcpServer::backlog`] reports (the loop passes it
//! to the core's slow-reader rule, `Server::handle_backlog`). Two limits
//! act before that rule, in the transport itself:
//! - backpressure: while a connection's backlog is above half of
//!   [`TcpLimits::max_outbound`], nothing more is read from it (a peer that
//!   does not read its answers gets no new ones);
//! - hard cap: a backlog above [`TcpLimits::max_outbound`] closes the
//!   connection ("outbound buffer full").
//!
//! Handshakes are bounded before that: at most
//! [`TcpLimits::max_handshaking`] at once, of which one source (an IPv4
//! address, or an IPv6 /64, as [`SourceKey::from_ip`] groups them) holds at
//! most [`TcpLimits::max_handshaking_per_source`]; once half the slots are
//! taken, new handshakes get [`TcpLimits::busy_handshake_timeout`] instead of
//! [`TcpLimits::handshake_timeout`]. Every refusal is counted by reason
//! ([`TcpServer::refusals`]); the transport logs nothing itself.
//!
//! [`SourceKey::from_ip`]: confab_proto::server::SourceKey::from_ip

pub(crate) mod admit;
mod client;
pub(crate) mod conn;
pub(crate) mod server;
pub(crate) mod table;

use std::time::Duration;

pub use admit::TcpRefusals;
pub use client::{TcpLink, connect};
pub use server::TcpServer;

/// Resource limits of a [`TcpServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Sockets held at once (handshaking, open and closing); connections
    /// beyond it are accepted and dropped at once, and counted in
    /// [`TcpServer::refused`].
    pub max_connections: usize,
    /// Connections in their TLS handshake at once; more are refused the same way.
    pub max_handshaking: usize,
    /// Handshake slots one source may hold at once (an IPv4 address, or an
    /// IPv6 /64: one subscriber's allocation); more from it are refused the
    /// same way, so a flood from one address cannot lock out the others.
    pub max_handshaking_per_source: usize,
    /// A connection must finish its TLS handshake within this time; it
    /// also bounds how long a connection the server closes may take to
    /// flush what was queued for it.
    pub handshake_timeout: Duration,
    /// The handshake timeout of a connection accepted while at least half
    /// of [`max_handshaking`](TcpLimits::max_handshaking) is taken (at most
    /// `handshake_timeout`): under a flood, slots turn over faster.
    pub busy_handshake_timeout: Duration,
    /// Hard cap of buffered outbound bytes (TLS records not yet taken by
    /// the socket) per connection: beyond it the connection is closed.
    /// Above half of it, the connection is not read from.
    pub max_outbound: usize,
    /// Largest plaintext chunk of one `Received` event, and the most bytes
    /// read from one connection per turn before the others get theirs.
    pub read_chunk: usize,
}

impl Default for TcpLimits {
    /// 10,000 connections, 1,000 handshaking (125 per source), 10 s
    /// handshakes (2 s past half the slots), 8 MiB of outbound buffer, 64 KiB reads.
    fn default() -> TcpLimits {
        TcpLimits {
            max_connections: 10_000,
            max_handshaking: 1_000,
            max_handshaking_per_source: 125,
            handshake_timeout: Duration::from_secs(10),
            busy_handshake_timeout: Duration::from_secs(2),
            max_outbound: 8 << 20,
            read_chunk: 64 << 10,
        }
    }
}
