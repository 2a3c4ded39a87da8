//! A node's loop, as `confab-server`'s (`server/src/runtime/switch.rs`):
//! the switchboard's outputs done in order, each core drained in turns
//! (its changes committed to its partition's store under its token before
//! its frames leave), the frames each core settled told back to the
//! switchboard, and a connection closed whole when a core closes one of
//! its sessions, refuses one (503), or is not served here (421).

use bytes::Bytes;
use confab_proto::server::{Action, Change, PartitionId, Switched, oidc_home, oidc_subject_of};
use confab_proto::wire::{Close, Message, status};

use super::super::net::{Dir, LinkId, Segment};
use super::super::queue::Ev;
use super::super::store::Fault;
use super::super::{Invariant, Sim};

impl Sim {
    /// Does node `n`'s switchboard outputs until none is left and no core
    /// settled a frame more.
    pub(crate) fn run_node(&mut self, n: usize) {
        for _ in 0..10_000 {
            while let Some(out) = self.sp().nodes[n].board.poll() {
                self.switched(n, out);
            }
            if !self.settle_frames(n) {
                return;
            }
        }
        self.violate(Invariant::Progress, format!("node {n}'s switchboard did not settle"));
    }

    fn switched(&mut self, n: usize, out: Switched<LinkId>) {
        let now = self.now();
        match out {
            Switched::Open { link, partition } => self.open_at(n, link, partition),
            Switched::Feed { link, partition, bytes, .. } => {
                let Some(session) = self.sp_ref().nodes[n].session_at(link, partition) else { return };
                let conf = self.sp_ref().conf;
                let doubt = conf.lease - conf.renew_every() / 4;
                let at = self.elapsed;
                let node = &mut self.sp().nodes[n];
                let Some(core) = node.cores.get_mut(&partition) else { return };
                if at >= core.renewed + doubt {
                    let reason = format!("partition {partition}'s lease is being renewed on this node: reconnect");
                    self.refuse(n, link, 503, &reason);
                    return;
                }
                core.server.handle_input(now, session, &bytes);
                self.drain_core(n, partition);
            }
            Switched::Close { link, partition } => {
                let Some(session) = self.sp_ref().nodes[n].session_at(link, partition) else { return };
                let node = &mut self.sp().nodes[n];
                let Some(core) = node.cores.get_mut(&partition) else { return };
                let run = core.run;
                if core.server.has_session(session) {
                    node.ending.insert((run, session));
                }
                core.server.close_session(now, session);
                self.drain_core(n, partition);
            }
            Switched::Resolve { link, token, ticket } => {
                let partition = self.resolve(n, link, &token);
                self.sp().nodes[n].board.resolved(link, ticket, partition);
            }
            Switched::Refuse { link, code, reason } => self.refuse(n, link, code, &reason),
        }
    }

    /// The partition of an OIDC frame: the home of the account its subject
    /// is bound to (in this node's cores, else in the store), else of the
    /// name its token gives; a token naming no subject goes to the
    /// connection's first core.
    fn resolve(&self, n: usize, link: LinkId, token: &Bytes) -> PartitionId {
        let split = self.sp_ref();
        let node = &split.nodes[n];
        let Some(key) = oidc_subject_of(token).filter(|_| self.config.server.oidc.is_some()) else {
            return node.conns.get(&link).and_then(|c| c.first()).map_or(0, |&(p, _, _)| p);
        };
        let here = node.cores.values().find_map(|c| c.server.state().accounts().oidc_subject(&key).map(str::to_owned));
        let bound = here.or_else(|| {
            split.stores.iter().find_map(|s| s.memory().state().accounts().oidc_subject(&key).map(str::to_owned))
        });
        oidc_home(token, split.parts, |_| bound)
    }

    fn open_at(&mut self, n: usize, link: LinkId, partition: PartitionId) {
        let now = self.now();
        let node = &mut self.sp().nodes[n];
        let Some(sessions) = node.conns.get(&link) else { return };
        let first = sessions.is_empty();
        let Some(core) = node.cores.get_mut(&partition) else {
            let reason =
                format!("partition {partition} is not served by this node: connect to another node of this service");
            self.refuse(n, link, status::MISDIRECTED, &reason);
            return;
        };
        match core.server.open_session(now) {
            Ok(session) => {
                let run = core.run;
                core.sessions.insert(session, link);
                if let Some(c) = node.conns.get_mut(&link) {
                    c.push((partition, run, session));
                }
                self.drain_core(n, partition);
            }
            Err(_) if first => {
                // Refused as a single server refuses a connection over its limit: closed without a frame.
                node.board.close(link);
                self.end_link(n, link);
            }
            Err(_) => self.refuse(n, link, 503, "server busy: try again later"),
        }
    }

    /// Closes `link` with a close frame of `code` and `reason`. On a 421
    /// the client moves on to the next node of its list.
    pub(crate) fn refuse(&mut self, n: usize, link: LinkId, code: u16, reason: &str) {
        let Some(l) = self.net.get(link) else { return };
        if !l.server_open {
            return;
        }
        let client = l.client;
        self.trace.step(self.elapsed, &code.to_le_bytes(), || format!("node {n} closes {link}: {code} {reason}"));
        if code == status::MISDIRECTED {
            self.stats.misdirected += 1;
            self.hosts[client.0].node += 1;
        }
        let frame: Bytes = Message::Close(Close { code, reason: reason.to_owned() }).to_bytes(b"");
        let now = self.elapsed;
        self.net.send(&mut self.agenda, &mut self.rng, now, link, Dir::Down, Segment::Data(frame));
        self.sp().nodes[n].board.close(link);
        self.end_link(n, link);
    }

    /// The node's end of `link` closes: the end of the stream follows what
    /// was written. Its sessions end as the switchboard closes them.
    fn end_link(&mut self, n: usize, link: LinkId) {
        if self.server_fin(link) {
            self.sp().nodes[n].board.close(link);
        }
    }

    /// Tells the switchboard which held frames the cores settled; whether any was.
    fn settle_frames(&mut self, n: usize) -> bool {
        let (mut settled, mut closed) = (Vec::new(), Vec::new());
        let node = &self.sp_ref().nodes[n];
        for (&p, core) in &node.cores {
            for (link, ticket) in node.board.waiting_at(p) {
                let Some(session) = node.session_at(link, p) else { continue };
                if !core.server.has_session(session) {
                    closed.push(link);
                } else if !core.server.session_held(session) {
                    settled.push((link, ticket, core.server.session_user(session).is_some()));
                }
            }
        }
        let Some(split) = self.split.as_mut() else { return false };
        let node = &mut split.nodes[n];
        for &link in &closed {
            node.board.close(link);
        }
        for &(link, ticket, bound) in &settled {
            node.board.settled(link, ticket, bound);
        }
        // Connections gone from both ends are forgotten once their sessions closed.
        let gone: Vec<LinkId> = node.conns.keys().copied().filter(|l| self.net.get(*l).is_none()).collect();
        for link in gone {
            if node.board.bound_to(link).is_none() && node.board.partial(link) == 0 {
                node.conns.remove(&link);
            }
        }
        !settled.is_empty() || !closed.is_empty()
    }

    /// Drains node `n`'s core of `p` until a turn is empty, as the node's
    /// loop does: jobs scheduled, changes committed under the core's token
    /// (its mail into the outbox table in the same commit), then frames,
    /// closes and log lines. A failed commit stops that core only; a
    /// crash after a commit kills the node.
    pub(crate) fn drain_core(&mut self, n: usize, p: PartitionId) {
        loop {
            let Some(core) = self.sp().nodes[n].cores.get_mut(&p) else { return };
            let (run, token) = (core.run, core.token);
            let mut turn = core.server.drain();
            let quiet = turn.is_empty();
            for job in turn.take_jobs() {
                let at = self.elapsed + self.config.job_delay.draw(&mut self.rng);
                self.agenda.push(at, Ev::Job { epoch: run, job });
            }
            let changes = turn.changes().len();
            let mail: Vec<Change> = turn
                .changes()
                .iter()
                .filter(|c| matches!(c, Change::MailOut { .. } | Change::MailIn { .. }))
                .cloned()
                .collect();
            if changes > 0 && self.sp_ref().nodes[n].store_cut {
                self.stop_core(n, p, "its commit failed: the store is unreachable");
                return;
            }
            let split = self.sp();
            let store = &mut split.stores[usize::from(p)];
            store.set_writer(token);
            let committed = turn.commit(store);
            if changes > 0 {
                self.trace.step(self.elapsed, &(changes as u64).to_le_bytes(), || {
                    format!("node {n} core {p} commits {changes} changes")
                });
            }
            let committed = match committed {
                Ok(committed) => committed,
                Err(Fault::Fenced) => {
                    if self.sp_ref().leases[usize::from(p)].is_some_and(|l| l.token == token) {
                        self.violate(
                            Invariant::SingleOwner,
                            format!("partition {p}: the lease holder's commit was fenced"),
                        );
                    }
                    self.stop_core(n, p, "its commit was fenced: another node holds the lease");
                    return;
                }
                Err(Fault::Crashed) => {
                    // Committed (the turn's mail with it), then the process died.
                    self.mail_committed(n, p, mail);
                    self.stats.crashes_after_commit += 1;
                    self.trace.note(self.elapsed, &format!("node {n} crashes after a commit, before transmit"));
                    self.crash_node(n);
                    return;
                }
            };
            self.mail_committed(n, p, mail);
            if !quiet && self.sp_ref().leases[usize::from(p)].is_none_or(|l| l.token != token) {
                self.stats.stale_turns += 1;
            }
            let deadline = committed.timeout().map(|t| self.to_elapsed(t));
            if let Some(core) = self.sp().nodes[n].cores.get_mut(&p) {
                core.deadline = deadline;
            }
            let mut backlog = Vec::new();
            let mut ended = Vec::new();
            for action in committed {
                match action {
                    Action::Transmit { session, bytes } => {
                        let Some(&link) = self.sp_ref().nodes[n].cores.get(&p).and_then(|c| c.sessions.get(&session))
                        else {
                            continue;
                        };
                        let held = self.server_write(link, &format!("node {n} core {p}"), session, bytes);
                        if held > 0 {
                            backlog.push((session, held));
                        }
                    }
                    Action::Close { session, code, reason } => {
                        self.trace.step(self.elapsed, &code.to_le_bytes(), || {
                            format!("node {n} core {p} closes {session}: {code} {reason}")
                        });
                        let node = &mut self.sp().nodes[n];
                        let link = node.cores.get_mut(&p).and_then(|c| c.sessions.remove(&session));
                        if !node.ending.remove(&(run, session))
                            && let Some(link) = link
                        {
                            ended.push(link);
                        }
                    }
                    Action::Log(e) => {
                        self.trace.step(self.elapsed, b"server-event", || format!("node {n} core {p}: {e:?}"));
                    }
                }
            }
            // A core that closes a session closes the whole connection.
            for link in ended {
                self.end_link(n, link);
            }
            if quiet {
                return;
            }
            let now = self.now();
            let Some(core) = self.sp().nodes[n].cores.get_mut(&p) else { return };
            for (session, pending) in backlog {
                core.server.handle_backlog(now, session, pending);
            }
        }
    }

    /// Stops node `n`'s core of `p` (its lease lost, or a commit failed):
    /// nothing more of it is acted on, and every connection with a session
    /// there is closed 503. The node goes on with its other cores.
    pub(crate) fn stop_core(&mut self, n: usize, p: PartitionId, why: &str) {
        let Some(core) = self.sp().nodes[n].cores.remove(&p) else { return };
        self.stats.cores_stopped += 1;
        self.trace.note(self.elapsed, &format!("node {n} stops its core of partition {p}: {why}"));
        self.close_sessions_of(n, &core, "partition unavailable on this node: reconnect");
    }

    /// Closes 503 (`reason`) every connection with a session at `core`,
    /// which node `n` no longer runs; their other sessions end as the
    /// switchboard closes them.
    pub(super) fn close_sessions_of(&mut self, n: usize, core: &super::Core, reason: &str) {
        let mut links: Vec<LinkId> = core.sessions.values().copied().collect();
        links.sort_unstable();
        links.dedup();
        for link in links {
            self.refuse(n, link, 503, reason);
        }
        self.run_node(n);
    }
}
