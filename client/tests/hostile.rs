//! A server whose answer cannot be read (a frame above the client's limit,
//! like the 1.2 MB room history of issue 12) never poisons the profile's
//! outbox: the command that asked fails with a clear error, and every later
//! command works.

mod support;

use std::io;
use std::time::Instant;

use confab_client::commands::{account, exit, pending, room};
use confab_client::connect::{ConnectError, Connector};
use confab_client::proto::wire::{FrameDecoder, Limits, Message, RequestBody};
use confab_transports::link::Link;
use support::{SERVER, TestConnector, World, of_kind, ok};

/// Answers every `room_history` with a response header announcing more data
/// than any client accepts, instead of the real answer.
struct Oversized {
    inner: Box<dyn Link>,
    poisoned: bool,
}

impl Link for Oversized {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut decoder = FrameDecoder::new(Limits::DEFAULT);
        decoder.push(bytes);
        while let Ok(Some(frame)) = decoder.next_frame() {
            if let Ok(Message::Request(r)) = Message::decode(&frame, &Limits::DEFAULT)
                && matches!(r.body, RequestBody::RoomHistory(_))
            {
                self.poisoned = true;
            }
        }
        self.inner.send(bytes)
    }
    fn recv(&mut self, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
        let real = self.inner.recv(deadline)?;
        if std::mem::take(&mut self.poisoned) {
            let mut header = vec![1u8, 2, 0, 0, 0, 0];
            header.extend_from_slice(&(Limits::DEFAULT.max_data + 200_000).to_be_bytes());
            return Ok(Some(header));
        }
        Ok(real)
    }
    fn close(&mut self) {
        self.inner.close();
    }
    fn transport(&self) -> &'static str {
        "mem"
    }
}

struct Hostile(TestConnector);

impl Connector for Hostile {
    fn connect(&mut self) -> Result<Box<dyn Link>, ConnectError> {
        Ok(Box::new(Oversized { inner: self.0.connect()?, poisoned: false }))
    }
    fn server(&self) -> &str {
        SERVER
    }
}

#[test]
fn an_unreadable_answer_fails_its_command_and_never_poisons_the_outbox() {
    let w = World::new("hostile");
    ok(w.run(Some("alice"), None, |e, o| account::register(e, o, "alice")));
    ok(w.run(Some("alice"), Some("pass of the lobby"), |e, o| room::create(e, o, "lobby")));

    let mut hostile = Hostile(w.connector());
    let (code, lines) = w.run_via(&mut hostile, Some("alice"), None, |e, o| room::history(e, o, "lobby"));
    assert_ne!(code, exit::OK, "{lines:#?}");
    let error = of_kind(&lines, "error")[0]["message"].as_str().unwrap().to_owned();
    assert!(error.contains("413") && error.contains("could not be read"), "{error}");

    // Every later command works, against the same server.
    for text in ["after one", "after two"] {
        ok(w.run_via(&mut hostile, Some("alice"), None, |e, o| room::send(e, o, "lobby", text)));
    }
    let lines = ok(w.run(Some("alice"), None, pending::outbox));
    assert!(of_kind(&lines, "pending").is_empty(), "nothing left to replay: {lines:#?}");
}
