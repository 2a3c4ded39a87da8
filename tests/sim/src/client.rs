//! Hosting the client machines: connecting, draining their outputs onto
//! their links, feeding them bytes, timers and the end of connections, and
//! letting each user's behaviour react to what its client reports.

use bytes::Bytes;
use confab_proto::machine::Output;
use confab_proto::{Client, Now};

use super::driver::Ctx;
use super::net::{Dir, Segment};
use super::queue::Ev;
use super::{ClientId, Invariant, LinkId, Sim};

/// Reaction rounds per drain before the behaviour is considered runaway.
const MAX_ROUNDS: usize = 64;

impl Sim {
    /// Runs `f` on a user's client machine (a command, say), then drains it.
    /// For scripted tests: commands made this way bypass the user's
    /// behaviour, so their outcomes are not in the [`Ledger`](super::Ledger).
    pub fn with_client<R>(&mut self, id: ClientId, f: impl FnOnce(&mut Client, Now) -> R) -> R {
        let now = self.now();
        let r = f(self.hosts[id.0].client.client_mut(), now);
        self.drain_client(id);
        r
    }

    /// Drains a client: its frames go on its link, a `Close` ends the link,
    /// its events go to the user's behaviour, whose commands are drained in turn.
    pub(crate) fn drain_client(&mut self, id: ClientId) {
        for round in 0.. {
            if round == MAX_ROUNDS {
                let name = self.hosts[id.0].user.name.clone();
                self.violate(Invariant::Progress, format!("{name}: behaviour did not settle in one drain"));
                return;
            }
            let origin = self.origin.instant;
            let host = &mut self.hosts[id.0];
            let mut events = Vec::new();
            let mut transmits: Vec<Bytes> = Vec::new();
            let mut closed = None;
            let mut deadline = None;
            let checkpoints = host.store.checkpoints;
            let (outputs, unsaved) = host.client.drain(&mut host.store);
            self.stats.client_turns += 1;
            self.stats.client_checkpoints += host.store.checkpoints - checkpoints;
            for output in outputs {
                match output {
                    Output::Event(e) => events.push(e),
                    Output::Transmit(bytes) => transmits.push(bytes),
                    Output::Close { code, reason } => closed = Some((code, reason)),
                    Output::Timeout(t) => deadline = t,
                }
            }
            host.deadline = deadline.map(|t| t.saturating_duration_since(origin));
            let link = host.link;
            if let Some(what) = unsaved {
                let name = self.hosts[id.0].user.name.clone();
                self.violate(Invariant::Checkpoint, format!("{name}: {what} changed without a checkpoint"));
            }
            for bytes in transmits {
                let Some(link) = link else {
                    let name = self.hosts[id.0].user.name.clone();
                    self.violate(
                        Invariant::Protocol,
                        format!("{name}: client wrote {} bytes while disconnected", bytes.len()),
                    );
                    continue;
                };
                let len = bytes.len();
                self.trace.step(self.elapsed, &link.0.to_le_bytes(), || format!("{link} <- client: {len} bytes"));
                self.observe_up(id, link, &bytes);
                let now = self.elapsed;
                self.net.send(&mut self.agenda, &mut self.rng, now, link, Dir::Up, Segment::Data(bytes));
            }
            if let Some((code, reason)) = closed {
                self.trace
                    .step(self.elapsed, &code.to_le_bytes(), || format!("client {} closes: {code} {reason}", id.0));
                self.client_closed(id);
            }
            let now = self.now();
            let at = self.elapsed;
            let connected = self.hosts[id.0].link.is_some();
            let host = &mut self.hosts[id.0];
            let mut ctx = Ctx {
                now,
                at,
                ledger: &mut self.ledger,
                trace: &mut self.trace,
                violations: &mut self.violations,
                stats: &mut self.stats,
                idp: &mut self.idp,
                replay: self.replaying && round == 0,
            };
            let acted = host.user.react(&mut host.client, &mut ctx, events, connected);
            if !acted {
                return;
            }
        }
    }

    /// The client asked to close its connection: the end of the stream follows its last frames.
    fn client_closed(&mut self, id: ClientId) {
        let Some(link) = self.hosts[id.0].link.take() else { return };
        if let Some(l) = self.net.get_mut(link) {
            l.client_open = false;
            let now = self.elapsed;
            self.net.send(&mut self.agenda, &mut self.rng, now, link, Dir::Up, Segment::Fin);
            self.net.gc(link);
        }
        self.schedule_reconnect(id);
    }

    /// The client's side of `link` learned the connection is gone.
    pub(crate) fn client_lost(&mut self, id: ClientId, link: LinkId) {
        if let Some(l) = self.net.get_mut(link) {
            l.client_open = false;
            self.net.gc(link);
        }
        if self.hosts[id.0].link != Some(link) {
            return;
        }
        self.hosts[id.0].link = None;
        let now = self.now();
        self.trace.step(self.elapsed, &link.0.to_le_bytes(), || format!("client {} loses {link}", id.0));
        self.hosts[id.0].client.disconnected(now);
        self.drain_client(id);
        self.schedule_reconnect(id);
    }

    /// Bytes reach a client.
    pub(crate) fn client_input(&mut self, link: LinkId, bytes: &Bytes) {
        let Some(l) = self.net.get(link) else { return };
        if !l.client_open {
            return;
        }
        let id = l.client;
        self.observe_down(id, link, bytes);
        let now = self.now();
        self.hosts[id.0].client.handle_input(now, bytes);
        self.drain_client(id);
    }

    pub(crate) fn client_timeout(&mut self, id: ClientId) {
        self.hosts[id.0].deadline = None;
        let now = self.now();
        self.trace.step(self.elapsed, &(id.0 as u64).to_le_bytes(), || format!("client {} timeout", id.0));
        self.hosts[id.0].client.handle_timeout(now);
        self.drain_client(id);
    }

    /// Schedules a connection attempt if the user wants to be online and has none.
    pub(crate) fn schedule_reconnect(&mut self, id: ClientId) {
        let h = &mut self.hosts[id.0];
        if !h.user.want_online || h.reconnect_pending || h.link.is_some() {
            return;
        }
        h.reconnect_pending = true;
        let at = self.elapsed + self.config.reconnect_delay.draw(&mut self.rng);
        self.agenda.push(at, Ev::Reconnect(id));
    }

    /// Connects the client if it wants to be online, has no connection and
    /// can reach a running server; otherwise tries again later. True if connected.
    pub(crate) fn try_connect(&mut self, id: ClientId) -> bool {
        let h = &self.hosts[id.0];
        if !h.user.want_online || h.link.is_some() {
            return false;
        }
        if self.split.is_some() {
            return self.split_connect(id);
        }
        let now = self.now();
        let opened = match (&mut self.server, h.partitioned || self.paused.is_some()) {
            (Some(server), false) => server.open_session(now).ok(),
            _ => None,
        };
        let Some(session) = opened else {
            self.schedule_reconnect(id);
            return false;
        };
        let latency = match h.latency {
            Some(l) => l,
            None => self.config.latency.sub_span(&mut self.rng),
        };
        let held = h.held;
        let link = self.net.open(id, session, self.epoch, latency, self.elapsed);
        if let Some(l) = self.net.get_mut(link) {
            l.held = held;
        }
        self.sessions.insert(session, link);
        self.hosts[id.0].link = Some(link);
        self.stats.connects += 1;
        self.trace
            .step(self.elapsed, &link.0.to_le_bytes(), || format!("client {} connects: {link} = {session}", id.0));
        self.drain_server();
        self.hosts[id.0].client.connected(now);
        self.drain_client(id);
        true
    }
}
