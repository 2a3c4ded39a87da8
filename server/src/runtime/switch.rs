//! The node's connections and its cores: every transport event goes
//! through the switchboard (`confab_proto::server::Switchboard`), whose
//! outputs the node does here, in order, as its module docs ask.
//!
//! - A connection's sessions, one per core it was opened at, are kept
//!   until the connection closes: a session the switchboard closed (the
//!   connection bound at another core) still gets the answers its core had
//!   not released yet.
//! - A core that closes a session closes the whole connection, as a single
//!   server closes its one session, and takes it out of the switchboard at
//!   once (nothing it sends after is read: a transport may read until the
//!   peer acknowledges the close); its other sessions end then. A session
//!   the switchboard closed (`ending`) only ends: its core's close is not
//!   the connection's.
//! - A core that refuses a session (its session limit) refuses the
//!   connection: at its first partition when the connection opens, as a
//!   single server does (closed without a frame); at another core, with a
//!   close frame (503), since the client's frames were already read.
//! - A session at a partition this node does not serve (served by another
//!   node of the cluster, or by none yet) is relayed to its owner over NATS
//!   when the node's relay hears one (`relay_to_owner`, `start_relays`);
//!   otherwise it closes the connection with 421 ("misdirected"): the
//!   client tries another node. A connection opens its first session at
//!   the lowest partition the node serves.
//! - A frame for a core whose lease is in doubt (its last renewal was
//!   nearly a lease ago: the process was stopped, and its keeper has not
//!   renewed since; `LeaseWatch::in_doubt`) closes its connection 503:
//!   that core's state may be older than the partition's, another node
//!   having served it meanwhile (a refresh would be answered 401). Once the
//!   keeper renews the lease the core answers again; if it finds the lease
//!   lost, the core stops.
//! - After each round of the cores' turns, [`Node::settle`] tells the
//!   switchboard which frames each core has settled (the session is not
//!   held, and whether it is logged in), so that held frames move on.
//! - The bytes of a frame not complete yet that the switchboard holds for
//!   an unbound connection are told to its first session
//!   (`Server::handle_partial`), whose frame deadline (408) then covers a
//!   frame dripped before any core sees it, as on a single server.

use bytes::Bytes;
use confab_proto::server::SourceKey;
use confab_proto::server::{PartitionId, Switched};
use confab_proto::wire::{Close, Message, status};
use confab_proto::{Now, SessionId};
use confab_transports::hub::{ConnId, NetEvent, Transport};
use tracing::{debug, warn};

use super::core::Mark;
use super::{Conn, Node};

/// A connection leaving for the relay: what it sent that no core here was
/// handed, and where each core it had a session at stood when it left.
#[derive(Debug)]
pub(super) struct PendingRelay {
    link: ConnId,
    partition: PartitionId,
    transport: Transport,
    peer: Option<std::net::SocketAddr>,
    bytes: Vec<u8>,
    marks: Vec<(PartitionId, Mark)>,
}

impl Node {
    /// A transport event: to the switchboard, then its outputs to the cores.
    pub(super) fn net_event(&mut self, now: Now, event: NetEvent) {
        if self.pure_edge {
            self.edge_net_event(event);
            return;
        }
        match event {
            // Stopping: the listeners are closed; relayed connections, which
            // no listener of this node brings, are refused the same way.
            NetEvent::Opened { conn, transport: Transport::Relay, .. } if self.stopping => {
                debug!(%conn, "relayed connection refused: stopping");
                self.close_conn(conn, Transport::Relay);
            }
            NetEvent::Opened { conn, transport, peer, .. } => {
                // The per-source login limit keys on the peer address (IPv4, or IPv6 /64); mem links are local.
                let source = peer.map_or(SourceKey::Local, |p| SourceKey::from_ip(p.ip()));
                debug!(%conn, %transport, ?peer, "connection opened");
                self.conns.insert(conn, Conn { transport, source, peer, sessions: Vec::new() });
                self.board.open_at(conn, self.first_served());
                self.switch(now);
            }
            // Relayed to another node's partition: its bytes go to the relay (after
            // what waits for this node's last answers).
            NetEvent::Received { conn, bytes } if self.relayed.contains_key(&conn) => {
                if self.relay_pending_input(conn, &bytes) {
                    self.hub.consumed(conn, bytes.len());
                } else {
                    self.edge_net_event(NetEvent::Received { conn, bytes });
                }
            }
            NetEvent::Received { conn, bytes } => {
                let n = bytes.len();
                if self.conns.contains_key(&conn) {
                    self.board.input(conn, bytes);
                    self.switch(now);
                    self.report_partial(now, conn);
                }
                // Inbound credit back to mem readers (a no-op for TCP, QUIC, WebSocket,
                // which the loop reads itself, and for conns already gone).
                self.hub.consumed(conn, n);
            }
            NetEvent::Closed { conn, reason } => {
                if self.relayed.contains_key(&conn) {
                    self.edge_net_event(NetEvent::Closed { conn, reason: reason.clone() });
                }
                if self.conns.contains_key(&conn) {
                    debug!(%conn, %reason, "connection closed");
                    // Its sessions end at their cores while the connection is still known.
                    self.board.close(conn);
                    self.switch(now);
                    if let Some(c) = self.conns.remove(&conn) {
                        for at in c.sessions {
                            self.sessions.remove(&at);
                            self.ending.remove(&at);
                        }
                    }
                } else {
                    // A handshake that failed or timed out, an ALPN refused,
                    // or a connection over the limits.
                    debug!(%conn, %reason, "connection ended before a session");
                }
            }
        }
    }

    /// Does the switchboard's outputs, in order.
    pub(super) fn switch(&mut self, now: Now) {
        while let Some(out) = self.board.poll() {
            match out {
                Switched::Open { link, partition } => self.open_at(now, link, partition),
                Switched::Feed { link, partition, bytes, .. } => {
                    let session = self.conns.get(&link).and_then(|c| c.session_at(partition));
                    if let (Some(session), Some(core)) = (session, self.core_mut(partition)) {
                        // The clock read now, not the loop turn's: a stop may fall between
                        // that reading and the bytes read since.
                        if core.watch.as_ref().is_some_and(|w| w.in_doubt(std::time::Instant::now())) {
                            // Its state may be older than the partition's (another node may
                            // have served it meanwhile): nothing of the frame is done.
                            warn!(conn = %link, partition, "frame refused: the partition's lease is in doubt");
                            let reason =
                                format!("partition {partition}'s lease is being renewed on this node: reconnect");
                            self.refuse(link, 503, &reason);
                            continue;
                        }
                        core.server.handle_input(now, session, &bytes);
                    }
                }
                Switched::Close { link, partition } => {
                    let session = self.conns.get(&link).and_then(|c| c.session_at(partition));
                    if let (Some(session), Some(core)) = (session, self.core_mut(partition)) {
                        // A session its core closed already: that close is the connection's.
                        let live = core.server.has_session(session);
                        core.server.close_session(now, session);
                        if live {
                            self.ending.insert((partition, session));
                        }
                    }
                }
                Switched::Resolve { link, token, ticket } => self.resolve(link, token, ticket),
                Switched::Refuse { link, code, reason } => {
                    warn!(conn = %link, code, %reason, "connection refused");
                    self.refuse(link, code, &reason);
                }
            }
        }
        // Every frame resolved is at its core now: their bindings are in the cores' states.
        self.routed_subjects.clear();
    }

    /// Answers the switchboard for every frame a core has settled since it
    /// was handed (the core took a turn after it); whether any was.
    pub(super) fn settle(&mut self, now: Now) -> bool {
        let (mut settled, mut closed) = (Vec::new(), Vec::new());
        for core in self.cores.iter().flatten() {
            for (link, ticket) in self.board.waiting_at(core.partition) {
                let Some(session) = self.conns.get(&link).and_then(|c| c.session_at(core.partition)) else {
                    continue;
                };
                if !core.server.has_session(session) {
                    // The core closed it (its close is on its way to the store,
                    // and will close the connection): nothing more is routed.
                    closed.push(link);
                } else if !core.server.session_held(session) {
                    settled.push((link, ticket, core.server.session_user(session).is_some()));
                }
            }
        }
        for &link in &closed {
            self.board.close(link);
        }
        for &(link, ticket, bound) in &settled {
            self.board.settled(link, ticket, bound);
            self.report_partial(now, link);
        }
        !settled.is_empty() || !closed.is_empty()
    }

    /// Tells `link`'s first session (at the partition it was opened at)
    /// how many bytes of a frame not complete yet the switchboard holds for
    /// it (a split state only: with one partition every byte goes to the
    /// core), so that its frame deadline covers a frame no core has seen yet.
    fn report_partial(&mut self, now: Now, link: ConnId) {
        if self.cores.len() < 2 {
            return;
        }
        let partial = self.board.partial(link);
        let Some(&(first, session)) = self.conns.get(&link).and_then(|c| c.sessions.first()) else { return };
        if let Some(core) = self.core_mut(first) {
            core.server.handle_partial(now, session, partial);
        }
    }

    fn open_at(&mut self, now: Now, link: ConnId, partition: PartitionId) {
        let Some(conn) = self.conns.get(&link) else { return };
        let (source, first) = (conn.source, conn.sessions.is_empty());
        if self.stopping && !first {
            // The cores' sessions were closed at the stop: no new one opens.
            self.refuse(link, 503, "server shutting down");
            return;
        }
        if self.core_mut(partition).is_none() && !first && self.relay_to_owner(link, partition) {
            return;
        }
        let Some(core) = self.core_mut(partition) else {
            // Served by another node (or by none yet): the client tries another.
            debug!(conn = %link, partition, "connection misdirected: the partition is not served here");
            let reason =
                format!("partition {partition} is not served by this node: connect to another node of this service");
            self.refuse(link, status::MISDIRECTED, &reason);
            return;
        };
        let opened = core.server.open_session_from(now, source).map_err(|e| e.to_string());
        match opened {
            Ok(session) => {
                if first {
                    self.summary.connections += 1;
                }
                debug!(conn = %link, partition, session = session.0, "session opened");
                self.note_session(link, partition, session);
            }
            // The connection's first session, at partition 0: refused as a
            // single server refuses a connection over its limit (closed
            // without a frame, and nothing it sends is read).
            Err(e) if first => {
                warn!(conn = %link, partition, "connection refused: {e}");
                self.board.close(link);
                if let Some(conn) = self.conns.remove(&link) {
                    self.close_conn(link, conn.transport);
                }
            }
            Err(e) => {
                warn!(conn = %link, partition, "connection refused: {e}");
                self.refuse(link, 503, "server busy: try again later");
            }
        }
    }

    /// Relays `link` to the node serving `partition` (a split state's node
    /// over NATS, whose relay hears that partition's owner), from the frame
    /// that goes there on: the switchboard lets it go with every byte no
    /// core was handed, and closes its sessions here. Its bytes reach the
    /// owner once this node's cores wrote every answer to what they were
    /// handed before (`start_relays`), so that the owner's answers follow
    /// them and never split one. A relayed connection (an edge's) is never
    /// relayed again: the owner closes it 421. Whether it is relayed.
    fn relay_to_owner(&mut self, link: ConnId, partition: PartitionId) -> bool {
        if self.pure_edge || self.stopping || self.owners_heard & crate::relay::bells::bit(partition) == 0 {
            return false;
        }
        let Some((transport, peer, at)) = self.conns.get(&link).map(|c| (c.transport, c.peer, c.sessions.clone()))
        else {
            return false;
        };
        if transport == Transport::Relay || self.edge.is_none() {
            return false;
        }
        let bytes = self.board.detach(link, partition).to_vec();
        let marks = at.iter().filter_map(|&(p, _)| self.core_mut(p).map(|c| (p, c.mark()))).collect();
        debug!(conn = %link, partition, "connection relayed to the partition's owner");
        self.relayed.insert(link, transport);
        self.pending_relays.push(PendingRelay { link, partition, transport, peer, bytes, marks });
        true
    }

    /// Starts relaying the connections whose local answers are all out;
    /// whether any started.
    pub(super) fn start_relays(&mut self) -> bool {
        if self.pending_relays.is_empty() {
            return false;
        }
        let mut ready = Vec::new();
        let mut waiting = Vec::new();
        for mut pending in std::mem::take(&mut self.pending_relays) {
            let done = pending.marks.iter_mut().all(|(p, mark)| {
                let p = *p;
                self.cores.get(usize::from(p)).and_then(Option::as_ref).is_none_or(|core| core.passed(mark))
            });
            if !self.relayed.contains_key(&pending.link) {
                // Closed meanwhile.
            } else if done {
                ready.push(pending);
            } else {
                waiting.push(pending);
            }
        }
        self.pending_relays = waiting;
        let Some(edge) = self.edge.as_mut() else { return false };
        for p in &ready {
            edge.open(p.link, p.partition, p.transport, p.peer);
        }
        for p in ready.iter_mut() {
            if !p.bytes.is_empty() {
                edge.data(p.link, std::mem::take(&mut p.bytes));
            }
        }
        !ready.is_empty()
    }

    /// Bytes of a connection waiting to be relayed: kept for the relay,
    /// after what it sent before (whether it was one).
    pub(super) fn relay_pending_input(&mut self, conn: ConnId, bytes: &[u8]) -> bool {
        let Some(p) = self.pending_relays.iter_mut().find(|p| p.link == conn) else { return false };
        p.bytes.extend_from_slice(bytes);
        if p.bytes.len() > super::edge::MAX_RELAY_QUEUE {
            // Bounded as the relay bounds what NATS has not taken yet.
            warn!(%conn, "connection waiting for the relay sends too much; closing it");
            self.refuse(conn, 503, "sending faster than the relay carries");
        }
        true
    }

    fn note_session(&mut self, link: ConnId, partition: PartitionId, session: SessionId) {
        if let Some(conn) = self.conns.get_mut(&link) {
            conn.sessions.push((partition, session));
            self.sessions.insert((partition, session), link);
        }
    }

    /// Closes `link` with a close frame of `code` and `reason`.
    pub(super) fn refuse(&mut self, link: ConnId, code: u16, reason: &str) {
        let Some(transport) = self.conns.get(&link).map(|c| c.transport) else { return };
        let frame: Bytes = Message::Close(Close { code, reason: reason.to_owned() }).to_bytes(b"");
        self.send_to(link, transport, frame);
        self.end_conn(link, transport, code, reason);
    }

    /// Closes `link`'s transport and takes it out of the switchboard at
    /// once: a transport may read for a while before it reports the close
    /// (QUIC until the peer acknowledges it), and no byte read meanwhile
    /// may reach a core. Its sessions at the cores end (`ending`: each
    /// core's close of them is not the connection's), and their last
    /// answers still go out until the transport reports it closed.
    pub(super) fn end_conn(&mut self, link: ConnId, transport: Transport, code: u16, reason: &str) {
        match transport {
            Transport::Ws => self.ws_close(link, Some(code), reason),
            transport => self.close_conn(link, transport),
        }
        self.board.close(link);
    }
}
