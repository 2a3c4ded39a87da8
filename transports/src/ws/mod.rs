//! WebSocket (RFC 6455): the way in for browsers and for networks that pass
//! only HTTP(S). The protocol (upgrade, framing, masking, ping/pong, close)
//! is tungstenite's; this module only moves its bytes.
//!
//! - Server: [`WsServer`] lives on the loop that owns the core, like
//!   [`TcpServer`](crate::tcp::TcpServer): its own mio listener and
//!   sockets, tokens from [`WsServer::FIRST_TOKEN`] up. Each connection is
//!   plain (`ws://`, loopback only unless the operator says otherwise) or
//!   TLS 1.3 (`wss://`, rustls, ALPN `http/1.1`, the server's one identity
//!   and pin). The upgrade request is read into a bounded buffer
//!   ([`WsLimits::max_request_bytes`]) and handed whole to tungstenite's
//!   `accept_hdr_with_config`, whose callback checks the path, the `Origin`
//!   ([`WsPolicy`]) and the subprotocol; after it, tungstenite runs over an
//!   in-memory pipe ([`pipe`]): the transport feeds it what the socket gave
//!   and takes what it wrote, so the outbound buffer and backpressure are
//!   the transport's, exactly as for TCP.
//! - Binary messages carry the confab frame stream, in any chunking: their
//!   payloads are concatenated and reported as `Received`; a text message
//!   closes the connection with WebSocket close code 1003.
//! - A plain `GET` (no `Upgrade`) is answered from the [`Site`] of the
//!   policy, when there is one: the browser client's files, with a strict
//!   `Content-Security-Policy`, then the connection closes.
//! - Client: [`connect`] returns a [`WsLink`], a blocking
//!   [`Link`](crate::link::Link).
//!
//! Close codes (the WebSocket close frame the server sends): a close the
//! core asks for with confab close code `c` (three digits) is sent as
//! `4000 + c` ([`close_code_for`]), so 4503 is "server shutting down";
//! the transport's own: 1002 (WebSocket protocol error), 1003 (a text
//! message), 1007 (invalid close payload), 1009 (a message or frame above
//! [`WsLimits::max_message`], 64 KiB by default), 1011 (the server failed).

mod client;
mod conn;
pub mod pipe;
mod server;
mod site;
mod upgrade;

use crate::tcp::TcpLimits;

pub use client::{WsLink, WsUrl, connect};
pub use server::WsServer;
pub use site::{Site, SiteFile};
pub use upgrade::{OriginCheck, WsPolicy};

/// The endpoint path a confab server serves WebSocket upgrades on.
pub const PATH: &str = "/confab";

/// The WebSocket subprotocol of the confab frame stream (`Sec-WebSocket-Protocol`).
pub const SUBPROTOCOL: &str = "confab.v1";

/// The ALPN protocol of `wss://`: WebSocket upgrades are HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// WebSocket close code of a server close with confab close code `code`:
/// `4000 + code` (the private range 4000-4999; confab codes are 100..=999).
#[must_use]
pub fn close_code_for(code: u16) -> u16 {
    4000 + code.min(999)
}

/// The confab close code a WebSocket close code stands for, if it is one
/// of [`close_code_for`]'s.
#[must_use]
pub fn confab_code_of(ws_code: u16) -> Option<u16> {
    (4100..=4999).contains(&ws_code).then(|| ws_code - 4000)
}

/// Resource limits of a [`WsServer`]: TCP's, plus the upgrade request and
/// message bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsLimits {
    /// Connections, handshake slots (per source too), the handshake timeout
    /// (which covers TLS and the HTTP upgrade together), the outbound cap
    /// and the read budget per turn, with the meanings they have for TCP.
    pub conn: TcpLimits,
    /// Largest upgrade request (request line and headers); a longer one is
    /// answered 431 and closed.
    pub max_request_bytes: usize,
    /// Largest WebSocket message (and frame payload) accepted, tungstenite's
    /// `max_message_size` and `max_frame_size`; a larger one is closed with
    /// 1009 as soon as its header says so. A confab frame larger than it
    /// spans several messages (any chunking goes). It bounds what a
    /// connection holds before the core sees it: tungstenite keeps a message
    /// until its last byte, where the core's frame-rate rule cannot see it.
    pub max_message: usize,
}

/// The smallest [`WsLimits::max_message`] a server may be configured with,
/// and the size [`WsLink`] splits its sends into: a client that sends
/// messages of at most this size is served by every confab server.
pub const MIN_MESSAGE: usize = 16 << 10;

impl Default for WsLimits {
    /// TCP's defaults, an 8 KiB upgrade request, messages up to 64 KiB.
    fn default() -> WsLimits {
        WsLimits { conn: TcpLimits::default(), max_request_bytes: 8 << 10, max_message: 64 << 10 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confab_close_codes_map_into_the_private_range_and_back() {
        assert_eq!(close_code_for(503), 4503);
        assert_eq!(close_code_for(200), 4200);
        assert_eq!(confab_code_of(4409), Some(409));
        assert_eq!(confab_code_of(1000), None);
        assert_eq!(close_code_for(60_000), 4999, "out of range codes stay in the private range");
    }

    #[test]
    fn the_default_message_limit_is_64_kib_and_at_least_what_clients_send() {
        assert_eq!(WsLimits::default().max_message, 64 << 10);
        assert!(MIN_MESSAGE <= WsLimits::default().max_message);
    }
}
