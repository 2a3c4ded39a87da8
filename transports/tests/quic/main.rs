//! QUIC transport over 127.0.0.1: a `QuicServer` feeding a tiny echo loop
//! (a mio `Poll` with a `Hub`), and `QuicLink` clients.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use confab_transports::link::Link;
use confab_transports::net::{ConnId, ConnIds, Hub, NetEvent, Transport};
use confab_transports::quic::{QuicLimits, QuicLink, QuicServer, connect};
use confab_transports::tls::{self, ClientTrust, Pin, ServerIdentity};

const WAKE: mio::Token = mio::Token(0);

/// What the echo loop saw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Opened(ConnId, Option<SocketAddr>),
    Received(ConnId, usize),
    Closed(ConnId, String),
}

/// A mio loop that echoes every `Received` back through its `Hub`, closes a
/// connection on request, and reports what it saw.
struct Echo {
    server: Option<QuicServer>,
    seen: mpsc::Receiver<Seen>,
    close: mpsc::Sender<Option<ConnId>>,
    thread: Option<thread::JoinHandle<()>>,
    pin: Pin,
}

impl Echo {
    fn start(limits: QuicLimits) -> Echo {
        let made = ServerIdentity::self_signed(&["localhost".to_owned()]).unwrap();
        let pin = made.identity.pin().unwrap();
        let tls = tls::server_config(&made.identity).unwrap();
        let mut poll = mio::Poll::new().unwrap();
        let mut hub = Hub::new(poll.registry(), WAKE, ConnIds::default()).unwrap();
        let server = QuicServer::bind("127.0.0.1:0".parse().unwrap(), tls, hub.sender(), limits).unwrap();
        let (seen_tx, seen) = mpsc::channel();
        let (close, close_rx) = mpsc::channel::<Option<ConnId>>();
        let thread = thread::spawn(move || {
            let mut events = mio::Events::with_capacity(8);
            loop {
                // A Poll has one waker (the hub's): close requests are picked up on a short tick.
                poll.poll(&mut events, Some(Duration::from_millis(5))).unwrap();
                while let Some(event) = hub.try_recv() {
                    let seen = match event {
                        NetEvent::Opened { conn, transport, peer, handle } => {
                            assert_eq!(transport, Transport::Quic);
                            assert!(handle.is_none(), "the hub keeps the handle");
                            assert!(hub.owns(conn));
                            Seen::Opened(conn, peer)
                        }
                        NetEvent::Received { conn, bytes } => {
                            let n = bytes.len();
                            // Echo first, so that a close requested after this report follows the echo.
                            hub.send(conn, bytes);
                            hub.consumed(conn, n);
                            Seen::Received(conn, n)
                        }
                        NetEvent::Closed { conn, reason } => Seen::Closed(conn, reason),
                    };
                    if seen_tx.send(seen).is_err() {
                        return;
                    }
                }
                loop {
                    match close_rx.try_recv() {
                        Ok(Some(conn)) => hub.close(conn),
                        Ok(None) | Err(mpsc::TryRecvError::Disconnected) => return,
                        Err(mpsc::TryRecvError::Empty) => break,
                    }
                }
            }
        });
        Echo { server: Some(server), seen, close, thread: Some(thread), pin }
    }

    fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().local_addr()
    }

    fn connect(&self) -> QuicLink {
        let config = tls::client_config(&ClientTrust::Pin(self.pin)).unwrap();
        connect(self.addr(), "localhost", config, Duration::from_secs(2)).unwrap()
    }

    fn close(&self, conn: ConnId) {
        self.close.send(Some(conn)).unwrap();
    }

    /// The next thing the loop saw, within `within`.
    fn next(&self, within: Duration) -> Option<Seen> {
        self.seen.recv_timeout(within).ok()
    }

    /// Waits for the next `Opened`.
    fn opened(&self) -> ConnId {
        match self.next(Duration::from_secs(2)) {
            Some(Seen::Opened(conn, peer)) => {
                assert!(peer.is_some());
                conn
            }
            other => panic!("expected Opened, got {other:?}"),
        }
    }

    /// Skips `Received` events of `conn` until `total` bytes came.
    fn received(&self, conn: ConnId, total: usize) {
        let mut got = 0;
        while got < total {
            match self.next(Duration::from_secs(2)) {
                Some(Seen::Received(c, n)) if c == conn => got += n,
                other => panic!("expected Received for {conn}, got {other:?} after {got} bytes"),
            }
        }
        assert_eq!(got, total);
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::from_millis(100));
        }
        let _ = self.close.send(None);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

fn test_limits() -> QuicLimits {
    // Generous: a loaded test machine must not fail a handshake.
    QuicLimits { handshake_timeout: Duration::from_secs(3), ..QuicLimits::default() }
}

/// Reads until `want` bytes came (or fails).
fn read_exactly(link: &mut QuicLink, want: usize) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut got = Vec::with_capacity(want);
    while got.len() < want {
        match link.recv(deadline).unwrap() {
            Some(chunk) => got.extend_from_slice(&chunk),
            None => panic!("timed out after {} of {want} bytes", got.len()),
        }
    }
    got
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
}

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
    let mut link = echo.connect();
    let data = pattern(200_000, 3);
    link.send(&data).unwrap();
    let conn = echo.opened();
    echo.received(conn, data.len());
    // The echo is queued before the close; the client has read nothing yet.
    echo.close(conn);
    match echo.next(Duration::from_secs(2)) {
        Some(Seen::Closed(c, reason)) => {
            assert_eq!(c, conn);
            assert!(reason.contains("closed"), "{reason}");
        }
        other => panic!("expected Closed, got {other:?}"),
    }
    let back = read_exactly(&mut link, data.len());
    assert!(back == data, "echo differs");
    let err = link.recv(Instant::now() + Duration::from_secs(2)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    // Dead links stay dead.
    assert_eq!(link.recv(Instant::now()).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    assert!(link.send(b"more").is_err());
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

    echo.server.as_ref().unwrap().stop_accepting();
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
fn shutdown_closes_live_connections_once_and_returns_within_the_grace() {
    let mut echo = Echo::start(test_limits());
    let mut link = echo.connect();
    link.send(b"hi").unwrap();
    assert_eq!(read_exactly(&mut link, 2), b"hi");
    let conn = echo.opened();
    echo.received(conn, 2);
    let started = Instant::now();
    echo.server.take().unwrap().shutdown(Duration::from_millis(200));
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert!(matches!(echo.next(Duration::from_secs(1)), Some(Seen::Closed(c, _)) if c == conn));
    assert_eq!(echo.next(Duration::from_millis(100)), None);
    let err = link.recv(Instant::now() + Duration::from_secs(2)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
    assert!(err.to_string().contains("server shutdown"), "{err}");
}

#[test]
fn a_small_inbound_credit_still_carries_everything_in_order() {
    // Smaller than one read chunk: every read waits for the loop.
    let echo = Echo::start(QuicLimits { max_inbound: 1000, ..test_limits() });
    let mut link = echo.connect();
    let data = pattern(300_000, 11);
    link.send(&data).unwrap();
    let back = read_exactly(&mut link, data.len());
    assert!(back == data, "echo differs");
    let conn = echo.opened();
    let mut got = 0;
    while got < data.len() {
        match echo.next(Duration::from_secs(2)) {
            Some(Seen::Received(c, n)) if c == conn && n <= 1000 => got += n,
            other => panic!("expected Received of at most 1000 bytes, got {other:?} after {got} bytes"),
        }
    }
    // The echo loop returned every byte's credit before reporting it.
    assert_eq!(echo.server.as_ref().unwrap().inbound_buffered(), 0);
}

/// A loop that keeps what it receives and returns inbound credit only
/// while not paused: a loop that lags.
struct Sink {
    server: Option<QuicServer>,
    pin: Pin,
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Bytes received, in order (one connection).
    got: Arc<Mutex<Vec<u8>>>,
    /// Received and not consumed.
    held: Arc<AtomicUsize>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Sink {
    fn start(limits: QuicLimits) -> Sink {
        let made = ServerIdentity::self_signed(&["localhost".to_owned()]).unwrap();
        let pin = made.identity.pin().unwrap();
        let tls = tls::server_config(&made.identity).unwrap();
        let mut poll = mio::Poll::new().unwrap();
        let mut hub = Hub::new(poll.registry(), WAKE, ConnIds::default()).unwrap();
        let server = QuicServer::bind("127.0.0.1:0".parse().unwrap(), tls, hub.sender(), limits).unwrap();
        let paused = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let got = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (paused, stop, got, held) = (paused.clone(), stop.clone(), got.clone(), held.clone());
            thread::spawn(move || {
                let mut events = mio::Events::with_capacity(8);
                let mut pending: Vec<(ConnId, usize)> = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    poll.poll(&mut events, Some(Duration::from_millis(5))).unwrap();
                    while let Some(event) = hub.try_recv() {
                        if let NetEvent::Received { conn, bytes } = event {
                            got.lock().unwrap().extend_from_slice(&bytes);
                            held.fetch_add(bytes.len(), Ordering::SeqCst);
                            pending.push((conn, bytes.len()));
                        }
                    }
                    if !paused.load(Ordering::SeqCst) {
                        for (conn, n) in pending.drain(..) {
                            held.fetch_sub(n, Ordering::SeqCst);
                            hub.consumed(conn, n);
                        }
                    }
                }
            })
        };
        Sink { server: Some(server), pin, paused, stop, got, held, thread: Some(thread) }
    }

    fn server(&self) -> &QuicServer {
        self.server.as_ref().unwrap()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::from_millis(100));
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

#[test]
fn a_loop_that_stops_consuming_holds_the_peer_back_and_loses_nothing() {
    let limits = test_limits();
    let max = limits.max_inbound;
    let sink = Sink::start(limits);
    let (addr, pin) = (sink.server().local_addr(), sink.pin);
    let data = Arc::new(pattern(20 << 20, 9));
    let sent = Arc::new(AtomicUsize::new(0));
    let client = {
        let (data, sent) = (data.clone(), sent.clone());
        thread::spawn(move || {
            let config = tls::client_config(&ClientTrust::Pin(pin)).unwrap();
            let mut link = connect(addr, "localhost", config, Duration::from_secs(2)).unwrap();
            for piece in data.chunks(64 * 1024) {
                link.send(piece).unwrap();
                sent.fetch_add(piece.len(), Ordering::SeqCst);
            }
            link
        })
    };

    // The loop holds everything it gets: the client stalls once the credit
    // and quinn's windows are full, and the server buffers no more.
    let mut last = usize::MAX;
    let mut still_since = Instant::now();
    let give_up = Instant::now() + Duration::from_secs(20);
    while last == 0 || last == usize::MAX || still_since.elapsed() < Duration::from_millis(500) {
        assert!(Instant::now() < give_up, "the client never stalled ({} bytes sent)", sent.load(Ordering::SeqCst));
        assert!(sink.server().inbound_buffered() <= max, "server buffers {}", sink.server().inbound_buffered());
        assert!(sink.held.load(Ordering::SeqCst) <= max, "loop holds {}", sink.held.load(Ordering::SeqCst));
        let now = sent.load(Ordering::SeqCst);
        if now != last {
            last = now;
            still_since = Instant::now();
        }
        thread::sleep(Duration::from_millis(20));
    }
    let stalled_at = sent.load(Ordering::SeqCst);
    // Credit (1 MiB) + the stream's receive window (1 MiB) + one piece in flight.
    assert!(stalled_at <= max + (1 << 20) + (64 << 10), "client sent {stalled_at} bytes");
    assert!(stalled_at < data.len());
    // What the server counts as buffered is what the loop holds, once the
    // events in flight have landed.
    let settle = Instant::now() + Duration::from_secs(2);
    while sink.server().inbound_buffered() != sink.held.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < settle,
            "{} != {}",
            sink.server().inbound_buffered(),
            sink.held.load(Ordering::SeqCst)
        );
        thread::sleep(Duration::from_millis(5));
    }
    let held = sink.held.load(Ordering::SeqCst);
    assert!(held <= max && held > 0, "loop holds {held}");

    // The loop catches up: everything arrives, in order.
    sink.paused.store(false, Ordering::SeqCst);
    let link = client.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while sink.got.lock().unwrap().len() < data.len() {
        assert!(Instant::now() < deadline, "{} of {} bytes arrived", sink.got.lock().unwrap().len(), data.len());
        thread::sleep(Duration::from_millis(10));
    }
    assert!(*sink.got.lock().unwrap() == *data, "bytes differ");
    while sink.server().inbound_buffered() > 0 {
        assert!(Instant::now() < deadline, "credit not returned: {}", sink.server().inbound_buffered());
        thread::sleep(Duration::from_millis(10));
    }
    drop(link);
}
