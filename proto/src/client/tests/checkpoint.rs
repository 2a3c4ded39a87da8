//! The durability barrier of the client ([`Client::drain`] and
//! [`ClientTurn::commit`](crate::machine::ClientTurn::commit)), and
//! [`ClientEvent::CaughtUp`].

use bytes::Bytes;

use super::lone::{Lone, last_request, logged_in, response, user_message};
use super::{Net, PASSPHRASE, PASSWORD};
use crate::client::ClientSnapshot;
use crate::machine::Output;
use crate::token::{self, TokenKind};
use crate::wire::{Connected, Message, MpExpired, Opcode, PeerGone, ResponseBody, Status, Tokens};
use crate::{Client, ClientConfig, ClientEvent, Durable};

/// A store that keeps every snapshot committed, or refuses.
#[derive(Default)]
struct Disk {
    snapshots: Vec<ClientSnapshot>,
    broken: bool,
}

impl Durable<Client> for Disk {
    type Error = &'static str;

    fn commit(&mut self, client: &Client) -> Result<(), &'static str> {
        if self.broken {
            return Err("disk full");
        }
        self.snapshots.push(client.snapshot());
        Ok(())
    }
}

fn transmits(outputs: &[Output<ClientEvent>]) -> usize {
    outputs.iter().filter(|o| matches!(o, Output::Transmit(_))).count()
}

#[test]
fn a_turn_that_changes_nothing_persisted_takes_no_checkpoint() {
    let mut lone = logged_in(ClientConfig::default());
    let mut disk = Disk::default();
    assert!(!lone.client.checkpoint_due(), "the login was committed");
    // A keepalive ping and its pong change nothing a profile holds.
    lone.now = lone.now.advance(ClientConfig::default().keepalive_interval);
    lone.client.handle_timeout(lone.now);
    let turn = lone.client.drain();
    assert!(!turn.checkpoint_due());
    let outputs = turn.commit(&mut disk).unwrap();
    assert_eq!(transmits(&outputs), 1, "the ping goes out");
    assert!(disk.snapshots.is_empty(), "no checkpoint");
    let pong = Message::Pong(crate::wire::Pong { nonce: 1 }).to_bytes(b"");
    lone.client.handle_input(lone.now, &pong);
    let outputs = lone.client.drain().commit(&mut disk).unwrap();
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    assert!(disk.snapshots.is_empty());
}

#[test]
fn a_request_is_stored_before_its_frame_is_handed_out() {
    let mut lone = logged_in(ClientConfig::default());
    let mut disk = Disk::default();
    let now = lone.now;
    let id = lone.client.send_mp(now, "bob", Bytes::from_static(b"sealed")).unwrap();
    let turn = lone.client.drain();
    assert!(turn.checkpoint_due());
    let outputs = turn.commit(&mut disk).unwrap();
    assert_eq!(transmits(&outputs), 1);
    let [stored] = &disk.snapshots[..] else { panic!("one checkpoint: {:?}", disk.snapshots) };
    assert_eq!(stored.outbox.iter().map(|o| (o.request_id, o.written)).collect::<Vec<_>>(), [(id, true)]);
    assert_eq!(stored.next_request_id, Some(id + 1));
    assert!(!lone.client.checkpoint_due());
}

#[test]
fn a_failed_checkpoint_hands_out_nothing_and_stays_due() {
    let mut lone = logged_in(ClientConfig::default());
    let mut disk = Disk { broken: true, ..Disk::default() };
    let now = lone.now;
    lone.client.send_mp(now, "bob", Bytes::from_static(b"sealed")).unwrap();
    assert_eq!(lone.client.drain().commit(&mut disk), Err("disk full"));
    assert!(lone.client.checkpoint_due(), "still due: the next turn tries again");
    disk.broken = false;
    lone.client.disconnected(now);
    let outputs = lone.client.drain().commit(&mut disk).unwrap();
    assert_eq!(disk.snapshots.len(), 1);
    assert_eq!(disk.snapshots[0].outbox.len(), 1, "the request waits for the next connection");
    assert_eq!(transmits(&outputs), 0);
}

#[test]
fn a_delivered_message_is_stored_before_its_acknowledgement_leaves() {
    let mut lone = logged_in(ClientConfig::default());
    let mut disk = Disk::default();
    lone.client.handle_input(lone.now, &user_message("bob", 1));
    let outputs = lone.client.drain().commit(&mut disk).unwrap();
    assert!(matches!(&outputs[0], Output::Event(ClientEvent::UserMessage { seq: 1, .. })), "{outputs:?}");
    assert_eq!(transmits(&outputs), 0, "the acknowledgement waits for ack_delay");
    let [stored] = &disk.snapshots[..] else { panic!("one checkpoint") };
    assert_eq!(stored.seen_peers, [("bob".to_owned(), 1)]);
    assert!(stored.outbox.is_empty());

    // The delay passes: the acknowledgement is stored in the outbox, then it leaves.
    lone.now = lone.now.advance(ClientConfig::default().ack_delay);
    lone.client.handle_timeout(lone.now);
    let outputs = lone.client.drain().commit(&mut disk).unwrap();
    assert_eq!(transmits(&outputs), 1, "the acknowledgement");
    let [_, stored] = &disk.snapshots[..] else { panic!("two checkpoints") };
    assert!(stored.outbox.iter().any(|o| o.ack), "the acknowledgement is in the outbox");

    // The same item again (a replay, its acknowledgement still waiting): nothing changes.
    lone.client.handle_input(lone.now, &user_message("bob", 1));
    lone.now = lone.now.advance(ClientConfig::default().ack_delay);
    lone.client.handle_timeout(lone.now);
    let turn = lone.client.drain();
    assert!(!turn.checkpoint_due());
    assert_eq!(transmits(&turn.commit(&mut disk).unwrap()), 0);
    assert_eq!(disk.snapshots.len(), 2);
}

/// Logs a lone client in; the server then announces `queued` items.
fn logged_in_with_queue(queued: u32) -> Lone {
    let mut lone = Lone::new(ClientConfig::default());
    lone.connect();
    let now = lone.now;
    lone.client.login(now, "alice", PASSWORD, PASSPHRASE).unwrap();
    lone.drain();
    let (op, id) = last_request(&lone);
    lone.feed(&response(op, id, Status::InProgress, 202, ResponseBody::Empty));
    let (op, id) = last_request(&lone);
    let tokens = Tokens {
        access_token: token::encode(TokenKind::Access, "QxWnTrBkLmPzYvHd"),
        refresh_token: token::encode(TokenKind::Refresh, "MfRtGhJkLpQwErTy"),
        access_expires_ms: now.unix_ms + 900_000,
        refresh_expires_ms: now.unix_ms + 9_000_000,
    };
    lone.feed(&response(op, id, Status::Valid, 200, ResponseBody::Tokens(tokens)));
    lone.events.clear();
    lone.feed_event(Connected { username: "alice".into(), queued });
    lone
}

#[test]
fn caught_up_counts_the_queued_items_duplicates_included() {
    let mut lone = logged_in_with_queue(3);
    assert!(matches!(lone.events[..], [ClientEvent::Connected { queued: 3, .. }]), "{:?}", lone.events);
    lone.feed(&user_message("bob", 1));
    lone.feed_event(PeerGone { peer: "carol".into() }); // not a queued item
    lone.feed(&user_message("bob", 1)); // a duplicate: dropped, but counted
    assert!(!lone.events.contains(&ClientEvent::CaughtUp), "{:?}", lone.events);
    lone.feed_event(MpExpired { peer: "dave".into(), seq: 4 });
    lone.feed(&user_message("bob", 2)); // live
    let kinds: Vec<&str> = lone
        .events
        .iter()
        .map(|e| match e {
            ClientEvent::Connected { .. } => "connected",
            ClientEvent::UserMessage { .. } => "message",
            ClientEvent::PeerGone { .. } => "peer_gone",
            ClientEvent::MpExpired { .. } => "expired",
            ClientEvent::CaughtUp => "caught_up",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["connected", "message", "peer_gone", "expired", "caught_up", "message"]);
}

#[test]
fn caught_up_right_after_connected_when_nothing_is_queued_and_once_per_connection() {
    let mut lone = logged_in_with_queue(0);
    assert!(matches!(lone.events[..], [ClientEvent::Connected { queued: 0, .. }, ClientEvent::CaughtUp]));
    lone.feed(&user_message("bob", 1));
    assert_eq!(lone.events.iter().filter(|e| **e == ClientEvent::CaughtUp).count(), 1);
    // A connection that ends before the queue arrived never reports it.
    let mut lone = logged_in_with_queue(2);
    lone.feed(&user_message("bob", 1));
    lone.client.disconnected(lone.now);
    lone.drain();
    lone.connect();
    assert!(matches!(last_request(&lone), (Opcode::Refresh, _)));
    assert!(!lone.events.contains(&ClientEvent::CaughtUp), "{:?}", lone.events);
}

#[test]
fn caught_up_after_what_was_queued_through_the_server() {
    let mut net = Net::new();
    let a = net.user("alice");
    let b = net.user("bob");
    net.open_mp(a, b);
    net.disconnect(b);
    let now = net.now;
    for text in ["one", "two"] {
        net.client(a).send_mp(now, "bob", Bytes::from_static(text.as_bytes())).unwrap();
    }
    net.pump();
    net.take(a);
    net.take(b);
    net.connect(b);
    net.client(a).send_mp(now, "bob", Bytes::from_static(b"live")).unwrap();
    net.pump();
    net.settle_acks();
    let events = net.take(b);
    let order: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Connected { queued, .. } => Some(format!("connected {queued}")),
            ClientEvent::UserMessage { sealed, .. } => Some(String::from_utf8_lossy(sealed).into_owned()),
            ClientEvent::CaughtUp => Some("caught up".into()),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["connected 2", "one", "two", "caught up", "live"], "{events:?}");
    assert_eq!(net.queued("alice", "bob"), 0, "bob acknowledged them all");
}
