//! WebSocket end to end, with the `confab-server` and `confab` binaries:
//!
//! - a WebSocket user, a TCP user and a QUIC user in one room and in DMs;
//! - SIGKILL right after a DM sent over WebSocket was acknowledged, restart,
//!   the DM read exactly once;
//! - a client written with nothing but tungstenite and docs/PROTOCOL.md (its
//!   endpoint, subprotocol and example frames, read from the file) registers
//!   and logs in;
//! - over wss:// (`[ws] tls = "always"`), the pin is checked as over TCP;
//! - after each, the data directory and the server's log hold none of the
//!   plaintexts sent.
//!
//! Hostile input over WebSocket: tests/tests/websocket_hostile.rs.

use std::net::TcpStream;
use std::time::Duration;

use confab_tests::procs::{CliUser, ServerProc, TempDir, contains, read_tree};
use serde_json::Value;
use tungstenite::Message;
use tungstenite::client::ClientRequestBuilder;

/// The texts of the `kind` lines (`message`, `room_message`) in `stdout`.
fn texts(stdout: &str, kind: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
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

#[test]
fn websocket_tcp_and_quic_users_share_a_room_and_dms() {
    let dir = TempDir::new("ws-mixed");
    let server = ServerProc::start(&dir.path().join("data"), None);
    assert!(server.ws.starts_with("ws://127.0.0.1:") && server.ws.ends_with("/confab"), "{}", server.ws);
    let users: Vec<CliUser> = [("alice", "ws"), ("bob", "tcp"), ("carol", "quic")]
        .into_iter()
        .map(|(name, t)| CliUser::new(dir.path(), name, &server, t))
        .collect();
    let (alice, bob, carol) = (&users[0], &users[1], &users[2]);
    for (u, name) in users.iter().zip(["alice", "bob", "carol"]) {
        let _ = u.ok(&["register", name]);
    }
    let _ = alice.ok(&["room", "create", "lobby"]);
    let _ = bob.ok(&["room", "join", "lobby"]);
    let _ = carol.ok(&["room", "join", "lobby"]);
    let said: Vec<String> =
        users.iter().map(|u| format!("{} says hello over {} to the lobby", u.profile.display(), u.transport)).collect();
    for (u, text) in users.iter().zip(&said) {
        let _ = u.ok(&["room", "send", "lobby", text]);
    }
    for u in &users {
        let history = u.ok(&["room", "history", "lobby"]);
        let got = texts(&history, "room_message");
        for text in &said {
            assert!(got.contains(text), "{} ({}) misses {text:?}: {history}", u.profile.display(), u.transport);
        }
    }

    // DMs across transports, each read once by a recipient who was offline.
    let to_carol = "ws to quic: the meeting moved to thursday";
    let to_alice = "tcp to ws: bring the blue folder";
    let _ = alice.ok(&["dm", "request", "carol"]);
    let _ = carol.ok(&["dm", "accept", "alice"]);
    let _ = alice.ok(&["dm", "send", "carol", to_carol]);
    let _ = bob.ok(&["dm", "request", "alice"]);
    let _ = alice.ok(&["dm", "accept", "bob"]);
    let _ = bob.ok(&["dm", "send", "alice", to_alice]);
    assert_eq!(texts(&carol.ok(&["dm", "read", "alice"]), "message"), vec![to_carol.to_owned()]);
    assert_eq!(texts(&alice.ok(&["dm", "read", "bob"]), "message"), vec![to_alice.to_owned()]);
    assert_eq!(texts(&alice.ok(&["dm", "read", "bob"]), "message"), vec![to_alice.to_owned()], "still once");

    let mut plaintexts: Vec<&str> = said.iter().map(String::as_str).collect();
    plaintexts.extend([to_carol, to_alice]);
    assert_blind(&server, &plaintexts);
    assert!(server.log().contains("transport=ws"), "ws sessions are logged with their transport");
}

#[test]
fn a_dm_acknowledged_over_websocket_before_sigkill_is_read_exactly_once_after_restart() {
    let dir = TempDir::new("ws-sigkill");
    let data = dir.path().join("data");
    let mut server = ServerProc::start(&data, None);
    let alice = CliUser::new(dir.path(), "alice", &server, "ws");
    let mut bob = CliUser::new(dir.path(), "bob", &server, "ws");
    let _ = alice.ok(&["register", "alice"]);
    let _ = bob.ok(&["register", "bob"]);
    let _ = alice.ok(&["dm", "request", "bob"]);
    let _ = bob.ok(&["dm", "accept", "alice"]);
    let text = "sent over websocket just before the crash: the spare key is in the shed";
    let _ = alice.ok(&["dm", "send", "bob", text]);
    server.kill();

    let restarted = ServerProc::start(&data, None);
    bob.reconnect_to(&restarted);
    let read = bob.ok(&["dm", "read", "alice"]);
    assert_eq!(texts(&read, "message"), vec![text.to_owned()], "bob's DMs after the restart: {read}");
    let again = bob.ok(&["dm", "read", "alice"]);
    assert_eq!(texts(&again, "message"), vec![text.to_owned()], "exactly once: {again}");
    assert_blind(&restarted, &[text]);
}

/// The bytes of the `hex` block that follows `heading` in docs/PROTOCOL.md.
fn doc_example(doc: &str, heading: &str) -> Vec<u8> {
    let section = &doc[doc.find(heading).unwrap_or_else(|| panic!("PROTOCOL.md has no {heading:?}"))..];
    let block = &section[section.find("```hex\n").expect("a hex block") + 7..];
    let block = &block[..block.find("```").expect("the block's end")];
    let digits: String = block.chars().filter(|c| !c.is_whitespace()).collect();
    (0..digits.len()).step_by(2).map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex")).collect()
}

/// One frame as docs/PROTOCOL.md lays it out: `(type, data)`, or `None` if
/// `buf` does not hold a whole frame yet (which is then left in `buf`).
fn take_frame(buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    if buf.len() < 14 {
        return None;
    }
    let len_auth = u32::from_be_bytes(buf[2..6].try_into().unwrap()) as usize;
    let len_data = u64::from_be_bytes(buf[6..14].try_into().unwrap()) as usize;
    let end = 14 + len_auth + len_data;
    if buf.len() < end {
        return None;
    }
    let frame: Vec<u8> = buf.drain(..end).collect();
    Some((frame[1], frame[14 + len_auth..].to_vec()))
}

/// The next frame that is not a ping (answered with a pong, as the docs say).
fn next_frame(ws: &mut tungstenite::WebSocket<TcpStream>, buf: &mut Vec<u8>) -> (u8, Vec<u8>) {
    loop {
        while let Some((kind, data)) = take_frame(buf) {
            if kind == 4 {
                let mut pong = vec![1, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8];
                pong.extend_from_slice(&data);
                ws.send(Message::binary(pong)).expect("pong");
                continue;
            }
            return (kind, data);
        }
        match ws.read().expect("a message from the server") {
            Message::Binary(bytes) => buf.extend_from_slice(&bytes),
            Message::Close(frame) => panic!("the server closed: {frame:?}"),
            _ => {}
        }
    }
}

/// `(opcode, status, code)` of a response's data.
fn response(data: &[u8]) -> (u32, u8, u16) {
    let opcode = u32::from_be_bytes(data[0..4].try_into().unwrap());
    (opcode, data[16], u16::from_be_bytes(data[17..19].try_into().unwrap()))
}

#[test]
fn a_client_with_only_a_websocket_library_and_the_protocol_doc_registers_and_logs_in() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md")).expect("doc");
    // What the doc says a WebSocket client needs: the path and the subprotocol.
    for needed in ["`/confab`", "`confab.v1`", "binary message"] {
        assert!(doc.contains(needed), "docs/PROTOCOL.md does not say {needed}");
    }
    let dir = TempDir::new("ws-docs-client");
    let server = ServerProc::start(&dir.path().join("data"), None);
    let authority = server.ws.trim_start_matches("ws://").trim_end_matches("/confab").to_owned();
    let sock = TcpStream::connect(&authority).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let uri = format!("ws://{authority}/confab").parse().expect("uri");
    let request = ClientRequestBuilder::new(uri).with_sub_protocol("confab.v1");
    let (mut ws, answer) = tungstenite::client::client(request, sock).expect("the upgrade");
    assert_eq!(answer.headers()["sec-websocket-protocol"], "confab.v1");
    let mut buf = Vec::new();

    // register, login, passphrase: the doc's example frames, one per message.
    // The first is cut in two messages: any chunking goes.
    let register = doc_example(&doc, "### register (100001)");
    ws.send(Message::binary(register[..10].to_vec())).expect("send");
    ws.send(Message::binary(register[10..].to_vec())).expect("send");
    let (kind, data) = next_frame(&mut ws, &mut buf);
    assert_eq!((kind, response(&data)), (2, (100_001, 0, 201)), "register answered valid 201");
    ws.send(Message::binary(doc_example(&doc, "### login (100002)"))).expect("send");
    let (kind, data) = next_frame(&mut ws, &mut buf);
    assert_eq!((kind, response(&data)), (2, (100_002, 1, 202)), "login answered in_progress 202");
    ws.send(Message::binary(doc_example(&doc, "### passphrase (100003)"))).expect("send");
    let (kind, data) = next_frame(&mut ws, &mut buf);
    assert_eq!((kind, response(&data)), (2, (100_003, 0, 200)), "passphrase answered valid 200");
    // The tokens body: access_token text first (u16 length, then cfa_...).
    let len = u16::from_be_bytes(data[19..21].try_into().unwrap()) as usize;
    let token = String::from_utf8(data[21..21 + len].to_vec()).expect("utf-8");
    assert!(token.starts_with("cfa_"), "{token}");
    let (kind, data) = next_frame(&mut ws, &mut buf);
    assert_eq!((kind, u32::from_be_bytes(data[0..4].try_into().unwrap())), (3, 10_001), "then the connected event");
    ws.close(None).expect("close");
    assert_blind(&server, &["correct horse", "apple river stone"]);
}

#[test]
fn over_wss_the_pin_is_checked_exactly_as_over_tcp() {
    let dir = TempDir::new("ws-wss");
    let config = dir.path().join("wss.toml");
    std::fs::write(&config, "[ws]\ntls = \"always\"\n").expect("config");
    let server = ServerProc::start(&dir.path().join("data"), Some(&config));
    assert!(server.ws.starts_with("wss://127.0.0.1:"), "{}", server.ws);
    let alice = CliUser::new(dir.path(), "alice", &server, "ws");
    let _ = alice.ok(&["register", "alice"]);
    let _ = alice.ok(&["room", "create", "lobby"]);

    // Another key's pin: refused before anything is sent, saying the key changed.
    let mut mallory = CliUser::new(dir.path(), "mallory", &server, "ws");
    mallory.trust = vec!["--pin".to_owned(), format!("sha256//{}=", "A".repeat(43))];
    let out = mallory.run(&["register", "mallory"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a wrong pin was accepted over wss");
    assert!(stderr.contains("does not match the pinned key") || stderr.contains("changed"), "{stderr}");
    assert!(!server.log().contains("mallory"), "nothing of mallory's reached the server");
}
