//! TCP + TLS transport against a tiny echo loop: a mio Poll and a
//! TcpServer on a thread, echoing what each connection sends (or, for a
//! connection whose first bytes are `flood`, sending without end; `amp`:
//! echoing every later byte four times; `bye`: answering `bye!` and
//! closing; `heavy bye`: sending 32 MiB and closing).

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use confab_transports::hub::{ConnId, ConnIds, NetEvent, Transport};
use confab_transports::link::Link;
use confab_transports::tcp::{self, TcpLimits, TcpLink, TcpServer};
use confab_transports::tls::{self, ClientTrust, Pin, ServerIdentity};
use mio::{Events, Poll, Token, Waker};

const WAKER: Token = Token(0);
const SECOND: Duration = Duration::from_secs(1);
/// How long a test waits for bytes it knows are coming.
const PATIENCE: Duration = Duration::from_secs(30);

/// What the echo loop saw.
#[derive(Debug)]
enum Seen {
    Opened(ConnId, Option<SocketAddr>),
    Closed(ConnId, String),
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    refused: u64,
    len: usize,
    /// The largest backlog of a connection that was echoing.
    max_echo_backlog: usize,
    /// Whether `poll_timeout` was set.
    timer_set: bool,
    /// Turns of the loop so far.
    turns: u64,
}

struct Echo {
    addr: SocketAddr,
    pin: Pin,
    seen: mpsc::Receiver<Seen>,
    stats: Arc<Mutex<Stats>>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    close: mpsc::Sender<ConnId>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start(limits: TcpLimits) -> Echo {
        let made = ServerIdentity::self_signed(&["localhost".to_owned()]).unwrap();
        let pin = made.identity.pin().unwrap();
        let config = Arc::new(tls::server_config(&made.identity).unwrap());
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).unwrap());
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut server = TcpServer::bind(poll.registry(), addr, config, ConnIds::default(), limits).unwrap();
        let addr = server.local_addr();
        let (tx, seen) = mpsc::channel();
        let stats = Arc::new(Mutex::new(Stats::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (close, close_rx) = mpsc::channel::<ConnId>();
        let thread = {
            let (stats, stop) = (Arc::clone(&stats), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut events = Events::with_capacity(256);
                let mut net = Vec::new();
                let mut closes = Vec::new();
                let mut max_echo_backlog = 0;
                let mut turns = 0;
                let mut flooding: HashSet<ConnId> = HashSet::new();
                let mut amplify: HashSet<ConnId> = HashSet::new();
                let flood = vec![0x5a; 64 << 10];
                while !stop.load(Ordering::SeqCst) {
                    let now = Instant::now();
                    let mut timeout = server.poll_timeout().map_or(SECOND, |t| t.saturating_duration_since(now));
                    if !flooding.is_empty() {
                        timeout = timeout.min(Duration::from_millis(1));
                    }
                    poll.poll(&mut events, Some(timeout)).unwrap();
                    let now = Instant::now();
                    for event in &events {
                        if server.owns(event.token()) {
                            server.handle_event(poll.registry(), now, event, &mut net);
                        }
                    }
                    if server.poll_timeout().is_some_and(|t| t <= now) {
                        server.handle_timeout(poll.registry(), now, &mut net);
                    }
                    for e in net.drain(..) {
                        match e {
                            NetEvent::Opened { conn, transport, peer, handle } => {
                                assert_eq!(transport, Transport::Tcp);
                                assert!(handle.is_none());
                                tx.send(Seen::Opened(conn, peer)).unwrap();
                            }
                            NetEvent::Received { conn, bytes } => {
                                if bytes.starts_with(b"flood") {
                                    flooding.insert(conn);
                                } else if bytes == b"amp" {
                                    amplify.insert(conn);
                                } else if amplify.contains(&conn) {
                                    let four: Vec<u8> = bytes.iter().flat_map(|&b| [b; 4]).collect();
                                    server.send(poll.registry(), conn, &four);
                                    max_echo_backlog = max_echo_backlog.max(server.backlog(conn));
                                } else if bytes.starts_with(b"heavy bye") {
                                    for _ in 0..32 {
                                        server.send(poll.registry(), conn, &[7; 1 << 20]);
                                    }
                                    server.close(poll.registry(), conn, &mut closes);
                                } else if bytes.starts_with(b"bye") {
                                    server.send(poll.registry(), conn, b"bye!");
                                    server.close(poll.registry(), conn, &mut closes);
                                } else {
                                    server.send(poll.registry(), conn, &bytes);
                                    max_echo_backlog = max_echo_backlog.max(server.backlog(conn));
                                }
                            }
                            NetEvent::Closed { conn, reason } => {
                                flooding.remove(&conn);
                                tx.send(Seen::Closed(conn, reason)).unwrap();
                            }
                        }
                    }
                    while let Ok(conn) = close_rx.try_recv() {
                        server.close(poll.registry(), conn, &mut closes);
                    }
                    for e in closes.drain(..) {
                        if let NetEvent::Closed { conn, reason } = e {
                            tx.send(Seen::Closed(conn, reason)).unwrap();
                        }
                    }
                    for &conn in &flooding {
                        for _ in 0..4 {
                            if !server.send(poll.registry(), conn, &flood) {
                                break;
                            }
                        }
                    }
                    turns += 1;
                    *stats.lock().unwrap() = Stats {
                        refused: server.refused(),
                        len: server.len(),
                        max_echo_backlog,
                        timer_set: server.poll_timeout().is_some(),
                        turns,
                    };
                }
            })
        };
        Echo { addr, pin, seen, stats, stop, waker, close, thread: Some(thread) }
    }

    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        Arc::new(tls::client_config(&ClientTrust::Pin(self.pin)).unwrap())
    }

    fn connect(&self) -> io::Result<TcpLink> {
        tcp::connect(self.addr, tls::server_name("localhost"), self.client_config(), SECOND)
    }

    /// The next thing the loop saw, within a second.
    fn next(&self) -> Seen {
        self.seen.recv_timeout(SECOND).expect("the echo loop reported nothing")
    }

    fn next_opened(&self) -> ConnId {
        match self.next() {
            Seen::Opened(conn, peer) => {
                assert!(peer.is_some_and(|p| p.ip().is_loopback()));
                conn
            }
            other => panic!("expected Opened, got {other:?}"),
        }
    }

    fn next_closed(&self) -> (ConnId, String) {
        match self.next() {
            Seen::Closed(conn, reason) => (conn, reason),
            other => panic!("expected Closed, got {other:?}"),
        }
    }

    /// Asks the loop to close `conn`.
    fn close(&self, conn: ConnId) {
        self.close.send(conn).unwrap();
        self.waker.wake().unwrap();
    }

    fn stats(&self) -> Stats {
        *self.stats.lock().unwrap()
    }

    /// Waits (up to a second) until the loop's stats satisfy `ok`: they are
    /// published at the end of each of its turns.
    fn wait_stats(&self, ok: impl Fn(&Stats) -> bool) -> Stats {
        let deadline = Instant::now() + SECOND;
        loop {
            let stats = self.stats();
            if ok(&stats) || Instant::now() >= deadline {
                return stats;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.waker.wake().unwrap();
        if let Some(thread) = self.thread.take() {
            let done = thread.join();
            if !std::thread::panicking() {
                done.unwrap();
            }
        }
    }
}

/// Receives exactly `len` bytes.
fn recv_exactly(link: &mut impl Link, len: usize) -> Vec<u8> {
    // A guard against a hang, not a speed bound: 32 MiB through a debug
    // build's TLS took more than a second on a loaded 2-core machine.
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::with_capacity(len);
    while got.len() < len {
        match link.recv(deadline).unwrap() {
            Some(bytes) => got.extend_from_slice(&bytes),
            None => panic!("timed out after {} of {len} bytes", got.len()),
        }
    }
    assert_eq!(got.len(), len, "more bytes than sent came back");
    got
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn handshake_then_large_and_many_small_writes_echo_in_order() {
    let echo = Echo::start(TcpLimits::default());
    let mut link = echo.connect().unwrap();
    assert_eq!(link.transport(), "tcp");
    let conn = echo.next_opened();
    assert_eq!(link.recv(Instant::now() + Duration::from_millis(20)).unwrap(), None);

    let mut sent = Vec::new();
    for i in 0..2000u32 {
        let small = format!("<{i}>");
        link.send(small.as_bytes()).unwrap();
        sent.extend_from_slice(small.as_bytes());
    }
    let large = pattern(2 << 20, 7);
    link.send(&large).unwrap();
    sent.extend_from_slice(&large);
    assert!(recv_exactly(&mut link, sent.len()) == sent, "echo differs");

    link.close();
    let (closed, reason) = echo.next_closed();
    assert_eq!(closed, conn);
    assert_eq!(reason, "peer closed");
}

#[test]
fn reading_pauses_while_the_backlog_is_above_half_the_cap() {
    // The server answers every byte four times: without the pause, a client
    // that sends 8 MiB and reads nothing for a while would push the backlog
    // far past the cap. (8 MiB, not less: loopback socket buffers autotune to
    // several MiB and can swallow a smaller echo whole, leaving no backlog.)
    let echo = Echo::start(TcpLimits { max_outbound: 256 << 10, read_chunk: 16 << 10, ..TcpLimits::default() });
    let mut link = echo.connect().unwrap();
    echo.next_opened();
    link.send(b"amp").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let sent = pattern(8 << 20, 11);
    link.send(&sent).unwrap();
    // Not reading until the server's backlog has built up (a fixed sleep was
    // too short on a loaded machine: "backlog peaked at 0").
    let deadline = Instant::now() + PATIENCE;
    while echo.stats().max_echo_backlog <= 128 << 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let got = recv_exactly(&mut link, 4 * sent.len());
    assert!(got.chunks(4).zip(&sent).all(|(four, b)| four == [*b; 4]), "echo differs");
    let max = echo.stats().max_echo_backlog;
    assert!(max > 128 << 10 && max <= 256 << 10, "backlog peaked at {max}");
    assert!(echo.seen.try_recv().is_err(), "nothing closed");
}

#[test]
fn closing_a_paused_connection_flushes_it_without_spinning() {
    let echo = Echo::start(TcpLimits { max_outbound: 256 << 10, read_chunk: 16 << 10, ..TcpLimits::default() });
    let mut link = echo.connect().unwrap();
    let conn = echo.next_opened();
    link.send(b"amp").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    link.send(&pattern(2 << 20, 5)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    echo.close(conn);
    std::thread::sleep(Duration::from_millis(20));
    let before = echo.stats().turns;
    std::thread::sleep(Duration::from_millis(200));
    let turns = echo.stats().turns - before;
    assert!(turns < 20, "the loop spun {turns} turns while a close waited for the peer");

    // The peer gets what was queued, then end of file.
    let deadline = Instant::now() + SECOND;
    let mut got = 0;
    let err = loop {
        match link.recv(deadline) {
            Ok(Some(bytes)) => got += bytes.len(),
            Ok(None) => panic!("no end of file after {got} bytes"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    assert!(got > 0 && got % 4 == 0 && got <= 8 << 20, "{got}");
    assert_eq!(echo.next_closed(), (conn, "closed by the server".to_owned()));
}

#[test]
fn a_pin_mismatch_is_refused_with_a_clear_error() {
    let echo = Echo::start(TcpLimits::default());
    let config = Arc::new(tls::client_config(&ClientTrust::Pin(Pin([9; 32]))).unwrap());
    let err = tcp::connect(echo.addr, tls::server_name("localhost"), config, SECOND).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("failed: server key sha256//"), "{text}");
    assert!(text.contains("does not match the pinned key"), "{text}");
    assert!(text.contains("TLS handshake"), "{text}");
    // The server saw the client's alert (or its reset), never an Opened.
    let (_, reason) = echo.next_closed();
    assert!(reason.starts_with("TLS error") || reason.starts_with("read failed"), "{reason}");
}

#[test]
fn a_client_without_the_alpn_is_refused() {
    let echo = Echo::start(TcpLimits::default());
    for offered in [vec![], vec![b"http/1.1".to_vec()]] {
        let offered_none = offered.is_empty();
        let mut config = tls::client_config(&ClientTrust::Pin(echo.pin)).unwrap();
        config.alpn_protocols = offered;
        let err = tcp::connect(echo.addr, tls::server_name("localhost"), Arc::new(config), SECOND).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("the server requires ALPN confab/1"), "{text}");
        let alert = if offered_none { "AccessDenied" } else { "NoApplicationProtocol" };
        assert!(text.contains(alert), "{text}");
        let (_, reason) = echo.next_closed();
        assert!(reason.starts_with("TLS error"), "{reason}");
    }
    // And a proper client still gets in.
    let _link = echo.connect().unwrap();
    echo.next_opened();
}

#[test]
fn a_silent_connection_is_dropped_at_the_handshake_timeout() {
    let timeout = Duration::from_millis(200);
    let echo = Echo::start(TcpLimits { handshake_timeout: timeout, ..TcpLimits::default() });
    let start = Instant::now();
    let mut raw = TcpStream::connect(echo.addr).unwrap();
    raw.set_read_timeout(Some(SECOND)).unwrap();
    let mut buf = [0u8; 16];
    // End of file or reset, not the read timeout.
    match raw.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0),
        Err(e) => assert_ne!(e.kind(), io::ErrorKind::WouldBlock, "still open after {:?}", start.elapsed()),
    }
    assert!(start.elapsed() >= timeout);
    let (_, reason) = echo.next_closed();
    assert!(reason.contains("handshake timed out"), "{reason}");
    assert_eq!(echo.wait_stats(|s| s.len == 0).len, 0);
}

#[test]
fn a_peer_that_never_reads_is_closed_at_the_outbound_cap_while_another_keeps_working() {
    let echo = Echo::start(TcpLimits { max_outbound: 256 << 10, ..TcpLimits::default() });
    let mut good = echo.connect().unwrap();
    let good_conn = echo.next_opened();
    let mut deaf = echo.connect().unwrap();
    let deaf_conn = echo.next_opened();

    deaf.send(b"flood").unwrap();
    let (closed, reason) = echo.next_closed();
    assert_eq!(closed, deaf_conn);
    assert!(reason.starts_with("outbound buffer full"), "{reason}");

    good.send(b"still here").unwrap();
    assert_eq!(recv_exactly(&mut good, 10), b"still here");
    assert_eq!(echo.wait_stats(|s| s.len == 1).len, 1);
    drop(deaf);
    drop(good);
    let (closed, _) = echo.next_closed();
    assert_eq!(closed, good_conn);
}

#[test]
fn a_close_gives_up_flushing_to_a_peer_that_does_not_read() {
    let linger = Duration::from_millis(300);
    let echo = Echo::start(TcpLimits { handshake_timeout: linger, max_outbound: 64 << 20, ..TcpLimits::default() });
    let mut deaf = echo.connect().unwrap();
    let conn = echo.next_opened();
    let start = Instant::now();
    deaf.send(b"heavy bye").unwrap();
    let (closed, reason) = echo.next_closed();
    assert_eq!(closed, conn);
    assert!(
        reason.starts_with("closed by the server; ") && reason.ends_with("bytes were never taken by the peer"),
        "{reason}"
    );
    assert!(start.elapsed() >= linger);
    assert_eq!(echo.wait_stats(|s| s.len == 0).len, 0);
}

#[test]
fn max_connections_is_enforced() {
    let echo = Echo::start(TcpLimits { max_connections: 2, ..TcpLimits::default() });
    let mut first = echo.connect().unwrap();
    echo.next_opened();
    let _second = echo.connect().unwrap();
    echo.next_opened();
    let err = echo.connect().unwrap_err();
    assert!(err.to_string().contains("TLS handshake"), "{err}");
    assert_eq!(echo.wait_stats(|s| s.refused == 1).refused, 1);

    // A slot frees up once a connection is gone.
    first.close();
    echo.next_closed();
    let mut third = echo.connect().unwrap();
    echo.next_opened();
    third.send(b"ok").unwrap();
    assert_eq!(recv_exactly(&mut third, 2), b"ok");
}

#[test]
fn max_handshaking_is_enforced_and_an_open_connection_leaves_no_timer() {
    let echo = Echo::start(TcpLimits { max_handshaking: 1, ..TcpLimits::default() });
    let silent = TcpStream::connect(echo.addr).unwrap();
    echo.wait_stats(|s| s.len == 1);
    let err = echo.connect().unwrap_err();
    assert!(err.to_string().contains("TLS handshake"), "{err}");
    assert_eq!(echo.wait_stats(|s| s.refused == 1).refused, 1);

    drop(silent);
    echo.next_closed();
    let _link = echo.connect().unwrap();
    echo.next_opened();
    // Open connections have no deadline: nothing is due.
    assert!(echo.wait_stats(|s| !s.timer_set).len == 1);
    assert!(!echo.stats().timer_set);
}

#[test]
fn random_bytes_instead_of_a_client_hello_are_dropped_and_others_are_fine() {
    let echo = Echo::start(TcpLimits::default());
    let mut good = echo.connect().unwrap();
    echo.next_opened();

    let mut raw = TcpStream::connect(echo.addr).unwrap();
    raw.set_read_timeout(Some(SECOND)).unwrap();
    raw.write_all(&pattern(4096, 3)).unwrap();
    let (_, reason) = echo.next_closed();
    assert!(reason.starts_with("TLS error"), "{reason}");
    // The server closed it (perhaps after an alert).
    let mut rest = Vec::new();
    match raw.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert_ne!(e.kind(), io::ErrorKind::WouldBlock, "still open"),
    }

    good.send(b"fine").unwrap();
    assert_eq!(recv_exactly(&mut good, 4), b"fine");
}

#[test]
fn odd_peers_are_dropped_and_the_loop_goes_on() {
    let echo = Echo::start(TcpLimits { handshake_timeout: Duration::from_millis(300), ..TcpLimits::default() });
    let mut good = echo.connect().unwrap();
    echo.next_opened();

    let mut hello = Vec::new();
    let name = tls::server_name("localhost");
    let mut client = rustls::ClientConnection::new(echo.client_config(), name).unwrap();
    client.write_tls(&mut hello).unwrap();
    let oversized = [0x16, 0x03, 0x03, 0xff, 0xff, 0x01, 0xff, 0xff, 0xff];
    let odd: [&[u8]; 5] = [b"", &hello[..50], &hello, &oversized, &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]];
    for bytes in odd {
        let mut raw = TcpStream::connect(echo.addr).unwrap();
        raw.write_all(bytes).unwrap();
        drop(raw);
    }
    // A handshake abandoned halfway, and one that sends a ClientHello and waits.
    let mut waiting = TcpStream::connect(echo.addr).unwrap();
    waiting.write_all(&hello).unwrap();
    for _ in 0..odd.len() + 1 {
        let (_, reason) = echo.next_closed();
        assert!(
            ["TLS error", "peer closed", "read failed", "TLS handshake timed out"]
                .iter()
                .any(|r| reason.starts_with(r)),
            "{reason}"
        );
    }
    good.send(b"still fine").unwrap();
    assert_eq!(recv_exactly(&mut good, 10), b"still fine");
    assert_eq!(echo.wait_stats(|s| s.len == 1).len, 1);
}

#[test]
fn the_server_closing_flushes_first_and_the_client_sees_end_of_file() {
    let echo = Echo::start(TcpLimits::default());
    let refused =
        tcp::connect("127.0.0.1:1".parse().unwrap(), tls::server_name("localhost"), echo.client_config(), SECOND)
            .unwrap_err();
    assert!(refused.to_string().starts_with("cannot connect to 127.0.0.1:1"), "{refused}");

    let mut link = echo.connect().unwrap();
    let conn = echo.next_opened();
    link.send(b"bye").unwrap();
    assert_eq!(recv_exactly(&mut link, 4), b"bye!");
    let err = link.recv(Instant::now() + SECOND).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    assert_eq!(echo.next_closed(), (conn, "closed by the server".to_owned()));
    link.close();

    let mut link = echo.connect().unwrap();
    echo.next_opened();
    link.send(b"ping").unwrap();
    assert_eq!(recv_exactly(&mut link, 4), b"ping");
    drop(echo);
    // The loop stopped and dropped the server: reset or end of file.
    let err = link.recv(Instant::now() + SECOND).unwrap_err();
    assert!(matches!(err.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset), "{err}");
    assert!(link.send(b"more").is_err());
}
