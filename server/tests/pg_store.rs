//! The PostgreSQL store against a real server's changes, on a PostgreSQL of
//! the test's own (skipped without PostgreSQL unless
//! `CONFAB_REQUIRE_CLUSTER=1`): what is committed comes back equal to the
//! server's state, through compaction and restarts; the schema is migrated
//! once; one owner at a time, through a lease whose token fences every
//! commit; a lost connection is waited out without losing or doubling a commit.

mod common;

use common::{applied, config, scenario};
use std::time::Duration;

use confab_proto::server::State;
use confab_server::store::{FORMAT_VERSION, Init, LeaseConfig, MIGRATIONS, PgStore, StoreError};
use confab_tests::postgres::TempPostgres;

fn sql(pg: &TempPostgres) -> postgres::Client {
    postgres::Client::connect(&pg.url(), postgres::NoTls).expect("connect")
}

/// Every session of the store's database but this one's is killed.
fn cut_every_connection(pg: &TempPostgres) {
    let query = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE pid <> pg_backend_pid() AND datname = 'postgres'";
    sql(pg).execute(query, &[]).unwrap();
}

fn count(pg: &TempPostgres, query: &str) -> i64 {
    sql(pg).query_one(query, &[]).expect("query").get(0)
}

#[test]
fn pg_round_trip_through_compaction_and_restarts_equals_the_servers_state() {
    let Some(pg) = TempPostgres::start("round-trip") else { return };
    let net = scenario();
    let half = net.turns.len() / 2;
    {
        let (mut store, fresh) = PgStore::open(&pg.url(), &config()).unwrap();
        assert_eq!(fresh, applied(&[]));
        store.set_compact_every(7);
        for turn in &net.turns[..half] {
            store.commit(turn).unwrap();
        }
        assert_eq!(store.state(), &applied(&net.turns[..half]));
        let rows = count(&pg, "SELECT count(*) FROM confab_changes");
        assert_eq!(rows as u64, store.log_len() + store.covered_len());
    }
    // A second start: the schema is not migrated again, the state comes back.
    let (mut store, loaded) = PgStore::open(&pg.url(), &config()).unwrap();
    assert_eq!(loaded, applied(&net.turns[..half]));
    assert_eq!(count(&pg, "SELECT count(*) FROM confab_schema"), MIGRATIONS.len() as i64);
    for turn in &net.turns[half..] {
        store.commit(turn).unwrap();
    }
    store.compact().unwrap();
    drop(store);
    let (_, loaded) = PgStore::open(&pg.url(), &config()).unwrap();
    assert_eq!(&loaded, net.server.state());
}

fn lease(node: &str, ttl_ms: u64, standby: bool) -> LeaseConfig {
    LeaseConfig::new(node.to_owned(), Duration::from_millis(ttl_ms), standby)
}

fn open(pg: &TempPostgres, lease: LeaseConfig) -> Result<(PgStore, State), StoreError> {
    PgStore::open_leased(&pg.url(), &config(), Init::Allow, None, lease)
}

#[test]
fn pg_a_live_owner_keeps_its_lease_and_a_second_node_is_refused() {
    let Some(pg) = TempPostgres::start("live-owner") else { return };
    let net = scenario();
    let (mut first, _) = open(&pg, lease("first", 1500, false)).unwrap();
    first.commit(&net.turns[0]).unwrap();
    // Its lease is renewed (every 500 ms) for longer than it lasts: a second node sees it alive.
    let err = open(&pg, lease("second", 1500, false)).unwrap_err();
    match &err {
        StoreError::LeaseHeld { holder, token, .. } => assert_eq!((holder.as_str(), *token), ("first", first.token())),
        other => panic!("expected LeaseHeld, got {other}"),
    }
    assert!(err.to_string().contains("standby"), "says how to stand by: {err}");
    std::thread::sleep(Duration::from_millis(2000));
    first.commit(&net.turns[1]).unwrap();
    assert!(first.lease_watch().lost().is_none());
    // Connections cut: the renewing thread and the commits reconnect; the lease stays this node's.
    cut_every_connection(&pg);
    first.commit(&net.turns[2]).unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    first.commit(&net.turns[3]).unwrap();
    assert!(first.lease_watch().lost().is_none());
    // A clean stop gives the lease back at once.
    let token = first.token();
    drop(first);
    let left: bool = sql(&pg)
        .query_one("SELECT expires_at <= clock_timestamp() FROM confab_lease WHERE partition = 0", &[])
        .unwrap()
        .get(0);
    assert!(left, "the dropped store released its lease");
    let (second, loaded) = open(&pg, lease("second", 60_000, false)).unwrap();
    assert!(second.token() > token, "every takeover raises the token");
    assert_eq!(loaded, applied(&net.turns[..4]));
}

#[test]
fn pg_a_paused_owner_is_fenced_once_a_standby_took_over_and_loses_nothing_it_committed() {
    let Some(pg) = TempPostgres::start("fenced") else { return };
    let net = scenario();
    // The first node renews too late (a process paused for longer than its lease).
    let mut paused = lease("paused", 1000, false);
    paused.renew_every = Duration::from_secs(3600);
    let (mut first, _) = open(&pg, paused).unwrap();
    first.commit(&net.turns[0]).unwrap();
    // A standby waits for the lease, then takes the partition with the first's commit in it.
    let url = pg.url();
    let standby = std::thread::spawn(move || {
        PgStore::open_leased(&url, &config(), Init::Allow, None, lease("standby", 60_000, true)).unwrap()
    });
    let (mut second, loaded) = standby.join().unwrap();
    assert_eq!(loaded, applied(&net.turns[..1]));
    assert!(second.token() > first.token());
    second.commit(&net.turns[1]).unwrap();
    // The first resumes: its commit writes nothing, and it knows it lost the lease.
    let err = first.commit(&net.turns[1]).unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    assert!(first.lease_watch().lost().is_some(), "the node is told to stop");
    // Nor can it write a snapshot.
    assert!(matches!(first.compact().unwrap_err(), StoreError::LeaseLost { .. }));
    drop(first);
    // The old owner's drop did not release the new owner's lease.
    second.commit(&net.turns[2]).unwrap();
    drop(second);
    let (_, loaded) = open(&pg, lease("third", 60_000, false)).unwrap();
    assert_eq!(loaded, applied(&net.turns[..3]), "each commit once, the fenced one never");
}

#[test]
fn pg_a_renewal_that_hangs_loses_the_lease_within_it() {
    let Some(pg) = TempPostgres::start("renewal-hangs") else { return };
    let (store, _) = open(&pg, lease("stuck", 2000, false)).unwrap();
    // The lease's row is locked away from the renewing thread (a database that stops answering it).
    let mut admin = sql(&pg);
    let mut tx = admin.transaction().unwrap();
    tx.batch_execute("LOCK TABLE confab_lease IN ACCESS EXCLUSIVE MODE").unwrap();
    let locked = std::time::Instant::now();
    while store.lease_watch().lost().is_none() && locked.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(20));
    }
    tx.rollback().unwrap();
    assert!(store.lease_watch().lost().is_some(), "a node that cannot renew for a whole lease stops");
    assert!(locked.elapsed() < Duration::from_millis(2600), "told within the lease: {:?}", locked.elapsed());
}

#[test]
fn pg_a_slow_load_keeps_the_lease_and_a_standby_does_not_take_it_meanwhile() {
    let Some(pg) = TempPostgres::start("slow-load") else { return };
    let net = scenario();
    let (mut store, _) = open(&pg, lease("first", 60_000, false)).unwrap();
    store.commit(&net.turns[0]).unwrap();
    drop(store);
    // The state cannot be read for longer than the lease (a large state, a slow database).
    let mut admin = sql(&pg);
    let mut tx = admin.transaction().unwrap();
    tx.batch_execute("LOCK TABLE confab_head IN ACCESS EXCLUSIVE MODE").unwrap();
    let url = pg.url();
    let slow = std::thread::spawn(move || {
        PgStore::open_leased(&url, &config(), Init::Allow, None, lease("slow", 1000, false))
    });
    std::thread::sleep(Duration::from_millis(300));
    let url = pg.url();
    let standby = std::thread::spawn(move || {
        PgStore::open_leased(&url, &config(), Init::Allow, None, lease("standby", 60_000, true))
    });
    std::thread::sleep(Duration::from_millis(2500));
    tx.rollback().unwrap();
    let (mut slow, loaded) = slow.join().unwrap().unwrap();
    assert_eq!(loaded, applied(&net.turns[..1]));
    assert!(slow.lease_watch().lost().is_none(), "the lease was renewed while loading");
    slow.commit(&net.turns[1]).unwrap();
    assert!(!standby.is_finished(), "the standby still waits");
    drop(slow);
    let (_, loaded) = standby.join().unwrap().unwrap();
    assert_eq!(loaded, applied(&net.turns[..2]));
}

#[test]
fn pg_an_empty_database_a_node_served_before_is_refused_to_a_standby_with_a_fresh_directory() {
    let Some(pg) = TempPostgres::start("empty-standby") else { return };
    let net = scenario();
    let (mut store, _) = open(&pg, lease("first", 60_000, false)).unwrap();
    store.commit(&net.turns[0]).unwrap();
    drop(store);
    // The state is lost (a recreated database), the lease's row kept.
    sql(&pg)
        .batch_execute(
            "DROP TABLE confab_changes, confab_snapshot, confab_head, confab_meta, confab_outbox, confab_oidc_subjects; \
                            DELETE FROM confab_schema",
        )
        .unwrap();
    let dir = confab_tests::procs::TempDir::new("pg-empty-standby");
    let fresh = dir.path().join("fresh");
    let err = PgStore::open_leased(&pg.url(), &config(), Init::IfNew, Some(&fresh), lease("standby", 60_000, true))
        .unwrap_err();
    assert!(matches!(&err, StoreError::PostgresEmptied { holder, .. } if holder == "first"), "{err}");
    assert!(err.to_string().contains("--init"), "{err}");
    // --init: started over on purpose.
    let (_, state) =
        PgStore::open_leased(&pg.url(), &config(), Init::Allow, Some(&fresh), lease("standby", 60_000, true)).unwrap();
    assert_eq!(state, applied(&[]));
}

/// A cluster started and stopped before anyone registered (nothing
/// committed) starts again: its database is initialized, not lost, for the
/// node that made it and for a standby with a fresh directory alike.
#[test]
fn pg_a_store_nothing_was_committed_to_starts_again_on_its_directory_and_on_a_standby() {
    let Some(pg) = TempPostgres::start("never-committed") else { return };
    let dir = confab_tests::procs::TempDir::new("pg-never-committed");
    let used = dir.path().join("n1");
    std::fs::create_dir_all(&used).unwrap();
    let open = |data: &std::path::Path, node: &str| {
        PgStore::open_leased(&pg.url(), &config(), Init::IfNew, Some(data), lease(node, 60_000, true))
    };
    drop(open(&used, "n1").unwrap());
    // The first start wrote its pin: the directory was used.
    std::fs::write(used.join("server.pin"), "sha256//x\n").unwrap();
    drop(open(&used, "n1").expect("the node that made it starts again"));
    let (_, state) = open(&dir.path().join("n2"), "n2").expect("a standby with a fresh directory takes over");
    assert_eq!(state, applied(&[]));
}

#[test]
fn pg_a_lost_connection_is_waited_out_and_nothing_is_lost_or_doubled() {
    let Some(mut pg) = TempPostgres::start("reconnect") else { return };
    let net = scenario();
    let (mut store, _) = PgStore::open(&pg.url(), &config()).unwrap();
    store.commit(&net.turns[0]).unwrap();
    // Every connection cut: the next commit reconnects, finds the head it
    // left, and commits.
    cut_every_connection(&pg);
    store.commit(&net.turns[1]).unwrap();
    // PostgreSQL itself crashes and comes back.
    pg.restart();
    store.commit(&net.turns[2]).unwrap();
    for turn in &net.turns[3..] {
        store.commit(turn).unwrap();
    }
    drop(store);
    let (_, loaded) = PgStore::open(&pg.url(), &config()).unwrap();
    assert_eq!(&loaded, net.server.state(), "every turn exactly once");

    // PostgreSQL gone for longer than the store waits: the commit fails.
    let (mut store, _) = PgStore::open(&pg.url(), &config()).unwrap();
    store.set_reconnect_for(std::time::Duration::from_millis(300));
    pg.stop();
    let err = store.commit(&net.turns[0]).unwrap_err();
    assert!(matches!(err, StoreError::Postgres { .. }), "{err}");
}

/// A new store is of this build's format; one of format 4 (its snapshot
/// without `State::retry_keys`, the mail numbers and the pending requests),
/// 5 (without the last two) or 6 (without the pending requests) is read as it is and rewritten in this format (a snapshot) when
/// a node opens it.
#[test]
fn pg_migrates_formats_4_to_6() {
    for old in [4, 5, 6] {
        migrates_from(old);
    }
}

fn migrates_from(old: u32) {
    use sha2::{Digest as _, Sha256};
    let Some(pg) = TempPostgres::start(&format!("format-{old}")) else { return };
    let net = scenario();
    let format =
        || -> i32 { sql(&pg).query_one("SELECT format FROM confab_head WHERE partition = 0", &[]).unwrap().get(0) };
    {
        let (mut store, _) = PgStore::open(&pg.url(), &config()).unwrap();
        assert_eq!(format(), FORMAT_VERSION as i32, "a new store");
        assert_eq!(count(&pg, "SELECT count(*) FROM confab_snapshot"), 0, "a new store needs no migration");
        for turn in &net.turns {
            store.commit(turn).unwrap();
        }
        store.compact().unwrap();
    }
    // The older format: the snapshot without the fields appended since (empty maps, a zero
    // byte each), its checksum (docs/ARCHITECTURE.md) and the head's (the log after it is
    // empty) made again.
    let mut db = sql(&pg);
    let row = db.query_one("SELECT upto, state FROM confab_snapshot", &[]).unwrap();
    let (upto, state): (i64, Vec<u8>) = (row.get(0), row.get(1));
    let strip = common::fields_since(old);
    assert!(state[state.len() - strip..].iter().all(|&b| b == 0));
    let state = &state[..state.len() - strip];
    let sum: [u8; 32] = Sha256::new()
        .chain_update(b"confab-store snapshot\0")
        .chain_update(upto.to_be_bytes())
        .chain_update(state)
        .finalize()
        .into();
    db.execute("UPDATE confab_snapshot SET state = $1, sum = $2", &[&state, &&sum[..]]).unwrap();
    db.execute("UPDATE confab_head SET sum = $1 WHERE seq = $2", &[&&sum[..], &upto]).unwrap();
    db.execute("UPDATE confab_head SET format = $1", &[&(old as i32)]).unwrap();
    let (store, loaded) = PgStore::open(&pg.url(), &config()).unwrap();
    assert_eq!(&loaded, net.server.state());
    assert_eq!(format(), FORMAT_VERSION as i32, "migrated at the open");
    drop(store);
    let snapshot: Vec<u8> = db.query_one("SELECT state FROM confab_snapshot", &[]).unwrap().get(0);
    assert_eq!(postcard::from_bytes::<State>(&snapshot).unwrap(), *net.server.state());
    let (_, again) = PgStore::open(&pg.url(), &config()).unwrap();
    assert_eq!(&again, net.server.state());
}

#[test]
fn pg_refuses_a_database_of_a_newer_schema_and_a_damaged_log() {
    let Some(pg) = TempPostgres::start("refusals") else { return };
    let net = scenario();
    {
        let (mut store, _) = PgStore::open(&pg.url(), &config()).unwrap();
        for turn in &net.turns[..4] {
            store.commit(turn).unwrap();
        }
    }
    // A change deleted from the middle of the log.
    sql(&pg).execute("DELETE FROM confab_changes WHERE seq = 2", &[]).unwrap();
    let err = PgStore::open(&pg.url(), &config()).unwrap_err();
    assert!(err.to_string().contains("change 2 is missing"), "{err}");
    // A record format this build does not read.
    sql(&pg).execute("UPDATE confab_head SET format = 3", &[]).unwrap();
    let err = PgStore::open(&pg.url(), &config()).unwrap_err();
    assert!(matches!(err, StoreError::VersionMismatch { found: 3, .. }), "{err}");
    sql(&pg).execute("UPDATE confab_head SET format = $1", &[&(FORMAT_VERSION as i32)]).unwrap();
    // A schema version from the future.
    sql(&pg).execute("INSERT INTO confab_schema (version) VALUES (999)", &[]).unwrap();
    let err = PgStore::open(&pg.url(), &config()).unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { found: 999, .. }), "{err}");
}

#[test]
fn pg_an_empty_database_for_a_used_data_directory_is_refused_unless_init() {
    let Some(pg) = TempPostgres::start("empty-refused") else { return };
    let dir = confab_tests::procs::TempDir::new("pg-empty-data");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // A new directory: an empty database is a new store.
    let fresh = dir.path().join("fresh");
    drop(PgStore::open_with(&pg.url(), &config(), Init::IfNew, Some(&fresh)).unwrap());
    sql(&pg)
        .batch_execute(
            "DROP TABLE confab_changes, confab_snapshot, confab_head, confab_meta, confab_outbox, confab_oidc_subjects, \
             confab_schema",
        )
        .unwrap();
    // A directory that served before (its pin, its SQLite store) and a database with nothing in it:
    // a wrong URL, a recreated database, or --store added to a SQLite directory.
    std::fs::write(data.join("server.pin"), "sha256/x\n").unwrap();
    std::fs::write(data.join("confab.db"), b"SQLite format 3\0").unwrap();
    let err = PgStore::open_with(&pg.url(), &config(), Init::IfNew, Some(&data)).unwrap_err();
    assert!(matches!(err, StoreError::PostgresEmpty { sqlite: true, .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("server.pin") && text.contains("confab.db") && text.contains("--init"), "{text}");
    // Only the lease's and the schema's bookkeeping exist; no state table was created.
    let tables = count(
        &pg,
        "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'confab_%' \
                             AND tablename NOT IN ('confab_lease', 'confab_schema', 'confab_nodes')",
    );
    assert_eq!(tables, 0, "nothing was changed");
    assert_eq!(count(&pg, "SELECT count(*) FROM confab_schema"), 0, "nothing was migrated");
    // --init: started over on purpose.
    let (_, state) = PgStore::open_with(&pg.url(), &config(), Init::Allow, Some(&data)).unwrap();
    assert_eq!(state, applied(&[]));
}

#[test]
fn pg_a_statement_refused_by_a_live_session_is_an_error_not_a_lost_lock() {
    let Some(pg) = TempPostgres::start("cancelled") else { return };
    let net = scenario();
    // A failed write gives no lease back: a short one, so that the reopening below waits little.
    let (mut store, _) = open(&pg, lease("cancelled", 2000, false)).unwrap();
    store.commit(&net.turns[0]).unwrap();
    // Another session holds the head's row, so the store's next commit waits; it is then cancelled.
    let mut blocker = sql(&pg);
    let mut tx = blocker.transaction().unwrap();
    tx.execute("SELECT * FROM confab_head FOR UPDATE", &[]).unwrap();
    let url = pg.url();
    let canceller = std::thread::spawn(move || {
        let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            let cancelled: i64 = admin
                .query_one(
                    "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity \
                     WHERE application_name = 'confab-server' AND wait_event_type = 'Lock' \
                     AND query LIKE 'WITH l AS%'",
                    &[],
                )
                .unwrap()
                .get(0);
            if cancelled > 0 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("the store's commit never waited on the lock");
    });
    let err = store.commit(&net.turns[1]).unwrap_err();
    canceller.join().unwrap();
    tx.rollback().unwrap();
    assert!(matches!(err, StoreError::Postgres { .. }), "{err}");
    assert!(err.to_string().contains("canceling statement"), "PostgreSQL's reason, not 'db error': {err}");
    drop(store);
    let (_, loaded) = PgStore::open(&pg.url(), &config()).unwrap();
    assert_eq!(loaded, applied(&net.turns[..1]), "the cancelled commit wrote nothing");
}

#[test]
fn pg_refuses_a_server_that_does_not_fsync_and_names_postgresqls_reasons() {
    let Some(pg) = TempPostgres::start_with("no-fsync", &["fsync=off"]) else { return };
    let err = PgStore::open(&pg.url(), &config()).unwrap_err();
    assert!(matches!(err, StoreError::PostgresNotDurable { .. }), "{err}");
    assert!(err.to_string().contains("fsync = off"), "{err}");
    let wrong_user = pg.url().replace("confab@", "nobody_here@");
    let err = PgStore::open(&wrong_user, &config()).unwrap_err();
    assert!(err.to_string().contains("nobody_here"), "PostgreSQL's reason, not 'db error': {err}");
}

/// The mail of a split state (docs/PARTITIONS.md) lives in `confab_outbox`:
/// a turn's `MailOut` items are inserted and its `MailIn` items deleted in
/// the turn's own transaction (fenced like the rest: a fenced commit leaves
/// the table as it was), and the target reads them in order.
#[test]
fn pg_mail_enters_and_leaves_the_outbox_with_its_turn() {
    use bytes::Bytes;
    use confab_proto::server::Change;
    let Some(pg) = TempPostgres::start("outbox") else { return };
    let rows = |pg: &TempPostgres| -> Vec<(i32, i32, i64, Vec<u8>)> {
        sql(pg)
            .query("SELECT source, target, seq, item FROM confab_outbox ORDER BY source, target, seq", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    };
    let mut paused = lease("p0", 1000, false);
    paused.renew_every = Duration::from_secs(3600);
    let (mut store, _) = open(&pg, paused).unwrap();
    let out = |to, seq, item: &'static [u8]| Change::MailOut { to, seq, item: Bytes::from_static(item) };
    store.commit(&[out(1, 1, b"a"), out(2, 1, b"b"), out(1, 2, b"c")]).unwrap();
    assert_eq!(
        rows(&pg),
        [(0, 1, 1, b"a".to_vec()), (0, 1, 2, b"c".to_vec()), (0, 2, 1, b"b".to_vec())],
        "each item, from this store's partition, with its number"
    );
    assert_eq!(store.mail_backlog().unwrap(), [(1, 2), (2, 1)], "the items waiting at each target");
    // Mail to this partition (partition 1's, written here as its store would): read in order.
    sql(&pg)
        .batch_execute(
            "INSERT INTO confab_outbox (source, target, seq, item) VALUES (1, 0, 2, 'y'), (1, 0, 1, 'x'), (1, 0, 3, 'z'), \
             (2, 0, 1, 'w')",
        )
        .unwrap();
    assert_eq!(store.mail_from(1, 0, 10).unwrap(), [(1, b"x".to_vec()), (2, b"y".to_vec()), (3, b"z".to_vec())]);
    assert_eq!(store.mail_from(1, 1, 1).unwrap(), [(2, b"y".to_vec())], "after a number, at most a limit");
    assert_eq!(store.mail_from(2, 0, 10).unwrap(), [(1, b"w".to_vec())]);
    assert_eq!(store.mail_backlog().unwrap(), [(1, 2), (2, 1)], "only this partition's mail counts");
    // Applying them removes them, in the applying turn.
    store.commit(&[Change::MailIn { from: 1, seq: 1 }, Change::MailIn { from: 1, seq: 2 }]).unwrap();
    assert_eq!(store.mail_from(1, 0, 10).unwrap(), [(3, b"z".to_vec())]);
    assert_eq!(store.state().mail().applied_from(1), 2);
    assert_eq!(store.state().mail().next_to(1), 3);
    // A standby takes over; the old owner's commit is fenced: no item in, none out.
    let url = pg.url();
    let standby = std::thread::spawn(move || {
        PgStore::open_leased(&url, &config(), Init::Allow, None, lease("standby", 60_000, true)).unwrap()
    });
    let (mut second, loaded) = standby.join().unwrap();
    assert_eq!(loaded.mail().applied_from(1), 2, "the numbers are in the state");
    let before = rows(&pg);
    let err = store.commit(&[out(1, 3, b"d"), Change::MailIn { from: 1, seq: 3 }]).unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    assert_eq!(rows(&pg), before, "a fenced turn's mail neither enters nor leaves");
    // The new owner carries on from the numbers.
    second.commit(&[Change::MailIn { from: 1, seq: 3 }]).unwrap();
    assert!(second.mail_from(1, 0, 10).unwrap().is_empty());
}

/// `config()` for partition `index` of a state split into `count`.
fn in_partition(index: u8, count: u8) -> confab_proto::ServerConfig {
    confab_proto::ServerConfig { partitions: confab_proto::server::Partitions { index, count }, ..config() }
}

/// The partitions of a split state (docs/PARTITIONS.md) share one database
/// and nothing else: each has its own log, snapshot, head and lease, so two
/// nodes starting together on a new database (and migrating it once) own
/// two partitions at once, each loads only its own, and a takeover of one
/// fences that one's old owner only.
#[test]
fn pg_partitions_keep_their_own_log_snapshot_head_and_lease() {
    let Some(pg) = TempPostgres::start("partitions") else { return };
    let net = scenario();
    let half = net.turns.len() / 2;
    let open_in = |index: u8, lease: LeaseConfig| {
        PgStore::open_leased(&pg.url(), &in_partition(index, 2), Init::Allow, None, lease)
    };
    // Two nodes start together on an empty database: one makes the schema, the other waits for it.
    let barrier = std::sync::Barrier::new(2);
    let (zero, one) = std::thread::scope(|s| {
        let start = |index: u8, node: &'static str| {
            let barrier = &barrier;
            let open_in = &open_in;
            s.spawn(move || {
                let mut paused = lease(node, 400, false);
                if index == 1 {
                    // Never renewed: a standby takes it once it expired.
                    paused.renew_every = Duration::from_secs(3600);
                }
                barrier.wait();
                open_in(index, paused)
            })
        };
        let (a, b) = (start(0, "a"), start(1, "b"));
        (a.join().unwrap(), b.join().unwrap())
    });
    let ((mut zero, fresh_zero), (mut one, fresh_one)) = (zero.unwrap(), one.unwrap());
    assert_eq!((fresh_zero, fresh_one), (applied(&[]), applied(&[])));
    assert_eq!((zero.partition(), one.partition()), (0, 1));
    assert_eq!(count(&pg, "SELECT count(*) FROM confab_schema"), MIGRATIONS.len() as i64, "migrated once");
    zero.set_compact_every(5);
    // Interleaved: partition 0's snapshots and the deletions after them run while partition 1 has a log.
    for (i, turn) in net.turns.iter().enumerate() {
        if i < half {
            one.commit(turn).unwrap();
        }
        zero.commit(turn).unwrap();
    }
    assert_eq!(one.state(), &applied(&net.turns[..half]));
    let rows = |p: i32| count(&pg, &format!("SELECT count(*) FROM confab_changes WHERE partition = {p}")) as u64;
    assert_eq!(rows(0), zero.log_len() + zero.covered_len());
    assert_eq!(rows(1), one.log_len() + one.covered_len());
    assert_eq!(
        count(&pg, "SELECT count(*) FROM confab_snapshot WHERE partition = 1"),
        0,
        "partition 0 compacted alone"
    );
    // Partition 1's lease expires (its owner paused); a standby takes it and loads its state only.
    let url = pg.url();
    let standby = std::thread::spawn(move || {
        PgStore::open_leased(&url, &in_partition(1, 2), Init::Allow, None, lease("standby", 60_000, true)).unwrap()
    });
    let (mut second, loaded) = standby.join().unwrap();
    assert_eq!(loaded, applied(&net.turns[..half]));
    assert!(second.token() > one.token());
    let err = one.commit(&net.turns[half]).unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    assert!(err.to_string().contains("partition 1"), "{err}");
    assert_eq!(one.state(), &applied(&net.turns[..half]), "nothing of a fenced turn counts");
    // Partition 0's owner never noticed; partition 1's new owner carries on.
    zero.commit(&[]).unwrap();
    assert!(zero.lease_watch().lost().is_none());
    for turn in &net.turns[half..] {
        second.commit(turn).unwrap();
    }
    drop((zero, one, second));
    // Each comes back as it was committed, the whole scenario in both now.
    let (_, back_zero) = open_in(0, lease("c", 60_000, false)).unwrap();
    let (_, back_one) = open_in(1, lease("d", 60_000, false)).unwrap();
    assert_eq!(&back_zero, net.server.state());
    assert_eq!(&back_one, net.server.state());
}

/// A store is made for one partition count (`confab_meta`'s `partitions`):
/// a node whose state is split otherwise is refused before it changes
/// anything, its lease included.
#[test]
fn pg_a_store_made_for_another_partition_count_is_refused() {
    let Some(pg) = TempPostgres::start("partition-count") else { return };
    drop(PgStore::open_leased(&pg.url(), &in_partition(0, 2), Init::Allow, None, lease("a", 60_000, false)).unwrap());
    let made_for = || -> String {
        sql(&pg).query_one("SELECT value FROM confab_meta WHERE key = 'partitions'", &[]).unwrap().get(0)
    };
    assert_eq!(made_for(), "2");
    let lease_of = |p: i32| -> Option<(String, i64)> {
        sql(&pg)
            .query_opt("SELECT holder, token FROM confab_lease WHERE partition = $1", &[&p])
            .unwrap()
            .map(|r| (r.get(0), r.get(1)))
    };
    let before = lease_of(0);
    for (index, count) in [(0, 1), (2, 3)] {
        let err =
            PgStore::open_leased(&pg.url(), &in_partition(index, count), Init::Allow, None, lease("b", 60_000, false))
                .unwrap_err();
        match &err {
            StoreError::PartitionCount { found, configured, .. } => {
                assert_eq!((found.as_str(), *configured), ("2", count))
            }
            other => panic!("expected PartitionCount, got {other}"),
        }
        assert!(err.to_string().contains("split into 2 partition(s), this node's is split into"), "{err}");
    }
    assert_eq!(count(&pg, "SELECT count(*) FROM confab_head WHERE partition = 2"), 0, "no head for a refused node");
    assert_eq!(lease_of(0), before, "refused before it took a lease");
    assert_eq!(lease_of(2), None, "no lease of a partition the store does not have");
    // A partition outside the count is refused as clearly.
    for (index, count) in [(1, 1), (2, 2), (0, 0), (0, 53)] {
        let err =
            PgStore::open_leased(&pg.url(), &in_partition(index, count), Init::Allow, None, lease("b", 60_000, false))
                .unwrap_err();
        assert!(matches!(err, StoreError::BadPartition { .. }), "{index} of {count}: {err}");
    }
    // The store is still the two partitions' it was.
    assert_eq!(made_for(), "2");
    PgStore::open_leased(&pg.url(), &in_partition(1, 2), Init::Allow, None, lease("c", 60_000, false)).unwrap();
}

/// A node that could open none of a store's partitions never joins its
/// fleet, where it would hold a quota nobody serves (an attacker-briefed
/// review found the others giving partitions back to it): a node of
/// another partition count, or a build older than the store's schema, is
/// refused by `Fleet::join` before any beat. A fleet dropped without
/// `leave` (a start that failed after joining) deletes its row all the same.
#[test]
fn pg_a_node_that_could_serve_no_partition_never_joins_the_fleet() {
    use confab_server::store::Fleet;
    let Some(pg) = TempPostgres::start("fleet-join") else { return };
    drop(PgStore::open_leased(&pg.url(), &in_partition(0, 4), Init::Allow, None, lease("a", 60_000, false)).unwrap());
    let nodes = || count(&pg, "SELECT count(*) FROM confab_nodes");
    let err = Fleet::join(&pg.url(), &lease("b", 60_000, false), 2).unwrap_err();
    assert!(matches!(err, StoreError::PartitionCount { .. }), "{err}");
    sql(&pg).execute("INSERT INTO confab_schema (version) VALUES (999)", &[]).unwrap();
    let err = Fleet::join(&pg.url(), &lease("c", 60_000, false), 4).unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
    sql(&pg).execute("DELETE FROM confab_schema WHERE version = 999", &[]).unwrap();
    assert_eq!(nodes(), 0, "no row for a node refused");
    let (fleet, view) = Fleet::join(&pg.url(), &lease("d", 60_000, false), 4).unwrap();
    assert_eq!(view.nodes, ["d"]);
    assert_eq!(nodes(), 1);
    drop(fleet);
    assert_eq!(nodes(), 0, "dropped without leaving: its row is deleted");
}

/// A database of schema 2 (one log; one head, `id = 1`; the record format
/// in `confab_meta`), made by the migrations that shipped and filled with
/// a real run's records, is migrated at start into partition 0 of a state
/// of one partition, its records as they were.
#[test]
fn pg_migrates_schema_2_to_3() {
    let Some(pg) = TempPostgres::start("schema-2") else { return };
    let net = scenario();
    let half = net.turns.len() / 2;
    {
        let (mut store, _) = PgStore::open(&pg.url(), &config()).unwrap();
        store.set_compact_every(7);
        for turn in &net.turns[..half] {
            store.commit(turn).unwrap();
        }
    }
    // Schema 2 in a schema of its own: the first two migrations as they shipped, the versions
    // table as the lease's bootstrap makes it, and the records above as the build of schema 2
    // kept them (the same encodings and sums).
    let mut db = sql(&pg);
    db.batch_execute(
        "CREATE SCHEMA old; SET search_path = old;
         CREATE TABLE confab_schema (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO confab_schema (version) VALUES (1), (2);",
    )
    .unwrap();
    db.batch_execute(MIGRATIONS[0]).unwrap();
    db.batch_execute(MIGRATIONS[1]).unwrap();
    db.execute("UPDATE confab_meta SET value = $1 WHERE key = 'format'", &[&FORMAT_VERSION.to_string()]).unwrap();
    db.batch_execute(
        "UPDATE confab_head SET (seq, sum) = (SELECT seq, sum FROM public.confab_head WHERE partition = 0);
         INSERT INTO confab_snapshot SELECT 1, upto, state, sum FROM public.confab_snapshot WHERE partition = 0;
         INSERT INTO confab_changes SELECT seq, change, sum FROM public.confab_changes WHERE partition = 0;",
    )
    .unwrap();
    assert!(count(&pg, "SELECT count(*) FROM old.confab_snapshot") == 1, "the old store has a snapshot");
    assert!(count(&pg, "SELECT count(*) FROM old.confab_changes") > 0, "and a log after it");
    let old = format!("{}?options=-c%20search_path%3Dold", pg.url());
    {
        let (mut store, loaded) = PgStore::open(&old, &config()).unwrap();
        assert_eq!(loaded, applied(&net.turns[..half]));
        for turn in &net.turns[half..] {
            store.commit(turn).unwrap();
        }
    }
    let versions = count(&pg, "SELECT count(*) FROM old.confab_schema");
    assert_eq!(versions, MIGRATIONS.len() as i64);
    let meta: Vec<(String, String)> = db
        .query("SELECT key, value FROM old.confab_meta ORDER BY key", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected = [("application", "confab-server"), ("partitions", "1")].map(|(k, v)| (k.to_owned(), v.to_owned()));
    assert_eq!(meta, expected, "the format moved to the head");
    let head: (i32, i32) =
        db.query_one("SELECT partition, format FROM old.confab_head", &[]).map(|r| (r.get(0), r.get(1))).unwrap();
    assert_eq!(head, (0, FORMAT_VERSION as i32));
    let (_, again) = PgStore::open(&old, &config()).unwrap();
    assert_eq!(&again, net.server.state());
}

/// The OIDC subjects bound to accounts are kept in `confab_oidc_subjects`
/// (for the router of a split state, docs/PARTITIONS.md), written in the
/// binding turn's transaction and under its fence; the first binding of a
/// subject stays, and a second one (another partition's) fails no commit.
#[test]
fn pg_oidc_subjects_are_kept_with_their_first_binding() {
    use confab_proto::server::{Change, oidc_subject_key};
    let Some(pg) = TempPostgres::start("oidc-subjects") else { return };
    let bound = |subject: [u8; 32], name: &str| Change::OidcSubjectBound { subject, username: name.to_owned() };
    let (first, second) =
        (oidc_subject_key("https://idp.test", "sub-1"), oidc_subject_key("https://idp.test", "sub-2"));
    let mut paused = lease("a", 500, false);
    paused.renew_every = Duration::from_secs(3600);
    let (mut zero, _) = PgStore::open_leased(&pg.url(), &in_partition(0, 2), Init::Allow, None, paused).unwrap();
    let (mut one, _) =
        PgStore::open_leased(&pg.url(), &in_partition(1, 2), Init::Allow, None, lease("b", 60_000, false)).unwrap();
    assert_eq!(one.oidc_subject(&first).unwrap(), None);
    zero.commit(&[bound(first, "alice")]).unwrap();
    assert_eq!(one.oidc_subject(&first).unwrap().as_deref(), Some("alice"), "read by any partition's store");
    one.commit(&[bound(first, "alice-renamed")]).unwrap();
    assert_eq!(zero.oidc_subject(&first).unwrap().as_deref(), Some("alice"), "the first binding stays");
    // Partition 0's owner is fenced out: its binding is not written.
    let url = pg.url();
    let standby = std::thread::spawn(move || {
        PgStore::open_leased(&url, &in_partition(0, 2), Init::Allow, None, lease("standby", 60_000, true)).unwrap()
    });
    let (_new_zero, loaded) = standby.join().unwrap();
    assert_eq!(loaded, applied(&[vec![bound(first, "alice")]]));
    let err = zero.commit(&[bound(second, "bob")]).unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    assert_eq!(one.oidc_subject(&second).unwrap(), None);
    assert_eq!(count(&pg, "SELECT count(*) FROM confab_oidc_subjects"), 1);
}

/// A database migrated by a newer build while this one serves (a rolling
/// upgrade: the newer node took another partition) fences this one's
/// commits and snapshots: its statements would mean something else now.
#[test]
fn pg_a_schema_migrated_by_a_newer_build_fences_the_commits_of_an_older_one() {
    let Some(pg) = TempPostgres::start("schema-fence") else { return };
    let net = scenario();
    let (mut store, _) = PgStore::open(&pg.url(), &config()).unwrap();
    store.commit(&net.turns[0]).unwrap();
    let head = || -> i64 { sql(&pg).query_one("SELECT seq FROM confab_head WHERE partition = 0", &[]).unwrap().get(0) };
    let before = head();
    sql(&pg).execute("INSERT INTO confab_schema (version) VALUES (99)", &[]).unwrap();
    let err = store.commit(&net.turns[1]).unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { found: 99, .. }), "{err}");
    assert_eq!(head(), before, "nothing written");
    let err = store.compact().unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { found: 99, .. }), "{err}");
    assert_eq!(count(&pg, "SELECT count(*) FROM confab_snapshot"), 0);
}

/// A database emptied (its tables dropped, the leases kept) is refused to
/// the first owner of any partition, not only to the next owner of one
/// that was served: a fresh node taking a partition never served would
/// otherwise make an empty store that every other partition then serves.
#[test]
fn pg_an_emptied_database_is_refused_to_the_first_owner_of_another_partition() {
    let Some(pg) = TempPostgres::start("emptied-partition") else { return };
    let net = scenario();
    {
        let (mut zero, _) =
            PgStore::open_leased(&pg.url(), &in_partition(0, 2), Init::Allow, None, lease("a", 60_000, false)).unwrap();
        zero.commit(&net.turns[0]).unwrap();
    }
    sql(&pg)
        .batch_execute(
            "DROP TABLE confab_changes, confab_snapshot, confab_head, confab_meta, confab_outbox, confab_oidc_subjects; \
             DELETE FROM confab_schema",
        )
        .unwrap();
    let err =
        PgStore::open_leased(&pg.url(), &in_partition(1, 2), Init::IfNew, None, lease("b", 60_000, false)).unwrap_err();
    assert!(matches!(err, StoreError::PostgresEmptied { .. }), "{err}");
}
