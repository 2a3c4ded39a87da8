//! The system under test by default: confab, in this process (see
//! `server.rs`), each client a sans-IO [`confab_proto::Client`] over its own link.

use std::time::Instant;

use bytes::Bytes;
use confab_proto::ClientEvent;

use crate::driver::{Peer, now};
use crate::endpoint::{Endpoint, Event, System};
use crate::server::Connector;
use crate::worker::{Role, Shared};
use crate::{BenchError, Scenario};

/// Every bench account's password (at least the server's minimum length).
const PASSWORD: &str = "bench password 0123";
/// Every bench account's passphrase (at least three words).
const PASSPHRASE: &str = "bench quiet river stone";
/// The room of the room scenario.
const ROOM: &str = "bench-room";
/// The room's join verifier (16..=256 bytes).
const VERIFIER: &[u8] = b"bench-room-verifier-0123456789ab";
/// The room descriptor: opaque to the server, like the verifier.
const DESCRIPTOR: &[u8] = b"bench-room-descriptor";
/// The opaque handshake bytes of the conversations (the server relays them unread).
const HANDSHAKE: &[u8] = b"bench-handshake";
/// confab: one client per role through `connect`.
pub(crate) struct Confab {
    /// Makes each client's link.
    pub(crate) connect: Connector,
    /// The clients' delivery-acknowledgement delay.
    pub(crate) ack_delay: std::time::Duration,
}

impl System for Confab {
    /// Connects, creates the account, logs in, opens the conversation or joins the room.
    fn setup(&self, shared: &Shared, role: &Role) -> Result<Box<dyn Endpoint>, BenchError> {
        let deadline = shared.setup_deadline;
        let link = (self.connect)().map_err(|e| BenchError(format!("connect failed: {e}")))?;
        let mut peer = Peer::new(link, self.ack_delay)?;
        let name = role.name.as_str();
        let key = Bytes::from(format!("bench-identity-key-of-{name}"));
        let id =
            peer.client().register(now(), name, PASSWORD, PASSPHRASE, key).map_err(|e| BenchError(e.to_string()))?;
        peer.outcome(deadline, id, "register")?;
        let id = peer.client().login(now(), name, PASSWORD, PASSPHRASE).map_err(|e| BenchError(e.to_string()))?;
        peer.wait_for(deadline, "login", |e| match e {
            ClientEvent::LoggedIn { request_id, .. } if *request_id == id => Some(Ok(())),
            ClientEvent::Failed { request_id, code, reason, .. } if *request_id == id => {
                Some(Err(BenchError(format!("login failed: {code} {reason}"))))
            }
            _ => None,
        })??;
        peer.wait_for(deadline, "connected", |e| matches!(e, ClientEvent::Connected { .. }).then_some(()))?;
        // Every account exists and is online.
        shared.gate.wait(deadline)?;

        match shared.config.scenario {
            Scenario::Mp if role.sends => {
                let to = role.peers.first().ok_or_else(|| BenchError("sender without a peer".into()))?;
                let id = peer
                    .client()
                    .request_mp(now(), to, Bytes::from_static(HANDSHAKE))
                    .map_err(|e| BenchError(e.to_string()))?;
                peer.outcome(deadline, id, "request_mp")?;
                peer.wait_for(deadline, "mp_accepted", |e| match e {
                    ClientEvent::MpAccepted { peer, .. } if peer == to => Some(()),
                    _ => None,
                })?;
            }
            Scenario::Mp => {
                for _ in 0..role.accepts {
                    let from = peer.wait_for(deadline, "mp_request", |e| match e {
                        ClientEvent::MpRequest { from, .. } => Some(from.clone()),
                        _ => None,
                    })?;
                    let id = peer
                        .client()
                        .accept_mp(now(), &from, Bytes::from_static(HANDSHAKE))
                        .map_err(|e| BenchError(e.to_string()))?;
                    peer.outcome(deadline, id, "accept_mp")?;
                }
            }
            Scenario::Room => {
                if role.index == 0 {
                    let id = peer
                        .client()
                        .create_room(now(), ROOM, Bytes::from_static(VERIFIER), Bytes::from_static(DESCRIPTOR))
                        .map_err(|e| BenchError(e.to_string()))?;
                    peer.outcome(deadline, id, "create_room")?;
                }
                shared.gate.wait(deadline)?;
                let id = peer
                    .client()
                    .join_room(now(), ROOM, Bytes::from_static(VERIFIER))
                    .map_err(|e| BenchError(e.to_string()))?;
                peer.outcome(deadline, id, "join_room")?;
            }
        }
        let target = match shared.config.scenario {
            Scenario::Mp => role.peers.first().cloned().unwrap_or_default(),
            Scenario::Room => ROOM.to_owned(),
        };
        Ok(Box::new(ConfabEndpoint { peer, target, scenario: shared.config.scenario }))
    }
}

/// A logged-in confab client with its conversation open or its room joined.
struct ConfabEndpoint {
    peer: Peer,
    /// The peer's name (private messages) or the room.
    target: String,
    scenario: Scenario,
}

impl Endpoint for ConfabEndpoint {
    fn send(&mut self, payload: Bytes) -> Result<u32, BenchError> {
        let n = now();
        let id = match self.scenario {
            Scenario::Mp => self.peer.client().send_mp(n, &self.target, payload),
            Scenario::Room => self.peer.client().send_room(n, &self.target, payload),
        };
        id.map_err(|e| BenchError(format!("send refused by the client: {e}")))
    }

    fn pump(&mut self) -> Result<(), BenchError> {
        self.peer.pump()
    }

    fn step(&mut self, deadline: Instant) -> Result<(), BenchError> {
        self.peer.step(deadline)
    }

    fn next_event(&mut self) -> Option<Event> {
        while let Some(event) = self.peer.events().pop_front() {
            let e = match event {
                ClientEvent::Done { request_id, .. } => Event::Acked(request_id),
                ClientEvent::Failed { request_id, opcode, code, reason, .. } => {
                    Event::Refused(request_id, format!("{opcode:?} refused: {code} {reason}"))
                }
                ClientEvent::Indeterminate { request_id, opcode, reason } => {
                    Event::Refused(request_id, format!("{opcode:?} unconfirmed: {reason}"))
                }
                ClientEvent::UserMessage { sealed, .. } | ClientEvent::RoomMessage { sealed, .. } => {
                    Event::Delivered(sealed)
                }
                ClientEvent::Closed { code, reason } => Event::Closed(format!("{code} {reason}")),
                ClientEvent::ServerError { code, reason, .. } => Event::Error(format!("server error {code}: {reason}")),
                ClientEvent::BadFrame { error } => Event::Error(format!("bad frame: {error}")),
                _ => continue,
            };
            return Some(e);
        }
        None
    }

    fn has_events(&self) -> bool {
        !self.peer.events_ref().is_empty()
    }

    fn close(self: Box<Self>) {
        self.peer.close();
    }
}
