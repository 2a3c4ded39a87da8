//! A flood of refused requests costs a few log lines, not one per attempt
//! (issue 12, item 8): 73,000 lines in 20 s were seen before the limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_proto::wire::{FrameDecoder, Limits, Login, Message, Request, RequestBody};
use confab_tests::procs::{ServerProc, TempDir};
use confab_transports::link::Link;
use confab_transports::tcp;
use confab_transports::tls::{self, ClientTrust};

/// Refused logins sent on one connection.
const GUESSES: u32 = 2_000;

#[test]
fn a_login_flood_is_logged_as_a_burst_and_a_summary() {
    let dir = TempDir::new("log-volume");
    let config = dir.path().join("confab-server.toml");
    // A one-second interval, so the summary comes within the test.
    std::fs::write(&config, "[log]\nburst = 5\ninterval_secs = 1\n").expect("write");
    let server = ServerProc::start(&dir.path().join("data"), Some(&config));

    let pin = server.pin.parse().expect("pin");
    let tls = tls::client_config(&ClientTrust::Pin(pin)).expect("tls");
    let mut link = tcp::connect(server.tcp, tls::server_name("localhost"), Arc::new(tls), Duration::from_secs(10))
        .expect("connect");
    // Wrong passwords for an unknown user, pipelined: the per-source limit
    // answers most with 429 at once, the rest are hashed and answered 401.
    let mut bytes = Vec::new();
    for id in 1..=GUESSES {
        let body = RequestBody::from(Login { username: "nobody".into(), password: format!("guess {id}") });
        bytes.extend_from_slice(&Message::Request(Request { request_id: id, timestamp_ms: 0, body }).to_bytes(&[]));
    }
    link.send(&bytes).expect("send");

    let limits = Limits::default();
    let mut decoder = FrameDecoder::new(limits);
    let mut answered = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered < GUESSES {
        let chunk = link.recv(deadline).expect("recv").expect("every guess answered within 60 s");
        decoder.push(&chunk);
        while let Some(frame) = decoder.next_frame().expect("valid frames") {
            if matches!(Message::decode(&frame, &limits), Ok(Message::Response(_))) {
                answered += 1;
            }
        }
    }
    // The interval (1 s) ends: the loop wakes up on its own to write the summary.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("log lines left out") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = server.log();
    // At most the burst per status code (429 from the limit, 401 after a hash, 503 when the queue is full).
    let mut per_code = std::collections::BTreeMap::<&str, usize>::new();
    let lines = || log.lines().filter(|l| l.contains("request refused") && !l.contains("log lines left out"));
    for line in lines() {
        let code = line.split_whitespace().find(|w| w.starts_with("code=")).expect("a code field");
        *per_code.entry(code).or_default() += 1;
    }
    assert!(per_code.values().all(|&n| n <= 5), "{per_code:?} lines for {GUESSES} refusals (burst 5 per code)");
    assert!(lines().count() >= 5, "the first lines of a flood are still written");
    let summary = log.lines().find(|l| l.contains("log lines left out")).expect("a summary line");
    assert!(summary.contains("request refused 429 x"), "{summary}");
    assert!(log.len() < 64 * 1024, "{} bytes of log for {GUESSES} refused logins", log.len());
}
