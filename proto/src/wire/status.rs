//! Response status values and three-digit codes (seed 001).
//!
//! `docs/PROTOCOL.md` lists which code each request answers in which case.

/// Request succeeded.
pub const OK: u16 = 200;
/// Something was created (account, room).
pub const CREATED: u16 = 201;
/// Accepted for later: queued for an offline peer, or login step one passed.
pub const ACCEPTED: u16 = 202;
/// Malformed request: undecodable body, invalid field value.
pub const BAD_REQUEST: u16 = 400;
/// Missing, unknown or revoked credentials.
pub const UNAUTHORIZED: u16 = 401;
/// Authenticated but not allowed.
pub const FORBIDDEN: u16 = 403;
/// No such user, room or conversation.
pub const NOT_FOUND: u16 = 404;
/// Gone: a third-party code that has expired.
pub const GONE: u16 = 410;
/// Conflicts with existing state (name taken, already a member, ...).
pub const CONFLICT: u16 = 409;
/// No input for longer than the idle timeout (close frames).
pub const IDLE_TIMEOUT: u16 = 408;
/// A length or count above a limit.
pub const TOO_LARGE: u16 = 413;
/// The access token has expired: refresh it.
pub const TOKEN_EXPIRED: u16 = 419;
/// Close frames: this node of a cluster does not serve the partition the
/// connection's frame belongs to (docs/PARTITIONS.md); connect to another
/// node of the same service.
pub const MISDIRECTED: u16 = 421;
/// Too many attempts or a full queue: retry later.
pub const RATE_LIMITED: u16 = 429;
/// The server failed; nothing was changed.
pub const INTERNAL: u16 = 500;
/// This server does not offer the operation (not configured, or not built in).
pub const NOT_IMPLEMENTED: u16 = 501;
/// The server cannot take this now (shutting down, session too slow).
pub const UNAVAILABLE: u16 = 503;
/// The request is on its way to another part of the server and its outcome
/// is not known yet: send it again with the same request id to learn it
/// (a retry is never performed twice).
pub const OUTCOME_PENDING: u16 = 504;
/// A bounded queue is full (the recipient's, or the server's overall): nothing was queued.
pub const QUEUE_FULL: u16 = 507;
/// The frame's protocol version is not spoken here.
pub const UNSUPPORTED_VERSION: u16 = 505;

/// The status byte of a response (seed 001: valid, in progress, error, finished).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u8)]
pub enum Status {
    /// The request succeeded.
    Valid = 0,
    /// The request is accepted and continues (login step one).
    InProgress = 1,
    /// The request failed; the body is an [`ErrorBody`](crate::wire::ErrorBody).
    Error = 2,
    /// The request finished a multi-step exchange (logout, close).
    Finished = 3,
}

impl Status {
    /// Every status, in wire order.
    pub const ALL: [Status; 4] = [Status::Valid, Status::InProgress, Status::Error, Status::Finished];

    /// Parses the status byte.
    #[must_use]
    pub fn from_u8(byte: u8) -> Option<Status> {
        Status::ALL.into_iter().find(|s| *s as u8 == byte)
    }

    /// Lower-case name used in docs and transcripts.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Status::Valid => "valid",
            Status::InProgress => "in_progress",
            Status::Error => "error",
            Status::Finished => "finished",
        }
    }
}
