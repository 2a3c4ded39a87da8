//! Native tests of the browser client's API: two in-process `WebClient`s
//! through a `Server` machine in memory, the page's part played by the
//! harness (it stores each checkpoint before it writes frames, as `app.js` does).

use std::time::{Duration, Instant};

use confab_proto::e2e::fixtures;
use confab_proto::server::{Action, HashParams};
use confab_proto::{Ephemeral, Now, Server, ServerConfig, SessionId};
use serde_json::Value;

use crate::{ProfileError, WebClient, WebError};

struct User {
    web: WebClient,
    session: Option<SessionId>,
    events: Vec<Value>,
    /// The last profile bytes the "page" stored.
    stored: Option<Vec<u8>>,
}

struct Net {
    server: Server,
    now: Now,
    users: Vec<User>,
    /// Every byte that crossed the server, both ways.
    wire: Vec<u8>,
}

impl Net {
    fn new() -> Net {
        let now = Now::new(Instant::now(), 1_795_305_600_000);
        let config = ServerConfig { hash_params: HashParams::INSECURE_FAST, ..ServerConfig::default() };
        Net { server: Server::new(config, [9; 32], now).unwrap(), now, users: Vec::new(), wire: Vec::new() }
    }

    fn add(&mut self, seed: u8, pkcs8: &[u8]) -> usize {
        let web = WebClient::with_identity([seed; 32], pkcs8, HashParams::INSECURE_FAST, self.now).unwrap();
        self.users.push(User { web, session: None, events: Vec::new(), stored: None });
        let i = self.users.len() - 1;
        self.connect(i);
        i
    }

    fn connect(&mut self, i: usize) {
        self.users[i].session = Some(self.server.open_session(self.now).unwrap());
        self.users[i].web.connected(self.now);
        self.pump();
    }

    fn disconnect(&mut self, i: usize) {
        if let Some(s) = self.users[i].session.take() {
            self.server.close_session(self.now, s);
        }
        self.users[i].web.disconnected(self.now);
        self.pump();
    }

    fn pump(&mut self) {
        loop {
            let mut busy = false;
            for user in &mut self.users {
                while let Some(bytes) = user.web.take_checkpoint() {
                    user.stored = Some(bytes.to_vec());
                    user.web.checkpoint_saved();
                }
                while let Some(bytes) = user.web.poll_transmit() {
                    busy = true;
                    self.wire.extend_from_slice(&bytes);
                    if let Some(s) = user.session {
                        self.server.handle_input(self.now, s, &bytes);
                    }
                }
                while let Some(event) = user.web.poll_event() {
                    user.events.push(event);
                }
            }
            loop {
                let mut turn = self.server.drain();
                if turn.is_empty() {
                    break;
                }
                busy = true;
                for job in turn.take_jobs() {
                    self.server.handle_work(self.now, job.run());
                }
                let Ok(committed) = turn.commit(&mut Ephemeral);
                for action in committed {
                    if let Action::Transmit { session, bytes } = action {
                        self.wire.extend_from_slice(&bytes);
                        if let Some(user) = self.users.iter_mut().find(|u| u.session == Some(session)) {
                            user.web.handle_input(self.now, &bytes);
                        }
                    }
                }
            }
            if !busy {
                return;
            }
        }
    }

    fn web(&mut self, i: usize) -> &mut WebClient {
        &mut self.users[i].web
    }

    /// Events of user `i` whose `type` is `kind`.
    fn of(&self, i: usize, kind: &str) -> Vec<Value> {
        self.users[i].events.iter().filter(|e| e["type"] == kind).cloned().collect()
    }

    fn sign_up(&mut self, i: usize, name: &str) {
        let now = self.now;
        let id = self.web(i).register(now, name, "correct horse battery", "apple river stone").unwrap();
        self.pump();
        assert!(self.of(i, "done").iter().any(|e| e["request_id"] == id && e["op"] == "register"), "{name} registered");
        self.web(i).login(now, name, "correct horse battery", "apple river stone").unwrap();
        self.pump();
        assert_eq!(self.of(i, "logged_in").last().map(|e| e["username"].clone()), Some(Value::from(name)));
        assert_eq!(self.users[i].web.username(), Some(name));
    }
}

fn texts(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["text"].as_str()).collect()
}

#[test]
fn two_web_clients_share_a_room_and_a_sealed_conversation() {
    let mut net = Net::new();
    let alice = net.add(1, fixtures::ALICE_PKCS8);
    let bob = net.add(2, fixtures::BOB_PKCS8);
    net.sign_up(alice, "alice");
    net.sign_up(bob, "bob");
    let now = net.now;

    // A room: created with a password, joined (members in `done`), messages both ways.
    net.web(alice).create_room(now, "lobby", "room secret").unwrap();
    net.pump();
    let join = net.web(bob).join_room(now, "lobby", "room secret").unwrap();
    net.pump();
    let joined = net.of(bob, "done").into_iter().find(|e| e["request_id"] == join).expect("join answered");
    assert_eq!(joined["op"], "join_room");
    let mut members: Vec<&str> = joined["members"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    members.sort_unstable();
    assert_eq!(members, ["alice", "bob"]);
    net.web(alice).send_room(now, "lobby", "hello room from alice").unwrap();
    net.pump();
    net.web(bob).send_room(now, "lobby", "and hello from bob").unwrap();
    net.pump();
    assert_eq!(texts(&net.of(bob, "room")), ["hello room from alice"]);
    assert_eq!(texts(&net.of(alice, "room")), ["and hello from bob"]);
    let room_event = &net.of(bob, "room")[0];
    assert_eq!((room_event["room"].as_str(), room_event["from"].as_str()), (Some("lobby"), Some("alice")));
    assert_eq!(room_event["history"], false);

    // History comes back opened, marked as history.
    assert_eq!(net.users[bob].web.rooms(), ["lobby"]);
    net.web(bob).room_history(now, "lobby").unwrap();
    net.pump();
    let history: Vec<Value> = net.of(bob, "room").into_iter().filter(|e| e["history"] == true).collect();
    assert_eq!(texts(&history), ["hello room from alice", "and hello from bob"]);

    // A private conversation: request, offer with the safety number, accept, both ways.
    net.web(alice).request_mp(now, "bob").unwrap();
    net.pump();
    let offer = net.of(bob, "mp_offered").pop().expect("bob is offered a conversation");
    assert_eq!(offer["from"], "alice");
    net.web(bob).accept_mp(now, "alice").unwrap();
    net.pump();
    assert!(net.of(alice, "mp_ready").iter().any(|e| e["peer"] == "bob"));
    assert!(net.users[alice].web.has_session("bob") && net.users[bob].web.has_session("alice"));
    net.web(alice).send_mp(now, "bob", "a sealed secret for bob").unwrap();
    net.pump();
    net.web(bob).send_mp(now, "alice", "a sealed reply for alice").unwrap();
    net.pump();
    assert_eq!(texts(&net.of(bob, "mp")), ["a sealed secret for bob"]);
    assert_eq!(texts(&net.of(alice, "mp")), ["a sealed reply for alice"]);

    // The inbox shows the local expiry: one hour after receipt.
    let inbox = net.users[bob].web.inbox();
    assert_eq!(inbox[0]["text"], "a sealed secret for bob");
    assert_eq!(inbox[0]["expires_ms"].as_u64(), Some(now.unix_ms + 3_600_000));

    // Equal safety numbers on both sides, the one the offer carried, in the CLI's format.
    let a = net.users[alice].web.safety_number("bob").expect("bob's key pinned");
    let b = net.users[bob].web.safety_number("alice").expect("alice's key pinned");
    assert_eq!(a, b);
    assert_eq!(offer["safety_number"].as_str(), Some(a.as_str()));
    assert_eq!(a.split(' ').map(str::len).collect::<Vec<_>>(), [5; 12]);

    // No plaintext crossed the server.
    for secret in ["hello room from alice", "and hello from bob", "a sealed secret for bob", "a sealed reply for alice"]
    {
        assert!(!net.wire.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} on the wire");
    }
}

#[test]
fn frames_wait_until_the_page_stored_the_checkpoint() {
    let now = Now::new(Instant::now(), 1_795_305_600_000);
    let mut web = WebClient::with_identity([3; 32], fixtures::ALICE_PKCS8, HashParams::INSECURE_FAST, now).unwrap();
    web.connected(now);
    web.register(now, "alice", "correct horse battery", "apple river stone").unwrap();
    // The request is in the outbox (persisted state): its checkpoint comes first.
    assert!(web.checkpoint_pending());
    assert!(web.poll_transmit().is_none(), "no frame before the profile is stored");
    let bytes = web.take_checkpoint().expect("profile bytes to store");
    assert!(web.poll_transmit().is_none(), "taken is not stored");
    web.checkpoint_saved();
    assert!(!web.checkpoint_pending());
    assert!(web.poll_transmit().is_some(), "stored: the register frame goes");
    // A profile restores.
    let again = WebClient::restore([4; 32], &bytes, HashParams::INSECURE_FAST, now).unwrap();
    assert_eq!(again.fingerprint(), web.fingerprint());
}

#[test]
fn a_reloaded_page_keeps_its_session_and_gets_what_it_missed_once() {
    let mut net = Net::new();
    let alice = net.add(1, fixtures::ALICE_PKCS8);
    let bob = net.add(2, fixtures::BOB_PKCS8);
    net.sign_up(alice, "alice");
    net.sign_up(bob, "bob");
    let now = net.now;
    net.web(alice).request_mp(now, "bob").unwrap();
    net.pump();
    net.web(bob).accept_mp(now, "alice").unwrap();
    net.pump();
    net.web(bob).fetch_key(now, "alice").unwrap();
    net.pump();
    net.web(bob).verify("alice").unwrap();
    net.pump();
    assert_eq!(net.users[bob].web.contact("alice")["verified"], true);

    // Bob's tab closes; alice writes; a new page restores bob from IndexedDB's bytes.
    net.disconnect(bob);
    net.web(alice).send_mp(now, "bob", "sent while the tab was closed").unwrap();
    net.pump();
    net.now = now.advance(Duration::from_secs(5));
    let stored = net.users[bob].stored.clone().expect("bob's page stored a profile");
    let restored = WebClient::restore([5; 32], &stored, HashParams::INSECURE_FAST, net.now).unwrap();
    net.users[bob] = User { web: restored, session: None, events: Vec::new(), stored: Some(stored) };
    assert_eq!(net.users[bob].web.username(), Some("bob"));
    net.connect(bob);
    assert_eq!(texts(&net.of(bob, "mp")), ["sent while the tab was closed"], "delivered exactly once");
    assert_eq!(net.users[bob].web.conversations(), ["alice"], "the conversation survived the reload");
    assert_eq!(net.users[bob].web.contact("alice")["verified"], true, "the mark survived the reload");
    // Still logged in and keyed: a reply goes through without a new login.
    let later = net.now;
    net.web(bob).send_mp(later, "alice", "back again").unwrap();
    net.pump();
    assert_eq!(texts(&net.of(alice, "mp")), ["back again"]);

    // Another reload from the newest bytes: nothing is delivered twice.
    net.disconnect(bob);
    let stored = net.users[bob].stored.clone().unwrap();
    let restored = WebClient::restore([6; 32], &stored, HashParams::INSECURE_FAST, net.now).unwrap();
    net.users[bob] = User { web: restored, session: None, events: Vec::new(), stored: Some(stored) };
    net.connect(bob);
    assert!(net.of(bob, "mp").is_empty(), "nothing twice: {:?}", net.users[bob].events);
}

#[test]
fn wrong_password_is_a_failed_login_event() {
    let mut net = Net::new();
    let alice = net.add(1, fixtures::ALICE_PKCS8);
    net.sign_up(alice, "alice");
    let bob = net.add(2, fixtures::BOB_PKCS8);
    let now = net.now;
    net.web(bob).login(now, "alice", "not the password", "apple river stone").unwrap();
    net.pump();
    let failed = net.of(bob, "failed").pop().expect("the login failed");
    assert_eq!(failed["code"], 401);
    assert!(net.of(bob, "logged_in").is_empty());
    assert!(matches!(net.web(bob).send_mp(now, "alice", "x"), Err(WebError::Secure(_))));
}

#[test]
fn verify_needs_a_pinned_key() {
    let now = Now::new(Instant::now(), 1_795_305_600_000);
    let mut web = WebClient::with_identity([3; 32], fixtures::ALICE_PKCS8, HashParams::INSECURE_FAST, now).unwrap();
    assert!(matches!(web.verify("bob"), Err(WebError::NoKey(u)) if u == "bob"));
    assert_eq!(web.contact("bob")["pinned"], Value::Null);
    assert!(web.safety_number("bob").is_none());
}

#[test]
fn damaged_profiles_are_refused_with_the_reason() {
    let now = Now::new(Instant::now(), 1_795_305_600_000);
    let restore = |bytes: &[u8]| WebClient::restore([1; 32], bytes, HashParams::INSECURE_FAST, now);
    assert!(matches!(restore(b"not json"), Err(WebError::Profile(ProfileError::Damaged(_)))));
    let web = WebClient::with_identity([3; 32], fixtures::ALICE_PKCS8, HashParams::INSECURE_FAST, now).unwrap();
    let mut good: Value = serde_json::from_slice(&web.snapshot()).unwrap();
    assert!(restore(&web.snapshot()).is_ok());
    good["format"] = Value::from(2);
    let other = serde_json::to_vec(&good).unwrap();
    assert!(matches!(restore(&other), Err(WebError::Profile(ProfileError::Format(2)))));
    good["format"] = Value::from(1);
    good["identity"] = Value::from("AAAA");
    let bad_key = serde_json::to_vec(&good).unwrap();
    assert!(matches!(restore(&bad_key), Err(WebError::Profile(ProfileError::Identity))));
}

#[test]
fn frames_of_a_lost_connection_are_dropped_and_the_outbox_resends() {
    let mut net = Net::new();
    let alice = net.add(1, fixtures::ALICE_PKCS8);
    let bob = net.add(2, fixtures::BOB_PKCS8);
    net.sign_up(alice, "alice");
    net.sign_up(bob, "bob");
    let now = net.now;
    net.web(alice).create_room(now, "lobby", "a room password").unwrap();
    net.pump();
    net.web(bob).join_room(now, "lobby", "a room password").unwrap();
    net.pump();
    // Alice sends while her socket is already gone: the frame is not written...
    let s = net.users[alice].session.take().unwrap();
    net.server.close_session(now, s);
    net.web(alice).send_room(now, "lobby", "said just as the link broke").unwrap();
    net.web(alice).disconnected(now);
    while net.users[alice].web.take_checkpoint().is_some() {
        net.users[alice].web.checkpoint_saved();
    }
    assert!(net.users[alice].web.poll_transmit().is_none(), "nothing of the dead connection is left to write");
    // ...and the outbox sends it once on the next connection.
    net.connect(alice);
    assert_eq!(texts(&net.of(bob, "room")), ["said just as the link broke"]);
}
