//! The mail carrier of a node (`store::Carrier`, docs/PARTITIONS.md,
//! "Mail") against a PostgreSQL of the test's own (skipped without
//! PostgreSQL unless `CONFAB_REQUIRE_CLUSTER=1`): items committed by one
//! partition's store reach the owner of their target in order, when rung
//! and by the catch-up without a ring, again after a rewind, never after
//! being disowned, across a restart of PostgreSQL; each owned partition's
//! backlog is counted.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use common::config;
use confab_proto::server::{Change, Partitions};
use confab_server::store::{Carrier, Delivery, Init, LeaseConfig, PgStore};
use confab_tests::postgres::TempPostgres;

fn open(pg: &TempPostgres, index: u8) -> PgStore {
    let c = confab_proto::ServerConfig { partitions: Partitions { index, count: 3 }, ..config() };
    let lease = LeaseConfig::new(format!("node-{index}"), Duration::from_secs(60), false);
    PgStore::open_leased(&pg.url(), &c, Init::Allow, None, lease).unwrap().0
}

fn out(to: u8, seq: u64, item: &'static str) -> Change {
    Change::MailOut { to, seq, item: Bytes::from_static(item.as_bytes()) }
}

/// The mail deliveries within `wait`, until `n` have come.
fn mail(rx: &mpsc::Receiver<Delivery>, n: usize, wait: Duration) -> Vec<(u8, u8, u64, Bytes)> {
    let deadline = std::time::Instant::now() + wait;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(Delivery::Mail { to, from, seq, item }) => got.push((to, from, seq, item)),
            Ok(Delivery::Backlog { .. }) => {}
            Err(_) => break,
        }
    }
    got
}

#[test]
fn pg_the_carrier_hands_each_owned_partitions_mail_in_order() {
    let Some(pg) = TempPostgres::start("carrier") else { return };
    let (mut zero, mut one, mut two) = (open(&pg, 0), open(&pg, 1), open(&pg, 2));
    let (tx, rx) = mpsc::channel();
    let carrier = Carrier::start(&pg.url(), 3, Duration::from_millis(300), move |d| {
        let _ = tx.send(d);
    })
    .unwrap();
    // Partition 1 owned from its core's cursors (nothing applied yet).
    carrier.own(1, vec![(0, one.state().mail().applied_from(0)), (2, 0)]);
    zero.commit(&[out(1, 1, "a"), out(1, 2, "b"), out(2, 1, "not for 1")]).unwrap();
    two.commit(&[out(1, 1, "c")]).unwrap();
    carrier.ring();
    let got = mail(&rx, 3, Duration::from_secs(5));
    let b = |s: &'static str| Bytes::from_static(s.as_bytes());
    assert_eq!(got, [(1, 0, 1, b("a")), (1, 0, 2, b("b")), (1, 2, 1, b("c"))], "in order per source, only to 1");
    // Applied by partition 1's core: the rows leave with its turn.
    one.commit(&[
        Change::MailIn { from: 0, seq: 1 },
        Change::MailIn { from: 0, seq: 2 },
        Change::MailIn { from: 2, seq: 1 },
    ])
    .unwrap();
    carrier.applied(1, 0, 2);
    carrier.applied(1, 2, 1);
    // Not rung: the catch-up reads it.
    zero.commit(&[out(1, 3, "d")]).unwrap();
    assert_eq!(mail(&rx, 1, Duration::from_secs(5)), [(1, 0, 3, b("d"))], "within a poll, without a ring");
    // Not applied (lost on its way to the core): handed again a poll or two later.
    assert_eq!(mail(&rx, 1, Duration::from_secs(2)), [(1, 0, 3, b("d"))], "handed again while not applied");
    carrier.applied(1, 0, 3);
    std::thread::sleep(Duration::from_millis(100));
    while rx.try_recv().is_ok() {}
    assert!(mail(&rx, 1, Duration::from_millis(900)).is_empty(), "applied: not handed again");
    // A rewind never moves forward: the next item comes.
    carrier.rewind(1, 0, 9);
    zero.commit(&[out(1, 4, "e")]).unwrap();
    carrier.ring();
    assert_eq!(
        mail(&rx, 1, Duration::from_secs(2)),
        [(1, 0, 4, b("e"))],
        "the next item comes (a rewind never moves forward, and the catch-up would repair one that did)"
    );
    carrier.applied(1, 0, 4);
    // The core answered a gap: handed again from its cursor.
    carrier.rewind(1, 0, 2);
    carrier.ring();
    assert_eq!(mail(&rx, 2, Duration::from_secs(5)), [(1, 0, 3, b("d")), (1, 0, 4, b("e"))]);
    // PostgreSQL restarts: the carrier opens a session again.
    drop((zero, one, two));
    let mut pg = pg;
    pg.restart();
    let mut zero = open(&pg, 0);
    zero.commit(&[out(1, 5, "f")]).unwrap();
    assert_eq!(mail(&rx, 1, Duration::from_secs(10)), [(1, 0, 5, b("f"))], "after the store came back");
    // Disowned: nothing more.
    carrier.disown(1);
    carrier.ring();
    std::thread::sleep(Duration::from_millis(100));
    while rx.try_recv().is_ok() {}
    zero.commit(&[out(1, 6, "g")]).unwrap();
    carrier.ring();
    assert!(mail(&rx, 1, Duration::from_millis(900)).is_empty(), "a partition given back gets nothing here");
}

#[test]
fn pg_the_carrier_counts_each_owned_partitions_backlog() {
    let Some(pg) = TempPostgres::start("carrier-backlog") else { return };
    let mut zero = open(&pg, 0);
    zero.commit(&[out(1, 1, "a"), out(1, 2, "b"), out(2, 1, "c")]).unwrap();
    let (tx, rx) = mpsc::channel();
    let carrier = Carrier::start(&pg.url(), 3, Duration::from_millis(200), move |d| {
        let _ = tx.send(d);
    })
    .unwrap();
    carrier.own(0, vec![]);
    let backlog = std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(5)).ok())
        .find_map(|d| match d {
            Delivery::Backlog { from: 0, waiting } => Some(waiting),
            _ => None,
        })
        .expect("a count within a poll");
    assert_eq!(backlog, [(1, 2), (2, 1)]);
}

/// At most `WINDOW` items of one source are handed beyond what the node
/// says its core applied: the node's queue is bounded. A cursor the core
/// gave at `own` is where the carrier starts.
#[test]
fn pg_the_carrier_hands_a_window_of_items_beyond_what_was_applied() {
    use confab_server::store::WINDOW;
    let Some(pg) = TempPostgres::start("carrier-window") else { return };
    let mut zero = open(&pg, 0);
    let total = WINDOW + 88;
    let items: Vec<Change> =
        (1..=total).map(|seq| Change::MailOut { to: 1, seq, item: Bytes::from(seq.to_string()) }).collect();
    zero.commit(&items).unwrap();
    let (tx, rx) = mpsc::channel();
    let carrier = Carrier::start(&pg.url(), 3, Duration::from_secs(3), move |d| {
        let _ = tx.send(d);
    })
    .unwrap();
    // The core applied the first 10 already.
    carrier.own(1, vec![(0, 10)]);
    carrier.ring();
    let first = mail(&rx, usize::MAX, Duration::from_millis(1500));
    assert_eq!(first.len() as u64, WINDOW, "a window, no more");
    assert_eq!(first.first().map(|m| m.2), Some(11), "from the core's cursor");
    assert_eq!(first.last().map(|m| m.2), Some(10 + WINDOW));
    carrier.applied(1, 0, 10 + WINDOW);
    let rest = mail(&rx, usize::MAX, Duration::from_millis(1500));
    assert_eq!(rest.iter().map(|m| m.2).collect::<Vec<_>>(), (11 + WINDOW..=total).collect::<Vec<_>>());
}
