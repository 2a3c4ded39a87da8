//! [`Turn`](crate::server::Turn): the store sees every batch (empty ones too)
//! before any action is handed out; a refused commit hands out nothing;
//! actions come transmits first, then closes, then log lines.

use super::{Harness, PASSPHRASE, PASSWORD, config};
use crate::Durable;
use crate::server::{Action, Change, MemoryStore};
use crate::wire::{Message, Register, Request};

/// A store that records the size of each batch and refuses them all.
#[derive(Default)]
struct Refusing {
    batches: Vec<usize>,
}

impl Durable<[Change]> for Refusing {
    type Error = &'static str;

    fn commit(&mut self, changes: &[Change]) -> Result<(), &'static str> {
        self.batches.push(changes.len());
        Err("disk full")
    }
}

fn register(h: &mut Harness, user: &str) -> crate::server::SessionId {
    let s = h.connect();
    let body = Register {
        username: user.into(),
        password: PASSWORD.into(),
        passphrase: PASSPHRASE.into(),
        identity_key: bytes::Bytes::from_static(b"idkey"),
    };
    let msg = Message::Request(Request { request_id: 1, timestamp_ms: h.now.unix_ms, body: body.into() });
    h.server.handle_input(h.now, s, &msg.to_bytes(b""));
    s
}

#[test]
fn a_turn_commits_its_changes_before_handing_out_its_frames() {
    let mut h = Harness::new(config());
    let s = register(&mut h, "alice");
    let mut store = MemoryStore::new(h.server.config());
    let mut turn = h.server.drain();
    let jobs = turn.take_jobs();
    assert_eq!((jobs.len(), turn.changes().len()), (1, 0), "the hash is handed out at once");
    assert!(turn.jobs().is_empty());
    let Ok(committed) = turn.commit(&mut store);
    assert!(committed.is_empty());
    assert_eq!(store.commits(), 0, "an empty batch is no transaction");
    for job in jobs {
        h.server.handle_work(h.now, job.run());
    }
    let turn = h.server.drain();
    assert!(turn.changes().iter().any(|c| matches!(c, Change::UserCreated { username, .. } if username == "alice")));
    let Ok(committed) = turn.commit(&mut store);
    assert!(store.state().user("alice").is_some(), "durable before the answer is reachable");
    assert_eq!((store.commits(), store.changes()), (1, committed.changes().len() as u64));
    assert_eq!(committed.changes().len(), store.changes() as usize);
    let to: Vec<_> = committed
        .actions()
        .iter()
        .filter_map(|a| match a {
            Action::Transmit { session, .. } => Some(*session),
            _ => None,
        })
        .collect();
    assert_eq!(to, [s], "the answer");
    assert!(committed.timeout().is_some());
    assert!(h.server.drain().is_empty());
}

#[test]
fn a_refused_commit_hands_out_nothing_and_empty_turns_still_commit() {
    let mut h = Harness::new(config());
    register(&mut h, "alice");
    let mut turn = h.server.drain();
    for job in turn.take_jobs() {
        h.server.handle_work(h.now, job.run());
    }
    let mut store = Refusing::default();
    assert_eq!(turn.commit(&mut store).map(|_| ()), Err("disk full"));
    let turn = h.server.drain();
    let changes = turn.changes().len();
    assert!(changes > 0);
    assert_eq!(turn.commit(&mut store).map(|_| ()), Err("disk full"));
    assert_eq!(store.batches, [0, changes], "every turn goes through the store, an empty one too");
}

#[test]
fn actions_come_transmits_then_closes_then_log_lines() {
    let mut h = Harness::new(config());
    let sessions: Vec<_> = (0..3).map(|_| h.connect()).collect();
    // A frame of an unknown version on each: a close frame, a close, and log lines for each.
    for s in &sessions {
        h.server.handle_input(h.now, *s, &[0xEE; 14]);
    }
    let turn = h.server.drain();
    let Ok(committed) = turn.commit(&mut crate::Ephemeral);
    let rank = |a: &Action| match a {
        Action::Transmit { .. } => 0,
        Action::Close { .. } => 1,
        Action::Log(_) => 2,
    };
    let ranks: Vec<u8> = committed.actions().iter().map(rank).collect();
    assert!(ranks.is_sorted(), "{ranks:?}");
    assert_eq!(ranks.iter().filter(|r| **r == 0).count(), 3, "{ranks:?}");
    assert_eq!(ranks.iter().filter(|r| **r == 1).count(), 3, "{ranks:?}");
    assert!(ranks.contains(&2));
    assert_eq!(h.server.session_count(), 0);
}

/// Registers `user` up to the turn that holds the account's changes (the hash run inline).
fn registered_turn(h: &mut Harness, user: &str) -> crate::server::Turn {
    register(h, user);
    let mut turn = h.server.drain();
    for job in turn.take_jobs() {
        h.server.handle_work(h.now, job.run());
    }
    let Ok(committed) = turn.commit(&mut crate::Ephemeral);
    assert!(committed.is_empty());
    h.server.drain()
}

#[test]
fn deferred_turns_are_released_in_order_once_a_group_commit_covers_them() {
    use crate::server::{Batch, Receipt, Sequencer};
    let mut h = Harness::new(config());
    let mut store = MemoryStore::new(h.server.config());
    let mut sequencer = Sequencer::default();
    let (first, first_pending) = sequencer.defer(registered_turn(&mut h, "alice"));
    let (second, second_pending) = sequencer.defer(registered_turn(&mut h, "bob"));
    assert_eq!((first.seq(), second.seq()), (1, 2));
    // A ping answered while both are in flight: no change, but released only after them.
    let s = h.connect();
    h.server.handle_input(h.now, s, &Message::Ping(crate::wire::Ping { nonce: 9 }).to_bytes(b""));
    let (empty, pong) = sequencer.defer(h.server.drain());
    assert!(empty.is_empty() && !pong.is_empty());
    assert_eq!(pong.seq(), 2, "waits for the last turn with changes");
    let pong = pong.release(&Receipt::default()).expect_err("nothing committed yet");

    let receipt = Batch::commit_group(vec![first], &mut store).unwrap_or_else(|e| match e {});
    assert_eq!(receipt.upto(), 1);
    let pong = pong.release(&receipt).expect_err("turn 2 is not durable yet");
    let second_pending = second_pending.release(&receipt).expect_err("turn 2 is not durable yet");
    let first_done = first_pending.release(&receipt).expect("turn 1 is durable");
    assert!(!first_done.is_empty());
    assert!(store.state().user("alice").is_some() && store.state().user("bob").is_none());

    let receipt = Batch::commit_group(vec![second], &mut store).unwrap_or_else(|e| match e {});
    assert!(second_pending.release(&receipt).is_ok() && pong.release(&receipt).is_ok());
    assert!(store.state().user("bob").is_some());
}

#[test]
fn a_group_commit_is_one_store_commit_and_a_refused_one_gives_no_receipt() {
    use crate::server::{Batch, Sequencer};
    let mut h = Harness::new(config());
    let mut sequencer = Sequencer::default();
    let turns: Vec<_> = ["alice", "bob", "carol"].iter().map(|u| sequencer.defer(registered_turn(&mut h, u))).collect();
    let total: usize = turns.iter().map(|(b, _)| b.changes().len()).sum();
    let (batches, pendings): (Vec<_>, Vec<_>) = turns.into_iter().unzip();
    let mut refusing = Refusing::default();
    assert!(batches.iter().all(|b| !b.is_empty()));
    assert_eq!(Batch::commit_group(Vec::new(), &mut refusing).map(|r| r.upto()), Ok(0), "an empty group");
    assert!(refusing.batches.is_empty(), "touches no store");

    let mut store = MemoryStore::new(h.server.config());
    let receipt = Batch::commit_group(batches, &mut store).unwrap_or_else(|e| match e {});
    assert_eq!((store.commits(), store.changes()), (1, total as u64), "three turns, one transaction");
    assert_eq!(receipt.upto(), 3);
    assert!(pendings.into_iter().all(|p| p.release(&receipt).is_ok()));

    let (batch, pending) = sequencer.defer(registered_turn(&mut h, "dave"));
    assert_eq!(Batch::commit_group(vec![batch], &mut refusing), Err("disk full"));
    assert_eq!(pending.seq(), 4, "held forever: no receipt covers it");
}

/// A routed `send_mp` is one change (issue 13): the item queued and its answer remembered
/// together (`Change::MessageSent`), which a store logs as the `Enqueued` and `Recorded`
/// it stands for; a retry of the request id is answered from that record and changes nothing.
#[test]
fn a_routed_message_is_one_change_and_its_retry_none() {
    use crate::server::state::ItemKind;
    use crate::wire::{AcceptMp, RequestMp, ResponseBody, SendMp};

    let mut h = Harness::new(config());
    h.register("alice");
    h.register("bob");
    let (a, ta) = h.login("alice");
    let (b, tb) = h.login("bob");
    let hs = bytes::Bytes::from_static(b"hs");
    h.send_auth(a, RequestMp { peer: "bob".into(), handshake: hs.clone() }, ta.access_token.as_bytes());
    h.send_auth(b, AcceptMp { peer: "alice".into(), handshake: hs }, tb.access_token.as_bytes());
    let send = SendMp { peer: "bob".into(), sealed: bytes::Bytes::from_static(b"sealed") };
    let frame = Message::Request(Request { request_id: 77, timestamp_ms: h.now.unix_ms, body: send.into() })
        .to_bytes(ta.access_token.as_bytes());
    h.server.handle_input(h.now, a, &frame);
    h.server.handle_input(h.now, a, &frame);
    let turn = h.server.drain();
    let [change] = turn.changes() else {
        panic!("one change for the message and none for its retry: {:?}", turn.changes())
    };
    let Change::MessageSent { from, to, item, request_id: 77, code: 200, .. } = change else { panic!("{change:?}") };
    assert_eq!((&**from, &**to, item.seq), ("alice", "bob", 2));
    assert!(matches!(&item.kind, ItemKind::Message { sealed } if &sealed[..] == b"sealed"));
    let [Change::Enqueued { item: queued, .. }, Change::Recorded { request_id: 77, response, .. }] =
        change.unfold().expect("stores log it as two records")
    else {
        panic!("enqueued, then recorded")
    };
    assert_eq!(&queued, item);
    assert_eq!((response.code, &response.body), (200, &ResponseBody::Sent(crate::wire::Sent { seq: 2 })));
    let Ok(committed) = turn.commit(&mut crate::Ephemeral);
    let answers: Vec<Vec<Message>> = committed
        .actions()
        .iter()
        .filter_map(|action| match action {
            Action::Transmit { session, bytes } if *session == a => Some(decode_all(bytes)),
            _ => None,
        })
        .collect();
    let sent: Vec<_> = answers
        .iter()
        .flatten()
        .map(|m| match m {
            Message::Response(r) => (r.request_id, r.code, r.body.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    let answer = (77, 200, ResponseBody::Sent(crate::wire::Sent { seq: 2 }));
    assert_eq!(sent, [answer.clone(), answer], "the retry gets the same answer");
    assert_eq!(h.server.state().lane("alice", "bob").map(|l| l.items.len()), Some(2), "queued once");
}

fn decode_all(bytes: &[u8]) -> Vec<Message> {
    let limits = crate::wire::Limits::DEFAULT;
    let mut d = crate::wire::FrameDecoder::new(limits);
    d.push(bytes);
    let mut out = Vec::new();
    while let Ok(Some(f)) = d.next_frame() {
        out.push(Message::decode(&f, &limits).expect("valid frames"));
    }
    out
}
