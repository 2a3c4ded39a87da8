//! Inbound bounds and outbound batching of a `QuicServer` driven by a loop:
//! what one turn reads, what a loop that stops holds back, and how many
//! send calls one turn's frames cost.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use confab_transports::hub::{ConnId, NetEvent};
use confab_transports::link::Link;
use confab_transports::quic::{QuicLimits, connect};
use confab_transports::tls::{self, ClientTrust};

use super::echo::{Echo, Seen, bind, pattern, read_exactly, test_limits, turn};

#[test]
fn a_small_read_chunk_still_carries_everything_in_order() {
    // Smaller than one datagram: every turn reads 1000 bytes at most.
    let echo = Echo::start(QuicLimits { read_chunk: 1000, ..test_limits() });
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
}

/// Runs a client that sends `data` in 64 KiB pieces and then reads nothing;
/// returns its thread and the count of bytes its `send` calls returned for.
fn sender(addr: std::net::SocketAddr, pin: tls::Pin, data: Arc<Vec<u8>>) -> (thread::JoinHandle<()>, Arc<AtomicUsize>) {
    let sent = Arc::new(AtomicUsize::new(0));
    let thread = {
        let sent = sent.clone();
        thread::spawn(move || {
            let config = tls::client_config(&ClientTrust::Pin(pin)).unwrap();
            let mut link = connect(addr, "localhost", config, Duration::from_secs(2)).unwrap();
            for piece in data.chunks(64 * 1024) {
                link.send(piece).unwrap();
                sent.fetch_add(piece.len(), Ordering::SeqCst);
            }
            // Keep the connection driven until the server has read everything.
            let _ = link.recv(Instant::now() + Duration::from_secs(20));
        })
    };
    (thread, sent)
}

#[test]
fn one_turn_reads_at_most_read_chunk_per_connection_and_the_rest_is_due_at_once() {
    let limits = QuicLimits { read_chunk: 4096, ..test_limits() };
    let (mut poll, mut server, pin) = bind(limits);
    let data = Arc::new(pattern(2 << 20, 4));
    let (client, _) = sender(server.local_addr(), pin, data.clone());
    let mut events = mio::Events::with_capacity(64);
    let mut got = Vec::new();
    let mut full_turns = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < data.len() {
        assert!(Instant::now() < deadline, "{} of {} bytes arrived", got.len(), data.len());
        let net = turn(&mut poll, &mut events, &mut server, Duration::from_millis(50));
        let mut this_turn: Vec<(ConnId, usize)> = Vec::new();
        for event in net {
            if let NetEvent::Received { conn, bytes } = event {
                this_turn.push((conn, bytes.len()));
                got.extend_from_slice(&bytes);
            }
        }
        let read: usize = this_turn.iter().map(|(_, n)| n).sum();
        assert!(read <= 4096, "one turn read {read} bytes of one connection");
        if read == 4096 {
            full_turns += 1;
            // Input is left over: the server wants the next turn at once.
            assert!(server.poll_timeout().is_some_and(|t| t <= Instant::now()), "no resume after a full turn");
        }
        server.flush(poll.registry(), Instant::now());
    }
    assert!(got == *data, "bytes differ");
    assert!(full_turns > 100, "only {full_turns} turns hit the bound");
    client.join().unwrap();
}

#[test]
fn a_loop_that_stops_turning_holds_the_peer_back_and_loses_nothing() {
    let (mut poll, mut server, pin) = bind(test_limits());
    let data = Arc::new(pattern(8 << 20, 9));
    let (client, sent) = sender(server.local_addr(), pin, data.clone());
    let mut events = mio::Events::with_capacity(64);
    let mut got = Vec::new();
    // Turn until the session is open and some bytes came.
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.is_empty() {
        assert!(Instant::now() < deadline, "nothing arrived");
        for event in turn(&mut poll, &mut events, &mut server, Duration::from_millis(20)) {
            if let NetEvent::Received { bytes, .. } = event {
                got.extend_from_slice(&bytes);
            }
        }
        server.flush(poll.registry(), Instant::now());
    }
    // The loop stops: the client stalls once the stream's receive window is full.
    let mut last = usize::MAX;
    let mut still_since = Instant::now();
    while last == usize::MAX || still_since.elapsed() < Duration::from_millis(500) {
        assert!(Instant::now() < deadline, "the client never stalled");
        let now = sent.load(Ordering::SeqCst);
        if now != last {
            last = now;
            still_since = Instant::now();
        }
        thread::sleep(Duration::from_millis(20));
    }
    let stalled_at = sent.load(Ordering::SeqCst);
    // What was read, plus the stream's receive window (1 MiB), plus one piece.
    assert!(stalled_at <= got.len() + (1 << 20) + (64 << 10), "client sent {stalled_at} bytes, {} read", got.len());
    assert!(stalled_at < data.len());
    // The loop turns again: everything arrives, in order (credit flows back as it reads).
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < data.len() {
        assert!(Instant::now() < deadline, "{} of {} bytes arrived", got.len(), data.len());
        for event in turn(&mut poll, &mut events, &mut server, Duration::from_millis(20)) {
            if let NetEvent::Received { bytes, .. } = event {
                got.extend_from_slice(&bytes);
            }
        }
        server.flush(poll.registry(), Instant::now());
    }
    assert!(got == *data, "bytes differ");
    client.join().unwrap();
}

#[test]
fn frames_queued_in_one_turn_leave_in_far_fewer_send_calls() {
    let (mut poll, mut server, pin) = bind(test_limits());
    let addr = server.local_addr();
    let frames = 200usize;
    let frame = pattern(100, 1);
    let client = thread::spawn(move || {
        let config = tls::client_config(&ClientTrust::Pin(pin)).unwrap();
        let mut link = connect(addr, "localhost", config, Duration::from_secs(2)).unwrap();
        link.send(b"hi").unwrap();
        read_exactly_link(&mut link, frames * 100)
    });
    let mut events = mio::Events::with_capacity(64);
    let deadline = Instant::now() + Duration::from_secs(10);
    let conn = loop {
        assert!(Instant::now() < deadline, "no session");
        let opened = turn(&mut poll, &mut events, &mut server, Duration::from_millis(20))
            .into_iter()
            .find_map(|e| if let NetEvent::Received { conn, .. } = e { Some(conn) } else { None });
        server.flush(poll.registry(), Instant::now());
        if let Some(conn) = opened {
            break conn;
        }
    };
    // One turn: the core's output is 200 frames for this connection.
    let before = server.udp_stats();
    for _ in 0..frames {
        assert!(server.send(conn, frame.clone().into()));
    }
    assert_eq!(server.udp_stats(), before, "nothing leaves before the turn's flush");
    server.flush(poll.registry(), Instant::now());
    let after = server.udp_stats();
    let (calls, datagrams) = (after.sends - before.sends, after.datagrams_sent - before.datagrams_sent);
    // 20,000 bytes fill about 15 datagrams (fewer if the congestion window
    // holds some back); each frame on its own would cost a call.
    assert!((1..=20).contains(&datagrams), "{datagrams} datagrams");
    assert!(calls <= datagrams && calls * 10 <= frames as u64, "{calls} send calls for {frames} frames");
    // The rest follows as acks come back: the client gets every byte.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !client.is_finished() {
        assert!(Instant::now() < deadline, "the client did not get every frame");
        let _ = turn(&mut poll, &mut events, &mut server, Duration::from_millis(20));
        server.flush(poll.registry(), Instant::now());
    }
    let back = client.join().unwrap();
    assert!(back == frame.repeat(frames), "frames differ");
}

fn read_exactly_link(link: &mut confab_transports::quic::QuicLink, want: usize) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < want {
        match link.recv(deadline).unwrap() {
            Some(chunk) => got.extend_from_slice(&chunk),
            None => panic!("timed out after {} of {want} bytes", got.len()),
        }
    }
    got
}

#[test]
fn a_bulk_transfer_to_the_client_sends_every_gso_batch_without_a_refusal() {
    let (mut poll, mut server, pin) = bind(test_limits());
    let addr = server.local_addr();
    let total = 8usize << 20;
    let client = thread::spawn(move || {
        let config = tls::client_config(&ClientTrust::Pin(pin)).unwrap();
        let mut link = connect(addr, "localhost", config, Duration::from_secs(2)).unwrap();
        link.send(b"go").unwrap();
        read_exactly_link(&mut link, total)
    });
    let mut events = mio::Events::with_capacity(64);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = None;
    let piece = pattern(64 << 10, 6);
    let mut queued = 0;
    while !client.is_finished() {
        assert!(Instant::now() < deadline, "the client did not get everything");
        for event in turn(&mut poll, &mut events, &mut server, Duration::from_millis(5)) {
            if let NetEvent::Received { conn: c, .. } = event {
                conn = Some(c);
            }
        }
        // Keep about 1 MiB queued: the congestion window grows well past 64 KiB.
        if let Some(c) = conn {
            while queued < total && server.backlog(c) < (1 << 20) {
                assert!(server.send(c, piece.clone().into()));
                queued += piece.len();
            }
        }
        server.flush(poll.registry(), Instant::now());
    }
    let back = client.join().unwrap();
    assert!(back == piece.repeat(total / piece.len()), "bytes differ");
    let stats = server.udp_stats();
    // A GSO batch over 64 KiB is refused by the kernel (EMSGSIZE) and its datagrams are lost.
    assert_eq!(stats.send_errors, 0, "{stats:?}");
}

#[test]
fn a_client_turn_of_small_frames_reaches_the_server_in_a_few_datagrams() {
    let (mut poll, mut server, pin) = bind(test_limits());
    let addr = server.local_addr();
    let (go, ready) = std::sync::mpsc::channel::<()>();
    let (opened, wait_opened) = std::sync::mpsc::channel::<()>();
    let client = thread::spawn(move || {
        let config = tls::client_config(&ClientTrust::Pin(pin)).unwrap();
        let mut link = connect(addr, "localhost", config, Duration::from_secs(2)).unwrap();
        link.send(b"hi").unwrap();
        read_exactly_link(&mut link, 2);
        opened.send(()).unwrap();
        ready.recv().unwrap();
        // One turn of a driver: 16 frames of 100 bytes, then the wait for the answers.
        for i in 0..16u8 {
            link.send(&pattern(100, i)).unwrap();
        }
        read_exactly_link(&mut link, 1600)
    });
    let mut events = mio::Events::with_capacity(64);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let echo = |server: &mut confab_transports::quic::QuicServer, net: Vec<NetEvent>, got: &mut Vec<u8>| {
        for event in net {
            if let NetEvent::Received { conn, bytes } = event {
                got.extend_from_slice(&bytes);
                assert!(server.send(conn, bytes.into()));
            }
        }
    };
    while got.len() < 2 {
        assert!(Instant::now() < deadline, "no session");
        let net = turn(&mut poll, &mut events, &mut server, Duration::from_millis(20));
        echo(&mut server, net, &mut got);
        server.flush(poll.registry(), Instant::now());
    }
    wait_opened.recv().unwrap();
    // Let the last acknowledgements land before counting.
    let settle = Instant::now() + Duration::from_millis(100);
    while Instant::now() < settle {
        let net = turn(&mut poll, &mut events, &mut server, Duration::from_millis(10));
        echo(&mut server, net, &mut got);
        server.flush(poll.registry(), Instant::now());
    }
    let before = server.udp_stats();
    go.send(()).unwrap();
    while got.len() < 2 + 1600 {
        assert!(Instant::now() < deadline, "{} of 1602 bytes", got.len());
        let net = turn(&mut poll, &mut events, &mut server, Duration::from_millis(20));
        echo(&mut server, net, &mut got);
        server.flush(poll.registry(), Instant::now());
    }
    let datagrams = server.udp_stats().datagrams_received - before.datagrams_received;
    // 1,600 bytes fill two datagrams; a datagram per frame would be 16.
    assert!(datagrams <= 4, "{datagrams} datagrams for 16 frames");
    while !client.is_finished() {
        assert!(Instant::now() < deadline, "the client did not get its echo");
        let net = turn(&mut poll, &mut events, &mut server, Duration::from_millis(20));
        echo(&mut server, net, &mut got);
        server.flush(poll.registry(), Instant::now());
    }
    let back = client.join().unwrap();
    let sent: Vec<u8> = (0..16u8).flat_map(|i| pattern(100, i)).collect();
    assert!(back == sent, "echo differs");
}
