//! Rooms: create, join, fan-out, history, and the room dedup.

use bytes::Bytes;

use super::lone::Lone;
use super::{Net, VERIFIER, outcome};
use crate::wire::{ResponseBody, RoomMessage};
use crate::{ClientConfig, ClientEvent};

fn room_messages(events: &[ClientEvent]) -> Vec<(String, u64, Bytes)> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::RoomMessage { from, seq, sealed, .. } => Some((from.clone(), *seq, sealed.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn create_join_send_fan_out_and_history() {
    let mut net = Net::new();
    let a = net.user("alice");
    let b = net.user("bob");
    let c = net.user("carol");
    let now = net.now;
    let verifier = Bytes::from_static(VERIFIER);

    let id = net.client(a).create_room(now, "room11", verifier.clone(), Bytes::from_static(b"descriptor")).unwrap();
    net.pump();
    assert!(matches!(outcome(&net.take(a), id), Some(ClientEvent::Done { code: 201, .. })));

    let id = net.client(b).join_room(now, "room11", Bytes::from_static(b"wrong-verifier-000000")).unwrap();
    net.pump();
    assert!(matches!(outcome(&net.take(b), id), Some(ClientEvent::Failed { code: 403, .. })));

    let id = net.client(b).join_room(now, "room11", verifier.clone()).unwrap();
    net.pump();
    let events = net.take(b);
    let Some(ClientEvent::Done { body: ResponseBody::RoomJoined(joined), .. }) = outcome(&events, id) else {
        panic!("{events:?}")
    };
    assert_eq!(joined.members, vec!["alice", "bob"]);
    assert!(joined.history.is_empty());

    let id = net.client(a).send_room(now, "room11", Bytes::from_static(b"hi all")).unwrap();
    net.pump();
    assert!(matches!(outcome(&net.take(a), id), Some(ClientEvent::Done { code: 200, .. })));
    assert_eq!(room_messages(&net.take(b)), vec![("alice".into(), 1, Bytes::from_static(b"hi all"))]);
    assert!(net.take(c).is_empty(), "not a member");
    assert_eq!(net.client(b).room_last_seen("room11"), 1);

    // A non-member can neither send nor read; a member can read the history.
    let id = net.client(c).room_history(now, "room11").unwrap();
    net.pump();
    assert!(matches!(outcome(&net.take(c), id), Some(ClientEvent::Failed { code: 403, .. })));
    let id = net.client(b).room_history(now, "room11").unwrap();
    net.pump();
    let events = net.take(b);
    assert!(
        matches!(outcome(&events, id), Some(ClientEvent::Done { body: ResponseBody::History(h), .. }) if h.messages.len() == 1)
    );

    // A late joiner gets the history in the join answer, then live messages.
    let id = net.client(c).join_room(now, "room11", verifier).unwrap();
    net.pump();
    let events = net.take(c);
    assert!(
        matches!(outcome(&events, id), Some(ClientEvent::Done { body: ResponseBody::RoomJoined(j), .. }) if j.history.len() == 1)
    );
    assert_eq!(net.client(c).room_last_seen("room11"), 1);
    net.client(b).send_room(now, "room11", Bytes::from_static(b"second")).unwrap();
    net.pump();
    assert_eq!(room_messages(&net.take(a)).len(), 1);
    assert_eq!(room_messages(&net.take(c)), vec![("bob".into(), 2, Bytes::from_static(b"second"))]);

    // Leave, and only the owner deletes.
    let id = net.client(c).leave_room(now, "room11").unwrap();
    net.pump();
    assert!(matches!(outcome(&net.take(c), id), Some(ClientEvent::Done { code: 200, .. })));
    let id = net.client(b).delete_room(now, "room11").unwrap();
    net.pump();
    assert!(matches!(outcome(&net.take(b), id), Some(ClientEvent::Failed { code: 403, .. })));
    let id = net.client(a).delete_room(now, "room11").unwrap();
    net.pump();
    assert!(matches!(outcome(&net.take(a), id), Some(ClientEvent::Done { code: 200, .. })));
}

#[test]
fn room_messages_are_deduplicated_per_room() {
    let mut lone = Lone::new(ClientConfig::default());
    lone.connect();
    let msg = |room: &str, seq| RoomMessage {
        room: room.into(),
        from: "bob".into(),
        seq,
        sent_ms: 1,
        sealed: Bytes::from_static(b"s"),
    };
    for (room, seq) in [("r1", 1), ("r1", 2), ("r1", 2), ("r2", 1), ("r1", 1), ("r2", 1), ("r1", 3)] {
        lone.feed_event(msg(room, seq));
    }
    let got: Vec<(String, u64)> = lone
        .events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::RoomMessage { room, seq, .. } => Some((room.clone(), *seq)),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![("r1".into(), 1), ("r1".into(), 2), ("r2".into(), 1), ("r1".into(), 3)]);
    assert!(lone.sent.is_empty(), "room messages are not acknowledged");
}
