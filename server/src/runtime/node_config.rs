//! [`NodeConfig`]: what a [`Node`](super::Node) serves.

use std::net::SocketAddr;
use std::path::PathBuf;

use confab_proto::ServerConfig;
use confab_transports::quic::QuicLimits;
use confab_transports::tcp::TcpLimits;
use confab_transports::tls::ServerIdentity;

use super::{CommitMode, LogLimits, WsConfig};

/// What a [`Node`](super::Node) serves.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The core's limits and parameters.
    pub server: ServerConfig,
    /// TCP+TLS listen address; `None`: no TCP.
    pub tcp: Option<SocketAddr>,
    /// QUIC (UDP) listen address; `None`: no QUIC.
    pub quic: Option<SocketAddr>,
    /// The TLS certificate and key of both.
    pub identity: ServerIdentity,
    /// TCP connection limits.
    pub tcp_limits: TcpLimits,
    /// QUIC connection limits.
    pub quic_limits: QuicLimits,
    /// The WebSocket listener; `None`: no WebSocket. Its `tls` is
    /// resolved here as if no certificate were configured (`run` resolves
    /// `Auto` with what it knows first).
    pub ws: Option<WsConfig>,
    /// argon2 worker threads.
    pub workers: usize,
    /// The OIDC provider's JWK Set file, read again whenever the core asks
    /// for the set (`OidcConfig::jwks_refresh`, and a token naming an
    /// unknown key); `None`: no OIDC, or keys fixed. Whatever keeps the
    /// file current (a cron job fetching the provider's `jwks_uri`, a config
    /// manager) is followed within `jwks_refresh`; a provider publishes a new
    /// key well before signing with it.
    pub oidc_jwks_file: Option<PathBuf>,
    /// How many log lines of each kind are written per interval.
    pub log: LogLimits,
    /// Where turns are committed: pipelined on a committer thread (the
    /// default), or inline on the loop's thread.
    pub commit: CommitMode,
    /// A split state's doorbells between nodes over NATS
    /// (`crate::relay::bells`); `None`: mail between nodes waits for the
    /// carrier's poll.
    pub bells: Option<crate::relay::RelayConfig>,
}

impl NodeConfig {
    /// TCP and QUIC on `addr` (port 0: two ephemeral ports), WebSocket on
    /// its port + 2 (port 0: an ephemeral one), default limits.
    #[must_use]
    pub fn new(server: ServerConfig, addr: SocketAddr, identity: ServerIdentity) -> NodeConfig {
        NodeConfig {
            server,
            tcp: Some(addr),
            quic: Some(addr),
            identity,
            tcp_limits: TcpLimits::default(),
            quic_limits: QuicLimits::default(),
            ws: Some(WsConfig::new(SocketAddr::new(
                addr.ip(),
                if addr.port() == 0 { 0 } else { addr.port().saturating_add(2) },
            ))),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4),
            oidc_jwks_file: None,
            log: LogLimits::default(),
            commit: CommitMode::default(),
            bells: None,
        }
    }
}
