//! Why a command was refused before anything was sent.

/// A command refused by the client itself: nothing was queued or sent, and
/// no request id was used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// A name or text field is longer than the codec allows.
    #[error("field `{field}` is {len} bytes long, above its maximum of {max}")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The encoded request would exceed the frame's `max_data`.
    #[error("the request would be {len} bytes, above the frame limit of {max}")]
    TooLarge {
        /// Data length the request would have.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// `max_outbox` requests already wait for their answer.
    #[error("{0} requests already wait for an answer: try again when some are answered")]
    OutboxFull(usize),
    /// The command needs a logged-in session (or logout was already asked for).
    #[error("not logged in: log in first")]
    NotLoggedIn,
    /// `login` while the client holds a session: log out first.
    #[error("already logged in: log out first")]
    AlreadyLoggedIn,
    /// `login` while another login is under way.
    #[error("a login is already under way")]
    LoginInProgress,
    /// Every request id up to `u32::MAX` was used.
    #[error("request ids exhausted")]
    IdsExhausted,
}
