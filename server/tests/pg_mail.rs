//! The mail carrier of a node (`store::Carrier`, docs/PARTITIONS.md,
//! "Mail") against a PostgreSQL of the test's own (skipped without
//! PostgreSQL unless `CONFAB_REQUIRE_CLUSTER=1`): items committed by one
//! partition's store reach the owner of their target in order, when rung
//! and by the catch-up without a ring, again after a rewind, never after
//! being disowned, across a restart of PostgreSQL; each owned partition's
//! backlog is counted; the router's lookups of OIDC subjects are answered,
//! with the store's error while it is down.

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
            Ok(_) => {}
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

/// The lookups' answers within `wait`, until `n` have come.
fn subjects(rx: &mpsc::Receiver<Delivery>, n: usize, wait: Duration) -> Vec<(u64, Result<Option<String>, String>)> {
    let deadline = std::time::Instant::now() + wait;
    let mut got = Vec::new();
    while got.len() < n {
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(Delivery::Subject { tag, bound }) => got.push((tag, bound)),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    got
}

/// The carrier answers the router's lookups of OIDC subjects in the order
/// asked: the name a subject is bound to, none for one never bound, and
/// the store's error while it is down (no frame waits for the store to
/// come back), then answers again once it is back.
#[test]
fn pg_the_carrier_looks_up_oidc_subjects_and_says_when_it_cannot() {
    use confab_proto::server::oidc_subject_key;
    let Some(mut pg) = TempPostgres::start("carrier-subjects") else { return };
    let mut zero = open(&pg, 0);
    let (bound, unbound) =
        (oidc_subject_key("https://idp.test", "sub-1"), oidc_subject_key("https://idp.test", "sub-2"));
    zero.commit(&[Change::OidcSubjectBound { subject: bound, username: "alice".to_owned() }]).unwrap();
    let (tx, rx) = mpsc::channel();
    let carrier = Carrier::start(&pg.url(), 3, Duration::from_millis(200), move |d| {
        let _ = tx.send(d);
    })
    .unwrap();
    carrier.subject(1, unbound);
    carrier.subject(2, bound);
    assert_eq!(subjects(&rx, 2, Duration::from_secs(10)), vec![(1, Ok(None)), (2, Ok(Some("alice".to_owned())))]);
    pg.stop();
    carrier.subject(3, bound);
    let got = subjects(&rx, 1, Duration::from_secs(30));
    assert!(matches!(got.as_slice(), [(3, Err(_))]), "{got:?}");
    pg.restart();
    carrier.subject(4, bound);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut tag = 4;
    loop {
        let got = subjects(&rx, 1, Duration::from_secs(10));
        if got == vec![(tag, Ok(Some("alice".to_owned())))] {
            break;
        }
        // Asked while PostgreSQL was still starting: asked again.
        assert!(matches!(got.as_slice(), [(t, Err(_))] if *t == tag), "{got:?}");
        assert!(std::time::Instant::now() < deadline, "no answer once PostgreSQL is back");
        tag += 1;
        carrier.subject(tag, bound);
    }
}

/// A node serving a split state (`Node::bind_split`, four partitions on
/// this PostgreSQL) routes a frame carrying an OIDC token to the home of
/// the account its subject is bound to, which the carrier looks up: a user
/// renamed at the provider, whose new name's home is another partition,
/// keeps their one account at its home (routed by the new name, that other
/// partition would make a second account for the same subject), and so does
/// a new subject whose two frames under two names come at once.
#[test]
fn pg_a_split_node_routes_oidc_frames_to_the_home_of_the_bound_account() {
    use confab_proto::server::OidcConfig;
    use confab_proto::wire::{FetchKey, Jwks, Message, Request};
    use confab_server::runtime::{Node, NodeConfig};
    use confab_transports::link::Link as _;
    use rand::SeedableRng as _;

    let Some(pg) = TempPostgres::start("split-oidc") else { return };
    let parts = Partitions { index: 0, count: 4 };
    let named = |prefix: &str, home: u8| {
        (0..).map(|i| format!("{prefix}{i}")).find(|n| parts.home_of_user(n) == home).expect("a name at that home")
    };
    let (name, renamed) = (named("dora", 1), named("renamed", 2));
    let mut idp = confab_sim::TestIdp::new(&mut rand::rngs::StdRng::from_seed([7; 32]), Duration::from_secs(300));
    let mut server = confab_proto::ServerConfig { partitions: parts, ..config() };
    server.oidc = Some(OidcConfig::new(confab_sim::IDP_ISSUER, confab_sim::IDP_AUDIENCE, idp.jwks_json()));
    let lease = || LeaseConfig::new("split-node".to_owned(), Duration::from_secs(5), true);
    let open_all = |server: &confab_proto::ServerConfig| -> Vec<(u8, PgStore, confab_proto::server::State)> {
        (0..4)
            .map(|index| {
                let c = confab_proto::ServerConfig { partitions: Partitions { index, count: 4 }, ..server.clone() };
                let (store, state) = PgStore::open_leased(&pg.url(), &c, Init::Allow, None, lease()).unwrap();
                (index, store, state)
            })
            .collect()
    };
    let made = confab_transports::tls::ServerIdentity::self_signed(&["localhost".to_owned()]).unwrap();
    let mut node_config = NodeConfig::new(server.clone(), "127.0.0.1:0".parse().unwrap(), made.identity);
    (node_config.tcp, node_config.quic, node_config.ws) = (None, None, None);
    let node = Node::bind_split(node_config, open_all(&server), &pg.url(), Duration::from_millis(200)).unwrap();
    let handle = node.handle();
    let running = std::thread::spawn(move || node.run());

    // Asks for `of`'s key with `token` on a new connection.
    let send = |token: String, of: &str| {
        let now_ms = confab_server::runtime::now().unix_ms;
        let body = FetchKey { username: of.into() }.into();
        let frame = Message::Request(Request { request_id: 1, timestamp_ms: now_ms, body }).to_bytes(token.as_bytes());
        let mut link = handle.connect_mem();
        link.send(&frame).unwrap();
        link
    };
    // The answer's code, or the close's.
    let answer = |mut link: confab_transports::mem::MemLink| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        loop {
            let bytes = link.recv(deadline).unwrap().expect("an answer within 10 s");
            got.extend_from_slice(&bytes);
            if let Some(code) = common::decode_all(&got).iter().find_map(|m| match m {
                Message::Response(r) if r.request_id == 1 => Some(r.code),
                Message::Close(c) => Some(c.code),
                _ => None,
            }) {
                return code;
            }
        }
    };
    let ask = |token: String, of: &str| answer(send(token, of));
    let now_ms = confab_server::runtime::now().unix_ms;
    // The first request makes the account at the home of its name.
    assert_eq!(ask(idp.token_for_subject(now_ms, &name, "sub-dora"), &name), 200);
    // Renamed at the provider: the same subject reaches the same account.
    assert_eq!(ask(idp.token_for_subject(now_ms, &renamed, "sub-dora"), &name), 200);
    // A token naming no subject goes to partition 0, which refuses it.
    assert_eq!(ask("not.a.jwt".to_owned(), &name), 401);
    // Two connections of one new subject under two names at once: one account.
    let (eve, eve_renamed) = (named("eve", 2), named("eve-renamed", 3));
    let first = send(idp.token_for_subject(now_ms, &eve, "sub-eve"), &name);
    let second = send(idp.token_for_subject(now_ms, &eve_renamed, "sub-eve"), &name);
    assert_eq!(answer(second), 200);
    // Answered, or (at once) replaced by the second login of the same account.
    assert!([200, 409].contains(&answer(first)));
    // The same, each behind a `jwks` that holds it at partition 0: both are
    // let go in one round, and both resolved before either reaches its core.
    let (fay, fay_renamed) = (named("fay", 3), named("fay-renamed", 2));
    let behind_jwks = |token: String| {
        let jwks = Message::Request(Request { request_id: 9, timestamp_ms: now_ms, body: Jwks {}.into() });
        let body = FetchKey { username: name.clone() }.into();
        let frame = Message::Request(Request { request_id: 1, timestamp_ms: now_ms, body }).to_bytes(token.as_bytes());
        [jwks.to_bytes(b""), frame].concat()
    };
    let (mut first, mut second) = (handle.connect_mem(), handle.connect_mem());
    let (one, two) = (
        behind_jwks(idp.token_for_subject(now_ms, &fay, "sub-fay")),
        behind_jwks(idp.token_for_subject(now_ms, &fay_renamed, "sub-fay")),
    );
    first.send(&one).unwrap();
    second.send(&two).unwrap();
    let (a, b) = (answer(first), answer(second));
    assert!([(200, 200), (409, 200), (200, 409)].contains(&(a, b)), "{a} {b}");
    handle.stop();
    running.join().unwrap().unwrap();

    let users: Vec<usize> = open_all(&server).iter().map(|(_, _, state)| state.accounts().user_count()).collect();
    // Dora at 1, Eve at 2, Fay at 3 or 2 (whichever of her frames came first).
    assert_eq!((users[0], users[1], users.iter().sum::<usize>()), (0, 1, 3), "one account each: {users:?}");
}
