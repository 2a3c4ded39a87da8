//! The PostgreSQL store against a real server's changes, on a PostgreSQL of
//! the test's own (skipped without PostgreSQL unless
//! `CONFAB_REQUIRE_CLUSTER=1`): what is committed comes back equal to the
//! server's state, through compaction and restarts; the schema is migrated
//! once; one writer at a time; a lost connection is waited out without
//! losing or doubling a commit.

mod common;

use common::{config, scenario};
use confab_proto::server::{Change, State};
use confab_server::store::{MIGRATIONS, PgStore, StoreError};
use confab_tests::postgres::TempPostgres;

fn applied(turns: &[Vec<Change>]) -> State {
    let c = config();
    let mut state = State::new(c.room_history, c.dedup_window);
    for change in turns.iter().flatten() {
        state.apply(change);
    }
    state
}

fn sql(pg: &TempPostgres) -> postgres::Client {
    postgres::Client::connect(&pg.url(), postgres::NoTls).expect("connect")
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
    sql(&pg)
        .execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND datname = 'postgres'", &[])
        .unwrap();
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
    sql(&pg).execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND datname = 'postgres'", &[]).unwrap();
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
    // A schema version from the future.
    sql(&pg).execute("INSERT INTO confab_schema (version) VALUES (999)", &[]).unwrap();
    let err = PgStore::open(&pg.url(), &config()).unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { found: 999, .. }), "{err}");
}
