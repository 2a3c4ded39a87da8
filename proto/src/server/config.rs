//! Server configuration: every limit and parameter of the server machine.

use std::time::Duration;

use super::partition::Partitions;

use crate::wire::Limits;

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HashParams {
    /// Memory in KiB (OWASP minimum: 19 MiB = 19456).
    pub m_cost_kib: u32,
    /// Iterations (OWASP minimum with 19 MiB: 2).
    pub t_cost: u32,
    /// Parallelism.
    pub p_cost: u32,
}

impl HashParams {
    /// OWASP's minimum for argon2id: m = 19 MiB, t = 2, p = 1.
    pub const OWASP: HashParams = HashParams { m_cost_kib: 19 * 1024, t_cost: 2, p_cost: 1 };
    /// The cheapest parameters argon2 accepts: for tests and simulations only.
    pub const INSECURE_FAST: HashParams = HashParams { m_cost_kib: 8, t_cost: 1, p_cost: 1 };
}

/// What to do when a user logs in while already connected elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuplicateLogin {
    /// The new session wins; the old one is closed with code 409
    /// ("replaced by a newer login"). The default: a client that lost its
    /// connection can come back before the server noticed.
    Replace,
    /// The new login is refused with 409 while the old session lives (seed 002).
    Refuse,
}

/// Every limit and parameter of the [`Server`](crate::Server) machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Codec limits.
    pub limits: Limits,
    /// argon2id parameters for new password and passphrase hashes (existing
    /// hashes keep the parameters they were made with).
    pub hash_params: HashParams,
    /// Smallest accepted password, in bytes.
    pub min_password_len: usize,
    /// Smallest number of whitespace-separated words in a passphrase.
    pub min_passphrase_words: usize,
    /// Largest identity public key, in bytes.
    pub max_identity_key: usize,
    /// Largest room join verifier, in bytes (smallest: 16).
    pub max_verifier: usize,
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Refresh token lifetime.
    pub refresh_ttl: Duration,
    /// How long after a refresh the spent refresh token may be presented
    /// again as a retry (its answer was lost) instead of counting as reuse,
    /// provided the pair it was exchanged for was never refreshed: on the
    /// connection that made the exchange, or from any connection with the
    /// exchange's retry key (`refresh_keyed`). Anything else is reuse, which
    /// revokes the login.
    pub refresh_retry_grace: Duration,
    /// How long expired tokens are remembered (answered 419, not 401) before they are purged.
    pub token_grace: Duration,
    /// Failed-login window.
    pub login_window: Duration,
    /// Failed logins allowed per window, per account and per session. An
    /// attempt being hashed counts as one, and an account has at most one
    /// being hashed at a time.
    pub login_burst: u32,
    /// Failed logins allowed per window from one source (peer IPv4 address or
    /// IPv6 /64, see [`SourceKey`](crate::server::SourceKey)), whatever the
    /// accounts; attempts being hashed count.
    pub login_source_burst: u32,
    /// Accounts whose failures are tracked at once (bounded memory under attack).
    pub max_tracked_accounts: usize,
    /// Sources whose failures are tracked at once.
    pub max_tracked_sources: usize,
    /// Duplicate live login policy.
    pub duplicate_login: DuplicateLogin,
    /// Sealed messages kept per room.
    pub room_history: usize,
    /// Bytes of history kept per room: the encoded size of its retained
    /// entries (sender, numbers and sealed blob; what `room_joined` and
    /// `history` carry). Older messages are dropped to make room; a message
    /// larger than this on its own is refused with 413. The server keeps it
    /// below what fits in one frame with a full member list
    /// ([`ServerConfig::room_history_budget`]).
    pub room_history_bytes: usize,
    /// Members per room.
    pub max_room_members: usize,
    /// Rooms one user may own (create and not delete); more are refused with 507.
    pub max_rooms_per_user: usize,
    /// Accounts on the server (registered, or created by a first OIDC login); more are refused with 507.
    pub max_accounts: usize,
    /// Items queued for one recipient (private messages and MP notices).
    pub queue_per_recipient: usize,
    /// Items queued on the whole server.
    pub queue_total: usize,
    /// How long an undelivered private message is kept before it is dropped
    /// and its sender told.
    pub mp_retention: Duration,
    /// How often expired messages and tokens are swept.
    pub sweep_interval: Duration,
    /// Request ids remembered per user for idempotent retries.
    pub dedup_window: usize,
    /// Silence after which the server pings a session.
    pub keepalive_interval: Duration,
    /// Silence after which the server closes a session.
    pub idle_timeout: Duration,
    /// How long a started frame may take before it must keep up
    /// [`min_frame_rate`](ServerConfig::min_frame_rate): a frame whose first
    /// byte arrived at `t` must be complete, or have `got` bytes, by
    /// `t + frame_grace + got / min_frame_rate`; else the session is closed
    /// with 408 ("frame too slow"). Bytes that trickle in keep the idle
    /// timeout from firing, so this is what ends a frame dripped a byte at a time.
    pub frame_grace: Duration,
    /// The slowest rate, in bytes per second, at which a started frame may
    /// arrive after [`frame_grace`](ServerConfig::frame_grace) (at least 1).
    pub min_frame_rate: u32,
    /// Outbound bytes a session may have waiting in its transport before it
    /// is closed as a slow reader.
    pub max_session_backlog: usize,
    /// Bytes a session may send while one of its requests waits for a
    /// password hash; more closes it.
    pub max_deferred_bytes: usize,
    /// Password-hash jobs in flight on the whole server; more get 503.
    pub max_pending_jobs: usize,
    /// The longest a password check may wait in the hash queue: at the
    /// measured pace of the hash workers, a request that would wait longer
    /// is answered 503 at once with the `retry_after_ms` at which it would
    /// fit, instead of being answered after its client gave up. Keep it
    /// below the clients' answer timeout (15 s for `confab`).
    pub login_wait: Duration,
    /// Live sessions; more are refused at connect.
    pub max_sessions: usize,
    /// Third-party codes (`issue_code`, `verify_code`); `None` answers 501.
    pub codes: Option<CodeConfig>,
    /// Phantom-token translation (`introspect`, `jwks`); `None` answers 501.
    pub phantom: Option<PhantomConfig>,
    /// Access tokens of an external OIDC provider in the auth part; `None` accepts only `cfa_` tokens.
    pub oidc: Option<OidcConfig>,
    /// This core's partition of a split state (docs/PARTITIONS.md); the
    /// default, [`Partitions::SINGLE`], is the whole state.
    pub partitions: Partitions,
}

impl ServerConfig {
    /// The bytes of a `room_joined` answer besides its history entries, at most: frame header
    /// and fixed part, both list counts, and `max_room_members` names of at most 32 bytes.
    #[must_use]
    pub fn room_answer_overhead(&self) -> usize {
        crate::wire::HEADER_LEN + 64 + self.max_room_members.saturating_mul(2 + 32)
    }

    /// The history bytes a room actually keeps: `room_history_bytes`, lowered if need be so
    /// that a `room_joined` answer with a full member list never exceeds the frame limit.
    #[must_use]
    pub fn room_history_budget(&self) -> usize {
        let max_data = usize::try_from(self.limits.max_data).unwrap_or(usize::MAX);
        self.room_history_bytes.min(max_data.saturating_sub(self.room_answer_overhead()))
    }
}

/// Third-party codes (seed 003): see `docs/AUTH.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeConfig {
    /// Lifetime of a code (capped at 60 s).
    pub ttl: Duration,
    /// Accepted, unexpired codes remembered against replay; when full, codes are refused (fail closed).
    pub max_in_flight: usize,
}

impl Default for CodeConfig {
    fn default() -> Self {
        CodeConfig { ttl: Duration::from_secs(60), max_in_flight: 100_000 }
    }
}

/// Phantom-token translation (seed 004): a trusted backend exchanges opaque tokens for ES256 JWTs.
#[derive(Clone, PartialEq, Eq)]
pub struct PhantomConfig {
    /// The secret a backend sends in the auth part of `introspect` (compared in constant time).
    pub service_credential: String,
    /// `iss` of the minted JWTs.
    pub issuer: String,
    /// `aud` of the minted JWTs.
    pub audience: String,
    /// How often the signing key is replaced (checked at each sweep).
    pub key_rotation: Duration,
    /// Longest lifetime of a minted JWT (it never outlives its opaque token either).
    pub max_ttl: Duration,
}

impl PhantomConfig {
    /// A configuration with daily key rotation and 5-minute JWTs.
    #[must_use]
    pub fn new(service_credential: impl Into<String>, issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        PhantomConfig {
            service_credential: service_credential.into(),
            issuer: issuer.into(),
            audience: audience.into(),
            key_rotation: Duration::from_secs(24 * 3600),
            max_ttl: Duration::from_secs(300),
        }
    }
}

impl std::fmt::Debug for PhantomConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhantomConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("key_rotation", &self.key_rotation)
            .field("max_ttl", &self.max_ttl)
            .finish_non_exhaustive()
    }
}

/// An external OIDC provider (seed 000, Keycloak) whose access tokens authenticate requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// Required `iss` (Keycloak: `https://HOST/realms/REALM`).
    pub issuer: String,
    /// An audience `aud` must contain.
    pub audience: String,
    /// When not empty, `azp` must be one of these clients.
    pub allowed_azp: Vec<String>,
    /// The provider's JWK Set document at start (a file's contents); the
    /// server asks for fresh ones through
    /// [`Server::poll_jwks_fetch`](crate::Server::poll_jwks_fetch).
    pub jwks_json: String,
    /// Clock skew tolerated on `exp`, `nbf`, `iat`.
    pub leeway: Duration,
    /// How often the JWK Set is fetched again (zero: only on an unknown `kid`).
    pub jwks_refresh: Duration,
    /// The least time between two fetches of the JWK Set, whatever asks
    /// (a token naming an unknown `kid`, the refresh): a flood of tokens with
    /// random `kid`s costs one fetch per interval.
    pub jwks_min_interval: Duration,
}

impl OidcConfig {
    /// A configuration with a 60 s leeway, no `azp` restriction, the JWK Set
    /// fetched again every 60 s and at most every 10 s.
    #[must_use]
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>, jwks_json: impl Into<String>) -> Self {
        OidcConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            allowed_azp: Vec::new(),
            jwks_json: jwks_json.into(),
            leeway: Duration::from_secs(60),
            jwks_refresh: Duration::from_secs(60),
            jwks_min_interval: Duration::from_secs(10),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::DEFAULT,
            hash_params: HashParams::OWASP,
            min_password_len: 8,
            min_passphrase_words: 3,
            max_identity_key: 4096,
            max_verifier: 256,
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            refresh_retry_grace: Duration::from_secs(300),
            token_grace: Duration::from_secs(24 * 3600),
            login_window: Duration::from_secs(60),
            login_burst: 5,
            login_source_burst: 20,
            max_tracked_accounts: 10_000,
            max_tracked_sources: 10_000,
            duplicate_login: DuplicateLogin::Replace,
            room_history: 20,
            room_history_bytes: 512 * 1024,
            max_room_members: 1024,
            max_rooms_per_user: 100,
            max_accounts: 100_000,
            queue_per_recipient: 1000,
            queue_total: 100_000,
            mp_retention: Duration::from_secs(7 * 24 * 3600),
            sweep_interval: Duration::from_secs(60),
            dedup_window: 1024,
            keepalive_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            frame_grace: Duration::from_secs(10),
            min_frame_rate: 4096,
            max_session_backlog: 8 << 20,
            max_deferred_bytes: 2 << 20,
            max_pending_jobs: 1024,
            login_wait: Duration::from_secs(10),
            max_sessions: 10_000,
            codes: None,
            phantom: None,
            oidc: None,
            partitions: Partitions::SINGLE,
        }
    }
}
