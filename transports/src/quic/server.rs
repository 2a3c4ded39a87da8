//! The server side: a quinn endpoint on a dedicated thread.
//!
//! One task accepts connections; one task per connection runs the session:
//! it waits (bounded) for the client's stream, reports `Opened`, then reads
//! the stream into `Received` events while a writer drains the
//! [`ConnHandle`]'s queue into the stream. The reader takes inbound credit
//! (`max_inbound` bytes per connection) before each read and the loop
//! returns it through [`Hub::consumed`](crate::hub::Hub::consumed); without
//! credit the reader does not read, so quinn's stream window fills and the
//! peer is held back. Whatever ends the session, the task reports `Closed`
//! exactly once, through a guard that also fires if the task is cancelled
//! at shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use quinn::{Connection, Endpoint, EndpointConfig, Incoming, ReadError, RecvStream, SendStream, WriteError};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout, timeout_at};

use super::{CODE_BACKLOG, CODE_CLOSED, CODE_NO_STREAM, CODE_ONE_STREAM, CODE_SHUTDOWN, QuicLimits, describe};
use crate::hub::{ConnHandle, ConnId, HubSender, NetEvent, Outbound, Transport};

/// How long shutdown lets the endpoint send its close frames.
const CLOSE_LINGER: Duration = Duration::from_millis(200);
/// The largest chunk read from a stream at once.
const READ_CHUNK: usize = 64 * 1024;

/// A QUIC listener serving confab sessions off the core's thread.
#[derive(Debug)]
pub struct QuicServer {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<Duration>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// State the server handle and its thread share.
#[derive(Debug)]
struct Shared {
    accepting: AtomicBool,
    open: AtomicUsize,
    /// Bytes reported as `Received` and not yet consumed, over all connections.
    inbound: AtomicUsize,
}

impl QuicServer {
    /// Binds UDP `addr` and serves on a dedicated thread running a
    /// current-thread tokio runtime. Every session is one bidirectional
    /// stream that the client opens; each accepted session gets
    /// `hub.next_id()` and is reported as `NetEvent::Opened` with
    /// `Transport::Quic`, the peer's address and a [`ConnHandle`].
    ///
    /// # Errors
    /// `tls` is not usable for QUIC (it must offer TLS 1.3 with
    /// AES-128-GCM), the address cannot be bound, or the thread or runtime
    /// cannot be made.
    pub fn bind(
        addr: SocketAddr,
        tls: rustls::ServerConfig,
        hub: HubSender,
        limits: QuicLimits,
    ) -> io::Result<QuicServer> {
        let crypto = QuicServerConfig::try_from(tls).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(Arc::new(transport_config(&limits)?));
        let socket = std::net::UdpSocket::bind(addr)?;
        let local_addr = socket.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let endpoint = {
            let _entered = runtime.enter();
            Endpoint::new(EndpointConfig::default(), Some(config), socket, Arc::new(quinn::TokioRuntime))?
        };
        let shared = Arc::new(Shared {
            accepting: AtomicBool::new(true),
            open: AtomicUsize::new(0),
            inbound: AtomicUsize::new(0),
        });
        let (stop, stopped) = oneshot::channel();
        let thread = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("confab-quic".into())
                .spawn(move || runtime.block_on(run(endpoint, hub, limits, shared, stopped)))?
        };
        Ok(QuicServer { local_addr, shared, stop: Some(stop), thread: Some(thread) })
    }

    /// The bound address (the actual port when bound to port 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Refuses new connections from now on; existing ones go on.
    pub fn stop_accepting(&self) {
        self.shared.accepting.store(false, Ordering::Relaxed);
    }

    /// Connections accepted and not yet ended (including those still in
    /// their handshake).
    #[must_use]
    pub fn connections(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Bytes of every connection reported as `Received` and not yet
    /// returned with [`Hub::consumed`](crate::hub::Hub::consumed): what the
    /// loop buffers on this server's behalf. At most `max_inbound` per open
    /// connection.
    #[must_use]
    pub fn inbound_buffered(&self) -> usize {
        self.shared.inbound.load(Ordering::Relaxed)
    }

    /// Stops accepting, waits up to `grace` for every connection to end (the
    /// loop is expected to have sent `Outbound::Close` to each), then closes
    /// the endpoint (code 4, "server shutdown") and joins the thread. Every
    /// connection still open gets its `Closed` event.
    pub fn shutdown(mut self, grace: Duration) {
        self.stop_thread(grace);
    }

    fn stop_thread(&mut self, grace: Duration) {
        self.stop_accepting();
        if let Some(stop) = self.stop.take() {
            // The thread may be gone already (it only ends on a stop).
            let _ = stop.send(grace);
        }
        if let Some(thread) = self.thread.take() {
            // A panic on that thread has been printed; nothing to add.
            let _ = thread.join();
        }
    }
}

impl Drop for QuicServer {
    /// Shuts down with no grace if [`QuicServer::shutdown`] was not called.
    fn drop(&mut self) {
        self.stop_thread(Duration::ZERO);
    }
}

fn transport_config(limits: &QuicLimits) -> io::Result<quinn::TransportConfig> {
    let idle = quinn::IdleTimeout::try_from(limits.idle_timeout)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("QUIC idle timeout: {e}")))?;
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(idle))
        // The session's stream, plus room for a second one to be seen and refused.
        .max_concurrent_bidi_streams(2u32.into())
        .max_concurrent_uni_streams(0u32.into())
        // Bounded buffers per connection, inbound and outbound.
        .stream_receive_window((1u32 << 20).into())
        .receive_window((2u32 << 20).into())
        .send_window(2 << 20);
    Ok(t)
}

/// The endpoint's task: accepts until told to stop, then shuts down.
async fn run(
    endpoint: Endpoint,
    hub: HubSender,
    limits: QuicLimits,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<Duration>,
) {
    let mut tasks = JoinSet::new();
    let grace = loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break Duration::ZERO };
                if !shared.accepting.load(Ordering::Relaxed)
                    || shared.open.load(Ordering::Relaxed) >= limits.max_connections
                {
                    incoming.refuse();
                    continue;
                }
                shared.open.fetch_add(1, Ordering::Relaxed);
                let live = Live(shared.clone());
                tasks.spawn(serve(incoming, hub.clone(), limits.clone(), live));
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            grace = &mut stop => break grace.unwrap_or(Duration::ZERO),
        }
    };
    shared.accepting.store(false, Ordering::Relaxed);
    // New connections are refused while the others flush.
    let drain = async { while tasks.join_next().await.is_some() {} };
    let refuse = async {
        while let Some(incoming) = endpoint.accept().await {
            incoming.refuse();
        }
    };
    tokio::select! {
        _ = timeout(grace, drain) => {}
        () = refuse => {}
    }
    endpoint.close(CODE_SHUTDOWN, b"server shutdown");
    // Cancelled sessions report `Closed` from their guards.
    tasks.shutdown().await;
    let _ = timeout(CLOSE_LINGER, endpoint.wait_idle()).await;
}

/// Counts a connection as open while alive.
struct Live(Arc<Shared>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reports `Closed` exactly once: explicitly, or on drop (cancellation at shutdown).
struct Report {
    hub: HubSender,
    conn: ConnId,
    done: bool,
}

impl Report {
    fn closed(mut self, reason: String) {
        self.done = true;
        self.hub.send(NetEvent::Closed { conn: self.conn, reason });
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if !self.done {
            self.hub.send(NetEvent::Closed { conn: self.conn, reason: "server shutdown".into() });
        }
    }
}

/// Inbound credit of one connection, shared by its reader and the loop's
/// [`ConnHandle`].
struct Inbound {
    /// Bytes the reader may still push; it takes them before each read.
    credit: Semaphore,
    /// Bytes pushed and not yet consumed.
    outstanding: AtomicUsize,
    shared: Arc<Shared>,
}

impl Inbound {
    fn new(max: usize, shared: Arc<Shared>) -> Inbound {
        Inbound { credit: Semaphore::new(max), outstanding: AtomicUsize::new(0), shared }
    }

    /// `n` bytes go to the loop.
    fn pushed(&self, n: usize) {
        self.outstanding.fetch_add(n, Ordering::Relaxed);
        self.shared.inbound.fetch_add(n, Ordering::Relaxed);
    }

    /// The loop consumed `n` bytes: as much credit comes back (never more
    /// than was pushed, whatever the loop says).
    fn consumed(&self, n: usize) {
        let Ok(before) =
            self.outstanding.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(n)))
        else {
            return;
        };
        let back = before.min(n);
        if back > 0 {
            self.shared.inbound.fetch_sub(back, Ordering::Relaxed);
            self.credit.add_permits(back);
        }
    }
}

/// Once the session is over, takes what the loop did not consume off the
/// server's count (those events may still be in the loop's hands, but the
/// connection is gone and its handle with it).
struct InboundEnd(Arc<Inbound>);

impl Drop for InboundEnd {
    fn drop(&mut self) {
        let left = self.0.outstanding.swap(0, Ordering::Relaxed);
        self.0.shared.inbound.fetch_sub(left, Ordering::Relaxed);
    }
}

/// What the loop's [`ConnHandle`] shares with the session task.
#[derive(Default)]
struct Control {
    /// No more sends are taken (closing, or the backlog overflowed).
    shut: AtomicBool,
    /// The backlog went over the limit.
    overflow: Notify,
    /// The loop asked for a close.
    close: Notify,
}

/// One connection, from its first packet to its end.
async fn serve(incoming: Incoming, hub: HubSender, limits: QuicLimits, live: Live) {
    let peer = incoming.remote_address();
    let Ok(connecting) = incoming.accept() else { return };
    let deadline = Instant::now() + limits.handshake_timeout;
    let Ok(Ok(conn)) = timeout_at(deadline, connecting).await else {
        // Handshake failed (the client saw why) or took too long (dropping
        // the last handle closes the connection).
        return;
    };
    let (send, recv) = match timeout_at(deadline, conn.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        Ok(Err(_)) => return,
        Err(_) => {
            conn.close(CODE_NO_STREAM, b"no stream opened");
            return;
        }
    };

    let id = hub.next_id();
    let backlog = Arc::new(AtomicUsize::new(0));
    let control = Arc::new(Control::default());
    let inbound = Arc::new(Inbound::new(inbound_limit(&limits), live.0.clone()));
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = {
        let (queued, control, max) = (backlog.clone(), control.clone(), limits.max_outbound);
        let backlog = queued.clone();
        let inbound = inbound.clone();
        ConnHandle::with_inbound_credit(
            move |out| {
                let len = match &out {
                    Outbound::Data(bytes) => bytes.len(),
                    Outbound::Close => 0,
                };
                if control.shut.load(Ordering::Relaxed) {
                    backlog.fetch_sub(len, Ordering::Relaxed);
                    return false;
                }
                match &out {
                    Outbound::Data(_) if backlog.load(Ordering::Relaxed) > max => {
                        control.shut.store(true, Ordering::Relaxed);
                        backlog.fetch_sub(len, Ordering::Relaxed);
                        control.overflow.notify_one();
                        return false;
                    }
                    Outbound::Data(_) => {}
                    Outbound::Close => {
                        control.shut.store(true, Ordering::Relaxed);
                        control.close.notify_one();
                    }
                }
                if tx.send(out).is_err() {
                    backlog.fetch_sub(len, Ordering::Relaxed);
                    return false;
                }
                true
            },
            queued,
            move |n| inbound.consumed(n),
        )
    };
    let opened = NetEvent::Opened { conn: id, transport: Transport::Quic, peer: Some(peer), handle: Some(handle) };
    if !hub.send(opened) {
        conn.close(CODE_SHUTDOWN, b"server shutdown");
        return;
    }
    let report = Report { hub: hub.clone(), conn: id, done: false };
    let inbound = InboundEnd(inbound);
    let reason = session(&conn, send, recv, rx, &backlog, &control, &inbound.0, &hub, id, &limits).await;
    drop(inbound);
    report.closed(reason);
}

/// Runs an opened session until it ends; returns why.
#[allow(clippy::too_many_arguments)]
async fn session(
    conn: &Connection,
    mut send: SendStream,
    mut recv: RecvStream,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
    backlog: &AtomicUsize,
    control: &Control,
    inbound: &Inbound,
    hub: &HubSender,
    id: ConnId,
    limits: &QuicLimits,
) -> String {
    tokio::select! {
        reason = read_loop(&mut recv, inbound, inbound_limit(limits).min(READ_CHUNK), hub, id) => {
            conn.close(CODE_CLOSED, b"closed");
            reason
        }
        end = write_loop(&mut send, &mut rx, backlog) => {
            match end {
                WriterEnd::Closed => {
                    conn.close(CODE_CLOSED, b"closed");
                    "closed by the server".into()
                }
                WriterEnd::Failed(reason) => {
                    conn.close(CODE_CLOSED, b"closed");
                    reason
                }
                WriterEnd::HandleDropped => {
                    conn.close(CODE_CLOSED, b"closed");
                    "the server dropped the connection".into()
                }
            }
        }
        reason = refuse_streams(conn) => reason,
        () = control.overflow.notified() => {
            conn.close(CODE_BACKLOG, b"too slow");
            format!("outbound backlog over {} bytes: the peer does not read", limits.max_outbound)
        }
        () = async { control.close.notified().await; sleep(limits.idle_timeout).await } => {
            conn.close(CODE_CLOSED, b"closed");
            "closed by the server (flush timed out)".into()
        }
    }
}

/// `max_inbound`, at least 1 and at most what a semaphore holds.
fn inbound_limit(limits: &QuicLimits) -> usize {
    limits.max_inbound.clamp(1, Semaphore::MAX_PERMITS)
}

/// Reads the stream into `Received` events until it ends; returns why.
/// Each read takes `chunk` bytes of credit first (and gives back what it
/// did not use): without credit nothing is read, so the bytes between the
/// stream and the loop never exceed `max_inbound`.
async fn read_loop(recv: &mut RecvStream, inbound: &Inbound, chunk: usize, hub: &HubSender, conn: ConnId) -> String {
    // `chunk` is at most READ_CHUNK.
    let permits = u32::try_from(chunk).unwrap_or(u32::MAX);
    loop {
        match inbound.credit.acquire_many(permits).await {
            Ok(credit) => credit.forget(),
            Err(_) => return "inbound credit closed".into(),
        }
        match recv.read_chunk(chunk, true).await {
            Ok(Some(read)) => {
                let n = read.bytes.len();
                inbound.credit.add_permits(chunk - n);
                inbound.pushed(n);
                if !hub.send(NetEvent::Received { conn, bytes: Vec::from(read.bytes) }) {
                    return "server loop gone".into();
                }
            }
            Ok(None) => return "peer finished the stream".into(),
            Err(ReadError::Reset(code)) => return format!("peer reset the stream (code {code})"),
            Err(ReadError::ConnectionLost(e)) => return describe(&e),
            Err(e) => return format!("stream read failed: {e}"),
        }
    }
}

enum WriterEnd {
    /// `Outbound::Close`: the stream was finished and the peer acknowledged it (or stopped it).
    Closed,
    /// Writing failed.
    Failed(String),
    /// The loop dropped the handle without a close.
    HandleDropped,
}

/// Writes queued bytes in order; on `Close`, finishes the stream and waits
/// until the peer has it all.
async fn write_loop(
    send: &mut SendStream,
    rx: &mut mpsc::UnboundedReceiver<Outbound>,
    backlog: &AtomicUsize,
) -> WriterEnd {
    while let Some(out) = rx.recv().await {
        match out {
            Outbound::Data(bytes) => {
                let mut rest = &bytes[..];
                while !rest.is_empty() {
                    match send.write(rest).await {
                        Ok(n) => {
                            backlog.fetch_sub(n, Ordering::Relaxed);
                            rest = &rest[n..];
                        }
                        Err(e) => return WriterEnd::Failed(write_failed(e)),
                    }
                }
            }
            Outbound::Close => {
                if send.finish().is_ok() {
                    // `Some(code)`: the peer stopped reading; either way the close goes on.
                    let _ = send.stopped().await;
                }
                return WriterEnd::Closed;
            }
        }
    }
    WriterEnd::HandleDropped
}

fn write_failed(e: WriteError) -> String {
    match e {
        WriteError::Stopped(code) => format!("peer stopped the stream (code {code})"),
        WriteError::ConnectionLost(e) => describe(&e),
        e => format!("stream write failed: {e}"),
    }
}

/// Refuses every stream after the session's one; returns when the
/// connection is lost.
async fn refuse_streams(conn: &Connection) -> String {
    loop {
        match conn.accept_bi().await {
            Ok((mut send, mut recv)) => {
                // Either may already be closed by the peer: nothing to refuse then.
                let _ = send.reset(CODE_ONE_STREAM);
                let _ = recv.stop(CODE_ONE_STREAM);
            }
            Err(e) => return describe(&e),
        }
    }
}
