//! The echo loop the tests run a `QuicServer` in, and small helpers.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use confab_transports::hub::{ConnId, ConnIds, Hub, NetEvent, Transport};
use confab_transports::link::Link;
use confab_transports::quic::{QuicLimits, QuicLink, QuicServer, connect};
use confab_transports::tls::{self, ClientTrust, Pin, ServerIdentity};

pub(crate) const WAKE: mio::Token = mio::Token(0);

/// What the echo loop saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    Opened(ConnId, Option<SocketAddr>),
    Received(ConnId, usize),
    Closed(ConnId, String),
}

/// A mio loop that echoes every `Received` back through its `Hub`, closes a
/// connection on request, and reports what it saw.
pub(crate) struct Echo {
    pub(crate) server: Option<QuicServer>,
    seen: mpsc::Receiver<Seen>,
    close: mpsc::Sender<Option<ConnId>>,
    thread: Option<thread::JoinHandle<()>>,
    pub(crate) pin: Pin,
}

impl Echo {
    pub(crate) fn start(limits: QuicLimits) -> Echo {
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

    pub(crate) fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().local_addr()
    }

    pub(crate) fn connect(&self) -> QuicLink {
        let config = tls::client_config(&ClientTrust::Pin(self.pin)).unwrap();
        connect(self.addr(), "localhost", config, Duration::from_secs(2)).unwrap()
    }

    pub(crate) fn close(&self, conn: ConnId) {
        self.close.send(Some(conn)).unwrap();
    }

    /// The next thing the loop saw, within `within`.
    pub(crate) fn next(&self, within: Duration) -> Option<Seen> {
        self.seen.recv_timeout(within).ok()
    }

    /// Waits for the next `Opened`.
    pub(crate) fn opened(&self) -> ConnId {
        match self.next(Duration::from_secs(2)) {
            Some(Seen::Opened(conn, peer)) => {
                assert!(peer.is_some());
                conn
            }
            other => panic!("expected Opened, got {other:?}"),
        }
    }

    /// Skips `Received` events of `conn` until `total` bytes came.
    pub(crate) fn received(&self, conn: ConnId, total: usize) {
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

pub(crate) fn test_limits() -> QuicLimits {
    // Generous: a loaded test machine must not fail a handshake.
    QuicLimits { handshake_timeout: Duration::from_secs(3), ..QuicLimits::default() }
}

/// Reads until `want` bytes came (or fails).
pub(crate) fn read_exactly(link: &mut QuicLink, want: usize) -> Vec<u8> {
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

pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
}
