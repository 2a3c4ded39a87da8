//! # confab-server
//!
//! The relay server: configuration, storage and the wiring of the sans-IO
//! `confab_proto` machines to the transports. Its binary lands with the
//! server machine.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use confab_proto as proto;
