//! # confab-proto
//!
//! The sans-IO core of confab: the wire codec (this crate's frame and message
//! layers) and, built on it, the protocol state machines. Nothing here opens
//! a socket, spawns a thread, reads a clock or draws OS randomness: callers
//! pass bytes, time and seeds in and take bytes and events out, so the same
//! code runs over TCP+TLS, QUIC, in-memory channels, a deterministic
//! simulator and a fuzzer.
//!
//! ## Wire format
//!
//! A frame is `version u8 | type u8 | len_auth u32 | len_data u64 | auth | data`,
//! big-endian (seed 000). [`FrameDecoder`] cuts frames out of a byte stream in
//! any chunking and checks both lengths against [`Limits`] before buffering
//! anything; [`Message::decode`] gives the data part its typed meaning.
//! `docs/PROTOCOL.md` is the full specification.
//!
//! ```
//! use confab_proto::{FrameDecoder, Limits, Message, Opcode, Request, RequestBody, Login};
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
//! A panic on any input is a bug.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod code;
mod decoder;
mod error;
pub mod examples;
mod frame;
mod limits;
mod message;
mod opcode;
pub mod server;
mod time;
pub mod token;

#[cfg(any(fuzzing, feature = "fuzzing"))]
pub mod fuzzing;

pub use client::{Client, ClientConfig, ClientEvent, ClientOutput, CommandError};
pub use code::Status;
pub use decoder::FrameDecoder;
pub use error::DecodeError;
pub use frame::{Frame, FrameHeader, FrameType, HEADER_LEN, VERSION};
pub use limits::Limits;
pub use message::*;
pub use opcode::Opcode;
pub use server::{Output, Server, ServerConfig, ServerEvent, SessionId};
pub use time::Now;
