//! The connection factory: from the global flags to a [`Link`].
//!
//! Everything above this module (the session loop, the commands) is written
//! against the [`Link`] trait and the [`Connector`] trait, so tests drive the
//! whole CLI logic over an in-process server and the program over TCP+TLS or
//! QUIC or WebSocket. [`connect`] is the only place that knows the real transports.
//!
//! # Several server addresses (cluster mode)
//!
//! `--server` (and `CONFAB_SERVER`, and the server a profile remembers) may
//! name several nodes of one service, separated by commas:
//! `HOST:PORT,HOST:PORT,...`, or only `ws://` URLs, or only `wss://` URLs
//! (one form per list: [`server_list`] refuses a mix, and names the element
//! that is not an address). White space around an element is ignored; an
//! empty element, or one listed twice, is refused. A comma always separates
//! nodes (a WebSocket path cannot contain one).
//!
//! [`ConnectOpts`]'s [`Connector::connect`] tries the nodes in turn and
//! keeps the first link that opens:
//! - order ([`attempt_order`]): the node the last link of this
//!   `ConnectOpts` went to ([`ConnectOpts::last`]) first, then the ones
//!   after it in the list, wrapping around; before any link, the node that
//!   served the profile's last command (each command is a new process: the
//!   profile remembers the node, see [`crate::remember::last_node`], and
//!   the command hands it to [`Connector::start_at`]), else the list's
//!   order. A reconnection (`confab listen`) and the next command thus
//!   first try the node that served last, then the others;
//! - a name that resolves to several addresses is tried address by
//!   address, in the resolver's order;
//! - two passes: with several addresses to try, the first pass gives each
//!   one a short attempt ([`FIRST_ATTEMPT`], 1 s: TCP connect and TLS
//!   handshake, and the WebSocket upgrade; or the QUIC handshake); an
//!   address that fails for good (refused, reset, a failed handshake) is
//!   not tried again, and only the ones that did not answer in time (a
//!   paused node, whose kernel completes the TCP handshake but whose TLS
//!   never answers; a host that drops the SYN; a silent UDP port) get the
//!   rest of [`CONNECT_TIMEOUT`] (10 s), in a second pass, in the same
//!   order. A silent node before a live one so costs about 1 s, not 10.
//!   Over QUIC, where a dead port sends no refusal, an address that did
//!   not answer its first attempt is also asked for an ICMP "port
//!   unreachable" ([`ConnectError::NothingListens`]: not tried again), and
//!   a single address gets the two attempts too. A single TCP or WebSocket
//!   address gets one attempt with the whole 10 s;
//! - a node that closes a connection as misdirected (421: a node of a
//!   split state that does not serve the user's partition,
//!   docs/PARTITIONS.md) sends the client on to the next node of the list
//!   ([`Connector::misdirected`]): the request that was refused there
//!   (`register`, `login`, the refresh that resumes a session, `code
//!   verify`) is sent again to the next node, each node once per round,
//!   with a pause between rounds (a partition moving between nodes), until
//!   the answer timeout; `listen` reconnects to the next node;
//! - a key other than the pinned one ([`ConnectError::KeyChanged`]) ends
//!   the search at once: it is a security event (someone in the middle, or
//!   an operator who replaced the key), never skipped in favour of another
//!   node. So do the errors of the configuration itself (no trust, a bad
//!   pin or CA file, plain `ws://` to a host that is not loopback);
//! - when every address fails, [`ConnectError::Unreachable`] names each one
//!   with its own reason (with a single address, its error as it is).
//!
//! All the nodes of a service must present the same key (the same TLS
//! certificate, or certificates of one key pair): one pin (or one CA) is
//! checked against every node, and `--trust-on-first-use` pins the key of
//! the first node that answers. A node presenting another key is refused
//! as a changed key.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use confab_transports::link::Link;
use confab_transports::tls::{self, ClientTrust, Pin};
use confab_transports::ws::{self, WsUrl};
use confab_transports::{quic, tcp};

/// The default server address.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7700";

/// Separates the nodes of a server list (`HOST:PORT,HOST:PORT`).
pub const SEPARATOR: char = ',';

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
    /// `HOST:PORT`, or a `ws://` / `wss://` URL (which implies
    /// [`Transport::Ws`]), or several of one form separated by commas: the
    /// nodes of one service ([`server_list`]).
    pub server: String,
    /// TCP or QUIC.
    pub transport: Transport,
    /// How the server is authenticated.
    pub trust: Trust,
    /// The pin trusted on first use, until taken ([`Connector::take_first_use`]).
    pub first_use: Option<String>,
    /// The position in [`server_list`] of the node the last link went to
    /// (the first node that answered the probe, with trust on first use),
    /// or, before any link, of the node the profile remembers
    /// ([`Connector::start_at`]): the next connection tries it first
    /// ([`attempt_order`]). `None`: no link yet, nothing remembered (a new
    /// process sets `None`; the command sets it from the profile).
    pub last: Option<usize>,
}

impl Default for ConnectOpts {
    fn default() -> Self {
        ConnectOpts {
            server: DEFAULT_SERVER.to_owned(),
            transport: Transport::Tcp,
            trust: Trust::Unset,
            first_use: None,
            last: None,
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
    /// A `--server` list (`HOST:PORT,HOST:PORT,...`) with an element that is
    /// not an address, an empty element, one listed twice, or a mix of forms.
    #[error("bad server list {list:?}: {problem}")]
    BadList {
        /// The list as given.
        list: String,
        /// What is wrong, naming the element.
        problem: String,
    },
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
    /// Every address of the server (every node of a list, every address a
    /// name resolves to) failed; each error names its address.
    #[error("cannot connect to any address of the server ({} tried): {}", .tried.len(), numbered(.tried))]
    Unreachable {
        /// One error per address tried, in the order they were tried.
        tried: Vec<ConnectError>,
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
        addr: SocketAddr,
    },
    /// `--pin` is not a pin.
    #[error("bad --pin: {0}")]
    BadPin(String),
    /// The TLS configuration cannot be made (an unusable CA certificate).
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// `1) first; 2) second; ...`
fn numbered(errors: &[ConnectError]) -> String {
    let items: Vec<String> = errors.iter().enumerate().map(|(i, e)| format!("{}) {e}", i + 1)).collect();
    items.join("; ")
}

impl ConnectError {
    /// What the user can do about it.
    #[must_use]
    pub fn hint(&self) -> &'static str {
        match self {
            ConnectError::BadAddress(_) => {
                "pass --server HOST:PORT (or the nodes of one service as HOST:PORT,HOST:PORT,...)"
            }
            ConnectError::BadList { .. } => {
                "pass the nodes of one service separated by commas, all of one form: HOST:PORT,HOST:PORT,... (the transport comes from --transport), or only ws:// URLs, or only wss:// URLs"
            }
            ConnectError::NoTrust => {
                "get the server's pin from its operator (the server prints it at start and keeps it in DATA/server.pin) and pass --pin PIN or set CONFAB_PIN; or run `confab register USER --trust-on-first-use` (or `login`) to trust the key the server presents now, then compare the pin it prints with the operator's"
            }
            ConnectError::Ca { .. } => "check the --ca path",
            ConnectError::Io { .. } => "check that the server runs and listens on that address and transport",
            ConnectError::NothingListens { .. } => {
                "check that the server runs, and the address and port (its QUIC listener: --quic-listen or --listen)"
            }
            ConnectError::Unreachable { .. } => {
                "no address of the server took the connection, each for the reason given: check that at least one node of the service runs and listens on its address and transport (--transport), and that --server (or CONFAB_SERVER) lists its current nodes"
            }
            ConnectError::KeyChanged { .. } => {
                "the server presents another key than your pin: if its operator replaced the key (a new data directory or certificate), get the new pin from them (DATA/server.pin) and pass it with --pin (or CONFAB_PIN) and --switch-server; with several nodes, every node must present the same key; otherwise do not connect, someone may be in the middle"
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

    /// `HOST:PORT` of the server, or the list of its nodes (names the profile).
    fn server(&self) -> &str;

    /// The node (one element of [`Connector::server`]) the last link that
    /// opened went to; `None` before any, or when the connector cannot tell.
    fn connected_to(&self) -> Option<&str> {
        None
    }

    /// Makes `node` (one element of [`Connector::server`], as
    /// [`Connector::connected_to`] names it: the node that served an
    /// earlier process, which the profile remembers) the first one tried,
    /// unless a link of this connector already opened (the node of that
    /// link is fresher news). A `node` that is not an element of the list
    /// is ignored. Whether it was taken.
    fn start_at(&mut self, node: &str) -> bool {
        let _ = node;
        false
    }

    /// The node the last link went to closed it as misdirected (421: it
    /// does not serve the user's partition of a split state): the next
    /// [`connect`](Connector::connect) starts at the node after it in the
    /// list. How many nodes the list names (1: there is nowhere else to go).
    fn misdirected(&mut self) -> usize {
        1
    }

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
    /// Tries the nodes in turn, from the one that served last ([`attempt_order`]),
    /// and remembers which one took the link.
    fn connect(&mut self) -> Result<Box<dyn Link>, ConnectError> {
        if self.trust == Trust::FirstUse {
            let (pin, node) = probe_pin(self)?;
            self.trust = Trust::Pin(pin.clone());
            self.first_use = Some(pin);
            // The real connection goes to the node whose key was pinned first.
            self.last = Some(node);
        }
        let (node, link) = open(self).map_err(|failed| failed.error)?;
        self.last = Some(node);
        Ok(link)
    }

    fn server(&self) -> &str {
        &self.server
    }

    fn connected_to(&self) -> Option<&str> {
        self.last.and_then(|i| split_servers(&self.server).nth(i))
    }

    fn start_at(&mut self, node: &str) -> bool {
        if self.last.is_some() {
            return false;
        }
        self.last = split_servers(&self.server).position(|n| n == node);
        self.last.is_some()
    }

    fn misdirected(&mut self) -> usize {
        let nodes = split_servers(&self.server).count();
        self.last = Some(self.last.map_or(0, |i| (i + 1) % nodes.max(1)));
        nodes
    }

    fn trust(&self) -> Trust {
        self.trust.clone()
    }

    fn take_first_use(&mut self) -> Option<String> {
        self.first_use.take()
    }
}

/// The pin of the key the server presents, and which node presented it: a
/// handshake against a pin no key has (all zeros) fails with the presented
/// key's pin in its error, at the first node that answers (the others are
/// tried as for any connection); the real connection is then made with
/// that pin, so the server must prove it holds the key, as with any pin.
fn probe_pin(opts: &ConnectOpts) -> Result<(String, usize), ConnectError> {
    let zeros = format!("sha256//{}=", "A".repeat(43));
    let probe = ConnectOpts { trust: Trust::Pin(zeros), first_use: None, ..opts.clone() };
    match open(&probe) {
        Err(Failed { node: Some(node), error: ConnectError::KeyChanged { detail, .. } }) => detail
            .strip_prefix("server key ")
            .and_then(|d| d.split_whitespace().next())
            .map(|pin| (pin.to_owned(), node))
            .ok_or_else(|| ConnectError::Tls(format!("cannot read the server's key: {detail}"))),
        Err(failed) => Err(failed.error),
        Ok((node, _)) if node_ws_url(&probe, node).is_some_and(|u| !u.tls) => Err(ConnectError::Tls(
            "plain ws:// has no TLS, so there is no key to trust: connect over wss://, tcp or quic to pin the server"
                .into(),
        )),
        Ok(_) => Err(ConnectError::Tls("the server accepted a pin no key has".into())),
    }
}

/// Checks the options and opens a link over the chosen transport, to the
/// first node of the list that takes it ([`attempt_order`]).
pub fn connect(opts: &ConnectOpts) -> Result<Box<dyn Link>, ConnectError> {
    open(opts).map(|(_, link)| link).map_err(|failed| failed.error)
}

/// The WebSocket URL a connection goes to: `--server` when it is one;
/// else, for [`Transport::Ws`], `HOST:PORT` gives `ws://HOST:PORT+2/confab`
/// on a loopback host (the server's default: plain on loopback, port + 2)
/// and `wss://HOST:PORT+2/confab` elsewhere. `None`: not WebSocket. Of a
/// list, the first node's.
#[must_use]
pub fn ws_url(opts: &ConnectOpts) -> Option<WsUrl> {
    node_ws_url(opts, 0)
}

/// [`ws_url`] of the node at `index` in `opts.server`.
fn node_ws_url(opts: &ConnectOpts, index: usize) -> Option<WsUrl> {
    let server = split_servers(&opts.server).nth(index)?;
    if let Ok(url) = server.parse::<WsUrl>() {
        return Some(url);
    }
    if opts.transport != Transport::Ws {
        return None;
    }
    let (host, port) = server.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse::<u16>().ok()?.checked_add(2)?;
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    Some(WsUrl { tls: !loopback, host: host.to_owned(), port, path: ws::PATH.to_owned() })
}

/// `HOST:PORT` with a numeric port, or a `ws://` / `wss://` URL; or a list
/// of them separated by commas ([`server_list`]).
pub fn check_address(server: &str) -> Result<(), ConnectError> {
    server_list(server).map(drop)
}

/// One address: `HOST:PORT` with a numeric port, or a `ws://` / `wss://` URL.
fn check_one(server: &str) -> Result<(), ConnectError> {
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

/// The form of one address: a list holds only one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    HostPort,
    Ws,
    Wss,
}

impl Form {
    fn of(server: &str) -> Form {
        if server.starts_with("wss://") {
            Form::Wss
        } else if server.starts_with("ws://") {
            Form::Ws
        } else {
            Form::HostPort
        }
    }

    fn name(self) -> &'static str {
        match self {
            Form::HostPort => "HOST:PORT",
            Form::Ws => "a plain ws:// URL",
            Form::Wss => "a wss:// URL",
        }
    }
}

/// The elements of a server value split at commas, white space around each
/// trimmed; not checked (see [`server_list`]).
pub fn split_servers(server: &str) -> impl Iterator<Item = &str> {
    server.split(SEPARATOR).map(str::trim)
}

/// The nodes a server value names, checked: one address ([`check_address`]'s
/// error, [`ConnectError::BadAddress`], if it is not one), or several
/// separated by commas, each an address, none empty or listed twice, all
/// `HOST:PORT` or all `ws://` URLs or all `wss://` URLs (else
/// [`ConnectError::BadList`], naming the element). White space around an
/// element is dropped.
pub fn server_list(server: &str) -> Result<Vec<String>, ConnectError> {
    if !server.contains(SEPARATOR) {
        let one = server.trim();
        check_one(one).map_err(|_| ConnectError::BadAddress(server.to_owned()))?;
        return Ok(vec![one.to_owned()]);
    }
    let bad = |problem: String| ConnectError::BadList { list: server.to_owned(), problem };
    let mut nodes: Vec<String> = Vec::new();
    for (i, element) in split_servers(server).enumerate() {
        let n = i + 1;
        if element.is_empty() {
            return Err(bad(format!("element {n} is empty (a comma too many?)")));
        }
        if check_one(element).is_err() {
            return Err(bad(format!(
                "element {n}, {element:?}, is not HOST:PORT (for example 127.0.0.1:7700) nor a ws:// or wss:// URL"
            )));
        }
        if nodes.iter().any(|node| node == element) {
            return Err(bad(format!("{element} is listed twice")));
        }
        if let Some(first) = nodes.first()
            && Form::of(first) != Form::of(element)
        {
            return Err(bad(format!(
                "it mixes forms: {first:?} is {} but {element:?} is {}",
                Form::of(first).name(),
                Form::of(element).name()
            )));
        }
        nodes.push(element.to_owned());
    }
    Ok(nodes)
}

/// The server value as the client keeps it: [`server_list`]'s nodes joined
/// by commas (no white space), so that one list is always written the same.
pub fn normalize_server(server: &str) -> Result<String, ConnectError> {
    Ok(server_list(server)?.join(","))
}

/// Whether two server values name the same nodes, whatever their order
/// (the order only says which node to try first): a list is the same
/// server as itself reordered, and another server once a node is added or
/// removed.
#[must_use]
pub fn same_server(a: &str, b: &str) -> bool {
    fn sorted(s: &str) -> Vec<&str> {
        let mut nodes: Vec<&str> = split_servers(s).collect();
        nodes.sort_unstable();
        nodes
    }
    sorted(a) == sorted(b)
}

/// The order in which the `len` nodes of a list are tried: from the one at
/// `last` (the node of the last link), then the ones after it, wrapping
/// around; from the first without a `last` (or with one out of the list).
#[must_use]
pub fn attempt_order(len: usize, last: Option<usize>) -> Vec<usize> {
    let start = last.filter(|&i| i < len).unwrap_or(0);
    (0..len).map(|k| (start + k) % len).collect()
}

/// How long a connection may take in all: the TCP connect and TLS
/// handshake (and WebSocket upgrade), or the QUIC handshake. A lone TCP or
/// WebSocket address (one node whose name has one address) gets it in one
/// attempt; otherwise each address first gets [`FIRST_ATTEMPT`], and the
/// ones that did not answer get the rest in a second pass.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The first pass's attempt at each address, over any transport when there
/// are several addresses to try, and over QUIC always: an address that does
/// not answer within it (a paused node whose kernel completes the TCP
/// handshake, a dropped SYN, a silent UDP port) is passed over, and gets the
/// rest of [`CONNECT_TIMEOUT`] in a second pass, once every other address
/// had its first attempt. Over QUIC, the host's ICMP "port unreachable" is
/// looked for in between ([`ConnectError::NothingListens`]).
pub const FIRST_ATTEMPT: Duration = Duration::from_secs(1);

/// Whether the host at `addr` says (ICMP port unreachable) that nothing
/// listens on that UDP port: one empty-looking datagram (a QUIC server drops
/// it) on a connected UDP socket, whose next receive fails with
/// `ConnectionRefused` when the ICMP error arrives. No answer (a server that
/// listens, or a network that drops ICMP) is `false`.
fn port_unreachable(addr: SocketAddr) -> bool {
    let local: SocketAddr = if addr.is_ipv4() {
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

/// Why [`open`] failed, and the node concerned when the error is one
/// node's (a pin mismatch: [`probe_pin`] pins that node's key).
#[derive(Debug)]
struct Failed {
    node: Option<usize>,
    error: ConnectError,
}

impl From<ConnectError> for Failed {
    fn from(error: ConnectError) -> Self {
        Failed { node: None, error }
    }
}

/// One address of one node: what an attempt at it needs.
struct Target {
    /// Its node's position in the list.
    node: usize,
    addr: SocketAddr,
    /// The transport of the attempt ([`Transport::Ws`] with a `url`).
    transport: Transport,
    /// The WebSocket URL, for [`Transport::Ws`].
    url: Option<WsUrl>,
    /// The host the name of the TLS server comes from.
    host: String,
    /// The address in errors.
    label: String,
}

impl Target {
    /// Whether the attempt is a QUIC handshake.
    fn quic(&self) -> bool {
        self.url.is_none() && self.transport != Transport::Tcp
    }
}

/// The rustls configuration of `trust` (`None`: nothing to trust).
fn client_trust(trust: &Trust) -> Result<Option<ClientTrust>, ConnectError> {
    Ok(Some(match trust {
        Trust::Pin(pin) => ClientTrust::Pin(pin.parse::<Pin>().map_err(|e| ConnectError::BadPin(e.to_string()))?),
        Trust::Ca(path) => {
            let pem = std::fs::read(path).map_err(|source| ConnectError::Ca { path: path.clone(), source })?;
            ClientTrust::Ca(tls::certificates_from_pem(&pem).map_err(|e| ConnectError::Tls(e.to_string()))?)
        }
        Trust::Unset | Trust::FirstUse => return Ok(None),
    }))
}

/// Checks the options, builds the TLS configuration from the trust flags,
/// and tries the nodes ([`attempt_order`]), each address their names
/// resolve to in turn, over the chosen transport: the node and the first
/// link that opens, or why none did (see the module's documentation).
fn open(opts: &ConnectOpts) -> Result<(usize, Box<dyn Link>), Failed> {
    let nodes = server_list(&opts.server)?;
    let urls: Vec<Option<WsUrl>> = (0..nodes.len()).map(|i| node_ws_url(opts, i)).collect();
    let all_plain = urls.iter().all(|u| u.as_ref().is_some_and(|u| !u.tls));
    if matches!(opts.trust, Trust::Unset | Trust::FirstUse) && !(all_plain && opts.trust == Trust::Unset) {
        return Err(ConnectError::NoTrust.into());
    }
    if let Trust::Ca(path) = &opts.trust
        && let Err(source) = std::fs::metadata(path)
    {
        return Err(ConnectError::Ca { path: path.clone(), source }.into());
    }
    let tls_error = |e: tls::TlsError| ConnectError::Tls(e.to_string());
    let trust = if all_plain { None } else { client_trust(&opts.trust)? };
    let config = trust.as_ref().map(tls::client_config).transpose().map_err(tls_error)?.map(Arc::new);
    let wss = urls.iter().any(|u| u.as_ref().is_some_and(|u| u.tls));
    let ws_config = match &trust {
        Some(trust) if wss => Some(Arc::new(tls::ws_client_config(trust).map_err(tls_error)?)),
        _ => None,
    };

    // One attempt at `target` within `timeout`.
    let dial = |target: &Target, timeout: Duration| -> std::io::Result<Box<dyn Link>> {
        let (addr, host) = (target.addr, target.host.as_str());
        let no_tls = || std::io::Error::other("no TLS configuration to check the server's key with");
        Ok(match &target.url {
            Some(url) if !url.tls => Box::new(ws::connect(addr, url, None, timeout)?),
            Some(url) => {
                let config = ws_config.clone().ok_or_else(no_tls)?;
                Box::new(ws::connect(addr, url, Some((tls::server_name(host), config)), timeout)?)
            }
            None if !target.quic() => {
                let config = config.clone().ok_or_else(no_tls)?;
                Box::new(tcp::connect(addr, tls::server_name(host), config, timeout)?)
            }
            None => {
                let config = config.as_ref().ok_or_else(no_tls)?;
                let name = tls::server_name(host).to_str().into_owned();
                Box::new(quic::connect(addr, &name, (**config).clone(), timeout)?)
            }
        })
    };

    // One slot per address tried, in order: a silent address's is filled
    // by the second pass.
    let mut tried: Vec<Option<ConnectError>> = Vec::new();
    // The addresses that did not answer their first attempt, and their slots.
    let mut silent: Vec<(usize, Target)> = Vec::new();
    for index in attempt_order(nodes.len(), opts.last) {
        let server = &nodes[index];
        let url = urls[index].as_ref();
        let transport = if url.is_some() { Transport::Ws } else { opts.transport };
        let authority = url.map_or_else(|| server.clone(), WsUrl::authority);
        let addrs = match resolve_all(&authority) {
            Ok(addrs) => addrs,
            Err(source) => {
                tried.push(Some(classify(server, transport, source)));
                continue;
            }
        };
        if url.is_some_and(|u| !u.tls)
            && let Some(&addr) = addrs.iter().find(|a| !a.ip().is_loopback())
        {
            return Err(ConnectError::PlainWsNotLoopback { server: server.clone(), addr }.into());
        }
        // The errors of the configuration stop the search before any socket.
        let tls_config = if url.is_some() { ws_config.is_some() } else { config.is_some() };
        if url.is_none_or(|u| u.tls) && !tls_config {
            return Err(ConnectError::NoTrust.into());
        }
        let host = authority.rsplit_once(':').map_or(authority.as_str(), |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let several = addrs.len() > 1;
        // The only address to try: no other to pass on to.
        let alone = nodes.len() == 1 && !several;
        for addr in addrs {
            // The address in errors: the node, and which of its name's addresses.
            let label = if several { format!("{server} ({addr})") } else { server.clone() };
            let target = Target { node: index, addr, transport, url: url.cloned(), host: host.to_owned(), label };
            // QUIC gets no refusal from a closed port (no RST), so it always
            // has a short first attempt, then a look for an ICMP "port unreachable".
            let first = if alone && !target.quic() { CONNECT_TIMEOUT } else { FIRST_ATTEMPT };
            let error = match dial(&target, first) {
                Ok(link) => return Ok((index, link)),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut && first < CONNECT_TIMEOUT => {
                    if target.quic() && port_unreachable(addr) {
                        ConnectError::NothingListens { server: target.label }
                    } else {
                        silent.push((tried.len(), target));
                        tried.push(None);
                        continue;
                    }
                }
                Err(e) => classify(&target.label, transport, e),
            };
            if matches!(error, ConnectError::KeyChanged { .. }) {
                return Err(Failed { node: Some(index), error });
            }
            tried.push(Some(error));
        }
    }
    // The second pass: the rest of the timeout for each silent address, in turn.
    let rest = CONNECT_TIMEOUT - FIRST_ATTEMPT;
    for (slot, target) in silent {
        match dial(&target, rest) {
            Ok(link) => return Ok((target.node, link)),
            Err(e) => {
                let e = if e.kind() == std::io::ErrorKind::TimedOut {
                    let text = format!("{e} (the second attempt; the first gave up after {FIRST_ATTEMPT:?})");
                    std::io::Error::new(e.kind(), text)
                } else {
                    e
                };
                match classify(&target.label, target.transport, e) {
                    error @ ConnectError::KeyChanged { .. } => return Err(Failed { node: Some(target.node), error }),
                    error => tried[slot] = Some(error),
                }
            }
        }
    }
    let mut tried: Vec<ConnectError> = tried.into_iter().flatten().collect();
    Err(if tried.len() == 1 { tried.remove(0) } else { ConnectError::Unreachable { tried } }.into())
}

/// Every address `authority` (`HOST:PORT`) resolves to, in the resolver's order.
fn resolve_all(authority: &str) -> std::io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = authority.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "the name resolves to no address"));
    }
    Ok(addrs)
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
        assert!(check_address("127.0.0.1:7700,127.0.0.1:7701").is_ok());
        assert!(matches!(check_address("127.0.0.1:7700,host"), Err(ConnectError::BadList { .. })));
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
                last: None,
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

    #[test]
    fn a_list_is_split_trimmed_and_each_element_checked_by_name() {
        assert_eq!(server_list("h:1").unwrap(), ["h:1"]);
        assert_eq!(server_list(" h:1 ").unwrap(), ["h:1"], "white space around one address too");
        assert_eq!(
            server_list("a.example:7700, 10.0.0.2:7700 ,[::1]:7700").unwrap(),
            ["a.example:7700", "10.0.0.2:7700", "[::1]:7700"]
        );
        assert_eq!(server_list("ws://127.0.0.1:7702,ws://[::1]:7702/confab").unwrap().len(), 2);
        assert_eq!(server_list("wss://a.example:443/confab,wss://b.example:443/confab").unwrap().len(), 2);
        assert_eq!(normalize_server(" a:1 ,  b:2").unwrap(), "a:1,b:2");

        let problem = |list: &str| match server_list(list) {
            Err(e @ ConnectError::BadList { .. }) => {
                assert!(e.to_string().contains(&format!("{list:?}")), "the list is named: {e}");
                assert!(e.hint().contains("HOST:PORT,HOST:PORT"), "{}", e.hint());
                let ConnectError::BadList { problem, .. } = e else { unreachable!() };
                problem
            }
            other => panic!("{list}: {other:?}"),
        };
        let p = problem("a:1,b");
        assert!(p.contains("element 2") && p.contains("\"b\"") && !p.contains("a:1"), "{p}");
        let p = problem("a:1,b:99999,c:3");
        assert!(p.contains("element 2") && p.contains("\"b:99999\""), "{p}");
        let p = problem("ws://host,a:1");
        assert!(p.contains("element 1") && p.contains("\"ws://host\""), "{p}");
        assert!(problem("a:1,,b:2").contains("element 2 is empty"));
        assert!(problem("a:1,").contains("element 2 is empty"));
        assert!(problem(",a:1").contains("element 1 is empty"));
        assert!(problem("a:1,b:2,a:1").contains("a:1 is listed twice"));
        let p = problem("a:1,ws://127.0.0.1:7702");
        assert!(p.contains("mixes") && p.contains("HOST:PORT") && p.contains("ws://"), "{p}");
        let p = problem("ws://127.0.0.1:7702,wss://b.example:443");
        assert!(p.contains("mixes") && p.contains("plain ws://") && p.contains("wss://"), "{p}");
        // Nothing is resolved or connected for a bad list, whatever the trust.
        let opts = ConnectOpts { server: "127.0.0.1:1,nope".into(), ..ConnectOpts::default() };
        assert!(matches!(connect(&opts), Err(ConnectError::BadList { .. })));
    }

    #[test]
    fn the_node_that_served_last_is_tried_first_then_the_ones_after_it() {
        assert_eq!(attempt_order(1, None), [0]);
        assert_eq!(attempt_order(3, None), [0, 1, 2]);
        assert_eq!(attempt_order(3, Some(0)), [0, 1, 2]);
        // A success on the second: it first, then the third, then the first.
        assert_eq!(attempt_order(3, Some(1)), [1, 2, 0]);
        assert_eq!(attempt_order(3, Some(2)), [2, 0, 1]);
        assert_eq!(attempt_order(2, Some(1)), [1, 0]);
        // A list that shrank since: from its start.
        assert_eq!(attempt_order(2, Some(5)), [0, 1]);
        let mut opts = ConnectOpts { server: "a:1, b:2".into(), ..ConnectOpts::default() };
        assert_eq!(opts.connected_to(), None, "no link yet");
        opts.last = Some(1);
        assert_eq!(opts.connected_to(), Some("b:2"));
    }

    #[test]
    fn a_new_connector_starts_at_the_remembered_node_if_it_is_in_the_list() {
        let mut opts = ConnectOpts { server: "a:1, b:2,c:3".into(), ..ConnectOpts::default() };
        assert!(!opts.start_at("d:4"), "not a node of the list");
        assert!(!opts.start_at(""));
        assert_eq!(opts.last, None);
        assert!(opts.start_at("b:2"));
        assert_eq!((opts.last, opts.connected_to()), (Some(1), Some("b:2")));
        assert_eq!(attempt_order(3, opts.last), [1, 2, 0]);
        // A link already opened: where it went is fresher than the profile.
        opts.last = Some(2);
        assert!(!opts.start_at("a:1"));
        assert_eq!(opts.last, Some(2));
        // The default (test doubles): nothing.
        struct Double;
        impl Connector for Double {
            fn connect(&mut self) -> Result<Box<dyn Link>, ConnectError> {
                Err(ConnectError::NoTrust)
            }
            fn server(&self) -> &str {
                "a:1,b:2"
            }
        }
        assert!(!Double.start_at("b:2"));
        assert_eq!(Double.misdirected(), 1, "a double has nowhere else to go");
    }

    /// A node that closed the link as misdirected (421) is tried after the
    /// others: the next connection starts at the node after it, round.
    #[test]
    fn a_misdirected_link_sends_the_next_connection_to_the_next_node() {
        let mut opts = ConnectOpts { server: "a:1,b:2,c:3".into(), ..ConnectOpts::default() };
        opts.last = Some(1);
        assert_eq!(opts.misdirected(), 3);
        assert_eq!(attempt_order(3, opts.last), [2, 0, 1]);
        assert_eq!(opts.misdirected(), 3);
        assert_eq!(attempt_order(3, opts.last), [0, 1, 2], "round");
        let mut single = ConnectOpts { server: "a:1".into(), last: Some(0), ..ConnectOpts::default() };
        assert_eq!(single.misdirected(), 1);
        assert_eq!(single.last, Some(0));
    }

    /// An address that completes the TCP handshake but never answers TLS
    /// (a paused node): alone, it gets one attempt with the whole timeout,
    /// as before there were lists; listed with others, a short first
    /// attempt, then the rest of the timeout once the others failed.
    #[test]
    fn a_silent_address_gets_the_whole_timeout_alone_and_two_attempts_in_a_list() {
        // Bound and listening, never accepting: the kernel completes the
        // TCP handshake, and nothing ever answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent = listener.local_addr().unwrap();
        let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let zeros = format!("sha256//{}=", "A".repeat(43));
        let opts = |server: String| ConnectOpts { server, trust: Trust::Pin(zeros.clone()), ..ConnectOpts::default() };
        let timed = |opts: ConnectOpts| {
            let started = std::time::Instant::now();
            let Err(e) = connect(&opts) else { panic!("{}: nothing answers", opts.server) };
            (e, started.elapsed())
        };
        let (alone, list) = std::thread::scope(|s| {
            let alone = s.spawn(|| timed(opts(silent.to_string())));
            let list = s.spawn(|| timed(opts(format!("{silent},{refused}"))));
            (alone.join().unwrap(), list.join().unwrap())
        });
        let (e, took) = alone;
        assert!(took >= CONNECT_TIMEOUT, "{took:?}");
        let ConnectError::Io { source, .. } = &e else { panic!("{e:?}") };
        assert_eq!(source.kind(), std::io::ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("timed out after 10s") && !e.to_string().contains("second"), "{e}");
        // 1 s, the refusal, then the other 9 s.
        let (e, took) = list;
        assert!(took >= CONNECT_TIMEOUT - Duration::from_millis(50), "{took:?}");
        let ConnectError::Unreachable { tried } = &e else { panic!("{e:?}") };
        assert_eq!(tried.len(), 2, "{e}");
        let first = tried[0].to_string();
        assert!(first.contains(&silent.to_string()) && first.contains("timed out after 9s"), "{first}");
        assert!(first.contains("(the second attempt; the first gave up after 1s)"), "{first}");
        assert!(tried[1].to_string().contains("refused"), "{e}");
    }

    #[test]
    fn lists_are_the_same_server_whatever_their_order() {
        assert!(same_server("a:1", "a:1"));
        assert!(same_server("a:1,b:2", "b:2,a:1"));
        assert!(same_server("a:1, b:2", "a:1,b:2"));
        assert!(!same_server("a:1", "a:2"));
        assert!(!same_server("a:1,b:2", "a:1"), "a node removed");
        assert!(!same_server("a:1,b:2", "a:1,b:2,c:3"), "a node added");
    }

    #[test]
    fn every_dead_address_is_named_with_its_own_reason() {
        // Two loopback ports nothing listens on (bound, then released).
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let (a, b) = (free(), free());
        let zeros = format!("sha256//{}=", "A".repeat(43));
        let opts = ConnectOpts { server: format!("{a},{b}"), trust: Trust::Pin(zeros), ..ConnectOpts::default() };
        let Err(e) = connect(&opts) else { panic!("nothing listens at {a} or {b}") };
        let ConnectError::Unreachable { tried } = &e else { panic!("{e:?}") };
        assert_eq!(tried.len(), 2, "{e}");
        assert!(matches!(&tried[0], ConnectError::Io { server, .. } if *server == a.to_string()), "{e}");
        assert!(matches!(&tried[1], ConnectError::Io { server, .. } if *server == b.to_string()), "{e}");
        let text = e.to_string();
        assert!(text.contains("2 tried") && text.contains(&format!("1) cannot connect to {a} over tcp")), "{text}");
        assert!(text.contains(&format!("2) cannot connect to {b} over tcp")), "{text}");
        assert!(e.hint().contains("at least one node"), "{}", e.hint());
        // One address: its own error, as before.
        let one = ConnectOpts { server: a.to_string(), ..opts };
        assert!(matches!(connect(&one), Err(ConnectError::Io { .. })));
    }
}
