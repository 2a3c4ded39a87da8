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
