//! # confab-proto
//!
//! The sans-IO core of confab: the wire codec ([`wire`]: frames and messages)
//! and, built on it, the protocol state machines ([`Server`], [`Client`],
//! [`e2e::SecureClient`]). Nothing here opens
//! a socket, spawns a thread, reads a clock or draws OS randomness: callers
//! pass bytes, time and seeds in and take bytes and events out, so the same
//! code runs over TCP+TLS, QUIC, in-memory channels, a deterministic
//! simulator and a fuzzer.
//!
//! ## Wire format
//!
//! A frame is `version u8 | type u8 | len_auth u32 | len_data u64 | auth | data`,
//! big-endian (seed 000). [`wire::FrameDecoder`] cuts frames out of a byte
//! stream in any chunking and checks both lengths against [`wire::Limits`]
//! before buffering anything; [`wire::Message::decode`] gives the data part
//! its typed meaning.
//! `docs/PROTOCOL.md` is the full specification.
//!
//! ```
//! use confab_proto::wire::{FrameDecoder, Limits, Message, Opcode, Request, RequestBody, Login};
//!
//! // A client encodes a login request...
//! let login = Message::Request(Request {
//!     request_id: 7,
//!     timestamp_ms: 1_700_000_000_000,
//!     body: RequestBody::Login(Login { username: "alice".into(), password: "hunter2".into() }),
//! });
//! let wire = login.to_bytes(b"");
//!
//! // ...and the server decodes it, here one byte at a time.
//! let mut decoder = FrameDecoder::new(Limits::default());
//! let mut frames = Vec::new();
//! for byte in wire.iter() {
//!     decoder.push(&[*byte]);
//!     while let Some(frame) = decoder.next_frame().expect("valid stream") {
//!         frames.push(frame);
//!     }
//! }
//! assert_eq!(frames.len(), 1);
//! let decoded = Message::decode(&frames[0], decoder.limits()).expect("valid message");
//! assert_eq!(decoded.opcode(), Some(Opcode::Login));
//! assert_eq!(decoded, login);
//! ```
//!
//! ## The machines
//!
//! [`Server`] is one machine for every session; [`Client`] is one machine
//! per user connection. Both follow the same contract:
//!
//! - every call that can change state takes [`Now`] (monotonic instant and
//!   Unix milliseconds); the machines never read a clock;
//! - inputs: bytes (`handle_input`, any chunking), timers (`handle_timeout`),
//!   commands (client) and job results (`Server::handle_work`);
//! - outputs, in turns, each behind the durability barrier: the client's
//!   [`Client::drain`] returns a [`ClientTurn`] whose outputs come only out
//!   of [`ClientTurn::commit`], after a [`Durable`] store received the
//!   client when a checkpoint is due (its persisted state changed; see
//!   [`machine`]); the server's [`Server::drain`] returns a
//!   [`server::Turn`] whose jobs (password hashing, to run off the routing
//!   path) are handed out at once, and whose frames, closes, log lines and
//!   next timer come only out of [`server::Turn::commit`], after a
//!   [`Durable`] store has made the turn's changes durable;
//! - randomness comes from the server's seed; same seed and inputs, same bytes.
//!
//! The crate root holds the machines and the types every user needs; the
//! codec's names (frames, messages, bodies, opcodes, status codes, decode
//! errors) live in [`wire`].
//!
//! The run loop, with one client wired straight to the server (an adapter
//! puts sockets, a thread pool and a store where this puts function calls):
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use confab_proto::server::{Action, HashParams, MemoryStore};
//! use confab_proto::{Client, ClientConfig, ClientEvent, ClientOutput, Ephemeral, Now, Server, ServerConfig};
//!
//! let now = Now::new(Instant::now(), 1_795_305_600_000);
//! let config = ServerConfig { hash_params: HashParams::INSECURE_FAST, ..ServerConfig::default() };
//! let mut store = MemoryStore::new(&config); // stands in for the database
//! let mut server = Server::new(config, [42; 32], now).unwrap();
//! let session = server.open_session(now).unwrap();
//! let mut client = Client::new(ClientConfig::default(), now);
//! client.connected(now);
//!
//! client.register(now, "alice", "correct horse", "apple river stone", Bytes::from_static(b"key")).unwrap();
//! client.login(now, "alice", "correct horse", "apple river stone").unwrap();
//!
//! let mut events = Vec::new();
//! loop {
//!     // Client -> server (a real client commits into its profile).
//!     let mut to_server = Vec::new();
//!     for output in client.drain().commit(&mut Ephemeral).unwrap() {
//!         match output {
//!             ClientOutput::Transmit(bytes) => to_server.push(bytes),
//!             ClientOutput::Event(e) => events.push(e),
//!             ClientOutput::Close { .. } | ClientOutput::Timeout(_) => {}
//!         }
//!     }
//!     for bytes in &to_server {
//!         server.handle_input(now, session, bytes);
//!     }
//!     // Server -> client: the turn's changes are committed before its frames are reachable.
//!     let mut turn = server.drain();
//!     let jobs = turn.take_jobs();
//!     let mut to_client = Vec::new();
//!     for action in turn.commit(&mut store).unwrap() {
//!         if let Action::Transmit { bytes, .. } = action {
//!             to_client.push(bytes);
//!         }
//!     }
//!     for bytes in &to_client {
//!         client.handle_input(now, bytes);
//!     }
//!     let moved = !(to_server.is_empty() && to_client.is_empty() && jobs.is_empty());
//!     for job in jobs {
//!         let result = job.run(); // a thread pool's work in a real adapter
//!         server.handle_work(now, result);
//!     }
//!     if !moved {
//!         break;
//!     }
//! }
//! assert!(client.is_logged_in());
//! assert!(events.iter().any(|e| matches!(e, ClientEvent::Connected { username, .. } if username == "alice")));
//! assert!(store.state().user("alice").is_some());
//! ```
//!
//! A panic on any input is a bug.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod durable;
pub mod e2e;
pub mod examples;
pub mod jwt;
pub mod machine;
pub mod server;
mod time;
pub mod token;
pub mod wire;

#[cfg(any(fuzzing, feature = "fuzzing"))]
pub mod fuzzing;

pub use client::{Client, ClientConfig, ClientEvent, ClientOutput, CommandError};
pub use durable::{Durable, Ephemeral};
pub use machine::{ClientTurn, Machine, Output};
pub use server::{Server, ServerConfig, ServerLog, SessionId, Turn};
pub use time::{Instant, Now};
