//! The confab client library.
//!
//! The `confab` command-line tool is a thin layer over this crate: each
//! subcommand's logic lives in its own module so it can be tested without a
//! process.
//!
//! - [`inspect`]: decode captured frames (hex or raw bytes) and print each
//!   one as a JSON line (`confab inspect`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use confab_proto as proto;

pub mod inspect;
