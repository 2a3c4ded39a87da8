//! # confab-server
//!
//! The relay server: configuration, storage and the wiring of the sans-IO
//! `confab_proto` machines to the transports. The `confab-server` binary
//! offers the admin tools of [`cli`] (`confab-server jwt verify`, `jwt jwks`);
//! [`store`] is the durable SQLite store of the data directory; [`config`]
//! resolves the `run` command's configuration (file, environment, flags);
//! [`runtime`] is the event loop that drives the core over every transport,
//! [`relay`] carries a cluster's connections from its edges to the
//! partition's owner over NATS, and [`run`] prepares the data directory, the TLS identity and the store
//! around it (`confab-server run`); [`web`] embeds the browser client it
//! serves on the WebSocket listener.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod relay;
pub mod run;
pub mod runtime;
pub mod shares;
pub mod store;
pub mod web;

pub use confab_proto as proto;
