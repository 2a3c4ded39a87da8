//! Issue 12, item 7, client side: a server whose password-hash queue is
//! full answers `register`/`login` with 503 and the `retry_after_ms` at which
//! the check would fit (docs/PROTOCOL.md, "Password checks under load").
//! `confab` waits that long and retries once when the wait fits in its answer
//! timeout (saying so), and otherwise fails at once with "server busy: retry
//! in N s" and the exit code of a temporary failure.

mod support;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use confab_client::commands::{account, exit};
use confab_client::connect::{ConnectError, Connector};
use confab_client::proto::wire::{
    ErrorBody, Frame, FrameType, Limits, Message, Opcode, Response, ResponseBody, Status,
};
use confab_transports::link::Link;
use support::{SERVER, World, of_kind};

/// A link to the world's server on which the next `busy` password checks
/// (`register` or `login` requests) are answered 503 with `retry_after_ms`
/// instead of reaching the server, as a saturated server answers them.
struct BusyLink {
    inner: Box<dyn Link>,
    busy: Arc<AtomicUsize>,
    retry_after_ms: u64,
    answers: Vec<u8>,
}

impl Link for BusyLink {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut rest = Bytes::copy_from_slice(bytes);
        while let Ok(Some((frame, used))) = Frame::parse(&rest, &Limits::default()) {
            let header = (frame.frame_type == FrameType::Request).then(|| Message::request_header(&frame)).flatten();
            match header {
                Some((opcode @ (Opcode::Register | Opcode::Login), request_id))
                    if self.busy.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() =>
                {
                    let reason = format!("server busy checking passwords: retry in {} s", self.retry_after_ms / 1000);
                    let answer = Message::Response(Response {
                        opcode,
                        request_id,
                        timestamp_ms: 0,
                        status: Status::Error,
                        code: 503,
                        body: ResponseBody::Error(ErrorBody { reason, retry_after_ms: self.retry_after_ms }),
                    });
                    self.answers.extend_from_slice(&answer.to_bytes(&[]));
                }
                _ => self.inner.send(&rest[..used])?,
            }
            rest = rest.slice(used..);
        }
        Ok(())
    }

    fn recv(&mut self, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
        if !self.answers.is_empty() {
            return Ok(Some(std::mem::take(&mut self.answers)));
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

struct BusyConnector {
    world: World,
    busy: Arc<AtomicUsize>,
    retry_after_ms: u64,
}

impl BusyConnector {
    fn new(world: &World, busy: usize, retry_after_ms: u64) -> BusyConnector {
        BusyConnector { world: world.clone(), busy: Arc::new(AtomicUsize::new(busy)), retry_after_ms }
    }
}

impl Connector for BusyConnector {
    fn connect(&mut self) -> Result<Box<dyn Link>, ConnectError> {
        let inner = self.world.connector().connect()?;
        Ok(Box::new(BusyLink {
            inner,
            busy: self.busy.clone(),
            retry_after_ms: self.retry_after_ms,
            answers: Vec::new(),
        }))
    }

    fn server(&self) -> &str {
        SERVER
    }
}

#[test]
fn a_busy_server_is_waited_for_once_when_its_wait_fits_in_the_answer_timeout() {
    let w = World::new("busy-fits");
    // register: one 503 with 2 s (the harness's answer timeout is 5 s).
    let mut busy = BusyConnector::new(&w, 1, 2000);
    let (code, lines) = w.run_via(&mut busy, Some("alice"), None, |e, o| account::register(e, o, "alice"));
    assert_eq!(code, exit::OK, "{lines:#?}");
    assert_eq!(busy.busy.load(Ordering::SeqCst), 0, "the 503 was given");
    let warning = &of_kind(&lines, "warning")[0];
    assert_eq!(warning["event"], "server_busy", "{lines:#?}");
    assert_eq!(warning["retry_after_ms"], 2000, "{lines:#?}");
    // login: the same.
    let mut busy = BusyConnector::new(&w, 1, 2000);
    let (code, lines) = w.run_via(&mut busy, Some("alice"), None, |e, o| account::login(e, o, "alice"));
    assert_eq!(code, exit::OK, "{lines:#?}");
    assert_eq!(of_kind(&lines, "warning").len(), 1, "{lines:#?}");
    // Human output says so on standard error.
    let mut busy = BusyConnector::new(&w, 1, 1000);
    let (code, stdout, stderr) = w.run_human_via(&mut busy, Some("alice"), |e, o| account::login(e, o, "alice"));
    assert_eq!(code, exit::OK, "{stdout}{stderr}");
    assert!(stderr.contains("server busy") && stderr.contains("retrying in 1 s"), "{stderr}");
    // Retried once only: busy twice in a row fails, saying when to retry.
    let mut busy = BusyConnector::new(&w, 2, 2000);
    let (code, lines) = w.run_via(&mut busy, Some("alice"), None, |e, o| account::login(e, o, "alice"));
    assert_eq!(code, exit::BUSY, "{lines:#?}");
    assert_eq!(busy.busy.load(Ordering::SeqCst), 0);
    let error = &of_kind(&lines, "error")[0];
    assert!(error["message"].as_str().unwrap().contains("server busy: retry in 2 s"), "{lines:#?}");
}

#[test]
fn a_busy_server_whose_wait_exceeds_the_answer_timeout_says_when_to_retry() {
    let w = World::new("busy-long");
    let mut busy = BusyConnector::new(&w, 1, 42_000);
    let (code, lines) = w.run_via(&mut busy, Some("alice"), None, |e, o| account::register(e, o, "alice"));
    assert_eq!(code, exit::BUSY, "{lines:#?}");
    assert!(of_kind(&lines, "warning").is_empty(), "no wait: {lines:#?}");
    let error = &of_kind(&lines, "error")[0];
    assert!(error["message"].as_str().unwrap().contains("server busy: retry in 42 s"), "{lines:#?}");
    assert_eq!(error["exit_code"], exit::BUSY);
    // Nothing was created: the next attempt, with the server free, registers.
    let (code, lines) = w.run(Some("alice"), None, |e, o| account::register(e, o, "alice"));
    assert_eq!(code, exit::OK, "{lines:#?}");
}
