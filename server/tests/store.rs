//! The SQLite store against a real server's changes: what is committed comes
//! back equal to the server's own state, through compaction, a crash between
//! commits and a failed commit; the files are private; foreign formats are refused.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Net, TempDir, applied, config, downgrade_to_format_3, scenario};
use confab_proto::Server;
use confab_proto::server::state::{Conversation, MailedRequest, OidcLogin, RetryKey, Rotation};
use confab_proto::server::{Change, State};
use confab_server::store::{DB_FILE, Damage, FORMAT_VERSION, Store, StoreError, ensure_data_dir};

fn commit_all(store: &mut Store, turns: &[Vec<Change>]) {
    for turn in turns {
        store.commit(turn).expect("commit");
    }
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn sqlite(dir: &TempDir) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.data().join(DB_FILE)).unwrap()
}

#[test]
fn store_round_trip_equals_the_servers_state() {
    let net = scenario();
    assert!(net.turns.len() > 20, "a realistic history: {} turns", net.turns.len());
    let state = net.server.state();
    assert!(!state.accounts().signing_keys().is_empty() && !state.room("lobby").unwrap().history.is_empty());
    let dir = TempDir::new("round-trip");
    {
        let (mut store, fresh) = Store::open(&dir.data(), &config()).unwrap();
        assert_eq!(fresh, applied(&[]));
        commit_all(&mut store, &net.turns);
        assert_eq!(store.state(), state);
        // A routed send_mp is one change, logged as the two records it stands for.
        let folded = net.changes().iter().filter(|c| matches!(c, Change::MessageSent { .. })).count();
        assert_eq!(folded, 3, "the scenario's three send_mp");
        assert_eq!(store.log_len(), (net.changes().len() + folded) as u64);
        let rows: Vec<Vec<u8>> = sqlite(&dir)
            .prepare("SELECT change FROM changes ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let logged: Vec<Change> = rows.iter().map(|row| postcard::from_bytes(row).unwrap()).collect();
        assert!(!logged.iter().any(|c| matches!(c, Change::MessageSent { .. })), "rows of format 4 only");
        let unfolded: Vec<Change> =
            net.changes().iter().flat_map(|c| c.unfold().map_or_else(|| vec![c.clone()], Vec::from)).collect();
        assert_eq!(logged, unfolded);
    }
    let (store, loaded) = Store::open(&dir.data(), &config()).unwrap();
    assert_eq!(&loaded, state);
    assert_eq!(store.state(), state);
    assert_eq!(Store::read(&dir.data(), &config()).unwrap(), loaded);

    // A server restored from it carries on: bob logs in again against his stored hashes.
    let mut net2 = Net::new(config());
    let tokens = loaded.accounts().token_count();
    net2.server = Server::restore(config(), [9; 32], loaded, net2.now).expect("a valid configuration");
    let _bob = net2.user_login("bob");
    assert_eq!(net2.server.state().accounts().user_count(), 3);
    assert_eq!(net2.server.state().accounts().token_count(), tokens + 2, "a new access and refresh token");
}

#[test]
fn store_compaction_preserves_the_state() {
    let net = scenario();
    let dir = TempDir::new("compaction");
    let total = net.changes().len() as u64;
    {
        let (mut store, _) = Store::open(&dir.data(), &config()).unwrap();
        store.set_compact_every(7);
        commit_all(&mut store, &net.turns);
        assert!(store.log_len() < 7 + net.turns.iter().map(Vec::len).max().unwrap() as u64);
        assert_eq!(store.state(), net.server.state());
        let logged: i64 = sqlite(&dir).query_row("SELECT count(*) FROM changes", [], |r| r.get(0)).unwrap();
        assert_eq!(
            logged as u64,
            store.log_len() + store.covered_len(),
            "the log after the snapshot, and what it covers"
        );
        assert!((logged as u64) < total);
    }
    let (mut store, loaded) = Store::open(&dir.data(), &config()).unwrap();
    assert_eq!(&loaded, net.server.state());
    // An explicit compaction empties the log after the snapshot and changes nothing.
    store.compact().unwrap();
    assert_eq!(store.log_len(), 0);
    drop(store);
    let (store, loaded) = Store::open(&dir.data(), &config()).unwrap();
    assert_eq!(&loaded, net.server.state());
    assert_eq!(store.log_len(), 0);
}

/// The rows of the log, oldest first.
fn logged_seqs(dir: &TempDir) -> Vec<i64> {
    sqlite(dir)
        .prepare("SELECT seq FROM changes ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn the_changes_a_snapshot_covers_are_deleted_by_the_commits_after_it_even_across_a_restart() {
    let net = scenario();
    let dir = TempDir::new("covered");
    let half = net.turns.len() / 2;
    let first_half = net.turns[..half].iter().map(Vec::len).sum::<usize>();
    {
        let (mut store, _) = Store::open(&dir.data(), &config()).unwrap();
        commit_all(&mut store, &net.turns[..half]);
        let rows = logged_seqs(&dir).len() as u64;
        assert!(rows >= first_half as u64);
        // The snapshot is written; the changes it covers stay, for now.
        store.compact().unwrap();
        assert_eq!((store.log_len(), store.covered_len()), (0, rows));
        assert_eq!(logged_seqs(&dir).len() as u64, rows);
        // Dropped here: the process dies before any later commit deleted them.
    }
    let (mut store, loaded) = Store::open(&dir.data(), &config()).unwrap();
    assert_eq!(loaded, applied(&net.turns[..half]), "covered changes are not applied twice");
    let covered = store.covered_len();
    assert!(covered > 0);
    // Each commit deletes at least 16 of them, oldest first, and logs its own.
    store.commit(&net.turns[half]).unwrap();
    let after_one = logged_seqs(&dir);
    assert!(
        store.covered_len() < covered && store.covered_len() + 16 <= covered.max(16),
        "{covered} -> {}",
        store.covered_len()
    );
    assert_eq!(after_one.len() as u64, store.covered_len() + store.log_len());
    assert!(after_one.windows(2).all(|w| w[1] == w[0] + 1), "what is left is contiguous: {after_one:?}");
    commit_all(&mut store, &net.turns[half + 1..]);
    assert_eq!(store.covered_len(), 0, "all gone within the second half's {} turns", net.turns.len() - half);
    assert_eq!(logged_seqs(&dir).len() as u64, store.log_len());
    drop(store);
    let (_, loaded) = Store::open(&dir.data(), &config()).unwrap();
    assert_eq!(&loaded, net.server.state());
}

#[test]
fn store_crash_between_commits_keeps_exactly_the_committed_turns() {
    let net = scenario();
    let dir = TempDir::new("crash");
    let half = net.turns.len() / 2;
    {
        let (mut store, _) = Store::open(&dir.data(), &config()).unwrap();
        store.set_compact_every(5);
        commit_all(&mut store, &net.turns[..half]);
        // Dropped here: the process dies before the next turn's commit.
    }
    let (_, loaded) = Store::open(&dir.data(), &config()).unwrap();
    assert_eq!(loaded, applied(&net.turns[..half]));
    assert_ne!(&loaded, net.server.state());
}

#[test]
fn store_failed_commit_writes_nothing_of_its_turn() {
    let net = scenario();
    let dir = TempDir::new("atomic");
    let big = net.turns.iter().position(|t| t.len() >= 2).expect("a turn with several changes");
    let before: i64;
    {
        let (mut store, _) = Store::open(&dir.data(), &config()).unwrap();
        commit_all(&mut store, &net.turns[..big]);
        before = sqlite(&dir).query_row("SELECT count(*) FROM changes", [], |r| r.get(0)).unwrap();
        // Another writer takes the sequence number of the turn's second change:
        // the second insert fails, the whole transaction rolls back.
        sqlite(&dir)
            .execute("INSERT INTO changes (seq, change, sum) VALUES (?1, x'ff', zeroblob(32))", [before + 2])
            .unwrap();
        let err = store.commit(&net.turns[big]).unwrap_err();
        assert!(matches!(err, StoreError::Sqlite { .. }), "{err}");
        assert_eq!(store.state(), &applied(&net.turns[..big]), "the store's copy did not move either");
    }
    let seqs: Vec<i64> = sqlite(&dir)
        .prepare("SELECT seq FROM changes ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(seqs, (1..=before).chain([before + 2]).collect::<Vec<_>>(), "nothing of the failed turn");
    // The stranger's record is reported, as the gap before it...
    match Store::open(&dir.data(), &config()) {
        Err(StoreError::Damaged { damage: Damage::Gap { from, to }, .. }) => {
            assert_eq!((from, to), (before + 1, before + 1))
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    // ...and without it the store holds exactly the committed turns.
    sqlite(&dir).execute("DELETE FROM changes WHERE seq = ?1", [before + 2]).unwrap();
    let (_, loaded) = Store::open(&dir.data(), &config()).unwrap();
    assert_eq!(loaded, applied(&net.turns[..big]));
}

#[test]
fn store_directory_is_0700_and_every_file_0600() {
    let net = scenario();
    let dir = TempDir::new("modes");
    {
        let (mut store, _) = Store::open(&dir.data(), &config()).unwrap();
        store.set_compact_every(10);
        commit_all(&mut store, &net.turns);
        let files = std::fs::read_dir(dir.data()).unwrap().map(|e| e.unwrap().path()).collect::<Vec<_>>();
        assert!(files.iter().any(|f| f.to_string_lossy().ends_with("-wal")), "WAL files exist: {files:?}");
    }
    let _reopened = Store::open(&dir.data(), &config()).unwrap();
    assert_eq!(mode(&dir.data()), 0o700);
    for entry in std::fs::read_dir(dir.data()).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    // A file made wider by hand is narrowed again at the next open.
    std::fs::set_permissions(dir.data().join(DB_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(_reopened);
    let _reopened = Store::open(&dir.data(), &config()).unwrap();
    assert_eq!(mode(&dir.data().join(DB_FILE)), 0o600);
}

#[test]
fn store_refuses_a_directory_open_to_others() {
    let dir = TempDir::new("open-dir");
    std::fs::create_dir_all(dir.data()).unwrap();
    std::fs::set_permissions(dir.data(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = ensure_data_dir(&dir.data()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("chmod 700"), "{err}");
    let err = Store::open(&dir.data(), &config()).unwrap_err();
    assert!(err.to_string().contains("mode 755"), "{err}");
    assert!(!dir.data().join(DB_FILE).exists());
    // A file where the directory should be.
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    assert_eq!(ensure_data_dir(&file).unwrap_err().kind(), std::io::ErrorKind::NotADirectory);
}

/// Fields format 3 appended to `State` (empty maps: one zero byte each).
const FIELDS_ADDED_IN_3: usize = 3;

/// A format-2 store (a snapshot without the fields format 3 appended to
/// `State`, and a log after it, without checksums) is read as it is, and
/// rewritten in this format by the server's open, never by a read-only admin
/// command.
#[test]
fn store_migrates_format_2() {
    let net = scenario();
    let dir = TempDir::new("migrate");
    let half = net.turns.len() / 2;
    {
        let (mut store, _) = Store::open(&dir.data(), &config()).unwrap();
        commit_all(&mut store, &net.turns[..half]);
        store.compact().unwrap();
        commit_all(&mut store, &net.turns[half..]);
    }
    downgrade_to_format_3(&dir);
    let format = |dir: &TempDir| -> i64 {
        sqlite(dir).query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| r.get(0)).unwrap()
    };
    {
        let conn = sqlite(&dir);
        let snapshot: Vec<u8> = conn.query_row("SELECT state FROM snapshot", [], |r| r.get(0)).unwrap();
        assert!(snapshot.ends_with(&[0; FIELDS_ADDED_IN_3]), "the new fields are empty in this scenario");
        let old = &snapshot[..snapshot.len() - FIELDS_ADDED_IN_3];
        conn.execute("UPDATE snapshot SET state = ?1", [old]).unwrap();
        conn.execute("UPDATE meta SET value = 2 WHERE key = 'format'", []).unwrap();
    }
    assert_eq!(&Store::read(&dir.data(), &config()).unwrap(), net.server.state());
    assert_eq!(format(&dir), 2, "a read-only open writes nothing");
    let (store, loaded) = Store::open(&dir.data(), &config()).unwrap();
    assert_eq!(&loaded, net.server.state());
    assert_eq!(store.log_len(), 0, "the migration wrote a snapshot covering the log");
    drop(store);
    assert_eq!(format(&dir), i64::from(FORMAT_VERSION));
    let (_, again) = Store::open(&dir.data(), &config()).unwrap();
    assert_eq!(&again, net.server.state());
}

/// A store of format 4 (its snapshot without `State::retry_keys`, the
/// mail numbers and the pending requests), 5 (without the mail numbers and
/// the pending requests) or 6 (without the pending requests) is read as it
/// is and rewritten in this format by the server's open.
#[test]
fn store_migrates_formats_4_to_6() {
    for old in [4, 5, 6] {
        let net = scenario();
        let dir = TempDir::new(&format!("migrate-{old}"));
        let half = net.turns.len() / 2;
        {
            let (mut store, _) = Store::open(&dir.data(), &config()).unwrap();
            commit_all(&mut store, &net.turns[..half]);
            store.compact().unwrap();
            commit_all(&mut store, &net.turns[half..]);
        }
        common::downgrade_to_format(&dir, old);
        let format = || -> i64 {
            sqlite(&dir).query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| r.get(0)).unwrap()
        };
        assert_eq!(&Store::read(&dir.data(), &config()).unwrap(), net.server.state());
        assert_eq!(format(), i64::from(old), "a read-only open writes nothing");
        let (store, loaded) = Store::open(&dir.data(), &config()).unwrap();
        assert_eq!(&loaded, net.server.state());
        assert_eq!(store.log_len(), 0, "the migration wrote a snapshot covering the log");
        drop(store);
        assert_eq!(format(), i64::from(FORMAT_VERSION));
        let snapshot: Vec<u8> = sqlite(&dir).query_row("SELECT state FROM snapshot", [], |r| r.get(0)).unwrap();
        assert_eq!(postcard::from_bytes::<State>(&snapshot).unwrap(), *net.server.state());
        let (_, again) = Store::open(&dir.data(), &config()).unwrap();
        assert_eq!(&again, net.server.state());
    }
}

#[test]
fn store_refuses_another_format_and_foreign_databases() {
    let dir = TempDir::new("version");
    drop(Store::open(&dir.data(), &config()).unwrap());
    sqlite(&dir).execute("UPDATE meta SET value = 99 WHERE key = 'format'", []).unwrap();
    let err = Store::open(&dir.data(), &config()).unwrap_err();
    assert!(matches!(err, StoreError::VersionMismatch { found: 99, expected: FORMAT_VERSION, .. }), "{err:?}");
    assert!(err.to_string().contains("format 99"), "{err}");
    assert!(matches!(Store::read(&dir.data(), &config()), Err(StoreError::VersionMismatch { .. })));

    let other = TempDir::new("foreign");
    ensure_data_dir(&other.data()).unwrap();
    sqlite(&other).execute_batch("CREATE TABLE notes (body TEXT)").unwrap();
    assert!(matches!(Store::open(&other.data(), &config()), Err(StoreError::NotAStore { .. })));
}

#[test]
fn store_read_creates_nothing() {
    let dir = TempDir::new("read");
    assert!(matches!(Store::read(&dir.data(), &config()), Err(StoreError::NoDataDir(_))));
    assert!(!dir.data().exists());
    ensure_data_dir(&dir.data()).unwrap();
    let err = Store::read(&dir.data(), &config()).unwrap_err();
    assert!(matches!(err, StoreError::NoDatabase(_)), "{err:?}");
    assert!(!dir.data().join(DB_FILE).exists());
}

/// The record format is positional: reordering `Change`'s variants or a
/// struct's fields silently changes it. If this fails, bump
/// `store::FORMAT_VERSION` and update these bytes.
#[test]
fn store_record_format_is_pinned() {
    let hex = |c: &Change| postcard::to_stdvec(c).unwrap().iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(hex(&Change::RoomJoined { room: "r".into(), user: "u".into() }), "08017201 75".replace(' ', ""));
    assert_eq!(hex(&Change::TokensPurged { before_ms: 300 }), "06ac02");
    assert_eq!(hex(&Change::SigningKeysSet { records: Vec::new() }), "1400");
    // Format 2: `Change::OidcLoginBound` and `State::oidc_logins` (a snapshot of format 1 lacks it).
    let login = OidcLogin { family: 1, expires_ms: 2 };
    assert_eq!(hex(&Change::OidcLoginBound { key: [0; 32], login }), format!("15{}0102", "00".repeat(32)));
    // Format 3: `State::revoked_refresh`, `oidc_subjects`, `oidc_accounts`; `Change::OidcSubjectBound`.
    assert_eq!(
        hex(&Change::OidcSubjectBound { subject: [0; 32], username: "u".into() }),
        format!("16{}0175", "00".repeat(32))
    );
    // Format 4 added the checksums and the head (`tests/damage.rs`), not a record encoding.
    // Format 5: `Change::TokenRotatedKeyed` and `ExchangeAnswered` (variants 26 and 27: 25 is
    // `MessageSent`, never a record) and `State::retry_keys`.
    let rotation = Rotation { at_ms: 1, refresh: [2; 32], access: [3; 32] };
    let retry = RetryKey { key: [4; 32], attempt: 300, answered: false };
    assert_eq!(
        hex(&Change::TokenRotatedKeyed { hash: [0; 32], rotation, retry }),
        format!("1a{}01{}{}{}ac0200", "00".repeat(32), "02".repeat(32), "03".repeat(32), "04".repeat(32))
    );
    assert_eq!(hex(&Change::ExchangeAnswered { access: [5; 32] }), format!("1b{}", "05".repeat(32)));
    // Format 6: `Change::MailOut` and `MailIn` (variants 28 and 29) and `State::mail_next`,
    // `mail_applied`.
    let item = bytes::Bytes::from_static(b"ab");
    assert_eq!(hex(&Change::MailOut { to: 3, seq: 300, item }), "1c03ac02026162");
    assert_eq!(hex(&Change::MailIn { from: 2, seq: 1 }), "1d0201");
    // Format 7: `Change::RequestMailed` and `RequestAnswered` (variants 30 and 31),
    // `State::mail_pending`, and `Conversation::Requesting` and `Accepting` (variants 2 and 3).
    let request = MailedRequest {
        family: 1,
        request_id: 300,
        opcode: confab_proto::wire::Opcode::SendMp,
        user: "a".into(),
        peer: "b".into(),
    };
    assert_eq!(hex(&Change::RequestMailed { to: 1, ticket: 2, request }), "1e010201ac020801610162");
    // Variant 30, to 1, ticket 2, family 1, request 300 (a varint), send_mp (8), "a", "b".
    assert_eq!(
        hex(&Change::ConversationSet {
            a: "a".into(),
            b: "b".into(),
            state: Some(Conversation::Requesting {
                by: "a".into(),
                handshake: bytes::Bytes::from_static(b"h"),
                ticket: 5
            }),
        }),
        "0c0161016201020161016805"
    );
    assert_eq!(FORMAT_VERSION, 7);
}

/// `State::retry_keys` (format 5), at the end of a snapshot: the new access
/// token's hash, then the retry key's hash, the attempt and whether the pair
/// was used; forgotten with the token.
#[test]
fn store_snapshot_retry_keys_are_pinned() {
    use confab_proto::server::state::TokenRecord;
    use confab_proto::token::TokenKind;
    let token = |kind| TokenRecord { kind, username: "al".into(), family: 1, expires_ms: 9, rotated: None };
    let mut state = State::new(20, 1024);
    let empty = postcard::to_stdvec(&state).unwrap();
    assert_eq!(empty.last(), Some(&0), "an empty map: one zero byte");
    state.apply(&Change::TokenIssued { hash: [1; 32], record: token(TokenKind::Refresh) });
    state.apply(&Change::TokenIssued { hash: [2; 32], record: token(TokenKind::Refresh) });
    state.apply(&Change::TokenIssued { hash: [3; 32], record: token(TokenKind::Access) });
    let rotation = Rotation { at_ms: 5, refresh: [2; 32], access: [3; 32] };
    let retry = RetryKey { key: [4; 32], attempt: 2, answered: false };
    state.apply(&Change::TokenRotatedKeyed { hash: [1; 32], rotation, retry });
    assert_eq!(state.accounts().retry_key(&[3; 32]), Some(&retry));
    let bytes = postcard::to_stdvec(&state).unwrap();
    // `retry_keys`, then the two empty maps of format 6 and the one of format 7.
    assert_eq!(&bytes[bytes.len() - 3..], [0, 0, 0]);
    let bytes = &bytes[..bytes.len() - 3];
    let tail: String = bytes[bytes.len() - 67..].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(tail, format!("01{}{}0200", "03".repeat(32), "04".repeat(32)));
    assert_eq!(postcard::from_bytes::<State>(&postcard::to_stdvec(&state).unwrap()).unwrap(), state);
    // The new access token used: the exchange is never retried.
    state.apply(&Change::ExchangeAnswered { access: [3; 32] });
    assert_eq!(state.accounts().retry_key(&[3; 32]), Some(&RetryKey { answered: true, ..retry }));
    let bytes = postcard::to_stdvec(&state).unwrap();
    assert_eq!(bytes[bytes.len() - 4], 1);
    // Forgotten with the token.
    state.apply(&Change::TokensRevoked { hashes: vec![[3; 32]] });
    assert_eq!(state.accounts().retry_key(&[3; 32]), None);
    assert!(postcard::to_stdvec(&state).unwrap().ends_with(&[0, 0, 0, 0]));
}

/// A state holding one entry in every map (so that no iteration order is
/// involved), as the store writes it in a snapshot: pinned byte for byte, so
/// that a change of `State`'s representation cannot change the format.
#[test]
fn store_snapshot_format_is_pinned() {
    use bytes::Bytes;
    use confab_proto::server::HashParams;
    use confab_proto::server::state::{Conversation, ItemKind, QueuedItem, Recorded, SecretHash, TokenRecord, User};
    use confab_proto::token::TokenKind;
    use confab_proto::wire::HistoryEntry;
    use confab_proto::wire::{Opcode, ResponseBody, Status};

    let secret = SecretHash { salt: [1; 16], hash: [2; 32], params: HashParams::INSECURE_FAST };
    let user = User {
        password: secret.clone(),
        passphrase: secret,
        identity_key: Bytes::from_static(b"ik"),
        secret: [3; 32],
        created_ms: 4,
    };
    let token = |kind, family| TokenRecord { kind, username: "al".into(), family, expires_ms: 9, rotated: None };
    let recorded = Recorded { opcode: Opcode::SendMp, status: Status::Valid, code: 200, body: ResponseBody::Empty };
    let entry = HistoryEntry { from: "al".into(), seq: 1, sent_ms: 5, sealed: Bytes::from_static(b"s") };
    let item = QueuedItem { seq: 1, sent_ms: 6, kind: ItemKind::Message { sealed: Bytes::from_static(b"m") } };
    let changes = [
        Change::UserCreated { username: "al".into(), user },
        Change::TokenIssued { hash: [7; 32], record: token(TokenKind::Access, 1) },
        Change::TokenIssued { hash: [8; 32], record: token(TokenKind::Refresh, 2) },
        Change::FamilyRevoked { family: 2 },
        Change::RoomCreated { room: "rm".into(), verifier: Bytes::from_static(b"v"), owner: "al".into() },
        Change::RoomDescribed { room: "rm".into(), descriptor: Bytes::from_static(b"d") },
        Change::RoomMessage { room: "rm".into(), entry },
        Change::ConversationSet { a: "al".into(), b: "al".into(), state: Some(Conversation::Open) },
        Change::Enqueued { from: "al".into(), to: "al".into(), item },
        Change::NoticeAdded { user: "al".into(), peer: "al".into(), seq: 1 },
        Change::Recorded { family: 1, request_id: 3, response: recorded },
        Change::OidcLoginBound { key: [10; 32], login: OidcLogin { family: 1, expires_ms: 11 } },
        Change::OidcSubjectBound { subject: [12; 32], username: "al".into() },
        Change::MailOut { to: 2, seq: 5, item: Bytes::from_static(b"i") },
        Change::MailIn { from: 3, seq: 7 },
        Change::RequestMailed {
            to: 2,
            ticket: 5,
            request: MailedRequest {
                family: 1,
                request_id: 4,
                opcode: Opcode::CloseMp,
                user: "al".into(),
                peer: "bo".into(),
            },
        },
    ];
    let mut state = State::new(20, 1024);
    for change in &changes {
        state.apply(change);
    }
    let hex: String = postcard::to_stdvec(&state).unwrap().iter().map(|b| format!("{b:02x}")).collect();
    // Written by the store of format 3 before `State` was split into books.
    let expected = concat!(
        "0102616c0101010101010101010101010101010102020202020202020202020202020202020202020202020202020202",
        "020202020801010101010101010101010101010101010102020202020202020202020202020202020202020202020202",
        "0202020202020208010102696b0303030303030303030303030303030303030303030303030303030303030303040107",
        "070707070707070707070707070707070707070707070707070707070707070002616c0109000102726d017601640261",
        "6c0102616c0102616c01050173020102616c0102616c010102616c0102616c0201010603016d0102616c0102616c0102",
        "616c01010102616c0102616c010101010301030800c801001480080200010a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a",
        "0a0a0a0a0a0a0a0a0a0a0a0a0a0a010b0108080808080808080808080808080808080808080808080808080808080808",
        "0809010c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c02616c0102616c0c0c0c0c0c0c",
        "0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c",
        // Format 5: `retry_keys`, empty.
        "00",
        // Format 6: `mail_next` (to partition 2, next 6) and `mail_applied` (from 3, up to 7).
        "010206010307",
        // Format 7: `mail_pending`: (partition 2, ticket 5) -> family 1, request 4, close_mp, al, bo.
        "01020501040d02616c02626f"
    );
    assert_eq!(hex, expected);
    assert_eq!(postcard::from_bytes::<State>(&postcard::to_stdvec(&state).unwrap()).unwrap(), state);
}

/// A logged `Change::Enqueued` (its names shared `Arc<str>`s in memory since
/// issue 13) is the record a `String`-named one was: variant 13, the two
/// names as strings, the item; and it reads back.
#[test]
fn an_enqueued_change_is_logged_as_before() {
    use bytes::Bytes;
    use confab_proto::server::state::{ItemKind, QueuedItem};

    let item = QueuedItem { seq: 4, sent_ms: 6, kind: ItemKind::Message { sealed: Bytes::from_static(b"m") } };
    let change = Change::Enqueued { from: "al".into(), to: "bob".into(), item: item.clone() };
    let record = postcard::to_stdvec(&change).unwrap();
    let as_strings = postcard::to_stdvec(&(13u32, "al".to_owned(), "bob".to_owned(), &item)).unwrap();
    assert_eq!(record, as_strings);
    assert_eq!(postcard::from_bytes::<Change>(&record).unwrap(), change);
}
