//! Tests of [`SecureClient`]: two or three of them through a real
//! [`Server`] in-process (the pump of the client machine's tests).

mod attack;
mod blindness;
mod hostile;
mod mp;
mod rooms;
mod snapshot;

use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{SecureClient, SecureEvent, SecureOutput};
use crate::e2e::{IdentityKey, fixtures};
use crate::machine::checked::Checked;
use crate::server::{Action, Change, HashParams, ServerLog};
use crate::{Client, ClientConfig, ClientEvent, Ephemeral, Now, Server, ServerConfig, SessionId};

const PASSWORD: &str = "correct horse battery";
const PASSPHRASE: &str = "apple river stone";

/// One secure client and its link to the server.
struct Peer {
    sc: SecureClient,
    session: Option<SessionId>,
    events: Vec<SecureEvent>,
    /// Where its turns are committed (checks that no change goes unsaved).
    store: Checked<SecureClient>,
}

/// A server and secure clients in one process, on a virtual clock; keeps
/// everything the server persisted and logged.
struct Net {
    server: Server,
    now: Now,
    peers: Vec<Peer>,
    changes: Vec<Change>,
    server_events: Vec<ServerLog>,
}

impl Net {
    fn new() -> Net {
        let now = Now::new(Instant::now(), crate::examples::TIMESTAMP_MS);
        let config = ServerConfig { hash_params: HashParams::INSECURE_FAST, ..ServerConfig::default() };
        Net {
            server: Server::new(config, [7; 32], now).expect("a valid configuration"),
            now,
            peers: Vec::new(),
            changes: Vec::new(),
            server_events: Vec::new(),
        }
    }

    /// A new secure client with the fixture key `pkcs8`, registered and logged in as `name`.
    fn user(&mut self, name: &str, pkcs8: &[u8]) -> usize {
        let identity = IdentityKey::from_pkcs8_der(pkcs8).unwrap();
        let seed = [self.peers.len() as u8 + 1; 32];
        let client = Client::new(ClientConfig::default(), self.now);
        let sc = SecureClient::new(client, identity, StdRng::from_seed(seed), HashParams::INSECURE_FAST, self.now);
        self.peers.push(Peer { sc, session: None, events: Vec::new(), store: Checked::default() });
        let i = self.peers.len() - 1;
        self.connect(i);
        let now = self.now;
        self.peers[i].sc.register(now, name, PASSWORD, PASSPHRASE).unwrap();
        self.pump();
        self.peers[i].sc.login(now, name, PASSWORD, PASSPHRASE).unwrap();
        self.pump();
        let events = self.take(i);
        assert!(events.iter().any(|e| matches!(e, SecureEvent::Plain(ClientEvent::Connected { .. }))), "{events:?}");
        i
    }

    fn sc(&mut self, i: usize) -> &mut SecureClient {
        &mut self.peers[i].sc
    }

    fn connect(&mut self, i: usize) {
        let session = self.server.open_session(self.now).expect("session limit");
        self.peers[i].session = Some(session);
        self.peers[i].sc.connected(self.now);
        self.pump();
    }

    fn disconnect(&mut self, i: usize) {
        if let Some(session) = self.peers[i].session.take() {
            self.server.close_session(self.now, session);
        }
        self.peers[i].sc.disconnected(self.now);
        self.pump();
    }

    /// Moves the clock and fires every timer.
    fn advance(&mut self, d: std::time::Duration) {
        self.now = self.now.advance(d);
        self.server.handle_timeout(self.now);
        for p in &mut self.peers {
            p.sc.handle_timeout(self.now);
        }
        self.pump();
    }

    fn pump(&mut self) {
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
        for output in p.store.turn(&mut p.sc) {
            let p = &mut self.peers[i];
            match output {
                SecureOutput::Transmit(bytes) => {
                    busy = true;
                    if let Some(session) = p.session {
                        self.server.handle_input(self.now, session, &bytes);
                    }
                }
                SecureOutput::Event(e) => {
                    busy = true;
                    p.events.push(e);
                }
                SecureOutput::Close { .. } => {
                    busy = true;
                    if let Some(session) = p.session.take() {
                        self.server.close_session(self.now, session);
                    }
                }
                SecureOutput::Timeout(_) => return busy,
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
            self.changes.extend_from_slice(committed.changes());
            for action in committed {
                match action {
                    Action::Log(e) => self.server_events.push(e),
                    Action::Transmit { session, bytes } => {
                        if let Some(p) = self.peers.iter_mut().find(|p| p.session == Some(session)) {
                            p.sc.handle_input(self.now, &bytes);
                        }
                    }
                    Action::Close { session, .. } => {
                        if let Some(p) = self.peers.iter_mut().find(|p| p.session == Some(session)) {
                            p.session = None;
                            p.sc.disconnected(self.now);
                        }
                    }
                }
            }
        }
    }

    /// The events client `i` emitted since the last call.
    fn take(&mut self, i: usize) -> Vec<SecureEvent> {
        std::mem::take(&mut self.peers[i].events)
    }

    /// Alice (`a`) asks Bob (`b`), Bob accepts; both sessions ready.
    fn handshake(&mut self, a: usize, b: usize, a_name: &str, b_name: &str) {
        let now = self.now;
        self.sc(a).request_mp(now, b_name).unwrap();
        self.pump();
        let events = self.take(b);
        assert!(
            events.iter().any(|e| matches!(e, SecureEvent::MpOffered { from, .. } if from == a_name)),
            "{events:?}"
        );
        self.sc(b).accept_mp(now, a_name).unwrap();
        self.pump();
        // The delivery acknowledgements, held for `ack_delay`, go out.
        self.advance(crate::ClientConfig::default().ack_delay);
        assert!(self.take(b).iter().any(|e| matches!(e, SecureEvent::MpReady { peer } if peer == a_name)));
        let events = self.take(a);
        assert!(events.iter().any(|e| matches!(e, SecureEvent::MpReady { peer } if peer == b_name)), "{events:?}");
    }
}

/// The decrypted MPs among `events`.
fn mps(events: &[SecureEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            SecureEvent::Mp { from, text, .. } => Some((from.clone(), text.clone())),
            _ => None,
        })
        .collect()
}

/// The decryption failures among `events`.
fn failures(events: &[SecureEvent]) -> Vec<&SecureEvent> {
    events.iter().filter(|e| matches!(e, SecureEvent::DecryptFailed { .. })).collect()
}

fn alice_bob() -> (Net, usize, usize) {
    let mut net = Net::new();
    let a = net.user("alice", fixtures::ALICE_PKCS8);
    let b = net.user("bob", fixtures::BOB_PKCS8);
    (net, a, b)
}
