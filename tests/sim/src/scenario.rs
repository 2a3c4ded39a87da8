//! The scenario: random actions (user actions and faults, with the
//! preset's probabilities), the final settling phase, and the user-level
//! commands scripted tests use.

use bytes::Bytes;
use rand::RngExt as _;
use rand::rngs::StdRng;

use super::driver::{Ctx, Phase, User};
use super::machine::Machine;
use super::queue::Ev;
use super::{ClientId, Invariant, Sim};

/// Room names the users pick from (more rooms get a numeric name).
const ROOMS: [&str; 6] = ["lobby", "dev", "random", "ops", "music", "books"];

impl Sim {
    /// Runs `f` with a user's behaviour, client machine and bookkeeping, then drains the client.
    pub(super) fn with_user<R>(
        &mut self,
        id: ClientId,
        f: impl FnOnce(&mut User, &mut Machine, &mut Ctx<'_>, &mut StdRng) -> R,
    ) -> R {
        let (now, at) = (self.now(), self.elapsed);
        let host = &mut self.hosts[id.0];
        let mut ctx = Ctx {
            now,
            at,
            ledger: &mut self.ledger,
            trace: &mut self.trace,
            violations: &mut self.violations,
            stats: &mut self.stats,
            idp: &mut self.idp,
            replay: false,
        };
        let r = f(&mut host.user, &mut host.client, &mut ctx, &mut self.rng);
        self.drain_client(id);
        r
    }

    /// The room names of this run.
    #[must_use]
    pub fn rooms(&self) -> Vec<String> {
        (0..self.config.rooms)
            .map(|i| match ROOMS.get(i) {
                Some(r) => (*r).to_owned(),
                None => format!("room-{i}"),
            })
            .collect()
    }

    pub(crate) fn user_names(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.user.name.clone()).collect()
    }

    /// One scenario action: a fault with the preset's probability, else a
    /// random user's random action.
    pub(crate) fn action(&mut self) {
        if self.actions_left == 0 || self.hosts.is_empty() {
            return;
        }
        self.actions_left -= 1;
        self.stats.actions += 1;
        if self.config.client_restore > 0.0 && self.config.secure {
            let id = ClientId(self.rng.random_range(0..self.hosts.len()));
            let r: f64 = self.rng.random();
            if r < self.config.client_restore {
                self.save_client(id);
            } else if r < 2.0 * self.config.client_restore && !self.hosts[id.0].user.oidc {
                self.restore_client(id);
            }
        }
        let f = self.config.faults;
        let id = ClientId(self.rng.random_range(0..self.hosts.len()));
        let r: f64 = self.rng.random();
        let mut acc = 0.0;
        let mut hit = |p: f64| {
            acc += p;
            r < acc
        };
        if hit(f.disconnect) {
            self.disconnect(id);
        } else if hit(f.partition) {
            if !self.hosts[id.0].partitioned {
                self.partition(id);
                let at = self.elapsed + self.config.fault_length.draw(&mut self.rng);
                self.agenda.push(at, Ev::Heal(id));
            }
        } else if hit(f.hold) {
            if !self.hosts[id.0].held {
                self.hold(id);
                let at = self.elapsed + self.config.fault_length.draw(&mut self.rng);
                self.agenda.push(at, Ev::Release(id));
            }
        } else if hit(f.latency) {
            let latency = self.config.latency.sub_span(&mut self.rng);
            self.set_latency(id, latency);
        } else if hit(f.crash) {
            self.crash_server();
        } else if hit(f.crash_after_commit) {
            self.crash_after_commit();
        } else if let Some(cluster) = self.config.cluster
            && hit(cluster.pause_rate)
        {
            let d = cluster.pause.draw(&mut self.rng);
            self.pause_owner(d);
        } else if let Some(split) = self.config.split
            && hit(split.pause_rate + split.store_cut_rate + split.bus_cut_rate)
        {
            self.split_fault();
        } else if hit(f.offline) {
            if self.hosts[id.0].user.want_online {
                self.go_offline(id);
                let at = self.elapsed + self.config.offline_length.draw(&mut self.rng);
                self.agenda.push(at, Ev::Online(id));
            } else {
                self.go_online(id);
            }
        } else {
            let (users, rooms) = (self.user_names(), self.rooms());
            self.with_user(id, |user, client, ctx, rng| user.act(client, ctx, rng, &users, &rooms));
        }
        if self.actions_left > 0 {
            let at = self.elapsed + self.config.action_gap.draw(&mut self.rng);
            self.agenda.push(at, Ev::Action);
        }
    }

    /// The final phase: stops the actions, heals and releases everything,
    /// restarts the server if it is down, brings every user online, and
    /// runs until the system settles (see [`Sim::settled`]), for at most
    /// [`SimConfig::settle_limit`](super::SimConfig::settle_limit) of virtual
    /// time. True if it settled; a violation is recorded if not.
    pub fn settle(&mut self) -> bool {
        self.actions_left = 0;
        self.store.arm_crash(false);
        self.auto_restart = false;
        self.trace.note(self.elapsed, "settling");
        for id in self.clients() {
            self.heal(id);
            self.release(id);
        }
        self.resume_all();
        self.restart_server();
        if self.split.is_some() {
            self.split_settle();
        }
        for id in self.clients() {
            self.reconnect(id);
        }
        let limit = self.config.settle_limit;
        if self.run_until(limit, Sim::settled) {
            return true;
        }
        let mut waiting = Vec::new();
        for h in &self.hosts {
            if !self.host_settled(h) {
                waiting.push(format!(
                    "{} (link {:?}, phase {:?}, logged in {}, bound {}, outbox {}, in flight {})",
                    h.user.name,
                    h.link,
                    h.user.phase,
                    h.client.is_logged_in(),
                    h.client.is_bound(),
                    h.client.outbox_len(),
                    h.user.in_flight()
                ));
            }
        }
        let detail = format!(
            "did not settle within {:?}: {} events pending, server up {}, waiting: {}",
            limit,
            self.agenda.len(),
            self.split.as_ref().map_or(self.server.is_some().to_string(), |s| format!("[{}]", s.unrest())),
            waiting.join("; ")
        );
        self.violate(Invariant::Progress, detail);
        false
    }

    fn host_settled(&self, h: &super::Host) -> bool {
        h.link.is_some()
            && h.client.is_connected()
            && h.client.is_logged_in()
            && h.client.is_bound()
            && h.client.outbox_len() == 0
            && !h.client.acks_due()
            && h.user.idle()
    }

    /// Whether the system is at rest: server up, nothing in flight or
    /// scheduled (timers aside), every user online, logged in on its
    /// connection (bound: a client holding tokens whose refresh was refused
    /// for now is not, and retries on a timer), with no request unanswered
    /// and no delivery acknowledgement waiting.
    #[must_use]
    pub fn settled(&self) -> bool {
        let up = match &self.split {
            Some(split) => split.at_rest(),
            None => self.server.is_some(),
        };
        up && self.agenda.len() == 0 && self.hosts.iter().all(|h| self.host_settled(h))
    }

    // ---- user-level commands for scripted tests (their outcomes are in the ledger) ----

    /// Whether the user holds a session.
    #[must_use]
    pub fn logged_in(&self, id: ClientId) -> bool {
        let h = &self.hosts[id.0];
        h.user.phase == Phase::LoggedIn && h.client.is_logged_in()
    }

    /// Whether `a` believes its conversation with `b` is open.
    #[must_use]
    pub fn conversation_open(&self, a: ClientId, b: ClientId) -> bool {
        let peer = &self.hosts[b.0].user.name;
        self.hosts[a.0].user.open.contains(peer)
    }

    /// Whether the user is a member of `room` (its join or create was answered).
    #[must_use]
    pub fn in_room(&self, id: ClientId, room: &str) -> bool {
        self.hosts[id.0].user.in_room(room)
    }

    /// `from` sends `to` a private message. Returns its payload if the command was made.
    pub fn send_mp(&mut self, from: ClientId, to: ClientId) -> Option<Bytes> {
        let peer = self.hosts[to.0].user.name.clone();
        self.with_user(from, |user, client, ctx, _| user.send_mp(client, ctx, &peer))
    }

    /// `from` sends a message to `room`. Returns its payload if the command was made.
    pub fn send_room(&mut self, from: ClientId, room: &str) -> Option<Bytes> {
        self.with_user(from, |user, client, ctx, _| user.send_room(client, ctx, room))
    }

    /// `from` asks `to` for a private conversation (`to` accepts when it gets the request).
    pub fn request_mp(&mut self, from: ClientId, to: ClientId) -> bool {
        let peer = self.hosts[to.0].user.name.clone();
        self.with_user(from, |user, client, ctx, _| user.request_mp(client, ctx, &peer))
    }

    /// The user creates `room` (or joins it if it exists).
    pub fn enter_room(&mut self, id: ClientId, room: &str) -> bool {
        self.with_user(id, |user, client, ctx, _| user.enter_room(client, ctx, room, true))
    }
}
