//! Issue 10's attacks on rooms and MP requests, at the secure client: a
//! hostile server that lies (weak costs, a foreign descriptor), replays
//! (live copies of accepted messages, old MP requests), truncates history
//! or forgets a room, and a user who logs out and back in or uses a second
//! device. Nothing here may reuse a (key, nonce) pair or accept a message
//! twice as new.

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{Net, PASSPHRASE, PASSWORD, failures};
use crate::e2e::room::{DESCRIPTOR_LEN, RoomDescriptor};
use crate::e2e::seal::{HEADER_LEN, peek_header};
use crate::e2e::secure::{DecryptError, SecureClient, SecureEvent};
use crate::e2e::{IdentityKey, OpenError, fixtures};
use crate::server::HashParams;
use crate::wire::{Opcode, ResponseBody, RoomDescribed};
use crate::{Client, ClientConfig, ClientEvent};

const ROOM_PASSWORD: &[u8] = b"pass2934 of room11";

/// Replaces user `i`'s client by a fresh one on the same account (a logout
/// and login, a lost profile, a second device): nothing of the old state.
fn fresh_login(net: &mut Net, i: usize, name: &str, pkcs8: &[u8], seed: u8) {
    net.disconnect(i);
    let identity = IdentityKey::from_pkcs8_der(pkcs8).unwrap();
    let client = Client::new(ClientConfig::default(), net.now);
    let rng = StdRng::from_seed([seed; 32]);
    net.peers[i].sc = SecureClient::new(client, identity, rng, HashParams::INSECURE_FAST, net.now);
    net.connect(i);
    let now = net.now;
    net.sc(i).login(now, name, PASSWORD, PASSPHRASE).unwrap();
    net.pump();
    net.take(i);
}

/// Alice creates room11 and Bob joins it, through the server.
fn alice_and_bob_in_room11() -> (Net, usize, usize) {
    let mut net = Net::new();
    let a = net.user("alice", fixtures::ALICE_PKCS8);
    let b = net.user("bob", fixtures::BOB_PKCS8);
    let now = net.now;
    net.sc(a).create_room(now, "room11", ROOM_PASSWORD).unwrap();
    net.pump();
    net.sc(b).join_room(now, "room11", ROOM_PASSWORD).unwrap();
    net.pump();
    (net, a, b)
}

/// The stored history of `room`: (from, sealed), oldest first.
fn stored(net: &Net, room: &str) -> Vec<(String, Bytes)> {
    net.server
        .state()
        .room(room)
        .expect("the room")
        .history
        .iter()
        .map(|e| (e.from.clone(), e.sealed.clone()))
        .collect()
}

fn live(room: &str, from: &str, seq: u64, sealed: Bytes) -> ClientEvent {
    ClientEvent::RoomMessage { room: room.into(), from: from.into(), seq, sent_ms: 0, sealed }
}

fn room_texts(events: &[SecureEvent]) -> Vec<(String, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            SecureEvent::Room { text, history, .. } => Some((text.clone(), *history)),
            _ => None,
        })
        .collect()
}

/// Issue 10 §1's reproduction: m1 pushed out of the history, then logout,
/// login, rejoin and m2 of the same length. Before the fix both carried
/// counter 0 under one key: c1 XOR c2 = m1 XOR m2.
#[test]
fn logout_login_rejoin_never_reuses_key_stream() {
    let (mut net, a, b) = alice_and_bob_in_room11();
    let now = net.now;
    let m1 = "attack at dawn, bring the maps";
    net.sc(a).send_room(now, "room11", m1).unwrap();
    net.pump();
    let c1 = stored(&net, "room11").last().unwrap().1.clone();
    for i in 0..20 {
        net.sc(b).send_room(now, "room11", &format!("filler {i}")).unwrap();
    }
    net.pump();
    assert!(stored(&net, "room11").iter().all(|(from, _)| from == "bob"), "m1 left the history");

    for (seed, pkcs8) in [(40, fixtures::ALICE_PKCS8), (41, fixtures::ALICE_PKCS8)] {
        // A logout and login (or a second device): a fresh client state.
        fresh_login(&mut net, a, "alice", pkcs8, seed);
        net.sc(a).join_room(now, "room11", ROOM_PASSWORD).unwrap();
        net.pump();
        let m2 = "retreat at once; burn the maps";
        assert_eq!(m1.len(), m2.len());
        net.sc(a).send_room(now, "room11", m2).unwrap();
        net.pump();
        let c2 = stored(&net, "room11").last().unwrap().1.clone();
        let (h1, h2) = (peek_header(&c1).unwrap(), peek_header(&c2).unwrap());
        assert_eq!(h1.counter, h2.counter, "both first messages of a sending session");
        assert_ne!(h1.epoch, h2.epoch, "a new sending session has a new epoch");
        let n = 8 + m1.len();
        let xor_c: Vec<u8> =
            c1[HEADER_LEN..HEADER_LEN + n].iter().zip(&c2[HEADER_LEN..HEADER_LEN + n]).map(|(x, y)| x ^ y).collect();
        let xor_m: Vec<u8> = m1.bytes().zip(m2.bytes()).map(|(x, y)| x ^ y).collect();
        assert!(!xor_c.windows(xor_m.len()).any(|w| w == xor_m), "c1 XOR c2 reveals m1 XOR m2");
    }
    let events = net.take(b);
    assert!(room_texts(&events).iter().any(|(t, _)| t.starts_with("retreat")), "bob reads m2");
    assert!(failures(&events).is_empty(), "{events:?}");
}

/// A server that returns an empty or truncated history, or answers the
/// join with nothing of the member's own messages, cannot make it resume a
/// counter: the sending state never comes from the server.
#[test]
fn an_empty_history_changes_nothing_for_the_sender() {
    let mut net = Net::new();
    let a = net.user("alice", fixtures::ALICE_PKCS8);
    let now = net.now;
    net.sc(a).create_room(now, "room11", ROOM_PASSWORD).unwrap();
    net.pump();
    net.sc(a).send_room(now, "room11", "one").unwrap();
    net.pump();
    let epoch = *net.sc(a).room_session("room11").unwrap().sealer().epoch();
    // The server "forgets" the history and alice rejoins.
    let id = net.sc(a).join_room(now, "room11", ROOM_PASSWORD).unwrap();
    net.pump();
    assert!(
        net.take(a)
            .iter()
            .any(|e| matches!(e, SecureEvent::Plain(ClientEvent::Done { request_id, .. }) if *request_id == id))
    );
    let session = net.sc(a).room_session("room11").unwrap();
    assert_ne!(*session.sealer().epoch(), epoch, "a rejoin starts a new sending session");
    assert_eq!(session.sealer().next_counter(), 0);
}

/// After a rejoin, the server replays a message the device already
/// accepted: refused as new, and shown again only as history.
#[test]
fn replays_after_a_rejoin_are_refused() {
    let (mut net, a, b) = alice_and_bob_in_room11();
    let now = net.now;
    net.sc(a).send_room(now, "room11", "pay bob 10").unwrap();
    net.pump();
    assert_eq!(room_texts(&net.take(b)), vec![("pay bob 10".into(), false)]);
    let blob = stored(&net, "room11")[0].1.clone();

    // Bob leaves and rejoins; the history shows it as history only.
    net.sc(b).client_mut().leave_room(now, "room11").unwrap();
    net.pump();
    net.sc(b).join_room(now, "room11", ROOM_PASSWORD).unwrap();
    net.pump();
    assert_eq!(room_texts(&net.take(b)), vec![("pay bob 10".into(), true)]);
    // The server then replays it live: refused.
    net.sc(b).on_event(live("room11", "alice", 9, blob.clone()));
    net.pump();
    let events = net.take(b);
    assert!(room_texts(&events).is_empty(), "{events:?}");
    let replayed = DecryptError::Open(OpenError::Replayed { counter: 0 });
    assert!(matches!(&failures(&events)[..], [SecureEvent::DecryptFailed { reason, .. }] if *reason == replayed));

    // Across a restart from the stored profile, too.
    let snapshot = net.sc(b).snapshot();
    let identity = IdentityKey::from_pkcs8_der(fixtures::BOB_PKCS8).unwrap();
    let rng = StdRng::from_seed([77; 32]);
    let restored =
        SecureClient::restore(ClientConfig::default(), &snapshot, identity, rng, HashParams::INSECURE_FAST, now)
            .unwrap();
    net.disconnect(b);
    net.peers[b].sc = restored;
    net.connect(b);
    net.take(b);
    net.sc(b).on_event(live("room11", "alice", 10, blob));
    net.pump();
    assert!(room_texts(&net.take(b)).is_empty());
}

/// A room deleted and created again with the same name and password is
/// another incarnation: the old messages do not open in it.
#[test]
fn a_recreated_room_shares_nothing_with_the_old_one() {
    let mut net = Net::new();
    let a = net.user("alice", fixtures::ALICE_PKCS8);
    let b = net.user("bob", fixtures::BOB_PKCS8);
    let now = net.now;
    net.sc(a).create_room(now, "room11", ROOM_PASSWORD).unwrap();
    net.pump();
    net.sc(a).send_room(now, "room11", "old secret").unwrap();
    net.pump();
    let old = stored(&net, "room11")[0].1.clone();
    let old_keys = net.sc(a).room_keys("room11").unwrap().clone();
    net.sc(a).client_mut().delete_room(now, "room11").unwrap();
    net.pump();
    net.sc(a).create_room(now, "room11", ROOM_PASSWORD).unwrap();
    net.pump();
    let new_keys = net.sc(a).room_keys("room11").unwrap().clone();
    assert_ne!(old_keys.descriptor().room_id(), new_keys.descriptor().room_id());
    assert_ne!(old_keys.verifier(), new_keys.verifier());
    net.sc(b).join_room(now, "room11", ROOM_PASSWORD).unwrap();
    net.pump();
    net.take(b);
    net.sc(b).on_event(live("room11", "alice", 5, old));
    net.pump();
    let events = net.take(b);
    assert!(room_texts(&events).is_empty());
    let bad_mac = DecryptError::Open(OpenError::BadMac);
    assert!(matches!(&failures(&events)[..], [SecureEvent::DecryptFailed { reason, .. }] if *reason == bad_mac));
}

/// A server that hands out a descriptor with cheaper argon2id (to make the
/// password easier to guess from the verifier) or garbage is refused before
/// any verifier is sent; the join fails under the id the caller holds.
#[test]
fn a_lying_descriptor_is_refused_before_the_verifier_leaves() {
    let mut net = Net::new();
    let a = net.user("alice", fixtures::ALICE_PKCS8);
    let now = net.now;
    // A client that demands real costs.
    let strict = HashParams { m_cost_kib: 64 * 1024, t_cost: 3, p_cost: 1 };
    let identity = IdentityKey::from_pkcs8_der(fixtures::ALICE_PKCS8).unwrap();
    let client = Client::new(ClientConfig::default(), now);
    net.disconnect(a);
    net.peers[a].sc = SecureClient::new(client, identity, StdRng::from_seed([5; 32]), strict, now);
    net.connect(a);
    net.sc(a).login(now, "alice", PASSWORD, PASSPHRASE).unwrap();
    net.pump();
    net.take(a);
    let weak = RoomDescriptor::from_parts([1; 16], HashParams::INSECURE_FAST).to_bytes();
    for (descriptor, want) in
        [(Bytes::copy_from_slice(&weak), "too weak"), (Bytes::from_static(&[1; DESCRIPTOR_LEN - 1]), "wrong length")]
    {
        let id = net.sc(a).join_room(now, "room11", ROOM_PASSWORD).unwrap();
        let body = ResponseBody::RoomDescriptor(RoomDescribed { descriptor });
        net.sc(a).on_event(ClientEvent::Done { request_id: id, opcode: Opcode::RoomInfo, code: 200, body });
        let events = drain(&mut net, a);
        let failed = events.iter().find_map(|e| match e {
            SecureEvent::Plain(ClientEvent::Failed { request_id, reason, .. }) if *request_id == id => Some(reason),
            _ => None,
        });
        assert!(failed.is_some_and(|r| r.contains(want)), "{want}: {events:?}");
        assert!(net.sc(a).room_keys("room11").is_none());
    }
}

/// A replayed MP request (same signed ephemeral key) would replace a
/// working session: refused, the session stays.
#[test]
fn a_replayed_mp_request_is_refused() {
    let mut net = Net::new();
    let a = net.user("alice", fixtures::ALICE_PKCS8);
    let b = net.user("bob", fixtures::BOB_PKCS8);
    let now = net.now;
    net.sc(a).request_mp(now, "bob").unwrap();
    net.pump();
    net.take(b);
    net.sc(b).accept_mp(now, "alice").unwrap();
    net.pump();
    net.take(a);
    net.take(b);
    // The hostile server replays alice's request, as it was signed.
    let offer_blob = net.changes.iter().find_map(|c| match c {
        crate::server::Change::Enqueued { item, .. } => match &item.kind {
            crate::server::state::ItemKind::Request { identity_key, handshake } => {
                Some((identity_key.clone(), handshake.clone()))
            }
            _ => None,
        },
        _ => None,
    });
    let (identity_key, handshake) = offer_blob.expect("the request was queued");
    net.sc(b).on_event(ClientEvent::MpRequest { from: "alice".into(), seq: 99, identity_key, handshake });
    net.pump();
    let events = net.take(b);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SecureEvent::HandshakeRejected { reason, .. } if reason.contains("replayed"))),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| matches!(e, SecureEvent::MpOffered { .. })));
    // The working session is untouched.
    net.sc(a).send_mp(now, "bob", "still private").unwrap();
    net.pump();
    assert!(net.take(b).iter().any(|e| matches!(e, SecureEvent::Mp { text, .. } if text == "still private")));
}

/// A profile restored from an old copy (a backup, a copied profile on a
/// second machine) seals in a new epoch: its messages never share key
/// stream with what the original sent after the copy was taken.
#[test]
fn a_profile_restored_from_an_old_copy_never_reuses_key_stream() {
    let (mut net, a, b) = alice_and_bob_in_room11();
    let now = net.now;
    net.handshake(a, b, "alice", "bob");
    let mut old_copy = net.sc(a).snapshot();
    // An old copy also reuses request ids, which the server's retry window
    // answers from its record (409 for another opcode, or the original's
    // answer for the same one: not performed). That is the request layer's
    // limit of restoring a profile (docs/SECURITY.md); this test is about
    // key stream, so the copy's ids are moved past the original's.
    old_copy.client.next_request_id = old_copy.client.next_request_id.map(|n| n + 1000);
    // The original carries on after the copy was taken.
    net.sc(a).send_room(now, "room11", "original, room").unwrap();
    net.sc(a).send_mp(now, "bob", "original, private").unwrap();
    net.pump();
    let original_room = stored(&net, "room11").last().unwrap().1.clone();
    net.take(b);
    // The old copy comes back in a new process, with randomness of its own
    // (the RNG is never part of a profile: a client seeds it from the OS).
    // Epochs are exactly as unique as that randomness: a restored process
    // given the original's RNG seed would draw the original's epochs.
    let identity = IdentityKey::from_pkcs8_der(fixtures::ALICE_PKCS8).unwrap();
    let rng = StdRng::from_seed([61; 32]);
    let restored =
        SecureClient::restore(ClientConfig::default(), &old_copy, identity, rng, HashParams::INSECURE_FAST, now)
            .unwrap();
    net.disconnect(a);
    net.peers[a].sc = restored;
    net.connect(a);
    net.take(a);
    net.sc(a).send_room(now, "room11", "restored, room!").unwrap();
    net.sc(a).send_mp(now, "bob", "restored, private!").unwrap();
    net.pump();
    let events = net.take(a);
    assert!(failures(&events).is_empty(), "{events:?}");
    assert_eq!(stored(&net, "room11").len(), 2, "{events:?}");
    let restored_room = stored(&net, "room11").last().unwrap().1.clone();
    let (h1, h2) = (peek_header(&original_room).unwrap(), peek_header(&restored_room).unwrap());
    assert_ne!(h1.epoch, h2.epoch);
    // Bob reads both of the restored copy's messages: nothing is refused.
    let events = net.take(b);
    assert!(room_texts(&events).iter().any(|(t, _)| t == "restored, room!"), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, SecureEvent::Mp { text, .. } if text == "restored, private!")));
    assert!(failures(&events).is_empty(), "{events:?}");
}

/// A server that answers 404 to a join so that the user creates the room
/// again gets a new incarnation: a new room id, new keys, a new epoch.
#[test]
fn a_404_that_makes_the_user_recreate_gives_a_new_incarnation() {
    let mut net = Net::new();
    let a = net.user("alice", fixtures::ALICE_PKCS8);
    let now = net.now;
    net.sc(a).create_room(now, "room11", ROOM_PASSWORD).unwrap();
    net.pump();
    net.sc(a).send_room(now, "room11", "before").unwrap();
    net.pump();
    let before = net.sc(a).room_keys("room11").unwrap().clone();
    let first = stored(&net, "room11")[0].1.clone();
    // The server "loses" the room (deleted behind the user's back) and the user re-creates it.
    net.sc(a).client_mut().delete_room(now, "room11").unwrap();
    net.pump();
    let id = net.sc(a).join_room(now, "room11", ROOM_PASSWORD).unwrap();
    net.pump();
    assert!(net.take(a).iter().any(
        |e| matches!(e, SecureEvent::Plain(ClientEvent::Failed { request_id, code: 404, .. }) if *request_id == id)
    ));
    net.sc(a).create_room(now, "room11", ROOM_PASSWORD).unwrap();
    net.pump();
    net.sc(a).send_room(now, "room11", "after!").unwrap();
    net.pump();
    let after = net.sc(a).room_keys("room11").unwrap().clone();
    assert_ne!(before.descriptor().room_id(), after.descriptor().room_id());
    assert_ne!(before.sender_key("alice"), after.sender_key("alice"));
    let second = stored(&net, "room11")[0].1.clone();
    assert_ne!(peek_header(&first).unwrap().epoch, peek_header(&second).unwrap().epoch);
}

/// Found by the attacker review: a server that answers one join with a
/// forged (or another incarnation's) descriptor, then the next with the
/// genuine one and an empty history, must not wipe what the device accepted
/// in the genuine incarnation.
#[test]
fn an_incarnation_rollback_does_not_wipe_the_replay_memory() {
    let (mut net, a, b) = alice_and_bob_in_room11();
    let now = net.now;
    net.sc(a).send_room(now, "room11", "pay bob 10").unwrap();
    net.pump();
    assert_eq!(room_texts(&net.take(b)), vec![("pay bob 10".into(), false)]);
    let blob = stored(&net, "room11")[0].1.clone();
    let genuine = *net.sc(b).room_keys("room11").unwrap().descriptor();
    let forged = RoomDescriptor::from_parts([9; 16], HashParams::INSECURE_FAST);
    for descriptor in [forged, genuine] {
        hostile_join(&mut net, b, &descriptor);
    }
    net.sc(b).on_event(live("room11", "alice", 9, blob));
    net.pump();
    let events = net.take(b);
    assert!(room_texts(&events).is_empty(), "{events:?}");
}

/// A join answered as the server pleases: `room_info` with `descriptor`,
/// then `join_room` accepted with an empty history.
fn hostile_join(net: &mut Net, i: usize, descriptor: &RoomDescriptor) {
    let now = net.now;
    let id = net.sc(i).join_room(now, "room11", ROOM_PASSWORD).unwrap();
    let body =
        ResponseBody::RoomDescriptor(RoomDescribed { descriptor: Bytes::copy_from_slice(&descriptor.to_bytes()) });
    net.sc(i).on_event(ClientEvent::Done { request_id: id, opcode: Opcode::RoomInfo, code: 200, body });
    let join_id = net.sc(i).client().next_request_id().unwrap() - 1;
    let body = ResponseBody::RoomJoined(crate::wire::RoomJoined {
        members: vec!["alice".into(), "bob".into()],
        history: vec![],
    });
    net.sc(i).on_event(ClientEvent::Done { request_id: join_id, opcode: Opcode::JoinRoom, code: 200, body });
    let events = drain(net, i);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SecureEvent::Plain(ClientEvent::Done { request_id, .. }) if *request_id == id)),
        "{events:?}"
    );
}

fn drain(net: &mut Net, i: usize) -> Vec<SecureEvent> {
    std::iter::from_fn(|| {
        loop {
            match net.sc(i).poll_output() {
                crate::e2e::SecureOutput::Event(e) => return Some(e),
                crate::e2e::SecureOutput::Timeout(_) => return None,
                _ => {}
            }
        }
    })
    .collect()
}

/// Found by the attacker review: a `room_info` answered with another body
/// must fail the join, not report it done.
#[test]
fn a_room_info_answer_without_a_descriptor_fails_the_join() {
    let mut net = Net::new();
    let a = net.user("alice", fixtures::ALICE_PKCS8);
    let now = net.now;
    let id = net.sc(a).join_room(now, "room11", ROOM_PASSWORD).unwrap();
    net.sc(a).on_event(ClientEvent::Done {
        request_id: id,
        opcode: Opcode::RoomInfo,
        code: 200,
        body: ResponseBody::Empty,
    });
    let events = drain(&mut net, a);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SecureEvent::Plain(ClientEvent::Failed { request_id, .. }) if *request_id == id)),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| matches!(e, SecureEvent::Plain(ClientEvent::Done { .. }))), "{events:?}");
}
