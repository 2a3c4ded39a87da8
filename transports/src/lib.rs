//! # confab-transports
//!
//! Adapters that move bytes between a socket (or a simulated link) and the
//! sans-IO core in `confab-proto`: [`tcp`] (TCP + TLS 1.3 over mio and
//! rustls), [`quic`] (QUIC over quinn), [`mem`] (in-process channels), the
//! TLS material they share ([`tls`]), the server loop's vocabulary ([`net`])
//! and the client's ([`link`]), and [`sim`], the deterministic simulator:
//! one server machine and many client machines over seeded, virtual-time
//! links with faults.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use confab_proto as proto;

pub mod link;
pub mod mem;
pub mod net;
pub mod quic;
pub mod sim;
pub mod tcp;
pub mod tls;
