//! Snapshots: export, restore in a "new process", carry on; a restored
//! client seals in new epochs (never the old key stream), replays stay
//! refused, the outbox is re-sent and performed once.

use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{Net, alice_bob, failures, mps};
use crate::e2e::seal::peek_header;
use crate::e2e::secure::{DecryptError, MP_LOCAL_RETENTION, SecureClient, SecureEvent, SecureSnapshot};
use crate::e2e::{IdentityKey, OpenError, fixtures};
use crate::server::HashParams;
use crate::wire::Opcode;
use crate::{ClientConfig, ClientEvent};

/// Drops client `i` (a crash: no goodbye) and starts a new one from `snapshot`.
fn restart(net: &mut Net, i: usize, snapshot: &SecureSnapshot, pkcs8: &[u8]) {
    net.disconnect(i);
    let identity = IdentityKey::from_pkcs8_der(pkcs8).unwrap();
    let rng = StdRng::from_seed([90 + i as u8; 32]);
    let config = ClientConfig::default();
    let sc = SecureClient::restore(config, snapshot, identity, rng, HashParams::INSECURE_FAST, net.now).unwrap();
    net.peers[i].sc = sc;
    net.connect(i);
}

fn done(events: &[SecureEvent], opcode: Opcode) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, SecureEvent::Plain(ClientEvent::Done { opcode: o, .. }) if *o == opcode))
        .count()
}

#[test]
fn a_restored_client_carries_on_mps_and_rooms_without_reusing_counters() {
    let (mut net, a, b) = alice_bob();
    net.handshake(a, b, "alice", "bob");
    let now = net.now;
    net.sc(a).create_room(now, "room11", b"pass2934 of room11").unwrap();
    net.pump();
    net.sc(b).join_room(now, "room11", b"pass2934 of room11").unwrap();
    net.pump();
    net.sc(a).send_mp(now, "bob", "before").unwrap();
    net.sc(a).send_room(now, "room11", "room before").unwrap();
    net.pump();
    net.take(a);
    net.take(b);
    let old_epoch = *net.sc(a).session("bob").unwrap().sealer().epoch();
    let old_room_epoch = *net.sc(a).room_session("room11").unwrap().sealer().epoch();

    let snapshot = net.sc(a).snapshot();
    assert_eq!(snapshot.client.username.as_deref(), Some("alice"));
    assert!(snapshot.client.refresh_token.is_some());
    let identity = IdentityKey::from_pkcs8_der(fixtures::ALICE_PKCS8).unwrap();
    let (rng, params) = (StdRng::from_seed([3; 32]), HashParams::INSECURE_FAST);
    let again = SecureClient::restore(ClientConfig::default(), &snapshot, identity, rng, params, net.now).unwrap();
    assert_eq!(again.snapshot(), snapshot, "restore is the inverse of snapshot");
    restart(&mut net, a, &snapshot, fixtures::ALICE_PKCS8);
    assert!(net.take(a).iter().any(|e| matches!(e, SecureEvent::Plain(ClientEvent::Connected { .. }))));

    // The next blobs are sealed in new epochs: nothing of the old key stream.
    let mut copy = net.sc(a).session("bob").unwrap().clone();
    assert_ne!(peek_header(&copy.seal(0, b"probe").unwrap()).unwrap().epoch, old_epoch);
    assert_ne!(*net.sc(a).room_session("room11").unwrap().sealer().epoch(), old_room_epoch);
    net.sc(a).send_mp(now, "bob", "after").unwrap();
    net.sc(a).send_room(now, "room11", "room after").unwrap();
    net.pump();
    let events = net.take(b);
    assert_eq!(mps(&events), vec![("alice".into(), "after".into())]);
    assert!(events.iter().any(|e| matches!(e, SecureEvent::Room { text, history: false, .. } if text == "room after")));
    assert!(failures(&events).is_empty(), "{events:?}");

    // And Bob's answers open on the restored side.
    net.sc(b).send_mp(now, "alice", "welcome back").unwrap();
    net.pump();
    assert_eq!(mps(&net.take(a)), vec![("bob".into(), "welcome back".into())]);
}

#[test]
fn replays_are_still_refused_after_a_restore() {
    let (mut net, a, b) = alice_bob();
    net.handshake(a, b, "alice", "bob");
    let now = net.now;
    let mut copy = net.sc(a).session("bob").unwrap().clone();
    let blob = copy.seal(0, b"once").unwrap();
    net.sc(b).on_event(ClientEvent::UserMessage {
        from: "alice".into(),
        seq: 50,
        sent_ms: 0,
        sealed: blob.clone().into(),
    });
    net.pump();
    assert_eq!(mps(&net.take(b)), vec![("alice".into(), "once".into())]);

    let snapshot = net.sc(b).snapshot();
    assert_eq!(snapshot.inbox.len(), 1);
    assert_eq!(snapshot.inbox[0].expires_ms - snapshot.inbox[0].received_ms, MP_LOCAL_RETENTION.as_millis() as u64);
    restart(&mut net, b, &snapshot, fixtures::BOB_PKCS8);
    net.take(b);
    assert_eq!(net.sc(b).messages("alice"), vec!["once"], "the inbox survives");
    net.sc(b).on_event(ClientEvent::UserMessage { from: "alice".into(), seq: 51, sent_ms: 0, sealed: blob.into() });
    net.pump();
    let events = net.take(b);
    let replayed = DecryptError::Open(OpenError::Replayed { counter: 0 });
    assert!(matches!(failures(&events)[..], [SecureEvent::DecryptFailed { reason, .. }] if *reason == replayed));

    // An hour later, the inbox entry is gone from a restore too.
    let snapshot = net.sc(b).snapshot();
    net.advance(MP_LOCAL_RETENTION + Duration::from_secs(1));
    restart(&mut net, b, &snapshot, fixtures::BOB_PKCS8);
    assert!(net.sc(b).messages("alice").is_empty());
    let _ = now;
}

#[test]
fn an_unanswered_send_is_resent_after_a_crash_and_delivered_once() {
    let (mut net, a, b) = alice_bob();
    net.handshake(a, b, "alice", "bob");
    let now = net.now;
    net.sc(a).send_mp(now, "bob", "exactly once").unwrap();
    // Stored before the transmit leaves; then the server performs it but
    // Alice crashes before reading the answer.
    let snapshot = net.sc(a).snapshot();
    assert_eq!(snapshot.client.outbox.len(), 1);
    assert_eq!(snapshot.client.outbox[0].opcode, Opcode::SendMp.as_u32());
    net.pump();
    assert_eq!(mps(&net.take(b)), vec![("alice".into(), "exactly once".into())]);
    net.take(a); // the answer the crashed process never read
    restart(&mut net, a, &snapshot, fixtures::ALICE_PKCS8);
    let events = net.take(a);
    assert_eq!(done(&events, Opcode::SendMp), 1, "answered from the server's record: {events:?}");
    assert_eq!(net.sc(a).client().outbox_len(), 0);
    assert!(mps(&net.take(b)).is_empty(), "not delivered twice");

    // A request made offline is sent by the restored client.
    net.disconnect(a);
    net.sc(a).send_mp(now, "bob", "made offline").unwrap();
    let snapshot = net.sc(a).snapshot();
    restart(&mut net, a, &snapshot, fixtures::ALICE_PKCS8);
    assert_eq!(mps(&net.take(b)), vec![("alice".into(), "made offline".into())]);
}

#[test]
fn a_pending_request_and_an_offer_survive_a_restart() {
    let (mut net, a, b) = alice_bob();
    net.disconnect(b);
    let now = net.now;
    net.sc(a).request_mp(now, "bob").unwrap();
    net.pump();
    let snapshot = net.sc(a).snapshot();
    assert_eq!(snapshot.requests.len(), 1);
    restart(&mut net, a, &snapshot, fixtures::ALICE_PKCS8);
    net.connect(b);
    assert!(net.take(b).iter().any(|e| matches!(e, SecureEvent::MpOffered { .. })));
    let snapshot = net.sc(b).snapshot();
    assert_eq!(snapshot.offers.len(), 1);
    restart(&mut net, b, &snapshot, fixtures::BOB_PKCS8);
    net.sc(b).accept_mp(now, "alice").unwrap();
    net.pump();
    assert!(net.take(a).iter().any(|e| matches!(e, SecureEvent::MpReady { peer } if peer == "bob")));
    net.sc(a).send_mp(now, "bob", "handshake across restarts").unwrap();
    net.pump();
    assert_eq!(mps(&net.take(b)), vec![("alice".into(), "handshake across restarts".into())]);
}

#[test]
fn malformed_snapshots_are_refused() {
    let (mut net, a, _) = alice_bob();
    let mut snapshot = net.sc(a).snapshot();
    snapshot.client.outbox.push(crate::client::OutboxSnapshot {
        request_id: 1,
        opcode: 0,
        frame: vec![1, 2, 3],
        written: false,
        ack: false,
    });
    let identity = IdentityKey::from_pkcs8_der(fixtures::ALICE_PKCS8).unwrap();
    let rng = StdRng::from_seed([1; 32]);
    let restored =
        SecureClient::restore(ClientConfig::default(), &snapshot, identity, rng, HashParams::INSECURE_FAST, net.now);
    assert!(restored.is_err());
}

#[cfg(feature = "serde")]
#[test]
fn snapshots_round_trip_through_json() {
    let (mut net, a, b) = alice_bob();
    net.handshake(a, b, "alice", "bob");
    let snapshot = net.sc(a).snapshot();
    let json = serde_json::to_string(&snapshot).unwrap();
    let back: SecureSnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, snapshot);
}
