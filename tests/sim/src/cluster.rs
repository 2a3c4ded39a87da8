//! Cluster mode ([`SimConfig::cluster`](super::SimConfig::cluster)): the
//! owner of the state paused, a standby taking over under a new lease
//! token while the old owner sleeps, and the old owner resuming as it was
//! (its memory, its connections, its timers) until it learns it lost the
//! lease.
//!
//! - A paused node processes nothing: every event for it (bytes arriving
//!   on its connections, a connection's end, a finished job, its timer) is
//!   kept, in order, and handed to it when it resumes.
//! - A standby takes over once the owner's lease has expired (a lease
//!   after its last renewal, which was up to a renewal period before the
//!   pause): a new server restored from the store, under a new token, with
//!   a new epoch for new connections. The old owner keeps its epoch.
//! - The old owner resumed runs on the same code as the owner (the
//!   simulator swaps it in, [`Sim::as_stale`]): a turn without changes
//!   writes its frames (what it serves from memory), a turn with changes is
//!   fenced by the store (nothing written) and the node stops, and it stops
//!   anyway at its next renewal (within a renewal period).

use std::collections::HashMap;
use std::time::Duration;

use confab_proto::{Server, SessionId};

use super::Sim;
use super::config::Span;
use super::net::{Dir, End, LinkId};
use super::queue::Ev;

/// A former owner: paused when a standby took over, or resumed and not yet
/// aware (there may be several: an owner taken over while an older one
/// still sleeps).
#[derive(Debug)]
pub(crate) struct Stale {
    server: Option<Server>,
    epoch: u64,
    sessions: HashMap<SessionId, LinkId>,
    deadline: Option<Duration>,
    token: u64,
    /// Still paused: the events it will process when it resumes.
    paused: Option<Vec<Ev>>,
}

impl Stale {
    /// Its timer, when it runs.
    pub(crate) fn deadline(&self) -> Option<Duration> {
        if self.paused.is_some() { None } else { self.deadline }
    }
}

impl Sim {
    /// The owner pauses for `d` (a process stopped, a machine frozen, or
    /// cut off from the store, its commits waiting): nothing of it runs
    /// meanwhile. If its lease expires before it resumes, a standby takes
    /// over. Cluster mode only.
    pub fn pause_owner(&mut self, d: Duration) {
        let Some(cluster) = self.config.cluster else { return };
        if self.server.is_none() || self.paused.is_some() {
            return;
        }
        self.stats.pauses += 1;
        self.paused = Some(Vec::new());
        let epoch = self.epoch;
        self.agenda.push(self.elapsed + d, Ev::Resume(epoch));
        // Its last renewal was up to a period ago: the lease ends a lease after it.
        let since = Span::new(Duration::ZERO, cluster.renew_every()).draw(&mut self.rng);
        let expiry = (self.elapsed + cluster.lease).saturating_sub(since);
        let takeover = cluster.nodes > 1 && self.elapsed + d > expiry;
        self.trace.note(
            self.elapsed,
            &format!("fault: owner (epoch {epoch}) pauses for {d:?}{}", if takeover { ", past its lease" } else { "" }),
        );
        if takeover {
            // The standby sleeps until just after the expiry it read.
            let at = expiry + Span::ms(0, 10).draw(&mut self.rng);
            self.agenda.push(at, Ev::Takeover(epoch));
        }
    }

    /// A standby takes the state over from the paused owner of `epoch`.
    pub(crate) fn takeover(&mut self, epoch: u64) {
        if self.epoch != epoch || self.server.is_none() || self.paused.is_none() {
            return;
        }
        self.stats.takeovers += 1;
        self.trace.note(self.elapsed, &format!("standby takes over from the paused owner (epoch {epoch})"));
        self.stales.push(Stale {
            server: self.server.take(),
            epoch,
            sessions: std::mem::take(&mut self.sessions),
            deadline: self.server_deadline.take(),
            token: self.token,
            paused: self.paused.take(),
        });
        self.epoch += 1;
        self.restart_server();
    }

    /// The paused node of `epoch` resumes: what it missed is handed to it
    /// in order. An old owner learns it lost the lease within a renewal period.
    pub(crate) fn resume(&mut self, epoch: u64) {
        let missed = if epoch == self.epoch && self.paused.is_some() {
            self.trace.note(self.elapsed, &format!("owner (epoch {epoch}) resumes"));
            self.paused.take()
        } else if let Some(stale) = self.stales.iter_mut().find(|s| s.epoch == epoch && s.paused.is_some()) {
            let missed = stale.paused.take();
            self.trace.note(self.elapsed, &format!("old owner (epoch {epoch}) resumes, unaware"));
            let renew = self.config.cluster.map_or(Duration::ZERO, |c| c.renew_every());
            let at = self.elapsed + Span::new(Duration::ZERO, renew).draw(&mut self.rng);
            self.agenda.push(at, Ev::StaleNotices(epoch));
            missed
        } else {
            None
        };
        for ev in missed.into_iter().flatten() {
            self.agenda.push(self.elapsed, ev);
        }
    }

    /// The old owner of `epoch` learns it lost its lease (its renewal
    /// found another token): it stops.
    pub(crate) fn stale_notices(&mut self, epoch: u64) {
        self.as_stale(epoch, |sim| {
            sim.trace.note(sim.elapsed, &format!("old owner (epoch {epoch}) learns it lost the lease: stops"));
            sim.stale_stops();
        });
    }

    /// The node swapped in (an old owner) stops: its connections die.
    pub(crate) fn stale_stops(&mut self) {
        if self.server.take().is_none() {
            return;
        }
        self.server_deadline = None;
        self.sessions.clear();
        let epoch = self.epoch;
        self.kill_links(|l| l == epoch);
    }

    /// Runs `f` as the old owner of `epoch`, if it runs (not paused): its
    /// server, epoch, sessions, timer and token swapped in for the owner's,
    /// so the owner's code runs it.
    pub(crate) fn as_stale(&mut self, epoch: u64, f: impl FnOnce(&mut Sim)) {
        let Some(i) = self.stales.iter().position(|s| s.epoch == epoch && s.paused.is_none()) else { return };
        let mut stale = self.stales.swap_remove(i);
        self.swap(&mut stale);
        self.acting_stale = true;
        f(self);
        self.acting_stale = false;
        self.swap(&mut stale);
        if stale.server.is_some() {
            self.stales.push(stale);
        }
    }

    fn swap(&mut self, stale: &mut Stale) {
        std::mem::swap(&mut self.server, &mut stale.server);
        std::mem::swap(&mut self.epoch, &mut stale.epoch);
        std::mem::swap(&mut self.sessions, &mut stale.sessions);
        std::mem::swap(&mut self.server_deadline, &mut stale.deadline);
        std::mem::swap(&mut self.token, &mut stale.token);
    }

    /// Where a server-side event goes: `Some` to be processed now by the
    /// owner (or dropped by it: a dead epoch's), `None` if it was kept for a
    /// paused node or handed to the old owner.
    pub(crate) fn route(&mut self, ev: Ev) -> Option<Ev> {
        let epoch = match &ev {
            Ev::Arrive { link, dir: Dir::Up, .. } | Ev::Detect { link, end: End::Server } => {
                self.net.get(*link).map(|l| l.epoch)
            }
            Ev::Job { epoch, .. } => Some(*epoch),
            _ => None,
        };
        let Some(epoch) = epoch else { return Some(ev) };
        if epoch == self.epoch {
            return match self.paused.as_mut() {
                Some(kept) => {
                    kept.push(ev);
                    None
                }
                None => Some(ev),
            };
        }
        let Some(stale) = self.stales.iter_mut().find(|s| s.epoch == epoch) else { return Some(ev) };
        if let Some(kept) = stale.paused.as_mut() {
            kept.push(ev);
            return None;
        }
        self.as_stale(epoch, |sim| sim.dispatch_now(ev));
        None
    }

    /// The earliest timer of the old owners that run: when, and whose (its epoch).
    pub(crate) fn stale_deadline(&self) -> Option<(Duration, u64)> {
        self.stales.iter().filter_map(|s| s.deadline().map(|t| (t, s.epoch))).min()
    }

    /// The epochs of the old owners.
    pub(crate) fn stale_epochs(&self) -> Vec<u64> {
        self.stales.iter().map(|s| s.epoch).collect()
    }

    /// Settling: every paused node resumes now.
    pub(crate) fn resume_all(&mut self) {
        let mut epochs = self.stale_epochs();
        epochs.push(self.epoch);
        for epoch in epochs {
            self.resume(epoch);
        }
    }
}
