//! `ws_listen` and `[ws]`: the WebSocket listener's address, plain or TLS,
//! the `Origin` allow-list, the upgrade request's bound and whether the
//! browser client is served (`ws.web`). Its handshake slots, per-source
//! share and timeouts are `[tcp]`'s values, counted apart.

use std::net::SocketAddr;

use confab_transports::tcp::TcpLimits;
use confab_transports::ws::{self, OriginCheck, WsLimits, WsPolicy};
use serde::{Deserialize, Serialize};

use super::{ConfigError, at_least, invalid};
use crate::runtime::{WsConfig, WsTls};

/// `ws.tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum TlsMode {
    /// TLS with a configured certificate or on an address that is not loopback.
    #[default]
    Auto,
    /// Always `wss://`.
    Always,
    /// Always plain `ws://`.
    Never,
}

/// `[ws]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct WsSection {
    pub enabled: bool,
    pub tls: TlsMode,
    pub allow_plain_non_loopback: bool,
    pub origins: Vec<String>,
    pub loopback_origins: bool,
    pub max_request_bytes: usize,
    pub max_message_bytes: usize,
    pub web: bool,
}

impl Default for WsSection {
    fn default() -> Self {
        let policy = WsPolicy::default();
        WsSection {
            enabled: true,
            tls: TlsMode::Auto,
            allow_plain_non_loopback: false,
            origins: policy.origins.allowed,
            loopback_origins: policy.origins.loopback,
            max_request_bytes: WsLimits::default().max_request_bytes,
            max_message_bytes: WsLimits::default().max_message,
            web: true,
        }
    }
}

/// The largest `ws.max_request_bytes` (a request line and headers, not a body).
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// The largest `ws.max_message_bytes`: tungstenite's own default.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// The default WebSocket address: the TCP address's port + 2 (port 0 stays
/// 0: an ephemeral port, as for TCP).
#[must_use]
pub fn default_ws_listen(tcp: SocketAddr) -> SocketAddr {
    let port = if tcp.port() == 0 { 0 } else { tcp.port().saturating_add(2) };
    SocketAddr::new(tcp.ip(), port)
}

/// Checks `[ws]` and builds the listener's settings (`None`: disabled).
/// `tls` is resolved here: `Auto` is TLS with a configured certificate or
/// on an address that is not loopback.
pub(super) fn resolve(
    w: WsSection,
    listen: SocketAddr,
    tcp: TcpLimits,
    certificate_configured: bool,
) -> Result<Option<WsConfig>, ConfigError> {
    if !w.enabled {
        return Ok(None);
    }
    at_least("ws.max_request_bytes", w.max_request_bytes, 256)?;
    if w.max_request_bytes > MAX_REQUEST_BYTES {
        return Err(invalid(
            "ws.max_request_bytes",
            format!("{} is above the maximum {MAX_REQUEST_BYTES}", w.max_request_bytes),
        ));
    }
    at_least("ws.max_message_bytes", w.max_message_bytes, ws::MIN_MESSAGE)?;
    if w.max_message_bytes > MAX_MESSAGE_BYTES {
        return Err(invalid(
            "ws.max_message_bytes",
            format!("{} is above the maximum {MAX_MESSAGE_BYTES}", w.max_message_bytes),
        ));
    }
    for origin in &w.origins {
        let ok = origin.split_once("://").is_some_and(|(scheme, host)| {
            !scheme.is_empty() && !host.is_empty() && !host.trim_end_matches('/').contains('/')
        });
        if !ok {
            return Err(invalid("ws.origins", format!("{origin:?} is not an origin: expected scheme://host[:port]")));
        }
    }
    let tls = match w.tls {
        TlsMode::Auto => WsTls::Auto,
        TlsMode::Always => WsTls::Always,
        TlsMode::Never => WsTls::Never,
    };
    let mut config = WsConfig {
        listen,
        tls,
        allow_plain_non_loopback: w.allow_plain_non_loopback,
        limits: WsLimits { conn: tcp, max_request_bytes: w.max_request_bytes, max_message: w.max_message_bytes },
        policy: WsPolicy {
            origins: OriginCheck { allowed: w.origins, loopback: w.loopback_origins },
            site: w.web.then(crate::web::site),
            ..WsPolicy::default()
        },
    };
    let uses_tls = config.uses_tls(certificate_configured).map_err(|e| invalid("ws.tls", e.to_string()))?;
    config.tls = if uses_tls { WsTls::Always } else { WsTls::Never };
    Ok(Some(config))
}
