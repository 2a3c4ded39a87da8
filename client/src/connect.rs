//! The connection factory: from the global flags to a [`Link`].
//!
//! Everything above this module (the session loop, the commands) is written
//! against the [`Link`] trait and the [`Connector`] trait, so tests drive the
//! whole CLI logic over an in-process server and the program over TCP+TLS or
//! QUIC. [`connect`] is the only place that knows the real transports.

use std::fmt;
use std::net::ToSocketAddrs as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use confab_transports::link::Link;
use confab_transports::tls::{self, ClientTrust, Pin};
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
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
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
    /// `HOST:PORT`.
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
    /// `--server` is not `HOST:PORT`.
    #[error("bad server address {0:?}: expected HOST:PORT, for example 127.0.0.1:7700")]
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
        Ok(_) => Err(ConnectError::Tls("the server accepted a pin no key has".into())),
    }
}

/// Checks the options and opens a link over the chosen transport.
pub fn connect(opts: &ConnectOpts) -> Result<Box<dyn Link>, ConnectError> {
    check_address(&opts.server)?;
    if matches!(opts.trust, Trust::Unset | Trust::FirstUse) {
        return Err(ConnectError::NoTrust);
    }
    if let Trust::Ca(path) = &opts.trust
        && let Err(source) = std::fs::metadata(path)
    {
        return Err(ConnectError::Ca { path: path.clone(), source });
    }
    open_transport(opts)
}

/// `HOST:PORT` with a numeric port.
pub fn check_address(server: &str) -> Result<(), ConnectError> {
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
    let io = |source: std::io::Error| classify(&opts.server, opts.transport, source);
    let addr = opts
        .server
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
    let host = opts.server.rsplit_once(':').map_or(opts.server.as_str(), |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(match opts.transport {
        Transport::Tcp => {
            Box::new(tcp::connect(addr, tls::server_name(host), Arc::new(config), CONNECT_TIMEOUT).map_err(io)?)
        }
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
        for bad in ["", "host", ":7700", "host:", "host:99999", "host:port"] {
            assert!(matches!(check_address(bad), Err(ConnectError::BadAddress(_))), "{bad}");
        }
        let opts = ConnectOpts::default();
        assert!(matches!(connect(&opts), Err(ConnectError::NoTrust)));
        let opts = ConnectOpts { trust: Trust::Ca("/nonexistent/ca.pem".into()), ..ConnectOpts::default() };
        assert!(matches!(connect(&opts), Err(ConnectError::Ca { .. })));
    }
}
