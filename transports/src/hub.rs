//! Server-side vocabulary shared by every transport: connection ids, the
//! events a transport reports to the loop that owns the core, and the
//! [`Hub`] through which transports living on other threads (in-memory
//! links) reach that loop.
//!
//! The loop that owns the `Server` machine is a mio event loop. TCP
//! connections and the QUIC endpoint's socket are mio sources of that loop
//! (`tcp`, `quic`); every other transport
//! runs elsewhere and reports through a [`HubSender`]: it pushes a
//! [`NetEvent`] on a channel and wakes the loop with a [`mio::Waker`].

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use bytes::Bytes;

/// Which transport a connection came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TCP + TLS 1.3.
    Tcp,
    /// QUIC, one bidirectional stream.
    Quic,
    /// In-process channels.
    Mem,
    /// WebSocket (RFC 6455) binary messages, plain on loopback or over TLS 1.3.
    Ws,
    /// A connection another node of a cluster accepted and relays (over
    /// NATS) to this one, which owns the partition.
    Relay,
}

impl Transport {
    /// `"tcp"`, `"quic"`, `"mem"`, `"ws"` or `"relay"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
            Transport::Mem => "mem",
            Transport::Ws => "ws",
            Transport::Relay => "relay",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connection, unique across every transport of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// Hands out [`ConnId`]s; shared by every transport of one process.
#[derive(Debug, Clone, Default)]
pub struct ConnIds(Arc<AtomicU64>);

impl ConnIds {
    /// A fresh id.
    #[must_use]
    pub fn next(&self) -> ConnId {
        ConnId(self.0.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// What a transport tells the loop that owns the core.
#[derive(Debug)]
pub enum NetEvent {
    /// A connection is ready to carry frames (TLS handshake done, QUIC
    /// stream accepted, in-memory link made).
    Opened {
        /// The connection.
        conn: ConnId,
        /// Its transport.
        transport: Transport,
        /// The peer's address (`None` for in-memory links).
        peer: Option<SocketAddr>,
        /// How the loop sends to it, for transports that live off the loop's
        /// thread; `None` for TCP, which the loop drives itself.
        handle: Option<ConnHandle>,
    },
    /// Bytes arrived (any split). Once they are handed to the core, the
    /// loop returns their length with [`Hub::consumed`] (inbound credit of
    /// off-thread transports).
    Received {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// The connection is gone: the peer closed it, it failed, or the loop
    /// asked for it to be closed and it is now closed.
    Closed {
        /// The connection.
        conn: ConnId,
        /// Why, for the log (never content).
        reason: String,
    },
}

/// What the loop sends to a connection living off its thread.
#[derive(Debug)]
pub enum Outbound {
    /// Write these bytes, in order after the previous ones.
    Data(Bytes),
    /// Write everything queued, then close.
    Close,
}

/// The loop's end of a connection that lives off its thread: a way to send
/// [`Outbound`]s, a count of the bytes queued and not yet written, which
/// the loop reports to the core as the session's backlog, and optionally a
/// way to return inbound credit.
///
/// Inbound flow control: a transport made with
/// [`ConnHandle::with_inbound_credit`] pushes `Received` bytes only while it
/// holds credit (a bounded number of bytes between its reader and the loop)
/// and stops reading from its peer otherwise; the loop returns credit with
/// [`Hub::consumed`] once it has handed the bytes to the core.
pub struct ConnHandle {
    send: Box<dyn Fn(Outbound) -> bool + Send>,
    backlog: Arc<AtomicUsize>,
    consumed: Option<Box<dyn Fn(usize) + Send>>,
}

impl fmt::Debug for ConnHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnHandle")
            .field("backlog", &self.backlog())
            .field("inbound_credit", &self.consumed.is_some())
            .finish_non_exhaustive()
    }
}

impl ConnHandle {
    /// A handle whose `send` pushes to the connection's task and returns
    /// false once that task is gone. The task must subtract from `backlog`
    /// what it writes; [`ConnHandle::send`] adds what is queued.
    pub fn new(send: impl Fn(Outbound) -> bool + Send + 'static, backlog: Arc<AtomicUsize>) -> ConnHandle {
        ConnHandle { send: Box::new(send), backlog, consumed: None }
    }

    /// Like [`ConnHandle::new`], for a transport that bounds its inbound
    /// bytes: `consumed(n)` is called when the loop has handed `n` bytes of
    /// `Received` events to the core, and gives the transport back that much
    /// credit. It must not block; it may be called after the connection is
    /// gone.
    pub fn with_inbound_credit(
        send: impl Fn(Outbound) -> bool + Send + 'static,
        backlog: Arc<AtomicUsize>,
        consumed: impl Fn(usize) + Send + 'static,
    ) -> ConnHandle {
        ConnHandle { send: Box::new(send), backlog, consumed: Some(Box::new(consumed)) }
    }

    /// Returns `n` bytes of inbound credit (a no-op for a handle without
    /// inbound flow control).
    pub fn consumed(&self, n: usize) {
        if let Some(consumed) = &self.consumed
            && n > 0
        {
            consumed(n);
        }
    }

    /// Queues `out`. False: the connection is gone (a `Closed` event follows
    /// or already came).
    pub fn send(&self, out: Outbound) -> bool {
        if let Outbound::Data(bytes) = &out {
            self.backlog.fetch_add(bytes.len(), Ordering::Relaxed);
        }
        (self.send)(out)
    }

    /// Bytes queued and not yet written.
    #[must_use]
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }
}

/// The sending side of a [`Hub`], cloned into every off-thread transport.
#[derive(Debug, Clone)]
pub struct HubSender {
    tx: mpsc::Sender<NetEvent>,
    waker: Arc<mio::Waker>,
    ids: ConnIds,
}

impl HubSender {
    /// Reports `event` and wakes the loop. False: the loop is gone.
    pub fn send(&self, event: NetEvent) -> bool {
        if self.tx.send(event).is_err() {
            return false;
        }
        // A failed wake means the poll itself is gone: nothing to wake.
        let _ = self.waker.wake();
        true
    }

    /// The loop's waker (mio allows one per poll: every source that wakes
    /// the loop shares it, and the loop checks all of them on each wake).
    #[must_use]
    pub fn waker(&self) -> Arc<mio::Waker> {
        Arc::clone(&self.waker)
    }

    /// A fresh connection id.
    #[must_use]
    pub fn next_id(&self) -> ConnId {
        self.ids.next()
    }
}

/// Events from off-thread transports, and the handles to answer them.
#[derive(Debug)]
pub struct Hub {
    rx: mpsc::Receiver<NetEvent>,
    sender: HubSender,
    handles: HashMap<ConnId, ConnHandle>,
}

impl Hub {
    /// A hub that wakes `poll`'s loop through a waker registered with `token`.
    ///
    /// # Errors
    /// The waker cannot be registered.
    pub fn new(registry: &mio::Registry, token: mio::Token, ids: ConnIds) -> std::io::Result<Hub> {
        let waker = Arc::new(mio::Waker::new(registry, token)?);
        let (tx, rx) = mpsc::channel();
        Ok(Hub { rx, sender: HubSender { tx, waker, ids }, handles: HashMap::new() })
    }

    /// A sender for a transport.
    #[must_use]
    pub fn sender(&self) -> HubSender {
        self.sender.clone()
    }

    /// The next pending event, keeping the handle of every opened connection.
    pub fn try_recv(&mut self) -> Option<NetEvent> {
        let mut event = self.rx.try_recv().ok()?;
        match &mut event {
            NetEvent::Opened { conn, handle, .. } => {
                if let Some(h) = handle.take() {
                    self.handles.insert(*conn, h);
                }
            }
            NetEvent::Closed { conn, .. } => {
                self.handles.remove(conn);
            }
            NetEvent::Received { .. } => {}
        }
        Some(event)
    }

    /// Whether `conn` is one of this hub's connections.
    #[must_use]
    pub fn owns(&self, conn: ConnId) -> bool {
        self.handles.contains_key(&conn)
    }

    /// Queues bytes for `conn`. False: unknown or gone.
    pub fn send(&self, conn: ConnId, bytes: impl Into<Bytes>) -> bool {
        self.handles.get(&conn).is_some_and(|h| h.send(Outbound::Data(bytes.into())))
    }

    /// Asks `conn` to flush and close; its `Closed` event follows.
    pub fn close(&self, conn: ConnId) {
        if let Some(h) = self.handles.get(&conn) {
            h.send(Outbound::Close);
        }
    }

    /// The loop has handed `n` bytes of `conn`'s `Received` events to the
    /// core: returns that much inbound credit to its transport, which may
    /// then read more from the peer. A no-op for a connection the hub does
    /// not own (TCP, or gone) or whose transport has no inbound credit.
    pub fn consumed(&self, conn: ConnId, n: usize) {
        if let Some(h) = self.handles.get(&conn) {
            h.consumed(n);
        }
    }

    /// Bytes queued for `conn` and not yet written.
    #[must_use]
    pub fn backlog(&self, conn: ConnId) -> usize {
        self.handles.get(&conn).map_or(0, ConnHandle::backlog)
    }

    /// Open connections.
    #[must_use]
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether no connection is open.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
}
