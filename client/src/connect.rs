//! The connection factory: from the global flags to a [`Link`].
//!
//! Everything above this module (the session loop, the commands) is written
//! against the [`Link`] trait and the [`Connector`] trait, so tests drive the
//! whole CLI logic over an in-process server and the program over TCP+TLS or
//! QUIC or WebSocket. [`connect`] is the only place that knows the real transports.

use std::fmt;
use std::net::ToSocketAddrs as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use confab_transports::link::Link;
use confab_transports::tls::{self, ClientTrust, Pin};
use confab_transports::ws::{self, WsUrl};
use confab_transports::{quic, tcp};

/// The default server address.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7700";

/// Which transport carries the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP + TLS 1.3.
    #[default]
    Tcp,
    /// QUIC (ALPN `confab/1`).
    Quic,
    /// WebSocket: `--server ws://HOST:PORT` or `wss://HOST:PORT`, or derived
    /// from `HOST:PORT` ([`ws_url`]).
    Ws,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
            Transport::Ws => "ws",
        })
    }
}

/// How the server's certificate is trusted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Trust {
    /// The SHA-256 of the server certificate's SubjectPublicKeyInfo, as the
    /// server prints it at first start (`sha256//` + base64, parsed by
    /// `confab_transports::tls::Pin::from_str`).
    Pin(String),
    /// A PEM file with the CA (or the self-signed certificate) to trust.
    Ca(PathBuf),
    /// Neither flag given: the connection is refused (there is no implicit trust).
    #[default]
    Unset,
    /// `--trust-on-first-use` (at `register`/`login`, with no pin): the key
    /// the server presents now is pinned, and its pin printed to compare
    /// with the one the server printed.
    FirstUse,
}

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOpts {
    /// `HOST:PORT`, or a `ws://` / `wss://` URL (which implies [`Transport::Ws`]).
    pub server: String,
    /// TCP or QUIC.
    pub transport: Transport,
    /// How the server is authenticated.
    pub trust: Trust,
    /// The pin trusted on first use, until taken ([`Connector::take_first_use`]).
    pub first_use: Option<String>,
}

impl Default for ConnectOpts {
    fn default() -> Self {
        ConnectOpts {
            server: DEFAULT_SERVER.to_owned(),
            transport: Transport::Tcp,
            trust: Trust::Unset,
            first_use: None,
        }
    }
}

/// Why no link could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `--server` is not `HOST:PORT` (nor a WebSocket URL).
    #[error(
        "bad server address {0:?}: expected HOST:PORT, for example 127.0.0.1:7700 (or ws://HOST:PORT, wss://HOST:PORT for WebSocket)"
    )]
    BadAddress(String),
    /// Neither `--pin` nor `--ca`, and none remembered by the profile.
    #[error(
        "no way to authenticate the server: no --pin or --ca given, and the profile remembers none (it does after a `register` or `login`)"
    )]
    NoTrust,
    /// The CA file could not be read.
    #[error("cannot read the CA file {path}: {source}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The transport failed to connect (refused, unreachable, TLS/QUIC handshake, pin mismatch).
    #[error("cannot connect to {server} over {transport}: {source}")]
    Io {
        /// The address.
        server: String,
        /// The transport.
        transport: Transport,
        /// Why.
        source: std::io::Error,
    },
    /// Nothing listens at the address (QUIC: the host answered "port unreachable").
    #[error("nothing answers at {server} over QUIC: the host says no program listens on that UDP port")]
    NothingListens {
        /// The address.
        server: String,
    },
    /// The server presented a key other than the pinned one.
    #[error("the key of {server} changed: {detail}")]
    KeyChanged {
        /// The address.
        server: String,
        /// What the TLS layer said (the presented and the pinned key).
        detail: String,
    },
    /// Plain `ws://` (no TLS) to an address that is not loopback.
    #[error(
        "refusing plain ws:// to {addr} ({server}), which is not a loopback address: without TLS the password and session would cross the network in the clear, and no pin can be checked"
    )]
    PlainWsNotLoopback {
        /// The address as given.
        server: String,
        /// What it resolved to.
        addr: std::net::SocketAddr,
    },
    /// `--pin` is not a pin.
    #[error("bad --pin: {0}")]
    BadPin(String),
    /// The TLS configuration cannot be made (an unusable CA certificate).
    #[error("TLS setup: {0}")]
    Tls(String),
}

impl ConnectError {
    /// What the user can do about it.
    #[must_use]
    pub fn hint(&self) -> &'static str {
        match self {
            ConnectError::BadAddress(_) => "pass --server HOST:PORT",
            ConnectError::NoTrust => {
                "get the server's pin from its operator (the server prints it at start and keeps it in DATA/server.pin) and pass --pin PIN or set CONFAB_PIN; or run `confab register USER --trust-on-first-use` (or `login`) to trust the key the server presents now, then compare the pin it prints with the operator's"
            }
            ConnectError::Ca { .. } => "check the --ca path",
            ConnectError::Io { .. } => "check that the server runs and listens on that address and transport",
            ConnectError::NothingListens { .. } => {
                "check that the server runs, and the address and port (its QUIC listener: --quic-listen or --listen)"
            }
            ConnectError::KeyChanged { .. } => {
                "the server presents another key than your pin: if its operator replaced the key (a new data directory or certificate), get the new pin from them (DATA/server.pin) and pass it with --pin (or CONFAB_PIN) and --switch-server; otherwise do not connect, someone may be in the middle"
            }
            ConnectError::PlainWsNotLoopback { .. } => {
                "use wss://HOST:PORT (TLS, with --pin or --ca), or --transport tcp or quic; plain ws:// is for a server on this machine"
            }
            ConnectError::BadPin(_) => "copy the pin exactly as the server printed it (or from DATA/server.pin)",
            ConnectError::Tls(_) => "check the --ca file: it must hold the server's certificate or its CA, in PEM",
        }
    }
}

/// Makes links to one server: the real one from [`ConnectOpts`], or a test double.
pub trait Connector {
    /// A new, connected link.
    fn connect(&mut self) -> Result<Box<dyn Link>, ConnectError>;

    /// `HOST:PORT` of the server (names the profile).
    fn server(&self) -> &str;

    /// How the server is trusted (what a profile remembers; `Unset` for a test double).
    fn trust(&self) -> Trust {
        Trust::Unset
    }

    /// The pin trusted on first use by the last connection, once.
    fn take_first_use(&mut self) -> Option<String> {
        None
    }
}

impl Connector for ConnectOpts {
    fn connect(&mut self) -> Result<Box<dyn Link>, ConnectError> {
        if self.trust == Trust::FirstUse {
            let pin = probe_pin(self)?;
            self.trust = Trust::Pin(pin.clone());
            self.first_use = Some(pin);
        }
        connect(self)
    }

    fn server(&self) -> &str {
        &self.server
    }

    fn trust(&self) -> Trust {
        self.trust.clone()
    }

    fn take_first_use(&mut self) -> Option<String> {
        self.first_use.take()
    }
}

/// The pin of the key the server presents: a handshake against a pin no key
/// has (all zeros) fails with the presented key's pin in its error; the real
/// connection is then made with that pin, so the server must prove it holds
/// the key, as with any pin.
fn probe_pin(opts: &ConnectOpts) -> Result<String, ConnectError> {
    let zeros = format!("sha256//{}=", "A".repeat(43));
    let probe = ConnectOpts { trust: Trust::Pin(zeros), first_use: None, ..opts.clone() };
    match connect(&probe) {
        Err(ConnectError::KeyChanged { detail, .. }) => detail
            .strip_prefix("server key ")
            .and_then(|d| d.split_whitespace().next())
            .map(str::to_owned)
            .ok_or_else(|| ConnectError::Tls(format!("cannot read the server's key: {detail}"))),
        Err(e) => Err(e),
        Ok(_) if ws_url(opts).is_some_and(|u| !u.tls) => Err(ConnectError::Tls(
            "plain ws:// has no TLS, so there is no key to trust: connect over wss://, tcp or quic to pin the server"
                .into(),
        )),
        Ok(_) => Err(ConnectError::Tls("the server accepted a pin no key has".into())),
    }
}

/// Checks the options and opens a link over the chosen transport.
pub fn connect(opts: &ConnectOpts) -> Result<Box<dyn Link>, ConnectError> {
    check_address(&opts.server)?;
    let plain_ws = ws_url(opts).is_some_and(|u| !u.tls);
    if matches!(opts.trust, Trust::Unset | Trust::FirstUse) && !(plain_ws && opts.trust == Trust::Unset) {
        return Err(ConnectError::NoTrust);
    }
    if let Trust::Ca(path) = &opts.trust
        && let Err(source) = std::fs::metadata(path)
    {
        return Err(ConnectError::Ca { path: path.clone(), source });
    }
    open_transport(opts)
}

/// The WebSocket URL a connection goes to: `--server` when it is one;
/// else, for [`Transport::Ws`], `HOST:PORT` gives `ws://HOST:PORT+2/confab`
/// on a loopback host (the server's default: plain on loopback, port + 2)
/// and `wss://HOST:PORT+2/confab` elsewhere. `None`: not WebSocket.
#[must_use]
pub fn ws_url(opts: &ConnectOpts) -> Option<WsUrl> {
    if let Ok(url) = opts.server.parse::<WsUrl>() {
        return Some(url);
    }
    if opts.transport != Transport::Ws {
        return None;
    }
    let (host, port) = opts.server.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse::<u16>().ok()?.checked_add(2)?;
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    Some(WsUrl { tls: !loopback, host: host.to_owned(), port, path: ws::PATH.to_owned() })
}

/// `HOST:PORT` with a numeric port, or a `ws://` / `wss://` URL.
pub fn check_address(server: &str) -> Result<(), ConnectError> {
    if server.starts_with("ws://") || server.starts_with("wss://") {
        return server.parse::<WsUrl>().map(|_| ()).map_err(|_| ConnectError::BadAddress(server.to_owned()));
    }
    let bad = || ConnectError::BadAddress(server.to_owned());
    let (host, port) = server.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

/// How long a connection (TCP + TLS handshake, or QUIC handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The first QUIC handshake attempt: past it, a closed port is looked for
/// ([`port_unreachable`]) before the rest of [`CONNECT_TIMEOUT`] is spent.
const QUIC_FIRST_ATTEMPT: Duration = Duration::from_secs(1);

/// Whether the host at `addr` says (ICMP port unreachable) that nothing
/// listens on that UDP port: one empty-looking datagram (a QUIC server drops
/// it) on a connected UDP socket, whose next receive fails with
/// `ConnectionRefused` when the ICMP error arrives. No answer (a server that
/// listens, or a network that drops ICMP) is `false`.
fn port_unreachable(addr: std::net::SocketAddr) -> bool {
    let local: std::net::SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let Ok(socket) = std::net::UdpSocket::bind(local) else { return false };
    if socket.connect(addr).is_err() || socket.set_read_timeout(Some(Duration::from_millis(500))).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    for _ in 0..2 {
        match socket.send(&[0]) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return true,
            Err(_) => return false,
            Ok(_) => {}
        }
        match socket.recv(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return true,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            _ => {}
        }
    }
    false
}

/// The error of a failed connection: a pin mismatch (the TLS verifier's
/// "does not match the pinned key") is [`ConnectError::KeyChanged`], whose
/// hint says how to re-pin; anything else is [`ConnectError::Io`].
#[must_use]
pub fn classify(server: &str, transport: Transport, source: std::io::Error) -> ConnectError {
    let text = source.to_string();
    if text.contains("does not match the pinned key") {
        let detail = text.rsplit_once("server key ").map_or(text.clone(), |(_, d)| format!("server key {d}"));
        return ConnectError::KeyChanged { server: server.to_owned(), detail };
    }
    ConnectError::Io { server: server.to_owned(), transport, source }
}

/// Resolves the address, builds the TLS configuration from the trust
/// flags and connects over the chosen transport.
fn open_transport(opts: &ConnectOpts) -> Result<Box<dyn Link>, ConnectError> {
    let url = ws_url(opts);
    let transport = if url.is_some() { Transport::Ws } else { opts.transport };
    let io = |source: std::io::Error| classify(&opts.server, transport, source);
    let authority = url.as_ref().map_or_else(|| opts.server.clone(), WsUrl::authority);
    if let Some(url) = url.as_ref().filter(|u| !u.tls) {
        let addr = resolve(&authority).map_err(io)?;
        if !addr.ip().is_loopback() {
            return Err(ConnectError::PlainWsNotLoopback { server: opts.server.clone(), addr });
        }
        return Ok(Box::new(ws::connect(addr, url, None, CONNECT_TIMEOUT).map_err(io)?));
    }
    let addr = authority
        .to_socket_addrs()
        .map_err(io)?
        .next()
        .ok_or_else(|| io(std::io::Error::new(std::io::ErrorKind::NotFound, "the name resolves to no address")))?;
    let trust = match &opts.trust {
        Trust::Pin(pin) => ClientTrust::Pin(pin.parse::<Pin>().map_err(|e| ConnectError::BadPin(e.to_string()))?),
        Trust::Ca(path) => {
            let pem = std::fs::read(path).map_err(|source| ConnectError::Ca { path: path.clone(), source })?;
            ClientTrust::Ca(tls::certificates_from_pem(&pem).map_err(|e| ConnectError::Tls(e.to_string()))?)
        }
        Trust::Unset | Trust::FirstUse => return Err(ConnectError::NoTrust),
    };
    let config = tls::client_config(&trust).map_err(|e| ConnectError::Tls(e.to_string()))?;
    let host = authority.rsplit_once(':').map_or(authority.as_str(), |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Some(url) = &url {
        let config = tls::ws_client_config(&trust).map_err(|e| ConnectError::Tls(e.to_string()))?;
        let tls = Some((tls::server_name(host), Arc::new(config)));
        return Ok(Box::new(ws::connect(addr, url, tls, CONNECT_TIMEOUT).map_err(io)?));
    }
    Ok(match opts.transport {
        Transport::Tcp => {
            Box::new(tcp::connect(addr, tls::server_name(host), Arc::new(config), CONNECT_TIMEOUT).map_err(io)?)
        }
        Transport::Ws => unreachable!("a WebSocket URL was made above"),
        Transport::Quic => {
            let name = tls::server_name(host).to_str().into_owned();
            // QUIC gets no refusal from a closed port (no RST): a first,
            // short handshake attempt, and if it gets no answer, a look for
            // an ICMP "port unreachable" before waiting any longer.
            match quic::connect(addr, &name, config.clone(), QUIC_FIRST_ATTEMPT) {
                Ok(link) => Box::new(link),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    if port_unreachable(addr) {
                        return Err(ConnectError::NothingListens { server: opts.server.clone() });
                    }
                    Box::new(quic::connect(addr, &name, config, CONNECT_TIMEOUT - QUIC_FIRST_ATTEMPT).map_err(io)?)
                }
                Err(e) => return Err(io(e)),
            }
        }
    })
}

/// The first address `authority` (`HOST:PORT`) resolves to.
fn resolve(authority: &str) -> std::io::Result<std::net::SocketAddr> {
    authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "the name resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_mismatch_says_the_key_changed_and_how_to_re_pin() {
        let tls = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "unexpected error: server key sha256//bbbb does not match the pinned key sha256//aaaa",
        );
        let e = classify("h:1", Transport::Tcp, tls);
        assert!(matches!(e, ConnectError::KeyChanged { .. }), "{e:?}");
        assert!(e.to_string().contains("key of h:1 changed"), "{e}");
        assert!(e.hint().contains("new pin") && !e.hint().contains("server runs"), "{}", e.hint());
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(matches!(classify("h:1", Transport::Quic, refused), ConnectError::Io { .. }));
    }

    #[test]
    fn addresses_and_trust_are_checked_before_any_socket() {
        assert!(check_address("127.0.0.1:7700").is_ok());
        assert!(check_address("[::1]:7700").is_ok());
        assert!(check_address("ws://127.0.0.1:7702").is_ok());
        assert!(check_address("wss://relay.example:443/confab").is_ok());
        for bad in ["", "host", ":7700", "host:", "host:99999", "host:port", "ws://host", "wss://:1"] {
            assert!(matches!(check_address(bad), Err(ConnectError::BadAddress(_))), "{bad}");
        }
        let opts = ConnectOpts::default();
        assert!(matches!(connect(&opts), Err(ConnectError::NoTrust)));
        let opts = ConnectOpts { trust: Trust::Ca("/nonexistent/ca.pem".into()), ..ConnectOpts::default() };
        assert!(matches!(connect(&opts), Err(ConnectError::Ca { .. })));
    }

    /// Plain `ws://` has no TLS: the docs say it is for loopback only ("no
    /// one else sees loopback traffic"), yet the client connected to any
    /// host, sent the login password in the clear and silently ignored the
    /// `--pin` the user gave (or the profile remembered).
    #[test]
    fn plain_ws_to_a_host_that_is_not_loopback_is_refused_before_any_socket() {
        let zeros = format!("sha256//{}=", "A".repeat(43));
        for trust in [Trust::Unset, Trust::Pin(zeros)] {
            // 192.0.2.1 (TEST-NET-1): an address on a network, not loopback.
            let opts = ConnectOpts {
                server: "ws://192.0.2.1:7702".into(),
                transport: Transport::Ws,
                trust: trust.clone(),
                first_use: None,
            };
            let Err(e) = connect(&opts) else { panic!("{trust:?}: plain ws:// to 192.0.2.1 connected") };
            assert!(
                !matches!(e, ConnectError::Io { .. }) && e.to_string().contains("loopback"),
                "{trust:?}: plain ws:// to a host that is not loopback was attempted: {e}"
            );
        }
    }

    #[test]
    fn the_websocket_url_is_given_or_derived_plain_only_on_loopback() {
        let opts = |server: &str, transport| ConnectOpts { server: server.into(), transport, ..ConnectOpts::default() };
        let url = |server: &str, transport| ws_url(&opts(server, transport)).map(|u| u.to_string());
        assert_eq!(url("127.0.0.1:7700", Transport::Ws).as_deref(), Some("ws://127.0.0.1:7702/confab"));
        assert_eq!(url("localhost:7700", Transport::Ws).as_deref(), Some("ws://localhost:7702/confab"));
        assert_eq!(url("relay.example:7700", Transport::Ws).as_deref(), Some("wss://relay.example:7702/confab"));
        assert_eq!(url("[::1]:7700", Transport::Ws).as_deref(), Some("ws://[::1]:7702/confab"));
        assert_eq!(url("127.0.0.1:7700", Transport::Tcp), None);
        // A URL is used as given, whatever --transport says.
        assert_eq!(
            url("wss://relay.example:443/confab", Transport::Tcp).as_deref(),
            Some("wss://relay.example:443/confab")
        );
        // Plain ws:// needs no trust (there is no TLS to check); wss:// does.
        let plain = opts("ws://127.0.0.1:1", Transport::Ws);
        assert!(matches!(connect(&plain), Err(ConnectError::Io { transport: Transport::Ws, .. })));
        let tls = opts("wss://127.0.0.1:1", Transport::Ws);
        assert!(matches!(connect(&tls), Err(ConnectError::NoTrust)));
    }
}
