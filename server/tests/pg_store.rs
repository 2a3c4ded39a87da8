//! The PostgreSQL store against a real server's changes, on a PostgreSQL of
//! the test's own (skipped without PostgreSQL unless
//! `CONFAB_REQUIRE_CLUSTER=1`): what is committed comes back equal to the
//! server's state, through compaction and restarts; the schema is migrated
//! once; one writer at a time; a lost connection is waited out without
//! losing or doubling a commit.

mod common;

use common::{applied, config, scenario};
use confab_server::store::{Init, MIGRATIONS, PgStore, StoreError};
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

#[test]
fn pg_has_one_writer_and_a_commit_never_overwrites_another_writers() {
    let Some(pg) = TempPostgres::start("one-writer") else { return };
    let net = scenario();
    let (mut first, _) = PgStore::open(&pg.url(), &config()).unwrap();
    first.commit(&net.turns[0]).unwrap();
    // A second node is refused while the first holds the writer's lock.
    let err = PgStore::open(&pg.url(), &config()).unwrap_err();
    assert!(matches!(err, StoreError::Owned(_)), "{err}");
    assert!(err.to_string().contains("another confab-server"), "{err}");

    // The first is cut off (its connection killed); a second node takes over and commits.
    cut_every_connection(&pg);
    let (mut second, loaded) = PgStore::open(&pg.url(), &config()).unwrap();
    assert_eq!(loaded, applied(&net.turns[..1]));
    second.commit(&net.turns[1]).unwrap();
    // The first comes back: it finds the lock taken and writes nothing.
    let err = first.commit(&net.turns[1]).unwrap_err();
    assert!(matches!(err, StoreError::Owned(_)), "{err}");
    drop(second);
    let (_, loaded) = PgStore::open(&pg.url(), &config()).unwrap();
    assert_eq!(loaded, applied(&net.turns[..2]), "the second writer's commit, once");
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
    sql(&pg).execute("UPDATE confab_meta SET value = '3' WHERE key = 'format'", &[]).unwrap();
    let err = PgStore::open(&pg.url(), &config()).unwrap_err();
    assert!(matches!(err, StoreError::VersionMismatch { found: 3, .. }), "{err}");
    sql(&pg).execute("UPDATE confab_meta SET value = '4' WHERE key = 'format'", &[]).unwrap();
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
        .batch_execute("DROP TABLE confab_changes, confab_snapshot, confab_head, confab_meta, confab_schema")
        .unwrap();
    // A directory that served before (its pin, its SQLite store) and a database with nothing in it:
    // a wrong URL, a recreated database, or --store added to a SQLite directory.
    std::fs::write(data.join("server.pin"), "sha256/x\n").unwrap();
    std::fs::write(data.join("confab.db"), b"SQLite format 3\0").unwrap();
    let err = PgStore::open_with(&pg.url(), &config(), Init::IfNew, Some(&data)).unwrap_err();
    assert!(matches!(err, StoreError::PostgresEmpty { sqlite: true, .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("server.pin") && text.contains("confab.db") && text.contains("--init"), "{text}");
    let tables = count(&pg, "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'confab_%'");
    assert_eq!(tables, 0, "nothing was changed");
    // --init: started over on purpose.
    let (_, state) = PgStore::open_with(&pg.url(), &config(), Init::Allow, Some(&data)).unwrap();
    assert_eq!(state, applied(&[]));
}

#[test]
fn pg_a_statement_refused_by_a_live_session_is_an_error_not_a_lost_lock() {
    let Some(pg) = TempPostgres::start("cancelled") else { return };
    let net = scenario();
    let (mut store, _) = PgStore::open(&pg.url(), &config()).unwrap();
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
                     WHERE application_name = 'confab-server' AND wait_event_type = 'Lock'",
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
