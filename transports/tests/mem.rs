//! In-memory links through a Hub: events, backlog accounting, closes from
//! either side, and an echo loop on another thread.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use confab_transports::hub::{ConnId, ConnIds, Hub, NetEvent, Transport};
use confab_transports::link::Link;
use confab_transports::mem;
use mio::{Events, Poll, Token};

const SECOND: Duration = Duration::from_secs(1);

fn hub() -> (Poll, Hub) {
    let poll = Poll::new().unwrap();
    let hub = Hub::new(poll.registry(), Token(0), ConnIds::default()).unwrap();
    (poll, hub)
}

fn opened(hub: &mut Hub) -> ConnId {
    match hub.try_recv() {
        Some(NetEvent::Opened { conn, transport: Transport::Mem, peer: None, handle: None }) => conn,
        other => panic!("expected Opened, got {other:?}"),
    }
}

#[test]
fn events_backlog_and_a_client_close() {
    let (_poll, mut hub) = hub();
    let mut link = mem::connect(&hub.sender());
    assert_eq!(link.transport(), "mem");
    let conn = opened(&mut hub);
    assert_eq!(conn, link.conn());
    assert!(hub.owns(conn));

    link.send(b"hello").unwrap();
    match hub.try_recv() {
        Some(NetEvent::Received { conn: c, bytes }) => assert_eq!((c, bytes.as_slice()), (conn, &b"hello"[..])),
        other => panic!("expected Received, got {other:?}"),
    }

    assert_eq!(link.recv(Instant::now()).unwrap(), None);
    assert!(hub.send(conn, b"abc".to_vec()));
    assert!(hub.send(conn, b"de".to_vec()));
    assert_eq!(hub.backlog(conn), 5);
    // Everything already queued comes as one chunk.
    assert_eq!(link.recv(Instant::now() + SECOND).unwrap().unwrap(), b"abcde");
    assert_eq!(hub.backlog(conn), 0);

    link.close();
    match hub.try_recv() {
        Some(NetEvent::Closed { conn: c, reason }) => assert_eq!((c, reason.as_str()), (conn, "peer closed")),
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(!hub.owns(conn));
    assert!(!hub.send(conn, b"late".to_vec()));
    assert_eq!(link.send(b"x").unwrap_err().kind(), io::ErrorKind::NotConnected);
    drop(link);
    assert!(hub.try_recv().is_none(), "one Closed only");
}

#[test]
fn a_server_close_delivers_what_was_sent_then_end_of_file() {
    let (_poll, mut hub) = hub();
    let mut link = mem::connect(&hub.sender());
    let conn = opened(&mut hub);
    assert!(hub.send(conn, b"last words".to_vec()));
    hub.close(conn);
    match hub.try_recv() {
        Some(NetEvent::Closed { conn: c, reason }) => assert_eq!((c, reason.as_str()), (conn, "closed by the server")),
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(hub.is_empty());
    assert_eq!(link.recv(Instant::now() + SECOND).unwrap().unwrap(), b"last words");
    assert_eq!(link.recv(Instant::now() + SECOND).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(link.send(b"x").unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    link.close();
    assert!(hub.try_recv().is_none(), "one Closed only");
}

#[test]
fn a_dropped_link_closes_and_a_dropped_hub_fails_the_link() {
    let (_poll, mut hub) = hub();
    let link = mem::connect(&hub.sender());
    let conn = opened(&mut hub);
    drop(link);
    assert!(matches!(hub.try_recv(), Some(NetEvent::Closed { conn: c, .. }) if c == conn));

    let mut link = mem::connect(&hub.sender());
    opened(&mut hub);
    drop(hub);
    assert_eq!(link.recv(Instant::now() + SECOND).unwrap_err().kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(link.send(b"x").unwrap_err().kind(), io::ErrorKind::ConnectionReset);
}

#[test]
fn an_echo_loop_on_another_thread_returns_large_and_small_writes_in_order() {
    let (mut poll, mut hub) = hub();
    let sender = hub.sender();
    let stop = Arc::new(AtomicBool::new(false));
    let (closed_tx, closed) = mpsc::channel();
    let server = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut events = Events::with_capacity(8);
            while !stop.load(Ordering::SeqCst) {
                poll.poll(&mut events, Some(Duration::from_millis(50))).unwrap();
                while let Some(e) = hub.try_recv() {
                    match e {
                        NetEvent::Opened { .. } => {}
                        NetEvent::Received { conn, bytes } => {
                            let n = bytes.len();
                            assert!(hub.send(conn, bytes));
                            hub.consumed(conn, n);
                        }
                        NetEvent::Closed { reason, .. } => closed_tx.send(reason).unwrap(),
                    }
                }
            }
        })
    };
    let mut link = mem::connect(&sender);
    let mut sent = Vec::new();
    for i in 0..2000 {
        let small = format!("<{i}>");
        link.send(small.as_bytes()).unwrap();
        sent.extend_from_slice(small.as_bytes());
    }
    let large: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect();
    link.send(&large).unwrap();
    sent.extend_from_slice(&large);

    let deadline = Instant::now() + SECOND;
    let mut got = Vec::new();
    while got.len() < sent.len() {
        got.extend(link.recv(deadline).unwrap().expect("echo timed out"));
    }
    assert!(got == sent, "echo differs");
    link.close();
    assert_eq!(closed.recv_timeout(SECOND).unwrap(), "peer closed");
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();
}

#[test]
fn a_link_blocks_while_the_loop_does_not_consume_and_loses_nothing() {
    let (mut poll, mut hub) = hub();
    let sender = hub.sender();
    let data: Vec<u8> = (0..(3 * mem::MAX_INBOUND + 12345)).map(|i| (i % 253) as u8).collect();
    let sent = Arc::new(AtomicUsize::new(0));
    let client = {
        let (data, sent) = (data.clone(), Arc::clone(&sent));
        std::thread::spawn(move || {
            let mut link = mem::connect(&sender);
            for piece in data.chunks(10_000) {
                link.send(piece).unwrap();
                sent.fetch_add(piece.len(), Ordering::SeqCst);
            }
            link
        })
    };
    let mut events = Events::with_capacity(8);
    let mut got = Vec::new();
    let mut conn = None;
    // Hold everything: the client stops at its credit.
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        poll.poll(&mut events, Some(Duration::from_millis(10))).unwrap();
        while let Some(e) = hub.try_recv() {
            match e {
                NetEvent::Opened { conn: c, .. } => conn = Some(c),
                NetEvent::Received { bytes, .. } => got.extend_from_slice(&bytes),
                NetEvent::Closed { reason, .. } => panic!("closed: {reason}"),
            }
        }
    }
    assert!(got.len() <= mem::MAX_INBOUND && !got.is_empty(), "{} bytes held", got.len());
    assert!(sent.load(Ordering::SeqCst) <= mem::MAX_INBOUND + 10_000, "{}", sent.load(Ordering::SeqCst));
    let conn = conn.expect("opened");
    // Consume: the rest comes, in order.
    hub.consumed(conn, got.len());
    let deadline = Instant::now() + 5 * SECOND;
    while got.len() < data.len() {
        assert!(Instant::now() < deadline, "{} of {} bytes", got.len(), data.len());
        poll.poll(&mut events, Some(Duration::from_millis(10))).unwrap();
        while let Some(e) = hub.try_recv() {
            if let NetEvent::Received { bytes, .. } = e {
                assert!(bytes.len() <= mem::MAX_INBOUND);
                hub.consumed(conn, bytes.len());
                got.extend_from_slice(&bytes);
            }
        }
    }
    assert!(got == data, "bytes differ");
    let link = client.join().unwrap();
    drop(link);
    assert!(matches!(hub.try_recv(), Some(NetEvent::Closed { conn: c, .. }) if c == conn));
}

#[test]
fn a_blocked_send_fails_when_the_server_closes_or_goes() {
    let (_poll, mut hub) = hub();
    let mut link = mem::connect(&hub.sender());
    let conn = opened(&mut hub);
    link.send(&vec![1; mem::MAX_INBOUND]).unwrap();
    let blocked = std::thread::spawn(move || link.send(b"more").unwrap_err().kind());
    std::thread::sleep(Duration::from_millis(150));
    hub.close(conn);
    assert_eq!(blocked.join().unwrap(), io::ErrorKind::UnexpectedEof);

    let mut link = mem::connect(&hub.sender());
    // Skip the first link's events.
    let conn = loop {
        match hub.try_recv() {
            Some(NetEvent::Opened { conn, .. }) => break conn,
            Some(_) => {}
            None => panic!("no Opened"),
        }
    };
    assert_eq!(conn, link.conn());
    link.send(&vec![2; mem::MAX_INBOUND]).unwrap();
    let blocked = std::thread::spawn(move || link.send(b"more").unwrap_err().kind());
    std::thread::sleep(Duration::from_millis(150));
    drop(hub);
    assert_eq!(blocked.join().unwrap(), io::ErrorKind::ConnectionReset);
}
