//! The configuration of `confab-server run`.
//!
//! Every field of [`ServerConfig`] and the adapter's own settings can be set
//! in a TOML file; `docs/confab-server.toml` lists every key with its default
//! and what it means (a test checks it parses to exactly the defaults).
//!
//! - Top level: the adapter: `data`, `listen`, `tcp_listen`, `quic_listen`,
//!   `ws_listen` (default: the TCP address's port + 2), `cert_chain`, `private_key`, `max_connections`, `compact_every`.
//! - `[server]`: the machine's scalar settings. Durations are whole seconds
//!   in keys ending in `_secs` (`access_ttl_secs = 900`).
//! - `[limits]`: the codec's limits. `[argon2]`: password hashing costs.
//! - `[store]`: where the state lives (`url`: a PostgreSQL store; none: SQLite in the data directory) and
//!   how SQLite commits are made durable (`fsync`, `fsync_interval_ms`).
//! - `[cluster]`: a node on a PostgreSQL store: its name, its lease, and
//!   whether it stands by for another node's partition (`node`, `lease_secs`,
//!   `standby`), the NATS relay through which standbys serve clients
//!   (`nats`, `name`), and how many partitions the state is split into
//!   (`partitions`, `mail_poll_ms`; the nodes of a split state share its
//!   partitions, and ring each other's doorbells over `nats`).
//! - `[tcp]`: the TCP+TLS transport's handshake limits (slots, per-source
//!   share, timeouts), which the WebSocket listener applies too.
//! - `[ws]`: the WebSocket listener (`config/ws.rs`): on or off, plain or
//!   TLS, the `Origin` allow-list, the upgrade request's bound, the browser
//!   client served at its web address (`web`).
//! - `[codes]`, `[phantom]`, `[oidc]`: optional features, enabled by the
//!   section's presence.
//!
//! Unknown keys are errors naming the key. Relative paths are relative to the
//! working directory, not to the file.
//!
//! Precedence, lowest first: defaults, the file, the environment, the
//! command line.
//!
//! | variable        | meaning                                                   |
//! |-----------------|-----------------------------------------------------------|
//! | `CONFAB_CONFIG` | the file, when `--config` is not given                     |
//! | `CONFAB_DATA`   | `data`                                                     |
//! | `CONFAB_LISTEN` | `listen`; replaces the file's `tcp_listen`/`quic_listen`/`ws_listen` too |
//! | `CONFAB_STORE`  | `store.url` (keeps a password out of the command line)    |
//!
//! On the command line, `--listen` likewise sets both addresses, and
//! `--tcp-listen` / `--quic-listen` / `--ws-listen` then set one.

mod file;
#[cfg(test)]
mod tests;
mod ws;

pub use ws::default_ws_listen;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use confab_proto::ServerConfig;
use confab_proto::jwt::JwkSet;
use confab_proto::server::{CodeConfig, MAX_PARTITIONS, OidcConfig, Partitions, PhantomConfig};
use confab_transports::tcp::TcpLimits;

use crate::runtime::LogLimits;
use crate::store::{Fsync, LeaseConfig};

use file::FileConfig;

/// `data` when nothing sets it.
pub const DEFAULT_DATA: &str = "./confab-data";
/// `listen` when nothing sets it: TCP and UDP (QUIC) on the loopback port 7700.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7700));

/// The environment variable naming the configuration file.
pub const ENV_CONFIG: &str = "CONFAB_CONFIG";
/// The environment variable setting the data directory.
pub const ENV_DATA: &str = "CONFAB_DATA";
/// The environment variable setting `store.url` (a PostgreSQL store).
pub const ENV_STORE: &str = "CONFAB_STORE";
/// The environment variable setting the listen address (TCP and QUIC).
pub const ENV_LISTEN: &str = "CONFAB_LISTEN";

/// The resolved configuration of `confab-server run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunConfig {
    /// The data directory (store, generated certificate).
    pub data: PathBuf,
    /// The TCP + TLS address.
    pub tcp: SocketAddr,
    /// The UDP (QUIC) address.
    pub quic: SocketAddr,
    /// A provided certificate chain and private key (PEM); `None`: a self-signed one in `data`.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// Transport connections open at once; more are closed at accept.
    pub max_connections: usize,
    /// The TCP transport's limits (`max_connections` and `[tcp]`).
    pub tcp_limits: TcpLimits,
    /// The WebSocket listener (`ws_listen`, `[ws]`, with `tls` resolved);
    /// `None`: `ws.enabled = false`.
    pub ws: Option<crate::runtime::WsConfig>,
    /// Store changes between two snapshots.
    pub compact_every: u64,
    /// How the SQLite store makes commits durable (`[store]`).
    pub fsync: Fsync,
    /// A PostgreSQL store's URL (`[store] url`, `--store`); `None`: SQLite in `data`.
    pub store_url: Option<String>,
    /// How a node on a PostgreSQL store takes and keeps its lease (`[cluster]`, `--standby`).
    pub lease: LeaseConfig,
    /// The relay between the cluster's nodes (`[cluster] nats`, `--nats`):
    /// standbys serve clients as edges of the owner.
    pub relay: Option<crate::relay::RelayConfig>,
    /// How often a split state's mail is read without a ring (`[cluster] mail_poll_ms`).
    pub mail_poll: Duration,
    /// The protocol machine's configuration (`partitions`: `[cluster] partitions`).
    pub server: ServerConfig,
    /// The file it was read from, if any.
    pub file: Option<PathBuf>,
    /// `oidc.jwks_file`, which the server reads again whenever the core asks
    /// for the JWK Set (a provider rotating its keys is followed without a restart).
    pub oidc_jwks_file: Option<PathBuf>,
    /// How many log lines of each kind are written per interval (`[log]`).
    pub log: LogLimits,
}

impl Default for RunConfig {
    fn default() -> Self {
        // The default file has no `[oidc]`, so no file is read and nothing can fail.
        resolve(FileConfig::default(), None).unwrap_or_else(|_| unreachable!("the defaults are valid"))
    }
}

/// The settings given on the command line (each `None` when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct RunFlags {
    /// The data directory [default: ./confab-data].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// The address for both TCP and QUIC (UDP) [default: 127.0.0.1:7700].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The TCP address, if not `--listen`'s.
    #[arg(long, value_name = "ADDR")]
    pub tcp_listen: Option<SocketAddr>,
    /// The QUIC (UDP) address, if not `--listen`'s.
    #[arg(long, value_name = "ADDR")]
    pub quic_listen: Option<SocketAddr>,
    /// The WebSocket address [default: the TCP address's port + 2]; plain
    /// ws:// on loopback, wss:// with a certificate or elsewhere.
    #[arg(long, value_name = "ADDR")]
    pub ws_listen: Option<SocketAddr>,
    /// The certificate chain (PEM); with `--private-key`. Without both, a self-signed certificate is made.
    #[arg(long, value_name = "FILE", requires = "private_key")]
    pub cert_chain: Option<PathBuf>,
    /// The private key of the certificate (PEM); with `--cert-chain`.
    #[arg(long, value_name = "FILE", requires = "cert_chain")]
    pub private_key: Option<PathBuf>,
    /// A PostgreSQL store (postgres://user:password@host:port/db) instead of
    /// SQLite in the data directory, which still holds the certificate.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// With a PostgreSQL store: wait for as long as another node owns it,
    /// and take over when that node is gone (`[cluster] standby`).
    #[arg(long)]
    pub standby: bool,
    /// With a PostgreSQL store: the NATS server (nats://host:4222) through
    /// which standbys relay their clients to the owner (`[cluster] nats`).
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file (or a file it names) cannot be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// "configuration file", "oidc.jwks_file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("configuration file {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message: the key, the line and what was expected.
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid configuration: {key}: {reason}")]
    Invalid {
        /// The key, as written in the file (`server.idle_timeout_secs`).
        key: &'static str,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// An environment variable does not parse.
    #[error("environment variable {var}={value:?}: {reason}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// `oidc.jwks_file` is not a usable JWK Set.
    #[error("oidc.jwks_file {}: not a usable JWK Set: {reason}", path.display())]
    Jwks {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
}

impl RunConfig {
    /// Resolves the configuration: defaults, then the file (`file`, else the
    /// one `CONFAB_CONFIG` names, else none), then `CONFAB_DATA` and
    /// `CONFAB_LISTEN`, then `flags`. `env` reads an environment variable
    /// (`|k| std::env::var(k).ok()` in the binary).
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        flags: &RunFlags,
    ) -> Result<RunConfig, ConfigError> {
        let path = file.map(Path::to_path_buf).or_else(|| env(ENV_CONFIG).filter(|v| !v.is_empty()).map(PathBuf::from));
        let mut config = match &path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    what: "configuration file",
                    path: path.clone(),
                    source,
                })?;
                parse(&text, path)?
            }
            None => FileConfig::default(),
        };
        if let Some(value) = env(ENV_STORE).filter(|v| !v.is_empty()) {
            config.store.url = Some(value);
        }
        if let Some(value) = env(ENV_DATA).filter(|v| !v.is_empty()) {
            config.data = PathBuf::from(value);
        }
        if let Some(value) = env(ENV_LISTEN).filter(|v| !v.is_empty()) {
            let addr = value.parse().map_err(|e: std::net::AddrParseError| ConfigError::Env {
                var: ENV_LISTEN,
                value: value.clone(),
                reason: format!("{e}: expected IP:PORT, such as 0.0.0.0:7700 or [::]:7700"),
            })?;
            set_listen(&mut config, addr);
        }
        if let Some(data) = &flags.data {
            config.data.clone_from(data);
        }
        if let Some(addr) = flags.listen {
            set_listen(&mut config, addr);
        }
        config.tcp_listen = flags.tcp_listen.or(config.tcp_listen);
        config.quic_listen = flags.quic_listen.or(config.quic_listen);
        config.ws_listen = flags.ws_listen.or(config.ws_listen);
        if flags.store.is_some() {
            config.store.url.clone_from(&flags.store);
        }
        config.cluster.standby |= flags.standby;
        if let Some(nats) = &flags.nats {
            config.cluster.nats.clone_from(nats);
        }
        if flags.cert_chain.is_some() || flags.private_key.is_some() {
            config.cert_chain.clone_from(&flags.cert_chain);
            config.private_key.clone_from(&flags.private_key);
        }
        resolve(config, path)
    }
}

/// `listen` set at a higher precedence replaces both addresses.
fn set_listen(config: &mut FileConfig, addr: SocketAddr) {
    config.listen = addr;
    config.tcp_listen = None;
    config.quic_listen = None;
    config.ws_listen = None;
}

fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, reason: reason.into() }
}

/// Checks `value` is at least `min`.
fn at_least<T: PartialOrd + std::fmt::Display>(key: &'static str, value: T, min: T) -> Result<(), ConfigError> {
    if value < min {
        return Err(invalid(key, format!("{value} is below the minimum {min}")));
    }
    Ok(())
}

/// The longest duration a file may give (100 years), as for the machine's durations.
const MAX_SECS: u64 = 3_153_600_000;

/// `[tcp]`: at least one slot, a per-source share within the slots, and a
/// busy timeout within the normal one.
fn check_tcp(t: &file::TcpSection) -> Result<(), ConfigError> {
    at_least("tcp.max_handshaking", t.max_handshaking, 1)?;
    at_least("tcp.max_handshaking_per_source", t.max_handshaking_per_source, 1)?;
    if t.max_handshaking_per_source > t.max_handshaking {
        return Err(invalid(
            "tcp.max_handshaking_per_source",
            format!("{} is above max_handshaking ({})", t.max_handshaking_per_source, t.max_handshaking),
        ));
    }
    at_least("tcp.handshake_timeout_secs", t.handshake_timeout_secs, 1)?;
    at_least("tcp.busy_handshake_timeout_secs", t.busy_handshake_timeout_secs, 1)?;
    if t.handshake_timeout_secs > MAX_SECS {
        return Err(invalid(
            "tcp.handshake_timeout_secs",
            format!("{} is above the maximum {MAX_SECS}", t.handshake_timeout_secs),
        ));
    }
    if t.busy_handshake_timeout_secs > t.handshake_timeout_secs {
        return Err(invalid(
            "tcp.busy_handshake_timeout_secs",
            format!("{} is above handshake_timeout_secs ({})", t.busy_handshake_timeout_secs, t.handshake_timeout_secs),
        ));
    }
    Ok(())
}

/// The key in the file of a [`ServerConfig`] field, as
/// [`confab_proto::server::ConfigError::field`] names it.
fn toml_key(field: &'static str) -> &'static str {
    match field {
        "access_ttl" => "server.access_ttl_secs",
        "refresh_ttl" => "server.refresh_ttl_secs",
        "refresh_retry_grace" => "server.refresh_retry_grace_secs",
        "token_grace" => "server.token_grace_secs",
        "login_window" => "server.login_window_secs",
        "login_wait" => "server.login_wait_secs",
        "mp_retention" => "server.mp_retention_secs",
        "sweep_interval" => "server.sweep_interval_secs",
        "keepalive_interval" => "server.keepalive_interval_secs",
        "idle_timeout" => "server.idle_timeout_secs",
        "frame_grace" => "server.frame_grace_secs",
        "min_frame_rate" => "server.min_frame_rate",
        "min_password_len" => "server.min_password_len",
        "max_verifier" => "server.max_verifier",
        "max_identity_key" => "server.max_identity_key",
        "login_burst" => "server.login_burst",
        "login_source_burst" => "server.login_source_burst",
        "max_tracked_accounts" => "server.max_tracked_accounts",
        "max_tracked_sources" => "server.max_tracked_sources",
        "room_history" => "server.room_history",
        "max_room_members" => "server.max_room_members",
        "max_rooms_per_user" => "server.max_rooms_per_user",
        "max_accounts" => "server.max_accounts",
        "queue_per_recipient" => "server.queue_per_recipient",
        "queue_total" => "server.queue_total",
        "dedup_window" => "server.dedup_window",
        "max_session_backlog" => "server.max_session_backlog",
        "max_deferred_bytes" => "server.max_deferred_bytes",
        "max_pending_jobs" => "server.max_pending_jobs",
        "max_sessions" => "server.max_sessions",
        "hash_params.m_cost_kib" => "argon2.m_cost_kib",
        "hash_params.t_cost" => "argon2.t_cost",
        "hash_params.p_cost" => "argon2.p_cost",
        "codes.ttl" => "codes.ttl_secs",
        "phantom.key_rotation" => "phantom.key_rotation_secs",
        "phantom.max_ttl" => "phantom.max_ttl_secs",
        "oidc.leeway" => "oidc.leeway_secs",
        "oidc.jwks_refresh" => "oidc.jwks_refresh_secs",
        "oidc.jwks_min_interval" => "oidc.jwks_min_interval_secs",
        // `limits.*`, `codes.max_in_flight`, `phantom.*` and `oidc.*` text fields keep their names.
        other => other,
    }
}

/// Why the machine refused a value, in the file's terms (whole seconds, key names).
fn reason(e: &confab_proto::server::ConfigError) -> String {
    use confab_proto::server::ConfigError as Core;
    let key = |field| toml_key(field).rsplit('.').next().unwrap_or(field);
    match e {
        Core::TooSmall { field: "phantom.service_credential", min, .. } => {
            format!("must be at least {min} bytes: use a long random secret")
        }
        Core::TooSmall { value, min, .. } => format!("{value} is below the minimum {min}"),
        Core::TooLarge { value, max, .. } => format!("{value} is above the maximum {max}"),
        Core::TooShort { value, min, .. } => format!("{} is below the minimum {}", value.as_secs(), min.as_secs()),
        Core::TooLong { value, max, .. } => format!("{} is above the maximum {}", value.as_secs(), max.as_secs()),
        Core::IdleNotAfterKeepalive { idle_timeout, keepalive_interval } => format!(
            "{} must exceed {} ({}): a session must have time to answer a ping",
            idle_timeout.as_secs(),
            key("keepalive_interval"),
            keepalive_interval.as_secs()
        ),
        Core::RefreshBeforeAccess { access_ttl, .. } => {
            format!("must be at least {} ({})", key("access_ttl"), access_ttl.as_secs())
        }
        Core::QueueTotalBelowRecipient { queue_total, queue_per_recipient } => {
            format!("{queue_total} is below {} ({queue_per_recipient})", key("queue_per_recipient"))
        }
        Core::HashMemoryPerLane { m_cost_kib, p_cost } => {
            format!("{m_cost_kib} is below 8 KiB per lane ({} = {p_cost})", key("hash_params.p_cost"))
        }
        Core::Empty { .. } => "must not be empty".into(),
    }
}

/// The longest `store.fsync_interval_ms`: a minute of commits at risk on power loss.
pub const MAX_FSYNC_INTERVAL_MS: u64 = 60_000;

/// `[store]`: `fsync_interval_ms` is checked whatever `fsync` says, so a
/// wrong value is found before someone switches to `interval`.
fn store_fsync(s: &file::StoreSection) -> Result<Fsync, ConfigError> {
    at_least("store.fsync_interval_ms", s.fsync_interval_ms, 1)?;
    if s.fsync_interval_ms > MAX_FSYNC_INTERVAL_MS {
        return Err(invalid(
            "store.fsync_interval_ms",
            format!("{} is above the maximum {MAX_FSYNC_INTERVAL_MS}", s.fsync_interval_ms),
        ));
    }
    Ok(match s.fsync {
        file::FsyncName::Always => Fsync::Always,
        file::FsyncName::Interval => Fsync::Interval(Duration::from_millis(s.fsync_interval_ms)),
    })
}

/// The longest `cluster.lease_secs`: how long a dead node's partition may wait.
pub const MAX_LEASE_SECS: u64 = 3600;

/// `[cluster]`: a lease of 2 s at least (renewed every third of it).
fn cluster(c: &file::ClusterSection) -> Result<LeaseConfig, ConfigError> {
    at_least("cluster.lease_secs", c.lease_secs, 2)?;
    if c.lease_secs > MAX_LEASE_SECS {
        return Err(invalid("cluster.lease_secs", format!("{} is above the maximum {MAX_LEASE_SECS}", c.lease_secs)));
    }
    let node = c.node.trim();
    if node.len() > 200 || node.chars().any(char::is_control) {
        return Err(invalid("cluster.node", "at most 200 bytes, no control characters"));
    }
    let node = if node.is_empty() { crate::store::lease::default_node_name() } else { node.to_owned() };
    if !crate::relay::valid_cluster_name(&c.name) {
        return Err(invalid("cluster.name", "1 to 64 ASCII letters, digits, '-' or '_' (a NATS subject token)"));
    }
    if !(c.nats.is_empty() || c.nats.starts_with("nats://") || c.nats.starts_with("tls://")) {
        return Err(invalid("cluster.nats", "a nats:// or tls:// URL, such as nats://127.0.0.1:4222"));
    }
    if !(1..=MAX_PARTITIONS).contains(&c.partitions) {
        return Err(invalid("cluster.partitions", format!("1 to {MAX_PARTITIONS}, fixed when the store is made")));
    }
    if !(10..=60_000).contains(&c.mail_poll_ms) {
        return Err(invalid("cluster.mail_poll_ms", "10 to 60000"));
    }
    if c.partitions > 1 && c.standby {
        return Err(invalid(
            "cluster.partitions",
            "every node of a split state serves its share of the partitions: no standby (docs/PARTITIONS.md, \
             \"Ownership\")",
        ));
    }
    Ok(LeaseConfig::new(node, Duration::from_secs(c.lease_secs), c.standby))
}

/// Checks every value and builds the [`RunConfig`].
fn resolve(f: FileConfig, file: Option<PathBuf>) -> Result<RunConfig, ConfigError> {
    at_least("max_connections", f.max_connections, 1)?;
    at_least("compact_every", f.compact_every, 1)?;
    at_least("log.interval_secs", f.log.interval_secs, 1)?;
    let max_secs = ServerConfig::MAX_DURATION.as_secs();
    if f.log.interval_secs > max_secs {
        return Err(invalid("log.interval_secs", format!("{} is above the maximum {max_secs}", f.log.interval_secs)));
    }
    let log = LogLimits { burst: f.log.burst, interval: Duration::from_secs(f.log.interval_secs) };
    let fsync = store_fsync(&f.store)?;
    let lease = cluster(&f.cluster)?;
    let relay = (!f.cluster.nats.is_empty()).then(|| crate::relay::RelayConfig {
        url: f.cluster.nats.clone(),
        cluster: f.cluster.name.clone(),
        node: lease.node.clone(),
    });
    if f.store.url.as_deref().is_none_or(str::is_empty) && f.cluster != file::ClusterSection::default() {
        return Err(invalid(
            "cluster",
            "[cluster] keys and --standby need a PostgreSQL store (store.url, CONFAB_STORE or --store): without one, \
             this node would serve a state of its own, apart from the cluster's",
        ));
    }
    check_tcp(&f.tcp)?;
    let cert = match (f.cert_chain, f.private_key) {
        (Some(chain), Some(key)) => Some((chain, key)),
        (None, None) => None,
        (Some(_), None) => return Err(invalid("private_key", "cert_chain is set: give its private_key too")),
        (None, Some(_)) => return Err(invalid("cert_chain", "private_key is set: give its cert_chain too")),
    };
    let mut server = f.server.to_config(f.limits.into(), f.argon2.into());
    server.partitions = Partitions { index: 0, count: f.cluster.partitions };
    if let Some(c) = f.codes {
        server.codes = Some(CodeConfig { ttl: Duration::from_secs(c.ttl_secs), max_in_flight: c.max_in_flight });
    }
    if let Some(p) = f.phantom {
        let mut phantom = PhantomConfig::new(p.service_credential, p.issuer, p.audience);
        phantom.key_rotation = Duration::from_secs(p.key_rotation_secs);
        phantom.max_ttl = Duration::from_secs(p.max_ttl_secs);
        server.phantom = Some(phantom);
    }
    let mut oidc_jwks_file = None;
    if let Some(o) = f.oidc {
        let mut oidc = OidcConfig::new(o.issuer, o.audience, String::new());
        oidc.allowed_azp = o.allowed_azp;
        oidc.leeway = Duration::from_secs(o.leeway_secs);
        oidc.jwks_refresh = Duration::from_secs(o.jwks_refresh_secs);
        oidc.jwks_min_interval = Duration::from_secs(o.jwks_min_interval_secs);
        server.oidc = Some(oidc);
        oidc_jwks_file = Some(o.jwks_file);
    }
    // The machine's own invariants and bounds, reported with the file's key names.
    server.validate().map_err(|e| invalid(toml_key(e.field()), reason(&e)))?;
    // A room_joined answer (full member list and whole history) must fit in one frame:
    // the machine would lower room_history_bytes to fit; a configuration file says so instead.
    let room_answer = server.room_history_bytes.saturating_add(server.room_answer_overhead());
    if room_answer as u64 > server.limits.max_data {
        return Err(invalid(
            "server.room_history_bytes",
            format!(
                "{} plus {} bytes for max_room_members names exceeds limits.max_data ({}): a room's history \
                 must fit in one frame",
                server.room_history_bytes,
                server.room_answer_overhead(),
                server.limits.max_data
            ),
        ));
    }
    if let (Some(path), Some(oidc)) = (&oidc_jwks_file, server.oidc.as_mut()) {
        let jwks = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            what: "oidc.jwks_file",
            path: path.clone(),
            source,
        })?;
        JwkSet::parse(jwks.as_bytes()).map_err(|e| ConfigError::Jwks { path: path.clone(), reason: e.to_string() })?;
        oidc.jwks_json = jwks;
    }
    let tcp = f.tcp_listen.unwrap_or(f.listen);
    let tcp_limits = f.tcp.to_limits(f.max_connections);
    let ws_listen = f.ws_listen.unwrap_or_else(|| default_ws_listen(tcp));
    let ws = ws::resolve(f.ws, ws_listen, tcp_limits, cert.is_some())?;
    Ok(RunConfig {
        data: f.data,
        tcp,
        quic: f.quic_listen.unwrap_or(f.listen),
        cert,
        max_connections: f.max_connections,
        tcp_limits,
        ws,
        compact_every: f.compact_every,
        fsync,
        store_url: f.store.url.clone().filter(|u| !u.is_empty()),
        lease,
        relay,
        mail_poll: Duration::from_millis(f.cluster.mail_poll_ms),
        server,
        file,
        oidc_jwks_file,
        log,
    })
}
