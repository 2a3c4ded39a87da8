//! A send whose answer is lost is pending, shown by `confab outbox`, and
//! delivered once: running the same command again does not send it twice.

mod support;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use confab_client::commands::{account, dm, exit, pending, room};
use confab_client::connect::{ConnectError, Connector};
use confab_client::proto::wire::{FrameDecoder, Limits, Message, RequestBody};
use confab_transports::link::Link;
use support::{SERVER, TestConnector, World, of_kind, ok, texts};

/// Passes everything until a send (`send_mp`, `send_room`) was written;
/// from then on the server's answers are lost and the link fails, once.
struct LosesAnswer {
    inner: Box<dyn Link>,
    armed: Arc<AtomicBool>,
    lost: bool,
}

impl Link for LosesAnswer {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut decoder = FrameDecoder::new(Limits::DEFAULT);
        decoder.push(bytes);
        while let Ok(Some(frame)) = decoder.next_frame() {
            if let Ok(Message::Request(r)) = Message::decode(&frame, &Limits::DEFAULT)
                && matches!(r.body, RequestBody::SendMp(_) | RequestBody::SendRoom(_))
                && self.armed.swap(false, Ordering::SeqCst)
            {
                self.lost = true;
            }
        }
        self.inner.send(bytes)
    }
    fn recv(&mut self, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
        if self.lost {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        self.inner.recv(deadline)
    }
    fn close(&mut self) {
        self.inner.close();
    }
    fn transport(&self) -> &'static str {
        "mem"
    }
}

struct Lossy {
    inner: TestConnector,
    armed: Arc<AtomicBool>,
}

impl Connector for Lossy {
    fn connect(&mut self) -> Result<Box<dyn Link>, ConnectError> {
        Ok(Box::new(LosesAnswer { inner: self.inner.connect()?, armed: self.armed.clone(), lost: false }))
    }
    fn server(&self) -> &str {
        SERVER
    }
}

#[test]
fn a_send_whose_answer_is_lost_is_pending_and_delivered_once() {
    let w = World::new("pending");
    ok(w.run(Some("alice"), None, |e, o| account::register(e, o, "alice")));
    ok(w.run(Some("bob"), None, |e, o| account::register(e, o, "bob")));
    ok(w.run(Some("alice"), None, |e, o| dm::request(e, o, "bob")));
    ok(w.run(Some("bob"), None, |e, o| dm::accept(e, o, "alice")));
    ok(w.run(Some("alice"), Some("pass of the lobby"), |e, o| room::create(e, o, "lobby")));

    // The server performs the send; its answer never comes back.
    let mut lossy = Lossy { inner: w.connector(), armed: Arc::new(AtomicBool::new(true)) };
    let (code, lines) = w.run_via(&mut lossy, Some("alice"), None, |e, o| dm::send(e, o, "bob", "exactly once"));
    assert_eq!(code, exit::NETWORK, "{lines:#?}");
    let error = of_kind(&lines, "error")[0]["message"].as_str().unwrap().to_owned();
    assert!(error.contains("pending") && error.contains("delivered once"), "{error}");
    assert!(!error.contains("nothing acknowledged was lost"), "{error}");

    // `confab outbox` shows it, in JSON too.
    let lines = ok(w.run(Some("alice"), None, pending::outbox));
    let items = of_kind(&lines, "pending");
    assert_eq!(items.len(), 1, "{lines:#?}");
    assert_eq!(items[0]["command"], "dm send");
    assert_eq!(items[0]["target"], "bob");
    assert_eq!(of_kind(&lines, "ok")[0]["pending"], 1);

    // The user runs the same command again: the pending one goes out, not a second one.
    let lines = ok(w.run(Some("alice"), None, |e, o| dm::send(e, o, "bob", "exactly once")));
    assert_eq!(of_kind(&lines, "ok")[0]["was_pending"], true, "{lines:#?}");
    let lines = ok(w.run(Some("bob"), None, |e, o| dm::read(e, o, None)));
    assert_eq!(texts(&lines, "message"), ["exactly once"], "delivered once");
    let lines = ok(w.run(Some("alice"), None, pending::outbox));
    assert!(of_kind(&lines, "pending").is_empty(), "{lines:#?}");
    // No longer pending: the same text again is a new message.
    ok(w.run(Some("alice"), None, |e, o| dm::send(e, o, "bob", "exactly once")));
    let lines = ok(w.run(Some("bob"), None, |e, o| dm::read(e, o, None)));
    assert_eq!(texts(&lines, "message"), ["exactly once", "exactly once"]);

    // The same in a room.
    lossy.armed.store(true, Ordering::SeqCst);
    let (code, lines) = w.run_via(&mut lossy, Some("alice"), None, |e, o| room::send(e, o, "lobby", "room once"));
    assert_eq!(code, exit::NETWORK, "{lines:#?}");
    let lines = ok(w.run(Some("alice"), None, |e, o| room::send(e, o, "lobby", "room once")));
    assert_eq!(of_kind(&lines, "ok")[0]["was_pending"], true, "{lines:#?}");
    let lines = ok(w.run(Some("alice"), None, |e, o| room::history(e, o, "lobby")));
    assert_eq!(texts(&lines, "room_message"), ["room once"], "sent once");
}

#[test]
fn message_text_cannot_forge_lines_or_reach_the_terminal_raw() {
    let w = World::new("escape");
    ok(w.run(Some("alice"), None, |e, o| account::register(e, o, "alice")));
    ok(w.run(Some("bob"), None, |e, o| account::register(e, o, "bob")));
    ok(w.run(Some("alice"), None, |e, o| dm::request(e, o, "bob")));
    ok(w.run(Some("bob"), None, |e, o| dm::accept(e, o, "alice")));
    let text = "hi\ncarol: send me your password\u{1b}[2J\u{7}\u{202e}";
    ok(w.run(Some("alice"), None, |e, o| dm::send(e, o, "bob", text)));
    let (code, stdout, _) = w.run_human(Some("bob"), |e, o| dm::read(e, o, None));
    assert_eq!(code, exit::OK);
    assert_eq!(
        stdout, "alice: hi\\ncarol: send me your password\\u{001b}[2J\\u{0007}\\u{202e}\n",
        "one line, no raw controls"
    );
    let lines = ok(w.run(Some("bob"), None, |e, o| dm::read(e, o, None)));
    assert_eq!(texts(&lines, "message"), [text], "JSON output is exact");
}
