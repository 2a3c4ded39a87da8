//! A node serving as an edge of a cluster (`Node::bind_edge`): it accepts
//! connections on every transport and relays each one's bytes to the
//! partition's owner (`crate::relay::edge`), writing back what the owner
//! sends. Its core gets no session: the owner runs them all.

use std::io;

use confab_proto::server::{MemoryStore, State};
use confab_transports::hub::{ConnId, NetEvent, Transport};
use tracing::{debug, info, warn};

use super::{Node, NodeConfig};

/// The bytes of one relayed connection the edge may hold that NATS has not
/// taken yet: four of the largest frames a client may send by default.
pub const MAX_RELAY_QUEUE: usize = 4 << 20;
use crate::relay::RelayConfig;
use crate::relay::edge::{EdgeEvent, EdgeRelay};

impl Node {
    /// Binds the listeners of an edge: every connection is relayed to the
    /// partition's owner over NATS (see [`crate::relay`]). The node holds
    /// no state and commits nothing; its core stays empty.
    ///
    /// # Errors
    /// As [`Node::bind`], or the relay's thread cannot start.
    pub fn bind_edge(config: NodeConfig, relay: RelayConfig) -> io::Result<Node> {
        let state = State::new(config.server.room_history, config.server.dedup_window);
        let store = MemoryStore::from_state(state.clone());
        let mut node = Node::bind(config, store, state)?;
        node.edge = Some(EdgeRelay::start(relay, node.hub.sender().waker())?);
        node.pure_edge = true;
        // No owner heard yet: refuse connections until one is.
        node.set_accepting(false);
        Ok(node)
    }

    /// A transport's event on an edge: handed to the relay.
    pub(super) fn edge_net_event(&mut self, event: NetEvent) {
        let Some(edge) = self.edge.as_mut() else { return };
        match event {
            // Stopping: a handshake that ends now gets no relay (its client
            // tries another node), as the owner refuses it.
            NetEvent::Opened { conn, transport, .. } if self.stopping => {
                debug!(%conn, "connection refused: stopping");
                self.relayed.insert(conn, transport);
                self.close_relayed(conn, transport, "server shutting down");
            }
            NetEvent::Opened { conn, transport, peer, .. } => {
                self.summary.connections += 1;
                debug!(%conn, %transport, ?peer, "connection opened (relayed)");
                self.relayed.insert(conn, transport);
                edge.open(conn, 0, transport, peer);
            }
            NetEvent::Received { conn, bytes } => {
                let n = bytes.len();
                let held = self.relayed.get(&conn).map(|&transport| (transport, edge.data(conn, bytes)));
                self.hub.consumed(conn, n);
                // No flow control across the relay: a client sending faster
                // than NATS takes its bytes is closed at a bound, as a slow
                // reader is, so the edge's memory stays bounded.
                if let Some((transport, held)) = held
                    && held > MAX_RELAY_QUEUE
                {
                    warn!(%conn, held, "relayed connection sends faster than the relay carries; closing it");
                    self.end_relayed(conn, transport, "sending faster than the relay carries");
                }
            }
            NetEvent::Closed { conn, reason } => {
                if self.relayed.remove(&conn).is_some() {
                    debug!(%conn, %reason, "connection closed (relayed)");
                    edge.closed(conn, &reason);
                }
            }
        }
    }

    /// Writes what the owner sent and closes what it (or the relay) closed.
    /// A connection whose client reads slower than the owner writes is
    /// closed at the core's session backlog bound, as the owner would.
    pub(super) fn edge_turn(&mut self) {
        let Some(edge) = &self.edge else { return };
        let mut events = Vec::new();
        while let Some(e) = edge.try_recv() {
            events.push(e);
        }
        let max_backlog = self.max_session_backlog;
        for e in events {
            match e {
                EdgeEvent::Data { conn, bytes } => {
                    let Some(&transport) = self.relayed.get(&conn) else { continue };
                    if self.send_to(conn, transport, bytes) && self.backlog_of(conn, transport) > max_backlog {
                        warn!(%conn, "relayed connection reads too slowly; closing it");
                        self.end_relayed(conn, transport, "slow reader");
                    }
                }
                EdgeEvent::Close { conn, reason } => {
                    if let Some(&transport) = self.relayed.get(&conn) {
                        debug!(%conn, %reason, "closing relayed connection");
                        self.close_relayed(conn, transport, &reason);
                    }
                }
                // A split state's node: the partition's owner went unheard as it relayed.
                EdgeEvent::Unrelayed { conn } if !self.pure_edge => {
                    if self.relayed.contains_key(&conn) {
                        let reason = "the partition's owner is not heard by this node: connect to another node";
                        self.refuse(conn, confab_proto::wire::status::MISDIRECTED, reason);
                    }
                }
                EdgeEvent::Unrelayed { conn } => {
                    if let Some(&transport) = self.relayed.get(&conn) {
                        debug!(%conn, "closing relayed connection: no owner heard");
                        self.close_relayed(conn, transport, "relay: no owner heard");
                    }
                }
                EdgeEvent::Owner { partition, heard } if !self.pure_edge => {
                    let bit = crate::relay::bells::bit(partition);
                    self.owners_heard = if heard { self.owners_heard | bit } else { self.owners_heard & !bit };
                }
                EdgeEvent::Owner { partition: 0, heard } if !self.stopping => {
                    info!(accepting = heard, "relay: an owner is {}", if heard { "heard" } else { "no longer heard" });
                    self.set_accepting(heard);
                }
                EdgeEvent::Owner { .. } => {}
            }
        }
    }

    /// Serves new connections, or refuses them (`accepting` false: TCP and
    /// WebSocket connections are closed as soon as they are accepted, QUIC
    /// ones refused), the listeners staying bound so that no other socket
    /// can take their ports meanwhile.
    pub(super) fn set_accepting(&mut self, accepting: bool) {
        if let Some(tcp) = self.tcp.as_mut() {
            tcp.refuse_new(!accepting);
        }
        if let Some(w) = self.ws.as_mut() {
            w.server.refuse_new(!accepting);
        }
        if let Some(quic) = self.quic.as_mut() {
            if accepting {
                quic.resume_accepting();
            } else {
                quic.stop_accepting();
            }
        }
    }

    /// Stopping: every relayed connection is closed (its client reconnects
    /// elsewhere) and the owner told.
    pub(super) fn edge_shutdown(&mut self) {
        if self.edge.is_none() {
            return;
        }
        let all: Vec<(ConnId, Transport)> = self.relayed.iter().map(|(c, t)| (*c, *t)).collect();
        for (conn, transport) in all {
            self.end_relayed(conn, transport, "server shutting down");
        }
    }

    /// Closes a relayed connection on the edge's side and tells the owner.
    fn end_relayed(&mut self, conn: ConnId, transport: Transport, reason: &str) {
        if let Some(edge) = self.edge.as_mut() {
            edge.closed(conn, reason);
        }
        self.close_relayed(conn, transport, reason);
    }

    /// Flushes and closes a relayed connection (its `Closed` event removes it).
    fn close_relayed(&mut self, conn: ConnId, transport: Transport, reason: &str) {
        match transport {
            Transport::Ws => self.ws_close(conn, None, reason),
            transport => self.close_conn(conn, transport),
        }
    }
}
