//! The WebSocket transport on the loop: its listener's settings, the
//! plain-or-TLS decision, and the loop's calls into
//! [`WsServer`](confab_transports::ws::WsServer) (events, timeouts,
//! refusal counts, sends, closes with their WebSocket codes, backlogs).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use confab_transports::hub::{ConnId, NetEvent};
use confab_transports::tls::{self, ServerIdentity};
use confab_transports::ws::{self, WsLimits, WsPolicy, WsServer};
use mio::Registry;
use mio::event::Event;

use super::Node;
use super::refusals::{self, RefusalLog};

/// Whether the WebSocket listener speaks TLS (`wss://`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WsTls {
    /// TLS with a configured certificate or on an address that is not
    /// loopback; plain `ws://` on loopback with the generated identity.
    #[default]
    Auto,
    /// Always `wss://`.
    Always,
    /// Always plain `ws://` (refused on an address that is not loopback
    /// unless `allow_plain_non_loopback`).
    Never,
}

/// Why the WebSocket listener cannot be set up as configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsSetupError {
    /// Plain `ws://` asked for on an address other than loopback.
    #[error(
        "refusing to serve plain ws:// on {0}, which is not a loopback address: anyone on the path could read and change the traffic; configure a certificate (--cert-chain/--private-key) or ws.tls = \"always\", or set ws.allow_plain_non_loopback = true behind a TLS-terminating proxy"
    )]
    PlainNotLoopback(SocketAddr),
}

/// The WebSocket listener's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Plain or TLS.
    pub tls: WsTls,
    /// Plain `ws://` on an address that is not loopback is allowed (behind
    /// a proxy that terminates TLS).
    pub allow_plain_non_loopback: bool,
    /// Connection, request and message limits.
    pub limits: WsLimits,
    /// Path, subprotocol and the `Origin` allow-list.
    pub policy: WsPolicy,
}

impl WsConfig {
    /// Defaults on `listen`: auto TLS, default limits and policy.
    #[must_use]
    pub fn new(listen: SocketAddr) -> WsConfig {
        WsConfig {
            listen,
            tls: WsTls::Auto,
            allow_plain_non_loopback: false,
            limits: WsLimits::default(),
            policy: WsPolicy::default(),
        }
    }

    /// Whether it serves `wss://`, given whether a certificate was
    /// configured (rather than generated on first start).
    ///
    /// # Errors
    /// Plain `ws://` on an address that is not loopback, not explicitly allowed.
    pub fn uses_tls(&self, certificate_configured: bool) -> Result<bool, WsSetupError> {
        let loopback = self.listen.ip().is_loopback();
        let tls = match self.tls {
            WsTls::Always => true,
            WsTls::Never => false,
            WsTls::Auto => certificate_configured || !loopback,
        };
        if !tls && !loopback && !self.allow_plain_non_loopback {
            return Err(WsSetupError::PlainNotLoopback(self.listen));
        }
        Ok(tls)
    }
}

/// The WebSocket server and its refusal log, as the loop holds them.
pub(super) struct WsSide {
    pub(super) server: WsServer,
    refusal_log: RefusalLog,
}

impl WsSide {
    /// Binds the listener (`tls`: with the server's identity, ALPN `http/1.1`).
    pub(super) fn bind(
        registry: &Registry,
        config: &WsConfig,
        tls: bool,
        identity: &ServerIdentity,
        ids: confab_transports::hub::ConnIds,
    ) -> std::io::Result<WsSide> {
        let tls_config =
            if tls { Some(Arc::new(tls::ws_server_config(identity).map_err(std::io::Error::other)?)) } else { None };
        let server = WsServer::bind(registry, config.listen, tls_config, ids, config.limits, config.policy.clone())?;
        Ok(WsSide { server, refusal_log: RefusalLog::new(refusals::INTERVAL) })
    }

    /// When the loop must call [`WsSide::turn`] even with no event.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let refusals = self.refusal_log.due(self.server.refusals());
        [self.server.poll_timeout(), refusals].into_iter().flatten().min()
    }
}

impl Node {
    /// The WebSocket listener's address.
    #[must_use]
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws.as_ref().map(|w| w.server.local_addr())
    }

    /// The WebSocket URL clients connect to (`ws://ADDR/confab` or `wss://...`).
    #[must_use]
    pub fn ws_url(&self) -> Option<String> {
        self.ws.as_ref().map(|w| {
            let scheme = if w.server.is_tls() { "wss" } else { "ws" };
            format!("{scheme}://{}{}", w.server.local_addr(), ws::PATH)
        })
    }

    /// The browser client's address (`http://ADDR/` or `https://ADDR/`),
    /// when the WebSocket listener serves it (`ws.web`).
    #[must_use]
    pub fn web_url(&self) -> Option<String> {
        self.ws.as_ref().filter(|w| w.server.serves_site()).map(|w| {
            let scheme = if w.server.is_tls() { "https" } else { "http" };
            format!("{scheme}://{}/", w.server.local_addr())
        })
    }

    /// Hands a mio event to the WebSocket server if it is one of its tokens.
    pub(super) fn ws_event(&mut self, now: Instant, event: &Event, net: &mut Vec<NetEvent>) -> bool {
        let Some(w) = self.ws.as_mut() else { return false };
        if !w.server.owns(event.token()) {
            return false;
        }
        w.server.handle_event(self.poll.registry(), now, event, net);
        true
    }

    /// The WebSocket server's timeouts and refusal log line, once per turn.
    pub(super) fn ws_turn(&mut self, now: Instant, net: &mut Vec<NetEvent>) {
        let Some(w) = self.ws.as_mut() else { return };
        if w.server.poll_timeout().is_some_and(|d| d <= now) {
            w.server.handle_timeout(self.poll.registry(), now, net);
        }
        let s = &w.server;
        w.refusal_log.report_counts(now, "WebSocket", s.refusals(), s.handshaking(), s.len());
    }

    /// Sends frames as one binary message.
    pub(super) fn ws_send(&mut self, conn: ConnId, bytes: Bytes) -> bool {
        self.ws.as_mut().is_some_and(|w| w.server.send(self.poll.registry(), conn, bytes))
    }

    /// Closes with a WebSocket close frame: `4000 + code` for a close the
    /// core asked for, 1013 ("try again later") for a session it refused.
    pub(super) fn ws_close(&mut self, conn: ConnId, code: Option<u16>, reason: &str) {
        let Some(w) = self.ws.as_mut() else { return };
        let code = code.map_or(1013, ws::close_code_for);
        w.server.close(self.poll.registry(), conn, code, reason, &mut self.pending);
    }

    /// Bytes queued for `conn` and not taken by its socket.
    pub(super) fn ws_backlog(&self, conn: ConnId) -> usize {
        self.ws.as_ref().map_or(0, |w| w.server.backlog(conn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_only_on_loopback_unless_allowed_tls_with_a_certificate() {
        let lo = WsConfig::new("127.0.0.1:7702".parse().unwrap());
        assert_eq!(lo.uses_tls(false), Ok(false));
        assert_eq!(lo.uses_tls(true), Ok(true));
        let public = WsConfig::new("0.0.0.0:7702".parse().unwrap());
        assert_eq!(public.uses_tls(false), Ok(true));
        let plain = WsConfig { tls: WsTls::Never, ..public.clone() };
        assert!(matches!(plain.uses_tls(true), Err(WsSetupError::PlainNotLoopback(_))));
        let allowed = WsConfig { allow_plain_non_loopback: true, ..plain };
        assert_eq!(allowed.uses_tls(true), Ok(false));
        let always = WsConfig { tls: WsTls::Always, ..lo };
        assert_eq!(always.uses_tls(false), Ok(true));
    }
}
