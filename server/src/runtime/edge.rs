//! A node serving as an edge of a cluster (`Node::bind_edge`): it accepts
//! connections on every transport and relays each one's bytes to the
//! partition's owner (`crate::relay::edge`), writing back what the owner
//! sends. Its core gets no session: the owner runs them all.

use std::io;

use confab_proto::server::{MemoryStore, State};
use confab_transports::hub::{ConnId, NetEvent, Transport};
use tracing::{debug, info, warn};

use super::{Node, NodeConfig};
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
        // No owner heard yet: refuse connections until one is.
        node.set_accepting(false);
        Ok(node)
    }

    /// A transport's event on an edge: handed to the relay.
    pub(super) fn edge_net_event(&mut self, event: NetEvent) {
        let Some(edge) = &self.edge else { return };
        match event {
            NetEvent::Opened { conn, transport, peer, .. } => {
                self.summary.connections += 1;
                debug!(%conn, %transport, ?peer, "connection opened (relayed)");
                self.relayed.insert(conn, transport);
                edge.open(conn, transport, peer);
            }
            NetEvent::Received { conn, bytes } => {
                let n = bytes.len();
                if self.relayed.contains_key(&conn) {
                    edge.data(conn, bytes);
                }
                self.hub.consumed(conn, n);
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
        let max_backlog = self.core.config().max_session_backlog;
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
                EdgeEvent::Owner(heard) if !self.stopping => {
                    info!(accepting = heard, "relay: an owner is {}", if heard { "heard" } else { "no longer heard" });
                    self.set_accepting(heard);
                }
                EdgeEvent::Owner(_) => {}
            }
        }
    }

    /// Opens or closes every listener (QUIC: accepts or refuses). A
    /// listener that cannot be bound again is logged; the relay tries again
    /// at its next owner change.
    fn set_accepting(&mut self, accepting: bool) {
        let registry = self.poll.registry();
        if let Some(tcp) = self.tcp.as_mut() {
            if accepting {
                if let Err(e) = tcp.resume_accepting(registry) {
                    warn!("edge: cannot listen on TCP again: {e}");
                }
            } else {
                tcp.stop_accepting(registry);
            }
        }
        if let Some(w) = self.ws.as_mut() {
            if accepting {
                if let Err(e) = w.server.resume_accepting(registry) {
                    warn!("edge: cannot listen on WebSocket again: {e}");
                }
            } else {
                w.server.stop_accepting(registry);
            }
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
        if let Some(edge) = &self.edge {
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
