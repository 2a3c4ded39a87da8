//! The real deployment, end to end: the `confab-server` binary on
//! 127.0.0.1 (ephemeral ports, a temporary data directory) and users driving
//! the `confab` binary over TCP+TLS and QUIC, exactly as the README's
//! quickstart does.
//!
//! - the full scenario over TCP, over QUIC, and mixed (a TCP user and a QUIC
//!   user in one room and one DM);
//! - SIGKILL right after a DM was acknowledged, restart, the DM read exactly once;
//! - hostile connections (random bytes, a length bomb, a frame dripped one
//!   byte per 100 ms, 500 half-open connections) while others keep chatting,
//!   with the server's memory bounded;
//! - after every scenario the data directory and the server's log hold none
//!   of the plaintexts sent.

use std::io::Write as _;
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use confab_proto::FrameDecoder;
use confab_tests::procs::{CliUser, ServerProc, TempDir, contains, read_tree};
use confab_transports::link::Link;
use confab_transports::tcp;
use confab_transports::tls::{self, ClientTrust, Pin};
use serde_json::Value;

/// The JSON lines of a command's output.
fn lines(stdout: &str) -> Vec<Value> {
    stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The texts of the `kind` lines (`message`, `room_message`) in `stdout`.
fn texts(stdout: &str, kind: &str) -> Vec<String> {
    lines(stdout)
        .into_iter()
        .filter(|v| v["kind"] == kind)
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect()
}

/// Asserts no plaintext occurs in the server's data directory or log.
fn assert_blind(server: &ServerProc, plaintexts: &[&str]) {
    let log = server.log();
    for p in plaintexts {
        assert!(!log.contains(p), "the server log contains the plaintext {p:?}");
        for (path, bytes) in read_tree(&server.data) {
            assert!(!contains(&bytes, p.as_bytes()), "{} contains the plaintext {p:?}", path.display());
        }
    }
}

/// Alice on `ta` and Bob on `tb`: register, a room, chat, a DM to Bob while
/// he is offline, Bob reads it once; the server stays blind.
fn full_scenario(ta: &'static str, tb: &'static str) {
    let dir = TempDir::new(&format!("scenario-{ta}-{tb}"));
    let server = ServerProc::start(&dir.path().join("data"), None);
    let alice = CliUser::new(dir.path(), "alice", &server, ta);
    let bob = CliUser::new(dir.path(), "bob", &server, tb);
    let room_text = format!("hello bob over {ta}, the kettle is on");
    let reply_text = format!("hi alice over {tb}, coming over");
    let dm_text = format!("secret plans for {ta}-{tb}: meet at the old mill");

    let _ = alice.ok(&["register", "alice"]);
    let _ = bob.ok(&["register", "bob"]);
    let _ = alice.ok(&["room", "create", "lobby"]);
    let _ = bob.ok(&["room", "join", "lobby"]);
    let _ = alice.ok(&["room", "send", "lobby", &room_text]);
    let history = bob.ok(&["room", "history", "lobby"]);
    assert!(texts(&history, "room_message").contains(&room_text), "bob's history: {history}");
    let _ = bob.ok(&["room", "send", "lobby", &reply_text]);
    let history = alice.ok(&["room", "history", "lobby"]);
    assert!(texts(&history, "room_message").contains(&reply_text), "alice's history: {history}");

    // Bob is offline between his commands: the request and the DM wait on the server.
    let _ = alice.ok(&["dm", "request", "bob"]);
    let _ = bob.ok(&["dm", "accept", "alice"]);
    let _ = alice.ok(&["dm", "send", "bob", &dm_text]);
    let read = bob.ok(&["dm", "read", "alice"]);
    assert_eq!(texts(&read, "message"), vec![dm_text.clone()], "bob's DMs: {read}");
    let again = bob.ok(&["dm", "read", "alice"]);
    assert_eq!(texts(&again, "message"), vec![dm_text.clone()], "a second read shows the same single DM: {again}");

    // Safety numbers agree on both sides.
    let a = lines(&alice.ok(&["safety-number", "bob"]));
    let b = lines(&bob.ok(&["safety-number", "alice"]));
    assert_eq!(a[0]["safety_number"], b[0]["safety_number"]);
    assert!(a[0]["safety_number"].is_string());

    assert_blind(&server, &[&room_text, &reply_text, &dm_text]);
}

#[test]
fn full_scenario_over_tcp() {
    full_scenario("tcp", "tcp");
}

#[test]
fn full_scenario_over_quic() {
    full_scenario("quic", "quic");
}

#[test]
fn a_tcp_user_and_a_quic_user_talk_to_each_other() {
    full_scenario("tcp", "quic");
}

#[test]
fn a_dm_acknowledged_before_sigkill_is_read_exactly_once_after_restart() {
    let dir = TempDir::new("sigkill");
    let data = dir.path().join("data");
    let mut server = ServerProc::start(&data, None);
    let alice = CliUser::new(dir.path(), "alice", &server, "tcp");
    let mut bob = CliUser::new(dir.path(), "bob", &server, "quic");
    let _ = alice.ok(&["register", "alice"]);
    let _ = bob.ok(&["register", "bob"]);
    let _ = alice.ok(&["dm", "request", "bob"]);
    let _ = bob.ok(&["dm", "accept", "alice"]);
    let text = "acknowledged just before the crash: the key is under the mat";
    let _ = alice.ok(&["dm", "send", "bob", text]);
    let pin = server.pin.clone();
    server.kill();

    let restarted = ServerProc::start(&data, None);
    assert_eq!(restarted.pin, pin, "the certificate (and so the pin) survives a restart");
    bob.reconnect_to(&restarted);
    let read = bob.ok(&["dm", "read", "alice"]);
    assert_eq!(texts(&read, "message"), vec![text.to_owned()], "bob's DMs after the restart: {read}");
    assert_blind(&restarted, &[text]);
}

/// A TLS connection to the server's TCP port.
fn tls_link(server: &ServerProc) -> Box<dyn Link> {
    let pin: Pin = server.pin.parse().expect("pin");
    let config = tls::client_config(&ClientTrust::Pin(pin)).expect("client config");
    let link = tcp::connect(server.tcp, tls::server_name("127.0.0.1"), Arc::new(config), Duration::from_secs(5))
        .expect("connect");
    Box::new(link)
}

/// Reads until the server closes the link; returns what it sent (frames).
fn read_until_closed(link: &mut dyn Link, within: Duration) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    loop {
        match link.recv(deadline) {
            Ok(Some(bytes)) => got.extend_from_slice(&bytes),
            Ok(None) => panic!("the server did not close the connection within {within:?}"),
            Err(_) => return got,
        }
    }
}

/// The code of the close frame in `bytes`, if any.
fn close_code(bytes: &[u8]) -> Option<u16> {
    let limits = confab_proto::Limits::default();
    let mut decoder = FrameDecoder::new(limits);
    decoder.push(bytes);
    let mut code = None;
    while let Ok(Some(frame)) = decoder.next_frame() {
        if let Ok(confab_proto::Message::Close(c)) = confab_proto::Message::decode(&frame, &limits) {
            code = Some(c.code);
        }
    }
    code
}

/// Two users chat (a room message sent by one, read by the other) while
/// `attack` runs; the attack must not disturb them.
fn chat_round(alice: &CliUser, bob: &CliUser, n: usize) {
    let text = format!("still chatting, round {n}");
    let _ = alice.ok(&["room", "send", "lobby", &text]);
    let history = bob.ok(&["room", "history", "lobby"]);
    assert!(texts(&history, "room_message").contains(&text), "round {n}: {history}");
}

#[test]
fn hostile_connections_never_disturb_the_others() {
    let dir = TempDir::new("hostile");
    let server = ServerProc::start(&dir.path().join("data"), None);
    let alice = CliUser::new(dir.path(), "alice", &server, "tcp");
    let bob = CliUser::new(dir.path(), "bob", &server, "quic");
    let _ = alice.ok(&["register", "alice"]);
    let _ = bob.ok(&["register", "bob"]);
    let _ = alice.ok(&["room", "create", "lobby"]);
    let _ = bob.ok(&["room", "join", "lobby"]);
    chat_round(&alice, &bob, 0);
    let rss_before = server.rss_kib().expect("rss");

    // Random bytes after the TLS handshake: a decode error, then the close.
    // The first byte is not protocol version 1: 505, as PROTOCOL.md says.
    let mut link = tls_link(&server);
    let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    assert_ne!(noise[0], 1);
    link.send(&noise).expect("send noise");
    let answer = read_until_closed(link.as_mut(), Duration::from_secs(10));
    assert_eq!(close_code(&answer), Some(505), "noise is refused as an unsupported version");
    // Noise that starts like a frame (version 1, an unknown frame type): 400.
    let mut link = tls_link(&server);
    let mut typed_noise = noise.clone();
    typed_noise[0] = 1;
    typed_noise[1] = 0xee;
    link.send(&typed_noise).expect("send noise");
    let answer = read_until_closed(link.as_mut(), Duration::from_secs(10));
    let code = close_code(&answer);
    assert!(code.is_some_and(|c| (400..500).contains(&c)), "typed noise got close code {code:?}");
    chat_round(&alice, &bob, 1);

    // A length bomb: a header announcing 2^64-1 bytes of data: 413 and closed.
    let mut link = tls_link(&server);
    link.send(&hex::decode("0101000000000000ffffffffffffffff").expect("hex")).expect("send bomb");
    let answer = read_until_closed(link.as_mut(), Duration::from_secs(10));
    assert_eq!(close_code(&answer), Some(413), "a length bomb is refused as too large");
    chat_round(&alice, &bob, 2);

    // 500 half-open connections (TCP connected, no TLS handshake) held while others chat.
    let half_open: Vec<TcpStream> = (0..500).filter_map(|_| TcpStream::connect(server.tcp).ok()).collect();
    assert!(half_open.len() >= 450, "only {} half-open connections could be made", half_open.len());
    // A frame dripped one byte per 100 ms on a TLS connection, at the same time.
    let drip_addr = tls_link(&server);
    let dripper = thread::spawn(move || {
        let mut link = drip_addr;
        let ping = confab_proto::Message::Ping(confab_proto::Ping { nonce: 42 }).to_bytes(&[]);
        for b in &ping {
            if link.send(std::slice::from_ref(b)).is_err() {
                return false;
            }
            thread::sleep(Duration::from_millis(100));
        }
        true
    });
    for n in 3..6 {
        chat_round(&alice, &bob, n);
    }
    let _ = dripper.join();
    let rss_during = server.rss_kib().expect("rss");
    assert!(
        rss_during < rss_before + 64 * 1024,
        "the server's memory grew from {rss_before} KiB to {rss_during} KiB under 500 half-open connections"
    );
    drop(half_open);
    chat_round(&alice, &bob, 6);

    // A raw TCP client writing garbage where a ClientHello belongs: dropped, others unaffected.
    let mut raw = TcpStream::connect(server.tcp).expect("connect");
    let _ = raw.write_all(&noise);
    chat_round(&alice, &bob, 7);
    assert_blind(&server, &["still chatting, round 7"]);
}
