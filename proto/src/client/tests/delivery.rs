//! The receiving side: replays dropped, one acknowledgement per peer per
//! batch or per `ack_delay`, bounded memory.

use std::time::Duration;

use super::lone::{acks, logged_in, response, user_message};
use super::messages;
use crate::wire::{Message, MpClosed, Opcode, ResponseBody, Status};
use crate::{ClientConfig, ClientEvent};

/// Acknowledgements at the end of each input batch (no `ack_delay`).
fn per_batch() -> ClientConfig {
    ClientConfig { ack_delay: Duration::ZERO, ..ClientConfig::default() }
}

#[test]
fn replays_are_dropped_and_each_peer_is_acked_once_per_batch() {
    let mut lone = logged_in(per_batch());
    let mut batch = Vec::new();
    for (from, seq) in [("bob", 1), ("bob", 2), ("bob", 2), ("carol", 1), ("bob", 3), ("bob", 1)] {
        batch.extend(user_message(from, seq));
    }
    let closed = MpClosed { peer: "bob".into(), seq: 4, reason: "bye".into() };
    batch.extend(
        Message::Event(crate::wire::Event { request_id: 0, timestamp_ms: 0, body: closed.into() }).to_bytes(b""),
    );
    // Any chunking: the batch arrives in 7-byte pieces, but the acks come
    // once per peer per `handle_input` call that completed frames.
    lone.feed(&batch);
    let got: Vec<(String, u64)> = messages(&lone.events).into_iter().map(|(f, s, _)| (f, s)).collect();
    assert_eq!(got, vec![("bob".into(), 1), ("bob".into(), 2), ("carol".into(), 1), ("bob".into(), 3)]);
    assert!(matches!(lone.events.last(), Some(ClientEvent::MpClosed { seq: 4, .. })));
    let sent = acks(&lone);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!((sent[0].1.as_str(), sent[0].2), ("bob", 4));
    assert_eq!((sent[1].1.as_str(), sent[1].2), ("carol", 1));
    assert!(
        lone.sent.iter().all(|m| !matches!(m, Message::Request(r) if r.body.opcode() != Opcode::DeliveryAck)),
        "only acks"
    );
    assert_eq!(lone.client.last_seen("bob"), 4);
    assert_eq!(lone.client.outbox_len(), 2);

    // A replay while the ack is unanswered: nothing new to send.
    lone.sent.clear();
    lone.events.clear();
    lone.feed(&user_message("bob", 3));
    assert!(lone.events.is_empty());
    assert!(acks(&lone).is_empty());

    // Acks answered: the outbox empties, and nothing is reported.
    for (id, _, _) in &sent {
        lone.feed(&response(Opcode::DeliveryAck, *id, Status::Valid, 200, ResponseBody::Empty));
    }
    assert_eq!(lone.client.outbox_len(), 0);
    assert!(lone.events.is_empty());

    // A replay after the ack landed (server restarted from an older state, say): acked again.
    lone.feed(&user_message("bob", 2));
    assert!(lone.events.is_empty());
    assert_eq!(acks(&lone).iter().map(|a| a.2).collect::<Vec<_>>(), vec![4]);
}

#[test]
fn lane_memory_is_bounded_and_forgets_acknowledged_peers_first() {
    let mut lone = logged_in(ClientConfig { max_seen_peers: 2, ..per_batch() });
    lone.feed(&user_message("bob", 5));
    lone.feed(&user_message("carol", 7));
    // Bob's acknowledgement is confirmed, carol's is not.
    let sent = acks(&lone);
    lone.feed(&response(Opcode::DeliveryAck, sent[0].0, Status::Valid, 200, ResponseBody::Empty));
    lone.feed(&user_message("dave", 1));
    assert_eq!(lone.client.seen_peers(), vec![("carol".into(), 7), ("dave".into(), 1)]);
    assert_eq!(lone.client.last_seen("bob"), 0);

    // A restored profile brings its lanes back.
    lone.client.set_last_seen("erin", 3);
    assert_eq!(lone.client.last_seen("erin"), 3);
    assert_eq!(lone.client.seen_peers().len(), 2);
    lone.events.clear();
    lone.feed(&user_message("erin", 3));
    assert!(lone.events.is_empty(), "a replay of what the profile had seen");
}

#[test]
fn acknowledgements_wait_for_ack_delay_and_one_covers_the_burst() {
    let delay = ClientConfig::default().ack_delay;
    assert!(!delay.is_zero());
    let mut lone = logged_in(ClientConfig::default());
    let first = lone.now.instant;
    lone.feed(&user_message("bob", 1));
    assert_eq!(lone.timeout, Some(first + delay), "the timer names the acknowledgements' instant");
    lone.advance(delay / 2);
    lone.feed(&user_message("bob", 2));
    lone.feed(&user_message("carol", 1));
    assert!(acks(&lone).is_empty(), "{:?}", lone.sent);
    assert_eq!(lone.timeout, Some(first + delay), "measured from the first item, not pushed back");
    assert_eq!(messages(&lone.events).len(), 3, "delivery itself does not wait");

    lone.advance(delay - delay / 2);
    let sent = acks(&lone);
    assert_eq!(sent.iter().map(|a| (a.1.as_str(), a.2)).collect::<Vec<_>>(), [("bob", 2), ("carol", 1)]);
    assert_ne!(lone.timeout, Some(first + delay), "nothing is due any more");

    // Answered: a later item starts a new delay.
    for (id, _, _) in &sent {
        lone.feed(&response(Opcode::DeliveryAck, *id, Status::Valid, 200, ResponseBody::Empty));
    }
    lone.sent.clear();
    lone.feed(&user_message("bob", 3));
    assert!(acks(&lone).is_empty());
    lone.advance(delay);
    assert_eq!(acks(&lone).iter().map(|a| a.2).collect::<Vec<_>>(), [3]);
}

#[test]
fn ack_batch_items_are_acknowledged_at_once() {
    let mut lone = logged_in(ClientConfig { ack_batch: 3, ..ClientConfig::default() });
    lone.feed(&user_message("bob", 1));
    lone.feed(&user_message("carol", 1));
    assert!(acks(&lone).is_empty());
    // The third item, a replay, counts too: it means an acknowledgement did not land.
    lone.feed(&user_message("bob", 1));
    let sent = acks(&lone);
    assert_eq!(sent.iter().map(|a| (a.1.as_str(), a.2)).collect::<Vec<_>>(), [("bob", 1), ("carol", 1)]);
    lone.sent.clear();
    lone.advance(ClientConfig::default().ack_delay);
    assert!(acks(&lone).is_empty(), "nothing left for the timer");
}

#[test]
fn a_request_and_a_logout_take_the_due_acknowledgements_along_first() {
    let mut lone = logged_in(ClientConfig::default());
    lone.feed(&user_message("bob", 1));
    let now = lone.now;
    lone.client.send_mp(now, "carol", bytes::Bytes::from_static(b"sealed")).unwrap();
    lone.drain();
    let order: Vec<Opcode> = requests(&lone);
    assert_eq!(order, [Opcode::DeliveryAck, Opcode::SendMp]);

    lone.sent.clear();
    lone.feed(&user_message("bob", 2));
    lone.client.logout(now).unwrap();
    lone.drain();
    assert_eq!(requests(&lone), [Opcode::DeliveryAck, Opcode::Logout], "acknowledged while the token still works");
}

#[test]
fn a_close_frame_follows_the_due_acknowledgements() {
    let mut lone = logged_in(ClientConfig::default());
    lone.feed(&user_message("bob", 1));
    let now = lone.now;
    lone.client.close(now);
    lone.drain();
    assert_eq!(acks(&lone).iter().map(|a| (a.1.as_str(), a.2)).collect::<Vec<_>>(), [("bob", 1)]);
    assert!(matches!(lone.sent.last(), Some(Message::Close(_))), "{:?}", lone.sent);
    assert_eq!(lone.closes.len(), 1);
}

/// The opcodes of the requests the client wrote, in order.
fn requests(lone: &super::lone::Lone) -> Vec<Opcode> {
    lone.sent
        .iter()
        .filter_map(|m| match m {
            Message::Request(r) => Some(r.body.opcode()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_profile_stored_while_acknowledgements_were_due_restores_every_lane() {
    let config = ClientConfig { max_seen_peers: 2, ..ClientConfig::default() };
    let mut lone = logged_in(config.clone());
    for peer in ["a", "b", "c"] {
        lone.feed(&user_message(peer, 1));
    }
    assert!(acks(&lone).is_empty(), "all three acknowledgements wait");
    let snapshot = lone.client.snapshot();
    assert_eq!(snapshot.seen_peers.len(), 3, "over the bound while they are due: none may be forgotten");
    // A crash before the timer: the restored client must still drop the server's replays of all three.
    let restored = crate::Client::restore(config, &snapshot, lone.now).unwrap();
    for peer in ["a", "b", "c"] {
        assert_eq!(restored.last_seen(peer), 1, "{peer}'s lane survives the restore");
    }
    // Once the acknowledgements are out and confirmed, a new peer brings the lanes back to the bound.
    lone.advance(ClientConfig::default().ack_delay);
    for (id, _, _) in acks(&lone) {
        lone.feed(&response(Opcode::DeliveryAck, id, Status::Valid, 200, ResponseBody::Empty));
    }
    lone.feed(&user_message("d", 1));
    assert_eq!(lone.client.seen_peers().len(), 2, "{:?}", lone.client.seen_peers());
    assert_eq!(lone.client.last_seen("d"), 1);
}

#[test]
fn a_lost_connection_forgets_the_acknowledgement_timer() {
    let mut lone = logged_in(ClientConfig::default());
    lone.feed(&user_message("bob", 1));
    assert!(lone.client.acks_due());
    let now = lone.now;
    lone.client.disconnected(now);
    lone.drain();
    assert!(!lone.client.acks_due(), "the server replays the item at the next binding; it is acknowledged then");
}
