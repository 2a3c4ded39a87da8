//! The confab client library.
//!
//! The `confab` command-line tool is a thin layer over this crate: each
//! subcommand's logic lives in [`commands`] and runs over an
//! [`commands::Env`], so the whole CLI logic is tested without a process,
//! against an in-process server.
//!
//! | module | concern |
//! | --- | --- |
//! | [`connect`] | `--server` (one address, or the nodes of one service)/`--transport`/`--pin`/`--ca` to a [`Link`](confab_transports::link::Link) |
//! | [`session`] | the loop: save the profile, then transmit; feed what arrives |
//! | [`remember`] | the server address and pin a profile remembers |
//! | [`profile`] | the SQLite profile: keys, contacts, session, outbox, received MPs |
//! | [`secrets`] | `CONFAB_PASSWORD`, `CONFAB_PASSPHRASE`, `CONFAB_ROOM_PASSWORD`, or a no-echo prompt |
//! | [`output`] | human lines or `--json` lines |
//! | [`commands`] | one module per command family |
//! | [`inspect`] | decode captured frames (`confab inspect`) |

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use confab_proto as proto;

pub mod commands;
pub mod connect;
pub mod inspect;
pub mod output;
pub mod profile;
pub mod remember;
pub mod secrets;
pub mod session;
