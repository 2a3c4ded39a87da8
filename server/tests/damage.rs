//! Damage to a store written by the real code is detected and the store is
//! refused with a message that says what is wrong and how to recover
//! (issue 12, item 5): a deleted snapshot row, a deleted change row (in the
//! middle and the newest), bytes altered in the snapshot or a change even
//! when postcard still decodes them. A store of format 3 (and 2) is migrated
//! to the checksummed format and is then protected too.
//!
//! A lost or emptied `confab.db` is refused by `confab-server run` itself:
//! see `cli_lost_database_*` in `tests/cli.rs`.

mod common;

use common::{Net, TempDir, config, downgrade_to_format_3, scenario};
use confab_proto::server::{Change, State};
use confab_server::store::{DB_FILE, FORMAT_VERSION, Store};

fn sqlite(dir: &TempDir) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.data().join(DB_FILE)).unwrap()
}

fn commit_all(store: &mut Store, turns: &[Vec<Change>]) {
    for turn in turns {
        store.commit(turn).expect("commit");
    }
}

/// A store written by the real code: a snapshot of the first half of the
/// scenario, and a log of the second half after it.
fn written(test: &str) -> (TempDir, Net) {
    let net = scenario();
    let dir = TempDir::new(test);
    let half = net.turns.len() / 2;
    let (mut store, _) = Store::open(&dir.data(), &config()).unwrap();
    commit_all(&mut store, &net.turns[..half]);
    store.compact().unwrap();
    commit_all(&mut store, &net.turns[half..]);
    assert!(store.log_len() > 10, "a log after the snapshot: {}", store.log_len());
    drop(store);
    (dir, net)
}

fn seqs(dir: &TempDir) -> Vec<i64> {
    let conn = sqlite(dir);
    let mut select = conn.prepare("SELECT seq FROM changes ORDER BY seq").unwrap();
    select.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

/// The store is refused, by the server's open and by a read-only admin read
/// alike, with a message naming `what` and the way out; returns the message.
fn refused(dir: &TempDir, what: &str) -> String {
    let err = match Store::open(&dir.data(), &config()) {
        Ok((_, state)) => panic!("a damaged store was accepted ({} users)", state.accounts().user_count()),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(what), "expected {what:?} in: {err}");
    assert!(err.contains(&dir.data().join(DB_FILE).display().to_string()), "names the file: {err}");
    assert!(err.contains("restore") && err.contains("--init"), "says how to recover: {err}");
    let read = Store::read(&dir.data(), &config()).map(|_| ()).unwrap_err().to_string();
    assert_eq!(read, err, "an admin read refuses it the same way");
    err
}

#[test]
fn damage_deleted_snapshot_row_is_refused() {
    let (dir, _net) = written("deleted-snapshot");
    sqlite(&dir).execute("DELETE FROM snapshot", []).unwrap();
    // What today's store did with it: queued messages for users that do not exist.
    refused(&dir, "snapshot");
}

#[test]
fn damage_deleted_change_row_in_the_middle_is_refused() {
    let (dir, _net) = written("deleted-change");
    let seqs = seqs(&dir);
    let victim = seqs[seqs.len() / 2];
    sqlite(&dir).execute("DELETE FROM changes WHERE seq = ?1", [victim]).unwrap();
    let err = refused(&dir, &format!("change {victim} is missing"));
    assert!(err.contains("deleted"), "{err}");
}

#[test]
fn damage_deleted_newest_change_row_is_refused() {
    let (dir, _net) = written("deleted-newest");
    let newest = *seqs(&dir).last().unwrap();
    sqlite(&dir).execute("DELETE FROM changes WHERE seq = ?1", [newest]).unwrap();
    refused(&dir, &format!("change {newest} was committed"));
}

#[test]
fn damage_deleted_oldest_change_row_is_refused() {
    let (dir, _net) = written("deleted-oldest");
    let oldest = seqs(&dir)[0];
    sqlite(&dir).execute("DELETE FROM changes WHERE seq = ?1", [oldest]).unwrap();
    refused(&dir, &format!("change {oldest} is missing"));
}

/// Four zeroed bytes that postcard still decodes (inside a hash, a key or a
/// sealed payload): only a checksum can tell.
#[test]
fn damage_four_zeroed_bytes_in_the_snapshot_are_refused() {
    let (dir, _net) = written("zeroed-snapshot");
    let conn = sqlite(&dir);
    let bytes: Vec<u8> = conn.query_row("SELECT state FROM snapshot", [], |r| r.get(0)).unwrap();
    let original: State = postcard::from_bytes(&bytes).unwrap();
    let damaged = (bytes.len() / 4..bytes.len() - 4)
        .map(|at| {
            let mut d = bytes.clone();
            d[at..at + 4].fill(0);
            d
        })
        .find(|d| *d != bytes && postcard::from_bytes::<State>(d).is_ok_and(|s| s != original))
        .expect("four bytes whose zeroing still decodes");
    conn.execute("UPDATE snapshot SET state = ?1", [&damaged]).unwrap();
    let err = refused(&dir, "snapshot");
    assert!(err.contains("checksum"), "{err}");
}

/// One change whose bytes were altered but still decode as a change.
#[test]
fn damage_altered_change_is_refused() {
    let (dir, _net) = written("altered-change");
    let conn = sqlite(&dir);
    let rows: Vec<(i64, Vec<u8>)> = conn
        .prepare("SELECT seq, change FROM changes ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let (seq, altered) = rows[rows.len() / 2..]
        .iter()
        .find_map(|(seq, bytes)| {
            let original: Change = postcard::from_bytes(bytes).unwrap();
            (0..bytes.len()).rev().find_map(|at| {
                let mut d = bytes.clone();
                d[at] ^= 0x20;
                postcard::from_bytes::<Change>(&d).is_ok_and(|c| c != original).then_some((*seq, d))
            })
        })
        .expect("a change that still decodes when one byte is altered");
    conn.execute("UPDATE changes SET change = ?1 WHERE seq = ?2", rusqlite::params![altered, seq]).unwrap();
    let err = refused(&dir, &format!("change {seq}"));
    assert!(err.contains("checksum"), "{err}");
}

/// A change moved to another sequence number (its bytes intact) does not
/// pass for the one that was there.
#[test]
fn damage_change_moved_to_another_seq_is_refused() {
    let (dir, _net) = written("moved-change");
    let seqs = seqs(&dir);
    let (a, b) = (seqs[seqs.len() / 2], seqs[seqs.len() / 2 + 1]);
    let conn = sqlite(&dir);
    conn.execute("DELETE FROM changes WHERE seq = ?1", [b]).unwrap();
    conn.execute("UPDATE changes SET seq = ?1 WHERE seq = ?2", [b, a]).unwrap();
    refused(&dir, &format!("change {a} is missing"));
}

/// An undamaged store opens, commits more and opens again: the checks do not
/// refuse what the store itself wrote.
#[test]
fn damage_checks_pass_an_undamaged_store_across_compactions() {
    let net = scenario();
    let dir = TempDir::new("undamaged");
    for every in [3, 1_000] {
        let _ = std::fs::remove_dir_all(dir.path());
        let third = net.turns.len() / 3;
        {
            let (mut store, _) = Store::open(&dir.data(), &config()).unwrap();
            store.set_compact_every(every);
            commit_all(&mut store, &net.turns[..third]);
        }
        {
            let (mut store, _) = Store::open(&dir.data(), &config()).unwrap();
            store.set_compact_every(every);
            commit_all(&mut store, &net.turns[third..]);
        }
        let (_, loaded) = Store::open(&dir.data(), &config()).unwrap();
        assert_eq!(&loaded, net.server.state(), "compact every {every}");
        assert_eq!(&Store::read(&dir.data(), &config()).unwrap(), net.server.state());
    }
}

fn format(dir: &TempDir) -> i64 {
    sqlite(dir).query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| r.get(0)).unwrap()
}

/// A format-3 store (no checksums) is read as it is by an admin read, and
/// migrated by the server's open: every record then has its checksum, and
/// damage is caught from then on.
#[test]
fn damage_format_3_store_is_migrated_and_then_protected() {
    let (dir, net) = written("migrate-3");
    downgrade_to_format_3(&dir);
    assert_eq!(&Store::read(&dir.data(), &config()).unwrap(), net.server.state());
    assert_eq!(format(&dir), 3, "a read-only open writes nothing");
    {
        let (mut store, loaded) = Store::open(&dir.data(), &config()).unwrap();
        assert_eq!(&loaded, net.server.state());
        assert_eq!(format(&dir), i64::from(FORMAT_VERSION));
        // It carries on: one more turn, then reopened.
        store.commit(&[Change::TokensPurged { before_ms: 1 }]).unwrap();
    }
    let (_, loaded) = Store::open(&dir.data(), &config()).unwrap();
    let mut expected = net.server.state().clone();
    expected.apply(&Change::TokensPurged { before_ms: 1 });
    assert_eq!(loaded, expected);
    let newest = *seqs(&dir).last().unwrap();
    sqlite(&dir).execute("DELETE FROM changes WHERE seq = ?1", [newest]).unwrap();
    refused(&dir, &format!("change {newest} was committed"));
}

/// A format-3 store with a gap in its log is refused rather than migrated
/// (the migration would make the loss permanent).
#[test]
fn damage_format_3_store_with_a_gap_is_not_migrated() {
    let (dir, _net) = written("migrate-gap");
    downgrade_to_format_3(&dir);
    let seqs = seqs(&dir);
    let victim = seqs[seqs.len() / 2];
    sqlite(&dir).execute("DELETE FROM changes WHERE seq = ?1", [victim]).unwrap();
    refused(&dir, &format!("change {victim} is missing"));
    assert_eq!(format(&dir), 3, "nothing was rewritten");
}
