//! Hosting the server machine like a real adapter would: drain it in turns
//! after every step until a turn is empty, commit each turn's changes in one
//! transaction, then write the turn's frames; run password-hash jobs off the
//! routing path (in virtual time); tear links down on `Close`.

use bytes::Bytes;
use confab_proto::SessionId;
use confab_proto::server::{Action, Job};
use rand::RngExt as _;

use super::net::{Dir, Segment};
use super::queue::Ev;
use super::store::Fault;
use super::{Invariant, Sim};

impl Sim {
    /// Drains the server until a turn is empty: each turn's jobs scheduled,
    /// its changes committed, then its transmits, closes and log lines;
    /// backlog reports can make the server produce more, hence the loop
    /// (the policy of the real server's loop).
    pub(crate) fn drain_server(&mut self) {
        loop {
            let Some(server) = self.server.as_mut() else { return };
            let mut turn = server.drain();
            let quiet = turn.is_empty();
            for job in turn.take_jobs() {
                let at = self.elapsed + self.config.job_delay.draw(&mut self.rng);
                self.agenda.push(at, Ev::Job { epoch: self.epoch, job });
            }
            let n = turn.changes().len();
            if n > 0 && self.config.record_server {
                self.changes.extend(turn.changes().iter().cloned());
            }
            self.store.set_writer(self.token);
            let committed = turn.commit(&mut self.store);
            if n > 0 {
                self.trace.step(self.elapsed, &(n as u64).to_le_bytes(), || format!("commit {n} changes"));
            }
            let committed = match committed {
                Ok(committed) => committed,
                Err(Fault::Fenced) if self.acting_stale => {
                    self.trace.note(self.elapsed, "old owner's commit fenced (another node holds the lease): stops");
                    self.stale_stops();
                    return;
                }
                Err(Fault::Fenced) => {
                    self.violate(Invariant::SingleOwner, "the owner's commit was fenced".into());
                    self.crash_now();
                    return;
                }
                Err(Fault::Crashed) => {
                    self.stats.crashes_after_commit += 1;
                    self.trace.note(self.elapsed, "crash after commit, before transmit");
                    self.crash_now();
                    return;
                }
            };
            self.server_deadline = committed.timeout().map(|t| self.to_elapsed(t));
            let mut backlog = Vec::new();
            for action in committed {
                match action {
                    Action::Transmit { session, bytes } => {
                        let Some(&link) = self.sessions.get(&session) else {
                            continue;
                        };
                        let held = self.server_write(link, "server", session, bytes);
                        if held > 0 {
                            backlog.push((session, held));
                        }
                    }
                    Action::Close { session, code, reason } => {
                        self.trace.step(self.elapsed, &code.to_le_bytes(), || {
                            format!("server closes {session}: {code} {reason}")
                        });
                        self.server_end_closed(session);
                    }
                    Action::Log(e) => {
                        self.trace.step(self.elapsed, b"server-event", || format!("server: {e:?}"));
                        if self.config.record_server {
                            self.server_events.push(e);
                        }
                    }
                }
            }
            if quiet {
                return;
            }
            if self.acting_stale {
                self.stats.stale_turns += 1;
            }
            let now = self.now();
            let Some(server) = self.server.as_mut() else { return };
            for (session, pending) in backlog {
                server.handle_backlog(now, session, pending);
            }
        }
    }

    /// A server machine's frames for `link`, written if the server's end is
    /// still open (`who` names the machine in the trace): how many bytes the
    /// link holds back (a hold), for the machine's backlog report.
    pub(crate) fn server_write(&mut self, link: super::LinkId, who: &str, session: SessionId, bytes: Bytes) -> usize {
        if !self.net.get(link).is_some_and(|l| l.server_open) {
            return 0;
        }
        let len = bytes.len();
        self.trace.step(self.elapsed, &link.0.to_le_bytes(), || format!("{who} -> {link} ({session}): {len} bytes"));
        let now = self.elapsed;
        self.net.send(&mut self.agenda, &mut self.rng, now, link, Dir::Down, Segment::Data(bytes))
    }

    /// The server side of a session is done (the server said `Close`): the
    /// end of the stream follows what was written.
    fn server_end_closed(&mut self, session: SessionId) {
        if let Some(link) = self.sessions.remove(&session) {
            self.server_fin(link);
        }
    }

    /// The server's end of `link` closes (if it is open): the end of the
    /// stream follows what was written. Whether it was open.
    pub(crate) fn server_fin(&mut self, link: super::LinkId) -> bool {
        let Some(l) = self.net.get_mut(link) else { return false };
        if !l.server_open {
            return false;
        }
        l.server_open = false;
        let now = self.elapsed;
        self.net.send(&mut self.agenda, &mut self.rng, now, link, Dir::Down, Segment::Fin);
        self.net.gc(link);
        true
    }

    /// The server's side of a link learned the connection is gone (end of
    /// stream from the client, detection, disconnect).
    pub(crate) fn server_lost(&mut self, link: super::LinkId) {
        if self.split.is_some() {
            return self.split_lost(link);
        }
        let Some(l) = self.net.get_mut(link) else { return };
        if !l.server_open {
            return;
        }
        l.server_open = false;
        let (session, epoch) = (l.session, l.epoch);
        self.net.gc(link);
        if epoch != self.epoch {
            return;
        }
        self.sessions.remove(&session);
        let now = self.now();
        if let Some(server) = self.server.as_mut() {
            self.trace.step(self.elapsed, &session.0.to_le_bytes(), || format!("server loses {session}"));
            server.close_session(now, session);
            self.drain_server();
        }
    }

    /// Bytes reach the server.
    pub(crate) fn server_input(&mut self, link: super::LinkId, bytes: &Bytes) {
        if self.split.is_some() {
            return self.split_input(link, bytes);
        }
        let Some(l) = self.net.get(link) else { return };
        if !l.server_open || l.epoch != self.epoch {
            return;
        }
        let session = l.session;
        let now = self.now();
        let Some(server) = self.server.as_mut() else { return };
        server.handle_input(now, session, bytes);
        self.drain_server();
    }

    pub(crate) fn server_timeout(&mut self) {
        self.server_deadline = None;
        let now = self.now();
        let Some(server) = self.server.as_mut() else { return };
        self.trace.step(self.elapsed, b"server-timeout", || "server timeout".into());
        server.handle_timeout(now);
        self.drain_server();
    }

    pub(crate) fn job_done(&mut self, epoch: u64, job: Job) {
        if self.split.is_some() {
            return self.split_job_done(epoch, job);
        }
        if epoch != self.epoch {
            return;
        }
        let now = self.now();
        let Some(server) = self.server.as_mut() else { return };
        let result = job.run();
        self.trace.step(self.elapsed, &job.id.0.to_le_bytes(), || format!("job {:?} done", job.id));
        server.handle_work(now, result);
        self.drain_server();
    }

    /// The server process dies now: everything not committed is gone, every
    /// connection dies, every client notices.
    pub(crate) fn crash_now(&mut self) {
        if self.server.take().is_none() {
            return;
        }
        self.stats.crashes += 1;
        self.epoch += 1;
        self.server_deadline = None;
        self.sessions.clear();
        self.paused = None;
        self.trace.note(self.elapsed, "server crashed");
        if self.auto_restart {
            let at = self.elapsed + self.config.server_downtime.draw(&mut self.rng);
            self.agenda.push(at, Ev::Restart);
        }
        // Old owners' connections are their own (cluster mode).
        let stales = self.stale_epochs();
        self.kill_links(|epoch| !stales.contains(&epoch));
    }

    /// The server end of every link whose epoch `which` selects dies: each
    /// client learns it, at once (a reset) or after what was written (the
    /// OS closing the socket).
    pub(crate) fn kill_links(&mut self, which: impl Fn(u64) -> bool) {
        for link in self.net.ids() {
            let Some(l) = self.net.get_mut(link) else { continue };
            if !which(l.epoch) {
                continue;
            }
            l.server_open = false;
            let client = l.client;
            if l.client_open && !l.doomed {
                if self.rng.random_bool(0.5) {
                    // Reset: what is in flight is lost, the client learns at once.
                    l.doomed = true;
                    self.client_lost(client, link);
                } else {
                    // The OS closes the socket: what was written still arrives, then the end of stream.
                    let now = self.elapsed;
                    self.net.send(&mut self.agenda, &mut self.rng, now, link, Dir::Down, Segment::Fin);
                }
            }
            self.net.gc(link);
        }
    }

    /// Checks, after the final drain, that the server's state is exactly what the store holds.
    pub(crate) fn check_store(&mut self, settled: bool) {
        if self.split.is_some() {
            return self.split_check(settled);
        }
        let Some(server) = self.server.as_ref() else {
            return self.violate(Invariant::Durability, "server down at the end".into());
        };
        if server.state() != self.store.memory().state() {
            self.violate(Invariant::Durability, "server state differs from the committed store".into());
        }
    }
}
