//! The connection factory: from the global flags to a [`Link`].
//!
//! Everything above this module (the session loop, the commands) is written
//! against the [`Link`] trait and the [`Connector`] trait, so tests drive the
//! whole CLI logic over an in-process server and the program over TCP+TLS or
//! QUIC. [`connect`] is the only place that knows the real transports.

use std::fmt;
use std::path::PathBuf;

use confab_transports::link::Link;

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
}

impl Default for ConnectOpts {
    fn default() -> Self {
        ConnectOpts { server: DEFAULT_SERVER.to_owned(), transport: Transport::Tcp, trust: Trust::Unset }
    }
}

/// Why no link could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `--server` is not `HOST:PORT`.
    #[error("bad server address {0:?}: expected HOST:PORT, for example 127.0.0.1:7700")]
    BadAddress(String),
    /// Neither `--pin` nor `--ca`.
    #[error("no way to authenticate the server: pass --pin PIN (printed by the server at first start) or --ca FILE")]
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
    /// This build cannot make this kind of link.
    #[error("the {0} transport is not available in this build")]
    Unsupported(Transport),
}

impl ConnectError {
    /// What the user can do about it.
    #[must_use]
    pub fn hint(&self) -> &'static str {
        match self {
            ConnectError::BadAddress(_) => "pass --server HOST:PORT",
            ConnectError::NoTrust => "copy the pin the server printed and pass --pin PIN",
            ConnectError::Ca { .. } => "check the --ca path",
            ConnectError::Io { .. } => "check that the server runs and listens on that address and transport",
            ConnectError::Unsupported(_) => "try the other --transport",
        }
    }
}

/// Makes links to one server: the real one from [`ConnectOpts`], or a test double.
pub trait Connector {
    /// A new, connected link.
    fn connect(&mut self) -> Result<Box<dyn Link>, ConnectError>;

    /// `HOST:PORT` of the server (names the profile).
    fn server(&self) -> &str;
}

impl Connector for ConnectOpts {
    fn connect(&mut self) -> Result<Box<dyn Link>, ConnectError> {
        connect(self)
    }

    fn server(&self) -> &str {
        &self.server
    }
}

/// Checks the options and opens a link over the chosen transport.
pub fn connect(opts: &ConnectOpts) -> Result<Box<dyn Link>, ConnectError> {
    check_address(&opts.server)?;
    if opts.trust == Trust::Unset {
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

// ---- TO WIRE (lead): the real transports ----
//
// `confab_transports::tcp::connect` / `confab_transports::quic::connect` with
// a `confab_transports::tls::client_config(ClientTrust::..)` built from
// `opts.trust` (`Trust::Pin(pin)` / `Trust::Ca(path)`), mapping their errors
// to `ConnectError::Io { server, transport, source }`. This is the only
// function that returns `Unsupported`.
fn open_transport(opts: &ConnectOpts) -> Result<Box<dyn Link>, ConnectError> {
    Err(ConnectError::Unsupported(opts.transport))
}

#[cfg(test)]
mod tests {
    use super::*;

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
