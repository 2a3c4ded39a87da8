//! # confab-transports
//!
//! Adapters that move bytes between a socket (or a simulated link) and the
//! sans-IO core in `confab-proto`. The TCP+TLS, QUIC, in-memory and
//! simulator adapters land here as the core's machines do.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use confab_proto as proto;
