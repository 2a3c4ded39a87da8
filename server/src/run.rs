//! `confab-server run`: the data directory, the TLS identity, the store,
//! the signals, and the [`Node`] loop.
//!
//! First start in a new data directory: the directory is made 0700, its
//! lock is taken (`confab.lock`, held until the process exits: a second
//! server on the directory is refused), `confab.db` is created, a
//! self-signed certificate is generated (rcgen) and written as
//! `server.crt` / `server.key` (0600), and its SPKI pin is written to
//! `server.pin` and printed. Later starts reuse all of them, so the pin
//! clients hold stays valid. A configured certificate chain and key replace
//! the self-signed pair (the pin printed is then that certificate's).
//!
//! The store is opened before the identity is made, so that a directory
//! holding the pin, certificate or key was used before: if its database is
//! then missing or empty, the store was lost and the start is refused
//! unless [`Init::Allow`] (`--init`) asks for an empty store.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use confab_transports::tls::{Pin, ServerIdentity};
use tracing::info;

use crate::config::RunConfig;
use crate::relay::RelayConfig;
use crate::relay::host::RelayHost;
use crate::runtime::{Node, NodeConfig, NodeHandle, RunError, RunSummary};
use crate::shares::{self, Joined, Shares};
use confab_proto::server::State;

use crate::store::{DirLock, Init, LeaseWatch, PgStore, Store, ensure_data_dir};

/// `confab-server run` failed before or while serving.
#[derive(Debug, thiserror::Error)]
pub enum RunFailure {
    /// The data directory is unusable.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// Which.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The certificate or key cannot be read, generated or used.
    #[error("TLS identity: {0}")]
    Identity(String),
    /// The store cannot be opened or loaded.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// A listener cannot be bound.
    #[error("cannot listen: {0} (is another confab-server running on that address? use --listen)")]
    Bind(io::Error),
    /// The loop stopped on an error.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The node lost its lease on a PostgreSQL store's partition and stopped serving.
    #[error("stopped: this node lost its lease on the store ({0}); what it acknowledged is in the store")]
    LeaseLost(String),
}

/// A server ready to run: listeners bound, state restored.
#[derive(Debug)]
pub struct Prepared {
    /// The loop.
    pub node: Node,
    /// The pin of the certificate served.
    pub pin: Pin,
    /// The data directory's lock, when the store is not the directory's own
    /// (a PostgreSQL store): hold it as long as the node runs.
    pub lock: Option<DirLock>,
    /// A PostgreSQL store's lease (a state of one partition): the node
    /// stops when it is lost.
    pub leases: Vec<LeaseWatch>,
    /// A split state: the node's membership of the cluster, to keep while
    /// the node runs ([`Shares::start`]).
    pub joined: Option<Joined>,
    /// The lease's fencing token (a state of one partition).
    pub token: Option<u64>,
}

/// Prepares the data directory, the store (with the directory's lock; a
/// new, empty one as `init` allows), the identity and the listeners.
///
/// # Errors
/// See [`RunFailure`].
pub fn prepare(config: &RunConfig, init: Init) -> Result<Prepared, RunFailure> {
    prepare_then(config, init, || ())
}

/// [`prepare`], calling `store_open` once the store is open (a standby:
/// once it owns the partition), before the listeners are bound.
fn prepare_then(config: &RunConfig, init: Init, store_open: impl FnOnce()) -> Result<Prepared, RunFailure> {
    let data = &config.data;
    ensure_data_dir(data).map_err(|source| RunFailure::DataDir { path: data.clone(), source })?;
    let mut joined = None;
    let (store, lock, leases, token) = match &config.store_url {
        Some(url) if config.server.partitions.is_split() => {
            let lock = DirLock::acquire(data)?;
            let (member, parts) = shares::join(url, config, init)?;
            info!(
                node = %config.lease.node,
                partitions = config.server.partitions.count,
                owned = ?parts.iter().map(|(p, _, _)| *p).collect::<Vec<_>>(),
                "joined the split state's cluster"
            );
            joined = Some(member);
            (Opened::Split(parts), Some(lock), Vec::new(), None)
        }
        Some(url) => {
            // The directory holds the identity: one server per directory, whatever the store.
            let lock = DirLock::acquire(data)?;
            // A standby waits here, not listening, until the partition is this node's.
            let (mut store, state) = PgStore::open_leased(url, &config.server, init, Some(data), config.lease.clone())?;
            store.set_compact_every(config.compact_every);
            info!(store = %store.label().display(), node = %config.lease.node, token = store.token(), "PostgreSQL store");
            let lease = store.lease_watch();
            let token = u64::try_from(store.token()).ok();
            (Opened::Postgres(Box::new(store), state), Some(lock), vec![lease], token)
        }
        None => {
            let (mut store, state) = Store::open_with(data, &config.server, init)?;
            store.set_compact_every(config.compact_every);
            store.set_fsync(config.fsync)?;
            (Opened::Sqlite(Box::new(store), state), None, Vec::new(), None)
        }
    };
    store_open();
    let identity = load_or_make_identity(config)?;
    let pin = identity.pin().map_err(|e| RunFailure::Identity(e.to_string()))?;
    write_private(&data.join("server.pin"), format!("{pin}\n").as_bytes())
        .map_err(|source| RunFailure::DataDir { path: data.clone(), source })?;
    if let Opened::Sqlite(_, state) | Opened::Postgres(_, state) = &store {
        info!(
            users = state.accounts().user_count(),
            rooms = state.rooms().len(),
            queued = state.lanes().queued_total(),
            data = %data.display(),
            "state restored"
        );
    }
    let node_config = node_config(config, identity);
    let node = match store {
        Opened::Sqlite(store, state) => Node::bind(node_config, *store, state),
        Opened::Postgres(store, state) => Node::bind(node_config, *store, state),
        Opened::Split(parts) => {
            let url = config.store_url.as_deref().unwrap_or_default();
            Node::bind_split(node_config, parts, url, config.mail_poll)
        }
    }
    .map_err(RunFailure::Bind)?;
    Ok(Prepared { node, pin, lock, leases, token, joined })
}

/// The loop's configuration from the node's.
fn node_config(config: &RunConfig, identity: ServerIdentity) -> NodeConfig {
    let mut node_config = NodeConfig::new(config.server.clone(), config.tcp, identity);
    node_config.quic = Some(config.quic);
    node_config.tcp_limits = config.tcp_limits;
    node_config.ws.clone_from(&config.ws);
    node_config.quic_limits.max_connections = config.max_connections;
    node_config.oidc_jwks_file.clone_from(&config.oidc_jwks_file);
    node_config.log = config.log;
    // A split state's nodes relay to each other and ring each other's
    // doorbells over the NATS they name.
    node_config.bells = config.relay.clone().filter(|_| config.server.partitions.is_split());
    node_config
}

/// A standby's edge ([`Node::bind_edge`]) running while it waits for the
/// partition; dropping it stops it and frees its listeners.
struct Edge {
    handle: NodeHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Edge {
    /// Binds the edge on the node's addresses and runs it on a thread;
    /// `None` without a certificate yet (a first start makes it only once
    /// the store is open, see the module docs): the node then stands by
    /// without listening.
    fn start(config: &RunConfig, relay: &RelayConfig) -> Result<Option<Edge>, RunFailure> {
        let made = config.data.join("server.crt").exists() && config.data.join("server.key").exists();
        if config.cert.is_none() && !made {
            info!("no certificate yet: standing by without relaying until this node owns the partition");
            return Ok(None);
        }
        let identity = load_or_make_identity(config)?;
        let pin = identity.pin().map_err(|e| RunFailure::Identity(e.to_string()))?;
        let node = Node::bind_edge(node_config(config, identity), relay.clone()).map_err(RunFailure::Bind)?;
        let (tcp, quic, ws) = addresses(&node);
        say(&format!("confab-server relaying: tcp {tcp}, quic {quic}, ws {ws}\npin {pin}\n"));
        info!(%tcp, %quic, %ws, %pin, nats = %crate::relay::redacted(&relay.url), "standing by as an edge: relaying connections to the owner");
        let handle = node.handle();
        let thread = std::thread::Builder::new()
            .name("confab-edge".into())
            .spawn(move || {
                if let Err(e) = node.run() {
                    tracing::error!("edge stopped: {e}");
                }
            })
            .map_err(RunFailure::Bind)?;
        Ok(Some(Edge { handle, thread: Some(thread) }))
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.handle.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        info!("edge stopped");
    }
}

/// Runs until SIGINT or SIGTERM, then stops gracefully (`init`: see [`prepare`]).
///
/// # Errors
/// See [`RunFailure`].
pub fn run(config: &RunConfig, init: Init) -> Result<RunSummary, RunFailure> {
    // A standby with a relay serves clients as an edge while it waits.
    let mut edge = match &config.relay {
        Some(relay) if config.store_url.is_some() && config.lease.standby => Edge::start(config, relay)?,
        _ => None,
    };
    // Stopped once the store is open, before the owner binds its addresses.
    let Prepared { node, pin, lock: _lock, leases, token, joined } = prepare_then(config, init, || drop(edge.take()))?;
    let (tcp, quic, ws) = addresses(&node);
    // Lines for people and scripts alike; everything else goes to the log on stderr.
    let mut lines = format!("confab-server listening: tcp {tcp}, quic {quic}, ws {ws}\n");
    if let Some(web) = node.web_url() {
        lines.push_str(&format!("web {web}\n"));
    }
    lines.push_str(&format!("pin {pin}\ndata {}\n", config.data.display()));
    say(&lines);
    let web = node.web_url().unwrap_or_else(|| "-".to_owned());
    info!(%tcp, %quic, %ws, %web, %pin, "listening");
    watch_signals(node.handle()).map_err(|e| RunFailure::Bind(io::Error::other(format!("signals: {e}"))))?;
    for lease in &leases {
        // One partition, bound with the node: its core is in doubt while the lease is.
        node.handle().watch_lease(0, token.unwrap_or_default(), lease.clone());
        watch_lease(lease.clone(), node.handle())
            .map_err(|e| RunFailure::Bind(io::Error::other(format!("lease: {e}"))))?;
    }
    // The owner relays the edges' connections into its loop.
    let _relay = match (&config.relay, token) {
        (Some(relay), Some(token)) => Some(
            RelayHost::start(relay.clone(), 0, token, node.handle().hub(), {
                let handle = node.handle();
                move || handle.is_stopping()
            })
            .map_err(|e| RunFailure::Bind(io::Error::other(format!("relay: {e}"))))?,
        ),
        _ => None,
    };
    // A split state's share: partitions taken and given back while it runs.
    let _shares = match (joined, &config.store_url) {
        (Some(joined), Some(url)) => Some(
            Shares::start(joined, url, config, node.handle())
                .map_err(|e| RunFailure::Bind(io::Error::other(format!("membership: {e}"))))?,
        ),
        _ => None,
    };
    let summary = node.run();
    // A lost lease explains a failed commit too: another node owns the partition now.
    if let Some(reason) = leases.iter().find_map(LeaseWatch::lost) {
        return Err(RunFailure::LeaseLost(reason));
    }
    Ok(summary?)
}

/// The TCP, QUIC and WebSocket addresses `node` listens on, `-` for none.
fn addresses(node: &Node) -> (String, String, String) {
    let tcp = node.tcp_addr().map_or_else(|| "-".to_owned(), |a| a.to_string());
    let quic = node.quic_addr().map_or_else(|| "-".to_owned(), |a| a.to_string());
    (tcp, quic, node.ws_url().unwrap_or_else(|| "-".to_owned()))
}

/// Writes `lines` to stdout for people and scripts, in one write. A
/// stdout nobody reads any more (a closed pipe: `| head -1`, a supervisor
/// gone) is not the server's failure: the error is ignored (`println!`
/// would panic and stop a node that serves).
fn say(lines: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(lines.as_bytes());
    let _ = out.flush();
}

/// Stops the node when its lease is lost (a thread waiting for that): it
/// must not serve a partition another node may own.
fn watch_lease(lease: LeaseWatch, handle: NodeHandle) -> io::Result<()> {
    std::thread::Builder::new().name("confab-lease-watch".into()).spawn(move || {
        let reason = lease.wait_lost();
        tracing::error!("lease lost ({reason}): stopping");
        handle.stop();
    })?;
    Ok(())
}

/// The store the node commits to.
enum Opened {
    Sqlite(Box<Store>, State),
    Postgres(Box<PgStore>, State),
    /// A split state: the PostgreSQL stores of the partitions this node
    /// took at start.
    Split(Vec<shares::Opened>),
}

/// Stops the node on SIGINT or SIGTERM (a thread waiting on the signals).
/// A second signal exits at once: what was acknowledged is already
/// committed, so nothing acknowledged is lost; sessions just lose their
/// goodbye.
fn watch_signals(handle: NodeHandle) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new().name("confab-signals".into()).spawn(move || {
        let mut signals = signals.forever();
        if let Some(sig) = signals.next() {
            info!(signal = sig, "signal received: stopping (a second one exits at once)");
            handle.stop();
        }
        if let Some(sig) = signals.next() {
            tracing::warn!(signal = sig, "second signal: exiting without waiting for sessions");
            std::process::exit(1);
        }
    })?;
    Ok(())
}

fn load_or_make_identity(config: &RunConfig) -> Result<ServerIdentity, RunFailure> {
    let read = |p: &Path| fs::read(p).map_err(|e| RunFailure::Identity(format!("cannot read {}: {e}", p.display())));
    if let Some((chain, key)) = &config.cert {
        return ServerIdentity::from_pem(&read(chain)?, &read(key)?).map_err(|e| RunFailure::Identity(e.to_string()));
    }
    let (crt, key) = (config.data.join("server.crt"), config.data.join("server.key"));
    if crt.exists() && key.exists() {
        return ServerIdentity::from_pem(&read(&crt)?, &read(&key)?).map_err(|e| RunFailure::Identity(e.to_string()));
    }
    let mut names = vec!["localhost".to_owned(), confab_transports::tls::DEFAULT_SERVER_NAME.to_owned()];
    for addr in [config.tcp, config.quic] {
        let ip = addr.ip().to_string();
        if !names.contains(&ip) {
            names.push(ip);
        }
    }
    let made = ServerIdentity::self_signed(&names).map_err(|e| RunFailure::Identity(e.to_string()))?;
    let dir_err = |source| RunFailure::DataDir { path: config.data.clone(), source };
    write_private(&key, made.key_pem.as_bytes()).map_err(dir_err)?;
    write_private(&crt, made.cert_pem.as_bytes()).map_err(dir_err)?;
    info!(cert = %crt.display(), "generated a self-signed certificate");
    Ok(made.identity)
}

/// Writes a file readable by its owner only (0600), replacing it atomically.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}
