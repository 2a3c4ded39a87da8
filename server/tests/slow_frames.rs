//! A frame dripped over a real TLS connection is closed at its deadline
//! (issue 12, item 3), long before the idle timeout its bytes keep resetting,
//! while another connection is served as usual.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_proto::server::{MemoryStore, State};
use confab_proto::wire::{Message, Ping};
use confab_proto::{ServerConfig, wire::status};
use confab_server::runtime::{Node, NodeConfig};
use confab_transports::link::Link;
use confab_transports::tcp;
use confab_transports::tls::{self, ClientTrust, ServerIdentity};

mod common;
use common::decode_all;

#[test]
fn a_frame_dripped_over_tls_is_closed_at_its_deadline_and_others_are_served() {
    let made = ServerIdentity::self_signed(&["localhost".to_owned()]).expect("certificate");
    let pin = made.identity.pin().expect("pin");
    let grace = Duration::from_secs(1);
    let server = ServerConfig { frame_grace: grace, ..ServerConfig::default() };
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let mut node_config = NodeConfig::new(server.clone(), addr, made.identity);
    node_config.quic = None;
    let node = Node::bind(node_config, MemoryStore::new(&server), State::new(server.room_history, server.dedup_window))
        .expect("bind");
    let tcp_addr = node.tcp_addr().expect("tcp");
    let handle = node.handle();
    let running = std::thread::spawn(move || node.run());
    let config = Arc::new(tls::client_config(&ClientTrust::Pin(pin)).expect("client config"));
    let connect = || {
        tcp::connect(tcp_addr, tls::server_name("localhost"), Arc::clone(&config), Duration::from_secs(5)).expect("tcp")
    };

    // A request header declaring 1 MiB, then its body, one byte every 200 ms.
    let mut drip = connect();
    let mut frame = vec![1u8, 2, 0, 0, 0, 0];
    frame.extend_from_slice(&(1u64 << 20).to_be_bytes());
    let mut bytes = frame.into_iter().chain(std::iter::repeat(0u8));
    let started = Instant::now();
    let mut got = Vec::new();
    let close = loop {
        assert!(started.elapsed() < Duration::from_secs(10), "still open after {:?}", started.elapsed());
        if drip.send(&[bytes.next().unwrap()]).is_err() {
            break None;
        }
        let wake = Instant::now() + Duration::from_millis(200);
        let mut ended = false;
        while Instant::now() < wake {
            match drip.recv(wake) {
                Ok(Some(b)) => got.extend_from_slice(&b),
                Ok(None) => break,
                Err(_) => {
                    ended = true;
                    break;
                }
            }
        }
        let close = decode_all(&got).into_iter().find_map(|m| match m {
            Message::Close(c) => Some(c),
            _ => None,
        });
        if close.is_some() || ended {
            break close;
        }
    };
    let elapsed = started.elapsed();
    let close = close.expect("a close frame before the connection ended");
    assert_eq!(close.code, status::IDLE_TIMEOUT);
    assert!(close.reason.starts_with("frame too slow: "), "{}", close.reason);
    assert!(elapsed >= grace && elapsed < grace + Duration::from_secs(2), "closed after {elapsed:?}");

    // Another connection is served as usual.
    let mut other = connect();
    other.send(&Message::Ping(Ping { nonce: 7 }).to_bytes(&[])).expect("send");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut answer = Vec::new();
    while !decode_all(&answer).iter().any(|m| matches!(m, Message::Pong(p) if p.nonce == 7)) {
        let b = other.recv(deadline).expect("recv").expect("a pong within 5 s");
        answer.extend_from_slice(&b);
    }
    handle.stop();
    running.join().expect("the loop does not panic").expect("a clean stop");
}
