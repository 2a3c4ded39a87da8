//! The edge's side of the relay: a standby's loop hands each connection's
//! bytes here (a split state's node, the connections whose frame goes to a
//! partition another node serves), and gets back the owner's bytes and
//! closes.
//!
//! An edge relays a connection to a partition only while it hears that
//! partition's owner: a connection opened with no owner heard is closed at
//! once (its client tries another node), and the connections bound to an
//! owner are closed when that owner falls silent for [`SILENT_AFTER`] or a
//! heartbeat with a greater token says another node took the partition.

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
    /// Close the connection: nothing of it reached an owner (none is heard
    /// for its partition), so its client may send it all again elsewhere
    /// (a split state's node says so with 421).
    Unrelayed {
        /// The connection.
        conn: ConnId,
    },
    /// An owner of `partition` is heard (`heard`) or none is any more: a
    /// standby's loop accepts connections only while partition 0's is, so
    /// that clients try another node at once instead of being closed after
    /// their handshake; a split state's node relays a connection to a
    /// partition only while its owner is heard.
    Owner {
        /// The partition.
        partition: u8,
        /// Whether an owner is heard.
        heard: bool,
    },
}

/// What the loop tells the relay.
#[derive(Debug)]
enum Cmd {
    Open {
        conn: ConnId,
        partition: u8,
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

    /// A client's connection is relayed to `partition`'s owner from now on.
    pub fn open(&mut self, conn: ConnId, partition: u8, transport: Transport, peer: Option<SocketAddr>) {
        self.queued.insert(conn, Arc::new(AtomicUsize::new(0)));
        let _ = self.cmds.send(Cmd::Open { conn, partition, transport, peer });
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
    /// The partition it is relayed to.
    partition: u8,
    /// The owner's token the connection was opened with.
    token: u64,
    /// The last data message sent.
    out_seq: u64,
    /// The next data message expected.
    next_in: u64,
}

struct Edge {
    incarnation: u64,
    subjects: Subjects,
    node: String,
    /// Each partition's inbound subject, made once.
    inbound: HashMap<u8, async_nats::Subject>,
    client: super::Publisher,
    out: Events,
    /// Each partition's owner heard last: its token, name and when.
    owners: HashMap<u8, (u64, String, Instant)>,
    /// Per partition, the greatest token ever heard: a heartbeat with a
    /// smaller one is an old owner's (resumed after a takeover), even after
    /// a silence.
    highest: HashMap<u8, u64>,
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
        match (client.subscribe(subjects.outbound(&config.node)).await, client.subscribe(subjects.owner_all()).await) {
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
        subjects,
        node: config.node.clone(),
        inbound: HashMap::new(),
        client: super::Publisher::new(client),
        out,
        owners: HashMap::new(),
        highest: HashMap::new(),
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
            Some(msg) = beats.next() => edge.beat(&msg.subject, &msg.payload).await,
            _ = tick.tick() => {
                let heard: Vec<u8> = edge.owners.keys().copied().collect();
                for partition in heard {
                    let subject = edge.inbound_of(partition);
                    edge.client.publish(&subject, Envelope::Alive { incarnation }.encode(0)).await;
                }
                edge.check_owners(Instant::now()).await;
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
            Cmd::Open { conn, partition, transport, peer } => {
                let Some(&(token, _, _)) = self.owners.get(&partition) else {
                    debug!(%conn, partition, "relay: no owner heard; closing the connection");
                    self.out.send(EdgeEvent::Unrelayed { conn });
                    return;
                };
                self.conns.insert(conn, Bound { partition, token, out_seq: 0, next_in: 1 });
                let open = Envelope::Open {
                    incarnation: self.incarnation,
                    conn: conn.0,
                    transport: transport.as_str().into(),
                    peer,
                };
                self.publish(open, partition, token).await;
            }
            Cmd::Data { conn, bytes, queued } => {
                // Handed to NATS below, or dropped: no longer held either way.
                let _held = Release(queued, bytes.len());
                let Some(b) = self.conns.get_mut(&conn) else { return };
                let (partition, token) = (b.partition, b.token);
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
                    if !self.publish(m, partition, token).await {
                        // A piece is lost: the rest would only follow a gap.
                        return self.end(conn, "relay: NATS did not take the connection's bytes").await;
                    }
                }
            }
            Cmd::Closed { conn, reason } => {
                if let Some(b) = self.conns.remove(&conn) {
                    let close = Envelope::Close { incarnation: self.incarnation, conn: conn.0, reason };
                    self.publish(close, b.partition, b.token).await;
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
                // A connection this edge ended and whose close the owner missed: again, to
                // the partitions whose owner has that token (the reply names none).
                let to: Vec<u8> = self.owners.iter().filter(|(_, o)| o.0 == token).map(|(p, _)| *p).collect();
                for partition in to {
                    let close = Envelope::Close { incarnation, conn, reason: "unknown connection".into() };
                    self.publish(close, partition, token).await;
                }
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

    async fn beat(&mut self, subject: &str, payload: &[u8]) {
        let Some(partition) = self.subjects.owner_partition(subject) else { return };
        let Ok(beat) = OwnerBeat::decode(payload) else { return };
        let now = Instant::now();
        let highest = self.highest.entry(partition).or_insert(0);
        // An old owner still beating (resumed after a takeover): it is
        // fenced and stops at its next renewal; never relay to it again.
        if beat.token < *highest {
            return;
        }
        *highest = beat.token;
        if beat.leaving {
            // Stopping: no new connection for it, and what it runs it closes.
            if self.owners.remove(&partition).is_some() {
                info!(partition, owner = %beat.node, token = beat.token, "relay: the partition's owner is leaving");
                self.out.send(EdgeEvent::Owner { partition, heard: false });
                self.end_bound(|b| b.partition == partition, "relay: the partition's owner is leaving").await;
            }
            return;
        }
        match self.owners.get_mut(&partition) {
            Some((token, _, heard)) if *token == beat.token => *heard = now,
            _ => {
                info!(partition, owner = %beat.node, token = beat.token, "relay: the partition's owner is heard");
                // Every new owner is told (a node that gave a partition back stops
                // relaying to it until it hears the next owner).
                self.out.send(EdgeEvent::Owner { partition, heard: true });
                let token = beat.token;
                self.owners.insert(partition, (token, beat.node, now));
                self.end_bound(|b| b.partition == partition && b.token != token, "relay: the partition changed owner")
                    .await;
            }
        }
    }

    async fn check_owners(&mut self, now: Instant) {
        let silent: Vec<(u8, u64, String)> = self
            .owners
            .iter()
            .filter(|(_, (_, _, heard))| now.duration_since(*heard) > SILENT_AFTER)
            .map(|(p, (token, node, _))| (*p, *token, node.clone()))
            .collect();
        for (partition, token, node) in silent {
            let bound = self.conns.values().filter(|b| b.partition == partition).count();
            warn!(partition, owner = %node, token, connections = bound, "relay: the partition's owner is silent; ending its connections");
            self.owners.remove(&partition);
            self.out.send(EdgeEvent::Owner { partition, heard: false });
            self.end_bound(|b| b.partition == partition, "relay: the partition's owner is silent").await;
        }
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
                b.partition,
                b.token,
            ));
        }
        let tell = async {
            let mut all = true;
            for (close, partition, token) in closes {
                all &= self.publish(close, partition, token).await;
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
        self.publish(close, b.partition, b.token).await;
    }

    /// `partition`'s inbound subject (made once).
    fn inbound_of(&mut self, partition: u8) -> async_nats::Subject {
        let (subjects, node) = (&self.subjects, &self.node);
        self.inbound.entry(partition).or_insert_with(|| subjects.inbound(partition, node).into()).clone()
    }

    /// Publishes to the owner of `partition` whose token is `token`.
    async fn publish(&mut self, env: Envelope, partition: u8, token: u64) -> bool {
        let subject = self.inbound_of(partition);
        self.client.publish(&subject, env.encode(token)).await
    }
}
