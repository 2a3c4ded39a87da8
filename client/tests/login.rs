//! A failed `login` changes nothing in the profile, and a profile belongs to
//! one user: logging in as someone else there never touches its keys.

mod support;

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::time::Instant;

use confab_client::commands::{account, dm, exit, room};
use confab_client::connect::{ConnectError, Connector};
use confab_client::secrets::Secret;
use confab_transports::link::Link;
use support::{PASSPHRASE, PASSWORD, SERVER, World, of_kind, ok};

/// Every row of every table of the profile, as text: equal dumps, equal profiles.
fn dump(dir: &Path) -> String {
    let conn = rusqlite::Connection::open(dir.join(confab_client::profile::FILE_NAME)).unwrap();
    let mut out = String::new();
    for table in ["meta", "identity", "contacts", "outbox", "received", "state"] {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY 1")).unwrap();
        let columns = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let mut row = Vec::new();
                for i in 0..columns {
                    row.push(format!("{:?}", r.get_ref(i)?));
                }
                Ok(row.join("|"))
            })
            .unwrap();
        for row in rows {
            out.push_str(&format!("{table}: {}\n", row.unwrap()));
        }
    }
    out
}

fn secrets(passphrase: &str) -> HashMap<Secret, String> {
    HashMap::from([
        (Secret::Password, PASSWORD.to_owned()),
        (Secret::Passphrase, passphrase.to_owned()),
        (Secret::RoomPassword, "pass of the lobby".to_owned()),
    ])
}

/// A link on which the server never answers.
struct Silent;

impl Link for Silent {
    fn send(&mut self, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn recv(&mut self, _: Instant) -> io::Result<Option<Vec<u8>>> {
        Ok(None)
    }
    fn close(&mut self) {}
    fn transport(&self) -> &'static str {
        "mem"
    }
}

struct SilentConnector;

impl Connector for SilentConnector {
    fn connect(&mut self) -> Result<Box<dyn Link>, ConnectError> {
        Ok(Box::new(Silent))
    }
    fn server(&self) -> &str {
        SERVER
    }
}

/// alice with a room key and an MP session with bob.
fn alice_with_keys(w: &World) {
    ok(w.run(Some("alice"), None, |e, o| account::register(e, o, "alice")));
    ok(w.run(Some("bob"), None, |e, o| account::register(e, o, "bob")));
    ok(w.run(Some("alice"), Some("pass of the lobby"), |e, o| room::create(e, o, "lobby")));
    ok(w.run(Some("alice"), None, |e, o| dm::request(e, o, "bob")));
    ok(w.run(Some("bob"), None, |e, o| dm::accept(e, o, "alice")));
    ok(w.run(Some("alice"), None, |e, o| dm::send(e, o, "bob", "before")));
}

#[test]
fn a_failed_login_changes_nothing_in_the_profile() {
    let w = World::new("login-fails");
    alice_with_keys(&w);
    let dir = w.profile_dir("alice");
    let before = dump(&dir);

    // A wrong passphrase: the server refuses (401, then 429 once the guesses run out).
    let mut codes = Vec::new();
    for _ in 0..6 {
        let (code, lines) =
            w.run_secrets(&mut w.connector(), None, secrets("wrong passphrase"), |e, o| account::login(e, o, "alice"));
        assert_ne!(code, exit::OK, "{lines:#?}");
        codes.push(of_kind(&lines, "error")[0]["message"].as_str().unwrap().to_owned());
        assert!(dump(&dir) == before, "a refused login changed the profile: {lines:#?}");
    }
    assert!(codes.iter().any(|m| m.contains("(401)")), "{codes:#?}");
    // No answer at all (a timeout).
    let (code, lines) =
        w.run_secrets(&mut SilentConnector, None, secrets(PASSPHRASE), |e, o| account::login(e, o, "alice"));
    assert_eq!(code, exit::NETWORK, "{lines:#?}");
    assert!(dump(&dir) == before, "a login without an answer changed the profile");

    // The session still works: its room key and MP session included.
    w.advance(std::time::Duration::from_secs(600));
    ok(w.run(Some("alice"), None, |e, o| room::send(e, o, "lobby", "still here")));
    ok(w.run(Some("alice"), None, |e, o| dm::send(e, o, "bob", "after")));
}

#[test]
fn logging_in_as_another_user_never_touches_a_profiles_keys() {
    let w = World::new("login-other");
    let shared = w.data.join("shared-profile");
    let with_shared = |e: &mut confab_client::commands::Env<'_>| e.profile = Some(shared.clone());
    ok(w.run(Some("bob"), None, |e, o| account::register(e, o, "bob")));
    ok(w.run(Some("alice"), None, |e, o| {
        with_shared(e);
        account::register(e, o, "alice")
    }));
    ok(w.run(Some("alice"), None, |e, o| {
        with_shared(e);
        dm::request(e, o, "bob")
    }));
    ok(w.run(Some("bob"), None, |e, o| dm::accept(e, o, "alice")));
    let before = dump(&shared);

    for other in ["nobody", "bob"] {
        let (code, lines) = w.run(None, None, |e, o| {
            with_shared(e);
            account::login(e, o, other)
        });
        assert_ne!(code, exit::OK, "{lines:#?}");
        let error = &of_kind(&lines, "error")[0];
        assert!(error["message"].as_str().unwrap().contains("alice"), "{lines:#?}");
        assert!(error["hint"].as_str().unwrap().contains("CONFAB_PROFILE"), "{lines:#?}");
        assert!(dump(&shared) == before, "logging in as {other} changed alice's profile");
        let (code, lines) = w.run(None, None, |e, o| {
            with_shared(e);
            account::register(e, o, other)
        });
        assert_ne!(code, exit::OK, "{lines:#?}");
        assert!(dump(&shared) == before, "registering {other} changed alice's profile");
    }
    ok(w.run(Some("alice"), None, |e, o| {
        with_shared(e);
        dm::send(e, o, "bob", "the session survived")
    }));
    let (_, lines) = w.run(Some("bob"), None, |e, o| dm::read(e, o, None));
    assert_eq!(of_kind(&lines, "message")[0]["text"], "the session survived");
}
