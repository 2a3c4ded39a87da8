//! The whole CLI logic (not the binary) against a real in-process server.

mod support;

use std::time::Duration;

use confab_client::commands::{account, code, dm, exit, listen, room, safety};
use confab_client::profile::Profile;
use support::{World, of_kind, ok, texts};

#[test]
fn rooms_dms_restarts_crash_expiry_and_logout() {
    let w = World::new("scenario");

    // Accounts, a room, a chat.
    ok(w.run(Some("alice"), None, |e, o| account::register(e, o, "alice")));
    ok(w.run(Some("alice"), Some("pass2934 of room11"), |e, o| room::create(e, o, "room11")));
    ok(w.run(Some("bob"), None, |e, o| account::register(e, o, "bob")));
    let lines = ok(w.run(Some("bob"), Some("pass2934 of room11"), |e, o| room::join(e, o, "room11")));
    assert_eq!(of_kind(&lines, "ok")[0]["members"], serde_json::json!(["alice", "bob"]));
    ok(w.run(Some("alice"), None, |e, o| room::send(e, o, "room11", "hello room")));
    ok(w.run(Some("bob"), None, |e, o| room::send(e, o, "room11", "hi alice")));
    let lines = ok(w.run(Some("alice"), None, |e, o| room::history(e, o, "room11")));
    assert_eq!(texts(&lines, "room_message"), ["hello room", "hi alice"]);
    let (code, lines) = w.run(Some("bob"), Some("wrong"), |e, o| room::join(e, o, "room11"));
    assert_eq!(code, exit::REFUSED, "{lines:#?}");
    assert!(of_kind(&lines, "error")[0]["hint"].is_string());

    // A DM request while bob is offline (between commands, bob is offline).
    let lines = ok(w.run(Some("alice"), None, |e, o| dm::request(e, o, "bob")));
    assert_eq!(of_kind(&lines, "ok")[0]["queued"], true);
    let (code, lines) = w.run(Some("alice"), None, |e, o| dm::send(e, o, "bob", "too early"));
    assert_eq!(code, exit::REFUSED);
    assert!(of_kind(&lines, "error")[0]["hint"].as_str().unwrap().contains("dm request bob"), "{lines:#?}");
    let lines = ok(w.run(Some("bob"), None, |e, o| dm::accept(e, o, "alice")));
    let number = of_kind(&lines, "ok")[0]["safety_number"].as_str().unwrap().to_owned();
    assert_eq!(number.len(), 60);
    let lines = ok(w.run(Some("alice"), None, |e, o| safety::safety_number(e, o, "bob", false)));
    assert_eq!(of_kind(&lines, "ok")[0]["safety_number"], number.as_str(), "both read the same number");
    ok(w.run(Some("alice"), None, |e, o| dm::send(e, o, "bob", "secret hi")));
    let lines = ok(w.run(Some("bob"), None, |e, o| dm::read(e, o, None)));
    assert_eq!(texts(&lines, "message"), ["secret hi"]);
    let lines = ok(w.run(Some("bob"), None, |e, o| dm::read(e, o, Some("alice"))));
    assert_eq!(texts(&lines, "message"), ["secret hi"], "exactly once, across restarts");

    // A crash: the send is stored and written, the server performs it, the
    // answer is never read. The next process re-sends it with the same id.
    {
        let (code, _) = w.run(Some("alice"), None, |e, _| {
            let mut session = e.resume(None)?;
            let now = session.now();
            session.sc().send_mp(now, "bob", "sent before the crash")?;
            session.pump()?; // saved, then transmitted
            // The process dies here: no answer read, no goodbye.
            Ok(())
        });
        assert_eq!(code, exit::OK);
        let profile = Profile::open(&w.profile_dir("alice")).unwrap();
        assert_eq!(profile.outbox().unwrap().len(), 1, "unanswered, so still in the stored outbox");
    }
    ok(w.run(Some("alice"), None, listen::listen));
    let profile = Profile::open(&w.profile_dir("alice")).unwrap();
    assert!(profile.outbox().unwrap().is_empty(), "answered after the re-send");
    drop(profile);
    let lines = ok(w.run(Some("bob"), None, |e, o| dm::read(e, o, None)));
    assert_eq!(texts(&lines, "message"), ["secret hi", "sent before the crash"], "delivered exactly once");

    // Received MPs expire an hour after receipt, from memory and from disk.
    w.advance(Duration::from_secs(3601));
    let lines = ok(w.run(Some("bob"), None, |e, o| dm::read(e, o, None)));
    assert!(texts(&lines, "message").is_empty(), "{lines:#?}");
    let profile = Profile::open(&w.profile_dir("bob")).unwrap();
    assert!(profile.received(None).unwrap().is_empty());
    drop(profile);

    // Codes: issued to alice, verified once by a third party.
    let lines = ok(w.run(Some("alice"), None, |e, o| code::issue(e, o, "game-7")));
    let issued = of_kind(&lines, "ok")[0]["code"].as_str().unwrap().to_owned();
    ok(w.run(None, None, |e, o| code::verify(e, o, "alice", "game-7", &issued)));
    let (code, _) = w.run(None, None, |e, o| code::verify(e, o, "alice", "game-7", &issued));
    assert_eq!(code, exit::REFUSED, "single use");

    // Logout revokes the session and erases the secrets.
    let profile = Profile::open(&w.profile_dir("alice")).unwrap();
    let token = profile.meta("refresh_token").unwrap().expect("a session");
    drop(profile);
    ok(w.run(Some("alice"), None, |e, o| account::logout(e, o, None)));
    let profile = Profile::open(&w.profile_dir("alice")).unwrap();
    assert_eq!(profile.meta("refresh_token").unwrap(), None);
    let identity = profile.identity().unwrap().expect("the password-encrypted key stays");
    assert!(identity.session.is_none(), "the session copy of the key is erased");
    assert!(profile.load(0).unwrap().is_none(), "MP and room keys erased");
    drop(profile);
    let raw = std::fs::read(w.profile_dir("alice").join("profile.sqlite3")).unwrap();
    assert!(!raw.windows(token.len()).any(|win| win == token.as_bytes()), "the token is not left on disk");
    assert!(!token_works(&w, &token), "the server revoked the refresh token");
    let (code, lines) = w.run(Some("alice"), None, |e, o| room::send(e, o, "room11", "after logout"));
    assert_eq!(code, exit::AUTH, "{lines:#?}");
    assert!(of_kind(&lines, "error")[0]["hint"].as_str().unwrap().contains("confab login alice"));

    // Logging in again needs the password (the key stays on the device);
    // room keys were erased with the session: join again to get them back.
    ok(w.run(None, None, |e, o| account::login(e, o, "alice")));
    let (code, _) = w.run(Some("alice"), None, |e, o| room::send(e, o, "room11", "back"));
    assert_eq!(code, exit::REFUSED);
    let lines = ok(w.run(Some("alice"), Some("pass2934 of room11"), |e, o| room::join(e, o, "room11")));
    assert_eq!(texts(&lines, "room_message"), ["hello room", "hi alice"], "history opens again");
    ok(w.run(Some("alice"), None, |e, o| room::send(e, o, "room11", "back")));
}

/// Whether a fresh client can resume a session with `token`.
fn token_works(w: &World, token: &str) -> bool {
    use confab_client::connect::Connector;
    use confab_client::proto::{Client, ClientConfig, ClientEvent, Ephemeral};
    use confab_transports::link::Driver;
    let link = w.connector().connect().unwrap();
    let now = *w.time.lock().unwrap();
    let mut client = Client::new(ClientConfig::default(), now);
    client.resume(token.to_owned());
    let mut driver = Driver::new(client, Ephemeral, w.clock());
    driver.connect(link).unwrap();
    for _ in 0..10 {
        let stepped = driver.step(now.instant);
        for event in driver.take_events() {
            match event {
                ClientEvent::Connected { .. } => return true,
                ClientEvent::Failed { .. } => return false,
                _ => {}
            }
        }
        if stepped.is_err() {
            return false;
        }
    }
    false
}

#[test]
fn profiles_are_private_and_the_last_login_is_the_default() {
    let w = World::new("private");
    let (code, lines) = w.run(Some("alice"), None, |e, o| account::register(e, o, "alice"));
    assert_eq!(code, exit::OK, "{lines:#?}");
    let dir = w.profile_dir("alice");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let file = std::fs::metadata(dir.join("profile.sqlite3")).unwrap();
        assert_eq!(file.permissions().mode() & 0o777, 0o600);
    }
    // A name taken by someone else: refused, and no key is left behind.
    let (code, lines) = w.run(Some("carol"), None, |e, o| account::register(e, o, "alice"));
    assert_eq!(code, exit::REFUSED, "the device already has a session for alice: {lines:#?}");
    let (code, lines) = w.run(None, None, |e, o| {
        e.profile = Some(e.data_dir.clone().unwrap().join("elsewhere"));
        account::register(e, o, "alice")
    });
    assert_eq!(code, exit::REFUSED, "{lines:#?}");
    let elsewhere = Profile::open(&w.data.join("elsewhere")).unwrap();
    assert!(elsewhere.identity().unwrap().is_none(), "a refused registration forgets its key");
    drop(elsewhere);
    // No USER: the last login against this server.
    let (code, lines) = w.run(None, Some("lobby password"), |e, o| room::create(e, o, "lobby"));
    assert_eq!(code, exit::OK, "{lines:#?}");
    // A profile is used by one process at a time.
    let _held = Profile::open(&dir).unwrap();
    let (code, lines) = w.run(None, Some("lobby password"), |e, o| room::create(e, o, "lobby2"));
    assert_eq!(code, exit::LOCAL, "{lines:#?}");
    // Not logged in anywhere.
    let (code, lines) = w.run(Some("nobody"), None, |e, o| dm::read(e, o, None));
    assert_eq!(code, exit::AUTH, "{lines:#?}");
}

#[test]
fn a_changed_key_warns_blocks_and_can_be_accepted() {
    let w = World::new("keychange");
    ok(w.run(Some("alice"), None, |e, o| account::register(e, o, "alice")));
    ok(w.run(Some("bob"), None, |e, o| account::register(e, o, "bob")));
    ok(w.run(Some("alice"), None, |e, o| dm::request(e, o, "bob")));
    ok(w.run(Some("bob"), None, |e, o| dm::accept(e, o, "alice")));
    // Bob's contact book pinned another key for alice (as if the server had
    // lied at first contact, or alice re-registered): the real one now differs.
    let conn = rusqlite::Connection::open(w.profile_dir("bob").join("profile.sqlite3")).unwrap();
    let mallory = confab_client::proto::e2e::fixtures::MALLORY_SPKI;
    let n = conn.execute("UPDATE contacts SET pinned = ?1 WHERE user = 'alice'", [mallory]).unwrap();
    assert_eq!(n, 1);
    drop(conn);

    let lines = ok(w.run(Some("bob"), None, |e, o| safety::safety_number(e, o, "alice", false)));
    let warning = of_kind(&lines, "warning");
    assert!(warning.iter().any(|l| l["event"] == "key_changed"), "{lines:#?}");
    assert_eq!(of_kind(&lines, "ok")[0]["key_changed"], true);
    let (code, lines) = w.run(Some("bob"), None, |e, o| dm::send(e, o, "alice", "blocked"));
    assert_eq!(code, exit::REFUSED);
    assert!(of_kind(&lines, "error")[0]["hint"].as_str().unwrap().contains("--accept-new-key"), "{lines:#?}");

    let lines = ok(w.run(Some("bob"), None, |e, o| safety::safety_number(e, o, "alice", true)));
    assert_eq!(of_kind(&lines, "ok")[0]["accepted_new_key"], true);
    let lines = ok(w.run(Some("bob"), None, |e, o| safety::safety_number(e, o, "alice", false)));
    assert_eq!(of_kind(&lines, "ok")[0]["key_changed"], false, "{lines:#?}");
    // The old session went with the old key: a new handshake.
    let (code, _) = w.run(Some("bob"), None, |e, o| dm::send(e, o, "alice", "old session"));
    assert_eq!(code, exit::REFUSED);
    ok(w.run(Some("bob"), None, |e, o| dm::close(e, o, "alice")));
    ok(w.run(Some("bob"), None, |e, o| dm::request(e, o, "alice")));
    ok(w.run(Some("alice"), None, |e, o| dm::accept(e, o, "bob")));
    ok(w.run(Some("bob"), None, |e, o| dm::send(e, o, "alice", "new session")));
    let lines = ok(w.run(Some("alice"), None, |e, o| dm::read(e, o, Some("bob"))));
    assert_eq!(texts(&lines, "message"), ["new session"]);
}

/// A link that trickles: every other `recv` finds nothing yet, the others
/// at most 32 bytes.
struct Trickle {
    inner: Box<dyn confab_transports::link::Link>,
    pending: Vec<u8>,
    calls: u32,
}

impl confab_transports::link::Link for Trickle {
    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.send(bytes)
    }

    fn recv(&mut self, deadline: std::time::Instant) -> std::io::Result<Option<Vec<u8>>> {
        self.calls += 1;
        if self.calls % 2 == 1 {
            return Ok(None);
        }
        if self.pending.is_empty() {
            match self.inner.recv(deadline)? {
                Some(bytes) => self.pending = bytes,
                None => return Ok(None),
            }
        }
        let n = self.pending.len().min(32);
        Ok(Some(self.pending.drain(..n).collect()))
    }

    fn close(&mut self) {
        self.inner.close();
    }

    fn transport(&self) -> &'static str {
        "mem"
    }
}

struct TrickleConnector(support::TestConnector);

impl confab_client::connect::Connector for TrickleConnector {
    fn connect(&mut self) -> Result<Box<dyn confab_transports::link::Link>, confab_client::connect::ConnectError> {
        Ok(Box::new(Trickle { inner: self.0.connect()?, pending: Vec::new(), calls: 0 }))
    }

    fn server(&self) -> &str {
        self.0.server()
    }
}

#[test]
fn what_was_queued_arrives_before_the_command_goes_on_however_slow_the_link() {
    let w = World::new("trickle");
    ok(w.run(Some("alice"), None, |e, o| account::register(e, o, "alice")));
    ok(w.run(Some("bob"), None, |e, o| account::register(e, o, "bob")));
    ok(w.run(Some("alice"), None, |e, o| dm::request(e, o, "bob")));
    ok(w.run(Some("bob"), None, |e, o| dm::accept(e, o, "alice")));
    let sent = ["one", "two", "three", "four"];
    for text in sent {
        ok(w.run(Some("alice"), None, |e, o| dm::send(e, o, "bob", text)));
    }
    // Nothing arrives at the first look, then a few bytes at a time: bob's
    // client waits until it caught up with what was queued, not for a pause.
    let mut slow = TrickleConnector(w.connector());
    let lines = ok(w.run_via(&mut slow, Some("bob"), None, |e, o| dm::read(e, o, Some("alice"))));
    assert_eq!(texts(&lines, "message"), sent);
}
