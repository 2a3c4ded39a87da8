//! Hostile input over WebSocket, against the `confab-server` binary, while
//! two WebSocket users keep chatting: garbage before and after the upgrade,
//! a huge upgrade request, a confab length bomb inside a WebSocket message,
//! a WebSocket frame announcing 2^62 bytes, a wrong `Origin`, a text
//! message, 1,000 half-open upgrades, and 200 connections each holding a
//! half-sent message of the largest size allowed. And the keepalive: a
//! WebSocket ping is answered, a silent session gets the core's idle close. Each gets its specific answer
//! (docs/PROTOCOL.md, "Transports"), the users are not disturbed, the
//! server's memory stays bounded and the refusals are logged as counts.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use confab_proto::wire::{FrameDecoder, Limits, Message as Wire};
use confab_tests::procs::{CliUser, ServerProc, TempDir};
use confab_tests::raw::connect_from;
use serde_json::Value;
use tungstenite::client::ClientRequestBuilder;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::{Message, WebSocket};

fn texts(stdout: &str, kind: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == kind)
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect()
}

fn chat_round(alice: &CliUser, bob: &CliUser, n: usize) {
    let text = format!("still chatting over websocket, round {n}");
    let _ = alice.ok(&["room", "send", "lobby", &text]);
    let history = bob.ok(&["room", "history", "lobby"]);
    assert!(texts(&history, "room_message").contains(&text), "round {n}: {history}");
}

fn ws_addr(server: &ServerProc) -> SocketAddr {
    server.ws.trim_start_matches("ws://").trim_end_matches("/confab").parse().expect("ws address")
}

/// A raw socket: writes `bytes`, returns everything the server answers until it closes.
fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let _ = sock.write_all(bytes);
    let mut answer = Vec::new();
    let _ = sock.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// An upgraded client (tungstenite over a blocking socket), with `origin` if given.
fn client(addr: SocketAddr, origin: Option<&str>) -> tungstenite::Result<WebSocket<TcpStream>> {
    let sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut request =
        ClientRequestBuilder::new(format!("ws://{addr}/confab").parse().expect("uri")).with_sub_protocol("confab.v1");
    if let Some(o) = origin {
        request = request.with_header("Origin", o);
    }
    tungstenite::client::client(request, sock).map(|(ws, _)| ws).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => unreachable!("a blocking socket"),
    })
}

/// Reads until the WebSocket close: the confab close code in the binary
/// messages before it (if any) and the WebSocket close frame.
fn until_close(ws: &mut WebSocket<TcpStream>) -> (Option<u16>, CloseFrame) {
    let limits = Limits::default();
    let mut decoder = FrameDecoder::new(limits);
    let mut confab = None;
    loop {
        match ws.read().expect("a message before the close") {
            Message::Binary(bytes) => {
                decoder.push(&bytes);
                while let Ok(Some(frame)) = decoder.next_frame() {
                    if let Ok(Wire::Close(c)) = Wire::decode(&frame, &limits) {
                        confab = Some(c.code);
                    }
                }
            }
            Message::Close(frame) => return (confab, frame.expect("a close frame with a code")),
            _ => {}
        }
    }
}

#[test]
fn hostile_websocket_input_never_disturbs_the_others() {
    let dir = TempDir::new("ws-hostile");
    let server = ServerProc::start(&dir.path().join("data"), None);
    let addr = ws_addr(&server);
    let alice = CliUser::new(dir.path(), "alice", &server, "ws");
    let bob = CliUser::new(dir.path(), "bob", &server, "ws");
    let _ = alice.ok(&["register", "alice"]);
    let _ = bob.ok(&["register", "bob"]);
    let _ = alice.ok(&["room", "create", "lobby"]);
    let _ = bob.ok(&["room", "join", "lobby"]);
    chat_round(&alice, &bob, 0);
    let rss_before = server.rss_kib().expect("rss");
    let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();

    // Garbage where the upgrade request belongs (it has a blank line in it: a complete "request").
    let mut garbage = noise.clone();
    garbage.extend_from_slice(b"\r\n\r\n");
    let answer = raw_exchange(addr, &garbage);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("not a WebSocket upgrade"), "{answer}");
    // A huge upgrade request: 431, before the server buffers more than 8 KiB of it.
    let mut huge = b"GET /confab HTTP/1.1\r\nHost: x\r\n".to_vec();
    while huge.len() < 64 << 10 {
        huge.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let answer = raw_exchange(addr, &huge);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // A wrong Origin: 403, and the reason.
    let Err(tungstenite::Error::Http(refused)) = client(addr, Some("https://evil.example")) else {
        panic!("a foreign origin was not refused with an HTTP answer");
    };
    assert_eq!(refused.status(), 403);
    // The wrong path (seed 002's URL form): 404.
    let wrong_path = raw_exchange(
        addr,
        b"GET /ws/alice@bob HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: confab.v1\r\n\r\n",
    );
    assert!(wrong_path.starts_with("HTTP/1.1 404"), "{wrong_path}");
    chat_round(&alice, &bob, 1);

    // Garbage after the upgrade, in a binary message: not protocol version 1, so
    // the confab close 505, then the WebSocket close 4505.
    let mut ws = client(addr, None).expect("upgrade");
    ws.send(Message::binary(noise.clone())).expect("send");
    let (confab, close) = until_close(&mut ws);
    assert_eq!((confab, u16::from(close.code)), (Some(505), 4505));
    // A confab length bomb inside a WebSocket message: 413 and 4413.
    let mut ws = client(addr, Some("http://localhost:8080")).expect("a loopback origin is allowed");
    let bomb = vec![1, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    ws.send(Message::binary(bomb)).expect("send");
    let (confab, close) = until_close(&mut ws);
    assert_eq!((confab, u16::from(close.code)), (Some(413), 4413));
    // A WebSocket frame announcing 2^62 bytes: 1009 at once, nothing buffered.
    let mut ws = client(addr, None).expect("upgrade");
    let mut frame = vec![0x82, 0x80 | 127, 0x40, 0, 0, 0, 0, 0, 0, 0];
    frame.extend_from_slice(&[1, 2, 3, 4]);
    ws.get_mut().write_all(&frame).expect("write");
    let (_, close) = until_close(&mut ws);
    assert_eq!(u16::from(close.code), 1009);
    // A text message: 1003.
    let mut ws = client(addr, None).expect("upgrade");
    ws.send(Message::text("hello")).expect("send");
    let (_, close) = until_close(&mut ws);
    assert_eq!(u16::from(close.code), 1003);
    chat_round(&alice, &bob, 2);

    // 1,000 half-open upgrades (a request line, never the end of the headers)
    // from another loopback source, held while the users chat: that source
    // holds at most 125 handshake slots, the rest are dropped at accept.
    let half_open: Vec<TcpStream> = (0..1000)
        .filter_map(|_| {
            let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 3), addr).ok()?;
            let _ = s.write_all(b"GET /confab HTTP/1.1\r\nHost: x\r\n");
            Some(s)
        })
        .collect();
    assert!(half_open.len() >= 900, "only {} half-open upgrades could be made", half_open.len());
    for n in 3..6 {
        chat_round(&alice, &bob, n);
    }
    let rss_during = server.rss_kib().expect("rss");
    assert!(
        rss_during < rss_before + 64 * 1024,
        "the server's memory grew from {rss_before} KiB to {rss_during} KiB under 1,000 half-open upgrades"
    );
    drop(half_open);
    chat_round(&alice, &bob, 6);

    // 200 upgraded connections from a third source, each dripping a message
    // that announces the 64 KiB limit and sends half of it: the server holds
    // at most one message per connection (the core never sees a partial one,
    // so [ws] max_message_bytes is the bound), and one byte more is 1009.
    let rss_before = server.rss_kib().expect("rss");
    let held: Vec<WebSocket<TcpStream>> = (0..200)
        .filter_map(|_| {
            let sock = connect_from(Ipv4Addr::new(127, 0, 0, 4), addr).ok()?;
            let uri = format!("ws://{addr}/confab").parse().ok()?;
            let request = ClientRequestBuilder::new(uri).with_sub_protocol("confab.v1");
            let (mut ws, _) = tungstenite::client::client(request, sock).ok()?;
            // A masked binary frame header announcing 65536 bytes, then 32 KiB of it.
            let mut frame = vec![0x82, 0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            frame.extend_from_slice(&[0x11; 32 << 10]);
            ws.get_mut().write_all(&frame).ok()?;
            Some(ws)
        })
        .collect();
    assert!(held.len() >= 190, "only {} dripping connections", held.len());
    chat_round(&alice, &bob, 7);
    let rss_held = server.rss_kib().expect("rss");
    assert!(
        rss_held < rss_before + 200 * 128,
        "200 half-sent messages grew the server from {rss_before} KiB to {rss_held} KiB (bound: 128 KiB each)"
    );
    let mut over = client(addr, None).expect("upgrade");
    let mut frame = vec![0x82, 0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0];
    frame.extend_from_slice(&[0x22; 1024]);
    over.get_mut().write_all(&frame).expect("write");
    let (_, close) = until_close(&mut over);
    assert_eq!(u16::from(close.code), 1009, "65537 bytes is one above the limit");
    drop(held);
    chat_round(&alice, &bob, 8);
    let log = server.log();
    assert!(log.contains("WebSocket connections refused"), "the refusals are counted in the log:\n{log}");
    assert!(log.contains("upgrade refused (403)") && log.contains("upgrade refused (431)"), "{log}");
    assert!(log.contains("text message refused"), "{log}");
}

#[test]
fn websocket_pings_are_answered_and_a_silent_session_gets_the_core_idle_close() {
    let dir = TempDir::new("ws-idle");
    let config = dir.path().join("idle.toml");
    std::fs::write(&config, "[server]\nkeepalive_interval_secs = 1\nidle_timeout_secs = 2\n").expect("config");
    let server = ServerProc::start(&dir.path().join("data"), Some(&config));
    let mut ws = client(ws_addr(&server), None).expect("upgrade");
    // A WebSocket ping is answered by the transport (RFC 6455), not the core.
    ws.send(Message::Ping(b"are you there".to_vec().into())).expect("ping");
    let mut pong = None;
    let mut pinged = false;
    let close = loop {
        match ws.read().expect("a message") {
            Message::Pong(payload) => pong = Some(payload.to_vec()),
            // The core's keepalive ping (a confab ping frame, type 4), left unanswered.
            Message::Binary(bytes) if bytes.get(1) == Some(&4) => pinged = true,
            Message::Close(frame) => break frame.expect("a close frame"),
            _ => {}
        }
    };
    assert_eq!(pong.as_deref(), Some(&b"are you there"[..]));
    assert!(pinged, "the core pinged the silent session first");
    assert_eq!(u16::from(close.code), 4408, "the core's idle close, as WebSocket close 4408");
    assert!(close.reason.contains("idle"), "{}", close.reason);
}
