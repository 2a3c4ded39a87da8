//! Private conversations: exactly-once delivery across offline periods,
//! reconnects and lost answers.

use bytes::Bytes;

use super::{Net, messages, outcome};
use crate::ClientEvent;
use crate::wire::{Opcode, ResponseBody, Sent};

#[test]
fn offline_peer_gets_everything_exactly_once_and_acks_it() {
    let mut net = Net::new();
    let a = net.user("alice");
    let b = net.add();
    net.register(b, "bob");
    net.disconnect(b);

    // Bob is offline: the request is queued (202) and carries its lane seq.
    let now = net.now;
    let id = net.client(a).request_mp(now, "bob", Bytes::from_static(b"hs-a")).unwrap();
    net.pump();
    let events = net.take(a);
    assert_eq!(
        outcome(&events, id),
        Some(&ClientEvent::Done {
            request_id: id,
            opcode: Opcode::RequestMp,
            code: 202,
            body: ResponseBody::Sent(Sent { seq: 1 }),
        })
    );

    net.connect(b);
    let events = net.login(b, "bob");
    assert!(
        matches!(&events[..], [ClientEvent::MpRequest { from, seq: 1, identity_key, handshake }]
            if from == "alice" && identity_key == "key-of-alice" && handshake == "hs-a"),
        "{events:?}"
    );
    assert_eq!(net.client(b).last_seen("alice"), 1);
    assert_eq!(net.queued("alice", "bob"), 0, "bob acknowledged the request");
    assert_eq!(net.client(b).outbox_len(), 0, "the acknowledgement was answered");

    let id = net.client(b).accept_mp(now, "alice", Bytes::from_static(b"hs-b")).unwrap();
    net.pump();
    let events = net.take(b);
    assert!(
        matches!(outcome(&events, id), Some(ClientEvent::Done { body: ResponseBody::PeerKeys(k), .. }) if k.handshake == "hs-a")
    );
    let events = net.take(a);
    assert!(
        matches!(&events[..], [ClientEvent::MpAccepted { peer, seq: 1, handshake, .. }] if peer == "bob" && handshake == "hs-b"),
        "{events:?}"
    );
    assert_eq!(net.queued("bob", "alice"), 1, "alice's acknowledgement waits for ack_delay");
    net.settle_acks();
    assert_eq!(net.queued("bob", "alice"), 0);

    // Bob goes offline; alice writes; bob comes back (refresh, no password).
    net.disconnect(b);
    let id = net.client(a).send_mp(now, "bob", Bytes::from_static(b"one")).unwrap();
    net.client(a).send_mp(now, "bob", Bytes::from_static(b"two")).unwrap();
    net.pump();
    let events = net.take(a);
    assert!(matches!(
        outcome(&events, id),
        Some(ClientEvent::Done { code: 202, body: ResponseBody::Sent(Sent { seq: 2 }), .. })
    ));
    assert_eq!(net.queued("alice", "bob"), 2);
    net.connect(b);
    let events = net.take(b);
    assert!(matches!(events.get(1), Some(ClientEvent::Connected { queued: 2, .. })), "{events:?}");
    assert_eq!(
        messages(&events),
        vec![("alice".into(), 2, Bytes::from_static(b"one")), ("alice".into(), 3, Bytes::from_static(b"two"))]
    );
    net.settle_acks();
    assert_eq!(net.queued("alice", "bob"), 0, "one acknowledgement covered both");

    // The login after: nothing again, even for a client with no memory of the lane.
    net.disconnect(b);
    net.connect(b);
    assert!(messages(&net.take(b)).is_empty());
    net.disconnect(b);
    let fresh = net.add();
    net.connect(fresh);
    let events = net.login(fresh, "bob");
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn resent_send_mp_after_a_lost_answer_is_not_delivered_twice() {
    let mut net = Net::new();
    let a = net.user("alice");
    let b = net.user("bob");
    net.open_mp(a, b);

    // The server gets the message and delivers it, but its answer is lost.
    net.peers[a].deaf = true;
    let now = net.now;
    let id = net.client(a).send_mp(now, "bob", Bytes::from_static(b"once")).unwrap();
    net.pump();
    assert_eq!(net.client(a).outbox_len(), 1);
    assert_eq!(messages(&net.take(b)).len(), 1);

    // Reconnect: refresh, then the same request id again.
    net.disconnect(a);
    net.peers[a].deaf = false;
    net.take(a);
    net.connect(a);
    let events = net.take(a);
    assert_eq!(
        outcome(&events, id),
        Some(&ClientEvent::Done {
            request_id: id,
            opcode: Opcode::SendMp,
            code: 200,
            body: ResponseBody::Sent(Sent { seq: 2 }),
        }),
        "{events:?}"
    );
    assert_eq!(net.client(a).outbox_len(), 0);
    assert!(messages(&net.take(b)).is_empty(), "no duplicate delivery");
    assert_eq!(net.server.state().next_seq("alice", "bob"), 3, "performed once");
}

#[test]
fn requests_made_offline_go_out_in_order_on_connect() {
    let mut net = Net::new();
    let a = net.user("alice");
    let b = net.user("bob");
    net.open_mp(a, b);
    net.disconnect(a);
    let now = net.now;
    let ids: Vec<u32> =
        (0..3).map(|i| net.client(a).send_mp(now, "bob", Bytes::from(format!("m{i}"))).unwrap()).collect();
    net.pump();
    assert_eq!(net.client(a).outbox_len(), 3);
    assert!(messages(&net.take(b)).is_empty());
    net.connect(a);
    let events = net.take(a);
    let done: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Done { request_id, .. } => Some(*request_id),
            _ => None,
        })
        .collect();
    assert_eq!(done, ids);
    let got: Vec<Bytes> = messages(&net.take(b)).into_iter().map(|m| m.2).collect();
    assert_eq!(got, vec!["m0", "m1", "m2"]);
}

#[test]
fn a_lost_acknowledgement_means_a_silent_replay_and_a_new_ack() {
    let mut net = Net::new();
    let a = net.user("alice");
    let b = net.user("bob");
    net.open_mp(a, b);

    // Bob receives the message but his acknowledgement never arrives.
    net.peers[b].mute = true;
    let now = net.now;
    net.client(a).send_mp(now, "bob", Bytes::from_static(b"hello")).unwrap();
    net.pump();
    net.settle_acks();
    assert_eq!(messages(&net.take(b)).len(), 1);
    assert_eq!(net.queued("alice", "bob"), 1);
    assert_eq!(net.client(b).outbox_len(), 1, "the ack waits for its answer");

    net.disconnect(b);
    net.peers[b].mute = false;
    net.connect(b);
    let events = net.take(b);
    assert!(messages(&events).is_empty(), "the replay is dropped: {events:?}");
    assert_eq!(net.queued("alice", "bob"), 0, "and acknowledged");
    assert_eq!(net.client(b).outbox_len(), 0);
}

#[test]
fn close_and_peer_gone_reach_the_peer() {
    let mut net = Net::new();
    let a = net.user("alice");
    let b = net.user("bob");
    net.open_mp(a, b);

    net.disconnect(b);
    let events = net.take(a);
    assert_eq!(events, vec![ClientEvent::PeerGone { peer: "bob".into() }]);
    net.connect(b);
    net.take(b);

    let now = net.now;
    let id = net.client(a).close_mp(now, "bob").unwrap();
    net.pump();
    let events = net.take(a);
    assert!(matches!(
        outcome(&events, id),
        Some(ClientEvent::Done { opcode: Opcode::CloseMp, body: ResponseBody::Sent(Sent { seq: 2 }), .. })
    ));
    let events = net.take(b);
    assert!(matches!(&events[..], [ClientEvent::MpClosed { peer, seq: 2, .. }] if peer == "alice"), "{events:?}");
    assert_eq!(net.client(b).last_seen("alice"), 2);

    // Sending in a closed conversation is refused by the server.
    let id = net.client(a).send_mp(now, "bob", Bytes::from_static(b"x")).unwrap();
    net.pump();
    assert!(matches!(outcome(&net.take(a), id), Some(ClientEvent::Failed { code: 403, .. })));
}
