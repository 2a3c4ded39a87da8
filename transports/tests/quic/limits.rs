//! The server's limits: handshake timeout, connection limit, one stream per
//! connection, idle timeout, backlog, shutdown.

use std::io;
use std::time::{Duration, Instant};

use confab_transports::link::Link;
use confab_transports::quic::{QuicLimits, connect};
use confab_transports::tls::{self, ClientTrust};

use super::echo::{Echo, Seen, pattern, read_exactly, test_limits};

#[test]
fn a_connection_without_a_stream_is_closed_after_the_handshake_timeout() {
    let limits = QuicLimits { handshake_timeout: Duration::from_millis(400), ..QuicLimits::default() };
    let echo = Echo::start(limits);
    // The stream exists for the server only once the client writes.
    let mut link = echo.connect();
    let err = link.recv(Instant::now() + Duration::from_secs(2)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
    assert_eq!(echo.next(Duration::from_millis(100)), None);
}

#[test]
fn connections_over_the_limit_are_refused_and_stop_accepting_refuses_all() {
    let echo = Echo::start(QuicLimits { max_connections: 1, ..test_limits() });
    let mut first = echo.connect();
    first.send(b"x").unwrap();
    assert_eq!(read_exactly(&mut first, 1), b"x");
    let config = tls::client_config(&ClientTrust::Pin(echo.pin)).unwrap();
    let err = connect(echo.addr(), "localhost", config.clone(), Duration::from_secs(2)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");

    echo.stop_accepting();
    first.close();
    let conn = echo.opened();
    echo.received(conn, 1);
    assert!(matches!(echo.next(Duration::from_secs(2)), Some(Seen::Closed(c, _)) if c == conn));
    let err = connect(echo.addr(), "localhost", config, Duration::from_secs(2)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
}

/// A quinn client on a current-thread runtime that runs only inside
/// `block_on`: between calls it is silent, like a vanished peer.
struct Raw {
    runtime: tokio::runtime::Runtime,
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
}

impl Raw {
    fn connect(echo: &Echo) -> Raw {
        let tls = tls::client_config(&ClientTrust::Pin(echo.pin)).unwrap();
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let addr = echo.addr();
        let (endpoint, conn) = runtime.block_on(async {
            let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            let config = quinn::ClientConfig::new(std::sync::Arc::new(crypto));
            let conn = endpoint.connect_with(config, addr, "localhost").unwrap().await.unwrap();
            (endpoint, conn)
        });
        Raw { runtime, _endpoint: endpoint, conn }
    }

    /// Opens a stream, writes `bytes`, and reads the echo (or the error).
    fn open_and_echo(&self, bytes: &[u8]) -> (quinn::SendStream, quinn::RecvStream, Result<Vec<u8>, quinn::ReadError>) {
        self.runtime.block_on(async {
            let (mut send, mut recv) = self.conn.open_bi().await.unwrap();
            send.write_all(bytes).await.unwrap();
            let echoed = echo_of(&mut send, &mut recv, &[], bytes.len()).await;
            (send, recv, echoed)
        })
    }
}

async fn echo_of(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    more: &[u8],
    want: usize,
) -> Result<Vec<u8>, quinn::ReadError> {
    send.write_all(more).await.unwrap();
    let mut got = Vec::new();
    while got.len() < want {
        let read = tokio::time::timeout(Duration::from_secs(2), recv.read_chunk(usize::MAX, true)).await;
        match read.expect("echo timed out")? {
            Some(chunk) => got.extend_from_slice(&chunk.bytes),
            None => break,
        }
    }
    Ok(got)
}

#[test]
fn a_second_stream_is_refused_and_the_first_goes_on() {
    let echo = Echo::start(test_limits());
    let raw = Raw::connect(&echo);
    let (mut send, mut recv, first) = raw.open_and_echo(b"one");
    assert_eq!(first.unwrap(), b"one");
    let (_send2, _recv2, second) = raw.open_and_echo(b"two");
    assert_eq!(second.unwrap_err(), quinn::ReadError::Reset(3u32.into()));
    let again = raw.runtime.block_on(echo_of(&mut send, &mut recv, b"three", 5));
    assert_eq!(again.unwrap(), b"three");
    let conn = echo.opened();
    echo.received(conn, 3);
    echo.received(conn, 5);
    assert_eq!(echo.next(Duration::from_millis(100)), None);
}

#[test]
fn a_silent_peer_is_closed_at_the_idle_timeout() {
    let echo = Echo::start(QuicLimits { idle_timeout: Duration::from_millis(300), ..test_limits() });
    let raw = Raw::connect(&echo);
    let (_send, _recv, first) = raw.open_and_echo(b"hi");
    assert_eq!(first.unwrap(), b"hi");
    let conn = echo.opened();
    echo.received(conn, 2);
    // `raw` no longer runs: no acks, no packets.
    match echo.next(Duration::from_secs(2)) {
        Some(Seen::Closed(c, reason)) => {
            assert_eq!(c, conn);
            assert_eq!(reason, "idle timeout");
        }
        other => panic!("expected Closed, got {other:?}"),
    }
    assert_eq!(echo.next(Duration::from_millis(100)), None);
}

#[test]
fn a_peer_that_does_not_read_is_closed_at_the_backlog_limit() {
    let echo = Echo::start(QuicLimits { max_outbound: 64 * 1024, ..test_limits() });
    let mut link = echo.connect();
    let piece = pattern(32 * 1024, 5);
    let mut sent = 0usize;
    let err = loop {
        match link.send(&piece) {
            Ok(()) => sent += piece.len(),
            Err(e) => break e,
        }
        assert!(sent < 64 << 20, "never closed");
    };
    // The close frame (code 2) can be lost while the client floods the path;
    // the server then answers the late packets with a stateless reset.
    let aborted = err.kind() == io::ErrorKind::ConnectionAborted && err.to_string().contains("code 2");
    assert!(aborted || err.kind() == io::ErrorKind::ConnectionReset, "{err}");
    let conn = echo.opened();
    loop {
        match echo.next(Duration::from_secs(2)) {
            Some(Seen::Received(c, _)) => assert_eq!(c, conn),
            Some(Seen::Closed(c, reason)) => {
                assert_eq!(c, conn);
                assert!(reason.contains("backlog"), "{reason}");
                break;
            }
            other => panic!("expected Closed, got {other:?}"),
        }
    }
    assert_eq!(echo.next(Duration::from_millis(100)), None);
}

#[test]
fn shutdown_closes_live_connections_once_and_returns_promptly() {
    let echo = Echo::start(test_limits());
    let mut link = echo.connect();
    link.send(b"hi").unwrap();
    assert_eq!(read_exactly(&mut link, 2), b"hi");
    let conn = echo.opened();
    echo.received(conn, 2);
    let started = Instant::now();
    echo.shutdown();
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert!(matches!(echo.next(Duration::from_secs(1)), Some(Seen::Closed(c, _)) if c == conn));
    assert_eq!(echo.next(Duration::from_millis(100)), None);
    let err = link.recv(Instant::now() + Duration::from_secs(2)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
    assert!(err.to_string().contains("server shutdown"), "{err}");
}
