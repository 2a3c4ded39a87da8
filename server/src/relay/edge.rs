//! The edge's side of the relay: a standby's loop hands each connection's
//! bytes here, and gets back the owner's bytes and closes.
//!
//! An edge relays a connection only while it hears an owner: a connection
//! opened with no owner heard is closed at once (its client tries another
//! node), and the connections bound to an owner are closed when that owner
//! falls silent for [`SILENT_AFTER`] or a heartbeat with a greater token
//! says another node took the partition.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use confab_transports::hub::{ConnId, Transport};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::envelope::{Envelope, OwnerBeat};
use super::{ALIVE_EVERY, RelayConfig, SILENT_AFTER, Subjects};

/// What the relay tells the edge's loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeEvent {
    /// Write these bytes to the connection.
    Data {
        /// The connection.
        conn: ConnId,
        /// The owner's bytes.
        bytes: Bytes,
    },
    /// Flush and close the connection.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why, for the log.
        reason: String,
    },
    /// An owner is heard (`true`) or none is any more (`false`): the loop
    /// accepts connections only while one is, so that clients try another
    /// node at once instead of being closed after their handshake.
    Owner(bool),
}

/// What the loop tells the relay.
#[derive(Debug)]
enum Cmd {
    Open {
        conn: ConnId,
        transport: Transport,
        peer: Option<SocketAddr>,
    },
    /// `queued` counts the connection's bytes not yet handed to NATS.
    Data {
        conn: ConnId,
        bytes: Vec<u8>,
        queued: Arc<AtomicUsize>,
    },
    Closed {
        conn: ConnId,
        reason: String,
    },
}

/// An edge's relay: a thread with its NATS client.
#[derive(Debug)]
pub struct EdgeRelay {
    cmds: mpsc::UnboundedSender<Cmd>,
    /// Per connection, the bytes handed to the relay and not yet to NATS.
    queued: HashMap<ConnId, Arc<AtomicUsize>>,
    events: std::sync::mpsc::Receiver<EdgeEvent>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EdgeRelay {
    /// Starts relaying; `wake` wakes the loop when events are ready.
    ///
    /// # Errors
    /// The thread, its runtime or the incarnation's randomness failed.
    pub fn start(config: RelayConfig, wake: Arc<mio::Waker>) -> std::io::Result<EdgeRelay> {
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(format!("no OS randomness: {e}")))?;
        let incarnation = u64::from_le_bytes(seed);
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let (event_tx, events) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel();
        let rt = super::runtime()?;
        let thread = std::thread::Builder::new().name("confab-relay-edge".into()).spawn(move || {
            let out = Events { tx: event_tx, wake };
            rt.block_on(serve(config, incarnation, cmd_rx, out, stopped));
        })?;
        Ok(EdgeRelay { cmds, queued: HashMap::new(), events, stop: Some(stop), thread: Some(thread) })
    }

    /// A client connected.
    pub fn open(&mut self, conn: ConnId, transport: Transport, peer: Option<SocketAddr>) {
        self.queued.insert(conn, Arc::new(AtomicUsize::new(0)));
        let _ = self.cmds.send(Cmd::Open { conn, transport, peer });
    }

    /// The client sent bytes: how many of the connection's bytes the relay
    /// now holds and NATS has not taken yet (the loop bounds it).
    pub fn data(&mut self, conn: ConnId, bytes: Vec<u8>) -> usize {
        let Some(queued) = self.queued.get(&conn) else { return 0 };
        let held = queued.fetch_add(bytes.len(), Ordering::Relaxed) + bytes.len();
        let _ = self.cmds.send(Cmd::Data { conn, bytes, queued: Arc::clone(queued) });
        held
    }

    /// The connection ended on the edge's side.
    pub fn closed(&mut self, conn: ConnId, reason: &str) {
        self.queued.remove(&conn);
        let _ = self.cmds.send(Cmd::Closed { conn, reason: reason.to_owned() });
    }

    /// The next event for the loop.
    #[must_use]
    pub fn try_recv(&self) -> Option<EdgeEvent> {
        self.events.try_recv().ok()
    }
}

impl Drop for EdgeRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Takes `.1` bytes off a connection's count when dropped.
struct Release(Arc<AtomicUsize>, usize);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

struct Events {
    tx: std::sync::mpsc::Sender<EdgeEvent>,
    wake: Arc<mio::Waker>,
}

impl Events {
    fn send(&self, e: EdgeEvent) {
        if self.tx.send(e).is_ok() {
            let _ = self.wake.wake();
        }
    }
}

#[derive(Debug)]
struct Bound {
    /// The owner's token the connection was opened with.
    token: u64,
    /// The last data message sent.
    out_seq: u64,
    /// The next data message expected.
    next_in: u64,
}

struct Edge {
    incarnation: u64,
    inbound: async_nats::Subject,
    client: super::Publisher,
    out: Events,
    /// The owner heard last: its token, name and when.
    owner: Option<(u64, String, Instant)>,
    /// The greatest token ever heard: a heartbeat with a smaller one is an
    /// old owner's (resumed after a takeover), even after a silence.
    highest: u64,
    /// The relayed connections; a connection's number on the wire is its
    /// `ConnId`'s.
    conns: HashMap<ConnId, Bound>,
}

async fn serve(
    config: RelayConfig,
    incarnation: u64,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    out: Events,
    mut stopped: oneshot::Receiver<()>,
) {
    let subjects = Subjects::new(&config.cluster);
    let client = match super::connect(&config, "edge").await {
        Ok(c) => c,
        Err(e) => {
            warn!(nats = %super::redacted(&config.url), "relay: cannot use NATS ({e}); this edge closes every connection");
            close_all_forever(&mut cmds, &out, &mut stopped).await;
            return;
        }
    };
    let (mut replies, mut beats) =
        match (client.subscribe(subjects.outbound(&config.node)).await, client.subscribe(subjects.owner()).await) {
            (Ok(r), Ok(b)) => (r, b),
            (Err(e), _) | (_, Err(e)) => {
                warn!("relay: cannot subscribe ({e}); this edge closes every connection");
                close_all_forever(&mut cmds, &out, &mut stopped).await;
                return;
            }
        };
    info!(nats = %super::redacted(&config.url), cluster = %config.cluster, incarnation, "relay: edge relaying to the partition's owner");
    let mut edge = Edge {
        incarnation,
        inbound: subjects.inbound(&config.node).into(),
        client: super::Publisher::new(client),
        out,
        owner: None,
        highest: 0,
        conns: HashMap::new(),
    };
    let mut tick = tokio::time::interval(ALIVE_EVERY);
    loop {
        tokio::select! {
            // The stop first: with NATS stalled, every other branch may wait.
            biased;
            _ = &mut stopped => break,
            Some(cmd) = cmds.recv() => edge.command(cmd).await,
            Some(msg) = replies.next() => edge.reply(&msg.payload).await,
            Some(msg) = beats.next() => edge.beat(&msg.payload).await,
            _ = tick.tick() => {
                edge.client.publish(&edge.inbound, Envelope::Alive { incarnation }.encode(0)).await;
                edge.check_owner(Instant::now()).await;
            }
        }
    }
    if edge.end_bound(|_| true, "edge stopping").await {
        edge.client.flush().await;
    }
}

/// Without NATS, every connection is closed as it opens.
async fn close_all_forever(cmds: &mut mpsc::UnboundedReceiver<Cmd>, out: &Events, stopped: &mut oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut *stopped => return,
            Some(cmd) = cmds.recv() => if let Cmd::Open { conn, .. } = cmd {
                out.send(EdgeEvent::Close { conn, reason: "relay: NATS unusable".into() });
            },
        }
    }
}

impl Edge {
    async fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Open { conn, transport, peer } => {
                let Some(&(token, _, _)) = self.owner.as_ref() else {
                    debug!(%conn, "relay: no owner heard; closing the connection");
                    self.out.send(EdgeEvent::Close { conn, reason: "relay: no owner heard".into() });
                    return;
                };
                self.conns.insert(conn, Bound { token, out_seq: 0, next_in: 1 });
                let open = Envelope::Open {
                    incarnation: self.incarnation,
                    conn: conn.0,
                    transport: transport.as_str().into(),
                    peer,
                };
                self.publish(open, token).await;
            }
            Cmd::Data { conn, bytes, queued } => {
                // Handed to NATS below, or dropped: no longer held either way.
                let _held = Release(queued, bytes.len());
                let Some(b) = self.conns.get_mut(&conn) else { return };
                let token = b.token;
                let bytes = Bytes::from(bytes);
                let mut msgs = Vec::new();
                for piece in super::pieces(&bytes, self.client.chunk()) {
                    b.out_seq += 1;
                    msgs.push(Envelope::Data {
                        incarnation: self.incarnation,
                        conn: conn.0,
                        seq: b.out_seq,
                        bytes: piece,
                    });
                }
                for m in msgs {
                    if !self.publish(m, token).await {
                        // A piece is lost: the rest would only follow a gap.
                        return self.end(conn, "relay: NATS did not take the connection's bytes").await;
                    }
                }
            }
            Cmd::Closed { conn, reason } => {
                if let Some(b) = self.conns.remove(&conn) {
                    self.publish(Envelope::Close { incarnation: self.incarnation, conn: conn.0, reason }, b.token)
                        .await;
                }
            }
        }
    }

    async fn reply(&mut self, payload: &Bytes) {
        let (token, env) = match Envelope::decode(payload) {
            Ok(e) => e,
            Err(e) => {
                warn!("relay: dropped a message from the owner: {e}");
                return;
            }
        };
        // Only the owner a connection is bound to writes to it or closes it.
        let bound = |edge: &Edge, conn: u64| {
            let id = ConnId(conn);
            edge.conns.get(&id).is_some_and(|b| b.token == token).then_some(id)
        };
        match env {
            Envelope::Data { incarnation, conn, .. }
                if incarnation == self.incarnation && !self.conns.contains_key(&ConnId(conn)) =>
            {
                // A connection this edge ended and whose close the owner missed: again.
                let close = Envelope::Close { incarnation, conn, reason: "unknown connection".into() };
                self.publish(close, token).await;
            }
            Envelope::Data { incarnation, conn, seq, bytes } if incarnation == self.incarnation => {
                let Some(id) = bound(self, conn) else { return };
                let Some(b) = self.conns.get_mut(&id) else { return };
                if seq != b.next_in {
                    warn!(conn = %id, expected = b.next_in, got = seq, "relay: a message from the owner was lost; ending the connection");
                    self.end(id, "relay: a message was lost").await;
                    return;
                }
                b.next_in += 1;
                self.out.send(EdgeEvent::Data { conn: id, bytes });
            }
            Envelope::Close { incarnation, conn, reason } if incarnation == self.incarnation => {
                let Some(id) = bound(self, conn) else { return };
                self.conns.remove(&id);
                self.out.send(EdgeEvent::Close { conn: id, reason });
            }
            // Another edge's (a name mapped to the same token), or not for edges.
            _ => {}
        }
    }

    async fn beat(&mut self, payload: &[u8]) {
        let Ok(beat) = OwnerBeat::decode(payload) else { return };
        let now = Instant::now();
        // An old owner still beating (resumed after a takeover): it is
        // fenced and stops at its next renewal; never relay to it again.
        if beat.token < self.highest {
            return;
        }
        if beat.leaving {
            // Stopping: no new connection for it, and what it runs it closes.
            self.highest = beat.token;
            if self.owner.take().is_some() {
                info!(owner = %beat.node, token = beat.token, "relay: the partition's owner is leaving");
                self.out.send(EdgeEvent::Owner(false));
                self.end_bound(|_| true, "relay: the partition's owner is leaving").await;
            }
            return;
        }
        match &mut self.owner {
            Some((token, _, heard)) if *token == beat.token => *heard = now,
            _ => {
                info!(owner = %beat.node, token = beat.token, "relay: the partition's owner is heard");
                self.highest = beat.token;
                if self.owner.is_none() {
                    self.out.send(EdgeEvent::Owner(true));
                }
                self.owner = Some((beat.token, beat.node, now));
                self.end_bound(|b| b.token != beat.token, "relay: the partition changed owner").await;
            }
        }
    }

    async fn check_owner(&mut self, now: Instant) {
        let Some((token, node, heard)) = &self.owner else { return };
        if now.duration_since(*heard) <= SILENT_AFTER {
            return;
        }
        warn!(owner = %node, token, connections = self.conns.len(), "relay: the partition's owner is silent; ending its connections");
        self.owner = None;
        self.out.send(EdgeEvent::Owner(false));
        self.end_bound(|_| true, "relay: the partition's owner is silent").await;
    }

    /// Ends the connections `which` picks: the loop closes each at once;
    /// their owners are told within [`GOODBYE_WAIT`](super::GOODBYE_WAIT)
    /// (NATS stalled: the rest learn from the edge's silence or a gap).
    /// Whether NATS took every close.
    async fn end_bound(&mut self, which: impl Fn(&Bound) -> bool, reason: &str) -> bool {
        let ended: Vec<ConnId> = self.conns.iter().filter(|(_, b)| which(b)).map(|(c, _)| *c).collect();
        let mut closes = Vec::with_capacity(ended.len());
        for conn in ended {
            let Some(b) = self.conns.remove(&conn) else { continue };
            self.out.send(EdgeEvent::Close { conn, reason: reason.to_owned() });
            closes.push((
                Envelope::Close { incarnation: self.incarnation, conn: conn.0, reason: reason.to_owned() },
                b.token,
            ));
        }
        let tell = async {
            let mut all = true;
            for (close, token) in closes {
                all &= self.publish(close, token).await;
            }
            all
        };
        // Whether NATS took every close in time (else flushing is pointless).
        tokio::time::timeout(super::GOODBYE_WAIT, tell).await.unwrap_or(false)
    }

    /// Ends a connection: the loop closes it, the owner is told.
    async fn end(&mut self, conn: ConnId, reason: &str) {
        let Some(b) = self.conns.remove(&conn) else { return };
        self.out.send(EdgeEvent::Close { conn, reason: reason.to_owned() });
        let close = Envelope::Close { incarnation: self.incarnation, conn: conn.0, reason: reason.to_owned() };
        self.publish(close, b.token).await;
    }

    /// Publishes to the owner whose token is `token`.
    async fn publish(&self, env: Envelope, token: u64) -> bool {
        self.client.publish(&self.inbound, env.encode(token)).await
    }
}
