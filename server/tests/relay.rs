//! The relay between a cluster's nodes over a real `nats-server` (skipped
//! without it unless `CONFAB_REQUIRE_CLUSTER=1`): an edge relays only
//! while it hears an owner; bytes go both ways in order; a lost message,
//! an owner replaced or silent, and an edge gone silent each end the
//! connections concerned, on both sides.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use confab_server::relay::edge::{EdgeEvent, EdgeRelay};
use confab_server::relay::envelope::Envelope;
use confab_server::relay::host::RelayHost;
use confab_server::relay::{RelayConfig, Subjects};
use confab_tests::nats::TempNats;
use confab_transports::hub::{ConnId, ConnIds, Hub, NetEvent, Transport};

const WAIT: Duration = Duration::from_secs(10);

fn config(nats: &TempNats, node: &str) -> RelayConfig {
    RelayConfig { url: nats.url(), cluster: "test".into(), node: node.into() }
}

/// The owner's loop, reduced to its hub.
struct Owner {
    _poll: mio::Poll,
    hub: Hub,
}

impl Owner {
    fn new() -> Owner {
        let poll = mio::Poll::new().unwrap();
        let hub = Hub::new(poll.registry(), mio::Token(0), ConnIds::default()).unwrap();
        Owner { _poll: poll, hub }
    }

    fn next(&mut self) -> NetEvent {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(e) = self.hub.try_recv() {
                return e;
            }
            assert!(Instant::now() < deadline, "the owner got nothing within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// An edge's loop, reduced to its relay.
struct Edge {
    _poll: mio::Poll,
    relay: EdgeRelay,
}

impl Edge {
    fn start(nats: &TempNats, node: &str) -> Edge {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        Edge { relay: EdgeRelay::start(config(nats, node), waker).unwrap(), _poll: poll }
    }

    /// The next event about a connection (owner news skipped).
    fn next(&self) -> EdgeEvent {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.relay.try_recv() {
                Some(EdgeEvent::Owner { .. }) | None => {}
                Some(e) => return e,
            }
            assert!(Instant::now() < deadline, "the edge got nothing within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Opens `conn` once the edge hears an owner (an open before that is
    /// refused; the edge says when it hears one).
    fn open_heard(&mut self, conn: ConnId) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.relay.try_recv() {
                Some(EdgeEvent::Owner { partition: 0, heard: true }) => break,
                Some(other) => panic!("unexpected {other:?}"),
                None => std::thread::sleep(Duration::from_millis(5)),
            }
            assert!(Instant::now() < deadline, "the edge never heard the owner");
        }
        self.relay.open(conn, 0, Transport::Tcp, Some("127.0.0.1:5000".parse().unwrap()));
    }
}

fn opened(owner: &mut Owner) -> ConnId {
    match owner.next() {
        NetEvent::Opened { conn, transport: Transport::Relay, peer, handle: None } => {
            assert_eq!(peer, Some("127.0.0.1:5000".parse().unwrap()));
            conn
        }
        other => panic!("expected a relayed open, got {other:?}"),
    }
}

#[test]
fn relay_carries_bytes_both_ways_and_refuses_without_an_owner() {
    let Some(nats) = TempNats::start("relay-bytes") else { return };
    let mut edge = Edge::start(&nats, "edge-1");
    // No owner yet: a connection is closed at once, so its client tries another node.
    std::thread::sleep(Duration::from_millis(300));
    edge.relay.open(ConnId(1), 0, Transport::Tcp, None);
    assert!(matches!(edge.next(), EdgeEvent::Unrelayed { conn: ConnId(1) }));

    let mut owner = Owner::new();
    let _host = RelayHost::start(config(&nats, "owner"), 0, 5, owner.hub.sender(), || false).unwrap();
    edge.open_heard(ConnId(2));
    let id = opened(&mut owner);
    edge.relay.data(ConnId(2), b"hello ".to_vec());
    // What the relay holds for the connection counts until NATS took it.
    assert!(edge.relay.data(ConnId(2), vec![7; 200_000]) >= 200_000);
    let mut got = Vec::new();
    while got.len() < 200_006 {
        match owner.next() {
            NetEvent::Received { conn, bytes } => {
                assert_eq!(conn, id);
                got.extend(bytes);
            }
            other => panic!("expected bytes, got {other:?}"),
        }
    }
    let deadline = Instant::now() + WAIT;
    while edge.relay.data(ConnId(2), Vec::new()) > 0 {
        assert!(Instant::now() < deadline, "the relay still holds bytes NATS took");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(&got[..6], b"hello ");
    assert!(got[6..].iter().all(|b| *b == 7));
    // The owner writes and closes: the edge gets the bytes, then the close.
    assert!(owner.hub.send(id, Bytes::from_static(b"world")));
    owner.hub.close(id);
    assert_eq!(edge.next(), EdgeEvent::Data { conn: ConnId(2), bytes: Bytes::from_static(b"world") });
    // What was published is no longer the session's backlog (the core
    // closes a session whose backlog passes its bound as a slow reader).
    assert_eq!(owner.hub.backlog(id), 0, "backlog after the edge got every byte");
    assert!(matches!(edge.next(), EdgeEvent::Close { conn: ConnId(2), .. }));
    assert!(matches!(owner.next(), NetEvent::Closed { conn, .. } if conn == id));
    // The client leaves first: the owner's session ends.
    edge.relay.open(ConnId(3), 0, Transport::Tcp, Some("127.0.0.1:5000".parse().unwrap()));
    let id3 = opened(&mut owner);
    edge.relay.closed(ConnId(3), "peer closed");
    assert!(matches!(owner.next(), NetEvent::Closed { conn, reason } if conn == id3 && reason.contains("peer closed")));
}

#[test]
fn relay_a_lost_message_ends_the_connection_on_both_sides() {
    let Some(nats) = TempNats::start("relay-gap") else { return };
    let mut owner = Owner::new();
    let _host = RelayHost::start(config(&nats, "owner"), 0, 5, owner.hub.sender(), || false).unwrap();
    let mut edge = Edge::start(&nats, "edge-1");
    edge.open_heard(ConnId(1));
    let id = opened(&mut owner);
    // A message of the edge's incarnation that skips a number, as if one were lost.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = rt.block_on(async_nats::connect(nats.url())).unwrap();
    edge.relay.data(ConnId(1), b"one".to_vec());
    assert!(matches!(owner.next(), NetEvent::Received { bytes, .. } if bytes == b"one"));
    // The edge's incarnation is not known here: a forged gap from a fake edge instead.
    let fake = Subjects::new("test").inbound(0, "fake");
    let open = Envelope::Open { incarnation: 9, conn: 1, transport: "tcp".into(), peer: None };
    let skip = Envelope::Data { incarnation: 9, conn: 1, seq: 2, bytes: Bytes::from_static(b"two") };
    let mut replies = rt.block_on(client.subscribe(Subjects::new("test").outbound("fake"))).unwrap();
    rt.block_on(async {
        client.publish(fake.clone(), open.encode(5)).await.unwrap();
        client.publish(fake.clone(), skip.encode(5)).await.unwrap();
        client.flush().await.unwrap();
    });
    let fake_id = opened_any(&mut owner);
    assert!(matches!(owner.next(), NetEvent::Closed { conn, reason } if conn == fake_id && reason.contains("lost")));
    use futures_util::StreamExt as _;
    let reply = rt.block_on(async { tokio::time::timeout(WAIT, replies.next()).await }).unwrap().unwrap();
    assert!(matches!(Envelope::decode(&reply.payload), Ok((5, Envelope::Close { incarnation: 9, conn: 1, .. }))));
    // The real edge's connection is untouched.
    assert!(owner.hub.send(id, Bytes::from_static(b"still here")));
    assert_eq!(edge.next(), EdgeEvent::Data { conn: ConnId(1), bytes: Bytes::from_static(b"still here") });
}

fn opened_any(owner: &mut Owner) -> ConnId {
    match owner.next() {
        NetEvent::Opened { conn, transport: Transport::Relay, .. } => conn,
        other => panic!("expected a relayed open, got {other:?}"),
    }
}

#[test]
fn relay_a_new_owner_or_a_silent_one_ends_the_edges_connections() {
    let Some(nats) = TempNats::start("relay-owner") else { return };
    let mut old = Owner::new();
    let old_host = RelayHost::start(config(&nats, "old"), 0, 5, old.hub.sender(), || false).unwrap();
    let mut edge = Edge::start(&nats, "edge-1");
    edge.open_heard(ConnId(1));
    let _ = opened(&mut old);
    // Another node took the partition (a greater token): the connection bound to the old owner ends.
    let mut new = Owner::new();
    let new_host = RelayHost::start(config(&nats, "new"), 0, 6, new.hub.sender(), || false).unwrap();
    assert!(matches!(edge.next(), EdgeEvent::Close { conn: ConnId(1), reason } if reason.contains("changed owner")));
    drop(old_host);
    // New connections go to the new owner.
    edge.relay.open(ConnId(2), 0, Transport::Tcp, Some("127.0.0.1:5000".parse().unwrap()));
    let _ = opened(&mut new);
    // The new owner goes silent without a goodbye (NATS dies under it, which
    // the edge cannot tell from a crash): within SILENT_AFTER and a beat, the
    // edge ends its connections.
    let silent = Instant::now();
    drop(nats);
    assert!(matches!(edge.next(), EdgeEvent::Close { conn: ConnId(2), reason } if reason.contains("silent")));
    assert!(silent.elapsed() >= Duration::from_secs(1), "ended after {:?}", silent.elapsed());
    // Stopping with NATS gone does not hang.
    drop(new_host);
}

#[test]
fn relay_an_edge_gone_silent_has_its_connections_ended_by_the_owner() {
    let Some(nats) = TempNats::start("relay-edge-silent") else { return };
    let mut owner = Owner::new();
    let _host = RelayHost::start(config(&nats, "owner"), 0, 5, owner.hub.sender(), || false).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = rt.block_on(async_nats::connect(nats.url())).unwrap();
    // The owner beats once it listens to the edges.
    let mut beats = rt.block_on(client.subscribe(Subjects::new("test").owner(0))).unwrap();
    use futures_util::StreamExt as _;
    rt.block_on(async { tokio::time::timeout(WAIT, beats.next()).await }).unwrap().unwrap();
    let inbound = Subjects::new("test").inbound(0, "ghost");
    let mut told = rt.block_on(client.subscribe(Subjects::new("test").outbound("ghost"))).unwrap();
    let open = Envelope::Open { incarnation: 3, conn: 1, transport: "quic".into(), peer: None };
    rt.block_on(async {
        client.publish(inbound.clone(), Envelope::Alive { incarnation: 3 }.encode(0)).await.unwrap();
        client.publish(inbound.clone(), open.encode(5)).await.unwrap();
        client.flush().await.unwrap();
    });
    let id = opened_any(&mut owner);
    let since = Instant::now();
    // The ghost never says it is alive again.
    assert!(matches!(owner.next(), NetEvent::Closed { conn, reason } if conn == id && reason.contains("edge silent")));
    assert!(since.elapsed() >= Duration::from_secs(1), "ended after {:?}", since.elapsed());
    // The edge is told too, in case only its `Alive`s were lost.
    let close = rt.block_on(async { tokio::time::timeout(WAIT, told.next()).await }).unwrap().unwrap();
    assert!(matches!(Envelope::decode(&close.payload), Ok((5, Envelope::Close { incarnation: 3, conn: 1, .. }))));
}

#[test]
fn relay_an_old_owner_resumed_after_a_takeover_gets_no_connection_and_writes_to_none() {
    let Some(nats) = TempNats::start("relay-stale") else { return };
    let mut old = Owner::new();
    let _old_host = RelayHost::start(config(&nats, "old"), 0, 5, old.hub.sender(), || false).unwrap();
    let mut edge = Edge::start(&nats, "edge-1");
    edge.open_heard(ConnId(1));
    let old_id = opened(&mut old);
    let mut new = Owner::new();
    let _new_host = RelayHost::start(config(&nats, "new"), 0, 6, new.hub.sender(), || false).unwrap();
    assert!(matches!(edge.next(), EdgeEvent::Close { conn: ConnId(1), reason } if reason.contains("changed owner")));
    // The old owner is still up (paused and resumed, it beats until its
    // lease renewal fails): a new connection goes to the new owner only.
    std::thread::sleep(Duration::from_millis(600));
    edge.relay.open(ConnId(2), 0, Transport::Tcp, Some("127.0.0.1:5000".parse().unwrap()));
    let new_id = opened(&mut new);
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if let Some(e) = old.hub.try_recv() {
            assert!(!matches!(e, NetEvent::Opened { .. }), "the old owner took a connection: {e:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The old owner writes and closes what it knew: the edge's connection 2 is not touched.
    let _ = old.hub.send(old_id, Bytes::from_static(b"stale"));
    old.hub.close(old_id);
    std::thread::sleep(Duration::from_millis(300));
    assert!(new.hub.send(new_id, Bytes::from_static(b"fresh")));
    assert_eq!(edge.next(), EdgeEvent::Data { conn: ConnId(2), bytes: Bytes::from_static(b"fresh") });
}

#[test]
fn relay_a_forged_older_heartbeat_after_a_silence_does_not_win_the_edge_back() {
    let Some(nats) = TempNats::start("relay-older-beat") else { return };
    let mut owner = Owner::new();
    let host = RelayHost::start(config(&nats, "owner"), 0, 6, owner.hub.sender(), || false).unwrap();
    let mut edge = Edge::start(&nats, "edge-1");
    edge.open_heard(ConnId(1));
    let _ = opened(&mut owner);
    // The owner stops beating (its relay stops): the edge ends its connection.
    drop(host);
    assert!(matches!(edge.next(), EdgeEvent::Close { conn: ConnId(1), .. }));
    // An older owner beats again, past the silence that made the edge
    // forget the newer one: the edge does not relay to it.
    let stale = Owner::new();
    let _stale_host = RelayHost::start(config(&nats, "stale"), 0, 5, stale.hub.sender(), || false).unwrap();
    std::thread::sleep(Duration::from_millis(3200));
    edge.relay.open(ConnId(2), 0, Transport::Tcp, None);
    assert!(matches!(edge.next(), EdgeEvent::Unrelayed { conn: ConnId(2) }));
}

/// Whether the server at `addr` serves a new TCP connection (`true`: it
/// keeps it open, waiting for the TLS handshake) or closes it at once,
/// polled until it is `want` or `within` passed.
fn tcp_serves(addr: std::net::SocketAddr, want: bool, within: Duration) -> bool {
    use std::io::Read as _;
    let deadline = Instant::now() + within;
    loop {
        let served = match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Err(_) => false,
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
                // Closed at once: end of file or a reset; served: nothing to read yet.
                matches!(s.read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
            }
        };
        if served == want || Instant::now() >= deadline {
            return served;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn relay_an_edge_listens_only_while_it_hears_an_owner() {
    use confab_server::proto::server::ServerConfig;
    use confab_server::runtime::{Node, NodeConfig};
    use confab_transports::tls::ServerIdentity;

    let Some(nats) = TempNats::start("relay-listen") else { return };
    let identity = ServerIdentity::self_signed(&["localhost".to_owned()]).expect("certificate").identity;
    let node_config = NodeConfig::new(ServerConfig::default(), "127.0.0.1:0".parse().unwrap(), identity);
    let node = Node::bind_edge(node_config, config(&nats, "edge-1")).expect("edge");
    let tcp = node.tcp_addr().expect("a TCP address");
    let handle = node.handle();
    let running = std::thread::spawn(move || node.run());
    // No owner: connections are closed at once (the port stays bound), so a
    // client's handshake fails and it tries the next node.
    assert!(!tcp_serves(tcp, false, Duration::from_millis(500)), "served without an owner");
    let mut owner = Owner::new();
    let host = RelayHost::start(config(&nats, "owner"), 0, 1, owner.hub.sender(), || false).unwrap();
    assert!(tcp_serves(tcp, true, WAIT), "the edge never served once the owner beat");
    // The owner falls silent: the edge stops listening again.
    drop(host);
    while owner.hub.try_recv().is_some() {}
    assert!(!tcp_serves(tcp, false, WAIT), "the edge still serves without an owner");
    handle.stop();
    running.join().expect("the edge's loop").expect("a clean stop");
}

#[test]
fn relay_an_owner_that_stops_says_so_and_the_edges_leave_it_at_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(nats) = TempNats::start("relay-leaving") else { return };
    let mut owner = Owner::new();
    let stopping = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stopping);
    let _host = RelayHost::start(config(&nats, "owner"), 0, 5, owner.hub.sender(), move || flag.load(Ordering::SeqCst))
        .unwrap();
    let mut edge = Edge::start(&nats, "edge-1");
    edge.open_heard(ConnId(1));
    let _ = opened(&mut owner);
    // The owner's node begins to stop: within a beat (0.5 s), not a silence (2 s).
    let since = Instant::now();
    stopping.store(true, Ordering::SeqCst);
    assert!(matches!(edge.next(), EdgeEvent::Close { conn: ConnId(1), reason } if reason.contains("leaving")));
    assert!(since.elapsed() < Duration::from_millis(1500), "left after {:?}", since.elapsed());
    // No new connection goes to it.
    edge.relay.open(ConnId(2), 0, Transport::Tcp, None);
    assert!(matches!(edge.next(), EdgeEvent::Unrelayed { conn: ConnId(2) }));
}

/// A split state's partition given back (or lost): its host, dropped,
/// says it leaves, so an edge stops relaying to it at once (not after 2 s
/// of silence) and ends what it relayed there, while the owner of another
/// partition is still heard and relayed to.
#[test]
fn relay_a_partitions_host_dropped_says_it_leaves_and_only_that_partition_is_left() {
    let Some(nats) = TempNats::start("relay-host-drop") else { return };
    let (mut three, mut five) = (Owner::new(), Owner::new());
    let host3 = RelayHost::start(config(&nats, "n1"), 3, 7, three.hub.sender(), || false).unwrap();
    let _host5 = RelayHost::start(config(&nats, "n2"), 5, 8, five.hub.sender(), || false).unwrap();
    let edge = Edge::start(&nats, "edge-1");
    let mut heard = std::collections::BTreeSet::new();
    let deadline = Instant::now() + WAIT;
    while heard.len() < 2 {
        if let Some(EdgeEvent::Owner { partition, heard: true }) = edge.relay.try_recv() {
            heard.insert(partition);
        }
        assert!(Instant::now() < deadline, "owners heard: {heard:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(heard, [3, 5].into());
    let mut edge = edge;
    let peer = Some("127.0.0.1:5000".parse().unwrap());
    edge.relay.open(ConnId(1), 3, Transport::Tcp, peer);
    edge.relay.open(ConnId(2), 5, Transport::Tcp, peer);
    let _ = opened(&mut three);
    let _ = opened(&mut five);
    let since = Instant::now();
    drop(host3);
    let deadline = Instant::now() + WAIT;
    loop {
        match edge.relay.try_recv() {
            Some(EdgeEvent::Owner { partition: 3, heard: false }) => break,
            Some(EdgeEvent::Close { conn, .. }) => assert_eq!(conn, ConnId(1), "only partition 3's"),
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
        assert!(Instant::now() < deadline, "partition 3's owner still heard");
    }
    assert!(since.elapsed() < Duration::from_millis(1500), "left after {:?}", since.elapsed());
    edge.relay.open(ConnId(3), 3, Transport::Tcp, None);
    assert!(matches!(edge.next(), EdgeEvent::Unrelayed { conn: ConnId(3) }), "nothing more relayed to 3");
    edge.relay.data(ConnId(2), b"still five".to_vec());
    assert!(matches!(five.next(), NetEvent::Received { bytes, .. } if bytes == b"still five"[..]));
}

/// With NATS stalled (SIGSTOP: its connections stay open, nothing is read),
/// stopping an edge's relay and an owner's takes a bounded time (measured
/// here: 1.5 s and 1.0 s; 2.5 s and 1.6 s before the stop was seen first,
/// 8 s for the edge with its goodbyes unbounded): the stop is seen before
/// any other work, the goodbyes are
/// best effort within `GOODBYE_WAIT` (1 s) in all, and the rest of the
/// cluster learns from the silence. Twenty connections, and the clients'
/// buffers filled first, so that every publish would wait.
#[test]
fn relay_stops_in_bounded_time_while_nats_is_stalled() {
    let Some(nats) = TempNats::start("relay-stalled") else { return };
    let mut owner = Owner::new();
    let host = RelayHost::start(config(&nats, "owner"), 0, 5, owner.hub.sender(), || false).unwrap();
    let mut edge = Edge::start(&nats, "edge-1");
    edge.open_heard(ConnId(1));
    let mut ids = vec![opened(&mut owner)];
    for c in 2..=20 {
        edge.relay.open(ConnId(c), 0, Transport::Tcp, Some("127.0.0.1:5000".parse().unwrap()));
        ids.push(opened(&mut owner));
    }
    nats.signal("STOP");
    // Fill the sockets to the stopped server and both clients' buffers (2,048 messages each).
    for i in 0..20_000u64 {
        edge.relay.data(ConnId(1 + i % 20), vec![1; 1024]);
        assert!(owner.hub.send(ids[(i % 20) as usize], Bytes::from(vec![2; 1024])));
    }
    // A connection whose bytes NATS did not take is ended at once (the rest would follow a gap).
    assert!(
        matches!(edge.next(), EdgeEvent::Close { reason, .. } if reason.contains("NATS did not take")),
        "no connection ended for its lost bytes"
    );
    let started = Instant::now();
    drop(edge);
    let edge_stop = started.elapsed();
    let started = Instant::now();
    drop(host);
    let host_stop = started.elapsed();
    nats.signal("CONT");
    assert!(edge_stop < Duration::from_millis(2_000), "the edge's relay took {edge_stop:?} to stop");
    assert!(host_stop < Duration::from_millis(2_000), "the owner's relay took {host_stop:?} to stop");
}

/// NATS is down when the edge starts (a cluster restarting, a NATS outage):
/// the edge closes every connection ("no owner heard"), so clients go on to
/// another node; once NATS is up and an owner beats, it relays.
#[test]
fn relay_an_edge_started_before_nats_relays_once_nats_is_up() {
    let Some(mut nats) = TempNats::start("relay-late-nats") else { return };
    nats.kill();
    let mut edge = Edge::start(&nats, "edge-1");
    std::thread::sleep(Duration::from_millis(300));
    edge.relay.open(ConnId(1), 0, Transport::Tcp, None);
    assert!(matches!(edge.next(), EdgeEvent::Unrelayed { conn: ConnId(1) }));
    nats.restart();
    let mut owner = Owner::new();
    let _host = RelayHost::start(config(&nats, "owner"), 0, 5, owner.hub.sender(), || false).unwrap();
    edge.open_heard(ConnId(2));
    let id = opened(&mut owner);
    edge.relay.data(ConnId(2), b"late but here".to_vec());
    assert!(matches!(owner.next(), NetEvent::Received { conn, bytes } if conn == id && bytes == b"late but here"));
}
