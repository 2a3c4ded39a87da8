//! Native tests of the browser client's API: two in-process `WebClient`s
//! through a `Server` machine in memory, the page's part played by the
//! harness (it stores each checkpoint before it writes frames, as `app.js` does).

use std::time::{Duration, Instant};

use confab_proto::e2e::fixtures;
use confab_proto::server::{Action, HashParams};
use confab_proto::{Ephemeral, Now, Server, ServerConfig, SessionId};
use serde_json::Value;

use crate::{Params, ProfileError, WebClient, WebError};

/// Fast argon2 for tests (the page uses the real parameters).
const PARAMS: Params = Params { room: HashParams::INSECURE_FAST, key: HashParams::INSECURE_FAST };

struct User {
    web: WebClient,
    session: Option<SessionId>,
    events: Vec<Value>,
    /// The last profile bytes the "page" stored.
    stored: Option<Vec<u8>>,
    /// The server's frames to this user are lost (a link that dies after
    /// the request went out).
    deaf: bool,
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
        let web = WebClient::with_identity([seed; 32], pkcs8, PARAMS, self.now).unwrap();
        self.users.push(User { web, session: None, events: Vec::new(), stored: None, deaf: false });
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
                        if let Some(user) = self.users.iter_mut().find(|u| u.session == Some(session) && !u.deaf) {
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

    /// Alice and bob, each in a browser of their own, registered and logged in.
    fn alice_and_bob(&mut self) -> (usize, usize) {
        let alice = self.add(1, fixtures::ALICE_PKCS8);
        let bob = self.add(2, fixtures::BOB_PKCS8);
        self.sign_up(alice, "alice");
        self.sign_up(bob, "bob");
        (alice, bob)
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
    let (alice, bob) = net.alice_and_bob();
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
    let mut web = WebClient::with_identity([3; 32], fixtures::ALICE_PKCS8, PARAMS, now).unwrap();
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
    let again = WebClient::restore([4; 32], &bytes, PARAMS, now).unwrap();
    assert_eq!(again.fingerprint(), web.fingerprint());
}

#[test]
fn a_reloaded_page_keeps_its_session_and_gets_what_it_missed_once() {
    let mut net = Net::new();
    let (alice, bob) = net.alice_and_bob();
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
    let restored = WebClient::restore([5; 32], &stored, PARAMS, net.now).unwrap();
    net.users[bob] = User { web: restored, session: None, events: Vec::new(), stored: Some(stored), deaf: false };
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
    let restored = WebClient::restore([6; 32], &stored, PARAMS, net.now).unwrap();
    net.users[bob] = User { web: restored, session: None, events: Vec::new(), stored: Some(stored), deaf: false };
    net.connect(bob);
    assert!(net.of(bob, "mp").is_empty(), "nothing twice: {:?}", net.users[bob].events);
}

#[test]
fn a_login_needs_this_browsers_identity_key() {
    let mut net = Net::new();
    let alice = net.add(1, fixtures::ALICE_PKCS8);
    net.sign_up(alice, "alice");
    // Bob's browser has its own fresh key, not alice's: logging in as alice
    // would give a session that reads nothing and shows a key nobody pinned.
    let bob = net.add(2, fixtures::BOB_PKCS8);
    let now = net.now;
    let sent = net.wire.len();
    let refused = net.web(bob).login(now, "alice", "correct horse battery", "apple river stone").unwrap_err();
    assert!(matches!(&refused, WebError::NoIdentity(u) if u == "alice"), "{refused:?}");
    assert!(refused.to_string().contains("stays on the device that registered it"), "{refused}");
    assert_eq!(WebClient::no_identity("alice"), refused.to_string(), "what the page says without a client");
    net.pump();
    assert_eq!(net.wire.len(), sent, "nothing was sent");
    assert!(net.users[bob].web.logout_record().is_none(), "no key record for an account never logged in");
}

#[test]
fn own_private_messages_survive_a_reload_for_one_hour() {
    let mut net = Net::new();
    let (alice, bob) = net.alice_and_bob();
    let now = net.now;
    net.web(alice).request_mp(now, "bob").unwrap();
    net.pump();
    net.web(bob).accept_mp(now, "alice").unwrap();
    net.pump();
    net.web(alice).send_mp(now, "bob", "mine to keep").unwrap();
    net.pump();
    assert_eq!(texts(&net.of(bob, "mp")), ["mine to keep"]);
    // The page reloads from what it stored: alice still sees what she wrote.
    let stored = net.users[alice].stored.clone().unwrap();
    let reloaded = WebClient::restore([13; 32], &stored, PARAMS, now).unwrap();
    let sent = reloaded.sent_mps("bob", now.unix_ms);
    assert_eq!(sent[0]["text"], "mine to keep");
    assert_eq!(sent[0]["expires_ms"], now.unix_ms + 3_600_000);
    assert_eq!(reloaded.sent_mps("carol", now.unix_ms), Value::Array(vec![]));
    // An hour later it is no longer shown (and goes from the profile at the next send).
    let later = now.unix_ms + 3_600_000;
    assert_eq!(reloaded.sent_mps("bob", later), Value::Array(vec![]));
    let text = String::from_utf8_lossy(&stored).into_owned();
    assert!(text.contains("mine to keep"), "kept in the (encrypted by the page) profile");
}

#[test]
fn a_client_bound_to_an_account_does_not_register_another() {
    let mut net = Net::new();
    let alice = net.add(1, fixtures::ALICE_PKCS8);
    net.sign_up(alice, "alice");
    let now = net.now;
    net.web(alice).create_room(now, "den", "room secret").unwrap();
    net.pump();
    // She logs out: the client still holds her identity key; registering
    // bob with it would tie bob's account to alice's key.
    net.web(alice).logout(now).unwrap();
    net.pump();
    let sent = net.wire.len();
    let refused = net.web(alice).register(now, "bob", "correct horse battery", "apple river stone").unwrap_err();
    assert!(matches!(&refused, WebError::Bound(u) if u == "alice"), "{refused:?}");
    net.pump();
    assert_eq!(net.wire.len(), sent, "nothing was sent");
    // A profile the page stored keeps its owner and key record through a
    // restore, so a logout after a reload still keeps the key.
    let stored = net.users[alice].stored.clone().unwrap();
    let restored = WebClient::restore([11; 32], &stored, PARAMS, now).unwrap();
    assert_eq!(restored.owner(), Some("alice"));
    let snapshot = restored.snapshot();
    let again = WebClient::restore([12; 32], &snapshot, PARAMS, now).unwrap();
    assert!(again.logout_record().is_some(), "snapshot() keeps the key record");
}

#[test]
fn a_wrong_password_fails_the_login_and_keeps_the_key_record_under_the_right_one() {
    let mut net = Net::new();
    let alice = net.add(1, fixtures::ALICE_PKCS8);
    net.sign_up(alice, "alice");
    let now = net.now;
    net.web(alice).logout(now).unwrap();
    net.pump();
    net.web(alice).login(now, "alice", "not the password", "apple river stone").unwrap();
    net.pump();
    let failed = net.of(alice, "failed").pop().expect("the login failed");
    assert_eq!(failed["code"], 401);
    // The record still opens with the password that worked, not the wrong one.
    let record = net.users[alice].web.logout_record().expect("a key record");
    assert!(matches!(
        WebClient::unlock([7; 32], &record, "not the password", PARAMS, now),
        Err(WebError::Unlock(u)) if u == "alice"
    ));
    let unlocked = WebClient::unlock([7; 32], &record, "correct horse battery", PARAMS, now).unwrap();
    assert_eq!(unlocked.fingerprint(), net.users[alice].web.fingerprint());
}

#[test]
fn after_a_logout_the_key_record_brings_the_identity_back_and_nothing_else() {
    let mut net = Net::new();
    let (alice, bob) = net.alice_and_bob();
    let now = net.now;
    net.web(alice).create_room(now, "den", "room secret").unwrap();
    net.pump();
    let fingerprint = net.users[alice].web.fingerprint();
    net.web(alice).logout(now).unwrap();
    net.pump();
    let record = net.users[alice].web.logout_record().expect("a key record after logout");
    // The record is the key under the password and the owner's name: no
    // private key in the clear, no room, no session.
    assert_eq!(WebClient::record_owner(&record).as_deref(), Some("alice"));
    let text = String::from_utf8_lossy(&record).into_owned();
    assert!(!text.contains("den") && !text.contains("state"), "{text}");
    let der_b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, fixtures::ALICE_PKCS8);
    assert!(!text.contains(&der_b64[..40]), "the private key is not in the record in the clear");
    assert!(
        matches!(WebClient::restore([8; 32], &record, PARAMS, now), Err(WebError::Profile(ProfileError::Locked(u))) if u == "alice")
    );
    assert!(WebClient::record_owner(net.users[bob].stored.as_deref().unwrap()).is_none(), "a profile is not a record");

    // A new page: unlock with the password, log in, and bob's messages
    // sealed to alice's (unchanged) key open.
    net.disconnect(alice);
    net.users[alice].web = WebClient::unlock([9; 32], &record, "correct horse battery", PARAMS, now).unwrap();
    net.users[alice].events.clear();
    net.connect(alice);
    assert_eq!(net.users[alice].web.fingerprint(), fingerprint);
    assert!(net.users[alice].web.rooms().is_empty(), "room keys went with the logout");
    assert!(matches!(
        net.web(alice).login(now, "bob", "correct horse battery", "apple river stone"),
        Err(WebError::NoIdentity(u)) if u == "bob"
    ));
    net.web(alice).login(now, "alice", "correct horse battery", "apple river stone").unwrap();
    net.pump();
    assert_eq!(net.users[alice].web.username(), Some("alice"));
    net.web(bob).request_mp(now, "alice").unwrap();
    net.pump();
    net.web(alice).accept_mp(now, "bob").unwrap();
    net.pump();
    net.web(bob).send_mp(now, "alice", "welcome back").unwrap();
    net.pump();
    assert_eq!(texts(&net.of(alice, "mp")), ["welcome back"]);
    // The profile the page stores now carries the record again.
    let stored = net.users[alice].stored.clone().unwrap();
    let again = WebClient::restore([10; 32], &stored, PARAMS, now).unwrap();
    assert_eq!(again.logout_record().and_then(|r| WebClient::record_owner(&r)).as_deref(), Some("alice"));
}

#[test]
fn verify_needs_a_pinned_key() {
    let now = Now::new(Instant::now(), 1_795_305_600_000);
    let mut web = WebClient::with_identity([3; 32], fixtures::ALICE_PKCS8, PARAMS, now).unwrap();
    assert!(matches!(web.verify("bob"), Err(WebError::NoKey(u)) if u == "bob"));
    assert_eq!(web.contact("bob")["pinned"], Value::Null);
    assert!(web.safety_number("bob").is_none());
}

#[test]
fn damaged_profiles_are_refused_with_the_reason() {
    let now = Now::new(Instant::now(), 1_795_305_600_000);
    let restore = |bytes: &[u8]| WebClient::restore([1; 32], bytes, PARAMS, now);
    assert!(matches!(restore(b"not json"), Err(WebError::Profile(ProfileError::Damaged(_)))));
    let web = WebClient::with_identity([3; 32], fixtures::ALICE_PKCS8, PARAMS, now).unwrap();
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
    let (alice, bob) = net.alice_and_bob();
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

#[test]
fn a_logout_leaves_a_profile_with_the_key_and_nothing_else() {
    let mut net = Net::new();
    let (alice, bob) = net.alice_and_bob();
    let now = net.now;
    net.web(alice).create_room(now, "den", "room secret").unwrap();
    net.web(alice).request_mp(now, "bob").unwrap();
    net.pump();
    net.web(bob).accept_mp(now, "alice").unwrap();
    net.pump();
    net.web(alice).send_mp(now, "bob", "before the logout").unwrap();
    net.pump();
    net.web(alice).logout(now).unwrap();
    net.pump();
    assert_eq!(net.of(alice, "logged_out").len(), 1);
    // What the page stored last (a reload before it erased the database
    // reads this): the key and its owner, no room, no session, no message.
    let stored = net.users[alice].stored.clone().unwrap();
    let profile: Value = serde_json::from_slice(&stored).unwrap();
    // (Contacts, their pinned keys, stay: see pinned_keys_and_verified_marks_outlive_...)
    for part in ["rooms", "sessions", "inbox"] {
        assert_eq!(profile["state"][part], Value::Array(vec![]), "{part} after logout");
    }
    assert!(profile.get("sent").is_none(), "{profile}");
    assert!(!String::from_utf8_lossy(&stored).contains("before the logout"));
    let reloaded = WebClient::restore([14; 32], &stored, PARAMS, now).unwrap();
    assert_eq!(reloaded.owner(), Some("alice"));
    assert!(!reloaded.is_logged_in());
    assert!(reloaded.rooms().is_empty() && reloaded.conversations().is_empty());
    assert_eq!(reloaded.sent_mps("bob", now.unix_ms), Value::Array(vec![]));
    assert!(reloaded.logout_record().is_some());
}

#[test]
fn a_profile_whose_conversations_do_not_restore_keeps_the_identity_key() {
    let mut net = Net::new();
    let alice = net.add(1, fixtures::ALICE_PKCS8);
    net.sign_up(alice, "alice");
    let now = net.now;
    net.web(alice).create_room(now, "den", "room secret").unwrap();
    net.pump();
    // The session ended without a logout (a revoked or expired token): the
    // machine's snapshot then holds rooms without a user, which it refuses
    // to restore.
    let stored = net.users[alice].stored.clone().unwrap();
    let mut profile: Value = serde_json::from_slice(&stored).unwrap();
    profile["state"]["client"]["username"] = Value::Null;
    profile["state"]["client"]["refresh_token"] = Value::Null;
    let bytes = serde_json::to_vec(&profile).unwrap();
    let mut web = WebClient::restore([15; 32], &bytes, PARAMS, now).unwrap();
    assert_eq!(web.owner(), Some("alice"));
    assert_eq!(web.fingerprint(), net.users[alice].web.fingerprint());
    let reset = web.poll_event().expect("an event saying what was lost");
    assert_eq!(reset["type"], "state_reset");
    assert!(reset["reason"].as_str().unwrap().contains("without a user"), "{reset}");
    assert!(web.rooms().is_empty());
    // Without an owner there is nothing to keep: the error is the restore's.
    profile.as_object_mut().unwrap().remove("owner");
    let bytes = serde_json::to_vec(&profile).unwrap();
    assert!(matches!(
        WebClient::restore([16; 32], &bytes, PARAMS, now),
        Err(WebError::Profile(ProfileError::State(_)))
    ));
}

#[test]
fn a_registration_whose_answer_was_lost_still_binds_the_key() {
    for reload in [false, true] {
        let mut net = Net::new();
        let alice = net.add(1, fixtures::ALICE_PKCS8);
        let now = net.now;
        // The server creates the account; its answer never arrives.
        net.users[alice].deaf = true;
        net.web(alice).register(now, "alice", "correct horse battery", "apple river stone").unwrap();
        net.pump();
        assert!(net.of(alice, "done").is_empty(), "no answer seen");
        net.users[alice].deaf = false;
        net.disconnect(alice);
        if reload {
            // The page reloads before any answer: the stored profile knows.
            let stored = net.users[alice].stored.clone().unwrap();
            net.users[alice].web = WebClient::restore([17; 32], &stored, PARAMS, now).unwrap();
        }
        // The client says the connection was lost before the answer (503);
        // the key stays this account's until a login tells.
        net.connect(alice);
        assert_eq!(net.users[alice].web.owner(), Some("alice"), "reload: {reload}, {:?}", net.users[alice].events);
        // Sent again, it is refused 409 (the account exists: this one); the
        // key stays; another name would tie a second account to it.
        net.web(alice).register(now, "alice", "correct horse battery", "apple river stone").unwrap();
        net.pump();
        assert_eq!(net.of(alice, "failed").last().unwrap()["code"], 409);
        assert_eq!(net.users[alice].web.owner(), Some("alice"));
        assert!(matches!(
            net.web(alice).register(now, "alice2", "correct horse battery", "apple river stone"),
            Err(WebError::Bound(u)) if u == "alice"
        ));
        net.web(alice).login(now, "alice", "correct horse battery", "apple river stone").unwrap();
        net.pump();
        assert_eq!(net.users[alice].web.username(), Some("alice"), "reload: {reload}");
        assert!(net.users[alice].web.logout_record().is_some());
    }
}

#[test]
fn a_name_taken_by_someone_else_binds_nothing() {
    let mut net = Net::new();
    let alice = net.add(1, fixtures::ALICE_PKCS8);
    net.sign_up(alice, "alice");
    let mallory = net.add(2, fixtures::BOB_PKCS8);
    let now = net.now;
    net.web(mallory).register(now, "alice", "another password", "apple river stone").unwrap();
    net.pump();
    assert_eq!(net.of(mallory, "failed").pop().expect("refused")["code"], 409);
    assert_eq!(net.users[mallory].web.owner(), None);
    assert!(matches!(
        net.web(mallory).login(now, "alice", "correct horse battery", "apple river stone"),
        Err(WebError::NoIdentity(_))
    ));
}

#[test]
fn pinned_keys_and_verified_marks_outlive_a_logout_and_a_state_reset() {
    let mut net = Net::new();
    let (alice, _bob) = net.alice_and_bob();
    let now = net.now;
    net.web(alice).fetch_key(now, "bob").unwrap();
    net.pump();
    net.web(alice).verify("bob").unwrap();
    let pinned = net.users[alice].web.contact("bob")["pinned"].clone();
    assert!(pinned.is_string());
    net.pump();
    // A session that ended without a logout, then a reload: state_reset.
    let stored = net.users[alice].stored.clone().unwrap();
    let mut profile: Value = serde_json::from_slice(&stored).unwrap();
    profile["state"]["client"]["username"] = Value::Null;
    profile["state"]["rooms"] = Value::Array(vec![]);
    let mut with_room = profile.clone();
    with_room["state"]["client"]["username"] = Value::Null;
    let reset = WebClient::restore([18; 32], &serde_json::to_vec(&with_room).unwrap(), PARAMS, now).unwrap();
    assert_eq!(reset.contact("bob")["pinned"], pinned);
    assert_eq!(reset.contact("bob")["verified"], true);
    // A logout keeps them too (as the CLI's contact book).
    net.web(alice).logout(now).unwrap();
    net.pump();
    assert_eq!(net.users[alice].web.contact("bob")["pinned"], pinned);
    assert_eq!(net.users[alice].web.contact("bob")["verified"], true);
    let stored = net.users[alice].stored.clone().unwrap();
    let reloaded = WebClient::restore([19; 32], &stored, PARAMS, now).unwrap();
    assert_eq!(reloaded.contact("bob")["pinned"], pinned);
}
