//! The echo loop the tests drive a `QuicServer` in, and small helpers.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use confab_transports::hub::{ConnId, ConnIds, NetEvent, Transport};
use confab_transports::link::Link;
use confab_transports::quic::{QuicLimits, QuicLink, QuicServer, connect};
use confab_transports::tls::{self, ClientTrust, Pin, ServerIdentity};

pub(crate) const SOCKET: mio::Token = mio::Token(1);

/// What the echo loop saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    Opened(ConnId, Option<SocketAddr>),
    Received(ConnId, usize),
    Closed(ConnId, String),
}

/// What the test asks of the loop.
enum Command {
    /// Close every connection in the turn its received bytes reach this total.
    CloseAfter(usize),
    StopAccepting,
    Shutdown(mpsc::Sender<()>),
    Stop,
}

/// A mio loop that drives a `QuicServer` as the server's loop does (events,
/// timeouts, one flush per turn), echoes every `Received` back, closes a
/// connection on request, and reports what it saw.
pub(crate) struct Echo {
    addr: SocketAddr,
    seen: mpsc::Receiver<Seen>,
    commands: mpsc::Sender<Command>,
    thread: Option<thread::JoinHandle<()>>,
    pub(crate) pin: Pin,
}

/// A server identity, its TLS config and its pin.
pub(crate) fn identity() -> (rustls::ServerConfig, Pin) {
    let made = ServerIdentity::self_signed(&["localhost".to_owned()]).unwrap();
    let pin = made.identity.pin().unwrap();
    (tls::server_config(&made.identity).unwrap(), pin)
}

/// A bound server on a fresh poll.
pub(crate) fn bind(limits: QuicLimits) -> (mio::Poll, QuicServer, Pin) {
    let (tls, pin) = identity();
    let poll = mio::Poll::new().unwrap();
    let server = QuicServer::bind(
        poll.registry(),
        SOCKET,
        "127.0.0.1:0".parse().unwrap(),
        tls,
        ConnIds::default(),
        limits,
        Instant::now(),
    )
    .unwrap();
    (poll, server, pin)
}

/// One turn of a loop: waits for the socket or the server's timeout (at
/// most `tick`), and returns the events the server pushed.
pub(crate) fn turn(
    poll: &mut mio::Poll,
    events: &mut mio::Events,
    server: &mut QuicServer,
    tick: Duration,
) -> Vec<NetEvent> {
    let wait = server.poll_timeout().map_or(tick, |t| t.saturating_duration_since(Instant::now()).min(tick));
    poll.poll(events, Some(wait)).unwrap();
    let now = Instant::now();
    let mut net = Vec::new();
    for event in events.iter() {
        assert!(server.owns(event.token()));
        server.handle_event(poll.registry(), now, event, &mut net);
    }
    if server.poll_timeout().is_some_and(|t| t <= now) {
        server.handle_timeout(poll.registry(), now, &mut net);
    }
    net
}

impl Echo {
    pub(crate) fn start(limits: QuicLimits) -> Echo {
        let (seen_tx, seen) = mpsc::channel();
        let (commands, command_rx) = mpsc::channel::<Command>();
        let (bound_tx, bound) = mpsc::channel();
        let thread = thread::spawn(move || {
            let (mut poll, mut server, pin) = bind(limits);
            bound_tx.send((server.local_addr(), pin)).unwrap();
            let mut events = mio::Events::with_capacity(64);
            let mut close_after = None;
            let mut totals = std::collections::HashMap::new();
            loop {
                // Commands are picked up on a short tick.
                let mut net = turn(&mut poll, &mut events, &mut server, Duration::from_millis(5));
                loop {
                    match command_rx.try_recv() {
                        Ok(Command::CloseAfter(total)) => close_after = Some(total),
                        Ok(Command::StopAccepting) => server.stop_accepting(),
                        Ok(Command::Shutdown(done)) => {
                            server.shutdown(poll.registry(), Instant::now(), &mut net);
                            let _ = done.send(());
                        }
                        Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => return,
                        Err(mpsc::TryRecvError::Empty) => break,
                    }
                }
                for event in net {
                    let seen = match event {
                        NetEvent::Opened { conn, transport, peer, handle } => {
                            assert_eq!(transport, Transport::Quic);
                            assert!(handle.is_none(), "the loop drives QUIC itself");
                            Seen::Opened(conn, peer)
                        }
                        NetEvent::Received { conn, bytes } => {
                            let n = bytes.len();
                            server.send(conn, bytes.into());
                            let total = totals.entry(conn).or_insert(0);
                            *total += n;
                            if close_after.is_some_and(|t| *total >= t) {
                                server.close(conn);
                            }
                            Seen::Received(conn, n)
                        }
                        NetEvent::Closed { conn, reason } => Seen::Closed(conn, reason),
                    };
                    if seen_tx.send(seen).is_err() {
                        return;
                    }
                }
                server.flush(poll.registry(), Instant::now());
            }
        });
        let (addr, pin) = bound.recv().unwrap();
        Echo { addr, seen, commands, thread: Some(thread), pin }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn connect(&self) -> QuicLink {
        let config = tls::client_config(&ClientTrust::Pin(self.pin)).unwrap();
        connect(self.addr(), "localhost", config, Duration::from_secs(2)).unwrap()
    }

    /// Closes each connection in the turn that echoes its `total`-th byte.
    pub(crate) fn close_after(&self, total: usize) {
        self.commands.send(Command::CloseAfter(total)).unwrap();
    }

    pub(crate) fn stop_accepting(&self) {
        self.commands.send(Command::StopAccepting).unwrap();
    }

    /// Shuts the server down (every connection closed, code 4) and waits until it did.
    pub(crate) fn shutdown(&self) {
        let (done, wait) = mpsc::channel();
        self.commands.send(Command::Shutdown(done)).unwrap();
        wait.recv_timeout(Duration::from_secs(2)).unwrap();
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
        let _ = self.commands.send(Command::Stop);
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
