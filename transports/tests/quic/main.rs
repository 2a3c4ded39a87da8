//! QUIC transport over 127.0.0.1: a `QuicServer` driven by a tiny echo loop
//! (a mio `Poll`, as the server's loop drives it), and `QuicLink` clients.
//!
//! | file | what |
//! | --- | --- |
//! | `main.rs` | echo, ordering, pins, ALPN, closes, independent clients |
//! | `echo.rs` | the echo loop and helpers the tests share |
//! | `limits.rs` | handshake timeout, connection limit, second stream, idle timeout, backlog, shutdown |
//! | `inbound.rs` | reads bounded per turn, a loop that stops turning, one turn's frames batched |

mod echo;
mod inbound;
mod limits;

use std::io;
use std::thread;
use std::time::{Duration, Instant};

use confab_transports::link::Link;
use confab_transports::quic::connect;
use confab_transports::tls::{self, ClientTrust, Pin};

use echo::{Echo, Seen, pattern, read_exactly, test_limits};

#[test]
fn large_write_in_pieces_echoes_in_order() {
    let echo = Echo::start(test_limits());
    let mut link = echo.connect();
    assert_eq!(link.transport(), "quic");
    let data = pattern(1 << 20, 7);
    let mut back = Vec::new();
    for piece in data.chunks(16 * 1024 + 3) {
        link.send(piece).unwrap();
        // Drain what is there without waiting.
        while let Some(chunk) = link.recv(Instant::now()).unwrap() {
            back.extend_from_slice(&chunk);
        }
    }
    let conn = echo.opened();
    let rest = read_exactly(&mut link, data.len() - back.len());
    back.extend_from_slice(&rest);
    assert!(back == data, "echo differs");
    echo.received(conn, data.len());
    // Nothing more: the deadline passes.
    assert_eq!(link.recv(Instant::now() + Duration::from_millis(50)).unwrap(), None);
}

#[test]
fn many_small_writes_echo_in_order() {
    let echo = Echo::start(test_limits());
    let mut link = echo.connect();
    let mut sent = Vec::new();
    for i in 0..5000usize {
        let piece = pattern(1 + i % 40, i as u8);
        link.send(&piece).unwrap();
        sent.extend_from_slice(&piece);
    }
    let back = read_exactly(&mut link, sent.len());
    assert!(back == sent, "echo differs");
    let conn = echo.opened();
    echo.received(conn, sent.len());
}

#[test]
fn pin_mismatch_is_refused_with_a_clear_error() {
    let echo = Echo::start(test_limits());
    let config = tls::client_config(&ClientTrust::Pin(Pin([9; 32]))).unwrap();
    let err = connect(echo.addr(), "localhost", config, Duration::from_secs(2)).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("QUIC handshake"), "{text}");
    assert!(text.contains("does not match the pinned key"), "{text}");
    assert_eq!(echo.next(Duration::from_millis(100)), None);
}

#[test]
fn alpn_mismatch_is_refused() {
    let echo = Echo::start(test_limits());
    let mut config = tls::client_config(&ClientTrust::Pin(echo.pin)).unwrap();
    config.alpn_protocols = vec![b"other/1".to_vec()];
    let err = connect(echo.addr(), "localhost", config, Duration::from_secs(2)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    assert!(err.to_string().contains("QUIC handshake"), "{err}");
    assert_eq!(echo.next(Duration::from_millis(100)), None);
}

#[test]
fn peer_close_reports_closed_exactly_once() {
    let echo = Echo::start(test_limits());
    let mut link = echo.connect();
    link.send(b"hello").unwrap();
    assert_eq!(read_exactly(&mut link, 5), b"hello");
    let conn = echo.opened();
    echo.received(conn, 5);
    link.close();
    match echo.next(Duration::from_secs(2)) {
        Some(Seen::Closed(c, reason)) => {
            assert_eq!(c, conn);
            assert!(reason.contains("peer"), "{reason}");
        }
        other => panic!("expected Closed, got {other:?}"),
    }
    drop(link);
    assert_eq!(echo.next(Duration::from_millis(300)), None);
}

#[test]
fn server_close_flushes_then_client_sees_eof() {
    let echo = Echo::start(test_limits());
    // The loop asks for the close in the turn that queues the last of the
    // echo: the client has read nothing yet, so the close has it all to flush.
    let data = pattern(200_000, 3);
    echo.close_after(data.len());
    let mut link = echo.connect();
    link.send(&data).unwrap();
    let back = read_exactly(&mut link, data.len());
    assert!(back == data, "echo differs");
    let err = link.recv(Instant::now() + Duration::from_secs(2)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    // Dead links stay dead.
    assert_eq!(link.recv(Instant::now()).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    assert!(link.send(b"more").is_err());
    let conn = echo.opened();
    echo.received(conn, data.len());
    match echo.next(Duration::from_secs(2)) {
        Some(Seen::Closed(c, reason)) => {
            assert_eq!(c, conn);
            assert_eq!(reason, "closed by the server");
        }
        other => panic!("expected Closed, got {other:?}"),
    }
    assert_eq!(echo.next(Duration::from_millis(200)), None);
}

#[test]
fn two_clients_are_independent() {
    let echo = Echo::start(test_limits());
    let addr = echo.addr();
    let pin = echo.pin;
    let run = move |seed: u8| {
        thread::spawn(move || {
            let config = tls::client_config(&ClientTrust::Pin(pin)).unwrap();
            let mut link = connect(addr, "localhost", config, Duration::from_secs(2)).unwrap();
            let data = pattern(300_000, seed);
            for piece in data.chunks(7000) {
                link.send(piece).unwrap();
            }
            let back = read_exactly(&mut link, data.len());
            assert!(back == data, "client {seed}: echo differs");
            link.close();
        })
    };
    let (a, b) = (run(1), run(2));
    a.join().unwrap();
    b.join().unwrap();
    let mut opened = Vec::new();
    let mut closed = Vec::new();
    while closed.len() < 2 {
        match echo.next(Duration::from_secs(2)) {
            Some(Seen::Opened(conn, _)) => opened.push(conn),
            Some(Seen::Closed(conn, _)) => closed.push(conn),
            Some(Seen::Received(conn, _)) => assert!(opened.contains(&conn)),
            None => panic!("missing Closed: opened {opened:?}, closed {closed:?}"),
        }
    }
    opened.sort();
    closed.sort();
    assert_eq!(opened.len(), 2);
    assert_ne!(opened[0], opened[1]);
    assert_eq!(opened, closed);
}
