//! Inbound credit: what a loop that lags holds back.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use confab_transports::hub::{ConnId, ConnIds, Hub, NetEvent};
use confab_transports::link::Link;
use confab_transports::quic::{QuicLimits, QuicServer, connect};
use confab_transports::tls::{self, ClientTrust, Pin, ServerIdentity};

use super::echo::{Echo, Seen, WAKE, pattern, read_exactly, test_limits};

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
