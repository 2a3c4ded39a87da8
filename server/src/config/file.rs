//! The TOML file's shape: one struct per section, every field defaulted
//! from [`ServerConfig::default`] and unknown keys refused.
//!
//! Durations are whole seconds in keys ending in `_secs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use confab_proto::ServerConfig;
use confab_proto::server::{CodeConfig, DuplicateLogin, HashParams};
use confab_proto::wire::Limits;
use confab_transports::tcp::TcpLimits;
use serde::{Deserialize, Serialize};

use super::{DEFAULT_DATA, DEFAULT_LISTEN};
use crate::runtime::LogLimits;
use crate::store::DEFAULT_COMPACT_EVERY;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct FileConfig {
    pub data: PathBuf,
    pub listen: SocketAddr,
    pub tcp_listen: Option<SocketAddr>,
    pub quic_listen: Option<SocketAddr>,
    pub ws_listen: Option<SocketAddr>,
    pub cert_chain: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    pub max_connections: usize,
    pub compact_every: u64,
    pub server: ServerSection,
    pub limits: LimitsSection,
    pub argon2: Argon2Section,
    pub tcp: TcpSection,
    pub ws: super::ws::WsSection,
    pub codes: Option<CodesSection>,
    pub phantom: Option<PhantomSection>,
    pub oidc: Option<OidcSection>,
    pub log: LogSection,
    pub store: StoreSection,
    pub cluster: ClusterSection,
}

impl Default for FileConfig {
    fn default() -> Self {
        let s = ServerConfig::default();
        FileConfig {
            data: PathBuf::from(DEFAULT_DATA),
            listen: DEFAULT_LISTEN,
            tcp_listen: None,
            quic_listen: None,
            ws_listen: None,
            cert_chain: None,
            private_key: None,
            max_connections: s.max_sessions,
            compact_every: DEFAULT_COMPACT_EVERY,
            server: ServerSection::from(&s),
            limits: LimitsSection::from(s.limits),
            argon2: Argon2Section::from(s.hash_params),
            tcp: TcpSection::default(),
            ws: super::ws::WsSection::default(),
            codes: None,
            phantom: None,
            oidc: None,
            log: LogSection::default(),
            store: StoreSection::default(),
            cluster: ClusterSection::default(),
        }
    }
}

/// `[log]`: how many lines of each kind the log takes (see `LogLimits`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct LogSection {
    pub burst: u32,
    pub interval_secs: u64,
}

impl Default for LogSection {
    fn default() -> Self {
        let l = LogLimits::default();
        LogSection { burst: l.burst, interval_secs: l.interval.as_secs() }
    }
}

/// `[store]`: how commits are made durable (see `crate::store::Fsync`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct StoreSection {
    /// A PostgreSQL store instead of the data directory's SQLite one.
    pub url: Option<String>,
    pub fsync: FsyncName,
    pub fsync_interval_ms: u64,
}

/// `fsync_interval_ms` when the file does not set it: a power loss loses at
/// most a second of commits, as with Redis's `appendfsync everysec`.
pub(super) const DEFAULT_FSYNC_INTERVAL_MS: u64 = 1000;

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection { url: None, fsync: FsyncName::Always, fsync_interval_ms: DEFAULT_FSYNC_INTERVAL_MS }
    }
}

/// `cluster.mail_poll_ms`'s default: a lost ring delays mail by a second at most.
pub(super) const DEFAULT_MAIL_POLL_MS: u64 = 1000;

/// `[cluster]`: how a node on a PostgreSQL store takes and keeps its lease
/// (see `crate::store::lease`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct ClusterSection {
    /// The node's name; empty: `host:pid`.
    pub node: String,
    pub standby: bool,
    pub lease_secs: u64,
    /// The NATS server relaying connections between the nodes; empty: none.
    pub nats: String,
    /// The cluster's name in the NATS subjects.
    pub name: String,
    /// How many partitions the state is split into (fixed when the store
    /// is made).
    pub partitions: u8,
    /// How often a split state's mail is read without a ring, in ms.
    pub mail_poll_ms: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            node: String::new(),
            standby: false,
            lease_secs: crate::store::lease::DEFAULT_LEASE.as_secs(),
            nats: String::new(),
            name: "confab".to_owned(),
            partitions: 1,
            mail_poll_ms: DEFAULT_MAIL_POLL_MS,
        }
    }
}

/// `store.fsync`, spelled in lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum FsyncName {
    Always,
    Interval,
}

/// `duplicate_login`, spelled in lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum DuplicateLoginName {
    Replace,
    Refuse,
}

/// `[server]`: the scalar fields of [`ServerConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct ServerSection {
    pub min_password_len: usize,
    pub min_passphrase_words: usize,
    pub max_identity_key: usize,
    pub max_verifier: usize,
    pub access_ttl_secs: u64,
    pub refresh_ttl_secs: u64,
    pub refresh_retry_grace_secs: u64,
    pub token_grace_secs: u64,
    pub login_window_secs: u64,
    pub login_burst: u32,
    pub login_source_burst: u32,
    pub max_tracked_accounts: usize,
    pub max_tracked_sources: usize,
    pub duplicate_login: DuplicateLoginName,
    pub room_history: usize,
    pub room_history_bytes: usize,
    pub max_room_members: usize,
    pub max_rooms_per_user: usize,
    pub max_accounts: usize,
    pub queue_per_recipient: usize,
    pub queue_total: usize,
    pub mp_retention_secs: u64,
    pub sweep_interval_secs: u64,
    pub dedup_window: usize,
    pub keepalive_interval_secs: u64,
    pub idle_timeout_secs: u64,
    pub frame_grace_secs: u64,
    pub min_frame_rate: u32,
    pub max_session_backlog: usize,
    pub max_deferred_bytes: usize,
    pub max_pending_jobs: usize,
    pub login_wait_secs: u64,
    pub max_sessions: usize,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection::from(&ServerConfig::default())
    }
}

impl From<&ServerConfig> for ServerSection {
    fn from(s: &ServerConfig) -> Self {
        ServerSection {
            min_password_len: s.min_password_len,
            min_passphrase_words: s.min_passphrase_words,
            max_identity_key: s.max_identity_key,
            max_verifier: s.max_verifier,
            access_ttl_secs: s.access_ttl.as_secs(),
            refresh_ttl_secs: s.refresh_ttl.as_secs(),
            refresh_retry_grace_secs: s.refresh_retry_grace.as_secs(),
            token_grace_secs: s.token_grace.as_secs(),
            login_window_secs: s.login_window.as_secs(),
            login_burst: s.login_burst,
            login_source_burst: s.login_source_burst,
            max_tracked_accounts: s.max_tracked_accounts,
            max_tracked_sources: s.max_tracked_sources,
            duplicate_login: match s.duplicate_login {
                DuplicateLogin::Replace => DuplicateLoginName::Replace,
                DuplicateLogin::Refuse => DuplicateLoginName::Refuse,
            },
            room_history: s.room_history,
            room_history_bytes: s.room_history_bytes,
            max_room_members: s.max_room_members,
            max_rooms_per_user: s.max_rooms_per_user,
            max_accounts: s.max_accounts,
            queue_per_recipient: s.queue_per_recipient,
            queue_total: s.queue_total,
            mp_retention_secs: s.mp_retention.as_secs(),
            sweep_interval_secs: s.sweep_interval.as_secs(),
            dedup_window: s.dedup_window,
            keepalive_interval_secs: s.keepalive_interval.as_secs(),
            idle_timeout_secs: s.idle_timeout.as_secs(),
            frame_grace_secs: s.frame_grace.as_secs(),
            min_frame_rate: s.min_frame_rate,
            max_session_backlog: s.max_session_backlog,
            max_deferred_bytes: s.max_deferred_bytes,
            max_pending_jobs: s.max_pending_jobs,
            login_wait_secs: s.login_wait.as_secs(),
            max_sessions: s.max_sessions,
        }
    }
}

impl ServerSection {
    /// The machine's configuration, without `codes`, `phantom` and `oidc`.
    pub fn to_config(&self, limits: Limits, hash_params: HashParams) -> ServerConfig {
        let secs = Duration::from_secs;
        ServerConfig {
            limits,
            hash_params,
            min_password_len: self.min_password_len,
            min_passphrase_words: self.min_passphrase_words,
            max_identity_key: self.max_identity_key,
            max_verifier: self.max_verifier,
            access_ttl: secs(self.access_ttl_secs),
            refresh_ttl: secs(self.refresh_ttl_secs),
            refresh_retry_grace: secs(self.refresh_retry_grace_secs),
            token_grace: secs(self.token_grace_secs),
            login_window: secs(self.login_window_secs),
            login_burst: self.login_burst,
            login_source_burst: self.login_source_burst,
            max_tracked_accounts: self.max_tracked_accounts,
            max_tracked_sources: self.max_tracked_sources,
            duplicate_login: match self.duplicate_login {
                DuplicateLoginName::Replace => DuplicateLogin::Replace,
                DuplicateLoginName::Refuse => DuplicateLogin::Refuse,
            },
            room_history: self.room_history,
            room_history_bytes: self.room_history_bytes,
            max_room_members: self.max_room_members,
            max_rooms_per_user: self.max_rooms_per_user,
            max_accounts: self.max_accounts,
            queue_per_recipient: self.queue_per_recipient,
            queue_total: self.queue_total,
            mp_retention: secs(self.mp_retention_secs),
            sweep_interval: secs(self.sweep_interval_secs),
            dedup_window: self.dedup_window,
            keepalive_interval: secs(self.keepalive_interval_secs),
            idle_timeout: secs(self.idle_timeout_secs),
            frame_grace: secs(self.frame_grace_secs),
            min_frame_rate: self.min_frame_rate,
            max_session_backlog: self.max_session_backlog,
            max_deferred_bytes: self.max_deferred_bytes,
            max_pending_jobs: self.max_pending_jobs,
            login_wait: secs(self.login_wait_secs),
            max_sessions: self.max_sessions,
            codes: None,
            phantom: None,
            oidc: None,
            // `[cluster] partitions` sets the count (`config.rs`).
            partitions: confab_proto::server::Partitions::SINGLE,
        }
    }
}

/// `[limits]`: the codec's [`Limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct LimitsSection {
    pub max_auth: u32,
    pub max_data: u64,
    pub max_name: u16,
    pub max_text: u16,
    pub max_items: u16,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection::from(Limits::DEFAULT)
    }
}

impl From<Limits> for LimitsSection {
    fn from(l: Limits) -> Self {
        LimitsSection {
            max_auth: l.max_auth,
            max_data: l.max_data,
            max_name: l.max_name,
            max_text: l.max_text,
            max_items: l.max_items,
        }
    }
}

impl From<LimitsSection> for Limits {
    fn from(l: LimitsSection) -> Self {
        Limits {
            max_auth: l.max_auth,
            max_data: l.max_data,
            max_name: l.max_name,
            max_text: l.max_text,
            max_items: l.max_items,
        }
    }
}

/// `[argon2]`: [`HashParams`] for new password and passphrase hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Argon2Section {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Default for Argon2Section {
    fn default() -> Self {
        Argon2Section::from(HashParams::OWASP)
    }
}

impl From<HashParams> for Argon2Section {
    fn from(h: HashParams) -> Self {
        Argon2Section { m_cost_kib: h.m_cost_kib, t_cost: h.t_cost, p_cost: h.p_cost }
    }
}

impl From<Argon2Section> for HashParams {
    fn from(h: Argon2Section) -> Self {
        HashParams { m_cost_kib: h.m_cost_kib, t_cost: h.t_cost, p_cost: h.p_cost }
    }
}

/// `[tcp]`: the TCP+TLS transport's handshake limits ([`TcpLimits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct TcpSection {
    pub max_handshaking: usize,
    pub max_handshaking_per_source: usize,
    pub handshake_timeout_secs: u64,
    pub busy_handshake_timeout_secs: u64,
}

impl Default for TcpSection {
    fn default() -> Self {
        let t = TcpLimits::default();
        TcpSection {
            max_handshaking: t.max_handshaking,
            max_handshaking_per_source: t.max_handshaking_per_source,
            handshake_timeout_secs: t.handshake_timeout.as_secs(),
            busy_handshake_timeout_secs: t.busy_handshake_timeout.as_secs(),
        }
    }
}

impl TcpSection {
    /// The transport's limits, with `max_connections` from the top level.
    pub fn to_limits(self, max_connections: usize) -> TcpLimits {
        TcpLimits {
            max_connections,
            max_handshaking: self.max_handshaking,
            max_handshaking_per_source: self.max_handshaking_per_source,
            handshake_timeout: Duration::from_secs(self.handshake_timeout_secs),
            busy_handshake_timeout: Duration::from_secs(self.busy_handshake_timeout_secs),
            ..TcpLimits::default()
        }
    }
}

/// `[codes]`: present means third-party codes are offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct CodesSection {
    pub ttl_secs: u64,
    pub max_in_flight: usize,
}

impl Default for CodesSection {
    fn default() -> Self {
        let c = CodeConfig::default();
        CodesSection { ttl_secs: c.ttl.as_secs(), max_in_flight: c.max_in_flight }
    }
}

/// `[phantom]`: present means phantom-token translation is offered.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PhantomSection {
    pub service_credential: String,
    pub issuer: String,
    pub audience: String,
    #[serde(default = "default_key_rotation_secs")]
    pub key_rotation_secs: u64,
    #[serde(default = "default_max_ttl_secs")]
    pub max_ttl_secs: u64,
}

impl std::fmt::Debug for PhantomSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhantomSection").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

pub(super) fn default_key_rotation_secs() -> u64 {
    confab_proto::server::PhantomConfig::new("", "", "").key_rotation.as_secs()
}

pub(super) fn default_max_ttl_secs() -> u64 {
    confab_proto::server::PhantomConfig::new("", "", "").max_ttl.as_secs()
}

/// `[oidc]`: present means access tokens of this provider are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OidcSection {
    pub issuer: String,
    pub audience: String,
    #[serde(default)]
    pub allowed_azp: Vec<String>,
    pub jwks_file: PathBuf,
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    #[serde(default = "default_jwks_refresh_secs")]
    pub jwks_refresh_secs: u64,
    #[serde(default = "default_jwks_min_interval_secs")]
    pub jwks_min_interval_secs: u64,
}

pub(super) fn default_leeway_secs() -> u64 {
    confab_proto::server::OidcConfig::new("", "", "").leeway.as_secs()
}

pub(super) fn default_jwks_refresh_secs() -> u64 {
    confab_proto::server::OidcConfig::new("", "", "").jwks_refresh.as_secs()
}

pub(super) fn default_jwks_min_interval_secs() -> u64 {
    confab_proto::server::OidcConfig::new("", "", "").jwks_min_interval.as_secs()
}
