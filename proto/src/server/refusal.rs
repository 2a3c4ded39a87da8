//! [`Refusal`]: why the server refused a request, with the status code it
//! answers; and [`Reply`], what it answers when it does not refuse.

use crate::wire::{ResponseBody, Status, status};

/// A refused request: the kind of refusal gives the three-digit code, the
/// text is the reason sent to the peer (`Display`), never containing a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 400: malformed or invalid field values.
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing, unknown or revoked credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such user, room or conversation.
    #[error("{0}")]
    NotFound(String),
    /// 409: conflicts with existing state.
    #[error("{0}")]
    Conflict(String),
    /// 410: a third-party code that has expired.
    #[error("{0}")]
    Gone(String),
    /// 413: a length above a limit.
    #[error("{0}")]
    TooLarge(String),
    /// 419: the access token has expired.
    #[error("{0}")]
    TokenExpired(String),
    /// 429: too many attempts; retry after the given time.
    #[error("{reason}")]
    RateLimited {
        /// Why.
        reason: String,
        /// How long to wait, in milliseconds (sent in the error body).
        retry_after_ms: u64,
    },
    /// 500: the server failed; nothing was changed.
    #[error("{0}")]
    Internal(String),
    /// 501: this server does not offer the operation.
    #[error("{0}")]
    NotImplemented(String),
    /// 503: the server cannot take this now.
    #[error("{0}")]
    Unavailable(String),
    /// 503: the password-hash queue is full; retry after the given time.
    #[error("{reason}")]
    Busy {
        /// Why, with the wait in seconds.
        reason: String,
        /// When the queue will have room, in milliseconds (sent in the error body).
        retry_after_ms: u64,
    },
    /// 504: the request is on its way to another partition and its
    /// outcome is not known yet (send it again with the same request id).
    #[error("{reason}")]
    Pending {
        /// Why, naming the partition.
        reason: String,
        /// When to send it again, in milliseconds (sent in the error body).
        retry_after_ms: u64,
    },
    /// 507: a bounded queue or table is full.
    #[error("{0}")]
    QueueFull(String),
    /// 505: the frame's protocol version is not spoken here.
    #[error("{0}")]
    UnsupportedVersion(String),
}

impl Refusal {
    /// The three-digit code answered.
    #[must_use]
    pub fn code(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => status::BAD_REQUEST,
            Refusal::Unauthorized(_) => status::UNAUTHORIZED,
            Refusal::Forbidden(_) => status::FORBIDDEN,
            Refusal::NotFound(_) => status::NOT_FOUND,
            Refusal::Conflict(_) => status::CONFLICT,
            Refusal::Gone(_) => status::GONE,
            Refusal::TooLarge(_) => status::TOO_LARGE,
            Refusal::TokenExpired(_) => status::TOKEN_EXPIRED,
            Refusal::RateLimited { .. } => status::RATE_LIMITED,
            Refusal::Internal(_) => status::INTERNAL,
            Refusal::NotImplemented(_) => status::NOT_IMPLEMENTED,
            Refusal::Unavailable(_) | Refusal::Busy { .. } => status::UNAVAILABLE,
            Refusal::Pending { .. } => status::OUTCOME_PENDING,
            Refusal::QueueFull(_) => status::QUEUE_FULL,
            Refusal::UnsupportedVersion(_) => status::UNSUPPORTED_VERSION,
        }
    }

    /// The refusal answered with `code` (a refusal made elsewhere, by
    /// another partition: its code and reason travel as they are; the wait
    /// it suggested does not). An unknown code is an internal error.
    #[must_use]
    pub fn from_code(code: u16, reason: String) -> Refusal {
        match code {
            status::BAD_REQUEST => Refusal::BadRequest(reason),
            status::UNAUTHORIZED => Refusal::Unauthorized(reason),
            status::FORBIDDEN => Refusal::Forbidden(reason),
            status::NOT_FOUND => Refusal::NotFound(reason),
            status::CONFLICT => Refusal::Conflict(reason),
            status::GONE => Refusal::Gone(reason),
            status::TOO_LARGE => Refusal::TooLarge(reason),
            status::TOKEN_EXPIRED => Refusal::TokenExpired(reason),
            status::RATE_LIMITED => Refusal::RateLimited { reason, retry_after_ms: 0 },
            status::NOT_IMPLEMENTED => Refusal::NotImplemented(reason),
            status::UNAVAILABLE => Refusal::Unavailable(reason),
            status::OUTCOME_PENDING => Refusal::Pending { reason, retry_after_ms: 0 },
            status::QUEUE_FULL => Refusal::QueueFull(reason),
            status::UNSUPPORTED_VERSION => Refusal::UnsupportedVersion(reason),
            _ => Refusal::Internal(reason),
        }
    }

    /// The wait suggested to the peer, in milliseconds (0: none).
    #[must_use]
    pub fn retry_after_ms(&self) -> u64 {
        match self {
            Refusal::RateLimited { retry_after_ms, .. }
            | Refusal::Busy { retry_after_ms, .. }
            | Refusal::Pending { retry_after_ms, .. } => *retry_after_ms,
            _ => 0,
        }
    }

    /// The reason sent to the peer.
    #[must_use]
    pub fn reason(&self) -> &str {
        match self {
            Refusal::RateLimited { reason, .. }
            | Refusal::Busy { reason, .. }
            | Refusal::Pending { reason, .. }
            | Refusal::BadRequest(reason)
            | Refusal::Unauthorized(reason)
            | Refusal::Forbidden(reason)
            | Refusal::NotFound(reason)
            | Refusal::Conflict(reason)
            | Refusal::Gone(reason)
            | Refusal::TooLarge(reason)
            | Refusal::TokenExpired(reason)
            | Refusal::Internal(reason)
            | Refusal::NotImplemented(reason)
            | Refusal::Unavailable(reason)
            | Refusal::QueueFull(reason)
            | Refusal::UnsupportedVersion(reason) => reason,
        }
    }

    /// The refusal a decode error of a request's body answers (its code, its text).
    pub(crate) fn of_decode(error: &crate::wire::DecodeError) -> Refusal {
        let reason = error.to_string();
        match error.code() {
            status::TOO_LARGE => Refusal::TooLarge(reason),
            status::UNSUPPORTED_VERSION => Refusal::UnsupportedVersion(reason),
            _ => Refusal::BadRequest(reason),
        }
    }

    /// "server busy", when the password-hash queue is full: retry after `wait`.
    pub(crate) fn busy(wait: std::time::Duration) -> Refusal {
        let retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let seconds = retry_after_ms.div_ceil(1000);
        Refusal::Busy { reason: format!("server busy checking passwords: retry in {seconds} s"), retry_after_ms }
    }
}

/// A request's answer when it is not refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Reply {
    /// The status byte.
    pub status: Status,
    /// The three-digit code.
    pub code: u16,
    /// The body.
    pub body: ResponseBody,
}

impl Reply {
    /// 200 with `body`.
    pub fn ok(body: ResponseBody) -> Reply {
        Reply { status: Status::Valid, code: status::OK, body }
    }

    /// 201, empty.
    pub fn created() -> Reply {
        Reply { status: Status::Valid, code: status::CREATED, body: ResponseBody::Empty }
    }

    /// A valid answer with `code` and `body`.
    pub fn valid(code: u16, body: ResponseBody) -> Reply {
        Reply { status: Status::Valid, code, body }
    }

    /// 200 "finished" (the end of a multi-step exchange: logout, close).
    pub fn finished(body: ResponseBody) -> Reply {
        Reply { status: Status::Finished, code: status::OK, body }
    }
}

/// What a request handler answers.
pub(crate) type Flow = Result<Reply, Refusal>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_carries_its_code_and_shows_its_reason() {
        let cases = [
            (Refusal::BadRequest("a".into()), 400),
            (Refusal::Unauthorized("a".into()), 401),
            (Refusal::Forbidden("a".into()), 403),
            (Refusal::NotFound("a".into()), 404),
            (Refusal::Conflict("a".into()), 409),
            (Refusal::Gone("a".into()), 410),
            (Refusal::TooLarge("a".into()), 413),
            (Refusal::TokenExpired("a".into()), 419),
            (Refusal::RateLimited { reason: "a".into(), retry_after_ms: 5 }, 429),
            (Refusal::Internal("a".into()), 500),
            (Refusal::NotImplemented("a".into()), 501),
            (Refusal::Unavailable("a".into()), 503),
            (Refusal::Busy { reason: "a".into(), retry_after_ms: 5 }, 503),
            (Refusal::QueueFull("a".into()), 507),
            (Refusal::UnsupportedVersion("a".into()), 505),
        ];
        for (refusal, code) in cases {
            assert_eq!(refusal.code(), code);
            assert_eq!(refusal.to_string(), "a");
            assert_eq!(refusal.reason(), "a");
            let waits = matches!(refusal, Refusal::RateLimited { .. } | Refusal::Busy { .. });
            assert_eq!(refusal.retry_after_ms(), if waits { 5 } else { 0 });
        }
    }

    #[test]
    fn decode_errors_keep_their_code() {
        let errors = [
            crate::wire::DecodeError::LimitExceeded { what: "len_data", value: 9, max: 8, offset: 0 },
            crate::wire::DecodeError::UnknownVersion { version: 9, offset: 0 },
            crate::wire::DecodeError::UnknownOpcode { opcode: 9, offset: 0 },
        ];
        for e in errors {
            let r = Refusal::of_decode(&e);
            assert_eq!((r.code(), r.to_string()), (e.code(), e.to_string()));
        }
    }
}
