//! Tests of the client machine: against a real [`Server`] in-process
//! ([`Net`] shuttles bytes until both sides are quiet), and alone against
//! hand-made frames ([`lone::Lone`]).

mod auth;
mod checkpoint;
mod commands;
mod delivery;
mod external;
mod lone;
mod mp;
mod retry_key;
mod robustness;
mod rooms;

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::machine::checked::Checked;
use crate::server::{Action, HashParams, ServerLog};
use crate::{Client, ClientConfig, ClientEvent, ClientOutput, Ephemeral, Now, Server, ServerConfig, SessionId};

pub(super) const START_MS: u64 = crate::examples::TIMESTAMP_MS;
pub(super) const PASSWORD: &str = "correct horse battery";
pub(super) const PASSPHRASE: &str = "apple river stone";
pub(super) const VERIFIER: &[u8] = b"room-verifier-0123456789";

/// Cheap argon2, otherwise the server defaults.
pub(super) fn server_config() -> ServerConfig {
    ServerConfig { hash_params: HashParams::INSECURE_FAST, ..ServerConfig::default() }
}

pub(super) fn start() -> Now {
    Now::new(Instant::now(), START_MS)
}

/// One client and its link to the server.
pub(super) struct Peer {
    pub(super) client: Client,
    pub(super) session: Option<SessionId>,
    /// Every event the client emitted, in order (tests take them with [`Net::take`]).
    pub(super) events: Vec<ClientEvent>,
    /// Every `Close` the client asked for.
    pub(super) closes: Vec<(u16, String)>,
    /// Bytes from the server to this client are lost.
    pub(super) deaf: bool,
    /// Bytes from this client to the server are lost.
    pub(super) mute: bool,
    /// Where its turns are committed (checks that no change goes unsaved).
    pub(super) store: Checked<Client>,
}

/// A server and clients in one process, on a virtual clock.
pub(super) struct Net {
    pub(super) server: Server,
    pub(super) now: Now,
    pub(super) peers: Vec<Peer>,
    pub(super) server_events: Vec<ServerLog>,
}

impl Net {
    pub(super) fn new() -> Net {
        Net::with_config(server_config())
    }

    pub(super) fn with_config(config: ServerConfig) -> Net {
        let now = start();
        let server = Server::new(config, [7; 32], now).expect("a valid configuration");
        Net { server, now, peers: Vec::new(), server_events: Vec::new() }
    }

    /// A new client, not connected.
    pub(super) fn add(&mut self) -> usize {
        self.add_with(ClientConfig::default())
    }

    pub(super) fn add_with(&mut self, config: ClientConfig) -> usize {
        self.peers.push(Peer {
            client: Client::new(config, self.now),
            session: None,
            events: Vec::new(),
            closes: Vec::new(),
            deaf: false,
            mute: false,
            store: Checked::default(),
        });
        self.peers.len() - 1
    }

    pub(super) fn client(&mut self, i: usize) -> &mut Client {
        &mut self.peers[i].client
    }

    /// Opens a transport for client `i`.
    pub(super) fn connect(&mut self, i: usize) {
        let session = self.server.open_session(self.now).expect("session limit");
        self.peers[i].session = Some(session);
        self.peers[i].client.connected(self.now);
        self.pump();
    }

    /// The transport of client `i` breaks (both ends notice).
    pub(super) fn disconnect(&mut self, i: usize) {
        if let Some(session) = self.peers[i].session.take() {
            self.server.close_session(self.now, session);
        }
        self.peers[i].client.disconnected(self.now);
        self.pump();
    }

    /// Moves the clock and fires every timer.
    pub(super) fn advance(&mut self, d: Duration) {
        self.now = self.now.advance(d);
        self.server.handle_timeout(self.now);
        for p in &mut self.peers {
            p.client.handle_timeout(self.now);
        }
        self.pump();
    }

    /// Lets the delivery acknowledgements held for the default
    /// [`ClientConfig::ack_delay`] go out (and their answers come back).
    pub(super) fn settle_acks(&mut self) {
        self.advance(ClientConfig::default().ack_delay);
    }

    /// Moves the clock by `total` in steps of `step`, pumping at each.
    pub(super) fn advance_by_steps(&mut self, total: Duration, step: Duration) {
        let mut done = Duration::ZERO;
        while done < total {
            self.advance(step);
            done += step;
        }
    }

    /// Shuttles outputs until neither side has anything to say.
    pub(super) fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut busy = false;
            for i in 0..self.peers.len() {
                busy |= self.drain_client(i);
            }
            busy |= self.drain_server();
            if !busy {
                return;
            }
        }
        panic!("the network never became quiet");
    }

    fn drain_client(&mut self, i: usize) -> bool {
        let mut busy = false;
        let p = &mut self.peers[i];
        for output in p.store.turn(&mut p.client) {
            let p = &mut self.peers[i];
            match output {
                ClientOutput::Transmit(bytes) => {
                    busy = true;
                    if let (Some(session), false) = (p.session, p.mute) {
                        self.server.handle_input(self.now, session, &bytes);
                    }
                }
                ClientOutput::Event(e) => {
                    busy = true;
                    p.events.push(e);
                }
                ClientOutput::Close { code, reason } => {
                    busy = true;
                    p.closes.push((code, reason));
                    if let Some(session) = p.session.take() {
                        self.server.close_session(self.now, session);
                    }
                }
                ClientOutput::Timeout(_) => return busy,
            }
        }
        busy
    }

    fn drain_server(&mut self) -> bool {
        let mut busy = false;
        loop {
            let mut turn = self.server.drain();
            if turn.is_empty() {
                let Ok(_) = turn.commit(&mut Ephemeral);
                return busy;
            }
            busy = true;
            for job in turn.take_jobs() {
                let result = job.run();
                self.server.handle_work(self.now, result);
            }
            let Ok(committed) = turn.commit(&mut Ephemeral);
            for action in committed {
                match action {
                    Action::Log(e) => self.server_events.push(e),
                    Action::Transmit { session, bytes } => {
                        if let Some(p) = self.peers.iter_mut().find(|p| p.session == Some(session))
                            && !p.deaf
                        {
                            p.client.handle_input(self.now, &bytes);
                        }
                    }
                    Action::Close { session, .. } => {
                        if let Some(p) = self.peers.iter_mut().find(|p| p.session == Some(session)) {
                            p.session = None;
                            p.client.disconnected(self.now);
                        }
                    }
                }
            }
        }
    }

    /// The events client `i` emitted since the last call.
    pub(super) fn take(&mut self, i: usize) -> Vec<ClientEvent> {
        std::mem::take(&mut self.peers[i].events)
    }

    /// Connects client `i` and creates the account `name`.
    pub(super) fn register(&mut self, i: usize, name: &str) {
        if self.peers[i].session.is_none() {
            self.connect(i);
        }
        let now = self.now;
        let key = Bytes::from(format!("key-of-{name}"));
        let id = self.client(i).register(now, name, PASSWORD, PASSPHRASE, key).unwrap();
        self.pump();
        let events = self.take(i);
        assert!(
            events.iter().any(|e| matches!(e, ClientEvent::Done { request_id, code: 201, .. } if *request_id == id)),
            "register {name}: {events:?}"
        );
    }

    /// Logs client `i` (connected) in as `name`; returns the events after the login's.
    /// Logs client `i` in as `name`: the events after `Connected`, but the
    /// `CaughtUp` that must follow what was queued.
    pub(super) fn login(&mut self, i: usize, name: &str) -> Vec<ClientEvent> {
        let now = self.now;
        let id = self.client(i).login(now, name, PASSWORD, PASSPHRASE).unwrap();
        self.pump();
        self.settle_acks();
        let events = self.take(i);
        let at = events
            .iter()
            .position(|e| matches!(e, ClientEvent::LoggedIn { request_id, .. } if *request_id == id))
            .unwrap_or_else(|| panic!("login {name}: {events:?}"));
        let ClientEvent::Connected { username, queued } = &events[at + 1] else { panic!("{events:?}") };
        assert_eq!(username, name);
        let mut after = events[at + 2..].to_vec();
        let caught_up = after.iter().position(|e| *e == ClientEvent::CaughtUp).unwrap_or_else(|| panic!("{events:?}"));
        let items = after[..caught_up].iter().filter(|e| {
            matches!(
                e,
                ClientEvent::UserMessage { .. }
                    | ClientEvent::MpRequest { .. }
                    | ClientEvent::MpAccepted { .. }
                    | ClientEvent::MpClosed { .. }
                    | ClientEvent::MpExpired { .. }
            )
        });
        assert!(items.count() <= *queued as usize, "caught up after the queued items: {events:?}");
        after.remove(caught_up);
        after
    }

    /// A new client registered and logged in as `name`.
    pub(super) fn user(&mut self, name: &str) -> usize {
        let i = self.add();
        self.register(i, name);
        self.login(i, name);
        i
    }

    /// Opens a conversation `a` -> `b` (both online).
    pub(super) fn open_mp(&mut self, a: usize, b: usize) {
        let (na, nb) = (self.name(a), self.name(b));
        let now = self.now;
        self.client(a).request_mp(now, &nb, Bytes::from_static(b"hs-a")).unwrap();
        self.pump();
        self.client(b).accept_mp(now, &na, Bytes::from_static(b"hs-b")).unwrap();
        self.pump();
        self.settle_acks();
        assert!(self.take(a).iter().any(|e| matches!(e, ClientEvent::MpAccepted { .. })));
        assert!(self.take(b).iter().any(|e| matches!(e, ClientEvent::MpRequest { .. })));
    }

    pub(super) fn name(&self, i: usize) -> String {
        self.peers[i].client.username().expect("logged in").to_owned()
    }

    /// How many lane items from `from` to `to` the server still holds.
    pub(super) fn queued(&self, from: &str, to: &str) -> usize {
        self.server.state().lane(from, to).map_or(0, |l| l.items.len())
    }
}

/// The sealed payloads of the `UserMessage` events among `events`.
pub(super) fn messages(events: &[ClientEvent]) -> Vec<(String, u64, Bytes)> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::UserMessage { from, seq, sealed, .. } => Some((from.clone(), *seq, sealed.clone())),
            _ => None,
        })
        .collect()
}

/// The outcome event of request `id`, if any.
pub(super) fn outcome(events: &[ClientEvent], id: u32) -> Option<&ClientEvent> {
    events.iter().find(|e| match e {
        ClientEvent::Done { request_id, .. }
        | ClientEvent::Failed { request_id, .. }
        | ClientEvent::LoggedIn { request_id, .. }
        | ClientEvent::LoggedOut { request_id } => *request_id == id,
        _ => false,
    })
}
