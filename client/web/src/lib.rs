//! # confab-web
//!
//! The confab browser client. The page runs the very same machines as the
//! `confab` CLI, [`confab_proto::Client`] under the end-to-end layer
//! [`confab_proto::e2e::SecureClient`], compiled to WebAssembly: no second
//! implementation of the protocol or of the cryptography.
//!
//! The core is sans-IO, so the page is its host and supplies what it needs:
//!
//! | what | the page supplies |
//! | --- | --- |
//! | randomness | 32 bytes from `crypto.getRandomValues`, the seed of the machine's RNG |
//! | time | `Date.now()` (Unix ms) and `performance.now()` (monotonic ms) on every call |
//! | transport | a `WebSocket` to the server's `/confab` endpoint: bytes in, bytes out |
//! | storage | IndexedDB, for the profile bytes [`WebClient::take_checkpoint`] hands out, encrypted by the page under a non-extractable WebCrypto key |
//!
//! [`WebClient`] is the whole API, in plain Rust (so it builds and is tested
//! natively); on `wasm32-unknown-unknown` the `bindings` module exposes it to
//! JavaScript with wasm-bindgen as the class `WebClient`.
//!
//! The durability barrier of the core holds in the page too: after a turn
//! that changed persisted state, no frame comes out of
//! [`WebClient::poll_transmit`] until the page has stored the profile bytes
//! of [`WebClient::take_checkpoint`] and said so with
//! [`WebClient::checkpoint_saved`].

mod events;
mod profile;
mod web;

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
mod bindings;

#[cfg(test)]
mod tests;

pub use profile::{PROFILE_FORMAT, ProfileError};
pub use web::{Params, WebClient, WebError};
