//! In-memory links through a Hub: events, backlog accounting, closes from
//! either side, and an echo loop on another thread.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use confab_transports::link::Link;
use confab_transports::mem;
use confab_transports::net::{ConnId, ConnIds, Hub, NetEvent, Transport};
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
                        NetEvent::Received { conn, bytes } => assert!(hub.send(conn, bytes)),
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
