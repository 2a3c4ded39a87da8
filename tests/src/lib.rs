//! Test support for confab's scenario tests.
//!
//! [`transcript::Script`] drives a server machine with hand-built frames in
//! virtual time and records every step as one readable line, for the insta
//! transcripts of every opcode flow; [`procs`] runs the real binaries and
//! [`raw`] opens raw TCP and TLS connections from chosen loopback sources;
//! [`webdriver`] drives a headless Chromium for the browser test;
//! [`postgres`] runs a PostgreSQL server of the test's own, [`nats`] a NATS
//! server, and [`cluster`] runs `confab-server` nodes on them.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cluster;
pub mod nats;
pub mod postgres;
pub mod procs;
pub mod raw;
pub mod transcript;
pub mod webdriver;
