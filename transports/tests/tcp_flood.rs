//! Half-open floods against the TCP transport, over real loopback sockets:
//! a source that opens connections and never says a word must not take
//! the handshake slots of everyone else.
//!
//! Linux routes all of 127.0.0.0/8 to `lo`, so a client socket bound to
//! 127.0.0.2 before connecting is "another source" for the server.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use confab_transports::hub::{ConnIds, NetEvent};
use confab_transports::tcp::{TcpLimits, TcpRefusals, TcpServer};
use confab_transports::tls::{self, ClientTrust, Pin, ServerIdentity};
use mio::{Events, Poll, Token, Waker};

const WAKER: Token = Token(0);
const SECOND: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    len: usize,
    refused: u64,
    refusals: TcpRefusals,
}

/// A `TcpServer` on its own loop thread that reports who opened and who closed.
struct Loop {
    addr: SocketAddr,
    pin: Pin,
    opened: mpsc::Receiver<SocketAddr>,
    closed: mpsc::Receiver<String>,
    stats: Arc<Mutex<Stats>>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl Loop {
    fn start(limits: TcpLimits) -> Loop {
        let made = ServerIdentity::self_signed(&["localhost".to_owned()]).unwrap();
        let pin = made.identity.pin().unwrap();
        let config = Arc::new(tls::server_config(&made.identity).unwrap());
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).unwrap());
        let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let mut server = TcpServer::bind(poll.registry(), any, config, ConnIds::default(), limits).unwrap();
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), server.local_addr().port());
        let (opened_tx, opened) = mpsc::channel();
        let (closed_tx, closed) = mpsc::channel();
        let stats = Arc::new(Mutex::new(Stats::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stats, stop) = (Arc::clone(&stats), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut events = Events::with_capacity(1024);
                let mut net = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let now = Instant::now();
                    let timeout = server.poll_timeout().map_or(SECOND, |t| t.saturating_duration_since(now));
                    poll.poll(&mut events, Some(timeout.min(SECOND))).unwrap();
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
                            NetEvent::Opened { peer, .. } => {
                                let _ = opened_tx.send(peer.unwrap());
                            }
                            NetEvent::Closed { reason, .. } => {
                                let _ = closed_tx.send(reason);
                            }
                            NetEvent::Received { .. } => {}
                        }
                    }
                    *stats.lock().unwrap() =
                        Stats { len: server.len(), refused: server.refused(), refusals: server.refusals() };
                }
            })
        };
        Loop { addr, pin, opened, closed, stats, stop, waker, thread: Some(thread) }
    }

    fn stats(&self) -> Stats {
        *self.stats.lock().unwrap()
    }

    /// Waits (up to `within`) until the loop's stats satisfy `ok`.
    fn wait_stats(&self, within: Duration, ok: impl Fn(&Stats) -> bool) -> Stats {
        let deadline = Instant::now() + within;
        loop {
            let stats = self.stats();
            if ok(&stats) || Instant::now() >= deadline {
                return stats;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A TLS client from `source`: connects, completes the handshake with
    /// ALPN `confab/1`, and returns the connected stream.
    fn tls_client_from(&self, source: Ipv4Addr) -> io::Result<(TcpStream, rustls::ClientConnection)> {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        sock.bind(&SocketAddr::new(IpAddr::V4(source), 0).into())?;
        sock.connect_timeout(&self.addr.into(), SECOND)?;
        let mut stream: TcpStream = sock.into();
        stream.set_read_timeout(Some(2 * SECOND))?;
        let config = Arc::new(tls::client_config(&ClientTrust::Pin(self.pin)).unwrap());
        let mut tls = rustls::ClientConnection::new(config, tls::server_name("localhost")).map_err(io::Error::other)?;
        while tls.is_handshaking() {
            let (read, _) = tls.complete_io(&mut stream)?;
            if read == 0 && tls.is_handshaking() && !tls.wants_write() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during the TLS handshake"));
            }
        }
        Ok((stream, tls))
    }
}

impl Drop for Loop {
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

/// `n` connections from 127.0.0.1 that never send a byte.
fn half_open(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect()
}

#[test]
fn a_thousand_half_open_sockets_from_one_source_do_not_lock_out_another_source() {
    let server = Loop::start(TcpLimits::default());
    let flood = half_open(server.addr, 1_000);
    // The server has seen every one of them: held or refused.
    let stats = server.wait_stats(5 * SECOND, |s| s.len as u64 + s.refused >= 1_000);
    assert!(stats.len as u64 + stats.refused >= 1_000, "the server saw only part of the flood: {stats:?}");

    let started = Instant::now();
    let (_stream, tls) = server
        .tls_client_from(Ipv4Addr::new(127, 0, 0, 2))
        .unwrap_or_else(|e| panic!("a client from another source was locked out ({stats:?}): {e}"));
    assert_eq!(tls.alpn_protocol(), Some(&b"confab/1"[..]));
    let peer = server.opened.recv_timeout(SECOND).expect("the server reported no Opened");
    assert_eq!(peer.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    assert!(started.elapsed() < 2 * SECOND, "the handshake took {:?}", started.elapsed());
    drop(flood);
}

#[test]
fn a_flooding_source_holds_no_more_than_its_share_of_the_handshake_slots() {
    let limits = TcpLimits { max_handshaking: 40, max_handshaking_per_source: 5, ..TcpLimits::default() };
    let server = Loop::start(limits);
    let mut flood = half_open(server.addr, 20);
    let stats = server.wait_stats(5 * SECOND, |s| s.len as u64 + s.refused >= 20);
    assert_eq!((stats.len, stats.refused), (5, 15));
    assert_eq!(stats.refusals, TcpRefusals { per_source: 15, ..TcpRefusals::default() });
    // A refused socket is closed at once: reading it gives end of file (or a reset).
    let mut last = flood.pop().unwrap();
    last.set_read_timeout(Some(SECOND)).unwrap();
    let mut buf = [0u8; 8];
    match last.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0),
        Err(e) => assert_ne!(e.kind(), io::ErrorKind::WouldBlock, "a refused socket is still open"),
    }
}

#[test]
fn above_half_the_slots_new_handshakes_get_the_shorter_timeout() {
    let limits = TcpLimits {
        max_handshaking: 8,
        max_handshaking_per_source: 8,
        handshake_timeout: 10 * SECOND,
        busy_handshake_timeout: Duration::from_millis(300),
        ..TcpLimits::default()
    };
    let server = Loop::start(limits);
    // Half the slots: these get the full timeout.
    let calm = half_open(server.addr, 4);
    server.wait_stats(SECOND, |s| s.len == 4);
    let started = Instant::now();
    let busy = half_open(server.addr, 2);
    let first = server.closed.recv_timeout(2 * SECOND).expect("no handshake timed out early");
    let second = server.closed.recv_timeout(SECOND).expect("only one handshake timed out early");
    let elapsed = started.elapsed();
    for reason in [&first, &second] {
        assert!(reason.contains("TLS handshake timed out after 300ms"), "{reason}");
    }
    assert!(elapsed >= Duration::from_millis(300) && elapsed < 2 * SECOND, "{elapsed:?}");
    // The four that came in calm are still held.
    assert_eq!(server.wait_stats(SECOND, |s| s.len == 4).len, 4);
    assert!(server.closed.try_recv().is_err());
    drop((calm, busy));
}
