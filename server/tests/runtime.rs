//! The server's event loop over real sockets and in-memory links: a
//! session's frames round-trip, and a graceful stop tells every session why
//! and closes every connection cleanly (none left to the grace period).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_proto::{FrameDecoder, Limits, Message, Ping, ServerConfig};
use confab_server::runtime::{MemoryStore, Node, NodeConfig, RunSummary};
use confab_transports::link::Link;
use confab_transports::tls::{self, ClientTrust, ServerIdentity};
use confab_transports::{quic, tcp};

fn decode_all(bytes: &[u8]) -> Vec<Message> {
    let limits = Limits::default();
    let mut decoder = FrameDecoder::new(limits);
    decoder.push(bytes);
    let mut out = Vec::new();
    while let Ok(Some(frame)) = decoder.next_frame() {
        out.push(Message::decode(&frame, &limits).expect("the server sends valid frames"));
    }
    out
}

/// Sends a ping, waits for its pong.
fn ping_pong(link: &mut dyn Link, nonce: u64) {
    link.send(&Message::Ping(Ping { nonce }).to_bytes(&[])).expect("send");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    loop {
        let bytes = link.recv(deadline).expect("recv").expect("a pong within 10 s");
        got.extend_from_slice(&bytes);
        if decode_all(&got).iter().any(|m| matches!(m, Message::Pong(p) if p.nonce == nonce)) {
            return;
        }
    }
}

/// Reads until the server closes; returns the close frame's code.
fn close_code(link: &mut dyn Link) -> Option<u16> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while let Ok(Some(bytes)) = link.recv(deadline) {
        got.extend_from_slice(&bytes);
    }
    decode_all(&got).iter().find_map(|m| match m {
        Message::Close(c) => Some(c.code),
        _ => None,
    })
}

#[test]
fn a_graceful_stop_closes_every_transport_with_503() {
    let made = ServerIdentity::self_signed(&["localhost".to_owned()]).expect("certificate");
    let pin = made.identity.pin().expect("pin");
    let server = ServerConfig::default();
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let node = Node::bind(
        NodeConfig::new(server.clone(), addr, made.identity),
        Box::new(MemoryStore::new(&server)),
        confab_proto::server::State::new(server.room_history, server.dedup_window),
    )
    .expect("bind");
    let (tcp_addr, quic_addr) = (node.tcp_addr().expect("tcp"), node.quic_addr().expect("quic"));
    let handle = node.handle();
    let running = std::thread::spawn(move || node.run());

    let config = tls::client_config(&ClientTrust::Pin(pin)).expect("client config");
    let mut links: Vec<Box<dyn Link>> = vec![
        Box::new(
            tcp::connect(tcp_addr, tls::server_name("localhost"), Arc::new(config.clone()), Duration::from_secs(5))
                .expect("tcp"),
        ),
        Box::new(quic::connect(quic_addr, "localhost", config, Duration::from_secs(5)).expect("quic")),
        Box::new(handle.connect_mem()),
    ];
    for (n, link) in links.iter_mut().enumerate() {
        ping_pong(link.as_mut(), n as u64 + 1);
    }

    handle.stop();
    for link in &mut links {
        let transport = link.transport();
        assert_eq!(close_code(link.as_mut()), Some(503), "{transport}: told the server is shutting down");
    }
    let summary: RunSummary = running.join().expect("the loop does not panic").expect("a clean stop");
    assert_eq!(summary.connections, 3);
    assert_eq!(summary.abandoned, 0, "every connection closed cleanly before the grace period ran out");
}
