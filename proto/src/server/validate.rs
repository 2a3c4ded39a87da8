//! [`ServerConfig::validate`]: the invariants of a server configuration, and
//! the bounds beyond which a value would overflow the machine's arithmetic
//! or the wire format.
//!
//! Upper bounds, and what each prevents:
//!
//! - every duration at most [`ServerConfig::MAX_DURATION`]: timers are
//!   `Instant + Duration` and token expiries `unix_ms + ttl` in
//!   milliseconds, both of which overflow (a panic) on values near
//!   `Duration::MAX`;
//! - `room_history` and `max_room_members` at most
//!   [`ServerConfig::MAX_LIST`]: a `room_joined` or `history` answer carries
//!   them in lists with a u16 count;
//! - `limits.max_data` at most [`ServerConfig::MAX_DATA`]: a sealed blob
//!   the server forwards is re-encoded with a u32 length prefix, and it is
//!   as long as a frame allows;
//! - `hash_params.p_cost` at most what argon2 accepts.

use std::time::Duration;

use super::ServerConfig;

/// A [`ServerConfig`] that breaks an invariant: [`Server::new`](super::Server::new)
/// and [`Server::restore`](super::Server::restore) refuse it. `field` is the
/// path of the offending field in [`ServerConfig`] (`"idle_timeout"`,
/// `"limits.max_data"`, `"phantom.max_ttl"`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A count or size is below its minimum.
    #[error("{field} is {value}, below the minimum {min}")]
    TooSmall {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The smallest accepted value.
        min: u64,
    },
    /// A count or size is above its maximum.
    #[error("{field} is {value}, above the maximum {max}")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The largest accepted value.
        max: u64,
    },
    /// A duration is below its minimum.
    #[error("{field} is {value:?}, below the minimum {min:?}")]
    TooShort {
        /// The field.
        field: &'static str,
        /// Its value.
        value: Duration,
        /// The shortest accepted value.
        min: Duration,
    },
    /// A duration is above its maximum.
    #[error("{field} is {value:?}, above the maximum {max:?}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its value.
        value: Duration,
        /// The longest accepted value.
        max: Duration,
    },
    /// `idle_timeout` does not exceed `keepalive_interval`: a session must
    /// have time to answer a ping before it is closed.
    #[error("idle_timeout ({idle_timeout:?}) must exceed keepalive_interval ({keepalive_interval:?})")]
    IdleNotAfterKeepalive {
        /// The idle timeout.
        idle_timeout: Duration,
        /// The keepalive interval (the bound).
        keepalive_interval: Duration,
    },
    /// `refresh_ttl` is shorter than `access_ttl`.
    #[error("refresh_ttl ({refresh_ttl:?}) must be at least access_ttl ({access_ttl:?})")]
    RefreshBeforeAccess {
        /// The refresh token lifetime.
        refresh_ttl: Duration,
        /// The access token lifetime (the bound).
        access_ttl: Duration,
    },
    /// `queue_total` is below `queue_per_recipient`.
    #[error("queue_total ({queue_total}) must be at least queue_per_recipient ({queue_per_recipient})")]
    QueueTotalBelowRecipient {
        /// The server-wide queue limit.
        queue_total: usize,
        /// The per-recipient queue limit (the bound).
        queue_per_recipient: usize,
    },
    /// argon2 needs at least 8 KiB of memory per lane.
    #[error("hash_params.m_cost_kib ({m_cost_kib}) must be at least 8 per lane (hash_params.p_cost {p_cost})")]
    HashMemoryPerLane {
        /// The memory cost in KiB.
        m_cost_kib: u32,
        /// The lanes (the bound is 8 times this).
        p_cost: u32,
    },
    /// A text field that must say something is empty (or blank).
    #[error("{field} must not be empty")]
    Empty {
        /// The field.
        field: &'static str,
    },
}

impl ConfigError {
    /// The path of the offending field in [`ServerConfig`].
    #[must_use]
    pub fn field(&self) -> &'static str {
        match self {
            ConfigError::TooSmall { field, .. }
            | ConfigError::TooLarge { field, .. }
            | ConfigError::TooShort { field, .. }
            | ConfigError::TooLong { field, .. }
            | ConfigError::Empty { field } => field,
            ConfigError::IdleNotAfterKeepalive { .. } => "idle_timeout",
            ConfigError::RefreshBeforeAccess { .. } => "refresh_ttl",
            ConfigError::QueueTotalBelowRecipient { .. } => "queue_total",
            ConfigError::HashMemoryPerLane { .. } => "hash_params.m_cost_kib",
        }
    }
}

impl ServerConfig {
    /// The longest accepted duration (100 years), far below what overflows
    /// `Instant + Duration` or a millisecond Unix time.
    pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    /// The most items of a list on the wire (a u16 count): the bound of
    /// `room_history` and `max_room_members`.
    pub const MAX_LIST: usize = u16::MAX as usize;
    /// The largest accepted `limits.max_data`: a forwarded blob has a u32 length prefix.
    pub const MAX_DATA: u64 = u32::MAX as u64;
    /// The shortest accepted phantom-token service credential, in bytes.
    pub const MIN_SERVICE_CREDENTIAL: u64 = 16;

    /// Checks every invariant and bound of the configuration (see the
    /// [`ConfigError`] variants); [`Server::new`](super::Server::new) calls it.
    ///
    /// # Errors
    /// The first invariant broken, naming the field and its bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let one = Duration::from_secs(1);
        for (field, value, min) in [
            ("access_ttl", self.access_ttl, one),
            ("refresh_ttl", self.refresh_ttl, one),
            ("refresh_retry_grace", self.refresh_retry_grace, Duration::ZERO),
            ("token_grace", self.token_grace, Duration::ZERO),
            ("login_window", self.login_window, one),
            ("login_wait", self.login_wait, one),
            ("mp_retention", self.mp_retention, one),
            ("sweep_interval", self.sweep_interval, one),
            ("keepalive_interval", self.keepalive_interval, one),
            ("idle_timeout", self.idle_timeout, one),
            ("frame_grace", self.frame_grace, one),
        ] {
            duration(field, value, min)?;
        }
        if self.refresh_ttl < self.access_ttl {
            return Err(ConfigError::RefreshBeforeAccess {
                refresh_ttl: self.refresh_ttl,
                access_ttl: self.access_ttl,
            });
        }
        if self.idle_timeout <= self.keepalive_interval {
            return Err(ConfigError::IdleNotAfterKeepalive {
                idle_timeout: self.idle_timeout,
                keepalive_interval: self.keepalive_interval,
            });
        }
        let list = Self::MAX_LIST as u64;
        for (field, value, min, max) in [
            ("min_password_len", count(self.min_password_len), 1, u64::MAX),
            ("max_verifier", count(self.max_verifier), 16, u64::MAX),
            ("max_identity_key", count(self.max_identity_key), 1, u64::MAX),
            ("login_burst", u64::from(self.login_burst), 1, u64::MAX),
            ("login_source_burst", u64::from(self.login_source_burst), 1, u64::MAX),
            ("min_frame_rate", u64::from(self.min_frame_rate), 1, u64::MAX),
            ("max_tracked_accounts", count(self.max_tracked_accounts), 1, u64::MAX),
            ("max_tracked_sources", count(self.max_tracked_sources), 1, u64::MAX),
            ("room_history", count(self.room_history), 0, list),
            ("max_room_members", count(self.max_room_members), 1, list),
            ("max_rooms_per_user", count(self.max_rooms_per_user), 1, u64::MAX),
            ("max_accounts", count(self.max_accounts), 1, u64::MAX),
            ("queue_per_recipient", count(self.queue_per_recipient), 1, u64::MAX),
            ("dedup_window", count(self.dedup_window), 1, u64::MAX),
            ("max_session_backlog", count(self.max_session_backlog), 1, u64::MAX),
            ("max_deferred_bytes", count(self.max_deferred_bytes), 1, u64::MAX),
            ("max_pending_jobs", count(self.max_pending_jobs), 1, u64::MAX),
            ("max_sessions", count(self.max_sessions), 1, u64::MAX),
            ("limits.max_auth", u64::from(self.limits.max_auth), 64, u64::MAX),
            ("limits.max_data", self.limits.max_data, 1024, Self::MAX_DATA),
            ("limits.max_name", u64::from(self.limits.max_name), 32, u64::MAX),
            ("limits.max_text", u64::from(self.limits.max_text), 64, u64::MAX),
            ("limits.max_items", u64::from(self.limits.max_items), 1, u64::MAX),
            ("hash_params.t_cost", u64::from(self.hash_params.t_cost), 1, u64::MAX),
            ("hash_params.p_cost", u64::from(self.hash_params.p_cost), 1, u64::from(argon2::Params::MAX_P_COST)),
        ] {
            bounded(field, value, min, max)?;
        }
        if self.queue_total < self.queue_per_recipient {
            return Err(ConfigError::QueueTotalBelowRecipient {
                queue_total: self.queue_total,
                queue_per_recipient: self.queue_per_recipient,
            });
        }
        let (m_cost_kib, p_cost) = (self.hash_params.m_cost_kib, self.hash_params.p_cost);
        if u64::from(m_cost_kib) < 8 * u64::from(p_cost) {
            return Err(ConfigError::HashMemoryPerLane { m_cost_kib, p_cost });
        }
        self.validate_features()
    }

    /// The optional features: codes, phantom translation, OIDC.
    fn validate_features(&self) -> Result<(), ConfigError> {
        let p = self.partitions;
        bounded("partitions.count", u64::from(p.count), 1, u64::from(super::partition::MAX_PARTITIONS))?;
        bounded("partitions.index", u64::from(p.index), 0, u64::from(p.count) - 1)?;
        if let Some(c) = &self.codes {
            duration("codes.ttl", c.ttl, Duration::from_secs(1))?;
            let max = Duration::from_millis(crate::jwt::CODE_MAX_TTL_MS);
            if c.ttl > max {
                return Err(ConfigError::TooLong { field: "codes.ttl", value: c.ttl, max });
            }
            bounded("codes.max_in_flight", count(c.max_in_flight), 1, u64::MAX)?;
        }
        if let Some(p) = &self.phantom {
            let len = count(p.service_credential.len());
            bounded("phantom.service_credential", len, Self::MIN_SERVICE_CREDENTIAL, u64::MAX)?;
            not_blank("phantom.issuer", &p.issuer)?;
            not_blank("phantom.audience", &p.audience)?;
            duration("phantom.key_rotation", p.key_rotation, Duration::from_secs(1))?;
            duration("phantom.max_ttl", p.max_ttl, Duration::from_secs(1))?;
        }
        if let Some(o) = &self.oidc {
            not_blank("oidc.issuer", &o.issuer)?;
            not_blank("oidc.audience", &o.audience)?;
            duration("oidc.leeway", o.leeway, Duration::ZERO)?;
            duration("oidc.jwks_refresh", o.jwks_refresh, Duration::ZERO)?;
            // A flood of tokens naming unknown keys costs one fetch per interval: at least a second.
            duration("oidc.jwks_min_interval", o.jwks_min_interval, Duration::from_secs(1))?;
        }
        Ok(())
    }
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn bounded(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if value < min {
        return Err(ConfigError::TooSmall { field, value, min });
    }
    if value > max {
        return Err(ConfigError::TooLarge { field, value, max });
    }
    Ok(())
}

fn duration(field: &'static str, value: Duration, min: Duration) -> Result<(), ConfigError> {
    if value < min {
        return Err(ConfigError::TooShort { field, value, min });
    }
    if value > ServerConfig::MAX_DURATION {
        return Err(ConfigError::TooLong { field, value, max: ServerConfig::MAX_DURATION });
    }
    Ok(())
}

fn not_blank(field: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::Empty { field });
    }
    Ok(())
}
