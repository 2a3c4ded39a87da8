//! The owner's side of the relay: connections relayed by the edges become
//! connections of the owner's loop (`Transport::Relay`, through its hub),
//! and the owner beats on `confab.C.p<N>.owner` with its lease's token.
//! One host per partition a node owns (a single partition's owner has one,
//! for partition 0).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use confab_transports::hub::{ConnHandle, ConnId, HubSender, NetEvent, Outbound, Transport};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::envelope::{Envelope, OwnerBeat};
use super::{ALIVE_EVERY, RelayConfig, SILENT_AFTER, Subjects};

/// The owner's relay: a thread with its NATS client. Dropping it stops
/// the thread (the connections it relayed then end as the node stops).
#[derive(Debug)]
pub struct RelayHost {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RelayHost {
    /// Starts relaying for the owner of `partition`'s lease `token`:
    /// opens, data and closes from the edges become `hub`'s events.
    /// `leaving` says when the owner's node is stopping: its heartbeats then
    /// say so, and the edges stop relaying to it at once.
    ///
    /// # Errors
    /// The thread or its runtime cannot be made.
    pub fn start(
        config: RelayConfig,
        partition: u8,
        token: u64,
        hub: HubSender,
        leaving: impl Fn() -> bool + Send + 'static,
    ) -> std::io::Result<RelayHost> {
        let (stop, stopped) = oneshot::channel();
        let rt = super::runtime()?;
        let thread = std::thread::Builder::new().name("confab-relay-host".into()).spawn(move || {
            rt.block_on(serve(config, partition, token, hub, Box::new(leaving), stopped));
        })?;
        Ok(RelayHost { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for RelayHost {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a connection's handle hands the relay thread.
#[derive(Debug)]
struct Out {
    edge: Key,
    conn: u64,
    out: Outbound,
}

/// One run of one edge: its subject token and its incarnation.
type Key = (Arc<str>, u64);

#[derive(Debug)]
struct Relayed {
    id: ConnId,
    /// The next inbound message's number.
    next_in: u64,
    /// The last outbound data message's number.
    out_seq: u64,
    backlog: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct EdgeRun {
    /// Where its replies go (made once per edge, not per message).
    out: async_nats::Subject,
    heard: Instant,
    conns: HashMap<u64, Relayed>,
}

/// The run of `key` in `edges`, heard now (made at its first message).
fn heard<'a>(edges: &'a mut HashMap<Key, EdgeRun>, subjects: &Subjects, key: Key) -> &'a mut EdgeRun {
    let run = edges.entry(key).or_insert_with_key(|k| EdgeRun {
        out: subjects.outbound(&k.0).into(),
        heard: Instant::now(),
        conns: HashMap::new(),
    });
    run.heard = Instant::now();
    run
}

struct Host {
    config: RelayConfig,
    /// The partition it owns.
    partition: u8,
    /// This owner's lease token: only messages carrying it are taken.
    token: u64,
    subjects: Subjects,
    client: super::Publisher,
    hub: HubSender,
    edges: HashMap<Key, EdgeRun>,
    out_tx: mpsc::UnboundedSender<Out>,
}

async fn serve(
    config: RelayConfig,
    partition: u8,
    token: u64,
    hub: HubSender,
    leaving: Box<dyn Fn() -> bool + Send>,
    mut stopped: oneshot::Receiver<()>,
) {
    let client = match super::connect(&config, "owner").await {
        Ok(c) => c,
        Err(e) => {
            // Bad URL: the node serves its own clients; no edge can reach it.
            warn!(nats = %super::redacted(&config.url), "relay: cannot use NATS ({e}); this owner serves its own connections only");
            return;
        }
    };
    let subjects = Subjects::new(&config.cluster);
    let mut inbound = match client.subscribe(subjects.inbound_all(partition)).await {
        Ok(s) => s,
        Err(e) => {
            warn!("relay: cannot subscribe ({e}); this owner serves its own connections only");
            return;
        }
    };
    info!(nats = %super::redacted(&config.url), cluster = %config.cluster, partition, token, "relay: serving the edges' connections");
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    let beat = |leaving| OwnerBeat { token, leaving, node: config.node.clone() }.encode();
    let (beat, goodbye) = (beat(false), beat(true));
    let client = super::Publisher::new(client);
    let owner_subject = subjects.owner(partition).into();
    let mut host = Host { config, partition, token, subjects, client, hub, edges: HashMap::new(), out_tx };
    let mut tick = tokio::time::interval(ALIVE_EVERY);
    loop {
        tokio::select! {
            // The stop first: with NATS stalled, every other branch may wait.
            biased;
            _ = &mut stopped => break,
            Some(msg) = inbound.next() => host.inbound(&msg.subject, &msg.payload).await,
            Some(out) = out_rx.recv() => host.outbound(out).await,
            _ = tick.tick() => {
                let beat = if leaving() { goodbye.clone() } else { beat.clone() };
                host.client.publish(&owner_subject, beat).await;
                host.sweep(Instant::now()).await;
            }
        }
    }
    // Every edge told, within a bound: the rest learn from the silence. The
    // beat first: no edge relays a new connection here once it has it.
    let goodbye = async {
        host.client.publish(&owner_subject, goodbye.clone()).await;
        for (key, run) in std::mem::take(&mut host.edges) {
            for (conn, r) in run.conns {
                host.end(&key, conn, r.id, "relay stopped").await;
            }
        }
        host.client.flush().await;
    };
    let _ = tokio::time::timeout(super::GOODBYE_WAIT, goodbye).await;
}

impl Host {
    async fn inbound(&mut self, subject: &str, payload: &Bytes) {
        let Some(edge) = self.subjects.edge_of(self.partition, subject) else { return };
        let env = match Envelope::decode(payload) {
            // Bound to another owner (an older one, or a newer one while
            // this one has not stopped yet): not this owner's connection.
            Ok((token, env)) if token == self.token || matches!(env, Envelope::Alive { .. }) => env,
            Ok(_) => return,
            Err(e) => {
                warn!(edge, "relay: dropped a message: {e}");
                return;
            }
        };
        let edge: Arc<str> = Arc::from(edge);
        match env {
            Envelope::Alive { incarnation } => {
                heard(&mut self.edges, &self.subjects, (edge, incarnation));
            }
            Envelope::Open { incarnation, conn, transport, peer } => {
                let key = (edge, incarnation);
                let run = heard(&mut self.edges, &self.subjects, key.clone());
                if let Some(old) = run.conns.remove(&conn) {
                    warn!(edge = %key.0, conn, "relay: connection opened twice; ending both");
                    let _ = self.hub.send(NetEvent::Closed { conn: old.id, reason: "relay: opened twice".into() });
                    self.publish(&key, Envelope::Close { incarnation, conn, reason: "opened twice".into() }).await;
                    return;
                }
                let id = self.hub.next_id();
                let backlog = Arc::new(AtomicUsize::new(0));
                let tx = self.out_tx.clone();
                let (k, b) = (key.clone(), Arc::clone(&backlog));
                // `ConnHandle::send` counts what it queues in `backlog`; the
                // relay thread takes it off once published.
                let handle = ConnHandle::new(move |out| tx.send(Out { edge: k.clone(), conn, out }).is_ok(), b);
                run.conns.insert(conn, Relayed { id, next_in: 1, out_seq: 0, backlog });
                debug!(edge = %key.0, conn, %id, %transport, ?peer, "relay: connection opened");
                let _ = self.hub.send(NetEvent::Opened {
                    conn: id,
                    transport: Transport::Relay,
                    peer,
                    handle: Some(handle),
                });
            }
            Envelope::Data { incarnation, conn, seq, bytes } => {
                let key = (edge, incarnation);
                let Some(run) = self.edges.get_mut(&key) else {
                    self.publish(&key, Envelope::Close { incarnation, conn, reason: "unknown connection".into() })
                        .await;
                    return;
                };
                run.heard = Instant::now();
                let Some(r) = run.conns.get_mut(&conn) else {
                    self.publish(&key, Envelope::Close { incarnation, conn, reason: "unknown connection".into() })
                        .await;
                    return;
                };
                if seq != r.next_in {
                    let (id, expected) = (r.id, r.next_in);
                    run.conns.remove(&conn);
                    warn!(edge = %key.0, conn, expected, got = seq, "relay: a message was lost; ending the connection");
                    self.end(&key, conn, id, "relay: a message was lost").await;
                    return;
                }
                r.next_in += 1;
                let _ = self.hub.send(NetEvent::Received { conn: r.id, bytes: bytes.to_vec() });
            }
            Envelope::Close { incarnation, conn, reason } => {
                if let Some(r) = self.edges.get_mut(&(edge, incarnation)).and_then(|run| run.conns.remove(&conn)) {
                    let _ = self.hub.send(NetEvent::Closed { conn: r.id, reason: format!("edge: {reason}") });
                }
            }
        }
    }

    /// The loop's bytes or close for a relayed connection.
    async fn outbound(&mut self, Out { edge, conn, out }: Out) {
        let incarnation = edge.1;
        let Some(r) = self.edges.get_mut(&edge).and_then(|run| run.conns.get_mut(&conn)) else { return };
        match out {
            Outbound::Data(bytes) => {
                r.backlog.fetch_sub(bytes.len(), Ordering::Relaxed);
                let mut msgs = Vec::new();
                for piece in super::pieces(&bytes, self.client.chunk()) {
                    r.out_seq += 1;
                    msgs.push(Envelope::Data { incarnation, conn, seq: r.out_seq, bytes: piece });
                }
                for m in msgs {
                    if !self.publish(&edge, m).await {
                        // A piece is lost: the rest would only follow a gap.
                        let Some(r) = self.edges.get_mut(&edge).and_then(|run| run.conns.remove(&conn)) else { return };
                        return self.end(&edge, conn, r.id, "relay: NATS did not take the connection's bytes").await;
                    }
                }
            }
            Outbound::Close => {
                let Some(r) = self.edges.get_mut(&edge).and_then(|run| run.conns.remove(&conn)) else { return };
                self.end(&edge, conn, r.id, "closed by the server").await;
            }
        }
    }

    /// Ends a relayed connection on both sides: the edge is told, the loop gets its `Closed`.
    async fn end(&mut self, edge: &Key, conn: u64, id: ConnId, reason: &str) {
        self.publish(edge, Envelope::Close { incarnation: edge.1, conn, reason: reason.to_owned() }).await;
        let _ = self.hub.send(NetEvent::Closed { conn: id, reason: reason.to_owned() });
    }

    async fn publish(&self, edge: &Key, env: Envelope) -> bool {
        let payload = env.encode(self.token);
        match self.edges.get(edge) {
            Some(run) => self.client.publish(&run.out, payload).await,
            // A run already ended or never heard (an answer to a stray message).
            None => self.client.publish(&self.subjects.outbound(&edge.0).into(), payload).await,
        }
    }

    /// Ends the connections of edges silent for [`SILENT_AFTER`].
    async fn sweep(&mut self, now: Instant) {
        let silent: Vec<Key> = self
            .edges
            .iter()
            .filter(|(_, run)| now.duration_since(run.heard) > SILENT_AFTER)
            .map(|(k, _)| k.clone())
            .collect();
        for key in silent {
            let Some(run) = self.edges.remove(&key) else { continue };
            if !run.conns.is_empty() {
                warn!(edge = %key.0, connections = run.conns.len(), node = %self.config.node, "relay: edge silent; ending its connections");
            }
            // The loop first; the edge is told too (in case only its
            // `Alive`s were lost), within a bound.
            let mut closes = Vec::with_capacity(run.conns.len());
            for (conn, r) in run.conns {
                let _ = self.hub.send(NetEvent::Closed { conn: r.id, reason: "relay: edge silent".into() });
                closes.push(Envelope::Close { incarnation: key.1, conn, reason: "relay: edge silent".into() });
            }
            let tell = async {
                for close in closes {
                    self.publish(&key, close).await;
                }
            };
            let _ = tokio::time::timeout(super::GOODBYE_WAIT, tell).await;
        }
    }
}
