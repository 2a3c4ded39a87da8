//! # confab-transports
//!
//! Adapters that move bytes between a socket and the sans-IO core in
//! `confab-proto`: [`tcp`] (TCP + TLS 1.3 over mio and rustls), [`quic`]
//! (QUIC over quinn-proto, sans-IO), [`mem`] (in-process channels), [`ws`] (WebSocket, RFC 6455, over mio, plain or over rustls), the TLS material they
//! share ([`tls`]), the server loop's vocabulary ([`hub`]) and the client's
//! ([`link`]). The deterministic simulator is a test tool of its own, the
//! `confab-sim` crate (tests/sim), which only tests depend on.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use confab_proto as proto;

pub mod hub;
pub mod link;
pub mod mem;
pub mod quic;
pub mod tcp;
pub mod tls;
pub mod ws;
