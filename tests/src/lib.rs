//! Test support for confab's scenario tests.
//!
//! [`transcript::Script`] drives a server machine with hand-built frames in
//! virtual time and records every step as one readable line, for the insta
//! transcripts of every opcode flow.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod procs;
pub mod transcript;
