//! The fault vocabulary (turmoil's): disconnect and reconnect, partition
//! and heal, hold and release, latency, server crash and restart, and the
//! crash point between a turn's commit and its frames; plus how segments
//! reach the ends of a link.

use confab_proto::Server;
use rand::RngExt as _;

use super::config::Span;
use super::net::{Dir, End, LinkId, Segment};
use super::queue::Ev;
use super::{ClientId, Sim};

impl Sim {
    /// The client's connection drops; both ends learn it at once. The
    /// client reconnects after [`SimConfig::reconnect_delay`](super::SimConfig::reconnect_delay)
    /// if its user wants to be online.
    pub fn disconnect(&mut self, id: ClientId) {
        let Some(link) = self.hosts[id.0].link else { return };
        self.stats.disconnects += 1;
        self.trace.note(self.elapsed, &format!("fault: disconnect client {} ({link})", id.0));
        self.server_lost(link);
        self.client_lost(id, link);
    }

    /// The user wants to be online: connects now if it can (no connection,
    /// not partitioned, server up), else keeps trying. True if connected now.
    pub fn reconnect(&mut self, id: ClientId) -> bool {
        self.hosts[id.0].user.want_online = true;
        self.try_connect(id)
    }

    /// Cuts the client's network both ways: every byte is dropped, its
    /// connection dies (each end notices after [`SimConfig::detect_delay`](super::SimConfig::detect_delay)),
    /// and it cannot connect again until [`Sim::heal`].
    pub fn partition(&mut self, id: ClientId) {
        if self.hosts[id.0].partitioned {
            return;
        }
        self.stats.partitions += 1;
        self.trace.note(self.elapsed, &format!("fault: partition client {}", id.0));
        self.hosts[id.0].partitioned = true;
        for link in self.net.of_client(id) {
            self.doom(link);
        }
    }

    /// Every byte of `link` is dropped from now on; each end learns it is dead after a detection delay.
    fn doom(&mut self, link: LinkId) {
        let Some(l) = self.net.get_mut(link) else { return };
        if l.doomed {
            return;
        }
        l.doomed = true;
        for end in [End::Server, End::Client] {
            let at = self.elapsed + self.config.detect_delay.draw(&mut self.rng);
            self.agenda.push(at, Ev::Detect { link, end });
        }
    }

    /// Ends a partition: the client may connect again.
    pub fn heal(&mut self, id: ClientId) {
        if !self.hosts[id.0].partitioned {
            return;
        }
        self.trace.note(self.elapsed, &format!("fault: heal client {}", id.0));
        self.hosts[id.0].partitioned = false;
        self.schedule_reconnect(id);
    }

    /// Buffers every byte the client's connections carry, both ways, until [`Sim::release`].
    pub fn hold(&mut self, id: ClientId) {
        if self.hosts[id.0].held {
            return;
        }
        self.stats.holds += 1;
        self.trace.note(self.elapsed, &format!("fault: hold client {}", id.0));
        self.hosts[id.0].held = true;
        for link in self.net.of_client(id) {
            if let Some(l) = self.net.get_mut(link) {
                l.held = true;
            }
        }
    }

    /// Ends a hold: what was buffered is delivered, in order.
    pub fn release(&mut self, id: ClientId) {
        if !self.hosts[id.0].held {
            return;
        }
        self.trace.note(self.elapsed, &format!("fault: release client {}", id.0));
        self.hosts[id.0].held = false;
        let now = self.elapsed;
        for link in self.net.of_client(id) {
            self.net.release(&mut self.agenda, &mut self.rng, now, link);
        }
    }

    /// Sets the latency range of the client's links, current and future.
    pub fn set_latency(&mut self, id: ClientId, latency: Span) {
        self.stats.latency_changes += 1;
        self.trace.note(self.elapsed, &format!("fault: latency of client {} {latency:?}", id.0));
        self.hosts[id.0].latency = Some(latency);
        for link in self.net.of_client(id) {
            if let Some(l) = self.net.get_mut(link) {
                l.latency = latency;
            }
        }
    }

    /// The server process dies: what it did not commit is lost, every
    /// connection dies and every client notices.
    pub fn crash_server(&mut self) {
        if self.split.is_some() {
            return self.crash_random_node();
        }
        self.crash_now();
    }

    /// Starts a server from the store, with a fresh seed drawn from the simulation's generator.
    pub fn restart_server(&mut self) {
        if self.server.is_some() || self.split.is_some() {
            return;
        }
        self.stats.restarts += 1;
        self.paused = None;
        if self.config.cluster.is_some() {
            // A standby takes the state over: a new lease, a new token.
            self.token = self.store.take_lease();
        }
        self.trace.note(self.elapsed, "server restarts from the store");
        let seed: [u8; 32] = self.rng.random();
        let state = self.store.memory().state().clone();
        let server = Server::restore(self.config.server.clone(), seed, state, self.now());
        self.server = Some(server.expect("the simulation's server configuration is valid"));
        self.drain_server();
    }

    /// Arms the crash point "after commit, before transmit": the server's
    /// next turn that commits changes commits them, then dies before any
    /// frame of that turn leaves.
    pub fn crash_after_commit(&mut self) {
        if self.split.is_some() {
            return self.crash_random_node_after_commit();
        }
        if self.server.is_some() {
            self.store.arm_crash(true);
        }
    }

    /// The user closes the app: a clean close of its connection, and no
    /// reconnection until [`Sim::go_online`].
    pub fn go_offline(&mut self, id: ClientId) {
        if !self.hosts[id.0].user.want_online {
            return;
        }
        self.stats.offline += 1;
        self.trace.note(self.elapsed, &format!("user of client {} goes offline", id.0));
        self.hosts[id.0].user.want_online = false;
        if self.hosts[id.0].link.is_some() {
            self.with_client(id, |c, now| c.close(now));
        }
    }

    /// The user opens the app again.
    pub fn go_online(&mut self, id: ClientId) {
        if self.hosts[id.0].user.want_online {
            return;
        }
        self.trace.note(self.elapsed, &format!("user of client {} comes online", id.0));
        self.reconnect(id);
    }

    /// A segment reaches its end of the link.
    pub(crate) fn arrive(&mut self, link: LinkId, dir: Dir, seg: Segment) {
        let Some(l) = self.net.get(link) else { return };
        if l.doomed {
            return;
        }
        let client = l.client;
        match (dir, seg) {
            (Dir::Up, Segment::Data(bytes)) => {
                self.trace
                    .step(self.elapsed, &[1, bytes.len() as u8], || format!("{link} -> server: {} bytes", bytes.len()));
                self.server_input(link, &bytes);
            }
            (Dir::Up, Segment::Fin) => self.server_lost(link),
            (Dir::Down, Segment::Data(bytes)) => {
                self.trace.step(self.elapsed, &[2, bytes.len() as u8], || {
                    format!("{link} -> client {}: {} bytes", client.0, bytes.len())
                });
                self.client_input(link, &bytes);
            }
            (Dir::Down, Segment::Fin) => self.client_lost(client, link),
        }
    }

    /// One end of a doomed link notices it is dead.
    pub(crate) fn detect(&mut self, link: LinkId, end: End) {
        let Some(l) = self.net.get(link) else { return };
        let client = l.client;
        self.trace.note(self.elapsed, &format!("{link}: {end:?} end notices the connection is dead"));
        match end {
            End::Server => self.server_lost(link),
            End::Client => self.client_lost(client, link),
        }
    }
}
