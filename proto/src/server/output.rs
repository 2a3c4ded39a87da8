//! What the server machine tells its caller besides a turn's frames: the
//! [`ServerLog`]s of its log lines, and why a connection was refused.

use super::SessionId;
use crate::wire::{DecodeError, Opcode};

/// Log-worthy facts, for the adapter's structured logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerLog {
    /// An account was created.
    Registered {
        /// Its name.
        username: String,
    },
    /// A session authenticated as a user.
    LoggedIn {
        /// The session.
        session: SessionId,
        /// The user.
        username: String,
    },
    /// A request was refused.
    Rejected {
        /// The session.
        session: SessionId,
        /// The request's opcode.
        opcode: Opcode,
        /// The code answered.
        code: u16,
        /// The reason sent to the peer.
        reason: String,
    },
    /// A frame could not be decoded.
    BadFrame {
        /// The session.
        session: SessionId,
        /// Why.
        error: DecodeError,
    },
    /// A session ended.
    SessionClosed {
        /// The session.
        session: SessionId,
        /// Code.
        code: u16,
        /// Why.
        reason: String,
    },
    /// Mail from another partition that does not decode: applied as
    /// nothing (a request of an unknown version is answered 501).
    BadMail {
        /// The source partition.
        from: u8,
        /// The item's number.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// A room message was not pushed to another partition, which has not
    /// applied [`MAIL_PER_TARGET`](crate::server::MAIL_PER_TARGET) items of
    /// this one's mail yet (its members there find it in the history).
    PushDropped {
        /// The partition.
        to: u8,
        /// The room.
        room: String,
        /// The items of mail waiting there.
        waiting: u64,
    },
    /// An undelivered private message was dropped after the retention period.
    MessageExpired {
        /// Sender.
        from: String,
        /// Recipient.
        to: String,
        /// Sequence number.
        seq: u64,
    },
}

/// [`Server::open_session`](crate::Server::open_session) refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// `max_sessions` sessions are already open.
    #[error("too many sessions (limit {0})")]
    TooManySessions(usize),
}
