//! The session loop stores the session and the outbox entry carrying a
//! sealed message before the message reaches the link, and never stores the
//! sending epoch (a restored profile must draw a new one).

mod support;

use std::io;
use std::path::PathBuf;
use std::time::Instant;

use confab_client::commands::{account, dm, exit};
use confab_client::connect::{ConnectError, Connector};
use confab_client::proto::e2e::seal::peek_header;
use confab_client::proto::e2e::secure::SecureSnapshot;
use confab_client::proto::wire::{FrameDecoder, Limits, Message, RequestBody};
use confab_transports::link::Link;
use support::{SERVER, TestConnector, World};

/// Checks every `send_mp` written against the profile on disk at that moment.
struct Checking {
    inner: Box<dyn Link>,
    db: PathBuf,
    checked: usize,
}

impl Checking {
    fn check(&mut self, bytes: &[u8]) {
        let mut decoder = FrameDecoder::new(Limits::DEFAULT);
        decoder.push(bytes);
        while let Ok(Some(frame)) = decoder.next_frame() {
            let Ok(Message::Request(request)) = Message::decode(&frame, &Limits::DEFAULT) else { continue };
            let RequestBody::SendMp(send) = request.body else { continue };
            let header = peek_header(&send.sealed).unwrap();
            // Read the file as another process would, without the profile's lock.
            let conn = rusqlite::Connection::open(&self.db).unwrap();
            let json: String = conn.query_row("SELECT snapshot FROM state", [], |r| r.get(0)).unwrap();
            let state: SecureSnapshot = serde_json::from_str(&json).unwrap();
            assert!(state.sessions.iter().any(|s| s.peer == send.peer), "session stored");
            let as_json = serde_json::to_string(&header.epoch.to_vec()).unwrap();
            // (The outbox holds the sealed frame itself, epoch included: a
            // retry resends that very message, never seals anew.)
            assert!(!json.contains(&as_json[1..as_json.len() - 1]), "the sending epoch is never stored");
            let stored: i64 = conn
                .query_row("SELECT COUNT(*) FROM outbox WHERE request_id = ?1", [request.request_id], |r| r.get(0))
                .unwrap();
            assert_eq!(stored, 1, "the request is in the stored outbox before it is written");
            self.checked += 1;
        }
    }
}

impl Link for Checking {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.check(bytes);
        self.inner.send(bytes)
    }
    fn recv(&mut self, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
        self.inner.recv(deadline)
    }
    fn close(&mut self) {
        self.inner.close();
    }
    fn transport(&self) -> &'static str {
        "mem"
    }
}

impl Drop for Checking {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert!(self.checked > 0, "a send_mp went through the link");
        }
    }
}

struct CheckingConnector {
    inner: TestConnector,
    db: PathBuf,
}

impl Connector for CheckingConnector {
    fn connect(&mut self) -> Result<Box<dyn Link>, ConnectError> {
        Ok(Box::new(Checking { inner: self.inner.connect()?, db: self.db.clone(), checked: 0 }))
    }
    fn server(&self) -> &str {
        SERVER
    }
}

#[test]
fn a_counter_is_on_disk_before_its_message_is_on_the_wire() {
    let w = World::new("durability");
    for user in ["alice", "bob"] {
        assert_eq!(w.run(Some(user), None, |e, o| account::register(e, o, user)).0, exit::OK);
    }
    assert_eq!(w.run(Some("alice"), None, |e, o| dm::request(e, o, "bob")).0, exit::OK);
    assert_eq!(w.run(Some("bob"), None, |e, o| dm::accept(e, o, "alice")).0, exit::OK);
    let db = w.profile_dir("alice").join(confab_client::profile::FILE_NAME);
    for text in ["one", "two"] {
        let mut checking = CheckingConnector { inner: w.connector(), db: db.clone() };
        let (code, lines) = w.run_via(&mut checking, Some("alice"), None, |e, o| dm::send(e, o, "bob", text));
        assert_eq!(code, exit::OK, "{lines:#?}");
    }
    let (_, lines) = w.run(Some("bob"), None, |e, o| dm::read(e, o, None));
    let texts: Vec<&str> = lines.iter().filter(|l| l["kind"] == "message").filter_map(|l| l["text"].as_str()).collect();
    assert_eq!(texts, ["one", "two"]);
}
